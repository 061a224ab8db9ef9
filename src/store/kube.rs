//! Kube mode: Consumers from a watch (all namespaces or one), status written through
//! the status subresource with server-side apply.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{ConsumerIndex, Store, StoreError};
use crate::api::{Consumer, ConsumerStatus, GROUP, VERSION_V1};

/// Field manager of every write konsumer makes.
pub const FIELD_MANAGER: &str = "konsumer";

pub struct KubeStore {
    client: Client,
    namespace: Option<String>,
    index: Arc<ConsumerIndex>,
}

impl KubeStore {
    /// `namespace`: watch only this namespace (`--namespace`), else all.
    pub fn new(client: Client, namespace: Option<String>, index: Arc<ConsumerIndex>) -> Self {
        KubeStore {
            client,
            namespace,
            index,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn watched(&self) -> Api<Consumer> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Keeps the index equal to the API server's Consumers until `shutdown`.
    /// The index is marked synced after the first complete list.
    pub fn spawn_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let api = self.watched();
        let index = self.index.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Option<Vec<Consumer>> = None;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = stream.next() => event,
                };
                match event {
                    Some(Ok(watcher::Event::Init)) => relist = Some(Vec::new()),
                    Some(Ok(watcher::Event::InitApply(c))) => {
                        relist.get_or_insert_with(Vec::new).push(c);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let consumers = relist.take().unwrap_or_default();
                        tracing::info!(consumers = consumers.len(), "Consumer cache synced");
                        index.replace_all(consumers);
                        index.mark_synced();
                    }
                    Some(Ok(watcher::Event::Apply(c))) => {
                        tracing::debug!(consumer = %c.key(), "Consumer changed");
                        index.upsert(c);
                    }
                    Some(Ok(watcher::Event::Delete(c))) => {
                        tracing::debug!(consumer = %c.key(), "Consumer deleted");
                        index.remove(&c.namespace().unwrap_or_default(), &c.name_any());
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "Consumer watch failed; retrying"),
                    None => break,
                }
            }
        })
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Consumer>, StoreError> {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return Ok(None);
        }
        let api: Api<Consumer> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(name).await?;
        if let Some(c) = &found {
            self.index.insert_if_absent(c.clone());
        }
        Ok(found)
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        let api: Api<Consumer> = Api::namespaced(self.client.clone(), namespace);
        let body = serde_json::json!({
            "apiVersion": format!("{GROUP}/{VERSION_V1}"),
            "kind": "Consumer",
            "status": status,
        });
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "kube"
    }
}
