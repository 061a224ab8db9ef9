//! A mocked Kubernetes API server at the HTTP boundary, the way kube-rs tests do
//! (`tower_test::mock::pair` handed to `kube::Client::new`). Requests are answered
//! from an in-memory object store with the shapes a real apiserver sends: lists
//! with `metadata.resourceVersion`, newline-delimited watch events, `Status`
//! bodies for errors, server-side apply on `/status`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

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
    deployments: Vec<Value>,
    /// Lease requests fail (etcd unavailable behind the apiserver).
    leases_down: bool,
    /// (namespace, name) -> ScalingSubscription
    subscriptions: BTreeMap<(String, String), Value>,
    subscription_watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// (namespace, name) -> Secret
    secrets: BTreeMap<(String, String), Value>,
}

pub struct FakeApiServer {
    state: Mutex<State>,
    /// Lists are held until this turns true (to observe readiness before sync).
    list_open: watch::Sender<bool>,
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
        tokio::spawn(serve(handle, self.clone()));
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
        });
        tokio::spawn(serve(handle, fake.clone()));
        (client, fake)
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

    pub fn lease(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get(name)
            .map(|(l, _)| l.clone())
    }

    pub fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn add_deployment(&self, deployment: Value) {
        self.state.lock().unwrap().deployments.push(deployment);
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
    let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
    state.watchers.retain(|w| w.send(line.clone()).is_ok());
}

async fn serve(mut handle: Handle, fake: Arc<FakeApiServer>) {
    while let Some((request, respond)) = handle.next_request().await {
        let fake = fake.clone();
        tokio::spawn(async move {
            let response = answer(&fake, request).await;
            respond.send_response(response);
        });
    }
}

async fn answer(fake: &FakeApiServer, request: Request<Body>) -> Response<MockBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect_bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    fake.state.lock().unwrap().seen.push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: query.clone(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body: body.clone(),
    });
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let param = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);

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
    if parts.method == Method::GET
        && (path == "/apis/apps/v1/deployments" || path == "/api/v1/pods")
    {
        let (api_version, kind) = if path.contains("deployments") {
            ("apps/v1", "DeploymentList")
        } else {
            // konsumer lists Pods as metadata only (PartialObjectMetadataList).
            ("meta.k8s.io/v1", "PartialObjectMetadataList")
        };
        let items = if path.contains("deployments") {
            fake.state.lock().unwrap().deployments.clone()
        } else {
            Vec::new()
        };
        return json_response(
            StatusCode::OK,
            &json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
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
