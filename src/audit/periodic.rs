//! The periodic audit of `envlink serve --audit-interval`: the same audit as `envlink audit`,
//! repeated, its counts exported as `envlink_audit_findings{check,namespace}` and, with
//! `--audit-policy-reports`, its PolicyReports written to the cluster.
//!
//! Replicas: every replica audits and every replica writes; no leader is elected. The audit
//! only reads, and a write is a server-side apply of a whole report (`envlink-audit` in each
//! namespace) by one field manager, forced: replicas that see the same cluster write the
//! same results, and when they differ, the last audit — the most recent view — wins. A Lease
//! would save the extra lists of the other replicas, but would add a moving part (and RBAC
//! on Leases) to a feature whose interval is minutes; keep the interval long with many
//! replicas.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::config::Policy;

use super::collect::{self, Options};
use super::report::{self, REPORT_NAME};
use super::{Check, Outcome};

/// Field manager of the PolicyReports envlink writes.
pub const FIELD_MANAGER: &str = "envlink-audit";

/// The findings of the last completed audit, per check and namespace, read at scrape time.
/// Clones share the counts (one is registered with the metrics, one kept by the audit).
#[derive(Debug, Default, Clone)]
pub struct FindingsGauge {
    counts: Arc<Mutex<BTreeMap<(&'static str, String), i64>>>,
}

impl FindingsGauge {
    /// Replaces the counts with an audit's: every check of every audited namespace (0 for a
    /// clean one, so a fixed problem shows as a drop to 0 rather than a vanished series).
    pub fn set(&self, outcome: &Outcome) {
        let mut counts = BTreeMap::new();
        for namespace in outcome.audited.keys() {
            for check in Check::ALL {
                counts.insert((check.as_str(), namespace.clone()), 0);
            }
        }
        for f in &outcome.findings {
            *counts
                .entry((f.check.as_str(), f.namespace.clone()))
                .or_insert(0) += 1;
        }
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = counts;
    }

    /// The current counts.
    pub fn counts(&self) -> BTreeMap<(&'static str, String), i64> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Collector for FindingsGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.counts();
        let mut family = encoder.encode_descriptor(
            "envlink_audit_findings",
            "Findings of the last periodic audit, by check and namespace",
            None,
            MetricType::Gauge,
        )?;
        for ((check, namespace), value) in &counts {
            let labels = [("check", *check), ("namespace", namespace.as_str())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(*value).encode(metric)?;
        }
        Ok(())
    }
}

/// Audits every `interval` until the process ends (the first audit one interval after
/// start, when the catalog and the API server have settled).
pub async fn run(
    client: kube::Client,
    policy: Arc<Policy>,
    interval: Duration,
    gauge: FindingsGauge,
    write_reports: bool,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let started = std::time::Instant::now();
        let result = collect::audit(&client, &policy, &Options::default(), &mut |_, _| {}).await;
        match result {
            Ok((outcome, _)) => {
                gauge.set(&outcome);
                tracing::info!(
                    findings = outcome.findings.len(),
                    summary = %report::closing_line(&outcome),
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "periodic audit done"
                );
                if write_reports {
                    write(&client, &outcome).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "periodic audit failed; the last counts stay exported");
            }
        }
    }
}

/// Applies each namespace's PolicyReport; a failure is logged and the others still written.
async fn write(client: &kube::Client, outcome: &Outcome) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let reports = report::policy_reports(outcome, now);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = 0usize;
    for item in reports["items"].as_array().into_iter().flatten() {
        let Some(namespace) = item["metadata"]["namespace"].as_str() else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.patch(REPORT_NAME, &params, &Patch::Apply(item)).await {
            Ok(_) => written += 1,
            Err(error) => {
                tracing::warn!(%error, namespace, "cannot write the PolicyReport");
            }
        }
    }
    tracing::info!(written, "PolicyReports written");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Audited, Finding, Severity};

    #[test]
    fn the_gauge_has_every_check_of_every_audited_namespace() {
        let mut outcome = Outcome::default();
        outcome.audited.insert("a".into(), Audited::default());
        outcome.audited.insert("b".into(), Audited::default());
        outcome.findings.push(Finding {
            namespace: "b".into(),
            kind: "Pod".into(),
            name: "p".into(),
            container: "c".into(),
            check: Check::Reserved,
            variable: "V".into(),
            message: String::new(),
            severity: Severity::Fail,
            rule: "r".into(),
            api_version: "v1".into(),
            uid: String::new(),
        });
        let gauge = FindingsGauge::default();
        gauge.set(&outcome);
        let counts = gauge.counts();
        assert_eq!(counts.len(), 6);
        assert_eq!(counts[&("reserved", "b".to_string())], 1);
        assert_eq!(counts[&("reserved", "a".to_string())], 0);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(gauge.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("envlink_audit_findings{check=\"reserved\",namespace=\"b\"} 1"),
            "{text}"
        );
    }
}
