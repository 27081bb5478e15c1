//! Protocol shapes of `yardctl listeners`, `backends`, `flows` with a
//! filter, and `drain`/`undrain`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::FlowInfo;

/// `yardctl listeners`: one row per VIP (or node address) a listener is
/// served on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenersReport {
    /// Generation of the snapshot described.
    pub generation: u64,
    pub listeners: Vec<ListenerInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// `namespace/gateway/listener`.
    pub listener: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// `address:port` packets arrive on.
    pub vip: String,
    /// The Gateway listener's own port; differs from the VIP's for a node
    /// port.
    pub listener_port: u16,
    /// `namespace/name` of the route served; empty when none is attached.
    pub route: String,
    pub backends: usize,
    /// Entries in the Maglev table.
    pub table_size: usize,
    /// ClientIP session affinity timeout; null without affinity.
    pub affinity_timeout_secs: Option<u32>,
    /// Client-to-backend flows the workers track for this VIP.
    pub active_flows: u64,
    /// Forwarding mode: `nat`, `fullnat`, `dsr`, `ipip` or `gue`.
    #[serde(default)]
    pub mode: String,
}

/// `yardctl backends`: every backend of every listener (or of one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendsReport {
    pub generation: u64,
    pub backends: Vec<BackendInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub listener: String,
    /// The listener's `address:port`.
    pub vip: String,
    /// `address:port` of the endpoint.
    pub backend: String,
    /// `namespace/name` of the backendRef (Service) it came from.
    pub service: String,
    pub group_weight: u32,
    /// The backendRef's weight spread over its serving endpoints.
    pub effective_weight: f64,
    /// `ready`; `terminating` (the endpoint is being deleted but serving:
    /// it keeps its slots and takes new flows until it is removed); or
    /// `draining` (drained by `yardctl drain`, or weight 0): no new flows,
    /// established ones continue.
    pub state: String,
    /// Maglev slots it owns.
    pub slots: usize,
    pub active_flows: u64,
    /// The endpoint's health as its active health check decides it:
    /// `unknown` (not probed to a verdict yet; serves), `healthy`,
    /// `unhealthy` or `flapping`; absent when no check applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The check, e.g. `HTTP GET /healthz on port 8081 every 1s (demo/web-health)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// Why the health last changed, e.g. `3 probes failed in a row: connect:
    /// Connection refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Seconds since the health last changed; absent while it never has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_changed_secs: Option<f64>,
    /// The last probe: `pass: HTTP 200` or `fail: connect: Connection refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// The last probe's latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency_ms: Option<f64>,
}

/// Backend states as `BackendInfo::state` spells them.
pub const STATE_READY: &str = "ready";
pub const STATE_DRAINING: &str = "draining";
pub const STATE_TERMINATING: &str = "terminating";
/// Taken out by its health check: no new flows, established ones continue.
pub const STATE_UNHEALTHY: &str = "unhealthy";
/// Failing its health check, but so is every endpoint of its backendRef,
/// whose check says to serve them all then (`whenAllUnhealthy: FailOpen`).
pub const STATE_FAIL_OPEN: &str = "fail-open";

/// `yardctl flows` with filters: applied by the daemon, so a big flow
/// table does not cross the socket whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowQuery {
    /// `namespace/gateway/listener`.
    pub listener: Option<String>,
    /// Client address within this CIDR (`198.18.1.0/24`, or one address).
    pub client: Option<String>,
    /// Backend `address:port`.
    pub backend: Option<String>,
    pub sort: Option<FlowSort>,
    /// At most this many flows, after sorting.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowSort {
    /// Most bytes first.
    Bytes,
    /// Most packets first.
    Packets,
    /// Oldest first.
    Age,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("invalid --client {0:?}: expected an address or CIDR such as 198.18.1.0/24")]
    Client(String),
    #[error("invalid --backend {0:?}: expected address:port such as 198.18.2.21:8080")]
    Backend(String),
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Self {
            network,
            prefix_len,
        })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A `FlowQuery` with its arguments parsed.
#[derive(Debug, Clone)]
pub struct FlowFilter {
    listener: Option<String>,
    client: Option<Cidr>,
    backend: Option<std::net::SocketAddr>,
    sort: Option<FlowSort>,
    limit: Option<usize>,
}

impl FlowFilter {
    pub fn new(query: &FlowQuery) -> Result<Self, QueryError> {
        let client = query
            .client
            .as_deref()
            .map(|c| Cidr::parse(c).ok_or_else(|| QueryError::Client(c.to_owned())))
            .transpose()?;
        let backend = query
            .backend
            .as_deref()
            .map(|b| b.parse().map_err(|_| QueryError::Backend(b.to_owned())))
            .transpose()?;
        Ok(Self {
            listener: query.listener.clone(),
            client,
            backend,
            sort: query.sort,
            limit: query.limit,
        })
    }

    pub fn matches(&self, flow: &FlowInfo) -> bool {
        if let Some(listener) = &self.listener {
            if flow.listener != *listener {
                return false;
            }
        }
        if let Some(cidr) = &self.client {
            match flow.client.parse::<std::net::SocketAddr>() {
                Ok(client) if cidr.contains(client.ip()) => {}
                _ => return false,
            }
        }
        if let Some(backend) = &self.backend {
            if flow.backend.parse::<std::net::SocketAddr>().ok() != Some(*backend) {
                return false;
            }
        }
        true
    }

    /// The matching flows, sorted and cut to the limit. Without a sort the
    /// order of `flows` is kept.
    pub fn apply(&self, flows: Vec<FlowInfo>) -> Vec<FlowInfo> {
        let mut flows: Vec<FlowInfo> = flows.into_iter().filter(|f| self.matches(f)).collect();
        match self.sort {
            Some(FlowSort::Bytes) => flows.sort_by_key(|f| std::cmp::Reverse(f.bytes)),
            Some(FlowSort::Packets) => flows.sort_by_key(|f| std::cmp::Reverse(f.packets)),
            Some(FlowSort::Age) => flows.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs)),
            None => {}
        }
        if let Some(limit) = self.limit {
            flows.truncate(limit);
        }
        flows
    }
}

/// What `yardctl drain` or `undrain` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// `address:port`.
    pub backend: String,
    /// Listeners whose backend it is.
    pub listeners: Vec<String>,
    /// True after a drain, false after an undrain.
    pub drained: bool,
    /// Generation of the snapshot that carries the change (the running one
    /// when there was none).
    pub generation: u64,
    /// False when the backend was already drained there: nothing changed
    /// and no generation was published.
    #[serde(default = "changed_by_default")]
    pub changed: bool,
}

/// Reports from daemons that predate `changed` always changed something.
fn changed_by_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(client: &str, backend: &str, listener: &str, bytes: u64, age: f64) -> FlowInfo {
        FlowInfo {
            protocol: "TCP".into(),
            client: client.into(),
            vip: "198.18.100.10:80".into(),
            backend: backend.into(),
            listener: listener.into(),
            packets: bytes / 100,
            bytes,
            age_secs: age,
            ..FlowInfo::default()
        }
    }

    fn flows() -> Vec<FlowInfo> {
        vec![
            flow(
                "198.18.1.10:40000",
                "198.18.2.21:8080",
                "demo/edge/web",
                500,
                1.0,
            ),
            flow(
                "198.18.1.11:40000",
                "198.18.2.22:8080",
                "demo/edge/web",
                900,
                3.0,
            ),
            flow(
                "198.18.9.10:40000",
                "198.18.2.21:8080",
                "demo/edge/dns",
                100,
                2.0,
            ),
        ]
    }

    fn run(query: FlowQuery) -> Vec<String> {
        FlowFilter::new(&query)
            .unwrap()
            .apply(flows())
            .into_iter()
            .map(|f| f.client)
            .collect()
    }

    #[test]
    fn cidr_contains_only_addresses_under_its_prefix() {
        let cidr = Cidr::parse("198.18.1.0/24").unwrap();
        assert!(cidr.contains("198.18.1.200".parse().unwrap()));
        assert!(!cidr.contains("198.18.2.1".parse().unwrap()));
        assert!(!cidr.contains("::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one = Cidr::parse("198.18.1.10").unwrap();
        assert!(one.contains("198.18.1.10".parse().unwrap()));
        assert!(!one.contains("198.18.1.11".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        for bad in ["198.18.1.0/33", "198.18.1/24", "x", "198.18.1.0/", "::/129"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_filter_keeps_only_matching_flows() {
        assert_eq!(run(FlowQuery::default()).len(), 3);
        assert_eq!(
            run(FlowQuery {
                listener: Some("demo/edge/dns".into()),
                ..FlowQuery::default()
            }),
            ["198.18.9.10:40000"]
        );
        assert_eq!(
            run(FlowQuery {
                client: Some("198.18.1.0/24".into()),
                ..FlowQuery::default()
            }),
            ["198.18.1.10:40000", "198.18.1.11:40000"]
        );
        assert_eq!(
            run(FlowQuery {
                backend: Some("198.18.2.21:8080".into()),
                client: Some("198.18.1.0/24".into()),
                ..FlowQuery::default()
            }),
            ["198.18.1.10:40000"]
        );
    }

    #[test]
    fn sorts_put_the_largest_or_oldest_first_and_the_limit_cuts_after_sorting() {
        let sorted = |sort| {
            run(FlowQuery {
                sort: Some(sort),
                limit: Some(2),
                ..FlowQuery::default()
            })
        };
        assert_eq!(
            sorted(FlowSort::Bytes),
            ["198.18.1.11:40000", "198.18.1.10:40000"]
        );
        assert_eq!(
            sorted(FlowSort::Packets),
            ["198.18.1.11:40000", "198.18.1.10:40000"]
        );
        assert_eq!(
            sorted(FlowSort::Age),
            ["198.18.1.11:40000", "198.18.9.10:40000"]
        );
    }

    #[test]
    fn bad_filter_arguments_are_refused_with_the_option_named() {
        let err = FlowFilter::new(&FlowQuery {
            client: Some("nope".into()),
            ..FlowQuery::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--client"));
        let err = FlowFilter::new(&FlowQuery {
            backend: Some("198.18.2.21".into()),
            ..FlowQuery::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("--backend"));
    }

    #[test]
    fn a_query_without_fields_is_accepted_from_json() {
        let query: FlowQuery = serde_json::from_str("{}").unwrap();
        assert_eq!(query, FlowQuery::default());
    }
}
