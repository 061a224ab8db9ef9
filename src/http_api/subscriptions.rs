//! ScalingSubscription routes: the objects themselves (bodies as kubectl would
//! send them, checked by the validating webhook's validator), their signing
//! secret (returned once), test pings, delivery history and redelivery.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Access;
use super::objects::ObjectError;
use super::page::{self, ListMeta};
use super::problem::{Cause, Problem};
use super::secrets::{self, RETIRE_ANNOTATION};
use super::{ApiState, Call, authorize, is_dns_subdomain, json};
use crate::api::duration::parse_go_duration;
use crate::api::subscription::SUBSCRIPTION_GROUP;
use crate::api::{ScalingSubscription, SubscriptionStatus};
use crate::delivery::{Deliveries, PingError, RewindError};
use crate::validation::subscription::{self as rules, Context};

const API_VERSION: &str = "konsumer.dev/v1alpha1";
const KIND: &str = "ScalingSubscription";
/// Appended to a subscription's name for the Secret the api makes.
pub const SECRET_SUFFIX: &str = "-whsec";
/// The Secret key the api writes the signing secrets to.
pub const SECRET_KEY: &str = "secret";
/// The longest rotation grace.
const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

const OBJECT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const METADATA_KEYS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

fn access(verb: &'static str, sub: Option<&'static str>, call: &Call, named: bool) -> Access {
    Access {
        verb,
        group: SUBSCRIPTION_GROUP,
        resource: "scalingsubscriptions",
        subresource: sub,
        namespace: Some(call.namespace().to_string()),
        name: named.then(|| call.name().to_string()),
    }
}

fn object_problem(e: ObjectError) -> Problem {
    match e {
        ObjectError::NotFound(m) => Problem::not_found(m),
        ObjectError::Conflict(m) => Problem::conflict(m),
        ObjectError::Forbidden(m) => Problem::internal(m),
        ObjectError::Unavailable(m) => Problem::unavailable(m),
    }
}

fn objects(state: &ApiState) -> Result<&dyn super::objects::Objects, Problem> {
    state.objects.as_deref().ok_or_else(|| {
        Problem::not_found("there are no ScalingSubscriptions in guest mode (no CRD is installed)")
    })
}

fn deliveries(state: &ApiState) -> Result<&Deliveries, Problem> {
    state.deliveries.as_ref().ok_or_else(|| {
        Problem::conflict(
            "this konsumer delivers no scaling events (started with --no-delivery); start it without that flag",
        )
    })
}

/// Delivery history and cursors live in the delivering replica's memory: another
/// replica sends the caller to retry (the Service picks a replica per connection).
fn leader_only(state: &ApiState) -> Result<(), Problem> {
    match &state.is_leader {
        Some(rx) if !*rx.borrow() => Err(Problem::retry_later(
            "this replica does not deliver scaling events now (another one holds the lease) and only that one knows the deliveries and moves cursors; retry on a new connection",
            1,
        )),
        _ => Ok(()),
    }
}

fn unknown(field: String) -> Cause {
    Cause {
        message: format!("unknown field \"{field}\""),
        field,
        reason: "FieldValueUnknown".into(),
    }
}

fn invalid(field: &str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueInvalid".into(),
        message,
    }
}

/// What the body of a create or replace turns into, or every problem with it.
/// `current`: on a replace, the stored object (a left-out `spec.secretRef` keeps
/// its reference).
fn read_object(
    state: &ApiState,
    call: &Call,
    current: Option<&ScalingSubscription>,
) -> Result<ScalingSubscription, Problem> {
    let create = current.is_none();
    let (ns, path_name) = (call.namespace(), call.name());
    if call.body.is_empty() {
        return Err(Problem::bad_request(
            "a ScalingSubscription object is needed as the JSON body (metadata.name, spec)",
        ));
    }
    let value: Value = serde_json::from_slice(&call.body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(Problem::bad_request(
            "the body must be a JSON object (a ScalingSubscription)",
        ));
    };
    let mut causes = Vec::new();
    for k in obj.keys() {
        if !OBJECT_KEYS.contains(&k.as_str()) {
            causes.push(unknown(k.clone()));
        }
    }
    match obj.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(v) => causes.push(Cause {
            field: "apiVersion".into(),
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: {v}: supported values: \"{API_VERSION}\""),
        }),
    }
    match obj.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == KIND => {}
        Some(v) => causes.push(Cause {
            field: "kind".into(),
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: {v}: supported values: \"{KIND}\""),
        }),
    }
    let mut meta = match obj.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            causes.push(invalid("metadata", "must be an object".into()));
            Map::new()
        }
    };
    for k in meta.keys() {
        if !METADATA_KEYS.contains(&k.as_str()) {
            causes.push(unknown(format!("metadata.{k}")));
        }
    }
    if let Err(e) = serde_json::from_value::<
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    >(Value::Object(meta.clone()))
    {
        causes.push(invalid("metadata", format!("not readable: {e}")));
    }
    match meta.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == ns => {}
        Some(v) => causes.push(invalid(
            "metadata.namespace",
            format!("Invalid value: {v}: must be the namespace of the path ({ns:?}) or left out"),
        )),
    }
    let name = match meta.get("name") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(v) => {
            causes.push(invalid(
                "metadata.name",
                format!("Invalid value: {v}: must be a string"),
            ));
            None
        }
    };
    let name = if create {
        match name {
            None => {
                causes.push(Cause {
                    field: "metadata.name".into(),
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name the subscription".into(),
                });
                String::new()
            }
            Some(n) if !is_dns_subdomain(&n) || n.len() + SECRET_SUFFIX.len() > 253 => {
                causes.push(invalid(
                    "metadata.name",
                    format!(
                        "Invalid value: {n:?}: a lowercase DNS-1123 subdomain (letters, digits, '-', '.') of at most {} characters",
                        253 - SECRET_SUFFIX.len()
                    ),
                ));
                n
            }
            Some(n) => n,
        }
    } else {
        match name {
            Some(n) if n != path_name => {
                causes.push(invalid(
                    "metadata.name",
                    format!("Invalid value: {n:?}: must be the name of the path ({path_name:?}) or left out"),
                ));
                n
            }
            _ => path_name.to_string(),
        }
    };
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(ns));
    if create && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let default_name = format!("{name}{SECRET_SUFFIX}");
        match spec.get_mut("secretRef") {
            None | Some(Value::Null) => {
                spec.insert(
                    "secretRef".into(),
                    json!({"name": default_name, "key": SECRET_KEY}),
                );
            }
            Some(Value::Object(r)) => {
                r.entry("key").or_insert(json!(SECRET_KEY));
            }
            Some(_) => {}
        }
    }
    if let (Some(current), Some(spec)) =
        (current, obj.get_mut("spec").and_then(Value::as_object_mut))
        && spec.get("secretRef").is_none_or(Value::is_null)
        && let Some(r) = &current.spec.secret_ref
    {
        spec.insert("secretRef".into(), json!(r));
    }
    obj.insert("metadata".into(), Value::Object(meta.clone()));
    obj.remove("status");
    let object = Value::Object(obj);
    let report = rules::validate(
        &object,
        Context {
            konsumer_namespace: &state.config.konsumer_namespace,
        },
    );
    causes.extend(report.errors.iter().map(Cause::from));
    for w in &report.warnings {
        if let Some(field) = w
            .strip_prefix("unknown field \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            causes.push(unknown(field.to_string()));
        }
    }
    if !causes.is_empty() {
        return Err(Problem::invalid(
            &format!("ScalingSubscription {ns}/{name}"),
            causes,
        ));
    }
    // Only what the api keeps of the metadata.
    let kept: Map<String, Value> = meta
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "name" | "namespace" | "labels" | "annotations" | "resourceVersion"
            )
        })
        .collect();
    let mut typed = object;
    if let Some(o) = typed.as_object_mut() {
        o.insert("metadata".into(), Value::Object(kept));
        o.insert("apiVersion".into(), json!(API_VERSION));
        o.insert("kind".into(), json!(KIND));
    }
    serde_json::from_value(typed).map_err(|e| {
        Problem::invalid(
            &format!("ScalingSubscription {ns}/{name}"),
            vec![invalid("spec", format!("not readable: {e}"))],
        )
    })
}

/// The object as answered: with the status this replica knows.
fn view(mut sub: ScalingSubscription, live: Option<&SubscriptionStatus>) -> ScalingSubscription {
    if let Some(s) = live {
        sub.status = Some(s.clone());
    }
    sub.metadata.managed_fields = None;
    sub
}

async fn live_statuses(state: &ApiState) -> HashMap<String, SubscriptionStatus> {
    match &state.deliveries {
        Some(d) => d
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                let key = v.subscription.key();
                v.subscription.status.map(|s| (key, s))
            })
            .collect(),
        None => HashMap::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionList {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<ScalingSubscription>,
}

/// `GET /v1/namespaces/{namespace}/subscriptions`.
pub async fn list(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&["limit", "continue"])?;
    authorize(state, call, access("list", None, call, false)).await?;
    let request = page::request(&call.query)?;
    let all = objects(state)?
        .list(call.namespace())
        .await
        .map_err(object_problem)?;
    let live = live_statuses(state).await;
    let key = |s: &ScalingSubscription| s.metadata.name.clone().unwrap_or_default();
    let (items, metadata) = page::page(all, key, &request);
    json(
        StatusCode::OK,
        &SubscriptionList {
            api_version: API_VERSION,
            kind: "ScalingSubscriptionList",
            metadata,
            items: items
                .into_iter()
                .map(|s| {
                    let k = s.key();
                    view(s, live.get(&k))
                })
                .collect(),
        },
    )
}

async fn existing(state: &ApiState, call: &Call) -> Result<ScalingSubscription, Problem> {
    let (ns, name) = (call.namespace(), call.name());
    objects(state)?
        .get(ns, name)
        .await
        .map_err(object_problem)?
        .ok_or_else(|| Problem::not_found(format!("ScalingSubscription {ns}/{name} not found")))
}

/// `GET …/subscriptions/{name}`.
pub async fn get(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("get", None, call, true)).await?;
    let sub = existing(state, call).await?;
    let live = live_statuses(state).await;
    let k = sub.key();
    json(StatusCode::OK, &view(sub, live.get(&k)))
}

/// `POST …/subscriptions`: the object, and its signing secret this once.
pub async fn create(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("create", None, call, false)).await?;
    let sub = read_object(state, call, None)?;
    let secret = secrets::generate();
    let created = objects(state)?
        .create(sub, &secret)
        .await
        .map_err(object_problem)?;
    if let Some(d) = &state.deliveries {
        d.wake();
    }
    let location = format!(
        "/v1/namespaces/{}/subscriptions/{}",
        call.namespace(),
        created.metadata.name.as_deref().unwrap_or_default()
    );
    tracing::info!(subscription = %created.key(), by = %call.who.username, "ScalingSubscription created through the api");
    let mut body = serde_json::to_value(view(created, None))
        .map_err(|e| Problem::internal(format!("cannot encode the answer: {e}")))?;
    if let Some(o) = body.as_object_mut() {
        o.insert("secret".into(), json!(secret));
    }
    let mut response = json(StatusCode::CREATED, &body)?;
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `PUT …/subscriptions/{name}`.
pub async fn replace(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("update", None, call, true)).await?;
    let current = existing(state, call).await?;
    let mut sub = read_object(state, call, Some(&current))?;
    // A rotation under way stays under way whatever annotations the body brings.
    if let Some(at) = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RETIRE_ANNOTATION))
    {
        sub.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RETIRE_ANNOTATION.into(), at.clone());
    }
    let replaced = objects(state)?.replace(sub).await.map_err(object_problem)?;
    if let Some(d) = &state.deliveries {
        d.wake();
    }
    let live = live_statuses(state).await;
    let k = replaced.key();
    json(StatusCode::OK, &view(replaced, live.get(&k)))
}

/// `DELETE …/subscriptions/{name}`: answers the object as it was.
pub async fn delete(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("delete", None, call, true)).await?;
    let sub = existing(state, call).await?;
    objects(state)?
        .delete(call.namespace(), call.name())
        .await
        .map_err(object_problem)?;
    tracing::info!(subscription = %sub.key(), by = %call.who.username, "ScalingSubscription deleted through the api");
    json(StatusCode::OK, &view(sub, None))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rotated {
    /// The new secret: returned this once.
    secret: String,
    /// When the older secrets stop signing (`null`: already gone).
    previous_secrets_expire: Option<Timestamp>,
}

/// `POST …/subscriptions/{name}/rotate-secret?grace=24h`.
pub async fn rotate(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&["grace"])?;
    authorize(
        state,
        call,
        access("create", Some("rotate-secret"), call, true),
    )
    .await?;
    let grace = match call.query.get("grace") {
        None => std::time::Duration::from_secs(24 * 3600),
        Some(t) => match parse_go_duration(t) {
            Ok(d) if d <= MAX_GRACE => d,
            _ => {
                return Err(Problem::bad_request(format!(
                    "grace={t:?}: give a duration such as 24h or 30m, at most 720h (0s retires the old secrets at once)"
                )));
            }
        },
    };
    let objects = objects(state)?;
    let sub = existing(state, call).await?;
    let Some(current) = objects.owned_secret(&sub).await.map_err(object_problem)? else {
        return Err(Problem::conflict(format!(
            "the Secret of ScalingSubscription {} was not made by the api: rotate it where it is kept (put a new whsec_ secret first in its key, whitespace-separated; every one signs)",
            sub.key()
        )));
    };
    let new = secrets::generate();
    let (value, expire) = if grace.is_zero() {
        (new.clone(), None)
    } else {
        let at = Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(grace).unwrap_or_default())
            .unwrap_or_else(|_| Timestamp::now());
        (secrets::rotate(&current, &new), Some(at))
    };
    objects
        .write_secret(&sub, &value)
        .await
        .map_err(object_problem)?;
    let mut marked = sub.clone();
    let annotations = marked
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    match expire {
        Some(at) => {
            annotations.insert(RETIRE_ANNOTATION.into(), at.to_string());
        }
        None => {
            annotations.remove(RETIRE_ANNOTATION);
        }
    }
    marked.metadata.resource_version = None;
    objects.replace(marked).await.map_err(object_problem)?;
    tracing::info!(subscription = %sub.key(), by = %call.who.username, ?grace, "signing secret rotated through the api");
    json(
        StatusCode::OK,
        &Rotated {
            secret: new,
            previous_secrets_expire: expire,
        },
    )
}

/// Retires the older secrets of every subscription whose rotation grace is over.
pub async fn retire_due(state: &ApiState) {
    let (Some(objects), Some(deliveries)) = (state.objects.as_deref(), &state.deliveries) else {
        return;
    };
    let Ok(views) = deliveries.list().await else {
        return;
    };
    let now = Timestamp::now();
    for v in views {
        let sub = v.subscription;
        if secrets::retire_at(&sub).is_none_or(|at| at > now) {
            continue;
        }
        let Ok(Some(current)) = objects.owned_secret(&sub).await else {
            continue;
        };
        let retired = secrets::retire(&current);
        if retired != current && objects.write_secret(&sub, &retired).await.is_err() {
            continue;
        }
        let mut marked = sub.clone();
        if let Some(a) = marked.metadata.annotations.as_mut() {
            a.remove(RETIRE_ANNOTATION);
        }
        marked.metadata.resource_version = None;
        marked.status = None;
        match objects.replace(marked).await {
            Ok(_) => {
                tracing::info!(subscription = %sub.key(), "older signing secrets retired after the rotation grace")
            }
            Err(e) => {
                tracing::warn!(subscription = %sub.key(), error = %e, "cannot mark the rotation done")
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TestResult {
    /// The receiver's HTTP status, when it answered.
    status_code: Option<u16>,
    latency_ms: u64,
    /// The first bytes of the receiver's answer.
    body: String,
    error: Option<String>,
}

/// `POST …/subscriptions/{name}/test`: a `ping` event now.
pub async fn test(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("create", Some("test"), call, true)).await?;
    let deliveries = deliveries(state)?;
    existing(state, call).await?;
    let result = deliveries
        .ping(call.namespace(), call.name())
        .await
        .map_err(|e| match e {
            PingError::NoSubscription(m) => Problem::not_found(format!(
                "ScalingSubscription {m} not found (a subscription created a moment ago may need a second to be seen)"
            )),
            PingError::NotDeliverable { .. } => Problem::conflict(e.to_string()),
            PingError::Source(e) => Problem::unavailable(e.to_string()),
        })?;
    json(
        StatusCode::OK,
        &TestResult {
            status_code: result.status_code,
            latency_ms: u64::try_from(result.latency.as_millis()).unwrap_or(u64::MAX),
            body: result.body,
            error: result.error,
        },
    )
}

#[derive(Serialize)]
struct AttemptList {
    items: Vec<crate::delivery::AttemptRecord>,
    metadata: ListMeta,
}

/// `GET …/subscriptions/{name}/deliveries?limit=N&continue=…`: newest first.
pub async fn deliveries_list(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&["limit", "continue"])?;
    authorize(state, call, access("get", None, call, true)).await?;
    let request = page::request(&call.query)?;
    existing(state, call).await?;
    leader_only(state)?;
    let attempts = state
        .deliveries
        .as_ref()
        .map(|d| d.attempts(call.namespace(), call.name()))
        .unwrap_or_default();
    // Newest first, as a key that sorts ascending.
    let key = |a: &crate::delivery::AttemptRecord| {
        format!(
            "{:040}/{}/{:010}",
            i128::MAX - a.time.as_nanosecond(),
            a.event_id,
            a.attempt
        )
    };
    let mut attempts = attempts;
    attempts.sort_by_key(key);
    let (items, metadata) = page::page(attempts, key, &request);
    json(StatusCode::OK, &AttemptList { items, metadata })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Redeliver {
    /// `name` (the subscription's namespace) or `namespace/name`.
    consumer: String,
    /// The first sequence to deliver again.
    from_sequence: i64,
}

/// `POST …/subscriptions/{name}/redeliver`: moves the cursor back.
pub async fn redeliver(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    authorize(state, call, access("create", Some("redeliver"), call, true)).await?;
    let deliveries = deliveries(state)?;
    let mut de = serde_json::Deserializer::from_slice(&call.body);
    let body: Redeliver = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            Problem::bad_request(format!("the body is not JSON: {inner}"))
        } else {
            Problem::invalid(
                "the redeliver request",
                vec![invalid(
                    if path == "." { "<body>" } else { &path },
                    format!("{inner}; send {{\"consumer\": \"NAME\", \"fromSequence\": N}}"),
                )],
            )
        }
    })?;
    let sub = existing(state, call).await?;
    let consumer = if body.consumer.contains('/') {
        body.consumer.clone()
    } else {
        format!("{}/{}", call.namespace(), body.consumer)
    };
    let (cns, cname) = consumer.split_once('/').unwrap_or_default();
    if !super::is_dns_label(cns) || !is_dns_subdomain(cname) {
        return Err(Problem::invalid(
            "the redeliver request",
            vec![invalid(
                "consumer",
                format!(
                    "Invalid value: {:?}: give NAME or NAMESPACE/NAME of a Consumer",
                    body.consumer
                ),
            )],
        ));
    }
    if cns != call.namespace() && sub.spec.namespace_selector.is_none() {
        return Err(Problem::invalid(
            "the redeliver request",
            vec![invalid(
                "consumer",
                format!(
                    "Invalid value: {consumer:?}: this subscription sees only the Consumers of namespace {:?}",
                    call.namespace()
                ),
            )],
        ));
    }
    if body.from_sequence < 1 {
        return Err(Problem::invalid(
            "the redeliver request",
            vec![invalid(
                "fromSequence",
                format!(
                    "Invalid value: {}: sequences start at 1",
                    body.from_sequence
                ),
            )],
        ));
    }
    let cursor = body.from_sequence - 1;
    leader_only(state)?;
    deliveries
        .rewind(call.namespace(), call.name(), &consumer, cursor)
        .await
        .map_err(|e| match e {
            RewindError::NoSubscription(_) | RewindError::NoConsumer(_) => {
                Problem::not_found(e.to_string())
            }
            RewindError::OutOfJournal { .. } => Problem::invalid(
                "the redeliver request",
                vec![invalid("fromSequence", e.to_string())],
            ),
            // Lost the lease between the check above and the rewind.
            RewindError::NotLeading(_) => Problem::retry_later(e.to_string(), 1),
            RewindError::Source(e) => Problem::unavailable(e.to_string()),
        })?;
    tracing::info!(subscription = %sub.key(), consumer = %consumer, from = body.from_sequence, by = %call.who.username, "redelivery requested through the api");
    json(
        StatusCode::ACCEPTED,
        &json!({"consumer": consumer, "cursor": cursor}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeliver_bodies_reject_unknown_fields() {
        let mut de =
            serde_json::Deserializer::from_slice(br#"{"consumer":"a","fromSequence":1,"x":2}"#);
        assert!(serde_path_to_error::deserialize::<_, Redeliver>(&mut de).is_err());
    }

    #[test]
    fn the_default_secret_ref_fits_a_secret_name() {
        assert!(("a".repeat(247) + SECRET_SUFFIX).len() <= 253);
    }
}
