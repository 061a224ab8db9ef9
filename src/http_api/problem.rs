//! RFC 9457 problem details: every error the api answers, with a stable `type`,
//! what to fix in `detail`, and for invalid input the validating webhook's
//! field-path causes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::validation::{FieldError, Report};

/// Where the problem types are documented (`openapi/konsumer.yaml`, `Problem`).
pub const TYPE_BASE: &str = "https://konsumer.dev/problems/";

/// One invalid field, as the validating webhook reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub field: String,
    /// `metav1.CauseType`: `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: String,
    pub message: String,
}

impl From<&FieldError> for Cause {
    fn from(e: &FieldError) -> Self {
        Cause {
            field: e.field.to_string(),
            reason: e.reason().to_string(),
            message: e.body(),
        }
    }
}

/// An error answer of the api.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// The last segment of the `type` URI (`not-found`, `invalid`, ...).
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub causes: Vec<Cause>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[Cause]>::is_empty")]
    causes: &'a [Cause],
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Problem {
            status,
            kind,
            title,
            detail: format!("konsumer: {detail}"),
            causes: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail.into(),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail.into(),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            detail.into(),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            detail.into(),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail.into())
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request body too large",
            detail.into(),
        )
    }

    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail.into(),
        )
    }

    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "Too many requests",
            detail.into(),
        );
        p.retry_after = Some(1);
        p
    }

    /// konsumer could not reach what it depends on (the Kubernetes API, its
    /// store): the request may be retried.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail.into(),
        )
    }

    /// `unavailable`, with `Retry-After`.
    pub fn retry_later(detail: impl Into<String>, secs: u32) -> Self {
        let mut p = Problem::unavailable(detail);
        p.retry_after = Some(secs);
        p
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail.into(),
        )
    }

    /// A body that does not pass the validator: every field at once.
    pub fn invalid(what: &str, causes: Vec<Cause>) -> Self {
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid object",
            format!(
                "{what} is invalid: fix {} (see causes)",
                if fields.is_empty() {
                    "the body".to_string()
                } else {
                    fields.join(", ")
                }
            ),
        );
        p.causes = causes;
        p
    }

    /// The validator's errors as a 422.
    pub fn from_report(what: &str, report: &Report) -> Self {
        Problem::invalid(what, report.errors.iter().map(Cause::from).collect())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            type_: format!("{TYPE_BASE}{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            causes: &self.causes,
        };
        let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_string());
        let mut response = (self.status, text).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"konsumer\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::FieldPath;

    #[test]
    fn an_invalid_body_names_every_field_and_keeps_the_webhook_messages() {
        let mut report = Report::default();
        report.error(FieldError::required(
            FieldPath::root("spec").child("url"),
            "",
        ));
        let p = Problem::from_report("ScalingSubscription streams/feed", &report);
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p.causes[0].field, "spec.url");
        assert_eq!(p.causes[0].reason, "FieldValueRequired");
        assert!(p.detail.starts_with("konsumer: "), "{}", p.detail);
        assert!(p.detail.contains("spec.url"), "{}", p.detail);
    }

    #[test]
    fn an_unauthorized_answer_asks_for_a_bearer_token() {
        let r = Problem::unauthorized("no token").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"konsumer\""
        );
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
