//! The audit's decisions on in-process objects (no API server).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::objects::{PodRecord, WorkloadRecord};
use super::services::ServiceState;
use super::*;
use crate::servicelinks::{LinkPort, ServiceLink};

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-02T00:00:00Z";
const T2: &str = "2026-01-03T00:00:00Z";

fn time(t: &str) -> Timestamp {
    t.parse().expect("timestamp")
}

fn service(
    ns: &str,
    name: &str,
    ip: &str,
    port: i32,
    created: &str,
) -> (ServiceLink, Option<Timestamp>) {
    (
        ServiceLink {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: vec![LinkPort {
                name: String::new(),
                port,
                protocol: "TCP".into(),
            }],
        },
        Some(time(created)),
    )
}

fn cluster(extra: Vec<(ServiceLink, Option<Timestamp>)>) -> ServiceState {
    let mut services = vec![service(
        "default",
        "kubernetes",
        "10.96.0.1",
        443,
        "2020-01-01T00:00:00Z",
    )];
    services.extend(extra);
    let (state, errors) = ServiceState::new(services, None);
    assert!(errors.is_empty());
    state
}

fn pod(ns: &str, name: &str, created: &str, annotations: Value, spec: Value) -> PodRecord {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "creationTimestamp": created, "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Running"}
    }))
    .expect("pod record")
}

fn app(env: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "x", "env": env}]})
}

fn audit_pods(state: ServiceState, pods: &[PodRecord]) -> Outcome {
    let policy = Policy::default();
    let mut audit = Audit::new(&policy, state);
    for p in pods {
        audit.pod(p);
    }
    audit.finish()
}

fn summary(outcome: &Outcome) -> Vec<(Check, String, String, String)> {
    outcome
        .findings
        .iter()
        .map(|f| {
            (
                f.check,
                f.name.clone(),
                f.container.clone(),
                f.variable.clone(),
            )
        })
        .collect()
}

#[test]
fn reserved_variables_in_pods_and_templates() {
    let policy = Policy::default();
    let mut audit = Audit::new(&policy, cluster(vec![]));
    audit.pod(&pod(
        "ml",
        "shadow",
        T1,
        json!({}),
        json!({"containers": [
            {"name": "train", "resources": {"limits": {"nvidia.com/gpu": "1"}},
             "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]},
            {"name": "side", "env": [{"name": "PCIDEVICE_X", "value": "1"}, {"name": "OK", "value": "1"}]}
        ]}),
    ));
    let template = |kind_spec: Value| -> WorkloadRecord {
        serde_json::from_value(kind_spec).expect("workload")
    };
    let spec = json!({"template": {"spec": {"initContainers": [
        {"name": "init", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"}]}]}}});
    audit.workload(
        "Deployment",
        "apps/v1",
        &template(json!({"metadata": {"name": "web", "namespace": "ml"}, "spec": spec})),
    );
    // A ReplicaSet of that Deployment: its owner is reported instead.
    audit.workload(
        "ReplicaSet",
        "apps/v1",
        &template(json!({"metadata": {"name": "web-1", "namespace": "ml",
            "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]},
            "spec": spec})),
    );
    audit.workload(
        "CronJob",
        "batch/v1",
        &template(json!({"metadata": {"name": "nightly", "namespace": "ml"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]}}}}}})),
    );
    let outcome = audit.finish();
    assert_eq!(
        summary(&outcome),
        vec![
            (
                Check::Reserved,
                "nightly".into(),
                "c".into(),
                "NVIDIA_VISIBLE_DEVICES".into()
            ),
            (
                Check::Reserved,
                "web".into(),
                "init".into(),
                "NVIDIA_VISIBLE_DEVICES".into()
            ),
            (
                Check::Reserved,
                "shadow".into(),
                "side".into(),
                "PCIDEVICE_X".into()
            ),
            (
                Check::Reserved,
                "shadow".into(),
                "train".into(),
                "NVIDIA_VISIBLE_DEVICES".into()
            ),
        ]
    );
    let web = &outcome.findings[1];
    assert_eq!(
        (web.kind.as_str(), web.api_version.as_str()),
        ("Deployment", "apps/v1")
    );
    assert!(
        web.message
            .starts_with("Pod template: init container \"init\""),
        "{}",
        web.message
    );
    assert!(web.message.contains("action deny"), "{}", web.message);
    assert_eq!(
        outcome.audited["ml"],
        Audited {
            pods: 1,
            workloads: 2
        }
    );
}

#[test]
fn exempt_namespaces_and_warn_rules_follow_the_policy() {
    let policy = Policy::from_yaml(
        "reserved: {exemptNamespaces: [gpu-admin], defaultAction: warn}\n",
        "test",
    )
    .expect("policy");
    let mut audit = Audit::new(&policy, cluster(vec![]));
    let env = app(json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]));
    audit.pod(&pod("gpu-admin", "a", T1, json!({}), env.clone()));
    audit.pod(&pod("team", "b", T1, json!({}), env));
    let outcome = audit.finish();
    assert_eq!(outcome.findings.len(), 1);
    assert_eq!(outcome.findings[0].namespace, "team");
    assert_eq!(outcome.findings[0].severity, Severity::Warn);
}

#[test]
fn stale_values_name_the_variable_the_pods_value_and_todays() {
    // db was recreated after the Pod: a new cluster IP.
    let state = cluster(vec![service("shop", "db", "10.96.0.9", 5432, T2)]);
    let injected = pod(
        "shop",
        "api",
        T1,
        json!({"envlink.io/injected": "db,kubernetes"}),
        app(json!([
            {"name": "DB_SERVICE_HOST", "value": "10.96.0.5"},
            {"name": "DB_SERVICE_PORT", "value": "5432"},
            {"name": "DB_PORT", "value": "tcp://10.96.0.5:5432"},
            {"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"},
            {"name": "FROM_REF", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}
        ])),
    );
    let outcome = audit_pods(state, &[injected]);
    assert_eq!(
        summary(&outcome),
        vec![
            (
                Check::StaleServiceVariable,
                "api".into(),
                "app".into(),
                "DB_PORT".into()
            ),
            (
                Check::StaleServiceVariable,
                "api".into(),
                "app".into(),
                "DB_SERVICE_HOST".into()
            ),
        ]
    );
    let host = &outcome.findings[1].message;
    assert!(
        host.contains("\"10.96.0.5\" in the Pod") && host.contains("shop/db gives \"10.96.0.9\""),
        "{host}"
    );
}

#[test]
fn a_recorded_service_that_is_gone_makes_its_variables_stale() {
    let state = cluster(vec![]);
    let p = pod(
        "shop",
        "api",
        T1,
        json!({"envlink.io/injected": "db,kubernetes"}),
        app(json!([{"name": "DB_SERVICE_HOST", "value": "10.96.0.5"}])),
    );
    let outcome = audit_pods(state, &[p]);
    assert_eq!(outcome.findings.len(), 1);
    assert_eq!(outcome.findings[0].check, Check::StaleServiceVariable);
    assert!(outcome.findings[0].message.contains("no longer exists"));
}

#[test]
fn kubelet_pods_older_than_a_service_lack_its_variables() {
    let state = cluster(vec![
        service("shop", "old", "10.96.0.3", 80, T0),
        service("shop", "cache", "10.96.0.4", 6379, T2),
    ]);
    let two = json!({"initContainers": [{"name": "init"}],
                     "containers": [{"name": "app", "env": [{"name": "X", "value": "1"}]}]});
    let linked = pod("shop", "web", T1, json!({}), two);
    let unlinked = pod(
        "shop",
        "batch",
        T1,
        json!({}),
        json!({"enableServiceLinks": false, "containers": [{"name": "app"}]}),
    );
    let newer = pod(
        "shop",
        "fresh",
        "2026-01-04T00:00:00Z",
        json!({}),
        app(json!([])),
    );
    let mut done = pod("shop", "done", T1, json!({}), app(json!([])));
    done.status = serde_json::from_value(json!({"phase": "Succeeded"})).ok();
    let outcome = audit_pods(state, &[linked, unlinked, newer, done]);
    assert_eq!(
        summary(&outcome),
        vec![
            (
                Check::MissingServiceVariable,
                "web".into(),
                "app".into(),
                "CACHE_SERVICE_HOST".into()
            ),
            (
                Check::MissingServiceVariable,
                "web".into(),
                "init".into(),
                "CACHE_SERVICE_HOST".into()
            ),
        ]
    );
    assert!(
        outcome.findings[0].message.contains("shop/cache"),
        "{}",
        outcome.findings[0].message
    );
}

#[test]
fn a_named_service_created_after_the_pod_is_missing() {
    let state = cluster(vec![
        service("shop", "db", "10.96.0.3", 5432, T0),
        service("shop", "queue", "10.96.0.4", 5672, T2),
    ]);
    let p = pod(
        "shop",
        "api",
        T1,
        json!({"envlink.io/services": "db, queue, cache", "envlink.io/injected": "db,kubernetes"}),
        app(json!([{"name": "DB_SERVICE_HOST", "value": "10.96.0.3"}])),
    );
    let outcome = audit_pods(state, &[p]);
    assert_eq!(
        summary(&outcome),
        vec![
            (
                Check::MissingServiceVariable,
                "api".into(),
                "app".into(),
                "CACHE_SERVICE_HOST".into()
            ),
            (
                Check::MissingServiceVariable,
                "api".into(),
                "app".into(),
                "QUEUE_SERVICE_HOST".into()
            ),
        ]
    );
    assert!(outcome.findings[0].message.contains("does not exist"));
    assert!(
        outcome.findings[1]
            .message
            .contains("created at 2026-01-03T00:00:00Z")
    );
}

#[test]
fn an_injected_pod_lacks_the_services_created_after_it() {
    let state = cluster(vec![
        service("shop", "db", "10.96.0.3", 5432, T0),
        service("shop", "cache", "10.96.0.4", 6379, T2),
    ]);
    let vars = json!([{"name": "DB_SERVICE_HOST", "value": "10.96.0.3"}]);
    let injected = pod(
        "shop",
        "api",
        T1,
        json!({"envlink.io/injected": "db,kubernetes"}),
        app(vars.clone()),
    );
    // Its record lacks `db`, which is older: it was created with links off, so it never
    // wanted the namespace's Services.
    let unlinked = pod(
        "shop",
        "solo",
        T1,
        json!({"envlink.io/injected": "kubernetes"}),
        app(json!([])),
    );
    let outcome = audit_pods(state, &[injected, unlinked]);
    assert_eq!(
        summary(&outcome),
        vec![(
            Check::MissingServiceVariable,
            "api".into(),
            "app".into(),
            "CACHE_SERVICE_HOST".into()
        )]
    );
}

#[test]
fn namespaces_whose_services_were_not_listed_are_not_judged_on_services() {
    let services = vec![
        service(
            "default",
            "kubernetes",
            "10.96.0.1",
            443,
            "2020-01-01T00:00:00Z",
        ),
        service("shop", "db", "10.96.0.3", 5432, T2),
    ];
    let (state, _) = ServiceState::new(services, Some(vec!["shop".into(), "default".into()]));
    let elsewhere = pod(
        "other",
        "x",
        T1,
        json!({}),
        app(json!([{"name": "DB_SERVICE_HOST", "value": "1"}])),
    );
    let outcome = audit_pods(state, &[elsewhere]);
    assert!(outcome.findings.is_empty(), "{:?}", outcome.findings);
}

#[test]
fn clean_pods_have_no_findings() {
    let state = cluster(vec![service("shop", "db", "10.96.0.3", 5432, T0)]);
    let p = pod(
        "shop",
        "ok",
        T1,
        json!({"envlink.io/injected": "db,kubernetes"}),
        app(json!([
            {"name": "DB_SERVICE_HOST", "value": "10.96.0.3"},
            {"name": "DB_PORT", "value": "tcp://10.96.0.3:5432"},
            {"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"}
        ])),
    );
    let kubelet = pod("shop", "plain", T1, json!({}), app(json!([])));
    let outcome = audit_pods(state, &[p, kubelet]);
    assert!(outcome.findings.is_empty(), "{:?}", outcome.findings);
    assert_eq!(outcome.audited["shop"].pods, 2);
}

#[test]
fn output_formats() {
    let state = cluster(vec![service("shop", "db", "10.96.0.9", 5432, T2)]);
    let stale = pod(
        "shop",
        "api",
        T1,
        json!({"envlink.io/injected": "kubernetes"}),
        app(json!([{"name": "DB_SERVICE_HOST", "value": "10.96.0.5"}])),
    );
    let clean = pod("quiet", "ok", T2, json!({}), app(json!([])));
    let outcome = audit_pods(state, &[stale, clean]);

    let list: Value = serde_json::from_str(&report::json(&outcome)).expect("json");
    let first = list[0].as_object().expect("object");
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "check",
            "container",
            "kind",
            "message",
            "name",
            "namespace",
            "variable"
        ]
    );
    assert_eq!(first["check"], "stale-service-variable");

    let reports = report::policy_reports(&outcome, 1_700_000_000);
    let items = reports["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        2,
        "one report per audited namespace, the clean one too"
    );
    let quiet = &items[0];
    assert_eq!(quiet["metadata"]["namespace"], "quiet");
    assert_eq!(quiet["summary"]["fail"], 0);
    assert_eq!(quiet["results"], json!([]));
    let shop = &items[1];
    assert_eq!(shop["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(shop["kind"], "PolicyReport");
    assert_eq!(shop["summary"]["fail"], 1);
    let result = &shop["results"][0];
    assert_eq!(result["policy"], "stale-service-variable");
    assert_eq!(result["result"], "fail");
    assert_eq!(result["resources"][0]["name"], "api");
    assert_eq!(result["resources"][0]["uid"], "uid-api");
    assert_eq!(result["properties"]["variable"], "DB_SERVICE_HOST");

    let table = report::table(&outcome);
    assert!(table.starts_with("CHECK "), "{table}");
    assert!(
        table.trim_end().ends_with(
            "1 finding (stale-service-variable: 1) in 2 Pods and 0 workloads of 2 namespaces"
        ),
        "{table}"
    );
    assert_eq!(
        report::table(&Outcome::default()),
        "no findings in 0 Pods and 0 workloads of 0 namespaces\n"
    );
}
