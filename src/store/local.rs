//! Local mode: Consumers from the YAML/JSON files of a directory (re-read when the
//! directory changes) and their status in an embedded database under
//! `DIR/.konsumer/`. No cluster needed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ConsumerIndex, Store, StoreError};
use crate::api::{Consumer, ConsumerStatus, GROUP};

const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_status");

/// konsumer's own files inside the local directory.
pub const STATE_DIR: &str = ".konsumer";

/// A file that could not be read as Consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: PathBuf,
    pub message: String,
}

/// Reads every Consumer document of the `.yaml`, `.yml` and `.json` files directly
/// in `dir`. Documents of other kinds are skipped; unreadable ones are reported.
pub fn scan_dir(dir: &Path) -> Result<(Vec<Consumer>, Vec<FileProblem>), StoreError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = read_dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_manifest(p))
        .collect();
    paths.sort();
    let mut consumers = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(FileProblem {
                    path,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let (found, mut bad) = parse_consumers(&text);
        for message in bad.drain(..) {
            problems.push(FileProblem {
                path: path.clone(),
                message,
            });
        }
        for mut consumer in found {
            if consumer.metadata.namespace.is_none() {
                consumer.metadata.namespace = Some("default".into());
            }
            if !seen.insert(consumer.key()) {
                problems.push(FileProblem {
                    path: path.clone(),
                    message: format!(
                        "Consumer {} is defined twice; the first one wins",
                        consumer.key()
                    ),
                });
                continue;
            }
            consumers.push(consumer);
        }
    }
    Ok((consumers, problems))
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    path.is_file() && !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// The Consumers of a (multi-document) YAML or JSON text, and a message per
/// document that looks like a Consumer but cannot be read as one.
pub fn parse_consumers(text: &str) -> (Vec<Consumer>, Vec<String>) {
    let docs: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => return (Vec::new(), vec![format!("not valid YAML: {e}")]),
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if !is_consumer_document(&doc) {
            continue;
        }
        match serde_json::from_value::<Consumer>(doc) {
            Ok(c) => out.push(c),
            Err(e) => problems.push(format!("document {}: not a Consumer: {e}", i + 1)),
        }
    }
    (out, problems)
}

/// `kind: Consumer` of group `konsumerator.lwolf.org` (any version).
pub fn is_consumer_document(doc: &serde_json::Value) -> bool {
    let group = doc
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g);
    doc.get("kind").and_then(|k| k.as_str()) == Some("Consumer") && group == Some(GROUP)
}

/// Whether a notification is a change to a manifest. Reads are not: the rescan
/// opens every file, and inotify reports those opens (an endless rescan loop).
fn changes_manifests(event: &notify::Event) -> bool {
    use notify::EventKind;
    let writes = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    writes
        && event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
}

/// Local directory + embedded status database.
pub struct LocalStore {
    dir: PathBuf,
    db_path: PathBuf,
    db: Arc<Database>,
    index: Arc<ConsumerIndex>,
    scan: Mutex<Vec<FileProblem>>,
    rescans: std::sync::atomic::AtomicU64,
}

impl LocalStore {
    /// Opens (creating) `DIR/.konsumer/state.redb`.
    pub fn open(dir: &Path, index: Arc<ConsumerIndex>) -> Result<Self, StoreError> {
        let state = dir.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(|source| StoreError::Io {
            path: state.display().to_string(),
            source,
        })?;
        let db_path = state.join("state.redb");
        let db = Database::create(&db_path).map_err(|e| StoreError::Database {
            path: db_path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            db_path,
            db: Arc::new(db),
            index,
            scan: Mutex::new(Vec::new()),
            rescans: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times the directory was read.
    pub fn rescans(&self) -> u64 {
        self.rescans.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn db_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.db_path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Re-reads the directory into the index (with each Consumer's stored status)
    /// and marks the index synced. Problems are logged when they change.
    pub async fn rescan(&self) -> Result<usize, StoreError> {
        let mut last_problems = self.scan.lock().await;
        self.rescans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.clone();
        let (mut consumers, problems) = tokio::task::spawn_blocking(move || scan_dir(&dir))
            .await
            .map_err(|e| self.db_error(e))??;
        let statuses = self.load_statuses().await?;
        for c in &mut consumers {
            if let Some(status) = statuses.iter().find(|(k, _)| *k == c.key()).map(|(_, s)| s) {
                c.status = Some(status.clone());
            }
        }
        if problems != *last_problems {
            for p in &problems {
                tracing::warn!(file = %p.path.display(), problem = %p.message, "skipping Consumer file content");
            }
            *last_problems = problems;
        }
        let count = consumers.len();
        self.index.replace_all(consumers);
        self.index.mark_synced();
        Ok(count)
    }

    async fn load_statuses(&self) -> Result<Vec<(String, ConsumerStatus)>, StoreError> {
        let db = self.db.clone();
        let rows =
            tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>)>, String> {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let table = match txn.open_table(STATUS) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.to_string()),
                };
                let mut rows = Vec::new();
                for item in table.iter().map_err(|e| e.to_string())? {
                    let (k, v) = item.map_err(|e| e.to_string())?;
                    rows.push((k.value().to_string(), v.value().to_vec()));
                }
                Ok(rows)
            })
            .await
            .map_err(|e| self.db_error(e))?
            .map_err(|e| self.db_error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, bytes) in rows {
            match serde_json::from_slice::<ConsumerStatus>(&bytes) {
                Ok(s) => out.push((key, s)),
                Err(e) => {
                    tracing::warn!(consumer = %key, error = %e, "ignoring unreadable stored status")
                }
            }
        }
        Ok(out)
    }

    /// Rescans whenever the directory changes (debounced), and every 30 s as a
    /// safety net for filesystems without change notification.
    pub fn spawn_watcher(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::channel::<()>(1);
            let watcher = {
                use notify::Watcher;
                let tx = tx.clone();
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if event.is_ok_and(|e| changes_manifests(&e)) {
                        let _ = tx.try_send(());
                    }
                })
                .and_then(|mut w| {
                    w.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
                    Ok(w)
                })
            };
            let _watcher = match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %self.dir.display(), "no change notification; polling every 30s");
                    None
                }
            };
            let mut poll = tokio::time::interval(Duration::from_secs(30));
            poll.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = rx.recv() => {
                        // Editors write in several steps; let them finish.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = poll.tick() => {}
                }
                match self.rescan().await {
                    Ok(n) => tracing::debug!(consumers = n, "local directory re-read"),
                    Err(e) => tracing::warn!(error = %e, "cannot re-read the local directory"),
                }
            }
        })
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Consumer>, StoreError> {
        // The file may have been written a moment ago, before the watcher fired.
        self.rescan().await?;
        Ok(self
            .index
            .get(namespace, name)
            .map(|c| (*c.consumer).clone()))
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        let key = format!("{namespace}/{name}");
        let Some(cached) = self.index.get(namespace, name) else {
            return Err(StoreError::NotFound(key));
        };
        let bytes = serde_json::to_vec(status)?;
        let db = self.db.clone();
        let db_key = key.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(STATUS).map_err(|e| e.to_string())?;
                table
                    .insert(db_key.as_str(), bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))?;
        let mut updated = (*cached.consumer).clone();
        updated.status = Some(status.clone());
        self.index.upsert(updated);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_yields_only_consumers() {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}\n---\n",
            include_str!("../../tests/fixtures/consumer-orders.yaml")
        );
        let (found, problems) = parse_consumers(&text);
        assert_eq!(found.len(), 1);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found[0].key(), "streams/orders");
    }

    #[test]
    fn v1alpha1_documents_are_consumers_too() {
        let (found, _) = parse_consumers(include_str!(
            "../../tests/fixtures/consumer-seed-example.yaml"
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].spec.num_partitions, Some(100));
    }

    #[test]
    fn a_consumer_with_wrong_types_is_reported_not_dropped_silently() {
        let (found, problems) = parse_consumers(
            "apiVersion: konsumerator.lwolf.org/v1\nkind: Consumer\nmetadata: {name: x}\nspec: {numPartitions: ten}\n",
        );
        assert!(found.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("document 1"), "{problems:?}");
    }

    #[tokio::test]
    async fn an_idle_directory_is_not_reread_and_an_edit_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orders.yaml");
        let orders = include_str!("../../tests/fixtures/consumer-orders.yaml");
        std::fs::write(&file, orders).unwrap();
        let index = ConsumerIndex::new();
        let store = Arc::new(LocalStore::open(dir.path(), index.clone()).unwrap());
        store.rescan().await.unwrap();
        let shutdown = CancellationToken::new();
        let watcher = store.clone().spawn_watcher(shutdown.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let settled = store.rescans();
        // The rescans' own file reads must not trigger more rescans.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.rescans(), settled, "rescanned an unchanged directory");

        std::fs::write(
            &file,
            orders.replace("numPartitions: 10", "numPartitions: 12"),
        )
        .unwrap();
        for _ in 0..50 {
            if index
                .get("streams", "orders")
                .is_some_and(|c| c.consumer.spec.num_partitions == Some(12))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            index
                .get("streams", "orders")
                .unwrap()
                .consumer
                .spec
                .num_partitions,
            Some(12)
        );
        assert!(store.rescans() > settled);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after_edit = store.rescans();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.rescans(), after_edit, "settles again after the edit");
        shutdown.cancel();
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn status_survives_a_restart_and_merges_into_the_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders.yaml"),
            include_str!("../../tests/fixtures/consumer-orders.yaml"),
        )
        .unwrap();
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        assert_eq!(store.rescan().await.unwrap(), 1);
        assert!(index.is_synced());
        let status = ConsumerStatus {
            expected: Some(4),
            ..ConsumerStatus::default()
        };
        store
            .write_status("streams", "orders", &status)
            .await
            .unwrap();
        drop(store);

        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        let c = index.get("streams", "orders").unwrap();
        assert_eq!(c.consumer.status.as_ref().unwrap().expected, Some(4));
        assert!(
            store
                .write_status("streams", "nope", &status)
                .await
                .is_err()
        );
    }
}
