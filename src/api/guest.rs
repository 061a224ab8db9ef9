//! Guest mode's Consumers (pure), as Konsumerator kept them: a ConfigMap
//! annotated `konsumerator.lwolf.org/managed` whose data entry is a
//! `ConsumerSpec` in YAML, its status in the ConfigMap's
//! `konsumerator.lwolf.org/status.*` annotations. What Konsumerator had no
//! annotation for (the recommendations, the conditions) is kept as JSON in
//! `konsumer.dev/status`, so that every replica's webhook reads the same.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value, json};

use super::{Consumer, ConsumerSpec, ConsumerStatus, GROUP, SyncState, VERSION_V1, keys};

/// Konsumerator's status annotations.
pub mod annotations {
    pub const EXPECTED: &str = "konsumerator.lwolf.org/status.expected";
    pub const RUNNING: &str = "konsumerator.lwolf.org/status.running";
    pub const PAUSED: &str = "konsumerator.lwolf.org/status.paused";
    pub const MISSING: &str = "konsumerator.lwolf.org/status.missing";
    pub const LAGGING: &str = "konsumerator.lwolf.org/status.lagging";
    pub const OUTDATED: &str = "konsumerator.lwolf.org/status.outdated";
    pub const LAST_SYNC_TIME: &str = "konsumerator.lwolf.org/status.last-sync-time";
    pub const LAST_SYNC_STATE: &str = "konsumerator.lwolf.org/status.last-sync-state";
    /// konsumer's own status fields (recommendations, conditions...), as JSON.
    pub const KONSUMER_STATUS: &str = "konsumer.dev/status";
    /// What is wrong with the ConsumerSpec, while something is (else absent).
    pub const SPEC_PROBLEMS: &str = "konsumer.dev/spec-problems";
}

/// The data key every example uses; another single key works too.
pub const DATA_KEY: &str = "consumer.yaml";

fn counter_keys() -> [&'static str; 6] {
    use annotations::*;
    [EXPECTED, RUNNING, PAUSED, MISSING, LAGGING, OUTDATED]
}

/// Annotations that are status, not part of the Consumer's own metadata.
fn is_status(key: &str) -> bool {
    key.starts_with("konsumerator.lwolf.org/status.")
        || key == annotations::KONSUMER_STATUS
        || key == annotations::SPEC_PROBLEMS
}

/// Whether a ConfigMap is a guest-mode Consumer.
pub fn is_consumer(cm: &ConfigMap) -> bool {
    cm.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::MANAGED))
}

/// The Consumer a ConfigMap holds, or what is wrong with it (every problem).
pub fn consumer(cm: &ConfigMap) -> Result<Consumer, Vec<String>> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let namespace = cm.metadata.namespace.clone().unwrap_or_default();
    let data = cm.data.clone().unwrap_or_default();
    let (key, text) = match (data.get(DATA_KEY), data.len()) {
        (Some(text), _) => (DATA_KEY.to_string(), text.clone()),
        (None, 1) => data.into_iter().next().unwrap_or_default(),
        (None, 0) => {
            return Err(vec![format!(
                "data is empty: put the ConsumerSpec (YAML) under data.{DATA_KEY}"
            )]);
        }
        (None, n) => {
            return Err(vec![format!(
                "data has {n} entries and none is {DATA_KEY}: put the ConsumerSpec (YAML) under data.{DATA_KEY}"
            )]);
        }
    };
    let spec_value: Value = serde_saphyr::from_str(&text)
        .map_err(|e| vec![format!("data.{key} is not valid YAML: {e}")])?;
    if !spec_value.is_object() {
        return Err(vec![format!(
            "data.{key} must be a ConsumerSpec (a YAML mapping: numPartitions, name, autoscaler, ...)"
        )]);
    }
    let object = json!({
        "apiVersion": format!("{GROUP}/{VERSION_V1}"),
        "kind": "Consumer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec_value,
    });
    let report = crate::validation::validate(&object, None, VERSION_V1);
    if !report.errors.is_empty() {
        return Err(report
            .errors
            .iter()
            .map(|e| format!("data.{key}: {e}"))
            .collect());
    }
    let spec: ConsumerSpec = serde_json::from_value(object["spec"].clone())
        .map_err(|e| vec![format!("data.{key}: {e}")])?;
    let all = cm.metadata.annotations.clone().unwrap_or_default();
    let own: BTreeMap<String, String> = all
        .iter()
        .filter(|(k, _)| !is_status(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut c = Consumer::new(&name, spec);
    c.metadata.namespace = Some(namespace);
    c.metadata.uid = cm.metadata.uid.clone();
    c.metadata.resource_version = cm.metadata.resource_version.clone();
    c.metadata.labels = cm.metadata.labels.clone();
    c.metadata.annotations = Some(own);
    c.status = status(&all);
    Ok(c)
}

/// The status kept in a ConfigMap's annotations (`None` without any).
pub fn status(annotations: &BTreeMap<String, String>) -> Option<ConsumerStatus> {
    use annotations::*;
    let mut s: ConsumerStatus = annotations
        .get(KONSUMER_STATUS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let int = |k: &str| {
        annotations
            .get(k)
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    s.expected = int(EXPECTED);
    s.running = int(RUNNING);
    s.paused = int(PAUSED);
    s.missing = int(MISSING);
    s.lagging = int(LAGGING);
    s.outdated = int(OUTDATED);
    s.last_sync_time = annotations
        .get(LAST_SYNC_TIME)
        .and_then(|t| t.parse().ok())
        .map(Time);
    s.last_sync_state = annotations
        .get(LAST_SYNC_STATE)
        .and_then(|j| serde_json::from_str::<SyncState>(j).ok());
    (s != ConsumerStatus::default()).then_some(s)
}

/// The JSON merge patch that writes `status` into the annotations: every
/// status annotation set, or removed (`null`) when the status has no value.
pub fn status_patch(status: &ConsumerStatus) -> Value {
    use annotations::*;
    let mut a = Map::new();
    let values = [
        status.expected,
        status.running,
        status.paused,
        status.missing,
        status.lagging,
        status.outdated,
    ];
    for (key, value) in counter_keys().into_iter().zip(values) {
        a.insert(
            key.into(),
            value.map_or(Value::Null, |v| json!(v.to_string())),
        );
    }
    a.insert(
        LAST_SYNC_TIME.into(),
        status.last_sync_time.as_ref().map_or(Value::Null, |t| {
            json!(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        }),
    );
    a.insert(
        LAST_SYNC_STATE.into(),
        status
            .last_sync_state
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok())
            .map_or(Value::Null, Value::String),
    );
    // The rest, once (the counters and metrics are in Konsumerator's keys).
    let mut own = status.clone();
    own.expected = None;
    own.running = None;
    own.paused = None;
    own.missing = None;
    own.lagging = None;
    own.outdated = None;
    own.last_sync_time = None;
    own.last_sync_state = None;
    a.insert(
        KONSUMER_STATUS.into(),
        if own == ConsumerStatus::default() {
            Value::Null
        } else {
            serde_json::to_string(&own).map_or(Value::Null, Value::String)
        },
    );
    json!({"metadata": {"annotations": a}})
}

/// The merge patch that says what is wrong with the spec (`None`: nothing).
pub fn problems_patch(problems: Option<&[String]>) -> Value {
    let value = problems.map_or(Value::Null, |p| {
        Value::String(format!(
            "konsumer cannot use this ConsumerSpec: {}",
            p.join("; ")
        ))
    });
    json!({"metadata": {"annotations": {annotations::SPEC_PROBLEMS: value}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config_map(data: &[(&str, &str)], annotations: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("consumer-sample".into()),
                namespace: Some("default".into()),
                uid: Some("cm-uid".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn spec_yaml() -> String {
        let c: Value =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/consumer-orders.yaml"))
                .unwrap();
        serde_saphyr::to_string(&c["spec"]).unwrap()
    }

    #[test]
    fn a_managed_config_map_is_a_consumer_named_after_it() {
        let cm = config_map(
            &[("consumer.yaml", &spec_yaml())],
            &[
                ("konsumerator.lwolf.org/managed", "true"),
                ("konsumerator.lwolf.org/disable-autoscaler", ""),
                ("konsumerator.lwolf.org/status.expected", "4"),
            ],
        );
        assert!(is_consumer(&cm));
        let c = consumer(&cm).unwrap();
        assert_eq!(c.key(), "default/consumer-sample");
        assert_eq!(c.metadata.uid.as_deref(), Some("cm-uid"));
        assert_eq!(c.spec.num_partitions, Some(10));
        let a = c.metadata.annotations.unwrap();
        assert!(
            a.contains_key(keys::DISABLE_AUTOSCALER),
            "pausing works on the ConfigMap"
        );
        assert!(!a.contains_key(annotations::EXPECTED), "status is status");
        assert_eq!(c.status.unwrap().expected, Some(4));
        assert!(!is_consumer(&config_map(&[], &[])));
    }

    #[test]
    fn a_bad_spec_is_every_problem_said_not_a_panic() {
        let broken = spec_yaml().replace("ratePerCore: 20000", "ratePerCore: 0");
        let errs = consumer(&config_map(&[("consumer.yaml", &broken)], &[])).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.contains("data.consumer.yaml: spec.autoscaler.prometheus.ratePerCore")),
            "{errs:?}"
        );
        let errs =
            consumer(&config_map(&[("consumer.yaml", "numPartitions: [")], &[])).unwrap_err();
        assert!(errs[0].contains("not valid YAML"), "{errs:?}");
        let errs = consumer(&config_map(&[("a", "x"), ("b", "y")], &[])).unwrap_err();
        assert!(errs[0].contains("none is consumer.yaml"), "{errs:?}");
        let errs = consumer(&config_map(&[("only", "- 1\n- 2\n")], &[])).unwrap_err();
        assert!(errs[0].contains("must be a ConsumerSpec"), "{errs:?}");
        // One entry under another key works, as in Konsumerator.
        assert!(consumer(&config_map(&[("spec", &spec_yaml())], &[])).is_ok());
    }

    #[test]
    fn status_round_trips_through_konsumerators_annotations() {
        let now: Time = Time("2026-11-22T12:00:01Z".parse().unwrap());
        let mut sync = SyncState::new();
        sync.insert(
            "0",
            crate::api::PartitionState {
                production_rate: 500,
                consumption_rate: 480,
                messages_behind: 15000,
            },
        );
        let status = ConsumerStatus {
            expected: Some(4),
            running: Some(3),
            paused: Some(0),
            missing: Some(1),
            lagging: Some(1),
            outdated: Some(0),
            unavailable: Some(0),
            last_sync_time: Some(now),
            last_sync_state: Some(sync),
            ..ConsumerStatus::default()
        };
        let patch = status_patch(&status);
        let a = &patch["metadata"]["annotations"];
        assert_eq!(a["konsumerator.lwolf.org/status.running"], "3");
        assert_eq!(
            a["konsumerator.lwolf.org/status.last-sync-time"],
            "2026-11-22T12:00:01Z"
        );
        assert_eq!(
            a["konsumerator.lwolf.org/status.last-sync-state"],
            r#"{"0":{"productionRate":500,"consumptionRate":480,"messageBehind":15000}}"#
        );
        assert_eq!(a["konsumer.dev/status"], r#"{"unavailable":0}"#);
        let stored: BTreeMap<String, String> = a
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        assert_eq!(super::status(&stored), Some(status));
        let empty = status_patch(&ConsumerStatus::default());
        assert!(
            empty["metadata"]["annotations"]["konsumerator.lwolf.org/status.last-sync-time"]
                .is_null()
        );
    }
}
