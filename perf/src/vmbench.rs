//! `make bench-vm`: `make bench`'s paths with the LB node a qemu guest on
//! virtio-net, each beside its baseline in the same run. It owns the
//! guest's side of each path (what runs in the guest, started and stopped
//! through its command shell) and the results file `vm-latest.json`; the
//! frames, the sink and the measuring are netbench's ([`Traffic`]). It
//! must never write `latest.json` or the generated block of
//! docs/performance.md: guest figures are not `make bench`'s.
//!
//! ```text
//!  vmgen namespace (host)                     guest (qemu, virtio-net)
//!  tap vm0: AF_XDP sender ──── tap ──── eth0  198.18.1.1/24, backends
//!           sink (XDP)     <──────────        198.18.2.0/24 on-link,
//!                                             neighbours -> vm0's MAC
//! ```
//!
//! Every path sends what it forwards back out of eth0 (a hairpin), to the
//! sink on the tap. The XDP_REDIRECT limit and the redirecting fast path
//! need a second NIC in the guest and are left out.
//!
//! Under software emulation (TCG) every figure is the emulator's speed:
//! [`render`] says so in its header and prints no ratio as a claim.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard_vm_tests::vm::image::{self, ImageSpec};
use switchyard_vm_tests::vm::lab::wait_in_guest;
use switchyard_vm_tests::vm::qemu::{create_tap, Accel, Guest, GuestOptions};
use switchyard_vm_tests::Netns;

use crate::generator::Generator;
use crate::netbench::{
    bench_config, flow_spec, mac_of, mac_text, nftables_rules, parse_mac, ratio, Options,
    PathResult, Placement, Traffic, BACKENDS, LB_ADDR, PATHS, RATIOS,
};
use crate::pktgen::template;
use crate::report::Machine;

/// The tap, in the generator's namespace.
const TAP: &str = "vm0";
const GUEST_NIC: &str = "eth0";
const GUEST_MAC: &str = "52:54:00:5a:00:01";
/// Where a path's process in the guest logs, and its PID.
const LB_LOG: &str = "/tmp/lb.log";
const LB_PID: &str = "/tmp/lb.pid";
const CONFIG_PATH: &str = "/etc/switchyard/bench.yaml";
const CONTROL_SOCKET: &str = "/run/switchyard/control.sock";
const RULES_PATH: &str = "/tmp/kube-proxy.nft";
/// How long a path may take to come up in the guest. Under TCG loading
/// and verifying Switchyard's XDP program alone takes seconds.
const START_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a path may take to send its first frame back: under TCG the
/// first frames of a flow go through the guest's AF_XDP worker slowly.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The paths a guest with one NIC can hold, in `netbench::PATHS`'s
/// order, and what forwards each in the guest.
pub const VM_PATHS: [(&str, &str); 5] = [
    ("xdp_tx_limit", "in-kernel XDP_TX on eth0, no work"),
    ("nftables_dnat", "kube-proxy nftables-mode DNAT, conntrack"),
    ("switchyard_fastpath", "Switchyard, fast path (XDP_TX)"),
    (
        "afxdp_bare_hairpin",
        "Switchyard's AF_XDP sockets (copy mode), no LB work",
    ),
    (
        "switchyard_afxdp",
        "Switchyard, fast path off (AF_XDP copy mode)",
    ),
];

/// The names of [`VM_PATHS`].
pub fn vm_path_names() -> Vec<&'static str> {
    VM_PATHS.iter().map(|(name, _)| *name).collect()
}

/// `make bench`'s paths that need a second NIC in the guest.
pub const LEFT_OUT: [&str; 2] = ["xdp_redirect_limit", "switchyard_fastpath_redirect"];

/// What the header says, and the results file holds, when the guest ran
/// under software emulation.
pub const TCG_CAVEAT: &str = "the guest runs under TCG (software emulation): these rates \
     measure the emulator, not Switchyard or virtio-net";

/// The guest's shape and what to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VmOptions {
    /// Seconds, rounds, flows, frame length, the generator's CPU, `only`;
    /// the placement CPUs do not apply (the guest places its own work).
    pub bench: Options,
    pub vcpus: u32,
    /// Queue pairs of virtio-net and the tap.
    pub queues: u32,
    pub memory_mib: u32,
    /// Host CPUs qemu is pinned to (taskset list); `None`: unpinned.
    pub vcpu_cpus: Option<String>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            bench: Options::default(),
            vcpus: 1,
            queues: 1,
            memory_mib: 1024,
            vcpu_cpus: Some("1".into()),
        }
    }
}

/// One `make bench-vm` run: the schema of vm-latest.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmReport {
    pub command: String,
    pub unix_time: u64,
    pub duration_secs: f64,
    /// The host.
    pub machine: Machine,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Set when the figures measure the emulator ([`TCG_CAVEAT`]).
    pub caveat: Option<String>,
    pub vhost: bool,
    /// `uname -r` in the guest.
    pub guest_kernel: String,
    pub generator: Generator,
    pub options: VmOptions,
    pub paths: Vec<PathResult>,
    /// By `netbench::RATIOS` name, where both paths were measured.
    pub ratios: BTreeMap<String, f64>,
    /// Frames the sink counted over the whole run, readiness checks and
    /// warm-ups included.
    pub sink_frames: u64,
    pub left_out: Vec<String>,
}

impl VmReport {
    pub fn emulated(&self) -> bool {
        self.accel == Accel::Tcg.name()
    }

    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// Where `make bench-vm` writes its results.
pub fn vm_latest_json() -> std::path::PathBuf {
    crate::netbench::results_dir().join("vm-latest.json")
}

/// Boots the bench guest, measures every chosen path in rounds, and
/// returns the report (`command` and `unix_time` left for the caller);
/// `progress` gets a line per step.
pub fn run(options: &VmOptions, mut progress: impl FnMut(&str)) -> Result<VmReport> {
    let started = Instant::now();
    let bench = &options.bench;
    let wanted = |name: &str| bench.only.is_empty() || bench.only.iter().any(|o| o == name);
    for name in &bench.only {
        if !vm_path_names().contains(&name.as_str()) {
            bail!(
                "--only {name}: a guest with one NIC measures {}",
                vm_path_names().join(", ")
            );
        }
    }
    let image = image::build(&ImageSpec::bench_guest()?).context("building the bench guest")?;
    let ns = Netns::new("vmgen").context("creating the generator's namespace")?;
    create_tap(&ns, TAP, options.queues)?;
    let guest_opts = GuestOptions {
        vcpus: options.vcpus,
        memory_mib: options.memory_mib,
        queues: options.queues,
        accel: None,
        mac: GUEST_MAC.into(),
        host_cpus: options.vcpu_cpus.clone(),
        ..GuestOptions::default()
    };
    let mut guest = Guest::boot(&image, &ns, TAP, &guest_opts).context("booting the guest")?;
    progress(&format!(
        "guest: {} vCPUs, {} queues, accel {}, vhost {}, booted in {:.1} s",
        options.vcpus,
        options.queues,
        guest.accel(),
        if guest.vhost() { "on" } else { "off" },
        guest.booted_in().as_secs_f64()
    ));
    let tap_mac = mac_of(&ns, TAP)?;
    setup_guest(&mut guest, tap_mac)?;
    let guest_kernel = guest.check("uname -r", COMMAND_TIMEOUT)?.trim().to_owned();

    let guest_mac = parse_mac(GUEST_MAC)?;
    let established = template(&flow_spec(tap_mac, guest_mac, bench, bench.flows))?;
    let mut traffic = Traffic::open(&ns, TAP, &[TAP], &established, bench)?;
    traffic.ready_timeout = READY_TIMEOUT;
    progress(&format!("generator: {}", traffic.generator.describe()));

    // Placements are netbench's, for the ratios' sake; the guest places
    // its own work.
    let chosen: Vec<(&str, &str, Placement)> = PATHS
        .iter()
        .filter(|(n, _, _)| wanted(n))
        .filter_map(|(n, _, placement)| {
            VM_PATHS
                .iter()
                .find(|(name, _)| name == n)
                .map(|(name, note)| (*name, *note, *placement))
        })
        .collect();
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); chosen.len()];
    for round in 0..bench.rounds.max(1) {
        for (i, (name, _, _)) in chosen.iter().enumerate() {
            let starting = Instant::now();
            start_path(&mut guest, name, options.queues)
                .with_context(|| format!("starting {name} in the guest"))?;
            let up = starting.elapsed();
            let measured = (|| -> Result<(f64, f64)> {
                traffic.tools.configure_pktgen(&established.config)?;
                traffic.wait_ready(&established)?;
                traffic.throughput(&established)
            })();
            let stopped = stop_path(&mut guest, name);
            let (mpps, offered) = measured
                .with_context(|| format!("{name} in the guest: {}", guest_log(&mut guest)))?;
            stopped.with_context(|| format!("stopping {name} in the guest"))?;
            progress(&format!(
                "round {}: {name:<22} {mpps:>8.4} Mpps (offered {offered:.3}; up in {:.1} s)",
                round + 1,
                up.as_secs_f64()
            ));
            rounds[i].push((mpps, offered));
        }
    }
    let paths: Vec<PathResult> = chosen
        .iter()
        .enumerate()
        .map(|(i, &path)| PathResult::from_rounds(path, &rounds[i], None))
        .collect();
    let mut ratios = BTreeMap::new();
    for (name, a, b, _) in RATIOS {
        if let Some(r) = ratio(&paths, a, b) {
            ratios.insert(name.to_owned(), r);
        }
    }
    let emulated = guest.accel() == Accel::Tcg;
    Ok(VmReport {
        command: String::new(),
        unix_time: 0,
        duration_secs: started.elapsed().as_secs_f64(),
        machine: Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        accel: guest.accel().name().into(),
        caveat: emulated.then(|| TCG_CAVEAT.to_owned()),
        vhost: guest.vhost(),
        guest_kernel,
        generator: traffic.generator,
        options: options.clone(),
        paths,
        ratios,
        sink_frames: traffic.tools.sink()?.packets,
        left_out: LEFT_OUT.iter().map(|s| s.to_string()).collect(),
    })
}

/// The guest as netbench's lb namespace: the LB address on eth0, the
/// backends on-link behind it with permanent neighbour entries pointing at
/// the tap (busybox `ip` cannot add neighbours; `arp -s` without `temp`
/// makes them permanent), forwarding on for nftables.
fn setup_guest(guest: &mut Guest, tap_mac: [u8; 6]) -> Result<()> {
    let mut script = format!(
        "ip addr add {LB_ADDR} dev {GUEST_NIC}\n\
         ip link set dev {GUEST_NIC} up\n\
         ip route add 198.18.2.0/24 dev {GUEST_NIC}\n\
         mkdir -p /etc/switchyard\n"
    );
    for i in 1..=BACKENDS {
        script.push_str(&format!(
            "arp -i {GUEST_NIC} -s 198.18.2.{i} {}\n",
            mac_text(tap_mac)
        ));
    }
    for (key, value) in [
        ("ipv4/ip_forward", "1"),
        ("ipv4/conf/all/send_redirects", "0"),
        ("ipv4/conf/eth0/send_redirects", "0"),
        ("ipv4/conf/all/rp_filter", "0"),
        ("ipv4/conf/eth0/rp_filter", "0"),
    ] {
        script.push_str(&format!("echo {value} > /proc/sys/net/{key}\n"));
    }
    script.push_str(&wait_in_guest(
        &format!("[ \"$(cat /sys/class/net/{GUEST_NIC}/operstate)\" = up ]"),
        Duration::from_secs(20),
    ));
    guest
        .check(&script, COMMAND_TIMEOUT)
        .context("addressing the guest's NIC")?;
    guest.write_file(CONFIG_PATH, &bench_config().to_yaml())?;
    guest.write_file(RULES_PATH, &nftables_rules())?;
    Ok(())
}

/// Starts `path`'s forwarder in the guest and waits until it is up. A
/// process is started in the background with its PID in [`LB_PID`], the
/// one [`stop_path`] signals.
fn start_path(guest: &mut Guest, path: &str, queues: u32) -> Result<()> {
    let (command, ready) = match path {
        "xdp_tx_limit" => (
            format!("yard-xdp-limit --interface {GUEST_NIC}"),
            format!("grep -q attached {LB_LOG}"),
        ),
        "nftables_dnat" => {
            guest
                .check(&format!("nft -f {RULES_PATH}"), COMMAND_TIMEOUT)
                .context("nft -f with the kube-proxy-style rules")?;
            return Ok(());
        }
        "afxdp_bare_hairpin" => (
            format!("yard-hairpin --interface {GUEST_NIC}"),
            format!("grep -q serving {LB_LOG}"),
        ),
        "switchyard_afxdp" | "switchyard_fastpath" => {
            let fast_path = if path == "switchyard_afxdp" {
                "--fast-path off"
            } else {
                "--fast-path on --fast-path-tx xdp-tx"
            };
            (
                format!(
                    "RUST_LOG=info switchyard run --config {CONFIG_PATH} --interface {GUEST_NIC} \
                     --queues {queues} --no-pin --control-socket {CONTROL_SOCKET} {fast_path}"
                ),
                format!("yardctl --control-socket {CONTROL_SOCKET} status >/dev/null 2>&1"),
            )
        }
        other => bail!("no guest path {other}"),
    };
    guest.check(
        &format!("{command} </dev/null >{LB_LOG} 2>&1 &\necho $! > {LB_PID}"),
        COMMAND_TIMEOUT,
    )?;
    let ran = guest.run(
        &wait_in_guest(
            &format!("{ready} || {{ kill -0 $(cat {LB_PID}) 2>/dev/null || exit 2; false; }}"),
            START_TIMEOUT,
        ),
        START_TIMEOUT + COMMAND_TIMEOUT,
    )?;
    if ran.status != 0 {
        bail!(
            "{} after {START_TIMEOUT:?}: {}",
            if ran.status == 2 {
                "it exited"
            } else {
                "not up"
            },
            guest_log(guest)
        );
    }
    Ok(())
}

/// Stops what [`start_path`] started: SIGTERM to the PID it recorded, then
/// waits for the process to exit (its XDP program detached), or flushes the
/// nftables ruleset.
fn stop_path(guest: &mut Guest, path: &str) -> Result<()> {
    if path == "nftables_dnat" {
        guest.check("nft flush ruleset", COMMAND_TIMEOUT)?;
        return Ok(());
    }
    let script = format!(
        "pid=$(cat {LB_PID})\nkill $pid\n{}\nrm -f {LB_PID}",
        wait_in_guest("! kill -0 $pid 2>/dev/null", STOP_TIMEOUT)
    );
    guest
        .check(&script, STOP_TIMEOUT + COMMAND_TIMEOUT)
        .map(|_| ())
}

/// The last lines of the guest path's log.
fn guest_log(guest: &mut Guest) -> String {
    match guest.run(&format!("tail -n 30 {LB_LOG}"), COMMAND_TIMEOUT) {
        Ok(ran) => format!("--- {LB_LOG} (guest) ---\n{}", ran.output),
        Err(e) => format!("(cannot read {LB_LOG}: {e:#})"),
    }
}

/// The run as a person reads it: the guest's shape and the generator, the
/// TCG caveat as a header line where it applies, each path's median, and
/// the ratios (under TCG under a heading that says they are no claim).
pub fn render(report: &VmReport) -> String {
    let o = &report.options;
    let mut out = String::new();
    if let Some(caveat) = &report.caveat {
        out.push_str(&format!("NOTE: {caveat}.\n"));
    }
    out.push_str(&format!(
        "accelerator {}, {} vCPUs, {} queues, vhost {}, guest kernel {}; qemu on host CPUs {}, \
         generator on host CPU {}: {}\n",
        report.accel,
        o.vcpus,
        o.queues,
        if report.vhost { "on" } else { "off" },
        report.guest_kernel,
        o.vcpu_cpus.as_deref().unwrap_or("any"),
        o.bench.gen_cpu,
        report.generator.describe()
    ));
    out.push_str(&format!(
        "\n== Throughput through the guest, {}-byte UDP, {} flows, median of {} rounds of {} s\n",
        o.bench.frame_len + 4,
        o.bench.flows,
        o.bench.rounds,
        o.bench.seconds
    ));
    out.push_str(&format!(
        "{:<22} {:>9} {:>11}  {}\n",
        "path", "Mpps", "offered", "what forwards"
    ));
    for p in &report.paths {
        out.push_str(&format!(
            "{:<22} {:>9.4} {:>11.3}  {}\n",
            p.name, p.mpps, p.offered_mpps, p.note
        ));
    }
    out.push_str(&format!(
        "left out (need a second NIC in the guest): {}\n",
        report.left_out.join(", ")
    ));
    if report.emulated() {
        out.push_str(
            "\nsame-run ratios: NOT a performance claim (both sides are the emulator's speed)\n",
        );
    } else {
        out.push_str("\nsame-run ratios:\n");
    }
    for (name, value) in &report.ratios {
        out.push_str(&format!("  {name:<42} {value:>7.2}\n"));
    }
    out
}
