//! The reconciler keeps going when one Consumer hits a bug, and forgets what it
//! knew of a deleted Consumer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use konsumer::api::{Consumer, ConsumerStatus};
use konsumer::reconciler::WorkloadMap;
use konsumer::reconciler::prometheus::PromClient;
use konsumer::reconciler::workloads::WorkloadSource;
use konsumer::reconciler::{Reconciler, ReconcilerConfig};
use konsumer::store::{CachedConsumer, ConsumerIndex, Store, StoreError};
use konsumer::telemetry::Metrics;

use crate::support::orders_yaml;

/// Panics when asked to write the status of `poisoned`; records the others.
struct PanickyStore {
    poisoned: &'static str,
    written: Mutex<Vec<String>>,
}

#[async_trait]
impl Store for PanickyStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        Ok(None)
    }
    async fn write_status(
        &self,
        _: &str,
        name: &str,
        _: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        assert_ne!(name, self.poisoned, "a bug in one Consumer's reconcile");
        self.written.lock().unwrap().push(name.to_string());
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "panicky"
    }
}

struct NoWorkloads;

#[async_trait]
impl WorkloadSource for NoWorkloads {
    async fn workloads(&self) -> Result<WorkloadMap, StoreError> {
        Ok(WorkloadMap::new())
    }
}

fn consumer(name: &str) -> Consumer {
    // Prometheus down: the status still changes (its condition says so).
    consumer_at(name, "http://127.0.0.1:9")
}

/// The orders Consumer named `name`, reading the Prometheus at `address`.
fn consumer_at(name: &str, address: &str) -> Consumer {
    let mut c: Consumer = serde_saphyr::from_str(&orders_yaml()).unwrap();
    c.metadata.name = Some(name.into());
    if let Some(p) = c
        .spec
        .autoscaler
        .as_mut()
        .map(konsumer::api::Shared::make_mut)
        .and_then(|a| a.prometheus.as_mut())
    {
        p.address = Some(vec![address.into()]);
    }
    c
}

fn reconciler(
    index: Arc<ConsumerIndex>,
    store: Arc<PanickyStore>,
    metrics: Arc<Metrics>,
) -> Reconciler {
    Reconciler::new(
        index,
        store,
        Arc::new(NoWorkloads),
        PromClient::new(Duration::from_millis(500), metrics.clone()).unwrap(),
        None,
        metrics,
        ReconcilerConfig {
            interval: Duration::from_secs(1),
            query_timeout: Duration::from_millis(500),
            concurrency: 1,
            gomemlimit_ratio: 0.8,
            ..ReconcilerConfig::default()
        },
        Arc::new(jiff::Timestamp::now),
    )
}

#[tokio::test]
async fn a_panic_in_one_consumer_is_contained_counted_and_the_others_reconciled() {
    let _turn = one_at_a_time().await;
    let index = ConsumerIndex::new();
    for name in ["alpha", "bravo", "charlie"] {
        index.upsert(consumer(name));
    }
    let store = Arc::new(PanickyStore {
        poisoned: "bravo",
        written: Mutex::new(Vec::new()),
    });
    let metrics = Arc::new(Metrics::default());
    let reconciler = reconciler(index, store.clone(), metrics.clone());
    reconciler.pass().await;
    let mut written = store.written.lock().unwrap().clone();
    written.sort();
    assert_eq!(written, ["alpha", "charlie"]);
    let text = metrics.encode();
    assert!(
        text.contains(r#"konsumer_reconcile_errors_total{reason="panic"} 1"#),
        "{text}"
    );
    // The next pass runs too (the poisoned Consumer is retried, not dropped).
    reconciler.pass().await;
    assert!(
        metrics
            .encode()
            .contains(r#"konsumer_reconcile_errors_total{reason="panic"} 2"#)
    );
}

#[tokio::test]
async fn a_consumer_deleted_and_recreated_is_read_at_once_not_after_min_sync() {
    let _turn = one_at_a_time().await;
    let index = ConsumerIndex::new();
    index.upsert(consumer("alpha"));
    let store = Arc::new(PanickyStore {
        poisoned: "none",
        written: Mutex::new(Vec::new()),
    });
    let metrics = Arc::new(Metrics::default());
    let reconciler = reconciler(index.clone(), store, metrics.clone());
    let reads = || {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("konsumer_prometheus_queries_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    reconciler.pass().await;
    let first = reads();
    assert!(first > 0);
    reconciler.pass().await;
    assert_eq!(
        reads(),
        first,
        "a failed read is retried after minSyncPeriod (1m)"
    );
    // Deleted, then created again under the same name: a new Consumer.
    index.remove("streams", "alpha");
    reconciler.pass().await;
    index.upsert(consumer("alpha"));
    reconciler.pass().await;
    assert!(
        reads() > first,
        "the old Consumer's last attempt was forgotten"
    );
}

/// Records its status writes in the index, as both real stores do.
struct IndexStore {
    index: Arc<ConsumerIndex>,
    writes: Mutex<usize>,
}

#[async_trait]
impl Store for IndexStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        Ok(None)
    }
    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &ConsumerStatus,
    ) -> Result<(), StoreError> {
        *self.writes.lock().unwrap() += 1;
        self.index.set_status(namespace, name, status.clone());
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "index"
    }
}

/// Log lines, shared with the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This file's tests run one at a time. A test without a subscriber that hits
/// one of konsumer's log call sites first, while another test's thread-local
/// subscriber is being set, left that call site's cached interest at "never"
/// for it: the other test counted no log line at all (every run of the
/// outage test beside the panic test failed).
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

impl Lines {
    /// This thread's INFO and higher log lines, while the guard lives; with
    /// every call site's interest computed again, so that one first hit by an
    /// earlier test without a subscriber logs here.
    fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        (lines, guard)
    }

    fn count(&self, level: &str, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

#[tokio::test]
async fn one_prometheus_outage_is_logged_once_and_unchanged_consumers_are_skipped() {
    let _turn = one_at_a_time().await;
    let (lines, _guard) = Lines::capture();

    let index = ConsumerIndex::new();
    for name in ["alpha", "bravo", "charlie"] {
        index.upsert(consumer(name));
    }
    let store = Arc::new(IndexStore {
        index: index.clone(),
        writes: Mutex::new(0),
    });
    let metrics = Arc::new(Metrics::default());
    let start: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = now.clone();
    let reconciler = Reconciler::new(
        index,
        store.clone(),
        Arc::new(NoWorkloads),
        PromClient::new(Duration::from_millis(500), metrics.clone()).unwrap(),
        None,
        metrics.clone(),
        ReconcilerConfig {
            interval: Duration::from_secs(10),
            query_timeout: Duration::from_millis(500),
            concurrency: 1,
            gomemlimit_ratio: 0.8,
            ..ReconcilerConfig::default()
        },
        Arc::new(move || *clock.lock().unwrap()),
    );
    let reconciles = || {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("konsumer_reconcile_duration_seconds_count "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let at = |secs: i64| {
        *now.lock().unwrap() = start + jiff::SignedDuration::from_secs(secs);
    };

    reconciler.pass().await;
    assert_eq!(
        lines.count("WARN", "Prometheus unavailable"),
        1,
        "three Consumers, one outage"
    );
    assert_eq!(
        *store.writes.lock().unwrap(),
        3,
        "each says so in its status"
    );
    assert!(
        metrics
            .encode()
            .contains("konsumer_prometheus_failing_consumers 3"),
        "{}",
        metrics.encode()
    );
    // Their statuses changed: reconciled once more, which changes nothing.
    at(10);
    reconciler.pass().await;
    let after_second = reconciles();
    assert_eq!(after_second, 6);
    // Nothing changed since: skipped until their next Prometheus read is due.
    at(20);
    reconciler.pass().await;
    at(30);
    reconciler.pass().await;
    assert_eq!(
        reconciles(),
        after_second,
        "unchanged Consumers were reconciled"
    );
    // minSyncPeriod (1m) later they read again and fail the same way: no new line,
    // no write; five minutes in, one summary.
    at(70);
    reconciler.pass().await;
    assert_eq!(reconciles(), after_second + 3);
    assert_eq!(*store.writes.lock().unwrap(), 3);
    assert_eq!(lines.count("WARN", "Prometheus unavailable"), 1);
    assert_eq!(lines.count("WARN", "Prometheus still unavailable"), 0);
    at(310);
    reconciler.pass().await;
    assert_eq!(lines.count("WARN", "Prometheus unavailable"), 1);
    assert_eq!(lines.count("WARN", "Prometheus still unavailable"), 1);
}

/// A Prometheus behind a proxy: 503 while `up` is false, one series per
/// partition when it is true; counts the queries it got.
async fn flaky_prometheus(
    up: Arc<std::sync::atomic::AtomicBool>,
    queries: Arc<Mutex<usize>>,
) -> String {
    use std::sync::atomic::Ordering;
    let answer = move || {
        let up = up.clone();
        let queries = queries.clone();
        async move {
            *queries.lock().unwrap() += 1;
            if !up.load(Ordering::Relaxed) {
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "upstream Prometheus unavailable".to_string(),
                );
            }
            let result: Vec<String> = (0..10)
                .map(|p| format!(r#"{{"metric":{{"partition":"{p}"}},"value":[1,"100"]}}"#))
                .collect();
            (
                axum::http::StatusCode::OK,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                    result.join(",")
                ),
            )
        }
    };
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(answer.clone()).get(answer),
    );
    crate::support::serve_http(app).await
}

#[tokio::test]
async fn a_hundred_consumers_behind_one_down_prometheus_cost_one_probe_a_period_and_all_read_again_when_it_answers()
 {
    let _turn = one_at_a_time().await;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (lines, _guard) = Lines::capture();

    let up = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(Mutex::new(0));
    let address = flaky_prometheus(up.clone(), queries.clone()).await;
    let index = ConsumerIndex::new();
    for i in 0..100 {
        index.upsert(consumer_at(&format!("orders-{i:03}"), &address));
    }
    let store = Arc::new(IndexStore {
        index: index.clone(),
        writes: Mutex::new(0),
    });
    let metrics = Arc::new(Metrics::default());
    let start: jiff::Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = now.clone();
    let reconciler = Reconciler::new(
        index.clone(),
        store.clone(),
        Arc::new(NoWorkloads),
        PromClient::new(Duration::from_secs(5), metrics.clone()).unwrap(),
        None,
        metrics.clone(),
        ReconcilerConfig::default(),
        Arc::new(move || *clock.lock().unwrap()),
    );
    let at = |secs: i64| {
        *now.lock().unwrap() = start + jiff::SignedDuration::from_secs(secs);
    };
    let queried = || *queries.lock().unwrap();
    let condition = |name: &str| {
        let c = index.get("streams", name).unwrap();
        let status = c.consumer.status.clone().unwrap_or_default();
        let c = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "MetricsAvailable")
            .unwrap();
        (c.status, c.reason)
    };

    // Each Consumer reads once for itself (three queries each) and says so.
    at(0);
    reconciler.pass().await;
    assert_eq!(queried(), 300);
    assert_eq!(*store.writes.lock().unwrap(), 100);
    assert!(
        metrics
            .encode()
            .contains("konsumer_prometheus_failing_consumers 100")
    );
    for secs in (10..60).step_by(10) {
        at(secs);
        reconciler.pass().await;
    }
    assert_eq!(queried(), 300, "nothing due before minSyncPeriod");
    let written = *store.writes.lock().unwrap();

    // Down for two more periods: one probe (three queries) per period stands
    // for all; nothing written, every Consumer still says it has no metrics.
    for secs in (60..180).step_by(10) {
        at(secs);
        reconciler.pass().await;
    }
    assert_eq!(queried(), 300 + 2 * 3, "one probe at 60 s, one at 120 s");
    assert_eq!(*store.writes.lock().unwrap(), written);
    assert!(
        metrics
            .encode()
            .contains("konsumer_prometheus_failing_consumers 100")
    );
    for i in [0, 57, 99] {
        assert_eq!(
            condition(&format!("orders-{i:03}")),
            ("False".into(), "PrometheusUnavailable".into())
        );
    }
    assert_eq!(lines.count("WARN", "Prometheus unavailable"), 1);

    // It answers: the next probe (180 s) succeeds, and every Consumer reads by
    // the pass after it.
    up.store(true, Ordering::Relaxed);
    at(180);
    reconciler.pass().await;
    at(190);
    reconciler.pass().await;
    assert_eq!(queried(), 306 + 300);
    assert!(
        metrics
            .encode()
            .contains("konsumer_prometheus_failing_consumers 0")
    );
    for i in 0..100 {
        assert_eq!(
            condition(&format!("orders-{i:03}")),
            ("True".into(), "MetricsRead".into())
        );
    }
    assert_eq!(lines.count("INFO", "Prometheus failure over"), 1);
}
