//! `admission.k8s.io/v1` AdmissionReview on the wire. Requests are read into
//! borrowed, typed views; answers are written by hand because kube-rs's
//! `AdmissionResponse` serializes the patch as an array of numbers, not base64.

pub mod lazy;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::inject::workload::Str;

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

/// Serializes the AdmissionReview answer into one buffer sized up front; the patch
/// is base64, as `[]byte` is. The fields come in the order of `AdmissionResponse`.
pub fn encode(api_version: &str, uid: &str, answer: &Answer) -> Vec<u8> {
    let patch_len = answer
        .patch
        .as_ref()
        .map_or(0, |p| base64_simd::STANDARD.encoded_length(p.len()));
    let mut out = Vec::with_capacity(160 + uid.len() + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":");
    json_string(&mut out, api_version);
    out.extend_from_slice(b",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    json_string(&mut out, uid);
    out.extend_from_slice(if answer.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(patch) = &answer.patch {
        out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        // SIMD (AVX2/SSE4.1/NEON, chosen at run time): a large Pod's ~2 KB patch in
        // about a tenth of the scalar `base64` crate's instructions (BENCHMARKS.md).
        base64_simd::STANDARD.encode_append(patch, &mut out);
        out.push(b'"');
    }
    if !answer.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":[");
        for (i, warning) in answer.warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_string(&mut out, warning);
        }
        out.push(b']');
    }
    if let Some(status) = &answer.status {
        out.extend_from_slice(b",\"status\":");
        json_value(&mut out, status);
    }
    out.extend_from_slice(b"}}");
    out
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    crate::inject::patch::text::string(out, s);
}

/// Strings, lists of strings and `Status` into a `Vec` cannot fail to serialize.
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

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
    fn the_answer_is_what_serde_would_write() {
        let answer = Answer {
            allowed: true,
            patch: Some(br#"[{"op":"add","path":"/a","value":"\u00e9"}]"#.to_vec()),
            warnings: vec!["a \"quoted\" warning\n".into(), "two".into()],
            status: Some(Status::failure(403, "Forbidden", "no \\ way".into())),
        };
        let body = encode(API_VERSION_V1, "u\"1", &answer);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let patch =
            base64::engine::general_purpose::STANDARD.encode(answer.patch.as_ref().unwrap());
        assert_eq!(
            parsed,
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": "u\"1",
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": patch,
                    "warnings": ["a \"quoted\" warning\n", "two"],
                    "status": {"status": "Failure", "message": "no \\ way", "reason": "Forbidden", "code": 403}
                }
            })
        );
    }

    /// The answer as serde_json writes each of its parts.
    fn encode_with_serde(api_version: &str, uid: &str, answer: &Answer) -> Vec<u8> {
        let mut out = format!(
            "{{\"apiVersion\":{},\"kind\":\"AdmissionReview\",\"response\":{{\"uid\":{},\"allowed\":{}",
            json(api_version),
            json(uid),
            answer.allowed
        );
        if let Some(patch) = &answer.patch {
            out.push_str(",\"patchType\":\"JSONPatch\",\"patch\":");
            out.push_str(&json(
                &base64::engine::general_purpose::STANDARD.encode(patch),
            ));
        }
        if !answer.warnings.is_empty() {
            out.push_str(",\"warnings\":");
            out.push_str(&json(&answer.warnings));
        }
        if let Some(status) = &answer.status {
            out.push_str(",\"status\":");
            out.push_str(&serde_json::to_string(status).unwrap());
        }
        out.push_str("}}");
        out.into_bytes()
    }

    fn json<T: Serialize + ?Sized>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    fn awkward() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(
                    &["\"", "\\", "\n", "\u{1}", "\u{1f}", "/", "é", "\u{7f}"][..]
                )
                .prop_map(String::from),
                "[a-zA-Z0-9 ._-]{0,6}",
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        #[test]
        fn the_answer_is_byte_for_byte_what_serde_writes(
            uid in awkward(),
            warnings in proptest::collection::vec(awkward(), 0..3),
            patch in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
            message in proptest::option::of(awkward()),
            allowed in proptest::bool::ANY,
        ) {
            let answer = Answer {
                allowed,
                patch,
                warnings,
                status: message.map(|m| Status::failure(422, "Invalid", m)),
            };
            for version in [API_VERSION_V1, API_VERSION_V1BETA1] {
                proptest::prop_assert_eq!(
                    String::from_utf8(encode(version, &uid, &answer)).unwrap(),
                    String::from_utf8(encode_with_serde(version, &uid, &answer)).unwrap()
                );
            }
        }
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
