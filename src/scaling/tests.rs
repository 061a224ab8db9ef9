//! Golden cases from Konsumerator's predictor tests and a multi-step state machine
//! scenario on a fake clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::machine::{Direction, Event};
use super::predict;
use super::spec::{Policy, ScalingSpec};
use super::step::{Metrics, Restored, StepInput, step};
use crate::api::quantity::Milli;
use crate::api::{InstanceStatus, PartitionState, ScalingState};
use crate::inject::partition::Layout;
use crate::inject::settings::{ContainerTarget, Resources};

fn q(s: &str) -> Milli {
    Milli::parse(s).unwrap()
}

fn res(cpu: &str, memory: &str) -> Resources {
    Resources {
        cpu: Some(q(cpu)),
        memory: Some(q(memory)),
    }
}

fn spec(rate: f64, ram: &str, policy: Option<(&str, &str, &str, &str)>) -> ScalingSpec {
    let policies: Vec<Policy> = policy
        .map(|(min_cpu, min_mem, max_cpu, max_mem)| Policy {
            name: "busybox".into(),
            min: res(min_cpu, min_mem),
            max: res(max_cpu, max_mem),
        })
        .into_iter()
        .collect();
    let fallback = policies
        .iter()
        .map(|p| ContainerTarget {
            name: p.name.clone(),
            requests: p.min,
            limits: p.min,
        })
        .collect();
    ScalingSpec {
        layout: Layout::new(1, 1).unwrap(),
        rate_per_core: rate,
        ram_per_core: q(ram),
        cpu_increment: q("100m"),
        recovery: Duration::from_secs(30 * 60),
        tolerable_lag: Duration::from_secs(3 * 60),
        critical_lag: None,
        pending_up: Duration::from_secs(5 * 60),
        pending_down: Duration::from_secs(5 * 60),
        min_sync: Duration::from_secs(60),
        scaled: "busybox".into(),
        policies,
        global_max: Resources::default(),
        fallback,
    }
}

fn metrics(partitions: &[(u32, i64, i64)]) -> BTreeMap<u32, PartitionState> {
    partitions
        .iter()
        .map(|(p, production, behind)| {
            (
                *p,
                PartitionState {
                    production_rate: *production,
                    consumption_rate: *production,
                    messages_behind: *behind,
                },
            )
        })
        .collect()
}

fn predicted(spec: &ScalingSpec, partitions: &[(u32, i64, i64)]) -> (Resources, Resources) {
    let m = metrics(partitions);
    let obs = predict::observe(spec.layout.bucket(0).unwrap(), &m, spec.recovery).unwrap();
    let p = predict::predict(spec, &obs);
    let t = p.targets.iter().find(|t| t.name == spec.scaled).unwrap();
    (t.requests, t.limits)
}

#[test]
fn consumption_18510_at_10000_per_core_is_1900m_limit_2() {
    let s = spec(10000.0, "1G", None);
    let (req, lim) = predicted(&s, &[(0, 18510, 0)]);
    assert_eq!(req.cpu, Some(q("1900m")));
    assert_eq!(lim.cpu, Some(q("2")));
    assert_eq!(lim.memory, Some(q("2G")));
}

#[test]
fn cpu_increment_sets_the_request_step() {
    // Konsumerator's TestEstimateCpu cases (load 11510 at 10000 per core).
    for (step, want) in [("400m", "1200m"), ("500m", "1500m"), ("1", "2")] {
        let mut s = spec(10000.0, "1G", None);
        s.cpu_increment = q(step);
        let (req, lim) = predicted(&s, &[(0, 11510, 0)]);
        assert_eq!(req.cpu, Some(q(want)), "step {step}");
        assert_eq!(lim.cpu, Some(q("2")), "step {step}");
    }
    // The same steps at 18510 msg/s all round to two cores.
    for step in ["400m", "500m", "1"] {
        let mut s = spec(10000.0, "1G", None);
        s.cpu_increment = q(step);
        assert_eq!(
            predicted(&s, &[(0, 18510, 0)]).0.cpu,
            Some(q("2")),
            "step {step}"
        );
    }
}

#[test]
fn low_production_gets_the_smallest_step_one_core_and_its_memory() {
    let s = spec(10000.0, "1G", None);
    let (req, lim) = predicted(&s, &[(0, 200, 0)]);
    assert_eq!((req.cpu, lim.cpu), (Some(q("100m")), Some(q("1"))));
    assert_eq!((req.memory, lim.memory), (Some(q("1G")), Some(q("1G"))));
}

#[test]
fn lag_adds_catch_up_load_within_the_recovery_time() {
    let mut s = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
    s.recovery = Duration::from_secs(60 * 60);
    let six_minutes = 5000 * 60 * 6;
    let (req, lim) = predicted(&s, &[(0, 5000, six_minutes)]);
    assert_eq!(req.cpu, Some(q("1100m")));
    assert_eq!(lim.cpu, Some(q("2")));
    assert_eq!((req.memory, lim.memory), (Some(q("400M")), Some(q("400M"))));
    let (req, _) = predicted(&s, &[(0, 5000, 5000 * 60 * 15)]);
    assert_eq!(req.cpu, Some(q("1300m")));
}

#[test]
fn expected_consumption_with_lag_matches_konsumerator() {
    // production 20001, 12,000,000 behind, recovery 30m: Konsumerator's 26656 msg/s
    // (it truncates the lag to 599s; konsumer keeps 599.97s).
    let m = metrics(&[(0, 20001, 12_000_000)]);
    let obs = predict::observe(0..1, &m, Duration::from_secs(1800)).unwrap();
    assert!((obs.load - 26667.0).abs() < 1.0, "{}", obs.load);
    assert!((obs.max_lag_seconds - 599.97).abs() < 0.01);
}

#[test]
fn partitions_without_data_count_as_the_busiest() {
    let mut s = spec(10000.0, "1G", None);
    s.layout = Layout::new(4, 4).unwrap();
    let (req, lim) = predicted(&s, &[(0, 20000, 0), (1, 10000, 0)]);
    assert_eq!(req.cpu, Some(q("7")), "20000 + 10000 + 2 × 20000");
    assert_eq!(lim.memory, Some(q("7G")));
    let obs =
        predict::observe(0..4, &metrics(&[(0, 20000, 0), (1, 10000, 0)]), s.recovery).unwrap();
    assert_eq!(obs.partitions_without_data, 2);
    assert!(
        predict::observe(0..4, &BTreeMap::new(), s.recovery).is_none(),
        "no data at all"
    );
}

#[test]
fn the_limit_is_clamped_to_max_allowed_and_the_cut_is_saturation() {
    let s = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
    let m = metrics(&[(0, 10000, 6_000_000)]);
    let mut s2 = s.clone();
    s2.recovery = Duration::from_secs(3600);
    let obs = predict::observe(0..1, &m, s2.recovery).unwrap();
    let p = predict::predict(&s2, &obs);
    let t = &p.targets[0];
    assert_eq!(p.wanted_cpu, q("2400m"));
    assert_eq!(t.requests.cpu, Some(q("2")));
    assert_eq!(
        t.limits.cpu,
        Some(q("2")),
        "Konsumerator let the limit reach 3"
    );
    assert_eq!(t.limits.memory, Some(q("400M")));
    assert_eq!(p.saturation, q("400m"));
}

#[test]
fn critical_lag_targets_max_allowed() {
    let mut s = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
    s.critical_lag = Some(Duration::from_secs(15 * 60));
    s.recovery = Duration::from_secs(3600);
    let (req, lim) = predicted(&s, &[(0, 5000, 5000 * 60 * 15)]);
    assert_eq!((req.cpu, lim.cpu), (Some(q("2")), Some(q("2"))));
    assert_eq!((req.memory, lim.memory), (Some(q("400M")), Some(q("400M"))));
    let (req, _) = predicted(&s, &[(0, 5000, 5000 * 60 * 14)]);
    assert_eq!(
        req.cpu,
        Some(q("1300m")),
        "below the critical lag: the estimate"
    );
}

#[test]
fn sidecars_keep_their_fallback() {
    let mut s = spec(1000.0, "100M", Some(("100m", "100M", "8", "8G")));
    s.policies.push(Policy {
        name: "log-shipper".into(),
        min: res("50m", "64Mi"),
        max: res("200m", "128Mi"),
    });
    s.fallback.push(ContainerTarget {
        name: "log-shipper".into(),
        requests: res("50m", "64Mi"),
        limits: res("50m", "64Mi"),
    });
    let obs = predict::observe(0..1, &metrics(&[(0, 3000, 0)]), s.recovery).unwrap();
    let p = predict::predict(&s, &obs);
    let shipper = p.targets.iter().find(|t| t.name == "log-shipper").unwrap();
    assert_eq!(shipper.requests.cpu, Some(q("50m")));
    let main = p.targets.iter().find(|t| t.name == "busybox").unwrap();
    assert_eq!(main.requests.cpu, Some(q("3")));
}

#[test]
fn the_global_cap_counts_what_every_instance_uses_now() {
    let mut s = spec(1000.0, "100M", Some(("100m", "100M", "8", "8G")));
    s.layout = Layout::new(3, 1).unwrap();
    s.global_max = Resources {
        cpu: Some(q("4")),
        memory: None,
    };
    let current: Vec<Vec<ContainerTarget>> = ["1", "1", "1500m"]
        .iter()
        .map(|cpu| {
            vec![ContainerTarget {
                name: "busybox".into(),
                requests: res(cpu, "100M"),
                limits: res("2", "100M"),
            }]
        })
        .collect();
    // instance 0 wants 2 (+1), instance 1 wants 3 (+2), instance 2 drops to 500m (-1).
    let m = metrics(&[(0, 2000, 0), (1, 3000, 0), (2, 500, 0)]);
    let mut predictions: Vec<_> = (0..3)
        .map(|i| predict::observe(i..i + 1, &m, s.recovery).map(|o| predict::predict(&s, &o)))
        .collect();
    let current: Vec<&[_]> = current.iter().map(Vec::as_slice).collect();
    predict::apply_global_cap(&s, &current, &mut predictions);
    let cpu = |i: usize| {
        predictions[i].as_ref().unwrap().targets[0]
            .requests
            .cpu
            .unwrap()
    };
    // 4 - (1 + 1 + 1.5) = 500m left: instance 0 gets it, instance 1 nothing. The
    // decrease of instance 2 frees nothing until it happens.
    assert_eq!(cpu(0), q("1500m"));
    assert_eq!(predictions[0].as_ref().unwrap().saturation, q("500m"));
    assert_eq!(cpu(1), q("1"));
    assert_eq!(predictions[1].as_ref().unwrap().saturation, q("2"));
    assert_eq!(cpu(2), q("500m"));
    // Whatever applies first, the sum never exceeds the cap.
    let total: Milli = (0..3).map(cpu).sum();
    assert!(
        total <= q("4") + q("1"),
        "at most the current sum plus what is left"
    );
    let over: Vec<Vec<ContainerTarget>> = ["3", "2"]
        .iter()
        .map(|c| {
            vec![ContainerTarget {
                name: "busybox".into(),
                requests: res(c, "100M"),
                limits: res("4", "100M"),
            }]
        })
        .collect();
    let mut s2 = s.clone();
    s2.layout = Layout::new(2, 1).unwrap();
    let m = metrics(&[(0, 4000, 0), (1, 4000, 0)]);
    let mut more: Vec<_> = (0..2)
        .map(|i| predict::observe(i..i + 1, &m, s2.recovery).map(|o| predict::predict(&s2, &o)))
        .collect();
    let over: Vec<&[_]> = over.iter().map(Vec::as_slice).collect();
    predict::apply_global_cap(&s2, &over, &mut more);
    for (p, now) in more.iter().zip(["3", "2"]) {
        let t = &p.as_ref().unwrap().targets[0];
        assert_eq!(
            t.requests.cpu,
            Some(q(now)),
            "over the cap already: no increase granted"
        );
    }
}

// ---- the state machine, step by step on a fake clock ----

struct Run {
    spec: ScalingSpec,
    status: Vec<InstanceStatus>,
    now: Timestamp,
    /// The metrics handed to the next ticks are the last good ones of a failing Prometheus.
    failing: bool,
}

impl Run {
    fn new() -> Self {
        let mut spec = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
        spec.recovery = Duration::from_secs(3600);
        Run {
            spec,
            status: Vec::new(),
            now: "2026-11-22T12:00:00Z".parse().unwrap(),
            failing: false,
        }
    }

    fn advance(&mut self, minutes: i64) {
        self.now += SignedDuration::from_mins(minutes);
    }

    /// One reconcile with (production, messages behind) read now.
    fn tick(&mut self, production: i64, behind: i64) -> Out {
        let m = metrics(&[(0, production, behind)]);
        self.tick_with(Some(&m), self.now, false)
    }

    fn tick_with(
        &mut self,
        m: Option<&BTreeMap<u32, PartitionState>>,
        observed_at: Timestamp,
        frozen: bool,
    ) -> Out {
        let input = |restored| StepInput {
            spec: &self.spec,
            previous: &self.status,
            restored,
            metrics: m.map(|partitions| Metrics {
                partitions,
                observed_at,
                failing: self.failing,
            }),
            frozen,
            now: self.now,
        };
        let out = step(input(None));
        // The instances kept from an earlier pass decide the same.
        let kept = Restored::new(&self.spec, &self.status);
        assert_eq!(step(input(Some(&kept))), out);
        let unchanged = !out.changed(&self.status);
        let out = Out {
            transitions: out.transitions.clone(),
            lagging: out.lagging.clone(),
            unchanged,
            instances: out.into_owned(),
        };
        self.status = out.instances.clone();
        out
    }

    fn lag_minutes(&mut self, minutes: i64) -> Out {
        self.tick(5000, 5000 * 60 * minutes)
    }

    fn state(&self) -> ScalingState {
        self.status[0].state
    }

    fn since(&self) -> Timestamp {
        self.status[0].since.as_ref().unwrap().0
    }

    fn cpu(&self) -> (String, String) {
        let r = &self.status[0].resources[0];
        (r.requests["cpu"].0.clone(), r.limits["cpu"].0.clone())
    }

    fn memory(&self) -> String {
        self.status[0].resources[0].requests["memory"].0.clone()
    }
}

/// A step's output, owned.
struct Out {
    instances: Vec<InstanceStatus>,
    transitions: Vec<super::Transition>,
    lagging: Vec<bool>,
    /// Every instance was borrowed from the previous status.
    unchanged: bool,
}

fn events(out: &Out) -> Vec<Event> {
    out.transitions.iter().map(|t| t.event).collect()
}

#[test]
fn scale_up_saturation_recovery_and_scale_down_step_by_step() {
    let mut r = Run::new();
    let t0 = r.now;
    // 1. Prometheus unreachable: the instance starts on its fallback.
    let out = r.tick_with(None, t0, false);
    assert!(out.transitions.is_empty());
    assert_eq!(
        (r.state(), r.cpu()),
        (ScalingState::Running, ("100m".into(), "100m".into()))
    );

    // 2. 1 minute behind (below tolerableLag 3m): no scale up without lag.
    let out = r.lag_minutes(1);
    assert!(out.transitions.is_empty());
    assert!(out.unchanged, "nothing to write");
    assert_eq!(r.state(), ScalingState::Running);
    assert_eq!(r.cpu().0, "100m");

    // 3. 6 minutes behind: pending scale up.
    r.advance(10);
    let t_pending = r.now;
    let out = r.lag_minutes(6);
    assert_eq!(events(&out), vec![Event::ScalePending(Direction::Up)]);
    assert_eq!(
        (r.state(), r.since()),
        (ScalingState::PendingScaleUp, t_pending)
    );
    assert_eq!(r.cpu().0, "100m", "nothing recommended while pending");
    let pending = &r.status[0].pending.as_ref().unwrap()[0];
    assert_eq!(pending.requests["cpu"].0, "1100m");

    // 4. Still lagging after the pending period: scale up to the prediction (1300m).
    r.advance(10);
    let out = r.lag_minutes(15);
    assert_eq!(events(&out), vec![Event::Scaled(Direction::Up)]);
    assert_eq!((r.state(), r.since()), (ScalingState::Running, r.now));
    assert_eq!(r.cpu(), ("1300m".into(), "2".into()));
    assert_eq!(r.memory(), "400M");
    let t = &out.transitions[0];
    assert_eq!(
        (t.from, t.to),
        (ScalingState::PendingScaleUp, ScalingState::Running)
    );
    assert_eq!(t.previous[0].requests["cpu"].0, "100m");
    assert_eq!(t.new[0].requests["cpu"].0, "1300m");
    assert!(t.observation.as_ref().unwrap().max_lag_seconds >= 900.0);

    // 5. More lag: pending again.
    r.advance(10);
    let out = r.lag_minutes(20);
    assert_eq!(events(&out), vec![Event::ScalePending(Direction::Up)]);

    // 6. Production doubles: the prediction (2400m) is cut at maxAllowed (2): saturated.
    r.advance(10);
    let out = r.tick(10000, 6_000_000);
    assert_eq!(
        events(&out),
        vec![Event::Scaled(Direction::Up), Event::Saturated]
    );
    assert_eq!(r.state(), ScalingState::Saturated);
    assert_eq!(r.cpu(), ("2".into(), "2".into()));
    assert_eq!(r.status[0].saturation.as_ref().unwrap().0, "400m");

    // 7. Still lagging at the cap: saturated, with the new shortfall.
    r.advance(10);
    let since = r.since();
    let out = r.tick(10000, 3_000_000);
    assert!(out.transitions.is_empty());
    assert_eq!((r.state(), r.since()), (ScalingState::Saturated, since));
    assert_eq!(r.status[0].saturation.as_ref().unwrap().0, "200m");

    // 8. The lag falls below tolerableLag: unsaturated, pending scale down.
    r.advance(10);
    let out = r.lag_minutes(2);
    assert_eq!(
        events(&out),
        vec![Event::Unsaturated, Event::ScalePending(Direction::Down)]
    );
    assert_eq!(r.state(), ScalingState::PendingScaleDown);
    assert!(r.status[0].saturation.is_none());

    // 9. Quiet for the pending period: scale down to 1100m.
    r.advance(10);
    let out = r.lag_minutes(1);
    assert_eq!(events(&out), vec![Event::Scaled(Direction::Down)]);
    assert_eq!(
        (r.state(), r.cpu()),
        (ScalingState::Running, ("1100m".into(), "2".into()))
    );

    // 10. Production drops: pending scale down; 11. back up: cancelled.
    r.advance(10);
    let out = r.tick(1000, 0);
    assert_eq!(events(&out), vec![Event::ScalePending(Direction::Down)]);
    r.advance(10);
    let out = r.lag_minutes(1);
    assert_eq!(events(&out), vec![Event::ScaleCancelled(Direction::Down)]);
    assert_eq!((r.state(), r.since()), (ScalingState::Running, r.now));
    assert_eq!(r.cpu().0, "1100m");

    // 12. Very low production, quiet long enough: down to the minimum.
    r.advance(10);
    r.tick(10, 0);
    r.advance(10);
    let out = r.tick(10, 0);
    assert_eq!(events(&out), vec![Event::Scaled(Direction::Down)]);
    assert_eq!(r.cpu(), ("100m".into(), "1".into()));
    assert_eq!(r.memory(), "200M");
    assert!(r.now > t0);
}

#[test]
fn pending_up_is_cancelled_when_the_lag_clears() {
    let mut r = Run::new();
    r.lag_minutes(6);
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    r.advance(2);
    // Higher prediction (production 20000) but no lag: cancelled, not scaled.
    let out = r.tick(20000, 0);
    assert_eq!(events(&out), vec![Event::ScaleCancelled(Direction::Up)]);
    assert_eq!((r.state(), r.since()), (ScalingState::Running, r.now));
    assert_eq!(r.cpu().0, "100m");
    assert!(
        out.transitions[0].reason.contains("lag is gone"),
        "{}",
        out.transitions[0].reason
    );
}

#[test]
fn pending_up_is_cancelled_when_the_prediction_falls_to_the_recommendation() {
    let mut r = Run::new();
    r.lag_minutes(6);
    r.advance(2);
    // Lagging, but the prediction is now the minimum itself.
    let out = r.tick(10, 10 * 60 * 10);
    assert_eq!(events(&out), vec![Event::ScaleCancelled(Direction::Up)]);
    assert_eq!(r.state(), ScalingState::Running);
}

#[test]
fn pending_down_is_cancelled_by_a_new_lag() {
    let mut r = Run::new();
    // Scale up first, so there is room to go down.
    r.lag_minutes(6);
    r.advance(10);
    r.lag_minutes(15);
    assert_eq!(r.cpu().0, "1300m");
    r.advance(1);
    r.tick(1000, 0);
    assert_eq!(r.state(), ScalingState::PendingScaleDown);
    // Konsumerator ignored this: lower prediction, but lagging now.
    r.advance(1);
    let out = r.tick(1000, 1000 * 60 * 10);
    assert_eq!(events(&out), vec![Event::ScaleCancelled(Direction::Down)]);
    assert_eq!(r.state(), ScalingState::Running);
    assert!(out.transitions[0].reason.contains("lag appeared"));
    assert_eq!(r.cpu().0, "1300m", "no scale down while lagging");
}

#[test]
fn pending_down_turns_into_pending_up_when_lag_and_load_rise() {
    let mut r = Run::new();
    r.lag_minutes(6);
    r.advance(10);
    r.lag_minutes(15);
    r.advance(1);
    r.tick(1000, 0);
    r.advance(1);
    let out = r.tick(8000, 8000 * 60 * 10);
    assert_eq!(
        events(&out),
        vec![
            Event::ScaleCancelled(Direction::Down),
            Event::ScalePending(Direction::Up)
        ]
    );
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    let t = &out.transitions;
    assert_eq!(
        (t[0].from, t[0].to),
        (ScalingState::PendingScaleDown, ScalingState::Running)
    );
    assert_eq!(
        (t[1].from, t[1].to),
        (ScalingState::Running, ScalingState::PendingScaleUp)
    );
}

#[test]
fn stale_metrics_never_scale_and_a_failing_prometheus_ends_a_pending_state() {
    let mut r = Run::new();
    r.lag_minutes(6);
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    let pending_since = r.since();
    r.advance(10);
    let m = metrics(&[(0, 5000, 5000 * 60 * 15)]);
    let observed = r.now - SignedDuration::from_mins(6);
    // Metrics read 6 minutes ago, not yet due again (a minSyncPeriod longer than
    // the pending period): no scale on them, and no reason to cancel either.
    let out = r.tick_with(Some(&m), observed, false);
    assert!(out.transitions.is_empty());
    assert_eq!(
        (r.state(), r.since()),
        (ScalingState::PendingScaleUp, pending_since)
    );
    assert_eq!(r.cpu().0, "100m");
    // The same metrics while Prometheus fails: nobody saw the lag hold through
    // the gap, so the pending period ends.
    r.failing = true;
    let out = r.tick_with(Some(&m), observed, false);
    assert_eq!(events(&out), [Event::ScaleCancelled(Direction::Up)]);
    assert!(
        out.transitions[0].reason.contains("6m0s ago"),
        "{}",
        out.transitions[0].reason
    );
    assert_eq!((r.state(), r.since()), (ScalingState::Running, r.now));
    assert_eq!(r.cpu().0, "100m", "the recommendation is untouched");
    // Stale metrics never start a pending period either.
    let out = r.tick_with(Some(&m), observed, false);
    assert!(out.transitions.is_empty());
    assert_eq!(r.state(), ScalingState::Running);
    // Fresh metrics again: the pending period starts over from now.
    r.failing = false;
    r.advance(1);
    let out = r.tick_with(Some(&m), r.now, false);
    assert_eq!(events(&out), [Event::ScalePending(Direction::Up)]);
    assert_eq!(
        (r.state(), r.since()),
        (ScalingState::PendingScaleUp, r.now)
    );
    // A failed read younger than the pending period changes nothing.
    r.advance(2);
    r.failing = true;
    let observed = r.now - SignedDuration::from_mins(2);
    let out = r.tick_with(Some(&m), observed, false);
    assert!(out.transitions.is_empty(), "a blip is not an outage");
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    r.failing = false;
    // No metrics at all while pending: cancelled, recommendation kept.
    let out = r.tick_with(None, r.now, false);
    assert_eq!(events(&out), [Event::ScaleCancelled(Direction::Up)]);
    assert_eq!(r.state(), ScalingState::Running);
    assert_eq!(r.cpu().0, "100m");
    // And without metrics a steady instance stays as it is.
    let out = r.tick_with(None, r.now, false);
    assert!(out.transitions.is_empty());
    assert_eq!(r.state(), ScalingState::Running);
}

#[test]
fn a_sync_period_longer_than_the_pending_period_delays_a_scale_without_flapping() {
    // minSyncPeriod 6m, pendingScaleUpDuration 5m: a read every 6 minutes.
    let mut r = Run::new();
    let m = metrics(&[(0, 5000, 5000 * 60 * 15)]);
    let read_at = r.now;
    let out = r.tick_with(Some(&m), read_at, false);
    assert_eq!(events(&out), [Event::ScalePending(Direction::Up)]);
    for _ in 0..4 {
        r.advance(1);
        let out = r.tick_with(Some(&m), read_at, false);
        assert!(out.transitions.is_empty(), "pending: {:?}", events(&out));
    }
    // The pass that would complete the period came late (6 minutes): its
    // metrics are older than the period, so it waits for the next read, and
    // it does not cancel (nothing failed).
    r.advance(2);
    let out = r.tick_with(Some(&m), read_at, false);
    assert!(
        out.transitions.is_empty(),
        "between reads: {:?}",
        events(&out)
    );
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    let out = r.tick_with(Some(&m), r.now, false);
    assert_eq!(events(&out), [Event::Scaled(Direction::Up)]);
    assert_eq!(r.cpu().0, "1300m");
}

#[test]
fn missing_lag_data_never_scales_down() {
    let mut s = spec(5000.0, "200M", Some(("100m", "100M", "4", "800M")));
    s.layout = Layout::new(2, 2).unwrap();
    s.recovery = Duration::from_secs(3600);
    let mut r = Run {
        spec: s,
        status: Vec::new(),
        now: "2026-11-22T12:00:00Z".parse().unwrap(),
        failing: false,
    };
    // Both partitions lag: scale up to 2 × (5000 × 1.25) / 5000 per core.
    let lagging = metrics(&[(0, 5000, 5000 * 60 * 15), (1, 5000, 5000 * 60 * 15)]);
    r.tick_with(Some(&lagging), r.now, false);
    r.advance(6);
    let out = r.tick_with(Some(&lagging), r.now, false);
    assert_eq!(events(&out), [Event::Scaled(Direction::Up)]);
    let scaled = r.cpu();
    // The lag query loses partition 1; partition 0 is caught up. Partition 1
    // counts as the busiest (no lower estimate) and no scale-down starts.
    let partial = metrics(&[(0, 1000, 0)]);
    r.advance(1);
    let out = r.tick_with(Some(&partial), r.now, false);
    assert!(
        !events(&out).contains(&Event::ScalePending(Direction::Down)),
        "{:?}",
        events(&out)
    );
    r.advance(20);
    let out = r.tick_with(Some(&partial), r.now, false);
    assert!(out.transitions.is_empty(), "{:?}", events(&out));
    assert_eq!(
        (r.state(), r.cpu()),
        (ScalingState::Running, scaled.clone())
    );
    // With every partition's lag known and none lagging: the scale-down starts,
    // and losing a partition's lag again cancels it.
    let caught_up = metrics(&[(0, 1000, 0), (1, 1000, 0)]);
    r.advance(1);
    let out = r.tick_with(Some(&caught_up), r.now, false);
    assert_eq!(events(&out), [Event::ScalePending(Direction::Down)]);
    r.advance(1);
    let out = r.tick_with(Some(&partial), r.now, false);
    assert_eq!(events(&out), [Event::ScaleCancelled(Direction::Down)]);
    assert!(
        out.transitions[0].reason.contains("no lag data"),
        "{}",
        out.transitions[0].reason
    );
    assert_eq!(r.cpu(), scaled);
}

#[test]
fn a_frozen_autoscaler_keeps_its_recommendation() {
    let mut r = Run::new();
    r.lag_minutes(6);
    r.advance(10);
    let m = metrics(&[(0, 5000, 5000 * 60 * 15)]);
    let out = r.tick_with(Some(&m), r.now, true);
    assert!(out.transitions.is_empty());
    assert!(
        out.unchanged,
        "a frozen instance is the stored one, not a rewrite"
    );
    assert_eq!(out.instances.len(), 1);
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    assert_eq!(r.cpu().0, "100m");
    assert!(out.lagging[0], "lag is still reported while frozen");
}

#[test]
fn a_changed_partition_layout_restarts_instances_on_the_fallback() {
    let mut r = Run::new();
    r.lag_minutes(6);
    r.advance(10);
    r.lag_minutes(15);
    assert_eq!(r.cpu().0, "1300m");
    r.spec.layout = Layout::new(2, 1).unwrap();
    let m = metrics(&[(0, 5000, 0), (1, 5000, 0)]);
    r.tick_with(Some(&m), r.now, false);
    assert_eq!(r.status.len(), 2);
    assert_eq!(r.status[0].partitions, vec![0]);
    assert_eq!(
        r.status[0].resources[0].requests["cpu"].0, "1300m",
        "same partitions: kept"
    );
    assert_eq!(
        r.status[1].resources[0].requests["cpu"].0, "100m",
        "new instance: fallback"
    );
}

#[test]
fn a_pending_period_started_mid_second_never_ends_early_after_a_round_trip() {
    let mut r = Run::new();
    r.now = "2026-11-22T12:00:00.700Z".parse().unwrap();
    r.lag_minutes(6);
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    // The API server keeps whole seconds: round-trip the status through JSON.
    r.status = serde_json::from_value(serde_json::to_value(&r.status).unwrap()).unwrap();
    let since = r.since();
    assert!(
        since >= "2026-11-22T12:00:00.700Z".parse().unwrap(),
        "recorded {since}, rounded up"
    );
    // 4m59.4s after the real start: not yet.
    r.now = "2026-11-22T12:05:00.100Z".parse().unwrap();
    r.lag_minutes(15);
    assert_eq!(r.state(), ScalingState::PendingScaleUp);
    r.now = "2026-11-22T12:05:01Z".parse().unwrap();
    r.lag_minutes(15);
    assert_eq!(r.state(), ScalingState::Running);
    assert_eq!(r.cpu().0, "1300m");
}

#[test]
fn stored_recommendations_follow_a_changed_policy() {
    let mut r = Run::new();
    r.lag_minutes(6);
    r.advance(10);
    r.lag_minutes(15);
    assert_eq!(r.cpu(), ("1300m".into(), "2".into()));
    // maxAllowed lowered to 1 core: the stored recommendation is brought down now.
    r.spec.policies[0].max.cpu = Some(q("1"));
    r.advance(1);
    let out = r.lag_minutes(15);
    assert!(!out.unchanged, "rewritten");
    assert_eq!(r.cpu(), ("1".into(), "1".into()));
    // A container policy added later gets its fallback instead of nothing.
    r.spec.policies.push(Policy {
        name: "log-shipper".into(),
        min: res("50m", "64Mi"),
        max: res("200m", "128Mi"),
    });
    r.spec.fallback.push(ContainerTarget {
        name: "log-shipper".into(),
        requests: res("50m", "64Mi"),
        limits: res("50m", "64Mi"),
    });
    r.advance(1);
    r.lag_minutes(15);
    let shipper = r.status[0]
        .resources
        .iter()
        .find(|c| c.container_name == "log-shipper")
        .unwrap();
    assert_eq!(shipper.requests["cpu"].0, "50m");
}

#[test]
fn absurd_loads_saturate_instead_of_overflowing() {
    // A broken exporter reporting 1e300 msg/s, with a large ramPerCore.
    let s = spec(0.001, "1Ei", Some(("100m", "100M", "2", "400M")));
    for load in [1e300, f64::INFINITY, f64::MAX, -1.0, f64::NAN] {
        let (request, limit, memory) = predict::estimate(&s, load);
        assert!(request <= limit, "{load}: {request:?} {limit:?}");
        assert!(memory.0 >= 0, "{load}: {memory:?}");
    }
    let (_, _, memory) = predict::estimate(&s, 1e300);
    assert_eq!(memory, Milli(i128::MAX), "saturated");
    // The caps still apply: the container is held at maxAllowed.
    let (requests, limits) = predicted(&s, &[(0, 1_000_000_000, 0)]);
    assert_eq!(limits.cpu, Some(q("2")));
    assert_eq!(requests.memory, Some(q("400M")));
}

// ---- the instances kept between passes against the ones read again ----

/// Stored instances of every shape: ids in and out of the layout, partitions
/// that fit or not, each state, `since` or none, quantities well formed or
/// not, containers with and without a policy, pending or not, saturation.
fn arbitrary_instances() -> impl proptest::strategy::Strategy<Value = Vec<InstanceStatus>> {
    use crate::api::ContainerResources;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;
    let quantity = prop::sample::select(vec!["100m", "1", "2500m", "64Mi", "1Gi", "4", "x", "-1"]);
    let list = prop::collection::vec(
        (
            prop::sample::select(vec!["cpu", "memory", "gpu"]),
            quantity.clone(),
        ),
        0..3,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect::<crate::api::ResourceList>()
    });
    let containers = prop::collection::vec(
        (
            prop::sample::select(vec!["busybox", "log-shipper", "*"]),
            list.clone(),
            list,
        ),
        0..3,
    )
    .prop_map(|cs| {
        cs.into_iter()
            .map(|(name, requests, limits)| ContainerResources {
                container_name: name.to_string(),
                requests,
                limits,
            })
            .collect::<Vec<_>>()
    });
    let state = prop::sample::select(vec![
        ScalingState::Running,
        ScalingState::PendingScaleUp,
        ScalingState::PendingScaleDown,
        ScalingState::Saturated,
    ]);
    let instance = (
        0i32..5,
        prop::bool::weighted(0.8),
        state,
        prop::option::of(0i64..600),
        containers.clone(),
        prop::option::of(containers),
        prop::option::of(quantity),
    )
        .prop_map(|(id, fits, state, since, resources, pending, saturation)| {
            // The test layout puts partitions 2 × id and 2 × id + 1 on instance id.
            let partitions = if fits {
                vec![2 * id, 2 * id + 1]
            } else {
                vec![id]
            };
            let t0: Timestamp = "2026-11-22T11:50:00Z".parse().unwrap();
            InstanceStatus {
                id,
                partitions,
                state,
                since: since.map(|s| Time(t0 + SignedDuration::from_secs(s))),
                resources,
                pending,
                saturation: saturation.map(|q| Quantity(q.to_string())),
            }
        });
    prop::collection::vec(instance, 0..6)
}

#[test]
fn the_instances_kept_from_an_earlier_pass_decide_what_the_status_read_again_decides() {
    use proptest::prelude::*;
    let mut s = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
    s.layout = Layout::new(8, 2).unwrap();
    s.global_max = res("5", "2G");
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    proptest!(|(
        previous in arbitrary_instances(),
        load in prop::collection::vec((0u32..9, 0i64..20_000, 0i64..10_000_000), 0..9),
        failing: bool,
        frozen: bool,
        with_metrics in prop::bool::weighted(0.9),
    )| {
        let m = metrics(&load);
        let input = |restored| StepInput {
            spec: &s,
            previous: &previous,
            restored,
            metrics: with_metrics.then_some(Metrics {
                partitions: &m,
                observed_at: now,
                failing,
            }),
            frozen,
            now,
        };
        let kept = Restored::new(&s, &previous);
        prop_assert_eq!(step(input(Some(&kept))), step(input(None)));
    });
}

#[test]
fn the_stamp_changes_with_the_stored_instances_and_the_policy() {
    use proptest::prelude::*;
    use std::hash::RandomState;
    let keys = RandomState::new();
    let mut s = spec(5000.0, "200M", Some(("100m", "100M", "2", "400M")));
    s.layout = Layout::new(8, 2).unwrap();
    proptest!(|(a in arbitrary_instances(), b in arbitrary_instances())| {
        let same = Restored::stamp(&keys, &s, &a) == Restored::stamp(&keys, &s, &b);
        prop_assert_eq!(same, a == b);
        prop_assert_eq!(Restored::stamp(&keys, &s, &a), Restored::stamp(&keys, &s, &a.clone()));
        let mut tighter = s.clone();
        tighter.policies[0].max.cpu = Some(q("3"));
        prop_assert_ne!(Restored::stamp(&keys, &s, &a), Restored::stamp(&keys, &tighter, &a));
    });
}
