//! `yard-flows`: the worker's flow table (`switchyard_dataplane::flow`)
//! against a `std::collections::HashMap<FlowKey, FlowEntry>` measured in the
//! same run.
//!
//! - Memory per tracked flow: the static layout (key + entry + LRU links +
//!   index cells) and the resident-set growth, read from /proc/self/statm,
//!   of building a 1M-capacity table and filling it. Goal: <= 128 bytes.
//! - ns/op for insert (into an empty table of that capacity), lookup hits
//!   (random order) and, for the flow table, insert into a full table
//!   (each one evicts), at 64, 64k and 1M flows.

use std::collections::HashMap;
use std::hint::black_box;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use switchyard_dataplane::flow::{Direction, FlowEntry, FlowTable, FlowTimeouts};
use switchyard_dataplane::packet::{FlowKey, Rewrite};
use switchyard_perf::summary::Summary;

const GOAL_BYTES: f64 = switchyard_perf::goals::FLOW_TABLE_BYTES_PER_FLOW;
const MILLION: usize = 1 << 20;
/// Lookups timed per size, so small tables are measured long enough.
const LOOKUPS: usize = 4 << 20;
const RUNS: usize = 5;

fn key(i: usize) -> FlowKey {
    FlowKey {
        src: Ipv4Addr::from(0x0a00_0000 + (i / 60_000) as u32).into(),
        dst: Ipv4Addr::new(192, 0, 2, 10).into(),
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 443,
        protocol: 6,
    }
}

fn entry(i: usize) -> FlowEntry {
    FlowEntry {
        rewrite: Rewrite {
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            ip_src: Ipv4Addr::new(192, 0, 2, 10).into(),
            ip_dst: Ipv4Addr::new(198, 18, 0, 1).into(),
            src_port: 1024 + (i % 60_000) as u16,
            dst_port: 8080,
        },
        egress_port: 0,
        egress_vlan: switchyard_dataplane::neighbor::PackedVlan::NONE,
        egress_mtu: 0,
        direction: Direction::ToBackend,
        tunnel: switchyard_dataplane::packet::Tunnel::None,
        listener: 0,
        backend: (i % 7) as u32,
        generation: 1,
        l2_version: 1,
        created_ns: 1,
        last_seen_ns: 1,
        packets: 2,
        bytes: 120,
        syn_only: false,
        closing: false,
        cached: Default::default(),
        cached_at: 0,
        proxy: None,
    }
}

/// Resident bytes of this process.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident field");
    pages * page_size()
}

fn page_size() -> u64 {
    // AT_PAGESZ from the aux vector, without a libc dependency.
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|aux| {
            aux.chunks_exact(16).find_map(|pair| {
                let (k, v) = pair.split_at(8);
                (u64::from_ne_bytes(k.try_into().ok()?) == 6)
                    .then(|| u64::from_ne_bytes(v.try_into().unwrap()))
            })
        })
        .unwrap_or(4096)
}

/// A permutation of 0..n, from a fixed xorshift so runs compare.
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    t.sort_unstable();
    t[RUNS / 2]
}

fn ns(d: Duration, ops: usize) -> f64 {
    d.as_secs_f64() * 1e9 / ops as f64
}

fn memory(summary: &mut Summary) {
    let n = MILLION;
    let index = 2 * n.next_power_of_two() * size_of::<u32>();
    // Key, entry, LRU links, live-flow tally and list number.
    let slot = size_of::<(FlowKey, FlowEntry, u32, u32, u32, u8)>();
    let static_per_flow = slot as f64 + index as f64 / n as f64;
    println!(
        "layout: FlowKey {} B + FlowEntry {} B + LRU links 8 B + tally and list 5 B = slot {} B; index {:.1} B/flow (2 u32 cells per slot at capacity 2^20)",
        size_of::<FlowKey>(),
        size_of::<FlowEntry>(),
        slot,
        index as f64 / n as f64
    );
    println!(
        "static per flow: {static_per_flow:.1} B (goal <= {GOAL_BYTES} B) {}",
        if static_per_flow <= GOAL_BYTES {
            "OK"
        } else {
            "OVER"
        }
    );

    let keys: Vec<FlowKey> = (0..n).map(key).collect();
    let before = rss_bytes();
    let mut table = FlowTable::new(n, FlowTimeouts::default());
    let built = rss_bytes();
    for (i, k) in keys.iter().enumerate() {
        table.insert(*k, entry(i));
    }
    let filled = rss_bytes();
    assert_eq!(table.len(), n);
    let per_flow = (filled - before) as f64 / n as f64;
    summary.record("flow_table_bytes_per_flow_layout", static_per_flow);
    summary.record("flow_table_bytes_per_flow_rss", per_flow);
    println!(
        "flow table, 1M capacity: RSS +{:.1} MiB at new, +{:.1} MiB filled = {per_flow:.2} B/flow (goal <= {GOAL_BYTES} B) {}",
        (built - before) as f64 / (1 << 20) as f64,
        (filled - before) as f64 / (1 << 20) as f64,
        if per_flow <= GOAL_BYTES { "OK" } else { "OVER" }
    );
    drop(table);

    let before = rss_bytes();
    let mut map: HashMap<FlowKey, FlowEntry> = HashMap::with_capacity(n);
    for (i, k) in keys.iter().enumerate() {
        map.insert(*k, entry(i));
    }
    let filled = rss_bytes();
    let map_per_flow = (filled - before) as f64 / n as f64;
    summary.record("hashmap_bytes_per_flow_rss", map_per_flow);
    println!(
        "HashMap baseline, with_capacity(1M) filled: RSS {map_per_flow:.1} B/flow; flow table / HashMap = {:.2}",
        per_flow / map_per_flow
    );
    drop(map);
}

fn speed(n: usize, summary: &mut Summary) {
    let keys: Vec<FlowKey> = (0..n).map(key).collect();
    let fresh: Vec<FlowKey> = (n..2 * n).map(key).collect();
    let order = shuffled(n);
    let rounds = LOOKUPS.div_ceil(n);
    let lookups = rounds * n;
    let now = 2u64;

    let t_insert = median(|| {
        let mut table = FlowTable::new(n, FlowTimeouts::default());
        let start = Instant::now();
        for (i, k) in keys.iter().enumerate() {
            black_box(table.insert(*k, entry(i)));
        }
        start.elapsed()
    });
    let m_insert = median(|| {
        let mut map: HashMap<FlowKey, FlowEntry> = HashMap::with_capacity(n);
        let start = Instant::now();
        for (i, k) in keys.iter().enumerate() {
            black_box(map.insert(*k, entry(i)));
        }
        start.elapsed()
    });

    let mut table = FlowTable::new(n, FlowTimeouts::default());
    let mut map: HashMap<FlowKey, FlowEntry> = HashMap::with_capacity(n);
    for (i, k) in keys.iter().enumerate() {
        table.insert(*k, entry(i));
        map.insert(*k, entry(i));
    }
    let t_lookup = median(|| {
        let start = Instant::now();
        for _ in 0..rounds {
            for &i in &order {
                let e = table.get_mut(&keys[i], now).expect("hit");
                e.packets += 1;
            }
        }
        start.elapsed()
    });
    let m_lookup = median(|| {
        let start = Instant::now();
        for _ in 0..rounds {
            for &i in &order {
                let e = map.get_mut(&keys[i]).expect("hit");
                e.packets += 1;
            }
        }
        start.elapsed()
    });
    // Misses: keys never inserted.
    let t_miss = median(|| {
        let start = Instant::now();
        for k in &fresh {
            black_box(table.get_mut(k, now).is_none());
        }
        start.elapsed()
    });
    let m_miss = median(|| {
        let start = Instant::now();
        for k in &fresh {
            black_box(map.get_mut(k).is_none());
        }
        start.elapsed()
    });
    // Full table: every insert evicts the least recently used flow. The
    // HashMap has no eviction; its nearest equivalent is remove + insert.
    let before = table.evictions();
    let start = Instant::now();
    for (i, k) in fresh.iter().enumerate() {
        black_box(table.insert(*k, entry(i)));
    }
    let t_evict = start.elapsed();
    assert_eq!(table.evictions() - before, n as u64);
    let start = Instant::now();
    for (i, k) in fresh.iter().enumerate() {
        map.remove(&keys[i]);
        black_box(map.insert(*k, entry(i)));
    }
    let m_evict = start.elapsed();

    let mut row = |key: &str, what: &str, t: f64, m: f64| {
        println!(
            "  {what:<28} table {t:>7.1} ns/op  HashMap {m:>7.1} ns/op  ratio {:>5.2}x",
            t / m
        );
        summary.record(format!("flow_table_{key}_ns_n{n}"), t);
        summary.record(format!("hashmap_{key}_ns_n{n}"), m);
    };
    println!("{n} flows:");
    row(
        "insert",
        "insert (empty table)",
        ns(t_insert, n),
        ns(m_insert, n),
    );
    row(
        "lookup_hit",
        "lookup hit (random order)",
        ns(t_lookup, lookups),
        ns(m_lookup, lookups),
    );
    row("lookup_miss", "lookup miss", ns(t_miss, n), ns(m_miss, n));
    row(
        "insert_full",
        "insert full (evict | rm+ins)",
        ns(t_evict, n),
        ns(m_evict, n),
    );
}

fn main() {
    println!("yard-flows: fixed-capacity LRU flow table vs std HashMap, same run");
    println!("ratio = table / HashMap (lower is better); timings median of {RUNS} runs except the eviction row (one pass)");
    let mut summary = Summary::default();
    memory(&mut summary);
    for n in [64, 64 << 10, MILLION] {
        speed(n, &mut summary);
    }
    if let Err(err) = summary.write_if_asked() {
        eprintln!("writing --json: {err}");
    }
}
