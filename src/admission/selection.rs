//! Which Services a Pod gets: the kubelet's set, the Pod's own list, or the recorded one.

use std::sync::Arc;

use hashbrown::HashSet;

use crate::catalog::{LinkedService, Snapshot};
use crate::config::ServicesConfig;
use crate::servicelinks::{DEFAULT_NAMESPACE, MASTER_SERVICE_NAME, is_dns_label};
use crate::text::{ECHO_LIMIT, LIST_LIMIT, clip};

/// A chosen Service and how the `envlink.io/injected` annotation names it. Borrows its
/// namespace from the review (the Pod's namespace or the annotation's text), so choosing a
/// Service allocates nothing beyond its place in the list.
#[derive(Debug, Clone)]
pub struct Chosen<'a> {
    /// The Service's namespace.
    pub namespace: &'a str,
    /// Whether the annotation names it `namespace/name` (outside the Pod's namespace, and
    /// `default/kubernetes` when the Pod's namespace has a `kubernetes` of its own) rather
    /// than `name`.
    pub qualified: bool,
    /// The Service with its variables.
    pub service: Arc<LinkedService>,
}

impl Chosen<'_> {
    /// Appends how the `envlink.io/injected` annotation names it: `name` or `namespace/name`.
    pub fn write_reference(&self, out: &mut String) {
        if self.qualified {
            out.push_str(self.namespace);
            out.push('/');
        }
        out.push_str(self.service.name());
    }

    /// How many bytes [`Chosen::write_reference`] appends.
    pub fn reference_len(&self) -> usize {
        let namespace = if self.qualified {
            self.namespace.len() + 1
        } else {
            0
        };
        namespace + self.service.name().len()
    }
}

/// Where the list of Services came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The kubelet's rules (mode `all`, no annotation).
    Kubelet,
    /// `envlink.io/services`.
    Annotation,
    /// `envlink.io/injected`: envlink's own record on a reinvocation or re-run — or one a Pod
    /// author wrote, which is why it is judged exactly like `envlink.io/services`.
    Recorded,
}

/// The outcome of choosing Services for a Pod.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// Where the list came from.
    pub source: Source,
    /// Chosen Services, sorted by name then namespace.
    pub chosen: Vec<Chosen<'a>>,
    /// Named Services that do not exist (`namespace/name`): the first few, for messages.
    pub missing: Vec<String>,
    /// How many named Services do not exist.
    pub missing_count: usize,
    /// Named Services without a cluster IP (they give no variables): the first few.
    pub without_ip: Vec<String>,
    /// How many named Services have no cluster IP.
    pub without_ip_count: usize,
}

/// A reference in an annotation that cannot be used; the Pod is refused with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Not `name` or `namespace/name` with valid names.
    #[error("{annotation}: {entry:?} is not a Service name or namespace/name")]
    Malformed {
        /// The annotation.
        annotation: &'static str,
        /// The entry.
        entry: String,
    },
    /// A cross-namespace reference while the configuration forbids them.
    #[error(
        "{annotation}: {entry:?} names another namespace, which this cluster does not allow \
         (services.allowCrossNamespace is false)"
    )]
    CrossNamespace {
        /// The annotation.
        annotation: &'static str,
        /// The entry.
        entry: String,
    },
}

/// The kubelet's set for a Pod in `namespace`: its Services with a cluster IP when links are
/// enabled, and the `kubernetes` Service (the namespace's own only when links are enabled).
pub fn kubelet_selection<'a>(
    catalog: &Snapshot,
    namespace: &'a str,
    links_enabled: bool,
) -> Selection<'a> {
    let mut chosen = Vec::new();
    let mut own_master = false;
    if links_enabled && let Some(index) = catalog.namespace(namespace) {
        for service in index.iter().filter(|s| s.has_cluster_ip()) {
            own_master |= service.name() == MASTER_SERVICE_NAME;
            chosen.push(Chosen {
                namespace,
                qualified: false,
                service: Arc::clone(service),
            });
        }
    }
    if !own_master
        && let Some(master) = catalog.service(DEFAULT_NAMESPACE, MASTER_SERVICE_NAME)
        && master.has_cluster_ip()
    {
        chosen.push(Chosen {
            namespace: DEFAULT_NAMESPACE,
            qualified: master_qualified(catalog, namespace),
            service: Arc::clone(master),
        });
    }
    sort(&mut chosen);
    Selection {
        source: Source::Kubelet,
        chosen,
        missing: Vec::new(),
        missing_count: 0,
        without_ip: Vec::new(),
        without_ip_count: 0,
    }
}

/// The Services a Pod lists in an annotation (`envlink.io/services` or the recorded
/// `envlink.io/injected`). `default/kubernetes` is added unless listed, because the kubelet
/// gives it to every Pod.
///
/// Linear in the annotation: a Pod author may list fifty thousand names, so duplicates are
/// found with a set (each lookup is a hash get in the review's snapshot, without a lock).
pub fn listed_selection<'a>(
    catalog: &Snapshot,
    namespace: &'a str,
    annotation: &'static str,
    value: &'a str,
    config: &ServicesConfig,
    source: Source,
) -> Result<Selection<'a>, ReferenceError> {
    let mut selection = Selection {
        source,
        chosen: Vec::new(),
        missing: Vec::new(),
        missing_count: 0,
        without_ip: Vec::new(),
        without_ip_count: 0,
    };
    let mut seen: HashSet<(&'a str, &'a str)> = HashSet::new();
    let mut master_listed = false;
    let master = catalog.service(DEFAULT_NAMESPACE, MASTER_SERVICE_NAME);
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (ns, name) = parse_reference(annotation, entry)?;
        let is_master_ref =
            ns.is_none_or(|ns| ns == DEFAULT_NAMESPACE) && name == MASTER_SERVICE_NAME;
        let target_ns = match ns {
            // A plain `kubernetes` means the one the kubelet would give: the namespace's own
            // when it has one with a cluster IP, else the API server's in `default`.
            // When neither is usable, it names the namespace's own (reported as missing or
            // as giving no variables, like any other Service).
            None if is_master_ref => {
                let own = catalog.service(namespace, MASTER_SERVICE_NAME);
                let own_usable = own.as_ref().is_some_and(|s| s.has_cluster_ip());
                if !own_usable && master.is_some() {
                    DEFAULT_NAMESPACE
                } else {
                    namespace
                }
            }
            None => namespace,
            Some(ns) => {
                let allowed = ns == namespace || is_master_ref || config.allow_cross_namespace;
                if !allowed {
                    return Err(ReferenceError::CrossNamespace {
                        annotation,
                        entry: clip(entry, ECHO_LIMIT).into_owned(),
                    });
                }
                ns
            }
        };
        master_listed |= name == MASTER_SERVICE_NAME;
        if !seen.insert((target_ns, name)) {
            continue;
        }
        let display = || format!("{target_ns}/{name}");
        match catalog.service(target_ns, name) {
            // Only the first few are named in a message; the rest are counted.
            None => {
                selection.missing_count += 1;
                if selection.missing.len() < LIST_LIMIT {
                    selection.missing.push(display());
                }
            }
            Some(service) if !service.has_cluster_ip() => {
                selection.without_ip_count += 1;
                if selection.without_ip.len() < LIST_LIMIT {
                    selection.without_ip.push(display());
                }
            }
            Some(service) => selection.chosen.push(Chosen {
                namespace: target_ns,
                qualified: if target_ns == namespace {
                    false
                } else if is_master_ref {
                    master_qualified(catalog, namespace)
                } else {
                    true
                },
                service: Arc::clone(service),
            }),
        }
    }
    if !master_listed
        && let Some(master) = master
        && master.has_cluster_ip()
    {
        selection.chosen.push(Chosen {
            namespace: DEFAULT_NAMESPACE,
            qualified: master_qualified(catalog, namespace),
            service: Arc::clone(master),
        });
    }
    sort(&mut selection.chosen);
    Ok(selection)
}

/// Whether the annotation names `default/kubernetes` so for a Pod in `namespace`: plain
/// `kubernetes` resolves back to it unless the namespace has its own with a cluster IP.
fn master_qualified(catalog: &Snapshot, namespace: &str) -> bool {
    namespace != DEFAULT_NAMESPACE
        && catalog
            .service(namespace, MASTER_SERVICE_NAME)
            .is_some_and(|s| s.has_cluster_ip())
}

fn sort(chosen: &mut [Chosen<'_>]) {
    chosen.sort_by(|a, b| {
        a.service
            .name()
            .cmp(b.service.name())
            .then_with(|| a.namespace.cmp(b.namespace))
    });
}

fn parse_reference<'v>(
    annotation: &'static str,
    entry: &'v str,
) -> Result<(Option<&'v str>, &'v str), ReferenceError> {
    let malformed = || ReferenceError::Malformed {
        annotation,
        entry: clip(entry, ECHO_LIMIT).into_owned(),
    };
    let (ns, name) = match entry.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, entry),
    };
    if !is_dns_label(name) || ns.is_some_and(|ns| !is_dns_label(ns)) {
        return Err(malformed());
    }
    Ok((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(parse_reference("a", "db"), Ok((None, "db")));
        assert_eq!(parse_reference("a", "prod/db"), Ok((Some("prod"), "db")));
        assert!(parse_reference("a", "prod/").is_err());
        assert!(parse_reference("a", "a/b/c").is_err());
        assert!(parse_reference("a", "DB").is_err());
    }
}
