//! The Prometheus client against a real Prometheus (path prefix, error payloads,
//! several addresses) and against plain HTTP servers that behave like a proxy in
//! front of one (405 for POST, no answer at all).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use konsumer::reconciler::prometheus::{PromClient, PromError};
use konsumer::telemetry::Metrics;

use crate::prometheus_harness::{Exporter, Prometheus};
use crate::support::serve_http as serve;

/// One series with `partition="3"` and value 42, without any scraped data.
const QUERY: &str = r#"label_replace(vector(42), "partition", "3", "", "")"#;

fn client(timeout: Duration) -> (PromClient, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    (PromClient::new(timeout, metrics.clone()).unwrap(), metrics)
}

#[tokio::test]
async fn a_path_prefix_works_and_the_first_good_address_wins() {
    let exporter = Exporter::start();
    let port = exporter.port;
    let prometheus =
        tokio::task::spawn_blocking(move || Prometheus::start_with_prefix(port, "/prom"))
            .await
            .unwrap();
    let (prom, metrics) = client(Duration::from_secs(5));
    let now = jiff::Timestamp::now();
    let prefixed = format!("{}/prom", prometheus.url);
    let r = prom
        .query(std::slice::from_ref(&prefixed), QUERY, "partition", 10, now)
        .await
        .unwrap();
    assert_eq!(r.values.get(&3), Some(&42.0));

    // Without the prefix the server answers 404: the prefix is really used.
    let err = prom
        .query(
            std::slice::from_ref(&prometheus.url),
            QUERY,
            "partition",
            10,
            now,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::Api { status: 404, .. }), "{err}");

    // A dead address next to a good one: the good one answers.
    let r = prom
        .query(
            &["http://127.0.0.1:9".into(), prefixed.clone()],
            QUERY,
            "partition",
            10,
            now,
        )
        .await
        .unwrap();
    assert_eq!(r.values.get(&3), Some(&42.0));

    // A query error comes back as Prometheus's own error type.
    let err = prom
        .query(
            std::slice::from_ref(&prefixed),
            "sum(",
            "partition",
            10,
            now,
        )
        .await
        .unwrap_err();
    match err {
        PromError::Api {
            status,
            error_type,
            message,
            ..
        } => {
            assert_eq!((status, error_type.as_str()), (400, "bad_data"));
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("{other}"),
    }
    // Every address failing: all the reasons are kept.
    let err = prom
        .query(
            &["http://127.0.0.1:9".into(), prometheus.url.clone()],
            QUERY,
            "partition",
            10,
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PromError::All(errors) if errors.len() == 2),
        "{err}"
    );
    let text = metrics.encode();
    assert!(text.contains("outcome=\"ok\""), "{text}");
    assert!(text.contains("outcome=\"transport\""), "{text}");
}

#[tokio::test]
async fn post_answered_with_405_is_retried_as_get() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"partition":"1"},"value":[1,"7"]}]}}"#;
    let app = Router::new().route(
        "/api/v1/query",
        get(move |q: axum::extract::RawQuery| async move {
            let q = q.0.unwrap_or_default();
            assert!(q.contains("query=up") && q.contains("time="), "{q}");
            body
        })
        .post(|| async {
            (
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "POST not allowed here",
            )
        }),
    );
    let url = serve(app).await;
    let (prom, _) = client(Duration::from_secs(5));
    let r = prom
        .query(&[url], "up", "partition", 10, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(r.values.get(&1), Some(&7.0));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_budget() {
    let app = Router::new().route(
        "/api/v1/query",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    );
    let url = serve(app).await;
    let (prom, _) = client(Duration::from_millis(300));
    let started = Instant::now();
    let err = prom
        .query(&[url], "up", "partition", 10, jiff::Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, PromError::Timeout { .. } | PromError::Transport { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_in_the_address_are_sent_but_never_shown() {
    let app = Router::new().route(
        "/api/v1/query",
        axum::routing::post(|headers: axum::http::HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth == "Basic YWRtaW46czNjcmV0" {
                (axum::http::StatusCode::OK, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"partition":"0"},"value":[1,"5"]}]}}"#)
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "unauthorized")
            }
        }),
    );
    let url = serve(app).await;
    let with_creds = url.replace("http://", "http://admin:s3cret@");
    let wrong = url.replace("http://", "http://admin:wr0ng@");
    let (prom, metrics) = client(Duration::from_secs(5));
    let now = jiff::Timestamp::now();
    let r = prom
        .query(std::slice::from_ref(&with_creds), "up", "partition", 1, now)
        .await
        .unwrap();
    assert_eq!(
        r.values.get(&0),
        Some(&5.0),
        "basic auth from the URL was sent"
    );
    let err = prom
        .query(&[wrong], "up", "partition", 1, now)
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::Api { status: 401, .. }), "{err}");
    // A dead address with credentials: reqwest's own message names the URL.
    let dead = "http://admin:s3cret@127.0.0.1:9".to_string();
    let dead_err = prom
        .query(&[dead], "up", "partition", 1, now)
        .await
        .unwrap_err();
    let text = metrics.encode();
    for shown in [err.to_string(), dead_err.to_string(), text] {
        assert!(
            !shown.contains("s3cret") && !shown.contains("wr0ng") && !shown.contains("admin"),
            "{shown}"
        );
    }
    assert!(
        metrics.encode().contains(&format!("address=\"{url}\"")),
        "the same label as the address without credentials"
    );
}

#[tokio::test]
async fn an_empty_answer_loses_to_an_address_with_data() {
    let empty = serve(Router::new().route(
        "/api/v1/query",
        axum::routing::post(|| async {
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
        }),
    ))
    .await;
    let full = serve(Router::new().route(
        "/api/v1/query",
        axum::routing::post(|| async {
            // Answers later than the empty one.
            tokio::time::sleep(Duration::from_millis(200)).await;
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"partition":"2"},"value":[1,"9"]}]}}"#
        }),
    ))
    .await;
    let (prom, _) = client(Duration::from_secs(5));
    let now = jiff::Timestamp::now();
    let r = prom
        .query(&[empty.clone(), full], "up", "partition", 4, now)
        .await
        .unwrap();
    assert_eq!(r.values.get(&2), Some(&9.0));
    // Alone, the empty answer is still an answer.
    let r = prom
        .query(&[empty], "up", "partition", 4, now)
        .await
        .unwrap();
    assert!(r.values.is_empty());
}

#[tokio::test]
async fn a_partition_without_lag_is_without_data_not_caught_up() {
    // Production for partitions 0..3; the lag exporter only knows 0 and 1;
    // consumption is missing for partition 1.
    let app = Router::new().route(
        "/api/v1/query",
        // The form body, URL-encoded: the metric names survive encoding.
        axum::routing::post(|q: String| async move {
            let series = |values: &[(u32, &str)]| {
                let result: Vec<String> = values
                    .iter()
                    .map(|(p, v)| {
                        format!(r#"{{"metric":{{"partition":"{p}"}},"value":[1,"{v}"]}}"#)
                    })
                    .collect();
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                    result.join(",")
                )
            };
            if q.contains("consumergroup_lag") {
                series(&[(0, "0"), (1, "500")])
            } else if q.contains("topic_partition_current_offset") {
                series(&[(0, "100"), (1, "100"), (2, "100"), (3, "100")])
            } else {
                series(&[(0, "100"), (2, "100"), (3, "100")])
            }
        }),
    );
    let url = serve(app).await;
    let mut consumer: konsumer::api::Consumer =
        serde_saphyr::from_str(&crate::support::orders_yaml()).unwrap();
    if let Some(p) = consumer
        .spec
        .autoscaler
        .as_mut()
        .map(konsumer::api::Shared::make_mut)
        .and_then(|a| a.prometheus.as_mut())
    {
        p.address = Some(vec![url]);
    }
    let (prom, _) = client(Duration::from_secs(5));
    let snapshot = konsumer::reconciler::read_metrics(&prom, &consumer, 10, jiff::Timestamp::now())
        .await
        .unwrap();
    let keys: Vec<u32> = snapshot.partitions.keys().copied().collect();
    assert_eq!(keys, [0, 1], "2 and 3 have no lag value");
    assert_eq!(snapshot.partitions[&1].messages_behind, 500);
    assert_eq!(snapshot.partitions[&1].consumption_rate, 0);
    assert!(
        snapshot
            .issues
            .iter()
            .any(|i| i.contains("offset: no value for 2 partitions")),
        "{:?}",
        snapshot.issues
    );
}
