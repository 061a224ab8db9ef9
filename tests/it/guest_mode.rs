//! Guest mode (`konsumer serve --guest --namespace NS`) against the mocked API
//! server answering like tests/fixtures/apiserver/11-configmaps.json: Consumers
//! from annotated ConfigMaps, status in Konsumerator's annotations, Deployments
//! owned by the ConfigMap, bad specs reported on the ConfigMap, and nothing
//! asked of the API server outside the namespace.

use std::sync::Arc;
use std::time::Duration;

use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::reconciler::ReconcilerConfig;
use konsumer::server::{self, Backend, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::guest::GuestStore;
use serde_json::{Value, json};

use crate::fake_apiserver::FakeApiServer;
use crate::rbac::Rbac;
use crate::support::*;

struct Guest {
    running: server::Running,
    fake: Arc<FakeApiServer>,
    client: reqwest::Client,
    base: String,
    _certs: tempfile::TempDir,
}

async fn start(namespace: &str, configmaps: &[Value]) -> Guest {
    let (client, fake) = FakeApiServer::start();
    fake.enforce(Rbac::guest(namespace));
    for cm in configmaps {
        fake.apply_configmap(cm.clone());
    }
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube {
        namespace: Some(namespace.into()),
    };
    config.guest = true;
    config.tls = TlsSource::Files(files);
    config.reconciler = Some(ReconcilerConfig {
        interval: Duration::from_millis(100),
        query_timeout: Duration::from_millis(300),
        ..ReconcilerConfig::default()
    });
    config.lease.namespace = namespace.into();
    config.lease.duration = Duration::from_secs(2);
    config.lease.grace = Duration::from_secs(1);
    let index = ConsumerIndex::new();
    let store = Arc::new(GuestStore::new(client, namespace.into(), index.clone()));
    let running = server::start(config, index, Backend::guest(store))
        .await
        .unwrap();
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    Guest {
        base: format!("https://localhost:{}", running.webhook_addr.port()),
        client: client_trusting(&ca),
        running,
        fake,
        _certs: certs,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A guest-mode Consumer: `spec` as YAML under `consumer.yaml`.
fn configmap(namespace: &str, name: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {"konsumerator.lwolf.org/managed": "true"}},
        "data": {"consumer.yaml": serde_saphyr::to_string(spec).unwrap()}
    })
}

fn annotation(cm: &Value, key: &str) -> Option<String> {
    cm["metadata"]["annotations"][key]
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_readme_guest_example_runs_with_namespaced_requests_only() {
    // The README's guest ConfigMap, with the README's own ConsumerSpec in it.
    let seed: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(fixtures_dir().join("consumer-seed-example.yaml")).unwrap(),
    )
    .unwrap();
    let g = start(
        "default",
        &[configmap("default", "consumer-sample", &seed["spec"])],
    )
    .await;
    let fake = g.fake.clone();
    eventually("100 Deployments", || fake.deployment_names().len() == 100).await;
    let d = fake.deployment("default", "test-consumer-7").unwrap();
    assert_eq!(
        d["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "consumer-sample",
                "uid": "uid-cm-consumer-sample", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(d["metadata"]["labels"]["controller"], "consumer-sample");
    eventually("the status annotations", || {
        fake.configmap("default", "consumer-sample")
            .is_some_and(|cm| {
                annotation(&cm, "konsumerator.lwolf.org/status.expected").as_deref() == Some("100")
                    && annotation(&cm, "konsumerator.lwolf.org/status.missing").as_deref()
                        == Some("0")
            })
    })
    .await;
    // The status settles: no write while nothing changes.
    let status_writes = || {
        fake.seen()
            .iter()
            .filter(|r| {
                r.method == http::Method::PATCH && r.path.ends_with("/configmaps/consumer-sample")
            })
            .count()
    };
    let mut settled = status_writes();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = status_writes();
        if now == settled {
            break;
        }
        settled = now;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status_writes(),
        settled,
        "the status round-trips through the annotations unchanged"
    );
    let cm = fake.configmap("default", "consumer-sample").unwrap();
    for key in ["running", "paused", "lagging", "outdated"] {
        assert!(
            annotation(&cm, &format!("konsumerator.lwolf.org/status.{key}")).is_some(),
            "{key}"
        );
    }
    assert!(
        annotation(&cm, "konsumerator.lwolf.org/status.last-sync-time").is_none(),
        "never synced"
    );
    let own: Value =
        serde_json::from_str(&annotation(&cm, "konsumer.dev/status").unwrap()).unwrap();
    let metrics = own["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "MetricsAvailable")
        .unwrap();
    assert_eq!(metrics["status"], "False");
    assert_eq!(
        cm["data"]["consumer.yaml"],
        configmap("default", "x", &seed["spec"])["data"]["consumer.yaml"],
        "the spec is the user's"
    );

    // A Role in the namespace is all it needs: every request stays in it.
    for r in fake.seen() {
        let namespaced = [
            "/api/v1/namespaces/default/",
            "/apis/apps/v1/namespaces/default/",
            "/apis/events.k8s.io/v1/namespaces/default/",
            "/apis/coordination.k8s.io/v1/namespaces/default/",
        ]
        .iter()
        .any(|p| r.path.starts_with(p));
        assert!(
            namespaced,
            "{} {}?{} leaves the namespace",
            r.method, r.path, r.query
        );
    }
    // Deleting the ConfigMap takes its Deployments (the garbage collector).
    fake.delete_configmap("default", "consumer-sample");
    eventually("the Deployments gone", || {
        fake.deployment_names().is_empty()
    })
    .await;
    g.running.stop().await;
}

fn orders_spec() -> Value {
    let c: Value = serde_saphyr::from_str(&orders_yaml()).unwrap();
    let mut spec = c["spec"].clone();
    spec["autoscaler"]["prometheus"]["address"] = json!(["http://127.0.0.1:9"]);
    spec
}

impl Guest {
    async fn partitions_for_instance_1(&self) -> (bool, String) {
        let review: Value = self
            .client
            .post(format!("{}/mutate/workloads", self.base))
            .body(fixture_bytes("pod-create-indexed-job"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let allowed = review["response"]["allowed"] == true;
        if !allowed {
            return (false, review["response"]["status"]["message"].to_string());
        }
        let pod = patched_object(&fixture("pod-create-indexed-job"), &review);
        (
            true,
            env_value(&pod["spec"]["containers"][0], "KONSUMERATOR_NUM_PARTITIONS"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_serve_guest_consumers_and_a_bad_spec_is_reported_on_its_configmap() {
    let mut broken = orders_spec();
    broken["autoscaler"]["prometheus"]["ratePerCore"] = json!(0);
    let g = start(
        "streams",
        &[
            configmap("streams", "orders", &orders_spec()),
            configmap("streams", "payments", &broken),
        ],
    )
    .await;
    let fake = g.fake.clone();
    g.running.index.wait_synced().await;
    // The workload webhook works the same for a ConfigMap's Consumer.
    assert_eq!(
        g.partitions_for_instance_1().await,
        (true, "10".to_string())
    );

    // The bad one is said on its ConfigMap, once, and stops nothing else.
    eventually("the problem note", || {
        fake.configmap("streams", "payments")
            .and_then(|cm| annotation(&cm, "konsumer.dev/spec-problems"))
            .is_some()
    })
    .await;
    let note = annotation(
        &fake.configmap("streams", "payments").unwrap(),
        "konsumer.dev/spec-problems",
    )
    .unwrap();
    assert!(
        note.starts_with("konsumer cannot use this ConsumerSpec: data.consumer.yaml: spec.autoscaler.prometheus.ratePerCore"),
        "{note}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warnings: Vec<Value> = fake
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "InvalidConsumerSpec")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["regarding"]["kind"], "ConfigMap");
    assert_eq!(warnings[0]["regarding"]["name"], "payments");
    assert!(
        !fake
            .deployment_names()
            .iter()
            .any(|n| n.starts_with("payments"))
    );
    assert!(
        fake.deployment_names().iter().any(|n| n == "orders-0"),
        "orders is managed meanwhile"
    );

    // Fixed: the note goes and the Consumer is served.
    let mut fixed = orders_spec();
    fixed["name"] = json!("payments");
    fake.apply_configmap(configmap("streams", "payments", &fixed));
    eventually("the note removed", || {
        fake.configmap("streams", "payments")
            .is_some_and(|cm| annotation(&cm, "konsumer.dev/spec-problems").is_none())
    })
    .await;
    eventually("payments managed", || {
        fake.deployment_names().iter().any(|n| n == "payments-0")
    })
    .await;

    // An invalid edit keeps the last good spec in force.
    let mut edited = orders_spec();
    edited["numPartitions"] = json!(0);
    fake.apply_configmap(configmap("streams", "orders", &edited));
    eventually("the problem on orders", || {
        fake.configmap("streams", "orders")
            .and_then(|cm| annotation(&cm, "konsumer.dev/spec-problems"))
            .is_some()
    })
    .await;
    assert_eq!(
        g.partitions_for_instance_1().await,
        (true, "10".to_string())
    );
    g.running.stop().await;
}
