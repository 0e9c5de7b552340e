//! The Service catalog: per-namespace Services, each kept as the recipe of its variables.
//!
//! Filled from a static file ([`file`]) or kube-runtime watchers ([`watch`], through the
//! common [`driver`] that also feeds the ConfigMap and DRA indexes). Work is done once per
//! watch event: a Service's variable recipe (every case mapping and number formatted), how
//! many variables it gives and whether any of them may be reserved are computed when it
//! arrives and stored in one small allocation; a review renders the variables of the
//! Services it injects ([`Rendered`]), and the first rendering of a Service is kept with it
//! for later reviews within a process-wide budget ([`render_cache`]). A namespace is a persistent sorted map
//! (`imbl::OrdSet` by name) behind an `Arc`, and the map of namespaces is a persistent map behind an
//! `ArcSwap`: a review takes one [`Snapshot`] (an atomic load, no lock), reads it without any
//! lock, and never waits on an update; the one writer (serialised by a mutex) publishes a new
//! map. Persistent maps share every node an update does not touch, so one event costs
//! O(log n) (a path of nodes copied) instead of a copy of its namespace and of the map of
//! namespaces, and a snapshot a review still holds keeps only the nodes it sees.

pub mod claims;
pub mod configmaps;
pub mod driver;
pub mod file;
pub mod keyed;
pub mod render_cache;
pub mod service_fields;
pub mod status;
pub mod watch;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use imbl::OrdSet;

use crate::reserved::{CompiledRules, NameFilter};
use crate::servicelinks::{self, PortParts, PortRecipe, Recipe, ServiceLink, VariableSink};
use render_cache::RenderCache;

/// Separates the fields inside [`LinkedService`]'s buffer; [`ServiceLink`]s that contain it
/// are refused at ingest, so it can never be part of a field.
const SEP: char = '\0';

/// One Service as the catalog keeps it: its name and the [`Recipe`] of its variables (every
/// case mapping and number already done), not the variables themselves. A Service with two
/// ports gives 13 variables, ~470 bytes of text; its recipe ~150. Reviews render the
/// variables of the Services they inject ([`Rendered::add`]): a few pieces copied per
/// variable, no formatting or case mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedService {
    /// `name\0prefix\0clusterIP\0`, then per port `envName\0number\0proto\0block\0url\0`
    /// ([`PortRecipe`]; no ports when the Service gives no variables): one allocation for all
    /// of a Service.
    text: Box<str>,
    /// The name's length.
    name_len: u32,
    /// How many variables it renders.
    count: u32,
    has_cluster_ip: bool,
    /// Whether some variable may be reserved under the catalog's rules (see
    /// [`LinkedService::may_have_reserved`]); fixed at ingest, like the recipe.
    may_have_reserved: bool,
    /// No byte of the rendered variables needs escaping in a JSON string (see
    /// [`LinkedService::is_json_plain`]); computed from a rendering at ingest.
    json_plain: bool,
    /// Its variables' names are distinct and each starts with the env prefix and `_` (see
    /// [`LinkedService::names_under_prefix`]); computed from a rendering at ingest.
    names_under_prefix: bool,
    /// Its variables as a review first rendered them, when the process budget had room
    /// ([`render_cache`]); not part of what the Service is (equality, clones).
    rendered: RenderCache,
}

/// Whether no name or value of `rendered` holds a byte a JSON string must escape.
fn rendered_plain(rendered: &Rendered) -> bool {
    let plain = |text: &str| !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    rendered
        .iter()
        .all(|(name, value)| plain(name) && plain(value))
}

/// Whether the names of `rendered` are distinct and each is `prefix`, `_` and more.
fn names_under_prefix(rendered: &Rendered, prefix: &str) -> bool {
    let mut names: Vec<&str> = rendered.iter().map(|(name, _)| name).collect();
    let under = names.iter().all(|name| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| !rest.is_empty())
    });
    names.sort_unstable();
    under && names.windows(2).all(|pair| pair[0] != pair[1])
}

/// Why a Service cannot enter the catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// A field holds a quote, a backslash or a control character. API validation never lets
    /// one through (names are DNS labels, IPs are IPs, protocols an enum), so such a Service
    /// is not one the kubelet would link; and NUL separates the fields in the buffer. (The
    /// patch encoder escapes whatever it is given: it does not rely on this.)
    #[error(
        "Service {namespace}/{name} has a character Kubernetes does not allow (a quote, a \
         backslash or a control character) in its name, cluster IP, port names or protocols"
    )]
    UnsafeText {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// No name.
    #[error("a Service without metadata.name")]
    NoName,
}

impl LinkedService {
    /// Computes the recipe of a Service's variables, and whether `reserved` may reserve any
    /// of them (`None`: no rules known, so every variable must be asked about).
    pub fn new(link: &ServiceLink, reserved: Option<&NameFilter>) -> Result<Self, IngestError> {
        let unsafe_text = |s: &str| s.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        let has_unsafe = unsafe_text(&link.name)
            || unsafe_text(&link.cluster_ip)
            || link
                .ports
                .iter()
                .any(|p| unsafe_text(&p.name) || unsafe_text(&p.protocol));
        if has_unsafe {
            return Err(IngestError::UnsafeText {
                namespace: link.namespace.clone(),
                name: link.name.clone(),
            });
        }
        if link.name.is_empty() {
            return Err(IngestError::NoName);
        }
        // A name of 4 GiB cannot arrive (request and file limits are far smaller).
        let name_len = u32::try_from(link.name.len()).map_err(|_| IngestError::NoName)?;
        let mut text = String::with_capacity(link.name.len() * 2 + link.cluster_ip.len() + 32);
        for field in [
            link.name.as_str(),
            &servicelinks::env_name(&link.name),
            &link.cluster_ip,
        ] {
            text.push_str(field);
            text.push(SEP);
        }
        if link.yields_variables() {
            let prefix = servicelinks::env_name(&link.name);
            for port in &link.ports {
                let parts = PortParts::of(&prefix, &link.cluster_ip, port);
                let recipe = parts.recipe();
                for field in [
                    recipe.env_name,
                    recipe.number,
                    recipe.proto_lower,
                    recipe.block,
                    recipe.url,
                ] {
                    text.push_str(field);
                    text.push(SEP);
                }
            }
        }
        let mut service = Self {
            text: text.into_boxed_str(),
            name_len,
            count: 0,
            has_cluster_ip: link.has_cluster_ip(),
            may_have_reserved: true,
            json_plain: true,
            names_under_prefix: false,
            rendered: RenderCache::default(),
        };
        // One rendering, to know what every review's rendering will hold.
        let rendered = service.variables();
        service.count = u32::try_from(rendered.len()).unwrap_or(u32::MAX);
        service.json_plain = rendered_plain(&rendered);
        service.names_under_prefix = names_under_prefix(&rendered, service.env_prefix());
        service.may_have_reserved =
            reserved.is_none_or(|filter| rendered.iter().any(|(n, _)| filter.may_be_reserved(n)));
        Ok(service)
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        self.text.get(..self.name_len as usize).unwrap_or_default()
    }

    /// Renders its variables into `sink` (nothing without ports). The ports are read out of
    /// the buffer once, into a small array (a Service has one or two ports nearly always).
    fn render_into(&self, sink: &mut impl VariableSink) {
        let rest = self
            .text
            .get(self.name_len as usize + 1..)
            .unwrap_or_default();
        let (prefix, rest) = split_field(rest).unwrap_or_default();
        let (cluster_ip, ports) = split_field(rest).unwrap_or_default();
        let mut few = [PortRecipe::default(); 4];
        let mut many = Vec::new();
        let mut count = 0;
        for port in (RecipePorts { rest: ports }) {
            match few.get_mut(count) {
                Some(slot) => *slot = port,
                None => {
                    if many.is_empty() {
                        many.extend_from_slice(&few);
                    }
                    many.push(port);
                }
            }
            count += 1;
        }
        let ports = if many.is_empty() {
            few.get(..count).unwrap_or_default()
        } else {
            &many
        };
        let recipe = Recipe {
            prefix,
            cluster_ip,
            ports,
        };
        servicelinks::render_variables(&recipe, sink);
    }

    /// What its variables' names start with (before `_`): the name upper-cased, `-` as `_`.
    pub fn env_prefix(&self) -> &str {
        let rest = self
            .text
            .get(self.name_len as usize + 1..)
            .unwrap_or_default();
        split_field(rest)
            .map(|(prefix, _)| prefix)
            .unwrap_or_default()
    }

    /// Whether its variables' names are distinct and each is [`LinkedService::env_prefix`]
    /// followed by `_` and more: then its names can only meet another Service's if one
    /// prefix-and-`_` begins the other's (the decision's duplicate check relies on it).
    pub fn names_under_prefix(&self) -> bool {
        self.names_under_prefix
    }

    /// Whether `spec.clusterIP` is set and not `None`.
    pub fn has_cluster_ip(&self) -> bool {
        self.has_cluster_ip
    }

    /// How many variables it gives.
    pub fn variable_count(&self) -> usize {
        self.count as usize
    }

    /// Its variables, rendered (in the kubelet's order: [`Rendered::iter`]). Not kept with
    /// the Service: this is for ingest, the audit and tests, not the review path.
    pub fn variables(&self) -> Rendered {
        let mut rendered = Rendered::new();
        rendered.add_with(self, None);
        rendered
    }

    /// Whether any of its variables may be reserved under the rules of the catalog it was
    /// ingested into: nearly always `false`, and then a review asks about none of them. Only
    /// meaningful for the rules [`Snapshot::judged_with`] confirms.
    pub fn may_have_reserved(&self) -> bool {
        self.may_have_reserved
    }

    /// Whether no rendered name or value holds a byte that a JSON string must escape (a
    /// quote, a backslash, a control character), so the patch encoder may copy them as they
    /// are. Ingestion refuses such bytes anyway; the flag is computed from a rendering, so
    /// the encoder is correct whatever the text.
    pub fn is_json_plain(&self) -> bool {
        self.json_plain
    }
}

/// The ports of a stored recipe, five fields each.
struct RecipePorts<'a> {
    rest: &'a str,
}

impl<'a> Iterator for RecipePorts<'a> {
    type Item = PortRecipe<'a>;

    fn next(&mut self) -> Option<PortRecipe<'a>> {
        let mut field = || {
            let (field, rest) = split_field(self.rest)?;
            self.rest = rest;
            Some(field)
        };
        Some(PortRecipe {
            env_name: field()?,
            number: field()?,
            proto_lower: field()?,
            block: field()?,
            url: field()?,
        })
    }
}

/// The text before the first [`SEP`], and the text after it.
///
/// `str::split_once(char)` finds a one-byte char with `memchr` and then confirms it with a
/// `memcmp` call per match: for the short fields of a recipe that was 4 % of an S2 review's
/// CPU under load (issue 16's Intel profile). A byte loop over a few bytes is cheaper; the
/// split stays on a character boundary because `SEP` is ASCII.
fn split_field(text: &str) -> Option<(&str, &str)> {
    const SEP_BYTE: u8 = SEP as u8;
    let at = text.bytes().position(|b| b == SEP_BYTE)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// What [`Rendered`]'s text holds before a variable's name, between its name and its value,
/// and after its value: each variable is kept as the JSON object a patch lists for it,
/// followed by a comma, so a patch copies a run of variables as one slice.
const OPEN: &str = r#"{"name":""#;
const MID: &str = r#"","value":""#;
const CLOSE: &str = r#""}"#;
const COMMA: &str = ",";

/// Where one rendered variable sits in [`Rendered`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Where its JSON object (`OPEN`) starts.
    at: u32,
    name_len: u32,
    value_len: u32,
}

impl Span {
    fn name_at(self) -> usize {
        self.at as usize + OPEN.len()
    }

    fn value_at(self) -> usize {
        self.name_at() + self.name_len as usize + MID.len()
    }

    /// Where its JSON object ends (before the comma).
    fn end(self) -> usize {
        self.value_at() + self.value_len as usize + CLOSE.len()
    }
}

/// Variables rendered from catalog Services for one review, in one buffer:
/// `{"name":"NAME","value":"VALUE"},` each (the text unescaped), with where each variable
/// is, so reading one back is two slices and writing a run of them into a patch is one copy
/// ([`Rendered::json_objects`]).
#[derive(Debug, Clone)]
pub struct Rendered {
    text: String,
    spans: Vec<Span>,
    /// Every Service added was [`LinkedService::is_json_plain`].
    plain: bool,
    /// Where the variable being rendered starts, and its name's length once known.
    start: usize,
    name_len: usize,
    /// The variable being rendered has been opened (its `OPEN` written).
    open: bool,
}

impl Default for Rendered {
    fn default() -> Self {
        Self::new()
    }
}

impl Rendered {
    /// Opens the next variable, unless it is open already.
    fn begin(&mut self) {
        if !self.open {
            self.start = self.text.len();
            self.text.push_str(OPEN);
            self.open = true;
        }
    }
}

impl VariableSink for Rendered {
    fn push(&mut self, piece: &str) {
        self.begin();
        self.text.push_str(piece);
    }

    fn end_name(&mut self) {
        self.begin();
        self.name_len = self.text.len() - self.start - OPEN.len();
        self.text.push_str(MID);
    }

    fn end_value(&mut self) {
        let value_len = self.text.len() - self.start - OPEN.len() - self.name_len - MID.len();
        self.text.push_str(CLOSE);
        self.text.push_str(COMMA);
        self.open = false;
        let fits = |n: usize| u32::try_from(n).ok();
        // Over 4 GiB of variables cannot be rendered (`services.maxVariables` and the
        // catalog's limits are far below); such a variable would be dropped, not wrapped.
        if let (Some(at), Some(name_len), Some(value_len)) =
            (fits(self.start), fits(self.name_len), fits(value_len))
        {
            self.spans.push(Span {
                at,
                name_len,
                value_len,
            });
        }
    }
}

impl Rendered {
    /// Nothing rendered yet.
    pub fn new() -> Self {
        Self {
            text: String::new(),
            spans: Vec::new(),
            plain: true,
            start: 0,
            name_len: 0,
            open: false,
        }
    }

    /// Room for the variables of these Services, so rendering them does not reallocate.
    pub fn with_capacity_for<'s>(services: impl Iterator<Item = &'s LinkedService>) -> Self {
        let (mut bytes, mut count) = (0, 0);
        for service in services {
            // A variable is at most a few times its recipe's longest field; 48 bytes each
            // covers the common shapes (13 variables, ~470 bytes for two ports), plus the
            // JSON around each.
            bytes += service.variable_count() * (48 + OPEN.len() + MID.len() + CLOSE.len() + 1);
            count += service.variable_count();
        }
        let mut rendered = Self::new();
        rendered.text.reserve(bytes);
        rendered.spans.reserve(count);
        rendered
    }

    /// Renders a Service's variables after those already here; returns their indices. The
    /// first rendering of a Service is kept with it while the process budget has room
    /// ([`render_cache`]), and later ones copy it.
    pub fn add(&mut self, service: &LinkedService) -> Range<usize> {
        self.add_with(service, Some(&render_cache::PROCESS_BUDGET))
    }

    /// [`Rendered::add`], keeping the rendering within `budget` (`None`: not kept).
    fn add_with(
        &mut self,
        service: &LinkedService,
        budget: Option<&'static render_cache::Budget>,
    ) -> Range<usize> {
        let first = self.spans.len();
        if !service.has_cluster_ip {
            return first..first;
        }
        self.plain &= service.json_plain;
        if service
            .rendered
            .get()
            .is_some_and(|block| self.append(block))
        {
            return first..self.spans.len();
        }
        let origin = self.text.len();
        service.render_into(self);
        if let (Some(budget), Some(text), Some(spans)) =
            (budget, self.text.get(origin..), self.spans.get(first..))
        {
            service.rendered.offer(text, spans, origin, budget);
        }
        first..self.spans.len()
    }

    /// Appends a kept rendering; `false` (nothing appended) when its offsets would not fit
    /// the text's 32-bit positions.
    fn append(&mut self, block: &render_cache::Block) -> bool {
        let Some(origin) = u32::try_from(self.text.len()).ok().filter(|origin| {
            u32::try_from(block.text.len()).is_ok_and(|n| origin.checked_add(n).is_some())
        }) else {
            return false;
        };
        self.text.push_str(&block.text);
        self.spans.extend(block.spans.iter().map(|span| Span {
            at: span.at + origin,
            ..*span
        }));
        true
    }

    /// How many variables.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Variable `i` as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        let span = *self.spans.get(i)?;
        let name_at = span.name_at();
        let name = self.text.get(name_at..name_at + span.name_len as usize)?;
        let value_at = span.value_at();
        let value = self
            .text
            .get(value_at..value_at + span.value_len as usize)?;
        Some((name, value))
    }

    /// Variables `first..=last` as the JSON objects a patch's `env` lists,
    /// `{"name":"…","value":"…"}`, separated by commas: one slice of the text. Their text is
    /// not escaped, so this is JSON only when [`Rendered::is_json_plain`].
    pub fn json_objects(&self, first: usize, last: usize) -> Option<&str> {
        let (from, to) = (self.spans.get(first)?, self.spans.get(last)?);
        self.text.get(from.at as usize..to.end())
    }

    /// The name of variable `i` (empty when out of range).
    pub fn name(&self, i: usize) -> &str {
        self.get(i).map(|(name, _)| name).unwrap_or_default()
    }

    /// All variables as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.spans.len()).filter_map(|i| self.get(i))
    }

    /// Whether no name or value holds a byte a JSON string must escape (see
    /// [`LinkedService::is_json_plain`]).
    pub fn is_json_plain(&self) -> bool {
        self.plain
    }

    /// Exactly these variables, whatever their text (tests of the patch encoder).
    pub fn from_pairs<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> Self {
        let mut rendered = Self::new();
        for (name, value) in pairs {
            rendered.push(name);
            rendered.end_name();
            rendered.push(value);
            rendered.end_value();
        }
        rendered.plain = rendered_plain(&rendered);
        rendered
    }
}

/// A Service ingested for the catalog ([`Catalog::ingest`]), with its namespace: what a list
/// gathers before it replaces a scope ([`Catalog::replace_ingested`]). A list of 100,000
/// held in this form is a tenth of the same list as decoded fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestedService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// The Service.
    pub service: LinkedService,
}

/// A full list of a scope being gathered, grouped by namespace as the Services arrive, so
/// that no list of them is held beside the indexes it becomes ([`Catalog::install`]).
#[derive(Debug)]
pub struct Listing {
    scope: ListScope,
    fresh: HashMap<Arc<str>, NamespaceIndex>,
}

impl Listing {
    /// An empty list of `scope`.
    pub fn new(scope: ListScope) -> Self {
        Self {
            scope,
            fresh: HashMap::new(),
        }
    }

    /// Adds a Service (ignored outside a namespaced scope's namespace).
    pub fn add(&mut self, ingested: IngestedService) {
        let IngestedService { namespace, service } = ingested;
        if !self.scope.covers(&namespace) {
            return;
        }
        let service = Arc::new(service);
        match self.fresh.get_mut(namespace.as_str()) {
            Some(index) => index.insert(service),
            None => {
                let mut index = NamespaceIndex::default();
                index.insert(service);
                self.fresh.insert(namespace.as_str().into(), index);
            }
        }
    }
}

/// The Services of one namespace, sorted by name (the kubelet's order). Immutable once
/// published; a clone shares every node with the original, so an update copies only the
/// nodes on the path to the Service it changes.
#[derive(Debug, Clone, Default)]
pub struct NamespaceIndex {
    /// A set ordered and looked up by the Services' names: the name is not stored twice.
    services: OrdSet<ByName>,
}

/// A Service ordered, compared and looked up by its name alone (a namespace holds one
/// Service per name).
#[derive(Debug, Clone)]
struct ByName(Arc<LinkedService>);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for ByName {}

impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name().cmp(other.0.name())
    }
}

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        self.0.name()
    }
}

impl NamespaceIndex {
    /// Looks up a Service by name.
    pub fn get(&self, name: &str) -> Option<&Arc<LinkedService>> {
        self.services.get(name).map(|s| &s.0)
    }

    /// All Services, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LinkedService>> {
        self.services.iter().map(|s| &s.0)
    }

    /// How many Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Adds a Service, replacing the one of the same name.
    fn insert(&mut self, service: Arc<LinkedService>) {
        self.services.insert(ByName(service));
    }
}

/// Which part of the catalog a full re-list replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Every namespace (a cluster-wide watch).
    All,
    /// One namespace (a namespaced watch).
    Namespace(String),
}

impl ListScope {
    /// Whether an object of `namespace` belongs to this scope.
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            ListScope::All => true,
            ListScope::Namespace(ns) => ns == namespace,
        }
    }
}

/// Counts for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Services held.
    pub services: usize,
    /// Namespaces with at least one Service.
    pub namespaces: usize,
}

/// Every namespace's index, by namespace. Published whole: readers never see a half-made
/// update. Persistent, so the writer's next version shares all but one path with this one
/// (a cluster may have thousands of namespaces; copying the map per event would cost that).
type Namespaces = imbl::HashMap<Arc<str>, Arc<NamespaceIndex>>;

/// The Service catalog shared by the watcher (one writer) and the reviews (many readers).
#[derive(Debug, Default)]
pub struct Catalog {
    /// The current map, replaced (never changed in place) by each write.
    namespaces: ArcSwap<Namespaces>,
    /// Serialises writers, so that two updates never race to publish from the same map.
    writer: Mutex<()>,
    ready: AtomicBool,
    /// The reserved-name test each Service is judged with when it arrives (the policy is
    /// fixed at start-up); `None`: every variable is asked about at review time.
    reserved: Option<Arc<NameFilter>>,
}

/// One review's view of the catalog: every namespace as it was at one instant, and whether
/// the first list was done by then. Immutable, so the decision reads it without locks and
/// sees one consistent catalog, however many namespaces it looks at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    namespaces: Arc<Namespaces>,
    ready: bool,
    reserved: Option<Arc<NameFilter>>,
}

impl Snapshot {
    /// Whether the first full list was done when the snapshot was taken.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The index of a namespace, if it has Services.
    pub fn namespace(&self, namespace: &str) -> Option<&Arc<NamespaceIndex>> {
        self.namespaces.get(namespace)
    }

    /// One Service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<LinkedService>> {
        self.namespace(namespace)?.get(name)
    }

    /// Whether [`LinkedService::may_have_reserved`] was computed with these rules (the
    /// catalog was built for them); otherwise a review must ask about every variable.
    pub fn judged_with(&self, rules: &CompiledRules) -> bool {
        self.reserved
            .as_ref()
            .is_some_and(|filter| Arc::ptr_eq(filter, rules.name_filter()))
    }

    /// Services and namespaces held.
    pub fn stats(&self) -> CatalogStats {
        CatalogStats {
            services: self.namespaces.values().map(|i| i.len()).sum(),
            namespaces: self.namespaces.len(),
        }
    }
}

impl Catalog {
    /// An empty catalog, not ready, that judges no Service against reserved rules (reviews
    /// then ask about every variable: correct, only slower).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty catalog, not ready, that judges each Service against `rules` when it arrives.
    pub fn with_rules(rules: &CompiledRules) -> Self {
        Self {
            reserved: Some(Arc::clone(rules.name_filter())),
            ..Self::default()
        }
    }

    /// A ready catalog holding these Services (static files, tests), judged by no rules.
    /// Invalid ones are returned with their error.
    pub fn from_links(links: Vec<ServiceLink>) -> (Self, Vec<IngestError>) {
        Self::new().with_links(links)
    }

    /// This catalog, filled with these Services and marked ready. Invalid ones are returned
    /// with their error.
    pub fn with_links(self, links: Vec<ServiceLink>) -> (Self, Vec<IngestError>) {
        let errors = self.replace(ListScope::All, links);
        self.mark_ready();
        (self, errors)
    }

    /// The catalog as it is now, for one review: one atomic load, no lock.
    pub fn snapshot(&self) -> Snapshot {
        // `ready` first: once it reads true, the map loaded after it holds the first list.
        let ready = self.is_ready();
        Snapshot {
            namespaces: self.namespaces.load_full(),
            ready,
            reserved: self.reserved.clone(),
        }
    }

    /// The index of a namespace, if it has Services.
    pub fn namespace(&self, namespace: &str) -> Option<Arc<NamespaceIndex>> {
        self.namespaces.load().get(namespace).cloned()
    }

    /// One Service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<LinkedService>> {
        self.namespace(namespace)?.get(name).cloned()
    }

    /// A Service in the form the catalog keeps, judged by the catalog's rules.
    pub fn ingest(&self, link: &ServiceLink) -> Result<IngestedService, IngestError> {
        Ok(IngestedService {
            namespace: link.namespace.clone(),
            service: LinkedService::new(link, self.reserved.as_deref())?,
        })
    }

    /// Adds or replaces one Service: O(log n) in its namespace and in the namespaces.
    pub fn apply(&self, link: &ServiceLink) -> Result<(), IngestError> {
        self.insert(self.ingest(link)?);
        Ok(())
    }

    /// Adds or replaces one ingested Service (see [`Catalog::apply`]).
    pub fn insert(&self, ingested: IngestedService) {
        let IngestedService { namespace, service } = ingested;
        let _writer = self.lock_writer();
        let mut map = Namespaces::clone(&self.namespaces.load());
        let mut index = map
            .get(namespace.as_str())
            .map(|i| NamespaceIndex::clone(i))
            .unwrap_or_default();
        index.insert(Arc::new(service));
        map.insert(namespace.as_str().into(), Arc::new(index));
        self.namespaces.store(Arc::new(map));
    }

    /// Removes one Service (absent is fine: deletes may repeat after a re-list).
    pub fn delete(&self, namespace: &str, name: &str) {
        let _writer = self.lock_writer();
        let mut map = Namespaces::clone(&self.namespaces.load());
        let Some(mut index) = map.get(namespace).map(|i| NamespaceIndex::clone(i)) else {
            return;
        };
        if index.services.remove(name).is_none() {
            return;
        }
        if index.is_empty() {
            map.remove(namespace);
        } else {
            map.insert(namespace.into(), Arc::new(index));
        }
        self.namespaces.store(Arc::new(map));
    }

    /// Replaces everything in `scope` with `links` (a completed re-list): Services deleted
    /// while the watch was down disappear here.
    pub fn replace(&self, scope: ListScope, links: Vec<ServiceLink>) -> Vec<IngestError> {
        let mut errors = Vec::new();
        let mut listing = Listing::new(scope);
        for link in &links {
            // Out-of-scope links are skipped before ingesting: their errors are not this list's.
            if !listing.scope.covers(&link.namespace) {
                continue;
            }
            match self.ingest(link) {
                Ok(service) => listing.add(service),
                Err(e) => errors.push(e),
            }
        }
        self.install(listing);
        errors
    }

    /// Replaces everything in `scope` with these ingested Services (see
    /// [`Catalog::replace`]); those of other namespaces than a namespaced scope's are ignored.
    pub fn replace_ingested(
        &self,
        scope: ListScope,
        services: impl IntoIterator<Item = IngestedService>,
    ) {
        let mut listing = Listing::new(scope);
        services.into_iter().for_each(|s| listing.add(s));
        self.install(listing);
    }

    /// Replaces everything in the listing's scope with the listing.
    pub fn install(&self, listing: Listing) {
        let Listing { scope, fresh } = listing;
        let _writer = self.lock_writer();
        let mut map = match &scope {
            ListScope::All => Namespaces::new(),
            ListScope::Namespace(ns) => {
                let mut map = Namespaces::clone(&self.namespaces.load());
                map.remove(ns.as_str());
                map
            }
        };
        for (ns, index) in fresh {
            map.insert(ns, Arc::new(index));
        }
        self.namespaces.store(Arc::new(map));
    }

    /// Services and namespaces held.
    pub fn stats(&self) -> CatalogStats {
        self.snapshot().stats()
    }

    /// Marks the first full list as done.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first full list is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guard protects no data (every write publishes a complete map), so a panic in
        // another writer leaves nothing half-done: a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicelinks::LinkPort;

    pub(crate) fn link(ns: &str, name: &str, ip: &str, port: i32) -> ServiceLink {
        ServiceLink {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: vec![LinkPort {
                name: String::new(),
                port,
                protocol: "TCP".into(),
            }],
        }
    }

    #[test]
    fn precomputed_variables_equal_servicelinks() {
        let l = link("a", "redis-master", "fd00::5", 6379);
        let s = LinkedService::new(&l, None).expect("valid");
        let want = kubelet_pairs(&l);
        assert_eq!(owned_pairs(&s.variables()), want);
        assert_eq!(s.variable_count(), want.len());
    }

    #[test]
    fn headless_has_no_variables_but_exists() {
        let (c, errors) = Catalog::from_links(vec![link("a", "h", "None", 80)]);
        assert!(errors.is_empty());
        let s = c.service("a", "h").expect("present");
        assert!(!s.has_cluster_ip());
        assert!(s.variables().is_empty());
    }

    #[test]
    fn apply_delete_and_snapshots_are_isolated() {
        let (c, _) = Catalog::from_links(vec![link("a", "x", "10.0.0.1", 80)]);
        let before = c.namespace("a").expect("ns a");
        c.apply(&link("a", "y", "10.0.0.2", 81)).expect("apply");
        c.apply(&link("a", "x", "10.0.0.9", 80)).expect("update");
        // A reader's snapshot does not change under it.
        assert_eq!(before.len(), 1);
        assert_eq!(
            before
                .get("x")
                .map(|s| s.variables().iter().next().map(|v| v.1.to_string())),
            Some(Some("10.0.0.1".into()))
        );
        let after = c.namespace("a").expect("ns a");
        assert_eq!(after.len(), 2);
        c.delete("a", "x");
        c.delete("a", "x");
        c.delete("a", "y");
        assert!(c.namespace("a").is_none());
        assert_eq!(c.stats(), CatalogStats::default());
    }

    #[test]
    fn relist_drops_services_deleted_meanwhile() {
        let (c, _) = Catalog::from_links(vec![
            link("a", "gone", "10.0.0.1", 80),
            link("a", "kept", "10.0.0.2", 80),
            link("b", "other", "10.0.0.3", 80),
        ]);
        c.replace(ListScope::All, vec![link("a", "kept", "10.0.0.2", 80)]);
        assert!(c.service("a", "gone").is_none());
        assert!(c.service("a", "kept").is_some());
        assert!(c.namespace("b").is_none());
        assert_eq!(
            c.stats(),
            CatalogStats {
                services: 1,
                namespaces: 1
            }
        );
    }

    #[test]
    fn namespaced_relist_touches_only_its_namespace() {
        let (c, _) = Catalog::from_links(vec![
            link("a", "x", "10.0.0.1", 80),
            link("b", "y", "10.0.0.3", 80),
        ]);
        c.replace(
            ListScope::Namespace("a".into()),
            vec![
                link("a", "z", "10.0.0.4", 80),
                link("b", "ignored", "10.0.0.5", 80),
            ],
        );
        assert!(c.service("a", "x").is_none());
        assert!(c.service("a", "z").is_some());
        assert!(c.service("b", "y").is_some());
        assert!(c.service("b", "ignored").is_none());
    }

    #[test]
    fn json_unsafe_characters_are_refused() {
        for bad in ["x\0y", "x\"y", "x\\y", "x\ny"] {
            let (c, errors) = Catalog::from_links(vec![link("a", bad, "10.0.0.1", 80)]);
            assert_eq!(errors.len(), 1, "{bad:?}");
            assert!(c.namespace("a").is_none());
        }
        let (_, errors) = Catalog::from_links(vec![link("a", "ok", "10.0.0.1\"", 80)]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn reserved_facts_are_judged_at_ingest_for_the_catalogs_rules() {
        let policy = crate::config::Policy::from_yaml(
            "reserved:\n  useDefaultRules: false\n  rules:\n    - name: sriov\n      \
             scope: all\n      prefixes: [PCIDEVICE_]\n",
            "t",
        )
        .expect("policy");
        let links = vec![
            link("ns", "pcidevice-x", "10.0.0.1", 80),
            link("ns", "web", "10.0.0.2", 80),
        ];
        let (judged, _) = Catalog::with_rules(&policy.rules).with_links(links.clone());
        let snapshot = judged.snapshot();
        assert!(snapshot.judged_with(&policy.rules));
        assert!(
            snapshot.judged_with(&policy.clone().rules),
            "clones share the rules"
        );
        let fact = |name| snapshot.service("ns", name).map(|s| s.may_have_reserved());
        assert_eq!(fact("pcidevice-x"), Some(true));
        assert_eq!(fact("web"), Some(false));
        // Other rules (compiled separately): the facts do not hold for them.
        let other = crate::config::Policy::default();
        assert!(!snapshot.judged_with(&other.rules));
        // A catalog without rules judges nothing: every Service may have reserved names.
        let (plain, _) = Catalog::from_links(links);
        let snapshot = plain.snapshot();
        assert!(!snapshot.judged_with(&policy.rules));
        assert_eq!(
            snapshot.service("ns", "web").map(|s| s.may_have_reserved()),
            Some(true)
        );
    }

    #[test]
    fn a_snapshot_does_not_change_under_its_review() {
        let catalog = Catalog::new();
        let before = catalog.snapshot();
        catalog
            .replace(ListScope::All, vec![link("a", "x", "10.0.0.1", 80)])
            .is_empty()
            .then_some(())
            .expect("valid");
        catalog.mark_ready();
        assert!(!before.is_ready());
        assert!(before.namespace("a").is_none());
        let after = catalog.snapshot();
        catalog.delete("a", "x");
        assert!(after.is_ready());
        assert!(after.service("a", "x").is_some());
        assert_eq!(
            after.stats(),
            CatalogStats {
                services: 1,
                namespaces: 1
            }
        );
        assert!(catalog.snapshot().namespace("a").is_none());
    }

    #[test]
    fn rendered_services_follow_each_other() {
        let web = LinkedService::new(&link("a", "web", "10.0.0.1", 80), None).expect("valid");
        let db = LinkedService::new(&link("a", "db", "fd00::2", 5432), None).expect("valid");
        let headless = LinkedService::new(&link("a", "h", "None", 80), None).expect("valid");
        let mut rendered = Rendered::with_capacity_for([&web, &headless, &db].into_iter());
        let first = rendered.add(&web);
        assert_eq!(rendered.add(&headless), first.end..first.end);
        let second = rendered.add(&db);
        assert_eq!(first, 0..web.variable_count());
        assert_eq!(second, first.end..first.end + db.variable_count());
        assert_eq!(
            rendered.get(first.start),
            Some(("WEB_SERVICE_HOST", "10.0.0.1"))
        );
        assert_eq!(
            rendered.get(second.start),
            Some(("DB_SERVICE_HOST", "fd00::2"))
        );
        assert_eq!(
            rendered.get(second.start + 2),
            Some(("DB_PORT", "tcp://[fd00::2]:5432"))
        );
        assert_eq!(rendered.get(second.end), None);
        assert_eq!(rendered.name(second.end), "");
        assert!(rendered.is_json_plain());
        let want: Vec<(String, String)> = [&web, &db]
            .into_iter()
            .flat_map(|s| owned_pairs(&s.variables()))
            .collect();
        assert_eq!(owned_pairs(&rendered), want);
    }

    /// A budget of its own per test (tests share the process budget).
    fn budget(limit: usize) -> &'static render_cache::Budget {
        Box::leak(Box::new(render_cache::Budget::new(limit)))
    }

    /// The whole text and spans of a rendering, for comparing two of them exactly.
    fn exact(rendered: &Rendered) -> (String, Vec<Span>, bool) {
        (
            rendered.text.clone(),
            rendered.spans.clone(),
            rendered.plain,
        )
    }

    /// A Service's kept rendering is copied by later reviews, at whatever place it lands in
    /// their text, and gives exactly the text and positions a fresh rendering gives.
    #[test]
    fn a_kept_rendering_is_copied_exactly() {
        let web = LinkedService::new(&link("a", "web", "10.0.0.1", 80), None).expect("valid");
        let db = LinkedService::new(&link("a", "db", "fd00::2", 5432), None).expect("valid");
        let budget = budget(render_cache::LIMIT);
        let mut fresh = Rendered::new();
        fresh.add_with(&web, None);
        fresh.add_with(&db, None);
        assert!(web.rendered.get().is_none(), "not kept without a budget");
        // Kept in one order, read back in another.
        let mut first = Rendered::new();
        first.add_with(&db, Some(budget));
        first.add_with(&web, Some(budget));
        assert!(web.rendered.get().is_some() && db.rendered.get().is_some());
        let held = budget.held();
        assert!(held > 0);
        let mut copied = Rendered::new();
        assert_eq!(copied.add_with(&web, Some(budget)), 0..web.variable_count());
        let second = copied.add_with(&db, Some(budget));
        assert_eq!(
            second,
            web.variable_count()..web.variable_count() + db.variable_count()
        );
        assert_eq!(exact(&copied), exact(&fresh));
        assert_eq!(budget.held(), held, "kept once");
        assert_eq!(
            copied.json_objects(0, copied.len() - 1),
            fresh.json_objects(0, fresh.len() - 1)
        );
    }

    /// The budget bounds what is kept; dropping a Service gives its bytes back; a copy of a
    /// Service starts without a kept rendering, and equality ignores it.
    #[test]
    fn kept_renderings_stay_within_their_budget() {
        let small = budget(200);
        let web = LinkedService::new(&link("a", "web", "10.0.0.1", 80), None).expect("valid");
        let mut rendered = Rendered::new();
        rendered.add_with(&web, Some(small));
        assert!(web.rendered.get().is_none(), "~500 bytes do not fit 200");
        assert_eq!(small.held(), 0);
        assert_eq!(owned_pairs(&rendered), owned_pairs(&web.variables()));

        let roomy = budget(64 * 1024);
        let kept = LinkedService::new(&link("a", "db", "10.0.0.2", 5432), None).expect("valid");
        Rendered::new().add_with(&kept, Some(roomy));
        let held = roomy.held();
        assert!(held > 0 && held <= 64 * 1024);
        let copy = kept.clone();
        assert!(copy.rendered.get().is_none());
        assert_eq!(copy, kept);
        assert_eq!(roomy.held(), held);
        drop(kept);
        assert_eq!(roomy.held(), 0);

        // Headless Services render nothing and keep nothing.
        let headless = LinkedService::new(&link("a", "h", "None", 80), None).expect("valid");
        assert_eq!(Rendered::new().add_with(&headless, Some(roomy)), 0..0);
        assert_eq!(roomy.held(), 0);
    }

    /// A recipe field ends at the first separator; without one there is no field.
    #[test]
    fn split_field_splits_at_the_first_separator() {
        assert_eq!(split_field("a\0b\0c"), Some(("a", "b\0c")));
        assert_eq!(split_field("\0rest"), Some(("", "rest")));
        assert_eq!(split_field("é\0ü"), Some(("é", "ü")));
        assert_eq!(split_field("last\0"), Some(("last", "")));
        assert_eq!(split_field("no separator"), None);
        assert_eq!(split_field(""), None);
    }

    /// The variables as owned (name, value) pairs.
    fn owned_pairs(rendered: &Rendered) -> Vec<(String, String)> {
        rendered
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// What the kubelet's rules give `link`, as (name, value) pairs.
    fn kubelet_pairs(link: &ServiceLink) -> Vec<(String, String)> {
        servicelinks::service_variables(link)
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    /// Any text without the characters ingestion refuses.
    fn field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9-]{1,12}",
            "[0-9a-f:.%A-Z]{0,20}",
            any::<String>().prop_map(|s| s
                .chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                .collect()),
        ]
    }

    proptest::proptest! {
        /// The stored recipe renders exactly what servicelinks computes from the Service,
        /// for any text ingestion lets in.
        #[test]
        fn the_recipe_renders_the_kubelet_variables(
            name in field(),
            ip in proptest::prop_oneof![field(), proptest::strategy::Just("None".to_string()), proptest::strategy::Just(String::new())],
            ports in proptest::collection::vec((field(), proptest::prelude::any::<i32>(), proptest::prop_oneof![field(), proptest::strategy::Just("UDP".to_string())]), 0..7),
        ) {
            let l = ServiceLink {
                namespace: "ns".into(),
                name,
                cluster_ip: ip,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| servicelinks::LinkPort { name, port, protocol })
                    .collect(),
            };
            let Ok(s) = LinkedService::new(&l, None) else {
                proptest::prop_assert!(l.name.is_empty());
                return Ok(());
            };
            let want = kubelet_pairs(&l);
            proptest::prop_assert_eq!(s.variable_count(), want.len());
            proptest::prop_assert_eq!(owned_pairs(&s.variables()), want);
            proptest::prop_assert_eq!(s.name(), l.name.as_str());
            proptest::prop_assert!(s.is_json_plain());
            // Kept, then copied after another Service's variables: the same bytes and
            // positions as rendering it there.
            let other = LinkedService::new(&link("ns", "other", "10.0.0.9", 81), None).expect("valid");
            let mut fresh = Rendered::new();
            fresh.add_with(&other, None);
            fresh.add_with(&s, None);
            let roomy = budget(1 << 20);
            Rendered::new().add_with(&s, Some(roomy));
            let mut copied = Rendered::new();
            copied.add_with(&other, None);
            copied.add_with(&s, Some(roomy));
            proptest::prop_assert_eq!(exact(&copied), exact(&fresh));
        }
    }
}
