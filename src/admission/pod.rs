//! A borrowed, read-only view of the Pod fields envlink reads, decoded straight from the
//! review's JSON text.
//!
//! A Pod author writes the object, so the view is built for hostile input: fields envlink
//! never reads are skipped while parsing (no JSON tree is built for them: a megabyte array of
//! numbers costs no memory), strings are borrowed from the text where they have no escapes,
//! every struct must be a JSON object (serde would otherwise read `spec: []` positionally),
//! and error messages describe the input, not the decoder's types. Each container's `env`
//! entries are kept as their JSON text, so what envlink writes back is exactly what the user
//! wrote, fields it does not know included.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use serde_json::value::RawValue;

use crate::podshape::ContainerKind;
use crate::reserved::{ClaimSource, ClaimUse, ContainerEnv, EnvFromSource};

/// `metadata` and `spec` of a Pod or a Pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView<'a> {
    /// `metadata`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: Option<MetaView<'a>>,
    /// `spec`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<SpecView<'a>>,
}

/// The metadata fields envlink reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    /// `metadata.namespace`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub namespace: Option<Cow<'a, str>>,
    /// `metadata.annotations`.
    #[serde(borrow, default, deserialize_with = "annotations")]
    pub annotations: Option<Vec<Annotation<'a>>>,
}

/// One annotation: key and value.
pub type Annotation<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The spec fields envlink reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    /// `spec.containers`.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.initContainers`.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.ephemeralContainers`.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.enableServiceLinks` (the API server defaults it to true).
    #[serde(default)]
    pub enable_service_links: Option<bool>,
    /// `spec.resourceClaims` (DRA).
    #[serde(borrow, default, deserialize_with = "objects")]
    pub resource_claims: Option<Vec<PodClaimView<'a>>>,
}

/// One entry of `spec.resourceClaims`: a name the containers use, and where the claim comes
/// from (at the top level since 1.28; under `source` in 1.26 and 1.27).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodClaimView<'a> {
    /// `name`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub name: Option<Cow<'a, str>>,
    /// `resourceClaimName`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub resource_claim_name: Option<Cow<'a, str>>,
    /// `resourceClaimTemplateName`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub resource_claim_template_name: Option<Cow<'a, str>>,
    /// `source` (Kubernetes 1.26 and 1.27).
    #[serde(borrow, default, deserialize_with = "object")]
    pub source: Option<ClaimSourceView<'a>>,
}

/// `spec.resourceClaims[].source` of Kubernetes 1.26 and 1.27.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSourceView<'a> {
    /// `resourceClaimName`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub resource_claim_name: Option<Cow<'a, str>>,
    /// `resourceClaimTemplateName`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub resource_claim_template_name: Option<Cow<'a, str>>,
}

impl PodClaimView<'_> {
    /// Where the claim comes from (a named claim first, as the kubelet resolves it).
    fn source(&self) -> Option<ClaimSource<'_>> {
        let nested = self.source.as_ref();
        let claim = self
            .resource_claim_name
            .as_deref()
            .or_else(|| nested.and_then(|s| s.resource_claim_name.as_deref()));
        let template = self
            .resource_claim_template_name
            .as_deref()
            .or_else(|| nested.and_then(|s| s.resource_claim_template_name.as_deref()));
        claim
            .map(ClaimSource::Claim)
            .or(template.map(ClaimSource::Template))
    }
}

/// One container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// `env`: each entry's name, and its JSON text as written.
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvEntry<'a>>>,
    /// `envFrom`.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub env_from: Option<Vec<EnvFromView<'a>>>,
    /// `resources`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub resources: Option<ResourcesView<'a>>,
}

/// One `env` entry: its name (the value source does not matter for shadowing) and its JSON
/// text, which a patch copies back unchanged.
#[derive(Debug)]
pub struct EnvEntry<'a> {
    /// `name`.
    pub name: Cow<'a, str>,
    /// The whole entry as it was written.
    pub raw: &'a RawValue,
}

/// One `envFrom` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromView<'a> {
    /// `prefix`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub prefix: Option<Cow<'a, str>>,
    /// `configMapRef`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub config_map_ref: Option<NameRef<'a>>,
    /// `secretRef` (only its name: envlink never reads Secrets, but its prefix is judged).
    #[serde(borrow, default, deserialize_with = "object")]
    pub secret_ref: Option<NameRef<'a>>,
}

/// A reference by name.
#[derive(Debug, Default, Deserialize)]
pub struct NameRef<'a> {
    /// `name`.
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub name: Option<Cow<'a, str>>,
}

/// `resources`: only the resource names matter; quantities are skipped unread.
#[derive(Debug, Default, Deserialize)]
pub struct ResourcesView<'a> {
    /// `requests` (names only).
    #[serde(borrow, default, deserialize_with = "keys")]
    pub requests: Option<Vec<Cow<'a, str>>>,
    /// `limits` (names only).
    #[serde(borrow, default, deserialize_with = "keys")]
    pub limits: Option<Vec<Cow<'a, str>>>,
    /// `claims`: the Pod's DRA claims this container uses, by name.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub claims: Option<Vec<NameRef<'a>>>,
}

/// A workload's Pod template: `spec.template` (Deployment, StatefulSet, DaemonSet,
/// ReplicaSet, Job).
#[derive(Debug, Default, Deserialize)]
pub struct TemplateOwnerView<'a> {
    /// `metadata`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: Option<MetaView<'a>>,
    /// `spec`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub spec: Option<TemplateSpecView<'a>>,
}

/// `spec` of a workload: the Pod template, and a CronJob's job template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpecView<'a> {
    /// `spec.template`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub template: Option<PodView<'a>>,
    /// `spec.jobTemplate` (CronJob).
    #[serde(borrow, default, deserialize_with = "object")]
    pub job_template: Option<Box<TemplateOwnerView<'a>>>,
}

/// The object of a `pods/ephemeralcontainers` review on Kubernetes 1.20 and 1.21: kind
/// `EphemeralContainers`, the debug containers at the top level instead of in a Pod spec.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralContainersView<'a> {
    /// `metadata`.
    #[serde(borrow, default, deserialize_with = "object")]
    pub metadata: Option<MetaView<'a>>,
    /// `ephemeralContainers`.
    #[serde(borrow, default, deserialize_with = "objects")]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
}

impl<'a> From<EphemeralContainersView<'a>> for PodView<'a> {
    fn from(view: EphemeralContainersView<'a>) -> Self {
        PodView {
            metadata: view.metadata,
            spec: Some(SpecView {
                ephemeral_containers: view.ephemeral_containers,
                ..SpecView::default()
            }),
        }
    }
}

/// Why an object could not be read as a Pod (or a workload with a Pod template).
#[derive(Debug, thiserror::Error)]
#[error("not a valid {what}: at `{path}`: {message}")]
pub struct PodViewError {
    /// What was expected (`Pod`, `Deployment`, ...).
    pub what: String,
    /// Where in the object.
    pub path: String,
    /// What is wrong, in terms of the input.
    pub message: String,
}

/// Longest path or decoder message quoted in a [`PodViewError`]: the path is built from keys
/// the caller wrote.
const ERROR_TEXT_LIMIT: usize = 300;

/// Decodes a view from an object's JSON text. `what` names the expected kind in messages.
pub fn decode<'a, T: Deserialize<'a>>(raw: &'a RawValue, what: &str) -> Result<T, PodViewError> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return decode_tracked(raw, what);
    }
    // The path-tracking decoder costs a little more; it only runs to explain a failure.
    if let Ok(view) = serde_json::from_str::<T>(text) {
        return Ok(view);
    }
    decode_tracked(raw, what)
}

/// [`decode`] with the path-tracking decoder only: for an object that is known to have failed
/// a decode already, where the fast attempt could only fail again.
pub fn decode_tracked<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    what: &str,
) -> Result<T, PodViewError> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err(PodViewError {
            what: what.into(),
            path: ".".into(),
            message: "expected an object".into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(view) => Ok(view),
        Err(e) => Err(PodViewError {
            what: what.into(),
            path: crate::text::clip(&e.path().to_string(), ERROR_TEXT_LIMIT).into_owned(),
            message: crate::text::clip(
                &crate::text::decoder_message(&e.inner().to_string()),
                ERROR_TEXT_LIMIT,
            )
            .into_owned(),
        }),
    }
}

impl<'a> PodView<'a> {
    /// An annotation's value (the last one, if a hostile caller repeated the key).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.iter().rev().find(|(k, _)| k == key))
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `metadata.annotations` exists (decides between adding the map and a key).
    pub fn has_annotations(&self) -> bool {
        self.metadata
            .as_ref()
            .is_some_and(|m| m.annotations.is_some())
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata.as_ref()?.namespace.as_deref()
    }

    /// `spec.enableServiceLinks`.
    pub fn enable_service_links(&self) -> Option<bool> {
        self.spec.as_ref().and_then(|s| s.enable_service_links)
    }

    /// The containers of one kind.
    pub fn containers(&self, kind: ContainerKind) -> &[ContainerView<'a>] {
        let Some(spec) = &self.spec else {
            return &[];
        };
        let list = match kind {
            ContainerKind::Init => &spec.init_containers,
            ContainerKind::Regular => &spec.containers,
            ContainerKind::Ephemeral => &spec.ephemeral_containers,
        };
        list.as_deref().unwrap_or(&[])
    }

    /// What the reserved rules need, for the given kinds of containers.
    pub fn container_envs(&self, kinds: &[ContainerKind]) -> Vec<ContainerEnv<'_>> {
        // By name, built once: a hostile Pod may list many claims in many containers. The last
        // entry of a repeated name wins (the API server refuses repeats anyway).
        let pod_claims: hashbrown::HashMap<&str, &PodClaimView<'a>> = self
            .spec
            .as_ref()
            .and_then(|s| s.resource_claims.as_deref())
            .unwrap_or(&[])
            .iter()
            .filter_map(|p| p.name.as_deref().map(|n| (n, p)))
            .collect();
        let mut out = Vec::new();
        for &kind in kinds {
            for (index, c) in self.containers(kind).iter().enumerate() {
                out.push(c.env_for_rules(kind, index, &pod_claims));
            }
        }
        out
    }
}

impl<'a> ContainerView<'a> {
    /// Resource names in requests and limits, sorted and deduplicated (n log n: a Pod author
    /// may list a hundred thousand).
    pub fn resource_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        if let Some(r) = &self.resources {
            for list in [&r.requests, &r.limits].into_iter().flatten() {
                names.extend(list.iter().map(Cow::as_ref));
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The names in `env`, in order.
    pub fn env_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.env.iter().flatten().map(|e| e.name.as_ref())
    }

    /// The `env` entries, in order.
    pub fn env_entries(&self) -> &[EnvEntry<'a>] {
        self.env.as_deref().unwrap_or(&[])
    }

    fn env_for_rules<'s>(
        &'s self,
        kind: ContainerKind,
        index: usize,
        pod_claims: &hashbrown::HashMap<&'s str, &'s PodClaimView<'a>>,
    ) -> ContainerEnv<'s> {
        ContainerEnv {
            kind,
            index,
            name: &self.name,
            resources: self.resource_names(),
            env: self.env_names().collect(),
            env_from: self
                .env_from
                .iter()
                .flatten()
                .map(|f| EnvFromSource {
                    config_map: f.config_map_ref.as_ref().and_then(|r| r.name.as_deref()),
                    prefix: f.prefix.as_deref().unwrap_or(""),
                    secret: f.secret_ref.as_ref().and_then(|r| r.name.as_deref()),
                })
                .collect(),
            claims: self
                .resources
                .iter()
                .flat_map(|r| r.claims.iter().flatten())
                .filter_map(|c| c.name.as_deref())
                .map(|name| ClaimUse {
                    name,
                    source: pod_claims.get(name).and_then(|p| p.source()),
                })
                .collect(),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EnvEntry<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// What envlink reads of an entry.
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow, default)]
            name: Cow<'a, str>,
        }
        let raw = <&'a RawValue>::deserialize(deserializer)?;
        // The entry's text is parsed a second time for its name: linear, and the raw text
        // is what the patch writes back.
        let text = raw.get();
        if !text.starts_with('{') {
            return Err(de::Error::invalid_type(
                json_kind(text),
                &"an object (an env entry)",
            ));
        }
        let named: Named<'a> = serde_json::from_str(text)
            .map_err(|e| de::Error::custom(crate::text::decoder_message(&e.to_string())))?;
        Ok(EnvEntry {
            name: named.name,
            raw,
        })
    }
}

/// How a JSON value's text begins, as serde names the type (for messages).
fn json_kind(text: &str) -> de::Unexpected<'static> {
    match text.as_bytes().first() {
        Some(b'[') => de::Unexpected::Seq,
        Some(b'"') => de::Unexpected::Other("a string"),
        Some(b't' | b'f') => de::Unexpected::Other("a boolean"),
        Some(b'n') => de::Unexpected::Unit,
        _ => de::Unexpected::Other("a number"),
    }
}

/// Reads a struct only from a JSON object. serde's derived structs also accept an array
/// (fields by position), so `spec: []` would pass as an empty spec; and their messages name
/// the Rust type (`expected struct ContainerView`) rather than the input.
struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A struct element that must be a JSON object.
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Obj)
    }
}

/// An optional struct field that must be an object (or `null`).
fn object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Obj<T>>::deserialize(deserializer)?.map(|o| o.0))
}

/// An optional list of structs, each an object.
fn objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<Obj<T>>>::deserialize(deserializer)?
        .map(|list| list.into_iter().map(|o| o.0).collect()))
}

/// A string borrowed from the body when it has no escapes, owned when it has: serde's own
/// `#[serde(borrow)]` decoding of a `Cow<str>`. serde gives that only to a field of type
/// `Cow<str>` itself; a map key or an `Option<Cow<str>>` field decoded as `Cow<str>` is
/// always an owned copy — a dozen allocations of a small review (BENCHMARKS.md, "aws-lc-rs,
/// fewer allocations, and the kernel's share").
#[derive(Deserialize)]
pub(crate) struct Borrowed<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

/// An optional string field, borrowed when it can be ([`Borrowed`]).
fn borrowed<'de, D>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<Borrowed<'de>>::deserialize(deserializer)?.map(|b| b.0))
}

/// The keys of an object, values skipped unread (resource quantities).
struct KeysOf<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for KeysOf<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = KeysOf<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some(Borrowed(key)) = map.next_key()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(KeysOf(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// An optional object read for its keys only.
fn keys<'de, D>(deserializer: D) -> Result<Option<Vec<Cow<'de, str>>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<KeysOf<'de>>::deserialize(deserializer)?.map(|k| k.0))
}

/// Annotations as (key, value) pairs in the order written. A list, not a map: three keys are
/// ever looked up, and a map would cost a hash or a comparison tree per key for nothing.
fn annotations<'de, D>(deserializer: D) -> Result<Option<Vec<Annotation<'de>>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Pairs<'a>(Vec<Annotation<'a>>);
    impl<'de> Deserialize<'de> for Pairs<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct PairsVisitor;
            impl<'de> Visitor<'de> for PairsVisitor {
                type Value = Pairs<'de>;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object of strings")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut pairs = Vec::new();
                    while let Some((Borrowed(key), Borrowed(value))) = map.next_entry()? {
                        pairs.push((key, value));
                    }
                    Ok(Pairs(pairs))
                }
            }
            deserializer.deserialize_map(PairsVisitor)
        }
    }
    Ok(Option::<Pairs<'de>>::deserialize(deserializer)?.map(|p| p.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The variant is what is asked, so the `Cow` itself, not the `&str` clippy suggests.
    #[allow(clippy::ptr_arg)]
    fn is_borrowed(text: &Cow<'_, str>) -> bool {
        matches!(text, Cow::Borrowed(_))
    }

    /// Names without escapes point into the body (no allocation each); a name with an escape
    /// is decoded into its own string, with the same text as any JSON decoder gives.
    #[test]
    fn strings_are_borrowed_from_the_body_unless_escaped() {
        let text = r#"{"metadata":{"namespace":"ns","annotations":{"a/b":"x","k\u0031":"v\n"}},
            "spec":{"containers":[{"name":"c","envFrom":[{"prefix":"P_","configMapRef":{"name":"m"}}],
            "resources":{"requests":{"cpu":"1","nvidia.com/gpu":"1"},"limits":{"mem\u006fry":"1"}}}]}}"#;
        let raw = serde_json::value::RawValue::from_string(text.to_string()).unwrap();
        let pod: PodView<'_> = decode(&raw, "Pod").unwrap();
        let meta = pod.metadata.as_ref().unwrap();
        assert!(is_borrowed(meta.namespace.as_ref().unwrap()));
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations[0], (Cow::from("a/b"), Cow::from("x")));
        assert!(is_borrowed(&annotations[0].0) && is_borrowed(&annotations[0].1));
        assert_eq!(annotations[1], (Cow::from("k1"), Cow::from("v\n")));
        assert!(!is_borrowed(&annotations[1].0) && !is_borrowed(&annotations[1].1));
        let container = &pod.spec.as_ref().unwrap().containers.as_ref().unwrap()[0];
        let from = &container.env_from.as_ref().unwrap()[0];
        assert!(is_borrowed(from.prefix.as_ref().unwrap()));
        let map = from.config_map_ref.as_ref().unwrap();
        assert!(is_borrowed(map.name.as_ref().unwrap()));
        let resources = container.resources.as_ref().unwrap();
        let requests = resources.requests.as_ref().unwrap();
        assert_eq!(requests, &[Cow::from("cpu"), Cow::from("nvidia.com/gpu")]);
        assert!(requests.iter().all(is_borrowed));
        let limits = resources.limits.as_ref().unwrap();
        assert_eq!(limits, &[Cow::from("memory")]);
        assert!(!is_borrowed(&limits[0]));
    }
}
