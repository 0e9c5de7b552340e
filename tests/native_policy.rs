//! The native policy (`envlink policy`) against envlink's own decision: on generated Pods and
//! workloads, the CEL of the ValidatingAdmissionPolicy refuses exactly what envlink's
//! validating webhook refuses, for the built-in rules and for configurations with strip and
//! warn actions, switched-off packs, custom rules and exempt namespaces.
//!
//! The CEL runs in the `cel` crate, whose `matches` is Rust's regex rather than RE2: the
//! generator only emits patterns whose syntax means the same in both
//! (`envlink::policy::re2_compatible`), so that difference does not matter here.

use std::collections::HashMap;

use cel::{Context, Program, Value as CelValue};
use envlink::admission::{self, Object, Operation, Request, Verdict};
use envlink::config::Policy;
use envlink::policy::{self, NativePolicy};
use envlink::reserved::NoConfigMaps;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The policy's expressions, compiled once.
struct Compiled {
    match_conditions: Vec<Program>,
    variables: Vec<(String, Program)>,
    validations: Vec<(String, Program)>,
}

fn compile(native: &NativePolicy) -> Compiled {
    let program = |text: &str| {
        Program::compile(text).unwrap_or_else(|e| panic!("CEL does not parse: {text}: {e:?}"))
    };
    // The message expressions must parse too (the API server evaluates them).
    for v in &native.validations {
        program(&v.message_expression);
    }
    Compiled {
        match_conditions: native
            .match_conditions
            .iter()
            .map(|(_, e)| program(e))
            .collect(),
        variables: native
            .variables
            .iter()
            .map(|(n, e)| (n.clone(), program(e)))
            .collect(),
        validations: native
            .validations
            .iter()
            .map(|v| (v.rule.clone(), program(&v.expression)))
            .collect(),
    }
}

/// What the API server would do with the policy: `Ok(None)` admitted, `Ok(Some(rule))`
/// refused by that rule's validation. An evaluation error is an `Err` (the policy's
/// `failurePolicy: Fail` would refuse, but the generated CEL should not fail on valid input).
fn cel_decision(
    compiled: &Compiled,
    object: &Value,
    old_object: Option<&Value>,
    namespace: &str,
    sub_resource: &str,
    operation: &str,
) -> Result<Option<String>, String> {
    let mut ctx = Context::default();
    let to_cel = |v: &Value| cel::to_value(v).map_err(|e| format!("{e:?}"));
    ctx.add_variable_from_value("object", to_cel(object)?);
    ctx.add_variable_from_value(
        "oldObject",
        match old_object {
            Some(old) => to_cel(old)?,
            None => CelValue::Null,
        },
    );
    // As the API server sends it: `subResource` is absent, not empty, on a plain request
    // (reading it unguarded is an evaluation error there).
    let mut request = json!({"namespace": namespace, "operation": operation});
    if !sub_resource.is_empty() {
        request["subResource"] = json!(sub_resource);
    }
    ctx.add_variable_from_value("request", to_cel(&request)?);
    let as_bool = |v: Result<CelValue, _>, what: &str| match v {
        Ok(CelValue::Bool(b)) => Ok(b),
        other => Err(format!("{what}: {other:?}")),
    };
    for condition in &compiled.match_conditions {
        if !as_bool(condition.execute(&ctx), "match condition")? {
            return Ok(None);
        }
    }
    let mut variables: HashMap<String, CelValue> = HashMap::new();
    for (name, program) in &compiled.variables {
        let value = program
            .execute(&ctx)
            .map_err(|e| format!("variable {name}: {e:?}"))?;
        variables.insert(name.clone(), value);
        ctx.add_variable_from_value("variables", CelValue::from(variables.clone()));
    }
    for (rule, program) in &compiled.validations {
        if !as_bool(program.execute(&ctx), rule)? {
            return Ok(Some(rule.clone()));
        }
    }
    Ok(None)
}

/// envlink's validating webhook on the same object: `Some(message)` when refused.
fn envlink_decision(policy: &Policy, object: &Value, namespace: &str) -> Option<String> {
    let raw = serde_json::value::to_raw_value(object).expect("serialises");
    let (group, kind) = match object["kind"].as_str().expect("kind") {
        "Pod" => ("", "Pod"),
        k @ ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => ("apps", k),
        k => ("batch", k),
    };
    let request = Request {
        operation: Operation::Create,
        group,
        kind,
        sub_resource: None,
        namespace,
        object: Some(Object::Text(&raw)),
        old_object: None,
    };
    match admission::validate(&request, policy, &NoConfigMaps).verdict {
        Verdict::Allow => None,
        Verdict::Deny(message) => Some(message),
        Verdict::Invalid(message) => panic!("envlink finds the object invalid: {message}"),
    }
}

const CONFIGS: &[&str] = &[
    "",
    "reserved:\n  defaultAction: strip\n  exemptNamespaces: [gpu-admin]\n",
    "reserved:\n  packActions: {hami: warn, nvidia: strip}\n  disableDefaultRules: [sriov]\n  \
     rules:\n    - {name: foo, resources: ['example.com/*', 'other.io/dev?'], prefixes: [FOO_], \
     patterns: ['FOO_[A-Z]+'], action: deny}\n    - {name: bar, scope: all, patterns: \
     ['BAR[0-9]+'], names: [BAR], action: strip}\n    - {name: quiet, scope: all, names: \
     [APP], action: warn}\n",
];

const NAMES: &[&str] = &[
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_GDS",
    "NVIDIA_IMEX_CHANNELS",
    "CUDA_MPS_PIPE_DIRECTORY",
    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DISABLE_CONTROL",
    "CUDA_DEVICE_MEMORY_LIMIT_0",
    "CUDA_DEVICE_MEMORY_LIMIT_X",
    "HL_VISIBLE_DEVICES",
    "ASCEND_VISIBLE_DEVICES",
    "ASCEND_ALLOW_LINK",
    "AWS_NEURON_VISIBLE_DEVICES",
    "NEURON_RT_VISIBLE_CORES",
    "FPGA_AFU_1",
    "FPGA_REGION_",
    "CAMBRICON_VISIBLE_DEVICES",
    "QAT0",
    "QAT12",
    "QAT1X",
    "PCIDEVICE_INTEL_COM_SRIOV",
    "MY_PCIDEVICE_X",
    "FOO_BAR",
    "FOO_1",
    "BAR",
    "BAR7",
    "APP",
    "NVIDIA_VISIBLE_DEVICESX",
];

const PREFIXES: &[&str] = &[
    "",
    "NVIDIA_",
    "PCIDEVICE_",
    "PCIDEVICE_X_",
    "PCI",
    "QAT",
    "APP_",
    "FOO_",
    "FOO_X",
    "BAR",
];

const RESOURCES: &[&str] = &[
    "nvidia.com/gpu",
    "nvidia.com/mig-1g.5gb",
    "nvidia.com.evil/x/y",
    "cpu",
    "habana.ai/gaudi",
    "huawei.com/Ascend910",
    "qat.intel.com/generic",
    "aws.amazon.com/neuroncore",
    "fpga.intel.com/af-1",
    "cambricon.com/mlu370",
    "example.com/dev",
    "other.io/dev1",
    "other.io/dev12",
];

fn container_strategy(name: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::sample::select(NAMES), 0..4),
        prop::collection::vec(
            (prop::option::of(prop::sample::select(PREFIXES)), 0..3u8),
            0..3,
        ),
        prop::collection::vec((prop::sample::select(RESOURCES), any::<bool>()), 0..3),
    )
        .prop_map(move |(env, env_from, resources)| {
            let mut c = json!({"name": name, "image": "busybox"});
            if !env.is_empty() {
                c["env"] = env
                    .iter()
                    .map(|n| json!({"name": n, "value": "x"}))
                    .collect();
            }
            if !env_from.is_empty() {
                c["envFrom"] = env_from
                    .iter()
                    .map(|(prefix, source)| {
                        let mut f = match source {
                            0 => json!({"configMapRef": {"name": "cm"}}),
                            1 => json!({"secretRef": {"name": "s"}}),
                            _ => {
                                json!({"configMapRef": {"name": "cm"}, "secretRef": {"name": "s"}})
                            }
                        };
                        if let Some(p) = prefix {
                            f["prefix"] = json!(p);
                        }
                        f
                    })
                    .collect();
            }
            if !resources.is_empty() {
                let mut requests = serde_json::Map::new();
                let mut limits = serde_json::Map::new();
                for (r, in_limits) in resources {
                    if in_limits {
                        limits.insert(r.to_string(), json!("1"));
                    } else {
                        requests.insert(r.to_string(), json!("1"));
                    }
                }
                c["resources"] = json!({"requests": requests, "limits": limits});
            }
            c
        })
}

fn object_strategy() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container_strategy("init"), 0..2),
        prop::collection::vec(container_strategy("app"), 1..3),
        prop::collection::vec(container_strategy("debug"), 0..2),
        prop::sample::select(&["Pod", "Deployment", "CronJob", "Job", "DaemonSet"][..]),
    )
        .prop_map(|(init, regular, ephemeral, kind)| {
            // Distinct names within each list, as the API server requires.
            let rename = |list: Vec<Value>, base: &str| -> Vec<Value> {
                list.into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["name"] = json!(format!("{base}-{i}"));
                        c
                    })
                    .collect()
            };
            let mut spec = json!({"containers": rename(regular, "app")});
            if !init.is_empty() {
                spec["initContainers"] = json!(rename(init, "init"));
            }
            if !ephemeral.is_empty() {
                spec["ephemeralContainers"] = json!(rename(ephemeral, "debug"));
            }
            let metadata = json!({"name": "x"});
            match kind {
                "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}),
                "CronJob" => json!({
                    "apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata,
                    "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
                }),
                "Job" => json!({
                    "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                    "spec": {"template": {"spec": spec}},
                }),
                k => json!({
                    "apiVersion": "apps/v1", "kind": k, "metadata": metadata,
                    "spec": {"template": {"spec": spec}},
                }),
            }
        })
}

struct Case {
    policy: Policy,
    compiled: Compiled,
}

fn cases() -> Vec<Case> {
    CONFIGS
        .iter()
        .map(|text| {
            let policy = Policy::from_yaml(text, "test").expect("config");
            let compiled = compile(&policy::generate(&policy.rules));
            Case { policy, compiled }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_native_policy_refuses_what_envlink_refuses(
        object in object_strategy(),
        config in 0..CONFIGS.len(),
        namespace in prop::sample::select(&["ns", "gpu-admin"][..]),
    ) {
        thread_local! {
            static CASES: Vec<Case> = cases();
        }
        CASES.with(|cases| {
            let case = &cases[config];
            let ours = envlink_decision(&case.policy, &object, namespace);
            let native = cel_decision(&case.compiled, &object, None, namespace, "", "CREATE")
                .unwrap_or_else(|e| panic!("CEL failed on {object:#}: {e}"));
            assert_eq!(
                ours.is_some(),
                native.is_some(),
                "config {config}, namespace {namespace}: envlink {ours:?}, native policy \
                 {native:?}, object {object:#}"
            );
        });
    }
}

#[test]
fn a_pod_with_nvidia_visible_devices_all_is_refused_by_the_policy_alone() {
    let policy = Policy::default();
    let compiled = compile(&policy::generate(&policy.rules));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}]},
    });
    let refused = cel_decision(&compiled, &pod, None, "default", "", "CREATE").expect("CEL");
    assert_eq!(refused.as_deref(), Some("nvidia-visible-devices"));
    assert!(envlink_decision(&policy, &pod, "default").is_some());
    let fine = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}]}]},
    });
    assert_eq!(
        cel_decision(&compiled, &fine, None, "default", "", "CREATE").expect("CEL"),
        None
    );
}

#[test]
fn an_ephemeral_container_update_is_judged_on_the_debug_containers_it_adds() {
    let policy = Policy::default();
    let compiled = compile(&policy::generate(&policy.rules));
    let bad = json!({"name": "dbg1", "image": "busybox",
        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]});
    let good = json!({"name": "dbg2", "image": "busybox"});
    let pod = |ephemeral: Vec<Value>| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                // A container that predates the rules: not this update's business.
                "containers": [{"name": "app", "image": "busybox",
                    "env": [{"name": "PCIDEVICE_X", "value": "1"}]}],
                "ephemeralContainers": ephemeral,
            },
        })
    };
    let old = pod(vec![bad.clone()]);
    let new = pod(vec![bad.clone(), good.clone()]);
    let decide = |object: &Value, old: &Value| {
        cel_decision(
            &compiled,
            object,
            Some(old),
            "ns",
            "ephemeralcontainers",
            "UPDATE",
        )
        .expect("CEL")
    };
    assert_eq!(decide(&new, &old), None, "only dbg2 is new, and it is fine");
    let added_bad = pod(vec![good.clone(), bad.clone()]);
    assert_eq!(
        decide(&added_bad, &pod(vec![good])).as_deref(),
        Some("nvidia-visible-devices")
    );
}

/// Sorts object keys all the way down, as Go's encoding/json (Helm's `toJson`) writes them.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[test]
fn the_chart_embeds_the_policy_of_its_default_values() {
    // charts/envlink/files/native-policy.yaml is `envlink policy --no-binding` for the
    // built-in configuration, and native-policy-config.json the chart's default
    // `config.reserved` as Helm's toJson writes it (the chart installs the embedded policy only
    // while the values say exactly that). `bash charts/generate-native-policy.sh` rewrites both.
    let root = env!("CARGO_MANIFEST_DIR");
    let values_text =
        std::fs::read_to_string(format!("{root}/charts/envlink/values.yaml")).expect("values");
    let values: Value = serde_saphyr::from_str(&values_text).expect("values.yaml");
    let reserved = values["config"]["reserved"].clone();
    // The chart's default policy is envlink's built-in one.
    let from_values = Policy::from_yaml(
        &serde_json::to_string(&json!({"reserved": reserved})).expect("json"),
        "values.yaml",
    )
    .expect("the chart's default config is valid");
    let policy = Policy::default();
    assert_eq!(from_values.config, policy.config);
    let want_yaml = policy::generate(&policy.rules)
        .to_yaml(false)
        .expect("yaml");
    let mut want_json = serde_json::to_string(&sorted(reserved)).expect("json");
    want_json.push('\n');
    let yaml_path = format!("{root}/charts/envlink/files/native-policy.yaml");
    let json_path = format!("{root}/charts/envlink/files/native-policy-config.json");
    if std::env::var_os("ENVLINK_REGENERATE").is_some() {
        std::fs::write(&yaml_path, &want_yaml).expect("write");
        std::fs::write(&json_path, &want_json).expect("write");
    }
    let stale = "out of date: run `bash charts/generate-native-policy.sh`";
    assert!(
        std::fs::read_to_string(&yaml_path).unwrap_or_default() == want_yaml,
        "{yaml_path} is {stale}"
    );
    assert!(
        std::fs::read_to_string(&json_path).unwrap_or_default() == want_json,
        "{json_path} is {stale}"
    );
}

#[test]
fn envlink_policy_prints_the_policy_and_its_binding() {
    let bin = env!("CARGO_BIN_EXE_envlink");
    let out = std::process::Command::new(bin)
        .arg("policy")
        .env_remove("ENVLINK_CONFIG")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_saphyr::from_str(d).expect("a YAML document"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    assert_eq!(docs[1]["spec"]["policyName"], docs[0]["metadata"]["name"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "reserved:\n  packActions: {hmai: warn}\n").expect("write");
    let out = std::process::Command::new(bin)
        .args(["policy", "--no-binding", "--config"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reserved.packActions.hmai"), "{err}");
}
