//! Reserved device-plugin variables: the rules and their evaluation (pure, no I/O).
//!
//! A device plugin hands the kubelet variables for the containers that get its device; the
//! kubelet puts them first and the container's own `env` after, and the runtime keeps the last
//! value. So a user's `NVIDIA_VISIBLE_DEVICES` silently beats the plugin's. These rules find
//! such names in a container before it exists.

use globset::{GlobSet, GlobSetBuilder};
use hashbrown::HashSet;
use regex::RegexSet;

use crate::config::{Action, ReservedConfig, RuleConfig, Scope};

/// Why a rule could not be compiled; names the rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A resource glob does not parse.
    #[error("rule `{rule}`: resource glob `{glob}` is invalid: {message}")]
    Glob {
        /// The rule.
        rule: String,
        /// The glob.
        glob: String,
        /// The parser's message.
        message: String,
    },
    /// A pattern is not a valid regular expression.
    #[error("rule `{rule}`: pattern `{pattern}` is invalid: {message}")]
    Pattern {
        /// The rule.
        rule: String,
        /// The pattern.
        pattern: String,
        /// The parser's message.
        message: String,
    },
    /// The rule matches no variable at all.
    #[error("rule `{rule}`: needs at least one of `names`, `prefixes` or `patterns`")]
    Empty {
        /// The rule.
        rule: String,
    },
    /// A `requesting` rule without resources could never apply.
    #[error("rule `{rule}`: scope `requesting` needs at least one entry in `resources`")]
    NoResources {
        /// The rule.
        rule: String,
    },
    /// A rule without a name cannot be referred to in messages.
    #[error("a rule has an empty `name`")]
    Unnamed,
    /// An empty name, prefix or pattern would match everything or nothing.
    #[error("rule `{rule}`: `{what}` contains an empty entry")]
    EmptyEntry {
        /// The rule.
        rule: String,
        /// Which list.
        what: &'static str,
    },
}

/// The built-in rules for known device plugins (only names plugins really set in their
/// Allocate response: `CUDA_VISIBLE_DEVICES` is set by users and frameworks, not by plugins).
pub fn default_rules(action: Action) -> Vec<RuleConfig> {
    let rule = |name: &str,
                resources: &[&str],
                names: &[&str],
                prefixes: &[&str],
                patterns: &[&str],
                scope: Scope| RuleConfig {
        name: name.into(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        names: names.iter().map(|s| s.to_string()).collect(),
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        patterns: patterns.iter().map(|s| s.to_string()).collect(),
        scope,
        action,
    };
    vec![
        rule(
            "nvidia",
            &["nvidia.com/*"],
            &[
                "NVIDIA_VISIBLE_DEVICES",
                "NVIDIA_IMEX_CHANNELS",
                "NVIDIA_GDRCOPY",
                "NVIDIA_GDS",
                "NVIDIA_MOFED",
                "CUDA_MPS_PIPE_DIRECTORY",
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
            ],
            &[],
            &[],
            Scope::Requesting,
        ),
        // In a container without a GPU, the NVIDIA runtime hook still honours
        // NVIDIA_VISIBLE_DEVICES=all and mounts every GPU of the node: reserved everywhere.
        rule(
            "nvidia-visible-devices",
            &["nvidia.com/*"],
            &["NVIDIA_VISIBLE_DEVICES"],
            &[],
            &[],
            Scope::All,
        ),
        rule(
            "habana",
            &["habana.ai/*"],
            &[
                "HABANA_VISIBLE_DEVICES",
                "HL_VISIBLE_DEVICES",
                "HL_VISIBLE_DEVICES_UUID",
                "HABANA_VISIBLE_MODULES",
            ],
            &[],
            &[],
            Scope::Requesting,
        ),
        rule(
            "ascend",
            &["huawei.com/Ascend*"],
            &[
                "ASCEND_VISIBLE_DEVICES",
                "ASCEND_RUNTIME_OPTIONS",
                "ASCEND_ALLOW_LINK",
            ],
            &[],
            &[],
            Scope::Requesting,
        ),
        rule(
            "intel-qat",
            &["qat.intel.com/*"],
            &[],
            &[],
            &["QAT[0-9]+"],
            Scope::Requesting,
        ),
        // SR-IOV resource names are chosen by each cluster's admin (`intel.com/sriov_net_a`,
        // `openshift.io/...`), so no glob can find them: the prefix is reserved everywhere.
        rule("sriov", &[], &[], &["PCIDEVICE_"], &[], Scope::All),
    ]
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule's name.
    pub name: String,
    /// The resource globs as written (for messages).
    pub resource_globs: Vec<String>,
    resources: GlobSet,
    names: HashSet<String>,
    prefixes: Vec<String>,
    patterns: Option<RegexSet>,
    /// Which containers it applies to.
    pub scope: Scope,
    /// What it does.
    pub action: Action,
}

impl CompiledRule {
    fn compile(rule: &RuleConfig) -> Result<Self, RuleError> {
        if rule.name.trim().is_empty() {
            return Err(RuleError::Unnamed);
        }
        let name = rule.name.clone();
        if rule.names.is_empty() && rule.prefixes.is_empty() && rule.patterns.is_empty() {
            return Err(RuleError::Empty { rule: name });
        }
        if rule.scope == Scope::Requesting && rule.resources.is_empty() {
            return Err(RuleError::NoResources { rule: name });
        }
        for (what, list) in [
            ("names", &rule.names),
            ("prefixes", &rule.prefixes),
            ("patterns", &rule.patterns),
            ("resources", &rule.resources),
        ] {
            if list.iter().any(|s| s.is_empty()) {
                return Err(RuleError::EmptyEntry { rule: name, what });
            }
        }
        let mut globs = GlobSetBuilder::new();
        for glob in &rule.resources {
            // `*` stays within one path segment: `nvidia.com/*` must not match
            // `nvidia.com.evil/x/y`.
            let compiled = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| RuleError::Glob {
                    rule: name.clone(),
                    glob: glob.clone(),
                    message: e.kind().to_string(),
                })?;
            globs.add(compiled);
        }
        let resources = globs.build().map_err(|e| RuleError::Glob {
            rule: name.clone(),
            glob: rule.resources.join(", "),
            message: e.to_string(),
        })?;
        // Validate each pattern alone so the message names the broken one.
        for pattern in &rule.patterns {
            regex::Regex::new(&anchored(pattern)).map_err(|e| RuleError::Pattern {
                rule: name.clone(),
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
        }
        let patterns = if rule.patterns.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(rule.patterns.iter().map(|p| anchored(p))).map_err(|e| {
                    RuleError::Pattern {
                        rule: name.clone(),
                        pattern: rule.patterns.join(", "),
                        message: e.to_string(),
                    }
                })?,
            )
        };
        Ok(Self {
            name,
            resource_globs: rule.resources.clone(),
            resources,
            names: rule.names.iter().cloned().collect(),
            prefixes: rule.prefixes.clone(),
            patterns,
            scope: rule.scope,
            action: rule.action,
        })
    }

    /// Whether the variable name is one this rule reserves.
    pub fn matches_name(&self, variable: &str) -> bool {
        self.names.contains(variable)
            || self
                .prefixes
                .iter()
                .any(|p| variable.starts_with(p.as_str()))
            || self
                .patterns
                .as_ref()
                .is_some_and(|set| set.is_match(variable))
    }

    /// The first of the container's resources this rule is about, if any.
    fn matching_resource<'a>(&self, resources: &[&'a str]) -> Option<&'a str> {
        resources
            .iter()
            .copied()
            .find(|r| self.resources.is_match(r))
    }

    /// Whether the rule applies to a container with these resources, and why (the resource).
    fn applies_to<'a>(&self, resources: &[&'a str]) -> Option<Applies<'a>> {
        match (self.scope, self.matching_resource(resources)) {
            (_, Some(resource)) => Some(Applies::Requested(resource)),
            (Scope::All, None) => Some(Applies::Everywhere),
            (Scope::Requesting, None) => None,
        }
    }
}

/// Patterns match the whole variable name, not a substring.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

#[derive(Debug, Clone, Copy)]
enum Applies<'a> {
    Requested(&'a str),
    Everywhere,
}

/// All rules of a policy, compiled, plus the exempt namespaces.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
    exempt_namespaces: HashSet<String>,
    /// Every rule's names, prefixes and patterns in one matcher: one test tells whether a
    /// name can be reserved at all, before any rule-by-rule work (hundreds of injected names
    /// per Pod, almost none reserved).
    any_name: HashSet<String>,
    any_prefix: Vec<String>,
    any_pattern: Option<RegexSet>,
    /// Unique per compilation (clones share it): lets the catalog remember, per Service,
    /// whether any of its variables may be reserved under exactly these rules.
    id: u64,
}

/// Where a container sits in the Pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerKind {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    Regular,
    /// `spec.ephemeralContainers`.
    Ephemeral,
}

impl ContainerKind {
    /// The field of the Pod spec that holds this kind.
    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Init => "initContainers",
            ContainerKind::Regular => "containers",
            ContainerKind::Ephemeral => "ephemeralContainers",
        }
    }

    /// How messages name it.
    pub fn noun(self) -> &'static str {
        match self {
            ContainerKind::Init => "init container",
            ContainerKind::Regular => "container",
            ContainerKind::Ephemeral => "ephemeral container",
        }
    }
}

/// What the rules need to know about one container.
#[derive(Debug, Clone)]
pub struct ContainerEnv<'a> {
    /// Which list it is in.
    pub kind: ContainerKind,
    /// Its index in that list.
    pub index: usize,
    /// Its name.
    pub name: &'a str,
    /// Resource names in its requests and limits.
    pub resources: Vec<&'a str>,
    /// Its `env` names, in order.
    pub env: Vec<&'a str>,
    /// Its `envFrom` sources, in order.
    pub env_from: Vec<EnvFromSource<'a>>,
}

/// One `envFrom` entry.
#[derive(Debug, Clone)]
pub struct EnvFromSource<'a> {
    /// The ConfigMap it reads, if it is a ConfigMap reference.
    pub config_map: Option<&'a str>,
    /// The prefix put in front of each key.
    pub prefix: &'a str,
}

/// Where a reserved name was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `env[index]`.
    Env(usize),
    /// A key of the ConfigMap brought in by `envFrom[index]`.
    EnvFrom {
        /// Index in `envFrom`.
        index: usize,
        /// The ConfigMap.
        config_map: String,
    },
}

/// One reserved name set by a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which list the container is in.
    pub kind: ContainerKind,
    /// Index in that list.
    pub index: usize,
    /// Container name.
    pub container: String,
    /// The variable.
    pub variable: String,
    /// Where it comes from.
    pub origin: Origin,
    /// The rule that reserves it.
    pub rule: String,
    /// The device resource it is reserved for (or the rule's globs when reserved everywhere).
    pub resource: String,
    /// The action that applies (the strictest of all matching rules).
    pub action: Action,
}

impl Finding {
    /// A message that names the container, the variable and the resource.
    pub fn message(&self) -> String {
        let source = match &self.origin {
            Origin::Env(_) => String::from("env"),
            Origin::EnvFrom { config_map, .. } => format!("envFrom ConfigMap {config_map:?}"),
        };
        let verb = match self.action {
            Action::Deny => "is reserved",
            Action::Strip => "is reserved and was removed",
            Action::Warn => "is reserved",
        };
        format!(
            "{} {:?}: variable {} (from {}) {} for the device plugin of {} (rule {}): \
             a value set here silently replaces the plugin's",
            self.kind.noun(),
            self.container,
            self.variable,
            source,
            verb,
            self.resource,
            self.rule,
        )
    }
}

/// Looks up the keys of a ConfigMap in the Pod's namespace; `None` when it cannot be read.
pub trait ConfigMapKeys {
    /// The keys of ConfigMap `name` in `namespace`.
    fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>>;
}

/// A lookup that never knows any ConfigMap (offline use, or the check turned off).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoConfigMaps;

impl ConfigMapKeys for NoConfigMaps {
    fn keys(&self, _namespace: &str, _name: &str) -> Option<Vec<String>> {
        None
    }
}

impl CompiledRules {
    /// Compiles the configured rules (built-in ones first when enabled).
    pub fn compile(config: &ReservedConfig) -> Result<Self, RuleError> {
        let mut configs = if config.use_default_rules {
            default_rules(config.default_action)
        } else {
            Vec::new()
        };
        configs.extend(config.rules.iter().cloned());
        let rules = configs
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let any_name = configs
            .iter()
            .flat_map(|r| r.names.iter().cloned())
            .collect();
        let any_prefix = configs
            .iter()
            .flat_map(|r| r.prefixes.iter().cloned())
            .collect();
        let patterns: Vec<String> = configs
            .iter()
            .flat_map(|r| r.patterns.iter().map(|p| anchored(p)))
            .collect();
        let any_pattern = if patterns.is_empty() {
            None
        } else {
            // Each pattern compiled alone above, so together they compile too.
            Some(RegexSet::new(&patterns).map_err(|e| RuleError::Pattern {
                rule: "(all rules)".into(),
                pattern: patterns.join(", "),
                message: e.to_string(),
            })?)
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Self {
            rules,
            exempt_namespaces: config.exempt_namespaces.iter().cloned().collect(),
            any_name,
            any_prefix,
            any_pattern,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Identifies these rules (see [`crate::catalog::LinkedService::may_have_reserved`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether any rule reserves this name in some container; `false` settles it cheaply.
    pub fn may_be_reserved(&self, variable: &str) -> bool {
        self.any_name.contains(variable)
            || self
                .any_prefix
                .iter()
                .any(|p| variable.starts_with(p.as_str()))
            || self
                .any_pattern
                .as_ref()
                .is_some_and(|set| set.is_match(variable))
    }

    /// The compiled rules, in order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Whether the namespace is exempt from the checks.
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.contains(namespace)
    }

    /// Whether `variable` is reserved in a container with these resources.
    ///
    /// Used to never inject a reserved name; namespace exemptions do not apply there.
    pub fn is_reserved(&self, resources: &[&str], variable: &str) -> bool {
        self.may_be_reserved(variable)
            && self
                .rules
                .iter()
                .any(|r| r.matches_name(variable) && r.applies_to(resources).is_some())
    }

    /// The strictest matching rule for a variable in a container, with the resource text.
    fn strictest(&self, resources: &[&str], variable: &str) -> Option<(&CompiledRule, String)> {
        let mut best: Option<(&CompiledRule, String)> = None;
        for rule in &self.rules {
            if !rule.matches_name(variable) {
                continue;
            }
            let Some(applies) = rule.applies_to(resources) else {
                continue;
            };
            let resource = match applies {
                Applies::Requested(r) => r.to_string(),
                Applies::Everywhere if rule.resource_globs.is_empty() => {
                    "any device (reserved in every container)".to_string()
                }
                Applies::Everywhere => format!(
                    "{} (reserved in every container)",
                    rule.resource_globs.join(", ")
                ),
            };
            if best.as_ref().is_none_or(|(b, _)| rule.action > b.action) {
                best = Some((rule, resource));
            }
        }
        best
    }

    /// Every reserved name the containers set, in container order.
    ///
    /// `env` entries are checked whatever their value source; `envFrom` ConfigMap keys (with
    /// their prefix) where `config_maps` can read them. A Secret's keys are never read.
    pub fn evaluate(
        &self,
        namespace: &str,
        containers: &[ContainerEnv<'_>],
        config_maps: &dyn ConfigMapKeys,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        if self.is_exempt(namespace) || self.rules.is_empty() {
            return findings;
        }
        for container in containers {
            let mut push = |variable: &str, origin: Origin| {
                if let Some((rule, resource)) = self.strictest(&container.resources, variable) {
                    let mut action = rule.action;
                    // A key inside a ConfigMap cannot be removed by patching the Pod.
                    if action == Action::Strip && matches!(origin, Origin::EnvFrom { .. }) {
                        action = Action::Deny;
                    }
                    findings.push(Finding {
                        kind: container.kind,
                        index: container.index,
                        container: container.name.to_string(),
                        variable: variable.to_string(),
                        origin,
                        rule: rule.name.clone(),
                        resource,
                        action,
                    });
                }
            };
            for (index, source) in container.env_from.iter().enumerate() {
                let Some(config_map) = source.config_map else {
                    continue;
                };
                let Some(keys) = config_maps.keys(namespace, config_map) else {
                    continue;
                };
                for key in keys {
                    let variable = format!("{}{}", source.prefix, key);
                    push(
                        &variable,
                        Origin::EnvFrom {
                            index,
                            config_map: config_map.to_string(),
                        },
                    );
                }
            }
            for (index, variable) in container.env.iter().enumerate() {
                if self.may_be_reserved(variable) {
                    push(variable, Origin::Env(index));
                }
            }
        }
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rules() -> CompiledRules {
        CompiledRules::compile(&ReservedConfig::default()).expect("defaults compile")
    }

    fn container<'a>(name: &'a str, resources: &[&'a str], env: &[&'a str]) -> ContainerEnv<'a> {
        ContainerEnv {
            kind: ContainerKind::Regular,
            index: 0,
            name,
            resources: resources.to_vec(),
            env: env.to_vec(),
            env_from: vec![],
        }
    }

    #[test]
    fn default_rules_table() {
        // (resources, variable, expected action or None)
        let cases: &[(&[&str], &str, Option<Action>)] = &[
            (
                &["nvidia.com/gpu"],
                "NVIDIA_VISIBLE_DEVICES",
                Some(Action::Deny),
            ),
            (&[], "NVIDIA_VISIBLE_DEVICES", Some(Action::Deny)),
            (&["cpu"], "NVIDIA_VISIBLE_DEVICES", Some(Action::Deny)),
            (
                &["nvidia.com/mig-1g.5gb"],
                "CUDA_MPS_PIPE_DIRECTORY",
                Some(Action::Deny),
            ),
            (&[], "CUDA_MPS_PIPE_DIRECTORY", None),
            (&["nvidia.com/gpu"], "CUDA_VISIBLE_DEVICES", None),
            (
                &["habana.ai/gaudi"],
                "HL_VISIBLE_DEVICES",
                Some(Action::Deny),
            ),
            (&["nvidia.com/gpu"], "HL_VISIBLE_DEVICES", None),
            (
                &["huawei.com/Ascend910"],
                "ASCEND_VISIBLE_DEVICES",
                Some(Action::Deny),
            ),
            (&["huawei.com/other"], "ASCEND_VISIBLE_DEVICES", None),
            (&["qat.intel.com/generic"], "QAT0", Some(Action::Deny)),
            (&["qat.intel.com/generic"], "QAT12", Some(Action::Deny)),
            (&["qat.intel.com/generic"], "QAT", None),
            (&["qat.intel.com/generic"], "QAT1X", None),
            (&["qat.intel.com/generic"], "MYQAT1", None),
            (&[], "QAT1", None),
            (&[], "PCIDEVICE_INTEL_COM_SRIOV", Some(Action::Deny)),
            (&[], "MY_PCIDEVICE_X", None),
            (&["nvidia.com.evil/x/y"], "CUDA_MPS_PIPE_DIRECTORY", None),
        ];
        let rules = rules();
        for (resources, variable, want) in cases {
            let c = container("app", resources, &[variable]);
            let got = rules.evaluate("ns", &[c], &NoConfigMaps);
            assert_eq!(
                got.first().map(|f| f.action),
                *want,
                "{variable} with {resources:?}"
            );
            assert_eq!(rules.is_reserved(resources, variable), want.is_some());
        }
    }

    #[test]
    fn message_names_container_variable_and_resource() {
        let c = container("trainer", &["nvidia.com/gpu"], &["NVIDIA_GDS"]);
        let f = rules().evaluate("ns", &[c], &NoConfigMaps);
        let m = f[0].message();
        assert!(m.contains("container \"trainer\""), "{m}");
        assert!(m.contains("NVIDIA_GDS"), "{m}");
        assert!(m.contains("nvidia.com/gpu"), "{m}");
    }

    #[test]
    fn strictest_action_wins_and_exempt_namespaces_skip() {
        let config = ReservedConfig {
            default_action: Action::Warn,
            rules: vec![RuleConfig {
                name: "strict".into(),
                resources: vec![],
                names: vec!["NVIDIA_VISIBLE_DEVICES".into()],
                prefixes: vec![],
                patterns: vec![],
                scope: Scope::All,
                action: Action::Strip,
            }],
            exempt_namespaces: vec!["gpu-admin".into()],
            ..ReservedConfig::default()
        };
        let rules = CompiledRules::compile(&config).expect("compiles");
        let c = container("a", &[], &["NVIDIA_VISIBLE_DEVICES"]);
        let f = rules.evaluate("ns", std::slice::from_ref(&c), &NoConfigMaps);
        assert_eq!(f[0].action, Action::Strip);
        assert_eq!(f[0].rule, "strict");
        assert!(rules.evaluate("gpu-admin", &[c], &NoConfigMaps).is_empty());
    }

    struct Maps(HashMap<(String, String), Vec<String>>);
    impl ConfigMapKeys for Maps {
        fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
            self.0
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
        }
    }

    #[test]
    fn env_from_config_map_keys_with_prefix() {
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "gpu-env".to_string()),
            vec!["VISIBLE_DEVICES".to_string(), "OTHER".to_string()],
        )]));
        let mut c = container("app", &["nvidia.com/gpu"], &[]);
        c.env_from = vec![
            EnvFromSource {
                config_map: Some("gpu-env"),
                prefix: "NVIDIA_",
            },
            EnvFromSource {
                config_map: Some("unreadable"),
                prefix: "",
            },
        ];
        let f = rules().evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].variable, "NVIDIA_VISIBLE_DEVICES");
        assert!(matches!(f[0].origin, Origin::EnvFrom { index: 0, .. }));
        assert!(f[0].message().contains("gpu-env"));
    }

    #[test]
    fn strip_of_an_env_from_key_becomes_deny() {
        let config = ReservedConfig {
            default_action: Action::Strip,
            ..ReservedConfig::default()
        };
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "m".to_string()),
            vec!["NVIDIA_VISIBLE_DEVICES".to_string()],
        )]));
        let mut c = container("app", &[], &["NVIDIA_VISIBLE_DEVICES"]);
        c.env_from = vec![EnvFromSource {
            config_map: Some("m"),
            prefix: "",
        }];
        let rules = CompiledRules::compile(&config).expect("compiles");
        let f = rules.evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].action, Action::Deny);
        assert_eq!(f[1].action, Action::Strip);
    }
}
