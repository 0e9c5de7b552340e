//! criterion benchmarks of the `review answered` line: tracing-subscriber's text and JSON
//! formats against envlink's direct paths for them (`telemetry::PlainLine`,
//! `telemetry::PlainJson`), writing to a sink so only the formatting is measured.

use criterion::{Criterion, criterion_group, criterion_main};
use envlink::telemetry::{PlainJson, PlainLine};
use tracing::Subscriber;

// The same allocator as the binary, so the numbers match the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The line every review logs, with the values of a typical Pod review.
fn review_answered(duration_us: u64) {
    tracing::info!(
        endpoint = "mutate",
        uid = "705ab4f5-6393-11e8-b7cc-42010a800002",
        namespace = "shop",
        object_name = "checkout-7d4b9c",
        operation = "CREATE",
        kind = "Pod",
        decision = "patched",
        patch_bytes = 11_919u64,
        duration_us,
        "review answered"
    );
}

fn measure(c: &mut Criterion, name: &str, subscriber: impl Subscriber + Send + Sync + 'static) {
    tracing::subscriber::with_default(subscriber, || {
        let mut n = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                review_answered(n % 1000);
            })
        });
    });
}

fn log_line(c: &mut Criterion) {
    let builder = || {
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_ansi(false)
    };
    measure(
        c,
        "log_line/text_tracing_subscriber",
        builder().with_target(true).finish(),
    );
    measure(
        c,
        "log_line/text_envlink",
        builder().event_format(PlainLine::default()).finish(),
    );
    let json = || {
        builder()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
    };
    measure(c, "log_line/json_tracing_subscriber", json().finish());
    measure(
        c,
        "log_line/json_envlink",
        builder().json().event_format(PlainJson::default()).finish(),
    );
}

criterion_group!(benches, log_line);
criterion_main!(benches);
