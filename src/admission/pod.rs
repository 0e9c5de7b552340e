//! A borrowed, read-only view of the Pod fields envlink reads.
//!
//! Decoding only these fields (borrowing the strings from the review's JSON) keeps a review
//! cheap; everything envlink writes is taken from the raw JSON, so fields this view does not
//! know survive untouched.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::reserved::{ContainerEnv, ContainerKind, EnvFromSource};

/// `metadata` and `spec` of a Pod or a Pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView<'a> {
    /// `metadata`.
    #[serde(borrow, default)]
    pub metadata: Option<MetaView<'a>>,
    /// `spec`.
    #[serde(borrow, default)]
    pub spec: Option<SpecView<'a>>,
}

/// The metadata fields envlink reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView<'a> {
    /// `metadata.name`.
    #[serde(borrow, default)]
    pub name: Option<&'a str>,
    /// `metadata.generateName`.
    #[serde(borrow, default)]
    pub generate_name: Option<&'a str>,
    /// `metadata.namespace`.
    #[serde(borrow, default)]
    pub namespace: Option<&'a str>,
    /// `metadata.annotations`.
    #[serde(borrow, default)]
    pub annotations: Option<BTreeMap<&'a str, &'a str>>,
}

/// The spec fields envlink reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecView<'a> {
    /// `spec.containers`.
    #[serde(borrow, default)]
    pub containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.initContainers`.
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.ephemeralContainers`.
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
    /// `spec.enableServiceLinks` (the API server defaults it to true).
    #[serde(default)]
    pub enable_service_links: Option<bool>,
}

/// One container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: &'a str,
    /// `env` (only the names matter to envlink).
    #[serde(borrow, default)]
    pub env: Option<Vec<EnvVarView<'a>>>,
    /// `envFrom`.
    #[serde(borrow, default)]
    pub env_from: Option<Vec<EnvFromView<'a>>>,
    /// `resources`.
    #[serde(borrow, default)]
    pub resources: Option<ResourcesView<'a>>,
}

/// One `env` entry: its name (the value source does not matter for shadowing).
#[derive(Debug, Default, Deserialize)]
pub struct EnvVarView<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: &'a str,
}

/// One `envFrom` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromView<'a> {
    /// `prefix`.
    #[serde(borrow, default)]
    pub prefix: Option<&'a str>,
    /// `configMapRef`.
    #[serde(borrow, default)]
    pub config_map_ref: Option<NameRef<'a>>,
}

/// A reference by name.
#[derive(Debug, Default, Deserialize)]
pub struct NameRef<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Option<&'a str>,
}

/// `resources`: only the resource names matter.
#[derive(Debug, Default, Deserialize)]
pub struct ResourcesView<'a> {
    /// `requests`.
    #[serde(borrow, default)]
    pub requests: Option<BTreeMap<&'a str, IgnoredAny>>,
    /// `limits`.
    #[serde(borrow, default)]
    pub limits: Option<BTreeMap<&'a str, IgnoredAny>>,
}

/// Why an object could not be read as a Pod.
#[derive(Debug, thiserror::Error)]
#[error("not a valid Pod: at `{path}`: {message}")]
pub struct PodViewError {
    /// Where in the object.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl<'a> PodView<'a> {
    /// Reads the view from a Pod (or Pod template) object.
    pub fn from_value(value: &'a Value) -> Result<Self, PodViewError> {
        if !value.is_object() {
            return Err(PodViewError {
                path: ".".into(),
                message: "expected an object".into(),
            });
        }
        // The path-tracking decoder costs a few µs per review; it only runs to explain a
        // failure.
        if let Ok(view) = PodView::deserialize(value) {
            return Ok(view);
        }
        serde_path_to_error::deserialize(value).map_err(|e| PodViewError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key).copied())
    }

    /// Whether `metadata.annotations` exists (decides between adding the map and a key).
    pub fn has_annotations(&self) -> bool {
        self.metadata
            .as_ref()
            .is_some_and(|m| m.annotations.is_some())
    }

    /// `spec.enableServiceLinks`.
    pub fn enable_service_links(&self) -> Option<bool> {
        self.spec.as_ref().and_then(|s| s.enable_service_links)
    }

    /// The containers of one kind.
    pub fn containers(&self, kind: ContainerKind) -> &[ContainerView<'a>] {
        let Some(spec) = &self.spec else {
            return &[];
        };
        let list = match kind {
            ContainerKind::Init => &spec.init_containers,
            ContainerKind::Regular => &spec.containers,
            ContainerKind::Ephemeral => &spec.ephemeral_containers,
        };
        list.as_deref().unwrap_or(&[])
    }

    /// What the reserved rules need, for the given kinds of containers.
    pub fn container_envs(&self, kinds: &[ContainerKind]) -> Vec<ContainerEnv<'a>> {
        let mut out = Vec::new();
        for &kind in kinds {
            for (index, c) in self.containers(kind).iter().enumerate() {
                out.push(c.env_for_rules(kind, index));
            }
        }
        out
    }

    /// `name` or `generateName` for messages and logs.
    pub fn display_name(&self) -> &'a str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.or(m.generate_name))
            .unwrap_or("")
    }
}

impl<'a> ContainerView<'a> {
    /// Resource names in requests and limits, deduplicated.
    pub fn resource_names(&self) -> Vec<&'a str> {
        let mut names: Vec<&'a str> = Vec::new();
        if let Some(r) = &self.resources {
            for map in [&r.requests, &r.limits].into_iter().flatten() {
                for name in map.keys() {
                    if !names.contains(name) {
                        names.push(name);
                    }
                }
            }
        }
        names
    }

    /// The names in `env`, in order.
    pub fn env_names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.env.iter().flatten().map(|e| e.name)
    }

    fn env_for_rules(&self, kind: ContainerKind, index: usize) -> ContainerEnv<'a> {
        ContainerEnv {
            kind,
            index,
            name: self.name,
            resources: self.resource_names(),
            env: self.env_names().collect(),
            env_from: self
                .env_from
                .iter()
                .flatten()
                .map(|f| EnvFromSource {
                    config_map: f.config_map_ref.as_ref().and_then(|r| r.name),
                    prefix: f.prefix.unwrap_or(""),
                })
                .collect(),
        }
    }
}
