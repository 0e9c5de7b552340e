//! Where the Pod template sits in each workload kind the validating webhook checks.

use serde_json::Value;

/// A kind envlink checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Pod itself.
    Pod,
    /// `spec.template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job).
    Template,
    /// `spec.jobTemplate.spec.template` (CronJob).
    CronJob,
}

/// The kinds envlink checks, by API group and kind.
pub fn target(group: &str, kind: &str) -> Option<Target> {
    match (group, kind) {
        ("", "Pod") => Some(Target::Pod),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(Target::Template)
        }
        ("batch", "Job") => Some(Target::Template),
        ("batch", "CronJob") => Some(Target::CronJob),
        _ => None,
    }
}

/// The template is absent where the kind says it must be.
#[derive(Debug, thiserror::Error)]
#[error("not a valid object: `{0}` is missing or not an object")]
pub struct MissingTemplate(&'static str);

/// The Pod (or Pod template: it has the same `metadata` and `spec`) inside an object.
pub fn pod_template(target: Target, object: &Value) -> Result<&Value, MissingTemplate> {
    let path = match target {
        Target::Pod => return Ok(object),
        Target::Template => "/spec/template",
        Target::CronJob => "/spec/jobTemplate/spec/template",
    };
    object
        .pointer(path)
        .filter(|v| v.is_object())
        .ok_or(MissingTemplate(match target {
            Target::CronJob => "spec.jobTemplate.spec.template",
            _ => "spec.template",
        }))
}
