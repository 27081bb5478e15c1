//! Which Gateways are Switchyard's, on which addresses they serve, and what
//! each listener can carry. Gateways of other controllers are left alone,
//! without a word: their status is not ours to write.

use std::net::IpAddr;

use super::{Diagnostic, Index, Reason};
use crate::resources::{Gateway, Listener, RouteKind, GATEWAY_GROUP, IP_ADDRESS_TYPE};
use crate::snapshot::Protocol;

pub(super) struct GatewayView<'a> {
    pub gateway: &'a Gateway,
    /// Where listeners are served; empty when the Gateway has no usable
    /// address (it still takes route attachments, it only carries no
    /// traffic).
    pub addresses: Vec<IpAddr>,
    pub listeners: Vec<ListenerView<'a>>,
}

pub(super) struct ListenerView<'a> {
    pub spec: &'a Listener,
    /// `None` for protocols Switchyard does not serve.
    pub protocol: Option<Protocol>,
    /// The route kind this listener accepts, if any.
    pub route_kind: Option<RouteKind>,
}

/// Switchyard's Gateways, sorted by namespace/name.
pub(super) fn ours<'a>(
    index: &Index<'a>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<GatewayView<'a>> {
    index
        .gateways
        .values()
        .filter(|g| {
            index
                .our_classes
                .contains(g.spec.gateway_class_name.as_str())
        })
        .map(|gateway| GatewayView {
            gateway,
            addresses: addresses(gateway, diagnostics),
            listeners: gateway
                .spec
                .listeners
                .iter()
                .map(|l| listener(gateway, l, diagnostics))
                .collect(),
        })
        .collect()
}

fn diagnostic(gateway: &Gateway, reason: Reason, message: String) -> Diagnostic {
    Diagnostic::new(
        "Gateway",
        &gateway.metadata.namespace,
        &gateway.metadata.name,
        reason,
        message,
    )
}

/// Gateway API: "The implementation MUST bind all Listeners to every
/// GatewayAddress that it assigns to the Gateway", and a Gateway asking for
/// an address type the implementation does not support is not accepted.
fn addresses(gateway: &Gateway, diagnostics: &mut Vec<Diagnostic>) -> Vec<IpAddr> {
    let requested = &gateway.spec.addresses;
    if let Some(unsupported) = requested.iter().find(|a| a.address_type != IP_ADDRESS_TYPE) {
        diagnostics.push(diagnostic(
            gateway,
            Reason::UnsupportedAddress,
            format!(
                "address type {:?} is not supported; only IPAddress is",
                unsupported.address_type
            ),
        ));
        return Vec::new();
    }
    if requested.is_empty() {
        diagnostics.push(diagnostic(
            gateway,
            Reason::AddressNotAssigned,
            "no address: spec.addresses needs an IPAddress (address pools are not supported yet)"
                .to_owned(),
        ));
        return Vec::new();
    }
    if requested.iter().any(|a| a.value.is_none()) {
        diagnostics.push(diagnostic(
            gateway,
            Reason::AddressNotAssigned,
            "an IPAddress without a value asks for an assigned address, and address pools are \
             not supported yet"
                .to_owned(),
        ));
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = requested.iter().filter_map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn listener<'a>(
    gateway: &Gateway,
    spec: &'a Listener,
    diagnostics: &mut Vec<Diagnostic>,
) -> ListenerView<'a> {
    let (protocol, kind) = match spec.protocol.as_str() {
        "TCP" => (Protocol::Tcp, RouteKind::Tcp),
        "UDP" => (Protocol::Udp, RouteKind::Udp),
        other => {
            diagnostics.push(
                diagnostic(
                    gateway,
                    Reason::UnsupportedProtocol,
                    format!("protocol {other:?} is not supported; Switchyard serves TCP and UDP"),
                )
                .on_listener(&spec.name),
            );
            return ListenerView {
                spec,
                protocol: None,
                route_kind: None,
            };
        }
    };
    let kinds = &spec.allowed_routes.kinds;
    let mut route_kind = kinds.is_empty().then_some(kind);
    for wanted in kinds {
        if wanted.group == GATEWAY_GROUP && wanted.kind == kind.as_str() {
            route_kind = Some(kind);
        } else {
            diagnostics.push(
                diagnostic(
                    gateway,
                    Reason::InvalidRouteKinds,
                    format!(
                        "route kind {}/{} cannot attach to a {} listener; only {} can",
                        wanted.group,
                        wanted.kind,
                        spec.protocol,
                        kind.as_str()
                    ),
                )
                .on_listener(&spec.name),
            );
        }
    }
    ListenerView {
        spec,
        protocol: Some(protocol),
        route_kind,
    }
}
