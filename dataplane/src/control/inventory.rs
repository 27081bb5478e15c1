//! `yardctl listeners`, `backends`, filtered `flows` and `drain`: what the
//! snapshot holds, joined with the flows the workers track. Everything here
//! works on copies (the snapshot `Arc`, the workers' flow records), off the
//! packet path.

use std::collections::BTreeSet;
use std::net::IpAddr;

use switchyard_config::snapshot::{Endpoint, Protocol, ServiceKey, Slot, Snapshot};
use yardctl::proto::{
    BackendInfo, BackendsReport, DrainReport, FlowFilter, FlowQuery, FlowsReport, ListenerInfo,
    ListenersReport, STATE_DRAINING, STATE_READY,
};

use super::{ask_workers, flows_report, ControlState};
use crate::drain::{self, Drain};
use crate::flow::Direction;
use crate::worker::{FlowRecord, WorkerRequest};

/// Client-to-backend flows per listener and per backend of each listener,
/// matched by VIP and backend endpoint so that flows decided under an
/// older generation count where they now belong.
pub struct ActiveFlows {
    pub listeners: Vec<u64>,
    pub backends: Vec<Vec<u64>>,
}

pub fn active_flows<'a>(
    snapshot: &Snapshot,
    records: impl IntoIterator<Item = &'a FlowRecord>,
) -> ActiveFlows {
    let mut active = ActiveFlows {
        listeners: vec![0; snapshot.listeners.len()],
        backends: snapshot
            .listeners
            .iter()
            .map(|l| vec![0; l.backends.len()])
            .collect(),
    };
    for record in records {
        if record.entry.direction != Direction::ToBackend {
            continue;
        }
        let Some(protocol) = Protocol::from_ip_proto(record.key.protocol) else {
            continue;
        };
        let vip = ServiceKey {
            endpoint: Endpoint {
                address: IpAddr::V4(record.key.dst),
                port: record.key.dst_port,
            },
            protocol,
        };
        let Some(index) = snapshot.listener_for_vip(&vip) else {
            continue;
        };
        let index = index as usize;
        active.listeners[index] += 1;
        let backend = Endpoint {
            address: IpAddr::V4(record.entry.rewrite.ip_dst),
            port: record.entry.rewrite.dst_port,
        };
        if let Some(position) = snapshot.listeners[index]
            .backends
            .iter()
            .position(|b| b.endpoint == backend)
        {
            active.backends[index][position] += 1;
        }
    }
    active
}

pub fn listeners_report(snapshot: &Snapshot, active: &ActiveFlows) -> ListenersReport {
    ListenersReport {
        generation: snapshot.generation,
        listeners: snapshot
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| ListenerInfo {
                listener: l.name.to_string(),
                protocol: l.protocol.to_string(),
                vip: l.vip().to_string(),
                listener_port: l.listener_port,
                route: l.route.clone(),
                backends: l.backends.len(),
                table_size: l.slots.len(),
                affinity_timeout_secs: l.affinity.map(|a| a.timeout_secs),
                active_flows: active.listeners[index],
            })
            .collect(),
    }
}

/// Every backend of every listener, or of the one named.
pub fn backends_report(
    snapshot: &Snapshot,
    drains: &BTreeSet<Drain>,
    active: &ActiveFlows,
    listener: Option<&str>,
) -> Result<BackendsReport, String> {
    if let Some(name) = listener {
        if snapshot.find_listener(name).is_none() {
            return Err(format!(
                "no listener is named {name:?} (see `yardctl listeners`)"
            ));
        }
    }
    let mut backends = Vec::new();
    for (index, l) in snapshot.listeners.iter().enumerate() {
        let name = l.name.to_string();
        if listener.is_some_and(|wanted| wanted != name) {
            continue;
        }
        // One pass over the table for all of the listener's backends.
        let mut slots = vec![0usize; l.backends.len()];
        for slot in &l.slots {
            if let Slot::Backend(b) = slot {
                if let Some(count) = slots.get_mut(*b as usize) {
                    *count += 1;
                }
            }
        }
        for (b, backend) in l.backends.iter().enumerate() {
            let group = l.groups.get(backend.group as usize);
            let draining =
                backend.effective_weight <= 0.0 || drain::is_drained(drains, l, &backend.endpoint);
            backends.push(BackendInfo {
                listener: name.clone(),
                vip: l.vip().to_string(),
                backend: backend.endpoint.to_string(),
                service: group.map(|g| g.service.clone()).unwrap_or_default(),
                group_weight: group.map_or(0, |g| g.weight),
                effective_weight: backend.effective_weight,
                state: if draining {
                    STATE_DRAINING
                } else {
                    STATE_READY
                }
                .to_owned(),
                slots: slots[b],
                active_flows: active.backends[index][b],
            });
        }
    }
    Ok(BackendsReport {
        generation: snapshot.generation,
        backends,
    })
}

fn flow_records(state: &ControlState) -> Result<Vec<FlowRecord>, String> {
    ask_workers(state, WorkerRequest::Flows).map(|f| f.into_iter().flatten().collect())
}

pub fn listeners(state: &ControlState) -> Result<ListenersReport, String> {
    let records = flow_records(state)?;
    let snapshot = state.config.load_full();
    Ok(listeners_report(
        &snapshot,
        &active_flows(&snapshot, &records),
    ))
}

pub fn backends(state: &ControlState, listener: Option<&str>) -> Result<BackendsReport, String> {
    let records = flow_records(state)?;
    let snapshot = state.config.load_full();
    backends_report(
        &snapshot,
        &state.drains.drains(),
        &active_flows(&snapshot, &records),
        listener,
    )
}

pub fn query_flows(state: &ControlState, query: &FlowQuery) -> Result<FlowsReport, String> {
    let filter = FlowFilter::new(query).map_err(|e| e.to_string())?;
    if let Some(name) = &query.listener {
        if state.config.load().find_listener(name).is_none() {
            return Err(format!(
                "no listener is named {name:?} (see `yardctl listeners`)"
            ));
        }
    }
    let records = flow_records(state)?;
    let report = flows_report(
        &state.config.load(),
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
    log::info!(
        "backend {endpoint} {} on {}: generation {}",
        if drained { "drained" } else { "undrained" },
        outcome.listeners.join(", "),
        outcome.generation
    );
    Ok(DrainReport {
        backend: endpoint.to_string(),
        listeners: outcome.listeners,
        drained,
        generation: outcome.generation,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use switchyard_config::snapshot::{Backend, BackendGroup, Listener, ListenerName};

    use super::*;
    use crate::flow::FlowEntry;
    use crate::packet::{FlowKey, Rewrite};

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
    const BE1: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
    const BE2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 22);

    fn endpoint(address: Ipv4Addr) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(address),
            port: 8080,
        }
    }

    /// demo/edge/web on VIP:80, backends be1 (3 slots) and be2 (1 slot,
    /// weight 0).
    fn snapshot() -> Snapshot {
        Snapshot::new(
            3,
            vec![Listener {
                name: ListenerName {
                    namespace: "demo".into(),
                    gateway: "edge".into(),
                    listener: "web".into(),
                },
                route: "demo/web".into(),
                address: IpAddr::V4(VIP),
                port: 30080,
                listener_port: 80,
                protocol: Protocol::Tcp,
                groups: vec![BackendGroup {
                    terminating: false,
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
                ],
                affinity: None,
            }],
        )
    }

    fn record(client_port: u16, backend: Ipv4Addr, direction: Direction) -> FlowRecord {
        let client = Ipv4Addr::new(198, 18, 1, 10);
        let (key, rewrite_dst) = match direction {
            Direction::ToBackend => (
                FlowKey {
                    src: client,
                    dst: VIP,
                    src_port: client_port,
                    dst_port: 30080,
                    protocol: 6,
                },
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
                    ip_src: key.src,
                    ip_dst: rewrite_dst.0,
                    src_port: key.src_port,
                    dst_port: rewrite_dst.1,
                },
                egress_port: 1,
                direction,
                // Stale indices: counting must go by VIP and endpoint.
                listener: 7,
                backend: 7,
                generation: 1,
                l2_version: 0,
                created_ns: 0,
                last_seen_ns: 0,
                packets: 1,
                bytes: 60,
                closing: false,
                cached: Default::default(),
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
            record(40003, Ipv4Addr::new(198, 18, 2, 99), Direction::ToBackend),
        ];
        let active = active_flows(&snapshot, &records);
        assert_eq!(active.listeners, [4]);
        assert_eq!(active.backends, [vec![2, 1]]);
        let report = listeners_report(&snapshot, &active);
        let l = &report.listeners[0];
        assert_eq!(l.vip, "198.18.100.10:30080");
        assert_eq!((l.listener_port, l.table_size, l.backends), (80, 4, 2));
        assert_eq!(l.active_flows, 4);
    }

    #[test]
    fn backends_show_slots_weights_and_draining_state() {
        let snapshot = snapshot();
        let active = active_flows(&snapshot, &[record(40000, BE1, Direction::ToBackend)]);
        let report = backends_report(&snapshot, &BTreeSet::new(), &active, None).unwrap();
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
        let report = backends_report(&snapshot, &drains, &active, None).unwrap();
        assert_eq!(report.backends[0].state, STATE_DRAINING);
    }

    #[test]
    fn backends_of_an_unknown_listener_are_refused() {
        let snapshot = snapshot();
        let active = active_flows(&snapshot, &[]);
        let err =
            backends_report(&snapshot, &BTreeSet::new(), &active, Some("demo/edge/x")).unwrap_err();
        assert!(err.contains("demo/edge/x"), "{err}");
        let only =
            backends_report(&snapshot, &BTreeSet::new(), &active, Some("demo/edge/web")).unwrap();
        assert_eq!(only.backends.len(), 2);
    }
}
