//! The per-Consumer event journal (pure): events are appended to the status
//! written in the same write as the decision that caused them (a decision that was
//! not recorded was not made; one that was recorded is delivered), each with the
//! next sequence number; the journal is trimmed to a bounded size; a subscriber's
//! cursor (the last sequence it acknowledged) says what to send next.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Map, Value, json};

use super::types::EventType;
use crate::api::{ConsumerStatus, EventData, InstanceStatus, JournalEntry, PartitionState};
use crate::manage::Write;
use crate::scaling::Transition;
use crate::scaling::machine::{Direction, Event};
use crate::scaling::status::METRICS_AVAILABLE;

/// Entries kept per Consumer.
pub const MAX_ENTRIES: usize = 64;
/// Serialized size kept per Consumer, so that the whole status stays far below
/// etcd's 1.5 MiB object limit.
pub const MAX_BYTES: usize = 256 * 1024;

/// Entries a store that keeps whole journals elsewhere (local mode: its
/// database) holds in memory per Consumer: the head, and the events a subscriber
/// that keeps up reads, without a read from the database.
pub const RECENT: usize = 4;

/// The newest [`RECENT`] entries of `journal`.
pub fn recent(journal: &[JournalEntry]) -> Vec<JournalEntry> {
    journal[journal.len().saturating_sub(RECENT)..].to_vec()
}

/// A stored journal with `written` over it: `written` is what a status write
/// carries (the recent entries it started from, plus any it appended), so the
/// stored entries before its first sequence stay, the rest are replaced; then
/// trimmed as [`append`] trims.
pub fn merge(stored: Vec<JournalEntry>, written: &[JournalEntry]) -> Vec<JournalEntry> {
    let Some(first) = written.first().map(|e| e.sequence) else {
        return stored;
    };
    let mut out: Vec<JournalEntry> = stored
        .into_iter()
        .take_while(|e| e.sequence < first)
        .collect();
    out.extend_from_slice(written);
    trim(&mut out);
    out
}

/// An event to record, from whatever decided it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub type_: EventType,
    pub instance: Option<u32>,
    /// The event data, less the Consumer reference and the sequence.
    pub data: Value,
}

/// The last sequence recorded (0 when none).
pub fn head(journal: &[JournalEntry]) -> i64 {
    journal.last().map_or(0, |e| e.sequence)
}

/// Appends `events` with consecutive sequences after the head, then trims.
/// Returns the sequences assigned.
pub fn append(
    journal: &mut Vec<JournalEntry>,
    events: Vec<NewEvent>,
    at: Timestamp,
) -> std::ops::RangeInclusive<i64> {
    // Whole seconds: what a stored status keeps (`metav1.Time`), so that an event
    // read back after a restart or by a new leader has the time, and so the id,
    // it was first sent with.
    let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
    let first = head(journal) + 1;
    let mut next = first;
    for e in events {
        journal.push(JournalEntry {
            sequence: next,
            type_: e.type_.as_str().to_string(),
            time: Time(at),
            instance: e.instance.map(|i| i as i32),
            data: EventData::new(&e.data),
        });
        next += 1;
    }
    trim(journal);
    first..=next - 1
}

/// The serialized size of an entry (its data is kept serialized already).
fn entry_bytes(e: &JournalEntry) -> usize {
    // {"sequence":…,"type":"…","time":"…","instance":…,"data":…},
    64 + e.type_.len() + 32 + e.data.as_str().len()
}

/// Drops the oldest entries beyond [`MAX_ENTRIES`] or [`MAX_BYTES`]; the newest
/// entry always stays (its sequence is the head the next one counts from).
pub fn trim(journal: &mut Vec<JournalEntry>) {
    if journal.len() > MAX_ENTRIES {
        journal.drain(..journal.len() - MAX_ENTRIES);
    }
    let sizes: Vec<usize> = journal.iter().map(entry_bytes).collect();
    let mut total: usize = sizes.iter().sum();
    let mut cut = 0;
    while total > MAX_BYTES && cut + 1 < journal.len() {
        total -= sizes[cut];
        cut += 1;
    }
    journal.drain(..cut);
}

/// What a subscriber with `cursor` gets next from `journal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Nothing new.
    UpToDate,
    /// The entries from this index on.
    From(usize),
    /// The cursor is not in the journal (a new subscriber, one that fell behind
    /// the journal, or a journal that restarted): a snapshot first, then on from
    /// the head.
    Resync { head: i64 },
}

pub fn resume(journal: &[JournalEntry], cursor: Option<i64>) -> Resume {
    let head = head(journal);
    let Some(cursor) = cursor else {
        return Resume::Resync { head };
    };
    if cursor == head {
        return Resume::UpToDate;
    }
    if cursor > head {
        return Resume::Resync { head };
    }
    match journal.iter().position(|e| e.sequence == cursor + 1) {
        Some(i) => Resume::From(i),
        None => Resume::Resync { head },
    }
}

/// Events pending after `cursor` (a resync counts as one).
pub fn pending(journal: &[JournalEntry], cursor: Option<i64>) -> usize {
    match resume(journal, cursor) {
        Resume::UpToDate => 0,
        Resume::From(i) => journal.len() - i,
        Resume::Resync { .. } => 1,
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

fn sum_metrics(partitions: &[u32], next: &ConsumerStatus) -> (i64, i64, i64) {
    let Some(state) = next.last_sync_state.as_ref() else {
        return (0, 0, 0);
    };
    partitions.iter().filter_map(|p| state.get(*p)).fold(
        (0, 0, 0),
        |(b, p, c), s: &PartitionState| {
            (
                b + s.messages_behind,
                p + s.production_rate,
                c + s.consumption_rate,
            )
        },
    )
}

fn instance_of(status: &ConsumerStatus, id: u32) -> Option<&InstanceStatus> {
    status
        .instances
        .as_ref()?
        .iter()
        .find(|i| i.id == id as i32)
}

/// The event of one state-machine transition.
pub fn from_transition(t: &Transition, next: &ConsumerStatus) -> NewEvent {
    let (type_, dir) = match t.event {
        Event::ScalePending(d) => (EventType::ScalePending, Some(d)),
        Event::Scaled(d) => (EventType::Scaled, Some(d)),
        Event::ScaleCancelled(d) => (EventType::ScaleCancelled, Some(d)),
        Event::Saturated => (EventType::Saturated, None),
        Event::Unsaturated => (EventType::Unsaturated, None),
    };
    // A pending scale has not changed the recommendation yet: what it waits to
    // apply is the instance's pending prediction.
    let to = match t.event {
        Event::ScalePending(_) => instance_of(next, t.instance)
            .and_then(|i| i.pending.clone())
            .unwrap_or_else(|| t.new.clone()),
        _ => t.new.clone(),
    };
    let (behind, production, consumption) = sum_metrics(&t.partitions, next);
    // `instance` is the entry's own field (and the event's subject).
    let mut data = Map::new();
    data.insert("partitions".into(), json!(t.partitions));
    if let Some(d) = dir {
        data.insert("direction".into(), json!(direction(d)));
    }
    data.insert(
        "state".into(),
        json!({"from": t.from.as_str(), "to": t.to.as_str()}),
    );
    data.insert("resources".into(), json!({"from": t.previous, "to": to}));
    data.insert("reason".into(), json!(t.reason));
    if let Some(saturation) = instance_of(next, t.instance).and_then(|i| i.saturation.as_ref()) {
        data.insert("saturation".into(), json!({"cpu": saturation.0}));
    }
    data.insert(
        "metrics".into(),
        json!({
            "messagesBehind": behind,
            "productionRate": production,
            "consumptionRate": consumption,
            "lagSeconds": t.observation.as_ref().map_or(0.0, |o| o.max_lag_seconds),
        }),
    );
    NewEvent {
        type_,
        instance: Some(t.instance),
        data: Value::Object(data),
    }
}

/// The `applied` event of a rollout konsumer starts: recorded in the status
/// write that precedes the Deployment write (write-ahead, like a scale), so a
/// crash between the two loses nothing. A rollout that is retried (its write
/// failed, or konsumer restarted before making it) is the same rollout: `None`
/// when the newest `applied` of that instance in `journal` already says it.
pub fn from_rollout(w: &Write, journal: &[JournalEntry]) -> Option<NewEvent> {
    let data = json!({
        "deployment": w.name,
        "partitions": w.partitions,
        "resources": {"from": w.from, "to": w.to},
        "changes": w.changes,
    });
    let applied = EventType::Applied.as_str();
    let said = journal
        .iter()
        .rev()
        .find(|e| e.type_ == applied && e.instance == Some(w.instance as i32))
        .is_some_and(|e| e.data.value() == data);
    (!said).then_some(NewEvent {
        type_: EventType::Applied,
        instance: Some(w.instance),
        data,
    })
}

fn metrics_condition(status: Option<&ConsumerStatus>) -> Option<&Condition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == METRICS_AVAILABLE)
}

/// Reasons of `MetricsAvailable=False` that mean "cannot read the metrics" (not
/// "not autoscaled").
fn unavailable(c: Option<&Condition>) -> bool {
    c.is_some_and(|c| {
        c.status == "False" && matches!(c.reason.as_str(), "PrometheusUnavailable" | "NoData")
    })
}

/// `metrics_unavailable` / `metrics_restored` when the condition turned.
pub fn from_conditions(
    previous: Option<&ConsumerStatus>,
    next: &ConsumerStatus,
) -> Option<NewEvent> {
    let before = metrics_condition(previous);
    let after = metrics_condition(Some(next));
    let was = unavailable(before);
    let is = unavailable(after);
    let after = after?;
    let type_ = match (was, is) {
        (false, true) => EventType::MetricsUnavailable,
        (true, false) if after.status == "True" => EventType::MetricsRestored,
        _ => return None,
    };
    Some(NewEvent {
        type_,
        instance: None,
        data: json!({"reason": after.reason, "message": after.message}),
    })
}

/// Records the events of one reconcile in the status about to be written: the
/// transitions, the metrics condition turning, then `more` (the rollout the
/// Deployment manager starts). `next` is `None` when nothing changed; when there
/// are events it becomes the previous status plus the journal. Returns the types
/// recorded.
pub fn record(
    previous: Option<&ConsumerStatus>,
    next: &mut Option<ConsumerStatus>,
    transitions: &[Transition],
    more: Vec<NewEvent>,
    at: Timestamp,
) -> Vec<EventType> {
    let Some(status) = next.as_ref() else {
        // No status change: a transition without a status change cannot happen,
        // but if it did, it is recorded all the same.
        if transitions.is_empty() && more.is_empty() {
            return Vec::new();
        }
        *next = Some(previous.cloned().unwrap_or_default());
        return record(previous, next, transitions, more, at);
    };
    let mut events: Vec<NewEvent> = transitions
        .iter()
        .map(|t| from_transition(t, status))
        .collect();
    events.extend(from_conditions(previous, status));
    events.extend(more);
    if events.is_empty() {
        return Vec::new();
    }
    let types = events.iter().map(|e| e.type_).collect();
    if let Some(status) = next.as_mut() {
        let mut journal = status
            .journal
            .take()
            .or_else(|| previous.and_then(|p| p.journal.clone()))
            .unwrap_or_default();
        append(&mut journal, events, at);
        status.journal = Some(journal);
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::Shared;
    use proptest::prelude::*;

    fn event(n: usize) -> NewEvent {
        NewEvent {
            type_: EventType::Scaled,
            instance: Some(n as u32),
            data: json!({"instance": n, "reason": "x".repeat(n % 7)}),
        }
    }

    fn at() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn sequences_continue_from_the_head_and_the_journal_keeps_the_newest_64() {
        let mut j = Vec::new();
        assert_eq!(append(&mut j, vec![event(0), event(1)], at()), 1..=2);
        for round in 0..40 {
            append(&mut j, vec![event(round), event(round + 1)], at());
        }
        assert_eq!(j.len(), MAX_ENTRIES);
        assert_eq!(head(&j), 82);
        assert_eq!(j[0].sequence, 82 - 63);
        assert!(j.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
    }

    #[test]
    fn big_entries_are_trimmed_to_the_byte_budget_but_the_newest_stays() {
        let mut j = Vec::new();
        let big = |n: usize| NewEvent {
            type_: EventType::Scaled,
            instance: Some(0),
            data: json!({"partitions": vec![n; 20_000]}),
        };
        for n in 0..10 {
            append(&mut j, vec![big(n)], at());
        }
        let bytes: usize = j.iter().map(entry_bytes).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert_eq!(head(&j), 10);
        let mut one = Vec::new();
        append(
            &mut one,
            vec![NewEvent {
                data: json!({"partitions": vec![1; 200_000]}),
                ..big(0)
            }],
            at(),
        );
        assert_eq!(
            one.len(),
            1,
            "an oversized newest entry still keeps the head"
        );
    }

    #[test]
    fn cursors_resume_after_themselves_or_resync_when_off_the_journal() {
        let mut j = Vec::new();
        for n in 0..70 {
            append(&mut j, vec![event(n)], at());
        }
        // Sequences 7..=70 remain.
        assert_eq!(resume(&j, None), Resume::Resync { head: 70 });
        assert_eq!(resume(&j, Some(70)), Resume::UpToDate);
        assert_eq!(resume(&j, Some(6)), Resume::From(0));
        assert_eq!(resume(&j, Some(5)), Resume::Resync { head: 70 });
        assert_eq!(resume(&j, Some(69)), Resume::From(63));
        assert_eq!(
            resume(&j, Some(71)),
            Resume::Resync { head: 70 },
            "a journal that restarted"
        );
        assert_eq!(resume(&[], Some(0)), Resume::UpToDate);
        assert_eq!(pending(&j, Some(60)), 10);
        assert_eq!(pending(&j, Some(1)), 1);
    }

    proptest! {
        #[test]
        fn resuming_never_skips_or_repeats_an_entry(
            batches in proptest::collection::vec(1usize..6, 1..40),
            cursor_back in 0i64..100,
        ) {
            let mut j = Vec::new();
            for (i, n) in batches.iter().enumerate() {
                append(&mut j, (0..*n).map(|k| event(i + k)).collect(), at());
            }
            prop_assert!(j.len() <= MAX_ENTRIES);
            let head = head(&j);
            let cursor = (head - cursor_back).max(0);
            match resume(&j, Some(cursor)) {
                Resume::UpToDate => prop_assert_eq!(cursor, head),
                Resume::From(i) => {
                    prop_assert_eq!(j[i].sequence, cursor + 1);
                    prop_assert_eq!(j.last().unwrap().sequence, head);
                }
                Resume::Resync { head: h } => {
                    prop_assert_eq!(h, head);
                    prop_assert!(cursor + 1 < j[0].sequence);
                }
            }
        }
    }

    #[test]
    fn a_metrics_outage_and_its_end_are_events_but_not_autoscaled_is_not() {
        let cond = |status: &str, reason: &str| ConsumerStatus {
            conditions: Some(Shared::new(vec![Condition {
                type_: METRICS_AVAILABLE.into(),
                status: status.into(),
                reason: reason.into(),
                message: "m".into(),
                last_transition_time: Time(at()),
                observed_generation: None,
            }])),
            ..ConsumerStatus::default()
        };
        let ok = cond("True", "MetricsRead");
        let down = cond("False", "PrometheusUnavailable");
        let empty = cond("False", "NoData");
        let off = cond("False", "NotAutoscaled");
        let t =
            |a: Option<&ConsumerStatus>, b: &ConsumerStatus| from_conditions(a, b).map(|e| e.type_);
        assert_eq!(t(Some(&ok), &down), Some(EventType::MetricsUnavailable));
        assert_eq!(t(None, &down), Some(EventType::MetricsUnavailable));
        assert_eq!(t(Some(&down), &empty), None, "still unavailable");
        assert_eq!(t(Some(&empty), &ok), Some(EventType::MetricsRestored));
        assert_eq!(t(Some(&ok), &off), None);
        assert_eq!(t(Some(&down), &off), None);
        assert_eq!(t(Some(&ok), &ok), None);
    }

    #[test]
    fn recording_appends_to_the_previous_journal_in_the_same_status() {
        let previous = ConsumerStatus {
            journal: Some(Vec::new()),
            ..ConsumerStatus::default()
        };
        let mut next = Some(ConsumerStatus {
            conditions: Some(Shared::new(vec![Condition {
                type_: METRICS_AVAILABLE.into(),
                status: "False".into(),
                reason: "PrometheusUnavailable".into(),
                message: "connection refused".into(),
                last_transition_time: Time(at()),
                observed_generation: None,
            }])),
            ..ConsumerStatus::default()
        });
        let types = record(Some(&previous), &mut next, &[], Vec::new(), at());
        assert_eq!(types, [EventType::MetricsUnavailable]);
        let j = next.unwrap().journal.unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].sequence, 1);
        assert_eq!(j[0].data.value()["message"], "connection refused");
        let mut unchanged = None;
        assert!(record(Some(&previous), &mut unchanged, &[], Vec::new(), at()).is_empty());
        assert!(unchanged.is_none());
    }

    fn rollout(instance: u32, cpu: &str) -> Write {
        let res = |cpu: &str| crate::api::ContainerResources {
            container_name: "consumer".into(),
            requests: [(
                "cpu".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.to_string()),
            )]
            .into_iter()
            .collect(),
            limits: Default::default(),
        };
        Write {
            name: format!("orders-{instance}"),
            instance,
            partitions: vec![instance * 2, instance * 2 + 1],
            change: crate::manage::Change::Rollout,
            body: Value::Null,
            changes: vec![format!("resources.requests.cpu={cpu}")],
            from: vec![res("100m")],
            to: vec![res(cpu)],
        }
    }

    #[test]
    fn a_rollout_is_an_applied_event_once_even_when_its_write_is_retried() {
        let mut j = Vec::new();
        let first = from_rollout(&rollout(1, "2"), &j).expect("a new rollout is an event");
        assert_eq!(first.type_, EventType::Applied);
        assert_eq!(first.instance, Some(1));
        assert_eq!(first.data["deployment"], "orders-1");
        assert_eq!(first.data["partitions"], json!([2, 3]));
        assert_eq!(first.data["resources"]["to"][0]["requests"]["cpu"], "2");
        assert_eq!(
            first.data["resources"]["from"][0]["requests"]["cpu"],
            "100m"
        );
        append(&mut j, vec![first, event(5)], at());
        // The same rollout again (the write failed, or konsumer restarted
        // between the status write and the Deployment write): already said.
        assert_eq!(from_rollout(&rollout(1, "2"), &j), None);
        // Another instance, or the same one rolled to something else, is new.
        assert!(from_rollout(&rollout(0, "2"), &j).is_some());
        assert!(from_rollout(&rollout(1, "3"), &j).is_some());
    }

    #[test]
    fn a_retried_rollout_is_said_once_from_the_recent_entries_a_store_keeps_in_memory() {
        // The pass that starts a rollout writes its `applied` last; the retry
        // (the Deployment write failed) comes in the next pass, before that
        // pass's status write: the head is that `applied`.
        let mut j = Vec::new();
        append(&mut j, (0..10).map(event).collect(), at());
        let applied = from_rollout(&rollout(1, "2"), &recent(&j)).unwrap();
        append(&mut j, vec![event(11), applied], at());
        let kept = recent(&j);
        assert_eq!(kept.len(), RECENT);
        assert_eq!(head(&kept), head(&j));
        assert_eq!(from_rollout(&rollout(1, "2"), &kept), None);
        assert!(from_rollout(&rollout(1, "3"), &kept).is_some());
    }

    #[test]
    fn a_rollout_alone_makes_a_status_write_with_its_event() {
        let previous = ConsumerStatus::default();
        let mut next = None;
        let applied = from_rollout(&rollout(0, "2"), &[]).unwrap();
        let types = record(Some(&previous), &mut next, &[], vec![applied], at());
        assert_eq!(types, [EventType::Applied]);
        let j = next.expect("a status write").journal.unwrap();
        assert_eq!(j[0].type_, "dev.konsumer.instance.applied.v1");
        assert_eq!(j[0].instance, Some(0));
    }

    #[test]
    fn a_write_of_the_recent_entries_plus_new_ones_merges_over_the_whole_journal() {
        let mut stored = Vec::new();
        append(&mut stored, (0..64).map(event).collect(), at());
        let mut cached = recent(&stored);
        assert_eq!(cached.len(), RECENT);
        assert_eq!(head(&cached), 64);
        append(&mut cached, vec![event(64), event(65)], at());
        let merged = merge(stored.clone(), &cached);
        assert_eq!(merged.len(), MAX_ENTRIES);
        assert_eq!(merged.first().unwrap().sequence, 3);
        assert_eq!(head(&merged), 66);
        assert!(
            merged
                .windows(2)
                .all(|w| w[1].sequence == w[0].sequence + 1)
        );
        // A write that appended nothing changes nothing; an empty one keeps all.
        assert_eq!(merge(stored.clone(), &recent(&stored)), stored);
        assert_eq!(merge(stored.clone(), &[]), stored);
        // A first write (nothing stored) is the journal written.
        assert_eq!(merge(Vec::new(), &cached), cached);
    }

    #[test]
    fn an_entry_read_back_from_a_stored_status_has_the_same_time_and_id() {
        let mut j = Vec::new();
        let precise: Timestamp = "2026-11-22T12:00:00.123456789Z".parse().unwrap();
        append(&mut j, vec![event(1)], precise);
        let stored: Vec<JournalEntry> =
            serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(stored, j);
        let c = crate::scaling_events::ConsumerRef {
            namespace: "streams",
            name: "orders",
            uid: "",
        };
        assert_eq!(
            crate::scaling_events::cloudevent::from_entry(&c, &stored[0]).id,
            crate::scaling_events::cloudevent::from_entry(&c, &j[0]).id
        );
    }
}
