//! `yard-netbench`: `make bench` in one run. Measures 64-byte UDP over many
//! flows through every path (the in-kernel XDP_TX and XDP_REDIRECT limits,
//! kube-proxy-style nftables DNAT, a bare AF_XDP hairpin, Switchyard with
//! the fast path off and on), new flows per second and one-way latency,
//! then runs the worker, Maglev and flow-table benchmarks, and prints and
//! writes everything as ratios against the baselines of the same run:
//! perf/results/latest.json and perf/results/latest.svg.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use switchyard_perf::netbench::{self, NetResults, Options};

#[derive(Parser)]
#[command(
    name = "yard-netbench",
    version,
    about = "make bench: every forwarding path and its baseline, measured in one run"
)]
struct Args {
    /// Seconds each throughput figure is measured over.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Flows of the throughput runs.
    #[arg(long, default_value_t = 4096)]
    flows: u64,
    /// Frames per second of the latency runs.
    #[arg(long, default_value_t = 50_000)]
    latency_rate: u64,
    /// An AF_XDP flag passed to both `switchyard run` and `yard-hairpin`,
    /// e.g. `--afxdp-arg=--tx-skb-budget=256`; repeat for more.
    #[arg(long = "afxdp-arg", allow_hyphen_values = true)]
    afxdp_args: Vec<String>,
    /// Leave out the worker, Maglev and flow-table benchmarks.
    #[arg(long)]
    network_only: bool,
    /// CPU of the LB's receive processing (threaded NAPI) for the XDP and
    /// kernel paths.
    #[arg(long, default_value_t = 1)]
    lb_cpu: usize,
    /// CPU of the AF_XDP workers.
    #[arg(long, default_value_t = 1)]
    worker_cpu: usize,
    /// Rounds over all paths; each path's figure is its median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print Switchyard's steering and worker counters after its runs.
    #[arg(long)]
    show_counters: bool,
    /// Measure only these paths (comma-separated names, or `new_flows`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// `a` over `b`: the median over rounds of the two paths' figures taken in
/// the same round (measured minutes apart at most, so a slow spell of the
/// machine touches both).
fn ratio(paths: &NetResults, a: &str, b: &str) -> Option<f64> {
    let rounds = |name: &str| {
        paths
            .paths
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.rounds_mpps.clone())
    };
    let (a, b) = (rounds(a)?, rounds(b)?);
    let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y.max(1e-9)).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[ratios.len() / 2])
}

fn placement_name(placement: netbench::Placement) -> &'static str {
    match placement {
        netbench::Placement::LbCore => "lb_core",
        netbench::Placement::GenCore => "gen_core",
    }
}

fn micro(name: &str) -> Result<Value> {
    let file = std::env::temp_dir().join(format!("swy-{}-{name}.json", std::process::id()));
    let file_arg = file.display().to_string();
    let out = netbench::run_bin(name, &["--json", &file_arg])?;
    print!("{out}");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file_arg}"))?;
    let _ = std::fs::remove_file(&file);
    Ok(serde_json::from_str(&text)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let options = Options {
        seconds: args.seconds,
        flows: args.flows,
        latency_rate: args.latency_rate,
        afxdp_args: args.afxdp_args.clone(),
        only: args.only.clone(),
        rounds: args.rounds,
        show_counters: args.show_counters,
        lb_cpu: args.lb_cpu,
        worker_cpu: args.worker_cpu,
        ..Options::default()
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "yard-netbench: {}-byte frames, {} flows, {} rounds of {} s per path; kernel {}, {cpus} CPUs\n\
         generator on CPU {}; lb_core paths: the LB's receive processing (threaded NAPI) on CPU {}; \
         gen_core paths: receive processing on the generator's CPU, the AF_XDP worker alone on CPU {}",
        options.frame_len + 4,
        options.flows,
        options.rounds,
        options.seconds,
        kernel.trim(),
        options.gen_cpu,
        options.lb_cpu,
        options.worker_cpu
    );
    let results = netbench::run(&options, |line| println!("{line}"))?;

    let mut ratios = BTreeMap::new();
    for (name, a, b) in [
        (
            "fastpath_vs_xdp_tx_limit",
            "switchyard_fastpath",
            "xdp_tx_limit",
        ),
        (
            "fastpath_vs_nftables",
            "switchyard_fastpath",
            "nftables_dnat",
        ),
        (
            "afxdp_vs_bare_hairpin",
            "switchyard_afxdp",
            "afxdp_bare_hairpin",
        ),
        (
            "fastpath_redirect_vs_xdp_redirect_limit",
            "switchyard_fastpath_redirect",
            "xdp_redirect_limit",
        ),
    ] {
        if let Some(r) = ratio(&results, a, b) {
            ratios.insert(name.to_owned(), r);
        }
    }
    let goals = [
        ("fastpath_vs_xdp_tx_limit", 0.8),
        ("fastpath_vs_nftables", 5.0),
        ("afxdp_vs_bare_hairpin", 0.9),
    ];

    let mut micro_results = BTreeMap::new();
    if !args.network_only {
        for name in ["yard-bench", "yard-maglev", "yard-flows"] {
            println!("\n== {name}");
            micro_results.insert(name.to_owned(), micro(name)?);
        }
    }

    println!(
        "\n== Throughput, 64-byte UDP, {} flows, median of {} rounds (one run)",
        options.flows, options.rounds
    );
    println!(
        "{:<30} {:<9} {:>8} {:>11} {:>8} {:>8} {:>9}",
        "path", "placement", "Mpps", "x baseline", "p50 us", "p99 us", "p99.9 us"
    );
    for p in &results.paths {
        let l = p.latency_ns.as_ref();
        // Each placement's baseline: the in-kernel limit, or the bare hairpin.
        let baseline = match p.placement {
            netbench::Placement::LbCore => "xdp_tx_limit",
            netbench::Placement::GenCore => "afxdp_bare_hairpin",
        };
        println!(
            "{:<30} {:<9} {:>8.3} {:>11.2} {:>8.1} {:>8.1} {:>9.1}",
            p.name,
            placement_name(p.placement),
            p.mpps,
            ratio(&results, &p.name, baseline).unwrap_or(0.0),
            l.map_or(0.0, |l| l.p50 / 1e3),
            l.map_or(0.0, |l| l.p99 / 1e3),
            l.map_or(0.0, |l| l.p999 / 1e3)
        );
    }
    println!("\nratios:");
    for (name, value) in &ratios {
        let goal = goals.iter().find(|(g, _)| g == name).map(|(_, v)| *v);
        println!(
            "  {name:<42} {value:>7.2}{}",
            goal.map_or(String::new(), |g| format!(
                "   goal >= {g}: {}",
                if *value >= g { "met" } else { "NOT met" }
            ))
        );
    }
    if !results.afxdp_options.is_empty() {
        println!(
            "\nAF_XDP options, Switchyard with the fast path off (gen_core), median of 2 rounds:"
        );
        for v in &results.afxdp_options {
            println!(
                "  {:<24} {:>7.3} Mpps  {:>5.2} x defaults",
                v.args, v.mpps, v.vs_defaults
            );
        }
    }
    println!("\nnew flows per second (every frame a new 5-tuple):");
    for f in &results.new_flows {
        println!(
            "  {:<20} {:<9} {:>10.0}",
            f.name,
            placement_name(f.placement),
            f.per_sec
        );
    }

    let dir = netbench::results_dir();
    std::fs::create_dir_all(&dir)?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = json!({
        "command": "make bench",
        "unix_time": unix,
        "machine": { "kernel": kernel.trim(), "cpus": cpus },
        "paths": results.paths,
        "ratios": ratios,
        "goals": goals.iter().map(|(g, v)| (g.to_string(), json!(v))).collect::<BTreeMap<_, _>>(),
        "new_flows": results.new_flows,
        "afxdp_options": results.afxdp_options,
        "micro": micro_results,
        "options": results.options,
    });
    let json_path = dir.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let svg_path = dir.join("latest.svg");
    std::fs::write(
        &svg_path,
        netbench::svg_chart(
            &results.paths,
            &format!(
                "64-byte UDP, {} flows, Mpps (one make bench run)",
                options.flows
            ),
        ),
    )?;
    println!(
        "\nwrote {} and {}",
        netbench::shown(&json_path),
        netbench::shown(&svg_path)
    );
    Ok(())
}
