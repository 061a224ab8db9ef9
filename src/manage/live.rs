//! What a running Deployment says about itself: whose it is, which instance,
//! whether it is paused, whether its rollout is done, what it runs with.

use serde_json::Value;

use crate::api::keys;
use crate::api::quantity::Milli;
use crate::inject::settings::{ALL_CONTAINERS, ContainerTarget, Resources};

pub fn name(d: &Value) -> &str {
    d.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn namespace(d: &Value) -> &str {
    d.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn generation(d: &Value) -> i64 {
    d.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn annotation<'v>(d: &'v Value, key: &str) -> Option<&'v str> {
    d.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The controller reference: (kind, name, uid).
pub fn controller(d: &Value) -> Option<(&str, &str, &str)> {
    d.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
            (s("kind"), s("name"), s("uid"))
        })
}

/// Whether a controller (a Consumer, a ConfigMap, anything) owns it: such a
/// Deployment is managed by someone, not a user's own workload.
pub fn has_controller(d: &Value) -> bool {
    controller(d).is_some()
}

/// The instance in `konsumerator.lwolf.org/consumer-id` (`None`: absent or unreadable).
pub fn instance(d: &Value) -> Option<u32> {
    annotation(d, keys::CONSUMER_ID).and_then(|v| v.parse().ok())
}

/// The partitions in `konsumerator.lwolf.org/partition` (`0,1,2`).
pub fn partitions(d: &Value) -> Option<Vec<u32>> {
    annotation(d, keys::PARTITION)?
        .split(',')
        .map(|p| p.trim().parse().ok())
        .collect()
}

/// Paused with Konsumerator's `disable-autoscaler` annotation (any value).
pub fn paused_by_annotation(d: &Value) -> bool {
    d.pointer("/metadata/annotations")
        .and_then(|a| a.get(keys::DISABLE_AUTOSCALER))
        .is_some()
}

/// `spec.replicas` (1 when unset, the API server's default).
pub fn replicas(d: &Value) -> i64 {
    d.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Whether `manager` applied `spec.replicas` last (server-side apply bookkeeping
/// in `metadata.managedFields`). `kubectl scale` takes the field over.
pub fn applies_replicas(d: &Value, manager: &str) -> bool {
    d.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.get("manager").and_then(Value::as_str) == Some(manager))
        .filter(|m| m.get("operation").and_then(Value::as_str) == Some("Apply"))
        .any(|m| m.pointer("/fieldsV1/f:spec/f:replicas").is_some())
}

/// Where a Deployment's rollout stands (`kubectl rollout status`'s rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every replica runs the current template and is available (or nothing
    /// reports on it: local mode has no Deployment controller).
    Done,
    /// Still rolling out, with why.
    Rolling(String),
    /// `Progressing=False` with `ProgressDeadlineExceeded`: it will not finish on
    /// its own.
    Stalled(String),
}

pub fn progress(d: &Value) -> Progress {
    let Some(status) = d.get("status").filter(|s| s.is_object()) else {
        return Progress::Done;
    };
    let int = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    if observed.is_none_or(|o| o < generation(d)) {
        return Progress::Rolling("the Deployment controller has not seen the change yet".into());
    }
    let stalled = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Progressing")
                && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
        });
    if stalled {
        return Progress::Stalled(format!("{} exceeded its progress deadline", name(d)));
    }
    let wanted = replicas(d);
    let (updated, total, available) = (
        int("updatedReplicas"),
        int("replicas"),
        int("availableReplicas"),
    );
    if updated < wanted {
        return Progress::Rolling(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Progress::Rolling(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Progress::Rolling(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Progress::Done
}

/// Whether at least one replica is available: an instance that runs.
pub fn available(d: &Value) -> bool {
    match d.get("status").filter(|s| s.is_object()) {
        None => true,
        Some(s) => {
            s.get("availableReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        }
    }
}

fn quantity(v: Option<&Value>) -> Option<Milli> {
    match v? {
        Value::String(s) => Milli::parse(s).ok(),
        Value::Number(n) => Milli::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// What the containers `names` of the pod template run with (`*`: the first
/// container). Containers without cpu and memory are left out.
pub fn resources(d: &Value, names: &[&str]) -> Vec<ContainerTarget> {
    let containers = d
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|name| {
            let c = if *name == ALL_CONTAINERS {
                containers.first()
            } else {
                containers
                    .iter()
                    .find(|c| c.get("name").and_then(Value::as_str) == Some(*name))
            }?;
            let side = |s: &str| Resources {
                cpu: quantity(c.pointer(&format!("/resources/{s}/cpu"))),
                memory: quantity(c.pointer(&format!("/resources/{s}/memory"))),
            };
            let t = ContainerTarget {
                name: name.to_string(),
                requests: side("requests"),
                limits: side("limits"),
            };
            (!t.requests.is_empty() || !t.limits.is_empty()).then_some(t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: Value) -> Value {
        json!({"metadata": {"name": "orders-1", "generation": 3}, "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn progress_follows_kubectl_rollout_status() {
        assert_eq!(
            progress(&json!({"metadata": {"name": "x"}})),
            Progress::Done,
            "no controller reports: local mode"
        );
        assert!(matches!(
            progress(&deployment(json!({}))),
            Progress::Rolling(_)
        ));
        assert!(matches!(
            progress(&deployment(
                json!({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2})
            )),
            Progress::Rolling(_)
        ));
        assert!(matches!(
            progress(&deployment(json!({"observedGeneration": 3, "updatedReplicas": 1, "replicas": 2, "availableReplicas": 2}))),
            Progress::Rolling(m) if m.contains("1 of 2")
        ));
        assert!(matches!(
            progress(&deployment(json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}))),
            Progress::Rolling(m) if m.contains("old replicas")
        ));
        assert!(matches!(
            progress(&deployment(json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}))),
            Progress::Rolling(m) if m.contains("available")
        ));
        assert_eq!(
            progress(&deployment(
                json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2})
            )),
            Progress::Done
        );
        let stalled = json!({"observedGeneration": 3, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        assert!(matches!(
            progress(&deployment(stalled)),
            Progress::Stalled(_)
        ));
    }

    #[test]
    fn replicas_ownership_comes_from_managed_fields() {
        let d = json!({"metadata": {"managedFields": [
            {"manager": "konsumer", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": 0}});
        assert!(!applies_replicas(&d, "konsumer"));
        assert!(
            !applies_replicas(&d, "kubectl"),
            "an Update is not an Apply"
        );
        let ours = json!({"metadata": {"managedFields": [
            {"manager": "konsumer", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]}});
        assert!(applies_replicas(&ours, "konsumer"));
        assert_eq!(replicas(&json!({"spec": {}})), 1);
    }

    #[test]
    fn annotations_name_the_instance_and_its_partitions() {
        let d = json!({"metadata": {"annotations": {"konsumerator.lwolf.org/consumer-id": "2",
            "konsumerator.lwolf.org/partition": "6,7", "konsumerator.lwolf.org/disable-autoscaler": ""},
            "ownerReferences": [{"kind": "Consumer", "name": "orders", "uid": "u", "controller": true}]}});
        assert_eq!(instance(&d), Some(2));
        assert_eq!(partitions(&d), Some(vec![6, 7]));
        assert!(paused_by_annotation(&d));
        assert_eq!(controller(&d), Some(("Consumer", "orders", "u")));
        let bad = json!({"metadata": {"annotations": {"konsumerator.lwolf.org/consumer-id": "two",
            "konsumerator.lwolf.org/partition": ""}}});
        assert_eq!(instance(&bad), None);
        assert_eq!(partitions(&bad), None);
        assert!(!has_controller(&bad));
    }

    #[test]
    fn resources_are_read_from_the_named_containers() {
        let d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "consumer", "resources": {"requests": {"cpu": "1300m", "memory": 2147483648u64}, "limits": {"cpu": "2"}}},
            {"name": "bare"}]}}}});
        let r = resources(&d, &["consumer", "bare", "missing"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].requests.cpu, Milli::parse("1300m").ok());
        assert_eq!(r[0].requests.memory, Milli::parse("2Gi").ok());
        assert_eq!(r[0].limits.memory, None);
        assert_eq!(resources(&d, &["*"])[0].name, "*");
    }
}
