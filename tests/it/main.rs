//! Integration tests: the real server in-process on loopback with real TLS (one
//! test binary, so the crate is linked once).

mod admission_edges;
mod consumer_fixtures;
mod crd;
mod e2e_local;
mod e2e_reconcile;
mod fake_apiserver;
mod guest_mode;
mod kube_mode;
mod managed_kube;
mod managed_local;
mod prometheus_client;
mod prometheus_harness;
mod reconciler_faults;
mod support;
mod workload_fixtures;
