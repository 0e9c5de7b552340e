//! Tracing setup: `RUST_LOG`-style filtering (default `info`), text or JSON lines on stderr.
//!
//! Lines are written by a dedicated thread: a review formats its line and appends it to a
//! shared buffer (one uncontended lock, no system call), and the thread writes what gathered
//! in one `write`. While lines keep coming the thread wakes on its own every [`GATHER`] (or
//! when [`HIGH_WATER`] bytes wait) and nobody wakes it: a review pays no system call for its
//! line. Only after a [`GATHER`] without a line does the thread go idle, and then the next
//! line wakes it. tracing-appender's non-blocking writer, used before, was woken for nearly
//! every line (a futex wake-up and a context switch per review: issue 16's profile); a first
//! version of this writer still was once per batch, from a review, and woke twice per batch
//! (BENCHMARKS.md, "The log writer"). The hand-over is not lossy: beyond [`BUFFERED_BYTES`]
//! not yet written, logging waits, as a direct write to a full pipe would.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

#[cfg(test)]
mod format_tests;
mod json;
mod line;
pub use json::PlainJson;
pub use line::{PlainLine, Rfc3339Micros};

/// Log output format (`--log-format`). Defined here, at the bottom of the stack, so that
/// telemetry needs nothing from the command line; the CLI takes it as a clap value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds something that is not a filter.
    #[error("RUST_LOG is not a valid log filter: {0}")]
    Filter(String),
    /// A global subscriber was already installed (only in tests that call this twice).
    #[error("logging is already set up")]
    AlreadySet,
    /// The writer thread could not be started.
    #[error("cannot start the log writer thread: {0}")]
    Thread(std::io::Error),
}

/// Bytes of lines that may wait for the writer thread before logging blocks: about a second
/// of `review answered` lines at full load.
pub const BUFFERED_BYTES: usize = 4 << 20;

/// Once this much is waiting, the writer thread writes it without waiting out [`GATHER`].
pub const HIGH_WATER: usize = 256 << 10;

/// How long the writer thread lets lines gather before it writes them, so that it wakes up
/// at most ~20 times a second under load; also the most a line waits before it is written.
/// Each wake-up costs about as much as a few reviews' lines (a context switch and a `write`):
/// 10 ms cost ~2.5 µs per review at 1,000 reviews/s, 50 ms ~1 µs (BENCHMARKS.md). A line
/// ~50 ms late is no loss for a log; a SIGKILL loses at most that much, a shutdown nothing.
pub const GATHER: Duration = Duration::from_millis(50);

/// Keeps the writer thread alive; dropping it writes out every line logged so far (drop it
/// before the process exits, and before printing a final error, to keep the order).
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake_writer.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The lines not yet written, shared by every logging thread and the writer thread.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// A first line arrived for an idle writer, the buffer passed [`HIGH_WATER`], or the
    /// guard was dropped.
    wake_writer: Condvar,
    /// The writer took the buffer: room for loggers waiting at [`BUFFERED_BYTES`].
    room: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    stop: bool,
    /// The writer sleeps until it is woken (no line came for a whole [`GATHER`]); otherwise
    /// it wakes by itself within [`GATHER`] and nobody needs to wake it.
    writer_idle: bool,
    /// Loggers waiting for room at [`BUFFERED_BYTES`]: the writer signals `room` only then,
    /// as a signal costs a system call even when nobody waits.
    waiting_for_room: usize,
}

impl Shared {
    /// A panic while holding the lock leaves whole lines behind (a line is appended in one
    /// call), so the buffer is still fine to use.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one formatted line (tracing-subscriber writes each event in one call).
    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.lines.len() >= BUFFERED_BYTES && !pending.stop {
            pending.waiting_for_room += 1;
            pending = self
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.waiting_for_room -= 1;
        }
        if pending.stop {
            // After the guard is gone (the last lines of a shutdown): straight to stderr.
            drop(pending);
            let _ = std::io::stderr().write_all(line);
            return;
        }
        let before = pending.lines.len();
        pending.lines.extend_from_slice(line);
        let after = pending.lines.len();
        // Only a line for an idle writer and the crossing of the mark wake it: a wake-up per
        // line (or per batch, from the review that logs first) is what this writer avoids.
        let wake = std::mem::take(&mut pending.writer_idle)
            || (before < HIGH_WATER && after >= HIGH_WATER);
        drop(pending);
        if wake {
            self.wake_writer.notify_one();
        }
    }

    /// The writer thread: lets lines gather for [`GATHER`], writes them in one call, and
    /// sleeps until woken once a whole [`GATHER`] brought no line.
    fn write_batches(&self, out: &mut dyn Write) {
        let mut batch = Vec::new();
        let mut pending = self.lock();
        loop {
            if !pending.stop && pending.lines.len() < HIGH_WATER {
                pending = self
                    .wake_writer
                    .wait_timeout(pending, GATHER)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if pending.lines.is_empty() && !pending.stop {
                // Idle: the next line wakes the writer, which then gathers for a GATHER.
                pending.writer_idle = true;
                while pending.lines.is_empty() && !pending.stop {
                    pending = self
                        .wake_writer
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                pending.writer_idle = false;
                continue;
            }
            let stop = pending.stop;
            std::mem::swap(&mut pending.lines, &mut batch);
            let room_wanted = pending.waiting_for_room > 0;
            drop(pending);
            if room_wanted {
                self.room.notify_all();
            }
            if batch.is_empty() && stop {
                return;
            }
            // A log write that fails (stderr closed) has nowhere to be reported.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            pending = self.lock();
        }
    }
}

/// What tracing-subscriber writes each formatted line to.
#[derive(Clone)]
struct LineWriter(Arc<Shared>);

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Starts the writer thread, writing to `out`.
fn start_writer(out: Box<dyn Write + Send>) -> std::io::Result<(LineWriter, LogGuard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let mut out = out;
    let thread = std::thread::Builder::new()
        .name("envlink-log".into())
        .spawn(move || for_thread.write_batches(&mut out))?;
    let guard = LogGuard {
        shared: shared.clone(),
        thread: Some(thread),
    };
    Ok((LineWriter(shared), guard))
}

/// Installs the global subscriber. `RUST_LOG` (e.g. `info,envlink::catalog=debug`) overrides
/// the default level `info`.
pub fn init(format: LogFormat) -> Result<LogGuard, TelemetryError> {
    // An invalid RUST_LOG is an error rather than silently ignored: it is an operator's typo,
    // and running with different logging than asked for hides exactly what they looked for.
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            EnvFilter::try_new(&text).map_err(|e| TelemetryError::Filter(e.to_string()))?
        }
        _ => EnvFilter::new("info"),
    };
    let (writer, guard) =
        start_writer(Box::new(std::io::stderr())).map_err(TelemetryError::Thread)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a person at a terminal, not in files and log pipelines.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        // tracing-subscriber's `Full` format, written directly for plain events.
        LogFormat::Text => builder.event_format(PlainLine::default()).try_init(),
        // The event's fields (uid, namespace, ...) at the top level of each line, so log
        // pipelines index them without digging into nested objects; the current span's
        // fields under `span`, no span list (`PlainJson`); written directly for plain events.
        LogFormat::Json => builder.json().event_format(PlainJson::default()).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadySet)?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the writer thread writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = start_writer(Box::new(sink.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        writer.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "line {line}");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    /// Waits until the sink holds exactly `expected`; false after 10 s (a liveness bound for
    /// a writer that was never woken, not a timing).
    fn holds_in_time(sink: &Sink, expected: &[u8]) -> bool {
        for _ in 0..1000 {
            if sink.0.lock().unwrap().as_slice() == expected {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_line_is_written_while_the_guard_lives_also_after_the_writer_went_idle() {
        let sink = Sink::default();
        let (mut writer, guard) = start_writer(Box::new(sink.clone())).unwrap();
        writer.write_all(b"first\n").unwrap();
        assert!(holds_in_time(&sink, b"first\n"));
        // Whole GATHERs without a line: the writer goes idle, and the next line must wake it.
        std::thread::sleep(GATHER * 5);
        writer.write_all(b"second\n").unwrap();
        assert!(holds_in_time(&sink, b"first\nsecond\n"));
        drop(guard);
    }

    /// A sink as slow as a stalled log pipe: every write takes 20 ms.
    #[derive(Clone, Default)]
    struct SlowSink(Sink);

    impl Write for SlowSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logger_held_at_the_buffer_limit_goes_on_once_the_writer_took_the_lines() {
        let sink = SlowSink::default();
        let (writer, guard) = start_writer(Box::new(sink.clone())).unwrap();
        // Three times the buffer limit in 64 KiB lines, faster than the sink takes them: the
        // logger waits for room repeatedly, and must be let go each time.
        let line = |i: usize| {
            let mut line = format!("{i:08}").into_bytes();
            line.resize(64 << 10, b'x');
            line.push(b'\n');
            line
        };
        let count = 3 * BUFFERED_BYTES / (64 << 10);
        let logger = {
            let mut writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..count {
                    writer.write_all(&line(i)).unwrap();
                }
            })
        };
        logger.join().unwrap();
        drop(guard);
        let written = sink.0.0.lock().unwrap();
        let expected: Vec<u8> = (0..count).flat_map(line).collect();
        assert!(
            written.as_slice() == expected.as_slice(),
            "lines lost or out of order"
        );
    }

    #[test]
    fn lines_after_the_guard_is_gone_are_not_lost() {
        let sink = Sink::default();
        let (mut writer, guard) = start_writer(Box::new(sink.clone())).unwrap();
        writer.write_all(b"before\n").unwrap();
        drop(guard);
        // Goes to stderr directly; only must not block or panic.
        writer.write_all(b"after\n").unwrap();
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"before\n");
    }
}
