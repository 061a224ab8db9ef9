//! Kube mode against the mocked API server: subscriptions from the watch, the
//! signing Secret read by name, cursors and conditions applied to the status
//! subresource; leadership moves mid-stream and the new leader resumes from the
//! cursor in the subscription's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::reconciler::leader::LeaseConfig;
use konsumer::scaling_events::EventType;
use konsumer::scaling_events::journal::{self, NewEvent};
use konsumer::server::{self, Backend, Running, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::{Value, json};

use crate::delivery_local::{SECRET, config};
use crate::fake_apiserver::FakeApiServer;
use crate::receiver::{Receiver, acknowledged_by_consumer};
use crate::support::*;

const EVENTS: usize = 30;

fn consumer_with_journal() -> Value {
    let mut c: Value = serde_saphyr::from_str(&orders_yaml()).unwrap();
    let mut j = Vec::new();
    let events = (0..EVENTS)
        .map(|i| NewEvent {
            type_: EventType::Scaled,
            instance: Some(1),
            data: json!({"instance": 1, "direction": "down", "reason": format!("event {i}")}),
        })
        .collect();
    journal::append(&mut j, events, jiff::Timestamp::now());
    c["status"] = json!({"journal": j});
    c
}

fn subscription(url: &str) -> Value {
    json!({
        "apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscription",
        "metadata": {"name": "feed", "namespace": "streams"},
        "spec": {"url": url, "secretRef": {"name": "feed-secret", "key": "secret"}},
        // It has been following orders already: nothing acknowledged yet.
        "status": {"cursors": {"streams/orders": 0}}
    })
}

async fn replica(fake: &Arc<FakeApiServer>, identity: &str, certs: &std::path::Path) -> Running {
    let (files, _) = tls::ensure_local(certs).unwrap();
    let mut cfg = ServeConfig::local_for_tests(certs.to_path_buf());
    cfg.mode = Mode::Kube { namespace: None };
    cfg.tls = TlsSource::Files(files);
    cfg.delivery = Some(config(true));
    cfg.lease = LeaseConfig {
        name: "konsumer-leader".into(),
        namespace: "konsumer-system".into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    };
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(fake.another_client(), None, index.clone()));
    server::start(cfg, index, Backend::kube(store))
        .await
        .unwrap()
}

async fn wait_leading(r: &Running, within: Duration) {
    let mut leader = r.is_leader.clone().unwrap();
    tokio::time::timeout(within, leader.wait_for(|l| *l))
        .await
        .expect("leading in time")
        .unwrap();
}

fn cursor(fake: &FakeApiServer) -> Option<i64> {
    fake.subscription("streams", "feed")?
        .pointer("/status/cursors/streams~1orders")?
        .as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_delivery_from_the_cursor_in_the_subscription_status() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(40));
    let (_, fake) = FakeApiServer::start();
    // What the operator does for a team's namespace (docs/operations.md).
    fake.bind_in_namespace("streams", "konsumer-secret-reader");
    fake.apply(consumer_with_journal());
    fake.add_secret("streams", "feed-secret", "secret", SECRET);
    fake.apply_subscription(subscription(&rx.url()));
    let certs_a = tempfile::tempdir().unwrap();
    let a = replica(&fake, "replica-a", certs_a.path()).await;
    wait_leading(&a, Duration::from_secs(10)).await;

    // Mid-stream, and once A has written a cursor: the lease moves away from A.
    let started = Instant::now();
    while cursor(&fake).is_none_or(|c| c < 5) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A wrote no cursor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.take_lease("konsumer-leader", "someone-else", 2);
    let mut leader = a.is_leader.clone().unwrap();
    tokio::time::timeout(Duration::from_secs(5), leader.wait_for(|l| !*l))
        .await
        .expect("A steps down")
        .unwrap();
    // A goes away (it no longer leads, so it writes nothing on its way out).
    a.stop().await;
    let stored = cursor(&fake).unwrap();
    assert!(stored < EVENTS as i64, "moved mid-stream (cursor {stored})");
    let after_a = rx.count();

    let certs_b = tempfile::tempdir().unwrap();
    let b = replica(&fake, "replica-b", certs_b.path()).await;
    wait_leading(&b, Duration::from_secs(15)).await;
    let got = rx
        .wait_for("every event", Duration::from_secs(30), &[SECRET], |e| {
            acknowledged_by_consumer(e)
                .get("streams/orders")
                .is_some_and(|l| l.len() == EVENTS)
        })
        .await;
    let seqs: Vec<i64> = acknowledged_by_consumer(&got)["streams/orders"]
        .iter()
        .map(|e| e.sequence())
        .collect();
    assert_eq!(seqs, (1..=EVENTS as i64).collect::<Vec<_>>());
    let b_first = got[after_a..].first().expect("B delivered").sequence();
    // B started from a cursor A had applied to the status (A's last write may land
    // a moment after it stepped down: it was in flight), not from scratch.
    let applied: Vec<i64> = fake
        .seen()
        .iter()
        .filter(|r| {
            r.method == Method::PATCH && r.path.ends_with("/scalingsubscriptions/feed/status")
        })
        .filter_map(|r| {
            serde_json::from_slice::<Value>(&r.body).ok()?["status"]["cursors"]["streams/orders"]
                .as_i64()
        })
        .collect();
    assert!(
        b_first > stored,
        "B resumed after A's stored cursor ({stored}), at {b_first}"
    );
    assert!(
        applied.contains(&(b_first - 1)),
        "B resumed right after a cursor A applied: {b_first} vs {applied:?}"
    );

    let start_b = Instant::now();
    while cursor(&fake) != Some(EVENTS as i64) {
        assert!(
            start_b.elapsed() < Duration::from_secs(5),
            "final cursor not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sub = fake.subscription("streams", "feed").unwrap();
    let ready = sub["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    let seen = fake.seen();
    let applies: Vec<_> = seen
        .iter()
        .filter(|r| {
            r.method == Method::PATCH && r.path.ends_with("/scalingsubscriptions/feed/status")
        })
        .collect();
    assert!(!applies.is_empty());
    for r in &applies {
        assert!(r.query.contains("fieldManager=konsumer"), "{}", r.query);
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }
    assert!(
        seen.iter().any(|r| r.method == Method::GET
            && r.path == "/api/v1/namespaces/streams/secrets/feed-secret"),
        "the Secret is read by name"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_failing_condition_and_a_warning_event() {
    let (_, fake) = FakeApiServer::start();
    // What the operator does for a team's namespace (docs/operations.md).
    fake.bind_in_namespace("streams", "konsumer-secret-reader");
    fake.apply(consumer_with_journal());
    fake.apply_subscription(subscription("https://hooks.example.com/x"));
    let certs = tempfile::tempdir().unwrap();
    let a = replica(&fake, "replica-a", certs.path()).await;
    wait_leading(&a, Duration::from_secs(10)).await;
    let started = Instant::now();
    loop {
        let sub = fake.subscription("streams", "feed").unwrap();
        let failing = sub["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Failing").cloned());
        if let Some(f) = failing.filter(|f| f["status"] == "True") {
            assert_eq!(f["reason"], "SecretMissing");
            assert!(
                f["message"]
                    .as_str()
                    .unwrap()
                    .contains("streams/feed-secret"),
                "{f}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no Failing condition: {sub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warning = fake
        .events()
        .into_iter()
        .find(|e| e["reason"] == "SecretMissing")
        .expect("a Warning Event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["kind"], "ScalingSubscription");
    assert_eq!(warning["regarding"]["name"], "feed");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_selector_is_honoured_only_for_subscriptions_in_konsumers_namespace() {
    let platform_rx = Receiver::start().await;
    let team_rx = Receiver::start().await;
    let (_, fake) = FakeApiServer::start();
    fake.bind_in_namespace("konsumer-system", "konsumer-secret-reader");
    fake.bind_in_namespace("streams", "konsumer-secret-reader");
    fake.add_namespace("streams", json!({"tier": "data"}));
    fake.add_namespace("billing", json!({"tier": "data"}));
    fake.add_namespace("web", json!({"tier": "frontend"}));
    for ns in ["streams", "billing", "web"] {
        let mut c = consumer_with_journal();
        c["metadata"]["namespace"] = json!(ns);
        fake.apply(c);
    }
    let follower = |namespace: &str, url: &str| {
        json!({
            "apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscription",
            "metadata": {"name": "everything-data", "namespace": namespace},
            "spec": {"url": url, "secretRef": {"name": "feed-secret", "key": "secret"},
                     "namespaceSelector": {"matchLabels": {"tier": "data"}}}
        })
    };
    fake.add_secret("konsumer-system", "feed-secret", "secret", SECRET);
    fake.add_secret("streams", "feed-secret", "secret", SECRET);
    fake.apply_subscription(follower("konsumer-system", &platform_rx.url()));
    // The same spec in a team's namespace: not allowed to look past it.
    fake.apply_subscription(follower("streams", &team_rx.url()));
    let certs = tempfile::tempdir().unwrap();
    let a = replica(&fake, "replica-a", certs.path()).await;
    wait_leading(&a, Duration::from_secs(10)).await;

    // The platform feed follows the data tier (its own namespace has no Consumer).
    let got = platform_rx
        .wait_for(
            "a snapshot of each data-tier Consumer",
            Duration::from_secs(15),
            &[SECRET],
            |e| acknowledged_by_consumer(e).len() == 2,
        )
        .await;
    let consumers: Vec<String> = acknowledged_by_consumer(&got).into_keys().collect();
    assert_eq!(consumers, ["billing/orders", "streams/orders"]);
    assert!(
        fake.seen()
            .iter()
            .any(|r| r.method == Method::GET && r.path == "/api/v1/namespaces/web"),
        "the namespace's labels were read"
    );
    // The team's copy is refused, saying why, and sends nothing.
    let started = Instant::now();
    let failing = loop {
        let sub = fake.subscription("streams", "everything-data").unwrap();
        if let Some(f) = sub["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Failing").cloned())
            .filter(|f| f["status"] == "True")
        {
            break f;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the team's subscription is not Failing: {sub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failing["reason"], "InvalidSpec");
    assert!(
        failing["message"]
            .as_str()
            .unwrap()
            .contains("only ScalingSubscriptions in konsumer's own namespace (konsumer-system)"),
        "{failing}"
    );
    assert_eq!(team_rx.count(), 0);
    // Nothing more arrives for the frontend tier later either.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        acknowledged_by_consumer(&platform_rx.events(&[SECRET]))
            .keys()
            .all(|c| c != "web/orders")
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_on_a_replica_that_does_not_lead_is_refused_not_silently_undone() {
    let rx = Receiver::start().await;
    let (_, fake) = FakeApiServer::start();
    fake.bind_in_namespace("streams", "konsumer-secret-reader");
    fake.apply(consumer_with_journal());
    fake.add_secret("streams", "feed-secret", "secret", SECRET);
    fake.apply_subscription(subscription(&rx.url()));
    let certs_a = tempfile::tempdir().unwrap();
    let a = replica(&fake, "replica-a", certs_a.path()).await;
    wait_leading(&a, Duration::from_secs(10)).await;
    let certs_b = tempfile::tempdir().unwrap();
    let b = replica(&fake, "replica-b", certs_b.path()).await;
    rx.wait_for("every event", Duration::from_secs(20), &[SECRET], |e| {
        acknowledged_by_consumer(e)
            .get("streams/orders")
            .is_some_and(|l| l.len() == EVENTS)
    })
    .await;
    assert!(!*b.is_leader.clone().unwrap().borrow());

    // B would write a cursor that A's next status write undoes: it says so.
    let refused = b
        .deliveries
        .as_ref()
        .unwrap()
        .rewind("streams", "feed", "streams/orders", 10)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not the leader"), "{refused}");
    // The leader rewinds: the events after 10 come again, with their ids.
    let before = rx.count();
    a.deliveries
        .as_ref()
        .unwrap()
        .rewind("streams", "feed", "streams/orders", 10)
        .await
        .unwrap();
    let got = rx
        .wait_for(
            "the events after the rewound cursor",
            Duration::from_secs(20),
            &[SECRET],
            |e| e.len() >= before + EVENTS - 10,
        )
        .await;
    let again: Vec<i64> = got[before..].iter().map(|e| e.sequence()).collect();
    assert_eq!(again, (11..=EVENTS as i64).collect::<Vec<_>>());
    b.stop().await;
    a.stop().await;
}
