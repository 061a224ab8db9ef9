//! The `ScalingSubscription` custom resource (`konsumer.dev/v1alpha1`): an HTTP
//! receiver of the scaling events of the Consumers it selects, and how far it got.
//!
//! Every spec field is optional in Rust even where the webhook requires it: the
//! validator must read a broken object and say everything that is wrong with it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of konsumer's own resources.
pub const SUBSCRIPTION_GROUP: &str = "konsumer.dev";
pub const SUBSCRIPTION_VERSION: &str = "v1alpha1";

/// Condition types of a subscription.
pub const READY: &str = "Ready";
pub const FAILING: &str = "Failing";
pub const DISABLED: &str = "Disabled";

/// Where and how a subscriber receives scaling events.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "konsumer.dev",
    doc = "An HTTP receiver of the signed scaling events (CloudEvents) of the Consumers it selects",
    version = "v1alpha1",
    kind = "ScalingSubscription",
    plural = "scalingsubscriptions",
    singular = "scalingsubscription",
    shortname = "ssub",
    namespaced,
    status = "SubscriptionStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Failing","type":"string","jsonPath":".status.conditions[?(@.type==\"Failing\")].status"}"#,
    printcolumn = r#"{"name":"Disabled","type":"string","jsonPath":".status.conditions[?(@.type==\"Disabled\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Delivered","type":"integer","jsonPath":".status.delivered"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Absolute `https://` (or, to ranges allowed by `--egress-allow`, `http://`) URL
    /// the events are POSTed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub url: Option<String>,
    /// The Secret key (same namespace) holding the signing secrets (`whsec_…`,
    /// whitespace-separated: every one signs, for rotation without a gap).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required)]
    pub secret_ref: Option<SecretKeyRef>,
    /// A Secret key (same namespace, default key `ca.crt`) with a PEM CA bundle
    /// trusted in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// CloudEvents types to receive; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Which Consumers of the namespace(s) it sees; empty means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_selector: Option<LabelSelector>,
    /// Other namespaces to follow (by their labels). Only subscriptions in
    /// konsumer's own namespace may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// `structured` (default, `application/cloudevents+json`) or `binary`
    /// (`ce-*` headers, the data as the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_mode: Option<String>,
    /// Per-attempt timeout, 1s to 60s (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Failing`, `Disabled`, with reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Per Consumer (`namespace/name`): the last sequence the receiver
    /// acknowledged with a 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<LastAttempt>,
    /// The last failure (no secrets, no credentials from the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events acknowledged by the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<i64>,
    /// Attempts that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,
    /// While `Disabled` after 410 Gone: a hash of the spec it was disabled at.
    /// Delivery starts again when the spec differs, also if it was changed while
    /// konsumer was not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_spec_hash: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastAttempt {
    pub time: Time,
    /// The CloudEvents id.
    pub event_id: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// `namespace/name` of the Consumer.
    pub consumer: String,
    /// The HTTP status, when the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScalingSubscription {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}
