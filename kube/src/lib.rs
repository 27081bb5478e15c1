//! `switchyard-kube`, the watcher sidecar: it watches a Kubernetes API
//! server for the objects Switchyard reads, hands every complete set of
//! them to the daemon over its control socket, and writes the statuses the
//! daemon answers with back to the cluster, one writer among the LB nodes,
//! elected with a Lease. It owns watching, completeness, debouncing, status
//! merging and the Lease; it must never resolve config itself (the daemon
//! resolves a cluster's objects with exactly the code a config file goes
//! through: one resolution path), and nothing else in the workspace may
//! depend on it (the appliance builds and runs without it).
//!
//! The kinds watched: GatewayClass, Gateway, TCPRoute, UDPRoute,
//! ReferenceGrant, Namespace, Service, EndpointSlice, Pod, ServiceImport,
//! and `switchyard.io` GatewayClassConfig, AddressPool, EndpointSelector
//! and TrafficPolicy (see `kinds`).

use std::time::Duration;

pub mod contents;
pub mod kinds;
pub mod lease;
pub mod sidecar;
pub mod status;
pub mod store;
pub mod watch;
pub mod writeback;

/// Longest a change waits for the changes after it before it is sent,
/// however steadily they keep coming.
pub const MAX_BATCH_DELAY: Duration = Duration::from_secs(1);
