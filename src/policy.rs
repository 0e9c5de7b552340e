//! The native policy: the reserved `deny` rules that the object alone decides, as a
//! `ValidatingAdmissionPolicy` and its binding (`admissionregistration.k8s.io/v1`, Kubernetes
//! 1.30 and later), so the API server keeps refusing such Pods while envlink is down.
//!
//! Pure: rules in, CEL and objects out. What the object alone cannot decide stays with envlink
//! and is listed in the output's comments: ConfigMap keys (`checkConfigMaps`), DRA device
//! classes (they need the ResourceClaims), `unverifiableEnvFrom: deny`, patterns RE2 cannot
//! express, globs without a regex translation here, and updates of workloads (envlink refuses
//! only what an update adds; the Pods a workload creates are checked either way).

use regex_syntax::ast::{self, Ast};
use serde_json::{Value, json};

use crate::reserved::{Action, CompiledRule, CompiledRules, Scope};

/// The policy's name (and the binding's).
pub const POLICY_NAME: &str = "envlink-reserved-variables";

/// Why the policy could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// YAML serialisation failed (not expected for these objects).
    #[error("cannot write the policy as YAML: {0}")]
    Yaml(String),
}

/// One CEL validation: a rule's check, with envlink-like messages.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The rule it enforces.
    pub rule: String,
    /// True when the object is allowed.
    pub expression: String,
    /// The message when `message_expression` cannot be evaluated.
    pub message: String,
    /// The message naming the containers and variables.
    pub message_expression: String,
}

/// The generated policy, before it is written out.
#[derive(Debug, Clone, Default)]
pub struct NativePolicy {
    /// `spec.variables`, in order (later ones use earlier ones).
    pub variables: Vec<(String, String)>,
    /// `spec.matchConditions` (exempt namespaces).
    pub match_conditions: Vec<(String, String)>,
    /// `spec.validations`.
    pub validations: Vec<Validation>,
    /// What is left to envlink, one line each (written as comments).
    pub left_to_envlink: Vec<String>,
}

/// A CEL string literal (single quotes; backslash and quote escaped).
pub fn cel_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

/// A CEL list of string literals.
fn cel_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| cel_string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The regex (RE2 and Rust alike) for a resource glob as envlink matches it: `*` and `?`
/// within one path segment. `None` for globs using `**`, classes, alternatives or escapes,
/// which the policy leaves to envlink rather than translate approximately.
pub fn glob_regex(glob: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => return None,
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' | ']' | '{' | '}' | '\\' => return None,
            c if c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_' => out.push(c),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Whether a pattern means the same to RE2 (CEL's `matches`) as to Rust's regex, judged on
/// its syntax tree: anything RE2 lacks or spells differently is refused with the reason.
pub fn re2_compatible(pattern: &str) -> Result<(), String> {
    let ast = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| e.kind().to_string())?;
    check_ast(&ast)
}

fn check_ast(node: &Ast) -> Result<(), String> {
    match node {
        Ast::Empty(_) | Ast::Dot(_) => Ok(()),
        Ast::Flags(f) => check_flags(&f.flags),
        Ast::Literal(l) => check_literal(l),
        Ast::Assertion(a) => match a.kind {
            ast::AssertionKind::StartLine
            | ast::AssertionKind::EndLine
            | ast::AssertionKind::StartText
            | ast::AssertionKind::EndText
            | ast::AssertionKind::WordBoundary
            | ast::AssertionKind::NotWordBoundary => Ok(()),
            _ => Err("a word-boundary form RE2 does not have".into()),
        },
        Ast::ClassUnicode(_) => Err("a Unicode class (\\p{..}) RE2 names differently".into()),
        Ast::ClassPerl(_) => Ok(()),
        Ast::ClassBracketed(c) => check_class_set(&c.kind),
        Ast::Repetition(r) => {
            if let ast::RepetitionKind::Range(range) = &r.op.kind {
                let max = match *range {
                    ast::RepetitionRange::Exactly(n) | ast::RepetitionRange::AtLeast(n) => n,
                    ast::RepetitionRange::Bounded(_, m) => m,
                };
                if max > 1000 {
                    return Err("a repetition count above RE2's 1000".into());
                }
            }
            check_ast(&r.ast)
        }
        Ast::Group(g) => {
            match &g.kind {
                ast::GroupKind::CaptureIndex(_) => {}
                ast::GroupKind::CaptureName { starts_with_p, .. } => {
                    if !starts_with_p {
                        return Err("a named group spelt (?<name>) (RE2 wants (?P<name>))".into());
                    }
                }
                ast::GroupKind::NonCapturing(flags) => check_flags(flags)?,
            }
            check_ast(&g.ast)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(check_ast),
        Ast::Concat(c) => c.asts.iter().try_for_each(check_ast),
    }
}

fn check_flags(flags: &ast::Flags) -> Result<(), String> {
    for item in &flags.items {
        if let ast::FlagsItemKind::Flag(flag) = item.kind {
            match flag {
                ast::Flag::CaseInsensitive
                | ast::Flag::MultiLine
                | ast::Flag::DotMatchesNewLine
                | ast::Flag::SwapGreed => {}
                _ => return Err(format!("the flag {flag:?}, which RE2 does not have")),
            }
        }
    }
    Ok(())
}

fn check_literal(literal: &ast::Literal) -> Result<(), String> {
    match literal.kind {
        ast::LiteralKind::HexFixed(ast::HexLiteralKind::UnicodeShort)
        | ast::LiteralKind::HexFixed(ast::HexLiteralKind::UnicodeLong)
        | ast::LiteralKind::HexBrace(ast::HexLiteralKind::UnicodeShort)
        | ast::LiteralKind::HexBrace(ast::HexLiteralKind::UnicodeLong) => {
            Err("a \\u or \\U escape (RE2 has only \\x)".into())
        }
        ast::LiteralKind::Special(ast::SpecialLiteralKind::Space) => {
            Err("an escaped space (RE2 does not know it)".into())
        }
        _ => Ok(()),
    }
}

fn check_class_set(set: &ast::ClassSet) -> Result<(), String> {
    match set {
        ast::ClassSet::BinaryOp(_) => Err("a class set operation (&&, --, ~~)".into()),
        ast::ClassSet::Item(item) => check_class_item(item),
    }
}

fn check_class_item(item: &ast::ClassSetItem) -> Result<(), String> {
    match item {
        ast::ClassSetItem::Empty(_) | ast::ClassSetItem::Perl(_) | ast::ClassSetItem::Ascii(_) => {
            Ok(())
        }
        ast::ClassSetItem::Literal(l) => check_literal(l),
        ast::ClassSetItem::Range(r) => {
            check_literal(&r.start)?;
            check_literal(&r.end)
        }
        ast::ClassSetItem::Unicode(_) => Err("a Unicode class (\\p{..}) inside a class".into()),
        ast::ClassSetItem::Bracketed(_) => Err("a nested class".into()),
        ast::ClassSetItem::Union(u) => u.items.iter().try_for_each(check_class_item),
    }
}

/// The variables every validation uses: the Pod spec wherever the kind keeps it, and the
/// containers each check looks at (on a `pods/ephemeralcontainers` update, only the debug
/// containers it adds).
fn variables() -> Vec<(String, String)> {
    let list = |field: &str| {
        format!(
            "variables.addsDebugContainers || !has(variables.spec.{field}) ? [] \
             : variables.spec.{field}"
        )
    };
    vec![
        (
            "spec".into(),
            "object.kind == 'Pod' ? object.spec : (object.kind == 'CronJob' ? \
             object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)"
                .into(),
        ),
        ("isPod".into(), "object.kind == 'Pod'".into()),
        // `subResource` is absent from a plain CREATE's request: reading it there is an
        // evaluation error ("no such key"), so it is tested with has() first.
        (
            "addsDebugContainers".into(),
            "has(request.subResource) && request.subResource == 'ephemeralcontainers'".into(),
        ),
        ("initContainers".into(), list("initContainers")),
        ("containers".into(), list("containers")),
        (
            "ephemeralContainers".into(),
            "!variables.isPod || !has(variables.spec.ephemeralContainers) ? [] : \
             (variables.addsDebugContainers && oldObject != null && \
             has(oldObject.spec.ephemeralContainers) ? variables.spec.ephemeralContainers\
             .filter(c, !oldObject.spec.ephemeralContainers.exists(o, o.name == c.name)) : \
             variables.spec.ephemeralContainers)"
                .into(),
        ),
        (
            "allContainers".into(),
            "variables.initContainers + variables.containers + variables.ephemeralContainers"
                .into(),
        ),
    ]
}

/// Generates the native policy for these rules.
pub fn generate(rules: &CompiledRules) -> NativePolicy {
    let mut out = NativePolicy {
        variables: variables(),
        ..NativePolicy::default()
    };
    let exempt = rules.exempt_namespaces();
    if !exempt.is_empty() {
        out.match_conditions.push((
            "not-exempt-namespace".into(),
            format!("!(request.namespace in {})", cel_list(&exempt)),
        ));
    }
    if rules.unverifiable_action() == Action::Deny {
        out.left_to_envlink.push(
            "reserved.unverifiableEnvFrom: deny (whether an envFrom can be read depends on the \
             cluster)"
                .into(),
        );
    }
    out.left_to_envlink.push(
        "envFrom ConfigMap keys (reserved.checkConfigMaps), DRA device classes \
         (ResourceClaims), and updates of workloads (only what an update adds is refused; \
         the Pods they create are checked here)"
            .into(),
    );
    for rule in rules.rules() {
        if let Some(v) = rule_validation(rule, &mut out.left_to_envlink) {
            out.validations.push(v);
        }
    }
    out
}

/// The check of one rule, or `None` when nothing of it is a `deny` the object decides.
fn rule_validation(rule: &CompiledRule, notes: &mut Vec<String>) -> Option<Validation> {
    let env_denies = match rule.action {
        Action::Deny => "true",
        // envlink strips it from Pods and refuses a Pod still carrying it at the final check;
        // in a workload template it only warns.
        Action::Strip => "variables.isPod",
        Action::Warn => return None,
    };
    let applies = container_applies(rule, notes)?;
    let name_tests = env_name_tests(rule, notes);
    // `envFrom` prefixes that make every key reserved, whatever the source holds.
    let prefix_tests: Vec<String> = rule
        .prefixes()
        .iter()
        .map(|p| format!("f.prefix.startsWith({})", cel_string(p)))
        .collect();
    if name_tests.is_empty() && prefix_tests.is_empty() {
        return None;
    }
    let env_match = if name_tests.is_empty() {
        String::from("false")
    } else {
        name_tests.join(" || ")
    };
    let env_hit = format!("({env_denies} && has(c.env) && c.env.exists(e, {env_match}))");
    let env_from_pred = format!(
        "((has(f.configMapRef) && has(f.configMapRef.name)) || (has(f.secretRef) && \
         has(f.secretRef.name))) && has(f.prefix) && ({})",
        if prefix_tests.is_empty() {
            String::from("false")
        } else {
            prefix_tests.join(" || ")
        }
    );
    let env_from_hit = if prefix_tests.is_empty() {
        String::from("false")
    } else {
        format!("(has(c.envFrom) && c.envFrom.exists(f, {env_from_pred}))")
    };
    let violates = format!("({applies} && ({env_hit} || {env_from_hit}))");
    let expression = format!("!variables.allContainers.exists(c, {violates})");
    let resource = resource_text(rule);
    let tail = format!(
        " reserved for the device plugin of {resource} (rule {}): a value set here silently \
         replaces the plugin's (enforced by the API server: ValidatingAdmissionPolicy \
         {POLICY_NAME})",
        rule.name
    );
    let message = format!("envlink: a container sets a variable{tail}");
    let env_names = if prefix_tests.is_empty() && name_tests.is_empty() {
        String::from("[]")
    } else {
        format!(
            "({env_denies} && has(c.env) ? c.env.filter(e, {env_match}).map(e, e.name) : []) + \
             (has(c.envFrom) ? c.envFrom.filter(f, {env_from_pred}).map(f, 'envFrom prefix ' + \
             f.prefix + '*') : [])"
        )
    };
    let message_expression = format!(
        "'envlink: ' + variables.allContainers.filter(c, {violates}).map(c, 'container \"' + \
         c.name + '\": ' + ({env_names}).join(', ')).join('; ') + {}",
        cel_string(&format!(" is{tail}"))
    );
    Some(Validation {
        rule: rule.name.clone(),
        expression,
        message,
        message_expression,
    })
}

/// The CEL test of whether rule applies to container `c`; `None` when no resource glob of a
/// The devices a rule reserves for, as its message names them.
fn resource_text(rule: &CompiledRule) -> String {
    match rule.scope {
        Scope::Requesting => rule.resource_globs.join(", "),
        Scope::All if rule.resource_globs.is_empty() => {
            "any device (reserved in every container)".to_string()
        }
        Scope::All => format!(
            "{} (reserved in every container)",
            rule.resource_globs.join(", ")
        ),
    }
}

/// `requesting` rule can be written as a regex (noted in `notes`).
fn container_applies(rule: &CompiledRule, notes: &mut Vec<String>) -> Option<String> {
    match rule.scope {
        Scope::All => Some(String::from("true")),
        Scope::Requesting => {
            let mut regexes = Vec::new();
            for glob in &rule.resource_globs {
                match glob_regex(glob) {
                    Some(r) => regexes.push(r),
                    None => notes.push(format!(
                        "rule {}: resource glob `{glob}` (no exact regex for it here)",
                        rule.name
                    )),
                }
            }
            if regexes.is_empty() {
                notes.push(format!(
                    "rule {}: it applies through resources the policy cannot match",
                    rule.name
                ));
                return None;
            }
            let re = cel_string(&format!("^(?:{})$", regexes.join("|")));
            Some(format!(
                "(has(c.resources) && ((has(c.resources.requests) && \
                 c.resources.requests.exists(r, r.matches({re}))) || (has(c.resources.limits) \
                 && c.resources.limits.exists(r, r.matches({re})))))"
            ))
        }
    }
}

/// The CEL tests of an env entry `e`'s name: exact names, prefixes, and the patterns RE2 can
/// express (the others noted in `notes`).
fn env_name_tests(rule: &CompiledRule, notes: &mut Vec<String>) -> Vec<String> {
    let mut name_tests = Vec::new();
    if !rule.names().is_empty() {
        let names: Vec<&str> = rule.names().iter().map(String::as_str).collect();
        name_tests.push(format!("e.name in {}", cel_list(&names)));
    }
    for p in rule.prefixes() {
        name_tests.push(format!("e.name.startsWith({})", cel_string(p)));
    }
    for (pattern, some_prefix_reserves_every_key) in rule.patterns() {
        match re2_compatible(pattern) {
            Ok(()) => {
                name_tests.push(format!(
                    "e.name.matches({})",
                    cel_string(&format!("^(?:{pattern})$"))
                ));
                if some_prefix_reserves_every_key {
                    notes.push(format!(
                        "rule {}: envFrom prefixes after which every key matches `{pattern}`",
                        rule.name
                    ));
                }
            }
            Err(why) => notes.push(format!("rule {}: pattern `{pattern}` ({why})", rule.name)),
        }
    }
    name_tests
}

impl NativePolicy {
    /// The `ValidatingAdmissionPolicy` object.
    pub fn policy_object(&self) -> Value {
        let resource_rule = |group: &str, version: &str, ops: &[&str], resources: &[&str]| {
            json!({
                "apiGroups": [group],
                "apiVersions": [version],
                "operations": ops,
                "resources": resources,
            })
        };
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {
                "name": POLICY_NAME,
                "labels": {"app.kubernetes.io/name": "envlink"},
            },
            "spec": {
                // An expression that cannot be evaluated (a Pod far past the CEL cost limit)
                // refuses rather than admits: the policy exists for when envlink cannot answer.
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        resource_rule("", "v1", &["CREATE"], &["pods"]),
                        resource_rule("", "v1", &["UPDATE"], &["pods/ephemeralcontainers"]),
                        resource_rule(
                            "apps",
                            "v1",
                            &["CREATE"],
                            &["deployments", "statefulsets", "daemonsets", "replicasets"],
                        ),
                        resource_rule("batch", "v1", &["CREATE"], &["jobs", "cronjobs"]),
                    ],
                },
                "matchConditions": self.match_conditions.iter().map(|(name, expression)| {
                    json!({"name": name, "expression": expression})
                }).collect::<Vec<_>>(),
                "variables": self.variables.iter().map(|(name, expression)| {
                    json!({"name": name, "expression": expression})
                }).collect::<Vec<_>>(),
                "validations": self.validations.iter().map(|v| json!({
                    "expression": v.expression,
                    "message": v.message,
                    "messageExpression": v.message_expression,
                    "reason": "Forbidden",
                })).collect::<Vec<_>>(),
            },
        })
    }

    /// The `ValidatingAdmissionPolicyBinding` (every namespace; `Deny`).
    pub fn binding_object(&self) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {
                "name": POLICY_NAME,
                "labels": {"app.kubernetes.io/name": "envlink"},
            },
            "spec": {
                "policyName": POLICY_NAME,
                "validationActions": ["Deny"],
            },
        })
    }

    /// The policy (and the binding, when asked) as YAML documents, after a comment that says
    /// what is left to envlink.
    pub fn to_yaml(&self, binding: bool) -> Result<String, PolicyError> {
        let mut out = String::from(
            "# Generated by `envlink policy`: the reserved-variable `deny` rules that the object\n\
             # alone decides, enforced by the API server itself (Kubernetes 1.30+), so they hold\n\
             # while envlink is down. Left to envlink:\n",
        );
        for note in &self.left_to_envlink {
            out.push_str(&format!("# - {note}\n"));
        }
        let mut docs = vec![self.policy_object()];
        if binding {
            docs.push(self.binding_object());
        }
        for doc in docs {
            out.push_str("---\n");
            let text =
                serde_saphyr::to_string(&doc).map_err(|e| PolicyError::Yaml(e.to_string()))?;
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_segment_regexes_or_are_left_out() {
        assert_eq!(
            glob_regex("nvidia.com/*").as_deref(),
            Some("nvidia\\.com/[^/]*")
        );
        assert_eq!(
            glob_regex("huawei.com/Ascend*").as_deref(),
            Some("huawei\\.com/Ascend[^/]*")
        );
        assert_eq!(glob_regex("a?b").as_deref(), Some("a[^/]b"));
        for unsupported in ["**", "x/{a,b}", "[ab]", "a\\*"] {
            assert_eq!(glob_regex(unsupported), None, "{unsupported}");
        }
        let re = regex::Regex::new(&format!(
            "^(?:{})$",
            glob_regex("nvidia.com/*").expect("glob")
        ))
        .expect("regex");
        assert!(re.is_match("nvidia.com/gpu"));
        assert!(!re.is_match("nvidia.com.evil/x/y"));
        assert!(!re.is_match("nvidiaXcom/gpu"));
    }

    #[test]
    fn patterns_rust_and_re2_read_differently_are_refused() {
        for ok in [
            "QAT[0-9]+",
            "FOO_.*",
            "(?i)abc",
            "(?P<x>a)|b",
            "[[:alpha:]]+",
            "\\d{2,5}",
        ] {
            assert!(re2_compatible(ok).is_ok(), "{ok}");
        }
        for bad in [
            "(?x)a b",
            "\\p{Greek}",
            "[a-z&&[^x]]",
            "(?<x>a)",
            "\\u0041",
            "a{1001}",
            "[[a]]",
            "\\<a",
        ] {
            assert!(re2_compatible(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cel_strings_are_escaped() {
        assert_eq!(cel_string("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn default_rules_generate_one_validation_per_deny_rule() {
        let policy = crate::config::Policy::default();
        let native = generate(&policy.rules);
        let names: Vec<&str> = native.validations.iter().map(|v| v.rule.as_str()).collect();
        assert!(names.contains(&"nvidia-visible-devices"), "{names:?}");
        assert!(names.contains(&"sriov"), "{names:?}");
        assert_eq!(names.len(), policy.rules.rules().len());
        assert!(native.match_conditions.is_empty());
        let yaml = native.to_yaml(true).expect("yaml");
        assert!(
            yaml.contains("kind: ValidatingAdmissionPolicyBinding"),
            "{yaml}"
        );
        assert!(yaml.contains("NVIDIA_VISIBLE_DEVICES"), "{yaml}");

        let warn = crate::config::Policy::from_yaml(
            "reserved:\n  defaultAction: warn\n  exemptNamespaces: [b, a]\n  rules:\n    \
             - {name: odd, scope: all, patterns: ['(?x)A B', 'OK[0-9]']}\n",
            "t",
        )
        .expect("policy");
        let native = generate(&warn.rules);
        assert_eq!(native.validations.len(), 1);
        assert_eq!(native.validations[0].rule, "odd");
        assert!(!native.validations[0].expression.contains("(?x)"));
        assert!(
            native
                .left_to_envlink
                .iter()
                .any(|n| n.contains("pattern `(?x)A B`")),
            "{:?}",
            native.left_to_envlink
        );
        assert_eq!(
            native.match_conditions[0].1,
            "!(request.namespace in ['a', 'b'])"
        );
    }
}
