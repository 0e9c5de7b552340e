//! The static catalog: Services from a manifest file (for `--services-file`, `--dev`,
//! `envlink mutate --services` and users without a cluster).

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use crate::manifest::{self, ManifestError};
use crate::servicelinks::{LinkPort, ServiceLink, is_dns_label};

/// The catalog that `envlink serve --dev` uses when no file is given: a small, realistic
/// cluster to try the webhook against.
pub const EMBEDDED_CATALOG: &str = include_str!("embedded-services.yaml");

/// Why a Service file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFileError {
    /// Not readable or not parseable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A document is not a Service, List or ServiceList.
    #[error("{origin}: document {document}: kind {kind:?} is not a Service, List or ServiceList")]
    WrongKind {
        /// The file.
        origin: String,
        /// 1-based document number.
        document: usize,
        /// What it was.
        kind: String,
    },
    /// A Service does not decode.
    #[error("{origin}: document {document}{item}: not a valid Service: {message}")]
    BadService {
        /// The file.
        origin: String,
        /// 1-based document number.
        document: usize,
        /// ` item N` inside a list, or empty.
        item: String,
        /// The decoder's message.
        message: String,
    },
}

/// Converts a Service to the fields the kubelet reads. A missing namespace becomes
/// `default_namespace`.
pub fn link_from_service(service: &Service, default_namespace: &str) -> ServiceLink {
    let spec = service.spec.as_ref();
    ServiceLink {
        namespace: service
            .metadata
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| default_namespace.to_string()),
        name: service.metadata.name.clone().unwrap_or_default(),
        cluster_ip: spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default(),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| LinkPort {
                        name: p.name.clone().unwrap_or_default(),
                        port: p.port,
                        protocol: p.protocol.clone().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Reads Services from text: YAML (one or many documents) or JSON, each document a Service,
/// a `List` or a `ServiceList`. Services without a namespace go to `default_namespace`.
pub fn parse_services(
    text: &str,
    origin: &str,
    default_namespace: &str,
) -> Result<Vec<ServiceLink>, CatalogFileError> {
    let mut links = Vec::new();
    for (i, mut doc) in manifest::parse_documents(text, origin)?
        .into_iter()
        .enumerate()
    {
        let document = i + 1;
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "Service" => links.push(decode(doc, origin, document, None, default_namespace)?),
            "List" | "ServiceList" => {
                // Taken, not cloned: a list of 100,000 Services is large.
                let items = match doc.get_mut("items").map(Value::take) {
                    Some(Value::Array(items)) => items,
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(CatalogFileError::BadService {
                            origin: origin.into(),
                            document,
                            item: String::new(),
                            message: "`items` is not a list".into(),
                        });
                    }
                };
                for (j, item) in items.into_iter().enumerate() {
                    let item_kind = item
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("Service");
                    if item_kind != "Service" {
                        return Err(CatalogFileError::WrongKind {
                            origin: origin.into(),
                            document,
                            kind: format!("{item_kind} (item {})", j + 1),
                        });
                    }
                    links.push(decode(
                        item,
                        origin,
                        document,
                        Some(j + 1),
                        default_namespace,
                    )?);
                }
            }
            _ => {
                return Err(CatalogFileError::WrongKind {
                    origin: origin.into(),
                    document,
                    kind,
                });
            }
        }
    }
    Ok(links)
}

fn decode(
    value: Value,
    origin: &str,
    document: usize,
    item: Option<usize>,
    default_namespace: &str,
) -> Result<ServiceLink, CatalogFileError> {
    let bad = |message: String| CatalogFileError::BadService {
        origin: origin.into(),
        document,
        item: item.map(|i| format!(" item {i}")).unwrap_or_default(),
        message,
    };
    let service: Service = serde_path_to_error::deserialize(value)
        .map_err(|e| bad(format!("at `{}`: {}", e.path(), e.inner())))?;
    if service.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(bad("metadata.name is missing".into()));
    }
    let link = link_from_service(&service, default_namespace);
    // What the API server enforces: a name envlink could not record in envlink.io/injected
    // (and would refuse there on a reinvocation) never gets into a static catalog either.
    for (key, value) in [
        ("metadata.name", &link.name),
        ("metadata.namespace", &link.namespace),
    ] {
        if !is_dns_label(value) {
            return Err(bad(format!(
                "{key} {value:?} is not a DNS label (lower-case letters, digits and '-', at \
                 most 63 characters)"
            )));
        }
    }
    Ok(link)
}

/// Reads a Service file (`-` for standard input).
pub fn load_services(
    path: &str,
    default_namespace: &str,
) -> Result<Vec<ServiceLink>, CatalogFileError> {
    let (text, origin) = manifest::read_input(path)?;
    parse_services(&text, &origin, default_namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `services_file` fuzz target: a Service named `redis-mast`r` was accepted,
    /// injected and recorded, and the reinvocation then refused the Pod over the record.
    #[test]
    fn names_that_are_not_dns_labels_are_refused() {
        for (name, namespace) in [
            ("redis-mast`r", "shop"),
            ("Web", "shop"),
            ("-web", "shop"),
            ("web", "Shop"),
            ("web", "a/b"),
        ] {
            let text = format!(
                "kind: Service\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\n\
                 spec: {{clusterIP: 10.0.0.1, ports: [{{port: 80}}]}}\n"
            );
            let err = parse_services(&text, "t.yaml", "default")
                .expect_err(name)
                .to_string();
            assert!(err.contains("not a DNS label"), "{err}");
        }
        let ok = "kind: Service\nmetadata: {name: web-2, namespace: shop}\n";
        assert_eq!(parse_services(ok, "t", "default").expect("valid").len(), 1);
    }

    #[test]
    fn service_list_and_documents() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{port: 80}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: db}
    spec:
      clusterIP: fd00::1
      ports: [{name: pg, port: 5432, protocol: TCP}]
"#;
        let links = parse_services(text, "f", "team").expect("valid");
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].namespace, "shop");
        assert_eq!(links[1].namespace, "team");
        assert_eq!(links[1].ports[0].name, "pg");
        assert_eq!(links[0].ports[0].protocol, "");
    }

    #[test]
    fn errors_say_where() {
        let err = parse_services("kind: Deployment\n", "f.yaml", "d")
            .expect_err("kind")
            .to_string();
        assert!(
            err.contains("f.yaml") && err.contains("document 1") && err.contains("Deployment"),
            "{err}"
        );
        let err = parse_services(
            "kind: Service\nmetadata: {name: x}\nspec: {ports: [{port: eighty}]}\n",
            "f.yaml",
            "d",
        )
        .expect_err("type")
        .to_string();
        assert!(err.contains("spec.ports[0].port"), "{err}");
        let err = parse_services("kind: Service\nspec: {}\n", "f", "d")
            .expect_err("name")
            .to_string();
        assert!(err.contains("metadata.name"), "{err}");
    }

    #[test]
    fn embedded_catalog_is_valid() {
        let links = parse_services(EMBEDDED_CATALOG, "embedded", "default").expect("embedded");
        assert!(
            links
                .iter()
                .any(|l| l.namespace == "default" && l.name == "kubernetes")
        );
        assert!(links.len() >= 5);
    }
}
