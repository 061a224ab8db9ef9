//! Consumer routes: status, plan and journal, read from the cache the webhooks
//! use (no Kubernetes API call per request).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;
use serde_json::Value;

use super::auth::Access;
use super::page::{self, ListMeta};
use super::problem::Problem;
use super::{ApiState, Call, authorize, json};
use crate::api::{Consumer, ConsumerStatus, GROUP};
use crate::store::CachedConsumer;

fn access(verb: &'static str, namespace: Option<&str>, name: Option<&str>) -> Access {
    Access {
        verb,
        group: GROUP,
        resource: "consumers",
        subresource: None,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    }
}

/// The instance counters of a Consumer's status.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub expected: i32,
    pub running: i32,
    pub paused: i32,
    pub lagging: i32,
    pub missing: i32,
    pub unavailable: i32,
    pub outdated: i32,
    pub redundant: i32,
}

/// One Consumer in a list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerItem {
    pub namespace: String,
    pub name: String,
    /// Instances the spec asks for.
    pub instances: i32,
    pub summary: Summary,
    pub conditions: Vec<Condition>,
}

/// One Consumer with its status (the journal apart: see `/events`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub instances: i32,
    pub summary: Summary,
    pub status: ConsumerStatus,
}

#[derive(Debug, Serialize)]
struct List<T> {
    items: Vec<T>,
    metadata: ListMeta,
}

fn summary(status: &ConsumerStatus) -> Summary {
    let n = |v: Option<i32>| v.unwrap_or(0);
    Summary {
        expected: n(status.expected),
        running: n(status.running),
        paused: n(status.paused),
        lagging: n(status.lagging),
        missing: n(status.missing),
        unavailable: n(status.unavailable),
        outdated: n(status.outdated),
        redundant: n(status.redundant),
    }
}

/// Instances the spec asks for (the status's count when the spec is unusable).
fn instances(cached: &CachedConsumer) -> i32 {
    match &cached.settings {
        Ok(s) => i32::try_from(s.instances()).unwrap_or(i32::MAX),
        Err(_) => cached
            .consumer
            .status
            .as_ref()
            .and_then(|s| s.expected)
            .unwrap_or(0),
    }
}

fn item(cached: &CachedConsumer) -> ConsumerItem {
    let c: &Consumer = &cached.consumer;
    let status = c.status.clone().unwrap_or_default();
    ConsumerItem {
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.metadata.name.clone().unwrap_or_default(),
        instances: instances(cached),
        summary: summary(&status),
        conditions: status.conditions.as_deref().cloned().unwrap_or_default(),
    }
}

fn key(c: &Arc<CachedConsumer>) -> String {
    c.consumer.key()
}

fn list_of(mut all: Vec<Arc<CachedConsumer>>, call: &Call) -> Result<Response, Problem> {
    call.query.only(&["limit", "continue"])?;
    let request = page::request(&call.query)?;
    all.sort_by_key(key);
    let (items, metadata) = page::page(all, key, &request);
    json(
        StatusCode::OK,
        &List {
            items: items.iter().map(|c| item(c)).collect(),
            metadata,
        },
    )
}

/// `GET /v1/consumers`: the Consumers of every namespace the caller may list.
pub async fn list_all(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    let all = state.index.all();
    let everywhere = access("list", None, None);
    if state.auth.allowed(&call.who, &everywhere).await? {
        return list_of(all, call);
    }
    let mut namespaces: BTreeMap<String, bool> = all
        .iter()
        .map(|c| {
            (
                c.consumer.metadata.namespace.clone().unwrap_or_default(),
                false,
            )
        })
        .collect();
    for (ns, allowed) in namespaces.iter_mut() {
        *allowed = state
            .auth
            .allowed(&call.who, &access("list", Some(ns), None))
            .await?;
    }
    let visible = all
        .into_iter()
        .filter(|c| {
            namespaces
                .get(c.consumer.metadata.namespace.as_deref().unwrap_or_default())
                .copied()
                .unwrap_or(false)
        })
        .collect();
    list_of(visible, call)
}

/// `GET /v1/namespaces/{namespace}/consumers`.
pub async fn list(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    let ns = call.namespace();
    authorize(state, call, access("list", Some(ns), None)).await?;
    let all = state
        .index
        .all()
        .into_iter()
        .filter(|c| c.consumer.metadata.namespace.as_deref() == Some(ns))
        .collect();
    list_of(all, call)
}

async fn consumer(state: &ApiState, call: &Call) -> Result<Arc<CachedConsumer>, Problem> {
    let (ns, name) = (call.namespace(), call.name());
    authorize(state, call, access("get", Some(ns), Some(name))).await?;
    state.index.get(ns, name).ok_or_else(|| {
        Problem::not_found(format!(
            "Consumer {ns}/{name} not found (konsumer knows {} Consumers; GET /v1/namespaces/{ns}/consumers lists them)",
            state.index.len()
        ))
    })
}

/// `GET /v1/namespaces/{namespace}/consumers/{name}`.
pub async fn get(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    let cached = consumer(state, call).await?;
    let c = &cached.consumer;
    let mut status = c.status.clone().unwrap_or_default();
    status.journal = None;
    json(
        StatusCode::OK,
        &ConsumerView {
            namespace: c.metadata.namespace.clone().unwrap_or_default(),
            name: c.metadata.name.clone().unwrap_or_default(),
            uid: c.metadata.uid.clone(),
            generation: c.metadata.generation,
            instances: instances(&cached),
            summary: summary(&status),
            status,
        },
    )
}

/// `GET …/consumers/{name}/plan`: what `konsumer plan --offline` says for the
/// Consumer as konsumer has it now (the same function).
pub async fn plan(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&[])?;
    let cached = consumer(state, call).await?;
    let plan =
        crate::cli::plan::plan(&cached.consumer, state.config.gomemlimit_ratio).map_err(|e| {
            Problem::conflict(format!(
                "Consumer {} cannot be planned: {e:#}; fix its spec",
                cached.consumer.key()
            ))
        })?;
    json(StatusCode::OK, &plan)
}

/// One journal entry, its data parsed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView {
    sequence: i64,
    #[serde(rename = "type")]
    type_: String,
    time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<i32>,
    data: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Events {
    consumer: String,
    /// The sequence of the newest event (0 when none yet).
    head: i64,
    items: Vec<EventView>,
    metadata: ListMeta,
}

/// `GET …/consumers/{name}/events?after=SEQ&limit=N`: the journal, oldest first.
pub async fn events(state: &ApiState, call: &Call) -> Result<Response, Problem> {
    call.query.only(&["after", "limit", "continue"])?;
    let cached = consumer(state, call).await?;
    let request = page::request(&call.query)?;
    let mut after = match call.query.get("after") {
        None => 0,
        Some(t) => t.parse::<i64>().map_err(|_| {
            Problem::bad_request(format!("after={t:?}: give an event sequence number"))
        })?,
    };
    if let Some(cont) = request.after.as_deref() {
        after = cont.parse::<i64>().map_err(|_| {
            Problem::bad_request(
                "the continue token is not one this api gave; start again without it",
            )
        })?;
    }
    let whole = match &state.journals {
        Some(source) => source
            .journal(call.namespace(), call.name())
            .await
            .map_err(|e| Problem::unavailable(format!("reading the journal: {e}")))?,
        None => None,
    };
    let journal = match whole {
        Some(journal) => journal,
        None => cached
            .consumer
            .status
            .as_ref()
            .and_then(|s| s.journal.clone())
            .unwrap_or_default(),
    };
    let head = crate::scaling_events::journal::head(&journal);
    let rest: Vec<_> = journal.into_iter().filter(|e| e.sequence > after).collect();
    let more = rest.len() > request.limit;
    let items: Vec<EventView> = rest
        .into_iter()
        .take(request.limit)
        .map(|e| EventView {
            sequence: e.sequence,
            type_: e.type_,
            time: e.time,
            instance: e.instance,
            data: e.data.value(),
        })
        .collect();
    let continue_ = more
        .then(|| items.last().map(|l| page::encode(&l.sequence.to_string())))
        .flatten();
    json(
        StatusCode::OK,
        &Events {
            consumer: cached.consumer.key(),
            head,
            items,
            metadata: ListMeta { continue_ },
        },
    )
}
