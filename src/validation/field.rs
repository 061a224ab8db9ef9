//! Field errors the way the apiserver writes them (`k8s.io/apimachinery` field.Error):
//! `spec.autoscaler.prometheus.ratePerCore: Invalid value: 0: must be greater than 0`.

use std::fmt;

use serde_json::Value;

/// A field path: `spec.resourcePolicy.containerPolicies[0].minAllowed[cpu]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root(name: &str) -> Self {
        FieldPath(name.to_string())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A field path written only when a message needs it: a chain of borrowed
/// segments on the stack. The rules name a path for every field they look at and
/// write one for the few they report.
#[derive(Clone, Copy, Debug)]
pub enum Path<'a> {
    Root(&'a str),
    Child(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl<'a> Path<'a> {
    pub fn child<'s>(&'s self, name: &'s str) -> Path<'s> {
        Path::Child(self, name)
    }

    pub fn index<'s>(&'s self, i: usize) -> Path<'s> {
        Path::Index(self, i)
    }

    pub fn key<'s>(&'s self, k: &'s str) -> Path<'s> {
        Path::Key(self, k)
    }

    /// Whether nothing is written for this path ([`FieldPath::child`] of an
    /// empty path writes no dot).
    fn is_empty(&self) -> bool {
        matches!(self, Path::Root(""))
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Child(parent, name) if parent.is_empty() => f.write_str(name),
            Path::Child(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, k) => write!(f, "{parent}[{k}]"),
        }
    }
}

impl From<Path<'_>> for FieldPath {
    fn from(path: Path<'_>) -> Self {
        FieldPath(path.to_string())
    }
}

impl From<&Path<'_>> for FieldPath {
    fn from(path: &Path<'_>) -> Self {
        FieldPath(path.to_string())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Invalid,
    Required,
    Duplicate,
    NotSupported(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: FieldPath,
    pub kind: ErrorType,
    /// The offending value, rendered as the apiserver does (`"5m"`, `0`).
    pub value: Option<String>,
    pub detail: String,
}

/// Renders a value for a message: strings quoted, numbers plain, the rest as
/// compact JSON, long values cut.
pub fn render(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

impl FieldError {
    pub fn invalid(field: impl Into<FieldPath>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: ErrorType::Invalid,
            value: Some(render(value)),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<FieldPath>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: ErrorType::Required,
            value: None,
            detail: detail.into(),
        }
    }

    pub fn duplicate(field: impl Into<FieldPath>, value: &Value) -> Self {
        FieldError {
            field: field.into(),
            kind: ErrorType::Duplicate,
            value: Some(render(value)),
            detail: String::new(),
        }
    }

    pub fn not_supported(field: impl Into<FieldPath>, value: &Value, supported: &[&str]) -> Self {
        FieldError {
            field: field.into(),
            kind: ErrorType::NotSupported(supported.iter().map(|s| s.to_string()).collect()),
            value: Some(render(value)),
            detail: String::new(),
        }
    }

    /// `metav1.CauseType`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotSupported(_) => "FieldValueNotSupported",
        }
    }

    /// The message without the field (a StatusCause's `message`).
    pub fn body(&self) -> String {
        let value = self.value.as_deref().unwrap_or("null");
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match &self.kind {
            ErrorType::Invalid => with_detail(format!("Invalid value: {value}")),
            ErrorType::Required => with_detail("Required value".to_string()),
            ErrorType::Duplicate => with_detail(format!("Duplicate value: {value}")),
            ErrorType::NotSupported(supported) => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                with_detail(format!(
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                ))
            }
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Everything wrong with an object (errors) and everything suspicious (warnings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn error(&mut self, e: FieldError) {
        self.errors.push(e);
    }

    pub fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// Whether an error was already reported at `field` or below it.
    pub fn has_error_at(&self, field: &FieldPath) -> bool {
        self.has_error_below(field.as_str())
    }

    /// [`Report::has_error_at`] of a [`Path`], written only when there are errors.
    pub fn has_error_under(&self, field: &Path<'_>) -> bool {
        !self.errors.is_empty() && self.has_error_below(&field.to_string())
    }

    fn has_error_below(&self, f: &str) -> bool {
        self.errors.iter().any(|e| {
            let p = e.field.as_str();
            p == f || p.starts_with(&format!("{f}.")) || p.starts_with(&format!("{f}["))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_render_like_the_apiserver() {
        let p = FieldPath::root("spec")
            .child("autoscaler")
            .child("prometheus")
            .child("ratePerCore");
        let e = FieldError::invalid(p, &json!(0), "must be greater than 0");
        assert_eq!(
            e.to_string(),
            "spec.autoscaler.prometheus.ratePerCore: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(e.reason(), "FieldValueInvalid");

        let e = FieldError::required(FieldPath::root("spec").child("name"), "");
        assert_eq!(e.to_string(), "spec.name: Required value");

        let p = FieldPath::root("spec").child("fallbackStrategy");
        let e = FieldError::not_supported(p, &json!("avg"), &["min", "max"]);
        assert_eq!(
            e.to_string(),
            r#"spec.fallbackStrategy: Unsupported value: "avg": supported values: "min", "max""#
        );
        let p = FieldPath::root("x").index(3).key("cpu");
        assert_eq!(p.as_str(), "x[3][cpu]");
    }

    #[test]
    fn long_values_are_cut() {
        let long = json!("x".repeat(200));
        assert!(render(&long).ends_with("...") && render(&long).len() < 100);
    }
}
