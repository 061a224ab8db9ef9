use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn orders() -> ConsumerSettings {
    ConsumerSettings::from_consumer(&crate::api::test_orders()).unwrap()
}

fn apply(doc: &Value, m: &Mutation) -> Value {
    let mut out = doc.clone();
    json_patch::patch(&mut out, &m.ops).unwrap_or_else(|e| panic!("{e}: {:#?}", m.ops));
    out
}

fn decide_pod_json(doc: &Value, s: &ConsumerSettings) -> Result<Decision, Denial> {
    let text = doc.to_string();
    let pod: Workload = serde_json::from_str(&text).unwrap();
    decide_pod(&pod, s, 0.8)
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, e)| e["value"].as_str().map(String::from))
}

#[test]
fn pod_without_env_gets_env_array_created_first() {
    let s = orders();
    let pod = json!({
        "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "2"}},
        "spec": {"containers": [{"name": "consumer", "image": "x"}]}
    });
    let d = decide_pod_json(&pod, &s).unwrap();
    let paths: Vec<String> = d
        .mutation
        .ops
        .iter()
        .map(|o| o.path().to_string())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/metadata/annotations",
            "/spec/containers/0/resources",
            "/spec/containers/0/env"
        ]
    );
    let out = apply(&pod, &d.mutation);
    let c = &out["spec"]["containers"][0];
    assert_eq!(env_value(c, "KAFKA_PARTITIONS").as_deref(), Some("6,7"));
    assert_eq!(env_value(c, "GOMAXPROCS").as_deref(), Some("1"));
    assert_eq!(env_value(c, "GOMEMLIMIT").as_deref(), Some("102MiB"));
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(
        out["metadata"]["annotations"]["konsumerator.lwolf.org/partition"],
        "6,7"
    );
    assert!(d.mutation.warnings.is_empty());
}

#[test]
fn annotation_keys_with_slashes_and_tildes_are_escaped() {
    let s = orders();
    let pod = json!({
        "metadata": {
            "labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"},
            "annotations": {"example.com/path": "a/b~c"}
        },
        "spec": {"containers": []}
    });
    let d = decide_pod_json(&pod, &s).unwrap();
    let paths: Vec<String> = d
        .mutation
        .ops
        .iter()
        .map(|o| o.path().to_string())
        .collect();
    assert!(paths.contains(&"/metadata/annotations/konsumerator.lwolf.org~1partition".to_string()));
    let out = apply(&pod, &d.mutation);
    assert_eq!(out["metadata"]["annotations"]["example.com/path"], "a/b~c");
    assert_eq!(
        out["metadata"]["annotations"]["konsumerator.lwolf.org/consumer-id"],
        "0"
    );
}

#[test]
fn duplicate_env_entries_are_collapsed_and_indices_stay_right() {
    let s = orders();
    let pod = json!({
        "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "1"}},
        "spec": {"containers": [{"name": "other", "env": [
            {"name": "A", "value": "1"},
            {"name": "KONSUMERATOR_INSTANCE", "value": "9"},
            {"name": "KONSUMERATOR_INSTANCE", "value": "8"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KAFKA_PARTITIONS", "value": "0"},
            {"name": "KAFKA_PARTITIONS", "value": "3,4,5"}
        ]}]}
    });
    let d = decide_pod_json(&pod, &s).unwrap();
    let out = apply(&pod, &d.mutation);
    let c = &out["spec"]["containers"][0];
    let names: Vec<String> = env_of(c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "A",
            "KONSUMERATOR_INSTANCE",
            "B",
            "KAFKA_PARTITIONS",
            "KONSUMERATOR_NUM_PARTITIONS",
            "KONSUMERATOR_NUM_INSTANCES"
        ]
    );
    assert_eq!(env_value(c, "KAFKA_PARTITIONS").as_deref(), Some("3,4,5"));
    assert_eq!(env_value(c, "KONSUMERATOR_INSTANCE").as_deref(), Some("1"));
    assert!(
        c["env"][2]["valueFrom"].is_object(),
        "other entries are kept whole"
    );
    assert!(
        d.mutation
            .warnings
            .iter()
            .any(|w| w.contains("duplicate env KONSUMERATOR_INSTANCE"))
    );
}

#[test]
fn container_without_cpu_gets_no_gomaxprocs_and_keeps_its_own() {
    let s = orders();
    let pod = json!({
        "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"}},
        "spec": {"containers": [{"name": "sidecar", "env": [{"name": "GOMAXPROCS", "value": "3"}]}]}
    });
    let d = decide_pod_json(&pod, &s).unwrap();
    let out = apply(&pod, &d.mutation);
    let c = &out["spec"]["containers"][0];
    assert_eq!(env_value(c, "GOMAXPROCS").as_deref(), Some("3"));
    assert_eq!(env_value(c, "GOMEMLIMIT"), None);
    assert!(c.get("resources").is_none(), "no policy, no resources");
}

#[test]
fn hints_follow_the_final_limits_of_unmanaged_containers() {
    let s = orders();
    let pod = json!({
        "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"}},
        "spec": {"containers": [{"name": "exporter", "resources": {"limits": {"cpu": "2500m", "memory": "1Gi"}}}]}
    });
    let out = apply(&pod, &decide_pod_json(&pod, &s).unwrap().mutation);
    let c = &out["spec"]["containers"][0];
    assert_eq!(env_value(c, "GOMAXPROCS").as_deref(), Some("3"));
    assert_eq!(env_value(c, "GOMEMLIMIT").as_deref(), Some("819MiB"));
}

#[test]
fn numerically_equal_quantities_are_not_rewritten() {
    let s = orders();
    let pod = json!({
        "metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders", "konsumerator.lwolf.org/instance": "0"},
                     "annotations": {"konsumerator.lwolf.org/partition": "0,1,2", "konsumerator.lwolf.org/consumer-id": "0"}},
        "spec": {"containers": [{"name": "consumer",
            "resources": {"requests": {"cpu": "0.1", "memory": "134217728"}, "limits": {"cpu": "100m", "memory": "131072Ki"}},
            "env": [{"name": "KAFKA_PARTITIONS", "value": "0,1,2"}, {"name": "GOMAXPROCS", "value": "1"},
                    {"name": "GOMEMLIMIT", "value": "102MiB"}, {"name": "KONSUMERATOR_INSTANCE", "value": "0"},
                    {"name": "KONSUMERATOR_NUM_PARTITIONS", "value": "10"}, {"name": "KONSUMERATOR_NUM_INSTANCES", "value": "4"}]}]}
    });
    let d = decide_pod_json(&pod, &s).unwrap();
    assert!(d.mutation.ops.is_empty(), "{:?}", d.mutation.ops);
}

#[test]
fn denials_name_the_field_and_the_way_out() {
    let s = orders();
    let bad = json!({"metadata": {"labels": {"konsumerator.lwolf.org/instance": "x"}}});
    let d = decide_pod_json(&bad, &s).unwrap_err();
    assert_eq!(
        d.field.as_deref(),
        Some("metadata.labels[konsumerator.lwolf.org/instance]")
    );
    assert!(
        d.message.contains("\"x\" is not an instance number"),
        "{}",
        d.message
    );

    let range = json!({"metadata": {"labels": {"konsumerator.lwolf.org/instance": "4"}}});
    let d = decide_pod_json(&range, &s).unwrap_err();
    assert!(d.message.contains("instance 4"), "{}", d.message);
    assert!(d.message.contains("4 instances"), "{}", d.message);

    let none = json!({"metadata": {"name": "orders-1"}});
    let d = decide_pod_json(&none, &s).unwrap_err();
    assert!(
        d.message.contains("cannot tell which instance"),
        "{}",
        d.message
    );
    assert!(
        !d.message.contains("name the Deployment"),
        "Pods are not named by instance"
    );
}

#[test]
fn deployment_template_gets_annotations_so_its_pods_resolve() {
    let s = orders();
    let dep = json!({
        "metadata": {"name": "orders-3", "labels": {"konsumerator.lwolf.org/consumer": "orders"}},
        "spec": {"template": {"metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders"}},
                              "spec": {"containers": [{"name": "consumer"}]}}}
    });
    let text = dep.to_string();
    let view: Workload = serde_json::from_str(&text).unwrap();
    let d = decide_deployment(&view, &s, 0.8).unwrap();
    assert_eq!(d.instance, 3);
    assert_eq!(d.found_by, Source::DeploymentName);
    let out = apply(&dep, &d.mutation);
    let tmeta = &out["spec"]["template"]["metadata"];
    assert_eq!(
        tmeta["annotations"]["konsumerator.lwolf.org/consumer-id"],
        "3"
    );

    // A Pod of that template now resolves to the same instance.
    let pod = json!({"metadata": tmeta, "spec": out["spec"]["template"]["spec"]});
    let pd = decide_pod_json(&pod, &s).unwrap();
    assert_eq!(pd.instance, 3);
    assert!(pd.mutation.ops.is_empty(), "{:?}", pd.mutation.ops);
}

#[test]
fn deployment_hints_are_ranked_rule_by_rule_across_metadata_and_template() {
    let s = orders();
    let decide = |dep: Value| {
        let text = dep.to_string();
        let view: Workload = serde_json::from_str(&text).unwrap();
        let d = decide_deployment(&view, &s, 0.8).unwrap();
        (d.instance, d.found_by)
    };
    // The Deployment carries konsumer's own consumer-id from an earlier admission;
    // the user moved it to instance 1 with a label in the pod template.
    let dep = json!({
        "metadata": {"name": "orders-3",
                     "labels": {"konsumerator.lwolf.org/consumer": "orders"},
                     "annotations": {"konsumerator.lwolf.org/consumer-id": "3"}},
        "spec": {"template": {"metadata": {"labels": {"konsumerator.lwolf.org/consumer": "orders",
                                                      "konsumerator.lwolf.org/instance": "1"}},
                              "spec": {"containers": [{"name": "consumer"}]}}}
    });
    assert_eq!(decide(dep.clone()), (1, Source::InstanceLabel));
    // The same rule in both places: the Deployment's own metadata first.
    let mut both = dep.clone();
    both["metadata"]["labels"]["konsumerator.lwolf.org/instance"] = json!("2");
    assert_eq!(decide(both), (2, Source::InstanceLabel));
    // Only lower rules: consumer-id (rule 2) outranks the name (rule 5).
    let mut lower = dep;
    lower["spec"]["template"]["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("konsumerator.lwolf.org/instance");
    assert_eq!(decide(lower), (3, Source::ConsumerIdAnnotation));
}

// ---- property tests over arbitrary pod specs ----

const NAMES: &[&str] = &[
    "KAFKA_PARTITIONS",
    "GOMAXPROCS",
    "GOMEMLIMIT",
    "KONSUMERATOR_INSTANCE",
    "KONSUMERATOR_NUM_PARTITIONS",
    "KONSUMERATOR_NUM_INSTANCES",
    "OTHER",
    "KAFKA_BROKERS",
];

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("100m")),
        Just(json!("0.1")),
        Just(json!("2")),
        Just(json!(3)),
        Just(json!("128Mi")),
        Just(json!("1G")),
        Just(json!("lots")),
        Just(Value::Null),
    ]
}

fn side() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (
            proptest::option::of(quantity()),
            proptest::option::of(quantity())
        )
            .prop_map(|(c, m)| {
                let mut o = serde_json::Map::new();
                if let Some(c) = c {
                    o.insert("cpu".into(), c);
                }
                if let Some(m) = m {
                    o.insert("memory".into(), m);
                }
                o.insert("ephemeral-storage".into(), json!("1Gi"));
                Value::Object(o)
            }),
    ]
}

fn env_entry() -> impl Strategy<Value = Value> {
    (prop::sample::select(NAMES), 0u8..4).prop_map(|(name, kind)| match kind {
        0 => json!({"name": name, "value": "x"}),
        1 => json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        2 => json!({"name": name}),
        _ => json!({"name": name, "value": "1"}),
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["consumer", "log-shipper", "exporter", "w/eird~name"][..]),
        proptest::option::of(prop::collection::vec(env_entry(), 0..8)),
        proptest::option::of((side(), side())),
    )
        .prop_map(|(name, env, res)| {
            let mut c = serde_json::Map::new();
            c.insert("name".into(), json!(name));
            if let Some(env) = env {
                c.insert("env".into(), Value::Array(env));
            }
            if let Some((r, l)) = res {
                let mut o = serde_json::Map::new();
                if !r.is_null() {
                    o.insert("requests".into(), r);
                }
                if !l.is_null() {
                    o.insert("limits".into(), l);
                }
                c.insert("resources".into(), Value::Object(o));
            }
            Value::Object(c)
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        0u32..4,
        proptest::option::of(prop::collection::btree_map(
            prop::sample::select(
                &[
                    "konsumerator.lwolf.org/partition",
                    "konsumerator.lwolf.org/consumer-id",
                    "example.com/a~b",
                    "x",
                ][..],
            ),
            "[a-z0-9,]{0,5}",
            0..4,
        )),
        prop::collection::vec(container(), 0..4),
        proptest::option::of(prop::collection::vec(container(), 0..2)),
    )
        .prop_map(|(instance, annotations, containers, init)| {
            let mut meta = json!({"labels": {
                "konsumerator.lwolf.org/consumer": "orders",
                "konsumerator.lwolf.org/instance": instance.to_string()
            }});
            if let Some(a) = annotations {
                meta["annotations"] = json!(a);
            }
            let mut spec = json!({ "containers": containers });
            if let Some(init) = init {
                spec["initContainers"] = Value::Array(init);
            }
            json!({"metadata": meta, "spec": spec})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn patch_applies_and_leaves_exactly_one_entry_per_injected_name(doc in pod()) {
        let s = orders();
        let d = decide_pod_json(&doc, &s).unwrap();
        let out = apply(&doc, &d.mutation);
        for list in ["containers", "initContainers"] {
            for (i, c) in out["spec"][list].as_array().into_iter().flatten().enumerate() {
                let env = env_of(c);
                for name in ["KAFKA_PARTITIONS", "KONSUMERATOR_INSTANCE", "KONSUMERATOR_NUM_PARTITIONS",
                             "KONSUMERATOR_NUM_INSTANCES"] {
                    prop_assert_eq!(env.iter().filter(|(n, _)| n == name).count(), 1, "{} in {}", name, c);
                }
                // Hints are injected only when the container has the resources they
                // derive from; a user's own duplicates are then left as they were.
                for name in ["GOMAXPROCS", "GOMEMLIMIT"] {
                    let after: Vec<_> = env.iter().filter(|(n, _)| n == name).collect();
                    if after.len() > 1 {
                        let before = env_of(&doc["spec"][list][i]);
                        let before: Vec<_> = before.iter().filter(|(n, _)| n == name).collect();
                        prop_assert_eq!(after, before, "{} was touched but left duplicated in {}", name, c);
                    }
                }
                prop_assert_eq!(env_value(c, "KONSUMERATOR_INSTANCE"), Some(d.instance.to_string()));
            }
        }
    }

    #[test]
    fn applying_the_webhook_twice_yields_an_empty_second_patch(doc in pod()) {
        let s = orders();
        let first = decide_pod_json(&doc, &s).unwrap();
        let once = apply(&doc, &first.mutation);
        let second = decide_pod_json(&once, &s).unwrap();
        prop_assert!(second.mutation.ops.is_empty(), "second patch: {:?}", second.mutation.ops);
        prop_assert!(second.mutation.warnings.is_empty(), "second warnings: {:?}", second.mutation.warnings);
    }
}

/// A string with what JSON must escape: quotes, backslashes, control characters,
/// and what it must not (`/`, `~`, non-ASCII).
fn awkward() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(
                &[
                    "\"", "\\", "\n", "\u{1}", "\u{1f}", "/", "~", "é", "🦀", "\u{7f}"
                ][..]
            )
            .prop_map(String::from),
            "[a-zA-Z0-9 ._-]{0,6}",
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn resources() -> impl Strategy<Value = Resources> {
    let milli =
        || proptest::option::of((-3i128..5_000_000_000_000).prop_map(crate::api::quantity::Milli));
    (milli(), milli()).prop_map(|(cpu, memory)| Resources { cpu, memory })
}

/// A Deployment with the Pod's metadata on itself and on its pod template.
fn as_deployment(pod: &Value) -> Value {
    json!({
        "metadata": pod["metadata"],
        "spec": {"template": pod},
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_written_patch_is_what_serde_writes_for_json_patch_operations(doc in pod()) {
        let s = orders();
        let text = doc.to_string();
        let pod: Workload = serde_json::from_str(&text).unwrap();
        let ops = decide_pod(&pod, &s, 0.8).unwrap();
        let written = decide_pod_into::<PatchText>(&pod, &s, 0.8).unwrap();
        prop_assert_eq!(written.mutation.ops.len(), ops.mutation.ops.len());
        prop_assert_eq!(&written.mutation.warnings, &ops.mutation.warnings);
        let expected = serde_json::to_vec(&ops.mutation.ops).unwrap();
        prop_assert_eq!(
            String::from_utf8(written.mutation.ops.into_bytes()).unwrap(),
            String::from_utf8(expected).unwrap()
        );

        let text = as_deployment(&doc).to_string();
        let dep: Workload = serde_json::from_str(&text).unwrap();
        let ops = decide_deployment(&dep, &s, 0.8).unwrap();
        let written = decide_deployment_into::<PatchText>(&dep, &s, 0.8).unwrap();
        prop_assert_eq!(&written.mutation.warnings, &ops.mutation.warnings);
        let expected = serde_json::to_vec(&ops.mutation.ops).unwrap();
        prop_assert_eq!(
            String::from_utf8(written.mutation.ops.into_bytes()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn every_written_value_and_pointer_is_what_serde_writes(
        a in awkward(),
        b in awkward(),
        keys in prop::collection::vec((awkward(), awkward()), 0..4),
        env in prop::collection::vec((awkward(), awkward()), 0..4),
        requests in resources(),
        limits in resources(),
        token in awkward(),
        op in prop::sample::select(&[patch::Op::Add, patch::Op::Replace, patch::Op::Remove][..]),
    ) {
        use patch::Val;
        let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let env: Vec<(&str, std::borrow::Cow<'_, str>)> =
            env.iter().map(|(n, v)| (n.as_str(), v.as_str().into())).collect();
        for val in [
            Val::Str(&a),
            Val::Strings(&pairs),
            Val::Annotations(&pairs),
            Val::Env(&a, &b),
            Val::EnvList(&env),
            Val::Resources(&requests),
            Val::Sides { requests: &requests, limits: &limits },
        ] {
            let expected = serde_json::to_vec(&val.to_value()).unwrap();
            prop_assert_eq!(
                String::from_utf8(patch::text::val_bytes(val)).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        // A pointer with an awkward token, through both sinks.
        let mut path = String::new();
        patch::push_token(&mut path, &a);
        patch::push_token(&mut path, &token);
        let value = (op != patch::Op::Remove).then_some(Val::Str(&b));
        let mut written = PatchText::default();
        written.push(op, &path, value);
        let mut ops: Vec<json_patch::PatchOperation> = Vec::new();
        Ops::push(&mut ops, op, &path, value);
        prop_assert_eq!(
            ops[0].path().tokens().map(|t| t.decoded().into_owned()).collect::<Vec<_>>(),
            vec![a.clone(), token.clone()]
        );
        prop_assert_eq!(
            String::from_utf8(written.into_bytes()).unwrap(),
            serde_json::to_string(&ops).unwrap()
        );
    }
}

#[test]
fn an_empty_written_patch_is_an_empty_array() {
    let ops: Vec<json_patch::PatchOperation> = Vec::new();
    assert_eq!(
        PatchText::default().into_bytes(),
        serde_json::to_vec(&ops).unwrap()
    );
}
