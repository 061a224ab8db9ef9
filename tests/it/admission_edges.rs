//! Bad and unusual requests: each gets a clear answer, never a panic or a 5xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use konsumer::admission::{self, Admission, AdmissionConfig};
use konsumer::api::ConsumerStatus;
use konsumer::server::{listener, tls};
use konsumer::store::{CachedConsumer, ConsumerIndex, Store, StoreError};
use konsumer::telemetry::Metrics;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn pod_review(labels: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "edge-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "streams",
            "operation": "CREATE",
            "object": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "consumer"}]}}
        }
    })
}

#[tokio::test]
async fn malformed_object_with_a_uid_is_denied_with_where_it_broke() {
    let s = LocalServer::orders().await;
    let mut review = pod_review(json!({"konsumerator.lwolf.org/consumer": "orders"}));
    review["request"]["object"]["spec"]["containers"][0]["env"] = json!("not-a-list");
    let (status, body) = s
        .post("/mutate/workloads", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["uid"], "edge-1");
    assert_eq!(body["response"]["allowed"], false);
    let m = body["response"]["status"]["message"].as_str().unwrap();
    assert!(m.contains("malformed AdmissionReview"), "{m}");
    assert!(m.contains("request.object.spec.containers[0].env"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn bodies_without_a_uid_get_a_clear_400() {
    let s = LocalServer::orders().await;
    for body in [
        b"{not json".to_vec(),
        b"{}".to_vec(),
        br#"{"request":{"kind":{"kind":"Pod"}}}"#.to_vec(),
        b"[]".to_vec(),
        Vec::new(),
    ] {
        let (status, answer) = s.post("/mutate/workloads", body.clone()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(answer["kind"], "Status");
        assert!(answer["message"].as_str().unwrap().len() > 10, "{answer}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_body_over_5_mib_is_refused_with_413_and_says_so() {
    let s = LocalServer::orders().await;
    let mut review = pod_review(json!({}));
    review["request"]["object"]["padding"] = json!("x".repeat(6 << 20));
    let (status, answer) = s
        .post("/mutate/workloads", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 413);
    assert!(
        answer["message"].as_str().unwrap().contains("5 MiB"),
        "{answer}"
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_kinds_unlabelled_objects_and_other_operations_are_allowed_untouched() {
    let s = LocalServer::orders().await;
    let mut sts = pod_review(json!({"konsumerator.lwolf.org/consumer": "orders"}));
    sts["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
    let (status, body) = s
        .post("/mutate/workloads", serde_json::to_vec(&sts).unwrap())
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
    assert!(warnings(&body)[0].contains("apps/v1 StatefulSet"), "{body}");

    let plain = pod_review(json!({"app": "x"}));
    let (_, body) = s
        .post("/mutate/workloads", serde_json::to_vec(&plain).unwrap())
        .await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    let mut delete = pod_review(json!({"konsumerator.lwolf.org/consumer": "orders"}));
    delete["request"]["operation"] = json!("DELETE");
    let (_, body) = s
        .post("/mutate/workloads", serde_json::to_vec(&delete).unwrap())
        .await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
    s.stop().await;
}

#[tokio::test]
async fn an_unusable_consumer_denies_its_workloads_with_the_reason() {
    let broken =
        orders_yaml().replace("numPartitionsPerInstance: 3", "numPartitionsPerInstance: 0");
    let s = LocalServer::start(&[("orders.yaml", &broken)]).await;
    let review = pod_review(json!({
        "konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"
    }));
    let (status, body) = s
        .post("/mutate/workloads", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    let m = body["response"]["status"]["message"].as_str().unwrap();
    assert!(m.contains("numPartitionsPerInstance is 0"), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn admin_endpoints_report_liveness_readiness_and_metrics() {
    let s = LocalServer::orders().await;
    let http = reqwest::Client::new();
    let live = http.get(format!("{}/livez", s.admin)).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("{}/readyz", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    s.post("/mutate/workloads", fixture_bytes("pod-create-indexed-job"))
        .await;
    s.post(
        "/mutate/workloads",
        fixture_bytes("deployment-create-unknown-consumer"),
    )
    .await;
    let metrics = http
        .get(format!("{}/metrics", s.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"konsumer_admission_requests_total{webhook="mutate_workloads",kind="Pod",operation="CREATE",outcome="patched"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"konsumer_admission_requests_total{webhook="mutate_workloads",kind="Deployment",operation="CREATE",outcome="denied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("konsumer_admission_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("konsumer_consumers 1"), "{metrics}");
    s.stop().await;
}

/// A store whose direct reads take forever.
struct SlowStore;

#[async_trait]
impl Store for SlowStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(None)
    }
    async fn write_status(&self, _: &str, _: &str, _: &ConsumerStatus) -> Result<(), StoreError> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "slow"
    }
}

#[tokio::test]
async fn a_cache_miss_is_bounded_by_the_apiserver_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(dir.path()).unwrap();
    let cert = tls::ReloadingCert::new(files).unwrap();
    let state = Admission::new(
        ConsumerIndex::new(),
        Arc::new(SlowStore),
        Arc::new(Metrics::default()),
        AdmissionConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let limits = listener::Limits {
        grace: Duration::from_secs(1),
        ..listener::Limits::webhook(16)
    };
    let server = tokio::spawn(listener::serve(
        listener,
        listener::Options::new(
            "webhook",
            Some(tls::server_config(cert, None).unwrap()),
            limits,
        ),
        admission::service(state),
        shutdown.clone(),
    ));
    let client = client_trusting(&std::fs::read(dir.path().join("ca.crt")).unwrap());
    let started = Instant::now();
    let resp = client
        .post(format!(
            "https://localhost:{port}/mutate/workloads?timeout=2s"
        ))
        .body(fixture_bytes("pod-create-indexed-job"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ms this request allows"),
        "{body}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "answered within the apiserver's 2s: {elapsed:?}"
    );
    shutdown.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn slow_bodies_hold_connections_not_decision_slots() {
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |config| {
        config.admission.max_concurrent = 2;
    })
    .await;
    // Four clients that send a first chunk of their body and then nothing.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let client = s.client.clone();
        let url = format!("{}/mutate/workloads?timeout=1s", s.base);
        stalled.push(tokio::spawn(async move {
            let first = http_body::Frame::data(bytes::Bytes::from_static(b"{"));
            let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(first)])
                .chain(futures::stream::pending());
            client
                .post(url)
                .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = s
        .post("/mutate/workloads", fixture_bytes("pod-create-indexed-job"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered while 4 bodies stall: {:?}",
        started.elapsed()
    );
    // The stalled ones get a clear timeout once their budget is spent.
    for s in stalled {
        assert_eq!(s.await.unwrap().unwrap(), 408);
    }
    s.stop().await;
}
