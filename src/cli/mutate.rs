//! `envlink mutate`: the admission logic offline, for CI pipelines and tests.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::admission::{self, Operation, Request, Verdict};
use crate::catalog::{Catalog, file};
use crate::config::Policy;
use crate::manifest;
use crate::reserved::NoConfigMaps;

/// Arguments of `envlink mutate`.
#[derive(Debug, Args)]
pub struct MutateArgs {
    /// The Pod, YAML or JSON (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub pod: String,
    /// Services: YAML (one or many documents) or JSON, each a Service, List or ServiceList
    /// (`-` for standard input). Without it, only the reserved-variable rules have effect.
    #[arg(long, value_name = "FILE")]
    pub services: Option<String>,
    /// Namespace of the Pod; default: its `metadata.namespace`, else `default`. Services
    /// without a namespace are taken to be in it too.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// The policy file (see the README); default: the built-in policy.
    #[arg(long, value_name = "FILE", env = "ENVLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to print on standard output.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// Output formats of `envlink mutate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The mutated Pod as YAML.
    Yaml,
    /// The mutated Pod as JSON.
    Json,
    /// The RFC 6902 JSON Patch envlink would return.
    Patch,
}

/// How `envlink mutate` ended; the process exit code follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutateExit {
    /// The Pod is admitted (exit 0).
    Admitted,
    /// The Pod is refused (exit 1).
    Denied,
    /// The input is unusable (exit 2).
    BadInput,
}

impl MutateExit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            MutateExit::Admitted => 0,
            MutateExit::Denied => 1,
            MutateExit::BadInput => 2,
        }
    }
}

/// Runs `envlink mutate`, writing the result to `out` and messages to `err`.
pub fn run(args: &MutateArgs, out: &mut dyn Write, err: &mut dyn Write) -> MutateExit {
    match run_inner(args, out, err) {
        Ok(exit) => exit,
        Err(message) => {
            let _ = writeln!(err, "envlink mutate: {message}");
            MutateExit::BadInput
        }
    }
}

fn run_inner(
    args: &MutateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<MutateExit, String> {
    if args.pod == "-" && args.services.as_deref() == Some("-") {
        return Err("--pod and --services cannot both read standard input".into());
    }
    let policy = match &args.config {
        Some(path) => Policy::from_file(path).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let (text, origin) = manifest::read_input(&args.pod).map_err(|e| e.to_string())?;
    let mut docs = manifest::parse_documents(&text, &origin).map_err(|e| e.to_string())?;
    if docs.len() != 1 {
        return Err(format!(
            "{origin}: expected one Pod, found {} documents",
            docs.len()
        ));
    }
    let mut pod = docs.remove(0);
    match pod.get("kind").and_then(Value::as_str) {
        Some("Pod") | None => {}
        Some(other) => return Err(format!("{origin}: kind {other:?} is not a Pod")),
    }
    let namespace = args
        .namespace
        .clone()
        .or_else(|| {
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".to_string());
    let links = match &args.services {
        Some(path) => file::load_services(path, &namespace).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let (catalog, ingest_errors) = Catalog::from_links(links);
    if let Some(e) = ingest_errors.first() {
        return Err(e.to_string());
    }
    // The API server defaults `enableServiceLinks` to true before webhooks see a Pod.
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("enableServiceLinks")
            .or_insert(Value::Bool(true));
    }
    let request = Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace: &namespace,
        dry_run: false,
        object: Some(&pod),
        old_object: None,
    };
    let mut decision = admission::mutate(&request, &catalog, &policy, &NoConfigMaps);
    let patch = decision.patch.to_patch();
    if let Verdict::Allow = decision.verdict {
        // The final check the validating webhook would make on the mutated Pod.
        let mut mutated = pod.clone();
        json_patch::patch(&mut mutated, &patch)
            .map_err(|e| format!("internal: patch does not apply: {e}"))?;
        let check = admission::validate(
            &Request {
                object: Some(&mutated),
                ..request
            },
            &policy,
            &NoConfigMaps,
        );
        if let Verdict::Deny(_) = check.verdict {
            decision.verdict = check.verdict;
        }
    }
    for warning in &decision.warnings {
        let _ = writeln!(err, "Warning: {warning}");
    }
    match decision.verdict {
        Verdict::Deny(message) => {
            let _ = writeln!(err, "denied: {message}");
            Ok(MutateExit::Denied)
        }
        Verdict::Invalid(message) => Err(format!("{origin}: {message}")),
        Verdict::Allow => {
            let text = match args.output {
                Output::Patch => serde_json::to_string_pretty(&patch).map_err(|e| e.to_string())?,
                Output::Json | Output::Yaml => {
                    json_patch::patch(&mut pod, &patch)
                        .map_err(|e| format!("internal: patch does not apply: {e}"))?;
                    if args.output == Output::Json {
                        serde_json::to_string_pretty(&pod).map_err(|e| e.to_string())?
                    } else {
                        serde_saphyr::to_string(&pod).map_err(|e| e.to_string())?
                    }
                }
            };
            writeln!(out, "{}", text.trim_end())
                .map_err(|e| format!("cannot write output: {e}"))?;
            Ok(MutateExit::Admitted)
        }
    }
}
