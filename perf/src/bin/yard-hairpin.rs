//! `yard-hairpin`: the AF_XDP baseline for `make bench`. The same steering
//! program and AF_XDP sockets as `switchyard run` (same ring sizes, batch
//! size, need_wakeup, busy-poll and tx budget flags), but no load-balancing
//! work: every frame steered to a socket is sent straight back out of the
//! interface it came in on, untouched. The gap between this and Switchyard
//! with the fast path off is the cost of Switchyard's per-packet work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_dataplane::afxdp::{BusyPoll, PortSpec, XskConfig, XskPorts, ZeroCopy};
use switchyard_dataplane::io::{PacketIo, Verdict};
use switchyard_xdp::{AttachMode, ServiceMatch, Steering};

#[derive(Parser)]
#[command(
    name = "yard-hairpin",
    version,
    about = "AF_XDP hairpin baseline: Switchyard's steering and sockets, no LB work"
)]
struct Args {
    #[arg(long)]
    interface: String,
    /// The VIP whose frames are steered, `ADDR:PORT` (UDP).
    #[arg(long, default_value = "198.18.100.10:53")]
    vip: std::net::SocketAddrV4,
    #[arg(long)]
    core: Option<usize>,
    /// Seconds to run (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
    /// AF_XDP need_wakeup, spelled as `switchyard run` spells it.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    need_wakeup: String,
    #[arg(long)]
    busy_poll: Option<u32>,
    #[arg(long, default_value_t = 64)]
    busy_poll_budget: u32,
    #[arg(long)]
    tx_skb_budget: Option<u32>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let ifindex = nix::net::if_::if_nametoindex(args.interface.as_str())
        .with_context(|| format!("no interface {}", args.interface))?;
    let _ = switchyard_dataplane::afxdp::raise_memlock_limit();
    let mut steering = Steering::load().context("loading the steering program")?;
    steering
        .attach(&args.interface, AttachMode::Native)
        .with_context(|| format!("attaching to {}", args.interface))?;
    steering.set_services(
        &[ServiceMatch::udp(
            (*args.vip.ip()).into(),
            args.vip.port(),
            1,
        )],
        &[],
    )?;
    let config = XskConfig {
        batch_size: args.batch_size,
        ring_size: args.ring_size,
        zero_copy: ZeroCopy::Auto,
        need_wakeup: args.need_wakeup == "on",
        busy_poll: args.busy_poll.map(|usecs| BusyPoll {
            usecs,
            budget: args.busy_poll_budget,
        }),
        tx_skb_budget: args.tx_skb_budget,
        ..XskConfig::default()
    };
    let ports = [PortSpec {
        name: args.interface.clone(),
        ifindex,
    }];
    let mut io = XskPorts::open(&ports, 0, &config).context("opening the AF_XDP socket")?;
    steering.register_socket(ifindex, 0, io.socket_fds()[0])?;
    if let Some(core) = args.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    eprintln!("yard-hairpin: serving {} on {}", args.vip, args.interface);
    let until = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let (mut received, mut sent) = (0u64, 0u64);
    while !STOP.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
        let outcome = io.run_batch(&mut |ingress, _frame, _next| Verdict::Transmit(ingress));
        received += outcome.received as u64;
        sent += outcome.transmitted as u64;
        if outcome.received == 0 {
            io.wait(50);
        }
    }
    steering.detach_all()?;
    eprintln!("yard-hairpin: received {received}, sent {sent}");
    Ok(())
}
