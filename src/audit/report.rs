//! The audit's output formats: a table for people, a JSON list of findings, and
//! `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace), the format Kyverno and
//! Kubewarden write and policy-reporter shows.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Check, Finding, Outcome, Severity};

/// Name of the PolicyReport envlink writes in each namespace.
pub const REPORT_NAME: &str = "envlink-audit";
/// `source` of every result.
pub const REPORT_SOURCE: &str = "envlink";

/// One finding in `-o json`.
#[derive(Debug, Serialize)]
struct JsonFinding<'a> {
    check: &'static str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    container: &'a str,
    variable: &'a str,
    message: &'a str,
}

/// `-o json`: a list of findings, each with `check`, `kind`, `namespace`, `name`,
/// `container`, `variable` and `message`.
pub fn json(outcome: &Outcome) -> String {
    let list: Vec<JsonFinding<'_>> = outcome
        .findings
        .iter()
        .map(|f| JsonFinding {
            check: f.check.as_str(),
            kind: &f.kind,
            namespace: &f.namespace,
            name: &f.name,
            container: &f.container,
            variable: &f.variable,
            message: &f.message,
        })
        .collect();
    // Serialising strings and vectors cannot fail.
    serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
}

/// `-o table`: one line per finding, then a closing count.
pub fn table(outcome: &Outcome) -> String {
    let header = [
        "CHECK",
        "KIND",
        "NAMESPACE",
        "NAME",
        "CONTAINER",
        "VARIABLE",
        "MESSAGE",
    ];
    let rows: Vec<[&str; 7]> = outcome
        .findings
        .iter()
        .map(|f| {
            [
                f.check.as_str(),
                f.kind.as_str(),
                f.namespace.as_str(),
                f.name.as_str(),
                f.container.as_str(),
                f.variable.as_str(),
                f.message.as_str(),
            ]
        })
        .collect();
    let mut text = String::new();
    if !rows.is_empty() {
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
    }
    text.push_str(&closing_line(outcome));
    text.push('\n');
    text
}

/// `3 findings (reserved: 1, stale-service-variable: 2) in 40 Pods and 5 workloads of 3
/// namespaces`, or `no findings in ...`.
pub fn closing_line(outcome: &Outcome) -> String {
    let pods: usize = outcome.audited.values().map(|a| a.pods).sum();
    let workloads: usize = outcome.audited.values().map(|a| a.workloads).sum();
    let scope = format!(
        "in {pods} Pod{} and {workloads} workload{} of {} namespace{}",
        plural(pods),
        plural(workloads),
        outcome.audited.len(),
        plural(outcome.audited.len())
    );
    let counts = outcome.counts();
    if counts.is_empty() {
        return format!("no findings {scope}");
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(check, n)| format!("{}: {n}", check.as_str()))
        .collect();
    format!(
        "{} finding{} ({}) {scope}",
        outcome.findings.len(),
        plural(outcome.findings.len()),
        parts.join(", ")
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `-o policyreport`: a `List` of PolicyReports, one per audited namespace (a clean
/// namespace gets one with no results, so a report written earlier is emptied when
/// applied). `now` is the results' timestamp, in seconds since the epoch.
pub fn policy_reports(outcome: &Outcome, now: i64) -> Value {
    let mut by_namespace: BTreeMap<&str, Vec<&Finding>> = outcome
        .audited
        .keys()
        .map(|ns| (ns.as_str(), Vec::new()))
        .collect();
    for f in &outcome.findings {
        by_namespace.entry(&f.namespace).or_default().push(f);
    }
    let items: Vec<Value> = by_namespace
        .into_iter()
        .map(|(namespace, findings)| policy_report(namespace, &findings, now))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The PolicyReport of one namespace.
pub fn policy_report(namespace: &str, findings: &[&Finding], now: i64) -> Value {
    let fail = findings
        .iter()
        .filter(|f| f.severity == Severity::Fail)
        .count();
    let warn = findings.len() - fail;
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "source": REPORT_SOURCE,
                "policy": f.check.as_str(),
                "rule": f.rule,
                "category": category(f.check),
                "severity": severity(f),
                "result": match f.severity {
                    Severity::Fail => "fail",
                    Severity::Warn => "warn",
                },
                "scored": true,
                "message": f.message,
                "timestamp": {"seconds": now, "nanos": 0},
                "resources": [{
                    "apiVersion": f.api_version,
                    "kind": f.kind,
                    "namespace": f.namespace,
                    "name": f.name,
                    "uid": f.uid,
                }],
                "properties": {
                    "container": f.container,
                    "variable": f.variable,
                },
            })
        })
        .collect();
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "envlink"},
        },
        "summary": {"pass": 0, "fail": fail, "warn": warn, "error": 0, "skip": 0},
        "results": results,
    })
}

fn category(check: Check) -> &'static str {
    match check {
        Check::Reserved => "Device plugin variables",
        Check::StaleServiceVariable | Check::MissingServiceVariable => "Service links",
    }
}

/// A reserved variable can hand a container devices it did not ask for: high. A wrong or
/// missing service variable breaks a client: medium.
fn severity(finding: &Finding) -> &'static str {
    match (finding.check, finding.severity) {
        (Check::Reserved, Severity::Fail) => "high",
        _ => "medium",
    }
}
