//! The admission decision, as pure code: (request, catalog view, policy) → allow, deny or a
//! JSON Patch, plus warnings. No HTTP, no Kubernetes client, no locks held here.

pub mod patch;
pub mod pod;
pub mod selection;
pub mod workload;

use hashbrown::hash_map::Entry;
use hashbrown::{HashMap, HashSet};
use json_patch::jsonptr::PointerBuf;
use std::sync::Arc;

use json_patch::{AddOperation, PatchOperation};
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::config::{Action, InjectionMode, OnMissing, Policy};
use crate::reserved::{ConfigMapKeys, ContainerKind, Finding, Origin};

use patch::{InjectedVars, PatchPlan, PlannedOp};
use pod::PodView;
use selection::{Selection, Source};

/// Names a subset of Services to inject (`redis-master, prod/db`).
pub const ANNOTATION_SERVICES: &str = "envlink.io/services";
/// `"false"` opts a Pod out of injection (never out of the reserved-variable rules).
pub const ANNOTATION_INJECT: &str = "envlink.io/inject";
/// Written by envlink: the Services whose variables it injected.
pub const ANNOTATION_INJECTED: &str = "envlink.io/injected";

/// Most env entries envlink adds to one Pod, summed over its containers. At roughly 60 bytes
/// an entry, 20,000 is 1.2 MB: beyond it the Pod would not fit etcd's 1.5 MiB object limit
/// anyway, and the patch alone would be many megabytes on the API server's write path.
pub const MAX_INJECTED_ENTRIES: usize = 20_000;

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE.
    Create,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
}

/// What the HTTP layer (or `envlink mutate`) knows about a review.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group of the object's kind (`""` for core).
    pub group: &'a str,
    /// The object's kind.
    pub kind: &'a str,
    /// The subresource, if any (`ephemeralcontainers`).
    pub sub_resource: Option<&'a str>,
    /// The request's namespace.
    pub namespace: &'a str,
    /// Server-side dry run: envlink has no side effects, so this changes nothing.
    pub dry_run: bool,
    /// The object.
    pub object: Option<&'a Value>,
    /// The object before an UPDATE.
    pub old_object: Option<&'a Value>,
}

/// Allowed, refused, or not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admit (with the patch, if any).
    Allow,
    /// Refuse, with a message for the user.
    Deny(String),
    /// The review is malformed (wrong shape of object): refuse with this message.
    Invalid(String),
}

/// The answer to one review.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allow, deny or invalid.
    pub verdict: Verdict,
    /// The RFC 6902 patch (empty: no change); `to_patch()` or `to_json()` to use it.
    pub patch: PatchPlan,
    /// Warnings for the user (the API server shows them to `kubectl`).
    pub warnings: Vec<String>,
    /// What was injected, as written to `envlink.io/injected`.
    pub injected: Option<String>,
    /// Distinct variables injected (0 when none).
    pub variables: usize,
}

impl Decision {
    fn allow() -> Self {
        Self {
            verdict: Verdict::Allow,
            patch: PatchPlan::default(),
            warnings: Vec::new(),
            injected: None,
            variables: 0,
        }
    }

    fn deny(message: String, warnings: Vec<String>) -> Self {
        Self {
            verdict: Verdict::Deny(message),
            warnings,
            ..Self::allow()
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            verdict: Verdict::Invalid(message),
            ..Self::allow()
        }
    }

    /// A short label for metrics and logs: `allowed`, `patched`, `denied` or `invalid`.
    pub fn label(&self) -> &'static str {
        match &self.verdict {
            Verdict::Allow if self.patch.is_empty() => "allowed",
            Verdict::Allow => "patched",
            Verdict::Deny(_) => "denied",
            Verdict::Invalid(_) => "invalid",
        }
    }
}

/// The mutating webhook: inject service variables into a Pod being created, and apply the
/// reserved-variable rules (deny, strip, warn).
pub fn mutate(
    request: &Request<'_>,
    catalog: &Catalog,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Decision {
    if !request.group.is_empty() || request.kind != "Pod" {
        return unsupported_kind(request, "/mutate handles only Pods");
    }
    if request.operation != Operation::Create || request.sub_resource.is_some() {
        // Env is immutable after creation; ephemeral containers are checked by /validate.
        return Decision::allow();
    }
    let Some(object) = request.object else {
        return Decision::invalid("the review has no object to admit".into());
    };
    let pod = match PodView::from_value(object) {
        Ok(pod) => pod,
        Err(e) => return Decision::invalid(e.to_string()),
    };
    if pod.spec.is_none() {
        return Decision::invalid("not a valid Pod: `spec` is missing".into());
    }
    let namespace = effective_namespace(request.namespace, &pod);

    // 1. Reserved variables, on what the user wrote.
    let findings = policy.rules.evaluate(
        namespace,
        &pod.container_envs(&[ContainerKind::Init, ContainerKind::Regular]),
        config_maps,
    );
    let mut warnings = Vec::new();
    let mut denials = Vec::new();
    let mut stripped: HashSet<(ContainerKind, usize, usize)> = HashSet::new();
    for finding in &findings {
        match finding.action {
            Action::Deny => denials.push(finding.message()),
            Action::Strip => {
                if let Origin::Env(env_index) = finding.origin {
                    stripped.insert((finding.kind, finding.index, env_index));
                }
                warnings.push(finding.message());
            }
            Action::Warn => warnings.push(finding.message()),
        }
    }
    if !denials.is_empty() {
        return Decision::deny(denial_text(&denials), warnings);
    }

    // 2. Which Services.
    let selection = match choose_services(&pod, namespace, catalog, policy) {
        Ok(selection) => selection,
        Err(message) => return Decision::deny(message, warnings),
    };
    if let Some(selection) = &selection {
        if !selection.missing.is_empty() {
            let text = missing_text(namespace, &selection.missing);
            match (selection.source, policy.config.services.on_missing) {
                (Source::Annotation, OnMissing::Deny) => {
                    return Decision::deny(text, warnings);
                }
                (Source::Annotation, OnMissing::Warn) => warnings.push(text),
                // A recorded Service that has gone since is simply no longer injected.
                _ => {}
            }
        }
        for service in &selection.without_ip {
            warnings.push(format!(
                "envlink: Service {service} has no cluster IP (headless or ExternalName) and \
                 gives no variables"
            ));
        }
    }

    // 3. The variables, deduplicated across Services (the first Service in order wins),
    //    each with its index and whether any rule could reserve it (asked once per Pod, and
    //    skipped for the Services whose variables no rule can reserve: nearly all).
    let mut vars = InjectedVars::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let mut maybe_reserved: Vec<bool> = Vec::new();
    if let Some(selection) = &selection {
        let total = selection
            .chosen
            .iter()
            .map(|c| c.service.variable_count())
            .sum();
        index_of.reserve(total);
        maybe_reserved.reserve(total);
        let rules = &policy.rules;
        for chosen in &selection.chosen {
            let service = &chosen.service;
            let check = service.may_have_reserved(rules.id(), |name| rules.may_be_reserved(name));
            let handle = vars.add_service(Arc::clone(service));
            for (at, name, value) in service.variables_at() {
                if let Entry::Vacant(slot) = index_of.entry(name) {
                    let index = vars.len();
                    vars.push(handle, at, name, value);
                    if vars.len() > index {
                        slot.insert(index);
                        maybe_reserved.push(check && rules.may_be_reserved(name));
                    }
                }
            }
        }
    }
    let max = policy.config.services.max_variables;
    let over_limit = vars.len() > max;
    if over_limit {
        warnings.push(format!(
            "envlink: this Pod would get {} service variables, more than the limit of {max} \
             (services.maxVariables); none were injected. Name the Services it needs in the \
             {ANNOTATION_SERVICES} annotation",
            vars.len()
        ));
        vars.clear();
        index_of.clear();
        maybe_reserved.clear();
    }
    let mut injecting = selection.is_some() && !over_limit;

    // 4. Per container, what goes in: not what it defines itself, not what is reserved there.
    //    A container defines a few names, so those are looked up among the variables rather
    //    than every variable among them.
    let mut plans: Vec<(ContainerKind, usize, Vec<u32>)> = Vec::new();
    let mut defined = vec![false; vars.len()];
    for kind in [ContainerKind::Init, ContainerKind::Regular] {
        for (index, container) in pod.containers(kind).iter().enumerate() {
            defined.fill(false);
            for name in container.env_names() {
                if let Some(&i) = index_of.get(name) {
                    defined[i] = true;
                }
            }
            let resources = container.resource_names();
            let injected: Vec<u32> = (0..vars.len())
                .filter(|&i| !defined[i])
                .filter(|&i| {
                    !maybe_reserved[i]
                        || vars
                            .get(i)
                            .is_none_or(|(name, _)| !policy.rules.is_reserved(&resources, name))
                })
                .filter_map(|i| u32::try_from(i).ok())
                .collect();
            plans.push((kind, index, injected));
        }
    }
    let entries: usize = plans.iter().map(|(_, _, injected)| injected.len()).sum();
    if entries > MAX_INJECTED_ENTRIES {
        warnings.push(format!(
            "envlink: injecting would add {entries} env entries across {} containers, more \
             than {MAX_INJECTED_ENTRIES} (a Pod that size cannot be stored); none were \
             injected. Name the Services it needs in the {ANNOTATION_SERVICES} annotation",
            plans.len()
        ));
        plans
            .iter_mut()
            .for_each(|(_, _, injected)| injected.clear());
        injecting = false;
    }

    // 5. The patch.
    let mut ops = Vec::new();
    for (kind, index, injected) in plans {
        let raw_env = object
            .pointer(&format!("/spec/{}/{index}/env", kind.field()))
            .and_then(Value::as_array);
        let stripping = stripped.iter().any(|s| s.0 == kind && s.1 == index);
        if injected.is_empty() && !stripping {
            continue;
        }
        let kept = raw_env
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(i, _)| !stripped.contains(&(kind, index, *i)))
            .map(|(_, e)| e.clone())
            .collect();
        ops.push(PlannedOp::Env {
            path: pointer(&["spec", kind.field(), &index.to_string(), "env"]),
            replace: raw_env.is_some(),
            injected,
            kept,
        });
    }
    let mut injected_annotation = None;
    if injecting && let Some(selection) = &selection {
        if policy.config.services.disable_service_links && pod.enable_service_links() != Some(false)
        {
            ops.push(PlannedOp::Op(PatchOperation::Add(AddOperation {
                path: pointer(&["spec", "enableServiceLinks"]),
                value: Value::Bool(false),
            })));
        }
        let record = selection
            .chosen
            .iter()
            .map(|c| c.reference.as_str())
            .collect::<Vec<_>>()
            .join(",");
        // A re-run keeps the record as it is: rewriting it is the only change it could make.
        if selection.source != Source::Recorded {
            ops.push(PlannedOp::Op(annotation_op(
                &pod,
                ANNOTATION_INJECTED,
                &record,
            )));
        }
        injected_annotation = Some(record);
    }
    let variables = vars.len();
    Decision {
        verdict: Verdict::Allow,
        patch: PatchPlan { vars, ops },
        warnings,
        injected: injected_annotation,
        variables,
    }
}

/// The validating webhook: the final reserved-variable check on Pods (after every mutation)
/// and on the Pod templates of workloads, so `kubectl apply` of a bad Deployment fails at once.
pub fn validate(
    request: &Request<'_>,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Decision {
    let Some(target) = workload::target(request.group, request.kind) else {
        return unsupported_kind(
            request,
            "/validate handles Pods and workloads with Pod templates",
        );
    };
    let is_pod = target == workload::Target::Pod;
    let kinds: &[ContainerKind] = match (is_pod, request.operation, request.sub_resource) {
        (true, Operation::Create, None) => &[
            ContainerKind::Init,
            ContainerKind::Regular,
            ContainerKind::Ephemeral,
        ],
        // Adding a debug container is the one way env changes on an existing Pod.
        (true, Operation::Update, Some("ephemeralcontainers")) => &[ContainerKind::Ephemeral],
        (false, Operation::Create | Operation::Update, None) => {
            &[ContainerKind::Init, ContainerKind::Regular]
        }
        _ => return Decision::allow(),
    };
    let Some(object) = request.object else {
        return Decision::invalid("the review has no object to check".into());
    };
    let findings = match findings_of(
        target,
        object,
        request.namespace,
        kinds,
        policy,
        config_maps,
    ) {
        Ok(f) => f,
        Err(message) => return Decision::invalid(message),
    };
    // On UPDATE, refuse only what the update adds: an object that predates envlink (or a rule)
    // must stay updatable (finalizers, labels, scale-down), so old findings become warnings.
    let old: Vec<Finding> = match (request.operation, request.old_object) {
        (Operation::Update, Some(old)) => {
            findings_of(target, old, request.namespace, kinds, policy, config_maps)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let already = |f: &Finding| {
        old.iter()
            .any(|o| o.kind == f.kind && o.container == f.container && o.variable == f.variable)
    };
    let prefix = if is_pod {
        String::new()
    } else {
        format!("{} template: ", request.kind)
    };
    let mut warnings = Vec::new();
    let mut denials = Vec::new();
    for finding in &findings {
        let text = format!("{prefix}{}", finding.message());
        match finding.action {
            _ if already(finding) => {
                warnings.push(format!("{text} (already present before this update)"))
            }
            Action::Deny => denials.push(text),
            // The mutating webhook strips it from Pods; a Pod still carrying it here was
            // changed after envlink ran, or envlink's mutating webhook did not run.
            Action::Strip if is_pod => denials.push(text.replace(
                "is reserved and was removed",
                "is reserved (action strip) and still present at the final check",
            )),
            Action::Strip => warnings.push(text.replace(
                "is reserved and was removed",
                "is reserved and will be removed from each Pod",
            )),
            Action::Warn => warnings.push(text),
        }
    }
    if denials.is_empty() {
        Decision {
            warnings,
            ..Decision::allow()
        }
    } else {
        Decision::deny(denial_text(&denials), warnings)
    }
}

fn findings_of(
    target: workload::Target,
    object: &Value,
    request_namespace: &str,
    kinds: &[ContainerKind],
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Result<Vec<Finding>, String> {
    let template = workload::pod_template(target, object).map_err(|e| e.to_string())?;
    let pod = PodView::from_value(template).map_err(|e| e.to_string())?;
    let object_ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = if request_namespace.is_empty() {
        object_ns
    } else {
        request_namespace
    };
    Ok(policy
        .rules
        .evaluate(namespace, &pod.container_envs(kinds), config_maps))
}

fn unsupported_kind(request: &Request<'_>, what: &str) -> Decision {
    let group = if request.group.is_empty() {
        "core"
    } else {
        request.group
    };
    Decision {
        warnings: vec![format!(
            "envlink: {what}; got {group}/{}: admitted unchanged (check the webhook's rules)",
            request.kind
        )],
        ..Decision::allow()
    }
}

/// The request's namespace; for offline use, the object's; else `default`.
fn effective_namespace<'a>(request_namespace: &'a str, pod: &PodView<'a>) -> &'a str {
    if !request_namespace.is_empty() {
        return request_namespace;
    }
    pod.metadata
        .as_ref()
        .and_then(|m| m.namespace)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// `None`: no injection for this Pod. `Err`: the Pod is refused with the message.
fn choose_services(
    pod: &PodView<'_>,
    namespace: &str,
    catalog: &Catalog,
    policy: &Policy,
) -> Result<Option<Selection>, String> {
    let config = &policy.config.services;
    if config.mode == InjectionMode::Off {
        return Ok(None);
    }
    match pod.annotation(ANNOTATION_INJECT).map(str::trim) {
        None => {}
        Some(v) if v.eq_ignore_ascii_case("true") => {}
        Some(v) if v.eq_ignore_ascii_case("false") => return Ok(None),
        Some(v) => {
            return Err(format!(
                "envlink: annotation {ANNOTATION_INJECT} must be \"true\" or \"false\", not {v:?}"
            ));
        }
    }
    let listed = |annotation: &'static str, value: &str, source: Source| {
        selection::listed_selection(catalog, namespace, annotation, value, config, source)
            .map(Some)
            .map_err(|e| format!("envlink: {e}"))
    };
    if let Some(recorded) = pod.annotation(ANNOTATION_INJECTED) {
        return listed(ANNOTATION_INJECTED, recorded, Source::Recorded);
    }
    if let Some(names) = pod.annotation(ANNOTATION_SERVICES) {
        return listed(ANNOTATION_SERVICES, names, Source::Annotation);
    }
    if config.mode == InjectionMode::Annotated {
        return Ok(None);
    }
    let links_enabled = pod.enable_service_links().unwrap_or(true);
    Ok(Some(selection::kubelet_selection(
        catalog,
        namespace,
        links_enabled,
    )))
}

fn missing_text(namespace: &str, missing: &[String]) -> String {
    let names = missing
        .iter()
        .map(|m| {
            // Same-namespace Services are named plainly, as the user wrote them.
            m.strip_prefix(&format!("{namespace}/"))
                .map_or_else(|| m.clone(), |n| n.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ");
    let noun = if missing.len() == 1 {
        "Service"
    } else {
        "Services"
    };
    format!(
        "envlink: {noun} {names} named in {ANNOTATION_SERVICES} not found in namespace \
         {namespace:?}; the Pod can be created once {} exist{}",
        if missing.len() == 1 { "it" } else { "they" },
        if missing.len() == 1 { "s" } else { "" },
    )
}

fn denial_text(denials: &[String]) -> String {
    format!("envlink: {}", denials.join("; "))
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
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
mod tests;
