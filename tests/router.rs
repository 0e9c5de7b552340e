//! The axum router called in-process on real AdmissionReview JSON files
//! (`tests/fixtures/review/`): decisions, patches applied to the request's object, the
//! HTTP-error-versus-`allowed: false` policy, uid echo, limits, health and readiness.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use envlink::catalog::{Catalog, file};
use envlink::config::Policy;
use envlink::http::{self, AppState, Limits, Metrics, ScrapeSources};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

#[path = "support/review.rs"]
mod review;
use review::{PodReview, env_of};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/review");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture exists")
}

/// The `--dev` catalog: `shop` has redis-master, web-frontend, ...; `default` has kubernetes.
fn embedded_catalog() -> Arc<Catalog> {
    let links = file::parse_services(file::EMBEDDED_CATALOG, "embedded", "default")
        .expect("embedded catalog");
    let (catalog, errors) = Catalog::from_links(links);
    assert!(errors.is_empty());
    Arc::new(catalog)
}

struct Harness {
    app: Router,
    metrics: Arc<Metrics>,
    catalog: Arc<Catalog>,
}

fn harness_with(catalog: Arc<Catalog>, limits: Limits) -> Harness {
    let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
    let state = AppState::new(
        catalog.clone(),
        Arc::new(Policy::default()),
        metrics.clone(),
    )
    .with_limits(limits);
    Harness {
        app: http::router(state),
        metrics,
        catalog,
    }
}

fn harness() -> Harness {
    harness_with(embedded_catalog(), Limits::default())
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The AdmissionReview's `response`, after checking the envelope.
    fn response(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        assert_eq!(self.content_type, "application/json");
        let review = self.json();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        review["response"].clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post(app: &Router, path: &str, body: Vec<u8>) -> Answer {
    post_as(app, path, Some("application/json"), body).await
}

async fn post_as(app: &Router, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = Request::post(path).header(header::CONTENT_LENGTH, body.len());
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    send(app, request.body(Body::from(body)).expect("request")).await
}

async fn get(app: &Router, path: &str) -> Answer {
    send(
        app,
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await
}

fn request_uid(review: &[u8]) -> String {
    let v: Value = serde_json::from_slice(review).expect("fixture is JSON");
    v["request"]["uid"].as_str().expect("uid").to_string()
}

/// The request's object with the response's patch applied.
fn patched_object(review: &[u8], response: &Value) -> Value {
    let v: Value = serde_json::from_slice(review).expect("fixture is JSON");
    let mut object = v["request"]["object"].clone();
    if let Some(patch) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = BASE64_STANDARD
            .decode(patch.as_str().expect("patch is a base64 string"))
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("RFC 6902 patch");
        json_patch::patch(&mut object, &patch).expect("patch applies");
    }
    object
}

fn value_of<'a>(env: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    env.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn wrapped_review(object: &Value, uid: &str) -> Vec<u8> {
    PodReview::create(object).uid(uid).to_bytes()
}

#[tokio::test]
async fn pod_create_gets_the_kubelet_variables() {
    let h = harness();
    let review = fixture("mutate-pod-create.json");
    let answer = post(&h.app, "/mutate", review.clone()).await;
    let response = answer.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], true);
    let pod = patched_object(&review, &response);

    let app = env_of(&pod["spec"]["containers"][0]);
    // The user's own value wins and appears once; the rest is injected in front of it.
    assert_eq!(
        value_of(&app, "REDIS_MASTER_SERVICE_HOST"),
        ["redis.override.internal"]
    );
    assert_eq!(value_of(&app, "REDIS_MASTER_SERVICE_PORT"), ["6379"]);
    assert_eq!(
        value_of(&app, "REDIS_MASTER_PORT_6379_TCP"),
        ["tcp://10.96.12.7:6379"]
    );
    assert_eq!(value_of(&app, "KUBERNETES_SERVICE_HOST"), ["10.96.0.1"]);
    assert_eq!(value_of(&app, "WEB_FRONTEND_SERVICE_PORT_HTTP"), ["80"]);
    assert_eq!(
        value_of(&app, "SEARCH_PORT"),
        ["tcp://[fd00:10:96::a]:9200"]
    );
    assert_eq!(value_of(&app, "LOG_LEVEL"), ["info"]);
    let position = |name: &str| app.iter().position(|(n, _)| n == name);
    assert!(position("KUBERNETES_SERVICE_HOST") < position("REDIS_MASTER_SERVICE_HOST"));
    // Headless and ExternalName Services give nothing.
    assert!(app.iter().all(|(n, _)| !n.starts_with("CASSANDRA_")));
    assert!(app.iter().all(|(n, _)| !n.starts_with("PAYMENTS_API_")));

    // Every container and init container gets them.
    for container in [
        &pod["spec"]["containers"][1],
        &pod["spec"]["containers"][2],
        &pod["spec"]["initContainers"][0],
    ] {
        let env = env_of(container);
        assert_eq!(value_of(&env, "REDIS_MASTER_SERVICE_HOST"), ["10.96.12.7"]);
    }
    assert_eq!(pod["spec"]["enableServiceLinks"], false);
    let injected = pod["metadata"]["annotations"]["envlink.io/injected"]
        .as_str()
        .expect("injected annotation");
    assert!(injected.contains("redis-master"), "{injected}");
    // The rest of the Pod is untouched.
    assert_eq!(pod["metadata"]["labels"]["app"], "checkout");
    assert_eq!(pod["spec"]["restartPolicy"], "Always");

    // Reinvocation on envlink's own output changes nothing.
    let again = post(&h.app, "/mutate", wrapped_review(&pod, "second-pass")).await;
    let response = again.response();
    assert_eq!(response["uid"], "second-pass");
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");

    let metrics = h.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(
            "envlink_admission_requests_total{endpoint=\"mutate\",decision=\"patched\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("envlink_injected_variables_count 1"),
        "{metrics}"
    );
    // The Services this review injected keep their rendered variables for the next review
    // (the harness's catalog is alive, so the bytes are still held).
    let kept: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("envlink_render_cache_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .expect("render cache gauge");
    assert!(kept > 0 && kept <= 4 << 20, "{kept}");
}

#[tokio::test]
async fn dry_run_is_answered_like_a_real_create() {
    let h = harness();
    let review = fixture("mutate-pod-create-dry-run.json");
    let response = post(&h.app, "/mutate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], true);
    let pod = patched_object(&review, &response);
    let env = env_of(&pod["spec"]["containers"][0]);
    // The annotation named redis-master only (plus the kubelet's `kubernetes`).
    assert_eq!(value_of(&env, "REDIS_MASTER_SERVICE_HOST"), ["10.96.12.7"]);
    assert!(env.iter().all(|(n, _)| !n.starts_with("WEB_FRONTEND_")));
}

#[tokio::test]
async fn deployment_shadowing_a_gpu_variable_is_denied_on_validate() {
    let h = harness();
    let review = fixture("validate-deployment-gpu-shadow.json");
    let response = post(&h.app, "/validate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["status"], "Failure");
    let message = response["status"]["message"].as_str().expect("message");
    for needle in [
        "Deployment",
        "\"train\"",
        "NVIDIA_VISIBLE_DEVICES",
        "nvidia.com/gpu",
    ] {
        assert!(message.contains(needle), "{needle} not in {message}");
    }
    assert!(response.get("patch").is_none());

    // /mutate handles only Pods: a Deployment is let through unchanged, with a warning.
    let response = post(&h.app, "/mutate", review).await.response();
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    assert!(response["warnings"][0].as_str().is_some());

    let metrics = h.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(
            "envlink_admission_requests_total{endpoint=\"validate\",decision=\"denied\"} 1"
        )
    );
}

/// Kubernetes 1.20 and 1.21 send `pods/ephemeralcontainers` with kind `EphemeralContainers`
/// and the debug containers at the top of the object: checked like the Pod form.
#[tokio::test]
async fn debug_container_in_the_1_20_ephemeral_containers_form_is_denied() {
    let h = harness();
    let review = fixture("validate-ephemeralcontainers-1.20.json");
    let response = post(&h.app, "/validate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("ephemeral container \"debugger\""),
        "{message}"
    );
    assert!(message.contains("NVIDIA_VISIBLE_DEVICES"), "{message}");
    assert!(!message.contains("inspect"), "{message}");

    // The same debug container without the reserved name is allowed.
    let clean = String::from_utf8(review.clone())
        .expect("UTF-8")
        .replace("NVIDIA_VISIBLE_DEVICES", "SOMETHING_ELSE");
    let response = post(&h.app, "/validate", clean.into_bytes())
        .await
        .response();
    assert_eq!(response["allowed"], true, "{response}");

    // /mutate has nothing to do for a subresource: allowed without a warning.
    let response = post(&h.app, "/mutate", review).await.response();
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("warnings").is_none_or(Value::is_null),
        "{response}"
    );
}

#[tokio::test]
async fn clean_deployment_is_allowed() {
    let h = harness();
    let review = fixture("validate-deployment-clean.json");
    let response = post(&h.app, "/validate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    assert!(response.get("warnings").is_none());
}

#[tokio::test]
async fn configmap_on_mutate_is_allowed_unchanged_with_a_warning() {
    let h = harness();
    let review = fixture("mutate-configmap.json");
    let response = post(&h.app, "/mutate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("ConfigMap"), "{warning}");
}

#[tokio::test]
async fn unusable_object_is_refused_as_invalid_with_the_uid() {
    let h = harness();
    let review = fixture("mutate-pod-no-spec.json");
    let response = post(&h.app, "/mutate", review.clone()).await.response();
    assert_eq!(response["uid"], request_uid(&review).as_str());
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(message.contains("spec"), "{message}");
}

/// A body that is not a usable review: HTTP 400 with a Status, or — when a uid can be
/// read — an AdmissionReview with `allowed: false` echoing it.
#[tokio::test]
async fn bodies_that_are_not_reviews() {
    let h = harness();
    struct Case {
        body: Vec<u8>,
        uid: Option<&'static str>,
        message: &'static str,
    }
    let cases = [
        Case {
            body: fixture("malformed.json"),
            uid: None,
            message: "not valid JSON",
        },
        Case {
            body: b"[1, 2, 3]".to_vec(),
            uid: None,
            message: "JSON array",
        },
        Case {
            body: fixture("not-a-review.json"),
            uid: None,
            message: "admission.k8s.io/v1",
        },
        Case {
            body: fixture("no-request.json"),
            uid: None,
            message: "no `request`",
        },
        Case {
            body: fixture("wrong-api-version.json"),
            uid: Some("1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b"),
            message: "admission.k8s.io/v1beta1",
        },
        Case {
            body: fixture("wrong-shape.json"),
            uid: Some("5e1d0c2b-aaaa-4bbb-8ccc-123456789abc"),
            message: "request.kind",
        },
    ];
    for endpoint in ["/mutate", "/validate"] {
        for case in &cases {
            let answer = post(&h.app, endpoint, case.body.clone()).await;
            match case.uid {
                Some(uid) => {
                    let response = answer.response();
                    assert_eq!(response["uid"], uid);
                    assert_eq!(response["allowed"], false);
                    assert_eq!(response["status"]["code"], 400);
                    let message = response["status"]["message"].as_str().expect("message");
                    assert!(message.contains(case.message), "{message}");
                }
                None => {
                    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
                    assert_eq!(answer.content_type, "application/json");
                    let status = answer.json();
                    assert_eq!(status["kind"], "Status");
                    assert_eq!(status["code"], 400);
                    let message = status["message"].as_str().expect("message");
                    assert!(message.contains(case.message), "{message}");
                }
            }
        }
    }
    let metrics = h.metrics.encode().expect("metrics");
    assert!(
        metrics
            .contains("envlink_admission_requests_total{endpoint=\"mutate\",decision=\"error\"} 4")
    );
    assert!(
        metrics.contains(
            "envlink_admission_requests_total{endpoint=\"mutate\",decision=\"invalid\"} 2"
        )
    );
}

#[tokio::test]
async fn non_utf8_body_is_a_bad_request() {
    let h = harness();
    let mut body =
        br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "x": ""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
    let answer = post(&h.app, "/mutate", body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("UTF-8"))
    );
}

#[tokio::test]
async fn content_type_must_be_json() {
    let h = harness();
    let review = fixture("validate-deployment-clean.json");
    for content_type in [Some("text/plain"), Some("application/yaml"), None] {
        let answer = post_as(&h.app, "/validate", content_type, review.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(answer.json()["code"], 415);
    }
    let answer = post_as(
        &h.app,
        "/validate",
        Some("application/json; charset=utf-8"),
        review,
    )
    .await;
    assert_eq!(answer.response()["allowed"], true);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let review = fixture("mutate-pod-create.json");
    let limits = Limits {
        max_body_bytes: review.len() - 1,
        ..Limits::default()
    };
    let h = harness_with(embedded_catalog(), limits);
    // Declared by Content-Length: refused before reading.
    let answer = post(&h.app, "/mutate", review.clone()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["code"], 413);
    // Streamed without a length: refused when the limit is crossed.
    let chunks: Vec<Result<Bytes, std::io::Error>> = review
        .chunks(512)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("request");
    let answer = send(&h.app, request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let h = harness_with(
        embedded_catalog(),
        Limits {
            max_body_bytes: review.len(),
            ..Limits::default()
        },
    );
    assert_eq!(post(&h.app, "/mutate", review).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_never_finishes_times_out() {
    let limits = Limits {
        request_timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let h = harness_with(embedded_catalog(), limits);
    let first: Result<Bytes, std::io::Error> = Ok(Bytes::from_static(b"{\"apiVersion\": "));
    let stream =
        futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let request = Request::post("/mutate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("request");
    let answer = send(&h.app, request).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer.json()["code"], 408);
}

#[tokio::test]
async fn health_and_readiness() {
    let h = harness_with(Arc::new(Catalog::new()), Limits::default());
    let answer = get(&h.app, "/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = get(&h.app, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    h.catalog.mark_ready();
    let answer = get(&h.app, "/readyz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "ready\n");
}

#[tokio::test]
async fn wrong_method_and_path() {
    let h = harness();
    assert_eq!(
        get(&h.app, "/mutate").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        post(&h.app, "/nothing", b"{}".to_vec()).await.status,
        StatusCode::NOT_FOUND
    );
}

/// With `reserved.checkConfigMaps`, `/readyz` waits for the first ConfigMap list, and a key
/// brought in through `envFrom` that shadows a reserved name is refused.
#[tokio::test]
async fn config_map_keys_gate_readiness_and_are_checked() {
    use envlink::catalog::configmaps::{ConfigMapIndex, ConfigMapSync};
    use kube::runtime::watcher::Event;

    let catalog = embedded_catalog();
    let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
    let policy = Policy::from_yaml("reserved: {checkConfigMaps: true}", "test").expect("policy");
    let index = Arc::new(ConfigMapIndex::new());
    let state = AppState::new(catalog, Arc::new(policy), metrics).with_config_maps(index.clone());
    let app = http::router(state);
    assert_eq!(
        get(&app, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let mut sync = ConfigMapSync::cluster_wide(index);
    sync.handle(0, Event::Init);
    let config_map = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "gpu-settings", "namespace": "shop"},
        "data": {"VISIBLE_DEVICES": "all"}
    }))
    .expect("ConfigMap");
    sync.handle(0, Event::InitApply(config_map));
    sync.handle(0, Event::InitDone);
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);

    let mut review: Value =
        serde_json::from_slice(&fixture("mutate-pod-create.json")).expect("json");
    review["request"]["namespace"] = "shop".into();
    review["request"]["object"]["metadata"]["namespace"] = "shop".into();
    review["request"]["object"]["spec"]["containers"][0]["envFrom"] =
        serde_json::json!([{"prefix": "NVIDIA_", "configMapRef": {"name": "gpu-settings"}}]);
    let answer = post(&app, "/mutate", serde_json::to_vec(&review).expect("json")).await;
    let response = answer.response();
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("NVIDIA_VISIBLE_DEVICES") && message.contains("gpu-settings"),
        "{message}"
    );
}
