//! Adoption without a restart: an instance that has a managed Deployment but no
//! recommendation yet (Konsumerator made it, or konsumer ran without managing)
//! starts from what that Deployment runs with, not from the policy's fallback.
//! Otherwise the first pass would roll every adopted instance down to
//! `minAllowed`, and the state machine would only climb back after a lag.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::live;
use crate::api::{InstanceStatus, ScalingState};
use crate::inject::settings::ContainerTarget;
use crate::scaling::machine::mark;
use crate::scaling::spec::ScalingSpec;
use crate::scaling::step::to_status;

/// The containers a recommendation names: every policy's, else the scaled one.
fn names(spec: &ScalingSpec) -> Vec<&str> {
    if spec.policies.is_empty() {
        vec![spec.scaled.as_str()]
    } else {
        spec.policies.iter().map(|p| p.name.as_str()).collect()
    }
}

/// Whether `previous` recommends this instance for these partitions.
fn fits(previous: &[InstanceStatus], id: usize, partitions: &[u32]) -> bool {
    previous.iter().any(|s| {
        s.id == id as i32
            && s.partitions.len() == partitions.len()
            && s.partitions
                .iter()
                .zip(partitions)
                .all(|(a, b)| *a as i64 == *b as i64)
            && !s.resources.is_empty()
    })
}

/// Whether [`seed`] would look for a Deployment: some instance has no
/// recommendation yet (then the Deployments are read whole).
pub fn wanted(spec: &ScalingSpec, previous: &[InstanceStatus]) -> bool {
    spec.layout
        .buckets()
        .enumerate()
        .any(|(id, bucket)| !fits(previous, id, &bucket.collect::<Vec<u32>>()))
}

/// `previous` with a recommendation for every instance that lacks one and has a
/// Deployment of its partitions among `ours`; `None` when there is none to add.
pub fn seed(
    spec: &ScalingSpec,
    previous: &[InstanceStatus],
    ours: &[&Value],
    now: Timestamp,
) -> Option<Vec<InstanceStatus>> {
    let names = names(spec);
    let mut out = previous.to_vec();
    let mut added = false;
    for (id, bucket) in spec.layout.buckets().enumerate() {
        let partitions: Vec<u32> = bucket.collect();
        if fits(previous, id, &partitions) {
            continue;
        }
        let Some(deployment) = ours.iter().find(|d| {
            live::instance(d) == Some(id as u32)
                && live::partitions(d).as_ref() == Some(&partitions)
        }) else {
            continue;
        };
        let running = live::resources(deployment, &names);
        // A container that runs without cpu and memory gets its fallback.
        let targets: Vec<ContainerTarget> = names
            .iter()
            .filter_map(|n| {
                running
                    .iter()
                    .find(|t| t.name == *n)
                    .or_else(|| spec.fallback.iter().find(|f| f.name == *n))
                    .cloned()
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        out.retain(|s| s.id != id as i32);
        out.push(InstanceStatus {
            id: id as i32,
            partitions: partitions.iter().map(|p| *p as i32).collect(),
            state: ScalingState::Running,
            since: Some(Time(mark(now))),
            resources: to_status(&targets),
            pending: None,
            saturation: None,
        });
        added = true;
    }
    added.then(|| {
        out.sort_by_key(|s| s.id);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ScalingSpec {
        ScalingSpec::from_consumer(&crate::api::test_orders())
            .unwrap()
            .unwrap()
    }

    fn konsumerator_made(id: u32, partitions: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": format!("orders-{id}"), "annotations": {
            "konsumerator.lwolf.org/consumer-id": id.to_string(),
            "konsumerator.lwolf.org/partition": partitions}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "consumer", "resources": {"requests": {"cpu": cpu, "memory": "2G"}, "limits": {"cpu": "2", "memory": "2G"}}},
                {"name": "log-shipper"}]}}}})
    }

    #[test]
    fn adopted_instances_start_from_what_they_run_with() {
        let now: Timestamp = "2026-11-22T12:00:00.5Z".parse().unwrap();
        let d0 = konsumerator_made(0, "0,1,2", "1300m");
        let d1 = konsumerator_made(1, "3,4", "900m"); // old layout: not this instance's
        let seeded = seed(&spec(), &[], &[&d0, &d1], now).unwrap();
        assert_eq!(seeded.len(), 1);
        let s = &seeded[0];
        assert_eq!((s.id, s.partitions.clone()), (0, vec![0, 1, 2]));
        assert_eq!(s.state, ScalingState::Running);
        assert_eq!(
            s.since.as_ref().unwrap().0.to_string(),
            "2026-11-22T12:00:01Z"
        );
        assert_eq!(s.resources[0].container_name, "consumer");
        assert_eq!(s.resources[0].requests["cpu"].0, "1300m");
        assert_eq!(s.resources[0].limits["memory"].0, "2G");
        assert_eq!(s.resources[1].container_name, "log-shipper");
        assert_eq!(
            s.resources[1].requests["cpu"].0, "50m",
            "no resources: its fallback"
        );
    }

    #[test]
    fn instances_with_a_recommendation_are_not_seeded_again() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let d0 = konsumerator_made(0, "0,1,2", "1300m");
        assert!(wanted(&spec(), &[]));
        let first = seed(&spec(), &[], &[&d0], now).unwrap();
        assert_eq!(seed(&spec(), &first, &[&d0], now), None);
        assert!(
            wanted(&spec(), &first),
            "instance 1 has no recommendation yet"
        );
    }
}
