//! The worst input a Pod author can write for each step of a review, at the API server's
//! object size limit (3 MiB), through envlink's real request path (`handle_review`: decode,
//! decide, encode): each is answered correctly, and what comes back is bounded — a refusal of
//! a few KB, at most a few dozen warnings, a patch no larger than the object it patches.
//! Their cost against input size is measured in `benches/hostile.rs` (linear); the memory of
//! one review through the real process is measured at the end.

mod common;
#[path = "support/hostile.rs"]
mod hostile;

use std::ffi::OsStr;
use std::sync::Arc;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use envlink::catalog::{Catalog, file};
use envlink::config::Policy;
use envlink::http::router::{Endpoint, handle_review};
use envlink::http::{AppState, Metrics, ScrapeSources};
use serde_json::Value;

use hostile::{Case, OBJECT_LIMIT};

/// Longest refusal message: a few KB (`envlink::text::MESSAGE_LIMIT` plus the prefix).
const MESSAGE_BOUND: usize = 4096 + 64;
/// Most warnings in one answer.
const WARNINGS_BOUND: usize = 20;

fn state(policy: &str) -> AppState {
    let links = file::parse_services(file::EMBEDDED_CATALOG, "embedded", "default")
        .expect("embedded catalog");
    let (catalog, errors) = Catalog::from_links(links);
    assert!(errors.is_empty());
    let catalog = Arc::new(catalog);
    let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
    AppState::new(
        catalog,
        Arc::new(Policy::from_yaml(policy, "test").expect("policy")),
        metrics,
    )
}

struct Answered {
    body_len: usize,
    response: Value,
}

impl Answered {
    fn allowed(&self) -> bool {
        self.response["allowed"] == true
    }

    fn message(&self) -> &str {
        self.response["status"]["message"].as_str().unwrap_or("")
    }

    fn warnings(&self) -> Vec<&str> {
        self.response["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn patch(&self) -> Option<json_patch::Patch> {
        let text = self.response["patch"].as_str()?;
        let bytes = BASE64_STANDARD.decode(text).expect("base64 patch");
        Some(serde_json::from_slice(&bytes).expect("RFC 6902 patch"))
    }
}

fn answer(case: &Case) -> Answered {
    let endpoint = match case.endpoint {
        "mutate" => Endpoint::Mutate,
        _ => Endpoint::Validate,
    };
    let answer = handle_review(&state(case.policy), endpoint, &case.body);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let review: Value = serde_json::from_slice(&answer.body).expect("JSON answer");
    let answered = Answered {
        body_len: answer.body.len(),
        response: review["response"].clone(),
    };
    assert!(
        answered.message().len() <= MESSAGE_BOUND,
        "message of {} bytes",
        answered.message().len()
    );
    assert!(answered.warnings().len() <= WARNINGS_BOUND);
    answered
}

fn object_of(case: &Case) -> Value {
    let review: Value = serde_json::from_slice(&case.body).expect("JSON review");
    review["request"]["object"].clone()
}

#[test]
fn a_services_annotation_of_fifty_thousand_missing_names_is_refused_briefly() {
    // Within the API server's limit for all annotations together.
    let case = hostile::missing_services(hostile::ANNOTATIONS_LIMIT - 1024);
    let a = answer(&case);
    assert!(!a.allowed());
    assert!(
        a.message().contains("not found in namespace"),
        "{}",
        a.message()
    );
    assert!(a.message().contains("nope-0, nope-1, "), "{}", a.message());
    assert!(a.message().contains(" more"), "{}", a.message());
    assert!(a.body_len < 8 * 1024, "answer of {} bytes", a.body_len);
}

#[test]
fn a_forged_injected_record_gains_nothing_the_annotation_would_not() {
    let case = hostile::forged_record(hostile::ANNOTATIONS_LIMIT - 1024);
    let a = answer(&case);
    // Judged like envlink.io/services: Services that do not exist are refused.
    assert!(!a.allowed());
    assert!(
        a.message()
            .contains("named in envlink.io/injected not found"),
        "{}",
        a.message()
    );
    assert!(a.body_len < 8 * 1024);

    // A record of Services that do exist, without `kubernetes`: envlink adds it and writes
    // the true record.
    let small = hostile::review(
        "CREATE",
        None,
        r#"{"metadata":{"name":"p","annotations":{"envlink.io/injected":"redis-master"}},"spec":{"containers":[{"name":"app"}]}}"#,
        None,
    );
    let answer = handle_review(&state(""), Endpoint::Mutate, &small);
    let review: Value = serde_json::from_slice(&answer.body).expect("JSON");
    let a = Answered {
        body_len: answer.body.len(),
        response: review["response"].clone(),
    };
    assert!(a.allowed());
    let mut pod: Value =
        serde_json::from_slice::<Value>(&small).expect("JSON")["request"]["object"].clone();
    json_patch::patch(&mut pod, &a.patch().expect("a patch")).expect("applies");
    assert_eq!(
        pod["metadata"]["annotations"]["envlink.io/injected"],
        "kubernetes,redis-master"
    );
    let names: Vec<&str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"KUBERNETES_SERVICE_HOST"));
    assert!(names.contains(&"REDIS_MASTER_SERVICE_HOST"));
}

#[test]
fn a_hundred_thousand_resources_and_reserved_names_in_one_container() {
    let case = hostile::resource_names(OBJECT_LIMIT);
    let a = answer(&case);
    assert!(!a.allowed());
    assert!(a.message().contains("PCIDEVICE_X0"), "{}", a.message());
    assert!(a.message().contains("more (not listed)"), "{}", a.message());
    assert!(a.body_len < 8 * 1024);
}

#[test]
fn an_ephemeral_update_refuses_only_the_new_debug_container() {
    let case = hostile::ephemeral_update(OBJECT_LIMIT);
    let object = object_of(&case);
    let last = object["spec"]["ephemeralContainers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|c| c["name"].as_str())
        .expect("a debug container")
        .to_string();
    let a = answer(&case);
    assert!(!a.allowed());
    assert!(
        a.message()
            .contains(&format!("ephemeral container {last:?}")),
        "{}",
        a.message()
    );
    // Exactly one refusal: every other finding was already present.
    assert_eq!(
        a.message().matches("ephemeral container").count(),
        1,
        "{}",
        a.message()
    );
    let warnings = a.warnings();
    assert_eq!(warnings.len(), WARNINGS_BOUND);
    assert!(warnings[0].contains("already present before this update"));
    assert!(warnings[WARNINGS_BOUND - 1].contains("more warnings (not listed)"));
    assert!(a.body_len < 64 * 1024);
}

#[test]
fn strip_over_thousands_of_containers_patches_each_and_stays_bounded() {
    let case = hostile::strip_containers(OBJECT_LIMIT);
    let a = answer(&case);
    assert!(a.allowed());
    let mut pod = object_of(&case);
    let containers = pod["spec"]["containers"]
        .as_array()
        .expect("containers")
        .len();
    assert!(containers > 10_000, "{containers} containers");
    json_patch::patch(&mut pod, &a.patch().expect("a patch")).expect("applies");
    for (i, container) in pod["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .enumerate()
    {
        let env = container["env"].as_array().expect("env");
        assert!(
            env.iter().all(|e| e["name"] != "NVIDIA_VISIBLE_DEVICES"),
            "container {i} kept the reserved name"
        );
        assert!(
            env.iter()
                .any(|e| e["name"] == "KEEP" && e["value"] == i.to_string().as_str()),
            "container {i} lost its own entry"
        );
    }
    // The answer carries each container's remaining env once (base64: 4/3).
    assert!(
        a.body_len < case.body.len() * 2,
        "answer of {} bytes for a body of {}",
        a.body_len,
        case.body.len()
    );
    assert!(a.warnings()[WARNINGS_BOUND - 1].contains("more warnings"));
}

#[test]
fn two_hundred_thousand_containers_get_nothing_and_one_warning() {
    let case = hostile::many_containers(OBJECT_LIMIT);
    let a = answer(&case);
    assert!(a.allowed());
    assert!(a.patch().is_none(), "nothing injected, nothing stripped");
    assert!(
        a.warnings()
            .iter()
            .any(|w| w.contains("env entries across") && w.contains("none were injected")),
        "{:?}",
        a.warnings()
    );
}

#[test]
fn fields_envlink_never_reads_are_skipped() {
    let case = hostile::unread_numbers(OBJECT_LIMIT);
    let a = answer(&case);
    assert!(a.allowed());
    let mut pod = object_of(&case);
    json_patch::patch(&mut pod, &a.patch().expect("a patch")).expect("applies");
    let env = pod["spec"]["containers"][0]["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "REDIS_MASTER_SERVICE_HOST"));
}

#[test]
fn a_pod_refused_at_its_last_env_entry_is_explained_briefly() {
    let case = hostile::late_invalid_env(OBJECT_LIMIT);
    let a = answer(&case);
    assert!(!a.allowed());
    assert_eq!(a.response["status"]["code"], 400, "{:?}", a.response);
    // The place is named, deep in the object, and the answer stays small.
    let containers = object_of(&case)["spec"]["containers"]
        .as_array()
        .expect("containers")
        .len();
    assert!(containers > 10_000, "{containers} containers");
    let place = format!("spec.containers[{}].env[1]", containers - 1);
    assert!(a.message().contains(&place), "{}", a.message());
    assert!(a.body_len < 8 * 1024, "answer of {} bytes", a.body_len);
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn one_maximum_size_review_costs_a_small_multiple_of_its_body() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca.pem");
    let args: Vec<&OsStr> = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--dev-ca-out",
    ]
    .iter()
    .map(OsStr::new)
    .chain([ca.as_os_str()])
    .collect();
    let (mut guard, serving) = common::serve(&args);
    let pid = guard.0.as_mut().expect("child").id();
    let ca_pem = std::fs::read(&ca).expect("CA");
    // A warm-up review, so the baseline includes the TLS and HTTP buffers of one request.
    let small = hostile::unread_numbers(1024);
    let first = common::post_review(serving.listen, &ca_pem, "/mutate", &small.body).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let before = peak_rss_kb(pid);
    // Just under the default --max-body-bytes (7 MiB).
    let case = hostile::unread_numbers(7 * 1024 * 1024 - 4096);
    let response = common::post_review(serving.listen, &ca_pem, "/mutate", &case.body).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{}",
        &response[..response.len().min(500)]
    );
    assert!(response.contains(r#""allowed":true"#));
    let grown_kb = peak_rss_kb(pid).saturating_sub(before);
    let body_kb = (case.body.len() / 1024) as u64;
    // The body is held as it arrives (in chunks) and once more when the chunks are joined;
    // with the allocator's page granularity that is a few times the body. No tree of the
    // numbers is built: that was ~300 MB for this body.
    assert!(
        grown_kb <= 5 * body_kb,
        "peak resident memory grew {grown_kb} kB for a {body_kb} kB body"
    );
}
