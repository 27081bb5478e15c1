//! Where each of Switchyard's Gateways is served: the behaviour its
//! GatewayClass chose through `spec.parametersRef` (a `GatewayClassConfig`),
//! its virtual IPs (static, or allocated from the class's `AddressPool`),
//! and for NodePort/LoadBalancer classes a node port per listener.
//!
//! Allocation is a pure function of the whole file, so every LB node given
//! the same file hands out the same addresses: Gateways are taken oldest
//! first (creationTimestamp, then namespace/name, never document order),
//! every static request is placed before any pool allocation, and a pool
//! hands out its lowest free address. A Gateway's addresses are its own:
//! two Gateways never share one, even on disjoint ports, so that a Gateway
//! in one namespace cannot turn another namespace's listener into a
//! conflict by adding a listener, and so that each Gateway's DNS name
//! stands for exactly its listeners. The older Gateway keeps a contested
//! address; the newer one is `AddressNotUsable`. A Gateway is bound (served,
//! listed in `status.addresses`, named in DNS) to every address it gets,
//! IPv4 and IPv6.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::{Diagnostic, Index, Reason};
use crate::pools::{special_purpose, to_u128, PortRange};
use crate::resources::{
    AddressPool, ClassType, Gateway, GatewayClass, IP_ADDRESS_TYPE, SWITCHYARD_GROUP,
};
use crate::snapshot::{AnnounceMode, Forwarding};

/// `spec.addresses` type naming a DNS name (ExternalName classes).
pub const HOSTNAME_TYPE: &str = "Hostname";

/// Candidates a pool walk examines before it calls the pool exhausted; a
/// bound so that a pool of addresses that are all taken or unusable cannot
/// make resolution slow.
const MAX_POOL_WALK: u32 = 1 << 20;

/// What a GatewayClass's parameters resolved to.
#[derive(Debug, Clone)]
pub(super) struct Class<'a> {
    pub class_type: ClassType,
    pub pool: Option<&'a AddressPool>,
    pub node_addresses: &'a [IpAddr],
    /// `Some` when listeners get node ports.
    pub node_ports: Option<PortRange>,
    /// The mode of listeners no TrafficPolicy gives another.
    pub forwarding: Forwarding,
    /// How the class's VIPs are announced, if they are.
    pub announce: Option<AnnounceMode>,
}

impl Class<'_> {
    /// A class without parameters: static addresses only, as a ClusterIP.
    const PLAIN: Class<'static> = Class {
        class_type: ClassType::ClusterIP,
        pool: None,
        node_addresses: &[],
        node_ports: None,
        forwarding: Forwarding::Nat,
        announce: None,
    };
}

/// Switchyard's GatewayClasses whose parameters resolve, by name. A class
/// whose `parametersRef` names a missing or foreign object is
/// `Accepted=False/InvalidParameters`, and its Gateways are not served: a
/// class that cannot say how it serves must not fall back to serving
/// somehow.
pub(super) fn classes<'a>(
    index: &Index<'a>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<&'a str, Class<'a>> {
    let mut out = HashMap::new();
    for class in index.classes.values() {
        match params(index, class) {
            Ok(params) => {
                out.insert(class.metadata.name.as_str(), params);
            }
            Err(message) => diagnostics.push(Diagnostic::new(
                "GatewayClass",
                "",
                &class.metadata.name,
                Reason::InvalidParameters,
                message,
            )),
        }
    }
    out
}

fn params<'a>(index: &Index<'a>, class: &'a GatewayClass) -> Result<Class<'a>, String> {
    let Some(reference) = &class.spec.parameters_ref else {
        return Ok(Class::PLAIN);
    };
    if reference.group != SWITCHYARD_GROUP || reference.kind != "GatewayClassConfig" {
        return Err(format!(
            "parametersRef names {}/{}; Switchyard reads {SWITCHYARD_GROUP}/GatewayClassConfig",
            reference.group, reference.kind
        ));
    }
    if reference.namespace.is_some() {
        return Err(
            "parametersRef: GatewayClassConfig is cluster-scoped; namespace must be \
             omitted"
                .to_owned(),
        );
    }
    let config = index
        .class_configs
        .get(reference.name.as_str())
        .ok_or_else(|| format!("GatewayClassConfig {:?} does not exist", reference.name))?;
    let spec = &config.spec;
    let pool = match &spec.address_pool {
        None => None,
        Some(name) => Some(*index.pools.get(name.as_str()).ok_or_else(|| {
            format!(
                "GatewayClassConfig {:?} names AddressPool {name:?}, which does not exist",
                reference.name
            )
        })?),
    };
    Ok(Class {
        class_type: spec.class_type,
        pool,
        node_addresses: &spec.node_addresses,
        node_ports: spec.node_ports().then_some(spec.node_port_range),
        forwarding: spec
            .forwarding
            .as_ref()
            .map_or(Forwarding::Nat, |f| f.forwarding()),
        announce: spec.announce,
    })
}

/// One entry of a Gateway's `status.addresses` (`GatewayStatusAddress`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct StatusAddress {
    /// `IPAddress` or `Hostname`.
    #[serde(rename = "type")]
    pub address_type: &'static str,
    pub value: String,
}

impl Assignment {
    /// What `status.addresses` reports: the VIPs, then the node addresses
    /// the listeners' node ports are open on, or the ExternalName target.
    pub fn status(&self) -> Vec<StatusAddress> {
        let ip = |a: &IpAddr| StatusAddress {
            address_type: IP_ADDRESS_TYPE,
            value: a.to_string(),
        };
        let mut out: Vec<StatusAddress> = self.addresses.iter().map(ip).collect();
        if self.node_ports.iter().any(Option::is_some) {
            out.extend(self.node_addresses.iter().map(ip));
        }
        out.extend(self.external_name.iter().map(|name| StatusAddress {
            address_type: HOSTNAME_TYPE,
            value: name.clone(),
        }));
        out
    }
}

/// Where one Gateway is served.
#[derive(Debug, Clone, Default)]
pub(super) struct Assignment {
    /// Virtual IPs: every listener is served on each, at its own port.
    pub addresses: Vec<IpAddr>,
    /// Node addresses of the class, when listeners have node ports.
    pub node_addresses: Vec<IpAddr>,
    /// Per listener (spec order): its node port, if it has one.
    pub node_ports: Vec<Option<u16>>,
    /// ExternalName classes: the name DNS aliases the Gateway to.
    pub external_name: Option<String>,
    /// The Gateway asked for something it cannot have (an unusable or
    /// unsupported address, parameters Switchyard does not read): it is
    /// served nowhere, not even by DNS.
    pub refused: bool,
}

/// Assigns addresses to `gateways` (each with its class); the result is
/// in the same order.
pub(super) fn assign(
    gateways: &[(&Gateway, &Class<'_>)],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Assignment> {
    let mut order: Vec<usize> = (0..gateways.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| {
            let m = &gateways[i].0.metadata;
            (
                m.creation_timestamp.is_none(),
                m.creation_timestamp.clone(),
                m.namespace.as_str(),
                m.name.as_str(),
            )
        };
        key(a).cmp(&key(b))
    });
    let pools: Vec<&AddressPool> = {
        let mut by_name: BTreeMap<&str, &AddressPool> = BTreeMap::new();
        for (_, class) in gateways {
            if let Some(pool) = class.pool {
                by_name.insert(pool.metadata.name.as_str(), pool);
            }
        }
        by_name.into_values().collect()
    };

    // Node addresses are the nodes' own: no Gateway may take one as a VIP.
    let mut taken: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (gateway, class) in gateways {
        for &node in class.node_addresses {
            taken.entry(node).or_insert_with(|| {
                format!(
                    "a node address of GatewayClass {}",
                    gateway.spec.gateway_class_name
                )
            });
        }
    }

    let mut out = vec![Assignment::default(); gateways.len()];
    // Gateways refused an address: not programmed, so no node ports either.
    let mut refused = vec![false; gateways.len()];
    // Gateways that still need `n` addresses from their pool.
    let mut wanted: Vec<(usize, usize)> = Vec::new();
    for &i in &order {
        let (gateway, class) = gateways[i];
        let report = |reason, message: String| Diagnostic::about_gateway(gateway, reason, message);
        match requested(gateway, class) {
            Err((reason, message)) => {
                refused[i] = true;
                diagnostics.push(report(reason, message));
            }
            Ok(Request::Name(name)) => out[i].external_name = Some(name),
            Ok(Request::Nothing) => {}
            Ok(Request::Addresses { fixed, from_pool }) => {
                let problem = fixed.iter().find_map(|&ip| {
                    let why = special_purpose(ip)
                        .map(|kind| format!("{ip} is {kind}"))
                        .or_else(|| network_or_broadcast(ip, &pools))
                        .or_else(|| taken.get(&ip).map(|owner| format!("{ip} is {owner}")))?;
                    Some(why)
                });
                if let Some(why) = problem {
                    refused[i] = true;
                    diagnostics.push(report(Reason::AddressNotUsable, why));
                    continue;
                }
                for &ip in &fixed {
                    taken.insert(ip, format!("already Gateway {}'s", gateway.metadata.key()));
                }
                out[i].addresses = fixed;
                if from_pool > 0 {
                    wanted.push((i, from_pool));
                }
            }
        }
    }

    // Pools hand out addresses only after every static request is placed,
    // so that a static address never depends on how many Gateways asked a
    // pool before it.
    for &(i, count) in &wanted {
        let (gateway, class) = gateways[i];
        let report = |message: String| {
            Diagnostic::new(
                "Gateway",
                &gateway.metadata.namespace,
                &gateway.metadata.name,
                Reason::AddressNotAssigned,
                message,
            )
        };
        let Some(pool) = class.pool else {
            refused[i] = true;
            out[i].addresses.clear();
            diagnostics.push(report(format!(
                "no address: spec.addresses needs an IPAddress value, or GatewayClass {} an \
                 addressPool to allocate from",
                gateway.spec.gateway_class_name
            )));
            continue;
        };
        let mut got = Vec::new();
        for _ in 0..count {
            match lowest_free(pool, &taken, &pools) {
                Some(ip) => {
                    taken.insert(ip, format!("already Gateway {}'s", gateway.metadata.key()));
                    got.push(ip);
                }
                None => break,
            }
        }
        if got.len() < count {
            // The addresses found stay reserved: handing them to a younger
            // Gateway would make its address depend on this one's failure.
            refused[i] = true;
            out[i].addresses.clear();
            diagnostics.push(report(format!(
                "AddressPool {} is exhausted: {} address(es) wanted, {} free",
                pool.metadata.name,
                count,
                got.len()
            )));
            continue;
        }
        out[i].addresses.extend(got);
    }

    for (assignment, refused) in out.iter_mut().zip(&refused) {
        assignment.addresses.sort();
        assignment.refused = *refused;
    }
    node_ports(gateways, &order, &refused, &mut out, diagnostics);
    out
}

enum Request {
    /// Static addresses, and how many more the pool must supply.
    Addresses {
        fixed: Vec<IpAddr>,
        from_pool: usize,
    },
    /// An ExternalName's target.
    Name(String),
    /// Headless, or a NodePort Gateway without a VIP: no address at all.
    Nothing,
}

/// What a Gateway asks for, judged against its class.
fn requested(gateway: &Gateway, class: &Class<'_>) -> Result<Request, (Reason, String)> {
    // Gateway API: a parametersRef the implementation cannot use rejects
    // the Gateway. Switchyard's parameters are cluster-wide, on the class
    // (`GatewayClassConfig`); a Gateway's local reference can name nothing
    // Switchyard reads, and serving the Gateway without what it asked for
    // could serve it wrongly.
    if let Some(reference) = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
    {
        let group = if reference.group.is_empty() {
            "core"
        } else {
            reference.group.as_str()
        };
        return Err((
            Reason::InvalidParameters,
            format!(
                "spec.infrastructure.parametersRef names {} {:?} of group {group}; Switchyard \
                 reads no per-Gateway parameters (set them on the GatewayClass, with a \
                 {SWITCHYARD_GROUP} GatewayClassConfig)",
                reference.kind, reference.name
            ),
        ));
    }
    let requested = &gateway.spec.addresses;
    let class_name = class.class_type.as_str();
    match class.class_type {
        ClassType::ExternalName => {
            let names: Vec<&str> = requested
                .iter()
                .filter(|a| a.address_type == HOSTNAME_TYPE)
                .filter_map(|a| a.value.as_deref())
                .collect();
            if let Some(other) = requested.iter().find(|a| a.address_type != HOSTNAME_TYPE) {
                return Err((
                    Reason::UnsupportedAddress,
                    format!(
                        "address type {:?} is not supported by an {class_name} class; it takes \
                         one Hostname",
                        other.address_type
                    ),
                ));
            }
            match names.as_slice() {
                [name] => valid_dns_name(name)
                    .map(|()| Request::Name(name.trim_end_matches('.').to_ascii_lowercase()))
                    .map_err(|why| (Reason::UnsupportedAddress, why)),
                [] => Err((
                    Reason::AddressNotAssigned,
                    format!("an {class_name} class needs one Hostname address to alias to"),
                )),
                _ => Err((
                    Reason::UnsupportedAddress,
                    format!(
                        "an {class_name} class aliases to one Hostname; {} given",
                        names.len()
                    ),
                )),
            }
        }
        ClassType::Headless if !requested.is_empty() => Err((
            Reason::UnsupportedAddress,
            "a Headless class serves no address; DNS answers with the endpoints".to_owned(),
        )),
        ClassType::Headless => Ok(Request::Nothing),
        ClassType::ClusterIP | ClassType::LoadBalancer | ClassType::NodePort => {
            if let Some(other) = requested.iter().find(|a| a.address_type != IP_ADDRESS_TYPE) {
                return Err((
                    Reason::UnsupportedAddress,
                    format!(
                        "address type {:?} is not supported; only IPAddress is",
                        other.address_type
                    ),
                ));
            }
            let fixed: BTreeSet<IpAddr> = requested.iter().filter_map(|a| a.ip()).collect();
            let mut from_pool = requested.iter().filter(|a| a.value.is_none()).count();
            // No addresses at all asks for one, except of a NodePort class
            // without a pool: its node ports are address enough.
            if requested.is_empty()
                && (class.class_type != ClassType::NodePort || class.pool.is_some())
            {
                from_pool = 1;
            }
            if requested.is_empty() && from_pool == 0 {
                return Ok(Request::Nothing);
            }
            Ok(Request::Addresses {
                fixed: fixed.into_iter().collect(),
                from_pool,
            })
        }
    }
}

/// RFC 1123 host name: what an ExternalName may alias to.
fn valid_dns_name(name: &str) -> Result<(), String> {
    if crate::dns::is_host_name(name.trim_end_matches('.'), 253) {
        Ok(())
    } else {
        Err(format!("Hostname {name:?} is not a valid DNS name"))
    }
}

fn network_or_broadcast(ip: IpAddr, pools: &[&AddressPool]) -> Option<String> {
    pools.iter().find_map(|pool| {
        let cidr = pool
            .spec
            .cidrs
            .iter()
            .find(|c| c.is_network_or_broadcast(ip))?;
        Some(format!(
            "{ip} is the network or broadcast address of {cidr} in AddressPool {}",
            pool.metadata.name
        ))
    })
}

/// MetalLB's `avoidBuggyIPs`: IPv4 addresses ending in .0 or .255.
fn buggy(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

fn lowest_free(
    pool: &AddressPool,
    taken: &BTreeMap<IpAddr, String>,
    pools: &[&AddressPool],
) -> Option<IpAddr> {
    let mut budget = MAX_POOL_WALK;
    for cidr in &pool.spec.cidrs {
        let (first, last) = cidr.range();
        let mut candidate = first;
        loop {
            budget = budget.checked_sub(1)?;
            let ip = crate::pools::from_u128(cidr.network.is_ipv4(), candidate);
            let usable = !taken.contains_key(&ip)
                && special_purpose(ip).is_none()
                && network_or_broadcast(ip, pools).is_none()
                && !(pool.spec.avoid_buggy_ips && buggy(ip));
            if usable {
                debug_assert_eq!(to_u128(ip), candidate);
                return Some(ip);
            }
            if candidate == last {
                break;
            }
            candidate += 1;
        }
    }
    None
}

/// One node port per listener of every Gateway whose class allocates them,
/// unique per protocol across Gateways (as Kubernetes' are), lowest free
/// port first, Gateways in allocation order and listeners in spec order.
fn node_ports(
    gateways: &[(&Gateway, &Class<'_>)],
    order: &[usize],
    refused: &[bool],
    out: &mut [Assignment],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut used: BTreeSet<(&str, u16)> = BTreeSet::new();
    for &i in order {
        let (gateway, class) = gateways[i];
        let Some(range) = class.node_ports else {
            continue;
        };
        if refused[i] {
            continue;
        }
        out[i].node_addresses = class.node_addresses.to_vec();
        let mut wanted = false;
        for listener in &gateway.spec.listeners {
            let protocol = listener.protocol.as_str();
            if !matches!(protocol, "TCP" | "UDP") {
                out[i].node_ports.push(None);
                continue;
            }
            wanted = true;
            let port = (range.first..=range.last).find(|p| !used.contains(&(protocol, *p)));
            if let Some(port) = port {
                used.insert((protocol, port));
            } else {
                diagnostics.push(
                    Diagnostic::new(
                        "Gateway",
                        &gateway.metadata.namespace,
                        &gateway.metadata.name,
                        Reason::AddressNotAssigned,
                        format!("no free {protocol} node port left in {range}"),
                    )
                    .on_listener(&listener.name),
                );
            }
            out[i].node_ports.push(port);
        }
        // The listeners say which port is missing; the Gateway says that,
        // without a VIP, it is then served nowhere.
        if wanted && out[i].addresses.is_empty() && out[i].node_ports.iter().all(Option::is_none) {
            diagnostics.push(Diagnostic::about_gateway(
                gateway,
                Reason::AddressNotAssigned,
                format!(
                    "no address: the Gateway has no VIP and no listener got a node port in \
                     {range}"
                ),
            ));
        }
    }
}
