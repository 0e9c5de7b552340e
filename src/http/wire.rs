//! The AdmissionReview on the wire: the one request type envlink decodes itself, the
//! diagnosis of bodies that are not usable reviews, and the answer it sends.
//!
//! kube-core's types are used where they fit: [`GroupVersionKind`], [`Operation`],
//! [`Status`], [`PatchType`] and the review's `apiVersion`/`kind` constants. Its
//! `AdmissionRequest<T>` and `AdmissionResponse` are not, for the reasons on
//! `IncomingRequest` and [`OutgoingResponse`].

use std::borrow::Cow;

use kube::core::admission::{META_API_VERSION_V1, META_KIND, Operation, PatchType};
use kube::core::{GroupVersionKind, Status};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::admission::patch::{PatchJson, Repeat};
use crate::http::base64::write_base64;
use crate::text;

/// The only review version envlink speaks.
pub(crate) const REVIEW_API_VERSION: &str = META_API_VERSION_V1;
/// The review's kind.
pub(crate) const REVIEW_KIND: &str = META_KIND;

/// What envlink reads of an `admission.k8s.io/v1` AdmissionReview's `request`, decoded
/// straight from the body in one pass.
///
/// Why not kube-core's `AdmissionRequest<T>`: it owns everything it decodes — `object` and
/// `oldObject` as a `T` (for a Pod review, a `DynamicObject`: a whole JSON tree), `options`
/// as a `RawExtension` (another tree) and `userInfo` with its `extra` map. A review may be
/// 7 MiB (`--max-body-bytes`), and a JSON tree costs several times its text. Here `object`
/// and `oldObject` stay JSON text borrowed from the body: the decision reads just the fields
/// it needs from them, skipping the rest without building a tree (a megabyte array of
/// numbers somewhere in a Pod costs no memory). Measured in the hostile-input work (issue
/// 11): a 7 MiB review keeps the process at about 41 MB VmHWM. `resource` and `userInfo`
/// are required, as kube-core requires them, but skipped unread; the kind and the operation
/// are kube-core's own types.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IncomingRequest<'a> {
    /// Echoed in the answer.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The object's kind.
    pub kind: GroupVersionKind,
    #[serde(rename = "resource")]
    _resource: IgnoredAny,
    /// `ephemeralcontainers` and the like.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name (empty for a generated name).
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// The request's namespace.
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    #[serde(rename = "userInfo")]
    _user_info: IgnoredAny,
    /// The object, as JSON text (`None` for `null` too).
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    /// The object before an UPDATE, as JSON text.
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    // Typed (a review whose dryRun is not a boolean is malformed) but unread: envlink has no
    // side effects, so a dry run is answered like any review.
    #[serde(default, rename = "dryRun")]
    _dry_run: bool,
}

/// The review around an [`IncomingRequest`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingReview<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    request: Option<IncomingRequest<'a>>,
}

/// Why a body is not a usable review; `uid` is set when one could be read.
#[derive(Debug)]
pub(crate) struct Rejection {
    /// The request's uid, when it could be read: the answer is then an AdmissionReview.
    pub uid: Option<String>,
    /// What is wrong with the body, for the caller.
    pub message: String,
}

/// Longest request uid envlink echoes: the API server sends a UUID (36 bytes); anything much
/// longer is not from an API server, and is refused rather than repeated back.
const UID_LIMIT: usize = 128;

/// A usable review: a v1 AdmissionReview with a request (`null` objects are `None`).
pub(crate) fn parse_review(text: &str) -> Result<IncomingRequest<'_>, Rejection> {
    if let Ok(review) = serde_json::from_str::<IncomingReview<'_>>(text)
        && review.api_version == REVIEW_API_VERSION
        && review.kind == REVIEW_KIND
        && let Some(mut request) = review.request
        && request.uid.len() <= UID_LIMIT
    {
        let is_null = |raw: &&RawValue| raw.get().trim() == "null";
        request.object = request.object.filter(|o| !is_null(o));
        request.old_object = request.old_object.filter(|o| !is_null(o));
        return Ok(request);
    }
    Err(diagnose(text))
}

/// The top of a review, each field kept as JSON text whatever its type.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    #[serde(borrow, default)]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
}

/// The uid of a review's request, kept as JSON text whatever its type.
#[derive(Deserialize, Default)]
struct RequestHead<'a> {
    #[serde(borrow, default)]
    uid: Option<&'a RawValue>,
}

/// A JSON string's value (`None` for any other JSON type).
fn as_str(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
        .map(Cow::into_owned)
}

/// Why a body is not a usable review, found without building a JSON tree of it (a hostile
/// body that fails the fast decode must not cost more memory than one that passes).
fn diagnose(text: &str) -> Rejection {
    let no_uid = |message: String| Rejection { uid: None, message };
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        // serde_json's message describes the input ("EOF while parsing ... at line 1 column
        // 20"), not envlink's internals.
        return no_uid(format!("envlink: the request body is not valid JSON ({e})"));
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return no_uid(format!(
            "envlink: the request body is a JSON {}, not an AdmissionReview object",
            json_type(trimmed)
        ));
    }
    let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
        return no_uid(
            "envlink: the AdmissionReview could not be read (a repeated field?)".to_string(),
        );
    };
    let request = head.request.filter(|r| r.get().trim() != "null");
    let uid = request
        .filter(|r| r.get().starts_with('{'))
        .and_then(|r| serde_json::from_str::<RequestHead<'_>>(r.get()).ok())
        .and_then(|h| as_str(h.uid))
        .filter(|uid| !uid.is_empty());
    if let Some(uid) = &uid
        && uid.len() > UID_LIMIT
    {
        return no_uid(format!(
            "envlink: request.uid is {} bytes long; an API server sends a UUID",
            uid.len()
        ));
    }
    let message = diagnose_request(text, &head, request);
    Rejection { uid, message }
}

/// What is wrong with a review whose top decodes: its version, its `request`, or a field
/// of the request (named by its path).
fn diagnose_request(text: &str, head: &Head<'_>, request: Option<&RawValue>) -> String {
    let (api_version, kind) = (
        as_str(head.api_version).unwrap_or_default(),
        as_str(head.kind).unwrap_or_default(),
    );
    if api_version != REVIEW_API_VERSION || kind != REVIEW_KIND {
        return format!(
            "envlink: expected apiVersion {REVIEW_API_VERSION:?} and kind {REVIEW_KIND:?}, got \
             apiVersion {:?} and kind {:?} (configure admissionReviewVersions: [v1])",
            text::clip(&api_version, text::ECHO_LIMIT),
            text::clip(&kind, text::ECHO_LIMIT)
        );
    }
    let Some(request) = request else {
        return "envlink: the AdmissionReview has no `request`".into();
    };
    if !request.get().starts_with('{') {
        return format!(
            "envlink: the AdmissionReview's `request` is a JSON {}, not an object",
            json_type(request.get())
        );
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, IncomingReview<'_>>(&mut deserializer) {
        Err(e) => format!(
            "envlink: the AdmissionReview does not decode: at `{}`: {}",
            text::clip(&e.path().to_string(), text::ECHO_LIMIT),
            text::clip(
                &text::decoder_message(&e.inner().to_string()),
                text::ECHO_LIMIT
            )
        ),
        // Unreachable in practice: the fast path decoded nothing this decodes.
        Ok(_) => "envlink: the AdmissionReview could not be read".into(),
    }
}

/// The JSON type a (valid) JSON text begins with.
fn json_type(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "boolean",
        Some(b'"') => "string",
        Some(b'[') => "array",
        Some(b'{') => "object",
        _ => "number",
    }
}

/// The `response` of the AdmissionReview envlink sends.
///
/// Why not kube-core's `AdmissionResponse`: (1) it writes the patch (`Vec<u8>`) as a JSON
/// array of numbers, where Go's `[]byte` — what the API server and every Go webhook send —
/// is a base64 string, 2–3 times smaller and cheaper to write (`review_codec/S2_answer_*`
/// benches: 356 KB against 150 KB, 0.63 ms against 0.04 ms);
/// (2) an allowed answer can only be made from a decoded kube-core `AdmissionRequest<T>`,
/// which envlink does not build (see `IncomingRequest`); (3) its patch type can only be
/// set by serialising a `json_patch::Patch`, while envlink writes its patch as JSON
/// directly. The fields, their names and the `Status` are the same.
///
/// Built only through its constructors, so a patch always comes with its `patchType` and a
/// refusal always with its status code.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<PatchType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Base64<'a>>,
    /// Where the patch repeats itself (see [`crate::http::base64`]).
    #[serde(skip)]
    repeats: &'a [Repeat],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

impl<'a> OutgoingResponse<'a> {
    /// Allowed, without a change.
    pub fn allowed(uid: &'a str) -> Self {
        Self {
            uid,
            allowed: true,
            status: Status::default(),
            patch_type: None,
            patch: None,
            repeats: &[],
            warnings: &[],
        }
    }

    /// Allowed, with an RFC 6902 JSON Patch (its JSON text).
    pub fn patched(uid: &'a str, patch: &'a [u8]) -> Self {
        Self {
            patch_type: Some(PatchType::JsonPatch),
            patch: Some(Base64(patch)),
            ..Self::allowed(uid)
        }
    }

    /// Allowed, with a patch written for base64 ([`PatchJson`]): its repeats are copied in
    /// the encoding instead of encoded again.
    pub fn patched_json(uid: &'a str, patch: &'a PatchJson) -> Self {
        Self {
            repeats: &patch.repeats,
            ..Self::patched(uid, &patch.bytes)
        }
    }

    /// Refused by policy: status code 403, reason `Forbidden`.
    pub fn denied(uid: &'a str, message: &str) -> Self {
        Self {
            allowed: false,
            status: Status::failure(message, "Forbidden").with_code(403),
            ..Self::allowed(uid)
        }
    }

    /// Refused because the review is not usable: status code 400, reason `InvalidRequest`.
    pub fn invalid(uid: &'a str, message: &str) -> Self {
        Self {
            allowed: false,
            status: Status::failure(message, "InvalidRequest").with_code(400),
            ..Self::allowed(uid)
        }
    }

    /// The same answer with warnings for the user (none are written when empty).
    pub fn with_warnings(self, warnings: &'a [String]) -> Self {
        Self { warnings, ..self }
    }

    /// The patch's length in bytes (0 without one).
    pub fn patch_len(&self) -> usize {
        self.patch.as_ref().map_or(0, |p| p.0.len())
    }

    /// The whole AdmissionReview as JSON.
    pub fn to_review_json(&self) -> serde_json::Result<Vec<u8>> {
        let review = OutgoingReview {
            api_version: REVIEW_API_VERSION,
            kind: REVIEW_KIND,
            response: self,
        };
        // A patch is up to a few hundred KiB and dominates the size.
        let mut body = Vec::with_capacity(512 + self.patch_len().div_ceil(3) * 4);
        review.serialize(&mut serde_json::Serializer::with_formatter(
            &mut body,
            GoJson {
                repeats: self.repeats,
            },
        ))?;
        Ok(body)
    }
}

/// The review around an [`OutgoingResponse`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutgoingReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a OutgoingResponse<'a>,
}

/// Bytes, handed to the serializer as bytes (`serialize_bytes`): [`GoJson`] writes them as
/// a base64 string.
#[derive(Debug)]
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// serde_json's compact output, except that bytes are a base64 string, as Go's
/// `encoding/json` writes `[]byte` (serde_json's default is an array of numbers). The
/// answer's only bytes are its patch, so `repeats` are the patch's.
///
/// Written straight into the output ([`crate::http::base64`]): base64 never needs escaping,
/// so the literal is well-formed by construction. Measured on the S2 patch (110 KB,
/// `review_codec` benches, `--quick`, noisy 2-core machine): 11 µs this way; 25 µs through
/// a checked `RawValue` (the check alone 14 µs); 57 µs through serde_json's string escaper.
struct GoJson<'a> {
    repeats: &'a [Repeat],
}

impl serde_json::ser::Formatter for GoJson<'_> {
    fn write_byte_array<W>(&mut self, writer: &mut W, value: &[u8]) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        writer.write_all(b"\"")?;
        write_base64(writer, value, self.repeats)?;
        writer.write_all(b"\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(response: &OutgoingResponse<'_>) -> String {
        String::from_utf8(response.to_review_json().expect("serialises")).expect("UTF-8")
    }

    /// The exact bytes of each kind of answer (the same JSON, field for field, as before
    /// kube-core's `Status` was used directly; the patch is base64 of the bytes given).
    #[test]
    fn answers_on_the_wire() {
        let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":"#;
        assert_eq!(
            json(&OutgoingResponse::allowed("u1")),
            format!(r#"{head}{{"uid":"u1","allowed":true,"status":{{}}}}}}"#)
        );
        let warnings = ["w \"1\"".to_string()];
        assert_eq!(
            json(&OutgoingResponse::patched("u2", b"[]").with_warnings(&warnings)),
            format!(
                r#"{head}{{"uid":"u2","allowed":true,"status":{{}},"patchType":"JSONPatch","patch":"W10=","warnings":["w \"1\""]}}}}"#
            )
        );
        assert_eq!(
            json(&OutgoingResponse::denied("u3", "no")),
            format!(
                r#"{head}{{"uid":"u3","allowed":false,"status":{{"status":"Failure","code":403,"message":"no","reason":"Forbidden"}}}}}}"#
            )
        );
        assert_eq!(
            json(&OutgoingResponse::invalid("u4", "bad")),
            format!(
                r#"{head}{{"uid":"u4","allowed":false,"status":{{"status":"Failure","code":400,"message":"bad","reason":"InvalidRequest"}}}}}}"#
            )
        );
    }

    /// Chunked encoding gives the same string as encoding at once, at every chunk edge.
    #[test]
    fn patches_are_base64_strings() {
        for len in [0, 1, 2, 3, 3071, 3072, 3073, 10_000] {
            let patch: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let body = OutgoingResponse::patched("u", &patch)
                .to_review_json()
                .expect("serialises");
            let review: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(
                review["response"]["patch"].as_str(),
                Some(base64_simd::STANDARD.encode_to_string(&patch).as_str()),
                "{len}"
            );
        }
    }

    #[test]
    fn kube_core_operation_decodes_as_before() {
        for (text, op) in [
            ("\"CREATE\"", Operation::Create),
            ("\"UPDATE\"", Operation::Update),
            ("\"DELETE\"", Operation::Delete),
            ("\"CONNECT\"", Operation::Connect),
        ] {
            assert_eq!(serde_json::from_str::<Operation>(text).ok(), Some(op));
        }
        assert!(serde_json::from_str::<Operation>("\"create\"").is_err());
    }
}
