//! Which Gateways are Switchyard's, on which addresses and ports they serve
//! (`addresses` decides), and what each listener can carry. Gateways of other controllers are left alone,
//! without a word: their status is not ours to write.

use std::net::IpAddr;

use super::{addresses, Diagnostic, Index, Reason};
use crate::resources::{ClassType, Gateway, Listener, RouteKind, GATEWAY_GROUP};
use crate::snapshot::{AnnounceMode, Forwarding, Protocol};

pub(super) struct GatewayView<'a> {
    pub gateway: &'a Gateway,
    /// Virtual IPs every listener is served on; empty when the Gateway has
    /// none (it still takes route attachments, it only carries no traffic
    /// there).
    pub addresses: Vec<IpAddr>,
    /// Node addresses on which listeners with a node port are served.
    pub node_addresses: Vec<IpAddr>,
    /// ExternalName classes: what the Gateway's DNS name aliases to.
    pub external_name: Option<String>,
    pub class_type: ClassType,
    /// The class's forwarding mode (see `traffic`).
    pub forwarding: Forwarding,
    /// How the class's VIPs are announced (see `snapshot::announce`).
    pub announce: Option<AnnounceMode>,
    /// Served nowhere: see `addresses::Assignment::refused`.
    pub refused: bool,
    /// The Gateway's `status.addresses`.
    pub status_addresses: Vec<addresses::StatusAddress>,
    pub listeners: Vec<ListenerView<'a>>,
}

pub(super) struct ListenerView<'a> {
    pub spec: &'a Listener,
    /// `None` for protocols Switchyard does not serve.
    pub protocol: Option<Protocol>,
    /// The route kind this listener accepts, if any.
    pub route_kind: Option<RouteKind>,
    /// NodePort and LoadBalancer classes: the port the listener is served
    /// on at every node address.
    pub node_port: Option<u16>,
}

impl GatewayView<'_> {
    /// Where listener `l` receives packets: (address, port) pairs, its
    /// own port on every VIP, then its node port on every node address.
    pub fn serving(&self, l: usize) -> Vec<(IpAddr, u16)> {
        let listener = &self.listeners[l];
        let mut out: Vec<(IpAddr, u16)> = self
            .addresses
            .iter()
            .map(|&a| (a, listener.spec.port))
            .collect();
        if let Some(port) = listener.node_port {
            out.extend(self.node_addresses.iter().map(|&a| (a, port)));
        }
        out
    }
}

/// Switchyard's Gateways, sorted by namespace/name. Gateways of a class
/// whose parameters do not resolve are not Switchyard's to serve.
pub(super) fn ours<'a>(
    index: &Index<'a>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<GatewayView<'a>> {
    let classes = addresses::classes(index, diagnostics);
    let gateways: Vec<(&Gateway, &addresses::Class)> = index
        .gateways
        .values()
        .filter_map(|g| Some((*g, classes.get(g.spec.gateway_class_name.as_str())?)))
        .collect();
    let assigned = addresses::assign(&gateways, diagnostics);
    gateways
        .into_iter()
        .zip(assigned)
        .map(|((gateway, class), assignment)| GatewayView {
            gateway,
            class_type: class.class_type,
            forwarding: class.forwarding.clone(),
            announce: class.announce,
            refused: assignment.refused,
            status_addresses: assignment.status(),
            addresses: assignment.addresses,
            node_addresses: assignment.node_addresses,
            external_name: assignment.external_name,
            listeners: gateway
                .spec
                .listeners
                .iter()
                .enumerate()
                .map(|(l, spec)| ListenerView {
                    node_port: assignment.node_ports.get(l).copied().flatten(),
                    ..listener(gateway, spec, diagnostics)
                })
                .collect(),
        })
        .collect()
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
                Diagnostic::about_gateway(
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
                node_port: None,
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
                Diagnostic::about_gateway(
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
        node_port: None,
    }
}
