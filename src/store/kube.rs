//! Kube mode: Consumers from a watch (all namespaces or one), status written through
//! the status subresource with server-side apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{CachedConsumer, ConsumerIndex, Store, StoreError};
use crate::api::{Consumer, ConsumerStatus, GROUP, VERSION_V1};

/// A Kubernetes API error for people: the status code, reason and message, and
/// what a 401/403 means for konsumer — never kube-rs's `Debug` dump of the Status.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => " (konsumer's credentials were refused)",
                403 => " (konsumer's RBAC does not allow this call: see manifests/base/rbac.yaml)",
                _ => "",
            };
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" {}", status.reason)
            };
            format!(
                "the API server answered {}{reason}: {}{hint}",
                status.code, status.message
            )
        }
        other => other.to_string(),
    }
}

/// A watch error for people (see [`describe`]).
pub fn describe_watch(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(e) => format!("listing failed: {}", describe(e)),
        watcher::Error::WatchStartFailed(e) => {
            format!("starting the watch failed: {}", describe(e))
        }
        watcher::Error::WatchFailed(e) => format!("the watch failed: {}", describe(e)),
        watcher::Error::WatchError(status) => format!(
            "the API server ended the watch: {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}

/// Field manager of every write konsumer makes.
pub const FIELD_MANAGER: &str = "konsumer";

/// How long a Consumer read past the cache answers further misses (the Pods of a
/// new Deployment arrive together, before the watch delivers their Consumer).
pub const DIRECT_READ_TTL: Duration = Duration::from_secs(5);

type Direct = HashMap<(String, String), (Instant, Arc<CachedConsumer>)>;

pub struct KubeStore {
    client: Client,
    namespace: Option<String>,
    index: Arc<ConsumerIndex>,
    /// Direct reads, kept apart from the index: the index follows the watch only,
    /// so a read that raced a deletion cannot bring a deleted Consumer back for
    /// good; at worst it answers for `DIRECT_READ_TTL`.
    direct: Mutex<Direct>,
}

impl KubeStore {
    /// `namespace`: watch only this namespace (`--namespace`), else all.
    pub fn new(client: Client, namespace: Option<String>, index: Arc<ConsumerIndex>) -> Self {
        KubeStore {
            client,
            namespace,
            index,
            direct: Mutex::new(HashMap::new()),
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
        let this = self.clone();
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
                        this.forget_direct(None);
                    }
                    Some(Ok(watcher::Event::Apply(c))) => {
                        tracing::debug!(consumer = %c.key(), "Consumer changed");
                        index.upsert(c);
                    }
                    Some(Ok(watcher::Event::Delete(c))) => {
                        tracing::debug!(consumer = %c.key(), "Consumer deleted");
                        let (ns, name) = (c.namespace().unwrap_or_default(), c.name_any());
                        index.remove(&ns, &name);
                        this.forget_direct(Some((ns, name)));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %describe_watch(&e), "Consumer watch failed; retrying")
                    }
                    None => break,
                }
            }
        })
    }
}

impl KubeStore {
    /// Drops one direct read (its Consumer was deleted), or all (a relist).
    fn forget_direct(&self, key: Option<(String, String)>) {
        let mut direct = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(key) => {
                direct.remove(&key);
            }
            None => direct.clear(),
        }
    }

    fn recent_direct(&self, key: &(String, String)) -> Option<Arc<CachedConsumer>> {
        let direct = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        direct
            .get(key)
            .filter(|(at, _)| at.elapsed() < DIRECT_READ_TTL)
            .map(|(_, c)| c.clone())
    }
}

#[async_trait]
impl Store for KubeStore {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return Ok(None);
        }
        if let Some(c) = self.index.get(namespace, name) {
            return Ok(Some(c));
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(c) = self.recent_direct(&key) {
            return Ok(Some(c));
        }
        let api: Api<Consumer> = Api::namespaced(self.client.clone(), namespace);
        let Some(found) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let cached = Arc::new(CachedConsumer::new(found));
        let mut direct = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        direct.retain(|_, (at, _)| at.elapsed() < DIRECT_READ_TTL);
        direct.insert(key, (Instant::now(), cached.clone()));
        Ok(Some(cached))
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

    fn watches(&self, namespace: &str) -> Result<(), String> {
        match &self.namespace {
            Some(watched) if watched != namespace => {
                Err(format!("namespace {watched:?} only (--namespace)"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn api_errors_read_as_sentences_not_debug_dumps() {
        let e = api_error(404, "NotFound", "namespaces \"konsumer-sytem\" not found");
        let text = describe(&e);
        assert_eq!(
            text,
            "the API server answered 404 NotFound: namespaces \"konsumer-sytem\" not found"
        );
        assert!(
            e.to_string().contains("Status {"),
            "kube-rs's own form dumps"
        );
        let store = crate::store::StoreError::from(e).to_string();
        assert!(
            !store.contains("Status {") && store.contains("404 NotFound"),
            "{store}"
        );
        let forbidden = describe(&api_error(403, "Forbidden", "leases is forbidden"));
        assert!(
            forbidden.contains("manifests/base/rbac.yaml"),
            "{forbidden}"
        );
        let watch = describe_watch(&watcher::Error::InitialListFailed(api_error(
            403,
            "Forbidden",
            "no",
        )));
        assert!(!watch.contains('{'), "{watch}");
    }
}
