//! Managed Deployments in kube mode, against the mocked API server (answering
//! like the recorded exchanges in tests/fixtures/apiserver/09-*): created with
//! Konsumerator's names, labels, annotations and owner; added and removed with
//! `numPartitions`; rolled one at a time to a new recommendation; Konsumerator's
//! own Deployments adopted without a write; paused and opted-out ones left alone.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::reconciler::ReconcilerConfig;
use konsumer::reconciler::leader::LeaseConfig;
use konsumer::server::{self, Backend, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::{Value, json};

use crate::fake_apiserver::{FakeApiServer, Seen};
use crate::support::*;

fn orders(partitions: i64) -> Value {
    let mut c: Value = serde_saphyr::from_str(&orders_yaml()).unwrap();
    c["spec"]["numPartitions"] = json!(partitions);
    // Prometheus is down: recommendations come from the status alone.
    c["spec"]["autoscaler"]["prometheus"]["address"] = json!(["http://127.0.0.1:9"]);
    c
}

struct Managed {
    running: server::Running,
    fake: Arc<FakeApiServer>,
    _certs: tempfile::TempDir,
}

async fn start(consumers: &[Value], setup: impl FnOnce(&FakeApiServer)) -> Managed {
    start_with(consumers, setup, |_| {}).await
}

async fn start_with(
    consumers: &[Value],
    setup: impl FnOnce(&FakeApiServer),
    tweak: impl FnOnce(&mut ReconcilerConfig),
) -> Managed {
    let (client, fake) = FakeApiServer::start();
    for c in consumers {
        fake.apply(c.clone());
    }
    setup(&fake);
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube { namespace: None };
    config.tls = TlsSource::Files(files);
    let mut reconciler = ReconcilerConfig {
        interval: Duration::from_millis(100),
        query_timeout: Duration::from_millis(300),
        concurrency: 4,
        ..ReconcilerConfig::default()
    };
    tweak(&mut reconciler);
    config.reconciler = Some(reconciler);
    config.lease = LeaseConfig {
        name: "konsumer-leader".into(),
        namespace: "konsumer-system".into(),
        identity: "replica-a".into(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    };
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(client, None, index.clone()));
    let running = server::start(config, index, Backend::kube(store))
        .await
        .unwrap();
    Managed {
        running,
        fake,
        _certs: certs,
    }
}

/// Up to 30 s: a pass takes milliseconds here, but under a loaded CI machine
/// the 2 s lease and the 100 ms passes can slip by seconds; a stall still fails.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Writes to Deployments (not reads).
fn writes(fake: &FakeApiServer) -> Vec<Seen> {
    fake.seen()
        .into_iter()
        .filter(|r| r.path.contains("/deployments/") && r.method != Method::GET)
        .collect()
}

/// Patches of a Deployment, answered or not.
fn patches_of(fake: &FakeApiServer, name: &str) -> usize {
    patches(fake, name).count()
}

/// Patches of a Deployment that took effect (answered 2xx): a request is seen
/// when it arrives, before the apiserver stores it, so a test that acts on a
/// write's effect (a rollout) waits for this.
fn applied_patches_of(fake: &FakeApiServer, name: &str) -> usize {
    patches(fake, name)
        .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
        .count()
}

fn patches(fake: &FakeApiServer, name: &str) -> impl Iterator<Item = Seen> {
    let path = format!("/deployments/{name}");
    writes(fake)
        .into_iter()
        .filter(move |r| r.method == Method::PATCH && r.path.ends_with(&path))
}

fn status(fake: &FakeApiServer) -> Value {
    fake.object("streams", "orders").unwrap()["status"].clone()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

fn env_of(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

fn settle(fake: &FakeApiServer) {
    for name in fake.deployment_names() {
        fake.roll_out("streams", &name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_a_template_gets_konsumerators_deployments_added_and_removed_with_its_partitions()
 {
    let m = start(&[orders(10)], |_| {}).await;
    let fake = m.fake.clone();
    eventually("four Deployments", || fake.deployment_names().len() == 4).await;
    assert_eq!(
        fake.deployment_names(),
        ["orders-0", "orders-1", "orders-2", "orders-3"]
    );
    let d = fake.deployment("streams", "orders-2").unwrap();
    let meta = &d["metadata"];
    assert_eq!(
        meta["labels"],
        json!({"app": "orders", "controller": "orders", "partitions": "6-7"})
    );
    assert_eq!(
        meta["annotations"]["konsumerator.lwolf.org/partition"],
        "6,7"
    );
    assert_eq!(
        meta["annotations"]["konsumerator.lwolf.org/consumer-id"],
        "2"
    );
    assert_eq!(
        meta["ownerReferences"],
        json!([{"apiVersion": "konsumerator.lwolf.org/v1", "kind": "Consumer", "name": "orders",
                "uid": "uid-orders", "controller": true, "blockOwnerDeletion": true}])
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/orders-consumer:1.4.2");
    assert_eq!(env_of(c, "KAFKA_PARTITIONS").as_deref(), Some("6,7"));
    assert_eq!(env_of(c, "KONSUMERATOR_INSTANCE").as_deref(), Some("2"));
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "orders"}})
    );
    // Created by server-side apply (a POST would leave konsumer's own Update
    // entry to conflict with its later applies), after a read that found no
    // Deployment of that name.
    let create = writes(&fake)
        .into_iter()
        .find(|r| r.path.ends_with("/orders-2"))
        .unwrap();
    assert_eq!(create.method, Method::PATCH);
    assert_eq!(
        create.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        create.query.contains("fieldManager=konsumer") && create.query.contains("force=true"),
        "{}",
        create.query
    );
    assert!(!writes(&fake).iter().any(|r| r.method == Method::POST));
    assert!(fake.seen().iter().any(|r| r.method == Method::GET
        && r.path == "/apis/apps/v1/namespaces/streams/deployments/orders-2"));

    // Not rolled out yet: nothing runs.
    eventually("the counters", || status(&fake)["unavailable"] == 4).await;
    assert_eq!(
        (
            status(&fake)["running"].clone(),
            status(&fake)["missing"].clone()
        ),
        (json!(0), json!(0))
    );
    settle(&fake);
    eventually("four running", || status(&fake)["running"] == 4).await;
    let managed = condition(&status(&fake), "DeploymentsManaged");
    assert_eq!(
        (managed["status"].clone(), managed["reason"].clone()),
        (json!("True"), json!("Managed"))
    );

    // Nothing to do: no write while nothing differs.
    let before = writes(&fake).len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        writes(&fake).len(),
        before,
        "{:?}",
        writes(&fake)
            .iter()
            .skip(before)
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );

    // 13 partitions at 3 per instance: a fifth instance, and every instance's
    // KONSUMERATOR_NUM_PARTITIONS changes (rolled one at a time).
    fake.apply(orders(13));
    eventually("orders-4", || {
        fake.deployment("streams", "orders-4").is_some()
    })
    .await;
    // 7 partitions: 3 instances; orders-3 and orders-4 go (a 200 Status back).
    fake.apply(orders(7));
    eventually("the extra instances to go", || {
        fake.deployment_names().len() == 3
    })
    .await;
    let deletes: Vec<String> = writes(&fake)
        .into_iter()
        .filter(|r| r.method == Method::DELETE)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        deletes,
        [
            "/apis/apps/v1/namespaces/streams/deployments/orders-3",
            "/apis/apps/v1/namespaces/streams/deployments/orders-4"
        ]
    );
    // The Event of a delete is posted after the DELETE itself: wait for it.
    let deleted_event = |e: &Value| {
        e["reason"] == "DeploymentDeleted"
            && e["note"]
                .as_str()
                .unwrap()
                .contains("orders-4: instance 4 is beyond the 3 instances")
    };
    eventually("the Event of orders-4's delete", || {
        fake.events().iter().any(deleted_event)
    })
    .await;
    let events = fake.events();
    assert!(events.iter().any(|e| e["reason"] == "DeploymentCreated"
        && e["note"].as_str().unwrap().starts_with("created Deployment orders-4 for instance 4 (partitions 11,12) with consumer cpu 100m, memory 128Mi")), "{events:?}");

    // The Consumer goes: the garbage collector takes its Deployments (the owner
    // reference), and konsumer makes no new ones.
    fake.delete("streams", "orders");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fake.deployment_names().is_empty());
    m.running.stop().await;
}

/// Instance 1 and 2 get a recommendation of 2 CPUs in the status (as a scale-up
/// transition leaves it): the others keep theirs.
fn recommend_two_cpus(fake: &FakeApiServer) {
    let mut c = fake.object("streams", "orders").unwrap();
    let mut instances = c["status"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (id, partitions) in [(1, json!([3, 4, 5])), (2, json!([6, 7]))] {
        instances.retain(|i| i["id"] != id);
        instances.push(json!({"id": id, "partitions": partitions, "state": "RUNNING", "since": "2026-11-22T12:00:00Z",
            "resources": [
                {"containerName": "consumer", "requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
                {"containerName": "log-shipper", "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "50m", "memory": "64Mi"}}]}));
    }
    c["status"]["instances"] = json!(instances);
    fake.set_status("streams", "orders", c["status"].clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_recommendation_rolls_one_deployment_at_a_time_the_next_once_the_first_is_available()
{
    let m = start(&[orders(10)], |_| {}).await;
    let fake = m.fake.clone();
    eventually("four Deployments", || fake.deployment_names().len() == 4).await;
    settle(&fake);
    eventually("four running", || status(&fake)["running"] == 4).await;

    recommend_two_cpus(&fake);
    eventually("the first rollout", || {
        applied_patches_of(&fake, "orders-1") == 2
    })
    .await;
    let d1 = fake.deployment("streams", "orders-1").unwrap();
    let c = &d1["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["resources"]["requests"]["cpu"], "2");
    assert_eq!(
        env_of(c, "GOMAXPROCS").as_deref(),
        Some("2"),
        "the hints follow the resources"
    );
    assert_eq!(d1["metadata"]["generation"], 2);
    // orders-1 is not available again yet: orders-2 waits, pass after pass.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(patches_of(&fake, "orders-2"), 1, "only its creation");
    assert_eq!(patches_of(&fake, "orders-1"), 2, "rolled once");
    eventually("outdated", || status(&fake)["outdated"] == 1).await;

    fake.roll_out("streams", "orders-1");
    eventually("the second rollout", || {
        applied_patches_of(&fake, "orders-2") == 2
    })
    .await;
    fake.roll_out("streams", "orders-2");
    eventually("nothing outdated", || status(&fake)["outdated"] == 0).await;
    assert_eq!(patches_of(&fake, "orders-0"), 1);
    assert_eq!(patches_of(&fake, "orders-3"), 1);
    let rolled: Vec<String> = fake
        .events()
        .iter()
        .filter(|e| e["reason"] == "DeploymentRolled")
        .map(|e| e["note"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rolled.len(), 2, "{rolled:?}");
    assert!(
        rolled[0].starts_with("rolled Deployment orders-1 of instance 1 (partitions 3,4,5) to consumer cpu 100m → 2, memory 128Mi → 1Gi"),
        "{}",
        rolled[0]
    );
    let text = m.running.metrics.encode();
    assert!(
        text.contains(r#"konsumer_deployment_writes_total{change="rollout",outcome="ok"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"konsumer_scaling_events_journaled_total{event_type="applied"} 2"#),
        "{text}"
    );
    // Each rollout is one `applied` event for subscribers, journaled in the
    // status write made before its Deployment write.
    let journal = status(&fake)["journal"].as_array().cloned().unwrap();
    let applied: Vec<&Value> = journal
        .iter()
        .filter(|e| e["type"] == "dev.konsumer.instance.applied.v1")
        .collect();
    assert_eq!(applied.len(), 2, "{applied:#?}");
    assert_eq!(applied[0]["instance"], 1);
    assert_eq!(applied[0]["data"]["deployment"], "orders-1");
    assert_eq!(applied[0]["data"]["partitions"], json!([3, 4, 5]));
    assert_eq!(
        applied[0]["data"]["resources"]["to"][0]["requests"]["cpu"],
        "2"
    );
    assert_eq!(
        applied[0]["data"]["resources"]["from"][0]["requests"]["cpu"],
        "100m"
    );
    assert_eq!(applied[1]["instance"], 2);
    assert!(applied[1]["sequence"].as_i64() > applied[0]["sequence"].as_i64());
    let seen = fake.seen();
    let journaled = seen
        .iter()
        .position(|r| {
            r.path.ends_with("/consumers/orders/status")
                && String::from_utf8_lossy(&r.body).contains("instance.applied")
        })
        .unwrap();
    let rolled = seen
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == Method::PATCH && r.path.ends_with("/deployments/orders-1"))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert!(
        journaled < rolled,
        "write-ahead: the event before the rollout"
    );
    m.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_pace_holds_rollouts_of_every_consumer() {
    let mut payments = orders(10);
    payments["metadata"]["name"] = json!("payments");
    payments["spec"]["name"] = json!("payments");
    // One rollout a minute over both Consumers: the second waits.
    let m = start_with(
        &[orders(10), payments],
        |_| {},
        |c| c.max_rollouts_per_minute = 1,
    )
    .await;
    let fake = m.fake.clone();
    eventually("eight Deployments", || fake.deployment_names().len() == 8).await;
    settle(&fake);
    eventually("running", || status(&fake)["running"] == 4).await;
    for name in ["orders", "payments"] {
        let mut c = fake.object("streams", name).unwrap();
        c["status"]["instances"] = json!([{"id": 0, "partitions": [0, 1, 2], "state": "RUNNING",
            "resources": [{"containerName": "consumer", "requests": {"cpu": "3"}, "limits": {"cpu": "3"}}]}]);
        fake.set_status("streams", name, c["status"].clone());
    }
    eventually("one rollout", || {
        patches_of(&fake, "orders-0") + patches_of(&fake, "payments-0") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        patches_of(&fake, "orders-0") + patches_of(&fake, "payments-0"),
        3,
        "the second waits for the minute"
    );
    assert!(
        m.running
            .metrics
            .encode()
            .contains("konsumer_rollouts_deferred_total")
    );
    m.running.stop().await;
}

/// A Deployment as Konsumerator made it for instance `id` of `orders` (10
/// partitions, 3 per instance): its labels and annotations, the template
/// verbatim plus its env (GOMEMLIMIT in MB labelled MiB) and its estimate.
fn konsumerator_made(id: u32, partitions: &[u32]) -> Value {
    let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
    let range = if partitions.len() < 3 {
        list.join("-")
    } else {
        format!("{}-{}", partitions[0], partitions[partitions.len() - 1])
    };
    let env = |gomaxprocs: &str, gomemlimit: &str| {
        json!([
            {"name": "KAFKA_PARTITIONS", "value": list.join(",")},
            {"name": "GOMAXPROCS", "value": gomaxprocs},
            {"name": "GOMEMLIMIT", "value": gomemlimit},
            {"name": "KONSUMERATOR_INSTANCE", "value": id.to_string()},
            {"name": "KONSUMERATOR_NUM_PARTITIONS", "value": "10"},
            {"name": "KONSUMERATOR_NUM_INSTANCES", "value": "4"}
        ])
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": format!("orders-{id}"), "namespace": "streams",
            "labels": {"app": "orders", "controller": "orders", "partitions": range},
            "annotations": {
                "konsumerator.lwolf.org/partition": list.join(","),
                "konsumerator.lwolf.org/consumer-id": id.to_string(),
                "konsumerator.lwolf.org/generation": "-6917529027641081856",
                "konsumerator.lwolf.org/scaling-status": "RUNNING",
                "konsumerator.lwolf.org/scaling-status-change": "2026-11-01T10:00:00Z"
            },
            "ownerReferences": [{"apiVersion": "konsumerator.lwolf.org/v1", "kind": "Consumer", "name": "orders",
                                 "uid": "uid-orders", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders"}},
                "spec": {"containers": [
                    {"name": "consumer", "image": "registry.example.com/orders-consumer:1.4.2",
                     "env": env("2", "860MiB"),
                     "resources": {"requests": {"cpu": "1300m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}},
                    {"name": "log-shipper", "image": "fluent/fluent-bit:3.1",
                     "env": env("1", "108MiB"),
                     "resources": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}
                ]}
            }
        }
    })
}

fn konsumerator_fleet(fake: &FakeApiServer) {
    for (id, partitions) in [
        (0, vec![0, 1, 2]),
        (1, vec![3, 4, 5]),
        (2, vec![6, 7]),
        (3, vec![8, 9]),
    ] {
        fake.create_deployment_as(konsumerator_made(id, &partitions), "manager");
        fake.roll_out("streams", &format!("orders-{id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn konsumerators_deployments_are_adopted_without_a_write_and_keep_what_they_run_with() {
    let m = start(&[orders(10)], konsumerator_fleet).await;
    let fake = m.fake.clone();
    eventually("the status", || status(&fake)["running"] == 4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        writes(&fake).is_empty(),
        "adopted as they are: {:?}",
        writes(&fake)
            .iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    let status_writes = || {
        fake.seen()
            .iter()
            .filter(|r| r.method == Method::PATCH && r.path.ends_with("/status"))
            .count()
    };
    let settled = status_writes();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status_writes(),
        settled,
        "a quiet fleet writes no status either"
    );
    let st = status(&fake);
    assert_eq!(
        (
            st["expected"].clone(),
            st["missing"].clone(),
            st["outdated"].clone()
        ),
        (json!(4), json!(0), json!(0))
    );
    // The recommendation starts from what runs, not from minAllowed.
    let i2 = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == 2)
        .unwrap()
        .clone();
    assert_eq!(i2["resources"][0]["requests"]["cpu"], "1300m");
    assert_eq!(i2["resources"][1]["requests"]["cpu"], "200m");
    // New Pods of unmanaged workloads get the same.
    let index = m.running.index.clone();
    eventually("the seeded status in the cache", || {
        index.get("streams", "orders").is_some_and(|c| {
            c.settings.as_ref().is_ok_and(|s| {
                s.instance(2)
                    .is_some_and(|p| p.source == konsumer::inject::ResourceSource::Recommendation)
            })
        })
    })
    .await;

    // A user's own label and toleration on orders-3, then a new image in the
    // template: konsumer takes over Konsumerator's fields by force, and leaves
    // the user's alone.
    fake.edit_deployment("streams", "orders-3", |d| {
        d["metadata"]["labels"]["team"] = json!("streams");
        d["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "dedicated", "operator": "Exists"}]);
    });
    let mut newer = orders(10);
    newer["spec"]["deploymentTemplate"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/orders-consumer:1.5.0");
    fake.apply(newer);
    for name in ["orders-0", "orders-1", "orders-2", "orders-3"] {
        eventually(name, || applied_patches_of(&fake, name) == 1).await;
        assert_eq!(
            writes(&fake)
                .iter()
                .filter(|r| r.method == Method::PATCH)
                .count(),
            ["orders-0", "orders-1", "orders-2", "orders-3"]
                .iter()
                .position(|n| *n == name)
                .unwrap()
                + 1,
            "one at a time"
        );
        fake.roll_out("streams", name);
    }
    let d3 = fake.deployment("streams", "orders-3").unwrap();
    let c = &d3["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example.com/orders-consumer:1.5.0");
    assert_eq!(
        c["resources"]["requests"]["cpu"], "1300m",
        "kept what it ran with"
    );
    assert_eq!(
        env_of(c, "GOMEMLIMIT").as_deref(),
        Some("819MiB"),
        "konsumer's GOMEMLIMIT with the rollout"
    );
    assert_eq!(d3["metadata"]["labels"]["team"], "streams");
    assert_eq!(
        d3["spec"]["template"]["spec"]["tolerations"][0]["key"],
        "dedicated"
    );
    let managers: Vec<String> = d3["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        managers.contains(&"konsumer/Apply".to_string()),
        "{managers:?}"
    );
    m.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployments_are_left_alone_and_counted_paused() {
    let m = start(&[orders(10)], |fake| {
        konsumerator_fleet(fake);
        fake.edit_deployment("streams", "orders-1", |d| {
            d["metadata"]["annotations"]["konsumerator.lwolf.org/disable-autoscaler"] =
                json!("true");
        });
    })
    .await;
    let fake = m.fake.clone();
    eventually("the status", || status(&fake)["running"] == 3).await;
    fake.scale("streams", "orders-2", 0);
    fake.roll_out("streams", "orders-2");
    eventually("two paused", || status(&fake)["paused"] == 2).await;
    assert_eq!(status(&fake)["running"], 2);

    let mut newer = orders(10);
    newer["spec"]["deploymentTemplate"]["template"]["spec"]["containers"][0]["image"] =
        json!("x:2");
    fake.apply(newer);
    for name in ["orders-0", "orders-3"] {
        eventually(name, || applied_patches_of(&fake, name) == 1).await;
        fake.roll_out("streams", name);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        patches_of(&fake, "orders-1"),
        0,
        "paused with the annotation"
    );
    assert_eq!(patches_of(&fake, "orders-2"), 0, "scaled to 0 by kubectl");
    assert_eq!(
        fake.deployment("streams", "orders-2").unwrap()["spec"]["replicas"],
        0
    );
    let managed = condition(&status(&fake), "DeploymentsManaged");
    let message = managed["message"].as_str().unwrap();
    assert!(
        message.contains("orders-1 is paused (konsumerator.lwolf.org/disable-autoscaler)"),
        "{message}"
    );
    assert!(
        message.contains("orders-2 is paused (scaled to 0 replicas by someone else)"),
        "{message}"
    );
    m.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_consumer_gets_nothing_and_a_stranger_of_the_same_name_is_not_taken_over() {
    let mut opted_out = orders(10);
    opted_out["metadata"]["annotations"] = json!({"konsumer.dev/manage-deployments": "false"});
    let mut payments = orders(4);
    payments["metadata"]["name"] = json!("payments");
    payments["spec"]["name"] = json!("payments");
    payments["spec"]["numPartitionsPerInstance"] = json!(1);
    let m = start(&[opted_out, payments], |fake| {
        // Someone's Deployment that happens to have an instance's name.
        fake.add_deployment(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "payments-2", "namespace": "streams", "labels": {"app": "legacy"}},
            "spec": {"selector": {"matchLabels": {"app": "legacy"}}, "template": {"metadata": {"labels": {"app": "legacy"}},
                     "spec": {"containers": [{"name": "legacy", "image": "legacy:1"}]}}}}));
    })
    .await;
    let fake = m.fake.clone();
    eventually("payments' Deployments", || {
        fake.deployment_names().len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.deployment_names(),
        ["payments-0", "payments-1", "payments-2", "payments-3"]
    );
    assert_eq!(patches_of(&fake, "payments-2"), 0, "not taken over");
    assert_eq!(
        fake.deployment("streams", "payments-2").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "legacy:1"
    );
    let st = status(&fake);
    let managed = condition(&st, "DeploymentsManaged");
    assert_eq!(
        (managed["status"].clone(), managed["reason"].clone()),
        (json!("False"), json!("OptedOut"))
    );
    let warnings: Vec<Value> = fake
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "DeploymentNotOwned")
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {warnings:?}");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .contains("payments-2 exists and is not this Consumer's (no controller)")
    );
    assert_eq!(warnings[0]["type"], "Warning");
    m.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_going_away_is_one_warning_event_and_a_column() {
    let m = start(&[orders(10)], |_| {}).await;
    let fake = m.fake.clone();
    eventually("the warning", || {
        fake.events()
            .iter()
            .any(|e| e["reason"] == "MetricsUnavailable")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let warnings: Vec<Value> = fake
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "MetricsUnavailable")
        .collect();
    assert_eq!(warnings.len(), 1, "once, when it starts");
    assert_eq!(warnings[0]["type"], "Warning");
    assert_eq!(warnings[0]["regarding"]["kind"], "Consumer");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("konsumer cannot read this Consumer's metrics (PrometheusUnavailable: ")
    );
    m.running.stop().await;
}

fn recording(name: &str) -> Value {
    let path = fixtures_dir().join("apiserver").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_mocked_api_server_answers_server_side_apply_as_recorded() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    let (client, fake) = FakeApiServer::start();
    let create = recording("09-deployments-create-owned.json");
    let ssa = recording("09-deployments-ssa-resources.json");
    // The recorded create was a POST by `konsumer`: an Update entry.
    let mut created = create["exchanges"][0]["request"]["body"].clone();
    created["metadata"]["namespace"] = json!("streams");
    fake.create_deployment_as(created, "konsumer");
    let api: Api<Deployment> = Api::namespaced(client, "streams");
    let body = ssa["exchanges"][0]["request"]["body"].clone();
    let recorded = &ssa["exchanges"][0]["response"]["body"];
    let Err(kube::Error::Api(e)) = api
        .patch(
            "orders-0",
            &PatchParams::apply("konsumer"),
            &Patch::Apply(&body),
        )
        .await
    else {
        panic!("an apply without force against konsumer's Update must conflict");
    };
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(recorded["code"], 409);
    // What the fake answered, field for field as recorded.
    let existing = fake.deployment("streams", "orders-0").unwrap();
    let Err(conflicts) =
        crate::fake_apiserver::ssa::apply(Some(&existing), &body, "konsumer", false)
    else {
        panic!("no conflict")
    };
    let answered = crate::fake_apiserver::ssa::conflict_status(&conflicts);
    assert_eq!(answered["details"]["causes"], recorded["details"]["causes"]);
    assert_eq!(answered["message"], recorded["message"]);
    let d = api
        .patch(
            "orders-0",
            &PatchParams::apply("konsumer").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    let recorded = &ssa["exchanges"][1]["response"]["body"];
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(
        serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().containers[0].resources)
            .unwrap(),
        recorded["spec"]["template"]["spec"]["containers"][0]["resources"]
    );
    // Delete answers a Status (kube-rs reads it as such), then 404.
    let gone = api
        .delete("orders-0", &DeleteParams::background())
        .await
        .unwrap();
    assert!(gone.is_right(), "a Status, not the object");
    let again = api.delete("orders-0", &DeleteParams::background()).await;
    assert!(matches!(again, Err(kube::Error::Api(e)) if e.code == 404));
}
