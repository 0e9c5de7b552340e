//! Helpers shared by the tests that run `envlink serve` as a process.

// Each test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;
use std::thread::JoinHandle;

use serde_json::Value;

/// What the "envlink serving" log line says, and the rest of the log.
pub struct Serving {
    /// The HTTPS address (`--listen`, with the port the OS chose for `:0`).
    pub listen: SocketAddr,
    /// The plain-HTTP metrics address.
    pub metrics: SocketAddr,
    /// The stderr lines before the "envlink serving" one.
    pub before: Vec<String>,
    /// Every later stderr line, collected until the child exits. Reading on keeps the child
    /// from ever blocking on a full pipe.
    pub rest: JoinHandle<Vec<String>>,
}

/// Reads the child's JSON log lines (`--log-format json`, stderr piped) until the "envlink
/// serving" one. If the child never logs it, kills the child and panics with its log.
pub fn wait_for_serving(child: &mut Child) -> Serving {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("envlink serving"))
        {
            let address = |key: &str| v[key].as_str().and_then(|a| a.parse().ok());
            if let (Some(listen), Some(metrics)) = (address("listen"), address("metrics")) {
                let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
                return Serving {
                    listen,
                    metrics,
                    before: seen,
                    rest,
                };
            }
        }
        seen.push(line);
    }
    let _ = child.kill();
    panic!("envlink never logged that it serves:\n{}", seen.join("\n"));
}

/// Starts `envlink serve` with `args`, JSON logs on a piped stderr, and waits for it to
/// serve. The guard kills it when the test ends.
pub fn serve(args: &[&std::ffi::OsStr]) -> (ChildGuard, Serving) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_envlink"))
        .arg("serve")
        .args(args)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("envlink starts");
    let mut guard = ChildGuard(Some(child));
    let serving = wait_for_serving(guard.0.as_mut().expect("child"));
    (guard, serving)
}

/// Kills the child if a test fails half-way, so no server outlives the test.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// POSTs `body` as JSON over HTTPS/1.1 (trusting `ca_pem`) and returns the whole response
/// text (status line, headers, body); the connection is closed after it.
pub async fn post_review(addr: SocketAddr, ca_pem: &[u8], path: &str, body: &[u8]) -> String {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem).expect("CA PEM"))
        .expect("add CA");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake with the --dev CA");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write");
    // rustls may still hold the last records of a large body: without the flush the server
    // waits for them until its request timeout (a 408 after 8 s, 1 run in 20).
    tls.flush().await.expect("flush");
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}
