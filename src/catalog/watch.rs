//! The Service catalog from kube-runtime watchers, through the common
//! [`driver`](super::driver).
//!
//! One watcher over Services in all namespaces, or — when the policy lists namespaces — one
//! per listed namespace plus `default` (for the `kubernetes` Service); each is a
//! [`ListScope`] of one [`CatalogSync`], so a namespace's re-list replaces only that
//! namespace. What is Service-specific lives here: the scopes, the decoding (into the fields
//! the kubelet reads, [`ServiceFields`]) and how the [`Catalog`] takes a Service.

use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject};

use super::driver::{ObjectKey, WatchDriver, WatchIndex};
use super::service_fields::ServiceFields;
use super::{Catalog, IngestedService, ListScope};
use crate::servicelinks::{DEFAULT_NAMESPACE, ServiceLink};

pub use super::driver::{SkipReason, WATCH_READ_TIMEOUT, WATCH_TIMEOUT_SECS, run};
pub use super::status::{Freshness, WatchStatus, monotonic_ms};

/// The driver of the Service watches: feeds the [`Catalog`], which is ready once every scope
/// has listed.
pub type CatalogSync = WatchDriver<Catalog>;

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

/// Decodes a watched object of `scope` into the fields the kubelet reads.
pub fn decode_service(object: DynamicObject, scope: &ListScope) -> Result<ServiceLink, SkipReason> {
    let key = ObjectKey::of(&object, scope).complete(KIND)?;
    decode_fields(key, &object)
}

const KIND: &str = "Service";

fn decode_fields(key: ObjectKey, object: &DynamicObject) -> Result<ServiceLink, SkipReason> {
    // `data` is the object without its metadata: `spec` and `status`, as kube-runtime
    // decoded them (a JSON tree). Only `spec`'s cluster IP and ports are read from it; the
    // rest is skipped without being copied.
    let fields = ServiceFields::decode(&object.data)
        .map_err(|e| key.undecodable(KIND, format!("at `{}`: {}", e.path(), e.inner())))?;
    Ok(fields
        .spec
        .unwrap_or_default()
        .into_link(key.namespace, key.name))
}

/// The write side of the catalog, as the driver feeds it. A Service is ingested (its
/// recipe made, [`Catalog::ingest`]) as it is decoded, once per event: a list under way is
/// held in the catalog's compact form, not as decoded fields.
impl WatchIndex for Catalog {
    type Item = IngestedService;
    type Error = std::convert::Infallible;

    fn resource(&self) -> ApiResource {
        ApiResource::erase::<Service>(&())
    }

    fn decode(&self, key: ObjectKey, object: DynamicObject) -> Result<IngestedService, SkipReason> {
        let link = decode_fields(key.clone(), &object)?;
        self.ingest(&link)
            .map_err(|e| key.undecodable(KIND, e.to_string()))
    }

    fn apply(&self, service: IngestedService) -> Result<(), Self::Error> {
        self.insert(service);
        Ok(())
    }

    fn delete(&self, key: &ObjectKey) {
        Catalog::delete(self, &key.namespace, &key.name);
    }

    fn reset(&self, scope: &ListScope, services: Vec<IngestedService>) -> Vec<Self::Error> {
        self.replace_ingested(scope.clone(), services);
        Vec::new()
    }

    fn mark_ready(&self) {
        Catalog::mark_ready(self);
    }

    fn is_ready(&self) -> bool {
        Catalog::is_ready(self)
    }

    fn len(&self) -> usize {
        self.stats().services
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;

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
            .iter()
            .find(|(n, _)| n.ends_with("_SERVICE_HOST"))
            .map(|(_, v)| v.to_string())
    }

    fn sync(scopes: Vec<ListScope>) -> (Arc<Catalog>, Arc<WatchStatus>, CatalogSync) {
        let catalog = Arc::new(Catalog::new());
        let s = CatalogSync::new(catalog.clone(), scopes);
        (catalog, s.status(), s)
    }

    #[test]
    fn initial_list_builds_the_catalog_and_then_ready() {
        let (catalog, status, mut s) = sync(vec![ListScope::All]);
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
        assert_eq!(status.counters().events(), 2);
    }

    #[test]
    fn apply_and_delete() {
        let (catalog, status, mut s) = sync(vec![ListScope::All]);
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
        assert_eq!(status.counters().events(), 4);
    }

    #[test]
    fn relist_drops_services_deleted_while_the_watch_was_down() {
        let (catalog, status, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "gone", "10.0.0.1", 80)));
        s.handle(0, Event::InitApply(service("a", "kept", "10.0.0.2", 80)));
        s.handle(0, Event::InitDone);
        s.restarted(0, &"connection refused");
        assert_eq!(status.counters().restarts(), 1);
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
    fn undecodable_objects_are_skipped_not_fatal() {
        let (catalog, status, mut s) = sync(vec![ListScope::All]);
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
        assert_eq!(status.counters().skipped(), 2);
        // An update that makes a known Service undecodable removes the stale entry.
        s.handle(0, Event::Apply(service("a", "broken", "10.0.0.5", 80)));
        assert!(catalog.service("a", "broken").is_some());
        s.handle(0, Event::Apply(bad));
        assert!(catalog.service("a", "broken").is_none());
        assert_eq!(status.counters().skipped(), 3);
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
        assert_eq!(
            WatchStatus::default().connection().freshness(),
            Freshness::Static
        );
        assert!(WatchStatus::default().connection().is_connected());

        let (catalog, status, mut s) = sync(vec![ListScope::All]);
        assert_eq!(status.connection().freshness(), Freshness::Syncing);
        assert!(!status.connection().is_connected());
        s.handle(0, Event::Init);
        s.handle(0, Event::InitApply(service("a", "x", "10.0.0.1", 80)));
        assert_eq!(status.connection().freshness(), Freshness::Syncing);
        s.handle(0, Event::InitDone);
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        assert!(
            status.connection().current_at() > 0,
            "a completed list marks the catalog current"
        );

        // The watch fails: stale from that moment on, growing with time.
        s.restarted(0, &"connection refused");
        let at = status.connection().current_at();
        assert_eq!(
            status.connection().freshness_at(at + 90_000),
            Freshness::Disconnected {
                stale_for: Duration::from_secs(90)
            }
        );
        assert_eq!(
            status.connection().freshness_at(at + 1_500).staleness(),
            Duration::from_millis(1_500)
        );
        // Repeated failures while down do not make it look fresher.
        s.restarted(0, &"connection refused");
        assert_eq!(status.connection().current_at(), at);
        // A clock reading before the mark (cannot happen, but) saturates at zero.
        assert_eq!(
            status.connection().freshness_at(0).staleness(),
            Duration::ZERO
        );
        // The catalog keeps serving what it had.
        assert!(catalog.service("a", "x").is_some());
        assert!(catalog.is_ready());

        // Re-listing is not current yet; InitDone is.
        s.handle(0, Event::Init);
        assert!(matches!(
            status.connection().freshness(),
            Freshness::Disconnected { .. }
        ));
        s.handle(0, Event::InitDone);
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        assert_eq!(status.counters().restarts(), 2);
    }

    #[test]
    fn freshness_needs_every_scope() {
        let (_, status, mut s) = sync(scopes(&["shop".to_string()]));
        for index in [0, 1] {
            s.handle(index, Event::Init);
            s.handle(index, Event::InitDone);
        }
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        // One namespace's watch fails: events on the other do not make the catalog current.
        s.restarted(1, &"timeout");
        let at = status.connection().current_at();
        s.handle(0, Event::Apply(service("default", "x", "10.0.0.1", 80)));
        s.handle(0, Event::Delete(service("default", "x", "10.0.0.1", 80)));
        assert_eq!(status.connection().current_at(), at);
        assert!(!status.connection().is_connected());
        s.handle(1, Event::Init);
        s.handle(1, Event::InitDone);
        assert_eq!(status.connection().freshness(), Freshness::Connected);
    }

    #[test]
    fn all_namespaces_is_one_scope() {
        assert_eq!(scopes(&[]), vec![ListScope::All]);
    }

    #[test]
    fn an_init_apply_without_init_is_kept_and_the_watch_is_not_current() {
        let (catalog, status, mut s) = sync(vec![ListScope::All]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitDone);
        assert_eq!(status.connection().freshness(), Freshness::Connected);
        s.handle(0, Event::InitApply(service("a", "x", "10.0.0.1", 80)));
        // A list is under way: not current until it completes.
        assert!(!status.connection().is_connected());
        s.handle(0, Event::InitDone);
        assert!(catalog.service("a", "x").is_some());
        assert_eq!(status.connection().freshness(), Freshness::Connected);
    }

    #[test]
    fn restarts_are_counted_per_resource() {
        let (_, services, mut s) = sync(vec![ListScope::All]);
        let mut config_maps = super::super::configmaps::ConfigMapSync::cluster_wide(Arc::default());
        s.restarted(0, &"connection refused");
        s.restarted(0, &"connection refused");
        config_maps.restarted(0, &"410 Gone");
        assert_eq!(services.counters().restarts(), 2);
        assert_eq!(config_maps.status().counters().restarts(), 1);
        assert_eq!(services.resource(), "services");
    }
}
