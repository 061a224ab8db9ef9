//! `Consumer.status`: Konsumerator's counters and last metrics, plus konsumer's
//! per-instance recommendation, which every webhook replica reads.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resource_list::ResourceList;
use super::shared::{Content, Pool, Shared};
use super::sync_state::SyncState;

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
    pub last_sync_state: Option<SyncState>,
    /// The recommendation per instance, injected into new Pods and Deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceStatus>>,
    // Shared (no doc comment: it would be the CRD's description): a fleet's
    // Consumers mostly hold equal conditions (the same outage, the same pass),
    // which the cache keeps once (`ConsumerStatus::share_conditions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Shared<Vec<Condition>>>,
    /// The recent scaling events, oldest first, each with its sequence number:
    /// recorded in the same write as the decision that caused it, delivered to
    /// ScalingSubscriptions from here (bounded, see `scaling_events::journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Vec<JournalEntry>>,
}

/// Bounds on the JSON (serde_json, compact) of the status' parts, counted
/// without writing them: the status' size guard runs on every status konsumer
/// writes, and writing the status out only to count its bytes cost a share of
/// each pass. Each part names every field of its type, so a new field does not
/// compile until it is counted.
mod json_bound {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::{ConsumerStatus, ContainerResources, InstanceStatus, JournalEntry, ResourceList};

    /// `"name":` and the comma after the value.
    pub(super) fn field(name: &str, value: usize) -> usize {
        name.len() + 4 + value
    }

    pub(super) fn optional<T>(name: &str, value: &Option<T>, len: impl Fn(&T) -> usize) -> usize {
        value.as_ref().map_or(0, |v| field(name, len(v)))
    }

    /// A string, every byte escaped at its longest (`\u001f`).
    pub(super) fn text(s: &str) -> usize {
        2 + 6 * s.len()
    }

    /// `-2147483648`
    pub(super) const I32: usize = 11;
    /// `-9223372036854775808`
    pub(super) const I64: usize = 20;
    /// `"%Y-%m-%dT%H:%M:%SZ"`: years from -9999 to 9999.
    pub(super) const TIME: usize = 2 + "-9999-12-31T23:59:59Z".len();

    pub(super) fn time(_: &Time) -> usize {
        TIME
    }

    fn quantity(q: &Quantity) -> usize {
        text(&q.0)
    }

    /// Braces or brackets, and the items with a comma after each.
    fn list<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        2 + items.iter().map(|i| len(i) + 1).sum::<usize>()
    }

    fn resource_list(l: &ResourceList) -> usize {
        2 + l
            .iter()
            .map(|(k, v)| text(k) + 1 + quantity(v) + 1)
            .sum::<usize>()
    }

    fn container(c: &ContainerResources) -> usize {
        let ContainerResources {
            container_name,
            requests,
            limits,
        } = c;
        2 + field("containerName", text(container_name))
            + field("requests", resource_list(requests))
            + field("limits", resource_list(limits))
    }

    fn containers(c: &[ContainerResources]) -> usize {
        list(c, container)
    }

    pub(super) fn instance(i: &InstanceStatus) -> usize {
        let InstanceStatus {
            id: _,
            partitions,
            state: _,
            since,
            resources,
            pending,
            saturation,
        } = i;
        2 + field("id", I32)
            + field("partitions", list(partitions, |_| I32))
            + field("state", text("PENDING_SCALE_DOWN"))
            + optional("since", since, time)
            + field("resources", containers(resources))
            + optional("pending", pending, |p| containers(p))
            + optional("saturation", saturation, quantity)
    }

    pub(super) fn condition(c: &Condition) -> usize {
        let Condition {
            last_transition_time,
            message,
            observed_generation,
            reason,
            status,
            type_,
        } = c;
        2 + field("lastTransitionTime", time(last_transition_time))
            + field("message", text(message))
            + optional("observedGeneration", observed_generation, |_| I64)
            + field("reason", text(reason))
            + field("status", text(status))
            + field("type", text(type_))
    }

    pub(super) fn entry(e: &JournalEntry) -> usize {
        let JournalEntry {
            sequence: _,
            type_,
            time: at,
            instance,
            data,
        } = e;
        2 + field("sequence", I64)
            + field("type", text(type_))
            + field("time", time(at))
            + optional("instance", instance, |_| I32)
            + field("data", data.as_str().len())
    }

    pub(super) fn status(s: &ConsumerStatus) -> usize {
        let ConsumerStatus {
            observed_generation,
            expected,
            running,
            paused,
            lagging,
            missing,
            unavailable,
            outdated,
            redundant,
            last_sync_time,
            last_sync_state,
            instances,
            conditions,
            journal,
        } = s;
        let counters = [
            ("expected", expected),
            ("running", running),
            ("paused", paused),
            ("lagging", lagging),
            ("missing", missing),
            ("unavailable", unavailable),
            ("outdated", outdated),
            ("redundant", redundant),
        ]
        .iter()
        .map(|(name, v)| optional(name, v, |_| I32))
        .sum::<usize>();
        2 + optional("observedGeneration", observed_generation, |_| I64)
            + counters
            + optional("lastSyncTime", last_sync_time, time)
            + optional("lastSyncState", last_sync_state, |m| m.json_len())
            + optional("instances", instances, |i| list(i, instance))
            + optional("conditions", conditions, |c| list(c, condition))
            + optional("journal", journal, |j| list(j, entry))
    }
}

/// Conditions compared by content, for [`Pool`]ing.
impl Content for Vec<Condition> {
    fn hash_content(&self, h: &mut impl std::hash::Hasher) {
        for c in self {
            let Condition {
                last_transition_time,
                message,
                observed_generation,
                reason,
                status,
                type_,
            } = c;
            for text in [type_, status, reason, message] {
                h.write(text.as_bytes());
                h.write_u8(0xff);
            }
            h.write_i64(last_transition_time.0.as_second());
            h.write_i32(last_transition_time.0.subsec_nanosecond());
            h.write_i64(observed_generation.unwrap_or(i64::MIN));
        }
    }

    fn same_content(&self, other: &Self) -> bool {
        self == other
    }
}

impl ConsumerStatus {
    /// Replaces the conditions with the pool's copy of equal ones. At 10,000
    /// Consumers whose Prometheus is down, each held the same three conditions
    /// (6.6 MB of the heap, in their own strings).
    pub fn share_conditions(&mut self, pool: &Pool<Vec<Condition>>) {
        if let Some(c) = &mut self.conditions {
            c.share(pool);
        }
    }

    /// At least the length of its JSON (`serde_json::to_vec(self)`), counted
    /// without writing it: exact for `lastSyncState`, every string as if each
    /// of its bytes were escaped, every number and time at its longest.
    pub fn json_len_bound(&self) -> usize {
        json_bound::status(self)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 .:/-]{0,12}",
            any::<String>().prop_map(|s| s.chars().take(12).collect()),
            "[\"\\\\\\x00-\\x1f\\x7fé]{0,6}",
        ]
    }

    fn time() -> impl Strategy<Value = Time> {
        // jiff's whole range, years -9999 to 9999.
        (-377_705_116_800i64..=253_402_207_199).prop_map(|s| {
            Time(jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
        })
    }

    fn quantity() -> impl Strategy<Value = Quantity> {
        text().prop_map(Quantity)
    }

    fn resources() -> impl Strategy<Value = ResourceList> {
        proptest::collection::vec((text(), quantity()), 0..3).prop_map(|l| l.into_iter().collect())
    }

    fn containers() -> impl Strategy<Value = Vec<ContainerResources>> {
        proptest::collection::vec(
            (text(), resources(), resources()).prop_map(|(container_name, requests, limits)| {
                ContainerResources {
                    container_name,
                    requests,
                    limits,
                }
            }),
            0..3,
        )
    }

    fn state() -> impl Strategy<Value = ScalingState> {
        proptest::sample::select(ScalingState::ALL.to_vec())
    }

    fn instance() -> impl Strategy<Value = InstanceStatus> {
        (
            any::<i32>(),
            proptest::collection::vec(any::<i32>(), 0..4),
            state(),
            proptest::option::of(time()),
            containers(),
            proptest::option::of(containers()),
            proptest::option::of(quantity()),
        )
            .prop_map(
                |(id, partitions, state, since, resources, pending, saturation)| InstanceStatus {
                    id,
                    partitions,
                    state,
                    since,
                    resources,
                    pending,
                    saturation,
                },
            )
    }

    fn condition() -> impl Strategy<Value = Condition> {
        (
            time(),
            text(),
            proptest::option::of(any::<i64>()),
            text(),
            text(),
            text(),
        )
            .prop_map(
                |(last_transition_time, message, observed_generation, reason, status, type_)| {
                    Condition {
                        last_transition_time,
                        message,
                        observed_generation,
                        reason,
                        status,
                        type_,
                    }
                },
            )
    }

    fn data() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            text().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn entry() -> impl Strategy<Value = JournalEntry> {
        (
            any::<i64>(),
            text(),
            time(),
            proptest::option::of(any::<i32>()),
            data(),
        )
            .prop_map(|(sequence, type_, time, instance, data)| JournalEntry {
                sequence,
                type_,
                time,
                instance,
                data: EventData::new(&data),
            })
    }

    fn sync_state() -> impl Strategy<Value = SyncState> {
        proptest::collection::vec(
            (
                prop_oneof![(0u32..300).prop_map(|p| p.to_string()), text()],
                any::<(i64, i64, i64)>(),
            ),
            0..12,
        )
        .prop_map(|entries| {
            entries
                .into_iter()
                .map(|(k, (p, c, b))| {
                    (
                        k,
                        PartitionState {
                            production_rate: p,
                            consumption_rate: c,
                            messages_behind: b,
                        },
                    )
                })
                .collect()
        })
    }

    fn status() -> impl Strategy<Value = ConsumerStatus> {
        (
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(proptest::option::of(any::<i32>()), 8),
            proptest::option::of(time()),
            proptest::option::of(sync_state()),
            proptest::option::of(proptest::collection::vec(instance(), 0..4)),
            proptest::option::of(proptest::collection::vec(condition(), 0..3)),
            proptest::option::of(proptest::collection::vec(entry(), 0..3)),
        )
            .prop_map(
                |(
                    observed_generation,
                    c,
                    last_sync_time,
                    last_sync_state,
                    instances,
                    conditions,
                    journal,
                )| {
                    ConsumerStatus {
                        observed_generation,
                        expected: c[0],
                        running: c[1],
                        paused: c[2],
                        lagging: c[3],
                        missing: c[4],
                        unavailable: c[5],
                        outdated: c[6],
                        redundant: c[7],
                        last_sync_time,
                        last_sync_state,
                        instances,
                        conditions: conditions.map(Shared::new),
                        journal,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn the_size_bound_is_never_below_the_json(status in status()) {
            let written = serde_json::to_vec(&status).unwrap().len();
            prop_assert!(status.json_len_bound() >= written, "{} < {written}", status.json_len_bound());
        }
    }

    #[test]
    fn the_size_bound_is_never_below_the_json_at_the_extremes() {
        let t = Time(jiff::Timestamp::MIN);
        let q = Quantity("\u{1}".repeat(3));
        let resources = ResourceList::from([("\"".repeat(2), q.clone())]);
        let containers = vec![ContainerResources {
            container_name: "\u{1f}".into(),
            requests: resources.clone(),
            limits: resources,
        }];
        let status = ConsumerStatus {
            observed_generation: Some(i64::MIN),
            expected: Some(i32::MIN),
            running: Some(i32::MIN),
            paused: Some(i32::MIN),
            lagging: Some(i32::MIN),
            missing: Some(i32::MIN),
            unavailable: Some(i32::MIN),
            outdated: Some(i32::MIN),
            redundant: Some(i32::MIN),
            last_sync_time: Some(t.clone()),
            last_sync_state: Some(
                [(
                    "\u{0}".to_string(),
                    PartitionState {
                        production_rate: i64::MIN,
                        consumption_rate: i64::MIN,
                        messages_behind: i64::MIN,
                    },
                )]
                .into_iter()
                .collect(),
            ),
            instances: Some(vec![InstanceStatus {
                id: i32::MIN,
                partitions: vec![i32::MIN; 3],
                state: ScalingState::PendingScaleDown,
                since: Some(t.clone()),
                resources: containers.clone(),
                pending: Some(containers),
                saturation: Some(q),
            }]),
            conditions: Some(
                vec![Condition {
                    last_transition_time: t.clone(),
                    message: "\u{1}".into(),
                    observed_generation: Some(i64::MIN),
                    reason: "\u{1}".into(),
                    status: "\u{1}".into(),
                    type_: "\u{1}".into(),
                }]
                .into(),
            ),
            journal: Some(vec![JournalEntry {
                sequence: i64::MIN,
                type_: "\u{1}".into(),
                time: t,
                instance: Some(i32::MIN),
                data: EventData::new(&json!({"\u{1}": [f64::MIN, i64::MIN, u64::MAX, "\u{1}"]})),
            }]),
        };
        let written = serde_json::to_vec(&status).unwrap().len();
        assert!(status.json_len_bound() >= written);
        // Every field counted: the bound of a status with every part is not slack
        // beyond what escaping every byte allows.
        assert!(
            status.json_len_bound() < 6 * written,
            "{} vs {written}",
            status.json_len_bound()
        );
    }
}
