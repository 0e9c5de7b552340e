//! `/mutate`, in the order it decides:
//!
//! 1. [`pod_to_mutate`]: is this a Pod being created, and can it be read;
//! 2. [`judge_reserved`]: the reserved rules on what the user wrote (refuse, or entries to
//!    strip);
//! 3. [`choose_services`]: which Services the Pod gets (or none, or a refusal);
//! 4. [`plan_injection`]: their variables, deduplicated and within the limits, and which go
//!    into which container;
//! 5. [`build_patch`]: the `env` operations, `enableServiceLinks` and the record.

use std::collections::BTreeMap;
use std::ops::Range;

use hashbrown::hash_map::Entry;
use hashbrown::{HashMap, HashSet};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::{Map, Value};

use super::patch::{InjectedVars, PatchPlan, PlannedOp};
use super::pod::{self, ContainerView, PodView};
use super::selection::{self, Selection, Source};
use super::{
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_SERVICES, Decision, MAX_INJECTED_ENTRIES,
    Object, Operation, Request, Verdict, denial_text, review_namespace, unsupported_kind,
};
use crate::catalog::{LinkedService, Rendered, Snapshot};
use crate::config::{InjectionMode, OnMissing, Policy};
use crate::podshape::ContainerKind;
use crate::reserved::{Action, ConfigMapKeys, Finding, MessageContext, Origin};
use crate::text;

/// The containers injection and stripping look at, in patch order.
const MUTATED_KINDS: [ContainerKind; 2] = [ContainerKind::Init, ContainerKind::Regular];

/// A container by its place in the Pod spec; ordered as the patch lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ContainerAt {
    kind: ContainerKind,
    index: usize,
}

/// The `env` entries the reserved rules strip (by index), per container.
type Stripped = BTreeMap<ContainerAt, HashSet<usize>>;

/// The variables one container gets: indices into the Pod's [`InjectedVars`].
struct ContainerPlan {
    at: ContainerAt,
    injected: Vec<u32>,
}

/// `/mutate`'s decision for one review.
pub(super) fn mutate_pod(
    request: &Request<'_>,
    catalog: &Snapshot,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Decision {
    let mut decoded = None;
    let pod = match pod_to_mutate(request, &mut decoded) {
        Ok(pod) => pod,
        Err(early) => return *early,
    };
    let namespace = review_namespace(request.namespace, pod.namespace());
    let mut warnings = text::Warnings::default();
    let stripped = match judge_reserved(pod, namespace, policy, config_maps, &mut warnings) {
        Ok(stripped) => stripped,
        Err(message) => return Decision::deny(message, warnings.finish()),
    };
    let selection = match choose_services(pod, namespace, catalog, policy, &mut warnings) {
        Ok(selection) => selection,
        Err(message) => return Decision::deny(message, warnings.finish()),
    };
    let injection = plan_injection(selection.as_ref(), pod, catalog, policy, &mut warnings);
    let variables = injection.variables;
    let (patch, injected) = build_patch(pod, &stripped, injection, policy);
    Decision {
        verdict: Verdict::Allow,
        patch,
        warnings: warnings.finish(),
        injected,
        variables,
    }
}

/// The Pod a review asks to create; `Err`: the decision for a review that is not one (any
/// other kind, operation or subresource), or whose object cannot be read. A Pod given as text
/// is decoded into `decoded`.
fn pod_to_mutate<'s, 'r>(
    request: &Request<'r>,
    decoded: &'s mut Option<PodView<'r>>,
) -> Result<&'s PodView<'r>, Box<Decision>> {
    if request.sub_resource.is_some() {
        // Env is immutable after creation; ephemeral containers (kind `Pod`, or
        // `EphemeralContainers` before 1.22) are checked by /validate.
        return Err(Box::new(Decision::allow()));
    }
    if !request.group.is_empty() || request.kind != "Pod" {
        return Err(Box::new(unsupported_kind(
            request,
            "/mutate handles only Pods",
        )));
    }
    if request.operation != Operation::Create {
        return Err(Box::new(Decision::allow()));
    }
    let invalid = |message: String| Box::new(Decision::invalid(message));
    let pod: &'s PodView<'r> = match request.object {
        None => return Err(invalid("the review has no object to admit".into())),
        Some(Object::Pod(view)) => view,
        Some(Object::Unreadable(error)) => return Err(invalid(error.to_string())),
        Some(Object::Text(text)) => {
            decoded.insert(pod::decode(text, "Pod").map_err(|e| invalid(e.to_string()))?)
        }
    };
    if pod.spec.is_none() {
        return Err(invalid("not a valid Pod: `spec` is missing".into()));
    }
    Ok(pod)
}

/// Applies the reserved rules to the Pod's init and regular containers: a denial is the
/// refusal's text; otherwise the `env` entries to strip, with warnings for what is stripped
/// or only warned about.
fn judge_reserved(
    pod: &PodView<'_>,
    namespace: &str,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
    warnings: &mut text::Warnings,
) -> Result<Stripped, String> {
    let findings =
        policy
            .rules
            .evaluate(namespace, &pod.container_envs(&MUTATED_KINDS), config_maps);
    let mut denials = text::Messages::default();
    let mut stripped = Stripped::new();
    let message = |finding: &Finding| finding.message(MessageContext::Mutation);
    for finding in &findings {
        match finding.action {
            Action::Deny => denials.push_with(|| message(finding)),
            Action::Strip => {
                if let Origin::Env(entry) = finding.origin {
                    let at = ContainerAt {
                        kind: finding.kind,
                        index: finding.index,
                    };
                    stripped.entry(at).or_default().insert(entry);
                }
                warnings.push_with(|| message(finding));
            }
            Action::Warn => warnings.push_with(|| message(finding)),
        }
    }
    if denials.is_empty() {
        Ok(stripped)
    } else {
        Err(denial_text(&denials))
    }
}

/// `None`: no injection for this Pod. `Err`: the Pod is refused with the message.
///
/// A recorded `envlink.io/injected` list is judged like `envlink.io/services`: envlink's own
/// record (read back when the API server reinvokes it) passes that check unchanged, and a
/// record a Pod author wrote on a new Pod gains nothing the annotation would not give — the
/// missing-Service rule applies, `kubernetes` is added, and under `mode: annotated` a record
/// alone (without `envlink.io/services`) injects nothing.
fn choose_services<'a>(
    pod: &'a PodView<'_>,
    namespace: &'a str,
    catalog: &Snapshot,
    policy: &Policy,
    warnings: &mut text::Warnings,
) -> Result<Option<Selection<'a>>, String> {
    let config = &policy.config.services;
    if config.mode == InjectionMode::Off || !wants_injection(pod)? {
        return Ok(None);
    }
    let services = pod.annotation(ANNOTATION_SERVICES);
    let listed = match pod.annotation(ANNOTATION_INJECTED) {
        Some(_) if config.mode == InjectionMode::Annotated && services.is_none() => {
            return Ok(None);
        }
        Some(recorded) => Some((ANNOTATION_INJECTED, recorded, Source::Recorded)),
        None => services.map(|names| (ANNOTATION_SERVICES, names, Source::Annotation)),
    };
    if listed.is_none() && config.mode == InjectionMode::Annotated {
        return Ok(None);
    }
    if !catalog.is_ready() {
        // Before the first list envlink does not know the Services: it changes nothing about
        // them, so the kubelet's own service links stay as the Pod asked.
        warnings.push(
            "envlink: the Service catalog is still loading (envlink just started); no service \
             variables were injected and spec.enableServiceLinks was left as it is"
                .to_string(),
        );
        return Ok(None);
    }
    let selection = match listed {
        Some((annotation, value, source)) => {
            selection::listed_selection(catalog, namespace, annotation, value, config, source)
                .map_err(|e| format!("envlink: {e}"))?
        }
        None => {
            let links_enabled = pod.enable_service_links().unwrap_or(true);
            selection::kubelet_selection(catalog, namespace, links_enabled)
        }
    };
    if !selection.missing.is_empty() {
        let text = missing_text(namespace, &selection);
        match config.on_missing {
            OnMissing::Deny => return Err(text),
            OnMissing::Warn => warnings.push(text),
        }
    }
    if selection.without_ip_count > 0 {
        warnings.push(without_ip_text(&selection));
    }
    Ok(Some(selection))
}

/// The Pod's `envlink.io/inject` opt-out: absent or `true` (any case) injects, `false` does
/// not, anything else is refused.
fn wants_injection(pod: &PodView<'_>) -> Result<bool, String> {
    match pod.annotation(ANNOTATION_INJECT).map(str::trim) {
        None => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!(
            "envlink: annotation {ANNOTATION_INJECT} must be \"true\" or \"false\", not {:?}",
            text::clip(v, text::ECHO_LIMIT)
        )),
    }
}

fn missing_text(namespace: &str, selection: &Selection<'_>) -> String {
    let annotation = if selection.source == Source::Recorded {
        ANNOTATION_INJECTED
    } else {
        ANNOTATION_SERVICES
    };
    let count = selection.missing_count;
    // Same-namespace Services are named plainly, as the user wrote them.
    let own = format!("{namespace}/");
    let names = selection
        .missing
        .iter()
        .map(|m| m.strip_prefix(own.as_str()).unwrap_or(m));
    let names = text::list(names, count);
    let noun = if count == 1 { "Service" } else { "Services" };
    format!(
        "envlink: {noun} {names} named in {annotation} not found in namespace {:?}; the Pod \
         can be created once {} exist{}",
        text::clip(namespace, text::ECHO_LIMIT),
        if count == 1 { "it" } else { "they" },
        if count == 1 { "s" } else { "" },
    )
}

fn without_ip_text(selection: &Selection<'_>) -> String {
    let one = selection.without_ip_count == 1;
    format!(
        "envlink: {} {} ha{} no cluster IP (headless or ExternalName) and give{} no variables",
        if one { "Service" } else { "Services" },
        text::list(&selection.without_ip, selection.without_ip_count),
        if one { "s" } else { "ve" },
        if one { "s" } else { "" },
    )
}

/// What a Pod is injected with.
struct Injection<'s> {
    /// The Services, when the Pod is injected (chosen, and within both limits).
    selection: Option<&'s Selection<'s>>,
    /// Their variables, deduplicated (empty when over `services.maxVariables`).
    vars: InjectedVars,
    /// How many distinct variables the Services give (as reported in the decision).
    variables: usize,
    /// Per init and regular container, the variables it gets (empty when not injected).
    containers: Vec<ContainerPlan>,
}

/// Phase 4: the chosen Services' variables (the first Service in order wins a name), checked
/// against `services.maxVariables`, then planned per container and checked against
/// [`MAX_INJECTED_ENTRIES`]. Over either limit nothing is injected, with a warning.
fn plan_injection<'s>(
    selection: Option<&'s Selection<'s>>,
    pod: &PodView<'_>,
    catalog: &Snapshot,
    policy: &Policy,
    warnings: &mut text::Warnings,
) -> Injection<'s> {
    let none = |vars: InjectedVars, variables| Injection {
        selection: None,
        vars,
        variables,
        containers: Vec::new(),
    };
    let Some(selection) = selection else {
        return none(InjectedVars::new(), 0);
    };
    let (rendered, runs) = render_chosen(selection, catalog, policy);
    let variables = Variables::of(&rendered, &runs, policy);
    let count = variables.len();
    let max = policy.config.services.max_variables;
    if count > max {
        warnings.push(format!(
            "envlink: this Pod would get {count} service variables, more than the limit of \
             {max} (services.maxVariables); none were injected. Name the Services it needs in \
             the {ANNOTATION_SERVICES} annotation",
        ));
        return none(InjectedVars::new(), 0);
    }
    let planned = ContainerPlanner::new(&variables, policy).plan(pod);
    // The plan holds indices only: the rendered text moves into the answer as it is.
    let entries = variables.into_entries();
    let vars = InjectedVars::of(rendered, entries);
    match planned {
        Ok(containers) => Injection {
            selection: Some(selection),
            vars,
            variables: count,
            containers,
        },
        Err(entries) => {
            warnings.push(format!(
                "envlink: injecting would add {entries} env entries across {} containers, \
                 more than {MAX_INJECTED_ENTRIES} (a Pod that size cannot be stored); none \
                 were injected. Name the Services it needs in the {ANNOTATION_SERVICES} \
                 annotation",
                pod.containers(ContainerKind::Init).len()
                    + pod.containers(ContainerKind::Regular).len()
            ));
            none(vars, count)
        }
    }
}

/// The variables of the chosen Services, deduplicated, with what the per-container plan
/// needs to look them up.
struct Variables<'r> {
    rendered: &'r Rendered,
    /// Indices into `rendered` of the variables injected, in order (the first Service in
    /// order wins a name).
    entries: Vec<u32>,
    /// Variable name → its index in `entries`.
    index_of: NameIndex<'r>,
    /// The indices (into `entries`) of the variables some rule could reserve (asked once per
    /// Pod, and skipped for the Services whose variables the catalog found no rule can
    /// reserve: nearly all).
    maybe_reserved: Vec<usize>,
}

/// Where one chosen Service's variables are in the review's [`Rendered`].
struct Run<'s> {
    /// Their indices.
    range: Range<usize>,
    /// Whether they must be asked about reserved names.
    check: bool,
    service: &'s LinkedService,
}

/// The chosen Services' variables rendered for this review, and where each Service's are.
fn render_chosen<'s>(
    selection: &'s Selection<'s>,
    catalog: &Snapshot,
    policy: &Policy,
) -> (Rendered, Vec<Run<'s>>) {
    let mut rendered =
        Rendered::with_capacity_for(selection.chosen.iter().map(|c| c.service.as_ref()));
    // The catalog judged each Service when it arrived; with other rules (a catalog built
    // without them) every Service is asked about.
    let judged = catalog.judged_with(&policy.rules);
    let runs = selection
        .chosen
        .iter()
        .map(|chosen| Run {
            range: rendered.add(&chosen.service),
            check: !judged || chosen.service.may_have_reserved(),
            service: &chosen.service,
        })
        .collect();
    (rendered, runs)
}

/// How a variable's name is found among the distinct variables.
enum NameIndex<'r> {
    /// No two chosen Services can give the same name (see [`Variables::of`]): every
    /// rendered variable is distinct, and a name is looked up by its Service's prefix. The
    /// prefixes (without `_`) sorted as `prefix_`, each with its Service's indices.
    Prefixes(Vec<(&'r str, Range<usize>)>),
    /// Name → index in `entries`, built by inserting every variable.
    Hashed(HashMap<&'r str, usize>),
}

/// Services with more variables than this are deduplicated through the hash map: a name
/// found by its prefix is then looked for among at most this many of its Service's names.
const PREFIX_RUN_MAX: usize = 64;

/// The bytes of `prefix` followed by `_`: what a Service's names begin with.
fn prefix_key(prefix: &str) -> impl Iterator<Item = u8> + '_ {
    prefix.bytes().chain(std::iter::once(b'_'))
}

/// `prefix` followed by `_`, compared with `text`.
fn cmp_prefix_key(prefix: &str, text: &str) -> std::cmp::Ordering {
    prefix_key(prefix).cmp(text.bytes())
}

impl<'r> Variables<'r> {
    /// The chosen Services' variables, the first Service in order winning a name.
    ///
    /// Every name of a Service is its env prefix, `_` and more (checked at ingest:
    /// [`LinkedService::names_under_prefix`]), so two Services' names can only meet when
    /// one's `prefix_` begins the other's (`foo` and `foo-service` both give
    /// `FOO_SERVICE_PORT`). When no `prefix_` of the chosen Services begins another — in
    /// sorted order it is enough to compare neighbours — no name repeats, and the hash map of
    /// every name (most of the cost here for a namespace's fifty Services) is not needed.
    fn of(rendered: &'r Rendered, runs: &[Run<'r>], policy: &Policy) -> Self {
        let Some(mut out) = Self::by_prefix(rendered, runs) else {
            return Self::hashed(rendered, runs, policy);
        };
        // Every variable is distinct here: its entry index is its rendered index.
        out.maybe_reserved = runs
            .iter()
            .filter(|run| run.check)
            .flat_map(|run| run.range.clone())
            .filter(|&i| policy.rules.may_be_reserved(rendered.name(i)))
            .collect();
        out
    }

    /// Every variable distinct, if the Services' prefixes show that no name can repeat.
    fn by_prefix(rendered: &'r Rendered, runs: &[Run<'r>]) -> Option<Self> {
        let mut prefixes = Vec::with_capacity(runs.len());
        for run in runs.iter().filter(|run| !run.range.is_empty()) {
            if !run.service.names_under_prefix() || run.range.len() > PREFIX_RUN_MAX {
                return None;
            }
            prefixes.push((run.service.env_prefix(), run.range.clone()));
        }
        prefixes.sort_unstable_by(|(a, _), (b, _)| prefix_key(a).cmp(prefix_key(b)));
        let begins = |shorter: &str, longer: &str| {
            longer
                .strip_prefix(shorter)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        };
        if prefixes.windows(2).any(|pair| begins(pair[0].0, pair[1].0)) {
            return None;
        }
        let entries = (0..u32::try_from(rendered.len()).ok()?).collect();
        Some(Self {
            rendered,
            entries,
            index_of: NameIndex::Prefixes(prefixes),
            maybe_reserved: Vec::new(),
        })
    }

    /// The variables deduplicated by inserting every name into a hash map; a winner of a
    /// checked Service is asked about reserved names as it is inserted.
    fn hashed(rendered: &'r Rendered, runs: &[Run<'r>], policy: &Policy) -> Self {
        let mut entries = Vec::with_capacity(rendered.len());
        let mut index_of = HashMap::with_capacity(rendered.len());
        let mut maybe_reserved = Vec::new();
        for run in runs {
            for i in run.range.clone() {
                let (Some((name, _)), Ok(at)) = (rendered.get(i), u32::try_from(i)) else {
                    continue;
                };
                if let Entry::Vacant(slot) = index_of.entry(name) {
                    let index = entries.len();
                    slot.insert(index);
                    entries.push(at);
                    if run.check && policy.rules.may_be_reserved(name) {
                        maybe_reserved.push(index);
                    }
                }
            }
        }
        Self {
            rendered,
            entries,
            index_of: NameIndex::Hashed(index_of),
            maybe_reserved,
        }
    }

    /// The index in `entries` of the variable called `name`.
    fn index_of(&self, name: &str) -> Option<usize> {
        match &self.index_of {
            NameIndex::Hashed(map) => map.get(name).copied(),
            NameIndex::Prefixes(prefixes) => {
                // The only Service whose names can be `name` has the greatest `prefix_` not
                // after it (a greater one below `name` would begin with it).
                let after =
                    prefixes.partition_point(|(prefix, _)| cmp_prefix_key(prefix, name).is_le());
                let (prefix, range) = prefixes.get(after.checked_sub(1)?)?;
                if !name.starts_with(prefix) {
                    return None;
                }
                range.clone().find(|&i| self.rendered.name(i) == name)
            }
        }
    }

    /// The injected variables' indices, releasing the rendered text.
    fn into_entries(self) -> Vec<u32> {
        self.entries
    }

    /// How many distinct variables.
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The name of distinct variable `i`.
    fn name(&self, i: usize) -> &'r str {
        self.entries
            .get(i)
            .map_or("", |&at| self.rendered.name(at as usize))
    }
}

/// Decides which variables each init and regular container gets: not those it defines
/// itself, not those reserved there.
///
/// Linear: a container's own names are marked with a per-container stamp (no clearing of a
/// per-variable array per container), a lower bound of the total is checked before any list
/// is built (so ten thousand containers do not cost ten thousand passes over the variables),
/// and which variables are reserved is asked once per distinct set of resources.
struct ContainerPlanner<'v, 's> {
    variables: &'v Variables<'s>,
    policy: &'v Policy,
    /// Per variable, the generation of the last container that defines it.
    stamp: Vec<u32>,
    generation: u32,
    /// Resource names → the variables reserved in a container with exactly those.
    reserved_by_resources: HashMap<Vec<&'v str>, HashSet<usize>>,
}

impl<'v, 's> ContainerPlanner<'v, 's> {
    fn new(variables: &'v Variables<'s>, policy: &'v Policy) -> Self {
        Self {
            variables,
            policy,
            stamp: vec![0; variables.len()],
            generation: 0,
            reserved_by_resources: HashMap::new(),
        }
    }

    /// The plan; `Err(entries)` when the entries summed over containers would pass
    /// [`MAX_INJECTED_ENTRIES`].
    fn plan(mut self, pod: &'v PodView<'_>) -> Result<Vec<ContainerPlan>, usize> {
        let count = self.variables.len();
        let reservable = self.variables.maybe_reserved.len();
        let mut lower_bound = 0usize;
        for (_, container) in containers(pod) {
            let defined = self.mark(container);
            lower_bound = lower_bound.saturating_add(count.saturating_sub(defined + reservable));
        }
        if lower_bound > MAX_INJECTED_ENTRIES {
            return Err(lower_bound);
        }
        let mut plans = Vec::new();
        let mut entries = 0usize;
        for (at, container) in containers(pod) {
            self.mark(container);
            let injected = self.injected_into(container);
            entries += injected.len();
            plans.push(ContainerPlan { at, injected });
        }
        if entries > MAX_INJECTED_ENTRIES {
            return Err(entries);
        }
        Ok(plans)
    }

    /// Marks the container's own names with a new generation; returns how many distinct
    /// variables it defines.
    fn mark(&mut self, container: &ContainerView<'_>) -> usize {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
        let mut defined = 0usize;
        for name in container.env_names() {
            if let Some(i) = self.variables.index_of(name)
                && self.stamp[i] != self.generation
            {
                self.stamp[i] = self.generation;
                defined += 1;
            }
        }
        defined
    }

    /// The variables the container last marked gets, in order.
    fn injected_into(&mut self, container: &'v ContainerView<'_>) -> Vec<u32> {
        let Self {
            variables,
            policy,
            stamp,
            generation,
            reserved_by_resources,
        } = self;
        let reserved_here = if variables.maybe_reserved.is_empty() {
            None
        } else {
            // Which rules apply to these resources, and so which variables are reserved
            // here, is decided once per distinct set of resources.
            let reserved = reserved_by_resources
                .entry(container.resource_names())
                .or_insert_with_key(|resources| reserved_among(variables, policy, resources));
            Some(&*reserved)
        };
        // Sized for all of them (nearly always what a container gets): a filtered collect
        // would grow the list a dozen times for a namespace's 657 variables.
        let mut injected = Vec::with_capacity(variables.len());
        injected.extend(
            (0..variables.len())
                .filter(|&i| stamp[i] != *generation)
                .filter(|i| reserved_here.is_none_or(|r| !r.contains(i)))
                .filter_map(|i| u32::try_from(i).ok()),
        );
        injected
    }
}

/// The variables of `maybe_reserved` that a rule reserves in a container with `resources`.
fn reserved_among(
    variables: &Variables<'_>,
    policy: &Policy,
    resources: &[&str],
) -> HashSet<usize> {
    let rules = policy.rules.for_container(resources);
    variables
        .maybe_reserved
        .iter()
        .copied()
        .filter(|&i| rules.is_reserved(variables.name(i)))
        .collect()
}

/// The init and regular containers, in patch order.
fn containers<'p, 'a>(
    pod: &'p PodView<'a>,
) -> impl Iterator<Item = (ContainerAt, &'p ContainerView<'a>)> {
    MUTATED_KINDS.into_iter().flat_map(move |kind| {
        pod.containers(kind)
            .iter()
            .enumerate()
            .map(move |(index, c)| (ContainerAt { kind, index }, c))
    })
}

/// Phase 5: the patch, and the record written to `envlink.io/injected` (when injecting).
fn build_patch(
    pod: &PodView<'_>,
    stripped: &Stripped,
    injection: Injection<'_>,
    policy: &Policy,
) -> (PatchPlan, Option<String>) {
    let mut ops = env_ops(pod, injection.containers, stripped);
    let mut record = None;
    if let Some(selection) = injection.selection {
        if policy.config.services.disable_service_links && pod.enable_service_links() != Some(false)
        {
            ops.push(PlannedOp::Op(PatchOperation::Add(AddOperation {
                path: pointer(&["spec", "enableServiceLinks"]),
                value: Value::Bool(false),
            })));
        }
        let mut injected = String::with_capacity(
            selection
                .chosen
                .iter()
                .map(|chosen| chosen.reference_len() + 1)
                .sum(),
        );
        for (i, chosen) in selection.chosen.iter().enumerate() {
            if i > 0 {
                injected.push(',');
            }
            chosen.write_reference(&mut injected);
        }
        // envlink's own record, read back on a reinvocation, is rewritten to itself: no op.
        // Anything else (a record a Pod author wrote) is replaced by the truth.
        if pod.annotation(ANNOTATION_INJECTED) != Some(injected.as_str()) {
            ops.push(PlannedOp::Op(annotation_op(
                pod,
                ANNOTATION_INJECTED,
                &injected,
            )));
        }
        record = Some(injected);
    }
    let patch = PatchPlan {
        vars: injection.vars,
        ops,
    };
    (patch, record)
}

/// One `env` operation per container that gets variables or loses a stripped entry: the
/// injected variables, then the container's own entries that stay, copied as written.
fn env_ops(pod: &PodView<'_>, plans: Vec<ContainerPlan>, stripped: &Stripped) -> Vec<PlannedOp> {
    // Containers that only lose an entry (injection off, or over a limit) need an operation
    // too; a map, not a scan per stripping container: both may number in the tens of
    // thousands. Ordered as the Pod spec lists them.
    let mut changed: BTreeMap<ContainerAt, Vec<u32>> = plans
        .into_iter()
        .filter(|plan| !plan.injected.is_empty())
        .map(|plan| (plan.at, plan.injected))
        .collect();
    for &at in stripped.keys() {
        changed.entry(at).or_default();
    }
    changed
        .into_iter()
        .filter_map(|(at, injected)| {
            let container = pod.containers(at.kind).get(at.index)?;
            let strip = stripped.get(&at);
            // Sized once for all entries (a stripped one leaves a few bytes unused): grown
            // entry by entry it was the review's most frequent allocation after the paths.
            let entries = container.env_entries();
            let mut kept =
                String::with_capacity(entries.iter().map(|e| e.raw.get().len() + 1).sum());
            for (i, entry) in entries.iter().enumerate() {
                if strip.is_some_and(|s| s.contains(&i)) {
                    continue;
                }
                if !kept.is_empty() {
                    kept.push(',');
                }
                kept.push_str(entry.raw.get());
            }
            let mut index = itoa::Buffer::new();
            Some(PlannedOp::Env {
                path: pointer(&["spec", at.kind.field(), index.format(at.index), "env"]),
                replace: container.env.is_some(),
                injected,
                kept,
            })
        })
        .collect()
}

/// The JSON Pointer of unescaped `tokens` (`~` written `~0`, `/` written `~1`), built at its
/// final size: jsonptr's `from_tokens` grows its text token by token, three or four
/// allocations per path, which made the patch's paths the most frequent allocation of a
/// small review (BENCHMARKS.md, "aws-lc-rs, fewer allocations, and the kernel's share").
fn pointer(tokens: &[&str]) -> PointerBuf {
    let escapes = |token: &str| token.bytes().filter(|&b| b == b'~' || b == b'/').count();
    let len = tokens.iter().map(|t| 1 + t.len() + escapes(t)).sum();
    let mut text = String::with_capacity(len);
    for token in tokens {
        text.push('/');
        let mut from = 0;
        for (at, special) in token.match_indices(['~', '/']) {
            text.push_str(&token[from..at]);
            text.push_str(if special == "~" { "~0" } else { "~1" });
            from = at + 1;
        }
        text.push_str(&token[from..]);
    }
    // Valid by construction; jsonptr checks it again, and its own builder is the answer
    // should it ever disagree.
    PointerBuf::try_from(text).unwrap_or_else(|_| PointerBuf::from_tokens(tokens.iter().copied()))
}

fn annotation_op(pod: &PodView<'_>, key: &str, value: &str) -> PatchOperation {
    if pod.metadata.is_none() {
        let mut annotations = Map::new();
        annotations.insert(key.into(), Value::String(value.into()));
        let mut metadata = Map::new();
        metadata.insert("annotations".into(), Value::Object(annotations));
        return PatchOperation::Add(AddOperation {
            path: pointer(&["metadata"]),
            value: Value::Object(metadata),
        });
    }
    if pod.has_annotations() {
        PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations", key]),
            value: Value::String(value.into()),
        })
    } else {
        let mut map = Map::new();
        map.insert(key.into(), Value::String(value.into()));
        PatchOperation::Add(AddOperation {
            path: pointer(&["metadata", "annotations"]),
            value: Value::Object(map),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicelinks::{LinkPort, ServiceLink};
    use proptest::prelude::*;

    fn service(name: &str, ports: &[(String, i32, String)]) -> LinkedService {
        let link = ServiceLink {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ip: "10.0.0.1".into(),
            ports: ports
                .iter()
                .map(|(name, port, protocol)| LinkPort {
                    name: name.clone(),
                    port: *port,
                    protocol: protocol.clone(),
                })
                .collect(),
        };
        LinkedService::new(&link, None).expect("valid")
    }

    fn render<'s>(services: &'s [LinkedService], checks: &[bool]) -> (Rendered, Vec<Run<'s>>) {
        let mut rendered = Rendered::new();
        let runs = services
            .iter()
            .enumerate()
            .map(|(i, service)| Run {
                range: rendered.add(service),
                check: checks.get(i).copied().unwrap_or(true),
                service,
            })
            .collect();
        (rendered, runs)
    }

    /// What the decision must compute, written plainly: the first Service in order wins a
    /// name; the reserved candidates are the winners of the checked Services.
    fn reference(
        rendered: &Rendered,
        runs: &[Run<'_>],
        policy: &Policy,
    ) -> (Vec<u32>, Vec<usize>, Vec<String>) {
        let (mut entries, mut names, mut maybe) = (Vec::new(), Vec::<String>::new(), Vec::new());
        for run in runs {
            for i in run.range.clone() {
                let name = rendered.name(i);
                if names.iter().any(|n| n == name) {
                    continue;
                }
                if run.check && policy.rules.may_be_reserved(name) {
                    maybe.push(entries.len());
                }
                entries.push(u32::try_from(i).expect("small"));
                names.push(name.to_string());
            }
        }
        (entries, maybe, names)
    }

    /// `foo` and `foo-service` both give `FOO_SERVICE_PORT`: no shortcut, and the first wins.
    #[test]
    fn a_prefix_that_begins_another_is_deduplicated() {
        let port = [(String::new(), 80, "TCP".to_string())];
        let services = [service("foo", &port), service("foo-service", &port)];
        let (rendered, runs) = render(&services, &[true, true]);
        assert!(Variables::by_prefix(&rendered, &runs).is_none());
        let variables = Variables::of(&rendered, &runs, &Policy::default());
        assert_eq!(variables.len(), rendered.len() - 1);
        let shared = variables.index_of("FOO_SERVICE_PORT").expect("present");
        assert_eq!(variables.name(shared), "FOO_SERVICE_PORT");
        assert!(variables.entries[shared] < u32::try_from(runs[1].range.start).expect("small"));

        let apart = [service("foo", &port), service("foobar", &port)];
        let (rendered, runs) = render(&apart, &[true, true]);
        let variables = Variables::by_prefix(&rendered, &runs).expect("no name can repeat");
        assert_eq!(variables.len(), rendered.len());
        assert_eq!(
            variables
                .index_of("FOOBAR_SERVICE_HOST")
                .map(|i| variables.name(i)),
            Some("FOOBAR_SERVICE_HOST")
        );
        assert_eq!(variables.index_of("FOO_SERVICE_HOS"), None);
        assert_eq!(variables.index_of("FOO"), None);
        assert_eq!(variables.index_of("FOO_"), None);
    }

    proptest! {
        /// The pointer built at its final size is jsonptr's own, escapes included, and its
        /// text was sized exactly (no growth).
        #[test]
        fn pointer_equals_jsonptrs_builder(tokens in proptest::collection::vec("[a-z~/0-9.]{0,6}", 0..6)) {
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let built = pointer(&tokens);
            prop_assert_eq!(&built, &PointerBuf::from_tokens(tokens.iter().copied()));
            let len: usize = tokens.iter().map(|t| 1 + t.len() + t.matches(['~', '/']).count()).sum();
            prop_assert_eq!(built.as_str().len(), len);
        }

        /// Whichever way the names are indexed, the decision sees the same distinct
        /// variables, the same reserved candidates and the same answer for any name a
        /// container may define. Names are drawn from a few letters so that prefixes begin
        /// each other often.
        #[test]
        fn the_prefix_shortcut_agrees_with_the_plain_rule(
            names in proptest::collection::vec("[ab]{1,2}(-(service|port|[ab]{1,2}))?(-[0-9]{1,2}(-tcp)?)?", 1..7),
            ports in proptest::collection::vec(
                (prop_oneof![Just(String::new()), "(tcp|[ab]{1,2})".prop_map(String::from)], 1..90i32, prop_oneof![Just("TCP".to_string()), Just("UDP".to_string())]),
                0..4,
            ),
            checks in proptest::collection::vec(any::<bool>(), 7),
            probes in proptest::collection::vec("[AB]{1,2}(_[A-Z0-9_]{0,14})?", 0..8),
        ) {
            let services: Vec<LinkedService> = names
                .iter()
                .enumerate()
                .map(|(i, name)| service(name, ports.get(..i % (ports.len() + 1)).unwrap_or_default()))
                .collect();
            let (rendered, runs) = render(&services, &checks);
            let policy = Policy::from_yaml(
                "reserved:\n  rules:\n    - name: r\n      scope: all\n      prefixes: [A_]\n      names: [B_SERVICE_HOST]\n",
                "test",
            ).expect("policy");
            let (entries, maybe, distinct) = reference(&rendered, &runs, &policy);
            let variables = Variables::of(&rendered, &runs, &policy);
            prop_assert_eq!(&variables.entries, &entries);
            prop_assert_eq!(&variables.maybe_reserved, &maybe);
            let all_names = (0..rendered.len()).map(|i| rendered.name(i).to_string());
            for name in all_names.chain(probes) {
                let want = distinct.iter().position(|n| *n == name);
                prop_assert_eq!(variables.index_of(&name), want, "{}", name);
            }
            if let Some(fast) = Variables::by_prefix(&rendered, &runs) {
                prop_assert_eq!(fast.entries.len(), rendered.len(), "the shortcut only when no name repeats");
            }
        }
    }
}
