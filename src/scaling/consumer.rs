//! One Consumer's reconcile, without I/O: the previous status, the metrics read
//! this pass (if any) and the workloads in; the next status (only when it
//! changes) and the transitions out. The reconciler wraps it with Prometheus
//! reads and status writes; the benchmark runs it as is.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use super::spec::{ScalingSpec, autoscaler_disabled};
use super::status::{self, METRICS_AVAILABLE, RECONCILED};
use super::step::{Metrics, Restored, StepInput, Transition, step};
use crate::api::shared::Shared;
use crate::api::{Consumer, ConsumerStatus, PartitionState, ScalingState, SyncState};
use crate::inject::ConsumerSettings;

/// What Prometheus said this pass.
#[derive(Clone, Debug)]
pub enum Refresh {
    Read {
        partitions: BTreeMap<u32, PartitionState>,
        issues: Vec<String>,
    },
    Failed(String),
}

pub struct ConsumerInput<'a> {
    pub consumer: &'a Consumer,
    pub spec: &'a Result<Option<ScalingSpec>, String>,
    /// The resolved settings (from the cache), for the counters.
    pub settings: Option<&'a ConsumerSettings>,
    /// The status' `lastSyncState`, parsed (the shell caches it).
    pub cached_metrics: Option<&'a BTreeMap<u32, PartitionState>>,
    /// The status' instances as the machine reads them, when the shell kept them
    /// ([`Restored::new`] of this spec and the status' instances); `None`: read
    /// from the status.
    pub restored: Option<&'a Restored>,
    /// `None` when Prometheus was not due this pass.
    pub refresh: Option<Refresh>,
    /// The labelled workloads (`None`: unknown this pass; counters keep their values).
    pub workloads: Option<&'a [Value]>,
    pub gomemlimit_ratio: f64,
    pub now: Timestamp,
}

pub struct ConsumerOutput {
    /// The status to write, `None` when nothing changed.
    pub status: Option<ConsumerStatus>,
    pub transitions: Vec<Transition>,
    /// Instances per state (prometheus mode).
    pub states: Option<[(ScalingState, i64); 4]>,
    /// Per instance, whether it lags (what the `lagging` counter counts).
    pub lagging: Vec<bool>,
}

fn short(text: String) -> String {
    if text.chars().count() > 500 {
        text.chars().take(497).collect::<String>() + "..."
    } else {
        text
    }
}

/// The most partitions whose metrics `lastSyncState` keeps. Above it they stay
/// in the reconciler's memory only: ~80 bytes a partition would crowd the status
/// out of its 1.5 MiB object (a new leader reads Prometheus again at once).
pub const SYNC_STATE_MAX_PARTITIONS: usize = 1_000;

/// The largest status konsumer writes, in JSON bytes: etcd stores at most
/// 1.5 MiB per object, and the Consumer's metadata and spec need their share.
/// Validation's limits keep a Consumer's status well below it (instances,
/// recommendations, `lastSyncState`), leaving room for the event journal
/// (256 KiB); this is the last guard.
pub const STATUS_MAX_BYTES: usize = 1_280 << 10;

fn sync_state(partitions: &BTreeMap<u32, PartitionState>) -> Option<SyncState> {
    (partitions.len() <= SYNC_STATE_MAX_PARTITIONS).then(|| SyncState::from_partitions(partitions))
}

/// Keeps a status within [`STATUS_MAX_BYTES`]: drops `lastSyncState`, then the
/// recommendations (the webhook falls back to `resourcePolicy`), and says so in a
/// condition. Validation keeps this from happening; it guards what it missed.
fn fit(status: &mut ConsumerStatus, generation: Option<i64>, now: Timestamp) {
    // A bound counted without writing the status settles the usual case (far
    // below the limit); only a status near it is written out to count.
    if status.json_len_bound() <= STATUS_MAX_BYTES {
        return;
    }
    let size = |s: &ConsumerStatus| {
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, s).map_or(0, |()| counter.0)
    };
    let before = size(status);
    if before <= STATUS_MAX_BYTES {
        return;
    }
    status.last_sync_state = None;
    if size(status) <= STATUS_MAX_BYTES {
        return;
    }
    status.instances = None;
    let mut conditions = status.conditions.take().unwrap_or_default();
    status::set_condition(
        &mut conditions,
        RECONCILED,
        false,
        "StatusTooLarge",
        format!(
            "the status would take {before} bytes, over konsumer's limit of {STATUS_MAX_BYTES} \
             (Kubernetes stores at most 1.5 MiB per object): recommendations are not recorded and \
             workloads get the resourcePolicy fallback; put more partitions on each instance"
        ),
        generation,
        now,
    );
    status.conditions = Some(conditions);
}

/// Counts what is written to it: a status' JSON size without the buffer.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses a status' `lastSyncState` (keys are partition numbers).
pub fn parse_sync_state(state: &SyncState) -> BTreeMap<u32, PartitionState> {
    state.partitions().map(|(p, v)| (p, v.clone())).collect()
}

pub fn reconcile(input: ConsumerInput<'_>) -> ConsumerOutput {
    let consumer = input.consumer;
    let now = input.now;
    let generation = consumer.metadata.generation;
    let empty = ConsumerStatus::default();
    let previous = consumer.status.as_ref().unwrap_or(&empty);
    let mut conditions: Shared<Vec<Condition>> = previous.conditions.clone().unwrap_or_default();
    let mut sync: Option<(Option<SyncState>, Time)> = None;
    let mut instances = None;
    let mut lagging = Vec::new();
    let mut transitions = Vec::new();
    let mut states = None;
    let mut clear_instances = false;

    match input.spec {
        Err(reason) => {
            status::set_condition(
                &mut conditions,
                RECONCILED,
                false,
                "InvalidSpec",
                reason.clone(),
                generation,
                now,
            );
        }
        Ok(None) => {
            // Not autoscaled (any more): recommendations made before must not be
            // injected.
            clear_instances = previous.instances.is_some();
            status::set_condition(
                &mut conditions,
                METRICS_AVAILABLE,
                false,
                "NotAutoscaled",
                "spec.autoscaler.mode is not prometheus: instances get the fallback resources"
                    .into(),
                generation,
                now,
            );
            status::set_condition(
                &mut conditions,
                RECONCILED,
                true,
                "Reconciled",
                String::new(),
                generation,
                now,
            );
        }
        Ok(Some(spec)) => {
            let last_good = previous.last_sync_time.as_ref().map_or(now, |t| t.0);
            let was_failing = previous
                .conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == METRICS_AVAILABLE))
                .is_some_and(|c| c.status == "False");
            // (metrics, when they were read, whether the latest read failed)
            let (metrics, observed_at, failing) = match &input.refresh {
                Some(Refresh::Read { partitions, issues }) if partitions.is_empty() => {
                    // An answer without one partition with data (an exporter
                    // restart, a Prometheus that lost its targets) is no reading:
                    // the last good metrics stay.
                    let mut message =
                        "Prometheus answered, but no partition has both a production rate and a lag"
                            .to_string();
                    if !issues.is_empty() {
                        message = short(format!("{message}: {}", issues.join("; ")));
                    }
                    status::set_condition(
                        &mut conditions,
                        METRICS_AVAILABLE,
                        false,
                        "NoData",
                        message,
                        generation,
                        now,
                    );
                    (input.cached_metrics, last_good, true)
                }
                Some(Refresh::Read { partitions, issues }) => {
                    let mut message = format!("{} partitions with data", partitions.len());
                    if partitions.len() > SYNC_STATE_MAX_PARTITIONS {
                        message.push_str(&format!(
                            " (lastSyncState is kept up to {SYNC_STATE_MAX_PARTITIONS} partitions)"
                        ));
                    }
                    if !issues.is_empty() {
                        message = short(format!("{message}; {}", issues.join("; ")));
                    }
                    status::set_condition(
                        &mut conditions,
                        METRICS_AVAILABLE,
                        true,
                        "MetricsRead",
                        message,
                        generation,
                        now,
                    );
                    sync = Some((sync_state(partitions), Time(now)));
                    (Some(partitions), now, false)
                }
                Some(Refresh::Failed(error)) => {
                    status::set_condition(
                        &mut conditions,
                        METRICS_AVAILABLE,
                        false,
                        "PrometheusUnavailable",
                        short(error.clone()),
                        generation,
                        now,
                    );
                    (input.cached_metrics, last_good, true)
                }
                None => (input.cached_metrics, last_good, was_failing),
            };
            let frozen = autoscaler_disabled(consumer);
            let prev_instances = previous.instances.as_deref().unwrap_or_default();
            // Until metrics have been read once there is nothing to recommend: the
            // webhook keeps injecting the fallback, and says so.
            let never_read = metrics.is_none() && previous.instances.is_none();
            if never_read {
                let n = spec.layout.instances() as i64;
                states = Some([
                    (ScalingState::Running, n),
                    (ScalingState::PendingScaleUp, 0),
                    (ScalingState::PendingScaleDown, 0),
                    (ScalingState::Saturated, 0),
                ]);
            } else {
                let out = step(StepInput {
                    spec,
                    previous: prev_instances,
                    restored: input.restored,
                    metrics: metrics.map(|partitions| Metrics {
                        partitions,
                        observed_at,
                        failing,
                    }),
                    frozen,
                    now,
                });
                states = Some(
                    [
                        ScalingState::Running,
                        ScalingState::PendingScaleUp,
                        ScalingState::PendingScaleDown,
                        ScalingState::Saturated,
                    ]
                    .map(|s| {
                        (
                            s,
                            out.instances.iter().filter(|i| i.state == s).count() as i64,
                        )
                    }),
                );
                if out.changed(prev_instances) || previous.instances.is_none() {
                    instances = Some(
                        out.instances
                            .iter()
                            .map(|i| i.as_ref().clone())
                            .collect::<Vec<_>>(),
                    );
                }
                lagging = out.lagging;
                transitions = out.transitions;
            }
            let (reason, message) = if frozen {
                (
                    "AutoscalerDisabled",
                    "konsumerator.lwolf.org/disable-autoscaler is set: recommendations are frozen"
                        .to_string(),
                )
            } else {
                ("Reconciled", String::new())
            };
            status::set_condition(
                &mut conditions,
                RECONCILED,
                true,
                reason,
                message,
                generation,
                now,
            );
        }
    }

    let counters = match (input.settings, input.workloads) {
        (Some(settings), Some(objects)) => Some(status::count(
            settings,
            objects,
            &lagging,
            input.gomemlimit_ratio,
        )),
        _ => None,
    };
    let counters_changed = counters.is_some_and(|c| {
        let mut probe = ConsumerStatus::default();
        status::apply_counters(&mut probe, c);
        (
            probe.expected,
            probe.running,
            probe.paused,
            probe.missing,
            probe.unavailable,
            probe.lagging,
            probe.outdated,
            probe.redundant,
        ) != (
            previous.expected,
            previous.running,
            previous.paused,
            previous.missing,
            previous.unavailable,
            previous.lagging,
            previous.outdated,
            previous.redundant,
        )
    });
    let changed = sync.is_some()
        || instances.is_some()
        || clear_instances
        || counters_changed
        || previous.observed_generation != generation
        || previous.conditions.as_ref() != Some(&conditions);
    let status = changed.then(|| {
        // Field by field, so that what this pass replaces (the metrics of every
        // partition, the instances) is not cloned first; a new status field must be
        // named here.
        let ConsumerStatus {
            observed_generation: _,
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
            instances: previous_instances,
            conditions: _,
            journal,
        } = previous;
        let (last_sync_state, last_sync_time) = match sync {
            Some((state, time)) => (state, Some(time)),
            None => (last_sync_state.clone(), last_sync_time.clone()),
        };
        let instances = match instances {
            _ if clear_instances => None,
            Some(instances) => Some(instances),
            None => previous_instances.clone(),
        };
        let mut next = ConsumerStatus {
            observed_generation: generation,
            expected: *expected,
            running: *running,
            paused: *paused,
            lagging: *lagging,
            missing: *missing,
            unavailable: *unavailable,
            outdated: *outdated,
            redundant: *redundant,
            last_sync_time,
            last_sync_state,
            instances,
            conditions: None,
            journal: journal.clone(),
        };
        if let Some(c) = counters {
            status::apply_counters(&mut next, c);
        }
        next.conditions = Some(conditions);
        fit(&mut next, generation, now);
        next
    });
    ConsumerOutput {
        status,
        transitions,
        states,
        lagging,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> Consumer {
        let mut c = crate::api::test_orders();
        c.metadata.generation = Some(3);
        c
    }

    fn run(c: &Consumer, refresh: Option<Refresh>, now: Timestamp) -> ConsumerOutput {
        let spec = ScalingSpec::from_consumer(c);
        let settings = ConsumerSettings::from_consumer(c).ok();
        let cached = c
            .status
            .as_ref()
            .and_then(|s| s.last_sync_state.as_ref())
            .map(parse_sync_state);
        let input = |restored| ConsumerInput {
            consumer: c,
            spec: &spec,
            settings: settings.as_ref(),
            cached_metrics: cached.as_ref(),
            restored,
            refresh: refresh.clone(),
            workloads: Some(&[]),
            gomemlimit_ratio: 0.8,
            now,
        };
        let out = reconcile(input(None));
        // Every case here also holds with the instances kept from an earlier pass.
        let instances = c.status.as_ref().and_then(|s| s.instances.as_deref());
        if let (Ok(Some(spec)), Some(instances)) = (&spec, instances) {
            let kept = Restored::new(spec, instances);
            let again = reconcile(input(Some(&kept)));
            assert_eq!(again.status, out.status);
            assert_eq!(again.transitions, out.transitions);
            assert_eq!(again.states, out.states);
        }
        out
    }

    fn condition<'a>(s: &'a ConsumerStatus, t: &str) -> &'a Condition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn quiet() -> Refresh {
        Refresh::Read {
            partitions: (0..10)
                .map(|p| {
                    (
                        p,
                        PartitionState {
                            production_rate: 100,
                            consumption_rate: 100,
                            messages_behind: 0,
                        },
                    )
                })
                .collect(),
            issues: vec!["offset: partition 12 is not in 0..9".into()],
        }
    }

    #[test]
    fn a_first_pass_writes_metrics_instances_counters_and_conditions() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let out = run(&orders(), Some(quiet()), now);
        let s = out.status.expect("a first status");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.last_sync_state.as_ref().unwrap().len(), 10);
        assert_eq!(s.last_sync_time.as_ref().unwrap().0, now);
        assert_eq!(s.instances.as_ref().unwrap().len(), 4);
        assert_eq!(
            (s.expected, s.missing, s.running),
            (Some(4), Some(4), Some(0))
        );
        let m = condition(&s, METRICS_AVAILABLE);
        assert_eq!(
            (m.status.as_str(), m.reason.as_str()),
            ("True", "MetricsRead")
        );
        assert!(
            m.message.contains("partition 12 is not in 0..9"),
            "{}",
            m.message
        );
        assert_eq!(condition(&s, RECONCILED).status, "True");
        assert_eq!(out.states.unwrap()[0], (ScalingState::Running, 4));
    }

    #[test]
    fn an_unchanged_pass_writes_nothing() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut c = orders();
        c.status = run(&c, Some(quiet()), now).status;
        let later = "2026-11-22T12:00:20Z".parse().unwrap();
        let out = run(&c, None, later);
        assert!(out.status.is_none(), "{:?}", out.status);
        assert!(out.transitions.is_empty());
    }

    #[test]
    fn an_answer_without_data_keeps_the_last_good_metrics() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut c = orders();
        c.status = run(&c, Some(quiet()), now).status;
        let before = c.status.clone().unwrap();
        let later: Timestamp = "2026-11-22T12:01:00Z".parse().unwrap();
        let empty = Refresh::Read {
            partitions: BTreeMap::new(),
            issues: vec!["offset: no value for 10 partitions".into()],
        };
        let s = run(&c, Some(empty), later).status.unwrap();
        assert_eq!(s.last_sync_state, before.last_sync_state);
        assert_eq!(s.last_sync_time, before.last_sync_time);
        let m = condition(&s, METRICS_AVAILABLE);
        assert_eq!((m.status.as_str(), m.reason.as_str()), ("False", "NoData"));
        assert!(m.message.contains("offset: no value"), "{}", m.message);
    }

    #[test]
    fn prometheus_failures_and_frozen_autoscalers_show_in_the_conditions() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut c = orders();
        c.status = run(&c, Some(quiet()), now).status;
        let failed = run(&c, Some(Refresh::Failed("connection refused".into())), now)
            .status
            .unwrap();
        let m = condition(&failed, METRICS_AVAILABLE);
        assert_eq!(
            (m.status.as_str(), m.reason.as_str()),
            ("False", "PrometheusUnavailable")
        );
        assert_eq!(
            failed.last_sync_state,
            c.status.as_ref().unwrap().last_sync_state,
            "the last good metrics stay"
        );

        c.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(crate::api::keys::DISABLE_AUTOSCALER.into(), String::new());
        let frozen = run(&c, None, now).status.unwrap();
        assert_eq!(condition(&frozen, RECONCILED).reason, "AutoscalerDisabled");
    }

    #[test]
    fn unusable_and_non_autoscaled_consumers_say_why() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut c = orders();
        c.spec
            .autoscaler
            .as_mut()
            .map(crate::api::Shared::make_mut)
            .unwrap()
            .prometheus
            .as_mut()
            .unwrap()
            .rate_per_core = Some(0);
        let s = run(&c, None, now).status.unwrap();
        let r = condition(&s, RECONCILED);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(r.message.contains("ratePerCore"), "{}", r.message);

        let mut c = orders();
        c.status = run(&c, Some(quiet()), now).status;
        assert!(c.status.as_ref().unwrap().instances.is_some());
        crate::api::Shared::make_mut(c.spec.autoscaler.as_mut().unwrap()).mode =
            Some(String::new());
        let s = run(&c, None, now).status.unwrap();
        assert_eq!(condition(&s, METRICS_AVAILABLE).reason, "NotAutoscaled");
        assert!(
            s.instances.is_none(),
            "earlier recommendations are cleared: the webhook uses the fallback"
        );
    }

    #[test]
    fn no_recommendation_is_recorded_before_metrics_were_ever_read() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let s = run(&orders(), Some(Refresh::Failed("down".into())), now)
            .status
            .unwrap();
        assert!(s.instances.is_none(), "the webhook keeps saying 'fallback'");
        assert_eq!(condition(&s, METRICS_AVAILABLE).status, "False");
    }

    /// The largest Consumer validation accepts: 10,000 partitions over 1,000
    /// instances, two scaled containers, every partition lagging.
    pub(crate) fn largest() -> Consumer {
        let mut c = orders();
        c.spec.num_partitions = Some(10_000);
        c.spec.num_partitions_per_instance = Some(10);
        c
    }

    fn lagging(partitions: u32) -> Refresh {
        Refresh::Read {
            partitions: (0..partitions)
                .map(|p| {
                    (
                        p,
                        PartitionState {
                            production_rate: 123_456 + i64::from(p),
                            consumption_rate: 100_000,
                            messages_behind: 987_654_321,
                        },
                    )
                })
                .collect(),
            issues: vec![],
        }
    }

    #[test]
    fn the_largest_allowed_consumer_has_a_status_that_fits_with_room_for_the_journal() {
        let c = largest();
        let report = crate::validation::validate(&serde_json::to_value(&c).unwrap(), None, "v1");
        assert!(report.is_valid(), "{:?}", report.errors);
        let t0: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let first = run(&c, Some(lagging(10_000)), t0).status.unwrap();
        let mut c = c;
        c.status = Some(first);
        // Five minutes on: every instance pending or scaled, with both lists.
        let t1: Timestamp = "2026-11-22T12:05:01Z".parse().unwrap();
        let second = run(&c, Some(lagging(10_000)), t1).status.unwrap();
        let instances = second.instances.as_ref().unwrap();
        assert_eq!(instances.len(), 1000);
        assert!(
            second.last_sync_state.is_none(),
            "10,000 partitions stay out of the status"
        );
        assert!(second.last_sync_time.is_some());
        let bytes = serde_json::to_vec(&second).unwrap().len();
        eprintln!("status of the largest allowed Consumer: {bytes} bytes");
        let journal = 256 << 10;
        assert!(
            bytes + journal <= STATUS_MAX_BYTES && bytes < 1 << 20,
            "status of the largest Consumer: {bytes} bytes"
        );
        let m = condition(&second, METRICS_AVAILABLE);
        assert!(
            m.message.contains("kept up to 1000 partitions"),
            "{}",
            m.message
        );
    }

    #[test]
    fn up_to_a_thousand_partitions_keep_their_metrics_in_the_status() {
        let mut c = orders();
        c.spec.num_partitions = Some(1000);
        c.spec.num_partitions_per_instance = Some(10);
        let t0: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let s = run(&c, Some(lagging(1000)), t0).status.unwrap();
        assert_eq!(s.last_sync_state.as_ref().map(SyncState::len), Some(1000));
    }

    #[test]
    fn a_status_over_the_bound_but_within_the_limit_keeps_everything() {
        // Plain text counts six times in the bound (as if every byte were
        // escaped): the bound is over the limit, the status is not.
        let t0: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut conditions = Vec::new();
        status::set_condition(
            &mut conditions,
            METRICS_AVAILABLE,
            true,
            "MetricsRead",
            "x".repeat(STATUS_MAX_BYTES / 2),
            Some(1),
            t0,
        );
        let mut status = ConsumerStatus {
            last_sync_state: Some(SyncState::from_partitions(
                &(0..10).map(|p| (p, PartitionState::default())).collect(),
            )),
            conditions: Some(conditions.into()),
            ..ConsumerStatus::default()
        };
        assert!(status.json_len_bound() > STATUS_MAX_BYTES);
        let before = status.clone();
        fit(&mut status, Some(1), t0);
        assert_eq!(status, before);
    }

    #[test]
    fn a_status_over_the_limit_drops_what_it_must_and_says_why() {
        let t0: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut status = ConsumerStatus {
            instances: Some(
                (0..3000)
                    .map(|id| crate::api::InstanceStatus {
                        id,
                        partitions: (0..200).collect(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..ConsumerStatus::default()
        };
        fit(&mut status, Some(1), t0);
        assert!(status.instances.is_none());
        let r = condition(&status, RECONCILED);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "StatusTooLarge")
        );
        assert!(serde_json::to_vec(&status).unwrap().len() < STATUS_MAX_BYTES);
        let mut small = ConsumerStatus::default();
        fit(&mut small, Some(1), t0);
        assert_eq!(small, ConsumerStatus::default());
    }
}
