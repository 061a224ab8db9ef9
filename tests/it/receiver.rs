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
    tls: bool,
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
        Receiver {
            addr,
            shared,
            tls: false,
        }
    }

    /// An HTTPS receiver on 127.0.0.1 with this certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        konsumer::server::tls::provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { answer(state, headers, body).await }
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                });
            }
        });
        Receiver {
            addr,
            shared,
            tls: true,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/hook", self.addr)
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

/// A minimal HTTP CONNECT proxy on loopback (what `--egress-proxy` points at),
/// recording every target it was asked to tunnel to.
#[derive(Clone)]
pub struct ConnectProxy {
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match inbound.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let mut words = text.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                        let _ = inbound
                            .write_all(
                                b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        let _ = inbound
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    if inbound
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        ConnectProxy { addr, targets }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}
