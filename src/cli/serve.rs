//! `envlink serve`: the webhook server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;

use crate::catalog::configmaps::{self, ConfigMapIndex, ConfigMapSync};
use crate::catalog::watch::{self, CatalogSync, WatchCounters};
use crate::catalog::{Catalog, file};
use crate::config::Policy;
use crate::http::metrics::{self, MetricsState};
use crate::http::server::{self, Drained, ServerOptions};
use crate::http::tls::{self, CertReloader, CertResolver, ReloadStats};
use crate::http::{self, AppState, Limits, Metrics};

/// Arguments of `envlink serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTPS address for the admission endpoints.
    #[arg(
        long,
        value_name = "ADDR",
        env = "ENVLINK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub listen: SocketAddr,
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
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Try-it-out mode: a self-signed certificate and the embedded static Service catalog
    /// (unless --services-file or --kubeconfig is given).
    #[arg(long)]
    pub dev: bool,
    /// With --dev: where to write the CA bundle that verifies the self-signed certificate.
    #[arg(long, value_name = "FILE", default_value = "envlink-dev-ca.pem")]
    pub dev_ca_out: PathBuf,
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
    /// Plain-HTTP address for GET /metrics (Prometheus).
    #[arg(
        long,
        value_name = "ADDR",
        env = "ENVLINK_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, env = "ENVLINK_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Time limit for answering one review; keep it below the webhook's timeoutSeconds.
    #[arg(long, value_name = "DURATION", default_value = "8s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest accepted request body.
    #[arg(long, value_name = "BYTES", default_value_t = 7 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// On SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Most HTTPS connections open at once; at the limit new ones wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_positive)]
    pub max_connections: usize,
    /// When the Service watch has been disconnected for longer than this, /readyz answers
    /// 503. Default: off (the last known catalog keeps serving; see the README).
    #[arg(long, value_name = "DURATION", env = "ENVLINK_MAX_STALENESS", value_parser = parse_duration)]
    pub max_staleness: Option<Duration>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses `500ms`, `10s`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 500ms, 10s, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

/// A whole number of at least 1.
fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// Runs the server until SIGTERM or Ctrl-C, then drains in-flight reviews (up to
/// `--shutdown-grace`) and returns.
///
/// Expects the tracing subscriber and the rustls crypto provider to be installed (main.rs).
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.request_timeout.is_zero() {
        anyhow::bail!("--request-timeout must be more than 0");
    }
    if args.tls_reload_interval.is_zero() {
        anyhow::bail!("--tls-reload-interval must be more than 0");
    }
    let policy = Arc::new(match &args.config {
        Some(path) => Policy::from_file(path)?,
        None => Policy::default(),
    });

    // Listen first: a port in use is the most common startup error, and nothing else
    // (certificate generation, the cluster connection) needs to happen before it is known.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--metrics-listen)",
                args.metrics_listen
            )
        })?;
    let metrics_local = metrics_listener
        .local_addr()
        .context("the metrics listener has no address")?;
    let local = listener
        .local_addr()
        .context("the HTTPS listener has no address")?;

    let tls_stats = Arc::new(ReloadStats::default());
    let (resolver, reloader) = tls_setup(&args, &tls_stats, local).await?;
    let tls_config = Arc::new(tls::server_config(resolver)?);

    let watch_counters = Arc::new(WatchCounters::default());
    let catalog = catalog_setup(&args, &policy, &watch_counters).await?;

    let metrics = Arc::new(Metrics::new(
        catalog.clone(),
        watch_counters.clone(),
        tls_stats,
    ));
    let policy_checks_config_maps = policy.config.reserved.check_config_maps;
    let state = AppState::new(catalog.clone(), policy, metrics.clone())
        .with_limits(Limits {
            max_body_bytes: args.max_body_bytes,
            request_timeout: args.request_timeout,
        })
        .with_watch(watch_counters, args.max_staleness);
    let state = if !policy_checks_config_maps {
        state
    } else if state.watch.freshness() == watch::Freshness::Static {
        tracing::warn!(
            "reserved.checkConfigMaps needs a cluster: with a static Service catalog, keys \
             brought in through envFrom ConfigMaps are not checked"
        );
        state
    } else {
        let index = Arc::new(ConfigMapIndex::new());
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        tokio::spawn(configmaps::run(client, ConfigMapSync::new(index.clone())));
        tracing::info!("watching ConfigMap keys for the envFrom check; ready after the first list");
        state.with_config_maps(index)
    };
    if let Some(max) = args.max_staleness {
        if state.watch.freshness() == watch::Freshness::Static {
            tracing::warn!("--max-staleness has no effect on a static Service catalog");
        } else {
            tracing::info!(max_staleness = ?max, "/readyz fails once the Service watch has been down longer");
        }
    }

    let signal = shutdown_signal()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let name = signal.await;
        tracing::info!(signal = name, "shutdown requested");
        let _ = stop_tx.send(true);
    });

    let metrics_app = metrics::router(MetricsState {
        metrics,
        readiness: state.readiness(),
    });
    let metrics_task = tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    let reload_task = reloader.map(|r| tokio::spawn(r.run(args.tls_reload_interval)));

    tracing::info!(
        listen = %local,
        metrics = %metrics_local,
        "envlink serving: POST /mutate, POST /validate, GET /healthz, GET /readyz"
    );
    let options = ServerOptions {
        handshake_timeout: args.request_timeout,
        header_read_timeout: args.request_timeout,
        shutdown_grace: args.shutdown_grace,
        max_connections: args.max_connections,
    };
    let mut stopped = stop_rx;
    let drained = server::serve_tls(
        listener,
        tls_config,
        http::router(state),
        options,
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    )
    .await;
    match drained {
        Drained::Clean => tracing::info!("all connections finished; exiting"),
        Drained::TimedOut => tracing::warn!(
            grace = ?args.shutdown_grace,
            "shutdown grace period over; closing the remaining connections"
        ),
    }
    metrics_task.abort();
    if let Some(task) = reload_task {
        task.abort();
    }
    Ok(())
}

/// The certificate resolver, and the reloader when the certificate comes from files.
async fn tls_setup(
    args: &ServeArgs,
    stats: &Arc<ReloadStats>,
    local: SocketAddr,
) -> anyhow::Result<(Arc<CertResolver>, Option<CertReloader>)> {
    if args.dev {
        let dev = tls::generate_dev_certificates()?;
        std::fs::write(&args.dev_ca_out, &dev.ca_pem).with_context(|| {
            format!(
                "cannot write the dev CA to {} (--dev-ca-out)",
                args.dev_ca_out.display()
            )
        })?;
        let key = tls::certified_key_from_pem(
            dev.cert_pem.as_bytes(),
            dev.key_pem.as_bytes(),
            "dev certificate",
            "dev key",
        )?;
        let ca = args.dev_ca_out.display().to_string();
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
            eprintln!("\nenvlink --dev: try it with\n\n    {curl}\n");
        }
        return Ok((Arc::new(CertResolver::new(key)), None));
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
    let resolver = Arc::new(CertResolver::new(certified));
    let reloader = CertReloader::new(
        cert.clone(),
        key.clone(),
        resolver.clone(),
        stats.clone(),
        pair,
    );
    tracing::info!(
        cert = %cert.display(),
        key = %key.display(),
        every = ?args.tls_reload_interval,
        "TLS certificate loaded; re-read periodically"
    );
    Ok((resolver, Some(reloader)))
}

/// The catalog: a static file, the embedded one (`--dev`), or a watch of the cluster.
async fn catalog_setup(
    args: &ServeArgs,
    policy: &Policy,
    counters: &Arc<WatchCounters>,
) -> anyhow::Result<Arc<Catalog>> {
    let static_links = match (&args.services_file, args.dev && args.kubeconfig.is_none()) {
        (Some(path), _) => Some((
            file::load_services(&path.to_string_lossy(), watch::DEFAULT_NAMESPACE)?,
            path.display().to_string(),
        )),
        (None, true) => Some((
            file::parse_services(
                file::EMBEDDED_CATALOG,
                "the embedded catalog",
                watch::DEFAULT_NAMESPACE,
            )?,
            "the embedded catalog".to_string(),
        )),
        (None, false) => None,
    };
    if let Some((links, origin)) = static_links {
        let (catalog, errors) = Catalog::from_links(links);
        if let Some(error) = errors.first() {
            anyhow::bail!("{origin}: {error}");
        }
        let stats = catalog.stats();
        tracing::info!(
            source = %origin,
            services = stats.services,
            namespaces = stats.namespaces,
            "static Service catalog loaded: ready"
        );
        return Ok(Arc::new(catalog));
    }
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let catalog = Arc::new(Catalog::new());
    let scopes = watch::scopes(&policy.config.services.namespaces);
    tracing::info!(
        ?scopes,
        "watching Services; ready after the first full list"
    );
    let sync = CatalogSync::new(catalog.clone(), scopes, counters.clone());
    tokio::spawn(watch::run(client, sync));
    Ok(catalog)
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration (neither in-cluster nor $KUBECONFIG); give \
             --kubeconfig, or --services-file for a static catalog",
        )?,
    };
    // Without a read timeout a watch whose connection died silently would hang for good
    // (see `watch::WATCH_READ_TIMEOUT`).
    config.read_timeout = Some(watch::WATCH_READ_TIMEOUT);
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
