//! The DNS records of Switchyard's Gateways (GEP-3539): each Gateway with
//! an address is `<gateway>.<namespace>.gw.<cluster-domain>`, with an A or
//! AAAA record per virtual IP. A Headless Gateway's name has instead the
//! ready endpoints of the routes its listeners carry, and each endpoint
//! also has the pod form `<a-b-c-d>.<gateway>.<namespace>.gw.<domain>`
//! (IPv6 with `:` as `-`, as Kubernetes writes pod names). An ExternalName
//! Gateway's name is a CNAME to its Hostname address. This module only
//! names; which addresses a Gateway has is decided before it runs.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::attach::Attachments;
use super::gateways::GatewayView;
use super::RouteId;
use crate::dns::{DnsRecord, RecordType};
use crate::resources::ClassType;
use crate::snapshot::BackendGroup;

/// The label under the cluster domain that Gateway names live in.
pub const GATEWAY_ZONE_LABEL: &str = "gw";

pub(super) fn records(
    gateways: &[GatewayView<'_>],
    attachments: &Attachments,
    groups_of: &HashMap<RouteId, Vec<BackendGroup>>,
    cluster_domain: &str,
) -> Vec<DnsRecord> {
    let mut out = Vec::new();
    for (g, view) in gateways.iter().enumerate() {
        let meta = &view.gateway.metadata;
        let (Some(gateway), Some(namespace)) = (label(&meta.name), label(&meta.namespace)) else {
            // A name that is not a DNS label (dots, over 63 characters)
            // cannot be spelled as GEP-3539 asks; such a Gateway has no
            // records rather than a mangled one.
            continue;
        };
        let name = format!("{gateway}.{namespace}.{GATEWAY_ZONE_LABEL}.{cluster_domain}");
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
                for group in groups.into_iter().flatten() {
                    endpoints.extend(group.endpoints.iter().map(|e| e.address));
                }
            }
            for address in endpoints {
                out.push(address_record(name.clone(), address));
                out.push(address_record(
                    format!("{}.{name}", dashed(address)),
                    address,
                ));
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
