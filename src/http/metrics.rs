//! Prometheus metrics, served on their own plain-HTTP listener (`GET /metrics`).
//!
//! Request metrics are updated on the request path (an atomic add and a histogram bucket);
//! the catalog, watch and TLS figures are read at scrape time from the values their owners
//! keep anyway, so nothing on those paths knows about Prometheus.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::catalog::watch::WatchStatus;
use crate::catalog::{Catalog, render_cache};
use crate::http::health;
use crate::http::router::Endpoint;
use crate::http::tls::ReloadStats;

/// Upper bounds of the latency histogram, in seconds. A review normally takes tens to
/// hundreds of microseconds, so the resolution is there; the tail reaches the webhook
/// timeout, where the API server gives up.
const DURATION_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// Upper bounds of the injected-variables histogram (per patched Pod). The default limit
/// (`services.maxVariables`) is 5,000.
const VARIABLE_BUCKETS: [f64; 11] = [
    0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

type RequestLabels = [(&'static str, &'static str); 2];
type EndpointLabels = [(&'static str, &'static str); 1];

/// The decisions a review is counted under, in the order of [`EndpointSeries::requests`].
const DECISIONS: [&str; 5] = ["allowed", "patched", "denied", "invalid", "error"];

/// The registry and the metrics updated on the request path.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    injected: Histogram,
    /// Each endpoint's series, resolved once: a review then costs an atomic add and a
    /// histogram bucket, not two label lookups in the families (a hash and a lock each).
    mutate: EndpointSeries,
    validate: EndpointSeries,
}

/// The series of one endpoint, shared with the families (a clone of a counter or histogram
/// is the same series).
#[derive(Debug)]
struct EndpointSeries {
    /// One counter per entry of [`DECISIONS`].
    requests: [Counter; DECISIONS.len()],
    duration: Histogram,
}

impl EndpointSeries {
    fn resolve(
        endpoint: Endpoint,
        requests: &Family<RequestLabels, Counter>,
        duration: &Family<EndpointLabels, Histogram>,
    ) -> Self {
        Self {
            requests: DECISIONS.map(|decision| {
                requests
                    .get_or_create(&[("endpoint", endpoint.as_str()), ("decision", decision)])
                    .clone()
            }),
            duration: duration
                .get_or_create(&[("endpoint", endpoint.as_str())])
                .clone(),
        }
    }
}

/// The figures read at scrape time.
#[derive(Debug)]
struct StateCollector {
    catalog: Arc<Catalog>,
    watch: Arc<WatchStatus>,
    tls: Arc<ReloadStats>,
}

/// Where [`Metrics`] reads the figures it exports at scrape time; each is owned and updated
/// elsewhere.
#[derive(Debug, Clone)]
pub struct ScrapeSources {
    /// The Service catalog (sizes, readiness).
    pub catalog: Arc<Catalog>,
    /// The Service watch's status (restarts, events, connection, freshness); fresh (all
    /// zero) for a static catalog.
    pub watch: Arc<WatchStatus>,
    /// Certificate reloads and the serving certificate's expiry; fresh (all zero) with no
    /// reload (`--dev`).
    pub tls: Arc<ReloadStats>,
}

impl ScrapeSources {
    /// A catalog with no watch (static: always current) and no certificate reloads (`--dev`,
    /// tests).
    pub fn catalog(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            watch: Arc::default(),
            tls: Arc::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new(sources: ScrapeSources) -> Self {
        let ScrapeSources {
            catalog,
            watch,
            tls,
        } = sources;
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "envlink_admission_requests",
            "Admission reviews answered, by endpoint and decision \
             (allowed, patched, denied, invalid, error)",
            requests.clone(),
        );
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        registry.register(
            "envlink_admission_duration_seconds",
            "Time to answer one admission review, from the first byte of the body to the answer",
            duration.clone(),
        );
        let injected = Histogram::new(VARIABLE_BUCKETS);
        registry.register(
            "envlink_injected_variables",
            "Service variables injected per Pod that envlink injected into",
            injected.clone(),
        );
        registry.register_collector(Box::new(StateCollector {
            catalog,
            watch,
            tls,
        }));
        let mutate = EndpointSeries::resolve(Endpoint::Mutate, &requests, &duration);
        let validate = EndpointSeries::resolve(Endpoint::Validate, &requests, &duration);
        Self {
            registry,
            requests,
            injected,
            mutate,
            validate,
        }
    }

    /// Counts one answered review and its latency. `decision` is `Decision::label()` or
    /// `error` (an HTTP error status).
    pub fn observe_review(&self, endpoint: Endpoint, decision: &'static str, elapsed: Duration) {
        let series = match endpoint {
            Endpoint::Mutate => &self.mutate,
            Endpoint::Validate => &self.validate,
        };
        match DECISIONS.iter().position(|known| *known == decision) {
            Some(index) => series.requests[index].inc(),
            // Not one of the known decisions: counted all the same, through the family.
            None => self
                .requests
                .get_or_create(&[("endpoint", endpoint.as_str()), ("decision", decision)])
                .inc(),
        };
        series.duration.observe(elapsed.as_secs_f64());
    }

    /// Records how many variables one Pod got.
    pub fn observe_injected(&self, variables: usize) {
        // usize → f64 is exact far beyond any realistic count.
        self.injected.observe(variables as f64);
    }

    /// Adds figures read at scrape time by their owner (the periodic audit's findings).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.catalog.stats();
        let gauges = [
            (
                "envlink_catalog_services",
                "Services in the catalog",
                stats.services,
            ),
            (
                "envlink_catalog_namespaces",
                "Namespaces with at least one Service in the catalog",
                stats.namespaces,
            ),
            (
                "envlink_catalog_ready",
                "1 once the first full list of Services is done",
                usize::from(self.catalog.is_ready()),
            ),
            (
                "envlink_render_cache_bytes",
                "Bytes of Services' rendered variables kept for later reviews (at most 4 MiB)",
                render_cache::held_bytes(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        // Counter names get their `_total` suffix from the encoder.
        let counters = [
            (
                "envlink_watch_restarts",
                "Times a Service watch failed and was restarted with backoff",
                self.watch.counters().restarts(),
            ),
            (
                "envlink_watch_events",
                "Service watch events received",
                self.watch.counters().events(),
            ),
            (
                "envlink_watch_skipped",
                "Watched Services left out because they do not decode",
                self.watch.counters().skipped(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let freshness = self.watch.connection().freshness();
        let connected = ConstGauge::new(i64::from(self.watch.connection().is_connected()));
        let metric = encoder.encode_descriptor(
            "envlink_watch_connected",
            "1 while every Service watch is connected (always 1 for a static catalog); 0 while \
             one is failing or re-listing and the last known catalog is served",
            None,
            connected.metric_type(),
        )?;
        connected.encode(metric)?;
        let staleness = ConstGauge::new(freshness.staleness().as_secs_f64());
        let metric = encoder.encode_descriptor(
            "envlink_catalog_staleness_seconds",
            "Seconds since the Service catalog was last known current: 0 while the watch is \
             connected (or the catalog is static), else the time since it disconnected",
            None,
            staleness.metric_type(),
        )?;
        staleness.encode(metric)?;
        self.encode_tls(&mut encoder)
    }
}

impl StateCollector {
    /// The certificate figures: reloads by result, and the expiry once known.
    fn encode_tls(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "envlink_tls_reloads",
            "Certificate reloads after the files changed, by result",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in [
            ("success", self.tls.successes()),
            ("failure", self.tls.failures()),
        ] {
            let labels = [("result", result)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        // Left out until a certificate's expiry is known, rather than exported as 0, which
        // an expiry alert would read as "expired in 1970".
        if let Some(not_after) = self.tls.not_after() {
            let expiry = ConstGauge::new(not_after);
            let metric = encoder.encode_descriptor(
                "envlink_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the serving certificate in use, as Unix time; updated on every \
                 (re)load",
                None,
                expiry.metric_type(),
            )?;
            expiry.encode(metric)?;
        }
        Ok(())
    }
}

/// State of the metrics listener.
#[derive(Debug, Clone)]
pub struct MetricsState {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// For `/readyz` on this listener too.
    pub readiness: health::Readiness,
}

impl FromRef<MetricsState> for health::Readiness {
    fn from_ref(state: &MetricsState) -> Self {
        state.readiness.clone()
    }
}

/// The plain-HTTP router of the metrics listener: `GET /metrics`, plus `/healthz` and
/// `/readyz` for probes that cannot speak HTTPS.
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

async fn scrape(State(state): State<MetricsState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed() {
        let (catalog, _) = Catalog::from_links(Vec::new());
        let tls = Arc::new(ReloadStats::default());
        tls.record(false);
        let m = Metrics::new(ScrapeSources {
            tls: tls.clone(),
            ..ScrapeSources::catalog(Arc::new(catalog))
        });
        assert!(
            !m.encode()
                .expect("encode")
                .contains("envlink_tls_certificate_expiry_timestamp_seconds"),
            "no expiry gauge before a certificate is known"
        );
        let dev = crate::http::tls::generate_dev_certificates().expect("dev certs");
        let key = crate::http::tls::certified_key_from_pem(
            dev.cert_pem.as_bytes(),
            dev.key_pem.as_bytes(),
            "c",
            "k",
        )
        .expect("key");
        tls.observe_certificate(&key);
        let not_after = tls.not_after().expect("expiry known");
        m.observe_review(Endpoint::Mutate, "patched", Duration::from_micros(120));
        m.observe_injected(12);
        let text = m.encode().expect("encode");
        for needle in [
            "envlink_admission_requests_total{endpoint=\"mutate\",decision=\"patched\"} 1",
            "envlink_admission_duration_seconds_bucket{le=\"0.00025\",endpoint=\"mutate\"} 1",
            "envlink_injected_variables_count 1",
            "envlink_catalog_services 0",
            "envlink_catalog_namespaces 0",
            "envlink_catalog_ready 1",
            "envlink_watch_restarts_total 0",
            "envlink_watch_events_total 0",
            "envlink_tls_reloads_total{result=\"success\"} 0",
            "envlink_tls_reloads_total{result=\"failure\"} 1",
            "envlink_watch_connected 1",
            "envlink_catalog_staleness_seconds 0.0",
            "# TYPE envlink_tls_certificate_expiry_timestamp_seconds gauge",
            "# TYPE envlink_render_cache_bytes gauge",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let expiry = format!("\nenvlink_tls_certificate_expiry_timestamp_seconds {not_after}\n");
        assert!(text.contains(&expiry), "missing {expiry:?} in\n{text}");
    }

    /// Every endpoint's and decision's series exists from the start (at zero, so a rate
    /// over them is defined before the first review of a kind), each review counts in its
    /// own series and nowhere else, and a label value outside the known ones still counts.
    #[test]
    fn reviews_count_in_their_own_series() {
        let (catalog, _) = Catalog::from_links(Vec::new());
        let m = Metrics::new(ScrapeSources::catalog(Arc::new(catalog)));
        let series = |endpoint: &str, decision: &str| {
            format!(
                "envlink_admission_requests_total{{endpoint=\"{endpoint}\",decision=\"{decision}\"}}"
            )
        };
        let text = m.encode().expect("encode");
        for endpoint in ["mutate", "validate"] {
            for decision in DECISIONS {
                let zero = format!("{} 0\n", series(endpoint, decision));
                assert!(text.contains(&zero), "missing {zero:?} in\n{text}");
            }
            let count =
                format!("envlink_admission_duration_seconds_count{{endpoint=\"{endpoint}\"}} 0\n");
            assert!(text.contains(&count), "missing {count:?} in\n{text}");
        }
        m.observe_review(Endpoint::Validate, "denied", Duration::from_millis(3));
        m.observe_review(Endpoint::Validate, "denied", Duration::from_millis(3));
        m.observe_review(Endpoint::Mutate, "error", Duration::from_micros(40));
        m.observe_review(Endpoint::Mutate, "other", Duration::from_micros(40));
        let text = m.encode().expect("encode");
        for (endpoint, decision, count) in [
            ("validate", "denied", 2),
            ("mutate", "error", 1),
            ("mutate", "other", 1),
            ("mutate", "denied", 0),
            ("validate", "error", 0),
        ] {
            let line = format!("{} {count}\n", series(endpoint, decision));
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        for (endpoint, count, fast) in [("validate", 2, 0), ("mutate", 2, 2)] {
            let total = format!(
                "envlink_admission_duration_seconds_count{{endpoint=\"{endpoint}\"}} {count}\n"
            );
            assert!(text.contains(&total), "missing {total:?} in\n{text}");
            let bucket = format!(
                "envlink_admission_duration_seconds_bucket{{le=\"0.00005\",endpoint=\"{endpoint}\"}} {fast}\n"
            );
            assert!(text.contains(&bucket), "missing {bucket:?} in\n{text}");
        }
    }
}
