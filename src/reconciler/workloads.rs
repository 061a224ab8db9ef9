//! The labelled Deployments and Pods konsumer can see, for the status counters.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use serde_json::Value;

use super::WorkloadMap;
use crate::api::keys;
use crate::store::StoreError;
use crate::store::local::{KeptListing, LocalStore};

#[async_trait]
pub trait WorkloadSource: Send + Sync {
    /// Every Deployment and Pod labelled `konsumerator.lwolf.org/consumer`, as JSON,
    /// by (namespace, Consumer name).
    async fn workloads(&self) -> Result<WorkloadMap, StoreError>;
}

fn group(map: &mut WorkloadMap, object: Value, default_namespace: &str) {
    let Some(consumer) = object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(keys::CONSUMER))
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return;
    };
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    map.entry((ns, consumer)).or_default().push(object);
}

/// Kube mode: label-selected lists per pass (Deployments whole, Pods by
/// metadata only, plus the Pods that do not run), in all namespaces or one,
/// served from the apiserver's watch cache (`resourceVersion=0`) rather than a
/// quorum read from etcd every pass: the counters tolerate a slightly old view.
pub struct KubeWorkloads {
    pub client: kube::Client,
    pub namespace: Option<String>,
}

#[async_trait]
impl WorkloadSource for KubeWorkloads {
    async fn workloads(&self) -> Result<WorkloadMap, StoreError> {
        let params = ListParams::default().labels(keys::CONSUMER).match_any();
        let (deployments, pods): (Api<Deployment>, Api<Pod>) = match &self.namespace {
            Some(ns) => (
                Api::namespaced(self.client.clone(), ns),
                Api::namespaced(self.client.clone(), ns),
            ),
            None => (Api::all(self.client.clone()), Api::all(self.client.clone())),
        };
        let mut map = WorkloadMap::new();
        for d in deployments.list(&params).await? {
            let mut v = serde_json::to_value(&d)?;
            v["kind"] = Value::from("Deployment");
            group(&mut map, v, "default");
        }
        let all: kube::core::ObjectList<PartialObjectMeta<Pod>> =
            pods.list_metadata(&params).await?;
        // Which of them do not run (Pending, Failed, Succeeded): a second,
        // normally tiny, list; the metadata alone cannot tell.
        let not_running: std::collections::HashSet<(Option<String>, Option<String>)> = pods
            .list_metadata(&params.clone().fields("status.phase!=Running"))
            .await?
            .into_iter()
            .map(|p| (p.metadata.namespace, p.metadata.name))
            .collect();
        for p in all {
            let runs =
                !not_running.contains(&(p.metadata.namespace.clone(), p.metadata.name.clone()));
            let mut v = serde_json::json!({ "metadata": serde_json::to_value(&p.metadata)? });
            v["kind"] = Value::from("Pod");
            v["status"] = if runs {
                serde_json::json!({ "phase": "Running" })
            } else {
                serde_json::json!({})
            };
            group(&mut map, v, "default");
        }
        Ok(map)
    }
}

/// Local mode: the Deployment and Pod manifests in the local directory. A file is
/// parsed again only when its modification time or size changed: with thousands
/// of Consumer files beside a few workloads, re-reading every file each pass was
/// most of an idle konsumer's CPU.
pub struct LocalWorkloads {
    pub dir: PathBuf,
    files: Arc<Mutex<ParsedFiles>>,
    /// The Consumer store, whose watcher of the same directory tells when it
    /// changed: an unchanged directory is not listed again (10,000 `stat`s a
    /// pass at 10,000 Consumers) but at least every [`crate::store::local::RELIST_AT_LEAST_EVERY`].
    store: Option<Arc<LocalStore>>,
    last: Arc<KeptListing<WorkloadMap>>,
}

/// The files of the directory as last read, by file name (not path: 10,000
/// Consumer files at scale, each name kept once and small).
type ParsedFiles = HashMap<OsString, ParsedFile>;

/// The workloads of one file, as of its modification time and size.
struct ParsedFile {
    stamp: (SystemTime, u64),
    workloads: Vec<Value>,
}

impl LocalWorkloads {
    /// Lists the directory on every pass.
    pub fn new(dir: PathBuf) -> Self {
        LocalWorkloads {
            dir,
            files: Arc::default(),
            store: None,
            last: Arc::default(),
        }
    }

    /// The directory of `store`, listed again only when its watcher saw a
    /// change (on every pass while it has no watcher).
    pub fn watched(store: Arc<LocalStore>) -> Self {
        LocalWorkloads {
            store: Some(store.clone()),
            ..Self::new(store.dir().to_path_buf())
        }
    }
}

fn is_workload(doc: &Value) -> bool {
    matches!(
        doc.get("kind").and_then(Value::as_str),
        Some("Deployment" | "Pod")
    )
}

fn read_local(dir: &Path, files: &mut ParsedFiles) -> Result<WorkloadMap, StoreError> {
    let mut map = WorkloadMap::new();
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    // Made afresh, sized as the last one: a file no longer there is
    // forgotten with it.
    let mut next = ParsedFiles::with_capacity(files.len());
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let ext = Path::new(&name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        let hidden = name.to_str().is_none_or(|n| n.starts_with('.'));
        if hidden || !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let path = entry.path();
        let Some(stamp) = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
        else {
            continue;
        };
        let parsed = match files.remove(&name) {
            Some(p) if p.stamp == stamp => p,
            _ => {
                let workloads = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| serde_saphyr::from_multiple::<Value>(&text).ok())
                    .map(|docs| docs.into_iter().filter(is_workload).collect())
                    .unwrap_or_default();
                ParsedFile { stamp, workloads }
            }
        };
        for doc in &parsed.workloads {
            group(&mut map, doc.clone(), "default");
        }
        next.insert(name, parsed);
    }
    *files = next;
    Ok(map)
}

#[async_trait]
impl WorkloadSource for LocalWorkloads {
    async fn workloads(&self) -> Result<WorkloadMap, StoreError> {
        // Read before the listing: a change made while it runs moves it.
        let changes = self.store.as_ref().and_then(|s| s.notified_changes());
        if let Some(map) = self.last.get(changes) {
            return Ok(map);
        }
        let dir = self.dir.clone();
        let files = self.files.clone();
        let last = self.last.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = files.lock().unwrap_or_else(|e| e.into_inner());
            let map = read_local(&dir, &mut files)?;
            last.keep(changes, &map);
            Ok(map)
        })
        .await
        .map_err(|e| StoreError::Database {
            path: String::new(),
            message: e.to_string(),
        })?
    }
}
