//! Integration tests: the real server in-process on loopback with real TLS (one
//! test binary, so the crate is linked once).

mod admission_edges;
mod consumer_fixtures;
mod crd;
mod delivery_crash;
mod delivery_kube;
mod delivery_local;
mod e2e_local;
mod e2e_reconcile;
mod fake_apiserver;
mod kube_mode;
mod prometheus_client;
mod prometheus_harness;
mod receiver;
mod reconciler_faults;
mod subscription_webhook;
mod support;
mod workload_fixtures;
