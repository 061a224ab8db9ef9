//! A mocked Kubernetes API server at the HTTP boundary, the way kube-rs tests do
//! (`tower_test::mock::pair` handed to `kube::Client::new`). Requests are answered
//! from an in-memory object store with the shapes a real apiserver sends: lists
//! with `metadata.resourceVersion`, newline-delimited watch events, `Status`
//! bodies for errors, server-side apply on `/status`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::rbac::{self, Rbac};
pub mod ssa;

pub type MockBody = BoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<Body>, Response<MockBody>>;

const CONSUMERS: &str = "/apis/konsumerator.lwolf.org/v1";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";
const SUBSCRIPTIONS: &str = "/apis/konsumer.dev/v1alpha1";
const SECRETS: &str = "/api/v1/namespaces/";

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The answer's status code, once answered: a request is seen when it
    /// arrives, and its effect is stored only when it is answered (a test that
    /// waits for a write to take effect waits for this).
    pub status: Option<u16>,
}

#[derive(Default)]
struct State {
    /// (namespace, name) -> object
    consumers: BTreeMap<(String, String), Value>,
    resource_version: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    seen: Vec<Seen>,
    /// name -> (Lease, field manager of spec.holderIdentity)
    leases: BTreeMap<String, (Value, Option<String>)>,
    events: Vec<Value>,
    /// (namespace, name) -> Deployment, `metadata.managedFields` kept as the
    /// API server keeps them.
    deployments: BTreeMap<(String, String), Value>,
    /// Lease requests fail (etcd unavailable behind the apiserver).
    leases_down: bool,
    /// Status writes refused as too large.
    too_large: usize,
    /// (namespace, name) -> ConfigMap (guest mode).
    configmaps: BTreeMap<(String, String), Value>,
    configmap_watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// (namespace, name) -> ScalingSubscription
    subscriptions: BTreeMap<(String, String), Value>,
    subscription_watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// (namespace, name) -> Secret
    secrets: BTreeMap<(String, String), Value>,
    /// Bearer tokens the TokenReview accepts -> (`status.user`, audiences minted for).
    tokens: BTreeMap<String, (Value, Vec<String>)>,
    /// (user, verb, group, resource[/sub], namespace or None for every one)
    grants: Vec<(String, String, String, String, Option<String>)>,
    /// Every TokenReview and SubjectAccessReview received.
    reviews: Vec<Value>,
    /// name -> Namespace
    namespaces: BTreeMap<String, Value>,
}

/// Who konsumer is to the apiserver (its ServiceAccount in the manifests).
const KONSUMER_USER: &str = "system:serviceaccount:konsumer-system:konsumer";

pub struct FakeApiServer {
    state: Mutex<State>,
    /// Lists are held until this turns true (to observe readiness before sync).
    list_open: watch::Sender<bool>,
    /// konsumer's RBAC (`manifests/base/rbac.yaml`), enforced on every request.
    rbac: Mutex<Rbac>,
    /// Requests RBAC refused (`verb resource …`).
    forbidden: Mutex<Vec<String>>,
    /// The test provokes refusals on purpose: do not fail it for them.
    forbidden_expected: AtomicBool,
}

/// A call konsumer made that its RBAC does not allow fails the test that made
/// it, even when konsumer handled the 403 (a new call must come with its rule
/// in `manifests/base/rbac.yaml` and its row in `tests/it/rbac.rs`).
impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let forbidden = self.forbidden.lock().map(|f| f.clone()).unwrap_or_default();
        if !forbidden.is_empty()
            && !self.forbidden_expected.load(Ordering::SeqCst)
            && !std::thread::panicking()
        {
            panic!(
                "konsumer made API calls its RBAC (manifests/base/rbac.yaml) does not allow:\n  {}\n\
                 add the rule and its row in tests/it/rbac.rs TABLE, or call fake.expect_forbidden()",
                forbidden.join("\n  ")
            );
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: String, name: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": {"name": name, "group": "konsumerator.lwolf.org", "kind": "consumers"},
        "code": code
    })
}

/// The apiserver's 404 for a Consumer.
fn consumer_not_found(name: &str) -> Response<MockBody> {
    json_response(
        StatusCode::NOT_FOUND,
        &status_error(
            404,
            "NotFound",
            format!("consumers.konsumerator.lwolf.org {name:?} not found"),
            name,
        ),
    )
}

impl FakeApiServer {
    /// One more client of the same fake (another konsumer replica).
    pub fn another_client(self: &Arc<Self>) -> kube::Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
        tokio::spawn(serve(handle, Arc::downgrade(self)));
        kube::Client::new(service, "default")
    }

    /// Stores a ScalingSubscription (as `kubectl apply` would), keeping its status.
    pub fn apply_subscription(&self, mut sub: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let ns = sub["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = sub["metadata"]["name"].as_str().unwrap().to_string();
        let existed = state
            .subscriptions
            .get(&(ns.clone(), name.clone()))
            .cloned();
        let generation = existed
            .as_ref()
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .map_or(1, |g| g + 1);
        sub["metadata"]["resourceVersion"] = json!(rv);
        sub["metadata"]["generation"] = json!(generation);
        sub["metadata"]["uid"] = json!(format!("uid-sub-{name}"));
        sub["metadata"]["creationTimestamp"] = json!("2026-11-30T04:34:43Z");
        if let Some(status) = existed.as_ref().and_then(|old| old.get("status")) {
            sub["status"] = status.clone();
        }
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.subscriptions.insert((ns, name), sub.clone());
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": sub})));
        state
            .subscription_watchers
            .retain(|w| w.send(line.clone()).is_ok());
    }

    pub fn subscription(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .subscriptions
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    /// Stores an Opaque Secret with one key (base64 in `data`, as the apiserver keeps it).
    pub fn add_secret(&self, namespace: &str, name: &str, key: &str, value: &str) {
        use base64::Engine;
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let secret = json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-secret-{name}"),
                         "resourceVersion": state.resource_version.to_string(),
                         "creationTimestamp": "2026-11-30T04:32:08Z"},
            "data": {key: base64::engine::general_purpose::STANDARD.encode(value)},
            "type": "Opaque"
        });
        state
            .secrets
            .insert((namespace.into(), name.into()), secret);
    }

    /// A token the TokenReview accepts as `user` (a `status.user` object).
    pub fn add_token(&self, token: &str, user: Value) {
        self.add_token_for(
            token,
            user,
            &["https://kubernetes.default.svc.cluster.local"],
        );
    }

    /// A token minted for `audiences` (`kubectl create token --audience`).
    pub fn add_token_for(&self, token: &str, user: Value, audiences: &[&str]) {
        self.state.lock().unwrap().tokens.insert(
            token.into(),
            (user, audiences.iter().map(|a| a.to_string()).collect()),
        );
    }

    /// RBAC grants `user` `verb` on `group`/`resource` in `namespace` (None: all).
    pub fn grant(
        &self,
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) {
        self.state.lock().unwrap().grants.push((
            user.into(),
            verb.into(),
            group.into(),
            resource.into(),
            namespace.map(String::from),
        ));
    }

    /// The TokenReviews and SubjectAccessReviews konsumer sent.
    pub fn reviews(&self) -> Vec<Value> {
        self.state.lock().unwrap().reviews.clone()
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .secrets
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    /// A Namespace with `labels` (the apiserver adds `kubernetes.io/metadata.name`).
    pub fn add_namespace(&self, name: &str, labels: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let mut all = json!({"kubernetes.io/metadata.name": name});
        for (k, v) in labels.as_object().into_iter().flatten() {
            all[k] = v.clone();
        }
        let namespace = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "uid": format!("uid-namespace-{name}"),
                         "resourceVersion": state.resource_version.to_string(),
                         "creationTimestamp": "2026-11-30T04:32:08Z", "labels": all},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        });
        state.namespaces.insert(name.into(), namespace);
    }

    /// A kube client talking to a new fake, and the fake.
    pub fn start() -> (kube::Client, Arc<FakeApiServer>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
        let client = kube::Client::new(service, "default");
        let fake = Arc::new(FakeApiServer {
            state: Mutex::new(State {
                resource_version: 100,
                ..State::default()
            }),
            list_open: watch::channel(true).0,
            rbac: Mutex::new(Rbac::base()),
            forbidden: Mutex::new(Vec::new()),
            forbidden_expected: AtomicBool::new(false),
        });
        // The server task holds the fake weakly: the test's last handle dropping
        // runs the RBAC check above.
        tokio::spawn(serve(handle, Arc::downgrade(&fake)));
        (client, fake)
    }

    /// Grants konsumer ClusterRole `role` in `namespace`, as an operator's
    /// RoleBinding would (e.g. `konsumer-secret-reader` for a team's namespace).
    pub fn bind_in_namespace(&self, namespace: &str, role: &str) {
        self.rbac.lock().unwrap().bind_in_namespace(namespace, role);
    }

    /// Enforces `rbac` instead of the base manifests' (guest mode's Role, say).
    pub fn enforce(&self, rbac: Rbac) {
        *self.rbac.lock().unwrap() = rbac;
    }

    /// The test makes calls RBAC refuses on purpose.
    pub fn expect_forbidden(&self) {
        self.forbidden_expected.store(true, Ordering::SeqCst);
    }

    /// The requests RBAC refused so far.
    pub fn forbidden(&self) -> Vec<String> {
        self.forbidden.lock().unwrap().clone()
    }

    pub fn hold_lists(&self) {
        self.list_open.send_replace(false);
    }

    pub fn release_lists(&self) {
        self.list_open.send_replace(true);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn object(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .consumers
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    /// Stores a Consumer (as `kubectl apply` would) and tells the watchers.
    pub fn apply(&self, mut consumer: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let ns = consumer["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = consumer["metadata"]["name"].as_str().unwrap().to_string();
        let key = (ns, name.clone());
        let existed = state.consumers.get(&key).cloned();
        let generation = existed
            .as_ref()
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .map_or(1, |g| g + 1);
        consumer["metadata"]["resourceVersion"] = json!(rv);
        consumer["metadata"]["generation"] = json!(generation);
        consumer["metadata"]["uid"] = json!(format!("uid-{name}"));
        consumer["metadata"]["creationTimestamp"] = json!("2026-11-22T12:00:00Z");
        if let Some(status) = existed.as_ref().and_then(|old| old.get("status")) {
            consumer["status"] = status.clone();
        }
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.consumers.insert(key, consumer.clone());
        broadcast(&mut state, kind, &consumer);
    }

    /// Replaces a Consumer's status (as another replica's write would) and tells
    /// the watchers.
    pub fn set_status(&self, namespace: &str, name: &str, status: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let Some(object) = state.consumers.get_mut(&(namespace.into(), name.into())) else {
            return;
        };
        object["status"] = status;
        object["metadata"]["resourceVersion"] = json!(rv);
        let object = object.clone();
        broadcast(&mut state, "MODIFIED", &object);
    }

    /// Stores a ConfigMap (as `kubectl apply` would) and tells the watchers.
    pub fn apply_configmap(&self, mut cm: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let ns = cm["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = cm["metadata"]["name"].as_str().unwrap().to_string();
        let existed = state.configmaps.get(&(ns.clone(), name.clone())).cloned();
        cm["metadata"]["namespace"] = json!(ns);
        cm["metadata"]["resourceVersion"] = json!(rv);
        cm["metadata"]["uid"] = json!(format!("uid-cm-{name}"));
        cm["metadata"]["creationTimestamp"] = json!("2026-11-30T04:32:10Z");
        // kubectl apply keeps annotations it does not know about (konsumer's).
        if let Some(old) = &existed
            && let Some(kept) = old["metadata"]["annotations"].as_object()
        {
            for (k, v) in kept {
                if cm["metadata"]["annotations"].get(k).is_none()
                    && !k.starts_with("konsumerator.lwolf.org/managed")
                {
                    if !cm["metadata"]["annotations"].is_object() {
                        cm["metadata"]["annotations"] = json!({});
                    }
                    cm["metadata"]["annotations"][k] = v.clone();
                }
            }
        }
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.configmaps.insert((ns, name), cm.clone());
        broadcast_to(&mut state.configmap_watchers, kind, &cm);
    }

    pub fn configmap(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .configmaps
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    /// Deletes a ConfigMap; the garbage collector deletes what it owned.
    pub fn delete_configmap(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        if let Some(gone) = state.configmaps.remove(&(namespace.into(), name.into())) {
            let uid = gone["metadata"]["uid"].clone();
            broadcast_to(&mut state.configmap_watchers, "DELETED", &gone);
            state.deployments.retain(|_, d| {
                !d["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            });
        }
    }

    pub fn lease(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get(name)
            .map(|(l, _)| l.clone())
    }

    /// How many status writes were refused as too large for etcd.
    pub fn too_large_refusals(&self) -> usize {
        self.state.lock().unwrap().too_large
    }

    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// Stores a Deployment as it is (a user's, made before konsumer ran).
    pub fn add_deployment(&self, deployment: Value) {
        let key = (
            deployment["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            deployment["metadata"]["name"].as_str().unwrap().to_string(),
        );
        self.state
            .lock()
            .unwrap()
            .deployments
            .insert(key, deployment);
    }

    /// Stores a Deployment as `manager` would have created it with a POST
    /// (Konsumerator's client, say): every field owned by an Update of `manager`.
    pub fn create_deployment_as(&self, mut deployment: Value, manager: &str) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let ns = deployment["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
        ssa::canonical_quantities(&mut deployment);
        ssa::default_deployment(&mut deployment);
        ssa::own_all_by_update(&mut deployment, manager);
        deployment["metadata"]["uid"] = json!(format!("uid-deployment-{name}"));
        deployment["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        deployment["metadata"]["generation"] = json!(1);
        deployment["status"] = json!({});
        state.deployments.insert((ns, name), deployment);
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().unwrap();
        state
            .deployments
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    pub fn deployment_names(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.deployments.keys().map(|(_, n)| n.clone()).collect()
    }

    /// What the Deployment controller reports once a rollout is complete.
    pub fn roll_out(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        if let Some(d) = state.deployments.get_mut(&(namespace.into(), name.into())) {
            let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
            d["status"] = json!({
                "observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
            });
            d["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// `kubectl scale --replicas=N`: the scale subresource, manager `kubectl`.
    pub fn scale(&self, namespace: &str, name: &str, replicas: i64) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        if let Some(d) = state.deployments.get_mut(&(namespace.into(), name.into())) {
            d["spec"]["replicas"] = json!(replicas);
            let g = d["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            d["metadata"]["generation"] = json!(g);
            d["metadata"]["resourceVersion"] = json!(rv);
            let path = vec!["f:spec".to_string(), "f:replicas".to_string()];
            let mut entries = ssa::entries(d);
            for e in &mut entries {
                e.paths.remove(&path);
            }
            entries.push(ssa::Entry {
                manager: "kubectl".into(),
                operation: "Update".into(),
                subresource: Some("scale".into()),
                paths: [path].into(),
            });
            ssa::write_entries(d, &entries);
        }
    }

    /// Edits a Deployment as a user would (`kubectl annotate`, `kubectl label`).
    pub fn edit_deployment(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        if let Some(d) = state.deployments.get_mut(&(namespace.into(), name.into())) {
            edit(d);
            d["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// Lease requests fail with 503 until called again with `false`.
    pub fn fail_leases(&self, down: bool) {
        self.state.lock().unwrap().leases_down = down;
    }

    /// Another replica takes the lease over (as its own update would).
    pub fn take_lease(&self, name: &str, holder: &str, duration_seconds: i64) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let now = jiff::Timestamp::now().to_string();
        if let Some((lease, manager)) = state.leases.get_mut(name) {
            lease["spec"]["holderIdentity"] = json!(holder);
            lease["spec"]["acquireTime"] = json!(now);
            lease["spec"]["renewTime"] = json!(now);
            lease["spec"]["leaseDurationSeconds"] = json!(duration_seconds);
            lease["metadata"]["resourceVersion"] = json!(rv);
            *manager = Some(format!("other-{holder}"));
        }
    }

    /// Deletes a Consumer (as `kubectl delete` would) and tells the watchers.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        if let Some(mut gone) = state.consumers.remove(&(namespace.into(), name.into())) {
            gone["metadata"]["resourceVersion"] = json!(rv);
            broadcast(&mut state, "DELETED", &gone);
            // The garbage collector deletes what the Consumer owned.
            let uid = gone["metadata"]["uid"].clone();
            state.deployments.retain(|_, d| {
                !d["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            });
        }
    }

    /// Stores a Consumer without telling the watchers (it was created "just now").
    pub fn insert_unwatched(&self, mut consumer: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        consumer["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        let ns = consumer["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        let name = consumer["metadata"]["name"].as_str().unwrap().to_string();
        state.consumers.insert((ns, name), consumer);
    }
}

fn broadcast(state: &mut State, kind: &str, object: &Value) {
    broadcast_to(&mut state.watchers, kind, object);
}

fn broadcast_to(watchers: &mut Vec<mpsc::UnboundedSender<Bytes>>, kind: &str, object: &Value) {
    let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
    watchers.retain(|w| w.send(line.clone()).is_ok());
}

async fn serve(mut handle: Handle, fake: Weak<FakeApiServer>) {
    while let Some((request, respond)) = handle.next_request().await {
        let Some(fake) = fake.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let (seen, response) = answer(&fake, request).await;
            if let Some(r) = fake.state.lock().unwrap().seen.get_mut(seen) {
                r.status = Some(response.status().as_u16());
            }
            respond.send_response(response);
        });
    }
}

/// The answer to a request, with the request's index in `seen`.
async fn answer(fake: &FakeApiServer, request: Request<Body>) -> (usize, Response<MockBody>) {
    let (parts, body) = request.into_parts();
    let body = body
        .collect_bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let seen = {
        let mut state = fake.state.lock().unwrap();
        state.seen.push(Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: body.clone(),
            status: None,
        });
        state.seen.len() - 1
    };
    (seen, answer_request(fake, parts, body).await)
}

async fn answer_request(
    fake: &FakeApiServer,
    parts: http::request::Parts,
    body: Vec<u8>,
) -> Response<MockBody> {
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let param = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);

    // The RBAC authorizer answers before anything looks for the object (403 before 404).
    if let Some(attributes) = rbac::attributes(parts.method.as_str(), &path, &query)
        && !fake.rbac.lock().unwrap().allows(&attributes)
    {
        fake.forbidden
            .lock()
            .unwrap()
            .push(format!("{} {} {}", parts.method, path, query));
        return json_response(
            StatusCode::FORBIDDEN,
            &rbac::forbidden(&attributes, KONSUMER_USER),
        );
    }

    if let Some(rest) = path.strip_prefix(LEASES) {
        if fake.state.lock().unwrap().leases_down {
            let mut status = status_error(
                503,
                "ServiceUnavailable",
                "etcdserver: leader changed".into(),
                "",
            );
            status["details"] = json!({});
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &status);
        }
        return lease_answer(
            fake,
            &parts.method,
            rest,
            &body,
            parts.headers.get("content-type"),
            param("fieldManager"),
        );
    }
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" && parts.method == Method::POST {
        return token_review(fake, &body);
    }
    if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews" && parts.method == Method::POST
    {
        return access_review(fake, &body);
    }
    if let Some(rest) = path.strip_prefix(SECRETS)
        && parts.method != Method::GET
        && rest.contains("/secrets")
    {
        return secret_write(fake, &parts.method, rest, &body);
    }
    if let Some(name) = path.strip_prefix("/api/v1/namespaces/")
        && !name.contains('/')
        && parts.method == Method::GET
    {
        let found = fake.state.lock().unwrap().namespaces.get(name).cloned();
        return match found {
            Some(namespace) => json_response(StatusCode::OK, &namespace),
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("namespaces {name:?} not found"), "reason": "NotFound",
                        "details": {"name": name, "kind": "namespaces"}, "code": 404}),
            ),
        };
    }
    if let Some(rest) = path.strip_prefix(SECRETS)
        && let [ns, "secrets", name] = rest.split('/').collect::<Vec<_>>().as_slice()
        && parts.method == Method::GET
    {
        let found = fake
            .state
            .lock()
            .unwrap()
            .secrets
            .get(&(ns.to_string(), name.to_string()))
            .cloned();
        return match found {
            Some(secret) => json_response(StatusCode::OK, &secret),
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("secrets {name:?} not found"), "reason": "NotFound",
                        "details": {"name": name, "kind": "secrets"}, "code": 404}),
            ),
        };
    }
    if let Some(rest) = path.strip_prefix(SUBSCRIPTIONS) {
        return subscription_answer(
            fake,
            &parts.method,
            rest,
            &body,
            param("watch"),
            param("fieldManager"),
        );
    }
    if path.starts_with("/apis/events.k8s.io/v1/") && parts.method == Method::POST {
        let mut event: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
        event["metadata"]["resourceVersion"] = json!("1");
        fake.state.lock().unwrap().events.push(event.clone());
        return json_response(StatusCode::CREATED, &event);
    }
    if path.starts_with("/apis/events.k8s.io/v1/") && parts.method == Method::PATCH {
        let patch: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
        let mut state = fake.state.lock().unwrap();
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        if let Some(e) = state
            .events
            .iter_mut()
            .rev()
            .find(|e| e["metadata"]["name"] == name.as_str())
        {
            ssa::merge(e, &patch);
            let e = e.clone();
            return json_response(StatusCode::OK, &e);
        }
        return json_response(
            StatusCode::NOT_FOUND,
            &status_error(
                404,
                "NotFound",
                format!("events.events.k8s.io {name:?} not found"),
                &name,
            ),
        );
    }
    if path.starts_with("/api/v1/namespaces/") && path.contains("/configmaps") {
        return configmaps_answer(
            fake,
            &parts.method,
            &path,
            &body,
            param("watch") == Some("true"),
        );
    }
    if let Some(rest) = path.strip_prefix("/apis/apps/v1/") {
        return deployments_answer(
            fake,
            &parts.method,
            rest,
            &body,
            parts.headers.get("content-type"),
            param("fieldManager"),
            param("force") == Some("true"),
            param("labelSelector"),
        );
    }
    if parts.method == Method::GET && (path == "/api/v1/pods" || path.ends_with("/pods")) {
        // konsumer lists Pods as metadata only (PartialObjectMetadataList); no
        // Pod exists here (no Deployment controller, no scheduler).
        return json_response(
            StatusCode::OK,
            &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "1"}, "items": []}),
        );
    }
    let Some(rest) = path.strip_prefix(CONSUMERS) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status_error(404, "NotFound", format!("{path} not found"), ""),
        );
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (parts.method.clone(), segments.as_slice()) {
        (Method::GET, ["consumers"]) | (Method::GET, ["namespaces", _, "consumers"]) => {
            let namespace = match segments.as_slice() {
                ["namespaces", ns, _] => Some(ns.to_string()),
                _ => None,
            };
            if param("watch") == Some("true") {
                watch_response(fake)
            } else {
                let mut open = fake.list_open.subscribe();
                let _ = open.wait_for(|o| *o).await;
                list_response(fake, namespace.as_deref())
            }
        }
        (Method::GET, ["namespaces", ns, "consumers", name]) => match fake.object(ns, name) {
            Some(o) => json_response(StatusCode::OK, &o),
            None => consumer_not_found(name),
        },
        (Method::PATCH, ["namespaces", ns, "consumers", name, "status"]) => {
            apply_status(fake, ns, name, &body, param("fieldManager"))
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status_error(
                405,
                "MethodNotAllowed",
                format!("{} {path} is not supported here", parts.method),
                "",
            ),
        ),
    }
}

fn list_response(fake: &FakeApiServer, namespace: Option<&str>) -> Response<MockBody> {
    let state = fake.state.lock().unwrap();
    let items: Vec<Value> = state
        .consumers
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
        .map(|(_, o)| o.clone())
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "konsumerator.lwolf.org/v1",
            "kind": "ConsumerList",
            "metadata": {"resourceVersion": state.resource_version.to_string(), "continue": ""},
            "items": items
        }),
    )
}

fn watch_response(fake: &FakeApiServer) -> Response<MockBody> {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    fake.state.lock().unwrap().watchers.push(tx);
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<MockBody> {
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}

/// The largest stored object the recorded apiserver + etcd accepted
/// (`03-consumer-status-too-large.json`: etcd's 1.5 MiB request limit).
pub const LARGEST_STORED_OBJECT: usize = 1_569_823;

/// The recorded refusals of a too-large write, by size: over 3 MiB of body 413,
/// over 2 MiB 500 (gRPC), a stored object over etcd's limit 500 (etcd). None is
/// a 422.
fn too_large(
    body_bytes: usize,
    fake: &FakeApiServer,
    ns: &str,
    name: &str,
    applied: &Value,
) -> Option<Response<MockBody>> {
    let failure = |code: u16, message: String, reason: Option<&str>| {
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "code": code});
        if let Some(reason) = reason {
            status["reason"] = json!(reason);
        }
        json_response(StatusCode::from_u16(code).unwrap(), &status)
    };
    if body_bytes > 3_145_728 {
        return Some(failure(
            413,
            "Request entity too large: limit is 3145728".into(),
            Some("RequestEntityTooLarge"),
        ));
    }
    let mut candidate = fake.object(ns, name)?;
    candidate["status"] = applied.get("status").cloned().unwrap_or(json!({}));
    let stored = serde_json::to_vec(&candidate).map_or(0, |b| b.len());
    if body_bytes > 2_097_152 {
        return Some(failure(
            500,
            format!(
                "rpc error: code = ResourceExhausted desc = trying to send message larger than max ({} vs. 2097152)",
                stored + 3_000
            ),
            None,
        ));
    }
    (stored > LARGEST_STORED_OBJECT)
        .then(|| failure(500, "etcdserver: request is too large".into(), None))
}

/// Server-side apply on the status subresource: requires a field manager, an
/// existing object, and `apiVersion`/`kind` in the body; replaces `.status`.
fn apply_status(
    fake: &FakeApiServer,
    ns: &str,
    name: &str,
    body: &[u8],
    field_manager: Option<&str>,
) -> Response<MockBody> {
    let Some(manager) = field_manager else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_error(
                400,
                "BadRequest",
                "PATCH of type application/apply-patch+yaml requires fieldManager".into(),
                name,
            ),
        );
    };
    let applied: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &status_error(400, "BadRequest", e.to_string(), name),
            );
        }
    };
    if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status_error(
                400,
                "BadRequest",
                "apiVersion and kind must be set".into(),
                name,
            ),
        );
    }
    // The real apiserver refuses an apply whose status has a field the CRD does
    // not declare (03-consumer-status-unknown-field.json).
    let schema = serde_json::to_value(konsumer::api::crd::consumer_crd()).unwrap();
    let status_schema =
        &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    if let Some(field) = undeclared(
        status_schema,
        applied.get("status").unwrap_or(&Value::Null),
        ".status",
    ) {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("failed to create typed patch object (/; konsumerator.lwolf.org/v1, Kind=Consumer): {field}: field not declared in schema"),
                    "code": 500}),
        );
    }
    if let Some(refusal) = too_large(body.len(), fake, ns, name, &applied) {
        fake.state.lock().unwrap().too_large += 1;
        return refusal;
    }
    let mut state = fake.state.lock().unwrap();
    state.resource_version += 1;
    let rv = state.resource_version.to_string();
    let Some(object) = state.consumers.get_mut(&(ns.to_string(), name.to_string())) else {
        return consumer_not_found(name);
    };
    object["status"] = applied.get("status").cloned().unwrap_or(json!({}));
    object["metadata"]["resourceVersion"] = json!(rv);
    object["metadata"]["managedFields"] = json!([{
        "manager": manager, "operation": "Apply", "subresource": "status",
        "apiVersion": "konsumerator.lwolf.org/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {}}
    }]);
    let object = object.clone();
    broadcast(&mut state, "MODIFIED", &object);
    json_response(StatusCode::OK, &object)
}

/// The first field of `value` its structural `schema` does not declare.
fn undeclared(schema: &Value, value: &Value, path: &str) -> Option<String> {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return None;
    }
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in fields {
                let child = format!("{path}.{k}");
                let sub = match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => s,
                    (None, Some(s)) => s,
                    (None, None) if props.is_none() && schema.get("type").is_none() => continue,
                    (None, None) => return Some(child),
                };
                if let Some(f) = undeclared(sub, v, &child) {
                    return Some(f);
                }
            }
            None
        }
        Value::Array(items) => {
            let sub = schema.get("items")?;
            items.iter().find_map(|i| undeclared(sub, i, path))
        }
        _ => None,
    }
}

/// ScalingSubscriptions: list and watch (all namespaces or one), and server-side
/// apply of the status subresource (a no-op apply keeps the resourceVersion).
fn subscription_answer(
    fake: &FakeApiServer,
    method: &Method,
    rest: &str,
    body: &[u8],
    watch: Option<&str>,
    field_manager: Option<&str>,
) -> Response<MockBody> {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["scalingsubscriptions"])
        | (Method::GET, ["namespaces", _, "scalingsubscriptions"]) => {
            let namespace = match segments.as_slice() {
                ["namespaces", ns, _] => Some(ns.to_string()),
                _ => None,
            };
            if watch == Some("true") {
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                fake.state.lock().unwrap().subscription_watchers.push(tx);
                let frames = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
                });
                return Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(StreamBody::new(frames).boxed())
                    .unwrap();
            }
            let state = fake.state.lock().unwrap();
            let items: Vec<Value> = state
                .subscriptions
                .iter()
                .filter(|((ns, _), _)| namespace.as_deref().is_none_or(|n| n == ns))
                .map(|(_, o)| o.clone())
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscriptionList",
                    "metadata": {"resourceVersion": state.resource_version.to_string(), "continue": ""},
                    "items": items
                }),
            )
        }
        (Method::PATCH, ["namespaces", ns, "scalingsubscriptions", name, "status"]) => {
            let applied: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if field_manager.is_none()
                || applied.get("apiVersion").is_none()
                || applied.get("kind").is_none()
            {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &status_error(
                        400,
                        "BadRequest",
                        "apiVersion, kind and fieldManager must be set".into(),
                        name,
                    ),
                );
            }
            let schema = serde_json::to_value(konsumer::api::crd::subscription_crd()).unwrap();
            let status_schema =
                &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
            if let Some(field) = undeclared(
                status_schema,
                applied.get("status").unwrap_or(&Value::Null),
                ".status",
            ) {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("failed to create typed patch object (/; konsumer.dev/v1alpha1, Kind=ScalingSubscription): {field}: field not declared in schema"),
                            "code": 500}),
                );
            }
            let mut state = fake.state.lock().unwrap();
            state.resource_version += 1;
            let rv = state.resource_version.to_string();
            let Some(object) = state
                .subscriptions
                .get_mut(&(ns.to_string(), name.to_string()))
            else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("scalingsubscriptions.konsumer.dev {name:?} not found"),
                            "reason": "NotFound",
                            "details": {"name": name, "group": "konsumer.dev", "kind": "scalingsubscriptions"},
                            "code": 404}),
                );
            };
            let status = applied.get("status").cloned().unwrap_or(json!({}));
            if object.get("status") == Some(&status) {
                return json_response(StatusCode::OK, &object.clone());
            }
            object["status"] = status;
            object["metadata"]["resourceVersion"] = json!(rv);
            let object = object.clone();
            let line = Bytes::from(format!(
                "{}\n",
                json!({"type": "MODIFIED", "object": object})
            ));
            state
                .subscription_watchers
                .retain(|w| w.send(line.clone()).is_ok());
            json_response(StatusCode::OK, &object)
        }
        (Method::GET, ["namespaces", ns, "scalingsubscriptions", name]) => {
            match fake.subscription(ns, name) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => subscription_not_found(name),
            }
        }
        (Method::POST, ["namespaces", ns, "scalingsubscriptions"]) => {
            let mut sub: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let name = sub["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if fake.subscription(ns, &name).is_some() {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("scalingsubscriptions.konsumer.dev {name:?} already exists"),
                            "reason": "AlreadyExists",
                            "details": {"name": name, "group": "konsumer.dev", "kind": "scalingsubscriptions"},
                            "code": 409}),
                );
            }
            sub["metadata"]["namespace"] = json!(ns);
            if let Some(o) = sub.as_object_mut() {
                o.remove("status");
            }
            fake.apply_subscription(sub);
            json_response(StatusCode::CREATED, &fake.subscription(ns, &name).unwrap())
        }
        (Method::PUT, ["namespaces", ns, "scalingsubscriptions", name]) => {
            let mut sub: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(current) = fake.subscription(ns, name) else {
                return subscription_not_found(name);
            };
            if sub["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("Operation cannot be fulfilled on scalingsubscriptions.konsumer.dev {name:?}: the object has been modified; please apply your changes to the latest version and try again"),
                            "reason": "Conflict",
                            "details": {"name": name, "group": "konsumer.dev", "kind": "scalingsubscriptions"},
                            "code": 409}),
                );
            }
            // The main resource ignores status; the generation moves with the spec only.
            let spec_changed = sub["spec"] != current["spec"];
            if let Some(o) = sub.as_object_mut() {
                o.remove("status");
            }
            fake.apply_subscription(sub);
            let mut state = fake.state.lock().unwrap();
            let stored = state
                .subscriptions
                .get_mut(&(ns.to_string(), name.to_string()))
                .unwrap();
            if !spec_changed {
                stored["metadata"]["generation"] = current["metadata"]["generation"].clone();
            }
            let stored = stored.clone();
            json_response(StatusCode::OK, &stored)
        }
        (Method::DELETE, ["namespaces", ns, "scalingsubscriptions", name]) => {
            let mut state = fake.state.lock().unwrap();
            match state
                .subscriptions
                .remove(&(ns.to_string(), name.to_string()))
            {
                Some(gone) => {
                    let line =
                        Bytes::from(format!("{}\n", json!({"type": "DELETED", "object": gone})));
                    state
                        .subscription_watchers
                        .retain(|w| w.send(line.clone()).is_ok());
                    json_response(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": {"name": name, "group": "konsumer.dev", "kind": "scalingsubscriptions",
                                            "uid": gone["metadata"]["uid"]}}),
                    )
                }
                None => {
                    drop(state);
                    subscription_not_found(name)
                }
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status_error(
                405,
                "MethodNotAllowed",
                format!("{method} {rest} is not supported here"),
                "",
            ),
        ),
    }
}

fn subscription_not_found(name: &str) -> Response<MockBody> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("scalingsubscriptions.konsumer.dev {name:?} not found"),
                "reason": "NotFound",
                "details": {"name": name, "group": "konsumer.dev", "kind": "scalingsubscriptions"},
                "code": 404}),
    )
}

/// TokenReview as in `08-tokenreview.json`: always 201; an unknown token gets
/// `status: {user: {}, error: "invalid bearer token"}` with no `authenticated`.
fn token_review(fake: &FakeApiServer, body: &[u8]) -> Response<MockBody> {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut state = fake.state.lock().unwrap();
    state.reviews.push(review.clone());
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let status = match state.tokens.get(token) {
        Some((user, minted)) if asked.is_empty() => {
            json!({"authenticated": true, "user": user, "audiences": minted})
        }
        Some((user, minted)) if minted.iter().any(|m| asked.contains(m)) => {
            json!({"authenticated": true, "user": user, "audiences": asked})
        }
        // The recorded wording of an audience mismatch.
        Some((_, minted)) => json!({"user": {}, "error": format!(
            "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
            json!(minted), json!(asked)
        )}),
        None => json!({"user": {}, "error": "invalid bearer token"}),
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": status}),
    )
}

/// SubjectAccessReview as in `08-subjectaccessreview.json`: 201; allowed with an
/// RBAC reason, or `status: {allowed: false}` alone.
fn access_review(fake: &FakeApiServer, body: &[u8]) -> Response<MockBody> {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut state = fake.state.lock().unwrap();
    state.reviews.push(review.clone());
    let spec = &review["spec"];
    let a = &spec["resourceAttributes"];
    let resource = match a["subresource"].as_str() {
        Some(sub) if !sub.is_empty() => format!("{}/{sub}", a["resource"].as_str().unwrap_or("")),
        _ => a["resource"].as_str().unwrap_or("").to_string(),
    };
    let allowed = state.grants.iter().any(|(user, verb, group, res, ns)| {
        spec["user"] == user.as_str()
            && a["verb"] == verb.as_str()
            && a["group"].as_str().unwrap_or("") == group
            && *res == resource
            && ns.as_deref().is_none_or(|n| a["namespace"] == n)
    });
    let status = if allowed {
        json!({"allowed": true, "reason": format!("RBAC: allowed by RoleBinding \"test\" to User {:?}", spec["user"])})
    } else {
        json!({"allowed": false})
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
    )
}

/// Secret create and replace (as `05-secrets-get.json` shows them stored).
fn secret_write(
    fake: &FakeApiServer,
    method: &Method,
    rest: &str,
    body: &[u8],
) -> Response<MockBody> {
    let segments: Vec<&str> = rest.split('/').collect();
    let mut secret: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut state = fake.state.lock().unwrap();
    state.resource_version += 1;
    let rv = state.resource_version.to_string();
    match (method.clone(), segments.as_slice()) {
        (Method::POST, [ns, "secrets"]) => {
            let name = secret["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.secrets.contains_key(&(ns.to_string(), name.clone())) {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("secrets {name:?} already exists"), "reason": "AlreadyExists",
                            "details": {"name": name, "kind": "secrets"}, "code": 409}),
                );
            }
            secret["kind"] = json!("Secret");
            secret["apiVersion"] = json!("v1");
            secret["metadata"]["namespace"] = json!(ns);
            secret["metadata"]["uid"] = json!(format!("uid-secret-{name}"));
            secret["metadata"]["resourceVersion"] = json!(rv);
            secret["metadata"]["creationTimestamp"] = json!("2026-11-30T04:32:08Z");
            state.secrets.insert((ns.to_string(), name), secret.clone());
            json_response(StatusCode::CREATED, &secret)
        }
        (Method::PUT, [ns, "secrets", name]) => {
            let key = (ns.to_string(), name.to_string());
            let Some(current) = state.secrets.get(&key) else {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("secrets {name:?} not found"), "reason": "NotFound",
                            "details": {"name": name, "kind": "secrets"}, "code": 404}),
                );
            };
            if secret["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("Operation cannot be fulfilled on secrets {name:?}: the object has been modified; please apply your changes to the latest version and try again"),
                            "reason": "Conflict", "details": {"name": name, "kind": "secrets"}, "code": 409}),
                );
            }
            secret["metadata"]["resourceVersion"] = json!(rv);
            state.secrets.insert(key, secret.clone());
            json_response(StatusCode::OK, &secret)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status_error(
                405,
                "MethodNotAllowed",
                format!("{method} secrets {rest}"),
                "",
            ),
        ),
    }
}

fn merge_spec(lease: &mut Value, patch: &Value) {
    if let Some(spec) = patch.get("spec").and_then(Value::as_object) {
        let target = lease["spec"].as_object_mut();
        if let Some(target) = target {
            for (k, v) in spec {
                if v.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// `coordination.k8s.io/v1` Leases: get, create, and patch (strategic merge, or
/// server-side apply, which conflicts without force when another field manager
/// holds `spec.holderIdentity` with another value).
fn lease_answer(
    fake: &FakeApiServer,
    method: &Method,
    rest: &str,
    body: &[u8],
    content_type: Option<&http::HeaderValue>,
    field_manager: Option<&str>,
) -> Response<MockBody> {
    let segments: Vec<&str> = rest.split('/').collect();
    let lease_error = |code: u16, reason: &str, message: String, name: &str| {
        let mut status = status_error(code, reason, message, name);
        status["details"]["group"] = json!("coordination.k8s.io");
        status["details"]["kind"] = json!("leases");
        json_response(StatusCode::from_u16(code).unwrap(), &status)
    };
    let mut state = fake.state.lock().unwrap();
    state.resource_version += 1;
    let rv = state.resource_version.to_string();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, [ns, "leases", name]) => match state.leases.get(*name) {
            Some((lease, _)) if lease["metadata"]["namespace"] == *ns => {
                json_response(StatusCode::OK, lease)
            }
            _ => lease_error(
                404,
                "NotFound",
                format!("leases.coordination.k8s.io {name:?} not found"),
                name,
            ),
        },
        (Method::POST, [ns, "leases"]) => {
            let mut lease: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            let name = lease["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.leases.contains_key(&name) {
                return lease_error(
                    409,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io {name:?} already exists"),
                    &name,
                );
            }
            lease["metadata"]["namespace"] = json!(ns);
            lease["metadata"]["resourceVersion"] = json!(rv);
            if lease.get("spec").is_none_or(Value::is_null) {
                lease["spec"] = json!({});
            }
            state.leases.insert(name, (lease.clone(), None));
            json_response(StatusCode::CREATED, &lease)
        }
        (Method::PATCH, [_ns, "leases", name]) => {
            let Some((lease, holder_manager)) = state.leases.get_mut(*name) else {
                return lease_error(
                    404,
                    "NotFound",
                    format!("leases.coordination.k8s.io {name:?} not found"),
                    name,
                );
            };
            let patch: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            let apply = content_type
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/apply-patch"));
            if apply {
                let Some(manager) = field_manager else {
                    return lease_error(
                        400,
                        "BadRequest",
                        "fieldManager is required for apply".into(),
                        name,
                    );
                };
                let wanted = &patch["spec"]["holderIdentity"];
                let current = &lease["spec"]["holderIdentity"];
                let owned_by_other = holder_manager.as_deref().is_some_and(|m| m != manager);
                if !wanted.is_null() && !current.is_null() && wanted != current && owned_by_other {
                    return lease_error(
                        409,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with \"other\": .spec.holderIdentity".into(),
                        name,
                    );
                }
                if !wanted.is_null() {
                    *holder_manager = Some(manager.to_string());
                }
            }
            merge_spec(lease, &patch);
            lease["metadata"]["resourceVersion"] = json!(rv);
            json_response(StatusCode::OK, lease)
        }
        _ => lease_error(
            405,
            "MethodNotAllowed",
            format!("{method} {rest} is not supported here"),
            "",
        ),
    }
}

/// Whether `labels` match a selector of `key` / `key=value` terms (comma: and).
fn selects(selector: Option<&str>, labels: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let decoded = selector
        .replace("%2F", "/")
        .replace("%3D", "=")
        .replace("%2C", ",");
    decoded.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v.trim_start_matches('=')),
        None => labels.get(term).is_some(),
    })
}

fn deployment_error(code: u16, reason: &str, message: String, name: &str) -> Response<MockBody> {
    let mut status = status_error(code, reason, message, name);
    status["details"]["group"] = json!("apps");
    status["details"]["kind"] = json!("deployments");
    json_response(StatusCode::from_u16(code).unwrap(), &status)
}

/// `apps/v1` Deployments: list (label-selected; items without apiVersion/kind,
/// as built-in lists have), get, server-side apply, delete (a `Status` back).
#[allow(clippy::too_many_arguments)]
fn deployments_answer(
    fake: &FakeApiServer,
    method: &Method,
    rest: &str,
    body: &[u8],
    content_type: Option<&http::HeaderValue>,
    field_manager: Option<&str>,
    force: bool,
    label_selector: Option<&str>,
) -> Response<MockBody> {
    let segments: Vec<&str> = rest.split('/').collect();
    let mut state = fake.state.lock().unwrap();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["deployments"]) | (Method::GET, ["namespaces", _, "deployments"]) => {
            let namespace = match segments.as_slice() {
                ["namespaces", ns, _] => Some(*ns),
                _ => None,
            };
            let items: Vec<Value> = state
                .deployments
                .iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .filter(|(_, d)| selects(label_selector, &d["metadata"]["labels"]))
                .map(|(_, d)| {
                    let mut d = d.clone();
                    if let Some(m) = d.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    d
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "DeploymentList", "apiVersion": "apps/v1",
                        "metadata": {"resourceVersion": state.resource_version.to_string()}, "items": items}),
            )
        }
        (Method::GET, ["namespaces", ns, "deployments", name]) => {
            match state.deployments.get(&(ns.to_string(), name.to_string())) {
                Some(d) => json_response(StatusCode::OK, d),
                None => deployment_error(
                    404,
                    "NotFound",
                    format!("deployments.apps {name:?} not found"),
                    name,
                ),
            }
        }
        (Method::PATCH, ["namespaces", ns, "deployments", name]) => {
            let is_apply = content_type
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/apply-patch"));
            if !is_apply {
                return deployment_error(
                    415,
                    "UnsupportedMediaType",
                    "only apply patches here".into(),
                    name,
                );
            }
            let Some(manager) = field_manager else {
                return deployment_error(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                    name,
                );
            };
            let applied: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return deployment_error(400, "BadRequest", e.to_string(), name),
            };
            if applied.get("apiVersion").is_none() || applied.get("kind").is_none() {
                return deployment_error(
                    400,
                    "BadRequest",
                    "apiVersion and kind must be set".into(),
                    name,
                );
            }
            let key = (ns.to_string(), name.to_string());
            let existing = state.deployments.get(&key).cloned();
            let mut object = match ssa::apply(existing.as_ref(), &applied, manager, force) {
                Ok(o) => o,
                Err(conflicts) => {
                    return json_response(StatusCode::CONFLICT, &ssa::conflict_status(&conflicts));
                }
            };
            object["metadata"]["name"] = json!(name);
            object["metadata"]["namespace"] = json!(ns);
            let created = existing.is_none();
            match &existing {
                None => {
                    state.resource_version += 1;
                    object["metadata"]["uid"] = json!(format!("uid-deployment-{name}"));
                    object["metadata"]["generation"] = json!(1);
                    object["metadata"]["creationTimestamp"] = json!("2026-11-30T04:33:35Z");
                    object["metadata"]["resourceVersion"] =
                        json!(state.resource_version.to_string());
                    object["status"] = json!({});
                }
                Some(old) => {
                    let mut bump = old.clone();
                    let mut now = object.clone();
                    for v in [&mut bump, &mut now] {
                        v["metadata"]["managedFields"] = Value::Null;
                    }
                    if bump != now {
                        // A no-op apply changes nothing, not even the resourceVersion.
                        state.resource_version += 1;
                        object["metadata"]["resourceVersion"] =
                            json!(state.resource_version.to_string());
                    }
                    if old["spec"] != object["spec"] {
                        let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        object["metadata"]["generation"] = json!(g);
                    }
                }
            }
            state.deployments.insert(key, object.clone());
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(code, &object)
        }
        (Method::DELETE, ["namespaces", ns, "deployments", name]) => {
            match state
                .deployments
                .remove(&(ns.to_string(), name.to_string()))
            {
                Some(gone) => json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": name, "group": "apps", "kind": "deployments", "uid": gone["metadata"]["uid"]}}),
                ),
                None => deployment_error(
                    404,
                    "NotFound",
                    format!("deployments.apps {name:?} not found"),
                    name,
                ),
            }
        }
        _ => deployment_error(
            405,
            "MethodNotAllowed",
            format!("{method} {rest} is not supported here"),
            "",
        ),
    }
}

/// Core ConfigMaps of a namespace (guest mode): list (items without
/// apiVersion/kind), watch, get, JSON merge patch (a `null` removes a key), as
/// in tests/fixtures/apiserver/11-configmaps.json.
fn configmaps_answer(
    fake: &FakeApiServer,
    method: &Method,
    path: &str,
    body: &[u8],
    watch: bool,
) -> Response<MockBody> {
    let segments: Vec<&str> = path
        .trim_start_matches("/api/v1/namespaces/")
        .split('/')
        .collect();
    let error = |code: u16, reason: &str, message: String, name: &str| {
        let mut status = status_error(code, reason, message, name);
        status["details"] = json!({"name": name, "kind": "configmaps"});
        json_response(StatusCode::from_u16(code).unwrap(), &status)
    };
    match (method.clone(), segments.as_slice()) {
        (Method::GET, [ns, "configmaps"]) => {
            if watch {
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                fake.state.lock().unwrap().configmap_watchers.push(tx);
                return stream_response(rx);
            }
            let state = fake.state.lock().unwrap();
            let items: Vec<Value> = state
                .configmaps
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, cm)| {
                    let mut cm = cm.clone();
                    if let Some(m) = cm.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    cm
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "ConfigMapList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": state.resource_version.to_string()}, "items": items}),
            )
        }
        (Method::GET, [ns, "configmaps", name]) => match fake.configmap(ns, name) {
            Some(cm) => json_response(StatusCode::OK, &cm),
            None => error(
                404,
                "NotFound",
                format!("configmaps {name:?} not found"),
                name,
            ),
        },
        (Method::PATCH, [ns, "configmaps", name]) => {
            let patch: Value = match serde_json::from_slice(body) {
                Ok(p) => p,
                Err(e) => return error(400, "BadRequest", e.to_string(), name),
            };
            let mut state = fake.state.lock().unwrap();
            state.resource_version += 1;
            let rv = state.resource_version.to_string();
            let Some(cm) = state
                .configmaps
                .get_mut(&(ns.to_string(), name.to_string()))
            else {
                return error(
                    404,
                    "NotFound",
                    format!("configmaps {name:?} not found"),
                    name,
                );
            };
            json_patch::merge(cm, &patch);
            cm["metadata"]["resourceVersion"] = json!(rv);
            let cm = cm.clone();
            broadcast_to(&mut state.configmap_watchers, "MODIFIED", &cm);
            json_response(StatusCode::OK, &cm)
        }
        _ => error(
            405,
            "MethodNotAllowed",
            format!("{method} {path} is not supported here"),
            "",
        ),
    }
}
