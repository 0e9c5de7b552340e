//! The HTTP layer: axum router, TLS (rustls, reload), the accept loop, health and metrics.
//!
//! It knows axum and nothing of policy: a handler reads the AdmissionReview ([`wire`]),
//! builds an [`admission::Request`](crate::admission::Request), calls the pure decision
//! function and turns the [`Decision`](crate::admission::Decision) into the AdmissionReview
//! it answers with ([`wire`] again).

pub mod base64;
pub mod coalesce;
pub mod health;
pub mod metrics;
pub mod router;
pub mod server;
pub mod tls;
pub mod watch_metrics;
pub mod wire;
pub mod workers;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tokio::sync::Semaphore;

use crate::catalog::Catalog;
use crate::catalog::claims::{ClaimIndex, ClusterLookups};
use crate::catalog::configmaps::ConfigMapIndex;
use crate::catalog::watch::WatchStatus;
use crate::config::Policy;

pub use self::metrics::{Metrics, ScrapeSources};
pub use self::router::router;

/// Default `--max-body-bytes`: 7 MiB. The API server accepts request bodies up to 3 MiB; a
/// review of an UPDATE carries the object twice (`object` and `oldObject`) plus the envelope,
/// so 7 MiB admits every review the API server can send while bounding what a stray client
/// can make envlink buffer.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Default `--request-timeout`: below the recommended `timeoutSeconds: 10`, so envlink
/// answers (with an error) before the API server gives up and applies `failurePolicy`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Default `--max-inflight-body-bytes`: 32 MiB of request bodies across all connections.
/// The chart's memory limit is 256Mi; a large catalog takes about 100 MB of it (BENCHMARKS.md)
/// and each review being decided a small multiple of its body on top (at most
/// `--max-concurrent-reviews` of them). 32 MiB of bodies (four of 7 MiB, or ten of the API
/// server's 3 MiB objects) leaves that room, and is far above what the API server sends at
/// once in practice (reviews of a few KiB).
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Default `--max-concurrent-reviews`: the CPUs the process may use (its cgroup quota
/// included); the decision is CPU-bound, so more at once only makes each slower.
pub fn default_concurrent_reviews() -> usize {
    std::thread::available_parallelism().map_or(2, NonZeroUsize::get)
}

/// Limits applied at the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time for a review to be read and decided, from its request head on; a body slower
    /// than that gets 408, a decision slower than that 503.
    pub request_timeout: Duration,
    /// Request-body bytes held at once across all connections (read, or declared and being
    /// read); a review that cannot get its share within the request timeout gets 503.
    pub max_inflight_body_bytes: usize,
    /// Reviews decided at once; a review that waits longer than the request timeout for
    /// its turn gets 503.
    pub max_concurrent_reviews: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            max_concurrent_reviews: default_concurrent_reviews(),
        }
    }
}

/// The budgets behind [`Limits`], shared by every connection.
#[derive(Debug)]
pub struct Budgets {
    /// One permit per byte of request body held.
    pub body_bytes: Arc<Semaphore>,
    /// One permit per review being decided.
    pub decisions: Arc<Semaphore>,
}

impl Budgets {
    /// Budgets of the given sizes (at least one body of `max_body_bytes` and one decision).
    pub fn new(limits: &Limits) -> Self {
        let bytes = limits
            .max_inflight_body_bytes
            .max(limits.max_body_bytes)
            .min(Semaphore::MAX_PERMITS);
        let decisions = limits
            .max_concurrent_reviews
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            body_bytes: Arc::new(Semaphore::new(bytes)),
            decisions: Arc::new(Semaphore::new(decisions)),
        }
    }
}

/// What the handlers share: read-only except the catalog (updated by its watcher) and the
/// metrics (atomics).
#[derive(Clone)]
pub struct AppState {
    /// The Service catalog.
    pub catalog: Arc<Catalog>,
    /// The policy.
    pub policy: Arc<Policy>,
    /// What reviews look up in the cluster: ConfigMap keys for the `envFrom` check and DRA
    /// device classes (none known by default). Its ConfigMap index also gates `/readyz`.
    pub lookups: Arc<ClusterLookups>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Edge limits.
    pub limits: Limits,
    /// The budgets behind `limits`.
    pub budgets: Arc<Budgets>,
    /// The Service watch's status (a fresh value: a static catalog, always current).
    pub watch: Arc<WatchStatus>,
    /// `--max-staleness`: `/readyz` is 503 once the watch has been down for longer.
    pub max_staleness: Option<Duration>,
}

impl AppState {
    /// State with default limits and no ConfigMap lookups.
    pub fn new(catalog: Arc<Catalog>, policy: Arc<Policy>, metrics: Arc<Metrics>) -> Self {
        Self {
            catalog,
            policy,
            lookups: Arc::default(),
            metrics,
            limits: Limits::default(),
            budgets: Arc::new(Budgets::new(&Limits::default())),
            watch: Arc::default(),
            max_staleness: None,
        }
    }

    /// The same state with the watchers' state and `--max-staleness` for `/readyz`.
    pub fn with_watch(mut self, watch: Arc<WatchStatus>, max_staleness: Option<Duration>) -> Self {
        self.watch = watch;
        self.max_staleness = max_staleness;
        self
    }

    /// What `/readyz` looks at.
    pub fn readiness(&self) -> health::Readiness {
        health::Readiness {
            catalog: self.catalog.clone(),
            watch: self.watch.clone(),
            max_staleness: self.max_staleness,
            config_maps: self.lookups.config_maps.clone(),
        }
    }

    /// The same state with a ConfigMap key index for the `envFrom` check; `/readyz` then
    /// also waits for its first list, so no Pod is checked against unknown ConfigMaps.
    pub fn with_config_maps(mut self, index: Arc<ConfigMapIndex>) -> Self {
        self.lookups = Arc::new(ClusterLookups {
            config_maps: Some(index),
            claims: self.lookups.claims.clone(),
        });
        self
    }

    /// The same state with a DRA device-class index (it does not gate `/readyz`: where the
    /// API server serves no DRA, the index stays empty for good).
    pub fn with_claims(mut self, index: Arc<ClaimIndex>) -> Self {
        self.lookups = Arc::new(ClusterLookups {
            config_maps: self.lookups.config_maps.clone(),
            claims: Some(index),
        });
        self
    }

    /// The same state with other limits (and fresh budgets of their sizes).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.budgets = Arc::new(Budgets::new(&limits));
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("catalog", &self.catalog.stats())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FromRef<Arc<AppState>> for health::Readiness {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.readiness()
    }
}
