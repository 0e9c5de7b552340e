//! The fields of Pods and workloads the audit reads, decoded straight from a list page.
//!
//! Everything else (status, managedFields, other annotations, volumes, ...) is skipped while
//! parsing, so a page of 500 Pods costs its text plus these small records, and nothing of a
//! Pod outlives its page.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::podshape::ContainerKind;
use crate::reserved::{ContainerEnv, EnvFromSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `metadata` of an audited object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaRecord {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `namespace`.
    #[serde(default)]
    pub namespace: String,
    /// `uid`.
    #[serde(default)]
    pub uid: String,
    /// `creationTimestamp`.
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
    /// The `envlink.io/` annotations (others are dropped while parsing).
    #[serde(default, deserialize_with = "envlink_annotations")]
    pub annotations: BTreeMap<String, String>,
    /// `ownerReferences`.
    #[serde(default)]
    pub owner_references: Vec<OwnerRecord>,
}

impl MetaRecord {
    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The kind of the controller that owns the object, if any.
    pub fn controller_kind(&self) -> Option<&str> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.as_str())
    }
}

/// One owner reference.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OwnerRecord {
    /// The owner's kind.
    #[serde(default)]
    pub kind: String,
    /// Whether it is the managing controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A Pod.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodRecord {
    /// `metadata`.
    #[serde(default)]
    pub metadata: MetaRecord,
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpecRecord,
    /// `status` (the phase only).
    #[serde(default)]
    pub status: Option<PodStatusRecord>,
}

impl PodRecord {
    /// Whether every container has ended for good (`Succeeded` or `Failed`): its environment
    /// no longer matters.
    pub fn is_terminated(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }
}

/// `status.phase`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodStatusRecord {
    /// `phase`.
    #[serde(default)]
    pub phase: Option<String>,
}

/// A Pod's (or a Pod template's) `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecRecord {
    /// `containers`.
    #[serde(default)]
    pub containers: Vec<ContainerRecord>,
    /// `initContainers`.
    #[serde(default)]
    pub init_containers: Vec<ContainerRecord>,
    /// `ephemeralContainers`.
    #[serde(default)]
    pub ephemeral_containers: Vec<ContainerRecord>,
    /// `enableServiceLinks` (the API server stores `true` when it was not given).
    #[serde(default)]
    pub enable_service_links: Option<bool>,
}

impl PodSpecRecord {
    /// The containers of one kind.
    pub fn containers(&self, kind: ContainerKind) -> &[ContainerRecord] {
        match kind {
            ContainerKind::Init => &self.init_containers,
            ContainerKind::Regular => &self.containers,
            ContainerKind::Ephemeral => &self.ephemeral_containers,
        }
    }

    /// What the reserved rules read, for the given kinds of containers.
    pub fn container_envs(&self, kinds: &[ContainerKind]) -> Vec<ContainerEnv<'_>> {
        let mut out = Vec::new();
        for &kind in kinds {
            for (index, c) in self.containers(kind).iter().enumerate() {
                out.push(ContainerEnv {
                    kind,
                    index,
                    name: &c.name,
                    resources: c.resource_names(),
                    env: c.env.iter().map(|e| e.name.as_str()).collect(),
                    env_from: c
                        .env_from
                        .iter()
                        .map(|f| EnvFromSource {
                            config_map: f.config_map_ref.as_ref().map(|r| r.name.as_str()),
                            prefix: f.prefix.as_deref().unwrap_or(""),
                            secret: f.secret_ref.as_ref().map(|r| r.name.as_str()),
                        })
                        .collect(),
                    // The audit does not list ResourceClaims: DRA-scoped rules are judged at
                    // admission only.
                    claims: Vec::new(),
                });
            }
        }
        out
    }
}

/// One container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `env`.
    #[serde(default)]
    pub env: Vec<EnvRecord>,
    /// `envFrom`.
    #[serde(default)]
    pub env_from: Vec<EnvFromRecord>,
    /// `resources` (names only).
    #[serde(default)]
    pub resources: ResourcesRecord,
}

impl ContainerRecord {
    /// Resource names in requests and limits, sorted and deduplicated.
    pub fn resource_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .resources
            .requests
            .keys()
            .chain(self.resources.limits.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The literal value of an `env` entry (the last one with that name wins, as in the
    /// runtime); `None` when the name is absent or set from a reference (`valueFrom`).
    pub fn literal(&self, name: &str) -> Option<&str> {
        let entry = self.env.iter().rev().find(|e| e.name == name)?;
        if entry.value_from {
            return None;
        }
        Some(entry.value.as_deref().unwrap_or(""))
    }

    /// Whether the container defines the name itself.
    pub fn defines(&self, name: &str) -> bool {
        self.env.iter().any(|e| e.name == name)
    }
}

/// One `env` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvRecord {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `value`.
    #[serde(default)]
    pub value: Option<String>,
    /// Whether `valueFrom` is set (its content is not read).
    #[serde(default, deserialize_with = "present")]
    pub value_from: bool,
}

/// One `envFrom` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromRecord {
    /// `prefix`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `configMapRef`.
    #[serde(default)]
    pub config_map_ref: Option<NameRecord>,
    /// `secretRef` (its name only: envlink never reads Secrets).
    #[serde(default)]
    pub secret_ref: Option<NameRecord>,
}

/// A reference by name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NameRecord {
    /// `name`.
    #[serde(default)]
    pub name: String,
}

/// `resources`: the resource names; quantities are skipped unread.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResourcesRecord {
    /// `requests`.
    #[serde(default)]
    pub requests: BTreeMap<String, IgnoredAny>,
    /// `limits`.
    #[serde(default)]
    pub limits: BTreeMap<String, IgnoredAny>,
}

/// A workload with a Pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
/// CronJob).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkloadRecord {
    /// `metadata`.
    #[serde(default)]
    pub metadata: MetaRecord,
    /// `spec`.
    #[serde(default)]
    pub spec: WorkloadSpecRecord,
}

impl WorkloadRecord {
    /// The Pod template: `spec.template`, or a CronJob's `spec.jobTemplate.spec.template`.
    pub fn template(&self) -> Option<&TemplateRecord> {
        self.spec.template.as_ref().or_else(|| {
            self.spec
                .job_template
                .as_ref()
                .and_then(|j| j.spec.as_ref())
                .and_then(|s| s.template.as_ref())
        })
    }
}

/// A workload's `spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpecRecord {
    /// `template`.
    #[serde(default)]
    pub template: Option<TemplateRecord>,
    /// `jobTemplate` (CronJob).
    #[serde(default)]
    pub job_template: Option<JobTemplateRecord>,
}

/// A CronJob's `spec.jobTemplate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobTemplateRecord {
    /// `spec`.
    #[serde(default)]
    pub spec: Option<JobSpecRecord>,
}

/// `spec.jobTemplate.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobSpecRecord {
    /// `template`.
    #[serde(default)]
    pub template: Option<TemplateRecord>,
}

/// A Pod template.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateRecord {
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpecRecord,
}

/// `true` when the field is present (its value is skipped).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// The `envlink.io/` annotations; the others are skipped (a Pod may carry large ones, such
/// as `kubectl.kubernetes.io/last-applied-configuration`).
fn envlink_annotations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Annotations;
    impl<'de> Visitor<'de> for Annotations {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key.starts_with("envlink.io/") {
                    out.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(Annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_keeps_only_what_the_audit_reads() {
        let pod: PodRecord = serde_json::from_str(
            r#"{"metadata":{"name":"web","namespace":"shop","uid":"u","creationTimestamp":"2026-01-01T00:00:00Z",
                 "annotations":{"envlink.io/injected":"db,kubernetes","big":"xxxxxxxx"},
                 "ownerReferences":[{"kind":"ReplicaSet","name":"web-1","controller":true}],
                 "managedFields":[{"manager":"kubectl"}]},
               "spec":{"enableServiceLinks":false,
                 "containers":[{"name":"app","image":"x",
                   "env":[{"name":"A","value":"1"},{"name":"B","valueFrom":{"fieldRef":{"fieldPath":"x"}}},{"name":"C"}],
                   "envFrom":[{"prefix":"P_","configMapRef":{"name":"cm"}}],
                   "resources":{"limits":{"nvidia.com/gpu":"1"},"requests":{"cpu":"1","nvidia.com/gpu":"1"}}}]},
               "status":{"phase":"Running","conditions":[]}}"#,
        )
        .expect("decodes");
        assert_eq!(pod.metadata.name, "web");
        assert_eq!(pod.metadata.annotations.len(), 1);
        assert_eq!(pod.metadata.controller_kind(), Some("ReplicaSet"));
        assert_eq!(pod.spec.enable_service_links, Some(false));
        let c = &pod.spec.containers[0];
        assert_eq!(c.literal("A"), Some("1"));
        assert_eq!(c.literal("B"), None);
        assert_eq!(c.literal("C"), Some(""));
        assert_eq!(c.literal("D"), None);
        assert_eq!(c.resource_names(), vec!["cpu", "nvidia.com/gpu"]);
        assert!(!pod.is_terminated());
        let envs = pod.spec.container_envs(&[ContainerKind::Regular]);
        assert_eq!(envs[0].env, vec!["A", "B", "C"]);
        assert_eq!(envs[0].env_from[0].config_map, Some("cm"));
    }

    #[test]
    fn workload_templates() {
        let cron: WorkloadRecord = serde_json::from_str(
            r#"{"metadata":{"name":"c","annotations":null},"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"x"}]}}}}}}"#,
        )
        .expect("decodes");
        assert_eq!(
            cron.template().map(|t| t.spec.containers[0].name.as_str()),
            Some("x")
        );
        let deploy: WorkloadRecord = serde_json::from_str(
            r#"{"spec":{"template":{"spec":{"initContainers":[{"name":"i"}]}}}}"#,
        )
        .expect("decodes");
        assert_eq!(
            deploy.template().map(|t| t.spec.init_containers.len()),
            Some(1)
        );
    }
}
