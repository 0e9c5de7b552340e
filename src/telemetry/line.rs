//! The text log line, written without tracing-subscriber's per-field formatting machinery.
//!
//! Every review logs one `review answered` line at `info`, so the line's cost is part of
//! every answer. tracing-subscriber's `Full` text format spends most of its ~0.9 µs per such
//! line on generic formatting: each field name goes through `nu_ansi_term` styling (a no-op
//! without a terminal, but three `Display` layers deep), each string value through `str`'s
//! `Debug` escaping, and the message through a character-by-character sanitizing writer
//! (BENCHMARKS.md, "The log line"). [`PlainLine`] writes the same bytes directly when that is
//! certain to give the same result — no terminal colours, no span around the event, not an
//! event bridged from the `log` crate, and strings that need no escaping — and hands every
//! other event, or value, to tracing-subscriber's own code. The output is byte-for-byte the
//! `Full` format's (property-tested against it).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::VisitOutput;
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `Full` text format with a direct path for plain events (see the module docs).
#[derive(Debug, Clone)]
pub struct PlainLine<T = Rfc3339Micros> {
    timer: T,
    full: Format<Full, T>,
}

impl Default for PlainLine<Rfc3339Micros> {
    fn default() -> Self {
        PlainLine::with_timer(Rfc3339Micros)
    }
}

/// tracing-subscriber's default timestamp (`2026-12-02T21:00:00.123456Z`, UTC), written by
/// `humantime` in one piece instead of field by field through `fmt` (~75 ns less a line).
/// A clock before 1970 or after 9999, which `humantime` does not write, goes to
/// tracing-subscriber's own timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339Micros;

/// The first second `humantime` does not write (year 10000).
const YEAR_10000: u64 = 253_402_300_800;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < YEAR_10000 => {
                write!(writer, "{}", humantime::format_rfc3339_micros(now))
            }
            _ => SystemTime.format_time(writer),
        }
    }
}

impl<T: FormatTime + Clone> PlainLine<T> {
    /// The format with `timer` for the timestamps (tests use a fixed one).
    pub fn with_timer(timer: T) -> Self {
        PlainLine {
            full: Format::default()
                .with_target(true)
                .with_timer(timer.clone()),
            timer,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for PlainLine<T>
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
        if !is_plain(ctx, &writer, event) {
            return self.full.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        // As `Format::format_timestamp` without colours.
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_char(' ')?;
        writer.write_str(level_str(meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = PlainFields::new(writer.by_ref());
        event.record(&mut fields);
        fields.finish()?;
        writer.write_char('\n')
    }
}

/// Whether `event` may take the direct path: no colours, no span in its scope (the `Full`
/// format would print the spans and their fields), and not a `log` record.
fn is_plain<S, N>(ctx: &FmtContext<'_, S, N>, writer: &Writer<'_>, event: &Event<'_>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    !writer.has_ansi_escapes()
        && ctx
            .event_scope()
            .is_none_or(|mut scope| scope.next().is_none())
        && !is_log_record(event)
}

/// Whether `event` is a record of the `log` crate bridged into tracing: the formats take its
/// metadata from its `log.*` fields and leave those fields out.
pub(super) fn is_log_record(event: &Event<'_>) -> bool {
    event
        .metadata()
        .fields()
        .iter()
        .any(|field| field.name().starts_with("log."))
}

/// The level as the `Full` format writes it without colours (right-aligned in five).
fn level_str(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// Writes an event's fields as `DefaultVisitor` does without colours: the message first as
/// written, then `name=value` separated by spaces, strings quoted as `str`'s `Debug` quotes
/// them. Anything it cannot write identically in one step goes to a `DefaultVisitor`.
/// Fields named `log.*` (which `DefaultVisitor` skips) never get here: such events take the
/// `Full` format's path ([`is_plain`]).
struct PlainFields<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl<'a> PlainFields<'a> {
    fn new(writer: Writer<'a>) -> Self {
        PlainFields {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }

    fn finish(self) -> fmt::Result {
        self.result
    }

    fn pad(&mut self) -> fmt::Result {
        if std::mem::take(&mut self.is_empty) {
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// The field's name as written: `r#type` is written `type`.
    fn name(field: &Field) -> &'static str {
        let name = field.name();
        name.strip_prefix("r#").unwrap_or(name)
    }

    /// Hands one field to tracing-subscriber's own visitor, keeping the spacing.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// Writes `name=` after the separating space.
    fn write_name(&mut self, field: &Field) -> fmt::Result {
        self.pad()?;
        self.writer.write_str(Self::name(field))?;
        self.writer.write_char('=')
    }

    /// An integer: its `Debug` is its `Display`, written here without `fmt`'s machinery.
    fn record_integer(&mut self, field: &Field, value: impl itoa::Integer + fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else {
            let mut digits = itoa::Buffer::new();
            self.result = self
                .write_name(field)
                .and_then(|()| self.writer.write_str(digits.format(value)));
        }
    }
}

impl Visit for PlainFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let plain = if field.name() == "message" {
            !self.writer.sanitizes_ansi_escapes() || !needs_sanitizing(value)
        } else {
            !needs_debug_escape(value)
        };
        if !plain {
            self.by_default(|visitor| visitor.record_str(field, value));
        } else if field.name() == "message" {
            self.result = self.pad().and_then(|()| self.writer.write_str(value));
        } else {
            self.result = self.write_name(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_integer(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.by_default(|visitor| visitor.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            // The message of `info!(..., "text")` arrives as `fmt::Arguments`: written
            // through a writer that checks each piece and sanitizes only what needs it.
            let sanitize = self.writer.sanitizes_ansi_escapes();
            self.result = self.pad().and_then(|()| {
                if sanitize {
                    write!(Sanitizing(&mut self.writer), "{value:?}")
                } else {
                    write!(self.writer, "{value:?}")
                }
            });
        } else {
            self.result = self
                .pad()
                .and_then(|()| write!(self.writer, "{}={value:?}", Self::name(field)));
        }
    }
}

/// A string `Debug` would write unchanged between quotes: printable ASCII without `"` and
/// `\`. Anything else (controls, non-ASCII, quotes) goes to `Debug` itself.
fn needs_debug_escape(value: &str) -> bool {
    value
        .bytes()
        .any(|byte| !(0x20..=0x7e).contains(&byte) || byte == b'"' || byte == b'\\')
}

/// A message tracing-subscriber's sanitizer would change (terminal controls, DEL, and the
/// C1 controls U+0080–U+009F); any non-ASCII byte sends the message to it, to be sure.
fn needs_sanitizing(value: &str) -> bool {
    value
        .bytes()
        .any(|byte| !byte.is_ascii() || matches!(byte, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f))
}

/// Writes pieces that need no sanitizing as they are, and the others character by
/// character as tracing-subscriber's sanitizer does (terminal controls as `\xNN`, C1
/// controls as `\u{NN}`).
struct Sanitizing<'w, 'a>(&'w mut Writer<'a>);

impl fmt::Write for Sanitizing<'_, '_> {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        if !needs_sanitizing(piece) {
            return self.0.write_str(piece);
        }
        for ch in piece.chars() {
            match ch {
                '\x07' | '\x08' | '\x0c' | '\x1b' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", u32::from(ch))?;
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(ch))?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}
