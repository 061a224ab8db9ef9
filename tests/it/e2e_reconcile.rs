//! End to end with a real Prometheus: konsumer in local mode reads per-partition
//! lag and rates, fills the Consumer status, scales an instance up after the
//! pending period, and a Pod admitted afterwards gets the new resources. With
//! Prometheus gone, the condition says so and the recommendation stays.

use std::time::{Duration, Instant};

use konsumer::api::{ConsumerStatus, ScalingState};
use konsumer::reconciler::ReconcilerConfig;
use serde_json::{Value, json};

use konsumer::scaling_events::EventType;

use crate::delivery_local::{SECRET, config as delivery_config, subscription_yaml};
use crate::prometheus_harness::{Exporter, Prometheus};
use crate::receiver::Receiver;
use crate::support::*;

fn consumer_yaml(prometheus: &str) -> String {
    format!(
        r#"apiVersion: konsumerator.lwolf.org/v1
kind: Consumer
metadata: {{name: orders, namespace: streams}}
spec:
  numPartitions: 6
  numPartitionsPerInstance: 3
  name: orders
  namespace: streams
  partitionEnvKey: KAFKA_PARTITIONS
  autoscaler:
    mode: prometheus
    pendingScaleUpDuration: 2s
    pendingScaleDownDuration: 3s
    prometheus:
      address: ["{prometheus}"]
      minSyncPeriod: 1s
      tolerableLag: 5s
      criticalLag: 1h
      recoveryTime: 60s
      ratePerCore: 1000
      ramPerCore: 256Mi
      offset: {{query: 'sum(test_kafka_lag{{topic="orders"}}) by (partition)', partitionLabel: partition}}
      production: {{query: 'sum(test_kafka_production_rate{{topic="orders"}}) by (partition)', partitionLabel: partition}}
      consumption: {{query: 'sum(test_kafka_consumption_rate{{topic="orders"}}) by (partition)', partitionLabel: partition}}
  deploymentTemplate:
    template: {{spec: {{containers: [{{name: consumer}}, {{name: log-shipper}}]}}}}
  resourcePolicy:
    containerPolicies:
    - containerName: consumer
      minAllowed: {{cpu: 100m, memory: 128Mi}}
      maxAllowed: {{cpu: "4", memory: 2Gi}}
"#
    )
}

fn status(s: &LocalServer) -> ConsumerStatus {
    s.running
        .as_ref()
        .unwrap()
        .index
        .get("streams", "orders")
        .and_then(|c| c.consumer.status.clone())
        .unwrap_or_default()
}

async fn wait_until(
    what: &str,
    within: Duration,
    s: &LocalServer,
    check: impl Fn(&ConsumerStatus) -> bool,
) -> ConsumerStatus {
    let started = Instant::now();
    loop {
        let st = status(s);
        if check(&st) {
            return st;
        }
        assert!(
            started.elapsed() < within,
            "timed out waiting for {what}; status: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(
    st: &'a ConsumerStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    st.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn instance0_cpu(st: &ConsumerStatus) -> Option<String> {
    let inst = st.instances.as_ref()?.iter().find(|i| i.id == 0)?;
    let c = inst
        .resources
        .iter()
        .find(|r| r.container_name == "consumer")?;
    Some(c.requests.get("cpu")?.0.clone())
}

fn pod_review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "streams", "operation": "CREATE",
            "object": {"metadata": {"generateName": "orders-0-", "labels": {
                    "konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"}},
                "spec": {"containers": [{"name": "consumer"}, {"name": "log-shipper"}]}}
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_lag_scales_an_instance_up_and_new_pods_get_it() {
    let exporter = Exporter::start();
    let quiet: Vec<(u32, f64, f64)> = (0..6).map(|p| (p, 500.0, 0.0)).collect();
    exporter.set("orders", &quiet);
    let port = exporter.port;
    let mut prometheus = tokio::task::spawn_blocking(move || {
        let p = Prometheus::start(port);
        p.wait_for_series("test_kafka_lag", 6, Duration::from_secs(30));
        p
    })
    .await
    .unwrap();

    // The same Consumer once more, with a complete template: konsumer manages
    // its Deployments and rolls them to what the scale-up recommends.
    let managed = consumer_yaml(&prometheus.url)
        .replace("name: orders, namespace", "name: orders-managed, namespace")
        .replace("  name: orders\n", "  name: orders-managed\n")
        .replace(
            "template: {spec: {containers: [{name: consumer}, {name: log-shipper}]}}",
            "selector: {matchLabels: {app: orders}}\n    template: {metadata: {labels: {app: orders}}, spec: {containers: [{name: consumer, image: c:1}, {name: log-shipper, image: l:1}]}}",
        );
    // A subscriber of the scaling events, on loopback.
    let rx = Receiver::start().await;
    let s = LocalServer::start_with(
        &[
            ("orders.yaml", &consumer_yaml(&prometheus.url)),
            ("managed.yaml", &managed),
            ("feed.yaml", &subscription_yaml("feed", &rx.url(), "")),
        ],
        |config| {
            config.reconciler = Some(ReconcilerConfig {
                interval: Duration::from_millis(200),
                query_timeout: Duration::from_secs(2),
                concurrency: 4,
                gomemlimit_ratio: 0.8,
                ..ReconcilerConfig::default()
            });
            config.delivery = Some(delivery_config(true));
        },
    )
    .await;

    // The status fills in: metrics per partition, instances on the fallback.
    let st = wait_until("the first metrics", Duration::from_secs(20), &s, |st| {
        st.last_sync_state.as_ref().is_some_and(|m| m.len() == 6)
            && st.instances.as_ref().is_some_and(|i| i.len() == 2)
    })
    .await;
    assert_eq!(condition(&st, "MetricsAvailable").unwrap().status, "True");
    assert_eq!(
        st.last_sync_state
            .as_ref()
            .unwrap()
            .get(3)
            .unwrap()
            .production_rate,
        500
    );
    assert!(st.last_sync_time.is_some());
    assert_eq!(st.expected, Some(2));
    assert_eq!(
        instance0_cpu(&st).as_deref(),
        Some("100m"),
        "no lag: no scale up"
    );
    assert_eq!(
        st.instances.as_ref().unwrap()[0].state,
        ScalingState::Running
    );

    // 30 seconds of lag on every partition: 500/s × (1 + 30/60) × 3 = 2250 msg/s.
    let lagging: Vec<(u32, f64, f64)> = (0..6).map(|p| (p, 500.0, 15_000.0)).collect();
    exporter.set("orders", &lagging);
    let pending = wait_until("pending scale up", Duration::from_secs(15), &s, |st| {
        st.instances
            .as_ref()
            .is_some_and(|i| i[0].state == ScalingState::PendingScaleUp)
    })
    .await;
    assert_eq!(
        instance0_cpu(&pending).as_deref(),
        Some("100m"),
        "nothing recommended while pending"
    );
    let pending_since = pending.instances.as_ref().unwrap()[0]
        .since
        .clone()
        .unwrap()
        .0;
    let scaled = wait_until("the scale up", Duration::from_secs(15), &s, |st| {
        instance0_cpu(st).as_deref() == Some("2300m")
    })
    .await;
    let inst = &scaled.instances.as_ref().unwrap()[0];
    let scaled_at = inst.since.clone().unwrap().0;
    assert!(
        scaled_at.duration_since(pending_since) >= jiff::SignedDuration::from_secs(2),
        "the pending period (2s) was waited out: {pending_since} → {scaled_at}"
    );
    let consumer = inst
        .resources
        .iter()
        .find(|r| r.container_name == "consumer")
        .unwrap();
    assert_eq!(consumer.limits["cpu"].0, "3");
    assert_eq!(consumer.limits["memory"].0, "768Mi");
    assert_eq!(scaled.lagging, Some(2));

    // The managed twin's Deployment of instance 0 was rolled to it.
    let root = s.running.as_ref().unwrap().generated_ca.clone().unwrap();
    let manifest = root
        .ancestors()
        .nth(3)
        .unwrap()
        .join(".konsumer/deployments/streams/orders-managed-0.yaml");
    let rolled = {
        let started = Instant::now();
        loop {
            let d: Value = std::fs::read_to_string(&manifest)
                .ok()
                .and_then(|t| serde_saphyr::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let cpu = d
                .pointer("/spec/template/spec/containers/0/resources/requests/cpu")
                .cloned();
            if cpu == Some(json!("2300m")) {
                break d;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "not rolled: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(
        rolled["metadata"]["generation"], 2,
        "created, then rolled once"
    );
    assert_eq!(
        env_value(
            &rolled["spec"]["template"]["spec"]["containers"][0],
            "GOMAXPROCS"
        ),
        "3"
    );

    // The subscriber got the decision and its outcome for instance 0, signed, in
    // order, with the new resources.
    let got = rx
        .wait_for(
            "scale_pending then scaled",
            Duration::from_secs(15),
            &[SECRET],
            |e| {
                e.iter().any(|x| {
                    x.type_ == EventType::Scaled.as_str()
                        && x.source.ends_with("/consumers/orders")
                        && x.subject.as_deref() == Some("instances/0")
                })
            },
        )
        .await;
    let instance0: Vec<_> = got
        .iter()
        .filter(|e| {
            e.source.ends_with("/consumers/orders") && e.subject.as_deref() == Some("instances/0")
        })
        .collect();
    let kinds: Vec<&str> = instance0.iter().map(|e| e.type_.as_str()).collect();
    assert_eq!(
        kinds,
        [EventType::ScalePending.as_str(), EventType::Scaled.as_str()],
        "{got:#?}"
    );
    let (pending_event, scaled_event) = (instance0[0], instance0[1]);
    assert!(pending_event.sequence() < scaled_event.sequence());
    for e in [pending_event, scaled_event] {
        assert_eq!(e.data["direction"], "up");
        assert_eq!(e.data["partitions"], json!([0, 1, 2]));
        let to = e.data["resources"]["to"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["containerName"] == "consumer")
            .unwrap();
        assert_eq!(to["requests"]["cpu"], "2300m", "{e:?}");
        let from = e.data["resources"]["from"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["containerName"] == "consumer")
            .unwrap();
        assert_eq!(from["requests"]["cpu"], "100m");
        assert_eq!(e.data["metrics"]["messagesBehind"], 45_000);
        assert!((e.data["metrics"]["lagSeconds"].as_f64().unwrap() - 30.0).abs() < 1e-6);
    }
    assert_eq!(
        pending_event.data["state"],
        json!({"from": "RUNNING", "to": "PENDING_SCALE_UP"})
    );
    assert_eq!(scaled_event.data["state"]["to"], "RUNNING");
    let journal = status(&s).journal.unwrap_or_default();
    assert!(
        journal
            .iter()
            .any(|j| j.sequence == scaled_event.sequence()),
        "delivered from the journal written with the decision"
    );

    // A Pod of instance 0 created now gets the recommendation and its hints.
    let (code, review) = s.post("/mutate/workloads", pod_review()).await;
    assert_eq!(code, 200);
    let request: Value = serde_json::from_slice(&pod_review()).unwrap();
    let pod = patched_object(&request, &review);
    let c = container(&pod["spec"], "consumer");
    assert_eq!(c["resources"]["requests"]["cpu"], "2300m");
    assert_eq!(c["resources"]["limits"]["cpu"], "3");
    assert_eq!(env_value(c, "GOMAXPROCS"), "3");
    assert_eq!(env_value(c, "GOMEMLIMIT"), "614MiB");
    let shipper = container(&pod["spec"], "log-shipper");
    assert!(
        shipper.get("resources").is_none(),
        "no policy: the sidecar is left alone"
    );

    // `konsumer plan` reads the same live metrics: from a fresh status, instance 0
    // lags and its scale up is pending.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), consumer_yaml(&prometheus.url)).unwrap();
    let plans = konsumer_json(&[
        "plan".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "-f".as_ref(),
        file.path().as_os_str(),
    ]);
    let i0 = &plans[0]["instances"][0];
    assert_eq!(i0["state"], "PENDING_SCALE_UP", "{i0}");
    assert!(
        (i0["lagSeconds"].as_f64().unwrap() - 30.0).abs() < 1e-6,
        "{i0}"
    );
    assert_eq!(i0["pending"][0]["requests"]["cpu"], "2300m");
    assert!(
        plans[0]["metrics"]
            .as_str()
            .unwrap()
            .starts_with("live: 6 partitions"),
        "{}",
        plans[0]["metrics"]
    );

    // Prometheus goes away: the condition says so, the recommendation stays, and
    // no scale-down happens from missing data, even after the pending period.
    prometheus.stop();
    let down = wait_until(
        "MetricsAvailable=False",
        Duration::from_secs(15),
        &s,
        |st| condition(st, "MetricsAvailable").is_some_and(|c| c.status == "False"),
    )
    .await;
    let cond = condition(&down, "MetricsAvailable").unwrap();
    assert_eq!(cond.reason, "PrometheusUnavailable");
    rx.wait_for(
        "metrics_unavailable",
        Duration::from_secs(10),
        &[SECRET],
        |e| {
            e.iter()
                .any(|x| x.type_ == EventType::MetricsUnavailable.as_str() && x.subject.is_none())
        },
    )
    .await;
    assert!(
        cond.message
            .contains(&prometheus.url.replace("http://", "")),
        "{}",
        cond.message
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = status(&s);
    assert_eq!(instance0_cpu(&later).as_deref(), Some("2300m"));
    let state = later.instances.as_ref().unwrap()[0].state;
    assert!(
        matches!(state, ScalingState::Running | ScalingState::Saturated),
        "{state:?}"
    );
    s.stop().await;
}
