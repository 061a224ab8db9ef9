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
use super::step::{Metrics, StepInput, Transition, step};
use crate::api::{Consumer, ConsumerStatus, PartitionState, ScalingState};
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
}

fn short(text: String) -> String {
    if text.chars().count() > 500 {
        text.chars().take(497).collect::<String>() + "..."
    } else {
        text
    }
}

fn sync_state(partitions: &BTreeMap<u32, PartitionState>) -> BTreeMap<String, PartitionState> {
    partitions
        .iter()
        .map(|(p, s)| (p.to_string(), s.clone()))
        .collect()
}

/// Parses a status' `lastSyncState` (keys are partition numbers).
pub fn parse_sync_state(state: &BTreeMap<String, PartitionState>) -> BTreeMap<u32, PartitionState> {
    state
        .iter()
        .filter_map(|(k, v)| k.parse::<u32>().ok().map(|p| (p, v.clone())))
        .collect()
}

pub fn reconcile(input: ConsumerInput<'_>) -> ConsumerOutput {
    let consumer = input.consumer;
    let now = input.now;
    let generation = consumer.metadata.generation;
    let empty = ConsumerStatus::default();
    let previous = consumer.status.as_ref().unwrap_or(&empty);
    let mut conditions: Vec<Condition> = previous.conditions.clone().unwrap_or_default();
    let mut sync: Option<(BTreeMap<String, PartitionState>, Time)> = None;
    let mut instances = None;
    let mut lagging = Vec::new();
    let mut transitions = Vec::new();
    let mut states = None;

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
            let (metrics, observed_at) = match &input.refresh {
                Some(Refresh::Read { partitions, issues }) => {
                    let message = if issues.is_empty() {
                        format!("{} partitions with data", partitions.len())
                    } else {
                        short(format!(
                            "{} partitions with data; {}",
                            partitions.len(),
                            issues.join("; ")
                        ))
                    };
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
                    (Some(partitions), now)
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
                    (
                        input.cached_metrics,
                        previous.last_sync_time.as_ref().map_or(now, |t| t.0),
                    )
                }
                None => (
                    input.cached_metrics,
                    previous.last_sync_time.as_ref().map_or(now, |t| t.0),
                ),
            };
            let frozen = autoscaler_disabled(consumer);
            let prev_instances = previous.instances.as_deref().unwrap_or_default();
            let out = step(StepInput {
                spec,
                previous: prev_instances,
                metrics: metrics.map(|partitions| Metrics {
                    partitions,
                    observed_at,
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
            probe.lagging,
            probe.outdated,
            probe.redundant,
        ) != (
            previous.expected,
            previous.running,
            previous.paused,
            previous.missing,
            previous.lagging,
            previous.outdated,
            previous.redundant,
        )
    });
    let changed = sync.is_some()
        || instances.is_some()
        || counters_changed
        || previous.observed_generation != generation
        || previous.conditions.as_ref() != Some(&conditions);
    let status = changed.then(|| {
        let mut next = previous.clone();
        next.observed_generation = generation;
        if let Some((state, time)) = sync {
            next.last_sync_state = Some(state);
            next.last_sync_time = Some(time);
        }
        if let Some(instances) = instances {
            next.instances = Some(instances);
        }
        if let Some(c) = counters {
            status::apply_counters(&mut next, c);
        }
        next.conditions = Some(conditions);
        next
    });
    ConsumerOutput {
        status,
        transitions,
        states,
    }
}
