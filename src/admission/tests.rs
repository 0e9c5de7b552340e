//! Table-driven tests of the admission decision, asserting on the Pod obtained by applying
//! the patch — never on the patch's text.

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::*;
use crate::catalog::Catalog;
use crate::config::Policy;
use crate::reserved::NoConfigMaps;
use crate::servicelinks::tests::svc;

fn cluster() -> Catalog {
    Catalog::from_links(vec![
        svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            &[("https", 443, "TCP")],
        ),
        svc("shop", "redis-master", "10.96.0.11", &[("", 6379, "TCP")]),
        svc("shop", "db", "fd00::7", &[("pg", 5432, "TCP")]),
        svc("shop", "cassandra", "None", &[("cql", 9042, "TCP")]),
        svc("prod", "db", "10.96.9.9", &[("", 5432, "")]),
        svc("own", "kubernetes", "10.96.7.7", &[("", 6443, "TCP")]),
        svc("own", "web", "10.96.7.8", &[("", 80, "TCP")]),
        svc("sriov", "pcidevice-x", "10.96.8.1", &[("", 80, "TCP")]),
    ])
    .0
}

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml, "test").expect("test policy")
}

fn pod(namespace: &str, annotations: Value, containers: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"containers": containers, "enableServiceLinks": true}
    });
    if !annotations.is_null() {
        p["metadata"]["annotations"] = annotations;
    }
    p
}

/// The object as the JSON text a review carries (leaked: tests only, a few per test).
fn raw(object: &Value) -> &'static RawValue {
    Box::leak(serde_json::value::to_raw_value(object).expect("serialises"))
}

fn create<'a>(namespace: &'a str, object: &'a Value) -> Request<'a> {
    Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace,
        object: Some(Object::Text(raw(object))),
        old_object: None,
    }
}

/// Runs `mutate` and returns the decision and the Pod with the patch applied.
fn run(catalog: &Catalog, policy: &Policy, namespace: &str, object: &Value) -> (Decision, Value) {
    let decision = mutate(
        &create(namespace, object),
        &catalog.snapshot(),
        policy,
        &NoConfigMaps,
    );
    let patch = decision.patch.to_patch().expect("reads back");
    // The server's direct JSON writer and the json_patch form must be the same patch.
    let direct: json_patch::Patch =
        serde_json::from_slice(&decision.patch.to_json().expect("writes")).expect("valid JSON");
    assert_eq!(direct, patch);
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).expect("patch applies to its input");
    (decision, patched)
}

fn env_of(pod: &Value, container: usize) -> Vec<(String, String)> {
    pod["spec"]["containers"][container]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or_default().to_string(),
                        e["value"].as_str().unwrap_or("<valueFrom>").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(env: &[(String, String)]) -> Vec<&str> {
    env.iter().map(|(n, _)| n.as_str()).collect()
}

fn service_prefixes(env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = env
        .iter()
        .filter_map(|(n, _)| n.strip_suffix("_SERVICE_HOST").map(str::to_string))
        .collect();
    out.dedup();
    out
}

#[test]
fn default_mode_injects_the_kubelet_set_in_front_sorted_by_service() {
    let object = pod(
        "shop",
        Value::Null,
        json!([{"name": "app", "env": [{"name": "MINE", "value": "1"}]}]),
    );
    let (d, patched) = run(&cluster(), &Policy::default(), "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    let env = env_of(&patched, 0);
    assert_eq!(service_prefixes(&env), ["DB", "KUBERNETES", "REDIS_MASTER"]);
    assert_eq!(env.last(), Some(&("MINE".to_string(), "1".to_string())));
    assert!(env.contains(&("DB_PORT".into(), "tcp://[fd00::7]:5432".into())));
    assert!(env.contains(&("DB_SERVICE_HOST".into(), "fd00::7".into())));
    assert!(
        !names(&env).iter().any(|n| n.starts_with("CASSANDRA")),
        "headless gives nothing"
    );
    assert_eq!(patched["spec"]["enableServiceLinks"], json!(false));
    assert_eq!(
        patched["metadata"]["annotations"][ANNOTATION_INJECTED],
        json!("db,kubernetes,redis-master")
    );
    assert_eq!(d.variables, env.len() - 1);
}

#[test]
fn user_values_are_never_replaced_and_not_duplicated() {
    let object = pod(
        "shop",
        json!({"other": "x"}),
        json!([{"name": "app", "env": [
            {"name": "REDIS_MASTER_SERVICE_HOST", "value": "my-redis"},
            {"name": "DB_PORT", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]}]),
    );
    let (_, patched) = run(&cluster(), &Policy::default(), "shop", &object);
    let env = env_of(&patched, 0);
    let count = |n: &str| names(&env).iter().filter(|x| **x == n).count();
    assert_eq!(count("REDIS_MASTER_SERVICE_HOST"), 1);
    assert_eq!(count("DB_PORT"), 1);
    assert!(env.contains(&("REDIS_MASTER_SERVICE_HOST".into(), "my-redis".into())));
    let raw = &patched["spec"]["containers"][0]["env"];
    assert!(
        raw.as_array()
            .is_some_and(|a| a.iter().any(|e| e["valueFrom"].is_object()))
    );
    assert_eq!(
        patched["metadata"]["annotations"]["other"],
        json!("x"),
        "other annotations kept"
    );
}

#[test]
fn init_containers_get_the_variables_too() {
    let mut object = pod("shop", Value::Null, json!([{"name": "app"}]));
    object["spec"]["initContainers"] = json!([{"name": "init", "env": []}]);
    let (_, patched) = run(&cluster(), &Policy::default(), "shop", &object);
    let init = &patched["spec"]["initContainers"][0]["env"];
    assert!(
        init.as_array()
            .is_some_and(|a| a.iter().any(|e| e["name"] == "REDIS_MASTER_PORT"))
    );
}

#[test]
fn kubernetes_service_rules() {
    // A namespace's own `kubernetes` Service wins when links are enabled ...
    let object = pod("own", Value::Null, json!([{"name": "app"}]));
    let (_, patched) = run(&cluster(), &Policy::default(), "own", &object);
    let env = env_of(&patched, 0);
    assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.7.7".into())));
    assert_eq!(
        patched["metadata"]["annotations"][ANNOTATION_INJECTED],
        json!("kubernetes,web")
    );
    // ... and default's is given even with enableServiceLinks false.
    let mut object = pod("own", Value::Null, json!([{"name": "app"}]));
    object["spec"]["enableServiceLinks"] = json!(false);
    let (_, patched) = run(&cluster(), &Policy::default(), "own", &object);
    let env = env_of(&patched, 0);
    assert_eq!(service_prefixes(&env), ["KUBERNETES"]);
    assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())));
    assert_eq!(
        patched["metadata"]["annotations"][ANNOTATION_INJECTED],
        json!("default/kubernetes")
    );
}

#[test]
fn annotation_narrows_the_set_and_reports_missing_services() {
    let c = cluster();
    let object = pod(
        "shop",
        json!({ANNOTATION_SERVICES: " redis-master , "}),
        json!([{"name": "app"}]),
    );
    let (d, patched) = run(&c, &Policy::default(), "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        service_prefixes(&env_of(&patched, 0)),
        ["KUBERNETES", "REDIS_MASTER"]
    );

    let object = pod(
        "shop",
        json!({ANNOTATION_SERVICES: "redis-master,queue,cache"}),
        json!([{"name": "app"}]),
    );
    let (d, patched) = run(&c, &Policy::default(), "shop", &object);
    let Verdict::Deny(message) = &d.verdict else {
        panic!("expected a denial, got {:?}", d.verdict);
    };
    assert!(message.contains("queue, cache"), "{message}");
    assert!(message.contains("\"shop\""), "{message}");
    assert_eq!(patched, object, "a denial carries no patch");

    let warn = policy("services: {onMissing: warn}");
    let (d, patched) = run(&c, &warn, "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(
        d.warnings.iter().any(|w| w.contains("queue, cache")),
        "{:?}",
        d.warnings
    );
    assert_eq!(
        service_prefixes(&env_of(&patched, 0)),
        ["KUBERNETES", "REDIS_MASTER"]
    );

    let object = pod(
        "shop",
        json!({ANNOTATION_SERVICES: "cassandra"}),
        json!([{"name": "app"}]),
    );
    let (d, _) = run(&c, &Policy::default(), "shop", &object);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("shop/cassandra") && w.contains("no cluster IP"))
    );
}

#[test]
fn cross_namespace_references_follow_the_configuration() {
    let c = cluster();
    let object = pod(
        "shop",
        json!({ANNOTATION_SERVICES: "prod/db"}),
        json!([{"name": "app"}]),
    );
    let (d, _) = run(&c, &Policy::default(), "shop", &object);
    assert!(
        matches!(&d.verdict, Verdict::Deny(m) if m.contains("prod/db") && m.contains("allowCrossNamespace"))
    );

    let allow = policy("services: {allowCrossNamespace: true}");
    let (d, patched) = run(&c, &allow, "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    let env = env_of(&patched, 0);
    assert!(env.contains(&("DB_SERVICE_HOST".into(), "10.96.9.9".into())));
    assert_eq!(
        patched["metadata"]["annotations"][ANNOTATION_INJECTED],
        json!("prod/db,kubernetes")
    );
    // The re-run resolves the record the same way and changes nothing.
    let (again, _) = run(&c, &allow, "shop", &patched);
    assert!(again.patch.is_empty(), "{:?}", again.patch);
}

#[test]
fn opt_out_and_modes() {
    let c = cluster();
    let opted_out = pod(
        "shop",
        json!({ANNOTATION_INJECT: "false"}),
        json!([{"name": "app"}]),
    );
    let (d, patched) = run(&c, &Policy::default(), "shop", &opted_out);
    assert_eq!((d.verdict, patched), (Verdict::Allow, opted_out.clone()));

    let plain = pod("shop", Value::Null, json!([{"name": "app"}]));
    for mode in ["annotated", "off"] {
        let p = policy(&format!("services: {{mode: {mode}}}"));
        let (_, patched) = run(&c, &p, "shop", &plain);
        assert_eq!(patched, plain, "mode {mode}");
    }
    let named = pod(
        "shop",
        json!({ANNOTATION_SERVICES: "db"}),
        json!([{"name": "app"}]),
    );
    let (_, patched) = run(&c, &policy("services: {mode: annotated}"), "shop", &named);
    assert_eq!(service_prefixes(&env_of(&patched, 0)), ["DB", "KUBERNETES"]);

    let garbage = pod(
        "shop",
        json!({ANNOTATION_INJECT: "nope"}),
        json!([{"name": "app"}]),
    );
    let (d, _) = run(&c, &Policy::default(), "shop", &garbage);
    assert!(matches!(&d.verdict, Verdict::Deny(m) if m.contains(ANNOTATION_INJECT)));
    let garbage = pod(
        "shop",
        json!({ANNOTATION_SERVICES: "Redis_Master;db"}),
        json!([{"name": "app"}]),
    );
    let (d, _) = run(&c, &Policy::default(), "shop", &garbage);
    assert!(matches!(&d.verdict, Verdict::Deny(m) if m.contains("Redis_Master;db")));

    let keep_links = policy("services: {disableServiceLinks: false}");
    let (_, patched) = run(&c, &keep_links, "shop", &plain);
    assert_eq!(patched["spec"]["enableServiceLinks"], json!(true));
}

#[test]
fn reserved_variables_deny_strip_warn_and_opt_out_does_not_help() {
    let c = cluster();
    let containers = json!([
        {"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": 1}},
         "env": [{"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/x"}, {"name": "KEEP", "value": "k"}]},
    ]);
    let object = pod("shop", json!({ANNOTATION_INJECT: "false"}), containers);
    let (d, _) = run(&c, &Policy::default(), "shop", &object);
    let Verdict::Deny(m) = &d.verdict else {
        panic!("expected deny, got {:?}", d.verdict);
    };
    assert!(
        m.contains("\"trainer\"")
            && m.contains("CUDA_MPS_PIPE_DIRECTORY")
            && m.contains("nvidia.com/gpu"),
        "{m}"
    );

    let strip = policy("reserved: {defaultAction: strip}");
    let (d, patched) = run(&c, &strip, "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        env_of(&patched, 0),
        vec![("KEEP".to_string(), "k".to_string())]
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("CUDA_MPS_PIPE_DIRECTORY"))
    );

    let warn = policy("reserved: {defaultAction: warn}");
    let (d, patched) = run(&c, &warn, "shop", &object);
    assert_eq!((d.verdict, patched), (Verdict::Allow, object.clone()));
    assert_eq!(d.warnings.len(), 1);

    // NVIDIA_VISIBLE_DEVICES is reserved even without a GPU.
    let no_gpu = pod(
        "shop",
        Value::Null,
        json!([{"name": "web", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]),
    );
    let (d, _) = run(&c, &Policy::default(), "shop", &no_gpu);
    assert!(matches!(d.verdict, Verdict::Deny(_)));

    let exempt = policy("reserved: {exemptNamespaces: [shop]}");
    let (d, _) = run(&c, &exempt, "shop", &no_gpu);
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn reserved_names_are_never_injected() {
    let object = pod("sriov", Value::Null, json!([{"name": "app"}]));
    let (_, patched) = run(&cluster(), &Policy::default(), "sriov", &object);
    let env = env_of(&patched, 0);
    assert!(
        !names(&env).iter().any(|n| n.starts_with("PCIDEVICE_")),
        "{env:?}"
    );
    assert!(names(&env).contains(&"KUBERNETES_SERVICE_HOST"));
}

#[test]
fn over_the_limit_injects_nothing_and_warns() {
    let p = policy("services: {maxVariables: 10}");
    let object = pod("shop", Value::Null, json!([{"name": "app"}]));
    let (d, patched) = run(&cluster(), &p, "shop", &object);
    assert_eq!(patched, object);
    assert!(
        d.warnings.iter().any(|w| w.contains("limit of 10")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn running_on_its_own_output_changes_nothing() {
    let c = cluster();
    let cases = [
        pod(
            "shop",
            Value::Null,
            json!([{"name": "a"}, {"name": "b", "env": [{"name": "X", "value": "y"}]}]),
        ),
        pod("own", Value::Null, json!([{"name": "a"}])),
        pod(
            "shop",
            json!({ANNOTATION_SERVICES: "db"}),
            json!([{"name": "a"}]),
        ),
        pod("elsewhere", Value::Null, json!([{"name": "a"}])),
    ];
    for object in cases {
        let (first, once) = run(&c, &Policy::default(), "", &object);
        assert_eq!(first.verdict, Verdict::Allow);
        let (second, twice) = run(&c, &Policy::default(), "", &once);
        assert!(
            second.patch.is_empty(),
            "second run patched: {:?}",
            second.patch
        );
        assert_eq!(once, twice);
    }
}

#[test]
fn reinvocation_fills_a_container_added_after_envlink() {
    let c = cluster();
    let object = pod("shop", Value::Null, json!([{"name": "a"}]));
    let (_, mut once) = run(&c, &Policy::default(), "shop", &object);
    once["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "sidecar"}));
    let (_, twice) = run(&c, &Policy::default(), "shop", &once);
    assert_eq!(env_of(&twice, 0), env_of(&twice, 1));
}

#[test]
fn only_pod_creates_are_mutated() {
    let c = cluster();
    let object = pod("shop", Value::Null, json!([{"name": "a"}]));
    let update = Request {
        operation: Operation::Update,
        ..create("shop", &object)
    };
    assert!(
        mutate(&update, &c.snapshot(), &Policy::default(), &NoConfigMaps)
            .patch
            .is_empty()
    );
    let cm = json!({"kind": "ConfigMap", "metadata": {"name": "x"}});
    let wrong = Request {
        kind: "ConfigMap",
        ..create("shop", &cm)
    };
    let d = mutate(&wrong, &c.snapshot(), &Policy::default(), &NoConfigMaps);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.patch.is_empty());
    assert!(d.warnings[0].contains("core/ConfigMap"));
}

#[test]
fn malformed_pods_are_invalid_not_a_crash() {
    let c = cluster();
    for object in [
        json!({"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}),
        json!({"kind": "Pod", "metadata": {"annotations": {"a": 1}}, "spec": {}}),
        json!({"kind": "Pod", "metadata": {"name": "x"}}),
        json!("a string"),
        json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "env": [{"name": 5}]}]}}),
    ] {
        let d = mutate(
            &create("shop", &object),
            &c.snapshot(),
            &Policy::default(),
            &NoConfigMaps,
        );
        assert!(
            matches!(d.verdict, Verdict::Invalid(_)),
            "{object}: {:?}",
            d.verdict
        );
    }
    let missing = Request {
        object: None,
        ..create("shop", &Value::Null)
    };
    assert!(matches!(
        mutate(&missing, &c.snapshot(), &Policy::default(), &NoConfigMaps).verdict,
        Verdict::Invalid(_)
    ));
}

#[test]
fn pod_without_annotations_or_metadata_gets_them() {
    let c = cluster();
    let object = json!({"kind": "Pod", "spec": {"containers": [{"name": "a"}]}});
    let (d, patched) = run(&c, &Policy::default(), "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        patched["metadata"]["annotations"][ANNOTATION_INJECTED],
        json!("db,kubernetes,redis-master")
    );
}

fn workload(kind: &str, template_env: Value) -> Value {
    let template = json!({"metadata": {}, "spec": {"containers": [
        {"name": "app", "env": template_env}
    ]}});
    match kind {
        "CronJob" => json!({"kind": kind, "metadata": {"name": "w", "namespace": "shop"},
            "spec": {"jobTemplate": {"spec": {"template": template}}}}),
        _ => {
            json!({"kind": kind, "metadata": {"name": "w", "namespace": "shop"}, "spec": {"template": template}})
        }
    }
}

fn validate_request<'a>(group: &'a str, kind: &'a str, object: &'a Value) -> Request<'a> {
    Request {
        group,
        kind,
        ..create("shop", object)
    }
}

#[test]
fn validate_checks_workload_templates() {
    let bad = json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]);
    for (group, kind) in [
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
    ] {
        let object = workload(kind, bad.clone());
        let d = validate(
            &validate_request(group, kind, &object),
            &Policy::default(),
            &NoConfigMaps,
        );
        let Verdict::Deny(m) = &d.verdict else {
            panic!("{kind}: expected deny, got {:?}", d.verdict);
        };
        assert!(
            m.contains(kind) && m.contains("\"app\"") && m.contains("NVIDIA_VISIBLE_DEVICES"),
            "{m}"
        );
        let clean = workload(kind, json!([{"name": "OK", "value": "1"}]));
        let d = validate(
            &validate_request(group, kind, &clean),
            &Policy::default(),
            &NoConfigMaps,
        );
        assert_eq!(d.verdict, Verdict::Allow, "{kind}");
    }
    let strip = policy("reserved: {defaultAction: strip}");
    let object = workload("Deployment", bad);
    let d = validate(
        &validate_request("apps", "Deployment", &object),
        &strip,
        &NoConfigMaps,
    );
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(
        d.warnings[0].contains("will be removed"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn validate_update_refuses_only_what_the_update_adds() {
    let old = workload(
        "Deployment",
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
    );
    let new = workload(
        "Deployment",
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}, {"name": "X", "value": "1"}]),
    );
    let request = Request {
        operation: Operation::Update,
        old_object: Some(raw(&old)),
        ..validate_request("apps", "Deployment", &new)
    };
    let d = validate(&request, &Policy::default(), &NoConfigMaps);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.warnings[0].contains("already present"));

    let clean_old = workload("Deployment", json!([]));
    let request = Request {
        old_object: Some(raw(&clean_old)),
        ..request
    };
    assert!(matches!(
        validate(&request, &Policy::default(), &NoConfigMaps).verdict,
        Verdict::Deny(_)
    ));
}

#[test]
fn validate_pods_and_ephemeral_containers() {
    let strip = policy("reserved: {defaultAction: strip}");
    let object = pod(
        "shop",
        Value::Null,
        json!([{"name": "a", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"}]}]),
    );
    let d = validate(&create("shop", &object), &strip, &NoConfigMaps);
    assert!(
        matches!(&d.verdict, Verdict::Deny(m) if m.contains("still present")),
        "{:?}",
        d.verdict
    );

    let mut with_debug = pod("shop", Value::Null, json!([{"name": "a"}]));
    with_debug["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]);
    let request = Request {
        operation: Operation::Update,
        sub_resource: Some("ephemeralcontainers"),
        ..create("shop", &with_debug)
    };
    let d = validate(&request, &Policy::default(), &NoConfigMaps);
    assert!(
        matches!(&d.verdict, Verdict::Deny(m) if m.contains("ephemeral container \"debugger\"")),
        "{:?}",
        d.verdict
    );

    // Plain Pod updates cannot change env and are not checked (objects must stay updatable).
    let request = Request {
        operation: Operation::Update,
        ..create("shop", &object)
    };
    assert_eq!(
        validate(&request, &Policy::default(), &NoConfigMaps).verdict,
        Verdict::Allow
    );
}

#[test]
fn too_many_entries_across_containers_injects_nothing() {
    // Each container in `shop` gets 23 variables (db 8, kubernetes 8, redis-master 7):
    // just under the cap everything is injected, one container more and nothing is.
    let per_container = 23;
    let under = MAX_INJECTED_ENTRIES / per_container;
    let pod_of = |n: usize| {
        let containers: Vec<Value> = (0..n).map(|i| json!({"name": format!("c{i}")})).collect();
        pod("shop", Value::Null, Value::Array(containers))
    };
    let (d, patched) = run(&cluster(), &Policy::default(), "shop", &pod_of(under));
    assert_eq!(env_of(&patched, under - 1).len(), per_container);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);

    let object = pod_of(under + 1);
    let (d, patched) = run(&cluster(), &Policy::default(), "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(patched, object, "nothing injected, links left alone");
    assert!(
        d.warnings.iter().any(|w| w.contains("cannot be stored")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn before_the_first_list_service_links_are_left_alone() {
    // A catalog that has not completed its first list.
    let loading = Catalog::new();
    for annotations in [Value::Null, json!({"envlink.io/services": "redis-master"})] {
        let object = pod("shop", annotations, json!([{"name": "app"}]));
        let (d, patched) = run(&loading, &Policy::default(), "shop", &object);
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.patch.is_empty(), "{:?}", d.patch.ops);
        assert_eq!(patched["spec"]["enableServiceLinks"], true);
        assert!(
            patched["metadata"]
                .get("annotations")
                .and_then(|a| a.get("envlink.io/injected"))
                .is_none()
        );
        assert!(
            d.warnings.iter().any(|w| w.contains("still loading")),
            "{:?}",
            d.warnings
        );
    }
    // The reserved rules need no catalog: they hold from the first review.
    let object = pod(
        "shop",
        Value::Null,
        json!([{"name": "app", "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]),
    );
    let d = mutate(
        &create("shop", &object),
        &loading.snapshot(),
        &Policy::default(),
        &NoConfigMaps,
    );
    assert!(matches!(d.verdict, Verdict::Deny(_)));
}

#[test]
fn a_record_written_by_the_pod_author_is_judged_like_the_services_annotation() {
    let c = cluster();
    // Services that do not exist: refused (onMissing: deny), as in envlink.io/services.
    let object = pod(
        "shop",
        json!({"envlink.io/injected": "ghost"}),
        json!([{"name": "app"}]),
    );
    let d = mutate(
        &create("shop", &object),
        &c.snapshot(),
        &Policy::default(),
        &NoConfigMaps,
    );
    assert!(
        matches!(&d.verdict, Verdict::Deny(m) if m.contains("ghost") && m.contains("envlink.io/injected")),
        "{:?}",
        d.verdict
    );
    // `kubernetes` is added and the record rewritten to the truth.
    let object = pod(
        "shop",
        json!({"envlink.io/injected": "redis-master"}),
        json!([{"name": "app"}]),
    );
    let (d, patched) = run(&c, &Policy::default(), "shop", &object);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        patched["metadata"]["annotations"]["envlink.io/injected"],
        "kubernetes,redis-master"
    );
    // Under mode: annotated a record alone injects nothing.
    let annotated = policy("services: {mode: annotated}");
    let (d, _) = run(&c, &annotated, "shop", &object);
    assert!(d.patch.is_empty());
    // envlink's own output is a fixed point (reinvocation).
    let object = pod("shop", Value::Null, json!([{"name": "app"}]));
    let (_, once) = run(&c, &Policy::default(), "shop", &object);
    let (again, _) = run(&c, &Policy::default(), "shop", &once);
    assert!(again.patch.is_empty(), "{:?}", again.patch.ops);
}

#[test]
fn objects_must_be_objects_and_messages_describe_the_input() {
    let c = cluster();
    for (object, needle) in [
        (
            json!({"kind": "Pod", "spec": []}),
            "at `spec`: invalid type: sequence, expected an object",
        ),
        (
            json!({"kind": "Pod", "spec": {"containers": ["app"]}}),
            "at `spec.containers[0]`: invalid type: string \"app\", expected an object",
        ),
        (
            json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "env": [7]}]}}),
            "expected an object (an env entry)",
        ),
        (
            json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "resources": {"limits": [1]}}]}}),
            "at `spec.containers[0].resources.limits`",
        ),
    ] {
        let d = mutate(
            &create("shop", &object),
            &c.snapshot(),
            &Policy::default(),
            &NoConfigMaps,
        );
        let Verdict::Invalid(message) = &d.verdict else {
            panic!("{object}: {:?}", d.verdict);
        };
        assert!(message.contains(needle), "{object}: {message}");
        for internal in ["struct", "borrowed", "View", "Obj"] {
            assert!(!message.contains(internal), "{object}: {message}");
        }
    }
    // Escaped strings are read (they cannot be borrowed from the text).
    let object = json!({"kind": "Pod", "spec": {"containers": [
        {"name": "a\u{e9}\"q", "env": [{"name": "NVIDIA_VISIBLE_DEVICE\u{53}", "value": "x"}]}
    ]}});
    let raw_text = serde_json::to_string(&object)
        .expect("JSON")
        .replace('S', "\\u0053");
    let raw_value = Box::leak(RawValue::from_string(raw_text).expect("raw"));
    let request = Request {
        object: Some(Object::Text(raw_value)),
        ..create("shop", &object)
    };
    let d = mutate(&request, &c.snapshot(), &Policy::default(), &NoConfigMaps);
    assert!(
        matches!(&d.verdict, Verdict::Deny(m) if m.contains("NVIDIA_VISIBLE_DEVICES")),
        "{:?}",
        d.verdict
    );
}

/// DRA: template and claim lookups for the admission tests.
struct DraClaims;

impl crate::reserved::ConfigMapKeys for DraClaims {
    fn keys(&self, _namespace: &str, _name: &str) -> Option<Vec<String>> {
        None
    }

    fn claim_device_classes(
        &self,
        namespace: &str,
        source: crate::reserved::ClaimSource<'_>,
    ) -> Option<std::sync::Arc<[Box<str>]>> {
        use crate::reserved::ClaimSource;
        match (namespace, source) {
            ("ml", ClaimSource::Template("one-gpu")) | ("ml", ClaimSource::Claim("shared-gpu")) => {
                Some(vec![Box::<str>::from("gpu.nvidia.com")].into())
            }
            _ => None,
        }
    }
}

#[test]
fn dra_pods_are_checked_through_their_claims() {
    let pod = |claims: Value, env: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml"},
            "spec": {
                "resourceClaims": claims,
                "containers": [{
                    "name": "trainer", "image": "x",
                    "env": [{"name": env, "value": "1"}],
                    "resources": {"claims": [{"name": "gpu"}]},
                }],
            },
        })
    };
    let template = json!([{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]);
    let claim = json!([{"name": "gpu", "resourceClaimName": "shared-gpu"}]);
    // 1.26/1.27 shape.
    let nested = json!([{"name": "gpu", "source": {"resourceClaimTemplateName": "one-gpu"}}]);
    let policy = Policy::default();
    for claims in [template.clone(), claim, nested] {
        let object = pod(claims, "NVIDIA_IMEX_CHANNELS");
        let d = validate(&create("ml", &object), &policy, &DraClaims);
        assert_eq!(d.verdict, Verdict::Allow, "{:?}", d.verdict);
        assert!(
            d.warnings.iter().any(|w| w.contains("NVIDIA_IMEX_CHANNELS")
                && w.contains("DRA device class gpu.nvidia.com (claim \"gpu\")")
                && w.contains("is ignored")),
            "{:?}",
            d.warnings
        );
    }
    // Without a DRA index nothing is known about the claim.
    let object = pod(template.clone(), "NVIDIA_IMEX_CHANNELS");
    let d = validate(&create("ml", &object), &policy, &NoConfigMaps);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    // NVIDIA_VISIBLE_DEVICES is refused in every container, DRA or not.
    let object = pod(template.clone(), "NVIDIA_VISIBLE_DEVICES");
    let d = validate(&create("ml", &object), &policy, &DraClaims);
    assert!(matches!(d.verdict, Verdict::Deny(_)), "{:?}", d.verdict);
    // The mutating webhook agrees, and says so as a warning.
    let object = pod(template, "NVIDIA_GDS");
    let d = mutate(
        &create("ml", &object),
        &cluster().snapshot(),
        &policy,
        &DraClaims,
    );
    assert!(!matches!(d.verdict, Verdict::Deny(_)), "{:?}", d.verdict);
    assert!(
        d.warnings.iter().any(|w| w.contains("NVIDIA_GDS")),
        "{:?}",
        d.warnings
    );
}
