//! ConfigMap key names for the reserved-variable check of `envFrom` (with
//! `reserved.checkConfigMaps`): a watch over ConfigMaps (through the common
//! [`driver`](super::driver)) that keeps only `namespace/name → keys`, never the values.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::ListScope;
use super::driver::{ObjectKey, SkipReason, WatchIndex};
use super::keyed::NamedIndex;
use crate::reserved::ConfigMapKeys;

/// The key names of one ConfigMap, sorted and deduplicated.
type Keys = Arc<[Box<str>]>;

/// `namespace/name → key names` of every ConfigMap. Reads are a map get.
#[derive(Debug, Default)]
pub struct ConfigMapIndex {
    keys: NamedIndex<Keys>,
}

impl ConfigMapIndex {
    /// An empty index, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the first full list is done (before it, a ConfigMap's keys are unknown).
    pub fn is_ready(&self) -> bool {
        self.keys.is_ready()
    }

    /// How many ConfigMaps are indexed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl ConfigMapKeys for ConfigMapIndex {
    fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let keys = self.keys.get(namespace, name)?;
        Some(keys.iter().map(|k| k.to_string()).collect())
    }

    /// The stored list itself (sorted, deduplicated by [`decode_keys`]): no copy per lookup.
    fn shared_keys(&self, namespace: &str, name: &str) -> Option<Arc<[Box<str>]>> {
        self.keys.get(namespace, name)
    }
}

/// The two maps of a ConfigMap whose key names are kept; their values are skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapFields {
    #[serde(default)]
    data: Option<KeyNames>,
    #[serde(default)]
    binary_data: Option<KeyNames>,
}

/// The keys of one JSON object; the values are skipped unread (never copied, never kept).
#[derive(Debug, Default)]
struct KeyNames(Vec<Box<str>>);

impl<'de> Deserialize<'de> for KeyNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = KeyNames;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyNames, A::Error> {
                let mut keys = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key.into_boxed_str());
                }
                Ok(KeyNames(keys))
            }
        }
        deserializer.deserialize_map(KeysVisitor)
    }
}

/// The key names of a ConfigMap (`data` and `binaryData`), sorted and deduplicated, read from
/// the object's fields beside its metadata without copying them into another tree; an error
/// (with the field path) when they are not maps.
pub fn decode_keys(object: &DynamicObject) -> Result<Keys, String> {
    let fields: ConfigMapFields = serde_path_to_error::deserialize(&object.data)
        .map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))?;
    let mut keys: Vec<Box<str>> = fields
        .data
        .into_iter()
        .chain(fields.binary_data)
        .flat_map(|names| names.0)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys.into())
}

/// The ConfigMap watch's side of the [`driver`](super::driver): items are keys with their
/// object's key.
impl WatchIndex for ConfigMapIndex {
    type Item = (ObjectKey, Keys);
    type Error = std::convert::Infallible;

    fn resource(&self) -> ApiResource {
        ApiResource::erase::<ConfigMap>(&())
    }

    fn decode(&self, key: ObjectKey, object: DynamicObject) -> Result<Self::Item, SkipReason> {
        match decode_keys(&object) {
            Ok(keys) => Ok((key, keys)),
            Err(message) => Err(key.undecodable("ConfigMap", message)),
        }
    }

    fn apply(&self, (key, keys): Self::Item) -> Result<(), Self::Error> {
        self.keys.insert(&key, keys);
        Ok(())
    }

    fn delete(&self, key: &ObjectKey) {
        self.keys.remove(key);
    }

    fn reset(&self, scope: &ListScope, items: Vec<Self::Item>) -> Vec<Self::Error> {
        self.keys.replace(scope, items);
        Vec::new()
    }

    fn mark_ready(&self) {
        self.keys.mark_ready();
    }

    fn is_ready(&self) -> bool {
        self.keys.is_ready()
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The driver of the ConfigMap watch (all namespaces).
pub type ConfigMapSync = super::driver::WatchDriver<ConfigMapIndex>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn config_map(ns: &str, name: &str, data: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": data,
        }))
        .expect("a ConfigMap")
    }

    #[test]
    fn list_apply_delete_and_relist() {
        let index = Arc::new(ConfigMapIndex::new());
        let mut sync = ConfigMapSync::cluster_wide(index.clone());
        sync.handle(0, Event::Init);
        sync.handle(
            0,
            Event::InitApply(config_map(
                "a",
                "gpu",
                json!({"NVIDIA_VISIBLE_DEVICES": "all", "B": "1"}),
            )),
        );
        sync.handle(
            0,
            Event::InitApply(config_map("a", "gone", json!({"X": "1"}))),
        );
        assert!(!index.is_ready());
        assert_eq!(
            index.keys("a", "gpu"),
            None,
            "not published before InitDone"
        );
        sync.handle(0, Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(
            index.keys("a", "gpu"),
            Some(vec!["B".to_string(), "NVIDIA_VISIBLE_DEVICES".to_string()])
        );
        sync.handle(0, Event::Apply(config_map("b", "new", json!({"Y": "2"}))));
        assert_eq!(index.keys("b", "new"), Some(vec!["Y".to_string()]));
        sync.handle(0, Event::Delete(config_map("b", "new", json!({}))));
        assert_eq!(index.keys("b", "new"), None);
        // A re-list without `gone`: it disappears.
        sync.handle(0, Event::Init);
        sync.handle(
            0,
            Event::InitApply(config_map("a", "gpu", json!({"B": "1"}))),
        );
        sync.handle(0, Event::InitDone);
        assert_eq!(index.keys("a", "gone"), None);
        assert_eq!(index.keys("a", "gpu"), Some(vec!["B".to_string()]));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn binary_data_keys_count_and_garbage_is_skipped() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "m", "namespace": "a"},
            "binaryData": {"QAT0": "AAAA"},
        }))
        .expect("object");
        let keys = decode_keys(&object).expect("decodes");
        assert_eq!(&*keys, &["QAT0".into()] as &[Box<str>]);
        let garbage: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "m", "namespace": "a"},
            "data": "not a map",
        }))
        .expect("object");
        let error = decode_keys(&garbage).expect_err("not a map");
        assert!(error.starts_with("at `data`"), "{error}");
    }

    /// The ConfigMap watch has what the Service watch has: a re-list after `410 Gone`
    /// replaces the index (dropping what was deleted meanwhile), restarts are counted, and the
    /// connection goes stale until the list completes.
    #[test]
    fn a_relist_after_gone_replaces_the_index_and_counts_the_restart() {
        use super::super::status::Freshness;
        let index = Arc::new(ConfigMapIndex::new());
        let mut sync = ConfigMapSync::cluster_wide(index.clone());
        let status = sync.status();
        sync.handle(0, Event::Init);
        sync.handle(
            0,
            Event::InitApply(config_map("a", "gone", json!({"X": "1"}))),
        );
        sync.handle(
            0,
            Event::InitApply(config_map("a", "kept", json!({"Y": "1"}))),
        );
        sync.handle(0, Event::InitDone);
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        sync.restarted(0, &"410 Gone: too old resource version");
        assert_eq!(status.counters().restarts(), 1);
        assert!(matches!(
            status.connection().freshness(),
            Freshness::Disconnected { .. }
        ));
        sync.handle(0, Event::Init);
        sync.handle(
            0,
            Event::InitApply(config_map("a", "kept", json!({"Y": "1"}))),
        );
        assert!(
            index.keys("a", "gone").is_some(),
            "served until the list is done"
        );
        sync.handle(0, Event::InitDone);
        assert_eq!(index.keys("a", "gone"), None);
        assert_eq!(index.keys("a", "kept"), Some(vec!["Y".to_string()]));
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        assert_eq!(status.counters().events(), 3);
        assert_eq!(status.resource(), "configmaps");
    }

    /// An update that no longer decodes removes the stale keys (as for Services), and is
    /// counted as skipped instead of being dropped without a trace.
    #[test]
    fn an_undecodable_update_removes_the_stale_keys() {
        let index = Arc::new(ConfigMapIndex::new());
        let mut sync = ConfigMapSync::cluster_wide(index.clone());
        sync.handle(0, Event::Init);
        sync.handle(0, Event::InitDone);
        sync.handle(0, Event::Apply(config_map("a", "m", json!({"X": "1"}))));
        assert!(index.keys("a", "m").is_some());
        sync.handle(0, Event::Apply(config_map("a", "m", json!("not a map"))));
        assert_eq!(index.keys("a", "m"), None);
        assert_eq!(sync.status().counters().skipped(), 1);
    }

    /// An `InitApply` without `Init` (kube-runtime never sends one, but) used to be dropped
    /// silently, so the next `InitDone` replaced the index without it. Now it starts the list.
    #[test]
    fn an_init_apply_without_init_starts_a_list_instead_of_being_dropped() {
        let index = Arc::new(ConfigMapIndex::new());
        let mut sync = ConfigMapSync::cluster_wide(index.clone());
        sync.handle(0, Event::InitApply(config_map("a", "m", json!({"X": "1"}))));
        assert_eq!(index.keys("a", "m"), None, "not published before InitDone");
        sync.handle(0, Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(index.keys("a", "m"), Some(vec!["X".to_string()]));
        assert_eq!(sync.status().counters().events(), 1);
    }
}
