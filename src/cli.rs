//! The command line: `serve`, `crd`, `certs`, `validate`, `plan`. Every flag also reads an
//! environment variable (`KONSUMER_*`).

pub mod certs;
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
use crate::config::{ConnectionConfig, Mode, ServeConfig, TlsSource};
use crate::delivery::{DeliveryConfig, EgressConfig};
use crate::http_api::{ApiAuth, ApiConfig};
use crate::reconciler::ReconcilerConfig;
use crate::reconciler::leader::LeaseConfig;
use crate::scaling_events::egress::EgressPolicy;
use crate::server::tls::CertFiles;
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
    /// Export traces (a span per admission request) over OTLP/HTTP to this
    /// collector base URL (`http://otel-collector:4318`; spans go to `/v1/traces`).
    /// Needs a build with `--features otlp`; off by default.
    #[arg(long, global = true, env = "KONSUMER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
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
    Certs(certs::CertsArgs),
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

/// A manifest file, or standard input for `-`, read with konsumer's size cap.
pub(crate) fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(crate::manifest::read_input(path)?)
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
    /// Address of the TLS webhook listener [default: 0.0.0.0:8443; 127.0.0.1:8443 with --local].
    #[arg(long, env = "KONSUMER_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics)
    /// [default: 0.0.0.0:8080; 127.0.0.1:8080 with --local].
    #[arg(long, env = "KONSUMER_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
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
    /// Watch Consumers in this namespace only (default: all namespaces); with
    /// --guest, the one namespace konsumer works in.
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
    /// Webhook connections open at once [default: 1024, fewer when the open-file
    /// limit is low]. When all are taken, a new connection takes the slot of one
    /// without a request in flight (idle keep-alive, or still in its handshake).
    #[arg(long, env = "KONSUMER_MAX_CONNECTIONS", value_parser = positive_count)]
    pub max_connections: Option<usize>,
    /// Webhook connections one client address may hold [default: 3/4 of --max-connections].
    #[arg(long, env = "KONSUMER_MAX_CONNECTIONS_PER_PEER", value_parser = positive_count)]
    pub max_connections_per_peer: Option<usize>,
    /// Admin-port connections open at once [default: 64, fewer when the open-file limit is low].
    #[arg(long, env = "KONSUMER_ADMIN_MAX_CONNECTIONS", value_parser = positive_count)]
    pub admin_max_connections: Option<usize>,
    /// Time a client gets for the TLS handshake.
    #[arg(long, env = "KONSUMER_HANDSHAKE_TIMEOUT", default_value = "3s", value_parser = positive_duration)]
    pub handshake_timeout: Duration,
    /// Time a new connection gets to send its first request's headers.
    #[arg(long, env = "KONSUMER_HEADER_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request (headers included).
    #[arg(long, env = "KONSUMER_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// PEM CA bundle: require a client certificate signed by it on the webhook
    /// listener (the apiserver's, from its admission control config).
    #[arg(long, env = "KONSUMER_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
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
    /// Namespace of the Lease (kube mode) [default: the Pod's namespace (POD_NAMESPACE, or
    /// its ServiceAccount's), else `default`].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (in a Pod, set POD_NAME from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long the Lease lasts without renewal.
    #[arg(long, env = "KONSUMER_LEASE_DURATION", default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,
    /// Create, roll and remove one Deployment per instance of Consumers with a
    /// deploymentTemplate, as Konsumerator did (`false`: webhooks and status only).
    #[arg(
        long,
        env = "KONSUMER_MANAGE_DEPLOYMENTS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub manage_deployments: bool,
    /// Rollouts of managed Deployments started per minute, over all Consumers.
    #[arg(long, env = "KONSUMER_MAX_ROLLOUTS_PER_MINUTE", default_value_t = crate::reconciler::DEFAULT_ROLLOUTS_PER_MINUTE, value_parser = positive_rate)]
    pub max_rollouts_per_minute: u32,
    /// Guest mode (Konsumerator's): no CRD, no cluster-wide permissions. Consumers
    /// are the ConfigMaps of --namespace annotated konsumerator.lwolf.org/managed.
    #[arg(
        long,
        env = "KONSUMER_GUEST",
        requires = "namespace",
        conflicts_with = "local"
    )]
    pub guest: bool,
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
    /// Address of the TLS HTTP API listener
    /// [default: 0.0.0.0:9443; 127.0.0.1:9443 with --local].
    #[arg(long, env = "KONSUMER_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// Bearer tokens the HTTP API accepts, one per line (re-read when it
    /// changes). Needed in local mode, where the api does not start without it;
    /// in kube mode it replaces TokenReview/SubjectAccessReview.
    #[arg(long, env = "KONSUMER_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Kube mode: accept only bearer tokens meant for this audience (repeatable;
    /// `kubectl create token SA --audience konsumer`). Default: the apiserver's own.
    #[arg(
        long = "api-audience",
        env = "KONSUMER_API_AUDIENCE",
        value_name = "AUDIENCE",
        value_delimiter = ','
    )]
    pub api_audiences: Vec<String>,
    /// Do not start the HTTP API.
    #[arg(long, env = "KONSUMER_NO_API", conflicts_with = "api_token_file")]
    pub no_api: bool,
    /// HTTP API requests handled at once; more wait up to a second, then get 429.
    #[arg(long, env = "KONSUMER_API_MAX_CONCURRENT_REQUESTS", default_value_t = 64, value_parser = positive_count)]
    pub api_max_concurrent_requests: usize,
    /// HTTP API connections open at once.
    #[arg(long, env = "KONSUMER_API_MAX_CONNECTIONS", default_value_t = 256, value_parser = positive_count)]
    pub api_max_connections: usize,
}

fn egress_allow(s: &str) -> Result<ipnet::IpNet, String> {
    crate::scaling_events::egress::parse_allow(s)
}

/// A per-minute rate of at least 1.
fn positive_rate(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

impl ServeArgs {
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let guest_namespace = self.namespace.clone();
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
        // A laptop tool listens on loopback; a Pod must be reachable by the apiserver.
        let host: [u8; 4] = match mode {
            Mode::Local { .. } => [127, 0, 0, 1],
            Mode::Kube { .. } => [0, 0, 0, 0],
        };
        let webhook_addr = self.webhook_addr.unwrap_or(SocketAddr::from((host, 8443)));
        let admin_addr = self.admin_addr.unwrap_or(SocketAddr::from((host, 8080)));
        let api_auth = match (&self.api_token_file, &mode) {
            _ if self.no_api => None,
            (Some(file), _) => Some(ApiAuth::TokenFile(file.clone())),
            // Guest mode may not create TokenReviews (cluster-scoped): tokens only.
            (None, Mode::Kube { .. }) if self.guest => None,
            (None, Mode::Kube { .. }) => Some(ApiAuth::Kube),
            // Local mode has no one to ask: no token file, no api.
            (None, Mode::Local { .. }) => None,
        };
        // Guest mode has permissions in its namespace only: the Lease is there.
        let lease_namespace = match (self.guest, &guest_namespace) {
            (true, Some(ns)) => ns.clone(),
            _ => own_namespace(
                self.lease_namespace,
                std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok(),
            ),
        };
        let api = api_auth.map(|auth| ApiConfig {
            max_concurrent: self.api_max_concurrent_requests,
            max_connections: self.api_max_connections,
            konsumer_namespace: lease_namespace.clone(),
            gomemlimit_ratio: self.gomemlimit_ratio,
            guest: self.guest,
            audiences: self.api_audiences.clone(),
            ..ApiConfig::new(
                self.api_addr.unwrap_or(SocketAddr::from((host, 9443))),
                auth,
            )
        });
        Ok(ServeConfig {
            mode,
            webhook_addr,
            admin_addr,
            tls,
            tls_reload_every: self.tls_reload_interval,
            client_ca: self.client_ca,
            connections: ConnectionConfig {
                webhook_max: self.max_connections,
                webhook_max_per_peer: self.max_connections_per_peer,
                admin_max: self.admin_max_connections,
                handshake_timeout: self.handshake_timeout,
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
            },
            admission: AdmissionConfig {
                gomemlimit_ratio: self.gomemlimit_ratio,
                max_budget: self.max_request_timeout,
                max_concurrent: self.max_concurrent_requests,
                konsumer_namespace: lease_namespace.clone(),
                ..AdmissionConfig::default()
            },
            drain_delay,
            shutdown_grace: self.shutdown_grace,
            reconciler: (!self.no_reconciler).then_some(ReconcilerConfig {
                interval: self.reconcile_interval,
                query_timeout: self.prometheus_timeout,
                concurrency: self.reconcile_concurrency,
                gomemlimit_ratio: self.gomemlimit_ratio,
                manage_deployments: self.manage_deployments,
                max_rollouts_per_minute: self.max_rollouts_per_minute,
            }),
            delivery: (!self.no_delivery).then(|| DeliveryConfig {
                egress: EgressConfig {
                    policy: EgressPolicy {
                        allow: self.egress_allow.clone(),
                    },
                    proxy: self.egress_proxy.clone(),
                },
                concurrency: self.delivery_concurrency,
                konsumer_namespace: lease_namespace.clone(),
                ..DeliveryConfig::default()
            }),
            lease: LeaseConfig {
                name: self.lease_name,
                namespace: lease_namespace,
                identity: self.pod_name.unwrap_or_else(default_identity),
                duration: self.lease_duration,
                grace: (self.lease_duration / 3).max(Duration::from_secs(1)),
            },
            api,
            guest: self.guest,
        })
    }
}

/// Where a Pod's ServiceAccount token mount says which namespace the Pod is in.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// konsumer's own namespace (its Lease's): the flag or `POD_NAMESPACE`, else the
/// namespace of the ServiceAccount mounted in the Pod, else `default` (outside a
/// cluster). Never a shared namespace by accident when running in a Pod.
pub fn own_namespace(flag: Option<String>, service_account: Option<String>) -> String {
    flag.filter(|ns| !ns.trim().is_empty())
        .or_else(|| {
            service_account
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
        })
        .unwrap_or_else(|| "default".to_string())
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
    let telemetry =
        match telemetry::init(cli.log_format, &cli.log_level, cli.otlp_endpoint.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
    let result = match cli.command {
        Command::Serve(args) => match (*args).into_config() {
            Ok(config) => crate::server::run(config).await,
            Err(e) => Err(e),
        },
        Command::Crd(args) => crd(args),
        Command::Certs(args) => certs::run(args),
        Command::Plan(args) => plan::run(args).await.context("plan"),
        Command::Validate(args) => {
            let code = validate::run(args);
            telemetry.shutdown();
            return code;
        }
    };
    telemetry.shutdown();
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
            "--max-connections-per-peer=0",
            "--admin-max-connections=0",
            "--header-timeout=0s",
            "--idle-timeout=0s",
            "--handshake-timeout=0s",
            "--max-concurrent-requests=0",
            "--reconcile-concurrency=0",
            "--max-rollouts-per-minute=0",
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

    fn serve_config(args: &[&str]) -> ServeConfig {
        match parse(args).unwrap().command {
            Command::Serve(serve) => (*serve).into_config().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_mode_listens_on_loopback_and_kube_mode_on_every_interface() {
        let local = serve_config(&["serve", "--local", "."]);
        assert_eq!(local.webhook_addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(local.admin_addr, "127.0.0.1:8080".parse().unwrap());
        let kube = serve_config(&["serve", "--tls-cert=c", "--tls-key=k"]);
        assert_eq!(kube.webhook_addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(kube.admin_addr, "0.0.0.0:8080".parse().unwrap());
        let chosen = serve_config(&["serve", "--local", ".", "--webhook-addr=0.0.0.0:9000"]);
        assert_eq!(chosen.webhook_addr, "0.0.0.0:9000".parse().unwrap());
    }

    #[test]
    fn the_lease_lives_in_the_pods_own_namespace_unless_told_otherwise() {
        let sa = || Some("team-a\n".to_string());
        assert_eq!(own_namespace(None, sa()), "team-a");
        assert_eq!(own_namespace(Some("ops".into()), sa()), "ops");
        assert_eq!(own_namespace(Some(" ".into()), sa()), "team-a");
        assert_eq!(own_namespace(None, None), "default");
        assert_eq!(own_namespace(None, Some("".into())), "default");
    }

    #[test]
    fn certificates_that_would_be_expired_are_refused_at_the_door() {
        for days in ["--days=0", "--days=-1", "--days=3651"] {
            let err = parse(&["certs", days]).expect_err(days);
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{days}"
            );
        }
        assert!(parse(&["certs", "--days", "1"]).is_ok());
    }

    #[test]
    fn guest_mode_needs_its_namespace_and_keeps_its_lease_there() {
        let err = parse(&["serve", "--guest"]).expect_err("no namespace");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["serve", "--guest", "--namespace", "ns", "--local", "d"]).is_err());
        let Command::Serve(args) = parse(&[
            "serve",
            "--guest",
            "--namespace",
            "apps",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ])
        .unwrap()
        .command
        else {
            panic!("serve")
        };
        let config = args.into_config().unwrap();
        assert!(config.guest);
        assert_eq!(config.lease.namespace, "apps");
        assert_eq!(
            config.mode,
            Mode::Kube {
                namespace: Some("apps".into())
            }
        );
    }

    #[test]
    fn deployments_are_managed_unless_switched_off() {
        let tls = ["--tls-cert", "c", "--tls-key", "k"];
        let Command::Serve(args) = parse(&[&["serve"][..], &tls].concat()).unwrap().command else {
            panic!("serve")
        };
        let rc = args.into_config().unwrap().reconciler.unwrap();
        assert!(rc.manage_deployments);
        assert_eq!(rc.max_rollouts_per_minute, 30);
        let flags = [
            "serve",
            "--manage-deployments=false",
            "--max-rollouts-per-minute=5",
        ];
        let Command::Serve(args) = parse(&[&flags[..], &tls].concat()).unwrap().command else {
            panic!("serve")
        };
        let rc = args.into_config().unwrap().reconciler.unwrap();
        assert!(!rc.manage_deployments);
        assert_eq!(rc.max_rollouts_per_minute, 5);
    }
}
