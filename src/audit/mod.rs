//! `envlink audit`: what admission could not see, judged on the objects that exist.
//!
//! Admission judges each Pod once, when it is created. The audit looks at what exists now:
//!
//! - [`Check::Reserved`]: Pods and the Pod templates of the six workload kinds that break a
//!   reserved rule (created before envlink, while it was down under `failurePolicy: Ignore`,
//!   or before a rule existed) — the same rules admission applies ([`reserved`]);
//! - [`Check::StaleServiceVariable`]: a service variable in a Pod's spec whose value is not
//!   what the current Services give ([`services`]);
//! - [`Check::MissingServiceVariable`]: a Pod that lacks a Service's variables because the
//!   Service is newer than the Pod ([`services`]).
//!
//! Everything here is pure: records go in ([`objects`], decoded by [`collect`] from the API
//! server's list pages), findings come out, and [`report`] renders them. Nothing of a Pod is
//! kept after it is judged, so memory follows the findings, not the cluster.

pub mod collect;
pub mod objects;
pub mod periodic;
pub mod report;
pub mod reserved;
pub mod services;

use std::collections::BTreeMap;

use crate::config::Policy;
use objects::{PodRecord, WorkloadRecord};
use services::ServiceState;

/// The three checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// A reserved device-plugin variable set by a container.
    Reserved,
    /// A service variable whose value differs from what the current Services give.
    StaleServiceVariable,
    /// A Service's variables that a Pod lacks because the Service is newer than the Pod.
    MissingServiceVariable,
}

impl Check {
    /// The name used in every output format.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Reserved => "reserved",
            Check::StaleServiceVariable => "stale-service-variable",
            Check::MissingServiceVariable => "missing-service-variable",
        }
    }

    /// Every check, in report order.
    pub const ALL: [Check; 3] = [
        Check::Reserved,
        Check::StaleServiceVariable,
        Check::MissingServiceVariable,
    ];
}

/// How serious a finding is: what a PolicyReport calls the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Breaks a rule (`deny` or `strip`), or the Pod's environment is wrong.
    Fail,
    /// A reserved rule with action `warn`.
    Warn,
}

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The object's namespace.
    pub namespace: String,
    /// The object's kind (`Pod`, `Deployment`, ...).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The container (empty when the finding is about the whole object).
    pub container: String,
    /// Which check.
    pub check: Check,
    /// The variable concerned.
    pub variable: String,
    /// What is wrong, for people: the Pod's value and today's where they apply.
    pub message: String,
    /// `fail` or `warn`.
    pub severity: Severity,
    /// The rule for a PolicyReport: the reserved rule's name, else the check's.
    pub rule: String,
    /// The object's API version (`v1`, `apps/v1`, ...).
    pub api_version: String,
    /// The object's uid.
    pub uid: String,
}

/// How many objects of each namespace were audited (for per-namespace reports that also
/// cover clean namespaces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audited {
    /// Pods.
    pub pods: usize,
    /// Workloads.
    pub workloads: usize,
}

/// The outcome of an audit.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every finding, sorted by namespace, kind, name, container, check, variable.
    pub findings: Vec<Finding>,
    /// Objects audited per namespace.
    pub audited: BTreeMap<String, Audited>,
}

impl Outcome {
    /// Findings per check.
    pub fn counts(&self) -> BTreeMap<Check, usize> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry(f.check).or_insert(0) += 1;
        }
        counts
    }
}

/// An audit in progress: objects are fed one at a time and judged at once.
#[derive(Debug)]
pub struct Audit<'p> {
    policy: &'p Policy,
    services: ServiceState,
    outcome: Outcome,
}

impl<'p> Audit<'p> {
    /// An audit under `policy` against the Services in `services`.
    pub fn new(policy: &'p Policy, services: ServiceState) -> Self {
        Self {
            policy,
            services,
            outcome: Outcome::default(),
        }
    }

    /// Judges one Pod: reserved variables, then its service variables.
    pub fn pod(&mut self, pod: &PodRecord) {
        self.outcome
            .audited
            .entry(pod.metadata.namespace.clone())
            .or_default()
            .pods += 1;
        reserved::pod(self.policy, pod, &mut self.outcome.findings);
        self.services.check_pod(pod, &mut self.outcome.findings);
    }

    /// Judges one workload's Pod template (kind and API version as listed). A ReplicaSet
    /// owned by a Deployment and a Job owned by a CronJob are skipped: their owner's
    /// template is what a change would fix, and their Pods are audited themselves.
    pub fn workload(&mut self, kind: &str, api_version: &str, workload: &WorkloadRecord) {
        let owned = matches!(
            (kind, workload.metadata.controller_kind()),
            ("ReplicaSet", Some("Deployment")) | ("Job", Some("CronJob"))
        );
        if owned {
            return;
        }
        self.outcome
            .audited
            .entry(workload.metadata.namespace.clone())
            .or_default()
            .workloads += 1;
        reserved::workload(
            self.policy,
            kind,
            api_version,
            workload,
            &mut self.outcome.findings,
        );
    }

    /// The findings, sorted.
    pub fn finish(mut self) -> Outcome {
        self.outcome.findings.sort();
        self.outcome.findings.dedup();
        self.outcome
    }
}

#[cfg(test)]
mod tests;
