//! Route attachment: which listeners each TCPRoute/UDPRoute parentRef
//! binds to, per the Gateway API rules (parentRef defaults, sectionName,
//! port, allowedRoutes kinds and namespaces), and which attached route
//! carries a listener's traffic. Attachment never looks at backends.

use std::collections::BTreeMap;

use super::gateways::{GatewayView, ListenerView};
use super::{Diagnostic, Index, Reason, RouteId};
use crate::resources::{FromNamespaces, ParentReference, Route, GATEWAY_GROUP};

pub(super) struct Attachments {
    /// Routes attached to (gateway, listener), oldest first.
    by_listener: BTreeMap<(usize, usize), Vec<RouteId>>,
    /// Routes with a parentRef to one of Switchyard's Gateways, whether or
    /// not it attached: their backends get resolved and reported on.
    pub parented: Vec<RouteId>,
    /// What became of each parentRef naming a Switchyard Gateway or a
    /// Gateway that does not exist, in route then parentRef order: the
    /// facts behind route status.
    pub parents: Vec<ParentOutcome>,
}

/// One parentRef's attachment, for route status.
pub(super) struct ParentOutcome {
    pub route: RouteId,
    /// Position in the route's `spec.parentRefs`.
    pub parent_ref: usize,
    /// `None` when the parentRef attached to at least one listener.
    pub problem: Option<(Reason, String)>,
}

impl Attachments {
    /// The route whose backends a listener serves. All attached routes are
    /// accepted, but an L4 listener has no way to tell their traffic
    /// apart, so, as for conflicting routes elsewhere in the spec, the
    /// oldest wins.
    pub fn carrier(&self, gateway: usize, listener: usize) -> Option<RouteId> {
        self.by_listener
            .get(&(gateway, listener))
            .and_then(|routes| routes.first().copied())
    }

    /// Gateway API `attachedRoutes`: every route attached to the listener,
    /// not only the one carrying its traffic.
    pub fn attached(&self, gateway: usize, listener: usize) -> usize {
        self.by_listener
            .get(&(gateway, listener))
            .map_or(0, Vec::len)
    }
}

pub(super) fn attach(
    index: &Index<'_>,
    gateways: &[GatewayView<'_>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Attachments {
    let mut by_listener: BTreeMap<(usize, usize), Vec<RouteId>> = BTreeMap::new();
    let mut parented = Vec::new();
    let mut parents = Vec::new();
    for (r, route) in index.routes.iter().enumerate() {
        let id = RouteId(r);
        let mut ours = false;
        for (parent_ref, parent) in route.spec.parent_refs.iter().enumerate() {
            let mut outcome = |problem: Option<&Diagnostic>| {
                parents.push(ParentOutcome {
                    route: id,
                    parent_ref,
                    problem: problem.map(|d| (d.reason, d.message.clone())),
                });
            };
            if parent.group != GATEWAY_GROUP || parent.kind != "Gateway" {
                continue;
            }
            let namespace = parent
                .namespace
                .as_deref()
                .unwrap_or(&route.metadata.namespace);
            let found = gateways.iter().position(|g| {
                g.gateway.metadata.namespace == namespace && g.gateway.metadata.name == parent.name
            });
            let Some(g) = found else {
                // A Gateway of another class is another controller's
                // business; a Gateway that does not exist at all is worth
                // saying in a static file, where nobody else will.
                if !index
                    .gateways
                    .contains_key(&(namespace, parent.name.as_str()))
                {
                    push_problem(
                        diagnostics,
                        &mut outcome,
                        route_diagnostic(
                            route,
                            parent,
                            Reason::NoMatchingParent,
                            format!("Gateway {namespace}/{} does not exist", parent.name),
                        ),
                    );
                }
                continue;
            };
            ours = true;
            let gateway = &gateways[g];
            let matching: Vec<usize> = gateway
                .listeners
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    parent
                        .section_name
                        .as_deref()
                        .is_none_or(|s| s == l.spec.name)
                        && parent.port.is_none_or(|p| p == l.spec.port)
                })
                .map(|(l, _)| l)
                .collect();
            if matching.is_empty() {
                push_problem(
                    diagnostics,
                    &mut outcome,
                    route_diagnostic(
                        route,
                        parent,
                        Reason::NoMatchingParent,
                        format!(
                            "no listener of Gateway {} matches{}",
                            gateway.gateway.metadata.key(),
                            selector_text(parent)
                        ),
                    ),
                );
                continue;
            }
            let allowed: Vec<usize> = matching
                .into_iter()
                .filter(|&l| allows(index, gateway, &gateway.listeners[l], route))
                .collect();
            if allowed.is_empty() {
                push_problem(diagnostics, &mut outcome, route_diagnostic(
                    route,
                    parent,
                    Reason::NotAllowedByListeners,
                    format!(
                        "the listeners of Gateway {} that match{} do not allow {}s from namespace {}",
                        gateway.gateway.metadata.key(),
                        selector_text(parent),
                        route.kind,
                        route.metadata.namespace
                    ),
                ));
                continue;
            }
            outcome(None);
            for l in allowed {
                let routes = by_listener.entry((g, l)).or_default();
                if !routes.contains(&id) {
                    routes.push(id);
                }
            }
        }
        if ours {
            parented.push(id);
        }
    }
    Attachments {
        by_listener,
        parented,
        parents,
    }
}

fn push_problem(
    diagnostics: &mut Vec<Diagnostic>,
    outcome: &mut impl FnMut(Option<&Diagnostic>),
    diagnostic: Diagnostic,
) {
    outcome(Some(&diagnostic));
    diagnostics.push(diagnostic);
}

fn allows(
    index: &Index<'_>,
    gateway: &GatewayView<'_>,
    listener: &ListenerView<'_>,
    route: &Route,
) -> bool {
    if listener.route_kind != Some(route.kind) {
        return false;
    }
    let namespaces = &listener.spec.allowed_routes.namespaces;
    let route_ns = &route.metadata.namespace;
    match namespaces.from {
        FromNamespaces::All => true,
        FromNamespaces::Same => *route_ns == gateway.gateway.metadata.namespace,
        // An absent selector selects nothing: `from: Selector` asks for a
        // choice, and guessing "all" would open the listener.
        FromNamespaces::Selector => namespaces
            .selector
            .as_ref()
            .is_some_and(|s| s.matches(&index.namespace_labels(route_ns))),
    }
}

/// ` (sectionName "x", port 80)`, or nothing for a bare parentRef.
fn selector_text(parent: &ParentReference) -> String {
    let mut parts = Vec::new();
    if let Some(section) = &parent.section_name {
        parts.push(format!("sectionName {section:?}"));
    }
    if let Some(port) = parent.port {
        parts.push(format!("port {port}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" {}", parts.join(" and "))
    }
}

fn route_diagnostic(
    route: &Route,
    parent: &ParentReference,
    reason: Reason,
    message: String,
) -> Diagnostic {
    let namespace = parent
        .namespace
        .as_deref()
        .unwrap_or(&route.metadata.namespace);
    let mut scope = format!("{namespace}/{}", parent.name);
    if let Some(section) = &parent.section_name {
        scope = format!("{scope}/{section}");
    }
    Diagnostic::new(
        route.kind.as_str(),
        &route.metadata.namespace,
        &route.metadata.name,
        reason,
        message,
    )
    .on_parent(scope)
}
