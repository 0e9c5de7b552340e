//! One-shot reads from the API server (no watch): paged lists, each page decoded straight
//! into small records of the fields a caller needs.
//!
//! Used by `envlink mutate --kubeconfig` (the Services of a few namespaces) and `envlink
//! audit` (every Pod, workload and Service). Memory is bounded by one page: a page's text
//! is decoded into the caller's record type (every other field is skipped while parsing),
//! handed to the caller and dropped before the next page is fetched, so 100,000 Pods cost
//! what 500 do plus what the caller keeps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::catalog::service_fields::SpecFields;
use crate::servicelinks::ServiceLink;

/// Objects per page: the API server's own default chunk size for `kubectl get` is 500.
pub const PAGE_SIZE: u32 = 500;

/// Why a list failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The API server refused or could not be reached.
    #[error("cannot list {what}: {source}")]
    Api {
        /// What was listed (`pods in namespace shop`).
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The answer is not a list of the expected objects.
    #[error("the list of {what} does not decode: at `{path}`: {message}")]
    Decode {
        /// What was listed.
        what: String,
        /// Where in the page.
        path: String,
        /// The decoder's message.
        message: String,
    },
}

impl ListError {
    /// Whether the API server answered 404 (the resource does not exist in this version).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ListError::Api { source: kube::Error::Api(status), .. } if status.code == 404)
    }
}

/// A collection of the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
}

impl Collection {
    /// `v1` Services.
    pub const SERVICES: Collection = Collection::new("", "v1", "services");
    /// `v1` Pods.
    pub const PODS: Collection = Collection::new("", "v1", "pods");

    /// A collection by group, version and plural.
    pub const fn new(group: &'static str, version: &'static str, plural: &'static str) -> Self {
        Self {
            group,
            version,
            plural,
        }
    }

    /// The URL path of the collection, cluster-wide or in one namespace.
    pub fn path(&self, namespace: Option<&str>) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{}", self.plural),
            None => format!("{prefix}/{}", self.plural),
        }
    }

    /// How messages name a list of it.
    pub fn describe(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match namespace {
            Some(ns) => format!("{}{group} in namespace {ns}", self.plural),
            None => format!("{}{group} in all namespaces", self.plural),
        }
    }
}

/// One page of a list: its items and the token for the next page.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// Lists a collection page by page (`limit` and `continue`), handing each page's records to
/// `each` before the next is fetched. Returns how many objects were listed.
///
/// All pages come from one consistent snapshot (the continue token carries the first page's
/// resourceVersion), as `kubectl get` sees it.
pub async fn list_pages<T, F>(
    client: &kube::Client,
    collection: Collection,
    namespace: Option<&str>,
    page_size: u32,
    mut each: F,
) -> Result<usize, ListError>
where
    T: DeserializeOwned,
    F: FnMut(Vec<T>),
{
    let what = collection.describe(namespace);
    let request = kube::core::Request::new(collection.path(namespace));
    let mut token: Option<String> = None;
    let mut listed = 0;
    loop {
        let mut params = ListParams::default().limit(page_size);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let http_request = request.list(&params).map_err(|e| ListError::Api {
            what: what.clone(),
            source: kube::Error::BuildRequest(e),
        })?;
        let text = client
            .request_text(http_request)
            .await
            .map_err(|source| ListError::Api {
                what: what.clone(),
                source,
            })?;
        let page: Page<T> = decode_page(&text, &what)?;
        drop(text);
        listed += page.items.len();
        each(page.items);
        match page.metadata.continue_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(listed),
        }
    }
}

fn decode_page<T: DeserializeOwned>(text: &str, what: &str) -> Result<Page<T>, ListError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| ListError::Decode {
        what: what.to_string(),
        path: e.path().to_string(),
        message: crate::text::clip(&e.inner().to_string(), 300).into_owned(),
    })
}

/// `metadata` fields every audited object needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetaFields {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`.
    #[serde(default)]
    pub namespace: String,
    /// `metadata.uid`.
    #[serde(default)]
    pub uid: String,
    /// `metadata.creationTimestamp`.
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
}

/// A Service as a one-shot list gives it: the kubelet's fields and when it was created.
#[derive(Debug, Deserialize)]
pub struct ServiceRecord {
    /// `metadata`.
    #[serde(default)]
    pub metadata: ObjectMetaFields,
    /// `spec` (cluster IP and ports only).
    #[serde(default)]
    pub spec: Option<SpecFields>,
}

impl ServiceRecord {
    /// The kubelet's view of it.
    pub fn link(&self) -> ServiceLink {
        let spec = self.spec.as_ref();
        ServiceLink {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            cluster_ip: spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default(),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| crate::servicelinks::LinkPort {
                            name: p.name.clone().unwrap_or_default(),
                            port: p.port,
                            protocol: p.protocol.clone().unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Every Service of the given namespaces (all namespaces for `None`), one page at a time.
pub async fn list_services(
    client: &kube::Client,
    namespaces: Option<&[String]>,
) -> Result<Vec<ServiceRecord>, ListError> {
    let mut out = Vec::new();
    match namespaces {
        None => {
            list_pages(client, Collection::SERVICES, None, PAGE_SIZE, |page| {
                out.extend(page)
            })
            .await?;
        }
        Some(namespaces) => {
            for ns in namespaces {
                list_pages(client, Collection::SERVICES, Some(ns), PAGE_SIZE, |page| {
                    out.extend(page)
                })
                .await?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Collection::PODS.path(None), "/api/v1/pods");
        assert_eq!(
            Collection::new("apps", "v1", "deployments").path(Some("shop")),
            "/apis/apps/v1/namespaces/shop/deployments"
        );
        assert_eq!(
            Collection::new("batch", "v1", "cronjobs").describe(None),
            "cronjobs.batch in all namespaces"
        );
    }

    #[test]
    fn pages_decode_with_their_continue_token() {
        let text = r#"{"kind":"ServiceList","metadata":{"resourceVersion":"9","continue":"abc"},
            "items":[{"metadata":{"name":"db","namespace":"shop","uid":"u1",
                "creationTimestamp":"2026-01-02T03:04:05Z","managedFields":[{"x":1}]},
              "spec":{"clusterIP":"10.96.0.9","ports":[{"name":"pg","port":5432}],"selector":{"a":"b"}},
              "status":{}}]}"#;
        let page: Page<ServiceRecord> = decode_page(text, "services").expect("decodes");
        assert_eq!(page.metadata.continue_token.as_deref(), Some("abc"));
        let link = page.items[0].link();
        assert_eq!(
            (link.namespace.as_str(), link.name.as_str()),
            ("shop", "db")
        );
        assert_eq!(link.ports[0].port, 5432);
        assert!(page.items[0].metadata.creation_timestamp.is_some());
        let err = decode_page::<ServiceRecord>(r#"{"items":[{"spec":{"ports":[{}]}}]}"#, "x")
            .expect_err("port is required");
        assert!(err.to_string().contains("items[0].spec.ports[0]"), "{err}");
        let last: Page<ServiceRecord> = decode_page(r#"{"metadata":{}}"#, "x").expect("empty");
        assert!(last.items.is_empty() && last.metadata.continue_token.is_none());
    }
}
