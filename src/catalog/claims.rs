//! DRA device classes for the reserved-variable rules: watches of ResourceClaims and
//! ResourceClaimTemplates (`resource.k8s.io/v1`) that keep only `namespace/name → device
//! classes`, nothing else of the objects.
//!
//! A container that consumes a claim (`resources.claims`) is in scope of the rules naming the
//! claim's device class. A Pod usually names a template (the claim is made for it after the Pod
//! exists), so templates are watched as well as claims. On an API server without
//! `resource.k8s.io/v1` nothing is watched ([`spawn`] asks discovery first).

use std::sync::Arc;

use kube::api::{ApiResource, DynamicObject};
use serde::Deserialize;

use super::ListScope;
use super::configmaps::ConfigMapIndex;
use super::driver::{self, InitialList, ObjectKey, SkipReason, WatchDriver, WatchIndex};
use super::keyed::NamedIndex;
use super::status::WatchStatuses;
use crate::reserved::{ClaimSource, ConfigMapKeys};

type Classes = Arc<[Box<str>]>;

/// The API version watched.
pub const API_VERSION: &str = "resource.k8s.io/v1";

/// Which of the two kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// `ResourceClaim`: the classes are under `spec.devices`.
    Claim,
    /// `ResourceClaimTemplate`: under `spec.spec.devices`.
    Template,
}

impl ClaimKind {
    fn resource(self) -> ApiResource {
        let (kind, plural) = match self {
            ClaimKind::Claim => ("ResourceClaim", "resourceclaims"),
            ClaimKind::Template => ("ResourceClaimTemplate", "resourceclaimtemplates"),
        };
        ApiResource {
            group: "resource.k8s.io".into(),
            version: "v1".into(),
            api_version: API_VERSION.into(),
            kind: kind.into(),
            plural: plural.into(),
        }
    }
}

/// `namespace/name → device classes` of every ResourceClaim and ResourceClaimTemplate.
#[derive(Debug, Default)]
pub struct ClaimIndex {
    claims: NamedIndex<Classes>,
    templates: NamedIndex<Classes>,
}

impl ClaimIndex {
    /// An empty index, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether both first lists are done.
    pub fn is_ready(&self) -> bool {
        self.claims.is_ready() && self.templates.is_ready()
    }

    /// The device classes of a claim or template, if known.
    pub fn classes(&self, kind: ClaimKind, namespace: &str, name: &str) -> Option<Classes> {
        self.map(kind).get(namespace, name)
    }

    fn map(&self, kind: ClaimKind) -> &NamedIndex<Classes> {
        match kind {
            ClaimKind::Claim => &self.claims,
            ClaimKind::Template => &self.templates,
        }
    }
}

impl ConfigMapKeys for ClaimIndex {
    fn keys(&self, _namespace: &str, _name: &str) -> Option<Vec<String>> {
        None
    }

    fn claim_device_classes(&self, namespace: &str, source: ClaimSource<'_>) -> Option<Classes> {
        match source {
            ClaimSource::Claim(name) => self.classes(ClaimKind::Claim, namespace, name),
            ClaimSource::Template(name) => self.classes(ClaimKind::Template, namespace, name),
        }
    }
}

/// What the request path looks up: ConfigMap keys (with `reserved.checkConfigMaps`) and DRA
/// device classes (where the API server serves them), each from its own index.
#[derive(Debug, Clone, Default)]
pub struct ClusterLookups {
    /// ConfigMap keys, if watched.
    pub config_maps: Option<Arc<ConfigMapIndex>>,
    /// Claim and template device classes, if watched.
    pub claims: Option<Arc<ClaimIndex>>,
}

impl ConfigMapKeys for ClusterLookups {
    fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        self.config_maps.as_ref()?.keys(namespace, name)
    }

    fn shared_keys(&self, namespace: &str, name: &str) -> Option<Arc<[Box<str>]>> {
        self.config_maps.as_ref()?.shared_keys(namespace, name)
    }

    fn claim_device_classes(&self, namespace: &str, source: ClaimSource<'_>) -> Option<Classes> {
        self.claims
            .as_ref()?
            .claim_device_classes(namespace, source)
    }
}

/// The fields read: `devices.requests[]` with the class directly (`v1beta1`), under `exactly`
/// (`v1`), or under each `firstAvailable` alternative (any of them may be the one allocated).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSpec {
    #[serde(default)]
    devices: Option<Devices>,
}

#[derive(Debug, Default, Deserialize)]
struct Devices {
    #[serde(default)]
    requests: Vec<DeviceRequest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceRequest {
    #[serde(default)]
    device_class_name: Option<String>,
    #[serde(default)]
    exactly: Option<Named>,
    #[serde(default)]
    first_available: Vec<Named>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Named {
    #[serde(default)]
    device_class_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct TemplateSpec {
    #[serde(default)]
    spec: Option<ClaimSpec>,
}

/// The device classes of a claim or template, sorted and deduplicated, read from its `spec`
/// in place (no copy of the spec). An error, with the field path, for an object without a
/// spec or whose spec does not decode.
pub fn decode(kind: ClaimKind, object: &DynamicObject) -> Result<Classes, String> {
    let spec = object.data.get("spec").ok_or("no spec")?;
    let spec: ClaimSpec = match kind {
        ClaimKind::Claim => serde_path_to_error::deserialize(spec),
        ClaimKind::Template => serde_path_to_error::deserialize::<_, TemplateSpec>(spec)
            .map(|template| template.spec.unwrap_or_default()),
    }
    .map_err(|e| format!("at `spec.{}`: {}", e.path(), e.inner()))?;
    let mut classes: Vec<Box<str>> = spec
        .devices
        .iter()
        .flat_map(|d| d.requests.iter())
        .flat_map(DeviceRequest::classes)
        .map(|c| c.as_str().into())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    Ok(classes.into())
}

impl DeviceRequest {
    /// Every class the request may be given: its own, `exactly`'s, each alternative's.
    fn classes(&self) -> impl Iterator<Item = &String> {
        self.device_class_name
            .iter()
            .chain(
                self.exactly
                    .iter()
                    .filter_map(|e| e.device_class_name.as_ref()),
            )
            .chain(
                self.first_available
                    .iter()
                    .filter_map(|s| s.device_class_name.as_ref()),
            )
    }
}

/// One kind's map of a [`ClaimIndex`], as the [`driver`] feeds it.
#[derive(Debug)]
pub struct ClaimWatch {
    index: Arc<ClaimIndex>,
    kind: ClaimKind,
}

impl ClaimWatch {
    /// The driver of one kind's watch (all namespaces) into `index`.
    pub fn driver(index: Arc<ClaimIndex>, kind: ClaimKind) -> ClaimSync {
        WatchDriver::cluster_wide(Arc::new(Self { index, kind }))
    }

    fn map(&self) -> &NamedIndex<Classes> {
        self.index.map(self.kind)
    }
}

impl WatchIndex for ClaimWatch {
    type Item = (ObjectKey, Classes);
    type Error = std::convert::Infallible;

    fn resource(&self) -> ApiResource {
        self.kind.resource()
    }

    fn decode(&self, key: ObjectKey, object: DynamicObject) -> Result<Self::Item, SkipReason> {
        match decode(self.kind, &object) {
            Ok(classes) => Ok((key, classes)),
            Err(message) => Err(key.undecodable(&self.kind.resource().kind, message)),
        }
    }

    fn apply(&self, (key, classes): Self::Item) -> Result<(), Self::Error> {
        self.map().insert(&key, classes);
        Ok(())
    }

    fn delete(&self, key: &ObjectKey) {
        self.map().remove(key);
    }

    fn reset(&self, scope: &ListScope, items: Vec<Self::Item>) -> Vec<Self::Error> {
        self.map().replace(scope, items);
        Vec::new()
    }

    fn mark_ready(&self) {
        self.map().mark_ready();
    }

    fn is_ready(&self) -> bool {
        self.map().is_ready()
    }

    fn len(&self) -> usize {
        self.map().len()
    }
}

/// The driver of one kind's watch.
pub type ClaimSync = WatchDriver<ClaimWatch>;

/// The index, filled by the two watches once discovery finds `resource.k8s.io/v1`. Returns at
/// once: discovery runs in the background (an API server that is slow or unreachable at start
/// must not hold up serving), retrying with backoff until it gets an answer. Where the API is
/// not served the index stays empty, and envlink does without DRA.
/// Each watch adds its status to `statuses` when it starts.
pub fn spawn(
    client: kube::Client,
    statuses: Arc<WatchStatuses>,
    initial_list: InitialList,
) -> Arc<ClaimIndex> {
    let index = Arc::new(ClaimIndex::new());
    let watched = index.clone();
    tokio::spawn(async move {
        let mut retry = driver::Retry::new();
        loop {
            match client.list_api_group_resources(API_VERSION).await {
                Ok(list) if list.resources.iter().any(|r| r.name == "resourceclaims") => {
                    for kind in [ClaimKind::Claim, ClaimKind::Template] {
                        let driver = ClaimWatch::driver(watched.clone(), kind)
                            .with_initial_list(initial_list);
                        statuses.add(driver.status());
                        tokio::spawn(driver::run(client.clone(), driver));
                    }
                    tracing::info!(
                        "watching ResourceClaims and ResourceClaimTemplates ({API_VERSION}) for \
                         the device classes of DRA claims"
                    );
                    return;
                }
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.is_not_found() => break,
                Err(error) => {
                    tracing::warn!(%error, "cannot ask the API server whether it serves {API_VERSION}; retrying");
                    retry.wait().await;
                }
            }
        }
        tracing::info!("{API_VERSION} is not served: DRA claims are not looked at");
    });
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn object(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .expect("an object")
    }

    #[test]
    fn classes_come_from_every_request_shape() {
        let claim = object(
            "ResourceClaim",
            "a",
            "gpu",
            json!({"devices": {"requests": [
                {"name": "r1", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 1}},
                {"name": "r2", "firstAvailable": [
                    {"name": "big", "deviceClassName": "mig.nvidia.com"},
                    {"name": "small", "deviceClassName": "gpu.nvidia.com"},
                ]},
                {"name": "old", "deviceClassName": "fpga.example.com"},
            ]}}),
        );
        let classes = decode(ClaimKind::Claim, &claim).expect("decodes");
        let key = ObjectKey::of(&claim, &ListScope::All);
        assert_eq!((key.namespace.as_str(), key.name.as_str()), ("a", "gpu"));
        assert_eq!(
            &*classes,
            &[
                "fpga.example.com".into(),
                "gpu.nvidia.com".into(),
                "mig.nvidia.com".into()
            ] as &[Box<str>]
        );
        let template = object(
            "ResourceClaimTemplate",
            "a",
            "t",
            json!({"spec": {"devices": {"requests": [
                {"name": "r", "exactly": {"deviceClassName": "gpu.nvidia.com"}},
            ]}}}),
        );
        let classes = decode(ClaimKind::Template, &template).expect("decodes");
        assert_eq!(&*classes, &["gpu.nvidia.com".into()] as &[Box<str>]);
        // A claim read as a template has no spec.spec: no classes, not an error.
        let none = decode(ClaimKind::Template, &claim).expect("decodes");
        assert!(none.is_empty());
    }

    #[test]
    fn list_apply_delete_and_relist() {
        let index = Arc::new(ClaimIndex::new());
        let mut claims = ClaimWatch::driver(index.clone(), ClaimKind::Claim);
        let mut templates = ClaimWatch::driver(index.clone(), ClaimKind::Template);
        let spec = |class: &str| json!({"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": class}}]}});
        claims.handle(0, Event::Init);
        claims.handle(
            0,
            Event::InitApply(object("ResourceClaim", "a", "c", spec("x.io"))),
        );
        claims.handle(
            0,
            Event::InitApply(object("ResourceClaim", "a", "gone", spec("x.io"))),
        );
        assert_eq!(
            index.classes(ClaimKind::Claim, "a", "c"),
            None,
            "before InitDone"
        );
        claims.handle(0, Event::InitDone);
        templates.handle(0, Event::Init);
        assert!(!index.is_ready());
        templates.handle(
            0,
            Event::InitApply(object(
                "ResourceClaimTemplate",
                "a",
                "c",
                json!({"spec": spec("y.io")}),
            )),
        );
        templates.handle(0, Event::InitDone);
        assert!(index.is_ready());
        // Same name, two kinds: kept apart.
        let lookup = ClusterLookups {
            config_maps: None,
            claims: Some(index.clone()),
        };
        assert_eq!(
            lookup.claim_device_classes("a", ClaimSource::Claim("c")),
            Some(Arc::from(vec![Box::<str>::from("x.io")]))
        );
        assert_eq!(
            lookup.claim_device_classes("a", ClaimSource::Template("c")),
            Some(Arc::from(vec![Box::<str>::from("y.io")]))
        );
        assert_eq!(lookup.keys("a", "c"), None);
        claims.handle(
            0,
            Event::Apply(object("ResourceClaim", "b", "new", spec("z.io"))),
        );
        assert!(index.classes(ClaimKind::Claim, "b", "new").is_some());
        claims.handle(
            0,
            Event::Delete(object("ResourceClaim", "b", "new", spec("z.io"))),
        );
        assert!(index.classes(ClaimKind::Claim, "b", "new").is_none());
        claims.handle(0, Event::Init);
        claims.handle(
            0,
            Event::InitApply(object("ResourceClaim", "a", "c", spec("x.io"))),
        );
        claims.handle(0, Event::InitDone);
        assert!(index.classes(ClaimKind::Claim, "a", "gone").is_none());
        assert!(index.classes(ClaimKind::Claim, "a", "c").is_some());
    }

    /// Claims and templates have the Service watch's restarts too: after `410 Gone` the
    /// re-list replaces that kind's map only, and each kind counts its own restarts.
    #[test]
    fn a_relist_after_gone_replaces_one_kind_and_counts_its_restarts() {
        use crate::catalog::status::Freshness;
        let index = Arc::new(ClaimIndex::new());
        let mut claims = ClaimWatch::driver(index.clone(), ClaimKind::Claim);
        let mut templates = ClaimWatch::driver(index.clone(), ClaimKind::Template);
        let spec = json!({"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "x.io"}}]}});
        for (driver, kind, body) in [
            (&mut claims, "ResourceClaim", spec.clone()),
            (
                &mut templates,
                "ResourceClaimTemplate",
                json!({"spec": spec.clone()}),
            ),
        ] {
            driver.handle(0, Event::Init);
            driver.handle(0, Event::InitApply(object(kind, "a", "gone", body.clone())));
            driver.handle(0, Event::InitApply(object(kind, "a", "kept", body)));
            driver.handle(0, Event::InitDone);
        }
        assert!(index.is_ready());
        claims.restarted(0, &"410 Gone: too old resource version");
        assert_eq!(claims.status().counters().restarts(), 1);
        assert_eq!(templates.status().counters().restarts(), 0);
        assert!(matches!(
            claims.status().connection().freshness(),
            Freshness::Disconnected { .. }
        ));
        assert_eq!(
            templates.status().connection().freshness(),
            Freshness::Connected
        );
        claims.handle(0, Event::Init);
        claims.handle(
            0,
            Event::InitApply(object("ResourceClaim", "a", "kept", spec)),
        );
        claims.handle(0, Event::InitDone);
        assert!(index.classes(ClaimKind::Claim, "a", "gone").is_none());
        assert!(index.classes(ClaimKind::Claim, "a", "kept").is_some());
        assert!(index.classes(ClaimKind::Template, "a", "gone").is_some());
        assert_eq!(
            claims.status().connection().freshness(),
            Freshness::Connected
        );
        assert_eq!(claims.status().resource(), "resourceclaims");
        assert_eq!(templates.status().resource(), "resourceclaimtemplates");
    }

    /// An object without a spec is counted as skipped, not dropped without a trace.
    #[test]
    fn a_claim_without_spec_is_skipped_and_counted() {
        let index = Arc::new(ClaimIndex::new());
        let mut claims = ClaimWatch::driver(index.clone(), ClaimKind::Claim);
        let bare: DynamicObject = serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "ResourceClaim",
            "metadata": {"name": "bare", "namespace": "a"},
        }))
        .expect("an object");
        claims.handle(0, Event::Init);
        claims.handle(0, Event::InitApply(bare));
        claims.handle(0, Event::InitDone);
        assert!(index.classes(ClaimKind::Claim, "a", "bare").is_none());
        assert_eq!(claims.status().counters().skipped(), 1);
    }
}
