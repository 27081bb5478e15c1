//! What replacing the running snapshot with a candidate would change, per
//! listener: settings, backends, the share of the hash space whose backend
//! moves, and the established flows that would lose their backend.
//!
//! Pure functions over the running snapshot, a candidate (a snapshot, or
//! the plan of one whose tables are built a listener at a time) and a count
//! of the workers' flows; the control socket gathers the inputs. Nothing
//! here touches worker state or the running config.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use switchyard_config::snapshot::{
    Backend, Endpoint, Listener, ListenerName, Protocol, Slot, SlotTable, Snapshot, SnapshotPlan,
};
use switchyard_proto::{
    FieldChange, ListenerChange, ListenerDiff, RemovedBackend, Reweight, StateChange,
};

use switchyard_dataplane::flow_scan::{ActiveEntry, FlowRecord};
use switchyard_dataplane::packet::FlowKey;

use crate::drain::{self, Drain, DrainError};
use crate::health::Target;

/// Hashes sampled, evenly over the 32-bit hash space, when the two tables
/// differ in size and slot `i` of one is not slot `i` of the other.
const HASH_SAMPLES: u64 = 1 << 20;

/// Weights closer than this are the same weight printed differently.
const WEIGHT_EPSILON: f64 = 1e-9;

/// The established client flows the workers hold, by the VIP they were
/// sent to and the backend they were translated to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveFlows {
    counts: HashMap<(Protocol, Endpoint, Endpoint), u64>,
}

impl ActiveFlows {
    /// Counts client-to-backend entries (see `count_entries`).
    pub fn count<'a>(records: impl IntoIterator<Item = &'a FlowRecord>) -> Self {
        Self::count_entries(
            records
                .into_iter()
                .filter_map(|r| ActiveEntry::of(&r.key, &r.entry)),
        )
    }

    /// Counts connections from client-to-backend entries of any worker: the
    /// same connection's entry in a second worker (its packets arrived on
    /// two queues) is not a second flow, and a TCP connection past its FIN
    /// or RST on any worker only lingers for stray segments, so it is not
    /// active even if another worker's copy has not seen the FIN.
    pub fn count_entries(entries: impl IntoIterator<Item = ActiveEntry>) -> Self {
        let mut closing: HashMap<(FlowKey, (IpAddr, u16)), bool> = HashMap::new();
        for entry in entries {
            *closing.entry((entry.key, entry.backend)).or_default() |= entry.closing;
        }
        let mut counts = HashMap::new();
        for ((key, backend), closing) in closing {
            let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
                continue;
            };
            if closing {
                continue;
            }
            let vip = Endpoint {
                address: key.dst,
                port: key.dst_port,
            };
            let backend = Endpoint {
                address: backend.0,
                port: backend.1,
            };
            *counts.entry((protocol, vip, backend)).or_default() += 1;
        }
        Self { counts }
    }

    /// Active flows of `listener` (by its VIP and protocol) on `backend`.
    pub fn on(&self, listener: &Listener, backend: Endpoint) -> u64 {
        self.counts
            .get(&(listener.protocol(), listener.vip(), backend))
            .copied()
            .unwrap_or(0)
    }

    /// Active flows of `listener` on any backend, including ones the
    /// current config no longer has.
    pub fn on_listener(&self, listener: &Listener) -> u64 {
        self.counts
            .iter()
            .filter(|((protocol, vip, _), _)| {
                *protocol == listener.protocol() && *vip == listener.vip()
            })
            .map(|(_, count)| count)
            .sum()
    }
}

/// Every listener of `running` and `candidate`: running ones in their
/// order (changed, unchanged or removed), then the added ones.
///
/// Listeners are matched by name; a Gateway with several addresses has one
/// listener per address under one name, so same-name listeners are first
/// matched by VIP and protocol, and what is left of them pairwise in order
/// (so a Gateway whose single address changes shows as changed, not as
/// removed and added).
///
/// `drains` are the operator's drains in force (already applied to both
/// snapshots' weights), so a backend's state reads as `yardctl backends`
/// shows it.
pub fn diff(
    running: &Snapshot,
    candidate: &Snapshot,
    drains: &BTreeSet<Drain>,
    flows: &ActiveFlows,
) -> Vec<ListenerDiff> {
    let sides = Sides {
        running,
        terminating: &|e| candidate.is_terminating(e),
        drains,
    };
    let outcome: Result<_, std::convert::Infallible> = report(
        running,
        flows,
        candidate.listeners(),
        |l| identity(l.name(), l.protocol(), l.vip()),
        |new| added(new.name(), new.protocol(), new.vip(), new.backends()),
        |old, new| Ok(compare(&sides, old, new, flows)),
    );
    match outcome {
        Ok(report) => report,
        Err(never) => match never {},
    }
}

/// `diff` against a candidate not built yet, as `config diff` compiles a
/// file: each listener the two share is built (with `drains` applied, as a
/// reload would publish it), compared and dropped before the next, so the
/// candidate's tables are never all in memory; a listener only the file
/// has needs no table at all. A candidate table equal to the running one
/// is the running one (`SlotTable::maglev`), so an unchanged listener
/// builds nothing.
pub fn diff_plan(
    running: &Snapshot,
    candidate: &SnapshotPlan,
    drains: &BTreeSet<Drain>,
    unhealthy: &BTreeSet<Target>,
    flows: &ActiveFlows,
) -> Result<Vec<ListenerDiff>, DrainError> {
    let sides = Sides {
        running,
        terminating: &|e| candidate.is_terminating(e),
        drains,
    };
    let seed = candidate.maglev_seed();
    report(
        running,
        flows,
        candidate.listeners(),
        |l| identity(l.name(), l.protocol(), l.vip()),
        |new| added(new.name(), new.protocol(), new.vip(), new.backends()),
        |old, new| {
            let new = drain::overlay_listener(&new.build(seed), drains, unhealthy, seed)?;
            Ok(compare(&sides, old, &new, flows))
        },
    )
}

/// The running snapshot's side and what `compare` needs of the candidate's.
struct Sides<'a> {
    running: &'a Snapshot,
    /// Whether an endpoint is terminating in the candidate.
    terminating: &'a dyn Fn(&Endpoint) -> bool,
    drains: &'a BTreeSet<Drain>,
}

/// How listeners are matched across the two sides.
type Identity = (String, Protocol, Endpoint);

fn identity(name: &ListenerName, protocol: Protocol, vip: Endpoint) -> Identity {
    (name.to_string(), protocol, vip)
}

/// `diff`'s report over candidates of any form: `compare` for each pair,
/// one pair at a time, in the order `diff` documents.
fn report<C, E>(
    running: &Snapshot,
    flows: &ActiveFlows,
    candidates: &[C],
    identify: impl Fn(&C) -> Identity,
    add: impl Fn(&C) -> ListenerDiff,
    mut compare: impl FnMut(&Listener, &C) -> Result<ListenerDiff, E>,
) -> Result<Vec<ListenerDiff>, E> {
    let old_ids: Vec<Identity> = running
        .listeners()
        .iter()
        .map(|l| identity(l.name(), l.protocol(), l.vip()))
        .collect();
    let new_ids: Vec<Identity> = candidates.iter().map(identify).collect();
    let pairs = pair_listeners(&old_ids, &new_ids);
    let mut matched_candidates = vec![false; candidates.len()];
    let mut report = Vec::with_capacity(running.listeners().len());
    for (old, partner) in running.listeners().iter().zip(&pairs) {
        match partner {
            Some(j) => {
                matched_candidates[*j] = true;
                report.push(compare(old, &candidates[*j])?);
            }
            None => report.push(removed(old, flows)),
        }
    }
    for (new, matched) in candidates.iter().zip(matched_candidates) {
        if !matched {
            report.push(add(new));
        }
    }
    Ok(report)
}

/// For each running listener, the index of its candidate counterpart.
fn pair_listeners(running: &[Identity], candidate: &[Identity]) -> Vec<Option<usize>> {
    let mut exact: HashMap<&Identity, usize> = HashMap::new();
    for (j, id) in candidate.iter().enumerate() {
        exact.entry(id).or_insert(j);
    }
    let mut taken = vec![false; candidate.len()];
    let mut pairs: Vec<Option<usize>> = running
        .iter()
        .map(|id| {
            let j = exact.remove(id)?;
            taken[j] = true;
            Some(j)
        })
        .collect();
    let mut leftovers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (j, id) in candidate.iter().enumerate() {
        if !taken[j] {
            leftovers.entry(id.0.as_str()).or_default().push(j);
        }
    }
    for (pair, id) in pairs.iter_mut().zip(running) {
        if pair.is_none() {
            if let Some(same_name) = leftovers.get_mut(id.0.as_str()) {
                if !same_name.is_empty() {
                    *pair = Some(same_name.remove(0));
                }
            }
        }
    }
    pairs
}

fn blank(listener: &Listener, change: ListenerChange) -> ListenerDiff {
    blank_of(listener.name(), listener.protocol(), listener.vip(), change)
}

fn blank_of(
    name: &ListenerName,
    protocol: Protocol,
    vip: Endpoint,
    change: ListenerChange,
) -> ListenerDiff {
    ListenerDiff {
        listener: name.to_string(),
        change,
        protocol: protocol.to_string(),
        vip: vip.to_string(),
        fields: Vec::new(),
        backends_added: Vec::new(),
        backends_removed: Vec::new(),
        backends_reweighted: Vec::new(),
        backends_state_changed: Vec::new(),
        moved_slots_fraction: 0.0,
        active_flows: 0,
        flows_on_removed_backends: 0,
    }
}

fn removed(old: &Listener, flows: &ActiveFlows) -> ListenerDiff {
    let active = flows.on_listener(old);
    ListenerDiff {
        backends_removed: old
            .backends()
            .iter()
            .map(|b| RemovedBackend {
                backend: b.endpoint.to_string(),
                active_flows: flows.on(old, b.endpoint),
            })
            .collect(),
        moved_slots_fraction: 1.0,
        active_flows: active,
        flows_on_removed_backends: active,
        ..blank(old, ListenerChange::Removed)
    }
}

fn added(
    name: &ListenerName,
    protocol: Protocol,
    vip: Endpoint,
    backends: &[Backend],
) -> ListenerDiff {
    ListenerDiff {
        backends_added: backends.iter().map(|b| b.endpoint.to_string()).collect(),
        moved_slots_fraction: 1.0,
        ..blank_of(name, protocol, vip, ListenerChange::Added)
    }
}

fn compare(sides: &Sides, old: &Listener, new: &Listener, flows: &ActiveFlows) -> ListenerDiff {
    let mut diff = blank(new, ListenerChange::Unchanged);
    let mut field = |name: &str, from: String, to: String| {
        if from != to {
            diff.fields.push(FieldChange {
                field: name.to_owned(),
                from,
                to,
            });
        }
    };
    field(
        "address",
        old.address().to_string(),
        new.address().to_string(),
    );
    field("port", old.port().to_string(), new.port().to_string());
    field(
        "listener_port",
        old.listener_port().to_string(),
        new.listener_port().to_string(),
    );
    field(
        "protocol",
        old.protocol().to_string(),
        new.protocol().to_string(),
    );
    field("route", display_route(old), display_route(new));
    field("backend_refs", backend_refs(old), backend_refs(new));
    field(
        "table_size",
        old.slots().len().to_string(),
        new.slots().len().to_string(),
    );
    field("affinity", affinity(old), affinity(new));

    let old_weights: BTreeMap<Endpoint, f64> = old
        .backends()
        .iter()
        .map(|b| (b.endpoint, b.effective_weight))
        .collect();
    let new_weights: BTreeMap<Endpoint, f64> = new
        .backends()
        .iter()
        .map(|b| (b.endpoint, b.effective_weight))
        .collect();
    for (endpoint, &to) in &new_weights {
        match old_weights.get(endpoint) {
            None => diff.backends_added.push(endpoint.to_string()),
            Some(&from) if (from - to).abs() > WEIGHT_EPSILON => {
                diff.backends_reweighted.push(Reweight {
                    backend: endpoint.to_string(),
                    from,
                    to,
                })
            }
            Some(_) => {}
        }
    }
    for endpoint in old_weights.keys() {
        if !new_weights.contains_key(endpoint) {
            let active_flows = flows.on(old, *endpoint);
            diff.flows_on_removed_backends += active_flows;
            diff.backends_removed.push(RemovedBackend {
                backend: endpoint.to_string(),
                active_flows,
            });
        }
    }
    for backend in new.backends() {
        let Some(was) = old
            .backends()
            .iter()
            .find(|b| b.endpoint == backend.endpoint)
        else {
            continue;
        };
        let from = drain::backend_state(sides.running, sides.drains, old, was, None);
        let to = drain::state_of(
            (sides.terminating)(&backend.endpoint),
            sides.drains,
            new,
            backend,
        );
        if from != to {
            diff.backends_state_changed.push(StateChange {
                backend: backend.endpoint.to_string(),
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
    }
    diff.active_flows = flows.on_listener(old);
    diff.moved_slots_fraction = moved_fraction(old, new);
    let changed = !diff.fields.is_empty()
        || !diff.backends_added.is_empty()
        || !diff.backends_removed.is_empty()
        || !diff.backends_reweighted.is_empty()
        || !diff.backends_state_changed.is_empty()
        || diff.moved_slots_fraction > 0.0;
    if changed {
        diff.change = ListenerChange::Changed;
    }
    diff
}

fn display_route(l: &Listener) -> String {
    if l.route().is_empty() {
        "none".to_owned()
    } else {
        l.route().to_owned()
    }
}

fn backend_refs(l: &Listener) -> String {
    if l.groups().is_empty() {
        return "none".to_owned();
    }
    l.groups()
        .iter()
        .map(|g| format!("{} (weight {})", g.service, g.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

fn affinity(l: &Listener) -> String {
    match l.affinity() {
        Some(a) => format!("ClientIP, {}s", a.timeout_secs),
        None => "none".to_owned(),
    }
}

/// Whether slot owner `a` of the old table is owner `b` of the new one:
/// the same endpoint (`renumber` maps old backend indices to new ones, as
/// backend indices are per snapshot), or both a share that refuses flows.
fn same_owner(renumber: &[Option<u32>], a: Slot, b: Slot) -> bool {
    match (a, b) {
        (Slot::Backend(a), Slot::Backend(b)) => renumber.get(a as usize) == Some(&Some(b)),
        (Slot::Unavailable, Slot::Unavailable) => true,
        _ => false,
    }
}

/// Share of flow hashes whose owner differs between the two tables. Owners
/// are compared by endpoint: backend indices are per snapshot. Reads the
/// two tables in place; what it allocates is per backend, not per slot.
pub fn moved_fraction(old: &Listener, new: &Listener) -> f64 {
    if SlotTable::ptr_eq(old.slots(), new.slots()) && old.backends() == new.backends() {
        return 0.0;
    }
    let positions: HashMap<Endpoint, u32> = new
        .backends()
        .iter()
        .enumerate()
        .map(|(i, b)| (b.endpoint, i as u32))
        .collect();
    let renumber: Vec<Option<u32>> = old
        .backends()
        .iter()
        .map(|b| positions.get(&b.endpoint).copied())
        .collect();
    let (old, new) = (old.slots(), new.slots());
    if old.len() == new.len() {
        let moved = old
            .iter()
            .zip(new)
            .filter(|&(a, b)| !same_owner(&renumber, a, b))
            .count();
        return moved as f64 / old.len() as f64;
    }
    // The workers pick slot `hash % table size`: with different sizes, the
    // same hash lands on unrelated slots, so compare hash by hash.
    let step = (1u64 << 32) / HASH_SAMPLES;
    let moved = (0..HASH_SAMPLES)
        .map(|i| (i * step) as u32)
        .filter(|&hash| !same_owner(&renumber, old.slot_of(hash).1, new.slot_of(hash).1))
        .count();
    moved as f64 / HASH_SAMPLES as f64
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use switchyard_config::maglev::{self, MaglevEntry};
    use switchyard_config::snapshot::{
        Affinity, Backend, BackendGroup, ListenerName, ListenerParts,
    };

    use super::*;
    use switchyard_dataplane::flow::{Direction, FlowEntry};
    use switchyard_dataplane::packet::{FlowKey, Rewrite};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
    const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);
    const BE3: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 23);
    const TABLE: usize = 65_537;

    fn endpoint(address: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(address),
            port,
        }
    }

    /// `demo/edge/<name>` on VIP:`port`, one backendRef `demo/echo` over
    /// `backends` (port 8080, weight 1 each), Maglev table of `size`.
    fn listener(name: &str, port: u16, backends: &[(Ipv4Addr, f64)], size: usize) -> Listener {
        let endpoints: Vec<Endpoint> = backends.iter().map(|&(a, _)| endpoint(a, 8080)).collect();
        let weights: Vec<f64> = backends.iter().map(|&(_, w)| w).collect();
        let entries: Vec<MaglevEntry> = endpoints
            .iter()
            .zip(&weights)
            .map(|(e, &w)| MaglevEntry::new(e.to_string(), w))
            .collect();
        let slots = maglev::build(&entries, size, 0)
            .into_iter()
            .map(|owner| owner.map_or(Slot::Unavailable, Slot::Backend))
            .collect();
        Listener::new(ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: name.into(),
            },
            route: "demo/echo".into(),
            address: IpAddr::V4(VIP),
            port,
            listener_port: port,
            protocol: Protocol::Tcp,
            groups: vec![BackendGroup {
                terminating: false,
                draining: Vec::new(),
                health_check: None,
                service: "demo/echo".into(),
                weight: 1,
                endpoints: endpoints.clone(),
            }],
            backends: endpoints
                .iter()
                .zip(&weights)
                .map(|(&endpoint, &w)| Backend {
                    endpoint,
                    group: 0,
                    effective_weight: w,
                })
                .collect(),
            slots,
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        })
        .unwrap()
    }

    fn flow(client_port: u16, vip_port: u16, backend: Ipv4Addr, closing: bool) -> FlowRecord {
        let key = FlowKey {
            src: Ipv4Addr::new(198, 18, 1, 10).into(),
            dst: VIP.into(),
            src_port: client_port,
            dst_port: vip_port,
            protocol: 6,
        };
        FlowRecord {
            queue: 0,
            key,
            entry: FlowEntry {
                rewrite: Rewrite {
                    eth_src: [0; 6],
                    eth_dst: [0; 6],
                    ip_src: key.src,
                    ip_dst: backend.into(),
                    src_port: client_port,
                    dst_port: 8080,
                },
                egress_port: 1,
                egress_vlan: switchyard_dataplane::neighbor::PackedVlan::NONE,
                egress_mtu: 0,
                direction: Direction::ToBackend,
                tunnel: switchyard_dataplane::packet::Tunnel::None,
                listener: 0,
                backend: 0,
                generation: 1,
                l2_version: 0,
                created_ns: 0,
                last_seen_ns: 0,
                packets: 1,
                bytes: 60,
                syn_only: false,
                closing,
                cached: Default::default(),
                cached_at: 0,
                proxy: None,
            },
        }
    }

    fn only(diffs: &[ListenerDiff], name: &str) -> ListenerDiff {
        let found: Vec<&ListenerDiff> = diffs.iter().filter(|d| d.listener == name).collect();
        assert_eq!(found.len(), 1, "{name} in {diffs:?}");
        found[0].clone()
    }

    #[test]
    fn identical_snapshots_are_unchanged_with_nothing_moving() {
        let running = Snapshot::new(
            1,
            vec![listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], TABLE)],
        )
        .unwrap();
        let candidate = Snapshot::new(2, running.listeners().to_vec()).unwrap();
        let diffs = diff(
            &running,
            &candidate,
            &BTreeSet::new(),
            &ActiveFlows::default(),
        );
        assert_eq!(diffs.len(), 1);
        let web = &diffs[0];
        assert_eq!(web.change, ListenerChange::Unchanged);
        assert_eq!(web.moved_slots_fraction, 0.0);
        assert!(web.fields.is_empty() && web.backends_removed.is_empty());
    }

    #[test]
    fn removing_one_of_two_equal_backends_moves_its_half_and_counts_its_flows() {
        let running = Snapshot::new(
            1,
            vec![listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], TABLE)],
        )
        .unwrap();
        let candidate = Snapshot::new(2, vec![listener("web", 80, &[(BE2, 1.0)], TABLE)]).unwrap();
        let records = [
            flow(40000, 80, BE1, false),
            flow(40001, 80, BE1, false),
            flow(40002, 80, BE2, false),
            // Closing: not active.
            flow(40003, 80, BE1, true),
            // Another VIP port: another listener's flow.
            flow(40004, 81, BE1, false),
            // The first flow again, from a second worker: one connection.
            FlowRecord {
                queue: 1,
                ..flow(40000, 80, BE1, false)
            },
        ];
        let diffs = diff(
            &running,
            &candidate,
            &BTreeSet::new(),
            &ActiveFlows::count(&records),
        );
        let web = only(&diffs, "demo/edge/web");
        assert_eq!(web.change, ListenerChange::Changed);
        assert_eq!(
            web.backends_removed,
            vec![RemovedBackend {
                backend: "198.18.2.21:8080".into(),
                active_flows: 2,
            }]
        );
        assert_eq!(web.flows_on_removed_backends, 2);
        assert_eq!(web.active_flows, 3);
        // Exactly be1's slots move, and Maglev gives it close to half.
        let be1_share = running.listeners()[0]
            .slots()
            .iter()
            .filter(|s| *s == Slot::Backend(0))
            .count() as f64
            / TABLE as f64;
        assert!((web.moved_slots_fraction - be1_share).abs() < 1e-12);
        assert!((0.45..0.55).contains(&web.moved_slots_fraction), "{web:?}");
    }

    #[test]
    fn backends_are_compared_by_endpoint_not_index() {
        // Same backends, listed in the other order: indices swap, owners do
        // not.
        let mut running_web = listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], 7).into_parts();
        let mut reordered = running_web.clone();
        reordered.backends.reverse();
        for slot in &mut reordered.slots {
            if let Slot::Backend(i) = slot {
                *i = 1 - *i;
            }
        }
        running_web.slots[0] = Slot::Backend(0);
        reordered.slots[0] = Slot::Backend(1);
        let diffs = diff(
            &Snapshot::new(1, vec![Listener::new(running_web).unwrap()]).unwrap(),
            &Snapshot::new(2, vec![Listener::new(reordered).unwrap()]).unwrap(),
            &BTreeSet::new(),
            &ActiveFlows::default(),
        );
        assert_eq!(diffs[0].change, ListenerChange::Unchanged, "{diffs:?}");
        assert_eq!(diffs[0].moved_slots_fraction, 0.0);
    }

    #[test]
    fn added_backend_moves_about_its_share_and_is_listed() {
        let running = Snapshot::new(
            1,
            vec![listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], TABLE)],
        )
        .unwrap();
        let candidate = Snapshot::new(
            2,
            vec![listener(
                "web",
                80,
                &[(BE1, 1.0), (BE2, 1.0), (BE3, 1.0)],
                TABLE,
            )],
        )
        .unwrap();
        let web = only(
            &diff(
                &running,
                &candidate,
                &BTreeSet::new(),
                &ActiveFlows::default(),
            ),
            "demo/edge/web",
        );
        assert_eq!(web.change, ListenerChange::Changed);
        assert_eq!(web.backends_added, vec!["198.18.2.23:8080".to_owned()]);
        assert!(web.backends_removed.is_empty());
        // Maglev's minimal disruption: about 1/3 moves (to be3), not more.
        assert!(
            (0.30..0.40).contains(&web.moved_slots_fraction),
            "{}",
            web.moved_slots_fraction
        );
    }

    #[test]
    fn reweighting_is_reported_with_both_weights() {
        let running = Snapshot::new(
            1,
            vec![listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], TABLE)],
        )
        .unwrap();
        let candidate = Snapshot::new(
            2,
            vec![listener("web", 80, &[(BE1, 3.0), (BE2, 1.0)], TABLE)],
        )
        .unwrap();
        let web = only(
            &diff(
                &running,
                &candidate,
                &BTreeSet::new(),
                &ActiveFlows::default(),
            ),
            "demo/edge/web",
        );
        assert_eq!(
            web.backends_reweighted,
            vec![Reweight {
                backend: "198.18.2.21:8080".into(),
                from: 1.0,
                to: 3.0,
            }]
        );
        assert!(web.moved_slots_fraction > 0.2, "{web:?}");
    }

    #[test]
    fn listeners_only_in_one_snapshot_are_added_or_removed() {
        let running = Snapshot::new(
            1,
            vec![
                listener("web", 80, &[(BE1, 1.0)], 7),
                listener("old", 81, &[(BE1, 1.0), (BE2, 1.0)], 7),
            ],
        )
        .unwrap();
        let candidate = Snapshot::new(
            2,
            vec![
                listener("new", 82, &[(BE2, 1.0)], 7),
                listener("web", 80, &[(BE1, 1.0)], 7),
            ],
        )
        .unwrap();
        let records = [flow(40000, 81, BE2, false), flow(40001, 81, BE1, false)];
        let diffs = diff(
            &running,
            &candidate,
            &BTreeSet::new(),
            &ActiveFlows::count(&records),
        );
        let order: Vec<(&str, ListenerChange)> = diffs
            .iter()
            .map(|d| (d.listener.as_str(), d.change))
            .collect();
        assert_eq!(
            order,
            vec![
                ("demo/edge/web", ListenerChange::Unchanged),
                ("demo/edge/old", ListenerChange::Removed),
                ("demo/edge/new", ListenerChange::Added),
            ]
        );
        assert_eq!(diffs[1].flows_on_removed_backends, 2);
        assert_eq!(diffs[1].moved_slots_fraction, 1.0);
        assert_eq!(diffs[2].backends_added, vec!["198.18.2.22:8080".to_owned()]);
    }

    #[test]
    fn settings_changes_are_named_field_by_field() {
        let old = listener("web", 80, &[(BE1, 1.0)], 7);
        let mut new = listener("web", 8080, &[(BE1, 1.0)], 11).into_parts();
        new.route = "demo/other".into();
        new.affinity = Some(Affinity { timeout_secs: 600 });
        let web = only(
            &diff(
                &Snapshot::new(1, vec![old]).unwrap(),
                &Snapshot::new(2, vec![Listener::new(new).unwrap()]).unwrap(),
                &BTreeSet::new(),
                &ActiveFlows::default(),
            ),
            "demo/edge/web",
        );
        assert_eq!(web.change, ListenerChange::Changed);
        let fields: Vec<(&str, &str, &str)> = web
            .fields
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_str(), f.to.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("port", "80", "8080"),
                ("listener_port", "80", "8080"),
                ("route", "demo/echo", "demo/other"),
                ("table_size", "7", "11"),
                ("affinity", "none", "ClientIP, 600s"),
            ]
        );
        // One backend owns every slot of both tables: nothing moves.
        assert_eq!(web.moved_slots_fraction, 0.0);
        assert_eq!(web.vip, "198.18.100.10:8080");
    }

    #[test]
    fn gateway_addresses_pair_by_vip_before_order() {
        let at = |address: Ipv4Addr, backends: &[(Ipv4Addr, f64)]| {
            let mut l = listener("web", 80, backends, 7).into_parts();
            l.address = IpAddr::V4(address);
            Listener::new(l).unwrap()
        };
        let a = Ipv4Addr::new(198, 18, 100, 1);
        let b = Ipv4Addr::new(198, 18, 100, 2);
        let c = Ipv4Addr::new(198, 18, 100, 3);
        let running = Snapshot::new(1, vec![at(a, &[(BE1, 1.0)]), at(b, &[(BE1, 1.0)])]).unwrap();
        // Address a is replaced by c; b stays.
        let candidate = Snapshot::new(2, vec![at(b, &[(BE1, 1.0)]), at(c, &[(BE1, 1.0)])]).unwrap();
        let diffs = diff(
            &running,
            &candidate,
            &BTreeSet::new(),
            &ActiveFlows::default(),
        );
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert_eq!(diffs[0].change, ListenerChange::Changed);
        assert_eq!(diffs[0].fields[0].from, "198.18.100.1");
        assert_eq!(diffs[0].fields[0].to, "198.18.100.3");
        assert_eq!(diffs[1].change, ListenerChange::Unchanged);
        assert_eq!(diffs[1].vip, "198.18.100.2:80");
    }

    #[test]
    fn tables_of_different_sizes_are_compared_hash_by_hash() {
        let old = listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], 7);
        let same_owner_everywhere = listener("web", 80, &[(BE1, 1.0)], 11);
        let moved = moved_fraction(&old, &same_owner_everywhere);
        let be2_share = old
            .slots()
            .iter()
            .filter(|s| *s == Slot::Backend(1))
            .count() as f64
            / 7.0;
        // Hashes spread evenly over the old table, so the share that was
        // be2's is what moves.
        assert!((moved - be2_share).abs() < 0.01, "{moved} vs {be2_share}");
    }

    #[test]
    fn unavailable_share_counts_as_an_owner_of_its_own() {
        let old = listener("web", 80, &[(BE1, 1.0)], 7);
        let mut new = old.clone().into_parts();
        new.slots[3] = Slot::Unavailable;
        new.slots[5] = Slot::Unavailable;
        let new = Listener::new(new).unwrap();
        assert!((moved_fraction(&old, &new) - 2.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn a_connection_closing_on_any_worker_is_not_active_and_copies_count_once() {
        let web = listener("web", 80, &[(BE1, 1.0)], 7);
        let records = [
            // Open on two workers: one flow.
            flow(40000, 80, BE1, false),
            FlowRecord {
                queue: 1,
                ..flow(40000, 80, BE1, false)
            },
            // The FIN passed worker 1 only: closing all the same.
            flow(40001, 80, BE1, false),
            FlowRecord {
                queue: 1,
                ..flow(40001, 80, BE1, true)
            },
        ];
        let flows = ActiveFlows::count(&records);
        assert_eq!(flows.on_listener(&web), 1);
        assert_eq!(flows.on(&web, endpoint(BE1, 8080)), 1);
        assert_eq!(flows.on(&web, endpoint(BE2, 8080)), 0);
    }

    #[test]
    fn a_backend_becoming_terminating_is_a_state_change_that_moves_nothing() {
        let web = || listener("web", 80, &[(BE1, 1.0), (BE2, 1.0)], TABLE);
        let running = Snapshot::new(1, vec![web()]).unwrap();
        let candidate = Snapshot::new(2, vec![web()])
            .unwrap()
            .with_terminating([endpoint(BE2, 8080)]);
        let diffs = diff(
            &running,
            &candidate,
            &BTreeSet::new(),
            &ActiveFlows::default(),
        );
        let web = only(&diffs, "demo/edge/web");
        assert_eq!(web.change, ListenerChange::Changed);
        assert_eq!(
            web.backends_state_changed,
            [StateChange {
                backend: "198.18.2.22:8080".into(),
                from: "ready".into(),
                to: "terminating".into(),
            }]
        );
        assert_eq!(
            web.moved_slots_fraction, 0.0,
            "a terminating backend keeps its slots"
        );
        let drains = BTreeSet::from([Drain {
            listener: None,
            endpoint: endpoint(BE2, 8080),
        }]);
        let drained = diff(&running, &candidate, &drains, &ActiveFlows::default());
        assert!(
            drained[0].backends_state_changed.is_empty(),
            "drained in both: draining either way"
        );
    }

    /// Gateway demo/edge on 198.18.100.10 with a TCP listener per
    /// `(name, port, endpoints)`, each routed to a Service of its own.
    fn yaml(listeners: &[(&str, u16, &[Ipv4Addr])]) -> String {
        let mut out = String::from(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sy}\n\
             spec: {controllerName: switchyard.io/gateway-controller}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: demo}\n\
             spec:\n  gatewayClassName: sy\n  addresses: [{value: 198.18.100.10}]\n  listeners:\n",
        );
        for (name, port, _) in listeners {
            out += &format!("  - {{name: {name}, port: {port}, protocol: TCP}}\n");
        }
        for (name, _, endpoints) in listeners {
            let endpoints: Vec<String> = endpoints
                .iter()
                .map(|a| format!("{{addresses: [\"{a}\"]}}"))
                .collect();
            out += &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {{name: {name}, namespace: demo}}\n\
                 spec:\n  parentRefs: [{{name: edge, sectionName: {name}}}]\n  rules:\n  - backendRefs: [{{name: {name}, port: 80}}]\n\
                 ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
                 spec:\n  ports: [{{name: tcp, port: 80, targetPort: 8080}}]\n\
                 ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}\n\
                 addressType: IPv4\nports: [{{name: tcp, port: 8080}}]\nendpoints: [{}]\n",
                endpoints.join(", ")
            );
        }
        out
    }

    fn plan(listeners: &[(&str, u16, &[Ipv4Addr])], generation: u64) -> SnapshotPlan {
        let resources = switchyard_config::load_str("t.yaml", &yaml(listeners)).unwrap();
        let options = switchyard_config::Options {
            maglev_seed: 5,
            ..Default::default()
        };
        switchyard_config::plan_with(&resources, generation, &options).plan
    }

    #[test]
    fn a_diff_against_a_plan_reports_what_a_diff_against_its_snapshot_does() {
        let drains = BTreeSet::from([Drain {
            listener: None,
            endpoint: endpoint(BE1, 8080),
        }]);
        // Running as the daemon publishes it: with the drains applied.
        let running = plan(
            &[
                ("web", 80, &[BE1, BE2]),
                ("same", 81, &[BE1, BE2, BE3]),
                ("old", 82, &[BE3]),
            ],
            1,
        )
        .build();
        let running = drain::apply(&running, &drains, 1, 5).unwrap();
        let candidate = plan(
            &[
                ("web", 80, &[BE1, BE3]),
                ("same", 81, &[BE1, BE2, BE3]),
                ("new", 83, &[BE2]),
            ],
            2,
        );
        let records = [flow(40000, 80, BE2, false), flow(40001, 82, BE3, false)];
        let flows = ActiveFlows::count(&records);
        let planned = diff_plan(&running, &candidate, &drains, &BTreeSet::new(), &flows).unwrap();
        let built = drain::apply(&candidate.clone().build(), &drains, 2, 5).unwrap();
        assert_eq!(planned, diff(&running, &built, &drains, &flows));
        let changes: Vec<(&str, ListenerChange)> = planned
            .iter()
            .map(|d| (d.listener.as_str(), d.change))
            .collect();
        assert_eq!(
            changes,
            [
                ("demo/edge/old", ListenerChange::Removed),
                ("demo/edge/same", ListenerChange::Unchanged),
                ("demo/edge/web", ListenerChange::Changed),
                ("demo/edge/new", ListenerChange::Added),
            ]
        );
    }
}
