//! Starts the api listener (I/O shell): same certificate and bounded listener
//! code as the webhook, its own connection and request limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::auth::Auth;
use super::objects::{KubeObjects, LocalObjects, Objects};
use super::{ApiAuth, ApiConfig, ApiState, router, subscriptions};
use crate::delivery::Deliveries;
use crate::delivery::local::LocalSubscriptions;
use crate::server::listener;
use crate::store::ConsumerIndex;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ListenerLabel;

/// What the api is wired to.
pub struct Parts {
    pub index: Arc<ConsumerIndex>,
    /// The Kubernetes client (kube and guest mode).
    pub client: Option<kube::Client>,
    /// Local mode's subscriptions.
    pub local: Option<Arc<LocalSubscriptions>>,
    pub deliveries: Option<Deliveries>,
    /// Whether this replica delivers now (the lease).
    pub is_leader: Option<tokio::sync::watch::Receiver<bool>>,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<ServerConfig>,
    pub limits: listener::Limits,
}

/// Binds `config.addr` and serves the api until `shutdown`; returns the address.
pub async fn spawn(
    config: ApiConfig,
    parts: Parts,
    tasks: &mut JoinSet<()>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let auth = match (&config.auth, &parts.client) {
        (ApiAuth::TokenFile(path), _) => {
            anyhow::ensure!(
                path.is_file(),
                "--api-token-file {}: not a readable file",
                path.display()
            );
            Auth::token_file(path.clone())
        }
        (ApiAuth::Kube, Some(client)) => Auth::kube(
            client.clone(),
            config.auth_cache_ttl,
            config.audiences.clone(),
        ),
        (ApiAuth::Kube, None) => {
            anyhow::bail!("the api needs --api-token-file in local mode")
        }
    };
    let objects: Option<Arc<dyn Objects>> = match (&parts.local, &parts.client) {
        (Some(local), _) => Some(Arc::new(LocalObjects::new(local.clone()))),
        (None, Some(client)) if !config.guest => Some(Arc::new(KubeObjects {
            client: client.clone(),
        })),
        _ => None,
    };
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("--api-addr {}", config.addr))?;
    let addr = listener.local_addr()?;
    let retire_every = config.retire_every.max(Duration::from_millis(10));
    let mut state = ApiState::new(
        parts.index,
        auth,
        objects,
        parts.deliveries,
        parts.metrics.clone(),
        config,
    );
    state.is_leader = parts.is_leader;
    state.journals = parts
        .local
        .clone()
        .map(|l| l as Arc<dyn crate::delivery::SubscriptionSource>);
    let displaced = parts
        .metrics
        .connections_displaced
        .get_or_create(&ListenerLabel {
            listener: "api".to_string(),
        })
        .clone();
    tasks.spawn(listener::serve(
        listener,
        listener::Options {
            displaced,
            ..listener::Options::new("api", Some(parts.tls), parts.limits)
        },
        TowerToHyperService::new(router(state.clone())),
        shutdown.clone(),
    ));
    // Rotated secrets' grace ends even when nobody calls the api.
    tasks.spawn(async move {
        let mut every = tokio::time::interval(retire_every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => subscriptions::retire_due(&state).await,
            }
        }
    });
    tracing::info!(%addr, "HTTP API serving");
    Ok(addr)
}
