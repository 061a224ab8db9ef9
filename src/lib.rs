//! konsumer: partition assignment and right-sized resources for partitioned Kafka
//! consumers on Kubernetes, a compatible successor to Konsumerator.

pub mod api;
pub mod inject;
