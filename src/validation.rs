//! Consumer validation and defaulting (pure): the same rules for the validating
//! webhook, the defaulting webhook and `konsumer validate`. Every problem is
//! reported at once, each with its field path, as the apiserver does.

pub mod defaults;
pub mod field;
pub mod rules;
pub mod structural;
pub mod subscription;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Consumer, ConsumerSpec, VERSION_V1};

pub use field::{ErrorType, FieldError, FieldPath, Report};

/// The API version of a Consumer object (`v1` when it does not say).
pub fn version_of(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map_or(VERSION_V1, |(_, version)| version)
}

/// Reads what survived the type checks into the typed Consumer.
fn typed(cleaned: Value, report: &mut Report) -> Option<Consumer> {
    let mut cleaned = cleaned;
    if let Some(obj) = cleaned.as_object_mut() {
        obj.insert(
            "apiVersion".into(),
            Value::from("konsumerator.lwolf.org/v1"),
        );
        obj.insert("kind".into(), Value::from("Consumer"));
    }
    match serde_json::from_value::<Consumer>(cleaned) {
        Ok(c) => Some(c),
        Err(e) => {
            report.error(FieldError::invalid(
                FieldPath::root("metadata"),
                &Value::Null,
                format!("not a readable object: {e}"),
            ));
            None
        }
    }
}

/// Validates a Consumer (`object`), against its stored version (`old`) on UPDATE.
/// `version` is the API version the user wrote. Never panics, whatever the JSON.
///
/// On UPDATE, problems the stored object already had are warnings, not errors
/// (like the apiserver's ratcheting validation): a Consumer that predates these
/// rules can still get a label, an annotation or its finalizers removed.
pub fn validate(object: &Value, old: Option<&Value>, version: &str) -> Report {
    let mut report = check(object, old, version);
    if let Some(old) = old {
        let before: Vec<String> = check(old, None, version)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        let (kept, ratcheted): (Vec<_>, Vec<_>) = report
            .errors
            .drain(..)
            .partition(|e| !before.contains(&e.to_string()));
        report.errors = kept;
        for e in ratcheted {
            report.warn(format!(
                "{e} (already so before this update; fix it when you can)"
            ));
        }
    }
    report
}

/// The typed Consumer of an object the type checks pass unchanged, read from the
/// object in place: what [`typed`] of the cleaned copy gives, without the copy.
fn typed_in_place(object: &Value) -> Option<Consumer> {
    let (meta, spec) = structural::unchanged_parts(object)?;
    let metadata = ObjectMeta::deserialize(meta).ok()?;
    let spec = ConsumerSpec::deserialize(spec).ok()?;
    Some(Consumer {
        metadata,
        spec,
        status: None,
    })
}

/// The type checks (their errors and warnings into `report`) and the typed
/// Consumer of what survived them.
fn type_checked(object: &Value, report: &mut Report) -> Option<Consumer> {
    if let Some(consumer) = typed_in_place(object) {
        return Some(consumer);
    }
    let cleaned = structural::check_consumer(object, report);
    typed(cleaned, report)
}

fn check(object: &Value, old: Option<&Value>, version: &str) -> Report {
    let mut report = Report::default();
    let Some(consumer) = type_checked(object, &mut report) else {
        return report;
    };
    let old = old.and_then(|o| type_checked(o, &mut Report::default()));
    rules::check(
        &consumer,
        rules::Context {
            version,
            old: old.as_ref(),
        },
        &mut report,
    );
    report
}

#[cfg(test)]
mod tests;
