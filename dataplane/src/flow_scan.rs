//! Reading a worker's flow table for the control socket without pausing
//! forwarding for a copy of it: a request becomes a [`Job`] the worker
//! advances by at most [`SCAN_BUDGET`] table slots (or lookups) in each gap
//! between batches, walking the table in slot order with a cursor
//! (`FlowTable::scan`), so a gap costs the same whatever the table's size.
//!
//! Filters, the sort key and the limit travel with the request: a worker
//! keeps only the flows that match and, with a limit, only the best `limit`
//! of them in a bounded heap, so `yardctl flows --limit N` never copies a
//! whole table. Each row is one connection as this worker holds it: the
//! client-to-backend entry with this worker's reply entry, or a reply
//! entry whose forward half lives on another worker. Ranking uses what this
//! worker holds; the control socket then merges rows of all workers.
//!
//! Nothing here runs per packet; it allocates (results) between batches.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::net::IpAddr;

use crossbeam::channel::Sender;

use crate::flow::{Direction, FlowEntry, FlowTable};
use crate::packet::FlowKey;

/// Table slots, or lookups, a worker spends on control requests in one gap
/// between batches.
pub const SCAN_BUDGET: usize = 4096;

/// How a scan ranks the flows it keeps when it is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSort {
    /// Most bytes first.
    Bytes,
    /// Most packets first.
    Packets,
    /// Oldest first.
    Age,
}

/// One tracked 5-tuple as the control thread sees it.
#[derive(Debug, Clone, Copy)]
pub struct FlowRecord {
    pub queue: u32,
    pub key: FlowKey,
    pub entry: FlowEntry,
}

/// One client-to-backend entry of a worker's flow table, as active-flow
/// counts need it: a few bytes where a whole `FlowRecord` is a hundred, so
/// the workers can hand over every entry between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveEntry {
    /// As the client's packets arrive: client to VIP.
    pub key: FlowKey,
    /// The backend endpoint the flow is translated to.
    pub backend: (IpAddr, u16),
    /// TCP FIN or RST seen on this entry.
    pub closing: bool,
}

impl ActiveEntry {
    /// The entry if it is a client-to-backend one; a reply entry is the
    /// other half of a connection already counted by its forward entry.
    pub fn of(key: &FlowKey, entry: &FlowEntry) -> Option<Self> {
        (entry.direction == Direction::ToBackend).then_some(Self {
            key: *key,
            backend: entry.backend_of(key),
            closing: entry.closing,
        })
    }
}

/// Which flows a scan keeps; every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSelect {
    /// `(protocol, address, port)` of the VIPs; any VIP when `None`.
    pub vips: Option<Vec<(u8, IpAddr, u16)>>,
    /// Client address under `(network, prefix length)`, of its family.
    pub client: Option<(IpAddr, u8)>,
    /// Backend `(address, port)`.
    pub backend: Option<(IpAddr, u16)>,
}

impl FlowSelect {
    fn matches(&self, c: &Connection) -> bool {
        if let Some(vips) = &self.vips {
            if !vips.contains(&(c.protocol, c.vip.0, c.vip.1)) {
                return false;
            }
        }
        if let Some((network, prefix)) = self.client {
            if !in_prefix(c.client.0, network, prefix) {
                return false;
            }
        }
        self.backend.is_none_or(|b| b == c.backend)
    }
}

/// Whether `address` lies in `network/prefix`; never across families.
fn in_prefix(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let under = |a: u128, n: u128, bits: u32| {
        let mask = u128::MAX
            .checked_shl(bits - u32::from(prefix).min(bits))
            .unwrap_or(0);
        a & mask == n & mask
    };
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            under(
                u128::from(u32::from(a)) << 96,
                u128::from(u32::from(n)) << 96,
                128,
            ) && prefix <= 32
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => under(a.into(), n.into(), 128),
        _ => false,
    }
}

/// What a `yardctl flows` request asks a worker for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowScan {
    pub select: FlowSelect,
    pub sort: Option<FlowSort>,
    pub limit: Option<usize>,
}

/// One connection through the NAT, as either of its entries shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub protocol: u8,
    pub client: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub backend: (IpAddr, u16),
}

impl Connection {
    pub fn of(key: &FlowKey, entry: &FlowEntry) -> Self {
        let r = &entry.rewrite;
        match entry.direction {
            Direction::ToBackend => Self {
                protocol: key.protocol,
                client: (key.src, key.src_port),
                vip: (key.dst, key.dst_port),
                backend: entry.backend_of(key),
            },
            Direction::ToClient => Self {
                protocol: key.protocol,
                client: (key.dst, key.dst_port),
                vip: (r.ip_src, r.src_port),
                backend: (key.src, key.src_port),
            },
        }
    }

    /// The client's packets: client to VIP.
    pub fn forward_key(&self) -> FlowKey {
        FlowKey {
            src: self.client.0,
            dst: self.vip.0,
            src_port: self.client.1,
            dst_port: self.vip.1,
            protocol: self.protocol,
        }
    }

    /// The backend's replies: backend to client (two-arm NAT keeps the
    /// client's address).
    pub fn reply_key(&self) -> FlowKey {
        FlowKey {
            src: self.backend.0,
            dst: self.client.0,
            src_port: self.backend.1,
            dst_port: self.client.1,
            protocol: self.protocol,
        }
    }
}

/// A connection's entries on one worker, ranked for a sorted, limited scan.
#[derive(Debug, Clone, Copy)]
struct Row {
    rank: u64,
    /// Scan order; breaks ties so the earliest found wins.
    seq: u64,
    first: FlowRecord,
    second: Option<FlowRecord>,
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Row {}
impl PartialOrd for Row {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Row {
    /// Better rows are greater.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.rank, Reverse(self.seq)).cmp(&(other.rank, Reverse(other.seq)))
    }
}

fn rank(sort: FlowSort, first: &FlowRecord, second: Option<&FlowRecord>) -> u64 {
    let entries = std::iter::once(first).chain(second).map(|r| &r.entry);
    match sort {
        FlowSort::Bytes => entries.map(|e| e.bytes).sum(),
        FlowSort::Packets => entries.map(|e| e.packets).sum(),
        // Oldest first: the earliest creation ranks highest.
        FlowSort::Age => u64::MAX - entries.map(|e| e.created_ns).min().unwrap_or(u64::MAX),
    }
}

#[derive(Debug)]
enum Collected {
    All(Vec<FlowRecord>),
    /// Unsorted with a limit: the first rows found; the walk stops once
    /// `left` is zero.
    First {
        records: Vec<FlowRecord>,
        left: usize,
    },
    /// The best `limit` rows seen so far, worst on top.
    Best {
        heap: BinaryHeap<Reverse<Row>>,
        limit: usize,
        sort: FlowSort,
    },
}

impl Collected {
    fn new(scan: &FlowScan, table_capacity: usize) -> Self {
        match (scan.limit, scan.sort) {
            (None, _) => Collected::All(Vec::new()),
            (Some(limit), None) => Collected::First {
                records: Vec::new(),
                left: limit,
            },
            (Some(limit), Some(sort)) => Collected::Best {
                // A table never holds more rows than flows.
                heap: BinaryHeap::with_capacity(limit.min(table_capacity)),
                limit,
                sort,
            },
        }
    }

    fn full(&self) -> bool {
        matches!(self, Collected::First { left: 0, .. })
            || matches!(self, Collected::Best { limit: 0, .. })
    }

    fn push(&mut self, seq: u64, first: FlowRecord, second: Option<FlowRecord>) {
        match self {
            Collected::All(records) => records.extend(std::iter::once(first).chain(second)),
            Collected::First { records, left } => {
                if *left > 0 {
                    *left -= 1;
                    records.extend(std::iter::once(first).chain(second));
                }
            }
            Collected::Best { heap, limit, sort } => {
                if *limit == 0 {
                    return;
                }
                let row = Row {
                    rank: rank(*sort, &first, second.as_ref()),
                    seq,
                    first,
                    second,
                };
                if heap.len() < *limit {
                    heap.push(Reverse(row));
                } else if let Some(mut worst) = heap.peek_mut() {
                    if row > worst.0 {
                        *worst = Reverse(row);
                    }
                }
            }
        }
    }

    fn into_records(self) -> Vec<FlowRecord> {
        match self {
            Collected::All(records) | Collected::First { records, .. } => records,
            Collected::Best { heap, .. } => heap
                .into_iter()
                .flat_map(|Reverse(row)| std::iter::once(row.first).chain(row.second))
                .collect(),
        }
    }
}

/// A control request in progress on one worker.
#[derive(Debug)]
pub struct Job(JobKind);

#[derive(Debug)]
enum JobKind {
    Flows(FlowsJob),
    Active(ActiveJob),
    Peek(PeekJob),
}

impl Job {
    /// The connections matching `scan`.
    pub fn flows(scan: FlowScan, reply: Sender<Vec<FlowRecord>>) -> Self {
        Job(JobKind::Flows(FlowsJob {
            scan,
            cursor: 0,
            seq: 0,
            collected: None,
            reply,
        }))
    }

    /// Every client-to-backend entry, for active-flow counts.
    pub fn active(reply: Sender<Vec<ActiveEntry>>) -> Self {
        Job(JobKind::Active(ActiveJob {
            cursor: 0,
            found: Vec::new(),
            reply,
        }))
    }

    /// The entries for `keys` this worker holds.
    pub fn peek(keys: Vec<FlowKey>, reply: Sender<Vec<FlowRecord>>) -> Self {
        Job(JobKind::Peek(PeekJob {
            keys,
            at: 0,
            found: Vec::new(),
            reply,
        }))
    }

    /// Advances the job by at most `budget` slots or lookups; true once it
    /// has sent its answer (a requester that gave up is not an error).
    pub fn step(&mut self, table: &FlowTable, queue: u32, now_ns: u64, budget: usize) -> bool {
        match &mut self.0 {
            JobKind::Flows(job) => job.step(table, queue, now_ns, budget),
            JobKind::Active(job) => job.step(table, now_ns, budget),
            JobKind::Peek(job) => job.step(table, queue, now_ns, budget),
        }
    }
}

#[derive(Debug)]
struct FlowsJob {
    scan: FlowScan,
    cursor: usize,
    seq: u64,
    collected: Option<Collected>,
    reply: Sender<Vec<FlowRecord>>,
}

impl FlowsJob {
    fn step(&mut self, table: &FlowTable, queue: u32, now_ns: u64, budget: usize) -> bool {
        let Self {
            scan,
            cursor,
            seq,
            collected,
            reply,
        } = self;
        let collected = collected.get_or_insert_with(|| Collected::new(scan, table.capacity()));
        let next = if collected.full() {
            None
        } else {
            table.scan(*cursor, budget, now_ns, |key, entry| {
                let connection = Connection::of(key, entry);
                if !scan.select.matches(&connection) {
                    return;
                }
                let Some(second) = other_half(table, &connection, entry, queue, now_ns) else {
                    return;
                };
                *seq += 1;
                collected.push(*seq, record(queue, key, entry), second);
            })
        };
        match next {
            Some(at) if !collected.full() => {
                *cursor = at;
                false
            }
            _ => {
                let records =
                    std::mem::replace(collected, Collected::All(Vec::new())).into_records();
                let _ = reply.send(records);
                true
            }
        }
    }
}

/// The second entry of `entry`'s row: a forward entry's reply entry where
/// this worker holds it. `None` for a reply entry whose forward entry this
/// worker holds, as that row shows it already.
fn other_half(
    table: &FlowTable,
    connection: &Connection,
    entry: &FlowEntry,
    queue: u32,
    now_ns: u64,
) -> Option<Option<FlowRecord>> {
    match entry.direction {
        Direction::ToBackend => {
            let reply_key = connection.reply_key();
            Some(
                table
                    .peek(&reply_key, now_ns)
                    .filter(|e| e.direction == Direction::ToClient)
                    .map(|e| record(queue, &reply_key, e)),
            )
        }
        Direction::ToClient => {
            let held_with_forward =
                table
                    .peek(&connection.forward_key(), now_ns)
                    .is_some_and(|e| {
                        e.direction == Direction::ToBackend
                            && e.backend_of(&connection.forward_key()) == connection.backend
                    });
            (!held_with_forward).then_some(None)
        }
    }
}

fn record(queue: u32, key: &FlowKey, entry: &FlowEntry) -> FlowRecord {
    FlowRecord {
        queue,
        key: *key,
        entry: *entry,
    }
}

#[derive(Debug)]
struct ActiveJob {
    cursor: usize,
    found: Vec<ActiveEntry>,
    reply: Sender<Vec<ActiveEntry>>,
}

impl ActiveJob {
    fn step(&mut self, table: &FlowTable, now_ns: u64, budget: usize) -> bool {
        let found = &mut self.found;
        match table.scan(self.cursor, budget, now_ns, |key, entry| {
            found.extend(ActiveEntry::of(key, entry));
        }) {
            Some(at) => {
                self.cursor = at;
                false
            }
            None => {
                let _ = self.reply.send(std::mem::take(&mut self.found));
                true
            }
        }
    }
}

#[derive(Debug)]
struct PeekJob {
    keys: Vec<FlowKey>,
    at: usize,
    found: Vec<FlowRecord>,
    reply: Sender<Vec<FlowRecord>>,
}

impl PeekJob {
    fn step(&mut self, table: &FlowTable, queue: u32, now_ns: u64, budget: usize) -> bool {
        let end = self.at.saturating_add(budget).min(self.keys.len());
        for key in &self.keys[self.at..end] {
            if let Some(entry) = table.peek(key, now_ns) {
                self.found.push(record(queue, key, entry));
            }
        }
        self.at = end;
        if end < self.keys.len() {
            return false;
        }
        let _ = self.reply.send(std::mem::take(&mut self.found));
        true
    }
}

#[cfg(test)]
mod tests {
    use crossbeam::channel;

    use super::*;
    use crate::flow::FlowTimeouts;
    use crate::packet::Rewrite;

    use std::net::Ipv4Addr;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10));
    const BE1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 21));
    const BE2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 22));

    fn client(n: u16) -> IpAddr {
        Ipv4Addr::new(198, 18, 1, (n % 250) as u8 + 1).into()
    }

    fn connection(n: u16, backend: IpAddr) -> Connection {
        Connection {
            protocol: 6,
            client: (client(n), 40000 + n),
            vip: (VIP, 80),
            backend: (backend, 8080),
        }
    }

    fn entry(direction: Direction, c: &Connection, bytes: u64, created: u64) -> FlowEntry {
        let (ip_src, src_port, ip_dst, dst_port) = match direction {
            Direction::ToBackend => (c.client.0, c.client.1, c.backend.0, c.backend.1),
            Direction::ToClient => (c.vip.0, c.vip.1, c.client.0, c.client.1),
        };
        FlowEntry {
            rewrite: Rewrite {
                eth_src: [0; 6],
                eth_dst: [0; 6],
                ip_src,
                ip_dst,
                src_port,
                dst_port,
            },
            egress_port: 0,
            egress_vlan: crate::neighbor::PackedVlan::NONE,
            egress_mtu: 0,
            direction,
            tunnel: crate::packet::Tunnel::None,
            listener: 0,
            backend: 0,
            generation: 1,
            l2_version: 0,
            created_ns: created,
            last_seen_ns: created,
            packets: bytes / 100,
            bytes,
            syn_only: false,
            closing: false,
            cached: Default::default(),
            cached_at: 0,
            proxy: None,
        }
    }

    /// `n` connections to be1 (odd) and be2 (even) with both halves, the
    /// n-th moving `100 * n` bytes each way, created at time `1000 - n`.
    fn table(n: u16) -> FlowTable {
        let mut table = FlowTable::new(4 * usize::from(n), FlowTimeouts::default());
        for i in 1..=n {
            let c = connection(i, if i % 2 == 1 { BE1 } else { BE2 });
            let bytes = 100 * u64::from(i);
            let created = 1000 - u64::from(i);
            table.insert(
                c.forward_key(),
                entry(Direction::ToBackend, &c, bytes, created),
            );
            table.insert(
                c.reply_key(),
                entry(Direction::ToClient, &c, bytes, created),
            );
        }
        table
    }

    /// Runs a job to the end; returns its answer and the steps it took.
    fn run<T>(mut job: Job, answer: channel::Receiver<T>, table: &FlowTable) -> (T, usize) {
        let mut steps = 1;
        while !job.step(table, 0, 1000, 8) {
            steps += 1;
            assert!(answer.is_empty(), "answered before done");
        }
        (answer.try_recv().expect("answered when done"), steps)
    }

    fn flows(scan: FlowScan, table: &FlowTable) -> (Vec<FlowRecord>, usize) {
        let (reply, answer) = channel::bounded(1);
        run(Job::flows(scan, reply), answer, table)
    }

    fn clients(records: &[FlowRecord]) -> Vec<u16> {
        let mut ports: Vec<u16> = records
            .iter()
            .filter(|r| r.entry.direction == Direction::ToBackend)
            .map(|r| r.key.src_port - 40000)
            .collect();
        ports.sort();
        ports
    }

    #[test]
    fn an_unlimited_scan_returns_both_halves_of_every_connection_over_several_gaps() {
        let table = table(20);
        let (records, steps) = flows(FlowScan::default(), &table);
        assert_eq!(records.len(), 40);
        assert_eq!(clients(&records), (1..=20).collect::<Vec<_>>());
        assert_eq!(steps, 5, "40 slots at 8 a gap");
    }

    #[test]
    fn a_sorted_limited_scan_keeps_only_the_best_rows_with_their_reply_halves() {
        let table = table(20);
        let top = |sort| {
            flows(
                FlowScan {
                    sort: Some(sort),
                    limit: Some(3),
                    ..FlowScan::default()
                },
                &table,
            )
            .0
        };
        let bytes = top(FlowSort::Bytes);
        assert_eq!(bytes.len(), 6, "three connections, both halves each");
        assert_eq!(clients(&bytes), [18, 19, 20]);
        assert_eq!(clients(&top(FlowSort::Packets)), [18, 19, 20]);
        assert_eq!(
            clients(&top(FlowSort::Age)),
            [18, 19, 20],
            "created earliest"
        );
    }

    #[test]
    fn an_unsorted_limited_scan_stops_walking_once_it_has_enough() {
        let table = table(20);
        let (records, steps) = flows(
            FlowScan {
                limit: Some(2),
                ..FlowScan::default()
            },
            &table,
        );
        assert_eq!(clients(&records).len(), 2);
        assert_eq!(steps, 1, "the first 8 slots hold two rows: no further gap");
        let (none, _) = flows(
            FlowScan {
                limit: Some(0),
                sort: Some(FlowSort::Bytes),
                ..FlowScan::default()
            },
            &table,
        );
        assert!(none.is_empty());
    }

    #[test]
    fn filters_apply_to_the_connection_whichever_half_is_held() {
        let table = table(20);
        let only = |select| {
            clients(
                &flows(
                    FlowScan {
                        select,
                        ..FlowScan::default()
                    },
                    &table,
                )
                .0,
            )
        };
        let be2 = only(FlowSelect {
            backend: Some((BE2, 8080)),
            ..FlowSelect::default()
        });
        assert_eq!(be2, (2..=20).step_by(2).collect::<Vec<_>>());
        let one_client = only(FlowSelect {
            client: Some((client(7), 32)),
            ..FlowSelect::default()
        });
        assert_eq!(one_client, [7]);
        assert!(only(FlowSelect {
            vips: Some(vec![(17, VIP, 80)]),
            ..FlowSelect::default()
        })
        .is_empty());
        assert!(
            only(FlowSelect {
                client: Some(("2001:db8::".parse().unwrap(), 0)),
                ..FlowSelect::default()
            })
            .is_empty(),
            "an IPv6 network holds no IPv4 client, even /0"
        );
    }

    #[test]
    fn a_reply_whose_forward_half_is_elsewhere_is_a_row_of_its_own() {
        let mut table = FlowTable::new(8, FlowTimeouts::default());
        let c = connection(1, BE1);
        table.insert(c.reply_key(), entry(Direction::ToClient, &c, 100, 1));
        let (records, _) = flows(FlowScan::default(), &table);
        assert_eq!(records.len(), 1);
        assert_eq!(Connection::of(&records[0].key, &records[0].entry), c);
    }

    #[test]
    fn active_and_peek_jobs_answer_in_budgeted_steps() {
        let table = table(20);
        let (reply, answer) = channel::bounded(1);
        let (active, steps) = run(Job::active(reply), answer, &table);
        assert_eq!(active.len(), 20, "forward entries only");
        assert_eq!(steps, 5);
        let keys: Vec<FlowKey> = (1..=10)
            .map(|i| connection(i, if i % 2 == 1 { BE1 } else { BE2 }).reply_key())
            .chain([connection(99, BE1).forward_key()])
            .collect();
        let (reply, answer) = channel::bounded(1);
        let (found, steps) = run(Job::peek(keys, reply), answer, &table);
        assert_eq!(found.len(), 10, "the unknown key is not found");
        assert_eq!(steps, 2);
    }
}
