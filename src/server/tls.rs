//! Serving certificates: loaded from PEM files and reloaded when they change (so
//! cert-manager rotations need no restart), or generated (a local CA and a serving
//! certificate for local mode and `konsumer certs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag}: file not found: {path}")]
    Missing { flag: &'static str, path: String },
    #[error("{flag}: {path}: {message}")]
    Invalid {
        flag: &'static str,
        path: String,
        message: String,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate validity: {0}")]
    Validity(String),
}

/// The process-wide rustls provider (ring). Clients built without an explicit
/// provider (reqwest) use it too. Installing twice is harmless.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Paths of a serving certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Largest certificate or key file read (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A PEM problem in words (the library's own text shows byte arrays).
fn pem_words(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a PEM block is not closed (no \"{}\" line): the file looks cut short or half-written",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a \"-----BEGIN\" line is malformed: {:?}",
            String::from_utf8_lossy(line)
        ),
        Error::Base64Decode(why) => format!("a PEM block is not valid base64 ({why})"),
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => "no PEM block of the expected kind in it".into(),
        other => other.to_string(),
    }
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TlsError::Missing {
            flag,
            path: path.display().to_string(),
        },
        _ => TlsError::Io {
            path: path.display().to_string(),
            source: e,
        },
    })?;
    if !meta.is_file() {
        return Err(TlsError::Invalid {
            flag,
            path: path.display().to_string(),
            message: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::Invalid {
            flag,
            path: path.display().to_string(),
            message: format!(
                "{} bytes is more than a PEM file holds (at most {MAX_PEM_BYTES})",
                meta.len()
            ),
        });
    }
    std::fs::read(path).map_err(io(path))
}

/// A certificate chain and its key, parsed and checked to belong together.
fn parse_pair(files: &CertFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let invalid = |flag: &'static str, path: &Path, message: String| TlsError::Invalid {
        flag,
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("--tls-cert", &files.cert, pem_words(&e)))?;
    if certs.is_empty() {
        return Err(invalid(
            "--tls-cert",
            &files.cert,
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid("--tls-key", &files.key, pem_words(&e)))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        invalid(
            "--tls-key",
            &files.key,
            format!("does not match the certificate: {e}"),
        )
    })
}

/// Reads a PEM certificate chain and private key.
pub fn load(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let cert = read_pem("--tls-cert", &files.cert)?;
    let key = read_pem("--tls-key", &files.key)?;
    parse_pair(files, &cert, &key)
}

/// When the first certificate of a PEM chain stops being valid (Unix seconds).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

fn not_after_of_file(path: &Path) -> Option<i64> {
    let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    not_after(&first)
}

/// How long before expiry a serving certificate is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What is served now, with the bytes it was parsed from (no `Debug`: it holds
/// the private key).
struct Served {
    key: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    not_after: Option<i64>,
}

/// Serves the newest good certificate. The files are compared by content, so a
/// rewrite that keeps modification times and the atomic `..data` symlink swap of
/// a mounted Secret are both seen; a pair that does not parse or match (half
/// written, say) is reported once and the current one keeps serving.
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Served>,
    /// The last pair refused, so that it is reported once, not every check.
    refused: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    last_expiry_warning: Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for ReloadingCert {
    // The key material stays out of every log and error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub fn new(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let cert_pem = read_pem("--tls-cert", &files.cert)?;
        let key_pem = read_pem("--tls-key", &files.key)?;
        let key = parse_pair(&files, &cert_pem, &key_pem)?;
        let not_after = key.cert.first().and_then(not_after);
        let this = Arc::new(ReloadingCert {
            files,
            current: RwLock::new(Served {
                key: Arc::new(key),
                cert_pem,
                key_pem,
                not_after,
            }),
            refused: Mutex::new(None),
            last_expiry_warning: Mutex::new(None),
        });
        this.warn_if_expiring(jiff::Timestamp::now().as_second());
        Ok(this)
    }

    /// Unix time the served certificate expires.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// Reloads when the files' content changed. Returns whether a new
    /// certificate is served; `Err` (once per bad content) when the new files
    /// cannot be used.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let cert_pem = read_pem("--tls-cert", &self.files.cert)?;
        let key_pem = read_pem("--tls-key", &self.files.key)?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.cert_pem == cert_pem && current.key_pem == key_pem {
                return Ok(false);
            }
        }
        let pair = (cert_pem, key_pem);
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.as_ref() == Some(&pair) {
            return Ok(false);
        }
        let key = match parse_pair(&self.files, &pair.0, &pair.1) {
            Ok(key) => key,
            Err(e) => {
                *refused = Some(pair);
                return Err(e);
            }
        };
        *refused = None;
        let not_after = key.cert.first().and_then(not_after);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Served {
            key: Arc::new(key),
            cert_pem: pair.0,
            key_pem: pair.1,
            not_after,
        };
        *self
            .last_expiry_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(true)
    }

    /// Logs (at most hourly) when the served certificate expires within
    /// [`EXPIRY_WARNING`] or has expired. Returns the seconds left.
    pub fn warn_if_expiring(&self, now: i64) -> Option<i64> {
        let left = self.not_after()? - now;
        if left > EXPIRY_WARNING.as_secs() as i64 {
            return Some(left);
        }
        let mut last = self
            .last_expiry_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
            return Some(left);
        }
        *last = Some(std::time::Instant::now());
        let cert = self.files.cert.display().to_string();
        if left <= 0 {
            tracing::error!(%cert, expired_seconds_ago = -left, "the serving certificate has EXPIRED: the apiserver refuses it; renew it (cert-manager, or `konsumer certs`) — it is reloaded without a restart");
        } else {
            tracing::warn!(%cert, days_left = left / 86_400, "the serving certificate expires soon; renew it (cert-manager, or `konsumer certs`) — it is reloaded without a restart");
        }
        Some(left)
    }

    /// Checks the files every `every` until `shutdown`, and keeps
    /// `konsumer_tls_cert_expiry_seconds` current.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        every: Duration,
        metrics: Arc<crate::telemetry::Metrics>,
        shutdown: CancellationToken,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %this.files.cert.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "new certificate files not used; the current certificate keeps serving")
                    }
                }
                if let Some(left) = this.warn_if_expiring(jiff::Timestamp::now().as_second()) {
                    metrics.tls_cert_expiry.set(left);
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

/// Builds the verifier of `--client-ca` from its PEM content.
fn client_verifier(path: &Path, pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        flag: "--client-ca",
        path: path.display().to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(pem_words(&e)))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CERTIFICATE block".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| invalid(e.to_string()))
}

/// The CAs of `--client-ca`, re-read like the serving certificate: a new
/// bundle (the apiserver's client certificate re-issued under a new CA) is
/// used for the next handshake without a restart; one that does not parse is
/// reported once and the current CAs keep verifying.
pub struct ReloadingClientCa {
    path: PathBuf,
    current: RwLock<(Vec<u8>, Arc<dyn ClientCertVerifier>)>,
    refused: Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for ReloadingClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClientCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReloadingClientCa {
    pub fn new(path: &Path) -> Result<Arc<Self>, TlsError> {
        let pem = read_pem("--client-ca", path)?;
        let verifier = client_verifier(path, &pem)?;
        Ok(Arc::new(ReloadingClientCa {
            path: path.to_path_buf(),
            current: RwLock::new((pem, verifier)),
            refused: Mutex::new(None),
        }))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Reloads when the file's content changed. Returns whether new CAs are
    /// used; `Err` (once per bad content) when the new file cannot be.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let pem = read_pem("--client-ca", &self.path)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == pem {
            return Ok(false);
        }
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.as_ref() == Some(&pem) {
            return Ok(false);
        }
        let verifier = match client_verifier(&self.path, &pem) {
            Ok(v) => v,
            Err(e) => {
                *refused = Some(pem);
                return Err(e);
            }
        };
        *refused = None;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (pem, verifier);
        Ok(true)
    }

    /// Checks the file every `every` until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(client_ca = %this.path.display(), "client CA bundle reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "new client CA bundle not used; the current CAs keep verifying")
                    }
                }
            }
        });
    }
}

impl ClientCertVerifier for ReloadingClientCa {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // The hints would borrow from a bundle that may be swapped; clients with a
    // single certificate (the apiserver) do not need them.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// rustls server config: HTTP/1.1 only (the apiserver does not use HTTP/2 for
/// webhooks), certificate from `resolver`; with `client_ca`, a client
/// certificate signed by one of its CAs is required (`--client-ca`).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<Arc<ReloadingClientCa>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A generated CA and a serving certificate signed by it (PEM).
pub struct Generated {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// The CA that signs a generated serving certificate.
pub enum CaSource<'a> {
    /// A new CA, valid for `days`.
    New { days: i64 },
    /// An existing CA (PEM certificate and key), kept so that clients that
    /// trust it keep working.
    Existing { cert_pem: &'a str, key_pem: &'a str },
}

/// Makes a CA and a serving certificate for `hosts` (DNS names or IP addresses),
/// valid for `validity_days` (at least 1).
pub fn generate(hosts: &[String], validity_days: i64) -> Result<Generated, TlsError> {
    generate_with(
        hosts,
        validity_days,
        CaSource::New {
            days: validity_days.saturating_add(1),
        },
    )
}

/// A serving certificate for `hosts`, valid for `validity_days`, signed by `ca`.
pub fn generate_with(
    hosts: &[String],
    validity_days: i64,
    ca: CaSource<'_>,
) -> Result<Generated, TlsError> {
    if !(1..=MAX_VALIDITY_DAYS).contains(&validity_days) {
        return Err(TlsError::Validity(format!(
            "a certificate valid for {validity_days} days would be {}; use 1 to {MAX_VALIDITY_DAYS} days",
            if validity_days < 1 {
                "expired when made"
            } else {
                "beyond what konsumer makes"
            }
        )));
    }
    let now = time_now();
    let (issuer, ca_pem, ca_key_pem) = match ca {
        CaSource::New { days } => {
            let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "konsumer CA");
            ca_params.distinguished_name = dn;
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            ca_params.not_before = now - rcgen_days(1);
            ca_params.not_after = now + rcgen_days(days.max(validity_days));
            let ca_key = KeyPair::generate()?;
            let ca_cert = ca_params.self_signed(&ca_key)?;
            let ca_pem = ca_cert.pem();
            let ca_key_pem = ca_key.serialize_pem();
            (Issuer::new(ca_params, ca_key), ca_pem, ca_key_pem)
        }
        CaSource::Existing { cert_pem, key_pem } => {
            let ca_key = KeyPair::from_pem(key_pem)?;
            (
                Issuer::from_ca_cert_pem(cert_pem, ca_key)?,
                cert_pem.to_string(),
                key_pem.to_string(),
            )
        }
    };

    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        hosts.first().cloned().unwrap_or_else(|| "konsumer".into()),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - rcgen_days(1);
    params.not_after = now + rcgen_days(validity_days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_cert: ca_pem,
        ca_key: ca_key_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Longest validity `konsumer certs` makes (10 years).
pub const MAX_VALIDITY_DAYS: i64 = 3650;

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rcgen_days(days: i64) -> time::Duration {
    time::Duration::days(days)
}

/// Writes `generated` as `ca.crt`, `ca.key`, `tls.crt`, `tls.key` in `dir` (keys 0600).
pub fn write(dir: &Path, generated: &Generated) -> Result<CertFiles, TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, content, private) in [
        ("ca.crt", &generated.ca_cert, false),
        ("ca.key", &generated.ca_key, true),
        ("tls.crt", &generated.cert, false),
        ("tls.key", &generated.key, true),
    ] {
        let path = dir.join(name);
        write_file(&path, content.as_bytes(), private)?;
    }
    Ok(CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    })
}

fn write_file(path: &Path, content: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path).map_err(io(path))?;
    f.write_all(content).map_err(io(path))
}

/// Local mode's serving certificate: a year.
const LOCAL_DAYS: i64 = 365;
/// Local mode's CA: ten years, so a renewed serving certificate is signed by the
/// CA clients already trust.
const LOCAL_CA_DAYS: i64 = 3650;
/// Local mode renews its serving certificate this long before it expires.
pub const LOCAL_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Local mode: the certificate under `dir`, generated on first start for
/// localhost, and made anew when it has expired or expires within
/// [`LOCAL_RENEW_BEFORE`] (signed by the same CA while that CA lasts). Returns the
/// files and whether they were just made.
pub fn ensure_local(dir: &Path) -> Result<(CertFiles, bool), TlsError> {
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let now = time_now().unix_timestamp();
    let renew_before = LOCAL_RENEW_BEFORE.as_secs() as i64;
    if files.cert.is_file() && files.key.is_file() {
        match not_after_of_file(&files.cert) {
            Some(end) if end - now > renew_before => return Ok((files, false)),
            Some(end) => tracing::warn!(
                cert = %files.cert.display(),
                days_left = (end - now) / 86_400,
                "the local serving certificate has expired or expires soon; making a new one"
            ),
            None => tracing::warn!(
                cert = %files.cert.display(),
                "the local serving certificate cannot be read; making a new one"
            ),
        }
    }
    let hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ca_cert = std::fs::read_to_string(dir.join("ca.crt")).ok();
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).ok();
    let ca_lasts = dir.join("ca.crt").is_file()
        && not_after_of_file(&dir.join("ca.crt"))
            .is_some_and(|end| end - now > LOCAL_DAYS * 86_400 + renew_before);
    let generated = match (&ca_cert, &ca_key) {
        (Some(cert_pem), Some(key_pem)) if ca_lasts => {
            match generate_with(&hosts, LOCAL_DAYS, CaSource::Existing { cert_pem, key_pem }) {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sign with the local CA; making a new CA (clients must trust the new ca.crt)");
                    generate_with(
                        &hosts,
                        LOCAL_DAYS,
                        CaSource::New {
                            days: LOCAL_CA_DAYS,
                        },
                    )?
                }
            }
        }
        (Some(_), _) => {
            tracing::warn!(ca = %dir.join("ca.crt").display(), "the local CA expires too soon to sign a new certificate; making a new CA (clients must trust the new ca.crt)");
            generate_with(
                &hosts,
                LOCAL_DAYS,
                CaSource::New {
                    days: LOCAL_CA_DAYS,
                },
            )?
        }
        _ => generate_with(
            &hosts,
            LOCAL_DAYS,
            CaSource::New {
                days: LOCAL_CA_DAYS,
            },
        )?,
    };
    Ok((write(dir, &generated)?, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_reload_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let (files, made) = ensure_local(dir.path()).unwrap();
        assert!(made);
        let (again, made) = ensure_local(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(files, again);
        let cert = ReloadingCert::new(files.clone()).unwrap();
        assert!(!cert.reload_if_changed().unwrap());

        std::thread::sleep(Duration::from_millis(20));
        let fresh = generate(&["localhost".into()], 1).unwrap();
        write(dir.path(), &fresh).unwrap();
        assert!(cert.reload_if_changed().unwrap());
    }

    #[test]
    fn missing_and_mismatched_files_say_which_flag() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("nope.crt"),
            key: dir.path().join("nope.key"),
        };
        let err = load(&files).unwrap_err().to_string();
        assert!(err.starts_with("--tls-cert: file not found"), "{err}");

        let a = generate(&["a".into()], 1).unwrap();
        let b = generate(&["b".into()], 1).unwrap();
        std::fs::write(&files.cert, a.cert).unwrap();
        std::fs::write(&files.key, b.key).unwrap();
        let err = load(&files).unwrap_err().to_string();
        assert!(
            err.contains("--tls-key") && err.contains("does not match"),
            "{err}"
        );
    }

    #[test]
    fn a_rewrite_that_keeps_the_modification_time_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = ensure_local(dir.path()).unwrap();
        let cert = ReloadingCert::new(files.clone()).unwrap();
        let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let (cert_time, key_time) = (stamp(&files.cert), stamp(&files.key));
        let fresh = generate(&["localhost".into()], 1).unwrap();
        write(dir.path(), &fresh).unwrap();
        for (path, time) in [(&files.cert, cert_time), (&files.key, key_time)] {
            let f = std::fs::File::options().write(true).open(path).unwrap();
            f.set_modified(time).unwrap();
        }
        assert_eq!(stamp(&files.cert), cert_time);
        assert!(cert.reload_if_changed().unwrap(), "same mtime, new content");
        assert!(
            !cert.reload_if_changed().unwrap(),
            "nothing new the second time"
        );
    }

    #[test]
    fn a_half_written_or_mismatched_pair_is_refused_once_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = ensure_local(dir.path()).unwrap();
        let cert = ReloadingCert::new(files.clone()).unwrap();
        let before = cert.not_after();
        let fresh = generate(&["localhost".into()], 2).unwrap();
        let half = &fresh.cert[..fresh.cert.len() / 2];
        std::fs::write(&files.cert, half).unwrap();
        let err = cert.reload_if_changed().unwrap_err().to_string();
        assert!(err.starts_with("--tls-cert:"), "{err}");
        assert!(err.contains("not closed"), "{err}");
        assert!(!err.contains("[45, 45"), "PEM markers in words: {err}");
        assert!(!cert.reload_if_changed().unwrap(), "reported once");

        let other = generate(&["localhost".into()], 2).unwrap();
        std::fs::write(&files.cert, &fresh.cert).unwrap();
        std::fs::write(&files.key, &other.key).unwrap();
        let err = cert.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(cert.not_after(), before, "the old pair keeps serving");

        std::fs::write(&files.key, &fresh.key).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_ne!(cert.not_after(), before);
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = ensure_local(dir.path()).unwrap();
        let cert = ReloadingCert::new(files).unwrap();
        let shown = format!("{cert:?}");
        assert!(shown.contains("tls.crt"), "{shown}");
        assert!(
            !shown.contains("45, 45") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn expired_certificates_are_not_made() {
        for days in [0, -5, MAX_VALIDITY_DAYS + 1] {
            let err = generate(&["a".into()], days).err().unwrap().to_string();
            assert!(err.contains("use 1 to 3650 days"), "{days}: {err}");
        }
    }

    #[test]
    fn an_expiring_local_certificate_is_renewed_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string()];
        let old = generate_with(
            &hosts,
            10,
            CaSource::New {
                days: LOCAL_CA_DAYS,
            },
        )
        .unwrap();
        let files = write(dir.path(), &old).unwrap();
        let ca_before = std::fs::read(dir.path().join("ca.crt")).unwrap();
        let (again, made) = ensure_local(dir.path()).unwrap();
        assert!(made, "10 days left is inside the renewal window");
        assert_eq!(again, files);
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca_before);
        let left = not_after_of_file(&files.cert).unwrap() - jiff::Timestamp::now().as_second();
        assert!(left > 300 * 86_400, "{left}");
        let (_, made) = ensure_local(dir.path()).unwrap();
        assert!(!made);
    }

    #[test]
    fn the_time_left_is_reported_and_expired_certificates_count_negative() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(&["localhost".into()], 3).unwrap();
        let files = write(dir.path(), &g).unwrap();
        let cert = ReloadingCert::new(files).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let left = cert.warn_if_expiring(now).unwrap();
        assert!((2 * 86_400..=3 * 86_400 + 60).contains(&left), "{left}");
        let later = cert.warn_if_expiring(now + 4 * 86_400).unwrap();
        assert!(later < 0, "{later}");
    }
}
