//! The admission endpoints and their strict edge.
//!
//! What a caller gets back, decided on purpose:
//!
//! | input | answer |
//! |---|---|
//! | wrong `Content-Type` (not `application/json`, optionally `; charset=utf-8`) | HTTP 415 |
//! | body over `--max-body-bytes` | HTTP 413 |
//! | body not received within `--request-timeout` | HTTP 408 |
//! | body not UTF-8, not JSON, not an object, not `admission.k8s.io/v1` `AdmissionReview`, no `request`, or a `request` that does not decode | HTTP 400 with a short `Status` JSON — **but** when a non-empty `request.uid` can be read from the JSON, HTTP 200 with an AdmissionReview echoing the uid, `allowed: false`, status code 400 and the same message |
//! | a review whose object the policy cannot use (`Verdict::Invalid`) | HTTP 200, `allowed: false`, status code 400 |
//! | a denial (`Verdict::Deny`) | HTTP 200, `allowed: false`, status code 403 |
//! | allowed (with or without a patch) | HTTP 200, `allowed: true`, patch and warnings |
//! | an internal failure (a patch or response that does not serialise) | HTTP 500, generic text; details only in the log |
//!
//! An HTTP error means "envlink could not judge this": the API server then applies the
//! webhook's `failurePolicy`. `allowed: false` means "envlink judged, and refuses". A request
//! whose uid is known is always answered in the AdmissionReview form, so the API server's
//! error names envlink's reason instead of a bare HTTP status. Messages describe the input
//! only; internal error text is logged, never sent.

use std::borrow::Cow;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::core::admission::{AdmissionResponse, Operation as KubeOperation};
use kube::core::{GroupVersionKind, Status};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;
use tracing::field::Empty;

use crate::admission::{self, Decision, Operation, Verdict};
use crate::http::AppState;
use crate::http::health;
use crate::http::metrics::Endpoint;

/// The only review version envlink speaks.
const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

/// Longest piece of caller-supplied text repeated in an error message.
const ECHO_LIMIT: usize = 200;

/// The HTTPS router: `POST /mutate`, `POST /validate`, `GET /healthz`, `GET /readyz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    review(state, Endpoint::Mutate, request).await
}

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    review(state, Endpoint::Validate, request).await
}

/// An answer that is not an AdmissionReview.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Logs `detail` (which may hold internal error text) and answers 500 without it.
    fn internal(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "envlink: internal error; see the envlink logs",
        )
    }
}

impl HttpError {
    /// The JSON body: a metav1 Status, what Kubernetes clients expect an error to look like.
    fn body(&self) -> Vec<u8> {
        let reason = match self.status {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::REQUEST_TIMEOUT => "Timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            _ => "InternalError",
        };
        let body = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": reason,
            "code": self.status.as_u16(),
        });
        // A `Value` of strings and numbers always serialises.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A review answered in AdmissionReview form.
struct Reply {
    body: Vec<u8>,
    label: &'static str,
}

async fn review(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    // The span carries what identifies the review for any line logged while answering it;
    // the rest goes on the one `review answered` event. (Every `record` on a span makes the
    // formatter re-render its fields: a handful per review was a tenth of the request path.)
    let span = tracing::info_span!("review", endpoint = endpoint.as_str(), uid = Empty);
    let limits = state.limits;
    let mut summary = Summary::default();
    let result = async {
        check_headers(request.headers(), limits.max_body_bytes)?;
        let body = read_body(
            request.into_body(),
            limits.max_body_bytes,
            limits.request_timeout,
        )
        .await?;
        answer(&state, endpoint, &body, &mut summary)
    }
    .instrument(span.clone())
    .await;
    let elapsed = started.elapsed();
    if let Err(error) = &result {
        span.in_scope(|| {
            // `error`, not `message`: JSON lines already have a `message` key.
            tracing::info!(status = error.status.as_u16(), error = %error.message,
                "review refused at the HTTP level");
        });
    }
    let answer = ReviewAnswer::new(result);
    let label = answer.label;
    let response = (
        answer.status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body,
    )
        .into_response();
    state.metrics.observe_review(endpoint, label, elapsed);
    span.in_scope(|| {
        tracing::info!(
            namespace = summary.namespace,
            // Not `name`: JSON logs already use that key for the span's name.
            object_name = summary.object_name,
            operation = summary.operation,
            kind = summary.kind,
            decision = label,
            patch_bytes = summary.patch_bytes,
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "review answered"
        );
    });
    response
}

/// What the `review answered` line says about the object (empty when the body was not a
/// readable review).
#[derive(Debug, Default)]
struct Summary {
    namespace: String,
    object_name: String,
    operation: &'static str,
    kind: String,
    patch_bytes: u64,
}

/// What envlink answers to one complete review body: the HTTP status, the JSON body and the
/// metrics label (`allowed`, `patched`, `denied`, `invalid` or `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewAnswer {
    /// 200 for an AdmissionReview answer; 400 or 500 for an HTTP error.
    pub status: StatusCode,
    /// An AdmissionReview, or a `Status` for an HTTP error; always JSON.
    pub body: Vec<u8>,
    /// The decision label used in metrics and logs.
    pub label: &'static str,
}

impl ReviewAnswer {
    fn new(result: Result<Reply, HttpError>) -> Self {
        match result {
            Ok(reply) => Self {
                status: StatusCode::OK,
                body: reply.body,
                label: reply.label,
            },
            Err(error) => Self {
                status: error.status,
                body: error.body(),
                label: "error",
            },
        }
    }
}

/// The request path after the HTTP edge (content type, size limit and deadline already
/// passed): decode the review, decide, encode the answer. Exactly what the `/mutate` and
/// `/validate` handlers send for this body; pure apart from the metrics it updates, so the
/// fuzz targets and tests call it directly.
pub fn handle_review(state: &AppState, endpoint: Endpoint, body: &[u8]) -> ReviewAnswer {
    ReviewAnswer::new(answer(state, endpoint, body, &mut Summary::default()))
}

/// Content type and declared length, before any of the body is read.
fn check_headers(headers: &HeaderMap, max_body_bytes: usize) -> Result<(), HttpError> {
    if !is_json(headers.get(header::CONTENT_TYPE)) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "envlink: Content-Type must be application/json",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        return Err(too_large(max_body_bytes));
    }
    Ok(())
}

/// `application/json`, with at most a `charset=utf-8` parameter (JSON is UTF-8 by RFC 8259).
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(text) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|param| {
            let param = param.trim();
            param.is_empty()
                || param.split_once('=').is_some_and(|(key, value)| {
                    key.trim().eq_ignore_ascii_case("charset")
                        && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
                })
        })
}

fn too_large(max_body_bytes: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("envlink: the request body is larger than {max_body_bytes} bytes"),
    )
}

/// Reads the body within the size limit and the deadline: a client that never finishes its
/// body gets 408 instead of holding the connection.
async fn read_body(
    body: Body,
    max_body_bytes: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, HttpError> {
    match tokio::time::timeout(timeout, Limited::new(body, max_body_bytes).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large(max_body_bytes))
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body could not be read");
            Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "envlink: the request body could not be read",
            ))
        }
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "envlink: the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// Why a body is not a usable review; `uid` is set when one could be read.
struct Rejection {
    uid: Option<String>,
    message: String,
}

/// The synchronous part: decode, decide, encode. No I/O and no lock held across it.
fn answer(
    state: &AppState,
    endpoint: Endpoint,
    body: &[u8],
    summary: &mut Summary,
) -> Result<Reply, HttpError> {
    let span = tracing::Span::current();
    let text = std::str::from_utf8(body).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "envlink: the request body is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let request = match parse_review(text) {
        Ok(parsed) => parsed,
        Err(Rejection {
            uid: Some(uid),
            message,
        }) => {
            span.record("uid", uid.as_str());
            return encode(invalid_response(&uid, &message), "invalid");
        }
        Err(Rejection { uid: None, message }) => {
            return Err(HttpError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    let kind = &request.kind;
    span.record("uid", request.uid.as_str());
    summary
        .namespace
        .push_str(request.namespace.as_deref().unwrap_or(""));
    summary.object_name.push_str(&request.name);
    summary.operation = operation_name(&request.operation);
    if !kind.group.is_empty() {
        summary.kind.push_str(&kind.group);
        summary.kind.push('/');
    }
    summary.kind.push_str(&kind.kind);

    let input = admission::Request {
        operation: operation(&request.operation),
        group: &kind.group,
        kind: &kind.kind,
        sub_resource: request.sub_resource.as_deref(),
        namespace: request.namespace.as_deref().unwrap_or(""),
        dry_run: request.dry_run,
        object: request.object.as_ref(),
        old_object: request.old_object.as_ref(),
    };
    let decision = match endpoint {
        Endpoint::Mutate => admission::mutate(
            &input,
            &state.catalog,
            &state.policy,
            state.config_maps.as_ref(),
        ),
        Endpoint::Validate => {
            admission::validate(&input, &state.policy, state.config_maps.as_ref())
        }
    };
    // Only when this answer changes the Pod: a reinvocation on envlink's own output would
    // otherwise count the same Pod twice.
    if decision.injected.is_some() && !decision.patch.is_empty() {
        state.metrics.observe_injected(decision.variables);
    }
    let label = decision.label();
    let response = to_response(&request.uid, decision)?;
    summary.patch_bytes = response.patch.as_ref().map_or(0, |p| p.len() as u64);
    encode(response, label)
}

/// The AdmissionReview as sent. kube-core's `AdmissionResponse` serialises its patch bytes
/// as a JSON array of numbers; the API server accepts that, but the canonical encoding of
/// Go's `[]byte` (what the API server and every Go webhook produce) is a base64 string,
/// which is also 2–3 times smaller and faster to write. So the patch goes out as base64.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    #[serde(flatten)]
    response: &'a AdmissionResponse,
}

fn encode(mut response: AdmissionResponse, label: &'static str) -> Result<Reply, HttpError> {
    let patch = response.patch.take();
    let wire = WireReview {
        api_version: REVIEW_API_VERSION,
        kind: REVIEW_KIND,
        response: WireResponse {
            response: &response,
        },
    };
    let mut body = Vec::with_capacity(512 + patch.as_ref().map_or(0, |p| p.len() * 4 / 3 + 4));
    serde_json::to_writer(&mut body, &wire)
        .map_err(|e| HttpError::internal("AdmissionReview does not serialise", &e))?;
    if let Some(patch) = patch {
        // A patch is up to a few hundred KiB; base64 never needs JSON escaping, so it is
        // encoded straight into the body instead of through serde's string escaper (which
        // was a quarter of the request path for large patches). The review ends in `}}`
        // (the response object, then the review): the patch goes inside the first.
        if !body.ends_with(b"}}") {
            return Err(HttpError::internal(
                "AdmissionReview does not serialise",
                &"unexpected end of the serialised review",
            ));
        }
        body.truncate(body.len() - 2);
        body.extend_from_slice(br#","patch":""#);
        let start = body.len();
        let encoder = base64_simd::STANDARD;
        body.resize(start + encoder.encoded_length(patch.len()), 0);
        let written = encoder
            .encode(&patch, base64_simd::Out::from_slice(&mut body[start..]))
            .len();
        body.truncate(start + written);
        body.extend_from_slice(br#""}}"#);
    }
    Ok(Reply { body, label })
}

/// Decision → AdmissionResponse, with the request's uid and review version.
fn to_response(uid: &str, decision: Decision) -> Result<AdmissionResponse, HttpError> {
    let warnings = (!decision.warnings.is_empty()).then_some(decision.warnings);
    let mut response = match decision.verdict {
        Verdict::Allow if decision.patch.is_empty() => allowed_response(uid),
        Verdict::Allow => {
            // The plan writes its JSON straight from the catalog's variables (see
            // `admission::patch`); an empty `with_patch` sets the patch type, which kube-core
            // keeps private, and the bytes go in its place.
            let bytes = decision
                .patch
                .to_json()
                .map_err(|e| HttpError::internal("patch does not serialise", &e))?;
            let mut response = allowed_response(uid)
                .with_patch(json_patch::Patch(Vec::new()))
                .map_err(|e| HttpError::internal("patch does not serialise", &e))?;
            response.patch = Some(bytes);
            response
        }
        Verdict::Deny(message) => {
            let mut response = allowed_response(uid).deny(&message);
            response.result = Status::failure(&message, "Forbidden").with_code(403);
            response
        }
        Verdict::Invalid(message) => invalid_response(uid, &message),
    };
    response.warnings = warnings;
    Ok(response)
}

/// A judged-invalid answer: `allowed: false`, the uid echoed, status code 400.
fn invalid_response(uid: &str, message: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(message);
    response.uid = uid.to_string();
    response.result.code = 400;
    response
}

/// What kube-core's `AdmissionResponse::from(&AdmissionRequest)` makes, for a request envlink
/// decoded itself: allowed, the uid echoed, an empty result, no patch, no warnings.
fn allowed_response(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_string();
    response.allowed = true;
    response.result = Status::default();
    response
}

fn operation(op: &KubeOperation) -> Operation {
    match op {
        KubeOperation::Create => Operation::Create,
        KubeOperation::Update => Operation::Update,
        KubeOperation::Delete => Operation::Delete,
        KubeOperation::Connect => Operation::Connect,
    }
}

fn operation_name(op: &KubeOperation) -> &'static str {
    match op {
        KubeOperation::Create => "CREATE",
        KubeOperation::Update => "UPDATE",
        KubeOperation::Delete => "DELETE",
        KubeOperation::Connect => "CONNECT",
    }
}

/// What envlink reads of an `admission.k8s.io/v1` AdmissionReview's `request`, decoded
/// straight from the body in one pass. `object` and `oldObject` stay JSON (the decision reads
/// plain JSON); `resource` and `userInfo` are required, as kube-core's `AdmissionRequest`
/// requires them, but skipped unread.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(rename = "resource")]
    _resource: IgnoredAny,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: KubeOperation,
    #[serde(rename = "userInfo")]
    _user_info: IgnoredAny,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
    #[serde(default)]
    dry_run: bool,
}

/// The review around it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingReview {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<IncomingRequest>,
}

/// A usable review: a v1 AdmissionReview with a request (`null` objects are `None`).
fn parse_review(text: &str) -> Result<IncomingRequest, Rejection> {
    if let Ok(review) = serde_json::from_str::<IncomingReview>(text)
        && review.api_version == REVIEW_API_VERSION
        && review.kind == REVIEW_KIND
        && let Some(mut request) = review.request
    {
        request.object = request.object.filter(|o| !o.is_null());
        request.old_object = request.old_object.filter(|o| !o.is_null());
        return Ok(request);
    }
    Err(diagnose(text))
}

fn diagnose(text: &str) -> Rejection {
    let no_uid = |message: String| Rejection { uid: None, message };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        // serde_json's message describes the input ("EOF while parsing ... at line 1 column
        // 20"), not envlink's internals.
        Err(e) => return no_uid(format!("envlink: the request body is not valid JSON ({e})")),
    };
    let Some(object) = value.as_object() else {
        return no_uid(format!(
            "envlink: the request body is a JSON {}, not an AdmissionReview object",
            json_type(&value)
        ));
    };
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .filter(|uid| !uid.is_empty())
        .map(str::to_string);
    let rejection = |message: String| Rejection {
        uid: uid.clone(),
        message,
    };
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != REVIEW_API_VERSION || kind != REVIEW_KIND {
        return rejection(format!(
            "envlink: expected apiVersion {REVIEW_API_VERSION:?} and kind {REVIEW_KIND:?}, got \
             apiVersion {:?} and kind {:?} (configure admissionReviewVersions: [v1])",
            clip(api_version),
            clip(kind)
        ));
    }
    if object.get("request").is_none_or(Value::is_null) {
        return rejection("envlink: the AdmissionReview has no `request`".into());
    }
    match serde_path_to_error::deserialize::<_, IncomingReview>(&value) {
        Err(e) => rejection(format!(
            "envlink: the AdmissionReview does not decode: at `{}`: {}",
            clip(&e.path().to_string()),
            clip(&e.inner().to_string())
        )),
        // Unreachable in practice: the fast path decoded nothing this decodes.
        Ok(_) => rejection("envlink: the AdmissionReview could not be read".into()),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most [`ECHO_LIMIT`] bytes of caller-supplied text, cut at a character boundary.
fn clip(text: &str) -> Cow<'_, str> {
    if text.len() <= ECHO_LIMIT {
        return Cow::Borrowed(text);
    }
    let mut end = ECHO_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
        ];
        for text in ok {
            assert!(is_json(Some(&HeaderValue::from_static(text))), "{text}");
        }
        let bad = [
            "text/plain",
            "application/json; charset=latin1",
            "application/json-patch+json",
            "application/yaml",
            "",
        ];
        for text in bad {
            assert!(!is_json(Some(&HeaderValue::from_static(text))), "{text}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        let long = "é".repeat(150);
        let clipped = clip(&long);
        assert!(clipped.len() <= ECHO_LIMIT + 3);
        assert!(clipped.ends_with("..."));
        assert_eq!(clip("short"), "short");
    }
}
