//! The largest Consumer validation accepts (10,000 partitions over 1,000
//! instances, two scaled containers), end to end with a real Prometheus: in
//! local mode through the built binary, within a memory budget, and in kube mode
//! against a mocked apiserver that refuses what etcd would refuse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use konsumer::api::ConsumerStatus;
use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::reconciler::ReconcilerConfig;
use konsumer::reconciler::leader::LeaseConfig;
use konsumer::server::{self, Backend, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::{Value, json};

use crate::e2e_local::Binary;
use crate::fake_apiserver::{FakeApiServer, LARGEST_STORED_OBJECT};
use crate::prometheus_harness::{Exporter, Prometheus};
use crate::support::*;

const PARTITIONS: u32 = 10_000;

/// Peak resident memory allowed to konsumer serving the largest Consumer
/// (local mode, reconciling every second). Measured ~81 MiB in a debug build;
/// see BENCHMARKS.md.
const MEMORY_BUDGET_KIB: u64 = 200 << 10;

fn largest_yaml(prometheus: &str) -> String {
    format!(
        r#"apiVersion: konsumerator.lwolf.org/v1
kind: Consumer
metadata: {{name: big, namespace: streams}}
spec:
  numPartitions: {PARTITIONS}
  numPartitionsPerInstance: 10
  name: big
  namespace: streams
  autoscaler:
    mode: prometheus
    pendingScaleUpDuration: 1s
    prometheus:
      address: ["{prometheus}"]
      minSyncPeriod: 2s
      tolerableLag: 5s
      recoveryTime: 60s
      ratePerCore: 1000
      ramPerCore: 256Mi
      offset: {{query: 'sum(test_kafka_lag{{topic="big"}}) by (partition)', partitionLabel: partition}}
      production: {{query: 'sum(test_kafka_production_rate{{topic="big"}}) by (partition)', partitionLabel: partition}}
      consumption: {{query: 'sum(test_kafka_consumption_rate{{topic="big"}}) by (partition)', partitionLabel: partition}}
  deploymentTemplate:
    template: {{spec: {{containers: [{{name: consumer}}, {{name: log-shipper}}]}}}}
  resourcePolicy:
    containerPolicies:
    - containerName: consumer
      minAllowed: {{cpu: 100m, memory: 128Mi}}
      maxAllowed: {{cpu: "4", memory: 2Gi}}
    - containerName: log-shipper
      minAllowed: {{cpu: 50m, memory: 64Mi}}
      maxAllowed: {{cpu: 200m, memory: 128Mi}}
"#
    )
}

/// A Pod of the last instance; its consumer container's cpu request.
async fn last_instance_cpu(client: &reqwest::Client, port: u16) -> Option<String> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "big-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "streams", "operation": "CREATE",
            "object": {"metadata": {"generateName": "big-999-", "labels": {
                    "konsumerator.lwolf.org/consumer": "big", "konsumerator.lwolf.org/instance": "999"}},
                "spec": {"containers": [{"name": "consumer"}, {"name": "log-shipper"}]}}
        }
    });
    let resp = client
        .post(format!("https://localhost:{port}/mutate/workloads"))
        .json(&review)
        .send()
        .await
        .ok()?;
    let answer: Value = resp.json().await.ok()?;
    let pod = patched_object(&review, &answer);
    Some(
        container(&pod["spec"], "consumer")["resources"]["requests"]["cpu"]
            .as_str()?
            .to_string(),
    )
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn histogram_mean(metrics: &str, name: &str) -> f64 {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    value("sum") / value("count").max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_allowed_consumer_round_trips_in_local_and_kube_mode() {
    let exporter = Exporter::start();
    let lagging: Vec<(u32, f64, f64)> = (0..PARTITIONS).map(|p| (p, 900.0, 50_000.0)).collect();
    exporter.set("big", &lagging);
    let prometheus = Prometheus::start(exporter.port);
    prometheus.wait_for_series(
        "test_kafka_lag{topic=\"big\"}",
        PARTITIONS as usize,
        Duration::from_secs(60),
    );
    let yaml = largest_yaml(&prometheus.url);

    // Local mode: the built binary.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), &yaml).unwrap();
    let konsumer = Binary::serve_local(dir.path(), &["--reconcile-interval", "1s"]);
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    let client = client_trusting(&ca);
    let started = Instant::now();
    // The fallback is 100m; the lag makes the recommendation the 4-core maximum.
    while last_instance_cpu(&client, konsumer.webhook.port())
        .await
        .as_deref()
        != Some("4")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recommendation for instance 999 within 60s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more passes at full size.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let peak = vm_hwm_kib(konsumer.pid());
    let metrics = reqwest::get(format!("http://{}/metrics", konsumer.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pass = histogram_mean(&metrics, "konsumer_reconcile_duration_seconds");
    assert!(konsumer.terminate().success());
    let db_bytes = std::fs::metadata(dir.path().join(".konsumer/state.redb"))
        .unwrap()
        .len();
    let index = ConsumerIndex::new();
    let store = konsumer::store::local::LocalStore::open(dir.path(), index.clone()).unwrap();
    store.rescan().await.unwrap();
    let status: ConsumerStatus = index
        .get("streams", "big")
        .and_then(|c| c.consumer.status.clone())
        .expect("the status was stored");
    drop(store);
    let status_bytes = serde_json::to_vec(&status).unwrap().len();
    eprintln!(
        "largest Consumer, local mode: peak RSS {} MiB, reconcile {:.1} ms per Consumer, status {status_bytes} bytes, state.redb {db_bytes} bytes",
        peak / 1024,
        pass * 1000.0
    );
    assert_eq!(status.instances.as_ref().map(Vec::len), Some(1000));
    assert!(status.last_sync_state.is_none());
    assert!(
        peak < MEMORY_BUDGET_KIB,
        "peak RSS {peak} KiB over the {MEMORY_BUDGET_KIB} KiB budget"
    );
    assert!(status_bytes < 1 << 20, "{status_bytes}");

    // Kube mode: the same Consumer through a mocked apiserver with etcd's limit.
    let (kube, fake) = FakeApiServer::start();
    let mut object: Value = serde_saphyr::from_str(&yaml).unwrap();
    object["metadata"]["namespace"] = json!("streams");
    fake.apply(object);
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube { namespace: None };
    config.tls = TlsSource::Files(files);
    config.reconciler = Some(ReconcilerConfig {
        interval: Duration::from_secs(1),
        query_timeout: Duration::from_secs(5),
        concurrency: 4,
        gomemlimit_ratio: 0.8,
        ..ReconcilerConfig::default()
    });
    config.lease = LeaseConfig {
        name: "konsumer-leader".into(),
        namespace: "konsumer-system".into(),
        identity: "largest".into(),
        duration: Duration::from_secs(15),
        grace: Duration::from_secs(5),
    };
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(kube, None, index.clone()));
    let running = server::start(config, index, Backend::kube(store))
        .await
        .unwrap();
    let started = Instant::now();
    let stored = loop {
        let object = fake.object("streams", "big").unwrap();
        let scaled = object["status"]["instances"].as_array().is_some_and(|i| {
            i.len() == 1000
                && i.iter().all(|i| {
                    i["resources"][0]["requests"]["cpu"] == "4"
                        || i["resources"][1]["requests"]["cpu"] == "4"
                })
        });
        if scaled {
            break object;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kube mode: no full status within 60s ({} refused as too large)",
            fake.too_large_refusals()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    running.stop().await;
    let object_bytes = serde_json::to_vec(&stored).unwrap().len();
    eprintln!("largest Consumer, kube mode: stored object {object_bytes} bytes");
    assert_eq!(fake.too_large_refusals(), 0);
    assert!(
        object_bytes + (256 << 10) < LARGEST_STORED_OBJECT,
        "{object_bytes} bytes leave no room for the journal"
    );
}

#[tokio::test]
async fn the_mocked_apiserver_refuses_a_status_etcd_would_refuse() {
    use konsumer::store::Store;
    let (kube, fake) = FakeApiServer::start();
    let mut object: Value = serde_saphyr::from_str(&largest_yaml("http://127.0.0.1:9")).unwrap();
    object["metadata"]["namespace"] = json!("streams");
    fake.apply(object);
    let store = KubeStore::new(kube, None, ConsumerIndex::new());
    let huge = ConsumerStatus {
        instances: Some(
            (0..7000)
                .map(|id| konsumer::api::InstanceStatus {
                    id,
                    partitions: vec![id; 40],
                    ..Default::default()
                })
                .collect(),
        ),
        ..ConsumerStatus::default()
    };
    let err = store
        .write_status("streams", "big", &huge)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("etcdserver: request is too large"), "{err}");
    assert_eq!(fake.too_large_refusals(), 1);
    assert!(
        fake.object("streams", "big")
            .unwrap()
            .get("status")
            .is_none()
    );
}
