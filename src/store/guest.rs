//! Guest mode (Konsumerator's): no CRD and no cluster-wide permission.
//! Consumers are the ConfigMaps of one namespace annotated
//! `konsumerator.lwolf.org/managed`; their status goes into the ConfigMap's
//! annotations (a JSON merge patch). A ConfigMap whose spec konsumer cannot
//! use is reported on it (annotation `konsumer.dev/spec-problems` and a Warning
//! Event, by the leader) and never stops anything else; an invalid edit keeps
//! the last good spec in force, as the API server keeps an object whose update
//! a validating webhook refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kube::{DIRECT_READ_TTL, FIELD_MANAGER};
use super::{CachedConsumer, ConsumerIndex, Store, StoreError};
use crate::api::guest::{self, annotations};
use crate::api::{Consumer, ConsumerStatus};
use crate::notice::Notice;
use crate::reconciler::TransitionSink;

/// A ConfigMap konsumer cannot read as a Consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    uid: Option<String>,
    problems: Vec<String>,
    /// The annotation says exactly this already.
    reported: bool,
}

#[derive(Default)]
struct Reports {
    problems: BTreeMap<String, Problem>,
    /// Fixed ConfigMaps whose problem annotation is still there.
    to_clear: BTreeMap<String, Option<String>>,
}

pub struct GuestStore {
    client: Client,
    namespace: String,
    index: Arc<ConsumerIndex>,
    reports: Mutex<Reports>,
    direct: Mutex<HashMap<String, (Instant, Arc<CachedConsumer>)>>,
}

impl GuestStore {
    pub fn new(client: Client, namespace: String, index: Arc<ConsumerIndex>) -> Self {
        GuestStore {
            client,
            namespace,
            index,
            reports: Mutex::new(Reports::default()),
            direct: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Takes in one ConfigMap seen by the watch.
    fn take(&self, cm: &ConfigMap) {
        let name = cm.name_any();
        if !guest::is_consumer(cm) {
            self.index.remove(&self.namespace, &name);
            self.lock().problems.remove(&name);
            return;
        }
        let has_annotation = cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(annotations::SPEC_PROBLEMS));
        match guest::consumer(cm) {
            Ok(consumer) => {
                let mut reports = self.lock();
                reports.problems.remove(&name);
                if has_annotation.is_some() {
                    reports
                        .to_clear
                        .insert(name.clone(), cm.metadata.uid.clone());
                } else {
                    reports.to_clear.remove(&name);
                }
                drop(reports);
                self.index.upsert(consumer);
            }
            Err(problems) => {
                let reported = has_annotation.is_some_and(|text| {
                    guest::problems_patch(Some(&problems))["metadata"]["annotations"]
                        [annotations::SPEC_PROBLEMS]
                        == text.as_str()
                });
                let mut reports = self.lock();
                let known = reports.problems.get(&name);
                if known.is_none_or(|p| p.problems != problems) {
                    tracing::warn!(configmap = %name, problems = %problems.join("; "), "a guest-mode ConfigMap is not a usable Consumer; the last good spec (if any) stays in force");
                }
                reports.problems.insert(
                    name,
                    Problem {
                        uid: cm.metadata.uid.clone(),
                        problems,
                        reported,
                    },
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the index equal to the namespace's Consumer ConfigMaps until `shutdown`.
    pub fn spawn_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let stream = watcher(this.api(), watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Option<Vec<ConfigMap>> = None;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = stream.next() => event,
                };
                match event {
                    Some(Ok(watcher::Event::Init)) => relist = Some(Vec::new()),
                    Some(Ok(watcher::Event::InitApply(cm))) => {
                        relist.get_or_insert_with(Vec::new).push(cm);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let all = relist.take().unwrap_or_default();
                        let present: Vec<String> = all.iter().map(|c| c.name_any()).collect();
                        for old in this.index.all() {
                            let name = old.consumer.metadata.name.clone().unwrap_or_default();
                            if !present.contains(&name) {
                                this.index.remove(&this.namespace, &name);
                            }
                        }
                        this.lock().problems.retain(|n, _| present.contains(n));
                        for cm in &all {
                            this.take(cm);
                        }
                        tracing::info!(consumers = this.index.len(), namespace = %this.namespace, "guest-mode ConfigMaps synced");
                        this.index.mark_synced();
                    }
                    Some(Ok(watcher::Event::Apply(cm))) => this.take(&cm),
                    Some(Ok(watcher::Event::Delete(cm))) => {
                        let name = cm.name_any();
                        this.index.remove(&this.namespace, &name);
                        this.lock().problems.remove(&name);
                        this.direct
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&name);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "ConfigMap watch failed; retrying"),
                    None => break,
                }
            }
        })
    }

    /// While this replica leads: writes what is wrong with each unusable
    /// ConfigMap onto it (and a Warning Event, once), and removes the note once
    /// it is fixed.
    pub fn spawn_reporter(
        self: &Arc<Self>,
        mut leader: watch::Receiver<bool>,
        events: Option<Arc<dyn TransitionSink>>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                    changed = leader.changed() => if changed.is_err() { break },
                }
                if *leader.borrow() {
                    this.report(events.as_deref()).await;
                }
            }
        })
    }

    async fn report(&self, events: Option<&dyn TransitionSink>) {
        let (pending, to_clear) = {
            let reports = self.lock();
            let pending: Vec<(String, Problem)> = reports
                .problems
                .iter()
                .filter(|(_, p)| !p.reported)
                .map(|(n, p)| (n.clone(), p.clone()))
                .collect();
            (pending, reports.to_clear.clone())
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        for (name, problem) in pending {
            let patch = guest::problems_patch(Some(&problem.problems));
            match self
                .api()
                .patch(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Some(p) = self.lock().problems.get_mut(&name) {
                        p.reported = true;
                    }
                    if let Some(events) = events {
                        let mut about = Consumer::new(&name, Default::default());
                        about.metadata.namespace = Some(self.namespace.clone());
                        about.metadata.uid = problem.uid.clone();
                        let notice = Notice {
                            warning: true,
                            reason: "InvalidConsumerSpec".into(),
                            action: "ReadSpec".into(),
                            note: format!(
                                "konsumer cannot use this ConsumerSpec: {}",
                                problem.problems.join("; ")
                            ),
                            instance: None,
                            deployment: None,
                        };
                        events.notify(&about, &notice).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "cannot note the spec problems on the ConfigMap")
                }
            }
        }
        for (name, _) in to_clear {
            match self
                .api()
                .patch(&name, &params, &Patch::Merge(&guest::problems_patch(None)))
                .await
            {
                Ok(_) => {
                    self.lock().to_clear.remove(&name);
                }
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "cannot remove the spec problems note from the ConfigMap")
                }
            }
        }
    }
}

#[async_trait]
impl Store for GuestStore {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        if namespace != self.namespace {
            return Ok(None);
        }
        if let Some(c) = self.index.get(namespace, name) {
            return Ok(Some(c));
        }
        if let Some((at, c)) = self
            .direct
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            && at.elapsed() < DIRECT_READ_TTL
        {
            return Ok(Some(c.clone()));
        }
        let Some(cm) = self.api().get_opt(name).await? else {
            return Ok(None);
        };
        if !guest::is_consumer(&cm) {
            return Ok(None);
        }
        let Ok(consumer) = guest::consumer(&cm) else {
            return Ok(None);
        };
        let cached = Arc::new(CachedConsumer::new(consumer));
        let mut direct = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        direct.retain(|_, (at, _)| at.elapsed() < DIRECT_READ_TTL);
        direct.insert(name.to_string(), (Instant::now(), cached.clone()));
        Ok(Some(cached))
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let patch = guest::status_patch(status);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(name, &params, &Patch::Merge(&patch)).await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "guest"
    }
}
