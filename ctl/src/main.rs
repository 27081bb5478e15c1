//! `yardctl`: inspect a running Switchyard appliance over its control
//! socket, as tables, JSON or a live `top`. It only reads and asks: every
//! change it makes (drains, config checks) is a request the daemon may
//! refuse. It must never be depended on by the daemon or the packet path;
//! the protocol it speaks lives in `switchyard-proto`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::exit::invalid;
use crate::output::emit;
use crate::tables::{right_align, table};
use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{presets, Cell, Table};
use switchyard_proto::client;
use switchyard_proto::{
    ConfigCheckReport, ConfigSource, ConfigStatusReport, ExplainReport, FlowQuery, FlowSort,
    FlowsReport, ForwardingStatus, Request, Response, StatsReport, StatusReport,
    DEFAULT_CONTROL_SOCKET,
};

mod config_check;
mod exit;
mod inventory;
mod latency;
mod node;
mod output;
mod rates;
mod tables;
mod top;
mod when;

#[derive(Parser)]
#[command(
    name = "yardctl",
    version,
    about = "Inspect a running Switchyard appliance"
)]
struct Cli {
    /// Control socket of the daemon (`switchyard run --control-socket`).
    #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Version, uptime, interfaces, workers and config generation.
    Status,
    /// Packets, bytes and flows per listener and backend; drops by reason
    /// per worker. Totals since start (they survive config reloads); with
    /// --interval or --watch, also rates over the interval.
    Stats {
        /// Redraw every interval with the rates over it, until interrupted
        /// (`-o json`: one JSON object per line).
        #[arg(long)]
        watch: bool,
        /// Seconds between the two samples rates are computed from; without
        /// --watch, giving it takes two samples and adds rates (default 1).
        #[arg(long, value_name = "SECS")]
        interval: Option<f64>,
    },
    /// Flows tracked by the workers, both directions merged; filtered,
    /// sorted and cut by the daemon.
    Flows {
        /// Only flows of this listener (`namespace/gateway/listener`).
        #[arg(long)]
        listener: Option<String>,
        /// Only clients in this CIDR (or this one address).
        #[arg(long)]
        client: Option<String>,
        /// Only flows to this backend `address:port`.
        #[arg(long)]
        backend: Option<String>,
        /// Largest (bytes, packets) or oldest (age) first.
        #[arg(long, value_enum)]
        sort: Option<SortArg>,
        /// At most this many flows, after sorting.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Every VIP listener: route, backends, Maglev table, affinity, active flows.
    Listeners,
    /// Per worker since start: batch processing latency (p50, p90, p99,
    /// p99.9, max) over batches that received packets, packets per batch,
    /// and time spent answering control requests between batches.
    Latency,
    /// Every backend of every listener: weights, state, Maglev slots, active flows.
    Backends {
        /// Only this listener's (`namespace/gateway/listener`).
        #[arg(long)]
        listener: Option<String>,
    },
    /// Stop sending new flows to a backend; established flows continue.
    /// Kept across config reloads until `undrain`.
    Drain {
        /// Backend `address:port`.
        backend: String,
        /// Only on this listener (`namespace/gateway/listener`); otherwise
        /// on every listener that has it.
        #[arg(long)]
        listener: Option<String>,
    },
    /// Let a drained backend take new flows again.
    Undrain {
        /// Backend `address:port`.
        backend: String,
        /// Only on this listener (`namespace/gateway/listener`); otherwise
        /// on every listener it is drained on.
        #[arg(long)]
        listener: Option<String>,
    },
    /// Which listener and backend a client's 5-tuple gets, and why, without
    /// sending a packet: the flow a worker already tracks, if any, and what
    /// a new flow would get under the current config.
    Explain {
        /// The transport of the flow.
        #[arg(value_enum)]
        protocol: ExplainProtocol,
        /// Client address:port, e.g. 198.18.1.10:40000 or [2001:db8:1::10]:40000.
        client: String,
        /// VIP address:port, e.g. 198.18.100.10:80 or [2001:db8:100::10]:80.
        vip: String,
    },
    /// This LB node: its announcements (L2, BGP) and its peers; drain it
    /// from the network or take it back.
    Node {
        #[command(subcommand)]
        command: Option<NodeCommand>,
    },
    /// The running configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Live view of the busiest listeners, backends and workers (packets/s
    /// over the last interval, drops/s per worker); q or Ctrl-C quits.
    /// With `-o json`, one JSON object per interval (totals and rates, as
    /// `stats --watch -o json`) until interrupted.
    Top {
        /// Seconds between samples.
        #[arg(long, default_value = "1", value_parser = interval)]
        interval: Duration,
    },
}

/// Seconds as a refresh interval, at least `top::MIN_INTERVAL`.
fn interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    let interval = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if interval < top::MIN_INTERVAL || seconds > 3600.0 {
        return Err(format!(
            "{text}: expected between {} and 3600 seconds",
            top::MIN_INTERVAL.as_secs_f64()
        ));
    }
    Ok(interval)
}

#[derive(Subcommand)]
enum NodeCommand {
    /// The node's name, what it announces (and which peer announces what
    /// it does not), and the LB nodes it hears on its segment.
    Status,
    /// Withdraw every announcement, so the network sends new traffic to
    /// the other LB nodes; flows that still arrive are served. Kept until
    /// `undrain` or the daemon restarts.
    Drain,
    /// Announce again what the config asks for.
    Undrain,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Which config is running (generation, file hash, when applied), its
    /// warnings, and whether the last reload was refused and why.
    Status,
    /// Whether the running daemon would accept FILE, compiled with its own
    /// options, without applying it: the `file:line` error if not, else its
    /// listener count and warnings. Exits non-zero if it would be refused.
    Check {
        /// The file's contents are sent to the daemon (at most 4 MiB).
        file: PathBuf,
    },
    /// What applying FILE would change, per listener: settings, backends
    /// added, removed and reweighted, the share of new flows whose backend
    /// moves, and the active flows on backends that would go away.
    Diff {
        /// The file's contents are sent to the daemon (at most 4 MiB).
        file: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SortArg {
    Bytes,
    Packets,
    Age,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExplainProtocol {
    Tcp,
    Udp,
}

/// `address:port` of either family (IPv6 in brackets), normalised.
fn socket_address(what: &str, text: &str) -> Result<String> {
    match text.parse::<SocketAddr>() {
        Ok(address) => Ok(address.to_string()),
        Err(_) => invalid!(
            "invalid {what} address {text:?}: expected address:port such as {}",
            if what == "client" {
                "198.18.1.10:40000 or [2001:db8:1::10]:40000"
            } else {
                "198.18.100.10:80 or [2001:db8:100::10]:80"
            }
        ),
    }
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("yardctl: {err:#}");
        std::process::exit(exit::code(&err) as i32);
    }
}

fn run(cli: Cli) -> Result<()> {
    let request = match cli.command {
        Command::Top { interval } => {
            // A script gets what the screen shows, one sample per line.
            if cli.output == Output::Json {
                return rates::watch(&cli.control_socket, interval, true);
            }
            return top::run(&cli.control_socket, interval);
        }
        Command::Status => Request::Status,
        Command::Stats { watch, interval } => {
            return stats(&cli.control_socket, cli.output, watch, interval)
        }
        Command::Flows {
            listener,
            client,
            backend,
            sort,
            limit,
        } => Request::QueryFlows(FlowQuery {
            listener,
            client,
            backend,
            sort: sort.map(|s| match s {
                SortArg::Bytes => FlowSort::Bytes,
                SortArg::Packets => FlowSort::Packets,
                SortArg::Age => FlowSort::Age,
            }),
            limit,
        }),
        Command::Listeners => Request::Listeners,
        Command::Latency => Request::Latency,
        Command::Backends { listener } => Request::Backends { listener },
        Command::Drain { backend, listener } => Request::Drain {
            backend: socket_address("backend", &backend)?,
            listener,
        },
        Command::Undrain { backend, listener } => Request::Undrain {
            backend: socket_address("backend", &backend)?,
            listener,
        },
        Command::Explain {
            protocol,
            client,
            vip,
        } => Request::Explain {
            protocol: match protocol {
                ExplainProtocol::Tcp => "tcp",
                ExplainProtocol::Udp => "udp",
            }
            .to_owned(),
            client: socket_address("client", &client)?,
            vip: socket_address("VIP", &vip)?,
        },
        Command::Node { command } => match command.unwrap_or(NodeCommand::Status) {
            NodeCommand::Status => Request::Node,
            NodeCommand::Drain => Request::NodeDrain,
            NodeCommand::Undrain => Request::NodeUndrain,
        },
        Command::Config {
            command: ConfigCommand::Status,
        } => Request::ConfigStatus,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Request::ConfigCheck(config_check::read_candidate(&file)?),
        Command::Config {
            command: ConfigCommand::Diff { file },
        } => Request::ConfigDiff(config_check::read_candidate(&file)?),
    };
    let response = client::request(&cli.control_socket, &request)?;
    if cli.output == Output::Json {
        let mut json = match &response {
            Response::Status(r) => serde_json::to_string_pretty(r),
            Response::Stats(r) => serde_json::to_string_pretty(r),
            Response::Flows(r) => serde_json::to_string_pretty(r),
            Response::Explain(r) => serde_json::to_string_pretty(r),
            Response::ConfigStatus(r) => serde_json::to_string_pretty(r),
            Response::Listeners(r) => serde_json::to_string_pretty(r),
            Response::Backends(r) => serde_json::to_string_pretty(r),
            Response::Drain(r) => serde_json::to_string_pretty(r),
            Response::ConfigCheck(r) => serde_json::to_string_pretty(r),
            Response::ConfigDiff(r) => serde_json::to_string_pretty(r),
            Response::Latency(r) => serde_json::to_string_pretty(r),
            Response::ApplyCluster(r) => serde_json::to_string_pretty(r),
            Response::Node(r) => serde_json::to_string_pretty(r),
            Response::HandOver(r) => serde_json::to_string_pretty(r),
            Response::Error { message } => bail!("{message}"),
        }?;
        json.push('\n');
        emit(&json)?;
        if let Response::ConfigCheck(r) = &response {
            refused(r)?;
        }
        return Ok(());
    }
    let text = match response {
        Response::Status(r) => render_status(&r),
        Response::Stats(r) => render_stats(&r),
        Response::Flows(r) => render_flows(&r),
        Response::Explain(r) => render_explain(&r),
        Response::ConfigStatus(r) => render_config_status(&r),
        Response::Listeners(r) => inventory::render_listeners(&r),
        Response::Backends(r) => inventory::render_backends(&r),
        Response::Drain(r) => inventory::render_drain(&r),
        Response::ConfigCheck(r) => {
            refused(&r)?;
            config_check::render_check(&r)
        }
        Response::ConfigDiff(r) => config_check::render_diff(&r),
        Response::Latency(r) => latency::render_latency(&r),
        // yardctl never asks for it: switchyard-kube does.
        Response::ApplyCluster(r) => format!("{:?}: generation {}\n", r.outcome, r.generation),
        Response::Node(r) => node::render_node(&r),
        // yardctl never asks for it: `switchyard run --takeover` does.
        Response::HandOver(r) => format!("daemon {} handed over\n", r.pid),
        Response::Error { message } => bail!("{message}"),
    };
    Ok(emit(&text)?)
}

/// `yardctl stats`: one sample (totals) unless an interval or --watch asks
/// for rates, which need two.
fn stats(
    socket: &std::path::Path,
    output: Output,
    watch: bool,
    interval: Option<f64>,
) -> Result<()> {
    let seconds = interval.unwrap_or(1.0);
    if !(seconds.is_finite() && seconds > 0.0) {
        invalid!("--interval {seconds}: expected a positive number of seconds");
    }
    let interval_duration = std::time::Duration::from_secs_f64(seconds);
    if watch {
        return rates::watch(socket, interval_duration, output == Output::Json);
    }
    let text = match interval {
        Some(_) => {
            let measured = rates::measure(socket, interval_duration)?;
            match output {
                Output::Json => serde_json::to_string_pretty(&measured)? + "\n",
                Output::Table => {
                    rates::render(&measured.stats, &measured.rates, measured.interval_secs)
                }
            }
        }
        None => match client::request(socket, &Request::Stats)? {
            Response::Stats(r) => match output {
                Output::Json => serde_json::to_string_pretty(&r)? + "\n",
                Output::Table => render_stats(&r),
            },
            _ => bail!("the daemon answered a stats request with something else"),
        },
    };
    Ok(emit(&text)?)
}

/// A config check that found the file invalid is a failed command.
fn refused(r: &ConfigCheckReport) -> Result<()> {
    if r.valid {
        return Ok(());
    }
    // The error names the file and line itself.
    bail!(
        "the daemon would refuse this config: {}",
        r.error.as_deref().unwrap_or("no reason given")
    )
}

/// `forwarding nat 2 listeners, fullnat 1 (SNAT ports 10000-32767: queue 0
/// 10000-21383, queue 1 21384-32767)`.
fn render_forwarding(out: &mut String, f: &ForwardingStatus) {
    if f.listeners.is_empty() {
        return;
    }
    let modes: Vec<String> = f
        .listeners
        .iter()
        .map(|(mode, n)| {
            let what = if *n == 1 { "listener" } else { "listeners" };
            format!("{mode} {n} {what}")
        })
        .collect();
    let snat = match (&f.snat_ports, f.listeners.contains_key("fullnat")) {
        (Some(ports), _) => {
            let slices: Vec<String> = f
                .snat_slices
                .iter()
                .enumerate()
                .map(|(q, slice)| format!("queue {q} {slice}"))
                .collect();
            format!(" (SNAT ports {ports}: {})", slices.join(", "))
        }
        (None, true) => " (no --snat-ports: new fullnat flows are refused)".to_owned(),
        (None, false) => String::new(),
    };
    let _ = writeln!(out, "forwarding {}{snat}", modes.join(", "));
}

fn render_status(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "switchyard {}  up {}",
        r.version,
        when::duration(r.uptime_secs)
    );
    let _ = writeln!(
        out,
        "config     {} (generation {}; {} applied as generation {})",
        r.config_path,
        r.config_generation,
        match r.config_source {
            ConfigSource::File => "file",
            ConfigSource::Cluster => "objects",
        },
        r.reload.file_generation
    );
    render_reloads(&mut out, &r.reload, false, None);
    render_forwarding(&mut out, &r.forwarding);
    let mut interfaces = table(&INTERFACE_COLUMNS);
    for i in &r.interfaces {
        interfaces.add_row(vec![
            i.name.clone(),
            i.ifindex.to_string(),
            if i.driver.is_empty() {
                "-".to_owned()
            } else {
                i.driver.clone()
            },
            i.xdp_mode.clone(),
            i.queues.to_string(),
            i.rx_queues.to_string(),
            i.veth_peer
                .as_ref()
                .map_or_else(|| "-".to_owned(), veth_peer),
            match &i.fast_path_egress {
                None => "-".to_owned(),
                Some(e) if e.open => e.hairpin.clone(),
                Some(_) => "OFF".to_owned(),
            },
        ]);
    }
    let _ = writeln!(out, "\n{interfaces}");
    // Why the fast path does not send out of an interface, and what to
    // change: the sentence the daemon logged at start.
    for i in &r.interfaces {
        if let Some(egress) = i.fast_path_egress.as_ref().filter(|e| !e.open) {
            let _ = writeln!(out, "{}: {}", i.name, egress.reason);
        }
    }
    let mut workers = table(&WORKER_STATUS_COLUMNS);
    for w in &r.workers {
        workers.add_row(vec![
            w.queue.to_string(),
            w.core.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            match (w.core, w.pinned) {
                (None, _) => "-",
                (Some(_), true) => "yes",
                (Some(_), false) => "NO",
            }
            .to_owned(),
            w.afxdp_modes.join(","),
        ]);
    }
    let _ = writeln!(out, "\n{workers}");
    match &r.fast_path {
        Some(f) => {
            let _ = writeln!(
                out,
                "\nfast path  on: {} of {} flows cached; entries apply at generation {}, L2 epoch {}",
                f.entries, f.capacity, f.generation, f.l2_epoch
            );
        }
        None => {
            let _ = writeln!(out, "\nfast path  off");
        }
    }
    out
}

/// `lb@sw-ns napi`: a veth peer's name, namespace and whether it runs NAPI.
fn veth_peer(peer: &switchyard_proto::VethPeer) -> String {
    let at = if peer.netns.is_empty() {
        String::new()
    } else {
        format!("@{}", peer.netns)
    };
    let napi = match (peer.napi, peer.xdp) {
        (_, true) => "napi (xdp)",
        (Some(true), false) => "napi (gro)",
        (Some(false), false) => "NO NAPI",
        (None, false) => "napi ?",
    };
    format!("{}{at} {napi}", peer.name)
}

// Column names are the JSON field names (`-o json`) in capitals; `X/S` is
// `x_per_sec` and a time `X` is `x_secs` (the test `columns_are_json_fields`).
const INTERFACE_COLUMNS: [&str; 8] = [
    "INTERFACE",
    "IFINDEX",
    "DRIVER",
    "XDP MODE",
    "QUEUES",
    "RX QUEUES",
    "VETH PEER",
    "FAST PATH EGRESS",
];
const WORKER_STATUS_COLUMNS: [&str; 4] = ["QUEUE", "CORE", "PINNED", "AFXDP MODES"];
const LISTENER_STATS_COLUMNS: [&str; 7] = [
    "LISTENER",
    "PROTOCOL",
    "VIP",
    "FLOWS",
    "PACKETS",
    "BYTES",
    "FAST PATH PACKETS",
];
const BACKEND_STATS_COLUMNS: [&str; 7] = [
    "LISTENER",
    "BACKEND",
    "SERVICE",
    "FLOWS",
    "PACKETS",
    "BYTES",
    "FAST PATH PACKETS",
];
const WORKER_STATS_COLUMNS: [&str; 10] = [
    "QUEUE",
    "RX PACKETS",
    "RX BYTES",
    "TX PACKETS",
    "TX BYTES",
    "DROPS",
    "PARTIAL CHECKSUMS",
    "ECHO REPLIES",
    "ICMP TO BACKEND",
    "ICMP TO CLIENT",
];
const FLOW_COLUMNS: [&str; 11] = [
    "PROTOCOL",
    "CLIENT",
    "VIP",
    "MODE",
    "SNAT",
    "BACKEND",
    "PACKETS",
    "BYTES",
    "FAST PATH PACKETS",
    "AGE",
    "IDLE",
];

fn render_stats(r: &StatsReport) -> String {
    let mut out = String::new();
    let mut listeners = table(&LISTENER_STATS_COLUMNS);
    for l in &r.listeners {
        listeners.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            l.counters.flows.to_string(),
            l.counters.packets.to_string(),
            l.counters.bytes.to_string(),
            l.fast_path_packets.to_string(),
        ]);
    }
    right_align(&mut listeners, 3);
    let _ = writeln!(out, "{listeners}");
    let mut backends = table(&BACKEND_STATS_COLUMNS);
    for b in &r.backends {
        backends.add_row(vec![
            b.listener.clone(),
            b.backend.clone(),
            b.service.clone(),
            b.counters.flows.to_string(),
            b.counters.packets.to_string(),
            b.counters.bytes.to_string(),
            b.fast_path_packets.to_string(),
        ]);
    }
    right_align(&mut backends, 3);
    let _ = writeln!(out, "\n{backends}");
    let mut workers = table(&WORKER_STATS_COLUMNS);
    for w in &r.workers {
        workers.add_row(vec![
            Cell::new(w.queue),
            Cell::new(w.rx_packets),
            Cell::new(w.rx_bytes),
            Cell::new(w.tx_packets),
            Cell::new(w.tx_bytes),
            Cell::new(w.drops.values().sum::<u64>()),
            Cell::new(w.partial_checksums),
            Cell::new(w.echo_replies),
            Cell::new(w.icmp_to_backend),
            Cell::new(w.icmp_to_client),
        ]);
    }
    right_align(&mut workers, 1);
    let _ = writeln!(out, "\n{workers}");
    if r.drops.is_empty() {
        let _ = writeln!(out, "\nno drops");
    } else {
        let mut drops = table(&["DROP REASON", "PACKETS"]);
        for (reason, count) in &r.drops {
            drops.add_row(vec![reason.clone(), count.to_string()]);
        }
        right_align(&mut drops, 1);
        let _ = writeln!(out, "\n{drops}");
        let mut own = table(&["LISTENER", "DROP REASON", "PACKETS"]);
        let mut any = false;
        for l in &r.listeners {
            for (reason, count) in &l.drops {
                any = true;
                own.add_row(vec![l.listener.clone(), reason.clone(), count.to_string()]);
            }
        }
        if any {
            right_align(&mut own, 2);
            let _ = writeln!(out, "\n{own}");
        }
    }
    if !r.xdp_steering.is_empty() {
        let mut steering = table(&["XDP STEERING", "FRAMES"]);
        for (counter, count) in &r.xdp_steering {
            steering.add_row(vec![counter.clone(), count.to_string()]);
        }
        right_align(&mut steering, 1);
        let _ = writeln!(out, "\n{steering}");
    }
    out
}

fn render_flows(r: &FlowsReport) -> String {
    let mut out = String::new();
    let mut flows = table(&FLOW_COLUMNS);
    for f in &r.flows {
        // `*`: the fast path holds the flow's current decision.
        let fast = if f.fast_path {
            format!("{}*", f.fast_path_packets)
        } else {
            f.fast_path_packets.to_string()
        };
        flows.add_row(vec![
            f.protocol.clone(),
            f.client.clone(),
            f.vip.clone(),
            match &f.proxy {
                Some(proxy) => format!("{} (proxy {proxy})", f.mode),
                None => f.mode.clone(),
            },
            f.snat.clone().unwrap_or_else(|| "-".to_owned()),
            // An encapsulated flow's backend, and the header it is sent in.
            match &f.outer {
                Some(outer) => format!("{} ({outer})", f.backend),
                None => f.backend.clone(),
            },
            f.packets.to_string(),
            f.bytes.to_string(),
            fast,
            format!("{:.1}s", f.age_secs),
            format!("{:.1}s", f.idle_secs),
        ]);
    }
    right_align(&mut flows, 6);
    let _ = writeln!(out, "{flows}");
    let _ = writeln!(out, "{} flows", r.flows.len());
    out
}

fn render_explain(r: &ExplainReport) -> String {
    let mut rows = Table::new();
    rows.load_preset(presets::NOTHING);
    let dash = || "-".to_owned();
    rows.add_row(vec![
        "flow".to_owned(),
        format!("{} {} -> {}", r.protocol, r.client, r.vip),
    ]);
    rows.add_row(vec![
        "listener".to_owned(),
        r.listener
            .clone()
            .unwrap_or_else(|| "none (no listener matches)".to_owned()),
    ]);
    match &r.existing {
        Some(e) => {
            rows.add_row(vec![
                "existing flow".to_owned(),
                format!(
                    "{}backend {}{} on worker queue {}{}",
                    if e.mode.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", e.mode)
                    },
                    e.backend,
                    e.snat
                        .as_ref()
                        .map_or_else(String::new, |s| format!(" from SNAT {s}")),
                    e.queue,
                    if e.stale {
                        " (decided under an older config: kept while the VIP still has this backend)"
                    } else {
                        ""
                    }
                ),
            ]);
            rows.add_row(vec![
                String::new(),
                format!(
                    "age {:.1}s, idle {:.1}s, {} packets, {} bytes",
                    e.age_secs, e.idle_secs, e.packets, e.bytes
                ),
            ]);
            if let Some(outer) = &e.outer {
                rows.add_row(vec![String::new(), format!("sent inside {outer}")]);
            }
            if let Some(proxy) = &e.proxy {
                rows.add_row(vec![
                    String::new(),
                    format!("PROXY protocol header {proxy}"),
                ]);
            }
        }
        None => {
            rows.add_row(vec![
                "existing flow".to_owned(),
                "none tracked by any worker".to_owned(),
            ]);
        }
    }
    let n = &r.new_flow;
    rows.add_row(vec![
        "new flow".to_owned(),
        n.backend
            .clone()
            .unwrap_or_else(|| "refused (no backend)".to_owned()),
    ]);
    if let (Some(slot), Some(size)) = (n.slot, n.table_size) {
        rows.add_row(vec![
            "  slot".to_owned(),
            format!(
                "{slot} of {size} (hash {})",
                n.hash.map_or_else(dash, |h| format!("{h:#010x}"))
            ),
        ]);
    }
    if let Some(affinity) = &n.affinity {
        rows.add_row(vec!["  affinity".to_owned(), affinity.clone()]);
    }
    if let Some(entry) = &n.affinity_entry {
        rows.add_row(vec![
            "  affinity entry".to_owned(),
            format!(
                "{} (idle {}s, expires in {}s)",
                entry.backend, entry.idle_secs, entry.expires_in_secs
            ),
        ]);
    }
    if n.service.is_some() || n.backend_weight.is_some() {
        rows.add_row(vec![
            "  backendRef".to_owned(),
            format!(
                "{} (group weight {}, backend effective weight {})",
                n.service.clone().unwrap_or_else(dash),
                n.group_weight.map_or_else(dash, |w| w.to_string()),
                n.backend_weight.map_or_else(dash, |w| format!("{w:.3}")),
            ),
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{rows}");
    // Long; kept out of the table so it does not widen every row.
    let _ = writeln!(out, "\nwhy: {}", n.reason);
    let _ = writeln!(out, "config generation {}", r.config_generation);
    out
}

/// What the last update did: `applied generation 4 at DATE (AGE)`,
/// `unchanged at ...`, `refused at ...`; the bare result from daemons that
/// do not say more.
fn last_update(reload: &switchyard_proto::ReloadSummary) -> String {
    match &reload.last_update {
        Some(update) if update.outcome == switchyard_proto::RELOAD_APPLIED => format!(
            "applied generation {} at {}",
            update.generation,
            when::date_and_age(update.at_unix)
        ),
        Some(update) => format!(
            "{} at {}",
            update.outcome,
            when::date_and_age(update.at_unix)
        ),
        None if reload.last_result.is_empty() => "-".to_owned(),
        None => reload.last_result.clone(),
    }
}

/// The reload lines `status` and `config status` share; `status` keeps a
/// refusal to its first line. A cluster's updates are counted as updates,
/// unchanged ones too.
fn render_reloads(
    out: &mut String,
    reload: &switchyard_proto::ReloadSummary,
    whole: bool,
    unchanged: Option<u64>,
) {
    let _ = match unchanged {
        None => writeln!(
            out,
            "reloads    {} applied, {} refused; last reload: {}",
            reload.reloads,
            reload.failed_reloads,
            last_update(reload),
        ),
        Some(unchanged) => writeln!(
            out,
            "updates    {} applied, {unchanged} unchanged, {} refused; last update: {}",
            reload.reloads,
            reload.failed_reloads,
            last_update(reload),
        ),
    };
    if let Some(error) = &reload.last_error {
        let _ = writeln!(
            out,
            "           REFUSED {}; the running config stays:",
            when::date_and_age(error.at_unix)
        );
        for line in error
            .message
            .lines()
            .take(if whole { usize::MAX } else { 1 })
        {
            let _ = writeln!(out, "             {line}");
        }
    }
}

fn render_config_status(r: &ConfigStatusReport) -> String {
    let mut out = String::new();
    let cluster = r.source_kind == ConfigSource::Cluster;
    let _ = writeln!(
        out,
        "config     {} (generation {}; {} applied as generation {})",
        r.source_name(),
        r.generation,
        if cluster { "objects" } else { "file" },
        r.file_generation
    );
    let _ = writeln!(
        out,
        "running    {} listeners, applied {}, sha256 {}",
        r.listeners,
        when::date_and_age(r.applied_at_unix),
        if r.sha256.is_empty() { "-" } else { &r.sha256 }
    );
    render_reloads(
        &mut out,
        &r.summary(),
        true,
        cluster.then_some(r.unchanged_updates),
    );
    if r.diagnostics.is_empty() {
        let _ = writeln!(out, "warnings   none");
    } else {
        let _ = writeln!(out, "warnings");
        for d in &r.diagnostics {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switchyard_proto::{
        BackendStats, ConfigError, ConfigUpdate, Counters, ExistingFlow, FastPathEgress,
        FastPathStatus, FlowInfo, InterfaceStatus, ListenerStats, NewFlowDecision, ReloadSummary,
        VethPeer, WorkerStats, WorkerStatus,
    };

    use super::*;

    #[test]
    fn columns_are_json_fields() {
        use crate::tables::assert_columns_are_fields as check;
        let interface = InterfaceStatus {
            veth_peer: Some(VethPeer::default()),
            fast_path_egress: Some(FastPathEgress::default()),
            ..InterfaceStatus::default()
        };
        check(&INTERFACE_COLUMNS, &interface, &["INTERFACE"]);
        check(&WORKER_STATUS_COLUMNS, &WorkerStatus::default(), &[]);
        check(&LISTENER_STATS_COLUMNS, &ListenerStats::default(), &[]);
        check(&BACKEND_STATS_COLUMNS, &BackendStats::default(), &[]);
        check(&WORKER_STATS_COLUMNS, &WorkerStats::default(), &[]);
        check(&FLOW_COLUMNS, &switchyard_proto::FlowInfo::default(), &[]);
    }

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help_text() {
        use clap::CommandFactory;
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "yardctl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    /// The line of `text` that contains every one of `cells`.
    fn row<'a>(text: &'a str, cells: &[&str]) -> &'a str {
        text.lines()
            .find(|l| cells.iter().all(|c| l.contains(c)))
            .unwrap_or_else(|| panic!("no line with {cells:?} in\n{text}"))
    }

    #[test]
    fn status_shows_interfaces_queues_pins_modes_and_the_last_reload() {
        let text = render_status(&StatusReport {
            version: "0.1.0".into(),
            uptime_secs: 42,
            config_path: "/etc/switchyard/gw.yaml".into(),
            config_source: ConfigSource::File,
            config_generation: 5,
            interfaces: vec![
                InterfaceStatus {
                    name: "eth0".into(),
                    ifindex: 3,
                    xdp_mode: "native".into(),
                    queues: 2,
                    rx_queues: 4,
                    driver: "mlx5_core".into(),
                    veth_peer: None,
                    fast_path_egress: Some(FastPathEgress {
                        open: true,
                        hairpin: "xdp_tx".into(),
                        reason: "the driver takes frames from XDP".into(),
                    }),
                },
                InterfaceStatus {
                    name: "veth1".into(),
                    ifindex: 5,
                    xdp_mode: "native".into(),
                    queues: 2,
                    rx_queues: 2,
                    driver: "veth".into(),
                    veth_peer: Some(VethPeer {
                        name: "lb".into(),
                        ifindex: 9,
                        netns: "lab-sw".into(),
                        napi: Some(false),
                        xdp: false,
                    }),
                    fast_path_egress: Some(FastPathEgress {
                        open: false,
                        hairpin: "redirect".into(),
                        reason: "veth1 is a veth whose peer lb runs no NAPI: run this".into(),
                    }),
                },
            ],
            workers: vec![
                WorkerStatus {
                    queue: 0,
                    core: Some(2),
                    pinned: true,
                    afxdp_modes: vec!["zero-copy".into()],
                },
                WorkerStatus {
                    queue: 1,
                    core: Some(9),
                    pinned: false,
                    afxdp_modes: vec!["copy".into()],
                },
            ],
            reload: ReloadSummary {
                file_generation: 4,
                reloads: 3,
                failed_reloads: 1,
                last_error: Some(ConfigError {
                    at_unix: 1700,
                    message: "gw.yaml:3: bad\nmore".into(),
                }),
                last_result: "refused".into(),
                last_update: None,
            },
            fast_path: Some(FastPathStatus {
                capacity: 262_144,
                entries: 12,
                generation: 5,
                l2_epoch: 2,
            }),
            forwarding: ForwardingStatus {
                listeners: [("fullnat".to_owned(), 2), ("nat".to_owned(), 1)].into(),
                snat_ports: Some("10000-32767".into()),
                snat_slices: vec!["10000-21383".into(), "21384-32767".into()],
            },
        });
        assert!(text.starts_with("switchyard 0.1.0  up 42s"), "{text}");
        row(
            &text,
            &[
                "forwarding fullnat 2 listeners, nat 1 listener",
                "SNAT ports 10000-32767: queue 0 10000-21383, queue 1 21384-32767",
            ],
        );
        row(
            &text,
            &[
                "/etc/switchyard/gw.yaml",
                "generation 5",
                "file applied as generation 4",
            ],
        );
        row(&text, &["3 applied", "1 refused", "last reload: refused"]);
        row(&text, &["REFUSED 1970-01-01 00:28:20 UTC"]);
        row(&text, &["gw.yaml:3: bad"]);
        assert!(
            !text.contains("more"),
            "only the error's first line: {text}"
        );
        row(
            &text,
            &["eth0", "3", "mlx5_core", "native", "2", "4", "-", "xdp_tx"],
        );
        row(&text, &["veth1", "5", "veth", "lb@lab-sw NO NAPI", "OFF"]);
        row(
            &text,
            &["veth1: veth1 is a veth whose peer lb runs no NAPI: run this"],
        );
        assert!(
            !text.contains("eth0: the driver"),
            "only closed interfaces explain themselves: {text}"
        );
        row(&text, &["0", "2", "yes", "zero-copy"]);
        row(&text, &["1", "9", "NO", "copy"]);
        row(
            &text,
            &["fast path", "12 of 262144", "generation 5", "L2 epoch 2"],
        );
    }

    fn counters(packets: u64) -> Counters {
        Counters {
            packets,
            bytes: packets * 64,
            flows: packets / 2,
        }
    }

    #[test]
    fn stats_show_totals_drops_by_reason_and_listener_and_the_steering_counters() {
        let stats = StatsReport {
            listeners: vec![ListenerStats {
                listener: "demo/edge/web".into(),
                protocol: "TCP".into(),
                vip: "198.18.100.10:80".into(),
                counters: counters(10),
                drops: BTreeMap::from([("backend_unavailable".into(), 3)]),
                fast_path_packets: 6,
                fast_path_bytes: 384,
            }],
            backends: vec![BackendStats {
                listener: "demo/edge/web".into(),
                backend: "198.18.2.21:8080".into(),
                service: "demo/echo".into(),
                counters: counters(8),
                fast_path_packets: 5,
                fast_path_bytes: 320,
            }],
            workers: vec![WorkerStats {
                queue: 0,
                rx_packets: 13,
                rx_bytes: 900,
                tx_packets: 10,
                tx_bytes: 800,
                flows: 5,
                drops: BTreeMap::from([("backend_unavailable".into(), 3)]),
                partial_checksums: 4,
                echo_replies: 2,
                icmp_to_backend: 1,
                icmp_to_client: 6,
                ..WorkerStats::default()
            }],
            drops: BTreeMap::from([("backend_unavailable".into(), 3)]),
            xdp_steering: BTreeMap::from([("steer_vip".into(), 7), ("pass_local".into(), 0)]),
        };
        let text = render_stats(&stats);
        row(
            &text,
            &[
                "demo/edge/web",
                "TCP",
                "198.18.100.10:80",
                "5",
                "10",
                "640",
                "6",
            ],
        );
        row(
            &text,
            &["198.18.2.21:8080", "demo/echo", "4", "8", "512", "5"],
        );
        row(
            &text,
            &[
                "QUEUE",
                "RX PACKETS",
                "PARTIAL CHECKSUMS",
                "ECHO REPLIES",
                "ICMP TO BACKEND",
                "ICMP TO CLIENT",
            ],
        );
        row(
            &text,
            &[" 0 ", "13", "900", "10", "800", "3", "4", "2", "1", "6"],
        );
        row(&text, &["demo/edge/web", "backend_unavailable", "3"]);
        row(&text, &["steer_vip", "7"]);
        row(&text, &["pass_local", "0"]);
        let quiet = render_stats(&StatsReport::default());
        assert!(quiet.contains("no drops"), "{quiet}");
        assert!(!quiet.contains("XDP STEERING"), "{quiet}");
    }

    #[test]
    fn flows_show_one_row_per_connection_and_a_count() {
        let text = render_flows(&FlowsReport {
            flows: vec![FlowInfo {
                protocol: "UDP".into(),
                client: "198.18.1.10:40000".into(),
                vip: "198.18.100.10:53".into(),
                backend: "198.18.2.22:5353".into(),
                listener: "demo/edge/dns".into(),
                packets: 2,
                bytes: 120,
                fast_path_packets: 1,
                fast_path_bytes: 60,
                fast_path: true,
                age_secs: 1.25,
                idle_secs: 0.5,
                workers: vec![0],
                outer: None,
                mode: "fullnat".into(),
                snat: Some("198.18.2.1:10007".into()),
                proxy: None,
            }],
        });
        row(
            &text,
            &[
                "UDP",
                "198.18.1.10:40000",
                "198.18.100.10:53",
                "fullnat",
                "198.18.2.1:10007",
                "198.18.2.22:5353",
                "2",
                "120",
                "1*",
                "1.2s",
                "0.5s",
            ],
        );
        assert!(text.ends_with("1 flows\n"), "{text}");
    }

    #[test]
    fn an_encapsulated_flow_shows_its_outer_header_beside_its_backend() {
        let text = render_flows(&FlowsReport {
            flows: vec![FlowInfo {
                protocol: "TCP".into(),
                client: "198.18.1.10:40000".into(),
                vip: "198.18.100.10:80".into(),
                backend: "198.18.2.21:80".into(),
                outer: Some("gue 198.18.100.10:50001 -> 198.18.2.21:6080".into()),
                ..FlowInfo::default()
            }],
        });
        row(
            &text,
            &[
                "198.18.2.21:80",
                "(gue 198.18.100.10:50001 -> 198.18.2.21:6080)",
            ],
        );
    }

    #[test]
    fn a_flow_with_a_proxy_header_says_whether_the_backend_has_it() {
        let text = render_flows(&FlowsReport {
            flows: vec![FlowInfo {
                protocol: "TCP".into(),
                mode: "fullnat".into(),
                snat: Some("198.18.2.1:10007".into()),
                proxy: Some("v2 sent".into()),
                ..FlowInfo::default()
            }],
        });
        row(&text, &["fullnat (proxy v2 sent)", "198.18.2.1:10007"]);
    }

    #[test]
    fn explain_shows_the_tracked_flow_the_new_decision_and_why() {
        let text = render_explain(&ExplainReport {
            protocol: "TCP".into(),
            client: "198.18.1.10:40000".into(),
            vip: "198.18.100.10:80".into(),
            listener: Some("demo/edge/web".into()),
            config_generation: 2,
            existing: Some(ExistingFlow {
                queue: 1,
                mode: "fullnat".into(),
                snat: Some("198.18.2.1:10007".into()),
                backend: "198.18.2.21:8080".into(),
                age_secs: 3.0,
                idle_secs: 1.0,
                packets: 7,
                bytes: 700,
                stale: true,
                outer: Some("ipip 172.16.18.52 -> 198.18.2.21".into()),
                proxy: Some("v2 acknowledged".into()),
            }),
            new_flow: NewFlowDecision {
                backend: Some("198.18.2.22:8080".into()),
                hash: Some(0xdead_beef),
                slot: Some(5),
                table_size: Some(7),
                backend_weight: Some(0.5),
                service: Some("demo/echo".into()),
                group_weight: Some(1),
                reason: "because".into(),
                ..NewFlowDecision::default()
            },
        });
        row(
            &text,
            &["flow", "TCP 198.18.1.10:40000 -> 198.18.100.10:80"],
        );
        row(
            &text,
            &[
                "existing flow",
                "fullnat",
                "198.18.2.21:8080",
                "from SNAT 198.18.2.1:10007",
                "queue 1",
                "older config",
            ],
        );
        row(&text, &["age 3.0s", "7 packets", "700 bytes"]);
        row(&text, &["sent inside ipip 172.16.18.52 -> 198.18.2.21"]);
        row(&text, &["PROXY protocol header v2 acknowledged"]);
        row(&text, &["new flow", "198.18.2.22:8080"]);
        row(&text, &["slot", "5 of 7", "0xdeadbeef"]);
        row(
            &text,
            &["backendRef", "demo/echo", "group weight 1", "0.500"],
        );
        row(&text, &["why: because"]);
        row(&text, &["config generation 2"]);
        let none = render_explain(&ExplainReport::default());
        row(&none, &["none (no listener matches)"]);
        row(&none, &["none tracked by any worker"]);
        row(&none, &["refused (no backend)"]);
    }

    #[test]
    fn config_status_shows_the_running_file_and_a_refused_reload() {
        let mut report = ConfigStatusReport {
            path: "gw.yaml".into(),
            generation: 3,
            file_generation: 2,
            applied_at_unix: 1600,
            sha256: "ab12".into(),
            listeners: 2,
            diagnostics: vec!["a warning".into()],
            reloads: 2,
            failed_reloads: 1,
            last_error: Some(ConfigError {
                at_unix: 1700,
                message: "gw.yaml:9: bad\nsecond line".into(),
            }),
            last_result: String::new(),
            ..ConfigStatusReport::default()
        };
        let text = render_config_status(&report);
        row(
            &text,
            &["gw.yaml", "generation 3", "file applied as generation 2"],
        );
        row(&text, &["2 listeners", "1970-01-01 00:26:40 UTC", "ab12"]);
        row(&text, &["2 applied", "1 refused", "last reload: refused"]);
        row(&text, &["REFUSED 1970-01-01 00:28:20 UTC"]);
        row(&text, &["gw.yaml:9: bad"]);
        row(&text, &["second line"]);
        row(&text, &["a warning"]);
        report.last_error = None;
        report.diagnostics.clear();
        let text = render_config_status(&report);
        row(&text, &["last reload: applied"]);
        row(&text, &["warnings   none"]);
        report.reloads = 0;
        let text = render_config_status(&report);
        row(&text, &["last reload: none"]);
    }

    #[test]
    fn config_status_of_a_cluster_names_it_and_says_what_the_last_update_did() {
        let mut report = ConfigStatusReport {
            path: "cluster https://10.96.0.1:443".into(),
            source_kind: ConfigSource::Cluster,
            source: "cluster https://10.96.0.1:443".into(),
            generation: 5,
            file_generation: 4,
            applied_at_unix: 1600,
            sha256: "ab12".into(),
            listeners: 2,
            reloads: 3,
            failed_reloads: 1,
            unchanged_updates: 7,
            last_update: Some(ConfigUpdate {
                outcome: "applied".into(),
                at_unix: 1600,
                generation: 4,
                error: None,
            }),
            ..ConfigStatusReport::default()
        };
        let text = render_config_status(&report);
        row(
            &text,
            &[
                "cluster https://10.96.0.1:443",
                "generation 5",
                "objects applied as generation 4",
            ],
        );
        row(
            &text,
            &[
                "3 applied",
                "7 unchanged",
                "1 refused",
                "last update: applied generation 4 at 1970-01-01 00:26:40 UTC",
            ],
        );
        report.last_update = Some(ConfigUpdate {
            outcome: "unchanged".into(),
            at_unix: 1700,
            generation: 4,
            error: None,
        });
        row(
            &render_config_status(&report),
            &["last update: unchanged at 1970-01-01 00:28:20 UTC"],
        );
        report.last_update = Some(ConfigUpdate {
            outcome: "refused".into(),
            at_unix: 1700,
            generation: 4,
            error: Some("cluster https://10.96.0.1:443:12: bad".into()),
        });
        report.last_error = Some(ConfigError {
            at_unix: 1700,
            message: "cluster https://10.96.0.1:443:12: bad".into(),
        });
        let text = render_config_status(&report);
        row(&text, &["last update: refused at 1970-01-01 00:28:20 UTC"]);
        row(&text, &["cluster https://10.96.0.1:443:12: bad"]);
    }

    #[test]
    fn a_config_status_from_a_daemon_that_does_not_name_its_source_still_reads() {
        let old = r#"{"path":"gw.yaml","generation":2,"applied_at_unix":1600,"sha256":"ab",
            "listeners":1,"diagnostics":[],"reloads":1,"failed_reloads":0,"last_error":null}"#;
        let report: ConfigStatusReport = serde_json::from_str(old).unwrap();
        assert_eq!(report.source_kind, ConfigSource::File);
        assert_eq!(report.source_name(), "gw.yaml");
        let text = render_config_status(&report);
        row(&text, &["gw.yaml", "file applied as generation 0"]);
        row(&text, &["1 applied", "0 refused", "last reload: applied"]);
    }
}
