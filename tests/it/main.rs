//! Integration tests: the real server in-process on loopback with real TLS (one
//! test binary, so the crate is linked once).

mod admission_edges;
mod consumer_fixtures;
mod crd;
mod dashboard;
mod delivery_binary;
mod delivery_crash;
mod delivery_kube;
mod delivery_local;
mod denials;
mod e2e_local;
mod e2e_reconcile;
mod fake_apiserver;
mod fresh_machine;
mod guest_mode;
mod hostile;
mod http_api;
mod http_api_kube;
mod image;
mod kube_mode;
mod largest_consumer;
mod managed_kube;
mod managed_local;
mod manifests;
mod otlp;
mod prometheus_client;
mod prometheus_harness;
mod rbac;
mod receiver;
mod reconciler_faults;
mod store_faults;
mod subscription_webhook;
mod support;
mod tls_rotation;
mod workload_fixtures;
