//! Scaling events for external subscribers (pure): what an event is (its type,
//! data and deterministic id), its CloudEvents form, its Standard Webhooks
//! signature, the per-Consumer journal and the cursor arithmetic over it, the
//! retry schedule, and which addresses a subscriber URL may reach.
//!
//! Named `scaling_events` so that nobody confuses these with Kubernetes Events
//! (`reconciler::events`). The delivery worker (`delivery`) is the I/O shell.
//!
//! Adding an event type from another source (a managed Deployment rolled to a new
//! recommendation, say): add the variant to [`EventType`], build a
//! [`journal::NewEvent`] where the decision is made, and append it with
//! [`journal::append`] to the status written in the same write.

pub mod backoff;
pub mod cloudevent;
pub mod egress;
pub mod journal;
pub mod selection;
pub mod signing;
pub mod types;

pub use cloudevent::{CloudEvent, ConsumerRef};
pub use types::EventType;
