//! Crash safety through the built binary: `konsumer serve --local` is killed
//! with SIGKILL while deliveries are in flight and failing; restarted, it resumes
//! from the cursors it stored, and the receiver ends with every event at least
//! once, in sequence order per Consumer, none missing.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use konsumer::api::SubscriptionStatus;
use konsumer::scaling_events::EventType;
use konsumer::scaling_events::journal::{self, NewEvent};
use konsumer::store::ConsumerIndex;
use konsumer::store::local::LocalStore;
use serde_json::json;

use crate::delivery_local::{SECRET, consumer_yaml};
use crate::e2e_local::Binary;
use crate::receiver::{Receiver, acknowledged_by_consumer};

const CONSUMERS: [&str; 3] = ["c1", "c2", "c3"];
const EVENTS: usize = 40;

fn subscription(url: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    format!(
        r#"apiVersion: konsumer.dev/v1alpha1
kind: ScalingSubscription
metadata: {{name: feed, namespace: streams}}
spec:
  url: {url}
  secretRef: {{name: feed-secret, key: secret}}
  timeout: 2s
---
apiVersion: v1
kind: Secret
metadata: {{name: feed-secret, namespace: streams}}
type: Opaque
data:
  secret: {b64}
"#
    )
}

/// The state a running konsumer would have left: journals of EVENTS events per
/// Consumer, and a subscription that has acknowledged none of them yet.
async fn seed(dir: &std::path::Path) {
    let index = ConsumerIndex::new();
    let store = LocalStore::open(dir, index.clone()).unwrap();
    store.rescan().await.unwrap();
    let mut cursors = BTreeMap::new();
    for name in CONSUMERS {
        let mut status = index
            .get("streams", name)
            .and_then(|c| c.consumer.status.clone())
            .unwrap_or_default();
        let mut j = Vec::new();
        let events = (0..EVENTS)
            .map(|i| NewEvent {
                type_: EventType::Scaled,
                instance: Some(0),
                data: json!({"instance": 0, "direction": "up", "reason": format!("{name} {i}")}),
            })
            .collect();
        journal::append(&mut j, events, jiff::Timestamp::now());
        status.journal = Some(j);
        konsumer::store::Store::write_status(&store, "streams", name, &status)
            .await
            .unwrap();
        cursors.insert(format!("streams/{name}"), 0);
    }
    store
        .write_subscription_status(
            "streams/feed",
            &SubscriptionStatus {
                cursors: Some(cursors),
                ..SubscriptionStatus::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_delivers_every_event_at_least_once_in_order() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(100));
    rx.fail_every(4);
    let dir = tempfile::tempdir().unwrap();
    for name in CONSUMERS {
        std::fs::write(dir.path().join(format!("{name}.yaml")), consumer_yaml(name)).unwrap();
    }
    std::fs::write(dir.path().join("feed.yaml"), subscription(&rx.url())).unwrap();
    seed(dir.path()).await;

    let args = ["--no-reconciler", "--egress-allow", "127.0.0.0/8"];
    let first = Binary::serve_local(dir.path(), &args);
    let started = std::time::Instant::now();
    while rx.count() < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deliveries did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past a cursor write (one per second), while deliveries are in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill9();
    let before = rx.count();
    assert!(
        acknowledged_by_consumer(&rx.events(&[SECRET]))
            .values()
            .map(Vec::len)
            .sum::<usize>()
            < CONSUMERS.len() * EVENTS,
        "killed mid-stream"
    );

    let second = Binary::serve_local(dir.path(), &args);
    let got = rx
        .wait_for("every event", Duration::from_secs(60), &[SECRET], |e| {
            let acked = acknowledged_by_consumer(e);
            CONSUMERS.iter().all(|c| {
                acked
                    .get(&format!("streams/{c}"))
                    .is_some_and(|l| l.len() == EVENTS)
            })
        })
        .await;
    assert!(got.len() > before, "the restarted process delivered");
    // It resumed from the cursors the first process stored, not from scratch.
    let resumed = CONSUMERS.iter().any(|c| {
        got[before..]
            .iter()
            .find(|e| e.consumer() == format!("streams/{c}"))
            .is_some_and(|e| e.sequence() > 1)
    });
    assert!(
        resumed,
        "the restart re-sent everything: cursors were not persisted"
    );
    for (consumer, list) in acknowledged_by_consumer(&got) {
        let seqs: Vec<i64> = list.iter().map(|e| e.sequence()).collect();
        assert_eq!(
            seqs,
            (1..=EVENTS as i64).collect::<Vec<_>>(),
            "{consumer}: in order, none missing"
        );
        assert!(
            list.iter().all(|e| e.type_ == EventType::Scaled.as_str()),
            "no resync needed"
        );
    }
    // Re-sent events (after the crash) kept their ids.
    let mut ids: BTreeMap<(String, i64), String> = BTreeMap::new();
    for e in &got {
        let previous = ids.insert((e.consumer(), e.sequence()), e.id.clone());
        assert!(
            previous.is_none_or(|p| p == e.id),
            "an event changed its id"
        );
    }
    assert!(second.terminate().success());
}
