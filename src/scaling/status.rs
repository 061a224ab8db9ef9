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

/// Konsumerator's counters, with konsumer's definitions (README, "Status"):
/// every instance is exactly one of running, paused, missing or unavailable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Instances the spec asks for.
    pub expected: i32,
    /// Instances with an available replica that are not paused.
    pub running: i32,
    /// Instances whose workloads are all paused (`disable-autoscaler`, or
    /// scaled to 0 replicas).
    pub paused: i32,
    /// Instances without any workload.
    pub missing: i32,
    /// Instances with a workload that is neither paused nor available: Pods
    /// Pending or not running, a Deployment without an available replica.
    pub unavailable: i32,
    /// Instances whose largest lag reached `tolerableLag`.
    pub lagging: i32,
    /// Deployments the webhook would change now (for managed Deployments the
    /// Deployment manager counts those it would roll).
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

fn has_controller(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

/// Whether a workload has a replica that runs. Objects nothing reports on (no
/// `status`: the manifests of local mode) count as running.
fn available(kind: &str, object: &Value) -> bool {
    let Some(status) = object.get("status").filter(|s| s.is_object()) else {
        return true;
    };
    match kind {
        "Deployment" => {
            status
                .get("availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        }
        _ => status.get("phase").and_then(Value::as_str) == Some("Running"),
    }
}

/// Paused: Konsumerator's annotation, or a Deployment scaled to 0 replicas.
fn paused(kind: &str, object: &Value) -> bool {
    let annotated = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(keys::DISABLE_AUTOSCALER))
        .is_some();
    annotated
        || (kind == "Deployment"
            && object.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0))
}

/// Counts the labelled Deployments and Pods (`objects`, as JSON) of a Consumer,
/// and its managed Deployments. Pods of ReplicaSets are their Deployment's;
/// StatefulSet and Job Pods count.
pub fn count(
    settings: &ConsumerSettings,
    objects: &[Value],
    lagging: &[bool],
    ratio: f64,
) -> Counters {
    let instances = settings.instances() as usize;
    let mut covered = vec![false; instances];
    let mut runs = vec![false; instances];
    let mut all_paused = vec![true; instances];
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
        let is_paused = paused(kind, object);
        covered[id] = true;
        all_paused[id] &= is_paused;
        runs[id] |= !is_paused && available(kind, object);
        // Pods are listed by metadata only; a Deployment is outdated when the webhook
        // would change it now. A controlled one (managed) is judged by its manager.
        if kind == "Deployment" && !has_controller(object) && !decision.mutation.ops.is_empty() {
            counters.outdated += 1;
        }
    }
    for id in 0..instances {
        if !covered[id] {
            counters.missing += 1;
        } else if runs[id] {
            counters.running += 1;
        } else if all_paused[id] {
            counters.paused += 1;
        } else {
            counters.unavailable += 1;
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
    status.unavailable = Some(c.unavailable);
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
                unavailable: 0,
                lagging: 2,
                outdated: 3,
                redundant: 1
            }
        );
    }

    #[test]
    fn a_pending_pod_or_a_deployment_without_available_replicas_is_not_running() {
        let s = orders();
        let mut d0 = deployment("orders-0", json!({}));
        d0["status"] = json!({"replicas": 1, "availableReplicas": 0, "unavailableReplicas": 1});
        let mut d1 = deployment("orders-1", json!({}));
        d1["status"] = json!({"replicas": 1, "availableReplicas": 1});
        let pending = json!({"kind": "Pod", "metadata": {"name": "orders-2", "labels": {"konsumerator.lwolf.org/consumer": "orders",
            "apps.kubernetes.io/pod-index": "2"}, "ownerReferences": [{"kind": "StatefulSet", "name": "orders"}]},
            "status": {"phase": "Pending"}});
        let mut running = pending.clone();
        running["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("3");
        running["status"]["phase"] = json!("Running");
        let c = count(&s, &[d0, d1, pending, running], &[], 0.8);
        assert_eq!(
            (c.running, c.unavailable, c.paused, c.missing),
            (2, 2, 0, 0)
        );
    }

    #[test]
    fn a_deployment_scaled_to_zero_is_paused() {
        let s = orders();
        let mut d = deployment("orders-0", json!({}));
        d["spec"]["replicas"] = json!(0);
        d["status"] = json!({"replicas": 0});
        let c = count(&s, &[d], &[], 0.8);
        assert_eq!((c.running, c.paused, c.missing), (0, 1, 3));
    }

    #[test]
    fn every_instance_is_exactly_one_of_running_paused_missing_or_unavailable() {
        use proptest::prelude::*;
        let s = orders();
        proptest!(|(states in proptest::collection::vec((0u32..6, 0u8..5), 0..12))| {
            let objects: Vec<Value> = states
                .iter()
                .map(|(id, state)| {
                    let mut d = deployment(&format!("orders-{id}"), json!({}));
                    match state {
                        0 => {}
                        1 => d["status"] = json!({"availableReplicas": 0}),
                        2 => d["status"] = json!({"availableReplicas": 1}),
                        3 => d["spec"]["replicas"] = json!(0),
                        _ => d["metadata"]["annotations"] = json!({"konsumerator.lwolf.org/disable-autoscaler": "x"}),
                    }
                    d
                })
                .collect();
            let c = count(&s, &objects, &[], 0.8);
            prop_assert_eq!(c.running + c.paused + c.missing + c.unavailable, c.expected);
        });
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
