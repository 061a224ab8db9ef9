//! Who reconciles: in kube mode the replica holding a `coordination.k8s.io` Lease
//! (kube-lease-manager); in local mode, always this one.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lease settings (kube mode).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the Pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// The leadership signal and the task that keeps it.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Always the leader (local mode).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            token.cancelled().await;
            tx.send_replace(false);
        });
        Leadership {
            is_leader: rx,
            stop,
            task,
        }
    }

    /// Competes for the Lease in the background (retrying while the API server
    /// cannot be reached); `is_leader` follows the lease.
    ///
    /// Any error while renewing counts as losing the lease at once: the manager
    /// cannot tell whether the renewal reached the API server, and reconciling on
    /// a lease another replica may already hold would make two leaders. The
    /// manager is then rebuilt, and a new one reports `true` again if this
    /// replica is still the holder. `client` should time requests out within
    /// `grace`, so that a hung renewal fails before the lease expires.
    pub fn lease(client: kube::Client, config: LeaseConfig) -> Self {
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            while !token.is_cancelled() {
                let started = tokio::time::Instant::now();
                let outcome = compete(&client, &config, &tx, &token).await;
                if started.elapsed() > Duration::from_secs(60) {
                    // It worked for a while: this is a new outage, not the same one.
                    backoff = Duration::from_millis(500);
                }
                match outcome {
                    Ok(()) => return,
                    Err(e) => {
                        if tx.send_replace(false) {
                            tracing::warn!(error = %describe(&e), lease = %config.name, namespace = %config.namespace, identity = %config.identity,
                                "lease renewal failed; stopped reconciling until the lease is confirmed again");
                        } else {
                            tracing::warn!(error = %describe(&e), lease = %config.name, namespace = %config.namespace, "cannot reach the lease; retrying");
                        }
                    }
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        Leadership {
            is_leader: rx,
            stop,
            task,
        }
    }

    /// Stops competing and gives the lease up, waiting at most `grace`.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
    }
}

/// A lease error for people (the API server's answer, not a `Debug` dump).
fn describe(e: &LeaseManagerError) -> String {
    match e {
        LeaseManagerError::KubeError(e) => crate::store::kube::describe(e),
        other => other.to_string(),
    }
}

/// One manager's life: follows the lease until `token` is cancelled (then gives it
/// up and returns `Ok`) or the API server fails (returns the error; the caller has
/// to treat the lease as lost).
async fn compete(
    client: &kube::Client,
    config: &LeaseConfig,
    tx: &watch::Sender<bool>,
    token: &CancellationToken,
) -> Result<(), LeaseManagerError> {
    let duration = config.duration.as_secs().max(2);
    let grace = config.grace.as_secs().clamp(1, duration - 1);
    let built = LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(grace)
        .build();
    let manager: LeaseManager = tokio::select! {
        _ = token.cancelled() => return Ok(()),
        built = built => built?,
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            changed = manager.changed() => {
                let leading = changed?;
                tracing::info!(identity = %config.identity, leading, "lease changed");
                tx.send_replace(leading);
            }
        }
    }
    let was_leading = tx.send_replace(false);
    if was_leading {
        match manager.release().await {
            Ok(()) => tracing::info!(lease = %config.name, "lease released"),
            Err(e) => {
                tracing::warn!(error = %describe(&e), lease = %config.name, "lease not released cleanly; it expires by itself")
            }
        }
    }
    Ok(())
}
