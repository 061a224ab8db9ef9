//! Local mode: Consumers from the YAML/JSON files of a directory (re-read when the
//! directory changes) and their status in an embedded database under
//! `DIR/.konsumer/`. No cluster needed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{CachedConsumer, ConsumerIndex, Store, StoreError};
use crate::api::{Consumer, ConsumerStatus, GROUP, JournalEntry};
use crate::scaling_events::journal;

const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_status");
/// Each Consumer's whole scaling-event journal (a JSON list), written in the
/// same transaction as its status row, which (like the in-memory index) keeps
/// only the newest `journal::RECENT` entries: full journals of 1,000 Consumers
/// would otherwise sit in memory for the few subscribers that fall behind.
/// Status rows of earlier versions hold the whole journal themselves.
const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_journal");
/// ScalingSubscription statuses (cursors, conditions), keyed `namespace/name`.
/// A table of konsumer's embedded store: key `namespace/name`, value JSON.
type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const SUBSCRIPTION_STATUS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("subscription_status");
/// ScalingSubscriptions and Secrets made through the HTTP API (the files in DIR
/// stay the user's): `namespace/name` -> JSON.
const API_SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_subscriptions");
const API_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_secrets");

/// The tables of objects made through the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiTable {
    Subscriptions,
    Secrets,
}

impl ApiTable {
    fn table(self) -> Table {
        match self {
            ApiTable::Subscriptions => API_SUBSCRIPTIONS,
            ApiTable::Secrets => API_SECRETS,
        }
    }
}

/// konsumer's own files inside the local directory.
pub const STATE_DIR: &str = ".konsumer";

/// A file that could not be read as Consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: PathBuf,
    pub message: String,
}

/// What a file held when it was last read, keyed by its modification time and size.
/// The Consumers themselves live in the index; the cache keeps their names.
#[derive(Clone, Debug, Default)]
struct CachedFile {
    stamp: Option<(std::time::SystemTime, u64)>,
    /// (namespace, name) of the Consumers the file defines, in order.
    keys: Vec<(String, String)>,
    problems: Vec<String>,
    /// Not a regular file: why it was not read.
    skipped: Option<String>,
}

/// Parsed files of the local directory: a rescan re-parses only what changed.
/// By file name, not path (10,000 Consumer files at scale).
pub type FileCache = HashMap<std::ffi::OsString, CachedFileEntry>;

/// Opaque entry of a [`FileCache`].
#[derive(Clone, Debug, Default)]
pub struct CachedFileEntry(CachedFile);

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a scan found: `None` when no file changed since the last one.
pub type Scan = Option<(Vec<Consumer>, Vec<FileProblem>)>;

/// What a directory entry with a manifest name is now.
#[derive(Clone, Debug, PartialEq)]
enum Probe {
    /// A regular file: its modification time and size (`None` if unreadable).
    Regular(Option<(std::time::SystemTime, u64)>),
    /// Not read (a FIFO, a device, a symlink loop…): why.
    Skipped(String),
}

fn probe(path: &Path) -> Probe {
    match crate::manifest::regular_file(path) {
        Ok(()) => Probe::Regular(stamp(path)),
        Err(e) => Probe::Skipped(e.to_string()),
    }
}

/// Reads every Consumer document of the `.yaml`, `.yml` and `.json` files directly
/// in `dir` (each at most [`crate::manifest::MAX_BYTES`]). Files whose
/// modification time and size did not change since `cache` saw them are not
/// parsed again: their Consumers are taken from `index`, unless a Consumer they
/// define was also defined by a file that changed or went away (the
/// definition in force may have been that file's). When no file changed at all,
/// nothing is read and `None` is returned. Documents of other kinds are skipped;
/// unreadable ones, and entries that are not regular files, are reported.
pub fn scan_dir(
    dir: &Path,
    cache: &mut FileCache,
    index: &ConsumerIndex,
) -> Result<Scan, StoreError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let paths = manifest_paths(read_dir);
    let probes: Vec<Probe> = paths.iter().map(|p| probe(p)).collect();
    let name = |p: &Path| p.file_name().unwrap_or_default().to_os_string();
    let seen_before = |p: &PathBuf, now: &Probe| {
        let cached = p.file_name().and_then(|n| cache.get(n));
        cached.is_some_and(|e| match now {
            Probe::Regular(s) => s.is_some() && e.0.stamp == *s && e.0.skipped.is_none(),
            Probe::Skipped(why) => e.0.skipped.as_deref() == Some(why.as_str()),
        })
    };
    let unchanged = paths.len() == cache.len()
        && paths
            .iter()
            .zip(&probes)
            .all(|(p, now)| seen_before(p, now));
    if unchanged {
        return Ok(None);
    }
    // Consumers defined by files that changed or went away: whichever file
    // defines them too must be read again, not taken from the index.
    let mut stale: HashSet<(String, String)> = HashSet::new();
    for (file, entry) in cache.iter() {
        let still = find_name(&paths, file).is_some_and(|i| seen_before(&paths[i], &probes[i]));
        if !still {
            stale.extend(entry.0.keys.iter().cloned());
        }
    }
    cache.retain(|file, _| find_name(&paths, file).is_some());
    let mut consumers = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (path, now) in paths.into_iter().zip(probes) {
        let now = match now {
            Probe::Skipped(why) => {
                cache.insert(
                    name(&path),
                    CachedFileEntry(CachedFile {
                        skipped: Some(why.clone()),
                        ..CachedFile::default()
                    }),
                );
                problems.push(FileProblem { path, message: why });
                continue;
            }
            Probe::Regular(now) => now,
        };
        let entry = cache.entry(name(&path)).or_default();
        let unchanged = now.is_some()
            && entry.0.stamp == now
            && entry.0.skipped.is_none()
            && !entry.0.keys.iter().any(|k| stale.contains(k));
        let reused: Option<Vec<Consumer>> = unchanged
            .then(|| {
                entry
                    .0
                    .keys
                    .iter()
                    .map(|(ns, name)| index.get(ns, name).map(|c| (*c.consumer).clone()))
                    .collect()
            })
            .flatten();
        let found = match reused {
            Some(found) => found,
            None => {
                let (found, bad) = match crate::manifest::read_file(&path) {
                    Ok(text) => parse_consumers(&text),
                    Err(e) => (Vec::new(), vec![e.to_string()]),
                };
                let found: Vec<Consumer> = found
                    .into_iter()
                    .map(|mut c| {
                        if c.metadata.namespace.is_none() {
                            c.metadata.namespace = Some("default".into());
                        }
                        c
                    })
                    .collect();
                entry.0 = CachedFile {
                    stamp: now,
                    keys: found
                        .iter()
                        .map(|c| {
                            (
                                c.metadata.namespace.clone().unwrap_or_default(),
                                c.metadata.name.clone().unwrap_or_default(),
                            )
                        })
                        .collect(),
                    problems: bad,
                    skipped: None,
                };
                found
            }
        };
        for message in &entry.0.problems {
            problems.push(FileProblem {
                path: path.clone(),
                message: message.clone(),
            });
        }
        for consumer in found {
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
    Ok(Some((consumers, problems)))
}

/// A name konsumer reads: `*.yaml`, `*.yml`, `*.json`, not hidden, not a
/// directory. Whether it is a regular file is checked before it is read (and
/// reported when not: a FIFO would block the read, a device never end it).
fn is_manifest_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// The manifest files of a directory listing, sorted by their bytes. Both
/// local scans run on every pass or tick over every file of the directory
/// (10,000 Consumer files at scale), so this asks the listing's own file type
/// instead of a `stat` per file (only a symlink is followed), and compares
/// paths as bytes, not component by component (the two were most of an idle
/// pass's CPU at 10,000 files).
pub(crate) fn manifest_paths(read_dir: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = read_dir
        .filter_map(Result::ok)
        .filter(|e| {
            let path = e.path();
            is_manifest_name(&path)
                && match e.file_type() {
                    Ok(t) if t.is_symlink() => !path.is_dir(),
                    Ok(t) => !t.is_dir(),
                    Err(_) => !path.is_dir(),
                }
        })
        .map(|e| e.path())
        .collect();
    paths.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    paths
}

/// Where the file `name` is in a listing of one directory sorted by
/// [`manifest_paths`] (its paths share their directory: sorted by name too).
fn find_name(paths: &[PathBuf], name: &std::ffi::OsStr) -> Option<usize> {
    paths
        .binary_search_by(|p| p.file_name().unwrap_or_default().cmp(name))
        .ok()
}

/// The Consumers of a (multi-document) YAML or JSON text, and a message per
/// document that looks like a Consumer but cannot be read as one.
pub fn parse_consumers(text: &str) -> (Vec<Consumer>, Vec<String>) {
    let docs: Vec<serde_json::Value> = match crate::manifest::documents(text) {
        Ok(docs) => docs,
        Err(e) => return (Vec::new(), vec![e]),
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
/// Even with change notification a directory is listed again this often: a
/// safety net for a change the watcher missed.
pub const RELIST_AT_LEAST_EVERY: Duration = Duration::from_secs(30);

/// The last listing of a watched directory, kept while the watcher's change
/// count (`notified_changes`, read before listing) stays what it was, for at
/// most [`RELIST_AT_LEAST_EVERY`]. Without a watcher (`None`) nothing is kept.
pub struct KeptListing<T> {
    last: std::sync::Mutex<Option<(u64, std::time::Instant, T)>>,
}

impl<T> Default for KeptListing<T> {
    fn default() -> Self {
        KeptListing {
            last: std::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> KeptListing<T> {
    /// The kept listing, if nothing changed since it was made.
    pub fn get(&self, changes: Option<u64>) -> Option<T> {
        let changes = changes?;
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((seen, at, list)) if *seen == changes && at.elapsed() < RELIST_AT_LEAST_EVERY => {
                Some(list.clone())
            }
            _ => None,
        }
    }

    /// Keeps a listing made at change count `changes`.
    pub fn keep(&self, changes: Option<u64>, list: &T) {
        if let Some(changes) = changes {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((changes, std::time::Instant::now(), list.clone()));
        }
    }
}

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

/// The last scan: parsed files and the problems already reported.
#[derive(Default)]
struct ScanState {
    files: FileCache,
    problems: Vec<FileProblem>,
}

/// The embedded database, reopened after an I/O error: redb refuses every later
/// write ("Previous I/O error occurred") until it is closed and opened again, so
/// one full disk would otherwise freeze status until a restart.
struct Db {
    path: PathBuf,
    open: std::sync::Mutex<Option<Arc<Database>>>,
}

/// Why a database operation failed, and whether the handle must be reopened.
struct DbFailure {
    message: String,
    reopen: bool,
}

impl<E: Into<redb::Error>> From<E> for DbFailure {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        DbFailure {
            reopen: matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo),
            message: e.to_string(),
        }
    }
}

fn open_database(path: &Path) -> Result<Database, String> {
    Database::builder()
        .set_cache_size(DB_CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => format!(
                "the file is damaged ({why}). It holds only konsumer's own state (statuses, \
                 recomputed by the reconciler): stop konsumer and move it aside \
                 (mv {0} {0}.broken) to start afresh",
                path.display()
            ),
            redb::DatabaseError::DatabaseAlreadyOpen => {
                "another konsumer process has it open: run one per directory".to_string()
            }
            other => format!(
                "{other}. It holds only konsumer's own state (statuses, recomputed by the \
                 reconciler): if it stays unreadable, stop konsumer and move it aside \
                 (mv {0} {0}.broken)",
                path.display()
            ),
        })
}

impl Db {
    /// The open database, opening it again if an I/O error closed it.
    fn get(&self) -> Result<Arc<Database>, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = open.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(open_database(&self.path)?);
        tracing::info!(path = %self.path.display(), "embedded store reopened");
        *open = Some(db.clone());
        Ok(db)
    }

    /// Closes `db` (if still the open one): the next `get` reopens the file.
    fn discard(&self, db: Arc<Database>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.as_ref().is_some_and(|d| Arc::ptr_eq(d, &db)) {
            *open = None;
        }
    }

    /// Runs `f` on the database (blocking); an I/O failure closes it for reopening.
    fn run<T>(&self, f: impl FnOnce(&Database) -> Result<T, DbFailure>) -> Result<T, String> {
        let db = self.get()?;
        match f(&db) {
            Ok(v) => Ok(v),
            Err(failure) => {
                if failure.reopen {
                    self.discard(db);
                }
                Err(failure.message)
            }
        }
    }
}

/// Local directory + embedded status database.
pub struct LocalStore {
    dir: PathBuf,
    db_path: PathBuf,
    db: Arc<Db>,
    /// Why the last status write failed, until one succeeds.
    write_problem: std::sync::Mutex<Option<String>>,
    index: Arc<ConsumerIndex>,
    scan: Mutex<ScanState>,
    rescans: std::sync::atomic::AtomicU64,
    last_miss_scan: Mutex<Option<std::time::Instant>>,
    notified: Arc<Notified>,
}

/// What the directory watcher was told: whether it runs, and how many manifest
/// changes it saw. Other readers of the directory (the delivery side) re-list it
/// only when the count moved, instead of on every tick.
#[derive(Default)]
struct Notified {
    watching: std::sync::atomic::AtomicBool,
    changes: std::sync::atomic::AtomicU64,
}

/// How often a cache miss may re-read the directory.
const MISS_RESCAN_EVERY: Duration = Duration::from_secs(1);

/// The embedded database's page cache: statuses are small, and journals are read
/// only for subscribers that fell behind (the OS caches the file anyway). 8 MiB
/// filled up with journal pages in the delivery benchmark for 5 MiB more RSS.
const DB_CACHE_BYTES: usize = 1 << 20;

impl LocalStore {
    /// Opens (creating) `DIR/.konsumer/state.redb`.
    pub fn open(dir: &Path, index: Arc<ConsumerIndex>) -> Result<Self, StoreError> {
        let state = dir.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(|source| StoreError::Io {
            path: state.display().to_string(),
            source,
        })?;
        let db_path = state.join("state.redb");
        let db = open_database(&db_path).map_err(|message| StoreError::Database {
            path: db_path.display().to_string(),
            message,
        })?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            db_path: db_path.clone(),
            db: Arc::new(Db {
                path: db_path.clone(),
                open: std::sync::Mutex::new(Some(Arc::new(db))),
            }),
            write_problem: std::sync::Mutex::new(None),
            index,
            scan: Mutex::new(ScanState::default()),
            rescans: std::sync::atomic::AtomicU64::new(0),
            last_miss_scan: Mutex::new(None),
            notified: Arc::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many manifest changes the directory watcher has seen; `None` while no
    /// watcher runs (not started, stopped, or a filesystem without change
    /// notification): then only a fresh listing tells what changed. Read it
    /// before listing the directory: a change made during the listing moves it.
    pub fn notified_changes(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.notified
            .watching
            .load(Ordering::Acquire)
            .then(|| self.notified.changes.load(Ordering::Acquire))
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
        let mut state = self.scan.lock().await;
        self.rescans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.clone();
        let mut files = std::mem::take(&mut state.files);
        let index = self.index.clone();
        let (scanned, files) = tokio::task::spawn_blocking(move || {
            let scanned = scan_dir(&dir, &mut files, &index);
            (scanned, files)
        })
        .await
        .map_err(|e| self.db_error(e))?;
        state.files = files;
        let Some((mut consumers, problems)) = scanned? else {
            self.index.mark_synced();
            return Ok(self.index.len());
        };
        // Statuses live in the index; the database is read on the first scan only.
        let mut from_db: Option<HashMap<String, ConsumerStatus>> = if self.index.is_synced() {
            None
        } else {
            Some(self.load_statuses().await?.into_iter().collect())
        };
        for c in consumers.iter_mut().filter(|c| c.status.is_none()) {
            c.status = match &mut from_db {
                Some(db) => db.remove(&c.key()),
                None => self
                    .index
                    .get(
                        c.metadata.namespace.as_deref().unwrap_or_default(),
                        c.metadata.name.as_deref().unwrap_or_default(),
                    )
                    .and_then(|e| e.consumer.status.clone()),
            };
        }
        if problems != state.problems {
            for p in &problems {
                tracing::warn!(file = %p.path.display(), problem = %p.message, "skipping Consumer file content");
            }
            state.problems = problems;
        }
        let count = consumers.len();
        self.index.replace_all(consumers);
        self.index.mark_synced();
        Ok(count)
    }

    async fn load_statuses(&self) -> Result<Vec<(String, ConsumerStatus)>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.rows(STATUS).await? {
            match serde_json::from_slice::<ConsumerStatus>(&bytes) {
                Ok(mut s) => {
                    // A row of an earlier version holds the whole journal.
                    if let Some(j) = s.journal.as_mut()
                        && j.len() > journal::RECENT
                    {
                        *j = journal::recent(j);
                    }
                    out.push((key, s))
                }
                Err(e) => {
                    tracing::warn!(consumer = %key, error = %e, "ignoring unreadable stored status")
                }
            }
        }
        Ok(out)
    }

    /// Every (key, value) of `table`; none when it does not exist yet.
    async fn rows(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            db.run(|db| -> Result<Vec<(String, Vec<u8>)>, DbFailure> {
                let txn = db.begin_read()?;
                let table = match txn.open_table(table) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let mut rows = Vec::new();
                for item in table.iter()? {
                    let (k, v) = item?;
                    rows.push((k.value().to_string(), v.value().to_vec()));
                }
                Ok(rows)
            })
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))
    }

    /// Writes one row of `table` in its own transaction (an I/O failure closes the
    /// database for reopening).
    async fn put(&self, table: Table, key: String, bytes: Vec<u8>) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            db.run(|db| -> Result<(), DbFailure> {
                let txn = db.begin_write()?;
                {
                    let mut table = txn.open_table(table)?;
                    table.insert(key.as_str(), bytes.as_slice())?;
                }
                txn.commit()?;
                Ok(())
            })
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))
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
                use std::sync::atomic::Ordering;
                let tx = tx.clone();
                let notified = self.notified.clone();
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    // A lost event (queue overflow, an error) may hide a change:
                    // counted as one, so that every reader lists again.
                    let changed = match &event {
                        Ok(e) => changes_manifests(e) || e.need_rescan(),
                        Err(_) => true,
                    };
                    if changed {
                        notified.changes.fetch_add(1, Ordering::AcqRel);
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
            let _watching = _watcher.as_ref().map(|_| Watching::start(&self.notified));
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

/// Marks the watcher running until dropped (however its task ends).
struct Watching(Arc<Notified>);

impl Watching {
    fn start(notified: &Arc<Notified>) -> Self {
        notified
            .watching
            .store(true, std::sync::atomic::Ordering::Release);
        Watching(notified.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0
            .watching
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

fn read_journal(
    txn_journal: Option<Vec<u8>>,
    txn_status: Option<Vec<u8>>,
) -> Result<Vec<JournalEntry>, serde_json::Error> {
    if let Some(bytes) = txn_journal {
        return serde_json::from_slice(&bytes);
    }
    // Written by an earlier version: the status row holds the journal.
    Ok(match txn_status {
        Some(bytes) => serde_json::from_slice::<ConsumerStatus>(&bytes)?
            .journal
            .unwrap_or_default(),
        None => Vec::new(),
    })
}

/// One value of `table` in a read or write transaction (none when the table or
/// the key does not exist yet).
fn value_of(
    table: Result<impl ReadableTable<&'static str, &'static [u8]>, redb::TableError>,
    key: &str,
) -> Result<Option<Vec<u8>>, DbFailure> {
    let table = match table {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

impl LocalStore {
    /// A Consumer's whole journal (the index holds only its recent entries).
    pub async fn journal(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let key = format!("{namespace}/{name}");
        let db = self.db.clone();
        let rows = tokio::task::spawn_blocking(move || {
            db.run(|db| {
                let txn = db.begin_read()?;
                let j = value_of(txn.open_table(JOURNAL), &key)?;
                let s = match j {
                    Some(_) => None,
                    None => value_of(txn.open_table(STATUS), &key)?,
                };
                Ok((j, s))
            })
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))?;
        Ok(read_journal(rows.0, rows.1)?)
    }

    /// Writes a status row, and when its journal has entries the stored one
    /// lacks, the merged journal, in one transaction. Returns the status as the
    /// index keeps it (the recent entries of the journal).
    async fn put_status(
        &self,
        key: String,
        status: &ConsumerStatus,
        journal_changed: bool,
    ) -> Result<ConsumerStatus, StoreError> {
        let mut kept = status.clone();
        let written = match kept.journal.as_mut() {
            Some(j) if journal_changed && !j.is_empty() => Some(std::mem::take(j)),
            Some(j) => {
                if j.len() > journal::RECENT {
                    *j = journal::recent(j);
                }
                None
            }
            None => None,
        };
        let db = self.db.clone();
        let kept = tokio::task::spawn_blocking(move || {
            db.run(|db| {
                let txn = db.begin_write()?;
                let mut kept = kept;
                if let Some(written) = &written {
                    let stored = read_journal(
                        value_of(txn.open_table(JOURNAL), &key)?,
                        value_of(txn.open_table(STATUS), &key)?,
                    )
                    .unwrap_or_else(|e| {
                        tracing::warn!(consumer = %key, error = %e, "stored journal unreadable; starting it again from this write");
                        Vec::new()
                    });
                    let merged = journal::merge(stored, written);
                    kept.journal = Some(journal::recent(&merged));
                    let bytes = serde_json::to_vec(&merged).map_err(|e| DbFailure {
                        message: e.to_string(),
                        reopen: false,
                    })?;
                    txn.open_table(JOURNAL)?
                        .insert(key.as_str(), bytes.as_slice())?;
                }
                let bytes = serde_json::to_vec(&kept).map_err(|e| DbFailure {
                    message: e.to_string(),
                    reopen: false,
                })?;
                txn.open_table(STATUS)?
                    .insert(key.as_str(), bytes.as_slice())?;
                txn.commit()?;
                Ok(kept)
            })
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))?;
        Ok(kept)
    }
}

/// ScalingSubscription statuses (the delivery worker's cursors and conditions).
impl LocalStore {
    pub async fn subscription_statuses(
        &self,
    ) -> Result<HashMap<String, crate::api::SubscriptionStatus>, StoreError> {
        let mut out = HashMap::new();
        for (key, bytes) in self.rows(SUBSCRIPTION_STATUS).await? {
            match serde_json::from_slice(&bytes) {
                Ok(s) => {
                    out.insert(key, s);
                }
                Err(e) => {
                    tracing::warn!(subscription = %key, error = %e, "ignoring unreadable stored subscription status")
                }
            }
        }
        Ok(out)
    }

    pub async fn write_subscription_status(
        &self,
        key: &str,
        status: &crate::api::SubscriptionStatus,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(status)?;
        self.put(SUBSCRIPTION_STATUS, key.to_string(), bytes).await
    }

    /// Every row of an HTTP API table.
    pub async fn api_rows(&self, table: ApiTable) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.rows(table.table()).await
    }

    pub async fn put_api_row(
        &self,
        table: ApiTable,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.put(table.table(), key.to_string(), bytes).await
    }

    /// Removes a row of an HTTP API table, and with a subscription its status.
    pub async fn delete_api_row(&self, table: ApiTable, key: &str) -> Result<(), StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            db.run(|db| -> Result<(), DbFailure> {
                let txn = db.begin_write()?;
                {
                    let mut t = txn.open_table(table.table())?;
                    t.remove(key.as_str())?;
                    if table == ApiTable::Subscriptions {
                        let mut status = txn.open_table(SUBSCRIPTION_STATUS)?;
                        status.remove(key.as_str())?;
                    }
                }
                txn.commit()?;
                Ok(())
            })
        })
        .await
        .map_err(|e| self.db_error(e))?
        .map_err(|e| self.db_error(e))
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        // The file may have been written a moment ago, before the watcher fired:
        // read the directory again, but at most once per MISS_RESCAN_EVERY, so that
        // a stream of requests for an unknown Consumer does not re-parse every file
        // each time.
        let due = {
            let mut last = self.last_miss_scan.lock().await;
            let due = last.is_none_or(|t| t.elapsed() >= MISS_RESCAN_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            self.rescan().await?;
        }
        Ok(self.index.get(namespace, name))
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        // Serialized with rescans: a rescan must not put back a status read
        // before this write, nor this write a spec read before a rescan.
        let _scan = self.scan.lock().await;
        let key = format!("{namespace}/{name}");
        let Some(cached) = self.index.get(namespace, name) else {
            return Err(StoreError::NotFound(key));
        };
        // The reconciler starts from the cached status: the same journal means
        // no event was journaled, and the stored one stays as it is.
        let journal_changed = status.journal.as_ref()
            != cached
                .consumer
                .status
                .as_ref()
                .and_then(|s| s.journal.as_ref());
        let written = self.put_status(key, status, journal_changed).await;
        {
            let mut problem = self.write_problem.lock().unwrap_or_else(|e| e.into_inner());
            match &written {
                Ok(_) => {
                    if problem.take().is_some() {
                        tracing::info!(path = %self.db_path.display(), "Consumer status can be written again");
                    }
                }
                Err(e) => {
                    if problem.is_none() {
                        tracing::warn!(error = %e, "cannot write Consumer status; recommendations are frozen and /readyz fails until a write succeeds (retried every pass)");
                    }
                    *problem = Some(e.to_string());
                }
            }
        }
        let kept = written?;
        self.index.set_status(namespace, name, kept);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "local"
    }

    fn status_write_problem(&self) -> Option<String> {
        self.write_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_listing_serves_while_the_change_count_stays_and_never_without_a_watcher() {
        let kept = KeptListing::default();
        kept.keep(Some(3), &vec!["a"]);
        assert_eq!(kept.get(Some(3)), Some(vec!["a"]));
        assert_eq!(kept.get(Some(4)), None, "a change since: list again");
        assert_eq!(kept.get(None), None, "no watcher: list every time");
        kept.keep(None, &vec!["b"]);
        assert_eq!(
            kept.get(Some(3)),
            Some(vec!["a"]),
            "a listing without a count is not kept"
        );
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_writes_racing_rescans_lose_no_edit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orders.yaml");
        let orders = include_str!("../../tests/fixtures/consumer-orders.yaml");
        std::fs::write(&file, orders).unwrap();
        let index = ConsumerIndex::new();
        let store = Arc::new(LocalStore::open(dir.path(), index.clone()).unwrap());
        store.rescan().await.unwrap();
        for round in 0..60 {
            let n = if round % 2 == 0 { 12 } else { 10 };
            let writer = {
                let store = store.clone();
                tokio::spawn(async move {
                    let status = ConsumerStatus {
                        expected: Some(round),
                        ..ConsumerStatus::default()
                    };
                    store
                        .write_status("streams", "orders", &status)
                        .await
                        .unwrap();
                })
            };
            std::fs::write(
                &file,
                orders.replace("numPartitions: 10", &format!("numPartitions: {n}")),
            )
            .unwrap();
            store.rescan().await.unwrap();
            writer.await.unwrap();
            store.rescan().await.unwrap();
            let cached = index.get("streams", "orders").unwrap();
            assert_eq!(
                cached.consumer.spec.num_partitions,
                Some(n),
                "round {round}: the edit was lost"
            );
            assert_eq!(
                cached.consumer.status.as_ref().unwrap().expected,
                Some(round),
                "round {round}: the status was lost"
            );
        }
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

    #[tokio::test]
    async fn whole_journals_stay_in_the_database_and_the_index_keeps_the_recent_entries() {
        use crate::scaling_events::EventType;
        use crate::scaling_events::journal::{self, NewEvent};
        let event = |i: usize| NewEvent {
            type_: EventType::Scaled,
            instance: Some(0),
            data: serde_json::json!({"reason": format!("event {i}")}),
        };
        let at: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders.yaml"),
            include_str!("../../tests/fixtures/consumer-orders.yaml"),
        )
        .unwrap();
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        let cached = |index: &ConsumerIndex| {
            index
                .get("streams", "orders")
                .and_then(|c| c.consumer.status.clone())
                .unwrap_or_default()
        };
        // As the reconciler does: the cached status, events appended, one write
        // each, 30 times; and writes that journal nothing in between.
        for round in 0..30 {
            let mut status = cached(&index);
            let mut j = status.journal.take().unwrap_or_default();
            journal::append(&mut j, vec![event(2 * round), event(2 * round + 1)], at);
            status.journal = Some(j);
            store
                .write_status("streams", "orders", &status)
                .await
                .unwrap();
            let mut quiet = cached(&index);
            quiet.expected = Some(round as i32);
            store
                .write_status("streams", "orders", &quiet)
                .await
                .unwrap();
        }
        let in_memory = cached(&index).journal.unwrap();
        assert_eq!(in_memory.len(), journal::RECENT);
        assert_eq!(journal::head(&in_memory), 60);
        let whole = store.journal("streams", "orders").await.unwrap();
        assert_eq!(whole.len(), 60);
        assert_eq!(whole[0].sequence, 1);
        assert!(whole.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
        assert_eq!(whole[59].data.value()["reason"], "event 59");
        drop(store);
        // After a restart: the same.
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        assert_eq!(cached(&index).journal.unwrap(), in_memory);
        assert_eq!(store.journal("streams", "orders").await.unwrap(), whole);
    }

    #[tokio::test]
    async fn a_status_row_of_an_earlier_version_still_gives_its_whole_journal() {
        use crate::scaling_events::EventType;
        use crate::scaling_events::journal::{self, NewEvent};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders.yaml"),
            include_str!("../../tests/fixtures/consumer-orders.yaml"),
        )
        .unwrap();
        let mut j = Vec::new();
        let events = (0..20)
            .map(|i| NewEvent {
                type_: EventType::Scaled,
                instance: Some(0),
                data: serde_json::json!({"reason": format!("event {i}")}),
            })
            .collect();
        journal::append(&mut j, events, jiff::Timestamp::now());
        let old = ConsumerStatus {
            journal: Some(j.clone()),
            ..ConsumerStatus::default()
        };
        {
            let store = LocalStore::open(dir.path(), ConsumerIndex::new()).unwrap();
            // What an earlier version wrote: the status row alone.
            store
                .put(
                    STATUS,
                    "streams/orders".into(),
                    serde_json::to_vec(&old).unwrap(),
                )
                .await
                .unwrap();
        }
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        let cached = index.get("streams", "orders").unwrap();
        let in_memory = cached.consumer.status.as_ref().unwrap().journal.clone();
        assert_eq!(in_memory.map(|j| j.len()), Some(journal::RECENT));
        assert_eq!(store.journal("streams", "orders").await.unwrap(), j);
        // The next write with an event moves it to the journal table, whole.
        let mut status = cached.consumer.status.clone().unwrap();
        let mut recent = status.journal.take().unwrap();
        journal::append(
            &mut recent,
            vec![NewEvent {
                type_: EventType::Saturated,
                instance: Some(0),
                data: serde_json::json!({}),
            }],
            jiff::Timestamp::now(),
        );
        status.journal = Some(recent);
        store
            .write_status("streams", "orders", &status)
            .await
            .unwrap();
        let whole = store.journal("streams", "orders").await.unwrap();
        assert_eq!(whole.len(), 21);
        assert_eq!(whole[..20], j[..]);
    }

    #[tokio::test]
    async fn removing_the_file_that_won_resolves_its_consumers_from_the_other_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let orders = include_str!("../../tests/fixtures/consumer-orders.yaml");
        std::fs::write(dir.path().join("a.yaml"), orders).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            orders.replace("numPartitions: 10", "numPartitions: 12"),
        )
        .unwrap();
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        let partitions = || {
            index
                .get("streams", "orders")
                .map(|c| c.consumer.spec.num_partitions)
        };
        assert_eq!(partitions(), Some(Some(10)), "the first file wins");
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        store.rescan().await.unwrap();
        assert_eq!(
            partitions(),
            Some(Some(12)),
            "the other definition, at once"
        );

        // The winner edited so that it no longer defines the Consumer.
        std::fs::write(dir.path().join("a.yaml"), orders).unwrap();
        store.rescan().await.unwrap();
        assert_eq!(partitions(), Some(Some(10)));
        std::fs::write(
            dir.path().join("a.yaml"),
            orders.replace("name: orders\n", "name: other\n"),
        )
        .unwrap();
        store.rescan().await.unwrap();
        assert_eq!(partitions(), Some(Some(12)));
    }

    #[tokio::test]
    async fn fifos_and_oversized_files_are_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("orders.yaml"),
            include_str!("../../tests/fixtures/consumer-orders.yaml"),
        )
        .unwrap();
        let fifo = dir.path().join("pipe.yaml");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let big = std::fs::File::create(dir.path().join("big.yaml")).unwrap();
        big.set_len(1 << 30).unwrap();
        let mut cache = FileCache::new();
        let index = ConsumerIndex::new();
        let started = std::time::Instant::now();
        let (found, problems) = scan_dir(dir.path(), &mut cache, &index).unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(found.len(), 1);
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path.display(), p.message))
            .collect();
        assert!(
            text.iter()
                .any(|t| t.contains("pipe.yaml") && t.contains("a FIFO")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("big.yaml") && t.contains("over konsumer's limit")),
            "{text:?}"
        );
        assert!(
            scan_dir(dir.path(), &mut cache, &index).unwrap().is_none(),
            "nothing changed: nothing read"
        );
    }

    #[test]
    fn a_damaged_database_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("state.redb"), vec![7u8; 8192]).unwrap();
        let err = LocalStore::open(dir.path(), ConsumerIndex::new())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("move it aside") && err.contains("state.redb.broken"),
            "{err}"
        );
    }
}
