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
