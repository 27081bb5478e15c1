//! The encapsulating modes' share of the packet stages (`ipip`, `gue`): a
//! new flow's outer header chosen once (`tunnel_translation`), the MTU an
//! encapsulated packet must fit once its outer headers are added, and the
//! send that hands the I/O a new head instead of rewriting in place. The
//! backend decapsulates and answers the client itself, so no reply is
//! expected through the load balancer; the flow entry's `rewrite` holds
//! the outer MACs, addresses and ports.

use std::net::IpAddr;

use switchyard_config::snapshot::Forwarding;

use super::path::{Egress, PathState};
use crate::drop_reason::DropReason;
use crate::flow::FlowEntry;
use crate::io::Verdict;
use crate::packet::encap::{self, gue_source_port, ipip_source};
use crate::packet::{self, FlowKey, L4Checksum, Parsed, Rewrite, Tunnel};

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
