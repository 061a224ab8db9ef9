//! The delivery loop and the state it keeps in memory while leading: per
//! subscription its working status and recent attempts, per (subscription,
//! Consumer) pair its cursor and backoff. No event is queued: each attempt builds
//! its event from the Consumer's journal, so memory stays bounded whatever the
//! receivers do.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::connector::{BODY_KEPT, Connector, ConnectorError, Sent, truncate};
use super::{Clock, DeliveryConfig, SecretValue, SourceError, SubscriptionSource};
use crate::api::subscription::{DISABLED, FAILING, LastAttempt, READY};
use crate::api::{JournalEntry, ScalingSubscription, SubscriptionStatus};
use crate::scaling::status::set_condition;
use crate::scaling_events::cloudevent::{self, ConsumerRef, ContentMode};
use crate::scaling_events::journal::{self, Resume};
use crate::scaling_events::signing::{self, Secrets};
use crate::scaling_events::{backoff, selection};
use crate::store::ConsumerIndex;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{OutcomeLabel, SubscriptionLabel};
use crate::validation::Report;
use crate::validation::subscription as rules;

/// One delivery attempt, as the HTTP API shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub time: Timestamp,
    pub event_id: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// `namespace/name` of the Consumer (empty for a ping).
    pub consumer: String,
    /// 1 for the first try of an event, then 2, 3, …
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// A subscription with the status this replica knows (the live one while it
/// delivers, the stored one otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionView {
    pub subscription: ScalingSubscription,
}

/// What a ping got.
#[derive(Clone, Debug, PartialEq)]
pub struct PingResult {
    pub status_code: Option<u16>,
    pub latency: Duration,
    /// The answer's first bytes.
    pub body: String,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error("ScalingSubscription {0} not found")]
    NoSubscription(String),
    #[error("Consumer {0} not found")]
    NoConsumer(String),
    #[error(
        "this konsumer replica does not deliver scaling events (it is not the leader, or has just started): a cursor it wrote would be overwritten by the leader's; send the rewind of {0} to the replica holding the leader Lease"
    )]
    NotLeading(String),
    #[error(
        "sequence {sequence} is not in the journal of Consumer {consumer} (it holds {first}..{head}); the cursor can move to {low}..{head}"
    )]
    OutOfJournal {
        consumer: String,
        sequence: i64,
        first: i64,
        head: i64,
        low: i64,
    },
    #[error("{0}")]
    Source(#[from] SourceError),
}

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("ScalingSubscription {0} not found")]
    NoSubscription(String),
    #[error("ScalingSubscription {key} cannot be delivered to: {reason}: {message}")]
    NotDeliverable {
        key: String,
        reason: String,
        message: String,
    },
    #[error("{0}")]
    Source(#[from] SourceError),
}

#[derive(Default)]
struct Pair {
    cursor: Option<i64>,
    /// Failed attempts of the event at the cursor.
    attempt: u32,
    not_before: Option<Instant>,
    in_flight: bool,
    failing_since: Option<Instant>,
}

struct SubState {
    uid: Option<String>,
    /// The spec as last seen: a change re-enables a disabled subscription.
    spec: String,
    generation: Option<i64>,
    object: Arc<ScalingSubscription>,
    status: SubscriptionStatus,
    written: Option<SubscriptionStatus>,
    pairs: HashMap<String, Pair>,
    attempts: VecDeque<AttemptRecord>,
    /// 410 Gone: disabled until the spec changes (the spec it was disabled at).
    disabled: Option<String>,
    /// Why it cannot be delivered to at all (invalid spec, Secret, egress).
    problem: Option<(&'static str, String)>,
    /// Receiver failures that lasted.
    failing: Option<(&'static str, String)>,
    /// A Warning Event was sent for the current trouble.
    warned: bool,
}

impl SubState {
    fn new(sub: &Arc<ScalingSubscription>) -> Self {
        let stored = sub.status.clone().unwrap_or_default();
        let pairs = stored
            .cursors
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Pair {
                        cursor: Some(*v),
                        ..Pair::default()
                    },
                )
            })
            .collect();
        // A subscription disabled before a restart stays so until its spec
        // changes, also if it changed while konsumer was not running (local
        // files have no generation): the status keeps the spec's hash.
        let spec = spec_fingerprint(sub);
        let disabled_here = stored
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == DISABLED && c.status == "True");
        let same_spec = match &stored.disabled_spec_hash {
            Some(hash) => *hash == spec_hash(&spec),
            // Written by an earlier version: the generation is all there is.
            None => stored
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == DISABLED)
                .is_some_and(|c| c.observed_generation == sub.metadata.generation),
        };
        let disabled = (disabled_here && same_spec).then(|| spec.clone());
        SubState {
            uid: sub.metadata.uid.clone(),
            spec,
            generation: sub.metadata.generation,
            object: sub.clone(),
            written: Some(stored.clone()),
            status: stored,
            pairs,
            attempts: VecDeque::new(),
            disabled,
            problem: None,
            failing: None,
            warned: false,
        }
    }
}

fn spec_fingerprint(sub: &ScalingSubscription) -> String {
    serde_json::to_string(&sub.spec).unwrap_or_default()
}

/// What the status keeps of a spec (never the spec itself: its URL may carry a
/// token in the query).
fn spec_hash(fingerprint: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, fingerprint.as_bytes());
    d.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A subscription ready to deliver to.
struct Target {
    key: String,
    url: reqwest::Url,
    secrets: Secrets,
    ca: Option<String>,
    mode: ContentMode,
    timeout: Duration,
    types: Option<HashSet<String>>,
}

impl Target {
    fn wants(&self, type_: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(type_))
    }
}

struct Inner {
    index: Arc<ConsumerIndex>,
    source: Arc<dyn SubscriptionSource>,
    connector: Connector,
    config: DeliveryConfig,
    metrics: Arc<Metrics>,
    clock: Clock,
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// A pair waited for a free slot in the last tick.
    starved: std::sync::atomic::AtomicBool,
    /// This replica delivers (its cursors are the ones that count).
    leading: std::sync::atomic::AtomicBool,
    state: Mutex<HashMap<String, SubState>>,
}

/// The delivery worker and the library functions of the subscription API.
#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

enum Outcome {
    Delivered,
    Gone(String),
    Failed {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
        label: &'static str,
    },
}

impl Deliveries {
    pub fn new(
        index: Arc<ConsumerIndex>,
        source: Arc<dyn SubscriptionSource>,
        config: DeliveryConfig,
        metrics: Arc<Metrics>,
        clock: Clock,
        wake: Arc<Notify>,
    ) -> Result<Self, ConnectorError> {
        let connector = Connector::new(config.egress.clone())?;
        Ok(Deliveries {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
                starved: std::sync::atomic::AtomicBool::new(false),
                leading: std::sync::atomic::AtomicBool::new(false),
                index,
                source,
                connector,
                config,
                metrics,
                clock,
                wake,
                state: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Wakes the worker (a journal was written).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Delivers while `leader` says so, until `shutdown`.
    pub async fn run(self, mut leader: watch::Receiver<bool>, shutdown: CancellationToken) {
        let inner = self.inner;
        loop {
            while !*leader.borrow_and_update() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = leader.changed() => if changed.is_err() { return },
                }
            }
            tracing::info!("leading: delivering scaling events");
            inner
                .leading
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let cancel = shutdown.child_token();
            let leading = LeadingGuard(inner.clone());
            // If this task is aborted, the delivery tasks it spawned stop too.
            let _stop_deliveries = cancel.clone().drop_guard();
            let lost = async {
                loop {
                    if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                        break;
                    }
                }
            };
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = lost => false,
                _ = inner.clone().lead(cancel.clone()) => false,
            };
            cancel.cancel();
            drop(leading);
            // Wait for in-flight attempts to notice, then (still the leader, on
            // shutdown) write the cursors they moved.
            let _ = inner
                .slots
                .acquire_many(inner.config.concurrency.max(1) as u32)
                .await;
            if stopping {
                inner.flush().await;
            }
            inner
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            if stopping {
                return;
            }
            tracing::warn!("lost the lease: stopped delivering scaling events");
        }
    }

    /// Every subscription with the status this replica knows.
    pub async fn list(&self) -> Result<Vec<SubscriptionView>, SourceError> {
        let subs = self.inner.source.subscriptions().await?;
        let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(subs
            .iter()
            .map(|s| {
                let mut sub = (**s).clone();
                if let Some(live) = state.get(&s.key()) {
                    sub.status = Some(self.inner.compose(live));
                }
                SubscriptionView { subscription: sub }
            })
            .collect())
    }

    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SubscriptionView>, SourceError> {
        let key = format!("{namespace}/{name}");
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|v| v.subscription.key() == key))
    }

    /// The recent delivery attempts of a subscription, newest first (empty on a
    /// replica that does not deliver).
    pub fn attempts(&self, namespace: &str, name: &str) -> Vec<AttemptRecord> {
        let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .get(&format!("{namespace}/{name}"))
            .map(|s| s.attempts.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends a `ping` event now, through the same guard, signing and encoding.
    pub async fn ping(&self, namespace: &str, name: &str) -> Result<PingResult, PingError> {
        let key = format!("{namespace}/{name}");
        let subs = self.inner.source.subscriptions().await?;
        let sub = subs
            .into_iter()
            .find(|s| s.key() == key)
            .ok_or_else(|| PingError::NoSubscription(key.clone()))?;
        let target = self
            .inner
            .prepare(&sub)
            .await
            .map_err(|(reason, message)| PingError::NotDeliverable {
                key: key.clone(),
                reason: reason.to_string(),
                message,
            })?;
        let now = (self.inner.clock)();
        let event = cloudevent::ping(namespace, name, now);
        let sent = self.inner.send(&target, &event, now).await;
        let (status_code, latency, body, error) = match sent {
            Ok(Sent::Answered {
                status,
                body,
                latency,
                ..
            }) => (Some(status), latency, body, None),
            Ok(Sent::Refused(d)) => (None, Duration::ZERO, String::new(), Some(d.to_string())),
            Ok(Sent::Failed { error, latency }) => (None, latency, String::new(), Some(error)),
            Err(e) => (None, Duration::ZERO, String::new(), Some(e.to_string())),
        };
        self.inner.log_attempt(
            &key,
            AttemptRecord {
                time: now,
                event_id: event.id.clone(),
                type_: event.type_.clone(),
                consumer: String::new(),
                attempt: 1,
                status_code,
                latency_ms: latency.as_millis() as u64,
                error: error.clone(),
            },
        );
        Ok(PingResult {
            status_code,
            latency,
            body: truncate(&body, BODY_KEPT),
            error,
        })
    }

    /// Moves the cursor of (subscription, Consumer) back (or forward) to
    /// `sequence`, which must be within the Consumer's journal: the events after
    /// it are delivered again.
    pub async fn rewind(
        &self,
        namespace: &str,
        name: &str,
        consumer: &str,
        sequence: i64,
    ) -> Result<(), RewindError> {
        let key = format!("{namespace}/{name}");
        let (cns, cname) = consumer
            .split_once('/')
            .ok_or_else(|| RewindError::NoConsumer(consumer.to_string()))?;
        let cached = self
            .inner
            .index
            .get(cns, cname)
            .ok_or_else(|| RewindError::NoConsumer(consumer.to_string()))?;
        let journal = match self.inner.source.journal(cns, cname).await? {
            Some(whole) => whole,
            None => cached
                .consumer
                .status
                .as_ref()
                .and_then(|s| s.journal.clone())
                .unwrap_or_default(),
        };
        let head = journal::head(&journal);
        let first = journal.first().map_or(head + 1, |e| e.sequence);
        let low = first - 1;
        if sequence < low || sequence > head {
            return Err(RewindError::OutOfJournal {
                consumer: consumer.to_string(),
                sequence,
                first,
                head,
                low,
            });
        }
        {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = state.get_mut(&key) {
                let pair = s.pairs.entry(consumer.to_string()).or_default();
                pair.cursor = Some(sequence);
                pair.attempt = 0;
                pair.not_before = None;
                drop(state);
                self.wake();
                return Ok(());
            }
        }
        // The leader has not taken this subscription up yet: it will start from
        // the cursor in the status. A replica that does not lead must not write
        // one: the leader's next status write would undo it without a word.
        if !self.inner.leading.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RewindError::NotLeading(key));
        }
        let subs = self.inner.source.subscriptions().await?;
        let sub = subs
            .into_iter()
            .find(|s| s.key() == key)
            .ok_or(RewindError::NoSubscription(key))?;
        let mut status = sub.status.clone().unwrap_or_default();
        status
            .cursors
            .get_or_insert_with(BTreeMap::new)
            .insert(consumer.to_string(), sequence);
        self.inner.source.write_status(&sub, &status).await?;
        Ok(())
    }
}

/// Events pending for a cursor, from the journal the cache holds: in local mode
/// only its recent entries, so a cursor behind them counts as far behind as the
/// whole journal could be (it may have fallen off it: then one resync is due).
fn pending(cached: &[JournalEntry], cursor: Option<i64>) -> usize {
    match (journal::resume(cached, cursor), cursor) {
        (Resume::Resync { head }, Some(c)) if c < head && cached.len() < journal::MAX_ENTRIES => {
            ((head - c) as usize).min(journal::MAX_ENTRIES)
        }
        _ => journal::pending(cached, cursor),
    }
}

/// Marks the worker as not leading when the leading loop ends in any way.
struct LeadingGuard(Arc<Inner>);

impl Drop for LeadingGuard {
    fn drop(&mut self) {
        self.0
            .leading
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn classify(
    sent: Result<Sent, ConnectorError>,
    now: SystemTime,
) -> (Outcome, Option<u16>, Duration) {
    match sent {
        Ok(Sent::Answered {
            status,
            retry_after,
            body,
            latency,
        }) => {
            let outcome = match status {
                200..=299 => Outcome::Delivered,
                410 => Outcome::Gone(
                    "the receiver answered 410 Gone: delivery is disabled until the spec changes"
                        .to_string(),
                ),
                300..=399 => Outcome::Failed {
                    reason: "ReceiverErrors",
                    message: format!(
                        "the receiver answered {status} (a redirect): konsumer never follows redirects; point spec.url at the final address"
                    ),
                    retry_after: None,
                    label: "redirect",
                },
                _ => {
                    let detail = truncate(body.trim(), 200);
                    Outcome::Failed {
                        reason: "ReceiverErrors",
                        message: if detail.is_empty() {
                            format!("the receiver answered {status}")
                        } else {
                            format!("the receiver answered {status}: {detail}")
                        },
                        retry_after: retry_after
                            .as_deref()
                            .and_then(|v| backoff::parse_retry_after(v, now)),
                        label: "http_error",
                    }
                }
            };
            (outcome, Some(status), latency)
        }
        Ok(Sent::Refused(d)) => (
            Outcome::Failed {
                reason: "EgressDenied",
                message: d.to_string(),
                retry_after: None,
                label: "egress_denied",
            },
            None,
            Duration::ZERO,
        ),
        Ok(Sent::Failed { error, latency }) => (
            Outcome::Failed {
                reason: "ReceiverErrors",
                label: if error.starts_with("no answer within") {
                    "timeout"
                } else {
                    "transport_error"
                },
                message: error,
                retry_after: None,
            },
            None,
            latency,
        ),
        Err(e) => (
            Outcome::Failed {
                reason: "InvalidCA",
                message: e.to_string(),
                retry_after: None,
                label: "client_error",
            },
            None,
            Duration::ZERO,
        ),
    }
}

impl Inner {
    async fn lead(self: Arc<Self>, cancel: CancellationToken) {
        // Status writes run beside the ticks: a slow write (an fsync, an
        // apiserver round trip) must not hold up the next event.
        let flusher = async {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.config.flush_every) => {}
                }
                self.flush().await;
            }
        };
        let ticker = async {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.tick) => {}
                }
                if self.index.is_synced() {
                    self.starved
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    self.tick(&cancel).await;
                }
            }
        };
        tokio::join!(flusher, ticker);
    }

    /// Checks a subscription and reads what delivering to it needs.
    async fn prepare(&self, sub: &ScalingSubscription) -> Result<Target, (&'static str, String)> {
        let mut report = Report::default();
        rules::check(
            sub,
            rules::Context {
                konsumer_namespace: &self.config.konsumer_namespace,
            },
            &mut report,
        );
        let spec = &sub.spec;
        if spec.url.is_none() {
            report.error(crate::validation::FieldError::required(
                crate::validation::FieldPath::root("spec").child("url"),
                "",
            ));
        }
        if spec.secret_ref.is_none() {
            report.error(crate::validation::FieldError::required(
                crate::validation::FieldPath::root("spec").child("secretRef"),
                "",
            ));
        }
        if !report.is_valid() {
            let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            return Err(("InvalidSpec", errors.join("; ")));
        }
        let ns = sub.metadata.namespace.as_deref().unwrap_or("default");
        let url = reqwest::Url::parse(spec.url.as_deref().unwrap_or_default())
            .map_err(|e| ("InvalidSpec", format!("spec.url: {e}")))?;
        let secret_ref = spec.secret_ref.clone().unwrap_or_default();
        let (sname, skey) = (
            secret_ref.name.unwrap_or_default(),
            secret_ref.key.unwrap_or_default(),
        );
        let secrets = match self.source.secret(ns, &sname, &skey).await {
            Ok(SecretValue::Found(text)) => Secrets::parse(&text).map_err(|e| {
                (
                    "SecretInvalid",
                    format!("Secret {ns}/{sname} key {skey}: {e}"),
                )
            })?,
            Ok(SecretValue::Missing(why)) => return Err(("SecretMissing", why)),
            Ok(SecretValue::Forbidden(why)) => return Err(("SecretForbidden", why)),
            Err(e) => {
                return Err((
                    "SecretUnavailable",
                    format!("reading Secret {ns}/{sname}: {e}"),
                ));
            }
        };
        let ca = match &spec.ca_secret_ref {
            None => None,
            Some(r) => {
                let name = r.name.clone().unwrap_or_default();
                let key = r.key.clone().unwrap_or_else(|| "ca.crt".into());
                match self.source.secret(ns, &name, &key).await {
                    Ok(SecretValue::Found(pem)) => Some(pem),
                    Ok(SecretValue::Missing(why)) => return Err(("SecretMissing", why)),
                    Ok(SecretValue::Forbidden(why)) => return Err(("SecretForbidden", why)),
                    Err(e) => {
                        return Err((
                            "SecretUnavailable",
                            format!("reading Secret {ns}/{name}: {e}"),
                        ));
                    }
                }
            }
        };
        Ok(Target {
            key: sub.key(),
            url,
            secrets,
            ca,
            mode: ContentMode::parse(spec.content_mode.as_deref()).unwrap_or_default(),
            timeout: rules::timeout_of(spec.timeout.as_deref()).unwrap_or(rules::DEFAULT_TIMEOUT),
            types: (!spec.types.is_empty()).then(|| spec.types.iter().cloned().collect()),
        })
    }

    async fn send(
        &self,
        target: &Target,
        event: &cloudevent::CloudEvent,
        now: Timestamp,
    ) -> Result<Sent, ConnectorError> {
        let encoded = cloudevent::encode(event, target.mode);
        let mut headers = encoded.headers;
        headers.extend(signing::headers(
            &target.secrets,
            &event.id,
            now.as_second(),
            &encoded.body,
        ));
        self.connector
            .post(
                &target.url,
                target.ca.as_deref(),
                &headers,
                encoded.body,
                target.timeout,
            )
            .await
    }

    fn log_attempt(&self, key: &str, record: AttemptRecord) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = state.get_mut(key) {
            s.attempts.push_front(record);
            s.attempts.truncate(self.config.attempts_kept);
        }
    }

    /// One pass: every subscription, every Consumer it sees; pairs with pending
    /// events get a delivery task while slots are free.
    async fn tick(self: &Arc<Self>, cancel: &CancellationToken) {
        let subs = match self.source.subscriptions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ScalingSubscriptions; retrying");
                return;
            }
        };
        let keys: HashSet<String> = subs.iter().map(|s| s.key()).collect();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = state
                .keys()
                .filter(|k| !keys.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                state.remove(&k);
                self.metrics.events_pending.remove(&SubscriptionLabel {
                    subscription: k.clone(),
                });
                self.metrics
                    .subscription_failing
                    .remove(&SubscriptionLabel { subscription: k });
            }
        }
        // Nothing to deliver to: no listing of every Consumer each tick (at
        // 10,000 Consumers, a sort and 10,000 keys made every second).
        if subs.is_empty() {
            return;
        }
        let consumers = self.index.all();
        let keys: Vec<&str> = consumers.iter().map(|c| c.key()).collect();
        let mut ns_labels: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
        for sub in subs {
            let key = sub.key();
            let prepared = self.prepare(&sub).await;
            let follows_others = sub.spec.namespace_selector.is_some()
                && sub.metadata.namespace.as_deref()
                    == Some(self.config.konsumer_namespace.as_str());
            if follows_others {
                for c in &consumers {
                    let ns = c.consumer.metadata.namespace.clone().unwrap_or_default();
                    if let std::collections::hash_map::Entry::Vacant(slot) = ns_labels.entry(ns) {
                        let labels = self.source.namespace_labels(slot.key()).await;
                        slot.insert(labels);
                    }
                }
            }
            let mut spawn: Vec<(String, String, OwnedSemaphorePermit)> = Vec::new();
            let mut warn_now: Option<(&'static str, String)> = None;
            let target = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let s = state
                    .entry(key.clone())
                    .or_insert_with(|| SubState::new(&sub));
                if s.uid != sub.metadata.uid {
                    *s = SubState::new(&sub);
                }
                let fingerprint = spec_fingerprint(&sub);
                if s.spec != fingerprint {
                    // A new spec: a disabled subscription is enabled again, and
                    // the backoff made for the old URL does not apply.
                    s.spec = fingerprint;
                    s.disabled = None;
                    s.warned = false;
                    s.failing = None;
                    for p in s.pairs.values_mut() {
                        p.attempt = 0;
                        p.not_before = None;
                        p.failing_since = None;
                    }
                }
                s.generation = sub.metadata.generation;
                s.object = sub.clone();
                match prepared {
                    Err((reason, message)) => {
                        if s.problem
                            .as_ref()
                            .is_none_or(|(r, m)| *r != reason || *m != message)
                        {
                            tracing::warn!(subscription = %key, reason, %message, "subscription cannot be delivered to");
                            warn_now = Some((reason, message.clone()));
                            s.warned = true;
                        }
                        s.problem = Some((reason, message));
                        None
                    }
                    Ok(target) => {
                        if s.problem
                            .as_ref()
                            .is_some_and(|(r, _)| *r != "EgressDenied")
                        {
                            s.problem = None;
                        }
                        if s.disabled.is_some() {
                            None
                        } else {
                            Some(Arc::new(target))
                        }
                    }
                }
            };
            if let Some((reason, message)) = warn_now {
                self.source.warn(&sub, reason, &message).await;
            }
            let mut pending_total = 0i64;
            let mut seen = HashSet::new();
            let now = Instant::now();
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(s) = state.get_mut(&key) else {
                    continue;
                };
                for (cached, ckey) in consumers.iter().zip(&keys) {
                    let c = &cached.consumer;
                    let ns = c.metadata.namespace.as_deref().unwrap_or("default");
                    let empty = BTreeMap::new();
                    let labels = c.metadata.labels.as_ref().unwrap_or(&empty);
                    let nsl = ns_labels.get(ns).and_then(|l| l.as_ref());
                    if !selection::sees(&sub, &self.config.konsumer_namespace, ns, labels, nsl) {
                        continue;
                    }
                    let journal = c
                        .status
                        .as_ref()
                        .and_then(|st| st.journal.as_deref())
                        .unwrap_or_default();
                    let pair = match s.pairs.get_mut(*ckey) {
                        Some(p) => p,
                        None => s.pairs.entry((*ckey).to_string()).or_default(),
                    };
                    seen.insert(*ckey);
                    let pending = pending(journal, pair.cursor);
                    pending_total += pending as i64;
                    if pending == 0
                        || target.is_none()
                        || pair.in_flight
                        || pair.not_before.is_some_and(|t| t > now)
                    {
                        continue;
                    }
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                        self.starved
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    pair.in_flight = true;
                    spawn.push((
                        ns.to_string(),
                        c.metadata.name.clone().unwrap_or_default(),
                        permit,
                    ));
                }
                // Consumers it no longer sees (deleted, relabelled): their cursors go.
                s.pairs
                    .retain(|k, p| p.in_flight || seen.contains(k.as_str()));
            }
            self.metrics
                .events_pending
                .get_or_create(&SubscriptionLabel {
                    subscription: key.clone(),
                })
                .set(pending_total);
            if let Some(target) = target {
                for (ns, name, permit) in spawn {
                    tokio::spawn(self.clone().deliver_pair(
                        target.clone(),
                        ns,
                        name,
                        permit,
                        cancel.clone(),
                    ));
                }
            }
        }
    }

    fn cursor(&self, sub: &str, consumer: &str) -> Option<Option<i64>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .get(sub)
            .and_then(|s| s.pairs.get(consumer))
            .map(|p| p.cursor)
    }

    async fn deliver_pair(
        self: Arc<Self>,
        target: Arc<Target>,
        ns: String,
        name: String,
        permit: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let ckey = format!("{ns}/{name}");
        let span = tracing::debug_span!("delivery", subscription = %target.key, consumer = %ckey);
        let _ = tracing::Instrument::instrument(
            self.deliver_loop(&target, &ns, &name, &ckey, &cancel),
            span,
        )
        .await;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = state
                .get_mut(&target.key)
                .and_then(|s| s.pairs.get_mut(&ckey))
            {
                p.in_flight = false;
            }
        }
        // A slot is free: pairs may be waiting for one.
        drop(permit);
        if self.starved.load(std::sync::atomic::Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    async fn deliver_loop(
        &self,
        target: &Target,
        ns: &str,
        name: &str,
        ckey: &str,
        cancel: &CancellationToken,
    ) {
        // The whole journal, read from the source while this pair is behind the
        // recent entries the cache holds (local mode); dropped when the pair ends.
        let mut whole: Option<Vec<JournalEntry>> = None;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let Some(cached) = self.index.get(ns, name) else {
                return;
            };
            let Some(cursor) = self.cursor(&target.key, ckey) else {
                return;
            };
            let consumer = &cached.consumer;
            let status = consumer.status.as_ref();
            let journal = status
                .and_then(|s| s.journal.as_deref())
                .unwrap_or_default();
            let cref = ConsumerRef {
                namespace: ns,
                name,
                uid: consumer.metadata.uid.as_deref().unwrap_or_default(),
            };
            let now = (self.clock)();
            let mut resume = journal::resume(journal, cursor);
            let mut from_whole = false;
            if matches!(resume, Resume::Resync { .. })
                && cursor.is_some_and(|c| c < journal::head(journal))
            {
                let held = whole
                    .as_deref()
                    .is_some_and(|w| matches!(journal::resume(w, cursor), Resume::From(_)));
                if !held {
                    match self.source.journal(ns, name).await {
                        Ok(w) => whole = w,
                        Err(e) => {
                            // Not a resync: the events may well be there.
                            tracing::warn!(consumer = %ckey, error = %e, "cannot read the journal; retrying");
                            return;
                        }
                    }
                }
                if let Some(r @ Resume::From(_)) =
                    whole.as_deref().map(|w| journal::resume(w, cursor))
                {
                    resume = r;
                    from_whole = true;
                }
            }
            let (event, next, decided) = match resume {
                Resume::UpToDate => return,
                Resume::From(i) => {
                    let e = match (&whole, from_whole) {
                        (Some(w), true) => &w[i],
                        _ => &journal[i],
                    };
                    (cloudevent::from_entry(&cref, e), e.sequence, Some(e.time.0))
                }
                Resume::Resync { head } => (cloudevent::resync(&cref, status, now), head, None),
            };
            let is_resync = decided.is_none();
            if !target.wants(&event.type_) {
                self.advance(&target.key, ckey, next);
                continue;
            }
            let attempt = {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state
                    .get(&target.key)
                    .and_then(|s| s.pairs.get(ckey))
                    .map_or(1, |p| p.attempt + 1)
            };
            let sent = tokio::select! {
                _ = cancel.cancelled() => return,
                sent = self.send(target, &event, now) => sent,
            };
            let (outcome, status_code, latency) = classify(sent, SystemTime::now());
            let done_at = (self.clock)();
            let label = match &outcome {
                Outcome::Delivered => "delivered",
                Outcome::Gone(_) => "gone",
                Outcome::Failed { label, .. } => label,
            };
            self.metrics
                .event_deliveries
                .get_or_create(&OutcomeLabel {
                    outcome: label.to_string(),
                })
                .inc();
            let error = match &outcome {
                Outcome::Delivered => None,
                Outcome::Gone(m) => Some(m.clone()),
                Outcome::Failed { message, .. } => Some(message.clone()),
            };
            let record = AttemptRecord {
                time: done_at,
                event_id: event.id.clone(),
                type_: event.type_.clone(),
                consumer: ckey.to_string(),
                attempt,
                status_code,
                latency_ms: latency.as_millis() as u64,
                error: error.clone(),
            };
            let mut warn: Option<(&'static str, String)> = None;
            let delivered = matches!(outcome, Outcome::Delivered);
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let Some(s) = state.get_mut(&target.key) else {
                    return;
                };
                s.attempts.push_front(record);
                s.attempts.truncate(self.config.attempts_kept);
                s.status.last_attempt = Some(LastAttempt {
                    time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(done_at),
                    event_id: event.id.clone(),
                    type_: event.type_.clone(),
                    consumer: ckey.to_string(),
                    status_code: status_code.map(i32::from),
                    error: error.clone(),
                });
                match outcome {
                    Outcome::Delivered => {
                        *s.status.delivered.get_or_insert(0) += 1;
                        if let Some(p) = s.pairs.get_mut(ckey) {
                            p.cursor = Some(next);
                            p.attempt = 0;
                            p.not_before = None;
                            p.failing_since = None;
                        }
                        if s.pairs.values().all(|p| p.failing_since.is_none()) {
                            s.failing = None;
                            s.warned = false;
                        }
                        if s.problem
                            .as_ref()
                            .is_some_and(|(r, _)| *r == "EgressDenied")
                        {
                            s.problem = None;
                        }
                    }
                    Outcome::Gone(message) => {
                        *s.status.failed.get_or_insert(0) += 1;
                        s.status.last_error = Some(message.clone());
                        s.disabled = Some(s.spec.clone());
                        warn = Some(("Gone", message));
                    }
                    Outcome::Failed {
                        reason,
                        message,
                        retry_after,
                        ..
                    } => {
                        *s.status.failed.get_or_insert(0) += 1;
                        s.status.last_error = Some(message.clone());
                        let failing_after = self.config.failing_after;
                        let failing_attempts = self.config.failing_attempts;
                        if let Some(p) = s.pairs.get_mut(ckey) {
                            p.attempt += 1;
                            let wait = backoff::delay(p.attempt, fastrand::f64(), retry_after);
                            p.not_before = Some(Instant::now() + wait);
                            let since = *p.failing_since.get_or_insert_with(Instant::now);
                            let lasting =
                                p.attempt >= failing_attempts || since.elapsed() >= failing_after;
                            if reason == "EgressDenied" {
                                self.metrics.egress_refusals.inc();
                                s.problem = Some((reason, message.clone()));
                            } else if lasting {
                                s.failing = Some((reason, message.clone()));
                            }
                        }
                        if !s.warned && (s.failing.is_some() || reason == "EgressDenied") {
                            s.warned = true;
                            warn = Some((reason, message));
                        }
                    }
                }
            }
            if delivered {
                if let Some(at) = decided {
                    let seconds = done_at.duration_since(at).as_secs_f64().max(0.0);
                    self.metrics.event_delivery_latency.observe(seconds);
                }
                if is_resync {
                    self.metrics.event_resyncs.inc();
                }
                continue;
            }
            if let Some((reason, message)) = warn {
                tracing::warn!(subscription = %target.key, consumer = %ckey, reason, %message, "scaling event delivery failing");
                let object = {
                    let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.get(&target.key).map(|s| s.object.clone())
                };
                if let Some(object) = object {
                    self.source.warn(&object, reason, &message).await;
                }
            }
            return;
        }
    }

    /// Moves a cursor past an event the subscriber does not want.
    fn advance(&self, sub: &str, consumer: &str, to: i64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = state.get_mut(sub).and_then(|s| s.pairs.get_mut(consumer)) {
            p.cursor = Some(to);
        }
    }

    /// The status a subscription's state stands for.
    fn compose(&self, s: &SubState) -> SubscriptionStatus {
        let now = (self.clock)();
        let mut status = s.status.clone();
        status.observed_generation = s.generation;
        status.cursors = Some(
            s.pairs
                .iter()
                .filter_map(|(k, p)| p.cursor.map(|c| (k.clone(), c)))
                .collect(),
        );
        let mut conditions = status.conditions.take().unwrap_or_default();
        let generation = s.generation;
        status.disabled_spec_hash = s.disabled.as_deref().map(spec_hash);
        match &s.disabled {
            Some(_) => set_condition(
                &mut conditions,
                DISABLED,
                true,
                "Gone",
                "the receiver answered 410 Gone; change the spec to enable delivery again".into(),
                generation,
                now,
            ),
            None => set_condition(
                &mut conditions,
                DISABLED,
                false,
                "Enabled",
                String::new(),
                generation,
                now,
            ),
        }
        let trouble = s.problem.as_ref().or(s.failing.as_ref());
        match trouble {
            Some((reason, message)) => set_condition(
                &mut conditions,
                FAILING,
                true,
                reason,
                message.clone(),
                generation,
                now,
            ),
            None => set_condition(
                &mut conditions,
                FAILING,
                false,
                "Delivering",
                String::new(),
                generation,
                now,
            ),
        }
        let (ready, reason, message) = match (&s.disabled, trouble) {
            (Some(_), _) => (false, "Gone", "disabled after 410 Gone".to_string()),
            (None, Some((reason, message))) => (false, *reason, message.clone()),
            (None, None) => (true, "Delivering", String::new()),
        };
        set_condition(
            &mut conditions,
            READY,
            ready,
            reason,
            message,
            generation,
            now,
        );
        status.conditions = Some(conditions);
        status
    }

    /// Writes every subscription status that changed since it was last written.
    async fn flush(&self) {
        let writes: Vec<(String, Arc<ScalingSubscription>, SubscriptionStatus)> = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .iter()
                .filter_map(|(k, s)| {
                    let status = self.compose(s);
                    (s.written.as_ref() != Some(&status))
                        .then(|| (k.clone(), s.object.clone(), status))
                })
                .collect()
        };
        for (key, sub, status) in writes {
            let failing = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == FAILING && c.status == "True");
            self.metrics
                .subscription_failing
                .get_or_create(&SubscriptionLabel {
                    subscription: key.clone(),
                })
                .set(failing as i64);
            match self.source.write_status(&sub, &status).await {
                Ok(()) => {
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(s) = state.get_mut(&key) {
                        s.status.conditions = status.conditions.clone();
                        s.written = Some(status);
                    }
                }
                Err(e) => {
                    tracing::warn!(subscription = %key, error = %e, "cannot write the subscription status; retrying")
                }
            }
        }
    }
}
