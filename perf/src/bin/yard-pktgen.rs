//! `yard-pktgen`: a packet generator for measuring Switchyard (and anything
//! else on a wire). It sends frames over many flows out of an interface of
//! the namespace it runs in, either through BPF_PROG_TEST_RUN's live-frames
//! mode (the kernel runs a small XDP program per frame and transmits it)
//! or through an AF_XDP socket, and, with `--sink`, counts what arrives on
//! a second interface with an XDP program, so one process reports sent and
//! received rates per second and the one-way latency of what arrived.
//!
//! ```text
//! ip netns exec gen yard-pktgen --interface g0 --sink g0 \
//!     --dst-mac 02:00:00:00:00:01 --dst 198.18.100.10:53 \
//!     --src 198.18.1.10 --src-count 16 --sport-count 256 --flows 4096 \
//!     --size 60 --duration 5
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use switchyard_perf::generator::{
    live_frames_refused, run_afxdp, run_live, Generator, Pace, LIVE_FRAMES_REFUSED,
};
use switchyard_perf::pktgen::{template, FlowSpec, Proto};
use switchyard_xdp::tools::{Tool, Tools};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES.
    Live,
    /// An AF_XDP socket in copy mode.
    Afxdp,
}

#[derive(Parser)]
#[command(
    name = "yard-pktgen",
    version,
    about = "Packet generator: live XDP frames or AF_XDP, with a counting sink"
)]
struct Args {
    /// Interface to send from (of this network namespace).
    #[arg(long)]
    interface: String,
    #[arg(long, value_enum, default_value_t = Mode::Live)]
    mode: Mode,
    /// Destination MAC (the next hop's, e.g. the LB's interface).
    #[arg(long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source MAC; default: the interface's.
    #[arg(long, value_parser = parse_mac)]
    src_mac: Option<[u8; 6]>,
    /// Destination address and port (IPv4 or [IPv6]).
    #[arg(long)]
    dst: SocketAddr,
    /// First source address (same family as --dst).
    #[arg(long, default_value = "198.18.1.10")]
    src: IpAddr,
    /// Consecutive source addresses.
    #[arg(long, default_value_t = 1)]
    src_count: u32,
    #[arg(long, default_value_t = 10_000)]
    sport_base: u16,
    /// Consecutive source ports per address.
    #[arg(long, default_value_t = 1024)]
    sport_count: u16,
    /// Flows cycled through (address-major, port-minor).
    #[arg(long, default_value_t = 1024, conflicts_with = "new_flows")]
    flows: u64,
    /// Every frame a new flow (up to src-count × sport-count, then again).
    #[arg(long)]
    new_flows: bool,
    /// Every n-th frame opens a new flow (numbered after the --flows cycled
    /// ones): a new-flow rate of the frame rate over n.
    #[arg(long, default_value_t = 0)]
    new_flow_every: u32,
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    proto: Proto,
    /// TCP: every n-th frame is a SYN, the others ACKs of an established
    /// connection (0: ACKs only).
    #[arg(long, default_value_t = 0)]
    syn_every: u32,
    /// Frame length without FCS (60: a 64-byte frame on the wire).
    #[arg(long, default_value_t = 60)]
    size: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Target frames per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Frames per kernel batch (live) or per tx kick (AF_XDP).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Count what arrives on this interface (an XDP program that drops).
    #[arg(long)]
    sink: Option<String>,
    /// Pin the sender to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Print one JSON object at the end instead of a line per second.
    #[arg(long)]
    json: bool,
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?}: expected six hex bytes"))
}

fn interface_mac(name: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .with_context(|| format!("reading the MAC of {name}"))?;
    parse_mac(text.trim()).map_err(anyhow::Error::msg)
}

#[derive(Serialize)]
struct Summary {
    /// What sent the frames: live frames, or AF_XDP when asked for or when
    /// the kernel refused live frames.
    generator: Generator,
    seconds: f64,
    sent: u64,
    sent_mpps: f64,
    received: Option<u64>,
    received_mpps: Option<f64>,
    latency_ns: Option<Latency>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            bail!("could not pin to CPU {cpu}");
        }
    }
    let spec = FlowSpec {
        src_mac: match args.src_mac {
            Some(mac) => mac,
            None => interface_mac(&args.interface)?,
        },
        dst_mac: args.dst_mac,
        src: args.src,
        src_count: args.src_count,
        sport_base: args.sport_base,
        sport_count: args.sport_count,
        flows: if args.new_flows { 0 } else { args.flows },
        new_every: args.new_flow_every,
        dst: args.dst,
        proto: args.proto,
        syn_every: args.syn_every,
        frame_len: args.size,
    };
    let template = template(&spec)?;
    let mut tools = Tools::load().context("loading the generator's XDP programs (needs root)")?;
    tools
        .configure_pktgen(&template.config)
        .context("configuring pktgen")?;
    if let Some(sink) = &args.sink {
        tools
            .attach(Tool::Sink, sink)
            .with_context(|| format!("attaching the sink to {sink}"))?;
    }
    let ifindex = nix::net::if_::if_nametoindex(args.interface.as_str())
        .with_context(|| format!("no interface {}", args.interface))?;
    let pace = Pace {
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        batch: args.batch,
    };

    let start = Instant::now();
    let mut last = (start, 0u64, 0u64);
    let sink_counts = |tools: &Tools| tools.sink().map(|c| c.packets).unwrap_or(0);
    let received_at_start = sink_counts(&tools);
    let histogram_at_start = tools.latency().ok();
    let quiet = args.json;
    let has_sink = args.sink.is_some();
    let mut report = |tools: &Tools, sent: u64| {
        let now = Instant::now();
        if now.duration_since(last.0) < Duration::from_secs(1) {
            return;
        }
        let received = sink_counts(tools) - received_at_start;
        let dt = now.duration_since(last.0).as_secs_f64();
        if !quiet {
            let sent_rate = (sent - last.1) as f64 / dt / 1e6;
            if has_sink {
                let received_rate = (received - last.2) as f64 / dt / 1e6;
                println!(
                    "{:>6.1}s  sent {sent:>12} ({sent_rate:>6.3} Mpps)  received {received:>12} ({received_rate:>6.3} Mpps)",
                    now.duration_since(start).as_secs_f64()
                );
            } else {
                println!(
                    "{:>6.1}s  sent {sent:>12} ({sent_rate:>6.3} Mpps)",
                    now.duration_since(start).as_secs_f64()
                );
            }
        }
        last = (now, sent, received);
    };
    let live = match args.mode {
        Mode::Live => Some(run_live(&tools, &template, ifindex, &pace, |sent| {
            report(&tools, sent);
            true
        })),
        Mode::Afxdp => None,
    };
    let (generator, sent) = match live {
        Some(Ok(sent)) => (Generator::LiveFrames, sent),
        Some(Err(error)) if !live_frames_refused(&error) => return Err(error),
        refused_or_afxdp => {
            if refused_or_afxdp.is_some() {
                eprintln!("yard-pktgen: {LIVE_FRAMES_REFUSED}");
            }
            let sent = run_afxdp(&args.interface, 0, &template, &pace, |sent| {
                report(&tools, sent)
            })?;
            (Generator::Afxdp, sent)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let received = has_sink.then(|| sink_counts(&tools) - received_at_start);
    let latency = match (tools.latency().ok(), histogram_at_start) {
        (Some(now), Some(before)) if has_sink => {
            let h = now.since(&before);
            h.quantile(0.5).map(|p50| Latency {
                p50,
                p90: h.quantile(0.9).unwrap_or(p50),
                p99: h.quantile(0.99).unwrap_or(p50),
                p999: h.quantile(0.999).unwrap_or(p50),
            })
        }
        _ => None,
    };
    let summary = Summary {
        generator,
        seconds,
        sent,
        sent_mpps: sent as f64 / seconds / 1e6,
        received,
        received_mpps: received.map(|r| r as f64 / seconds / 1e6),
        latency_ns: latency,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "total: sent {} in {:.2} s ({:.3} Mpps) with {}{}",
            summary.sent,
            seconds,
            summary.sent_mpps,
            generator.describe(),
            match (summary.received, summary.received_mpps) {
                (Some(r), Some(m)) => format!(", received {r} ({m:.3} Mpps)"),
                _ => String::new(),
            }
        );
        if let Some(l) = &summary.latency_ns {
            println!(
                "one-way latency: p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
                l.p50 / 1e3,
                l.p90 / 1e3,
                l.p99 / 1e3,
                l.p999 / 1e3
            );
        }
    }
    Ok(())
}
