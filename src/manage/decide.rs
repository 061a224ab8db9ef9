//! The writes that bring one Consumer's managed Deployments in line.
//!
//! - A missing instance is created (all at once, as Konsumerator did).
//! - A Deployment whose pod template differs from what konsumer would apply (the
//!   template changed, the recommendation changed, the partitions moved) is
//!   rolled, one instance of a Consumer at a time: none starts while another is
//!   still rolling out. Differences in the runtime hints alone roll nothing.
//! - One whose metadata alone differs gets the metadata (no restart).
//! - Extra instances (after `numPartitions` shrank) are removed.
//! - Paused Deployments (`disable-autoscaler`, or scaled to zero by someone else)
//!   and Deployments konsumer does not own are left alone.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::compare::{differences, keep_live_cosmetics, strip_cosmetic};
use super::desired::Recipe;
use super::live::{self, Progress};
use crate::api::ContainerResources;
use crate::api::keys;
use crate::inject::settings::{ContainerTarget, ResourceSource};
use crate::scaling::predict::total_cpu;
use crate::scaling::step::to_status;

/// The field manager of every write konsumer makes (as for the status).
pub const FIELD_MANAGER: &str = "konsumer";

/// How many differing fields a write names.
const SHOWN: usize = 5;

/// The last rollout konsumer started for a Consumer: until the listed Deployment
/// shows this generation, the list is older than the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub deployment: String,
    pub generation: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Create,
    Rollout,
    Metadata,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Rollout => "rollout",
            Change::Metadata => "metadata",
        }
    }
}

/// One server-side apply of a whole Deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub name: String,
    pub instance: u32,
    pub partitions: Vec<u32>,
    pub change: Change,
    pub body: Value,
    /// What differs, `path=new value`.
    pub changes: Vec<String>,
    /// Resources of the containers konsumer sizes, before and after.
    pub from: Vec<ContainerResources>,
    pub to: Vec<ContainerResources>,
}

impl Write {
    /// Whether the write gives the instance more CPU.
    pub fn grows(&self) -> bool {
        let cpu = |list: &[ContainerResources]| {
            let targets: Vec<ContainerTarget> = list
                .iter()
                .filter_map(|c| ContainerTarget::from_status(c).ok())
                .collect();
            total_cpu(&targets)
        };
        cpu(&self.to) > cpu(&self.from)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub name: String,
    pub why: String,
}

/// A Deployment konsumer leaves alone, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    Paused {
        name: String,
        why: String,
    },
    /// Named like an instance but not owned by this Consumer.
    Foreign {
        name: String,
        owner: String,
    },
    /// Its rollout will not finish on its own; the next instance goes ahead.
    Stalled {
        name: String,
        why: String,
    },
}

impl Kept {
    pub fn describe(&self) -> String {
        match self {
            Kept::Paused { name, why } => format!("{name} is paused ({why}): left alone"),
            Kept::Foreign { name, owner } => format!(
                "{name} exists and is not this Consumer's ({owner}): left alone; delete or rename it to let konsumer create the instance"
            ),
            Kept::Stalled { name, why } => format!("{name}: {why}; the next instance may roll"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Creations and metadata-only updates: made now.
    pub writes: Vec<Write>,
    /// Rollouts wanted, the next to go first (a growing instance before a
    /// shrinking one, then by instance).
    pub rollouts: Vec<Write>,
    pub removals: Vec<Removal>,
    pub kept: Vec<Kept>,
    /// Why no rollout may start now: the Deployment still rolling out.
    pub waiting_for: Option<String>,
}

impl Decision {
    /// The rollout to start now, if one may.
    pub fn next_rollout(&self) -> Option<&Write> {
        if self.waiting_for.is_some() {
            return None;
        }
        self.rollouts.first()
    }
}

/// Who a live Deployment belongs to, said for people.
fn owner_of(d: &Value) -> String {
    match live::controller(d) {
        Some((kind, name, _)) => format!("controlled by {kind} {name}"),
        None => "no controller".into(),
    }
}

fn resources_status(targets: &[ContainerTarget]) -> Vec<ContainerResources> {
    to_status(targets)
}

/// Decides for one Consumer. `live`: the Deployments of its namespace that it
/// owns or that carry one of its instance names.
pub fn decide(
    recipe: &Recipe<'_>,
    live: &[&Value],
    in_flight: Option<&InFlight>,
) -> Result<Decision, String> {
    let settings = recipe.settings;
    let uid = recipe.owner.uid.as_str();
    let ours = |d: &Value| live::controller(d).is_some_and(|(_, _, u)| u == uid);
    let by_name: HashMap<&str, &Value> = live.iter().map(|d| (live::name(d), *d)).collect();
    let instances = settings.instances();
    let wanted_replicas = recipe
        .template
        .get("replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut out = Decision::default();

    for id in 0..instances {
        let name = recipe.name(id);
        let Some(plan) = settings.instance(id) else {
            continue;
        };
        let partitions: Vec<u32> = plan.partitions.clone().collect();
        let Some(d) = by_name.get(name.as_str()).copied() else {
            let body = recipe.build(id, plan.targets, plan.source)?;
            out.writes.push(Write {
                name,
                instance: id,
                partitions,
                change: Change::Create,
                body,
                changes: Vec::new(),
                from: Vec::new(),
                to: resources_status(plan.targets),
            });
            continue;
        };
        if !ours(d) {
            out.kept.push(Kept::Foreign {
                name,
                owner: owner_of(d),
            });
            continue;
        }
        if live::paused_by_annotation(d) {
            out.kept.push(Kept::Paused {
                name,
                why: keys::DISABLE_AUTOSCALER.to_string(),
            });
            continue;
        }
        if live::replicas(d) == 0
            && wanted_replicas != 0
            && !live::applies_replicas(d, FIELD_MANAGER)
        {
            out.kept.push(Kept::Paused {
                name,
                why: "scaled to 0 replicas by someone else".into(),
            });
            continue;
        }
        let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        let running = live::resources(d, &names);
        // Without a recommendation the instance keeps what it runs with: the
        // fallback is for new instances, not a reason to restart old ones.
        let targets: Vec<ContainerTarget> = match plan.source {
            ResourceSource::Recommendation => plan.targets.to_vec(),
            ResourceSource::Fallback => plan
                .targets
                .iter()
                .map(|t| {
                    running
                        .iter()
                        .find(|r| r.name == t.name)
                        .unwrap_or(t)
                        .clone()
                })
                .collect(),
        };
        let desired = recipe.build(id, &targets, plan.source)?;
        let spec_changes = differences(&d["spec"], &strip_cosmetic(&desired)["spec"], SHOWN);
        let write = |change, body, changes: Vec<String>, prefix: &str| Write {
            name: name.clone(),
            instance: id,
            partitions: partitions.clone(),
            change,
            body,
            changes: changes
                .into_iter()
                .map(|c| {
                    if c == "..." {
                        c
                    } else {
                        format!("{prefix}.{c}")
                    }
                })
                .collect(),
            from: resources_status(&running),
            to: resources_status(&targets),
        };
        if !spec_changes.is_empty() {
            out.rollouts
                .push(write(Change::Rollout, desired, spec_changes, "spec"));
            continue;
        }
        let meta_changes = differences(&d["metadata"], &desired["metadata"], SHOWN);
        if !meta_changes.is_empty() {
            let body = keep_live_cosmetics(&desired, d);
            out.writes
                .push(write(Change::Metadata, body, meta_changes, "metadata"));
        }
    }

    // Owned Deployments that are no instance of the current layout.
    for d in live.iter().copied().filter(|d| ours(d)) {
        let name = live::name(d);
        let id = live::instance(d);
        let why = match id {
            None => Some("it has no readable konsumerator.lwolf.org/consumer-id".to_string()),
            Some(i) if i >= instances => Some(format!(
                "instance {i} is beyond the {instances} instances of the Consumer"
            )),
            Some(i) if name != recipe.name(i) => by_name
                .contains_key(recipe.name(i).as_str())
                .then(|| format!("{} serves instance {i}", recipe.name(i))),
            Some(_) => None,
        };
        let Some(why) = why else { continue };
        if live::paused_by_annotation(d) {
            out.kept.push(Kept::Paused {
                name: name.to_string(),
                why: format!("{}; not removed although {why}", keys::DISABLE_AUTOSCALER),
            });
        } else {
            out.removals.push(Removal {
                name: name.to_string(),
                why,
            });
        }
    }

    // One rollout at a time: a Deployment still rolling out holds the others.
    for d in live.iter().copied().filter(|d| ours(d)) {
        let name = live::name(d);
        if live::paused_by_annotation(d) || out.removals.iter().any(|r| r.name == name) {
            continue;
        }
        let behind =
            in_flight.is_some_and(|f| f.deployment == name && live::generation(d) < f.generation);
        let progress = if behind {
            Progress::Rolling("konsumer's change has not reached the listed Deployment yet".into())
        } else {
            live::progress(d)
        };
        match progress {
            Progress::Done => {}
            Progress::Rolling(why) => {
                if out.waiting_for.is_none() {
                    out.waiting_for = Some(format!("{name}: {why}"));
                }
            }
            Progress::Stalled(why) => out.kept.push(Kept::Stalled {
                name: name.to_string(),
                why,
            }),
        }
    }
    out.rollouts.sort_by_key(|w| (!w.grows(), w.instance));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConsumerStatus;
    use crate::api::InstanceStatus;
    use crate::inject::ConsumerSettings;
    use crate::manage::Owner;
    use serde_json::json;

    struct Fixture {
        settings: ConsumerSettings,
        template: Value,
        owner: Owner,
    }

    impl Fixture {
        fn new(consumer: &crate::api::Consumer) -> Self {
            Fixture {
                settings: ConsumerSettings::from_consumer(consumer).unwrap(),
                template: consumer
                    .spec
                    .deployment_template
                    .as_ref()
                    .unwrap()
                    .to_value(),
                owner: Owner {
                    api_version: "konsumerator.lwolf.org/v1".into(),
                    kind: "Consumer".into(),
                    name: "orders".into(),
                    uid: "uid-orders".into(),
                },
            }
        }

        fn recipe(&self) -> Recipe<'_> {
            Recipe {
                settings: &self.settings,
                template: &self.template,
                owner: &self.owner,
                gomemlimit_ratio: 0.8,
            }
        }

        /// What the API server holds after konsumer created every instance and
        /// the Deployment controller rolled them out.
        fn created(&self) -> Vec<Value> {
            decide(&self.recipe(), &[], None)
                .unwrap()
                .writes
                .into_iter()
                .map(|w| settle(server_side(w.body)))
                .collect()
        }
    }

    /// A few of the API server's defaults, a generation and konsumer's ownership.
    fn server_side(mut d: Value) -> Value {
        d["metadata"]["generation"] = json!(1);
        d["metadata"]["managedFields"] = json!([{"manager": "konsumer", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
        d["spec"]["revisionHistoryLimit"] = json!(10);
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
        {
            c["imagePullPolicy"] = json!("IfNotPresent");
        }
        d
    }

    fn settle(mut d: Value) -> Value {
        let g = d["metadata"]["generation"].clone();
        let r = d["spec"]["replicas"].as_i64().unwrap_or(1);
        d["status"] = json!({"observedGeneration": g, "replicas": r, "updatedReplicas": r, "availableReplicas": r});
        d
    }

    fn refs(v: &[Value]) -> Vec<&Value> {
        v.iter().collect()
    }

    fn recommend(c: &mut crate::api::Consumer, id: i32, partitions: Vec<i32>, cpu: &str) {
        let mut list = crate::api::ResourceList::new();
        list.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.into()),
        );
        list.insert(
            "memory".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        );
        let status = c.status.get_or_insert_with(ConsumerStatus::default);
        let instances = status.instances.get_or_insert_with(Vec::new);
        instances.retain(|i| i.id != id);
        instances.push(InstanceStatus {
            id,
            partitions,
            resources: vec![crate::api::ContainerResources {
                container_name: "consumer".into(),
                requests: list.clone(),
                limits: list,
            }],
            ..InstanceStatus::default()
        });
    }

    #[test]
    fn a_new_consumer_gets_every_instance_created_at_once() {
        let f = Fixture::new(&crate::api::test_orders());
        let d = decide(&f.recipe(), &[], None).unwrap();
        let names: Vec<&str> = d.writes.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["orders-0", "orders-1", "orders-2", "orders-3"]);
        assert!(d.writes.iter().all(|w| w.change == Change::Create));
        assert!(d.rollouts.is_empty() && d.removals.is_empty() && d.kept.is_empty());
        assert_eq!(d.writes[3].partitions, vec![8, 9]);
    }

    #[test]
    fn deployments_that_match_get_no_write() {
        let f = Fixture::new(&crate::api::test_orders());
        let live = f.created();
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn a_new_recommendation_rolls_one_instance_at_a_time_growing_first() {
        let mut c = crate::api::test_orders();
        let f0 = Fixture::new(&c);
        let mut live = f0.created();
        recommend(&mut c, 1, vec![3, 4, 5], "100m"); // same cpu, more memory: shrinks nothing
        recommend(&mut c, 2, vec![6, 7], "2");
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        let order: Vec<&str> = d.rollouts.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            order,
            ["orders-2", "orders-1"],
            "the growing instance first"
        );
        let next = d.next_rollout().unwrap();
        assert!(
            next.changes
                .iter()
                .any(|c| c == "spec.template.spec.containers[consumer].resources.requests.cpu=2"),
            "{:?}",
            next.changes
        );
        assert_eq!(next.from[0].requests["cpu"].0, "100m");
        assert_eq!(next.to[0].requests["cpu"].0, "2");
        let c2 = &next.body["spec"]["template"]["spec"]["containers"][0];
        assert!(
            c2["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "GOMAXPROCS" && e["value"] == "2")
        );

        // orders-2 was rolled: until it is available, orders-1 waits.
        let mut rolled = server_side(next.body.clone());
        rolled["metadata"]["generation"] = json!(2);
        rolled["status"] = live[2]["status"].clone();
        live[2] = rolled;
        let in_flight = InFlight {
            deployment: "orders-2".into(),
            generation: 2,
        };
        let d = decide(&f.recipe(), &refs(&live), Some(&in_flight)).unwrap();
        assert_eq!(d.rollouts.len(), 1);
        assert!(d.next_rollout().is_none());
        assert!(
            d.waiting_for.as_ref().unwrap().starts_with("orders-2"),
            "{:?}",
            d.waiting_for
        );

        // A listing older than the write: the generation konsumer wrote is not there.
        let stale = f0.created();
        let mut stale_live = live.clone();
        stale_live[2] = stale[2].clone();
        let d = decide(&f.recipe(), &refs(&stale_live), Some(&in_flight)).unwrap();
        assert!(
            d.next_rollout().is_none(),
            "the stale list must not free the next rollout"
        );

        live[2] = settle(live[2].clone());
        let d = decide(&f.recipe(), &refs(&live), Some(&in_flight)).unwrap();
        assert_eq!(d.next_rollout().unwrap().name, "orders-1");
    }

    #[test]
    fn a_stalled_rollout_does_not_hold_the_others() {
        let mut c = crate::api::test_orders();
        let f0 = Fixture::new(&c);
        let mut live = f0.created();
        live[0]["status"]["availableReplicas"] = json!(0);
        live[0]["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        recommend(&mut c, 1, vec![3, 4, 5], "2");
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert_eq!(d.next_rollout().unwrap().name, "orders-1");
        assert!(matches!(&d.kept[0], Kept::Stalled { name, .. } if name == "orders-0"));
    }

    #[test]
    fn partitions_that_move_roll_and_extra_instances_go() {
        let mut c = crate::api::test_orders();
        let live = Fixture::new(&c).created();
        c.spec.num_partitions = Some(7); // 3 instances: [0,1,2] [3,4] [5,6]
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert_eq!(d.removals.len(), 1);
        assert_eq!(d.removals[0].name, "orders-3");
        assert!(
            d.removals[0].why.contains("beyond the 3 instances"),
            "{}",
            d.removals[0].why
        );
        let rolled: Vec<&str> = d.rollouts.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            rolled,
            ["orders-0", "orders-1", "orders-2"],
            "KONSUMERATOR_NUM_PARTITIONS changed for all"
        );
        assert!(
            d.rollouts[1]
                .changes
                .iter()
                .any(|c| c.ends_with("KAFKA_PARTITIONS].value=3,4")),
            "{:?}",
            d.rollouts[1].changes
        );

        c.spec.num_partitions = Some(13); // 5 instances
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert_eq!(d.writes.len(), 1);
        assert_eq!(
            (d.writes[0].name.as_str(), d.writes[0].change),
            ("orders-4", Change::Create)
        );
    }

    #[test]
    fn paused_and_foreign_deployments_are_left_alone() {
        let mut c = crate::api::test_orders();
        let mut live = Fixture::new(&c).created();
        live[0]["metadata"]["annotations"]["konsumerator.lwolf.org/disable-autoscaler"] =
            json!("true");
        live[1]["spec"]["replicas"] = json!(0);
        live[1]["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
        live[2]["metadata"]["ownerReferences"] = json!([]);
        let mut template = c.spec.deployment_template.as_ref().unwrap().to_value();
        template["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example.com/orders-consumer:1.5.0");
        c.spec.deployment_template = Some(template.into());
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        let rolled: Vec<&str> = d.rollouts.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(rolled, ["orders-3"]);
        assert_eq!(d.kept.len(), 3, "{:?}", d.kept);
        assert!(
            d.kept[0]
                .describe()
                .contains("orders-0 is paused (konsumerator.lwolf.org/disable-autoscaler)")
        );
        assert!(
            d.kept[1]
                .describe()
                .contains("scaled to 0 replicas by someone else")
        );
        assert!(
            d.kept[2]
                .describe()
                .contains("orders-2 exists and is not this Consumer's (no controller)")
        );

        // konsumer itself scaled to zero (the template says 0) and is asked back to 1.
        let mut c = crate::api::test_orders();
        let mut template = c.spec.deployment_template.as_ref().unwrap().to_value();
        template["replicas"] = json!(0);
        c.spec.deployment_template = Some(template.into());
        let stopped = Fixture::new(&c).created();
        assert_eq!(stopped[0]["spec"]["replicas"], 0);
        let f = Fixture::new(&crate::api::test_orders());
        let d = decide(&f.recipe(), &refs(&stopped), None).unwrap();
        assert_eq!(d.rollouts.len(), 4, "resumed through the template");
    }

    #[test]
    fn konsumerator_made_deployments_are_adopted_without_a_restart() {
        let mut c = crate::api::test_orders();
        let f = Fixture::new(&c);
        // As Konsumerator made them: its GOMEMLIMIT (MB labelled MiB), no pod
        // template annotations, its own resources, its generation annotation.
        let mut live = f.created();
        for d in &mut live {
            d["metadata"]["annotations"]["konsumerator.lwolf.org/generation"] = json!("-4242");
            d["metadata"]["managedFields"] =
                json!([{"manager": "manager", "operation": "Update", "fieldsV1": {}}]);
            d["spec"]["template"]["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
            for c in d["spec"]["template"]["spec"]["containers"]
                .as_array_mut()
                .unwrap()
            {
                for e in c["env"].as_array_mut().unwrap() {
                    if e["name"] == "GOMEMLIMIT" {
                        e["value"] = json!("108MiB");
                    }
                }
            }
            d["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1300m", "memory": "400M"}, "limits": {"cpu": "2", "memory": "400M"}});
        }
        // No recommendation yet: what runs stays.
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert_eq!(d, Decision::default(), "adopted with no write");
        // With the seeded recommendation (what runs), still nothing.
        for id in 0..4 {
            let p = f
                .settings
                .layout
                .bucket(id)
                .unwrap()
                .map(|p| p as i32)
                .collect();
            recommend(&mut c, id as i32, p, "1300m");
            let list = &mut c.status.as_mut().unwrap().instances.as_mut().unwrap();
            let last = list.iter_mut().find(|i| i.id == id as i32).unwrap();
            last.resources[0].requests.insert(
                "memory".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("400M".into()),
            );
            last.resources[0].limits = [
                (
                    "cpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("2".into()),
                ),
                (
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("400M".into()),
                ),
            ]
            .into();
            let mut shipper =
                c.status.as_ref().unwrap().instances.as_ref().unwrap()[0].resources[0].clone();
            shipper.container_name = "log-shipper".into();
            shipper.requests = [
                (
                    "cpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("50m".into()),
                ),
                (
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("64Mi".into()),
                ),
            ]
            .into();
            shipper.limits = shipper.requests.clone();
            let list = &mut c.status.as_mut().unwrap().instances.as_mut().unwrap();
            list.iter_mut()
                .find(|i| i.id == id as i32)
                .unwrap()
                .resources
                .push(shipper);
        }
        let f = Fixture::new(&c);
        let d = decide(&f.recipe(), &refs(&live), None).unwrap();
        assert!(
            d.rollouts.is_empty(),
            "{:?}",
            d.rollouts.iter().map(|w| &w.changes).collect::<Vec<_>>()
        );
        assert!(d.writes.is_empty());

        // Without konsumer's labels it would be a metadata write only.
        let mut unlabelled = live.clone();
        unlabelled[0]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("partitions");
        let d = decide(&f.recipe(), &refs(&unlabelled), None).unwrap();
        assert_eq!(d.writes.len(), 1);
        let w = &d.writes[0];
        assert_eq!(w.change, Change::Metadata);
        assert_eq!(w.changes, vec!["metadata.labels.partitions=0-2"]);
        assert!(
            differences(&unlabelled[0]["spec"], &w.body["spec"], 5).is_empty(),
            "the pod template stays as it runs"
        );
    }
}
