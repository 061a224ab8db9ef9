//! `POST /validate/consumers` (every problem at once, with field paths, as a 422
//! `Invalid` with causes) and `POST /mutate/consumers` (the defaults made explicit).

use serde_json::Value;

use super::review::{self, Answer, Cause, Details, Request, Status};
use super::{Reply, parse, review_response};
use crate::api::{GROUP, VERSION_V1};
use crate::telemetry::metrics::{Kind, Operation, Outcome};
use crate::validation::{self, Report, defaults};

type ConsumerRequest<'a> = Request<'a, Value, Value>;

fn is_consumer(request: &ConsumerRequest<'_>) -> bool {
    request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.as_str() == GROUP && k.kind.as_str() == "Consumer")
}

/// The version the user wrote: `requestKind` survives the apiserver's conversion.
fn user_version<'r>(request: &'r ConsumerRequest<'_>) -> &'r str {
    request
        .request_kind
        .as_ref()
        .or(request.kind.as_ref())
        .map(|k| k.version.as_str())
        .filter(|v| !v.is_empty())
        .or_else(|| request.object.as_ref().map(validation::version_of))
        .unwrap_or(VERSION_V1)
}

fn object_name(request: &ConsumerRequest<'_>) -> String {
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

/// The apiserver's `Invalid` status: `Consumer.konsumerator.lwolf.org "x" is
/// invalid: [a, b]`, with one cause per field error.
pub fn invalid_status(name: &str, report: &Report) -> Status {
    invalid_object("Consumer", GROUP, name, "is invalid", report)
}

/// The apiserver's `Invalid` status for an object of `kind` in `group`:
/// `Kind.group "name" <verdict>: [a, b]`, one cause per field error.
pub(super) fn invalid_object(
    kind: &str,
    group: &str,
    name: &str,
    verdict: &str,
    report: &Report,
) -> Status {
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    let list = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    Status::failure(
        422,
        "Invalid",
        format!("{kind}.{group} {name:?} {verdict}: {list}"),
    )
    .with_details(Details {
        name: Some(name.to_string()),
        group: Some(group.to_string()),
        kind: Some(kind.to_string()),
        causes: report
            .errors
            .iter()
            .map(|e| Cause {
                reason: e.reason().to_string(),
                message: e.body(),
                field: e.field.to_string(),
            })
            .collect(),
    })
}

struct Head {
    api_version: &'static str,
    uid: String,
    operation: Operation,
}

fn reply(head: &Head, answer: Answer, outcome: Outcome) -> Reply {
    Reply {
        response: review_response(review::encode(head.api_version, &head.uid, &answer)),
        kind: Kind::Consumer,
        operation: head.operation,
        outcome,
    }
}

/// Answers the common cases: not a Consumer, not CREATE/UPDATE, no object.
fn triage(head: &Head, request: &ConsumerRequest<'_>) -> Option<Reply> {
    if !is_consumer(request) {
        let mut answer = Answer::allow();
        answer.warnings.push(format!(
            "konsumer validates {GROUP} Consumers only; check the rules of the webhook configuration"
        ));
        return Some(reply(head, answer, Outcome::allowed));
    }
    if !matches!(head.operation, Operation::CREATE | Operation::UPDATE) {
        return Some(reply(head, Answer::allow(), Outcome::allowed));
    }
    if request.object.is_none() {
        let status = Status::failure(400, "BadRequest", "the request has no object".into());
        return Some(reply(head, Answer::deny(status), Outcome::denied));
    }
    None
}

/// Reads the request, opens its span and answers the common cases; `decide`
/// answers a Consumer CREATE or UPDATE.
fn answer(
    body: &[u8],
    webhook: &'static str,
    decide: impl FnOnce(&Head, &ConsumerRequest<'_>, &Value) -> Reply,
) -> Reply {
    let (api_version, request) = match parse::<Value, Value>(body) {
        Ok(parsed) => parsed,
        Err(reply) => return *reply,
    };
    let head = Head {
        api_version,
        uid: request.uid.as_str().to_string(),
        operation: Operation::parse(request.operation.as_ref().map(|o| o.as_str())),
    };
    let span =
        tracing::info_span!("admission", webhook, uid = %head.uid, operation = ?head.operation);
    let _enter = span.enter();
    if let Some(done) = triage(&head, &request) {
        return done;
    }
    match request.object.as_ref() {
        Some(object) => decide(&head, &request, object),
        None => reply(&head, Answer::allow(), Outcome::allowed),
    }
}

/// `/validate/consumers`.
pub fn validate(body: &[u8]) -> Reply {
    answer(body, "validate_consumers", |head, request, object| {
        if object
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            // Being deleted: finalizers must come off whatever the spec says.
            return reply(head, Answer::allow(), Outcome::allowed);
        }
        let old = match head.operation {
            Operation::UPDATE => request.old_object.as_ref(),
            _ => None,
        };
        let report = validation::validate(object, old, user_version(request));
        let name = object_name(request);
        if report.is_valid() {
            tracing::debug!(consumer = %name, warnings = report.warnings.len(), "valid");
            return reply(
                head,
                Answer::allow().with_warnings(report.warnings),
                Outcome::allowed,
            );
        }
        tracing::info!(consumer = %name, errors = report.errors.len(), "invalid Consumer denied");
        let status = invalid_status(&name, &report);
        reply(
            head,
            Answer::deny(status).with_warnings(report.warnings),
            Outcome::denied,
        )
    })
}

/// `/mutate/consumers`.
pub fn defaults(body: &[u8]) -> Reply {
    answer(body, "mutate_consumers", |head, _, object| {
        let ops = defaults::patch(object);
        if ops.is_empty() {
            return reply(head, Answer::allow(), Outcome::allowed);
        }
        match serde_json::to_vec(&ops) {
            Ok(patch) => reply(
                head,
                Answer {
                    allowed: true,
                    patch: Some(patch),
                    ..Answer::default()
                },
                Outcome::patched,
            ),
            Err(e) => reply(
                head,
                Answer::deny(Status::failure(
                    500,
                    "InternalError",
                    format!("cannot encode the patch: {e}"),
                )),
                Outcome::denied,
            ),
        }
    })
}
