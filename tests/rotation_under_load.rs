//! Certificate rotation under continuous load, against the real `envlink serve` process: while
//! clients keep sending reviews (HTTP/2 and HTTP/1.1 keep-alive connections, and a new
//! connection per request), the certificate and key files are replaced several times — by
//! Kubernetes' `..data` symlink swap, by renaming new files over the old ones, and by
//! rewriting the files in place (which a reload may catch half-written). Not one request may
//! fail, and new handshakes must see each new certificate.
//!
//! Bounded: a fixed number of rotations, each waited for at most `ROTATION_DEADLINE`; the
//! clients stop when the rotations are done, and every request has a deadline.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envlink::http::tls::{self, DevCertificates};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const REVIEW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/review/mutate-pod-create.json"
);
const SERVICES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mutate/services.yaml"
);
const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// How often the server re-reads the files.
const RELOAD_INTERVAL: &str = "50ms";
/// How long one rotation may take to reach new handshakes (generous for a loaded machine).
const ROTATION_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline of one request, connection included.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Rotations per test.
const ROTATIONS: usize = 4;

/// How the files are replaced.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// A Secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`; a new
    /// version is a new directory and an atomic rename of `..data`.
    Secret,
    /// Plain files, replaced by writing a temporary file and renaming it over the old one
    /// (each file atomically, the pair not: for a moment the key does not match).
    Rename,
    /// Plain files rewritten in place (truncate, write): a reload may read half a file.
    InPlace,
}

struct CertFiles {
    root: PathBuf,
    layout: Layout,
    generation: usize,
}

impl CertFiles {
    fn new(root: &Path, layout: Layout, first: &DevCertificates) -> Self {
        let mut files = Self {
            root: root.to_path_buf(),
            layout,
            generation: 0,
        };
        match layout {
            Layout::Secret => {
                files.publish(first);
                std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).expect("ln");
                std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).expect("ln");
            }
            Layout::Rename | Layout::InPlace => files.publish(first),
        }
        files
    }

    fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }

    fn publish(&mut self, set: &DevCertificates) {
        self.generation += 1;
        let (cert, key) = (set.cert_pem.as_bytes(), set.key_pem.as_bytes());
        match self.layout {
            Layout::Secret => {
                let name = format!("..2026_01_01_00_00_{:02}", self.generation);
                let dir = self.root.join(&name);
                std::fs::create_dir(&dir).expect("mkdir");
                std::fs::write(dir.join("tls.crt"), cert).expect("write");
                std::fs::write(dir.join("tls.key"), key).expect("write");
                let tmp = self.root.join("..data_tmp");
                std::os::unix::fs::symlink(&name, &tmp).expect("ln");
                std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
            }
            Layout::Rename => {
                for (path, bytes) in [(self.cert(), cert), (self.key(), key)] {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, bytes).expect("write");
                    std::fs::rename(&tmp, &path).expect("rename");
                    // Give the reloader a chance to see the mismatched pair.
                    std::thread::sleep(Duration::from_millis(60));
                }
            }
            Layout::InPlace => {
                use std::io::Write;
                for (path, bytes) in [(self.cert(), cert), (self.key(), key)] {
                    let mut file = std::fs::File::create(&path).expect("truncate");
                    let (a, b) = bytes.split_at(bytes.len() / 2);
                    file.write_all(a).expect("write");
                    file.flush().expect("flush");
                    // Half a file on disk for longer than a reload interval.
                    std::thread::sleep(Duration::from_millis(60));
                    file.write_all(b).expect("write");
                }
            }
        }
    }
}

fn leaf(set: &DevCertificates) -> Vec<u8> {
    CertificateDer::from_pem_slice(set.cert_pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}

/// `envlink serve` with certificate files; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    fn start(files: &CertFiles) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_envlink"))
            .arg("serve")
            .arg("--tls-cert")
            .arg(files.cert())
            .arg("--tls-key")
            .arg(files.key())
            .args(["--tls-reload-interval", RELOAD_INTERVAL])
            .args(["--services-file", SERVICES])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,envlink::http::router=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("envlink starts");
        let serving = common::wait_for_serving(&mut child);
        let (addr, metrics) = (serving.listen, serving.metrics);
        Self {
            child,
            addr,
            metrics,
        }
    }

    /// `envlink_tls_reloads_total{result=...}` from `/metrics`.
    async fn reloads(&self, result: &str) -> u64 {
        let mut tcp = TcpStream::connect(self.metrics).await.expect("metrics");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.expect("read");
        let needle = format!("envlink_tls_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    roots: Arc<RootCertStore>,
    body: Bytes,
}

impl Client {
    async fn handshake(&self, alpn: &[u8]) -> Result<TlsStream<TcpStream>, String> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    }

    fn request(&self) -> Request<Full<Bytes>> {
        Request::post("https://localhost/mutate")
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .expect("request")
    }

    async fn check(response: hyper::Response<hyper::body::Incoming>) -> Result<(), String> {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let review: Value = serde_json::from_slice(&body).map_err(|e| format!("JSON: {e}"))?;
        if review["response"]["uid"] != UID || review["response"]["allowed"] != true {
            return Err(format!("unexpected answer: {review}"));
        }
        Ok(())
    }

    /// HTTP/2 on one connection until `stop`.
    async fn h2_keepalive(self, load: Arc<Load>) {
        let tls = match self.handshake(b"h2").await {
            Ok(tls) => tls,
            Err(e) => return load.fail(format!("h2 keep-alive: {e}")),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
            {
                Ok(pair) => pair,
                Err(e) => return load.fail(format!("h2 keep-alive: {e}")),
            };
        tokio::spawn(connection);
        while !load.stop.load(Ordering::Relaxed) {
            let result = tokio::time::timeout(REQUEST_DEADLINE, async {
                let response = sender
                    .send_request(self.request())
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                Self::check(response).await
            })
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            load.record("h2 keep-alive", result);
        }
    }

    /// HTTP/1.1 on one connection until `stop`.
    async fn h1_keepalive(self, load: Arc<Load>) {
        let tls = match self.handshake(b"http/1.1").await {
            Ok(tls) => tls,
            Err(e) => return load.fail(format!("h1 keep-alive: {e}")),
        };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok(pair) => pair,
                Err(e) => return load.fail(format!("h1 keep-alive: {e}")),
            };
        tokio::spawn(connection);
        while !load.stop.load(Ordering::Relaxed) {
            let result = tokio::time::timeout(REQUEST_DEADLINE, async {
                sender.ready().await.map_err(|e| format!("ready: {e}"))?;
                let mut request = self.request();
                *request.uri_mut() = "/mutate".parse().expect("uri");
                request
                    .headers_mut()
                    .insert("host", "localhost".parse().expect("host"));
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                Self::check(response).await
            })
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            load.record("h1 keep-alive", result);
        }
    }

    /// A new connection (and handshake) per request, alternating HTTP/2 and HTTP/1.1;
    /// records the certificates served.
    async fn fresh_connections(self, load: Arc<Load>) {
        let mut h2 = true;
        while !load.stop.load(Ordering::Relaxed) {
            let result = tokio::time::timeout(REQUEST_DEADLINE, self.one_fresh(h2, &load))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            load.record("new connection", result);
            h2 = !h2;
        }
    }

    async fn one_fresh(&self, h2: bool, load: &Load) -> Result<(), String> {
        let tls = self.handshake(if h2 { b"h2" } else { b"http/1.1" }).await?;
        if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            load.seen.lock().map_err(|_| "lock")?.insert(cert.to_vec());
        }
        let io = TokioIo::new(tls);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2: {e}"))?;
            tokio::spawn(connection);
            sender.send_request(self.request()).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1: {e}"))?;
            tokio::spawn(connection);
            let mut request = self.request();
            *request.uri_mut() = "/mutate".parse().expect("uri");
            request
                .headers_mut()
                .insert("host", "localhost".parse().expect("host"));
            sender.send_request(request).await
        }
        .map_err(|e| format!("send: {e}"))?;
        Self::check(response).await
    }

    /// The certificate a new handshake gets.
    async fn served(&self) -> Option<Vec<u8>> {
        let tls = self.handshake(b"h2").await.ok()?;
        Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
    }
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: Mutex<std::collections::HashMap<&'static str, usize>>,
    failures: Mutex<Vec<String>>,
    seen: Mutex<HashSet<Vec<u8>>>,
    total: AtomicUsize,
}

impl Load {
    fn record(&self, kind: &'static str, result: Result<(), String>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if let Ok(mut ok) = self.ok.lock() {
                    *ok.entry(kind).or_default() += 1;
                }
            }
            Err(e) => self.fail(format!("{kind}: {e}")),
        }
    }

    fn fail(&self, message: String) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.push(message);
        }
    }
}

async fn rotate_under_load(layout: Layout) {
    let sets: Vec<DevCertificates> = (0..=ROTATIONS)
        .map(|_| tls::generate_dev_certificates().expect("certs"))
        .collect();
    let mut roots = RootCertStore::empty();
    for set in &sets {
        roots
            .add(CertificateDer::from_pem_slice(set.ca_pem.as_bytes()).expect("CA"))
            .expect("add CA");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files = CertFiles::new(tmp.path(), layout, &sets[0]);
    let server = Server::start(&files);
    let client = Client {
        addr: server.addr,
        roots: Arc::new(roots),
        body: Bytes::from(std::fs::read(REVIEW).expect("fixture")),
    };
    assert_eq!(client.served().await, Some(leaf(&sets[0])));

    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(tokio::spawn(client.clone().h2_keepalive(load.clone())));
        tasks.push(tokio::spawn(client.clone().h1_keepalive(load.clone())));
        tasks.push(tokio::spawn(client.clone().fresh_connections(load.clone())));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    for set in &sets[1..] {
        let before = load.total.load(Ordering::Relaxed);
        files.publish(set);
        let wanted = leaf(set);
        let deadline = tokio::time::Instant::now() + ROTATION_DEADLINE;
        loop {
            if client.served().await.as_ref() == Some(&wanted) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{layout:?}: generation {} never reached new handshakes",
                files.generation
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the load run on the new certificate for a moment: until its own new
        // connections have seen it (counting requests alone is not enough: they may all have
        // been keep-alive requests on connections made before the rotation).
        let until = tokio::time::Instant::now() + ROTATION_DEADLINE;
        loop {
            let seen_new = load.seen.lock().expect("lock").contains(&wanted);
            if seen_new && load.total.load(Ordering::Relaxed) >= before + 20 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{layout:?}: the load's new connections never saw generation {}",
                files.generation
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        tokio::time::timeout(REQUEST_DEADLINE * 2, task)
            .await
            .expect("client stops")
            .expect("client task");
    }
    let failures = load.failures.lock().expect("lock").clone();
    let ok = load.ok.lock().expect("lock").clone();
    eprintln!(
        "{layout:?}: requests answered {ok:?}, failed {}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{layout:?}: failed requests: {failures:#?}"
    );
    for kind in ["h2 keep-alive", "h1 keep-alive", "new connection"] {
        assert!(
            ok.get(kind).copied().unwrap_or(0) >= 5,
            "{layout:?}: too few {kind} requests: {ok:?}"
        );
    }
    let seen = load.seen.lock().expect("lock").clone();
    assert!(
        seen.len() >= 2,
        "{layout:?}: the load only ever saw {} certificate(s)",
        seen.len()
    );
    assert!(seen.contains(&leaf(&sets[ROTATIONS])));
    assert_eq!(
        server.reloads("success").await,
        ROTATIONS as u64,
        "{layout:?}: one reload per new pair"
    );
    if let Layout::Secret = layout {
        // The symlink swap is atomic: never a half-written or mismatched pair.
        assert_eq!(server.reloads("failure").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_secret_symlink_swap_under_load() {
    rotate_under_load(Layout::Secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_renaming_files_under_load() {
    rotate_under_load(Layout::Rename).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rewriting_files_in_place_under_load() {
    rotate_under_load(Layout::InPlace).await;
}
