//! konsumer's outbound HTTP for subscribers, with the SSRF guard inside the
//! connector: every address a name resolves to is checked when the connection is
//! made (no window between a check and the connect for DNS rebinding), literal IPs
//! before the request; no environment proxy unless `--egress-proxy`; redirects
//! never followed; TLS verification always on (system roots, plus the
//! subscription's `caSecretRef` CA when given).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::scaling_events::egress::{Denied, EgressPolicy};

/// Bytes of a receiver's answer kept (for a ping's result and error messages).
pub const BODY_KEPT: usize = 1024;

/// Egress settings from the command line.
#[derive(Clone, Debug, Default)]
pub struct EgressConfig {
    pub policy: EgressPolicy,
    /// `--egress-proxy`: every request goes through it (and the proxy does the
    /// address filtering; konsumer still refuses literal non-global IPs).
    pub proxy: Option<String>,
}

/// Resolves with the system resolver, keeping only the addresses the policy allows.
struct GuardResolver {
    policy: Arc<EgressPolicy>,
    plain_http: bool,
}

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let plain_http = self.plain_http;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("cannot resolve {host}: {e}").into()
                })?
                .collect();
            let mut first_denial = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip(), plain_http) {
                    Ok(()) => true,
                    Err(d) => {
                        first_denial.get_or_insert(d);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match first_denial {
                    Some(d) => Box::new(d) as Box<dyn std::error::Error + Send + Sync>,
                    None => format!("{host} resolves to no address").into(),
                });
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// How an attempt ended, as the worker needs it.
#[derive(Clone, Debug)]
pub enum Sent {
    /// The receiver answered.
    Answered {
        status: u16,
        retry_after: Option<String>,
        body: String,
        latency: Duration,
    },
    /// The guard refused the address: nothing was sent.
    Refused(Denied),
    /// No answer (connection refused, timeout, TLS, DNS): said without the URL.
    Failed { error: String, latency: Duration },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ClientKey {
    plain_http: bool,
    ca: Option<String>,
}

/// Builds and keeps one client per (scheme, extra CA).
pub struct Connector {
    config: EgressConfig,
    policy: Arc<EgressPolicy>,
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("caSecretRef: not a PEM CA certificate: {0}")]
    BadCa(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("--egress-proxy: {0}")]
    Proxy(String),
}

/// Keeps the first `max` bytes of a text, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn describe(e: &reqwest::Error, timeout: Duration) -> Result<String, Denied> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<Denied>() {
            return Err(d.clone());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return Ok(format!(
            "no answer within the timeout ({}s)",
            timeout.as_secs_f64()
        ));
    }
    // The innermost cause says it best (connection refused, certificate unknown…).
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let cause = chain.last().cloned().unwrap_or_default();
    Ok(format!("{what}: {cause}"))
}

impl Connector {
    pub fn new(config: EgressConfig) -> Result<Self, ConnectorError> {
        if let Some(p) = &config.proxy {
            reqwest::Proxy::all(p)
                .map_err(|e| ConnectorError::Proxy(e.without_url().to_string()))?;
        }
        crate::server::tls::provider();
        Ok(Connector {
            policy: Arc::new(config.policy.clone()),
            config,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn client(&self, key: ClientKey) -> Result<reqwest::Client, ConnectorError> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(4)
            .user_agent(concat!("konsumer/", env!("CARGO_PKG_VERSION")))
            .http1_only();
        b = match &self.config.proxy {
            Some(p) => b.proxy(
                reqwest::Proxy::all(p)
                    .map_err(|e| ConnectorError::Proxy(e.without_url().to_string()))?,
            ),
            None => b.no_proxy().dns_resolver(Arc::new(GuardResolver {
                policy: self.policy.clone(),
                plain_http: key.plain_http,
            })),
        };
        if let Some(pem) = &key.ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ConnectorError::BadCa(e.without_url().to_string()))?;
            if certs.is_empty() {
                return Err(ConnectorError::BadCa("no certificate in it".into()));
            }
            b = b.tls_certs_merge(certs);
        }
        let client = b
            .build()
            .map_err(|e| ConnectorError::Client(e.without_url().to_string()))?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // A CA that keeps changing must not grow the map without bound.
        if clients.len() > 64 {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// POSTs `body` with `headers` to `url`, within `timeout`.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        ca: Option<&str>,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Sent, ConnectorError> {
        let plain_http = url.scheme() == "http";
        // Literal addresses skip the resolver: they are checked here.
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(d) = self.policy.check(ip, plain_http)
        {
            return Ok(Sent::Refused(d));
        }
        let client = self.client(ClientKey {
            plain_http,
            ca: ca.map(String::from),
        })?;
        let mut req = client.post(url.clone()).timeout(timeout).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let started = Instant::now();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = read_prefix(resp).await;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        }
        .await;
        let latency = started.elapsed();
        Ok(match result {
            Ok((status, retry_after, body)) => Sent::Answered {
                status,
                retry_after,
                body,
                latency,
            },
            Err(e) => match describe(&e, timeout) {
                Err(denied) => Sent::Refused(denied),
                Ok(error) => Sent::Failed { error, latency },
            },
        })
    }
}

/// The first [`BODY_KEPT`] bytes of an answer; the rest is not read.
async fn read_prefix(mut resp: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < BODY_KEPT {
        match resp.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    truncate(&String::from_utf8_lossy(&kept), BODY_KEPT)
}
