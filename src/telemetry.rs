//! Tracing setup: `RUST_LOG`-style filtering (default `info`), text or JSON lines on stderr.

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

/// Installs the global subscriber. `RUST_LOG` (e.g. `info,envlink::catalog=debug`) overrides
/// the default level `info`.
pub fn init(format: LogFormat) -> Result<(), TelemetryError> {
    // An invalid RUST_LOG is an error rather than silently ignored: it is an operator's typo,
    // and running with different logging than asked for hides exactly what they looked for.
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            EnvFilter::try_new(&text).map_err(|e| TelemetryError::Filter(e.to_string()))?
        }
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
    result.map_err(|_| TelemetryError::AlreadySet)
}
