//! Certificate rotation through a real TLS listener: a Secret-style mount whose
//! `..data` symlink is swapped atomically, a half-written and a mismatched pair
//! that must be ignored, and `--client-ca` with and without a client certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use konsumer::config::TlsSource;
use konsumer::server::tls::{self, CertFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::support::*;

/// Writes `generated` into `mount/<version>/` and points `mount/..data` at it
/// with an atomic rename, as the kubelet does for a Secret volume.
fn publish(mount: &Path, version: &str, cert: &str, key: &str) {
    let dir = mount.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let tmp = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = mount.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

fn roots(cas: &[&str]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    roots
}

/// The leaf certificate a new TLS connection to `port` is served.
async fn served_leaf(port: u16, cas: &[&str]) -> Vec<u8> {
    tls::provider();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(cas))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn new_connections_see_a_rotated_certificate_and_never_a_broken_one() {
    let mount = tempfile::tempdir().unwrap();
    let hosts = vec!["localhost".to_string()];
    let a = tls::generate(&hosts, 30).unwrap();
    publish(mount.path(), "..2026_a", &a.cert, &a.key);
    let files = CertFiles {
        cert: mount.path().join("tls.crt"),
        key: mount.path().join("tls.key"),
    };
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |c| {
        c.tls = TlsSource::Files(files);
        c.tls_reload_every = Duration::from_millis(100);
    })
    .await;
    let port = s.running.as_ref().unwrap().webhook_addr.port();
    let b = tls::generate(&hosts, 30).unwrap();
    let cas = [a.ca_cert.as_str(), b.ca_cert.as_str()];
    assert_eq!(served_leaf(port, &cas).await, der(&a.cert));

    publish(mount.path(), "..2026_b", &b.cert, &b.key);
    let started = Instant::now();
    while served_leaf(port, &cas).await != der(&b.cert) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the swapped certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Half-written, then a certificate with another pair's key: both ignored.
    let c = tls::generate(&hosts, 30).unwrap();
    let d = tls::generate(&hosts, 30).unwrap();
    publish(
        mount.path(),
        "..2026_c",
        &c.cert[..c.cert.len() / 2],
        &c.key,
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_leaf(port, &cas).await, der(&b.cert));
    publish(mount.path(), "..2026_d", &c.cert, &d.key);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        served_leaf(port, &cas).await,
        der(&b.cert),
        "the old pair keeps serving"
    );
    s.stop().await;
}

struct ClientPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A client CA and a client certificate (clientAuth) signed by it.
fn client_pki() -> ClientPki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "apiserver client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    ClientPki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Sends a GET for /mutate/workloads and returns the status line, or the error
/// that ended the exchange.
async fn exchange(
    port: u16,
    server_ca: &str,
    client: Option<&ClientPki>,
) -> Result<String, String> {
    tls::provider();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(&[server_ca]));
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pki) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /mutate/workloads HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    match text.lines().next() {
        Some(line) if line.starts_with("HTTP/1.1") => Ok(line.to_string()),
        _ => Err(format!("no HTTP answer: {text:?}")),
    }
}

#[tokio::test]
async fn a_client_ca_admits_a_signed_client_certificate_and_refuses_none() {
    let pki = client_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let other = client_pki();
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |c| {
        c.client_ca = Some(ca_file.clone());
    })
    .await;
    let running = s.running.as_ref().unwrap();
    let port = running.webhook_addr.port();
    let server_ca = std::fs::read_to_string(running.generated_ca.as_ref().unwrap()).unwrap();

    let ok = exchange(port, &server_ca, Some(&pki)).await;
    assert!(
        ok.as_deref().is_ok_and(|l| l.starts_with("HTTP/1.1 405")),
        "{ok:?}"
    );
    let without = exchange(port, &server_ca, None).await;
    assert!(
        without.is_err(),
        "answered without a client certificate: {without:?}"
    );
    let foreign = exchange(port, &server_ca, Some(&other)).await;
    assert!(
        foreign.is_err(),
        "answered a certificate of another CA: {foreign:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_rewritten_client_ca_is_used_without_a_restart_and_a_broken_one_is_ignored() {
    let first = client_pki();
    let second = client_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &first.ca_pem).unwrap();
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |c| {
        c.client_ca = Some(ca_file.clone());
        c.tls_reload_every = Duration::from_millis(100);
    })
    .await;
    let running = s.running.as_ref().unwrap();
    let port = running.webhook_addr.port();
    let server_ca = std::fs::read_to_string(running.generated_ca.as_ref().unwrap()).unwrap();
    assert!(exchange(port, &server_ca, Some(&first)).await.is_ok());
    assert!(exchange(port, &server_ca, Some(&second)).await.is_err());

    // The apiserver's client certificate re-issued under a new CA.
    std::fs::write(&ca_file, &second.ca_pem).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exchange(port, &server_ca, Some(&second)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA was not used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exchange(port, &server_ca, Some(&first)).await.is_err(),
        "the replaced CA still verifies"
    );

    // A half-written bundle is ignored: the current CAs keep verifying.
    std::fs::write(&ca_file, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(exchange(port, &server_ca, Some(&second)).await.is_ok());
    s.stop().await;
}

#[test]
fn a_client_ca_file_without_certificates_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("client-ca.crt");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let (files, _) = tls::ensure_local(dir.path()).unwrap();
    tls::ReloadingCert::new(files).unwrap();
    let err = tls::ReloadingClientCa::new(&ca).unwrap_err().to_string();
    assert!(err.starts_with("--client-ca:"), "{err}");
}
