//! The real HTTPS server on 127.0.0.1: certificate rotation without restart (including
//! Kubernetes' `..data` symlink swap), a broken new certificate keeping the old one, ALPN,
//! the handshake timeout and graceful shutdown with a request in flight.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use envlink::http::server::{self, Drained, ServerOptions};
use envlink::http::tls::{self, CertReloader, CertResolver, DevCertificates, ReloadStats};
use envlink::http::workers::Workers;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bounded polling: generous for a loaded 2-core CI machine, never a timing assertion.
const POLL: Duration = Duration::from_millis(25);
const POLL_LIMIT: usize = 800;

fn options() -> ServerOptions {
    ServerOptions {
        handshake_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
        max_connections: server::DEFAULT_MAX_CONNECTIONS,
        ..ServerOptions::default()
    }
}

fn app() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Server {
    async fn start(resolver: Arc<CertResolver>, options: ServerOptions) -> Self {
        Self::start_with(resolver, options, app()).await
    }

    async fn start_with(resolver: Arc<CertResolver>, options: ServerOptions, app: Router) -> Self {
        let config = Arc::new(tls::server_config(resolver).expect("server config"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        // Two serving threads, as a 2-core replica runs.
        let workers = Workers::start(2).expect("serving threads");
        let task = tokio::spawn(server::serve_tls(
            listener,
            config,
            app,
            options,
            workers,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task")
    }
}

fn roots(sets: &[&DevCertificates]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for set in sets {
        let ca = CertificateDer::from_pem_slice(set.ca_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("add CA");
    }
    roots
}

fn leaf_der(set: &DevCertificates) -> Vec<u8> {
    CertificateDer::from_pem_slice(set.cert_pem.as_bytes())
        .expect("cert PEM")
        .to_vec()
}

async fn connect(addr: SocketAddr, roots: &RootCertStore, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

fn served_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

/// One HTTP/1.1 request with `Connection: close`; the whole raw response.
async fn http1_get(stream: &mut TlsStream<TcpStream>, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// Kubernetes' Secret volume layout: `..<timestamp>/` holds the files, `..data` points at
/// it, and the visible names point through `..data`.
struct SecretDir {
    root: PathBuf,
    generation: usize,
}

impl SecretDir {
    fn new(root: &Path, cert: &[u8], key: &[u8]) -> Self {
        let mut dir = Self {
            root: root.to_path_buf(),
            generation: 0,
        };
        dir.publish(cert, key);
        std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).expect("symlink");
        std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).expect("symlink");
        dir
    }

    /// Writes a new generation and swaps `..data` to it atomically (rename over the link).
    fn publish(&mut self, cert: &[u8], key: &[u8]) {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_0{}", self.generation);
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("tls.crt"), cert).expect("write cert");
        std::fs::write(dir.join("tls.key"), key).expect("write key");
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.root.join("..data")).expect("swap ..data");
    }

    fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }
}

#[tokio::test]
async fn rotation_through_a_symlink_swap_without_restart() {
    let first = tls::generate_dev_certificates().expect("certs");
    let second = tls::generate_dev_certificates().expect("certs");
    let third = tls::generate_dev_certificates().expect("certs");
    let roots = roots(&[&first, &second, &third]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut secret = SecretDir::new(
        tmp.path(),
        first.cert_pem.as_bytes(),
        first.key_pem.as_bytes(),
    );

    let pair = tls::read_pair(&secret.cert(), &secret.key())
        .await
        .expect("read");
    let key = tls::certified_key_from_pem(&pair.0, &pair.1, "tls.crt", "tls.key").expect("load");
    let resolver = Arc::new(CertResolver::new(key));
    let stats = Arc::new(ReloadStats::default());
    let reloader = CertReloader::new(
        secret.cert(),
        secret.key(),
        resolver.clone(),
        stats.clone(),
        pair,
    );
    let reload_task = tokio::spawn(reloader.run(Duration::from_millis(20)));
    let server = Server::start(resolver, options()).await;

    let mut stream = connect(server.addr, &roots, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&stream), leaf_der(&first));
    assert!(
        http1_get(&mut stream, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // A new Secret version: new handshakes get the new certificate, no restart.
    secret.publish(second.cert_pem.as_bytes(), second.key_pem.as_bytes());
    let mut rotated = false;
    for _ in 0..POLL_LIMIT {
        let stream = connect(server.addr, &roots, &[b"h2"]).await;
        if served_cert(&stream) == leaf_der(&second) {
            rotated = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(rotated, "the new certificate was never served");
    assert_eq!(stats.successes(), 1);
    assert_eq!(stats.failures(), 0);

    // A broken version (key of another certificate, then not PEM at all): refused, counted,
    // and the previous certificate stays in use.
    secret.publish(third.cert_pem.as_bytes(), second.key_pem.as_bytes());
    wait_for(|| stats.failures() == 1).await;
    secret.publish(b"not a certificate", b"not a key");
    wait_for(|| stats.failures() == 2).await;
    let stream = connect(server.addr, &roots, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&stream), leaf_der(&second));
    assert_eq!(stats.successes(), 1);

    // Fixed again: picked up.
    secret.publish(third.cert_pem.as_bytes(), third.key_pem.as_bytes());
    wait_for(|| stats.successes() == 2).await;
    let stream = connect(server.addr, &roots, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&stream), leaf_der(&third));

    reload_task.abort();
    assert_eq!(server.shutdown().await, Drained::Clean);
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..POLL_LIMIT {
        if condition() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("condition never became true");
}

#[tokio::test]
async fn reload_check_is_byte_compared_and_reports_once() {
    let first = tls::generate_dev_certificates().expect("certs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut secret = SecretDir::new(
        tmp.path(),
        first.cert_pem.as_bytes(),
        first.key_pem.as_bytes(),
    );
    let pair = tls::read_pair(&secret.cert(), &secret.key())
        .await
        .expect("read");
    let key = tls::certified_key_from_pem(&pair.0, &pair.1, "c", "k").expect("load");
    let resolver = Arc::new(CertResolver::new(key));
    let stats = Arc::new(ReloadStats::default());
    let mut reloader = CertReloader::new(
        secret.cert(),
        secret.key(),
        resolver.clone(),
        stats.clone(),
        pair,
    );
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Unchanged);
    // The same bytes in a new generation are not a reload.
    secret.publish(first.cert_pem.as_bytes(), first.key_pem.as_bytes());
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Unchanged);
    secret.publish(b"garbage", b"garbage");
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Failed);
    // Reported once, not at every interval.
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Unchanged);
    assert_eq!(stats.failures(), 1);
    // Files gone: one failure, then quiet until they return.
    std::fs::remove_file(secret.cert()).expect("rm");
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Failed);
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Unchanged);
    assert_eq!(stats.failures(), 2);
    std::os::unix::fs::symlink("..data/tls.crt", secret.cert()).expect("symlink");
    let second = tls::generate_dev_certificates().expect("certs");
    secret.publish(second.cert_pem.as_bytes(), second.key_pem.as_bytes());
    assert_eq!(reloader.check().await, tls::ReloadOutcome::Reloaded);
    assert_eq!(
        resolver.current().cert[0].to_vec(),
        leaf_der(&second),
        "the resolver serves the new certificate"
    );
}

#[tokio::test]
async fn alpn_offers_h2_and_http1() {
    let certs = tls::generate_dev_certificates().expect("certs");
    let key = tls::certified_key_from_pem(
        certs.cert_pem.as_bytes(),
        certs.key_pem.as_bytes(),
        "c",
        "k",
    )
    .expect("load");
    let server = Server::start(Arc::new(CertResolver::new(key)), options()).await;
    let roots = roots(&[&certs]);
    let h2 = connect(server.addr, &roots, &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h1 = connect(server.addr, &roots, &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        http1_get(&mut h1, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    drop(h2);
    assert_eq!(server.shutdown().await, Drained::Clean);
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped() {
    let certs = tls::generate_dev_certificates().expect("certs");
    let key = tls::certified_key_from_pem(
        certs.cert_pem.as_bytes(),
        certs.key_pem.as_bytes(),
        "c",
        "k",
    )
    .expect("load");
    let server = Server::start(
        Arc::new(CertResolver::new(key)),
        ServerOptions {
            handshake_timeout: Duration::from_millis(100),
            ..options()
        },
    )
    .await;
    // Connect and say nothing: the server closes the connection (EOF) instead of waiting.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
        .await
        .expect("the server closed the stalled connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(server.shutdown().await, Drained::Clean);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let certs = tls::generate_dev_certificates().expect("certs");
    let key = tls::certified_key_from_pem(
        certs.cert_pem.as_bytes(),
        certs.key_pem.as_bytes(),
        "c",
        "k",
    )
    .expect("load");
    // The handler says when it has started, then takes a while to answer.
    let (entered_tx, entered) = oneshot::channel::<()>();
    let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let slow = Router::new().route(
        "/slow",
        get(move || {
            let entered_tx = entered_tx.clone();
            async move {
                if let Some(tx) = entered_tx.lock().expect("lock").take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done\n"
            }
        }),
    );
    let server = Server::start_with(Arc::new(CertResolver::new(key)), options(), slow).await;
    let roots = roots(&[&certs]);
    let addr = server.addr;
    let mut stream = connect(addr, &roots, &[b"http/1.1"]).await;
    let in_flight = tokio::spawn(async move { http1_get(&mut stream, "/slow").await });
    entered.await.expect("the request reached the handler");
    let drained = server.shutdown().await;
    let response = in_flight.await.expect("client task");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("done\n"), "{response}");
    assert_eq!(drained, Drained::Clean);
    // No longer accepting.
    assert!(TcpStream::connect(addr).await.is_err());
}
