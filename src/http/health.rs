//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP: it never looks at the API server,
//! so an API server outage does not get every envlink replica restarted (which would only
//! empty the caches). `/readyz` is 200 once the catalog has completed its first full list,
//! so no Pod is admitted against a half-known set of Services.
//!
//! After that, a failing Service watch does not make envlink unready by default: the last
//! known catalog is still the best answer available, and it stays correct for every
//! namespace whose Services did not change meanwhile. Failing readiness on every replica at
//! once (they all lose the same API server) would turn a slightly stale catalog into failed
//! Pod creations under `failurePolicy: Fail`. The body says how things are (watch connected
//! or not, and for how long not), the metrics say it too
//! (`envlink_watch_connected`, `envlink_catalog_staleness_seconds`), and an admin who
//! prefers refusing to serving stale data sets `--max-staleness`: once the watch has been
//! down for longer, `/readyz` is 503.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use crate::catalog::Catalog;
use crate::catalog::configmaps::ConfigMapIndex;
use crate::catalog::watch::{Freshness, WatchStatus};

/// What `/readyz` looks at.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The catalog (ready after its first full list).
    pub catalog: Arc<Catalog>,
    /// The Service watch's status (a fresh value: a static catalog).
    pub watch: Arc<WatchStatus>,
    /// `--max-staleness`: unready once the watch has been down for longer (`None`: never).
    pub max_staleness: Option<Duration>,
    /// With `reserved.checkConfigMaps`: ready only after the first ConfigMap list too.
    pub config_maps: Option<Arc<ConfigMapIndex>>,
}

/// `GET /healthz`: always `200 ok`.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: see [`assess`].
pub async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let config_maps_ready = readiness
        .config_maps
        .as_ref()
        .is_none_or(|index| index.is_ready());
    assess(
        readiness.catalog.is_ready() && config_maps_ready,
        readiness.watch.connection().freshness(),
        readiness.max_staleness,
    )
}

/// The readiness answer. The first line is `ready` or `not ready: <why>`; with a watch, a
/// second line says whether it is connected and, when not, for how long.
pub fn assess(
    ready: bool,
    freshness: Freshness,
    max_staleness: Option<Duration>,
) -> (StatusCode, String) {
    if !ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Service catalog has not completed its first list\n".into(),
        );
    }
    let limit = match max_staleness {
        Some(max) => format!("--max-staleness {}", seconds(max)),
        None => "--max-staleness off".into(),
    };
    match freshness {
        Freshness::Static => (StatusCode::OK, "ready\n".into()),
        Freshness::Connected => (StatusCode::OK, "ready\nservice watch: connected\n".into()),
        // Ready but not connected only happens when a re-list is under way right after the
        // first one; it is stale by an unknown (short) time.
        Freshness::Syncing => (StatusCode::OK, "ready\nservice watch: re-listing\n".into()),
        Freshness::Disconnected { stale_for } => {
            let detail = format!(
                "service watch: disconnected for {}; serving the last known catalog ({limit})\n",
                seconds(stale_for)
            );
            if max_staleness.is_some_and(|max| stale_for > max) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not ready: the Service catalog is older than --max-staleness\n{detail}"
                    ),
                )
            } else {
                (StatusCode::OK, format!("ready\n{detail}"))
            }
        }
    }
}

/// `42s`, `1.5s`: whole seconds unless the duration is shorter than ten.
fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(10) && duration.subsec_millis() != 0 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{}s", duration.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn down(secs: u64) -> Freshness {
        Freshness::Disconnected {
            stale_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn readiness_table() {
        let cases: &[(bool, Freshness, Option<Duration>, u16, &str)] = &[
            (
                false,
                Freshness::Syncing,
                None,
                503,
                "not ready: the Service catalog has not completed its first list\n",
            ),
            (
                false,
                Freshness::Static,
                Some(MINUTE),
                503,
                "not ready: the Service catalog has not completed its first list\n",
            ),
            (true, Freshness::Static, Some(MINUTE), 200, "ready\n"),
            (
                true,
                Freshness::Connected,
                Some(MINUTE),
                200,
                "ready\nservice watch: connected\n",
            ),
            (
                true,
                down(42),
                None,
                200,
                "ready\nservice watch: disconnected for 42s; serving the last known catalog \
                 (--max-staleness off)\n",
            ),
            // Off by default: even a day-old catalog keeps serving.
            (
                true,
                down(86_400),
                None,
                200,
                "ready\nservice watch: disconnected for 86400s; serving the last known catalog \
                 (--max-staleness off)\n",
            ),
            (
                true,
                down(60),
                Some(MINUTE),
                200,
                "ready\nservice watch: disconnected for 60s; serving the last known catalog \
                 (--max-staleness 60s)\n",
            ),
            (
                true,
                down(61),
                Some(MINUTE),
                503,
                "not ready: the Service catalog is older than --max-staleness\nservice watch: \
                 disconnected for 61s; serving the last known catalog (--max-staleness 60s)\n",
            ),
        ];
        for (ready, freshness, max, status, body) in cases {
            let (got_status, got_body) = assess(*ready, *freshness, *max);
            assert_eq!(got_status.as_u16(), *status, "{freshness:?} {max:?}");
            assert_eq!(got_body, *body, "{freshness:?} {max:?}");
        }
    }

    #[test]
    fn short_durations_keep_a_decimal() {
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert_eq!(seconds(Duration::from_secs(3)), "3s");
        assert_eq!(seconds(Duration::from_millis(12_700)), "12s");
    }
}
