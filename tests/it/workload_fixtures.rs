//! Every captured workload AdmissionReview, POSTed over real TLS to a real server in
//! local mode with `streams/orders` known and no metrics yet (fallback = minAllowed);
//! the answers checked against tests/fixtures/README.md, row by row.

use serde_json::Value;

use crate::support::*;

struct Answered {
    request: Value,
    review: Value,
    object: Value,
}

impl Answered {
    fn pod_spec(&self) -> &Value {
        if self.object["kind"] == "Deployment" {
            &self.object["spec"]["template"]["spec"]
        } else {
            &self.object["spec"]
        }
    }

    fn allowed(&self) -> bool {
        self.review["response"]["allowed"] == true
    }

    fn message(&self) -> String {
        self.review["response"]["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn assert_instance(&self, instance: &str, partitions: &str) {
        for c in self.pod_spec()["containers"].as_array().unwrap() {
            assert_eq!(
                env_value(c, "KAFKA_PARTITIONS"),
                partitions,
                "{}",
                c["name"]
            );
            assert_eq!(env_value(c, "KONSUMERATOR_INSTANCE"), instance);
            assert_eq!(env_value(c, "KONSUMERATOR_NUM_INSTANCES"), "4");
            assert_eq!(env_value(c, "KONSUMERATOR_NUM_PARTITIONS"), "10");
        }
        let annotations = &self.object["metadata"]["annotations"];
        assert_eq!(annotations["konsumerator.lwolf.org/partition"], partitions);
        assert_eq!(annotations["konsumerator.lwolf.org/consumer-id"], instance);
    }

    /// `consumer` and `log-shipper` got the policy minimum as requests and limits.
    fn assert_fallback_resources(&self) {
        let consumer = container(self.pod_spec(), "consumer");
        for side in ["requests", "limits"] {
            assert_eq!(consumer["resources"][side]["cpu"], "100m", "{consumer}");
            assert_eq!(consumer["resources"][side]["memory"], "128Mi", "{consumer}");
        }
        assert_eq!(env_value(consumer, "GOMAXPROCS"), "1");
        assert_eq!(env_value(consumer, "GOMEMLIMIT"), "102MiB");
    }
}

async fn answer(server: &LocalServer, name: &str) -> Answered {
    let request = fixture(name);
    let (status, review) = server.post("/mutate/workloads", fixture_bytes(name)).await;
    assert_eq!(status, 200, "{name}: {review}");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"], request["request"]["uid"],
        "{name}: uid echoed"
    );
    let object = patched_object(&request, &review);
    Answered {
        request,
        review,
        object,
    }
}

/// Runs the webhook again on its own output: nothing left to change.
async fn assert_idempotent(server: &LocalServer, a: &Answered) {
    let mut again = a.request.clone();
    again["request"]["object"] = a.object.clone();
    if again["request"]["operation"] == "UPDATE" {
        again["request"]["oldObject"] = a.object.clone();
        again["request"]["object"]["spec"]["template"]["metadata"]["labels"]["bump"] = "1".into();
    }
    let (status, review) = server
        .post("/mutate/workloads", serde_json::to_vec(&again).unwrap())
        .await;
    assert_eq!(status, 200);
    assert!(review["response"]["allowed"] == true);
    assert!(
        patch_of(&review).is_empty(),
        "second patch: {:?}",
        patch_of(&review)
    );
}

#[tokio::test]
async fn deployment_create_instance_label_gets_partitions_env_and_min_resources() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-instance-label").await;
    assert!(a.allowed());
    a.assert_instance("0", "0,1,2");
    a.assert_fallback_resources();
    let shipper = container(a.pod_spec(), "log-shipper");
    assert_eq!(env_value(shipper, "LOG_LEVEL"), "info");
    for side in ["requests", "limits"] {
        assert_eq!(shipper["resources"][side]["cpu"], "50m");
        assert_eq!(shipper["resources"][side]["memory"], "64Mi");
    }
    assert_eq!(env_value(shipper, "GOMAXPROCS"), "1");
    assert_eq!(env_value(shipper, "GOMEMLIMIT"), "51MiB");
    let w = warnings(&a.review);
    assert!(
        w.iter()
            .any(|w| w.contains("log-shipper") && w.contains("requests.cpu 20m replaced by 50m")),
        "{w:?}"
    );
    assert_eq!(
        w.len(),
        1,
        "only the replaced request is warned about: {w:?}"
    );
    // The pod template carries the instance, so its Pods resolve to it.
    let t = &a.object["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(t["konsumerator.lwolf.org/consumer-id"], "0");
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn deployment_named_like_konsumerator_gets_its_instance_and_user_values_replaced() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-instance-from-name").await;
    assert!(a.allowed());
    a.assert_instance("2", "6,7");
    a.assert_fallback_resources();
    let consumer = container(a.pod_spec(), "consumer");
    assert_eq!(env_value(consumer, "KAFKA_BROKERS"), "kafka:9092");
    let gomaxprocs = env(consumer)
        .into_iter()
        .find(|(n, _)| n == "GOMAXPROCS")
        .unwrap()
        .1;
    assert!(
        gomaxprocs.get("valueFrom").is_none(),
        "valueFrom replaced: {gomaxprocs}"
    );
    let w = warnings(&a.review).join("\n");
    for expected in [
        "KAFKA_PARTITIONS=\"99\" replaced by \"6,7\"",
        "GOMAXPROCS=(valueFrom) replaced",
        "limits.cpu 8 replaced by 100m",
        "limits.memory 8Gi replaced by 128Mi",
    ] {
        assert!(w.contains(expected), "missing warning {expected:?} in\n{w}");
    }
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn deployment_with_konsumerator_consumer_id_annotation_is_instance_3() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-consumer-id-annotation").await;
    assert!(a.allowed());
    a.assert_instance("3", "8,9");
    a.assert_fallback_resources();
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn deployment_out_of_range_is_denied_with_the_instance_count() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-instance-out-of-range").await;
    assert!(!a.allowed());
    assert!(patch_of(&a.review).is_empty());
    let m = a.message();
    assert!(m.contains("instance 7") && m.contains("4 instances"), "{m}");
    let status = &a.review["response"]["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "metadata.labels[konsumerator.lwolf.org/instance]"
    );
    s.stop().await;
}

#[tokio::test]
async fn deployment_of_an_unknown_consumer_is_denied_by_name_and_namespace() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-unknown-consumer").await;
    assert!(!a.allowed());
    let m = a.message();
    assert!(
        m.contains("no Consumer \"payments\" in namespace \"streams\""),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn deployment_without_instance_is_denied_with_the_ways_to_say_it() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-create-no-instance").await;
    assert!(!a.allowed());
    let m = a.message();
    for way in [
        "konsumerator.lwolf.org/instance",
        "konsumerator.lwolf.org/consumer-id",
        "orders-<n>",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
    ] {
        assert!(m.contains(way), "{way} missing from {m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn deployment_update_with_a_new_image_gets_env_and_recommendation_again_dry_run_alike() {
    let s = LocalServer::orders().await;
    let real = answer(&s, "deployment-update-image").await;
    assert!(real.allowed());
    real.assert_instance("0", "0,1,2");
    real.assert_fallback_resources();
    let dry = answer(&s, "deployment-update-image-dryrun").await;
    assert_eq!(dry.request["request"]["dryRun"], true);
    assert_eq!(patch_of(&dry.review), patch_of(&real.review));
    assert_eq!(warnings(&dry.review), warnings(&real.review));
    assert_idempotent(&s, &real).await;
    s.stop().await;
}

#[tokio::test]
async fn deployment_update_with_an_unchanged_template_gets_no_change() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "deployment-update-server-side-apply").await;
    assert!(a.allowed());
    assert!(patch_of(&a.review).is_empty(), "{:?}", patch_of(&a.review));
    assert_eq!(a.object, a.request["request"]["object"]);
    // The stale values are pointed out, not silently ignored.
    let w = warnings(&a.review).join("\n");
    assert!(w.contains("did not change"), "{w}");
    s.stop().await;
}

#[tokio::test]
async fn pod_from_replicaset_without_name_resolves_in_the_request_namespace() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "pod-create-from-replicaset").await;
    assert!(a.request["request"].get("name").is_none());
    assert!(
        a.request["request"]["object"]["metadata"]
            .get("namespace")
            .is_some()
    );
    assert!(a.allowed());
    a.assert_instance("0", "0,1,2");
    a.assert_fallback_resources();
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn statefulset_pod_is_instance_2_and_its_init_container_gets_the_env() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "pod-create-statefulset-index").await;
    assert!(a.allowed());
    a.assert_instance("2", "6,7");
    let init = &a.pod_spec()["initContainers"][0];
    assert_eq!(env_value(init, "KAFKA_PARTITIONS"), "6,7");
    assert_eq!(env_value(init, "KONSUMERATOR_INSTANCE"), "2");
    assert!(
        init["resources"].as_object().unwrap().is_empty(),
        "no policy for the init container"
    );
    assert!(!has_env(init, "GOMAXPROCS"), "no cpu, no GOMAXPROCS");
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn indexed_job_pod_is_instance_1() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "pod-create-indexed-job").await;
    assert!(a.allowed());
    a.assert_instance("1", "3,4,5");
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn conflicting_env_is_replaced_env_from_kept_and_slash_keys_escaped() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "pod-create-conflicting-env").await;
    assert!(a.allowed());
    a.assert_instance("1", "3,4,5");
    a.assert_fallback_resources();
    let consumer = container(a.pod_spec(), "consumer");
    assert_eq!(
        consumer["envFrom"],
        a.request["request"]["object"]["spec"]["containers"][0]["envFrom"]
    );
    assert_eq!(
        a.object["metadata"]["annotations"]["example.com/path"],
        "a/b~c"
    );
    let paths: Vec<String> = patch_of(&a.review)
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/metadata/annotations/konsumerator.lwolf.org~1partition"),
        "{paths:?}"
    );
    let w = warnings(&a.review).join("\n");
    for expected in [
        "GOMAXPROCS=\"8\" replaced by \"1\"",
        "KAFKA_PARTITIONS=\"0\" replaced by \"3,4,5\"",
        "GOMEMLIMIT=\"100MiB\" replaced by \"102MiB\"",
    ] {
        assert!(w.contains(expected), "missing {expected:?} in\n{w}");
    }
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn large_pod_gets_env_everywhere_and_resources_only_where_a_policy_says() {
    let s = LocalServer::orders().await;
    let a = answer(&s, "pod-create-large").await;
    assert!(a.allowed());
    a.assert_instance("2", "6,7");
    a.assert_fallback_resources();
    let exporter = container(a.pod_spec(), "metrics-exporter");
    let original = &a.request["request"]["object"]["spec"]["containers"][2];
    assert_eq!(
        exporter["resources"], original["resources"],
        "no policy: resources untouched"
    );
    assert_eq!(
        env(exporter).len(),
        env(original).len() + 4,
        "only the partition env added"
    );
    assert_idempotent(&s, &a).await;
    s.stop().await;
}

#[tokio::test]
async fn dry_run_pod_gets_the_same_answer_as_a_real_create() {
    let s = LocalServer::orders().await;
    let dry = answer(&s, "pod-create-dryrun").await;
    let real = answer(&s, "pod-create-from-replicaset").await;
    assert_eq!(patch_of(&dry.review), patch_of(&real.review));
    assert_eq!(warnings(&dry.review), warnings(&real.review));
    s.stop().await;
}

/// `deployment-update-image` with `oldObject` replaced by `old` and `object` by `new`.
fn update_review(old: &Value, new: &Value) -> Vec<u8> {
    let mut review = fixture("deployment-update-image");
    review["request"]["oldObject"] = old.clone();
    review["request"]["object"] = new.clone();
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn a_reapply_that_drops_konsumer_values_keeps_the_running_template() {
    let s = LocalServer::orders().await;
    // The Deployment as it runs: created through the webhook.
    let created = answer(&s, "deployment-create-instance-label").await;
    let running = created.object.clone();
    // `kubectl apply` of the unchanged manifest: konsumer's env gone, log-shipper's
    // 20m request back.
    let reapplied = created.request["request"]["object"].clone();
    let request: Value = serde_json::from_slice(&update_review(&running, &reapplied)).unwrap();
    let (status, review) = s
        .post("/mutate/workloads", update_review(&running, &reapplied))
        .await;
    assert_eq!(status, 200);
    assert_eq!(review["response"]["allowed"], true);
    let result = patched_object(&request, &review);
    assert_eq!(
        result["spec"]["template"], running["spec"]["template"],
        "no rollout"
    );
    assert!(
        warnings(&review)
            .iter()
            .any(|w| w.contains("nothing rolls out")),
        "{review}"
    );

    // A real change (a new image) on top of the same re-apply gets the injection.
    let mut bumped = reapplied.clone();
    bumped["spec"]["template"]["spec"]["containers"][0]["image"] =
        "registry.example.com/orders-consumer:2.0.0".into();
    let request: Value = serde_json::from_slice(&update_review(&running, &bumped)).unwrap();
    let (_, review) = s
        .post("/mutate/workloads", update_review(&running, &bumped))
        .await;
    let result = patched_object(&request, &review);
    let c = container(&result["spec"]["template"]["spec"], "consumer");
    assert_eq!(c["image"], "registry.example.com/orders-consumer:2.0.0");
    assert_eq!(env_value(c, "KAFKA_PARTITIONS"), "0,1,2");
    s.stop().await;
}

#[tokio::test]
async fn updates_of_deployments_konsumer_cannot_decide_are_let_through() {
    let s = LocalServer::orders().await;
    let orphan = fixture("deployment-create-unknown-consumer")["request"]["object"].clone();
    // Being deleted (a finalizer removed): allowed untouched.
    let mut deleting = orphan.clone();
    deleting["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z".into();
    let (_, review) = s
        .post("/mutate/workloads", update_review(&orphan, &deleting))
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(patch_of(&review).is_empty());
    // An image bump of a Deployment whose Consumer is gone: allowed, with the reason.
    let mut bumped = orphan.clone();
    bumped["spec"]["template"]["spec"]["containers"][0]["image"] =
        "registry.example.com/payments:2.1.0".into();
    let (_, review) = s
        .post("/mutate/workloads", update_review(&orphan, &bumped))
        .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(patch_of(&review).is_empty());
    let w = warnings(&review).join("\n");
    assert!(
        w.contains("left this Deployment unchanged") && w.contains("no Consumer \"payments\""),
        "{w}"
    );
    // The same Deployment created now is still refused.
    let a = answer(&s, "deployment-create-unknown-consumer").await;
    assert!(!a.allowed());
    s.stop().await;
}
