//! Trace export (`--otlp-endpoint`, a build with `--features otlp`): the built
//! binary sends its admission spans to a real OTLP/HTTP receiver on loopback.
//! Without the feature, the flag is refused with what to do.

use std::process::Command;

#[cfg(not(feature = "otlp"))]
#[test]
fn without_the_otlp_feature_the_flag_is_refused_with_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args([
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "serve",
            "--local",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--otlp-endpoint") && stderr.contains("--features otlp"),
        "{stderr}"
    );
}

#[cfg(feature = "otlp")]
#[test]
fn a_bad_endpoint_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args(["--otlp-endpoint", "collector:4318", "crd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--otlp-endpoint"), "{stderr}");
}

#[cfg(feature = "otlp")]
#[tokio::test]
async fn admission_spans_reach_an_otlp_receiver_and_the_last_batch_is_sent_at_exit() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::http::HeaderMap;

    use crate::e2e_local::{Binary, copy_example};
    use crate::support::*;

    // A real OTLP/HTTP receiver: every POST to /v1/traces is kept.
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                kept.lock().unwrap().push((content_type, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let konsumer = Binary::serve_local(dir.path(), &["--otlp-endpoint", &endpoint]);
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    let client = client_trusting(&ca);
    let answer = client
        .post(format!(
            "https://localhost:{}/mutate/workloads",
            konsumer.webhook.port()
        ))
        .header("content-type", "application/json")
        .body(fixture_bytes("pod-create-indexed-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let uid = fixture("pod-create-indexed-job")["request"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // The batch goes out at exit at the latest.
    let status = tokio::task::spawn_blocking(move || konsumer.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "no OTLP export reached the receiver");
    let contains = |needle: &str| {
        received
            .iter()
            .any(|(_, body)| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    assert!(
        received
            .iter()
            .all(|(ct, _)| ct == "application/x-protobuf"),
        "{:?}",
        received.iter().map(|(ct, _)| ct).collect::<Vec<_>>()
    );
    // Protobuf keeps strings as they are: the span, its attributes and the
    // service are readable in the bytes.
    for needle in ["admission", "mutate_workloads", uid.as_str(), "konsumer"] {
        assert!(contains(needle), "{needle:?} not in any exported batch");
    }
}
