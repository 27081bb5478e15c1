//! The fragment path: frames `parse` refuses as fragments. A first fragment
//! carries the L4 header, so it is decided exactly as a whole packet of
//! its 5-tuple (its flow's entry, or a new decision, either direction), and
//! the decision it got is remembered for its datagram; a later fragment,
//! with no ports, is sent the same way if its datagram's first fragment
//! was, and dropped otherwise. Nothing is reassembled or buffered: a
//! fragment that arrives before its first is lost (the sender's transport
//! retransmits, as it would after any loss). Fragments never reach the
//! XDP fast path, whose parser leaves them to the workers.

use switchyard_config::snapshot::Snapshot;

use super::path::Egress;
use super::Worker;
use crate::drop_reason::DropReason;
use crate::fragments::{FragmentDecision, FragmentKey, Remembered};
use crate::io::Verdict;
use crate::neighbor::L2Table;
use crate::packet::{self, L3};

impl Worker {
    /// A fragment of an IPv4 or IPv6 datagram.
    #[inline(never)]
    pub(super) fn fragment(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
    ) -> Verdict {
        let l3 = match packet::parse_l3(frame) {
            Ok(l3) => l3,
            Err(error) => return self.path.drop_packet(error.into()),
        };
        let Some(fragment) = l3.fragment else {
            return self.path.drop_packet(DropReason::Fragment);
        };
        let key = FragmentKey::of(&l3, &fragment);
        if fragment.is_first() {
            self.first_fragment(snapshot, l2, now, ingress, frame, &l3, key)
        } else {
            self.later_fragment(snapshot, now, frame, &l3, &key)
        }
    }

    /// Decided as its flow; what it was sent with becomes its datagram's.
    #[allow(clippy::too_many_arguments)]
    fn first_fragment(
        &mut self,
        snapshot: &Snapshot,
        l2: &L2Table,
        now: u64,
        ingress: usize,
        frame: &mut [u8],
        l3: &L3,
        key: FragmentKey,
    ) -> Verdict {
        let parsed = match packet::parse_first_fragment(frame, l3) {
            Ok(parsed) => parsed,
            Err(error) => return self.path.drop_packet(error.into()),
        };
        let verdict = self.decide_packet(snapshot, l2, now, ingress, frame, &parsed);
        // Only a forwarded first fragment leaves its flow's entry behind; a
        // refused one (or a reset sent back for it) leaves nothing for the
        // rest to follow, so they are dropped.
        let Some(egress_port) = verdict.forwarded_to() else {
            return verdict;
        };
        if let Some(entry) = self.flows.peek(&parsed.key, now) {
            let decision = FragmentDecision {
                rewrite: entry.rewrite,
                tunnel: entry.tunnel,
                egress_port,
                egress_vlan: entry.egress_vlan.get(),
                egress_mtu: entry.egress_mtu,
                listener: entry.listener,
                backend: entry.backend,
                generation: entry.generation,
            };
            if self.fragments.remember(key, decision, now) == Remembered::Evicted {
                self.path.stats.fragment_evictions += 1;
            }
            self.path.stats.first_fragments += 1;
        }
        verdict
    }

    /// Sent as its datagram's first fragment was. The entry is kept until
    /// it expires rather than freed by the last fragment: fragments may
    /// arrive out of order (the last before a middle one), and a duplicate
    /// of the last would otherwise be dropped.
    fn later_fragment(
        &mut self,
        snapshot: &Snapshot,
        now: u64,
        frame: &mut [u8],
        l3: &L3,
        key: &FragmentKey,
    ) -> Verdict {
        let Some(decision) = self.fragments.get(key, now).copied() else {
            return self.path.drop_packet(DropReason::FragmentWithoutFirst);
        };
        if !decision.tunnel.is_some()
            && !packet::rewrite_later_fragment(frame, l3, &decision.rewrite)
        {
            // Never taken: the entry was made from a frame of this family.
            return self.path.drop_packet(DropReason::UnsupportedAddressFamily);
        }
        // Counted under the snapshot the first fragment was decided in;
        // after a reload the indices may name other listeners.
        if decision.generation == snapshot.generation() {
            self.path
                .count(decision.listener, decision.backend, frame.len() as u64);
        }
        self.path.stats.later_fragments += 1;
        let egress = Egress {
            port: decision.egress_port,
            vlan: decision.egress_vlan,
            mtu: decision.egress_mtu,
        };
        if decision.tunnel.is_some() {
            let (l3_offset, ip_len) = (l3.l3_offset, l3.ip_total_len);
            let outer = &decision.rewrite;
            return self.path.send_encapsulated(
                frame,
                l3_offset,
                ip_len,
                decision.tunnel,
                outer,
                egress,
            );
        }
        self.path.send(frame, l3.l3_offset, l3.ip_total_len, egress)
    }
}
