//! How a listener's packets reach its backends (`Forwarding`) and which of
//! them it takes at all (`ListenerPolicy`): plain data the workers turn
//! into a rewrite plan once per flow and the steering program into map
//! entries, so neither decides anything the snapshot did not say.
//!
//! Resolution fills both from the GatewayClass's parameters
//! (`GatewayClassConfig`), a `TrafficPolicy` on the Gateway or one of its
//! listeners, and the `loadBalancerSourceRanges` of the Services behind a
//! listener; see `resolve::traffic`.

use std::net::IpAddr;
use std::num::NonZeroU32;

use ipnet::IpNet;

/// GUE's registered-by-convention UDP port when a config names none (the
/// one Katran's and the Linux `fou` examples use).
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// The forwarding mode of a listener: what the packets of its flows become
/// on the way to a backend, and so which way the backend's answers take.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Forwarding {
    /// Two-arm NAT: destination rewritten to the backend, the client's
    /// address kept; answers must come back through the LB node (it is the
    /// backends' route to the clients) and are reversed there.
    #[default]
    Nat,
    /// One-arm NAT: the source is rewritten too, to an LB-owned address and
    /// a port no other flow holds, so answers come back to the LB node
    /// whatever the backends' routes.
    #[serde(rename = "fullnat")]
    FullNat(FullNat),
    /// L2 direct server return: only the destination MAC changes; the
    /// backend holds the VIP (on a loopback) and answers the client itself.
    /// The backend's port is the VIP's: nothing at L3/L4 is rewritten.
    Dsr,
    /// The packet, unchanged, inside an outer IP header to the backend,
    /// which decapsulates it and answers the client itself.
    Ipip,
    /// The packet inside outer IP + UDP + GUE headers to the backend's
    /// `port`; otherwise as `Ipip`.
    Gue(Gue),
}

impl Forwarding {
    /// The name configs and `yardctl` use.
    pub fn name(&self) -> &'static str {
        match self {
            Forwarding::Nat => "nat",
            Forwarding::FullNat(_) => "fullnat",
            Forwarding::Dsr => "dsr",
            Forwarding::Ipip => "ipip",
            Forwarding::Gue(_) => "gue",
        }
    }

    /// Whether the backend's answers return through the LB node (and are
    /// reversed there) rather than going straight to the client.
    pub fn replies_through_lb(&self) -> bool {
        matches!(self, Forwarding::Nat | Forwarding::FullNat(_))
    }

    /// Whether the packet's destination port may differ from the VIP's on
    /// the way to the backend. Modes that leave the inner packet as the
    /// client sent it cannot translate ports: the backend answers from the
    /// VIP's port itself.
    pub fn translates_ports(&self) -> bool {
        self.replies_through_lb()
    }
}

/// Where `fullnat` takes its source addresses from.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct FullNat {
    /// LB-owned addresses to rewrite the client's source to, at least one
    /// of each family the listener serves; empty: the address of the
    /// interface the packet leaves by (of the backend's family).
    pub addresses: Vec<IpAddr>,
    /// Prepend a PROXY protocol header to each TCP connection, so backends
    /// that read it still learn the client (TCP listeners only).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// PROXY protocol versions a listener can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProxyProtocol {
    /// The binary header of haproxy's PROXY protocol specification, §2.2.
    V2,
}

/// Parameters of `gue` forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Gue {
    /// UDP destination port of the outer header: the port the backends'
    /// decapsulation listens on.
    pub port: u16,
}

impl Default for Gue {
    fn default() -> Self {
        Gue {
            port: DEFAULT_GUE_PORT,
        }
    }
}

/// Which clients a listener serves and how fast it takes new flows.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ListenerPolicy {
    pub source_ranges: SourceRanges,
    /// New flows a second the listener accepts, all workers together
    /// (each holds a share); `None`: no limit.
    pub new_flows_per_second: Option<NonZeroU32>,
    /// Flows the listener keeps at once, all workers together (each holds
    /// a share); `None`: no limit.
    pub max_flows: Option<NonZeroU32>,
}

impl ListenerPolicy {
    /// Whether the policy admits everything (nothing to program).
    pub fn is_open(&self) -> bool {
        self.source_ranges.is_open()
            && self.new_flows_per_second.is_none()
            && self.max_flows.is_none()
    }
}

/// Source-address ranges: a client is served when no `deny` range holds
/// it and `allow` is `None` or some range of it holds the client. Deny
/// wins. `allow` is already the intersection of every list that applies
/// (a Service's `loadBalancerSourceRanges` and a policy's allow list), so
/// `Some(vec![])` (disjoint lists) serves nobody.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SourceRanges {
    pub allow: Option<Vec<IpNet>>,
    pub deny: Vec<IpNet>,
}

impl SourceRanges {
    /// Whether a packet from `client` may reach the listener.
    pub fn admits(&self, client: IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(&client))
            && self
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|net| net.contains(&client)))
    }

    /// Whether every client is admitted.
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// The ranges of both lists: the addresses in some range of `a` and in
/// some range of `b`. CIDR ranges either nest or are disjoint, so each
/// pair contributes the smaller one or nothing.
pub fn intersect(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for x in a {
        for y in b {
            let inner = if y.contains(x) {
                *x
            } else if x.contains(y) {
                *y
            } else {
                continue;
            };
            if !out.contains(&inner) {
                out.push(inner);
            }
        }
    }
    IpNet::aggregate(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_over_allow() {
        let ranges = SourceRanges {
            allow: Some(nets(&["10.0.0.0/8"])),
            deny: nets(&["10.1.0.0/16"]),
        };
        assert!(ranges.admits("10.2.3.4".parse().unwrap()));
        assert!(!ranges.admits("10.1.3.4".parse().unwrap()));
        assert!(!ranges.admits("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn an_empty_allow_list_serves_nobody_and_none_serves_everybody() {
        let nobody = SourceRanges {
            allow: Some(vec![]),
            deny: vec![],
        };
        assert!(!nobody.admits("10.0.0.1".parse().unwrap()));
        assert!(SourceRanges::default().admits("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn intersection_keeps_the_nested_range_of_each_pair() {
        let a = nets(&["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"]);
        let b = nets(&["10.1.0.0/16", "192.0.2.128/25", "198.51.100.0/24", "::/0"]);
        assert_eq!(
            intersect(&a, &b),
            nets(&["10.1.0.0/16", "192.0.2.128/25", "2001:db8::/32"])
        );
        assert!(intersect(&nets(&["10.0.0.0/8"]), &nets(&["11.0.0.0/8"])).is_empty());
    }
}
