//! `POST /validate/scalingsubscriptions`: every problem at once, with field paths,
//! as a 422 `Invalid` with causes — the same validator the HTTP API calls.

use serde_json::Value;

use super::review::{self, Answer, Request, Status};
use super::{Admission, Reply, parse, review_response};
use crate::api::subscription::SUBSCRIPTION_GROUP;
use crate::telemetry::metrics::{Kind, Operation, Outcome};
use crate::validation::Report;
use crate::validation::subscription::{self as rules, Context};

type SubscriptionRequest<'a> = Request<'a, Value, Value>;

/// The apiserver's `Invalid` status for a subscription.
pub fn invalid_status(name: &str, report: &Report) -> Status {
    super::consumers::invalid_object(
        "ScalingSubscription",
        SUBSCRIPTION_GROUP,
        name,
        "is invalid (konsumer)",
        report,
    )
}

fn object_name(request: &SubscriptionRequest<'_>) -> String {
    request
        .name
        .as_ref()
        .map(|n| n.as_str().to_string())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default()
}

/// `/validate/scalingsubscriptions`.
pub fn validate(state: &Admission, body: &[u8]) -> Reply {
    let (api_version, request) = match parse::<Value, Value>(body) {
        Ok(parsed) => parsed,
        Err(reply) => return *reply,
    };
    let uid = request.uid.as_str().to_string();
    let operation = Operation::parse(request.operation.as_ref().map(|o| o.as_str()));
    let span = tracing::info_span!("admission", webhook = "validate_scalingsubscriptions", uid = %uid, ?operation);
    let _enter = span.enter();
    let reply = |answer: Answer, outcome: Outcome| Reply {
        response: review_response(review::encode(api_version, &uid, &answer)),
        kind: Kind::ScalingSubscription,
        operation,
        outcome,
    };
    let ours = request.kind.as_ref().is_some_and(|k| {
        k.group.as_str() == SUBSCRIPTION_GROUP && k.kind.as_str() == "ScalingSubscription"
    });
    if !ours {
        let mut answer = Answer::allow();
        answer.warnings.push(format!(
            "konsumer validates {SUBSCRIPTION_GROUP} ScalingSubscriptions on this path only; check the rules of the webhook configuration"
        ));
        return reply(answer, Outcome::allowed);
    }
    if !matches!(operation, Operation::CREATE | Operation::UPDATE) {
        return reply(Answer::allow(), Outcome::allowed);
    }
    let Some(object) = request.object.as_ref() else {
        let status = Status::failure(400, "BadRequest", "the request has no object".into());
        return reply(Answer::deny(status), Outcome::denied);
    };
    if object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return reply(Answer::allow(), Outcome::allowed);
    }
    // The namespace of the request is authoritative (the object may omit it).
    let mut object = object.clone();
    if let (Some(ns), Some(meta)) = (
        request.namespace.as_ref().map(|n| n.as_str().to_string()),
        object.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.insert("namespace".into(), Value::String(ns));
    }
    let report = rules::validate(
        &object,
        Context {
            konsumer_namespace: &state.config.konsumer_namespace,
        },
    );
    let name = object_name(&request);
    if report.is_valid() {
        return reply(
            Answer::allow().with_warnings(report.warnings),
            Outcome::allowed,
        );
    }
    tracing::info!(subscription = %name, errors = report.errors.len(), "invalid ScalingSubscription denied");
    let status = invalid_status(&name, &report);
    reply(
        Answer::deny(status).with_warnings(report.warnings),
        Outcome::denied,
    )
}
