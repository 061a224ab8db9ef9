//! Reconciler benchmarks (run with `cargo bench --bench reconcile`):
//!
//! 1. One reconcile pass over 1,000 Consumers × 100 partitions from cached metrics
//!    (the status' lastSyncState, parsed once per sync as the reconciler does):
//!    settings, predictor, caps, state machine, counters — `scaling::consumer::
//!    reconcile`, the reconciler's own pure core. Also a pass where every Consumer
//!    got fresh metrics. Baseline in the same run: serializing the statuses (what
//!    writing them costs at the least).
//! 2. The managed Deployments of the same 1,000 Consumers (10 instances each),
//!    in the steady state (every Deployment as konsumer would apply it):
//!    `manage::decide`, what the Deployment manager decides per pass. Baseline in
//!    the same run: the pass of 1.
//! 3. Parsing a 100,000-series Prometheus answer into values per partition.
//!    Baseline in the same run: `serde_json::from_slice::<Value>` of the same body.
//!
//! Times are this thread's CPU time (`/proc/thread-self/schedstat`), best and
//! median of several runs.
//!
//! `ONLY=fresh` runs only the fresh pass of 1 (`RUNS` times, 10 by default), for
//! profilers: `valgrind --tool=callgrind --toggle-collect='*fresh_pass*'`.

use std::collections::BTreeMap;
use std::hash::RandomState;
use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use konsumer::api::{Consumer, ConsumerStatus, PartitionState, SyncState};
use konsumer::inject::ConsumerSettings;
use konsumer::manage::{self, Owner, Recipe};
use konsumer::reconciler::prometheus::parse_response;
use konsumer::scaling::consumer::{ConsumerInput, Refresh, parse_sync_state, reconcile};
use konsumer::scaling::{Restored, ScalingSpec};

fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Runs `f` `runs` times; (best, median) CPU time and wall time of the best run.
fn measure<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, Duration) {
    let mut cpu = Vec::with_capacity(runs);
    let mut wall = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (c0, w0) = (thread_cpu(), Instant::now());
        black_box(f());
        cpu.push(thread_cpu() - c0);
        wall.push(w0.elapsed());
    }
    let best = *cpu.iter().min().unwrap_or(&Duration::ZERO);
    cpu.sort();
    (
        best,
        cpu[cpu.len() / 2],
        *wall.iter().min().unwrap_or(&Duration::ZERO),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn consumers(n: usize, partitions: u32, now: Timestamp) -> Vec<Consumer> {
    let template: Consumer =
        serde_saphyr::from_str(include_str!("../tests/fixtures/consumer-orders.yaml"))
            .expect("fixture");
    (0..n)
        .map(|i| {
            let mut c = template.clone();
            c.metadata.name = Some(format!("consumer-{i}"));
            c.spec.name = Some(format!("consumer-{i}"));
            c.spec.num_partitions = Some(partitions as i32);
            c.spec.num_partitions_per_instance = Some(10);
            // A spread of quiet, busy and lagging partitions.
            let state: SyncState = (0..partitions)
                .map(|p| {
                    let production = 1_000 + ((p as i64 * 37 + i as i64 * 11) % 5_000);
                    let behind = if (p + i as u32).is_multiple_of(7) {
                        production * 600
                    } else {
                        0
                    };
                    (
                        p.to_string(),
                        PartitionState {
                            production_rate: production,
                            consumption_rate: production,
                            messages_behind: behind,
                        },
                    )
                })
                .collect();
            c.status = Some(ConsumerStatus {
                last_sync_state: Some(state),
                last_sync_time: Some(Time(now)),
                ..ConsumerStatus::default()
            });
            c
        })
        .collect()
}

/// What the reconciler keeps between passes: resolved settings, parsed metrics,
/// the status' instances as the machine reads them (with their stamp).
struct Cached {
    consumer: Consumer,
    settings: Option<ConsumerSettings>,
    metrics: BTreeMap<u32, PartitionState>,
    restored: Option<(u64, Restored)>,
}

fn instances(c: &Consumer) -> Option<&[konsumer::api::InstanceStatus]> {
    c.status
        .as_ref()?
        .instances
        .as_deref()
        .filter(|i| !i.is_empty())
}

fn cache(consumers: &[Consumer], keys: &RandomState) -> Vec<Cached> {
    consumers
        .iter()
        .map(|c| Cached {
            restored: ScalingSpec::from_consumer(c)
                .ok()
                .flatten()
                .zip(instances(c))
                .map(|(spec, i)| (Restored::stamp(keys, &spec, i), Restored::new(&spec, i))),
            settings: ConsumerSettings::from_consumer(c).ok(),
            metrics: c
                .status
                .as_ref()
                .and_then(|s| s.last_sync_state.as_ref())
                .map(parse_sync_state)
                .unwrap_or_default(),
            consumer: c.clone(),
        })
        .collect()
}

/// One pass over every Consumer, what the reconciler computes without I/O
/// (`refresh`: every Consumer also got fresh metrics this pass). The kept
/// instances are used when their stamp still matches, as in the reconciler.
fn pass(
    all: &[Cached],
    refresh: bool,
    now: Timestamp,
    keys: &RandomState,
) -> Vec<Option<ConsumerStatus>> {
    all.iter()
        .map(|c| {
            let spec = ScalingSpec::from_consumer(&c.consumer);
            let restored = match (&spec, instances(&c.consumer), &c.restored) {
                (Ok(Some(spec)), Some(i), Some((stamp, kept)))
                    if Restored::stamp(keys, spec, i) == *stamp =>
                {
                    Some(kept)
                }
                _ => None,
            };
            let out = reconcile(ConsumerInput {
                consumer: &c.consumer,
                spec: &spec,
                settings: c.settings.as_ref(),
                cached_metrics: Some(&c.metrics),
                restored,
                refresh: refresh.then(|| Refresh::Read {
                    partitions: c.metrics.clone(),
                    issues: Vec::new(),
                }),
                workloads: Some(&[]),
                gomemlimit_ratio: 0.8,
                now,
            });
            out.status
        })
        .collect()
}

/// The fresh pass with its statuses dropped (freeing is part of a pass, as in
/// `measure`). Never inlined: profilers collect this function only (`ONLY=fresh`).
#[inline(never)]
fn fresh_pass(all: &[Cached], now: Timestamp, keys: &RandomState) -> usize {
    pass(all, true, now, keys).len()
}

fn prometheus_body(series: usize) -> Vec<u8> {
    let mut body = String::with_capacity(series * 160);
    body.push_str(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for i in 0..series {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"metric":{{"__name__":"kafka_consumergroup_lag","group":"orders","instance":"exporter:9308","job":"kafka","partition":"{i}","topic":"orders"}},"value":[1795355055.121,"{}.5"]}}"#,
            i % 10_000
        ));
    }
    body.push_str("]}}");
    body.into_bytes()
}

fn main() {
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("time");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());

    let keys = RandomState::new();
    let all = consumers(1_000, 100, now);
    // A first pass gives every instance a status; the measured passes run from it.
    let first = pass(&cache(&all, &keys), false, now, &keys);
    let mut warm = all.clone();
    for (c, s) in warm.iter_mut().zip(first) {
        if let Some(s) = s {
            c.status = Some(s);
        }
    }
    let warm = cache(&warm, &keys);
    if std::env::var("ONLY").as_deref() == Ok("fresh") {
        let runs = std::env::var("RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        let (best, median, wall) = measure(runs, || fresh_pass(&warm, now, &keys));
        println!(
            "fresh pass, {runs} runs: best CPU {}, median {}, best wall {}",
            ms(best),
            ms(median),
            ms(wall)
        );
        return;
    }
    let (best, median, wall) = measure(10, || pass(&warm, false, now, &keys));
    let (r_best, r_median, r_wall) = measure(10, || pass(&warm, true, now, &keys));
    let statuses: Vec<ConsumerStatus> = warm
        .iter()
        .filter_map(|c| c.consumer.status.clone())
        .collect();
    let (b_best, b_median, _) = measure(10, || {
        serde_json::to_vec(&statuses).map(|v| v.len()).unwrap_or(0)
    });
    println!();
    println!(
        "| reconcile pass, 1,000 Consumers × 100 partitions (10 instances each) | best CPU | median CPU | best wall |"
    );
    println!("|---|---|---|---|");
    println!(
        "| konsumer pass, cached metrics (settings, predictor, caps, state machine, counters) | {} | {} | {} |",
        ms(best),
        ms(median),
        ms(wall)
    );
    println!(
        "| konsumer pass, every Consumer with fresh metrics (status rebuilt) | {} | {} | {} |",
        ms(r_best),
        ms(r_median),
        ms(r_wall)
    );
    println!(
        "| baseline: serializing the 1,000 statuses (the least a write costs) | {} | {} | |",
        ms(b_best),
        ms(b_median)
    );

    // Managed Deployments: what exists is what konsumer would apply.
    let managed: Vec<(
        ConsumerSettings,
        serde_json::Value,
        Owner,
        Vec<serde_json::Value>,
    )> = warm
        .iter()
        .filter_map(|c| {
            let settings = ConsumerSettings::from_consumer(&c.consumer).ok()?;
            let template = c.consumer.spec.deployment_template.as_ref()?.to_value();
            let owner = Owner {
                api_version: "konsumerator.lwolf.org/v1".into(),
                kind: "Consumer".into(),
                name: c.consumer.metadata.name.clone()?,
                uid: format!("uid-{}", c.consumer.metadata.name.clone()?),
            };
            let recipe = Recipe {
                settings: &settings,
                template: &template,
                owner: &owner,
                gomemlimit_ratio: 0.8,
            };
            // As listed from the API server: each with its resourceVersion.
            let live = manage::decide(&recipe, &[], None)
                .ok()?
                .writes
                .into_iter()
                .enumerate()
                .map(|(i, mut w)| {
                    w.body["metadata"]["resourceVersion"] =
                        serde_json::json!(format!("{}", 1000 + i));
                    w.body
                })
                .collect();
            Some((settings, template, owner, live))
        })
        .collect();
    let decide_all = || {
        managed
            .iter()
            .map(|(settings, template, owner, live)| {
                let recipe = Recipe {
                    settings,
                    template,
                    owner,
                    gomemlimit_ratio: 0.8,
                };
                let live: Vec<&serde_json::Value> = live.iter().collect();
                manage::decide(&recipe, &live, None)
                    .map(|d| d.writes.len() + d.rollouts.len())
                    .unwrap_or(usize::MAX)
            })
            .sum::<usize>()
    };
    assert_eq!(decide_all(), 0, "the steady state writes nothing");
    let (m_best, m_median, m_wall) = measure(10, decide_all);
    // What the Deployment manager does instead while nothing changed: the
    // fingerprint of the listed Deployments, and the last decision reused.
    let memos: Vec<(std::sync::Arc<Consumer>, manage::memo::Memo)> = managed
        .iter()
        .zip(&warm)
        .map(|((_, _, _, live), c)| {
            let consumer = std::sync::Arc::new(c.consumer.clone());
            let f = manage::memo::fingerprint(versions(live), None);
            let memo = manage::memo::Memo::new(&consumer, f, &manage::Decision::default())
                .expect("a decision that writes nothing is kept");
            (consumer, memo)
        })
        .collect();
    let reuse_all = || {
        managed
            .iter()
            .zip(&memos)
            .filter(|((_, _, _, live), (consumer, memo))| {
                memo.reuse(consumer, manage::memo::fingerprint(versions(live), None))
                    .is_some()
            })
            .count()
    };
    assert_eq!(reuse_all(), managed.len(), "every decision reused");
    let (u_best, u_median, u_wall) = measure(10, reuse_all);
    let (mb_best, mb_median, _) = measure(10, || pass(&warm, false, now, &keys));
    println!();
    println!(
        "| managed Deployments, 1,000 Consumers × 10 instances, steady state | best CPU | median CPU | best wall |"
    );
    println!("|---|---|---|---|");
    println!(
        "| `manage::decide` for every Consumer (build, compare, order) | {} | {} | {} |",
        ms(m_best),
        ms(m_median),
        ms(m_wall)
    );
    println!(
        "| unchanged since the last pass: fingerprint and reuse (what a steady pass costs) | {} | {} | {} |",
        ms(u_best),
        ms(u_median),
        ms(u_wall)
    );
    println!(
        "| baseline: the cached reconcile pass above, in the same run | {} | {} | |",
        ms(mb_best),
        ms(mb_median)
    );
    // Growth: the same pass over more Consumers (10 partitions each, to keep the
    // 50,000 in memory), cached metrics and fresh ones.
    println!();
    println!(
        "| Consumers × 10 partitions | cached pass, best CPU | per Consumer | fresh pass, best CPU | per Consumer |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n in [1_000usize, 10_000, 50_000] {
        let all = consumers(n, 10, now);
        let first = pass(&cache(&all, &keys), false, now, &keys);
        let mut warm = all;
        for (c, s) in warm.iter_mut().zip(first) {
            if let Some(s) = s {
                c.status = Some(s);
            }
        }
        let warm = cache(&warm, &keys);
        let (best, _, _) = measure(3, || pass(&warm, false, now, &keys));
        let (fresh, _, _) = measure(3, || pass(&warm, true, now, &keys));
        let per = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / n as f64);
        println!(
            "| {n} | {} | {} | {} | {} |",
            ms(best),
            per(best),
            ms(fresh),
            per(fresh)
        );
    }

    let body = prometheus_body(100_000);
    let (p_best, p_median, p_wall) = measure(10, || {
        parse_response(&body, "partition", 100_000)
            .map(|r| r.values.len())
            .unwrap_or(0)
    });
    let parsed = parse_response(&body, "partition", 100_000)
        .map(|r| r.values.len())
        .unwrap_or(0);
    assert_eq!(parsed, 100_000, "every series parsed");
    let (v_best, v_median, _) = measure(10, || {
        serde_json::from_slice::<serde_json::Value>(&body).is_ok()
    });
    println!();
    println!(
        "| parsing a 100,000-series answer ({:.1} MB) | best CPU | median CPU | best wall |",
        body.len() as f64 / 1e6
    );
    println!("|---|---|---|---|");
    println!(
        "| konsumer `parse_response` | {} | {} | {} |",
        ms(p_best),
        ms(p_median),
        ms(p_wall)
    );
    println!(
        "| baseline: `serde_json::Value` of the same body | {} | {} | |",
        ms(v_best),
        ms(v_median)
    );
}

/// The listed Deployments as the memo's fingerprint reads them.
fn versions(live: &[serde_json::Value]) -> Vec<(&str, manage::memo::Version<'_>)> {
    live.iter()
        .map(|d| (manage::live::name(d), manage::memo::Version::of(d)))
        .collect()
}
