//! Full-NAT source ports: which LB-owned (address, port) a client's flow
//! leaves with, and the reverse binding every worker can read when the
//! backend's answer to it arrives.
//!
//! The node's SNAT port range (`switchyard run --snat-ports`) is split into
//! equal, disjoint slices, one per worker: a worker only ever hands out
//! ports of its own slice, so no two workers can give one port to two flows
//! and allocation needs no coordination. Answers cannot be steered to the
//! worker that owns their port (an AF_XDP socket only takes frames of the
//! rx queue it is bound to, and the kernel refuses a redirect to another
//! queue's socket), so the binding lives in a table every worker reads:
//! one row per port of the range, each row written only by the port's
//! owner, read under a sequence lock by the others. A row holds up to
//! `WAYS` bindings of one port, for different SNAT addresses or protocols.
//!
//! A port is free again once its flow is gone from its owner's flow table,
//! in both directions: allocation probes the owner's slice from a cursor
//! and takes the first port whose row has no live binding for the address
//! and protocol, checking liveness against the owner's flow table (as
//! Linux's `nf_nat_l4proto_unique_tuple` checks candidates against
//! conntrack, with a bounded number of attempts). No port is ever handed
//! out twice while its flow lives; a slice with no free port within
//! `MAX_PROBES` candidates refuses the flow, counted per SNAT address.
//!
//! Lock-free and allocation-free after `new`.

use crate::packet::ProxyStream;
use crate::seqlock::Sequence;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bindings one port can hold at once (SNAT addresses times protocols).
pub const WAYS: usize = 4;
/// Ports an allocation looks at before it calls the slice exhausted.
pub const MAX_PROBES: usize = 128;

/// The node-wide SNAT port range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnatPorts {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnatPortsError {
    #[error("SNAT port range {0:?}: expected FIRST-LAST, e.g. 10000-32767")]
    Syntax(String),
    #[error("SNAT port range {first}-{last}: the first port is above the last, or is 0")]
    Empty { first: u16, last: u16 },
    #[error("SNAT port range {first}-{last}: {workers} workers need at least one port each")]
    TooSmall { first: u16, last: u16, workers: u32 },
}

impl std::str::FromStr for SnatPorts {
    type Err = SnatPortsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SnatPortsError::Syntax(text.to_string());
        let (first, last) = text.split_once('-').ok_or_else(syntax)?;
        let first: u16 = first.trim().parse().map_err(|_| syntax())?;
        let last: u16 = last.trim().parse().map_err(|_| syntax())?;
        if first == 0 || first > last {
            return Err(SnatPortsError::Empty { first, last });
        }
        Ok(Self { first, last })
    }
}

impl std::fmt::Display for SnatPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl SnatPorts {
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Whether the range shares a port with `other` (the kernel's ephemeral
    /// range, whose answers the node's own connections need).
    pub fn overlaps(&self, other: RangeInclusive<u16>) -> bool {
        self.first <= *other.end() && *other.start() <= self.last
    }

    /// Worker `worker`'s slice of `workers` equal ones (the last takes the
    /// remainder).
    pub fn slice(&self, worker: u32, workers: u32) -> Result<RangeInclusive<u16>, SnatPortsError> {
        let len = self.len() as u32;
        if workers == 0 || len < workers || worker >= workers {
            return Err(SnatPortsError::TooSmall {
                first: self.first,
                last: self.last,
                workers,
            });
        }
        let share = len / workers;
        let first = u32::from(self.first) + worker * share;
        let last = if worker + 1 == workers {
            u32::from(self.last)
        } else {
            first + share - 1
        };
        Ok(first as u16..=last as u16)
    }
}

/// One flow's SNAT binding: the client's flow to the VIP leaves from
/// `snat`:`port` to `backend`; the backend's answer to `snat`:`port`
/// returns as from the VIP to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub snat: IpAddr,
    pub port: u16,
    pub protocol: u8,
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub backend: (IpAddr, u16),
    /// A TCP flow of a listener with PROXY protocol: where the header sits
    /// in the client's stream, and (as read) whether the backend has
    /// acknowledged it.
    pub proxy: Option<ProxyStream>,
}

/// Words of a way after its sequence and expiry: SNAT address, client,
/// VIP, backend (two each), the ports and protocol, the PROXY header's
/// place.
const WORDS: usize = 10;
/// In a way's last word: the flow has a PROXY header, at the low 32 bits.
const PROXY_PRESENT: u64 = 1 << 32;

/// One binding under a sequence lock (even: stable, odd: being written).
/// Two cache lines: a row of `WAYS` is read whole only when allocating.
#[derive(Default)]
#[repr(align(128))]
struct Way {
    seq: Sequence,
    /// Seconds on the workers' clock after which the binding no longer
    /// translates answers; 0 is an empty way.
    expires_secs: AtomicU32,
    words: [AtomicU64; WORDS],
    /// `PROXY_PRESENT | first_seq` once the backend acknowledged the
    /// flow's PROXY header. Written outside the sequence lock by whichever
    /// worker sees that acknowledgment (a reply reaches any queue), so one
    /// word, compared with the binding's own place: a late write for the
    /// port's previous flow names another sequence number.
    delivered: AtomicU64,
}

#[derive(Clone, Copy)]
struct Stable {
    seq: u32,
    expires_secs: u32,
    words: [u64; WORDS],
    delivered: u64,
}

/// Indices of the tail word (ports, protocol, family) and of the PROXY
/// header's place among a way's words.
const TAIL: usize = 8;
const PROXY: usize = 9;

fn address_words(address: IpAddr) -> [u64; 2] {
    let n = u128::from(match address {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    });
    [(n >> 64) as u64, n as u64]
}

fn address_of(high: u64, low: u64) -> IpAddr {
    Ipv6Addr::from(u128::from(high) << 64 | u128::from(low)).to_canonical()
}

/// IPv4 addresses are held IPv4-mapped; the family bit keeps an IPv6 flow
/// to `::ffff:a.b.c.d` (which `parse` refuses anyway) from aliasing one.
fn tail_word(binding: &Binding) -> u64 {
    u64::from(binding.client.1) << 48
        | u64::from(binding.vip.1) << 32
        | u64::from(binding.backend.1) << 16
        | u64::from(binding.protocol) << 8
        | u64::from(binding.snat.is_ipv6())
}

fn words_of(binding: &Binding) -> [u64; WORDS] {
    let [s0, s1] = address_words(binding.snat);
    let [c0, c1] = address_words(binding.client.0);
    let [v0, v1] = address_words(binding.vip.0);
    let [b0, b1] = address_words(binding.backend.0);
    let proxy = binding
        .proxy
        .map_or(0, |p| PROXY_PRESENT | u64::from(p.first_seq));
    [s0, s1, c0, c1, v0, v1, b0, b1, tail_word(binding), proxy]
}

impl Stable {
    fn is_live(&self, now_secs: u32) -> bool {
        self.expires_secs != 0 && now_secs <= self.expires_secs
    }

    fn is_for(&self, snat: IpAddr, protocol: u8) -> bool {
        let [high, low] = address_words(snat);
        let tail = self.words[TAIL];
        self.expires_secs != 0
            && self.words[0] == high
            && self.words[1] == low
            && (tail >> 8) as u8 == protocol
            && tail & 1 == u64::from(snat.is_ipv6())
    }

    fn binding(&self, port: u16) -> Binding {
        let w = &self.words;
        let tail = w[TAIL];
        let proxy = (w[PROXY] & PROXY_PRESENT != 0).then(|| ProxyStream {
            first_seq: w[PROXY] as u32,
            delivered: self.delivered == w[PROXY],
        });
        Binding {
            snat: address_of(w[0], w[1]),
            port,
            protocol: (tail >> 8) as u8,
            client: (address_of(w[2], w[3]), (tail >> 48) as u16),
            vip: (address_of(w[4], w[5]), (tail >> 32) as u16),
            backend: (address_of(w[6], w[7]), (tail >> 16) as u16),
            proxy,
        }
    }
}

impl Way {
    fn read(&self) -> Option<Stable> {
        self.seq
            .read(|| {
                (
                    self.expires_secs.load(Ordering::Relaxed),
                    std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed)),
                    self.delivered.load(Ordering::Relaxed),
                )
            })
            .map(|(seq, (expires_secs, words, delivered))| Stable {
                seq,
                expires_secs,
                words,
                delivered,
            })
    }
}

/// The bindings of every port of the node's SNAT range, shared by all
/// workers.
pub struct SnatTable {
    ports: SnatPorts,
    ways: Box<[Way]>,
}

impl SnatTable {
    /// Allocates the whole table once: `WAYS` bindings per port of `ports`.
    pub fn new(ports: SnatPorts) -> Self {
        Self {
            ports,
            ways: (0..ports.len() * WAYS).map(|_| Way::default()).collect(),
        }
    }

    pub fn ports(&self) -> SnatPorts {
        self.ports
    }

    fn row(&self, port: u16) -> Option<&[Way]> {
        if !self.ports.contains(port) {
            return None;
        }
        let start = usize::from(port - self.ports.first) * WAYS;
        self.ways.get(start..start + WAYS)
    }

    /// The live binding of `snat`:`port` for `protocol`, if a flow holds it.
    #[inline]
    pub fn get(&self, snat: IpAddr, port: u16, protocol: u8, now_secs: u32) -> Option<Binding> {
        self.row(port)?.iter().find_map(|way| {
            let stable = way.read()?;
            (stable.is_live(now_secs) && stable.is_for(snat, protocol))
                .then(|| stable.binding(port))
        })
    }

    /// Keeps the binding of `snat`:`port` translating answers until
    /// `now_secs + ttl_secs`; false when no such binding is there.
    pub fn refresh(&self, snat: IpAddr, port: u16, protocol: u8, now_secs: u32, ttl: u32) -> bool {
        let Some(row) = self.row(port) else {
            return false;
        };
        let expires = now_secs.saturating_add(ttl).max(1);
        row.iter().any(|way| {
            let Some(stable) = way.read() else {
                return false;
            };
            if !stable.is_for(snat, protocol) || !way.seq.claim(stable.seq) {
                return false;
            }
            way.expires_secs.store(expires, Ordering::Relaxed);
            way.seq.release(stable.seq);
            true
        })
    }

    /// Binds a port of `slice`, from `*cursor` on, to a new flow of
    /// `template` (whose `port` is ignored): the first port whose row has
    /// no binding for the address and protocol that `held` says is still
    /// in use, and a way free for it. Returns the port, or `None` after
    /// `MAX_PROBES` candidates. `held` is asked about bindings of the
    /// caller's own slice only.
    pub fn allocate(
        &self,
        slice: &RangeInclusive<u16>,
        cursor: &mut u16,
        template: &Binding,
        now_secs: u32,
        ttl_secs: u32,
        held: &mut dyn FnMut(&Binding) -> bool,
    ) -> Option<u16> {
        let span = usize::from(slice.end() - slice.start()) + 1;
        for _ in 0..span.min(MAX_PROBES) {
            let port = if slice.contains(cursor) {
                *cursor
            } else {
                *slice.start()
            };
            *cursor = if port == *slice.end() {
                *slice.start()
            } else {
                port + 1
            };
            let row = self.row(port)?;
            if let Some(way) = free_way(row, port, template, held) {
                let binding = Binding { port, ..*template };
                if write(way, &binding, now_secs, ttl_secs) {
                    return Some(port);
                }
            }
        }
        None
    }

    /// Records that the backend acknowledged the PROXY header of the flow
    /// bound to `snat`:`port` whose header sits at `first_seq`; any worker
    /// may, once per flow and worker.
    pub fn header_delivered(&self, snat: IpAddr, port: u16, protocol: u8, first_seq: u32) {
        let Some(row) = self.row(port) else {
            return;
        };
        let place = PROXY_PRESENT | u64::from(first_seq);
        for way in row {
            if way
                .read()
                .is_some_and(|stable| stable.is_for(snat, protocol) && stable.words[PROXY] == place)
            {
                way.delivered.store(place, Ordering::Relaxed);
            }
        }
    }

    /// Empties the binding of `snat`:`port` (the owner gives the port up).
    pub fn clear(&self, snat: IpAddr, port: u16, protocol: u8) {
        let Some(row) = self.row(port) else {
            return;
        };
        for way in row {
            let Some(stable) = way.read() else { continue };
            if stable.is_for(snat, protocol) && way.seq.claim(stable.seq) {
                way.expires_secs.store(0, Ordering::Relaxed);
                way.seq.release(stable.seq);
            }
        }
    }
}

/// The way of `row` a new binding like `template` may take at `port`, with
/// its state when read: none when a held binding already has the port for
/// the same address and protocol.
fn free_way<'r>(
    row: &'r [Way],
    port: u16,
    template: &Binding,
    held: &mut dyn FnMut(&Binding) -> bool,
) -> Option<(&'r Way, u32)> {
    let mut candidate: Option<(&Way, u32)> = None;
    for way in row {
        let stable = way.read()?;
        let reusable = stable.expires_secs == 0 || !held(&stable.binding(port));
        if stable.is_for(template.snat, template.protocol) {
            if !reusable {
                return None;
            }
            candidate = Some((way, stable.seq));
        } else if reusable && candidate.is_none() {
            candidate = Some((way, stable.seq));
        }
    }
    candidate
}

fn write((way, seen): (&Way, u32), binding: &Binding, now_secs: u32, ttl_secs: u32) -> bool {
    if !way.seq.claim(seen) {
        return false;
    }
    for (word, value) in way.words.iter().zip(words_of(binding)) {
        word.store(value, Ordering::Relaxed);
    }
    way.delivered.store(0, Ordering::Relaxed);
    way.expires_secs
        .store(now_secs.saturating_add(ttl_secs).max(1), Ordering::Relaxed);
    way.seq.release(seen);
    true
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SNAT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1));

    fn template(client_port: u16) -> Binding {
        Binding {
            snat: SNAT,
            port: 0,
            protocol: 6,
            client: (Ipv4Addr::new(198, 18, 1, 10).into(), client_port),
            vip: (Ipv4Addr::new(198, 18, 100, 10).into(), 80),
            backend: (Ipv4Addr::new(198, 18, 2, 21).into(), 8080),
            proxy: None,
        }
    }

    fn ports(first: u16, last: u16) -> SnatPorts {
        SnatPorts { first, last }
    }

    #[test]
    fn a_range_parses_and_refuses_nonsense() {
        assert_eq!("10000-32767".parse(), Ok(ports(10000, 32767)));
        assert!(matches!(
            "32767-10000".parse::<SnatPorts>(),
            Err(SnatPortsError::Empty { .. })
        ));
        assert!(matches!(
            "10000".parse::<SnatPorts>(),
            Err(SnatPortsError::Syntax(_))
        ));
        assert!(!ports(10000, 32767).overlaps(32768..=60999));
        assert!(ports(10000, 40000).overlaps(32768..=60999));
    }

    #[test]
    fn slices_are_disjoint_and_cover_the_range() {
        let range = ports(10000, 10010);
        let slices: Vec<_> = (0..3).map(|w| range.slice(w, 3).unwrap()).collect();
        assert_eq!(slices, vec![10000..=10002, 10003..=10005, 10006..=10010]);
        assert!(range.slice(0, 12).is_err());
    }

    #[test]
    fn a_bound_port_translates_until_it_expires() {
        let table = SnatTable::new(ports(10000, 10003));
        let mut cursor = 10000;
        let port = table
            .allocate(
                &(10000..=10003),
                &mut cursor,
                &template(40000),
                100,
                30,
                &mut |_| true,
            )
            .unwrap();
        let got = table.get(SNAT, port, 6, 130).unwrap();
        assert_eq!(
            got,
            Binding {
                port,
                ..template(40000)
            }
        );
        assert_eq!(table.get(SNAT, port, 17, 130), None, "other protocol");
        assert_eq!(table.get(SNAT, port, 6, 131), None, "expired");
        assert!(table.refresh(SNAT, port, 6, 131, 30));
        assert!(table.get(SNAT, port, 6, 161).is_some());
    }

    #[test]
    fn a_held_port_is_never_given_twice_and_a_slice_runs_out() {
        let table = SnatTable::new(ports(10000, 10003));
        let mut cursor = 10000;
        let mut given = Vec::new();
        for client in 0..4 {
            let port = table.allocate(
                &(10000..=10003),
                &mut cursor,
                &template(40000 + client),
                0,
                30,
                &mut |_| true,
            );
            given.push(port.unwrap());
        }
        given.sort();
        assert_eq!(given, vec![10000, 10001, 10002, 10003]);
        let more = table.allocate(
            &(10000..=10003),
            &mut cursor,
            &template(1),
            0,
            30,
            &mut |_| true,
        );
        assert_eq!(more, None, "exhausted");
        // Another protocol, or another address, has ports of its own.
        let udp = Binding {
            protocol: 17,
            ..template(1)
        };
        assert!(table
            .allocate(&(10000..=10003), &mut cursor, &udp, 0, 30, &mut |_| true)
            .is_some());
    }

    #[test]
    fn a_port_whose_flow_is_gone_is_taken_again() {
        let table = SnatTable::new(ports(10000, 10000));
        let mut cursor = 10000;
        let slice = 10000..=10000;
        assert_eq!(
            table.allocate(&slice, &mut cursor, &template(1), 0, 30, &mut |_| true),
            Some(10000)
        );
        let gone = |b: &Binding| b.client.1 != 1;
        let port = table.allocate(&slice, &mut cursor, &template(2), 0, 30, &mut { gone });
        assert_eq!(port, Some(10000));
        assert_eq!(table.get(SNAT, 10000, 6, 0).unwrap().client.1, 2);
    }

    #[test]
    fn ipv6_bindings_round_trip() {
        let table = SnatTable::new(ports(10000, 10001));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let binding = Binding {
            snat: v6("2001:db8:2::1"),
            port: 0,
            protocol: 17,
            client: (v6("2001:db8:1::10"), 5353),
            vip: (v6("2001:db8:100::10"), 53),
            backend: (v6("2001:db8:2::21"), 53),
            proxy: None,
        };
        let mut cursor = 0;
        let port = table
            .allocate(&(10000..=10001), &mut cursor, &binding, 0, 30, &mut |_| {
                true
            })
            .unwrap();
        assert_eq!(
            table.get(binding.snat, port, 17, 0),
            Some(Binding { port, ..binding })
        );
        assert_eq!(table.get(SNAT, port, 17, 0), None);
    }

    #[test]
    fn a_proxy_header_s_delivery_is_one_flow_s_and_cleared_with_the_port() {
        let table = SnatTable::new(ports(10000, 10000));
        let stream = ProxyStream::starting_after(41);
        let proxied = Binding {
            proxy: Some(stream),
            ..template(40000)
        };
        let mut cursor = 0;
        let port = table
            .allocate(&(10000..=10000), &mut cursor, &proxied, 0, 30, &mut |_| {
                true
            })
            .unwrap();
        let read = |table: &SnatTable| table.get(SNAT, port, 6, 0).unwrap().proxy.unwrap();
        assert_eq!(read(&table), stream);
        // Another flow's place (a late answer of the port's previous flow)
        // marks nothing.
        table.header_delivered(SNAT, port, 6, 7);
        assert!(!read(&table).delivered);
        table.header_delivered(SNAT, port, 6, stream.first_seq);
        assert!(read(&table).delivered);
        // The port's next flow starts undelivered.
        let next = Binding {
            proxy: Some(ProxyStream::starting_after(9)),
            ..template(40001)
        };
        assert_eq!(
            table.allocate(&(10000..=10000), &mut cursor, &next, 0, 30, &mut |_| false),
            Some(port)
        );
        assert_eq!(read(&table), ProxyStream::starting_after(9));
    }
}
