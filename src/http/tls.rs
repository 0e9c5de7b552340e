//! TLS: certificate loading, a resolver whose key can be swapped while serving, the periodic
//! reload, and the self-signed certificates of `--dev`.
//!
//! Kubernetes updates a mounted Secret by writing a new directory and swapping the `..data`
//! symlink; file-watch APIs on the visible paths miss that, so envlink re-reads both files
//! every `--tls-reload-interval` and compares bytes. A new pair that does not load (not PEM,
//! key does not match, half-written) is refused and the old certificate stays in use.
//!
//! The served certificate's `notAfter` is kept for `envlink_tls_certificate_expiry_timestamp_seconds`,
//! and the reloader's loop logs a warning (at most daily) once less than
//! `--cert-expiry-warning` is left: an expired certificate under `failurePolicy: Fail` stops
//! every Pod creation in the cluster, so the operator should hear about it days before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// aws-lc-rs, rustls's default provider: its AES-GCM uses AVX-512 where the CPU has it
/// (ring's stops at AVX2), which took 1–2 µs off each S1 answer under load (BENCHMARKS.md,
/// "aws-lc-rs, fewer allocations, and the kernel's share"), and it offers the post-quantum
/// X25519MLKEM768 key exchange first.
fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
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

/// The server configuration: aws-lc-rs, TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`.
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

/// Reload counts (`envlink_tls_reloads_total`) and the served certificate's expiry
/// (`envlink_tls_certificate_expiry_timestamp_seconds`), read at scrape time.
#[derive(Debug)]
pub struct ReloadStats {
    successes: AtomicU64,
    failures: AtomicU64,
    /// `notAfter` of the served leaf certificate, Unix seconds; [`NOT_AFTER_UNKNOWN`] before
    /// the first load or when the leaf did not parse.
    not_after: AtomicI64,
}

/// No certificate expiry known (nothing loaded yet, or the leaf did not parse).
const NOT_AFTER_UNKNOWN: i64 = i64::MIN;

impl Default for ReloadStats {
    fn default() -> Self {
        Self {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            not_after: AtomicI64::new(NOT_AFTER_UNKNOWN),
        }
    }
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

    /// Remembers the expiry of `key`, the certificate now being served. Called on the first
    /// load and on every successful reload, so the gauge always describes what clients get.
    pub fn observe_certificate(&self, key: &CertifiedKey) {
        let not_after = match leaf_not_after(key) {
            Ok(t) => t,
            Err(error) => {
                // rustls accepted the certificate, so this does not stop serving; without a
                // known expiry the gauge is left out rather than wrong.
                tracing::warn!(%error, "cannot read the expiry of the TLS certificate");
                NOT_AFTER_UNKNOWN
            }
        };
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    /// `notAfter` of the served certificate as Unix seconds, when known.
    pub fn not_after(&self) -> Option<i64> {
        let t = self.not_after.load(Ordering::Relaxed);
        (t != NOT_AFTER_UNKNOWN).then_some(t)
    }
}

/// `notAfter` of the leaf (the first certificate of the chain, the one rustls presents) as
/// Unix seconds.
pub fn leaf_not_after(key: &CertifiedKey) -> Result<i64, String> {
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| "the certificate chain is empty".to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse as X.509: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// How often the expiry warning is repeated for the same certificate: daily, so it reaches
/// whoever reads yesterday's logs without drowning them (the files are checked every 10 s).
pub const EXPIRY_WARNING_REPEAT: Duration = Duration::from_secs(24 * 60 * 60);

/// Logs a warning when the served certificate has less than a threshold left: the first
/// time it is seen within the threshold, then every [`EXPIRY_WARNING_REPEAT`]; a different
/// certificate (another `notAfter`) is warned about at once.
#[derive(Debug)]
pub struct ExpiryWarning {
    threshold: Duration,
    /// The `notAfter` last warned about, and when (monotonic, so a clock step does not
    /// silence or repeat the warning).
    last: Option<(i64, Instant)>,
}

impl ExpiryWarning {
    /// Warns when less than `threshold` is left.
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            last: None,
        }
    }

    /// Checks `not_after` against the current time; true when it logged a warning.
    pub fn check(&mut self, not_after: Option<i64>) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.check_at(not_after, now, Instant::now())
    }

    /// [`check`](Self::check) at a given wall-clock time (Unix seconds) and monotonic
    /// instant.
    pub fn check_at(&mut self, not_after: Option<i64>, now_unix: i64, now: Instant) -> bool {
        let Some(not_after) = not_after else {
            return false;
        };
        let left = not_after.saturating_sub(now_unix);
        let threshold = i64::try_from(self.threshold.as_secs()).unwrap_or(i64::MAX);
        if left >= threshold {
            return false;
        }
        if let Some((seen, at)) = self.last
            && seen == not_after
            && now.saturating_duration_since(at) < EXPIRY_WARNING_REPEAT
        {
            return false;
        }
        self.last = Some((not_after, now));
        let expires = rfc3339(not_after);
        let amount = humantime::format_duration(Duration::from_secs(left.unsigned_abs()));
        if left > 0 {
            tracing::warn!(
                not_after = %expires,
                left = %amount,
                "TLS certificate expires soon: renew it (the API server refuses an expired \
                 certificate, and with failurePolicy Fail no Pod can be created)"
            );
        } else {
            tracing::error!(
                not_after = %expires,
                expired_for = %amount,
                "TLS certificate has expired: the API server refuses it; renew it now"
            );
        }
        true
    }
}

/// `notAfter` as RFC 3339 for the log; as a number outside what RFC 3339 (and X.509) can
/// express, where humantime's formatter would fail.
fn rfc3339(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) if secs < 253_402_300_800 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        _ => format!("{unix} (Unix time)"),
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
    /// The expiry warning, checked at every interval.
    expiry: Option<ExpiryWarning>,
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
            expiry: None,
        }
    }

    /// Also warns (at most daily) when the served certificate has less than `threshold`
    /// left; checked at every interval, so a certificate that is never renewed is noticed
    /// as time passes, not only when the files change.
    pub fn with_expiry_warning(mut self, threshold: Duration) -> Self {
        self.expiry = Some(ExpiryWarning::new(threshold));
        self
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
                self.stats.observe_certificate(&key);
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

    fn check_expiry(&mut self) {
        if let Some(expiry) = &mut self.expiry {
            expiry.check(self.stats.not_after());
        }
    }

    /// Checks every `interval`, forever.
    pub async fn run(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the files were just loaded, but a certificate that is
        // already close to expiry is worth a warning right at startup.
        ticker.tick().await;
        self.check_expiry();
        loop {
            ticker.tick().await;
            self.check().await;
            self.check_expiry();
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
        assert_eq!(
            groups,
            ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
        );
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

    /// A self-signed certificate (and its key) valid until `not_after`.
    fn certificate_until(not_after: (i32, u8, u8)) -> CertifiedKey {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        certified_key_from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            "c",
            "k",
        )
        .expect("key")
    }

    #[test]
    fn the_expiry_is_the_leafs_not_after() {
        // 2030-01-02T00:00:00Z
        let key = certificate_until((2030, 1, 2));
        assert_eq!(leaf_not_after(&key), Ok(1_893_542_400));
        let stats = ReloadStats::default();
        assert_eq!(stats.not_after(), None, "unknown before the first load");
        stats.observe_certificate(&key);
        assert_eq!(stats.not_after(), Some(1_893_542_400));
        // The dev certificate's leaf is the server certificate, not the CA.
        let dev = generate_dev_certificates().expect("dev certs");
        let dev_key =
            certified_key_from_pem(dev.cert_pem.as_bytes(), dev.key_pem.as_bytes(), "c", "k")
                .expect("key");
        stats.observe_certificate(&dev_key);
        assert!(stats.not_after().is_some_and(|t| t > 1_893_542_400));
    }

    #[test]
    fn expiry_warning_is_daily_and_new_certificates_warn_at_once() {
        const DAY: i64 = 24 * 60 * 60;
        let not_after = 1_893_542_400;
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = ExpiryWarning::new(Duration::from_secs(7 * 24 * 60 * 60));
        assert!(!w.check_at(None, not_after, t0), "no certificate known");
        assert!(
            !w.check_at(Some(not_after), not_after - 8 * DAY, t0),
            "8 days left: quiet"
        );
        assert!(
            !w.check_at(Some(not_after), not_after - 7 * DAY, t0),
            "exactly the threshold left: quiet"
        );
        assert!(w.check_at(Some(not_after), not_after - 7 * DAY + 1, at(1)));
        // Every 10 s reload for the rest of the day: no repeat.
        for s in (11..24 * 60 * 60).step_by(10) {
            assert!(
                !w.check_at(Some(not_after), not_after - 7 * DAY + 1 + s as i64, at(s)),
                "repeated after {s}s"
            );
        }
        assert!(w.check_at(Some(not_after), not_after - 6 * DAY, at(24 * 60 * 60 + 1)));
        // A renewal that is also about to expire is warned about at once.
        assert!(w.check_at(
            Some(not_after + DAY / 2),
            not_after - 6 * DAY,
            at(24 * 60 * 60 + 2)
        ));
        // A renewal that is not: quiet.
        assert!(!w.check_at(
            Some(not_after + 90 * DAY),
            not_after - 6 * DAY,
            at(24 * 60 * 60 + 3)
        ));
        // Expired: still reported (daily), never panics on the negative remainder.
        let mut w = ExpiryWarning::new(Duration::from_secs(60));
        assert!(w.check_at(Some(not_after), not_after + 5, t0));
        assert!(!w.check_at(Some(not_after), not_after + 15, at(10)));
        assert!(w.check_at(Some(not_after), i64::MAX, at(2 * 24 * 60 * 60)));
        assert!(ExpiryWarning::new(Duration::MAX).check_at(Some(i64::MIN + 1), 0, t0));
        assert!(ExpiryWarning::new(Duration::MAX).check_at(Some(i64::MAX - 1), i64::MAX, t0));
        assert_eq!(rfc3339(1_893_542_400), "2030-01-02T00:00:00Z");
        assert_eq!(rfc3339(-1), "-1 (Unix time)");
        assert_eq!(rfc3339(253_402_300_800), "253402300800 (Unix time)");
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
