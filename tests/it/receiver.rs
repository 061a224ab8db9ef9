//! A real HTTP receiver on loopback for scaling events: records every request and
//! answers from a script (status codes, headers, hangs), verifies signatures with
//! the `standardwebhooks` crate and parses events with the CloudEvents SDK.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudevents::AttributesReader;
use serde_json::Value;

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    With(u16, Vec<(&'static str, String)>),
    /// Waits this long before answering 200 (past the sender's timeout).
    Hang(Duration),
}

#[derive(Clone, Debug)]
pub struct Got {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// What it was answered (200 for a hang that completed).
    pub answered: u16,
}

#[derive(Default)]
struct Shared {
    got: Vec<Got>,
    script: VecDeque<Reply>,
    /// Answer 500 to every n-th request (1-based), when set.
    fail_every: Option<usize>,
    /// Time taken to answer each request.
    delay: Duration,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

/// A received event, as a CloudEvents SDK reads it.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub type_: String,
    pub source: String,
    pub subject: Option<String>,
    pub data: Value,
    pub answered: u16,
    pub webhook_id: String,
}

impl Received {
    pub fn consumer(&self) -> String {
        format!(
            "{}/{}",
            self.data["consumer"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            self.data["consumer"]["name"].as_str().unwrap_or_default()
        )
    }

    pub fn sequence(&self) -> i64 {
        self.data["sequence"].as_i64().unwrap_or(-1)
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { answer(state, headers, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().unwrap().script.extend(replies);
    }

    pub fn fail_every(&self, n: usize) {
        self.shared.lock().unwrap().fail_every = Some(n);
    }

    pub fn delay(&self, d: Duration) {
        self.shared.lock().unwrap().delay = d;
    }

    pub fn requests(&self) -> Vec<Got> {
        self.shared.lock().unwrap().got.clone()
    }

    pub fn count(&self) -> usize {
        self.shared.lock().unwrap().got.len()
    }

    /// Every request parsed as a CloudEvent (structured or binary), its
    /// Standard Webhooks signature checked with every secret given.
    pub fn events(&self, secrets: &[&str]) -> Vec<Received> {
        self.requests()
            .iter()
            .map(|g| {
                for s in secrets {
                    standardwebhooks::Webhook::new(s)
                        .unwrap()
                        .verify(&g.body, &g.headers)
                        .unwrap_or_else(|e| panic!("signature with {s}: {e:?}"));
                }
                let event = cloudevents::binding::http::to_event(&g.headers, g.body.to_vec())
                    .unwrap_or_else(|e| {
                        panic!("not a CloudEvent ({e}): {:?} {:?}", g.headers, g.body)
                    });
                assert_eq!(event.specversion().as_str(), "1.0");
                let data = match event.data() {
                    Some(cloudevents::Data::Json(v)) => v.clone(),
                    Some(cloudevents::Data::Binary(b)) => serde_json::from_slice(b).unwrap(),
                    Some(cloudevents::Data::String(s)) => serde_json::from_str(s).unwrap(),
                    None => Value::Null,
                };
                Received {
                    id: event.id().to_string(),
                    type_: event.ty().to_string(),
                    source: event.source().to_string(),
                    subject: event.subject().map(String::from),
                    data,
                    answered: g.answered,
                    webhook_id: g.headers["webhook-id"].to_str().unwrap().to_string(),
                }
            })
            .collect()
    }

    /// Waits until `check` holds for the events received (2xx-answered or not).
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        secrets: &[&str],
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let events = self.events(secrets);
            if check(&events) {
                return events;
            }
            assert!(
                started.elapsed() < within,
                "timed out waiting for {what}; got {} requests: {:#?}",
                events.len(),
                events
                    .iter()
                    .map(|e| (e.consumer(), e.type_.clone(), e.sequence(), e.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(state: Arc<Mutex<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (reply, delay) = {
        let mut s = state.lock().unwrap();
        let n = s.got.len() + 1;
        let reply = s.script.pop_front().unwrap_or_else(|| match s.fail_every {
            Some(k) if n.is_multiple_of(k) => Reply::Status(500),
            _ => Reply::Status(200),
        });
        (reply, s.delay)
    };
    let at = Instant::now();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, extra) = match &reply {
        Reply::Status(c) => (*c, Vec::new()),
        Reply::With(c, h) => (*c, h.clone()),
        Reply::Hang(d) => {
            tokio::time::sleep(*d).await;
            (200, Vec::new())
        }
    };
    state.lock().unwrap().got.push(Got {
        headers,
        body,
        at,
        answered: if matches!(reply, Reply::Hang(_)) {
            0
        } else {
            status
        },
    });
    let mut resp = (StatusCode::from_u16(status).unwrap(), "ok").into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

/// The events of each Consumer in the order received, only those answered 2xx,
/// first appearance of each id.
pub fn acknowledged_by_consumer(events: &[Received]) -> BTreeMap<String, Vec<Received>> {
    let mut out: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for e in events.iter().filter(|e| (200..300).contains(&e.answered)) {
        let list = out.entry(e.consumer()).or_default();
        if !list.iter().any(|x| x.id == e.id) {
            list.push(e.clone());
        }
    }
    out
}
