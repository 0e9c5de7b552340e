//! The `reserved` check: the rules admission applies ([`crate::reserved::CompiledRules::evaluate`],
//! with the namespace exemptions), on Pods as they exist and on workloads' Pod templates.
//!
//! The keys of ConfigMaps brought in by `envFrom` are not read by the audit (it would need
//! every ConfigMap of the cluster): such a source is judged by its prefix alone and, where
//! the prefix could begin a reserved name, by `reserved.unverifiableEnvFrom` — as admission
//! judges it without `reserved.checkConfigMaps`.

use crate::config::Policy;
use crate::podshape::ContainerKind;
use crate::reserved::{Action, MessageContext, NoConfigMaps};

use super::objects::{MetaRecord, PodRecord, PodSpecRecord, WorkloadRecord};
use super::{Check, Finding, Severity};

/// Reserved variables in a Pod's containers, init containers and ephemeral containers.
pub fn pod(policy: &Policy, pod: &PodRecord, out: &mut Vec<Finding>) {
    judge(
        policy,
        &pod.metadata,
        "Pod",
        "v1",
        &pod.spec,
        &[
            ContainerKind::Init,
            ContainerKind::Regular,
            ContainerKind::Ephemeral,
        ],
        "",
        out,
    );
}

/// Reserved variables in a workload's Pod template (its containers and init containers).
pub fn workload(
    policy: &Policy,
    kind: &str,
    api_version: &str,
    workload: &WorkloadRecord,
    out: &mut Vec<Finding>,
) {
    let Some(template) = workload.template() else {
        return;
    };
    judge(
        policy,
        &workload.metadata,
        kind,
        api_version,
        &template.spec,
        &[ContainerKind::Init, ContainerKind::Regular],
        "Pod template: ",
        out,
    );
}

#[allow(clippy::too_many_arguments)]
fn judge(
    policy: &Policy,
    meta: &MetaRecord,
    kind: &str,
    api_version: &str,
    spec: &PodSpecRecord,
    kinds: &[ContainerKind],
    prefix: &str,
    out: &mut Vec<Finding>,
) {
    let envs = spec.container_envs(kinds);
    for finding in policy.rules.evaluate(&meta.namespace, &envs, &NoConfigMaps) {
        // Admission's own wording, with the action said: on an existing object nothing was
        // removed, whatever the action.
        let message = format!(
            "{prefix}{} (action {})",
            finding.message(MessageContext::Audit),
            finding.action.as_str(),
        );
        out.push(Finding {
            namespace: meta.namespace.clone(),
            kind: kind.to_string(),
            name: meta.name.clone(),
            container: finding.container,
            check: Check::Reserved,
            variable: finding.variable,
            message,
            severity: match finding.action {
                Action::Deny | Action::Strip => Severity::Fail,
                Action::Warn => Severity::Warn,
            },
            rule: finding.rule,
            api_version: api_version.to_string(),
            uid: meta.uid.clone(),
        });
    }
}
