//! `/validate`: the reserved-variable rules on Pods, debug containers and Pod templates.
//! Phases: which containers a review checks → the findings (new, and on UPDATE the old ones)
//! → each finding judged into a refusal or a warning, worded for where it is shown.

use hashbrown::HashSet;

use super::{
    Decision, Object, Operation, Request, denial_text, review_namespace, unsupported_kind, workload,
};
use crate::config::Policy;
use crate::podshape::ContainerKind;
use crate::reserved::{Action, ConfigMapKeys, Finding, MessageContext};
use crate::text;

use workload::Target;

/// `/validate`'s decision for one review.
pub(super) fn validate_object(
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
    let Some(kinds) = checked_kinds(target, &request.operation, request.sub_resource) else {
        return Decision::allow();
    };
    let Some(object) = request.object else {
        return Decision::invalid("the review has no object to check".into());
    };
    let findings = match findings_of(target, request, object, kinds, policy, config_maps) {
        Ok(f) => f,
        Err(message) => return Decision::invalid(message),
    };
    // On UPDATE, refuse only what the update adds: an object that predates envlink (or a rule)
    // must stay updatable (finalizers, labels, scale-down), so old findings become warnings.
    let old_findings = match (&request.operation, request.old_object) {
        (Operation::Update, Some(old)) => findings_of(
            target,
            request,
            Object::Text(old),
            kinds,
            policy,
            config_maps,
        )
        .unwrap_or_default(),
        _ => Vec::new(),
    };
    let is_pod = matches!(target, Target::Pod | Target::EphemeralContainers);
    let judge = Judge {
        context: if is_pod {
            MessageContext::FinalCheck
        } else {
            MessageContext::Template
        },
        prefix: if is_pod {
            String::new()
        } else {
            format!("{} template: ", request.kind)
        },
        is_pod,
    };
    judge.decide(&findings, &old_findings)
}

/// The container lists a review checks; `None`: the review changes no env (allowed as is).
fn checked_kinds(
    target: Target,
    operation: &Operation,
    sub_resource: Option<&str>,
) -> Option<&'static [ContainerKind]> {
    match (target, operation, sub_resource) {
        (Target::Pod, Operation::Create, None) => Some(&[
            ContainerKind::Init,
            ContainerKind::Regular,
            ContainerKind::Ephemeral,
        ]),
        // Adding a debug container is the one way env changes on an existing Pod. The
        // review's kind is `Pod` since 1.22, `EphemeralContainers` on 1.20 and 1.21.
        (
            Target::Pod | Target::EphemeralContainers,
            Operation::Update,
            Some("ephemeralcontainers"),
        ) => Some(&[ContainerKind::Ephemeral]),
        (Target::Template | Target::CronJob, Operation::Create | Operation::Update, None) => {
            Some(&[ContainerKind::Init, ContainerKind::Regular])
        }
        _ => None,
    }
}

/// The reserved-variable findings of one object (the new one, or the old one on UPDATE).
fn findings_of(
    target: Target,
    request: &Request<'_>,
    object: Object<'_>,
    kinds: &[ContainerKind],
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Result<Vec<Finding>, String> {
    let decoded;
    let (pod, object_namespace) = match object {
        Object::Pod(view) if target == Target::Pod => (view, view.namespace()),
        Object::Unreadable(error) if target == Target::Pod => return Err(error.to_string()),
        Object::Pod(_) | Object::Unreadable(_) => {
            // Only a review of kind `Pod` carries a decoded Pod (see `Object::Pod`).
            return Err(format!(
                "not a valid {}: the object was given as a Pod",
                text::clip(request.kind, text::ECHO_LIMIT)
            ));
        }
        Object::Text(text) => {
            decoded = workload::pod_of(target, request.kind, text).map_err(|e| e.to_string())?;
            (&decoded.0, decoded.1.as_deref())
        }
    };
    let namespace = review_namespace(request.namespace, object_namespace);
    Ok(policy
        .rules
        .evaluate(namespace, &pod.container_envs(kinds), config_maps))
}

/// How findings become a decision for one object.
struct Judge {
    /// How a `strip` is worded here.
    context: MessageContext,
    /// `Deployment template: ` for a workload, empty for a Pod.
    prefix: String,
    /// A Pod still carrying a `strip` entry is refused; a template only warned about (the
    /// mutating webhook strips it from each Pod).
    is_pod: bool,
}

impl Judge {
    fn decide(&self, findings: &[Finding], old_findings: &[Finding]) -> Decision {
        // A set, not a scan of the old findings per new one: both may number in the tens of
        // thousands.
        let old: HashSet<(ContainerKind, &str, &str)> = old_findings
            .iter()
            .map(|f| (f.kind, f.container.as_str(), f.variable.as_str()))
            .collect();
        let already =
            |f: &Finding| old.contains(&(f.kind, f.container.as_str(), f.variable.as_str()));
        let mut warnings = text::Warnings::default();
        let mut denials = text::Messages::default();
        // Messages are formatted only while they will be shown (see `text::Warnings`).
        for finding in findings {
            match finding.action {
                // Worded as admission words it (the wording predates the contexts).
                _ if !old.is_empty() && already(finding) => warnings.push_with(|| {
                    format!(
                        "{} (already present before this update)",
                        self.text(finding, MessageContext::Mutation)
                    )
                }),
                Action::Deny => denials.push_with(|| self.text(finding, self.context)),
                // The mutating webhook strips it from Pods; a Pod still carrying it here was
                // changed after envlink ran, or envlink's mutating webhook did not run.
                Action::Strip if self.is_pod => {
                    denials.push_with(|| self.text(finding, self.context));
                }
                Action::Strip | Action::Warn => {
                    warnings.push_with(|| self.text(finding, self.context));
                }
            }
        }
        if denials.is_empty() {
            Decision {
                warnings: warnings.finish(),
                ..Decision::allow()
            }
        } else {
            Decision::deny(denial_text(&denials), warnings.finish())
        }
    }

    fn text(&self, finding: &Finding, context: MessageContext) -> String {
        format!("{}{}", self.prefix, finding.message(context))
    }
}
