//! Kube mode: ScalingSubscriptions from a watch, Secrets read by name (briefly
//! cached: a rotated key is picked up within [`SECRET_TTL`]), namespace labels by
//! name, the status written through the status subresource with server-side
//! apply (field manager `konsumer`), and Warning Events on the subscription.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio_util::sync::CancellationToken;

use super::{SecretValue, SourceError, SubscriptionSource};
use crate::api::subscription::{SUBSCRIPTION_GROUP, SUBSCRIPTION_VERSION};
use crate::api::{ScalingSubscription, SubscriptionStatus};
use crate::store::kube::FIELD_MANAGER;

/// How long a Secret read answers again.
pub const SECRET_TTL: Duration = Duration::from_secs(10);
const NAMESPACE_TTL: Duration = Duration::from_secs(60);

type NamespaceCache = HashMap<String, (Instant, Option<BTreeMap<String, String>>)>;
type SecretCache =
    HashMap<(String, String), (Instant, Result<Option<BTreeMap<String, String>>, String>)>;

pub struct KubeSubscriptions {
    client: Client,
    namespace: Option<String>,
    subs: Mutex<BTreeMap<String, Arc<ScalingSubscription>>>,
    secrets: Mutex<SecretCache>,
    namespaces: Mutex<NamespaceCache>,
    recorder: Recorder,
}

impl KubeSubscriptions {
    /// `namespace`: only subscriptions of this namespace (`--namespace`), else all.
    pub fn new(client: Client, namespace: Option<String>, instance: Option<String>) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "konsumer".into(),
                instance,
            },
        );
        Arc::new(KubeSubscriptions {
            client,
            namespace,
            subs: Mutex::new(BTreeMap::new()),
            secrets: Mutex::new(HashMap::new()),
            namespaces: Mutex::new(HashMap::new()),
            recorder,
        })
    }

    /// Keeps the subscriptions equal to the API server's until `shutdown`.
    pub fn spawn_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let api: Api<ScalingSubscription> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Option<BTreeMap<String, Arc<ScalingSubscription>>> = None;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = stream.next() => event,
                };
                let mut subs = this.subs.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Some(Ok(watcher::Event::Init)) => relist = Some(BTreeMap::new()),
                    Some(Ok(watcher::Event::InitApply(s))) => {
                        relist
                            .get_or_insert_with(BTreeMap::new)
                            .insert(s.key(), Arc::new(s));
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        *subs = relist.take().unwrap_or_default();
                        tracing::info!(
                            subscriptions = subs.len(),
                            "ScalingSubscription cache synced"
                        );
                    }
                    Some(Ok(watcher::Event::Apply(s))) => {
                        subs.insert(s.key(), Arc::new(s));
                    }
                    Some(Ok(watcher::Event::Delete(s))) => {
                        subs.remove(&s.key());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "ScalingSubscription watch failed; retrying")
                    }
                    None => break,
                }
            }
        })
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[async_trait]
impl SubscriptionSource for KubeSubscriptions {
    async fn subscriptions(&self) -> Result<Vec<Arc<ScalingSubscription>>, SourceError> {
        let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        Ok(subs.values().cloned().collect())
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<SecretValue, SourceError> {
        let cache_key = (namespace.to_string(), name.to_string());
        let cached = {
            let cache = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .get(&cache_key)
                .filter(|(at, _)| at.elapsed() < SECRET_TTL)
                .map(|(_, v)| v.clone())
        };
        let data = match cached {
            Some(d) => d,
            None => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let read = match api.get_opt(name).await {
                    Ok(found) => Ok(found.map(|s| {
                        let mut values: BTreeMap<String, String> = s
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                            .collect();
                        values.extend(s.string_data.unwrap_or_default());
                        values
                    })),
                    Err(e) if status_code(&e) == Some(403) => Err(format!(
                        "konsumer may not read Secret {namespace}/{name} (403 Forbidden): grant it get on this Secret"
                    )),
                    Err(e) => return Err(e.into()),
                };
                let mut cache = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
                cache.retain(|_, (at, _)| at.elapsed() < SECRET_TTL);
                cache.insert(cache_key, (Instant::now(), read.clone()));
                read
            }
        };
        Ok(match data {
            Err(forbidden) => SecretValue::Forbidden(forbidden),
            Ok(None) => SecretValue::Missing(format!("Secret {namespace}/{name} not found")),
            Ok(Some(values)) => match values.get(key) {
                Some(v) => SecretValue::Found(v.clone()),
                None => {
                    SecretValue::Missing(format!("Secret {namespace}/{name} has no key {key:?}"))
                }
            },
        })
    }

    async fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        {
            let cache = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, labels)) = cache.get(namespace)
                && at.elapsed() < NAMESPACE_TTL
            {
                return labels.clone();
            }
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let labels = match api.get_opt(namespace).await {
            Ok(found) => found.map(|n| n.metadata.labels.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(namespace, error = %e, "cannot read a namespace's labels (namespaceSelector)");
                None
            }
        };
        let mut cache = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(namespace.to_string(), (Instant::now(), labels.clone()));
        labels
    }

    async fn write_status(
        &self,
        sub: &ScalingSubscription,
        status: &SubscriptionStatus,
    ) -> Result<(), SourceError> {
        let ns = sub.metadata.namespace.as_deref().unwrap_or("default");
        let name = sub.metadata.name.as_deref().unwrap_or_default();
        let api: Api<ScalingSubscription> = Api::namespaced(self.client.clone(), ns);
        let body = serde_json::json!({
            "apiVersion": format!("{SUBSCRIPTION_GROUP}/{SUBSCRIPTION_VERSION}"),
            "kind": "ScalingSubscription",
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

    async fn warn(&self, sub: &ScalingSubscription, reason: &str, message: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(crate::delivery::connector::truncate(message, 1000)),
            action: "Deliver".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &sub.object_ref(&())).await {
            tracing::warn!(subscription = %sub.key(), error = %e, "cannot record a Kubernetes Event");
        }
    }
}
