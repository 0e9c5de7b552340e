//! A replica whose Service catalog has not completed its first list (here: `serve --dev
//! --kubeconfig` pointing at an API server that is not there) must not take service links
//! away from a Pod: it answers without service mutation, with a warning, and still applies
//! the reserved rules.

mod common;
#[path = "support/review.rs"]
mod review;
use review::PodReview;

use std::ffi::OsStr;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};

fn review(object: &Value) -> Vec<u8> {
    PodReview::create(object)
        .uid("0a1b2c3d-0000-4000-8000-000000000001")
        .to_bytes()
}

fn response_of(http: &str) -> Value {
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");
    let body = http.split("\r\n\r\n").nth(1).expect("body");
    serde_json::from_str::<Value>(body).expect("JSON")["response"].clone()
}

#[tokio::test]
async fn before_the_first_list_a_pod_keeps_its_service_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: nothing listens, the list fails at once and is retried.
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: gone\n  context: {cluster: gone, user: u}\ncurrent-context: gone\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .expect("kubeconfig");
    let ca = tmp.path().join("ca.pem");
    let config = tmp.path().join("policy.yaml");
    let start = |extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = [
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        args.extend([
            OsStr::new("--dev-ca-out"),
            ca.as_os_str(),
            OsStr::new("--kubeconfig"),
            kubeconfig.as_os_str(),
        ]);
        args.extend_from_slice(extra);
        common::serve(&args)
    };
    let (guard, serving) = start(&[]);
    let ca_pem = std::fs::read(&ca).expect("CA");

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop",
                     "annotations": {"envlink.io/services": "redis-master"}},
        "spec": {"containers": [{"name": "app"}], "enableServiceLinks": true}
    });
    let response =
        response_of(&common::post_review(serving.listen, &ca_pem, "/mutate", &review(&pod)).await);
    assert_eq!(response["allowed"], true, "{response}");
    // No patch at all: enableServiceLinks stays true, no record, no variables.
    assert!(
        response.get("patch").is_none_or(Value::is_null),
        "{response}"
    );
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("still loading"))),
        "{response}"
    );

    // The reserved rules hold from the first review: strip works without the catalog.
    drop(guard);
    std::fs::write(&config, "reserved: {defaultAction: strip}\n").expect("policy");
    let (_guard, serving) = start(&[OsStr::new("--config"), config.as_os_str()]);
    let ca_pem = std::fs::read(&ca).expect("CA");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "env": [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}, {"name": "KEEP", "value": "1"}]}],
                 "enableServiceLinks": true}
    });
    let response =
        response_of(&common::post_review(serving.listen, &ca_pem, "/mutate", &review(&pod)).await);
    assert_eq!(response["allowed"], true, "{response}");
    let patch = BASE64_STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([{"name": "KEEP", "value": "1"}])
    );
    assert_eq!(patched["spec"]["enableServiceLinks"], true);
}
