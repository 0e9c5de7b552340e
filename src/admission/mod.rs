//! The admission decision, as pure code: (request, catalog snapshot, policy) → allow, deny or
//! a JSON Patch, plus warnings. No HTTP, no Kubernetes client, no locks: the caller takes one
//! [`Snapshot`] of the catalog per review and the decision only reads it.
//!
//! `/mutate` runs in named phases ([`mutate`]): judge the reserved variables the user wrote,
//! choose the Services, plan their variables per container, build the patch. `/validate`
//! ([`validate`]) only judges.

mod mutate;
pub mod patch;
pub mod pod;
pub mod selection;
mod validate;
pub mod workload;

use serde_json::value::RawValue;

use crate::catalog::Snapshot;
use crate::config::Policy;
use crate::reserved::ConfigMapKeys;
use crate::servicelinks::DEFAULT_NAMESPACE;
use crate::text;

use patch::PatchPlan;
use pod::{PodView, PodViewError};

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

/// The admission operation: kube-core's, as decoded from the review.
pub use kube::core::admission::Operation;

/// What the HTTP layer (or `envlink mutate`) knows about a review.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// API group of the object's kind (`""` for core).
    pub group: &'a str,
    /// The object's kind.
    pub kind: &'a str,
    /// The subresource, if any (`ephemeralcontainers`).
    pub sub_resource: Option<&'a str>,
    /// The request's namespace (empty for offline use: see [`review_namespace`]).
    pub namespace: &'a str,
    /// The object: its JSON text (decoded by the decision for just the fields it reads), or a
    /// Pod the caller already decoded.
    pub object: Option<Object<'a>>,
    /// The object before an UPDATE.
    pub old_object: Option<&'a RawValue>,
}

/// The object of a review, as the decision gets it.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// JSON text, decoded by the decision for just the fields it reads.
    Text(&'a RawValue),
    /// A Pod (group `""`, kind `Pod`) already decoded into the view the decision reads: the
    /// HTTP layer decodes it together with the review, in one pass over the body, instead of
    /// keeping its text and scanning it a second time.
    Pod(&'a PodView<'a>),
    /// A Pod (group `""`, kind `Pod`) the caller already found unreadable, and why: the review
    /// is refused as invalid with this message.
    Unreadable(&'a PodViewError),
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
///
/// `catalog` is this review's snapshot ([`crate::catalog::Catalog::snapshot`]). Every step is
/// linear (or n log n) in the size of the object and the Services chosen, and what the answer
/// repeats of the object is capped (see [`crate::text`]).
pub fn mutate(
    request: &Request<'_>,
    catalog: &Snapshot,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Decision {
    bounded(mutate::mutate_pod(request, catalog, policy, config_maps))
}

/// The validating webhook: the final reserved-variable check on Pods (after every mutation),
/// on debug containers added to a Pod, and on the Pod templates of workloads, so `kubectl
/// apply` of a bad Deployment fails at once.
pub fn validate(
    request: &Request<'_>,
    policy: &Policy,
    config_maps: &dyn ConfigMapKeys,
) -> Decision {
    bounded(validate::validate_object(request, policy, config_maps))
}

/// The namespace a review's rules and Services are judged in: the request's; for offline use
/// (no request namespace), the object's own; else `default`. The one fallback rule for both
/// webhooks.
pub fn review_namespace<'a>(
    request_namespace: &'a str,
    object_namespace: Option<&'a str>,
) -> &'a str {
    if !request_namespace.is_empty() {
        return request_namespace;
    }
    object_namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Caps what a decision repeats back: the warnings' count and length, the message's length.
fn bounded(mut decision: Decision) -> Decision {
    decision.warnings = text::cap_warnings(std::mem::take(&mut decision.warnings));
    match &mut decision.verdict {
        Verdict::Deny(message) | Verdict::Invalid(message)
            if message.len() > text::MESSAGE_LIMIT =>
        {
            *message = text::clip(message, text::MESSAGE_LIMIT).into_owned();
        }
        _ => {}
    }
    decision
}

/// Admitted unchanged, with a warning that the webhook's rules sent a kind it does not handle.
fn unsupported_kind(request: &Request<'_>, what: &str) -> Decision {
    let group = if request.group.is_empty() {
        "core"
    } else {
        request.group
    };
    Decision {
        warnings: vec![format!(
            "envlink: {what}; got {}/{}: admitted unchanged (check the webhook's rules)",
            text::clip(group, text::ECHO_LIMIT),
            text::clip(request.kind, text::ECHO_LIMIT),
        )],
        ..Decision::allow()
    }
}

/// The refusal's text from its reasons.
fn denial_text(denials: &text::Messages) -> String {
    format!("envlink: {}", denials.join("; "))
}

#[cfg(test)]
mod tests;
