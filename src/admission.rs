//! The admission webhooks (HTTP shell): read the AdmissionReview, hand the decision
//! to the pure core, write the answer. Bad input gets an AdmissionReview answer with
//! HTTP 200, or a clear 4xx when there is not even a uid to answer to.

pub mod consumers;
#[cfg(test)]
mod differential;
pub mod review;
pub mod subscriptions;
pub mod workloads;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::FutureExt;
use http::Method;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::api::duration::parse_go_duration;
use crate::inject::workload::Workload;
use crate::store::{ConsumerIndex, Store};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{AdmissionLabels, Kind, Operation, Outcome, Webhook};
use review::{Answer, Envelope, Request, Review, Status};

/// Tunables of the webhook listener.
#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    /// Fraction of the memory limit written to `GOMEMLIMIT`.
    pub gomemlimit_ratio: f64,
    /// Upper bound of a request's budget (`?timeout=` is honoured below it).
    pub max_budget: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests decided at once; more wait, within their budget.
    pub max_concurrent: usize,
    /// konsumer's own namespace: only ScalingSubscriptions there may follow
    /// other namespaces.
    pub konsumer_namespace: String,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            gomemlimit_ratio: 0.8,
            max_budget: Duration::from_secs(10),
            max_body_bytes: 5 << 20,
            max_concurrent: 256,
            konsumer_namespace: "default".into(),
        }
    }
}

/// Shared by every admission handler.
#[derive(Clone)]
pub struct Admission {
    pub index: Arc<ConsumerIndex>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<AdmissionConfig>,
    /// Decision slots (`max_concurrent`).
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl Admission {
    pub fn new(
        index: Arc<ConsumerIndex>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        config: AdmissionConfig,
    ) -> Self {
        Admission {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
            index,
            store,
            metrics,
            config: Arc::new(config),
        }
    }
}

/// The webhook listener's service: the three webhooks straight on hyper (no
/// router, no middleware: this is every Pod's admission path), anything else
/// through [`router`], which answers 404 and 405 as axum does.
#[derive(Clone)]
pub struct AdmissionService {
    state: Arc<Admission>,
    fallback: Router,
}

pub fn service(state: Admission) -> AdmissionService {
    AdmissionService {
        fallback: router(state.clone()),
        state: Arc::new(state),
    }
}

fn route(method: &Method, path: &str) -> Option<Webhook> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/mutate/workloads" => Some(Webhook::mutate_workloads),
        "/mutate/consumers" => Some(Webhook::mutate_consumers),
        "/validate/consumers" => Some(Webhook::validate_consumers),
        "/validate/scalingsubscriptions" => Some(Webhook::validate_scalingsubscriptions),
        _ => None,
    }
}

impl<B> hyper::service::Service<http::Request<B>> for AdmissionService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<B>) -> Self::Future {
        let Some(webhook) = route(req.method(), req.uri().path()) else {
            let router = self.fallback.clone();
            return Box::pin(async move { router.oneshot(req.map(Body::new)).await });
        };
        let state = self.state.clone();
        let budget = budget(req.uri().query(), state.config.max_budget);
        Box::pin(async move {
            let answer = AssertUnwindSafe(serve(&state, webhook, budget, req.into_body()))
                .catch_unwind()
                .await;
            // A bug must not drop the connection: the apiserver gets a Status it can show.
            Ok(answer.unwrap_or_else(panic_response))
        })
    }
}

/// The same webhooks as an axum router (with the 404 and 405 answers of one), for
/// whatever the fast service does not handle itself.
pub fn router(state: Admission) -> Router {
    Router::new()
        .route(
            "/mutate/workloads",
            post(|s: State<Admission>, q: RawQuery, b: Body| {
                handle(Webhook::mutate_workloads, s, q, b)
            }),
        )
        .route(
            "/mutate/consumers",
            post(|s: State<Admission>, q: RawQuery, b: Body| {
                handle(Webhook::mutate_consumers, s, q, b)
            }),
        )
        .route(
            "/validate/consumers",
            post(|s: State<Admission>, q: RawQuery, b: Body| {
                handle(Webhook::validate_consumers, s, q, b)
            }),
        )
        .route(
            "/validate/scalingsubscriptions",
            post(|s: State<Admission>, q: RawQuery, b: Body| {
                handle(Webhook::validate_scalingsubscriptions, s, q, b)
            }),
        )
        // The body limit is enforced while reading, with an answer that says so.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(
        panic = detail,
        "admission handler panicked; this is a bug in konsumer"
    );
    http_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "konsumer failed to decide this request (internal error, logged); please report it".into(),
    )
}

async fn handle(
    webhook: Webhook,
    State(state): State<Admission>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let budget = budget(query.as_deref(), state.config.max_budget);
    serve(&state, webhook, budget, body).await
}

/// What a webhook module returns: the HTTP answer and how to count it.
pub struct Reply {
    pub response: Response,
    pub kind: Kind,
    pub operation: Operation,
    pub outcome: Outcome,
}

/// Every webhook: read the body within the request's budget, take a decision slot,
/// decide, count.
async fn serve<B>(state: &Admission, webhook: Webhook, budget: Duration, body: B) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let started = Instant::now();
    let reply = match read_body(state, body, budget).await {
        Err(reply) => reply,
        // The decision slots are taken only by complete requests: a client that
        // sends its body slowly holds a connection, not a slot.
        Ok(bytes) => {
            let slot = match state.slots.clone().try_acquire_owned() {
                Ok(slot) => Ok(slot),
                Err(_) => tokio::time::timeout(
                    budget.saturating_sub(started.elapsed()),
                    state.slots.clone().acquire_owned(),
                )
                .await
                .map_err(|_| ())
                .and_then(|s| s.map_err(|_| ())),
            };
            match slot {
                Ok(_slot) => {
                    let left = budget.saturating_sub(started.elapsed());
                    match webhook {
                        Webhook::mutate_workloads => workloads::answer(state, &bytes, left).await,
                        Webhook::mutate_consumers => consumers::defaults(&bytes),
                        Webhook::validate_consumers => consumers::validate(&bytes),
                        Webhook::validate_scalingsubscriptions => {
                            subscriptions::validate(state, &bytes)
                        }
                    }
                }
                Err(()) => Reply {
                    response: http_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "konsumer is deciding {} requests already and none finished within this request's budget; retry",
                            state.config.max_concurrent
                        ),
                    ),
                    kind: Kind::Other,
                    operation: Operation::Other,
                    outcome: Outcome::overloaded,
                },
            }
        }
    };
    let labels = AdmissionLabels {
        webhook,
        kind: reply.kind,
        operation: reply.operation,
        outcome: reply.outcome,
    };
    state
        .metrics
        .observe_admission(labels, started.elapsed().as_secs_f64());
    reply.response
}

/// Reads the body within the request's budget and the size limit.
async fn read_body<B>(state: &Admission, body: B, budget: Duration) -> Result<Bytes, Reply>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let bad = |code: StatusCode, message: String, outcome: Outcome| Reply {
        response: http_error(code, message),
        kind: Kind::Other,
        operation: Operation::Other,
        outcome,
    };
    let limited = http_body_util::Limited::new(body, state.config.max_body_bytes);
    let collect = limited.collect();
    tokio::pin!(collect);
    // A body that has already arrived needs no deadline: arming one costs a
    // clock read and a timer-wheel entry on every request.
    let read = match futures::poll!(collect.as_mut()) {
        std::task::Poll::Ready(read) => Ok(read),
        std::task::Poll::Pending => tokio::time::timeout(budget, collect).await,
    };
    match read {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            Err(if too_large {
                bad(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body exceeds the {} MiB limit of this webhook",
                        state.config.max_body_bytes >> 20
                    ),
                    Outcome::bad_request,
                )
            } else {
                bad(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                    Outcome::bad_request,
                )
            })
        }
        Err(_) => Err(bad(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}ms",
                budget.as_millis()
            ),
            Outcome::bad_request,
        )),
    }
}

/// The apiserver sends `?timeout=10s`: the time it waits for this webhook. The
/// answer must come before it, so a little is kept back for the network.
fn budget(query: Option<&str>, max: Duration) -> Duration {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
        .and_then(|v| parse_go_duration(v).ok());
    let total = asked.map_or(max, |t| t.min(max));
    total.saturating_sub((total / 10).min(Duration::from_millis(500)))
}

/// Reads an AdmissionReview with `object`/`oldObject` as `O`/`P`. When that fails,
/// the answer to send instead: with the request's uid if it has one (HTTP 200,
/// denied, saying where the body broke), else a 400.
pub(crate) fn parse<'a, O, P>(
    body: &'a [u8],
) -> Result<(&'static str, Request<'a, O, P>), Box<Reply>>
where
    O: Deserialize<'a>,
    P: Deserialize<'a>,
{
    let review: Review<'a, O, P> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Err(Box::new(malformed::<O, P>(body, &e))),
    };
    let api_version = review::answer_version(review.api_version.as_ref().map(|v| v.as_str()));
    match review.request {
        Some(request) => Ok((api_version, request)),
        None => Err(Box::new(bad_request(
            "the AdmissionReview has no request".into(),
        ))),
    }
}

/// [`parse`] for the workload webhook: the one-pass reader first, serde (and its
/// error messages) when that reader is not sure.
pub(crate) fn parse_workload(
    body: &[u8],
) -> Result<(&'static str, Request<'_, Workload<'_>, IgnoredAny>), Box<Reply>> {
    let review = match review::lazy::read_workload_review(body) {
        Ok(review) => review,
        Err(review::lazy::Unsure) => return parse(body),
    };
    let api_version = review::answer_version(review.api_version.as_ref().map(|v| v.as_str()));
    match review.request {
        Some(request) => Ok((api_version, request)),
        None => Err(Box::new(bad_request(
            "the AdmissionReview has no request".into(),
        ))),
    }
}

fn malformed<'a, O, P>(body: &'a [u8], error: &serde_json::Error) -> Reply
where
    O: Deserialize<'a>,
    P: Deserialize<'a>,
{
    let detail = serde_path_to_error::deserialize::<_, Review<'a, O, P>>(
        &mut serde_json::Deserializer::from_slice(body),
    )
    .err()
    .map(|e| format!("{}: {}", e.path(), e.inner()))
    .unwrap_or_else(|| error.to_string());
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Review {
            api_version,
            request: Some(request),
        }) => {
            let answer = Answer::deny(Status::failure(
                400,
                "BadRequest",
                format!("malformed AdmissionReview: {detail}"),
            ));
            let version = review::answer_version(api_version.as_ref().map(|v| v.as_str()));
            Reply {
                response: review_response(review::encode(version, request.uid.as_str(), &answer)),
                kind: Kind::Other,
                operation: Operation::parse(request.operation.as_ref().map(|o| o.as_str())),
                outcome: Outcome::denied,
            }
        }
        _ => bad_request(format!(
            "not an AdmissionReview with a request uid: {detail}"
        )),
    }
}

pub(crate) fn bad_request(message: String) -> Reply {
    Reply {
        response: http_error(StatusCode::BAD_REQUEST, message),
        kind: Kind::Other,
        operation: Operation::Other,
        outcome: Outcome::bad_request,
    }
}

/// A plain `metav1.Status` error for requests that cannot be answered as reviews.
pub fn http_error(code: StatusCode, message: String) -> Response {
    let reason = match code {
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::REQUEST_TIMEOUT => "Timeout",
        _ => "BadRequest",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An AdmissionReview answer (HTTP 200).
pub fn review_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_honours_the_apiserver_timeout_below_the_maximum() {
        let max = Duration::from_secs(10);
        assert_eq!(budget(Some("timeout=5s"), max), Duration::from_millis(4500));
        assert_eq!(
            budget(Some("x=1&timeout=30s"), max),
            Duration::from_millis(9500)
        );
        assert_eq!(budget(None, max), Duration::from_millis(9500));
        assert_eq!(
            budget(Some("timeout=junk"), max),
            Duration::from_millis(9500)
        );
        assert_eq!(budget(Some("timeout=1s"), max), Duration::from_millis(900));
    }
}
