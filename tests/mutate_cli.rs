//! Black-box tests of `envlink mutate`: exit codes, output formats, standard input, messages.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[path = "support/review.rs"]
mod review;
use review::env_of;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mutate");

fn envlink(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .arg("mutate")
        .args(args)
        .current_dir(FIXTURES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("envlink runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("envlink finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn env_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn admitted_pod_as_json_yaml_and_patch() {
    let out = envlink(
        &[
            "--pod",
            "pod.yaml",
            "--services",
            "services.yaml",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let names = env_names(&pod);
    assert_eq!(names.first().map(String::as_str), Some("DB_SERVICE_HOST"));
    assert_eq!(
        names.last().map(String::as_str),
        Some("REDIS_MASTER_SERVICE_HOST")
    );
    assert_eq!(
        pod["spec"]["containers"][0]["env"].as_array().map(Vec::len),
        Some(names.len())
    );
    assert!(names.contains(&"KUBERNETES_PORT_443_TCP_ADDR".to_string()));
    assert!(names.contains(&"DB_SERVICE_PORT_PG".to_string()));
    assert_eq!(pod["spec"]["enableServiceLinks"], Value::Bool(false));
    assert_eq!(
        pod["metadata"]["annotations"]["envlink.io/injected"],
        "db,kubernetes,redis-master"
    );

    let yaml = envlink(&["--pod", "pod.yaml", "--services", "services.yaml"], None);
    assert_eq!(yaml.status.code(), Some(0));
    let from_yaml: Value = serde_saphyr::from_str(&text(&yaml.stdout)).expect("YAML output");
    assert_eq!(from_yaml, pod, "yaml and json print the same Pod");

    let patch = envlink(
        &[
            "--pod",
            "pod.yaml",
            "--services",
            "services.yaml",
            "-o",
            "patch",
        ],
        None,
    );
    assert_eq!(patch.status.code(), Some(0));
    let patch: json_patch::Patch = serde_json::from_slice(&patch.stdout).expect("a JSON Patch");
    let mut original: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/pod.yaml")).expect("read"),
    )
    .expect("pod");
    original["spec"]["enableServiceLinks"] = Value::Bool(true);
    json_patch::patch(&mut original, &patch).expect("applies");
    assert_eq!(original, pod);
}

#[test]
fn standard_input_and_namespace_flag() {
    let pod = std::fs::read_to_string(format!("{FIXTURES}/pod.yaml")).expect("read");
    let out = envlink(
        &[
            "--pod",
            "-",
            "--services",
            "services.yaml",
            "-n",
            "elsewhere",
            "-o",
            "json",
        ],
        Some(&pod),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: Value = serde_json::from_slice(&out.stdout).expect("json");
    // `db` has no namespace in the file, so it joins the Pod's; `redis-master` stays in `shop`.
    assert_eq!(
        pod["metadata"]["annotations"]["envlink.io/injected"],
        "db,kubernetes"
    );

    let services = std::fs::read_to_string(format!("{FIXTURES}/services.yaml")).expect("read");
    let out = envlink(
        &["--pod", "pod.yaml", "--services", "-", "-o", "json"],
        Some(&services),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn denied_pods_exit_1_with_the_reason() {
    let out = envlink(
        &[
            "--pod",
            "pod-gpu-shadow.yaml",
            "--services",
            "services.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"train\"")
            && err.contains("NVIDIA_VISIBLE_DEVICES")
            && err.contains("nvidia.com/gpu"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = envlink(
        &[
            "--pod",
            "pod-missing-service.json",
            "--services",
            "services.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("queue"), "{}", text(&out.stderr));
}

#[test]
fn warnings_go_to_standard_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "services: {onMissing: warn}\nreserved: {defaultAction: warn}\n",
    )
    .expect("write");
    let config = config.to_str().expect("utf-8 path");
    let out = envlink(
        &[
            "--pod",
            "pod-missing-service.json",
            "--services",
            "services.yaml",
            "--config",
            config,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("Warning:") && text(&out.stderr).contains("queue"));
    let out = envlink(&["--pod", "pod-gpu-shadow.yaml", "--config", config], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("NVIDIA_VISIBLE_DEVICES"));
}

#[test]
fn bad_input_exits_2_and_says_what_and_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let broken_json = write("broken.json", "{\"kind\": \"Pod\", ");
    let deployment = write("deploy.yaml", "kind: Deployment\nmetadata: {name: x}\n");
    let two = write("two.yaml", "kind: Pod\n---\nkind: Pod\n");
    let bad_services = write(
        "svc.yaml",
        "kind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}]}\n",
    );
    let bad_config = write("cfg.yaml", "reserved: {defaultAction: explode}\n");
    let bad_pod = write("pod.yaml", "kind: Pod\nspec: {containers: 7}\n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--pod", "/no/such/pod.yaml"], "/no/such/pod.yaml"),
        (vec!["--pod", &broken_json], "not valid JSON"),
        (vec!["--pod", &deployment], "\"Deployment\" is not a Pod"),
        (vec!["--pod", &two], "found 2 documents"),
        (
            vec!["--pod", "pod.yaml", "--services", &bad_services],
            "spec.ports[0].port",
        ),
        (
            vec!["--pod", "pod.yaml", "--config", &bad_config],
            "reserved.defaultAction",
        ),
        (vec!["--pod", &bad_pod], "spec.containers"),
        (
            vec!["--pod", "-", "--services", "-"],
            "both read standard input",
        ),
    ];
    for (args, message) in cases {
        let out = envlink(&args, Some(""));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_directory_of_workloads_gets_its_pod_templates_mutated() {
    let out = envlink(
        &[
            "-f",
            "workloads",
            "--services",
            "services.yaml",
            "-o",
            "json",
        ],
        None,
    );
    // The Job in workloads/batch/train.yml shadows NVIDIA_VISIBLE_DEVICES: refused, exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("denied: Job shop/train") && err.contains("NVIDIA_VISIBLE_DEVICES"),
        "{err}"
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    // In path order (notes.txt is not read); the refused Job is not printed; the Service
    // passes through unchanged.
    assert_eq!(kinds, ["Deployment", "Service", "CronJob"]);

    let deployment = &items[0]["spec"]["template"];
    assert_eq!(
        deployment["metadata"]["annotations"]["envlink.io/injected"],
        "db,kubernetes,redis-master"
    );
    assert_eq!(deployment["metadata"]["labels"]["app"], "web");
    assert_eq!(deployment["spec"]["enableServiceLinks"], false);
    let app = env_of(&deployment["spec"]["containers"][0]);
    assert!(
        app.contains(&("DB_SERVICE_HOST".into(), "fd00::7".into())),
        "{app:?}"
    );
    // The container's own value is kept, after the injected ones.
    assert_eq!(
        app.last(),
        Some(&("REDIS_MASTER_SERVICE_HOST".to_string(), "mine".to_string()))
    );
    let migrate = env_of(&deployment["spec"]["initContainers"][0]);
    assert!(migrate.contains(&("REDIS_MASTER_SERVICE_HOST".into(), "10.96.12.7".into())));

    assert_eq!(items[1]["spec"]["selector"]["app"], "web");
    assert!(items[1]["metadata"].get("annotations").is_none());

    // The CronJob's Pods name `db` only: they get db and kubernetes.
    let cron = &items[2]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        cron["metadata"]["annotations"]["envlink.io/injected"],
        "db,kubernetes"
    );
    let report = env_of(&cron["spec"]["containers"][0]);
    assert!(report.iter().any(|(n, _)| n == "KUBERNETES_SERVICE_HOST"));
    assert!(!report.iter().any(|(n, _)| n.starts_with("REDIS_")));

    // The summary goes to standard error beside the objects.
    assert!(
        err.contains("Deployment shop/web, each Pod (workloads/app.yaml, document 1)")
            && err.contains("container app: ")
            && err.contains("keeps its own REDIS_MASTER_SERVICE_HOST"),
        "{err}"
    );
}

#[test]
fn several_files_multi_document_yaml_and_patches_on_templates() {
    let out = envlink(
        &[
            "workloads/app.yaml",
            "-f",
            "workloads/batch/nightly.json",
            "--services",
            "services.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text(&out.stdout)).expect("YAML documents");
    assert_eq!(docs.len(), 3);

    let out = envlink(
        &[
            "-f",
            "workloads/app.yaml",
            "--services",
            "services.yaml",
            "-o",
            "patch",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let patches: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let patches = patches.as_array().expect("one entry per mutated object");
    assert_eq!(patches.len(), 1, "the Service has no patch");
    assert_eq!(patches[0]["kind"], "Deployment");
    assert_eq!(patches[0]["name"], "web");
    let ops = patches[0]["patch"].as_array().expect("patch");
    assert!(
        ops.iter().all(|op| op["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/spec/template/"))),
        "{ops:?}"
    );
    // The rebased patch applied to the Deployment gives the printed one.
    let source = std::fs::read_to_string(format!("{FIXTURES}/workloads/app.yaml")).expect("read");
    let mut deployment = serde_saphyr::from_multiple::<Value>(&source).expect("yaml")[0].clone();
    let patch: json_patch::Patch =
        serde_json::from_value(patches[0]["patch"].clone()).expect("a JSON Patch");
    json_patch::patch(&mut deployment, &patch).expect("applies to the Deployment");
    let printed = envlink(
        &[
            "-f",
            "workloads/app.yaml",
            "--services",
            "services.yaml",
            "-o",
            "json",
        ],
        None,
    );
    let printed: Value = serde_json::from_slice(&printed.stdout).expect("json");
    assert_eq!(printed["items"][0], deployment);
}

#[test]
fn without_services_only_the_reserved_rules_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing yet\n").expect("write");
    let empty = empty.to_str().expect("utf-8").to_string();
    for (args, note) in [
        (vec!["--pod", "pod.yaml", "-o", "json"], "no Services given"),
        (
            vec!["--pod", "pod.yaml", "--services", &empty, "-o", "json"],
            "holds no Services",
        ),
    ] {
        let out = envlink(&args, None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let pod: Value = serde_json::from_slice(&out.stdout).expect("json");
        // The kubelet keeps adding its links: nothing turns them off, nothing is recorded.
        assert_eq!(
            pod["spec"]["enableServiceLinks"],
            Value::Bool(true),
            "{args:?}"
        );
        assert!(pod["metadata"].get("annotations").is_none(), "{pod}");
        assert_eq!(env_names(&pod), ["REDIS_MASTER_SERVICE_HOST"]);
        let err = text(&out.stderr);
        assert!(
            err.contains(note) && err.contains("only the reserved-variable rules"),
            "{err}"
        );
    }
    // The reserved rules still apply.
    let out = envlink(&["--pod", "pod-gpu-shadow.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    let out = envlink(&["--pod", "pod.yaml", "-o", "patch"], None);
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn a_namespace_flag_other_than_the_objects_own_is_said_and_printed() {
    let out = envlink(
        &[
            "--pod",
            "pod.yaml",
            "--services",
            "services.yaml",
            "-n",
            "elsewhere",
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(pod["metadata"]["namespace"], "elsewhere");
    let err = text(&out.stderr);
    assert!(
        err.contains("names namespace \"shop\"") && err.contains("--namespace \"elsewhere\""),
        "{err}"
    );
}

#[test]
fn summary_on_standard_output() {
    let out = envlink(
        &[
            "--pod",
            "pod.yaml",
            "--services",
            "services.yaml",
            "--summary",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with("Pod shop/web (pod.yaml)\n")
            && summary.contains("service variables of: db, kubernetes, redis-master")
            && summary.contains("keeps its own REDIS_MASTER_SERVICE_HOST")
            && summary.contains("spec.enableServiceLinks: false"),
        "{summary}"
    );
    // Only the summary: no Pod.
    assert!(!summary.contains("apiVersion"), "{summary}");
}

#[test]
fn an_unreachable_cluster_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .expect("write");
    let out = envlink(
        &[
            "--pod",
            "pod.yaml",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot list services in namespace default"),
        "{}",
        text(&out.stderr)
    );
}
