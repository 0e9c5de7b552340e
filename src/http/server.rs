//! The accept loops of both listeners — HTTPS for the admission endpoints, plain HTTP for
//! metrics — with the same edge: a cap on open connections, a smaller budget for connections
//! that have not yet sent a complete request, header and idle timeouts, and graceful
//! shutdown. HTTP/1.1 or HTTP/2 (by ALPN on HTTPS; by the connection preface on plain HTTP).
//!
//! A connection goes through two phases:
//!
//! 1. **Unproven**, from `accept` until its first request head has been read (the TLS
//!    handshake included). Anyone who can reach the port can hold connections in this phase
//!    at no cost to themselves, so they get their own budget (`max_handshakes`): when it is
//!    full, the *oldest* unproven connection is closed to make room. A client that completes
//!    its handshake and sends a request in milliseconds — the API server — is never the
//!    oldest for long, so thousands of idle or half-open connections cannot keep it out;
//!    they only churn. The whole phase is also bounded in time (`handshake_timeout`).
//! 2. **Serving**, until the peer closes, the connection has had no request in flight for
//!    `idle_timeout` (then it is shut down gracefully: GOAWAY on HTTP/2), or the server
//!    stops.
//!
//! Every connection, in either phase, holds one of `max_connections` slots; at the limit the
//! accept loop waits and new connections queue in the kernel's listen backlog (which costs
//! the process no file descriptor).
//!
//! Why a loop of envlink's own: the per-connection HTTP work is crates' (hyper-util's `auto`
//! connection builder, tokio-rustls's acceptor); what is left here is the edge, and no crate
//! gives it. `axum::serve` has no TLS, no connection cap and no handshake or idle timeout;
//! `axum-server` and `tls-listener` bound the TLS handshake only — not the time up to the
//! first request head, not on the plain metrics port — and at their cap they refuse or
//! queue new connections rather than evicting the oldest unproven one, which is what keeps
//! the API server getting in while thousands of half-open connections are held (tests/edge.rs);
//! tower's concurrency limits count requests, not connections. Neither has the idle timeout
//! by requests in flight (hyper's HTTP/2 keep-alive only detects dead peers).

use std::collections::BTreeMap;
use std::future::{Future, pending};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::coalesce::{Coalesced, coalescing, direct, sniffing};
use super::workers::Workers;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Time from `accept` to a complete first request head, the TLS handshake included; a
    /// client that stalls anywhere in it is dropped.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1.1 request's headers to arrive (hyper's header read
    /// timeout), against clients that open a connection and trickle bytes.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is shut down gracefully (GOAWAY
    /// on HTTP/2), so idle connections cannot hold slots for ever.
    pub idle_timeout: Duration,
    /// After the shutdown signal, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Most connections open at once (unproven or serving). At the limit the accept loop
    /// waits for one to close; new connections queue in the kernel's listen backlog
    /// meanwhile instead of being refused.
    pub max_connections: usize,
    /// Most connections that have not yet sent a complete request head (TLS handshake
    /// included). Beyond it, the oldest of them is closed to make room for the new one.
    pub max_handshakes: usize,
}

/// Default `--max-connections`. The API server reuses a few HTTP/2 connections per replica,
/// so normal traffic needs tens. The limit bounds file descriptors and per-connection
/// memory: each HTTP/2 connection may hold up to [`H2_CONNECTION_WINDOW`] of received body
/// data that no handler has read yet, so 256 connections bound that to 64 MiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default `--max-handshakes`: connections that have not sent a complete request yet. The
/// API server opens a handful at a time; 64 leaves room for many replicas restarting at once.
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// Default `--idle-timeout`: longer than any gap between reviews on a busy API server
/// connection, short enough that a connection parked by someone else frees its slot.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Default `--metrics-max-connections`. A scraper keeps one connection; probes open one at a
/// time. Kept well below the webhook's, so the metrics port cannot take the descriptors the
/// webhook port needs.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 32;

/// Unproven-connection budget of the metrics listener.
pub const METRICS_MAX_HANDSHAKES: usize = 8;

/// HTTP/2 flow-control windows (per stream and per connection): how much request body a
/// client may send before a handler reads it. hyper's default (1 MiB each) would let every
/// connection park a megabyte outside the in-flight body budget; 256 KiB still moves a 3 MiB
/// body in a dozen round trips.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(8),
            header_read_timeout: Duration::from_secs(8),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_grace: Duration::from_secs(20),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ended with connections still open (they are dropped).
    TimedOut,
}

/// What is spoken on accepted connections.
#[derive(Clone)]
enum Transport {
    Tls(TlsAcceptor),
    Plain,
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then stops accepting,
/// lets open connections finish their requests (HTTP/2 gets a GOAWAY, idle HTTP/1.1
/// connections close) for up to `options.shutdown_grace`, and returns. Connections are
/// served on `workers`' threads; connections still open after the grace period are dropped
/// with them.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    options: ServerOptions,
    workers: Workers,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    serve(
        listener,
        Transport::Tls(TlsAcceptor::from(tls)),
        app,
        options,
        &workers,
        shutdown,
        "https",
    )
    .await
}

/// [`serve_tls`] without TLS, for the metrics listener: the same connection cap, budget of
/// unproven connections, header and idle timeouts.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    // A few scrapes and probes: served on the calling runtime.
    serve(
        listener,
        Transport::Plain,
        app,
        options,
        &Workers::current(),
        shutdown,
        "metrics",
    )
    .await
}

async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    options: ServerOptions,
    workers: &Workers,
    shutdown: impl Future<Output = ()>,
    name: &'static str,
) -> Drained {
    let builder = Arc::new(http_builder(&options));
    tokio::pin!(shutdown);
    let slots = Slots::new(options.max_connections, name);
    let unproven = Arc::new(Unproven::new(options.max_handshakes.max(1), name));
    let (stop_tx, stop_rx) = watch::channel(false);
    loop {
        // A slot first, then accept: at the limit, connections wait in the listen backlog.
        let slot = tokio::select! {
            slot = slots.next() => slot,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = accept(&listener, name) => match accepted {
                Some(pair) => pair,
                None => continue,
            },
            () = &mut shutdown => break,
        };
        let ticket = unproven.enter();
        let connection = Connection {
            peer,
            transport: transport.clone(),
            app: app.clone(),
            builder: builder.clone(),
            options,
            stop: stop_rx.clone(),
        };
        let spawned = workers.spawn_connection(tcp, move |tcp| async move {
            // Held for the connection's lifetime.
            let _slot = slot;
            connection.run(tcp, ticket).await;
        });
        if let Err(error) = spawned {
            // The slot and the ticket went with the closure; the peer sees a reset.
            tracing::warn!(listener = name, %error, "cannot hand a connection to a serving thread");
        }
    }
    drop(listener);
    slots.drain(&stop_tx, options.shutdown_grace).await
}

/// hyper's HTTP/1.1 and HTTP/2 settings for every connection of a listener.
fn http_builder(options: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_CONNECTION_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // Detects API-server connections that died without a FIN, so they do not pile up.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The next connection, or `None` when accepting failed (after a pause: out of file
/// descriptors and the like must not make the loop spin).
async fn accept(listener: &TcpListener, name: &'static str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok((tcp, peer)) => {
            // Small request/response exchanges: do not wait to coalesce segments.
            let _ = tcp.set_nodelay(true);
            Some((tcp, peer))
        }
        Err(error) => {
            tracing::warn!(listener = name, %error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The `max_connections` slots of one listener: one per open connection.
struct Slots {
    semaphore: Arc<Semaphore>,
    limit: usize,
    name: &'static str,
    /// Set while at the limit, so the warning is logged once per episode.
    at_limit: AtomicBool,
}

impl Slots {
    fn new(max_connections: usize, name: &'static str) -> Self {
        let limit = max_connections.clamp(1, MAX_SLOTS);
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
            name,
            at_limit: AtomicBool::new(false),
        }
    }

    /// A free slot, waiting for one when all are taken.
    async fn next(&self) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.semaphore.clone().try_acquire_owned() {
            self.at_limit.store(false, Ordering::Relaxed);
            return slot;
        }
        if !self.at_limit.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                listener = self.name,
                limit = self.limit,
                "connection limit reached; new connections wait"
            );
        }
        match self.semaphore.clone().acquire_owned().await {
            Ok(slot) => slot,
            // The semaphore is never closed.
            Err(_) => pending().await,
        }
    }

    /// Tells every connection to stop and waits, up to `grace`, for all to end.
    async fn drain(&self, stop: &watch::Sender<bool>, grace: Duration) -> Drained {
        let open = self.limit - self.semaphore.available_permits();
        tracing::info!(
            listener = self.name,
            connections = open,
            ?grace,
            "shutting down: no new connections; letting in-flight requests finish"
        );
        stop.send_replace(true);
        // Every slot back means every connection task has ended.
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.semaphore.acquire_many(all)).await {
            Ok(_) => Drained::Clean,
            Err(_) => Drained::TimedOut,
        }
    }
}

/// Upper bound of `max_connections` (a semaphore's permits are counted in `u32` when the
/// server waits for all of them at shutdown).
const MAX_SLOTS: usize = 1 << 20;

/// One accepted connection and what it needs to be served.
/// How a connection's writes reach its transport (see `coalesce`).
#[derive(Debug, Clone, Copy)]
enum Writes {
    /// HTTP/2: gathered, one write per poll of the connection.
    Coalesced,
    /// HTTP/1.1: straight through.
    Direct,
    /// Not known before the first bytes: HTTP/2's preface or not.
    ByPreface,
}

struct Connection {
    peer: SocketAddr,
    transport: Transport,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    options: ServerOptions,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: TcpStream, ticket: Ticket) {
        let Ticket { entry, evicted } = ticket;
        let entry = Arc::new(entry);
        let peer = self.peer;
        let cut = cut_short(evicted, self.options.handshake_timeout, self.stop.clone());
        let served = async {
            match &self.transport {
                Transport::Tls(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let writes = match stream.get_ref().1.alpn_protocol() {
                            Some(b"http/1.1") => Writes::Direct,
                            Some(b"h2") => Writes::Coalesced,
                            // No ALPN: hyper tells the protocol by the first bytes.
                            _ => Writes::ByPreface,
                        };
                        self.serve(stream, entry, writes).await
                    }
                    Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                },
                Transport::Plain => self.serve(tcp, entry, Writes::ByPreface).await,
            }
        };
        tokio::select! {
            () = served => {}
            why = cut => tracing::debug!(%peer, why, "connection closed before its first request"),
        }
    }

    async fn serve<I>(&self, io: I, entry: Arc<Entry>, writes: Writes)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let requests = activity.clone();
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // The first request head is the proof: the connection leaves the unproven set.
            entry.leave();
            let guard = InFlight::start(requests.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(guard);
                response
            }
        });
        // HTTP/2's writes of one poll go out in one write after it; HTTP/1.1 already writes
        // each answer in one go (see `coalesce`).
        let (io, write_out) = match writes {
            Writes::Coalesced => coalescing(io),
            Writes::Direct => direct(io),
            Writes::ByPreface => sniffing(io),
        };
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = Coalesced::new(connection, write_out);
        let peer = self.peer;
        if let Err(error) = drive(connection, &activity, self.options, self.stop.clone()).await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Runs a connection until it ends, shutting it down gracefully when it has been idle for
/// `idle_timeout` or the server stops.
async fn drive<C, T>(
    mut connection: Coalesced<C, T>,
    activity: &Activity,
    options: ServerOptions,
    stop: watch::Receiver<bool>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
    T: AsyncWrite + Unpin,
{
    let idle = tokio::select! {
        result = &mut connection => return result,
        () = idle(activity, options.idle_timeout) => true,
        () = stopped(stop) => false,
    };
    connection.connection().graceful_shutdown();
    if idle {
        // A peer that stopped reading could keep a response write pending for ever.
        match tokio::time::timeout(options.header_read_timeout, connection).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    } else {
        // The server-wide grace period bounds this.
        connection.await
    }
}

/// Completes once no request has been in flight for `timeout`. It only checks when the
/// timeout could have run out (no wake-up per request: a watch channel here cost every
/// request two extra polls of the connection).
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let wait = match activity.idle_for() {
            Some(idle) if idle >= timeout => return,
            Some(idle) => timeout - idle,
            // A request in flight: the earliest the connection can be idle long enough.
            None => timeout,
        };
        tokio::time::sleep(wait).await;
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        pending::<()>().await;
    }
}

/// Completes (with the reason) when an unproven connection must be dropped: evicted to make
/// room, out of time, or the server is stopping. Never completes once the connection has
/// sent its first request head.
async fn cut_short(
    mut evicted: oneshot::Receiver<()>,
    timeout: Duration,
    stop: watch::Receiver<bool>,
) -> &'static str {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    tokio::select! {
        // First: a connection proven just now must not be cut by a timer that is also due.
        biased;
        result = &mut evicted => match result {
            Ok(()) => "evicted: too many connections without a request (--max-handshakes)",
            // The sender is dropped when the connection leaves the unproven set.
            Err(_) => pending().await,
        },
        () = &mut deadline => "no complete request within the handshake timeout",
        () = stopped(stop) => "server shutting down",
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    /// When the connection began to be served; the reference of `last_end_us`.
    start: Instant,
    in_flight: AtomicUsize,
    /// Microseconds from `start` to the end of the last request (0: none yet, so the idle
    /// time counts from `start`).
    last_end_us: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_us: AtomicU64::new(0),
        }
    }

    /// How long no request has been in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last_end = Duration::from_micros(self.last_end_us.load(Ordering::Acquire));
        Some(self.start.elapsed().saturating_sub(last_end))
    }
}

/// Counts one request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // The end time first: a check that sees no request in flight sees this time too.
        let ended = u64::try_from(activity.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        activity.last_end_us.fetch_max(ended, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The set of unproven connections of one listener, oldest first.
struct Unproven {
    limit: usize,
    name: &'static str,
    state: Mutex<UnprovenState>,
    /// Set while evicting, so the warning is logged once per episode, not per connection.
    evicting: AtomicBool,
}

#[derive(Default)]
struct UnprovenState {
    next: u64,
    /// Connection number → its eviction signal. Numbers grow, so the first is the oldest.
    live: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A connection's place in the unproven set.
struct Ticket {
    entry: Entry,
    evicted: oneshot::Receiver<()>,
}

/// Removes the connection from the unproven set when it sends its first request or ends.
struct Entry {
    set: Arc<Unproven>,
    id: u64,
}

impl Unproven {
    fn new(limit: usize, name: &'static str) -> Self {
        Self {
            limit,
            name,
            state: Mutex::default(),
            evicting: AtomicBool::new(false),
        }
    }

    /// Adds a new connection, evicting the oldest one when the set is full.
    fn enter(self: &Arc<Self>) -> Ticket {
        let (signal, evicted) = oneshot::channel();
        // The lock is never held across anything that can panic half-way.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next;
        state.next += 1;
        let full = state.live.len() >= self.limit;
        if full && let Some((_, oldest)) = state.live.pop_first() {
            let _ = oldest.send(());
        }
        state.live.insert(id, signal);
        drop(state);
        if full {
            if !self.evicting.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    listener = self.name,
                    limit = self.limit,
                    "too many connections without a complete request; closing the oldest \
                     (--max-handshakes)"
                );
            }
        } else {
            self.evicting.store(false, Ordering::Relaxed);
        }
        Ticket {
            entry: Entry {
                set: self.clone(),
                id,
            },
            evicted,
        }
    }
}

impl Entry {
    /// Leaves the unproven set (idempotent).
    fn leave(&self) {
        let mut state = self
            .set
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.live.remove(&self.id);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Descriptors the process needs besides the two listeners' connections: the listeners
/// themselves, the Kubernetes client's connections, certificate files being re-read, the
/// runtime's epoll and event descriptors, standard streams.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// What [`ensure_descriptors`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// Descriptors the connection caps can use at most, plus [`RESERVED_DESCRIPTORS`].
    pub needed: u64,
    /// The soft `RLIMIT_NOFILE` before (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

/// The file-descriptor limit cannot hold the connection caps.
#[derive(Debug, thiserror::Error)]
#[error(
    "the open-file limit (RLIMIT_NOFILE: soft {soft}, hard {hard}) is below the {needed} \
     descriptors that the connection caps need ({connections} connections + {reserved} \
     reserved); lower --max-connections / --metrics-max-connections or raise the limit"
)]
pub struct DescriptorError {
    soft: String,
    hard: String,
    needed: u64,
    connections: u64,
    reserved: u64,
}

/// Makes sure every connection the caps allow (`connections`, both listeners together) can
/// get a file descriptor, so a full metrics port can never leave the webhook port unable to
/// accept: raises the soft `RLIMIT_NOFILE` towards the hard limit when it is too low, and
/// fails when even the hard limit is too low.
pub fn ensure_descriptors(connections: u64) -> Result<Descriptors, DescriptorError> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = connections.saturating_add(RESERVED_DESCRIPTORS);
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if before.is_none_or(|soft| soft >= needed) {
        return Ok(Descriptors {
            needed,
            before,
            now: before,
        });
    }
    let error = |soft: Option<u64>| DescriptorError {
        soft: soft.map_or("unlimited".into(), |n| n.to_string()),
        hard: limit.maximum.map_or("unlimited".into(), |n| n.to_string()),
        needed,
        connections,
        reserved: RESERVED_DESCRIPTORS,
    };
    if limit.maximum.is_some_and(|hard| hard < needed) {
        return Err(error(before));
    }
    // Up to what is needed (with room to spare), never above the hard limit.
    let raised = needed.saturating_mul(2);
    let raised = limit.maximum.map_or(raised, |hard| raised.min(hard));
    let wanted = Rlimit {
        current: Some(raised),
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        return Err(error(before));
    }
    Ok(Descriptors {
        needed,
        before,
        now: Some(raised),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_unproven_connection_is_evicted() {
        let set = Arc::new(Unproven::new(2, "test"));
        let mut first = set.enter();
        let second = set.enter();
        assert!(first.evicted.try_recv().is_err(), "not evicted yet");
        // A third: the first goes.
        let mut third = set.enter();
        assert_eq!(first.evicted.try_recv(), Ok(()));
        // The second proves itself: it leaves the set, and its signal is closed, not sent.
        second.entry.leave();
        let mut second_evicted = second.evicted;
        assert!(matches!(
            second_evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        // Room again: a fourth evicts nobody.
        let _fourth = set.enter();
        assert!(third.evicted.try_recv().is_err());
        drop(first.entry);
        assert_eq!(set.state.lock().expect("lock").live.len(), 2);
    }

    #[tokio::test]
    async fn a_proven_connection_is_never_cut() {
        let (_stop_tx, stop) = watch::channel(false);
        let (signal, evicted) = oneshot::channel::<()>();
        drop(signal);
        let cut = cut_short(evicted, Duration::from_millis(10), stop);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), cut)
                .await
                .is_err()
        );
    }

    /// Idle means no request in flight for the whole timeout: counted from the start, then
    /// from the end of the last request, never while one runs.
    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request_end() {
        let timeout = Duration::from_secs(90);
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        idle(&activity, timeout).await;
        assert_eq!(started.elapsed(), timeout, "idle from the start");

        let request = InFlight::start(activity.clone());
        let held = tokio::time::timeout(timeout * 3, idle(&activity, timeout)).await;
        assert!(held.is_err(), "never idle while a request is in flight");
        drop(request);
        let ended = Instant::now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        // A second request, over at once: the idle time restarts from its end.
        drop(InFlight::start(activity.clone()));
        let second_end = Instant::now();
        idle(&activity, timeout).await;
        assert_eq!(second_end.elapsed(), timeout);
        assert!(ended.elapsed() > timeout);
    }

    #[test]
    fn descriptors_within_the_limit_need_no_change() {
        let found = ensure_descriptors(10).expect("10 connections fit any limit");
        assert_eq!(found.needed, 10 + RESERVED_DESCRIPTORS);
        assert_eq!(found.before, found.now);
    }
}
