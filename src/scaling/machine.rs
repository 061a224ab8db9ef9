//! The per-instance scaling state machine (Konsumerator's, with its holes fixed).
//!
//! - RUNNING/SATURATED → PENDING_SCALE_UP when the prediction is higher and the
//!   instance lags; after `pendingScaleUpDuration` the recommendation becomes the
//!   prediction.
//! - RUNNING/SATURATED → PENDING_SCALE_DOWN when the prediction is lower and there
//!   is no lag; after `pendingScaleDownDuration`, scale down.
//! - A pending state whose reason disappears is cancelled (Konsumerator ignored a
//!   new lag while pending down).
//! - SATURATED: the instance lags and the caps cut what it would need.
//! - Only CPU decides the direction; memory follows. Metrics older than the
//!   pending period never trigger a scale; while Prometheus fails they end a
//!   pending state (nobody knows its reason held during the gap).
//! - Scale-down needs lag data for every partition of the instance: missing lag
//!   is not "no lag".

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::predict::{Prediction, total_cpu};
use crate::api::ScalingState;
use crate::api::quantity::Milli;
use crate::inject::settings::ContainerTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase", tag = "type", content = "direction")]
pub enum Event {
    ScalePending(Direction),
    Scaled(Direction),
    ScaleCancelled(Direction),
    Saturated,
    Unsaturated,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::ScalePending(Direction::Up) => "ScaleUpPending",
            Event::ScalePending(Direction::Down) => "ScaleDownPending",
            Event::Scaled(Direction::Up) => "ScaledUp",
            Event::Scaled(Direction::Down) => "ScaledDown",
            Event::ScaleCancelled(Direction::Up) => "ScaleUpCancelled",
            Event::ScaleCancelled(Direction::Down) => "ScaleDownCancelled",
            Event::Saturated => "Saturated",
            Event::Unsaturated => "Unsaturated",
        }
    }
}

/// The machine's view of one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub state: ScalingState,
    pub since: Timestamp,
    /// What new Pods of this instance get. Shared: a Consumer's kept
    /// instances (the reconciler's `Restored`) hold the copy of equal targets
    /// the cached Consumers' settings hold ([`crate::inject::settings::shared`]).
    pub recommendation: Arc<[ContainerTarget]>,
    /// The prediction waiting out its pending period.
    pub pending: Option<Arc<[ContainerTarget]>>,
    pub saturation: Milli,
}

impl Instance {
    /// A new instance: the fallback, RUNNING since now.
    pub fn new(fallback: Arc<[ContainerTarget]>, now: Timestamp) -> Self {
        Instance {
            state: ScalingState::Running,
            since: mark(now),
            recommendation: fallback,
            pending: None,
            saturation: Milli::ZERO,
        }
    }
}

/// What the metrics say now.
#[derive(Clone, Debug)]
pub struct Signal<'a> {
    pub target: &'a Prediction,
    /// The largest lag reached `tolerableLag`.
    pub lagging: bool,
    /// The largest lag of the instance's partitions, in seconds.
    pub max_lag_seconds: f64,
    /// Every partition of the instance has data (production and lag): only then
    /// can "no lag" be trusted for a scale-down.
    pub complete: bool,
    /// When the metrics were read.
    pub observed_at: Timestamp,
    /// The latest read failed; these are the last good metrics.
    pub failing: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub pending_up: Duration,
    pub pending_down: Duration,
}

/// One step of the machine: the next instance and what happened, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub next: Instance,
    pub events: Vec<(Event, String)>,
}

/// Time since `since`; zero when `since` is ahead of `now`.
fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    if since >= now {
        Duration::ZERO
    } else {
        now.duration_since(since).unsigned_abs()
    }
}

/// The since-time to record: `now` rounded up to the second. Statuses keep
/// `metav1.Time` (whole seconds); rounding down would make a pending period end
/// up to a second early after a round trip through the API server.
pub fn mark(now: Timestamp) -> Timestamp {
    if now.subsec_nanosecond() == 0 {
        return now;
    }
    Timestamp::from_second(now.as_second() + 1).unwrap_or(now)
}

fn age(observed_at: Timestamp, now: Timestamp) -> Duration {
    if observed_at >= now {
        Duration::ZERO
    } else {
        now.duration_since(observed_at).unsigned_abs()
    }
}

fn show(d: Duration) -> String {
    crate::api::duration::format_go_duration(Duration::from_secs(d.as_secs()))
}

/// Advances `current` given `signal` (`None`: no metrics, nothing moves).
pub fn step(
    timing: Timing,
    current: &Instance,
    signal: Option<&Signal<'_>>,
    now: Timestamp,
) -> Step {
    let mut next = current.clone();
    let mut events = Vec::new();
    // A pending period means "the reason held all along": without fresh metrics
    // nobody knows that it did, so the pending state ends instead of completing
    // the moment metrics come back.
    let pending = match current.state {
        ScalingState::PendingScaleUp => Some((Direction::Up, timing.pending_up)),
        ScalingState::PendingScaleDown => Some((Direction::Down, timing.pending_down)),
        ScalingState::Running | ScalingState::Saturated => None,
    };
    // (Metrics between two reads age up to minSyncPeriod; that is no reason to
    // cancel. A read that fails is.)
    let blind = match signal {
        None => Some("no metrics for this instance".to_string()),
        Some(signal) if signal.failing => {
            let age = age(signal.observed_at, now);
            pending.filter(|(_, period)| age > *period).map(|_| {
                format!(
                    "Prometheus has not answered with data since the last metrics, {} ago",
                    show(age)
                )
            })
        }
        Some(_) => None,
    };
    if let Some(why) = blind {
        if let Some((direction, _)) = pending {
            events.push((Event::ScaleCancelled(direction), why));
            next.state = ScalingState::Running;
            next.pending = None;
            next.since = mark(now);
        }
        return Step { next, events };
    }
    let Some(signal) = signal else {
        return Step { next, events };
    };
    let target = signal.target;
    let wanted = target.cpu_requests();
    let have = total_cpu(&current.recommendation);
    let cmp = wanted.cmp(&have);
    let age = age(signal.observed_at, now);
    let fresh = match cmp {
        Ordering::Greater => age <= timing.pending_up,
        Ordering::Less => age <= timing.pending_down,
        Ordering::Equal => true,
    };
    if !fresh {
        // Metrics older than the pending period never trigger a scale.
        return Step { next, events };
    }
    let lagging = signal.lagging;

    // Pending states first: complete, keep waiting, or cancel.
    match current.state {
        ScalingState::PendingScaleUp => {
            if cmp == Ordering::Greater && lagging {
                if elapsed(current.since, now) >= timing.pending_up {
                    next.recommendation = target.targets.as_slice().into();
                    next.pending = None;
                    next.saturation = target.saturation;
                    next.state = steady_state(target, lagging);
                    next.since = mark(now);
                    events.push((
                        Event::Scaled(Direction::Up),
                        format!(
                            "lagging for {} with a prediction of {} CPU above the recommendation of {}",
                            show(timing.pending_up),
                            wanted.cpu_string(),
                            have.cpu_string()
                        ),
                    ));
                    if next.state == ScalingState::Saturated {
                        events.push((Event::Saturated, saturated_reason(target)));
                    }
                } else {
                    next.pending = Some(target.targets.as_slice().into());
                }
                return Step { next, events };
            }
            let why = if !lagging {
                "the lag is gone".to_string()
            } else {
                format!(
                    "the prediction ({}) is no longer above the recommendation ({})",
                    wanted.cpu_string(),
                    have.cpu_string()
                )
            };
            events.push((Event::ScaleCancelled(Direction::Up), why));
            next.state = ScalingState::Running;
            next.pending = None;
            next.since = mark(now);
        }
        ScalingState::PendingScaleDown => {
            if cmp == Ordering::Less && !lagging && signal.complete {
                if elapsed(current.since, now) >= timing.pending_down {
                    next.recommendation = target.targets.as_slice().into();
                    next.pending = None;
                    next.saturation = target.saturation;
                    next.state = ScalingState::Running;
                    next.since = mark(now);
                    events.push((
                        Event::Scaled(Direction::Down),
                        format!(
                            "no lag for {} and a prediction of {} CPU below the recommendation of {}",
                            show(timing.pending_down),
                            wanted.cpu_string(),
                            have.cpu_string()
                        ),
                    ));
                } else {
                    next.pending = Some(target.targets.as_slice().into());
                }
                return Step { next, events };
            }
            let why = if lagging {
                "a lag appeared".to_string()
            } else if !signal.complete {
                "some partitions have no lag data".to_string()
            } else {
                format!(
                    "the prediction ({}) is no longer below the recommendation ({})",
                    wanted.cpu_string(),
                    have.cpu_string()
                )
            };
            events.push((Event::ScaleCancelled(Direction::Down), why));
            next.state = ScalingState::Running;
            next.pending = None;
            next.since = mark(now);
        }
        ScalingState::Running | ScalingState::Saturated => {}
    }

    // Steady (or just cancelled): start a pending period, or settle.
    match (cmp, lagging) {
        (Ordering::Greater, true) => {
            if next.state == ScalingState::Saturated {
                events.push((Event::Unsaturated, "the caps leave room to grow".into()));
            }
            next.state = ScalingState::PendingScaleUp;
            next.since = mark(now);
            next.saturation = Milli::ZERO;
            next.pending = Some(target.targets.as_slice().into());
            events.push((
                Event::ScalePending(Direction::Up),
                format!(
                    "lagging ({:.0}s behind) with a prediction of {} CPU above the recommendation of {}",
                    signal.max_lag_seconds,
                    wanted.cpu_string(),
                    have.cpu_string()
                ),
            ));
        }
        (Ordering::Less, false) if signal.complete => {
            if next.state == ScalingState::Saturated {
                events.push((Event::Unsaturated, "the lag is gone".into()));
            }
            next.state = ScalingState::PendingScaleDown;
            next.since = mark(now);
            next.saturation = Milli::ZERO;
            next.pending = Some(target.targets.as_slice().into());
            events.push((
                Event::ScalePending(Direction::Down),
                format!(
                    "no lag and a prediction of {} CPU below the recommendation of {}",
                    wanted.cpu_string(),
                    have.cpu_string()
                ),
            ));
        }
        _ => {
            let settled = if cmp == Ordering::Equal {
                steady_state(target, lagging)
            } else {
                ScalingState::Running
            };
            if settled != next.state {
                match settled {
                    ScalingState::Saturated => {
                        events.push((Event::Saturated, saturated_reason(target)))
                    }
                    _ if next.state == ScalingState::Saturated => events.push((
                        Event::Unsaturated,
                        "the instance no longer lags at its caps".into(),
                    )),
                    _ => {}
                }
                next.state = settled;
                next.since = mark(now);
            }
            next.saturation = if settled == ScalingState::Saturated {
                target.saturation
            } else {
                Milli::ZERO
            };
        }
    }
    Step { next, events }
}

/// RUNNING, or SATURATED when the instance lags and the caps cut its prediction.
fn steady_state(target: &Prediction, lagging: bool) -> ScalingState {
    if lagging && target.saturation.is_positive() {
        ScalingState::Saturated
    } else {
        ScalingState::Running
    }
}

fn saturated_reason(target: &Prediction) -> String {
    format!(
        "lagging with {} CPU cut off by the caps (wanted {})",
        target.saturation.cpu_string(),
        target.wanted_cpu.cpu_string()
    )
}
