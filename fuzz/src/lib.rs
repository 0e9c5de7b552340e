//! What the fuzz targets share: a small static catalog, a few policies, and the invariants
//! checked on every decision. Every check panics on violation, which libFuzzer reports as a
//! crash (and saves the input under `fuzz/artifacts/<target>/`).
//!
//! Decisions are taken through `envlink::http::router::handle_review`, the path of the
//! `/mutate` and `/validate` handlers after the HTTP edge: the patch checked is the one the
//! API server would receive (base64 on the wire), applied to the object as it was sent.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use envlink::catalog::{Catalog, file};
use envlink::config::Policy;
use envlink::http::router::{Endpoint, handle_review};
use envlink::http::{AppState, Metrics, ScrapeSources};
use serde_json::{Value, json};

// The review builder the main crate's tests and benches use (this crate is outside their
// workspace, so it takes the file by path rather than through a shared crate).
#[path = "../../tests/support/review.rs"]
mod review;

/// The `--dev` catalog (namespaces `default` and `shop`) plus a namespace `prod` with a `db`
/// and one that defines its own `kubernetes`, so cross-namespace references and the
/// `kubernetes` override are reachable, and a Service whose variables start with a reserved
/// name's prefix.
const EXTRA_SERVICES: &str = r#"
apiVersion: v1
kind: List
items:
  - metadata: {name: db, namespace: prod}
    spec: {clusterIP: 10.96.9.9, ports: [{port: 5432}]}
  - metadata: {name: kubernetes, namespace: own}
    spec: {clusterIP: 10.96.7.7, ports: [{port: 6443, name: https}]}
  - metadata: {name: nvidia-visible-devices, namespace: shop}
    spec: {clusterIP: 10.96.7.9, ports: [{port: 80}]}
"#;

/// The shared catalog.
pub fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG
        .get_or_init(|| {
            let mut links = file::parse_services(file::EMBEDDED_CATALOG, "embedded", "default")
                .expect("embedded catalog");
            links.extend(file::parse_services(EXTRA_SERVICES, "extra", "default").expect("extra"));
            let (catalog, errors) = Catalog::from_links(links);
            assert!(errors.is_empty(), "{errors:?}");
            Arc::new(catalog)
        })
        .clone()
}

/// A server state for this catalog and policy.
pub fn state(catalog: Arc<Catalog>, policy: Policy) -> AppState {
    let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
    AppState::new(catalog, Arc::new(policy), metrics)
}

/// States with the shared catalog and: the built-in policy (deny), variants that strip and
/// warn, one that injects only on request (with cross-namespace references and warnings for
/// missing Services), and one with a tiny variable limit.
pub fn states() -> &'static [AppState] {
    static STATES: OnceLock<Vec<AppState>> = OnceLock::new();
    STATES.get_or_init(|| {
        let texts = [
            "",
            "reserved: {defaultAction: strip, rules: [{name: x, resources: ['example.com/*'], \
             prefixes: [EXAMPLE_], scope: all, action: strip}]}",
            "reserved: {defaultAction: warn}",
            "services: {mode: annotated, allowCrossNamespace: true, onMissing: warn}",
            "services: {maxVariables: 5, disableServiceLinks: false}",
        ];
        texts
            .iter()
            .map(|t| {
                state(
                    catalog(),
                    Policy::from_yaml(t, "fuzz").expect("fuzz policy"),
                )
            })
            .collect()
    })
}

/// An AdmissionReview of a Pod CREATE, as the API server sends it.
pub fn pod_review(namespace: &str, object: &Value) -> Vec<u8> {
    review::PodReview::create(object)
        .uid("f0220000-0000-4000-8000-000000000001")
        .namespace(namespace)
        .to_bytes()
}

/// What one review got.
#[derive(Debug)]
pub enum Outcome {
    /// Allowed, with the patch (empty: no change).
    Allowed(json_patch::Patch),
    /// `allowed: false`, with the status code (403 denied, 400 invalid).
    Refused(i64),
}

/// Sends `review` through the handlers' path and checks the envelope: JSON, never a 500,
/// a 200 is an AdmissionReview with the uid (when the review had one).
pub fn review(state: &AppState, endpoint: Endpoint, body: &[u8]) -> Option<Outcome> {
    let answer = handle_review(state, endpoint, body);
    let value: Value = match serde_json::from_slice(&answer.body) {
        Ok(value) => value,
        Err(e) => panic!("the answer is not JSON ({e}): {:?}", answer.body),
    };
    match answer.status.as_u16() {
        200 => {}
        400 => {
            assert_eq!(value["kind"], "Status", "{value}");
            assert_eq!(value["code"], 400, "{value}");
            return None;
        }
        other => panic!("HTTP {other} for a review body: {value}"),
    }
    assert_eq!(value["apiVersion"], "admission.k8s.io/v1", "{value}");
    assert_eq!(value["kind"], "AdmissionReview", "{value}");
    let response = &value["response"];
    assert!(response["uid"].is_string(), "{value}");
    match response["allowed"].as_bool() {
        Some(true) => {}
        Some(false) => {
            assert!(
                response.get("patch").is_none(),
                "a refusal carries a patch: {value}"
            );
            return Some(Outcome::Refused(
                response["status"]["code"].as_i64().unwrap_or(0),
            ));
        }
        None => panic!("no `allowed`: {value}"),
    }
    let Some(patch) = response["patch"].as_str() else {
        return Some(Outcome::Allowed(json_patch::Patch(Vec::new())));
    };
    assert_eq!(response["patchType"], "JSONPatch", "{value}");
    let bytes = BASE64_STANDARD.decode(patch).expect("the patch is base64");
    let patch: json_patch::Patch = match serde_json::from_slice(&bytes) {
        Ok(patch) => patch,
        Err(e) => panic!(
            "the patch is not an RFC 6902 JSON Patch ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    Some(Outcome::Allowed(patch))
}

/// The object as the API server sends it: a Pod always has `metadata` (an object), since the
/// API server decodes it into its typed struct before sending. envlink decides on that typed
/// view (kube-core's `DynamicObject`, whose `metadata` is never absent), so a patch for an
/// object without `metadata` adds to `/metadata/...` — correct for every object the API
/// server can send, not for a hand-made one without `metadata`.
pub fn as_sent(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut()
        && map.get("metadata").is_none_or(Value::is_null)
    {
        map.insert("metadata".into(), json!({}));
    }
    object
}

/// Applies `patch` to a copy of `object`; panics when it does not apply.
pub fn apply(object: &Value, patch: &json_patch::Patch) -> Value {
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, patch) {
        panic!(
            "the patch does not apply: {e}\npatch: {}\nobject: {object}",
            serde_json::to_string(patch).unwrap_or_default()
        );
    }
    patched
}

/// The mutating decision on a Pod, with its invariants:
///
/// - an allowed Pod's patch applies to the Pod as sent;
/// - running again on the patched Pod is allowed and changes nothing (idempotency: the API
///   server may reinvoke envlink on its own output);
/// - the validating webhook does not refuse what the mutating webhook let through (envlink
///   never injects a reserved name), for Pods without ephemeral containers (which only the
///   validating webhook checks on CREATE).
pub fn check_pod(object: &Value, state: &AppState) {
    let object = &as_sent(object);
    for namespace in ["shop", "default"] {
        let Some(Outcome::Allowed(first)) =
            review(state, Endpoint::Mutate, &pod_review(namespace, object))
        else {
            continue;
        };
        let patched = apply(object, &first);
        let again = review(state, Endpoint::Mutate, &pod_review(namespace, &patched));
        match &again {
            Some(Outcome::Allowed(second)) => assert!(
                second.0.is_empty(),
                "not idempotent: the second run patches again\nfirst: {}\nsecond: {}\nobject: \
                 {object}",
                serde_json::to_string(&first).unwrap_or_default(),
                serde_json::to_string(second).unwrap_or_default()
            ),
            other => panic!(
                "a second run does not admit the output of the first: {other:?}\nfirst patch: \
                 {}\nobject: {object}",
                serde_json::to_string(&first).unwrap_or_default()
            ),
        }
        let has_ephemeral = patched
            .pointer("/spec/ephemeralContainers")
            .is_some_and(|v| !v.is_null());
        if !has_ephemeral {
            let checked = review(state, Endpoint::Validate, &pod_review(namespace, &patched));
            assert!(
                !matches!(checked, Some(Outcome::Refused(403))),
                "/validate refuses what /mutate admitted\nfirst patch: {}\nobject: {object}",
                serde_json::to_string(&first).unwrap_or_default()
            );
        }
    }
}
