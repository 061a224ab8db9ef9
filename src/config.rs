//! Typed configuration of `konsumer serve`: what the flags turn into, and what
//! tests build by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::AdmissionConfig;
use crate::delivery::DeliveryConfig;
use crate::reconciler::ReconcilerConfig;
use crate::reconciler::leader::LeaseConfig;
use crate::server::tls::CertFiles;

/// Where Consumers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// YAML files in a directory, state under `DIR/.konsumer/`.
    Local { dir: PathBuf },
    /// The Kubernetes API (in-cluster or `KUBECONFIG`), all namespaces or one.
    Kube { namespace: Option<String> },
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    Files(CertFiles),
    /// Local mode without `--tls-cert`: a self-signed CA under `DIR/.konsumer/tls/`.
    GenerateLocal,
}

/// Connection bounds of the listeners (see `server::listener`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Webhook connections open at once; `None`: 1024, or fewer when the
    /// open-file limit is low.
    pub webhook_max: Option<usize>,
    /// Webhook connections one peer address may hold; `None`: three quarters of
    /// `webhook_max`.
    pub webhook_max_per_peer: Option<usize>,
    /// Admin connections open at once; `None`: 64, or fewer when the open-file
    /// limit is low.
    pub admin_max: Option<usize>,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            webhook_max: None,
            webhook_max_per_peer: None,
            admin_max: None,
            handshake_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub mode: Mode,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tls: TlsSource,
    pub tls_reload_every: Duration,
    /// CA bundle whose client certificates the webhook listener requires
    /// (`--client-ca`); `None`: no client certificate asked for.
    pub client_ca: Option<PathBuf>,
    pub connections: ConnectionConfig,
    pub admission: AdmissionConfig,
    /// Time between readiness turning false and the listeners closing, so that
    /// load balancers stop sending traffic first.
    pub drain_delay: Duration,
    /// Time open connections get to finish after the listeners close.
    pub shutdown_grace: Duration,
    /// The scaling reconciler; `None` serves webhooks only.
    pub reconciler: Option<ReconcilerConfig>,
    /// Leader election (kube mode).
    pub lease: LeaseConfig,
    /// Guest mode: Consumers are the annotated ConfigMaps of the one namespace
    /// of `Mode::Kube` (no CRD, namespaced permissions only).
    pub guest: bool,
    /// Delivery of scaling events to ScalingSubscriptions; `None`: none.
    pub delivery: Option<DeliveryConfig>,
    /// The HTTP API listener (`--api-addr`); `None`: not started.
    pub api: Option<crate::http_api::ApiConfig>,
}

impl ServeConfig {
    /// Local mode on `dir`, loopback ports chosen by the OS: what tests start.
    pub fn local_for_tests(dir: PathBuf) -> Self {
        ServeConfig {
            mode: Mode::Local { dir },
            webhook_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsSource::GenerateLocal,
            tls_reload_every: Duration::from_secs(30),
            client_ca: None,
            connections: ConnectionConfig::default(),
            admission: AdmissionConfig::default(),
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(5),
            reconciler: None,
            lease: LeaseConfig {
                name: "konsumer-leader".into(),
                namespace: "default".into(),
                identity: "konsumer-test".into(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
            },
            guest: false,
            delivery: None,
            api: None,
        }
    }
}
