//! Reserved device-plugin variables: the rules and their evaluation (pure, no I/O).
//!
//! A device plugin hands the kubelet variables for the containers that get its device; the
//! kubelet puts them first and the container's own `env` after, and the runtime keeps the last
//! value. So a user's `NVIDIA_VISIBLE_DEVICES` silently beats the plugin's. These rules find
//! such names in a container before it exists.

use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};
use hashbrown::{HashMap, HashSet};
use regex::RegexSet;
use regex_automata::Anchored;
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;

use serde::Deserialize;

use crate::podshape::ContainerKind;

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
    /// A pattern does not parse on its own: wrapped for whole-name matching it could change
    /// meaning (`QAT[0-9]+)|(?:FOO` would match any name containing `FOO`).
    #[error(
        "rule `{rule}`: pattern `{pattern}` is not a regular expression on its own \
         (patterns are matched against the whole name, each one separately): {message}"
    )]
    PatternAlone {
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
    /// A `requesting` rule without resources or device classes could never apply.
    #[error(
        "rule `{rule}`: scope `requesting` needs at least one entry in `resources` or \
         `deviceClasses`"
    )]
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

/// What an `envFrom` gets whose keys envlink cannot read (`reserved.unverifiableEnvFrom` in the
/// policy file).
///
/// `warn` by default: the empty prefix begins every name, and two built-in rules reserve
/// names in every container, so `deny` would refuse every Pod that reads a Secret through an
/// unprefixed `envFrom` (SECURITY.md argues it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UnverifiableEnvFrom {
    /// Admit, with a warning naming the rule and the names the `envFrom` could set.
    #[default]
    Warn,
    /// Refuse the Pod (where the rule itself would refuse or strip).
    Deny,
}

/// One reserved-variable rule as written: in the policy file or by a built-in pack.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    /// A short name used in messages.
    pub name: String,
    /// Resource-name globs (`nvidia.com/*`); with scope `requesting` a container must request
    /// or limit one of them for the rule to apply.
    #[serde(default)]
    pub resources: Vec<String>,
    /// DRA device-class globs (`gpu.nvidia.com`): a container that consumes a ResourceClaim
    /// whose requests name a matching class is in the rule's scope too.
    #[serde(default)]
    pub device_classes: Vec<String>,
    /// Exact variable names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Variable-name prefixes.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Regular expressions that must match the whole name.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Which containers the rule applies to.
    #[serde(default)]
    pub scope: Scope,
    /// What happens to a container that sets such a variable.
    #[serde(default)]
    pub action: Action,
    /// The action where the rule applies through a DRA device class only. Default `warn`:
    /// CDI applies the device's env after the Pod's, so the user's value is ignored rather
    /// than winning (see the README).
    #[serde(default)]
    pub device_class_action: Option<Action>,
}

/// See [`RuleConfig::scope`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Containers that request or limit a matching resource.
    #[default]
    Requesting,
    /// Every container, init container and ephemeral container.
    All,
}

/// See [`RuleConfig::action`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Admit with a warning.
    Warn,
    /// Remove the variable by patch, with a warning.
    Strip,
    /// Refuse the Pod.
    #[default]
    Deny,
}

impl Action {
    /// The lower-case name used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Strip => "strip",
            Action::Deny => "deny",
        }
    }
}

/// Most findings listed for ConfigMap keys in one evaluation. Past it, each further
/// (ConfigMap, prefix) pair of a container still gets one finding carrying its strictest action
/// (so the decision never changes), and the rest is only counted
/// ([`Evaluation::omitted`]): a Pod author can make the product of `envFrom` prefixes and
/// ConfigMap keys far larger than anything worth listing.
pub const MAX_LISTED_KEY_FINDINGS: usize = 1_000;

/// How many possible names an unverifiable-`envFrom` message lists before "and N more".
const MAX_POSSIBLE_LISTED: usize = 8;

/// Upper bound on the memory of one pattern's DFA (and of building it). Reserved names are
/// short and their patterns simple (`QAT[0-9]+` needs a few hundred bytes); a pattern over the
/// bound is refused rather than analysed approximately.
const PATTERN_DFA_LIMIT: usize = 4 << 20;

/// Whether a byte can appear in a ConfigMap or Secret key: the API server validates keys
/// against `[-._a-zA-Z0-9]+`, so only those continue an `envFrom` prefix.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// What a DFA state allows next, over non-empty strings of key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StateFacts {
    /// Some key completes a match from here: a prefix ending here *can begin* a reserved name.
    can_continue: bool,
    /// Every key completes a match: a prefix ending here is reserved *by itself*.
    always: bool,
}

/// Assumed for a state the analysis does not know (cannot happen for states reached from the
/// start; kept conservative anyway): a name may follow, and not every name does.
const UNKNOWN_STATE: StateFacts = StateFacts {
    can_continue: true,
    always: false,
};

/// One pattern as an anchored DFA, with [`StateFacts`] for every state a prefix can reach.
///
/// The regex crate answers "does this name match"; an `envFrom` prefix needs "can a key
/// complete this prefix to a match" and "does every key". Both are reachability questions
/// on the DFA, answered once per state when the policy is compiled.
#[derive(Debug, Clone)]
struct PatternDfa {
    dfa: Arc<dense::DFA<Vec<u32>>>,
    start: StateID,
    facts: Arc<HashMap<StateID, StateFacts>>,
}

impl PatternDfa {
    fn new(rule: &str, pattern: &str) -> Result<Self, RuleError> {
        let error = |message: String| RuleError::Pattern {
            rule: rule.to_string(),
            pattern: pattern.to_string(),
            message,
        };
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    // Env names are ASCII; a `\b` then needs no Unicode tables (a non-ASCII
                    // byte makes the DFA give up, handled as "unknown" below).
                    .unicode_word_boundary(true)
                    .dfa_size_limit(Some(PATTERN_DFA_LIMIT))
                    .determinize_size_limit(Some(PATTERN_DFA_LIMIT)),
            )
            .build(&anchored(pattern))
            .map_err(|e| error(format!("cannot be analysed for envFrom prefixes: {e}")))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| error(format!("has no anchored start: {e}")))?;

        // Every state some prefix (any bytes) can reach from the start.
        let mut index: HashMap<StateID, usize> = HashMap::new();
        let mut states = vec![start];
        index.insert(start, 0);
        let mut at = 0;
        while at < states.len() {
            let from = states[at];
            at += 1;
            for byte in 0..=u8::MAX {
                let to = dfa.next_state(from, byte);
                if let hashbrown::hash_map::Entry::Vacant(slot) = index.entry(to) {
                    slot.insert(states.len());
                    states.push(to);
                }
            }
        }
        // Edges over key bytes only (what a key can add after the prefix), and their reverse.
        let key_bytes: Vec<u8> = (0..=u8::MAX).filter(|&b| is_key_byte(b)).collect();
        let n = states.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::with_capacity(key_bytes.len()); n];
        let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, &state) in states.iter().enumerate() {
            for &byte in &key_bytes {
                let to = dfa.next_state(state, byte);
                // Reached from the start, so indexed; `unwrap_or` only keeps this total.
                let j = index.get(&to).copied().unwrap_or(i);
                edges[i].push(j);
                reverse[j].push(i);
            }
        }
        // A quit state (non-ASCII under `\b`) could go either way: it counts as accepting for
        // "can continue" and as rejecting for "always", the conservative side of each.
        let quit: Vec<bool> = states.iter().map(|&s| dfa.is_quit_state(s)).collect();
        let accept: Vec<bool> = states
            .iter()
            .map(|&s| dfa.is_match_state(dfa.next_eoi_state(s)))
            .collect();
        // co_reach: a match is reachable in zero or more key bytes.
        let co_reach = backward_closure(&reverse, |i| accept[i] || quit[i]);
        // bad: a non-match is reachable in zero or more key bytes.
        let bad = backward_closure(&reverse, |i| !accept[i] || quit[i]);
        let facts = states
            .iter()
            .enumerate()
            .map(|(i, &state)| {
                let facts = StateFacts {
                    can_continue: edges[i].iter().any(|&j| co_reach[j]),
                    always: edges[i].iter().all(|&j| !bad[j]),
                };
                (state, facts)
            })
            .collect();
        Ok(Self {
            dfa: Arc::new(dfa),
            start,
            facts: Arc::new(facts),
        })
    }

    /// The state after reading `prefix` from the start.
    fn after(&self, prefix: &str) -> StateID {
        prefix
            .bytes()
            .fold(self.start, |state, byte| self.dfa.next_state(state, byte))
    }

    fn facts(&self, state: StateID) -> StateFacts {
        self.facts.get(&state).copied().unwrap_or(UNKNOWN_STATE)
    }

    /// Whether `key` read from `state` ends in a match.
    fn completes(&self, state: StateID, key: &str) -> bool {
        let mut state = state;
        for byte in key.bytes() {
            state = self.dfa.next_state(state, byte);
            if self.dfa.is_dead_state(state) {
                return false;
            }
            if self.dfa.is_quit_state(state) {
                // Keys are ASCII, so this does not happen; flagging is the safe side.
                return true;
            }
        }
        self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }
}

/// The states from which a state satisfying `seed` is reachable (zero or more steps), given
/// the reverse edges: one backward breadth-first pass, linear in the edges.
fn backward_closure(reverse: &[Vec<usize>], seed: impl Fn(usize) -> bool) -> Vec<bool> {
    let mut marked: Vec<bool> = (0..reverse.len()).map(&seed).collect();
    let mut queue: Vec<usize> = (0..reverse.len()).filter(|&i| marked[i]).collect();
    while let Some(i) = queue.pop() {
        for &j in &reverse[i] {
            if !marked[j] {
                marked[j] = true;
                queue.push(j);
            }
        }
    }
    marked
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule's name.
    pub name: String,
    /// The resource globs as written (for messages).
    pub resource_globs: Vec<String>,
    names: HashSet<String>,
    /// The names again, sorted, so messages and `envFrom` checks list them in a stable order.
    sorted_names: Vec<String>,
    prefixes: Vec<String>,
    patterns: Option<RegexSet>,
    /// Each pattern as written, with its DFA (for `envFrom` prefixes).
    pattern_dfas: Vec<(String, PatternDfa)>,
    /// Which containers it applies to.
    pub scope: Scope,
    /// What it does.
    pub action: Action,
    /// The DRA device-class globs as written (for messages).
    pub device_class_globs: Vec<String>,
    device_classes: Option<GlobSet>,
    /// What it does where it applies only through a DRA device class (the device's CDI env
    /// wins there: `warn` unless the rule says otherwise).
    pub device_class_action: Action,
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
        if rule.scope == Scope::Requesting
            && rule.resources.is_empty()
            && rule.device_classes.is_empty()
        {
            return Err(RuleError::NoResources { rule: name });
        }
        for (what, list) in [
            ("names", &rule.names),
            ("prefixes", &rule.prefixes),
            ("patterns", &rule.patterns),
            ("resources", &rule.resources),
            ("deviceClasses", &rule.device_classes),
        ] {
            if list.iter().any(|s| s.is_empty()) {
                return Err(RuleError::EmptyEntry { rule: name, what });
            }
        }
        // Globs are checked here, one by one so the message names the broken one; the rules
        // match resources through one combined set (`CompiledRules::for_container`).
        for glob in &rule.resources {
            resource_glob(&name, glob)?;
        }
        let device_classes = if rule.device_classes.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for glob in &rule.device_classes {
                set.add(resource_glob(&name, glob)?);
            }
            Some(set.build().map_err(|e| RuleError::Glob {
                rule: name.clone(),
                glob: rule.device_classes.join(", "),
                message: e.to_string(),
            })?)
        };
        // Each pattern must parse *on its own* before it is wrapped in `^(?:…)$`: otherwise
        // `QAT[0-9]+)|(?:FOO` closes the wrapper's group and matches any name containing FOO.
        for pattern in &rule.patterns {
            regex_syntax::Parser::new()
                .parse(pattern)
                .map_err(|e| RuleError::PatternAlone {
                    rule: name.clone(),
                    pattern: pattern.clone(),
                    message: syntax_message(&e),
                })?;
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
        let pattern_dfas = rule
            .patterns
            .iter()
            .map(|p| PatternDfa::new(&name, p).map(|dfa| (p.clone(), dfa)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sorted_names = rule.names.clone();
        sorted_names.sort_unstable();
        sorted_names.dedup();
        Ok(Self {
            name,
            resource_globs: rule.resources.clone(),
            names: rule.names.iter().cloned().collect(),
            sorted_names,
            prefixes: rule.prefixes.clone(),
            patterns,
            pattern_dfas,
            scope: rule.scope,
            action: rule.action,
            device_class_globs: rule.device_classes.clone(),
            device_classes,
            device_class_action: rule.device_class_action.unwrap_or(Action::Warn),
        })
    }

    /// Its exact names, sorted.
    pub fn names(&self) -> &[String] {
        &self.sorted_names
    }

    /// Its prefixes, as written.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Its patterns, as written, each with whether some `envFrom` prefix makes *every* key a
    /// match (`FOO_.*` after `FOO_`): what only the DFA analysis can tell.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.pattern_dfas
            .iter()
            .map(|(p, dfa)| (p.as_str(), dfa.facts.values().any(|f| f.always)))
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

    /// The action on something `envFrom` brings in: a key inside a ConfigMap or Secret cannot
    /// be removed by patching the Pod, so `strip` becomes `deny`.
    /// Why `prefix` followed by *any* key is a name this rule reserves, if it is.
    fn reserves_whole_prefix(&self, prefix: &str) -> Option<String> {
        if let Some(p) = self
            .prefixes
            .iter()
            .find(|p| prefix.starts_with(p.as_str()))
        {
            return Some(format!("it begins with the reserved prefix {p}"));
        }
        self.pattern_dfas
            .iter()
            .find(|(_, dfa)| dfa.facts(dfa.after(prefix)).always)
            .map(|(pattern, _)| format!("every name it begins matches the pattern `{pattern}`"))
    }

    /// The reserved names (or name shapes) that `prefix` followed by some key would give.
    fn possible_names(&self, prefix: &str) -> Vec<String> {
        // The rest after the prefix must be spellable as a key.
        let rest_is_key = |full: &str| {
            full.len() > prefix.len()
                && full.starts_with(prefix)
                && full.as_bytes()[prefix.len()..]
                    .iter()
                    .all(|&b| is_key_byte(b))
        };
        let mut out: Vec<String> = self
            .sorted_names
            .iter()
            .filter(|n| rest_is_key(n))
            .cloned()
            .collect();
        out.extend(
            self.prefixes
                .iter()
                .filter(|p| prefix.starts_with(p.as_str()) || rest_is_key(p))
                .map(|p| format!("{p}*")),
        );
        out.extend(
            self.pattern_dfas
                .iter()
                .filter(|(_, dfa)| dfa.facts(dfa.after(prefix)).can_continue)
                .map(|(pattern, _)| format!("names matching `{pattern}`")),
        );
        out
    }
}

/// A `strip` on something `envFrom` brings in becomes `deny`: the key cannot be patched away.
fn env_from(action: Action) -> Action {
    match action {
        Action::Strip => Action::Deny,
        other => other,
    }
}

/// Checks one resource glob. `*` stays within one path segment: `nvidia.com/*` must not match
/// `nvidia.com.evil/x/y`.
fn resource_glob(rule: &str, glob: &str) -> Result<globset::Glob, RuleError> {
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| RuleError::Glob {
            rule: rule.to_string(),
            glob: glob.to_string(),
            message: e.kind().to_string(),
        })
}

/// The parser's complaint in one line (its `Display` draws the pattern with a caret over
/// several lines, which a configuration error message should not).
fn syntax_message(error: &regex_syntax::Error) -> String {
    match error {
        regex_syntax::Error::Parse(e) => e.kind().to_string(),
        regex_syntax::Error::Translate(e) => e.kind().to_string(),
        other => other.to_string(),
    }
}

/// Patterns match the whole variable name, not a substring. Only for patterns that parsed on
/// their own (see `CompiledRule::compile`).
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

#[derive(Debug, Clone, Copy)]
enum Applies<'a> {
    Requested(&'a str),
    Everywhere,
    /// Through a DRA claim: the index in [`ContainerRules::claimed`].
    Claimed(usize),
}

/// All rules of a policy, compiled, plus the exempt namespaces.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    rules: Vec<CompiledRule>,
    exempt_namespaces: HashSet<String>,
    /// Every rule's resource globs in one set, and the rule of each glob: one match per
    /// distinct resource of a container tells which rules apply to it.
    globs: GlobSet,
    glob_rule: Vec<usize>,
    /// `globs`' answer for each of [`CORE_RESOURCES`], computed once: nearly every container
    /// requests only these, and a `GlobSet` match takes a regex cache from a shared pool per
    /// resource (on a serving thread, which does not own the pool, its slow path: ~1 % of
    /// an S1 review's CPU under load, BENCHMARKS.md).
    core_resource_hits: Vec<(&'static str, Vec<usize>)>,
    /// Every rule's names, prefixes and patterns in one matcher (shared by clones, so the
    /// catalog can tell whether its per-Service facts were computed with these rules).
    names: Arc<NameFilter>,
    /// What an `envFrom` gets whose keys envlink cannot read and whose prefix can begin a
    /// reserved name (`reserved.unverifiableEnvFrom`).
    unverifiable: Action,
}

/// Every rule's names, prefixes and patterns in one matcher: one test tells whether a name
/// can be reserved in some container at all, before any rule-by-rule work (hundreds of
/// injected names per Pod, almost none reserved).
#[derive(Debug)]
pub struct NameFilter {
    any_name: HashSet<String>,
    any_prefix: Vec<String>,
    any_pattern: Option<RegexSet>,
    /// Literals one of which begins every name some pattern matches, when the patterns say
    /// (`None`: no such finite set, every name goes to the regex). A name that begins with
    /// none of them is settled without the regex: the device plugins' patterns all begin
    /// with a literal (`CUDA_DEVICE_MEMORY_LIMIT_[0-9]+`), and a match takes a cache from
    /// the regex's pool — its slow path on a serving thread, which does not own the pool
    /// (~1.5 % of an S1 review's CPU under load, BENCHMARKS.md).
    pattern_starts: Option<Vec<Vec<u8>>>,
}

impl NameFilter {
    fn new(configs: &[RuleConfig]) -> Result<Self, RuleError> {
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
        let pattern_starts = pattern_starts(
            configs
                .iter()
                .flat_map(|r| r.patterns.iter().map(String::as_str)),
        );
        let any_pattern = if patterns.is_empty() {
            None
        } else {
            // Each pattern compiled alone before this, so together they compile too.
            Some(RegexSet::new(&patterns).map_err(|e| RuleError::Pattern {
                rule: "(all rules)".into(),
                pattern: patterns.join(", "),
                message: e.to_string(),
            })?)
        };
        Ok(Self {
            any_name,
            any_prefix,
            any_pattern,
            pattern_starts,
        })
    }

    /// Whether `variable` begins with a literal some pattern's matches begin with (`true`
    /// when the patterns give no such literals): `false` means no pattern matches it.
    fn may_match_a_pattern(&self, variable: &str) -> bool {
        self.pattern_starts.as_ref().is_none_or(|starts| {
            starts
                .iter()
                .any(|start| variable.as_bytes().starts_with(start))
        })
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
                .is_some_and(|set| self.may_match_a_pattern(variable) && set.is_match(variable))
    }
}

/// The literals one of which begins every string that matches one of `patterns` (each
/// matched whole, as the rules anchor them), or `None` when some pattern has no finite set
/// of them (`.*FOO`, a class too wide to list).
fn pattern_starts<'p>(patterns: impl Iterator<Item = &'p str>) -> Option<Vec<Vec<u8>>> {
    let mut starts = Vec::new();
    for pattern in patterns {
        // Parsed as the regex crate parses it (same defaults); a pattern that does not parse
        // is refused when the rules compile, so it never reaches a review.
        let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
        // A class of more than a few characters ends a literal there (`QAT[0-9]+` gives
        // `QAT`, not ten literals); a case-insensitive letter (two) is still spelled out.
        let seq = regex_syntax::hir::literal::Extractor::new()
            .kind(regex_syntax::hir::literal::ExtractKind::Prefix)
            .limit_class(4)
            .extract(&hir);
        // Exact or cut short, each literal begins every match it stands for.
        starts.extend(seq.literals()?.iter().map(|l| l.as_bytes().to_vec()));
    }
    starts.sort();
    starts.dedup();
    Some(starts)
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
    /// Resource names in its requests and limits (duplicates allowed; the first one a rule
    /// matches is the one messages name).
    pub resources: Vec<&'a str>,
    /// Its `env` names, in order.
    pub env: Vec<&'a str>,
    /// Its `envFrom` sources, in order.
    pub env_from: Vec<EnvFromSource<'a>>,
    /// The Pod's DRA claims it consumes (`resources.claims`), resolved to where each comes
    /// from (`spec.resourceClaims`).
    pub claims: Vec<ClaimUse<'a>>,
}

/// One DRA claim a container consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimUse<'a> {
    /// The entry's name in `spec.resourceClaims` (what `resources.claims[].name` says).
    pub name: &'a str,
    /// Where the claim comes from; `None` when the Pod has no such entry.
    pub source: Option<ClaimSource<'a>>,
}

/// Where a Pod's claim comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimSource<'a> {
    /// `resourceClaimName`: an existing ResourceClaim.
    Claim(&'a str),
    /// `resourceClaimTemplateName`: a claim made from this template for the Pod.
    Template(&'a str),
}

/// One `envFrom` entry. The API server accepts exactly one of the two references; a review
/// can arrive before that validation, so each present one is checked.
#[derive(Debug, Clone, Default)]
pub struct EnvFromSource<'a> {
    /// The ConfigMap it reads, if it is a ConfigMap reference.
    pub config_map: Option<&'a str>,
    /// The prefix put in front of each key.
    pub prefix: &'a str,
    /// The Secret it reads, if it is a Secret reference (envlink never reads Secrets).
    pub secret: Option<&'a str>,
}

impl<'a> EnvFromSource<'a> {
    fn references(&self) -> impl Iterator<Item = (EnvFromKind, &'a str)> {
        let config_map = self.config_map.map(|n| (EnvFromKind::ConfigMap, n));
        let secret = self.secret.map(|n| (EnvFromKind::Secret, n));
        config_map.into_iter().chain(secret)
    }
}

/// The kind of object an `envFrom` entry reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvFromKind {
    /// `configMapRef`.
    ConfigMap,
    /// `secretRef`.
    Secret,
}

/// The object an `envFrom` entry reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFromRef {
    /// ConfigMap or Secret.
    pub kind: EnvFromKind,
    /// Its name (in the Pod's namespace).
    pub name: String,
}

impl std::fmt::Display for EnvFromRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            EnvFromKind::ConfigMap => "ConfigMap",
            EnvFromKind::Secret => "Secret",
        };
        write!(f, "{kind} {:?}", self.name)
    }
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
    /// `envFrom[index]`'s prefix alone makes every key of its source a reserved name,
    /// whatever the source holds (now or later). The finding's variable is `PREFIX*`.
    EnvFromPrefix {
        /// Index in `envFrom`.
        index: usize,
        /// The ConfigMap or Secret.
        source: EnvFromRef,
        /// The prefix.
        prefix: String,
        /// Why the prefix alone is reserved (the rule's prefix or pattern).
        reason: String,
    },
    /// `envFrom[index]` reads a source envlink cannot read (a Secret, or a ConfigMap whose
    /// keys it does not know), and its prefix can begin a reserved name. The finding's
    /// variable is `PREFIX*`; its action is `reserved.unverifiableEnvFrom` (never stricter
    /// than the rule's own).
    EnvFromUnverifiable {
        /// Index in `envFrom`.
        index: usize,
        /// The ConfigMap or Secret.
        source: EnvFromRef,
        /// The prefix.
        prefix: String,
        /// The reserved names it could give, each with its rule (`NVIDIA_VISIBLE_DEVICES
        /// (rule nvidia-visible-devices)`, `PCIDEVICE_* (rule sriov)`).
        possible: Vec<String>,
    },
}

/// Where a finding is shown, which decides how a `strip` is worded: only the mutating webhook
/// removes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageContext {
    /// The mutating webhook: the entry was removed by its patch.
    Mutation,
    /// The validating webhook on a Pod: the entry is still there at the final check (changed
    /// after envlink's mutation, or that did not run).
    FinalCheck,
    /// The validating webhook on a workload's Pod template: each Pod will lose the entry.
    Template,
    /// The audit of an existing object: nothing is changed.
    Audit,
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
    /// The variable (`PREFIX*` for a whole `envFrom` source).
    pub variable: String,
    /// Where it comes from.
    pub origin: Origin,
    /// The rule that reserves it.
    pub rule: String,
    /// The device resource it is reserved for (or the rule's globs when reserved everywhere).
    pub resource: String,
    /// The action that applies (the strictest of all matching rules).
    pub action: Action,
    /// How the device's own value reaches the container (who wins).
    pub mechanism: Mechanism,
}

impl Finding {
    /// "for the device plugin of X" or "for the DRA device of X".
    fn owner(&self) -> String {
        match self.mechanism {
            Mechanism::DevicePlugin => format!("the device plugin of {}", self.resource),
            Mechanism::DeviceClass => format!("the {}", self.resource),
        }
    }

    /// What a value set here does.
    fn consequence(&self) -> &'static str {
        match self.mechanism {
            Mechanism::DevicePlugin => "a value set here silently replaces the plugin's",
            Mechanism::DeviceClass => {
                "the device's CDI edits are applied after the Pod's env and replace it, so a \
                 value set here is ignored"
            }
        }
    }

    /// A message that names the container, the variable and the resource, worded for where
    /// it is shown.
    pub fn message(&self, context: MessageContext) -> String {
        let verb = match (self.action, context) {
            (Action::Deny | Action::Warn, _) | (Action::Strip, MessageContext::Audit) => {
                "is reserved"
            }
            (Action::Strip, MessageContext::Mutation) => "is reserved and was removed",
            (Action::Strip, MessageContext::FinalCheck) => {
                "is reserved (action strip) and still present at the final check"
            }
            (Action::Strip, MessageContext::Template) => {
                "is reserved and will be removed from each Pod"
            }
        };
        let container = format!("{} {:?}", self.kind.noun(), self.container);
        let source = match &self.origin {
            Origin::Env(_) => String::from("env"),
            Origin::EnvFrom { config_map, .. } => format!("envFrom ConfigMap {config_map:?}"),
            Origin::EnvFromPrefix {
                source,
                prefix,
                reason,
                ..
            } => {
                return format!(
                    "{container}: envFrom prefix {prefix} makes every key of {source} a \
                     reserved name ({reason}) for {} (rule {}): {}",
                    self.owner(),
                    self.rule,
                    self.consequence(),
                );
            }
            Origin::EnvFromUnverifiable {
                source,
                prefix,
                possible,
                ..
            } => {
                let why = match source.kind {
                    EnvFromKind::Secret => "envlink never reads Secrets",
                    EnvFromKind::ConfigMap => {
                        "envlink does not know its keys: reserved.checkConfigMaps is off, or \
                         the ConfigMap does not exist (yet)"
                    }
                };
                let prefix = if prefix.is_empty() {
                    String::from("no prefix")
                } else {
                    format!("prefix {prefix}")
                };
                let mut names = possible
                    .iter()
                    .take(MAX_POSSIBLE_LISTED)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if possible.len() > MAX_POSSIBLE_LISTED {
                    names.push_str(&format!(
                        " and {} more",
                        possible.len() - MAX_POSSIBLE_LISTED
                    ));
                }
                // Each possible name carries its own rule; `self.resource` is only the
                // strictest one's, so the message does not single it out.
                return format!(
                    "{container}: envFrom {source} ({prefix}) may set a reserved variable \
                     that envlink cannot check ({why}): {names}; {}. Give the envFrom a \
                     prefix that begins no reserved name (reserved.unverifiableEnvFrom: {})",
                    match self.mechanism {
                        Mechanism::DevicePlugin =>
                            "a value set that way silently replaces the device plugin's",
                        Mechanism::DeviceClass =>
                            "a value set that way is ignored (the device's CDI edits win)",
                    },
                    self.action.as_str(),
                );
            }
        };
        format!(
            "{container}: variable {} (from {}) {} for {} (rule {}): {}",
            self.variable,
            source,
            verb,
            self.owner(),
            self.rule,
            self.consequence(),
        )
    }
}

/// What the rules look up in the cluster: the keys of a ConfigMap in the Pod's namespace, and
/// the DRA device classes of a ResourceClaim or ResourceClaimTemplate; `None` when unknown.
pub trait ConfigMapKeys {
    /// The keys of ConfigMap `name` in `namespace`.
    fn keys(&self, namespace: &str, name: &str) -> Option<Vec<String>>;

    /// The same keys, shared rather than copied (an index holding them behind an `Arc` hands
    /// out a reference: thousands of `envFrom` entries may name one big ConfigMap). Any order;
    /// the default copies [`ConfigMapKeys::keys`].
    fn shared_keys(&self, namespace: &str, name: &str) -> Option<Arc<[Box<str>]>> {
        self.keys(namespace, name)
            .map(|keys| keys.into_iter().map(String::into_boxed_str).collect())
    }

    /// The device classes a ResourceClaim (or the claims of a ResourceClaimTemplate) in
    /// `namespace` requests. The default knows none (no DRA watch).
    fn claim_device_classes(
        &self,
        _namespace: &str,
        _source: ClaimSource<'_>,
    ) -> Option<Arc<[Box<str>]>> {
        None
    }
}

/// The device classes of a container's claims, each with the claim it comes through (first
/// occurrence kept). A claim envlink does not know brings none: DRA rules warn by default, and
/// a Pod must not be refused for a claim that is still being created.
fn claimed_classes(
    namespace: &str,
    claims: &[ClaimUse<'_>],
    lookups: &dyn ConfigMapKeys,
) -> Vec<ClaimedClass> {
    // Sets, not scans: a hostile Pod may repeat claims, and each lookup is asked once.
    let mut sources: HashSet<ClaimSource<'_>> = HashSet::new();
    let mut seen: HashSet<Box<str>> = HashSet::new();
    let mut out: Vec<ClaimedClass> = Vec::new();
    for claim in claims {
        let Some(source) = claim.source else {
            continue;
        };
        if !sources.insert(source) {
            continue;
        }
        let Some(classes) = lookups.claim_device_classes(namespace, source) else {
            continue;
        };
        for class in classes.iter() {
            if seen.insert(class.clone()) {
                out.push(ClaimedClass {
                    class: class.to_string(),
                    claim: claim.name.to_string(),
                });
            }
        }
    }
    out
}

/// A lookup that never knows any ConfigMap (offline use, or the check turned off).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoConfigMaps;

impl ConfigMapKeys for NoConfigMaps {
    fn keys(&self, _namespace: &str, _name: &str) -> Option<Vec<String>> {
        None
    }
}

/// The rules as they apply to one container, computed once from its resources
/// ([`CompiledRules::for_container`]); its questions never look at the resources again.
#[derive(Debug, Clone)]
pub struct ContainerRules<'r, 'a> {
    rules: &'r CompiledRules,
    /// Per rule (same order): whether it applies here, and why.
    applies: Vec<Option<Applies<'a>>>,
    /// The container's DRA device classes, each with the Pod's claim it comes through.
    claimed: Vec<ClaimedClass>,
}

/// A DRA device class a container consumes, and the Pod-level claim that brings it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedClass {
    /// The device class (`gpu.nvidia.com`).
    pub class: String,
    /// The entry of `spec.resourceClaims` (its `name`).
    pub claim: String,
}

/// How a reserved name reaches the container, which decides who wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// A device plugin's `Allocate` env, or a hook reading the env: the user's value wins.
    DevicePlugin,
    /// A DRA device through CDI: the device's env edit replaces the user's value.
    DeviceClass,
}

/// A rule that reserves a name in a container, and the resource text for messages.
#[derive(Debug, Clone)]
pub struct Reservation<'r> {
    /// The rule (the strictest one, for [`ContainerRules::strictest`]).
    pub rule: &'r CompiledRule,
    /// The device resource, or the rule's globs when it is reserved everywhere.
    pub resource: String,
    /// The action on an `env` entry here (the rule's, or its DRA device-class action).
    pub action: Action,
    /// How the device's value reaches the container.
    pub mechanism: Mechanism,
}

impl<'r, 'a> ContainerRules<'r, 'a> {
    /// Whether any rule applies to this container at all.
    pub fn any_applies(&self) -> bool {
        self.applies.iter().any(Option::is_some)
    }

    /// Whether `variable` is reserved in this container (namespace exemptions aside).
    pub fn is_reserved(&self, variable: &str) -> bool {
        self.rules.may_be_reserved(variable)
            && self
                .applicable()
                .any(|(_, rule, _)| rule.matches_name(variable))
    }

    /// The strictest rule that reserves `variable` here (the first of equals), if any.
    pub fn strictest(&self, variable: &str) -> Option<Reservation<'r>> {
        if !self.rules.may_be_reserved(variable) {
            return None;
        }
        self.strictest_by(|i, rule| rule.matches_name(variable).then(|| self.action_of(i)))
            .map(|(i, _)| self.reservation(i))
    }

    /// The action of rule `i` on an `env` entry in this container.
    fn action_of(&self, i: usize) -> Action {
        let rule = &self.rules.rules[i];
        match self.applies[i] {
            Some(Applies::Claimed(_)) => rule.device_class_action,
            _ => rule.action,
        }
    }

    /// The action of rule `i` on what an `envFrom` brings in.
    fn env_from_action_of(&self, i: usize) -> Action {
        env_from(self.action_of(i))
    }

    /// The rules that apply here, with their index and why.
    fn applicable(&self) -> impl Iterator<Item = (usize, &'r CompiledRule, Applies<'a>)> + '_ {
        let rules = self.rules;
        self.applies
            .iter()
            .enumerate()
            .filter_map(move |(i, a)| a.map(|a| (i, &rules.rules[i], a)))
    }

    /// The applicable rule with the strictest action given by `action` (`None`: the rule does
    /// not count), the first of equals.
    fn strictest_by(
        &self,
        mut action: impl FnMut(usize, &'r CompiledRule) -> Option<Action>,
    ) -> Option<(usize, Action)> {
        let mut best: Option<(usize, Action)> = None;
        for (i, rule, _) in self.applicable() {
            if let Some(a) = action(i, rule)
                && best.is_none_or(|(_, b)| a > b)
            {
                best = Some((i, a));
            }
        }
        best
    }

    fn reservation(&self, rule_index: usize) -> Reservation<'r> {
        let rule = &self.rules.rules[rule_index];
        let mut mechanism = Mechanism::DevicePlugin;
        let resource = match self.applies[rule_index] {
            Some(Applies::Requested(r)) => r.to_string(),
            Some(Applies::Claimed(k)) => {
                mechanism = Mechanism::DeviceClass;
                match self.claimed.get(k) {
                    Some(c) => format!("DRA device class {} (claim {:?})", c.class, c.claim),
                    None => "a DRA device class".to_string(),
                }
            }
            _ if rule.resource_globs.is_empty() => {
                "any device (reserved in every container)".to_string()
            }
            _ => format!(
                "{} (reserved in every container)",
                rule.resource_globs.join(", ")
            ),
        };
        Reservation {
            rule,
            resource,
            action: self.action_of(rule_index),
            mechanism,
        }
    }
}

/// The findings of one evaluation, and how many ConfigMap-key findings were left out.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// The findings, in container order (`envFrom` before `env` within a container).
    pub findings: Vec<Finding>,
    /// ConfigMap-key findings not listed past [`MAX_LISTED_KEY_FINDINGS`]: at most this many
    /// (a key two rules reserve counts twice). Every (container, source, prefix) still has a
    /// finding with its strictest action, so leaving these out never changes the decision.
    pub omitted: usize,
}

/// A ConfigMap's keys, sorted and without duplicates (binary search for names and prefixes).
type SortedKeys = Arc<[Box<str>]>;

/// Per-evaluation lookups, so that each distinct ConfigMap is fetched, sorted and scanned once
/// however many containers and `envFrom` entries name it.
struct EvalCache<'c, 'a> {
    namespace: &'a str,
    config_maps: &'c dyn ConfigMapKeys,
    /// ConfigMap name → slot in `keys`.
    slots: HashMap<&'a str, usize>,
    keys: Vec<Option<SortedKeys>>,
    /// (slot, rule, pattern, DFA state after the prefix) → indices of the keys that complete a
    /// match, ascending.
    pattern_hits: HashMap<(usize, usize, usize, StateID), Arc<[u32]>>,
}

impl<'c, 'a> EvalCache<'c, 'a> {
    fn slot(&mut self, name: &'a str) -> usize {
        if let Some(&slot) = self.slots.get(name) {
            return slot;
        }
        let keys = self
            .config_maps
            .shared_keys(self.namespace, name)
            .map(|keys| {
                // The index keeps them sorted; sort a copy only when a lookup does not.
                if keys.windows(2).all(|w| w[0] < w[1]) {
                    keys
                } else {
                    let mut sorted = keys.to_vec();
                    sorted.sort_unstable();
                    sorted.dedup();
                    sorted.into()
                }
            });
        let slot = self.keys.len();
        self.keys.push(keys);
        self.slots.insert(name, slot);
        slot
    }
}

/// The keys one rule reserves under one prefix, as sorted key indices.
enum Hits {
    List(Vec<u32>),
    Range(u32, u32),
    Shared(Arc<[u32]>),
}

impl Hits {
    fn len(&self) -> usize {
        match self {
            Hits::List(v) => v.len(),
            Hits::Range(a, b) => (b - a) as usize,
            Hits::Shared(v) => v.len(),
        }
    }

    fn first(&self) -> Option<u32> {
        match self {
            Hits::List(v) => v.first().copied(),
            Hits::Range(a, b) => (a < b).then_some(*a),
            Hits::Shared(v) => v.first().copied(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Hits::List(v) => Box::new(v.iter().copied()),
            Hits::Range(a, b) => Box::new(*a..*b),
            Hits::Shared(v) => Box::new(v.iter().copied()),
        }
    }
}

/// Kubernetes' own resource names, whose glob matches [`CompiledRules`] keeps.
const CORE_RESOURCES: [&str; 5] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "hugepages-2Mi",
    "hugepages-1Gi",
];

/// Index of a key as stored in [`Hits`]; ConfigMaps hold at most 1 MiB, far below `u32::MAX`
/// keys, so saturating never happens.
fn key_index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl CompiledRules {
    /// Compiles rules, in order (the policy file puts the built-in ones first), with the
    /// namespaces where none applies and what an unverifiable `envFrom` gets.
    pub fn compile(
        configs: &[RuleConfig],
        exempt_namespaces: &[String],
        unverifiable_env_from: UnverifiableEnvFrom,
    ) -> Result<Self, RuleError> {
        let rules = configs
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let mut globs = GlobSetBuilder::new();
        let mut glob_rule = Vec::new();
        for (i, rule) in configs.iter().enumerate() {
            for glob in &rule.resources {
                globs.add(resource_glob(&rule.name, glob)?);
                glob_rule.push(i);
            }
        }
        let globs = globs.build().map_err(|e| RuleError::Glob {
            rule: "(all rules)".into(),
            glob: configs
                .iter()
                .flat_map(|r| r.resources.iter().cloned())
                .collect::<Vec<_>>()
                .join(", "),
            message: e.to_string(),
        })?;
        let unverifiable = match unverifiable_env_from {
            UnverifiableEnvFrom::Warn => Action::Warn,
            UnverifiableEnvFrom::Deny => Action::Deny,
        };
        let core_resource_hits = CORE_RESOURCES
            .iter()
            .map(|&resource| (resource, globs.matches(resource)))
            .collect();
        Ok(Self {
            rules,
            exempt_namespaces: exempt_namespaces.iter().cloned().collect(),
            globs,
            glob_rule,
            core_resource_hits,
            names: Arc::new(NameFilter::new(configs)?),
            unverifiable,
        })
    }

    /// Whether any rule reserves this name in some container; `false` settles it cheaply.
    pub fn may_be_reserved(&self, variable: &str) -> bool {
        self.names.may_be_reserved(variable)
    }

    /// The test behind [`CompiledRules::may_be_reserved`], shared: the catalog keeps it to
    /// judge each Service once, when it arrives.
    pub fn name_filter(&self) -> &Arc<NameFilter> {
        &self.names
    }

    /// The compiled rules, in order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The exempt namespaces, sorted.
    pub fn exempt_namespaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.exempt_namespaces.iter().map(String::as_str).collect();
        out.sort_unstable();
        out
    }

    /// What an unverifiable `envFrom` gets (`reserved.unverifiableEnvFrom`).
    pub fn unverifiable_action(&self) -> Action {
        self.unverifiable
    }

    /// Whether the namespace is exempt from the checks.
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.contains(namespace)
    }

    /// Which rules apply to a container with these resources, and why: one match of the
    /// combined glob set per resource (stopping once every rule with globs has its resource),
    /// so the cost is linear in the resources, whatever is asked afterwards.
    pub fn for_container<'a>(&self, resources: &[&'a str]) -> ContainerRules<'_, 'a> {
        self.for_container_with_claims(resources, Vec::new())
    }

    /// [`CompiledRules::for_container`] for a container that also consumes DRA claims: a rule
    /// that applies through neither scope nor resources applies through the first of
    /// `claimed` whose device class matches its `deviceClasses` (with its device-class
    /// action: CDI makes the device's value win).
    pub fn for_container_with_claims<'a>(
        &self,
        resources: &[&'a str],
        claimed: Vec<ClaimedClass>,
    ) -> ContainerRules<'_, 'a> {
        let mut applies: Vec<Option<Applies<'a>>> = self
            .rules
            .iter()
            .map(|r| (r.scope == Scope::All).then_some(Applies::Everywhere))
            .collect();
        let mut unresolved = self
            .rules
            .iter()
            .filter(|r| !r.resource_globs.is_empty())
            .count();
        let mut matched = Vec::new();
        for &resource in resources {
            if unresolved == 0 {
                break;
            }
            let hits = match self.core_resource_hits.iter().find(|(r, _)| *r == resource) {
                Some((_, hits)) => hits,
                None => {
                    self.globs.matches_into(resource, &mut matched);
                    &matched
                }
            };
            for &glob in hits {
                let Some(&rule) = self.glob_rule.get(glob) else {
                    continue;
                };
                if !matches!(applies[rule], Some(Applies::Requested(_))) {
                    applies[rule] = Some(Applies::Requested(resource));
                    unresolved -= 1;
                }
            }
        }
        if !claimed.is_empty() {
            for (rule, applies) in self.rules.iter().zip(applies.iter_mut()) {
                if applies.is_some() {
                    continue;
                }
                if let Some(set) = &rule.device_classes
                    && let Some(k) = claimed.iter().position(|c| set.is_match(&c.class))
                {
                    *applies = Some(Applies::Claimed(k));
                }
            }
        }
        ContainerRules {
            rules: self,
            applies,
            claimed,
        }
    }

    /// Whether `variable` is reserved in a container with these resources.
    ///
    /// Used to never inject a reserved name; namespace exemptions do not apply there. Looks at
    /// every resource: for many names in one container use [`CompiledRules::for_container`].
    pub fn is_reserved(&self, resources: &[&str], variable: &str) -> bool {
        self.may_be_reserved(variable) && self.for_container(resources).is_reserved(variable)
    }

    /// Every reserved name the containers set, in container order.
    ///
    /// `env` entries are checked whatever their value source. An `envFrom` is judged by its
    /// prefix alone where that gives a reserved name for any key; else, for a ConfigMap
    /// `config_maps` can read, key by key (with the prefix); else, when its prefix can begin a
    /// reserved name, by `reserved.unverifiableEnvFrom`. A Secret's keys are never read.
    pub fn evaluate(
        &self,
        namespace: &str,
        containers: &[ContainerEnv<'_>],
        config_maps: &dyn ConfigMapKeys,
    ) -> Vec<Finding> {
        self.evaluate_bounded(namespace, containers, config_maps)
            .findings
    }

    /// [`CompiledRules::evaluate`], with ConfigMap-key findings listed up to
    /// [`MAX_LISTED_KEY_FINDINGS`] and the rest counted.
    ///
    /// Linear in the containers' resources, `env` names and `envFrom` entries (identical
    /// (source, prefix) pairs of a container are judged once), plus one pass over each distinct
    /// ConfigMap's keys per pattern state a prefix reaches; the findings listed are bounded.
    pub fn evaluate_bounded<'a>(
        &self,
        namespace: &'a str,
        containers: &[ContainerEnv<'a>],
        config_maps: &dyn ConfigMapKeys,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        if self.is_exempt(namespace) || self.rules.is_empty() {
            return out;
        }
        let mut cache = EvalCache {
            namespace,
            config_maps,
            slots: HashMap::new(),
            keys: Vec::new(),
            pattern_hits: HashMap::new(),
        };
        let mut budget = MAX_LISTED_KEY_FINDINGS;
        for container in containers {
            let claimed = claimed_classes(namespace, &container.claims, config_maps);
            let rules = self.for_container_with_claims(&container.resources, claimed);
            if !rules.any_applies() {
                continue;
            }
            let finding =
                |variable: String, origin: Origin, at: &Reservation<'_>, action| Finding {
                    kind: container.kind,
                    index: container.index,
                    container: container.name.to_string(),
                    variable,
                    origin,
                    rule: at.rule.name.clone(),
                    resource: at.resource.clone(),
                    action,
                    mechanism: at.mechanism,
                };
            let mut seen: HashSet<(EnvFromKind, &'a str, &'a str)> = HashSet::new();
            for (index, source) in container.env_from.iter().enumerate() {
                for (kind, name) in source.references() {
                    if !seen.insert((kind, name, source.prefix)) {
                        continue;
                    }
                    let pair = Pair {
                        index,
                        kind,
                        name,
                        prefix: source.prefix,
                    };
                    self.judge_env_from(&rules, &pair, &mut cache, &mut budget, &mut out, &finding);
                }
            }
            for (index, variable) in container.env.iter().enumerate() {
                if let Some(at) = rules.strictest(variable) {
                    let action = at.action;
                    out.findings.push(finding(
                        variable.to_string(),
                        Origin::Env(index),
                        &at,
                        action,
                    ));
                }
            }
        }
        out
    }

    /// One distinct (source, prefix) of a container: the prefix alone first, then the keys
    /// or, when they cannot be read, what the prefix can begin. Only rules stricter than what
    /// an earlier step found are asked further: the strictest verdict is what counts.
    fn judge_env_from<'a>(
        &self,
        rules: &ContainerRules<'_, '_>,
        pair: &Pair<'a>,
        cache: &mut EvalCache<'_, 'a>,
        budget: &mut usize,
        out: &mut Evaluation,
        finding: &dyn Fn(String, Origin, &Reservation<'_>, Action) -> Finding,
    ) {
        let mut judge = PairJudge {
            rules,
            pair,
            finding,
            floor: None,
        };
        judge.whole_prefix(out);
        if !judge.stricter(Action::Deny) {
            return;
        }
        let keys = match pair.kind {
            EnvFromKind::ConfigMap => {
                let slot = cache.slot(pair.name);
                cache.keys[slot].clone().map(|keys| (slot, keys))
            }
            EnvFromKind::Secret => None,
        };
        match keys {
            Some((slot, keys)) => judge.keys(self, slot, &keys, cache, budget, out),
            None => judge.unverifiable(self.unverifiable, out),
        }
    }

    /// The keys of ConfigMap `slot` that rule `rule_index` reserves after `prefix`: its names
    /// by binary search, its prefixes as key ranges, its patterns by one memoised pass over
    /// the keys per DFA state.
    fn rule_hits(
        &self,
        rule_index: usize,
        rule: &CompiledRule,
        prefix: &str,
        slot: usize,
        keys: &SortedKeys,
        cache: &mut EvalCache<'_, '_>,
    ) -> Vec<Hits> {
        let mut out = Vec::new();
        let names: Vec<u32> = rule
            .sorted_names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|rest| keys.binary_search_by(|k| (**k).cmp(rest)).ok())
            .map(key_index)
            .collect();
        if !names.is_empty() {
            let mut names = names;
            names.sort_unstable();
            out.push(Hits::List(names));
        }
        for p in &rule.prefixes {
            if prefix.starts_with(p.as_str()) {
                out.push(Hits::Range(0, key_index(keys.len())));
            } else if let Some(rest) = p.strip_prefix(prefix) {
                let lower = keys.partition_point(|k| &**k < rest);
                let len = keys[lower..].partition_point(|k| k.starts_with(rest));
                out.push(Hits::Range(key_index(lower), key_index(lower + len)));
            }
        }
        for (p, (_, dfa)) in rule.pattern_dfas.iter().enumerate() {
            let state = dfa.after(prefix);
            if !dfa.facts(state).can_continue {
                continue;
            }
            let hits = cache
                .pattern_hits
                .entry((slot, rule_index, p, state))
                .or_insert_with(|| {
                    keys.iter()
                        .enumerate()
                        .filter(|(_, k)| dfa.completes(state, k))
                        .map(|(i, _)| key_index(i))
                        .collect()
                });
            out.push(Hits::Shared(Arc::clone(hits)));
        }
        out
    }
}

/// One distinct `envFrom` (source, prefix) of a container, with the first index naming it.
struct Pair<'a> {
    index: usize,
    kind: EnvFromKind,
    name: &'a str,
    prefix: &'a str,
}

/// The steps of judging one [`Pair`] of a container, and what they share.
struct PairJudge<'j, 'r, 'c, 'a> {
    rules: &'j ContainerRules<'r, 'c>,
    pair: &'j Pair<'a>,
    finding: &'j dyn Fn(String, Origin, &Reservation<'_>, Action) -> Finding,
    /// The strictest action an earlier step found: later steps only ask stricter rules.
    floor: Option<Action>,
}

impl PairJudge<'_, '_, '_, '_> {
    /// Whether `action` is stricter than what was found so far.
    fn stricter(&self, action: Action) -> bool {
        self.floor.is_none_or(|f| action > f)
    }

    fn source(&self) -> EnvFromRef {
        EnvFromRef {
            kind: self.pair.kind,
            name: self.pair.name.to_string(),
        }
    }

    /// The prefix alone: does it make every key a reserved name?
    fn whole_prefix(&mut self, out: &mut Evaluation) {
        let (rules, prefix) = (self.rules, self.pair.prefix);
        let Some((i, action)) = rules.strictest_by(|i, rule| {
            rule.reserves_whole_prefix(prefix)
                .map(|_| rules.env_from_action_of(i))
        }) else {
            return;
        };
        let at = rules.reservation(i);
        let reason = at.rule.reserves_whole_prefix(prefix).unwrap_or_default();
        out.findings.push((self.finding)(
            format!("{prefix}*"),
            Origin::EnvFromPrefix {
                index: self.pair.index,
                source: self.source(),
                prefix: prefix.to_string(),
                reason,
            },
            &at,
            action,
        ));
        self.floor = Some(action);
    }

    /// Keys envlink cannot read: what could the prefix begin, in the rules that apply here?
    /// One finding, with the strictest action (capped at `unverifiable`).
    fn unverifiable(&self, unverifiable: Action, out: &mut Evaluation) {
        let prefix = self.pair.prefix;
        let mut possible = Vec::new();
        let mut best: Option<(usize, Action)> = None;
        for (i, rule, _) in self.rules.applicable() {
            let action = self.rules.env_from_action_of(i).min(unverifiable);
            if !self.stricter(action) {
                continue;
            }
            let names = rule.possible_names(prefix);
            if names.is_empty() {
                continue;
            }
            possible.extend(
                names
                    .into_iter()
                    .map(|n| format!("{n} (rule {})", rule.name)),
            );
            if best.is_none_or(|(_, b)| action > b) {
                best = Some((i, action));
            }
        }
        if let Some((i, action)) = best {
            out.findings.push((self.finding)(
                format!("{prefix}*"),
                Origin::EnvFromUnverifiable {
                    index: self.pair.index,
                    source: self.source(),
                    prefix: prefix.to_string(),
                    possible,
                },
                &self.rules.reservation(i),
                action,
            ));
        }
    }

    /// Readable keys: the keys each stricter rule reserves under this prefix, listed in key
    /// order while the budget lasts.
    fn keys(
        &self,
        compiled: &CompiledRules,
        slot: usize,
        keys: &SortedKeys,
        cache: &mut EvalCache<'_, '_>,
        budget: &mut usize,
        out: &mut Evaluation,
    ) {
        let rules = self.rules;
        let prefix = self.pair.prefix;
        let mut sets: Vec<(Action, Hits)> = Vec::new();
        for (i, rule, _) in rules.applicable() {
            let action = rules.env_from_action_of(i);
            if !self.stricter(action) {
                continue;
            }
            for hits in compiled.rule_hits(i, rule, prefix, slot, keys, cache) {
                if hits.len() > 0 {
                    sets.push((action, hits));
                }
            }
        }
        let Some(strongest) = sets.iter().map(|(a, _)| *a).max() else {
            return;
        };
        let push = |key: u32, out: &mut Evaluation| -> Option<Action> {
            let variable = format!("{prefix}{}", keys.get(key as usize)?);
            let (i, action) = rules.strictest_by(|i, rule| {
                rule.matches_name(&variable)
                    .then(|| rules.env_from_action_of(i))
            })?;
            if !self.stricter(action) {
                return None;
            }
            let origin = Origin::EnvFrom {
                index: self.pair.index,
                config_map: self.pair.name.to_string(),
            };
            out.findings.push((self.finding)(
                variable,
                origin,
                &rules.reservation(i),
                action,
            ));
            Some(action)
        };
        // List keys in key order, merged across the sets (each key once), while the budget
        // lasts; every key looked at spends budget, listed or not, so this loop is bounded.
        let mut listed = 0usize;
        let mut listed_max: Option<Action> = None;
        let mut iters: Vec<_> = sets.iter().map(|(_, h)| h.iter().peekable()).collect();
        while *budget > 0 {
            let next = iters.iter_mut().filter_map(|it| it.peek().copied()).min();
            let Some(key) = next else { break };
            for it in iters.iter_mut() {
                if it.peek() == Some(&key) {
                    it.next();
                }
            }
            *budget -= 1;
            if let Some(action) = push(key, out) {
                listed += 1;
                listed_max = listed_max.max(Some(action));
            }
        }
        let total: usize = sets.iter().map(|(_, h)| h.len()).sum();
        if listed < total {
            out.omitted += total - listed;
            // The budget ran out: keep one finding with this pair's strictest action.
            if listed_max < Some(strongest)
                && let Some(key) = sets
                    .iter()
                    .find(|(a, _)| *a == strongest)
                    .and_then(|(_, h)| h.first())
                && push(key, out).is_some()
            {
                out.omitted = out.omitted.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Test-only: these tests build rules the way the policy file does (built-in packs, YAML),
    // so they go through `config`; the engine itself never imports it.
    use crate::config::{Policy, ReservedConfig};
    use std::collections::HashMap;

    fn rules() -> CompiledRules {
        ReservedConfig::default()
            .compile()
            .expect("defaults compile")
    }

    fn container<'a>(name: &'a str, resources: &[&'a str], env: &[&'a str]) -> ContainerEnv<'a> {
        ContainerEnv {
            kind: ContainerKind::Regular,
            index: 0,
            name,
            resources: resources.to_vec(),
            env: env.to_vec(),
            env_from: vec![],
            claims: vec![],
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
            // The Ascend runtime hook honours it in any container (pack `ascend`).
            (
                &["huawei.com/other"],
                "ASCEND_VISIBLE_DEVICES",
                Some(Action::Deny),
            ),
            (&["huawei.com/other"], "ASCEND_ALLOW_LINK", None),
            // Not set by `Allocate`: the MPS daemon applies its limits (pack `nvidia`).
            (
                &["nvidia.com/gpu"],
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
                None,
            ),
            (
                &["nvidia.com/gpu"],
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
                None,
            ),
            (
                &["nvidia.com/gpu"],
                "CUDA_DISABLE_CONTROL",
                Some(Action::Deny),
            ),
            (
                &["nvidia.com/gpu"],
                "CUDA_DEVICE_MEMORY_LIMIT_0",
                Some(Action::Deny),
            ),
            (&[], "CUDA_DISABLE_CONTROL", None),
            (&[], "AWS_NEURON_VISIBLE_DEVICES", Some(Action::Deny)),
            (
                &["aws.amazon.com/neuroncore"],
                "NEURON_RT_VISIBLE_CORES",
                Some(Action::Deny),
            ),
            (&["fpga.intel.com/af-0x1"], "FPGA_AFU_1", Some(Action::Deny)),
            (&["fpga.intel.com/af-0x1"], "FPGA_AFU_X", None),
            (
                &["cambricon.com/mlu370"],
                "CAMBRICON_VISIBLE_DEVICES",
                Some(Action::Deny),
            ),
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
        let m = f[0].message(MessageContext::Mutation);
        assert!(m.contains("container \"trainer\""), "{m}");
        assert!(m.contains("NVIDIA_GDS"), "{m}");
        assert!(m.contains("nvidia.com/gpu"), "{m}");
    }

    /// Claims and templates by (namespace, name) → device classes.
    struct Claims(HashMap<(&'static str, &'static str), &'static [&'static str]>);

    impl ConfigMapKeys for Claims {
        fn keys(&self, _namespace: &str, _name: &str) -> Option<Vec<String>> {
            None
        }

        fn claim_device_classes(
            &self,
            namespace: &str,
            source: ClaimSource<'_>,
        ) -> Option<Arc<[Box<str>]>> {
            let name = match source {
                ClaimSource::Claim(n) => format!("claim/{n}"),
                ClaimSource::Template(n) => format!("template/{n}"),
            };
            self.0
                .iter()
                .find(|((ns, n), _)| *ns == namespace && *n == name)
                .map(|(_, classes)| classes.iter().map(|c| Box::<str>::from(*c)).collect())
        }
    }

    #[test]
    fn a_container_consuming_a_claim_is_in_scope_of_its_device_class() {
        let claims = Claims(HashMap::from([
            (("ns", "template/gpu"), &["gpu.nvidia.com"][..]),
            (
                ("ns", "claim/shared"),
                &["mig.nvidia.com", "other.example.com"][..],
            ),
            (("ns", "template/fpga"), &["fpga.example.com"][..]),
        ]));
        let dra = |env: &'static [&'static str], claims: Vec<ClaimUse<'static>>| {
            let mut c = container("app", &[], env);
            c.claims = claims;
            c
        };
        let gpu = ClaimUse {
            name: "gpu",
            source: Some(ClaimSource::Template("gpu")),
        };
        let rules = rules();
        // The device's CDI edits win: a warning that says so, not a refusal.
        let f = rules.evaluate("ns", &[dra(&["NVIDIA_GDS"], vec![gpu])], &claims);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].action, Action::Warn);
        assert_eq!(f[0].mechanism, Mechanism::DeviceClass);
        assert_eq!(f[0].rule, "nvidia");
        let m = f[0].message(MessageContext::Mutation);
        assert!(
            m.contains("for the DRA device class gpu.nvidia.com (claim \"gpu\") (rule nvidia)"),
            "{m}"
        );
        assert!(m.contains("a value set here is ignored"), "{m}");
        // A hook reading the env in any container still refuses: that rule is everywhere.
        let f = rules.evaluate(
            "ns",
            &[dra(&["NVIDIA_VISIBLE_DEVICES"], vec![gpu])],
            &claims,
        );
        assert_eq!(f[0].action, Action::Deny);
        assert_eq!(f[0].rule, "nvidia-visible-devices");
        // The claim by name, or another namespace, or an unknown claim.
        let shared = ClaimUse {
            name: "s",
            source: Some(ClaimSource::Claim("shared")),
        };
        assert_eq!(
            rules.evaluate("ns", &[dra(&["NVIDIA_GDS"], vec![shared])], &claims)[0].action,
            Action::Warn
        );
        assert!(
            rules
                .evaluate("other", &[dra(&["NVIDIA_GDS"], vec![gpu])], &claims)
                .is_empty()
        );
        let unknown = ClaimUse {
            name: "x",
            source: Some(ClaimSource::Template("nope")),
        };
        let dangling = ClaimUse {
            name: "y",
            source: None,
        };
        assert!(
            rules
                .evaluate(
                    "ns",
                    &[dra(&["NVIDIA_GDS"], vec![unknown, dangling])],
                    &claims
                )
                .is_empty()
        );
        // Requesting the resource too: the plugin's env, so the plugin's rule and action.
        let mut both = dra(&["NVIDIA_GDS"], vec![gpu]);
        both.resources = vec!["nvidia.com/gpu"];
        let f = rules.evaluate("ns", &[both], &claims);
        assert_eq!(f[0].action, Action::Deny);
        assert_eq!(f[0].mechanism, Mechanism::DevicePlugin);

        // A rule may say otherwise, and may name only device classes.
        let strict = policy(
            "  rules:\n    - name: fpga\n      deviceClasses: ['fpga.*']\n      names: \
             [FPGA_ID]\n      deviceClassAction: deny\n      prefixes: [FPGA_CFG_]\n",
        );
        let fpga = ClaimUse {
            name: "f",
            source: Some(ClaimSource::Template("fpga")),
        };
        let f = strict.evaluate("ns", &[dra(&["FPGA_ID"], vec![fpga])], &claims);
        assert_eq!(f[0].action, Action::Deny);
        assert_eq!(f[0].rule, "fpga");
        let mut c = dra(&[], vec![fpga]);
        c.env_from = vec![from("FPGA_CFG_", None, Some("s"))];
        let f = strict.evaluate("ns", &[c], &claims);
        assert_eq!(f[0].action, Action::Deny, "{f:#?}");
        assert!(
            f[0].message(MessageContext::Mutation)
                .contains("DRA device class fpga.example.com")
        );
        assert!(
            strict
                .evaluate("ns", &[dra(&["FPGA_ID"], vec![])], &claims)
                .is_empty()
        );
    }

    #[test]
    fn packs_are_switched_off_and_their_action_overridden_by_name() {
        let gpu = |var: &'static str| container("app", &["nvidia.com/gpu"], &[var]);
        let action = |rules: &CompiledRules, var| {
            rules
                .evaluate("ns", &[gpu(var)], &NoConfigMaps)
                .first()
                .map(|f| (f.rule.clone(), f.action))
        };
        let all = rules();
        assert_eq!(
            action(&all, "CUDA_DISABLE_CONTROL"),
            Some(("hami".into(), Action::Deny))
        );
        let off = policy("  disableDefaultRules: [hami, sriov]\n");
        assert_eq!(action(&off, "CUDA_DISABLE_CONTROL"), None);
        assert_eq!(action(&off, "PCIDEVICE_X"), None);
        assert_eq!(
            action(&off, "NVIDIA_GDS"),
            Some(("nvidia".into(), Action::Deny))
        );
        let lenient = policy("  packActions: {hami: warn, nvidia: strip}\n  defaultAction: deny\n");
        assert_eq!(
            action(&lenient, "CUDA_DEVICE_SM_LIMIT"),
            Some(("hami".into(), Action::Warn))
        );
        assert_eq!(
            action(&lenient, "NVIDIA_GDS"),
            Some(("nvidia".into(), Action::Strip))
        );
        // Every rule of the pack follows its action; other packs keep the default.
        assert_eq!(
            action(&lenient, "PCIDEVICE_X"),
            Some(("sriov".into(), Action::Deny))
        );
        assert!(
            lenient
                .rules()
                .iter()
                .filter(|r| r.name.starts_with("nvidia"))
                .all(|r| r.action == Action::Strip)
        );
    }

    #[test]
    fn strictest_action_wins_and_exempt_namespaces_skip() {
        let config = ReservedConfig {
            default_action: Action::Warn,
            rules: vec![RuleConfig {
                name: "strict".into(),
                resources: vec![],
                device_classes: vec![],
                names: vec!["NVIDIA_VISIBLE_DEVICES".into()],
                prefixes: vec![],
                patterns: vec![],
                scope: Scope::All,
                action: Action::Strip,
                device_class_action: None,
            }],
            exempt_namespaces: vec!["gpu-admin".into()],
            ..ReservedConfig::default()
        };
        let rules = config.compile().expect("compiles");
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
                ..Default::default()
            },
            EnvFromSource {
                config_map: Some("unreadable"),
                prefix: "",
                ..Default::default()
            },
        ];
        let f = rules().evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].variable, "NVIDIA_VISIBLE_DEVICES");
        assert!(matches!(f[0].origin, Origin::EnvFrom { index: 0, .. }));
        assert!(f[0].message(MessageContext::Mutation).contains("gpu-env"));
        // A ConfigMap envlink cannot read, with a prefix that begins every name.
        assert!(matches!(
            f[1].origin,
            Origin::EnvFromUnverifiable { index: 1, .. }
        ));
        assert_eq!(f[1].action, Action::Warn);
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
            ..Default::default()
        }];
        let rules = config.compile().expect("compiles");
        let f = rules.evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].action, Action::Deny);
        assert_eq!(f[1].action, Action::Strip);
    }

    fn from(
        prefix: &'static str,
        config_map: Option<&'static str>,
        secret: Option<&'static str>,
    ) -> EnvFromSource<'static> {
        EnvFromSource {
            config_map,
            prefix,
            secret,
        }
    }

    fn policy(extra: &str) -> CompiledRules {
        let text = format!("reserved:\n{extra}");
        Policy::from_yaml(&text, "t").expect("policy").rules
    }

    #[test]
    fn a_pattern_that_escapes_the_anchoring_is_refused() {
        let escaping = "QAT[0-9]+)|(?:FOO";
        // What it would have done: the wrapper's group is closed early, so the anchors bind
        // to one branch each — any name *beginning* with QAT1 or *ending* in FOO matches.
        let wrapped = regex::Regex::new(&anchored(escaping)).expect("wrapped form compiles");
        assert!(wrapped.is_match("MY_FOO"));
        assert!(wrapped.is_match("QAT1_ANYTHING"));
        let text = format!(
            "reserved:\n  rules:\n    - name: qat-extra\n      resources: [qat.intel.com/*]\n      \
             patterns: ['{escaping}']\n"
        );
        let err = Policy::from_yaml(&text, "c")
            .expect_err("escaping pattern")
            .to_string();
        assert!(err.contains("rule `qat-extra`"), "{err}");
        assert!(err.contains(escaping), "{err}");
        assert!(err.contains("on its own"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        // The same trick the other way round, and a lone closing group.
        for pattern in ["FOO)|(?:.*", "A)", "(?x)A#"] {
            let config = ReservedConfig {
                rules: vec![RuleConfig {
                    name: "r".into(),
                    resources: vec![],
                    device_classes: vec![],
                    names: vec![],
                    prefixes: vec![],
                    patterns: vec![pattern.into()],
                    scope: Scope::All,
                    action: Action::Deny,
                    device_class_action: None,
                }],
                ..ReservedConfig::default()
            };
            assert!(config.compile().is_err(), "{pattern} must be refused");
        }
        // Ordinary patterns, alternations included, still compile and match whole names.
        let rules =
            policy("  rules:\n    - name: r\n      scope: all\n      patterns: ['A[0-9]+|B_.*']\n");
        let c = container("x", &[], &["A1", "B_X", "XA1", "A1X"]);
        let got: Vec<_> = rules
            .evaluate("ns", &[c], &NoConfigMaps)
            .into_iter()
            .map(|f| f.variable)
            .collect();
        assert_eq!(got, ["A1", "B_X"]);
    }

    #[test]
    fn unicode_patterns_are_analysed_and_huge_ones_refused() {
        let started = std::time::Instant::now();
        for pattern in [r"\w+_DEVICES", r".*_VISIBLE_DEVICES", r"\bGPU[0-9]+"] {
            let dfa = PatternDfa::new("r", pattern).expect(pattern);
            assert!(dfa.facts(dfa.start).can_continue, "{pattern}");
        }
        eprintln!("compiled in {:?}", started.elapsed());
        let dfa = PatternDfa::new("r", r".*_VISIBLE_DEVICES").expect("dfa");
        assert!(dfa.facts(dfa.after("HABANA")).can_continue);
        assert!(!dfa.facts(dfa.after("HABANA")).always);
        let err = PatternDfa::new("r", r"\w{500}")
            .expect_err("too large")
            .to_string();
        assert!(err.contains("cannot be analysed"), "{err}");
    }

    #[test]
    fn pattern_state_facts() {
        let facts = |pattern: &str, prefix: &str| {
            let dfa = PatternDfa::new("r", pattern).expect("dfa");
            dfa.facts(dfa.after(prefix))
        };
        let f = facts("QAT[0-9]+", "");
        assert!(f.can_continue && !f.always);
        let f = facts("QAT[0-9]+", "QAT1");
        assert!(f.can_continue && !f.always, "key X gives QAT1X");
        assert!(!facts("QAT[0-9]+", "QATX").can_continue);
        assert!(!facts("QAT[0-9]+", "QAT").always);
        assert!(facts("FOO_.*", "FOO_").always);
        assert!(facts("FOO_.*", "FOO_BAR").always);
        assert!(!facts("FOO_.*", "FOO").always, "key X gives FOOX");
        assert!(facts("FOO_.*", "FOO").can_continue);
        // `-` is a key byte, so not every key completes `[A-Z_]+`.
        assert!(!facts("[A-Z_]+", "A").always);
        assert!(facts("[-._a-zA-Z0-9]+", "").always);
        // A name that the prefix already completes needs a non-empty key to go on.
        assert!(!facts("EXACT", "EXACT").can_continue);
        // Non-key bytes after the prefix cannot come from a key.
        assert!(!facts("A B", "A").can_continue);
        let dfa = PatternDfa::new("r", "QAT[0-9]+").expect("dfa");
        let state = dfa.after("QAT");
        assert!(dfa.completes(state, "12"));
        assert!(!dfa.completes(state, "1X"));
    }

    #[test]
    fn env_from_prefix_alone_is_judged_whatever_the_source() {
        let rules = rules();
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "empty".to_string()),
            Vec::new(),
        )]));
        let mut c = container("app", &[], &[]);
        c.env_from = vec![
            from("PCIDEVICE_", None, Some("s")),
            from("PCIDEVICE_INTEL_", Some("empty"), None),
            from("PCIDEVICE_", Some("unknown"), None),
        ];
        let f = rules.evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 3, "{f:#?}");
        for (i, finding) in f.iter().enumerate() {
            assert_eq!(finding.action, Action::Deny);
            assert_eq!(finding.rule, "sriov");
            assert!(
                matches!(&finding.origin, Origin::EnvFromPrefix { index, .. } if *index == i),
                "{finding:?}"
            );
        }
        assert_eq!(f[0].variable, "PCIDEVICE_*");
        let m = f[0].message(MessageContext::Mutation);
        assert!(
            m.contains("envFrom prefix PCIDEVICE_ makes every key of Secret \"s\" a reserved name"),
            "{m}"
        );
        assert!(m.contains("reserved prefix PCIDEVICE_"), "{m}");
        assert!(
            f[1].message(MessageContext::Mutation)
                .contains("ConfigMap \"empty\"")
        );

        // A pattern can reserve a whole prefix too; a strip rule becomes deny there.
        let rules = policy(
            "  rules:\n    - name: foo\n      scope: all\n      action: strip\n      \
             patterns: ['FOO_.*']\n",
        );
        let mut c = container("app", &[], &[]);
        c.env_from = vec![from("FOO_", None, Some("s"))];
        let f = rules.evaluate("ns", &[c], &NoConfigMaps);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].action, Action::Deny);
        assert!(
            f[0].message(MessageContext::Mutation)
                .contains("pattern `FOO_.*`"),
            "{}",
            f[0].message(MessageContext::Mutation)
        );
    }

    #[test]
    fn unverifiable_env_from_follows_the_setting_within_the_rules_scope() {
        let warn = rules();
        let deny = policy("  unverifiableEnvFrom: deny\n");
        // (resources, prefix, the possible names listed, or no finding)
        type Case<'a> = (&'a [&'a str], &'a str, Option<&'a [&'a str]>);
        let cases: &[Case<'_>] = &[
            // Reserved in every container: NVIDIA_VISIBLE_DEVICES.
            (
                &[],
                "NVIDIA_",
                Some(&["NVIDIA_VISIBLE_DEVICES (rule nvidia-visible-devices)"]),
            ),
            // A GPU container: the nvidia rule's names as well.
            (
                &["nvidia.com/gpu"],
                "NVIDIA_G",
                Some(&["NVIDIA_GDRCOPY (rule nvidia)", "NVIDIA_GDS (rule nvidia)"]),
            ),
            (&[], "NVIDIA_G", None),
            // The empty prefix begins every name.
            (
                &[],
                "",
                Some(&[
                    "NVIDIA_VISIBLE_DEVICES (rule nvidia-visible-devices)",
                    "ASCEND_VISIBLE_DEVICES (rule ascend-visible-devices)",
                    "AWS_NEURON_VISIBLE_DEVICES (rule neuron-visible-devices)",
                    "PCIDEVICE_* (rule sriov)",
                ]),
            ),
            (&[], "PCI", Some(&["PCIDEVICE_* (rule sriov)"])),
            (&[], "APP_", None),
            (&[], "NVIDIA_VISIBLE_DEVICES", None),
            (
                &["qat.intel.com/generic"],
                "QAT",
                Some(&["names matching `QAT[0-9]+` (rule intel-qat)"]),
            ),
            (&["qat.intel.com/generic"], "QATX", None),
            (&[], "QAT", None),
        ];
        for (resources, prefix, want) in cases {
            for (rules, action) in [(&warn, Action::Warn), (&deny, Action::Deny)] {
                let mut c = container("app", resources, &[]);
                c.env_from = vec![from(prefix, None, Some("creds"))];
                let f = rules.evaluate("ns", &[c], &NoConfigMaps);
                match want {
                    None => assert!(f.is_empty(), "{prefix:?} {resources:?}: {f:#?}"),
                    Some(names) => {
                        assert_eq!(f.len(), 1, "{prefix:?} {resources:?}: {f:#?}");
                        assert_eq!(f[0].action, action);
                        assert_eq!(f[0].variable, format!("{prefix}*"));
                        let Origin::EnvFromUnverifiable { possible, .. } = &f[0].origin else {
                            panic!("{:?}", f[0].origin)
                        };
                        assert_eq!(possible, names);
                        let m = f[0].message(MessageContext::Mutation);
                        assert!(m.contains("Secret \"creds\""), "{m}");
                        assert!(m.contains("envlink never reads Secrets"), "{m}");
                        assert!(m.contains(names[0]), "{m}");
                    }
                }
            }
        }
        // Never stricter than the rule: a warn rule stays a warning under `deny`.
        let lenient = policy("  unverifiableEnvFrom: deny\n  defaultAction: warn\n");
        let mut c = container("app", &[], &[]);
        c.env_from = vec![from("", Some("cm"), None)];
        let f = lenient.evaluate("ns", &[c], &NoConfigMaps);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].action, Action::Warn);
        assert!(
            f[0].message(MessageContext::Mutation)
                .contains("does not exist (yet)"),
            "{}",
            f[0].message(MessageContext::Mutation)
        );
        // Exempt namespaces stay exempt.
        let exempt = policy("  unverifiableEnvFrom: deny\n  exemptNamespaces: [gpu-admin]\n");
        let mut c = container("app", &[], &[]);
        c.env_from = vec![from("", None, Some("s"))];
        assert!(exempt.evaluate("gpu-admin", &[c], &NoConfigMaps).is_empty());
    }

    #[test]
    fn readable_config_map_keys_complete_names_prefixes_and_patterns() {
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "m".to_string()),
            ["DEVICE_A", "OTHER", "1", "12", "X", "VISIBLE_DEVICES"]
                .map(String::from)
                .to_vec(),
        )]));
        let mut c = container("app", &["qat.intel.com/generic"], &[]);
        c.env_from = vec![
            from("PCI", Some("m"), None),
            from("QAT", Some("m"), None),
            from("NVIDIA_", Some("m"), None),
            from("APP_", Some("m"), None),
        ];
        let f = rules().evaluate("ns", &[c], &maps);
        let got: Vec<(&str, usize)> = f
            .iter()
            .map(|f| match f.origin {
                Origin::EnvFrom { index, .. } => (f.variable.as_str(), index),
                _ => panic!("{f:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("PCIDEVICE_A", 0),
                ("QAT1", 1),
                ("QAT12", 1),
                ("NVIDIA_VISIBLE_DEVICES", 2)
            ]
        );
        assert_eq!(f[1].rule, "intel-qat");
        assert_eq!(f[1].resource, "qat.intel.com/generic");
    }

    /// Patterns whose matches all begin with one of a finite set of literals, and some whose
    /// do not; names near and far from them.
    const PATTERNS: [&str; 9] = [
        "CUDA_DEVICE_MEMORY_LIMIT_[0-9]+",
        "QAT[0-9]+",
        "FPGA_AFU_[0-9]+",
        "A[0-9]+|B_.*",
        "(?i)gpu_[a-z]+",
        "X?Y_.*",
        "[A-C]{2}_Z",
        "FOO|",
        "\\bE[0-9]",
    ];

    #[test]
    fn pattern_starts_are_found_or_refused() {
        let starts = pattern_starts(["QAT[0-9]+", "A[0-9]+|B_.*"].into_iter()).expect("finite");
        assert_eq!(starts, vec![b"A".to_vec(), b"B_".to_vec(), b"QAT".to_vec()]);
        let cased = pattern_starts(["(?i)ab_[0-9]"].into_iter()).expect("finite");
        assert_eq!(
            cased,
            vec![
                b"AB_".to_vec(),
                b"Ab_".to_vec(),
                b"aB_".to_vec(),
                b"ab_".to_vec()
            ]
        );
        // A pattern that can begin anywhere gives no set: every name goes to the regex.
        assert_eq!(pattern_starts(["QAT[0-9]+", ".*_SUFFIX"].into_iter()), None);
        assert_eq!(pattern_starts([].into_iter()), Some(vec![]));
        // The built-in packs' patterns all begin with a literal: names skip the regex.
        let builtin = rules();
        let starts = builtin.name_filter().pattern_starts.as_ref();
        assert!(starts.is_some_and(|s| !s.is_empty()), "{starts:?}");
    }

    proptest::proptest! {
        /// The literal filter never turns away a name a pattern matches.
        #[test]
        fn pattern_starts_never_hide_a_match(
            which in proptest::sample::subsequence(PATTERNS.to_vec(), 1..=PATTERNS.len()),
            head in proptest::sample::select(vec![
                "", "CUDA_DEVICE_MEMORY_LIMIT_", "QAT", "FPGA_AFU_", "A", "B_", "GpU_", "gpu_",
                "Y_", "XY_", "AB", "CA_Z", "FOO", "E", "NVIDIA_",
            ]),
            tail in "[A-Za-z_0-9]{0,6}",
        ) {
            let name = format!("{head}{tail}");
            let set = RegexSet::new(which.iter().map(|p| anchored(p))).expect("patterns compile");
            let filter = NameFilter {
                any_name: HashSet::new(),
                any_prefix: vec![],
                any_pattern: Some(set.clone()),
                pattern_starts: pattern_starts(which.iter().copied()),
            };
            if set.is_match(&name) {
                proptest::prop_assert!(filter.may_match_a_pattern(&name), "{name} {which:?}");
            }
            proptest::prop_assert_eq!(filter.may_be_reserved(&name), set.is_match(&name));
        }
    }

    /// Kubernetes' own resource names are answered from the kept glob matches; a rule whose
    /// globs name them (literally or by wildcard) applies exactly as through the glob set.
    #[test]
    fn core_resources_match_rules_as_the_glob_set_does() {
        let rules = policy(
            "  rules:\n    - name: mem\n      resources: [memory]\n      names: [MEM_X]\n\
             \x20   - name: huge\n      resources: ['hugepages-*']\n      names: [HUGE_X]\n\
             \x20   - name: any\n      resources: ['*']\n      names: [ANY_X]\n",
        );
        for resource in CORE_RESOURCES
            .iter()
            .copied()
            .chain(["nvidia.com/gpu", "cpu2"])
        {
            let per = rules.for_container(&[resource]);
            assert_eq!(per.is_reserved("MEM_X"), resource == "memory", "{resource}");
            assert_eq!(
                per.is_reserved("HUGE_X"),
                resource.starts_with("hugepages-"),
                "{resource}"
            );
            // `*` does not cross a `/` (resource globs match like paths).
            assert_eq!(
                per.is_reserved("ANY_X"),
                !resource.contains('/'),
                "{resource}"
            );
            let kept = rules
                .core_resource_hits
                .iter()
                .find(|(r, _)| *r == resource);
            assert_eq!(
                kept.map(|(_, hits)| hits.clone()),
                CORE_RESOURCES
                    .contains(&resource)
                    .then(|| rules.globs.matches(resource)),
                "{resource}"
            );
        }
        let memory = rules.for_container(&["cpu", "memory"]);
        assert_eq!(
            memory.strictest("MEM_X").map(|at| at.resource.clone()),
            Some("memory".to_string())
        );
    }

    #[test]
    fn for_container_decides_once_and_names_the_first_matching_resource() {
        let rules = rules();
        let resources = ["cpu", "nvidia.com/mig-1g.5gb", "cpu", "nvidia.com/gpu"];
        let per = rules.for_container(&resources);
        assert!(per.is_reserved("NVIDIA_GDS"));
        assert!(per.is_reserved("PCIDEVICE_X"));
        assert!(!per.is_reserved("HL_VISIBLE_DEVICES"));
        let at = per.strictest("NVIDIA_GDS").expect("reserved");
        assert_eq!(at.rule.name, "nvidia");
        assert_eq!(at.resource, "nvidia.com/mig-1g.5gb");
        let at = per.strictest("NVIDIA_VISIBLE_DEVICES").expect("reserved");
        assert_eq!(at.resource, "nvidia.com/mig-1g.5gb");
        let none = rules.for_container(&["cpu"]);
        let at = none
            .strictest("NVIDIA_VISIBLE_DEVICES")
            .expect("everywhere");
        assert_eq!(at.resource, "nvidia.com/* (reserved in every container)");
        assert!(none.strictest("NVIDIA_GDS").is_none());
        // The old entry point agrees.
        assert!(rules.is_reserved(&resources, "NVIDIA_GDS"));
        assert!(!rules.is_reserved(&["cpu"], "NVIDIA_GDS"));
    }

    #[test]
    fn identical_env_from_pairs_are_judged_once() {
        let keys: Vec<String> = (0..50)
            .map(|i| format!("K{i:02}"))
            .chain(["VISIBLE_DEVICES".to_string()])
            .collect();
        let maps = Maps(HashMap::from([(("ns".to_string(), "m".to_string()), keys)]));
        let mut c = container("app", &[], &[]);
        c.env_from = (0..1_000)
            .map(|_| from("NVIDIA_", Some("m"), None))
            .chain((0..1_000).map(|_| from("", None, Some("s"))))
            .collect();
        let f = rules().evaluate("ns", &[c], &maps);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(matches!(f[0].origin, Origin::EnvFrom { index: 0, .. }));
        assert!(matches!(
            f[1].origin,
            Origin::EnvFromUnverifiable { index: 1_000, .. }
        ));
    }

    #[test]
    fn key_findings_are_bounded_and_keep_the_decision() {
        // 1,000 digit keys under 100 distinct QAT prefixes: 100,000 reserved variables.
        let keys: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        let maps = Maps(HashMap::from([(("ns".to_string(), "m".to_string()), keys)]));
        let prefixes: Vec<&'static str> = (0..100)
            .map(|i| &*Box::leak(format!("QAT{}", "1".repeat(i)).into_boxed_str()))
            .collect();
        let mut c = container("app", &["qat.intel.com/generic"], &[]);
        c.env_from = prefixes.iter().map(|p| from(p, Some("m"), None)).collect();
        let e = rules().evaluate_bounded("ns", &[c], &maps);
        assert_eq!(e.findings.len(), MAX_LISTED_KEY_FINDINGS + 99);
        assert_eq!(e.omitted, 100_000 - e.findings.len());
        assert!(e.findings.iter().all(|f| f.action == Action::Deny));
        // Every envFrom entry is represented.
        let mut entries: Vec<usize> = e
            .findings
            .iter()
            .filter_map(|f| match f.origin {
                Origin::EnvFrom { index, .. } => Some(index),
                _ => None,
            })
            .collect();
        entries.dedup();
        assert_eq!(entries, (0..100).collect::<Vec<_>>());
    }

    /// The worst single container at the API server's 3 MiB limit: ~100,000 distinct
    /// resource names (the GPU last) and ~50,000 env names that may be reserved.
    #[test]
    fn many_resources_and_env_names_evaluate_correctly() {
        let resources: Vec<String> = (0..100_000)
            .map(|i| format!("example.com/r{i}"))
            .chain(["nvidia.com/gpu".to_string()])
            .collect();
        let env: Vec<String> = (0..50_000)
            .map(|i| match i % 3 {
                0 => format!("PCIDEVICE_{i}"),
                1 => "NVIDIA_GDS".to_string(),
                _ => format!("QAT{i}"),
            })
            .collect();
        let c = ContainerEnv {
            kind: ContainerKind::Regular,
            index: 0,
            name: "app",
            resources: resources.iter().map(String::as_str).collect(),
            env: env.iter().map(String::as_str).collect(),
            env_from: vec![],
            claims: vec![],
        };
        let f = rules().evaluate("ns", &[c], &NoConfigMaps);
        // QAT names are not reserved: no qat.intel.com resource.
        let expected = (0..50_000).filter(|i| i % 3 != 2).count();
        assert_eq!(f.len(), expected);
        let gds = f.iter().find(|f| f.variable == "NVIDIA_GDS").expect("gds");
        assert_eq!(gds.resource, "nvidia.com/gpu");
        assert!(
            f.iter()
                .all(|f| matches!(f.origin, Origin::Env(i) if env[i] == f.variable))
        );
    }

    /// ~20,000 envFrom entries naming one ConfigMap of 5,000 keys, once with one prefix and
    /// once with 20,000 distinct prefixes, and 20,000 distinct unprefixed Secrets.
    #[test]
    fn many_env_from_entries_evaluate_correctly() {
        let keys: Vec<String> = (0..5_000)
            .map(|i| format!("KEY_{i:04}"))
            .chain(["DEVICE_X".to_string(), "VISIBLE_DEVICES".to_string()])
            .collect();
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "big".to_string()),
            keys,
        )]));
        let rules = rules();

        let mut same = container("same", &["nvidia.com/gpu"], &[]);
        same.env_from = (0..20_000)
            .map(|_| from("NVIDIA_", Some("big"), None))
            .collect();
        let f = rules.evaluate("ns", &[same], &maps);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].variable, "NVIDIA_VISIBLE_DEVICES");

        let prefixes: Vec<String> = (0..20_000).map(|i| format!("P{i}_")).collect();
        let mut distinct = container("distinct", &[], &[]);
        distinct.env_from = prefixes
            .iter()
            .map(|p| EnvFromSource {
                config_map: Some("big"),
                prefix: p,
                secret: None,
            })
            .chain([from("PCI", Some("big"), None)])
            .collect();
        let f = rules.evaluate("ns", &[distinct], &maps);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].variable, "PCIDEVICE_X");

        let secrets: Vec<String> = (0..20_000).map(|i| format!("s{i}")).collect();
        let mut unread = container("unread", &[], &[]);
        unread.env_from = secrets
            .iter()
            .map(|s| EnvFromSource {
                config_map: None,
                prefix: "",
                secret: Some(s),
            })
            .collect();
        let f = rules.evaluate("ns", &[unread], &maps);
        assert_eq!(f.len(), 20_000);
        assert!(f.iter().all(|f| f.action == Action::Warn));
    }

    #[test]
    fn shared_keys_default_copies_keys() {
        let maps = Maps(HashMap::from([(
            ("ns".to_string(), "m".to_string()),
            vec!["B".to_string(), "A".to_string()],
        )]));
        let shared = maps.shared_keys("ns", "m").expect("known");
        assert_eq!(&*shared, &["B".into(), "A".into()] as &[Box<str>]);
        assert!(maps.shared_keys("ns", "other").is_none());
    }
}
