//! The worker's ICMP and ICMPv6: an echo request to a VIP address is
//! answered here; an error about a client's flow is sent to whichever side
//! of the flow sent the quoted packet, translated so that side sees the
//! packet as it sent it (`packet::icmp`). A router reporting on a reply the
//! load balancer sent (quoted: VIP:vport → client) is heard by the flow's
//! backend (quoted: backend:bport → client); a backend reporting on a
//! client's packet (quoted: client → backend:bport) is heard by the client
//! as from the VIP. ICMP that matches no flow is dropped and counted: the
//! kernel's answer would speak for an address it does not own.
//!
//! Nothing here is cached or remembered: ICMP is rare, so each message is
//! decided afresh and creates no flow entry, and the XDP flow cache never
//! carries it.

use std::net::IpAddr;

use switchyard_config::snapshot::{Protocol, Snapshot};
use switchyard_wire::{ipv4, ipv6};

use super::decide::{affine_backend, choose};
use super::encap::tunnel_of;
use super::path::{mtu16, secs, service_key, Egress, PathState};
use super::Worker;
use crate::drop_reason::DropReason;
use crate::flow::Direction;
use crate::io::Verdict;
use crate::neighbor::L2Table;
use crate::packet::icmp::{self, Icmp, IcmpDrop, Quote, Side, Translation};
use crate::packet::{self, FlowKey, L3};

/// Which side of a client's flow an error is sent to; the MACs of its
/// `Translation` are filled in from the next hop.
enum Toward {
    Backend,
    Client,
}

impl Worker {
    /// A frame `packet::parse` found neither TCP nor UDP: ICMP over IPv4
    /// and ICMPv6 over IPv6 are handled here, anything else is dropped as
    /// `unsupported_protocol`.
    #[inline(never)]
    pub(super) fn not_tcp_or_udp(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
    ) -> Verdict {
        let l3 = match packet::parse_l3(frame) {
            Ok(l3) if is_icmp(&l3) => l3,
            _ => return self.path.drop_packet(DropReason::UnsupportedProtocol),
        };
        // A message in fragments would need reassembly to be read whole.
        if l3.fragment.is_some() {
            return self.path.drop_packet(DropReason::Fragment);
        }
        match icmp::classify(frame, &l3) {
            Ok(Icmp::EchoRequest) => self.path.echo(snapshot, frame, &l3, ingress),
            Ok(Icmp::Error(quote)) => self.icmp_error(snapshot, l2, now, frame, &l3, &quote),
            Err(IcmpDrop::Malformed) => self.path.drop_packet(DropReason::BadIcmp),
            Err(IcmpDrop::NoFlow) => self.path.drop_packet(DropReason::IcmpWithoutFlow),
        }
    }

    /// An error about a packet of a client's flow, sent to the side that
    /// sent the quoted packet.
    fn icmp_error(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        frame: &mut [u8],
        l3: &L3,
        quote: &Quote,
    ) -> Verdict {
        let decided = match Protocol::from_ip_proto(quote.key.protocol) {
            Some(protocol)
                if snapshot
                    .listener_for_vip(&service_key(quote.key.src, quote.key.src_port, protocol))
                    .is_some_and(|l| tunnel_of(l.get().forwarding()).is_some()) =>
            {
                return self.about_an_encapsulated_reply(snapshot, l2, now, frame, l3, quote);
            }
            Some(protocol)
                if snapshot
                    .listener_for_vip(&service_key(quote.key.src, quote.key.src_port, protocol))
                    .is_some() =>
            {
                self.about_a_reply(snapshot, now, quote)
            }
            Some(protocol)
                if snapshot
                    .owner_of_backend(&service_key(quote.key.dst, quote.key.dst_port, protocol))
                    .is_some() =>
            {
                self.path.about_a_client_packet(quote, now)
            }
            _ => Err(DropReason::IcmpWithoutFlow),
        };
        let (toward, partial) = match decided {
            Ok(decided) => decided,
            Err(reason) => return self.path.drop_packet(reason),
        };
        let destination = match partial.outer {
            Side::Dst => partial.outer_address,
            Side::Src => l3.dst,
        };
        let (egress, hop) = match self.path.next_hop(l2, destination) {
            Ok(next) => next,
            Err(reason) => return self.path.drop_packet(reason),
        };
        let translation = Translation {
            eth_src: hop.src_mac,
            eth_dst: hop.dst_mac,
            ..partial
        };
        if !icmp::translate(frame, l3, quote, &translation) {
            return self.path.drop_packet(DropReason::UnsupportedAddressFamily);
        }
        // Out with the tag (and within the MTU) of the next hop's link, as
        // the flow's own packets leave.
        let link = Egress {
            port: egress,
            vlan: hop.vlan,
            mtu: mtu16(hop.mtu),
        };
        let verdict = self.path.send(frame, l3.l3_offset, l3.ip_total_len, link);
        if verdict != Verdict::Drop {
            match toward {
                Toward::Backend => self.path.stats.icmp_to_backend += 1,
                Toward::Client => self.path.stats.icmp_to_client += 1,
            }
        }
        verdict
    }

    /// A router reports on a reply the load balancer sent to a client
    /// (quoted: VIP:vport → client:cport). The client's flow goes to the
    /// backend this worker's table holds for it, else to the one its next
    /// packet would be given (`choose`, and the client's affinity entry),
    /// which is where any worker has sent it while the backend set is
    /// unchanged; no flow entry is made for it. The outer destination and
    /// the quoted source become the backend's, as the backend sent it.
    fn about_a_reply(
        &self,
        snapshot: &Snapshot,
        now: u64,
        quote: &Quote,
    ) -> Result<(Toward, Translation), DropReason> {
        let client_flow = quote.key.reversed();
        let tracked = self
            .flows
            .peek(&client_flow, now)
            .filter(|entry| entry.direction == Direction::ToBackend)
            .map(|entry| (entry.rewrite.ip_dst, entry.rewrite.dst_port));
        let backend = match tracked {
            Some(backend) => backend,
            None => self.path.current_backend(snapshot, &client_flow, now)?,
        };
        Ok((
            Toward::Backend,
            Translation {
                eth_src: [0; 6],
                eth_dst: [0; 6],
                outer: Side::Dst,
                outer_address: backend.0,
                quoted: Side::Src,
                quoted_endpoint: backend,
            },
        ))
    }
}

impl PathState {
    /// Answers an echo request to a VIP address, back out of the port it
    /// came in on.
    fn echo(&mut self, snapshot: &Snapshot, frame: &mut [u8], l3: &L3, ingress: usize) -> Verdict {
        if !snapshot.serves_address(l3.dst) {
            return self.drop_packet(DropReason::NotAService);
        }
        if !icmp::echo_reply(frame, l3) {
            return self.drop_packet(DropReason::BadIcmp);
        }
        self.stats.echo_replies += 1;
        Verdict::Transmit(ingress)
    }

    /// The backend a new packet of the client flow `key` would be given:
    /// the listener's slot, or the client's live affinity entry. Reads the
    /// affinity table without refreshing it: an error is no sign of life.
    pub(super) fn current_backend(
        &self,
        snapshot: &Snapshot,
        key: &FlowKey,
        now: u64,
    ) -> Result<(IpAddr, u16), DropReason> {
        let choice =
            choose(snapshot, key, self.hash_seed).map_err(|_| DropReason::IcmpWithoutFlow)?;
        let listener = choice.listener.get();
        let affine = affine_backend(&self.affinity, listener, key, secs(now)).map(|(b, _)| b);
        let backend = affine
            .or(choice.backend)
            .ok_or(DropReason::IcmpWithoutFlow)?;
        let endpoint = listener
            .backends()
            .get(backend as usize)
            .ok_or(DropReason::IcmpWithoutFlow)?
            .endpoint;
        Ok((endpoint.address, endpoint.port))
    }

    /// A backend reports on a client's packet (quoted: client:cport →
    /// backend:bport). The VIP the client sent it to comes from the shared
    /// reply table, as for the backend's own replies; without an entry no
    /// client flow asked for this, and nothing is translated. The outer
    /// source and the quoted destination become the VIP's, so the client
    /// never sees the backend's address.
    fn about_a_client_packet(
        &self,
        quote: &Quote,
        now: u64,
    ) -> Result<(Toward, Translation), DropReason> {
        let reply = quote.key.reversed();
        let vip = self
            .replies
            .get(&reply, secs(now))
            .ok_or(DropReason::ReplyWithoutFlow)?;
        Ok((
            Toward::Client,
            Translation {
                eth_src: [0; 6],
                eth_dst: [0; 6],
                outer: Side::Src,
                outer_address: vip.0,
                quoted: Side::Dst,
                quoted_endpoint: vip,
            },
        ))
    }
}

/// ICMP over IPv4 or ICMPv6 over IPv6; the other pairings are no protocol
/// of either family.
fn is_icmp(l3: &L3) -> bool {
    match l3.src {
        IpAddr::V4(_) => l3.protocol == ipv4::PROTOCOL_ICMP,
        IpAddr::V6(_) => l3.protocol == ipv6::NEXT_HEADER_ICMPV6,
    }
}
