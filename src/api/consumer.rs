//! The `Consumer` custom resource, field for field Konsumerator's
//! (`konsumerator.lwolf.org`), so existing objects keep working unchanged.
//!
//! Every field is optional in Rust even where the CRD schema requires it: the
//! validator must be able to read a broken object and say everything that is wrong
//! with it, and the webhook must still serve Consumers that predate konsumer.

use std::hash::Hasher;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resource_list::ResourceList;
use super::schema;
use super::shared::{Content, Pool, Shared};
use super::status::ConsumerStatus;
use super::template::DeploymentTemplate;

/// Desired state of a partitioned Kafka consumer.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "konsumerator.lwolf.org",
    doc = "A partitioned Kafka consumer: its partitions, autoscaler and resource bounds",
    version = "v1",
    kind = "Consumer",
    plural = "consumers",
    singular = "consumer",
    namespaced,
    status = "ConsumerStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Expected","type":"integer","jsonPath":".status.expected","description":"Number of instances supposed to run"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Paused","type":"integer","jsonPath":".status.paused"}"#,
    printcolumn = r#"{"name":"Missing","type":"integer","jsonPath":".status.missing"}"#,
    printcolumn = r#"{"name":"Lagging","type":"integer","jsonPath":".status.lagging"}"#,
    printcolumn = r#"{"name":"Outdated","type":"integer","jsonPath":".status.outdated"}"#,
    printcolumn = r#"{"name":"Unavailable","type":"integer","jsonPath":".status.unavailable","priority":1,"description":"Instances with a workload that is neither paused nor available"}"#,
    printcolumn = r#"{"name":"Metrics","type":"string","jsonPath":".status.conditions[?(@.type==\"MetricsAvailable\")].status","description":"Whether konsumer reads this Consumer's metrics (the MetricsAvailable condition)"}"#,
    printcolumn = r#"{"name":"Autoscaler","type":"string","jsonPath":".spec.autoscaler.mode","description":"Autoscaler in use"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Number of partitions of the topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub num_partitions: Option<i32>,
    /// Partitions per instance (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_partitions_per_instance: Option<i32>,
    /// Base name of the instances (Deployments are named `<name>-<instance>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub name: Option<String>,
    /// Namespace the instances run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub namespace: Option<String>,
    /// Autoscaler configuration.
    // Shared: the largest part of a spec (its queries), copied by no clone of
    // the spec (each status write made one) and kept once for the cached
    // Consumers that have the same one ([`Consumer::share_parts`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub autoscaler: Option<Shared<AutoscalerSpec>>,
    /// Name of the env var that receives the partitions (default `KONSUMERATOR_PARTITION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_env_key: Option<String>,
    /// An `apps/v1` DeploymentSpec, kept opaque; only container names are read.
    // Held as its JSON text (`DeploymentTemplate`), parsed where it is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    #[schemars(schema_with = "schema::opaque_object")]
    pub deployment_template: Option<DeploymentTemplate>,
    /// Bounds of the recommended resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub resource_policy: Option<ResourcePolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    /// `prometheus`, or empty for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub mode: Option<String>,
    /// How long a scale-up must stay wanted before it is recommended (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_scale_up_duration: Option<String>,
    /// How long a scale-down must stay wanted before it is recommended (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_scale_down_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusAutoscalerSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusAutoscalerSpec {
    /// Prometheus base URLs, all tried; the first answer wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub address: Option<Vec<String>>,
    /// Minimum time between two metric refreshes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub min_sync_period: Option<String>,
    /// Messages behind, per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub offset: Option<QuerySpec>,
    /// Production rate (messages/s), per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub production: Option<QuerySpec>,
    /// Consumption rate (messages/s), per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub consumption: Option<QuerySpec>,
    /// `min` or `max`: what to inject before there is a recommendation (default min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<String>,
    /// Messages per second one core consumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub rate_per_core: Option<i64>,
    /// Memory per core of CPU limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, schema_with = "schema::quantity")]
    pub ram_per_core: Option<Quantity>,
    /// CPU request step (default 100m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_quantity")]
    pub cpu_increment: Option<Quantity>,
    /// Lag (time behind) that counts as lagging.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub tolerable_lag: Option<String>,
    /// Lag at which an instance gets its `maxAllowed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub critical_lag: Option<String>,
    /// Time in which a lagging instance should catch up.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub recovery_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuerySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub query: Option<String>,
    /// Label of the result series that holds the partition number.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub partition_label: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_policy: Option<GlobalResourcePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_policies: Option<Vec<ContainerResourcePolicy>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalResourcePolicy {
    /// Cap on the sum of requests over all instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub max_allowed: Option<ResourceList>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResourcePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// `Auto` (default) or `Off` (the container keeps its own resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub min_allowed: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_list")]
    pub max_allowed: Option<ResourceList>,
}

impl ContainerResourcePolicy {
    /// `mode: Off`: the container keeps its own resources.
    pub fn is_off(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("off"))
    }
}

/// Hashes the parts that tell specs apart (equal specs hash alike).
impl Content for AutoscalerSpec {
    fn hash_content(&self, h: &mut impl Hasher) {
        let mut text = |s: Option<&str>| {
            h.write(s.unwrap_or_default().as_bytes());
            h.write_u8(0xff);
        };
        text(self.mode.as_deref());
        if let Some(p) = &self.prometheus {
            for q in [&p.offset, &p.production, &p.consumption] {
                text(q.as_ref().and_then(|q| q.query.as_deref()));
            }
            for a in p.address.iter().flatten() {
                text(Some(a));
            }
        }
    }

    fn same_content(&self, other: &Self) -> bool {
        self == other
    }
}

impl ConsumerSpec {
    /// `resourcePolicy.containerPolicies`, empty when unset.
    pub fn container_policies(&self) -> &[ContainerResourcePolicy] {
        self.resource_policy
            .as_ref()
            .and_then(|p| p.container_policies.as_deref())
            .unwrap_or_default()
    }
}

impl Consumer {
    /// Makes every resource list this Consumer holds (its policy's bounds, its
    /// status' recommendations) and its Deployment template the shared copy of
    /// their content ([`super::shared`]): for the Consumers that are kept.
    pub fn share_parts(&mut self) {
        static AUTOSCALERS: LazyLock<Pool<AutoscalerSpec>> = LazyLock::new(Pool::default);
        if let Some(template) = &mut self.spec.deployment_template {
            template.share();
        }
        if let Some(autoscaler) = &mut self.spec.autoscaler {
            autoscaler.share(&AUTOSCALERS);
        }
        if let Some(policy) = &mut self.spec.resource_policy {
            let global = policy.global_policy.iter_mut().map(|g| &mut g.max_allowed);
            let containers = policy
                .container_policies
                .iter_mut()
                .flatten()
                .flat_map(|c| [&mut c.min_allowed, &mut c.max_allowed]);
            global
                .chain(containers)
                .flatten()
                .for_each(ResourceList::share);
        }
        let instances = self
            .status
            .iter_mut()
            .flat_map(|s| s.instances.iter_mut().flatten());
        for instance in instances {
            let pending = instance.pending.iter_mut().flatten();
            for c in instance.resources.iter_mut().chain(pending) {
                c.requests.share();
                c.limits.share();
            }
        }
    }

    /// `namespace/name`, for messages and logs.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}
