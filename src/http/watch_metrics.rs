//! Per-resource watch metrics, read at scrape time from the [`WatchStatuses`] the watch
//! driver keeps: every watched resource (Services, ConfigMaps, ResourceClaims, ...) has the
//! same figures, labelled `resource` (the API plural).
//!
//! They sit beside the unlabelled `envlink_watch_*` and `envlink_catalog_staleness_seconds`
//! series (which stay the Service watch's, as the alerts, dashboards and e2e tests read them):
//! adding a label to those would have changed every existing query.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::catalog::status::{WatchStatus, WatchStatuses};

/// Encodes every status of a [`WatchStatuses`]; register it with
/// [`Metrics::register_collector`](super::Metrics::register_collector).
#[derive(Debug)]
pub struct WatchCollector {
    statuses: Arc<WatchStatuses>,
}

impl WatchCollector {
    /// A collector of `statuses` (which may still grow: read at every scrape).
    pub fn new(statuses: Arc<WatchStatuses>) -> Self {
        Self { statuses }
    }
}

type Read = fn(&WatchStatus) -> u64;

impl Collector for WatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.statuses.all();
        if statuses.is_empty() {
            // A static catalog: no watch, no series (rather than zeros for nothing).
            return Ok(());
        }
        // Counter names get their `_total` suffix from the encoder.
        let counters: [(&str, &str, Read); 3] = [
            (
                "envlink_watch_resource_events",
                "Watch events received, by watched resource",
                |s| s.counters().events(),
            ),
            (
                "envlink_watch_resource_restarts",
                "Times a watch failed and was restarted with backoff (a re-list follows), by \
                 watched resource",
                |s| s.counters().restarts(),
            ),
            (
                "envlink_watch_resource_skipped",
                "Watched objects left out because they do not decode, by watched resource",
                |s| s.counters().skipped(),
            ),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for status in &statuses {
                let labels = [("resource", status.resource())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(read(status)).encode(metric)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "envlink_watch_resource_connected",
            "1 while every watch of the resource is connected; 0 while one is failing or \
             re-listing (or before the first list) and the last known contents are served",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let labels = [("resource", status.resource())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(i64::from(status.connection().is_connected())).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "envlink_watch_resource_staleness_seconds",
            "Seconds since the resource's index was last known current: 0 while connected, \
             else the time since it disconnected",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let labels = [("resource", status.resource())];
            let metric = family.encode_family(&labels)?;
            let staleness = status.connection().freshness().staleness();
            ConstGauge::new(staleness.as_secs_f64()).encode(metric)?;
        }
        self.encode_last_events(&mut encoder, &statuses)
    }
}

impl WatchCollector {
    /// The last event's time; a resource without an event yet has no sample, rather than 0
    /// (which `time() - x` would read as "silent since 1970").
    fn encode_last_events(
        &self,
        encoder: &mut DescriptorEncoder,
        statuses: &[Arc<WatchStatus>],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "envlink_watch_resource_last_event_timestamp_seconds",
            "When the last watch event of the resource arrived, as Unix time",
            None,
            MetricType::Gauge,
        )?;
        for status in statuses {
            let Some(at) = status.counters().last_event() else {
                continue;
            };
            let Ok(since_epoch) = at.duration_since(UNIX_EPOCH) else {
                continue;
            };
            let labels = [("resource", status.resource())];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(since_epoch.as_secs_f64()).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::configmaps::{ConfigMapIndex, ConfigMapSync};
    use crate::http::Metrics;
    use crate::http::ScrapeSources;
    use kube::runtime::watcher::Event;

    #[test]
    fn every_watched_resource_has_the_same_figures() {
        let (catalog, _) = crate::catalog::Catalog::from_links(Vec::new());
        let statuses = Arc::new(WatchStatuses::default());
        let mut metrics = Metrics::new(ScrapeSources::catalog(Arc::new(catalog)));
        metrics.register_collector(Box::new(WatchCollector::new(statuses.clone())));
        let text = metrics.encode().expect("encode");
        assert!(
            !text.contains("envlink_watch_resource_"),
            "no watch, no series:\n{text}"
        );

        let mut sync = ConfigMapSync::cluster_wide(Arc::new(ConfigMapIndex::new()));
        statuses.add(sync.status());
        sync.handle(0, Event::Init);
        sync.handle(0, Event::InitDone);
        sync.restarted(0, &"410 Gone");
        let text = metrics.encode().expect("encode");
        for needle in [
            "envlink_watch_resource_restarts_total{resource=\"configmaps\"} 1",
            "envlink_watch_resource_events_total{resource=\"configmaps\"} 0",
            "envlink_watch_resource_skipped_total{resource=\"configmaps\"} 0",
            "envlink_watch_resource_connected{resource=\"configmaps\"} 0",
            "envlink_watch_resource_staleness_seconds{resource=\"configmaps\"} ",
            // The unlabelled series stay the Service watch's (here: a static catalog).
            "envlink_watch_restarts_total 0",
            "envlink_watch_connected 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("envlink_watch_resource_last_event_timestamp_seconds{"));
        sync.handle(0, Event::Init);
        sync.handle(0, Event::InitDone);
        sync.handle(
            0,
            Event::Apply(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "m", "namespace": "a"},
                }))
                .expect("a ConfigMap"),
            ),
        );
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains(
                "envlink_watch_resource_last_event_timestamp_seconds{resource=\"configmaps\"} "
            ),
            "{text}"
        );
        assert!(text.contains("envlink_watch_resource_connected{resource=\"configmaps\"} 1"));
    }
}
