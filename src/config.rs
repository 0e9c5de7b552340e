//! The policy file: what envlink injects and which variables are reserved.
//!
//! YAML (JSON is YAML too). Every key is optional; an unknown key, a wrong type or an invalid
//! pattern is an error that names the key, because a silently ignored misspelling in an
//! admission policy is a security bug.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::packs;
use crate::reserved::{Action, CompiledRules, RuleConfig, RuleError, UnverifiableEnvFrom};

/// Default cap on injected variables per Pod.
///
/// The kubelet fails containers with "argument list too long" somewhere near 2,000 Services
/// (about 14,000 variables, depending on name lengths); 5,000 variables stays well clear of
/// that and of etcd's 1.5 MiB object limit, while never biting a namespace of a few hundred
/// Services.
pub const DEFAULT_MAX_VARIABLES: usize = 5_000;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Service-link injection.
    pub services: ServicesConfig,
    /// Reserved device-plugin variables.
    pub reserved: ReservedConfig,
}

/// Which Pods get which Service variables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServicesConfig {
    /// `all`: the kubelet's set unless the Pod narrows it; `annotated`: only Pods with
    /// `envlink.io/services`; `off`: no injection (reserved checks only).
    pub mode: InjectionMode,
    /// Whether `envlink.io/services` may name `namespace/name`.
    pub allow_cross_namespace: bool,
    /// What to do when a Pod names a Service that does not exist.
    pub on_missing: OnMissing,
    /// Set `spec.enableServiceLinks: false` after injecting, so the kubelet adds no second copy.
    pub disable_service_links: bool,
    /// Inject nothing (and warn) when a Pod would get more variables than this.
    pub max_variables: usize,
    /// Watch only these namespaces (empty: all). `default` is always watched for `kubernetes`.
    pub namespaces: Vec<String>,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            mode: InjectionMode::All,
            allow_cross_namespace: false,
            on_missing: OnMissing::Deny,
            disable_service_links: true,
            max_variables: DEFAULT_MAX_VARIABLES,
            namespaces: Vec::new(),
        }
    }
}

/// See [`ServicesConfig::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ModeText")]
pub enum InjectionMode {
    /// The kubelet's set by default, narrowed by the annotation.
    All,
    /// Only Pods that carry `envlink.io/services`.
    Annotated,
    /// No injection at all.
    Off,
}

/// `mode` as written. YAML 1.1 parsers read an unquoted `off` as the boolean false, so
/// `mode: off` arrives as `false` and is accepted as `off`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ModeText {
    Flag(bool),
    Text(String),
}

impl TryFrom<ModeText> for InjectionMode {
    type Error = String;

    fn try_from(value: ModeText) -> Result<Self, Self::Error> {
        match value {
            ModeText::Flag(false) => Ok(InjectionMode::Off),
            ModeText::Text(t) if t == "all" => Ok(InjectionMode::All),
            ModeText::Text(t) if t == "annotated" => Ok(InjectionMode::Annotated),
            ModeText::Text(t) if t == "off" => Ok(InjectionMode::Off),
            ModeText::Flag(true) => Err("expected `all`, `annotated` or `off`, got `true`".into()),
            ModeText::Text(t) => Err(format!("expected `all`, `annotated` or `off`, got `{t}`")),
        }
    }
}

/// See [`ServicesConfig::on_missing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnMissing {
    /// Refuse the Pod, naming the missing Services (controllers retry until they exist).
    Deny,
    /// Admit it with a warning and inject what exists.
    Warn,
}

/// Reserved-variable rules.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ReservedConfig {
    /// Start from the built-in rules for known device plugins.
    pub use_default_rules: bool,
    /// The action of the built-in rules.
    pub default_action: Action,
    /// Built-in packs switched off, by name (`[hami]`); an unknown name is an error.
    pub disable_default_rules: Vec<String>,
    /// The action of a built-in pack's rules, per pack (`{hami: warn}`), over
    /// `defaultAction`; an unknown pack is an error.
    pub pack_actions: BTreeMap<String, Action>,
    /// Extra rules, checked after the built-in ones.
    pub rules: Vec<RuleConfig>,
    /// Namespaces where no reserved rule applies (set by the cluster admin, never by a Pod).
    pub exempt_namespaces: Vec<String>,
    /// Also check the keys of ConfigMaps brought in by `envFrom` (needs list/watch on
    /// ConfigMaps; envlink keeps only their key names).
    pub check_config_maps: bool,
    /// What an `envFrom` gets whose keys envlink cannot read (a Secret; a ConfigMap while
    /// `checkConfigMaps` is off or that it does not know) when its prefix can begin a name a
    /// rule reserves in that container. Never stricter than the rule's own action.
    pub unverifiable_env_from: UnverifiableEnvFrom,
}

impl Default for ReservedConfig {
    fn default() -> Self {
        Self {
            use_default_rules: true,
            default_action: Action::Deny,
            disable_default_rules: Vec::new(),
            pack_actions: BTreeMap::new(),
            rules: Vec::new(),
            exempt_namespaces: Vec::new(),
            check_config_maps: false,
            unverifiable_env_from: UnverifiableEnvFrom::Warn,
        }
    }
}

/// The built-in rules (see [`crate::packs`]): every pack not switched off by
/// `reserved.disableDefaultRules`, each with its `reserved.packActions` entry or else
/// `reserved.defaultAction`.
pub fn default_rules(config: &ReservedConfig) -> Vec<RuleConfig> {
    packs::PACKS
        .iter()
        .filter(|pack| !config.disable_default_rules.iter().any(|d| d == pack.name))
        .flat_map(|pack| {
            let action = config
                .pack_actions
                .get(pack.name)
                .copied()
                .unwrap_or(config.default_action);
            pack.rules.iter().map(move |rule| rule.to_config(action))
        })
        .collect()
}

impl ReservedConfig {
    /// The rules this section asks for, in order: the built-in ones (when enabled), then its
    /// own.
    pub fn rule_list(&self) -> Vec<RuleConfig> {
        let mut rules = if self.use_default_rules {
            default_rules(self)
        } else {
            Vec::new()
        };
        rules.extend(self.rules.iter().cloned());
        rules
    }

    /// Compiles [`ReservedConfig::rule_list`] with this section's exemptions and
    /// `unverifiableEnvFrom`.
    pub fn compile(&self) -> Result<CompiledRules, RuleError> {
        CompiledRules::compile(
            &self.rule_list(),
            &self.exempt_namespaces,
            self.unverifiable_env_from,
        )
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The I/O error is part of the message and deliberately not a `#[source]`: an `anyhow`
    // chain would print it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The text is not YAML.
    #[error("config file {path} is not valid YAML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said, with the line.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("config file {path}: at `{key}`: {message}")]
    Key {
        /// The file.
        path: String,
        /// Dotted path to the key, e.g. `reserved.rules[0].action`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-typed but unusable (an invalid pattern, an empty rule, ...).
    #[error("config file {path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// Which rule and what is wrong.
        source: RuleError,
    },
    /// A value outside its range.
    #[error("config file {path}: at `{key}`: {message}")]
    Range {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A configuration that has been checked, with its rules compiled once.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The configuration as written (with defaults filled in).
    pub config: Config,
    /// The reserved rules, built-in first, compiled.
    pub rules: CompiledRules,
}

impl Policy {
    /// Checks and compiles a configuration. `origin` names it in messages.
    pub fn new(config: Config, origin: &str) -> Result<Self, ConfigError> {
        if config.services.max_variables == 0 {
            return Err(ConfigError::Range {
                path: origin.into(),
                key: "services.maxVariables".into(),
                message: "must be at least 1".into(),
            });
        }
        check_pack_names(&config.reserved, origin)?;
        let rules = config
            .reserved
            .compile()
            .map_err(|source| ConfigError::Invalid {
                path: origin.into(),
                source,
            })?;
        Ok(Self { config, rules })
    }

    /// Parses and checks a configuration from text.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config = parse_config(text, origin)?;
        Self::new(config, origin)
    }

    /// Reads, parses and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: origin.clone(),
            error,
        })?;
        Self::from_yaml(&text, &origin)
    }
}

impl Default for Policy {
    fn default() -> Self {
        // The built-in rules are covered by tests; compiling them cannot fail.
        Self::new(Config::default(), "<built-in defaults>")
            .unwrap_or_else(|e| panic!("built-in configuration is invalid: {e}"))
    }
}

/// `disableDefaultRules` and `packActions` name built-in packs: a misspelt one would silently
/// leave a pack on (or at its default action), so it is an error naming the key.
fn check_pack_names(reserved: &ReservedConfig, origin: &str) -> Result<(), ConfigError> {
    let unknown = |key: String, name: &str| ConfigError::Range {
        path: origin.into(),
        key,
        message: format!(
            "unknown built-in pack `{name}`, expected one of {}",
            packs::pack_names()
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for (i, name) in reserved.disable_default_rules.iter().enumerate() {
        if packs::pack(name).is_none() {
            return Err(unknown(format!("reserved.disableDefaultRules[{i}]"), name));
        }
    }
    for name in reserved.pack_actions.keys() {
        if packs::pack(name).is_none() {
            return Err(unknown(format!("reserved.packActions.{name}"), name));
        }
    }
    Ok(())
}

fn parse_config(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // Two steps: YAML syntax first (its errors carry line numbers), then the typed structure
    // through serde_path_to_error, so a wrong key is reported with its full path.
    let value: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.into(),
            message: e.to_string(),
        })?
    };
    if value.is_null() {
        return Ok(Config::default());
    }
    serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Key {
        path: origin.into(),
        key: display_path(e.path()),
        message: e.inner().to_string(),
    })
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "(top level)".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reserved::Scope;

    #[test]
    fn empty_file_is_the_defaults() {
        let p = Policy::from_yaml("", "t").expect("empty config");
        assert_eq!(p.config, Config::default());
        let p = Policy::from_yaml("# only a comment\n", "t").expect("comment-only config");
        assert_eq!(p.config, Config::default());
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
services:
  mode: annotated
  allowCrossNamespace: true
  onMissing: warn
  disableServiceLinks: false
  maxVariables: 100
  namespaces: [a, b]
reserved:
  useDefaultRules: false
  defaultAction: warn
  exemptNamespaces: [gpu-admin]
  checkConfigMaps: true
  unverifiableEnvFrom: deny
  rules:
    - name: custom
      resources: ["example.com/*"]
      names: [EXAMPLE_DEVICES]
      prefixes: [EXAMPLE_]
      patterns: ["EX[0-9]+"]
      scope: all
      action: strip
"#;
        let p = Policy::from_yaml(text, "t").expect("valid config");
        assert_eq!(p.config.services.mode, InjectionMode::Annotated);
        assert_eq!(p.config.services.on_missing, OnMissing::Warn);
        assert_eq!(p.config.reserved.rules[0].action, Action::Strip);
        assert_eq!(p.config.reserved.rules[0].scope, Scope::All);
        assert_eq!(
            p.config.reserved.unverifiable_env_from,
            UnverifiableEnvFrom::Deny
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "services:\n  mdoe: all\n",
                "services.mdoe",
                "unknown field `mdoe`",
            ),
            (
                "services:\n  mode: sometimes\n",
                "services.mode",
                "got `sometimes`",
            ),
            (
                "services:\n  maxVariables: lots\n",
                "services.maxVariables",
                "invalid type",
            ),
            (
                "reserved:\n  rules:\n    - name: x\n      names: [A]\n      action: block\n",
                "reserved.rules[0].action",
                "unknown variant `block`",
            ),
            ("servces: {}\n", "servces", "unknown field `servces`"),
            (
                "reserved:\n  unverifiableEnvFrom: strip\n",
                "reserved.unverifiableEnvFrom",
                "unknown variant `strip`",
            ),
            (
                "reserved:\n  disableDefaultRules: [nvidia, hmai]\n",
                "reserved.disableDefaultRules[1]",
                "unknown built-in pack `hmai`",
            ),
            (
                "reserved:\n  packActions: {hmai: warn}\n",
                "reserved.packActions.hmai",
                "expected one of `nvidia`, `hami`",
            ),
            (
                "reserved:\n  packActions: {hami: block}\n",
                "reserved.packActions.hami",
                "unknown variant `block`",
            ),
            (
                "reserved:\n  rules:\n    - name: x\n      names: [A]\n      deviceClassAction: never\n",
                "reserved.rules[0].deviceClassAction",
                "unknown variant",
            ),
        ];
        for (text, key, message) in cases {
            let err = Policy::from_yaml(text, "cfg.yaml")
                .expect_err(text)
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
            assert!(err.contains(message), "{err}");
            assert!(err.contains("cfg.yaml"), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_errors() {
        let bad_pattern = "reserved:\n  rules:\n    - name: r\n      resources: [x.io/*]\n      patterns: ['QAT[0-9']\n";
        let err = Policy::from_yaml(bad_pattern, "c")
            .expect_err("bad regex")
            .to_string();
        assert!(err.contains("rule `r`") && err.contains("pattern"), "{err}");

        let empty_rule = "reserved:\n  rules:\n    - name: r\n      resources: [x.io/*]\n";
        let err = Policy::from_yaml(empty_rule, "c")
            .expect_err("empty rule")
            .to_string();
        assert!(err.contains("rule `r`"), "{err}");

        let zero = "services:\n  maxVariables: 0\n";
        let err = Policy::from_yaml(zero, "c").expect_err("zero").to_string();
        assert!(err.contains("services.maxVariables"), "{err}");

        let syntax = "services: [unclosed\n";
        let err = Policy::from_yaml(syntax, "c")
            .expect_err("syntax")
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Policy::from_file(Path::new("/nonexistent/envlink.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/envlink.yaml"), "{err}");
    }
}
