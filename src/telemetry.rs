//! Tracing setup: `RUST_LOG`-style filtering (default `info`), text or JSON lines on stderr.
//!
//! Lines are written by a dedicated thread (tracing-appender's non-blocking writer): a review
//! formats its line and hands it over instead of making a `write` system call of its own, so
//! the request path does no I/O, and the thread writes the lines queued meanwhile in one
//! system call. The hand-over is not lossy: when the thread falls behind by
//! more than [`BUFFERED_LINES`], logging waits, as a direct write to a full pipe would.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::serve::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds something that is not a filter.
    #[error("RUST_LOG is not a valid log filter: {0}")]
    Filter(String),
    /// A global subscriber was already installed (only in tests that call this twice).
    #[error("logging is already set up")]
    AlreadySet,
}

/// Lines that may wait for the writer thread before logging blocks. The queue is allocated
/// (and touched) up front, 32 bytes a line: 16 Ki lines is half a MiB resident, and a second
/// of reviews at full load.
pub const BUFFERED_LINES: usize = 16 * 1024;

/// Keeps the writer thread alive; dropping it writes out every line logged so far (drop it
/// before the process exits, and before printing a final error, to keep the order).
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

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
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("envlink-log")
        // The thread writes whatever has queued up and then flushes: under load, many lines
        // per `write`.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a person at a terminal, not in files and log pipelines.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            // Span fields (uid, namespace, ...) at the top level of each line, so log
            // pipelines can index them without digging into nested span lists.
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadySet)?;
    Ok(LogGuard(guard))
}
