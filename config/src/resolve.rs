//! Resolution: loaded `Resources` in, a `Snapshot` and `Diagnostic`s out,
//! following the Gateway API spec as an implementation would. It owns which
//! Gateways are Switchyard's, which routes attach to which listeners, which
//! backends a route may reach, how traffic is shared among them and which
//! TrafficPolicy sizes each listener's Maglev table, and which listeners
//! hash by client address (session affinity). It is a
//! pure function of its input: it never reads files or clocks, never fails
//! (problems become diagnostics and the affected traffic is refused or not
//! served), and its result does not depend on the order of the documents.

#[cfg(test)]
mod address_tests;
mod addresses;
mod attach;
#[cfg(test)]
mod backend_tests;
mod backends;
mod diagnostic;
mod dns;
#[cfg(test)]
mod family_tests;
mod gateways;
mod health;
#[cfg(test)]
mod health_tests;
mod policy;
mod status;
#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
mod traffic;
#[cfg(test)]
mod traffic_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use addresses::StatusAddress;
pub use diagnostic::{ConditionType, Diagnostic, Reason};

use crate::resources::{
    AddressPool, EndpointSlice, Gateway, GatewayClass, GatewayClassConfig, IpFamily,
    ReferenceGrant, Resources, Route, Service, TrafficPolicy, NAMESPACE_NAME_LABEL,
};
use crate::snapshot::{
    flatten, Announcement, BackendGroup, ListenerName, ListenerParts, ListenerPlan, ServiceKey,
    SlotTableSize, Snapshot, SnapshotError, SnapshotPlan,
};
use crate::status::ResourceStatus;
// What the tests below `use super::*` for.
#[cfg(test)]
use crate::snapshot::{Listener, SlotTable};

/// The `spec.controllerName` of GatewayClasses Switchyard implements.
pub const CONTROLLER_NAME: &str = "switchyard.io/gateway-controller";

/// What resolution produced: the snapshot to run and what to tell the
/// operator about the objects that did not fully work.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub snapshot: Snapshot,
    /// Sorted, without duplicates.
    pub diagnostics: Vec<Diagnostic>,
    /// The status a controller would write on each object Switchyard is
    /// responsible for, built from the same facts as `diagnostics`.
    pub statuses: Vec<ResourceStatus>,
}

/// `Resolution` before the slot tables are filled.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: SnapshotPlan,
    /// Sorted, without duplicates.
    pub diagnostics: Vec<Diagnostic>,
    pub statuses: Vec<ResourceStatus>,
}

impl Resolution {
    /// `Kind ns/name [scope]: Type` for every condition type that one
    /// condition list of `statuses` holds more than once; always empty
    /// (see `ResourceStatus::repeated_condition_types`). Tests assert it
    /// over every resolution they make.
    pub fn repeated_condition_types(&self) -> Vec<String> {
        self.statuses
            .iter()
            .flat_map(ResourceStatus::repeated_condition_types)
            .collect()
    }
}

/// Inputs of resolution that are not resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Suffix of Gateway DNS names (`<gw>.<ns>.gw.<cluster-domain>`);
    /// lower case, without a trailing dot. See `dns::cluster_domain`.
    pub cluster_domain: String,
    /// Seed of every listener's Maglev permutations. Every LB node serving
    /// the same traffic must use the same one (they then build identical
    /// tables); a cluster may pick its own so that its tables are not the
    /// ones anyone can compute from a config alone.
    pub maglev_seed: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cluster_domain: crate::dns::DEFAULT_CLUSTER_DOMAIN.to_owned(),
            maglev_seed: 0,
        }
    }
}

pub fn resolve(resources: &Resources, generation: u64) -> Resolution {
    resolve_with(resources, generation, &Options::default())
}

pub fn resolve_with(resources: &Resources, generation: u64, options: &Options) -> Resolution {
    let Planned {
        plan,
        diagnostics,
        statuses,
    } = plan_with(resources, generation, options);
    Resolution {
        snapshot: plan.build(),
        diagnostics,
        statuses,
    }
}

/// Resolution up to the slot tables: what `resolve_with` builds its
/// snapshot from, for a caller that needs the listeners but not all of
/// their tables at once (`config diff`).
pub fn plan_with(resources: &Resources, generation: u64, options: &Options) -> Planned {
    let index = Index::new(resources);
    let mut diagnostics = Vec::new();

    let gateways = gateways::ours(&index, &mut diagnostics);
    let attachments = attach::attach(&index, &gateways, &mut diagnostics);
    let claims = policy::listener_claims(&index, &gateways, &mut diagnostics);
    let table_sizes = policy::table_sizes(&index, &gateways, &claims, &mut diagnostics);
    let traffic = traffic::TrafficSettings::new(&index, &gateways, &claims, &mut diagnostics);
    let health_checks = health::HealthChecks::new(&index, &gateways, &mut diagnostics);
    let endpoint_settings = policy::endpoint_settings(&index, &mut diagnostics);
    backends::service_diagnostics(&index, &mut diagnostics);

    // Backends are resolved once per route, so a route on several listeners
    // reports each backend problem once.
    let mut groups_of: HashMap<RouteId, backends::FamilyGroups> = HashMap::new();
    let mut terminating = BTreeSet::new();
    for route in &attachments.parented {
        let settings = endpoint_settings.get(route).copied().unwrap_or_default();
        let groups = backends::groups(
            &index,
            index.routes[route.0],
            settings,
            &mut terminating,
            &mut diagnostics,
        );
        groups_of.insert(*route, groups);
    }
    let affinities = policy::affinities(&index, &groups_of, &mut diagnostics);

    let mut listeners = Vec::new();
    let mut owners: HashMap<ServiceKey, Vec<(usize, usize)>> = HashMap::new();
    for (g, gateway) in gateways.iter().enumerate() {
        for (l, listener) in gateway.listeners.iter().enumerate() {
            let Some(protocol) = listener.protocol else {
                continue;
            };
            let carrier = attachments.carrier(g, l);
            let route_groups = carrier.and_then(|r| groups_of.get(&r));
            let route = carrier
                .map(|r| index.routes[r.0].metadata.key())
                .unwrap_or_default();
            let name = ListenerName {
                namespace: gateway.gateway.metadata.namespace.clone(),
                gateway: gateway.gateway.metadata.name.clone(),
                listener: listener.spec.name.clone(),
            };
            let policy_size = table_sizes.get(&(g, l));
            let forwarding = traffic.forwarding(g, l, gateway);
            let listener_policy = traffic.policy(
                &index,
                g,
                l,
                route_groups.into_iter().flat_map(|all| all.all()),
            );
            let table_size = policy_size.map_or(SlotTableSize::DEFAULT, |s| s.size);
            let affinity = carrier.and_then(|r| affinities.get(&r).copied());
            // Each address serves the endpoints of its own family, as
            // kube-proxy serves each ClusterIP of a dual-stack Service
            // (see `backends::FamilyGroups`); every address of a family
            // serves the same backends, so each family's Maglev table is
            // built once.
            let mut tables: Vec<(IpFamily, FamilyTable)> = Vec::new();
            for (address, port) in gateway.serving(l) {
                let family = IpFamily::of(address);
                let table = match tables.iter().position(|(f, _)| *f == family) {
                    Some(i) => &tables[i].1,
                    None => {
                        let mut groups = route_groups
                            .map(|all| all.of(family).to_vec())
                            .unwrap_or_default();
                        if let Some(r) = carrier {
                            health_checks.apply(&index, (g, l), r, &mut groups);
                        }
                        if let (Some(r), Some(all)) = (carrier, route_groups) {
                            backends::family_gaps(
                                index.routes[r.0],
                                all,
                                family,
                                &gateway.gateway.metadata.key(),
                                &mut diagnostics,
                            );
                        }
                        let backends = flatten(&groups);
                        if let Some(size) = policy_size {
                            policy::check_size(
                                size,
                                &name.to_string(),
                                backends.len(),
                                &mut diagnostics,
                            );
                        }
                        diagnostics.extend(status::table_too_small(
                            gateway.gateway,
                            &listener.spec.name,
                            table_size,
                            policy_size.map(|s| &s.policy.metadata),
                            backends.len(),
                        ));
                        tables.push((family, FamilyTable { groups, backends }));
                        &tables[tables.len() - 1].1
                    }
                };
                let forwarding = traffic::for_address(&forwarding, address);
                if let Some(backend) = traffic::untranslatable(&forwarding, port, &table.backends) {
                    if let Some(r) = carrier {
                        let service = &table.groups[backend.group as usize].service;
                        diagnostics.push(traffic::port_translation_refused(
                            index.routes[r.0],
                            format!("{}/{}", gateway.gateway.metadata.key(), listener.spec.name),
                            &forwarding,
                            port,
                            backend,
                            service,
                        ));
                    }
                    continue;
                }
                // Every address of the family fills the same table, and
                // shares it: see `SlotTable::maglev`.
                let built = ListenerPlan::new(
                    ListenerParts {
                        name: name.clone(),
                        route: route.clone(),
                        address,
                        port,
                        listener_port: listener.spec.port,
                        protocol,
                        groups: table.groups.clone(),
                        backends: table.backends.clone(),
                        slots: Vec::new(),
                        affinity,
                        forwarding,
                        policy: listener_policy.clone(),
                    },
                    table_size,
                );
                // The parts come from `flatten` over one family's groups,
                // which cannot make a backend point nowhere nor mix
                // families, so a refusal is a bug here.
                // Resolution never fails and never panics (a reload would
                // take the running config down with it): like any problem
                // it finds, the refusal becomes a diagnostic on the object
                // it concerns, and that listener is not served.
                let built = match built {
                    Ok(built) => built,
                    Err(error) => {
                        diagnostics.push(
                            Diagnostic::about_gateway(
                                gateway.gateway,
                                Reason::InvalidListener,
                                error.to_string(),
                            )
                            .on_listener(&listener.spec.name),
                        );
                        continue;
                    }
                };
                owners.entry(built.key()).or_default().push((g, l));
                listeners.push(built);
            }
        }
    }

    // Neither side of a conflict wins: which one would depend on something
    // other than the configuration's content.
    let mut conflicted: HashSet<ServiceKey> = HashSet::new();
    for (key, sides) in &owners {
        if sides.len() < 2 {
            continue;
        }
        conflicted.insert(*key);
        for &(g, l) in sides {
            let gateway = &gateways[g].gateway;
            let listener = &gateways[g].listeners[l].spec;
            let others: Vec<String> = sides
                .iter()
                .filter(|&&other| other != (g, l))
                .map(|&(og, ol)| {
                    format!(
                        "{}/{}",
                        gateways[og].gateway.metadata.key(),
                        gateways[og].listeners[ol].spec.name
                    )
                })
                .collect();
            diagnostics.push(
                Diagnostic::new(
                    "Gateway",
                    &gateway.metadata.namespace,
                    &gateway.metadata.name,
                    Reason::ProtocolConflict,
                    format!(
                        "{} {} is also served by {}; neither listener carries traffic there",
                        key.protocol,
                        key.endpoint,
                        others.join(", ")
                    ),
                )
                .on_listener(&listener.name),
            );
        }
    }
    listeners.retain(|l| !conflicted.contains(&l.key()));
    listeners.sort_by(|a, b| (a.name(), a.address()).cmp(&(b.name(), b.address())));
    let plan = plan(generation, options.maglev_seed, listeners, &mut diagnostics);
    let announcements = announcements(&gateways, plan.listeners());

    let records = dns::records(
        &gateways,
        &attachments,
        &groups_of,
        &options.cluster_domain,
        &mut diagnostics,
    );
    diagnostics.sort();
    diagnostics.dedup();
    let statuses = status::build(&status::Facts {
        resources,
        index: &index,
        gateways: &gateways,
        attachments: &attachments,
        diagnostics: &diagnostics,
    });
    Planned {
        plan: plan
            .with_dns(records)
            .with_terminating(terminating)
            .with_announcements(announcements),
        diagnostics,
        statuses,
    }
}

/// The VIPs of announcing Gateways that some served listener is on; a
/// node address (node ports) is the node's own and never announced.
fn announcements(
    gateways: &[gateways::GatewayView<'_>],
    served: &[ListenerPlan],
) -> Vec<Announcement> {
    let mut out = Vec::new();
    for gateway in gateways {
        let Some(mode) = gateway.announce else {
            continue;
        };
        let meta = &gateway.gateway.metadata;
        for &address in &gateway.addresses {
            let is_served = served.iter().any(|l| {
                l.address() == address
                    && l.name().namespace == meta.namespace
                    && l.name().gateway == meta.name
            });
            if is_served {
                out.push(Announcement {
                    address,
                    mode,
                    gateway: meta.key(),
                });
            }
        }
    }
    out
}

/// What the listeners of one Gateway listener on the addresses of one
/// family share.
struct FamilyTable {
    groups: Vec<BackendGroup>,
    backends: Vec<crate::snapshot::Backend>,
}

/// The plan of `listeners`. The conflict pass above leaves one listener
/// per VIP key, so `SnapshotPlan` has nothing to refuse; should it refuse
/// anyway (a bug here), the listeners it names are reported as a conflict
/// is and left out, and the others are served: resolution never fails,
/// and a panic would take a running daemon down on a reload.
fn plan(
    generation: u64,
    maglev_seed: u32,
    mut listeners: Vec<ListenerPlan>,
    diagnostics: &mut Vec<Diagnostic>,
) -> SnapshotPlan {
    loop {
        let (error, refused) = match SnapshotPlan::new(generation, maglev_seed, listeners) {
            Ok(plan) => return plan,
            Err(refused) => refused,
        };
        let SnapshotError::DuplicateVip {
            protocol, endpoint, ..
        } = &error;
        let key = ServiceKey {
            endpoint: *endpoint,
            protocol: *protocol,
        };
        listeners = refused;
        for listener in listeners.iter().filter(|l| l.key() == key) {
            let name = listener.name();
            diagnostics.push(
                Diagnostic::new(
                    "Gateway",
                    &name.namespace,
                    &name.gateway,
                    Reason::ProtocolConflict,
                    format!("{error}; neither listener carries traffic there"),
                )
                .on_listener(&name.listener),
            );
        }
        listeners.retain(|l| l.key() != key);
    }
}

/// Index of a route in `Index::routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RouteId(usize);

/// Lookups over the resources, built once. Maps are keyed by
/// `(namespace, name)`; iteration orders are by key, never by document.
struct Index<'a> {
    /// GatewayClasses whose controller is Switchyard, by name.
    classes: BTreeMap<&'a str, &'a GatewayClass>,
    class_configs: HashMap<&'a str, &'a GatewayClassConfig>,
    pools: HashMap<&'a str, &'a AddressPool>,
    gateways: BTreeMap<(&'a str, &'a str), &'a Gateway>,
    /// Oldest first: the order in which routes claim listeners.
    routes: Vec<&'a Route>,
    services: HashMap<(&'a str, &'a str), &'a Service>,
    /// By (namespace, service name), sorted by slice name.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// By namespace.
    grants: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
    namespace_labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
    /// TrafficPolicies, oldest first (then by namespace/name): the order
    /// in which equally specific policies win.
    policies: Vec<&'a TrafficPolicy>,
    /// ServiceImports, EndpointSelectors and Pods.
    backends: backends::BackendIndex<'a>,
}

impl<'a> Index<'a> {
    fn new(resources: &'a Resources) -> Self {
        let classes = resources
            .gateway_classes
            .iter()
            .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
            .map(|c| (c.metadata.name.as_str(), c))
            .collect();
        let class_configs = resources
            .gateway_class_configs
            .iter()
            .map(|c| (c.metadata.name.as_str(), c))
            .collect();
        let pools = resources
            .address_pools
            .iter()
            .map(|p| (p.metadata.name.as_str(), p))
            .collect();
        let gateways = resources
            .gateways
            .iter()
            .map(|g| ((g.metadata.namespace.as_str(), g.metadata.name.as_str()), g))
            .collect();
        let mut routes: Vec<&Route> = resources.routes.iter().collect();
        // Gateway API: on conflict the oldest route wins, then the first in
        // alphabetical order of {namespace}/{name}. An object without a
        // creationTimestamp has not been created yet: it is the newest.
        routes.sort_by(|a, b| {
            let key = |r: &'a Route| {
                (
                    r.metadata.creation_timestamp.is_none(),
                    r.metadata.creation_timestamp.clone(),
                    r.metadata.namespace.as_str(),
                    r.metadata.name.as_str(),
                    r.kind,
                )
            };
            key(a).cmp(&key(b))
        });
        let services = resources
            .services
            .iter()
            .map(|s| ((s.metadata.namespace.as_str(), s.metadata.name.as_str()), s))
            .collect();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &resources.endpoint_slices {
            if let Some(service) = slice.service_name() {
                slices
                    .entry((slice.metadata.namespace.as_str(), service))
                    .or_default()
                    .push(slice);
            }
        }
        for list in slices.values_mut() {
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        let mut grants: HashMap<&str, Vec<&ReferenceGrant>> = HashMap::new();
        for grant in &resources.reference_grants {
            grants
                .entry(grant.metadata.namespace.as_str())
                .or_default()
                .push(grant);
        }
        let namespace_labels = resources
            .namespaces
            .iter()
            .map(|n| (n.metadata.name.as_str(), &n.metadata.labels))
            .collect();
        let mut policies: Vec<&TrafficPolicy> = resources.traffic_policies.iter().collect();
        policies.sort_by(|a, b| {
            let key = |p: &'a TrafficPolicy| {
                (
                    p.metadata.creation_timestamp.is_none(),
                    p.metadata.creation_timestamp.clone(),
                    p.metadata.namespace.as_str(),
                    p.metadata.name.as_str(),
                )
            };
            key(a).cmp(&key(b))
        });
        Self {
            backends: backends::BackendIndex::new(resources),
            policies,
            classes,
            class_configs,
            pools,
            gateways,
            routes,
            services,
            slices,
            grants,
            namespace_labels,
        }
    }

    /// Labels of a namespace as the API server would show them, including
    /// the `kubernetes.io/metadata.name` label it adds to every namespace.
    /// A namespace the file does not declare has only that label.
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(namespace)
            .map(|l| (*l).clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
        labels
    }
}
