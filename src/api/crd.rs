//! The CustomResourceDefinition, generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{Consumer, VERSION_V1ALPHA1};

/// The Consumer CRD: `v1` served and stored, `v1alpha1` served with the same schema
/// and marked deprecated.
pub fn consumer_crd() -> CustomResourceDefinition {
    let mut crd = Consumer::crd();
    if let Some(v1) = crd.spec.versions.first().cloned() {
        let mut alpha = v1;
        alpha.name = VERSION_V1ALPHA1.to_string();
        alpha.storage = false;
        alpha.deprecated = Some(true);
        alpha.deprecation_warning = Some(crate::validation::rules::V1ALPHA1_DEPRECATED.to_string());
        crd.spec.versions.push(alpha);
    }
    crd
}

/// The CRD as YAML, as committed under `manifests/`.
pub fn consumer_crd_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(&consumer_crd())
}

/// The ScalingSubscription CRD (`konsumer.dev/v1alpha1`).
pub fn subscription_crd() -> CustomResourceDefinition {
    super::ScalingSubscription::crd()
}

/// The ScalingSubscription CRD as YAML, as committed under `manifests/`.
pub fn subscription_crd_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(&subscription_crd())
}

/// Every CRD konsumer serves, as one multi-document YAML (`konsumer crd`).
pub fn all_crds_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    Ok(format!(
        "{}---\n{}",
        consumer_crd_yaml()?,
        subscription_crd_yaml()?
    ))
}
