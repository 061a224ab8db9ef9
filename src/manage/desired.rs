//! The Deployment an instance should have: Konsumerator's name, labels,
//! annotations and owner reference around `deploymentTemplate`, and the pod
//! template passed through the webhook's own decision and patch, so that a
//! managed Deployment and a labelled one created by hand end with the same pod
//! spec.

use std::ops::Range;

use serde_json::{Map, Value, json};

use crate::api::keys;
use crate::inject::patch::{self, Injection};
use crate::inject::settings::{ConsumerSettings, ContainerTarget, InstancePlan, ResourceSource};
use crate::inject::workload::Workload;

/// The controller reference of the managed Deployments: the Consumer, or the
/// ConfigMap in guest mode. Garbage collection removes the Deployments with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub fn reference(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }

    /// `Consumer streams/orders`, for messages.
    pub fn describe(&self, namespace: &str) -> String {
        format!("{} {namespace}/{}", self.kind, self.name)
    }
}

/// Everything needed to build the Deployments of one Consumer.
#[derive(Clone, Copy)]
pub struct Recipe<'a> {
    pub settings: &'a ConsumerSettings,
    /// `spec.deploymentTemplate` (an `apps/v1` DeploymentSpec).
    pub template: &'a Value,
    pub owner: &'a Owner,
    pub gomemlimit_ratio: f64,
}

/// `<spec.name>-<n>`, Konsumerator's naming.
pub fn deployment_name(base: &str, instance: u32) -> String {
    let mut name = String::with_capacity(base.len() + 4);
    push_deployment_name(&mut name, base, instance);
    name
}

/// [`deployment_name`], written into `out` (a buffer reused over instances).
pub fn push_deployment_name(out: &mut String, base: &str, instance: u32) {
    use std::fmt::Write;
    out.push_str(base);
    // Writing into a String cannot fail.
    let _ = write!(out, "-{instance}");
}

/// Konsumerator's `ConsecutiveIntsToRange`: up to two partitions joined with
/// `-`, more as `first-last`.
pub fn partitions_label(partitions: Range<u32>) -> String {
    let ids: Vec<u32> = partitions.collect();
    match ids.as_slice() {
        [] => String::new(),
        [a] => a.to_string(),
        [a, b] => format!("{a}-{b}"),
        [first, .., last] => format!("{first}-{last}"),
    }
}

/// A label value: at most 63 characters (Konsumerator truncated too), without a
/// trailing character the API server would refuse.
fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Why `deploymentTemplate` cannot become a Deployment, if it cannot: what the
/// API server would refuse, said before anything is written.
pub fn template_problem(template: Option<&Value>) -> Option<String> {
    let Some(t) = template.filter(|t| t.is_object()) else {
        return Some("spec.deploymentTemplate is not set".into());
    };
    let selector = t.get("selector").and_then(Value::as_object);
    let match_labels = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object);
    let has_expressions = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    if match_labels.is_none_or(Map::is_empty) && !has_expressions {
        return Some(
            "spec.deploymentTemplate.selector must select the pod template's labels (matchLabels)"
                .into(),
        );
    }
    let pod_labels = t
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object);
    for (k, v) in match_labels.into_iter().flatten() {
        if pod_labels.and_then(|l| l.get(k)) != Some(v) {
            return Some(format!(
                "spec.deploymentTemplate.selector.matchLabels[{k}] is not among spec.deploymentTemplate.template.metadata.labels"
            ));
        }
    }
    let containers = t
        .pointer("/template/spec/containers")
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Some("spec.deploymentTemplate.template.spec.containers is empty".into());
    };
    for (i, c) in containers.iter().enumerate() {
        let named = c
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let image = c
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !named || !image {
            return Some(format!(
                "spec.deploymentTemplate.template.spec.containers[{i}] needs a name and an image"
            ));
        }
    }
    None
}

impl Recipe<'_> {
    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    pub fn name(&self, instance: u32) -> String {
        deployment_name(&self.settings.base_name, instance)
    }

    /// The Deployment metadata konsumer sets: Konsumerator's labels and
    /// annotations and the owner reference. Deliberately not the
    /// `konsumerator.lwolf.org/consumer` label: the webhook keeps the running pod
    /// template of a labelled Deployment when only the values it manages change,
    /// which would undo a rollout; a managed Deployment is complete without it.
    fn metadata(&self, instance: u32, partitions: Range<u32>) -> Value {
        let s = self.settings;
        json!({
            "name": self.name(instance),
            "namespace": s.namespace,
            "labels": {
                keys::APP_LABEL: label_value(&s.base_name),
                keys::CONTROLLER_LABEL: label_value(&s.name),
                keys::PARTITIONS_LABEL: partitions_label(partitions.clone()),
            },
            "annotations": {
                keys::PARTITION: crate::inject::partition::join(partitions),
                keys::CONSUMER_ID: instance.to_string(),
            },
            "ownerReferences": [self.owner.reference()],
        })
    }

    /// The whole Deployment for `instance` with `targets` as its resources: what
    /// konsumer applies (server-side apply, field manager `konsumer`).
    pub fn build(
        &self,
        instance: u32,
        targets: &[ContainerTarget],
        source: ResourceSource,
    ) -> Result<Value, String> {
        let s = self.settings;
        let partitions = s
            .layout
            .bucket(instance)
            .ok_or_else(|| format!("instance {instance} is out of range"))?;
        let mut object = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(instance, partitions.clone()),
            "spec": self.template.clone(),
        });
        let text = object.to_string();
        let view: Workload = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let template = view.spec.as_ref().and_then(|s| s.template.as_ref());
        let plan = InstancePlan {
            id: instance,
            partitions,
            targets,
            source,
        };
        let injection = Injection::new(
            plan,
            &s.partition_env_key,
            s.num_partitions(),
            s.instances(),
            self.gomemlimit_ratio,
        );
        let mutation = patch::deployment(
            view.metadata.as_ref(),
            template.and_then(|t| t.metadata.as_ref()),
            template
                .and_then(|t| t.spec.as_ref())
                .map(|s| s.containers()),
            template.is_some(),
            &injection,
        );
        json_patch::patch(&mut object, &mutation.ops)
            .map_err(|e| format!("cannot apply the injection: {e}"))?;
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{self, ResourceSource};

    fn orders() -> (ConsumerSettings, Value) {
        let c = crate::api::test_orders();
        (
            ConsumerSettings::from_consumer(&c).unwrap(),
            c.spec.deployment_template.unwrap().to_value(),
        )
    }

    fn owner() -> Owner {
        Owner {
            api_version: "konsumerator.lwolf.org/v1".into(),
            kind: "Consumer".into(),
            name: "orders".into(),
            uid: "uid-orders".into(),
        }
    }

    fn env<'v>(c: &'v Value, name: &str) -> Option<&'v str> {
        c["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    }

    #[test]
    fn konsumerator_names_partition_labels_like_consecutive_ints_to_range() {
        assert_eq!(partitions_label(0..1), "0");
        assert_eq!(partitions_label(6..8), "6-7");
        assert_eq!(partitions_label(0..3), "0-2");
        assert_eq!(partitions_label(10..23), "10-22");
        assert_eq!(deployment_name("orders", 3), "orders-3");
        assert_eq!(label_value(&"a-".repeat(40)), "a-".repeat(31) + "a");
    }

    #[test]
    fn an_instance_gets_konsumerators_metadata_and_the_webhooks_pod_spec() {
        let (settings, template) = orders();
        let owner = owner();
        let recipe = Recipe {
            settings: &settings,
            template: &template,
            owner: &owner,
            gomemlimit_ratio: 0.8,
        };
        let plan = settings.instance(2).unwrap();
        let d = recipe.build(2, plan.targets, plan.source).unwrap();
        assert_eq!(d["metadata"]["name"], "orders-2");
        assert_eq!(d["metadata"]["namespace"], "streams");
        assert_eq!(
            d["metadata"]["labels"],
            json!({"app": "orders", "controller": "orders", "partitions": "6-7"})
        );
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"konsumerator.lwolf.org/partition": "6,7", "konsumerator.lwolf.org/consumer-id": "2"})
        );
        assert_eq!(
            d["metadata"]["ownerReferences"][0],
            json!({"apiVersion": "konsumerator.lwolf.org/v1", "kind": "Consumer", "name": "orders",
                   "uid": "uid-orders", "controller": true, "blockOwnerDeletion": true})
        );
        assert_eq!(d["spec"]["selector"], template["selector"], "verbatim");
        assert_eq!(d["spec"]["replicas"], 1);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example.com/orders-consumer:1.4.2");
        assert_eq!(env(c, "KAFKA_PARTITIONS"), Some("6,7"));
        assert_eq!(env(c, "KONSUMERATOR_INSTANCE"), Some("2"));
        assert_eq!(env(c, "KONSUMERATOR_NUM_INSTANCES"), Some("4"));
        assert_eq!(env(c, "KONSUMERATOR_NUM_PARTITIONS"), Some("10"));
        assert_eq!(env(c, "GOMAXPROCS"), Some("1"));
        assert_eq!(env(c, "GOMEMLIMIT"), Some("102MiB"));
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "100m", "memory": "128Mi"})
        );
        let shipper = &d["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(
            shipper["resources"]["limits"],
            json!({"cpu": "50m", "memory": "64Mi"})
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["konsumerator.lwolf.org/consumer-id"],
            "2"
        );
    }

    #[test]
    fn the_webhook_has_nothing_to_add_to_a_managed_deployment() {
        let (settings, template) = orders();
        let owner = owner();
        let recipe = Recipe {
            settings: &settings,
            template: &template,
            owner: &owner,
            gomemlimit_ratio: 0.8,
        };
        for id in 0..settings.instances() {
            let plan = settings.instance(id).unwrap();
            let mut d = recipe.build(id, plan.targets, plan.source).unwrap();
            // Labelled as a user would label it: the webhook decides it as well.
            d["metadata"]["labels"]["konsumerator.lwolf.org/consumer"] = json!("orders");
            let text = d.to_string();
            let view: Workload = serde_json::from_str(&text).unwrap();
            let decision = inject::decide_deployment(&view, &settings, 0.8).unwrap();
            assert_eq!(decision.instance, id);
            assert!(
                decision.mutation.ops.is_empty(),
                "instance {id}: {:?}",
                decision.mutation.ops
            );
        }
    }

    #[test]
    fn given_targets_replace_the_plans() {
        let (settings, template) = orders();
        let owner = owner();
        let recipe = Recipe {
            settings: &settings,
            template: &template,
            owner: &owner,
            gomemlimit_ratio: 0.8,
        };
        let mut targets = settings.instance(0).unwrap().targets.to_vec();
        targets[0].requests.cpu = Some(crate::api::quantity::Milli::parse("1300m").unwrap());
        targets[0].limits.cpu = Some(crate::api::quantity::Milli::parse("2").unwrap());
        let d = recipe
            .build(0, &targets, ResourceSource::Recommendation)
            .unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], "1300m");
        assert_eq!(env(c, "GOMAXPROCS"), Some("2"));
    }

    #[test]
    fn templates_the_api_server_would_refuse_are_named() {
        let (_, template) = orders();
        assert_eq!(template_problem(Some(&template)), None);
        assert!(template_problem(None).unwrap().contains("not set"));
        let mut t = template.clone();
        t["selector"] = json!({});
        assert!(template_problem(Some(&t)).unwrap().contains("selector"));
        let mut t = template.clone();
        t["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert!(
            template_problem(Some(&t))
                .unwrap()
                .contains("matchLabels[app]")
        );
        let mut t = template.clone();
        t["template"]["spec"]["containers"][1]["image"] = json!("");
        assert!(
            template_problem(Some(&t))
                .unwrap()
                .contains("containers[1]")
        );
        let seed_style = json!({"template": {"spec": {"containers": [{"name": "consumer"}]}}});
        assert!(template_problem(Some(&seed_style)).is_some());
    }
}
