//! The committed CRD is the generated one, and it is structural.

use std::path::Path;

use serde_json::Value;

const COMMITTED: &str = "manifests/crd/konsumerator.lwolf.org_consumers.yaml";

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = konsumer::api::crd::consumer_crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{COMMITTED} drifted from the Rust types; regenerate it with:\n  cargo run -- crd --only consumers > {COMMITTED}"
    );
}

fn crd() -> Value {
    serde_json::to_value(konsumer::api::crd::consumer_crd()).unwrap()
}

/// Every schema node says its type (or is int-or-string / an opaque object).
fn assert_structural(schema: &Value, path: &str) {
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    assert!(
        schema.get("type").is_some() || int_or_string,
        "{path} has no type: {schema}"
    );
    for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "definitions"] {
        assert!(schema.get(forbidden).is_none(), "{path} uses {forbidden}");
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = schema.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        assert_structural(extra, &format!("{path}[*]"));
    }
}

#[test]
fn crd_serves_v1_and_deprecated_v1alpha1_with_one_structural_schema() {
    let crd = crd();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let v1 = versions.iter().find(|v| v["name"] == "v1").unwrap();
    let alpha = versions.iter().find(|v| v["name"] == "v1alpha1").unwrap();
    assert_eq!(
        (v1["served"].as_bool(), v1["storage"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        (alpha["served"].as_bool(), alpha["storage"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(alpha["deprecated"], true);
    assert!(
        alpha["deprecationWarning"]
            .as_str()
            .unwrap()
            .contains("v1alpha1")
    );
    assert_eq!(
        v1["schema"], alpha["schema"],
        "same schema for both versions"
    );
    assert!(v1["subresources"]["status"].is_object());
    assert_eq!(crd["spec"]["scope"], "Namespaced");

    let columns: Vec<&str> = v1["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Expected",
            "Running",
            "Paused",
            "Missing",
            "Lagging",
            "Outdated",
            "Unavailable",
            "Metrics",
            "Autoscaler",
            "Age"
        ]
    );
    let column = |name: &str| {
        v1["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        column("Metrics")["jsonPath"],
        r#".status.conditions[?(@.type=="MetricsAvailable")].status"#
    );
    assert_eq!(column("Unavailable")["priority"], 1, "with -o wide only");

    let schema = &v1["schema"]["openAPIV3Schema"];
    assert_structural(schema, "");
    let spec = &schema["properties"]["spec"];
    let template = &spec["properties"]["deploymentTemplate"];
    assert_eq!(template["type"], "object");
    assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
    assert!(
        template.get("properties").is_none(),
        "deploymentTemplate stays opaque"
    );
    let required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        [
            "autoscaler",
            "deploymentTemplate",
            "name",
            "namespace",
            "numPartitions",
            "resourcePolicy"
        ],
        "Konsumerator's required fields"
    );
    let prom = &spec["properties"]["autoscaler"]["properties"]["prometheus"];
    assert!(
        prom["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ratePerCore"))
    );
    assert_eq!(spec["properties"]["numPartitions"]["type"], "integer");
    assert_eq!(
        prom["properties"]["ramPerCore"]["x-kubernetes-int-or-string"],
        true
    );
}

const COMMITTED_SUBSCRIPTIONS: &str = "manifests/crd/konsumer.dev_scalingsubscriptions.yaml";

#[test]
fn committed_subscription_crd_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED_SUBSCRIPTIONS);
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = konsumer::api::crd::subscription_crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{COMMITTED_SUBSCRIPTIONS} drifted from the Rust types; regenerate it with:\n  cargo run -- crd --only scalingsubscriptions > {COMMITTED_SUBSCRIPTIONS}"
    );
}

#[test]
fn subscription_crd_is_structural_namespaced_and_declares_its_status() {
    let crd = serde_json::to_value(konsumer::api::crd::subscription_crd()).unwrap();
    assert_eq!(crd["spec"]["group"], "konsumer.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_object());
    let schema = &v["schema"]["openAPIV3Schema"];
    assert_structural(schema, "");
    let status = &schema["properties"]["status"]["properties"];
    // Every field konsumer applies must be declared: an undeclared one makes the
    // apiserver refuse the whole server-side apply (500).
    for field in [
        "observedGeneration",
        "conditions",
        "cursors",
        "lastAttempt",
        "lastError",
        "delivered",
        "failed",
    ] {
        assert!(
            status.get(field).is_some(),
            "status.{field} is not declared"
        );
    }
    assert_eq!(
        status["cursors"]["additionalProperties"]["type"], "integer",
        "cursors: namespace/name → sequence"
    );
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "URL",
            "Ready",
            "Failing",
            "Disabled",
            "Reason",
            "Delivered",
            "Failed",
            "Age"
        ]
    );
}

#[test]
fn the_consumer_status_declares_the_event_journal() {
    let journal = &crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["journal"];
    assert_eq!(journal["type"], "array");
    let entry = &journal["items"]["properties"];
    for field in ["sequence", "type", "time", "instance", "data"] {
        assert!(
            entry.get(field).is_some(),
            "journal[].{field} is not declared"
        );
    }
    assert_eq!(entry["data"]["x-kubernetes-preserve-unknown-fields"], true);
}
