//! `namespace/name → value`: the store behind the small watched indexes (ConfigMap keys, DRA
//! device classes). Reads are one short read lock and a map get; a value is shared (`Arc`
//! inside `V`), never copied per lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::ListScope;
use super::driver::ObjectKey;

/// `(namespace, name)`.
pub type Key = (Box<str>, Box<str>);

/// One value per namespaced object, and whether the first full list is done.
#[derive(Debug)]
pub struct NamedIndex<V> {
    map: RwLock<HashMap<Key, V>>,
    ready: AtomicBool,
}

impl<V> Default for NamedIndex<V> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl<V: Clone> NamedIndex<V> {
    /// The value of `namespace/name`, if known.
    pub fn get(&self, namespace: &str, name: &str) -> Option<V> {
        let key: Key = (namespace.into(), name.into());
        self.read().get(&key).cloned()
    }

    /// Adds or replaces one value.
    pub fn insert(&self, key: &ObjectKey, value: V) {
        self.write().insert(key_of(key), value);
    }

    /// Removes one value (absent is fine).
    pub fn remove(&self, key: &ObjectKey) {
        self.write().remove(&key_of(key));
    }

    /// Replaces everything in `scope` with `entries` (a completed list), leaving other
    /// namespaces alone for a namespaced list.
    pub fn replace(&self, scope: &ListScope, entries: Vec<(ObjectKey, V)>) {
        let fresh = entries
            .into_iter()
            .filter(|(key, _)| scope.covers(&key.namespace))
            .map(|(key, value)| (key_of(&key), value));
        let mut map = self.write();
        map.retain(|(namespace, _), _| !scope.covers(namespace));
        map.extend(fresh);
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the first full list as done.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first full list is done (before it, an absent object is unknown, not
    /// missing).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Key, V>> {
        // Every write is one insert, remove, retain or whole-map swap: a poisoned lock holds
        // a consistent map.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Key, V>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key_of(key: &ObjectKey) -> Key {
    (key.namespace.as_str().into(), key.name.as_str().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_namespaced_replace_touches_only_its_namespace() {
        let index = NamedIndex::<u32>::default();
        index.insert(&key("a", "x"), 1);
        index.insert(&key("b", "y"), 2);
        index.replace(
            &ListScope::Namespace("a".into()),
            vec![(key("a", "z"), 3), (key("b", "ignored"), 4)],
        );
        assert_eq!(index.get("a", "x"), None);
        assert_eq!(index.get("a", "z"), Some(3));
        assert_eq!(index.get("b", "y"), Some(2));
        assert_eq!(index.get("b", "ignored"), None);
        index.replace(&ListScope::All, vec![(key("c", "w"), 5)]);
        assert_eq!(index.len(), 1);
        index.remove(&key("c", "w"));
        index.remove(&key("c", "w"));
        assert!(index.is_empty());
    }
}
