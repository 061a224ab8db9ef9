//! The Deployment manager (I/O shell around [`crate::manage`]): lists the
//! Deployments konsumer may manage once per pass, and for each Consumer makes the
//! writes the pure core decided: creations and metadata fixes at once, one
//! rollout at a time per Consumer within the global pace, removals of extra
//! instances. Every write is a server-side apply with field manager `konsumer`
//! (forced: konsumer owns the fields it sets; fields it does not set stay with
//! whoever set them). What it did is logged, counted and recorded as Kubernetes
//! Events; each rollout is an [`Applied`] record.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::TransitionSink;
use super::events::Regarding;
use crate::api::{Consumer, GROUP, VERSION_V1, keys};
use crate::inject::ConsumerSettings;
use crate::manage::decide::FIELD_MANAGER;
use crate::manage::memo::Memo;
use crate::manage::{
    self, Applied, Change, Decision, InFlight, Kept, Management, Owner, Pace, Recipe, Write, live,
};
use crate::notice;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// Where managed Deployments live.
#[async_trait]
pub trait DeploymentApi: Send + Sync {
    /// Every Deployment konsumer may manage: those with Konsumerator's
    /// `controller` label (konsumer's and Konsumerator's both have it).
    async fn list(&self) -> Result<Vec<Arc<Value>>, StoreError>;
    /// One Deployment, if it exists (a name is checked before it is created).
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError>;
    /// Server-side apply of a whole Deployment; the stored object back.
    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError>;
    /// Deletes (a Deployment already gone is no error).
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError>;
    /// The owner of a Consumer's Deployments (`None`: it cannot own any).
    fn owner(&self, consumer: &Consumer) -> Option<Owner>;
}

/// Kube and guest mode: the Kubernetes API.
pub struct KubeDeployments {
    pub client: kube::Client,
    /// Only this namespace (`--namespace`, guest mode), else all.
    pub namespace: Option<String>,
    /// Consumer objects own their Deployments; in guest mode, the ConfigMaps.
    pub owners: Regarding,
}

#[async_trait]
impl DeploymentApi for KubeDeployments {
    async fn list(&self) -> Result<Vec<Arc<Value>>, StoreError> {
        let api: Api<Deployment> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        // From the apiserver's watch cache, like the workload counters.
        let params = ListParams::default()
            .labels(keys::CONTROLLER_LABEL)
            .match_any();
        let mut out = Vec::new();
        for d in api.list(&params).await? {
            out.push(Arc::new(to_json(&d)?));
        }
        Ok(out)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await? {
            Some(d) => Ok(Some(to_json(&d)?)),
            None => Ok(None),
        }
    }

    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let stored = api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await?;
        to_json(&stored)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn owner(&self, consumer: &Consumer) -> Option<Owner> {
        let uid = consumer.metadata.uid.clone()?;
        let name = consumer.metadata.name.clone()?;
        Some(match self.owners {
            Regarding::Consumer => Owner {
                api_version: format!("{GROUP}/{VERSION_V1}"),
                kind: "Consumer".into(),
                name,
                uid,
            },
            Regarding::ConfigMap => Owner {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name,
                uid,
            },
        })
    }
}

fn to_json(d: &Deployment) -> Result<Value, StoreError> {
    let mut v = serde_json::to_value(d)?;
    v["kind"] = Value::from("Deployment");
    v["apiVersion"] = Value::from("apps/v1");
    Ok(v)
}

/// Local mode: manifests under `DIR/.konsumer/deployments/<namespace>/<name>.yaml`,
/// written as the API server would store them (no Deployment controller runs
/// them, so nothing reports a status and they count as available). Edit one to
/// add `konsumerator.lwolf.org/disable-autoscaler` and konsumer leaves it alone.
pub struct LocalDeployments {
    root: PathBuf,
    /// Each manifest as last read, by path, with the stamp it was read at, as
    /// compact JSON: a pass YAML-parses only the files that changed since the
    /// last one, and what stays between passes is text, not `Value` trees
    /// (about ten times smaller).
    parsed: Arc<Mutex<Parsed>>,
}

/// A file's modification time (ns) and length.
type Stamp = (u128, u64);
type Parsed = HashMap<PathBuf, (Stamp, Box<str>)>;

impl LocalDeployments {
    pub fn new(root: PathBuf) -> Self {
        LocalDeployments {
            root,
            parsed: Arc::default(),
        }
    }

    fn path(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(format!("{name}.yaml"))
    }

    fn io(path: &std::path::Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn read(path: &std::path::Path) -> Result<Option<Value>, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_saphyr::from_str::<Value>(&text)
                .map(Some)
                .map_err(|e| StoreError::Database {
                    path: path.display().to_string(),
                    message: format!("not a readable Deployment manifest: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(path, e)),
        }
    }
}

#[async_trait]
impl DeploymentApi for LocalDeployments {
    async fn list(&self) -> Result<Vec<Arc<Value>>, StoreError> {
        let root = self.root.clone();
        let parsed = self.parsed.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut parsed = parsed.lock().unwrap_or_else(|e| e.into_inner());
            let mut seen = HashSet::new();
            let Ok(namespaces) = std::fs::read_dir(&root) else {
                parsed.clear();
                return Ok(out);
            };
            for ns in namespaces.filter_map(Result::ok).map(|e| e.path()) {
                let Ok(files) = std::fs::read_dir(&ns) else {
                    continue;
                };
                for file in files.filter_map(Result::ok).map(|e| e.path()) {
                    if file.extension().and_then(|e| e.to_str()) != Some("yaml") {
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(&file) else {
                        continue;
                    };
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_nanos());
                    let stamp = (modified, meta.len());
                    seen.insert(file.clone());
                    if let Some((at, text)) = parsed.get(&file)
                        && *at == stamp
                        && let Ok(d) = serde_json::from_str::<Value>(text)
                    {
                        out.push(Arc::new(d));
                        continue;
                    }
                    match Self::read(&file) {
                        Ok(Some(mut d)) => {
                            // The file's stamp stands for the API server's
                            // resourceVersion: an edit by hand changes it too.
                            d["metadata"]["resourceVersion"] =
                                Value::from(format!("{modified}-{}", meta.len()));
                            if let Ok(text) = serde_json::to_string(&d) {
                                parsed.insert(file, (stamp, text.into_boxed_str()));
                            }
                            out.push(Arc::new(d))
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping a managed Deployment manifest")
                        }
                    }
                }
            }
            parsed.retain(|path, _| seen.contains(path));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Database {
            path: self.root.display().to_string(),
            message: e.to_string(),
        })?
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        Self::read(&self.path(namespace, name))
    }

    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError> {
        let path = self.path(namespace, name);
        let stored = local_apply(Self::read(&path)?, body);
        let dir = self.root.join(namespace);
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&dir, e))?;
        let text = serde_saphyr::to_string(&stored).map_err(|e| StoreError::Database {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // Written whole, then renamed: a reader never sees half a manifest.
        let tmp = dir.join(format!(".{name}.yaml.tmp"));
        std::fs::write(&tmp, text).map_err(|e| Self::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Self::io(&path, e))?;
        Ok(stored)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let path = self.path(namespace, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&path, e)),
        }
    }

    fn owner(&self, consumer: &Consumer) -> Option<Owner> {
        let name = consumer.metadata.name.clone()?;
        let namespace = consumer.metadata.namespace.clone().unwrap_or_default();
        Some(Owner {
            api_version: format!("{GROUP}/{VERSION_V1}"),
            kind: "Consumer".into(),
            uid: consumer
                .metadata
                .uid
                .clone()
                .unwrap_or_else(|| format!("local-{namespace}-{name}")),
            name,
        })
    }
}

/// What the API server would store after konsumer's apply, for local mode:
/// konsumer's object, with the labels and annotations others added kept, a
/// generation that moves when the spec does, and konsumer's ownership of
/// `spec.replicas` noted as `managedFields` would.
fn local_apply(existing: Option<Value>, body: &Value) -> Value {
    let mut stored = body.clone();
    let generation = match &existing {
        None => 1,
        Some(old) if old.get("spec") == body.get("spec") => live::generation(old).max(1),
        Some(old) => live::generation(old).max(1) + 1,
    };
    if let Some(old) = &existing {
        for field in ["labels", "annotations"] {
            let kept = old
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_object);
            for (k, v) in kept.into_iter().flatten() {
                let target = &mut stored["metadata"][field];
                if !target.is_object() {
                    *target = Value::Object(Default::default());
                }
                if target.get(k).is_none() {
                    target[k] = v.clone();
                }
            }
        }
    }
    stored["metadata"]["generation"] = Value::from(generation);
    if body.pointer("/spec/replicas").is_some() {
        stored["metadata"]["managedFields"] = serde_json::json!([{
            "manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
        }]);
    }
    stored
}

/// The listed Deployments, by owner uid and by (namespace, name).
#[derive(Default)]
pub struct DeploymentIndex {
    by_owner: HashMap<String, Vec<Arc<Value>>>,
    by_name: HashMap<(String, String), Arc<Value>>,
}

impl DeploymentIndex {
    pub fn new(list: Vec<Arc<Value>>) -> Self {
        let mut index = DeploymentIndex::default();
        for d in list {
            if let Some((_, _, uid)) = live::controller(&d) {
                index
                    .by_owner
                    .entry(uid.to_string())
                    .or_default()
                    .push(d.clone());
            }
            index.by_name.insert(
                (live::namespace(&d).to_string(), live::name(&d).to_string()),
                d,
            );
        }
        index
    }
}

/// What the manager sees of one Consumer this pass.
pub struct View {
    pub owner: Owner,
    pub management: Management,
    /// Deployments it owns.
    pub ours: Vec<Value>,
    /// Those, and any other Deployment named like one of its instances.
    pub candidates: Vec<Value>,
}

/// What was told about one Consumer.
#[derive(Default)]
struct Said {
    /// The notes about what is left alone, as of the last pass.
    kept: HashSet<String>,
    /// The last failure per Deployment, until a write succeeds.
    failures: HashMap<String, String>,
}

/// Shell state kept across passes.
pub struct DeploymentManager {
    pub api: Arc<dyn DeploymentApi>,
    /// `--manage-deployments`.
    pub enabled: bool,
    pace: Mutex<Pace>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// Per Consumer, what was already recorded as Events: each is said once.
    said: Mutex<HashMap<String, Said>>,
    /// Per Consumer, the last decision, reused while nothing it depends on changed.
    memos: Mutex<HashMap<String, Memo>>,
    metrics: Arc<Metrics>,
}

impl DeploymentManager {
    pub fn new(
        api: Arc<dyn DeploymentApi>,
        enabled: bool,
        per_minute: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        DeploymentManager {
            api,
            enabled,
            pace: Mutex::new(Pace::new(per_minute)),
            in_flight: Mutex::new(HashMap::new()),
            said: Mutex::new(HashMap::new()),
            memos: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Lists once per pass (skipped while management is off).
    pub async fn index(&self) -> Result<DeploymentIndex, StoreError> {
        if !self.enabled {
            return Ok(DeploymentIndex::default());
        }
        Ok(DeploymentIndex::new(self.api.list().await?))
    }

    /// Forgets a Consumer that is gone.
    pub fn forget(&self, key: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The last decision for `key`, if nothing it depends on changed since.
    pub fn reuse(&self, key: &str, consumer: &Arc<Consumer>, fingerprint: u64) -> Option<Decision> {
        let memos = self.memos.lock().unwrap_or_else(|e| e.into_inner());
        memos.get(key)?.reuse(consumer, fingerprint).cloned()
    }

    pub fn remember(
        &self,
        key: &str,
        consumer: Arc<Consumer>,
        fingerprint: u64,
        decision: &Decision,
    ) {
        self.memos.lock().unwrap_or_else(|e| e.into_inner()).insert(
            key.to_string(),
            Memo::new(consumer, fingerprint, decision.clone()),
        );
    }

    /// A fingerprint of what the manager would decide from for `consumer` (its
    /// Deployments and the rollout under way): while it stays the same, and the
    /// Consumer does, a pass may skip it.
    pub fn fingerprint(
        &self,
        consumer: &Consumer,
        settings: Option<&ConsumerSettings>,
        index: &DeploymentIndex,
        labelled: Option<&[Value]>,
    ) -> u64 {
        let Some(view) = self.view(consumer, settings, index, labelled) else {
            return 0;
        };
        let in_flight = self.in_flight(&consumer.key());
        manage::memo::fingerprint(&view.candidates, in_flight.as_ref())
    }

    /// The Consumer's Deployments and whether konsumer manages them.
    /// `labelled`: its workloads with the consumer label (`None`: unknown).
    pub fn view(
        &self,
        consumer: &Consumer,
        settings: Option<&ConsumerSettings>,
        index: &DeploymentIndex,
        labelled: Option<&[Value]>,
    ) -> Option<View> {
        let owner = self.api.owner(consumer)?;
        let settings = settings?;
        let ours: Vec<Value> = index
            .by_owner
            .get(&owner.uid)
            .into_iter()
            .flatten()
            .map(|d| Value::clone(d))
            .collect();
        let mut candidates = ours.clone();
        let mut seen: HashSet<String> = ours.iter().map(|d| live::name(d).to_string()).collect();
        let names: HashSet<String> = (0..settings.instances())
            .map(|id| manage::desired::deployment_name(&settings.base_name, id))
            .collect();
        let labelled_deployments = labelled
            .unwrap_or_default()
            .iter()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"));
        for name in &names {
            if let Some(d) = index
                .by_name
                .get(&(settings.namespace.clone(), name.clone()))
                && seen.insert(name.clone())
            {
                candidates.push(Value::clone(d));
            }
        }
        for d in labelled_deployments {
            let name = live::name(d);
            if names.contains(name) && seen.insert(name.to_string()) {
                candidates.push(d.clone());
            }
        }
        let own_workloads = labelled
            .map(manage::policy::own_workloads)
            .unwrap_or_default();
        // Until the workloads are known, nothing is started.
        let management = match labelled {
            None if ours.is_empty() => Management::Off {
                reason: "WorkloadsUnknown",
                message: "the workloads of this Consumer could not be listed".into(),
            },
            _ => {
                manage::policy::management(self.enabled, consumer, !ours.is_empty(), &own_workloads)
            }
        };
        Some(View {
            owner,
            management,
            ours,
            candidates,
        })
    }

    pub fn in_flight(&self, key: &str) -> Option<InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The rollout `decision` starts this pass, if one may start now: it takes
    /// its place in `--max-rollouts-per-minute` (given back by [`Self::execute`]
    /// if the write fails, or by [`Self::give_back`] if it is not made). Decided
    /// before the status write, so that its `applied` event goes into that write.
    pub fn start_rollout<'d>(
        &self,
        key: &str,
        decision: &'d Decision,
        now: Timestamp,
    ) -> Option<&'d Write> {
        let Some(next) = decision.next_rollout() else {
            if let (Some(why), false) = (&decision.waiting_for, decision.rollouts.is_empty()) {
                tracing::debug!(consumer = %key, waiting_for = %why, rollouts = decision.rollouts.len(), "rollouts wait for the one in progress");
            }
            return None;
        };
        let taken = self
            .pace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(now);
        if !taken {
            self.metrics.rollouts_deferred.inc();
            tracing::debug!(consumer = %key, deployment = %next.name, "rollout waits for --max-rollouts-per-minute");
            return None;
        }
        Some(next)
    }

    /// Returns the place a started rollout took in the pace.
    pub fn give_back(&self, now: Timestamp) {
        self.pace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(now);
    }

    /// Makes the writes of `decision` for `consumer`, and `rollout` (from
    /// [`Self::start_rollout`]); what it did goes to logs, metrics and `sink`.
    pub async fn execute(
        &self,
        consumer: &Consumer,
        decision: &Decision,
        rollout: Option<&Write>,
        sink: Option<&dyn TransitionSink>,
        now: Timestamp,
    ) {
        let key = consumer.key();
        let namespace = consumer.metadata.namespace.clone().unwrap_or_default();
        self.say_kept(consumer, &key, &decision.kept, sink).await;
        for w in &decision.writes {
            if w.change == Change::Create {
                // Server-side apply would merge into a Deployment of that name
                // that konsumer did not list: make sure there is none.
                match self.api.get(&namespace, &w.name).await {
                    Ok(None) => {}
                    Ok(Some(d)) => {
                        let kept = Kept::Foreign {
                            name: w.name.clone(),
                            owner: live::controller(&d)
                                .map(|(k, n, _)| format!("controlled by {k} {n}"))
                                .unwrap_or_else(|| "no controller".into()),
                        };
                        if let Some(n) = notice::kept(&kept) {
                            self.tell_once(consumer, sink, &w.name, n).await;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.failed(consumer, sink, w, &e.to_string()).await;
                        continue;
                    }
                }
            }
            self.write(consumer, &namespace, w, sink, now).await;
        }
        for r in &decision.removals {
            let outcome = self.api.delete(&namespace, &r.name).await;
            self.count("delete", outcome.is_ok());
            match outcome {
                Ok(()) => {
                    tracing::info!(consumer = %key, deployment = %r.name, why = %r.why, "deleted a managed Deployment");
                    if let Some(sink) = sink {
                        sink.notify(consumer, &notice::removed(&r.name, &r.why))
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(consumer = %key, deployment = %r.name, error = %e, "cannot delete a managed Deployment");
                    if let Some(sink) = sink {
                        sink.notify(
                            consumer,
                            &notice::write_failed(&r.name, "Delete", &e.to_string()),
                        )
                        .await;
                    }
                }
            }
        }
        let Some(next) = rollout else {
            return;
        };
        if let Some(stored) = self.write(consumer, &namespace, next, sink, now).await {
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    key,
                    InFlight {
                        deployment: next.name.clone(),
                        generation: live::generation(&stored),
                    },
                );
        } else {
            self.give_back(now);
        }
    }

    fn count(&self, change: &str, ok: bool) {
        self.metrics.count_deployment_write(change, ok);
    }

    async fn write(
        &self,
        consumer: &Consumer,
        namespace: &str,
        w: &Write,
        sink: Option<&dyn TransitionSink>,
        now: Timestamp,
    ) -> Option<Value> {
        let outcome = self.api.apply(namespace, &w.name, &w.body).await;
        self.count(w.change.as_str(), outcome.is_ok());
        match outcome {
            Ok(stored) => {
                if let Some(said) = self
                    .said
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&consumer.key())
                {
                    said.failures.remove(&w.name);
                }
                let applied = Applied::new(consumer.key(), w, now);
                self.published(consumer, &applied, sink).await;
                Some(stored)
            }
            Err(e) => {
                self.failed(consumer, sink, w, &e.to_string()).await;
                None
            }
        }
    }

    async fn failed(
        &self,
        consumer: &Consumer,
        sink: Option<&dyn TransitionSink>,
        w: &Write,
        error: &str,
    ) {
        tracing::warn!(consumer = %consumer.key(), deployment = %w.name, change = w.change.as_str(), error, "cannot write a managed Deployment; retrying next pass");
        let what = match w.change {
            Change::Create => "Create",
            Change::Rollout => "Roll",
            Change::Metadata => "Update",
        };
        self.tell_once(
            consumer,
            sink,
            &w.name,
            notice::write_failed(&w.name, what, error),
        )
        .await;
    }

    /// Records a problem with one Deployment when it is new (until a write to
    /// that Deployment succeeds).
    async fn tell_once(
        &self,
        consumer: &Consumer,
        sink: Option<&dyn TransitionSink>,
        deployment: &str,
        n: notice::Notice,
    ) {
        let new = {
            let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
            let failures = &mut said.entry(consumer.key()).or_default().failures;
            failures
                .insert(deployment.to_string(), n.note.clone())
                .as_ref()
                != Some(&n.note)
        };
        if new {
            tracing::warn!(consumer = %consumer.key(), deployment, "{}", n.note);
            if let Some(sink) = sink {
                sink.notify(consumer, &n).await;
            }
        }
    }

    /// Where a write konsumer made becomes visible (logs, Kubernetes Events). A
    /// rollout's `dev.konsumer.instance.applied.v1` was journaled before the
    /// write, with the status (see [`Self::start_rollout`]).
    async fn published(&self, consumer: &Consumer, a: &Applied, sink: Option<&dyn TransitionSink>) {
        tracing::info!(
            consumer = %a.consumer,
            instance = a.instance,
            deployment = %a.deployment,
            change = a.change.as_str(),
            resources = %notice::resource_change(&a.previous, &a.new),
            changes = %a.changes.join(", "),
            "managed Deployment written"
        );
        if let Some(sink) = sink {
            sink.notify(consumer, &notice::applied(a)).await;
        }
    }

    /// Records what is left alone when it starts to be, not every pass.
    async fn say_kept(
        &self,
        consumer: &Consumer,
        key: &str,
        kept: &[Kept],
        sink: Option<&dyn TransitionSink>,
    ) {
        let notes: Vec<notice::Notice> = kept.iter().filter_map(notice::kept).collect();
        let new: Vec<notice::Notice> = {
            let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
            let entry = said.entry(key.to_string()).or_default();
            let current: HashSet<String> = notes.iter().map(|n| n.note.clone()).collect();
            let new = notes
                .into_iter()
                .filter(|n| !entry.kept.contains(&n.note))
                .collect();
            entry.kept = current;
            new
        };
        for n in new {
            tracing::warn!(consumer = %key, "{}", n.note);
            if let Some(sink) = sink {
                sink.notify(consumer, &n).await;
            }
        }
    }

    /// A recipe for the Consumer's Deployments.
    pub fn recipe<'a>(
        settings: &'a ConsumerSettings,
        template: &'a Value,
        owner: &'a Owner,
        gomemlimit_ratio: f64,
    ) -> Recipe<'a> {
        Recipe {
            settings,
            template,
            owner,
            gomemlimit_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Arc<Value>]) -> Vec<(String, Option<i64>)> {
        let mut out: Vec<_> = list
            .iter()
            .map(|d| {
                (
                    live::name(d).to_string(),
                    d.pointer("/spec/replicas").and_then(Value::as_i64),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn local_listing_sees_every_edit_and_removal_of_a_manifest_between_passes() {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::new(dir.path().to_path_buf());
        let body = |name: &str, replicas: i64| {
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "streams"},
                "spec": {"replicas": replicas}
            })
        };
        api.apply("streams", "orders-0", &body("orders-0", 1))
            .await
            .unwrap();
        api.apply("streams", "orders-1", &body("orders-1", 1))
            .await
            .unwrap();
        let first = api.list().await.unwrap();
        assert_eq!(
            names(&first),
            [("orders-0".into(), Some(1)), ("orders-1".into(), Some(1))]
        );
        // Unchanged files come from the cache and read the same.
        assert_eq!(api.list().await.unwrap(), first);

        // An edit by hand (another length), and a removal.
        let path = dir.path().join("streams/orders-0.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("replicas: 1", "replicas: 12");
        std::fs::write(&path, text).unwrap();
        std::fs::remove_file(dir.path().join("streams/orders-1.yaml")).unwrap();
        let second = api.list().await.unwrap();
        assert_eq!(names(&second), [("orders-0".into(), Some(12))]);
        let before = first.iter().find(|d| live::name(d) == "orders-0").unwrap();
        assert_ne!(
            second[0]["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_eq!(
            api.parsed.lock().unwrap().len(),
            1,
            "the removed file is forgotten"
        );
    }
}
