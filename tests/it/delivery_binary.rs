//! The receiver scenarios through the built binary in local mode: one
//! `konsumer serve --local` serves one subscription per scenario at once (happy
//! path, binary content mode, 500s then recovery, a hang past the timeout, 429
//! with Retry-After, 410 → Disabled, connection refused, a cursor behind the
//! journal → resync, a new subscriber), each with its own loopback receiver; then
//! it is stopped, more events are journaled, and a second process goes on from
//! the stored cursors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use konsumer::api::SubscriptionStatus;
use konsumer::scaling_events::EventType;
use konsumer::scaling_events::journal::{self, NewEvent};
use konsumer::store::ConsumerIndex;
use konsumer::store::local::LocalStore;
use serde_json::json;

use crate::delivery_local::{SECRET, SECRET_2, consumer_yaml};
use crate::e2e_local::Binary;
use crate::receiver::{Received, Receiver, Reply, acknowledged_by_consumer};

const CONSUMERS: [&str; 3] = ["c1", "c2", "c3"];
/// c1 has more events than its journal keeps (64): sequences 7..=70 remain.
const C1_EVENTS: usize = 70;
const OTHER_EVENTS: usize = 10;
/// Where most subscriptions stand in c1's journal: 4 events to go.
const C1_CURSOR: i64 = 66;
/// Events journaled for each Consumer while konsumer is stopped.
const MORE: usize = 3;

/// A Consumer selectable by its own name (`consumerSelector: {matchLabels: {team: cN}}`).
fn consumer(name: &str) -> String {
    consumer_yaml(name).replacen("team: payments", &format!("team: {name}"), 1)
}

fn subscription(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: konsumer.dev/v1alpha1\nkind: ScalingSubscription\nmetadata: {{name: {name}, namespace: streams}}\nspec:\n  url: {url}\n  secretRef: {{name: feed-secret, key: secret}}\n{extra}---\n"
    )
}

fn secret() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: feed-secret, namespace: streams}}\nstringData:\n  secret: \"{SECRET} {SECRET_2}\"\n"
    )
}

fn events(name: &str, from: usize, n: usize) -> Vec<NewEvent> {
    (from..from + n)
        .map(|i| NewEvent {
            type_: if i % 2 == 0 {
                EventType::ScalePending
            } else {
                EventType::Scaled
            },
            instance: Some((i % 2) as u32),
            data: json!({"direction": "up", "reason": format!("{name} {i}")}),
        })
        .collect()
}

/// Appends events to the journals in the store of `dir` (konsumer not running),
/// and sets subscription cursors (`None`: left as stored).
async fn journal(
    dir: &Path,
    counts: &[(&str, usize)],
    cursors: Option<BTreeMap<String, BTreeMap<String, i64>>>,
) {
    let index = ConsumerIndex::new();
    let store = LocalStore::open(dir, index.clone()).unwrap();
    store.rescan().await.unwrap();
    for (name, n) in counts {
        let mut status = index
            .get("streams", name)
            .and_then(|c| c.consumer.status.clone())
            .unwrap_or_default();
        let mut j = status.journal.take().unwrap_or_default();
        let from = journal::head(&j) as usize;
        journal::append(&mut j, events(name, from, *n), jiff::Timestamp::now());
        status.journal = Some(j);
        konsumer::store::Store::write_status(&store, "streams", name, &status)
            .await
            .unwrap();
    }
    for (sub, cursors) in cursors.into_iter().flatten() {
        store
            .write_subscription_status(
                &format!("streams/{sub}"),
                &SubscriptionStatus {
                    cursors: Some(cursors),
                    ..SubscriptionStatus::default()
                },
            )
            .await
            .unwrap();
    }
}

async fn statuses(dir: &Path) -> std::collections::HashMap<String, SubscriptionStatus> {
    let store = LocalStore::open(dir, ConsumerIndex::new()).unwrap();
    store.subscription_statuses().await.unwrap()
}

fn condition(s: &SubscriptionStatus, type_: &str) -> (String, String, String) {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// (consumer, sequence) of the acknowledged events, per Consumer in order.
fn sequences(events: &[Received]) -> BTreeMap<String, Vec<(String, i64)>> {
    acknowledged_by_consumer(events)
        .into_iter()
        .map(|(c, list)| {
            (
                c,
                list.iter()
                    .map(|e| {
                        (
                            e.type_.rsplit('.').nth(1).unwrap().to_string(),
                            e.sequence(),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn range(from: i64, to: i64) -> Vec<(String, i64)> {
    (from..=to)
        .map(|s| {
            let kind = if (s - 1) % 2 == 0 {
                "scale_pending"
            } else {
                "scaled"
            };
            (kind.to_string(), s)
        })
        .collect()
}

/// What a subscription following all three Consumers from the seeded cursors
/// has acknowledged after phase 1 (and after phase 2, with `more`).
fn expected(more: usize) -> BTreeMap<String, Vec<(String, i64)>> {
    let m = more as i64;
    BTreeMap::from([
        (
            "streams/c1".to_string(),
            range(C1_CURSOR + 1, C1_EVENTS as i64 + m),
        ),
        ("streams/c2".to_string(), range(1, OTHER_EVENTS as i64 + m)),
        ("streams/c3".to_string(), range(1, OTHER_EVENTS as i64 + m)),
    ])
}

async fn settled(rx: &Receiver, what: &str, want: &BTreeMap<String, Vec<(String, i64)>>) {
    rx.wait_for(what, Duration::from_secs(40), &[SECRET, SECRET_2], |e| {
        &sequences(e) == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_every_receiver_scenario_at_once_and_a_restart_goes_on_from_the_cursors()
{
    konsumer::server::tls::provider();
    let happy = Receiver::start().await;
    happy.delay(Duration::from_millis(30));
    let binary = Receiver::start().await;
    let flaky = Receiver::start().await;
    flaky.fail_every(3);
    let hang = Receiver::start().await;
    hang.script([Reply::Hang(Duration::from_millis(2500))]);
    let throttled = Receiver::start().await;
    throttled.script([Reply::With(429, vec![("retry-after", "2".into())])]);
    let gone = Receiver::start().await;
    gone.script([Reply::Status(410)]);
    let revived = Receiver::start().await;
    revived.script([Reply::Status(410)]);
    let behind = Receiver::start().await;
    let fresh = Receiver::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);

    let dir = tempfile::tempdir().unwrap();
    for name in CONSUMERS {
        std::fs::write(dir.path().join(format!("{name}.yaml")), consumer(name)).unwrap();
    }
    let only_c2 = "  consumerSelector: {matchLabels: {team: c2}}\n";
    let subs = [
        subscription("happy", &happy.url(), ""),
        subscription("binary", &binary.url(), "  contentMode: binary\n"),
        subscription("flaky", &flaky.url(), ""),
        subscription("hang", &hang.url(), "  timeout: 1s\n"),
        subscription("throttled", &throttled.url(), ""),
        subscription("gone", &gone.url(), only_c2),
        subscription("revived", &revived.url(), only_c2),
        subscription("refused", &refused_url, only_c2),
        subscription("behind", &behind.url(), ""),
        subscription("fresh", &fresh.url(), ""),
    ]
    .concat();
    std::fs::write(dir.path().join("feeds.yaml"), subs + &secret()).unwrap();
    let following = |c1: i64| {
        BTreeMap::from([
            ("streams/c1".to_string(), c1),
            ("streams/c2".to_string(), 0),
            ("streams/c3".to_string(), 0),
        ])
    };
    let mut cursors = BTreeMap::new();
    for s in [
        "happy",
        "binary",
        "flaky",
        "hang",
        "throttled",
        "gone",
        "revived",
        "refused",
    ] {
        cursors.insert(s.to_string(), following(C1_CURSOR));
    }
    // Down for long enough that c1's journal moved past its cursor.
    cursors.insert("behind".to_string(), following(2));
    journal(
        dir.path(),
        &[
            ("c1", C1_EVENTS),
            ("c2", OTHER_EVENTS),
            ("c3", OTHER_EVENTS),
        ],
        Some(cursors),
    )
    .await;

    let args = ["--no-reconciler", "--egress-allow", "127.0.0.0/8"];
    let first = Binary::serve_local(dir.path(), &args);

    // Happy path: every event once, in order per Consumer, signed with both
    // secrets, parsed by the CloudEvents SDK; Consumers delivered in parallel.
    settled(&happy, "the happy receiver", &expected(0)).await;
    let got = happy.events(&[SECRET, SECRET_2]);
    assert_eq!(got.len(), 24, "each event once");
    let e = &got[0];
    assert!(
        e.source
            .starts_with("/apis/konsumerator.lwolf.org/v1/namespaces/streams/consumers/c")
    );
    assert_eq!(e.webhook_id, e.id);
    assert!(
        e.subject
            .as_deref()
            .is_some_and(|s| s.starts_with("instances/"))
    );
    let requests = happy.requests();
    assert!(
        requests[0].headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/cloudevents+json")
    );
    let last_of = |c: &str| got.iter().rposition(|e| e.consumer() == c).unwrap();
    let first_of = |c: &str| got.iter().position(|e| e.consumer() == c).unwrap();
    assert!(
        first_of("streams/c3") < last_of("streams/c2")
            && first_of("streams/c2") < last_of("streams/c3"),
        "Consumers go in parallel: {:?}",
        got.iter().map(Received::consumer).collect::<Vec<_>>()
    );

    // Binary content mode: the attributes in ce-* headers, data as the body.
    settled(&binary, "the binary-mode receiver", &expected(0)).await;
    let r = &binary.requests()[0];
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["ce-specversion"], "1.0");
    assert_eq!(r.headers["ce-id"], r.headers["webhook-id"]);

    // 500s, then recovery: in order all the same, and a retried event keeps its id.
    settled(&flaky, "the flaky receiver", &expected(0)).await;
    let all = flaky.events(&[SECRET]);
    let failed: Vec<&Received> = all.iter().filter(|e| e.answered == 500).collect();
    assert!(!failed.is_empty());
    for f in failed {
        assert!(
            all.iter().any(|e| e.answered == 200
                && e.id == f.id
                && (e.consumer(), e.sequence()) == (f.consumer(), f.sequence())),
            "the retry of {} {} kept its id",
            f.consumer(),
            f.sequence()
        );
    }

    // A receiver that hangs past the 1s timeout: a failed attempt (counted as a
    // timeout), then every event all the same.
    settled(&hang, "the hanging receiver", &expected(0)).await;
    let metrics = reqwest::get(format!("http://{}/metrics", first.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let timeouts: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"konsumer_event_delivery_attempts_total{outcome="timeout"} "#)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(timeouts >= 1, "{metrics}");

    // 429 with Retry-After: 2 — the event waits two seconds (the backoff alone
    // would wait at most one).
    settled(&throttled, "the throttled receiver", &expected(0)).await;
    let reqs = throttled.requests();
    let id_of = |g: &crate::receiver::Got| g.headers["webhook-id"].to_str().unwrap().to_string();
    let first_try = &reqs[0];
    assert_eq!(first_try.answered, 429);
    let retry = reqs[1..]
        .iter()
        .find(|g| id_of(g) == id_of(first_try))
        .expect("retried");
    assert!(
        retry.at.duration_since(first_try.at) >= Duration::from_millis(1900),
        "Retry-After honoured: {:?}",
        retry.at.duration_since(first_try.at)
    );

    // A cursor behind the journal: one resync at the head, then nothing older.
    let want_behind = BTreeMap::from([
        ("streams/c1".to_string(), vec![("resync".to_string(), 70)]),
        ("streams/c2".to_string(), range(1, 10)),
        ("streams/c3".to_string(), range(1, 10)),
    ]);
    settled(&behind, "the receiver behind the journal", &want_behind).await;
    // A new subscriber: a snapshot of each Consumer at its head.
    let want_fresh: BTreeMap<String, Vec<(String, i64)>> = [("c1", 70), ("c2", 10), ("c3", 10)]
        .into_iter()
        .map(|(c, head)| (format!("streams/{c}"), vec![("resync".to_string(), head)]))
        .collect();
    settled(&fresh, "the new subscriber", &want_fresh).await;
    let snapshot = fresh.events(&[SECRET]);
    assert!(snapshot[0].data["instances"].is_array());

    // 410 Gone: one request, never another.
    assert_eq!(gone.count(), 1);
    assert_eq!(gone.requests()[0].answered, 410);
    assert_eq!(revived.count(), 1);
    // Connection refused: Failing, with the cause, counted in the metrics.
    let started = std::time::Instant::now();
    loop {
        let text = reqwest::get(format!("http://{}/metrics", first.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(r#"konsumer_subscription_failing{subscription="streams/refused"} 1"#) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "refused never Failing: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(first.terminate().success());

    let stored = statuses(dir.path()).await;
    for sub in ["streams/gone", "streams/revived"] {
        let (status, reason, message) = condition(&stored[sub], "Disabled");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Gone"),
            "{message}"
        );
        assert!(stored[sub].disabled_spec_hash.is_some());
    }
    let (status, reason, message) = condition(&stored["streams/refused"], "Failing");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReceiverErrors")
    );
    assert!(message.contains("onnection refused"), "{message}");
    let heads = BTreeMap::from([
        ("streams/c1".to_string(), 70),
        ("streams/c2".to_string(), 10),
        ("streams/c3".to_string(), 10),
    ]);
    assert_eq!(stored["streams/happy"].cursors, Some(heads.clone()));
    assert_eq!(stored["streams/behind"].cursors, Some(heads));
    let (status, _, _) = condition(&stored["streams/happy"], "Ready");
    assert_eq!(status, "True");

    // konsumer down: more decisions are journaled; a new process goes on from
    // the stored cursors (nothing acknowledged is sent again after a clean stop).
    journal(
        dir.path(),
        &[("c1", MORE), ("c2", MORE), ("c3", MORE)],
        None,
    )
    .await;
    let before_gone = gone.count();
    // One of the two disabled subscriptions gets a new spec while konsumer is
    // down (files have no generation: only the stored spec hash tells).
    let feeds = std::fs::read_to_string(dir.path().join("feeds.yaml")).unwrap();
    let revived_doc = subscription("revived", &revived.url(), only_c2);
    let changed = subscription(
        "revived",
        &revived.url(),
        &format!("{only_c2}  timeout: 5s\n"),
    );
    std::fs::write(
        dir.path().join("feeds.yaml"),
        feeds.replacen(&revived_doc, &changed, 1),
    )
    .unwrap();
    let second = Binary::serve_local(dir.path(), &args);
    settled(
        &happy,
        "the happy receiver after the restart",
        &expected(MORE),
    )
    .await;
    assert_eq!(happy.count(), 24 + 3 * MORE, "nothing sent twice");
    settled(
        &flaky,
        "the flaky receiver after the restart",
        &expected(MORE),
    )
    .await;
    let mut want_behind = want_behind;
    want_behind
        .get_mut("streams/c1")
        .unwrap()
        .extend(range(71, 73));
    for c in ["streams/c2", "streams/c3"] {
        want_behind.get_mut(c).unwrap().extend(range(11, 13));
    }
    settled(
        &behind,
        "the behind receiver after the restart",
        &want_behind,
    )
    .await;
    let mut want_fresh = want_fresh;
    want_fresh
        .get_mut("streams/c1")
        .unwrap()
        .extend(range(71, 73));
    for c in ["streams/c2", "streams/c3"] {
        want_fresh.get_mut(c).unwrap().extend(range(11, 13));
    }
    settled(&fresh, "the new subscriber after the restart", &want_fresh).await;
    // The changed one delivers again, from where it stood.
    let want_revived = BTreeMap::from([("streams/c2".to_string(), range(1, 13))]);
    settled(&revived, "the re-enabled subscription", &want_revived).await;
    // Disabled stays disabled across the restart while its spec is unchanged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gone.count(),
        before_gone,
        "a disabled subscription stays so"
    );
    assert!(second.terminate().success());
}

/// A private CA and a server certificate for 127.0.0.1 signed by it (PEM):
/// (ca, chain, key).
fn private_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "receivers' private CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_only_through_ca_secret_ref_and_egress_proxy_carries_every_request()
{
    use base64::Engine;
    let (ca, chain, key) = private_pki();
    let trusted = Receiver::start_tls(&chain, &key).await;
    let untrusted = Receiver::start_tls(&chain, &key).await;
    let proxy = crate::receiver::ConnectProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c1.yaml"), consumer("c1")).unwrap();
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&ca);
    let subs = [
        subscription(
            "private-ca",
            &trusted.url(),
            "  caSecretRef: {name: receiver-ca, key: ca.crt}\n",
        ),
        subscription("system-roots", &untrusted.url(), ""),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: receiver-ca, namespace: streams}}\ndata:\n  ca.crt: {ca_b64}\n---\n"
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("feeds.yaml"), subs + &secret()).unwrap();
    journal(dir.path(), &[("c1", 2)], None).await;

    let proxy_url = proxy.url();
    let args = [
        "--no-reconciler",
        "--egress-allow",
        "127.0.0.0/8",
        "--egress-proxy",
        proxy_url.as_str(),
    ];
    let bin = Binary::serve_local(dir.path(), &args);
    // Delivered with the CA from caSecretRef...
    let got = trusted
        .wait_for(
            "the resync over TLS",
            Duration::from_secs(20),
            &[SECRET],
            |e| e.iter().any(|e| e.answered == 200),
        )
        .await;
    assert_eq!(got[0].type_, EventType::Resync.as_str());
    assert_eq!(got[0].sequence(), 2);
    // ...refused without it: the handshake fails, nothing reaches the receiver.
    // A fourth try means the third failed (Failing after three).
    let started = std::time::Instant::now();
    while proxy
        .targets()
        .iter()
        .filter(|t| **t == untrusted.addr.to_string())
        .count()
        < 4
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no retries towards the untrusted receiver: {:?}",
            proxy.targets()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(untrusted.count(), 0);
    // Every request went through the proxy.
    assert!(
        proxy.targets().contains(&trusted.addr.to_string()),
        "{:?}",
        proxy.targets()
    );
    assert!(bin.terminate().success());
    let stored = statuses(dir.path()).await;
    let (status, reason, message) = condition(&stored["streams/system-roots"], "Failing");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReceiverErrors"),
        "{message}"
    );
    assert!(
        message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"),
        "{message}"
    );
    let (status, _, message) = condition(&stored["streams/private-ca"], "Ready");
    assert_eq!(status, "True", "{message}");
}
