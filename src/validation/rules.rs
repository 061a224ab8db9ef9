//! The rules a Consumer must satisfy beyond its types: every crash case of
//! Konsumerator's controller, and what a careful reviewer would catch.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use super::field::{FieldError, Path, Report};
use crate::api::duration::{format_go_duration, parse_go_duration};
use crate::api::quantity::Milli;
use crate::api::{
    Consumer, ContainerResourcePolicy, PrometheusAutoscalerSpec, QuerySpec, ResourceList, env,
};
use crate::inject::partition::{
    Layout, MAX_INSTANCES, MAX_PARTITIONS, MAX_RECOMMENDATIONS, too_many_instances,
};

/// The warning for `v1alpha1`, word for word the CRD's `deprecationWarning`
/// (kubectl shows identical warnings once).
pub const V1ALPHA1_DEPRECATED: &str =
    "konsumerator.lwolf.org/v1alpha1 Consumer is deprecated; use konsumerator.lwolf.org/v1";

const MIN_DURATION: Duration = Duration::from_secs(1);
const DAY: u64 = 24 * 3600;

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn q(v: &Quantity) -> Value {
    Value::String(v.0.clone())
}

/// What the rules know besides the object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The API version the user wrote (`v1`, `v1alpha1`).
    pub version: &'a str,
    /// The stored object on UPDATE.
    pub old: Option<&'a Consumer>,
}

/// Applies every rule; errors and warnings go to `report`. Fields that already
/// have a type error are skipped.
pub fn check(c: &Consumer, ctx: Context<'_>, report: &mut Report) {
    let spec = &c.spec;
    let p = Path::Root("spec");
    if ctx.version == crate::api::VERSION_V1ALPHA1 {
        report.warn(V1ALPHA1_DEPRECATED);
    }

    if let Some(n) = spec.num_partitions {
        if n < 1 {
            report.error(FieldError::invalid(
                p.child("numPartitions"),
                &json!(n),
                "must be greater than or equal to 1",
            ));
        } else if n as i64 > MAX_PARTITIONS as i64 {
            report.error(FieldError::invalid(
                p.child("numPartitions"),
                &json!(n),
                format!(
                    "must be at most {MAX_PARTITIONS} (konsumer's limit per Consumer: what it keeps per \
                     partition must fit the Consumer's status, one Kubernetes object of at most 1.5 MiB)"
                ),
            ));
        }
    }
    instance_limits(c, &p, report);
    if let Some(n) = spec.num_partitions_per_instance {
        if n < 1 {
            report.error(FieldError::invalid(
                p.child("numPartitionsPerInstance"),
                &json!(n),
                "must be greater than or equal to 1",
            ));
        } else if spec
            .num_partitions
            .is_some_and(|total| total >= 1 && n > total)
        {
            report.warn(format!(
                "spec.numPartitionsPerInstance ({n}) is above spec.numPartitions: one instance consumes every partition"
            ));
        }
    }
    if let Some(name) = &spec.name {
        dns_subdomain(report, p.child("name"), name);
    }
    if let Some(ns) = &spec.namespace
        && dns_label(report, p.child("namespace"), ns)
        && let Some(meta_ns) = c.metadata.namespace.as_deref()
        && meta_ns != ns
    {
        report.warn(format!(
            "spec.namespace ({ns}) differs from the Consumer's namespace ({meta_ns}): konsumer looks \
             for workloads in metadata.namespace, as Konsumerator did; set them equal"
        ));
    }
    if let Some(key) = spec.partition_env_key.as_deref().filter(|k| !k.is_empty()) {
        let path = p.child("partitionEnvKey");
        if !is_env_var_name(key) {
            report.error(FieldError::invalid(
                path,
                &s(key),
                "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            ));
        } else if [
            env::INSTANCE,
            env::NUM_INSTANCES,
            env::NUM_PARTITIONS,
            env::GOMAXPROCS,
            env::GOMEMLIMIT,
        ]
        .contains(&key)
        {
            report.error(FieldError::invalid(
                path,
                &s(key),
                "konsumer sets this variable itself; choose another name",
            ));
        }
    }

    let containers = template_containers(c);
    if let Some(a) = &spec.autoscaler {
        let ap = p.child("autoscaler");
        let mode = a.mode.as_deref();
        match mode {
            Some("prometheus") | Some("") | None => {}
            Some("vpa") => report.warn(
                "spec.autoscaler.mode vpa is not implemented (nor was it in Konsumerator): instances get the fallback resources",
            ),
            Some(other) => report.error(FieldError::not_supported(ap.child("mode"), &s(other), &["prometheus", ""])),
        }
        let up = duration(
            report,
            ap.child("pendingScaleUpDuration"),
            a.pending_scale_up_duration.as_deref(),
            7 * DAY,
        );
        let down = duration(
            report,
            ap.child("pendingScaleDownDuration"),
            a.pending_scale_down_duration.as_deref(),
            7 * DAY,
        );
        match &a.prometheus {
            Some(prom) => {
                let min_sync = prometheus(report, &ap.child("prometheus"), prom);
                let default = |d: &str| parse_go_duration(d).ok();
                for (name, pending) in [
                    (
                        "pendingScaleUpDuration",
                        up.or_else(|| default(super::defaults::PENDING_SCALE_UP)),
                    ),
                    (
                        "pendingScaleDownDuration",
                        down.or_else(|| default(super::defaults::PENDING_SCALE_DOWN)),
                    ),
                ] {
                    if let (Some(sync), Some(pending)) = (min_sync, pending)
                        && sync > pending
                    {
                        report.warn(format!(
                            "spec.autoscaler.prometheus.minSyncPeriod ({}) is longer than spec.autoscaler.{name} ({}): a decision waits for the next Prometheus read, so it takes about minSyncPeriod",
                            format_go_duration(sync),
                            format_go_duration(pending)
                        ));
                    }
                }
            }
            None if mode == Some("prometheus")
                && !report.has_error_under(&ap.child("prometheus")) =>
            {
                report.error(FieldError::required(
                    ap.child("prometheus"),
                    "required when spec.autoscaler.mode is prometheus (Konsumerator's controller crashed without it)",
                ));
            }
            None => {}
        }
    }

    if let Some(rp) = &spec.resource_policy {
        let rpp = p.child("resourcePolicy");
        let has_policies = rp
            .container_policies
            .as_ref()
            .is_some_and(|p| !p.is_empty());
        if containers.is_none() && spec.deployment_template.is_some() && has_policies {
            report.warn(
                "spec.deploymentTemplate.template.spec.containers is not set: the container names in spec.resourcePolicy.containerPolicies cannot be checked against it",
            );
        }
        let mins = container_policies(
            report,
            &rpp.child("containerPolicies"),
            rp.container_policies.as_deref().unwrap_or_default(),
            containers.as_deref(),
        );
        if let Some(global) = rp
            .global_policy
            .as_ref()
            .and_then(|g| g.max_allowed.as_ref())
        {
            let global_path = rpp.child("globalPolicy");
            let gp = global_path.child("maxAllowed");
            let caps = resource_list(report, &gp, global, false);
            let instances = match (spec.num_partitions, spec.num_partitions_per_instance) {
                (Some(n), per) if n >= 1 && per.unwrap_or(1) >= 1 => {
                    Layout::new(n as u32, per.unwrap_or(1) as u32).map(|l| l.instances())
                }
                _ => None,
            };
            if let Some(instances) = instances {
                for (resource, cap) in caps {
                    let floor = mins.get(resource).copied().unwrap_or_default();
                    let needed = Milli(floor.0 * instances as i128);
                    if needed > cap {
                        report.warn(format!(
                            "spec.resourcePolicy.globalPolicy.maxAllowed.{resource} ({}) is below the minimum of \
                             {instances} instances ({}): instances will be saturated from the start",
                            render_quantity(resource, cap),
                            render_quantity(resource, needed)
                        ));
                    }
                }
            }
        }
    }

    if let Some(old) = ctx.old {
        update_rules(c, old, report);
    }
}

/// Instances and recommendations within what one status can hold.
fn instance_limits(c: &Consumer, p: &Path<'_>, report: &mut Report) {
    let spec = &c.spec;
    let (Some(n), per) = (
        spec.num_partitions,
        spec.num_partitions_per_instance.unwrap_or(1),
    ) else {
        return;
    };
    if n < 1 || per < 1 || n as u32 > MAX_PARTITIONS {
        return;
    }
    let instances = (n as u32).div_ceil(per as u32);
    if instances > MAX_INSTANCES {
        let detail = too_many_instances(n as u32, per as u32);
        let detail = detail
            .split_once(": ")
            .map_or(detail.as_str(), |(_, rest)| rest)
            .to_string();
        report.error(FieldError::invalid(
            p.child("numPartitionsPerInstance"),
            &json!(per),
            detail,
        ));
        return;
    }
    let autoscaled = spec.autoscaler.as_ref().and_then(|a| a.mode.as_deref()) == Some("prometheus");
    let scaled = spec
        .container_policies()
        .iter()
        .filter(|policy| !policy.is_off())
        .filter(|policy| {
            policy
                .container_name
                .as_deref()
                .is_some_and(|n| !n.is_empty())
        })
        .count()
        .max(1) as u32;
    if autoscaled && instances * scaled > MAX_RECOMMENDATIONS {
        report.error(FieldError::invalid(
            p.child("resourcePolicy").child("containerPolicies"),
            &json!(scaled),
            format!(
                "{instances} instances × {scaled} scaled containers make {} recommendations; the status holds at \
                 most {MAX_RECOMMENDATIONS} (one Kubernetes object of at most 1.5 MiB): put more partitions on each \
                 instance, or set mode: Off on containers that need no recommendation",
                instances * scaled
            ),
        ));
    }
}

fn render_quantity(resource: &str, v: Milli) -> String {
    if resource == "memory" {
        v.memory_string()
    } else {
        v.cpu_string()
    }
}

fn update_rules(new: &Consumer, old: &Consumer, report: &mut Report) {
    let (n, o) = (&new.spec, &old.spec);
    if let (Some(now), Some(before)) = (n.num_partitions, o.num_partitions)
        && now < before
        && now >= 1
    {
        report.warn(format!(
            "spec.numPartitions decreased from {before} to {now}: Kafka cannot shrink a topic, so partitions \
             {now}..{} will no longer be consumed by any instance",
            before - 1
        ));
    }
    let key = |k: &Option<String>| {
        k.clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| env::DEFAULT_PARTITION.to_string())
    };
    if key(&n.partition_env_key) != key(&o.partition_env_key) {
        report.warn(format!(
            "spec.partitionEnvKey changed from {} to {}: running instances keep reading {} until they are recreated",
            key(&o.partition_env_key),
            key(&n.partition_env_key),
            key(&o.partition_env_key)
        ));
    }
    if n.num_partitions_per_instance.unwrap_or(1) != o.num_partitions_per_instance.unwrap_or(1) {
        report.warn(
            "spec.numPartitionsPerInstance changed: the partition assignment of every instance changes when it is recreated; \
             until then old and new instances may consume the same partitions",
        );
    }
}

/// Checks the Prometheus block; returns `minSyncPeriod` (its default when unset).
fn prometheus(
    report: &mut Report,
    p: &Path<'_>,
    prom: &PrometheusAutoscalerSpec,
) -> Option<Duration> {
    if let Some(addresses) = &prom.address {
        let path = p.child("address");
        if addresses.is_empty() && !report.has_error_under(&path) {
            report.error(FieldError::required(
                path,
                "at least one Prometheus address",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, a) in addresses.iter().enumerate() {
            let ip = path.index(i);
            if report.has_error_under(&ip) {
                continue;
            }
            if seen.contains(&a.as_str()) {
                report.error(FieldError::duplicate(ip, &s(a)));
                continue;
            }
            seen.push(a);
            match address(a) {
                Some(Address { password, api_path }) => {
                    if password {
                        report.warn(format!(
                            "{ip} carries a password: anyone who can read Consumers can read it (konsumer keeps it out of its logs, metrics and status)"
                        ));
                    }
                    if api_path {
                        report.warn(format!(
                            "{ip} ends with /api/v1/query: give the Prometheus base URL; konsumer appends the API path"
                        ));
                    }
                }
                None => report.error(FieldError::invalid(
                    ip,
                    &s(a),
                    "must be an http(s) URL such as http://prometheus.monitoring.svc:9090",
                )),
            }
        }
    }
    let min_sync = match prom.min_sync_period.as_deref() {
        Some(v) => duration(report, p.child("minSyncPeriod"), Some(v), DAY),
        None => parse_go_duration("1m").ok(),
    };
    for (name, query) in [
        ("offset", &prom.offset),
        ("production", &prom.production),
        ("consumption", &prom.consumption),
    ] {
        if let Some(query) = query {
            query_spec(report, &p.child(name), query);
        }
    }
    if let Some(strategy) = &prom.fallback_strategy
        && !matches!(strategy.as_str(), "min" | "max")
    {
        report.error(FieldError::not_supported(
            p.child("fallbackStrategy"),
            &s(strategy),
            &["min", "max"],
        ));
    }

    if let Some(rate) = prom.rate_per_core
        && rate <= 0
    {
        report.error(FieldError::invalid(
            p.child("ratePerCore"),
            &json!(rate),
            "must be greater than 0",
        ));
    }
    if let Some(ram) = &prom.ram_per_core {
        memory(report, &p.child("ramPerCore"), ram, false);
    }
    if let Some(step) = &prom.cpu_increment {
        cpu(report, &p.child("cpuIncrement"), step, false);
    }
    let tolerable = duration(
        report,
        p.child("tolerableLag"),
        prom.tolerable_lag.as_deref(),
        30 * DAY,
    );
    let critical = duration(
        report,
        p.child("criticalLag"),
        prom.critical_lag.as_deref(),
        30 * DAY,
    );
    duration(
        report,
        p.child("recoveryTime"),
        prom.recovery_time.as_deref(),
        30 * DAY,
    );
    if let (Some(t), Some(c)) = (tolerable, critical)
        && c < t
    {
        report.error(FieldError::invalid(
            p.child("criticalLag"),
            &s(prom.critical_lag.as_deref().unwrap_or_default()),
            format!("must not be below tolerableLag ({})", format_go_duration(t)),
        ));
    }
    min_sync
}

/// What the rules need to know of a Prometheus address that is an http(s) URL
/// with a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Address {
    /// It carries a password.
    password: bool,
    /// Its path ends with `/api/v1/query` (the API path, not the base URL).
    api_path: bool,
}

/// The Prometheus address `a` as the rules see it; `None` when it is not an
/// http(s) URL with a host. Most addresses are plain (`http://host:port/path`,
/// lowercase, no user, query or escapes) and are read by [`plain_address`]
/// without a URL parse (which, with its IDNA host processing, cost a tenth of
/// the validating webhook's rules); the others by the URL parser.
fn address(a: &str) -> Option<Address> {
    plain_address(a).or_else(|| parsed_address(a))
}

/// [`address`] by the URL parser: the reference.
fn parsed_address(a: &str) -> Option<Address> {
    let url = reqwest::Url::parse(a).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then(|| Address {
        password: url.password().is_some(),
        api_path: url.path().trim_end_matches('/').ends_with("/api/v1/query"),
    })
}

/// [`address`] of an address in a form the URL parser certainly takes as
/// written: `http(s)://` and a host of lowercase ASCII labels (letters,
/// digits, inner `-`; no `xn--` or other `??--` label, which IDNA reads; the
/// last starting with a letter, so not an IPv4 address), an optional port of
/// 1–5 digits up to 65535, and a path of letters, digits and `/_~-` (nothing
/// the parser escapes or resolves). `None` for anything else, which the
/// parser then reads.
fn plain_address(a: &str) -> Option<Address> {
    let rest = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && b.get(2..4) != Some(b"--".as_slice())
    };
    let last = host.rsplit('.').next()?;
    if !host.split('.').all(label_ok) || !last.as_bytes()[0].is_ascii_lowercase() {
        return None;
    }
    if let Some(port) = port
        && !(matches!(port.len(), 1..=5)
            && port.bytes().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535))
    {
        return None;
    }
    if !path
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'~' | b'-'))
    {
        return None;
    }
    Some(Address {
        password: false,
        api_path: path.trim_end_matches('/').ends_with("/api/v1/query"),
    })
}

fn query_spec(report: &mut Report, p: &Path<'_>, q: &QuerySpec) {
    let label = q.partition_label.as_deref();
    if let Some(query) = &q.query
        && query.trim().is_empty()
        && !report.has_error_under(&p.child("query"))
    {
        report.error(FieldError::invalid(
            p.child("query"),
            &s(query),
            "must not be empty",
        ));
    }
    if let Some(l) = label
        && !report.has_error_under(&p.child("partitionLabel"))
    {
        if l.is_empty() {
            report.error(FieldError::invalid(
                p.child("partitionLabel"),
                &s(l),
                "must not be empty",
            ));
        } else if !is_label_name(l) {
            report.error(FieldError::invalid(
                p.child("partitionLabel"),
                &s(l),
                "a Prometheus label name must match [a-zA-Z_][a-zA-Z0-9_]*",
            ));
        } else if let Some(query) = &q.query
            && let Some(problem) = grouping_drops_label(query, l)
        {
            report.warn(format!(
                "{}: {problem}: results cannot be told apart by partition",
                p.child("query")
            ));
        }
    }
}

/// Whether the query's `by (...)` / `without (...)` clauses drop `label`
/// (keywords and labels compared ignoring ASCII case). Runs for every query of
/// every Consumer validated, so nothing is allocated unless it has something
/// to say.
fn grouping_drops_label(query: &str, label: &str) -> Option<String> {
    let has = |list: &str| {
        list.split(',')
            .any(|l| l.trim().eq_ignore_ascii_case(label))
    };
    let lower = |list: &str| {
        list.split(',')
            .map(|l| l.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let label = || label.to_ascii_lowercase();
    if let Some(list) = grouping_lists(query, "without").find(|l| has(l)) {
        return Some(format!("without ({}) removes {}", lower(list), label()));
    }
    let mut by = grouping_lists(query, "by");
    let first = by.next()?;
    if has(first) || by.any(has) {
        return None;
    }
    Some(format!(
        "the grouping by ({}) has no {}",
        lower(first),
        label()
    ))
}

/// The label lists of the query's `keyword (...)` clauses (`keyword` lowercase,
/// matched ignoring ASCII case, not inside a longer name), as written.
fn grouping_lists<'q>(query: &'q str, keyword: &'static str) -> impl Iterator<Item = &'q str> {
    let bytes = query.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        loop {
            // A match of ASCII letters starts and ends on character boundaries.
            // Candidates by their first letter (rare in a query), then the rest.
            let first = keyword.as_bytes()[0];
            let found = bytes.get(from..)?.iter().enumerate().position(|(i, b)| {
                b.to_ascii_lowercase() == first
                    && bytes
                        .get(from + i..from + i + keyword.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(keyword.as_bytes()))
            })?;
            let start = from + found;
            let end = start + keyword.len();
            from = end;
            let boundary_before = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let rest = query.get(end..)?.trim_start();
            if !boundary_before || !rest.starts_with('(') {
                continue;
            }
            if let Some(close) = rest.find(')') {
                return Some(&rest[1..close]);
            }
        }
    })
}

/// Container names of `deploymentTemplate.template.spec.containers`, if any.
fn template_containers(c: &Consumer) -> Option<Vec<String>> {
    c.spec.deployment_template.as_ref()?.container_names()
}

/// Checks the container policies; returns the sum of the minimums per resource.
fn container_policies<'l>(
    report: &mut Report,
    p: &Path<'_>,
    policies: &'l [ContainerResourcePolicy],
    containers: Option<&[String]>,
) -> BTreeMap<&'l str, Milli> {
    let mut seen: Vec<&str> = Vec::new();
    let mut mins: BTreeMap<&str, Milli> = BTreeMap::new();
    for (i, policy) in policies.iter().enumerate() {
        let ip = p.index(i);
        let name_path = ip.child("containerName");
        match policy.container_name.as_deref() {
            None | Some("") if !report.has_error_under(&name_path) => {
                report.error(FieldError::required(
                    name_path,
                    "the container this policy is for",
                ));
            }
            Some(name) if !name.is_empty() => {
                if seen.contains(&name) {
                    report.error(FieldError::duplicate(name_path, &s(name)));
                } else {
                    seen.push(name);
                    if let Some(known) = containers
                        && !known.iter().any(|k| k == name)
                    {
                        report.error(FieldError::invalid(
                            name_path,
                            &s(name),
                            format!(
                                "no container of this name in spec.deploymentTemplate.template.spec.containers ({})",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(mode) = &policy.mode
            && !matches!(mode.as_str(), "Auto" | "Off")
        {
            report.error(FieldError::not_supported(
                ip.child("mode"),
                &s(mode),
                &["Auto", "Off"],
            ));
        }
        let min = policy
            .min_allowed
            .as_ref()
            .map(|l| resource_list(report, &ip.child("minAllowed"), l, true))
            .unwrap_or_default();
        let max = policy
            .max_allowed
            .as_ref()
            .map(|l| resource_list(report, &ip.child("maxAllowed"), l, false))
            .unwrap_or_default();
        for (resource, lo) in &min {
            if let Some(hi) = max.get(resource)
                && lo > hi
            {
                let pair = json!({
                    "minAllowed": { *resource: render_quantity(resource, *lo) },
                    "maxAllowed": { *resource: render_quantity(resource, *hi) },
                });
                report.error(FieldError::invalid(
                    ip,
                    &pair,
                    format!(
                        "minAllowed.{resource} ({}) is above maxAllowed.{resource} ({})",
                        render_quantity(resource, *lo),
                        render_quantity(resource, *hi)
                    ),
                ));
            }
            let total = mins.entry(*resource).or_default();
            *total = *total + *lo;
        }
    }
    mins
}

/// Checks a resource list (cpu, memory); returns the parsed values, in the
/// list's order (so that what is reported about them comes in a stable order).
fn resource_list<'l>(
    report: &mut Report,
    p: &Path<'_>,
    list: &'l ResourceList,
    allow_zero: bool,
) -> BTreeMap<&'l str, Milli> {
    let mut out = BTreeMap::new();
    for (key, value) in list {
        let kp = p.key(key);
        if report.has_error_under(&kp) {
            continue;
        }
        let parsed = match key.as_str() {
            "cpu" => cpu(report, &kp, value, allow_zero),
            "memory" => memory(report, &kp, value, allow_zero),
            other => {
                report.warn(format!(
                    "{kp}: konsumer sets cpu and memory only; {other} is ignored"
                ));
                None
            }
        };
        if let Some(v) = parsed {
            out.insert(key.as_str(), v);
        }
    }
    out
}

fn positive(
    report: &mut Report,
    p: &Path<'_>,
    value: &Quantity,
    parsed: Milli,
    allow_zero: bool,
) -> Option<Milli> {
    if parsed.0 < 0 || (!allow_zero && parsed.0 == 0) {
        let bound = if allow_zero {
            "must not be negative"
        } else {
            "must be greater than 0"
        };
        report.error(FieldError::invalid(*p, &q(value), bound));
        return None;
    }
    Some(parsed)
}

fn cpu(report: &mut Report, p: &Path<'_>, value: &Quantity, allow_zero: bool) -> Option<Milli> {
    let parsed = match Milli::parse(&value.0) {
        Ok(v) => v,
        Err(e) => {
            report.error(FieldError::invalid(*p, &q(value), e.to_string()));
            return None;
        }
    };
    if value.0.trim_end().ends_with('i') {
        report.error(FieldError::invalid(
            *p,
            &q(value),
            "CPU is counted in cores (2) or millicores (500m), not in bytes",
        ));
        return None;
    }
    let parsed = positive(report, p, value, parsed, allow_zero)?;
    if parsed > Milli::from_units(512) {
        report.warn(format!(
            "{p}: {} cores is more than any node offers; check the unit",
            parsed.cpu_string()
        ));
    }
    Some(parsed)
}

fn memory(report: &mut Report, p: &Path<'_>, value: &Quantity, allow_zero: bool) -> Option<Milli> {
    let parsed = match Milli::parse(&value.0) {
        Ok(v) => v,
        Err(e) => {
            report.error(FieldError::invalid(*p, &q(value), e.to_string()));
            return None;
        }
    };
    if value.0.trim_end().ends_with('m') {
        report.error(FieldError::invalid(
            *p,
            &q(value),
            "m means thousandths of a byte; write Mi (mebibytes) or M (megabytes)",
        ));
        return None;
    }
    let parsed = positive(report, p, value, parsed, allow_zero)?;
    if parsed.0 > 0 && parsed < Milli::from_units(1 << 20) {
        report.warn(format!(
            "{p}: {} is only {} bytes; did you mean {}Mi?",
            value.0,
            parsed.units_ceil(),
            value.0.trim()
        ));
    }
    Some(parsed)
}

/// Checks a Go duration: parseable, at least 1s, at most `max_secs`.
fn duration(
    report: &mut Report,
    p: Path<'_>,
    value: Option<&str>,
    max_secs: u64,
) -> Option<Duration> {
    let value = value?;
    if report.has_error_under(&p) {
        return None;
    }
    let d = match parse_go_duration(value) {
        Ok(d) => d,
        Err(e) => {
            report.error(FieldError::invalid(p, &s(value), e.to_string()));
            return None;
        }
    };
    if d.is_zero() {
        report.error(FieldError::invalid(p, &s(value), "must be greater than 0"));
        return None;
    }
    if d < MIN_DURATION {
        report.error(FieldError::invalid(
            p,
            &s(value),
            "must be at least 1s (a unit typo? 5m is five minutes)",
        ));
        return None;
    }
    let max = Duration::from_secs(max_secs);
    if d > max {
        report.error(FieldError::invalid(
            p,
            &s(value),
            format!("must be at most {}", format_go_duration(max)),
        ));
        return None;
    }
    Some(d)
}

/// `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_label(report: &mut Report, p: Path<'_>, value: &str) -> bool {
    if is_dns_label(value) {
        return true;
    }
    report.error(FieldError::invalid(
        p,
        &s(value),
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters",
    ));
    false
}

fn dns_subdomain(report: &mut Report, p: Path<'_>, value: &str) {
    let ok = !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns_label);
    if !ok {
        report.error(FieldError::invalid(
            p,
            &s(value),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The first version of [`grouping_drops_label`] (a lowercase copy of the query,
    /// lists of owned labels): what the allocation-free scan must keep saying.
    fn grouping_drops_label_by_copy(query: &str, label: &str) -> Option<String> {
        let lower = query.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        let mut by_lists = Vec::new();
        let mut without_lists = Vec::new();
        for (keyword, lists) in [("by", &mut by_lists), ("without", &mut without_lists)] {
            let mut from = 0;
            while let Some(found) = lower[from..].find(keyword) {
                let start = from + found;
                let end = start + keyword.len();
                from = end;
                let boundary_before = start == 0
                    || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
                let rest = lower[end..].trim_start();
                if !boundary_before || !rest.starts_with('(') {
                    continue;
                }
                if let Some(close) = rest.find(')') {
                    let labels: Vec<String> = rest[1..close]
                        .split(',')
                        .map(|l| l.trim().to_string())
                        .collect();
                    lists.push(labels);
                }
            }
        }
        let label = label.to_ascii_lowercase();
        if let Some(list) = without_lists.iter().find(|l| l.contains(&label)) {
            return Some(format!("without ({}) removes {label}", list.join(", ")));
        }
        if !by_lists.is_empty() && !by_lists.iter().any(|l| l.contains(&label)) {
            return Some(format!(
                "the grouping by ({}) has no {label}",
                by_lists[0].join(", ")
            ));
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_grouping_scan_says_what_the_lowercase_copy_said(
            parts in prop::collection::vec(prop::sample::select(vec![
                "sum", "(", ")", " ", "by", "BY", "By", "without", "WITHOUT", "x", "_by", "rate(x[5m])",
                "partition", "PARTITION", "topic", ",", ", ", "é", "ÿ", "{", "}", "standby", "by(", "ẞ",
            ]), 0..14),
            label in prop::sample::select(vec!["partition", "Partition", "topic", "x"]),
        ) {
            let query: String = parts.concat();
            prop_assert_eq!(
                grouping_drops_label(&query, label),
                grouping_drops_label_by_copy(&query, label),
                "{:?}", query
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Wherever the plain-address reader answers, it answers what the URL
        /// parser does; and it answers for the usual addresses.
        #[test]
        fn the_plain_address_reader_agrees_with_the_url_parser(
            a in "(https?|HTTP|ftp|http:)(://|:/|//)?([a-z0-9]|[-._:@%?#/~A-Z]|xn--|api/v1/query|\\.\\.|[0-9]{5,6}|\u{e9}){0,14}"
        ) {
            if let Some(plain) = plain_address(&a) {
                proptest::prop_assert_eq!(Some(plain), parsed_address(&a), "{}", a);
            }
        }
    }

    #[test]
    fn the_plain_address_reader_reads_the_usual_addresses() {
        for (a, api_path) in [
            (
                "http://prometheus-operator-prometheus.monitoring.svc.cluster.local:9090",
                false,
            ),
            ("https://prometheus.example.com", false),
            ("http://prometheus:9090/", false),
            ("http://thanos-query.monitoring:10902/prometheus/", false),
            ("http://prometheus:9090/api/v1/query", true),
            ("http://prometheus:9090/api/v1/query/", true),
            ("http://a1:65535", false),
        ] {
            let plain = plain_address(a);
            assert_eq!(
                plain,
                Some(Address {
                    password: false,
                    api_path
                }),
                "{a}"
            );
            assert_eq!(plain, parsed_address(a), "{a}");
        }
        for a in [
            "http://user:secret@prometheus:9090",
            "http://Prometheus:9090",
            "http://10.0.0.1:9090",
            "http://1.2.3.999",
            "http://xn--nxasmq6b.example",
            "http://prometheus:65536",
            "http://prometheus:9090/a/../api/v1/query",
            "http://prometheus:9090/?q=1",
            "http://pr\u{e9}metheus:9090",
            "ftp://prometheus",
            "http://",
            "http://:9090",
            "http://a..b",
        ] {
            assert_eq!(plain_address(a), None, "{a} is left to the URL parser");
        }
    }

    #[test]
    fn grouping_checks_find_missing_partition_labels() {
        assert_eq!(
            grouping_drops_label("sum(x) by (partition)", "partition"),
            None
        );
        assert_eq!(
            grouping_drops_label("sum by (topic, partition) (x)", "partition"),
            None
        );
        assert_eq!(grouping_drops_label("x{topic=\"a\"}", "partition"), None);
        assert!(
            grouping_drops_label("sum(x) by (topic)", "partition")
                .unwrap()
                .contains("by (topic)")
        );
        assert!(grouping_drops_label("sum(x) without (partition)", "partition").is_some());
        assert_eq!(
            grouping_drops_label("sum(x) BY (Partition)", "partition"),
            None
        );
        assert_eq!(
            grouping_drops_label("nearby(x)", "partition"),
            None,
            "'by' inside a word"
        );
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_env_var_name("KAFKA_PARTITIONS"));
        assert!(is_env_var_name("a.b-c"));
        assert!(!is_env_var_name("1ABC"));
        assert!(!is_env_var_name("A B"));
        assert!(!is_env_var_name(""));
        assert!(is_label_name("partition"));
        assert!(!is_label_name("part-ition"));
        assert!(is_dns_label("orders-2"));
        assert!(!is_dns_label("Orders"));
        assert!(!is_dns_label("-x"));
    }
}
