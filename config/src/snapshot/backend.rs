//! What a listener's traffic goes to: endpoints, the backendRefs (groups)
//! that name them, and backends, the endpoints flattened over groups with
//! their effective weights. These are plain values; the invariants that tie
//! backends to groups and slots to backends are `Listener`'s, so nothing
//! here can be wrong on its own and nothing here knows a listener.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::health::HealthCheck;

/// An address:port a backend serves on, as the dataplane rewrites to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

impl HealthCheck {
    /// Where the probe of `endpoint` goes: its address, the check's port.
    pub fn target(&self, endpoint: Endpoint) -> Endpoint {
        Endpoint {
            address: endpoint.address,
            port: self.port.unwrap_or(endpoint.port),
        }
    }
}

/// One backendRef of the route attached to a listener, with its ready
/// endpoints. A group with no endpoints keeps its weighted share of the
/// slot table: traffic hashed there is refused, as the Gateway API asks of
/// an invalid backendRef, instead of silently shifting to the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendGroup {
    /// `namespace/name` of the referenced Service.
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
    /// Every endpoint is serving but terminating (none is ready), used as
    /// kube-proxy does so connections drain instead of failing. Per
    /// endpoint: `Snapshot::is_terminating`.
    pub terminating: bool,
    /// Serving but terminating endpoints beside ready ones: backends of
    /// weight 0, so they take no new flow and their established flows
    /// continue until they end, as kube-proxy keeps a terminating
    /// endpoint's connections (a Pod being deleted still answers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<Endpoint>,
    /// How the endpoints are probed (a TrafficPolicy's `healthCheck`);
    /// `None`: they are not, and serve as the config says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Arc<HealthCheck>>,
}

/// A backend endpoint as the dataplane sees it: flattened over groups,
/// deduplicated per listener, in a stable order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Backend {
    pub endpoint: Endpoint,
    /// Index into `Listener::groups`.
    pub group: u32,
    /// The group's weight spread over its endpoints.
    pub effective_weight: f64,
}

/// The backends of a listener whose route has `groups`: each group's
/// weight spread evenly over its endpoints. An endpoint listed by several
/// groups is one backend (the dataplane rewrites to an endpoint, not to a
/// group) whose weight is the sum of its shares, so traffic still splits as
/// the weights say; it is attributed to the first group that lists it.
pub(crate) fn flatten(groups: &[BackendGroup]) -> Vec<Backend> {
    let mut by_endpoint: BTreeMap<Endpoint, (u32, f64)> = BTreeMap::new();
    for (index, group) in groups.iter().enumerate() {
        if group.endpoints.is_empty() {
            continue;
        }
        let share = f64::from(group.weight) / group.endpoints.len() as f64;
        for endpoint in &group.endpoints {
            by_endpoint
                .entry(*endpoint)
                .or_insert((index as u32, 0.0))
                .1 += share;
        }
    }
    for (index, group) in groups.iter().enumerate() {
        for endpoint in &group.draining {
            by_endpoint.entry(*endpoint).or_insert((index as u32, 0.0));
        }
    }
    by_endpoint
        .into_iter()
        .map(|(endpoint, (group, effective_weight))| Backend {
            endpoint,
            group,
            effective_weight,
        })
        .collect()
}
