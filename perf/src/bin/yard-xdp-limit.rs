//! `yard-xdp-limit`: holds tools.c's `tx_all` program (XDP_TX of every
//! frame, no work) on an interface until SIGTERM or SIGINT, for `make
//! bench-vm`'s in-kernel limit inside a guest, where the host's loader
//! cannot reach. Prints `attached` once the program is on the interface.

use anyhow::{Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use switchyard_xdp::tools::{Tool, Tools};

#[derive(Parser)]
#[command(
    name = "yard-xdp-limit",
    version,
    about = "In-kernel XDP_TX limit: tools.c's tx_all on an interface until SIGTERM"
)]
struct Args {
    #[arg(long)]
    interface: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Blocked before anything else so a SIGTERM sent right after the
    // `attached` line waits for sigwait instead of killing the process
    // with the program still attached.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("blocking SIGTERM and SIGINT")?;
    let mut tools = Tools::load().context("loading tools.o")?;
    tools
        .attach(Tool::TxAll, &args.interface)
        .with_context(|| format!("attaching tx_all to {} (native mode)", args.interface))?;
    println!("attached");
    let signal = signals.wait().context("waiting for SIGTERM")?;
    tools.detach_all();
    eprintln!("yard-xdp-limit: {signal}, detached from {}", args.interface);
    Ok(())
}
