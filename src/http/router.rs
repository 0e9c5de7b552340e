//! The admission endpoints and their strict edge.
//!
//! What a caller gets back, decided on purpose:
//!
//! | input | answer |
//! |---|---|
//! | wrong `Content-Type` (not `application/json`, optionally `; charset=utf-8`) | HTTP 415 |
//! | body over `--max-body-bytes` | HTTP 413 |
//! | body not received within `--request-timeout` | HTTP 408 |
//! | no room in the in-flight body budget, no decision slot, or no decision, within `--request-timeout` | HTTP 503 |
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
//!
//! The body limit and the deadline are written here rather than taken from tower-http
//! (`RequestBodyLimitLayer`, `TimeoutLayer`), because the answers above are not theirs:
//! those layers answer 413 and 408 with their own plain-text bodies, not the `Status` JSON
//! with envlink's message; a timeout there drops the handler, while here one deadline
//! covers the body (408), the wait for the budgets and the decision (503), and a decision
//! on the blocking pool runs on holding its budget; the body is counted against the
//! in-flight budget (`--max-inflight-body-bytes`) as it is read; and on HTTP/2 an early
//! answer first drains the rest of the body (see `receive`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use kube::core::{ListMeta, Status};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{self, Decision, Operation, Verdict};
use crate::http::AppState;
use crate::http::health;
use crate::http::wire::{self, IncomingRequest, OutgoingResponse, Rejection};
use crate::text;

/// The admission endpoints, as routes and as metric and log labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /mutate`.
    Mutate,
    /// `POST /validate`.
    Validate,
}

impl Endpoint {
    /// `mutate` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// The HTTPS router: `POST /mutate`, `POST /validate`, `GET /healthz`, `GET /readyz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // One `Arc` for the whole state: a review clones one pointer instead of each of the
        // state's shared parts (a dozen atomic increments and decrements per review).
        .with_state(Arc::new(state))
}

async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    review(state, Endpoint::Mutate, request).await
}

async fn validate(State(state): State<Arc<AppState>>, request: Request) -> Response {
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
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "InternalError",
        };
        let mut status = Status::failure(&self.message, reason).with_code(self.status.as_u16());
        status.metadata = Some(ListMeta::default());
        // kube-core's `Status` leaves out the type fields a top-level object carries.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct TopLevel<'a> {
            kind: &'static str,
            api_version: &'static str,
            #[serde(flatten)]
            status: &'a Status,
        }
        let body = TopLevel {
            kind: "Status",
            api_version: "v1",
            status: &status,
        };
        // Strings and numbers always serialise.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A review answered in AdmissionReview form.
struct Reply {
    body: Vec<u8>,
    label: &'static str,
}

async fn review(state: Arc<AppState>, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    // One deadline for the whole review, from its request head on: the body, the wait for
    // the budgets and the decision all come out of it.
    let deadline = tokio::time::Instant::now() + state.limits.request_timeout;
    // No span per review: the lines below are the only ones logged while answering it (the
    // decision logs nothing), so each carries `endpoint` (and the answered line `uid`)
    // itself. A span cost a slab entry, its fields rendered at creation and again on
    // `record("uid")`, and an enter/exit per poll: about 3 µs of a 45 µs review under load
    // on the Intel machine (BENCHMARKS.md, issue 16).
    let (result, summary) = receive(&state, endpoint, request, deadline).await;
    let elapsed = started.elapsed();
    if let Err(error) = &result {
        // `error`, not `message`: JSON lines already have a `message` key.
        tracing::info!(endpoint = endpoint.as_str(), status = error.status.as_u16(),
            error = %error.message, "review refused at the HTTP level");
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
    if let Some(variables) = summary.injected {
        state.metrics.observe_injected(variables);
    }
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = summary.uid,
        namespace = summary.namespace,
        object_name = summary.object_name,
        operation = summary.operation,
        kind = summary.kind,
        decision = label,
        patch_bytes = summary.patch_bytes,
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "review answered"
    );
    response
}

/// Reads the body and has it decided, within `deadline`.
async fn receive(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    request: Request,
    deadline: tokio::time::Instant,
) -> (Result<Reply, HttpError>, Summary) {
    let limits = state.limits;
    let (parts, body) = request.into_parts();
    // On HTTP/2 an answer sent before the client has finished sending its body is followed
    // by RST_STREAM(NO_ERROR), which some clients (curl) report as a framing error instead
    // of showing the answer. So before an early answer the rest of the body is read and
    // thrown away (costing no memory), up to twice `max_body_bytes` in all and within the
    // deadline; a client that sends more than that gets the answer and a reset (RFC 9113
    // allows it). HTTP/1.1 needs none of it: hyper closes the connection after such an
    // answer, and a client that waits for `100 Continue` must not be made to send a body
    // that is refused.
    let drain = parts.version == Version::HTTP_2;
    let declared = match check_headers(&parts.headers, limits.max_body_bytes) {
        Ok(declared) => declared,
        Err(error) => {
            let beyond_any_drain = error.status == StatusCode::PAYLOAD_TOO_LARGE
                && declared_length(&parts.headers)
                    .is_some_and(|n| n > 2 * limits.max_body_bytes as u64);
            if drain && !beyond_any_drain {
                discard(body, 2 * limits.max_body_bytes, deadline).await;
            }
            return (Err(error), Summary::default());
        }
    };
    let budget = state.budgets.body_bytes.clone();
    let body = match read_body(
        body,
        &budget,
        declared,
        limits.max_body_bytes,
        (deadline, limits.request_timeout),
    )
    .await
    {
        Ok(body) => body,
        Err(Refused { error, rest }) => {
            if let (true, Some(rest)) = (drain, rest) {
                discard(rest, limits.max_body_bytes, deadline).await;
            }
            return (Err(error), Summary::default());
        }
    };
    decide(state, endpoint, body, deadline).await
}

/// Bodies up to this size are decided on the async worker that read them; larger ones on
/// the blocking pool. The decision is linear in its input, so a review this small is decided
/// in well under a millisecond, and the hop to the blocking pool (a thread wake-up each way:
/// measured at 10–20 µs on a loaded 2-core machine, as much as the whole in-process request
/// path of a typical review) would cost more than it protects. Ordinary reviews from the API
/// server are a few KiB to a few tens of KiB.
const INLINE_DECISION_BYTES: usize = 64 * 1024;

/// Decides a review, at most `--max-concurrent-reviews` at once and within the deadline. A
/// large one runs on the blocking pool, so a review that is expensive to decide cannot hold
/// up the async workers that answer `/healthz`, `/readyz` and read other reviews' bodies;
/// a small one runs inline (see [`INLINE_DECISION_BYTES`]).
///
/// A blocking task cannot be cancelled: when the deadline passes first, the caller gets 503
/// at once, but the decision runs on to its end, keeping its decision slot and its body
/// bytes until then, so the bound on work in progress holds even for reviews nobody waits
/// for any more. (The decision is linear in its input, so this is a backstop.)
async fn decide(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    body: ReadBody,
    deadline: tokio::time::Instant,
) -> (Result<Reply, HttpError>, Summary) {
    let timeout_ms = state.limits.request_timeout.as_millis();
    let busy = |why: &str| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "envlink: the review could not be decided within the request timeout \
                 ({timeout_ms} ms): {why}; the webhook's failurePolicy applies"
            ),
        )
    };
    let decisions = state.budgets.decisions.clone();
    let slot = match tokio::time::timeout_at(deadline, decisions.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        // Closed: never, the semaphore lives as long as the state.
        Ok(Err(_)) | Err(_) => {
            let why = "too many reviews at once (--max-concurrent-reviews)";
            return (Err(busy(why)), Summary::default());
        }
    };
    if body.bytes.len() <= INLINE_DECISION_BYTES {
        let _held = (slot, body.permit);
        let mut summary = Summary::default();
        let result = answer(state, endpoint, &body.bytes, &mut summary);
        return (result, summary);
    }
    let task_state = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        // Both held until the work is really over (see above).
        let _held = (slot, body.permit);
        let mut summary = Summary::default();
        let result = answer(&task_state, endpoint, &body.bytes, &mut summary);
        (result, summary)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => (
            Err(HttpError::internal("the decision task failed", &error)),
            Summary::default(),
        ),
        Err(_) => {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                timeout_ms =
                    u64::try_from(state.limits.request_timeout.as_millis()).unwrap_or(u64::MAX),
                "a review was not decided within the request timeout; answered 503, the \
                 decision runs on in the background"
            );
            (Err(busy("deciding it took too long")), Summary::default())
        }
    }
}

/// What the `review answered` line says about the object (empty when the body was not a
/// readable review), and what the handler records in the metrics beyond the label.
#[derive(Debug, Default)]
struct Summary {
    /// The request's uid (at most `wire::UID_LIMIT` bytes: longer ones are refused unread).
    uid: String,
    namespace: String,
    object_name: String,
    operation: &'static str,
    kind: String,
    patch_bytes: u64,
    /// Variables injected, when this answer injects them.
    injected: Option<usize>,
}

impl Summary {
    /// Names in the log line are clipped: a hostile caller may send megabytes in them.
    fn describe(&mut self, request: &IncomingRequest<'_>) {
        let clip = |text: &str| text::clip(text, text::ECHO_LIMIT).into_owned();
        self.uid = request.uid.clone().into_owned();
        self.namespace = clip(request.namespace.as_deref().unwrap_or(""));
        self.object_name = clip(&request.name);
        self.operation = operation_name(&request.operation);
        self.kind = if request.kind.group.is_empty() {
            clip(&request.kind.kind)
        } else {
            format!("{}/{}", clip(&request.kind.group), clip(&request.kind.kind))
        };
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
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
/// `/validate` handlers send for this body. It updates no metrics (the handlers record the
/// label, the latency and the injected count from what it returns) and takes no budget or
/// slot; it reads the catalog and logs under the current span. So the fuzz targets, benches
/// and tests call it directly.
pub fn handle_review(state: &AppState, endpoint: Endpoint, body: &[u8]) -> ReviewAnswer {
    ReviewAnswer::new(answer(state, endpoint, body, &mut Summary::default()))
}

/// Content type and declared length, before any of the body is read; the declared length
/// when there is one.
fn check_headers(headers: &HeaderMap, max_body_bytes: usize) -> Result<Option<u64>, HttpError> {
    if !is_json(headers.get(header::CONTENT_TYPE)) {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "envlink: Content-Type must be application/json",
        ));
    }
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        return Err(too_large(max_body_bytes));
    }
    Ok(declared)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
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

/// A request body read in full, and its share of the in-flight body budget.
struct ReadBody {
    bytes: Vec<u8>,
    permit: OwnedSemaphorePermit,
}

/// Why a body was not read, and the unread rest of it when there is one.
struct Refused {
    error: HttpError,
    rest: Option<Body>,
}

impl From<HttpError> for Refused {
    fn from(error: HttpError) -> Self {
        Self { error, rest: None }
    }
}

/// Reads the body within the size limit and the deadline, after taking its share of the
/// in-flight body budget: the declared length, or — without one — the largest body allowed,
/// trimmed to what was read once it is in. One acquisition per request, never more while
/// holding some: two bodies each holding part of the budget and waiting for the rest could
/// otherwise block each other until the deadline. (The API server always declares the
/// length.) A client that never finishes its body gets 408 instead of holding the
/// connection; a budget that does not free up in time gets 503.
async fn read_body(
    mut body: Body,
    budget: &Arc<Semaphore>,
    declared: Option<u64>,
    max_body_bytes: usize,
    (deadline, request_timeout): (tokio::time::Instant, std::time::Duration),
) -> Result<ReadBody, Refused> {
    // `check_headers` has refused a declared length over the limit.
    let share = declared.map_or(max_body_bytes, |n| {
        usize::try_from(n).map_or(max_body_bytes, |n| n.min(max_body_bytes))
    });
    let mut permit = match tokio::time::timeout_at(deadline, reserve_bytes(budget, share)).await {
        Ok(Some(permit)) => permit,
        Ok(None) | Err(_) => {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "envlink: too many request bodies in flight (--max-inflight-body-bytes); the \
                 webhook's failurePolicy applies",
            )
            .into());
        }
    };
    let mut bytes: Vec<u8> = Vec::with_capacity(declared.map_or(0, |_| share));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "envlink: the request body did not arrive within {} ms",
                        request_timeout.as_millis()
                    ),
                )
                .into());
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "request body could not be read");
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "envlink: the request body could not be read",
                )
                .into());
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers: nothing envlink reads.
            continue;
        };
        if bytes.len() + data.len() > max_body_bytes {
            return Err(Refused {
                error: too_large(max_body_bytes),
                rest: Some(body),
            });
        }
        // Amortised doubling, never past the limit (so never past the share either, for a
        // body without a declared length; one with it is allocated at once).
        if bytes.len() + data.len() > bytes.capacity() {
            let grown = (bytes.len() + data.len())
                .max(bytes.capacity() * 2)
                .min(max_body_bytes);
            bytes.reserve_exact(grown - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    // Back to the budget: what was reserved beyond the buffer actually held.
    let excess = permit.num_permits().saturating_sub(bytes.capacity());
    drop(permit.split(excess));
    Ok(ReadBody { bytes, permit })
}

/// `bytes` permits of the body budget (`None`: closed, which it never is).
async fn reserve_bytes(budget: &Arc<Semaphore>, bytes: usize) -> Option<OwnedSemaphorePermit> {
    // `acquire_many` counts in u32; bodies are far smaller (`--max-body-bytes` ≤ 1 GiB).
    let bytes = u32::try_from(bytes).ok()?;
    budget.clone().acquire_many_owned(bytes).await.ok()
}

/// Reads and drops up to `limit` bytes of a body that will not be used, within `deadline`.
async fn discard(mut body: Body, limit: usize, deadline: tokio::time::Instant) {
    let mut seen = 0usize;
    while seen <= limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, Bytes::len);
            }
            // The end, a broken body, or out of time.
            _ => return,
        }
    }
}

/// The synchronous part: decode, decide, encode. No I/O and no lock held across it.
fn answer(
    state: &AppState,
    endpoint: Endpoint,
    body: &[u8],
    summary: &mut Summary,
) -> Result<Reply, HttpError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "envlink: the request body is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    let request = match wire::parse_review(text) {
        Ok(parsed) => parsed,
        Err(Rejection {
            uid: Some(uid),
            message,
        }) => {
            summary.uid = uid;
            return encode(
                &OutgoingResponse::invalid(&summary.uid, &message),
                "invalid",
            );
        }
        Err(Rejection { uid: None, message }) => {
            return Err(HttpError::new(StatusCode::BAD_REQUEST, message));
        }
    };
    summary.describe(&request);
    let input = admission::Request {
        operation: request.operation.clone(),
        group: &request.kind.group,
        kind: &request.kind.kind,
        sub_resource: request.sub_resource.as_deref(),
        namespace: request.namespace.as_deref().unwrap_or(""),
        object: request.object(),
        old_object: request.old_object,
    };
    let decision = match endpoint {
        Endpoint::Mutate => admission::mutate(
            &input,
            &state.catalog.snapshot(),
            &state.policy,
            state.lookups.as_ref(),
        ),
        Endpoint::Validate => admission::validate(&input, &state.policy, state.lookups.as_ref()),
    };
    let reply = respond(&request.uid, &decision, summary)?;
    // Only when this answer changes the Pod: a reinvocation on envlink's own output would
    // otherwise count the same Pod twice.
    if decision.injected.is_some() && !decision.patch.is_empty() {
        summary.injected = Some(decision.variables);
    }
    Ok(reply)
}

/// Decision → the AdmissionReview sent, with the request's uid.
fn respond(uid: &str, decision: &Decision, summary: &mut Summary) -> Result<Reply, HttpError> {
    let label = decision.label();
    let patch;
    let response = match &decision.verdict {
        Verdict::Allow if decision.patch.is_empty() => OutgoingResponse::allowed(uid),
        Verdict::Allow => {
            // The plan writes its JSON straight from the catalog's variables (see
            // `admission::patch`).
            patch = decision
                .patch
                .to_json_for_base64()
                .map_err(|e| HttpError::internal("patch does not serialise", &e))?;
            OutgoingResponse::patched_json(uid, &patch)
        }
        Verdict::Deny(message) => OutgoingResponse::denied(uid, message),
        Verdict::Invalid(message) => OutgoingResponse::invalid(uid, message),
    }
    .with_warnings(&decision.warnings);
    summary.patch_bytes = response.patch_len() as u64;
    encode(&response, label)
}

fn encode(response: &OutgoingResponse<'_>, label: &'static str) -> Result<Reply, HttpError> {
    let body = response
        .to_review_json()
        .map_err(|e| HttpError::internal("AdmissionReview does not serialise", &e))?;
    Ok(Reply { body, label })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_are_metav1_status() {
        let body = HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "too \"big\"").body();
        assert_eq!(
            String::from_utf8(body).expect("UTF-8"),
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":413,"message":"too \"big\"","metadata":{},"reason":"RequestEntityTooLarge"}"#
        );
    }

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
}
