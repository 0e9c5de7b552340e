//! The fields of a Service that the kubelet reads, deserialized into small types instead of a
//! full `k8s_openapi` `Service`: every other field is skipped while decoding.
//!
//! How many passes that is depends on the source:
//! - **Static JSON files** decode straight from the text, a list item by item: a file of
//!   100,000 Services never exists as 100,000 object trees. (YAML documents are parsed into
//!   a tree first, then decoded from it.)
//! - **Watch events** arrive as kube-runtime's `DynamicObject`, already decoded whole: typed
//!   metadata and the rest (`spec`, `status`) as a `serde_json::Value` tree (a list page is
//!   even buffered once more by kube-core's `ObjectList`, whose type fields are flattened).
//!   These types then read `spec`'s cluster IP and ports from that tree, skipping the rest
//!   without copying it, so a watch event costs kube's decode plus a walk of its `spec`.
//!   Watching a partial typed object instead would not remove the list's buffering, and would
//!   turn one malformed Service into a failed list or watch (a decode error fails the whole
//!   response, the watcher restarts and re-lists into the same error), where today that
//!   Service alone is skipped and counted.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::servicelinks::{LinkPort, ServiceLink};

/// A Service as the kubelet sees it, plus `kind` (which the caller checks). Decode it with
/// [`ServiceFields::decode`]: derived `Deserialize` alone would also take a JSON array.
#[derive(Debug, Default, Deserialize)]
pub struct ServiceFields {
    /// `kind`, when present.
    #[serde(default)]
    pub kind: Option<String>,
    /// `metadata`.
    #[serde(default, deserialize_with = "optional_object")]
    pub metadata: Option<MetadataFields>,
    /// `spec`.
    #[serde(default, deserialize_with = "optional_object")]
    pub spec: Option<SpecFields>,
}

/// `metadata.name` and `metadata.namespace`.
#[derive(Debug, Default, Deserialize)]
pub struct MetadataFields {
    /// `metadata.name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `metadata.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `spec.clusterIP` and `spec.ports`.
#[derive(Debug, Default, Deserialize)]
pub struct SpecFields {
    /// `spec.clusterIP`.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// `spec.ports`.
    #[serde(default, deserialize_with = "optional_objects")]
    pub ports: Option<Vec<PortFields>>,
}

/// One entry of `spec.ports`; `port` is required, as in the API.
#[derive(Debug, Deserialize)]
pub struct PortFields {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `port`.
    pub port: i32,
    /// `protocol`.
    #[serde(default)]
    pub protocol: Option<String>,
}

impl SpecFields {
    /// The link of Service `namespace`/`name` with this spec.
    pub fn into_link(self, namespace: String, name: String) -> ServiceLink {
        ServiceLink {
            namespace,
            name,
            cluster_ip: self.cluster_ip.unwrap_or_default(),
            ports: self
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| LinkPort {
                    name: p.name.unwrap_or_default(),
                    port: p.port,
                    protocol: p.protocol.unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Derived `Deserialize` for a struct also accepts a sequence of its fields in order (serde's
/// compact form), so `["Service", {"name": "x"}]` would pass for a Service. Kubernetes
/// objects are JSON objects only: this wrapper asks the format for a map, nothing else.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// An object or `null`, decoded as [`ServiceFields`] decodes `metadata` and `spec` (for
/// readers that visit a Service's fields themselves, as the streaming file loader does).
#[derive(Debug, Default)]
pub struct MaybeObject<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MaybeObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        optional_object(deserializer).map(MaybeObject)
    }
}

fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|Object(t)| t))
}

fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Ok(Option::<Vec<Object<T>>>::deserialize(deserializer)?
        .map(|items| items.into_iter().map(|Object(t)| t).collect()))
}

impl ServiceFields {
    /// Decodes a Service (an object; anything else is an error), recording where a field
    /// failed to decode in the error's path.
    pub fn decode<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, serde_path_to_error::Error<D::Error>> {
        serde_path_to_error::deserialize(deserializer).map(|Object(fields)| fields)
    }

    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or("")
    }

    /// The link; a missing or empty namespace becomes `default_namespace`.
    pub fn into_link(self, default_namespace: &str) -> ServiceLink {
        let metadata = self.metadata.unwrap_or_default();
        let namespace = metadata
            .namespace
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| default_namespace.to_string());
        self.spec
            .unwrap_or_default()
            .into_link(namespace, metadata.name.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubelet_fields_and_skips_the_rest() {
        let fields = ServiceFields::decode(&mut serde_json::Deserializer::from_str(
            r#"{"kind":"Service","metadata":{"name":"db","labels":{"a":"b"},"uid":"x"},
                "spec":{"clusterIP":"fd00::1","type":"ClusterIP","selector":{"app":"db"},
                        "ports":[{"name":"pg","port":5432,"targetPort":"pg"},{"port":53,"protocol":"UDP"}]},
                "status":{"loadBalancer":{}}}"#,
        ))
        .expect("decodes");
        assert_eq!(fields.name(), "db");
        let link = fields.into_link("team");
        assert_eq!(link.namespace, "team");
        assert_eq!(link.cluster_ip, "fd00::1");
        assert_eq!(
            link.ports,
            vec![
                LinkPort {
                    name: "pg".into(),
                    port: 5432,
                    protocol: String::new()
                },
                LinkPort {
                    name: String::new(),
                    port: 53,
                    protocol: "UDP".into()
                },
            ]
        );
    }

    #[test]
    fn nulls_are_absent_and_a_port_needs_its_number() {
        let fields =
            decode(r#"{"metadata":null,"spec":{"clusterIP":null,"ports":null}}"#).expect("nulls");
        let link = fields.into_link("d");
        assert_eq!((link.name.as_str(), link.cluster_ip.as_str()), ("", ""));
        assert!(link.ports.is_empty());
        let err = decode(r#"{"spec":{"ports":[{"name":"x"}]}}"#).expect_err("port is required");
        assert!(err.contains("missing field `port`"), "{err}");
    }

    fn decode(json: &str) -> Result<ServiceFields, String> {
        ServiceFields::decode(&mut serde_json::Deserializer::from_str(json))
            .map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))
    }

    /// serde's derived structs also read `[field, field, ...]`; a Kubernetes object never is.
    #[test]
    fn arrays_are_not_objects() {
        for (json, path) in [
            (r#"["Service", {"name": "x"}, null]"#, "."),
            (r#"{"metadata": ["x", "ns"]}"#, "metadata"),
            (r#"{"spec": ["10.0.0.1", []]}"#, "spec"),
            (
                r#"{"spec": {"ports": [["http", 80, "TCP"]]}}"#,
                "spec.ports[0]",
            ),
        ] {
            let err = decode(json).expect_err(json);
            assert!(
                err.starts_with(&format!("at `{path}`")) && err.contains("expected an object"),
                "{json}: {err}"
            );
        }
    }
}
