//! The Deployment manager (I/O shell around [`crate::manage`]): lists the
//! Deployments konsumer may manage once per pass, and for each Consumer makes the
//! writes the pure core decided: creations and metadata fixes at once, one
//! rollout at a time per Consumer within the global pace, removals of extra
//! instances. Every write is a server-side apply with field manager `konsumer`
//! (forced: konsumer owns the fields it sets; fields it does not set stay with
//! whoever set them). What it did is logged, counted and recorded as Kubernetes
//! Events; each rollout is an [`Applied`] record.

use std::borrow::{Borrow, Cow};
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::TransitionSink;
use super::events::Regarding;
use crate::api::shared::Pool;
use crate::api::{Consumer, GROUP, VERSION_V1, keys};
use crate::inject::ConsumerSettings;
use crate::manage::decide::FIELD_MANAGER;
use crate::manage::memo::Memo;
use crate::manage::{
    self, Applied, Change, Decision, InFlight, Kept, Management, Owner, Pace, Recipe, Write, live,
};
use crate::notice;
use crate::store::StoreError;
use crate::store::local::KeptListing;
use crate::telemetry::Metrics;

/// One listed Deployment, as a pass reads it: whose it is, its name and its
/// version (what the skip decision reads), and the way to the whole object,
/// fetched only for the Consumers that are reconciled (see [`Listed::object`]).
/// An unchanged fleet costs a listing of these digests and nothing more.
pub struct Listed {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// Its controller's uid.
    pub owner: Option<Arc<str>>,
    pub version: Revision,
    body: Body,
}

/// A listed Deployment's version: its `resourceVersion`, or in local mode the
/// manifest file's stamp (an edit by hand changes it too), kept as numbers
/// and written out as the `resourceVersion` `<modified>-<length>` only where a
/// whole object carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revision {
    Resource(Arc<str>),
    Stamp(Stamp),
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revision::Resource(rv) => f.write_str(rv),
            Revision::Stamp(s) => write!(f, "{}-{}", s.modified, s.len),
        }
    }
}

/// A file's modification time (ns since the epoch) and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stamp {
    modified: u64,
    len: u64,
}

enum Body {
    /// Kube mode: the object of this pass's list, dropped with it.
    Listed(Box<Deployment>),
    /// Local mode, a manifest at its own place, `<root>/<namespace>/<name>.yaml`
    /// by its metadata (every manifest konsumer writes): the root, shared by
    /// all of them, the path made when the manifest is read. Nothing is kept
    /// between passes but the digest; the manifest is read again when needed.
    Placed(Arc<Path>),
    /// Local mode, a manifest whose metadata names another place than its
    /// file's (renamed or edited by hand): its path.
    File(Arc<Path>),
    /// An object given whole (tests).
    #[cfg(test)]
    Value(Value),
    /// Another body whose reads are counted (tests).
    #[cfg(test)]
    Counted(Box<Body>, Arc<std::sync::atomic::AtomicUsize>),
}

impl Listed {
    /// The whole Deployment as JSON (`None`: it is gone since it was listed).
    pub fn object(&self) -> Result<Option<Value>, StoreError> {
        match &self.body {
            Body::Listed(d) => to_json(d).map(Some),
            Body::Placed(root) => {
                Ok(
                    LocalDeployments::read_stamped(&placed(root, &self.namespace, &self.name))?
                        .map(|(_, d)| d),
                )
            }
            Body::File(path) => Ok(LocalDeployments::read_stamped(path)?.map(|(_, d)| d)),
            #[cfg(test)]
            Body::Value(v) => Ok(Some(v.clone())),
            #[cfg(test)]
            Body::Counted(body, reads) => {
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Listed {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    owner: self.owner.clone(),
                    version: self.version.clone(),
                    body: body.copy(),
                }
                .object()
            }
        }
    }

    /// The digest of a Deployment given whole.
    #[cfg(test)]
    pub fn of_value(d: Value) -> Self {
        Listed {
            namespace: live::namespace(&d).into(),
            name: live::name(&d).into(),
            owner: live::controller(&d).map(|(_, _, uid)| uid.into()),
            version: Revision::Resource(
                d.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
            ),
            body: Body::Value(d),
        }
    }

    fn digest(d: &Value, version: Revision, body: Body) -> Self {
        // A Consumer's Deployments share its namespace and uid, and a fleet
        // its few namespaces: kept once, not per manifest.
        static NAMES: LazyLock<Pool<str>> = LazyLock::new(Pool::default);
        let shared = |s: &str| {
            let mut s: Arc<str> = s.into();
            NAMES.share(&mut s);
            s
        };
        Listed {
            namespace: shared(live::namespace(d)),
            name: live::name(d).into(),
            owner: live::controller(d).map(|(_, _, uid)| shared(uid)),
            version,
            body,
        }
    }
}

#[cfg(test)]
impl Body {
    fn copy(&self) -> Body {
        match self {
            Body::Listed(d) => Body::Listed(d.clone()),
            Body::Placed(root) => Body::Placed(root.clone()),
            Body::File(p) => Body::File(p.clone()),
            Body::Value(v) => Body::Value(v.clone()),
            Body::Counted(b, reads) => Body::Counted(Box::new(b.copy()), reads.clone()),
        }
    }
}

/// The local store, counting the Deployments read whole (tests).
#[cfg(test)]
pub(crate) struct CountingDeployments {
    pub inner: LocalDeployments,
    pub reads: Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
#[async_trait]
impl DeploymentApi for CountingDeployments {
    async fn list(&self) -> Result<Vec<Arc<Listed>>, StoreError> {
        Ok(self
            .inner
            .list()
            .await?
            .into_iter()
            .map(|d| {
                Arc::new(Listed {
                    namespace: d.namespace.clone(),
                    name: d.name.clone(),
                    owner: d.owner.clone(),
                    version: d.version.clone(),
                    body: Body::Counted(Box::new(d.body.copy()), self.reads.clone()),
                })
            })
            .collect())
    }
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get(namespace, name).await
    }
    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError> {
        self.inner.apply(namespace, name, body).await
    }
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        self.inner.delete(namespace, name).await
    }
    fn owner(&self, consumer: &Consumer) -> Option<Owner> {
        self.inner.owner(consumer)
    }
    fn owner_uid<'c>(&self, consumer: &'c Consumer) -> Option<Cow<'c, str>> {
        self.inner.owner_uid(consumer)
    }
}

/// Where managed Deployments live.
#[async_trait]
pub trait DeploymentApi: Send + Sync {
    /// Every Deployment konsumer may manage: those with Konsumerator's
    /// `controller` label (konsumer's and Konsumerator's both have it), as
    /// digests.
    async fn list(&self) -> Result<Vec<Arc<Listed>>, StoreError>;
    /// One Deployment, if it exists (a name is checked before it is created).
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError>;
    /// Server-side apply of a whole Deployment; the stored object back.
    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError>;
    /// Deletes (a Deployment already gone is no error).
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError>;
    /// The owner of a Consumer's Deployments (`None`: it cannot own any).
    fn owner(&self, consumer: &Consumer) -> Option<Owner>;
    /// [`Self::owner`]'s uid alone (asked for every Consumer on every pass).
    fn owner_uid<'c>(&self, consumer: &'c Consumer) -> Option<Cow<'c, str>> {
        self.owner(consumer).map(|o| Cow::Owned(o.uid))
    }
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
    async fn list(&self) -> Result<Vec<Arc<Listed>>, StoreError> {
        let api: Api<Deployment> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        // From the apiserver's watch cache (`resourceVersion=0`), like the
        // workload counters. The typed objects live until the pass ends; only
        // the reconciled Consumers' become JSON.
        let params = ListParams::default()
            .labels(keys::CONTROLLER_LABEL)
            .match_any();
        Ok(api
            .list(&params)
            .await?
            .items
            .into_iter()
            .map(|d| {
                let meta = &d.metadata;
                let text =
                    |s: &Option<String>| -> Arc<str> { s.as_deref().unwrap_or_default().into() };
                let version = Revision::Resource(text(&meta.resource_version));
                let owner = meta
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true))
                    .map(|r| Arc::from(r.uid.as_str()));
                Arc::new(Listed {
                    namespace: text(&meta.namespace),
                    name: text(&meta.name),
                    owner,
                    version,
                    body: Body::Listed(Box::new(d)),
                })
            })
            .collect())
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

    fn owner_uid<'c>(&self, consumer: &'c Consumer) -> Option<Cow<'c, str>> {
        consumer.metadata.name.as_ref()?;
        consumer.metadata.uid.as_deref().map(Cow::Borrowed)
    }
}

/// Sets `metadata.resourceVersion` (a manifest that is no object is left as
/// it is: it is no Deployment of anyone's).
fn set_version(d: &mut Value, version: String) {
    if let Some(meta) = d.as_object_mut().map(|d| {
        d.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()))
    }) && let Some(meta) = meta.as_object_mut()
    {
        meta.insert("resourceVersion".into(), Value::from(version));
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
    root: Arc<Path>,
    /// Each manifest's digest as last read, with the stamp it was read at: a
    /// pass YAML-parses only the files that changed since the last one
    /// (konsumer's own writes are noted as they are made), and what stays
    /// between passes is the digest, not the manifest.
    digests: Arc<Mutex<Digests>>,
    /// Change notification for the manifests, when it could be set up: an
    /// unchanged tree is then not listed again (40,000 `stat`s a pass at
    /// 10,000 Consumers) but at least every [`crate::store::local::RELIST_AT_LEAST_EVERY`].
    watch: Option<Watch>,
    last: Arc<KeptListing<Vec<Arc<Listed>>>>,
    /// How many times the tree was listed.
    listings: Arc<std::sync::atomic::AtomicU64>,
}

/// A watcher of the manifests' tree and the changes it saw (konsumer's own
/// writes count too: they are noted in the digests anyway).
struct Watch {
    _watcher: notify::RecommendedWatcher,
    changes: Arc<std::sync::atomic::AtomicU64>,
}

impl Watch {
    fn start(root: &Path) -> notify::Result<Self> {
        use notify::Watcher;
        use std::sync::atomic::Ordering;
        std::fs::create_dir_all(root)?;
        let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = changes.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading a manifest (the listing, a reconciled Consumer's
                // Deployments) is no change; anything else, a lost event too, is.
                if !event.is_ok_and(|e| e.kind.is_access()) {
                    counter.fetch_add(1, Ordering::AcqRel);
                }
            })?;
        watcher.watch(root, notify::RecursiveMode::Recursive)?;
        Ok(Watch {
            _watcher: watcher,
            changes,
        })
    }

    fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Where a manifest at its own place is: `<root>/<namespace>/<name>.yaml`.
fn placed(root: &Path, namespace: &str, name: &str) -> PathBuf {
    root.join(namespace).join(format!("{name}.yaml"))
}

/// The digests of local mode's manifests. At 10,000 Consumers there are
/// 40,000: each is kept as its digest alone (the stamp inside it), found by
/// the digest's own namespace and name, no path or key of its own (a map of
/// paths to stamps and digests was 12.9 MB of a 84.5 MB heap).
#[derive(Default)]
struct Digests {
    /// Manifests at their own place ([`Body::Placed`]): by namespace, then name.
    placed: HashMap<Arc<str>, HashSet<ByName>>,
    /// The others ([`Body::File`]), by path.
    elsewhere: HashMap<Arc<Path>, Arc<Listed>>,
}

/// A digest in a set of one namespace's, found by its name.
struct ByName(Arc<Listed>);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl Hash for ByName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: looked up by a `&str`.
        (*self.0.name).hash(state)
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl Digests {
    /// The digest of the manifest at `path`, the file `<stem>.yaml` of the
    /// directory `namespace` (either `None` when it is no UTF-8).
    fn at(&self, namespace: Option<&str>, stem: Option<&str>, path: &Path) -> Option<&Arc<Listed>> {
        let placed = match (namespace, stem) {
            (Some(ns), Some(stem)) => self.placed.get(ns).and_then(|s| s.get(stem)),
            _ => None,
        };
        placed.map(|b| &b.0).or_else(|| self.elsewhere.get(path))
    }

    fn insert(&mut self, listed: Arc<Listed>) {
        match &listed.body {
            Body::File(path) => {
                self.elsewhere.insert(path.clone(), listed);
            }
            _ => {
                self.placed
                    .entry(listed.namespace.clone())
                    .or_default()
                    .replace(ByName(listed));
            }
        }
    }

    /// Forgets the digest of the manifest at `path` (`<namespace>/<name>.yaml`).
    fn remove_at(&mut self, namespace: &str, name: &str, path: &Path) {
        if let Some(set) = self.placed.get_mut(namespace) {
            set.remove(name);
        }
        self.elsewhere.remove(path);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.placed.values().map(HashSet::len).sum::<usize>() + self.elsewhere.len()
    }
}

impl LocalDeployments {
    /// Lists the manifests on every pass (no change notification).
    pub fn new(root: PathBuf) -> Self {
        LocalDeployments {
            root: root.into(),
            digests: Arc::default(),
            watch: None,
            last: Arc::default(),
            listings: Arc::default(),
        }
    }

    /// Lists the manifests again only when they changed (creating `root` to
    /// watch it), or on every pass when change notification cannot be had.
    pub fn watched(root: PathBuf) -> Self {
        let watch = match Watch::start(&root) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %root.display(), "no change notification for the managed Deployment manifests; listing them every pass");
                None
            }
        };
        LocalDeployments {
            watch,
            ..Self::new(root)
        }
    }

    /// konsumer changed a manifest itself: the next listing must not be
    /// skipped, whenever the watcher reports it.
    fn changed(&self) {
        if let Some(w) = &self.watch {
            w.bump();
        }
    }

    fn path(&self, namespace: &str, name: &str) -> PathBuf {
        placed(&self.root, namespace, name)
    }

    fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn stamp(meta: &std::fs::Metadata) -> Stamp {
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            // Nanoseconds overflow 64 bits in the year 2554.
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Stamp {
            modified,
            len: meta.len(),
        }
    }

    /// The stamp as the resourceVersion it stands for.
    fn version(stamp: Stamp) -> String {
        Revision::Stamp(stamp).to_string()
    }

    fn read(path: &Path) -> Result<Option<Value>, StoreError> {
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

    /// A manifest with its stamp as `metadata.resourceVersion`, as listed.
    fn read_stamped(path: &Path) -> Result<Option<(Stamp, Value)>, StoreError> {
        let stamp = match std::fs::metadata(path) {
            Ok(meta) => Self::stamp(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(path, e)),
        };
        Ok(Self::read(path)?.map(|mut d| {
            set_version(&mut d, Self::version(stamp));
            (stamp, d)
        }))
    }

    /// Lists the manifests, reading only those whose stamp moved since
    /// `digests` saw them; `digests` becomes what this listing found.
    fn scan(root: &Arc<Path>, digests: &mut Digests) -> Vec<Arc<Listed>> {
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(root) else {
            *digests = Digests::default();
            return out;
        };
        // Made afresh, sized as the last one: whatever is not found again is
        // forgotten with the old one.
        let mut next = Digests {
            placed: HashMap::with_capacity(digests.placed.len()),
            elsewhere: HashMap::new(),
        };
        for ns in namespaces.filter_map(Result::ok) {
            let ns_name = ns.file_name();
            let ns_name = ns_name.to_str();
            let Ok(files) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            if let Some((key, set)) = ns_name.and_then(|n| digests.placed.get_key_value(n)) {
                next.placed
                    .insert(key.clone(), HashSet::with_capacity(set.len()));
            }
            for file in files.filter_map(Result::ok).map(|e| e.path()) {
                if file.extension().and_then(|e| e.to_str()) != Some("yaml") {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&file) else {
                    continue;
                };
                let stamp = Self::stamp(&meta);
                let stem = file.file_stem().and_then(|s| s.to_str());
                if let Some(listed) = digests.at(ns_name, stem, &file)
                    && listed.version == Revision::Stamp(stamp)
                {
                    next.insert(listed.clone());
                    out.push(listed.clone());
                    continue;
                }
                match Self::read(&file) {
                    Ok(Some(d)) if live::name(&d).is_empty() => {
                        tracing::warn!(path = %file.display(), "skipping a managed Deployment manifest without metadata.name");
                    }
                    Ok(Some(d)) => {
                        let at_its_place =
                            Some(live::namespace(&d)) == ns_name && Some(live::name(&d)) == stem;
                        let body = if at_its_place {
                            Body::Placed(root.clone())
                        } else {
                            Body::File(file.into())
                        };
                        let listed = Arc::new(Listed::digest(&d, Revision::Stamp(stamp), body));
                        next.insert(listed.clone());
                        out.push(listed);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a managed Deployment manifest")
                    }
                }
            }
        }
        next.placed.retain(|_, set| !set.is_empty());
        *digests = next;
        out
    }
}

#[async_trait]
impl DeploymentApi for LocalDeployments {
    async fn list(&self) -> Result<Vec<Arc<Listed>>, StoreError> {
        // Read before the listing: a change made while it runs moves it.
        let changes = self.watch.as_ref().map(Watch::changes);
        if let Some(list) = self.last.get(changes) {
            return Ok(list);
        }
        let root = self.root.clone();
        let digests = self.digests.clone();
        let last = self.last.clone();
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let mut digests = digests.lock().unwrap_or_else(|e| e.into_inner());
            let list = Self::scan(&root, &mut digests);
            last.keep(changes, &list);
            list
        })
        .await
        .map_err(|e| StoreError::Database {
            path: self.root.display().to_string(),
            message: e.to_string(),
        })
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
        Self::read(&self.path(namespace, name))
    }

    async fn apply(&self, namespace: &str, name: &str, body: &Value) -> Result<Value, StoreError> {
        let path = self.path(namespace, name);
        let mut stored = local_apply(Self::read(&path)?, body);
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
        self.changed();
        // What was written is known: the next listing need not parse it again.
        if let Ok(meta) = std::fs::metadata(&path) {
            let stamp = Self::stamp(&meta);
            set_version(&mut stored, Self::version(stamp));
            let at_its_place = live::namespace(&stored) == namespace && live::name(&stored) == name;
            let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
            digests.remove_at(namespace, name, &path);
            let body = if at_its_place {
                Body::Placed(self.root.clone())
            } else {
                Body::File(path.into())
            };
            digests.insert(Arc::new(Listed::digest(
                &stored,
                Revision::Stamp(stamp),
                body,
            )));
        }
        Ok(stored)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let path = self.path(namespace, name);
        self.changed();
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

    fn owner_uid<'c>(&self, consumer: &'c Consumer) -> Option<Cow<'c, str>> {
        let name = consumer.metadata.name.as_deref()?;
        Some(match consumer.metadata.uid.as_deref() {
            Some(uid) => Cow::Borrowed(uid),
            None => {
                let namespace = consumer.metadata.namespace.as_deref().unwrap_or_default();
                Cow::Owned(format!("local-{namespace}-{name}"))
            }
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
    by_owner: HashMap<Arc<str>, Vec<Arc<Listed>>>,
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Listed>>>,
}

impl DeploymentIndex {
    pub fn new(list: Vec<Arc<Listed>>) -> Self {
        let mut index = DeploymentIndex::default();
        for d in list {
            if let Some(uid) = &d.owner {
                index
                    .by_owner
                    .entry(uid.clone())
                    .or_default()
                    .push(d.clone());
            }
            index
                .by_name
                .entry(d.namespace.clone())
                .or_default()
                .insert(d.name.clone(), d);
        }
        index
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<Listed>> {
        self.by_name.get(namespace)?.get(name)
    }
}

/// A Deployment the manager decides from: one it listed, or one of the
/// Consumer's labelled workloads named like one of its instances.
pub enum Candidate<'a> {
    Listed(Arc<Listed>),
    Labelled(&'a Value),
}

impl Candidate<'_> {
    fn name(&self) -> &str {
        match self {
            Candidate::Listed(d) => &d.name,
            Candidate::Labelled(d) => live::name(d),
        }
    }

    fn version(&self) -> manage::memo::Version<'_> {
        match self {
            Candidate::Listed(d) => match &d.version {
                Revision::Resource(rv) => manage::memo::Version::Resource(rv),
                Revision::Stamp(s) => manage::memo::Version::Stamp(s.modified, s.len),
            },
            Candidate::Labelled(d) => manage::memo::Version::of(d),
        }
    }
}

/// What the manager sees of one Consumer this pass.
pub struct View<'a> {
    pub owner: Owner,
    pub management: Management,
    /// Deployments it owns.
    pub ours: Vec<Arc<Listed>>,
    /// Those first, and any other Deployment named like one of its instances.
    pub candidates: Vec<Candidate<'a>>,
}

impl View<'_> {
    /// What the decision depends on of these Deployments (with the rollout in
    /// flight): read from the digests, no object fetched.
    pub fn fingerprint(&self, in_flight: Option<&InFlight>) -> u64 {
        manage::memo::fingerprint(
            self.candidates.iter().map(|c| (c.name(), c.version())),
            in_flight,
        )
    }

    /// Whether [`Self::objects`] reads anything (a listed Deployment).
    pub fn fetches(&self) -> bool {
        self.candidates
            .iter()
            .any(|c| matches!(c, Candidate::Listed(_)))
    }

    /// The Deployments whole, for a Consumer that is reconciled: its own, and
    /// every candidate (its own first). One that went away since it was listed
    /// is left out; one that cannot be read is left out and said. Files are
    /// read off the async workers (a failure there fails the reconcile: no
    /// decision is made from Deployments missing for that reason).
    pub async fn objects(&self) -> Result<Objects, StoreError> {
        let listed: Vec<Arc<Listed>> = self
            .candidates
            .iter()
            .filter_map(|c| match c {
                Candidate::Listed(d) => Some(d.clone()),
                Candidate::Labelled(_) => None,
            })
            .collect();
        let fetched = if listed.is_empty() {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || {
            listed
                .iter()
                .map(|d| match d.object() {
                    Ok(object) => object,
                    Err(e) => {
                        tracing::warn!(error = %e, deployment = %d.name, "skipping a managed Deployment that cannot be read");
                        None
                    }
                })
                .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| StoreError::Database {
                path: "managed Deployments".into(),
                message: e.to_string(),
            })?
        };
        let mut fetched = fetched.into_iter();
        let mut all = Vec::with_capacity(self.candidates.len());
        let mut ours = 0;
        for (i, c) in self.candidates.iter().enumerate() {
            let object = match c {
                Candidate::Listed(_) => fetched.next().flatten(),
                Candidate::Labelled(d) => Some((*d).clone()),
            };
            if let Some(object) = object {
                if i < self.ours.len() {
                    ours += 1;
                }
                all.push(object);
            }
        }
        Ok(Objects { all, ours })
    }
}

/// A reconciled Consumer's Deployments, whole, for this pass only.
pub struct Objects {
    /// Every candidate, those it owns first.
    all: Vec<Value>,
    ours: usize,
}

impl Objects {
    pub fn ours(&self) -> &[Value] {
        &self.all[..self.ours]
    }

    pub fn candidates(&self) -> Vec<&Value> {
        self.all.iter().collect()
    }
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
        consumer: &Arc<Consumer>,
        fingerprint: u64,
        decision: &Decision,
    ) {
        let mut memos = self.memos.lock().unwrap_or_else(|e| e.into_inner());
        match Memo::new(consumer, fingerprint, decision) {
            Some(memo) => memos.insert(key.to_string(), memo),
            None => memos.remove(key),
        };
    }

    /// A fingerprint of what the manager would decide from for `consumer` (its
    /// Deployments and the rollout under way): while it stays the same, and the
    /// Consumer does, a pass may skip it.
    /// What [`Self::view`] would list is hashed as it is found: no view is
    /// made (this runs for every Consumer on every pass). Its labelled
    /// Deployments are not hashed here: the pass hashes the labelled workloads
    /// whole.
    pub fn fingerprint(
        &self,
        consumer: &Consumer,
        settings: Option<&ConsumerSettings>,
        index: &DeploymentIndex,
    ) -> u64 {
        let (Some(uid), Some(settings)) = (self.api.owner_uid(consumer), settings) else {
            return 0;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for d in index.by_owner.get(uid.as_ref()).into_iter().flatten() {
            (&*d.name, &d.version).hash(&mut h);
        }
        let mut name = String::new();
        for id in 0..settings.instances() {
            name.clear();
            manage::desired::push_deployment_name(&mut name, &settings.base_name, id);
            if let Some(d) = index.get(&settings.namespace, &name) {
                (&*d.name, &d.version).hash(&mut h);
            }
        }
        let all = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // Most passes have no rollout in flight: no key made to find none.
        (!all.is_empty())
            .then(|| all.get(&consumer.key()))
            .flatten()
            .map(|f| (&f.deployment, f.generation))
            .hash(&mut h);
        h.finish()
    }

    /// The Consumer's Deployments and whether konsumer manages them.
    /// `labelled`: its workloads with the consumer label (`None`: unknown).
    pub fn view<'a>(
        &self,
        consumer: &Consumer,
        settings: Option<&ConsumerSettings>,
        index: &DeploymentIndex,
        labelled: Option<&'a [Value]>,
    ) -> Option<View<'a>> {
        let owner = self.api.owner(consumer)?;
        let settings = settings?;
        let ours: Vec<Arc<Listed>> = index
            .by_owner
            .get(owner.uid.as_str())
            .cloned()
            .unwrap_or_default();
        let mut candidates: Vec<Candidate<'a>> =
            ours.iter().cloned().map(Candidate::Listed).collect();
        let mut seen: HashSet<&str> = ours.iter().map(|d| &*d.name).collect();
        let names: Vec<String> = (0..settings.instances())
            .map(|id| manage::desired::deployment_name(&settings.base_name, id))
            .collect();
        for name in &names {
            if let Some(d) = index.get(&settings.namespace, name)
                && seen.insert(name)
            {
                candidates.push(Candidate::Listed(d.clone()));
            }
        }
        let labelled_deployments = labelled
            .unwrap_or_default()
            .iter()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"));
        for d in labelled_deployments {
            let name = live::name(d);
            if names.iter().any(|n| n == name) && seen.insert(name) {
                candidates.push(Candidate::Labelled(d));
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

    fn names(list: &[Arc<Listed>]) -> Vec<(String, Option<i64>)> {
        let mut out: Vec<_> = list
            .iter()
            .map(|d| {
                let object = d.object().unwrap().unwrap();
                (
                    live::name(&object).to_string(),
                    object.pointer("/spec/replicas").and_then(Value::as_i64),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn versions(list: &[Arc<Listed>]) -> Vec<(String, String)> {
        let mut out: Vec<_> = list
            .iter()
            .map(|d| (d.name.to_string(), d.version.to_string()))
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
        assert_eq!(versions(&api.list().await.unwrap()), versions(&first));

        // An edit by hand (another length), and a removal.
        let path = dir.path().join("streams/orders-0.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("replicas: 1", "replicas: 12");
        std::fs::write(&path, text).unwrap();
        std::fs::remove_file(dir.path().join("streams/orders-1.yaml")).unwrap();
        let second = api.list().await.unwrap();
        assert_eq!(names(&second), [("orders-0".into(), Some(12))]);
        let before = first.iter().find(|d| &*d.name == "orders-0").unwrap();
        assert_ne!(second[0].version, before.version);
        let object = second[0].object().unwrap().unwrap();
        assert_eq!(
            object["metadata"]["resourceVersion"].as_str(),
            Some(second[0].version.to_string().as_str()),
            "the whole object carries the version it was listed with"
        );
        assert_eq!(
            api.digests.lock().unwrap().len(),
            1,
            "the removed file is forgotten"
        );
    }

    fn listings(api: &LocalDeployments) -> u64 {
        api.listings.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lists until `done` holds of the listing (10 s at most: a loaded machine).
    async fn list_until(api: &LocalDeployments, done: impl Fn(&[Arc<Listed>]) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let list = api.list().await.unwrap();
            if done(&list) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {:?}",
                names(&list)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_watched_local_listing_is_not_redone_while_no_manifest_changes() {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::watched(dir.path().to_path_buf());
        assert!(api.watch.is_some(), "no change notification here");
        let body = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders-0", "namespace": "streams"}, "spec": {"replicas": 1}
        });
        api.apply("streams", "orders-0", &body).await.unwrap();
        // The events of that write arrive when they do: wait until a listing
        // is reused.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let before = listings(&api);
            assert_eq!(api.list().await.unwrap().len(), 1);
            if listings(&api) == before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "every listing was redone"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let before = listings(&api);
        for _ in 0..20 {
            assert_eq!(api.list().await.unwrap().len(), 1);
        }
        assert_eq!(listings(&api), before, "listed again with nothing changed");
        // konsumer's own write is seen at once, before its event arrives.
        api.apply("streams", "orders-1", &body).await.unwrap();
        assert_eq!(api.list().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_watched_local_listing_sees_every_edit_addition_and_removal_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::watched(dir.path().to_path_buf());
        assert!(api.watch.is_some(), "no change notification here");
        assert!(api.list().await.unwrap().is_empty());
        let ns = dir.path().join("streams");
        std::fs::create_dir_all(&ns).unwrap();
        let manifest = |replicas: i64| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: orders-0, namespace: streams}}\nspec: {{replicas: {replicas}}}\n"
            )
        };
        let path = ns.join("orders-0.yaml");
        std::fs::write(&path, manifest(1)).unwrap();
        list_until(&api, |l| names(l) == [("orders-0".into(), Some(1))]).await;
        let first = versions(&api.list().await.unwrap());
        // Another length: another version (the object itself is read afresh
        // whatever the listing).
        std::fs::write(&path, manifest(12)).unwrap();
        list_until(&api, |l| versions(l) != first).await;
        assert_eq!(
            names(&api.list().await.unwrap()),
            [("orders-0".into(), Some(12))]
        );
        std::fs::remove_file(&path).unwrap();
        list_until(&api, <[Arc<Listed>]>::is_empty).await;
    }

    #[tokio::test]
    async fn a_local_listing_knows_owner_and_version_and_skips_what_is_no_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::new(dir.path().to_path_buf());
        let body = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders-0", "namespace": "streams", "ownerReferences": [
                {"apiVersion": "konsumerator.lwolf.org/v1", "kind": "Consumer",
                 "name": "orders", "uid": "u-1", "controller": true}
            ]},
            "spec": {"replicas": 2}
        });
        let stored = api.apply("streams", "orders-0", &body).await.unwrap();
        let path = dir.path().join("streams/orders-0.yaml");
        let listed = api.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].owner.as_deref(), Some("u-1"));
        assert_eq!(
            stored["metadata"]["resourceVersion"].as_str(),
            Some(listed[0].version.to_string().as_str())
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            listed[0].version.to_string(),
            LocalDeployments::version(LocalDeployments::stamp(&meta))
        );
        // A manifest that is not a named object is skipped, never a panic.
        let odd = dir.path().join("streams/odd.yaml");
        std::fs::write(&odd, "just text\n").unwrap();
        std::fs::write(dir.path().join("streams/nameless.yaml"), "spec: {}\n").unwrap();
        let listed = api.list().await.unwrap();
        assert_eq!(versions(&listed).len(), 1);
        assert!(matches!(LocalDeployments::read_stamped(&odd), Ok(Some(_))));
    }

    fn deployment(name: &str, replicas: i64) -> Value {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "streams"},
            "spec": {"replicas": replicas}
        })
    }

    #[tokio::test]
    async fn a_written_manifest_is_kept_as_a_digest_without_its_path_and_read_back_from_root_namespace_and_name()
     {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::new(dir.path().to_path_buf());
        api.apply("streams", "orders-0", &deployment("orders-0", 3))
            .await
            .unwrap();
        let listed = api.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(
            matches!(&listed[0].body, Body::Placed(root) if **root == *dir.path()),
            "kept with the shared root only"
        );
        assert_eq!(
            placed(dir.path(), &listed[0].namespace, &listed[0].name),
            dir.path().join("streams/orders-0.yaml"),
            "the path made is the one written"
        );
        let object = listed[0].object().unwrap().unwrap();
        assert_eq!(object["spec"]["replicas"], 3);
        // The next listing parses nothing: the same digest.
        let again = api.list().await.unwrap();
        assert!(Arc::ptr_eq(&listed[0], &again[0]));
        {
            let digests = api.digests.lock().unwrap();
            assert_eq!(digests.placed["streams"].len(), 1);
            assert!(digests.elsewhere.is_empty());
        }
        // Changed behind konsumer's back, same length, only the time moved:
        // noticed, and read from the same place.
        let path = dir.path().join("streams/orders-0.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("replicas: 3", "replicas: 4");
        std::fs::write(&path, &text).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let changed = api.list().await.unwrap();
        assert_ne!(changed[0].version, listed[0].version);
        assert_eq!(changed[0].object().unwrap().unwrap()["spec"]["replicas"], 4);
        // Removed: forgotten, and its namespace with it.
        std::fs::remove_file(&path).unwrap();
        assert!(api.list().await.unwrap().is_empty());
        assert_eq!(api.digests.lock().unwrap().len(), 0);
        assert!(api.digests.lock().unwrap().placed.is_empty());
    }

    #[tokio::test]
    async fn a_manifest_whose_metadata_names_another_place_is_still_read_from_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let api = LocalDeployments::new(dir.path().to_path_buf());
        let ns = dir.path().join("streams");
        std::fs::create_dir_all(&ns).unwrap();
        // Renamed by hand: the file says orders-0, its name is another.
        let path = ns.join("renamed.yaml");
        std::fs::write(
            &path,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders-0, namespace: streams}\nspec: {replicas: 7}\n",
        )
        .unwrap();
        let listed = api.list().await.unwrap();
        assert_eq!(names(&listed), [("orders-0".into(), Some(7))]);
        assert!(matches!(&listed[0].body, Body::File(p) if **p == *path));
        // konsumer writes the one at its own place: both are listed, each
        // read from its file.
        api.apply("streams", "orders-0", &deployment("orders-0", 1))
            .await
            .unwrap();
        let both = api.list().await.unwrap();
        assert_eq!(
            names(&both),
            [("orders-0".into(), Some(1)), ("orders-0".into(), Some(7))]
        );
        assert_eq!(api.digests.lock().unwrap().len(), 2);
        // An edit of the renamed one is noticed too.
        std::fs::write(
            &path,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders-0, namespace: streams}\nspec: {replicas: 17}\n",
        )
        .unwrap();
        assert_eq!(
            names(&api.list().await.unwrap()),
            [("orders-0".into(), Some(1)), ("orders-0".into(), Some(17))]
        );
    }
}
