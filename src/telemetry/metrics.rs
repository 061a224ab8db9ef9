//! One Prometheus registry, metric names prefixed `konsumer_`, label values from
//! closed enums (never a pod name or a uid).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Webhook {
    mutate_workloads,
    mutate_consumers,
    validate_consumers,
    validate_scalingsubscriptions,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Kind {
    Pod,
    Deployment,
    Consumer,
    ScalingSubscription,
    Other,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Operation {
    CREATE,
    UPDATE,
    DELETE,
    CONNECT,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Consumer => "Consumer",
            Kind::ScalingSubscription => "ScalingSubscription",
            Kind::Other => "Other",
        }
    }
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CREATE => "CREATE",
            Operation::UPDATE => "UPDATE",
            Operation::DELETE => "DELETE",
            Operation::CONNECT => "CONNECT",
            Operation::Other => "Other",
        }
    }

    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("CREATE") => Operation::CREATE,
            Some("UPDATE") => Operation::UPDATE,
            Some("DELETE") => Operation::DELETE,
            Some("CONNECT") => Operation::CONNECT,
            _ => Operation::Other,
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Allowed with a patch.
    patched,
    /// Allowed, nothing to change.
    allowed,
    /// Refused (allowed=false).
    denied,
    /// The request itself was unusable (400/408/413).
    bad_request,
    /// No decision slot freed within the request's budget (429).
    overloaded,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: Webhook,
    pub kind: Kind,
    pub operation: Operation,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub address: String,
    /// `ok`, or why it failed: `transport`, `api`, `decode`, `timeout`; `skipped`:
    /// not sent, the address was unreachable less than 10 s ago.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabel {
    pub address: String,
}

/// The scaling states `konsumer_instances` counts, in the order of
/// [`InstanceGauges`]' counts.
const INSTANCE_STATES: [&str; 4] = [
    "RUNNING",
    "PENDING_SCALE_UP",
    "PENDING_SCALE_DOWN",
    "SATURATED",
];

/// `konsumer_instances{consumer, state}`: per Consumer its key once and its four
/// counts, encoded as the four series at each scrape. A `Family` kept a label set
/// per Consumer and state, each with its own two strings, and a gauge each: 6.0 MB
/// of the heap at 10,000 Consumers, and eight strings made per Consumer per pass.
#[derive(Clone, Debug, Default)]
pub struct InstanceGauges(Arc<RwLock<BTreeMap<Box<str>, [i64; 4]>>>);

impl InstanceGauges {
    fn set(&self, consumer: &str, counts: Option<[(&str, i64); 4]>) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let Some(counts) = counts else {
            map.remove(consumer);
            return;
        };
        let values = INSTANCE_STATES.map(|state| {
            counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n)
        });
        match map.get_mut(consumer) {
            Some(v) => *v = values,
            None => {
                map.insert(consumer.into(), values);
            }
        }
    }

    /// The count of one Consumer in one state (`None`: no such series).
    pub fn get(&self, consumer: &str, state: &str) -> Option<i64> {
        let i = INSTANCE_STATES.iter().position(|s| *s == state)?;
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(consumer).map(|v| v[i])
    }
}

impl Collector for InstanceGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut metric = encoder.encode_descriptor(
            "instances",
            // With the full stop `Registry::register` adds to a metric's help.
            "Instances per scaling state, per Consumer.",
            None,
            MetricType::Gauge,
        )?;
        for (consumer, counts) in map.iter() {
            for (state, n) in INSTANCE_STATES.iter().zip(counts) {
                let labels = [("consumer", &**consumer), ("state", *state)];
                ConstGauge::new(*n).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create`, `rollout`, `metadata` or `delete`.
    pub change: String,
    /// `ok` or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short event type: `scaled`, `scale_pending`, ...
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `delivered`, `http_error`, `redirect`, `gone`, `timeout`,
    /// `transport_error`, `egress_denied`, `client_error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabel {
    /// `namespace/name` of the ScalingSubscription.
    pub subscription: String,
}

/// The handles of one admission label set, resolved on its first request so
/// that later ones take neither the family's lock nor a label lookup.
type AdmissionSeries = (Counter, Histogram);

const WEBHOOKS: usize = 4;
const KINDS: usize = 5;
const OPERATIONS: usize = 5;
const OUTCOMES: usize = 5;
const ADMISSION_SERIES: usize = WEBHOOKS * KINDS * OPERATIONS * OUTCOMES;

impl AdmissionLabels {
    /// A dense index over every combination of the four closed enums.
    fn slot(&self) -> usize {
        ((self.webhook as usize * KINDS + self.kind as usize) * OPERATIONS
            + self.operation as usize)
            * OUTCOMES
            + self.outcome as usize
    }
}

/// A request to the HTTP API: its route template (never the path itself), method
/// and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub route: String,
    pub method: String,
    /// `2xx`, `4xx`, `5xx`.
    pub status_class: String,
}

pub struct Metrics {
    pub registry: Registry,
    admission_series: Box<[OnceLock<AdmissionSeries>]>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub api_duration: Family<ApiLabels, Histogram>,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<AdmissionLabels, Histogram>,
    pub consumers: Gauge,
    pub consumer_cache_misses: Counter,
    pub prometheus_queries: Family<QueryLabels, Counter>,
    pub prometheus_query_duration: Family<AddressLabel, Histogram>,
    pub reconcile_duration: Histogram,
    pub reconcile_pass_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub prometheus_failing_consumers: Gauge,
    pub instances: InstanceGauges,
    pub transitions: Family<EventLabel, Counter>,
    pub leader: Gauge,
    pub events_journaled: Family<TypeLabel, Counter>,
    pub event_deliveries: Family<OutcomeLabel, Counter>,
    pub event_delivery_latency: Histogram,
    pub events_pending: Family<SubscriptionLabel, Gauge>,
    pub subscription_failing: Family<SubscriptionLabel, Gauge>,
    pub event_resyncs: Counter,
    pub egress_refusals: Counter,
    pub deployment_writes: Family<WriteLabels, Counter>,
    pub rollouts_deferred: Counter,
    pub tls_cert_expiry: Gauge,
    pub store_writable: Gauge,
    pub connections_displaced: Family<ListenerLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// `webhook` or `admin`.
    pub listener: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

impl Default for Metrics {
    fn default() -> Self {
        // The standard process_* metrics at the root; konsumer's own under konsumer_.
        let mut root = Registry::default();
        root.register_collector(Box::new(super::process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("konsumer");
        registry.register(
            "build",
            "konsumer's version (the value is always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests answered, by webhook, kind, operation and outcome",
            admission_requests.clone(),
        );
        let admission_duration = Family::<AdmissionLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request, from the body read to the answer",
            admission_duration.clone(),
        );
        let consumers = Gauge::default();
        registry.register("consumers", "Consumers in the cache", consumers.clone());
        let consumer_cache_misses = Counter::default();
        registry.register(
            "consumer_cache_misses",
            "Workload requests whose Consumer was not cached and was read directly",
            consumer_cache_misses.clone(),
        );
        let prometheus_queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "prometheus_queries",
            "Prometheus queries, by address and outcome",
            prometheus_queries.clone(),
        );
        let prometheus_query_duration = Family::<AddressLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "prometheus_query_duration_seconds",
            "Time to answer a Prometheus query, by address",
            prometheus_query_duration.clone(),
        );
        let reconcile_duration = latency_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Consumer (metrics, prediction, status)",
            reconcile_duration.clone(),
        );
        let reconcile_pass_duration = latency_histogram();
        registry.register(
            "reconcile_pass_duration_seconds",
            "Time of one reconciler pass over every Consumer (it should stay well below --reconcile-interval)",
            reconcile_pass_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Consumer reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        let prometheus_failing_consumers = Gauge::default();
        registry.register(
            "prometheus_failing_consumers",
            "Consumers whose last Prometheus read failed (their MetricsAvailable condition says why)",
            prometheus_failing_consumers.clone(),
        );
        let instances = InstanceGauges::default();
        registry.register_collector(Box::new(instances.clone()));
        let transitions = Family::<EventLabel, Counter>::default();
        registry.register(
            "scaling_transitions",
            "Scaling state transitions, by event",
            transitions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the reconciler lease",
            leader.clone(),
        );
        let tls_cert_expiry = Gauge::default();
        registry.register(
            "tls_cert_expiry_seconds",
            "Seconds until the serving certificate expires (negative once expired), as of the last reload check",
            tls_cert_expiry.clone(),
        );
        let store_writable = Gauge::default();
        registry.register(
            "store_writable",
            "1 while Consumer status can be written (0: the last status write failed; see /readyz)",
            store_writable.clone(),
        );
        let connections_displaced = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "connections_displaced",
            "Connections without a request in flight closed to give their slot to a new connection, by listener",
            connections_displaced.clone(),
        );
        let deployment_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "deployment_writes",
            "Writes to managed Deployments, by change (create, rollout, metadata, delete) and outcome",
            deployment_writes.clone(),
        );
        let rollouts_deferred = Counter::default();
        registry.register(
            "rollouts_deferred",
            "Rollouts that waited for a free slot of --max-rollouts-per-minute",
            rollouts_deferred.clone(),
        );
        let events_journaled = Family::<TypeLabel, Counter>::default();
        registry.register(
            "scaling_events_journaled",
            "Scaling events recorded in Consumer journals, by type",
            events_journaled.clone(),
        );
        let event_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "event_delivery_attempts",
            "Attempts to deliver a scaling event to a subscriber, by outcome",
            event_deliveries.clone(),
        );
        // 5 ms .. ~10 min: a receiver that was down shows as a long latency.
        let event_delivery_latency = Histogram::new(exponential_buckets(0.005, 2.0, 18));
        registry.register(
            "event_delivery_latency_seconds",
            "Time from the scaling decision to the subscriber's 2xx",
            event_delivery_latency.clone(),
        );
        let events_pending = Family::<SubscriptionLabel, Gauge>::default();
        registry.register(
            "events_pending",
            "Scaling events not yet acknowledged, per ScalingSubscription (a resync counts as one)",
            events_pending.clone(),
        );
        let subscription_failing = Family::<SubscriptionLabel, Gauge>::default();
        registry.register(
            "subscription_failing",
            "1 while a ScalingSubscription's Failing condition is True",
            subscription_failing.clone(),
        );
        let event_resyncs = Counter::default();
        registry.register(
            "event_resyncs",
            "Resync snapshots delivered (a cursor was not in the journal)",
            event_resyncs.clone(),
        );
        let egress_refusals = Counter::default();
        registry.register(
            "egress_refusals",
            "Connections to subscriber addresses the egress guard refused",
            egress_refusals.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "HTTP API requests answered, by route template, method and status class",
            api_requests.clone(),
        );
        let api_duration = Family::<ApiLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "api_request_duration_seconds",
            "Time to answer an HTTP API request, by route template, method and status class",
            api_duration.clone(),
        );
        Metrics {
            registry: root,
            admission_series: (0..ADMISSION_SERIES).map(|_| OnceLock::new()).collect(),
            api_requests,
            api_duration,
            events_journaled,
            event_deliveries,
            event_delivery_latency,
            events_pending,
            subscription_failing,
            event_resyncs,
            egress_refusals,
            admission_requests,
            admission_duration,
            consumers,
            consumer_cache_misses,
            prometheus_queries,
            prometheus_query_duration,
            reconcile_duration,
            reconcile_pass_duration,
            reconcile_errors,
            prometheus_failing_consumers,
            instances,
            transitions,
            leader,
            tls_cert_expiry,
            store_writable,
            connections_displaced,
            deployment_writes,
            rollouts_deferred,
        }
    }
}

impl Metrics {
    pub fn observe_admission(&self, labels: AdmissionLabels, seconds: f64) {
        let (requests, duration) = self.admission_series[labels.slot()].get_or_init(|| {
            (
                self.admission_requests.get_or_create(&labels).clone(),
                self.admission_duration.get_or_create(&labels).clone(),
            )
        });
        requests.inc();
        duration.observe(seconds);
    }

    pub fn observe_prometheus_query(&self, address: &str, failure: Option<&str>, seconds: f64) {
        self.prometheus_queries
            .get_or_create(&QueryLabels {
                address: address.to_string(),
                outcome: failure.unwrap_or("ok").to_string(),
            })
            .inc();
        self.prometheus_query_duration
            .get_or_create(&AddressLabel {
                address: address.to_string(),
            })
            .observe(seconds);
    }

    /// Sets the instance-per-state gauges of one Consumer (`None`: it is gone).
    pub fn set_instances(&self, consumer: &str, counts: Option<[(&str, i64); 4]>) {
        self.instances.set(consumer, counts);
    }

    pub fn count_deployment_write(&self, change: &str, ok: bool) {
        self.deployment_writes
            .get_or_create(&WriteLabels {
                change: change.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_metrics_are_exported_beside_konsumers_own() {
        let text = Metrics::default().encode();
        assert!(
            text.contains(&format!(
                "konsumer_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name}in\n{text}"
            );
        }
        assert!(text.contains("# TYPE konsumer_leader gauge"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn every_admission_label_set_has_its_own_slot() {
        use std::collections::HashSet;
        let webhooks = [
            Webhook::mutate_workloads,
            Webhook::mutate_consumers,
            Webhook::validate_consumers,
            Webhook::validate_scalingsubscriptions,
        ];
        let kinds = [
            Kind::Pod,
            Kind::Deployment,
            Kind::Consumer,
            Kind::ScalingSubscription,
            Kind::Other,
        ];
        let operations = [
            Operation::CREATE,
            Operation::UPDATE,
            Operation::DELETE,
            Operation::CONNECT,
            Operation::Other,
        ];
        let outcomes = [
            Outcome::patched,
            Outcome::allowed,
            Outcome::denied,
            Outcome::bad_request,
            Outcome::overloaded,
        ];
        let mut seen = HashSet::new();
        for webhook in webhooks {
            for kind in kinds {
                for operation in operations {
                    for outcome in outcomes {
                        let slot = AdmissionLabels {
                            webhook,
                            kind,
                            operation,
                            outcome,
                        }
                        .slot();
                        assert!(slot < ADMISSION_SERIES, "{slot}");
                        assert!(seen.insert(slot), "slot {slot} twice");
                    }
                }
            }
        }
        assert_eq!(seen.len(), ADMISSION_SERIES);
    }

    fn instance_series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("konsumer_instances{"))
            .collect()
    }

    #[test]
    fn instance_gauges_are_four_series_per_consumer_set_in_place_and_gone_with_it() {
        let m = Metrics::default();
        let counts = |running, up, saturated| {
            Some([
                ("RUNNING", running),
                ("PENDING_SCALE_UP", up),
                ("PENDING_SCALE_DOWN", 0),
                ("SATURATED", saturated),
            ])
        };
        let text = m.encode();
        assert_eq!(text.matches("# TYPE konsumer_instances gauge\n").count(), 1);
        assert!(
            text.contains("# HELP konsumer_instances Instances per scaling state, per Consumer.\n"),
            "{text}"
        );
        assert!(instance_series(&text).is_empty(), "{text}");

        m.set_instances("streams/orders", counts(3, 1, 0));
        m.set_instances("streams/billing", counts(1, 0, 2));
        m.set_instances("streams/orders", counts(2, 2, 0));
        let text = m.encode();
        let mut series = instance_series(&text);
        series.sort_unstable();
        assert_eq!(
            series,
            [
                r#"konsumer_instances{consumer="streams/billing",state="PENDING_SCALE_DOWN"} 0"#,
                r#"konsumer_instances{consumer="streams/billing",state="PENDING_SCALE_UP"} 0"#,
                r#"konsumer_instances{consumer="streams/billing",state="RUNNING"} 1"#,
                r#"konsumer_instances{consumer="streams/billing",state="SATURATED"} 2"#,
                r#"konsumer_instances{consumer="streams/orders",state="PENDING_SCALE_DOWN"} 0"#,
                r#"konsumer_instances{consumer="streams/orders",state="PENDING_SCALE_UP"} 2"#,
                r#"konsumer_instances{consumer="streams/orders",state="RUNNING"} 2"#,
                r#"konsumer_instances{consumer="streams/orders",state="SATURATED"} 0"#,
            ]
        );
        assert_eq!(m.instances.get("streams/orders", "RUNNING"), Some(2));

        // A state the counts leave out is 0; a Consumer that is gone has no series.
        m.set_instances(
            "streams/billing",
            Some([
                ("RUNNING", 5),
                ("RUNNING", 5),
                ("RUNNING", 5),
                ("RUNNING", 5),
            ]),
        );
        assert_eq!(m.instances.get("streams/billing", "SATURATED"), Some(0));
        m.set_instances("streams/orders", None);
        let text = m.encode();
        let series = instance_series(&text);
        assert_eq!(series.len(), 4, "{text}");
        assert!(
            series.iter().all(|l| l.contains("streams/billing")),
            "{text}"
        );
        assert_eq!(m.instances.get("streams/orders", "RUNNING"), None);
        assert_eq!(text.matches("# TYPE konsumer_instances gauge\n").count(), 1);
    }
}
