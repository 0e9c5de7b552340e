//! The HTTP layer: axum router, TLS (rustls, reload), the accept loop, health and metrics.
//!
//! It knows axum and nothing of policy: a handler reads the AdmissionReview, builds an
//! [`admission::Request`](crate::admission::Request), calls the pure decision function and
//! turns the [`Decision`](crate::admission::Decision) into kube-core's `AdmissionResponse`.

pub mod health;
pub mod metrics;
pub mod router;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::catalog::Catalog;
use crate::catalog::configmaps::ConfigMapIndex;
use crate::catalog::watch::WatchCounters;
use crate::config::Policy;
use crate::reserved::{ConfigMapKeys, NoConfigMaps};

pub use self::metrics::Metrics;
pub use self::router::router;

/// Default `--max-body-bytes`: 7 MiB. The API server accepts request bodies up to 3 MiB; a
/// review of an UPDATE carries the object twice (`object` and `oldObject`) plus the envelope,
/// so 7 MiB admits every review the API server can send while bounding what a stray client
/// can make envlink buffer.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Default `--request-timeout`: below the recommended `timeoutSeconds: 10`, so envlink
/// answers (with an error) before the API server gives up and applies `failurePolicy`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Limits applied at the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time for a review's body to arrive and be answered; slower gets 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
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
    /// ConfigMap keys for the `envFrom` check (none known by default).
    pub config_maps: Arc<dyn ConfigMapKeys + Send + Sync>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Edge limits.
    pub limits: Limits,
    /// The Service watchers' state (a fresh value: a static catalog, always current).
    pub watch: Arc<WatchCounters>,
    /// `--max-staleness`: `/readyz` is 503 once the watch has been down for longer.
    pub max_staleness: Option<Duration>,
    /// The ConfigMap key index behind `config_maps`, when there is one (for `/readyz`).
    pub config_map_index: Option<Arc<ConfigMapIndex>>,
}

impl AppState {
    /// State with default limits and no ConfigMap lookups.
    pub fn new(catalog: Arc<Catalog>, policy: Arc<Policy>, metrics: Arc<Metrics>) -> Self {
        Self {
            catalog,
            policy,
            config_maps: Arc::new(NoConfigMaps),
            metrics,
            limits: Limits::default(),
            watch: Arc::default(),
            max_staleness: None,
            config_map_index: None,
        }
    }

    /// The same state with the watchers' state and `--max-staleness` for `/readyz`.
    pub fn with_watch(
        mut self,
        watch: Arc<WatchCounters>,
        max_staleness: Option<Duration>,
    ) -> Self {
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
            config_maps: self.config_map_index.clone(),
        }
    }

    /// The same state with a ConfigMap key index for the `envFrom` check; `/readyz` then
    /// also waits for its first list, so no Pod is checked against unknown ConfigMaps.
    pub fn with_config_maps(mut self, index: Arc<ConfigMapIndex>) -> Self {
        self.config_maps = index.clone();
        self.config_map_index = Some(index);
        self
    }

    /// The same state with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
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

impl FromRef<AppState> for Arc<Catalog> {
    fn from_ref(state: &AppState) -> Self {
        state.catalog.clone()
    }
}

impl FromRef<AppState> for health::Readiness {
    fn from_ref(state: &AppState) -> Self {
        state.readiness()
    }
}
