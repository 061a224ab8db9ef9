//! Whether a running Deployment already says what konsumer would apply: every
//! field of the desired object has the same value in the live one. Fields only
//! the live object has (the API server's defaults, status, a user's own
//! additions) do not count, as they do not for server-side apply.

use serde_json::{Map, Value};

use crate::api::quantity::Milli;
use crate::api::{env, keys};

/// Paths where `desired` says something `live` does not, with the value wanted
/// (at most `max`): `spec.template.spec.containers[consumer].resources.requests.cpu=1300m`.
pub fn differences(live: &Value, desired: &Value, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk(live, desired, &mut String::new(), false, &mut out, max);
    out
}

fn push(out: &mut Vec<String>, path: &str, desired: &Value, max: usize) {
    if out.len() < max {
        let shown = match desired {
            Value::String(s) => s.clone(),
            other => {
                let text = other.to_string();
                if text.chars().count() > 60 {
                    text.chars().take(57).collect::<String>() + "..."
                } else {
                    text
                }
            }
        };
        out.push(format!("{path}={shown}"));
    } else if out.len() == max {
        out.push("...".into());
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Lists whose entries all have a `name` are merged by name (containers, env,
/// volumes, ports), as server-side apply does; other lists are compared whole.
fn by_name(list: &[Value]) -> bool {
    !list.is_empty()
        && list
            .iter()
            .all(|e| e.get("name").and_then(Value::as_str).is_some())
}

fn same_scalar(live: &Value, desired: &Value, quantity: bool) -> bool {
    if live == desired {
        return true;
    }
    if quantity {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let (Some(a), Some(b)) = (text(live), text(desired)) {
            return matches!((Milli::parse(&a), Milli::parse(&b)), (Ok(x), Ok(y)) if x == y);
        }
    }
    match (live.as_f64(), desired.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn walk(
    live: &Value,
    desired: &Value,
    path: &mut String,
    quantities: bool,
    out: &mut Vec<String>,
    max: usize,
) {
    if out.len() > max {
        return;
    }
    match desired {
        Value::Null => {}
        Value::Object(want) => {
            let Some(have) = live.as_object() else {
                if !is_empty(desired) {
                    push(out, path, desired, max);
                }
                return;
            };
            for (k, v) in want {
                if v.is_null() {
                    continue;
                }
                let mut p = child(path, k);
                // Quantities are compared by value: the API server rewrites them
                // into its canonical form (`0.5` is stored as `500m`).
                let q = quantities || k == "requests" || k == "limits";
                match have.get(k) {
                    Some(l) => walk(l, v, &mut p, q, out, max),
                    None if is_empty(v) => {}
                    None => push(out, &p, v, max),
                }
            }
        }
        Value::Array(want) if by_name(want) => {
            let have = live.as_array().map(Vec::as_slice).unwrap_or_default();
            for w in want {
                let name = w.get("name").and_then(Value::as_str).unwrap_or_default();
                let mut p = format!("{path}[{name}]");
                match have
                    .iter()
                    .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
                {
                    Some(l) => walk(l, w, &mut p, quantities, out, max),
                    None => push(out, &p, w, max),
                }
            }
        }
        Value::Array(want) => {
            let have = live.as_array();
            let same = have.is_some_and(|h| {
                h.len() == want.len()
                    && h.iter().zip(want).all(|(l, w)| {
                        let mut scratch = Vec::new();
                        walk(l, w, &mut String::new(), quantities, &mut scratch, 0);
                        scratch.is_empty()
                    })
            });
            if !(same || (want.is_empty() && have.is_none())) {
                push(out, path, desired, max);
            }
        }
        scalar => {
            if !same_scalar(live, scalar, quantities) {
                push(out, path, desired, max);
            }
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// The values konsumer derives that are not by themselves a reason to restart an
/// instance: the runtime hints and the pod template's partition annotations.
/// They are refreshed with the next rollout that is needed anyway (switching from
/// Konsumerator, whose `GOMEMLIMIT` differs, rolls nothing).
const COSMETIC_ENV: [&str; 2] = [env::GOMAXPROCS, env::GOMEMLIMIT];
const COSMETIC_ANNOTATIONS: [&str; 2] = [keys::PARTITION, keys::CONSUMER_ID];

fn containers_mut(object: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    let spec = object.pointer_mut("/spec/template/spec");
    spec.into_iter().flat_map(|spec| {
        let spec = spec.as_object_mut();
        spec.into_iter().flat_map(|spec| {
            spec.iter_mut()
                .filter(|(k, _)| *k == "containers" || *k == "initContainers")
                .filter_map(|(_, v)| v.as_array_mut())
                .flat_map(|list| list.iter_mut().filter_map(Value::as_object_mut))
        })
    })
}

/// `desired` without the cosmetic values: what must match for no rollout.
pub fn strip_cosmetic(desired: &Value) -> Value {
    let mut d = desired.clone();
    if let Some(a) = d
        .pointer_mut("/spec/template/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for k in COSMETIC_ANNOTATIONS {
            a.remove(k);
        }
    }
    for c in containers_mut(&mut d) {
        if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
            env.retain(|e| {
                !e.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| COSMETIC_ENV.contains(&n))
            });
        }
    }
    d
}

/// `desired` with the cosmetic values the live object has (and without those it
/// lacks): applying it changes nothing in the pod template when
/// [`strip_cosmetic`] found no difference.
pub fn keep_live_cosmetics(desired: &Value, live: &Value) -> Value {
    let mut d = desired.clone();
    let live_annotations = live
        .pointer("/spec/template/metadata/annotations")
        .and_then(Value::as_object);
    if let Some(a) = d
        .pointer_mut("/spec/template/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for k in COSMETIC_ANNOTATIONS {
            match live_annotations.and_then(|l| l.get(k)) {
                Some(v) => {
                    a.insert(k.to_string(), v.clone());
                }
                None => {
                    a.remove(k);
                }
            }
        }
        if a.is_empty()
            && let Some(meta) = d
                .pointer_mut("/spec/template/metadata")
                .and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    let live_container = |name: &str| -> Option<&Value> {
        let spec = live.pointer("/spec/template/spec")?;
        ["containers", "initContainers"]
            .iter()
            .filter_map(|k| spec.get(*k).and_then(Value::as_array))
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    };
    for c in containers_mut(&mut d) {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let live_env = live_container(&name)
            .and_then(|l| l.get("env"))
            .and_then(Value::as_array);
        let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) else {
            continue;
        };
        env.retain_mut(|e| {
            let Some(n) = e.get("name").and_then(Value::as_str) else {
                return true;
            };
            if !COSMETIC_ENV.contains(&n) {
                return true;
            }
            match live_env.and_then(|l| l.iter().find(|x| x.get("name") == e.get("name"))) {
                Some(found) => {
                    *e = found.clone();
                    true
                }
                None => false,
            }
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_additions_on_the_live_side_are_not_differences() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "consumer", "image": "a:1", "env": [{"name": "A", "value": "1"}],
             "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}}}]}}}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10,
            "template": {"metadata": {"creationTimestamp": null}, "spec": {"dnsPolicy": "ClusterFirst", "containers": [
            {"name": "sidecar", "image": "s"},
            {"name": "consumer", "image": "a:1", "imagePullPolicy": "IfNotPresent",
             "env": [{"name": "USER", "value": "x"}, {"name": "A", "value": "1"}],
             "resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}}}]}}},
            "status": {}});
        assert!(differences(&live, &desired, 5).is_empty());
    }

    #[test]
    fn a_changed_value_is_named_with_its_path_and_new_value() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "consumer", "image": "a:2", "command": ["run", "--fast"],
             "resources": {"requests": {"cpu": "1300m"}}}]}}}});
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "consumer", "image": "a:1", "command": ["run"],
             "resources": {"requests": {"cpu": "100m"}}}]}}}});
        assert_eq!(
            differences(&live, &desired, 5),
            vec![
                "spec.template.spec.containers[consumer].command=[\"run\",\"--fast\"]",
                "spec.template.spec.containers[consumer].image=a:2",
                "spec.template.spec.containers[consumer].resources.requests.cpu=1300m",
            ]
        );
        assert_eq!(
            differences(&live, &desired, 1).len(),
            2,
            "one and an ellipsis"
        );
        let missing = json!({"spec": {"template": {"spec": {"containers": [{"name": "other", "image": "o"}]}}}});
        assert_eq!(
            differences(&live, &missing, 5),
            vec![r#"spec.template.spec.containers[other]={"image":"o","name":"other"}"#]
        );
    }

    #[test]
    fn quantities_are_compared_by_value_only_where_they_are_quantities() {
        let live = json!({"image": "1.40", "resources": {"limits": {"cpu": 2}}});
        let desired = json!({"image": "1.4", "resources": {"limits": {"cpu": "2000m"}}});
        assert_eq!(differences(&live, &desired, 5), vec!["image=1.4"]);
    }

    #[test]
    fn cosmetic_values_alone_are_no_reason_to_roll() {
        let desired = json!({"spec": {"template": {
            "metadata": {"annotations": {"konsumerator.lwolf.org/partition": "0", "konsumerator.lwolf.org/consumer-id": "0"}},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "P", "value": "0"}, {"name": "GOMAXPROCS", "value": "1"}, {"name": "GOMEMLIMIT", "value": "102MiB"}]}]}}}});
        // Konsumerator's: GOMEMLIMIT in MB labelled MiB, no template annotations.
        let live = json!({"spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "c", "env": [
                {"name": "P", "value": "0"}, {"name": "GOMAXPROCS", "value": "1"}, {"name": "GOMEMLIMIT", "value": "108MiB"}]}]}}}});
        assert!(!differences(&live, &desired, 5).is_empty());
        assert!(differences(&live, &strip_cosmetic(&desired), 5).is_empty());
        let kept = keep_live_cosmetics(&desired, &live);
        assert!(differences(&live, &kept, 5).is_empty());
        assert!(
            kept.pointer("/spec/template/metadata/annotations")
                .is_none()
        );
        assert_eq!(
            kept["spec"]["template"]["spec"]["containers"][0]["env"][2]["value"],
            "108MiB"
        );
    }
}
