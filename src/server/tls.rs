//! Serving certificates: loaded from PEM files and reloaded when they change (so
//! cert-manager rotations need no restart), or generated (a local CA and a serving
//! certificate for local mode and `konsumer certs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// Reads a PEM certificate chain and private key.
pub fn load(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    for (flag, path) in [("--tls-cert", &files.cert), ("--tls-key", &files.key)] {
        if !path.is_file() {
            return Err(TlsError::Missing {
                flag,
                path: path.display().to_string(),
            });
        }
    }
    let invalid = |flag: &'static str, path: &Path, message: String| TlsError::Invalid {
        flag,
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid("--tls-cert", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(
            "--tls-cert",
            &files.cert,
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| invalid("--tls-key", &files.key, e.to_string()))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        invalid(
            "--tls-key",
            &files.key,
            format!("does not match the certificate: {e}"),
        )
    })
}

/// Serves the newest good certificate; keeps the old one when a reload fails.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(files: &CertFiles) -> Option<SystemTime> {
    let c = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .ok()?;
    let k = std::fs::metadata(&files.key)
        .and_then(|m| m.modified())
        .ok()?;
    Some(c.max(k))
}

impl ReloadingCert {
    pub fn new(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = modified(&files);
        let key = load(&files)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new((Arc::new(key), stamp)),
        }))
    }

    /// Reloads when the files changed. Returns whether a new certificate is served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = modified(&self.files);
        let unchanged = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            stamp == current.1
        };
        if unchanged {
            return Ok(false);
        }
        let key = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(key), stamp);
        Ok(true)
    }

    /// Checks the files every `every` until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
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
                        tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one")
                    }
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
                .0
                .clone(),
        )
    }
}

/// rustls server config: HTTP/1.1 only (the apiserver does not use HTTP/2 for
/// webhooks), certificate from `resolver`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
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

/// Makes a CA and a serving certificate for `hosts` (DNS names or IP addresses).
pub fn generate(hosts: &[String], validity_days: i64) -> Result<Generated, TlsError> {
    let now = time_now();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "konsumer CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - rcgen_days(1);
    ca_params.not_after = now + rcgen_days(validity_days + 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

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

/// Local mode: the certificate under `dir`, generated on first start for
/// localhost. Returns the files and whether they were just made.
pub fn ensure_local(dir: &Path) -> Result<(CertFiles, bool), TlsError> {
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    if files.cert.is_file() && files.key.is_file() {
        return Ok((files, false));
    }
    let hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = generate(&hosts, 365)?;
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
}
