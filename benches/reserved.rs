//! criterion benchmarks of the reserved-variable rules against input size, for the inputs a
//! Pod author controls (issue 11, item 1): each group grows one dimension of one container up
//! to what fits the API server's 3 MiB object limit. Linear growth shows as time per element
//! staying flat across sizes (criterion's "thrpt" column, elements per second).
//!
//! - `resources`: distinct resource names in `resources` (the GPU resource last).
//! - `env_names`: `env` names, all reserved.
//! - `env_from_same_config_map`: `envFrom` entries naming one ConfigMap of 5,000 keys.
//! - `env_from_distinct_prefixes`: distinct prefixes `QAT<i>` over that ConfigMap in a QAT
//!   container: every (prefix, digit key) is reserved, n × 5,000 variables, listed up to
//!   `MAX_LISTED_KEY_FINDINGS` and counted beyond.
//! - `env_from_secrets`: distinct unprefixed Secrets (unverifiable).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

// The same allocator as the binary, so the numbers match the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envlink::config::Policy;
use envlink::podshape::ContainerKind;
use envlink::reserved::{ConfigMapKeys, ContainerEnv, EnvFromSource};

/// ConfigMaps held as the real index holds them: sorted keys behind an `Arc`.
struct Maps(HashMap<String, Arc<[Box<str>]>>);

impl ConfigMapKeys for Maps {
    fn keys(&self, _namespace: &str, name: &str) -> Option<Vec<String>> {
        self.0
            .get(name)
            .map(|keys| keys.iter().map(|k| k.to_string()).collect())
    }

    fn shared_keys(&self, _namespace: &str, name: &str) -> Option<Arc<[Box<str>]>> {
        self.0.get(name).cloned()
    }
}

fn big_config_map() -> Maps {
    let mut keys: Vec<Box<str>> = (0..5_000)
        .map(|i| format!("{i}").into_boxed_str())
        .chain(["DEVICE_X".into(), "VISIBLE_DEVICES".into()])
        .collect();
    keys.sort_unstable();
    Maps(HashMap::from([("big".to_string(), keys.into())]))
}

fn container<'a>(
    resources: Vec<&'a str>,
    env: Vec<&'a str>,
    env_from: Vec<EnvFromSource<'a>>,
) -> ContainerEnv<'a> {
    ContainerEnv {
        kind: ContainerKind::Regular,
        index: 0,
        name: "app",
        resources,
        env,
        env_from,
        claims: vec![],
    }
}

fn configure<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    // Two shared cores: few, short samples are enough to see the slope.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group
}

fn bench_resources(c: &mut Criterion) {
    let rules = Policy::default().rules;
    let mut group = configure(c, "reserved_resources");
    for n in [25_000usize, 50_000, 100_000] {
        let names: Vec<String> = (0..n)
            .map(|i| format!("example.com/r{i}"))
            .chain(["nvidia.com/gpu".to_string()])
            .collect();
        let c = container(
            names.iter().map(String::as_str).collect(),
            vec!["NVIDIA_GDS"; 1_000],
            vec![],
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let f = rules.evaluate(
                    "ns",
                    std::slice::from_ref(black_box(&c)),
                    &Maps(HashMap::new()),
                );
                assert_eq!(f.len(), 1_000);
                f.len()
            })
        });
    }
    group.finish();
}

fn bench_env_names(c: &mut Criterion) {
    let rules = Policy::default().rules;
    let mut group = configure(c, "reserved_env_names");
    for n in [12_500usize, 25_000, 50_000] {
        let env: Vec<String> = (0..n).map(|i| format!("PCIDEVICE_{i}")).collect();
        let c = container(
            vec!["nvidia.com/gpu"],
            env.iter().map(String::as_str).collect(),
            vec![],
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let f = rules.evaluate(
                    "ns",
                    std::slice::from_ref(black_box(&c)),
                    &Maps(HashMap::new()),
                );
                assert_eq!(f.len(), n);
                f.len()
            })
        });
    }
    group.finish();
}

fn bench_env_from(c: &mut Criterion) {
    let rules = Policy::default().rules;
    let maps = big_config_map();

    let mut group = configure(c, "reserved_env_from_same_config_map");
    for n in [5_000usize, 10_000, 20_000] {
        let from = EnvFromSource {
            config_map: Some("big"),
            prefix: "NVIDIA_",
            secret: None,
        };
        let c = container(vec!["nvidia.com/gpu"], vec![], vec![from; n]);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let f = rules.evaluate("ns", std::slice::from_ref(black_box(&c)), &maps);
                assert_eq!(f.len(), 1);
                f.len()
            })
        });
    }
    group.finish();

    let mut group = configure(c, "reserved_env_from_distinct_prefixes");
    for n in [5_000usize, 10_000, 20_000] {
        // QAT0, QAT1, ...: distinct prefixes that each complete a QAT name with every one of
        // the 5,000 digit keys (n × 5,000 reserved variables). They all reach the same DFA
        // state, so the keys are scanned once; the findings are listed up to the bound.
        let prefixes: Vec<String> = (0..n).map(|i| format!("QAT{i}")).collect();
        let from: Vec<EnvFromSource<'_>> = prefixes
            .iter()
            .map(|p| EnvFromSource {
                config_map: Some("big"),
                prefix: p,
                secret: None,
            })
            .chain([EnvFromSource {
                config_map: Some("big"),
                prefix: "QAT",
                secret: None,
            }])
            .collect();
        let c = container(vec!["qat.intel.com/generic"], vec![], from);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let e = rules.evaluate_bounded("ns", std::slice::from_ref(black_box(&c)), &maps);
                // Every pair's 5,000 digit keys: listed up to the bound, the rest counted.
                assert_eq!(e.findings.len() + e.omitted, (n + 1) * 5_000);
                assert!(e.findings.len() <= envlink::reserved::MAX_LISTED_KEY_FINDINGS + n + 1);
                e.findings.len()
            })
        });
    }
    group.finish();

    let mut group = configure(c, "reserved_env_from_secrets");
    for n in [5_000usize, 10_000, 20_000] {
        let names: Vec<String> = (0..n).map(|i| format!("secret-{i}")).collect();
        let from: Vec<EnvFromSource<'_>> = names
            .iter()
            .map(|s| EnvFromSource {
                config_map: None,
                prefix: "",
                secret: Some(s),
            })
            .collect();
        let c = container(vec![], vec![], from);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let f = rules.evaluate("ns", std::slice::from_ref(black_box(&c)), &maps);
                assert_eq!(f.len(), n);
                f.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_resources, bench_env_names, bench_env_from);
criterion_main!(benches);
