//! criterion benchmarks of the request path's pure parts and of catalog updates.
//!
//! S1: a typical Pod (3 containers, a few env vars each) naming 5 Services by annotation in a
//!     namespace of 1,000 Services.
//! S2: the same Pod in the default mode in a namespace of 50 Services (hundreds of variables
//!     per container).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use envlink::admission::{self, Operation, Request, selection};
use envlink::catalog::Catalog;
use envlink::config::Policy;
use envlink::reserved::NoConfigMaps;
use envlink::servicelinks::{LinkPort, ServiceLink};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
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

fn catalog(ns: &str, n: usize) -> Catalog {
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
    Catalog::from_links(links).0
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

fn request<'a>(ns: &'a str, pod: &'a Value) -> Request<'a> {
    Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace: ns,
        dry_run: false,
        object: Some(pod),
        old_object: None,
    }
}

fn bench_variables(c: &mut Criterion) {
    let mut group = c.benchmark_group("namespace_variables");
    for n in [100usize, 1_000, 5_000] {
        let cat = catalog("ns", n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let sel = selection::kubelet_selection(&cat, black_box("ns"), true);
                sel.chosen
                    .iter()
                    .map(|c| c.service.variables().count())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

fn bench_decisions(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("admission_decision");
    let s1_catalog = catalog("ns", 1_000);
    let s1_pod = typical_pod(
        "ns",
        Some("svc-00001, svc-00100, svc-00200, svc-00500, svc-00999"),
    );
    group.bench_function("S1_annotated_5_of_1000", |b| {
        b.iter(|| {
            admission::mutate(
                &request("ns", black_box(&s1_pod)),
                &s1_catalog,
                &policy,
                &NoConfigMaps,
            )
        })
    });
    let s2_catalog = catalog("ns", 50);
    let s2_pod = typical_pod("ns", None);
    group.bench_function("S2_default_50", |b| {
        b.iter(|| {
            admission::mutate(
                &request("ns", black_box(&s2_pod)),
                &s2_catalog,
                &policy,
                &NoConfigMaps,
            )
        })
    });
    group.finish();
}

fn review_bytes(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap_or_default()
}

fn bench_review_codec(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("review_codec");
    let s2_catalog = catalog("ns", 50);
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
    let object = serde_json::to_value(&req.object).unwrap_or_default();
    let decision = admission::mutate(&request("ns", &object), &s2_catalog, &policy, &NoConfigMaps);
    // The server moves the patch into the response; cloning it is setup, not measured.
    group.bench_function("serialize_S2_response", |b| {
        b.iter_batched(
            || decision.patch.clone(),
            |patch| {
                let response = AdmissionResponse::from(&req).with_patch(patch);
                response
                    .ok()
                    .map(|r| serde_json::to_vec(&r.into_review()).map(|v| v.len()))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_watch_event(c: &mut Criterion) {
    let cat = catalog("big", 5_000);
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
    bench_watch_event
);
criterion_main!(benches);
