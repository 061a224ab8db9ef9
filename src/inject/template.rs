//! Telling a user's change of a pod template from a re-apply that only dropped or
//! reset the values konsumer manages (GitOps tools and `kubectl apply` do that):
//! the latter must not roll a Deployment out.

use serde_json::Value;

use super::settings::ConsumerSettings;
use crate::api::{env, keys};

fn remove_if_empty(object: &mut Value, key: &str) {
    let empty = match object.get(key) {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty && let Some(m) = object.as_object_mut() {
        m.remove(key);
    }
}

/// `template` without the fields konsumer writes: its annotations, the injected env
/// vars, and cpu/memory of the containers whose resources it sets.
pub fn strip_managed(template: &Value, settings: &ConsumerSettings) -> Value {
    let mut t = template.clone();
    if let Some(annotations) = t
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(keys::PARTITION);
        annotations.remove(keys::CONSUMER_ID);
    }
    if let Some(meta) = t.get_mut("metadata") {
        remove_if_empty(meta, "annotations");
    }
    let injected = [
        settings.partition_env_key.as_str(),
        env::INSTANCE,
        env::NUM_INSTANCES,
        env::NUM_PARTITIONS,
        env::GOMAXPROCS,
        env::GOMEMLIMIT,
    ];
    for (list, init) in [("containers", false), ("initContainers", true)] {
        let Some(containers) = t
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            if let Some(entries) = c.get_mut("env").and_then(Value::as_array_mut) {
                entries.retain(|e| {
                    !e.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| injected.contains(&n))
                });
            }
            remove_if_empty(c, "env");
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !settings.manages_resources(&name, init) {
                continue;
            }
            if let Some(resources) = c.get_mut("resources") {
                for side in ["requests", "limits"] {
                    if let Some(m) = resources.get_mut(side).and_then(Value::as_object_mut) {
                        m.remove("cpu");
                        m.remove("memory");
                    }
                    remove_if_empty(resources, side);
                }
            }
            remove_if_empty(c, "resources");
        }
    }
    t
}

/// Whether `old` and `new` differ only in fields konsumer manages, and `old`
/// carries konsumer's values (its consumer-id annotation): a template created
/// while the webhook was down has none, and keeping it would keep it bare.
pub fn only_managed_fields_differ(old: &Value, new: &Value, settings: &ConsumerSettings) -> bool {
    let injected_before = old
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(keys::CONSUMER_ID))
        .is_some();
    injected_before && old != new && strip_managed(old, settings) == strip_managed(new, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn orders() -> ConsumerSettings {
        ConsumerSettings::from_consumer(&crate::api::test_orders()).unwrap()
    }

    fn mutated() -> Value {
        json!({
            "metadata": {"labels": {"app": "orders"}, "annotations": {"konsumerator.lwolf.org/partition": "0,1,2", "konsumerator.lwolf.org/consumer-id": "0"}},
            "spec": {"containers": [
                {"name": "consumer", "image": "a:1",
                 "env": [{"name": "KAFKA_BROKERS", "value": "k"}, {"name": "KAFKA_PARTITIONS", "value": "0,1,2"}, {"name": "GOMAXPROCS", "value": "3"}],
                 "resources": {"requests": {"cpu": "2300m", "memory": "768Mi", "ephemeral-storage": "1Gi"}, "limits": {"cpu": "3", "memory": "768Mi"}}},
                {"name": "log-shipper", "image": "b:1", "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "50m", "memory": "64Mi"}}}
            ]}
        })
    }

    #[test]
    fn a_template_konsumer_never_saw_is_not_kept() {
        let s = orders();
        // Created while the webhook was down: no konsumer annotation, no env.
        let bare = json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [{"name": "consumer", "image": "a:1"}]}
        });
        let reapplied = json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [{"name": "consumer", "image": "a:1",
                                     "resources": {"requests": {"cpu": "1"}}}]}
        });
        assert_eq!(strip_managed(&bare, &s), strip_managed(&reapplied, &s));
        assert!(!only_managed_fields_differ(&bare, &reapplied, &s));
    }

    #[test]
    fn a_reapply_that_drops_or_resets_konsumer_values_is_not_a_change() {
        let s = orders();
        let reapplied = json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [
                {"name": "consumer", "image": "a:1", "env": [{"name": "KAFKA_BROKERS", "value": "k"}],
                 "resources": {"requests": {"ephemeral-storage": "1Gi"}}},
                {"name": "log-shipper", "image": "b:1", "resources": {"requests": {"cpu": "20m"}}}
            ]}
        });
        assert!(only_managed_fields_differ(&mutated(), &reapplied, &s));
    }

    #[test]
    fn a_real_change_is_a_change() {
        let s = orders();
        let mut bumped = mutated();
        bumped["spec"]["containers"][0]["image"] = json!("a:2");
        assert!(!only_managed_fields_differ(&mutated(), &bumped, &s));
        let mut env = mutated();
        env["spec"]["containers"][0]["env"][0]["value"] = json!("other");
        assert!(!only_managed_fields_differ(&mutated(), &env, &s));
        let mut storage = mutated();
        storage["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] =
            json!("2Gi");
        assert!(!only_managed_fields_differ(&mutated(), &storage, &s));
        assert!(
            !only_managed_fields_differ(&mutated(), &mutated(), &s),
            "identical is not a managed-only change"
        );
    }
}
