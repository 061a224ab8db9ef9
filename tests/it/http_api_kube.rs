//! The HTTP API in kube mode against the mocked API server: callers checked by
//! TokenReview and SubjectAccessReview (the exchanges of
//! `tests/fixtures/apiserver/08-*.json`), subscriptions created as a
//! ScalingSubscription and a Secret it owns.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::http_api::{ApiAuth, ApiConfig};
use konsumer::reconciler::leader::LeaseConfig;
use konsumer::server::{self, Backend, Running, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::{Value, json};

use crate::delivery_local::config;
use crate::fake_apiserver::FakeApiServer;
use crate::http_api::{conforms, template_of};
use crate::support::*;

const TOKEN: &str = "sa-token-ci";
const USER: &str = "system:serviceaccount:streams:ci";

struct Kube {
    running: Option<Running>,
    client: reqwest::Client,
    base: String,
    _certs: tempfile::TempDir,
}

impl Kube {
    async fn start(fake: &Arc<FakeApiServer>, auth_cache_ttl: Duration) -> Kube {
        Self::start_as(fake, auth_cache_ttl, "api-test").await
    }

    async fn start_as(fake: &Arc<FakeApiServer>, auth_cache_ttl: Duration, identity: &str) -> Kube {
        Self::start_with(fake, auth_cache_ttl, identity, Vec::new()).await
    }

    async fn start_with(
        fake: &Arc<FakeApiServer>,
        auth_cache_ttl: Duration,
        identity: &str,
        audiences: Vec<String>,
    ) -> Kube {
        let certs = tempfile::tempdir().unwrap();
        let (files, _) = tls::ensure_local(certs.path()).unwrap();
        let mut cfg = ServeConfig::local_for_tests(certs.path().to_path_buf());
        cfg.mode = Mode::Kube { namespace: None };
        cfg.tls = TlsSource::Files(files);
        cfg.delivery = Some(config(true));
        cfg.lease = LeaseConfig {
            name: "konsumer-leader".into(),
            namespace: "konsumer-system".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        };
        cfg.api = Some(ApiConfig {
            auth_cache_ttl,
            audiences,
            ..ApiConfig::new("127.0.0.1:0".parse().unwrap(), ApiAuth::Kube)
        });
        let index = ConsumerIndex::new();
        let store = Arc::new(KubeStore::new(fake.another_client(), None, index.clone()));
        let running = server::start(cfg, index.clone(), Backend::kube(store))
            .await
            .unwrap();
        index.wait_synced().await;
        let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
        Kube {
            client: client_trusting(&ca),
            base: format!("https://localhost:{}", running.api_addr.unwrap().port()),
            running: Some(running),
            _certs: certs,
        }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let value: Value = resp.json().await.unwrap();
        conforms(template_of(method, path), method, status, &value);
        (status, value)
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// A PUT of the subscription read just before, with `edit` applied: read
/// again on a conflict, as any client does (the delivery side may write the
/// subscription's status, a new resourceVersion, between the read and the
/// write). The read the accepted PUT was based on, and the answer.
async fn put_reading_again_on_conflict(
    k: &Kube,
    path: &str,
    edit: impl Fn(&mut Value),
) -> (Value, Value) {
    let mut tries = 0;
    loop {
        let (_, got) = k.call(Some(TOKEN), "GET", path, None).await;
        let mut changed = got.clone();
        edit(&mut changed);
        let (status, answer) = k.call(Some(TOKEN), "PUT", path, Some(changed)).await;
        if status == 200 {
            return (got, answer);
        }
        tries += 1;
        assert!(status == 409 && tries < 20, "{status}: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn setup() -> Arc<FakeApiServer> {
    let (_, fake) = FakeApiServer::start();
    // What the operator does for a team's namespace (manifests/base/rbac.yaml).
    fake.bind_in_namespace("streams", "konsumer-secret-reader");
    fake.bind_in_namespace("streams", "konsumer-secret-writer");
    let orders: Value = serde_saphyr::from_str(&orders_yaml()).unwrap();
    fake.apply(orders);
    // As 08-tokenreview.json answers for a ServiceAccount token.
    fake.add_token(
        TOKEN,
        json!({"username": USER, "uid": "e3da2fdf-2260-49f6-a57f-a1b1a0c63c2f",
               "groups": ["system:serviceaccounts", "system:serviceaccounts:streams", "system:authenticated"],
               "extra": {"authentication.kubernetes.io/credential-id": ["JTI=76d63a36-15ce-4fba-8bcb-69925c13ddbb"]}}),
    );
    for verb in ["get", "list", "create", "update", "delete"] {
        fake.grant(
            USER,
            verb,
            "konsumer.dev",
            "scalingsubscriptions",
            Some("streams"),
        );
    }
    fake.grant(
        USER,
        "create",
        "konsumer.dev",
        "scalingsubscriptions/test",
        Some("streams"),
    );
    fake.grant(
        USER,
        "get",
        "konsumerator.lwolf.org",
        "consumers",
        Some("streams"),
    );
    fake.grant(
        USER,
        "list",
        "konsumerator.lwolf.org",
        "consumers",
        Some("streams"),
    );
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authenticated_by_tokenreview_and_authorized_by_subjectaccessreview() {
    let fake = setup();
    let k = Kube::start(&fake, Duration::from_secs(10)).await;
    let (status, p) = k
        .call(None, "GET", "/v1/namespaces/streams/consumers/orders", None)
        .await;
    assert_eq!(status, 401, "{p}");
    let (status, p) = k
        .call(
            Some("garbage"),
            "GET",
            "/v1/namespaces/streams/consumers/orders",
            None,
        )
        .await;
    assert_eq!(status, 401, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("invalid bearer token"),
        "{p}"
    );

    let (status, c) = k
        .call(
            Some(TOKEN),
            "GET",
            "/v1/namespaces/streams/consumers/orders",
            None,
        )
        .await;
    assert_eq!(status, 200, "{c}");
    // Cached: more requests, no more reviews.
    for _ in 0..5 {
        k.call(
            Some(TOKEN),
            "GET",
            "/v1/namespaces/streams/consumers/orders",
            None,
        )
        .await;
    }
    let reviews = fake.reviews();
    let token_reviews: Vec<&Value> = reviews
        .iter()
        .filter(|r| r["kind"] == "TokenReview")
        .collect();
    assert_eq!(token_reviews.len(), 2, "one per token: {reviews:#?}");
    let sars: Vec<&Value> = reviews
        .iter()
        .filter(|r| r["kind"] == "SubjectAccessReview")
        .collect();
    assert_eq!(sars.len(), 1, "{sars:#?}");
    // The SubjectAccessReview carries the identity the TokenReview gave, as in 08-subjectaccessreview.json.
    let spec = &sars[0]["spec"];
    assert_eq!(spec["user"], USER);
    assert_eq!(spec["uid"], "e3da2fdf-2260-49f6-a57f-a1b1a0c63c2f");
    assert_eq!(spec["groups"][2], "system:authenticated");
    assert_eq!(
        spec["extra"]["authentication.kubernetes.io/credential-id"][0],
        "JTI=76d63a36-15ce-4fba-8bcb-69925c13ddbb"
    );
    assert_eq!(
        spec["resourceAttributes"],
        json!({"namespace": "streams", "verb": "get", "group": "konsumerator.lwolf.org", "resource": "consumers", "name": "orders"})
    );
    assert!(
        !sars[0].to_string().contains(TOKEN),
        "no token in a SubjectAccessReview"
    );

    // Another namespace: 403 naming the permission.
    let (status, p) = k
        .call(Some(TOKEN), "GET", "/v1/namespaces/other/consumers", None)
        .await;
    assert_eq!(status, 403, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(USER)
            && detail.contains("list consumers (konsumerator.lwolf.org) in namespace \"other\""),
        "{detail}"
    );
    // All namespaces: only those it may list.
    let (status, all) = k.call(Some(TOKEN), "GET", "/v1/consumers", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["items"][0]["name"], "orders");
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_through_the_api_is_a_scalingsubscription_with_a_secret_it_owns() {
    let fake = setup();
    let k = Kube::start(&fake, Duration::from_millis(200)).await;
    let (status, created) = k
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(
                json!({"metadata": {"name": "feed", "labels": {"team": "payments"}},
                        "spec": {"url": "https://hooks.example.com/konsumer"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created:#}");
    let secret = created["secret"].as_str().unwrap();
    let stored = fake.subscription("streams", "feed").unwrap();
    assert_eq!(
        stored["spec"]["secretRef"],
        json!({"name": "feed-whsec", "key": "secret"})
    );
    assert_eq!(stored["metadata"]["labels"]["team"], "payments");
    let s = fake.secret("streams", "feed-whsec").unwrap();
    assert_eq!(
        s["metadata"]["ownerReferences"],
        json!([{"apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscription", "name": "feed",
                "uid": stored["metadata"]["uid"], "controller": true}])
    );
    let value = base64::engine::general_purpose::STANDARD
        .decode(s["data"]["secret"].as_str().unwrap())
        .unwrap();
    assert_eq!(value, secret.as_bytes());

    let (status, got) = k
        .call(
            Some(TOKEN),
            "GET",
            "/v1/namespaces/streams/subscriptions/feed",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!got.to_string().contains(secret));
    let (status, dup) = k
        .call(Some(TOKEN), "POST", "/v1/namespaces/streams/subscriptions",
              Some(json!({"metadata": {"name": "feed"}, "spec": {"url": "https://hooks.example.com/x"}})))
        .await;
    assert_eq!(status, 409, "{dup}");

    put_reading_again_on_conflict(&k, "/v1/namespaces/streams/subscriptions/feed", |s| {
        s["spec"]["timeout"] = json!("20s")
    })
    .await;
    assert_eq!(
        fake.subscription("streams", "feed").unwrap()["spec"]["timeout"],
        "20s"
    );

    // Not granted: 403 that names the subresource.
    let (status, p) = k
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret",
            None,
        )
        .await;
    assert_eq!(status, 403, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("resources: [\"scalingsubscriptions/rotate-secret\"], verbs: [\"create\"]"),
        "{p}"
    );
    fake.grant(
        USER,
        "create",
        "konsumer.dev",
        "scalingsubscriptions/rotate-secret",
        Some("streams"),
    );
    // A denial is cached no longer than an allowance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, r) = k
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/rotate-secret?grace=2h",
            None,
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let rotated = base64::engine::general_purpose::STANDARD
        .decode(
            fake.secret("streams", "feed-whsec").unwrap()["data"]["secret"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(rotated).unwrap(),
        format!("{} {secret}", r["secret"].as_str().unwrap())
    );

    let (status, _) = k
        .call(
            Some(TOKEN),
            "DELETE",
            "/v1/namespaces/streams/subscriptions/feed",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(fake.subscription("streams", "feed").is_none());
    let (status, _) = k
        .call(
            Some(TOKEN),
            "DELETE",
            "/v1/namespaces/streams/subscriptions/feed",
            None,
        )
        .await;
    assert_eq!(status, 404);
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_writer_binding_a_create_says_so_and_leaves_no_subscription_behind() {
    let (_, fake) = FakeApiServer::start();
    fake.expect_forbidden();
    fake.add_token(
        TOKEN,
        json!({"username": USER, "groups": ["system:authenticated"]}),
    );
    fake.grant(
        USER,
        "create",
        "konsumer.dev",
        "scalingsubscriptions",
        Some("streams"),
    );
    let k = Kube::start(&fake, Duration::from_secs(10)).await;
    let (status, p) = k
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(json!({"metadata": {"name": "feed"}, "spec": {"url": "https://hooks.example.com/x"}})),
        )
        .await;
    assert_eq!(status, 500, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains(
            "bind konsumer's ClusterRole konsumer-secret-writer in namespace \"streams\""
        ),
        "{p}"
    );
    assert!(
        fake.subscription("streams", "feed").is_none(),
        "the create was undone"
    );
    assert!(
        fake.forbidden().iter().any(|f| f.contains("/secrets")),
        "{:?}",
        fake.forbidden()
    );
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_delivering_replica_answers_for_deliveries_and_redelivery() {
    let fake = setup();
    fake.grant(
        USER,
        "create",
        "konsumer.dev",
        "scalingsubscriptions/redeliver",
        Some("streams"),
    );
    let a = Kube::start_as(&fake, Duration::from_secs(10), "replica-a").await;
    let mut leading = a.running.as_ref().unwrap().is_leader.clone().unwrap();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("replica a leads")
        .unwrap();
    let b = Kube::start_as(&fake, Duration::from_secs(10), "replica-b").await;
    assert!(
        !*b.running
            .as_ref()
            .unwrap()
            .is_leader
            .clone()
            .unwrap()
            .borrow()
    );
    let (status, created) = b
        .call(Some(TOKEN), "POST", "/v1/namespaces/streams/subscriptions",
              Some(json!({"metadata": {"name": "feed"}, "spec": {"url": "https://hooks.example.com/x"}})))
        .await;
    assert_eq!(status, 201, "{created}");

    let path = "/v1/namespaces/streams/subscriptions/feed/deliveries";
    let (status, p) = b.call(Some(TOKEN), "GET", path, None).await;
    assert_eq!(status, 503, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("retry"), "{p}");
    let raw = b
        .client
        .get(format!("{}{path}", b.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["retry-after"], "1");
    let (status, p) = b
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions/feed/redeliver",
            Some(json!({"consumer": "orders", "fromSequence": 1})),
        )
        .await;
    assert_eq!(status, 503, "{p}");
    let (status, d) = a.call(Some(TOKEN), "GET", path, None).await;
    assert_eq!(status, 200, "{d}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_audience_only_tokens_minted_for_konsumer_are_accepted() {
    let fake = setup();
    fake.add_token_for(
        "minted-for-konsumer",
        json!({"username": USER, "groups": ["system:authenticated"]}),
        &["konsumer"],
    );
    let k = Kube::start_with(
        &fake,
        Duration::from_secs(10),
        "api-test",
        vec!["konsumer".into()],
    )
    .await;
    let path = "/v1/namespaces/streams/consumers/orders";
    let (status, p) = k.call(Some(TOKEN), "GET", path, None).await;
    assert_eq!(status, 401, "a token for the apiserver's audience: {p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("is invalid for the target audiences"),
        "{p}"
    );
    let (status, c) = k.call(Some("minted-for-konsumer"), "GET", path, None).await;
    assert_eq!(status, 200, "{c}");
    let asked: Vec<Value> = fake
        .reviews()
        .iter()
        .filter(|r| r["kind"] == "TokenReview")
        .map(|r| r["spec"]["audiences"].clone())
        .collect();
    assert!(asked.iter().all(|a| *a == json!(["konsumer"])), "{asked:?}");
    k.stop().await;
}

/// A mocked apiserver that answers each request with the next recorded response of
/// `exchanges` verbatim, and keeps the bodies konsumer sent.
fn replay(exchanges: Vec<Value>) -> (kube::Client, Arc<std::sync::Mutex<Vec<Value>>>) {
    use crate::fake_apiserver::MockBody;
    use http_body_util::BodyExt;
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<MockBody>>();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = sent.clone();
    tokio::spawn(async move {
        for e in exchanges {
            let Some((request, respond)) = handle.next_request().await else {
                return;
            };
            let body = request.into_body().collect_bytes().await.unwrap();
            kept.lock()
                .unwrap()
                .push(serde_json::from_slice::<Value>(&body).unwrap());
            let r = &e["response"];
            respond.send_response(
                http::Response::builder()
                    .status(r["status"].as_u64().unwrap() as u16)
                    .header("content-type", "application/json")
                    .body(
                        http_body_util::Full::new(bytes::Bytes::from(r["body"].to_string()))
                            .boxed(),
                    )
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "default"), sent)
}

fn recorded(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apiserver")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["exchanges"].as_array().unwrap().clone()
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

/// The request konsumer sent, as the recording shows it (token redacted, no empty metadata).
fn as_recorded(mut sent: Value) -> Value {
    if let Some(t) = sent.pointer_mut("/spec/token") {
        *t = json!("<redacted>");
    }
    if let Some(o) = sent.as_object_mut()
        && o.get("metadata") == Some(&json!({}))
    {
        o.remove("metadata");
    }
    sent
}

#[tokio::test]
async fn konsumer_reads_the_recorded_tokenreview_and_subjectaccessreview_answers() {
    use konsumer::http_api::auth::{Access, Auth};
    let reviews = recorded("08-tokenreview.json");
    // No audience asked: the valid token, then the garbage one.
    let (client, sent) = replay(reviews[..2].to_vec());
    let auth = Auth::kube(client, Duration::from_secs(10), Vec::new());
    let who = auth.authenticate(&bearer("sa-token")).await.unwrap();
    assert_eq!(who.username, "system:serviceaccount:cap-a:cap-api-client");
    assert_eq!(
        who.uid.as_deref(),
        Some("e3da2fdf-2260-49f6-a57f-a1b1a0c63c2f")
    );
    assert_eq!(who.groups.len(), 3);
    assert_eq!(
        who.extra["authentication.kubernetes.io/credential-id"].len(),
        1
    );
    let p = auth.authenticate(&bearer("garbage")).await.unwrap_err();
    assert_eq!(p.status, 401);
    assert!(p.detail.contains("invalid bearer token"), "{}", p.detail);
    let sent = sent.lock().unwrap().clone();
    for (i, s) in sent.into_iter().enumerate() {
        assert_eq!(as_recorded(s), reviews[i]["request"]["body"], "request {i}");
    }
    // With --api-audience konsumer: a token for the apiserver is refused, one for konsumer taken.
    let (client, sent) = replay(reviews[2..4].to_vec());
    let auth = Auth::kube(client, Duration::from_secs(10), vec!["konsumer".into()]);
    let p = auth.authenticate(&bearer("sa-token")).await.unwrap_err();
    assert!(
        p.detail.contains("is invalid for the target audiences"),
        "{}",
        p.detail
    );
    auth.authenticate(&bearer("konsumer-token")).await.unwrap();
    let sent = sent.lock().unwrap().clone();
    for (i, s) in sent.into_iter().enumerate() {
        assert_eq!(
            as_recorded(s),
            reviews[2 + i]["request"]["body"],
            "request {}",
            2 + i
        );
    }

    // The identity the TokenReview gave, in the SubjectAccessReviews recorded for it.
    let sars = recorded("08-subjectaccessreview.json");
    let (client, sent) = replay(sars[3..5].to_vec());
    let authz = Auth::kube(client, Duration::from_secs(10), Vec::new());
    let access = |verb| Access {
        verb,
        group: "konsumer.dev",
        resource: "scalingsubscriptions",
        subresource: None,
        namespace: Some("cap-a".into()),
        name: None,
    };
    assert!(authz.allowed(&who, &access("get")).await.unwrap());
    assert!(!authz.allowed(&who, &access("list")).await.unwrap());
    let sent = sent.lock().unwrap().clone();
    for (i, s) in sent.into_iter().enumerate() {
        assert_eq!(
            as_recorded(s),
            sars[3 + i]["request"]["body"],
            "SubjectAccessReview {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_ping_is_signed_with_the_secret_konsumer_made_and_stale_writes_conflict() {
    let rx = crate::receiver::Receiver::start().await;
    let fake = setup();
    let k = Kube::start(&fake, Duration::from_secs(10)).await;
    let (status, created) = k
        .call(
            Some(TOKEN),
            "POST",
            "/v1/namespaces/streams/subscriptions",
            Some(json!({"metadata": {"name": "feed"}, "spec": {"url": rx.url()}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    // The delivery side sees the subscription through its watch; then the ping goes out.
    let started = std::time::Instant::now();
    let test = loop {
        let (status, test) = k
            .call(
                Some(TOKEN),
                "POST",
                "/v1/namespaces/streams/subscriptions/feed/test",
                None,
            )
            .await;
        if status == 200 {
            break test;
        }
        assert_eq!(status, 404, "{test}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never seen by the watch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(test["statusCode"], 200, "{test}");
    let pings: Vec<_> = rx
        .events(&[&secret])
        .into_iter()
        .filter(|e| e.type_ == "dev.konsumer.subscription.ping.v1")
        .collect();
    assert_eq!(pings.len(), 1);

    // A PUT from an old read conflicts, as the apiserver says. The delivery
    // side may still be writing the subscription's status (a new
    // resourceVersion) after the ping, so the first PUT reads again on a
    // conflict, as any client does; the stale one below may not.
    let (got, _) =
        put_reading_again_on_conflict(&k, "/v1/namespaces/streams/subscriptions/feed", |s| {
            s["spec"]["timeout"] = json!("20s")
        })
        .await;
    let mut stale = got;
    stale["spec"]["timeout"] = json!("30s");
    let (status, p) = k
        .call(
            Some(TOKEN),
            "PUT",
            "/v1/namespaces/streams/subscriptions/feed",
            Some(stale),
        )
        .await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(
        fake.subscription("streams", "feed").unwrap()["spec"]["timeout"],
        "20s"
    );
    k.stop().await;
}
