//! Rebuilding the workers' flow tables from the fast path's cache, for a
//! daemon that takes over a running steering program (its pinned maps):
//! the cache holds every settled flow's decision, so a new worker that
//! learns them from it keeps each flow on its backend, even when the
//! configuration changed meanwhile (as long as the backend is still
//! there), instead of deciding it afresh.
//!
//! A cache entry holds the rewrite, not the decision's inputs: the
//! listener and backend are found again in the snapshot
//! ([`crate::worker::carry_over`]); an entry whose listener or backend is
//! gone is still seeded, with no generation, so its next packet is decided
//! afresh as any flow of a removed backend is. Full-NAT flows are not
//! seeded: their replies need the source-port binding (`snat`), which the
//! cache does not hold, so they are decided afresh (new port) instead of
//! half-restored. This module reads the cache; it never writes it.

use switchyard_config::snapshot::Snapshot;
use switchyard_xdp::{EncapSpec, FastPathMaps, XdpError, TUNNEL_GUE, TUNNEL_IPIP};

use crate::fast_path::Egress;
use crate::flow::{Cached, Direction, FlowEntry};
use crate::neighbor::PackedVlan;
use crate::packet::{FlowKey, Rewrite, Tunnel};

/// Flows read back from the cache.
#[derive(Debug, Default)]
pub struct Seeds {
    /// Each cached 5-tuple with the flow entry that replays its rewrite.
    pub flows: Vec<(FlowKey, FlowEntry)>,
    /// Cached full-NAT flows, left to be decided afresh.
    pub full_nat: usize,
    /// Entries out of an interface this daemon does not serve.
    pub unknown_egress: usize,
}

/// What one cache entry says, in the dataplane's terms.
struct CachedRewrite {
    key: FlowKey,
    rewrite: Rewrite,
    egress_slot: u16,
    encap: Option<EncapSpec>,
}

/// A cached flow of either family in the workers' terms: the two
/// families' keys and actions are different types with the same accessors.
macro_rules! cached_rewrite {
    ($key:expr, $action:expr) => {{
        let (key, action) = ($key, $action);
        let spec = action.spec();
        CachedRewrite {
            key: FlowKey {
                src: key.src().into(),
                dst: key.dst().into(),
                src_port: key.src_port(),
                dst_port: key.dst_port(),
                protocol: key.protocol(),
            },
            rewrite: Rewrite {
                eth_src: spec.eth_src,
                eth_dst: spec.eth_dst,
                ip_src: spec.ip_src.into(),
                ip_dst: spec.ip_dst.into(),
                src_port: spec.src_port,
                dst_port: spec.dst_port,
            },
            egress_slot: spec.egress_slot,
            encap: action.encap(),
        }
    }};
}

/// Reads both caches and builds the flow entries that replay them under
/// `snapshot`, leaving by the worker port of `egress` whose slot the entry
/// names. `now_ns` is the workers' clock.
pub fn read(
    maps: &FastPathMaps,
    snapshot: &Snapshot,
    egress: &[Egress],
    now_ns: u64,
) -> Result<Seeds, XdpError> {
    let mut seeds = Seeds::default();
    let mut cached: Vec<CachedRewrite> = Vec::new();
    cached.extend(
        maps.entries()?
            .into_iter()
            .map(|(k, a)| cached_rewrite!(k, a)),
    );
    cached.extend(
        maps.entries6()?
            .into_iter()
            .map(|(k, a)| cached_rewrite!(k, a)),
    );
    for flow in cached {
        let Some(egress_port) = egress.iter().position(|e| e.slot == flow.egress_slot) else {
            seeds.unknown_egress += 1;
            continue;
        };
        let tunnel = match flow.encap.map(|encap| encap.tunnel) {
            Some(TUNNEL_IPIP) => Tunnel::Ipip,
            Some(TUNNEL_GUE) => Tunnel::Gue,
            _ => Tunnel::None,
        };
        let Some(direction) = direction(snapshot, &flow.key, &flow.rewrite, tunnel) else {
            seeds.full_nat += 1;
            continue;
        };
        let mut entry = FlowEntry {
            rewrite: flow.rewrite,
            egress_port,
            egress_vlan: PackedVlan::NONE,
            // Unknown: the entry keeps the largest inner packet, not the
            // link's MTU, and the worker measures the link itself.
            egress_mtu: 0,
            direction,
            tunnel,
            listener: 0,
            backend: 0,
            // No generation: the first packet finds the flow's listener and
            // backend in the running snapshot, or decides it afresh.
            generation: 0,
            // No L2 version: the first packet takes the MACs from the
            // running neighbour table.
            l2_version: 0,
            created_ns: now_ns,
            last_seen_ns: now_ns,
            // Settled: it was cached, so it had two packets or more.
            packets: 2,
            bytes: 0,
            syn_only: false,
            closing: false,
            // The cache holds an entry of the previous daemon's epochs:
            // the next packet that reaches a worker installs this one's.
            cached: Cached::Stale,
            cached_at: 0,
            proxy: None,
        };
        // Labels the entry with its listener and backend where the
        // snapshot still has them (a `dsr` flow is labelled by its first
        // packet, from the neighbour table).
        crate::worker::carry_over(snapshot, &flow.key, &mut entry);
        seeds.flows.push((flow.key, entry));
    }
    Ok(seeds)
}

/// Which way a cached 5-tuple goes, or `None` for a full-NAT flow (its
/// source rewritten toward the backend, or its destination on the way
/// back).
fn direction(
    snapshot: &Snapshot,
    key: &FlowKey,
    rewrite: &Rewrite,
    tunnel: Tunnel,
) -> Option<Direction> {
    // Some listener's address, on any port: a flow to a port a reload
    // removed is still one toward a backend.
    let to_vip = snapshot.serves_address(key.dst);
    if to_vip {
        let source_kept = tunnel != Tunnel::None
            || (rewrite.ip_src == key.src && rewrite.src_port == key.src_port);
        return source_kept.then_some(Direction::ToBackend);
    }
    let destination_kept = rewrite.ip_dst == key.dst && rewrite.dst_port == key.dst_port;
    destination_kept.then_some(Direction::ToClient)
}
