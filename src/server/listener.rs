//! The bounded listener every HTTP port is served through (the webhook over TLS,
//! the admin port in plain HTTP): HTTP/1.1 with keep-alive and TCP_NODELAY, a cap
//! on connections, a share per peer address, short handshake and header
//! deadlines, idle keep-alive connections that give their slot to a new
//! connection, and a stop that closes waiting connections at once and lets
//! in-flight requests finish.
//!
//! It is generic over the hyper service it serves, so the webhook can be an axum
//! router (through `TowerToHyperService`) or a plain hyper service.

pub(crate) mod slots;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use slots::{Phase, Verdict, View};

/// Bounds of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections one peer address may hold at once.
    pub max_per_peer: usize,
    /// Time a client gets for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a new connection gets to send its first request's headers.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may stay without a request (and then send the
    /// next request's headers) before it is closed.
    pub idle_timeout: Duration,
    /// Time open requests get to finish after the stop.
    pub grace: Duration,
}

impl Limits {
    /// The webhook's defaults for `max_connections` slots: the apiserver's
    /// handshake and headers take milliseconds, so the deadlines are short;
    /// idle connections stay a minute (the apiserver reuses them) unless a new
    /// connection needs the slot. One address may hold three quarters of the
    /// slots: behind a proxy (konnectivity) every request comes from one peer.
    pub fn webhook(max_connections: usize) -> Limits {
        Limits {
            max_connections: max_connections.max(1),
            max_per_peer: (max_connections * 3 / 4).max(1),
            handshake_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(20),
        }
    }

    /// The admin port: probes and scrapes, a few connections each.
    pub fn admin(max_connections: usize) -> Limits {
        Limits {
            max_per_peer: (max_connections / 2).max(1),
            idle_timeout: Duration::from_secs(30),
            ..Limits::webhook(max_connections)
        }
    }
}

/// What a listener serves with.
#[derive(Clone, Debug)]
pub struct Options {
    /// For logs and the `listener` metric label: `webhook`, `admin`.
    pub name: &'static str,
    /// TLS (the webhook); `None` serves plain HTTP (the admin port).
    pub tls: Option<Arc<ServerConfig>>,
    pub limits: Limits,
    /// Counts connections displaced to free a slot.
    pub displaced: Counter,
}

impl Options {
    pub fn new(name: &'static str, tls: Option<Arc<ServerConfig>>, limits: Limits) -> Options {
        Options {
            name,
            tls,
            limits,
            displaced: Counter::default(),
        }
    }
}

/// One open connection, shared by its task, its service and the table.
struct Conn {
    peer: IpAddr,
    phase: AtomicU8,
    /// Nanoseconds since the table's epoch when `phase` was entered.
    since: AtomicU64,
    /// Whether a request was read on it.
    served: AtomicBool,
    /// Close now (whatever is under way).
    hard: CancellationToken,
    /// Finish the request in flight, if any, then close.
    soft: CancellationToken,
}

struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// A slot was freed or became free to take.
    freed: Notify,
    epoch: Instant,
    limits: Limits,
    displaced: Counter,
}

impl Table {
    fn new(limits: Limits, displaced: Counter) -> Arc<Table> {
        Arc::new(Table {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            freed: Notify::new(),
            epoch: Instant::now(),
            limits,
            displaced,
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn set_phase(&self, conn: &Conn, phase: Phase) {
        conn.since.store(self.now(), Ordering::Relaxed);
        conn.phase.store(phase.as_u8(), Ordering::Relaxed);
        if phase == Phase::Idle {
            self.freed.notify_one();
        }
    }

    fn views(&self, conns: &HashMap<u64, Arc<Conn>>) -> Vec<View> {
        conns
            .iter()
            .map(|(id, c)| View {
                id: *id,
                peer: c.peer,
                phase: Phase::from_u8(c.phase.load(Ordering::Relaxed)),
                since: self.epoch + Duration::from_nanos(c.since.load(Ordering::Relaxed)),
            })
            .collect()
    }

    fn has_room(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        slots::has_room(&self.views(&conns), self.limits.max_connections)
    }

    /// A slot for a connection from `peer`, displacing a waiting connection if
    /// need be; `Err(verdict)` when there is none.
    fn admit(&self, peer: IpAddr, phase: Phase) -> Result<(u64, Arc<Conn>), Verdict> {
        let peer = slots::canonical(peer);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let verdict = slots::admit(
            &self.views(&conns),
            peer,
            self.limits.max_connections,
            self.limits.max_per_peer,
        );
        match verdict {
            Verdict::Admit => {}
            Verdict::Evict(victim) => {
                if let Some(old) = conns.remove(&victim) {
                    match Phase::from_u8(old.phase.load(Ordering::Relaxed)) {
                        // hyper closes an idle connection at once, and finishes a
                        // request whose headers just arrived.
                        Phase::Idle => old.soft.cancel(),
                        _ => old.hard.cancel(),
                    }
                    self.displaced.inc();
                    tracing::debug!(peer = %old.peer, "connection slot taken over by a new connection");
                }
            }
            Verdict::Wait | Verdict::Refuse => return Err(verdict),
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            peer,
            phase: AtomicU8::new(phase.as_u8()),
            since: AtomicU64::new(self.now()),
            served: AtomicBool::new(false),
            hard: CancellationToken::new(),
            soft: CancellationToken::new(),
        });
        conns.insert(id, conn.clone());
        Ok((id, conn))
    }

    fn release(&self, id: u64) {
        let removed = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if removed.is_some() {
            self.freed.notify_one();
        }
    }

    /// The stop: connections without a request in flight close now, busy ones
    /// after their request.
    fn close_waiting(&self) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.values() {
            match Phase::from_u8(c.phase.load(Ordering::Relaxed)) {
                Phase::Handshake | Phase::AwaitingRequest => c.hard.cancel(),
                Phase::Idle | Phase::Busy => c.soft.cancel(),
            }
        }
    }

    fn close_all(&self) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.values() {
            c.hard.cancel();
        }
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Frees the slot when the connection's task ends, however it ends.
struct SlotGuard {
    table: Arc<Table>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

/// Marks its connection idle again when the request's answer is ready (or the
/// request was dropped).
struct BusyGuard {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.table.set_phase(&self.conn, Phase::Idle);
    }
}

/// The served service, with the connection's phase kept up to date.
struct Tracked<S> {
    inner: S,
    table: Arc<Table>,
    conn: Arc<Conn>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<B>, S::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.conn.served.store(true, Ordering::Relaxed);
        self.table.set_phase(&self.conn, Phase::Busy);
        let guard = BusyGuard {
            table: self.table.clone(),
            conn: self.conn.clone(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let out = answer.await;
            drop(guard);
            out
        })
    }
}

/// Rate-limits the "accept failed" warning (out of file descriptors, say, it
/// would repeat every few milliseconds).
struct AcceptErrors {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn report(&mut self, name: &str, e: &std::io::Error) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(
                listener = name,
                error = %e,
                similar_since_last = self.suppressed,
                "cannot accept connections (out of file descriptors? see --max-connections); retrying"
            );
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// Serves `service` on `listener` (over TLS when `options.tls` is set) until
/// `shutdown`, then closes waiting connections at once and gives requests in
/// flight up to `options.limits.grace` to finish.
pub async fn serve<S, B>(
    listener: TcpListener,
    options: Options,
    service: S,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Options {
        name,
        tls,
        limits,
        displaced,
    } = options;
    let acceptor = tls.map(TlsAcceptor::from);
    let table = Table::new(limits, displaced);
    let mut errors = AcceptErrors {
        last: None,
        suppressed: 0,
    };
    'accept: loop {
        // Every slot busy: leave newcomers in the listen backlog until one frees.
        while !table.has_room() {
            tokio::select! {
                _ = shutdown.cancelled() => break 'accept,
                _ = table.freed.notified() => {}
            }
        }
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    errors.report(name, &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let first = if acceptor.is_some() {
            Phase::Handshake
        } else {
            Phase::AwaitingRequest
        };
        let (id, conn) = match admit_waiting(&table, peer, first, &shutdown).await {
            Some(slot) => slot,
            None => continue,
        };
        let _ = tcp.set_nodelay(true);
        let guard = SlotGuard {
            table: table.clone(),
            id,
        };
        tokio::spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            service.clone(),
            table.clone(),
            conn,
            guard,
        ));
    }
    drop(listener);
    table.close_waiting();
    let drained = async {
        while table.len() > 0 {
            tokio::select! {
                _ = table.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    };
    if tokio::time::timeout(limits.grace, drained).await.is_err() {
        tracing::warn!(
            listener = name,
            open = table.len(),
            "connections still open after the grace period; closing them"
        );
        table.close_all();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while table.len() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    } else {
        tracing::debug!(listener = name, "all connections closed");
    }
}

/// A slot for a just-accepted connection; waits (at most a header timeout) while
/// every slot is busy. `None`: the connection is dropped.
async fn admit_waiting(
    table: &Table,
    peer: SocketAddr,
    phase: Phase,
    shutdown: &CancellationToken,
) -> Option<(u64, Arc<Conn>)> {
    let deadline = tokio::time::Instant::now() + table.limits.header_timeout;
    loop {
        match table.admit(peer.ip(), phase) {
            Ok(slot) => return Some(slot),
            Err(Verdict::Refuse) => {
                tracing::debug!(%peer, "peer holds its share of connections, all busy; refused");
                return None;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(deadline) => return None,
            _ = table.freed.notified() => {}
        }
    }
}

async fn connection<S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    service: S,
    table: Arc<Table>,
    conn: Arc<Conn>,
    _guard: SlotGuard,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = table.limits;
    match acceptor {
        None => http(tcp, peer, service, table, conn, limits).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
            let stream = tokio::select! {
                _ = conn.hard.cancelled() => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            table.set_phase(&conn, Phase::AwaitingRequest);
            http(stream, peer, service, table, conn, limits).await
        }
    }
}

async fn http<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    table: Arc<Table>,
    conn: Arc<Conn>,
    limits: Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    // hyper's header timer runs from the moment a connection waits for a request:
    // for a kept-alive connection that is its idle time plus the next headers.
    // The first request has the shorter `header_timeout`, checked below.
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout);
    let tracked = Tracked {
        inner: service,
        table,
        conn: conn.clone(),
    };
    let served = builder.serve_connection(TokioIo::new(io), tracked);
    tokio::pin!(served);
    let first_request = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request);
    let mut waiting_first = true;
    let mut soft_sent = false;
    loop {
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = conn.hard.cancelled() => return,
            _ = conn.soft.cancelled(), if !soft_sent => {
                soft_sent = true;
                served.as_mut().graceful_shutdown();
            }
            _ = &mut first_request, if waiting_first => {
                waiting_first = false;
                if !conn.served.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request headers within the header timeout; closed");
                    return;
                }
            }
        }
    }
}
