//! Hand-written schema pieces the derive cannot express.

use schemars::{Schema, SchemaGenerator, json_schema};

/// `deploymentTemplate`: an object the apiserver keeps as is (no 7,600-line
/// embedded DeploymentSpec schema).
pub(crate) fn opaque_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "An apps/v1 DeploymentSpec. Kept opaque; konsumer reads only container names.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A Kubernetes quantity (`500m`, `2`, `128Mi`). No pattern: malformed values are
/// explained by konsumer's validating webhook, in words rather than a regex.
pub(crate) fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true })
}

pub(crate) fn optional_quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true, "nullable": true })
}

/// `cpu`/`memory` → quantity (`corev1.ResourceList`).
pub(crate) fn resource_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": { "x-kubernetes-int-or-string": true }
    })
}

/// A journal entry's event data: kept as written (its shape is the CloudEvents
/// contract documented in the README, not a stored API).
pub(crate) fn opaque_data(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
