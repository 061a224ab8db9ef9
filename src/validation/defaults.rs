//! Consumer defaults, made explicit so that `kubectl get -o yaml` shows the values
//! in force. Only unset fields inside existing parents are filled; a Consumer with
//! every default set gets no operation.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use serde_json::Value;

use crate::api::env;

pub const PENDING_SCALE_UP: &str = "5m";
pub const PENDING_SCALE_DOWN: &str = "15m";
pub const CPU_INCREMENT: &str = "100m";
pub const FALLBACK_STRATEGY: &str = "min";
pub const PARTITIONS_PER_INSTANCE: i64 = 1;

/// `(parent pointer tokens, field, default)`, parents before children.
fn defaults() -> [(&'static [&'static str], &'static str, Value); 6] {
    [
        (
            &["spec"],
            "numPartitionsPerInstance",
            Value::from(PARTITIONS_PER_INSTANCE),
        ),
        (
            &["spec"],
            "partitionEnvKey",
            Value::from(env::DEFAULT_PARTITION),
        ),
        (
            &["spec", "autoscaler"],
            "pendingScaleUpDuration",
            Value::from(PENDING_SCALE_UP),
        ),
        (
            &["spec", "autoscaler"],
            "pendingScaleDownDuration",
            Value::from(PENDING_SCALE_DOWN),
        ),
        (
            &["spec", "autoscaler", "prometheus"],
            "cpuIncrement",
            Value::from(CPU_INCREMENT),
        ),
        (
            &["spec", "autoscaler", "prometheus"],
            "fallbackStrategy",
            Value::from(FALLBACK_STRATEGY),
        ),
    ]
}

/// The operations that add the missing defaults to `object`.
pub fn patch(object: &Value) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    for (parent, field, value) in defaults() {
        let mut at = object;
        let mut present = true;
        for token in parent {
            match at.get(token) {
                Some(v) if v.is_object() => at = v,
                _ => {
                    present = false;
                    break;
                }
            }
        }
        if !present {
            continue;
        }
        let unset = match at.get(field) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty() && field == "partitionEnvKey",
            _ => false,
        };
        if unset {
            let mut path = PointerBuf::from_tokens(parent.iter().copied());
            path.push_back(field);
            ops.push(PatchOperation::Add(AddOperation { path, value }));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_unset_fields_in_existing_parents_are_defaulted() {
        let object = json!({"spec": {"numPartitionsPerInstance": 3, "autoscaler": {"mode": "", "pendingScaleUpDuration": null}}});
        let paths: Vec<String> = patch(&object)
            .iter()
            .map(|o| o.path().to_string())
            .collect();
        assert_eq!(
            paths,
            vec![
                "/spec/partitionEnvKey",
                "/spec/autoscaler/pendingScaleUpDuration",
                "/spec/autoscaler/pendingScaleDownDuration"
            ]
        );
        assert!(patch(&json!({"metadata": {}})).is_empty());
        assert!(patch(&json!([1, 2])).is_empty());
    }
}
