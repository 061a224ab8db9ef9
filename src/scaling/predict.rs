//! Konsumerator's naive predictor, per instance, and the caps.
//!
//! Per partition: `lag = behind / production` (0 without production); load is the
//! production, plus what it takes to catch up within `recoveryTime`. Partitions
//! without data count as the busiest one of the instance. CPU request = load /
//! ratePerCore, rounded up to `cpuIncrement`; limit = request rounded up to whole
//! cores; memory = limit cores × `ramPerCore`. Then each container's
//! `[minAllowed, maxAllowed]` (the limit too), `maxAllowed` outright at critical
//! lag, and `globalPolicy.maxAllowed` over all instances, counting what they use now.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Serialize;

use super::spec::ScalingSpec;
use crate::api::PartitionState;
use crate::api::quantity::Milli;
use crate::inject::settings::{ALL_CONTAINERS, ContainerTarget, Resources};

/// What the metrics say about one instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// Messages per second the instance must consume (production plus catch-up).
    pub load: f64,
    /// The largest lag of its partitions, in seconds.
    pub max_lag_seconds: f64,
    pub production: f64,
    pub messages_behind: f64,
    /// Partitions without metrics (counted as the busiest one).
    pub partitions_without_data: u32,
}

/// Observes an instance; `None` when none of its partitions has data.
pub fn observe(
    partitions: Range<u32>,
    metrics: &BTreeMap<u32, PartitionState>,
    recovery: Duration,
) -> Option<Observation> {
    let recovery = recovery.as_secs_f64().max(1.0);
    let (mut load, mut busiest) = (0.0, f64::NAN);
    let mut missing = 0;
    let (mut production, mut behind, mut max_lag) = (0.0, 0.0, 0.0f64);
    for p in partitions {
        let Some(m) = metrics.get(&p) else {
            missing += 1;
            continue;
        };
        let prod = (m.production_rate.max(0)) as f64;
        let lagging_msgs = (m.messages_behind.max(0)) as f64;
        let lag = if prod > 0.0 { lagging_msgs / prod } else { 0.0 };
        let partition_load = if lag > 0.0 {
            prod * (1.0 + lag / recovery)
        } else {
            prod
        };
        load += partition_load;
        busiest = f64::max(busiest, partition_load);
        production += prod;
        behind += lagging_msgs;
        max_lag = max_lag.max(lag);
    }
    if busiest.is_nan() {
        return None;
    }
    Some(Observation {
        load: load + busiest * missing as f64,
        max_lag_seconds: max_lag,
        production,
        messages_behind: behind,
        partitions_without_data: missing,
    })
}

/// The resources an instance should have, after the caps.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub targets: Vec<ContainerTarget>,
    /// The scaled container's CPU request before any cap.
    pub wanted_cpu: Milli,
    /// CPU the caps cut off (`maxAllowed`, then `globalPolicy`).
    pub saturation: Milli,
    /// The lag reached `criticalLag`: the target is `maxAllowed`.
    pub critical: bool,
}

impl Prediction {
    pub fn cpu_requests(&self) -> Milli {
        total_cpu(&self.targets)
    }
}

/// Sum of the CPU requests of `targets`.
pub fn total_cpu(targets: &[ContainerTarget]) -> Milli {
    targets.iter().filter_map(|t| t.requests.cpu).sum()
}

fn total_memory(targets: &[ContainerTarget]) -> Milli {
    targets.iter().filter_map(|t| t.requests.memory).sum()
}

/// `value` rounded up to a multiple of `step` (both in milli-units).
fn ceil_to(value: i128, step: i128) -> i128 {
    if step <= 0 {
        return value;
    }
    let up = if value.rem_euclid(step) == 0 { 0 } else { step };
    value
        .div_euclid(step)
        .saturating_mul(step)
        .saturating_add(up)
}

fn clamp(value: Milli, min: Option<Milli>, max: Option<Milli>) -> Milli {
    let v = max.map_or(value, |m| value.min(m));
    min.map_or(v, |m| v.max(m))
}

/// The uncapped estimate of the scaled container: (cpu request, cpu limit, memory).
pub fn estimate(spec: &ScalingSpec, load: f64) -> (Milli, Milli, Milli) {
    // Whole millicores, rounded up; the tolerance keeps 1100.0000000002 at 1100.
    let exact = load.max(0.0) * 1000.0 / spec.rate_per_core;
    let millis = ((exact - 1e-6).ceil().max(0.0)) as i128;
    let request = ceil_to(millis, spec.cpu_increment.0);
    let limit = ceil_to(request, 1000);
    let cores = limit / 1000;
    // Saturating: absurd rates (a broken exporter) give absurd, capped numbers, not a panic.
    let memory = Milli(spec.ram_per_core.0.saturating_mul(cores));
    (Milli(request), Milli(limit), memory)
}

/// The prediction of one instance, capped by its containers' `maxAllowed`.
pub fn predict(spec: &ScalingSpec, obs: &Observation) -> Prediction {
    let (request, limit, memory) = estimate(spec, obs.load);
    let critical = spec
        .critical_lag
        .is_some_and(|c| obs.max_lag_seconds >= c.as_secs_f64());
    let policy = spec.policy(&spec.scaled);
    let (min, max) = policy.map_or((Resources::default(), Resources::default()), |p| {
        (p.min, p.max)
    });
    let (requests, limits) = if critical && !max.is_empty() {
        let at_max = Resources {
            cpu: max.cpu.or(Some(limit)),
            memory: max.memory.or(Some(memory)),
        };
        (at_max, at_max)
    } else {
        let cpu_limit = clamp(limit, min.cpu, max.cpu);
        let mem = clamp(memory, min.memory, max.memory);
        let cpu_request = clamp(request, min.cpu, Some(cpu_limit));
        (
            Resources {
                cpu: Some(cpu_request),
                memory: Some(mem),
            },
            Resources {
                cpu: Some(cpu_limit),
                memory: Some(mem),
            },
        )
    };
    let granted = requests.cpu.unwrap_or(request);
    let mut targets = vec![ContainerTarget {
        name: spec.scaled.clone(),
        requests,
        limits,
    }];
    if spec.scaled != ALL_CONTAINERS {
        targets.extend(
            spec.fallback
                .iter()
                .filter(|t| t.name != spec.scaled)
                .cloned(),
        );
    }
    Prediction {
        targets,
        wanted_cpu: request,
        saturation: if request > granted {
            request - granted
        } else {
            Milli::ZERO
        },
        critical,
    }
}

/// Caps the instances' requests so that their sum stays within
/// `globalPolicy.maxAllowed`, counting what every instance is recommended now:
/// increases are granted, in instance order, only from what the current
/// recommendations leave; nothing is granted while the sum is at or over the cap.
/// What an instance is refused becomes its saturation.
pub fn apply_global_cap(
    spec: &ScalingSpec,
    current: &[&[ContainerTarget]],
    predictions: &mut [Option<Prediction>],
) {
    for (resource, cap) in [
        ("cpu", spec.global_max.cpu),
        ("memory", spec.global_max.memory),
    ] {
        let Some(cap) = cap else { continue };
        let used = |targets: &[ContainerTarget]| {
            if resource == "cpu" {
                total_cpu(targets)
            } else {
                total_memory(targets)
            }
        };
        // What is left beside every instance's current recommendation. A pending
        // decrease frees nothing until it happens (it may be cancelled).
        let mut budget = cap.0 - current.iter().map(|cur| used(cur).0).sum::<i128>();
        for (i, cur) in current.iter().enumerate() {
            let Some(p) = predictions.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let base = used(cur).0;
            let wanted = used(&p.targets).0;
            if wanted <= base {
                continue;
            }
            let grant = (wanted - base).min(budget.max(0));
            budget -= grant;
            let cut = wanted - base - grant;
            if cut == 0 {
                continue;
            }
            if let Some(t) = p.targets.iter_mut().find(|t| t.name == spec.scaled) {
                if resource == "cpu" {
                    let req = t.requests.cpu.unwrap_or_default();
                    let new = Milli((req.0 - cut).max(0));
                    t.requests.cpu = Some(new);
                    if let Some(limit) = t.limits.cpu {
                        t.limits.cpu = Some(limit.max(new));
                    }
                    p.saturation = p.saturation + Milli(cut);
                } else {
                    let req = t.requests.memory.unwrap_or_default();
                    let new = Milli((req.0 - cut).max(0));
                    t.requests.memory = Some(new);
                    t.limits.memory = Some(new);
                }
            }
        }
    }
}
