//! The AdmissionReview the API server sends for a Pod (and a reader of the Pod's env),
//! written once for the Rust tests,
//! benches and fuzz targets (`#[path]`-included by each: tests/*.rs, benches/admission.rs,
//! fuzz/src/lib.rs). bench/gen.py writes the same shape in Python for bench/load.sh.
//!
//! The shape is a 1.20+ API server's for a Pod CREATE by the ReplicaSet controller, with
//! every field it sends (`requestKind`, `options`, `oldObject: null`, ...). Where a review
//! must be written as text instead (tests/support/hostile.rs, for inputs of megabytes), that
//! file says so.

// Each includer uses a different part.
#![allow(dead_code)]

use serde_json::{Value, json};

/// The uid of a review unless [`PodReview::uid`] says otherwise (the one of the Kubernetes
/// documentation's example review).
pub const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// The namespace of a review unless [`PodReview::namespace`] says otherwise.
pub const NAMESPACE: &str = "shop";

/// A Pod CREATE review of `object`: `PodReview::create(&pod).namespace("ns").to_bytes()`.
#[derive(Debug, Clone, Copy)]
pub struct PodReview<'a> {
    object: &'a Value,
    uid: &'a str,
    namespace: &'a str,
}

impl<'a> PodReview<'a> {
    /// A CREATE of `object` in [`NAMESPACE`], with [`UID`].
    pub fn create(object: &'a Value) -> Self {
        PodReview {
            object,
            uid: UID,
            namespace: NAMESPACE,
        }
    }

    /// The request's uid (echoed in the answer).
    pub fn uid(self, uid: &'a str) -> Self {
        PodReview { uid, ..self }
    }

    /// The request's namespace (the Pod's, as the API server sets it).
    pub fn namespace(self, namespace: &'a str) -> Self {
        PodReview { namespace, ..self }
    }

    /// The review as a JSON value.
    pub fn to_value(self) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": self.uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": self.namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": self.object,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    }

    /// The review as the body of a POST.
    pub fn to_bytes(self) -> Vec<u8> {
        // A `Value` with string keys always serialises.
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }
}

/// A container's `env` as (name, value) pairs, `""` for a missing name or value (a
/// `valueFrom`), in order: for reading the Pod an answer's patch produced.
pub fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or("").to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
