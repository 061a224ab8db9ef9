//! One reconcile step of one Consumer (pure): its instances' previous status and
//! the metrics in, the next instance statuses and the transitions out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::machine::{self, Event, Instance, Signal, Timing};
use super::predict::{self, Observation, Prediction};
use super::spec::ScalingSpec;
use crate::api::quantity::Milli;
use crate::api::{ContainerResources, InstanceStatus, PartitionState, ScalingState};
use crate::inject::settings::{ContainerTarget, Resources};

/// A typed record of one change: what, from, to, why, and the metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub instance: u32,
    pub partitions: Vec<u32>,
    pub event: Event,
    pub from: ScalingState,
    pub to: ScalingState,
    pub previous: Vec<ContainerResources>,
    pub new: Vec<ContainerResources>,
    pub reason: String,
    pub observation: Option<Observation>,
    pub at: Timestamp,
}

/// The metrics of a Consumer: per partition, and when they were read.
#[derive(Clone, Copy, Debug)]
pub struct Metrics<'a> {
    pub partitions: &'a BTreeMap<u32, PartitionState>,
    pub observed_at: Timestamp,
    /// The latest read failed: these are the last good metrics, and pending
    /// states end once they are older than their pending period.
    pub failing: bool,
}

pub struct StepInput<'a> {
    pub spec: &'a ScalingSpec,
    pub previous: &'a [InstanceStatus],
    /// `None` when Prometheus could not be read: nothing moves.
    pub metrics: Option<Metrics<'a>>,
    /// `disable-autoscaler`: recommendations are frozen.
    pub frozen: bool,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput<'a> {
    /// Borrowed from the previous status when an instance did not change.
    pub instances: Vec<Cow<'a, InstanceStatus>>,
    pub transitions: Vec<Transition>,
    /// Per instance: whether its largest lag reached `tolerableLag`.
    pub lagging: Vec<bool>,
}

pub fn to_status(targets: &[ContainerTarget]) -> Vec<ContainerResources> {
    targets.iter().map(ContainerTarget::to_status).collect()
}

fn from_status(list: &[ContainerResources]) -> Option<Vec<ContainerTarget>> {
    list.iter()
        .map(|c| ContainerTarget::from_status(c).ok())
        .collect()
}

fn clamp(value: Option<Milli>, min: Option<Milli>, max: Option<Milli>) -> Option<Milli> {
    let v = value?;
    let v = max.map_or(v, |m| v.min(m));
    Some(min.map_or(v, |m| v.max(m)))
}

/// Stored targets brought in line with the current policy: each policy's
/// container clamped to its bounds (or given its fallback when the policy is
/// new), containers without a policy dropped.
fn normalize(spec: &ScalingSpec, targets: &[ContainerTarget]) -> Vec<ContainerTarget> {
    if spec.policies.is_empty() {
        return targets.to_vec();
    }
    spec.policies
        .iter()
        .filter_map(|p| {
            let Some(t) = targets.iter().find(|t| t.name == p.name) else {
                return spec.fallback.iter().find(|f| f.name == p.name).cloned();
            };
            let limits = Resources {
                cpu: clamp(t.limits.cpu, p.min.cpu, p.max.cpu),
                memory: clamp(t.limits.memory, p.min.memory, p.max.memory),
            };
            let cap = |r: Option<Milli>, l: Option<Milli>| match (r, l) {
                (Some(r), Some(l)) => Some(r.min(l)),
                (r, _) => r,
            };
            let requests = Resources {
                cpu: cap(clamp(t.requests.cpu, p.min.cpu, p.max.cpu), limits.cpu),
                memory: cap(
                    clamp(t.requests.memory, p.min.memory, p.max.memory),
                    limits.memory,
                ),
            };
            Some(ContainerTarget {
                name: p.name.clone(),
                requests,
                limits,
            })
        })
        .collect()
}

/// The machine's view of a stored instance, when it still fits the layout. The
/// flag says whether the current policy changed what was stored.
fn restore(
    spec: &ScalingSpec,
    status: &InstanceStatus,
    partitions: &[u32],
    now: Timestamp,
) -> Option<(Instance, bool)> {
    let fits = status.partitions.len() == partitions.len()
        && status
            .partitions
            .iter()
            .zip(partitions)
            .all(|(a, b)| *a as i64 == *b as i64);
    if !fits {
        return None;
    }
    let stored = from_status(&status.resources)?;
    let recommendation = normalize(spec, &stored);
    let pending_stored = status.pending.as_deref().and_then(from_status);
    let pending = pending_stored.as_deref().map(|p| normalize(spec, p));
    let changed = recommendation != stored || pending != pending_stored;
    Some((
        Instance {
            state: status.state,
            since: status.since.as_ref().map_or(now, |t| t.0),
            recommendation,
            pending,
            saturation: status
                .saturation
                .as_ref()
                .and_then(|q| Milli::parse(&q.0).ok())
                .unwrap_or_default(),
        },
        changed,
    ))
}

fn store(id: u32, partitions: &[u32], inst: &Instance) -> InstanceStatus {
    InstanceStatus {
        id: id as i32,
        partitions: partitions.iter().map(|p| *p as i32).collect(),
        state: inst.state,
        since: Some(Time(inst.since)),
        resources: to_status(&inst.recommendation),
        pending: inst.pending.as_deref().map(to_status),
        saturation: inst.saturation.is_positive().then(|| {
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(inst.saturation.cpu_string())
        }),
    }
}

impl StepOutput<'_> {
    /// Whether any instance differs from the previous status.
    pub fn changed(&self, previous: &[InstanceStatus]) -> bool {
        self.instances.len() != previous.len()
            || self.instances.iter().any(|i| matches!(i, Cow::Owned(_)))
    }

    pub fn into_owned(self) -> Vec<InstanceStatus> {
        self.instances.into_iter().map(Cow::into_owned).collect()
    }
}

/// Runs the predictor and the state machine over every instance.
pub fn step<'a>(input: StepInput<'a>) -> StepOutput<'a> {
    let spec = input.spec;
    let now = input.now;
    let buckets: Vec<Vec<u32>> = spec.layout.buckets().map(|r| r.collect()).collect();
    // (the stored status it came from, the machine's view)
    let current: Vec<(Option<&'a InstanceStatus>, Instance)> = buckets
        .iter()
        .enumerate()
        .map(|(id, partitions)| {
            let stored = input.previous.iter().find(|s| s.id == id as i32);
            match stored.and_then(|s| restore(spec, s, partitions, now)) {
                // Changed by the current policy: written again, not borrowed.
                Some((inst, changed)) => (stored.filter(|_| !changed), inst),
                None => (None, Instance::new(spec.fallback.clone(), now)),
            }
        })
        .collect();
    let keep = |id: usize,
                partitions: &[u32],
                stored: Option<&'a InstanceStatus>,
                inst: &Instance| match stored {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(store(id as u32, partitions, inst)),
    };

    let observations: Vec<Option<Observation>> = match input.metrics {
        Some(m) => spec
            .layout
            .buckets()
            .map(|r| predict::observe(r, m.partitions, spec.recovery))
            .collect(),
        None => vec![None; buckets.len()],
    };
    let lagging: Vec<bool> = observations
        .iter()
        .map(|o| {
            o.as_ref()
                .is_some_and(|o| o.max_lag_seconds >= spec.tolerable_lag.as_secs_f64())
        })
        .collect();

    // Frozen: nothing moves. Without metrics the machine still runs: it ends
    // pending states (and changes nothing else).
    if input.frozen {
        let instances = buckets
            .iter()
            .zip(&current)
            .enumerate()
            .map(|(id, (p, (stored, i)))| keep(id, p, *stored, i))
            .collect();
        return StepOutput {
            instances,
            transitions: Vec::new(),
            lagging,
        };
    }
    let observed_at = input.metrics.map_or(now, |m| m.observed_at);
    let failing = input.metrics.is_some_and(|m| m.failing);

    let mut predictions: Vec<Option<Prediction>> = observations
        .iter()
        .map(|o| o.as_ref().map(|o| predict::predict(spec, o)))
        .collect();
    let recommended: Vec<Vec<ContainerTarget>> = current
        .iter()
        .map(|(_, i)| i.recommendation.clone())
        .collect();
    predict::apply_global_cap(spec, &recommended, &mut predictions);

    let timing = Timing {
        pending_up: spec.pending_up,
        pending_down: spec.pending_down,
    };
    let mut instances = Vec::with_capacity(buckets.len());
    let mut transitions = Vec::new();
    for (id, partitions) in buckets.iter().enumerate() {
        let (stored, cur) = &current[id];
        let signal = predictions[id].as_ref().map(|target| Signal {
            target,
            lagging: lagging[id],
            max_lag_seconds: observations[id].as_ref().map_or(0.0, |o| o.max_lag_seconds),
            complete: observations[id]
                .as_ref()
                .is_some_and(|o| o.partitions_without_data == 0),
            observed_at,
            failing,
        });
        let machine::Step { next, events } = machine::step(timing, cur, signal.as_ref(), now);
        let mut from = cur.state;
        for (event, reason) in events {
            let to = match event {
                Event::ScaleCancelled(_) => ScalingState::Running,
                _ => next.state,
            };
            transitions.push(Transition {
                instance: id as u32,
                partitions: partitions.clone(),
                event,
                from,
                to,
                previous: to_status(&cur.recommendation),
                new: to_status(&next.recommendation),
                reason,
                observation: observations[id].clone(),
                at: now,
            });
            from = to;
        }
        instances.push(if next == *cur {
            keep(id, partitions, *stored, &next)
        } else {
            Cow::Owned(store(id as u32, partitions, &next))
        });
    }
    StepOutput {
        instances,
        transitions,
        lagging,
    }
}
