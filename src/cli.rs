//! The command line: `serve`, `crd`, `certs`, `validate`, `plan`. Every flag also reads an
//! environment variable (`KONSUMER_*`).

pub mod plan;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::admission::AdmissionConfig;
use crate::api::duration::parse_go_duration;
use crate::config::{Mode, ServeConfig, TlsSource};
use crate::delivery::{DeliveryConfig, EgressConfig};
use crate::reconciler::ReconcilerConfig;
use crate::reconciler::leader::LeaseConfig;
use crate::scaling_events::egress::EgressPolicy;
use crate::server::tls::{self, CertFiles};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "konsumer",
    version,
    about = "Partition assignment and right-sized resources for Kafka consumers on Kubernetes",
    long_about = "konsumer gives partitioned Kafka consumers their partitions and resources when their \
                  Pods and Deployments are created (mutating admission webhook), and is a compatible \
                  successor to Konsumerator (konsumerator.lwolf.org Consumers)."
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "KONSUMER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log level or tracing filter (`info`, `konsumer=debug,kube=warn`).
    #[arg(
        long,
        global = true,
        env = "KONSUMER_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhooks (kube mode, or local mode with --local).
    Serve(Box<ServeArgs>),
    /// Print the CustomResourceDefinitions (YAML): Consumer, then ScalingSubscription.
    Crd(CrdArgs),
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Check Consumer manifests offline with the validating webhook's rules.
    Validate(validate::ValidateArgs),
    /// Print what every instance of a Consumer gets now: partitions, env, resources.
    Plan(plan::PlanArgs),
}

fn go_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Output format of `validate` and `plan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// A manifest file, or standard input for `-`.
pub(crate) fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// A duration that must not be zero (intervals, timeouts).
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    match go_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be greater than 0")),
        d => Ok(d),
    }
}

/// A count that must be at least 1 (a semaphore of 0 permits would block forever).
fn positive_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

pub(crate) fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be in (0, 1]"))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the TLS webhook listener.
    #[arg(long, env = "KONSUMER_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics).
    #[arg(long, env = "KONSUMER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// PEM serving certificate (required in kube mode; reloaded when it changes).
    #[arg(
        long,
        env = "KONSUMER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "KONSUMER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Watch Consumers in this namespace only (default: all namespaces).
    #[arg(long, env = "KONSUMER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Local mode: Consumers from the YAML files in DIR, state under DIR/.konsumer, no cluster.
    #[arg(
        long,
        env = "KONSUMER_LOCAL",
        value_name = "DIR",
        conflicts_with = "namespace"
    )]
    pub local: Option<PathBuf>,
    /// Fraction of a container's memory limit written to GOMEMLIMIT.
    #[arg(long, env = "KONSUMER_GOMEMLIMIT_RATIO", default_value = "0.8", value_parser = ratio)]
    pub gomemlimit_ratio: f64,
    /// Admission requests decided at once; more wait their turn.
    #[arg(long, env = "KONSUMER_MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = positive_count)]
    pub max_concurrent_requests: usize,
    /// Webhook connections served at once; more wait in the listen backlog.
    #[arg(long, env = "KONSUMER_MAX_CONNECTIONS", default_value_t = 1024, value_parser = positive_count)]
    pub max_connections: usize,
    /// Longest time an admission request may take (the apiserver's ?timeout= is honoured below it).
    #[arg(long, env = "KONSUMER_MAX_REQUEST_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub max_request_timeout: Duration,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "KONSUMER_TLS_RELOAD_INTERVAL", default_value = "30s", value_parser = positive_duration)]
    pub tls_reload_interval: Duration,
    /// Time between readiness turning false and the listeners closing on shutdown.
    #[arg(long, env = "KONSUMER_DRAIN_DELAY", value_parser = go_duration)]
    pub drain_delay: Option<Duration>,
    /// Time open connections get to finish on shutdown.
    #[arg(long, env = "KONSUMER_SHUTDOWN_GRACE", default_value = "20s", value_parser = go_duration)]
    pub shutdown_grace: Duration,
    /// Serve the webhooks only: no metrics, predictions or status writes.
    #[arg(long, env = "KONSUMER_NO_RECONCILER")]
    pub no_reconciler: bool,
    /// Time between two reconcile passes over all Consumers.
    #[arg(long, env = "KONSUMER_RECONCILE_INTERVAL", default_value = "10s", value_parser = positive_duration)]
    pub reconcile_interval: Duration,
    /// Consumers reconciled at once.
    #[arg(long, env = "KONSUMER_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = positive_count)]
    pub reconcile_concurrency: usize,
    /// Budget of one Prometheus query (per address).
    #[arg(long, env = "KONSUMER_PROMETHEUS_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub prometheus_timeout: Duration,
    /// Name of the reconciler's Lease (kube mode).
    #[arg(long, env = "KONSUMER_LEASE_NAME", default_value = "konsumer-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (kube mode; in a Pod, set POD_NAMESPACE from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (in a Pod, set POD_NAME from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long the Lease lasts without renewal.
    #[arg(long, env = "KONSUMER_LEASE_DURATION", default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,
    /// Deliver no scaling events to ScalingSubscriptions.
    #[arg(long, env = "KONSUMER_NO_DELIVERY")]
    pub no_delivery: bool,
    /// Let subscribers reach this range (CIDR or address; repeatable), e.g. an
    /// in-cluster receiver. Private, loopback, link-local and other non-global
    /// addresses are refused otherwise, and plain http:// goes only to these ranges.
    #[arg(long = "egress-allow", env = "KONSUMER_EGRESS_ALLOW", value_name = "CIDR", value_delimiter = ',', value_parser = egress_allow)]
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Send every event through this HTTP(S) proxy, which must then filter
    /// addresses itself (no environment proxy is ever used otherwise).
    #[arg(long, env = "KONSUMER_EGRESS_PROXY", value_name = "URL")]
    pub egress_proxy: Option<String>,
    /// (subscription, Consumer) pairs delivered at once.
    #[arg(long, env = "KONSUMER_DELIVERY_CONCURRENCY", default_value_t = 32, value_parser = positive_count)]
    pub delivery_concurrency: usize,
}

fn egress_allow(s: &str) -> Result<ipnet::IpNet, String> {
    crate::scaling_events::egress::parse_allow(s)
}

impl ServeArgs {
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let mode = match self.local {
            Some(dir) => Mode::Local { dir },
            None => Mode::Kube {
                namespace: self.namespace,
            },
        };
        let tls = match (self.tls_cert, self.tls_key, &mode) {
            (Some(cert), Some(key), _) => TlsSource::Files(CertFiles { cert, key }),
            (None, None, Mode::Local { .. }) => TlsSource::GenerateLocal,
            _ => anyhow::bail!(
                "--tls-cert and --tls-key are required in kube mode (see `konsumer certs` or use cert-manager)"
            ),
        };
        let drain_delay = self.drain_delay.unwrap_or(match mode {
            Mode::Local { .. } => Duration::ZERO,
            Mode::Kube { .. } => Duration::from_secs(5),
        });
        Ok(ServeConfig {
            mode,
            webhook_addr: self.webhook_addr,
            admin_addr: self.admin_addr,
            tls,
            tls_reload_every: self.tls_reload_interval,
            admission: AdmissionConfig {
                gomemlimit_ratio: self.gomemlimit_ratio,
                max_budget: self.max_request_timeout,
                max_concurrent: self.max_concurrent_requests,
                max_connections: self.max_connections,
                konsumer_namespace: self.lease_namespace.clone(),
                ..AdmissionConfig::default()
            },
            drain_delay,
            shutdown_grace: self.shutdown_grace,
            reconciler: (!self.no_reconciler).then_some(ReconcilerConfig {
                interval: self.reconcile_interval,
                query_timeout: self.prometheus_timeout,
                concurrency: self.reconcile_concurrency,
                gomemlimit_ratio: self.gomemlimit_ratio,
            }),
            delivery: (!self.no_delivery).then(|| DeliveryConfig {
                egress: EgressConfig {
                    policy: EgressPolicy {
                        allow: self.egress_allow.clone(),
                    },
                    proxy: self.egress_proxy.clone(),
                },
                concurrency: self.delivery_concurrency,
                konsumer_namespace: self.lease_namespace.clone(),
                ..DeliveryConfig::default()
            }),
            lease: LeaseConfig {
                name: self.lease_name,
                namespace: self.lease_namespace,
                identity: self.pod_name.unwrap_or_else(default_identity),
                duration: self.lease_duration,
                grace: (self.lease_duration / 3).max(Duration::from_secs(1)),
            },
        })
    }
}

/// The host name plus a random suffix: unique per process, readable in the Lease.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "konsumer".into());
    format!(
        "{host}-{:08x}",
        std::process::id() ^ (jiff::Timestamp::now().subsec_nanosecond() as u32)
    )
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key to.
    #[arg(long, env = "KONSUMER_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Name of the webhook Service.
    #[arg(long, env = "KONSUMER_CERTS_SERVICE", default_value = "konsumer")]
    pub service: String,
    /// Namespace of the webhook Service.
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
    #[arg(long, env = "KONSUMER_CERTS_DAYS", default_value_t = 365)]
    pub days: i64,
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let svc = &args.service;
    let ns = &args.service_namespace;
    let mut hosts = vec![
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
        format!("{svc}.{ns}"),
        svc.clone(),
    ];
    hosts.extend(args.hosts.iter().cloned());
    let generated = tls::generate(&hosts, args.days)?;
    let files = tls::write(&args.out, &generated)?;
    use base64::Engine;
    let bundle = base64::engine::general_purpose::STANDARD.encode(generated.ca_cert.as_bytes());
    eprintln!(
        "wrote {} and {} (and the CA in {}) for {}",
        files.cert.display(),
        files.key.display(),
        args.out.join("ca.crt").display(),
        hosts.join(", ")
    );
    eprintln!("caBundle for the webhook configurations (stdout):");
    println!("{bundle}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Print only this CRD (as committed under manifests/crd/).
    #[arg(long, env = "KONSUMER_CRD_ONLY", value_enum)]
    pub only: Option<CrdKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    Consumers,
    Scalingsubscriptions,
}

fn crd(args: CrdArgs) -> anyhow::Result<()> {
    use crate::api::crd;
    let yaml = match args.only {
        None => crd::all_crds_yaml()?,
        Some(CrdKind::Consumers) => crd::consumer_crd_yaml()?,
        Some(CrdKind::Scalingsubscriptions) => crd::subscription_crd_yaml()?,
    };
    print!("{yaml}");
    Ok(())
}

/// Runs a parsed command line; errors are printed, not panicked.
pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(args) => match (*args).into_config() {
            Ok(config) => crate::server::run(config).await,
            Err(e) => Err(e),
        },
        Command::Crd(args) => crd(args),
        Command::Certs(args) => certs(args),
        Command::Plan(args) => plan::run(args).await.context("plan"),
        Command::Validate(args) => return validate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("konsumer").chain(args.iter().copied()))
    }

    #[test]
    fn zero_intervals_and_counts_are_refused_at_the_door() {
        for flag in [
            "--reconcile-interval=0s",
            "--tls-reload-interval=0s",
            "--max-request-timeout=0s",
            "--prometheus-timeout=0s",
            "--lease-duration=0s",
            "--max-connections=0",
            "--max-concurrent-requests=0",
            "--reconcile-concurrency=0",
        ] {
            let err = parse(&["serve", flag]).expect_err(flag);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
        }
        let ok = parse(&["serve", "--reconcile-interval=1s", "--max-connections=1"]);
        assert!(ok.is_ok(), "{ok:?}");
    }
}
