//! Shared test plumbing: a real server on loopback with real TLS, a client that
//! trusts its CA, the captured fixtures, and patch application.

use std::path::{Path, PathBuf};

use base64::Engine;
use konsumer::config::ServeConfig;
use konsumer::server::{self, Running};
use konsumer::store::ConsumerIndex;
use serde_json::Value;

/// Serves `app` over plain HTTP on a loopback port (a stand-in for a server
/// konsumer talks to); its base URL.
pub async fn serve_http(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Runs the built `konsumer` binary with `args`, expects success, and parses its
/// standard output as JSON.
pub fn konsumer_json(args: &[&std::ffi::OsStr]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "konsumer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "konsumer {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixtures_dir()
        .join("admission")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap()
}

pub fn orders_yaml() -> String {
    std::fs::read_to_string(fixtures_dir().join("consumer-orders.yaml")).unwrap()
}

/// An HTTPS client that trusts exactly `ca_pem`.
pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    konsumer::server::tls::provider();
    let cert = reqwest::Certificate::from_pem(ca_pem).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .http1_only()
        .build()
        .unwrap()
}

/// konsumer in local mode, in this process, on loopback ports.
pub struct LocalServer {
    _dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub client: reqwest::Client,
    pub base: String,
    pub admin: String,
}

impl LocalServer {
    /// Starts on a temp directory holding `files` (name, content).
    pub async fn start(files: &[(&str, &str)]) -> Self {
        Self::start_with(files, |_| {}).await
    }

    pub async fn start_with(files: &[(&str, &str)], tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let mut config = ServeConfig::local_for_tests(dir.path().to_path_buf());
        tweak(&mut config);
        let index = ConsumerIndex::new();
        let backend = server::backend(&config, index.clone()).await.unwrap();
        let running = server::start(config, index, backend).await.unwrap();
        // Tests that bring their own certificate make their own clients.
        let client = match running.generated_ca.as_ref() {
            Some(ca) => client_trusting(&std::fs::read(ca).unwrap()),
            None => reqwest::Client::new(),
        };
        LocalServer {
            client,
            base: format!("https://localhost:{}", running.webhook_addr.port()),
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            _dir: dir,
        }
    }

    /// The local directory.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub async fn orders() -> Self {
        Self::start(&[("orders.yaml", &orders_yaml())]).await
    }

    /// POSTs `body` to `path`; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// The decoded JSON Patch of an AdmissionReview answer (empty when none).
pub fn patch_of(review: &Value) -> Vec<json_patch::PatchOperation> {
    let r = &review["response"];
    match r.get("patch").and_then(Value::as_str) {
        None => Vec::new(),
        Some(b64) => {
            assert_eq!(r["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}

/// The request's object with the answer's patch applied (by the json-patch crate).
pub fn patched_object(request: &Value, review: &Value) -> Value {
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch_of(review)).unwrap();
    object
}

pub fn warnings(review: &Value) -> Vec<String> {
    review["response"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `(name, value)` of every env entry of a container.
pub fn env(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect()
}

/// The single value of env `name`, failing when it is missing or duplicated.
pub fn env_value(container: &Value, name: &str) -> String {
    let found: Vec<_> = env(container)
        .into_iter()
        .filter(|(n, _)| n == name)
        .collect();
    assert_eq!(found.len(), 1, "env {name} in {container}");
    found[0].1["value"]
        .as_str()
        .unwrap_or_else(|| panic!("env {name} has no value: {container}"))
        .to_string()
}

pub fn has_env(container: &Value, name: &str) -> bool {
    env(container).iter().any(|(n, _)| n == name)
}

pub fn container<'v>(pod_spec: &'v Value, name: &str) -> &'v Value {
    pod_spec["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {pod_spec}"))
}
