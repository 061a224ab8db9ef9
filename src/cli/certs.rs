//! `konsumer certs`: a private CA and a serving certificate for konsumer's Services,
//! and the CA bundle patch of the self-managed overlay (`manifests/self-managed`),
//! so that the webhook configurations trust exactly the CA that signed the
//! certificate konsumer serves.
//!
//! Renewal keeps the CA (the caBundle does not change, nothing to re-sync); a new
//! CA (`--new-ca`) keeps the previous one in the bundle until it is dropped, so the
//! apiserver trusts both while the replicas pick up the new certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::server::tls::{self, Generated};

/// The webhook configurations of `manifests/base/webhooks.yaml` and the webhooks
/// in each: the bundle patch names every one (a test holds this to the manifests).
pub const WEBHOOK_CONFIGURATIONS: &[(&str, &str, &[&str])] = &[
    (
        "MutatingWebhookConfiguration",
        "konsumer",
        &["workloads.konsumer.dev", "consumers.konsumer.dev"],
    ),
    (
        "ValidatingWebhookConfiguration",
        "konsumer",
        &[
            "consumers.konsumer.dev",
            "scalingsubscriptions.konsumer.dev",
        ],
    ),
];

/// The file `konsumer certs` writes for the self-managed overlay's `patches:`.
pub const BUNDLE_PATCH_FILE: &str = "webhook-ca-bundle.yaml";
/// The CA that signed certificates before `--new-ca`, trusted until it is removed.
pub const PREVIOUS_CA_FILE: &str = "ca-previous.crt";

/// Days the CA is valid: many serving certificates are issued by one CA.
const CA_DAYS: i64 = 3650;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt, tls.key and webhook-ca-bundle.yaml
    /// to (`manifests/self-managed` for the self-managed overlay). An existing CA there
    /// is kept and signs the new certificate.
    #[arg(long, env = "KONSUMER_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Names of konsumer's Services (the webhook's and the api's).
    #[arg(
        long = "service",
        env = "KONSUMER_CERTS_SERVICES",
        value_delimiter = ',',
        default_value = "konsumer-webhook,konsumer-api"
    )]
    pub services: Vec<String>,
    /// Namespace of the Services.
    #[arg(
        long = "service-namespace",
        env = "KONSUMER_CERTS_NAMESPACE",
        default_value = "konsumer-system"
    )]
    pub service_namespace: String,
    /// Extra DNS names or IP addresses for the certificate.
    #[arg(long = "host", env = "KONSUMER_CERTS_HOSTS", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Validity of the serving certificate, in days.
    #[arg(long, env = "KONSUMER_CERTS_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(i64).range(1..=crate::server::tls::MAX_VALIDITY_DAYS))]
    pub days: i64,
    /// Make a new CA even if one exists in --out; the old one stays in the bundle
    /// (ca-previous.crt) until you delete that file and run `konsumer certs` again.
    #[arg(long, env = "KONSUMER_CERTS_NEW_CA")]
    pub new_ca: bool,
}

/// The DNS names of `services` in `namespace`, then `extra`.
pub fn hosts(services: &[String], namespace: &str, extra: &[String]) -> Vec<String> {
    let mut hosts = Vec::new();
    for svc in services {
        hosts.push(format!("{svc}.{namespace}.svc"));
        hosts.push(format!("{svc}.{namespace}.svc.cluster.local"));
    }
    hosts.extend(extra.iter().cloned());
    hosts.dedup();
    hosts
}

/// The strategic-merge patch that sets `caBundle` (base64 of the PEM `bundle`) on
/// every webhook of [`WEBHOOK_CONFIGURATIONS`].
pub fn ca_bundle_patch(bundle: &str) -> String {
    use std::fmt::Write;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes());
    let mut out = String::from(
        "# Written by `konsumer certs`: the CA that signed tls.crt, in every webhook.\n",
    );
    for (i, (kind, name, webhooks)) in WEBHOOK_CONFIGURATIONS.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(
            out,
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nwebhooks:"
        );
        for webhook in *webhooks {
            let _ = writeln!(
                out,
                "- name: {webhook}\n  clientConfig:\n    caBundle: {encoded}"
            );
        }
    }
    out
}

/// The CA to sign with: the one in `dir`, or a new one.
struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> anyhow::Result<Ca> {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "konsumer CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

fn existing_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<Ca> {
    let cert_pem = std::fs::read_to_string(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem = std::fs::read_to_string(key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("{}: not a PEM certificate", cert_path.display()))?;
    Ok(Ca {
        cert_pem,
        key_pem,
        issuer,
    })
}

/// When the certificate in `pem` stops being valid.
fn not_after(pem: &str) -> anyhow::Result<time::OffsetDateTime> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).context("not a PEM certificate")?;
    let cert = block.parse_x509().context("not an X.509 certificate")?;
    Ok(cert.validity().not_after.to_datetime())
}

fn serving_certificate(ca: &Ca, hosts: &[String], days: i64) -> anyhow::Result<(String, String)> {
    let now = time::OffsetDateTime::now_utc();
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
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What `konsumer certs` did, for its report.
pub struct Written {
    pub hosts: Vec<String>,
    pub new_ca: bool,
    pub previous_ca_trusted: bool,
    pub bundle: String,
}

/// Writes the CA (kept or new), a serving certificate and the bundle patch to `args.out`.
pub fn write(args: &CertsArgs) -> anyhow::Result<Written> {
    let dir = &args.out;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let previous = dir.join(PREVIOUS_CA_FILE);
    let have_ca = ca_cert.is_file() && ca_key.is_file();
    let hosts = hosts(&args.services, &args.service_namespace, &args.hosts);
    anyhow::ensure!(
        !hosts.is_empty(),
        "no --service and no --host: nothing to make a certificate for"
    );

    let (ca, made_ca) = if have_ca && !args.new_ca {
        let ca = existing_ca(&ca_cert, &ca_key)?;
        let expires = not_after(&ca.cert_pem)
            .with_context(|| format!("reading the CA in {}", ca_cert.display()))?;
        let needed = time::OffsetDateTime::now_utc() + time::Duration::days(args.days);
        anyhow::ensure!(
            expires > needed,
            "the CA in {} expires on {}, before a {}-day certificate would: run `konsumer certs --new-ca` \
             (the old CA stays trusted until you drop it; see docs/operations.md)",
            ca_cert.display(),
            expires.date(),
            args.days
        );
        (ca, false)
    } else {
        if have_ca {
            std::fs::copy(&ca_cert, &previous)
                .with_context(|| format!("keeping the old CA as {}", previous.display()))?;
        }
        (new_ca()?, true)
    };
    let (cert, key) = serving_certificate(&ca, &hosts, args.days)?;

    let mut bundle = ca.cert_pem.clone();
    let mut previous_ca_trusted = false;
    if previous.is_file() {
        let old = std::fs::read_to_string(&previous)
            .with_context(|| format!("reading {}", previous.display()))?;
        let still_valid = not_after(&old).is_ok_and(|t| t > time::OffsetDateTime::now_utc());
        if still_valid && old.trim() != ca.cert_pem.trim() {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(&old);
            previous_ca_trusted = true;
        }
    }
    tls::write(
        dir,
        &Generated {
            ca_cert: ca.cert_pem.clone(),
            ca_key: ca.key_pem.clone(),
            cert,
            key,
        },
    )?;
    let patch = dir.join(BUNDLE_PATCH_FILE);
    std::fs::write(&patch, ca_bundle_patch(&bundle))
        .with_context(|| format!("writing {}", patch.display()))?;
    Ok(Written {
        hosts,
        new_ca: made_ca,
        previous_ca_trusted,
        bundle,
    })
}

/// `konsumer certs`: writes the files, says what it did on stderr, and prints the
/// caBundle (base64) on stdout for those who patch the configurations themselves.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let written = write(&args)?;
    let dir = args.out.display();
    eprintln!(
        "wrote {dir}/tls.crt and {dir}/tls.key for {} ({} CA in {dir}/ca.crt, key in {dir}/ca.key: keep it private)",
        written.hosts.join(", "),
        if written.new_ca {
            "a new"
        } else {
            "signed by the"
        },
    );
    if written.previous_ca_trusted {
        eprintln!(
            "the previous CA ({dir}/{PREVIOUS_CA_FILE}) stays in the caBundle; once every replica serves the new \
             certificate, delete that file and run `konsumer certs` again"
        );
    }
    eprintln!(
        "wrote {dir}/{BUNDLE_PATCH_FILE} (the caBundle of every webhook); apply with: kubectl apply -k {dir}"
    );
    eprintln!("caBundle for the webhook configurations (stdout):");
    println!(
        "{}",
        base64::engine::general_purpose::STANDARD.encode(written.bundle.as_bytes())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> CertsArgs {
        CertsArgs {
            out: dir.to_path_buf(),
            services: vec!["konsumer-webhook".into(), "konsumer-api".into()],
            service_namespace: "konsumer-system".into(),
            hosts: vec![],
            days: 30,
            new_ca: false,
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn hosts_cover_every_service_in_its_namespace() {
        let h = hosts(&["a".into(), "b".into()], "ns", &["127.0.0.1".to_string()]);
        assert_eq!(
            h,
            [
                "a.ns.svc",
                "a.ns.svc.cluster.local",
                "b.ns.svc",
                "b.ns.svc.cluster.local",
                "127.0.0.1"
            ]
        );
    }

    #[test]
    fn the_bundle_patch_names_every_webhook_with_the_same_bundle() {
        let patch = ca_bundle_patch("PEM");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&patch).unwrap();
        assert_eq!(docs.len(), WEBHOOK_CONFIGURATIONS.len());
        for (doc, (kind, name, webhooks)) in docs.iter().zip(WEBHOOK_CONFIGURATIONS) {
            assert_eq!(doc["kind"], *kind);
            assert_eq!(doc["metadata"]["name"], *name);
            let names: Vec<&str> = doc["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, *webhooks);
            for w in doc["webhooks"].as_array().unwrap() {
                assert_eq!(w["clientConfig"]["caBundle"], "UEVN");
            }
        }
    }

    #[test]
    fn renewal_keeps_the_ca_so_the_bundle_does_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(&args(dir.path())).unwrap();
        assert!(first.new_ca);
        let cert1 = read(dir.path(), "tls.crt");
        let second = write(&args(dir.path())).unwrap();
        assert!(!second.new_ca);
        assert_eq!(first.bundle, second.bundle);
        assert_ne!(
            cert1,
            read(dir.path(), "tls.crt"),
            "a new serving certificate"
        );
        assert_eq!(
            read(dir.path(), BUNDLE_PATCH_FILE),
            ca_bundle_patch(&first.bundle)
        );
        // The new certificate is signed by the kept CA and its key matches.
        tls::load(&tls::CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        })
        .unwrap();
    }

    #[test]
    fn a_new_ca_keeps_the_previous_one_trusted_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(&args(dir.path())).unwrap();
        let mut rotate = args(dir.path());
        rotate.new_ca = true;
        let second = write(&rotate).unwrap();
        assert!(second.new_ca && second.previous_ca_trusted);
        let new_ca = read(dir.path(), "ca.crt");
        assert!(second.bundle.starts_with(&new_ca));
        assert!(
            second.bundle.ends_with(&first.bundle),
            "old CA still in the bundle"
        );

        std::fs::remove_file(dir.path().join(PREVIOUS_CA_FILE)).unwrap();
        let third = write(&args(dir.path())).unwrap();
        assert!(!third.previous_ca_trusted);
        assert_eq!(third.bundle, new_ca);
    }

    #[test]
    fn a_ca_that_expires_too_soon_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        write(&args(dir.path())).unwrap();
        let mut long = args(dir.path());
        long.days = CA_DAYS + 10;
        let err = write(&long).err().unwrap().to_string();
        assert!(err.contains("--new-ca"), "{err}");
    }

    #[test]
    fn keys_are_private_files() {
        let dir = tempfile::tempdir().unwrap();
        write(&args(dir.path())).unwrap();
        #[cfg(unix)]
        for key in ["ca.key", "tls.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
        }
    }
}
