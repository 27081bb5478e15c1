//! `yard-health` (`make bench-health`): the CPU that active health checks
//! cost the daemon, and their latency, at 1,000 and 10,000 endpoints.
//! Each size runs the real `switchyard run` twice in one pair of
//! namespaces, idle (no health check) and probing every endpoint over
//! TCP, and reports the probing CPU as a ratio to the idle CPU measured
//! beside it. Prints a table and writes perf/results/health.json. Needs
//! root and the release binaries.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Parser;
use switchyard_perf::health::config::ActiveCheck;
use switchyard_perf::health::{self, HealthReport, Options};
use switchyard_perf::netbench::{results_dir, shown};
use switchyard_perf::report::Machine;

#[derive(Parser)]
#[command(
    name = "yard-health",
    version,
    about = "The daemon's CPU and probe latency with active health checks, against an idle daemon in the same run"
)]
struct Args {
    /// Endpoint counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    endpoints: Vec<usize>,
    /// Seconds each CPU figure is measured over.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds between the warm-up and the window.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// The probes' `interval` (a Gateway API Duration).
    #[arg(long, default_value = "1s")]
    interval: String,
    /// The probes' `timeout`.
    #[arg(long, default_value = "500ms")]
    timeout: String,
    /// Measure the idle daemon only.
    #[arg(long)]
    idle_only: bool,
    /// `switchyard run --cores`.
    #[arg(long)]
    cores: Option<String>,
    /// One more `switchyard run` argument, e.g.
    /// `--daemon-arg=--health-threads=2`; repeatable.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Where to write the results; `-` for nowhere.
    #[arg(long)]
    json: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let options = Options {
        sizes: args.endpoints.clone(),
        seconds: args.seconds,
        settle: args.settle,
        check: ActiveCheck {
            interval: args.interval.clone(),
            timeout: args.timeout.clone(),
            ..ActiveCheck::default()
        },
        probing: !args.idle_only,
        cores: args.cores.clone(),
        daemon_args: args.daemon_args.clone(),
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "yard-health: switchyard run idle, then probing every endpoint (TCP, interval {}, timeout {}), \
         {} s windows; kernel {}, {cpus} CPUs",
        options.check.interval,
        options.check.timeout,
        options.seconds,
        kernel.trim()
    );
    let sizes = health::run(&options, |line| println!("{line}"))?;

    println!(
        "\n{:>9}  {:>10}  {:>13}  {:>9}  {:>6}  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "endpoints",
        "idle ms/s",
        "probing ms/s",
        "(system)",
        "ratio",
        "prober ms/s",
        "probes/s",
        "us/probe",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let dash = || "-".to_owned();
    for s in &sizes {
        let p = s.probing.as_ref();
        let latency = p.and_then(|p| p.latency());
        println!(
            "{:>9}  {:>10.1}  {:>13}  {:>9}  {:>6}  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            s.endpoints,
            s.idle.cpu_ms_per_s,
            p.map_or_else(dash, |p| format!("{:.1}", p.cpu_ms_per_s)),
            p.map_or_else(dash, |p| format!("{:.1}", p.system_ms_per_s)),
            s.cpu_ratio().map_or_else(dash, |r| format!("{r:.1}x")),
            p.and_then(|p| p.health_thread_ms_per_s())
                .map_or_else(dash, |ms| format!("{ms:.1}")),
            p.map_or_else(dash, |p| format!("{:.0}", p.probe_rate())),
            s.cpu_us_per_probe()
                .map_or_else(dash, |us| format!("{us:.1}")),
            latency.map_or_else(dash, |l| format!("{:.2}", l.p50)),
            latency.map_or_else(dash, |l| format!("{:.2}", l.p99)),
            latency.map_or_else(dash, |l| format!("{:.2}", l.max)),
        );
    }
    let probing: Vec<_> = sizes.iter().filter_map(|s| s.probing.as_ref()).collect();
    println!(
        "ms/s: the daemon's CPU (user + system) per second of wall time; (system): its kernel part, \
         which on veths includes the backends' side of each handshake; ratio: probing over idle, \
         same size, same run; prober ms/s: its `switchyard-health` threads"
    );
    if !probing.is_empty() {
        println!(
            "probes/s: {}; us/probe: (probing - idle) CPU per probe; latency: {}",
            if probing.iter().all(|p| p.probes_per_s.is_some()) {
                "counted by the daemon"
            } else {
                "connections the endpoints accepted"
            },
            if probing.iter().all(|p| p.latency_ms.is_some()) {
                "the daemon's probe histogram over the window (max: its bucket's upper bound)"
            } else {
                "each endpoint's last probe, from yardctl backends"
            }
        );
    }

    if args.json.as_deref() == Some("-") {
        return Ok(());
    }
    let path = match &args.json {
        Some(p) => std::path::PathBuf::from(p),
        None => results_dir().join("health.json"),
    };
    let given: Vec<String> = std::env::args().skip(1).collect();
    let report = HealthReport {
        command: if given.is_empty() {
            "make bench-health".to_owned()
        } else {
            format!("yard-health {}", given.join(" "))
        },
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        duration_secs: started.elapsed().as_secs_f64(),
        machine: Machine {
            kernel: kernel.trim().into(),
            cpus,
        },
        options,
        sizes,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", shown(&path));
    Ok(())
}
