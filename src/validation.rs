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
    version_in(object.get("apiVersion").and_then(Value::as_str))
}

/// The version part of an `apiVersion` (`v1` when there is none).
pub fn version_in(api_version: Option<&str>) -> &str {
    api_version
        .and_then(|v| v.split_once('/'))
        .map_or(VERSION_V1, |(_, version)| version)
}

/// The metadata the rules read. The rest of `metadata` (managedFields, owner
/// references, timestamps) is the apiserver's to check, and is not read: on the
/// webhook it is most of the object.
fn typed_meta(name: Option<&str>, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: name.map(String::from),
        namespace: namespace.map(String::from),
        ..ObjectMeta::default()
    }
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
        // `check_consumer` left `name` and `namespace` strings (or removed them).
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            meta.retain(|key, _| key == "name" || key == "namespace");
        }
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
    let old = old.map(type_checked);
    judge(type_checked(object), old, version)
}

/// A Consumer as a one-pass reader of its JSON saw it, for [`validate_parts`]. Its
/// reader vouches that `metadata` is an object whose `name`, `namespace` and
/// `generateName` are strings or null and whose `labels` and `annotations` are
/// null or maps of strings (what the type checks pass unchanged), and that the
/// object has no duplicate `apiVersion`, `metadata` or `spec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    pub api_version: Option<&'a str>,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// `metadata.deletionTimestamp` is set (not null).
    pub deleting: bool,
    /// The JSON text of `spec` (`None`: absent or null).
    pub spec: Option<&'a str>,
}

/// [`validate`] of a Consumer given as [`Parts`], without a `Value` tree of it:
/// the spec is checked against the schema and read into its type straight from
/// its text. `None` when that is not the whole story (the spec does not pass the
/// type checks unchanged): then [`validate`] of the object's `Value` answers,
/// which words every type error. When it answers, it answers what [`validate`]
/// would (`admission::consumers`' differential tests hold the two together).
pub fn validate_parts(
    object: &Parts<'_>,
    old: Option<&Parts<'_>>,
    version: &str,
) -> Option<Report> {
    let new = typed_parts(object)?;
    let old = match old {
        Some(old) => Some(typed_parts(old)?),
        None => None,
    };
    Some(judge(new, old, version))
}

/// The typed Consumer of [`Parts`] whose spec the type checks pass unchanged.
fn typed_parts(parts: &Parts<'_>) -> Option<(Option<Consumer>, Report)> {
    let spec = structural::read_conforming_spec(parts.spec?)?;
    let consumer = Consumer {
        metadata: typed_meta(parts.name, parts.namespace),
        spec,
        status: None,
    };
    Some((Some(consumer), Report::default()))
}

/// The typed Consumer of an object the type checks pass unchanged, read from the
/// object in place: what [`typed`] of the cleaned copy gives, without the copy.
fn typed_in_place(object: &Value) -> Option<Consumer> {
    let (meta, spec) = structural::unchanged_parts(object)?;
    let string = |key: &str| meta.get(key).and_then(Value::as_str);
    let spec = ConsumerSpec::deserialize(spec).ok()?;
    Some(Consumer {
        metadata: typed_meta(string("name"), string("namespace")),
        spec,
        status: None,
    })
}

/// The type checks (their errors and warnings in the report) and the typed
/// Consumer of what survived them.
fn type_checked(object: &Value) -> (Option<Consumer>, Report) {
    let mut report = Report::default();
    if let Some(consumer) = typed_in_place(object) {
        return (Some(consumer), report);
    }
    let cleaned = structural::check_consumer(object, &mut report);
    let consumer = typed(cleaned, &mut report);
    (consumer, report)
}

/// The rules on the type-checked object (against the stored one on UPDATE), then
/// the ratchet: problems the stored object already had become warnings.
fn judge(
    (consumer, mut report): (Option<Consumer>, Report),
    old: Option<(Option<Consumer>, Report)>,
    version: &str,
) -> Report {
    let stored = old.as_ref().and_then(|(c, _)| c.as_ref());
    if let Some(consumer) = &consumer {
        rules::check(
            consumer,
            rules::Context {
                version,
                old: stored,
            },
            &mut report,
        );
    }
    let Some((stored, mut before)) = old else {
        return report;
    };
    if let Some(stored) = &stored {
        rules::check(stored, rules::Context { version, old: None }, &mut before);
    }
    let before: Vec<String> = before.errors.iter().map(ToString::to_string).collect();
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
    report
}

#[cfg(test)]
mod tests;
