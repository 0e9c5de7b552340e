//! The threads that serve the webhook's connections: one single-threaded tokio runtime per
//! thread, and each connection lives on one of them from its TLS handshake to its close.
//!
//! Why not the process's multi-threaded runtime: with two workers, a review arriving on an
//! idle server woke one worker, which woke the other to look for work, and HTTP/2 streams
//! spawned by hyper were often stolen by the other worker — ~2 `futex` calls and a
//! cross-thread hand-off per review. At a steady 1,000 reviews/s that was 20–40 % of
//! envlink's CPU per answer and a tail latency above nginx's (BENCHMARKS.md, "Serving
//! threads"). Here a connection's socket, timers and streams all belong to one thread's
//! reactor, so a review is read, decided and answered without leaving it — the model of
//! nginx's worker processes.
//!
//! The accept loop stays on the main runtime and hands each new connection to the thread
//! with the fewest open connections (the API server's few long-lived HTTP/2 connections
//! spread evenly; `SO_REUSEPORT` would spread them by a hash of the peer's port and could put
//! all of them on one thread). The socket is moved between reactors as a plain file
//! descriptor: deregistered by the acceptor, registered by the serving thread.
//!
//! The trade-off: one connection's reviews are served by one thread. The API server's
//! webhook client multiplexes on few connections, so a replica with one API server
//! connection uses one core for reviews — ~20,000 reviews/s for S1 on this machine, far
//! beyond any cluster's Pod creation rate.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long a stopping serving thread waits for its blocking pool's tasks.
const BLOCKING_SHUTDOWN: Duration = Duration::from_secs(1);

/// The serving threads of one process (or, for the metrics port and tests, the calling
/// runtime alone).
pub struct Workers {
    threads: Vec<Worker>,
}

/// One serving thread: where connections are spawned, and how many it holds.
struct Worker {
    handle: Handle,
    /// Connections spawned here and not yet ended.
    open: Arc<AtomicUsize>,
    /// Dropped (or fired) to stop the thread; `None` for the calling runtime.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A serving thread could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start serving thread {index} of {count}: {source}")]
pub struct WorkersError {
    index: usize,
    count: usize,
    #[source]
    source: io::Error,
}

impl Workers {
    /// Starts `count` serving threads (at least one), each with its own single-threaded
    /// runtime (I/O and timers enabled). Their tasks are dropped when `Workers` is.
    pub fn start(count: usize) -> Result<Self, WorkersError> {
        let count = count.max(1);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let error = |source| WorkersError {
                index,
                count,
                source,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(error)?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("envlink-serve-{index}"))
                .spawn(move || {
                    // Runs the thread's connections until told to stop (or the sender is
                    // dropped); then drops whatever is left. A decision still running on the
                    // blocking pool is bounded work, but is not waited for beyond a second.
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(BLOCKING_SHUTDOWN);
                })
                .map_err(error)?;
            threads.push(Worker {
                handle,
                open: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { threads })
    }

    /// The runtime this is called from, as the only "thread": connections are spawned on it
    /// (the metrics port, whose few scrapes need no threads of their own; tests).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn current() -> Self {
        Self {
            threads: vec![Worker {
                handle: Handle::current(),
                open: Arc::default(),
                stop: None,
                thread: None,
            }],
        }
    }

    /// How many threads serve.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Connections open on each thread, in thread order.
    #[cfg(test)]
    fn open_connections(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|worker| worker.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Runs `serve` with `tcp` on the thread holding the fewest connections. The socket is
    /// re-registered with that thread's reactor, so everything the connection does (reads,
    /// writes, timers, HTTP/2 streams) stays on it.
    pub fn spawn_connection<F, Fut>(&self, tcp: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self.least_loaded();
        let tcp = tcp.into_std()?;
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(open);
        worker.handle.spawn(async move {
            let _counted = counted;
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(error) => tracing::warn!(%error, "cannot register a connection"),
            }
        });
        Ok(())
    }

    /// The thread with the fewest open connections (the first of equals).
    fn least_loaded(&self) -> &Worker {
        self.threads
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
            // `threads` is never empty (start makes at least one, current exactly one).
            .unwrap_or(&self.threads[0])
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.threads {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.threads {
            if let Some(thread) = worker.thread.take() {
                // A panicked serving thread has already been reported by the panic hook.
                let _ = thread.join();
            }
        }
    }
}

/// Counts one open connection on its thread until dropped (when the connection's task ends
/// or is dropped with its runtime).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Default `--serve-threads`: the CPUs the process may use (its cgroup quota included).
pub fn default_threads() -> usize {
    super::default_concurrent_reviews()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Each connection is served on a serving thread (named, so not the test's), the threads take
    /// connections in turn while they hold equally many, and the counts fall when connections
    /// end.
    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread() {
        let workers = Workers::start(2).expect("threads");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut clients = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..4 {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (tcp, _) = listener.accept().await.expect("accept");
            let (tx, rx) = oneshot::channel();
            workers
                .spawn_connection(tcp, move |mut tcp| async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_owned));
                    // Echo one byte, then hold the connection until the client closes.
                    let mut byte = [0u8; 1];
                    if tcp.read_exact(&mut byte).await.is_ok() {
                        let _ = tcp.write_all(&byte).await;
                        let _ = tcp.read(&mut byte).await;
                    }
                })
                .expect("spawn");
            let name = rx.await.expect("served").expect("named thread");
            threads.push(name);
            clients.push(client);
        }
        assert_eq!(
            threads,
            [
                "envlink-serve-0",
                "envlink-serve-1",
                "envlink-serve-0",
                "envlink-serve-1"
            ]
        );
        // The socket works after the move between reactors.
        for client in &mut clients {
            client.write_all(b"x").await.expect("write");
            let mut echoed = [0u8; 1];
            client.read_exact(&mut echoed).await.expect("echo");
            assert_eq!(&echoed, b"x");
        }
        assert_eq!(workers.open_connections(), [2, 2]);
        drop(clients);
        for _ in 0..200 {
            if workers.open_connections() == [0, 0] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(workers.open_connections(), [0, 0]);
    }
}
