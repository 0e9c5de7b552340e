//! Bytes → the request path of `POST /mutate` and `POST /validate` after the HTTP edge
//! (`envlink::http::router::handle_review`): decode, decide, encode. Checked on every input
//! (`envlink_fuzz::review`): the answer is JSON, never an internal error (500), an
//! AdmissionReview whenever the status is 200; and an allowed patch applies to the object
//! exactly as the API server sent it.
#![no_main]

use envlink::http::router::Endpoint;
use envlink_fuzz::Outcome;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let state = &envlink_fuzz::states()[0];
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let Some(Outcome::Allowed(patch)) = envlink_fuzz::review(state, endpoint, data) else {
            continue;
        };
        if patch.0.is_empty() {
            continue;
        }
        let Ok(review) = serde_json::from_slice::<Value>(data) else {
            panic!("a patch for a body that is not JSON");
        };
        envlink_fuzz::apply(&envlink_fuzz::as_sent(&review["request"]["object"]), &patch);
    }
});
