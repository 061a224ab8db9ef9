//! The in-memory view of all Consumers: what every webhook request reads. Each entry
//! is resolved once (`ConsumerSettings`) when it changes, not per request.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tokio::sync::watch;

use crate::api::shared::Pool;
use crate::api::{Consumer, ConsumerStatus};
use crate::inject::ConsumerSettings;
use crate::inject::settings::SettingsError;

/// A Consumer as the webhook uses it.
#[derive(Debug)]
pub struct CachedConsumer {
    pub consumer: Arc<Consumer>,
    /// The resolved settings, or why this Consumer cannot be served.
    pub settings: Result<ConsumerSettings, SettingsError>,
    /// `namespace/name`, made once: every pass asks it of every Consumer.
    key: Box<str>,
}

impl CachedConsumer {
    pub fn new(consumer: Consumer) -> Self {
        Self::of_kept(kept(consumer))
    }

    /// From what [`kept`] made of a Consumer.
    fn of_kept(consumer: Consumer) -> Self {
        let settings = ConsumerSettings::from_consumer(&consumer);
        CachedConsumer {
            key: consumer.key().into(),
            consumer: Arc::new(consumer),
            settings,
        }
    }

    /// The Consumer's `namespace/name` ([`Consumer::key`]).
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// kubectl's copy of the object it last applied, as text.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the cache keeps of a Consumer: its parts shared with the other cached
/// Consumers ([`Consumer::share_parts`]), and without what the API server
/// keeps for others and nothing in konsumer reads: `managedFields` and kubectl's
/// last-applied annotation (each about the size of the object again).
fn kept(mut consumer: Consumer) -> Consumer {
    consumer.metadata.managed_fields = None;
    if let Some(annotations) = &mut consumer.metadata.annotations {
        annotations.remove(LAST_APPLIED);
    }
    share(&mut consumer);
    consumer
}

/// The Consumer's parts shared with the other cached Consumers: those
/// [`Consumer::share_parts`] shares, and the status' conditions.
fn share(consumer: &mut Consumer) {
    static CONDITIONS: LazyLock<Pool<Vec<Condition>>> = LazyLock::new(Pool::default);
    consumer.share_parts();
    if let Some(status) = &mut consumer.status {
        status.share_conditions(&CONDITIONS);
    }
}

type Namespaces = HashMap<String, HashMap<String, Arc<CachedConsumer>>>;

/// Consumers by namespace and name, plus "synced" and "changed" signals.
pub struct ConsumerIndex {
    entries: RwLock<Namespaces>,
    synced: watch::Sender<bool>,
    changes: watch::Sender<u64>,
}

impl Default for ConsumerIndex {
    fn default() -> Self {
        ConsumerIndex {
            entries: RwLock::new(HashMap::new()),
            synced: watch::channel(false).0,
            changes: watch::channel(0).0,
        }
    }
}

fn names(c: &Consumer) -> (String, String) {
    (
        c.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        c.metadata.name.clone().unwrap_or_default(),
    )
}

impl ConsumerIndex {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedConsumer>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(namespace).and_then(|ns| ns.get(name)).cloned()
    }

    /// Inserts or replaces one Consumer.
    pub fn upsert(&self, consumer: Consumer) -> Arc<CachedConsumer> {
        let (ns, name) = names(&consumer);
        let entry = Arc::new(CachedConsumer::new(consumer));
        {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            entries.entry(ns).or_default().insert(name, entry.clone());
        }
        self.bump();
        entry
    }

    /// Replaces the status of the cached Consumer (its spec as cached now), if any.
    pub fn set_status(&self, namespace: &str, name: &str, status: ConsumerStatus) -> bool {
        let updated = {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = entries.get_mut(namespace).and_then(|ns| ns.get_mut(name)) else {
                return false;
            };
            let mut consumer = (*slot.consumer).clone();
            consumer.status = Some(status);
            share(&mut consumer);
            *slot = Arc::new(CachedConsumer::of_kept(consumer));
            true
        };
        self.bump();
        updated
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        let removed = {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let removed = entries.get_mut(namespace).and_then(|ns| ns.remove(name));
            if entries.get(namespace).is_some_and(HashMap::is_empty) {
                entries.remove(namespace);
            }
            removed
        };
        if removed.is_some() {
            self.bump();
        }
    }

    /// Replaces the whole content (a relist), keeping entries whose object did not
    /// change so their resolved settings are not recomputed.
    pub fn replace_all(&self, consumers: Vec<Consumer>) {
        let mut fresh: Namespaces = HashMap::new();
        {
            let current = self.entries.read().unwrap_or_else(|e| e.into_inner());
            for consumer in consumers {
                let consumer = kept(consumer);
                let (ns, name) = names(&consumer);
                let entry = match current.get(&ns).and_then(|m| m.get(&name)) {
                    Some(old) if *old.consumer == consumer => old.clone(),
                    _ => Arc::new(CachedConsumer::of_kept(consumer)),
                };
                fresh.entry(ns).or_default().insert(name, entry);
            }
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.bump();
    }

    /// Every cached Consumer (for the reconciler), in a stable order.
    pub fn all(&self) -> Vec<Arc<CachedConsumer>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = entries.values().flat_map(|m| m.values().cloned()).collect();
        // By (namespace, name) without building a key per comparison: 10,000
        // Consumers made 280,000 strings a pass.
        fn key(c: &CachedConsumer) -> (&str, &str) {
            (
                c.consumer
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or("default"),
                c.consumer.metadata.name.as_deref().unwrap_or_default(),
            )
        }
        out.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        out
    }

    pub fn len(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the first full sync done (readiness waits for it).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A receiver that sees a new value on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::Shared;

    fn consumer(ns: &str, name: &str, partitions: i32) -> Consumer {
        let mut c = Consumer::new(name, Default::default());
        c.metadata.namespace = Some(ns.into());
        c.spec.num_partitions = Some(partitions);
        c
    }

    #[test]
    fn lookups_are_by_namespace_and_name() {
        let index = ConsumerIndex::new();
        index.upsert(consumer("a", "orders", 3));
        index.upsert(consumer("b", "orders", 5));
        let a = index.get("a", "orders").unwrap();
        assert_eq!(a.settings.as_ref().unwrap().num_partitions(), 3);
        assert!(index.get("c", "orders").is_none());
        index.remove("a", "orders");
        assert!(index.get("a", "orders").is_none());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn replace_all_keeps_unchanged_entries_and_drops_missing_ones() {
        let index = ConsumerIndex::new();
        let kept = index.upsert(consumer("a", "x", 3));
        index.upsert(consumer("a", "gone", 3));
        let mut rx = index.subscribe();
        rx.mark_unchanged();
        index.replace_all(vec![consumer("a", "x", 3), consumer("a", "y", 4)]);
        assert!(Arc::ptr_eq(&kept, &index.get("a", "x").unwrap()));
        assert!(index.get("a", "gone").is_none());
        assert!(index.get("a", "y").is_some());
        assert!(rx.has_changed().unwrap());
    }

    /// The orders fixture named `name`, its status recommending the fallback
    /// to every instance (as a status after an unreachable Prometheus does).
    fn orders_with_status(name: &str) -> Consumer {
        use crate::api::InstanceStatus;
        let mut c = crate::api::test_orders();
        c.metadata.name = Some(name.into());
        let settings = ConsumerSettings::from_consumer(&c).unwrap();
        let instances = (0..settings.instances())
            .map(|id| {
                let plan = settings.instance(id).unwrap();
                InstanceStatus {
                    id: id as i32,
                    partitions: plan.partitions.map(|p| p as i32).collect(),
                    resources: plan.targets.iter().map(|t| t.to_status()).collect(),
                    ..Default::default()
                }
            })
            .collect();
        c.status = Some(ConsumerStatus {
            instances: Some(instances),
            ..Default::default()
        });
        c
    }

    #[test]
    fn cached_consumers_hold_one_copy_of_equal_resource_lists_and_targets() {
        let index = ConsumerIndex::new();
        let a = index.upsert(orders_with_status("a"));
        let b = index.upsert(orders_with_status("b"));
        let lists = |c: &CachedConsumer| {
            let policy = c.consumer.spec.container_policies()[0].clone();
            let status = c.consumer.status.clone().unwrap().instances.unwrap();
            let first = status[0].resources[0].clone();
            let last = status.last().unwrap().resources[0].clone();
            (policy.min_allowed.unwrap(), first.requests, last.limits)
        };
        let (a_policy, a_first, a_last) = lists(&a);
        let (b_policy, b_first, b_last) = lists(&b);
        assert!(a_policy.shares_with(&b_policy));
        assert!(a_first.shares_with(&b_first));
        assert!(a_last.shares_with(&b_last));
        // Requests and limits of the fallback are equal: one copy for both.
        assert!(a_first.shares_with(&a_last));
        let targets = |c: &CachedConsumer, id| {
            let settings = c.settings.as_ref().unwrap();
            settings.instance(id).unwrap().targets as *const _
        };
        assert!(std::ptr::eq(targets(&a, 0), targets(&b, 0)));
        assert!(std::ptr::eq(targets(&a, 0), targets(&a, 3)));

        let template = |c: &CachedConsumer| c.consumer.spec.deployment_template.clone().unwrap();
        assert!(template(&a).shares_with(&template(&b)));
        let autoscaler = |c: &CachedConsumer| c.consumer.spec.autoscaler.clone().unwrap();
        assert!(crate::api::Shared::ptr_eq(&autoscaler(&a), &autoscaler(&b)));

        // A status write keeps sharing.
        let status = orders_with_status("b").status.unwrap();
        assert!(index.set_status("streams", "b", status));
        let (_, again, _) = lists(&index.get("streams", "b").unwrap());
        assert!(a_first.shares_with(&again));
    }

    #[test]
    fn the_cache_drops_managed_fields_and_the_last_applied_copy_and_keeps_other_annotations() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let index = ConsumerIndex::new();
        let mut c = consumer("a", "x", 3);
        c.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        c.metadata.annotations = Some(
            [
                (
                    LAST_APPLIED.to_string(),
                    "{\"kind\":\"Consumer\"}".to_string(),
                ),
                (
                    crate::api::keys::DISABLE_AUTOSCALER.to_string(),
                    "true".into(),
                ),
            ]
            .into(),
        );
        let cached = index.upsert(c.clone());
        assert_eq!(cached.consumer.metadata.managed_fields, None);
        let annotations = cached.consumer.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [crate::api::keys::DISABLE_AUTOSCALER]
        );
        // The same object listed again is the same cached entry.
        index.replace_all(vec![c]);
        assert!(Arc::ptr_eq(&cached, &index.get("a", "x").unwrap()));
    }

    #[test]
    fn equal_conditions_of_cached_consumers_are_held_once_and_changed_apart() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let condition = |message: &str| Condition {
            type_: "MetricsAvailable".into(),
            status: "False".into(),
            reason: "PrometheusUnavailable".into(),
            message: message.into(),
            last_transition_time: Time("2026-11-30T12:00:00Z".parse().unwrap()),
            observed_generation: Some(1),
        };
        let status = |message: &str| ConsumerStatus {
            conditions: Some(vec![condition(message)].into()),
            ..ConsumerStatus::default()
        };
        let index = ConsumerIndex::new();
        index.upsert(consumer("a", "x", 3));
        index.upsert(consumer("a", "y", 3));
        let mut loaded = consumer("a", "z", 3);
        loaded.status = Some(status("connection refused"));
        index.upsert(loaded);
        index.set_status("a", "x", status("connection refused"));
        index.set_status("a", "y", status("connection refused"));
        let held = |name: &str| {
            index
                .get("a", name)
                .unwrap()
                .consumer
                .status
                .as_ref()
                .unwrap()
                .conditions
                .clone()
                .unwrap()
        };
        assert!(Shared::ptr_eq(&held("x"), &held("y")));
        assert!(
            Shared::ptr_eq(&held("x"), &held("z")),
            "a status read with its Consumer too"
        );

        // A change to one copy is that Consumer's alone.
        let mut next = index
            .get("a", "y")
            .unwrap()
            .consumer
            .status
            .clone()
            .unwrap();
        next.conditions.as_mut().unwrap()[0].message = "timeout".into();
        index.set_status("a", "y", next);
        assert_eq!(held("y")[0].message, "timeout");
        assert_eq!(held("x")[0].message, "connection refused");
        assert_eq!(held("z")[0].message, "connection refused");
        assert_eq!(
            serde_json::to_value(
                index
                    .get("a", "x")
                    .unwrap()
                    .consumer
                    .status
                    .as_ref()
                    .unwrap()
            )
            .unwrap(),
            serde_json::to_value(status("connection refused")).unwrap()
        );
    }
}
