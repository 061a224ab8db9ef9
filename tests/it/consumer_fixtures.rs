//! The captured Consumer AdmissionReviews, answered by the real server over TLS as
//! tests/fixtures/README.md says.

use serde_json::Value;

use crate::support::*;

async fn answer(s: &LocalServer, fixture_name: &str) -> Value {
    let path = if fixture_name.ends_with(".mutate") {
        "/mutate/consumers"
    } else {
        "/validate/consumers"
    };
    let request = fixture(fixture_name);
    let (status, review) = s.post(path, fixture_bytes(fixture_name)).await;
    assert_eq!(status, 200, "{fixture_name}: {review}");
    assert_eq!(review["response"]["uid"], request["request"]["uid"]);
    review
}

fn causes(review: &Value) -> Vec<(String, String)> {
    review["response"]["status"]["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn assert_denied_with(review: &Value, expected: &[(&str, &str)]) {
    let r = &review["response"];
    assert_eq!(r["allowed"], false, "{review}");
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    assert_eq!(r["status"]["details"]["kind"], "Consumer");
    assert_eq!(r["status"]["details"]["group"], "konsumerator.lwolf.org");
    let causes = causes(review);
    assert_eq!(causes.len(), expected.len(), "{causes:#?}");
    for (field, message) in expected {
        assert!(
            causes
                .iter()
                .any(|(f, m)| f == field && m.contains(message)),
            "no cause {field}: {message} in {causes:#?}"
        );
        let full = r["status"]["message"].as_str().unwrap();
        assert!(full.contains(field), "the message names {field}: {full}");
    }
}

#[tokio::test]
async fn a_complete_v1_consumer_is_valid_and_needs_no_defaults() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-v1-create.validate").await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(warnings(&v).is_empty(), "{v}");
    let m = answer(&s, "consumer-v1-create.mutate").await;
    assert_eq!(m["response"]["allowed"], true);
    assert!(
        m["response"].get("patch").is_none(),
        "every default is set: {m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_v1alpha1_seed_example_is_valid_deprecated_and_defaulted() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-v1alpha1-seed-example.validate").await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("v1alpha1") && w.contains("deprecated")),
        "{v}"
    );

    let request = fixture("consumer-v1alpha1-seed-example.mutate");
    let m = answer(&s, "consumer-v1alpha1-seed-example.mutate").await;
    assert_eq!(m["response"]["allowed"], true);
    let defaulted = patched_object(&request, &m);
    let a = &defaulted["spec"]["autoscaler"];
    assert_eq!(a["pendingScaleUpDuration"], "5m");
    assert_eq!(a["pendingScaleDownDuration"], "15m");
    assert_eq!(a["prometheus"]["cpuIncrement"], "100m");
    assert_eq!(a["prometheus"]["fallbackStrategy"], "min");
    assert_eq!(
        patch_of(&m).len(),
        4,
        "exactly the four missing defaults: {:?}",
        patch_of(&m)
    );
    assert_eq!(
        defaulted["spec"]["partitionEnvKey"], "PARTITION",
        "set values are kept"
    );
    s.stop().await;
}

#[tokio::test]
async fn invalid_partitions_name_both_fields() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-invalid-partitions.validate").await;
    assert_denied_with(
        &v,
        &[
            ("spec.numPartitions", "Invalid value: 0"),
            ("spec.numPartitionsPerInstance", "Invalid value: -1"),
        ],
    );
    s.stop().await;
}

#[tokio::test]
async fn prometheus_mode_without_prometheus_is_denied() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-invalid-no-prometheus.validate").await;
    assert_denied_with(&v, &[("spec.autoscaler.prometheus", "Required value")]);
    s.stop().await;
}

#[tokio::test]
async fn a_bad_policy_gets_every_problem_at_once() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-invalid-policy.validate").await;
    assert_denied_with(
        &v,
        &[
            (
                "spec.resourcePolicy.containerPolicies[0]",
                "minAllowed.cpu (2) is above maxAllowed.cpu (1)",
            ),
            (
                "spec.resourcePolicy.containerPolicies[0]",
                "minAllowed.memory (8Gi) is above maxAllowed.memory (1Gi)",
            ),
            (
                "spec.resourcePolicy.containerPolicies[2].containerName",
                "no container of this name",
            ),
            (
                "spec.resourcePolicy.containerPolicies[3].containerName",
                "Duplicate value: \"log-shipper\"",
            ),
        ],
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_lags_address_and_query_are_all_named() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-invalid-lags.validate").await;
    assert_denied_with(
        &v,
        &[
            (
                "spec.autoscaler.prometheus.criticalLag",
                "must not be below tolerableLag",
            ),
            (
                "spec.autoscaler.prometheus.address[0]",
                "must be an http(s) URL",
            ),
            (
                "spec.autoscaler.prometheus.offset.query",
                "must not be empty",
            ),
        ],
    );
    s.stop().await;
}

#[tokio::test]
async fn shrinking_a_consumer_is_allowed_with_a_warning() {
    let s = LocalServer::orders().await;
    let v = answer(&s, "consumer-update-shrink.validate").await;
    assert_eq!(v["response"]["allowed"], true);
    let w = warnings(&v);
    assert!(
        w.iter()
            .any(|w| w.contains("numPartitions decreased from 10 to 8")),
        "{w:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_seed_readme_example_passes_the_cli_too() {
    let path = fixtures_dir().join("consumer-seed-example.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args(["validate", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Consumer default/consumer-sample: valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: konsumerator.lwolf.org/v1alpha1 Consumer is deprecated"),
        "{stdout}"
    );

    let broken = std::fs::read_to_string(fixtures_dir().join("consumer-orders.yaml"))
        .unwrap()
        .replace("ratePerCore: 20000", "ratePerCore: 0")
        .replace("recoveryTime: 30m", "recoveryTime: 0s");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(broken.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("error: spec.autoscaler.prometheus.ratePerCore: Invalid value: 0: must be greater than 0"), "{stdout}");
    assert!(
        stdout.contains("error: spec.autoscaler.prometheus.recoveryTime: Invalid value: \"0s\""),
        "{stdout}"
    );
}

#[tokio::test]
async fn non_consumer_objects_and_deletes_are_allowed() {
    let s = LocalServer::orders().await;
    let mut review = fixture("consumer-invalid-partitions.validate");
    review["request"]["operation"] = "DELETE".into();
    let (_, v) = s
        .post("/validate/consumers", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(v["response"]["allowed"], true);
    review["request"]["operation"] = "CREATE".into();
    review["request"]["kind"]["kind"] = "ConfigMap".into();
    let (_, v) = s
        .post("/validate/consumers", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(v["response"]["allowed"], true);
    assert!(!warnings(&v).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_consumer_being_deleted_can_lose_its_finalizers_whatever_its_spec() {
    let s = LocalServer::orders().await;
    let mut review = fixture("consumer-invalid-partitions.validate");
    let old = review["request"]["object"].clone();
    let mut new = old.clone();
    new["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z".into();
    review["request"]["operation"] = "UPDATE".into();
    review["request"]["oldObject"] = old;
    review["request"]["object"] = new;
    let (_, v) = s
        .post("/validate/consumers", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    s.stop().await;
}
