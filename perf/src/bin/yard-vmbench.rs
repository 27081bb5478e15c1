//! `yard-vmbench`: `make bench-vm`. `make bench`'s paths with the LB node a
//! qemu guest on virtio-net (the in-kernel XDP_TX limit, kube-proxy-style
//! nftables DNAT, a bare AF_XDP hairpin, Switchyard with the fast path off
//! and on), each path's median over rounds and the same-run ratios,
//! printed and written to perf/results/vm-latest.json. Under software
//! emulation (TCG) it says plainly that the rates measure the emulator.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use switchyard_perf::netbench::{self, Options};
use switchyard_perf::vmbench::{self, VmOptions};

#[derive(Parser)]
#[command(
    name = "yard-vmbench",
    version,
    about = "make bench-vm: make bench's paths with the LB node a guest on virtio-net"
)]
struct Args {
    /// Seconds each throughput figure is measured over.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Rounds over all paths; each path's figure is its median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measure only these paths (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The guest's vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Queue pairs of the guest's virtio-net NIC and its tap.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Host CPU of the generator.
    #[arg(long, default_value_t = 0)]
    gen_cpu: usize,
    /// Host CPUs qemu runs on (a taskset list, e.g. `2-5`); `any` leaves
    /// them to the scheduler.
    #[arg(long, default_value = "1")]
    vcpu_cpus: String,
    /// Flows of the throughput runs.
    #[arg(long, default_value_t = 4096)]
    flows: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let options = VmOptions {
        bench: Options {
            seconds: args.seconds,
            rounds: args.rounds,
            only: args.only.clone(),
            gen_cpu: args.gen_cpu,
            flows: args.flows,
            ..VmOptions::default().bench
        },
        vcpus: args.vcpus,
        queues: args.queues,
        vcpu_cpus: (args.vcpu_cpus != "any").then(|| args.vcpu_cpus.clone()),
        ..VmOptions::default()
    };
    println!(
        "yard-vmbench: {} rounds of {} s per path; paths {}",
        options.bench.rounds,
        options.bench.seconds,
        vmbench::vm_path_names().join(", ")
    );
    let mut report = vmbench::run(&options, |line| println!("{line}"))?;
    // `make bench-vm` runs it without arguments; any other run says how.
    let given: Vec<String> = std::env::args().skip(1).collect();
    report.command = if given.is_empty() {
        "make bench-vm".to_owned()
    } else {
        format!("yard-vmbench {}", given.join(" "))
    };
    report.unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("\n{}", vmbench::render(&report));
    let dir = netbench::results_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = vmbench::vm_latest_json();
    report.write(&path)?;
    println!("wrote {}", netbench::shown(&path));
    Ok(())
}
