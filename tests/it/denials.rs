//! Denials as a person sees them through a real apiserver: for a 422 `Invalid`,
//! kubectl prints "The <Kind> \"<name>\" is invalid: " and the causes, without
//! the apiserver's "admission webhook … denied the request" prefix. Each workload
//! denial must still say that konsumer refused it, and what to do.

use std::sync::Arc;

use konsumer::config::{Mode, ServeConfig, TlsSource};
use konsumer::server::{self, Backend, tls};
use konsumer::store::ConsumerIndex;
use konsumer::store::kube::KubeStore;
use serde_json::Value;

use crate::fake_apiserver::FakeApiServer;
use crate::support::*;

/// What kubectl prints for a webhook's denial (kubectl's `checkErr`: Invalid with
/// causes is "The {kind} {name:?} is invalid: " + "field: message" per cause; any
/// other reason is the apiserver's message, which names the webhook).
fn as_kubectl_shows_it(review: &Value) -> String {
    let status = &review["response"]["status"];
    assert_eq!(review["response"]["allowed"], false, "{review}");
    let causes = status["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if status["reason"] == "Invalid" && !causes.is_empty() {
        let head = match (
            status["details"]["kind"].as_str(),
            status["details"]["name"].as_str(),
        ) {
            (Some(kind), Some(name)) => format!("The {kind} {name:?} is invalid"),
            _ => "The request is invalid".to_string(),
        };
        let lines: Vec<String> = causes
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["field"].as_str().unwrap(),
                    c["message"].as_str().unwrap()
                )
            })
            .collect();
        format!("{head}: {}", lines.join("\n"))
    } else {
        format!(
            "admission webhook \"workloads.konsumer.dev\" denied the request: {}",
            status["message"].as_str().unwrap()
        )
    }
}

#[tokio::test]
async fn every_workload_denial_says_konsumer_refused_it_and_what_to_do() {
    let s = LocalServer::orders().await;
    for (fixture_name, what_to_do) in [
        (
            "deployment-create-instance-out-of-range",
            "use an instance in 0..3",
        ),
        (
            "deployment-create-unknown-consumer",
            "create the Consumer first, or fix the label",
        ),
        ("deployment-create-no-instance", "set the label"),
    ] {
        let (_, review) = s
            .post("/mutate/workloads", fixture_bytes(fixture_name))
            .await;
        let shown = as_kubectl_shows_it(&review);
        assert!(
            shown.starts_with("The Deployment \""),
            "{fixture_name}: {shown}"
        );
        assert!(
            shown.contains("konsumer refused this Deployment: "),
            "{fixture_name}: {shown}"
        );
        assert!(shown.contains(what_to_do), "{fixture_name}: {shown}");
        let status = &review["response"]["status"];
        assert_eq!(status["details"]["group"], "apps");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with("konsumer refused this Deployment: "),
            "{status}"
        );
    }
    // A Pod made by a ReplicaSet has no name yet: kubectl says "The request is invalid".
    let mut pod = fixture("pod-create-from-replicaset");
    pod["request"]["object"]["metadata"]["labels"]["konsumerator.lwolf.org/instance"] =
        Value::from("9");
    let (_, review) = s
        .post("/mutate/workloads", serde_json::to_vec(&pod).unwrap())
        .await;
    let shown = as_kubectl_shows_it(&review);
    assert!(
        shown.starts_with("The request is invalid: metadata.labels[konsumerator.lwolf.org/instance]: konsumer refused this Pod: instance 9"),
        "{shown}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_workload_in_a_namespace_konsumer_does_not_watch_is_told_so() {
    let (client, fake) = FakeApiServer::start();
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = tls::ensure_local(certs.path()).unwrap();
    let mut config = ServeConfig::local_for_tests(certs.path().to_path_buf());
    config.mode = Mode::Kube {
        namespace: Some("team-a".into()),
    };
    config.tls = TlsSource::Files(files);
    let index = ConsumerIndex::new();
    let store = Arc::new(KubeStore::new(client, Some("team-a".into()), index.clone()));
    let running = server::start(config, index.clone(), Backend::kube(store))
        .await
        .unwrap();
    index.wait_synced().await;
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let review: Value = client_trusting(&ca)
        .post(format!(
            "https://localhost:{}/mutate/workloads",
            running.webhook_addr.port()
        ))
        .body(fixture_bytes("deployment-create-instance-label"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = as_kubectl_shows_it(&review);
    assert!(
        shown.contains("namespace \"streams\" is not watched")
            && shown.contains("namespace \"team-a\" only (--namespace)")
            && shown.contains("namespaceSelector"),
        "{shown}"
    );
    assert!(
        !fake
            .seen()
            .iter()
            .any(|r| r.path.contains("/namespaces/streams/")),
        "no read of a namespace konsumer does not watch"
    );
    running.stop().await;
}
