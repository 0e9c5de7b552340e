//! Review time against input size for each hostile class of `tests/support/hostile.rs`,
//! through the server's request path (`handle_review`: decode, decide, encode). Each class is
//! measured at a quarter, half and all of the API server's 3 MiB object limit: linear cost
//! shows as time doubling with size.
//!
//! `cargo bench --bench hostile`

#[path = "../tests/support/hostile.rs"]
mod hostile;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envlink::catalog::{Catalog, file};
use envlink::config::Policy;
use envlink::http::router::{Endpoint, handle_review};
use envlink::http::{AppState, Metrics, ScrapeSources};

fn state(policy: &str) -> AppState {
    let links = match file::parse_services(file::EMBEDDED_CATALOG, "embedded", "default") {
        Ok(links) => links,
        Err(e) => panic!("embedded catalog: {e}"),
    };
    let (catalog, _) = Catalog::from_links(links);
    let catalog = Arc::new(catalog);
    let metrics = Arc::new(Metrics::new(ScrapeSources::catalog(catalog.clone())));
    let policy = match Policy::from_yaml(policy, "bench") {
        Ok(policy) => policy,
        Err(e) => panic!("policy: {e}"),
    };
    AppState::new(catalog, Arc::new(policy), metrics)
}

fn bench_hostile(c: &mut Criterion) {
    let sizes = [
        hostile::OBJECT_LIMIT / 4,
        hostile::OBJECT_LIMIT / 2,
        hostile::OBJECT_LIMIT,
    ];
    let names: Vec<&'static str> = hostile::all(1024).into_iter().map(|(n, _)| n).collect();
    for name in names {
        let mut group = c.benchmark_group(format!("hostile/{name}"));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(5));
        for size in sizes {
            let Some((_, case)) = hostile::all(size).into_iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let state = state(case.policy);
            let endpoint = if case.endpoint == "mutate" {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            group.throughput(Throughput::Bytes(case.body.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &case.body, |b, body| {
                b.iter(|| handle_review(&state, endpoint, black_box(body)).body.len())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_hostile);
criterion_main!(benches);
