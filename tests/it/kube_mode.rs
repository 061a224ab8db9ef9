//! Kube mode against a mocked API server: the watch fills the cache, readiness
//! waits for the first sync, a cache miss is read once directly.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::server::{self, Backend, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::{Value, json};

use crate::fake_apiserver::FakeApiServer;
use crate::support::*;

fn consumer_json(name: &str, partitions: i64) -> Value {
    let mut c: Value = serde_saphyr::from_str(&orders_yaml()).unwrap();
    c["metadata"]["name"] = json!(name);
    c["spec"]["name"] = json!(name);
    c["spec"]["numPartitions"] = json!(partitions);
    c
}

struct KubeServer {
    running: server::Running,
    fake: Arc<FakeApiServer>,
    client: reqwest::Client,
    base: String,
    admin: String,
    _certs: tempfile::TempDir,
}

async fn start(hold_list: bool) -> KubeServer {
    let (client, fake) = FakeApiServer::start();
    fake.apply(consumer_json("orders", 10));
    if hold_list {
        fake.hold_lists();
    }
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube { namespace: None };
    config.tls = TlsSource::Files(files);
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(client, None, index.clone()));
    let running = server::start(config, index, Backend::kube(store))
        .await
        .unwrap();
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    KubeServer {
        base: format!("https://localhost:{}", running.webhook_addr.port()),
        admin: format!("http://{}", running.admin_addr),
        client: client_trusting(&ca),
        running,
        fake,
        _certs: certs,
    }
}

impl KubeServer {
    async fn review(&self, body: Vec<u8>) -> Value {
        let resp = self
            .client
            .post(format!("{}/mutate/workloads", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn ready(&self) -> u16 {
        reqwest::get(format!("{}/readyz", self.admin))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn direct_reads(&self, name: &str) -> usize {
        self.fake
            .seen()
            .iter()
            .filter(|s| s.method == Method::GET && s.path.ends_with(&format!("/consumers/{name}")))
            .count()
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn readiness_waits_for_the_first_list_and_the_watch_fills_the_cache() {
    let s = start(true).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        s.ready().await,
        503,
        "not ready before the Consumer list arrived"
    );
    s.fake.release_lists();
    for _ in 0..100 {
        if s.ready().await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.ready().await, 200);
    let list = s
        .fake
        .seen()
        .into_iter()
        .find(|r| r.query.contains("limit=500"))
        .unwrap();
    assert_eq!(
        list.path, "/apis/konsumerator.lwolf.org/v1/consumers",
        "all namespaces"
    );

    let review = s.review(fixture_bytes("pod-create-indexed-job")).await;
    assert_eq!(review["response"]["allowed"], true);
    let pod = patched_object(&fixture("pod-create-indexed-job"), &review);
    assert_eq!(
        env_value(&pod["spec"]["containers"][0], "KAFKA_PARTITIONS"),
        "3,4,5"
    );
    assert_eq!(s.direct_reads("orders"), 0, "answered from the watch cache");

    // A change arrives through the watch and the next answer follows it.
    s.fake.apply(consumer_json("orders", 12));
    let index = s.running.index.clone();
    eventually("the watch event", || {
        index
            .get("streams", "orders")
            .is_some_and(|c| c.consumer.spec.num_partitions == Some(12))
    })
    .await;
    let review = s.review(fixture_bytes("pod-create-indexed-job")).await;
    let pod = patched_object(&fixture("pod-create-indexed-job"), &review);
    assert_eq!(
        env_value(&pod["spec"]["containers"][0], "KONSUMERATOR_NUM_PARTITIONS"),
        "12"
    );
    s.running.stop().await;
}

#[tokio::test]
async fn a_cache_miss_is_read_once_from_the_api_server_then_cached() {
    let s = start(false).await;
    s.running.index.wait_synced().await;
    // `payments` was created a moment ago: the API server has it, the watch not yet.
    s.fake.insert_unwatched(consumer_json("payments", 6));
    let request = fixture("deployment-create-unknown-consumer");
    let review = s
        .review(fixture_bytes("deployment-create-unknown-consumer"))
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let dep = patched_object(&request, &review);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env_value(c, "KAFKA_PARTITIONS"), "0,1,2");
    assert_eq!(env_value(c, "KONSUMERATOR_NUM_INSTANCES"), "2");
    assert_eq!(s.direct_reads("payments"), 1);

    s.review(fixture_bytes("deployment-create-unknown-consumer"))
        .await;
    assert_eq!(
        s.direct_reads("payments"),
        1,
        "the second request is served from the cache"
    );
    assert!(
        s.running.index.get("streams", "payments").is_none(),
        "the index follows the watch only: a direct read cannot outlive a deletion there"
    );

    // Deleted: the watch's DELETED event also ends the direct read's answer.
    s.fake.delete("streams", "payments");
    let mut denied = false;
    for _ in 0..50 {
        let review = s
            .review(fixture_bytes("deployment-create-unknown-consumer"))
            .await;
        if review["response"]["allowed"] == false {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(denied, "a deleted Consumer is not served");
    assert!(
        s.direct_reads("payments") >= 2,
        "asked the API server again after the deletion"
    );
    s.running.stop().await;
}

#[tokio::test]
async fn a_consumer_the_api_server_does_not_have_is_denied_after_one_read() {
    let s = start(false).await;
    s.running.index.wait_synced().await;
    let review = s
        .review(fixture_bytes("deployment-create-unknown-consumer"))
        .await;
    assert_eq!(review["response"]["allowed"], false);
    let m = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("no Consumer \"payments\" in namespace \"streams\""),
        "{m}"
    );
    assert_eq!(s.direct_reads("payments"), 1);
    let read = s
        .fake
        .seen()
        .into_iter()
        .find(|r| r.path.ends_with("/payments"))
        .unwrap();
    assert_eq!(
        read.path,
        "/apis/konsumerator.lwolf.org/v1/namespaces/streams/consumers/payments"
    );
    s.running.stop().await;
}

#[tokio::test]
async fn status_is_written_with_server_side_apply_and_comes_back_through_the_watch() {
    use konsumer::api::{ConsumerStatus, ContainerResources, InstanceStatus};
    use konsumer::store::Store;
    let (client, fake) = FakeApiServer::start();
    fake.apply(consumer_json("orders", 10));
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(client, None, index.clone()));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let watch = store.spawn_watch(shutdown.clone());
    index.wait_synced().await;

    let mut cpu = konsumer::api::ResourceList::new();
    cpu.insert(
        "cpu".to_string(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1300m".into()),
    );
    let status = ConsumerStatus {
        expected: Some(4),
        instances: Some(vec![InstanceStatus {
            id: 1,
            partitions: vec![3, 4, 5],
            resources: vec![ContainerResources {
                container_name: "consumer".into(),
                requests: cpu.clone(),
                limits: cpu,
            }],
            ..InstanceStatus::default()
        }]),
        ..ConsumerStatus::default()
    };
    store
        .write_status("streams", "orders", &status)
        .await
        .unwrap();

    let patch = fake
        .seen()
        .into_iter()
        .find(|r| r.method == Method::PATCH)
        .unwrap();
    assert_eq!(
        patch.path,
        "/apis/konsumerator.lwolf.org/v1/namespaces/streams/consumers/orders/status"
    );
    assert!(
        patch.query.contains("fieldManager=konsumer"),
        "{}",
        patch.query
    );
    assert!(patch.query.contains("force=true"), "{}", patch.query);
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body: Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(body["apiVersion"], "konsumerator.lwolf.org/v1");
    assert_eq!(body["kind"], "Consumer");
    assert_eq!(
        body["status"]["instances"][0]["resources"][0]["requests"]["cpu"],
        "1300m"
    );
    assert!(body.get("spec").is_none(), "only the status is applied");

    // Every replica's webhook reads the recommendation from its own watch.
    eventually("the status to reach the cache", || {
        index.get("streams", "orders").is_some_and(|c| {
            c.settings.as_ref().is_ok_and(|s| {
                s.instance(1)
                    .is_some_and(|p| p.source == konsumer::inject::ResourceSource::Recommendation)
            })
        })
    })
    .await;
    assert!(
        store
            .write_status("streams", "ghost", &status)
            .await
            .is_err()
    );
    shutdown.cancel();
    watch.await.unwrap();
}

async fn start_reconciling(
    fake_consumers: &[Value],
    identity: &str,
) -> (KubeServer, Arc<FakeApiServer>) {
    start_reconciling_with(fake_consumers, identity, |_| {}).await
}

async fn start_reconciling_with(
    fake_consumers: &[Value],
    identity: &str,
    tweak: impl FnOnce(&mut ServeConfig),
) -> (KubeServer, Arc<FakeApiServer>) {
    use konsumer::reconciler::ReconcilerConfig;
    use konsumer::reconciler::leader::LeaseConfig;
    let (client, fake) = FakeApiServer::start();
    for c in fake_consumers {
        fake.apply(c.clone());
    }
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube { namespace: None };
    config.tls = TlsSource::Files(files);
    config.reconciler = Some(ReconcilerConfig {
        interval: Duration::from_millis(100),
        query_timeout: Duration::from_secs(1),
        concurrency: 4,
        gomemlimit_ratio: 0.8,
        ..ReconcilerConfig::default()
    });
    config.lease = LeaseConfig {
        name: "konsumer-leader".into(),
        namespace: "konsumer-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    };
    tweak(&mut config);
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(client, None, index.clone()));
    let running = server::start(config, index, Backend::kube(store))
        .await
        .unwrap();
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let server = KubeServer {
        base: format!("https://localhost:{}", running.webhook_addr.port()),
        admin: format!("http://{}", running.admin_addr),
        client: client_trusting(&ca),
        running,
        fake: fake.clone(),
        _certs: certs,
    };
    (server, fake)
}

/// This replica's leadership signal, once it leads.
async fn leading(s: &KubeServer) -> tokio::sync::watch::Receiver<bool> {
    let mut leader = s.running.is_leader.clone().unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader.wait_for(|l| *l))
        .await
        .expect("leading within 10 s")
        .unwrap();
    leader
}

fn unreachable_prometheus(mut c: Value) -> Value {
    // A closed loopback port: Prometheus is down.
    c["spec"]["autoscaler"]["prometheus"]["address"] = json!(["http://127.0.0.1:9"]);
    c
}

fn status_patches(fake: &FakeApiServer) -> usize {
    fake.seen()
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_holder_writes_status_and_stops_at_once_when_the_lease_is_lost() {
    // This test is about the lease and the status: the Consumer's Deployments
    // are not konsumer's to manage (orders-0 below is added once it runs).
    let mut orders = unreachable_prometheus(consumer_json("orders", 10));
    orders["metadata"]["annotations"] = json!({"konsumer.dev/manage-deployments": "false"});
    let (s, fake) = start_reconciling(&[orders], "replica-a").await;
    fake.add_deployment(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orders-0", "namespace": "streams", "resourceVersion": "5",
                     "labels": {"konsumerator.lwolf.org/consumer": "orders"}},
        "spec": {"selector": {"matchLabels": {"app": "orders"}},
                 "template": {"metadata": {"labels": {"app": "orders"}}, "spec": {"containers": [{"name": "consumer", "image": "x"}]}}}
    }));
    let mut leader = leading(&s).await;
    let lease = fake.lease("konsumer-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["metadata"]["namespace"], "konsumer-system");

    let fake2 = fake.clone();
    eventually("the status to be written", move || {
        fake2.object("streams", "orders").is_some_and(|o| {
            o["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "MetricsAvailable" && c["status"] == "False")
            }) && o["status"]["running"] == 1
        })
    })
    .await;
    let status = fake.object("streams", "orders").unwrap()["status"].clone();
    let gauge = r#"konsumer_instances{consumer="streams/orders",state="RUNNING"} 4"#;
    let text = s.running.metrics.encode();
    assert!(
        text.contains(gauge),
        "the leader publishes instance gauges: {text}"
    );
    let lists: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|r| {
            r.method == Method::GET
                && (r.path.ends_with("/deployments") || r.path.ends_with("/pods"))
        })
        .collect();
    assert!(!lists.is_empty());
    for l in &lists {
        assert!(
            l.query.contains("resourceVersion=0")
                && l.query.contains("resourceVersionMatch=NotOlderThan")
                && (l
                    .query
                    .contains("labelSelector=konsumerator.lwolf.org%2Fconsumer")
                    || l.query.contains("labelSelector=controller")),
            "served from the watch cache, label-selected: {}?{}",
            l.path,
            l.query
        );
    }
    assert_eq!(status["expected"], 4);
    assert_eq!(
        status["missing"], 3,
        "orders-0 exists, 1..3 do not: {status}"
    );
    assert!(
        status.get("instances").is_none(),
        "no recommendation before metrics were ever read: the webhook injects the fallback"
    );
    let metrics_cond = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "MetricsAvailable")
        .unwrap();
    assert_eq!(metrics_cond["reason"], "PrometheusUnavailable");
    assert_eq!(status["observedGeneration"], 1);
    let patch = fake
        .seen()
        .into_iter()
        .find(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
        .unwrap();
    assert!(
        patch.query.contains("fieldManager=konsumer") && patch.query.contains("force=true"),
        "{}",
        patch.query
    );

    // Another replica takes the lease: this one stops reconciling at its next renewal.
    fake.take_lease("konsumer-leader", "replica-b", 60);
    tokio::time::timeout(Duration::from_secs(10), leader.wait_for(|l| !*l))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = status_patches(&fake);
    // Make the status stale so that a leader would have to write it again.
    let mut changed = consumer_json("orders", 10);
    changed["spec"]["numPartitions"] = json!(12);
    fake.apply(unreachable_prometheus(changed));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status_patches(&fake),
        writes,
        "no status write after losing the lease"
    );
    let text = s.running.metrics.encode();
    assert!(
        !text.contains(r#"konsumer_instances{consumer="streams/orders""#),
        "a follower's gauges would be stale: {text}"
    );
    // Webhooks keep being served by every replica.
    let review = s.review(fixture_bytes("pod-create-indexed-job")).await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(
        fake.lease("konsumer-leader").unwrap()["spec"]["holderIdentity"],
        "replica-b"
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_stops_reconciling_and_leadership_returns_with_the_api_server() {
    let (s, fake) = start_reconciling(&[], "replica-a").await;
    let mut leader = leading(&s).await;
    // The renewal (every ~1 s with a 2 s lease) fails: this replica cannot know
    // whether it still holds the lease, so it stops reconciling before it expires.
    fake.fail_leases(true);
    let lost_at = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), leader.wait_for(|l| !*l))
        .await
        .expect("leadership dropped while the API server fails")
        .unwrap();
    assert!(
        lost_at.elapsed() < Duration::from_secs(2),
        "dropped within the lease duration: {:?}",
        lost_at.elapsed()
    );
    // It stays a follower while the outage lasts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!*leader.borrow(), "no leadership without the API server");
    fake.fail_leases(false);
    tokio::time::timeout(Duration::from_secs(10), leader.wait_for(|l| *l))
        .await
        .expect("leadership back once the lease can be renewed")
        .unwrap();
    assert_eq!(
        fake.lease("konsumer-leader").unwrap()["spec"]["holderIdentity"],
        "replica-a"
    );
    drop(leader);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_released_on_shutdown() {
    let (s, fake) = start_reconciling(&[], "replica-a").await;
    let leader = leading(&s).await;
    drop(leader);
    s.running.stop().await;
    let lease = fake.lease("konsumer-leader").unwrap();
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released: {lease}"
    );
}

#[tokio::test]
async fn the_lease_is_given_up_when_the_stop_begins_not_after_the_drain() {
    let (s, fake) = start_reconciling_with(&[], "replica-a", |c| {
        c.drain_delay = Duration::from_secs(3);
    })
    .await;
    let leader = leading(&s).await;
    drop(leader);
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(s.running.stop());
    let released = async {
        loop {
            let lease = fake.lease("konsumer-leader").unwrap();
            if lease["spec"].get("holderIdentity").is_none() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let took = tokio::time::timeout(Duration::from_secs(10), released)
        .await
        .expect("released");
    assert!(
        took < Duration::from_secs(2),
        "the lease waited {took:?} for the 3 s drain"
    );
    stopping.await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the drain still runs"
    );
}

#[tokio::test]
async fn transitions_become_kubernetes_events_on_the_consumer() {
    use konsumer::reconciler::TransitionSink;
    use konsumer::reconciler::events::KubeEvents;
    use konsumer::scaling::Transition;
    use konsumer::scaling::machine::{Direction, Event};
    let (client, fake) = FakeApiServer::start();
    fake.apply(consumer_json("orders", 10));
    let consumer: konsumer::api::Consumer =
        serde_json::from_value(fake.object("streams", "orders").unwrap()).unwrap();
    let sink = KubeEvents::new(client, Some("replica-a".into()));
    let t = Transition {
        instance: 1,
        partitions: vec![3, 4, 5],
        event: Event::Scaled(Direction::Up),
        from: konsumer::api::ScalingState::PendingScaleUp,
        to: konsumer::api::ScalingState::Running,
        previous: Vec::new(),
        new: Vec::new(),
        reason: "lagging for 5m0s".into(),
        observation: None,
        at: jiff::Timestamp::now(),
    };
    sink.publish(&consumer, &t).await;
    let events = fake.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["reason"], "ScaledUp");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["reportingController"], "konsumer");
    assert_eq!(e["regarding"]["kind"], "Consumer");
    assert_eq!(e["regarding"]["name"], "orders");
    assert_eq!(
        e["note"], "instance 1 (partitions 3,4,5) scaled up: lagging for 5m0s",
        "a sentence, not a state pair"
    );
    assert_eq!(e["regarding"]["fieldPath"], "status.instances{1}");
}
