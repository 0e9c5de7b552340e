//! criterion benchmarks of the request path's pure parts and of catalog updates.
//!
//! S1: a typical Pod (3 containers, a few env vars each) naming 5 Services by annotation in a
//!     namespace of 1,000 Services.
//! S2: the same Pod in the default mode in a namespace of 50 Services (hundreds of variables
//!     per container).
//!
//! `server_path` runs the whole request path of `src/http/router.rs` (body bytes to response
//! bytes) in-process; `bench/load.sh` measures it over real HTTPS.

use std::hint::black_box;

// The same allocator as the binary, so the numbers match the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http;
use envlink::http::router::{Endpoint, handle_review};
use envlink::http::wire::OutgoingResponse;
use envlink::http::{AppState, Metrics, ScrapeSources};
use http_body_util::BodyExt;
use tower::ServiceExt;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envlink::admission::{self, Object, Operation, Request, selection};
use envlink::catalog::{Catalog, Rendered};
use envlink::config::Policy;
use envlink::reserved::NoConfigMaps;
use envlink::servicelinks::{LinkPort, ServiceLink};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

#[path = "../tests/support/review.rs"]
mod review;
use review::PodReview;
use serde_json::value::RawValue;
use serde_json::{Value, json};

fn service(ns: &str, i: usize) -> ServiceLink {
    ServiceLink {
        namespace: ns.to_string(),
        name: format!("svc-{i:05}"),
        cluster_ip: format!("10.96.{}.{}", i / 250, i % 250 + 1),
        ports: vec![
            LinkPort {
                name: "http".into(),
                port: 80,
                protocol: "TCP".into(),
            },
            LinkPort {
                name: "metrics".into(),
                port: 9090,
                protocol: "TCP".into(),
            },
        ],
    }
}

/// A ready catalog of `n` Services in `ns` plus `default/kubernetes`, judged with `policy`'s
/// rules as the server's is (so a decision with that policy skips the per-name check).
fn catalog(ns: &str, n: usize, policy: &Policy) -> Catalog {
    let mut links: Vec<ServiceLink> = (0..n).map(|i| service(ns, i)).collect();
    links.push(ServiceLink {
        namespace: "default".into(),
        name: "kubernetes".into(),
        cluster_ip: "10.96.0.1".into(),
        ports: vec![LinkPort {
            name: "https".into(),
            port: 443,
            protocol: "TCP".into(),
        }],
    });
    Catalog::with_rules(&policy.rules).with_links(links).0
}

/// The typical Pod of S1/S2: three containers with a few env vars each.
pub fn typical_pod(ns: &str, annotation: Option<&str>) -> Value {
    let container = |name: &str| {
        json!({
            "name": name, "image": "registry.example/app:1.2.3",
            "env": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "UPSTREAM", "value": "$(SVC_00001_SERVICE_HOST):80"}
            ],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
        })
    };
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d4b9c-x2x9z", "namespace": ns, "labels": {"app": "web"}},
        "spec": {"containers": [container("app"), container("proxy"), container("log")],
                 "enableServiceLinks": true}
    });
    if let Some(a) = annotation {
        pod["metadata"]["annotations"] = json!({"envlink.io/services": a});
    }
    pod
}

/// The object as the JSON text a review carries.
fn raw(object: &Value) -> Box<RawValue> {
    match serde_json::value::to_raw_value(object) {
        Ok(raw) => raw,
        Err(e) => panic!("bench object does not serialise: {e}"),
    }
}

fn request<'a>(ns: &'a str, pod: &'a RawValue) -> Request<'a> {
    Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace: ns,
        object: Some(Object::Text(pod)),
        old_object: None,
    }
}

fn bench_variables(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("namespace_variables");
    for n in [100usize, 1_000, 5_000] {
        let cat = catalog("ns", n, &policy);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // What a review does: select, then render the chosen Services' variables.
                let sel = selection::kubelet_selection(&cat.snapshot(), black_box("ns"), true);
                let mut rendered =
                    Rendered::with_capacity_for(sel.chosen.iter().map(|c| c.service.as_ref()));
                for chosen in &sel.chosen {
                    rendered.add(&chosen.service);
                }
                rendered.len()
            })
        });
    }
    group.finish();
}

fn bench_decisions(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("admission_decision");
    // Each iteration takes its snapshot, as the server does per review.
    let s1_catalog = catalog("ns", 1_000, &policy);
    let s1_pod = raw(&typical_pod(
        "ns",
        Some("svc-00001, svc-00100, svc-00200, svc-00500, svc-00999"),
    ));
    group.bench_function("S1_annotated_5_of_1000", |b| {
        b.iter(|| {
            admission::mutate(
                &request("ns", black_box(&s1_pod)),
                &s1_catalog.snapshot(),
                &policy,
                &NoConfigMaps,
            )
        })
    });
    let s2_catalog = catalog("ns", 50, &policy);
    let s2_pod = raw(&typical_pod("ns", None));
    group.bench_function("S2_default_50", |b| {
        b.iter(|| {
            admission::mutate(
                &request("ns", black_box(&s2_pod)),
                &s2_catalog.snapshot(),
                &policy,
                &NoConfigMaps,
            )
        })
    });
    group.finish();
}

fn review_bytes(pod: &Value) -> Vec<u8> {
    PodReview::create(pod).namespace("ns").to_bytes()
}

fn bench_review_codec(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("review_codec");
    let s2_catalog = catalog("ns", 50, &policy);
    let body = review_bytes(&typical_pod("ns", None));
    group.bench_function("parse_review", |b| {
        b.iter(|| serde_json::from_slice::<AdmissionReview<DynamicObject>>(black_box(&body)).ok())
    });
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => panic!("bench review does not parse: {e}"),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => panic!("bench review has no request: {e}"),
    };
    let object = raw(&serde_json::to_value(&req.object).unwrap_or_default());
    let decision = admission::mutate(
        &request("ns", &object),
        &s2_catalog.snapshot(),
        &policy,
        &NoConfigMaps,
    );
    // What the server writes for the patch: JSON straight from the catalog's variables.
    group.bench_function("write_S2_patch_json", |b| {
        b.iter(|| decision.patch.to_json().map(|v| v.len()))
    });
    // The same patch read back into json_patch values and written by serde (the slow path
    // of `envlink mutate`).
    group.bench_function("S2_patch_via_json_patch_values", |b| {
        b.iter(|| {
            decision
                .patch
                .to_patch()
                .and_then(|p| serde_json::to_vec(&p))
                .map(|v| v.len())
        })
    });
    // The whole answer for the S2 patch: kube-core's path (`with_patch` on a `json_patch`
    // value, the patch written as an array of numbers) against envlink's (the plan's JSON,
    // base64, serde-derived response).
    let kube_core_answer = || {
        let patch = decision.patch.to_patch().expect("the S2 patch encodes");
        let response = AdmissionResponse::from(&req).with_patch(patch);
        response.map(|r| serde_json::to_vec(&r.into_review()).map(|v| v.len()))
    };
    let envlink_answer = || {
        let patch = decision.patch.to_json_for_base64().unwrap_or_default();
        OutgoingResponse::patched_json(&req.uid, &patch)
            .to_review_json()
            .map(|v| v.len())
    };
    eprintln!(
        "S2 answer bytes: kube-core {:?}, envlink {:?}",
        kube_core_answer().ok().and_then(Result::ok),
        envlink_answer().ok()
    );
    group.bench_function("S2_answer_kube_core", |b| b.iter(kube_core_answer));
    group.bench_function("S2_answer_envlink", |b| b.iter(envlink_answer));
    group.finish();
}

/// The real server path, body bytes in, response bytes out: the axum Router of
/// `src/http/router.rs` called in-process (tower `oneshot`, no TLS, no socket). Unlike
/// `review_codec/S2_answer_kube_core` (kube-core's default encoding, the patch as an array
/// of numbers), this includes what the server really does: the typed decode, the object
/// re-encoded for the decision, the base64 patch, the metrics and the (disabled) tracing span.
fn bench_server_path(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let mut group = c.benchmark_group("server_path");
    let cases = [
        (
            "S1",
            1_000,
            Some("svc-00001, svc-00100, svc-00200, svc-00500, svc-00999"),
        ),
        ("S2", 50, None),
    ];
    for (name, size, annotation) in cases {
        let policy = Policy::default();
        let catalog = Arc::new(catalog("ns", size, &policy));
        let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
        let state = AppState::new(catalog, Arc::new(policy), metrics);
        let app = envlink::http::router(state.clone());
        let body = Bytes::from(review_bytes(&typical_pod("ns", annotation)));
        let call = |body: Bytes| {
            let app = app.clone();
            async move {
                let request = match http::Request::post("/mutate")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                {
                    Ok(r) => r,
                    Err(e) => panic!("request: {e}"),
                };
                let Ok(response) = app.oneshot(request).await;
                match response.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => panic!("response body: {e}"),
                }
            }
        };
        // The answer must be the patch the load test gets, not an error.
        let answer = runtime.block_on(call(body.clone()));
        assert!(
            answer.starts_with(b"{\"apiVersion\"")
                && answer.windows(9).any(|w| w == b"\"patch\":\""),
            "{name}: unexpected answer: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
        group.bench_function(format!("{name}_router"), |b| {
            b.iter(|| runtime.block_on(call(black_box(body.clone()))).len())
        });
        // The same without axum and the body plumbing: `handle_review`, what the handler
        // calls once the body is in (the fuzz targets call it too).
        let direct = handle_review(&state, Endpoint::Mutate, &body);
        assert_eq!(
            direct.body,
            answer.as_ref(),
            "{name}: handle_review differs"
        );
        group.bench_function(format!("{name}_handle_review"), |b| {
            b.iter(|| {
                handle_review(&state, Endpoint::Mutate, black_box(&body))
                    .body
                    .len()
            })
        });
    }
    // The hop the handler makes to decide on the blocking pool (`router::decide`): a task
    // handed to another thread and its result handed back, with nothing to do.
    group.bench_function("spawn_blocking_hop", |b| {
        b.iter(|| runtime.block_on(async { tokio::task::spawn_blocking(|| black_box(1u64)).await }))
    });
    group.finish();
}

fn bench_watch_event(c: &mut Criterion) {
    let cat = catalog("big", 5_000, &Policy::default());
    let mut i = 0usize;
    c.bench_function("watch_event_apply_in_5000", |b| {
        b.iter(|| {
            i = (i + 1) % 5_000;
            let mut s = service("big", i);
            s.cluster_ip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
            cat.apply(black_box(&s)).ok()
        })
    });
    // Readers hold snapshots while events arrive; the update must not depend on them.
    let held = cat.namespace("big");
    c.bench_function("watch_event_apply_in_5000_with_reader", |b| {
        b.iter(|| cat.apply(black_box(&service("big", 42))).ok())
    });
    drop(held);
}

criterion_group!(
    benches,
    bench_variables,
    bench_decisions,
    bench_review_codec,
    bench_server_path,
    bench_watch_event
);
criterion_main!(benches);
