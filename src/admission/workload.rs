//! Where the containers sit in each kind the validating webhook checks.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::pod::{self, EphemeralContainersView, PodView, PodViewError, TemplateOwnerView};

/// A kind envlink checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Pod itself.
    Pod,
    /// `spec.template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job).
    Template,
    /// `spec.jobTemplate.spec.template` (CronJob).
    CronJob,
    /// The `pods/ephemeralcontainers` object of Kubernetes 1.20 and 1.21 (kind
    /// `EphemeralContainers`: the debug containers at the top level).
    EphemeralContainers,
}

/// The kinds envlink checks, by API group and kind.
pub fn target(group: &str, kind: &str) -> Option<Target> {
    match (group, kind) {
        ("", "Pod") => Some(Target::Pod),
        ("", "EphemeralContainers") => Some(Target::EphemeralContainers),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(Target::Template)
        }
        ("batch", "Job") => Some(Target::Template),
        ("batch", "CronJob") => Some(Target::CronJob),
        _ => None,
    }
}

/// The Pod (or Pod template: it has the same `metadata` and `spec`) inside an object, and
/// the object's own `metadata.namespace`.
pub fn pod_of<'a>(
    target: Target,
    kind: &str,
    object: &'a RawValue,
) -> Result<(PodView<'a>, Option<Cow<'a, str>>), PodViewError> {
    let missing = |path: &str| PodViewError {
        what: kind.to_string(),
        path: path.into(),
        message: "missing".into(),
    };
    match target {
        Target::Pod => {
            let view: PodView<'a> = pod::decode(object, kind)?;
            let namespace = view.metadata.as_ref().and_then(|m| m.namespace.clone());
            Ok((view, namespace))
        }
        Target::EphemeralContainers => {
            let view: EphemeralContainersView<'a> = pod::decode(object, kind)?;
            let namespace = view.metadata.as_ref().and_then(|m| m.namespace.clone());
            Ok((view.into(), namespace))
        }
        Target::Template | Target::CronJob => {
            let owner: TemplateOwnerView<'a> = pod::decode(object, kind)?;
            let namespace = owner.metadata.and_then(|m| m.namespace);
            let spec = owner.spec.ok_or_else(|| missing("spec"))?;
            let template = if target == Target::CronJob {
                spec.job_template
                    .and_then(|job| job.spec)
                    .and_then(|job_spec| job_spec.template)
                    .ok_or_else(|| missing("spec.jobTemplate.spec.template"))?
            } else {
                spec.template.ok_or_else(|| missing("spec.template"))?
            };
            Ok((template, namespace))
        }
    }
}
