//! `envlink serve` as a process: `--dev` answers a real review over HTTPS with the CA it
//! wrote, SIGTERM ends it with status 0, and startup errors name what is wrong.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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

/// Kills the child if a test fails half-way, so no server outlives the test.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn post_review(addr: SocketAddr, ca_pem: &[u8], path: &str, body: &[u8]) -> String {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem).expect("CA PEM"))
        .expect("add CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake with the --dev CA");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write");
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
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
    let mut guard = Guard(Some(child));
    let child = guard.0.as_mut().expect("child");
    let serving = common::wait_for_serving(child);
    let (addr, logs) = (serving.listen, serving.rest);
    let ca_pem = std::fs::read(&ca).expect("the CA was written");

    let review =
        std::fs::read(format!("{FIXTURES}/validate-deployment-gpu-shadow.json")).expect("fixture");
    let response = post_review(addr, &ca_pem, "/validate", &review).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).expect("body");
    let review: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(
        review["response"]["uid"],
        "b2f0c4a1-9d2e-4c61-8a7e-3c5d1f0e9a11"
    );

    let refused = post_review(addr, &ca_pem, "/validate", b"{not json").await;
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
    // Every line is one JSON object; the review's line names the object and the decision,
    // and its span the endpoint and uid.
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
    assert_eq!(answered["span"]["endpoint"], "validate", "{answered}");
    assert_eq!(
        answered["span"]["uid"], "b2f0c4a1-9d2e-4c61-8a7e-3c5d1f0e9a11",
        "{answered}"
    );
    let refused = lines
        .iter()
        .find(|l| l["message"] == "review refused at the HTTP level")
        .unwrap_or_else(|| panic!("no `review refused` line: {logs:#?}"));
    assert_eq!(refused["status"], 400, "{refused}");
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
