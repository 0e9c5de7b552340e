//! The Kubernetes client of the one-shot commands (`envlink mutate --kubeconfig`, `envlink
//! audit`): a kubeconfig file, else in-cluster configuration or `$KUBECONFIG`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Longest one page of a list may take: a list is not a watch, so a silent connection is a
/// failure, not a quiet cluster.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the cluster of `kubeconfig` (or the inferred one), for paged lists.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    // One process-wide TLS provider; an error only means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    client_with(kubeconfig, READ_TIMEOUT, "give --kubeconfig").await
}

/// A client for the cluster of `kubeconfig` (else in-cluster configuration or `$KUBECONFIG`)
/// whose reads time out after `read_timeout`; `hint` ends the message when there is no
/// configuration at all.
pub async fn client_with(
    kubeconfig: Option<&Path>,
    read_timeout: Duration,
    hint: &str,
) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.with_context(|| {
            format!("no Kubernetes configuration (neither in-cluster nor $KUBECONFIG); {hint}")
        })?,
    };
    config.read_timeout = Some(read_timeout);
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// A single-threaded runtime for a command that makes a few API calls and exits.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
