//! Write coalescing under hyper: what a connection writes during one poll goes to the
//! socket in one write, after the poll.
//!
//! Why: h2 writes every DATA frame of 256 bytes or more without copying it, and flushes its
//! transport before buffering the next one, so an answer larger than the peer's frame size
//! (16 KB by default; S1's answer is 17.9 KB) took one TLS flush and one `writev` per frame,
//! and answers of several streams finished in the same poll took one each. Here the
//! connection's writes and flushes only fill a buffer; [`Coalesced`], the future that polls
//! the connection, writes that buffer through TLS to the socket once the connection's poll
//! returns — in the same task, before it sleeps, so nothing waits longer than before.
//!
//! Bounded: a write that would take the buffer past [`HIGH_WATER`] bytes first writes the
//! buffer out (and waits for the transport, as a direct write would), and one larger than
//! that goes straight through; so a connection holds at most `HIGH_WATER` here (a peer that
//! stops reading holds the connection back by the transport's buffers, as before). A
//! shutdown writes everything out before it closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write goes through to the transport first: a few answers, and the
/// most an idle-then-stuck connection keeps here.
pub const HIGH_WATER: usize = 64 * 1024;

/// The transport of one connection, shared by the connection (as [`CoalescingIo`]) and the
/// future that polls it (as [`Coalesced`]). Both live in the same task; the mutex is never
/// contended.
struct Shared<T> {
    io: T,
    /// Written by the connection, not yet given to `io`.
    pending: Vec<u8>,
    /// The connection asked for a flush since `io` was last flushed.
    flush_wanted: bool,
    /// Writing out failed: every later call of the connection fails with this.
    failed: Option<io::ErrorKind>,
    /// Writes and flushes go straight to `io` ([`direct`]).
    direct: bool,
}

impl<T> Shared<T> {
    /// The error the connection gets once writing out has failed.
    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(io::Error::new(
                kind,
                "an earlier write to the connection failed",
            )),
            None => Ok(()),
        }
    }
}

impl<T: AsyncWrite + Unpin> Shared<T> {
    /// Gives every pending byte to `io`, then flushes it if a flush was asked for.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = loop {
            if written == self.pending.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.pending[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.pending.drain(..written);
        ready!(result)?;
        // Held at most HIGH_WATER bytes, but growth may have doubled the allocation.
        self.pending.shrink_to(HIGH_WATER);
        if self.flush_wanted {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_wanted = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// Wraps `io`: the connection gets the [`CoalescingIo`], the caller wraps the connection's
/// future with [`Coalesced::new`] and the returned [`WriteOut`].
pub fn coalescing<T>(io: T) -> (CoalescingIo<T>, WriteOut<T>) {
    wrap(io, false)
}

/// The same two halves, but writes and flushes go straight to `io`: for HTTP/1.1, where
/// hyper already writes an answer's head and body with one vectored write and one flush,
/// so copying them into the buffer first would only cost a copy of every answer.
pub fn direct<T>(io: T) -> (CoalescingIo<T>, WriteOut<T>) {
    wrap(io, true)
}

fn wrap<T>(io: T, direct: bool) -> (CoalescingIo<T>, WriteOut<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        pending: Vec::new(),
        flush_wanted: false,
        failed: None,
        direct,
    }));
    (CoalescingIo(shared.clone()), WriteOut(shared))
}

fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // Nothing in a locked section panics half-way through a buffer change.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection's side: reads pass through; writes and flushes fill the buffer.
pub struct CoalescingIo<T>(Arc<Mutex<Shared<T>>>);

/// The poller's side: writes the buffer out after each poll of the connection.
pub struct WriteOut<T>(Arc<Mutex<Shared<T>>>);

impl<T: AsyncRead + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        shared.check()?;
        Pin::new(&mut shared.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.0);
        shared.check()?;
        if shared.direct {
            return Pin::new(&mut shared.io).poll_write_vectored(cx, bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if shared.pending.len() + total > HIGH_WATER {
            ready!(shared.poll_write_out(cx))?;
            if total > HIGH_WATER {
                // Large: straight through, neither copied nor held.
                return Pin::new(&mut shared.io).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            shared.pending.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        shared.check()?;
        if shared.direct {
            return Pin::new(&mut shared.io).poll_flush(cx);
        }
        // Done by `Coalesced` once the connection's poll returns.
        shared.flush_wanted = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        shared.check()?;
        shared.flush_wanted = true;
        ready!(shared.poll_write_out(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

/// Polls a connection, then writes out what it wrote. Completes with the connection's
/// result once the connection has ended and its last bytes are out.
pub struct Coalesced<F: Future, T> {
    connection: Pin<Box<F>>,
    out: WriteOut<T>,
    /// The connection's result, while its last bytes are written.
    ended: Option<F::Output>,
}

impl<F: Future, T> Coalesced<F, T> {
    /// Wraps `connection`, whose transport is the other half of `out`.
    pub fn new(connection: F, out: WriteOut<T>) -> Self {
        Self {
            connection: Box::pin(connection),
            out,
            ended: None,
        }
    }

    /// The connection, for calls of its own (a graceful shutdown).
    pub fn connection(&mut self) -> Pin<&mut F> {
        self.connection.as_mut()
    }
}

// Nothing in it is ever pinned in place: the connection is pinned in its own box, and the
// result is only moved.
impl<F: Future, T> Unpin for Coalesced<F, T> {}

impl<F, T> Future for Coalesced<F, T>
where
    F: Future,
    T: AsyncWrite + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.ended.is_none()
            && let Poll::Ready(result) = this.connection.as_mut().poll(cx)
        {
            this.ended = Some(result);
        }
        let written = {
            let mut shared = lock(&this.out.0);
            if shared.failed.is_some() {
                // Nothing more goes out once a write has failed.
                Poll::Ready(Ok(()))
            } else {
                let written = shared.poll_write_out(cx);
                if let Poll::Ready(Err(error)) = &written {
                    tracing::debug!(%error, "writing to the connection failed");
                    shared.failed = Some(error.kind());
                    shared.pending = Vec::new();
                    shared.flush_wanted = false;
                    // The connection learns at its next read or write: poll it once more.
                    cx.waker().wake_by_ref();
                }
                written
            }
        };
        match (this.ended.take(), written) {
            (Some(result), Poll::Ready(_)) => Poll::Ready(result),
            (ended, _) => {
                this.ended = ended;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A transport that records every write call and flush, accepting at most `per_call`
    /// bytes per write, or failing every write.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        flushes: Arc<AtomicUsize>,
        per_call: Option<usize>,
        fail: bool,
    }

    impl Recorder {
        fn writes(&self) -> Vec<Vec<u8>> {
            self.writes.lock().expect("lock").clone()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.fail {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = self.per_call.map_or(buf.len(), |max| max.min(buf.len()));
            self.writes.lock().expect("lock").push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            // End of stream.
            Poll::Ready(Ok(()))
        }
    }

    /// What h2 does for one large answer: a frame, a flush, the next frame, a flush — all in
    /// one poll. The transport sees one write and one flush, after the poll.
    #[tokio::test]
    async fn writes_and_flushes_of_one_poll_go_out_once() {
        let transport = Recorder::default();
        let (mut io, out) = coalescing(transport.clone());
        let connection = async move {
            io.write_all(b"HEADERS+DATA 1;").await?;
            io.flush().await?;
            io.write_all(b"DATA 2").await?;
            io.flush().await?;
            io::Result::Ok(())
        };
        Coalesced::new(connection, out).await.expect("written");
        assert_eq!(transport.writes(), [b"HEADERS+DATA 1;DATA 2".to_vec()]);
        assert_eq!(transport.flushes.load(Ordering::Relaxed), 1);
    }

    /// The direct halves (HTTP/1.1) hand every write and flush to the transport as it comes:
    /// nothing is copied or held.
    #[tokio::test]
    async fn direct_writes_go_straight_through() {
        let transport = Recorder::default();
        let (mut io, out) = direct(transport.clone());
        let shared = out.0.clone();
        let probe = transport.clone();
        let connection = async move {
            io.write_all(b"head+body").await?;
            assert_eq!(probe.writes(), [b"head+body".to_vec()], "written at once");
            io.flush().await?;
            assert_eq!(probe.flushes.load(Ordering::Relaxed), 1, "flushed at once");
            io.write_all(b"next").await?;
            io.flush().await
        };
        Coalesced::new(connection, out).await.expect("written");
        assert_eq!(
            transport.writes(),
            [b"head+body".to_vec(), b"next".to_vec()]
        );
        assert_eq!(transport.flushes.load(Ordering::Relaxed), 2);
        assert_eq!(lock(&shared).pending.capacity(), 0);
    }

    /// A transport that takes a few bytes per call still gets everything, in order.
    #[tokio::test]
    async fn short_writes_are_continued() {
        let transport = Recorder {
            per_call: Some(3),
            ..Recorder::default()
        };
        let (mut io, out) = coalescing(transport.clone());
        let connection = async move {
            io.write_all(b"0123456789").await?;
            io.flush().await
        };
        Coalesced::new(connection, out).await.expect("written");
        assert_eq!(transport.writes().concat(), b"0123456789");
    }

    /// Past the high-water mark a write goes through first: the buffer never holds much more
    /// than the mark, whatever the connection writes in one poll.
    #[tokio::test]
    async fn the_buffer_is_bounded() {
        let transport = Recorder::default();
        let (mut io, out) = coalescing(transport.clone());
        let chunk = vec![7u8; 10_000];
        let connection = async move {
            for _ in 0..100 {
                io.write_all(&chunk).await?;
            }
            io.flush().await
        };
        Coalesced::new(connection, out).await.expect("written");
        let writes = transport.writes();
        assert_eq!(writes.iter().map(Vec::len).sum::<usize>(), 1_000_000);
        assert!(
            writes.iter().all(|w| w.len() <= HIGH_WATER),
            "{:?}",
            writes.len()
        );
    }

    /// A write larger than the mark goes straight through, after what was held before it;
    /// nothing of it stays in the buffer.
    #[tokio::test]
    async fn large_writes_are_not_held() {
        let transport = Recorder::default();
        let (mut io, out) = coalescing(transport.clone());
        let shared = out.0.clone();
        let large = vec![1u8; 3 * HIGH_WATER];
        let connection = async move {
            io.write_all(b"head").await?;
            io.write_all(&large).await?;
            io.flush().await
        };
        Coalesced::new(connection, out).await.expect("written");
        let lengths: Vec<usize> = transport.writes().iter().map(Vec::len).collect();
        assert_eq!(lengths, [4, 3 * HIGH_WATER]);
        assert!(lock(&shared).pending.capacity() <= HIGH_WATER);
    }

    /// A failed write reaches the connection: its next read fails, so it ends.
    #[tokio::test]
    async fn a_failed_write_out_fails_the_connection() {
        let transport = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let (mut io, out) = coalescing(transport);
        let connection = async move {
            io.write_all(b"answer").await?;
            io.flush().await?;
            // Wait for the write-out (after this poll) to fail, as a connection waiting for
            // its next request would.
            tokio::task::yield_now().await;
            let mut byte = [0u8; 1];
            io.read(&mut byte).await.map(|_| ())
        };
        let result = Coalesced::new(connection, out).await;
        assert_eq!(
            result.expect_err("the read fails").kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
