//! What the packet stages touch beside the flow table: the worker's ports,
//! the neighbour table's request queue, the shared affinity table, the
//! counters and the XDP cache writer. Kept apart from the flow table so a
//! stage can hold a flow entry and this state at once; every method here
//! runs per packet or per batch and must never allocate or block.

use std::net::IpAddr;
use std::sync::Arc;

use switchyard_config::snapshot::{Endpoint, Protocol, ServiceKey, Snapshot};
use switchyard_wire::tcp;

use super::counters::WorkerStats;
use super::plan::{forward_key, Shape, SnatState};
use crate::affinity::AffinityTable;
use crate::drop_reason::DropReason;
use crate::fast_path::{CacheWriter, StatsSlots};
use crate::flow::FlowTimeouts;
use crate::flow::{CacheActivity, Direction, FlowEntry, FlowTable};
use crate::io::Verdict;
use crate::neighbor::{L2Table, Neighbors, NextHop, Unresolved, VlanTag};
use crate::packet::{self, FlowKey, Parsed, TagEdit};
use crate::replies::ReplyTable;

/// IANA protocol number of TCP, as `FlowKey::protocol` holds it.
pub(super) const TCP: u8 = 6;
/// TCP flags that end a flow, as `Parsed::tcp_flags` holds them.
pub(super) const TCP_CLOSING: u8 = tcp::FLAG_FIN | tcp::FLAG_RST;
/// TCP flags of a segment that opens or ends a connection: a flow that
/// has seen only such segments has not completed its handshake.
pub(super) const TCP_CONTROL: u8 = tcp::FLAG_SYN | TCP_CLOSING;

/// `l2_version` of a flow whose MACs came from a packet rather than from
/// the kernel's table; no published table has this version.
pub(super) const PROVISIONAL_L2: u64 = u64::MAX;

/// The tables every worker of a daemon shares.
pub(super) struct SharedTables {
    pub(super) affinity: Arc<AffinityTable>,
    pub(super) replies: Arc<ReplyTable>,
}

/// Where a forwarded frame leaves: port, the tag its link wants, the
/// link's MTU (0: unknown).
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress {
    pub(super) port: usize,
    pub(super) vlan: Option<VlanTag>,
    pub(super) mtu: u16,
}

impl Egress {
    #[inline(always)]
    pub(super) fn of(entry: &FlowEntry) -> Self {
        Self {
            port: entry.egress_port,
            vlan: entry.egress_vlan.get(),
            mtu: entry.egress_mtu,
        }
    }
}

/// Whether an IP packet of `ip_len` bytes is too big for a link of `mtu`
/// (0: unknown, which limits nothing).
#[inline(always)]
pub(super) fn exceeds(mtu: u16, ip_len: usize) -> bool {
    mtu != 0 && ip_len > usize::from(mtu)
}

/// The address the load balancer answers for in flow `key`: the VIP, the
/// client's destination or the reply's new source.
pub(super) fn answering_address(key: &FlowKey, entry: &FlowEntry) -> IpAddr {
    match entry.direction {
        Direction::ToBackend => key.dst,
        Direction::ToClient => entry.rewrite.ip_src,
    }
}

/// ICMP errors about packets too big a worker sends per second at most,
/// as a router rate-limits them (RFC 1812 §4.3.2.8, RFC 4443 §2.4 (f)).
pub(super) const TOO_BIG_PER_SECOND: u32 = 100;

/// A link MTU as a flow keeps it: jumbo MTUs beyond 65535 limit nothing.
#[inline(always)]
pub(super) fn mtu16(mtu: u32) -> u16 {
    u16::try_from(mtu).unwrap_or(0)
}

/// Seconds a reply entry lives past its flow's last packet, by protocol:
/// the flow's own idle timeout, so the entry lasts as long as the flow can,
/// plus the slack of the once-a-second expiry pass that refreshes it for
/// flows the XDP cache carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplyTtl {
    tcp: u32,
    /// A TCP flow that has not completed its handshake: short, so a SYN
    /// flood's entries expire first and never displace an established
    /// flow's (`ReplyTable::put` gives up only entries that expire no later
    /// than the new one).
    tcp_opening: u32,
    udp: u32,
}

impl ReplyTtl {
    fn of(timeouts: FlowTimeouts) -> Self {
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Self {
            tcp: secs(timeouts.tcp.max(timeouts.tcp_syn)).saturating_add(EXPIRY_SLACK_SECS),
            tcp_opening: secs(timeouts.tcp_syn).saturating_add(EXPIRY_SLACK_SECS),
            udp: secs(timeouts.udp).saturating_add(EXPIRY_SLACK_SECS),
        }
    }

    /// For the reply of client flow `key`, decided as `forward`.
    fn of_flow(self, key: &FlowKey, forward: &FlowEntry) -> u32 {
        match (key.protocol == TCP, forward.syn_only) {
            (true, true) => self.tcp_opening,
            (true, false) => self.tcp,
            (false, _) => self.udp,
        }
    }

    pub(super) fn of_protocol(self, protocol: u8) -> u32 {
        if protocol == TCP {
            self.tcp
        } else {
            self.udp
        }
    }
}

const EXPIRY_SLACK_SECS: u32 = 5;

pub(super) struct PathState {
    /// Port index (as `PacketIo` numbers them) to interface index.
    pub(super) port_ifindexes: Vec<u32>,
    pub(super) neighbors: Neighbors,
    /// Shared with the other workers (and the control socket).
    pub(super) affinity: Arc<AffinityTable>,
    /// Shared with the other workers: the replies each one's flows expect.
    pub(super) replies: Arc<ReplyTable>,
    /// How long a reply entry outlives its flow's last sign of life.
    pub(super) reply_ttl: ReplyTtl,
    /// Full-NAT bindings and this worker's ports, when the node has an
    /// SNAT port range.
    pub(super) snat: Option<SnatState>,
    pub(super) hash_seed: u32,
    pub(super) stats: WorkerStats,
    /// The XDP flow cache, when the fast path is on.
    pub(super) fast: Option<CacheWriter>,
    /// Its stats slots for the batch's snapshot.
    pub(super) fast_slots: Option<Arc<StatsSlots>>,
    /// The second (of the workers' clock) `too_big_left` counts down in.
    too_big_second: u64,
    /// ICMP "too big" errors this worker may still send this second.
    too_big_left: u32,
}

impl PathState {
    pub(super) fn new(
        queue: u32,
        port_ifindexes: Vec<u32>,
        neighbors: Neighbors,
        shared: SharedTables,
        hash_seed: u32,
        timeouts: FlowTimeouts,
    ) -> Self {
        Self {
            port_ifindexes,
            neighbors,
            affinity: shared.affinity,
            replies: shared.replies,
            reply_ttl: ReplyTtl::of(timeouts),
            snat: None,
            hash_seed,
            stats: WorkerStats {
                queue,
                ..WorkerStats::default()
            },
            fast: None,
            fast_slots: None,
            too_big_second: 0,
            too_big_left: TOO_BIG_PER_SECOND,
        }
    }

    /// Picks up the cache's stats slots for the batch's snapshot, once per
    /// batch.
    pub(super) fn follow_cache_slots(&mut self) {
        let Some(fast) = &self.fast else {
            return;
        };
        let slots = fast.shared().slots();
        if self
            .fast_slots
            .as_ref()
            .is_none_or(|s| !Arc::ptr_eq(s, &slots))
        {
            self.fast_slots = Some(Arc::clone(&slots));
        }
    }

    pub(super) fn drop_packet(&mut self, reason: DropReason) -> Verdict {
        self.stats.drops[reason as usize] += 1;
        Verdict::Drop
    }

    /// Counts a drop that belongs to the listener serving the packet's
    /// destination (`backend_unavailable`, `backend_removed`) there too.
    pub(super) fn drop_for_listener(
        &mut self,
        snapshot: &Snapshot,
        key: &FlowKey,
        reason: DropReason,
    ) {
        self.stats.drops[reason as usize] += 1;
        let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
            return;
        };
        let Some(counters) = snapshot
            .listener_for_vip(&destination_key(key, protocol))
            .and_then(|listener| self.stats.listeners.get_mut(listener.id().index()))
        else {
            return;
        };
        match reason {
            DropReason::BackendUnavailable => counters.backend_unavailable += 1,
            DropReason::BackendRemoved => counters.backend_removed += 1,
            DropReason::SourceDenied => counters.source_denied += 1,
            DropReason::NewFlowRateLimited => counters.rate_limited += 1,
            DropReason::MaxFlowsReached => counters.max_flows_reached += 1,
            _ => {}
        }
    }

    /// A packet of a flow on `listener`'s `backend` (indices of the batch's
    /// snapshot).
    #[inline(always)]
    pub(super) fn count(&mut self, listener: u32, backend: u32, bytes: u64) {
        self.stats.count(listener as usize, backend as usize, bytes);
    }

    /// Forgets idle flows. A flow the fast path carries looks idle here, so
    /// the cache is asked first (and a client flow it still carries keeps
    /// its reply expected); a flow that is forgotten leaves the cache too.
    pub(super) fn expire(&mut self, flows: &mut FlowTable, now: u64) {
        let Some(fast) = &mut self.fast else {
            flows.expire(now);
            return;
        };
        fast.begin_expiry(now);
        let (replies, reply_ttl) = (&self.replies, self.reply_ttl);
        let snat = self.snat.as_ref();
        flows.expire_with(now, &mut |key, entry| {
            let activity = fast.activity(key, entry);
            if let CacheActivity::SeenAt(_) = activity {
                if entry.direction == Direction::ToBackend {
                    keep_reply_in(replies, snat, reply_ttl, key, entry, now);
                }
            }
            activity
        });
        fast.end_expiry();
        flows.take_uncached(fast.removals());
        fast.flush(flows, now);
    }

    /// Puts the reply of the client flow `key` (decided as `forward`) in
    /// the shared table, so whichever worker it reaches reverses it.
    pub(super) fn remember_reply(&self, key: &FlowKey, forward: &FlowEntry, now: u64) {
        let ttl = self.reply_ttl.of_flow(key, forward);
        self.replies.put(
            &reply_key(key, forward),
            (key.dst, key.dst_port),
            secs(now),
            ttl,
        );
    }

    /// Keeps the reply of a live client flow expected.
    #[inline(never)]
    pub(super) fn keep_reply(&self, key: &FlowKey, forward: &FlowEntry, now: u64) {
        let snat = self.snat.as_ref();
        keep_reply_in(&self.replies, snat, self.reply_ttl, key, forward, now);
    }

    /// Egress port and L2 header for a packet to `destination`; a missing
    /// neighbour is asked for, so a later packet finds it.
    pub(super) fn next_hop(
        &self,
        l2: &L2Table,
        destination: IpAddr,
    ) -> Result<(usize, NextHop), DropReason> {
        next_hop(l2, &self.port_ifindexes, destination).inspect_err(|_| {
            self.neighbors.request(destination);
        })
    }

    /// Sends a rewritten frame (an IP packet of `ip_len` bytes at
    /// `l3_offset`) out of `egress`, with the tag its link wants: its own
    /// when it has the right one, else retagged in place, or pushed or
    /// popped by the I/O. A packet larger than the link's MTU is dropped
    /// rather than sent for the link to drop.
    #[inline(always)]
    pub(super) fn send(
        &mut self,
        frame: &mut [u8],
        l3_offset: usize,
        ip_len: usize,
        egress: Egress,
    ) -> Verdict {
        let Egress { port, vlan, mtu } = egress;
        if mtu != 0 && ip_len > usize::from(mtu) {
            return self.drop_packet(DropReason::FrameTooBig);
        }
        match packet::retag(frame, l3_offset, vlan) {
            TagEdit::Kept => Verdict::Transmit(port),
            TagEdit::Retagged => {
                self.stats.vlan_retagged += 1;
                Verdict::Transmit(port)
            }
            TagEdit::Push(tag) => {
                self.stats.vlan_pushed += 1;
                Verdict::TransmitPushed { port, tag }
            }
            TagEdit::Pop => {
                self.stats.vlan_popped += 1;
                Verdict::TransmitPopped { port }
            }
        }
    }

    /// A packet too big for its egress link of `mtu`: dropped and counted,
    /// and answered from `from` with ICMP fragmentation-needed (IPv4 with
    /// DF) or packet-too-big (IPv6) back out of `ingress`, within the
    /// worker's budget of `TOO_BIG_PER_SECOND`.
    #[inline(never)]
    pub(super) fn refuse_too_big(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        ingress: usize,
        mtu: u16,
        from: IpAddr,
        now: u64,
    ) -> Verdict {
        self.stats.drops[DropReason::FrameTooBig as usize] += 1;
        let second = now / NS_PER_SEC;
        if second != self.too_big_second {
            self.too_big_second = second;
            self.too_big_left = TOO_BIG_PER_SECOND;
        }
        if self.too_big_left == 0 {
            return Verdict::Drop;
        }
        match packet::too_big(frame, parsed, mtu, from) {
            Some(len) => {
                self.too_big_left -= 1;
                self.stats.too_big_answered += 1;
                Verdict::TransmitPrefix { port: ingress, len }
            }
            None => Verdict::Drop,
        }
    }

    /// A TCP segment of a flow whose backend a reload removed: the client
    /// is told at once with a reset, rather than retransmitting into a
    /// backend that would only answer with one.
    #[inline(never)]
    pub(super) fn refuse_removed(
        &mut self,
        snapshot: &Snapshot,
        frame: &mut [u8],
        parsed: &Parsed,
        ingress: usize,
    ) -> Verdict {
        self.drop_for_listener(snapshot, &parsed.key, DropReason::BackendRemoved);
        reset(frame, parsed, ingress)
    }

    /// A new flow that could not be decided, counted by `reason`.
    #[inline(never)]
    pub(super) fn refuse(
        &mut self,
        snapshot: &Snapshot,
        frame: &mut [u8],
        parsed: &Parsed,
        ingress: usize,
        reason: DropReason,
    ) -> Verdict {
        match reason {
            // The Gateway API asks that a connection to an invalid
            // backendRef's share be refused; a reset refuses it at once.
            DropReason::BackendUnavailable if parsed.key.protocol == TCP => {
                self.drop_for_listener(snapshot, &parsed.key, reason);
                reset(frame, parsed, ingress)
            }
            DropReason::BackendUnavailable | DropReason::SourceDenied => {
                self.drop_for_listener(snapshot, &parsed.key, reason);
                Verdict::Drop
            }
            // A limit refuses a TCP flow with a reset, so the client backs
            // off at once instead of retransmitting its SYN into silence.
            DropReason::NewFlowRateLimited | DropReason::MaxFlowsReached => {
                self.drop_for_listener(snapshot, &parsed.key, reason);
                if parsed.key.protocol == TCP {
                    reset(frame, parsed, ingress)
                } else {
                    Verdict::Drop
                }
            }
            // The backend would answer a segment of a connection it does
            // not know with a reset; so does the node, for the backend.
            DropReason::ProxyStartUnseen => {
                self.drop_for_listener(snapshot, &parsed.key, reason);
                reset(frame, parsed, ingress)
            }
            reason => self.drop_packet(reason),
        }
    }
}

/// Extends the reply entry of the live client flow `key`, or puts it again
/// if the shared table gave its slot to another flow meanwhile; for a
/// full-NAT flow, its SNAT binding; for `dsr`, nothing (no answer comes
/// back).
fn keep_reply_in(
    replies: &ReplyTable,
    snat: Option<&SnatState>,
    ttl: ReplyTtl,
    key: &FlowKey,
    forward: &FlowEntry,
    now: u64,
) {
    let ttl = ttl.of_flow(key, forward);
    match Shape::of(key, forward) {
        Shape::Nat => {}
        Shape::FullNat => {
            if let Some(snat) = snat {
                let rewrite = &forward.rewrite;
                let binding = (rewrite.ip_src, rewrite.src_port);
                snat.table
                    .refresh(binding.0, binding.1, key.protocol, secs(now), ttl);
                let forward_key = forward_key(key);
                if !snat.forwards.refresh(&forward_key, secs(now), ttl) {
                    snat.forwards.put(&forward_key, binding, secs(now), ttl);
                }
            }
            return;
        }
        // Their answers never come back through the node.
        Shape::Dsr | Shape::Tunnel => return,
    }
    let reply = reply_key(key, forward);
    if !replies.refresh(&reply, secs(now), ttl) {
        replies.put(&reply, (key.dst, key.dst_port), secs(now), ttl);
    }
}

/// The 5-tuple the reply of client flow `key`, decided as `forward`,
/// arrives with: from the backend endpoint to the source the flow left
/// with (the client, or for `fullnat` its SNAT binding).
pub(super) fn reply_key(key: &FlowKey, forward: &FlowEntry) -> FlowKey {
    FlowKey {
        src: forward.rewrite.ip_dst,
        dst: forward.rewrite.ip_src,
        src_port: forward.rewrite.dst_port,
        dst_port: forward.rewrite.src_port,
        protocol: key.protocol,
    }
}

/// Seconds on the workers' clock, as the shared tables count time.
#[inline(always)]
pub(super) fn secs(now_ns: u64) -> u32 {
    (now_ns / NS_PER_SEC) as u32
}

pub(super) const NS_PER_SEC: u64 = 1_000_000_000;

/// What the snapshot matches a packet's destination on: a listener's VIP.
#[inline(always)]
pub(super) fn destination_key(key: &FlowKey, protocol: Protocol) -> ServiceKey {
    service_key(key.dst, key.dst_port, protocol)
}

#[inline(always)]
pub(super) fn service_key(address: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        endpoint: Endpoint { address, port },
        protocol,
    }
}

/// Answers a TCP segment with a reset, back out of the port it came in on;
/// a segment that must not be answered (a reset itself) is just dropped.
fn reset(frame: &mut [u8], parsed: &Parsed, ingress: usize) -> Verdict {
    match packet::tcp_reset(frame, parsed) {
        Some(len) => Verdict::TransmitPrefix { port: ingress, len },
        None => Verdict::Drop,
    }
}

/// Egress port and L2 header for a packet to `destination`.
pub(super) fn next_hop(
    l2: &L2Table,
    port_ifindexes: &[u32],
    destination: IpAddr,
) -> Result<(usize, NextHop), DropReason> {
    let hop = l2
        .resolve(destination)
        .map_err(|unresolved| match unresolved {
            Unresolved::NoRoute => DropReason::NoRoute,
            Unresolved::NoNeighbour { .. } => DropReason::NeighbourUnresolved,
        })?;
    let port = port_ifindexes
        .iter()
        .position(|&ifindex| ifindex == hop.ifindex)
        .ok_or(DropReason::EgressNotOwned)?;
    Ok((port, hop))
}
