//! `POST /validate/scalingsubscriptions` over TLS: every problem at once as an
//! `Invalid` status with causes; tenancy of `namespaceSelector`.

use serde_json::{Value, json};

use crate::support::*;

fn review(namespace: &str, spec: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "sub-1",
            "kind": {"group": "konsumer.dev", "version": "v1alpha1", "kind": "ScalingSubscription"},
            "resource": {"group": "konsumer.dev", "version": "v1alpha1", "resource": "scalingsubscriptions"},
            "namespace": namespace, "name": "feed", "operation": "CREATE",
            "object": {
                "apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscription",
                "metadata": {"name": "feed"},
                "spec": spec
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn an_invalid_subscription_is_denied_with_every_problem_and_a_valid_one_allowed() {
    let s = LocalServer::start_with(&[], |c| {
        c.admission.konsumer_namespace = "konsumer-system".into()
    })
    .await;
    let (code, body) = s
        .post(
            "/validate/scalingsubscriptions",
            review(
                "streams",
                json!({"url": "hooks.example.com", "types": ["scaled"], "timeout": "0s",
                       "namespaceSelector": {}}),
            ),
        )
        .await;
    assert_eq!(code, 200);
    let r = &body["response"];
    assert_eq!(r["uid"], "sub-1");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("ScalingSubscription.konsumer.dev \"feed\" is invalid (konsumer)"),
        "{message}"
    );
    let fields: Vec<&str> = r["status"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    for f in [
        "spec.url",
        "spec.secretRef",
        "spec.types[0]",
        "spec.timeout",
        "spec.namespaceSelector",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }

    let valid = json!({"url": "https://hooks.example.com/konsumer",
                       "secretRef": {"name": "feed", "key": "secret"},
                       "types": ["dev.konsumer.instance.scaled.v1"]});
    let (_, body) = s
        .post(
            "/validate/scalingsubscriptions",
            review("streams", valid.clone()),
        )
        .await;
    assert_eq!(body["response"]["allowed"], true, "{body}");

    let mut platform = valid;
    platform["namespaceSelector"] = json!({"matchLabels": {"team": "data"}});
    let (_, body) = s
        .post(
            "/validate/scalingsubscriptions",
            review("konsumer-system", platform.clone()),
        )
        .await;
    assert_eq!(
        body["response"]["allowed"], true,
        "konsumer's own namespace may follow others: {body}"
    );
    let (_, body) = s
        .post(
            "/validate/scalingsubscriptions",
            review("streams", platform),
        )
        .await;
    assert_eq!(body["response"]["allowed"], false);
    s.stop().await;
}
