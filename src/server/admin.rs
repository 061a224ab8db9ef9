//! The plain-HTTP admin listener: liveness, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::store::{ConsumerIndex, Store};
use crate::telemetry::Metrics;

/// Readiness: the Consumer cache has been filled once, status can be written,
/// and no stop has begun.
pub struct Health {
    index: Arc<ConsumerIndex>,
    store: Option<Arc<dyn Store>>,
    stopping: AtomicBool,
}

impl Health {
    pub fn new(index: Arc<ConsumerIndex>, store: Option<Arc<dyn Store>>) -> Arc<Self> {
        Arc::new(Health {
            index,
            store,
            stopping: AtomicBool::new(false),
        })
    }

    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// `Err(reason)` while not ready.
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        if !self.index.is_synced() {
            return Err("Consumer cache not synced yet".into());
        }
        if let Some(problem) = self.store_problem() {
            return Err(format!(
                "Consumer status cannot be written ({problem}); recommendations are frozen until it can"
            ));
        }
        Ok(())
    }

    fn store_problem(&self) -> Option<String> {
        self.store.as_ref().and_then(|s| s.status_write_problem())
    }
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        // A 503 from /readyz is an answer, not a failure of konsumer's.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(AdminState { health, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.consumers.set(s.health.index.len() as i64);
    s.metrics
        .store_writable
        .set(i64::from(s.health.store_problem().is_none()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
