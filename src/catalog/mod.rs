//! The Service catalog: per-namespace, ready-made variable lists.
//!
//! Filled from a static file ([`file`]) or a kube-runtime watcher ([`watch`]). Work is done
//! once per watch event: a Service's variables are computed when it arrives and stored in
//! one allocation; a namespace is an immutable sorted map behind an `Arc`, so a review takes
//! one short read lock for a map get and an `Arc` clone, and never waits on an update.

pub mod configmaps;
pub mod file;
pub mod service_fields;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::servicelinks::{self, ServiceLink};

/// Separates names and values inside [`LinkedService`]'s buffer; [`ServiceLink`]s that
/// contain it are refused at ingest, so it can never be part of a name or value.
const SEP: char = '\0';

/// One Service with its kubelet variables precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedService {
    name: Box<str>,
    has_cluster_ip: bool,
    /// `NAME\0VALUE\0NAME\0VALUE...`: one allocation instead of two per variable, which is
    /// what keeps 100,000 Services within the memory target.
    vars: Box<str>,
    count: u32,
    reserved_hint: ReservedHint,
}

/// Whether any variable of a Service may be reserved, for one set of rules (by id): nearly
/// always `false`, and then a review skips the reserved-name check for all its variables.
/// Computed on first use, since the catalog does not know the policy.
///
/// One word per Service (100,000 Services: 0.8 MB): 0 until computed, then
/// `rules_id << 1 | answer` for the first rules asked about.
#[derive(Debug, Default)]
struct ReservedHint(AtomicU64);

impl Clone for ReservedHint {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl PartialEq for ReservedHint {
    /// A cache: two Services are equal whatever it holds.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ReservedHint {}

/// Why a Service cannot enter the catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    /// A field holds a quote, a backslash or a control character. API validation never lets
    /// one through (names are DNS labels, IPs are IPs, protocols an enum); refusing them
    /// keeps every variable JSON-safe, so the server can copy them into patches unescaped.
    #[error(
        "Service {namespace}/{name} has a character Kubernetes does not allow (a quote, a \
         backslash or a control character) in its name, cluster IP, port names or protocols"
    )]
    UnsafeText {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// No name.
    #[error("a Service without metadata.name")]
    NoName,
}

impl LinkedService {
    /// Computes the variables of a Service.
    pub fn new(link: &ServiceLink) -> Result<Self, IngestError> {
        let unsafe_text = |s: &str| s.chars().any(|c| c == '"' || c == '\\' || c.is_control());
        let has_unsafe = unsafe_text(&link.name)
            || unsafe_text(&link.cluster_ip)
            || link
                .ports
                .iter()
                .any(|p| unsafe_text(&p.name) || unsafe_text(&p.protocol));
        if has_unsafe {
            return Err(IngestError::UnsafeText {
                namespace: link.namespace.clone(),
                name: link.name.clone(),
            });
        }
        if link.name.is_empty() {
            return Err(IngestError::NoName);
        }
        let vars = servicelinks::service_variables(link);
        let mut buf =
            String::with_capacity(vars.iter().map(|v| v.name.len() + v.value.len() + 2).sum());
        for v in &vars {
            buf.push_str(&v.name);
            buf.push(SEP);
            buf.push_str(&v.value);
            buf.push(SEP);
        }
        Ok(Self {
            name: link.name.as_str().into(),
            has_cluster_ip: link.has_cluster_ip(),
            vars: buf.into_boxed_str(),
            count: u32::try_from(vars.len()).unwrap_or(u32::MAX),
            reserved_hint: ReservedHint::default(),
        })
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `spec.clusterIP` is set and not `None`.
    pub fn has_cluster_ip(&self) -> bool {
        self.has_cluster_ip
    }

    /// How many variables it gives.
    pub fn variable_count(&self) -> usize {
        self.count as usize
    }

    /// The variables, in the kubelet's order.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.variables_at().map(|(_, name, value)| (name, value))
    }

    /// The variables with the position of each, for [`LinkedService::variable_span`].
    pub fn variables_at(&self) -> impl Iterator<Item = (usize, &str, &str)> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let (name, value, next) = self.split_at_offset(at)?;
            let here = at;
            at = next;
            Some((here, name, value))
        })
    }

    /// The variable at position `at` (from [`LinkedService::variables_at`]) whose name and
    /// value lengths are known: two slices, no scan.
    /// `None` when the span does not fit (then it was not taken from this Service).
    pub fn variable_span(
        &self,
        at: usize,
        name_len: usize,
        value_len: usize,
    ) -> Option<(&str, &str)> {
        let name = self.vars.get(at..at + name_len)?;
        let value_at = at + name_len + 1;
        let value = self.vars.get(value_at..value_at + value_len)?;
        Some((name, value))
    }

    /// Whether any of its variables may be reserved under the rules `rules_id`, whose
    /// test is `may_be_reserved`. Remembered for the first rules asked about (a process has
    /// one policy); for others it is computed each time.
    pub fn may_have_reserved(&self, rules_id: u64, may_be_reserved: impl Fn(&str) -> bool) -> bool {
        let compute = || self.variables().any(|(name, _)| may_be_reserved(name));
        match self.reserved_hint.0.load(Ordering::Relaxed) {
            0 => {
                let hint = compute();
                // Only the first rules are remembered; a racing thread stores the same word.
                let word = (rules_id << 1) | u64::from(hint);
                let _ = self.reserved_hint.0.compare_exchange(
                    0,
                    word,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                hint
            }
            word if word >> 1 == rules_id => word & 1 == 1,
            _ => compute(),
        }
    }

    fn split_at_offset(&self, at: usize) -> Option<(&str, &str, usize)> {
        // SEP is one ASCII byte, so byte search finds exactly the char boundaries.
        let rest = self.vars.as_bytes().get(at..)?;
        let name_len = memchr::memchr(SEP as u8, rest)?;
        let value_len = memchr::memchr(SEP as u8, rest.get(name_len + 1..)?)?;
        if name_len == 0 {
            return None;
        }
        let (name, value) = self.variable_span(at, name_len, value_len)?;
        Some((name, value, at + name_len + value_len + 2))
    }
}

/// The Services of one namespace, sorted by name. Immutable once published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceIndex {
    services: BTreeMap<Box<str>, Arc<LinkedService>>,
}

impl NamespaceIndex {
    /// Looks up a Service by name.
    pub fn get(&self, name: &str) -> Option<&Arc<LinkedService>> {
        self.services.get(name)
    }

    /// All Services, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LinkedService>> {
        self.services.values()
    }

    /// How many Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Which part of the catalog a full re-list replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Every namespace (a cluster-wide watch).
    All,
    /// One namespace (a namespaced watch).
    Namespace(String),
}

/// Counts for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Services held.
    pub services: usize,
    /// Namespaces with at least one Service.
    pub namespaces: usize,
}

/// The Service catalog shared by the watcher (one writer) and the reviews (many readers).
#[derive(Debug, Default)]
pub struct Catalog {
    namespaces: RwLock<HashMap<Box<str>, Arc<NamespaceIndex>>>,
    /// Serialises writers so that copy-on-write happens outside the map's lock.
    writer: Mutex<()>,
    ready: AtomicBool,
}

impl Catalog {
    /// An empty catalog, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ready catalog holding these Services (static files, tests). Invalid ones are
    /// returned with their error.
    pub fn from_links(links: Vec<ServiceLink>) -> (Self, Vec<IngestError>) {
        let catalog = Self::new();
        let errors = catalog.replace(ListScope::All, links);
        catalog.mark_ready();
        (catalog, errors)
    }

    /// The index of a namespace, if it has Services.
    pub fn namespace(&self, namespace: &str) -> Option<Arc<NamespaceIndex>> {
        self.read_map().get(namespace).cloned()
    }

    /// One Service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<LinkedService>> {
        self.namespace(namespace)?.get(name).cloned()
    }

    /// Adds or replaces one Service.
    pub fn apply(&self, link: &ServiceLink) -> Result<(), IngestError> {
        let service = Arc::new(LinkedService::new(link)?);
        let _writer = self.lock_writer();
        let mut index = self
            .namespace(&link.namespace)
            .map(|i| (*i).clone())
            .unwrap_or_default();
        index.services.insert(link.name.as_str().into(), service);
        self.write_map()
            .insert(link.namespace.as_str().into(), Arc::new(index));
        Ok(())
    }

    /// Removes one Service (absent is fine: deletes may repeat after a re-list).
    pub fn delete(&self, namespace: &str, name: &str) {
        let _writer = self.lock_writer();
        let Some(current) = self.namespace(namespace) else {
            return;
        };
        if current.get(name).is_none() {
            return;
        }
        let mut index = (*current).clone();
        index.services.remove(name);
        let mut map = self.write_map();
        if index.is_empty() {
            map.remove(namespace);
        } else {
            map.insert(namespace.into(), Arc::new(index));
        }
        drop(map);
    }

    /// Replaces everything in `scope` with `links` (a completed re-list): Services deleted
    /// while the watch was down disappear here.
    pub fn replace(&self, scope: ListScope, links: Vec<ServiceLink>) -> Vec<IngestError> {
        let mut errors = Vec::new();
        let mut fresh: HashMap<Box<str>, NamespaceIndex> = HashMap::new();
        for link in links {
            if let ListScope::Namespace(ns) = &scope
                && &link.namespace != ns
            {
                continue;
            }
            match LinkedService::new(&link) {
                Ok(service) => {
                    fresh
                        .entry(link.namespace.as_str().into())
                        .or_default()
                        .services
                        .insert(link.name.as_str().into(), Arc::new(service));
                }
                Err(e) => errors.push(e),
            }
        }
        let _writer = self.lock_writer();
        let mut map = self.write_map();
        match &scope {
            ListScope::All => map.clear(),
            ListScope::Namespace(ns) => {
                map.remove(ns.as_str());
            }
        }
        for (ns, index) in fresh {
            map.insert(ns, Arc::new(index));
        }
        drop(map);
        errors
    }

    /// Services and namespaces held.
    pub fn stats(&self) -> CatalogStats {
        let map = self.read_map();
        CatalogStats {
            services: map.values().map(|i| i.len()).sum(),
            namespaces: map.len(),
        }
    }

    /// Marks the first full list as done.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first full list is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Arc<NamespaceIndex>>> {
        // A panic elsewhere cannot leave the map half-written (every write is one insert or a
        // clear followed by inserts of complete indexes), so a poisoned lock is still usable.
        self.namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, Arc<NamespaceIndex>>> {
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicelinks::LinkPort;

    pub(crate) fn link(ns: &str, name: &str, ip: &str, port: i32) -> ServiceLink {
        ServiceLink {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: vec![LinkPort {
                name: String::new(),
                port,
                protocol: "TCP".into(),
            }],
        }
    }

    #[test]
    fn precomputed_variables_equal_servicelinks() {
        let l = link("a", "redis-master", "fd00::5", 6379);
        let s = LinkedService::new(&l).expect("valid");
        let got: Vec<(String, String)> = s
            .variables()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = servicelinks::service_variables(&l)
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.variable_count(), want.len());
    }

    #[test]
    fn headless_has_no_variables_but_exists() {
        let (c, errors) = Catalog::from_links(vec![link("a", "h", "None", 80)]);
        assert!(errors.is_empty());
        let s = c.service("a", "h").expect("present");
        assert!(!s.has_cluster_ip());
        assert_eq!(s.variables().count(), 0);
    }

    #[test]
    fn apply_delete_and_snapshots_are_isolated() {
        let (c, _) = Catalog::from_links(vec![link("a", "x", "10.0.0.1", 80)]);
        let before = c.namespace("a").expect("ns a");
        c.apply(&link("a", "y", "10.0.0.2", 81)).expect("apply");
        c.apply(&link("a", "x", "10.0.0.9", 80)).expect("update");
        // A reader's snapshot does not change under it.
        assert_eq!(before.len(), 1);
        assert_eq!(
            before
                .get("x")
                .map(|s| s.variables().next().map(|v| v.1.to_string())),
            Some(Some("10.0.0.1".into()))
        );
        let after = c.namespace("a").expect("ns a");
        assert_eq!(after.len(), 2);
        c.delete("a", "x");
        c.delete("a", "x");
        c.delete("a", "y");
        assert!(c.namespace("a").is_none());
        assert_eq!(c.stats(), CatalogStats::default());
    }

    #[test]
    fn relist_drops_services_deleted_meanwhile() {
        let (c, _) = Catalog::from_links(vec![
            link("a", "gone", "10.0.0.1", 80),
            link("a", "kept", "10.0.0.2", 80),
            link("b", "other", "10.0.0.3", 80),
        ]);
        c.replace(ListScope::All, vec![link("a", "kept", "10.0.0.2", 80)]);
        assert!(c.service("a", "gone").is_none());
        assert!(c.service("a", "kept").is_some());
        assert!(c.namespace("b").is_none());
        assert_eq!(
            c.stats(),
            CatalogStats {
                services: 1,
                namespaces: 1
            }
        );
    }

    #[test]
    fn namespaced_relist_touches_only_its_namespace() {
        let (c, _) = Catalog::from_links(vec![
            link("a", "x", "10.0.0.1", 80),
            link("b", "y", "10.0.0.3", 80),
        ]);
        c.replace(
            ListScope::Namespace("a".into()),
            vec![
                link("a", "z", "10.0.0.4", 80),
                link("b", "ignored", "10.0.0.5", 80),
            ],
        );
        assert!(c.service("a", "x").is_none());
        assert!(c.service("a", "z").is_some());
        assert!(c.service("b", "y").is_some());
        assert!(c.service("b", "ignored").is_none());
    }

    #[test]
    fn json_unsafe_characters_are_refused() {
        for bad in ["x\0y", "x\"y", "x\\y", "x\ny"] {
            let (c, errors) = Catalog::from_links(vec![link("a", bad, "10.0.0.1", 80)]);
            assert_eq!(errors.len(), 1, "{bad:?}");
            assert!(c.namespace("a").is_none());
        }
        let (_, errors) = Catalog::from_links(vec![link("a", "ok", "10.0.0.1\"", 80)]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn reserved_hint_is_per_rules() {
        let service = LinkedService::new(&link("ns", "pcidevice-x", "10.0.0.1", 80)).expect("ok");
        let prefix = |name: &str| name.starts_with("PCIDEVICE_");
        let never = |_: &str| false;
        assert!(service.may_have_reserved(7, prefix));
        // Remembered for rules 7; other rules get their own answer, every time.
        assert!(service.may_have_reserved(7, never));
        assert!(!service.may_have_reserved(8, never));
        assert!(service.may_have_reserved(9, prefix));
        let plain = LinkedService::new(&link("ns", "web", "10.0.0.2", 80)).expect("ok");
        assert!(!plain.may_have_reserved(7, prefix));
    }

    #[test]
    fn variables_by_position() {
        let s = LinkedService::new(&link("a", "web", "10.0.0.1", 80)).expect("valid");
        let all: Vec<_> = s.variables_at().collect();
        assert_eq!(all.len(), s.variable_count());
        for (at, name, value) in all {
            assert_eq!(
                s.variable_span(at, name.len(), value.len()),
                Some((name, value))
            );
        }
        assert_eq!(s.variable_span(0, 10_000, 1), None);
        assert_eq!(s.variable_span(100_000, 1, 1), None);
    }
}
