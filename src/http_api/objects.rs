//! Where the api reads and writes ScalingSubscriptions and the Secrets it makes
//! for them: the Kubernetes API (kube mode), or the embedded store beside the
//! user's files (local mode).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::api::ScalingSubscription;
use crate::api::subscription::{SUBSCRIPTION_GROUP, SUBSCRIPTION_VERSION};
use crate::delivery::SubscriptionSource;
use crate::delivery::local::LocalSubscriptions;

/// Why an object could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// konsumer itself lacks the permission (its RBAC).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
}

/// ScalingSubscriptions and their API-made Secrets.
#[async_trait]
pub trait Objects: Send + Sync + 'static {
    /// The subscriptions of `namespace`, sorted by name.
    async fn list(&self, namespace: &str) -> Result<Vec<ScalingSubscription>, ObjectError>;
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ScalingSubscription>, ObjectError>;
    /// Creates `sub` and the Secret of its `spec.secretRef` holding `secret`.
    async fn create(
        &self,
        sub: ScalingSubscription,
        secret: &str,
    ) -> Result<ScalingSubscription, ObjectError>;
    /// Replaces the spec (and labels, annotations) of an existing subscription;
    /// a `metadata.resourceVersion` in `sub` must match the stored one.
    async fn replace(&self, sub: ScalingSubscription) -> Result<ScalingSubscription, ObjectError>;
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ObjectError>;
    /// The secrets (whitespace-separated) of the Secret the api made for `sub`;
    /// `None` when its Secret is not one the api made (it is its owner's to edit).
    async fn owned_secret(&self, sub: &ScalingSubscription) -> Result<Option<String>, ObjectError>;
    /// Rewrites the Secret the api made for `sub`.
    async fn write_secret(&self, sub: &ScalingSubscription, value: &str)
    -> Result<(), ObjectError>;
}

fn secret_ref(sub: &ScalingSubscription) -> (String, String) {
    let r = sub.spec.secret_ref.clone().unwrap_or_default();
    (
        r.name.unwrap_or_default(),
        r.key.unwrap_or_else(|| "secret".into()),
    )
}

fn ns_of(sub: &ScalingSubscription) -> String {
    sub.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

fn name_of(sub: &ScalingSubscription) -> String {
    sub.metadata.name.clone().unwrap_or_default()
}

/// Local mode: objects in the embedded store; the files in DIR are read only.
pub struct LocalObjects {
    pub subs: Arc<LocalSubscriptions>,
    /// Serializes writes (resourceVersion checks then writes).
    lock: tokio::sync::Mutex<()>,
}

impl LocalObjects {
    pub fn new(subs: Arc<LocalSubscriptions>) -> Self {
        LocalObjects {
            subs,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn file_conflict(key: &str) -> ObjectError {
        ObjectError::Conflict(format!(
            "ScalingSubscription {key} is defined in a file of the local directory; edit the file (the api changes only what it made)"
        ))
    }
}

fn source_error(e: crate::delivery::SourceError) -> ObjectError {
    ObjectError::Unavailable(format!("the local store failed: {e}"))
}

fn next_version(v: Option<&str>) -> String {
    let n: u64 = v.and_then(|v| v.parse().ok()).unwrap_or(0);
    (n + 1).to_string()
}

#[async_trait]
impl Objects for LocalObjects {
    async fn list(&self, namespace: &str) -> Result<Vec<ScalingSubscription>, ObjectError> {
        let mut out: Vec<ScalingSubscription> = self
            .subs
            .subscriptions()
            .await
            .map_err(source_error)?
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .map(|s| (**s).clone())
            .collect();
        out.sort_by_key(name_of);
        Ok(out)
    }

    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ScalingSubscription>, ObjectError> {
        let key = format!("{namespace}/{name}");
        Ok(self
            .subs
            .subscriptions()
            .await
            .map_err(source_error)?
            .iter()
            .find(|s| s.key() == key)
            .map(|s| (**s).clone()))
    }

    async fn create(
        &self,
        mut sub: ScalingSubscription,
        secret: &str,
    ) -> Result<ScalingSubscription, ObjectError> {
        let _write = self.lock.lock().await;
        let key = sub.key();
        if self.get(&ns_of(&sub), &name_of(&sub)).await?.is_some() {
            return Err(ObjectError::Conflict(format!(
                "ScalingSubscription {key} already exists"
            )));
        }
        let (secret_name, secret_key) = secret_ref(&sub);
        let secret_full = format!("{}/{secret_name}", ns_of(&sub));
        if self
            .subs
            .secret_exists(&secret_full)
            .await
            .map_err(source_error)?
        {
            return Err(ObjectError::Conflict(format!(
                "Secret {secret_full} already exists; name another one in spec.secretRef.name, or leave it out"
            )));
        }
        sub.metadata.uid = Some(new_uid());
        sub.metadata.generation = Some(1);
        sub.metadata.resource_version = Some("1".into());
        sub.metadata.creation_timestamp = Some(Time(jiff::Timestamp::now()));
        sub.status = None;
        self.subs
            .put_api_secret(
                &secret_full,
                &BTreeMap::from([(secret_key, secret.to_string())]),
            )
            .await
            .map_err(source_error)?;
        self.subs
            .put_api_subscription(&sub)
            .await
            .map_err(source_error)?;
        Ok(sub)
    }

    async fn replace(&self, sub: ScalingSubscription) -> Result<ScalingSubscription, ObjectError> {
        let _write = self.lock.lock().await;
        let key = sub.key();
        let Some(current) = self.get(&ns_of(&sub), &name_of(&sub)).await? else {
            return Err(ObjectError::NotFound(format!(
                "ScalingSubscription {key} not found"
            )));
        };
        if !self
            .subs
            .is_api_subscription(&key)
            .await
            .map_err(source_error)?
            || self.subs.defined_in_file(&key)
        {
            return Err(Self::file_conflict(&key));
        }
        check_version(&sub, &current)?;
        let mut next = current.clone();
        if next.spec != sub.spec {
            next.metadata.generation = Some(next.metadata.generation.unwrap_or(1) + 1);
        }
        next.spec = sub.spec;
        next.metadata.labels = sub.metadata.labels;
        next.metadata.annotations = sub.metadata.annotations;
        next.metadata.resource_version =
            Some(next_version(current.metadata.resource_version.as_deref()));
        let status = next.status.take();
        self.subs
            .put_api_subscription(&next)
            .await
            .map_err(source_error)?;
        next.status = status;
        Ok(next)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ObjectError> {
        let _write = self.lock.lock().await;
        let key = format!("{namespace}/{name}");
        if self.subs.defined_in_file(&key) {
            return Err(Self::file_conflict(&key));
        }
        if self
            .subs
            .delete_api_subscription(&key)
            .await
            .map_err(source_error)?
        {
            Ok(())
        } else {
            Err(ObjectError::NotFound(format!(
                "ScalingSubscription {key} not found"
            )))
        }
    }

    async fn owned_secret(&self, sub: &ScalingSubscription) -> Result<Option<String>, ObjectError> {
        let key = sub.key();
        if self.subs.defined_in_file(&key)
            || !self
                .subs
                .is_api_subscription(&key)
                .await
                .map_err(source_error)?
        {
            return Ok(None);
        }
        let (secret_name, secret_key) = secret_ref(sub);
        let values = self
            .subs
            .api_secret(&format!("{}/{secret_name}", ns_of(sub)))
            .await
            .map_err(source_error)?;
        Ok(values.and_then(|v| v.get(&secret_key).cloned()))
    }

    async fn write_secret(
        &self,
        sub: &ScalingSubscription,
        value: &str,
    ) -> Result<(), ObjectError> {
        let (secret_name, secret_key) = secret_ref(sub);
        let full = format!("{}/{secret_name}", ns_of(sub));
        let mut values = self
            .subs
            .api_secret(&full)
            .await
            .map_err(source_error)?
            .unwrap_or_default();
        values.insert(secret_key, value.to_string());
        self.subs
            .put_api_secret(&full, &values)
            .await
            .map_err(source_error)
    }
}

fn check_version(
    sub: &ScalingSubscription,
    current: &ScalingSubscription,
) -> Result<(), ObjectError> {
    match (
        sub.metadata.resource_version.as_deref(),
        current.metadata.resource_version.as_deref(),
    ) {
        (Some(asked), Some(now)) if asked != now => Err(ObjectError::Conflict(format!(
            "ScalingSubscription {} was changed since resourceVersion {asked} (it is at {now}); GET it again and re-apply your change",
            sub.key()
        ))),
        _ => Ok(()),
    }
}

/// A random RFC 4122 version 4 uid.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    super::secrets::fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Kube mode: ScalingSubscriptions and Secrets through the Kubernetes API, as
/// konsumer's ServiceAccount.
pub struct KubeObjects {
    pub client: kube::Client,
}

fn kube_error(what: &str, e: kube::Error) -> ObjectError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => ObjectError::NotFound(format!("{what} not found")),
        kube::Error::Api(s) if s.code == 409 => {
            ObjectError::Conflict(format!("{what}: {}", s.message))
        }
        kube::Error::Api(s) if s.code == 403 && what.starts_with("Secret ") => {
            let ns = what
                .trim_start_matches("Secret ")
                .split('/')
                .next()
                .unwrap_or_default();
            ObjectError::Forbidden(format!(
                "konsumer's own ServiceAccount may not write {what} ({}); an operator must bind konsumer's ClusterRole konsumer-secret-writer in namespace {ns:?} (RBAC, manifests/base/rbac.yaml)",
                s.message
            ))
        }
        kube::Error::Api(s) if s.code == 403 => ObjectError::Forbidden(format!(
            "konsumer's own ServiceAccount may not change {what} ({}); its RBAC (manifests/base/rbac.yaml) needs fixing",
            s.message
        )),
        kube::Error::Api(s) if s.code == 422 => ObjectError::Conflict(format!(
            "{what} was refused by the Kubernetes API: {}",
            s.message
        )),
        _ => ObjectError::Unavailable(format!("the Kubernetes API failed on {what}: {e}")),
    }
}

impl KubeObjects {
    fn subs(&self, namespace: &str) -> kube::Api<ScalingSubscription> {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    fn secrets(&self, namespace: &str) -> kube::Api<Secret> {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    /// The Secret of `sub`'s secretRef when `sub` owns it.
    async fn owned(&self, sub: &ScalingSubscription) -> Result<Option<Secret>, ObjectError> {
        let (name, _) = secret_ref(sub);
        let what = format!("Secret {}/{name}", ns_of(sub));
        let secret = match self.secrets(&ns_of(sub)).get_opt(&name).await {
            Ok(s) => s,
            Err(e) => return Err(kube_error(&what, e)),
        };
        let uid = sub.metadata.uid.as_deref();
        Ok(secret.filter(|s| {
            s.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ScalingSubscription" && Some(o.uid.as_str()) == uid)
        }))
    }
}

#[async_trait]
impl Objects for KubeObjects {
    async fn list(&self, namespace: &str) -> Result<Vec<ScalingSubscription>, ObjectError> {
        let list = self
            .subs(namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error(&format!("ScalingSubscriptions in {namespace}"), e))?;
        let mut items = list.items;
        items.sort_by_key(name_of);
        Ok(items)
    }

    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ScalingSubscription>, ObjectError> {
        self.subs(namespace)
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&format!("ScalingSubscription {namespace}/{name}"), e))
    }

    async fn create(
        &self,
        mut sub: ScalingSubscription,
        secret: &str,
    ) -> Result<ScalingSubscription, ObjectError> {
        let ns = ns_of(&sub);
        let key = sub.key();
        sub.status = None;
        let created = self
            .subs(&ns)
            .create(&PostParams::default(), &sub)
            .await
            .map_err(|e| kube_error(&format!("ScalingSubscription {key}"), e))?;
        let (secret_name, secret_key) = secret_ref(&created);
        let owned = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "konsumer".to_string(),
                )])),
                owner_references: Some(vec![OwnerReference {
                    api_version: format!("{SUBSCRIPTION_GROUP}/{SUBSCRIPTION_VERSION}"),
                    kind: "ScalingSubscription".into(),
                    name: name_of(&created),
                    uid: created.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                secret_key,
                ByteString(secret.as_bytes().to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        if let Err(e) = self
            .secrets(&ns)
            .create(&PostParams::default(), &owned)
            .await
        {
            // No subscription without its Secret: undo the create.
            let _ = self
                .subs(&ns)
                .delete(&name_of(&created), &DeleteParams::default())
                .await;
            return Err(kube_error(&format!("Secret {ns}/{secret_name}"), e));
        }
        Ok(created)
    }

    async fn replace(&self, sub: ScalingSubscription) -> Result<ScalingSubscription, ObjectError> {
        let ns = ns_of(&sub);
        let name = name_of(&sub);
        let key = sub.key();
        let Some(current) = self.get(&ns, &name).await? else {
            return Err(ObjectError::NotFound(format!(
                "ScalingSubscription {key} not found"
            )));
        };
        check_version(&sub, &current)?;
        let mut next = current.clone();
        next.spec = sub.spec;
        next.metadata.labels = sub.metadata.labels;
        next.metadata.annotations = sub.metadata.annotations;
        next.metadata.managed_fields = None;
        let status = current.status.clone();
        let mut replaced = self
            .subs(&ns)
            .replace(&name, &PostParams::default(), &next)
            .await
            .map_err(|e| kube_error(&format!("ScalingSubscription {key}"), e))?;
        if replaced.status.is_none() {
            replaced.status = status;
        }
        Ok(replaced)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ObjectError> {
        // The Secret the api made goes with it (the garbage collector follows its
        // owner reference).
        self.subs(namespace)
            .delete(name, &DeleteParams::background())
            .await
            .map(|_| ())
            .map_err(|e| kube_error(&format!("ScalingSubscription {namespace}/{name}"), e))
    }

    async fn owned_secret(&self, sub: &ScalingSubscription) -> Result<Option<String>, ObjectError> {
        let (_, key) = secret_ref(sub);
        Ok(self.owned(sub).await?.and_then(|s| {
            s.data
                .and_then(|d| d.get(&key).cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        }))
    }

    async fn write_secret(
        &self,
        sub: &ScalingSubscription,
        value: &str,
    ) -> Result<(), ObjectError> {
        let (name, key) = secret_ref(sub);
        let ns = ns_of(sub);
        let Some(mut secret) = self.owned(sub).await? else {
            return Err(ObjectError::Conflict(format!(
                "Secret {ns}/{name} was not made by the api for this subscription; rotate it yourself"
            )));
        };
        secret.metadata.managed_fields = None;
        secret
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert(key, ByteString(value.as_bytes().to_vec()));
        self.secrets(&ns)
            .replace(&name, &PostParams::default(), &secret)
            .await
            .map(|_| ())
            .map_err(|e| kube_error(&format!("Secret {ns}/{name}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_version_4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }
}
