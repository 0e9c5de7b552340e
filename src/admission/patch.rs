//! The patch a decision makes, kept symbolic until it is written.
//!
//! A Pod in a namespace of 50 Services gets hundreds of variables in each container. Built as
//! `serde_json::Value`s, that is five allocations per variable and a second pass to serialise
//! them; instead the one encoder ([`PatchPlan::write_json`]) writes the env lists straight
//! from the variables rendered for the review ([`Rendered`]): when their text was found
//! plain (nothing a JSON string escapes: the catalog refuses such bytes), runs of the
//! rendering's own `{"name":…,"value":…}` objects are copied whole; otherwise each name and
//! value goes through serde_json's string escaping, so it is correct for any text whatever
//! the catalog let in. Escaping every string was ~8 % of an S1 review's CPU under load, and
//! writing S2's 657 objects one piece at a time ~5 % (issue 16; BENCHMARKS.md).
//! [`PatchPlan::to_patch`] reads that output back as a `json_patch::Patch` (for `envlink
//! mutate`, tests and fuzzing).

use std::ops::Range;

use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation};

use crate::catalog::Rendered;

/// The variables chosen for a Pod, deduplicated, in injection order: the chosen Services'
/// variables as rendered for this review, and which of them are injected.
#[derive(Debug, Clone, Default)]
pub struct InjectedVars {
    rendered: Rendered,
    /// Indices into `rendered`, in injection order.
    entries: Vec<u32>,
}

impl InjectedVars {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The variables `entries` (indices into `rendered`) of `rendered`.
    pub fn of(rendered: Rendered, entries: Vec<u32>) -> Self {
        Self { rendered, entries }
    }

    /// How many variables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Variable `i` as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        self.rendered.get(self.rendered_index(i)?)
    }

    /// Where variable `i` is in the rendered variables.
    fn rendered_index(&self, i: usize) -> Option<usize> {
        self.entries.get(i).map(|&at| at as usize)
    }

    /// All variables as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.entries.len()).filter_map(|i| self.get(i))
    }

    /// Whether their text may be copied into JSON as is ([`Rendered::is_json_plain`]).
    fn is_json_plain(&self) -> bool {
        self.rendered.is_json_plain()
    }
}

/// One planned change.
#[derive(Debug, Clone)]
pub enum PlannedOp {
    /// Set a container's `env` to the chosen injected variables followed by `kept`.
    Env {
        /// `/spec/<containers>/<i>/env`.
        path: PointerBuf,
        /// `replace` when the container had an `env` list, `add` otherwise.
        replace: bool,
        /// Indices into [`InjectedVars`] injected here, in order.
        injected: Vec<u32>,
        /// The container's own entries that stay, as the JSON text the user wrote, joined by
        /// commas (copied, never re-encoded: fields envlink does not know survive, and no
        /// JSON tree of a large `env` is built).
        kept: String,
    },
    /// Any other operation.
    Op(PatchOperation),
}

/// A range of a patch's JSON that repeats an earlier range byte for byte: `bytes[at..at +
/// source.len()] == bytes[source]`, with `at` and `source.start` equal modulo 3, so the
/// base64 of the repeat equals the base64 of the source (groups of three bytes line up the
/// same way) and an encoder may copy it instead of encoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// The bytes repeated.
    pub source: Range<usize>,
    /// Where the repeat starts.
    pub at: usize,
}

/// A patch's JSON written to be base64-encoded: the bytes, and the ranges that repeat
/// earlier ones ([`PatchPlan::to_json_for_base64`]).
#[derive(Debug, Clone, Default)]
pub struct PatchJson {
    /// The JSON text.
    pub bytes: Vec<u8>,
    /// Repeated ranges, in increasing order of `at`, none overlapping another or a source.
    pub repeats: Vec<Repeat>,
}

/// A JSON Patch (RFC 6902) in the making.
#[derive(Debug, Clone, Default)]
pub struct PatchPlan {
    /// The variables the `Env` operations refer to.
    pub vars: InjectedVars,
    /// The operations, in order.
    pub ops: Vec<PlannedOp>,
}

impl PatchPlan {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Writes the patch as JSON. Names and values are escaped as JSON strings; the user's own
    /// entries are copied as they were written (they were read as JSON, so they are JSON).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write(out, None)
    }

    /// [`PatchPlan::write_json`], noting every repeated list in `repeats` (when given) after
    /// aligning it with its source modulo 3 by up to two spaces (JSON whitespace).
    fn write(
        &self,
        out: &mut Vec<u8>,
        mut repeats: Option<&mut Vec<Repeat>>,
    ) -> serde_json::Result<()> {
        out.push(b'[');
        let mut last = None;
        for (n, op) in self.ops.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            match op {
                PlannedOp::Op(op) => serde_json::to_writer(&mut *out, op)?,
                PlannedOp::Env {
                    path,
                    replace,
                    injected,
                    kept,
                } => self.write_env(
                    out,
                    (path, *replace),
                    (injected, kept),
                    &mut last,
                    repeats.as_deref_mut(),
                )?,
            }
        }
        out.push(b']');
        Ok(())
    }

    /// One `env` operation: `{"op":…,"path":…,"value":[injected…, kept…]}`.
    ///
    /// `last` is the injected list written last and where its bytes are in `out`. The
    /// containers of a Pod usually get the same list (the kubelet gives every container the
    /// namespace's Services), so the next container's identical list is copied from there
    /// instead of written again: for S2 (3 containers × 657 variables) writing the names and
    /// values was a quarter of the review's CPU under load (issue 16's profile).
    ///
    /// With `repeats`, the copy is first moved to the same offset modulo 3 as the list it
    /// copies, by up to two spaces after the `[`, and noted there: the answer's base64 of the
    /// repeat is then a copy of the first list's base64 (`http::base64`), which for S2 saves
    /// encoding two of the three containers' 36 KB lists.
    fn write_env<'a>(
        &'a self,
        out: &mut Vec<u8>,
        (path, replace): (&PointerBuf, bool),
        (injected, kept): (&'a [u32], &str),
        last: &mut Option<(&'a [u32], Range<usize>)>,
        repeats: Option<&mut Vec<Repeat>>,
    ) -> serde_json::Result<()> {
        out.extend_from_slice(if replace {
            br#"{"op":"replace","path":"#
        } else {
            br#"{"op":"add","path":"#
        });
        serde_json::to_writer(&mut *out, path)?;
        out.extend_from_slice(br#","value":["#);
        let mut start = out.len();
        match last {
            Some((previous, range)) if *previous == injected => {
                if let Some(repeats) = repeats
                    && range.start < range.end
                {
                    let spaces = (range.start + 3 - start % 3) % 3;
                    out.resize(start + spaces, b' ');
                    start = out.len();
                    repeats.push(Repeat {
                        source: range.clone(),
                        at: start,
                    });
                }
                out.extend_from_within(range.clone());
            }
            _ => {
                self.write_injected(out, injected)?;
                *last = Some((injected, start..out.len()));
            }
        }
        if !kept.is_empty() {
            if out.len() > start {
                out.push(b',');
            }
            out.extend_from_slice(kept.as_bytes());
        }
        out.extend_from_slice(b"]}");
        Ok(())
    }

    /// The injected variables as `{"name":…,"value":…}` objects, separated by commas.
    ///
    /// When the text is plain, each run of variables that sit next to each other in the
    /// rendering (nearly all: a run ends only where a name was taken by an earlier Service
    /// or the container defines it) is one copy of the rendering's JSON objects; otherwise
    /// each name and value goes through serde_json's escaper.
    fn write_injected(&self, out: &mut Vec<u8>, injected: &[u32]) -> serde_json::Result<()> {
        if self.vars.is_json_plain() {
            self.copy_injected(out, injected);
            return Ok(());
        }
        let mut first = true;
        for (name, value) in injected.iter().filter_map(|&i| self.vars.get(i as usize)) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(br#"{"name":"#);
            serde_json::to_writer(&mut *out, name)?;
            out.extend_from_slice(br#","value":"#);
            serde_json::to_writer(&mut *out, value)?;
            out.push(b'}');
        }
        Ok(())
    }

    /// [`PatchPlan::write_injected`] for plain text: runs of the rendering copied whole.
    fn copy_injected(&self, out: &mut Vec<u8>, injected: &[u32]) {
        let rendered = &self.vars.rendered;
        let mut first = true;
        let mut write = |(from, to): (usize, usize)| {
            if let Some(objects) = rendered.json_objects(from, to) {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(objects.as_bytes());
            }
        };
        let mut run: Option<(usize, usize)> = None;
        for at in injected
            .iter()
            .filter_map(|&i| self.vars.rendered_index(i as usize))
        {
            run = match run {
                Some((from, to)) if at == to + 1 => Some((from, at)),
                Some(done) => {
                    write(done);
                    Some((at, at))
                }
                None => Some((at, at)),
            };
        }
        if let Some(done) = run {
            write(done);
        }
    }

    /// About how many bytes the JSON takes (a first capacity).
    fn likely_len(&self) -> usize {
        64 + self.vars.len() * 64 * self.ops.len().max(1)
    }

    /// The patch as JSON bytes (see [`PatchPlan::write_json`]).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.likely_len());
        self.write_json(&mut out)?;
        Ok(out)
    }

    /// The patch as JSON bytes to be base64-encoded, with the repeated ranges an encoder may
    /// copy ([`PatchJson`]). The same JSON value as [`PatchPlan::to_json`]'s; the text differs
    /// only by up to two spaces at the start of each repeated `env` list.
    pub fn to_json_for_base64(&self) -> serde_json::Result<PatchJson> {
        let mut json = PatchJson {
            bytes: Vec::with_capacity(self.likely_len()),
            repeats: Vec::new(),
        };
        self.write(&mut json.bytes, Some(&mut json.repeats))?;
        Ok(json)
    }

    /// The same patch as `json_patch` operations: [`PatchPlan::to_json`]'s output read back,
    /// so there is one encoder. `Err` only if a kept entry was not JSON (it always is).
    pub fn to_patch(&self) -> serde_json::Result<Patch> {
        serde_json::from_slice(&self.to_json()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::{AddOperation, ReplaceOperation};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// A container whose injected list equals the previous one's gets a copy of its bytes;
    /// a different list in between is written anew, and kept entries follow either.
    #[test]
    fn repeated_injected_lists_are_copied_correctly() {
        let mut plan = plan_of(
            &pairs(&[
                ("WEB_SERVICE_HOST", "10.0.0.1"),
                ("WEB_PORT", "tcp://10.0.0.1:80"),
                ("Q\"UOTE", "é\n"),
            ]),
            "",
            false,
        );
        let all: Vec<u32> = (0..u32::try_from(plan.vars.len()).unwrap()).collect();
        let env = |i: usize, injected: Vec<u32>, kept: &str| PlannedOp::Env {
            path: PointerBuf::from_tokens(["spec", "containers", &i.to_string(), "env"]),
            replace: false,
            injected,
            kept: kept.to_string(),
        };
        plan.ops = vec![
            env(0, all.clone(), ""),
            env(1, all.clone(), r#"{"name":"OWN","value":"x"}"#),
            env(2, all[..2].to_vec(), ""),
            env(3, all[..2].to_vec(), ""),
            env(4, all.clone(), ""),
            env(5, vec![], r#"{"name":"ONLY","value":"y"}"#),
        ];
        let vars: Vec<Value> = plan
            .vars
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let written: Value = serde_json::from_slice(&plan.to_json().unwrap()).unwrap();
        let values: Vec<&Value> = (0..6).map(|i| &written[i]["value"]).collect();
        let own = json!({"name": "OWN", "value": "x"});
        let mut with_own = vars.clone();
        with_own.push(own);
        assert_eq!(values[0], &Value::Array(vars.clone()));
        assert_eq!(values[1], &Value::Array(with_own));
        assert_eq!(values[2], &Value::Array(vars[..2].to_vec()));
        assert_eq!(values[3], &Value::Array(vars[..2].to_vec()));
        assert_eq!(values[4], &Value::Array(vars.clone()));
        assert_eq!(values[5], &json!([{"name": "ONLY", "value": "y"}]));

        // Written for base64: the same JSON value; each copied list noted, aligned with its
        // source modulo 3, and really a repeat of it.
        let for_base64 = plan.to_json_for_base64().unwrap();
        let value: Value = serde_json::from_slice(&for_base64.bytes).unwrap();
        assert_eq!(value, written);
        let bytes = &for_base64.bytes;
        assert_eq!(for_base64.repeats.len(), 2, "{:?}", for_base64.repeats);
        for repeat in &for_base64.repeats {
            let length = repeat.source.len();
            assert_eq!(repeat.at % 3, repeat.source.start % 3);
            assert!(repeat.source.end <= repeat.at);
            assert_eq!(
                bytes[repeat.source.clone()],
                bytes[repeat.at..repeat.at + length]
            );
        }
        assert!(for_base64.repeats.windows(2).all(|w| w[0].at < w[1].at));
    }

    /// The plain flag holds exactly when the rendering's own JSON object for a variable is
    /// what serde_json writes for it.
    #[test]
    fn json_objects_match_serde_json() {
        for text in [
            "",
            "SVC_00001_SERVICE_HOST",
            "tcp://10.0.0.1:80",
            "quote \" and \\ backslash",
            "tab\tnew\nline\u{1}\u{1f}",
            "del \u{7f} é ☃ 𝄞 \u{2028}",
            "nul \u{0} inside",
        ] {
            let rendered = Rendered::from_pairs([("N", text)]);
            let copied = rendered.json_objects(0, 0).expect("one variable");
            let escaped = json!({"name": "N", "value": text}).to_string();
            assert_eq!(rendered.is_json_plain(), copied == escaped, "{text:?}");
        }
    }

    /// A plan injecting every one of these variables (in order) into one container,
    /// followed by `kept`, plus an annotation operation.
    fn plan_of(vars: &[(String, String)], kept: &str, replace: bool) -> PatchPlan {
        let rendered = Rendered::from_pairs(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let all: Vec<u32> = (0..rendered.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        let vars = InjectedVars::of(rendered, all.clone());
        let injected = all;
        PatchPlan {
            vars,
            ops: vec![
                PlannedOp::Env {
                    path: PointerBuf::from_tokens(["spec", "containers", "0", "env"]),
                    replace,
                    injected,
                    kept: kept.to_string(),
                },
                PlannedOp::Env {
                    path: PointerBuf::from_tokens(["spec", "initContainers", "1", "env"]),
                    replace: false,
                    injected: vec![],
                    kept: String::new(),
                },
                PlannedOp::Op(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens([
                        "metadata",
                        "annotations",
                        "envlink.io/injected",
                    ]),
                    value: json!("a,b-ß"),
                })),
            ],
        }
    }

    /// The same patch built as `json_patch` values, independently of the encoder.
    fn expected(vars: &[(String, String)], kept: &str, replace: bool) -> Patch {
        let mut env: Vec<Value> = vars
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        if let Ok(Value::Array(own)) = serde_json::from_str::<Value>(&format!("[{kept}]")) {
            env.extend(own);
        }
        let path = PointerBuf::from_tokens(["spec", "containers", "0", "env"]);
        let first = if replace {
            PatchOperation::Replace(ReplaceOperation {
                path,
                value: Value::Array(env),
            })
        } else {
            PatchOperation::Add(AddOperation {
                path,
                value: Value::Array(env),
            })
        };
        Patch(vec![
            first,
            PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["spec", "initContainers", "1", "env"]),
                value: json!([]),
            }),
            PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations", "envlink.io/injected"]),
                value: json!("a,b-ß"),
            }),
        ])
    }

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn encoded_patch_equals_the_json_patch_values() {
        let a = pairs(&[
            ("A_SERVICE_HOST", "10.0.0.1"),
            ("A_PORT", "tcp://10.0.0.1:80"),
        ]);
        let b = pairs(&[("B_SERVICE_HOST", "fd00::1"), ("Q\"UOTE\\", "é\n\u{1}")]);
        let kept = r#"{"name": "Q\"uote\\", "valueFrom": {"fieldRef": {"fieldPath": "x"}}},{"value":"\u00e9","name":"B"}"#;
        let all: Vec<_> = a.iter().chain(&b).cloned().collect();
        let plan = plan_of(&all, kept, true);
        let direct = plan.to_json().expect("writes");
        // The user's entries are copied as written, so the bytes differ from serde's in
        // spacing and escapes only; the values are equal.
        let direct_value: Value = serde_json::from_slice(&direct).expect("valid JSON");
        let want = expected(&all, kept, true);
        assert_eq!(
            direct_value,
            serde_json::to_value(&want).expect("serialises")
        );
        assert!(
            String::from_utf8_lossy(&direct).contains(r#"{"value":"\u00e9","name":"B"}"#),
            "own entries copied verbatim"
        );
        let reparsed: Patch = serde_json::from_slice(&direct).expect("valid JSON Patch");
        assert_eq!(reparsed, want);
        assert_eq!(plan.to_patch().expect("reads back"), want);
        assert_eq!(PatchPlan::default().to_json().expect("empty"), b"[]");
    }

    /// Any text, often with what a JSON string escapes.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é€😀a-z_ ]{0,16}",
        ]
    }

    proptest! {
        #[test]
        fn any_names_and_values_encode_to_the_json_patch_form(
            vars in proptest::collection::vec((text(), text()), 0..8),
            replace in any::<bool>(),
        ) {
            let plan = plan_of(&vars, "", replace);
            let direct = plan.to_json().expect("writes");
            let parsed: Value = serde_json::from_slice(&direct).expect("valid JSON");
            let want = expected(&vars, "", replace);
            prop_assert_eq!(parsed, serde_json::to_value(&want).expect("serialises"));
            prop_assert_eq!(plan.to_patch().expect("reads back"), want);
        }

        #[test]
        fn a_plain_flag_is_only_set_on_text_serde_json_copies(
            vars in proptest::collection::vec((text(), text()), 1..4),
        ) {
            let rendered =
                Rendered::from_pairs(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            if rendered.is_json_plain() {
                let copied = rendered.json_objects(0, rendered.len() - 1).expect("all");
                let escaped = vars
                    .iter()
                    .map(|(n, v)| json!({"name": n, "value": v}).to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                prop_assert_eq!(copied, escaped);
            } else {
                let escaped = |t: &String| serde_json::to_string(t).ok() != Some(format!("\"{t}\""));
                let some_escaped = vars.iter().any(|(n, v)| escaped(n) || escaped(v));
                prop_assert!(some_escaped, "plain text found not plain");
            }
        }

        /// Whatever variables were deduplicated away and whatever a container does not get,
        /// the env list holds exactly the injected variables, in order, plain or not.
        #[test]
        fn any_subset_of_the_variables_encodes_exactly(
            vars in proptest::collection::vec((text(), text()), 0..12),
            plain_only in any::<bool>(),
            kept_mask in any::<u16>(),
            injected_mask in any::<u16>(),
        ) {
            let vars: Vec<(String, String)> = if plain_only {
                vars.into_iter()
                    .map(|(n, v)| (plain_text(&n), plain_text(&v)))
                    .collect()
            } else {
                vars
            };
            let rendered =
                Rendered::from_pairs(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            prop_assert!(!plain_only || rendered.is_json_plain());
            // The distinct variables (what deduplication kept), then a container's share.
            let entries: Vec<u32> = (0..vars.len() as u32)
                .filter(|i| kept_mask & (1 << i) != 0)
                .collect();
            let injected: Vec<u32> = (0..entries.len() as u32)
                .filter(|i| injected_mask & (1 << i) != 0)
                .collect();
            let want: Vec<Value> = injected
                .iter()
                .map(|&i| {
                    let (n, v) = &vars[entries[i as usize] as usize];
                    json!({"name": n, "value": v})
                })
                .collect();
            let plan = PatchPlan {
                vars: InjectedVars::of(rendered, entries),
                ops: vec![PlannedOp::Env {
                    path: PointerBuf::from_tokens(["spec", "containers", "0", "env"]),
                    replace: false,
                    injected,
                    kept: String::new(),
                }],
            };
            let written: Value =
                serde_json::from_slice(&plan.to_json().expect("writes")).expect("valid JSON");
            prop_assert_eq!(&written[0]["value"], &Value::Array(want));
        }
    }

    /// `text` without anything a JSON string escapes.
    fn plain_text(text: &str) -> String {
        text.chars()
            .filter(|&c| c != '"' && c != '\\' && !c.is_control())
            .collect()
    }
}
