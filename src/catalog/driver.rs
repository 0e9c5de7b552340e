//! One watch driver for every watched resource (Services, ConfigMaps, ResourceClaims and
//! their templates, and whatever comes next), as kubert's index does it: a resource says how
//! an object decodes and how its index applies, deletes and resets ([`WatchIndex`]); the
//! driver ([`WatchDriver`]) turns kube-runtime's watcher events into those calls and keeps
//! the resource's [`WatchStatus`] (events, restarts, skipped objects, connection, freshness).
//!
//! Re-lists: `Init` starts a buffer, `InitApply` fills it, `InitDone` replaces exactly the
//! watcher's [`ListScope`] with it ([`WatchIndex::reset`]), which drops the objects deleted
//! while the watch was down (their `Delete` events were never seen). Until `InitDone` the old
//! contents keep being served: a re-list never shows reviews a half-filled index. The index
//! is marked ready once every scope has completed one full list.
//!
//! [`WatchDriver::handle`] is a plain synchronous function, so the event → index logic is
//! tested by feeding events, without an API server; [`run`] feeds it from the watchers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, WatchEvent, WatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};

use super::ListScope;
use super::status::WatchStatus;

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
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How a watcher takes its first list of a scope, and every re-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InitialList {
    /// Streaming where the API server serves it ([`serves_streaming_lists`]), else
    /// paginated.
    #[default]
    Auto,
    /// `list` requests of 500 objects: every API server serves them.
    Paginated,
    /// One watch with `sendInitialEvents=true` (KEP-3157, the `WatchList` feature: on by
    /// default in 1.32 and from 1.34): the objects arrive as events, no page is buffered.
    Streaming,
}

/// Whether the API server streams the initial list of `resource` (`sendInitialEvents`): a
/// watch of a name no object has, which such a server ends with its initial-events-end
/// bookmark at once. Servers before 1.27 are not asked (they ignore the parameter, and the
/// probe would wait out its timeout); one that refuses the parameter (the feature gate off)
/// answers with an error. Retries with backoff while the API server cannot be reached.
pub async fn serves_streaming_lists(
    client: &kube::Client,
    resource: &ApiResource,
    scope: &ListScope,
) -> bool {
    let mut retry = Retry::new();
    loop {
        match probe_streaming_lists(client, resource, scope).await {
            Ok(streams) => return streams,
            Err(error) => {
                tracing::debug!(%error, kind = %resource.kind, "cannot ask the API server about streaming lists yet; retrying");
                retry.wait().await;
            }
        }
    }
}

/// The waits of a start-up question to the API server asked until it answers (the
/// streaming-list probe, DRA discovery): kube-runtime's default backoff, the one its
/// watchers use (0.8 s doubling to 30 s, with jitter).
pub struct Retry(DefaultBackoff);

impl Retry {
    /// A fresh backoff.
    pub fn new() -> Self {
        Self(DefaultBackoff::default())
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        // The default backoff never runs out; were it to, keep retrying at its maximum.
        let delay = self.0.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

/// One probe (see [`serves_streaming_lists`]) in `scope` (where envlink's RBAC lets it
/// watch); `Err` when the API server was not reached.
async fn probe_streaming_lists(
    client: &kube::Client,
    resource: &ApiResource,
    scope: &ListScope,
) -> Result<bool, kube::Error> {
    let version = client.apiserver_version().await?;
    let minor: u32 = version
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    if version.major != "1" || minor < 27 {
        return Ok(false);
    }
    let api = scoped_api(client, resource, scope);
    let params = WatchParams::default()
        .fields("metadata.name=envlink-streaming-list-probe")
        .timeout(5)
        .initial_events();
    let mut stream = match api.watch(&params, "0").await {
        Ok(stream) => stream.boxed(),
        Err(kube::Error::Api(_)) => return Ok(false),
        Err(error) => return Err(error),
    };
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    Ok(matches!(
        first,
        Ok(Some(Ok(WatchEvent::Bookmark(ref bookmark))))
            if bookmark.metadata.annotations.contains_key("k8s.io/initial-events-end")
    ))
}

/// Why a watched object was left out of its index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SkipReason {
    /// The object does not decode as its kind.
    #[error("{kind} {namespace}/{name} does not decode: {message}")]
    Undecodable {
        /// The object's kind (`Service`, `ConfigMap`, ...).
        kind: String,
        /// Namespace (may be empty).
        namespace: String,
        /// Name (may be empty).
        name: String,
        /// The decoder's message, with the field path.
        message: String,
    },
    /// No `metadata.name`.
    #[error("a {kind} in namespace {namespace:?} has no metadata.name")]
    NoName {
        /// The object's kind.
        kind: String,
        /// Namespace.
        namespace: String,
    },
    /// No `metadata.namespace` on a cluster-wide watch.
    #[error("{kind} {name} has no metadata.namespace")]
    NoNamespace {
        /// The object's kind.
        kind: String,
        /// Name.
        name: String,
    },
}

/// The namespace and name of a watched object: its metadata's, or — for a namespaced watch
/// whose object omits it — the watched namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    /// Namespace (empty when neither the object nor the scope names one).
    pub namespace: String,
    /// Name (empty when the object has none).
    pub name: String,
}

impl ObjectKey {
    /// The key of `object` seen on a watch of `scope`.
    pub fn of(object: &DynamicObject, scope: &ListScope) -> Self {
        let namespace = match (&object.metadata.namespace, scope) {
            (Some(ns), _) if !ns.is_empty() => ns.clone(),
            (_, ListScope::Namespace(ns)) => ns.clone(),
            (_, ListScope::All) => String::new(),
        };
        Self {
            namespace,
            name: object.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// The key, if it names an object (a name and a namespace); every kind envlink watches is
    /// namespaced.
    pub fn complete(self, kind: &str) -> Result<Self, SkipReason> {
        if self.name.is_empty() {
            return Err(SkipReason::NoName {
                kind: kind.to_string(),
                namespace: self.namespace,
            });
        }
        if self.namespace.is_empty() {
            return Err(SkipReason::NoNamespace {
                kind: kind.to_string(),
                name: self.name,
            });
        }
        Ok(self)
    }

    /// A decoding failure of this object.
    pub fn undecodable(&self, kind: &str, message: String) -> SkipReason {
        SkipReason::Undecodable {
            kind: kind.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message,
        }
    }
}

/// An index fed by a watch: how one object decodes, and how the index takes an object, loses
/// one, and is replaced by a completed list. Implementations do their own locking (readers
/// are the reviews); the driver calls them from one task.
pub trait WatchIndex: Send + Sync + 'static {
    /// What one object decodes to (only the fields the index keeps).
    type Item: Send;
    /// Why a decoded item cannot be stored.
    type Error: std::fmt::Display;

    /// The API resource watched.
    fn resource(&self) -> ApiResource;

    /// Decodes one object whose (complete) key is `key`.
    fn decode(&self, key: ObjectKey, object: DynamicObject) -> Result<Self::Item, SkipReason>;

    /// Adds or replaces one object.
    fn apply(&self, item: Self::Item) -> Result<(), Self::Error>;

    /// Removes one object (absent is fine: deletes may repeat after a re-list).
    fn delete(&self, key: &ObjectKey);

    /// Replaces everything in `scope` with `items` (a completed list); returns the items
    /// that could not be stored.
    fn reset(&self, scope: &ListScope, items: Vec<Self::Item>) -> Vec<Self::Error>;

    /// Marks the first full list (of every scope) as done.
    fn mark_ready(&self);

    /// Whether [`WatchIndex::mark_ready`] was called.
    fn is_ready(&self) -> bool;

    /// How many objects are held, for logs.
    fn len(&self) -> usize;

    /// Whether none are.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct ScopeState<T> {
    scope: ListScope,
    /// `Some` between `Init` and `InitDone`.
    buffer: Option<Vec<T>>,
    /// Whether a full list has completed at least once.
    synced: bool,
    /// Listed, and no failure or new list since: this scope's part of the index is current.
    connected: bool,
}

/// Applies the watch events of one resource to its index; one per resource, fed by every
/// watcher (scope) of that resource.
#[derive(Debug)]
pub struct WatchDriver<I: WatchIndex> {
    index: Arc<I>,
    /// The resource's kind, for logs and skip reasons.
    kind: String,
    scopes: Vec<ScopeState<I::Item>>,
    status: Arc<WatchStatus>,
    initial_list: InitialList,
}

impl<I: WatchIndex> WatchDriver<I> {
    /// A driver for these scopes; the index becomes ready once every scope has completed one
    /// full list. Its status (see [`WatchDriver::status`]) is watching from now on.
    pub fn new(index: Arc<I>, scopes: Vec<ListScope>) -> Self {
        let resource = index.resource();
        let status = Arc::new(WatchStatus::new(&resource.plural));
        status.connection().start_watching();
        Self {
            index,
            kind: resource.kind,
            scopes: scopes
                .into_iter()
                .map(|scope| ScopeState {
                    scope,
                    buffer: None,
                    synced: false,
                    connected: false,
                })
                .collect(),
            status,
            initial_list: InitialList::default(),
        }
    }

    /// The same driver, taking its lists this way (default: [`InitialList::Auto`]).
    #[must_use]
    pub fn with_initial_list(mut self, initial_list: InitialList) -> Self {
        self.initial_list = initial_list;
        self
    }

    /// A driver of one cluster-wide watch.
    pub fn cluster_wide(index: Arc<I>) -> Self {
        Self::new(index, vec![ListScope::All])
    }

    /// The counters and connection state this driver keeps.
    pub fn status(&self) -> Arc<WatchStatus> {
        self.status.clone()
    }

    /// The scopes, in the order their indexes refer to.
    pub fn scopes(&self) -> impl Iterator<Item = &ListScope> {
        self.scopes.iter().map(|s| &s.scope)
    }

    /// Whether every scope has completed a full list.
    pub fn all_synced(&self) -> bool {
        self.scopes.iter().all(|s| s.synced)
    }

    /// Whether every scope is connected (listed, no failure since).
    pub fn all_connected(&self) -> bool {
        self.scopes.iter().all(|s| s.connected)
    }

    /// Applies one event of the watcher of scope number `index`.
    pub fn handle(&mut self, index: usize, event: Event<DynamicObject>) {
        if index >= self.scopes.len() {
            tracing::error!(index, kind = %self.kind, "watch event for an unknown scope; ignored");
            return;
        }
        match event {
            Event::Init => self.list_started(index),
            Event::InitApply(object) => self.listed(index, object),
            Event::InitDone => self.list_done(index),
            Event::Apply(object) => self.applied(index, object),
            Event::Delete(object) => self.deleted(index, object),
        }
    }

    /// Records that the watcher of scope `index` failed; [`run`] starts a new one (after a
    /// backoff), which lists the scope afresh.
    pub fn restarted(&mut self, index: usize, error: &dyn std::fmt::Display) {
        self.status.counters().count_restart();
        let scope = self.scopes.get(index).map(|s| &s.scope);
        tracing::warn!(?scope, %error, "{} watch failed; restarting with backoff", self.kind);
        self.set_connected(index, false);
    }

    fn list_started(&mut self, index: usize) {
        if let Some(state) = self.scopes.get_mut(index) {
            tracing::debug!(scope = ?state.scope, "{} list started", self.kind);
            state.buffer = Some(Vec::new());
        }
        // Until InitDone, this scope serves its previous contents: not current.
        self.set_connected(index, false);
    }

    fn listed(&mut self, index: usize, object: DynamicObject) {
        self.status.counters().count_event();
        let Some(state) = self.scopes.get_mut(index) else {
            return;
        };
        let item = ObjectKey::of(&object, &state.scope)
            .complete(&self.kind)
            .and_then(|key| self.index.decode(key, object));
        let unannounced = state.buffer.is_none();
        if unannounced {
            // kube-runtime always sends Init first. Were one lost, this object still belongs
            // to a list under way: start its buffer rather than drop the object (which that
            // list's InitDone would then delete from the index).
            tracing::warn!(scope = ?state.scope, "{} InitApply without Init; starting a list", self.kind);
        }
        let buffer = state.buffer.get_or_insert_with(Vec::new);
        match item {
            Ok(item) => buffer.push(item),
            Err(reason) => self.skipped(&reason),
        }
        if unannounced {
            self.set_connected(index, false);
        }
    }

    fn list_done(&mut self, index: usize) {
        let Some(state) = self.scopes.get_mut(index) else {
            return;
        };
        let Some(items) = state.buffer.take() else {
            // kube-runtime always sends Init first; replacing with nothing here would
            // empty the scope, so a stray InitDone changes nothing.
            tracing::warn!(scope = ?state.scope, "{} InitDone without Init; ignored", self.kind);
            return;
        };
        let listed = items.len();
        state.synced = true;
        let errors = self.index.reset(&state.scope, items);
        tracing::info!(scope = ?state.scope, objects = listed, "{} list complete", self.kind);
        for error in errors {
            self.skipped(&error);
        }
        self.set_connected(index, true);
        if !self.index.is_ready() && self.all_synced() {
            self.index.mark_ready();
            tracing::info!(
                objects = self.index.len(),
                "{} index synced: ready",
                self.kind
            );
        }
    }

    fn applied(&mut self, index: usize, object: DynamicObject) {
        self.status.counters().count_event();
        let Some(state) = self.scopes.get(index) else {
            return;
        };
        let key = ObjectKey::of(&object, &state.scope);
        let outcome = key
            .clone()
            .complete(&self.kind)
            .and_then(|key| self.index.decode(key, object))
            .map_err(|e| e.to_string())
            .and_then(|item| self.index.apply(item).map_err(|e| e.to_string()));
        if let Err(reason) = outcome {
            self.skipped(&reason);
            // Its previous version is no longer what the cluster has; a re-list would leave
            // it out too, so do the same now instead of serving stale data.
            if !key.namespace.is_empty() && !key.name.is_empty() {
                self.index.delete(&key);
            }
        }
        self.mark_current();
    }

    fn deleted(&mut self, index: usize, object: DynamicObject) {
        self.status.counters().count_event();
        let Some(state) = self.scopes.get(index) else {
            return;
        };
        // Deletion needs only the key, so even an undecodable object is removed.
        let key = ObjectKey::of(&object, &state.scope);
        if !key.name.is_empty() {
            self.index.delete(&key);
        }
        self.mark_current();
    }

    fn skipped(&self, reason: &dyn std::fmt::Display) {
        self.status.counters().count_skipped();
        tracing::warn!(%reason, "{} skipped", self.kind);
    }

    /// Marks scope `index` connected or not, and keeps the shared state in step: the moment
    /// the whole index stops (or starts) being current is recorded as "last known current".
    fn set_connected(&mut self, index: usize, connected: bool) {
        let was = self.all_connected();
        let Some(state) = self.scopes.get_mut(index) else {
            return;
        };
        state.connected = connected;
        let now = self.all_connected();
        self.status.connection().transition(was, now);
        if was && !now {
            tracing::warn!(
                scope = ?self.scopes.get(index).map(|s| &s.scope),
                "{} watch disconnected: serving the last known contents until it re-lists",
                self.kind
            );
        } else if !was && now && self.index.is_ready() {
            tracing::info!("{} watch connected: the index is current", self.kind);
        }
    }

    /// An event arrived on a connected watch: the index is known current now.
    fn mark_current(&self) {
        if self.all_connected() {
            self.status.connection().mark_current();
        }
    }
}

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

/// One scope's watch, started afresh — with a full list — after every failure: each
/// watcher `start` makes is read up to and including its first error, then dropped, and the
/// next one is started when the stream is polled again (after the backoff).
///
/// Why not let kube-runtime's watcher carry on: after a failure it resumes from its last
/// resourceVersion, and a resumed watch the API server accepts emits nothing. The driver,
/// which marked the scope disconnected at the failure, could then not tell when the scope is
/// current again: `envlink_watch_connected` stayed 0, the staleness grew and `/readyz`
/// under `--max-staleness` failed until some later `410 Gone` forced a list — after a cut
/// connection to an API server that still had the resourceVersion, that could be never (the
/// e2e test `watch_connection_cut_relists_and_reconnects`). A fresh list ends in `InitDone`,
/// which is the signal, and it also drops whatever was deleted while the watch was down.
fn relisting<S, T, E>(mut start: impl FnMut() -> S) -> impl Stream<Item = Result<T, E>>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    futures::stream::repeat_with(move || until_failure(start())).flatten()
}

/// `stream`'s items up to and including its first error; it is not polled after that.
fn until_failure<S, T, E>(stream: S) -> impl Stream<Item = Result<T, E>>
where
    S: Stream<Item = Result<T, E>> + Unpin,
{
    futures::stream::unfold(Some(stream), |stream| async move {
        let mut stream = stream?;
        let item = stream.next().await?;
        let rest = if item.is_ok() { Some(stream) } else { None };
        Some((item, rest))
    })
}

/// The API of `resource` in `scope`.
fn scoped_api(
    client: &kube::Client,
    resource: &ApiResource,
    scope: &ListScope,
) -> Api<DynamicObject> {
    match scope {
        ListScope::All => Api::all_with(client.clone(), resource),
        ListScope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, resource),
    }
}

/// Runs the watchers of every scope of `driver` until the process ends, feeding it. The API
/// server going away is not fatal: each watcher backs off and re-lists (at once after a
/// `410 Gone`), and the index keeps serving meanwhile.
pub async fn run<I: WatchIndex>(client: kube::Client, mut driver: WatchDriver<I>) {
    let resource = driver.index.resource();
    let streaming = match driver.initial_list {
        InitialList::Paginated => false,
        InitialList::Streaming => true,
        InitialList::Auto => match driver.scopes().next() {
            Some(scope) => serves_streaming_lists(&client, &resource, scope).await,
            None => false,
        },
    };
    tracing::info!(
        kind = %resource.kind,
        initial_list = %if streaming { "streaming" } else { "paginated" },
        "starting the watch"
    );
    // Paginated lists ask for the most recent state (`resourceVersion=""`), not "any"
    // (`"0"`): the API server serves "any" from its watch cache in one response whatever the
    // page size (measured: 100,000 Services, a 92 MB peak in envlink), while the most
    // recent state comes in pages of 500 and envlink never holds more than one page.
    let mut config = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
    if streaming {
        config = config.streaming_lists();
    }
    let streams = driver.scopes().enumerate().map(|(index, scope)| {
        let api = scoped_api(&client, &resource, scope);
        let config = config.clone();
        let desync = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&desync);
        relisting(move || watcher::watcher(api.clone(), config.clone()).boxed())
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
            Ok(event) => driver.handle(index, event),
            Err(error) => driver.restarted(index, &error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::stream;

    use super::*;

    /// A watcher stand-in: `items`, then a stream that fails the test if it is polled (a
    /// dropped watcher must not issue another request).
    fn source(
        items: Vec<Result<u32, &'static str>>,
    ) -> stream::BoxStream<'static, Result<u32, &'static str>> {
        stream::iter(items)
            .chain(stream::poll_fn(
                |_| -> std::task::Poll<Option<Result<u32, &'static str>>> {
                    panic!("a watcher was polled after its failure")
                },
            ))
            .boxed()
    }

    #[tokio::test]
    async fn a_failed_watcher_is_not_polled_again() {
        let items: Vec<_> = until_failure(source(vec![Ok(1), Ok(2), Err("cut")]))
            .collect()
            .await;
        assert_eq!(items, [Ok(1), Ok(2), Err("cut")]);
    }

    #[tokio::test]
    async fn every_failure_starts_a_new_watcher() {
        let started = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&started);
        let items: Vec<_> = relisting(move || match count.fetch_add(1, Ordering::Relaxed) {
            0 => source(vec![Ok(1), Err("connection refused")]),
            1 => source(vec![Err("connection refused")]),
            // The third one lists and keeps watching.
            _ => stream::iter([Ok(2), Ok(3)])
                .chain(stream::pending())
                .boxed(),
        })
        .take(5)
        .collect()
        .await;
        assert_eq!(
            items,
            [
                Ok(1),
                Err("connection refused"),
                Err("connection refused"),
                Ok(2),
                Ok(3)
            ]
        );
        assert_eq!(started.load(Ordering::Relaxed), 3);
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
}
