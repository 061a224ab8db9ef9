//! Hostile clients on real loopback sockets: idle, silent and slow connections
//! against both listeners, a full connection table, a descriptor flood, and the
//! stop. Every loop is bounded in count and time. Attackers connect from
//! 127.0.0.2 so that the well-behaved client (127.0.0.1) is another peer, as the
//! apiserver would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use konsumer::config::ConnectionConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::e2e_local::Binary;
use crate::support::*;

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `addr` from `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    try_connect_from(from, addr).await.unwrap()
}

async fn try_connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

fn connector(ca_pem: &[u8]) -> TlsConnector {
    konsumer::server::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_from(from: [u8; 4], addr: SocketAddr, ca_pem: &[u8]) -> TlsStream<TcpStream> {
    let tcp = connect_from(from, addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector(ca_pem).connect(name, tcp).await.unwrap()
}

/// Sends one request that gets a small answer and reads the answer's head, so the
/// connection is left idle and kept alive.
async fn one_request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5s")
            .unwrap();
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}

/// How long until the server closes `s` (EOF or reset); `None` if still open
/// after `max`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    max: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(max, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// Sends a request line and then a header every 400 ms, never finishing; returns
/// when the server closed the connection.
async fn slow_headers<S>(stream: S, max: Duration) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let _ = w.write_all(b"POST /mutate/workloads HTTP/1.1\r\n").await;
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if w.write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let took = closed_within(&mut r, max).await;
    writer.abort();
    took
}

fn short_timeouts(config: &mut konsumer::config::ServeConfig) {
    config.connections = ConnectionConfig {
        handshake_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_millis(1500),
        idle_timeout: Duration::from_secs(3),
        ..ConnectionConfig::default()
    };
}

fn webhook_addr(s: &LocalServer) -> SocketAddr {
    s.running.as_ref().unwrap().webhook_addr
}

fn admin_addr(s: &LocalServer) -> SocketAddr {
    s.running.as_ref().unwrap().admin_addr
}

fn assert_closed_near(what: &str, took: Option<Duration>, timeout: Duration) {
    let took = took.unwrap_or_else(|| panic!("{what}: still open well past its {timeout:?}"));
    assert!(
        took >= timeout.mul_f32(0.6) && took <= timeout + Duration::from_millis(1500),
        "{what}: closed after {took:?}, its timeout is {timeout:?}"
    );
}

#[tokio::test]
async fn idle_and_slow_header_connections_on_both_listeners_are_closed_within_their_timeouts() {
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], short_timeouts).await;
    let ca = std::fs::read(s.running.as_ref().unwrap().generated_ca.as_ref().unwrap()).unwrap();
    let (webhook, admin) = (webhook_addr(&s), admin_addr(&s));
    let (handshake, header, idle) = (
        Duration::from_secs(1),
        Duration::from_millis(1500),
        Duration::from_secs(3),
    );

    // Silent before the TLS handshake.
    let mut silent_tls = connect_from(ATTACKER, webhook).await;
    // Handshaken, then silent.
    let mut mute_tls = tls_from(ATTACKER, webhook, &ca).await;
    // Admin: silent, and a header line every 400 ms (never finishing).
    let mut silent_admin = connect_from(ATTACKER, admin).await;
    let slow_admin = connect_from(ATTACKER, admin).await;
    let slow_webhook = tls_from(ATTACKER, webhook, &ca).await;
    // Kept alive after one request.
    let mut idle_admin = connect_from(ATTACKER, admin).await;
    one_request(&mut idle_admin, "/livez").await;
    let mut idle_webhook = tls_from(ATTACKER, webhook, &ca).await;
    one_request(&mut idle_webhook, "/mutate/workloads").await;

    let max = Duration::from_secs(6);
    let (a, b, c, d, e, f, g) = tokio::join!(
        closed_within(&mut silent_tls, max),
        closed_within(&mut mute_tls, max),
        closed_within(&mut silent_admin, max),
        slow_headers(slow_admin, max),
        slow_headers(slow_webhook, max),
        closed_within(&mut idle_admin, max),
        closed_within(&mut idle_webhook, max),
    );
    assert_closed_near("webhook, silent before the handshake", a, handshake);
    assert_closed_near("webhook, silent after the handshake", b, header);
    assert_closed_near("admin, silent", c, header);
    assert_closed_near("admin, headers trickling", d, header);
    assert_closed_near("webhook, headers trickling", e, header);
    assert_closed_near("admin, idle keep-alive", f, idle);
    assert_closed_near("webhook, idle keep-alive", g, idle);
    s.stop().await;
}

/// A client that opens a new connection for every request.
fn fresh_client(ca: &[u8]) -> reqwest::Client {
    konsumer::server::tls::provider();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .http1_only()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

fn displaced(metrics: &str, listener: &str) -> f64 {
    let prefix = format!("konsumer_connections_displaced_total{{listener=\"{listener}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_well_behaved_request_is_answered_while_idle_and_slow_peers_hold_every_slot() {
    let s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |c| {
        // One peer may take every slot here: the displacement alone must save
        // the well-behaved client.
        c.connections.webhook_max = Some(8);
        c.connections.webhook_max_per_peer = Some(8);
        c.connections.admin_max = Some(4);
    })
    .await;
    let ca = std::fs::read(s.running.as_ref().unwrap().generated_ca.as_ref().unwrap()).unwrap();
    let (webhook, admin) = (webhook_addr(&s), admin_addr(&s));
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = tls_from(ATTACKER, webhook, &ca).await;
        one_request(&mut c, "/mutate/workloads").await;
        idle.push(c);
    }
    let mut silent = Vec::new();
    for _ in 0..4 {
        // Never starts its handshake: holds a slot for the handshake timeout.
        silent.push(connect_from(ATTACKER, webhook).await);
    }
    for _ in 0..4 {
        let mut c = connect_from(ATTACKER, admin).await;
        one_request(&mut c, "/livez").await;
        silent.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = fresh_client(&ca);
    for round in 0..3 {
        let started = Instant::now();
        let resp = client
            .post(format!(
                "https://localhost:{}/mutate/workloads",
                webhook.port()
            ))
            .header("content-type", "application/json")
            .body(fixture_bytes("pod-create-indexed-job"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let review: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(review["response"]["allowed"], true, "{review}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "round {round}: answered after {took:?} with every slot held (the apiserver allows 10s)"
        );
        let started = Instant::now();
        let livez = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
            .get(format!("http://{admin}/livez"))
            .send()
            .await
            .unwrap();
        assert_eq!(livez.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round}: /livez after {:?}",
            started.elapsed()
        );
    }
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The first request took a held slot; the later ones reused the slot each
    // closed connection left.
    assert!(displaced(&metrics, "webhook") >= 1.0, "{metrics}");
    assert!(displaced(&metrics, "admin") >= 1.0, "{metrics}");
    drop((idle, silent));
    s.stop().await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), orders_yaml()).unwrap();
    let konsumer = Binary::serve_local_under(
        &["prlimit", "--nofile=256:4096", "--"],
        dir.path(),
        &["--no-reconciler"],
    );
    assert_eq!(soft_nofile(konsumer.pid()), 4096);
    let status = konsumer.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_on_the_admin_port_cannot_exhaust_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), orders_yaml()).unwrap();
    let limit = 512;
    let konsumer = Binary::serve_local_under(
        &["prlimit", &format!("--nofile={limit}:{limit}"), "--"],
        dir.path(),
        &["--no-reconciler"],
    );
    let pid = konsumer.pid();
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    let admin = konsumer.admin;
    // Twice the process's whole descriptor limit, all idle.
    let mut flood = Vec::new();
    let mut most = 0;
    for i in 0..1024 {
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_millis(500),
            try_connect_from(ATTACKER, admin),
        )
        .await
        {
            flood.push(c);
        }
        if i % 128 == 0 {
            most = most.max(open_fds(pid));
        }
    }
    assert!(flood.len() >= 512, "opened {}", flood.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    most = most.max(open_fds(pid));
    assert!(
        most < limit as usize - 200,
        "{most} descriptors open of {limit}"
    );

    let started = Instant::now();
    let livez = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{admin}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(livez.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/livez after {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let resp = fresh_client(&ca)
        .post(format!(
            "https://localhost:{}/mutate/workloads",
            konsumer.webhook.port()
        ))
        .body(fixture_bytes("pod-create-indexed-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "webhook after {:?}",
        started.elapsed()
    );
    let accept_errors = konsumer
        .logs()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot accept")
        })
        .count();
    assert_eq!(accept_errors, 0, "{:?}", konsumer.logs());
    drop(flood);
    let status = konsumer.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_stop_closes_waiting_connections_at_once_and_lets_a_request_in_flight_finish() {
    let mut s = LocalServer::start_with(&[("orders.yaml", &orders_yaml())], |c| {
        c.shutdown_grace = Duration::from_secs(20);
    })
    .await;
    let ca = std::fs::read(s.running.as_ref().unwrap().generated_ca.as_ref().unwrap()).unwrap();
    let webhook = webhook_addr(&s);
    let mut idle = tls_from(ATTACKER, webhook, &ca).await;
    one_request(&mut idle, "/mutate/workloads").await;
    let mut mute = tls_from(ATTACKER, webhook, &ca).await;
    let mut silent = connect_from(ATTACKER, webhook).await;
    let mut partial = tls_from(ATTACKER, webhook, &ca).await;
    partial
        .write_all(b"POST /mutate/workloads HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A request in flight: half its body now, the rest in a second.
    let body = fixture_bytes("pod-create-indexed-job");
    let (first, rest) = body.split_at(body.len() / 2);
    let (first, rest) = (
        bytes::Bytes::copy_from_slice(first),
        bytes::Bytes::copy_from_slice(rest),
    );
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(http_body::Frame::data(
        first,
    ))])
    .chain(futures::stream::once(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(http_body::Frame::data(rest))
    }));
    let in_flight = tokio::spawn(
        fresh_client(&ca)
            .post(format!(
                "https://localhost:{}/mutate/workloads",
                webhook.port()
            ))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    s.running.take().unwrap().stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?} (grace 20s)"
    );
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the request in flight got its answer");
    for (what, c) in [
        (
            "idle",
            closed_within(&mut idle, Duration::from_millis(100)).await,
        ),
        (
            "mute",
            closed_within(&mut mute, Duration::from_millis(100)).await,
        ),
        (
            "silent",
            closed_within(&mut silent, Duration::from_millis(100)).await,
        ),
        (
            "partial headers",
            closed_within(&mut partial, Duration::from_millis(100)).await,
        ),
    ] {
        assert!(c.is_some(), "{what} connection still open after the stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), orders_yaml()).unwrap();
    let mut konsumer =
        Binary::serve_local(dir.path(), &["--no-reconciler", "--shutdown-grace", "30s"]);
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    // A request whose body never ends keeps the first stop waiting (its budget is 10s).
    let first = http_body::Frame::data(bytes::Bytes::from_static(b"{"));
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(first)])
        .chain(futures::stream::pending());
    let stuck = tokio::spawn(
        fresh_client(&ca)
            .post(format!(
                "https://localhost:{}/mutate/workloads",
                konsumer.webhook.port()
            ))
            .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    konsumer.signal("TERM");
    assert!(
        konsumer.wait_exit(Duration::from_millis(700)).is_none(),
        "the first SIGTERM waits for the request in flight"
    );
    let started = Instant::now();
    konsumer.signal("TERM");
    let status = konsumer
        .wait_exit(Duration::from_secs(3))
        .expect("a second SIGTERM exits at once");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !status.success(),
        "a forced stop is not a clean exit: {status:?}"
    );
    stuck.abort();
}
