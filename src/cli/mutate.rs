//! `envlink mutate`: the admission logic offline, for CI pipelines and tests.
//!
//! Reads manifests (files, directories, multi-document YAML, `List`s), runs every Pod and
//! every workload's Pod template through the same decision as the webhook (`/mutate`, then
//! the final `/validate` check on the result), and prints the mutated objects, the patches
//! or a per-container summary. Services come from a file or, with `--kubeconfig`, from a
//! one-shot list of the cluster's Services.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, ValueEnum};
use hashbrown::HashSet;
use serde_json::{Map, Value};

use crate::admission::{
    self, ANNOTATION_INJECTED, ANNOTATION_SERVICES, Operation, Request, Verdict,
};
use crate::catalog::{Catalog, file};
use crate::config::{InjectionMode, Policy};
use crate::manifest;
use crate::podshape::ContainerKind;
use crate::reserved::NoConfigMaps;
use crate::servicelinks::{DEFAULT_NAMESPACE, MASTER_SERVICE_NAME, ServiceLink, is_dns_label};

/// Arguments of `envlink mutate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).multiple(true).args(["paths", "filenames", "pod"])))]
pub struct MutateArgs {
    /// Manifests: files, or directories searched recursively for `*.yaml`, `*.yml` and
    /// `*.json` (`-` for standard input). Each document may be a Pod, a Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob, or a `List` of them; other kinds
    /// are printed unchanged.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// More manifests, as for PATH (repeatable, like `kubectl apply -f`).
    #[arg(long = "filename", short = 'f', value_name = "PATH")]
    pub filenames: Vec<String>,
    /// One Pod, YAML or JSON (`-` for standard input): exactly one document, which must be
    /// a Pod.
    #[arg(long, value_name = "FILE")]
    pub pod: Option<String>,
    /// Services: YAML (one or many documents) or JSON, each a Service, List or ServiceList
    /// (`-` for standard input). Without it or --kubeconfig, only the reserved-variable
    /// rules have effect.
    #[arg(long, value_name = "FILE", conflicts_with = "kubeconfig")]
    pub services: Option<String>,
    /// Take the Services from this cluster (one list of the namespaces concerned, no watch;
    /// needs `list` on Services) instead of --services.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of every object; default: its `metadata.namespace`, else `default`. An
    /// object that names another namespace is printed with this one (and a note says so).
    /// Services without a namespace in --services are taken to be in it too.
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// The policy file (see the README); default: the built-in policy.
    #[arg(long, value_name = "FILE", env = "ENVLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to print on standard output.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
    /// Print the per-container summary on standard output instead of the objects (it goes
    /// to standard error otherwise).
    #[arg(long)]
    pub summary: bool,
}

/// Output formats of `envlink mutate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The mutated objects as YAML (one document each).
    Yaml,
    /// The mutated object as JSON (a `List` when there are several).
    Json,
    /// The RFC 6902 JSON Patch envlink would return (for a workload, rebased onto its Pod
    /// template; a list of `{kind, namespace, name, patch}` when there are several).
    Patch,
}

/// How `envlink mutate` ended; the process exit code follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MutateExit {
    /// Every object is admitted (exit 0).
    Admitted,
    /// An object is refused (exit 1).
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

/// One object read from the input.
#[derive(Debug)]
struct Object {
    /// Where it came from: `file`, `file, document 2`, `file, document 1, item 3`.
    origin: String,
    value: Value,
}

/// What envlink does with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A Pod.
    Pod,
    /// A workload whose Pod template is at this JSON pointer.
    Workload(&'static str),
    /// Anything else: printed unchanged.
    Other,
}

/// The judgement of one object.
struct Judged {
    identity: String,
    origin: String,
    verdict: Verdict,
    warnings: Vec<String>,
    notes: Vec<String>,
    /// The object to print (mutated, or unchanged for other kinds); `None` when refused.
    output: Option<Value>,
    /// The patch on the object (rebased onto the template for a workload).
    patch: Option<Value>,
    summary: String,
}

fn run_inner(
    args: &MutateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<MutateExit, String> {
    let inputs: Vec<&str> = args
        .paths
        .iter()
        .chain(&args.filenames)
        .map(String::as_str)
        .collect();
    check_stdin(args, &inputs)?;
    let mut policy = match &args.config {
        Some(path) => Policy::from_file(path).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let objects = read_objects(args, &inputs)?;
    let namespaces: Vec<String> = objects
        .iter()
        .map(|o| effective_namespace(&o.value, args.namespace.as_deref()))
        .collect();
    let catalog = load_catalog(args, &objects, &namespaces, &mut policy, err)?;

    let mut exit = MutateExit::Admitted;
    let mut judged = Vec::new();
    for (object, namespace) in objects.into_iter().zip(namespaces) {
        let j = judge(
            object,
            &namespace,
            args.namespace.as_deref(),
            &catalog,
            &policy,
        );
        exit = exit.max(match j.verdict {
            Verdict::Allow => MutateExit::Admitted,
            Verdict::Deny(_) => MutateExit::Denied,
            Verdict::Invalid(_) => MutateExit::BadInput,
        });
        judged.push(j);
    }
    write_messages(&judged, err);
    let summary: String = judged.iter().map(|j| j.summary.as_str()).collect();
    if args.summary {
        write!(out, "{summary}").map_err(|e| format!("cannot write output: {e}"))?;
        return Ok(exit);
    }
    let _ = write!(err, "{summary}");
    let text = render(&judged, args.output)?;
    if !text.is_empty() {
        writeln!(out, "{}", text.trim_end()).map_err(|e| format!("cannot write output: {e}"))?;
    }
    Ok(exit)
}

/// Refuses two inputs that both want standard input (`-`).
fn check_stdin(args: &MutateArgs, inputs: &[&str]) -> Result<(), String> {
    let mut stdin_users: Vec<&str> = inputs
        .iter()
        .filter(|p| **p == "-")
        .map(|_| "the manifests")
        .collect();
    if args.pod.as_deref() == Some("-") {
        stdin_users.insert(0, "--pod");
    }
    if args.services.as_deref() == Some("-") {
        stdin_users.push("--services");
    }
    if let [first, second, ..] = stdin_users.as_slice() {
        return Err(format!(
            "{first} and {second} cannot both read standard input (`-`)"
        ));
    }
    Ok(())
}

/// Every object of `--pod` and the manifests, in input order; at least one.
fn read_objects(args: &MutateArgs, inputs: &[&str]) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    if let Some(path) = &args.pod {
        objects.push(read_single_pod(path)?);
    }
    for path in inputs {
        read_path(path, &mut objects)?;
    }
    if objects.is_empty() {
        return Err("the manifests hold no objects".into());
    }
    Ok(objects)
}

/// The Service catalog from `--services` or `--kubeconfig`, with a note on `err` for what
/// it lacks. Without any Service, service-link injection is turned off in `policy`.
fn load_catalog(
    args: &MutateArgs,
    objects: &[Object],
    namespaces: &[String],
    policy: &mut Policy,
    err: &mut dyn Write,
) -> Result<Catalog, String> {
    let mut notes = Vec::new();
    let links = if let Some(path) = &args.services {
        let default_ns = common_namespace(namespaces, args.namespace.as_deref());
        let links = file::load_services(path, &default_ns).map_err(|e| e.to_string())?;
        if links.is_empty() {
            notes.push(format!(
                "{} holds no Services: only the reserved-variable rules were applied; service \
                 links are left as they are",
                if path == "-" { "standard input" } else { path }
            ));
        }
        links
    } else if let Some(kubeconfig) = &args.kubeconfig {
        cluster_services(kubeconfig, objects, namespaces)?
    } else {
        notes.push(
            "no Services given (--services or --kubeconfig): only the reserved-variable rules \
             were applied; service links are left as they are"
                .into(),
        );
        Vec::new()
    };
    if links.is_empty() {
        // With no Service known, injecting would record an empty set and turn the kubelet's
        // links off: the Pod would lose its service variables. Leave service links alone.
        policy.config.services.mode = InjectionMode::Off;
    } else if !links
        .iter()
        .any(|l| l.namespace == DEFAULT_NAMESPACE && l.name == MASTER_SERVICE_NAME)
    {
        notes.push(format!(
            "the Services hold no {DEFAULT_NAMESPACE}/{MASTER_SERVICE_NAME} (every \
             cluster has it): no KUBERNETES_* variables are injected (the kubelet still adds \
             them)"
        ));
    }
    let (catalog, ingest_errors) = Catalog::with_rules(&policy.rules).with_links(links);
    if let Some(e) = ingest_errors.first() {
        return Err(e.to_string());
    }
    for note in &notes {
        let _ = writeln!(err, "envlink mutate: {note}");
    }
    Ok(catalog)
}

/// Each object's notes, warnings and refusal on `err` (prefixed with the object when there
/// are several).
fn write_messages(judged: &[Judged], err: &mut dyn Write) {
    let several = judged.len() > 1;
    for j in judged {
        let who = if several {
            format!("{}: ", j.identity)
        } else {
            String::new()
        };
        for note in &j.notes {
            let _ = writeln!(err, "envlink mutate: {}: {note}", j.identity);
        }
        for warning in &j.warnings {
            let _ = writeln!(err, "Warning: {who}{warning}");
        }
        match &j.verdict {
            Verdict::Deny(message) => {
                let _ = writeln!(err, "denied: {who}{message}");
            }
            Verdict::Invalid(message) => {
                let _ = writeln!(err, "envlink mutate: {}: {message}", j.origin);
            }
            Verdict::Allow => {}
        }
    }
}

/// The printed objects or patches, in input order; refused objects are left out.
fn render(judged: &[Judged], output: Output) -> Result<String, String> {
    match output {
        Output::Patch => {
            let patches: Vec<&Judged> = judged.iter().filter(|j| j.patch.is_some()).collect();
            let value = match patches.as_slice() {
                [] => return Ok(String::new()),
                [one] if judged.len() == 1 => one.patch.clone().unwrap_or(Value::Null),
                many => Value::Array(
                    many.iter()
                        .map(|j| {
                            let mut entry = Map::new();
                            let field = |p: &str| {
                                j.output
                                    .as_ref()
                                    .and_then(|o| o.pointer(p))
                                    .cloned()
                                    .unwrap_or(Value::Null)
                            };
                            entry.insert("kind".into(), field("/kind"));
                            entry.insert("namespace".into(), field("/metadata/namespace"));
                            entry.insert("name".into(), field("/metadata/name"));
                            entry.insert("patch".into(), j.patch.clone().unwrap_or(Value::Null));
                            Value::Object(entry)
                        })
                        .collect(),
                ),
            };
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
        }
        Output::Json => {
            let objects: Vec<&Value> = judged.iter().filter_map(|j| j.output.as_ref()).collect();
            let value = match objects.as_slice() {
                [] => return Ok(String::new()),
                [one] if judged.len() == 1 => (*one).clone(),
                many => serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": many,
                }),
            };
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
        }
        Output::Yaml => {
            let mut text = String::new();
            for value in judged.iter().filter_map(|j| j.output.as_ref()) {
                if !text.is_empty() {
                    text.push_str("---\n");
                }
                text.push_str(&serde_saphyr::to_string(value).map_err(|e| e.to_string())?);
                if !text.ends_with('\n') {
                    text.push('\n');
                }
            }
            Ok(text)
        }
    }
}

/// `--pod FILE`: exactly one document, a Pod.
fn read_single_pod(path: &str) -> Result<Object, String> {
    let (text, origin) = manifest::read_input(path).map_err(|e| e.to_string())?;
    let mut docs = manifest::parse_documents(&text, &origin).map_err(|e| e.to_string())?;
    if docs.len() != 1 {
        return Err(format!(
            "{origin}: expected one Pod, found {} documents (use -f for several objects)",
            docs.len()
        ));
    }
    let value = docs.remove(0);
    match value.get("kind").and_then(Value::as_str) {
        Some("Pod") | None => Ok(Object { origin, value }),
        Some(other) => Err(format!(
            "{origin}: kind {other:?} is not a Pod (use -f for workloads)"
        )),
    }
}

/// A file, a directory (recursively) or standard input; every document, `List`s expanded.
fn read_path(path: &str, objects: &mut Vec<Object>) -> Result<(), String> {
    if path != "-" && Path::new(path).is_dir() {
        let mut files = Vec::new();
        manifest_files(Path::new(path), &mut files)?;
        if files.is_empty() {
            return Err(format!("{path}: no *.yaml, *.yml or *.json files"));
        }
        for file in files {
            read_file(&file.display().to_string(), objects)?;
        }
        return Ok(());
    }
    read_file(path, objects)
}

fn read_file(path: &str, objects: &mut Vec<Object>) -> Result<(), String> {
    let (text, origin) = manifest::read_input(path).map_err(|e| e.to_string())?;
    let docs = manifest::parse_documents(&text, &origin).map_err(|e| e.to_string())?;
    let several = docs.len() > 1;
    for (i, doc) in docs.into_iter().enumerate() {
        let at = if several {
            format!("{origin}, document {}", i + 1)
        } else {
            origin.clone()
        };
        if !doc.is_object() {
            return Err(format!("{at}: not an object (a Kubernetes manifest)"));
        }
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            let items = match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(format!("{at}: `items` is not a list")),
            };
            for (j, item) in items.into_iter().enumerate() {
                if !item.is_object() {
                    return Err(format!("{at}, item {}: not an object", j + 1));
                }
                objects.push(Object {
                    origin: format!("{at}, item {}", j + 1),
                    value: item,
                });
            }
        } else {
            objects.push(Object {
                origin: at,
                value: doc,
            });
        }
    }
    Ok(())
}

/// The manifest files under a directory, sorted by path (so the output order is stable).
/// Symbolic links to directories are not followed (they could loop).
fn manifest_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    paths.sort();
    for path in paths {
        let link = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if link.is_dir() {
            manifest_files(&path, files)?;
        } else if !link.file_type().is_symlink() || path.is_file() {
            let is_manifest = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if is_manifest {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// Pods, the six workload kinds (by API group and kind), or anything else.
fn shape(value: &Value) -> Shape {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.rsplit_once('/').map_or("", |(g, _)| g));
    let group_is = |groups: &[&str]| group.is_none_or(|g| groups.contains(&g));
    match kind {
        "Pod" if group_is(&[""]) => Shape::Pod,
        // `extensions/v1beta1` is how manifests for old clusters still spell these.
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
            if group_is(&["apps", "extensions"]) =>
        {
            Shape::Workload("/spec/template")
        }
        "Job" if group_is(&["batch"]) => Shape::Workload("/spec/template"),
        "CronJob" if group_is(&["batch"]) => Shape::Workload("/spec/jobTemplate/spec/template"),
        _ => Shape::Other,
    }
}

fn object_namespace(value: &Value) -> Option<&str> {
    value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
}

/// `--namespace`, else the object's own, else `default`.
fn effective_namespace(value: &Value, flag: Option<&str>) -> String {
    flag.or_else(|| object_namespace(value))
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string()
}

/// Where Services without a namespace go: `--namespace`, else the objects' one namespace
/// when they share it, else `default`.
fn common_namespace(namespaces: &[String], flag: Option<&str>) -> String {
    if let Some(ns) = flag {
        return ns.to_string();
    }
    match namespaces.split_first() {
        Some((first, rest)) if rest.iter().all(|ns| ns == first) => first.clone(),
        _ => DEFAULT_NAMESPACE.to_string(),
    }
}

/// `Kind namespace/name`.
fn identity(value: &Value, namespace: &str) -> String {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .or_else(|| {
            value
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
        })
        .unwrap_or("(no name)");
    format!("{kind} {namespace}/{name}")
}

/// The Services of the namespaces concerned, from the cluster: the objects' namespaces,
/// `default` (for `kubernetes`) and the namespaces their annotations name (`prod/db`).
fn cluster_services(
    kubeconfig: &Path,
    objects: &[Object],
    namespaces: &[String],
) -> Result<Vec<ServiceLink>, String> {
    let mut wanted: BTreeSet<String> = namespaces.iter().cloned().collect();
    wanted.insert(DEFAULT_NAMESPACE.to_string());
    for object in objects {
        let meta = match shape(&object.value) {
            Shape::Pod => object.value.get("metadata"),
            Shape::Workload(pointer) => object.value.pointer(&format!("{pointer}/metadata")),
            Shape::Other => None,
        };
        for key in [ANNOTATION_SERVICES, ANNOTATION_INJECTED] {
            let value = meta
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .unwrap_or("");
            for entry in value.split(',') {
                if let Some((ns, _)) = entry.trim().split_once('/')
                    && is_dns_label(ns)
                {
                    wanted.insert(ns.to_string());
                }
            }
        }
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let runtime = super::cluster::runtime().map_err(|e| format!("{e:#}"))?;
    let records = runtime
        .block_on(async {
            let client = super::cluster::client(Some(kubeconfig)).await?;
            anyhow::Ok(crate::listing::list_services(&client, Some(&wanted)).await?)
        })
        .map_err(|e| format!("{e:#}"))?;
    Ok(records.iter().map(|r| r.link()).collect())
}

/// Runs one object through admission.
fn judge(
    object: Object,
    namespace: &str,
    flag: Option<&str>,
    catalog: &Catalog,
    policy: &Policy,
) -> Judged {
    let Object { origin, mut value } = object;
    let id = identity(&value, namespace);
    let mut judged = Judged {
        identity: id.clone(),
        origin: origin.clone(),
        verdict: Verdict::Allow,
        warnings: Vec::new(),
        notes: Vec::new(),
        output: None,
        patch: None,
        summary: String::new(),
    };
    judged.notes.extend(pin_namespace(&mut value, flag));
    let template_at = match shape(&value) {
        Shape::Other => {
            judged.summary = format!("{id} ({origin}): not a Pod or workload; unchanged\n");
            judged.output = Some(value);
            return judged;
        }
        Shape::Pod => None,
        Shape::Workload(pointer) => Some(pointer),
    };
    let pod = match pod_of(&value, template_at) {
        Ok(pod) => pod,
        Err(message) => {
            judged.verdict = Verdict::Invalid(format!("{id}: {message}"));
            return judged;
        }
    };
    let admitted = match admit(&pod, namespace, catalog, policy) {
        Ok(a) => a,
        Err(message) => {
            let message = match template_at {
                None => message,
                Some(_) => format!("{id}: Pod template: {message}"),
            };
            judged.verdict = Verdict::Invalid(message);
            return judged;
        }
    };
    judged.warnings = admitted.warnings;
    judged.verdict = admitted.verdict;
    let each_pod = if template_at.is_some() {
        ", each Pod"
    } else {
        ""
    };
    if let Verdict::Deny(_) = judged.verdict {
        judged.summary = format!("{id}{each_pod} ({origin}): denied\n");
        return judged;
    }
    judged.summary = summarize(
        &format!("{id}{each_pod} ({origin})"),
        &pod,
        &admitted.mutated,
        admitted.injected.as_deref(),
        namespace,
        catalog,
        policy,
    );
    match output_of(value, template_at, admitted.mutated, &admitted.patch) {
        Ok((output, patch)) => {
            judged.output = Some(output);
            judged.patch = Some(patch);
        }
        Err(message) => judged.verdict = Verdict::Invalid(format!("{id}: {message}")),
    }
    judged
}

/// With `--namespace` other than the object's own: the object gets the flag's namespace
/// (the namespace it will live in wins over the one it names), so applying the output
/// creates what was checked; the note says so.
fn pin_namespace(value: &mut Value, flag: Option<&str>) -> Option<String> {
    let (Some(flag), Some(own)) = (flag, object_namespace(value)) else {
        return None;
    };
    if flag == own {
        return None;
    }
    let note = format!(
        "the object names namespace {own:?}; checked in --namespace {flag:?}, and printed \
         with metadata.namespace {flag:?}"
    );
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(flag.to_string()));
    }
    Some(note)
}

/// The Pod as the API server hands it to the webhook: the object itself, or for a
/// workload its template (which gets the workload's namespace through the request); with
/// `enableServiceLinks` defaulted to true, as the API server does before webhooks see it.
fn pod_of(value: &Value, template_at: Option<&str>) -> Result<Value, String> {
    let mut pod = match template_at {
        None => value.clone(),
        Some(pointer) => match value.pointer(pointer) {
            Some(Value::Object(template)) => {
                let mut pod = Map::new();
                pod.insert("apiVersion".into(), Value::String("v1".into()));
                pod.insert("kind".into(), Value::String("Pod".into()));
                for key in ["metadata", "spec"] {
                    if let Some(v) = template.get(key) {
                        pod.insert(key.into(), v.clone());
                    }
                }
                Value::Object(pod)
            }
            _ => {
                return Err(format!(
                    "`{}` is missing or not an object",
                    pointer.trim_start_matches('/').replace('/', ".")
                ));
            }
        },
    };
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("enableServiceLinks")
            .or_insert(Value::Bool(true));
    }
    Ok(pod)
}

/// The object to print and its patch: the mutated Pod, or the workload with the patch
/// applied to its template (and the patch rebased onto it).
fn output_of(
    mut value: Value,
    template_at: Option<&str>,
    mutated: Value,
    pod_patch: &json_patch::Patch,
) -> Result<(Value, Value), String> {
    let patch = serde_json::to_value(pod_patch).unwrap_or(Value::Array(Vec::new()));
    let Some(pointer) = template_at else {
        // The Pod is printed with the API server's default filled in, as it is stored.
        return Ok((mutated, patch));
    };
    if let Some(template) = value.pointer_mut(pointer) {
        json_patch::patch(template, pod_patch)
            .map_err(|e| format!("internal: the patch does not apply: {e}"))?;
    }
    Ok((value, rebase(patch, pointer)))
}

/// The webhook's answer on one Pod, and the Pod after it.
struct Admitted {
    verdict: Verdict,
    warnings: Vec<String>,
    patch: json_patch::Patch,
    mutated: Value,
    injected: Option<String>,
}

/// `/mutate`, then `/validate` on the result (the final check the API server makes).
/// `Err` is a Pod envlink cannot read.
fn admit(
    pod: &Value,
    namespace: &str,
    catalog: &Catalog,
    policy: &Policy,
) -> Result<Admitted, String> {
    let pod_json = serde_json::value::to_raw_value(pod)
        .map_err(|e| format!("internal: the Pod does not serialise: {e}"))?;
    let request = Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace,
        object: Some(crate::admission::Object::Text(&pod_json)),
        old_object: None,
    };
    let decision = admission::mutate(&request, &catalog.snapshot(), policy, &NoConfigMaps);
    let patch = decision
        .patch
        .to_patch()
        .map_err(|e| format!("internal: the patch does not read back: {e}"))?;
    let mut mutated = pod.clone();
    let mut verdict = decision.verdict;
    match &verdict {
        Verdict::Invalid(message) => return Err(message.clone()),
        Verdict::Deny(_) => {}
        Verdict::Allow => {
            json_patch::patch(&mut mutated, &patch)
                .map_err(|e| format!("internal: patch does not apply: {e}"))?;
            let mutated_json = serde_json::value::to_raw_value(&mutated)
                .map_err(|e| format!("internal: the Pod does not serialise: {e}"))?;
            let check = admission::validate(
                &Request {
                    object: Some(crate::admission::Object::Text(&mutated_json)),
                    ..request
                },
                policy,
                &NoConfigMaps,
            );
            if let Verdict::Deny(_) = check.verdict {
                verdict = check.verdict;
            }
        }
    }
    Ok(Admitted {
        verdict,
        warnings: decision.warnings,
        patch,
        mutated,
        injected: decision.injected,
    })
}

/// A Pod patch applied to a workload: every path moved under the Pod template.
fn rebase(mut patch: Value, pointer: &str) -> Value {
    if let Some(ops) = patch.as_array_mut() {
        for op in ops {
            for key in ["path", "from"] {
                if let Some(Value::String(path)) = op.get_mut(key) {
                    *path = format!("{pointer}{path}");
                }
            }
        }
    }
    patch
}

/// The env names of each init and regular container: (kind, name, names).
fn container_envs(pod: &Value) -> Vec<(ContainerKind, String, Vec<String>)> {
    let mut out = Vec::new();
    for kind in [ContainerKind::Init, ContainerKind::Regular] {
        let list = pod
            .pointer(&format!("/spec/{}", kind.field()))
            .and_then(Value::as_array);
        for c in list.into_iter().flatten() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let env = c
                .get("env")
                .and_then(Value::as_array)
                .map(|env| {
                    env.iter()
                        .filter_map(|e| e.get("name").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            out.push((kind, name.to_string(), env));
        }
    }
    out
}

/// The variable names of the Services a record names, for "keeps its own" in the summary.
fn recorded_variables(catalog: &Catalog, namespace: &str, record: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for entry in record.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let service = match entry.split_once('/') {
            Some((ns, name)) => catalog.service(ns, name),
            None if entry == MASTER_SERVICE_NAME => catalog
                .service(namespace, entry)
                .filter(|s| s.has_cluster_ip())
                .or_else(|| catalog.service(DEFAULT_NAMESPACE, entry)),
            None => catalog.service(namespace, entry),
        };
        if let Some(service) = service {
            names.extend(service.variables().iter().map(|(n, _)| n.to_string()));
        }
    }
    names
}

/// What each container gets, in a few lines for people.
fn summarize(
    header: &str,
    before: &Value,
    after: &Value,
    injected: Option<&str>,
    namespace: &str,
    catalog: &Catalog,
    policy: &Policy,
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{header}");
    let services_off = policy.config.services.mode == InjectionMode::Off;
    match injected {
        Some(record) => {
            let services = record.replace(',', ", ");
            let _ = writeln!(
                text,
                "  service variables of: {}",
                if services.is_empty() {
                    "(no Services)"
                } else {
                    &services
                }
            );
        }
        None if services_off && catalog.stats().services == 0 => {
            let _ = writeln!(
                text,
                "  service variables: not computed (no Services given)"
            );
        }
        None => {
            let _ = writeln!(text, "  service variables: none injected");
        }
    }
    let service_vars = injected
        .map(|r| recorded_variables(catalog, namespace, r))
        .unwrap_or_default();
    let old = container_envs(before);
    for (kind, name, after_names) in container_envs(after) {
        let before_names: Vec<String> = old
            .iter()
            .find(|(k, n, _)| *k == kind && *n == name)
            .map(|(_, _, env)| env.clone())
            .unwrap_or_default();
        let before_set: HashSet<&str> = before_names.iter().map(String::as_str).collect();
        let after_set: HashSet<&str> = after_names.iter().map(String::as_str).collect();
        let added = after_names
            .iter()
            .filter(|n| !before_set.contains(n.as_str()))
            .count();
        let removed: Vec<&str> = before_names
            .iter()
            .map(String::as_str)
            .filter(|n| !after_set.contains(n))
            .collect();
        let own: Vec<&str> = before_names
            .iter()
            .map(String::as_str)
            .filter(|n| service_vars.contains(*n))
            .collect();
        let mut line = format!(
            "  {} {name}: {added} variable{} injected",
            kind.noun(),
            if added == 1 { "" } else { "s" }
        );
        if !own.is_empty() {
            let _ = write!(
                line,
                "; keeps its own {}",
                crate::text::list(own.iter().copied(), own.len())
            );
        }
        if !removed.is_empty() {
            let _ = write!(
                line,
                "; removed {} (reserved)",
                crate::text::list(removed.iter().copied(), removed.len())
            );
        }
        let _ = writeln!(text, "{line}");
    }
    let links = after
        .pointer("/spec/enableServiceLinks")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let _ = writeln!(
        text,
        "  spec.enableServiceLinks: {links}{}",
        if links {
            " (the kubelet adds its own service variables when the container starts)"
        } else {
            " (the kubelet adds only the kubernetes Service's)"
        }
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_by_group_and_kind() {
        let s = |v: Value| shape(&v);
        assert_eq!(s(json!({"apiVersion": "v1", "kind": "Pod"})), Shape::Pod);
        assert_eq!(s(json!({"kind": "Pod"})), Shape::Pod);
        assert_eq!(
            s(json!({"apiVersion": "apps/v1", "kind": "Deployment"})),
            Shape::Workload("/spec/template")
        );
        assert_eq!(
            s(json!({"apiVersion": "batch/v1beta1", "kind": "CronJob"})),
            Shape::Workload("/spec/jobTemplate/spec/template")
        );
        assert_eq!(
            s(json!({"apiVersion": "example.com/v1", "kind": "Job"})),
            Shape::Other
        );
        assert_eq!(
            s(json!({"apiVersion": "v1", "kind": "Service"})),
            Shape::Other
        );
    }

    #[test]
    fn patches_are_rebased_onto_the_template() {
        let patch = json!([{"op": "add", "path": "/spec/containers/0/env", "value": []}]);
        assert_eq!(
            rebase(patch, "/spec/jobTemplate/spec/template"),
            json!([{"op": "add", "path": "/spec/jobTemplate/spec/template/spec/containers/0/env", "value": []}])
        );
    }

    #[test]
    fn namespace_less_services_follow_the_objects() {
        let ns = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(common_namespace(&ns(&["a", "a"]), None), "a");
        assert_eq!(common_namespace(&ns(&["a", "b"]), None), "default");
        assert_eq!(common_namespace(&ns(&["a", "b"]), Some("c")), "c");
    }
}
