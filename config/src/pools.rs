//! Switchyard's address kinds (`switchyard.io/v1alpha1`, both
//! cluster-scoped): `AddressPool`, the CIDRs Gateway addresses are
//! allocated from, and `GatewayClassConfig`, what a GatewayClass's
//! `spec.parametersRef` names to choose a GEP-3539 behaviour (ClusterIP,
//! NodePort, LoadBalancer, Headless, ExternalName) and a pool.
//!
//! Shaped after MetalLB's `IPAddressPool` (`addresses`, `avoidBuggyIPs`) and
//! Cilium's `CiliumLoadBalancerIPPool` (`blocks` of CIDRs), and after the
//! Service fields GEP-3539 maps onto Gateways (`type`, node port range,
//! `allocateLoadBalancerNodePorts`). This module only reads and checks
//! what a CRD schema would; allocation is `resolve`'s.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::meta::ObjectMeta;
use crate::schema::{self, Checked};
use crate::traffic_spec::ForwardingSpec;

// ---------------------------------------------------------------- AddressPool

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressPool {
    pub metadata: ObjectMeta,
    pub spec: AddressPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressPoolSpec {
    /// Allocated from in the order listed, lowest address first.
    #[serde(deserialize_with = "schema::list::<_, _, 1, 64>")]
    pub cidrs: Vec<Cidr>,
    /// MetalLB's `avoidBuggyIPs`: never hand out IPv4 addresses ending in
    /// `.0` or `.255`, which some old clients and middleboxes drop.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
}

/// Why no host can be reached at `address`, if that is so: the kinds of
/// special-purpose address (RFC 6890) a Gateway can never serve on.
pub fn special_purpose(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V4(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(a) if a.is_link_local() => Some("a link-local address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(a) if a.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(a) if a.is_loopback() => Some("a loopback address"),
        IpAddr::V6(a) if a.is_multicast() => Some("a multicast address"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("a link-local address"),
        _ => None,
    }
}

impl Checked for AddressPool {
    fn check(&self, _: &[Self]) -> Result<(), String> {
        let cidrs = &self.spec.cidrs;
        for (i, a) in cidrs.iter().enumerate() {
            // A CIDR starting in a special-purpose range would make the
            // allocator walk addresses it can never hand out.
            if let Some(kind) = special_purpose(a.network) {
                return Err(format!(
                    "spec.cidrs[{i}]: {a} starts at {kind}; a pool must hold addresses hosts can reach"
                ));
            }
            if let Some(b) = cidrs[..i].iter().find(|b| b.overlaps(a)) {
                return Err(format!(
                    "spec.cidrs[{i}]: {a} overlaps {b}; every address must be in one CIDR"
                ));
            }
        }
        Ok(())
    }
}

/// An IPv4 or IPv6 prefix without host bits, such as `198.18.100.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    fn bits(address: IpAddr) -> u8 {
        match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// The first and last address, as integers of the family's width.
    pub fn range(&self) -> (u128, u128) {
        let host_bits = u32::from(Self::bits(self.network) - self.prefix_len);
        let first = to_u128(self.network);
        let span = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        (first, first | span)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        if self.network.is_ipv4() != address.is_ipv4() {
            return false;
        }
        let (first, last) = self.range();
        (first..=last).contains(&to_u128(address))
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The network and broadcast addresses of an IPv4 prefix shorter than
    /// /31 (RFC 3021 makes every address of a /31 a host), which no host
    /// can use.
    pub fn is_network_or_broadcast(&self, address: IpAddr) -> bool {
        if !self.network.is_ipv4() || self.prefix_len >= 31 || !self.contains(address) {
            return false;
        }
        let (first, last) = self.range();
        let a = to_u128(address);
        a == first || a == last
    }

    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR such as 198.18.100.0/24"))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 or IPv6 address"))?;
        let max = Self::bits(network);
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?;
        let cidr = Cidr {
            network,
            prefix_len,
        };
        if to_u128(network) & !host_mask(cidr) != 0 {
            let masked = from_u128(network.is_ipv4(), to_u128(network) & host_mask(cidr));
            return Err(format!(
                "{text:?} has host bits set; the prefix is {masked}/{prefix_len}"
            ));
        }
        Ok(cidr)
    }
}

/// Mask keeping the network bits of `cidr`.
fn host_mask(cidr: Cidr) -> u128 {
    let bits = u32::from(Cidr::bits(cidr.network));
    let host_bits = bits - u32::from(cidr.prefix_len);
    let width_mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    let host = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    width_mask & !host
}

pub(crate) fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `value` must fit the family (it comes from a range of a CIDR of it).
pub(crate) fn from_u128(ipv4: bool, value: u128) -> IpAddr {
    if ipv4 {
        IpAddr::V4(u32::try_from(value).unwrap_or(u32::MAX).into())
    } else {
        IpAddr::V6(value.into())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CIDR such as 198.18.100.0/24 or 2001:db8::/120")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cidr, E> {
                Cidr::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

// --------------------------------------------------------- GatewayClassConfig

/// The GEP-3539 behaviour of a GatewayClass, named after the Service type
/// it stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClassType {
    /// A virtual IP (static or from the pool) on which every listener is
    /// served.
    #[default]
    ClusterIP,
    /// Every listener also on each node address at a port allocated from
    /// the node port range; a VIP only if the Gateway asks for one or the
    /// class has a pool.
    NodePort,
    /// A VIP like ClusterIP, plus node ports unless
    /// `allocateLoadBalancerNodePorts: false`.
    LoadBalancer,
    /// No VIP and no listeners: DNS answers with the ready endpoint
    /// addresses of the attached routes' backends.
    Headless,
    /// No VIP and no listeners: DNS answers with a CNAME to the Gateway's
    /// one `Hostname` address.
    ExternalName,
}

impl ClassType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
            Self::Headless => "Headless",
            Self::ExternalName => "ExternalName",
        }
    }
}

/// Kubernetes' default `--service-node-port-range`.
pub const DEFAULT_NODE_PORTS: PortRange = PortRange {
    first: 30000,
    last: 32767,
};

/// An inclusive port range written `first-last`, as Kubernetes'
/// `--service-node-port-range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        DEFAULT_NODE_PORTS
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port range such as 30000-32767")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRange, E> {
                let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
                let range = v
                    .split_once('-')
                    .and_then(|(a, b)| Some((port(a)?, port(b)?)));
                match range {
                    Some((first, last)) if first <= last => Ok(PortRange { first, last }),
                    _ => Err(E::custom(format_args!(
                        "invalid value {v:?}, expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassConfig {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewayClassConfigSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassConfigSpec {
    #[serde(rename = "type", default)]
    pub class_type: ClassType,
    /// Name of the `AddressPool` that Gateways without a static address
    /// get theirs from. Absent: only static addresses.
    #[serde(default)]
    pub address_pool: Option<String>,
    /// Where node ports are served (NodePort, and LoadBalancer with node
    /// ports): the LB nodes' own addresses.
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 64>")]
    pub node_addresses: Vec<IpAddr>,
    #[serde(default)]
    pub node_port_range: PortRange,
    /// LoadBalancer only; absent: `true`, as for a Service.
    #[serde(default)]
    pub allocate_load_balancer_node_ports: Option<bool>,
    /// How the listeners of the class's Gateways reach their backends
    /// unless a TrafficPolicy says otherwise; absent: `nat`.
    #[serde(default)]
    pub forwarding: Option<ForwardingSpec>,
    /// How the network learns where the class's VIPs live: `L2` (ARP and
    /// neighbour advertisements) or `BGP` (routes in the node's BIRD);
    /// absent: not announced (routes are the operator's).
    #[serde(default)]
    pub announce: Option<crate::snapshot::AnnounceMode>,
}

impl GatewayClassConfigSpec {
    /// Whether this class gives listeners node ports.
    pub fn node_ports(&self) -> bool {
        match self.class_type {
            ClassType::NodePort => true,
            ClassType::LoadBalancer => self.allocate_load_balancer_node_ports.unwrap_or(true),
            _ => false,
        }
    }
}

impl Checked for GatewayClassConfig {
    /// The cross-field rules a CRD would state in CEL.
    fn check(&self, _: &[Self]) -> Result<(), String> {
        let spec = &self.spec;
        if let Some(forwarding) = &spec.forwarding {
            forwarding.check().map_err(|e| format!("spec.{e}"))?;
        }
        if spec.node_ports() && spec.node_addresses.is_empty() {
            return Err(format!(
                "spec.nodeAddresses: required for type {} with node ports{}",
                spec.class_type.as_str(),
                if spec.class_type == ClassType::LoadBalancer {
                    " (or set allocateLoadBalancerNodePorts: false)"
                } else {
                    ""
                }
            ));
        }
        if spec.allocate_load_balancer_node_ports.is_some()
            && spec.class_type != ClassType::LoadBalancer
        {
            return Err(
                "spec.allocateLoadBalancerNodePorts: only valid for type LoadBalancer".into(),
            );
        }
        if spec.address_pool.is_some()
            && matches!(
                spec.class_type,
                ClassType::Headless | ClassType::ExternalName
            )
        {
            return Err(format!(
                "spec.addressPool: type {} serves no address",
                spec.class_type.as_str()
            ));
        }
        for (i, a) in spec.node_addresses.iter().enumerate() {
            if spec.node_addresses[..i].contains(a) {
                return Err(format!("spec.nodeAddresses: {a} is listed twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_both_families_and_rejects_host_bits() {
        let v4 = Cidr::parse("198.18.100.0/24").unwrap();
        assert!(v4.contains("198.18.100.255".parse().unwrap()));
        assert!(!v4.contains("198.18.101.0".parse().unwrap()));
        assert!(v4.is_network_or_broadcast("198.18.100.0".parse().unwrap()));
        assert!(v4.is_network_or_broadcast("198.18.100.255".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/120").unwrap();
        assert!(v6.contains("2001:db8::ff".parse().unwrap()));
        assert!(!v6.is_network_or_broadcast("2001:db8::".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        let err = Cidr::parse("198.18.100.5/24").unwrap_err();
        assert!(err.contains("198.18.100.0/24"), "{err}");
        for bad in [
            "198.18.100.0",
            "198.18.100.0/33",
            "x/24",
            "::/129",
            "1.2.3.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slash_31_and_32_have_no_network_or_broadcast_address() {
        let p2p = Cidr::parse("198.18.100.0/31").unwrap();
        assert!(!p2p.is_network_or_broadcast("198.18.100.0".parse().unwrap()));
        let host = Cidr::parse("198.18.100.7/32").unwrap();
        assert!(!host.is_network_or_broadcast("198.18.100.7".parse().unwrap()));
    }
}
