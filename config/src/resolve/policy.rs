//! Switchyard's `TrafficPolicy` (GEP-713 direct policy attachment): which
//! policy sets the Maglev table size of each listener. A policy applies to
//! objects in its own namespace; a targetRef with a sectionName (a listener
//! name) is more specific than one naming the whole Gateway and overrides
//! it. Between policies equally specific, the oldest wins, then the first
//! by namespace/name (Gateway API's conflict rule); the others are
//! `Conflicted` there. Policies setting nothing a target can use still have
//! their targets checked, so a typo is reported before it matters.
//!
//! Session affinity (`spec.sessionAffinity`) targets TCPRoutes, UDPRoutes
//! and Services, never Gateways. A route's listeners hash by client address
//! when a policy on the route says `ClientIP`; failing that, when the
//! route's only backendRef is a Service with a `ClientIP` policy or its own
//! `spec.sessionAffinity: ClientIP`. A policy on the route beats one on the
//! Service (`type: None` there switches affinity off), and a policy on the
//! Service beats the Service's own spec. With several backendRefs the
//! listener's one flat table cannot keep a client on the Service's
//! endpoints without breaking the weights, so Service-level affinity is not
//! applied there: the policy (or Service) gets `Degraded` with reason
//! `AffinityNotApplied`, naming the route as parent. A ServiceImport's own
//! `spec.sessionAffinity` counts as a Service's does.
//!
//! GEP-3539 maps a Service's other features to the route; a TrafficPolicy
//! on a TCPRoute or UDPRoute sets them for all its backendRefs, each
//! setting won by the oldest policy setting it:
//! - `publishNotReadyAddresses`: overrides the backend's own (a Service's
//!   or EndpointSelector's field of that name), either way.
//! - `ipFamilies`/`ipFamilyPolicy`: `SingleStack` (the default when
//!   families are listed) keeps the endpoints of its one family (`IPv4`
//!   when none is listed), as a single-stack Service has a ClusterIP of
//!   that family only: the Gateway's addresses of the other family get no
//!   endpoint of the route. `PreferDualStack` and `RequireDualStack` keep
//!   both, each served on the Gateway's addresses of its family (see
//!   `backends::FamilyGroups`). Which family is primary only matters to a
//!   Service's ClusterIP, which here is the Gateway's address, so the
//!   order of `ipFamilies` decides nothing.
//! - `externalTrafficPolicy`: `Local` asks that clients keep their source
//!   address and that traffic not take a second hop through another node.
//!   Switchyard forwards straight to the endpoints with the client's
//!   address (DNAT), so `Local` and `Cluster` both hold as they are.
//! - `internalTrafficPolicy`: `Local` means "only endpoints on the
//!   client's node". An LB node has no endpoints of its own and does not
//!   know its clients' nodes, so honouring it would refuse all traffic; it
//!   is reported `Accepted=False/UnsupportedValue` and `Cluster` is used.
//!
//! `spec.healthCheck` applies to all four target kinds (Service, TCPRoute,
//! UDPRoute, Gateway or listener); `health` says which check each
//! backendRef takes.

use std::collections::HashMap;

use super::backends::{BackendKind, EndpointSettings, FamilyGroups};
use super::gateways::GatewayView;
use super::{Diagnostic, Index, Reason, RouteId};
use crate::resources::{BackendRef, TrafficLocality, TrafficPolicy};
use crate::snapshot::{Affinity, SlotTableSize};

/// Below this many slots per backend, Maglev's promise that a backend
/// change moves few other flows weakens (the paper's M >= 100 N).
pub(super) const SLOTS_PER_BACKEND: usize = 100;

/// The table size a policy sets on one listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableSize<'a> {
    pub size: SlotTableSize,
    pub policy: &'a TrafficPolicy,
}

/// Which policies target each listener: per `(gateway, listener)`
/// position in `gateways`, `(section-specific?, rank in index.policies)`
/// of every policy that sets something of a Gateway's listeners and names
/// the listener or its Gateway (policies rank oldest first). Targets that
/// are not there, or of a kind no such setting applies to, are reported
/// here, once.
pub(super) fn listener_claims(
    index: &Index<'_>,
    gateways: &[GatewayView<'_>],
    diagnostics: &mut Vec<Diagnostic>,
) -> ListenerClaims {
    let position: HashMap<(&str, &str), usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let m = &g.gateway.metadata;
            ((m.namespace.as_str(), m.name.as_str()), i)
        })
        .collect();

    // (listener) -> (section-specific?, rank in `index.policies`), where
    // rank orders policies oldest first.
    let mut candidates: ListenerClaims = HashMap::new();
    for (rank, policy) in index.policies.iter().enumerate() {
        let meta = &policy.metadata;
        let sets_size = policy.spec.sets_listener_settings();
        let diagnostic = |reason, message: String| {
            Diagnostic::new(
                "TrafficPolicy",
                &meta.namespace,
                &meta.name,
                reason,
                message,
            )
        };
        let sets_affinity = policy.spec.session_affinity.is_some();
        let sets_route = policy.spec.sets_route_endpoints();
        // Applies to all four target kinds; resolved by `health`.
        let sets_health = policy.spec.health_check.is_some();
        for target in &policy.spec.target_refs {
            let affinity_target = target.route_kind().is_some() || target.is_service();
            // Scoped to the target, so status reports it on that ancestor.
            let mut scope = format!("{}/{}", meta.namespace, target.name);
            if let Some(section) = &target.section_name {
                scope = format!("{scope}/{section}");
            }
            if affinity_target && (sets_affinity || sets_route || sets_health) {
                // Resolved by `affinities`, `endpoint_settings` and
                // `health`; what else the policy sets does not apply here.
                if sets_size {
                    diagnostics.push(
                        diagnostic(
                            Reason::Invalid,
                            format!(
                                "targetRef {} {:?}: spec.maglev, spec.forwarding, \
                                 spec.sourceRanges and spec.limits apply to Gateways and their \
                                 listeners, not to this kind",
                                target.kind, target.name
                            ),
                        )
                        .on_parent(scope),
                    );
                }
                continue;
            }
            if !target.is_gateway() {
                diagnostics.push(
                    diagnostic(
                        Reason::Invalid,
                        format!(
                        "targetRef {} {:?} (group {:?}): no TrafficPolicy setting applies to this \
                         kind; spec.maglev, spec.forwarding, spec.sourceRanges and spec.limits \
                         apply to Gateways (group gateway.networking.k8s.io), \
                         spec.sessionAffinity to TCPRoutes, UDPRoutes (group \
                         gateway.networking.k8s.io) and Services (group \"\"), the Service \
                         settings (publishNotReadyAddresses, ipFamilies, ipFamilyPolicy, \
                         externalTrafficPolicy, internalTrafficPolicy) to TCPRoutes and \
                         UDPRoutes, spec.healthCheck to all four",
                        target.kind, target.name, target.group
                    ),
                    )
                    .on_parent(scope),
                );
                continue;
            }
            if sets_route {
                diagnostics.push(
                    diagnostic(
                        Reason::Invalid,
                        format!(
                        "targetRef Gateway {:?}: the Service settings (publishNotReadyAddresses, \
                         ipFamilies, ipFamilyPolicy, externalTrafficPolicy, \
                         internalTrafficPolicy) do not apply to Gateways; target the TCPRoute or \
                         UDPRoute instead",
                        target.name
                    ),
                    )
                    .on_parent(scope.clone()),
                );
            }
            if sets_affinity {
                diagnostics.push(
                    diagnostic(
                        Reason::Invalid,
                        format!(
                        "targetRef Gateway {:?}: spec.sessionAffinity does not apply to Gateways; \
                         target the TCPRoute, UDPRoute or Service instead",
                        target.name
                    ),
                    )
                    .on_parent(scope.clone()),
                );
            }
            let key = (meta.namespace.as_str(), target.name.as_str());
            let Some(&g) = position.get(&key) else {
                let why = if index.gateways.contains_key(&key) {
                    "is not Switchyard's: its GatewayClass names another controller"
                } else {
                    "does not exist"
                };
                diagnostics.push(
                    diagnostic(
                        Reason::TargetNotFound,
                        format!("Gateway {}/{} {why}", meta.namespace, target.name),
                    )
                    .on_parent(format!("{}/{}", meta.namespace, target.name)),
                );
                continue;
            };
            let listeners = &gateways[g].listeners;
            match &target.section_name {
                Some(section) => match listeners.iter().position(|l| l.spec.name == *section) {
                    Some(l) if sets_size => {
                        candidates.entry((g, l)).or_default().push((true, rank));
                    }
                    Some(_) => {}
                    None => diagnostics.push(
                        diagnostic(
                            Reason::TargetNotFound,
                            format!(
                                "Gateway {}/{} has no listener {section:?}",
                                meta.namespace, target.name
                            ),
                        )
                        .on_parent(format!("{}/{}/{section}", meta.namespace, target.name)),
                    ),
                },
                None if sets_size => {
                    for l in 0..listeners.len() {
                        candidates.entry((g, l)).or_default().push((false, rank));
                    }
                }
                None => {}
            }
        }
    }

    candidates
}

/// Per listener, the policies naming it (see `listener_claims`).
pub(super) type ListenerClaims = HashMap<(usize, usize), Vec<(bool, usize)>>;

/// A setting of a Gateway's listeners, won per listener by one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListenerSetting {
    TableSize,
    Forwarding,
    SourceRanges,
    Limits,
}

impl ListenerSetting {
    fn field(self) -> &'static str {
        match self {
            Self::TableSize => "spec.maglev.tableSize",
            Self::Forwarding => "spec.forwarding",
            Self::SourceRanges => "spec.sourceRanges",
            Self::Limits => "spec.limits",
        }
    }

    fn is_set(self, policy: &TrafficPolicy) -> bool {
        let spec = &policy.spec;
        match self {
            Self::TableSize => spec.maglev.as_ref().is_some_and(|m| m.table_size.is_some()),
            Self::Forwarding => spec.forwarding.is_some(),
            Self::SourceRanges => spec.source_ranges.is_some(),
            Self::Limits => spec.limits.is_some(),
        }
    }
}

/// Per listener, the policy whose `setting` applies there: the most
/// specific (a sectionName beats the whole Gateway), then the oldest.
/// Policies as specific that set it too are `Conflicted` on that listener.
pub(super) fn winners<'a>(
    index: &Index<'a>,
    gateways: &[GatewayView<'a>],
    claims: &ListenerClaims,
    setting: ListenerSetting,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<(usize, usize), &'a TrafficPolicy> {
    let mut out = HashMap::new();
    for (&(g, l), claims) in claims {
        let mut claims: Vec<(bool, usize)> = claims
            .iter()
            .copied()
            .filter(|&(_, rank)| setting.is_set(index.policies[rank]))
            .collect();
        if claims.is_empty() {
            continue;
        }
        // Most specific first, then oldest; a policy naming the listener
        // both ways counts once, at its most specific.
        claims.sort_by_key(|&(specific, rank)| (!specific, rank));
        claims.dedup_by_key(|c| c.1);
        let (specific, winner) = claims[0];
        let policy = index.policies[winner];
        let listener = format!(
            "{}/{}",
            gateways[g].gateway.metadata.key(),
            gateways[g].listeners[l].spec.name
        );
        for &(other_specific, rank) in &claims[1..] {
            if other_specific != specific {
                continue;
            }
            let loser = &index.policies[rank].metadata;
            diagnostics.push(
                Diagnostic::new(
                    "TrafficPolicy",
                    &loser.namespace,
                    &loser.name,
                    Reason::Conflicted,
                    format!(
                        "{} on listener {listener} is set by TrafficPolicy {}, which targets it \
                         as specifically and is older (or as old and first by namespace/name)",
                        setting.field(),
                        policy.metadata.key()
                    ),
                )
                .on_parent(listener.clone()),
            );
        }
        out.insert((g, l), policy);
    }
    out
}

/// Per `(gateway, listener)` position in `gateways`: the winning policy's
/// table size. Listeners without one keep `SLOT_TABLE_SIZE`.
pub(super) fn table_sizes<'a>(
    index: &Index<'a>,
    gateways: &[GatewayView<'a>],
    claims: &ListenerClaims,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<(usize, usize), TableSize<'a>> {
    let mut sizes = HashMap::new();
    for ((g, l), policy) in winners(
        index,
        gateways,
        claims,
        ListenerSetting::TableSize,
        diagnostics,
    ) {
        let listener = format!(
            "{}/{}",
            gateways[g].gateway.metadata.key(),
            gateways[g].listeners[l].spec.name
        );
        let asked = policy.spec.maglev.as_ref().and_then(|m| m.table_size);
        let size = match asked.map(|s| SlotTableSize::new(s as usize)) {
            None => Some(SlotTableSize::DEFAULT),
            Some(Ok(size)) => Some(size),
            // The schema lets only primes through (`schema::opt_table_size`),
            // so this is a bug; reported like a value Switchyard does not
            // serve, with the listener keeping the default size.
            Some(Err(error)) => {
                diagnostics.push(
                    Diagnostic::new(
                        "TrafficPolicy",
                        &policy.metadata.namespace,
                        &policy.metadata.name,
                        Reason::UnsupportedValue,
                        format!("spec.maglev.tableSize: {error}; the default size is used"),
                    )
                    .on_parent(listener.clone()),
                );
                None
            }
        };
        if let Some(size) = size {
            sizes.insert((g, l), TableSize { size, policy });
        }
    }
    sizes
}

/// `TableTooSmall` when a policy's table gives the listener's backends
/// fewer than `SLOTS_PER_BACKEND` slots each. The size is still used.
pub(super) fn check_size(
    size: &TableSize<'_>,
    listener: &str,
    backends: usize,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let wanted = backends.saturating_mul(SLOTS_PER_BACKEND);
    if size.size.get() >= wanted {
        return;
    }
    let meta = &size.policy.metadata;
    diagnostics.push(
        Diagnostic::new(
            "TrafficPolicy",
            &meta.namespace,
            &meta.name,
            Reason::TableTooSmall,
            format!(
                "spec.maglev.tableSize {} is below {SLOTS_PER_BACKEND} slots for each of the \
                 {backends} backends of listener {listener} (at least {wanted}): a backend change \
                 moves more of the other backends' flows; the size is used anyway",
                size.size.get()
            ),
        )
        .on_parent(listener.to_owned()),
    );
}

/// The route-level Service settings, one winner per setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteSetting {
    PublishNotReadyAddresses,
    IpFamilies,
    ExternalTrafficPolicy,
    InternalTrafficPolicy,
}

impl RouteSetting {
    const ALL: [Self; 4] = [
        Self::PublishNotReadyAddresses,
        Self::IpFamilies,
        Self::ExternalTrafficPolicy,
        Self::InternalTrafficPolicy,
    ];

    fn field(self) -> &'static str {
        match self {
            Self::PublishNotReadyAddresses => "spec.publishNotReadyAddresses",
            Self::IpFamilies => "spec.ipFamilies/ipFamilyPolicy",
            Self::ExternalTrafficPolicy => "spec.externalTrafficPolicy",
            Self::InternalTrafficPolicy => "spec.internalTrafficPolicy",
        }
    }

    fn is_set(self, policy: &TrafficPolicy) -> bool {
        let spec = &policy.spec;
        match self {
            Self::PublishNotReadyAddresses => spec.publish_not_ready_addresses.is_some(),
            Self::IpFamilies => !spec.ip_families.is_empty() || spec.ip_family_policy.is_some(),
            Self::ExternalTrafficPolicy => spec.external_traffic_policy.is_some(),
            Self::InternalTrafficPolicy => spec.internal_traffic_policy.is_some(),
        }
    }
}

/// Per route targeted by a policy with Service settings: how its
/// backendRefs' endpoints are picked (see the module docs).
pub(super) fn endpoint_settings(
    index: &Index<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<RouteId, EndpointSettings> {
    // (route, setting) -> winning rank; policies are visited oldest first.
    let mut winners: HashMap<(RouteId, usize), usize> = HashMap::new();
    for (rank, policy) in index.policies.iter().enumerate() {
        if !policy.spec.sets_route_endpoints() {
            continue;
        }
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
        for target in &policy.spec.target_refs {
            let parent = format!("{}/{}", meta.namespace, target.name);
            let Some(kind) = target.route_kind() else {
                if target.is_service() {
                    diagnostics.push(diagnostic(
                        Reason::Invalid,
                        format!(
                            "targetRef Service {:?}: the Service settings (publishNotReadyAddresses, \
                             ipFamilies, ipFamilyPolicy, externalTrafficPolicy, \
                             internalTrafficPolicy) apply to TCPRoutes and UDPRoutes; they are not \
                             applied to this target",
                            target.name
                        ),
                        parent,
                    ));
                }
                // Other kinds are reported by `table_sizes`.
                continue;
            };
            let Some(r) = index.routes.iter().position(|r| {
                r.kind == kind
                    && r.metadata.namespace == meta.namespace
                    && r.metadata.name == target.name
            }) else {
                // Worded as in `affinities`, so a policy setting both is
                // reported once.
                diagnostics.push(diagnostic(
                    Reason::TargetNotFound,
                    format!(
                        "{} {}/{} does not exist",
                        target.kind, meta.namespace, target.name
                    ),
                    parent,
                ));
                continue;
            };
            let route = RouteId(r);
            for (s, setting) in RouteSetting::ALL.into_iter().enumerate() {
                if !setting.is_set(policy) {
                    continue;
                }
                match winners.get(&(route, s)) {
                    Some(&winner) if winner != rank => diagnostics.push(diagnostic(
                        Reason::Conflicted,
                        format!(
                            "{} on {} is set by TrafficPolicy {}, which is older (or as old and \
                             first by namespace/name)",
                            setting.field(),
                            index.routes[r].metadata.key(),
                            index.policies[winner].metadata.key()
                        ),
                        parent.clone(),
                    )),
                    Some(_) => {}
                    None => {
                        winners.insert((route, s), rank);
                    }
                }
            }
        }
    }

    let mut settings: HashMap<RouteId, EndpointSettings> = HashMap::new();
    for (&(route, s), &rank) in &winners {
        let policy = index.policies[rank];
        let entry = settings.entry(route).or_default();
        match RouteSetting::ALL[s] {
            RouteSetting::PublishNotReadyAddresses => {
                entry.publish_not_ready = policy.spec.publish_not_ready_addresses;
            }
            RouteSetting::IpFamilies => entry.family = policy.spec.kept_families(),
            RouteSetting::ExternalTrafficPolicy => {}
            RouteSetting::InternalTrafficPolicy => {
                if policy.spec.internal_traffic_policy == Some(TrafficLocality::Local) {
                    let route = index.routes[route.0];
                    diagnostics.push(
                        Diagnostic::new(
                            "TrafficPolicy",
                            &policy.metadata.namespace,
                            &policy.metadata.name,
                            Reason::UnsupportedValue,
                            format!(
                                "spec.internalTrafficPolicy Local is not supported on {} {}: it \
                                 keeps only endpoints on the client's node, and an LB node \
                                 neither has endpoints nor knows its clients' nodes; Cluster is \
                                 used",
                                route.kind,
                                route.metadata.key()
                            ),
                        )
                        .on_parent(route.metadata.key()),
                    );
                }
            }
        }
    }
    settings
}

/// Per carried route: the session affinity its listeners use. Routes
/// without affinity are absent.
pub(super) fn affinities(
    index: &Index<'_>,
    groups_of: &HashMap<RouteId, FamilyGroups>,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<RouteId, Affinity> {
    // Winning policy rank per route and per Service (namespace, name); a
    // policy targeting a route or Service is as specific as any other.
    let mut on_route: HashMap<RouteId, Vec<usize>> = HashMap::new();
    let mut on_service: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (rank, policy) in index.policies.iter().enumerate() {
        if policy.spec.session_affinity.is_none() {
            continue;
        }
        let meta = &policy.metadata;
        for target in &policy.spec.target_refs {
            let found = if let Some(kind) = target.route_kind() {
                let route = index.routes.iter().position(|r| {
                    r.kind == kind
                        && r.metadata.namespace == meta.namespace
                        && r.metadata.name == target.name
                });
                if let Some(r) = route {
                    on_route.entry(RouteId(r)).or_default().push(rank);
                }
                route.is_some()
            } else if target.is_service() {
                let key = (meta.namespace.as_str(), target.name.as_str());
                let exists = index.services.contains_key(&key);
                if exists {
                    on_service
                        .entry((meta.namespace.clone(), target.name.clone()))
                        .or_default()
                        .push(rank);
                }
                exists
            } else {
                // Reported by `table_sizes`.
                continue;
            };
            if !found {
                diagnostics.push(
                    Diagnostic::new(
                        "TrafficPolicy",
                        &meta.namespace,
                        &meta.name,
                        Reason::TargetNotFound,
                        format!(
                            "{} {}/{} does not exist",
                            target.kind, meta.namespace, target.name
                        ),
                    )
                    .on_parent(format!("{}/{}", meta.namespace, target.name)),
                );
            }
        }
    }
    let mut winner = |target: String, ranks: &mut Vec<usize>| -> usize {
        ranks.sort_unstable();
        ranks.dedup();
        for &loser in &ranks[1..] {
            let meta = &index.policies[loser].metadata;
            diagnostics.push(
                Diagnostic::new(
                    "TrafficPolicy",
                    &meta.namespace,
                    &meta.name,
                    Reason::Conflicted,
                    format!(
                        "spec.sessionAffinity on {target} is set by TrafficPolicy {}, which is \
                         older (or as old and first by namespace/name)",
                        index.policies[ranks[0]].metadata.key()
                    ),
                )
                .on_parent(target.clone()),
            );
        }
        ranks[0]
    };
    let route_winner: HashMap<RouteId, usize> = on_route
        .into_iter()
        .map(|(r, mut ranks)| {
            let name = index.routes[r.0].metadata.key();
            (r, winner(name, &mut ranks))
        })
        .collect();
    let service_winner: HashMap<(String, String), usize> = on_service
        .into_iter()
        .map(|(s, mut ranks)| {
            let name = format!("{}/{}", s.0, s.1);
            (s, winner(name, &mut ranks))
        })
        .collect();

    // What a backend asks for: (timeout or off, the policy asking, if any).
    let backend_level = |backend: &BackendRef,
                         namespace: &str|
     -> Option<(Option<u32>, Option<usize>)> {
        let name = backend.name.as_str();
        match BackendKind::of(backend)? {
            BackendKind::Service => {
                if let Some(&rank) = service_winner.get(&(namespace.to_owned(), name.to_owned())) {
                    let affinity = index.policies[rank].spec.session_affinity.as_ref()?;
                    return Some((affinity.client_ip_timeout(), Some(rank)));
                }
                let svc = index.services.get(&(namespace, name))?;
                Some((Some(svc.spec.client_ip_affinity()?), None))
            }
            BackendKind::ServiceImport => {
                let import = index.backends.imports.get(&(namespace, name))?;
                Some((Some(import.spec.client_ip_affinity()?), None))
            }
            BackendKind::EndpointSelector => None,
        }
    };

    let mut affinities = HashMap::new();
    let mut routes: Vec<&RouteId> = groups_of.keys().collect();
    routes.sort();
    for &route_id in routes {
        let groups = &groups_of[&route_id];
        let route = index.routes[route_id.0];
        // One group per backendRef, in the same order.
        let refs: Vec<(&BackendRef, &str)> = route
            .spec
            .rules
            .iter()
            .flat_map(|rule| &rule.backend_refs)
            .map(|b| {
                let namespace = b.namespace.as_deref().unwrap_or(&route.metadata.namespace);
                (b, namespace)
            })
            .collect();
        if let Some(&rank) = route_winner.get(&route_id) {
            let policy = index.policies[rank].spec.session_affinity.as_ref();
            if let Some(timeout_secs) = policy.and_then(|p| p.client_ip_timeout()) {
                affinities.insert(route_id, Affinity { timeout_secs });
            }
            continue;
        }
        if let [(only, namespace)] = refs.as_slice() {
            if let Some((Some(timeout_secs), _)) = backend_level(only, namespace) {
                affinities.insert(route_id, Affinity { timeout_secs });
            }
            continue;
        }
        for &(backend, namespace) in &refs {
            let Some((Some(_), rank)) = backend_level(backend, namespace) else {
                continue;
            };
            let kind = BackendKind::of(backend).map_or("Service", BackendKind::as_str);
            let message = format!(
                "{} {} has {} backendRefs; ClientIP affinity of {kind} {namespace}/{} is applied \
                 only when the {kind} is a route's only backendRef (or set it on the route with a \
                 TrafficPolicy)",
                route.kind.as_str(),
                route.metadata.key(),
                groups.len(),
                backend.name
            );
            let diagnostic = match rank {
                Some(rank) => {
                    let meta = &index.policies[rank].metadata;
                    Diagnostic::new(
                        "TrafficPolicy",
                        &meta.namespace,
                        &meta.name,
                        Reason::AffinityNotApplied,
                        message,
                    )
                }
                None => Diagnostic::new(
                    kind,
                    namespace,
                    &backend.name,
                    Reason::AffinityNotApplied,
                    message,
                ),
            };
            diagnostics.push(diagnostic.on_parent(route.metadata.key()));
        }
    }
    affinities
}
