//! The HTTP API in local mode, over real TLS on loopback, with real receivers:
//! every answer is checked against `openapi/konsumer.yaml`, and the document
//! against the OpenAPI 3.1 schema and the router.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use konsumer::config::ServeConfig;
use konsumer::http_api::{ApiAuth, ApiConfig, OPENAPI_YAML, ROUTES};
use konsumer::scaling_events::EventType;
use konsumer::server::{self, Running};
use konsumer::store::ConsumerIndex;
use reqwest::Method;
use serde_json::{Value, json};

use crate::delivery_local::{config as delivery_config, consumer_yaml};
use crate::receiver::Receiver;
use crate::support::client_trusting;

pub const TOKEN: &str = "tok-team-a-3f9c1e";

pub static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_saphyr::from_str(OPENAPI_YAML).expect("openapi/konsumer.yaml parses"));

/// The schema of `method path` answering `status` (a route template).
fn response_schema(template: &str, method: &str, status: u16) -> Option<Value> {
    let op = DOC["paths"][template].get(method.to_ascii_lowercase())?;
    let mut response = op["responses"].get(status.to_string())?.clone();
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = DOC.pointer(r.trim_start_matches('#'))?.clone();
    }
    let content = response.get("content")?.as_object()?;
    content.values().next().map(|m| m["schema"].clone())
}

/// Fails unless `body` is what the document says `method template` answers with `status`.
pub fn conforms(template: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(template, method, status).unwrap_or_else(|| {
        panic!("openapi/konsumer.yaml documents no {status} answer for {method} {template}")
    });
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": DOC["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: the answer does not match the document: {errors:#?}\n{body:#}"
    );
}

/// Fails unless `value` matches `#/components/schemas/{name}` of the document.
pub fn conforms_to(name: &str, value: &Value) {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": DOC["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{value:#}");
}

/// The route template a concrete path matches.
pub fn template_of(method: &str, path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|r| {
            let t: Vec<&str> = r.path.split('/').collect();
            r.method == method
                && t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(a, b)| a.starts_with('{') || a == b)
        })
        .map(|r| r.path)
        .unwrap_or_else(|| panic!("no route {method} {path}"))
}

/// konsumer in local mode with the api on, on a directory that outlives it.
pub struct ApiServer {
    pub running: Option<Running>,
    pub client: reqwest::Client,
    pub base: String,
}

pub fn write_tokens(dir: &Path) -> PathBuf {
    let path = dir.join("api-tokens");
    std::fs::write(&path, format!("# team a\n{TOKEN}\n")).unwrap();
    path
}

impl ApiServer {
    pub async fn start(dir: &Path, tokens: &Path) -> ApiServer {
        Self::start_with(dir, tokens, |_| {}).await
    }

    pub async fn start_with(
        dir: &Path,
        tokens: &Path,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> ApiServer {
        let mut config = ServeConfig::local_for_tests(dir.to_path_buf());
        config.delivery = Some(delivery_config(true));
        config.api = Some(ApiConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            ApiAuth::TokenFile(tokens.to_path_buf()),
        ));
        tweak(&mut config);
        let index = ConsumerIndex::new();
        let backend = server::backend(&config, index.clone()).await.unwrap();
        let running = server::start(config, index, backend).await.unwrap();
        let ca = std::fs::read(running.generated_ca.as_ref().unwrap()).unwrap();
        ApiServer {
            client: client_trusting(&ca),
            base: format!("https://localhost:{}", running.api_addr.unwrap().port()),
            running: Some(running),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// A request with the token; the answer checked against the document.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, value) = self
            .send(
                method,
                path,
                Some(TOKEN),
                body.map(|b| b.to_string().into_bytes()),
                "application/json",
            )
            .await;
        (status, value)
    }

    /// Any request; the answer checked against the document.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        if headers
            .get("content-type")
            .is_some_and(|v| v == "application/yaml")
        {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            assert_eq!(text, OPENAPI_YAML);
            return (status, headers, Value::String(text));
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(status < 500, "{method} {path}: {status} {value:#}");
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if status >= 400 {
            assert_eq!(ct, "application/problem+json", "{method} {path}: {value}");
            assert!(
                value["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("konsumer: ")),
                "{value}"
            );
        }
        if status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer realm=\"konsumer\"");
        }
        if let Some(template) = ROUTES
            .iter()
            .any(|r| r.method == method && template_matches(r.path, path))
            .then(|| template_of(method, path))
        {
            conforms(template, method, status, &value);
        }
        (status, headers, value)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
}

pub fn subscription(name: &str, url: &str) -> Value {
    json!({
        "apiVersion": "konsumer.dev/v1alpha1",
        "kind": "ScalingSubscription",
        "metadata": {"name": name},
        "spec": {"url": url, "timeout": "5s"}
    })
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/openapi/oas-3.1-schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&meta).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&DOC)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the schema check catches a broken document.
    let mut broken = DOC.clone();
    broken["paths"]["/v1/consumers"]["get"]["responses"] = json!("none");
    assert!(!validator.is_valid(&broken));
    // Every $ref points somewhere.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&DOC, &mut all);
    for r in all {
        assert!(
            DOC.pointer(r.trim_start_matches('#')).is_some(),
            "dangling {r}"
        );
    }
}

#[test]
fn the_router_and_the_document_have_the_same_routes() {
    let in_router: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let mut in_doc = BTreeSet::new();
    for (path, item) in DOC["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                in_doc.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let missing_in_doc: Vec<_> = in_router.difference(&in_doc).collect();
    let missing_in_router: Vec<_> = in_doc.difference(&in_router).collect();
    assert!(
        missing_in_doc.is_empty() && missing_in_router.is_empty(),
        "routes not documented: {missing_in_doc:?}; documented routes the router lacks: {missing_in_router:?}"
    );
}

#[test]
fn every_event_type_is_a_documented_webhook() {
    let hooks = DOC["webhooks"].as_object().unwrap();
    let enumerated: Vec<&str> = DOC["components"]["schemas"]["EventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in EventType::ALL {
        assert!(
            hooks.contains_key(t.as_str()),
            "no webhook for {}",
            t.as_str()
        );
        assert!(
            enumerated.contains(&t.as_str()),
            "{} not in EventType",
            t.as_str()
        );
        let params = hooks[t.as_str()]["post"]["parameters"].to_string();
        for h in ["WebhookId", "WebhookTimestamp", "WebhookSignature"] {
            assert!(params.contains(h), "{} lacks {h}", t.as_str());
        }
    }
    assert_eq!(hooks.len(), EventType::ALL.len());
    // The scaling states the status carries.
    let states: Vec<Value> = konsumer::api::ScalingState::ALL
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    assert_eq!(
        DOC["components"]["schemas"]["InstanceStatus"]["properties"]["state"]["enum"],
        Value::Array(states)
    );
}

/// Concrete paths for every route.
fn every_route() -> Vec<(&'static str, String)> {
    ROUTES
        .iter()
        .map(|r| {
            (
                r.method,
                r.path
                    .replace("{namespace}", "streams")
                    .replace("{name}", "orders"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_document_needs_a_bearer_token_konsumer_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokens_dir.path());
    let s = ApiServer::start(dir.path(), &tokens).await;
    for (method, path) in every_route() {
        if path.starts_with("/openapi") {
            let (status, _, doc) = s.send(method, &path, None, None, "").await;
            assert_eq!(status, 200);
            if path.ends_with(".json") {
                assert_eq!(doc, *DOC);
            }
            continue;
        }
        let (status, _, p) = s.send(method, &path, None, None, "").await;
        assert_eq!(status, 401, "{method} {path} without a token: {p}");
        let (status, _, p) = s.send(method, &path, Some("not-a-token"), None, "").await;
        assert_eq!(status, 401, "{method} {path} with a bad token: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("--api-token-file"),
            "{p}"
        );
    }
    // The token file is re-read when it changes: a removed token stops working.
    let (status, _) = s.call("GET", "/v1/consumers", None).await;
    assert_eq!(status, 200);
    std::fs::write(&tokens, "another-token-entirely\n").unwrap();
    wait_until("the token file to be re-read", || async {
        s.call_status("GET", "/v1/consumers").await == 401
    })
    .await;
    s.stop().await;
}

impl ApiServer {
    async fn call_status(&self, method: &str, path: &str) -> u16 {
        self.call(method, path, None).await.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_the_api_does_not_start_in_local_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::local_for_tests(dir.path().to_path_buf());
    config.api = None;
    let index = ConsumerIndex::new();
    let backend = server::backend(&config, index.clone()).await.unwrap();
    let running = server::start(config, index, backend).await.unwrap();
    assert_eq!(running.api_addr, None);
    running.stop().await;
    // The flags: --local without --api-token-file has no api; with it, one on loopback.
    use clap::Parser;
    let cli = |args: &[&str]| -> ServeConfig {
        let mut all = vec!["konsumer", "serve"];
        all.extend_from_slice(args);
        match konsumer::cli::Cli::try_parse_from(all).unwrap().command {
            konsumer::cli::Command::Serve(a) => a.into_config().unwrap(),
            _ => unreachable!(),
        }
    };
    let d = dir.path().to_str().unwrap();
    assert!(cli(&["--local", d]).api.is_none());
    let with = cli(&["--local", d, "--api-token-file", "/tmp/t"]);
    let api = with.api.unwrap();
    assert_eq!(api.addr, "127.0.0.1:9443".parse().unwrap());
    assert_eq!(api.auth, ApiAuth::TokenFile("/tmp/t".into()));
    // Kube mode: on every address, TokenReview/SubjectAccessReview; guest mode: tokens only.
    let kube = cli(&["--tls-cert", "/tmp/c", "--tls-key", "/tmp/k"])
        .api
        .unwrap();
    assert_eq!(kube.addr, "0.0.0.0:9443".parse().unwrap());
    assert_eq!(kube.auth, ApiAuth::Kube);
    let guest = cli(&[
        "--tls-cert",
        "/tmp/c",
        "--tls-key",
        "/tmp/k",
        "--guest",
        "--namespace",
        "team",
    ]);
    assert!(guest.api.is_none());
    let off = cli(&["--tls-cert", "/tmp/c", "--tls-key", "/tmp/k", "--no-api"]);
    assert!(off.api.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_through_the_api_is_tested_listed_deleted_and_survives_a_restart() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), consumer_yaml("orders")).unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokens_dir.path());
    let s = ApiServer::start(dir.path(), &tokens).await;

    let (status, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    assert_eq!(status, 201, "{created:#}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        created["spec"]["secretRef"],
        json!({"name": "feed-whsec", "key": "secret"})
    );
    assert_eq!(created["metadata"]["generation"], 1);

    // Never readable again.
    let (status, got) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert_eq!(status, 200);
    assert!(!got.to_string().contains(&secret), "{got}");
    let (_, list) = s
        .call("GET", "/v1/namespaces/streams/subscriptions", None)
        .await;
    assert!(!list.to_string().contains(&secret));
    assert_eq!(list["items"][0]["metadata"]["name"], "feed");
    // Nor written to the user's files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            assert!(
                !std::fs::read_to_string(&p)
                    .unwrap_or_default()
                    .contains(&secret)
            );
        }
    }

    // The new subscriber gets its resync, signed with the secret it was given.
    rx.wait_for("the resync", Duration::from_secs(10), &[&secret], |e| {
        e.iter().any(|e| e.type_ == EventType::Resync.as_str())
    })
    .await;
    let (status, test) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["statusCode"], 200);
    let events = rx.events(&[&secret]);
    assert!(events.iter().any(|e| e.type_ == EventType::Ping.as_str()));
    let (_, deliveries) = s
        .call(
            "GET",
            "/v1/namespaces/streams/subscriptions/feed/deliveries",
            None,
        )
        .await;
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(
        items[0]["type"],
        EventType::Ping.as_str(),
        "newest first: {deliveries:#}"
    );
    assert_eq!(items[0]["statusCode"], 200);

    // A restart keeps what the api made.
    s.stop().await;
    let s = ApiServer::start(dir.path(), &tokens).await;
    let (status, again) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["spec"]["url"], rx.url());
    let before = rx.count();
    let (_, test) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
    assert_eq!(test["statusCode"], 200, "{test}");
    assert!(rx.count() > before);
    rx.events(&[&secret]);

    // Delete takes its Secret with it.
    let (status, _) = s
        .call("DELETE", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call("DELETE", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert_eq!(status, 404);
    // The name (and the Secret's) can be taken again.
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    assert_eq!(status, 201);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_subscriptions_get_the_validating_webhooks_causes_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let s = &s;
    let post = |body: Value| async move {
        s.call("POST", "/v1/namespaces/streams/subscriptions", Some(body))
            .await
    };
    let fields = |p: &Value| -> Vec<String> {
        p["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect()
    };
    // Everything wrong at once, as the webhook says it.
    let (status, p) = post(json!({
        "metadata": {"name": "feed"},
        "spec": {"url": "ftp://x", "timeout": "90s", "types": ["dev.konsumer.nope.v1"], "bogus": 1},
        "extra": true
    }))
    .await;
    assert_eq!(status, 422, "{p:#}");
    let f = fields(&p);
    for field in [
        "spec.url",
        "spec.timeout",
        "spec.types[0]",
        "spec.bogus",
        "extra",
    ] {
        assert!(f.contains(&field.to_string()), "{field} not in {f:?}");
    }
    // The same messages as the validating webhook (one validator).
    let webhook = konsumer::validation::subscription::validate(
        &json!({"metadata": {"name": "feed", "namespace": "streams"},
                "spec": {"url": "ftp://x", "secretRef": {"name": "s", "key": "k"}}}),
        konsumer::validation::subscription::Context {
            konsumer_namespace: "default",
        },
    );
    let url_message = webhook
        .errors
        .iter()
        .find(|e| e.field.to_string() == "spec.url")
        .unwrap()
        .body();
    assert!(
        p["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["message"] == url_message),
        "{p:#}"
    );

    // Wrong types, missing names, bad names, other namespaces.
    let (status, p) = post(json!({"metadata": {"name": "feed"}, "spec": {"url": 5}})).await;
    assert_eq!(
        (status, fields(&p).contains(&"spec.url".to_string())),
        (422, true),
        "{p}"
    );
    let (status, p) = post(json!({"spec": {"url": "https://h.example/x"}})).await;
    assert_eq!(
        (status, fields(&p)),
        (422, vec!["metadata.name".to_string()]),
        "{p}"
    );
    let (status, p) =
        post(json!({"metadata": {"name": "Feed_1"}, "spec": {"url": "https://h.example/x"}})).await;
    assert_eq!(
        (status, fields(&p)),
        (422, vec!["metadata.name".to_string()]),
        "{p}"
    );
    let (status, p) = post(json!({"metadata": {"name": "feed", "namespace": "other"}, "spec": {"url": "https://h.example/x"}})).await;
    assert_eq!(
        (status, fields(&p)),
        (422, vec!["metadata.namespace".to_string()]),
        "{p}"
    );
    let (status, p) = post(
        json!({"metadata": {"name": "feed", "lables": {}}, "spec": {"url": "https://h.example/x"}}),
    )
    .await;
    assert_eq!(
        (status, fields(&p)),
        (422, vec!["metadata.lables".to_string()]),
        "{p}"
    );
    let (status, p) = post(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "feed"}, "spec": {"url": "https://h.example/x"}})).await;
    assert_eq!(
        (status, fields(&p)),
        (422, vec!["apiVersion".to_string(), "kind".to_string()]),
        "{p}"
    );
    let (status, p) = post(json!({"metadata": {"name": "feed"}})).await;
    assert_eq!((status, fields(&p)), (422, vec!["spec".to_string()]), "{p}");
    // namespaceSelector: only in konsumer's own namespace.
    let (status, p) = post(json!({"metadata": {"name": "feed"}, "spec": {"url": "https://h.example/x", "namespaceSelector": {}}})).await;
    assert_eq!(status, 422, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_4xx_never_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), consumer_yaml("orders")).unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let subs = "/v1/namespaces/streams/subscriptions";
    type Case<'a> = (&'a str, String, Option<Vec<u8>>, &'a str, u16);
    let cases: Vec<Case> = vec![
        ("POST", subs.into(), Some(b"{not json".to_vec()), "application/json", 400),
        ("POST", subs.into(), Some(b"[1,2]".to_vec()), "application/json", 400),
        ("POST", subs.into(), Some(b"\"feed\"".to_vec()), "application/json", 400),
        ("POST", subs.into(), Some(vec![0xff, 0xfe, 0x00]), "application/json", 400),
        ("POST", subs.into(), None, "application/json", 400),
        ("POST", subs.into(), Some(format!("{{\"metadata\":{{\"name\":\"x\"}},\"spec\":{{\"url\":\"https://h.example/{}\"}}}}", "a".repeat(70_000)).into_bytes()), "application/json", 413),
        ("POST", subs.into(), Some(b"name=feed".to_vec()), "application/x-www-form-urlencoded", 415),
        ("GET", "/v1/namespaces/streams/subscriptions/..%2F..%2Fetc".into(), None, "", 400),
        ("GET", "/v1/namespaces/Streams/consumers".into(), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers/ORDERS".into(), None, "", 400),
        ("GET", format!("/v1/namespaces/streams/consumers/{}", "a".repeat(300)), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers/missing".into(), None, "", 404),
        ("GET", "/v1/namespaces/streams/consumers?limit=0".into(), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers?limit=abc".into(), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers?continue=garbage!".into(), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers?lmit=2".into(), None, "", 400),
        ("GET", "/v1/namespaces/streams/consumers/orders/events?after=x".into(), None, "", 400),
        ("GET", "/v1/nope".into(), None, "", 404),
        ("PATCH", "/v1/namespaces/streams/subscriptions/feed".into(), None, "", 405),
        ("PUT", "/v1/namespaces/streams/subscriptions/feed".into(), Some(b"{\"metadata\":{\"name\":\"feed\"},\"spec\":{\"url\":\"https://h.example/x\"}}".to_vec()), "application/json", 404),
        ("POST", "/v1/namespaces/streams/subscriptions/feed/rotate-secret?grace=forever".into(), None, "", 400),
        ("POST", "/v1/namespaces/streams/subscriptions/feed/redeliver".into(), Some(b"{\"consumer\":\"orders\"}".to_vec()), "application/json", 422),
        ("POST", "/v1/namespaces/streams/subscriptions/feed/redeliver".into(), Some(b"{\"consumer\":1,\"fromSequence\":\"x\"}".to_vec()), "application/json", 422),
    ];
    for (method, path, body, ct, want) in cases {
        let (status, _, p) = s.send(method, &path, Some(TOKEN), body, ct).await;
        assert_eq!(status, want, "{method} {path}: {p:#}");
    }
    s.stop().await;
}

impl ApiServer {
    /// Appends `n` scale events to a Consumer's journal in one status write, as
    /// the reconciler does.
    pub async fn journal(&self, name: &str, n: usize) {
        use konsumer::scaling_events::journal::{self, NewEvent};
        let running = self.running();
        let mut status = running
            .index
            .get("streams", name)
            .and_then(|c| c.consumer.status.clone())
            .unwrap_or_default();
        let mut j = status.journal.take().unwrap_or_default();
        let events = (0..n)
            .map(|i| NewEvent {
                type_: EventType::Scaled,
                instance: Some((i % 3) as u32),
                data: json!({"instance": i % 3, "direction": "up", "reason": format!("test {i}")}),
            })
            .collect();
        journal::append(&mut j, events, jiff::Timestamp::now());
        status.journal = Some(j);
        running
            .store
            .write_status("streams", name, &status)
            .await
            .unwrap();
        if let Some(d) = running.deliveries.as_ref() {
            d.wake();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_listed_in_pages_with_their_status_plan_and_journal() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["orders", "billing", "audit"] {
        std::fs::write(dir.path().join(format!("{name}.yaml")), consumer_yaml(name)).unwrap();
    }
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;

    // Pages of 2 across every namespace, then the rest.
    let (status, p1) = s.call("GET", "/v1/consumers?limit=2", None).await;
    assert_eq!(status, 200, "{p1}");
    let names = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&p1), vec!["audit", "billing"]);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p2) = s
        .call(
            "GET",
            &format!("/v1/namespaces/streams/consumers?limit=2&continue={token}"),
            None,
        )
        .await;
    assert_eq!(names(&p2), vec!["orders"]);
    assert!(p2["metadata"].get("continue").is_none(), "{p2}");
    assert_eq!(p2["items"][0]["instances"], 4);

    // A status as the reconciler writes it: every part checked against the document.
    let status: konsumer::api::ConsumerStatus = serde_json::from_value(json!({
        "observedGeneration": 1, "expected": 4, "running": 3, "paused": 0, "lagging": 1,
        "missing": 1, "unavailable": 0, "outdated": 0, "redundant": 0,
        "lastSyncTime": "2026-11-30T04:40:00Z",
        "lastSyncState": {"0": {"productionRate": 120, "consumptionRate": 118, "messageBehind": 40}},
        "instances": [{"id": 0, "partitions": [0, 1, 2], "state": "PENDING_SCALE_UP",
                       "since": "2026-11-30T04:39:00Z",
                       "resources": [{"containerName": "consumer", "requests": {"cpu": "250m", "memory": "128Mi"},
                                      "limits": {"cpu": "500m", "memory": "256Mi"}}],
                       "pending": [{"containerName": "consumer", "requests": {"cpu": "300m"}}],
                       "saturation": "100m"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
                        "lastTransitionTime": "2026-11-30T04:39:00Z"}]
    }))
    .unwrap();
    s.running()
        .store
        .write_status("streams", "orders", &status)
        .await
        .unwrap();
    wait_until("the status", || async {
        s.call("GET", "/v1/namespaces/streams/consumers/orders", None)
            .await
            .1["summary"]["running"]
            == 3
    })
    .await;
    let (status, orders) = s
        .call("GET", "/v1/namespaces/streams/consumers/orders", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(orders["name"], "orders");
    assert_eq!(
        orders["status"]["instances"][0]["state"],
        "PENDING_SCALE_UP"
    );
    let (_, listed) = s
        .call("GET", "/v1/namespaces/streams/consumers", None)
        .await;
    assert_eq!(
        listed["items"][2]["conditions"][0]["type"], "Ready",
        "{listed}"
    );
    assert!(orders["status"].get("journal").is_none());

    // The plan is `konsumer plan --offline`'s answer (the same function).
    let (status, plan) = s
        .call("GET", "/v1/namespaces/streams/consumers/orders/plan", None)
        .await;
    assert_eq!(status, 200, "{plan}");
    let cached = s.running().index.get("streams", "orders").unwrap();
    let expected = konsumer::cli::plan::plan(&cached.consumer, 0.8).unwrap();
    assert_eq!(plan, serde_json::to_value(&expected).unwrap());
    assert_eq!(plan["instances"][2]["partitions"], json!([6, 7]));

    // The journal, oldest first, after a sequence, in pages; longer than the
    // newest entries local mode keeps in memory, so the first pages come from
    // the embedded store.
    s.journal("orders", 8).await;
    wait_until("the journal", || async {
        s.call(
            "GET",
            "/v1/namespaces/streams/consumers/orders/events",
            None,
        )
        .await
        .1["head"]
            == 8
    })
    .await;
    let (_, e) = s
        .call(
            "GET",
            "/v1/namespaces/streams/consumers/orders/events?after=1&limit=2",
            None,
        )
        .await;
    let seqs = |e: &Value| -> Vec<i64> {
        e["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["sequence"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&e), vec![2, 3]);
    assert_eq!(e["items"][0]["type"], EventType::Scaled.as_str());
    let token = e["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, e2) = s
        .call(
            "GET",
            &format!("/v1/namespaces/streams/consumers/orders/events?limit=2&continue={token}"),
            None,
        )
        .await;
    assert_eq!(seqs(&e2), vec![4, 5]);

    // Counted by route template and status class, never by the path itself.
    let metrics = reqwest::get(format!("http://{}/metrics", s.running().admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("konsumer_api_requests_total{")
                && l.contains("route=\"/v1/namespaces/{namespace}/consumers/{name}/events\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        line.contains("method=\"GET\"") && line.contains("status_class=\"2xx\""),
        "{line}"
    );
    assert!(!metrics.contains("consumers/orders"), "a path in a label");
    assert!(metrics.contains("konsumer_api_request_duration_seconds_bucket{"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliver_moves_the_cursor_back_and_a_real_receiver_gets_the_events_again() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), consumer_yaml("orders")).unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let (status, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    assert_eq!(status, 201);
    let secret = created["secret"].as_str().unwrap().to_string();
    rx.wait_for("the resync", Duration::from_secs(10), &[&secret], |e| {
        !e.is_empty()
    })
    .await;
    s.journal("orders", 4).await;
    let scaled = |e: &[crate::receiver::Received]| -> Vec<i64> {
        e.iter()
            .filter(|e| e.type_ == EventType::Scaled.as_str())
            .map(|e| e.sequence())
            .collect()
    };
    rx.wait_for("events 1..4", Duration::from_secs(10), &[&secret], |e| {
        scaled(e) == vec![1, 2, 3, 4]
    })
    .await;

    let (status, r) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/redeliver",
            Some(json!({"consumer": "orders", "fromSequence": 3})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(r, json!({"consumer": "streams/orders", "cursor": 2}));
    rx.wait_for("3 and 4 again", Duration::from_secs(10), &[&secret], |e| {
        scaled(e) == vec![1, 2, 3, 4, 3, 4]
    })
    .await;

    // What the receiver got is what the document's webhooks section describes.
    for got in rx.requests() {
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        conforms_to("CloudEvent", &body);
        for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(got.headers.contains_key(h), "{h}");
        }
    }

    // Outside the journal, unknown Consumers, other namespaces: clear 4xx.
    let (status, p) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/redeliver",
            Some(json!({"consumer": "orders", "fromSequence": 99})),
        )
        .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["causes"][0]["field"], "fromSequence");
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/redeliver",
            Some(json!({"consumer": "nope", "fromSequence": 1})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/redeliver",
            Some(json!({"consumer": "other/orders", "fromSequence": 1})),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/nope/redeliver",
            Some(json!({"consumer": "orders", "fromSequence": 1})),
        )
        .await;
    assert_eq!(status, 404);

    // Deliveries page newest first across pages.
    let (_, d1) = s
        .call(
            "GET",
            "/v1/namespaces/streams/subscriptions/feed/deliveries?limit=2",
            None,
        )
        .await;
    let token = d1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, d2) = s
        .call(
            "GET",
            &format!(
                "/v1/namespaces/streams/subscriptions/feed/deliveries?limit=100&continue={token}"
            ),
            None,
        )
        .await;
    let (_, all) = s
        .call(
            "GET",
            "/v1/namespaces/streams/subscriptions/feed/deliveries",
            None,
        )
        .await;
    let mut joined = d1["items"].as_array().unwrap().clone();
    joined.extend(d2["items"].as_array().unwrap().iter().cloned());
    assert_eq!(&joined, all["items"].as_array().unwrap());
    assert!(joined.len() >= 7, "{all:#}");
    let times: Vec<&str> = joined.iter().map(|a| a["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let (_, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    let old = created["secret"].as_str().unwrap().to_string();
    let (status, r) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret?grace=1h",
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let new = r["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(r["previousSecretsExpire"].is_string());
    let (_, got) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert!(!got.to_string().contains(&new) && !got.to_string().contains(&old));
    let (_, t) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
    assert_eq!(t["statusCode"], 200, "{t}");
    // Both sign during the grace.
    rx.events(&[&old, &new]);

    let (_, r) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret?grace=0s",
            None,
        )
        .await;
    let newest = r["secret"].as_str().unwrap().to_string();
    assert_eq!(r["previousSecretsExpire"], Value::Null);
    let before = rx.count();
    let (_, t) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
    assert_eq!(t["statusCode"], 200, "{t}");
    let last = &rx.requests()[before];
    let sig = last.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(
        sig.split(' ').count(),
        1,
        "only the newest secret signs: {sig}"
    );
    standardwebhooks::Webhook::new(&newest)
        .unwrap()
        .verify(&last.body, &last.headers)
        .unwrap();
    assert!(
        standardwebhooks::Webhook::new(&old)
            .unwrap()
            .verify(&last.body, &last.headers)
            .is_err()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_in_the_directory_stay_the_users_and_stale_writes_conflict() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feed.yaml"),
        crate::delivery_local::subscription_yaml("from-file", &rx.url(), ""),
    )
    .unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let (status, got) = s
        .call(
            "GET",
            "/v1/namespaces/streams/subscriptions/from-file",
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let (status, p) = s
        .call(
            "PUT",
            "/v1/namespaces/streams/subscriptions/from-file",
            Some(subscription("from-file", "https://h.example/x")),
        )
        .await;
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("edit the file"),
        "{p}"
    );
    let (status, _) = s
        .call(
            "DELETE",
            "/v1/namespaces/streams/subscriptions/from-file",
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/from-file/rotate-secret",
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("from-file", &rx.url())),
        )
        .await;
    assert_eq!(status, 409);

    // An api-made one: PUT changes it (a new generation); a stale resourceVersion conflicts.
    let (_, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    let mut changed = created.clone();
    changed.as_object_mut().unwrap().remove("secret");
    changed["spec"]["timeout"] = json!("7s");
    let (status, replaced) = s
        .call(
            "PUT",
            "/v1/namespaces/streams/subscriptions/feed",
            Some(changed.clone()),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["spec"]["timeout"], "7s");
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_eq!(replaced["spec"]["secretRef"], created["spec"]["secretRef"]);
    // Files' and the api's subscriptions list together, in pages.
    let (_, p1) = s
        .call("GET", "/v1/namespaces/streams/subscriptions?limit=1", None)
        .await;
    assert_eq!(p1["items"][0]["metadata"]["name"], "feed");
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p2) = s
        .call(
            "GET",
            &format!("/v1/namespaces/streams/subscriptions?limit=1&continue={token}"),
            None,
        )
        .await;
    assert_eq!(p2["items"][0]["metadata"]["name"], "from-file");
    assert!(p2["metadata"].get("continue").is_none(), "{p2}");
    let mut renamed = changed.clone();
    renamed["metadata"]["name"] = json!("other");
    let (status, p) = s
        .call(
            "PUT",
            "/v1/namespaces/streams/subscriptions/feed",
            Some(renamed),
        )
        .await;
    assert_eq!(
        (status, p["causes"][0]["field"].as_str()),
        (422, Some("metadata.name")),
        "{p}"
    );
    let (status, p) = s
        .call(
            "PUT",
            "/v1/namespaces/streams/subscriptions/feed",
            Some(changed),
        )
        .await;
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("resourceVersion"),
        "{p}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_secrets_stop_signing_when_the_grace_ends() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start_with(dir.path(), &write_tokens(tokens_dir.path()), |c| {
        if let Some(api) = c.api.as_mut() {
            api.retire_every = Duration::from_millis(100);
        }
    })
    .await;
    let (_, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    let old = created["secret"].as_str().unwrap().to_string();
    let (_, r) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret?grace=1s",
            None,
        )
        .await;
    let new = r["secret"].as_str().unwrap().to_string();
    let (_, got) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert!(
        got["metadata"]["annotations"]["konsumer.dev/previous-secrets-expire"].is_string(),
        "{got}"
    );
    let signatures = || async {
        let before = rx.count();
        s.call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
        let last = rx.requests()[before].clone();
        last.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count()
    };
    assert_eq!(signatures().await, 2, "both sign during the grace");
    wait_until("the old secret to retire", || async {
        signatures().await == 1
    })
    .await;
    let before = rx.count();
    s.call(
        "POST",
        "/v1/namespaces/streams/subscriptions/feed/test",
        None,
    )
    .await;
    let last = rx.requests()[before].clone();
    standardwebhooks::Webhook::new(&new)
        .unwrap()
        .verify(&last.body, &last.headers)
        .unwrap();
    assert!(
        standardwebhooks::Webhook::new(&old)
            .unwrap()
            .verify(&last.body, &last.headers)
            .is_err()
    );
    let (_, got) = s
        .call("GET", "/v1/namespaces/streams/subscriptions/feed", None)
        .await;
    assert!(
        got["metadata"]["annotations"]
            .get("konsumer.dev/previous-secrets-expire")
            .is_none(),
        "{got}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_readme_session_and_never_logs_a_token_or_secret() {
    use crate::e2e_local::Binary;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/orders.yaml"),
        dir.path().join("orders.yaml"),
    )
    .unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tokens_dir.path());
    let konsumer = Binary::serve_local(
        dir.path(),
        &[
            "--api-addr",
            "127.0.0.1:0",
            "--api-token-file",
            tokens.to_str().unwrap(),
            "--egress-allow",
            "127.0.0.1/32",
            "--no-reconciler",
            "--log-level",
            "debug",
        ],
    );
    let addr = konsumer
        .logs()
        .iter()
        .find(|l| l["message"] == "HTTP API serving")
        .and_then(|l| l["addr"].as_str().map(String::from))
        .expect("the api logs where it serves");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    let s = ApiServer {
        running: None,
        client: client_trusting(&ca),
        base: format!("https://localhost:{port}"),
    };
    let (status, created) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(json!({"metadata": {"name": "feed"}, "spec": {"url": rx.url()}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    let (_, test) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/test",
            None,
        )
        .await;
    assert_eq!(test["statusCode"], 200, "{test}");
    let (_, deliveries) = s
        .call(
            "GET",
            "/v1/namespaces/streams/subscriptions/feed/deliveries?limit=2",
            None,
        )
        .await;
    assert!(!deliveries["items"].as_array().unwrap().is_empty());
    let (_, rotated) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret",
            None,
        )
        .await;
    let new = rotated["secret"].as_str().unwrap().to_string();
    rx.events(&[&secret]);
    let lines = konsumer.log_lines();
    assert_eq!(konsumer.terminate().code(), Some(0));
    let logs: String = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("ScalingSubscription created through the api"),
        "{logs}"
    );
    for (what, value) in [
        ("the first secret", &secret),
        ("the rotated secret", &new),
        ("the api token", &TOKEN.to_string()),
    ] {
        assert!(!logs.contains(value.as_str()), "{what} was logged");
        let bare = value.trim_start_matches("whsec_");
        assert!(!logs.contains(bare), "{what} was logged without its prefix");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_api_concurrency_limit_wait_then_get_429() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start_with(dir.path(), &write_tokens(tokens_dir.path()), |c| {
        if let Some(api) = c.api.as_mut() {
            api.max_concurrent = 1;
        }
    })
    .await;
    let (status, _) = s
        .call(
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(subscription("feed", &rx.url())),
        )
        .await;
    assert_eq!(status, 201);
    let s = std::sync::Arc::new(s);
    let before = rx.count();
    let slow = {
        let s = s.clone();
        tokio::spawn(async move {
            s.call(
                "POST",
                "/v1/namespaces/streams/subscriptions/feed/test",
                None,
            )
            .await
        })
    };
    // The receiver holds the ping 4 s (it counts a request once answered): a second
    // in, the one slot is taken.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.count(), before, "the ping is still in flight");
    let started = Instant::now();
    let (status, headers, p) = s.send("GET", "/v1/consumers", Some(TOKEN), None, "").await;
    assert_eq!(status, 429, "{p}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for a slot first"
    );
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = s.call("GET", "/v1/consumers", None).await;
    assert_eq!(status, 200, "the slot is free again");
}

/// A random JSON value of any type, `depth` levels at most.
fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(rng.f64() * 1e6),
        4 => {
            let pool = [
                "",
                "https://h.example/x",
                "http://127.0.0.1:1/",
                "../..",
                "5s",
                "9999h",
                "whsec_x",
                "dev.konsumer.subscription.ping.v1",
                "\u{0}",
                "é",
            ];
            json!(pool[rng.usize(..pool.len())])
        }
        5 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "url",
                "secretRef",
                "types",
                "timeout",
                "contentMode",
                "consumerSelector",
                "namespaceSelector",
                "caSecretRef",
                "name",
                "key",
                "matchLabels",
                "matchExpressions",
                "operator",
                "values",
                "bogus",
            ];
            Value::Object(
                (0..rng.usize(0..5))
                    .map(|_| {
                        (
                            keys[rng.usize(..keys.len())].to_string(),
                            random_value(rng, depth - 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_get_a_4xx_or_a_subscription_never_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = tempfile::tempdir().unwrap();
    let s = ApiServer::start(dir.path(), &write_tokens(tokens_dir.path())).await;
    let mut rng = fastrand::Rng::with_seed(9);
    let mut created = 0;
    for i in 0..300 {
        let body: Vec<u8> = match i % 4 {
            0 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
            1 => json!({"metadata": {"name": format!("s{i}")}, "spec": random_value(&mut rng, 4)})
                .to_string()
                .into_bytes(),
            2 => random_value(&mut rng, 5).to_string().into_bytes(),
            _ => format!(
                "{}{}",
                "[".repeat(rng.usize(100..400)),
                "]".repeat(rng.usize(0..400))
            )
            .into_bytes(),
        };
        for (method, path) in [
            ("POST", "/v1/namespaces/streams/subscriptions".to_string()),
            (
                "POST",
                "/v1/namespaces/streams/subscriptions/feed/redeliver".to_string(),
            ),
        ] {
            // send() fails the test on any 5xx and checks every answer against the document.
            let (status, _, _) = s
                .send(
                    method,
                    &path,
                    Some(TOKEN),
                    Some(body.clone()),
                    "application/json",
                )
                .await;
            assert!(
                (400..500).contains(&status) || status == 201,
                "{method} {path}: {status}"
            );
            if status == 201 {
                created += 1;
            }
        }
    }
    assert!(created < 300, "most random bodies are refused");
    s.stop().await;
}

#[test]
fn without_a_token_file_the_log_says_how_to_turn_the_api_on() {
    let dir = tempfile::tempdir().unwrap();
    let konsumer = crate::e2e_local::Binary::serve_local(dir.path(), &["--no-reconciler"]);
    let logs = konsumer.logs();
    let off = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("HTTP API is off"))
        })
        .unwrap_or_else(|| panic!("{logs:#?}"));
    assert!(
        off["message"]
            .as_str()
            .unwrap()
            .contains("--api-token-file FILE")
    );
    assert!(!logs.iter().any(|l| l["message"] == "HTTP API serving"));
    assert_eq!(konsumer.terminate().code(), Some(0));
}
