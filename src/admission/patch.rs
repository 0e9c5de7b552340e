//! The patch a decision makes, kept symbolic until it is written.
//!
//! A Pod in a namespace of 50 Services gets hundreds of variables in each container. Built as
//! `serde_json::Value`s, that is five allocations per variable and a second pass to serialise
//! them; the server instead writes the env lists straight from the catalog's precomputed
//! variables ([`PatchPlan::write_json`]). [`PatchPlan::to_patch`] gives the same patch as a
//! `json_patch::Patch` (for `envlink mutate`, tests and fuzzing), and the tests below hold
//! the two encodings equal.

use std::io::Write;
use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::catalog::LinkedService;

/// The variables chosen for a Pod, deduplicated, in injection order.
#[derive(Debug, Clone, Default)]
pub struct InjectedVars {
    services: Vec<Arc<LinkedService>>,
    entries: Vec<Entry>,
}

/// Where one variable sits: its Service and its span in that Service's buffer, so reading
/// it back is two slices (it is read once per container when the patch is written).
#[derive(Debug, Clone, Copy)]
struct Entry {
    service: u32,
    at: u32,
    name_len: u32,
    value_len: u32,
}

impl InjectedVars {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a Service; returns its handle for [`InjectedVars::push`].
    pub fn add_service(&mut self, service: Arc<LinkedService>) -> u32 {
        self.services.push(service);
        u32::try_from(self.services.len() - 1).unwrap_or(u32::MAX)
    }

    /// Adds the variable `name`/`value` found at position `at` of Service `service` (from
    /// [`LinkedService::variables_at`]).
    pub fn push(&mut self, service: u32, at: usize, name: &str, value: &str) {
        let fits = |n: usize| u32::try_from(n).ok();
        if let (Some(at), Some(name_len), Some(value_len)) =
            (fits(at), fits(name.len()), fits(value.len()))
        {
            self.entries.push(Entry {
                service,
                at,
                name_len,
                value_len,
            });
        }
    }

    /// How many variables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every variable (over the limit).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.services.clear();
    }

    /// Variable `i` as (name, value).
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        let e = *self.entries.get(i)?;
        self.services.get(e.service as usize)?.variable_span(
            e.at as usize,
            e.name_len as usize,
            e.value_len as usize,
        )
    }

    /// All variables as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.entries.len()).filter_map(|i| self.get(i))
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
        /// The container's own entries that stay, as they were.
        kept: Vec<Value>,
    },
    /// Any other operation.
    Op(PatchOperation),
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

    /// The same patch as `json_patch` operations.
    pub fn to_patch(&self) -> Patch {
        Patch(
            self.ops
                .iter()
                .map(|op| match op {
                    PlannedOp::Op(op) => op.clone(),
                    PlannedOp::Env {
                        path,
                        replace,
                        injected,
                        kept,
                    } => {
                        let mut env: Vec<Value> = injected
                            .iter()
                            .filter_map(|&i| self.vars.get(i as usize))
                            .map(|(name, value)| env_entry(name, value))
                            .collect();
                        env.extend(kept.iter().cloned());
                        let value = Value::Array(env);
                        if *replace {
                            PatchOperation::Replace(ReplaceOperation {
                                path: path.clone(),
                                value,
                            })
                        } else {
                            PatchOperation::Add(AddOperation {
                                path: path.clone(),
                                value,
                            })
                        }
                    }
                })
                .collect(),
        )
    }

    /// Writes the patch as JSON, byte for byte what `serde_json` writes for
    /// [`PatchPlan::to_patch`]. Variable names and values are JSON-safe by construction
    /// (the catalog refuses Services with characters that would need escaping), so they are
    /// copied as they are.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'[');
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
                } => {
                    out.extend_from_slice(if *replace {
                        br#"{"op":"replace","path":"#
                    } else {
                        br#"{"op":"add","path":"#
                    });
                    serde_json::to_writer(&mut *out, path)?;
                    out.extend_from_slice(br#","value":["#);
                    let mut first = true;
                    for (name, value) in injected.iter().filter_map(|&i| self.vars.get(i as usize))
                    {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(br#"{"name":""#);
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(br#"","value":""#);
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(br#""}"#);
                    }
                    for value in kept {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        serde_json::to_writer(&mut *out, value)?;
                    }
                    out.extend_from_slice(b"]}");
                }
            }
        }
        out.push(b']');
        // Writing to a Vec cannot fail; `flush` keeps the Write import honest.
        out.flush().map_err(serde_json::Error::io)
    }

    /// The patch as JSON bytes (see [`PatchPlan::write_json`]).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.vars.len() * 64 * self.ops.len().max(1));
        self.write_json(&mut out)?;
        Ok(out)
    }
}

/// `{"name": name, "value": value}`.
pub fn env_entry(name: &str, value: &str) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert("name".into(), Value::String(name.into()));
    m.insert("value".into(), Value::String(value.into()));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicelinks::{LinkPort, ServiceLink};
    use serde_json::json;

    fn service(name: &str, ip: &str) -> Arc<LinkedService> {
        let link = ServiceLink {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: vec![LinkPort {
                name: "http".into(),
                port: 80,
                protocol: String::new(),
            }],
        };
        Arc::new(LinkedService::new(&link).expect("valid service"))
    }

    #[test]
    fn direct_json_equals_serde_of_the_patch() {
        let mut vars = InjectedVars::new();
        let a = vars.add_service(service("a", "10.0.0.1"));
        let b = vars.add_service(service("b-ß", "fd00::1"));
        for handle in [a, b] {
            let service = Arc::clone(&vars.services[handle as usize]);
            for (at, name, value) in service.variables_at() {
                vars.push(handle, at, name, value);
            }
        }
        let plan = PatchPlan {
            vars,
            ops: vec![
                PlannedOp::Env {
                    path: PointerBuf::from_tokens(["spec", "containers", "0", "env"]),
                    replace: true,
                    injected: vec![0, 2, 5, 11, 13],
                    kept: vec![
                        json!({"name": "Q\"uote\\", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}),
                    ],
                },
                PlannedOp::Env {
                    path: PointerBuf::from_tokens(["spec", "initContainers", "1", "env"]),
                    replace: false,
                    injected: vec![],
                    kept: vec![],
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
        };
        let direct = plan.to_json().expect("writes");
        let via_serde = serde_json::to_vec(&plan.to_patch()).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&direct),
            String::from_utf8_lossy(&via_serde)
        );
        let reparsed: Patch = serde_json::from_slice(&direct).expect("valid JSON Patch");
        assert_eq!(reparsed, plan.to_patch());
        assert_eq!(PatchPlan::default().to_json().expect("empty"), b"[]");
    }
}
