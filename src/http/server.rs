//! The HTTPS accept loop: TLS handshake, HTTP/1.1 or HTTP/2 (by ALPN), one task per
//! connection, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Time allowed for the TLS handshake; a client that stalls in it is dropped.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1.1 request's headers to arrive (hyper's header read
    /// timeout), against clients that open a connection and trickle bytes.
    pub header_read_timeout: Duration,
    /// After the shutdown signal, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Most connections open at once (in the TLS handshake or serving). At the limit the
    /// accept loop waits for one to close; new connections queue in the kernel's listen
    /// backlog meanwhile instead of being refused.
    pub max_connections: usize,
}

/// Default `--max-connections`. The API server reuses a few HTTP/2 connections per replica,
/// so normal traffic needs tens; the limit bounds file descriptors and per-connection memory
/// (TLS and HTTP buffers) when a misbehaving client opens connections without end.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ended with connections still open (they are dropped).
    TimedOut,
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then stops accepting,
/// lets open connections finish their requests (HTTP/2 gets a GOAWAY, idle HTTP/1.1
/// connections close) for up to `options.shutdown_grace`, and returns.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Detects API-server connections that died without a FIN, so they do not pile up.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut at_limit = false;
    loop {
        // A slot first, then accept: at the limit, connections wait in the listen backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_limit = false;
                slot
            }
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        limit = options.max_connections,
                        "connection limit reached (--max-connections); new connections wait"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small request/response exchanges: do not wait to coalesce segments.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app = app.clone();
                let builder = builder.clone();
                // Taken before the task starts, so a shutdown signalled during the handshake
                // still reaches (and waits for) this connection.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // Held for the connection's lifetime.
                    let _slot = slot;
                    let stream =
                        match tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let service = TowerToHyperService::new(app);
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        grace = ?options.shutdown_grace,
        "shutting down: no new connections; letting in-flight reviews finish"
    );
    match tokio::time::timeout(options.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut,
    }
}
