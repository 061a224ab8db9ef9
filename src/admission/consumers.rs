//! `POST /validate/consumers` (every problem at once, with field paths, as a 422
//! `Invalid` with causes) and `POST /mutate/consumers` (the defaults made explicit).

use std::convert::Infallible;

use serde_json::Value;

use super::review::lazy::{Unsure, consumer::read_consumer_review};
use super::review::{self, Answer, Cause, Details, Request, Status};
use super::{Reply, parse, review_response};
use crate::api::{GROUP, VERSION_V1};
use crate::telemetry::metrics::{Kind, Operation, Outcome};
use crate::validation::{self, Parts, Report, defaults};

/// What answering reads of a Consumer object, whichever way it was read: a whole
/// `Value` (serde), or the one-pass reader's [`Parts`].
trait ConsumerObject {
    fn api_version(&self) -> Option<&str>;
    fn name(&self) -> Option<&str>;
    /// `metadata.deletionTimestamp` is set.
    fn deleting(&self) -> bool;
}

impl ConsumerObject for Value {
    fn api_version(&self) -> Option<&str> {
        self.get("apiVersion").and_then(Value::as_str)
    }

    fn name(&self) -> Option<&str> {
        self.pointer("/metadata/name").and_then(Value::as_str)
    }

    fn deleting(&self) -> bool {
        self.pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
    }
}

impl ConsumerObject for Parts<'_> {
    fn api_version(&self) -> Option<&str> {
        self.api_version
    }

    fn name(&self) -> Option<&str> {
        self.name
    }

    fn deleting(&self) -> bool {
        self.deleting
    }
}

type ConsumerRequest<'a, O> = Request<'a, O, O>;

fn is_consumer<O>(request: &ConsumerRequest<'_, O>) -> bool {
    request
        .kind
        .as_ref()
        .is_some_and(|k| k.group.as_str() == GROUP && k.kind.as_str() == "Consumer")
}

/// The version the user wrote: `requestKind` survives the apiserver's conversion.
fn user_version<'r, O: ConsumerObject>(request: &'r ConsumerRequest<'_, O>) -> &'r str {
    request
        .request_kind
        .as_ref()
        .or(request.kind.as_ref())
        .map(|k| k.version.as_str())
        .filter(|v| !v.is_empty())
        .or_else(|| {
            request
                .object
                .as_ref()
                .map(|o| validation::version_in(o.api_version()))
        })
        .unwrap_or(VERSION_V1)
}

fn object_name<O: ConsumerObject>(request: &ConsumerRequest<'_, O>) -> String {
    request
        .name
        .as_ref()
        .map(|n| n.as_str().to_string())
        .filter(|n| !n.is_empty())
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(ConsumerObject::name)
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

struct Head<'r> {
    api_version: &'static str,
    webhook: &'static str,
    uid: &'r str,
    operation: Operation,
    /// Whether the request's span is open around the whole answer (only when
    /// spans are exported; see [`Head::log_span`]).
    spanned: bool,
}

impl Head<'_> {
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "admission",
            webhook = self.webhook,
            uid = self.uid,
            operation = self.operation.as_str()
        )
    }

    /// The span an event is logged in. Nothing else is logged while a review
    /// is answered, and under the JSON subscriber opening a span costs a good
    /// part of a small review's answer: unless spans are exported (then it is
    /// open already), the span is opened for the event only.
    fn log_span(&self) -> tracing::span::EnteredSpan {
        if self.spanned {
            tracing::Span::none().entered()
        } else {
            self.span().entered()
        }
    }
}

fn reply(head: &Head<'_>, answer: Answer, outcome: Outcome) -> Reply {
    Reply {
        response: review_response(review::encode(head.api_version, head.uid, &answer)),
        kind: Kind::Consumer,
        operation: head.operation,
        outcome,
    }
}

/// Answers the common cases: not a Consumer, not CREATE/UPDATE, no object.
fn triage<O>(head: &Head<'_>, request: &ConsumerRequest<'_, O>) -> Option<Reply> {
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

/// Answers the common cases (inside the request's span when spans are exported); `decide` answers a
/// Consumer CREATE or UPDATE (or gives up with `E`).
fn answer<O, E>(
    (api_version, request): (&'static str, ConsumerRequest<'_, O>),
    webhook: &'static str,
    decide: impl FnOnce(&Head<'_>, &ConsumerRequest<'_, O>, &O) -> Result<Reply, E>,
) -> Result<Reply, E> {
    let head = Head {
        api_version,
        webhook,
        uid: request.uid.as_str(),
        operation: Operation::parse(request.operation.as_ref().map(|o| o.as_str())),
        spanned: crate::telemetry::spans_exported(),
    };
    let span = if head.spanned {
        head.span()
    } else {
        tracing::Span::none()
    };
    let _enter = span.enter();
    if let Some(done) = triage(&head, &request) {
        return Ok(done);
    }
    match request.object.as_ref() {
        Some(object) => decide(&head, &request, object),
        None => Ok(reply(&head, Answer::allow(), Outcome::allowed)),
    }
}

/// `/validate/consumers`: the one-pass reader and [`validation::validate_parts`]
/// when they are sure, else the whole review through serde and
/// [`validation::validate`] (the same answer, byte for byte; see the
/// differential tests).
pub fn validate(body: &[u8]) -> Reply {
    fast_validate(body).unwrap_or_else(|Unsure| slow_validate(body))
}

/// `/validate/consumers` read in one pass; [`Unsure`] when only the serde path
/// can answer as it does.
fn fast_validate(body: &[u8]) -> Result<Reply, Unsure> {
    let review = read_consumer_review(body)?;
    // No request: the serde path words that answer.
    let request = review.request.ok_or(Unsure)?;
    let api_version = review::answer_version(review.api_version.as_ref().map(|v| v.as_str()));
    answer(
        (api_version, request),
        "validate_consumers",
        |head, request, object| {
            decide_validate(head, request, object, |object, old, version| {
                validation::validate_parts(object, old, version).ok_or(Unsure)
            })
        },
    )
}

/// `/validate/consumers` through serde: the whole review, the object as a `Value`.
fn slow_validate(body: &[u8]) -> Reply {
    let parsed = match parse::<Value, Value>(body) {
        Ok(parsed) => parsed,
        Err(reply) => return *reply,
    };
    let answered = answer(parsed, "validate_consumers", |head, request, object| {
        decide_validate(head, request, object, |object, old, version| {
            Ok::<_, Infallible>(validation::validate(object, old, version))
        })
    });
    match answered {
        Ok(reply) => reply,
        Err(never) => match never {},
    }
}

fn decide_validate<O: ConsumerObject, E>(
    head: &Head<'_>,
    request: &ConsumerRequest<'_, O>,
    object: &O,
    check: impl FnOnce(&O, Option<&O>, &str) -> Result<Report, E>,
) -> Result<Reply, E> {
    if object.deleting() {
        // Being deleted: finalizers must come off whatever the spec says.
        return Ok(reply(head, Answer::allow(), Outcome::allowed));
    }
    let old = match head.operation {
        Operation::UPDATE => request.old_object.as_ref(),
        _ => None,
    };
    let report = check(object, old, user_version(request))?;
    let name = object_name(request);
    if report.is_valid() {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let _span = head.log_span();
            tracing::debug!(consumer = %name, warnings = report.warnings.len(), "valid");
        }
        return Ok(reply(
            head,
            Answer::allow().with_warnings(report.warnings),
            Outcome::allowed,
        ));
    }
    {
        let _span = head.log_span();
        tracing::info!(consumer = %name, errors = report.errors.len(), "invalid Consumer denied");
    }
    let status = invalid_status(&name, &report);
    Ok(reply(
        head,
        Answer::deny(status).with_warnings(report.warnings),
        Outcome::denied,
    ))
}

/// `/mutate/consumers`.
pub fn defaults(body: &[u8]) -> Reply {
    let parsed = match parse::<Value, Value>(body) {
        Ok(parsed) => parsed,
        Err(reply) => return *reply,
    };
    let answered = answer(parsed, "mutate_consumers", |head, _, object| {
        Ok::<_, Infallible>(patch_defaults(head, object))
    });
    match answered {
        Ok(reply) => reply,
        Err(never) => match never {},
    }
}

fn patch_defaults(head: &Head<'_>, object: &Value) -> Reply {
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
}

#[cfg(test)]
mod differential;
