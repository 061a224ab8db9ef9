//! Managed Deployments (pure), Konsumerator's job done konsumer's way: one
//! Deployment per instance, named `<spec.name>-<n>`, built from
//! `deploymentTemplate` with the very injection the webhook gives; compared with
//! what runs; and the writes that bring them in line: creations, metadata fixes,
//! rollouts one instance of a Consumer at a time, removals of extra instances.
//! Paused Deployments and Deployments konsumer does not own are left alone.
//!
//! The Deployment manager (`reconciler::deployments`) lists, writes and deletes;
//! everything it decides comes from here.

pub mod compare;
pub mod decide;
pub mod desired;
pub mod live;
pub mod memo;
pub mod pace;
pub mod policy;
pub mod seed;
pub mod status;

pub use decide::{Change, Decision, InFlight, Kept, Removal, Write, decide};
pub use desired::{Owner, Recipe};
pub use pace::Pace;
pub use policy::Management;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::ContainerResources;

/// What konsumer wrote to a managed Deployment, as a typed record: the source of
/// the `dev.konsumer.instance.applied.v1` event once the event journal lands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// `namespace/name` of the Consumer.
    pub consumer: String,
    pub instance: u32,
    pub partitions: Vec<u32>,
    pub deployment: String,
    pub change: Change,
    /// Resources of the containers konsumer sizes, before and after.
    pub previous: Vec<ContainerResources>,
    pub new: Vec<ContainerResources>,
    /// What differed (field paths with their new value), for people.
    pub changes: Vec<String>,
    pub at: Timestamp,
}

impl Applied {
    pub fn new(consumer: String, write: &Write, at: Timestamp) -> Self {
        Applied {
            consumer,
            instance: write.instance,
            partitions: write.partitions.clone(),
            deployment: write.name.clone(),
            change: write.change,
            previous: write.from.clone(),
            new: write.to.clone(),
            changes: write.changes.clone(),
            at,
        }
    }
}
