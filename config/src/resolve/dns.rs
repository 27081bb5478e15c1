//! The DNS records of Switchyard's Gateways (GEP-3539): each Gateway with
//! an address is `<gateway>.<namespace>.gw.<cluster-domain>`, with an A or
//! AAAA record per virtual IP it is bound to. A Headless Gateway's name has instead
//! the ready endpoints of the routes its listeners carry, of both families
//! (clients reach them directly), and each endpoint also has the pod form
//! `<a-b-c-d>.<gateway>.<namespace>.gw.<domain>` (IPv6 with `:` as `-`, as
//! Kubernetes writes pod names). An ExternalName Gateway's name is a CNAME
//! to its Hostname address. A Gateway that would have a name but cannot
//! (its name is not a DNS label) gets a diagnostic. This module only names;
//! which addresses a Gateway has is decided before it runs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::attach::Attachments;
use super::backends::FamilyGroups;
use super::gateways::GatewayView;
use super::{Diagnostic, Reason, RouteId};
use crate::dns::{DnsRecord, RecordType};
use crate::resources::ClassType;

/// The label under the cluster domain that Gateway names live in.
pub const GATEWAY_ZONE_LABEL: &str = "gw";

/// Longest DNS name, without the trailing dot (RFC 1035 2.3.4).
const MAX_NAME_LEN: usize = 253;

pub(super) fn records(
    gateways: &[GatewayView<'_>],
    attachments: &Attachments,
    groups_of: &HashMap<RouteId, FamilyGroups>,
    cluster_domain: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<DnsRecord> {
    let mut out = Vec::new();
    for (g, view) in gateways.iter().enumerate() {
        // A Gateway served on node ports only has no record: an A record
        // gives an address, not a port, so a client resolving the name
        // would connect to the node at the listener's port, where nothing
        // serves it (a NodePort Service is likewise named by its cluster
        // IP, never by node addresses).
        let named = view.external_name.is_some()
            || !view.addresses.is_empty()
            || view.class_type == ClassType::Headless;
        if view.refused || !named {
            continue;
        }
        let meta = &view.gateway.metadata;
        let unnamed = |why: String| Diagnostic::about_gateway(view.gateway, Reason::NoDnsName, why);
        let (Some(gateway), Some(namespace)) = (label(&meta.name), label(&meta.namespace)) else {
            diagnostics.push(unnamed(format!(
                "no DNS record: GEP-3539 names a Gateway <gateway>.<namespace>.{GATEWAY_ZONE_LABEL}.\
                 {cluster_domain}, and {:?} or {:?} is not a DNS label (at most 63 letters, \
                 digits and '-'); the Gateway is served on its addresses all the same",
                meta.name, meta.namespace
            )));
            continue;
        };
        let name = format!("{gateway}.{namespace}.{GATEWAY_ZONE_LABEL}.{cluster_domain}");
        if name.len() > MAX_NAME_LEN {
            diagnostics.push(unnamed(format!(
                "no DNS record: {name} is {} characters long, more than a DNS name's {MAX_NAME_LEN}",
                name.len()
            )));
            continue;
        }
        if let Some(target) = &view.external_name {
            out.push(DnsRecord {
                name,
                record_type: RecordType::CNAME,
                value: target.clone(),
            });
            continue;
        }
        for &address in &view.addresses {
            out.push(address_record(name.clone(), address));
        }
        if view.class_type == ClassType::Headless {
            let mut endpoints = BTreeSet::new();
            for l in 0..view.listeners.len() {
                let groups = attachments
                    .carrier(g, l)
                    .and_then(|route| groups_of.get(&route));
                for group in groups.into_iter().flat_map(FamilyGroups::all) {
                    endpoints.extend(group.endpoints.iter().map(|e| e.address));
                }
            }
            let mut too_long = 0;
            for address in endpoints {
                out.push(address_record(name.clone(), address));
                let pod = format!("{}.{name}", dashed(address));
                if pod.len() > MAX_NAME_LEN {
                    too_long += 1;
                    continue;
                }
                out.push(address_record(pod, address));
            }
            if too_long > 0 {
                diagnostics.push(unnamed(format!(
                    "{too_long} endpoint(s) have no pod-form record <address>.{name}: it would \
                     be longer than a DNS name's {MAX_NAME_LEN} characters"
                )));
            }
        }
    }
    out
}

fn address_record(name: String, address: IpAddr) -> DnsRecord {
    DnsRecord {
        name,
        record_type: match address {
            IpAddr::V4(_) => RecordType::A,
            IpAddr::V6(_) => RecordType::AAAA,
        },
        value: address.to_string(),
    }
}

/// `198.18.2.21` → `198-18-2-21`, `2001:db8::1` → `2001-db8--1`.
pub fn dashed(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}

/// A Kubernetes object name as one DNS label, lower case, if it is one.
fn label(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then(|| name.to_ascii_lowercase())
}
