//! `POST /mutate/workloads`: Pods (CREATE) and `apps/v1` Deployments (CREATE,
//! UPDATE) labelled `konsumerator.lwolf.org/consumer` get their instance's
//! partitions, runtime hints and resources.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::Instrument;

use serde::de::IgnoredAny;

use super::review::{self, Answer, Cause, Details, Request, Review, Status};
use super::{Admission, Reply, parse_workload, review_response};
use crate::api::keys;
use crate::inject::workload::Workload;
use crate::inject::{self, Decision, Denial, Ops, PatchText, template};
use crate::store::CachedConsumer;
use crate::telemetry::metrics::{Kind, Operation, Outcome};

/// Answers one workload AdmissionReview.
pub async fn answer(state: &Admission, body: &[u8], budget: Duration) -> Reply {
    decide(state, body, parse_workload(body), budget).await
}

/// A review read one way or the other (the one-pass reader, or serde).
pub(crate) type Parsed<'a> =
    Result<(&'static str, Request<'a, Workload<'a>, IgnoredAny>), Box<Reply>>;

/// Answers a review as read by `parsed` (`body` for the rare paths that read more).
pub(crate) async fn decide(
    state: &Admission,
    body: &[u8],
    parsed: Parsed<'_>,
    budget: Duration,
) -> Reply {
    let (api_version, request) = match parsed {
        Ok(parsed) => parsed,
        Err(reply) => return *reply,
    };
    let gvk = request.kind.as_ref();
    let kind = match gvk.map(|k| (k.group.as_str(), k.kind.as_str())) {
        Some(("", "Pod")) => Kind::Pod,
        Some(("apps", "Deployment")) => Kind::Deployment,
        _ => Kind::Other,
    };
    let operation = Operation::parse(request.operation.as_ref().map(|o| o.as_str()));
    let uid = request.uid.as_str();
    let namespace = request.namespace.as_ref().map(|n| n.as_str()).unwrap_or("");
    // Every field is known here: recording fields later costs the JSON log
    // subscriber a re-serialization each time; the outcome goes on the last event.
    let span = || {
        tracing::info_span!(
            "admission",
            webhook = "mutate_workloads",
            uid,
            kind = kind.as_str(),
            namespace,
            // Not `name`: JSON logs write the span's own name ("admission") there.
            object_name = request.name.as_ref().map(|n| n.as_str()).unwrap_or(""),
            operation = operation.as_str(),
            dry_run = request.dry_run.unwrap_or(false),
            consumer = request
                .object
                .as_ref()
                .and_then(|o| inject::consumer_name(o.metadata.as_ref()))
                .unwrap_or(""),
        )
    };
    let reply = |answer: Answer, outcome: Outcome| Reply {
        response: review_response(review::encode(api_version, uid, &answer)),
        kind,
        operation,
        outcome,
    };

    let mut instance: Option<u32> = None;
    let decided = async {
        let handled = matches!(
            (kind, operation),
            (Kind::Pod, Operation::CREATE)
                | (Kind::Deployment, Operation::CREATE)
                | (Kind::Deployment, Operation::UPDATE)
        );
        if !handled {
            let what = gvk
                .map(|k| {
                    format!(
                        "{}/{} {}",
                        k.group.as_str(),
                        k.version.as_str(),
                        k.kind.as_str()
                    )
                })
                .unwrap_or_else(|| "an object without a kind".into());
            let mut answer = Answer::allow();
            if kind == Kind::Other {
                answer.warnings.push(format!(
                    "konsumer mutates Pods and apps/v1 Deployments only, not {what}; \
                     check the rules of the MutatingWebhookConfiguration"
                ));
            }
            return (answer, Outcome::allowed);
        }
        let Some(object) = request.object.as_ref() else {
            return deny(Status::failure(
                400,
                "BadRequest",
                "the request has no object".into(),
            ));
        };
        let Some(consumer_name) = inject::consumer_name(object.metadata.as_ref()) else {
            // Not labelled for a Consumer: not ours to change.
            return (Answer::allow(), Outcome::allowed);
        };
        if namespace.is_empty() {
            return deny(Status::failure(
                400,
                "BadRequest",
                "the request has no namespace".into(),
            ));
        }
        let updating = kind == Kind::Deployment && operation == Operation::UPDATE;
        if !updating {
            return create(
                state,
                object,
                kind,
                namespace,
                consumer_name,
                budget,
                &mut instance,
            )
            .await;
        }
        // UPDATE: never block changes to an existing Deployment (its Consumer may be
        // gone, its instance out of range after a shrink, it may be being deleted);
        // leave it alone and say why instead.
        let deleting = object
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp.is_some());
        if deleting {
            return (Answer::allow(), Outcome::allowed);
        }
        let (old_template, new_template) = match templates(body) {
            Ok(t) => t,
            Err(e) => {
                return deny(Status::failure(
                    400,
                    "BadRequest",
                    format!("malformed AdmissionReview: {e}"),
                ));
            }
        };
        if old_template.is_some() && old_template == new_template {
            // Only the cache: an unchanged template gets no patch either way.
            let stale = state.index.get(namespace, consumer_name).and_then(|c| {
                let settings = c.settings.as_ref().ok()?;
                let d = inject::decide_deployment_into::<PatchText>(
                    object,
                    settings,
                    state.config.gomemlimit_ratio,
                )
                .ok()?;
                Some(d.mutation.ops.len())
            });
            return unchanged_template(stale.unwrap_or(0));
        }
        let cached = match lookup(state, namespace, consumer_name, budget).await {
            Ok(c) => c,
            Err(status) => return leave(status.message),
        };
        let settings = match &cached.settings {
            Ok(s) => s,
            Err(e) => return leave(e.to_string()),
        };
        if let (Some(old), Some(new)) = (&old_template, &new_template)
            && template::only_managed_fields_differ(old, new, settings)
        {
            return keep_template(old);
        }
        match inject::decide_deployment_into(object, settings, state.config.gomemlimit_ratio) {
            Ok(decision) => {
                instance = Some(decision.instance);
                patched(decision)
            }
            Err(Denial { message, .. }) => leave(message),
        }
    };
    let name = request.name.as_ref().map(|n| n.as_str()).unwrap_or("");
    // Nothing is logged while the decision runs, and under the JSON subscriber
    // opening a span costs about what encoding the patch does: the span is
    // opened for the event that ends it (a denial, or `answered` when debug
    // logs are on), and around the whole decision only when spans are
    // exported (OTLP), where each request's span and its duration count.
    let exported = crate::telemetry::spans_exported();
    let around = if exported {
        span()
    } else {
        tracing::Span::none()
    };
    let (mut answer, outcome) = decided.instrument(around.clone()).await;
    if let Some(status) = answer.status.as_mut() {
        sign(status, kind, name);
    }
    let logs = outcome == Outcome::denied || tracing::enabled!(tracing::Level::DEBUG);
    let logged_in = match (exported, logs) {
        (true, _) => around,
        (false, true) => span(),
        (false, false) => tracing::Span::none(),
    };
    logged_in.in_scope(|| match outcome {
        Outcome::denied => tracing::info!(
            message = answer
                .status
                .as_ref()
                .map(|s| s.message.as_str())
                .unwrap_or(""),
            "denied"
        ),
        _ => tracing::debug!(warnings = answer.warnings.len(), "answered"),
    });
    reply(answer, outcome)
}

/// Through a real apiserver a 422 reaches kubectl as its causes only ("The Pod
/// \"x\" is invalid: field: message"): the apiserver's "admission webhook … denied
/// the request" prefix is not shown. Every workload denial says it is konsumer's.
fn sign(status: &mut Status, kind: Kind, name: &str) {
    let (what, group) = match kind {
        Kind::Pod => ("Pod", None),
        Kind::Deployment => ("Deployment", Some("apps")),
        _ => ("object", None),
    };
    let prefix = format!("konsumer refused this {what}: ");
    status.message.insert_str(0, &prefix);
    if let Some(details) = status.details.as_mut() {
        for cause in &mut details.causes {
            cause.message.insert_str(0, &prefix);
        }
        if !name.is_empty() && details.kind.is_none() {
            details.kind = Some(what.to_string());
            details.name = Some(name.to_string());
            details.group = group.map(String::from);
        }
    }
}

fn deny(status: Status) -> (Answer, Outcome) {
    (Answer::deny(status), Outcome::denied)
}

fn invalid(message: String, field: String) -> Status {
    let causes = if field.is_empty() {
        Vec::new()
    } else {
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: message.clone(),
            field,
        }]
    };
    Status::failure(422, "Invalid", message).with_details(Details {
        name: None,
        group: None,
        kind: None,
        causes,
    })
}

fn patched(decision: Decision<PatchText>) -> (Answer, Outcome) {
    let Decision { mutation, .. } = decision;
    if mutation.ops.is_empty() {
        return (
            Answer::allow().with_warnings(mutation.warnings),
            Outcome::allowed,
        );
    }
    (
        Answer {
            allowed: true,
            patch: Some(mutation.ops.into_bytes()),
            warnings: mutation.warnings,
            status: None,
        },
        Outcome::patched,
    )
}

/// CREATE of a Pod or a Deployment: the Consumer must exist and the instance be
/// valid, or the workload is refused.
async fn create(
    state: &Admission,
    object: &Workload<'_>,
    kind: Kind,
    namespace: &str,
    consumer_name: &str,
    budget: Duration,
    instance: &mut Option<u32>,
) -> (Answer, Outcome) {
    let cached = match lookup(state, namespace, consumer_name, budget).await {
        Ok(c) => c,
        Err(status) => return deny(status),
    };
    let settings = match &cached.settings {
        Ok(s) => s,
        Err(e) => {
            return deny(invalid(
                format!("{e}; fix the Consumer (konsumer validate -f <file>) and retry"),
                format!("metadata.labels[{}]", keys::CONSUMER),
            ));
        }
    };
    let ratio = state.config.gomemlimit_ratio;
    let decision = if kind == Kind::Pod {
        inject::decide_pod_into(object, settings, ratio)
    } else {
        inject::decide_deployment_into(object, settings, ratio)
    };
    match decision {
        Ok(d) => {
            *instance = Some(d.instance);
            patched(d)
        }
        Err(Denial { message, field }) => deny(invalid(message, field.unwrap_or_default())),
    }
}

/// An UPDATE konsumer cannot decide is let through unchanged, with the reason.
fn leave(reason: String) -> (Answer, Outcome) {
    let mut answer = Answer::allow();
    answer
        .warnings
        .push(format!("konsumer left this Deployment unchanged: {reason}"));
    (answer, Outcome::allowed)
}

/// A Deployment UPDATE that leaves the pod template alone gets no change: a new
/// recommendation must not roll a Deployment out behind its owner's back.
/// `stale`: how many konsumer values of the template are out of date.
fn unchanged_template(stale: usize) -> (Answer, Outcome) {
    let mut answer = Answer::allow();
    if stale > 0 {
        answer.warnings.push(format!(
            "the pod template did not change, so konsumer left it alone (no rollout); \
             {stale} of its konsumer values are out of date and are applied at the next template change \
             (e.g. kubectl rollout restart); new Pods get them at creation"
        ));
    }
    (answer, Outcome::allowed)
}

/// A re-apply that only dropped or reset konsumer's values keeps the running
/// template as it is: the patch puts the old one back, so nothing rolls out.
fn keep_template(old: &serde_json::Value) -> (Answer, Outcome) {
    let ops = vec![json_patch::PatchOperation::Replace(
        json_patch::ReplaceOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens(["spec", "template"]),
            value: old.clone(),
        },
    )];
    match serde_json::to_vec(&ops) {
        Ok(patch) => (
            Answer {
                allowed: true,
                patch: Some(patch),
                warnings: vec![
                    "only fields konsumer manages differ from the running pod template (partitions, env, \
                     resources); konsumer kept the running values, so nothing rolls out"
                        .into(),
                ],
                status: None,
            },
            Outcome::patched,
        ),
        Err(e) => deny(Status::failure(500, "InternalError", format!("cannot encode the patch: {e}"))),
    }
}

/// The Consumer from the cache, else from one direct read within the budget.
async fn lookup(
    state: &Admission,
    namespace: &str,
    name: &str,
    budget: Duration,
) -> Result<Arc<CachedConsumer>, Status> {
    if let Some(c) = state.index.get(namespace, name) {
        return Ok(c);
    }
    state.metrics.consumer_cache_misses.inc();
    if let Err(watched) = state.store.watches(namespace) {
        return Err(invalid(
            format!(
                "namespace {namespace:?} is not watched: konsumer serves Consumers of {watched}; \
                 align the webhook configuration's namespaceSelector with --namespace \
                 (docs/operations.md), or remove the label {}",
                keys::CONSUMER
            ),
            format!("metadata.labels[{}]", keys::CONSUMER),
        ));
    }
    let not_found = || {
        invalid(
            format!(
                "no Consumer {name:?} in namespace {namespace:?} (label {}={name}): \
                 create the Consumer first, or fix the label",
                keys::CONSUMER
            ),
            format!("metadata.labels[{}]", keys::CONSUMER),
        )
    };
    match tokio::time::timeout(budget, state.store.get(namespace, name)).await {
        Ok(Ok(Some(c))) => Ok(c),
        Ok(Ok(None)) => Err(not_found()),
        Ok(Err(e)) => Err(Status::failure(
            503,
            "ServiceUnavailable",
            format!("cannot read Consumer {namespace}/{name}: {e}; retry"),
        )),
        Err(_) => Err(Status::failure(
            504,
            "Timeout",
            format!(
                "Consumer {namespace}/{name} is not cached and reading it took longer than the {}ms this request allows; retry",
                budget.as_millis()
            ),
        )),
    }
}

#[derive(Deserialize)]
struct TemplateOf {
    #[serde(default)]
    spec: Option<TemplateSpec>,
}

#[derive(Deserialize)]
struct TemplateSpec {
    #[serde(default)]
    template: Option<serde_json::Value>,
}

/// `oldObject.spec.template` and `object.spec.template`.
type Templates = (Option<serde_json::Value>, Option<serde_json::Value>);

fn templates(body: &[u8]) -> Result<Templates, serde_json::Error> {
    let review: Review<TemplateOf, TemplateOf> = serde_json::from_slice(body)?;
    let Some(request) = review.request else {
        return Ok((None, None));
    };
    let template = |o: Option<TemplateOf>| o.and_then(|o| o.spec).and_then(|s| s.template);
    Ok((template(request.old_object), template(request.object)))
}
