//! Managed Deployments in local mode: written as manifests under
//! `DIR/.konsumer/deployments/<namespace>/`, so what konsumer would do in a
//! cluster can be seen (and tested) without one, through the binary. And the
//! seed README's Consumer, applied unchanged, yields the Deployments
//! Konsumerator would have created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use konsumer::reconciler::ReconcilerConfig;
use serde_json::{Value, json};

use crate::e2e_local::Binary;
use crate::support::*;

fn manifests(dir: &Path, namespace: &str) -> PathBuf {
    dir.join(".konsumer/deployments").join(namespace)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
                .map(|n| n.trim_end_matches(".yaml").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| {
        n.rsplit('-')
            .next()
            .and_then(|i| i.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    names
}

fn read(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn env_map(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_binary_in_local_mode_writes_managed_deployments_as_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/orders.yaml");
    let consumer_file = dir.path().join("orders.yaml");
    std::fs::copy(&example, &consumer_file).unwrap();
    let konsumer = Binary::serve_local(dir.path(), &["--reconcile-interval", "200ms"]);
    let out = manifests(dir.path(), "streams");
    wait_for("four manifests", || names(&out).len() == 4).await;
    assert_eq!(
        names(&out),
        ["orders-0", "orders-1", "orders-2", "orders-3"]
    );
    let d = read(&out.join("orders-3.yaml"));
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["labels"]["partitions"], "8-9");
    assert_eq!(d["metadata"]["ownerReferences"][0]["name"], "orders");
    assert_eq!(d["metadata"]["generation"], 1);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(env_map(c).contains(&("KAFKA_PARTITIONS".into(), "8,9".into())));

    // Paused by hand: left alone from now on.
    let paused = out.join("orders-0.yaml");
    let mut p = read(&paused);
    p["metadata"]["annotations"]["konsumerator.lwolf.org/disable-autoscaler"] = json!("true");
    std::fs::write(&paused, serde_saphyr::to_string(&p).unwrap()).unwrap();

    // 13 partitions: a fifth instance, and a rollout of the others (one at a
    // time: without a Deployment controller a written manifest counts as rolled).
    let text = std::fs::read_to_string(&consumer_file).unwrap();
    std::fs::write(
        &consumer_file,
        text.replace("numPartitions: 10", "numPartitions: 13"),
    )
    .unwrap();
    wait_for("orders-4", || names(&out).len() == 5).await;
    wait_for("every instance rolled", || {
        ["orders-1", "orders-2", "orders-3"].iter().all(|n| {
            let d = read(&out.join(format!("{n}.yaml")));
            env_map(&d["spec"]["template"]["spec"]["containers"][0])
                .contains(&("KONSUMERATOR_NUM_PARTITIONS".into(), "13".into()))
        })
    })
    .await;
    assert_eq!(
        read(&out.join("orders-1.yaml"))["metadata"]["generation"],
        2
    );
    let left = read(&paused);
    assert!(
        env_map(&left["spec"]["template"]["spec"]["containers"][0])
            .contains(&("KONSUMERATOR_NUM_PARTITIONS".into(), "10".into())),
        "the paused one keeps its old values"
    );

    // 7 partitions: 3 instances; the extra manifests go.
    let text = std::fs::read_to_string(&consumer_file).unwrap();
    std::fs::write(
        &consumer_file,
        text.replace("numPartitions: 13", "numPartitions: 7"),
    )
    .unwrap();
    wait_for("three manifests", || names(&out).len() == 3).await;
    assert_eq!(names(&out), ["orders-0", "orders-1", "orders-2"]);
    assert!(konsumer.terminate().success());
}

#[tokio::test]
async fn the_seed_readme_consumer_yields_the_deployments_konsumerator_would_have_created() {
    let seed = std::fs::read_to_string(fixtures_dir().join("consumer-seed-example.yaml")).unwrap();
    let s = LocalServer::start_with(&[("consumer.yaml", &seed)], |config| {
        config.reconciler = Some(ReconcilerConfig {
            interval: Duration::from_millis(200),
            query_timeout: Duration::from_millis(300),
            ..ReconcilerConfig::default()
        });
    })
    .await;
    let dir = s.running.as_ref().unwrap().generated_ca.clone().unwrap();
    let root = dir.ancestors().nth(3).unwrap().to_path_buf();
    let out = manifests(&root, "default");
    wait_for("100 Deployments", || names(&out).len() == 100).await;
    // `{consumerName}-{index}`, consumerName being spec.name, one per partition.
    let expected: Vec<String> = (0..100).map(|i| format!("test-consumer-{i}")).collect();
    assert_eq!(names(&out), expected);

    let d = read(&out.join("test-consumer-42.yaml"));
    // Konsumerator's metadata (reference §4.2).
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["metadata"]["name"], "test-consumer-42");
    assert_eq!(d["metadata"]["namespace"], "default");
    assert_eq!(
        d["metadata"]["labels"],
        json!({"app": "test-consumer", "controller": "consumer-sample", "partitions": "42"})
    );
    assert_eq!(
        d["metadata"]["annotations"]["konsumerator.lwolf.org/partition"],
        "42"
    );
    assert_eq!(
        d["metadata"]["annotations"]["konsumerator.lwolf.org/consumer-id"],
        "42"
    );
    let owner = &d["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["apiVersion"].clone(),
            owner["kind"].clone(),
            owner["name"].clone()
        ),
        (
            json!("konsumerator.lwolf.org/v1"),
            json!("Consumer"),
            json!("consumer-sample")
        )
    );
    assert_eq!(
        (
            owner["controller"].clone(),
            owner["blockOwnerDeletion"].clone()
        ),
        (json!(true), json!(true))
    );
    // The template "without any modifications" but the env and the resources.
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"], json!({"type": "Recreate"}));
    assert_eq!(spec["selector"], json!({"matchLabels": {"app": "my-dep"}}));
    assert_eq!(
        spec["template"]["metadata"]["labels"],
        json!({"app": "my-dep"})
    );
    let containers = spec["template"]["spec"]["containers"].as_array().unwrap();
    let names_: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names_, ["busybox-sidecar", "busybox"]);
    assert_eq!(
        containers[0]["command"],
        json!(["/bin/sh", "-ec", "env && sleep 3000"])
    );
    for c in containers {
        // Every container gets the env, in Konsumerator's order; the partition
        // key is `partitionEnvKey`.
        let env: Vec<String> = env_map(c)
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "PARTITION=42",
                "GOMAXPROCS=1",
                // 80 % of 100M in real MiB (Konsumerator: 80MiB, MB labelled MiB).
                "GOMEMLIMIT=76MiB",
                "KONSUMERATOR_INSTANCE=42",
                "KONSUMERATOR_NUM_PARTITIONS=100",
                "KONSUMERATOR_NUM_INSTANCES=100"
            ],
            "{}",
            c["name"]
        );
        // No metrics yet: the policy's minimum, as requests and limits.
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "100m", "memory": "100M"}, "limits": {"cpu": "100m", "memory": "100M"}})
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn plan_compares_the_consumer_with_the_deployments_of_a_directory() {
    // What local mode wrote for the example, then the template changes.
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/orders.yaml");
    std::fs::copy(&example, dir.path().join("orders.yaml")).unwrap();
    let konsumer = Binary::serve_local(dir.path(), &["--reconcile-interval", "200ms"]);
    let out = manifests(dir.path(), "streams");
    wait_for("four manifests", || names(&out).len() == 4).await;
    assert!(konsumer.terminate().success());
    let newer = dir.path().join("newer.yaml");
    std::fs::write(
        &newer,
        std::fs::read_to_string(&example)
            .unwrap()
            .replace("orders-consumer:1.4.2", "orders-consumer:1.5.0")
            .replace("numPartitions: 10", "numPartitions: 7"),
    )
    .unwrap();
    let plans = konsumer_json(&[
        "plan".as_ref(),
        "--offline".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "--deployments".as_ref(),
        dir.path().join(".konsumer/deployments").as_os_str(),
        "-f".as_ref(),
        newer.as_os_str(),
    ]);
    let actions: Vec<String> = plans[0]["deployments"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["deployment"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "rollout orders-0",
            "rollout orders-1",
            "rollout orders-2",
            "delete orders-3"
        ]
    );
    assert!(
        plans[0]["deployments"]["actions"][0]["detail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "spec.template.spec.containers[consumer].image=registry.example.com/orders-consumer:1.5.0"),
        "{}",
        plans[0]["deployments"]
    );
}
