//! ScalingSubscription validation (pure): the one function the validating webhook
//! and anything else that checks a subscription (the HTTP API of the next issue)
//! call. Every problem at once, each with its field path.

use std::sync::LazyLock;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::field::{FieldError, FieldPath, Report};
use super::structural;
use crate::api::ScalingSubscription;
use crate::api::duration::parse_go_duration;
use crate::scaling_events::EventType;
use crate::scaling_events::cloudevent::ContentMode;

pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let crd = crate::api::crd::subscription_crd();
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
});

/// What the rules know besides the object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// konsumer's own namespace: only subscriptions there may set
    /// `namespaceSelector`.
    pub konsumer_namespace: &'a str,
}

/// The per-attempt timeout of a valid spec (the default when absent).
pub fn timeout_of(value: Option<&str>) -> Result<Duration, String> {
    let Some(text) = value.filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let d = parse_go_duration(text).map_err(|e| e.to_string())?;
    if d < MIN_TIMEOUT || d > MAX_TIMEOUT {
        return Err("must be between 1s and 60s".into());
    }
    Ok(d)
}

fn check_selector(sel: &LabelSelector, path: &FieldPath, report: &mut Report) {
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => report.error(FieldError::required(
                p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => report.error(FieldError::invalid(
                p.child("values"),
                &json!(values),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => report.error(FieldError::not_supported(
                p.child("operator"),
                &json!(other),
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
        if r.key.is_empty() {
            report.error(FieldError::required(p.child("key"), ""));
        }
    }
}

fn check_url(url: &str, report: &mut Report) {
    let p = FieldPath::root("spec").child("url");
    let shown = json!(crate::delivery::redact_url(url));
    match reqwest::Url::parse(url) {
        Err(e) => report.error(FieldError::invalid(
            p,
            &shown,
            format!("not an absolute URL ({e}); write it as https://host[:port]/path"),
        )),
        Ok(u) => {
            if !matches!(u.scheme(), "https" | "http") {
                report.error(FieldError::invalid(
                    p.clone(),
                    &shown,
                    "must use https:// (or http:// to ranges the operator allowed with --egress-allow)",
                ));
            }
            if u.host_str().is_none_or(str::is_empty) {
                report.error(FieldError::invalid(p.clone(), &shown, "must name a host"));
            }
            if !u.username().is_empty() || u.password().is_some() {
                report.error(FieldError::invalid(
                    p.clone(),
                    &shown,
                    "must not carry credentials (user:password@): konsumer signs every request \
                     (webhook-signature); the receiver verifies it with the Secret of spec.secretRef",
                ));
            }
            if u.fragment().is_some() {
                report.error(FieldError::invalid(p, &shown, "must not have a #fragment"));
            }
        }
    }
}

/// Validates a ScalingSubscription object. Never panics, whatever the JSON.
pub fn validate(object: &Value, ctx: Context<'_>) -> Report {
    let mut report = Report::default();
    let Some(obj) = object.as_object() else {
        report.error(FieldError::invalid(
            FieldPath::root("<root>"),
            object,
            "a ScalingSubscription must be an object",
        ));
        return report;
    };
    let spec_path = FieldPath::root("spec");
    let spec = match obj.get("spec") {
        None | Some(Value::Null) => {
            report.error(FieldError::required(spec_path, ""));
            return report;
        }
        Some(spec) => {
            let schema = SCHEMA
                .pointer("/properties/spec")
                .cloned()
                .unwrap_or(Value::Null);
            structural::check(&schema, spec, &spec_path, &mut report)
        }
    };
    let mut cleaned = obj.clone();
    cleaned.remove("status");
    match spec {
        Some(s) => cleaned.insert("spec".into(), s),
        None => return report,
    };
    if !cleaned.get("metadata").is_some_and(Value::is_object) {
        cleaned.remove("metadata");
    }
    cleaned.insert("apiVersion".into(), json!("konsumer.dev/v1alpha1"));
    cleaned.insert("kind".into(), json!("ScalingSubscription"));
    let sub: ScalingSubscription = match serde_json::from_value(Value::Object(cleaned)) {
        Ok(s) => s,
        Err(e) => {
            report.error(FieldError::invalid(
                FieldPath::root("metadata"),
                &Value::Null,
                format!("not a readable object: {e}"),
            ));
            return report;
        }
    };
    check(&sub, ctx, &mut report);
    report
}

/// The rules beyond the types, on a typed subscription (what the delivery worker
/// re-checks for objects that predate the webhook).
pub fn check(sub: &ScalingSubscription, ctx: Context<'_>, report: &mut Report) {
    let spec = &sub.spec;
    let p = FieldPath::root("spec");
    match spec.url.as_deref() {
        None => {}
        Some("") => report.error(FieldError::required(p.child("url"), "")),
        Some(url) => check_url(url, report),
    }
    if let Some(r) = &spec.secret_ref {
        for (field, value) in [("name", &r.name), ("key", &r.key)] {
            if value.as_deref().is_none_or(str::is_empty) {
                report.error(FieldError::required(p.child("secretRef").child(field), ""));
            }
        }
    }
    if let Some(r) = &spec.ca_secret_ref
        && r.name.as_deref().is_none_or(str::is_empty)
    {
        report.error(FieldError::required(
            p.child("caSecretRef").child("name"),
            "",
        ));
    }
    let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    for (i, t) in spec.types.iter().enumerate() {
        if EventType::parse(t).is_none() {
            report.error(FieldError::not_supported(
                p.child("types").index(i),
                &json!(t),
                &names,
            ));
        }
    }
    if ContentMode::parse(spec.content_mode.as_deref()).is_none() {
        report.error(FieldError::not_supported(
            p.child("contentMode"),
            &json!(spec.content_mode),
            &["structured", "binary"],
        ));
    }
    if let Err(e) = timeout_of(spec.timeout.as_deref()) {
        report.error(FieldError::invalid(
            p.child("timeout"),
            &json!(spec.timeout),
            e,
        ));
    }
    if let Some(sel) = &spec.consumer_selector {
        check_selector(sel, &p.child("consumerSelector"), report);
    }
    if let Some(sel) = &spec.namespace_selector {
        check_selector(sel, &p.child("namespaceSelector"), report);
        let own = sub.metadata.namespace.as_deref().unwrap_or("default");
        if own != ctx.konsumer_namespace {
            report.error(FieldError::invalid(
                p.child("namespaceSelector"),
                &json!("{…}"),
                format!(
                    "only ScalingSubscriptions in konsumer's own namespace ({}) may follow other namespaces; \
                     remove it to receive the Consumers of {own}",
                    ctx.konsumer_namespace
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static> {
        Context {
            konsumer_namespace: "konsumer-system",
        }
    }

    fn errors(object: Value) -> Vec<String> {
        validate(&object, ctx())
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn valid() -> Value {
        json!({
            "apiVersion": "konsumer.dev/v1alpha1", "kind": "ScalingSubscription",
            "metadata": {"name": "capacity-feed", "namespace": "streams"},
            "spec": {
                "url": "https://hooks.example.com/konsumer",
                "secretRef": {"name": "capacity-feed", "key": "secret"},
                "types": [], "consumerSelector": {}, "contentMode": "structured", "timeout": "10s"
            }
        })
    }

    #[test]
    fn the_issue_example_is_valid() {
        assert_eq!(errors(valid()), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_field() {
        let e = errors(json!({
            "metadata": {"name": "x", "namespace": "streams"},
            "spec": {
                "url": "ftp://user:pw@hooks.example.com/x",
                "types": ["dev.konsumer.scaled", "dev.konsumer.instance.scaled.v1"],
                "contentMode": "xml",
                "timeout": "2m",
                "namespaceSelector": {},
                "consumerSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}
            }
        }));
        let text = e.join("\n");
        for needle in [
            "spec.secretRef: Required",
            "spec.url: Invalid value",
            "must use https://",
            "must not carry credentials",
            "spec.types[0]: Unsupported value: \"dev.konsumer.scaled\"",
            "spec.contentMode: Unsupported value",
            "spec.timeout: Invalid value: \"2m\": must be between 1s and 60s",
            "spec.namespaceSelector",
            "konsumer-system",
            "spec.consumerSelector.matchExpressions[0].values: Required",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("pw@"),
            "the password is not repeated: {text}"
        );
        assert!(!text.contains("spec.types[1]"), "{text}");
    }

    #[test]
    fn urls_must_be_absolute_http_and_timeouts_within_bounds() {
        for (url, ok) in [
            ("https://h.example/x", true),
            ("http://10.0.0.1:8080/x", true),
            ("/relative", false),
            ("hooks.example.com", false),
            ("https://", false),
            ("", false),
        ] {
            let mut o = valid();
            o["spec"]["url"] = json!(url);
            assert_eq!(errors(o.clone()).is_empty(), ok, "{url}: {:?}", errors(o));
        }
        for (t, ok) in [
            ("1s", true),
            ("60s", true),
            ("999ms", false),
            ("61s", false),
            ("soon", false),
        ] {
            let mut o = valid();
            o["spec"]["timeout"] = json!(t);
            assert_eq!(errors(o).is_empty(), ok, "{t}");
        }
        let mut o = valid();
        o["spec"]["url"] = json!(42);
        assert!(errors(o).join("").contains("spec.url"));
        assert!(!errors(json!("nope")).is_empty());
        assert!(!errors(json!({"spec": null})).is_empty());
    }

    #[test]
    fn konsumers_own_namespace_may_follow_other_namespaces() {
        let mut o = valid();
        o["metadata"]["namespace"] = json!("konsumer-system");
        o["spec"]["namespaceSelector"] = json!({"matchLabels": {"team": "data"}});
        assert_eq!(errors(o), Vec::<String>::new());
    }
}
