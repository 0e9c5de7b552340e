//! The static catalog: Services from a manifest file (for `--services-file`, `--dev`,
//! `envlink mutate --services` and users without a cluster).

use std::io::{BufRead, BufReader, Read};

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::service_fields::{MaybeObject, ServiceFields};
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
/// is decoded (no list of decoded Services is held), and marks the catalog ready. Returns the
/// Services the catalog refused.
pub fn load_into(
    catalog: &Catalog,
    text: &str,
    origin: &str,
    default_namespace: &str,
) -> Result<Vec<IngestError>, CatalogFileError> {
    ingest_into(catalog, |each| {
        each_service(text, origin, default_namespace, each)
    })
}

/// Fills `catalog` with the Services `read` hands to its callback, then marks it ready.
fn ingest_into(
    catalog: &Catalog,
    read: impl FnOnce(&mut dyn FnMut(ServiceLink)) -> Result<(), CatalogFileError>,
) -> Result<Vec<IngestError>, CatalogFileError> {
    let (mut listing, mut refused) = (Listing::new(ListScope::All), Vec::new());
    read(&mut |link| match catalog.ingest(&link) {
        Ok(service) => listing.add(service),
        Err(e) => refused.push(e),
    })?;
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
        Some(json) if json.starts_with('{') => {
            loader.json_document(serde_json::Deserializer::from_str(json))?;
        }
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

/// The top of a JSON document as it streams: a Service's own fields (when it is one) and
/// whether it had `items`, which were handed to the loader as they were read.
struct Document {
    fields: ServiceFields,
    had_items: bool,
}

/// Reads the top object of a JSON document: `kind`, `metadata` and `spec` kept (small),
/// `items` streamed into the loader unless `kind`, read first, says it is not a list.
struct DocumentSeed<'l, 'a> {
    loader: &'l mut Loader<'a>,
    /// The loader's own error, when it is what stopped the stream (serde's error can only
    /// carry a message).
    stop: &'l mut Option<CatalogFileError>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_, '_> {
    type Value = Document;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_, '_> {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Service, List or ServiceList object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut fields = ServiceFields::default();
        let mut had_items = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => fields.kind = map.next_value()?,
                "metadata" => fields.metadata = map.next_value::<MaybeObject<_>>()?.0,
                "spec" => fields.spec = map.next_value::<MaybeObject<_>>()?.0,
                "items" => {
                    had_items = true;
                    let is_list = fields
                        .kind
                        .as_deref()
                        .is_none_or(|k| k == "List" || k == "ServiceList");
                    if is_list {
                        map.next_value_seed(ItemsSeed {
                            loader: &mut *self.loader,
                            stop: &mut *self.stop,
                        })?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Document { fields, had_items })
    }
}

/// A list's `items` (or `null`), each decoded and handed to the loader as it is read.
struct ItemsSeed<'l, 'a> {
    loader: &'l mut Loader<'a>,
    stop: &'l mut Option<CatalogFileError>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of Services")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut item = 0;
        loop {
            item += 1;
            let seed = ItemSeed {
                loader: &mut *self.loader,
                stop: &mut *self.stop,
                item,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
        }
    }
}

/// One item of a list: decoded into the fields the kubelet reads, checked, handed on.
struct ItemSeed<'l, 'a> {
    loader: &'l mut Loader<'a>,
    stop: &'l mut Option<CatalogFileError>,
    item: usize,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let outcome = match ServiceFields::decode(deserializer) {
            Ok(fields) => self.loader.take(fields, 1, Some(self.item)),
            Err(e) => {
                let message = format!("at `{}`: {}", e.path(), e.inner());
                *self.stop = Some(self.loader.bad(1, Some(self.item), message));
                return Err(e.into_inner());
            }
        };
        outcome.map_err(|error| {
            let message = error.to_string();
            *self.stop = Some(error);
            D::Error::custom(message)
        })
    }
}

/// Collects the Services of one file.
struct Loader<'a> {
    origin: &'a str,
    default_namespace: &'a str,
    each: &'a mut dyn FnMut(ServiceLink),
}

impl Loader<'_> {
    /// A JSON document, read as it streams: a list's items are decoded and handed on one by
    /// one, so neither a tree of the document nor a list of its items is ever held (and,
    /// from a reader, nor is its text).
    fn json_document<'de, R: serde_json::de::Read<'de>>(
        &mut self,
        mut json: serde_json::Deserializer<R>,
    ) -> Result<(), CatalogFileError> {
        let mut stop = None;
        let mut track = serde_path_to_error::Track::new();
        let top = DocumentSeed {
            loader: self,
            stop: &mut stop,
        }
        .deserialize(serde_path_to_error::Deserializer::new(
            &mut json, &mut track,
        ))
        .and_then(|top| json.end().map(|()| top));
        let top = match top {
            Ok(top) => top,
            Err(error) if !error.is_data() => {
                return Err(CatalogFileError::Manifest(if error.is_io() {
                    ManifestError::Read {
                        origin: self.origin.to_string(),
                        error: std::io::Error::other(error),
                    }
                } else {
                    ManifestError::Json {
                        origin: self.origin.to_string(),
                        error,
                    }
                }));
            }
            Err(error) => {
                return Err(stop.unwrap_or_else(|| {
                    self.bad(1, None, format!("at `{}`: {error}", track.path()))
                }));
            }
        };
        match top.fields.kind.as_deref().unwrap_or("") {
            "List" | "ServiceList" => Ok(()),
            "Service" if top.had_items => Err(self.bad(
                1,
                None,
                "a Service document with `items` (a list's kind is List or ServiceList)".into(),
            )),
            "Service" => self.take(top.fields, 1, None),
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
        self.take(fields, document, item)
    }

    /// Checks a decoded Service (a whole document, or item `item` of a list) and keeps it.
    fn take(
        &mut self,
        fields: ServiceFields,
        document: usize,
        item: Option<usize>,
    ) -> Result<(), CatalogFileError> {
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
///
/// A JSON object (a `List` as `kubectl get services -A -o json` writes it, the format of
/// large catalogs) is decoded as it is read: neither the file's text nor a list of its items
/// is held, so loading 100,000 Services needs little more than the catalog they become.
/// YAML is read whole and parsed into a tree first.
pub fn load_file_into(
    catalog: &Catalog,
    path: &str,
    default_namespace: &str,
) -> Result<Vec<IngestError>, CatalogFileError> {
    let origin = if path == "-" { "standard input" } else { path };
    let read_error = |error| {
        CatalogFileError::Manifest(ManifestError::Read {
            origin: origin.to_string(),
            error,
        })
    };
    let source: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(read_error)?)
    };
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    if !skip_to_json_object(&mut reader).map_err(read_error)? {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(read_error)?;
        return load_into(catalog, &text, origin, default_namespace);
    }
    ingest_into(catalog, |each| {
        Loader {
            origin,
            default_namespace,
            each,
        }
        .json_document(serde_json::Deserializer::from_reader(reader))
    })
}

/// Whether the input is a JSON object, judged by its first byte after any byte-order mark
/// and white space in the first buffer; if so those are consumed. Nothing is consumed
/// otherwise (YAML's leading spaces are indentation).
fn skip_to_json_object(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let buffer = reader.fill_buf()?;
    let body = buffer
        .strip_prefix(b"\xef\xbb\xbf".as_slice())
        .unwrap_or(buffer);
    let leading = body.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let is_object = body.get(leading) == Some(&b'{');
    if is_object {
        let skip = buffer.len() - body.len() + leading;
        reader.consume(skip);
    }
    Ok(is_object)
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

    /// A file read through [`load_file_into`] gives the catalog the text path gives, for JSON
    /// (streamed, with a byte-order mark and white space before it) and YAML (read whole,
    /// its first line indented).
    #[test]
    fn files_stream_into_the_catalog_like_text() {
        let json = "\u{feff} \n {\"items\":[{\"metadata\":{\"name\":\"web\",\"namespace\":\"shop\"},\
                    \"spec\":{\"clusterIP\":\"10.96.0.20\",\"ports\":[{\"port\":80}]}},\
                    {\"metadata\":{\"name\":\"db\"},\"spec\":{\"clusterIP\":\"fd00::3\",\
                    \"ports\":[{\"name\":\"pg\",\"port\":5432,\"protocol\":\"TCP\"}]}}],\
                    \"kind\":\"List\",\"apiVersion\":\"v1\"}";
        let yaml = "  kind: Service\n  metadata: {name: one}\n  spec: {clusterIP: 10.0.0.1, ports: [{port: 1}]}\n";
        for (text, services) in [(json, 2), (yaml, 1)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("services");
            std::fs::write(&path, text).expect("write");
            let from_file = Catalog::new();
            let refused = load_file_into(&from_file, &path.to_string_lossy(), "team").expect(text);
            assert!(refused.is_empty());
            assert!(from_file.is_ready());
            let from_text = Catalog::new();
            load_into(&from_text, text, "t", "team").expect(text);
            assert_eq!(from_file.stats().services, services, "{text}");
            assert_eq!(from_file.stats(), from_text.stats());
            for (ns, name) in [
                ("shop", "web"),
                ("team", "db"),
                ("default", "one"),
                ("team", "one"),
            ] {
                assert_eq!(
                    from_file.service(ns, name).map(|s| s
                        .variables()
                        .iter()
                        .map(|(n, v)| format!("{n}={v}"))
                        .collect::<Vec<_>>()),
                    from_text.service(ns, name).map(|s| s
                        .variables()
                        .iter()
                        .map(|(n, v)| format!("{n}={v}"))
                        .collect::<Vec<_>>()),
                );
            }
        }
    }

    /// Errors from a streamed file name the file and the item, as from text; a file that
    /// cannot be opened says so.
    #[test]
    fn streamed_files_report_errors_like_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        for (text, want) in [
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"spec":{}}]}"#,
                "document 1 item 2: not a valid Service: metadata.name is missing",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a"}}],"kind":"Secret"}"#,
                "kind \"Secret\"",
            ),
            (
                r#"{"kind":"List","items":[{"metadata":{"name":"a"}},"#,
                "is not valid JSON",
            ),
            (
                r#"{"items":[],"kind":"Service"}"#,
                "a Service document with `items`",
            ),
        ] {
            std::fs::write(&path, text).expect("write");
            let origin = path.to_string_lossy();
            let err = load_file_into(&Catalog::new(), &origin, "d")
                .expect_err(text)
                .to_string();
            assert!(
                err.starts_with(origin.as_ref()) && err.contains(want),
                "{text}: {err}"
            );
        }
        let missing = dir.path().join("missing.json");
        let err = load_file_into(&Catalog::new(), &missing.to_string_lossy(), "d")
            .expect_err("missing")
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }
}
