//! TLS: certificate loading, a resolver whose key can be swapped while serving, the periodic
//! reload, and the self-signed certificates of `--dev`.
//!
//! Kubernetes updates a mounted Secret by writing a new directory and swapping the `..data`
//! symlink; file-watch APIs on the visible paths miss that, so envlink re-reads both files
//! every `--tls-reload-interval` and compares bytes. A new pair that does not load (not PEM,
//! key does not match, half-written) is refused and the old certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// DNS names and addresses of the `--dev` certificate.
pub const DEV_SUBJECT_ALT_NAMES: [&str; 5] = [
    "localhost",
    "127.0.0.1",
    "::1",
    "envlink",
    "envlink.default.svc",
];

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    // The I/O error is part of the message (not a `source`), so that `{}` in a log line and
    // `{:#}` at the command line both say it exactly once.
    #[error("cannot read {what} {path}: {error}")]
    Read {
        /// `TLS certificate` or `TLS key`.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate found ({message})")]
    Certificate {
        /// The file.
        path: String,
        /// What the PEM reader said.
        message: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no usable PEM private key found ({message})")]
    Key {
        /// The file.
        path: String,
        /// What the PEM reader or rustls said.
        message: String,
    },
    /// The key does not belong to the certificate, or the certificate does not parse.
    #[error("the key in {key} does not match the certificate in {cert}: {message}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The `--dev` certificates could not be generated.
    #[error("cannot generate the --dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Builds a certified key from PEM text; `cert_origin` and `key_origin` name the sources in
/// errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_origin: &str,
    key_origin: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert_origin.into(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_origin.into(),
            message: "the file has no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_origin.into(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::General(message) => TlsError::Key {
            path: key_origin.into(),
            message,
        },
        other => TlsError::Mismatch {
            cert: cert_origin.into(),
            key: key_origin.into(),
            message: other.to_string(),
        },
    })
}

/// Reads both files (bytes, for change detection), as one consistent pair.
///
/// The two files are two reads: a Secret update (the `..data` swap) can fall between them
/// and give the old certificate with the new key, which does not load and would be reported
/// as a failed reload although nothing is wrong. So the certificate is read again after the
/// key; when it changed meanwhile, the pair is read again (a few times at most).
pub async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let mut pair = read_pair_once(cert, key).await?;
    for _ in 0..3 {
        let again = read_file("TLS certificate", cert).await?;
        if again == pair.0 {
            break;
        }
        pair = read_pair_once(cert, key).await?;
    }
    Ok(pair)
}

async fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path).await.map_err(|error| TlsError::Read {
        what,
        path: path.display().to_string(),
        error,
    })
}

async fn read_pair_once(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    Ok((
        read_file("TLS certificate", cert).await?,
        read_file("TLS key", key).await?,
    ))
}

/// Serves whatever certified key it currently holds; swapped atomically on reload, so a
/// handshake never waits for a reload and never sees half of one.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The key in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server configuration: ring, TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The API server's webhook client uses HTTP/2 when offered; curl and load tools often
    // speak HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Reload counts, for `envlink_tls_reloads_total`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    successes: AtomicU64,
    failures: AtomicU64,
}

impl ReloadStats {
    /// Counts one reload.
    pub fn record(&self, success: bool) {
        let counter = if success {
            &self.successes
        } else {
            &self.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Successful reloads.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Failed reloads (the old certificate stayed in use).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// What one check of the files found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Same bytes as last time (or the same failure as last time).
    Unchanged,
    /// A new certificate is in use.
    Reloaded,
    /// The files changed but could not be used; the old certificate stays.
    Failed,
}

/// Re-reads the certificate and key files and swaps a changed, valid pair in.
#[derive(Debug)]
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    stats: Arc<ReloadStats>,
    /// The bytes last looked at (loaded or refused), so a bad pair is reported once, not
    /// at every interval.
    seen: (Vec<u8>, Vec<u8>),
    /// Whether the last read failed (reported once until it recovers).
    read_failing: bool,
}

impl CertReloader {
    /// A reloader for the files whose current contents (`loaded`) the resolver serves.
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        resolver: Arc<CertResolver>,
        stats: Arc<ReloadStats>,
        loaded: (Vec<u8>, Vec<u8>),
    ) -> Self {
        Self {
            cert,
            key,
            resolver,
            stats,
            seen: loaded,
            read_failing: false,
        }
    }

    /// Checks the files once.
    pub async fn check(&mut self) -> ReloadOutcome {
        let pair = match read_pair(&self.cert, &self.key).await {
            Ok(pair) => pair,
            Err(error) => {
                if self.read_failing {
                    return ReloadOutcome::Unchanged;
                }
                self.read_failing = true;
                self.stats.record(false);
                tracing::error!(%error, "TLS certificate reload failed; keeping the current one");
                return ReloadOutcome::Failed;
            }
        };
        self.read_failing = false;
        if pair == self.seen {
            return ReloadOutcome::Unchanged;
        }
        let outcome = certified_key_from_pem(
            &pair.0,
            &pair.1,
            &self.cert.display().to_string(),
            &self.key.display().to_string(),
        );
        self.seen = pair;
        match outcome {
            Ok(key) => {
                self.resolver.set(key);
                self.stats.record(true);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                self.stats.record(false);
                tracing::error!(%error, "TLS certificate reload failed; keeping the current one");
                ReloadOutcome::Failed
            }
        }
    }

    /// Checks every `interval`, forever.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the files were just loaded.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            self.check().await;
        }
    }
}

/// The `--dev` certificates: a throw-away CA and a server certificate it signed.
#[derive(Debug)]
pub struct DevCertificates {
    /// The CA certificate (PEM): what clients trust (`curl --cacert`, `caBundle`).
    pub ca_pem: String,
    /// The server certificate chain (PEM).
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
}

/// Generates a CA and a server certificate for [`DEV_SUBJECT_ALT_NAMES`].
pub fn generate_dev_certificates() -> Result<DevCertificates, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "envlink dev CA");
    ca_params.distinguished_name = ca_name;
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let names: Vec<String> = DEV_SUBJECT_ALT_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut params = CertificateParams::new(names)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "envlink");
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(DevCertificates {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SECURITY.md lists these; change both together.
    #[test]
    fn only_tls12_and_tls13_with_the_documented_suites() {
        let certs = generate_dev_certificates().expect("dev certs");
        let key = certified_key_from_pem(
            certs.cert_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            "c",
            "k",
        )
        .expect("key");
        let config = server_config(Arc::new(CertResolver::new(key))).expect("config");
        let suites: Vec<String> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
        let groups: Vec<String> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp256r1", "secp384r1"]);
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        for suite in &config.crypto_provider().cipher_suites {
            assert!(matches!(
                suite.version().version,
                rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
            ));
        }
    }

    #[test]
    fn dev_certificates_load_and_mismatches_are_refused() {
        let a = generate_dev_certificates().expect("dev certs");
        let b = generate_dev_certificates().expect("dev certs");
        certified_key_from_pem(
            a.cert_pem.as_bytes(),
            a.key_pem.as_bytes(),
            "a.crt",
            "a.key",
        )
        .expect("matching pair");
        let err = certified_key_from_pem(
            a.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            "a.crt",
            "b.key",
        )
        .expect_err("mismatch")
        .to_string();
        assert!(err.contains("b.key") && err.contains("a.crt"), "{err}");
        let err = certified_key_from_pem(b"nothing", a.key_pem.as_bytes(), "x.crt", "a.key")
            .expect_err("no cert")
            .to_string();
        assert!(err.contains("x.crt"), "{err}");
        let err = certified_key_from_pem(a.cert_pem.as_bytes(), b"", "a.crt", "y.key")
            .expect_err("no key")
            .to_string();
        assert!(err.contains("y.key"), "{err}");
    }
}
