//! Backend resolution: each backendRef of a route becomes one weighted
//! `BackendGroup` holding the ready endpoints of the Service port it names.
//! A backendRef that cannot be resolved keeps its group, without
//! endpoints: the Gateway API asks that traffic meant for an invalid
//! backend be refused, not shifted to the valid ones.

use std::net::IpAddr;

use super::{Diagnostic, Index, Reason};
use crate::resources::{AddressType, BackendRef, Route, Service, ServicePort, GATEWAY_GROUP};
use crate::snapshot::{BackendGroup, Endpoint};

/// The groups of a route, one per backendRef, in rule and list order.
pub(super) fn groups(
    index: &Index<'_>,
    route: &Route,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<BackendGroup> {
    let mut groups = Vec::new();
    for rule in &route.spec.rules {
        for backend in &rule.backend_refs {
            let namespace = backend
                .namespace
                .as_deref()
                .unwrap_or(&route.metadata.namespace);
            let endpoints = match endpoints_of(index, route, backend, namespace) {
                Ok(endpoints) => endpoints,
                Err((reason, message)) => {
                    diagnostics.push(Diagnostic::new(
                        route.kind.as_str(),
                        &route.metadata.namespace,
                        &route.metadata.name,
                        reason,
                        message,
                    ));
                    Vec::new()
                }
            };
            groups.push(BackendGroup {
                service: format!("{namespace}/{}", backend.name),
                weight: backend.weight,
                endpoints,
            });
        }
    }
    groups
}

type Problem = (Reason, String);

fn endpoints_of(
    index: &Index<'_>,
    route: &Route,
    backend: &BackendRef,
    namespace: &str,
) -> Result<Vec<Endpoint>, Problem> {
    if !backend.is_service() {
        let group = if backend.group.is_empty() {
            "core"
        } else {
            backend.group.as_str()
        };
        return Err((
            Reason::InvalidKind,
            format!(
                "backendRef {:?} is a {} of group {group}; only core Services are supported",
                backend.name, backend.kind
            ),
        ));
    }
    // Checked before existence, so a missing grant does not reveal
    // whether the Service exists.
    if namespace != route.metadata.namespace && !permitted(index, route, namespace, &backend.name) {
        return Err((
            Reason::RefNotPermitted,
            format!(
                "backendRef to Service {namespace}/{} is not permitted: no ReferenceGrant in \
                 namespace {namespace} allows {}s from namespace {}",
                backend.name, route.kind, route.metadata.namespace
            ),
        ));
    }
    let Some(service) = index.services.get(&(namespace, backend.name.as_str())) else {
        return Err((
            Reason::BackendNotFound,
            format!("Service {namespace}/{} not found", backend.name),
        ));
    };
    // Load rejects Service references without a port; a programmatic
    // caller might not have.
    let Some(port) = backend.port else {
        return Err((
            Reason::BackendNotFound,
            format!(
                "backendRef to Service {namespace}/{} has no port",
                backend.name
            ),
        ));
    };
    let protocol = route.kind.protocol();
    let Some(service_port) = service
        .spec
        .ports
        .iter()
        .find(|p| p.port == port && p.protocol == protocol)
    else {
        return Err((
            Reason::BackendNotFound,
            format!(
                "Service {namespace}/{} has no {protocol} port {port}",
                backend.name
            ),
        ));
    };
    Ok(ready_endpoints(index, service, service_port))
}

/// A ReferenceGrant in the target namespace from this route's kind and
/// namespace to Services (all, or this one by name).
fn permitted(index: &Index<'_>, route: &Route, namespace: &str, service: &str) -> bool {
    let Some(grants) = index.grants.get(namespace) else {
        return false;
    };
    grants.iter().any(|grant| {
        grant.spec.from.iter().any(|from| {
            from.group == GATEWAY_GROUP
                && from.kind == route.kind.as_str()
                && from.namespace == route.metadata.namespace
        }) && grant.spec.to.iter().any(|to| {
            to.group.is_empty()
                && to.kind == "Service"
                && to.name.as_deref().is_none_or(|name| name == service)
        })
    })
}

/// The endpoints of one Service port, merged over the Service's slices,
/// as kube-proxy picks them: ready ones; if none, the serving ones that
/// are terminating (so connections drain instead of failing); all of them
/// when the Service publishes not-ready addresses.
fn ready_endpoints(index: &Index<'_>, service: &Service, port: &ServicePort) -> Vec<Endpoint> {
    let key = (
        service.metadata.namespace.as_str(),
        service.metadata.name.as_str(),
    );
    let slices = index
        .slices
        .get(&key)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let everything = service.spec.publish_not_ready_addresses;
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if slice.address_type == AddressType::FQDN {
            continue;
        }
        let Some(target) = target_port(slice.ports.as_deref().unwrap_or_default(), port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions;
            let list = if everything || conditions.is_ready() {
                &mut ready
            } else if conditions.is_serving() && conditions.is_terminating() {
                &mut terminating
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                let Ok(address) = address.parse::<IpAddr>() else {
                    continue;
                };
                let family_ok = match slice.address_type {
                    AddressType::IPv4 => address.is_ipv4(),
                    AddressType::IPv6 => address.is_ipv6(),
                    AddressType::FQDN => false,
                };
                if family_ok {
                    list.push(Endpoint {
                        address,
                        port: target,
                    });
                }
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}

/// The port endpoints listen on: the slice port named like the Service
/// port (both unnamed counts as a match), or, when the slice lists no
/// ports, the Service's numeric targetPort.
fn target_port(slice_ports: &[crate::resources::EndpointPort], port: &ServicePort) -> Option<u16> {
    if slice_ports.is_empty() {
        return port.numeric_target();
    }
    let named = slice_ports.iter().find(|p| p.name() == port.name())?;
    // A slice port without a number means "all ports" in the EndpointSlice
    // API; the Service's target is then the best statement of which.
    named.port.or_else(|| port.numeric_target())
}
