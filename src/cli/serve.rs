//! `envlink serve`: the webhook server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use crate::catalog::claims;
use crate::catalog::configmaps::{ConfigMapIndex, ConfigMapSync};
use crate::catalog::driver::InitialList;
use crate::catalog::status::{WatchStatus, WatchStatuses};
use crate::catalog::watch::{self, CatalogSync};
use crate::catalog::{Catalog, driver, file};
use crate::config::Policy;
use crate::http::metrics::{self, MetricsState};
use crate::http::server::{self, Drained, ServerOptions};
use crate::http::tls::{self, CertReloader, CertResolver, ReloadStats};
use crate::http::watch_metrics::WatchCollector;
use crate::http::workers::{self, Workers};
use crate::http::{self, AppState, Limits, Metrics, ScrapeSources};
use crate::reserved::CompiledRules;
use crate::servicelinks::DEFAULT_NAMESPACE;
use crate::telemetry::LogFormat;

/// Arguments of `envlink serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTPS address for the admission endpoints [default: 0.0.0.0:8443; with --dev
    /// 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR", env = "ENVLINK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "ENVLINK_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "dev"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "ENVLINK_TLS_KEY",
        requires = "tls_cert",
        conflicts_with = "dev"
    )]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, value_name = "DURATION", default_value = duration_text(DEFAULT_TLS_RELOAD_INTERVAL),
          value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Log a warning (repeated daily) once the serving certificate has less than this left
    /// (`7d`, `36h`, `90m`).
    #[arg(long, value_name = "DURATION", env = "ENVLINK_CERT_EXPIRY_WARNING",
          default_value = duration_text(DEFAULT_CERT_EXPIRY_WARNING), value_parser = parse_duration)]
    pub cert_expiry_warning: Duration,
    /// Try-it-out mode: a self-signed certificate, loopback addresses and the embedded static
    /// Service catalog (unless --services-file or --kubeconfig is given).
    #[arg(long)]
    pub dev: bool,
    /// With --dev: where to write the CA bundle that verifies the self-signed certificate
    /// [default: $XDG_CACHE_HOME/envlink/dev-ca.pem, else ~/.cache/envlink/dev-ca.pem].
    #[arg(long, value_name = "FILE")]
    pub dev_ca_out: Option<PathBuf>,
    /// Serve a static Service catalog from this file instead of watching a cluster.
    #[arg(
        long,
        value_name = "FILE",
        env = "ENVLINK_SERVICES_FILE",
        conflicts_with = "kubeconfig"
    )]
    pub services_file: Option<PathBuf>,
    /// Kubeconfig for the Service watch; default: in-cluster config, else $KUBECONFIG.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The policy file (see the README); default: the built-in policy.
    #[arg(long, value_name = "FILE", env = "ENVLINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Plain-HTTP address for GET /metrics (Prometheus) [default: 0.0.0.0:9090; with --dev
    /// 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR", env = "ENVLINK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Open no metrics listener at all (no GET /metrics; the HTTPS probes are unaffected).
    #[arg(long, env = "ENVLINK_NO_METRICS", conflicts_with = "metrics_listen")]
    pub no_metrics: bool,
    /// Log format.
    #[arg(long, value_enum, env = "ENVLINK_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Time limit for one review, from its request head to the answer (body, waiting and
    /// decision); also the TLS handshake and header timeouts. Keep it below the webhook's
    /// timeoutSeconds.
    #[arg(long, value_name = "DURATION", default_value = duration_text(http::DEFAULT_REQUEST_TIMEOUT),
          value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest accepted request body.
    #[arg(long, value_name = "BYTES", default_value_t = http::DEFAULT_MAX_BODY_BYTES,
          value_parser = parse_body_bytes)]
    pub max_body_bytes: usize,
    /// Request-body bytes held at once across all connections; at least --max-body-bytes.
    #[arg(long, value_name = "BYTES", default_value_t = http::DEFAULT_MAX_INFLIGHT_BODY_BYTES,
          value_parser = parse_body_bytes)]
    pub max_inflight_body_bytes: usize,
    /// Reviews decided at once [default: the CPUs available to the process].
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub max_concurrent_reviews: Option<usize>,
    /// On SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, value_name = "DURATION", default_value = duration_text(DEFAULT_SHUTDOWN_GRACE),
          value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Threads serving the HTTPS connections (each connection stays on one) [default: the
    /// CPUs available to the process].
    #[arg(long, value_name = "N", env = "ENVLINK_SERVE_THREADS", value_parser = parse_positive)]
    pub serve_threads: Option<usize>,
    /// Most HTTPS connections open at once; at the limit new ones wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_connections)]
    pub max_connections: usize,
    /// Most HTTPS connections that have not yet sent a complete request (TLS handshake
    /// included); beyond it the oldest of them is closed.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_HANDSHAKES,
          value_parser = parse_connections)]
    pub max_handshakes: usize,
    /// A connection with no request in flight for this long is closed (GOAWAY on HTTP/2).
    #[arg(long, value_name = "DURATION", default_value = duration_text(server::DEFAULT_IDLE_TIMEOUT),
          value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Most connections open at once on the metrics port.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_METRICS_MAX_CONNECTIONS,
          value_parser = parse_connections)]
    pub metrics_max_connections: usize,
    /// How the watches take their first list (and every re-list): `streaming` is one watch
    /// with sendInitialEvents (Kubernetes' WatchList feature: on by default in 1.32 and from
    /// 1.34), `paginated` is list requests of 500 objects, `auto` streams where the API
    /// server does (asked once per watched resource at start).
    #[arg(long, value_enum, value_name = "MODE", env = "ENVLINK_INITIAL_LIST",
          default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,
    /// When the Service watch has been disconnected for longer than this, /readyz answers
    /// 503. Default: off (the last known catalog keeps serving; see the README).
    #[arg(long, value_name = "DURATION", env = "ENVLINK_MAX_STALENESS", value_parser = parse_duration)]
    pub max_staleness: Option<Duration>,
    /// Audit the cluster this often (as `envlink audit` does) and export
    /// envlink_audit_findings{check,namespace}. Default: off. Needs a cluster.
    #[arg(long, value_name = "DURATION", env = "ENVLINK_AUDIT_INTERVAL", value_parser = parse_duration)]
    pub audit_interval: Option<Duration>,
    /// With --audit-interval: also write each namespace's PolicyReport (wgpolicyk8s.io/v1alpha2,
    /// named envlink-audit; needs the CRD and RBAC to patch policyreports).
    #[arg(
        long,
        env = "ENVLINK_AUDIT_POLICY_REPORTS",
        requires = "audit_interval"
    )]
    pub audit_policy_reports: bool,
}

impl ServeArgs {
    /// The HTTPS address: `--listen`, else loopback with `--dev` and every interface without.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| default_addr(self.dev, 8443))
    }

    /// The metrics address: `--metrics-listen`, else as for [`Self::listen_addr`].
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listen
            .unwrap_or_else(|| default_addr(self.dev, 9090))
    }

    /// Where `--dev` writes its CA: `--dev-ca-out`, else the user's cache directory (never
    /// the working directory, which is often a git checkout).
    pub fn dev_ca_path(&self) -> PathBuf {
        if let Some(path) = &self.dev_ca_out {
            return path.clone();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| Path::new(dir).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| Path::new(dir).is_absolute())
                    .map(|home| PathBuf::from(home).join(".cache"))
            });
        match cache {
            Some(cache) => cache.join("envlink").join("dev-ca.pem"),
            // No home (a bare container): a name of this process's own in the temp directory,
            // created exclusively (see `write_dev_ca`).
            None => std::env::temp_dir().join(format!("envlink-dev-ca-{}.pem", std::process::id())),
        }
    }

    /// Limits that make no sense, refused before anything else happens.
    fn check(&self) -> anyhow::Result<()> {
        if self.request_timeout.is_zero() {
            anyhow::bail!("--request-timeout must be more than 0");
        }
        if self.tls_reload_interval.is_zero() {
            anyhow::bail!("--tls-reload-interval must be more than 0");
        }
        if self.idle_timeout.is_zero() {
            anyhow::bail!("--idle-timeout must be more than 0");
        }
        if self.max_inflight_body_bytes < self.max_body_bytes {
            anyhow::bail!(
                "--max-inflight-body-bytes ({}) must be at least --max-body-bytes ({}): a body \
                 of the largest accepted size could never be read",
                self.max_inflight_body_bytes,
                self.max_body_bytes
            );
        }
        if self.max_staleness.is_some_and(|d| d.is_zero()) {
            anyhow::bail!("--max-staleness must be more than 0 (leave it out to turn it off)");
        }
        Ok(())
    }
}

fn default_addr(dev: bool, port: u16) -> SocketAddr {
    let ip = if dev {
        std::net::Ipv4Addr::LOCALHOST
    } else {
        std::net::Ipv4Addr::UNSPECIFIED
    };
    SocketAddr::from((ip, port))
}

/// How often the certificate files are checked for changes (`--tls-reload-interval`).
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Warn once the serving certificate has less than this left (`--cert-expiry-warning`).
pub const DEFAULT_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long in-flight reviews may take to finish after SIGTERM (`--shutdown-grace`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Parses a duration flag: a plain number of seconds (`7`), or a humantime duration
/// (`500ms`, `10s`, `2m`, `36h`, `7d`, `1week`, `1m 30s`).
///
/// The plain number is kept because it was accepted before humantime parsed these flags
/// (humantime itself wants a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = text
            .parse()
            .map_err(|_| format!("{text:?} is too many seconds"))?;
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}; examples: 500ms, 10s, 2m, 36h, 7d)"))
}

/// A default duration as the text `--help` shows and clap parses back with
/// [`parse_duration`]: the largest unit that divides it (`90s`, not `1m 30s`), so each default
/// is written once, as a constant, and the help text cannot drift from it.
fn duration_text(duration: Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 24 * 60 * 60 * 1000),
        ("h", 60 * 60 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let millis = duration.as_millis();
    let (unit, size) = UNITS
        .iter()
        .copied()
        .find(|(_, size)| millis.is_multiple_of(*size))
        .unwrap_or(("ms", 1));
    format!("{}{unit}", millis / size)
}

/// A whole number of at least 1.
fn parse_positive(text: &str) -> Result<usize, String> {
    parse_range(text, 1, usize::MAX)
}

/// A connection count: at least 1, at most 1,000,000.
fn parse_connections(text: &str) -> Result<usize, String> {
    parse_range(text, 1, 1_000_000)
}

/// A body size: at least 1 byte, at most 1 GiB (the API server's objects are 3 MiB at most).
fn parse_body_bytes(text: &str) -> Result<usize, String> {
    parse_range(text, 1, 1 << 30)
}

fn parse_range(text: &str, min: usize, max: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == usize::MAX => Err(format!("{text:?} is not a whole number of at least {min}")),
        _ => Err(format!(
            "{text:?} is not a whole number from {min} to {max}"
        )),
    }
}

/// Runs the server until SIGTERM or Ctrl-C, then drains in-flight reviews (up to
/// `--shutdown-grace`) and returns.
///
/// Every input (limits, policy, Service file or kubeconfig, certificate files) is checked
/// before anything is written or announced: a mistyped path fails at once, without a "try
/// it" banner or a stray CA file.
///
/// Expects the tracing subscriber and the rustls crypto provider to be installed (main.rs).
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.check()?;
    let policy = Arc::new(match &args.config {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    });
    let material = tls_material(&args).await?;
    let source = catalog_source(&args, &policy.rules).await?;
    ensure_descriptors(&args)?;
    // Listen next: a port in use is the most common startup error, and nothing is written
    // or announced before it is known.
    let listeners = bind(&args).await?;

    let tls_stats = Arc::new(ReloadStats::default());
    let (resolver, reloader) = tls_start(&args, material, &tls_stats, listeners.local)?;
    let tls_config = Arc::new(tls::server_config(resolver)?);

    // Every watch's status, for the per-resource metrics; the Service watch's also feeds
    // `/readyz` and the unlabelled watch metrics.
    let statuses = Arc::new(WatchStatuses::default());
    let (catalog, service_watch) = catalog_start(source.clone(), &policy, &statuses);

    let mut metrics = Metrics::new(ScrapeSources {
        catalog: catalog.clone(),
        watch: service_watch.clone(),
        tls: tls_stats,
    });
    metrics.register_collector(Box::new(WatchCollector::new(statuses.clone())));
    if let Some(interval) = args.audit_interval {
        let is_static = matches!(source, CatalogSource::Static(..));
        audit_setup(&args, &policy, is_static, &mut metrics, interval).await?;
    }
    let metrics = Arc::new(metrics);
    let limits = limits(&args);
    let check_config_maps = policy.config.reserved.check_config_maps;
    let state = AppState::new(catalog.clone(), policy, metrics.clone())
        .with_limits(limits)
        .with_watch(service_watch, args.max_staleness);
    let state = with_cluster_lookups(state, source, check_config_maps, &statuses);
    log_staleness(&args, &state);
    serve_until_stopped(&args, listeners, tls_config, state, metrics, reloader).await
}

/// Makes sure every connection both listeners may hold gets a descriptor, so a full metrics
/// port (or anything else) never leaves the webhook port unable to accept.
fn ensure_descriptors(args: &ServeArgs) -> anyhow::Result<()> {
    let connections = (args.max_connections + args.metrics_max_connections) as u64;
    let descriptors = server::ensure_descriptors(connections)?;
    if descriptors.now != descriptors.before {
        tracing::info!(
            needed = descriptors.needed,
            before = ?descriptors.before,
            now = ?descriptors.now,
            "raised the open-file limit (RLIMIT_NOFILE) for the connection caps"
        );
    }
    Ok(())
}

/// The bound listeners and their addresses (for the "serving" log line).
struct Listeners {
    /// The HTTPS (admission) listener.
    https: TcpListener,
    /// Its address, with the port the OS chose for `:0`.
    local: SocketAddr,
    /// The metrics listener, unless `--no-metrics`.
    metrics: Option<TcpListener>,
    /// The metrics address, or why there is none.
    metrics_local: String,
}

/// Binds the HTTPS and (unless `--no-metrics`) the metrics listener.
async fn bind(args: &ServeArgs) -> anyhow::Result<Listeners> {
    let (listen, metrics_listen) = (args.listen_addr(), args.metrics_addr());
    let https = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
    let metrics = if args.no_metrics {
        None
    } else {
        let bound = TcpListener::bind(metrics_listen).await;
        Some(
            bound
                .with_context(|| format!("cannot listen on {metrics_listen} (--metrics-listen)"))?,
        )
    };
    let metrics_local = match &metrics {
        Some(listener) => listener
            .local_addr()
            .context("the metrics listener has no address")?
            .to_string(),
        None => "off (--no-metrics)".to_string(),
    };
    let local = https
        .local_addr()
        .context("the HTTPS listener has no address")?;
    Ok(Listeners {
        https,
        local,
        metrics,
        metrics_local,
    })
}

/// The request limits from the flags.
fn limits(args: &ServeArgs) -> Limits {
    Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        max_inflight_body_bytes: args.max_inflight_body_bytes,
        max_concurrent_reviews: args
            .max_concurrent_reviews
            .unwrap_or_else(http::default_concurrent_reviews),
    }
}

/// Says what `--max-staleness` does here (nothing on a static catalog).
fn log_staleness(args: &ServeArgs, state: &AppState) {
    if let Some(max) = args.max_staleness {
        if state.watch.connection().freshness() == watch::Freshness::Static {
            tracing::warn!("--max-staleness has no effect on a static Service catalog");
        } else {
            tracing::info!(max_staleness = ?max, "/readyz fails once the Service watch has been down longer");
        }
    }
}

/// Serves both ports until SIGTERM or Ctrl-C, then drains the HTTPS connections (up to
/// `--shutdown-grace`) and stops the metrics server and the certificate reloader.
async fn serve_until_stopped(
    args: &ServeArgs,
    listeners: Listeners,
    tls_config: Arc<rustls::ServerConfig>,
    state: AppState,
    metrics: Arc<Metrics>,
    reloader: Option<CertReloader>,
) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let name = signal.await;
        tracing::info!(signal = name, "shutdown requested");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };

    let metrics_app = metrics::router(MetricsState {
        metrics,
        readiness: state.readiness(),
    });
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(server::serve_plain(
            listener,
            metrics_app,
            metrics_options(args),
            stopped(stop_rx.clone()),
        ))
    });
    let reload_task = reloader.map(|r| tokio::spawn(r.run(args.tls_reload_interval)));

    let limits = state.limits;
    let workers = Workers::start(args.serve_threads.unwrap_or_else(workers::default_threads))?;
    tracing::info!(
        listen = %listeners.local,
        serve_threads = workers.len(),
        metrics = %listeners.metrics_local,
        max_connections = args.max_connections,
        max_handshakes = args.max_handshakes,
        max_body_bytes = limits.max_body_bytes,
        max_inflight_body_bytes = limits.max_inflight_body_bytes,
        max_concurrent_reviews = limits.max_concurrent_reviews,
        "envlink serving: POST /mutate, POST /validate, GET /healthz, GET /readyz"
    );
    let options = ServerOptions {
        handshake_timeout: args.request_timeout,
        header_read_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
        max_connections: args.max_connections,
        max_handshakes: args.max_handshakes,
    };
    let drained = server::serve_tls(
        listeners.https,
        tls_config,
        http::router(state),
        options,
        workers,
        stopped(stop_rx),
    )
    .await;
    match drained {
        Drained::Clean => tracing::info!("all connections finished; exiting"),
        Drained::TimedOut => tracing::warn!(
            grace = ?args.shutdown_grace,
            "shutdown grace period over; closing the remaining connections"
        ),
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(task) = reload_task {
        task.abort();
    }
    Ok(())
}

/// The metrics port's server options.
fn metrics_options(args: &ServeArgs) -> ServerOptions {
    ServerOptions {
        handshake_timeout: args.request_timeout,
        header_read_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        // Scrapes are not drained: a scrape cut short is retried at the next interval.
        shutdown_grace: Duration::ZERO,
        max_connections: args.metrics_max_connections,
        max_handshakes: server::METRICS_MAX_HANDSHAKES.min(args.metrics_max_connections),
    }
}

/// Starts the periodic audit (`--audit-interval`) and registers its gauge.
async fn audit_setup(
    args: &ServeArgs,
    policy: &Arc<Policy>,
    is_static: bool,
    metrics: &mut Metrics,
    interval: Duration,
) -> anyhow::Result<()> {
    if interval.is_zero() {
        anyhow::bail!("--audit-interval must be more than 0");
    }
    if is_static {
        anyhow::bail!(
            "--audit-interval needs a cluster to audit: not with --services-file or --dev's \
             embedded catalog (give --kubeconfig)"
        );
    }
    let gauge = crate::audit::periodic::FindingsGauge::default();
    metrics.register_collector(Box::new(gauge.clone()));
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    tokio::spawn(crate::audit::periodic::run(
        client,
        policy.clone(),
        interval,
        gauge,
        args.audit_policy_reports,
    ));
    tracing::info!(every = ?interval, policy_reports = args.audit_policy_reports, "periodic audit on");
    Ok(())
}

/// The certificate, read or generated, before anything is written.
enum TlsMaterial {
    Dev(tls::DevCertificates),
    Files {
        cert: PathBuf,
        key: PathBuf,
        pair: (Vec<u8>, Vec<u8>),
        certified: rustls::sign::CertifiedKey,
    },
}

/// Reads and checks the certificate files, or generates the `--dev` certificate.
async fn tls_material(args: &ServeArgs) -> anyhow::Result<TlsMaterial> {
    if args.dev {
        return Ok(TlsMaterial::Dev(tls::generate_dev_certificates()?));
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        anyhow::bail!(
            "no certificate: give --tls-cert and --tls-key, or --dev for a self-signed one"
        );
    };
    let pair = tls::read_pair(cert, key).await?;
    let certified = tls::certified_key_from_pem(
        &pair.0,
        &pair.1,
        &cert.display().to_string(),
        &key.display().to_string(),
    )?;
    Ok(TlsMaterial::Files {
        cert: cert.clone(),
        key: key.clone(),
        pair,
        certified,
    })
}

/// The certificate resolver, and the reloader when the certificate comes from files. With
/// `--dev`, writes the CA and prints how to try the server.
fn tls_start(
    args: &ServeArgs,
    material: TlsMaterial,
    stats: &Arc<ReloadStats>,
    local: SocketAddr,
) -> anyhow::Result<(Arc<CertResolver>, Option<CertReloader>)> {
    let (cert, key, pair, certified) = match material {
        TlsMaterial::Dev(dev) => {
            let ca_path = args.dev_ca_path();
            write_dev_ca(&ca_path, &dev.ca_pem, args.dev_ca_out.is_some())?;
            let key = tls::certified_key_from_pem(
                dev.cert_pem.as_bytes(),
                dev.key_pem.as_bytes(),
                "dev certificate",
                "dev key",
            )?;
            stats.observe_certificate(&key);
            let ca = ca_path.display().to_string();
            let curl = format!(
                "curl --cacert {ca} -H 'Content-Type: application/json' \\\n    \
                 --data @tests/fixtures/review/mutate-pod-create.json https://localhost:{}/mutate",
                local.port()
            );
            tracing::info!(
                ca = %ca,
                names = ?tls::DEV_SUBJECT_ALT_NAMES,
                "--dev: self-signed certificate; its CA is in {ca}"
            );
            if args.log_format == LogFormat::Text {
                // For the person at the terminal: ready to paste (from the repository root).
                eprintln!("\nenvlink --dev: the CA is in {ca}; try it with\n\n    {curl}\n");
            }
            return Ok((Arc::new(CertResolver::new(key)), None));
        }
        TlsMaterial::Files {
            cert,
            key,
            pair,
            certified,
        } => (cert, key, pair, certified),
    };
    stats.observe_certificate(&certified);
    let resolver = Arc::new(CertResolver::new(certified));
    tracing::info!(
        cert = %cert.display(),
        key = %key.display(),
        every = ?args.tls_reload_interval,
        "TLS certificate loaded; re-read periodically"
    );
    let reloader = CertReloader::new(cert, key, resolver.clone(), stats.clone(), pair)
        .with_expiry_warning(args.cert_expiry_warning);
    Ok((resolver, Some(reloader)))
}

/// Writes the `--dev` CA. A path of the user's own choosing (`explicit`) is overwritten; the
/// default one is in the user's cache directory (created if needed), or — without a home —
/// a new file in the temp directory, created exclusively so that nobody can have planted a
/// symlink there first.
fn write_dev_ca(path: &Path, pem: &str, explicit: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let context = || {
        format!(
            "cannot write the dev CA to {} (--dev-ca-out)",
            path.display()
        )
    };
    if !explicit && let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(context)?;
    }
    let in_temp = !explicit && path.starts_with(std::env::temp_dir());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(!in_temp)
        .create_new(in_temp)
        .truncate(true)
        .open(path)
        .with_context(context)?;
    file.write_all(pem.as_bytes()).with_context(context)?;
    Ok(())
}

/// Where the Services come from, checked and loaded before anything is started.
#[derive(Clone)]
enum CatalogSource {
    /// A static file or the embedded catalog: the catalog, and where it came from.
    Static(Arc<Catalog>, String),
    /// A cluster to watch, and how its watches take their lists.
    Cluster(kube::Client, InitialList),
}

/// The catalog's source: a static file, the embedded one (`--dev`), or a cluster (whose
/// kubeconfig is read and checked here; nothing is contacted yet).
async fn catalog_source(args: &ServeArgs, rules: &CompiledRules) -> anyhow::Result<CatalogSource> {
    let catalog = Catalog::with_rules(rules);
    let refused = match (&args.services_file, args.dev && args.kubeconfig.is_none()) {
        (Some(path), _) => Some((
            file::load_file_into(&catalog, &path.to_string_lossy(), DEFAULT_NAMESPACE)?,
            path.display().to_string(),
        )),
        (None, true) => {
            let origin = "the embedded catalog";
            let refused =
                file::load_into(&catalog, file::EMBEDDED_CATALOG, origin, DEFAULT_NAMESPACE)?;
            Some((refused, origin.to_string()))
        }
        (None, false) => None,
    };
    if let Some((refused, origin)) = refused {
        if let Some(error) = refused.first() {
            anyhow::bail!("{origin}: {error}");
        }
        return Ok(CatalogSource::Static(Arc::new(catalog), origin));
    }
    Ok(CatalogSource::Cluster(
        kube_client(args.kubeconfig.as_deref()).await?,
        args.initial_list,
    ))
}

/// The catalog, from its source: ready at once, or watched (ready after the first list),
/// with the status of its watch (a fresh one, "static", for a static catalog).
fn catalog_start(
    source: CatalogSource,
    policy: &Policy,
    statuses: &WatchStatuses,
) -> (Arc<Catalog>, Arc<WatchStatus>) {
    match source {
        CatalogSource::Static(catalog, origin) => {
            let stats = catalog.stats();
            tracing::info!(
                source = %origin,
                services = stats.services,
                namespaces = stats.namespaces,
                "static Service catalog loaded: ready"
            );
            (catalog, Arc::default())
        }
        CatalogSource::Cluster(client, initial_list) => {
            let catalog = Arc::new(Catalog::with_rules(&policy.rules));
            let scopes = watch::scopes(&policy.config.services.namespaces);
            tracing::info!(
                ?scopes,
                "watching Services; ready after the first full list"
            );
            let sync = CatalogSync::new(catalog.clone(), scopes).with_initial_list(initial_list);
            let status = sync.status();
            statuses.add(status.clone());
            tokio::spawn(driver::run(client, sync));
            (catalog, status)
        }
    }
}

/// The cluster lookups of reviews, each watched through the common driver (its status added
/// to `statuses`): ConfigMap keys with `reserved.checkConfigMaps` (`/readyz` then waits for
/// their first list), and DRA device classes where the API server serves `resource.k8s.io/v1`
/// (discovery in the background; without it envlink does without). A static catalog has
/// no cluster, so neither.
fn with_cluster_lookups(
    state: AppState,
    source: CatalogSource,
    check_config_maps: bool,
    statuses: &Arc<WatchStatuses>,
) -> AppState {
    let (client, initial_list) = match source {
        CatalogSource::Static(..) => {
            if check_config_maps {
                tracing::warn!(
                    "reserved.checkConfigMaps needs a cluster: with a static Service catalog, \
                     keys brought in through envFrom ConfigMaps are not checked"
                );
            }
            return state;
        }
        CatalogSource::Cluster(client, initial_list) => (client, initial_list),
    };
    let mut state = state;
    if check_config_maps {
        let index = Arc::new(ConfigMapIndex::new());
        let sync = ConfigMapSync::cluster_wide(index.clone()).with_initial_list(initial_list);
        statuses.add(sync.status());
        tokio::spawn(driver::run(client.clone(), sync));
        tracing::info!("watching ConfigMap keys for the envFrom check; ready after the first list");
        state = state.with_config_maps(index);
    }
    state.with_claims(claims::spawn(client, statuses.clone(), initial_list))
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    // Without a read timeout a watch whose connection died silently would hang for good
    // (see `watch::WATCH_READ_TIMEOUT`).
    crate::cli::cluster::client_with(
        kubeconfig,
        watch::WATCH_READ_TIMEOUT,
        "give --kubeconfig, or --services-file for a static catalog",
    )
    .await
}

/// Installs the signal handlers now (so a failure is a startup error) and returns a future
/// that completes with the signal's name.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["envlink", "serve"].iter().chain(args).copied())
            .expect("arguments parse");
        match cli.command {
            crate::cli::Command::Serve(args) => *args,
            _ => unreachable!("serve was given"),
        }
    }

    #[test]
    fn dev_listens_on_loopback_unless_told_otherwise() {
        // The defaults are what is tested: skip where the environment sets the addresses.
        if std::env::var_os("ENVLINK_LISTEN").is_some()
            || std::env::var_os("ENVLINK_METRICS_LISTEN").is_some()
        {
            return;
        }
        let dev = serve_args(&["--dev"]);
        assert_eq!(dev.listen_addr().to_string(), "127.0.0.1:8443");
        assert_eq!(dev.metrics_addr().to_string(), "127.0.0.1:9090");
        let prod = serve_args(&["--tls-cert", "c", "--tls-key", "k"]);
        assert_eq!(prod.listen_addr().to_string(), "0.0.0.0:8443");
        assert_eq!(prod.metrics_addr().to_string(), "0.0.0.0:9090");
        let told = serve_args(&[
            "--dev",
            "--listen",
            "0.0.0.0:1",
            "--metrics-listen",
            "[::]:2",
        ]);
        assert_eq!(told.listen_addr().to_string(), "0.0.0.0:1");
        assert_eq!(told.metrics_addr().to_string(), "[::]:2");
    }

    #[test]
    fn no_metrics_turns_the_listener_off() {
        use clap::Parser;
        assert!(!serve_args(&["--dev"]).no_metrics);
        assert!(serve_args(&["--dev", "--no-metrics"]).no_metrics);
        // Contradictory: an address for a listener that is off.
        let both = crate::cli::Cli::try_parse_from([
            "envlink",
            "serve",
            "--dev",
            "--no-metrics",
            "--metrics-listen",
            "0.0.0.0:9090",
        ]);
        assert!(both.is_err(), "--no-metrics with --metrics-listen accepted");
    }

    #[test]
    fn nonsensical_limits_are_refused() {
        use clap::Parser;
        for bad in [
            &["--max-body-bytes", "0"][..],
            &["--max-body-bytes", "2000000000"],
            &["--max-inflight-body-bytes", "0"],
            &["--max-connections", "0"],
            &["--max-handshakes", "0"],
            &["--metrics-max-connections", "0"],
            &["--max-concurrent-reviews", "0"],
        ] {
            let parsed = crate::cli::Cli::try_parse_from(
                ["envlink", "serve", "--dev"].iter().chain(bad).copied(),
            );
            assert!(parsed.is_err(), "{bad:?} accepted");
        }
        for (bad, flag) in [
            (&["--request-timeout", "0"][..], "--request-timeout"),
            (&["--idle-timeout", "0ms"], "--idle-timeout"),
            (&["--max-staleness", "0"], "--max-staleness"),
            (
                &[
                    "--max-body-bytes",
                    "2048",
                    "--max-inflight-body-bytes",
                    "1024",
                ],
                "--max-inflight-body-bytes",
            ),
        ] {
            let error = serve_args(&[&["--dev"][..], bad].concat())
                .check()
                .expect_err("refused");
            assert!(error.to_string().contains(flag), "{bad:?}: {error}");
        }
        serve_args(&["--dev"])
            .check()
            .expect("the defaults are fine");
    }

    #[test]
    fn the_readme_flag_table_shows_the_defaults() {
        // The README's table repeats each default for the reader; this keeps it the one the
        // constants give.
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let command = crate::cli::Cli::command();
        let serve = command
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("a serve subcommand");
        let mut checked = 0;
        for arg in serve.get_arguments() {
            let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                continue;
            };
            let default = default.to_string_lossy();
            let row = readme
                .lines()
                .find(|line| {
                    line.starts_with(&format!("| `--{long} "))
                        || line.starts_with(&format!("| `--{long}`"))
                })
                .unwrap_or_else(|| panic!("README has no row for --{long}"));
            // Columns: flag, env, default, meaning (a `\|` inside a cell is a `|`).
            let row = row.replace("\\|", "/");
            let column = row.split('|').nth(3).unwrap_or("").trim();
            assert!(
                column.contains(&format!("`{default}`")),
                "README says {column:?} for --{long}; the default is {default}"
            );
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} defaults checked");
    }

    #[test]
    fn default_durations_read_back() {
        for default in [
            DEFAULT_TLS_RELOAD_INTERVAL,
            DEFAULT_CERT_EXPIRY_WARNING,
            DEFAULT_SHUTDOWN_GRACE,
            http::DEFAULT_REQUEST_TIMEOUT,
            server::DEFAULT_IDLE_TIMEOUT,
            Duration::from_millis(1500),
        ] {
            assert_eq!(parse_duration(&duration_text(default)), Ok(default));
        }
        assert_eq!(duration_text(server::DEFAULT_IDLE_TIMEOUT), "90s");
        assert_eq!(duration_text(DEFAULT_CERT_EXPIRY_WARNING), "7d");
        let args = serve_args(&["--dev"]);
        assert_eq!(args.tls_reload_interval, DEFAULT_TLS_RELOAD_INTERVAL);
        assert_eq!(args.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(args.idle_timeout, server::DEFAULT_IDLE_TIMEOUT);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        // Since humantime parses these flags, hours and days are durations too (they were
        // refused before); a unit humantime does not know still is not.
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration(" 7d "), Ok(DEFAULT_CERT_EXPIRY_WARNING));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
