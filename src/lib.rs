//! konsumer: partition assignment and right-sized resources for partitioned Kafka
//! consumers on Kubernetes, a compatible successor to Konsumerator.
//!
//! - [`api`]: the Consumer API (Konsumerator's, compatible) and its CRD.
//! - [`inject`]: pure — what a labelled Pod or Deployment gets, as a JSON Patch.
//! - [`admission`]: the webhook handlers around the pure core.
//! - [`manage`]: pure — the Deployments konsumer manages and the writes that keep them in line.
//! - [`notice`]: pure — the Kubernetes Events konsumer records, written for people.
//! - [`store`]: where Consumers come from and status goes (local files or Kubernetes).
//! - [`server`]: listeners, TLS, admin endpoints, one shutdown signal.
//! - [`manifest`]: reading the YAML a user hands konsumer, within limits.
//! - [`cli`]: the `konsumer` command line.
//! - `allocator`: jemalloc, with buffers of a few pages kept in place across shrink and growth.

pub mod admission;
#[cfg(not(target_env = "msvc"))]
pub mod allocator;
pub mod api;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod http_api;
pub mod inject;
pub mod manage;
pub mod manifest;
pub mod notice;
pub mod reconciler;
pub mod scaling;
pub mod scaling_events;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod validation;
