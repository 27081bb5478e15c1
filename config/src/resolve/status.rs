//! Status from resolution's facts: each object's conditions start from the
//! spec's positive reasons (`Accepted`, `Programmed`, `ResolvedRefs`,
//! `NoConflicts`) and every diagnostic about the object, in its scope,
//! replaces the condition of its type. Nothing is decided here that
//! resolution did not already decide; this only says it the way the
//! Gateway API does.
//!
//! Backends (Services, ServiceImports, EndpointSelectors) have no Gateway
//! API status; one that a diagnostic is about gets its conditions anyway,
//! the problems only (there is no positive form to start from), so that
//! `check -o json|yaml` shows every diagnostic where the object is.

use std::collections::{BTreeMap, HashSet};

use super::attach::Attachments;
use super::gateways::{GatewayView, ListenerView};
use super::policy::SLOTS_PER_BACKEND;
use super::Reason;
use super::{ConditionType, Diagnostic, Index, RouteId, CONTROLLER_NAME};
use crate::pools::ClassType;
use crate::resources::{
    GatewayClass, ObjectMeta, ParentReference, PolicyTargetReference, Resources, Route,
    TrafficPolicy, GATEWAY_GROUP,
};
use crate::schema::{MAX_TABLE_SIZE, MIN_TABLE_SIZE};
use crate::snapshot::SlotTableSize;
use crate::status::{
    Condition, ConditionStatus, GatewayClassStatus, GatewayStatus, GatewayStatusAddress,
    ListenerStatus, ObjectReference, ObjectStatus, PolicyAncestorStatus, PolicyStatus,
    ResourceStatus, RouteGroupKind, RouteParentStatus, RouteStatus, Status, StatusMetadata,
    GATEWAY_API_VERSION, SERVICE_IMPORT_API_VERSION, SWITCHYARD_API_VERSION,
};

/// The facts status is built from.
pub(super) struct Facts<'r, 'a> {
    pub resources: &'r Resources,
    pub index: &'r Index<'a>,
    pub gateways: &'r [GatewayView<'a>],
    pub attachments: &'r Attachments,
    /// Sorted: messages of one condition come in a stable order.
    pub diagnostics: &'r [Diagnostic],
}

/// Every object Switchyard answers for, ordered by kind (GatewayClass,
/// Gateway, TCPRoute/UDPRoute, TrafficPolicy), then namespace and name.
pub(super) fn build(facts: &Facts<'_, '_>) -> Vec<ResourceStatus> {
    let mut about: BTreeMap<(&str, &str, &str), Vec<&Diagnostic>> = BTreeMap::new();
    for d in facts.diagnostics {
        about
            .entry((d.kind.as_str(), d.namespace.as_str(), d.name.as_str()))
            .or_default()
            .push(d);
    }
    let of = |kind: &str, meta: &ObjectMeta| -> Vec<&Diagnostic> {
        about
            .get(&(kind, meta.namespace.as_str(), meta.name.as_str()))
            .cloned()
            .unwrap_or_default()
    };

    let mut out = Vec::new();
    let mut classes: Vec<&GatewayClass> = facts
        .resources
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .collect();
    classes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.extend(classes.into_iter().map(|class| {
        // Cluster-scoped: diagnostics name it without a namespace.
        let about = about
            .get(&("GatewayClass", "", class.metadata.name.as_str()))
            .cloned()
            .unwrap_or_default();
        gateway_class(class, &about)
    }));
    for view in facts.gateways {
        let meta = &view.gateway.metadata;
        out.push(gateway(facts, view, &of("Gateway", meta)));
    }
    let mut routes: Vec<ResourceStatus> = routes(facts, &|route: &Route| {
        of(route.kind.as_str(), &route.metadata)
    });
    routes.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name, &a.kind).cmp(&(
            &b.metadata.namespace,
            &b.metadata.name,
            &b.kind,
        ))
    });
    out.extend(routes);
    let mut policies: Vec<&TrafficPolicy> = facts.resources.traffic_policies.iter().collect();
    policies.sort_by_key(|p| (&p.metadata.namespace, &p.metadata.name));
    for policy in policies {
        out.push(traffic_policy(
            policy,
            &of("TrafficPolicy", &policy.metadata),
        ));
    }
    // Backends have no Gateway API status; what resolution has to say
    // about one is still status of that object, not only a log line.
    for ((kind, namespace, name), diagnostics) in &about {
        let Some(api_version) = backend_api_version(kind) else {
            continue;
        };
        let index = facts.index;
        let key = (*namespace, *name);
        let meta = match *kind {
            "Service" => index.services.get(&key).map(|s| &s.metadata),
            "ServiceImport" => index.backends.imports.get(&key).map(|i| &i.metadata),
            _ => index.backends.selectors.get(&key).map(|s| &s.metadata),
        };
        let generation = meta.map_or(1, generation);
        let mut conditions = Vec::new();
        overlay(&mut conditions, diagnostics.iter().copied(), generation);
        out.push(ResourceStatus {
            api_version: api_version.to_owned(),
            kind: (*kind).to_owned(),
            metadata: StatusMetadata {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            },
            status: Status::Object(ObjectStatus { conditions }),
        });
    }
    out
}

/// `apiVersion` of the backend kinds diagnostics may be about.
fn backend_api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Service" => Some("v1"),
        "ServiceImport" => Some(SERVICE_IMPORT_API_VERSION),
        "EndpointSelector" => Some(SWITCHYARD_API_VERSION),
        _ => None,
    }
}

/// `metadata.generation`, which the API server sets on create and bumps on
/// every spec change. A file has no API server; an object that has not
/// been through one would get generation 1 on create, so that is what an
/// absent value means.
fn generation(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or(1)
}

fn metadata(meta: &ObjectMeta) -> StatusMetadata {
    StatusMetadata {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    }
}

fn condition(
    condition_type: ConditionType,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
) -> Condition {
    Condition {
        condition_type: format!("{condition_type:?}"),
        status: ConditionStatus::from_bool(ok),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
    }
}

/// Lays diagnostics over positive conditions: the first diagnostic of a
/// type replaces that condition (or adds it, for types with no positive
/// form such as `Degraded`); later ones of the same type add their message.
fn overlay<'d>(
    conditions: &mut Vec<Condition>,
    diagnostics: impl IntoIterator<Item = &'d Diagnostic>,
    generation: i64,
) {
    let mut replaced: HashSet<String> = HashSet::new();
    for d in diagnostics {
        let condition_type = format!("{:?}", d.condition);
        let problem = condition(
            d.condition,
            d.condition.problem_status(),
            d.reason.as_str(),
            d.message.clone(),
            generation,
        );
        match conditions
            .iter_mut()
            .find(|c| c.condition_type == condition_type)
        {
            Some(existing) if replaced.contains(&condition_type) => {
                if !existing.message.contains(&d.message) {
                    existing.message = format!("{}; {}", existing.message, d.message);
                }
            }
            Some(existing) => *existing = problem,
            None => conditions.push(problem),
        }
        replaced.insert(condition_type);
    }
}

/// Puts `new` in place of the condition of its type.
fn replace(conditions: &mut [Condition], new: Condition) {
    if let Some(old) = conditions
        .iter_mut()
        .find(|c| c.condition_type == new.condition_type)
    {
        *old = new;
    }
}

fn is_true(conditions: &[Condition], condition_type: ConditionType) -> bool {
    crate::status::condition(conditions, &format!("{condition_type:?}"))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

// ----------------------------------------------------------- TableTooSmall

/// `Degraded=True TableTooSmall` on a Gateway listener whose Maglev table
/// gives its `backends` fewer than `SLOTS_PER_BACKEND` slots each, whether
/// the size is the default or a TrafficPolicy's (`policy`): Maglev then
/// moves more of the other backends' flows on every backend change and
/// shares follow weights less closely. The table is still used. The
/// message names the size that would be enough: the smallest prime a
/// TrafficPolicy may set that gives each backend its slots, or the
/// largest one when none does.
pub(super) fn table_too_small(
    gateway: &crate::resources::Gateway,
    listener: &str,
    size: SlotTableSize,
    policy: Option<&ObjectMeta>,
    backends: usize,
) -> Option<Diagnostic> {
    let wanted = backends.saturating_mul(SLOTS_PER_BACKEND);
    if backends == 0 || size.get() >= wanted {
        return None;
    }
    let max = MAX_TABLE_SIZE as usize;
    let enough =
        (wanted.max(MIN_TABLE_SIZE as usize)..=max).find(|&n| crate::maglev::is_prime(n as u64));
    let set_by = match policy {
        Some(meta) => format!("set by TrafficPolicy {}/{}", meta.namespace, meta.name),
        None => "the default".to_owned(),
    };
    let advice = match enough {
        Some(enough) => format!("a spec.maglev.tableSize of {enough} would be enough"),
        None => format!(
            "even the largest spec.maglev.tableSize, {max}, gives each about {} slots",
            max / backends
        ),
    };
    Some(
        Diagnostic::about_gateway(
            gateway,
            Reason::TableTooSmall,
            format!(
                "the Maglev table has {} slots ({set_by}) for {backends} backends, fewer than \
                 {SLOTS_PER_BACKEND} each, so a backend change moves more of the other \
                 backends' flows; {advice}",
                size.get()
            ),
        )
        .on_listener(listener),
    )
}

// ------------------------------------------------------------ GatewayClass

/// A class is accepted unless resolution said otherwise (its
/// `parametersRef` names no usable `GatewayClassConfig`).
fn gateway_class(class: &GatewayClass, about: &[&Diagnostic]) -> ResourceStatus {
    let generation = generation(&class.metadata);
    let mut conditions = vec![condition(
        ConditionType::Accepted,
        true,
        "Accepted",
        "Switchyard serves Gateways of this class",
        generation,
    )];
    overlay(&mut conditions, about.iter().copied(), generation);
    ResourceStatus {
        api_version: GATEWAY_API_VERSION.to_owned(),
        kind: "GatewayClass".to_owned(),
        metadata: StatusMetadata {
            namespace: String::new(),
            name: class.metadata.name.clone(),
        },
        status: Status::GatewayClass(GatewayClassStatus { conditions }),
    }
}

// ----------------------------------------------------------------- Gateway

/// Whether a listener has somewhere to be served: a VIP, a node port on
/// the node addresses, or (Headless, ExternalName) the Gateway's DNS name,
/// which is all those classes serve.
fn served(view: &GatewayView<'_>, listener: &ListenerView<'_>) -> bool {
    if view.refused {
        return false;
    }
    match view.class_type {
        ClassType::Headless => true,
        ClassType::ExternalName => view.external_name.is_some(),
        _ => {
            !view.addresses.is_empty()
                || (listener.node_port.is_some() && !view.node_addresses.is_empty())
        }
    }
}

fn gateway(facts: &Facts<'_, '_>, view: &GatewayView<'_>, about: &[&Diagnostic]) -> ResourceStatus {
    let meta = &view.gateway.metadata;
    let generation = generation(meta);
    let g = facts
        .gateways
        .iter()
        .position(|other| std::ptr::eq(other.gateway, view.gateway))
        .unwrap_or_default();
    let gateway_rejected = about
        .iter()
        .any(|d| d.listener.is_none() && d.condition == ConditionType::Accepted);
    let listeners: Vec<ListenerStatus> = view
        .listeners
        .iter()
        .enumerate()
        .map(|(l, listener)| {
            let name = &listener.spec.name;
            let supported_kinds: Vec<RouteGroupKind> = listener
                .route_kind
                .map(|kind| RouteGroupKind {
                    group: GATEWAY_GROUP.to_owned(),
                    kind: kind.as_str().to_owned(),
                })
                .into_iter()
                .collect();
            // `Programmed` is among the starting conditions so that a
            // diagnostic of that type (a node port that could not be
            // allocated) replaces it instead of standing beside it.
            let mut conditions = vec![
                condition(
                    ConditionType::Accepted,
                    true,
                    "Accepted",
                    "the listener is valid",
                    generation,
                ),
                condition(
                    ConditionType::Programmed,
                    true,
                    "Programmed",
                    "the listener is served",
                    generation,
                ),
                condition(
                    ConditionType::ResolvedRefs,
                    true,
                    "ResolvedRefs",
                    "all references are resolved",
                    generation,
                ),
                condition(
                    ConditionType::Conflicted,
                    false,
                    "NoConflicts",
                    "no other listener serves this address, port and protocol",
                    generation,
                ),
            ];
            let mine: Vec<&Diagnostic> = about
                .iter()
                .copied()
                .filter(|d| d.listener.as_deref() == Some(name.as_str()))
                .collect();
            overlay(&mut conditions, mine.iter().copied(), generation);
            let said = mine
                .iter()
                .any(|d| d.condition == ConditionType::Programmed);
            let not_programmed = |why: &str, message: &str| {
                Some(condition(
                    ConditionType::Programmed,
                    false,
                    why,
                    message,
                    generation,
                ))
            };
            let programmed = if !is_true(&conditions, ConditionType::Accepted) {
                not_programmed("Invalid", "the listener is not accepted")
            } else if is_true(&conditions, ConditionType::Conflicted) {
                not_programmed(
                    "Invalid",
                    "the listener conflicts with another one and carries no traffic",
                )
            } else if supported_kinds.is_empty() {
                not_programmed(
                    "Invalid",
                    "no route kind the listener allows can attach to it",
                )
            } else if said {
                // A diagnostic already says why (AddressNotAssigned).
                None
            } else if gateway_rejected {
                not_programmed("Invalid", "the Gateway is not accepted; see its conditions")
            } else if !served(view, listener) {
                not_programmed(
                    "Pending",
                    "the Gateway has no address to serve the listener on",
                )
            } else {
                None
            };
            if let Some(programmed) = programmed {
                replace(&mut conditions, programmed);
            }
            ListenerStatus {
                name: name.clone(),
                supported_kinds,
                attached_routes: u32::try_from(facts.attachments.attached(g, l))
                    .unwrap_or(u32::MAX),
                conditions,
            }
        })
        .collect();

    let own: Vec<&Diagnostic> = about
        .iter()
        .copied()
        .filter(|d| d.listener.is_none())
        .collect();
    let valid = |s: &ListenerStatus| {
        is_true(&s.conditions, ConditionType::Accepted)
            && is_true(&s.conditions, ConditionType::ResolvedRefs)
            && !is_true(&s.conditions, ConditionType::Conflicted)
    };
    let accepted_listeners = listeners
        .iter()
        .filter(|s| is_true(&s.conditions, ConditionType::Accepted))
        .count();
    // Gateway API: a Gateway with some invalid listeners is still accepted
    // (reason ListenersNotValid); with none accepted it is not.
    let accepted = if !listeners.is_empty() && accepted_listeners == 0 {
        condition(
            ConditionType::Accepted,
            false,
            "ListenersNotValid",
            "no listener is accepted",
            generation,
        )
    } else if !listeners.iter().all(valid) {
        condition(
            ConditionType::Accepted,
            true,
            "ListenersNotValid",
            "some listeners are not valid; see their conditions",
            generation,
        )
    } else {
        condition(
            ConditionType::Accepted,
            true,
            "Accepted",
            "Switchyard serves this Gateway",
            generation,
        )
    };
    let mut conditions = vec![accepted];
    overlay(
        &mut conditions,
        own.iter()
            .copied()
            .filter(|d| d.condition == ConditionType::Accepted),
        generation,
    );
    let programmed = if is_true(&conditions, ConditionType::Accepted) {
        condition(
            ConditionType::Programmed,
            true,
            "Programmed",
            "the Gateway's addresses are served",
            generation,
        )
    } else {
        condition(
            ConditionType::Programmed,
            false,
            "Invalid",
            "the Gateway is not accepted",
            generation,
        )
    };
    conditions.push(programmed);
    overlay(
        &mut conditions,
        own.iter()
            .copied()
            .filter(|d| d.condition != ConditionType::Accepted),
        generation,
    );
    ResourceStatus {
        api_version: GATEWAY_API_VERSION.to_owned(),
        kind: "Gateway".to_owned(),
        metadata: metadata(meta),
        status: Status::Gateway(GatewayStatus {
            addresses: view
                .status_addresses
                .iter()
                .map(|a| GatewayStatusAddress {
                    address_type: a.address_type.to_owned(),
                    value: a.value.clone(),
                })
                .collect(),
            conditions,
            listeners,
        }),
    }
}

// ------------------------------------------------------------------ routes

fn routes<'d>(
    facts: &Facts<'_, '_>,
    about: &dyn Fn(&Route) -> Vec<&'d Diagnostic>,
) -> Vec<ResourceStatus> {
    let mut by_route: BTreeMap<RouteId, Vec<&super::attach::ParentOutcome>> = BTreeMap::new();
    for outcome in &facts.attachments.parents {
        by_route.entry(outcome.route).or_default().push(outcome);
    }
    by_route
        .into_iter()
        .map(|(id, outcomes)| {
            let route = facts.index.routes[id.0];
            let generation = generation(&route.metadata);
            // Backends are resolved for routes with at least one of
            // Switchyard's Gateways as parent; a route whose parents all
            // do not exist gets no word on its backends.
            let resolved = facts.attachments.parented.contains(&id);
            let problems = about(route);
            let backend_problems: Vec<&Diagnostic> = problems
                .iter()
                .copied()
                .filter(|d| d.parent.is_none())
                .collect();
            let parents = outcomes
                .into_iter()
                .map(|outcome| {
                    let spec = &route.spec.parent_refs[outcome.parent_ref];
                    let accepted = match &outcome.problem {
                        None => condition(
                            ConditionType::Accepted,
                            true,
                            "Accepted",
                            "the route is attached",
                            generation,
                        ),
                        Some((reason, message)) => condition(
                            reason.condition(),
                            false,
                            reason.as_str(),
                            message.clone(),
                            generation,
                        ),
                    };
                    let mut conditions = vec![accepted];
                    if resolved {
                        conditions.push(condition(
                            ConditionType::ResolvedRefs,
                            true,
                            "ResolvedRefs",
                            "all backendRefs are resolved",
                            generation,
                        ));
                        overlay(
                            &mut conditions,
                            backend_problems.iter().copied(),
                            generation,
                        );
                    }
                    // Warnings about the backends on this parent's
                    // addresses (`NoEndpointsOfFamily`), scoped to the
                    // Gateway; attachment problems are `outcome.problem`.
                    if resolved && outcome.problem.is_none() {
                        let gateway = format!(
                            "{}/{}",
                            spec.namespace
                                .as_deref()
                                .unwrap_or(&route.metadata.namespace),
                            spec.name
                        );
                        overlay(
                            &mut conditions,
                            problems.iter().copied().filter(|d| {
                                d.condition == ConditionType::Degraded
                                    && d.parent.as_deref() == Some(gateway.as_str())
                            }),
                            generation,
                        );
                    }
                    RouteParentStatus {
                        parent_ref: parent_reference(spec, &route.metadata.namespace),
                        controller_name: CONTROLLER_NAME.to_owned(),
                        conditions,
                    }
                })
                .collect();
            ResourceStatus {
                api_version: route.api_version.clone(),
                kind: route.kind.as_str().to_owned(),
                metadata: metadata(&route.metadata),
                status: Status::Route(RouteStatus { parents }),
            }
        })
        .collect()
}

/// The parentRef with the defaults applied, namespace included, so that a
/// reader can match it without knowing the route's namespace.
fn parent_reference(parent: &ParentReference, route_namespace: &str) -> ObjectReference {
    ObjectReference {
        group: parent.group.clone(),
        kind: parent.kind.clone(),
        namespace: Some(
            parent
                .namespace
                .clone()
                .unwrap_or_else(|| route_namespace.to_owned()),
        ),
        name: parent.name.clone(),
        section_name: parent.section_name.clone(),
        port: parent.port,
    }
}

// ---------------------------------------------------------------- policies

/// GEP-713 status: one ancestor per targetRef, the target itself, since an
/// L4 policy takes effect on the object it names (a Gateway or listener, a
/// route, a Service). A diagnostic belongs to the ancestors its scope falls
/// under (`ns/name`, or `ns/name/section` below it); one with no scope, or
/// a scope naming none of them, concerns the whole policy and goes to all.
fn traffic_policy(policy: &TrafficPolicy, about: &[&Diagnostic]) -> ResourceStatus {
    let meta = &policy.metadata;
    let generation = generation(meta);
    let key = |target: &PolicyTargetReference| {
        let mut key = format!("{}/{}", meta.namespace, target.name);
        if let Some(section) = &target.section_name {
            key = format!("{key}/{section}");
        }
        key
    };
    let keys: Vec<String> = policy.spec.target_refs.iter().map(key).collect();
    let under = |scope: &str, key: &str| {
        scope == key
            || scope
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let ancestors = policy
        .spec
        .target_refs
        .iter()
        .zip(&keys)
        .map(|(target, key)| {
            let mine = about.iter().copied().filter(|d| match &d.parent {
                Some(scope) => under(scope, key) || !keys.iter().any(|k| under(scope, k)),
                None => true,
            });
            let mut conditions = vec![condition(
                ConditionType::Accepted,
                true,
                "Accepted",
                "the policy is applied",
                generation,
            )];
            overlay(&mut conditions, mine, generation);
            PolicyAncestorStatus {
                ancestor_ref: ObjectReference {
                    group: target.group.clone(),
                    kind: target.kind.clone(),
                    namespace: Some(meta.namespace.clone()),
                    name: target.name.clone(),
                    section_name: target.section_name.clone(),
                    port: None,
                },
                controller_name: CONTROLLER_NAME.to_owned(),
                conditions,
            }
        })
        .collect();
    ResourceStatus {
        api_version: SWITCHYARD_API_VERSION.to_owned(),
        kind: "TrafficPolicy".to_owned(),
        metadata: metadata(meta),
        status: Status::Policy(PolicyStatus { ancestors }),
    }
}

#[cfg(test)]
mod tests;
