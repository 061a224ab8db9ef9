//! `admission.k8s.io/v1` AdmissionReview on the wire. Requests are read into
//! borrowed, typed views; answers are written by hand because kube-rs's
//! `AdmissionResponse` serializes the patch as an array of numbers, not base64.

use base64::Engine;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::inject::workload::Str;

pub mod lazy;

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Str<'a>,
    #[serde(borrow, default)]
    pub version: Str<'a>,
    #[serde(borrow, default)]
    pub kind: Str<'a>,
}

/// An AdmissionReview whose `object` and `oldObject` are read as `O` and `P`.
#[derive(Debug, Deserialize)]
pub struct Review<'a, O, P = IgnoredAny> {
    #[serde(borrow, default, rename = "apiVersion")]
    pub api_version: Option<Str<'a>>,
    #[serde(borrow, default = "none")]
    pub request: Option<Request<'a, O, P>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a, O, P> {
    #[serde(borrow)]
    pub uid: Str<'a>,
    #[serde(borrow, default)]
    pub kind: Option<GroupVersionKind<'a>>,
    /// The kind as the user sent it (before conversion to the webhook's version).
    #[serde(borrow, default)]
    pub request_kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub operation: Option<Str<'a>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default = "none")]
    pub object: Option<O>,
    #[serde(default = "none")]
    pub old_object: Option<P>,
}

fn none<T>() -> Option<T> {
    None
}

/// Just enough of a request to answer it: used when the full read fails.
pub type Envelope<'a> = Review<'a, IgnoredAny, IgnoredAny>;

/// The apiVersion to answer with: the request's when it is one we speak.
pub fn answer_version(requested: Option<&str>) -> &'static str {
    match requested {
        Some(API_VERSION_V1BETA1) => API_VERSION_V1BETA1,
        _ => API_VERSION_V1,
    }
}

/// `metav1.StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: String,
    pub message: String,
    pub field: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
}

/// `metav1.Status` of a denial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

impl Status {
    pub fn failure(code: u16, reason: &'static str, message: String) -> Self {
        Status {
            status: "Failure",
            message,
            reason,
            code,
            details: None,
        }
    }

    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }
}

/// The decision to send back.
#[derive(Debug, Default)]
pub struct Answer {
    pub allowed: bool,
    /// The JSON Patch document (serialized), when there is one.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    pub status: Option<Status>,
}

impl Answer {
    pub fn allow() -> Self {
        Answer {
            allowed: true,
            ..Answer::default()
        }
    }

    pub fn deny(status: Status) -> Self {
        Answer {
            allowed: false,
            status: Some(status),
            ..Answer::default()
        }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseBody<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewBody<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseBody<'a>,
}

/// Serializes the AdmissionReview answer; the patch is base64, as `[]byte` is.
pub fn encode(api_version: &str, uid: &str, answer: &Answer) -> Vec<u8> {
    let patch = answer
        .patch
        .as_ref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let body = ReviewBody {
        api_version,
        kind: "AdmissionReview",
        response: ResponseBody {
            uid,
            allowed: answer.allowed,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings: &answer.warnings,
            status: answer.status.as_ref(),
        },
    };
    // Serializing these plain structs cannot fail; an empty body would be a bug.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_is_base64_with_patch_type() {
        let answer = Answer {
            allowed: true,
            patch: Some(br#"[{"op":"add","path":"/a","value":1}]"#.to_vec()),
            ..Answer::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&encode(API_VERSION_V1, "u1", &answer)).unwrap();
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], "u1");
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(body["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(patch, br#"[{"op":"add","path":"/a","value":1}]"#);
        assert!(body["response"].get("warnings").is_none());
    }

    #[test]
    fn denial_carries_a_status() {
        let answer = Answer::deny(Status::failure(403, "Forbidden", "no".into()));
        let body: serde_json::Value =
            serde_json::from_slice(&encode(API_VERSION_V1, "u", &answer)).unwrap();
        assert_eq!(body["response"]["allowed"], false);
        assert_eq!(body["response"]["status"]["code"], 403);
        assert!(body["response"].get("patch").is_none());
    }
}
