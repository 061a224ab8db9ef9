//! `konsumer serve`: wires the store, the webhook and admin listeners and the
//! reconciler to one shutdown signal.

pub mod admin;
pub mod listener;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Admission};
use crate::config::{Mode, ServeConfig, TlsSource};
use crate::reconciler::events::KubeEvents;
use crate::reconciler::leader::Leadership;
use crate::reconciler::prometheus::PromClient;
use crate::reconciler::workloads::{KubeWorkloads, LocalWorkloads, WorkloadSource};
use crate::reconciler::{Reconciler, TransitionSink};
use crate::store::kube::KubeStore;
use crate::store::local::{LocalStore, STATE_DIR};
use crate::store::{ConsumerIndex, Store};
use crate::telemetry::Metrics;

use admin::Health;

/// The store a server runs on, built by `run` from the mode, or by tests (a kube
/// store on a mocked API server, say).
pub enum Backend {
    Local(Arc<LocalStore>),
    Kube {
        store: Arc<KubeStore>,
        /// The client the Lease is renewed with: its requests time out before
        /// the lease could expire.
        lease_client: kube::Client,
    },
}

impl Backend {
    /// A kube backend whose lease shares the store's client (tests).
    pub fn kube(store: Arc<KubeStore>) -> Self {
        let lease_client = store.client().clone();
        Backend::Kube {
            store,
            lease_client,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Local(s) => s.clone(),
            Backend::Kube { store, .. } => store.clone(),
        }
    }
}

/// A started server.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The CA that signed the serving certificate, when konsumer generated it.
    pub generated_ca: Option<PathBuf>,
    pub index: Arc<ConsumerIndex>,
    pub metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    drain_delay: std::time::Duration,
    grace: std::time::Duration,
    tasks: JoinSet<()>,
    leadership: Option<Leadership>,
    /// Whether this replica reconciles now (the reconciler's lease).
    pub is_leader: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Running {
    /// Stops everything: readiness turns false, then (after the drain delay) the
    /// listeners close, in-flight requests finish, background tasks end.
    pub async fn stop(mut self) {
        self.health.begin_stop();
        tokio::time::sleep(self.drain_delay).await;
        self.shutdown.cancel();
        // The lease is given up while in-flight requests finish, not after: the
        // next leader should not wait out the listeners' grace period.
        let release = async {
            if let Some(leadership) = self.leadership.take() {
                leadership.stop(self.grace).await;
            }
        };
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        tokio::join!(release, drain);
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Builds the backend for `config.mode` and the index it fills.
pub async fn backend(config: &ServeConfig, index: Arc<ConsumerIndex>) -> anyhow::Result<Backend> {
    match &config.mode {
        Mode::Local { dir } => {
            anyhow::ensure!(dir.is_dir(), "--local: not a directory: {}", dir.display());
            let store = LocalStore::open(dir, index).context("--local: opening the state store")?;
            Ok(Backend::Local(Arc::new(store)))
        }
        Mode::Kube { namespace } => {
            tls::provider();
            let kube_config = kube::Config::infer()
                .await
                .context("connecting to Kubernetes (in-cluster config or KUBECONFIG)")?;
            let client = kube::Client::try_from(kube_config.clone())
                .context("building the Kubernetes client")?;
            let mut lease_config = kube_config;
            let budget = Some(config.lease.grace.max(std::time::Duration::from_secs(1)));
            lease_config.connect_timeout = budget;
            lease_config.read_timeout = budget;
            lease_config.write_timeout = budget;
            let lease_client = kube::Client::try_from(lease_config)
                .context("building the Kubernetes client for the lease")?;
            Ok(Backend::Kube {
                store: Arc::new(KubeStore::new(client, namespace.clone(), index)),
                lease_client,
            })
        }
    }
}

/// Starts the listeners and background tasks on `backend`.
pub async fn start(
    config: ServeConfig,
    index: Arc<ConsumerIndex>,
    backend: Backend,
) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let metrics = Arc::new(Metrics::default());
    let health = Health::new(index.clone());

    let (cert_files, generated_ca) = match (&config.tls, &config.mode) {
        (TlsSource::Files(files), _) => (files.clone(), None),
        (TlsSource::GenerateLocal, Mode::Local { dir }) => {
            let tls_dir = dir.join(STATE_DIR).join("tls");
            let (files, made) = tls::ensure_local(&tls_dir)?;
            let ca = tls_dir.join("ca.crt");
            if made {
                tracing::info!(ca = %ca.display(), "generated a self-signed certificate for localhost");
            }
            (files, Some(ca))
        }
        (TlsSource::GenerateLocal, Mode::Kube { .. }) => {
            anyhow::bail!("--tls-cert and --tls-key are required in kube mode")
        }
    };
    let cert = tls::ReloadingCert::new(cert_files)?;
    cert.spawn_reloader(config.tls_reload_every, shutdown.clone());
    let tls_config = tls::server_config(cert)?;

    // Fill the cache before serving: readiness waits for it anyway.
    match &backend {
        Backend::Local(store) => {
            store.rescan().await.context("--local: reading Consumers")?;
            tasks.spawn({
                let watcher = store.clone().spawn_watcher(shutdown.clone());
                async move {
                    let _ = watcher.await;
                }
            });
        }
        Backend::Kube { store, .. } => {
            let watch = store.spawn_watch(shutdown.clone());
            tasks.spawn(async move {
                let _ = watch.await;
            });
        }
    }

    let admission = Admission::new(
        index.clone(),
        backend.store(),
        metrics.clone(),
        config.admission.clone(),
    );
    let webhook = TcpListener::bind(config.webhook_addr)
        .await
        .with_context(|| format!("--webhook-addr {}", config.webhook_addr))?;
    let webhook_addr = webhook.local_addr()?;
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}", config.admin_addr))?;
    let admin_addr = admin.local_addr()?;

    tasks.spawn(listener::serve_tls(
        webhook,
        tls_config,
        admission::service(admission),
        shutdown.clone(),
        listener::Limits {
            grace: config.shutdown_grace,
            max_connections: config.admission.max_connections,
        },
    ));
    let admin_app = admin::router(health.clone(), metrics.clone());
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(admin, admin_app)
            .with_graceful_shutdown(admin_shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let leadership = match &config.reconciler {
        None => None,
        Some(rc) => {
            let prom = PromClient::new(rc.query_timeout, metrics.clone())?;
            let (workloads, sink, leadership): (
                Arc<dyn WorkloadSource>,
                Option<Arc<dyn TransitionSink>>,
                Leadership,
            ) = match &backend {
                Backend::Local(store) => (
                    Arc::new(LocalWorkloads::new(store.dir().to_path_buf())),
                    None,
                    Leadership::always(),
                ),
                Backend::Kube {
                    store,
                    lease_client,
                } => {
                    let namespace = match &config.mode {
                        Mode::Kube { namespace } => namespace.clone(),
                        Mode::Local { .. } => None,
                    };
                    (
                        Arc::new(KubeWorkloads {
                            client: store.client().clone(),
                            namespace,
                        }),
                        Some(Arc::new(KubeEvents::new(
                            store.client().clone(),
                            Some(config.lease.identity.clone()),
                        ))),
                        Leadership::lease(lease_client.clone(), config.lease.clone()),
                    )
                }
            };
            let reconciler = Arc::new(Reconciler::new(
                index.clone(),
                backend.store(),
                workloads,
                prom,
                sink,
                metrics.clone(),
                rc.clone(),
                Arc::new(jiff::Timestamp::now),
            ));
            tasks.spawn(reconciler.run(leadership.is_leader.clone(), shutdown.clone()));
            Some(leadership)
        }
    };
    tracing::info!(%webhook_addr, %admin_addr, store = backend.store().kind(), "konsumer serving");
    Ok(Running {
        webhook_addr,
        admin_addr,
        generated_ca,
        index,
        metrics,
        health,
        shutdown,
        drain_delay: config.drain_delay,
        grace: config.shutdown_grace,
        tasks,
        is_leader: leadership.as_ref().map(|l| l.is_leader.clone()),
        leadership,
    })
}

/// `konsumer serve`: runs until SIGTERM or Ctrl-C.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    tls::provider();
    let index = ConsumerIndex::new();
    let backend = backend(&config, index.clone()).await?;
    let running = start(config, index, backend).await?;
    if let Some(ca) = &running.generated_ca {
        eprintln!(
            "konsumer (local mode) serves https://{} — CA certificate: {}\n  try: curl --cacert {} -H 'Content-Type: application/json' --data @tests/fixtures/admission/pod-create-from-replicaset.json https://localhost:{}/mutate/workloads",
            running.webhook_addr,
            ca.display(),
            ca.display(),
            running.webhook_addr.port()
        );
    }
    wait_for_signal().await;
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
