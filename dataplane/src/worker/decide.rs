//! The miss path: the first packet of a 5-tuple. A client reaching a VIP
//! gets a backend (the listener's Maglev slot, or its ClientIP affinity
//! entry) and a two-arm NAT toward it, and its reply is put in the workers'
//! shared reply table; a backend's packet is reversed only when that table
//! says which client flow it answers. Either way the translation and its
//! next hop become a flow entry, computed once and replayed on every later
//! packet (and by the XDP cache). Out of line from the hit path; it
//! allocates nothing either.

use std::net::IpAddr;

use switchyard_config::snapshot::{Endpoint, Listener, ListenerRef, Protocol, Slot, Snapshot};

use super::encap::{inner_mtu, tunnel_endpoints, tunnel_of};
use super::path::{
    answering_address, destination_key, exceeds, mtu16, reply_key, secs, service_key, PathState,
    PROVISIONAL_L2, TCP, TCP_CLOSING, TCP_CONTROL,
};
use super::plan::{Plan, Shape};
use super::Worker;
use crate::affinity::{address_tag, AffinityEntry, AffinityKey, AffinityTable};
use crate::drop_reason::DropReason;
use crate::flow::{Cached, Direction, FlowEntry, FlowTable};
use crate::io::Verdict;
use crate::neighbor::{L2Table, Unresolved, VlanTag};
use crate::packet::{self, FlowKey, L4Checksum, Parsed, ProxyStream, Rewrite, Tunnel};
use switchyard_config::snapshot::Forwarding;
use switchyard_wire::tcp;

/// Where the slot table sends a new flow to a VIP: the one decision both
/// the packet path and `yardctl explain` take, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<'s> {
    /// The listener matching the destination, with its index.
    pub listener: ListenerRef<'s>,
    /// `flow_hash(key, seed)`, kept so explanations can show it.
    pub hash: u32,
    /// `hash % slots`.
    pub slot: usize,
    /// Size of the listener's slot table.
    pub slots: usize,
    /// Index into the listener's backends; `None` is the share of a
    /// backendRef without usable endpoints (the flow is refused).
    pub backend: Option<u32>,
}

/// The backend a new flow with `key` gets under `snapshot`: the listener
/// matching the destination, then the owner of slot
/// `flow_hash(key, seed) % slots` (`client_hash(key.src, seed)` when the
/// listener has `ClientIP` affinity). `NotAService` when no listener matches
/// (the packet may still be a backend's reply). Pure and allocation-free.
#[inline]
pub fn choose<'s>(
    snapshot: &'s Snapshot,
    key: &FlowKey,
    seed: u32,
) -> Result<Choice<'s>, DropReason> {
    let protocol = Protocol::from_ip_proto(key.protocol).ok_or(DropReason::UnsupportedProtocol)?;
    let listener = snapshot
        .listener_for_vip(&destination_key(key, protocol))
        .ok_or(DropReason::NotAService)?;
    // ClientIP affinity starts from the table hashed by client address
    // alone, so every worker and node gives a new client the same backend;
    // the affinity table (`affine_backend`) then keeps it there across
    // config changes until its entry expires.
    let hash = match listener.affinity() {
        Some(_) => packet::client_hash(key.src, seed),
        None => packet::flow_hash(key, seed),
    };
    let table = listener.slots();
    let (slot, owner) = table.slot_of(hash);
    let backend = match owner {
        Slot::Backend(backend) => Some(backend),
        Slot::Unavailable => None,
    };
    Ok(Choice {
        listener,
        hash,
        slot,
        slots: table.len(),
        backend,
    })
}

/// A new flow's translation before its next hop is known.
struct Translation {
    direction: Direction,
    plan: Plan,
    /// Where the packet is sent at L2: the backend, even when (`dsr`) its
    /// destination address stays the VIP.
    next_hop: IpAddr,
    /// Indices into the snapshot the translation was decided under.
    listener: u32,
    backend: u32,
    /// Source and destination (address, port) the packet leaves with.
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    /// For an encapsulating listener: `src` and `dst` are the outer
    /// header's, and the packet itself is left as it is.
    tunnel: Tunnel,
    /// A `fullnat` TCP flow whose backend reads a PROXY header.
    proxy: Option<ProxyStream>,
}

impl Worker {
    /// Decides a packet the flow table has no valid entry for, rewrites and
    /// sends it, and remembers the decision (and, for a client's flow, the
    /// reply it expects).
    #[inline(never)]
    pub(super) fn new_flow(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        parsed: &Parsed,
    ) -> Verdict {
        // Read before the rewrite overwrites them.
        let frame_macs = ethernet_addresses(frame);
        let frame_tag = packet::tag_of(frame, parsed.l3_offset);
        let bytes = frame.len() as u64;
        if self.admission.any() {
            if let Err(reason) = self.admit(snapshot, &parsed.key, now) {
                return self.path.refuse(snapshot, frame, parsed, ingress, reason);
            }
        }
        let mut entry = match self
            .path
            .decide(snapshot, &self.flows, l2, now, frame, parsed, bytes)
        {
            Ok(entry) => entry,
            Err(reason) => return self.path.refuse(snapshot, frame, parsed, ingress, reason),
        };
        // Not remembered: the next packet is decided alike.
        let mtu = inner_mtu(&entry, &parsed.key);
        let grows = self.path.proxy_growth(frame, parsed, &entry);
        if exceeds(mtu, parsed.ip_total_len + grows) {
            let from = answering_address(&parsed.key, &entry);
            let fits = mtu.saturating_sub(grows as u16);
            return self
                .path
                .refuse_too_big(frame, parsed, ingress, fits, from, now);
        }
        if self.path.rewrite_frame(frame, parsed, &entry) == L4Checksum::Completed {
            self.path.stats.partial_checksums += 1;
        }
        let spliced = match entry.proxy {
            Some(_) => self.path.edit_proxied(frame, parsed, &mut entry, now),
            None => None,
        };
        let (listener, backend) = (entry.listener as usize, entry.backend as usize);
        let foreign = self.path.of_foreign_port(&parsed.key, &entry);
        if entry.direction == Direction::ToBackend && !foreign {
            self.path.stats.count_flow(listener, backend);
        }
        self.path.stats.count(listener, backend, bytes);
        let arrived = (frame_macs, frame_tag);
        // An encapsulated flow's backend answers the client itself, and so
        // does a `dsr` one's.
        let shape = Shape::of(&parsed.key, &entry);
        if entry.direction == Direction::ToBackend && shape == Shape::Nat {
            self.path.remember_reply(&parsed.key, &entry, now);
            self.expect_reply(snapshot, l2, ingress, arrived, &parsed.key, &entry);
        }
        // A full table evicts its least recently used flow; an evicted
        // flow's next packet is decided again, the same way while its
        // backend set is unchanged.
        if !foreign {
            self.flows.insert(parsed.key, entry);
        }
        if entry.direction == Direction::ToBackend && shape == Shape::FullNat && !foreign {
            self.expect_snat_reply(snapshot, l2, ingress, arrived, &parsed.key, &entry);
        }
        match spliced {
            Some(splice) => self.path.send_spliced(frame, parsed, &entry, splice),
            None => self
                .path
                .send_flow(frame, parsed.l3_offset, parsed.ip_total_len, &entry),
        }
    }

    /// A new client whose MAC the kernel's table does not have yet: the
    /// kernel learned it from the client's ARP request moments ago, but the
    /// backend's answer can arrive before that entry reaches the workers,
    /// and a lost first UDP reply is never retransmitted. The kernel would
    /// queue the reply while resolving; this worker instead pre-installs the
    /// reply entry with the L2 header of the client's own frame (reversed),
    /// used only while the table has no entry and only when the route to
    /// the client leaves by the interface the frame arrived on. Replies
    /// reaching another queue first still wait for the table.
    #[inline(never)]
    fn expect_reply(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        ingress: usize,
        arrived: ArrivedL2,
        key: &FlowKey,
        forward: &FlowEntry,
    ) {
        let Some(hop) = self.path.provisional_reply_hop(l2, ingress, arrived, key) else {
            return;
        };
        let reply = FlowEntry {
            rewrite: Rewrite {
                eth_src: hop.eth_src,
                eth_dst: hop.eth_dst,
                ip_src: key.dst,
                ip_dst: key.src,
                src_port: key.dst_port,
                dst_port: key.src_port,
            },
            egress_port: hop.egress_port,
            egress_vlan: hop.vlan.into(),
            egress_mtu: 0,
            direction: Direction::ToClient,
            tunnel: Tunnel::None,
            generation: snapshot.generation(),
            l2_version: hop.l2_version,
            packets: 0,
            bytes: 0,
            closing: false,
            cached: Cached::No,
            ..*forward
        };
        self.flows.insert(reply_key(key, forward), reply);
    }
}

/// The L2 header a client's frame arrived with: its (destination, source)
/// MACs, and its tag.
pub(super) type ArrivedL2 = (Option<([u8; 6], [u8; 6])>, Option<VlanTag>);

/// The L2 header and port a pre-installed reply leaves with.
pub(super) struct ReplyHop {
    pub(super) eth_src: [u8; 6],
    pub(super) eth_dst: [u8; 6],
    pub(super) egress_port: usize,
    pub(super) vlan: Option<VlanTag>,
    pub(super) l2_version: u64,
}

impl PathState {
    /// The translation and next hop of a new flow, as its entry.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        snapshot: &Snapshot,
        flows: &FlowTable,
        l2: &L2Table,
        now: u64,
        frame: &[u8],
        parsed: &Parsed,
        bytes: u64,
    ) -> Result<FlowEntry, DropReason> {
        let key = &parsed.key;
        // A client's new flow writes its reply's bucket once decided: fetch
        // it while the slot table and next hop are looked up.
        self.replies.prefetch_for(key);
        let mut translation = match choose(snapshot, key, self.hash_seed) {
            Ok(choice) => self.to_backend(key, &choice, now)?,
            Err(DropReason::NotAService) => self.reverse_reply(snapshot, key, now)?,
            Err(reason) => return Err(reason),
        };
        let full_nat =
            (translation.direction, translation.plan) == (Direction::ToBackend, Plan::FullNat);
        let mut bound = false;
        if full_nat {
            if let Some(binding) = self.existing_binding(snapshot, key, translation.listener, now) {
                translation.src = binding.snat;
                translation.backend = binding.backend;
                translation.dst = binding.endpoint;
                translation.next_hop = binding.endpoint.0;
                // The flow keeps what it was opened with, whatever a
                // reload did to its listener's PROXY setting since.
                translation.proxy = binding.proxy;
                bound = true;
            } else if sends_proxy_header(snapshot, translation.listener, key) {
                translation.proxy = Some(opening_stream(frame, parsed)?);
            }
        }
        let (egress_port, hop) = self.next_hop(l2, translation.next_hop)?;
        match (translation.direction, translation.plan) {
            (Direction::ToBackend, Plan::FullNat) if !bound => {
                translation.src = self.bind_snat(
                    snapshot,
                    flows,
                    key,
                    translation.listener,
                    translation.dst,
                    hop.ifindex,
                    translation.proxy,
                    now,
                )?;
            }
            (Direction::ToBackend, Plan::Dsr) if !l2.is_on_link(translation.next_hop) => {
                return Err(DropReason::DsrBackendNotOnLink);
            }
            _ => {}
        }
        Ok(FlowEntry {
            rewrite: Rewrite {
                eth_src: hop.src_mac,
                eth_dst: hop.dst_mac,
                ip_src: translation.src.0,
                ip_dst: translation.dst.0,
                src_port: translation.src.1,
                dst_port: translation.dst.1,
            },
            egress_port,
            egress_vlan: hop.vlan.into(),
            egress_mtu: mtu16(hop.mtu),
            direction: translation.direction,
            tunnel: translation.tunnel,
            listener: translation.listener,
            backend: translation.backend,
            generation: snapshot.generation(),
            l2_version: l2.version(),
            created_ns: now,
            last_seen_ns: now,
            packets: 1,
            bytes,
            syn_only: key.protocol == TCP && parsed.tcp_flags & TCP_CONTROL != 0,
            closing: parsed.tcp_flags & TCP_CLOSING != 0,
            cached: Cached::No,
            cached_at: 0,
            proxy: translation.proxy,
        })
    }

    /// Two-arm NAT toward the chosen backend: only the destination
    /// changes, so the backend sees the client's real address.
    fn to_backend(
        &self,
        key: &FlowKey,
        choice: &Choice<'_>,
        now: u64,
    ) -> Result<Translation, DropReason> {
        let listener = choice.listener.get();
        let backend = match listener.affinity() {
            Some(_) => self.affine(listener, key, choice, now),
            None => choice.backend,
        }
        .ok_or(DropReason::BackendUnavailable)?;
        // A slot's backend is one of its listener's (`Listener` checks it),
        // and so is an affinity entry's (`affine_backend` looks it up).
        let endpoint = listener.backends()[backend as usize].endpoint;
        // Never taken: a listener's backends share its VIP's family
        // (`Listener` refuses others); the hot path still answers with a
        // verdict, not a panic.
        if endpoint.address.is_ipv6() != key.is_ipv6() {
            return Err(DropReason::UnsupportedAddressFamily);
        }
        let forwarding = listener.forwarding();
        let plan = Plan::of(forwarding);
        let tunnel = tunnel_of(forwarding);
        let (src, dst) = match (tunnel, plan) {
            // `dsr` leaves the packet addressed to the VIP, which the
            // backend holds itself (config refuses a port translation in
            // this mode).
            (Tunnel::None, Plan::Dsr) => ((key.src, key.src_port), (key.dst, key.dst_port)),
            (Tunnel::None, _) => ((key.src, key.src_port), (endpoint.address, endpoint.port)),
            _ => tunnel_endpoints(forwarding, key, endpoint.address, self.hash_seed),
        };
        Ok(Translation {
            direction: Direction::ToBackend,
            plan,
            next_hop: endpoint.address,
            listener: choice.listener.id().as_u32(),
            backend,
            src,
            dst,
            tunnel,
            proxy: None,
        })
    }

    /// ClientIP affinity: the backend this client was last given while its
    /// entry lives, else the slot's; either way the client's entry is
    /// refreshed, so every worker gives its next flow the same backend.
    fn affine(
        &self,
        listener: &Listener,
        key: &FlowKey,
        choice: &Choice<'_>,
        now: u64,
    ) -> Option<u32> {
        let now_secs = secs(now);
        if let Some((backend, entry)) = affine_backend(&self.affinity, listener, key, now_secs) {
            let address = listener.backends()[backend as usize].endpoint.address;
            self.affinity
                .put(&affinity_key(key), address, entry.port, now_secs);
            return Some(backend);
        }
        let endpoint = choice
            .backend
            .map(|b| listener.backends()[b as usize].endpoint);
        if let Some(Endpoint { address, port }) = endpoint {
            self.affinity
                .put(&affinity_key(key), address, port, now_secs);
        }
        choice.backend
    }

    /// Where the reply to a new client not yet in the neighbour table
    /// leaves, if this worker should pre-install it (see `expect_reply`):
    /// back out of the port the client's frame came in on, with that
    /// frame's MACs reversed and its tag.
    pub(super) fn provisional_reply_hop(
        &self,
        l2: &L2Table,
        ingress: usize,
        (frame_macs, frame_tag): ArrivedL2,
        key: &FlowKey,
    ) -> Option<ReplyHop> {
        let client = key.src;
        let Err(Unresolved::NoNeighbour { ifindex, .. }) = l2.resolve(client) else {
            return None;
        };
        let (frame_dst, frame_src) = frame_macs?;
        if self.port_ifindexes.get(ingress) != Some(&ifindex) {
            return None;
        }
        self.neighbors.request(client);
        Some(ReplyHop {
            eth_src: frame_dst,
            eth_dst: frame_src,
            egress_port: ingress,
            vlan: frame_tag,
            l2_version: PROVISIONAL_L2,
        })
    }

    /// A backend's packet, reversed only when the shared reply table says
    /// which client flow it answers (its VIP), and that VIP's listener
    /// still has the backend. Anything else from a backend endpoint (a
    /// forged packet, or one after its flow ended) is dropped: the load
    /// balancer never translates what no client asked for.
    fn reverse_reply(
        &self,
        snapshot: &Snapshot,
        key: &FlowKey,
        now: u64,
    ) -> Result<Translation, DropReason> {
        let protocol =
            Protocol::from_ip_proto(key.protocol).ok_or(DropReason::UnsupportedProtocol)?;
        // From no VIP's backend at all: steered by a map the snapshot has
        // since left (between a config swap and the map update).
        let source_key = service_key(key.src, key.src_port, protocol);
        if snapshot.owner_of_backend(&source_key).is_none() {
            return Err(DropReason::NotAService);
        }
        if let Some(reply) = self.reverse_snat(snapshot, key, now) {
            return Ok(Translation {
                direction: Direction::ToClient,
                plan: Plan::FullNat,
                next_hop: reply.client.0,
                listener: reply.listener,
                backend: reply.backend,
                src: reply.vip,
                dst: reply.client,
                tunnel: Tunnel::None,
                proxy: reply.proxy,
            });
        }
        let (vip, vip_port) = self
            .replies
            .get(key, secs(now))
            .ok_or(DropReason::ReplyWithoutFlow)?;
        let listener = snapshot
            .listener_for_vip(&service_key(vip, vip_port, protocol))
            .ok_or(DropReason::ReplyWithoutFlow)?;
        let backend = listener
            .backends()
            .iter()
            .position(|b| b.endpoint == source_key.endpoint)
            .ok_or(DropReason::ReplyWithoutFlow)? as u32;
        Ok(Translation {
            direction: Direction::ToClient,
            plan: Plan::Nat,
            next_hop: key.dst,
            listener: listener.id().as_u32(),
            backend,
            src: (vip, vip_port),
            dst: (key.dst, key.dst_port),
            tunnel: Tunnel::None,
            proxy: None,
        })
    }
}

/// Whether new TCP flows of `listener` carry a PROXY header to their
/// backends.
fn sends_proxy_header(snapshot: &Snapshot, listener: u32, key: &FlowKey) -> bool {
    key.protocol == TCP
        && snapshot.listener(listener).is_some_and(|l| {
            matches!(l.get().forwarding(), Forwarding::FullNat(full) if full.proxy_protocol.is_some())
        })
}

/// Where a new PROXY flow's client stream starts: after its SYN. A segment
/// of a connection opened before (no SYN, or the SYN-ACK's ACK) cannot be
/// placed.
fn opening_stream(frame: &[u8], parsed: &Parsed) -> Result<ProxyStream, DropReason> {
    let opening =
        parsed.tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN;
    match packet::proxy::tcp_seq(frame, parsed) {
        Some(seq) if opening => Ok(ProxyStream::starting_after(seq)),
        _ => Err(DropReason::ProxyStartUnseen),
    }
}

/// Who an affinity entry is for.
pub fn affinity_key(key: &FlowKey) -> AffinityKey {
    AffinityKey {
        client: key.src,
        vip: key.dst,
        vip_port: key.dst_port,
        protocol: key.protocol,
    }
}

/// The backend a client with ClientIP affinity was last given on this
/// listener, if its entry is live and the backend is still one of the
/// listener's with a non-zero weight (a drained backend takes no new flows,
/// affinity or not). Index into `listener.backends`.
pub fn affine_backend(
    table: &AffinityTable,
    listener: &Listener,
    key: &FlowKey,
    now_secs: u32,
) -> Option<(u32, AffinityEntry)> {
    let timeout = listener.affinity()?.timeout_secs;
    let entry = table.get(&affinity_key(key), now_secs, timeout)?;
    let position = listener.backends().iter().position(|b| {
        address_tag(b.endpoint.address) == entry.backend
            && b.endpoint.port == entry.port
            && b.effective_weight > 0.0
    })?;
    Some((position as u32, entry))
}

/// Destination and source MAC of an Ethernet frame.
fn ethernet_addresses(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    Some((
        frame.get(0..6)?.try_into().ok()?,
        frame.get(6..12)?.try_into().ok()?,
    ))
}

impl Worker {
    /// The port owner's entry for the answers of its new full-NAT flow
    /// `key`, decided as `forward`: both directions live and leave the
    /// table together on this worker, so the cache can carry both and the
    /// port is only free once neither is left. Toward the client's next
    /// hop, or (while the kernel has no neighbour entry for it yet) back
    /// the way the client's frame came.
    pub(super) fn expect_snat_reply(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        ingress: usize,
        arrived: ArrivedL2,
        key: &FlowKey,
        forward: &FlowEntry,
    ) {
        let hop = match self.path.next_hop(l2, key.src) {
            Ok((port, hop)) => Some((
                port,
                hop.src_mac,
                hop.dst_mac,
                hop.vlan,
                mtu16(hop.mtu),
                l2.version(),
            )),
            Err(_) => self
                .path
                .provisional_reply_hop(l2, ingress, arrived, key)
                .map(|h| (h.egress_port, h.eth_src, h.eth_dst, h.vlan, 0, h.l2_version)),
        };
        let Some((egress_port, eth_src, eth_dst, vlan, egress_mtu, l2_version)) = hop else {
            return;
        };
        let reply = FlowEntry {
            rewrite: Rewrite {
                eth_src,
                eth_dst,
                ip_src: key.dst,
                ip_dst: key.src,
                src_port: key.dst_port,
                dst_port: key.src_port,
            },
            egress_port,
            egress_vlan: vlan.into(),
            egress_mtu,
            direction: Direction::ToClient,
            generation: snapshot.generation(),
            l2_version,
            packets: 0,
            bytes: 0,
            closing: false,
            cached: Cached::No,
            ..*forward
        };
        self.flows.insert(reply_key(key, forward), reply);
    }
}
