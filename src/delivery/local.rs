//! Local mode: ScalingSubscriptions, Secrets (with `data` or `stringData`) and
//! Namespaces (for their labels) from the same YAML files as the Consumers, the
//! subscriptions' status in the embedded store. konsumer's own namespace in local
//! mode is `--lease-namespace` (`POD_NAMESPACE`, default `default`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use serde_json::Value;

use super::{SecretValue, SourceError, SubscriptionSource};
use crate::api::subscription::SUBSCRIPTION_GROUP;
use crate::api::{JournalEntry, ScalingSubscription, SubscriptionStatus};
use crate::store::local::{ApiTable, LocalStore, RELIST_AT_LEAST_EVERY, manifest_paths};

type Stamp = Option<(SystemTime, u64)>;

/// What one file holds of the kinds delivery reads.
#[derive(Default, Clone)]
struct FileDocs {
    stamp: Stamp,
    subscriptions: Vec<ScalingSubscription>,
    /// (namespace, name) → key → value
    secrets: Vec<((String, String), BTreeMap<String, String>)>,
    namespaces: Vec<(String, BTreeMap<String, String>)>,
}

#[derive(Default)]
struct Cache {
    /// By file name (not path: 10,000 Consumer files at scale).
    files: HashMap<OsString, Seen>,
    /// The files that hold any of the kinds read here, in listing order, as
    /// of the last listing (most files of a fleet's directory hold Consumers
    /// only: 10,000 of them at scale).
    found: Arc<[FileDocs]>,
    /// The watcher's change count at the last listing, and when it was made.
    listed: Option<(Option<u64>, Instant)>,
    /// How many times the directory was listed.
    listings: u64,
}

pub struct LocalSubscriptions {
    dir: PathBuf,
    store: Arc<LocalStore>,
    cache: Mutex<Cache>,
    statuses: tokio::sync::Mutex<Option<HashMap<String, SubscriptionStatus>>>,
    /// What the HTTP API made, loaded from the embedded store on first use.
    api: tokio::sync::Mutex<Option<ApiObjects>>,
}

/// ScalingSubscriptions and Secrets made through the HTTP API (`namespace/name`).
#[derive(Default, Clone)]
struct ApiObjects {
    subscriptions: BTreeMap<String, ScalingSubscription>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// A file as last read: its stamp, and what it holds of the kinds read here
/// (`None`: nothing, like most files of a fleet's directory: kept small).
struct Seen {
    stamp: Stamp,
    docs: Option<Box<FileDocs>>,
}

impl FileDocs {
    fn holds_any(&self) -> bool {
        !(self.subscriptions.is_empty() && self.secrets.is_empty() && self.namespaces.is_empty())
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn kind_of(doc: &Value) -> (Option<&str>, Option<&str>) {
    (
        doc.get("apiVersion").and_then(Value::as_str),
        doc.get("kind").and_then(Value::as_str),
    )
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the documents of one file; problems are logged (never their values).
fn parse_file(path: &Path) -> FileDocs {
    let mut docs = FileDocs {
        stamp: stamp(path),
        ..FileDocs::default()
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return docs;
    };
    // Most files hold Consumers only (1,000 of them in one file, say): a file
    // that cannot hold any of the kinds read here is not parsed at all.
    if !["ScalingSubscription", "Secret", "Namespace"]
        .iter()
        .any(|kind| text.contains(kind))
    {
        return docs;
    }
    let Ok(values) = serde_saphyr::from_multiple::<Value>(&text) else {
        return docs;
    };
    for (i, doc) in values.into_iter().enumerate() {
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match kind_of(&doc) {
            (Some(api), Some("ScalingSubscription"))
                if api.split_once('/').map(|(g, _)| g) == Some(SUBSCRIPTION_GROUP) =>
            {
                match serde_json::from_value::<ScalingSubscription>(doc) {
                    Ok(mut s) => {
                        s.metadata.namespace = Some(ns);
                        s.status = None;
                        docs.subscriptions.push(s);
                    }
                    Err(e) => tracing::warn!(
                        file = %path.display(), document = i + 1, error = %e,
                        "skipping a ScalingSubscription that cannot be read"
                    ),
                }
            }
            (Some("v1"), Some("Secret")) => {
                let mut values: BTreeMap<String, String> = BTreeMap::new();
                for (k, v) in string_map(doc.get("data")) {
                    match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                        Ok(bytes) => {
                            values.insert(k, String::from_utf8_lossy(&bytes).into_owned());
                        }
                        Err(_) => tracing::warn!(
                            file = %path.display(), secret = %name, key = %k,
                            "Secret data value is not base64; skipped (stringData takes plain text)"
                        ),
                    }
                }
                // As the apiserver does: stringData wins over data.
                values.extend(string_map(doc.get("stringData")));
                docs.secrets.push(((ns, name), values));
            }
            (Some("v1"), Some("Namespace")) => {
                docs.namespaces
                    .push((name, string_map(doc.pointer("/metadata/labels"))));
            }
            _ => {}
        }
    }
    docs
}

impl LocalSubscriptions {
    pub fn new(store: Arc<LocalStore>) -> Self {
        LocalSubscriptions {
            dir: store.dir().to_path_buf(),
            store,
            cache: Mutex::new(Cache::default()),
            statuses: tokio::sync::Mutex::new(None),
            api: tokio::sync::Mutex::new(None),
        }
    }

    /// The documents of every file that holds any, re-reading the files that
    /// changed. The directory is listed (and each manifest `stat`ed) only when
    /// the directory watcher saw a change since the last listing, when no
    /// watcher runs, or every [`RELIST_AT_LEAST_EVERY`]: the delivery side asks
    /// every tick, and an unchanged directory of 10,000 Consumer files was
    /// most of an idle process's CPU.
    fn scan(&self) -> Arc<[FileDocs]> {
        // Before the listing: a change made while it runs moves the count.
        let changes = self.store.notified_changes();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if changes.is_some()
            && let Some((seen, at)) = cache.listed
            && seen == changes
            && at.elapsed() < RELIST_AT_LEAST_EVERY
        {
            return cache.found.clone();
        }
        let paths = std::fs::read_dir(&self.dir)
            .map(manifest_paths)
            .unwrap_or_default();
        // Made afresh, sized as the last one: a file no longer listed is
        // forgotten with it.
        let mut files = HashMap::with_capacity(cache.files.len());
        let mut found = Vec::new();
        for path in paths {
            let Some(name) = path.file_name() else {
                continue;
            };
            let now = stamp(&path);
            let seen = match cache.files.remove(name) {
                Some(f) if now.is_some() && f.stamp == now => f,
                _ => {
                    let docs = parse_file(&path);
                    Seen {
                        stamp: docs.stamp,
                        docs: docs.holds_any().then(|| Box::new(docs)),
                    }
                }
            };
            if let Some(docs) = &seen.docs {
                found.push((**docs).clone());
            }
            files.insert(name.to_os_string(), seen);
        }
        cache.files = files;
        cache.found = found.into();
        cache.listed = Some((changes, Instant::now()));
        cache.listings += 1;
        cache.found.clone()
    }

    async fn statuses(&self) -> Result<HashMap<String, SubscriptionStatus>, SourceError> {
        let mut guard = self.statuses.lock().await;
        if guard.is_none() {
            *guard = Some(self.store.subscription_statuses().await?);
        }
        Ok(guard.clone().unwrap_or_default())
    }
}

/// The HTTP API's objects: kept in the embedded store, served beside the files'.
impl LocalSubscriptions {
    async fn api_objects(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<ApiObjects>>, SourceError> {
        let mut guard = self.api.lock().await;
        if guard.is_none() {
            let mut objects = ApiObjects::default();
            for (key, bytes) in self.store.api_rows(ApiTable::Subscriptions).await? {
                match serde_json::from_slice::<ScalingSubscription>(&bytes) {
                    Ok(s) => {
                        objects.subscriptions.insert(key, s);
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %key, error = %e, "ignoring an unreadable stored ScalingSubscription")
                    }
                }
            }
            for (key, bytes) in self.store.api_rows(ApiTable::Secrets).await? {
                match serde_json::from_slice::<BTreeMap<String, String>>(&bytes) {
                    Ok(v) => {
                        objects.secrets.insert(key, v);
                    }
                    // Never the value: only that it could not be read.
                    Err(_) => tracing::warn!(secret = %key, "ignoring an unreadable stored Secret"),
                }
            }
            *guard = Some(objects);
        }
        Ok(guard)
    }

    /// The file that defines subscription `key`, if one does.
    pub fn defined_in_file(&self, key: &str) -> bool {
        self.scan()
            .iter()
            .any(|f| f.subscriptions.iter().any(|s| s.key() == key))
    }

    /// Whether the HTTP API made subscription `key`.
    pub async fn is_api_subscription(&self, key: &str) -> Result<bool, SourceError> {
        let guard = self.api_objects().await?;
        Ok(guard
            .as_ref()
            .is_some_and(|o| o.subscriptions.contains_key(key)))
    }

    /// Creates or replaces a subscription made through the API (status apart).
    pub async fn put_api_subscription(&self, sub: &ScalingSubscription) -> Result<(), SourceError> {
        let mut stored = sub.clone();
        stored.status = None;
        let key = stored.key();
        let bytes = serde_json::to_vec(&stored).map_err(|e| SourceError::Other(e.to_string()))?;
        let mut guard = self.api_objects().await?;
        self.store
            .put_api_row(ApiTable::Subscriptions, &key, bytes)
            .await?;
        guard
            .get_or_insert_with(ApiObjects::default)
            .subscriptions
            .insert(key, stored);
        Ok(())
    }

    /// Deletes a subscription made through the API, its status, and the Secret
    /// the API made for it.
    pub async fn delete_api_subscription(&self, key: &str) -> Result<bool, SourceError> {
        let mut guard = self.api_objects().await?;
        let objects = guard.get_or_insert_with(ApiObjects::default);
        let Some(sub) = objects.subscriptions.get(key).cloned() else {
            return Ok(false);
        };
        self.store
            .delete_api_row(ApiTable::Subscriptions, key)
            .await?;
        objects.subscriptions.remove(key);
        if let Some(secret) = sub.spec.secret_ref.as_ref().and_then(|r| r.name.as_deref()) {
            let secret_key = format!(
                "{}/{secret}",
                sub.metadata.namespace.as_deref().unwrap_or("default")
            );
            if objects.secrets.contains_key(&secret_key) {
                self.store
                    .delete_api_row(ApiTable::Secrets, &secret_key)
                    .await?;
                objects.secrets.remove(&secret_key);
            }
        }
        drop(guard);
        if let Some(statuses) = self.statuses.lock().await.as_mut() {
            statuses.remove(key);
        }
        Ok(true)
    }

    /// A Secret made through the API (`namespace/name`), when there is one.
    pub async fn api_secret(
        &self,
        key: &str,
    ) -> Result<Option<BTreeMap<String, String>>, SourceError> {
        let guard = self.api_objects().await?;
        Ok(guard.as_ref().and_then(|o| o.secrets.get(key).cloned()))
    }

    pub async fn put_api_secret(
        &self,
        key: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), SourceError> {
        let bytes = serde_json::to_vec(values).map_err(|e| SourceError::Other(e.to_string()))?;
        let mut guard = self.api_objects().await?;
        self.store
            .put_api_row(ApiTable::Secrets, key, bytes)
            .await?;
        guard
            .get_or_insert_with(ApiObjects::default)
            .secrets
            .insert(key.to_string(), values.clone());
        Ok(())
    }

    /// Whether a Secret `namespace/name` exists in the files or the API's store.
    pub async fn secret_exists(&self, key: &str) -> Result<bool, SourceError> {
        let in_files = self.scan().iter().any(|f| {
            f.secrets
                .iter()
                .any(|((ns, n), _)| format!("{ns}/{n}") == key)
        });
        Ok(in_files || self.api_secret(key).await?.is_some())
    }
}

#[async_trait]
impl SubscriptionSource for LocalSubscriptions {
    async fn subscriptions(&self) -> Result<Vec<Arc<ScalingSubscription>>, SourceError> {
        let files = self.scan();
        let statuses = self.statuses().await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for f in files.iter() {
            for s in &f.subscriptions {
                let key = s.key();
                if !seen.insert(key.clone()) {
                    tracing::warn!(subscription = %key, "ScalingSubscription defined twice; the first one wins");
                    continue;
                }
                let mut s = s.clone();
                s.status = statuses.get(&key).cloned();
                out.push(Arc::new(s));
            }
        }
        let api = self.api_objects().await?;
        for (key, s) in api.iter().flat_map(|o| o.subscriptions.iter()) {
            if !seen.insert(key.clone()) {
                tracing::warn!(subscription = %key, "ScalingSubscription made through the api is also defined in a file; the file wins");
                continue;
            }
            let mut s = s.clone();
            s.status = statuses.get(key).cloned();
            out.push(Arc::new(s));
        }
        Ok(out)
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<SecretValue, SourceError> {
        let files = self.scan();
        for f in files.iter() {
            for ((ns, n), values) in &f.secrets {
                if ns == namespace && n == name {
                    return Ok(match values.get(key) {
                        Some(v) => SecretValue::Found(v.clone()),
                        None => SecretValue::Missing(format!(
                            "Secret {namespace}/{name} has no key {key:?} (in data or stringData)"
                        )),
                    });
                }
            }
        }
        if let Some(values) = self.api_secret(&format!("{namespace}/{name}")).await? {
            return Ok(match values.get(key) {
                Some(v) => SecretValue::Found(v.clone()),
                None => SecretValue::Missing(format!(
                    "Secret {namespace}/{name} (made through the api) has no key {key:?}"
                )),
            });
        }
        Ok(SecretValue::Missing(format!(
            "Secret {namespace}/{name} not found in {}",
            self.dir.display()
        )))
    }

    async fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let files = self.scan();
        let declared = files
            .iter()
            .flat_map(|f| &f.namespaces)
            .find(|(n, _)| n == namespace)
            .map(|(_, l)| l.clone());
        // A namespace without a manifest exists all the same, with no labels.
        Some(declared.unwrap_or_default())
    }

    async fn journal(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Vec<JournalEntry>>, SourceError> {
        Ok(Some(self.store.journal(namespace, name).await?))
    }

    async fn write_status(
        &self,
        sub: &ScalingSubscription,
        status: &SubscriptionStatus,
    ) -> Result<(), SourceError> {
        let key = sub.key();
        self.store.write_subscription_status(&key, status).await?;
        let mut guard = self.statuses.lock().await;
        guard
            .get_or_insert_with(HashMap::new)
            .insert(key, status.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConsumerIndex;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    fn subscription(url: &str) -> String {
        format!(
            "apiVersion: konsumer.dev/v1alpha1\nkind: ScalingSubscription\n\
             metadata: {{name: feed, namespace: streams}}\nspec: {{url: \"{url}\"}}\n"
        )
    }

    async fn urls(subs: &LocalSubscriptions) -> Vec<String> {
        let all = subs.subscriptions().await.expect("subscriptions");
        all.iter().filter_map(|s| s.spec.url.clone()).collect()
    }

    /// Waits (up to 10 s: a loaded machine) until the subscriptions' URLs are `want`.
    async fn eventually(subs: &LocalSubscriptions, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = urls(subs).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "still {got:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn listings(subs: &LocalSubscriptions) -> u64 {
        subs.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listings
    }

    async fn watched(dir: &Path) -> (Arc<LocalStore>, CancellationToken) {
        let store = Arc::new(
            LocalStore::open(dir, Arc::new(ConsumerIndex::default())).expect("open store"),
        );
        let shutdown = CancellationToken::new();
        let _watcher = store.clone().spawn_watcher(shutdown.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.notified_changes().is_none() {
            assert!(
                Instant::now() < deadline,
                "the directory watcher did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (store, shutdown)
    }

    #[tokio::test]
    async fn with_a_watcher_an_unchanged_directory_is_not_listed_again_on_every_tick() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(dir.path().join(format!("c{i}.yaml")), "kind: Consumer\n").unwrap();
        }
        std::fs::write(
            dir.path().join("feed.yaml"),
            subscription("http://a.example"),
        )
        .unwrap();
        let (store, shutdown) = watched(dir.path()).await;
        let subs = LocalSubscriptions::new(store);
        eventually(&subs, &["http://a.example"]).await;
        let before = listings(&subs);
        for _ in 0..20 {
            assert_eq!(urls(&subs).await, ["http://a.example"]);
        }
        assert_eq!(listings(&subs), before, "listed again with nothing changed");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn with_a_watcher_an_added_edited_or_removed_file_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, shutdown) = watched(dir.path()).await;
        let subs = LocalSubscriptions::new(store);
        assert!(urls(&subs).await.is_empty());
        let file = dir.path().join("feed.yaml");
        std::fs::write(&file, subscription("http://a.example")).unwrap();
        eventually(&subs, &["http://a.example"]).await;
        std::fs::write(&file, subscription("http://b.example/longer")).unwrap();
        eventually(&subs, &["http://b.example/longer"]).await;
        std::fs::remove_file(&file).unwrap();
        eventually(&subs, &[]).await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn without_a_watcher_every_call_lists_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalStore::open(dir.path(), Arc::new(ConsumerIndex::default())).expect("open store"),
        );
        assert_eq!(store.notified_changes(), None);
        let subs = LocalSubscriptions::new(store);
        let file = dir.path().join("feed.yaml");
        std::fs::write(&file, subscription("http://a.example")).unwrap();
        assert_eq!(urls(&subs).await, ["http://a.example"]);
        std::fs::write(&file, subscription("http://b.example/longer")).unwrap();
        assert_eq!(urls(&subs).await, ["http://b.example/longer"]);
        std::fs::remove_file(&file).unwrap();
        assert!(urls(&subs).await.is_empty());
    }
}
