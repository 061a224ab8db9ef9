//! `konsumer serve`: wires the store, the webhook and admin listeners and the
//! reconciler to one shutdown signal.

pub mod admin;
pub mod fdlimit;
pub mod listener;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Admission};
use crate::config::{Mode, ServeConfig, TlsSource};
use crate::delivery::kube::KubeSubscriptions;
use crate::delivery::local::LocalSubscriptions;
use crate::delivery::{Deliveries, SubscriptionSource};
use crate::reconciler::deployments::{DeploymentApi, KubeDeployments, LocalDeployments};
use crate::reconciler::events::{KubeEvents, Regarding};
use crate::reconciler::leader::Leadership;
use crate::reconciler::prometheus::PromClient;
use crate::reconciler::workloads::{KubeWorkloads, LocalWorkloads, WorkloadSource};
use crate::reconciler::{Reconciler, TransitionSink};
use crate::store::guest::GuestStore;
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
    /// Guest mode: ConfigMaps of one namespace.
    Guest {
        store: Arc<GuestStore>,
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

    /// A guest-mode backend whose lease shares the store's client (tests).
    pub fn guest(store: Arc<GuestStore>) -> Self {
        let lease_client = store.client().clone();
        Backend::Guest {
            store,
            lease_client,
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Local(s) => s.clone(),
            Backend::Kube { store, .. } => store.clone(),
            Backend::Guest { store, .. } => store.clone(),
        }
    }
}

/// What the reconciler is wired to: workloads, Events, Deployments.
type Parts = (
    Arc<dyn WorkloadSource>,
    Option<Arc<dyn TransitionSink>>,
    Arc<dyn DeploymentApi>,
);

/// A started server.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTP API listener, when it runs.
    pub api_addr: Option<SocketAddr>,
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
    /// Cancelled when a stop begins: the reconciler and the delivery worker stop
    /// before the lease is given up, so giving it up is not taken for losing it.
    stop_leading: CancellationToken,
    /// Whether this replica reconciles now (the reconciler's lease).
    pub is_leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// The delivery worker and the subscription functions of the HTTP API.
    pub deliveries: Option<Deliveries>,
    /// Where Consumer statuses go.
    pub store: Arc<dyn Store>,
}

impl Running {
    /// Stops everything: readiness turns false and the Lease is given up at once
    /// (the next leader need not wait out the drain), then, after the drain delay,
    /// the listeners close, in-flight requests finish, background tasks end.
    pub async fn stop(mut self) {
        self.health.begin_stop();
        self.stop_leading.cancel();
        let leadership = self.leadership.take();
        let grace = self.grace;
        let release = async {
            if let Some(leadership) = leadership {
                leadership.stop(grace).await;
            }
        };
        let (shutdown, drain_delay, tasks) = (&self.shutdown, self.drain_delay, &mut self.tasks);
        let drain = async {
            tokio::time::sleep(drain_delay).await;
            shutdown.cancel();
            while tasks.join_next().await.is_some() {}
        };
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
            if config.guest {
                let namespace = namespace
                    .clone()
                    .context("--guest needs --namespace: the one namespace konsumer works in")?;
                return Ok(Backend::Guest {
                    store: Arc::new(GuestStore::new(client, namespace, index)),
                    lease_client,
                });
            }
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
    let health = Health::new(index.clone(), Some(backend.store()));

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
    cert.spawn_reloader(config.tls_reload_every, metrics.clone(), shutdown.clone());
    let client_ca = match &config.client_ca {
        None => None,
        Some(path) => {
            let ca = tls::ReloadingClientCa::new(path)?;
            ca.spawn_reloader(config.tls_reload_every, shutdown.clone());
            Some(ca)
        }
    };
    let tls_config = tls::server_config(cert.clone(), client_ca)?;

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
        Backend::Guest { store, .. } => {
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

    let nofile = fdlimit::current();
    let sizing = fdlimit::size(nofile, &config.connections);
    for note in &sizing.notes {
        tracing::warn!("{note}");
    }
    let timeouts = |limits: listener::Limits| listener::Limits {
        handshake_timeout: config.connections.handshake_timeout,
        header_timeout: config.connections.header_timeout,
        idle_timeout: config.connections.idle_timeout,
        grace: config.shutdown_grace,
        ..limits
    };
    let webhook_limits = timeouts(listener::Limits {
        max_per_peer: sizing.webhook_per_peer,
        ..listener::Limits::webhook(sizing.webhook)
    });
    let admin_limits = timeouts(listener::Limits::admin(sizing.admin));
    tracing::debug!(?nofile, ?webhook_limits, ?admin_limits, "listener bounds");
    let displaced = |name: &str| {
        metrics
            .connections_displaced
            .get_or_create(&crate::telemetry::metrics::ListenerLabel {
                listener: name.to_string(),
            })
            .clone()
    };
    tasks.spawn(listener::serve(
        webhook,
        listener::Options {
            displaced: displaced("webhook"),
            ..listener::Options::new("webhook", Some(tls_config), webhook_limits)
        },
        admission::service(admission),
        shutdown.clone(),
    ));
    tasks.spawn(listener::serve(
        admin,
        listener::Options {
            displaced: displaced("admin"),
            ..listener::Options::new("admin", None, admin_limits)
        },
        TowerToHyperService::new(admin::router(health.clone(), metrics.clone())),
        shutdown.clone(),
    ));
    // One lease for everything only the leader does: reconciling, managing
    // Deployments and delivering scaling events. A stop ends them before the lease
    // is given up, so that giving it up is not taken for losing it.
    let stop_leading = shutdown.child_token();
    let leadership =
        (config.reconciler.is_some() || config.delivery.is_some()).then(|| match &backend {
            Backend::Local(_) => Leadership::always(),
            Backend::Kube { lease_client, .. } | Backend::Guest { lease_client, .. } => {
                Leadership::lease(lease_client.clone(), config.lease.clone())
            }
        });
    let journal_written = Arc::new(tokio::sync::Notify::new());
    if let (Some(rc), Some(leadership)) = (&config.reconciler, &leadership) {
        let prom = PromClient::new(rc.query_timeout, metrics.clone())?;
        let (workloads, sink, deployments): Parts = match &backend {
            Backend::Local(store) => (
                Arc::new(LocalWorkloads::watched(store.clone())),
                None,
                Arc::new(LocalDeployments::watched(
                    store.dir().join(STATE_DIR).join("deployments"),
                )),
            ),
            Backend::Kube { store, .. } => {
                let namespace = match &config.mode {
                    Mode::Kube { namespace } => namespace.clone(),
                    Mode::Local { .. } => None,
                };
                (
                    Arc::new(KubeWorkloads {
                        client: store.client().clone(),
                        namespace: namespace.clone(),
                    }),
                    Some(Arc::new(KubeEvents::new(
                        store.client().clone(),
                        Some(config.lease.identity.clone()),
                    ))),
                    Arc::new(KubeDeployments {
                        client: store.client().clone(),
                        namespace,
                        owners: Regarding::Consumer,
                    }),
                )
            }
            Backend::Guest { store, .. } => {
                let namespace = Some(store.namespace().to_string());
                let events: Arc<dyn TransitionSink> = Arc::new(KubeEvents::regarding(
                    store.client().clone(),
                    Some(config.lease.identity.clone()),
                    Regarding::ConfigMap,
                ));
                let reporter = store.spawn_reporter(
                    leadership.is_leader.clone(),
                    Some(events.clone()),
                    rc.interval,
                    shutdown.clone(),
                );
                tasks.spawn(async move {
                    let _ = reporter.await;
                });
                (
                    Arc::new(KubeWorkloads {
                        client: store.client().clone(),
                        namespace: namespace.clone(),
                    }),
                    Some(events),
                    Arc::new(KubeDeployments {
                        client: store.client().clone(),
                        namespace,
                        owners: Regarding::ConfigMap,
                    }),
                )
            }
        };
        let mut reconciler = Reconciler::new(
            index.clone(),
            backend.store(),
            workloads,
            prom,
            sink,
            metrics.clone(),
            rc.clone(),
            Arc::new(jiff::Timestamp::now),
        )
        .with_deployments(deployments);
        reconciler.journal_written = journal_written.clone();
        let reconciler = Arc::new(reconciler);
        tasks.spawn(reconciler.run(leadership.is_leader.clone(), stop_leading.clone()));
    }
    // One reader of the local subscriptions for delivery and the api both.
    let local_subs = match &backend {
        Backend::Local(store) => Some(Arc::new(LocalSubscriptions::new(store.clone()))),
        _ => None,
    };
    let deliveries = match (&config.delivery, &leadership) {
        (Some(dc), Some(leadership)) => {
            let source: Option<Arc<dyn SubscriptionSource>> = match &backend {
                Backend::Local(_) => local_subs.clone().map(|s| s as Arc<dyn SubscriptionSource>),
                Backend::Kube { store, .. } => {
                    let namespace = match &config.mode {
                        Mode::Kube { namespace } => namespace.clone(),
                        Mode::Local { .. } => None,
                    };
                    let subs = KubeSubscriptions::new(
                        store.client().clone(),
                        namespace,
                        Some(config.lease.identity.clone()),
                    );
                    let watch = subs.spawn_watch(shutdown.clone());
                    tasks.spawn(async move {
                        let _ = watch.await;
                    });
                    Some(subs)
                }
                // Guest mode installs no CRD: there are no ScalingSubscriptions.
                Backend::Guest { .. } => None,
            };
            match source {
                Some(source) => {
                    let deliveries = Deliveries::new(
                        index.clone(),
                        source,
                        dc.clone(),
                        metrics.clone(),
                        Arc::new(jiff::Timestamp::now),
                        journal_written.clone(),
                    )?;
                    tasks.spawn(
                        deliveries
                            .clone()
                            .run(leadership.is_leader.clone(), stop_leading.clone()),
                    );
                    Some(deliveries)
                }
                None => None,
            }
        }
        _ => None,
    };
    let api_addr = match &config.api {
        Some(api) => {
            let client = match &backend {
                Backend::Local(_) => None,
                Backend::Kube { store, .. } => Some(store.client().clone()),
                Backend::Guest { store, .. } => Some(store.client().clone()),
            };
            let parts = crate::http_api::serve::Parts {
                index: index.clone(),
                client,
                local: local_subs.clone(),
                deliveries: deliveries.clone(),
                is_leader: leadership.as_ref().map(|l| l.is_leader.clone()),
                metrics: metrics.clone(),
                tls: tls::server_config(cert, None)?,
                limits: timeouts(listener::Limits::webhook(api.max_connections)),
            };
            Some(
                crate::http_api::serve::spawn(api.clone(), parts, &mut tasks, shutdown.clone())
                    .await?,
            )
        }
        None => {
            if let Mode::Local { .. } = config.mode {
                tracing::info!(
                    "the HTTP API is off: start with --api-token-file FILE (one bearer token per line) to serve it on --api-addr"
                );
            }
            None
        }
    };
    tracing::info!(%webhook_addr, %admin_addr, ?api_addr, store = backend.store().kind(), "konsumer serving");
    Ok(Running {
        webhook_addr,
        admin_addr,
        api_addr,
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
        stop_leading,
        deliveries,
        store: backend.store(),
    })
}

/// `konsumer serve`: runs until SIGTERM or Ctrl-C; a second one exits at once.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let mut signals = Signals::new();
    tls::provider();
    fdlimit::raise();
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
    signals.recv().await;
    tracing::info!("stopping (a second SIGTERM or Ctrl-C stops at once)");
    tokio::select! {
        _ = running.stop() => Ok(()),
        _ = signals.recv() => {
            tracing::warn!("second signal: exiting without waiting for open requests");
            anyhow::bail!("stopped by a second signal before open requests finished")
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the start: a signal that
/// arrives while the server is still starting is not lost (nor kills it).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let (Some(term), Some(int)) = (self.term.as_mut(), self.int.as_mut()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
