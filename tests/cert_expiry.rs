//! `envlink serve` with short-lived certificates: the expiry gauge equals the served
//! certificate's notAfter, follows a rotation (Kubernetes' `..data` symlink swap), and the
//! expiry warning is logged once — not at every reload interval.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVICES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mutate/services.yaml"
);
const GAUGE: &str = "envlink_tls_certificate_expiry_timestamp_seconds";
const WARNING: &str = "TLS certificate expires soon";
/// Bounded polling: generous for a loaded 2-core CI machine, never a timing assertion.
const POLL: Duration = Duration::from_millis(50);
const POLL_LIMIT: usize = 400;

/// A self-signed certificate for localhost (PEM) and its key, valid until `not_after`
/// (Unix seconds; X.509 keeps whole seconds).
fn certificate_until(not_after: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(not_after - 30 * 24 * 3600).expect("not_before");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("not_after");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

fn now_unix() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit")
}

/// Kubernetes' Secret volume layout: `..<generation>/` holds the files, `..data` points at
/// it, and the visible names point through `..data`, so a rotation is one atomic rename.
struct SecretDir {
    root: PathBuf,
    generation: usize,
}

impl SecretDir {
    fn new(root: &Path, pair: &(String, String)) -> Self {
        let mut dir = Self {
            root: root.to_path_buf(),
            generation: 0,
        };
        dir.publish(pair);
        std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).expect("symlink");
        dir
    }

    fn publish(&mut self, (cert, key): &(String, String)) {
        self.generation += 1;
        let name = format!("..gen{}", self.generation);
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("tls.crt"), cert).expect("write cert");
        std::fs::write(dir.join("tls.key"), key).expect("write key");
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
    }
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

/// `GET /metrics` over plain HTTP/1.1; the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect to metrics");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("UTF-8 metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .expect("body")
}

/// The value of a sample line `name value` (no labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn expiry_gauge_follows_rotation_and_the_warning_is_logged_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // One hour left: inside a 2 h warning window (and inside the 7 d default too).
    let first_expiry = now_unix() + 3600;
    let mut secret = SecretDir::new(tmp.path(), &certificate_until(first_expiry));
    let cert = tmp.path().join("tls.crt").to_string_lossy().into_owned();
    let key = tmp.path().join("tls.key").to_string_lossy().into_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args([
            "serve",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--services-file",
            SERVICES,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            // Many reload intervals in the test's few seconds: the warning must not repeat
            // with them.
            "--tls-reload-interval",
            "100ms",
            "--cert-expiry-warning",
            "2h",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("envlink starts");
    let mut guard = Guard(Some(child));
    let child = guard.0.as_mut().expect("child");
    let serving = common::wait_for_serving(child);

    let text = scrape(serving.metrics).await;
    assert!(
        text.contains(&format!("# TYPE {GAUGE} gauge")),
        "no gauge:\n{text}"
    );
    assert_eq!(
        sample(&text, GAUGE),
        Some(first_expiry as f64),
        "gauge after the first load:\n{text}"
    );

    // At least 10 reload intervals with the same (expiring) certificate.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Rotate to a certificate with 30 days left: outside the window, so no new warning.
    let second_expiry = now_unix() + 30 * 24 * 3600;
    secret.publish(&certificate_until(second_expiry));
    let mut text = String::new();
    for _ in 0..POLL_LIMIT {
        text = scrape(serving.metrics).await;
        if sample(&text, GAUGE) == Some(second_expiry as f64) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        sample(&text, GAUGE),
        Some(second_expiry as f64),
        "gauge after the rotation:\n{text}"
    );
    assert!(
        text.contains("envlink_tls_reloads_total{result=\"success\"} 1"),
        "{text}"
    );
    // More intervals with the renewed certificate.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let mut child = guard.0.take().expect("child");
    assert_eq!(child.wait().expect("exit").code(), Some(0));
    // The reloader runs beside start-up, so its first warning may come before or after the
    // "envlink serving" line.
    let mut logs = serving.before;
    logs.extend(serving.rest.join().expect("log reader"));
    let warnings: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(WARNING))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "expected one warning: {logs:#?}");
    let warning = &warnings[0];
    assert_eq!(warning["level"], "WARN", "{warning}");
    let expected = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(first_expiry).expect("positive")),
    )
    .to_string();
    assert_eq!(warning["not_after"], expected.as_str(), "{warning}");
    assert!(
        warning["left"]
            .as_str()
            .is_some_and(|l| l.starts_with("59m") || l.starts_with("1h")),
        "{warning}"
    );
    assert!(
        logs.iter().any(|l| l.contains("TLS certificate reloaded")),
        "{logs:#?}"
    );
}

#[test]
fn the_warning_threshold_takes_days_and_refuses_nonsense() {
    let out = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args(["serve", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--cert-expiry-warning"), "{help}");
    assert!(help.contains("[default: 7d]"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_envlink"))
        .args(["serve", "--dev", "--cert-expiry-warning", "soon"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cert-expiry-warning"),
        "the error names the flag: {stderr}"
    );
}
