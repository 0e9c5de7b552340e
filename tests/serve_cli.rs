//! `envlink serve` as a process: `--dev` answers a real review over HTTPS with the CA it
//! wrote, SIGTERM ends it with status 0, and startup errors name what is wrong.

mod common;

use std::process::{Child, Command, Stdio};

use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/review");

fn envlink_serve(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_envlink"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("envlink starts")
}

#[tokio::test]
async fn dev_mode_serves_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca.pem");
    let ca_arg = ca.to_string_lossy().into_owned();
    let child = envlink_serve(&[
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--dev-ca-out",
        &ca_arg,
        "--log-format",
        "json",
    ]);
    let mut guard = common::ChildGuard(Some(child));
    let child = guard.0.as_mut().expect("child");
    let serving = common::wait_for_serving(child);
    let (addr, logs) = (serving.listen, serving.rest);
    let ca_pem = std::fs::read(&ca).expect("the CA was written");

    let review =
        std::fs::read(format!("{FIXTURES}/validate-deployment-gpu-shadow.json")).expect("fixture");
    let response = common::post_review(addr, &ca_pem, "/validate", &review).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).expect("body");
    let review: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(
        review["response"]["uid"],
        "b2f0c4a1-9d2e-4c61-8a7e-3c5d1f0e9a11"
    );

    let refused = common::post_review(addr, &ca_pem, "/validate", b"{not json").await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut child = guard.0.take().expect("child");
    let status = child.wait().expect("envlink exits");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let logs = logs.join().expect("log reader");
    // Every line is one JSON object; the review's line names the endpoint, the uid, the
    // object and the decision (as fields of the line: no span per review).
    let lines: Vec<Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["message"] == "review answered")
        .unwrap_or_else(|| panic!("no `review answered` line: {logs:#?}"));
    assert_eq!(answered["decision"], "denied", "{answered}");
    assert_eq!(answered["kind"], "apps/Deployment", "{answered}");
    assert_eq!(answered["operation"], "CREATE", "{answered}");
    assert!(answered["duration_us"].is_u64(), "{answered}");
    assert_eq!(answered["endpoint"], "validate", "{answered}");
    assert_eq!(
        answered["uid"], "b2f0c4a1-9d2e-4c61-8a7e-3c5d1f0e9a11",
        "{answered}"
    );
    assert!(answered.get("span").is_none(), "{answered}");
    let refused = lines
        .iter()
        .find(|l| l["message"] == "review refused at the HTTP level")
        .unwrap_or_else(|| panic!("no `review refused` line: {logs:#?}"));
    assert_eq!(refused["status"], 400, "{refused}");
    assert_eq!(refused["endpoint"], "validate", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{refused}"
    );
    // serde_json keeps the last of duplicate keys; a line must not have any.
    for line in &logs {
        assert!(
            line.matches("\"message\":").count() <= 1,
            "duplicate key: {line}"
        );
    }
    assert!(logs.iter().any(|l| l.contains("SIGTERM")), "{logs:#?}");
}

#[test]
fn startup_errors_name_the_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args([
            "serve",
            "--tls-cert",
            "/nonexistent/envlink/tls.crt",
            "--tls-key",
            "/nonexistent/envlink/tls.key",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("envlink runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/envlink/tls.crt"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env_remove("ENVLINK_TLS_CERT")
        .output()
        .expect("envlink runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--dev"),
        "{stderr}"
    );
}

/// `--dev` without `--dev-ca-out` writes its CA to the user's cache directory, never into
/// the working directory (often a git checkout), says where, and that CA verifies the server.
#[tokio::test]
async fn dev_writes_its_ca_outside_the_working_tree() {
    let work = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args(["serve", "--dev", "--log-format", "json"])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .current_dir(work.path())
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("envlink starts");
    let mut guard = common::ChildGuard(Some(child));
    let child = guard.0.as_mut().expect("child");
    let serving = common::wait_for_serving(child);
    let ca = home.path().join(".cache/envlink/dev-ca.pem");
    let ca_pem = std::fs::read(&ca).expect("the CA is in the cache directory");
    let review = std::fs::read(format!("{FIXTURES}/mutate-pod-create.json")).expect("fixture");
    let response = common::post_review(serving.listen, &ca_pem, "/mutate", &review).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        std::fs::read_dir(work.path()).expect("read_dir").count(),
        0,
        "nothing is written to the working directory"
    );
    drop(guard);
    let logs = serving.before;
    assert!(
        logs.iter()
            .any(|l| l.contains("self-signed certificate") && l.contains(&*ca.to_string_lossy())),
        "the log says where the CA is: {logs:#?}"
    );
}

/// A missing input file or a nonsensical limit fails at once: nothing is written, no "try
/// it" banner is printed, and the error names what is wrong.
#[test]
fn inputs_are_checked_before_anything_is_written() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--services-file", "/nonexistent/services.yaml"],
            "/nonexistent/services.yaml",
        ),
        (
            &["--kubeconfig", "/nonexistent/kubeconfig"],
            "/nonexistent/kubeconfig",
        ),
        (
            &["--config", "/nonexistent/policy.yaml"],
            "/nonexistent/policy.yaml",
        ),
        (&["--max-body-bytes", "0"], "--max-body-bytes"),
        (&["--request-timeout", "0s"], "--request-timeout"),
        (
            &[
                "--max-body-bytes",
                "4096",
                "--max-inflight-body-bytes",
                "1024",
            ],
            "--max-inflight-body-bytes",
        ),
    ];
    for (args, named) in cases {
        let work = tempfile::tempdir().expect("tempdir");
        let home = tempfile::tempdir().expect("tempdir");
        let output = Command::new(env!("CARGO_BIN_EXE_envlink"))
            .args(["serve", "--dev"])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(work.path())
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .output()
            .expect("envlink runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("try it"),
            "{args:?}: banner printed: {stderr}"
        );
        assert!(!stderr.contains("envlink serving"), "{args:?}: {stderr}");
        assert!(
            !home.path().join(".cache/envlink/dev-ca.pem").exists(),
            "{args:?}: the CA was written"
        );
        assert_eq!(
            std::fs::read_dir(work.path()).expect("read_dir").count(),
            0,
            "{args:?}: something was written to the working directory"
        );
    }
}
