//! Backend resolution: each backendRef of a route becomes one weighted
//! `BackendGroup` holding the endpoints of the port it names. Three kinds
//! can be named: a core Service (its EndpointSlices, by the
//! `kubernetes.io/service-name` label), a ServiceImport (GEP-1748: the
//! slices labelled `multicluster.kubernetes.io/service-name`, exported by
//! any cluster) and a switchyard.io EndpointSelector (the Pods of its
//! namespace that its selector matches). All three pick endpoints the way
//! kube-proxy does, and, as kube-proxy does, once per address family: a
//! listener on an IPv4 address serves the IPv4 endpoints, one on an IPv6
//! address the IPv6 ones. A backendRef that cannot be resolved keeps its
//! group, without endpoints: the Gateway API asks that traffic meant for an
//! invalid backend be refused, not shifted to the valid ones; a backendRef
//! without endpoints of a listener's family keeps its group there the same
//! way.

use std::collections::{BTreeSet, HashMap};

use super::{Diagnostic, Index, Reason};
use crate::resources::{
    AddressType, BackendRef, EndpointConditions, EndpointSelector, EndpointSlice, IpFamily, Pod,
    Resources, Route, ServiceImport, ServicePort, TargetPort, GATEWAY_GROUP, MULTICLUSTER_GROUP,
    SWITCHYARD_GROUP,
};
use crate::snapshot::{BackendGroup, Endpoint};

/// How a route picks the endpoints of its backendRefs; the default is
/// what each backend says for itself. TrafficPolicies on the route set it
/// (`policy::endpoint_settings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct EndpointSettings {
    /// Overrides the backend's own `publishNotReadyAddresses`.
    pub publish_not_ready: Option<bool>,
    /// Only endpoints of this family; `None` keeps both.
    pub family: Option<IpFamily>,
}

/// Lookups for the backend kinds other than Service, keyed by
/// `(namespace, name)` (Pods by namespace, sorted by name).
pub(super) struct BackendIndex<'a> {
    pub imports: HashMap<(&'a str, &'a str), &'a ServiceImport>,
    /// Exported slices by (namespace, ServiceImport name), sorted by name.
    import_slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    pub selectors: HashMap<(&'a str, &'a str), &'a EndpointSelector>,
    pods: HashMap<&'a str, Vec<&'a Pod>>,
}

impl<'a> BackendIndex<'a> {
    pub fn new(resources: &'a Resources) -> Self {
        let key = |m: &'a crate::resources::ObjectMeta| (m.namespace.as_str(), m.name.as_str());
        let mut import_slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &resources.endpoint_slices {
            if let Some(import) = slice
                .metadata
                .labels
                .get(crate::resources::MULTICLUSTER_SERVICE_NAME_LABEL)
            {
                import_slices
                    .entry((slice.metadata.namespace.as_str(), import.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        for list in import_slices.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        let mut pods: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in &resources.pods {
            pods.entry(pod.metadata.namespace.as_str())
                .or_default()
                .push(pod);
        }
        for list in pods.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        Self {
            imports: resources
                .service_imports
                .iter()
                .map(|i| (key(&i.metadata), i))
                .collect(),
            import_slices,
            selectors: resources
                .endpoint_selectors
                .iter()
                .map(|s| (key(&s.metadata), s))
                .collect(),
            pods,
        }
    }
}

/// The kinds a backendRef may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackendKind {
    Service,
    ServiceImport,
    EndpointSelector,
}

impl BackendKind {
    pub fn of(backend: &BackendRef) -> Option<Self> {
        match (backend.group.as_str(), backend.kind.as_str()) {
            ("", "Service") => Some(Self::Service),
            (MULTICLUSTER_GROUP, "ServiceImport") => Some(Self::ServiceImport),
            (SWITCHYARD_GROUP, "EndpointSelector") => Some(Self::EndpointSelector),
            _ => None,
        }
    }

    /// The group a ReferenceGrant's `to` names for this kind.
    fn group(self) -> &'static str {
        match self {
            Self::Service => "",
            Self::ServiceImport => MULTICLUSTER_GROUP,
            Self::EndpointSelector => SWITCHYARD_GROUP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::ServiceImport => "ServiceImport",
            Self::EndpointSelector => "EndpointSelector",
        }
    }
}

/// A route's groups, once per address family: what a listener serves on
/// a Gateway address of that family. Kube-proxy splits a dual-stack
/// Service the same way: one proxier per family, each reading only the
/// EndpointSlices of its `addressType` (`EndpointsChangeTracker`,
/// `pkg/proxy/endpointschangetracker.go`), so each of the Service's
/// ClusterIPs reaches its own family's endpoints, and the fallback to
/// terminating endpoints is taken per family. Both lists hold one group
/// per backendRef, in rule and list order, with the same weights.
#[derive(Debug, Clone, Default)]
pub(super) struct FamilyGroups {
    pub ipv4: Vec<BackendGroup>,
    pub ipv6: Vec<BackendGroup>,
    /// The one family a TrafficPolicy on the route keeps (`SingleStack`),
    /// if any: the other has no endpoints because of it.
    pub kept: Option<IpFamily>,
}

impl FamilyGroups {
    pub fn of(&self, family: IpFamily) -> &[BackendGroup] {
        match family {
            IpFamily::IPv4 => &self.ipv4,
            IpFamily::IPv6 => &self.ipv6,
        }
    }

    /// The number of backendRefs.
    pub fn len(&self) -> usize {
        self.ipv4.len()
    }

    /// Every group of both families.
    pub fn all(&self) -> impl Iterator<Item = &BackendGroup> {
        self.ipv4.iter().chain(&self.ipv6)
    }
}

/// The groups of a route, one per backendRef and family. Chosen
/// endpoints whose conditions say terminating are added to `terminating`:
/// per endpoint, since with published not-ready addresses a group mixes
/// ready and terminating ones.
pub(super) fn groups(
    index: &Index<'_>,
    route: &Route,
    settings: EndpointSettings,
    terminating: &mut BTreeSet<Endpoint>,
    diagnostics: &mut Vec<Diagnostic>,
) -> FamilyGroups {
    let mut out = FamilyGroups {
        kept: settings.family,
        ..FamilyGroups::default()
    };
    for rule in &route.spec.rules {
        for backend in &rule.backend_refs {
            let namespace = backend
                .namespace
                .as_deref()
                .unwrap_or(&route.metadata.namespace);
            let (candidates, everything) = match endpoints_of(index, route, backend, namespace) {
                Ok(found) => found,
                Err((reason, message)) => {
                    diagnostics.push(Diagnostic::new(
                        route.kind.as_str(),
                        &route.metadata.namespace,
                        &route.metadata.name,
                        reason,
                        message,
                    ));
                    (Vec::new(), false)
                }
            };
            let everything = settings.publish_not_ready.unwrap_or(everything);
            for family in [IpFamily::IPv4, IpFamily::IPv6] {
                let kept = settings.family.is_none_or(|f| f == family);
                let chosen = choose(
                    candidates
                        .iter()
                        .filter(|(e, _)| kept && IpFamily::of(e.address) == family)
                        .copied(),
                    everything,
                );
                let all_terminating = !chosen.endpoints.is_empty()
                    && chosen.terminating.len() == chosen.endpoints.len();
                terminating.extend(chosen.terminating);
                terminating.extend(chosen.draining.iter().copied());
                let groups = match family {
                    IpFamily::IPv4 => &mut out.ipv4,
                    IpFamily::IPv6 => &mut out.ipv6,
                };
                groups.push(BackendGroup {
                    service: format!("{namespace}/{}", backend.name),
                    weight: backend.weight,
                    endpoints: chosen.endpoints,
                    terminating: all_terminating,
                    draining: chosen.draining,
                    health_check: None,
                });
            }
        }
    }
    out
}

/// `Degraded=True/NoEndpointsOfFamily` on `route`, scoped to its parent
/// `gateway` (`namespace/name`), for each backendRef with weight that has
/// no endpoint of `family` but has some of the other: on the Gateway's
/// addresses of `family` its share is refused (see `FamilyGroups`), which
/// an operator looking at the Service's endpoints would not guess. A
/// backendRef without endpoints of any family says nothing, as before:
/// that a Service has no endpoints is plain to see.
pub(super) fn family_gaps(
    route: &Route,
    groups: &FamilyGroups,
    family: IpFamily,
    gateway: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let other = match family {
        IpFamily::IPv4 => IpFamily::IPv6,
        IpFamily::IPv6 => IpFamily::IPv4,
    };
    let here = groups.of(family);
    let total: u32 = here.iter().map(|g| g.weight).sum();
    let refs = route.spec.rules.iter().flat_map(|rule| &rule.backend_refs);
    for ((backend, group), there) in refs.zip(here).zip(groups.of(other)) {
        if !group.endpoints.is_empty() || group.weight == 0 || there.endpoints.is_empty() {
            continue;
        }
        let kind = BackendKind::of(backend).map_or(backend.kind.as_str(), |k| k.as_str());
        let why = if groups.kept == Some(other) {
            format!(
                "the route's TrafficPolicy keeps only {other:?} endpoints (ipFamilyPolicy \
                 SingleStack), so backendRef {kind} {} has no {family:?} endpoint",
                group.service
            )
        } else {
            format!(
                "backendRef {kind} {} has no {family:?} endpoint, only {other:?} ones",
                group.service
            )
        };
        diagnostics.push(
            Diagnostic::new(
                route.kind.as_str(),
                &route.metadata.namespace,
                &route.metadata.name,
                Reason::NoEndpointsOfFamily,
                format!(
                    "{why}: on the {family:?} addresses of Gateway {gateway}, which serve \
                     {family:?} endpoints only, its share of the traffic (weight {} of {total}) \
                     is refused, as for a backendRef without endpoints",
                    group.weight
                ),
            )
            .on_parent(gateway.to_owned()),
        );
    }
}

/// `Accepted=False/UnsupportedValue` for every Service with `externalIPs`:
/// Switchyard serves traffic on Gateway addresses only, and taking an
/// address because a Service names it would let any namespace claim VIPs
/// (CVE-2020-8554). The Service stays usable as a backend.
pub(super) fn service_diagnostics(index: &Index<'_>, diagnostics: &mut Vec<Diagnostic>) {
    for service in index.services.values() {
        let ips = &service.spec.external_ips;
        if ips.is_empty() {
            continue;
        }
        diagnostics.push(Diagnostic::new(
            "Service",
            &service.metadata.namespace,
            &service.metadata.name,
            Reason::UnsupportedValue,
            format!(
                "spec.externalIPs {ips:?} is not supported: Switchyard serves traffic only on \
                 Gateway addresses; the Service is still used as a backend, without these \
                 addresses"
            ),
        ));
    }
}

type Problem = (Reason, String);

/// An endpoint with the conditions that decide whether it serves.
type Candidate = (Endpoint, EndpointConditions);

/// The endpoints a backendRef names, of both families, and whether the
/// backend publishes not-ready addresses.
fn endpoints_of(
    index: &Index<'_>,
    route: &Route,
    backend: &BackendRef,
    namespace: &str,
) -> Result<(Vec<Candidate>, bool), Problem> {
    let Some(kind) = BackendKind::of(backend) else {
        let group = if backend.group.is_empty() {
            "core"
        } else {
            backend.group.as_str()
        };
        return Err((
            Reason::InvalidKind,
            format!(
                "backendRef {:?} is a {} of group {group}; supported are core Services, \
                 {MULTICLUSTER_GROUP} ServiceImports and {SWITCHYARD_GROUP} EndpointSelectors",
                backend.name, backend.kind
            ),
        ));
    };
    let name = backend.name.as_str();
    // Checked before existence, so a missing grant does not reveal
    // whether the object exists.
    if namespace != route.metadata.namespace && !permitted(index, route, kind, namespace, name) {
        return Err((
            Reason::RefNotPermitted,
            format!(
                "backendRef to {kind} {namespace}/{name} is not permitted: no ReferenceGrant in \
                 namespace {namespace} allows {}s from namespace {} to reach {kind}s",
                route.kind,
                route.metadata.namespace,
                kind = kind.as_str()
            ),
        ));
    }
    let key = (namespace, name);
    let not_found = || {
        (
            Reason::BackendNotFound,
            format!("{} {namespace}/{name} not found", kind.as_str()),
        )
    };
    let protocol = route.kind.protocol();
    let port_of = |ports: &[ServicePort]| {
        pick_port(ports, backend.port, protocol)
            .cloned()
            .map_err(|why| {
                (
                    Reason::BackendNotFound,
                    format!("{} {namespace}/{name} {why}", kind.as_str()),
                )
            })
    };
    let (candidates, own_publish) = match kind {
        BackendKind::Service => {
            let service = index.services.get(&key).ok_or_else(not_found)?;
            let port = port_of(&service.spec.ports)?;
            let slices = index.slices.get(&key).map(Vec::as_slice);
            (
                slice_candidates(slices.unwrap_or_default(), &port),
                service.spec.publish_not_ready_addresses,
            )
        }
        BackendKind::ServiceImport => {
            let import = index.backends.imports.get(&key).ok_or_else(not_found)?;
            let port = port_of(&import.spec.ports)?;
            let slices = index.backends.import_slices.get(&key).map(Vec::as_slice);
            (slice_candidates(slices.unwrap_or_default(), &port), false)
        }
        BackendKind::EndpointSelector => {
            let selector = index.backends.selectors.get(&key).ok_or_else(not_found)?;
            let port = port_of(&selector.spec.ports)?;
            let pods = index.backends.pods.get(namespace).map(Vec::as_slice);
            (
                pod_candidates(pods.unwrap_or_default(), selector, &port),
                selector.spec.publish_not_ready_addresses,
            )
        }
    };
    Ok((candidates, own_publish))
}

/// The port a backendRef names: by number and the route's protocol, or,
/// when the ref has no port (allowed for kinds other than Service), the
/// object's only port of that protocol.
fn pick_port<'p>(
    ports: &'p [ServicePort],
    port: Option<u16>,
    protocol: &str,
) -> Result<&'p ServicePort, String> {
    let mut of_protocol = ports.iter().filter(|p| p.protocol == protocol);
    match port {
        Some(port) => of_protocol
            .find(|p| p.port == port)
            .ok_or_else(|| format!("has no {protocol} port {port}")),
        None => match (of_protocol.next(), of_protocol.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(format!("has no {protocol} port")),
            (Some(_), Some(_)) => Err(format!(
                "has several {protocol} ports and the backendRef names none"
            )),
        },
    }
}

/// A ReferenceGrant in the target namespace from this route's kind and
/// namespace to objects of `kind` (all, or this one by name).
fn permitted(
    index: &Index<'_>,
    route: &Route,
    kind: BackendKind,
    namespace: &str,
    name: &str,
) -> bool {
    let Some(grants) = index.grants.get(namespace) else {
        return false;
    };
    grants.iter().any(|grant| {
        grant.spec.from.iter().any(|from| {
            from.group == GATEWAY_GROUP
                && from.kind == route.kind.as_str()
                && from.namespace == route.metadata.namespace
        }) && grant.spec.to.iter().any(|to| {
            to.group == kind.group()
                && to.kind == kind.as_str()
                && to.name.as_deref().is_none_or(|n| n == name)
        })
    })
}

/// The endpoints of one backendRef that serve, and which of them are
/// terminating.
#[derive(Debug, Default)]
struct Chosen {
    /// Sorted, deduplicated.
    endpoints: Vec<Endpoint>,
    /// Of `endpoints`, those whose conditions say terminating (the Pod is
    /// being deleted); sorted.
    terminating: Vec<Endpoint>,
    /// Serving, terminating endpoints left out of `endpoints` because
    /// ready ones serve: sorted.
    draining: Vec<Endpoint>,
}

/// The endpoints kube-proxy would use, among `candidates` (of one
/// family): ready ones; if none, the serving ones that are terminating (so
/// connections drain instead of failing); all of them when not-ready
/// addresses are published (then terminating ones may sit beside ready
/// ones). Serving, terminating ones beside ready ones are `draining`: no
/// new flow goes to them, but their established flows continue. An
/// address listed twice is terminating only if every listing says so.
fn choose(candidates: impl IntoIterator<Item = Candidate>, everything: bool) -> Chosen {
    let mut ready = Vec::new();
    let mut serving_terminating = Vec::new();
    let mut staying = BTreeSet::new();
    let mut leaving = BTreeSet::new();
    for (endpoint, conditions) in candidates {
        if conditions.is_terminating() {
            leaving.insert(endpoint);
        } else {
            staying.insert(endpoint);
        }
        if everything || conditions.is_ready() {
            ready.push(endpoint);
        } else if conditions.is_serving() && conditions.is_terminating() {
            serving_terminating.push(endpoint);
        }
    }
    let (mut endpoints, mut draining) = if ready.is_empty() {
        (serving_terminating, Vec::new())
    } else {
        (ready, serving_terminating)
    };
    endpoints.sort();
    endpoints.dedup();
    draining.sort();
    draining.dedup();
    draining.retain(|e| endpoints.binary_search(e).is_err());
    let terminating = endpoints
        .iter()
        .filter(|e| leaving.contains(e) && !staying.contains(e))
        .copied()
        .collect();
    Chosen {
        endpoints,
        terminating,
        draining,
    }
}

/// The endpoints of one port, merged over a Service's (or ServiceImport's)
/// slices.
fn slice_candidates(slices: &[&EndpointSlice], port: &ServicePort) -> Vec<Candidate> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type == AddressType::FQDN {
            continue;
        }
        let Some(target) = target_port(slice.ports.as_deref().unwrap_or_default(), port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            for address in &endpoint.addresses {
                // Load checked addresses against the slice's addressType.
                let Ok(address) = address.parse() else {
                    continue;
                };
                out.push((
                    Endpoint {
                        address,
                        port: target,
                    },
                    endpoint.conditions,
                ));
            }
        }
    }
    out
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

/// The selected Pods' addresses on one port, with the conditions the
/// EndpointSlice controller would give them: ready when the Pod is Ready
/// and not terminating, serving when Ready, terminating once deleted. A
/// named targetPort is looked up in each Pod's containers; Pods without it
/// are not endpoints of that port.
fn pod_candidates(
    pods: &[&Pod],
    selector: &EndpointSelector,
    port: &ServicePort,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for pod in pods {
        if !selector.spec.selector.matches(&pod.metadata.labels) || pod.has_finished() {
            continue;
        }
        let target = match &port.target_port {
            None => port.port,
            Some(TargetPort::Number(n)) => *n,
            Some(TargetPort::Name(name)) => match pod.container_port(name, &port.protocol) {
                Some(n) => n,
                None => continue,
            },
        };
        let conditions = EndpointConditions {
            ready: Some(pod.is_ready() && !pod.is_terminating()),
            serving: Some(pod.is_ready()),
            terminating: Some(pod.is_terminating()),
        };
        for address in pod.addresses() {
            out.push((
                Endpoint {
                    address,
                    port: target,
                },
                conditions,
            ));
        }
    }
    out
}
