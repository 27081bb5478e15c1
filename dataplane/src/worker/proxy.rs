//! The per-segment work of a `fullnat` TCP flow whose listener sends a
//! PROXY protocol header (`packet::proxy`): the client's segments move on
//! in the backend's stream and the one that starts it carries the header;
//! the backend's acknowledgments move back. Out of line from the hit path,
//! which only tests `FlowEntry::proxy`; such flows are never offered to
//! the XDP cache, whose replay knows no sequence numbers.
//!
//! Whether the backend has the header is shared (`SnatTable`), since a
//! flow's two directions may reach two workers: the one that sees the
//! backend acknowledge it says so, and from then on no client segment
//! carries it again (a client that only acknowledges the backend's data
//! sends nothing else at the stream's start).

use switchyard_wire::tcp;

use super::path::{secs, Egress, PathState, TCP};
use crate::flow::{Direction, FlowEntry};
use crate::io::Verdict;
use crate::packet::proxy::{self, header_len};
use crate::packet::{Parsed, ProxyHeader, Splice, TagEdit};

impl PathState {
    /// How much the client's segment `parsed` of a PROXY flow grows on
    /// its way to the backend: the header's length when it starts the
    /// stream, else nothing. Read before the rewrite, for the MTU check.
    #[inline(never)]
    pub(super) fn proxy_growth(&self, frame: &[u8], parsed: &Parsed, entry: &FlowEntry) -> usize {
        match entry.proxy {
            Some(stream)
                if entry.direction == Direction::ToBackend
                    && proxy::carries_header(frame, parsed, &stream) =>
            {
                header_len(parsed.key.is_ipv6()) as usize
            }
            _ => 0,
        }
    }

    /// Edits the translated segment `parsed` of a PROXY flow for the
    /// other side's stream. A client's segment that starts the stream gets
    /// ready for the header, which comes back to be inserted on sending.
    #[inline(never)]
    pub(super) fn edit_proxied(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        entry: &mut FlowEntry,
        now: u64,
    ) -> Option<Spliced> {
        let stream = entry.proxy.as_mut()?;
        let key = &parsed.key;
        match entry.direction {
            Direction::ToBackend if parsed.tcp_flags & tcp::FLAG_SYN != 0 => {
                let (src, dst) = (entry.rewrite.ip_src, entry.rewrite.ip_dst);
                let at = proxy::drop_syn_data(frame, parsed, src, dst)?;
                Some(Spliced {
                    at,
                    end: at,
                    header: ProxyHeader::none(),
                })
            }
            Direction::ToBackend => {
                if !stream.delivered && proxy::carries_header(frame, parsed, stream) {
                    // The answers may have reached another worker, which
                    // marked the header acknowledged.
                    let (snat, port) = (entry.rewrite.ip_src, entry.rewrite.src_port);
                    stream.delivered = self.snat.as_ref().is_some_and(|s| {
                        s.table
                            .get(snat, port, TCP, secs(now))
                            .and_then(|b| b.proxy)
                            .is_some_and(|p| p.delivered && p.first_seq == stream.first_seq)
                    });
                }
                let header = ProxyHeader::new((key.src, key.src_port), (key.dst, key.dst_port))?;
                let at = proxy::to_backend(frame, parsed, stream, &header)?;
                Some(Spliced {
                    at,
                    end: parsed.l3_offset + parsed.ip_total_len,
                    header,
                })
            }
            Direction::ToClient => {
                let acked = proxy::to_client(frame, parsed, stream, header_len(key.is_ipv6()));
                if acked && !stream.delivered {
                    stream.delivered = true;
                    if let Some(snat) = &self.snat {
                        snat.table
                            .header_delivered(key.dst, key.dst_port, TCP, stream.first_seq);
                    }
                }
                None
            }
        }
    }

    /// `edit_proxied`, then out of the flow's egress, spliced or not.
    #[inline(never)]
    pub(super) fn send_proxied(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        entry: &mut FlowEntry,
        now: u64,
    ) -> Verdict {
        match self.edit_proxied(frame, parsed, entry, now) {
            Some(splice) => self.send_spliced(frame, parsed, entry, splice),
            None => self.send_flow(frame, parsed.l3_offset, parsed.ip_total_len, entry),
        }
    }

    /// Sends a segment `edit_proxied` readied: out of the flow's egress,
    /// the header inserted (or the frame cut short) by the packet I/O.
    #[inline(never)]
    pub(super) fn send_spliced(
        &mut self,
        frame: &mut [u8],
        parsed: &Parsed,
        entry: &FlowEntry,
        Spliced { at, end, header }: Spliced,
    ) -> Verdict {
        let ip_len = end - parsed.l3_offset + header.len();
        let (port, tag) = match self.send(frame, parsed.l3_offset, ip_len, Egress::of(entry)) {
            Verdict::Transmit(port) => (port, TagEdit::Kept),
            Verdict::TransmitPushed { port, tag } => (port, TagEdit::Push(tag)),
            Verdict::TransmitPopped { port } => (port, TagEdit::Pop),
            other => return other,
        };
        let (Ok(at), Ok(end)) = (u16::try_from(at), u16::try_from(end)) else {
            return self.drop_packet(crate::drop_reason::DropReason::FrameTooBig);
        };
        if !header.is_empty() {
            self.stats.proxy_headers += 1;
        }
        Verdict::TransmitSpliced {
            port,
            splice: Splice {
                at,
                end,
                header,
                tag,
            },
        }
    }
}

/// A segment's bytes from `at` to `end` (the end of its IP packet, or `at`
/// itself to cut the frame short there) go after `header`.
pub(super) struct Spliced {
    at: usize,
    end: usize,
    header: ProxyHeader,
}
