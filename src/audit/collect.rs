//! Feeding an audit from the API server: one-shot, paged lists (no watch) of Services, Pods
//! and the six workload kinds, decoded into the small records of [`super::objects`].
//!
//! Services are read first and kept (the checks compare every Pod with them); Pods and
//! workloads are judged page by page and dropped, so memory follows the Services and the
//! findings, not the number of Pods.
//!
//! RBAC: `list` on `services`, `pods` (core), `deployments`, `statefulsets`, `daemonsets`,
//! `replicasets` (apps) and `jobs`, `cronjobs` (batch) — cluster-wide, or in each audited
//! namespace and `default`.

use crate::config::Policy;
use crate::listing::{self, Collection, ListError, PAGE_SIZE};
use crate::servicelinks::DEFAULT_NAMESPACE;

use super::objects::{PodRecord, WorkloadRecord};
use super::services::ServiceState;
use super::{Audit, Outcome};

/// The workload kinds: collection, kind, API version.
const WORKLOADS: [(Collection, &str, &str); 5] = [
    (
        Collection::new("apps", "v1", "deployments"),
        "Deployment",
        "apps/v1",
    ),
    (
        Collection::new("apps", "v1", "statefulsets"),
        "StatefulSet",
        "apps/v1",
    ),
    (
        Collection::new("apps", "v1", "daemonsets"),
        "DaemonSet",
        "apps/v1",
    ),
    (
        Collection::new("apps", "v1", "replicasets"),
        "ReplicaSet",
        "apps/v1",
    ),
    (Collection::new("batch", "v1", "jobs"), "Job", "batch/v1"),
];

/// CronJobs are `batch/v1` since Kubernetes 1.21 and only `batch/v1beta1` before.
const CRONJOBS: [(Collection, &str); 2] = [
    (Collection::new("batch", "v1", "cronjobs"), "batch/v1"),
    (
        Collection::new("batch", "v1beta1", "cronjobs"),
        "batch/v1beta1",
    ),
];

/// What an audit reads, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Objects per list page.
    pub page_size: Option<u32>,
}

/// Lists everything and audits it. `progress` is told after each page how many Pods and
/// workloads have been judged. Besides the outcome, notes about Services left out.
pub async fn audit(
    client: &kube::Client,
    policy: &Policy,
    options: &Options,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<(Outcome, Vec<String>), ListError> {
    let page_size = options.page_size.unwrap_or(PAGE_SIZE);
    let scopes: Vec<Option<&str>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options
            .namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    // Services: every namespace audited, and `default` for the `kubernetes` Service.
    let listed = if options.namespaces.is_empty() {
        None
    } else {
        let mut namespaces = options.namespaces.clone();
        namespaces.push(DEFAULT_NAMESPACE.to_string());
        namespaces.sort();
        namespaces.dedup();
        Some(namespaces)
    };
    let records = listing::list_services(client, listed.as_deref()).await?;
    let (services, errors) = ServiceState::from_records(records, listed);
    let notes = errors.iter().map(|e| format!("{e}; left out")).collect();
    let mut audit = Audit::new(policy, services);
    let (mut pods, mut workloads) = (0usize, 0usize);
    for scope in &scopes {
        listing::list_pages(client, Collection::PODS, *scope, page_size, |page| {
            pods += page.len();
            for pod in page {
                let pod: PodRecord = pod;
                audit.pod(&pod);
            }
            progress(pods, workloads);
        })
        .await?;
    }
    for scope in &scopes {
        for (collection, kind, api_version) in WORKLOADS {
            list_workloads(
                client,
                collection,
                *scope,
                page_size,
                &mut audit,
                kind,
                api_version,
                &mut |n| {
                    workloads += n;
                    progress(pods, workloads);
                },
            )
            .await?;
        }
        let mut listed_cronjobs = false;
        for (collection, api_version) in CRONJOBS {
            let result = list_workloads(
                client,
                collection,
                *scope,
                page_size,
                &mut audit,
                "CronJob",
                api_version,
                &mut |n| {
                    workloads += n;
                    progress(pods, workloads);
                },
            )
            .await;
            match result {
                Ok(()) => {
                    listed_cronjobs = true;
                    break;
                }
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        if !listed_cronjobs {
            return Err(ListError::Api {
                what: "cronjobs.batch".into(),
                source: kube::Error::Api(Box::new(kube::core::Status::failure(
                    "neither batch/v1 nor batch/v1beta1 CronJobs are served",
                    "NotFound",
                ))),
            });
        }
    }
    Ok((audit.finish(), notes))
}

#[allow(clippy::too_many_arguments)]
async fn list_workloads(
    client: &kube::Client,
    collection: Collection,
    scope: Option<&str>,
    page_size: u32,
    audit: &mut Audit<'_>,
    kind: &str,
    api_version: &str,
    counted: &mut (dyn FnMut(usize) + Send),
) -> Result<(), ListError> {
    listing::list_pages(client, collection, scope, page_size, |page| {
        let n = page.len();
        for workload in page {
            let workload: WorkloadRecord = workload;
            audit.workload(kind, api_version, &workload);
        }
        counted(n);
    })
    .await
    .map(|_| ())
}
