//! Delivery of scaling events to ScalingSubscriptions (I/O shell): while this
//! replica leads (always in local mode), every (subscription, Consumer) pair is
//! brought from its cursor to the Consumer's journal head, strictly in order, a
//! bounded number of pairs at once, through konsumer's guarded connector. Cursors
//! and conditions go to the subscription's status (batched); a new leader or a
//! restarted process resumes from them.
//!
//! The library functions the HTTP API (issue 9) builds on are on [`Deliveries`]:
//! [`Deliveries::list`], [`Deliveries::get`], [`Deliveries::attempts`],
//! [`Deliveries::ping`], [`Deliveries::rewind`].

pub mod connector;
pub mod kube;
pub mod local;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::api::{JournalEntry, ScalingSubscription, SubscriptionStatus};

pub use connector::{Connector, EgressConfig};
pub use worker::{AttemptRecord, Deliveries, PingError, PingResult, RewindError, SubscriptionView};

/// Tunables of the delivery worker.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub egress: EgressConfig,
    /// (subscription, Consumer) pairs delivered at once.
    pub concurrency: usize,
    /// konsumer's own namespace (whose subscriptions may use `namespaceSelector`).
    pub konsumer_namespace: String,
    /// Continuous failure after which a subscription is `Failing`.
    pub failing_after: Duration,
    /// Consecutive failed attempts after which a subscription is `Failing`.
    pub failing_attempts: u32,
    /// Status writes (cursors, conditions) are batched to at most one per this.
    pub flush_every: Duration,
    /// Rescan of subscriptions and journals when nothing woke the worker.
    pub tick: Duration,
    /// Delivery attempts remembered per subscription (newest first).
    pub attempts_kept: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            egress: EgressConfig::default(),
            concurrency: 32,
            konsumer_namespace: "default".into(),
            failing_after: Duration::from_secs(60),
            failing_attempts: 3,
            flush_every: Duration::from_secs(1),
            tick: Duration::from_secs(1),
            attempts_kept: 50,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] ::kube::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// A Secret key's value, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretValue {
    Found(String),
    /// No such Secret, or no such key in it.
    Missing(String),
    /// konsumer may not read it (403).
    Forbidden(String),
}

/// Where subscriptions, their Secrets and their status live (kube or local).
#[async_trait]
pub trait SubscriptionSource: Send + Sync + 'static {
    /// Every subscription konsumer serves, with its stored status.
    async fn subscriptions(&self) -> Result<Vec<Arc<ScalingSubscription>>, SourceError>;
    /// A key of a Secret in `namespace`.
    async fn secret(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<SecretValue, SourceError>;
    /// The labels of a namespace (for `namespaceSelector`), `None` when unknown.
    async fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// Records a subscription's status.
    async fn write_status(
        &self,
        sub: &ScalingSubscription,
        status: &SubscriptionStatus,
    ) -> Result<(), SourceError>;
    /// Tells the owner of the subscription something went wrong (kube: a Warning
    /// Event on it).
    async fn warn(&self, _sub: &ScalingSubscription, _reason: &str, _message: &str) {}
    /// A Consumer's whole journal, when the cached Consumers hold only its
    /// recent entries (local mode); `None`: the cache holds it all.
    async fn journal(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<Vec<JournalEntry>>, SourceError> {
        Ok(None)
    }
}

/// A URL as it may be shown: without credentials, query or fragment.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => {
            // Not a URL: still never show what looks like credentials.
            match url.split_once('@') {
                Some((_, host)) => format!("…@{host}"),
                None => url.to_string(),
            }
        }
    }
}

/// The current time; tests inject a fake clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example.com/x?token=abc#frag"),
            "https://hooks.example.com/x?…"
        );
        assert_eq!(redact_url("ftp//user:pw@host"), "…@host");
        assert_eq!(redact_url("https://h.example/x"), "https://h.example/x");
    }
}
