//! The steering program's counters as seen from userspace: the reasons a
//! frame was steered or passed (`enum steer_counter` in `src/bpf/consts.h`)
//! and their totals over all CPUs. This module only names and sums them; the
//! program alone increments them.

use std::fmt;

/// Why the steering program steered or passed a frame.
///
/// Must match `enum steer_counter` in xdp/src/bpf/consts.h: same names, same
/// order (a test compares them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum SteerCounter {
    /// Destination (addr, port, protocol) is a VIP listener: steered.
    SteerVip = 0,
    /// Source is a backend endpoint, the reply leg of a NAT'd flow: steered.
    SteerReply = 1,
    /// IPv4 or IPv6, but neither a VIP nor a backend reply nor anything
    /// else the workers take: passed.
    PassNotService = 2,
    /// Neither IPv4 nor IPv6 (ARP, double-tagged VLAN, ...): passed.
    PassNotIpv4 = 3,
    /// A fragment neither to a VIP address nor from a backend: passed.
    PassFragment = 4,
    /// Backend reply addressed to one of the node's own addresses: passed.
    PassLocal = 5,
    /// Steerable, but no AF_XDP socket is registered for the rx queue: passed.
    NoSocket = 6,
    /// Truncated or malformed header: passed.
    ParseError = 7,
    /// Flow cache hit, rewritten and sent back out of its port (`XDP_TX`).
    FastTx = 8,
    /// Flow cache hit, rewritten and redirected out of another port.
    FastRedirect = 9,
    /// Cache entry of its listener's older config, or of an older L2
    /// epoch: slow path.
    FastStale = 10,
    /// Cache hit on a TCP SYN, FIN or RST, which the workers must see.
    FastTcpControl = 11,
    /// Cache hit on a frame whose TCP/UDP checksum the sender left partial
    /// (tx checksum offload through a veth), which only a worker can
    /// complete: slow path.
    FastPartialChecksum = 12,
    /// Cache hit whose egress interface would drop frames sent by XDP (a
    /// veth whose peer runs no NAPI), an entry installed before that was
    /// known: slow path.
    FastEgressClosed = 13,
    /// ICMP or ICMPv6 to a VIP address (echo requests, errors; not
    /// Neighbor Discovery): steered.
    SteerVipIcmp = 14,
    /// A fragment (IPv4 MF or offset set, IPv6 Fragment header) to a VIP
    /// address, or from a backend address to none of the node's: steered.
    SteerFragment = 15,
    /// To a VIP address but no listener's, ICMP or fragment: another
    /// protocol, or an IPv6 extension-header chain past the bound: steered
    /// for the workers to drop.
    SteerVipAddr = 16,
    /// ICMP error quoting a packet to a backend endpoint, to none of the
    /// node's addresses: steered.
    SteerIcmpReply = 17,
    /// To a VIP listener from a source its source ranges do not admit:
    /// dropped (also counted per listener).
    DropSourceDenied = 18,
}

impl SteerCounter {
    /// Every counter, in index order.
    pub const ALL: [SteerCounter; 19] = [
        SteerCounter::SteerVip,
        SteerCounter::SteerReply,
        SteerCounter::PassNotService,
        SteerCounter::PassNotIpv4,
        SteerCounter::PassFragment,
        SteerCounter::PassLocal,
        SteerCounter::NoSocket,
        SteerCounter::ParseError,
        SteerCounter::FastTx,
        SteerCounter::FastRedirect,
        SteerCounter::FastStale,
        SteerCounter::FastTcpControl,
        SteerCounter::FastPartialChecksum,
        SteerCounter::FastEgressClosed,
        SteerCounter::SteerVipIcmp,
        SteerCounter::SteerFragment,
        SteerCounter::SteerVipAddr,
        SteerCounter::SteerIcmpReply,
        SteerCounter::DropSourceDenied,
    ];

    /// Index in the `counters` map.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The C enumerator's name, lowercase: the metric name.
    pub const fn name(self) -> &'static str {
        match self {
            SteerCounter::SteerVip => "steer_vip",
            SteerCounter::SteerReply => "steer_reply",
            SteerCounter::PassNotService => "pass_not_service",
            SteerCounter::PassNotIpv4 => "pass_not_ipv4",
            SteerCounter::PassFragment => "pass_fragment",
            SteerCounter::PassLocal => "pass_local",
            SteerCounter::NoSocket => "no_socket",
            SteerCounter::ParseError => "parse_error",
            SteerCounter::FastTx => "fast_tx",
            SteerCounter::FastRedirect => "fast_redirect",
            SteerCounter::FastStale => "fast_stale",
            SteerCounter::FastTcpControl => "fast_tcp_control",
            SteerCounter::FastPartialChecksum => "fast_partial_checksum",
            SteerCounter::FastEgressClosed => "fast_egress_closed",
            SteerCounter::SteerVipIcmp => "steer_vip_icmp",
            SteerCounter::SteerFragment => "steer_fragment",
            SteerCounter::SteerVipAddr => "steer_vip_addr",
            SteerCounter::SteerIcmpReply => "steer_icmp_reply",
            SteerCounter::DropSourceDenied => "drop_source_denied",
        }
    }
}

impl fmt::Display for SteerCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counter totals over all CPUs, one field per [`SteerCounter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerCounters {
    /// See [`SteerCounter::SteerVip`].
    pub steer_vip: u64,
    /// See [`SteerCounter::SteerReply`].
    pub steer_reply: u64,
    /// See [`SteerCounter::PassNotService`].
    pub pass_not_service: u64,
    /// See [`SteerCounter::PassNotIpv4`].
    pub pass_not_ipv4: u64,
    /// See [`SteerCounter::PassFragment`].
    pub pass_fragment: u64,
    /// See [`SteerCounter::PassLocal`].
    pub pass_local: u64,
    /// See [`SteerCounter::NoSocket`].
    pub no_socket: u64,
    /// See [`SteerCounter::ParseError`].
    pub parse_error: u64,
    /// See [`SteerCounter::FastTx`].
    pub fast_tx: u64,
    /// See [`SteerCounter::FastRedirect`].
    pub fast_redirect: u64,
    /// See [`SteerCounter::FastStale`].
    pub fast_stale: u64,
    /// See [`SteerCounter::FastTcpControl`].
    pub fast_tcp_control: u64,
    /// See [`SteerCounter::FastPartialChecksum`].
    pub fast_partial_checksum: u64,
    /// See [`SteerCounter::FastEgressClosed`].
    pub fast_egress_closed: u64,
    /// See [`SteerCounter::SteerVipIcmp`].
    pub steer_vip_icmp: u64,
    /// See [`SteerCounter::SteerFragment`].
    pub steer_fragment: u64,
    /// See [`SteerCounter::SteerVipAddr`].
    pub steer_vip_addr: u64,
    /// See [`SteerCounter::SteerIcmpReply`].
    pub steer_icmp_reply: u64,
    /// See [`SteerCounter::DropSourceDenied`].
    pub drop_source_denied: u64,
}

impl SteerCounters {
    /// The total of one counter.
    pub fn get(&self, counter: SteerCounter) -> u64 {
        *self.field(counter)
    }

    /// (counter, total) pairs in index order.
    pub fn iter(&self) -> impl Iterator<Item = (SteerCounter, u64)> + '_ {
        SteerCounter::ALL.into_iter().map(|c| (c, self.get(c)))
    }

    pub(crate) fn field_mut(&mut self, counter: SteerCounter) -> &mut u64 {
        match counter {
            SteerCounter::SteerVip => &mut self.steer_vip,
            SteerCounter::SteerReply => &mut self.steer_reply,
            SteerCounter::PassNotService => &mut self.pass_not_service,
            SteerCounter::PassNotIpv4 => &mut self.pass_not_ipv4,
            SteerCounter::PassFragment => &mut self.pass_fragment,
            SteerCounter::PassLocal => &mut self.pass_local,
            SteerCounter::NoSocket => &mut self.no_socket,
            SteerCounter::ParseError => &mut self.parse_error,
            SteerCounter::FastTx => &mut self.fast_tx,
            SteerCounter::FastRedirect => &mut self.fast_redirect,
            SteerCounter::FastStale => &mut self.fast_stale,
            SteerCounter::FastTcpControl => &mut self.fast_tcp_control,
            SteerCounter::FastPartialChecksum => &mut self.fast_partial_checksum,
            SteerCounter::FastEgressClosed => &mut self.fast_egress_closed,
            SteerCounter::SteerVipIcmp => &mut self.steer_vip_icmp,
            SteerCounter::SteerFragment => &mut self.steer_fragment,
            SteerCounter::SteerVipAddr => &mut self.steer_vip_addr,
            SteerCounter::SteerIcmpReply => &mut self.steer_icmp_reply,
            SteerCounter::DropSourceDenied => &mut self.drop_source_denied,
        }
    }

    fn field(&self, counter: SteerCounter) -> &u64 {
        match counter {
            SteerCounter::SteerVip => &self.steer_vip,
            SteerCounter::SteerReply => &self.steer_reply,
            SteerCounter::PassNotService => &self.pass_not_service,
            SteerCounter::PassNotIpv4 => &self.pass_not_ipv4,
            SteerCounter::PassFragment => &self.pass_fragment,
            SteerCounter::PassLocal => &self.pass_local,
            SteerCounter::NoSocket => &self.no_socket,
            SteerCounter::ParseError => &self.parse_error,
            SteerCounter::FastTx => &self.fast_tx,
            SteerCounter::FastRedirect => &self.fast_redirect,
            SteerCounter::FastStale => &self.fast_stale,
            SteerCounter::FastTcpControl => &self.fast_tcp_control,
            SteerCounter::FastPartialChecksum => &self.fast_partial_checksum,
            SteerCounter::FastEgressClosed => &self.fast_egress_closed,
            SteerCounter::SteerVipIcmp => &self.steer_vip_icmp,
            SteerCounter::SteerFragment => &self.steer_fragment,
            SteerCounter::SteerVipAddr => &self.steer_vip_addr,
            SteerCounter::SteerIcmpReply => &self.steer_icmp_reply,
            SteerCounter::DropSourceDenied => &self.drop_source_denied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSTS_H: &str = include_str!("bpf/consts.h");

    /// Enumerator names of `enum steer_counter`, in declaration order.
    fn c_enumerators() -> Vec<String> {
        let start = CONSTS_H
            .find("enum steer_counter {")
            .expect("consts.h declares enum steer_counter");
        let body = &CONSTS_H[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            .map(|line| line.split("/*").next().unwrap().trim())
            .filter(|line| !line.is_empty())
            .map(|line| {
                assert!(
                    !line.contains('='),
                    "steer_counter enumerators must be implicit: {line}"
                );
                line.trim_end_matches(',').to_owned()
            })
            .collect()
    }

    #[test]
    fn steer_counter_matches_c_enum() {
        let c = c_enumerators();
        let rust: Vec<String> = SteerCounter::ALL
            .iter()
            .map(|counter| counter.name().to_uppercase())
            .chain(["COUNTER_MAX".to_owned()])
            .collect();
        assert_eq!(c, rust);
    }

    #[test]
    fn steer_counter_indexes_are_positions() {
        for (position, counter) in SteerCounter::ALL.iter().enumerate() {
            assert_eq!(counter.index() as usize, position);
        }
    }

    #[test]
    fn counters_fields_are_distinct() {
        let mut counters = SteerCounters::default();
        for (n, counter) in SteerCounter::ALL.into_iter().enumerate() {
            *counters.field_mut(counter) = n as u64 + 1;
        }
        let totals: Vec<u64> = counters.iter().map(|(_, total)| total).collect();
        assert_eq!(
            totals,
            (1..=SteerCounter::ALL.len() as u64).collect::<Vec<u64>>()
        );
    }
}
