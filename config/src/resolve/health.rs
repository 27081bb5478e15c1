//! Which TrafficPolicy's `spec.healthCheck` probes the endpoints of each
//! listener's backendRefs. A policy may target a Service, a TCPRoute or
//! UDPRoute, one listener of a Gateway (`sectionName`) or a whole
//! Gateway; the target closest to the endpoints wins: a policy on the
//! backendRef's Service beats one on the route, which beats one on the
//! listener, which beats one on the Gateway. Between policies on the same
//! target the oldest wins, then the first by namespace/name (GEP-713's
//! conflict rule), and the others are `Conflicted` there.
//!
//! A Service target matches backendRefs of kind Service only: a
//! ServiceImport or an EndpointSelector with the same name is another
//! object, so their endpoints take a route's, listener's or Gateway's
//! check. A check on a UDP route or listener may probe over TCP or HTTP
//! (a UDP service with a TCP health port is common), so the probe type is
//! never judged against the protocol it guards.

use std::collections::HashMap;
use std::sync::Arc;

use super::backends::BackendKind;
use super::gateways::GatewayView;
use super::{Diagnostic, Index, Reason, RouteId};
use crate::snapshot::{BackendGroup, HealthCheck};

/// The winning check of each target, keyed by what a backendRef is
/// matched against.
#[derive(Debug, Default)]
pub(super) struct HealthChecks {
    /// By the Service's (namespace, name).
    on_service: HashMap<(String, String), Arc<HealthCheck>>,
    on_route: HashMap<RouteId, Arc<HealthCheck>>,
    /// By (gateway, listener) position in `gateways`.
    on_listener: HashMap<(usize, usize), Arc<HealthCheck>>,
    /// By gateway position in `gateways`.
    on_gateway: HashMap<usize, Arc<HealthCheck>>,
}

/// A target a check can be won on, in the order of specificity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Service(String, String),
    Route(RouteId),
    Listener(usize, usize),
    Gateway(usize),
}

impl HealthChecks {
    /// Every policy's check on every target it names, one winner per
    /// target. Gateway targets that do not exist are reported by
    /// `policy::listener_claims`, which judges every Gateway target;
    /// missing Services and routes are reported here, worded as
    /// `policy::affinities` words them so a policy setting both is told
    /// once.
    pub(super) fn new(
        index: &Index<'_>,
        gateways: &[GatewayView<'_>],
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Self {
        let position: HashMap<(&str, &str), usize> = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let m = &g.gateway.metadata;
                ((m.namespace.as_str(), m.name.as_str()), i)
            })
            .collect();
        // Per target: the winning check and its policy's `namespace/name`.
        let mut won: HashMap<Target, (Arc<HealthCheck>, String)> = HashMap::new();
        // Policies come oldest first, so the first to claim a target wins.
        for policy in &index.policies {
            let Some(spec) = &policy.spec.health_check else {
                continue;
            };
            let meta = &policy.metadata;
            let diagnostic = |reason, message: String, parent: String| {
                Diagnostic::new(
                    "TrafficPolicy",
                    &meta.namespace,
                    &meta.name,
                    reason,
                    message,
                )
                .on_parent(parent)
            };
            let check = match spec.health_check(meta.key()) {
                Ok(check) => Arc::new(check),
                // The loader refuses such a policy; one built otherwise is
                // not applied, and says why.
                Err(why) => {
                    diagnostics.push(Diagnostic::new(
                        "TrafficPolicy",
                        &meta.namespace,
                        &meta.name,
                        Reason::Invalid,
                        format!("spec.{why}; the health check is not applied"),
                    ));
                    continue;
                }
            };
            for target in &policy.spec.target_refs {
                let mut scope = format!("{}/{}", meta.namespace, target.name);
                let key = if target.is_service() {
                    let key = (meta.namespace.as_str(), target.name.as_str());
                    if !index.services.contains_key(&key) {
                        diagnostics.push(diagnostic(
                            Reason::TargetNotFound,
                            format!(
                                "{} {}/{} does not exist",
                                target.kind, meta.namespace, target.name
                            ),
                            scope,
                        ));
                        continue;
                    }
                    Target::Service(meta.namespace.clone(), target.name.clone())
                } else if let Some(kind) = target.route_kind() {
                    let Some(r) = index.routes.iter().position(|r| {
                        r.kind == kind
                            && r.metadata.namespace == meta.namespace
                            && r.metadata.name == target.name
                    }) else {
                        diagnostics.push(diagnostic(
                            Reason::TargetNotFound,
                            format!(
                                "{} {}/{} does not exist",
                                target.kind, meta.namespace, target.name
                            ),
                            scope,
                        ));
                        continue;
                    };
                    Target::Route(RouteId(r))
                } else if target.is_gateway() {
                    let at = (meta.namespace.as_str(), target.name.as_str());
                    let Some(&g) = position.get(&at) else {
                        continue;
                    };
                    match &target.section_name {
                        Some(section) => {
                            scope = format!("{scope}/{section}");
                            let listeners = &gateways[g].listeners;
                            let Some(l) = listeners.iter().position(|l| l.spec.name == *section)
                            else {
                                continue;
                            };
                            Target::Listener(g, l)
                        }
                        None => Target::Gateway(g),
                    }
                } else {
                    // Reported by `policy::listener_claims`.
                    continue;
                };
                let what = match key {
                    Target::Listener(..) => "listener",
                    _ => target.kind.as_str(),
                };
                match won.get(&key) {
                    Some((_, winner)) => diagnostics.push(diagnostic(
                        Reason::Conflicted,
                        format!(
                            "spec.healthCheck on {what} {scope} is set by TrafficPolicy {winner}, \
                             which targets it as specifically and is older (or as old and first \
                             by namespace/name)"
                        ),
                        scope,
                    )),
                    None => {
                        won.insert(key, (check.clone(), meta.key()));
                    }
                }
            }
        }
        let mut out = Self::default();
        for (target, (check, _)) in won {
            match target {
                Target::Service(namespace, name) => {
                    out.on_service.insert((namespace, name), check);
                }
                Target::Route(r) => {
                    out.on_route.insert(r, check);
                }
                Target::Listener(g, l) => {
                    out.on_listener.insert((g, l), check);
                }
                Target::Gateway(g) => {
                    out.on_gateway.insert(g, check);
                }
            }
        }
        out
    }

    /// Sets the check of each of `groups`, the backendRefs (in rule and
    /// list order) of route `carrier` as listener `l` of gateway `g`
    /// serves them.
    pub(super) fn apply(
        &self,
        index: &Index<'_>,
        (g, l): (usize, usize),
        carrier: RouteId,
        groups: &mut [BackendGroup],
    ) {
        let route = index.routes[carrier.0];
        let wider = self
            .on_route
            .get(&carrier)
            .or_else(|| self.on_listener.get(&(g, l)))
            .or_else(|| self.on_gateway.get(&g));
        let refs = route.spec.rules.iter().flat_map(|rule| &rule.backend_refs);
        for (backend, group) in refs.zip(groups) {
            let namespace = backend
                .namespace
                .as_deref()
                .unwrap_or(&route.metadata.namespace);
            let own = match BackendKind::of(backend) {
                Some(BackendKind::Service) => self
                    .on_service
                    .get(&(namespace.to_owned(), backend.name.clone())),
                _ => None,
            };
            group.health_check = own.or(wider).cloned();
        }
    }
}
