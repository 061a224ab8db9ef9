//! Where Consumers come from and where their status goes: one interface with a
//! local side (YAML files + an embedded database), a Kubernetes side (watch +
//! status subresource) and guest mode's (ConfigMaps of one namespace, status in
//! their annotations). All fill the same in-memory index the webhooks read.

pub mod guest;
pub mod index;
pub mod kube;
pub mod local;

use std::sync::Arc;

use async_trait::async_trait;

use crate::api::ConsumerStatus;

pub use index::{CachedConsumer, ConsumerIndex};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Kubernetes API: {}", kube::describe(.0))]
    Kube(#[from] ::kube::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded store {path}: {message}")]
    Database { path: String, message: String },
    #[error("Consumer {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Encoding(#[from] serde_json::Error),
}

/// The operations konsumer needs beyond the cache.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one Consumer past the cache (a cache miss is re-checked once before a
    /// workload is denied: a Consumer and its workloads are often applied together).
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CachedConsumer>>, StoreError>;

    /// Records a Consumer's status (the reconciler's output).
    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError>;

    /// A short name for logs and metrics: `local` or `kube`.
    fn kind(&self) -> &'static str;

    /// `Err(what konsumer does watch)` when Consumers in `namespace` are not
    /// watched (`--namespace`): a workload there is told so, not "no Consumer".
    fn watches(&self, namespace: &str) -> Result<(), String> {
        let _ = namespace;
        Ok(())
    }

    /// Why status cannot be written now (the last write failed and the store has
    /// not recovered since), for readiness and `konsumer_store_writable`.
    fn status_write_problem(&self) -> Option<String> {
        None
    }
}
