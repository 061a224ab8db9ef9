//! The HTTP API (`--api-addr`, TLS): Consumer status, plans and journals, and
//! ScalingSubscriptions with their deliveries, behind bearer-token auth, with
//! RFC 9457 problem answers. Described by `openapi/konsumer.yaml`; the route
//! table below is what the router is built from and what a test holds the
//! document to.

pub mod auth;
mod consumers;
pub mod objects;
pub(crate) mod page;
pub mod problem;
pub(crate) mod secrets;
pub(crate) mod serve;
mod subscriptions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use bytes::Bytes;
use tower_http::catch_panic::CatchPanicLayer;

use crate::delivery::Deliveries;
use crate::store::ConsumerIndex;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ApiLabels;
use auth::{Access, Auth, Identity};
use objects::Objects;
use problem::Problem;

/// The OpenAPI document, as committed.
pub const OPENAPI_YAML: &str = include_str!("../openapi/konsumer.yaml");

static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    serde_saphyr::from_str::<serde_json::Value>(OPENAPI_YAML)
        .map(|v| v.to_string())
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "openapi/konsumer.yaml does not parse; this is a bug in konsumer");
            "{}".to_string()
        })
});

/// How callers are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiAuth {
    /// Local mode: tokens listed in this file, one per line.
    TokenFile(PathBuf),
    /// Kube mode: TokenReview and SubjectAccessReview.
    Kube,
}

/// Tunables of the api listener.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    pub auth: ApiAuth,
    /// Requests handled at once; more wait briefly, then get 429.
    pub max_concurrent: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a TokenReview or SubjectAccessReview answer is reused.
    pub auth_cache_ttl: Duration,
    /// konsumer's own namespace (the only one whose subscriptions may follow
    /// other namespaces).
    pub konsumer_namespace: String,
    /// As for the workload webhook: what `/plan` shows.
    pub gomemlimit_ratio: f64,
    /// Guest mode: no ScalingSubscriptions.
    pub guest: bool,
    /// How often rotated secrets whose grace ended are retired.
    pub retire_every: Duration,
    /// Kube mode: the audiences a bearer token must be meant for (TokenReview
    /// `spec.audiences`); empty: the apiserver's.
    pub audiences: Vec<String>,
}

impl ApiConfig {
    pub fn new(addr: SocketAddr, auth: ApiAuth) -> Self {
        ApiConfig {
            addr,
            auth,
            max_concurrent: 64,
            max_connections: 256,
            max_body_bytes: 64 << 10,
            auth_cache_ttl: Duration::from_secs(10),
            konsumer_namespace: "default".into(),
            gomemlimit_ratio: 0.8,
            guest: false,
            retire_every: Duration::from_secs(30),
            audiences: Vec::new(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub index: Arc<ConsumerIndex>,
    pub auth: Arc<Auth>,
    /// `None` in guest mode (no ScalingSubscriptions there).
    pub objects: Option<Arc<dyn Objects>>,
    /// `None` with `--no-delivery`.
    pub deliveries: Option<Deliveries>,
    /// Whether this replica delivers now (kube mode: the lease); `None`: always.
    pub is_leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// Whole journals where the cache keeps only the newest entries (local mode).
    pub journals: Option<Arc<dyn crate::delivery::SubscriptionSource>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ApiConfig>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    pub fn new(
        index: Arc<ConsumerIndex>,
        auth: Auth,
        objects: Option<Arc<dyn Objects>>,
        deliveries: Option<Deliveries>,
        metrics: Arc<Metrics>,
        config: ApiConfig,
    ) -> Self {
        ApiState {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
            index,
            auth: Arc::new(auth),
            objects,
            deliveries,
            is_leader: None,
            journals: None,
            metrics,
            config: Arc::new(config),
        }
    }
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    ListAllConsumers,
    ListConsumers,
    GetConsumer,
    Plan,
    Events,
    ListSubscriptions,
    CreateSubscription,
    GetSubscription,
    ReplaceSubscription,
    DeleteSubscription,
    RotateSecret,
    TestSubscription,
    Deliveries,
    Redeliver,
    OpenApiJson,
    OpenApiYaml,
}

/// One route of the api.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// The template, in the OpenAPI document's syntax (also axum's).
    pub path: &'static str,
    pub op: Op,
}

const SUBS: &str = "/v1/namespaces/{namespace}/subscriptions";
const SUB: &str = "/v1/namespaces/{namespace}/subscriptions/{name}";

/// Every route: the router is built from this table, and a test holds
/// `openapi/konsumer.yaml` to it.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/consumers",
        op: Op::ListAllConsumers,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{namespace}/consumers",
        op: Op::ListConsumers,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{namespace}/consumers/{name}",
        op: Op::GetConsumer,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{namespace}/consumers/{name}/plan",
        op: Op::Plan,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{namespace}/consumers/{name}/events",
        op: Op::Events,
    },
    Route {
        method: "GET",
        path: SUBS,
        op: Op::ListSubscriptions,
    },
    Route {
        method: "POST",
        path: SUBS,
        op: Op::CreateSubscription,
    },
    Route {
        method: "GET",
        path: SUB,
        op: Op::GetSubscription,
    },
    Route {
        method: "PUT",
        path: SUB,
        op: Op::ReplaceSubscription,
    },
    Route {
        method: "DELETE",
        path: SUB,
        op: Op::DeleteSubscription,
    },
    Route {
        method: "POST",
        path: "/v1/namespaces/{namespace}/subscriptions/{name}/rotate-secret",
        op: Op::RotateSecret,
    },
    Route {
        method: "POST",
        path: "/v1/namespaces/{namespace}/subscriptions/{name}/test",
        op: Op::TestSubscription,
    },
    Route {
        method: "GET",
        path: "/v1/namespaces/{namespace}/subscriptions/{name}/deliveries",
        op: Op::Deliveries,
    },
    Route {
        method: "POST",
        path: "/v1/namespaces/{namespace}/subscriptions/{name}/redeliver",
        op: Op::Redeliver,
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        op: Op::OpenApiJson,
    },
    Route {
        method: "GET",
        path: "/openapi.yaml",
        op: Op::OpenApiYaml,
    },
];

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

/// The api's router (built from [`ROUTES`]).
pub fn router(state: ApiState) -> Router {
    let mut by_path: BTreeMap<&'static str, Vec<&'static Route>> = BTreeMap::new();
    for r in ROUTES {
        by_path.entry(r.path).or_default().push(r);
    }
    let mut router = Router::new();
    for (path, routes) in by_path {
        let mut methods = axum::routing::MethodRouter::new();
        for r in routes {
            let route = *r;
            methods = methods.on(
                method_filter(r.method),
                move |s: State<ApiState>,
                      p: Result<
                    Path<BTreeMap<String, String>>,
                    axum::extract::rejection::PathRejection,
                >,
                      q: RawQuery,
                      h: HeaderMap,
                      b: Body| dispatch(route, s, p, q, h, b),
            );
        }
        let path_text = path;
        methods = methods.fallback(move |m: Method| async move {
            Problem::method_not_allowed(format!("{path_text} does not take {m}")).into_response()
        });
        router = router.route(path, methods);
    }
    router
        .fallback(|m: Method, uri: axum::http::Uri| async move {
            Problem::not_found(format!(
                "no api route {m} {}; see /openapi.json for the routes",
                uri.path()
            ))
            .into_response()
        })
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("api handler panicked; this is a bug in konsumer");
            Problem::internal(
                "failed to answer this request (internal error, logged); please report it",
            )
            .into_response()
        }))
        .with_state(state)
}

/// A request as the handlers see it.
pub struct Call {
    pub who: Identity,
    pub params: BTreeMap<String, String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn namespace(&self) -> &str {
        self.params.get("namespace").map_or("", String::as_str)
    }

    pub fn name(&self) -> &str {
        self.params.get("name").map_or("", String::as_str)
    }
}

/// The query string, parsed.
#[derive(Default, Debug)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// 400 for parameters the route does not take (a typo would otherwise be
    /// silently ignored).
    pub fn only(&self, allowed: &[&str]) -> Result<(), Problem> {
        for (k, _) in &self.0 {
            if !allowed.contains(&k.as_str()) {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {k:?}; this route takes {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }
}

/// A DNS-1123 label (namespaces), as Kubernetes checks it.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_params(params: &BTreeMap<String, String>) -> Result<(), Problem> {
    if let Some(ns) = params.get("namespace")
        && !is_dns_label(ns)
    {
        return Err(Problem::bad_request(format!(
            "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        )));
    }
    if let Some(name) = params.get("name")
        && !is_dns_subdomain(name)
    {
        return Err(Problem::bad_request(format!(
            "{name:?} is not an object name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253)"
        )));
    }
    Ok(())
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Every route: bound, authenticate, read, answer, count.
async fn dispatch(
    route: Route,
    State(state): State<ApiState>,
    params: Result<Path<BTreeMap<String, String>>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let response = match answer(&state, route, params, query, headers, body).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    };
    let labels = ApiLabels {
        route: route.path.to_string(),
        method: route.method.to_string(),
        status_class: status_class(response.status()).to_string(),
    };
    state.metrics.api_requests.get_or_create(&labels).inc();
    state
        .metrics
        .api_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn answer(
    state: &ApiState,
    route: Route,
    params: Result<Path<BTreeMap<String, String>>, axum::extract::rejection::PathRejection>,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    match route.op {
        Op::OpenApiJson => return Ok(document("application/json", OPENAPI_JSON.clone())),
        Op::OpenApiYaml => return Ok(document("application/yaml", OPENAPI_YAML.to_string())),
        _ => {}
    }
    let _slot =
        match tokio::time::timeout(Duration::from_secs(1), state.slots.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(Problem::too_many_requests(
                    "too many api requests at once; retry in a second",
                ));
            }
        };
    // Who asks first: a stranger learns nothing, not even which names are valid.
    let who = state.auth.authenticate(&headers).await?;
    let Path(params) = params.map_err(|e| Problem::bad_request(format!("unreadable path: {e}")))?;
    check_params(&params)?;
    let body = read_body(body, &headers, state.config.max_body_bytes).await?;
    let call = Call {
        who,
        params,
        query: Query::parse(query.as_deref()),
        headers,
        body,
    };
    match route.op {
        Op::ListAllConsumers => consumers::list_all(state, &call).await,
        Op::ListConsumers => consumers::list(state, &call).await,
        Op::GetConsumer => consumers::get(state, &call).await,
        Op::Plan => consumers::plan(state, &call).await,
        Op::Events => consumers::events(state, &call).await,
        Op::ListSubscriptions => subscriptions::list(state, &call).await,
        Op::CreateSubscription => subscriptions::create(state, &call).await,
        Op::GetSubscription => subscriptions::get(state, &call).await,
        Op::ReplaceSubscription => subscriptions::replace(state, &call).await,
        Op::DeleteSubscription => subscriptions::delete(state, &call).await,
        Op::RotateSecret => subscriptions::rotate(state, &call).await,
        Op::TestSubscription => subscriptions::test(state, &call).await,
        Op::Deliveries => subscriptions::deliveries_list(state, &call).await,
        Op::Redeliver => subscriptions::redeliver(state, &call).await,
        Op::OpenApiJson | Op::OpenApiYaml => Err(Problem::internal("unreachable route")),
    }
}

fn document(content_type: &'static str, text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response()
}

/// Bytes of an oversized body still read (and dropped) so that the client, still
/// sending, gets the 413 rather than a reset connection.
const DRAIN_MAX: usize = 1 << 20;

/// The body, at most `limit` bytes, JSON when there is one.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Problem> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let too_large = || {
        Problem::too_large(format!(
            "the body is larger than the api takes ({limit} bytes); an object this big is not a ScalingSubscription"
        ))
    };
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Problem::bad_request("the body was cut off"));
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > limit {
                if declared.is_none_or(|d| d <= DRAIN_MAX) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while seen <= DRAIN_MAX {
                            match body.frame().await {
                                Some(Ok(f)) => seen += f.into_data().map_or(0, |d| d.len()),
                                _ => break,
                            }
                        }
                    })
                    .await;
                }
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    let bytes = buf.freeze();
    if !bytes.is_empty() {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(Problem::unsupported_media_type(format!(
                "the body must be JSON sent with `Content-Type: application/json` (got {ct:?})"
            )));
        }
    }
    Ok(bytes)
}

/// A JSON answer.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Result<Response, Problem> {
    let text = serde_json::to_string(value)
        .map_err(|e| Problem::internal(format!("cannot encode the answer: {e}")))?;
    Ok((
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response())
}

/// Authorizes `access` for the caller.
pub async fn authorize(state: &ApiState, call: &Call, access: Access) -> Result<(), Problem> {
    state.auth.authorize(&call.who, &access).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_names() {
        assert!(is_dns_label("streams"));
        assert!(!is_dns_label("Streams"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(".."));
        assert!(is_dns_subdomain("feed.v2"));
        assert!(!is_dns_subdomain("../etc"));
        assert!(!is_dns_subdomain("a/b"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn unknown_query_parameters_are_named() {
        let q = Query::parse(Some("limit=2&lmit=3"));
        let p = q.only(&["limit", "continue"]).unwrap_err();
        assert!(p.detail.contains("\"lmit\""), "{}", p.detail);
    }

    #[test]
    fn the_committed_document_parses() {
        let v: serde_json::Value = serde_json::from_str(&OPENAPI_JSON).unwrap();
        assert_eq!(v["openapi"].as_str().map(|s| &s[..3]), Some("3.1"));
    }
}
