//! The one-pass reader against serde: on arbitrary reviews and on mutated captured
//! ones, the workload webhook must give the same answer (decision, patch, denial,
//! HTTP status and counted outcome, byte for byte) whichever way the body is read.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::review::lazy;
use super::workloads::{Parsed, decide};
use super::{Admission, AdmissionConfig, parse, parse_workload};
use crate::api::ConsumerStatus;
use crate::inject::workload::Workload;
use crate::inject::{self, Ops, PatchText};
use crate::store::{CachedConsumer, ConsumerIndex, Store, StoreError};
use crate::telemetry::Metrics;

struct NoStore;

#[async_trait]
impl Store for NoStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
        Ok(None)
    }
    async fn write_status(&self, _: &str, _: &str, _: &ConsumerStatus) -> Result<(), StoreError> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "none"
    }
}

fn state() -> Admission {
    let index = ConsumerIndex::new();
    index.upsert(crate::api::test_orders());
    Admission::new(
        index,
        Arc::new(NoStore),
        Arc::new(Metrics::default()),
        AdmissionConfig::default(),
    )
}

/// Status, outcome and body of the answer to `body` read through `parsed`.
fn answer_with(state: &Admission, body: &[u8], parsed: Parsed<'_>) -> (u16, String, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let reply = decide(state, body, parsed, Duration::from_secs(1)).await;
        let status = reply.response.status().as_u16();
        let outcome = format!("{:?} {:?} {:?}", reply.kind, reply.operation, reply.outcome);
        let bytes = axum::body::to_bytes(reply.response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, outcome, bytes.to_vec())
    })
}

/// Both ways agree on `body`; returns whether the one-pass reader was sure.
fn agree(state: &Admission, body: &[u8]) -> Result<bool, TestCaseError> {
    let fast = lazy::read_workload_review(body);
    let serde = serde_json::from_slice::<super::review::Review<Workload, IgnoredAny>>(body);
    if let Ok(view) = &fast {
        // Whatever the reader is sure of, serde reads the same way.
        let Ok(full) = &serde else {
            return Err(TestCaseError::fail(format!(
                "the one-pass reader accepted what serde refuses: {}",
                String::from_utf8_lossy(body)
            )));
        };
        prop_assert_eq!(format!("{view:?}"), format!("{full:?}"));
    }
    if let Some(object) = serde
        .as_ref()
        .ok()
        .and_then(|r| r.request.as_ref())
        .and_then(|r| r.object.as_ref())
    {
        patches_agree(state, object)?;
    }
    let one_pass = answer_with(state, body, parse_workload(body));
    let full = answer_with(state, body, parse::<Workload, IgnoredAny>(body));
    prop_assert_eq!(
        (
            one_pass.0,
            &one_pass.1,
            String::from_utf8_lossy(&one_pass.2)
        ),
        (full.0, &full.1, String::from_utf8_lossy(&full.2))
    );
    Ok(fast.is_ok())
}

/// The patch the webhook writes as bytes is json-patch's operations as serde
/// writes them, for the object read as a Pod and as a Deployment.
fn patches_agree(state: &Admission, object: &Workload<'_>) -> Result<(), TestCaseError> {
    let Some(cached) = state.index.get("streams", "orders") else {
        return Err(TestCaseError::fail("the orders Consumer is not cached"));
    };
    let Ok(settings) = &cached.settings else {
        return Err(TestCaseError::fail("the orders Consumer has no settings"));
    };
    let pod = (
        inject::decide_pod(object, settings, 0.8),
        inject::decide_pod_into::<PatchText>(object, settings, 0.8),
    );
    let deployment = (
        inject::decide_deployment(object, settings, 0.8),
        inject::decide_deployment_into::<PatchText>(object, settings, 0.8),
    );
    for (ops, written) in [pod, deployment] {
        match (ops, written) {
            (Ok(ops), Ok(written)) => {
                prop_assert_eq!(&ops.mutation.warnings, &written.mutation.warnings);
                prop_assert_eq!(ops.mutation.ops.len(), written.mutation.ops.len());
                let expected = serde_json::to_vec(&ops.mutation.ops).unwrap();
                let written = written.mutation.ops.into_bytes();
                prop_assert_eq!(
                    String::from_utf8_lossy(&written),
                    String::from_utf8_lossy(&expected)
                );
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => {
                return Err(TestCaseError::fail(format!(
                    "one sink decided, the other refused: {:?} / {:?}",
                    a.map(|d| d.mutation.ops),
                    b.map(|d| d.mutation.ops.into_bytes())
                )));
            }
        }
    }
    Ok(())
}

fn fixtures() -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir("tests/fixtures/admission").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("pod-") || name.starts_with("deployment-") {
            out.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
        }
    }
    out.sort_by_key(|v| v["request"]["uid"].to_string());
    out
}

/// Strings konsumer reads or compares, and some it must not choke on.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("orders".to_string()),
        Just("payments".to_string()),
        Just("2".to_string()),
        Just("07".to_string()),
        Just("orders-1".to_string()),
        Just("consumer".to_string()),
        Just("log-shipper".to_string()),
        Just("KAFKA_PARTITIONS".to_string()),
        Just("GOMAXPROCS".to_string()),
        Just("KONSUMERATOR_INSTANCE".to_string()),
        Just("500m".to_string()),
        Just("1Gi".to_string()),
        Just("a\"quote".to_string()),
        Just("back\\slash".to_string()),
        Just("tab\there".to_string()),
        Just("é ünïcode".to_string()),
        Just(String::new()),
        "[a-z0-9./-]{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("konsumerator.lwolf.org/consumer".to_string()),
        Just("konsumerator.lwolf.org/instance".to_string()),
        Just("konsumerator.lwolf.org/consumer-id".to_string()),
        Just("konsumerator.lwolf.org/partition".to_string()),
        Just("apps.kubernetes.io/pod-index".to_string()),
        Just("batch.kubernetes.io/job-completion-index".to_string()),
        Just("cpu".to_string()),
        Just("memory".to_string()),
        Just("name".to_string()),
        Just("value".to_string()),
        Just("valueFrom".to_string()),
        Just("env".to_string()),
        Just("containers".to_string()),
        Just("metadata".to_string()),
        Just("app".to_string()),
        Just("we\"ird".to_string()),
    ]
}

/// Any JSON value, leaning to the shapes a review has.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn labels() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::vec((key(), prop_oneof![4 => text().prop_map(Value::from), 1 => any_json()]), 0..5)
            .prop_map(|kv| {
                let mut m: serde_json::Map<String, Value> = kv.into_iter().collect();
                m.insert("konsumerator.lwolf.org/consumer".into(), json!("orders"));
                Value::Object(m)
            }),
        1 => any_json(),
    ]
}

fn env() -> impl Strategy<Value = Value> {
    let entry = (text(), prop::option::of(text()), any::<bool>(), any_json()).prop_map(
        |(name, value, from, extra)| {
            let mut e = json!({"name": name});
            if let Some(v) = value {
                e["value"] = json!(v);
            }
            if from {
                e["valueFrom"] = json!({"fieldRef": {"fieldPath": "x"}});
            }
            e["extra"] = extra;
            e
        },
    );
    prop_oneof![
        4 => prop::collection::vec(entry, 0..6).prop_map(Value::Array),
        1 => any_json(),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (text(), env(), labels(), labels(), any_json()).prop_map(|(name, env, req, lim, extra)| {
        json!({"name": name, "image": "x:1", "env": env,
               "resources": {"requests": req, "limits": lim}, "ports": extra})
    })
}

/// An arbitrary Pod or Deployment review.
fn review() -> impl Strategy<Value = Value> {
    let containers = || prop::collection::vec(container(), 0..4);
    (
        prop_oneof![Just("Pod"), Just("Deployment"), Just("Service")],
        prop_oneof![Just("CREATE"), Just("UPDATE"), Just("DELETE")],
        labels(),
        labels(),
        containers(),
        containers(),
        any_json(),
        prop::option::of(text()),
    )
        .prop_map(|(kind, op, labels, annotations, cs, init, extra, name)| {
            let group = if kind == "Deployment" { "apps" } else { "" };
            let pod_spec = json!({"containers": cs, "initContainers": init, "volumes": extra});
            let spec = if kind == "Deployment" {
                json!({"replicas": 1, "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}})
            } else {
                pod_spec
            };
            json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u-1",
                    "kind": {"group": group, "version": "v1", "kind": kind},
                    "namespace": "streams",
                    "operation": op,
                    "object": {"metadata": {"name": name, "labels": labels, "annotations": annotations,
                                            "managedFields": [{"fieldsV1": {"f:spec": {}}}]},
                               "spec": spec},
                    "dryRun": false
                }
            })
        })
}

/// Every path to a value inside `v`.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(k.clone());
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'v>(v: &'v mut Value, path: &[String]) -> &'v mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k).unwrap(),
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        _ => unreachable!(),
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(prop::sample::Index, Value),
    Remove(prop::sample::Index),
    AddField(prop::sample::Index, String, Value),
    DuplicateField(prop::sample::Index),
    Truncate(prop::sample::Index),
    Escape(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        2 => (any::<prop::sample::Index>(), key(), any_json()).prop_map(|(i, k, v)| Mutation::AddField(i, k, v)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::DuplicateField),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Escape),
    ]
}

/// Applies `mutations` to a captured review, the last ones on its text.
fn mutate(mut review: Value, mutations: &[Mutation]) -> Vec<u8> {
    let mut text_edits = Vec::new();
    for m in mutations {
        let mut all = Vec::new();
        paths(&review, &mut Vec::new(), &mut all);
        match m {
            Mutation::Replace(i, v) => {
                let path: &Vec<String> = i.get(&all);
                *at_path(&mut review, path) = v.clone();
            }
            Mutation::Remove(i) => {
                let path: &Vec<String> = i.get(&all);
                if let Some((last, parent)) = path.split_last() {
                    match at_path(&mut review, parent) {
                        Value::Object(m) => {
                            m.remove(last);
                        }
                        Value::Array(a) => {
                            a.remove(last.parse::<usize>().unwrap());
                        }
                        _ => {}
                    }
                }
            }
            Mutation::AddField(i, k, v) => {
                let path: &Vec<String> = i.get(&all);
                if let Value::Object(m) = at_path(&mut review, path) {
                    m.insert(k.clone(), v.clone());
                }
            }
            other => text_edits.push(other.clone()),
        }
    }
    let mut text = serde_json::to_string(&review).unwrap();
    for edit in text_edits {
        match edit {
            Mutation::DuplicateField(i) => {
                // `"key":` once more, right after an object opens: serde refuses a
                // known field twice and takes an unknown one.
                let opens: Vec<usize> = text.match_indices("{\"").map(|(p, _)| p).collect();
                if !opens.is_empty() {
                    let p = *i.get(&opens);
                    let end = p + 2 + text[p + 2..].find('"').unwrap_or(0);
                    let field = text[p + 1..end + 1].to_string();
                    text.insert_str(p + 1, &format!("{field}:null,"));
                }
            }
            Mutation::Truncate(i) => {
                let cut = i.index(text.len().max(1));
                let cut = (0..=cut)
                    .rev()
                    .find(|c| text.is_char_boundary(*c))
                    .unwrap_or(0);
                text.truncate(cut);
            }
            Mutation::Escape(i) => {
                // The same string, with its first letter as a \u escape.
                let quotes: Vec<usize> = text.match_indices("\"o").map(|(p, _)| p).collect();
                if !quotes.is_empty() {
                    let p = *i.get(&quotes);
                    text.replace_range(p + 1..p + 2, "\\u006f");
                }
            }
            _ => {}
        }
    }
    text.into_bytes()
}

#[test]
fn both_readers_answer_every_captured_review_alike() {
    let state = state();
    for review in fixtures() {
        let body = serde_json::to_vec(&review).unwrap();
        assert!(
            agree(&state, &body).unwrap(),
            "{}",
            review["request"]["uid"]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn both_readers_answer_arbitrary_reviews_alike(review in review()) {
        let state = state();
        agree(&state, &serde_json::to_vec(&review).unwrap())?;
    }

    #[test]
    fn both_readers_answer_mutated_captured_reviews_alike(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let state = state();
        let all = fixtures();
        let body = mutate(pick.get(&all).clone(), &mutations);
        agree(&state, &body)?;
    }
}
