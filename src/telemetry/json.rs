//! The JSON log line (`--log-format json`), written without serde's per-field machinery.
//!
//! tracing-subscriber's JSON format (with the event's fields flattened to the top level, as
//! envlink configures it) spends ~1.5 µs on a `review answered` line: a `String` for the
//! timestamp, serde_json's map serializer writing through an `io::Write`-to-`fmt::Write`
//! adaptor piece by piece, and a formatted string per `Debug` field. [`PlainJson`] writes the
//! same bytes directly for an event outside any span that is not a bridged `log` record, and
//! hands every other event to tracing-subscriber. Strings are escaped as serde_json escapes
//! them; numbers, booleans and everything else are written as its serializer writes them (the
//! output is property-tested against tracing-subscriber's, byte for byte).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::line::{Rfc3339Micros, is_log_record};

/// tracing-subscriber's JSON format with flattened event fields, the current span's fields
/// and no span list — envlink's configuration — with a direct path for plain events.
#[derive(Debug, Clone)]
pub struct PlainJson<T = Rfc3339Micros> {
    timer: T,
    json: Format<Json, T>,
}

impl Default for PlainJson<Rfc3339Micros> {
    fn default() -> Self {
        PlainJson::with_timer(Rfc3339Micros)
    }
}

impl<T: FormatTime + Clone> PlainJson<T> {
    /// The format with `timer` for the timestamps (tests use a fixed one).
    pub fn with_timer(timer: T) -> Self {
        PlainJson {
            json: Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_timer(timer.clone()),
            timer,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for PlainJson<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The JSON format prints the event's parent, else the current span (even for an
        // event that has no parent on purpose): only events with neither take this path.
        if event.parent().is_some() || ctx.lookup_current().is_some() || is_log_record(event) {
            return self.json.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        self.timer
            .format_time(&mut Writer::new(&mut Escaping(&mut writer)))?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(level_str(meta.level()))?;
        writer.write_char('"')?;
        let mut fields = JsonFields {
            writer: writer.by_ref(),
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_str_value(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// The level as tracing-serde names it.
fn level_str(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Writes each field as `,"name":value`, as tracing-serde's map visitor has serde_json
/// write it: strings and `Debug` values as JSON strings, integers and booleans bare, a
/// float as serde_json writes it (`null` when not finite). `i128`, `u128`, errors and bytes
/// arrive as `Debug` values here as they do there.
struct JsonFields<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .writer
                .write_char(',')
                .and_then(|()| write_str_value(&mut self.writer, field.name()))
                .and_then(|()| self.writer.write_char(':'))
                .and_then(|()| value(&mut self.writer));
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, |writer| write_str_value(writer, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Rare in envlink's lines: serde_json itself writes it, so the two cannot differ.
        self.write(field, |writer| match serde_json::to_string(&value) {
            Ok(text) => writer.write_str(&text),
            Err(_) => Err(fmt::Error),
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |writer| {
            writer.write_char('"')?;
            write!(Escaping(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// A JSON string: quoted and escaped.
fn write_str_value(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaping(writer).write_str(value)?;
    writer.write_char('"')
}

/// Escapes what it is given as serde_json escapes the inside of a string: `"` and `\`, the
/// short forms `\b \f \n \r \t`, and other control characters below U+0020 as `\u00xx`;
/// everything else (DEL and all non-ASCII included) as it is.
struct Escaping<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        let mut start = 0;
        for (at, byte) in piece.bytes().enumerate() {
            let short = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                0x0c => "\\f",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Every byte matched above is ASCII, so `at` is a character boundary.
            self.0.write_str(piece.get(start..at).ok_or(fmt::Error)?)?;
            if short.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(short)?;
            }
            start = at + 1;
        }
        self.0.write_str(piece.get(start..).ok_or(fmt::Error)?)
    }
}
