//! A Consumer resolved once, when it enters the cache, into what the webhook needs:
//! the partition layout, the env key, and per instance the resources to inject
//! (the recommendation from the status, else the policy's fallback). Nothing on the
//! admission path parses a quantity of the Consumer again.

use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::quantity::Milli;
use crate::api::shared::{Content, Pool};
use crate::api::{Consumer, ContainerResources, ResourceList, env};

use super::partition::{Layout, layout_of};

/// CPU and memory of one side (requests or limits) of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu: Option<Milli>,
    pub memory: Option<Milli>,
}

impl Resources {
    pub fn from_list(list: Option<&ResourceList>) -> Result<Self, String> {
        let Some(list) = list else {
            return Ok(Resources::default());
        };
        let get = |key: &str| {
            list.get(key)
                .map(|q| Milli::parse(&q.0).map_err(|e| format!("{key}: {:?}: {e}", q.0)))
                .transpose()
        };
        Ok(Resources {
            cpu: get("cpu")?,
            memory: get("memory")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// Wildcard container name in a recommendation: every container.
pub const ALL_CONTAINERS: &str = "*";

/// Resources konsumer sets on one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContainerTarget {
    pub name: String,
    pub requests: Resources,
    pub limits: Resources,
}

impl Resources {
    /// As a `ResourceList` in canonical form.
    pub fn to_list(&self) -> ResourceList {
        let mut list = ResourceList::new();
        if let Some(cpu) = self.cpu {
            list.insert("cpu".into(), Quantity(cpu.cpu_string()));
        }
        if let Some(memory) = self.memory {
            list.insert("memory".into(), Quantity(memory.memory_string()));
        }
        list
    }
}

impl ContainerTarget {
    pub fn to_status(&self) -> ContainerResources {
        ContainerResources {
            container_name: self.name.clone(),
            requests: self.requests.to_list(),
            limits: self.limits.to_list(),
        }
    }

    pub fn from_status(c: &ContainerResources) -> Result<Self, String> {
        Ok(ContainerTarget {
            name: c.container_name.clone(),
            requests: Resources::from_list(Some(&c.requests))?,
            limits: Resources::from_list(Some(&c.limits))?,
        })
    }
}

/// Where an instance's resources come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceSource {
    Recommendation,
    Fallback,
}

impl ResourceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceSource::Recommendation => "recommendation",
            ResourceSource::Fallback => "fallback",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Consumer {key} cannot be used: {reason}")]
pub struct SettingsError {
    pub key: String,
    pub reason: String,
}

/// Everything the workload webhook needs from one Consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerSettings {
    pub namespace: String,
    pub name: String,
    /// `spec.name` (or `metadata.name`): Deployments are named `<base_name>-<n>`.
    pub base_name: String,
    pub layout: Layout,
    pub partition_env_key: String,
    fallback: Arc<[ContainerTarget]>,
    /// Per instance: the recommendation from the status, when it still fits.
    recommendations: Vec<Option<Arc<[ContainerTarget]>>>,
}

/// One instance's assignment.
#[derive(Clone, Debug)]
pub struct InstancePlan<'a> {
    pub id: u32,
    pub partitions: Range<u32>,
    pub targets: &'a [ContainerTarget],
    pub source: ResourceSource,
}

impl InstancePlan<'_> {
    /// The resources for `container`, `None` when konsumer leaves it alone.
    pub fn target_for(&self, container: &str) -> Option<&ContainerTarget> {
        self.targets
            .iter()
            .find(|t| t.name == container)
            .or_else(|| self.targets.iter().find(|t| t.name == ALL_CONTAINERS))
    }
}

impl ConsumerSettings {
    pub fn from_consumer(consumer: &Consumer) -> Result<Self, SettingsError> {
        let key = consumer.key();
        let fail = |reason: String| SettingsError {
            key: key.clone(),
            reason,
        };
        let spec = &consumer.spec;
        let layout =
            layout_of(spec.num_partitions, spec.num_partitions_per_instance).map_err(fail)?;
        let partition_env_key = match spec.partition_env_key.as_deref() {
            None | Some("") => env::DEFAULT_PARTITION.to_string(),
            Some(k) => k.to_string(),
        };
        if [
            env::INSTANCE,
            env::NUM_INSTANCES,
            env::NUM_PARTITIONS,
            env::GOMAXPROCS,
            env::GOMEMLIMIT,
        ]
        .contains(&partition_env_key.as_str())
        {
            return Err(fail(format!(
                "spec.partitionEnvKey {partition_env_key} collides with an env var konsumer sets"
            )));
        }
        let fallback = fallback_targets(consumer).map_err(fail)?;
        let recommendations = recommendations(consumer, &layout);
        let name = consumer.metadata.name.clone().unwrap_or_default();
        let base_name = match spec.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => name.clone(),
        };
        Ok(ConsumerSettings {
            namespace: consumer.metadata.namespace.clone().unwrap_or_default(),
            name,
            base_name,
            layout,
            partition_env_key,
            fallback: shared(fallback.into()),
            recommendations,
        })
    }

    pub fn instances(&self) -> u32 {
        self.layout.instances()
    }

    pub fn num_partitions(&self) -> u32 {
        self.layout.partitions()
    }

    /// The plan of instance `id`, `None` when out of range.
    pub fn instance(&self, id: u32) -> Option<InstancePlan<'_>> {
        let partitions = self.layout.bucket(id)?;
        let (targets, source) = match self.recommendations.get(id as usize) {
            Some(Some(rec)) => (&rec[..], ResourceSource::Recommendation),
            _ => (&self.fallback[..], ResourceSource::Fallback),
        };
        Some(InstancePlan {
            id,
            partitions,
            targets,
            source,
        })
    }

    pub fn fallback(&self) -> &[ContainerTarget] {
        &self.fallback
    }

    /// Whether konsumer sets the resources of `container` in any instance
    /// (`init`: an init container, which a wildcard does not cover).
    pub fn manages_resources(&self, container: &str, init: bool) -> bool {
        let named =
            |t: &ContainerTarget| t.name == container || (!init && t.name == ALL_CONTAINERS);
        self.fallback.iter().any(named)
            || self
                .recommendations
                .iter()
                .flatten()
                .any(|targets| targets.iter().any(named))
    }
}

/// The policy's fallback (`fallbackStrategy` min → `minAllowed`, max → `maxAllowed`,
/// as requests and limits alike) for every container policy not switched `Off`.
pub fn fallback_targets(consumer: &Consumer) -> Result<Vec<ContainerTarget>, String> {
    let use_max = consumer
        .spec
        .autoscaler
        .as_ref()
        .and_then(|a| a.prometheus.as_ref())
        .and_then(|p| p.fallback_strategy.as_deref())
        .is_some_and(|s| s.eq_ignore_ascii_case("max"));
    let mut out = Vec::new();
    let policies = consumer.spec.container_policies();
    for (i, policy) in policies.iter().enumerate() {
        let Some(name) = policy.container_name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        if policy.is_off() {
            continue;
        }
        let (field, list) = if use_max {
            ("maxAllowed", policy.max_allowed.as_ref())
        } else {
            ("minAllowed", policy.min_allowed.as_ref())
        };
        let bound = Resources::from_list(list)
            .map_err(|e| format!("spec.resourcePolicy.containerPolicies[{i}].{field}.{e}"))?;
        if bound.is_empty() {
            continue;
        }
        out.push(ContainerTarget {
            name: name.to_string(),
            requests: bound,
            limits: bound,
        });
    }
    Ok(out)
}

impl Content for [ContainerTarget] {
    fn hash_content(&self, h: &mut impl Hasher) {
        self.hash(h);
    }

    fn same_content(&self, other: &Self) -> bool {
        self == other
    }
}

/// The one copy of these targets that every cached Consumer's settings hold
/// ([`crate::api::shared`]): a fleet's instances get the same few.
pub(crate) fn shared(mut targets: Arc<[ContainerTarget]>) -> Arc<[ContainerTarget]> {
    static POOL: LazyLock<Pool<[ContainerTarget]>> = LazyLock::new(Pool::default);
    POOL.share(&mut targets);
    targets
}

/// Status recommendations that still match the layout; anything stale or
/// unreadable falls back to the policy for that instance only.
fn recommendations(consumer: &Consumer, layout: &Layout) -> Vec<Option<Arc<[ContainerTarget]>>> {
    let mut out: Vec<Option<Arc<[ContainerTarget]>>> = vec![None; layout.instances() as usize];
    let instances = consumer
        .status
        .as_ref()
        .and_then(|s| s.instances.as_deref())
        .unwrap_or_default();
    for inst in instances {
        let Ok(id) = u32::try_from(inst.id) else {
            continue;
        };
        let Some(bucket) = layout.bucket(id) else {
            continue;
        };
        let fits = inst.partitions.len() == bucket.len()
            && inst
                .partitions
                .iter()
                .zip(bucket)
                .all(|(a, b)| *a as i64 == b as i64);
        if !fits || inst.resources.is_empty() {
            continue;
        }
        let targets: Result<Vec<_>, _> = inst
            .resources
            .iter()
            .map(ContainerTarget::from_status)
            .collect();
        if let Ok(targets) = targets {
            out[id as usize] = Some(shared(targets.into()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConsumerStatus, InstanceStatus};

    use crate::api::test_orders as orders;

    fn q(s: &str) -> Milli {
        Milli::parse(s).unwrap()
    }

    #[test]
    fn orders_resolves_to_four_instances_with_min_fallback() {
        let s = ConsumerSettings::from_consumer(&orders()).unwrap();
        assert_eq!(s.instances(), 4);
        assert_eq!(s.partition_env_key, "KAFKA_PARTITIONS");
        let plan = s.instance(2).unwrap();
        assert_eq!(plan.partitions, 6..8);
        assert_eq!(plan.source, ResourceSource::Fallback);
        let consumer = plan.target_for("consumer").unwrap();
        assert_eq!(consumer.requests.cpu, Some(q("100m")));
        assert_eq!(consumer.limits.memory, Some(q("128Mi")));
        assert!(plan.target_for("metrics-exporter").is_none());
        assert!(s.instance(4).is_none());
    }

    #[test]
    fn max_strategy_falls_back_to_max_allowed() {
        let mut c = orders();
        let p = c
            .spec
            .autoscaler
            .as_mut()
            .map(crate::api::Shared::make_mut)
            .unwrap()
            .prometheus
            .as_mut()
            .unwrap();
        p.fallback_strategy = Some("max".into());
        let s = ConsumerSettings::from_consumer(&c).unwrap();
        let t = s
            .instance(0)
            .unwrap()
            .target_for("consumer")
            .unwrap()
            .clone();
        assert_eq!(t.requests.cpu, Some(q("4")));
        assert_eq!(t.limits.memory, Some(q("4Gi")));
    }

    #[test]
    fn off_mode_containers_keep_their_resources() {
        let mut c = orders();
        let policies = c
            .spec
            .resource_policy
            .as_mut()
            .unwrap()
            .container_policies
            .as_mut();
        policies.unwrap()[1].mode = Some("Off".into());
        let s = ConsumerSettings::from_consumer(&c).unwrap();
        assert!(s.instance(0).unwrap().target_for("log-shipper").is_none());
    }

    fn with_recommendation(partitions: Vec<i32>) -> Consumer {
        let mut c = orders();
        let mut requests = ResourceList::new();
        requests.insert("cpu".into(), Quantity("1300m".into()));
        c.status = Some(ConsumerStatus {
            instances: Some(vec![InstanceStatus {
                id: 1,
                partitions,
                resources: vec![ContainerResources {
                    container_name: "consumer".into(),
                    requests: requests.clone(),
                    limits: requests,
                }],
                ..InstanceStatus::default()
            }]),
            ..ConsumerStatus::default()
        });
        c
    }

    #[test]
    fn status_recommendation_wins_when_partitions_match() {
        let s = ConsumerSettings::from_consumer(&with_recommendation(vec![3, 4, 5])).unwrap();
        let plan = s.instance(1).unwrap();
        assert_eq!(plan.source, ResourceSource::Recommendation);
        assert_eq!(
            plan.target_for("consumer").unwrap().requests.cpu,
            Some(q("1300m"))
        );
        assert_eq!(s.instance(0).unwrap().source, ResourceSource::Fallback);
    }

    #[test]
    fn stale_recommendation_for_other_partitions_is_ignored() {
        let s = ConsumerSettings::from_consumer(&with_recommendation(vec![3, 4])).unwrap();
        assert_eq!(s.instance(1).unwrap().source, ResourceSource::Fallback);
    }

    #[test]
    fn unusable_consumers_are_errors() {
        let mut c = orders();
        c.spec.num_partitions = Some(0);
        assert!(ConsumerSettings::from_consumer(&c).is_err());
        c.spec.num_partitions = Some(i32::MAX);
        let err = ConsumerSettings::from_consumer(&c).unwrap_err();
        assert!(err.reason.contains("at most 10000 partitions"), "{err}");
        let mut c = orders();
        c.spec.num_partitions_per_instance = Some(-1);
        assert!(ConsumerSettings::from_consumer(&c).is_err());
        let mut c = orders();
        c.spec.partition_env_key = Some("GOMAXPROCS".into());
        assert!(ConsumerSettings::from_consumer(&c).is_err());
        let mut c = orders();
        let policies = c
            .spec
            .resource_policy
            .as_mut()
            .unwrap()
            .container_policies
            .as_mut();
        policies.unwrap()[0]
            .min_allowed
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("lots".into()));
        let err = ConsumerSettings::from_consumer(&c).unwrap_err();
        assert!(
            err.reason.contains("containerPolicies[0].minAllowed.cpu"),
            "{err}"
        );
    }
}
