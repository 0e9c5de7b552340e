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
//!
//! HTTP/1.1 needs none of it (hyper writes each answer's head and body with one vectored
//! write and one flush), so its connections write straight through ([`direct`]). When TLS
//! did not say which protocol the client speaks (no ALPN — a client with HTTP/2 disabled,
//! or a load generator), [`sniffing`] tells them apart by the first bytes read: the HTTP/2
//! connection preface, or anything else.

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
    /// Whether writes and flushes go straight to `io` ([`direct`]), or not yet known.
    mode: Mode,
}

/// How a connection's writes reach the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Gathered and written out after each poll (HTTP/2).
    Coalesce,
    /// Straight to the transport (HTTP/1.1).
    Direct,
    /// Coalesced until the first bytes read tell HTTP/2's preface (of which `matched` bytes
    /// have been seen) from anything else.
    Sniff { matched: usize },
}

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Mode {
    /// The mode once `read` more bytes have come in.
    fn after_reading(self, read: &[u8]) -> Mode {
        let Mode::Sniff { matched } = self else {
            return self;
        };
        let expected = &H2_PREFACE[matched..];
        let compared = read.len().min(expected.len());
        if read[..compared] != expected[..compared] {
            Mode::Direct
        } else if compared == expected.len() {
            Mode::Coalesce
        } else {
            Mode::Sniff {
                matched: matched + compared,
            }
        }
    }
}

impl<T> Shared<T> {
    /// Whether writes go straight to `io`: in direct mode, once nothing gathered before is
    /// still waiting (which keeps the order if a connection wrote before its mode was known).
    fn writes_direct(&self) -> bool {
        self.mode == Mode::Direct && self.pending.is_empty() && !self.flush_wanted
    }

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
    wrap(io, Mode::Coalesce)
}

/// The same two halves, but writes and flushes go straight to `io`: for HTTP/1.1, where
/// hyper already writes an answer's head and body with one vectored write and one flush,
/// so copying them into the buffer first would only cost a copy of every answer.
pub fn direct<T>(io: T) -> (CoalescingIo<T>, WriteOut<T>) {
    wrap(io, Mode::Direct)
}

/// The same two halves for a connection whose protocol is not known yet: coalescing if
/// the first bytes read are HTTP/2's connection preface, direct as soon as they are not.
/// (hyper-util's `auto` connection reads the client's first bytes before it picks a
/// protocol, so nothing is written before the mode is known; were it, it would be gathered.)
pub fn sniffing<T>(io: T) -> (CoalescingIo<T>, WriteOut<T>) {
    wrap(io, Mode::Sniff { matched: 0 })
}

fn wrap<T>(io: T, mode: Mode) -> (CoalescingIo<T>, WriteOut<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        pending: Vec::new(),
        flush_wanted: false,
        failed: None,
        mode,
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
        let before = buf.filled().len();
        ready!(Pin::new(&mut shared.io).poll_read(cx, buf))?;
        shared.mode = shared.mode.after_reading(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
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
        if shared.writes_direct() {
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
        if shared.writes_direct() {
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
        /// What reads return, one chunk per call; then the end of the stream.
        reads: Arc<Mutex<std::collections::VecDeque<Vec<u8>>>>,
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
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            // The next chunk, or nothing: the end of the stream.
            if let Some(chunk) = self.reads.lock().expect("lock").pop_front() {
                buf.put_slice(&chunk);
            }
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

    /// A transport whose reads return `chunks`, one per call.
    fn reading(chunks: &[&[u8]]) -> Recorder {
        let transport = Recorder::default();
        transport
            .reads
            .lock()
            .expect("lock")
            .extend(chunks.iter().map(|c| c.to_vec()));
        transport
    }

    /// Reads a connection's first bytes, then writes an answer in two writes and a flush;
    /// returns what the transport saw during the connection's poll.
    async fn first_bytes_then_answer(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let transport = reading(chunks);
        let (mut io, out) = sniffing(transport.clone());
        let probe = transport.clone();
        let connection = async move {
            let mut read = Vec::new();
            io.read_to_end(&mut read).await?;
            io.write_all(b"head").await?;
            io.write_all(b"+body").await?;
            io.flush().await?;
            io::Result::Ok(probe.writes())
        };
        let during_poll = Coalesced::new(connection, out).await.expect("written");
        assert_eq!(
            transport.writes().concat(),
            b"head+body",
            "everything out, in order"
        );
        during_poll
    }

    /// Without ALPN, HTTP/1.1 is told by its first bytes and written straight through; the
    /// HTTP/2 preface, in one read or split anywhere, keeps the writes gathered.
    #[tokio::test]
    async fn the_first_bytes_tell_http1_from_http2() {
        let direct = [b"head".to_vec(), b"+body".to_vec()];
        assert_eq!(
            first_bytes_then_answer(&[b"POST /mutate HTTP/1.1\r\n"]).await,
            direct
        );
        assert_eq!(
            first_bytes_then_answer(&[b"PRI * HTTP/1.1\r\n"]).await,
            direct
        );
        assert_eq!(
            first_bytes_then_answer(&[b"P", b"UT / HTTP/1.1"]).await,
            direct
        );
        for at in 0..=H2_PREFACE.len() {
            let (first, rest) = H2_PREFACE.split_at(at);
            let with_frame = [rest, b"\0\0\0\x04\0\0\0\0\0"].concat();
            assert_eq!(
                first_bytes_then_answer(&[first, &with_frame]).await,
                Vec::<Vec<u8>>::new(),
                "preface split at {at}: nothing written during the poll"
            );
        }
        // Too little to tell before the stream ends: gathered, as for HTTP/2.
        assert_eq!(
            first_bytes_then_answer(&[b"PRI * HT"]).await,
            Vec::<Vec<u8>>::new()
        );
    }

    /// The mode moves only forward from sniffing, and only on what was read.
    #[test]
    fn the_mode_follows_the_bytes_read() {
        let start = Mode::Sniff { matched: 0 };
        assert_eq!(start.after_reading(b""), start);
        assert_eq!(start.after_reading(b"PRI"), Mode::Sniff { matched: 3 });
        assert_eq!(start.after_reading(H2_PREFACE), Mode::Coalesce);
        assert_eq!(start.after_reading(b"GET / HTTP/1.1"), Mode::Direct);
        for byte in 0..H2_PREFACE.len() {
            let mut other = H2_PREFACE.to_vec();
            other[byte] ^= 0x20;
            assert_eq!(
                start.after_reading(&other),
                Mode::Direct,
                "byte {byte} differs"
            );
        }
        for settled in [Mode::Coalesce, Mode::Direct] {
            assert_eq!(settled.after_reading(b"GET /"), settled);
            assert_eq!(settled.after_reading(H2_PREFACE), settled);
        }
    }
}
