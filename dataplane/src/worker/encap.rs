//! The encapsulating modes' share of the packet stages (`ipip`, `gue`): a
//! new flow's outer header chosen once (`tunnel_translation`), the MTU an
//! encapsulated packet must fit once its outer headers are added, and the
//! send that hands the I/O a new head instead of rewriting in place. The
//! backend decapsulates and answers the client itself, so no reply is
//! expected through the load balancer; the flow entry's `rewrite` holds
//! the outer MACs, addresses and ports.

use std::net::IpAddr;

use switchyard_config::snapshot::{Forwarding, Protocol, Snapshot};

use super::path::{mtu16, service_key, Egress, PathState};
use super::Worker;
use crate::drop_reason::DropReason;
use crate::flow::Direction;
use crate::flow::FlowEntry;
use crate::io::Verdict;
use crate::neighbor::L2Table;
use crate::packet::encap::{self, gue_source_port, ipip_source};
use crate::packet::icmp::Quote;
use crate::packet::{self, FlowKey, L4Checksum, Parsed, Rewrite, Tunnel, L3};

/// The tunnel a listener's mode wraps its flows in.
#[inline(always)]
pub(super) fn tunnel_of(forwarding: &Forwarding) -> Tunnel {
    match forwarding {
        Forwarding::Ipip => Tunnel::Ipip,
        Forwarding::Gue(_) => Tunnel::Gue,
        _ => Tunnel::None,
    }
}

/// The outer (source, destination) of a new flow `key` of an encapsulating
/// listener to `backend`, as (address, port) pairs: IP-in-IP from a
/// per-flow address of Katran's prefix (ports unused, 0); GUE from the VIP
/// (an address the load balancer owns and announces, so anything that
/// answers the outer header reaches it) and a per-flow port, to the
/// backend's GUE port.
pub(super) fn tunnel_endpoints(
    forwarding: &Forwarding,
    key: &FlowKey,
    backend: IpAddr,
    seed: u32,
) -> ((IpAddr, u16), (IpAddr, u16)) {
    let hash = packet::flow_hash(key, seed);
    match forwarding {
        Forwarding::Gue(gue) => ((key.dst, gue_source_port(hash)), (backend, gue.port)),
        _ => ((ipip_source(key.is_ipv6(), hash), 0), (backend, 0)),
    }
}

/// The largest IP packet of the flow that fits its egress link (once
/// wrapped, for a tunnel); 0 (no limit) when the link's MTU is unknown.
#[inline(always)]
pub(super) fn inner_mtu(entry: &FlowEntry, key: &FlowKey) -> u16 {
    encap::inner_mtu(entry.egress_mtu, entry.tunnel, key.is_ipv6())
}

impl PathState {
    /// Rewrites the frame for its flow: the translation in place, or for
    /// an encapsulated flow only the MACs (the head is replaced anyway),
    /// so a checksum the client left partial is still completed: the
    /// backend's kernel, handed the inner packet by its decapsulation,
    /// would drop it otherwise.
    #[inline(always)]
    pub(super) fn rewrite_frame(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        entry: &FlowEntry,
    ) -> L4Checksum {
        if !entry.tunnel.is_some() {
            return packet::apply(frame, parsed, &entry.rewrite);
        }
        let key = &parsed.key;
        let unchanged = Rewrite {
            ip_src: key.src,
            ip_dst: key.dst,
            src_port: key.src_port,
            dst_port: key.dst_port,
            ..entry.rewrite
        };
        packet::apply(frame, parsed, &unchanged)
    }

    /// Sends the frame of a flow as its entry says: rewritten in place
    /// (with the tag its link wants), or wrapped in the outer headers.
    #[inline(always)]
    pub(super) fn send_flow(
        &mut self,
        frame: &mut [u8],
        l3_offset: usize,
        ip_len: usize,
        entry: &FlowEntry,
    ) -> Verdict {
        if entry.tunnel.is_some() {
            let egress = Egress::of(entry);
            return self.send_encapsulated(
                frame,
                l3_offset,
                ip_len,
                entry.tunnel,
                &entry.rewrite,
                egress,
            );
        }
        self.send(frame, l3_offset, ip_len, Egress::of(entry))
    }

    /// The IP packet of `ip_len` bytes at `l3_offset`, wrapped as `tunnel`
    /// with the outer MACs, addresses and ports of `outer`, out of
    /// `egress`.
    #[inline(never)]
    pub(super) fn send_encapsulated(
        &mut self,
        frame: &mut [u8],
        l3_offset: usize,
        ip_len: usize,
        tunnel: Tunnel,
        outer: &Rewrite,
        egress: Egress,
    ) -> Verdict {
        let Egress { port, vlan, mtu } = egress;
        let ipv6 = outer.ip_dst.is_ipv6();
        if mtu != 0 && ip_len + tunnel.overhead(ipv6) > usize::from(mtu) {
            return self.drop_packet(DropReason::FrameTooBig);
        }
        match encap::head(frame, l3_offset, ip_len, tunnel, outer, vlan) {
            Some(head) => {
                self.stats.encapsulated += 1;
                Verdict::TransmitEncapsulated { port, head }
            }
            // Never taken: the flow's family is the packet's, and its
            // length was parsed from this frame.
            None => self.drop_packet(DropReason::UnsupportedAddressFamily),
        }
    }
}

impl Worker {
    /// A router reports on an answer a backend of an encapsulating
    /// listener sent the client itself (quoted: VIP:vport -> client, as
    /// the backend sent it): the message goes to that backend unchanged,
    /// wrapped as the flow's packets are (same outer header, so the same
    /// backend queue), so its kernel learns the path MTU to the client.
    /// The backend is the one this worker's table holds for the client's
    /// flow, else the one its next packet would be given.
    #[inline(never)]
    pub(super) fn about_an_encapsulated_reply(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        frame: &mut [u8],
        l3: &L3,
        quote: &Quote,
    ) -> Verdict {
        let client_flow = quote.key.reversed();
        let tracked = self
            .flows
            .peek(&client_flow, now)
            .filter(|entry| entry.direction == Direction::ToBackend && entry.tunnel.is_some())
            .map(|entry| entry.rewrite.ip_dst);
        let backend = match tracked {
            Some(backend) => backend,
            None => match self.path.current_backend(snapshot, &client_flow, now) {
                Ok((address, _)) => address,
                Err(reason) => return self.path.drop_packet(reason),
            },
        };
        let listener = Protocol::from_ip_proto(client_flow.protocol).and_then(|protocol| {
            let vip = service_key(client_flow.dst, client_flow.dst_port, protocol);
            snapshot.listener_for_vip(&vip)
        });
        let Some(listener) = listener else {
            return self.path.drop_packet(DropReason::IcmpWithoutFlow);
        };
        let forwarding = listener.get().forwarding();
        let (src, dst) = tunnel_endpoints(forwarding, &client_flow, backend, self.path.hash_seed);
        let (port, hop) = match self.path.next_hop(l2, backend) {
            Ok(next) => next,
            Err(reason) => return self.path.drop_packet(reason),
        };
        let outer = Rewrite {
            eth_src: hop.src_mac,
            eth_dst: hop.dst_mac,
            ip_src: src.0,
            ip_dst: dst.0,
            src_port: src.1,
            dst_port: dst.1,
        };
        let egress = Egress {
            port,
            vlan: hop.vlan,
            mtu: mtu16(hop.mtu),
        };
        let tunnel = tunnel_of(forwarding);
        let verdict = self.path.send_encapsulated(
            frame,
            l3.l3_offset,
            l3.ip_total_len,
            tunnel,
            &outer,
            egress,
        );
        if verdict != Verdict::Drop {
            self.path.stats.icmp_to_backend += 1;
        }
        verdict
    }
}
