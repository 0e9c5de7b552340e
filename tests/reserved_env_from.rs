//! `envFrom` through the whole decision (issue 11, item 3): a Pod's JSON in, the verdict and
//! its messages out, for `/mutate` (Pods) and `/validate` (workload templates).

use envlink::admission::{self, Decision, Object, Operation, Request, Verdict};
use envlink::catalog::Catalog;
use envlink::config::Policy;
use envlink::reserved::NoConfigMaps;
use serde_json::{Value, json};

fn pod(env_from: Value, resources: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"containers": [{
            "name": "app", "image": "app:1",
            "envFrom": env_from,
            "resources": resources,
        }]}
    })
}

fn mutate(policy: &Policy, object: &Value) -> Decision {
    let object = serde_json::value::to_raw_value(object).expect("serialises");
    let request = Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace: "shop",
        object: Some(Object::Text(&object)),
        old_object: None,
    };
    // A ready catalog without Services: only the reserved rules speak.
    let (catalog, _) = Catalog::from_links(Vec::new());
    admission::mutate(&request, &catalog.snapshot(), policy, &NoConfigMaps)
}

fn denied(decision: &Decision) -> &str {
    match &decision.verdict {
        Verdict::Deny(message) => message,
        other => panic!("expected a denial, got {other:?} ({:?})", decision.warnings),
    }
}

#[test]
fn a_secret_behind_a_reserved_prefix_is_refused() {
    let object = pod(
        json!([{"prefix": "PCIDEVICE_", "secretRef": {"name": "sriov-env"}}]),
        json!({}),
    );
    let decision = mutate(&Policy::default(), &object);
    let message = denied(&decision);
    assert!(
        message.contains(
            "envFrom prefix PCIDEVICE_ makes every key of Secret \"sriov-env\" a reserved name"
        ),
        "{message}"
    );
    assert!(message.contains("rule sriov"), "{message}");
}

#[test]
fn an_unreadable_source_that_can_begin_a_reserved_name_follows_the_setting() {
    // The attack of issue 11: a Secret key VISIBLE_DEVICES behind `prefix: NVIDIA_`, in a
    // container without a GPU (NVIDIA_VISIBLE_DEVICES is reserved in every container).
    let object = pod(
        json!([{"prefix": "NVIDIA_", "secretRef": {"name": "s"}}]),
        json!({"requests": {"cpu": "1"}}),
    );
    let decision = mutate(&Policy::default(), &object);
    assert_eq!(decision.verdict, Verdict::Allow);
    let warning = decision
        .warnings
        .iter()
        .find(|w| w.contains("Secret \"s\""))
        .unwrap_or_else(|| panic!("no warning: {:?}", decision.warnings));
    assert!(
        warning.contains("NVIDIA_VISIBLE_DEVICES (rule nvidia-visible-devices)"),
        "{warning}"
    );
    assert!(warning.contains("envlink never reads Secrets"), "{warning}");

    let strict = Policy::from_yaml("reserved: {unverifiableEnvFrom: deny}", "t").expect("policy");
    let message = denied(&mutate(&strict, &object)).to_string();
    assert!(message.contains("NVIDIA_VISIBLE_DEVICES"), "{message}");

    // A ConfigMap envlink cannot read (checkConfigMaps off) is the same.
    let object = pod(
        json!([{"configMapRef": {"name": "settings"}}]),
        json!({"limits": {"nvidia.com/gpu": 1}}),
    );
    let message = denied(&mutate(&strict, &object)).to_string();
    assert!(message.contains("ConfigMap \"settings\""), "{message}");
    assert!(message.contains("NVIDIA_GDS (rule nvidia)"), "{message}");

    // A prefix that begins no reserved name is not flagged at all.
    let object = pod(
        json!([{"prefix": "APP_", "secretRef": {"name": "s"}}]),
        json!({}),
    );
    let decision = mutate(&strict, &object);
    assert_eq!(decision.verdict, Verdict::Allow);
    assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
}

#[test]
fn workload_templates_are_judged_the_same() {
    let strict = Policy::from_yaml("reserved: {unverifiableEnvFrom: deny}", "t").expect("policy");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "shop"},
        "spec": {"template": {"spec": {"containers": [{
            "name": "app", "image": "app:1",
            "envFrom": [{"secretRef": {"name": "creds"}}]
        }]}}}
    });
    let deployment = serde_json::value::to_raw_value(&deployment).expect("serialises");
    let request = Request {
        operation: Operation::Create,
        group: "apps",
        kind: "Deployment",
        sub_resource: None,
        namespace: "shop",
        object: Some(Object::Text(&deployment)),
        old_object: None,
    };
    let decision = admission::validate(&request, &strict, &NoConfigMaps);
    let message = denied(&decision);
    assert!(
        message.contains("Deployment template") && message.contains("Secret \"creds\""),
        "{message}"
    );
    assert!(message.contains("PCIDEVICE_* (rule sriov)"), "{message}");
}
