//! The hit path: a packet of a flow the table holds. Its entry is checked
//! against the batch's snapshot (a flow decided under an older one keeps
//! its backend while the new one still has it; a SYN on a closing flow
//! starts a new one), its next hop refreshed when
//! the kernel's table changed, then the frame is rewritten, counted and the
//! flow offered to the XDP flow cache once it has settled. This is the
//! hottest code of the appliance: stages are inlined into one another, the
//! rare ones (`orphaned`, `relearn_next_hop`, `carry_over`) kept out of line.

use std::net::IpAddr;

use switchyard_config::snapshot::{Endpoint, Protocol, ServiceKey, Snapshot};
use switchyard_wire::tcp;

use super::admit::denied_after_reload;
use super::encap::inner_mtu;
use super::modes::{carry_over_dsr, dsr_backend};
use super::path::{
    answering_address, destination_key, exceeds, mtu16, PathState, NS_PER_SEC, PROVISIONAL_L2, TCP,
    TCP_CLOSING, TCP_CONTROL,
};
use super::plan::Shape;
use super::Worker;
use crate::drop_reason::DropReason;
use crate::fast_path::wants_install;
use crate::flow::{Cached, Direction, FlowEntry};
use crate::io::Verdict;
use crate::neighbor::{L2Table, VlanTag};
use crate::packet::{self, FlowKey, L4Checksum, Parsed};

/// What the flow table made of a packet.
pub(super) enum Followed {
    /// A flow valid under the batch's snapshot: rewritten and sent (or
    /// dropped, when its next hop is gone).
    Forwarded(Verdict),
    /// A client's TCP flow whose backend a reload removed.
    BackendRemoved,
    /// No flow, or one whose listener or backend is gone: decide afresh.
    Undecided,
}

impl Worker {
    #[inline(always)]
    pub(super) fn follow(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        parsed: &Parsed,
    ) -> Followed {
        let Some(entry) = self.flows.get_mut(&parsed.key, now) else {
            return Followed::Undecided;
        };
        if reopens(parsed, entry) {
            return Followed::Undecided;
        }
        if entry.generation != snapshot.generation() {
            if !carry_over_any(snapshot, l2, parsed, entry) {
                return orphaned(snapshot, parsed, entry, now);
            }
            if denied_after_reload(&self.admission, snapshot, &parsed.key, entry) {
                let verdict =
                    self.path
                        .refuse(snapshot, frame, parsed, ingress, DropReason::SourceDenied);
                return Followed::Forwarded(verdict);
            }
        }
        // A `dsr` entry's rewrite names the VIP, not the backend its next
        // hop is for: that comes from the snapshot.
        if entry.l2_version != l2.version() && Shape::of(&parsed.key, entry) == Shape::Dsr {
            let Some(backend) = dsr_backend(snapshot, entry) else {
                return Followed::Undecided;
            };
            if let Err(reason) = self.path.relearn_toward(l2, entry, backend) {
                return Followed::Forwarded(self.path.drop_packet(reason));
            }
        }
        Followed::Forwarded(self.path.forward(l2, now, ingress, frame, parsed, entry))
    }
}

impl PathState {
    #[inline(always)]
    fn forward(
        &mut self,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        parsed: &Parsed,
        entry: &mut FlowEntry,
    ) -> Verdict {
        if entry.l2_version != l2.version() {
            if let Err(reason) = self.relearn_next_hop(l2, entry) {
                return self.drop_packet(reason);
            }
        }
        let mtu = inner_mtu(entry, &parsed.key);
        let grows = if entry.proxy.is_some() {
            self.proxy_growth(frame, parsed, entry)
        } else {
            0
        };
        if exceeds(mtu, parsed.ip_total_len + grows) {
            let from = answering_address(&parsed.key, entry);
            let fits = mtu.saturating_sub(grows as u16);
            return self.refuse_too_big(frame, parsed, ingress, fits, from, now);
        }
        // A client's flow keeps its reply expected on every worker; once a
        // second is enough (the entry outlives the flow's idle timeout).
        let settles = entry.syn_only && parsed.tcp_flags & TCP_CONTROL == 0;
        let new_second = now / NS_PER_SEC != entry.last_seen_ns / NS_PER_SEC;
        let bytes = frame.len() as u64;
        touch(entry, now, bytes, parsed.tcp_flags);
        // An opening flow's reply entry is short-lived; the handshake's
        // end gives it the established flow's lifetime at once.
        // A tunnelled flow's answers go straight to the client.
        if entry.direction == Direction::ToBackend
            && !entry.tunnel.is_some()
            && (settles || new_second)
        {
            self.keep_reply(&parsed.key, entry, now);
        }
        let arrived_tag = packet::tag_of(frame, parsed.l3_offset);
        match self.rewrite_frame(frame, parsed, entry) {
            L4Checksum::Incremental => {
                self.offer_to_cache(parsed, ingress, arrived_tag, entry, l2, now)
            }
            // The program would hand every such packet back (it cannot
            // finish a partial checksum), so the flow is not offered.
            L4Checksum::Completed => self.stats.partial_checksums += 1,
        }
        self.count(entry.listener, entry.backend, bytes);
        if entry.proxy.is_some() {
            return self.send_proxied(frame, parsed, entry, now);
        }
        self.send_flow(frame, parsed.l3_offset, parsed.ip_total_len, entry)
    }

    /// The kernel's table changed since the flow last looked: its next hop
    /// may have moved.
    #[inline(never)]
    fn relearn_next_hop(&mut self, l2: &L2Table, entry: &mut FlowEntry) -> Result<(), DropReason> {
        self.relearn_toward(l2, entry, entry.rewrite.ip_dst)
    }

    /// `relearn_next_hop` toward `destination` (for `dsr`, the backend the
    /// VIP-addressed packet goes to).
    #[inline(never)]
    fn relearn_toward(
        &mut self,
        l2: &L2Table,
        entry: &mut FlowEntry,
        destination: IpAddr,
    ) -> Result<(), DropReason> {
        match self.next_hop(l2, destination) {
            Ok((egress, hop)) => {
                entry.egress_port = egress;
                entry.egress_vlan = hop.vlan.into();
                entry.egress_mtu = mtu16(hop.mtu);
                entry.rewrite.eth_src = hop.src_mac;
                entry.rewrite.eth_dst = hop.dst_mac;
                entry.l2_version = l2.version();
                if entry.cached == Cached::Current {
                    entry.cached = Cached::Stale;
                }
                Ok(())
            }
            // Until the kernel's entry reaches the table, a reply entry
            // pre-installed with the client frame's L2 header keeps using
            // it (`expect_reply`).
            Err(_) if entry.l2_version == PROVISIONAL_L2 => Ok(()),
            Err(reason) => Err(reason),
        }
    }

    /// Hands a settled flow's rewrite to the XDP flow cache, so the program
    /// forwards its later packets without waking a worker; again when one
    /// of its packets still reaches the worker well after its entry was
    /// written, as the cache has lost it.
    #[inline(always)]
    fn offer_to_cache(
        &mut self,
        parsed: &Parsed,
        ingress: usize,
        arrived_tag: Option<VlanTag>,
        entry: &mut FlowEntry,
        l2: &L2Table,
        now: u64,
    ) {
        if let (Some(fast), Some(slots)) = (&mut self.fast, &self.fast_slots) {
            if wants_install(entry, now)
                && cacheable(parsed, entry)
                // The program sends a frame with the tag it came with; a
                // flow that changes VLANs stays with the workers.
                && arrived_tag == entry.egress_vlan.get()
                // The program checks no MTU: only a flow whose every packet
                // fits its egress (none arrives larger than the ingress
                // link's MTU) may leave the workers. An encapsulated flow's
                // entry carries the MTU that fits, and the program checks
                // that one.
                && (entry.tunnel.is_some()
                    || fits_egress(&self.port_ifindexes, l2, ingress, entry.egress_mtu))
                && fast.queue(&parsed.key, entry, slots, l2)
            {
                entry.cached = Cached::Queued;
            }
        }
    }
}

/// Whether every packet that can arrive on port `ingress` fits an egress
/// link of `mtu` (0: unknown, which limits nothing).
#[inline(always)]
fn fits_egress(port_ifindexes: &[u32], l2: &L2Table, ingress: usize, mtu: u16) -> bool {
    let arriving = port_ifindexes
        .get(ingress)
        .map_or(0, |&ifindex| l2.link_mtu(ifindex));
    mtu == 0 || arriving <= u32::from(mtu)
}

#[inline(always)]
fn touch(entry: &mut FlowEntry, now: u64, bytes: u64, tcp_flags: u8) {
    entry.last_seen_ns = now;
    entry.packets += 1;
    entry.bytes += bytes;
    entry.closing |= tcp_flags & TCP_CLOSING != 0;
    // The first segment without SYN, FIN or RST completes the opening;
    // UDP flags read 0, so this clears it at once, as nothing reads it.
    entry.syn_only &= tcp_flags & TCP_CONTROL != 0;
}

/// A SYN on a flow that has seen a FIN or RST: a new connection reusing
/// the 5-tuple (a client's port, or the backend's SYN-ACK answering it). It
/// is decided afresh like any new flow, in either direction, so its state,
/// timeout class and counters start over and it can be cached again; with
/// the same table it hashes to the same backend.
#[inline(always)]
fn reopens(parsed: &Parsed, entry: &FlowEntry) -> bool {
    entry.closing && parsed.key.protocol == TCP && parsed.tcp_flags & tcp::FLAG_SYN != 0
}

/// A flow whose listener or backend the batch's snapshot no longer has.
/// The backend of a client's TCP connection is gone: another backend would
/// only answer with a reset, after the client retransmits into the void,
/// so the worker answers for it now. A SYN is a new connection reusing the
/// 5-tuple and is decided afresh, like every other orphan.
#[inline(never)]
fn orphaned(snapshot: &Snapshot, parsed: &Parsed, entry: &mut FlowEntry, now: u64) -> Followed {
    let key = &parsed.key;
    let removed = entry.direction == Direction::ToBackend
        && key.protocol == TCP
        && parsed.tcp_flags & tcp::FLAG_SYN == 0
        && snapshot
            .listener_for_vip(&destination_key(key, Protocol::Tcp))
            .is_some();
    if !removed {
        return Followed::Undecided;
    }
    entry.closing = true;
    entry.last_seen_ns = now;
    Followed::BackendRemoved
}

/// `carry_over`, or for a `dsr` flow (whose rewrite does not name its
/// backend) `modes::carry_over_dsr`.
#[inline(never)]
fn carry_over_any(
    snapshot: &Snapshot,
    l2: &L2Table,
    parsed: &Parsed,
    entry: &mut FlowEntry,
) -> bool {
    if Shape::of(&parsed.key, entry) == Shape::Dsr && entry.direction == Direction::ToBackend {
        return carry_over_dsr(snapshot, l2, &parsed.key, entry);
    }
    carry_over(snapshot, &parsed.key, entry)
}

/// A flow decided under an older snapshot keeps its translation when the
/// new snapshot still serves its VIP with its backend: a reload that leaves
/// a listener alone, or only adds backends to it, or changes weights, moves
/// no established flow (Maglev would move some, the flow table must not).
/// Only the indices into the new snapshot are refreshed, so a flow keeps
/// its forwarding mode too when a reload changes its listener's: a
/// connection cannot switch from NAT to encapsulation midway. A flow whose
/// listener or backend is gone is decided afresh, like a new one.
#[inline(never)]
pub fn carry_over(snapshot: &Snapshot, key: &FlowKey, entry: &mut FlowEntry) -> bool {
    let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
        return false;
    };
    let endpoint = |address: IpAddr, port: u16| Endpoint { address, port };
    let rewrite = &entry.rewrite;
    let (vip, backend) = match entry.direction {
        Direction::ToBackend => {
            let (address, port) = entry.backend_of(key);
            (endpoint(key.dst, key.dst_port), endpoint(address, port))
        }
        Direction::ToClient => (
            endpoint(rewrite.ip_src, rewrite.src_port),
            endpoint(key.src, key.src_port),
        ),
    };
    let Some(listener) = snapshot.listener_for_vip(&ServiceKey {
        endpoint: vip,
        protocol,
    }) else {
        return false;
    };
    let Some(position) = listener
        .backends()
        .iter()
        .position(|b| b.endpoint == backend)
    else {
        return false;
    };
    entry.listener = listener.id().as_u32();
    entry.backend = position as u32;
    entry.generation = snapshot.generation();
    // The cache entry names the old generation: the next packet installs
    // the carried-over decision.
    if entry.cached == Cached::Current {
        entry.cached = Cached::Stale;
    }
    true
}

/// Whether the fast path may take over a flow after this packet: it has
/// settled (its second packet in this direction), it is not closing, its
/// MACs come from the kernel's table rather than from a frame, and this is
/// no TCP SYN, FIN or RST (the program sends those to the workers anyway).
///
/// Only settled flows qualify (`flow::is_embryonic` never holds of one
/// that passes: two packets, no SYN on this one), so a flood of new flows
/// never reaches the cache, let alone evicts an established flow from it.
#[inline]
fn cacheable(parsed: &Parsed, entry: &FlowEntry) -> bool {
    entry.packets >= 2
        && entry.proxy.is_none()
        && !entry.closing
        && !entry.syn_only
        && entry.l2_version != PROVISIONAL_L2
        // The program replays only packets it parses to the fixed header:
        // a flow sending IPv6 extension headers stays with the workers.
        && !parsed.has_ext_headers
        && (parsed.key.protocol != TCP || parsed.tcp_flags & (tcp::FLAG_SYN | TCP_CLOSING) == 0)
}
