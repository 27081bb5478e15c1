//! `switchyard decap`: on a backend host of the `ipip` and `gue` modes,
//! attach the decapsulation XDP program to one interface, keep it told of
//! the host's addresses, log its counters now and then, and detach it on
//! SIGINT or SIGTERM, printing the final counts. Nothing stays attached
//! after it exits, whatever way it exits short of SIGKILL.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use switchyard_daemon::interfaces::local_addresses;
use switchyard_xdp::decap::Decap;

use crate::DecapArgs;

/// How often the host's addresses are read again: an address added after
/// the start (the VIP's backend address moving here) is taken within it.
const ADDRESS_REFRESH: Duration = Duration::from_secs(1);

pub fn decap(args: DecapArgs) -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("opening a signalfd")?;

    let _ = switchyard_dataplane::afxdp::raise_memlock_limit();
    let gue_port = (args.gue_port != 0).then_some(args.gue_port);
    let mut decap = Decap::load(gue_port).context("loading the decapsulation program")?;
    let mut addresses = local_addresses().context("reading this host's addresses")?;
    decap
        .set_addresses(&addresses)
        .context("giving the program this host's addresses")?;
    let mode = decap
        .attach(&args.interface, crate::run::attach_mode(args.xdp_mode))
        .with_context(|| format!("attaching the decapsulation program to {}", args.interface))?;
    log::info!(
        "decapsulating IPIP{} to {} address(es) on {} ({mode} XDP)",
        gue_port.map_or(String::new(), |port| format!(" and GUE to port {port}")),
        addresses.len(),
        args.interface,
    );

    let served = serve(&mut decap, &signal_fd, &args, &mut addresses);
    // Detached before anything else can fail: a program left attached
    // would keep stripping tunnels with no one reading its counters.
    let detached = decap
        .detach()
        .with_context(|| format!("detaching from {}", args.interface));
    match decap.counters() {
        Ok(counters) => println!("decap {}: {counters}", args.interface),
        Err(err) => log::warn!("reading the final counters: {err}"),
    }
    served.and(detached)
}

fn serve(
    decap: &mut Decap,
    signal_fd: &SignalFd,
    args: &DecapArgs,
    addresses: &mut Vec<std::net::IpAddr>,
) -> Result<()> {
    let stats_every = Duration::from_secs(args.stats_interval);
    let mut last_stats = Instant::now();
    let mut last_refresh = Instant::now();
    loop {
        let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err).context("waiting for a signal"),
        }
        if let Some(info) = signal_fd.read_signal().context("reading a signal")? {
            let name = Signal::try_from(info.ssi_signo as i32)
                .map_or_else(|_| info.ssi_signo.to_string(), |s| s.to_string());
            log::info!("{name}: detaching from {}", args.interface);
            return Ok(());
        }
        if last_refresh.elapsed() >= ADDRESS_REFRESH {
            last_refresh = Instant::now();
            match local_addresses() {
                Ok(now) if now != *addresses => {
                    decap
                        .set_addresses(&now)
                        .context("giving the program this host's addresses")?;
                    log::info!("now decapsulating to {} address(es)", now.len());
                    *addresses = now;
                }
                Ok(_) => {}
                Err(err) => log::warn!("reading this host's addresses: {err}"),
            }
        }
        if args.stats_interval > 0 && last_stats.elapsed() >= stats_every {
            last_stats = Instant::now();
            match decap.counters() {
                Ok(counters) => log::info!("decap {}: {counters}", args.interface),
                Err(err) => log::warn!("reading the counters: {err}"),
            }
        }
    }
}
