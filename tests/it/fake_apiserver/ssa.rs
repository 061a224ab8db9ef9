//! Server-side apply as the recordings in `tests/fixtures/apiserver/09-*` show
//! it: ownership per field in `metadata.managedFields` (manager, operation),
//! lists of named entries merged by key, a conflict (409, `FieldManagerConflict`
//! causes) when a field another manager owns would change without `force`,
//! fields the applier owned and no longer applies removed, a generation that
//! moves only with the spec, and a no-op apply that changes nothing at all.

use std::collections::BTreeSet;

use konsumer::api::quantity::Milli;
use serde_json::{Map, Value, json};

pub type Path = Vec<String>;

/// The key of a list entry: `uid` (ownerReferences), else `name`; lists whose
/// entries have neither are atomic.
fn entry_key(item: &Value) -> Option<String> {
    for k in ["uid", "name"] {
        if let Some(v) = item.get(k).and_then(Value::as_str) {
            return Some(format!("k:{}", json!({ k: v })));
        }
    }
    None
}

fn keyed(list: &[Value]) -> bool {
    !list.is_empty() && list.iter().all(|i| entry_key(i).is_some())
}

/// Every leaf field of `v` as a fieldsV1 path.
pub fn leaf_paths(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, path, out);
                path.pop();
            }
        }
        Value::Array(list) if keyed(list) => {
            for item in list {
                let Some(key) = entry_key(item) else { continue };
                path.push(key);
                walk(item, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Paths as `fieldsV1`.
pub fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for (i, seg) in p.iter().enumerate() {
            let entry = node
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if seg.starts_with("k:")
                && i + 1 < p.len()
                && let Some(m) = entry.as_object_mut()
            {
                m.entry(".").or_insert_with(|| json!({}));
            }
            node = entry.as_object_mut().expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// `fieldsV1` back to paths.
pub fn paths_of(fields: &Value) -> BTreeSet<Path> {
    fn go(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| *k != ".").collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            path.push(k.clone());
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(fields, &mut Vec::new(), &mut out);
    out
}

pub fn value_at<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = v;
    for seg in path {
        cur = if let Some(field) = seg.strip_prefix("f:") {
            cur.get(field)?
        } else {
            let key: Value = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
            let (k, want) = key.as_object()?.iter().next()?;
            cur.as_array()?.iter().find(|i| i.get(k) == Some(want))?
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = if let Some(field) = seg.strip_prefix("f:") {
            cur.get_mut(field)
        } else {
            let Ok(key) = serde_json::from_str::<Value>(seg.trim_start_matches("k:")) else {
                return;
            };
            let Some((k, want)) = key.as_object().and_then(|o| o.iter().next()) else {
                return;
            };
            let (k, want) = (k.clone(), want.clone());
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| i.get(&k) == Some(&want)))
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(field);
        }
    } else if let Ok(key) = serde_json::from_str::<Value>(last.trim_start_matches("k:"))
        && let (Some((k, want)), Some(list)) = (
            key.as_object().and_then(|o| o.iter().next()),
            cur.as_array_mut(),
        )
    {
        list.retain(|i| i.get(k) != Some(want));
    }
}

/// Merges `patch` into `base`: objects by key, keyed lists by entry, the rest replaced.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) if !v.is_null() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p))
            if keyed(p) && b.iter().all(|i| entry_key(i).is_some()) =>
        {
            for item in p {
                let key = entry_key(item);
                match b.iter_mut().find(|i| entry_key(i) == key) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Quantities as the API server stores them (its canonical form).
pub fn canonical_quantities(v: &mut Value) {
    if let Some(containers) = v
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in containers {
            for side in ["requests", "limits"] {
                let Some(list) = c
                    .pointer_mut(&format!("/resources/{side}"))
                    .and_then(Value::as_object_mut)
                else {
                    continue;
                };
                for (k, q) in list.iter_mut() {
                    let text = match q {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => continue,
                    };
                    if let Ok(m) = Milli::parse(&text) {
                        *q = json!(if k == "cpu" {
                            m.cpu_string()
                        } else {
                            m.memory_string()
                        });
                    }
                }
            }
        }
    }
}

/// The API server's defaults for a Deployment (those in the recordings).
pub fn default_deployment(d: &mut Value) {
    let spec = &mut d["spec"];
    if spec.get("replicas").is_none() {
        spec["replicas"] = json!(1);
    }
    if spec.get("strategy").is_none() {
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
    }
    for (k, v) in [
        ("revisionHistoryLimit", json!(10)),
        ("progressDeadlineSeconds", json!(600)),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    let pod = &mut spec["template"]["spec"];
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        if pod.get(k).is_none() {
            pod[k] = v;
        }
    }
    if let Some(containers) = pod.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers {
            for (k, v) in [
                ("resources", json!({})),
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                ("imagePullPolicy", json!("IfNotPresent")),
            ] {
                if c.get(k).is_none() {
                    c[k] = v;
                }
            }
        }
    }
}

/// A field manager's entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: Option<String>,
    pub paths: BTreeSet<Path>,
}

pub fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| Entry {
            manager: m["manager"].as_str().unwrap_or_default().to_string(),
            operation: m["operation"].as_str().unwrap_or_default().to_string(),
            subresource: m["subresource"].as_str().map(String::from),
            paths: paths_of(&m["fieldsV1"]),
        })
        .collect()
}

pub fn write_entries(object: &mut Value, entries: &[Entry]) {
    object["metadata"]["managedFields"] = Value::Array(
        entries
            .iter()
            .filter(|e| !e.paths.is_empty())
            .map(|e| {
                let mut m = json!({
                    "manager": e.manager, "operation": e.operation, "apiVersion": "apps/v1",
                    "time": "2026-11-30T04:33:35Z", "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.paths)
                });
                if let Some(s) = &e.subresource {
                    m["subresource"] = json!(s);
                }
                m
            })
            .collect(),
    );
}

/// The fields a manager applies (not the object's identity).
fn applied_paths(body: &Value) -> BTreeSet<Path> {
    leaf_paths(body)
        .into_iter()
        .filter(|p| {
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            !matches!(
                p.as_slice(),
                ["f:apiVersion"]
                    | ["f:kind"]
                    | ["f:metadata", "f:name"]
                    | ["f:metadata", "f:namespace"]
            )
        })
        .collect()
}

/// Records `manager`'s Update of every field of `object` (what a POST or a PUT
/// does: Konsumerator's client, `kubectl edit`).
pub fn own_all_by_update(object: &mut Value, manager: &str) {
    let mut bare = object.clone();
    if let Some(m) = bare.as_object_mut() {
        m.remove("status");
    }
    if let Some(m) = bare["metadata"].as_object_mut() {
        for k in [
            "managedFields",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
        ] {
            m.remove(k);
        }
    }
    let mut list = entries(object);
    list.push(Entry {
        manager: manager.into(),
        operation: "Update".into(),
        subresource: None,
        paths: applied_paths(&bare),
    });
    write_entries(object, &list);
}

pub struct Conflict {
    pub manager: String,
    pub path: String,
}

fn show(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            if let Some((k, v)) = key.as_object().and_then(|o| o.iter().next()) {
                out.push_str(&format!("[{k}={v}]"));
            }
        }
    }
    out
}

/// Applies `body` as `manager`: the new object, or the conflicts.
pub fn apply(
    existing: Option<&Value>,
    body: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut body = body.clone();
    canonical_quantities(&mut body);
    let paths = applied_paths(&body);
    let Some(existing) = existing else {
        let mut object = body.clone();
        default_deployment(&mut object);
        write_entries(
            &mut object,
            &[Entry {
                manager: manager.into(),
                operation: "Apply".into(),
                subresource: None,
                paths,
            }],
        );
        return Ok(object);
    };
    let mut managers = entries(existing);
    let mut conflicts = Vec::new();
    for e in managers
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
    {
        for p in paths.intersection(&e.paths) {
            if value_at(existing, p) != value_at(&body, p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    path: show(p),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    let mut object = existing.clone();
    if let Some(m) = object["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    merge(&mut object, &body);
    // What this manager applied before and applies no more goes, unless another
    // manager owns it too.
    let before = managers
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.paths.clone())
        .unwrap_or_default();
    for p in before.difference(&paths) {
        let shared = managers
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.paths.contains(p));
        if !shared {
            remove_at(&mut object, p);
        }
    }
    default_deployment(&mut object);
    for e in managers.iter_mut() {
        if e.manager == manager && e.operation == "Apply" {
            e.paths = paths.clone();
        } else {
            // A forced change takes the field over; the same value is shared.
            let taken: Vec<Path> = e
                .paths
                .iter()
                .filter(|p| paths.contains(*p) && value_at(existing, p) != value_at(&body, p))
                .cloned()
                .collect();
            for p in taken {
                e.paths.remove(&p);
            }
        }
    }
    if !managers
        .iter()
        .any(|e| e.manager == manager && e.operation == "Apply")
    {
        managers.insert(
            0,
            Entry {
                manager: manager.into(),
                operation: "Apply".into(),
                subresource: None,
                paths,
            },
        );
    }
    write_entries(&mut object, &managers);
    Ok(object)
}

/// The 409 the API server answers with (conflicts grouped by manager).
pub fn conflict_status(conflicts: &[Conflict]) -> Value {
    let mut managers: Vec<&str> = Vec::new();
    for c in conflicts {
        if !managers.contains(&c.manager.as_str()) {
            managers.push(&c.manager);
        }
    }
    let groups: Vec<String> = managers
        .iter()
        .map(|m| {
            let paths: Vec<String> = conflicts
                .iter()
                .filter(|c| c.manager == *m)
                .map(|c| format!("- {}", c.path))
                .collect();
            format!("conflicts with {m:?} using apps/v1:\n{}", paths.join("\n"))
        })
        .collect();
    let n = conflicts.len();
    let noun = if n == 1 { "conflict" } else { "conflicts" };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Apply failed with {n} {noun}: {}", groups.join("\n")),
        "reason": "Conflict",
        "details": {"causes": conflicts.iter().map(|c| json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with {:?} using apps/v1", c.manager),
            "field": c.path,
        })).collect::<Vec<_>>()},
        "code": 409
    })
}
