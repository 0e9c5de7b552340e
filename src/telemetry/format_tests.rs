//! [`PlainLine`] and [`PlainJson`] against the tracing-subscriber formats they stand in for:
//! the same events, the same bytes.

use std::fmt;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

use super::json::PlainJson;
use super::line::{PlainLine, Rfc3339Micros};

/// Collects formatted lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

fn fixed_time(writer: &mut Writer<'_>) -> fmt::Result {
    writer.write_str("2026-12-02T21:00:00.123456Z")
}

/// A timer whose text needs JSON escaping, to check that the timestamp is escaped too.
fn odd_time(writer: &mut Writer<'_>) -> fmt::Result {
    writer.write_str("day \"1\"\t\\")
}

type Timer = fn(&mut Writer<'_>) -> fmt::Result;

#[derive(Debug, Clone, Copy)]
struct Setting {
    ansi: bool,
    sanitize: bool,
    json: bool,
}

/// What `log` writes under tracing-subscriber's format (`ours == false`) or ours.
fn output(setting: Setting, ours: bool, timer: Timer, log: impl FnOnce()) -> String {
    let lines = Lines::default();
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(lines.clone())
        .with_ansi(setting.ansi)
        .with_ansi_sanitization(setting.sanitize)
        .with_timer(timer);
    match (setting.json, ours) {
        (false, false) => {
            tracing::subscriber::with_default(builder.with_target(true).finish(), log);
        }
        (false, true) => {
            let subscriber = builder.event_format(PlainLine::with_timer(timer)).finish();
            tracing::subscriber::with_default(subscriber, log);
        }
        (true, false) => {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        }
        (true, true) => {
            let subscriber = builder
                .json()
                .event_format(PlainJson::with_timer(timer))
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        }
    }
    String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
}

#[derive(Debug, thiserror::Error)]
#[error("outer: {0}")]
struct Outer(#[source] Inner);

#[derive(Debug, thiserror::Error)]
#[error("inner {0}")]
struct Inner(String);

/// Events of every shape envlink logs and a few more, with the generated values in them.
fn log_all(text: &str, number: u64, signed: i64, flag: bool, float: f64) {
    tracing::info!(
        endpoint = "/mutate",
        uid = text,
        namespace = text,
        patch_bytes = number,
        duration_us = number,
        "review answered"
    );
    tracing::warn!(error = %text, status = 400u64, "review refused at the HTTP level");
    tracing::error!(value = signed, flag, r#type = text, "done {text}");
    tracing::debug!(message = text, other = ?text);
    tracing::trace!(message = number, list = ?[text, text]);
    tracing::info!(cause = &Outer(Inner(text.to_string())) as &(dyn std::error::Error + 'static));
    tracing::info!(
        cause = &Inner(text.to_string()) as &(dyn std::error::Error + 'static),
        "plain error"
    );
    tracing::info!(
        ratio = float,
        big = u128::from(number),
        small = i128::from(signed),
        "{text:?}"
    );
    tracing::info!("{}", text);
    tracing::info!(target: "envlink::custom", text, "targeted");
    tracing::info!("dotted.name" = text, "quoted\"name" = number);
    let span = tracing::info_span!("watch", kind = text);
    span.in_scope(|| {
        tracing::info!(text, "inside a span");
        tracing::info!(parent: None, text, "a root event inside a span");
    });
    tracing::info!(parent: &span, text, "an event with an explicit parent");
}

/// Strings from the classes that take different paths: plain ASCII, quotes and
/// backslashes, controls (terminal escapes included), C1 controls, other Unicode.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9 ./:_-]{0,12}",
            1 => Just("\"".to_string()),
            1 => Just("\\".to_string()),
            1 => Just("\u{1b}[31m".to_string()),
            1 => prop::sample::select(vec!['\x07', '\x08', '\x0c', '\x7f', '\t', '\n', '\r', '\0', '\x1f'])
                .prop_map(String::from),
            1 => (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap().to_string()),
            1 => any::<char>().prop_map(String::from),
            1 => Just("é\u{301}".to_string()),
        ],
        0..6,
    )
    .prop_map(|pieces| pieces.concat())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0),
        Just(1e300)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ours_write_what_tracing_subscriber_writes(
        text in text(),
        number in any::<u64>(),
        signed in any::<i64>(),
        flag in any::<bool>(),
        float in float(),
        ansi in any::<bool>(),
        sanitize in any::<bool>(),
        json in any::<bool>(),
        odd in any::<bool>(),
    ) {
        let setting = Setting { ansi, sanitize, json };
        let timer: Timer = if odd { odd_time } else { fixed_time };
        let log = || log_all(&text, number, signed, flag, float);
        let theirs = output(setting, false, timer, log);
        let ours = output(setting, true, timer, log);
        prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn the_review_line_is_written_as_before() {
    let log = || {
        tracing::info!(
            endpoint = "/mutate",
            uid = "705ab4f5-6393-11e8-b7cc-42010a800002",
            namespace = "team-a",
            decision = "patched",
            patch_bytes = 13_000u64,
            "review answered"
        );
    };
    let text = Setting {
        ansi: false,
        sanitize: true,
        json: false,
    };
    let expected = "2026-12-02T21:00:00.123456Z  INFO envlink::telemetry::format_tests: \
        review answered endpoint=\"/mutate\" uid=\"705ab4f5-6393-11e8-b7cc-42010a800002\" \
        namespace=\"team-a\" decision=\"patched\" patch_bytes=13000\n";
    assert_eq!(output(text, true, fixed_time, log), expected);
    assert_eq!(output(text, false, fixed_time, log), expected);
    let json = Setting { json: true, ..text };
    let expected = "{\"timestamp\":\"2026-12-02T21:00:00.123456Z\",\"level\":\"INFO\",\
        \"message\":\"review answered\",\"endpoint\":\"/mutate\",\
        \"uid\":\"705ab4f5-6393-11e8-b7cc-42010a800002\",\"namespace\":\"team-a\",\
        \"decision\":\"patched\",\"patch_bytes\":13000,\
        \"target\":\"envlink::telemetry::format_tests\"}\n";
    assert_eq!(output(json, true, fixed_time, log), expected);
    assert_eq!(output(json, false, fixed_time, log), expected);
}

#[test]
fn the_timestamp_is_tracing_subscribers_own() {
    // Both read the clock: compare to the second, and try again across a second's edge.
    for _ in 0..10 {
        let mut ours = String::new();
        let mut theirs = String::new();
        Rfc3339Micros
            .format_time(&mut Writer::new(&mut ours))
            .unwrap();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
        assert_eq!(ours.len(), "2026-12-02T21:00:00.123456Z".len());
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
        if ours[..19] == theirs[..19] {
            return;
        }
    }
    panic!("the two timers never agreed to the second");
}
