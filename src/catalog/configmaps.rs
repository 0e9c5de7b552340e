//! ConfigMap key names for the reserved-variable check of `envFrom` (with
//! `reserved.checkConfigMaps`): a watch over ConfigMaps that keeps only `namespace/name → keys`,
//! never the values.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::reserved::ConfigMapKeys;

type Key = (Box<str>, Box<str>);

/// `namespace/name → key names` of every ConfigMap. Reads are a map get.
#[derive(Debug, Default)]
pub struct ConfigMapIndex {
    keys: RwLock<HashMap<Key, Arc<[Box<str>]>>>,
    ready: AtomicBool,
}

impl ConfigMapIndex {
    /// An empty index, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the first full list is done (before it, a ConfigMap's keys are unknown).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many ConfigMaps are indexed.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<[Box<str>]>>> {
        // Every write is one insert, remove or whole-map swap: a poisoned lock holds a
        // consistent map.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<[Box<str>]>>> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ConfigMapKeys for ConfigMapIndex {
    fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        let key: Key = (namespace.into(), name.into());
        let keys = self.read().get(&key).cloned()?;
        Some(keys.iter().map(|k| k.to_string()).collect())
    }
}

/// The key names of a ConfigMap (`data` and `binaryData`), with its namespace and name.
/// `None` for an object that does not decode as a ConfigMap.
pub fn decode(object: DynamicObject) -> Option<(Key, Arc<[Box<str>]>)> {
    let value = serde_json::to_value(object).ok()?;
    let config_map: ConfigMap = serde_json::from_value(value).ok()?;
    let namespace = config_map.metadata.namespace.clone()?;
    let name = config_map.metadata.name.clone()?;
    let mut keys: Vec<Box<str>> = config_map
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(config_map.binary_data.iter().flat_map(|d| d.keys()))
        .map(|k| k.as_str().into())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(((namespace.into(), name.into()), keys.into()))
}

/// Applies watch events to a [`ConfigMapIndex`]; plain and synchronous, so tests feed it.
#[derive(Debug)]
pub struct ConfigMapSync {
    index: Arc<ConfigMapIndex>,
    buffer: Option<HashMap<Key, Arc<[Box<str>]>>>,
}

impl ConfigMapSync {
    /// Feeds `index`.
    pub fn new(index: Arc<ConfigMapIndex>) -> Self {
        Self {
            index,
            buffer: None,
        }
    }

    /// Applies one event. A re-list (Init … InitDone) replaces the whole index, so
    /// ConfigMaps deleted while the watch was down disappear.
    pub fn handle(&mut self, event: Event<DynamicObject>) {
        match event {
            Event::Init => self.buffer = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(buffer), Some((key, keys))) = (self.buffer.as_mut(), decode(object)) {
                    buffer.insert(key, keys);
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.buffer.take() {
                    *self.index.write() = buffer;
                    self.index.ready.store(true, Ordering::Release);
                }
            }
            Event::Apply(object) => {
                if let Some((key, keys)) = decode(object) {
                    self.index.write().insert(key, keys);
                }
            }
            Event::Delete(object) => {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                self.index
                    .write()
                    .remove(&(namespace.into_boxed_str(), name.into_boxed_str()));
            }
        }
    }
}

/// Watches ConfigMaps in all namespaces until the process ends; the API server going away
/// is not fatal (backoff and re-list).
pub async fn run(client: kube::Client, mut sync: ConfigMapSync) {
    let resource = ApiResource::erase::<ConfigMap>(&());
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default()
        .any_semantic()
        .timeout(super::watch::WATCH_TIMEOUT_SECS);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => sync.handle(event),
            Err(error) => tracing::warn!(%error, "ConfigMap watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut sync = ConfigMapSync::new(index.clone());
        sync.handle(Event::Init);
        sync.handle(Event::InitApply(config_map(
            "a",
            "gpu",
            json!({"NVIDIA_VISIBLE_DEVICES": "all", "B": "1"}),
        )));
        sync.handle(Event::InitApply(config_map("a", "gone", json!({"X": "1"}))));
        assert!(!index.is_ready());
        assert_eq!(
            index.keys("a", "gpu"),
            None,
            "not published before InitDone"
        );
        sync.handle(Event::InitDone);
        assert!(index.is_ready());
        assert_eq!(
            index.keys("a", "gpu"),
            Some(vec!["B".to_string(), "NVIDIA_VISIBLE_DEVICES".to_string()])
        );
        sync.handle(Event::Apply(config_map("b", "new", json!({"Y": "2"}))));
        assert_eq!(index.keys("b", "new"), Some(vec!["Y".to_string()]));
        sync.handle(Event::Delete(config_map("b", "new", json!({}))));
        assert_eq!(index.keys("b", "new"), None);
        // A re-list without `gone`: it disappears.
        sync.handle(Event::Init);
        sync.handle(Event::InitApply(config_map("a", "gpu", json!({"B": "1"}))));
        sync.handle(Event::InitDone);
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
        let (_, keys) = decode(object).expect("decodes");
        assert_eq!(&*keys, &["QAT0".into()] as &[Box<str>]);
        let garbage: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "m", "namespace": "a"},
            "data": "not a map",
        }))
        .expect("object");
        assert!(decode(garbage).is_none());
    }
}
