//! The one-pass read of a Consumer review and [`validation::validate_parts`]
//! against serde and [`validation::validate`]: whenever the fast path answers, it
//! answers what the serde path does (HTTP status, counted outcome, answer bytes:
//! allowed or denied, every cause with its field path, every warning), on the
//! captured reviews, on arbitrary Consumers and on mutated captured reviews.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{fast_validate, slow_validate};
use crate::admission::Reply;

fn parts_of(reply: Reply) -> (u16, String, String) {
    let status = reply.response.status().as_u16();
    let outcome = format!("{:?} {:?} {:?}", reply.kind, reply.operation, reply.outcome);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = runtime
        .block_on(axum::body::to_bytes(reply.response.into_body(), usize::MAX))
        .unwrap();
    (
        status,
        outcome,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Both paths agree on `body`; returns whether the fast path answered.
fn agree(body: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(fast) = fast_validate(body) else {
        return Ok(false);
    };
    let fast = parts_of(fast);
    let slow = parts_of(slow_validate(body));
    prop_assert_eq!(
        &fast,
        &slow,
        "the paths differ on {}",
        String::from_utf8_lossy(body)
    );
    Ok(true)
}

/// Every captured Consumer review (the mutating webhook's too: the same objects).
fn fixtures() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("tests/fixtures/admission").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("consumer-") {
            let review = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            out.push((name, review));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn orders() -> Value {
    serde_saphyr::from_str(include_str!("../../../tests/fixtures/consumer-orders.yaml")).unwrap()
}

#[test]
fn the_fast_path_answers_the_captured_reviews_as_serde_does() {
    let mut answered = Vec::new();
    for (name, review) in fixtures() {
        let body = serde_json::to_vec(&review).unwrap();
        if agree(&body).unwrap() {
            answered.push(name);
        }
    }
    // The valid ones and those only the rules reject are the fast path's; a
    // schema type error (invalid-partitions) is worded by the serde path.
    for name in [
        "consumer-v1alpha1-seed-example.validate.json",
        "consumer-v1-create.validate.json",
        "consumer-update-shrink.validate.json",
        "consumer-invalid-lags.validate.json",
        "consumer-invalid-policy.validate.json",
    ] {
        assert!(answered.iter().any(|a| a == name), "{name}: {answered:?}");
    }
}

#[test]
fn the_fast_path_leaves_type_errors_and_unusual_bodies_to_serde() {
    let review = |object: Value| {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "request": {
            "uid": "u", "operation": "CREATE",
            "kind": {"group": "konsumerator.lwolf.org", "version": "v1", "kind": "Consumer"},
            "object": object}}))
        .unwrap()
    };
    let mut typo = orders();
    typo["spec"]["numPartitions"] = json!("ten");
    let mut unknown = orders();
    unknown["spec"]["bogus"] = json!(1);
    let mut null = orders();
    null["spec"]["autoscaler"]["pendingScaleUpDuration"] = Value::Null;
    for object in [typo, unknown, null] {
        let body = review(object);
        assert!(fast_validate(&body).is_err());
        assert_eq!(
            parts_of(super::validate(&body)),
            parts_of(slow_validate(&body))
        );
    }
    assert!(fast_validate(&review(orders())).is_ok());
    // A duplicate key inside the spec: serde's `Value` keeps the last one.
    let body = String::from_utf8(review(orders())).unwrap().replacen(
        "\"numPartitions\":",
        "\"numPartitions\":0,\"numPartitions\":",
        1,
    );
    assert!(fast_validate(body.as_bytes()).is_err());
    assert!(
        parts_of(super::validate(body.as_bytes()))
            .2
            .contains("\"allowed\":true")
    );
}

/// Values a spec field may hold: the shapes the schema and the rules tell apart.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 2, 100, 2147483647, 2147483648, 2000])
            .prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        Just(json!(3.0)),
        prop::sample::select(vec![
            "5m",
            "0",
            "1Gi",
            "100m",
            "1.5",
            "-3",
            "1e99",
            "m",
            "",
            "prometheus",
            "vpa",
            "Auto",
            "Off",
            "min",
            "max",
            "http://p:9090",
            "https://u:pw@p/api/v1/query",
            "ftp://x",
            "sum(x) by (topic)",
            "partition",
            "part-ition",
            "orders",
            "Orders",
            "KAFKA_PARTITIONS",
            "GOMAXPROCS",
            "1ABC",
            "a\"quote",
            "é",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "cpu",
                    "memory",
                    "gpu",
                    "name",
                    "containerName",
                    "mode",
                    "minAllowed",
                    "maxAllowed",
                    "query",
                    "partitionLabel",
                    "template",
                    "spec",
                    "containers",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const POINTERS: &[&str] = &[
    "/spec/numPartitions",
    "/spec/numPartitionsPerInstance",
    "/spec/name",
    "/spec/namespace",
    "/spec/partitionEnvKey",
    "/spec/autoscaler",
    "/spec/autoscaler/mode",
    "/spec/autoscaler/pendingScaleUpDuration",
    "/spec/autoscaler/prometheus",
    "/spec/autoscaler/prometheus/address",
    "/spec/autoscaler/prometheus/minSyncPeriod",
    "/spec/autoscaler/prometheus/ratePerCore",
    "/spec/autoscaler/prometheus/ramPerCore",
    "/spec/autoscaler/prometheus/cpuIncrement",
    "/spec/autoscaler/prometheus/tolerableLag",
    "/spec/autoscaler/prometheus/criticalLag",
    "/spec/autoscaler/prometheus/fallbackStrategy",
    "/spec/autoscaler/prometheus/offset",
    "/spec/autoscaler/prometheus/offset/partitionLabel",
    "/spec/autoscaler/prometheus/consumption/query",
    "/spec/resourcePolicy",
    "/spec/resourcePolicy/globalPolicy",
    "/spec/resourcePolicy/globalPolicy/maxAllowed",
    "/spec/resourcePolicy/containerPolicies",
    "/spec/resourcePolicy/containerPolicies/0",
    "/spec/resourcePolicy/containerPolicies/0/containerName",
    "/spec/resourcePolicy/containerPolicies/0/mode",
    "/spec/resourcePolicy/containerPolicies/0/minAllowed",
    "/spec/resourcePolicy/containerPolicies/0/minAllowed/cpu",
    "/spec/resourcePolicy/containerPolicies/0/maxAllowed/memory",
    "/spec/deploymentTemplate",
    "/spec/deploymentTemplate/template/spec/containers",
    "/spec/deploymentTemplate/template/spec/containers/0/name",
    "/spec/x",
    "/spec",
    "/metadata",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/generateName",
    "/metadata/labels",
    "/metadata/labels/team",
    "/metadata/annotations",
    "/metadata/deletionTimestamp",
    "/metadata/managedFields",
    "/metadata/generation",
    "/status",
    "/apiVersion",
    "",
];

/// Sets `value` at `pointer` (its parent must exist), or removes it on `None`.
fn set(object: &mut Value, pointer: &str, value: Option<Value>) {
    if pointer.is_empty() {
        if let Some(v) = value {
            *object = v;
        }
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match (object.pointer_mut(parent), value) {
        (Some(Value::Object(m)), Some(v)) => {
            m.insert(key.to_string(), v);
        }
        (Some(Value::Object(m)), None) => {
            m.remove(key);
        }
        (Some(Value::Array(a)), v) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                match v {
                    Some(v) => a[i] = v,
                    None => {
                        a.remove(i);
                    }
                }
            }
        }
        _ => {}
    }
}

/// An edit of a Consumer: a value set or removed at a pointer.
fn edit() -> impl Strategy<Value = (&'static str, Option<Value>)> {
    (
        prop::sample::select(POINTERS),
        prop_oneof![4 => any_json().prop_map(Some), 1 => Just(None)],
    )
}

/// A Consumer review: the orders Consumer or the seed example, edited, as a CREATE
/// or an UPDATE of an edited stored object, in v1 or v1alpha1.
fn consumer_review() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::collection::vec(edit(), 0..4),
        prop::option::of(prop::collection::vec(edit(), 0..3)),
        prop::sample::select(vec!["v1", "v1alpha1", ""]),
        prop::sample::select(vec!["CREATE", "UPDATE", "DELETE"]),
    )
        .prop_map(|(seed, edits, old_edits, version, operation)| {
            let base = if seed {
                let (_, review) = fixtures()
                    .into_iter()
                    .find(|(n, _)| n == "consumer-v1alpha1-seed-example.validate.json")
                    .unwrap();
                review["request"]["object"].clone()
            } else {
                orders()
            };
            let mut object = base.clone();
            for (pointer, value) in edits {
                set(&mut object, pointer, value);
            }
            let old = old_edits.map(|edits| {
                let mut old = base;
                for (pointer, value) in edits {
                    set(&mut old, pointer, value);
                }
                old
            });
            let kind =
                json!({"group": "konsumerator.lwolf.org", "version": version, "kind": "Consumer"});
            json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u-1", "kind": kind, "requestKind": kind,
                    "name": "orders", "namespace": "streams", "operation": operation,
                    "userInfo": {"username": "admin", "groups": ["system:masters"]},
                    "object": object, "oldObject": old, "dryRun": false,
                }
            })
        })
}

/// A text edit that makes a body unusual: a key given twice, a cut, an escape.
#[derive(Clone, Debug)]
enum TextEdit {
    Duplicate(prop::sample::Index),
    Truncate(prop::sample::Index),
    Escape(prop::sample::Index),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(TextEdit::Duplicate),
        any::<prop::sample::Index>().prop_map(TextEdit::Truncate),
        any::<prop::sample::Index>().prop_map(TextEdit::Escape),
    ]
}

fn apply(text: &mut String, edit: &TextEdit) {
    match edit {
        TextEdit::Duplicate(i) => {
            // `"key":null,` once more, right after an object opens.
            let opens: Vec<usize> = text.match_indices("{\"").map(|(p, _)| p).collect();
            if !opens.is_empty() {
                let p = *i.get(&opens);
                let end = p + 2 + text[p + 2..].find('"').unwrap_or(0);
                let field = text[p + 1..end + 1].to_string();
                text.insert_str(p + 1, &format!("{field}:null,"));
            }
        }
        TextEdit::Truncate(i) => {
            let cut = i.index(text.len().max(1));
            let cut = (0..=cut)
                .rev()
                .find(|c| text.is_char_boundary(*c))
                .unwrap_or(0);
            text.truncate(cut);
        }
        TextEdit::Escape(i) => {
            // The same string, with its first letter as a \u escape.
            let quotes: Vec<usize> = text.match_indices("\"n").map(|(p, _)| p).collect();
            if !quotes.is_empty() {
                let p = *i.get(&quotes);
                text.replace_range(p + 1..p + 2, "\\u006e");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn both_paths_answer_arbitrary_consumers_alike(review in consumer_review()) {
        agree(&serde_json::to_vec(&review).unwrap())?;
    }

    #[test]
    fn both_paths_answer_mutated_captured_reviews_alike(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 0..3),
        text_edits in prop::collection::vec(text_edit(), 0..2),
    ) {
        let all = fixtures();
        let (_, mut review) = pick.get(&all).clone();
        for (pointer, value) in edits {
            if let Some(object) = review.pointer_mut("/request/object") {
                set(object, pointer, value);
            }
        }
        let mut text = serde_json::to_string(&review).unwrap();
        for edit in &text_edits {
            apply(&mut text, edit);
        }
        agree(text.as_bytes())?;
    }
}
