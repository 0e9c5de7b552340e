//! The static catalog: Services from a manifest file (for `--services-file`, `--dev`,
//! `envlink mutate --services` and users without a cluster).

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::service_fields::ServiceFields;
use super::{Catalog, IngestError, ListScope, Listing};
use crate::manifest::{self, ManifestError};
use crate::servicelinks::{ServiceLink, is_dns_label};

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

/// Reads Services from text: YAML (one or many documents) or JSON, each document a Service,
/// a `List` or a `ServiceList`. Services without a namespace go to `default_namespace`.
///
/// JSON (the format of `kubectl get services -A -o json`, and of large generated catalogs) is
/// read without building a tree: the list's items stay slices of `text` until each is
/// decoded into the few fields the kubelet reads, so the peak is the text plus the result.
pub fn parse_services(
    text: &str,
    origin: &str,
    default_namespace: &str,
) -> Result<Vec<ServiceLink>, CatalogFileError> {
    let mut links = Vec::new();
    each_service(text, origin, default_namespace, &mut |link| {
        links.push(link)
    })?;
    Ok(links)
}

/// Reads Services from text (see [`parse_services`]) into `catalog`, each ingested as it
/// is decoded (no list of decoded Services is held: with 100,000 Services that list was
/// the largest part of the start-up peak), and marks the catalog ready. Returns the
/// Services the catalog refused.
pub fn load_into(
    catalog: &Catalog,
    text: &str,
    origin: &str,
    default_namespace: &str,
) -> Result<Vec<IngestError>, CatalogFileError> {
    let (mut listing, mut refused) = (Listing::new(ListScope::All), Vec::new());
    each_service(
        text,
        origin,
        default_namespace,
        &mut |link| match catalog.ingest(&link) {
            Ok(service) => listing.add(service),
            Err(e) => refused.push(e),
        },
    )?;
    catalog.install(listing);
    catalog.mark_ready();
    Ok(refused)
}

/// Calls `each` with every Service of the text, in order.
fn each_service(
    text: &str,
    origin: &str,
    default_namespace: &str,
    each: &mut dyn FnMut(ServiceLink),
) -> Result<(), CatalogFileError> {
    let mut loader = Loader {
        origin,
        default_namespace,
        each,
    };
    match manifest::json_text(text) {
        // A JSON array is not a manifest: the tree path below reports it as the wrong kind.
        Some(json) if json.starts_with('{') => loader.json_document(json)?,
        _ => {
            for (i, doc) in manifest::parse_documents(text, origin)?
                .into_iter()
                .enumerate()
            {
                loader.value_document(doc, i + 1)?;
            }
        }
    }
    Ok(())
}

/// The top of a JSON manifest: its kind, and a list's items as unparsed slices.
#[derive(Deserialize)]
struct JsonDocument<'a> {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// Collects the Services of one file.
struct Loader<'a> {
    origin: &'a str,
    default_namespace: &'a str,
    each: &'a mut dyn FnMut(ServiceLink),
}

impl Loader<'_> {
    fn json_document(&mut self, json: &str) -> Result<(), CatalogFileError> {
        let invalid = |error| {
            CatalogFileError::Manifest(ManifestError::Json {
                origin: self.origin.to_string(),
                error,
            })
        };
        let mut top = serde_json::Deserializer::from_str(json);
        let document: JsonDocument = serde_path_to_error::deserialize(&mut top).map_err(|e| {
            if e.inner().is_data() {
                self.bad(1, None, format!("at `{}`: {}", e.path(), e.inner()))
            } else {
                invalid(e.into_inner())
            }
        })?;
        top.end().map_err(invalid)?;
        match document.kind.as_deref().unwrap_or("") {
            "Service" => self.service(&mut serde_json::Deserializer::from_str(json), 1, None),
            "List" | "ServiceList" => {
                let items = document.items.unwrap_or_default();
                for (j, item) in items.into_iter().enumerate() {
                    self.service(item, 1, Some(j + 1))?;
                }
                Ok(())
            }
            kind => Err(self.wrong_kind(1, kind.to_string())),
        }
    }

    fn value_document(&mut self, mut doc: Value, document: usize) -> Result<(), CatalogFileError> {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "Service" => self.service(doc, document, None),
            "List" | "ServiceList" => {
                // Taken, not cloned: a list of 100,000 Services is large.
                let items = match doc.get_mut("items").map(Value::take) {
                    Some(Value::Array(items)) => items,
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(self.bad(document, None, "`items` is not a list".into()));
                    }
                };
                for (j, item) in items.into_iter().enumerate() {
                    self.service(item, document, Some(j + 1))?;
                }
                Ok(())
            }
            _ => Err(self.wrong_kind(document, kind)),
        }
    }

    /// Decodes one Service (a whole document, or item `item` of a list) and keeps it.
    fn service<'de, D: Deserializer<'de>>(
        &mut self,
        source: D,
        document: usize,
        item: Option<usize>,
    ) -> Result<(), CatalogFileError> {
        let fields = ServiceFields::decode(source)
            .map_err(|e| self.bad(document, item, format!("at `{}`: {}", e.path(), e.inner())))?;
        match (item, fields.kind.as_deref()) {
            (Some(j), Some(kind)) if kind != "Service" => {
                return Err(self.wrong_kind(document, format!("{kind} (item {j})")));
            }
            _ => {}
        }
        if fields.name().is_empty() {
            return Err(self.bad(document, item, "metadata.name is missing".into()));
        }
        let link = fields.into_link(self.default_namespace);
        // What the API server enforces: a name envlink could not record in envlink.io/injected
        // (and would refuse there on a reinvocation) never gets into a static catalog either.
        for (key, value) in [
            ("metadata.name", &link.name),
            ("metadata.namespace", &link.namespace),
        ] {
            if !is_dns_label(value) {
                return Err(self.bad(
                    document,
                    item,
                    format!(
                        "{key} {value:?} is not a DNS label (lower-case letters, digits and \
                         '-', at most 63 characters)"
                    ),
                ));
            }
        }
        (self.each)(link);
        Ok(())
    }

    fn bad(&self, document: usize, item: Option<usize>, message: String) -> CatalogFileError {
        CatalogFileError::BadService {
            origin: self.origin.into(),
            document,
            item: item.map(|i| format!(" item {i}")).unwrap_or_default(),
            message,
        }
    }

    fn wrong_kind(&self, document: usize, kind: String) -> CatalogFileError {
        CatalogFileError::WrongKind {
            origin: self.origin.into(),
            document,
            kind,
        }
    }
}

/// Reads a Service file (`-` for standard input) into `catalog` (see [`load_into`]); returns
/// the Services the catalog refused.
pub fn load_file_into(
    catalog: &Catalog,
    path: &str,
    default_namespace: &str,
) -> Result<Vec<IngestError>, CatalogFileError> {
    let (text, origin) = manifest::read_input(path)?;
    load_into(catalog, &text, &origin, default_namespace)
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
    fn json_lists_are_read_item_by_item() {
        let text = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"kind":"Service","metadata":{"name":"web","namespace":"shop","labels":{"a":"b"}},
             "spec":{"clusterIP":"10.96.0.20","ports":[{"name":"http","port":80,"targetPort":8080}]},
             "status":{"loadBalancer":{}}},
            {"metadata":{"name":"db"},"spec":{"clusterIP":"None"}}
        ]}"#;
        let links = parse_services(text, "f.json", "team").expect("valid");
        assert_eq!(links.len(), 2);
        assert_eq!(
            (links[0].namespace.as_str(), links[0].ports[0].port),
            ("shop", 80)
        );
        assert_eq!(
            (links[1].namespace.as_str(), links[1].cluster_ip.as_str()),
            ("team", "None")
        );
        let single = r#" {"kind":"Service","metadata":{"name":"one"}}"#;
        assert_eq!(
            parse_services(single, "f", "d").expect("one")[0].name,
            "one"
        );
        let empty = r#"{"kind":"ServiceList","items":null}"#;
        assert!(parse_services(empty, "f", "d").expect("empty").is_empty());
    }

    #[test]
    fn json_errors_say_where() {
        let cases = [
            // (text, what the message must contain)
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},"#,
                "not valid JSON",
            ),
            (r#"{"kind":"List","items":[]} trailing"#, "not valid JSON"),
            (r#"{"kind":"List","items":{}}"#, "at `items`"),
            (r#"{"kind":7}"#, "at `kind`"),
            (r#"{"kind":"ConfigMap"}"#, "kind \"ConfigMap\""),
            (r#"[{"kind":"Service"}]"#, "kind \"\""),
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"kind":"Pod"}]}"#,
                "Pod (item 2)",
            ),
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"},"spec":{"ports":[{"port":"80"}]}}]}"#,
                "document 1 item 1: not a valid Service: at `spec.ports[0].port`",
            ),
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"spec":{}}]}"#,
                "item 2: not a valid Service: metadata.name is missing",
            ),
            (
                r#"{"kind":"List","items":[["Service"]]}"#,
                "expected an object",
            ),
        ];
        for (text, want) in cases {
            let err = parse_services(text, "f.json", "d")
                .expect_err(text)
                .to_string();
            assert!(
                err.starts_with("f.json") && err.contains(want),
                "{text}: {err}"
            );
        }
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
