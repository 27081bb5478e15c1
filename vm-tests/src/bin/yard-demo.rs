//! `yard-demo`: Switchyard balancing real traffic between two backends, in a
//! throw-away network of namespaces on this machine. `make demo` runs it.
//!
//! Everything it builds (namespaces, servers, the daemon, temporary files)
//! is removed when it ends, also on Ctrl-C or a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use switchyard_proto::BackendsReport;
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::process::{switchyard_bin, workspace_root, yardctl_bin};
use switchyard_vm_tests::topology::{CLIENT_ADDR, LB_BACKEND_SIDE_ADDR, LB_CLIENT_SIDE_ADDR, VIP};
use switchyard_vm_tests::{
    tcp_exchange_keep_open, udp_exchange, Daemon, DaemonOptions, Reply, Topology,
};

const EXCHANGES: usize = 20;

#[derive(Parser, Debug)]
#[command(about = "Run Switchyard in a throw-away namespace network and send traffic through it")]
struct Args {
    /// The switchyard daemon [default: $SWITCHYARD_BIN or target/release/switchyard]
    #[arg(long)]
    switchyard: Option<PathBuf>,
    /// The yardctl CLI [default: $YARDCTL_BIN or target/release/yardctl]
    #[arg(long)]
    yardctl: Option<PathBuf>,
    /// Gateway API config to serve [default: config/examples/demo.yaml]
    #[arg(long)]
    config: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: a lone flag, polled between steps.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// First Ctrl-C: finish the current step, then tear down. SA_RESETHAND makes
/// a second one kill the demo outright.
fn install_interrupt_handler() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => println!("\nDone: everything the demo created has been removed."),
        Err(e) => {
            let _ = std::io::stdout().flush();
            if INTERRUPTED.load(Ordering::Relaxed) {
                eprintln!("\nInterrupted: everything the demo created has been removed.");
                std::process::exit(130);
            }
            eprintln!("\nyard-demo failed: {e:#}");
            eprintln!("(everything the demo created has been removed)");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("yard-demo needs root to create network namespaces: run it with sudo");
    }
    let switchyard = match &args.switchyard {
        Some(p) => p.clone(),
        None => switchyard_bin()?,
    };
    let yardctl = match &args.yardctl {
        Some(p) => p.clone(),
        None => yardctl_bin()?,
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| workspace_root().join("config/examples/demo.yaml"));
    if !config.is_file() {
        bail!("config file {} not found", config.display());
    }
    install_interrupt_handler()?;

    println!("Switchyard demo: a layer-4 load balancer, in network namespaces on this machine.");
    heading("Building the network");
    let topo = Topology::single_arm(1)?;
    println!("  client  {CLIENT_ADDR}");
    println!(
        "  LB node {LB_CLIENT_SIDE_ADDR} and {LB_BACKEND_SIDE_ADDR} on eth0, serving the VIP {VIP}"
    );
    for be in &topo.backends {
        println!("  {}     {}", be.name, be.addr);
    }
    println!(
        "  all on one bridge; namespaces {}",
        topo.namespace_names().join(", ")
    );
    check_interrupted()?;

    heading("Starting echo servers on the backends");
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    println!("  TCP {TCP_TARGET_PORT} and UDP {UDP_TARGET_PORT} on be1 and be2; a reply is the backend's name, then the request");
    check_interrupted()?;

    heading(&format!(
        "Starting switchyard on the LB node (config {})",
        config.display()
    ));
    let mut opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    opts.switchyard = Some(switchyard);
    opts.yardctl = Some(yardctl);
    opts.log_on_drop = false;
    let mut daemon = Daemon::start(&topo.lb, &config, &opts)?;
    println!(
        "  ready after {:.1} s (PID {})",
        daemon.uptime().as_secs_f64(),
        daemon.pid()
    );

    let outcome = traffic_and_report(&topo, &daemon);
    if outcome.is_err() && !INTERRUPTED.load(Ordering::Relaxed) {
        eprintln!("\n--- switchyard log ---\n{}", daemon.log());
    }
    let failed_exchanges = outcome?;

    heading("Stopping switchyard");
    let status = daemon.stop()?;
    let left = topo.lb_interfaces_with_xdp()?;
    println!(
        "  exited with {status}; XDP program {}",
        if left.is_empty() {
            "detached"
        } else {
            "STILL ATTACHED"
        }
    );
    println!("  removing servers and namespaces");
    if !status.success() || !left.is_empty() {
        bail!("switchyard did not shut down cleanly");
    }
    if failed_exchanges > 0 {
        bail!("{failed_exchanges} exchange(s) got no answer");
    }
    Ok(())
}

/// Sends the traffic, prints what answered and what switchyard counted.
/// Returns how many exchanges got no answer.
fn traffic_and_report(topo: &Topology, daemon: &Daemon) -> Result<usize> {
    let mut failed = 0;

    let to = SocketAddr::from((VIP, TCP_PORT));
    heading(&format!(
        "{EXCHANGES} TCP connections from the client to {to}"
    ));
    // Kept open until the flow table has been shown, so they appear in it.
    let mut open: Vec<TcpStream> = Vec::new();
    let mut per_backend = BTreeMap::new();
    for n in 1..=EXCHANGES {
        check_interrupted()?;
        let result = tcp_exchange_keep_open(&topo.client, to, &format!("hello {n}")).map(
            |(stream, reply)| {
                open.push(stream);
                reply
            },
        );
        print_exchange(n, "TCP", to, &result);
        match result {
            Ok(r) => *per_backend.entry(r.server().to_owned()).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    println!(
        "  TCP: {} of {EXCHANGES} answered ({})",
        EXCHANGES - failed,
        tally(&per_backend)
    );

    let to = SocketAddr::from((VIP, UDP_PORT));
    heading(&format!(
        "{EXCHANGES} UDP datagrams from the client to {to}, each from a new port"
    ));
    let mut udp_failed = 0;
    let mut per_backend = BTreeMap::new();
    for n in 1..=EXCHANGES {
        check_interrupted()?;
        let result = udp_exchange(&topo.client, to, &format!("query {n}"));
        print_exchange(n, "UDP", to, &result);
        match result {
            Ok(r) => *per_backend.entry(r.server().to_owned()).or_insert(0) += 1,
            Err(_) => udp_failed += 1,
        }
    }
    println!(
        "  UDP: {} of {EXCHANGES} answered ({})",
        EXCHANGES - udp_failed,
        tally(&per_backend)
    );
    failed += udp_failed;

    check_interrupted()?;
    heading("Backends and their health checks: `yardctl backends`");
    // The demo config probes every endpoint each second; wait for the
    // verdicts so the table shows them rather than `unknown`.
    let checked = poll_until(Duration::from_secs(10), "health verdicts", || {
        let report: BackendsReport = daemon.yardctl_as(&["backends"])?;
        let pending = report
            .backends
            .iter()
            .any(|b| b.health.as_deref() == Some("unknown"));
        Ok((!pending).then_some(report.backends.iter().any(|b| b.health.is_some())))
    });
    if let Ok(false) = checked {
        println!("  (this config has no health checks)");
    }
    std::io::stdout().flush()?;
    daemon.yardctl_print(&["backends", "-o", "table"])?;

    check_interrupted()?;
    heading("The flow table: `yardctl flows` (TCP connections still open)");
    std::io::stdout().flush()?;
    daemon.yardctl_print(&["flows", "-o", "table"])?;
    check_interrupted()?;
    heading("Counters: `yardctl stats`");
    std::io::stdout().flush()?;
    daemon.yardctl_print(&["stats", "-o", "table"])?;
    check_interrupted()?;
    heading("A config reload (SIGHUP; a file change does the same): `yardctl config status`");
    let before = daemon.config_status()?.generation;
    daemon.signal(nix::sys::signal::Signal::SIGHUP)?;
    switchyard_vm_tests::poll::poll_until(
        std::time::Duration::from_secs(10),
        "the reload to be applied",
        || Ok((daemon.config_status()?.generation > before).then_some(())),
    )?;
    std::io::stdout().flush()?;
    daemon.yardctl_print(&["config", "status"])?;
    drop(open);
    Ok(failed)
}

fn tally(per_backend: &BTreeMap<String, usize>) -> String {
    if per_backend.is_empty() {
        return "no backend answered".into();
    }
    per_backend
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_exchange(n: usize, proto: &str, to: SocketAddr, result: &Result<Reply>) {
    match result {
        Ok(r) => println!("  {n:>2}  {} -> {to}  answered by {}", r.local, r.server()),
        Err(e) => println!("  {n:>2}  {proto} to {to}: NO ANSWER ({e:#})"),
    }
}
