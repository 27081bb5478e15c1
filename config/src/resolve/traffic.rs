//! Each listener's forwarding mode and traffic policy.
//!
//! The mode is the GatewayClass's (`GatewayClassConfig.spec.forwarding`,
//! `nat` when absent), unless a TrafficPolicy on the Gateway or on the
//! listener (`sectionName`) sets `spec.forwarding`: the most specific,
//! then the oldest, wins (`policy::winners`), as for the Maglev table
//! size. `spec.sourceRanges` and `spec.limits` are won the same way, each
//! on its own.
//!
//! A Service's `spec.loadBalancerSourceRanges` narrows the listeners
//! serving it: a client must be in the policy's allow list (if any) and in
//! the ranges of every Service behind the listener that has some, since a
//! listener's one Maglev table mixes its Services' endpoints and a client
//! any one Service refuses must not reach it through the listener. Deny
//! lists are the policy's alone.
//!
//! Modes that leave the client's packet as it was (`dsr`, `ipip`, `gue`)
//! cannot translate ports: the backend receives the VIP's port and answers
//! from it. A listener of such a mode whose endpoints listen on another
//! port is not served (`PortTranslationNotSupported` on the route), and
//! `compile_file` refuses such a file with the route's FILE:LINE.

use std::collections::HashMap;
use std::net::IpAddr;

use super::gateways::GatewayView;
use super::policy::{self, ListenerClaims, ListenerSetting};
use super::{Diagnostic, Index, Reason};
use crate::resources::{Route, TrafficPolicy};
use crate::snapshot::{
    intersect, Backend, BackendGroup, Forwarding, FullNat, ListenerPolicy, SourceRanges,
};

/// The winning policies of the traffic settings, per listener.
pub(super) struct TrafficSettings<'a> {
    forwarding: HashMap<(usize, usize), &'a TrafficPolicy>,
    source_ranges: HashMap<(usize, usize), &'a TrafficPolicy>,
    limits: HashMap<(usize, usize), &'a TrafficPolicy>,
}

impl<'a> TrafficSettings<'a> {
    pub(super) fn new(
        index: &Index<'a>,
        gateways: &[GatewayView<'a>],
        claims: &ListenerClaims,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut won = |setting| policy::winners(index, gateways, claims, setting, diagnostics);
        Self {
            forwarding: won(ListenerSetting::Forwarding),
            source_ranges: won(ListenerSetting::SourceRanges),
            limits: won(ListenerSetting::Limits),
        }
    }

    /// Listener `l` of gateway `g`'s mode: its policy's, else its class's.
    pub(super) fn forwarding(&self, g: usize, l: usize, gateway: &GatewayView<'_>) -> Forwarding {
        match self.forwarding.get(&(g, l)) {
            Some(policy) => policy
                .spec
                .forwarding
                .as_ref()
                .map_or(Forwarding::Nat, |f| f.forwarding()),
            None => gateway.forwarding.clone(),
        }
    }

    /// Listener `l` of gateway `g`'s policy, narrowed by the
    /// `loadBalancerSourceRanges` of the Services in `groups`.
    pub(super) fn policy<'g>(
        &self,
        index: &Index<'_>,
        g: usize,
        l: usize,
        groups: impl IntoIterator<Item = &'g BackendGroup>,
    ) -> ListenerPolicy {
        let mut ranges = SourceRanges::default();
        if let Some(spec) = self
            .source_ranges
            .get(&(g, l))
            .and_then(|p| p.spec.source_ranges.as_ref())
        {
            ranges.allow = spec.allow.clone();
            ranges.deny = spec.deny.clone();
        }
        for group in groups {
            let Some((namespace, name)) = group.service.split_once('/') else {
                continue;
            };
            let Some(service) = index.services.get(&(namespace, name)) else {
                continue;
            };
            let own = &service.spec.load_balancer_source_ranges;
            if own.is_empty() {
                continue;
            }
            ranges.allow = Some(match ranges.allow.take() {
                None => own.clone(),
                Some(allow) => intersect(&allow, own),
            });
        }
        let limits = self
            .limits
            .get(&(g, l))
            .and_then(|p| p.spec.limits)
            .unwrap_or_default();
        ListenerPolicy {
            source_ranges: ranges,
            new_flows_per_second: limits.new_flows_per_second,
            max_flows: limits.max_flows,
        }
    }
}

/// `forwarding` as served on `address`: a `fullnat` listener keeps the
/// SNAT addresses of `address`'s family (the egress interface's address
/// when there are none).
pub(super) fn for_address(forwarding: &Forwarding, address: IpAddr) -> Forwarding {
    match forwarding {
        Forwarding::FullNat(full) => Forwarding::FullNat(FullNat {
            addresses: full
                .addresses
                .iter()
                .copied()
                .filter(|a| a.is_ipv4() == address.is_ipv4())
                .collect(),
            proxy_protocol: full.proxy_protocol,
        }),
        other => other.clone(),
    }
}

/// For a mode that cannot translate ports, the first backend listening on
/// a port other than `port` (the one packets arrive on), with its route.
pub(super) fn untranslatable<'b>(
    forwarding: &Forwarding,
    port: u16,
    backends: &'b [Backend],
) -> Option<&'b Backend> {
    if forwarding.translates_ports() {
        return None;
    }
    backends.iter().find(|b| b.endpoint.port != port)
}

/// The route's diagnostic for `untranslatable`'s find.
pub(super) fn port_translation_refused(
    route: &Route,
    parent: String,
    forwarding: &Forwarding,
    port: u16,
    backend: &Backend,
    service: &str,
) -> Diagnostic {
    Diagnostic::new(
        route.kind.as_str(),
        &route.metadata.namespace,
        &route.metadata.name,
        Reason::PortTranslationNotSupported,
        format!(
            "backend {} of {service} listens on port {}, but listener {parent} receives port \
             {port} and forwards in mode {}, which leaves the client's packet as it is: the \
             backend must listen on port {port} (or the listener use mode nat or fullnat); \
             the listener is not served",
            backend.endpoint,
            backend.endpoint.port,
            forwarding.name(),
        ),
    )
    .on_parent(parent)
}
