//! The scaling reconciler (I/O shell): while this replica leads, every interval,
//! for every Consumer: read its metrics from Prometheus (at most once per
//! `minSyncPeriod`), run the pure predictor and state machine, count its
//! workloads, and record the result in its status, which every replica's
//! webhook injects. Transitions go to logs, metrics and (kube mode) Events.

pub mod deployments;
pub mod events;
pub mod leader;
pub mod outage;
pub mod prometheus;
pub mod workloads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{Consumer, ConsumerStatus, PartitionState, QuerySpec, ScalingState};
use crate::inject::ConsumerSettings;
use crate::manage::{self, Decision, Management};
use crate::notice;
use crate::scaling::consumer::{self as consumer_step, ConsumerInput, Refresh};
use crate::scaling::{Restored, ScalingSpec, Transition};
use crate::store::{CachedConsumer, ConsumerIndex, Store, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{EventLabel, ReasonLabel};

use deployments::{DeploymentApi, DeploymentIndex, DeploymentManager, Objects, View};
use outage::{Notice, Outages};
use prometheus::{PromClient, PromError};
use workloads::WorkloadSource;

/// Tunables of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// Time between two passes over all Consumers.
    pub interval: Duration,
    /// Budget of one Prometheus query (per address).
    pub query_timeout: Duration,
    /// Consumers reconciled at once.
    pub concurrency: usize,
    pub gomemlimit_ratio: f64,
    /// Manage the Deployments of Consumers with a `deploymentTemplate`.
    pub manage_deployments: bool,
    /// Rollouts of managed Deployments started per minute, over all Consumers.
    pub max_rollouts_per_minute: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval: Duration::from_secs(10),
            query_timeout: Duration::from_secs(10),
            concurrency: 16,
            gomemlimit_ratio: 0.8,
            manage_deployments: true,
            max_rollouts_per_minute: DEFAULT_ROLLOUTS_PER_MINUTE,
        }
    }
}

/// Default of `--max-rollouts-per-minute`.
pub const DEFAULT_ROLLOUTS_PER_MINUTE: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing the status: {0}")]
    Store(#[from] StoreError),
}

/// Where transitions are published besides logs and metrics (kube: Events).
#[async_trait::async_trait]
pub trait TransitionSink: Send + Sync {
    async fn publish(&self, consumer: &Consumer, transition: &Transition);

    /// Anything else people should read about a Consumer (metrics gone, a
    /// Deployment created or rolled).
    async fn notify(&self, _consumer: &Consumer, _notice: &crate::notice::Notice) {}
}

/// The current time; tests inject a fake clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Reconciler {
    pub index: Arc<ConsumerIndex>,
    pub store: Arc<dyn Store>,
    pub workloads: Arc<dyn WorkloadSource>,
    pub prom: PromClient,
    pub sink: Option<Arc<dyn TransitionSink>>,
    pub metrics: Arc<Metrics>,
    pub config: ReconcilerConfig,
    pub clock: Clock,
    /// The Deployment manager (`None`: konsumer writes no Deployment).
    pub deployments: Option<Arc<DeploymentManager>>,
    known: Mutex<HashSet<String>>,
    /// Last Prometheus attempt per Consumer: failures are retried at most once per
    /// `minSyncPeriod` too.
    attempts: Mutex<HashMap<String, Timestamp>>,
    /// Parsed `lastSyncState` per Consumer, with the sync time it belongs to.
    parsed: Mutex<HashMap<String, ParsedMetrics>>,
    /// The status' instances as the machine reads them, per Consumer, with the
    /// stamp of the spec and instances they were read from: read again only when
    /// those change (a write of ours that changed them, or anyone else's).
    restored: Mutex<HashMap<String, (u64, Arc<Restored>)>>,
    /// Keys of those stamps.
    stamp_keys: RandomState,
    /// Notified after a status write that journaled scaling events (the
    /// delivery worker waits on it).
    pub journal_written: Arc<tokio::sync::Notify>,
    /// Prometheus failures under way (logged when they start and end).
    outages: Mutex<Outages>,
    /// What each Consumer's last reconcile saw, when it changed nothing.
    quiet: Mutex<HashMap<String, Quiet>>,
}

/// A Consumer whose last reconcile wrote nothing, made no transition and left no
/// instance pending: while its cache entry (spec and status), its workloads and
/// the time of its next Prometheus read stay the same, a reconcile would change
/// nothing either, and is skipped.
struct Quiet {
    consumer: Weak<CachedConsumer>,
    workloads: u64,
    /// The next Prometheus read is due then (`None`: never, not autoscaled).
    refresh_due: Option<Timestamp>,
    /// [`Calm::lagging`] of that reconcile.
    lagging: u64,
    /// It waits on the probe of its down Prometheus addresses: the count of
    /// down addresses that answered again ([`Outages::answers`]) when it began
    /// to wait. Once that moves it is due at once.
    waits: Option<u64>,
}

/// What a reconcile that changed nothing leaves for the next one.
struct Calm {
    refresh_due: Option<Timestamp>,
    /// A fingerprint of the lagging instances it counted: the one input of the
    /// counters that is not in the Consumer, its workloads or its Deployments.
    lagging: u64,
    waits: bool,
}

/// Whether a Consumer is reconciled this pass.
enum Seen {
    /// Nothing changed and nothing is due: skipped.
    Same,
    /// Only its Prometheus read is due; its last reconcile's [`Calm::lagging`].
    Due(u64),
    Changed,
}

/// One reconcile's outcome, before anything is written.
struct Plan {
    out: consumer_step::ConsumerOutput,
    next: Option<ConsumerStatus>,
    decision: Result<Option<Decision>, Unfetched>,
    unkept: Option<Arc<BTreeMap<u32, PartitionState>>>,
}

/// The Deployment manager would decide afresh: that needs the Deployments whole.
#[derive(Debug)]
struct Unfetched;

impl Plan {
    /// Writes nothing, makes no transition, leaves nothing pending and has
    /// nothing for the Deployment manager to do.
    fn calm(&self, manager: Option<&DeploymentManager>, key: &str) -> bool {
        changes_nothing(
            self.next.as_ref(),
            &self.out,
            matches!(&self.decision, Ok(d) if settles(manager, d.as_ref(), key)),
        )
    }
}

/// No status to write, no transition, no instance pending, and the Deployments
/// `settled`: the Consumer may be skipped until something changes.
fn changes_nothing(
    next: Option<&ConsumerStatus>,
    out: &consumer_step::ConsumerOutput,
    settled: bool,
) -> bool {
    next.is_none() && out.transitions.is_empty() && !pending(out.states.as_ref()) && settled
}

/// Nothing to write, no rollout to start or under way.
fn settles(manager: Option<&DeploymentManager>, decision: Option<&Decision>, key: &str) -> bool {
    decision.is_none_or(|d| {
        d.writes.is_empty()
            && d.rollouts.is_empty()
            && d.removals.is_empty()
            && d.waiting_for.is_none()
    }) && manager.is_none_or(|m| m.in_flight(key).is_none())
}

/// Some instance waits to scale.
fn pending(states: Option<&[(ScalingState, i64); 4]>) -> bool {
    states.is_some_and(|states| {
        states.iter().any(|(s, n)| {
            *n > 0
                && matches!(
                    s,
                    ScalingState::PendingScaleUp | ScalingState::PendingScaleDown
                )
        })
    })
}

fn lagging_print(lagging: &[bool]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lagging.hash(&mut h);
    h.finish()
}

/// A fingerprint of a Consumer's workloads as listed this pass.
fn fingerprint(objects: Option<&[Value]>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match objects {
        None => 0u8.hash(&mut h),
        Some(list) => {
            1u8.hash(&mut h);
            for o in list {
                serde_json::to_string(o).unwrap_or_default().hash(&mut h);
            }
        }
    }
    h.finish()
}

fn log_notice(notice: &Notice) {
    match notice {
        Notice::Started { error, consumer } => tracing::warn!(
            consumer = %consumer,
            error = %error,
            "Prometheus unavailable; keeping the last metrics (Consumers that fail the same way are logged at debug level, with a summary every 5m)"
        ),
        Notice::Ended {
            error,
            since,
            affected,
        } => tracing::info!(
            error = %error,
            since = %since,
            consumers = affected,
            "Prometheus failure over: every Consumer that failed this way reads its metrics again"
        ),
        Notice::Ongoing {
            error,
            since,
            consumers,
        } => tracing::warn!(
            error = %error,
            since = %since,
            consumers,
            "Prometheus still unavailable; these Consumers keep their last metrics"
        ),
    }
}

type ParsedMetrics = (Option<Timestamp>, Arc<BTreeMap<u32, PartitionState>>);

/// The metrics of a Consumer read now, and what looked wrong in them.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub partitions: BTreeMap<u32, PartitionState>,
    pub issues: Vec<String>,
}

/// Reads production, consumption and lag for every partition (concurrently).
pub async fn read_metrics(
    prom: &PromClient,
    consumer: &Consumer,
    partitions: u32,
    at: Timestamp,
) -> Result<Snapshot, PromError> {
    let Some(p) = consumer
        .spec
        .autoscaler
        .as_ref()
        .and_then(|a| a.prometheus.as_ref())
    else {
        return Err(PromError::NoAddress);
    };
    let addresses = p.address.clone().unwrap_or_default();
    let run = |q: &Option<QuerySpec>| {
        let query = q.as_ref().and_then(|q| q.query.clone()).unwrap_or_default();
        let label = q
            .as_ref()
            .and_then(|q| q.partition_label.clone())
            .unwrap_or_else(|| "partition".into());
        let addresses = addresses.clone();
        async move { prom.query(&addresses, &query, &label, partitions, at).await }
    };
    let (production, consumption, behind) =
        futures::try_join!(run(&p.production), run(&p.consumption), run(&p.offset))?;
    let mut snapshot = Snapshot::default();
    for (name, r) in [
        ("production", &production),
        ("consumption", &consumption),
        ("offset", &behind),
    ] {
        snapshot
            .issues
            .extend(r.issues.iter().map(|i| format!("{name}: {i}")));
    }
    // A partition has data when both production and lag are known: a missing lag
    // is not "no lag" (a lag exporter that is down must not look caught up).
    // Consumption is informational; without it the rate reads 0.
    let mut without_lag = 0;
    for (partition, rate) in &production.values {
        let Some(messages_behind) = behind.values.get(partition) else {
            without_lag += 1;
            continue;
        };
        snapshot.partitions.insert(
            *partition,
            PartitionState {
                production_rate: *rate as i64,
                consumption_rate: consumption.values.get(partition).copied().unwrap_or(0.0) as i64,
                messages_behind: messages_behind.max(0.0) as i64,
            },
        );
    }
    let without_production = behind
        .values
        .keys()
        .filter(|p| !production.values.contains_key(p))
        .count();
    if without_lag > 0 {
        snapshot.issues.push(format!(
            "offset: no value for {without_lag} partitions that have a production rate (counted as without data)"
        ));
    }
    if without_production > 0 {
        snapshot.issues.push(format!(
            "production: no value for {without_production} partitions that have a lag (counted as without data)"
        ));
    }
    Ok(snapshot)
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: Arc<ConsumerIndex>,
        store: Arc<dyn Store>,
        workloads: Arc<dyn WorkloadSource>,
        prom: PromClient,
        sink: Option<Arc<dyn TransitionSink>>,
        metrics: Arc<Metrics>,
        config: ReconcilerConfig,
        clock: Clock,
    ) -> Self {
        Reconciler {
            index,
            store,
            workloads,
            prom,
            sink,
            metrics,
            config,
            clock,
            deployments: None,
            known: Mutex::new(HashSet::new()),
            attempts: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
            restored: Mutex::new(HashMap::new()),
            stamp_keys: RandomState::new(),
            journal_written: Arc::new(tokio::sync::Notify::new()),
            outages: Mutex::new(Outages::default()),
            quiet: Mutex::new(HashMap::new()),
        }
    }

    /// Manages Deployments through `api` (as `config.manage_deployments` says).
    pub fn with_deployments(mut self, api: Arc<dyn DeploymentApi>) -> Self {
        self.deployments = Some(Arc::new(DeploymentManager::new(
            api,
            self.config.manage_deployments,
            self.config.max_rollouts_per_minute,
            self.metrics.clone(),
        )));
        self
    }

    /// Reconciles while `leader` says so, until `shutdown`. Losing the lease stops
    /// the pass in flight at once.
    pub async fn run(
        self: Arc<Self>,
        mut leader: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        loop {
            while !*leader.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = leader.changed() => if changed.is_err() { return },
                }
            }
            tracing::info!("leading: reconciling Consumers");
            self.metrics.leader.set(1);
            let lost = async {
                loop {
                    if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.metrics.leader.set(0);
                    return;
                }
                _ = lost => {}
                _ = self.lead() => {}
            }
            self.metrics.leader.set(0);
            self.forget_gauges();
            if shutdown.is_cancelled() {
                // Giving the lease up on the way out is not losing it.
                return;
            }
            tracing::warn!("lost the reconciler lease: stopped reconciling");
        }
    }

    /// A follower publishes no per-instance gauges: only the leader's are current.
    fn forget_gauges(&self) {
        // A new term sets every gauge again: no Consumer is skipped in its first pass.
        self.quiet.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for key in known.drain() {
            self.metrics.set_instances(&key, None);
        }
    }

    async fn lead(&self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
        }
    }

    /// One pass over every cached Consumer.
    pub async fn pass(&self) {
        let now = (self.clock)();
        let pass_started = Instant::now();
        let workloads = match self.workloads.workloads().await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the labelled workloads; counters keep their values");
                self.metrics
                    .reconcile_errors
                    .get_or_create(&ReasonLabel {
                        reason: "workloads".into(),
                    })
                    .inc();
                None
            }
        };
        let deployments = match &self.deployments {
            None => None,
            Some(manager) => match manager.index().await {
                Ok(index) => Some(index),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the managed Deployments; none is written this pass");
                    self.metrics
                        .reconcile_errors
                        .get_or_create(&ReasonLabel {
                            reason: "deployments".into(),
                        })
                        .inc();
                    None
                }
            },
        };
        let consumers = self.index.all();
        {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            // Usually the same Consumers as last pass: then no set of 10,000 keys
            // is made again.
            let same =
                known.len() == consumers.len() && consumers.iter().all(|c| known.contains(c.key()));
            if !same {
                let keys: HashSet<String> = consumers.iter().map(|c| c.key().to_owned()).collect();
                self.forget(known.difference(&keys));
                *known = keys;
            }
        }
        let workloads = workloads.as_ref();
        let deployments = deployments.as_ref();
        let answers = self
            .outages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answers();
        futures::stream::iter(consumers)
            .for_each_concurrent(self.config.concurrency.max(1), |cached| async move {
                let key = cached.key();
                let objects = workloads.map(|w| {
                    if w.is_empty() {
                        // No workload at all: no key made to find none.
                        return &[][..];
                    }
                    let ns = cached.consumer.metadata.namespace.clone().unwrap_or_default();
                    let name = cached.consumer.metadata.name.clone().unwrap_or_default();
                    w.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default()
                });
                // Its managed Deployments count too: a rollout that finished, a
                // Deployment someone edited.
                let managed = match (&self.deployments, deployments) {
                    (Some(manager), Some(index)) => manager.fingerprint(
                        &cached.consumer,
                        cached.settings.as_ref().ok(),
                        index,
                    ),
                    _ => 0,
                };
                let seen = fingerprint(objects) ^ managed.rotate_left(1);
                let settled = match self.seen(key, &cached, seen, answers, now) {
                    Seen::Same => return,
                    Seen::Due(lagging) => Some(lagging),
                    Seen::Changed => None,
                };
                let started = Instant::now();
                // A bug hit by one Consumer must not stop the others (nor every
                // later pass): the panic is contained, counted and retried.
                let result = AssertUnwindSafe(self.reconcile_with(&cached, objects, deployments, settled, now))
                    .catch_unwind()
                    .await;
                self.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
                let reason = match result {
                    Ok(Ok(outcome)) => {
                        let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
                        match outcome {
                            Some(calm) => {
                                let q = Quiet {
                                    consumer: Arc::downgrade(&cached),
                                    workloads: seen,
                                    refresh_due: calm.refresh_due,
                                    lagging: calm.lagging,
                                    waits: calm.waits.then_some(answers),
                                };
                                // No key made for a Consumer that was quiet before.
                                match quiet.get_mut(key) {
                                    Some(old) => *old = q,
                                    None => {
                                        quiet.insert(key.to_owned(), q);
                                    }
                                }
                            }
                            None => {
                                quiet.remove(key);
                            }
                        }
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(consumer = %key, error = %e, "reconcile failed; retrying next pass");
                        "status"
                    }
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        tracing::error!(consumer = %key, panic = %what, "reconcile panicked (a konsumer bug); retrying next pass");
                        "panic"
                    }
                };
                self.quiet.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
                self.metrics
                    .reconcile_errors
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc();
            })
            .await;
        let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
        for notice in outages.summary(now) {
            log_notice(&notice);
        }
        self.metrics
            .prometheus_failing_consumers
            .set(outages.failing() as i64);
        self.metrics
            .reconcile_pass_duration
            .observe(pass_started.elapsed().as_secs_f64());
    }

    /// Forgets what was kept of Consumers that are gone.
    fn forget<'k>(&self, gone: impl Iterator<Item = &'k String>) {
        let mut gone = gone.peekable();
        if gone.peek().is_none() {
            return;
        }
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let mut restored = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
        let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        for key in gone {
            self.metrics.set_instances(key, None);
            attempts.remove(key);
            parsed.remove(key);
            restored.remove(key);
            quiet.remove(key);
            if let Some(notice) = outages.recovered(key) {
                log_notice(&notice);
            }
            if let Some(manager) = &self.deployments {
                manager.forget(key);
            }
        }
    }

    /// Whether `cached` is reconciled this pass (see [`Quiet`]). `answers`:
    /// [`Outages::answers`] as the pass began.
    fn seen(
        &self,
        key: &str,
        cached: &Arc<CachedConsumer>,
        workloads: u64,
        answers: u64,
        now: Timestamp,
    ) -> Seen {
        let quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = quiet.get(key) else {
            return Seen::Changed;
        };
        if !std::ptr::eq(q.consumer.as_ptr(), Arc::as_ptr(cached)) || q.workloads != workloads {
            return Seen::Changed;
        }
        let waited = q.waits.is_some_and(|w| w != answers);
        if !waited && q.refresh_due.is_none_or(|due| now < due) {
            Seen::Same
        } else {
            Seen::Due(q.lagging)
        }
    }

    /// Reconciles one Consumer; `objects` are its labelled workloads (`None`: unknown).
    /// When it changed nothing and nothing waits on the clock: `Some` of when its
    /// next Prometheus read is due.
    pub async fn reconcile(
        &self,
        cached: &CachedConsumer,
        objects: Option<&[Value]>,
        now: Timestamp,
    ) -> Result<Option<Option<Timestamp>>, ReconcileError> {
        let calm = self
            .reconcile_with(cached, objects, None, None, now)
            .await?;
        Ok(calm.map(|c| c.refresh_due))
    }

    /// [`Reconciler::reconcile`], with the Deployments listed this pass
    /// (`None`: no Deployment is written). `settled`: this Consumer's cache
    /// entry, workloads and Deployments are what its last reconcile saw, which
    /// changed nothing, and that reconcile's [`Calm::lagging`]. Then the
    /// Deployments are read whole only if this reconcile may change something:
    /// a Prometheus read that failed again, with the same lagging instances,
    /// counts what was counted and decides what was decided.
    async fn reconcile_with(
        &self,
        cached: &CachedConsumer,
        objects: Option<&[Value]>,
        deployments: Option<&DeploymentIndex>,
        settled: Option<u64>,
        now: Timestamp,
    ) -> Result<Option<Calm>, ReconcileError> {
        let consumer = &cached.consumer;
        let key = cached.key();
        let spec = ScalingSpec::from_consumer(consumer);
        let settings = cached.settings.as_ref().ok();
        // What the Deployment manager sees, before anything is decided.
        let manager = self.deployments.as_deref();
        let view = manager
            .zip(deployments)
            .and_then(|(m, index)| m.view(consumer, settings, index, objects));
        let managed = view
            .as_ref()
            .is_some_and(|v| v.management == Management::Managed);
        // Seeding reads the Deployments whole; it has nothing to do once every
        // instance has its recommendation.
        let seeds = managed
            && matches!(&spec, Ok(Some(spec)) if manage::seed::wanted(
                spec,
                consumer.status.as_ref().and_then(|s| s.instances.as_deref()).unwrap_or_default(),
            ));
        let lazy = settled.is_some() && !seeds && view.as_ref().is_some_and(View::fetches);
        // The Deployments whole, fetched now that this Consumer is reconciled.
        let mut objects_of = None;
        if !lazy && let Some(view) = &view {
            objects_of = Some(view.objects().await?);
        }
        let refresh = match &spec {
            Ok(Some(spec)) => self.refresh(consumer, key, spec, now).await,
            _ => None,
        };
        let read = matches!(refresh, Some(Refresh::Read { .. }));
        // Without the Deployments whole first; kept only if it changes nothing,
        // and what it did not count is what the last reconcile counted.
        let calm = (lazy && !read)
            .then(|| {
                let retry = refresh.clone();
                self.plan(cached, &spec, objects, view.as_ref(), None, retry, now)
            })
            .filter(|p| p.calm(manager, key) && Some(lagging_print(&p.out.lagging)) == settled);
        let plan = match calm {
            Some(plan) => plan,
            None => {
                if lazy && let Some(view) = &view {
                    match view.objects().await {
                        Ok(of) => objects_of = Some(of),
                        Err(e) => {
                            if read {
                                // The metrics just read are not lost: read again next pass.
                                self.attempts
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(key);
                            }
                            return Err(e.into());
                        }
                    }
                }
                self.plan(
                    cached,
                    &spec,
                    objects,
                    view.as_ref(),
                    objects_of.as_ref(),
                    refresh,
                    now,
                )
            }
        };
        let Plan {
            out,
            mut next,
            decision,
            unkept,
        } = plan;
        let decision = decision.unwrap_or_default();
        if let Some(states) = out.states {
            self.metrics
                .set_instances(key, Some(states.map(|(s, n)| (s.as_str(), n))));
        }
        // The rollout the Deployment manager starts this pass, decided now so that
        // its event is written ahead of the Deployment write.
        let rollout = manager
            .zip(decision.as_ref())
            .and_then(|(m, d)| m.start_rollout(key, d, now));
        let applied = rollout.and_then(|w| {
            let journal = next
                .as_ref()
                .or(consumer.status.as_ref())
                .and_then(|s| s.journal.as_deref())
                .unwrap_or_default();
            crate::scaling_events::journal::from_rollout(w, journal)
        });
        // The decision's events go into the same status write as the decision.
        let journaled = crate::scaling_events::journal::record(
            consumer.status.as_ref(),
            &mut next,
            &out.transitions,
            applied.into_iter().collect(),
            now,
        );
        if let Some(next) = &next {
            let ns = consumer.metadata.namespace.as_deref().unwrap_or("default");
            let name = consumer.metadata.name.as_deref().unwrap_or_default();
            if let Err(e) = self.store.write_status(ns, name, next).await {
                // Not recorded, not made: the rollout waits for the next pass.
                if let (Some(m), Some(_)) = (manager, rollout) {
                    m.give_back(now);
                }
                return Err(e.into());
            }
            if let Some(partitions) = unkept {
                let stamp = next.last_sync_time.as_ref().map(|t| t.0);
                self.parsed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.to_owned(), (stamp, partitions));
            }
        }
        if let Some(n) = notice::metrics_change(consumer.status.as_ref(), next.as_ref())
            && let Some(sink) = &self.sink
        {
            sink.notify(consumer, &n).await;
        }
        if !journaled.is_empty() {
            for t in &journaled {
                self.metrics
                    .events_journaled
                    .get_or_create(&crate::telemetry::metrics::TypeLabel {
                        event_type: t.label().to_string(),
                    })
                    .inc();
            }
            self.journal_written.notify_one();
        }
        for t in &out.transitions {
            self.report(consumer, t).await;
        }
        // Nothing to do for the Deployments either (nothing to write, no rollout
        // under way): the Consumer may be skipped until something changes.
        let deployments_settled = settles(manager, decision.as_ref(), key);
        if let (Some(manager), Some(decision)) = (manager, &decision) {
            manager
                .execute(consumer, decision, rollout, self.sink.as_deref(), now)
                .await;
        }
        let quiet = changes_nothing(next.as_ref(), &out, deployments_settled);
        Ok(quiet.then(|| {
            let (refresh_due, waits) = match &spec {
                Ok(Some(spec)) => {
                    let (due, waits) = self.refresh_due(key, consumer, spec);
                    (Some(due), waits)
                }
                _ => (None, false),
            };
            Calm {
                refresh_due,
                lagging: lagging_print(&out.lagging),
                waits,
            }
        }))
    }

    /// What one reconcile of `cached` would write and decide, from its
    /// Deployments whole (`objects_of`), or without them (`None`: then only a
    /// decision the manager remembered can be made, and nothing is counted of
    /// the Deployments).
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        cached: &CachedConsumer,
        spec: &Result<Option<ScalingSpec>, String>,
        objects: Option<&[Value]>,
        view: Option<&View<'_>>,
        objects_of: Option<&Objects>,
        refresh: Option<Refresh>,
        now: Timestamp,
    ) -> Plan {
        let consumer = &cached.consumer;
        let key = cached.key();
        let settings = cached.settings.as_ref().ok();
        let managed = view.is_some_and(|v| v.management == Management::Managed);
        // Adopted Deployments seed the recommendation with what they run with.
        let seeded: Option<Consumer> = match (spec, objects_of) {
            (Ok(Some(spec)), Some(of)) if managed => {
                let previous = consumer
                    .status
                    .as_ref()
                    .and_then(|s| s.instances.as_deref())
                    .unwrap_or_default();
                let ours: Vec<&Value> = of.ours().iter().collect();
                manage::seed::seed(spec, previous, &ours, now).map(|instances| {
                    let mut c = (**consumer).clone();
                    c.status.get_or_insert_with(Default::default).instances = Some(instances);
                    c
                })
            }
            _ => None,
        };
        let stepped = seeded.as_ref().unwrap_or(consumer);
        // The counters see the managed Deployments too (adopted ones may lack
        // the consumer label).
        let counted: Option<Vec<Value>> = match (objects_of, objects) {
            (Some(of), Some(objects)) if !of.ours().is_empty() => {
                let mut all = objects.to_vec();
                for d in of.ours() {
                    if !all.iter().any(|o| {
                        o.get("kind").and_then(Value::as_str) == Some("Deployment")
                            && manage::live::name(o) == manage::live::name(d)
                    }) {
                        all.push(d.clone());
                    }
                }
                Some(all)
            }
            _ => None,
        };
        // Without its Deployments whole, a Consumer that owns some counts nothing.
        let workloads = match (objects_of, view) {
            (None, Some(v)) if !v.ours.is_empty() => None,
            _ => counted.as_deref().or(objects),
        };
        let cached_metrics = self.cached_metrics(key, stepped.status.as_ref());
        let restored = match spec {
            Ok(Some(spec)) => self.restored(key, spec, stepped.status.as_ref()),
            _ => None,
        };
        // Metrics of more partitions than lastSyncState keeps live here only.
        let unkept = match &refresh {
            Some(Refresh::Read { partitions, .. })
                if partitions.len() > consumer_step::SYNC_STATE_MAX_PARTITIONS =>
            {
                Some(Arc::new(partitions.clone()))
            }
            _ => None,
        };
        let mut out = consumer_step::reconcile(ConsumerInput {
            consumer: stepped,
            spec,
            settings,
            cached_metrics: cached_metrics.as_deref(),
            restored: restored.as_deref(),
            refresh,
            workloads,
            gomemlimit_ratio: self.config.gomemlimit_ratio,
            now,
        });
        let empty = ConsumerStatus::default();
        let previous = consumer.status.as_ref().unwrap_or(&empty);
        // Moved out, not cloned: the rest of the pass reads the transitions and
        // the states only.
        let mut next = out
            .status
            .take()
            .or_else(|| seeded.as_ref().and_then(|c| c.status.clone()));
        // The Deployments decided from the recommendation just made.
        let mut decision = Ok(None);
        if let Some(view) = view {
            if managed {
                decision =
                    self.decide_deployments(cached, next.as_ref(), settings, view, objects_of, key);
            }
            if let Ok(decision) = &decision {
                let counted_outdated =
                    objects.map(|_| next.as_ref().unwrap_or(previous).outdated.unwrap_or(0));
                next = manage::status::fold(
                    previous,
                    next,
                    &view.management,
                    decision.as_ref(),
                    counted_outdated,
                    consumer.metadata.generation,
                    now,
                );
            }
        }
        Plan {
            out,
            next,
            decision,
            unkept,
        }
    }

    /// The Deployment manager's decision for a managed Consumer, from the
    /// status about to be written (its recommendations).
    fn decide_deployments(
        &self,
        cached: &CachedConsumer,
        next: Option<&ConsumerStatus>,
        settings: Option<&ConsumerSettings>,
        view: &View<'_>,
        objects: Option<&Objects>,
        key: &str,
    ) -> Result<Option<Decision>, Unfetched> {
        let Some(manager) = self.deployments.as_ref() else {
            return Ok(None);
        };
        let consumer = &cached.consumer;
        let in_flight = manager.in_flight(key);
        let fingerprint = view.fingerprint(in_flight.as_ref());
        // The recommendations are the cached status' unless this pass changed them
        // (new metrics alone, a new lastSyncTime, change nothing here).
        let same_recommendations = next.is_none_or(|n| {
            n.instances.as_ref() == consumer.status.as_ref().and_then(|s| s.instances.as_ref())
        });
        if same_recommendations && let Some(d) = manager.reuse(key, consumer, fingerprint) {
            return Ok(Some(d));
        }
        let objects = objects.ok_or(Unfetched)?;
        let Some(template) = consumer.spec.deployment_template.as_ref() else {
            return Ok(None);
        };
        let template = template.to_value();
        let fresh;
        let settings = match next {
            Some(status) => {
                let mut c = (**consumer).clone();
                c.status = Some(status.clone());
                match ConsumerSettings::from_consumer(&c) {
                    Ok(s) => {
                        fresh = s;
                        &fresh
                    }
                    Err(_) => return Ok(None),
                }
            }
            None => match settings {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        let recipe = DeploymentManager::recipe(
            settings,
            &template,
            &view.owner,
            self.config.gomemlimit_ratio,
        );
        match manage::decide(&recipe, &objects.candidates(), in_flight.as_ref()) {
            Ok(d) => {
                if same_recommendations {
                    manager.remember(key, consumer, fingerprint, &d);
                }
                Ok(Some(d))
            }
            Err(e) => {
                tracing::warn!(consumer = %key, error = %e, "cannot decide the managed Deployments");
                Ok(None)
            }
        }
    }

    /// The status' `lastSyncState`, parsed once per sync.
    fn cached_metrics(
        &self,
        key: &str,
        status: Option<&ConsumerStatus>,
    ) -> Option<Arc<BTreeMap<u32, PartitionState>>> {
        let status = status?;
        let stamp = status.last_sync_time.as_ref().map(|t| t.0);
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = status.last_sync_state.as_ref() else {
            // Not kept in the status (too many partitions): the copy in memory,
            // if it is of the same read.
            return cache
                .get(key)
                .filter(|(at, _)| stamp.is_some() && *at == stamp)
                .map(|(_, parsed)| parsed.clone());
        };
        if let Some((at, parsed)) = cache.get(key)
            && *at == stamp
            && parsed.len() == state.len()
        {
            return Some(parsed.clone());
        }
        let parsed = Arc::new(consumer_step::parse_sync_state(state));
        cache.insert(key.to_string(), (stamp, parsed.clone()));
        Some(parsed)
    }

    /// The status' instances as the machine reads them: kept from an earlier
    /// pass while the stamp of the spec and the instances is the same.
    fn restored(
        &self,
        key: &str,
        spec: &ScalingSpec,
        status: Option<&ConsumerStatus>,
    ) -> Option<Arc<Restored>> {
        let instances = status?.instances.as_deref().filter(|i| !i.is_empty())?;
        let stamp = Restored::stamp(&self.stamp_keys, spec, instances);
        let mut cache = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, restored)) = cache.get(key)
            && *at == stamp
        {
            return Some(restored.clone());
        }
        let restored = Arc::new(Restored::new(spec, instances));
        cache.insert(key.to_string(), (stamp, restored.clone()));
        Some(restored)
    }

    /// Reads Prometheus when due: at most once per `minSyncPeriod`, failures
    /// included; while its addresses are down, once it failed, when their probe
    /// is due (see [`Outages::claim`]).
    async fn refresh(
        &self,
        consumer: &Consumer,
        key: &str,
        spec: &ScalingSpec,
        now: Timestamp,
    ) -> Option<Refresh> {
        if now < self.refresh_due(key, consumer, spec).0 {
            return None;
        }
        let addresses = addresses(consumer);
        let period = SignedDuration::try_from(spec.min_sync).unwrap_or(SignedDuration::ZERO);
        let claimed = self
            .outages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .claim(key, addresses, period, now);
        if !claimed {
            // Another Consumer behind the same addresses probed them this period.
            return None;
        }
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), now);
        match read_metrics(&self.prom, consumer, spec.layout.partitions(), now).await {
            Ok(snapshot) => {
                let notice = {
                    let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
                    outages.answered(addresses, false, now);
                    outages.recovered(key)
                };
                if let Some(notice) = notice {
                    log_notice(&notice);
                }
                Some(Refresh::Read {
                    partitions: snapshot.partitions,
                    issues: snapshot.issues,
                })
            }
            Err(e) => {
                let error = e.to_string();
                let notices = {
                    let mut outages = self.outages.lock().unwrap_or_else(|e| e.into_inner());
                    outages.answered(addresses, e.unreachable(), now);
                    outages.failed(key, &error, now)
                };
                tracing::debug!(consumer = %key, error = %error, "Prometheus unavailable");
                for notice in &notices {
                    log_notice(notice);
                }
                self.metrics
                    .reconcile_errors
                    .get_or_create(&ReasonLabel {
                        reason: "prometheus".into(),
                    })
                    .inc();
                Some(Refresh::Failed(error))
            }
        }
    }

    /// When the next Prometheus read of `consumer` is due: `minSyncPeriod` after
    /// the last attempt or sync, or, while it waits on the probe of its down
    /// addresses (`true`), after that probe. A sync whose metrics this replica
    /// does not hold (a new leader, metrics too many for lastSyncState) does not
    /// delay it.
    fn refresh_due(&self, key: &str, consumer: &Consumer, spec: &ScalingSpec) -> (Timestamp, bool) {
        let period = SignedDuration::try_from(spec.min_sync).unwrap_or(SignedDuration::ZERO);
        let last_sync = consumer
            .status
            .as_ref()
            .filter(|s| s.last_sync_state.is_some() || self.cached_metrics(key, Some(s)).is_some())
            .and_then(|s| s.last_sync_time.as_ref())
            .map(|t| t.0);
        let last_attempt = self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied();
        let own = match (last_attempt, last_sync) {
            (Some(a), Some(s)) => a.max(s),
            (a, s) => a.or(s).unwrap_or(Timestamp::UNIX_EPOCH),
        }
        .checked_add(period)
        .unwrap_or(Timestamp::MAX);
        let probe = self
            .outages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waits(key, addresses(consumer), period);
        match probe {
            Some(probe) if probe > own => (probe, true),
            _ => (own, false),
        }
    }

    async fn report(&self, consumer: &Consumer, t: &Transition) {
        self.metrics
            .transitions
            .get_or_create(&EventLabel {
                event: t.event.name().to_string(),
            })
            .inc();
        tracing::info!(
            consumer = %consumer.key(),
            instance = t.instance,
            event = t.event.name(),
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = %t.reason,
            "scaling transition"
        );
        if let Some(sink) = &self.sink {
            sink.publish(consumer, t).await;
        }
    }
}

/// The Prometheus addresses of a Consumer, as configured.
fn addresses(consumer: &Consumer) -> &[String] {
    consumer
        .spec
        .autoscaler
        .as_ref()
        .and_then(|a| a.prometheus.as_ref())
        .and_then(|p| p.address.as_deref())
        .unwrap_or_default()
}

/// Lists the labelled workloads grouped by (namespace, Consumer name).
pub type WorkloadMap = HashMap<(String, String), Vec<Value>>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::reconciler::deployments::{CountingDeployments, LocalDeployments};

    /// Writes statuses into the index, as both real stores do, and counts them.
    struct IndexStore {
        index: Arc<ConsumerIndex>,
        writes: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for IndexStore {
        async fn get(&self, _: &str, _: &str) -> Result<Option<Arc<CachedConsumer>>, StoreError> {
            Ok(None)
        }
        async fn write_status(
            &self,
            namespace: &str,
            name: &str,
            status: &ConsumerStatus,
        ) -> Result<(), StoreError> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.index.set_status(namespace, name, status.clone());
            Ok(())
        }
        fn kind(&self) -> &'static str {
            "index"
        }
    }

    struct NoWorkloads;

    #[async_trait::async_trait]
    impl WorkloadSource for NoWorkloads {
        async fn workloads(&self) -> Result<WorkloadMap, StoreError> {
            Ok(WorkloadMap::new())
        }
    }

    fn counter(metrics: &Metrics, prefix: &str) -> u64 {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    #[tokio::test]
    async fn a_consumer_whose_prometheus_stays_down_is_retried_without_reading_its_deployments_whole_or_writing_its_status()
     {
        let dir = tempfile::tempdir().unwrap();
        let index = ConsumerIndex::new();
        let mut consumer = crate::api::test_orders();
        // Refuses connections.
        if let Some(p) = consumer
            .spec
            .autoscaler
            .as_mut()
            .map(crate::api::Shared::make_mut)
            .and_then(|a| a.prometheus.as_mut())
        {
            p.address = Some(vec!["http://127.0.0.1:1".into()]);
        }
        index.upsert(consumer);
        let store = Arc::new(IndexStore {
            index: index.clone(),
            writes: AtomicUsize::new(0),
        });
        let reads = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::default());
        let start: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let now = Arc::new(Mutex::new(start));
        let clock = now.clone();
        let reconciler = Reconciler::new(
            index,
            store.clone(),
            Arc::new(NoWorkloads),
            PromClient::new(Duration::from_millis(500), metrics.clone()).unwrap(),
            None,
            metrics.clone(),
            ReconcilerConfig::default(),
            Arc::new(move || *clock.lock().unwrap()),
        )
        .with_deployments(Arc::new(CountingDeployments {
            inner: LocalDeployments::new(dir.path().to_path_buf()),
            reads: reads.clone(),
        }));
        let at = |secs: i64| *now.lock().unwrap() = start + SignedDuration::from_secs(secs);
        let failures = || {
            counter(
                &metrics,
                "konsumer_reconcile_errors_total{reason=\"prometheus\"}",
            )
        };

        // The first passes create its Deployments, seed its recommendations from
        // them and say in its status that Prometheus is down; then it settles.
        for secs in (0..60).step_by(10) {
            at(secs);
            reconciler.pass().await;
        }
        assert_eq!(failures(), 1);
        let deployments = std::fs::read_dir(dir.path().join("streams"))
            .unwrap()
            .count();
        assert_eq!(deployments, 4, "one Deployment per instance");
        assert!(
            reads.load(Ordering::Relaxed) > 0,
            "read whole while it settled"
        );
        let (read, written) = (
            reads.load(Ordering::Relaxed),
            store.writes.load(Ordering::Relaxed),
        );

        // Every minSyncPeriod (1m) it is retried, fails the same way: nothing is
        // read whole, nothing written.
        for secs in (60..250).step_by(10) {
            at(secs);
            reconciler.pass().await;
        }
        assert_eq!(failures(), 5, "retried at 60 s, 120 s, 180 s and 240 s");
        assert_eq!(
            reads.load(Ordering::Relaxed),
            read,
            "Deployments read whole"
        );
        assert_eq!(
            store.writes.load(Ordering::Relaxed),
            written,
            "status written"
        );
    }
}
