//! The Prometheus client: instant queries (`POST {address}/api/v1/query`, GET when
//! the server answers 405/501), every address at once, the first success used.
//! Vector and matrix (last sample) results; the partition from a label; NaN, ±Inf,
//! unreadable labels and error payloads reported, never a panic.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::telemetry::Metrics;
use crate::telemetry::metrics::QueryLabels;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PromError {
    #[error("{address}: {message}")]
    Transport { address: String, message: String },
    #[error("{address}: HTTP {status}: {error_type}: {message}")]
    Api {
        address: String,
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("{address}: unreadable answer: {message}")]
    Decode { address: String, message: String },
    #[error("{address}: no answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("no Prometheus address configured")]
    NoAddress,
    #[error("every Prometheus address failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    All(Vec<PromError>),
}

impl PromError {
    /// Whether the address gave no answer at all (down, unreachable, overloaded)
    /// rather than an answer to this query: then every query to it fails alike.
    pub fn unreachable(&self) -> bool {
        match self {
            PromError::Transport { .. } | PromError::Timeout { .. } => true,
            PromError::Api { status, .. } => *status >= 500,
            PromError::All(errors) => !errors.is_empty() && errors.iter().all(Self::unreachable),
            PromError::Decode { .. } | PromError::NoAddress => false,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            PromError::Transport { .. } => "transport",
            PromError::Api { .. } => "api",
            PromError::Decode { .. } => "decode",
            PromError::Timeout { .. } => "timeout",
            PromError::NoAddress | PromError::All(_) => "other",
        }
    }
}

/// One query's values per partition, and what looked wrong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub values: BTreeMap<u32, f64>,
    pub issues: Vec<String>,
}

const MAX_ISSUES: usize = 10;

/// The largest answer read (100,000 series of a typical query are ~18 MB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

impl QueryResult {
    fn issue(&mut self, message: String) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(message);
        } else if self.issues.len() == MAX_ISSUES {
            self.issues.push("(more issues not shown)".into());
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
    #[serde(borrow, default, rename = "errorType")]
    error_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, rename = "resultType")]
    result_type: Cow<'a, str>,
    #[serde(borrow)]
    result: &'a RawValue,
}

/// One series: the partition label's value and the (last) sample's value.
struct Series<'a> {
    partition: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
}

struct SeriesSeed<'l> {
    label: &'l str,
}

struct MetricSeed<'l> {
    label: &'l str,
}

impl<'de, 'l> DeserializeSeed<'de> for MetricSeed<'l> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'l>(&'l str);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label set")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == self.0 {
                        found = Some(map.next_value::<Cow<'de, str>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(found)
            }
        }
        d.deserialize_map(V(self.label))
    }
}

/// `[timestamp, "value"]`: the value.
#[derive(Deserialize)]
struct Point<'a>(IgnoredAny, #[serde(borrow)] Cow<'a, str>);

/// `[[ts, "v"], ...]`: the last value.
struct LastPoint;

impl<'de> DeserializeSeed<'de> for LastPoint {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of samples")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut last = None;
                while let Some(Point(_, v)) = seq.next_element::<Point<'de>>()? {
                    last = Some(v);
                }
                Ok(last)
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de, 'l> DeserializeSeed<'de> for SeriesSeed<'l> {
    type Value = Series<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'l>(&'l str);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Series<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a series")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut series = Series {
                    partition: None,
                    value: None,
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "metric" => {
                            series.partition = map.next_value_seed(MetricSeed { label: self.0 })?
                        }
                        "value" => series.value = Some(map.next_value::<Point<'de>>()?.1),
                        "values" => series.value = map.next_value_seed(LastPoint)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(series)
            }
        }
        d.deserialize_map(V(self.label))
    }
}

struct ResultSeed<'l> {
    label: &'l str,
    partitions: u32,
}

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = QueryResult;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'l>(&'l str, u32);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = QueryResult;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of series")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let (label, partitions) = (self.0, self.1);
                let mut out = QueryResult::default();
                while let Some(series) = seq.next_element_seed(SeriesSeed { label })? {
                    let Some(raw) = series.partition else {
                        out.issue(format!("a series has no {label:?} label"));
                        continue;
                    };
                    let Ok(partition) = raw.trim().parse::<u32>() else {
                        out.issue(format!("{label}={raw:?} is not a partition number"));
                        continue;
                    };
                    if partition >= partitions {
                        out.issue(format!(
                            "partition {partition} is not in 0..{}",
                            partitions.saturating_sub(1)
                        ));
                        continue;
                    }
                    let Some(text) = series.value else {
                        out.issue(format!("partition {partition}: no sample"));
                        continue;
                    };
                    match text.parse::<f64>() {
                        Ok(v) if v.is_finite() => {
                            if out.values.insert(partition, v).is_some() {
                                out.issue(format!(
                                    "partition {partition} has several series (the last one is used); aggregate with `by ({label})`"
                                ));
                            }
                        }
                        Ok(v) => out.issue(format!("partition {partition}: value {v} skipped")),
                        Err(_) => out.issue(format!(
                            "partition {partition}: value {text:?} is not a number"
                        )),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(self.label, self.partitions))
    }
}

/// Reads a `/api/v1/query` answer: the value per partition (from
/// `partition_label`, within `0..partitions`), or the error it carries.
pub fn parse_response(
    body: &[u8],
    partition_label: &str,
    partitions: u32,
) -> Result<QueryResult, (String, String)> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ("decode".to_string(), e.to_string()))?;
    if envelope.status != "success" {
        return Err((
            envelope
                .error_type
                .map(|e| e.into_owned())
                .unwrap_or_else(|| "error".into()),
            envelope.error.map(|e| e.into_owned()).unwrap_or_default(),
        ));
    }
    let data = envelope
        .data
        .ok_or_else(|| ("decode".to_string(), "a success without data".to_string()))?;
    match data.result_type.as_ref() {
        "vector" | "matrix" => {
            let mut de = serde_json::Deserializer::from_str(data.result.get());
            ResultSeed {
                label: partition_label,
                partitions,
            }
            .deserialize(&mut de)
            .map_err(|e| ("decode".to_string(), e.to_string()))
        }
        other => Err((
            "bad_result".to_string(),
            format!(
                "the query returns a {other}; it must return one series per partition (a vector)"
            ),
        )),
    }
}

/// `address` as it may be shown in logs, metrics and the status: without a
/// user name, password, query or fragment (credentials in the URL are the only
/// way to authenticate to Prometheus today).
pub fn redact(address: &str) -> String {
    match reqwest::Url::parse(address) {
        Ok(mut url) => {
            if url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none()
            {
                return address.to_string();
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            let shown = url.to_string();
            // The URL form adds a root "/" the user did not write.
            let wrote_root = address
                .split(['?', '#'])
                .next()
                .is_some_and(|base| base.ends_with('/'));
            match shown.strip_suffix('/') {
                Some(trimmed) if url.path() == "/" && !wrote_root => trimmed.to_string(),
                _ => shown,
            }
        }
        // Not a URL: show the part before any '@' (a user-info-looking prefix) only.
        Err(_) => match address.rsplit_once('@') {
            Some((_, host)) => format!("<redacted>@{host}"),
            None => address.to_string(),
        },
    }
}

/// `error sending request: dns error: failed to lookup address ...`: reqwest's
/// own message hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Caps the `address` label of query metrics: user-written values, so bounded.
#[derive(Default)]
struct AddressLabels {
    seen: std::sync::Mutex<HashMap<String, String>>,
}

impl AddressLabels {
    const MAX: usize = 32;

    fn label(&self, address: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = seen.get(address) {
            return l.clone();
        }
        let label = if seen.len() < Self::MAX {
            address.to_string()
        } else {
            "other".to_string()
        };
        seen.insert(address.to_string(), label.clone());
        label
    }
}

/// Queries Prometheus; one per process (connection pools are shared).
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    timeout: Duration,
    metrics: Arc<Metrics>,
    labels: Arc<AddressLabels>,
    down: Arc<Down>,
}

/// Addresses that could not be reached (connection refused, timeout) in the last
/// [`Down::WINDOW`]: queries to them fail at once with that error instead of each
/// trying again. 10,000 Consumers behind one Prometheus that is down made 30,000
/// connection attempts a minute; now the first query after the window probes it.
#[derive(Default)]
struct Down {
    since: std::sync::Mutex<HashMap<String, (Instant, PromError)>>,
}

impl Down {
    const WINDOW: Duration = Duration::from_secs(10);

    /// The error to answer with, while `address` is known to be down.
    fn check(&self, address: &str) -> Option<PromError> {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        match since.get(address) {
            Some((at, error)) if at.elapsed() < Self::WINDOW => Some(error.clone()),
            Some(_) => {
                // This query is the probe; the others wait for its answer.
                since.remove(address);
                None
            }
            None => None,
        }
    }

    fn record(&self, address: &str, result: &Result<QueryResult, PromError>) {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e @ (PromError::Transport { .. } | PromError::Timeout { .. })) => {
                since.insert(address.to_string(), (Instant::now(), e.clone()));
            }
            _ => {
                since.remove(address);
            }
        }
    }
}

impl PromClient {
    /// `timeout` bounds each query (per address).
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, PromError> {
        crate::server::tls::provider();
        let http = reqwest::Client::builder()
            // A Prometheus redirect turns a POST into a GET without the query.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| PromError::Transport {
                address: String::new(),
                message: e.to_string(),
            })?;
        Ok(PromClient {
            http,
            timeout,
            metrics,
            labels: Arc::new(AddressLabels::default()),
            down: Arc::new(Down::default()),
        })
    }

    /// Runs `query` on every address at once; the first success with data wins.
    pub async fn query(
        &self,
        addresses: &[String],
        query: &str,
        partition_label: &str,
        partitions: u32,
        at: Timestamp,
    ) -> Result<QueryResult, PromError> {
        if addresses.is_empty() {
            return Err(PromError::NoAddress);
        }
        let mut attempts: FuturesUnordered<_> = addresses
            .iter()
            .map(|a| self.query_one(a, query, partition_label, partitions, at))
            .collect();
        let mut errors = Vec::new();
        // An empty answer (a Prometheus that lost its targets, a fresh replica)
        // wins only when no other address has data.
        let mut empty = None;
        while let Some(result) = attempts.next().await {
            match result {
                // Dropping the other attempts cancels them.
                Ok(r) if !r.values.is_empty() => return Ok(r),
                Ok(r) => empty = Some(r),
                Err(e) => errors.push(e),
            }
        }
        if let Some(r) = empty {
            return Ok(r);
        }
        Err(if errors.len() == 1 {
            errors.remove(0)
        } else {
            PromError::All(errors)
        })
    }

    async fn query_one(
        &self,
        address: &str,
        query: &str,
        partition_label: &str,
        partitions: u32,
        at: Timestamp,
    ) -> Result<QueryResult, PromError> {
        let shown = redact(address);
        let label = self.labels.label(&shown);
        if let Some(error) = self.down.check(address) {
            self.metrics
                .prometheus_queries
                .get_or_create(&QueryLabels {
                    address: label,
                    outcome: "skipped".into(),
                })
                .inc();
            return Err(error);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            self.fetch(address, &shown, query, partition_label, partitions, at),
        )
        .await
        .unwrap_or_else(|_| {
            Err(PromError::Timeout {
                address: shown.clone(),
                timeout: self.timeout,
            })
        });
        self.down.record(address, &result);
        let reason = result.as_ref().err().map(PromError::reason);
        self.metrics
            .observe_prometheus_query(&label, reason, started.elapsed().as_secs_f64());
        result
    }

    /// `shown`: the address as errors may show it (`redact`).
    async fn fetch(
        &self,
        address: &str,
        shown: &str,
        query: &str,
        partition_label: &str,
        partitions: u32,
        at: Timestamp,
    ) -> Result<QueryResult, PromError> {
        let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let time = format!("{:.3}", at.as_millisecond() as f64 / 1000.0);
        let form = [("query", query), ("time", time.as_str())];
        let transport = |e: reqwest::Error| PromError::Transport {
            address: shown.to_string(),
            // reqwest's message carries the URL, credentials included.
            message: error_chain(&e.without_url()),
        };
        let mut response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(transport)?;
        if matches!(response.status().as_u16(), 405 | 501) {
            response = self
                .http
                .get(&url)
                .query(&form)
                .send()
                .await
                .map_err(transport)?;
        }
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(PromError::Decode {
                    address: shown.to_string(),
                    message: format!(
                        "the answer is larger than {} MiB; aggregate the query by partition",
                        MAX_RESPONSE_BYTES >> 20
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        match parse_response(&body, partition_label, partitions) {
            Ok(result) if (200..300).contains(&status) => Ok(result),
            Ok(_) => Err(PromError::Api {
                address: shown.to_string(),
                status,
                error_type: "http".into(),
                message: "success payload with an error status".into(),
            }),
            Err((error_type, _)) if error_type == "decode" && !(200..300).contains(&status) => {
                let text = String::from_utf8_lossy(&body);
                Err(PromError::Api {
                    address: shown.to_string(),
                    status,
                    error_type: "http".into(),
                    message: text.chars().take(200).collect(),
                })
            }
            Err((error_type, message)) if error_type == "decode" => Err(PromError::Decode {
                address: shown.to_string(),
                message,
            }),
            Err((error_type, message)) => Err(PromError::Api {
                address: shown.to_string(),
                status,
                error_type,
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<QueryResult, (String, String)> {
        parse_response(body.as_bytes(), "partition", 10)
    }

    #[test]
    fn vector_results_give_a_value_per_partition() {
        let r = parse(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"lag","partition":"0","topic":"orders"},"value":[1795355055.121,"10"]},
            {"metric":{"partition":"2"},"value":[1795355055.121,"30.5"]}]}}"#)
        .unwrap();
        assert_eq!(r.values, BTreeMap::from([(0, 10.0), (2, 30.5)]));
        assert!(r.issues.is_empty());
    }

    #[test]
    fn matrix_results_use_the_last_sample() {
        let r = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"partition":"1"},"values":[[1,"1"],[2,"2"],[3,"7"]]}]}}"#,
        )
        .unwrap();
        assert_eq!(r.values, BTreeMap::from([(1, 7.0)]));
    }

    #[test]
    fn nan_inf_bad_labels_and_duplicates_are_reported_not_used() {
        let r = parse(
            r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"partition":"0"},"value":[1,"NaN"]},
            {"metric":{"partition":"1"},"value":[1,"+Inf"]},
            {"metric":{"partition":"x1"},"value":[1,"5"]},
            {"metric":{"topic":"t"},"value":[1,"5"]},
            {"metric":{"partition":"99"},"value":[1,"5"]},
            {"metric":{"partition":"3"},"value":[1,"4"]},
            {"metric":{"partition":"3"},"value":[1,"6"]},
            {"metric":{"partition":"4"},"value":[1,"-Inf"]}]}}"#,
        )
        .unwrap();
        assert_eq!(r.values, BTreeMap::from([(3, 6.0)]));
        let issues = r.issues.join("\n");
        for expected in [
            "partition 0: value NaN skipped",
            "partition 1: value inf skipped",
            "partition=\"x1\" is not a partition number",
            "a series has no \"partition\" label",
            "partition 99 is not in 0..9",
            "partition 3 has several series",
            "partition 4: value -inf skipped",
        ] {
            assert!(
                issues.contains(expected),
                "missing {expected:?} in\n{issues}"
            );
        }
    }

    #[test]
    fn error_payloads_and_other_result_types_are_errors() {
        let e = parse(r#"{"status":"error","errorType":"bad_data","error":"parse error: unclosed left parenthesis"}"#)
            .unwrap_err();
        assert_eq!(e.0, "bad_data");
        assert!(e.1.contains("unclosed"));
        let e = parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"145"]}}"#)
            .unwrap_err();
        assert!(e.1.contains("returns a scalar"), "{e:?}");
        assert_eq!(parse("not json").unwrap_err().0, "decode");
        assert_eq!(parse(r#"{"status":"success"}"#).unwrap_err().0, "decode");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in "\\PC{0,200}") {
            let _ = parse(&body);
        }
    }

    #[test]
    fn shown_addresses_carry_no_credentials() {
        for (written, shown) in [
            ("http://prom:9090", "http://prom:9090"),
            ("http://prom:9090/", "http://prom:9090/"),
            ("http://u:p@prom:9090", "http://prom:9090"),
            ("https://u:p@prom:9090/prefix", "https://prom:9090/prefix"),
            ("http://prom:9090/?token=abc", "http://prom:9090/"),
            ("http://u@prom:9090/x?token=abc#f", "http://prom:9090/x"),
            ("not a url with user:pw@host", "<redacted>@host"),
        ] {
            assert_eq!(redact(written), shown, "{written}");
        }
    }
}
