//! The service checks: `stale-service-variable` and `missing-service-variable`.
//!
//! What can be checked honestly. The kubelet's own service variables are not in the Pod's
//! spec: it computes them when a container starts. So for a Pod that relies on the kubelet
//! (no `envlink.io/injected`), the values are invisible; what is visible is *when* the Pod
//! was created, and a Service created after it was not there when its containers first
//! started: `missing-service-variable` (it covers a Service deleted and recreated after the
//! Pod too, whose old values such a Pod carries). For a Pod envlink injected, and for any
//! variable a Pod author wrote into `env`, the values are in the spec and are compared with
//! what the current Services give: `stale-service-variable`. A Pod whose containers have all
//! ended (`Succeeded`, `Failed`) is skipped: its environment no longer matters.
//!
//! Every comparison uses `metadata.creationTimestamp` (one-second resolution): a Service
//! created in the same second as the Pod is not reported.

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashSet;
use k8s_openapi::jiff::Timestamp;

use crate::admission::selection::{self, Chosen, Source};
use crate::admission::{ANNOTATION_INJECTED, ANNOTATION_SERVICES};
use crate::catalog::{Catalog, IngestError, LinkedService, Snapshot};
use crate::config::ServicesConfig;
use crate::listing::ServiceRecord;
use crate::podshape::ContainerKind;
use crate::servicelinks::{ServiceLink, env_name};

use super::objects::{ContainerRecord, PodRecord};
use super::{Check, Finding, Severity};

/// A variable's value today and the Service (`namespace/name`) that gives it.
#[derive(Debug)]
struct Expected {
    value: Box<str>,
    service: Box<str>,
}

type Expectations = HashMap<Box<str>, Expected>;

/// Most (namespace, record) expectation maps kept at once. Pods are listed in namespace
/// order, so a few suffice; the bound keeps a cluster of many namespaces in fixed memory.
const CACHE_LIMIT: usize = 256;

/// The current Services, with their creation times, and what they give each Pod.
#[derive(Debug)]
pub struct ServiceState {
    /// The Services, read-only once built.
    catalog: Snapshot,
    created: HashMap<(Box<str>, Box<str>), Timestamp>,
    /// The namespaces whose Services were listed; `None`: all of them.
    listed: Option<HashSet<String>>,
    /// For reading `envlink.io/injected` records: what was recorded is taken as written
    /// (cross-namespace entries included), not judged again.
    lookup: ServicesConfig,
    cache: HashMap<(Box<str>, Box<str>), Arc<Expectations>>,
}

impl ServiceState {
    /// The state of these Services, listed in `listed` namespaces (`None`: all namespaces).
    /// Services that cannot enter a catalog are returned with their error.
    pub fn new(
        services: Vec<(ServiceLink, Option<Timestamp>)>,
        listed: Option<Vec<String>>,
    ) -> (Self, Vec<IngestError>) {
        let mut created = HashMap::new();
        let mut links = Vec::with_capacity(services.len());
        for (link, time) in services {
            if let Some(time) = time {
                created.insert(
                    (link.namespace.as_str().into(), link.name.as_str().into()),
                    time,
                );
            }
            links.push(link);
        }
        let (catalog, errors) = Catalog::from_links(links);
        let state = Self {
            catalog: catalog.snapshot(),
            created,
            listed: listed.map(|l| l.into_iter().collect()),
            lookup: ServicesConfig {
                allow_cross_namespace: true,
                ..ServicesConfig::default()
            },
            cache: HashMap::new(),
        };
        (state, errors)
    }

    /// The state of Services as a one-shot list gives them.
    pub fn from_records(
        records: Vec<ServiceRecord>,
        listed: Option<Vec<String>>,
    ) -> (Self, Vec<IngestError>) {
        let services = records
            .into_iter()
            .map(|r| {
                let time = r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                (r.link(), time)
            })
            .collect();
        Self::new(services, listed)
    }

    /// Whether the Services of `namespace` were listed (else nothing is said about them).
    pub fn knows(&self, namespace: &str) -> bool {
        self.listed.as_ref().is_none_or(|l| l.contains(namespace))
    }

    fn created(&self, namespace: &str, name: &str) -> Option<Timestamp> {
        self.created.get(&(namespace.into(), name.into())).copied()
    }

    /// What the variables of a Pod in `namespace` with this record should hold today: the
    /// recorded Services' variables first (they say which Service each injected variable
    /// came from), then those of every Service the kubelet would give it.
    fn expectations(&mut self, namespace: &str, record: Option<&str>) -> Arc<Expectations> {
        let key: (Box<str>, Box<str>) = (namespace.into(), record.unwrap_or("").into());
        if let Some(found) = self.cache.get(&key) {
            return Arc::clone(found);
        }
        let mut map = Expectations::new();
        let mut add = |chosen: &[Chosen]| {
            for c in chosen {
                let service = format!("{}/{}", c.namespace, c.service.name());
                for (name, value) in c.service.variables().iter() {
                    map.entry(name.into()).or_insert_with(|| Expected {
                        value: value.into(),
                        service: service.as_str().into(),
                    });
                }
            }
        };
        if let Some(record) = record
            && let Ok(listed) = selection::listed_selection(
                &self.catalog,
                namespace,
                ANNOTATION_INJECTED,
                record,
                &self.lookup,
                Source::Recorded,
            )
        {
            add(&listed.chosen);
        }
        add(&selection::kubelet_selection(&self.catalog, namespace, true).chosen);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        let map = Arc::new(map);
        self.cache.insert(key, Arc::clone(&map));
        map
    }

    /// Both service checks on one Pod.
    pub fn check_pod(&mut self, pod: &PodRecord, out: &mut Vec<Finding>) {
        let namespace = pod.metadata.namespace.as_str();
        if pod.is_terminated() || !self.knows(namespace) {
            return;
        }
        let record = pod.metadata.annotation(ANNOTATION_INJECTED);
        self.stale(pod, record, out);
        self.missing(pod, record, out);
    }

    fn stale(&mut self, pod: &PodRecord, record: Option<&str>, out: &mut Vec<Finding>) {
        let namespace = pod.metadata.namespace.as_str();
        let expected = self.expectations(namespace, record);
        for container in containers(pod) {
            let mut seen = HashSet::new();
            for entry in &container.env {
                if !seen.insert(entry.name.as_str()) {
                    continue;
                }
                let (Some(have), Some(want)) = (
                    container.literal(&entry.name),
                    expected.get(entry.name.as_str()),
                ) else {
                    continue;
                };
                if have != &*want.value {
                    out.push(finding(
                        pod,
                        container,
                        Check::StaleServiceVariable,
                        &entry.name,
                        format!(
                            "{} is {:?} in the Pod; Service {} gives {:?} today (changed or \
                             recreated since the Pod was created: recreate the Pod)",
                            entry.name, have, want.service, &*want.value
                        ),
                    ));
                }
            }
        }
        // Recorded Services that are gone: their variables point nowhere now.
        let Some(record) = record else {
            return;
        };
        let Ok(listed) = selection::listed_selection(
            &self.catalog,
            namespace,
            ANNOTATION_INJECTED,
            record,
            &self.lookup,
            Source::Recorded,
        ) else {
            return;
        };
        let gone = listed
            .missing
            .iter()
            .map(|s| (s, "no longer exists"))
            .chain(
                listed
                    .without_ip
                    .iter()
                    .map(|s| (s, "no longer has a cluster IP")),
            );
        for (service, why) in gone {
            let (service_ns, name) = service.split_once('/').unwrap_or((namespace, service));
            if !self.knows(service_ns) {
                continue;
            }
            let variable = format!("{}_SERVICE_HOST", env_name(name));
            for container in containers(pod) {
                let Some(have) = container.literal(&variable) else {
                    continue;
                };
                out.push(finding(
                    pod,
                    container,
                    Check::StaleServiceVariable,
                    &variable,
                    format!(
                        "{variable} is {have:?} in the Pod; Service {service}, recorded in \
                         {ANNOTATION_INJECTED}, {why}: none of its variables are valid today"
                    ),
                ));
            }
        }
    }

    /// When the Service was created, if after `pod_created`: a container started before
    /// then cannot have its variables.
    fn newer(&self, c: &Chosen, pod_created: Timestamp) -> Option<Timestamp> {
        self.created(c.namespace, c.service.name())
            .filter(|t| *t > pod_created)
    }

    /// Services the Pod should have the variables of but was created too early for (or
    /// that do not exist), by who chose its Services: the kubelet alone, the Pod's
    /// annotation, or envlink's injected kubelet set.
    fn missing(&self, pod: &PodRecord, record: Option<&str>, out: &mut Vec<Finding>) {
        let Some(pod_created) = pod.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
            return;
        };
        let Some(record) = record else {
            self.missing_from_kubelet(pod, pod_created, out);
            return;
        };
        let Some(recorded) = self.recorded(pod, record) else {
            return;
        };
        match pod.metadata.annotation(ANNOTATION_SERVICES) {
            Some(services) => self.missing_named(pod, pod_created, services, &recorded, out),
            None => self.missing_injected(pod, pod_created, &recorded, out),
        }
    }

    /// No envlink record: the kubelet's links, its set at the time the containers started.
    fn missing_from_kubelet(
        &self,
        pod: &PodRecord,
        pod_created: Timestamp,
        out: &mut Vec<Finding>,
    ) {
        let namespace = pod.metadata.namespace.as_str();
        let links = pod.spec.enable_service_links.unwrap_or(true);
        for c in selection::kubelet_selection(&self.catalog, namespace, links).chosen {
            if let Some(time) = self.newer(&c, pod_created) {
                report_missing(
                    pod,
                    &c.service,
                    &format!("{}/{}", c.namespace, c.service.name()),
                    &format!(
                        "was created at {time}, after the Pod ({pod_created}); the kubelet \
                         sets service variables when a container starts, so a container \
                         started before then lacks them (or has those of an earlier Service \
                         of that name): recreate the Pod"
                    ),
                    out,
                );
            }
        }
    }

    /// The Services in envlink's record (`namespace`, `name`), gone ones included; `None`
    /// when the record cannot be read.
    fn recorded(&self, pod: &PodRecord, record: &str) -> Option<HashSet<(String, String)>> {
        let listed = selection::listed_selection(
            &self.catalog,
            pod.metadata.namespace.as_str(),
            ANNOTATION_INJECTED,
            record,
            &self.lookup,
            Source::Recorded,
        )
        .ok()?;
        Some(
            listed
                .chosen
                .iter()
                .map(|c| (c.namespace.to_string(), c.service.name().to_string()))
                .chain(
                    listed
                        .missing
                        .iter()
                        .chain(&listed.without_ip)
                        .filter_map(|s| {
                            s.split_once('/')
                                .map(|(n, m)| (n.to_string(), m.to_string()))
                        }),
                )
                .collect(),
        )
    }

    /// The Pod names its Services in the annotation: those created after it, and those that
    /// do not exist, that envlink did not record.
    fn missing_named(
        &self,
        pod: &PodRecord,
        pod_created: Timestamp,
        services: &str,
        recorded: &HashSet<(String, String)>,
        out: &mut Vec<Finding>,
    ) {
        let namespace = pod.metadata.namespace.as_str();
        let Ok(named) = selection::listed_selection(
            &self.catalog,
            namespace,
            ANNOTATION_SERVICES,
            services,
            &self.lookup,
            Source::Annotation,
        ) else {
            return;
        };
        for c in &named.chosen {
            if in_record(recorded, c) || !self.knows(c.namespace) {
                continue;
            }
            if let Some(time) = self.newer(c, pod_created) {
                report_missing(
                    pod,
                    &c.service,
                    &format!("{}/{}", c.namespace, c.service.name()),
                    &format!(
                        "named in {ANNOTATION_SERVICES}, was created at {time}, after \
                         the Pod ({pod_created}): envlink could not inject its \
                         variables and the Pod's service links are off: recreate the \
                         Pod"
                    ),
                    out,
                );
            }
        }
        for service in &named.missing {
            let (service_ns, name) = service.split_once('/').unwrap_or((namespace, service));
            if !self.knows(service_ns)
                || recorded.contains(&(service_ns.to_string(), name.to_string()))
            {
                continue;
            }
            let variable = format!("{}_SERVICE_HOST", env_name(name));
            for container in containers(pod) {
                if container.defines(&variable) {
                    continue;
                }
                out.push(finding(
                    pod,
                    container,
                    Check::MissingServiceVariable,
                    &variable,
                    format!(
                        "Service {service}, named in {ANNOTATION_SERVICES}, does not \
                         exist: the Pod has none of its variables"
                    ),
                ));
            }
        }
    }

    /// envlink injected the kubelet's set when the Pod was created: the Services created
    /// after the Pod that are not in its record.
    fn missing_injected(
        &self,
        pod: &PodRecord,
        pod_created: Timestamp,
        recorded: &HashSet<(String, String)>,
        out: &mut Vec<Finding>,
    ) {
        let namespace = pod.metadata.namespace.as_str();
        // A Service older than the Pod that is not in the record means the Pod did not get
        // that set (its links were off, or another policy applied): then nothing can be said
        // about newer Services either.
        let kubelet = selection::kubelet_selection(&self.catalog, namespace, true);
        if kubelet
            .chosen
            .iter()
            .any(|c| !in_record(recorded, c) && self.newer(c, pod_created).is_none())
        {
            return;
        }
        for c in &kubelet.chosen {
            if in_record(recorded, c) {
                continue;
            }
            if let Some(time) = self.newer(c, pod_created) {
                report_missing(
                    pod,
                    &c.service,
                    &format!("{}/{}", c.namespace, c.service.name()),
                    &format!(
                        "was created at {time}, after the Pod ({pod_created}): envlink \
                         injected the Services of the time and turned the kubelet's \
                         links off, so the Pod lacks its variables: recreate the Pod"
                    ),
                    out,
                );
            }
        }
    }
}

/// Whether envlink's record holds this Service.
fn in_record(recorded: &HashSet<(String, String)>, c: &Chosen) -> bool {
    recorded.contains(&(c.namespace.to_string(), c.service.name().to_string()))
}

/// The containers whose environment service variables reach: init and regular ones (the
/// kubelet gives ephemeral containers none that matter, and envlink injects none there).
fn containers(pod: &PodRecord) -> impl Iterator<Item = &ContainerRecord> {
    [ContainerKind::Init, ContainerKind::Regular]
        .into_iter()
        .flat_map(|kind| pod.spec.containers(kind))
}

/// One finding per container that lacks the Service's first variable (`P_SERVICE_HOST`);
/// a container that defines it itself is judged by the stale check instead.
fn report_missing(
    pod: &PodRecord,
    service: &LinkedService,
    display: &str,
    why: &str,
    out: &mut Vec<Finding>,
) {
    let rendered = service.variables();
    let Some((variable, _)) = rendered.iter().next() else {
        return;
    };
    for container in containers(pod) {
        if container.defines(variable) {
            continue;
        }
        out.push(finding(
            pod,
            container,
            Check::MissingServiceVariable,
            variable,
            format!("Service {display} {why}"),
        ));
    }
}

fn finding(
    pod: &PodRecord,
    container: &ContainerRecord,
    check: Check,
    variable: &str,
    message: String,
) -> Finding {
    Finding {
        namespace: pod.metadata.namespace.clone(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone(),
        container: container.name.clone(),
        check,
        variable: variable.to_string(),
        message,
        severity: Severity::Fail,
        rule: check.as_str().to_string(),
        api_version: "v1".into(),
        uid: pod.metadata.uid.clone(),
    }
}
