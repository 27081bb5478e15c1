//! `yardctl listeners`, `backends`, filtered `flows` and `drain`: what the
//! snapshot holds, joined with the flows the workers track. Everything here
//! works on copies (the snapshot `Arc`, what the workers' flow-table jobs
//! hand back), off the packet path.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use switchyard_config::snapshot::{Slot, Snapshot};
use switchyard_proto::{
    BackendInfo, BackendsReport, Cidr, DrainReport, FlowFilter, FlowQuery, FlowsReport,
    ListenerInfo, ListenersReport,
};

use super::{ask_workers, flows_report, ControlState};
use crate::config_diff::ActiveFlows;
use crate::drain::{self, Drain};
use crate::health::{Observation, Target};
use switchyard_dataplane::flow_scan::{Connection, FlowRecord, FlowScan, FlowSelect, FlowSort};
use switchyard_dataplane::worker::WorkerRequest;

pub fn listeners_report(snapshot: &Snapshot, active: &ActiveFlows) -> ListenersReport {
    ListenersReport {
        generation: snapshot.generation(),
        listeners: snapshot
            .listeners()
            .iter()
            .map(|l| ListenerInfo {
                listener: l.name().to_string(),
                protocol: l.protocol().to_string(),
                vip: l.vip().to_string(),
                listener_port: l.listener_port(),
                route: l.route().to_owned(),
                backends: l.backends().len(),
                table_size: l.slots().len(),
                affinity_timeout_secs: l.affinity().map(|a| a.timeout_secs),
                active_flows: active.on_listener(l),
                mode: l.forwarding().name().to_owned(),
            })
            .collect(),
    }
}

/// Every backend of every listener, or of the one named.
pub fn backends_report(
    snapshot: &Snapshot,
    drains: &BTreeSet<Drain>,
    health: &BTreeMap<Target, Observation>,
    active: &ActiveFlows,
    listener: Option<&str>,
) -> Result<BackendsReport, String> {
    let now = SystemTime::now();
    if let Some(name) = listener {
        if snapshot.find_listener(name).is_none() {
            return Err(format!(
                "no listener is named {name:?} (see `yardctl listeners`)"
            ));
        }
    }
    let mut backends = Vec::new();
    for l in snapshot.listeners() {
        let name = l.name().to_string();
        if listener.is_some_and(|wanted| wanted != name) {
            continue;
        }
        // One pass over the table for all of the listener's backends.
        let mut slots = vec![0usize; l.backends().len()];
        for slot in l.slots() {
            if let Slot::Backend(b) = slot {
                if let Some(count) = slots.get_mut(b as usize) {
                    *count += 1;
                }
            }
        }
        for (b, backend) in l.backends().iter().enumerate() {
            let group = l.groups().get(backend.group as usize);
            let target = group
                .and_then(|g| g.health_check.clone())
                .map(|check| Target {
                    endpoint: backend.endpoint,
                    check,
                });
            let observed = target
                .as_ref()
                .map(|t| health.get(t).cloned().unwrap_or_default());
            let health = observed.as_ref().map(|o| o.health);
            let state = drain::backend_state(snapshot, drains, l, backend, health);
            let last = observed.as_ref().and_then(|o| o.last.as_ref());
            backends.push(BackendInfo {
                listener: name.clone(),
                vip: l.vip().to_string(),
                backend: backend.endpoint.to_string(),
                service: group.map(|g| g.service.clone()).unwrap_or_default(),
                group_weight: group.map_or(0, |g| g.weight),
                effective_weight: backend.effective_weight,
                state: state.to_owned(),
                slots: slots[b],
                active_flows: active.on(l, backend.endpoint),
                health: observed.as_ref().map(|o| o.health.name().to_owned()),
                health_check: target.as_ref().map(Target::describe),
                health_reason: observed
                    .as_ref()
                    .filter(|o| !o.reason.is_empty())
                    .map(|o| o.reason.clone()),
                health_changed_secs: observed
                    .as_ref()
                    .and_then(|o| o.changed_at)
                    .map(|at| now.duration_since(at).unwrap_or_default().as_secs_f64()),
                last_probe: last
                    .map(|p| format!("{}: {}", if p.passed { "pass" } else { "fail" }, p.detail)),
                probe_latency_ms: last.map(|p| p.latency.as_secs_f64() * 1e3),
            });
        }
    }
    Ok(BackendsReport {
        generation: snapshot.generation(),
        backends,
    })
}

/// Established connections over all workers: each worker hands over its
/// client-to-backend entries a chunk per batch gap, and `ActiveFlows`
/// counts a connection once however many workers hold it.
pub fn active_flows(state: &ControlState) -> Result<ActiveFlows, String> {
    let entries = ask_workers(state, WorkerRequest::ActiveFlows)?;
    Ok(ActiveFlows::count_entries(entries.into_iter().flatten()))
}

pub fn listeners(state: &ControlState) -> Result<ListenersReport, String> {
    let active = active_flows(state)?;
    Ok(listeners_report(&state.config.load_full(), &active))
}

pub fn backends(state: &ControlState, listener: Option<&str>) -> Result<BackendsReport, String> {
    let active = active_flows(state)?;
    backends_report(
        &state.config.load_full(),
        &state.drains.drains(),
        &observations(state),
        &active,
        listener,
    )
}

/// What the health monitor knows now; nothing when no check runs.
pub fn observations(state: &ControlState) -> BTreeMap<Target, Observation> {
    state
        .drains
        .health()
        .map(|monitor| monitor.observations())
        .unwrap_or_default()
}

/// What the workers filter on for `query` under `snapshot`: the listener
/// as its VIPs, the client CIDR and the backend, of either family.
pub fn flow_scan(snapshot: &Snapshot, query: &FlowQuery) -> Result<FlowScan, String> {
    let mut select = FlowSelect::default();
    if let Some(name) = &query.listener {
        let vips: Vec<_> = snapshot
            .listeners()
            .iter()
            .filter(|l| l.name().to_string() == *name)
            .map(|l| (l.protocol() as u8, l.address(), l.port()))
            .collect();
        if vips.is_empty() && snapshot.find_listener(name).is_none() {
            return Err(format!(
                "no listener is named {name:?} (see `yardctl listeners`)"
            ));
        }
        select.vips = Some(vips);
    }
    if let Some(text) = &query.client {
        match Cidr::parse(text) {
            Some(Cidr {
                network,
                prefix_len,
            }) => select.client = Some((network, prefix_len)),
            None => {
                return Err(switchyard_proto::QueryError::Client(text.clone()).to_string());
            }
        }
    }
    if let Some(text) = &query.backend {
        match text.parse::<SocketAddr>() {
            Ok(backend) => select.backend = Some((backend.ip(), backend.port())),
            Err(_) => return Err(switchyard_proto::QueryError::Backend(text.clone()).to_string()),
        }
    }
    Ok(FlowScan {
        select,
        sort: query.sort.map(|sort| match sort {
            switchyard_proto::FlowSort::Bytes => FlowSort::Bytes,
            switchyard_proto::FlowSort::Packets => FlowSort::Packets,
            switchyard_proto::FlowSort::Age => FlowSort::Age,
        }),
        limit: query.limit,
    })
}

/// The 5-tuples of both halves of every connection `records` show.
pub fn connection_keys(records: &[FlowRecord]) -> Vec<switchyard_dataplane::packet::FlowKey> {
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    for record in records {
        let connection = Connection::of(&record.key, &record.entry);
        for key in [connection.forward_key(), connection.reply_key()] {
            if seen.insert(key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// `yardctl flows` with its filters: each worker filters, ranks and keeps
/// at most `limit` connections of its own table. With several workers a
/// connection's halves (or copies) may sit on several, and a worker's
/// best may hold only part of one; the candidates' entries are then read
/// back from every worker so each row counts both directions in full.
/// The ranking that picked the candidates used each worker's share.
pub fn query_flows(state: &ControlState, query: &FlowQuery) -> Result<FlowsReport, String> {
    let filter = FlowFilter::new(query).map_err(|e| e.to_string())?;
    let snapshot = state.config.load_full();
    // The fast path's packets are counted in the cache, not by the workers,
    // so a top-N by traffic is taken here, once the cache's counts are in.
    let by_traffic = matches!(
        query.sort,
        Some(switchyard_proto::FlowSort::Bytes | switchyard_proto::FlowSort::Packets)
    );
    let worker_query = if state.fast_path.is_some() && by_traffic {
        FlowQuery {
            limit: None,
            ..query.clone()
        }
    } else {
        query.clone()
    };
    let query = &worker_query;
    let scan = flow_scan(&snapshot, query)?;
    let mut records: Vec<FlowRecord> =
        ask_workers(state, |reply| WorkerRequest::Flows(scan.clone(), reply))?
            .into_iter()
            .flatten()
            .collect();
    if state.workers.len() > 1 && query.limit.is_some() {
        let keys = connection_keys(&records);
        records = ask_workers(state, |reply| WorkerRequest::Peek(keys.clone(), reply))?
            .into_iter()
            .flatten()
            .collect();
    }
    let report = flows_report(
        &snapshot,
        records.into_iter(),
        state.epoch.elapsed().as_nanos() as u64,
        super::cache_view(state).as_ref(),
    );
    Ok(FlowsReport {
        flows: filter.apply(report.flows),
    })
}

pub fn set_drain(
    state: &ControlState,
    backend: &str,
    listener: Option<&str>,
    drained: bool,
) -> Result<DrainReport, String> {
    let endpoint = drain::parse_endpoint(backend).map_err(|e| e.to_string())?;
    let listener = listener.map(str::to_owned);
    let outcome = if drained {
        state.drains.drain(endpoint, listener)
    } else {
        state.drains.undrain(endpoint, listener)
    }
    .map_err(|e| e.to_string())?;
    if outcome.changed {
        log::info!(
            "backend {endpoint} {} on {}: generation {}",
            if drained { "drained" } else { "undrained" },
            outcome.listeners.join(", "),
            outcome.generation
        );
    }
    Ok(DrainReport {
        backend: endpoint.to_string(),
        listeners: outcome.listeners,
        drained,
        generation: outcome.generation,
        changed: outcome.changed,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use switchyard_config::snapshot::{
        Backend, BackendGroup, Endpoint, Listener, ListenerName, ListenerParts, Protocol,
    };
    use switchyard_proto::{FlowSort, STATE_DRAINING, STATE_READY, STATE_TERMINATING};

    use super::*;
    use switchyard_dataplane::flow::{Direction, FlowEntry};
    use switchyard_dataplane::packet::{FlowKey, Rewrite};

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10));
    const BE1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 21));
    const BE2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 22));

    fn endpoint(address: IpAddr) -> Endpoint {
        Endpoint {
            address,
            port: 8080,
        }
    }

    /// demo/edge/web on VIP:80, backends be1 (3 slots) and be2 (weight 0,
    /// no slot), two unavailable slots (a table has a prime number of
    /// slots).
    fn snapshot() -> Snapshot {
        let web = Listener::new(ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: "web".into(),
            },
            route: "demo/web".into(),
            address: VIP,
            port: 30080,
            listener_port: 80,
            protocol: Protocol::Tcp,
            groups: vec![BackendGroup {
                terminating: false,
                draining: Vec::new(),
                health_check: None,
                service: "demo/echo".into(),
                weight: 2,
                endpoints: vec![endpoint(BE1), endpoint(BE2)],
            }],
            backends: vec![
                Backend {
                    endpoint: endpoint(BE1),
                    group: 0,
                    effective_weight: 2.0,
                },
                Backend {
                    endpoint: endpoint(BE2),
                    group: 0,
                    effective_weight: 0.0,
                },
            ],
            slots: vec![
                Slot::Backend(0),
                Slot::Backend(0),
                Slot::Unavailable,
                Slot::Backend(0),
                Slot::Unavailable,
            ],
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        })
        .unwrap();
        Snapshot::new(3, vec![web]).unwrap()
    }

    fn record(client_port: u16, backend: IpAddr, direction: Direction) -> FlowRecord {
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10));
        // Two-arm NAT: the forward half keeps the client as source, the
        // reply half comes from the VIP.
        let (key, rewrite_src, rewrite_dst) = match direction {
            Direction::ToBackend => (
                FlowKey {
                    src: client,
                    dst: VIP,
                    src_port: client_port,
                    dst_port: 30080,
                    protocol: 6,
                },
                (client, client_port),
                (backend, 8080),
            ),
            Direction::ToClient => (
                FlowKey {
                    src: backend,
                    dst: client,
                    src_port: 8080,
                    dst_port: client_port,
                    protocol: 6,
                },
                (VIP, 30080),
                (client, client_port),
            ),
        };
        FlowRecord {
            queue: 0,
            key,
            entry: FlowEntry {
                rewrite: Rewrite {
                    eth_src: [0; 6],
                    eth_dst: [0; 6],
                    ip_src: rewrite_src.0,
                    ip_dst: rewrite_dst.0,
                    src_port: rewrite_src.1,
                    dst_port: rewrite_dst.1,
                },
                egress_port: 1,
                egress_vlan: switchyard_dataplane::neighbor::PackedVlan::NONE,
                egress_mtu: 0,
                direction,
                tunnel: switchyard_dataplane::packet::Tunnel::None,
                // Stale indices: counting must go by VIP and endpoint.
                listener: 7,
                backend: 7,
                generation: 1,
                l2_version: 0,
                created_ns: 0,
                last_seen_ns: 0,
                packets: 1,
                bytes: 60,
                syn_only: false,
                closing: false,
                cached: Default::default(),
                cached_at: 0,
                proxy: None,
            },
        }
    }

    #[test]
    fn active_flows_count_the_client_direction_by_vip_and_backend_endpoint() {
        let snapshot = snapshot();
        let records = [
            record(40000, BE1, Direction::ToBackend),
            record(40000, BE1, Direction::ToClient),
            record(40001, BE1, Direction::ToBackend),
            record(40002, BE2, Direction::ToBackend),
            record(
                40003,
                Ipv4Addr::new(198, 18, 2, 99).into(),
                Direction::ToBackend,
            ),
            // The first connection's entry on a second worker.
            FlowRecord {
                queue: 1,
                ..record(40000, BE1, Direction::ToBackend)
            },
        ];
        let active = ActiveFlows::count(&records);
        let report = listeners_report(&snapshot, &active);
        let l = &report.listeners[0];
        assert_eq!(l.vip, "198.18.100.10:30080");
        assert_eq!((l.listener_port, l.table_size, l.backends), (80, 5, 2));
        assert_eq!(l.active_flows, 4, "a backend the config lost still counts");
        let backends =
            backends_report(&snapshot, &BTreeSet::new(), &BTreeMap::new(), &active, None).unwrap();
        let flows: Vec<u64> = backends.backends.iter().map(|b| b.active_flows).collect();
        assert_eq!(flows, [2, 1]);
    }

    #[test]
    fn closing_connections_are_not_active() {
        let snapshot = snapshot();
        let mut closing = record(40000, BE1, Direction::ToBackend);
        closing.entry.closing = true;
        let active = ActiveFlows::count(&[closing, record(40001, BE1, Direction::ToBackend)]);
        assert_eq!(
            listeners_report(&snapshot, &active).listeners[0].active_flows,
            1
        );
    }

    #[test]
    fn backends_show_slots_weights_and_draining_state() {
        let snapshot = snapshot();
        let active = ActiveFlows::count(&[record(40000, BE1, Direction::ToBackend)]);
        let report =
            backends_report(&snapshot, &BTreeSet::new(), &BTreeMap::new(), &active, None).unwrap();
        let [be1, be2] = report.backends.as_slice() else {
            panic!("two backends: {report:?}")
        };
        assert_eq!((be1.slots, be1.active_flows), (3, 1));
        assert_eq!(be1.state, STATE_READY);
        assert_eq!((be1.group_weight, be1.effective_weight), (2, 2.0));
        assert_eq!(be1.service, "demo/echo");
        assert_eq!(be2.state, STATE_DRAINING, "weight 0");
        assert_eq!(be2.slots, 0);

        let drains = BTreeSet::from([Drain {
            listener: Some("demo/edge/web".into()),
            endpoint: endpoint(BE1),
        }]);
        let report = backends_report(&snapshot, &drains, &BTreeMap::new(), &active, None).unwrap();
        assert_eq!(report.backends[0].state, STATE_DRAINING);
    }

    #[test]
    fn a_terminating_endpoint_keeps_its_slots_unless_the_operator_drains_it() {
        let snapshot = snapshot().with_terminating([endpoint(BE1)]);
        let active = ActiveFlows::default();
        let report =
            backends_report(&snapshot, &BTreeSet::new(), &BTreeMap::new(), &active, None).unwrap();
        assert_eq!(report.backends[0].state, STATE_TERMINATING);
        assert_eq!(report.backends[0].slots, 3);
        let drains = BTreeSet::from([Drain {
            listener: None,
            endpoint: endpoint(BE1),
        }]);
        let report = backends_report(&snapshot, &drains, &BTreeMap::new(), &active, None).unwrap();
        assert_eq!(report.backends[0].state, STATE_DRAINING, "drained wins");
    }

    #[test]
    fn a_flow_query_becomes_the_workers_filter() {
        let snapshot = snapshot();
        let scan = flow_scan(
            &snapshot,
            &FlowQuery {
                listener: Some("demo/edge/web".into()),
                client: Some("198.18.1.0/24".into()),
                backend: Some("198.18.2.21:8080".into()),
                sort: Some(FlowSort::Bytes),
                limit: Some(5),
            },
        )
        .unwrap();
        assert_eq!(scan.select.vips, Some(vec![(6, VIP, 30080)]));
        assert_eq!(
            scan.select.client,
            Some((IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0)), 24))
        );
        assert_eq!(scan.select.backend, Some((BE1, 8080)));
        assert_eq!(
            (scan.sort, scan.limit),
            (Some(super::FlowSort::Bytes), Some(5))
        );
        let v6 = flow_scan(
            &snapshot,
            &FlowQuery {
                client: Some("2001:db8::/32".into()),
                ..FlowQuery::default()
            },
        )
        .unwrap();
        assert_eq!(
            v6.select.client,
            Some(("2001:db8::".parse().unwrap(), 32)),
            "IPv6 clients are filtered like IPv4 ones"
        );
        let unknown = FlowQuery {
            listener: Some("demo/edge/x".into()),
            ..FlowQuery::default()
        };
        assert!(flow_scan(&snapshot, &unknown)
            .unwrap_err()
            .contains("demo/edge/x"));
    }

    #[test]
    fn connection_keys_name_both_halves_once() {
        let keys = connection_keys(&[
            record(40000, BE1, Direction::ToBackend),
            record(40000, BE1, Direction::ToClient),
        ]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], record(40000, BE1, Direction::ToBackend).key);
        assert_eq!(keys[1], record(40000, BE1, Direction::ToClient).key);
    }

    #[test]
    fn backends_of_an_unknown_listener_are_refused() {
        let snapshot = snapshot();
        let active = ActiveFlows::default();
        let err = backends_report(
            &snapshot,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &active,
            Some("demo/edge/x"),
        )
        .unwrap_err();
        assert!(err.contains("demo/edge/x"), "{err}");
        let only = backends_report(
            &snapshot,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &active,
            Some("demo/edge/web"),
        )
        .unwrap();
        assert_eq!(only.backends.len(), 2);
    }
}
