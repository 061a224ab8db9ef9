//! The Consumer API (Konsumerator's, compatible) and the names konsumer shares with
//! Konsumerator: labels, annotations and env vars.

pub mod consumer;
pub mod crd;
pub mod duration;
pub mod guest;
pub mod quantity;
pub mod resource_list;
mod schema;
pub mod shared;
pub mod status;
pub mod subscription;
pub mod sync_state;
pub mod template;

/// The `orders` Consumer of the fixtures, for unit tests.
#[cfg(test)]
pub(crate) fn test_orders() -> Consumer {
    serde_saphyr::from_str(include_str!("../tests/fixtures/consumer-orders.yaml"))
        .unwrap_or_else(|e| panic!("tests/fixtures/consumer-orders.yaml: {e}"))
}

pub use consumer::{
    AutoscalerSpec, Consumer, ConsumerSpec, ContainerResourcePolicy, GlobalResourcePolicy,
    PrometheusAutoscalerSpec, QuerySpec, ResourcePolicy,
};
pub use resource_list::ResourceList;
pub use shared::Shared;
pub use status::{
    ConsumerStatus, ContainerResources, EventData, InstanceStatus, JournalEntry, PartitionState,
    ScalingState,
};
pub use subscription::{ScalingSubscription, SecretKeyRef, SubscriptionSpec, SubscriptionStatus};
pub use sync_state::SyncState;
pub use template::DeploymentTemplate;

/// API group of the Consumer resource.
pub const GROUP: &str = "konsumerator.lwolf.org";
/// Storage version.
pub const VERSION_V1: &str = "v1";
/// Served, deprecated version (same schema).
pub const VERSION_V1ALPHA1: &str = "v1alpha1";

/// Labels and annotations (Konsumerator's keys, plus the Kubernetes ones konsumer reads).
pub mod keys {
    /// Label that ties a Pod or Deployment to its Consumer (`metadata.name`).
    pub const CONSUMER: &str = "konsumerator.lwolf.org/consumer";
    /// Label or annotation with the instance ordinal.
    pub const INSTANCE: &str = "konsumerator.lwolf.org/instance";
    /// Konsumerator's instance annotation; konsumer reads and writes it.
    pub const CONSUMER_ID: &str = "konsumerator.lwolf.org/consumer-id";
    /// Konsumerator's partition list annotation (`0,1,2`); written by konsumer.
    pub const PARTITION: &str = "konsumerator.lwolf.org/partition";
    /// On a Consumer: freeze its recommendations. On a managed Deployment: leave it
    /// alone (it counts as paused).
    pub const DISABLE_AUTOSCALER: &str = "konsumerator.lwolf.org/disable-autoscaler";
    /// Guest mode: marks a ConfigMap whose single data entry is a ConsumerSpec.
    pub const MANAGED: &str = "konsumerator.lwolf.org/managed";
    /// On a Consumer (or guest ConfigMap): `"false"` opts it out of managed
    /// Deployments, `"true"` opts it in even beside workloads konsumer did not make.
    pub const MANAGE_DEPLOYMENTS: &str = "konsumer.dev/manage-deployments";
    /// Konsumerator's labels on a managed Deployment: `spec.name`, the Consumer's
    /// `metadata.name`, and the partitions as a range (`0-2`).
    pub const APP_LABEL: &str = "app";
    pub const CONTROLLER_LABEL: &str = "controller";
    pub const PARTITIONS_LABEL: &str = "partitions";
    /// StatefulSet pod ordinal (Kubernetes 1.28+).
    pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";
    /// Indexed Job completion index.
    pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
}

/// Env var names injected into every container.
pub mod env {
    pub const DEFAULT_PARTITION: &str = "KONSUMERATOR_PARTITION";
    pub const INSTANCE: &str = "KONSUMERATOR_INSTANCE";
    pub const NUM_INSTANCES: &str = "KONSUMERATOR_NUM_INSTANCES";
    pub const NUM_PARTITIONS: &str = "KONSUMERATOR_NUM_PARTITIONS";
    pub const GOMAXPROCS: &str = "GOMAXPROCS";
    pub const GOMEMLIMIT: &str = "GOMEMLIMIT";
}
