//! `yard-netbench`: `make bench` in one run. Measures 64-byte UDP over many
//! flows through every path (the in-kernel XDP_TX and XDP_REDIRECT limits,
//! kube-proxy-style nftables DNAT, a bare AF_XDP hairpin, Switchyard with
//! the fast path off and on), new flows per second and one-way latency,
//! then runs the worker, Maglev and flow-table benchmarks, and prints and
//! writes everything as ratios against the baselines of the same run:
//! perf/results/latest.json and perf/results/latest.svg, and the generated
//! block of docs/performance.md. With `--render-docs` (`make docs`) it only
//! re-renders that block from the existing latest.json.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_perf::netbench::{self, Options};
use switchyard_perf::report::{self, Machine, Report};

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
    /// Measure nothing: re-render the generated block of
    /// docs/performance.md from perf/results/latest.json (`make docs`).
    #[arg(long, exclusive = true)]
    render_docs: bool,
}

fn micro(name: &str) -> Result<BTreeMap<String, f64>> {
    let file = std::env::temp_dir().join(format!("swy-{}-{name}.json", std::process::id()));
    let file_arg = file.display().to_string();
    let out = netbench::run_bin(name, &["--json", &file_arg])?;
    print!("{out}");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file_arg}"))?;
    let _ = std::fs::remove_file(&file);
    Ok(serde_json::from_str(&text)?)
}

/// Re-renders docs/performance.md's generated block from `report`.
fn render_docs(report: &Report) -> Result<()> {
    let doc = report::performance_doc();
    let changed = report::update_doc(report, &doc)?;
    println!(
        "{} {}",
        if changed { "updated" } else { "unchanged:" },
        netbench::shown(&doc)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.render_docs {
        return render_docs(&Report::read(&report::latest_json())?);
    }
    let started = Instant::now();
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
    for (name, a, b, _) in netbench::RATIOS {
        if let Some(r) = netbench::ratio(&results.paths, a, b) {
            ratios.insert(name.to_owned(), r);
        }
    }
    let goals = switchyard_perf::goals::RATIOS;

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
        let baseline = netbench::baseline_of(&p.name, p.placement);
        println!(
            "{:<30} {:<9} {:>8.3} {:>11.2} {:>8.1} {:>8.1} {:>9.1}",
            p.name,
            p.placement.name(),
            p.mpps,
            netbench::ratio(&results.paths, &p.name, baseline).unwrap_or(0.0),
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
            "\nAF_XDP options, Switchyard with the fast path off (gen_core), median of {} rounds:",
            netbench::AFXDP_ROUNDS
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
            f.placement.name(),
            f.per_sec
        );
    }

    let dir = netbench::results_dir();
    std::fs::create_dir_all(&dir)?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // `make bench` runs it without arguments; any other run says how.
    let given: Vec<String> = std::env::args().skip(1).collect();
    let command = if given.is_empty() {
        "make bench".to_owned()
    } else {
        format!("yard-netbench {}", given.join(" "))
    };
    let report = Report {
        command,
        unix_time: unix,
        duration_secs: Some(started.elapsed().as_secs_f64()),
        machine: Machine {
            kernel: kernel.trim().into(),
            cpus,
        },
        generator: Some(results.generator),
        options: results.options.clone(),
        paths: results.paths.clone(),
        ratios,
        goals: goals.iter().map(|(g, v)| (g.to_string(), *v)).collect(),
        new_flows: results.new_flows.clone(),
        afxdp_options: results.afxdp_options.clone(),
        micro: micro_results,
    };
    let json_path = dir.join("latest.json");
    report.write(&json_path)?;
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
    render_docs(&report)
}
