//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process serves HTTP: it never looks at the API server,
//! so an API server outage does not get every envlink replica restarted (which would only
//! empty the caches). `/readyz` is 200 once the catalog has completed its first full list,
//! so no Pod is admitted against a half-known set of Services. It stays 200 afterwards even
//! when the watch is failing: the last known catalog is still the best answer available.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use crate::catalog::Catalog;

/// `GET /healthz`: always `200 ok`.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: `200 ready` after the first full Service list, `503` before.
pub async fn readyz(State(catalog): State<Arc<Catalog>>) -> (StatusCode, &'static str) {
    if catalog.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Service catalog has not completed its first list\n",
        )
    }
}
