//! `envlink serve`: the webhook server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

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

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("envlink serve is not built yet")
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
