//! The Service catalog: per-namespace, ready-made variable lists.
//!
//! Filled from a static file ([`file`]) or kube-runtime watchers ([`watch`], through the
//! common [`driver`] that also feeds the ConfigMap and DRA indexes). Work is done once per
//! watch event: a Service's variables, and whether any of them may be reserved, are computed
//! when it arrives and stored in one allocation. A namespace is a persistent sorted map
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
pub mod service_fields;
pub mod status;
pub mod watch;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use imbl::OrdSet;

use crate::reserved::{CompiledRules, NameFilter};
use crate::servicelinks::{self, ServiceLink};

/// Separates names and values inside [`LinkedService`]'s buffer; [`ServiceLink`]s that
/// contain it are refused at ingest, so it can never be part of a name or value.
const SEP: char = '\0';

/// One Service with its kubelet variables precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedService {
    /// The name, then `NAME\0VALUE\0NAME\0VALUE...`: one allocation for all of a Service's
    /// text (not one per name and value, nor one for the name), which is what keeps 100,000
    /// Services within the memory target.
    text: Box<str>,
    /// Where the variables start in `text` (the name's length).
    vars_at: u32,
    count: u32,
    has_cluster_ip: bool,
    /// Whether some variable may be reserved under the catalog's rules (see
    /// [`LinkedService::may_have_reserved`]); fixed at ingest, like the variables.
    may_have_reserved: bool,
    /// No byte of the variables needs escaping in a JSON string (see
    /// [`LinkedService::is_json_plain`]); computed from the text by every constructor.
    json_plain: bool,
}

/// Whether `text` holds no byte a JSON string must escape (the separator, NUL, is one: the
/// check is over whole `NAME\0VALUE\0` runs, so it is made on each name and value by
/// skipping NULs).
fn json_plain(text: &str) -> bool {
    !text
        .bytes()
        .any(|b| (b < 0x20 && b != SEP as u8) || b == b'"' || b == b'\\')
}

/// Why a Service cannot enter the catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// A field holds a quote, a backslash or a control character. API validation never lets
    /// one through (names are DNS labels, IPs are IPs, protocols an enum), so such a Service
    /// is not one the kubelet would link; and NUL separates the variables in the buffer. (The
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
    /// Computes the variables of a Service, and whether `reserved` may reserve any of them
    /// (`None`: no rules known, so every variable must be asked about).
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
        let vars = servicelinks::service_variables(link);
        let vars_len: usize = vars.iter().map(|v| v.name.len() + v.value.len() + 2).sum();
        let mut text = String::with_capacity(link.name.len() + vars_len);
        text.push_str(&link.name);
        for v in &vars {
            text.push_str(&v.name);
            text.push(SEP);
            text.push_str(&v.value);
            text.push(SEP);
        }
        let may_have_reserved =
            reserved.is_none_or(|filter| vars.iter().any(|v| filter.may_be_reserved(&v.name)));
        let vars_at = u32::try_from(link.name.len()).map_err(|_| IngestError::NoName)?;
        Ok(Self {
            json_plain: json_plain(text.get(link.name.len()..).unwrap_or_default()),
            text: text.into_boxed_str(),
            // A name of 4 GiB cannot arrive (request and file limits are far smaller).
            vars_at,
            has_cluster_ip: link.has_cluster_ip(),
            count: u32::try_from(vars.len()).unwrap_or(u32::MAX),
            may_have_reserved,
        })
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        self.text.get(..self.vars_at as usize).unwrap_or_default()
    }

    /// The `NAME\0VALUE\0...` part of the text: positions are relative to it.
    fn vars(&self) -> &str {
        self.text.get(self.vars_at as usize..).unwrap_or_default()
    }

    /// Whether `spec.clusterIP` is set and not `None`.
    pub fn has_cluster_ip(&self) -> bool {
        self.has_cluster_ip
    }

    /// How many variables it gives.
    pub fn variable_count(&self) -> usize {
        self.count as usize
    }

    /// The variables, in the kubelet's order.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.variables_at().map(|(_, name, value)| (name, value))
    }

    /// The variables with the position of each, for [`LinkedService::variable_span`].
    pub fn variables_at(&self) -> impl Iterator<Item = (usize, &str, &str)> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (name, value, next) = self.split_at_offset(at)?;
            let here = at;
            at = next;
            Some((here, name, value))
        })
    }

    /// The variable at position `at` (from [`LinkedService::variables_at`]) whose name and
    /// value lengths are known: two slices, no scan.
    /// `None` when the span does not fit (then it was not taken from this Service).
    pub fn variable_span(
        &self,
        at: usize,
        name_len: usize,
        value_len: usize,
    ) -> Option<(&str, &str)> {
        let vars = self.vars();
        let name = vars.get(at..at + name_len)?;
        let value_at = at + name_len + 1;
        let value = vars.get(value_at..value_at + value_len)?;
        Some((name, value))
    }

    /// Whether any of its variables may be reserved under the rules of the catalog it was
    /// ingested into: nearly always `false`, and then a review asks about none of them. Only
    /// meaningful for the rules [`Snapshot::judged_with`] confirms.
    pub fn may_have_reserved(&self) -> bool {
        self.may_have_reserved
    }

    /// Whether no name or value holds a byte that a JSON string must escape (a quote, a
    /// backslash, a control character), so the patch encoder may copy them as they are.
    /// Ingestion refuses such bytes anyway; the flag is computed from the text itself, so the
    /// encoder is correct whatever the text.
    pub fn is_json_plain(&self) -> bool {
        self.json_plain
    }

    /// A Service holding exactly these variables, whatever their text (tests of the patch
    /// encoder); none may contain the buffer's separator, NUL.
    #[cfg(test)]
    pub(crate) fn with_variables(name: &str, vars: &[(String, String)]) -> Self {
        let mut buf = String::from(name);
        for (n, v) in vars {
            buf.push_str(n);
            buf.push(SEP);
            buf.push_str(v);
            buf.push(SEP);
        }
        Self {
            json_plain: json_plain(buf.get(name.len()..).unwrap_or_default()),
            text: buf.into_boxed_str(),
            vars_at: u32::try_from(name.len()).unwrap_or(0),
            has_cluster_ip: true,
            count: u32::try_from(vars.len()).unwrap_or(u32::MAX),
            may_have_reserved: true,
        }
    }

    fn split_at_offset(&self, at: usize) -> Option<(&str, &str, usize)> {
        // SEP is one ASCII byte, so byte search finds exactly the char boundaries.
        let rest = self.vars().as_bytes().get(at..)?;
        let name_len = memchr::memchr(SEP as u8, rest)?;
        let value_len = memchr::memchr(SEP as u8, rest.get(name_len + 1..)?)?;
        if name_len == 0 {
            return None;
        }
        let (name, value) = self.variable_span(at, name_len, value_len)?;
        Some((name, value, at + name_len + value_len + 2))
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

    /// Adds or replaces one Service: O(log n) in its namespace and in the namespaces.
    pub fn apply(&self, link: &ServiceLink) -> Result<(), IngestError> {
        let service = Arc::new(LinkedService::new(link, self.reserved.as_deref())?);
        let _writer = self.lock_writer();
        let mut map = Namespaces::clone(&self.namespaces.load());
        let mut index = map
            .get(link.namespace.as_str())
            .map(|i| NamespaceIndex::clone(i))
            .unwrap_or_default();
        index.insert(service);
        map.insert(link.namespace.as_str().into(), Arc::new(index));
        self.namespaces.store(Arc::new(map));
        Ok(())
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
        let mut fresh: HashMap<Arc<str>, NamespaceIndex> = HashMap::new();
        for link in links {
            if let ListScope::Namespace(ns) = &scope
                && &link.namespace != ns
            {
                continue;
            }
            match LinkedService::new(&link, self.reserved.as_deref()) {
                Ok(service) => {
                    fresh
                        .entry(link.namespace.as_str().into())
                        .or_default()
                        .insert(Arc::new(service));
                }
                Err(e) => errors.push(e),
            }
        }
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
        errors
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
        let got: Vec<(String, String)> = s
            .variables()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = servicelinks::service_variables(&l)
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.variable_count(), want.len());
    }

    #[test]
    fn headless_has_no_variables_but_exists() {
        let (c, errors) = Catalog::from_links(vec![link("a", "h", "None", 80)]);
        assert!(errors.is_empty());
        let s = c.service("a", "h").expect("present");
        assert!(!s.has_cluster_ip());
        assert_eq!(s.variables().count(), 0);
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
                .map(|s| s.variables().next().map(|v| v.1.to_string())),
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
    fn variables_by_position() {
        let s = LinkedService::new(&link("a", "web", "10.0.0.1", 80), None).expect("valid");
        let all: Vec<_> = s.variables_at().collect();
        assert_eq!(all.len(), s.variable_count());
        for (at, name, value) in all {
            assert_eq!(
                s.variable_span(at, name.len(), value.len()),
                Some((name, value))
            );
        }
        assert_eq!(s.variable_span(0, 10_000, 1), None);
        assert_eq!(s.variable_span(100_000, 1, 1), None);
    }
}
