//! Scaling events delivered by konsumer in local mode (in-process) to real HTTP
//! receivers on loopback: ordering, retries, timeouts, Retry-After, 410, redirects,
//! resync, both content modes, the egress guard. Journals are appended the way
//! the reconciler does (the pure journal function, one status write).

use std::time::{Duration, Instant};

use konsumer::api::{ConsumerStatus, SubscriptionStatus};
use konsumer::delivery::{DeliveryConfig, EgressConfig};
use konsumer::scaling_events::EventType;
use konsumer::scaling_events::egress::{EgressPolicy, parse_allow};
use konsumer::scaling_events::journal::{self, NewEvent};
use serde_json::json;

use crate::receiver::{Receiver, Reply, acknowledged_by_consumer};
use crate::support::*;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_2: &str = "whsec_c2Vjb25kIGtleSBmb3Igcm90YXRpb24=";

pub fn consumer_yaml(name: &str) -> String {
    orders_yaml()
        .replacen("name: orders", &format!("name: {name}"), 1)
        .replacen(
            "metadata:\n",
            &format!(
                "metadata:\n  labels: {{team: {}}}\n",
                if name == "billing" {
                    "billing"
                } else {
                    "payments"
                }
            ),
            1,
        )
}

pub fn subscription_yaml(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: konsumer.dev/v1alpha1
kind: ScalingSubscription
metadata: {{name: {name}, namespace: streams}}
spec:
  url: {url}
  secretRef: {{name: feed-secret, key: secret}}
{extra}---
apiVersion: v1
kind: Secret
metadata: {{name: feed-secret, namespace: streams}}
stringData:
  secret: "{SECRET} {SECRET_2}"
"#
    )
}

pub fn config(allow_loopback: bool) -> DeliveryConfig {
    DeliveryConfig {
        egress: EgressConfig {
            policy: EgressPolicy {
                allow: if allow_loopback {
                    vec![parse_allow("127.0.0.0/8").unwrap()]
                } else {
                    Vec::new()
                },
            },
            proxy: None,
        },
        concurrency: 8,
        konsumer_namespace: "konsumer-system".into(),
        failing_after: Duration::from_secs(60),
        failing_attempts: 2,
        flush_every: Duration::from_millis(200),
        tick: Duration::from_millis(100),
        attempts_kept: 50,
    }
}

pub async fn start(files: &[(impl AsRef<str>, String)], allow_loopback: bool) -> LocalServer {
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_ref(), c.as_str()))
        .collect();
    LocalServer::start_with(&files, |c| c.delivery = Some(config(allow_loopback))).await
}

fn status_of(s: &LocalServer, name: &str) -> ConsumerStatus {
    s.running
        .as_ref()
        .unwrap()
        .index
        .get("streams", name)
        .and_then(|c| c.consumer.status.clone())
        .unwrap_or_default()
}

/// Appends `n` scale events to a Consumer's journal in one status write.
pub async fn journal_events(s: &LocalServer, name: &str, n: usize) {
    let mut status = status_of(s, name);
    let mut j = status.journal.take().unwrap_or_default();
    let events = (0..n)
        .map(|i| NewEvent {
            type_: if i % 2 == 0 {
                EventType::ScalePending
            } else {
                EventType::Scaled
            },
            instance: Some((i % 3) as u32),
            data: json!({"instance": i % 3, "direction": "up", "reason": format!("test {i}")}),
        })
        .collect();
    journal::append(&mut j, events, jiff::Timestamp::now());
    status.journal = Some(j);
    let running = s.running.as_ref().unwrap();
    running
        .store
        .write_status("streams", name, &status)
        .await
        .unwrap();
    running.deliveries.as_ref().unwrap().wake();
}

async fn subscription(s: &LocalServer, name: &str) -> SubscriptionStatus {
    let d = s.running.as_ref().unwrap().deliveries.as_ref().unwrap();
    d.get("streams", name)
        .await
        .unwrap()
        .and_then(|v| v.subscription.status)
        .unwrap_or_default()
}

fn condition(s: &SubscriptionStatus, t: &str) -> Option<(String, String, String)> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_status(
    s: &LocalServer,
    name: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&SubscriptionStatus) -> bool,
) -> SubscriptionStatus {
    let started = Instant::now();
    loop {
        let st = subscription(s, name).await;
        if check(&st) {
            return st;
        }
        assert!(
            started.elapsed() < within,
            "timed out waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(events: &[crate::receiver::Received]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.type_.rsplit('.').nth(1).unwrap_or("").to_string(),
                e.sequence(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscriber_gets_a_resync_then_every_event_in_order_signed_and_structured() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    journal_events(&s, "orders", 2).await;
    // The subscription was created after these two: it starts with a snapshot.
    let got = rx
        .wait_for(
            "the resync",
            Duration::from_secs(10),
            &[SECRET, SECRET_2],
            |e| !e.is_empty(),
        )
        .await;
    assert_eq!(got[0].type_, EventType::Resync.as_str());
    assert_eq!(
        got[0].sequence(),
        2,
        "the resync brings the subscriber to the head"
    );
    assert!(got[0].data["instances"].is_array());
    journal_events(&s, "orders", 5).await;
    let got = rx
        .wait_for(
            "five events",
            Duration::from_secs(10),
            &[SECRET, SECRET_2],
            |e| e.len() >= 6,
        )
        .await;
    assert_eq!(
        types(&got),
        [
            ("resync".into(), 2),
            ("scale_pending".into(), 3),
            ("scaled".into(), 4),
            ("scale_pending".into(), 5),
            ("scaled".into(), 6),
            ("scale_pending".into(), 7)
        ]
    );
    let e = &got[1];
    assert_eq!(
        e.source,
        "/apis/konsumerator.lwolf.org/v1/namespaces/streams/consumers/orders"
    );
    assert_eq!(e.subject.as_deref(), Some("instances/0"));
    assert_eq!(e.webhook_id, e.id, "webhook-id is the CloudEvents id");
    assert_eq!(e.data["consumer"]["name"], "orders");
    assert_eq!(e.data["direction"], "up");
    let raw = &rx.requests()[1];
    assert!(
        raw.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/cloudevents+json"),
        "structured by default"
    );
    assert_eq!(
        raw.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2,
        "one signature per secret"
    );
    let st = wait_status(&s, "feed", "cursor 7", Duration::from_secs(5), |st| {
        st.cursors.as_ref().and_then(|c| c.get("streams/orders")) == Some(&7)
    })
    .await;
    assert_eq!(condition(&st, "Ready").unwrap().0, "True");
    assert_eq!(st.delivered, Some(6));
    let attempts = s
        .running
        .as_ref()
        .unwrap()
        .deliveries
        .as_ref()
        .unwrap()
        .attempts("streams", "feed");
    assert_eq!(attempts.len(), 6);
    assert_eq!(attempts[0].status_code, Some(200), "newest first");
    assert_eq!(attempts[0].event_id, got[5].id);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_carries_the_attributes_in_headers() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            (
                "feed.yaml",
                subscription_yaml("feed", &rx.url(), "  contentMode: binary\n"),
            ),
        ],
        true,
    )
    .await;
    journal_events(&s, "orders", 1).await;
    rx.wait_for("resync", Duration::from_secs(10), &[SECRET], |e| {
        !e.is_empty()
    })
    .await;
    journal_events(&s, "orders", 1).await;
    let got = rx
        .wait_for("one event", Duration::from_secs(10), &[SECRET], |e| {
            e.len() >= 2
        })
        .await;
    let raw = &rx.requests()[1];
    assert_eq!(raw.headers["content-type"], "application/json");
    assert_eq!(raw.headers["ce-id"].to_str().unwrap(), got[1].id);
    assert_eq!(raw.headers["ce-type"], EventType::ScalePending.as_str());
    assert_eq!(got[1].sequence(), 2);
    assert_eq!(got[1].data["reason"], "test 0");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_in_order_with_the_same_id_and_show_as_failing_until_recovery() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    rx.wait_for("resync", Duration::from_secs(10), &[SECRET], |e| {
        !e.is_empty()
    })
    .await;
    rx.script([Reply::Status(500), Reply::Status(503), Reply::Status(500)]);
    journal_events(&s, "orders", 3).await;
    let st = wait_status(&s, "feed", "Failing", Duration::from_secs(10), |st| {
        condition(st, "Failing").is_some_and(|c| c.0 == "True")
    })
    .await;
    let failing = condition(&st, "Failing").unwrap();
    assert_eq!(failing.1, "ReceiverErrors");
    assert!(failing.2.contains("answered 50"), "{failing:?}");
    let got = rx
        .wait_for("recovery", Duration::from_secs(20), &[SECRET], |e| {
            e.iter().filter(|x| x.answered == 200).count() >= 4
        })
        .await;
    // The first event was tried four times with one id; nothing overtook it.
    let first = &got[1];
    assert!(
        got[1..4]
            .iter()
            .all(|e| e.id == first.id && e.sequence() == 1)
    );
    let acked: Vec<i64> = acknowledged_by_consumer(&got)["streams/orders"]
        .iter()
        .map(|e| e.sequence())
        .collect();
    assert_eq!(acked, [0, 1, 2, 3]);
    wait_status(&s, "feed", "recovered", Duration::from_secs(5), |st| {
        condition(st, "Failing").is_some_and(|c| c.0 == "False")
            && condition(st, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    let failed = subscription(&s, "feed").await.failed;
    assert_eq!(failed, Some(3));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_past_the_timeout_is_a_failed_attempt_and_429_retry_after_is_honoured()
 {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            (
                "feed.yaml",
                subscription_yaml("feed", &rx.url(), "  timeout: 1s\n"),
            ),
        ],
        true,
    )
    .await;
    rx.wait_for("resync", Duration::from_secs(10), &[SECRET], |e| {
        !e.is_empty()
    })
    .await;
    rx.script([
        Reply::Hang(Duration::from_secs(3)),
        Reply::With(429, vec![("retry-after", "2".into())]),
    ]);
    journal_events(&s, "orders", 1).await;
    // The attempt log keeps the failure; lastError only shows the latest one and
    // the 429 (then the 2xx) may replace it before a poll sees it.
    let deliveries = s.running.as_ref().unwrap().deliveries.clone().unwrap();
    let started = Instant::now();
    let timed_out = loop {
        let attempts = deliveries.attempts("streams", "feed");
        if let Some(a) = attempts.iter().find(|a| {
            a.error
                .as_deref()
                .is_some_and(|e| e.contains("no answer within the timeout"))
        }) {
            break a.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no timed-out attempt: {attempts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(timed_out.error.unwrap().contains("(1s)"));
    assert_eq!(timed_out.status_code, None);
    let got = rx
        .wait_for(
            "delivery after 429",
            Duration::from_secs(20),
            &[SECRET],
            |e| e.iter().filter(|x| x.answered == 200).count() >= 2,
        )
        .await;
    let reqs = rx.requests();
    let i429 = reqs.iter().position(|g| g.answered == 429).expect("a 429");
    let after = &reqs[i429 + 1..];
    let next = after.iter().find(|g| g.answered == 200).expect("a retry");
    let waited = next.at.duration_since(reqs[i429].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {waited:?}"
    );
    assert_eq!(got.last().unwrap().sequence(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscription_until_its_spec_changes() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    rx.script([Reply::Status(410)]);
    let st = wait_status(&s, "feed", "Disabled", Duration::from_secs(10), |st| {
        condition(st, "Disabled").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(condition(&st, "Disabled").unwrap().1, "Gone");
    assert_eq!(condition(&st, "Ready").unwrap().0, "False");
    journal_events(&s, "orders", 3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.count(), 1, "nothing is sent to a disabled subscription");
    // A changed spec enables it again (and delivery resumes from the cursor).
    let path = s.dir().join("feed.yaml");
    std::fs::write(
        &path,
        subscription_yaml("feed", &rx.url(), "  timeout: 5s\n"),
    )
    .unwrap();
    rx.wait_for(
        "delivery after the spec change",
        Duration::from_secs(10),
        &[SECRET],
        |e| e.iter().any(|x| x.answered == 200),
    )
    .await;
    wait_status(&s, "feed", "enabled", Duration::from_secs(5), |st| {
        condition(st, "Disabled").is_some_and(|c| c.0 == "False")
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_failing_with_the_cause() {
    // A port nothing listens on: bind, note, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            (
                "feed.yaml",
                subscription_yaml("feed", &format!("http://127.0.0.1:{port}/x"), ""),
            ),
        ],
        true,
    )
    .await;
    let st = wait_status(&s, "feed", "Failing", Duration::from_secs(15), |st| {
        condition(st, "Failing").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&st, "Failing").unwrap();
    assert_eq!(reason, "ReceiverErrors");
    assert!(message.contains("cannot connect"), "{message}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_down_past_the_journal_gets_one_resync_then_the_new_events() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    rx.wait_for("resync", Duration::from_secs(10), &[SECRET], |e| {
        !e.is_empty()
    })
    .await;
    // Down: event 1 fails, and while it waits for its retry 70 more events come
    // (more than the journal keeps), so event 1 falls off the journal.
    rx.script(std::iter::repeat_n(Reply::Status(503), 2));
    journal_events(&s, "orders", 10).await;
    rx.wait_for(
        "a failed attempt",
        Duration::from_secs(10),
        &[SECRET],
        |e| e.iter().any(|x| x.answered == 503 && x.sequence() == 1),
    )
    .await;
    journal_events(&s, "orders", 70).await;
    let got = rx
        .wait_for("catch-up", Duration::from_secs(20), &[SECRET], |e| {
            e.iter().filter(|x| x.answered == 200).count() >= 2
        })
        .await;
    let acked = &acknowledged_by_consumer(&got)["streams/orders"];
    assert_eq!(acked[0].type_, EventType::Resync.as_str());
    assert_eq!(
        acked[1].type_,
        EventType::Resync.as_str(),
        "fell off the journal: one resync"
    );
    assert_eq!(acked[1].sequence(), 80);
    journal_events(&s, "orders", 2).await;
    let got = rx
        .wait_for("new events", Duration::from_secs(10), &[SECRET], |e| {
            e.iter().filter(|x| x.answered == 200).count() >= 4
        })
        .await;
    let seqs: Vec<i64> = acknowledged_by_consumer(&got)["streams/orders"]
        .iter()
        .map(|e| e.sequence())
        .collect();
    assert_eq!(seqs, [0, 80, 81, 82]);
    let resyncs = s.running.as_ref().unwrap().metrics.encode();
    assert!(
        resyncs.contains("konsumer_event_resyncs_total 2"),
        "{resyncs}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_consumer_is_delivered_in_order_while_consumers_go_in_parallel() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(5));
    rx.fail_every(7);
    let names = ["a1", "a2", "a3", "a4", "a5"];
    let mut files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("{n}.yaml"), consumer_yaml(n)))
        .collect();
    files.push(("feed.yaml".into(), subscription_yaml("feed", &rx.url(), "")));
    let s = start(&files, true).await;
    rx.wait_for("resyncs", Duration::from_secs(10), &[SECRET], |e| {
        acknowledged_by_consumer(e).len() == names.len()
    })
    .await;
    for _ in 0..4 {
        for n in names {
            journal_events(&s, n, 5).await;
        }
    }
    let got = rx
        .wait_for("everything", Duration::from_secs(40), &[SECRET], |e| {
            let acked = acknowledged_by_consumer(e);
            acked.len() == names.len() && acked.values().all(|l| l.len() == 21)
        })
        .await;
    for (consumer, list) in acknowledged_by_consumer(&got) {
        let seqs: Vec<i64> = list.iter().map(|e| e.sequence()).collect();
        assert_eq!(seqs, (0..=20).collect::<Vec<_>>(), "{consumer}");
    }
    // Strict order also across retries: a sequence is never sent before the
    // previous one was acknowledged.
    for n in names {
        let key = format!("streams/{n}");
        let mut acked_up_to = 0;
        for e in got
            .iter()
            .filter(|e| e.consumer() == key && e.type_ != EventType::Resync.as_str())
        {
            assert!(
                e.sequence() <= acked_up_to + 1,
                "{key}: {} sent before {} was acknowledged",
                e.sequence(),
                acked_up_to + 1
            );
            if e.answered == 200 {
                acked_up_to = acked_up_to.max(e.sequence());
            }
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_egress_allow_internal_addresses_are_refused_and_nothing_is_sent() {
    let rx = Receiver::start().await;
    let port = rx.addr.port();
    let targets = [
        ("lo4", format!("https://127.0.0.1:{port}/x")),
        ("lo6", format!("https://[::1]:{port}/x")),
        ("mapped", format!("https://[::ffff:127.0.0.1]:{port}/x")),
        (
            "metadata",
            "https://169.254.169.254/latest/meta-data".to_string(),
        ),
        ("private", "https://10.0.0.1/x".to_string()),
        ("name", format!("https://localhost:{port}/x")),
        ("plain", format!("http://127.0.0.1:{port}/x")),
    ];
    let mut files = vec![("orders.yaml".to_string(), consumer_yaml("orders"))];
    for (n, url) in &targets {
        files.push((format!("{n}.yaml"), subscription_yaml(n, url, "")));
    }
    let s = start(&files, false).await;
    for (n, url) in &targets {
        let st = wait_status(&s, n, "EgressDenied", Duration::from_secs(10), |st| {
            condition(st, "Failing").is_some_and(|c| c.1 == "EgressDenied")
        })
        .await;
        let (status, _, message) = condition(&st, "Failing").unwrap();
        assert_eq!(status, "True", "{n}");
        assert!(
            message.starts_with("konsumer refused to connect to "),
            "{n}: {message}"
        );
        assert!(message.contains("--egress-allow"), "{n}: {message}");
        assert_eq!(condition(&st, "Ready").unwrap().0, "False", "{n} {url}");
    }
    let metrics = s.running.as_ref().unwrap().metrics.encode();
    assert!(
        !metrics.contains("konsumer_egress_refusals_total 0"),
        "{metrics}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the loopback receiver");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let rx = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    rx.script(std::iter::repeat_n(
        Reply::With(302, vec![("location", elsewhere.url())]),
        2,
    ));
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    let st = wait_status(&s, "feed", "a redirect", Duration::from_secs(10), |st| {
        st.last_error.as_deref().is_some_and(|e| e.contains("302"))
    })
    .await;
    assert!(st.last_error.unwrap().contains("never follows redirects"));
    rx.wait_for(
        "delivery after the redirects",
        Duration::from_secs(15),
        &[SECRET],
        |e| e.iter().any(|x| x.answered == 200),
    )
    .await;
    assert_eq!(elsewhere.count(), 0, "the redirect target got nothing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_and_a_rewind_go_through_the_same_path() {
    let rx = Receiver::start().await;
    let s = start(
        &[
            ("orders.yaml", consumer_yaml("orders")),
            ("feed.yaml", subscription_yaml("feed", &rx.url(), "")),
        ],
        true,
    )
    .await;
    let d = s.running.as_ref().unwrap().deliveries.clone().unwrap();
    journal_events(&s, "orders", 3).await;
    rx.wait_for("resync", Duration::from_secs(10), &[SECRET], |e| {
        !e.is_empty()
    })
    .await;
    let pong = d.ping("streams", "feed").await.unwrap();
    assert_eq!(pong.status_code, Some(200));
    assert_eq!(pong.body, "ok");
    let got = rx
        .wait_for("the ping", Duration::from_secs(5), &[SECRET], |e| {
            e.len() >= 2
        })
        .await;
    assert_eq!(got[1].type_, EventType::Ping.as_str());
    assert!(d.ping("streams", "nope").await.is_err());

    let err = d
        .rewind("streams", "feed", "streams/orders", -5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0..3"), "{err}");
    d.rewind("streams", "feed", "streams/orders", 1)
        .await
        .unwrap();
    let got = rx
        .wait_for("re-sent events", Duration::from_secs(10), &[SECRET], |e| {
            e.len() >= 4
        })
        .await;
    assert_eq!(
        types(&got[2..4]),
        [("scaled".into(), 2), ("scale_pending".into(), 3)]
    );
    let list = d.list().await.unwrap();
    assert_eq!(list.len(), 1);
    s.stop().await;
}
