//! One reconcile step of one Consumer (pure): its instances' previous status and
//! the metrics in, the next instance statuses and the transitions out.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Range;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::machine::{self, Event, Instance, Signal, Timing};
use super::predict::{self, Observation, Prediction};
use super::spec::ScalingSpec;
use crate::api::quantity::Milli;
use crate::api::{ContainerResources, InstanceStatus, PartitionState, ScalingState};
use crate::inject::settings::{self, ContainerTarget, Resources};

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
    /// `previous` as the machine reads it, when the caller kept it from an
    /// earlier pass ([`Restored::new`] of this spec and these instances);
    /// `None`: restored here.
    pub restored: Option<&'a Restored>,
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

/// What [`restore`] made of one stored instance.
#[derive(Clone, Debug, PartialEq)]
struct Kept {
    /// Its place in the status' instances.
    at: usize,
    instance: Instance,
    /// The status gave no `since`: the pass's time stands in.
    since_unknown: bool,
    /// The current policy changed what was stored (it is written again).
    changed: bool,
}

/// A Consumer's stored instances as the machine reads them, per bucket of the
/// layout: quantities parsed, targets brought in line with the policy
/// (`None`: no stored instance fits; a new one starts from the fallback).
/// A pure function of the spec and the status' instances: the reconciler keeps
/// it between passes while both stay the same, as parsing every instance's
/// quantities again on every pass was most of a pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Restored(Vec<Option<Kept>>);

impl Restored {
    pub fn new(spec: &ScalingSpec, previous: &[InstanceStatus]) -> Self {
        Restored(
            spec.layout
                .buckets()
                .enumerate()
                .map(|(id, partitions)| {
                    let at = previous.iter().position(|s| s.id == id as i32)?;
                    restore(spec, &previous[at], partitions, at)
                })
                .collect(),
        )
    }

    /// A fingerprint of what [`Restored::new`] reads (the layout, the policies,
    /// the fallback and the status' instances): while it stays the same, so does
    /// the `Restored`. Hashing reads every stored quantity's text but parses and
    /// allocates nothing. `hasher` should be keyed (`RandomState`): statuses
    /// can be written by anyone.
    pub fn stamp(
        hasher: &impl BuildHasher,
        spec: &ScalingSpec,
        previous: &[InstanceStatus],
    ) -> u64 {
        let mut h = hasher.build_hasher();
        (spec.layout.partitions(), spec.layout.instances()).hash(&mut h);
        spec.policies.len().hash(&mut h);
        for p in &spec.policies {
            p.name.hash(&mut h);
            (p.min.cpu, p.min.memory, p.max.cpu, p.max.memory).hash(&mut h);
        }
        spec.fallback.len().hash(&mut h);
        for t in &spec.fallback {
            t.name.hash(&mut h);
            let (r, l) = (&t.requests, &t.limits);
            (r.cpu, r.memory, l.cpu, l.memory).hash(&mut h);
        }
        previous.len().hash(&mut h);
        for s in previous {
            (s.id, &s.partitions, s.state).hash(&mut h);
            s.since.as_ref().map(|t| t.0).hash(&mut h);
            hash_containers(&mut h, &s.resources);
            match &s.pending {
                None => 0u8.hash(&mut h),
                Some(p) => {
                    1u8.hash(&mut h);
                    hash_containers(&mut h, p);
                }
            }
            s.saturation.as_ref().map(|q| q.0.as_str()).hash(&mut h);
        }
        h.finish()
    }

    /// Whether it can stand for `previous` under `spec`'s layout (a cheap check
    /// of the shape; the caller vouches for the content).
    fn fits(&self, spec: &ScalingSpec, previous: &[InstanceStatus]) -> bool {
        self.0.len() == spec.layout.instances() as usize
            && self.0.iter().enumerate().all(|(id, kept)| {
                kept.as_ref()
                    .is_none_or(|k| previous.get(k.at).is_some_and(|s| s.id == id as i32))
            })
    }
}

/// The machine's view of a stored instance, when it still fits the layout.
fn restore(
    spec: &ScalingSpec,
    status: &InstanceStatus,
    partitions: Range<u32>,
    at: usize,
) -> Option<Kept> {
    let fits = status.partitions.len() == partitions.len()
        && status
            .partitions
            .iter()
            .zip(partitions)
            .all(|(a, b)| *a as i64 == b as i64);
    if !fits {
        return None;
    }
    let stored = from_status(&status.resources)?;
    let recommendation = normalize(spec, &stored);
    let pending_stored = status.pending.as_deref().and_then(from_status);
    let pending = pending_stored.as_deref().map(|p| normalize(spec, p));
    let changed = recommendation != stored || pending != pending_stored;
    // Kept between passes (the reconciler's cache): one copy of equal targets.
    let recommendation = settings::shared(recommendation.into());
    let pending = pending.map(|p| settings::shared(p.into()));
    Some(Kept {
        at,
        instance: Instance {
            state: status.state,
            since: status.since.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            recommendation,
            pending,
            saturation: status
                .saturation
                .as_ref()
                .and_then(|q| Milli::parse(&q.0).ok())
                .unwrap_or_default(),
        },
        since_unknown: status.since.is_none(),
        changed,
    })
}

fn hash_containers(h: &mut impl Hasher, containers: &[ContainerResources]) {
    containers.len().hash(h);
    for c in containers {
        c.container_name.hash(h);
        for list in [&c.requests, &c.limits] {
            list.len().hash(h);
            for (k, v) in list {
                k.hash(h);
                v.0.hash(h);
            }
        }
    }
}

fn store(id: u32, partitions: Range<u32>, inst: &Instance) -> InstanceStatus {
    InstanceStatus {
        id: id as i32,
        partitions: partitions.map(|p| p as i32).collect(),
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
    let buckets: Vec<Range<u32>> = spec.layout.buckets().collect();
    let restored_here;
    let restored = match input.restored {
        Some(r) if r.fits(spec, input.previous) => r,
        _ => {
            restored_here = Restored::new(spec, input.previous);
            &restored_here
        }
    };
    // (the stored status it came from, the machine's view)
    let current: Vec<(Option<&'a InstanceStatus>, Cow<'_, Instance>)> = restored
        .0
        .iter()
        .map(|kept| match kept {
            Some(k) => {
                // Changed by the current policy: written again, not borrowed.
                let stored = input.previous.get(k.at).filter(|_| !k.changed);
                let instance = if k.since_unknown {
                    Cow::Owned(Instance {
                        since: now,
                        ..k.instance.clone()
                    })
                } else {
                    Cow::Borrowed(&k.instance)
                };
                (stored, instance)
            }
            None => (
                None,
                Cow::Owned(Instance::new(spec.fallback.as_slice().into(), now)),
            ),
        })
        .collect();
    let keep = |id: usize,
                partitions: &Range<u32>,
                stored: Option<&'a InstanceStatus>,
                inst: &Instance| match stored {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(store(id as u32, partitions.clone(), inst)),
    };

    let observations: Vec<Option<Observation>> = match input.metrics {
        Some(m) => buckets
            .iter()
            .map(|r| predict::observe(r.clone(), m.partitions, spec.recovery))
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
    let recommended: Vec<&[ContainerTarget]> =
        current.iter().map(|(_, i)| &*i.recommendation).collect();
    predict::apply_global_cap(spec, &recommended, &mut predictions);

    let timing = Timing {
        pending_up: spec.pending_up,
        pending_down: spec.pending_down,
    };
    let mut instances = Vec::with_capacity(buckets.len());
    let mut transitions = Vec::new();
    for (id, partitions) in buckets.iter().enumerate() {
        let (stored, cur) = &current[id];
        let cur: &Instance = cur;
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
                partitions: partitions.clone().collect(),
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
            Cow::Owned(store(id as u32, partitions.clone(), &next))
        });
    }
    StepOutput {
        instances,
        transitions,
        lagging,
    }
}
