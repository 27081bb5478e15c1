//! `yardctl`: inspect a running Switchyard appliance.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{presets, Cell, CellAlignment, Table};
use yardctl::client;
use yardctl::output::emit;
use yardctl::proto::{
    ConfigCheckReport, ConfigStatusReport, ExplainReport, FlowsReport, Request, Response,
    StatsReport, StatusReport, DEFAULT_CONTROL_SOCKET,
};

mod config_check;
mod top;

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
    /// Packets, bytes and flows per listener and backend; drops by reason per worker.
    Stats,
    /// Flows tracked by the workers, both directions merged.
    Flows,
    /// Which listener and backend a client's 5-tuple gets, and why, without
    /// sending a packet: the flow a worker already tracks, if any, and what
    /// a new flow would get under the current config.
    Explain {
        #[arg(value_enum)]
        protocol: ExplainProtocol,
        /// Client IPv4 address:port, e.g. 198.18.1.10:40000.
        client: String,
        /// VIP IPv4 address:port, e.g. 198.18.100.10:80.
        vip: String,
    },
    /// The running configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Live view of the busiest listeners, backends and workers (packets/s
    /// over the last interval, drops/s per worker); q or Ctrl-C quits.
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
enum ExplainProtocol {
    Tcp,
    Udp,
}

/// `address:port` as the dataplane understands it (IPv4 only), normalised.
fn socket_address(what: &str, text: &str) -> Result<String> {
    match text.parse::<SocketAddrV4>() {
        Ok(address) => Ok(address.to_string()),
        Err(_) => bail!(
            "invalid {what} address {text:?}: expected an IPv4 address:port such as {}",
            if what == "client" {
                "198.18.1.10:40000"
            } else {
                "198.18.100.10:80"
            }
        ),
    }
}

fn main() {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("yardctl: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let request = match cli.command {
        Command::Top { interval } => {
            if cli.output == Output::Json {
                bail!("yardctl top has no JSON output; use `yardctl stats -o json` in scripts");
            }
            return top::run(&cli.control_socket, interval);
        }
        Command::Status => Request::Status,
        Command::Stats => Request::Stats,
        Command::Flows => Request::Flows,
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
            Response::ConfigCheck(r) => serde_json::to_string_pretty(r),
            Response::ConfigDiff(r) => serde_json::to_string_pretty(r),
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
        Response::ConfigCheck(r) => {
            refused(&r)?;
            config_check::render_check(&r)
        }
        Response::ConfigDiff(r) => config_check::render_diff(&r),
        Response::Error { message } => bail!("{message}"),
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

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    table
}

fn right_align(table: &mut Table, from_column: usize) {
    let count = table.column_count();
    for index in from_column..count {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn render_status(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "switchyard {}  up {}s", r.version, r.uptime_secs);
    let _ = writeln!(
        out,
        "config     {} (generation {})",
        r.config_path, r.config_generation
    );
    let mut interfaces = table(&["INTERFACE", "IFINDEX", "XDP"]);
    for i in &r.interfaces {
        interfaces.add_row(vec![
            i.name.clone(),
            i.ifindex.to_string(),
            i.xdp_mode.clone(),
        ]);
    }
    let _ = writeln!(out, "\n{interfaces}");
    let mut workers = table(&["QUEUE", "CORE", "AF_XDP"]);
    for w in &r.workers {
        workers.add_row(vec![
            w.queue.to_string(),
            w.core.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            w.afxdp_modes.join(","),
        ]);
    }
    let _ = writeln!(out, "\n{workers}");
    out
}

fn render_stats(r: &StatsReport) -> String {
    let mut out = String::new();
    let mut listeners = table(&["LISTENER", "PROTO", "VIP", "FLOWS", "PACKETS", "BYTES"]);
    for l in &r.listeners {
        listeners.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            l.counters.flows.to_string(),
            l.counters.packets.to_string(),
            l.counters.bytes.to_string(),
        ]);
    }
    right_align(&mut listeners, 3);
    let _ = writeln!(out, "{listeners}");
    let mut backends = table(&[
        "LISTENER", "BACKEND", "SERVICE", "FLOWS", "PACKETS", "BYTES",
    ]);
    for b in &r.backends {
        backends.add_row(vec![
            b.listener.clone(),
            b.backend.clone(),
            b.service.clone(),
            b.counters.flows.to_string(),
            b.counters.packets.to_string(),
            b.counters.bytes.to_string(),
        ]);
    }
    right_align(&mut backends, 3);
    let _ = writeln!(out, "\n{backends}");
    let mut workers = table(&[
        "WORKER", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS",
    ]);
    for w in &r.workers {
        workers.add_row(vec![
            Cell::new(format!("queue {}", w.queue)),
            Cell::new(w.rx_packets),
            Cell::new(w.rx_bytes),
            Cell::new(w.tx_packets),
            Cell::new(w.tx_bytes),
            Cell::new(w.drops.values().sum::<u64>()),
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
    }
    out
}

fn render_flows(r: &FlowsReport) -> String {
    let mut out = String::new();
    let mut flows = table(&[
        "PROTO", "CLIENT", "VIP", "BACKEND", "PACKETS", "BYTES", "AGE", "IDLE",
    ]);
    for f in &r.flows {
        flows.add_row(vec![
            f.protocol.clone(),
            f.client.clone(),
            f.vip.clone(),
            f.backend.clone(),
            f.packets.to_string(),
            f.bytes.to_string(),
            format!("{:.1}s", f.age_secs),
            format!("{:.1}s", f.idle_secs),
        ]);
    }
    right_align(&mut flows, 4);
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
                    "backend {} on worker queue {}{}",
                    e.backend,
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

fn render_config_status(r: &ConfigStatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config      {}", r.path);
    let _ = writeln!(
        out,
        "running     generation {}, {} listeners, applied at {} (unix), sha256 {}",
        r.generation, r.listeners, r.applied_at_unix, r.sha256
    );
    let _ = writeln!(
        out,
        "reloads     {} applied, {} refused",
        r.reloads, r.failed_reloads
    );
    match &r.last_error {
        Some(e) => {
            let _ = writeln!(
                out,
                "last reload REFUSED at {} (unix); the running config stays:\n  {}",
                e.at_unix, e.message
            );
        }
        None => {
            let _ = writeln!(out, "last reload ok");
        }
    }
    if r.diagnostics.is_empty() {
        let _ = writeln!(out, "warnings    none");
    } else {
        let _ = writeln!(out, "warnings");
        for d in &r.diagnostics {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}
