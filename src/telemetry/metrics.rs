//! One Prometheus registry, metric names prefixed `konsumer_`, label values from
//! closed enums (never a pod name or a uid).

use std::sync::OnceLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Webhook {
    mutate_workloads,
    mutate_consumers,
    validate_consumers,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Kind {
    Pod,
    Deployment,
    Consumer,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceStateLabels {
    /// `namespace/name` of the Consumer.
    pub consumer: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The handles of one admission label set, resolved on its first request so
/// that later ones take neither the family's lock nor a label lookup.
type AdmissionSeries = (Counter, Histogram);

const ADMISSION_SERIES: usize = 3 * 4 * 5 * 5;

impl AdmissionLabels {
    /// A dense index over every combination of the four closed enums.
    fn slot(&self) -> usize {
        ((self.webhook as usize * 4 + self.kind as usize) * 5 + self.operation as usize) * 5
            + self.outcome as usize
    }
}

pub struct Metrics {
    pub registry: Registry,
    admission_series: Box<[OnceLock<AdmissionSeries>]>,
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
    pub instances: Family<InstanceStateLabels, Gauge>,
    pub transitions: Family<EventLabel, Counter>,
    pub leader: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("konsumer");
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
        let instances = Family::<InstanceStateLabels, Gauge>::default();
        registry.register(
            "instances",
            "Instances per scaling state, per Consumer",
            instances.clone(),
        );
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
        Metrics {
            registry,
            admission_series: (0..ADMISSION_SERIES).map(|_| OnceLock::new()).collect(),
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
        for state in [
            "RUNNING",
            "PENDING_SCALE_UP",
            "PENDING_SCALE_DOWN",
            "SATURATED",
        ] {
            let labels = InstanceStateLabels {
                consumer: consumer.to_string(),
                state: state.to_string(),
            };
            match counts {
                Some(counts) => {
                    let n = counts
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0, |(_, n)| *n);
                    self.instances.get_or_create(&labels).set(n);
                }
                None => {
                    self.instances.remove(&labels);
                }
            }
        }
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
