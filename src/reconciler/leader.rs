//! Who reconciles: in kube mode the replica holding a `coordination.k8s.io` Lease
//! (kube-lease-manager); in local mode, always this one.

use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
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
    pub fn lease(client: kube::Client, config: LeaseConfig) -> Self {
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let duration = config.duration.as_secs().max(2);
            let grace = config.grace.as_secs().clamp(1, duration - 1);
            let mut backoff = Duration::from_millis(500);
            let manager = loop {
                let built = LeaseManagerBuilder::new(client.clone(), &config.name)
                    .with_namespace(&config.namespace)
                    .with_identity(&config.identity)
                    .with_duration(duration)
                    .with_grace(grace)
                    .build();
                tokio::select! {
                    _ = token.cancelled() => return,
                    built = built => match built {
                        Ok(m) => break m,
                        Err(e) => tracing::warn!(error = %e, lease = %config.name, "cannot set up the lease; retrying"),
                    },
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            };
            let (mut inner, handle) = manager.watch().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    changed = inner.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let leading = *inner.borrow_and_update();
                        tracing::info!(identity = %config.identity, leading, "lease changed");
                        tx.send_replace(leading);
                    }
                }
            }
            tx.send_replace(false);
            // Dropping the receiver makes the manager release the lease.
            drop(inner);
            match handle.await {
                Ok(Ok(_)) => tracing::info!(lease = %config.name, "lease released"),
                Ok(Err(e)) => tracing::warn!(error = %e, "lease not released cleanly"),
                Err(e) => tracing::warn!(error = %e, "lease task failed"),
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
