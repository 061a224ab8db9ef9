//! The Consumer status konsumer writes (pure): Konsumerator's counters from the
//! workloads konsumer can see, konsumer's conditions, and the instances.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::api::{ConsumerStatus, keys};
use crate::inject::workload::Workload;
use crate::inject::{self, ConsumerSettings};

pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const RECONCILED: &str = "Reconciled";

/// Konsumerator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub expected: i32,
    /// Instances with a workload (not paused).
    pub running: i32,
    /// Instances whose workloads all carry `disable-autoscaler`.
    pub paused: i32,
    /// Instances without any workload.
    pub missing: i32,
    /// Instances whose largest lag reached `tolerableLag`.
    pub lagging: i32,
    /// Workloads the webhook would change now (new partitions, env or resources).
    pub outdated: i32,
    /// Workloads that name no valid instance.
    pub redundant: i32,
}

fn owned_by_replicaset(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind").and_then(Value::as_str) == Some("ReplicaSet"))
        })
}

/// Counts the labelled Deployments and Pods (`objects`, as JSON) of a Consumer.
/// Pods of ReplicaSets are their Deployment's; StatefulSet and Job Pods count.
pub fn count(
    settings: &ConsumerSettings,
    objects: &[Value],
    lagging: &[bool],
    ratio: f64,
) -> Counters {
    let instances = settings.instances() as usize;
    let mut covered = vec![false; instances];
    let mut active = vec![false; instances];
    let mut counters = Counters {
        expected: instances as i32,
        lagging: lagging.iter().filter(|l| **l).count() as i32,
        ..Counters::default()
    };
    for object in objects {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "Pod" && owned_by_replicaset(object) {
            continue;
        }
        let Ok(view) = Workload::deserialize_from(object) else {
            counters.redundant += 1;
            continue;
        };
        let decision = match kind {
            "Deployment" => inject::decide_deployment(&view, settings, ratio),
            "Pod" => inject::decide_pod(&view, settings, ratio),
            _ => continue,
        };
        let Ok(decision) = decision else {
            counters.redundant += 1;
            continue;
        };
        let id = decision.instance as usize;
        let paused = view
            .metadata
            .as_ref()
            .and_then(|m| m.annotation(keys::DISABLE_AUTOSCALER))
            .is_some();
        covered[id] = true;
        active[id] |= !paused;
        // Pods are listed by metadata only; a Deployment is outdated when the webhook
        // would change it now.
        if kind == "Deployment" && !decision.mutation.ops.is_empty() {
            counters.outdated += 1;
        }
    }
    for id in 0..instances {
        match (covered[id], active[id]) {
            (false, _) => counters.missing += 1,
            (true, true) => counters.running += 1,
            (true, false) => counters.paused += 1,
        }
    }
    counters
}

/// Sets a condition, keeping its transition time when its status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_text = if status { "True" } else { "False" };
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let since = previous
        .map(|i| &conditions[i])
        .filter(|c| c.status == status_text)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_string(),
        status: status_text.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Applies the counters to a status.
pub fn apply_counters(status: &mut ConsumerStatus, c: Counters) {
    status.expected = Some(c.expected);
    status.running = Some(c.running);
    status.paused = Some(c.paused);
    status.missing = Some(c.missing);
    status.lagging = Some(c.lagging);
    status.outdated = Some(c.outdated);
    status.redundant = Some(c.redundant);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn orders() -> ConsumerSettings {
        ConsumerSettings::from_consumer(&crate::api::test_orders()).unwrap()
    }

    fn deployment(name: &str, annotations: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": name, "annotations": annotations,
            "labels": {"konsumerator.lwolf.org/consumer": "orders"}},
            "spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "consumer"}]}}}})
    }

    #[test]
    fn counters_follow_the_workloads_konsumer_sees() {
        let s = orders();
        let objects = vec![
            deployment("orders-0", json!({})),
            deployment(
                "orders-1",
                json!({"konsumerator.lwolf.org/disable-autoscaler": ""}),
            ),
            deployment(
                "orders-2",
                json!({"konsumerator.lwolf.org/disable-autoscaler": ""}),
            ),
            deployment("orders-9", json!({})),
            json!({"kind": "Pod", "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders",
                "konsumerator.lwolf.org/instance": "0"}, "ownerReferences": [{"kind": "ReplicaSet", "name": "x"}]},
                "spec": {"containers": []}}),
        ];
        let c = count(&s, &objects, &[true, false, true, false], 0.8);
        assert_eq!(
            c,
            Counters {
                expected: 4,
                running: 1,
                paused: 2,
                missing: 1,
                lagging: 2,
                outdated: 3,
                redundant: 1
            }
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_until_the_status_flips() {
        let t0: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-22T12:05:00Z".parse().unwrap();
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            METRICS_AVAILABLE,
            true,
            "MetricsRead",
            "ok".into(),
            Some(1),
            t0,
        );
        set_condition(
            &mut conditions,
            METRICS_AVAILABLE,
            true,
            "MetricsRead",
            "again".into(),
            Some(1),
            t1,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time.0, t0);
        set_condition(
            &mut conditions,
            METRICS_AVAILABLE,
            false,
            "PrometheusUnavailable",
            "down".into(),
            Some(1),
            t1,
        );
        assert_eq!(conditions[0].last_transition_time.0, t1);
        assert_eq!(conditions[0].status, "False");
    }
}
