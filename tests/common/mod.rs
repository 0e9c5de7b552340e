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
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_envlink"));
    command
        .arg("serve")
        .args(args)
        .args(["--log-format", "json"]);
    let mut guard = ChildGuard(Some(spawn_with_piped_log(command, "info")));
    let serving = wait_for_serving(guard.0.as_mut().expect("child"));
    (guard, serving)
}

/// Spawns `command` with `RUST_LOG=rust_log`, no stdin or stdout, and stderr piped for
/// [`wait_for_serving`].
fn spawn_with_piped_log(mut command: std::process::Command, rust_log: &str) -> Child {
    command
        .env("RUST_LOG", rust_log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("envlink starts")
}

/// Trusts the one CA certificate in `ca_pem`.
fn roots_of(ca_pem: &[u8]) -> std::sync::Arc<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem).expect("CA PEM"))
        .expect("add CA");
    std::sync::Arc::new(roots)
}

/// A TLS connection to `addr` as "localhost", trusting `roots`, offering `alpn` (none when
/// empty). Unbounded: callers put their own deadline around it.
async fn tls_connect(
    addr: SocketAddr,
    roots: std::sync::Arc<rustls::RootCertStore>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// `envlink serve --dev` on ephemeral loopback ports, its CA written to a temporary directory
/// and trusted by [`DevServer::tls`], JSON logs without a line per review; killed on drop.
pub struct DevServer {
    pub child: Child,
    /// The HTTPS address.
    pub addr: SocketAddr,
    /// The plain-HTTP metrics address.
    pub metrics: SocketAddr,
    /// Trusts the `--dev` CA.
    pub roots: std::sync::Arc<rustls::RootCertStore>,
    /// Holds the CA file.
    dir: tempfile::TempDir,
}

/// The `envlink` built for these tests, with `args`.
pub fn envlink_command(args: Vec<String>) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_envlink"));
    command.args(args);
    command
}

impl DevServer {
    /// Starts `envlink serve --dev` with `extra` flags after the defaults; `launch` turns the
    /// argument list into the command to spawn ([`envlink_command`], or e.g. a shell that
    /// sets a limit before it runs another build).
    pub fn start(
        extra: &[&str],
        launch: impl FnOnce(Vec<String>) -> std::process::Command,
    ) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = tmp.path().join("ca.pem");
        let mut args: Vec<String> = ["serve", "--dev", "--log-format", "json"]
            .into_iter()
            .chain(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .map(String::from)
            .collect();
        args.push("--dev-ca-out".into());
        args.push(ca.to_string_lossy().into_owned());
        args.extend(extra.iter().map(|a| a.to_string()));
        // The "serving" line, without one line per review.
        let mut child = spawn_with_piped_log(launch(args), "info,envlink::http::router=warn");
        let serving = wait_for_serving(&mut child);
        let pem = std::fs::read(&ca).expect("the CA was written");
        Self {
            child,
            addr: serving.listen,
            metrics: serving.metrics,
            roots: roots_of(&pem),
            dir: tmp,
        }
    }

    /// The `--dev` CA's certificate file (PEM).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn assert_running(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "the server process exited"
        );
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| {
                v.trim_start_matches(':')
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{field} in {status}"))
    }

    /// A TLS connection offering `alpn`, trusting the `--dev` CA. Unbounded: callers put
    /// their own deadline around it.
    pub async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        tls_connect(self.addr, self.roots.clone(), &[alpn]).await
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tls = tls_connect(addr, roots_of(ca_pem), &[]).await;
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
