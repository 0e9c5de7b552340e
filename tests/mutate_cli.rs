//! Black-box tests of `envlink mutate`: exit codes, output formats, standard input, messages.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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
