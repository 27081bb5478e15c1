//! What the benchmarks aim for, in one place: `make bench` records the
//! ratio goals in its results file; the micro benchmarks' goals are checked
//! by their binaries and shown beside their figures in docs/performance.md.

/// Throughput ratios (see [`crate::netbench::RATIOS`]) and the least each
/// should reach.
pub const RATIOS: [(&str, f64); 3] = [
    ("fastpath_vs_xdp_tx_limit", 0.8),
    ("fastpath_vs_nftables", 5.0),
    ("afxdp_vs_bare_hairpin", 0.9),
];

/// New-flow decisions per second on one core (`yard-bench`), at least.
pub const NEW_FLOW_DECISIONS_PER_SEC: f64 = 1e6;

/// Milliseconds to build one listener's Maglev table (`yard-maglev`), at
/// most: it runs at every config load.
pub const MAGLEV_BUILD_MS: f64 = 10.0;

/// Bytes of memory per tracked flow in a worker's flow table
/// (`yard-flows`), at most.
pub const FLOW_TABLE_BYTES_PER_FLOW: f64 = 128.0;
