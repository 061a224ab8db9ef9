//! `Consumer.status`: Konsumerator's counters and last metrics, plus konsumer's
//! per-instance recommendation, which every webhook replica reads.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resource_list::ResourceList;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of instances the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<i32>,
    /// Instances with an available replica (a Pod running, a Deployment with
    /// `availableReplicas` ≥ 1) that are not paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<i32>,
    /// Instances whose workloads are all paused: annotated
    /// `konsumerator.lwolf.org/disable-autoscaler`, or scaled to 0 replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<i32>,
    /// Instances whose largest partition lag reached `tolerableLag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lagging: Option<i32>,
    /// Instances without any workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<i32>,
    /// Instances with a workload that is neither paused nor available (Pods
    /// Pending or crash-looping, a Recreate rollout in progress).
    /// `expected = running + paused + missing + unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<i32>,
    /// Managed Deployments konsumer would roll now; other Deployments the webhook
    /// would change now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outdated: Option<i32>,
    /// Workloads that name no valid instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundant: Option<i32>,
    /// When the metrics in `lastSyncState` were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Last good metrics, keyed by partition number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_state: Option<BTreeMap<String, PartitionState>>,
    /// The recommendation per instance, injected into new Pods and Deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The recent scaling events, oldest first, each with its sequence number:
    /// recorded in the same write as the decision that caused it, delivered to
    /// ScalingSubscriptions from here (bounded, see `scaling_events::journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Vec<JournalEntry>>,
}

/// One scaling event of a Consumer, as delivered (its CloudEvent is built from it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// Per-Consumer, increasing by one per event.
    pub sequence: i64,
    /// The CloudEvents type (`dev.konsumer.instance.scaled.v1`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// When the decision was made.
    pub time: Time,
    /// The instance, for instance events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<i32>,
    /// The event's `data`, less what the Consumer's metadata says (namespace,
    /// name, uid) and the sequence.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::opaque_data")]
    pub data: EventData,
}

/// A journal entry's data, kept as compact JSON text: a full journal of 64
/// entries per Consumer, for 1,000 Consumers, costs its serialized size in memory
/// rather than ~10× that as a tree of maps. Parsed when an event is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct EventData(Box<str>);

impl EventData {
    pub fn new(value: &serde_json::Value) -> Self {
        EventData(value.to_string().into_boxed_str())
    }

    /// The data as a JSON value (an empty object if the text is not JSON).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_else(|_| serde_json::json!({}))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EventData {
    fn default() -> Self {
        EventData("{}".into())
    }
}

impl std::fmt::Debug for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(EventData::new(&value))
    }
}

/// Konsumerator's `InstanceState` (it is per partition despite its name).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionState {
    pub production_rate: i64,
    pub consumption_rate: i64,
    /// Konsumerator's spelling, kept for compatibility.
    #[serde(rename = "messageBehind")]
    pub messages_behind: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScalingState {
    #[default]
    Running,
    PendingScaleUp,
    PendingScaleDown,
    Saturated,
}

impl ScalingState {
    pub const ALL: [ScalingState; 4] = [
        ScalingState::Running,
        ScalingState::PendingScaleUp,
        ScalingState::PendingScaleDown,
        ScalingState::Saturated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScalingState::Running => "RUNNING",
            ScalingState::PendingScaleUp => "PENDING_SCALE_UP",
            ScalingState::PendingScaleDown => "PENDING_SCALE_DOWN",
            ScalingState::Saturated => "SATURATED",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance ordinal.
    pub id: i32,
    /// Partitions the recommendation was made for.
    #[serde(default)]
    pub partitions: Vec<i32>,
    #[serde(default)]
    pub state: ScalingState,
    /// When the instance entered `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Recommended resources per container.
    #[serde(default)]
    pub resources: Vec<ContainerResources>,
    /// The prediction waiting out its pending period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<ContainerResources>>,
    /// CPU the caps (`maxAllowed`, `globalPolicy`) cut off the prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_quantity")]
    pub saturation: Option<Quantity>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResources {
    pub container_name: String,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    #[schemars(schema_with = "super::schema::resource_list")]
    pub requests: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    #[schemars(schema_with = "super::schema::resource_list")]
    pub limits: ResourceList,
}
