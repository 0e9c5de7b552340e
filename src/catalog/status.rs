//! What the watches tell the rest of the process: per watched resource, its counters
//! ([`WatchCounters`]) and its connection state ([`WatchConnection`]), together a
//! [`WatchStatus`]; every status of the process in one [`WatchStatuses`].
//!
//! Written by the watch driver ([`super::driver`]), read at scrape time by the metrics and by
//! `/readyz`: atomics only, so neither side waits on the other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds on a monotonic clock that starts at 1 (so 0 can mean "never"); wall-clock
/// jumps do not make the catalog look fresher or staler.
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): only for the "last event"
/// timestamp that dashboards compare with `time()`, never for staleness.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Monotonic counts of one watched resource. All zero for a static catalog.
#[derive(Debug, Default)]
pub struct WatchCounters {
    events: AtomicU64,
    restarts: AtomicU64,
    skipped: AtomicU64,
    /// [`unix_ms`] of the last event; 0 before the first.
    last_event_unix_ms: AtomicU64,
}

impl WatchCounters {
    /// Watch events received (`Apply`, `Delete`, `InitApply`).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Times a watch failed and was restarted (with backoff).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Objects that did not decode (or could not be stored) and were left out.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// When the last event arrived (wall clock), `None` before the first.
    pub fn last_event(&self) -> Option<SystemTime> {
        match self.last_event_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn count_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.last_event_unix_ms.store(unix_ms(), Ordering::Relaxed);
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_skipped(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }
}

/// How current an index is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A static catalog (a file, or `--dev`'s embedded one): current by definition.
    Static,
    /// Watching, but the first full list has not completed yet.
    Syncing,
    /// Every watch is connected: the index follows the cluster (to within the watch's
    /// delivery delay).
    Connected,
    /// A watch failed (it restarts with backoff and re-lists) or is re-listing: the last
    /// known contents are served, last known current `stale_for` ago.
    Disconnected {
        /// Time since every watch was last connected.
        stale_for: Duration,
    },
}

impl Freshness {
    /// Time since the index was last known current; zero when it is current (or static,
    /// or not synced yet: then `/readyz` is 503 anyway).
    pub fn staleness(self) -> Duration {
        match self {
            Freshness::Disconnected { stale_for } => stale_for,
            _ => Duration::ZERO,
        }
    }
}

/// Whether the watches of one resource follow the cluster, and since when they have not.
/// A fresh (`Default`) value describes a static catalog: no watch, always current.
#[derive(Debug, Default)]
pub struct WatchConnection {
    /// A cluster watch feeds the index (set when its driver is made).
    watching: AtomicBool,
    /// Every scope has completed a list and none has failed or started re-listing since.
    connected: AtomicBool,
    /// [`monotonic_ms`] when the index was last known current (the last moment every
    /// scope was connected); 0 before the first time.
    current_at: AtomicU64,
}

impl WatchConnection {
    /// How current the index is now.
    pub fn freshness(&self) -> Freshness {
        self.freshness_at(monotonic_ms())
    }

    /// How current the index is at `now` (a [`monotonic_ms`] reading).
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

    /// A driver starts: watching, not connected until its first list completes.
    pub(crate) fn start_watching(&self) {
        self.watching.store(true, Ordering::Release);
        self.connected.store(false, Ordering::Release);
    }

    /// Every scope was (`was`) and is (`now`) connected or not. Connected at either end, the
    /// index is current at this moment: that is recorded as "last known current", so a
    /// disconnection's staleness counts from it.
    pub(crate) fn transition(&self, was: bool, now: bool) {
        if was || now {
            self.mark_current();
        }
        self.connected.store(now, Ordering::Release);
    }

    /// The index is known current now.
    pub(crate) fn mark_current(&self) {
        self.current_at.store(monotonic_ms(), Ordering::Release);
    }

    /// The last "known current" reading (0: never), for tests of staleness.
    #[cfg(test)]
    pub(crate) fn current_at(&self) -> u64 {
        self.current_at.load(Ordering::Acquire)
    }
}

/// One watched resource as the metrics and `/readyz` see it. `Default`: a static catalog
/// (no watch).
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// The resource's plural (`services`, `configmaps`, ...): the metrics' `resource` label.
    resource: String,
    counters: WatchCounters,
    connection: WatchConnection,
}

impl WatchStatus {
    /// The status of a watch of `resource` (its plural, as in the API path).
    pub fn new(resource: &str) -> Self {
        Self {
            resource: resource.to_string(),
            ..Self::default()
        }
    }

    /// The resource's plural; empty for a static catalog's status.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Events, restarts, skipped objects.
    pub fn counters(&self) -> &WatchCounters {
        &self.counters
    }

    /// Connected or not, and since when.
    pub fn connection(&self) -> &WatchConnection {
        &self.connection
    }
}

/// Every watch status of the process, in the order they started (the Service watch first);
/// the metrics read them at scrape time. Watches that start late (DRA, after discovery) add
/// themselves when they start.
#[derive(Debug, Default)]
pub struct WatchStatuses {
    statuses: RwLock<Vec<Arc<WatchStatus>>>,
}

impl WatchStatuses {
    /// Adds one status.
    pub fn add(&self, status: Arc<WatchStatus>) {
        // Every write is one push: a poisoned lock holds a consistent list.
        self.statuses
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(status);
    }

    /// The statuses, in the order they were added.
    pub fn all(&self) -> Vec<Arc<WatchStatus>> {
        self.statuses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_status_is_current_and_counts_nothing() {
        let status = WatchStatus::default();
        assert_eq!(status.connection().freshness(), Freshness::Static);
        assert!(status.connection().is_connected());
        assert_eq!(status.counters().events(), 0);
        assert_eq!(status.counters().last_event(), None);
    }

    #[test]
    fn events_record_their_time() {
        let status = WatchStatus::new("configmaps");
        status.counters().count_event();
        let at = status.counters().last_event().expect("an event time");
        assert!(at <= SystemTime::now());
        assert_eq!(status.resource(), "configmaps");
    }

    #[test]
    fn statuses_keep_their_order() {
        let all = WatchStatuses::default();
        all.add(Arc::new(WatchStatus::new("services")));
        all.add(Arc::new(WatchStatus::new("configmaps")));
        let list = all.all();
        let names: Vec<_> = list.iter().map(|s| s.resource()).collect();
        assert_eq!(names, ["services", "configmaps"]);
    }
}
