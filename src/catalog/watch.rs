//! The Service catalog from kube-runtime watchers.
//!
//! One watcher over Services in all namespaces, or — when the policy lists namespaces — one
//! per listed namespace plus `default` (for the `kubernetes` Service). Each watcher's events
//! go through [`CatalogSync::handle`], a plain synchronous function, so the event → catalog
//! logic is tested by feeding events, without an API server.
//!
//! Re-lists: `Init` starts a buffer, `InitApply` fills it, `InitDone` replaces exactly the
//! watcher's [`ListScope`] with it, which drops the Services deleted while the watch was
//! down (their `Delete` events were never seen). Until `InitDone` the old contents keep
//! being served: a re-list never shows reviews a half-filled catalog.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};

use super::service_fields::ServiceFields;
use super::{Catalog, ListScope};
use crate::servicelinks::ServiceLink;

/// The namespace that always holds the `kubernetes` Service.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Counters and state of the watchers, read by the metrics endpoint at scrape time and by
/// `/readyz`. A fresh (`Default`) value describes a static catalog: no watch, always current.
#[derive(Debug, Default)]
pub struct WatchCounters {
    events: AtomicU64,
    restarts: AtomicU64,
    skipped: AtomicU64,
    /// A cluster watch feeds the catalog (set by [`CatalogSync::new`]).
    watching: AtomicBool,
    /// Every scope has completed a list and none has failed or started re-listing since.
    connected: AtomicBool,
    /// [`monotonic_ms`] when the catalog was last known current (the last moment every
    /// scope was connected); 0 before the first time.
    current_at: AtomicU64,
}

/// How current the catalog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A static catalog (a file, or `--dev`'s embedded one): current by definition.
    Static,
    /// Watching, but the first full list has not completed yet.
    Syncing,
    /// Every watch is connected: the catalog follows the cluster (to within the watch's
    /// delivery delay).
    Connected,
    /// A watch failed (it restarts with backoff and re-lists) or is re-listing: the last
    /// known catalog is served, last known current `stale_for` ago.
    Disconnected {
        /// Time since every watch was last connected.
        stale_for: Duration,
    },
}

impl Freshness {
    /// Time since the catalog was last known current; zero when it is current (or static,
    /// or not synced yet: then `/readyz` is 503 anyway).
    pub fn staleness(self) -> Duration {
        match self {
            Freshness::Disconnected { stale_for } => stale_for,
            _ => Duration::ZERO,
        }
    }
}

/// Milliseconds on a monotonic clock that starts at 1 (so 0 can mean "never"); wall-clock
/// jumps do not make the catalog look fresher or staler.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

impl WatchCounters {
    /// How current the catalog is now.
    pub fn freshness(&self) -> Freshness {
        self.freshness_at(monotonic_ms())
    }

    /// How current the catalog is at `now` (a [`monotonic_ms`] reading).
    pub fn freshness_at(&self, now: u64) -> Freshness {
        if !self.watching.load(Ordering::Acquire) {
            return Freshness::Static;
        }
        if self.connected.load(Ordering::Acquire) {
            return Freshness::Connected;
        }
        match self.current_at.load(Ordering::Acquire) {
            0 => Freshness::Syncing,
            at => Freshness::Disconnected {
                stale_for: Duration::from_millis(now.saturating_sub(at)),
            },
        }
    }

    /// Whether every watch is connected (true for a static catalog).
    pub fn is_connected(&self) -> bool {
        !self.watching.load(Ordering::Acquire) || self.connected.load(Ordering::Acquire)
    }

    /// Watch events received (`Apply`, `Delete`, `InitApply`).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Times a watch failed and was restarted (with backoff).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Objects that did not decode as a usable Service and were left out.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Why a watched object was left out of the catalog.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SkipReason {
    /// The object is not a valid Service.
    #[error("Service {namespace}/{name} does not decode: {message}")]
    Undecodable {
        /// Namespace (may be empty).
        namespace: String,
        /// Name (may be empty).
        name: String,
        /// The decoder's message, with the field path.
        message: String,
    },
    /// No `metadata.name`.
    #[error("a Service in namespace {namespace:?} has no metadata.name")]
    NoName {
        /// Namespace.
        namespace: String,
    },
    /// No `metadata.namespace` on a cluster-wide watch.
    #[error("Service {name} has no metadata.namespace")]
    NoNamespace {
        /// Name.
        name: String,
    },
}

/// The scopes to watch: everything, or the listed namespaces plus `default`.
pub fn scopes(namespaces: &[String]) -> Vec<ListScope> {
    if namespaces.is_empty() {
        return vec![ListScope::All];
    }
    let mut names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    names.push(DEFAULT_NAMESPACE);
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|ns| ListScope::Namespace(ns.to_string()))
        .collect()
}

/// Decodes a watched object into the fields the kubelet reads.
pub fn decode_service(object: DynamicObject, scope: &ListScope) -> Result<ServiceLink, SkipReason> {
    let namespace = object_namespace(&object, scope);
    let name = object.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err(SkipReason::NoName { namespace });
    }
    if namespace.is_empty() {
        return Err(SkipReason::NoNamespace { name });
    }
    let undecodable = |message: String| SkipReason::Undecodable {
        namespace: namespace.clone(),
        name: name.clone(),
        message,
    };
    // `data` is the object without its metadata: `spec` and `status`. Only `spec`'s cluster
    // IP and ports are read; the rest is skipped without being copied.
    let fields = ServiceFields::decode(&object.data)
        .map_err(|e| undecodable(format!("at `{}`: {}", e.path(), e.inner())))?;
    Ok(fields.spec.unwrap_or_default().into_link(namespace, name))
}

fn object_namespace(object: &DynamicObject, scope: &ListScope) -> String {
    match (&object.metadata.namespace, scope) {
        (Some(ns), _) if !ns.is_empty() => ns.clone(),
        (_, ListScope::Namespace(ns)) => ns.clone(),
        (_, ListScope::All) => String::new(),
    }
}

#[derive(Debug)]
struct ScopeState {
    scope: ListScope,
    /// `Some` between `Init` and `InitDone`.
    buffer: Option<Vec<ServiceLink>>,
    /// Whether a full list has completed at least once.
    synced: bool,
    /// Listed, and no failure or new list since: this scope's part of the catalog is current.
    connected: bool,
}

/// Applies watch events to the catalog; one per process, fed by every watcher.
#[derive(Debug)]
pub struct CatalogSync {
    catalog: Arc<Catalog>,
    scopes: Vec<ScopeState>,
    counters: Arc<WatchCounters>,
}

impl CatalogSync {
    /// A sync for these scopes (see [`scopes`]); the catalog becomes ready once every scope
    /// has completed one full list.
    pub fn new(
        catalog: Arc<Catalog>,
        scopes: Vec<ListScope>,
        counters: Arc<WatchCounters>,
    ) -> Self {
        counters.watching.store(true, Ordering::Release);
        counters.connected.store(false, Ordering::Release);
        Self {
            catalog,
            scopes: scopes
                .into_iter()
                .map(|scope| ScopeState {
                    scope,
                    buffer: None,
                    synced: false,
                    connected: false,
                })
                .collect(),
            counters,
        }
    }

    /// Whether every scope is connected (listed, no failure since).
    pub fn all_connected(&self) -> bool {
        self.scopes.iter().all(|s| s.connected)
    }

    /// Marks scope `index` connected or not, and keeps the shared state in step: the moment
    /// the whole catalog stops (or starts) being current is recorded as "last known current".
    fn set_connected(&mut self, index: usize, connected: bool) {
        let was = self.all_connected();
        let Some(state) = self.scopes.get_mut(index) else {
            return;
        };
        state.connected = connected;
        let now = self.all_connected();
        if was || now {
            self.counters
                .current_at
                .store(monotonic_ms(), Ordering::Release);
        }
        self.counters.connected.store(now, Ordering::Release);
        if was && !now {
            tracing::warn!(
                scope = ?self.scopes.get(index).map(|s| &s.scope),
                "Service watch disconnected: serving the last known catalog until it re-lists"
            );
        } else if !was && now && self.catalog.is_ready() {
            tracing::info!("Service watch connected: the catalog is current");
        }
    }

    /// An event arrived on a connected watch: the catalog is known current now.
    fn mark_current(&self) {
        if self.all_connected() {
            self.counters
                .current_at
                .store(monotonic_ms(), Ordering::Release);
        }
    }

    /// The scopes, in the order their indexes refer to.
    pub fn scopes(&self) -> impl Iterator<Item = &ListScope> {
        self.scopes.iter().map(|s| &s.scope)
    }

    /// Whether every scope has completed a full list.
    pub fn all_synced(&self) -> bool {
        self.scopes.iter().all(|s| s.synced)
    }

    /// Applies one event of the watcher of scope number `index`.
    pub fn handle(&mut self, index: usize, event: Event<DynamicObject>) {
        let Some(state) = self.scopes.get_mut(index) else {
            tracing::error!(index, "watch event for an unknown scope; ignored");
            return;
        };
        match event {
            Event::Init => {
                tracing::debug!(scope = ?state.scope, "Service list started");
                state.buffer = Some(Vec::new());
                // Until InitDone, this scope serves its previous contents: not current.
                self.set_connected(index, false);
            }
            Event::InitApply(object) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                match decode_service(object, &state.scope) {
                    Ok(link) => state.buffer.get_or_insert_with(Vec::new).push(link),
                    Err(reason) => {
                        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%reason, "Service skipped");
                    }
                }
            }
            Event::InitDone => {
                let Some(links) = state.buffer.take() else {
                    // kube-runtime always sends Init first; replacing with nothing here would
                    // empty the scope, so a stray InitDone changes nothing.
                    tracing::warn!(scope = ?state.scope, "InitDone without Init; ignored");
                    return;
                };
                let listed = links.len();
                for error in self.catalog.replace(state.scope.clone(), links) {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "Service skipped");
                }
                state.synced = true;
                tracing::info!(scope = ?state.scope, services = listed, "Service list complete");
                self.set_connected(index, true);
                if !self.catalog.is_ready() && self.all_synced() {
                    self.catalog.mark_ready();
                    let stats = self.catalog.stats();
                    tracing::info!(
                        services = stats.services,
                        namespaces = stats.namespaces,
                        "Service catalog synced: ready"
                    );
                }
            }
            Event::Apply(object) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                let namespace = object_namespace(&object, &state.scope);
                let name = object.metadata.name.clone().unwrap_or_default();
                let outcome = decode_service(object, &state.scope)
                    .map_err(|e| e.to_string())
                    .and_then(|link| self.catalog.apply(&link).map_err(|e| e.to_string()));
                if let Err(reason) = outcome {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%reason, "Service skipped");
                    // Its previous version is no longer what the cluster has; a re-list would
                    // leave it out too, so do the same now instead of serving stale variables.
                    if !namespace.is_empty() && !name.is_empty() {
                        self.catalog.delete(&namespace, &name);
                    }
                }
                self.mark_current();
            }
            Event::Delete(object) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                let namespace = object_namespace(&object, &state.scope);
                // Deletion needs only the key, so even an undecodable object is removed.
                if let Some(name) = object.metadata.name.as_deref() {
                    self.catalog.delete(&namespace, name);
                }
                self.mark_current();
            }
        }
    }

    /// Records that the watcher of scope `index` failed; kube-runtime restarts it (after a
    /// backoff) with a fresh list.
    pub fn restarted(&mut self, index: usize, error: &dyn std::fmt::Display) {
        self.counters.restarts.fetch_add(1, Ordering::Relaxed);
        let scope = self.scopes.get(index).map(|s| &s.scope);
        tracing::warn!(?scope, %error, "Service watch failed; restarting with backoff");
        self.set_connected(index, false);
    }
}

/// Server-side lifetime of one watch request, and so the longest a watch the API server has
/// abandoned goes unnoticed. A watch that ends normally is resumed from its last
/// resourceVersion (no re-list; the API server sends a bookmark shortly before the end, so
/// even a namespace without writes resumes inside the watch cache's window), so this costs
/// one request per scope every 30 s.
///
/// Why it must be short: when a watcher falls behind a burst of writes (envlink starved of
/// CPU, or frozen), a 1.20 API server force-closes it ("Forcing watcher close due to
/// unresponsiveness") but leaves the HTTP stream open and silent until this timeout ends the
/// request — verified with a plain HTTP client, so every client (the kubelet's informers,
/// with their 5-10 minute watches, included) is blind until then. The e2e test
/// `watch_survives_a_burst_while_envlink_is_frozen` reproduces it.
pub const WATCH_TIMEOUT_SECS: u32 = 30;

/// Client read timeout: longer than [`WATCH_TIMEOUT_SECS`], so a healthy watch never hits
/// it; it ends a watch whose connection died without a FIN (a vanished peer, a dropped NAT
/// entry), which no timeout on the server side can.
pub const WATCH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `410 Gone` (or `Expired`): the watch's resourceVersion has left the API server's window
/// (typically after an outage with writes meanwhile); the watcher re-lists on its next poll.
fn is_desync(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// kube-runtime's default backoff (0.8 s doubling to 30 s, reset after 120 s of health),
/// except right after a desync: that error means the API server answered, so the re-list
/// it needs starts at once (as client-go's reflector does) instead of waiting out a backoff
/// grown during the outage, and the backoff starts over.
struct RelistAtOnce {
    inner: DefaultBackoff,
    /// Set by the stream when the error about to be backed off is a desync.
    desync: Arc<AtomicBool>,
}

impl Iterator for RelistAtOnce {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.desync.swap(false, Ordering::Relaxed) {
            self.inner.reset();
            return Some(Duration::ZERO);
        }
        self.inner.next()
    }
}

impl Backoff for RelistAtOnce {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Runs the watchers until the process ends, feeding `sync`. The API server going away is
/// not fatal: each watcher backs off and re-lists, and the catalog keeps serving meanwhile.
pub async fn run(client: kube::Client, mut sync: CatalogSync) {
    let resource = ApiResource::erase::<Service>(&());
    // `any_semantic`: the first list may come from the API server's watch cache instead of
    // etcd (what client-go informers do), which is far cheaper with many Services.
    let config = watcher::Config::default()
        .any_semantic()
        .timeout(WATCH_TIMEOUT_SECS);
    let streams = sync.scopes().enumerate().map(|(index, scope)| {
        let api: Api<DynamicObject> = match scope {
            ListScope::All => Api::all_with(client.clone(), &resource),
            ListScope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        };
        let desync = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&desync);
        watcher::watcher(api, config.clone())
            .inspect(move |item| {
                if item.as_ref().is_err_and(is_desync) {
                    flag.store(true, Ordering::Relaxed);
                }
            })
            .backoff(RelistAtOnce {
                inner: DefaultBackoff::default(),
                desync,
            })
            .map(move |item| (index, item))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    while let Some((index, item)) = events.next().await {
        match item {
            Ok(event) => sync.handle(index, event),
            Err(error) => sync.restarted(index, &error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, ip: &str, port: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": port, "protocol": "TCP"}]}
        }))
        .expect("dynamic object")
    }

    fn host(catalog: &Catalog, ns: &str, name: &str) -> Option<String> {
        let s = catalog.service(ns, name)?;
        s.variables()
            .find(|(n, _)| n.ends_with("_SERVICE_HOST"))
            .map(|(_, v)| v.to_string())
    }

    fn sync(scopes: Vec<ListScope>) -> (Arc<Catalog>, Arc<WatchCounters>, CatalogSync) {
        let catalog = Arc::new(Catalog::new());
        let counters = Arc::new(WatchCounters::default());
        let s = CatalogSync::new(catalog.clone(), scopes, counters.clone());
        (catalog, counters, s)
    }

    #[test]
    fn initial_list_builds_the_catalog_and_then_ready() {
        let (catalog, counters, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(
            0,
            Event::InitApply(service("default", "kubernetes", "10.96.0.1", 443)),
        );
        s.handle(
            0,
            Event::InitApply(service("shop", "redis", "10.96.0.7", 6379)),
        );
        // Not visible (and not ready) before the list is complete.
        assert!(catalog.service("shop", "redis").is_none());
        assert!(!catalog.is_ready());
        s.handle(0, Event::InitDone);
        assert!(catalog.is_ready());
        assert_eq!(
            host(&catalog, "shop", "redis").as_deref(),
            Some("10.96.0.7")
        );
        assert_eq!(catalog.stats().services, 2);
        assert_eq!(counters.events(), 2);
    }

    #[test]
    fn apply_and_delete() {
        let (catalog, counters, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitDone);
        assert!(catalog.is_ready());
        s.handle(0, Event::Apply(service("shop", "db", "10.0.0.1", 5432)));
        assert_eq!(host(&catalog, "shop", "db").as_deref(), Some("10.0.0.1"));
        s.handle(0, Event::Apply(service("shop", "db", "10.0.0.2", 5432)));
        assert_eq!(host(&catalog, "shop", "db").as_deref(), Some("10.0.0.2"));
        s.handle(0, Event::Delete(service("shop", "db", "10.0.0.2", 5432)));
        assert!(catalog.service("shop", "db").is_none());
        // A repeated delete is harmless.
        s.handle(0, Event::Delete(service("shop", "db", "10.0.0.2", 5432)));
        assert_eq!(counters.events(), 4);
    }

    #[test]
    fn relist_drops_services_deleted_while_the_watch_was_down() {
        let (catalog, counters, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "gone", "10.0.0.1", 80)));
        s.handle(0, Event::InitApply(service("a", "kept", "10.0.0.2", 80)));
        s.handle(0, Event::InitDone);
        s.restarted(0, &"connection refused");
        assert_eq!(counters.restarts(), 1);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "kept", "10.0.0.2", 80)));
        // During the re-list, the old contents are still served.
        assert!(catalog.service("a", "gone").is_some());
        s.handle(0, Event::InitDone);
        assert!(catalog.service("a", "gone").is_none());
        assert!(catalog.service("a", "kept").is_some());
        assert!(catalog.is_ready());
    }

    #[test]
    fn a_desync_relists_at_once_and_restarts_the_backoff() {
        let desync = Arc::new(AtomicBool::new(false));
        let mut backoff = RelistAtOnce {
            inner: DefaultBackoff::default(),
            desync: Arc::clone(&desync),
        };
        let grown: Vec<Duration> = (0..6).filter_map(|_| backoff.next()).collect();
        assert!(grown.iter().all(|d| !d.is_zero()), "{grown:?}");
        desync.store(true, Ordering::Relaxed);
        assert_eq!(backoff.next(), Some(Duration::ZERO));
        // The flag is consumed, and the next failure starts from the smallest delay again.
        let next = backoff.next().expect("a delay");
        assert!(
            !next.is_zero() && next < grown[5],
            "{next:?} after {grown:?}"
        );
        let gone = watcher::Error::WatchError(Box::new(kube::core::Status {
            code: 410,
            ..Default::default()
        }));
        assert!(is_desync(&gone));
        assert!(!is_desync(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn undecodable_objects_are_skipped_not_fatal() {
        let (catalog, counters, mut s) = sync(vec![ListScope::All]);
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "broken", "namespace": "a"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .expect("dynamic object");
        // Decodes, but cannot be precomputed: a quote in a port name (API validation never
        // lets one through; a static file or a broken server might).
        let unsafe_text: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "quoted", "namespace": "a"},
            "spec": {"clusterIP": "10.0.0.9", "ports": [{"name": "a\"b", "port": 80}]}
        }))
        .expect("dynamic object");
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(bad.clone()));
        s.handle(0, Event::InitApply(unsafe_text));
        s.handle(0, Event::InitApply(service("a", "fine", "10.0.0.1", 80)));
        s.handle(0, Event::InitDone);
        assert!(catalog.is_ready());
        assert!(catalog.service("a", "broken").is_none());
        assert!(catalog.service("a", "quoted").is_none());
        assert!(catalog.service("a", "fine").is_some());
        assert_eq!(counters.skipped(), 2);
        // An update that makes a known Service undecodable removes the stale entry.
        s.handle(0, Event::Apply(service("a", "broken", "10.0.0.5", 80)));
        assert!(catalog.service("a", "broken").is_some());
        s.handle(0, Event::Apply(bad));
        assert!(catalog.service("a", "broken").is_none());
        assert_eq!(counters.skipped(), 3);
    }

    #[test]
    fn decode_errors_name_the_field() {
        let bad: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "a"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .expect("dynamic object");
        let err = decode_service(bad, &ListScope::All).expect_err("bad port");
        assert!(err.to_string().contains("spec.ports[0].port"), "{err}");
        let nameless: DynamicObject =
            serde_json::from_value(json!({"metadata": {"namespace": "a"}})).expect("object");
        assert!(matches!(
            decode_service(nameless, &ListScope::All),
            Err(SkipReason::NoName { .. })
        ));
    }

    #[test]
    fn namespaced_scopes_replace_only_their_namespace_and_ready_waits_for_all() {
        let scopes = scopes(&["shop".to_string(), "default".to_string()]);
        assert_eq!(
            scopes,
            vec![
                ListScope::Namespace("default".into()),
                ListScope::Namespace("shop".into())
            ]
        );
        let (catalog, _, mut s) = sync(scopes);
        s.handle(0, Event::Init);
        s.handle(
            0,
            Event::InitApply(service("default", "kubernetes", "10.96.0.1", 443)),
        );
        s.handle(0, Event::InitDone);
        assert!(!catalog.is_ready(), "shop has not listed yet");
        s.handle(1, Event::Init);
        s.handle(1, Event::InitApply(service("shop", "web", "10.96.0.2", 80)));
        s.handle(1, Event::InitApply(service("shop", "old", "10.96.0.3", 80)));
        s.handle(1, Event::InitDone);
        assert!(catalog.is_ready());
        // A re-list of `shop` leaves `default` alone.
        s.handle(1, Event::Init);
        s.handle(1, Event::InitApply(service("shop", "web", "10.96.0.2", 80)));
        s.handle(1, Event::InitDone);
        assert!(catalog.service("shop", "old").is_none());
        assert!(catalog.service("shop", "web").is_some());
        assert!(catalog.service("default", "kubernetes").is_some());
        // An object without a namespace on a namespaced watch belongs to that namespace.
        let bare: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "bare"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 1}]}
        }))
        .expect("object");
        s.handle(1, Event::Apply(bare));
        assert!(catalog.service("shop", "bare").is_some());
    }

    #[test]
    fn stray_init_done_changes_nothing() {
        let (catalog, _, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "x", "10.0.0.1", 80)));
        s.handle(0, Event::InitDone);
        s.handle(0, Event::InitDone);
        assert!(catalog.service("a", "x").is_some());
    }

    #[test]
    fn freshness_follows_the_watch() {
        // No watch: a static catalog is current by definition.
        assert_eq!(WatchCounters::default().freshness(), Freshness::Static);
        assert!(WatchCounters::default().is_connected());

        let (catalog, counters, mut s) = sync(vec![ListScope::All]);
        assert_eq!(counters.freshness(), Freshness::Syncing);
        assert!(!counters.is_connected());
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "x", "10.0.0.1", 80)));
        assert_eq!(counters.freshness(), Freshness::Syncing);
        s.handle(0, Event::InitDone);
        assert_eq!(counters.freshness(), Freshness::Connected);
        assert!(
            counters.current_at.load(Ordering::Acquire) > 0,
            "a completed list marks the catalog current"
        );

        // The watch fails: stale from that moment on, growing with time.
        s.restarted(0, &"connection refused");
        let at = counters.current_at.load(Ordering::Acquire);
        assert_eq!(
            counters.freshness_at(at + 90_000),
            Freshness::Disconnected {
                stale_for: Duration::from_secs(90)
            }
        );
        assert_eq!(
            counters.freshness_at(at + 1_500).staleness(),
            Duration::from_millis(1_500)
        );
        // Repeated failures while down do not make it look fresher.
        s.restarted(0, &"connection refused");
        assert_eq!(counters.current_at.load(Ordering::Acquire), at);
        // A clock reading before the mark (cannot happen, but) saturates at zero.
        assert_eq!(counters.freshness_at(0).staleness(), Duration::ZERO);
        // The catalog keeps serving what it had.
        assert!(catalog.service("a", "x").is_some());
        assert!(catalog.is_ready());

        // Re-listing is not current yet; InitDone is.
        s.handle(0, Event::Init);
        assert!(matches!(
            counters.freshness(),
            Freshness::Disconnected { .. }
        ));
        s.handle(0, Event::InitDone);
        assert_eq!(counters.freshness(), Freshness::Connected);
        assert_eq!(counters.restarts(), 2);
    }

    #[test]
    fn freshness_needs_every_scope() {
        let (_, counters, mut s) = sync(scopes(&["shop".to_string()]));
        for index in [0, 1] {
            s.handle(index, Event::Init);
            s.handle(index, Event::InitDone);
        }
        assert_eq!(counters.freshness(), Freshness::Connected);
        // One namespace's watch fails: events on the other do not make the catalog current.
        s.restarted(1, &"timeout");
        let at = counters.current_at.load(Ordering::Acquire);
        s.handle(0, Event::Apply(service("default", "x", "10.0.0.1", 80)));
        s.handle(0, Event::Delete(service("default", "x", "10.0.0.1", 80)));
        assert_eq!(counters.current_at.load(Ordering::Acquire), at);
        assert!(!counters.is_connected());
        s.handle(1, Event::Init);
        s.handle(1, Event::InitDone);
        assert_eq!(counters.freshness(), Freshness::Connected);
    }

    #[test]
    fn all_namespaces_is_one_scope() {
        assert_eq!(scopes(&[]), vec![ListScope::All]);
    }
}
