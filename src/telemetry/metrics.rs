//! One Prometheus registry, metric names prefixed `konsumer_`, label values from
//! closed enums (never a pod name or a uid).

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

impl Operation {
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
    /// The request itself was unusable (400/413).
    bad_request,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: Webhook,
    pub kind: Kind,
    pub operation: Operation,
    pub outcome: Outcome,
}

pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<AdmissionLabels, Histogram>,
    pub consumers: Gauge,
    pub consumer_cache_misses: Counter,
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
        Metrics {
            registry,
            admission_requests,
            admission_duration,
            consumers,
            consumer_cache_misses,
        }
    }
}

impl Metrics {
    pub fn observe_admission(&self, labels: AdmissionLabels, seconds: f64) {
        self.admission_requests.get_or_create(&labels).inc();
        self.admission_duration
            .get_or_create(&labels)
            .observe(seconds);
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
