//! Table tests: the valid and the invalid side of every rule's boundary.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn orders() -> Value {
    serde_saphyr::from_str(include_str!("../../tests/fixtures/consumer-orders.yaml")).unwrap()
}

fn with(pointer: &str, value: Value) -> Value {
    let mut o = orders();
    set(&mut o, pointer, value);
    o
}

fn set(o: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = o
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match target {
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = value,
        Value::Object(m) => {
            if value.is_null() {
                m.remove(key);
            } else {
                m.insert(key.to_string(), value);
            }
        }
        _ => panic!("{parent} is not a container"),
    }
}

fn errors(o: &Value) -> Vec<String> {
    validate(o, None, "v1")
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn the_orders_fixture_and_the_seed_example_are_valid() {
    let r = validate(&orders(), None, "v1");
    assert!(r.is_valid(), "{:?}", r.errors);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let seed: Value = serde_saphyr::from_str(include_str!(
        "../../tests/fixtures/consumer-seed-example.yaml"
    ))
    .unwrap();
    let r = validate(&seed, None, version_of(&seed));
    assert!(r.is_valid(), "{:?}", r.errors);
    assert_eq!(r.warnings, vec![rules::V1ALPHA1_DEPRECATED.to_string()]);
}

/// (pointer, invalid value, expected error, valid value on the other side)
fn boundaries() -> Vec<(&'static str, Value, &'static str, Value)> {
    vec![
        (
            "/spec/numPartitions",
            json!(0),
            "spec.numPartitions: Invalid value: 0: must be greater than or equal to 1",
            json!(1),
        ),
        (
            "/spec/numPartitions",
            json!(10_001),
            "spec.numPartitions: Invalid value: 10001: must be at most 10000 (konsumer's limit per Consumer",
            json!(3000),
        ),
        (
            "/spec/numPartitionsPerInstance",
            json!(0),
            "spec.numPartitionsPerInstance: Invalid value: 0",
            json!(1),
        ),
        (
            "/spec/name",
            json!("Orders"),
            "spec.name: Invalid value: \"Orders\": a lowercase RFC 1123 subdomain",
            json!("orders.v2"),
        ),
        (
            "/spec/namespace",
            json!("streams_x"),
            "spec.namespace: Invalid value: \"streams_x\"",
            json!("streams"),
        ),
        (
            "/spec/partitionEnvKey",
            json!("1PARTITIONS"),
            "spec.partitionEnvKey: Invalid value: \"1PARTITIONS\"",
            json!("_PARTITIONS"),
        ),
        (
            "/spec/partitionEnvKey",
            json!("GOMAXPROCS"),
            "konsumer sets this variable itself",
            json!("KAFKA_PARTITIONS"),
        ),
        (
            "/spec/autoscaler/mode",
            json!("hpa"),
            "spec.autoscaler.mode: Unsupported value: \"hpa\": supported values: \"prometheus\", \"\"",
            json!("prometheus"),
        ),
        (
            "/spec/autoscaler/pendingScaleUpDuration",
            json!("0s"),
            "spec.autoscaler.pendingScaleUpDuration: Invalid value: \"0s\": must be greater than 0",
            json!("1s"),
        ),
        (
            "/spec/autoscaler/pendingScaleUpDuration",
            json!("500ms"),
            "must be at least 1s",
            json!("1s"),
        ),
        (
            "/spec/autoscaler/pendingScaleDownDuration",
            json!("169h"),
            "must be at most 168h0m0s",
            json!("168h"),
        ),
        (
            "/spec/autoscaler/pendingScaleDownDuration",
            json!("15 minutes"),
            "spec.autoscaler.pendingScaleDownDuration: Invalid value: \"15 minutes\"",
            json!("15m"),
        ),
        (
            "/spec/autoscaler/prometheus/minSyncPeriod",
            json!("25h"),
            "spec.autoscaler.prometheus.minSyncPeriod: Invalid value: \"25h\": must be at most 24h0m0s",
            json!("24h"),
        ),
        (
            "/spec/autoscaler/prometheus/ratePerCore",
            json!(0),
            "spec.autoscaler.prometheus.ratePerCore: Invalid value: 0: must be greater than 0",
            json!(1),
        ),
        (
            "/spec/autoscaler/prometheus/ramPerCore",
            json!("1Gb"),
            "spec.autoscaler.prometheus.ramPerCore: Invalid value: \"1Gb\"",
            json!("1G"),
        ),
        (
            "/spec/autoscaler/prometheus/ramPerCore",
            json!("512m"),
            "m means thousandths of a byte",
            json!("512Mi"),
        ),
        (
            "/spec/autoscaler/prometheus/ramPerCore",
            json!("0"),
            "spec.autoscaler.prometheus.ramPerCore: Invalid value: \"0\": must be greater than 0",
            json!("1Mi"),
        ),
        (
            "/spec/autoscaler/prometheus/cpuIncrement",
            json!("1Gi"),
            "CPU is counted in cores",
            json!("1"),
        ),
        (
            "/spec/autoscaler/prometheus/cpuIncrement",
            json!("0m"),
            "spec.autoscaler.prometheus.cpuIncrement: Invalid value: \"0m\": must be greater than 0",
            json!("1m"),
        ),
        (
            "/spec/autoscaler/prometheus/fallbackStrategy",
            json!("avg"),
            "Unsupported value: \"avg\": supported values: \"min\", \"max\"",
            json!("max"),
        ),
        (
            "/spec/autoscaler/prometheus/tolerableLag",
            json!("0"),
            "spec.autoscaler.prometheus.tolerableLag: Invalid value: \"0\": must be greater than 0",
            json!("1s"),
        ),
        (
            "/spec/autoscaler/prometheus/recoveryTime",
            json!("1d"),
            "unknown unit \"d\"",
            json!("24h"),
        ),
        (
            "/spec/autoscaler/prometheus/criticalLag",
            json!("4m59s"),
            "spec.autoscaler.prometheus.criticalLag: Invalid value: \"4m59s\": must not be below tolerableLag (5m0s)",
            json!("5m"),
        ),
        (
            "/spec/autoscaler/prometheus/address/0",
            json!("not a url"),
            "spec.autoscaler.prometheus.address[0]: Invalid value: \"not a url\": must be an http(s) URL",
            json!("https://prom.example:9090/prefix"),
        ),
        (
            "/spec/autoscaler/prometheus/address/0",
            json!("ftp://prom:21"),
            "must be an http(s) URL",
            json!("http://prom:9090"),
        ),
        (
            "/spec/autoscaler/prometheus/offset/query",
            json!(" "),
            "spec.autoscaler.prometheus.offset.query: Invalid value: \" \": must not be empty",
            json!("up"),
        ),
        (
            "/spec/autoscaler/prometheus/production/partitionLabel",
            json!(""),
            "spec.autoscaler.prometheus.production.partitionLabel: Invalid value: \"\": must not be empty",
            json!("partition"),
        ),
        (
            "/spec/autoscaler/prometheus/consumption/partitionLabel",
            json!("kafka-partition"),
            "a Prometheus label name must match",
            json!("kafka_partition"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/cpu",
            json!("5"),
            "spec.resourcePolicy.containerPolicies[0]: Invalid value: {",
            json!("4"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/memory",
            json!("5Gi"),
            "minAllowed.memory (5Gi) is above maxAllowed.memory (4Gi)",
            json!("4Gi"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/maxAllowed/cpu",
            json!("-1"),
            "spec.resourcePolicy.containerPolicies[0].maxAllowed[cpu]: Invalid value: \"-1\": must be greater than 0",
            json!("100m"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/mode",
            json!("Sometimes"),
            "spec.resourcePolicy.containerPolicies[0].mode: Unsupported value: \"Sometimes\": supported values: \"Auto\", \"Off\"",
            json!("Off"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/1/containerName",
            json!("consumer"),
            "spec.resourcePolicy.containerPolicies[1].containerName: Duplicate value: \"consumer\"",
            json!("log-shipper"),
        ),
        (
            "/spec/resourcePolicy/containerPolicies/1/containerName",
            json!("sidecar"),
            "no container of this name in spec.deploymentTemplate.template.spec.containers (consumer, log-shipper)",
            json!("log-shipper"),
        ),
        (
            "/spec/resourcePolicy/globalPolicy/maxAllowed/cpu",
            json!("lots"),
            "spec.resourcePolicy.globalPolicy.maxAllowed[cpu]: Invalid value: \"lots\"",
            json!("1"),
        ),
    ]
}

#[test]
fn every_rule_rejects_its_invalid_side_and_accepts_its_valid_side() {
    for (pointer, bad, expected, good) in boundaries() {
        let errs = errors(&with(pointer, bad.clone()));
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{pointer} = {bad}: expected an error containing {expected:?}, got {errs:#?}"
        );
        let errs = errors(&with(pointer, good.clone()));
        assert!(
            errs.is_empty(),
            "{pointer} = {good} should be valid, got {errs:#?}"
        );
    }
}

#[test]
fn missing_required_fields_are_named() {
    for (pointer, expected) in [
        ("/spec/numPartitions", "spec.numPartitions: Required value"),
        ("/spec/name", "spec.name: Required value"),
        (
            "/spec/autoscaler/prometheus/ratePerCore",
            "spec.autoscaler.prometheus.ratePerCore: Required value",
        ),
        (
            "/spec/autoscaler/prometheus/recoveryTime",
            "spec.autoscaler.prometheus.recoveryTime: Required value",
        ),
        (
            "/spec/autoscaler/prometheus/offset/query",
            "spec.autoscaler.prometheus.offset.query: Required value",
        ),
        (
            "/spec/autoscaler/prometheus",
            "spec.autoscaler.prometheus: Required value: required when spec.autoscaler.mode is prometheus",
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/containerName",
            "spec.resourcePolicy.containerPolicies[0].containerName: Required value",
        ),
    ] {
        let errs = errors(&with(pointer, Value::Null));
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "removing {pointer}: {errs:#?}"
        );
    }
    let mut none = with("/spec/autoscaler/prometheus", Value::Null);
    set(&mut none, "/spec/autoscaler/mode", json!(""));
    assert!(
        errors(&none).is_empty(),
        "no prometheus block needed without prometheus mode"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut o = orders();
    set(&mut o, "/spec/numPartitions", json!("ten"));
    set(&mut o, "/spec/numPartitionsPerInstance", json!(-1));
    set(&mut o, "/spec/autoscaler/prometheus/ratePerCore", json!(0));
    set(
        &mut o,
        "/spec/autoscaler/prometheus/address",
        json!(["http://a:9090", 7, "http://a:9090"]),
    );
    let errs = errors(&o);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("spec.numPartitions: Invalid value: \"ten\": spec.numPartitions in body must be of type integer")));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.autoscaler.prometheus.address[1]: Invalid value: 7"))
    );
    assert!(
        errs.iter()
            .any(|e| e
                == "spec.autoscaler.prometheus.address[2]: Duplicate value: \"http://a:9090\"")
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.numPartitionsPerInstance"))
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.autoscaler.prometheus.ratePerCore"))
    );
}

#[test]
fn suspicious_settings_are_warnings() {
    // (parent pointer, key, value, expected warning)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "/spec",
            "namespace",
            json!("other"),
            "spec.namespace (other) differs from the Consumer's namespace (streams)",
        ),
        (
            "/spec/autoscaler",
            "mode",
            json!("vpa"),
            "vpa is not implemented",
        ),
        (
            "/spec/autoscaler/prometheus",
            "ramPerCore",
            json!("512"),
            "512 is only 512 bytes; did you mean 512Mi?",
        ),
        (
            "/spec/autoscaler/prometheus/offset",
            "query",
            json!("sum(lag) by (topic)"),
            "the grouping by (topic) has no partition",
        ),
        (
            "/spec/autoscaler/prometheus/address",
            "0",
            json!("http://prom:9090/api/v1/query"),
            "give the Prometheus base URL",
        ),
        (
            "/spec/resourcePolicy/containerPolicies/0/maxAllowed",
            "nvidia.com/gpu",
            json!("1"),
            "konsumer sets cpu and memory only",
        ),
        (
            "/spec/resourcePolicy/globalPolicy/maxAllowed",
            "cpu",
            json!("300m"),
            "globalPolicy.maxAllowed.cpu (300m) is below the minimum of 4 instances (600m)",
        ),
        (
            "/spec",
            "numPartitionsPerInstance",
            json!(11),
            "one instance consumes every partition",
        ),
        ("/spec", "extra", json!(1), "unknown field \"spec.extra\""),
        (
            "/spec",
            "deploymentTemplate",
            json!({}),
            "containerPolicies cannot be checked",
        ),
        (
            "/spec/autoscaler/prometheus/address",
            "0",
            json!("http://admin:s3cret@prom:9090"),
            "carries a password",
        ),
        (
            "/spec/autoscaler/prometheus",
            "minSyncPeriod",
            json!("20m"),
            "minSyncPeriod (20m0s) is longer than spec.autoscaler.pendingScaleDownDuration",
        ),
    ];
    for (parent, key, value, expected) in cases {
        let mut o = orders();
        match o.pointer_mut(parent).unwrap() {
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = value.clone(),
            Value::Object(m) => {
                m.insert(key.to_string(), value.clone());
            }
            _ => unreachable!(),
        }
        let r = validate(&o, None, "v1");
        assert!(
            r.is_valid(),
            "{parent}/{key} = {value}: only a warning expected, got {:?}",
            r.errors
        );
        assert!(
            r.warnings.iter().any(|w| w.contains(expected)),
            "{parent}/{key} = {value}: expected a warning containing {expected:?}, got {:#?}",
            r.warnings
        );
    }
}

#[test]
fn updates_warn_about_shrinking_and_renamed_env_keys() {
    let old = orders();
    let new = with("/spec/numPartitions", json!(8));
    let r = validate(&new, Some(&old), "v1");
    assert!(r.is_valid());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("decreased from 10 to 8") && w.contains("8..9")),
        "{:?}",
        r.warnings
    );
    let new = with("/spec/partitionEnvKey", json!("PARTITIONS"));
    let r = validate(&new, Some(&old), "v1");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("changed from KAFKA_PARTITIONS to PARTITIONS")),
        "{:?}",
        r.warnings
    );
    let r = validate(&old, Some(&old), "v1");
    assert!(
        r.warnings.is_empty(),
        "an unchanged update warns about nothing: {:?}",
        r.warnings
    );
}

#[test]
fn defaults_fill_only_what_is_unset() {
    assert!(defaults::patch(&orders()).is_empty());
    let seed: Value = serde_saphyr::from_str(include_str!(
        "../../tests/fixtures/consumer-seed-example.yaml"
    ))
    .unwrap();
    let mut applied = seed.clone();
    json_patch::patch(&mut applied, &defaults::patch(&seed)).unwrap();
    let a = &applied["spec"]["autoscaler"];
    assert_eq!(a["pendingScaleUpDuration"], "5m");
    assert_eq!(a["pendingScaleDownDuration"], "15m");
    assert_eq!(a["prometheus"]["cpuIncrement"], "100m");
    assert_eq!(a["prometheus"]["fallbackStrategy"], "min");
    assert_eq!(
        applied["spec"]["partitionEnvKey"], "PARTITION",
        "set values are kept"
    );
    assert!(
        defaults::patch(&applied).is_empty(),
        "defaulting twice changes nothing"
    );
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "5m",
            "0",
            "1Gi",
            "100m",
            "prometheus",
            "http://p:9090",
            "-3",
            "1e99"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "spec",
                    "numPartitions",
                    "autoscaler",
                    "prometheus",
                    "address",
                    "mode",
                    "resourcePolicy",
                    "containerPolicies",
                    "minAllowed",
                    "maxAllowed",
                    "cpu",
                    "memory",
                    "ratePerCore",
                    "tolerableLag",
                    "criticalLag",
                    "deploymentTemplate",
                    "template",
                    "containers",
                    "name",
                    "metadata",
                    "x",
                ])
                .prop_map(String::from),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_json_never_panics_and_always_gets_an_answer(object in arbitrary_json(), old in proptest::option::of(arbitrary_json())) {
        let r = validate(&object, old.as_ref(), "v1");
        // An answer: either valid, or errors that each name a field.
        for e in &r.errors {
            prop_assert!(!e.field.as_str().is_empty());
        }
        let _ = defaults::patch(&object);
    }

    #[test]
    fn arbitrary_values_in_a_real_consumer_never_panic(
        pointer in prop::sample::select(vec![
            "/spec/numPartitions", "/spec/autoscaler", "/spec/autoscaler/prometheus/address",
            "/spec/autoscaler/prometheus/ramPerCore", "/spec/autoscaler/prometheus/criticalLag",
            "/spec/resourcePolicy/containerPolicies", "/spec/resourcePolicy/containerPolicies/0/minAllowed",
            "/spec/deploymentTemplate", "/metadata", "/spec",
        ]),
        value in arbitrary_json(),
    ) {
        let o = with(pointer, value);
        let _ = validate(&o, Some(&orders()), "v1");
    }
}

/// The slow path of the type checks: the cleaned copy, then the typed read of it.
fn typed_after_cleaning(object: &Value) -> (Option<Consumer>, Report) {
    let mut report = Report::default();
    let cleaned = structural::check_consumer(object, &mut report);
    let consumer = typed(cleaned, &mut report);
    (consumer, report)
}

/// Whenever the in-place read is taken, it must be what the slow path gives, and
/// the slow path must have had nothing to say.
fn assert_in_place_matches_cleaning(object: &Value) -> Result<bool, TestCaseError> {
    let Some(fast) = typed_in_place(object) else {
        return Ok(false);
    };
    let (slow, report) = typed_after_cleaning(object);
    prop_assert_eq!(&report, &Report::default(), "{}", object);
    prop_assert_eq!(Some(fast), slow, "{}", object);
    Ok(true)
}

#[test]
fn the_in_place_read_takes_the_valid_fixtures_and_matches_the_cleaned_copy() {
    let seed: Value = serde_saphyr::from_str(include_str!(
        "../../tests/fixtures/consumer-seed-example.yaml"
    ))
    .unwrap();
    for object in [orders(), seed] {
        assert!(
            assert_in_place_matches_cleaning(&object).unwrap(),
            "{object}"
        );
    }
    // Each of these is reported (or, a null, pruned), so it must take the slow path.
    for (pointer, value) in [
        ("/spec/numPartitions", json!("ten")),
        ("/spec/bogus", json!(1)),
        ("/spec/autoscaler/pendingScaleUpDuration", Value::Null),
        (
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/cpu",
            json!(true),
        ),
        ("/metadata/labels", json!({"team": true})),
        ("/metadata/name", json!(false)),
    ] {
        let mut o = orders();
        let value_was_null = value.is_null();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        o.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no {parent}"))
            .insert(key.to_string(), value);
        let pruned_silently = value_was_null;
        assert!(typed_in_place(&o).is_none(), "{pointer}");
        if !pruned_silently {
            assert_ne!(typed_after_cleaning(&o).1, Report::default(), "{pointer}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_in_place_read_agrees_with_the_cleaned_copy_on_arbitrary_objects(object in arbitrary_json()) {
        assert_in_place_matches_cleaning(&object)?;
    }

    #[test]
    fn the_in_place_read_agrees_with_the_cleaned_copy_on_mutated_consumers(
        pointer in prop::sample::select(vec![
            "/spec/numPartitions", "/spec/autoscaler", "/spec/autoscaler/mode",
            "/spec/autoscaler/prometheus/address", "/spec/autoscaler/prometheus/rampPerCore",
            "/spec/autoscaler/prometheus/ramPerCore", "/spec/autoscaler/prometheus/criticalLag",
            "/spec/autoscaler/prometheus/fallbackStrategy", "/spec/autoscaler/prometheus/offset",
            "/spec/resourcePolicy/containerPolicies", "/spec/resourcePolicy/containerPolicies/0/minAllowed",
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/cpu", "/spec/resourcePolicy/globalPolicy",
            "/spec/deploymentTemplate", "/spec/deploymentTemplate/replicas", "/metadata", "/metadata/name",
            "/metadata/labels", "/metadata/annotations", "/spec", "/spec/x", "/status", "/apiVersion",
        ]),
        value in arbitrary_json(),
    ) {
        let mut o = orders();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(m)) = o.pointer_mut(parent) {
            m.insert(key.to_string(), value);
        }
        assert_in_place_matches_cleaning(&o)?;
        // The same object through the whole validator gives the same report either way.
        let report = validate(&o, None, "v1");
        let (_, slow) = typed_after_cleaning(&o);
        if typed_in_place(&o).is_some() {
            prop_assert!(slow.errors.is_empty());
        } else if !slow.errors.is_empty() {
            prop_assert!(!report.errors.is_empty());
        }
    }
}

#[test]
fn problems_the_stored_object_already_had_do_not_block_an_update() {
    let broken = with("/spec/autoscaler/prometheus/ratePerCore", json!(0));
    let mut labelled = broken.clone();
    labelled["metadata"]["labels"] = json!({"team": "payments"});
    let r = validate(&labelled, Some(&broken), "v1");
    assert!(r.is_valid(), "{:?}", r.errors);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("ratePerCore") && w.contains("already so before")),
        "{:?}",
        r.warnings
    );
    // A new problem in the same update is still an error.
    let mut worse = labelled.clone();
    worse["spec"]["numPartitions"] = json!(0);
    let r = validate(&worse, Some(&broken), "v1");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].to_string().starts_with("spec.numPartitions"));
}

#[test]
fn instances_and_recommendations_stay_within_what_one_status_holds() {
    let mut o = with("/spec/numPartitions", json!(2000));
    set(&mut o, "/spec/numPartitionsPerInstance", json!(1));
    let errs = errors(&o);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "spec.numPartitionsPerInstance: Invalid value: 1: 2000 partitions make 2000 instances; \
             konsumer supports at most 1000 instances per Consumer (use at least 2 partitions per instance)"
        )),
        "{errs:#?}"
    );
    // 1000 instances × 2 scaled containers: the most a status holds.
    set(&mut o, "/spec/numPartitionsPerInstance", json!(2));
    assert!(errors(&o).is_empty(), "{:#?}", errors(&o));
    let policies = o["spec"]["resourcePolicy"]["containerPolicies"]
        .as_array_mut()
        .unwrap();
    let mut third = policies[1].clone();
    third["containerName"] = json!("metrics-agent");
    policies.push(third);
    if let Some(containers) = o
        .pointer_mut("/spec/deploymentTemplate/template/spec/containers")
        .and_then(Value::as_array_mut)
    {
        containers.push(json!({"name": "metrics-agent", "image": "x"}));
    }
    let errs = errors(&o);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "spec.resourcePolicy.containerPolicies: Invalid value: 3: 1000 instances × 3 scaled containers make 3000 \
             recommendations; the status holds at most 2000"
        )),
        "{errs:#?}"
    );
}

/// What the one-pass spec read stands for: the schema check of the text, then
/// the typed read of it.
fn spec_in_two_passes(text: &str) -> Option<ConsumerSpec> {
    if !structural::spec_conforms_json(text) {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The one-pass read answers exactly when the two passes do, with the same spec.
fn assert_one_pass_matches_two(text: &str) -> Result<bool, TestCaseError> {
    let one = structural::read_conforming_spec(text);
    let answered = one.is_some();
    prop_assert_eq!(one, spec_in_two_passes(text), "{}", text);
    Ok(answered)
}

#[test]
fn the_one_pass_spec_read_takes_valid_specs_and_refuses_what_the_schema_check_reports() {
    let seed: Value = serde_saphyr::from_str(include_str!(
        "../../tests/fixtures/consumer-seed-example.yaml"
    ))
    .unwrap();
    for object in [orders(), seed] {
        assert!(assert_one_pass_matches_two(&object["spec"].to_string()).unwrap());
    }
    // Each is reported or pruned by the schema check, though the typed read
    // alone would take every one of them.
    for (pointer, value) in [
        ("/spec/bogus", json!(1)),
        ("/spec/autoscaler/pendingScaleUpDuration", Value::Null),
        ("/spec/autoscaler/mode", Value::Null),
        (
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/gpu",
            Value::Null,
        ),
        ("/spec/deploymentTemplate/replicas", Value::Null),
    ] {
        let mut o = orders();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        o.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no {parent}"))
            .insert(key.to_string(), value);
        let text = o["spec"].to_string();
        let typed = serde_json::from_str::<ConsumerSpec>(&text);
        let conforms = structural::spec_conforms_json(&text);
        assert_eq!(
            structural::read_conforming_spec(&text).is_some(),
            conforms,
            "{pointer}"
        );
        assert!(typed.is_ok() || !conforms, "{pointer}");
    }
    let mut o = orders();
    o["spec"]["bogus"] = json!(1);
    assert!(serde_json::from_str::<ConsumerSpec>(&o["spec"].to_string()).is_ok());
    assert!(structural::read_conforming_spec(&o["spec"].to_string()).is_none());
    // The template is handed over as text: it is checked as text (an object).
    let mut o = orders();
    o["spec"]["deploymentTemplate"] = json!([]);
    assert!(serde_json::from_str::<ConsumerSpec>(&o["spec"].to_string()).is_ok());
    assert!(structural::read_conforming_spec(&o["spec"].to_string()).is_none());
    // A key given twice in a resource list, escapes in keys and values.
    let text = orders()["spec"].to_string();
    for edited in [
        text.replacen("\"cpu\":", "\"cpu\":\"1\",\"cpu\":", 1),
        text.replacen("\"numPartitions\"", "\"num\\u0050artitions\"", 1),
        text.replacen("\"name\":\"", "\"name\":\"\\u006e", 1),
    ] {
        assert_ne!(edited, text);
        assert_one_pass_matches_two(&edited).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_one_pass_spec_read_agrees_with_two_passes_on_arbitrary_specs(spec in arbitrary_json()) {
        assert_one_pass_matches_two(&spec.to_string())?;
    }

    #[test]
    fn the_one_pass_spec_read_agrees_with_two_passes_on_mutated_specs(
        pointer in prop::sample::select(vec![
            "/spec/numPartitions", "/spec/numPartitionsPerInstance", "/spec/name", "/spec/autoscaler",
            "/spec/autoscaler/mode", "/spec/autoscaler/pendingScaleDownDuration",
            "/spec/autoscaler/prometheus", "/spec/autoscaler/prometheus/address",
            "/spec/autoscaler/prometheus/ramPerCore", "/spec/autoscaler/prometheus/cpuIncrement",
            "/spec/autoscaler/prometheus/ratePerCore", "/spec/autoscaler/prometheus/criticalLag",
            "/spec/autoscaler/prometheus/fallbackStrategy", "/spec/autoscaler/prometheus/offset",
            "/spec/autoscaler/prometheus/offset/query", "/spec/resourcePolicy",
            "/spec/resourcePolicy/containerPolicies", "/spec/resourcePolicy/containerPolicies/0",
            "/spec/resourcePolicy/containerPolicies/0/minAllowed",
            "/spec/resourcePolicy/containerPolicies/0/minAllowed/cpu",
            "/spec/resourcePolicy/containerPolicies/0/mode", "/spec/resourcePolicy/globalPolicy",
            "/spec/resourcePolicy/globalPolicy/maxAllowed", "/spec/deploymentTemplate",
            "/spec/deploymentTemplate/replicas", "/spec/deploymentTemplate/template", "/spec/x",
        ]),
        value in arbitrary_json(),
        number in prop::sample::select(vec![
            "0", "-1", "2147483647", "2147483648", "9223372036854775807", "9223372036854775808",
            "18446744073709551616", "1.0", "1e3", "-0",
        ]),
        as_number in any::<bool>(),
    ) {
        let mut o = orders();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let placeholder = "\"@number@\"";
        let value = if as_number { json!("@number@") } else { value };
        match o.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.insert(key.to_string(), value);
            }
            Some(Value::Array(a)) => {
                if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = value;
                }
            }
            _ => {}
        }
        // Numbers a `Value` cannot hold as written (beyond u64, `1.0`, `-0`).
        let text = o["spec"].to_string().replace(placeholder, number);
        assert_one_pass_matches_two(&text)?;
    }
}
