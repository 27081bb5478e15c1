//! A worker's counters: per worker, per listener and per backend, indexed
//! by the snapshot they were counted under, and carried to the same
//! listener and backend when a reload publishes a new one. Counting is a
//! few additions per packet; re-indexing allocates, but only on a config
//! change.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_config::snapshot::{Endpoint, Snapshot};

use super::Worker;
use crate::drop_reason::DropReason;
use crate::fast_path::CacheCounters;
use crate::io::BatchOutcome;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Listener counters only: new flows refused because they hashed onto
    /// the share of a backendRef without endpoints.
    pub backend_unavailable: u64,
    /// Listener counters only: TCP segments answered with a reset because
    /// a config change removed their flow's backend.
    pub backend_removed: u64,
    /// Listener counters only: packets of clients outside the listener's
    /// source ranges that reached this worker (the steering program drops
    /// the rest, counted in its own per-listener map).
    pub source_denied: u64,
    /// Listener counters only: new flows refused over this worker's share
    /// of `newFlowsPerSecond`.
    pub rate_limited: u64,
    /// Listener counters only: new flows refused at this worker's share of
    /// `maxFlows`.
    pub max_flows_reached: u64,
}

impl Counters {
    fn count(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }
}

/// A copy of one worker's counters, taken between batches.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    pub queue: u32,
    /// Generation of the snapshot the listener/backend counters index.
    pub generation: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    /// Frames forwarded whose TCP/UDP checksum arrived partial (a sender
    /// on this host with tx checksum offload, through a veth) and was
    /// computed in full (`packet::L4Checksum::Completed`).
    pub partial_checksums: u64,
    /// Echo requests to a VIP address answered by the worker itself.
    pub echo_replies: u64,
    /// ICMP errors about a client's flow, arriving for a VIP, sent on to
    /// the flow's backend.
    pub icmp_to_backend: u64,
    /// ICMP errors a backend sent about a client's packet, sent on to the
    /// client as from the VIP.
    pub icmp_to_client: u64,
    pub listeners: Vec<Counters>,
    /// Per listener, per backend index of that listener.
    pub backends: Vec<Vec<Counters>>,
    /// What the worker wrote into the XDP flow cache.
    pub cache: CacheCounters,
    /// First fragments forwarded, their datagram's decision remembered.
    pub first_fragments: u64,
    /// Later fragments forwarded on their first fragment's decision.
    pub later_fragments: u64,
    /// Datagrams whose decision a full fragment-table bucket gave up for a
    /// newer one before it expired; their later fragments are dropped.
    pub fragment_evictions: u64,
    /// Frames that came untagged and left by a VLAN link, a tag pushed.
    pub vlan_pushed: u64,
    /// Frames that came tagged and left by an untagged link, the tag popped.
    pub vlan_popped: u64,
    /// Frames whose tag was rewritten to another VLAN's.
    pub vlan_retagged: u64,
    /// Packets too big for their egress link answered with ICMP
    /// fragmentation-needed or packet-too-big (each also counted as a
    /// `frame_too_big` drop).
    pub too_big_answered: u64,
    /// Packets sent encapsulated toward their backend (`ipip`, `gue`).
    pub encapsulated: u64,
    /// PROXY protocol headers spliced into client segments toward their
    /// backend (`fullnat` with `proxyProtocol`): one per connection, more
    /// when a segment carrying one is sent again.
    pub proxy_headers: u64,
    /// New `fullnat` flows refused because this worker's slice of the SNAT
    /// port range had no free port, per SNAT address (the last entry also
    /// counts any address beyond `MAX_COUNTED_SNAT_ADDRESSES`).
    pub snat_exhausted: Vec<(std::net::IpAddr, u64)>,
}

impl WorkerStats {
    /// A packet on `listener`'s `backend`; indices out of range (a flow
    /// of a snapshot these counters no longer index) count nowhere.
    #[inline(always)]
    pub(super) fn count(&mut self, listener: usize, backend: usize, bytes: u64) {
        if let Some(c) = self.listeners.get_mut(listener) {
            c.count(bytes);
        }
        if let Some(c) = self
            .backends
            .get_mut(listener)
            .and_then(|b| b.get_mut(backend))
        {
            c.count(bytes);
        }
    }

    /// A full-NAT flow refused for want of a port of `address`; counted
    /// without allocating past `MAX_COUNTED_SNAT_ADDRESSES` addresses.
    pub(super) fn count_snat_exhausted(&mut self, address: std::net::IpAddr) {
        if let Some((_, n)) = self.snat_exhausted.iter_mut().find(|(a, _)| *a == address) {
            *n += 1;
        } else if self.snat_exhausted.len() < super::MAX_COUNTED_SNAT_ADDRESSES {
            self.snat_exhausted.push((address, 1));
        } else if let Some((_, n)) = self.snat_exhausted.last_mut() {
            *n += 1;
        }
    }

    /// A new client flow on `listener`'s `backend`.
    pub(super) fn count_flow(&mut self, listener: usize, backend: usize) {
        if let Some(c) = self.listeners.get_mut(listener) {
            c.flows += 1;
        }
        if let Some(c) = self
            .backends
            .get_mut(listener)
            .and_then(|b| b.get_mut(backend))
        {
            c.flows += 1;
        }
    }

    pub(super) fn count_batch(&mut self, outcome: &BatchOutcome) {
        self.rx_packets += outcome.received as u64;
        self.rx_bytes += outcome.received_bytes as u64;
        self.tx_packets += outcome.transmitted as u64;
        self.tx_bytes += outcome.transmitted_bytes as u64;
        self.drops[DropReason::TxRingFull as usize] += outcome.tx_ring_full as u64;
        self.drops[DropReason::FrameTooBig as usize] += outcome.no_room as u64;
    }
}

impl Worker {
    /// Listener/backend counters index the snapshot. On a new generation
    /// each counter moves to the same listener (name, VIP, protocol) and
    /// backend (endpoint) in it, so totals survive reloads and drains;
    /// counters of listeners or backends that are gone are dropped.
    /// Allocates only on config change.
    pub(super) fn fit_counters(&mut self, snapshot: &Arc<Snapshot>) {
        if let Some(counted) = &self.counted {
            if Arc::ptr_eq(counted, snapshot) || counted.generation() == snapshot.generation() {
                return;
            }
        }
        let stats = &mut self.path.stats;
        let (listeners, backends) = match self.counted.take() {
            Some(previous) => {
                carry_counters(&previous, &stats.listeners, &stats.backends, snapshot)
            }
            None => (
                vec![Counters::default(); snapshot.listeners().len()],
                snapshot
                    .listeners()
                    .iter()
                    .map(|l| vec![Counters::default(); l.backends().len()])
                    .collect(),
            ),
        };
        stats.generation = snapshot.generation();
        stats.listeners = listeners;
        stats.backends = backends;
        self.counted = Some(snapshot.clone());
        self.fit_admission(snapshot);
    }
}

/// `previous`'s per-listener and per-backend counters re-indexed for
/// `next`: a listener is the same if its name, VIP and protocol are, a
/// backend if its endpoint is. Runs on the worker thread at a config
/// change: linear in backends, through an index by endpoint of each
/// carried listener's new backends.
fn carry_counters(
    previous: &Snapshot,
    listeners: &[Counters],
    backends: &[Vec<Counters>],
    next: &Snapshot,
) -> (Vec<Counters>, Vec<Vec<Counters>>) {
    let mut new_listeners = vec![Counters::default(); next.listeners().len()];
    let mut new_backends: Vec<Vec<Counters>> = next
        .listeners()
        .iter()
        .map(|l| vec![Counters::default(); l.backends().len()])
        .collect();
    for (old_index, old) in previous.listeners().iter().enumerate() {
        let Some(new) = next.listener_for_vip(&old.key()) else {
            continue;
        };
        let new_index = new.id().index();
        if new.name() != old.name() {
            continue;
        }
        if let Some(&c) = listeners.get(old_index) {
            new_listeners[new_index] = c;
        }
        let Some(old_backends) = backends.get(old_index) else {
            continue;
        };
        let by_endpoint: HashMap<Endpoint, usize> = new
            .backends()
            .iter()
            .enumerate()
            .map(|(position, b)| (b.endpoint, position))
            .collect();
        for (old_backend, counters) in old.backends().iter().zip(old_backends) {
            if let Some(&position) = by_endpoint.get(&old_backend.endpoint) {
                new_backends[new_index][position] = *counters;
            }
        }
    }
    (new_listeners, new_backends)
}
