//! `make bench`'s network half: one topology, one generator, one sink, and
//! every forwarding path measured in turn in the same run, so each figure
//! has its baseline beside it.
//!
//! ```text
//!  gen namespace                         lb namespace
//!  g0 (pktgen sends; sink counts) ── veth ── l0  198.18.1.1/24, backends 198.18.2.0/24 on-link
//!  g1 (sink counts)               ── veth ── l1  (redirect target)
//! ```
//!
//! The generator runs BPF_PROG_TEST_RUN live frames out of g0 on one CPU (or,
//! where the kernel refuses live frames, an AF_XDP socket, said in the
//! results: it offers far less, so fast paths are then bounded by it); the
//! LB's XDP program runs in l0's NAPI on that same CPU (a veth delivers on
//! the sender's CPU), the AF_XDP workers on the other one. Every path sends
//! what it forwards back out of l0 (a hairpin: backends are on-link on l0,
//! their MACs permanent neighbour entries pointing at g0), except the
//! redirect limit, which sends out of l1. The sink, an XDP program on g0 and
//! g1, counts what arrives and the one-way latency of stamped frames.
//!
//! Nothing leaves the two namespaces: addresses are in 198.18.0.0/15 and the
//! namespaces are removed when the run ends, also on failure.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard_vm_tests::config::{GatewaySpec, ListenerSpec, Protocol};
use switchyard_vm_tests::link::{link_json, set_gro};
use switchyard_vm_tests::netns::run_ip;
use switchyard_vm_tests::process::{release_bin, workspace_root};
use switchyard_vm_tests::{in_netns, Daemon, DaemonOptions, Netns, TempDir};
use switchyard_xdp::tools::{LatencyHistogram, Tool, Tools};

use crate::generator::{
    live_frames_refused, run_live, AfxdpSender, Generator, Pace, LIVE_FRAMES_REFUSED,
};
use crate::pktgen::{template, FlowSpec, Proto, Template};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const VIP_PORT: u16 = 53;
const BACKEND_PORT: u16 = 5353;
pub const BACKENDS: u8 = 16;
pub const LB_ADDR: &str = "198.18.1.1/24";
const GEN_ADDR: &str = "198.18.1.10/24";
const CLIENTS: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const REDIRECT_ADDR: &str = "198.18.3.1/24";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the sink may keep receiving after a throughput run before a
/// latency run starts anyway.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);

/// What to measure and how long. Read back from a results file with the
/// defaults for what an older file does not hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Seconds each throughput figure is measured over.
    pub seconds: f64,
    /// Seconds of traffic before measuring (flows get decided and cached).
    pub warmup: f64,
    /// Flows the throughput runs cycle through.
    pub flows: u64,
    /// Frame length without FCS.
    pub frame_len: usize,
    /// Frames per second of the latency runs (paced, AF_XDP generator).
    pub latency_rate: u64,
    pub latency_seconds: f64,
    /// CPU of the generator.
    pub gen_cpu: usize,
    /// CPU of l0's receive processing (threaded NAPI) for the paths
    /// measured with [`Placement::LbCore`].
    pub lb_cpu: usize,
    /// CPU of the AF_XDP workers.
    pub worker_cpu: usize,
    /// Extra `switchyard run` / `yard-hairpin` arguments (AF_XDP tuning).
    pub afxdp_args: Vec<String>,
    /// Measure only these paths (all when empty); no new-flow runs unless
    /// one of them is named `new_flows`.
    pub only: Vec<String>,
    /// Rounds over all paths.
    pub rounds: usize,
    /// Print Switchyard's steering and worker counters after each of its
    /// runs (where its frames went).
    pub show_counters: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 4.0,
            warmup: 1.0,
            flows: 4096,
            frame_len: 60,
            latency_rate: 50_000,
            latency_seconds: 2.0,
            gen_cpu: 0,
            lb_cpu: 1,
            worker_cpu: 1,
            afxdp_args: Vec::new(),
            only: Vec::new(),
            rounds: 3,
            show_counters: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathResult {
    pub name: String,
    pub placement: Placement,
    pub mpps: f64,
    /// Frames the generator offered per second meanwhile.
    pub offered_mpps: f64,
    /// Each round's figure; `mpps` is their median.
    pub rounds_mpps: Vec<f64>,
    pub latency_ns: Option<Latency>,
    pub note: String,
}

impl PathResult {
    /// A path's result from its rounds' `(delivered, offered)` figures:
    /// the medians, and every round's delivered figure.
    pub fn from_rounds(
        (name, note, placement): (&str, &str, Placement),
        rounds: &[(f64, f64)],
        latency_ns: Option<Latency>,
    ) -> PathResult {
        PathResult {
            name: name.into(),
            placement,
            mpps: median(rounds.iter().map(|r| r.0).collect()),
            offered_mpps: median(rounds.iter().map(|r| r.1).collect()),
            rounds_mpps: rounds.iter().map(|r| r.0).collect(),
            latency_ns,
            note: note.into(),
        }
    }
}

/// The median of `figures` (the upper one of an even count); 0 for none.
pub fn median(mut figures: Vec<f64>) -> f64 {
    if figures.is_empty() {
        return 0.0;
    }
    figures.sort_by(f64::total_cmp);
    figures[figures.len() / 2]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewFlows {
    pub name: String,
    pub placement: Placement,
    /// New flows forwarded per second (every frame is a new 5-tuple).
    pub per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetResults {
    /// What sent the frames of the throughput runs.
    pub generator: Generator,
    pub paths: Vec<PathResult>,
    pub afxdp_options: Vec<AfxdpVariant>,
    pub new_flows: Vec<NewFlows>,
    pub options: Options,
}

/// The two namespaces and their links.
struct Net {
    gen: Netns,
    lb: Netns,
    g0_mac: [u8; 6],
    l0_mac: [u8; 6],
    l1_in_lb: u32,
}

pub fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let link = link_json(ns, dev)?;
    let text = link["address"]
        .as_str()
        .ok_or_else(|| anyhow!("{dev} in {} has no address", ns.name()))?;
    parse_mac(text)
}

/// A MAC address as `ip` prints it, `52:54:00:5a:00:01`.
pub fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {text}"))?;
    bytes.try_into().map_err(|_| anyhow!("bad MAC {text}"))
}

pub fn ifindex_in(ns: &Netns, dev: &str) -> Result<u32> {
    link_json(ns, dev)?["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .ok_or_else(|| anyhow!("{dev} in {} has no ifindex", ns.name()))
}

pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where a path's LB work runs, besides the generator's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// l0's receive processing (XDP, the stack, the sink behind it) in a
    /// kernel thread on the LB CPU: the generator has a CPU to itself and
    /// the path's in-kernel work is what is measured.
    LbCore,
    /// l0's receive processing in softirq on the generator's CPU, the
    /// AF_XDP worker alone on the LB CPU: the worker is what is measured.
    GenCore,
}

/// Moves l0's receive processing into a kernel thread on `cpu` (threaded
/// NAPI, Documentation/networking/napi.rst), or back to softirq on the
/// sending CPU with `None`.
fn thread_napi(lb: &Netns, dev: &str, cpu: Option<usize>) -> Result<()> {
    let out = lb
        .command("sh")
        .args([
            "-c",
            &format!(
                "echo {} > /sys/class/net/{dev}/threaded",
                u8::from(cpu.is_some())
            ),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "threaded NAPI on {dev}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let Some(cpu) = cpu else {
        return Ok(());
    };
    let prefix = format!("napi/{dev}-");
    let mut pinned = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(&prefix) {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set)?;
            pinned += 1;
        }
    }
    if pinned == 0 {
        bail!("no {prefix}* kernel thread to pin");
    }
    Ok(())
}

impl Net {
    fn build() -> Result<Net> {
        let gen = Netns::new("gen")?;
        let lb = Netns::new("lb")?;
        for (g, l) in [("g0", "l0"), ("g1", "l1")] {
            run_ip(&[
                "link",
                "add",
                g,
                "netns",
                gen.name(),
                "type",
                "veth",
                "peer",
                "name",
                l,
                "netns",
                lb.name(),
            ])?;
            gen.ip(&["link", "set", g, "up"])?;
            lb.ip(&["link", "set", l, "up"])?;
        }
        gen.ip(&["addr", "add", GEN_ADDR, "dev", "g0"])?;
        lb.ip(&["addr", "add", LB_ADDR, "dev", "l0"])?;
        lb.ip(&["addr", "add", REDIRECT_ADDR, "dev", "l1"])?;
        lb.ip(&["route", "add", "198.18.2.0/24", "dev", "l0"])?;
        let g0_mac = mac_of(&gen, "g0")?;
        for i in 1..=BACKENDS {
            lb.ip(&[
                "neigh",
                "add",
                &format!("198.18.2.{i}"),
                "lladdr",
                &mac_text(g0_mac),
                "dev",
                "l0",
                "nud",
                "permanent",
            ])?;
        }
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/l0/send_redirects", "0"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/l0/rp_filter", "0"),
        ] {
            lb.sysctl(key, value)?;
        }
        // The nftables path has no XDP program on l0: NAPI through GRO lets
        // it take frames the generator sends with XDP.
        set_gro(&lb, "l0", true)?;
        Ok(Net {
            l0_mac: mac_of(&lb, "l0")?,
            l1_in_lb: ifindex_in(&lb, "l1")?,
            g0_mac,
            gen,
            lb,
        })
    }

    fn spec(&self, options: &Options, flows: u64) -> FlowSpec {
        flow_spec(self.g0_mac, self.l0_mac, options, flows)
    }
}

/// The benchmark's UDP frames from `src_mac` to the LB at `dst_mac`:
/// sources on the generator's subnet, the VIP as destination; `flows` 0
/// makes every frame a new flow.
pub fn flow_spec(src_mac: [u8; 6], dst_mac: [u8; 6], options: &Options, flows: u64) -> FlowSpec {
    FlowSpec {
        src_mac,
        dst_mac,
        src: CLIENTS.into(),
        src_count: if flows == 0 { 256 } else { 16 },
        sport_base: 1024,
        sport_count: if flows == 0 { 64_000 } else { 4096 },
        flows,
        new_every: 0,
        dst: SocketAddr::from((VIP, VIP_PORT)),
        proto: Proto::Udp,
        syn_every: 0,
        frame_len: options.frame_len,
    }
}

/// What forwards between l0 and the sink, for one measurement.
enum Lb {
    /// One of tools.c's limit programs on l0, attached while held.
    Limit {
        _attached: Tools,
    },
    /// kube-proxy-style nftables DNAT in the lb namespace's stack.
    Nftables,
    Hairpin(Child),
    /// Stopped on drop.
    Switchyard {
        _daemon: Daemon,
    },
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Lb::Hairpin(child) = self {
            // A child this process spawned, stopped by its PID.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// The rules kube-proxy's nftables mode writes for one UDP Service with 16
/// endpoints (pkg/proxy/nftables): a verdict map from (address, protocol,
/// port) to the service chain, a random choice among endpoint chains, a
/// DNAT per endpoint.
pub fn nftables_rules() -> String {
    let mut rules = String::from(
        "table ip swy-kube-proxy {\n\
         \x20 map service-ips {\n\
         \x20   type ipv4_addr . inet_proto . inet_service : verdict\n",
    );
    rules.push_str(&format!(
        "    elements = {{ {VIP} . udp . {VIP_PORT} : goto service-bench-udp }}\n  }}\n"
    ));
    rules.push_str(
        "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n\
         \x20 chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n",
    );
    let arms: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{i} : goto endpoint-{}", i + 1))
        .collect();
    rules.push_str(&format!(
        "  chain service-bench-udp {{\n    numgen random mod {BACKENDS} vmap {{ {} }}\n  }}\n",
        arms.join(", ")
    ));
    for i in 1..=BACKENDS {
        rules.push_str(&format!(
            "  chain endpoint-{i} {{\n    meta l4proto udp dnat to 198.18.2.{i}:{BACKEND_PORT}\n  }}\n"
        ));
    }
    rules.push_str("}\n");
    rules
}

pub fn bench_config() -> GatewaySpec {
    GatewaySpec {
        namespace: "bench".into(),
        gateway: "edge".into(),
        class: "switchyard".into(),
        vip: VIP,
        listeners: vec![ListenerSpec {
            name: "udp".into(),
            route: "bench-udp".into(),
            protocol: Protocol::Udp,
            port: VIP_PORT,
            target_port: BACKEND_PORT,
            service: "svc".into(),
            backends: (1..=BACKENDS)
                .map(|i| Ipv4Addr::new(198, 18, 2, i))
                .collect(),
        }],
        terminating: Vec::new(),
        vip6: None,
        backends6: Vec::new(),
    }
}

struct Bench<'a> {
    net: &'a Net,
    traffic: Traffic<'a>,
    options: &'a Options,
    config_dir: TempDir,
}

/// The generator side of a run, shared by `make bench` and `make bench-vm`
/// ([`crate::vmbench`]): pktgen and the sink loaded in the generator's
/// namespace, the AF_XDP sender opened once on its interface, and which
/// generator sends the throughput runs. It owns sending and counting; what
/// forwards the frames back is the caller's.
pub struct Traffic<'a> {
    pub ns: &'a Netns,
    /// The interface frames leave by.
    pub ifindex: u32,
    /// pktgen and the sink.
    pub tools: Tools,
    /// The paced sender, opened once; also the throughput generator
    /// where live frames are refused.
    sender: std::sync::Mutex<AfxdpSender>,
    pub generator: Generator,
    pub options: &'a Options,
    /// How long a path may take to send the first frame back.
    pub ready_timeout: Duration,
}

impl Bench<'_> {
    fn start(&self, path: &str) -> Result<Lb> {
        self.start_with(path, &[])
    }

    /// [`Bench::start`] with more `switchyard run` arguments.
    fn start_with(&self, path: &str, variant: &[&str]) -> Result<Lb> {
        let cores = self.options.worker_cpu.to_string();
        let switchyard = |extra: &[&str]| -> Result<Lb> {
            let config = self
                .config_dir
                .write("bench.yaml", &bench_config().to_yaml())?;
            let mut opts = DaemonOptions::new(&["l0"]).queues(1);
            opts.cores = Some(cores.clone());
            for arg in extra
                .iter()
                .chain(variant)
                .map(|s| s.to_string())
                .chain(self.options.afxdp_args.clone())
            {
                opts = opts.arg(arg);
            }
            opts.log_on_drop = false;
            Ok(Lb::Switchyard {
                _daemon: Daemon::start(&self.net.lb, &config, &opts)?,
            })
        };
        match path {
            "xdp_tx_limit" | "xdp_redirect_limit" => {
                let mut tools = Tools::load()?;
                let tool = if path == "xdp_tx_limit" {
                    Tool::TxAll
                } else {
                    Tool::RedirectAll
                };
                let redirect_to = (path == "xdp_redirect_limit").then_some(self.net.l1_in_lb);
                // A devmap resolves ifindexes in the writer's namespace.
                let tools = in_netns(&self.net.lb, move || -> Result<Tools> {
                    if let Some(ifindex) = redirect_to {
                        tools.set_redirect_port(ifindex)?;
                    }
                    tools.attach(tool, "l0")?;
                    Ok(tools)
                })??;
                Ok(Lb::Limit { _attached: tools })
            }
            "nftables_dnat" | "nftables_new_flows" => {
                let mut child = self
                    .net
                    .lb
                    .command("nft")
                    .args(["-f", "-"])
                    .stdin(Stdio::piped())
                    .spawn()
                    .context("running nft (Debian: apt-get install nftables)")?;
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .ok_or_else(|| anyhow!("nft stdin"))?
                    .write_all(nftables_rules().as_bytes())?;
                let status = child.wait()?;
                if !status.success() {
                    bail!("nft -f refused the kube-proxy-style rules ({status})");
                }
                Ok(Lb::Nftables)
            }
            "afxdp_bare_hairpin" => {
                let mut cmd = self.net.lb.command(release_bin("yard-hairpin")?);
                cmd.args(["--interface", "l0", "--core", &cores])
                    .args(&self.options.afxdp_args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                Ok(Lb::Hairpin(cmd.spawn().context("starting yard-hairpin")?))
            }
            "switchyard_afxdp" => switchyard(&["--fast-path", "off"]),
            "switchyard_fastpath" => switchyard(&["--fast-path", "on", "--fast-path-tx", "xdp-tx"]),
            "switchyard_fastpath_redirect" => {
                switchyard(&["--fast-path", "on", "--fast-path-tx", "redirect"])
            }
            "switchyard_new_flows" => switchyard(&["--fast-path", "on"]),
            other => bail!("unknown path {other}"),
        }
    }

    fn place(&self, placement: Placement) -> Result<()> {
        thread_napi(
            &self.net.lb,
            "l0",
            (placement == Placement::LbCore).then_some(self.options.lb_cpu),
        )
    }
}

impl<'a> Traffic<'a> {
    /// Loads pktgen and the sink in `ns`, attaches the sink to each of
    /// `sinks`, opens the AF_XDP sender on queue 0 of `dev`, and picks the
    /// generator: live frames if the kernel lets this process send them
    /// (a short burst of `probe`, which the sink counts before anything is
    /// measured), else AF_XDP, said on stderr.
    pub fn open(
        ns: &'a Netns,
        dev: &str,
        sinks: &[&str],
        probe: &Template,
        options: &'a Options,
    ) -> Result<Traffic<'a>> {
        let mut tools = Tools::load().context("loading the generator's XDP programs")?;
        let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
        let mut tools = in_netns(ns, move || -> Result<Tools> {
            for sink in &sinks {
                tools
                    .attach(Tool::Sink, sink)
                    .with_context(|| format!("attaching the sink to {sink}"))?;
            }
            Ok(tools)
        })??;
        let sender = in_netns(ns, || AfxdpSender::open(dev, 0))??;
        let ifindex = ifindex_in(ns, dev)?;
        tools.configure_pktgen(&probe.config)?;
        let sent = in_netns(ns, || {
            // One chunk (the smallest a live run sends), then stop.
            let pace = Pace {
                duration: Duration::from_secs(1),
                rate: Some(1000),
                batch: 64,
            };
            run_live(&tools, probe, ifindex, &pace, |_| false)
        })?;
        let generator = match sent {
            Ok(_) => Generator::LiveFrames,
            Err(error) if live_frames_refused(&error) => {
                eprintln!("{LIVE_FRAMES_REFUSED}");
                Generator::Afxdp
            }
            Err(error) => return Err(error),
        };
        Ok(Traffic {
            ns,
            ifindex,
            tools,
            sender: std::sync::Mutex::new(sender),
            generator,
            options,
            ready_timeout: READY_TIMEOUT,
        })
    }

    /// Sends until the sink sees stamped frames: the path is up.
    pub fn wait_ready(&self, template: &Template) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        let pace = Pace {
            duration: Duration::from_millis(50),
            rate: Some(100_000),
            batch: 64,
        };
        loop {
            let before = self.tools.sink()?.stamped;
            self.sender
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .send(template, &pace, |_| {})?;
            if self.tools.sink()?.stamped > before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no frame reached the sink within {:?}", self.ready_timeout);
            }
        }
    }

    /// Frames per second at the sink while the generator sends as fast as
    /// it can, after a warm-up; and what the generator offered. The sink is
    /// sampled on the wall clock from another thread: live-frames calls are
    /// long (each pays a setup of tens of milliseconds, so they are large).
    pub fn throughput(&self, template: &Template) -> Result<(f64, f64)> {
        let options = self.options;
        let gen_cpu = options.gen_cpu;
        let tools = &self.tools;
        let ifindex = self.ifindex;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<(f64, f64)> {
            let generator = scope.spawn(|| {
                in_netns(self.ns, || -> Result<(u64, Duration)> {
                    core_affinity::set_for_current(core_affinity::CoreId { id: gen_cpu });
                    let start = Instant::now();
                    let sent = match self.generator {
                        Generator::LiveFrames => {
                            let pace = Pace {
                                duration: Duration::from_secs(3600),
                                rate: None,
                                batch: 64,
                            };
                            // Relaxed: a flag, ordered with nothing else.
                            run_live(tools, template, ifindex, &pace, |_| {
                                !stop.load(Ordering::Relaxed)
                            })?
                        }
                        // AF_XDP sends in short chunks but cannot be told to
                        // stop: it runs just past the sampling window.
                        Generator::Afxdp => {
                            let pace = Pace {
                                duration: Duration::from_secs_f64(
                                    options.warmup + options.seconds + 0.2,
                                ),
                                rate: None,
                                batch: 64,
                            };
                            self.sender
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .send(template, &pace, |_| {})?
                        }
                    };
                    Ok((sent, start.elapsed()))
                })
            });
            let sample =
                || -> Result<(Instant, u64)> { Ok((Instant::now(), tools.sink()?.packets)) };
            std::thread::sleep(Duration::from_secs_f64(options.warmup));
            let (t0, r0) = sample()?;
            std::thread::sleep(Duration::from_secs_f64(options.seconds));
            let (t1, r1) = sample()?;
            stop.store(true, Ordering::Relaxed);
            let (sent, elapsed) = generator
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))??;
            let dt = t1.duration_since(t0).as_secs_f64();
            Ok((
                (r1 - r0) as f64 / dt / 1e6,
                sent as f64 / elapsed.as_secs_f64() / 1e6,
            ))
        })
    }

    /// Waits until the sink stops receiving: frames of a throughput run
    /// still queued in rings would arrive during the latency run with old
    /// stamps, and read as milliseconds of latency.
    fn quiesce(&self) -> Result<()> {
        let deadline = Instant::now() + QUIESCE_TIMEOUT;
        let mut last = self.tools.sink()?.packets;
        let mut quiet = 0;
        while quiet < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.tools.sink()?.packets;
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        Ok(())
    }

    /// One-way latency percentiles at a paced rate well under every path's
    /// capacity.
    pub fn latency(&self, template: &Template) -> Result<Latency> {
        self.quiesce()?;
        let before = self.tools.latency()?;
        let pace = Pace {
            duration: Duration::from_secs_f64(self.options.latency_seconds),
            rate: Some(self.options.latency_rate),
            batch: 16,
        };
        let gen_cpu = self.options.gen_cpu;
        let sender = &self.sender;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    core_affinity::set_for_current(core_affinity::CoreId { id: gen_cpu });
                    sender
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .send(template, &pace, |_| {})
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let h = self.tools.latency()?.since(&before);
        let q = |q: f64| h.quantile(q).unwrap_or(0.0);
        let max = h
            .counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(0.0, |i| LatencyHistogram::bucket_low(i + 1) as f64);
        Ok(Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max,
        })
    }
}

/// The paths of the throughput table, in the order they are measured, and
/// where their LB work runs. Each ratio the benchmark reports compares
/// paths of one placement: the XDP and kernel paths with the LB's receive
/// processing on a core of its own, the AF_XDP paths with the worker on a
/// core of its own.
pub const PATHS: [(&str, &str, Placement); 7] = [
    (
        "xdp_tx_limit",
        "in-kernel XDP_TX on l0, no work",
        Placement::LbCore,
    ),
    (
        "xdp_redirect_limit",
        "in-kernel XDP_REDIRECT l0 -> l1, no work",
        Placement::LbCore,
    ),
    (
        "nftables_dnat",
        "kube-proxy nftables-mode DNAT, conntrack",
        Placement::LbCore,
    ),
    (
        "switchyard_fastpath",
        "Switchyard, fast path (XDP_TX)",
        Placement::LbCore,
    ),
    (
        "switchyard_fastpath_redirect",
        "Switchyard, fast path (redirect, the veth default)",
        Placement::LbCore,
    ),
    (
        "afxdp_bare_hairpin",
        "Switchyard's AF_XDP sockets, no LB work",
        Placement::GenCore,
    ),
    (
        "switchyard_afxdp",
        "Switchyard, fast path off",
        Placement::GenCore,
    ),
];

/// The ratios `make bench` reports: name, the path measured, its baseline,
/// and how the tables name it.
pub const RATIOS: [(&str, &str, &str, &str); 4] = [
    (
        "fastpath_vs_xdp_tx_limit",
        "switchyard_fastpath",
        "xdp_tx_limit",
        "fast path / in-kernel XDP_TX limit",
    ),
    (
        "fastpath_vs_nftables",
        "switchyard_fastpath",
        "nftables_dnat",
        "fast path / nftables DNAT",
    ),
    (
        "afxdp_vs_bare_hairpin",
        "switchyard_afxdp",
        "afxdp_bare_hairpin",
        "AF_XDP only / bare AF_XDP hairpin",
    ),
    (
        "fastpath_redirect_vs_xdp_redirect_limit",
        "switchyard_fastpath_redirect",
        "xdp_redirect_limit",
        "fast path (redirect) / in-kernel XDP_REDIRECT limit",
    ),
];

/// The path a path's throughput is compared with: its placement's
/// no-work limit, or for the redirecting fast path the redirect limit.
pub fn baseline_of(name: &str, placement: Placement) -> &'static str {
    match (name, placement) {
        ("switchyard_fastpath_redirect", _) => "xdp_redirect_limit",
        (_, Placement::LbCore) => "xdp_tx_limit",
        (_, Placement::GenCore) => "afxdp_bare_hairpin",
    }
}

/// `a` over `b`: the median over rounds of the two paths' figures taken in
/// the same round (measured minutes apart at most, so a slow spell of the
/// machine touches both).
pub fn ratio(paths: &[PathResult], a: &str, b: &str) -> Option<f64> {
    let rounds = |name: &str| {
        paths
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.rounds_mpps.clone())
    };
    let (a, b) = (rounds(a)?, rounds(b)?);
    let mut ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y.max(1e-9)).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[ratios.len() / 2])
}

impl Placement {
    /// As results files and tables spell it.
    pub fn name(self) -> &'static str {
        match self {
            Placement::LbCore => "lb_core",
            Placement::GenCore => "gen_core",
        }
    }
}

/// The AF_XDP options tried on Switchyard with the fast path off, each
/// against the defaults in the same round.
pub const AFXDP_VARIANTS: [(&str, &[&str]); 5] = [
    ("--tx-skb-budget 256", &["--tx-skb-budget", "256"]),
    ("--busy-poll 50", &["--busy-poll", "50"]),
    ("--need-wakeup off", &["--need-wakeup", "off"]),
    ("--batch-size 32", &["--batch-size", "32"]),
    ("--batch-size 128", &["--batch-size", "128"]),
];

/// Rounds of the AF_XDP options, each option against the defaults of its
/// round.
pub const AFXDP_ROUNDS: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AfxdpVariant {
    pub args: String,
    /// Median over rounds.
    pub mpps: f64,
    /// Median over rounds of this variant's figure over the defaults' of
    /// the same round.
    pub vs_defaults: f64,
}

/// Runs every measurement; `progress` gets a line per step.
pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<NetResults> {
    let net = Net::build().context("building the benchmark namespaces")?;
    let established = template(&net.spec(options, options.flows))?;
    let fresh = template(&net.spec(options, 0))?;
    let traffic = Traffic::open(&net.gen, "g0", &["g0", "g1"], &established, options)?;
    progress(&format!("generator: {}", traffic.generator.describe()));
    let mut bench = Bench {
        traffic,
        options,
        config_dir: TempDir::new("bench")?,
        net: &net,
    };
    let mut new_flows = Vec::new();
    let wanted = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let chosen: Vec<(&str, &str, Placement)> = PATHS
        .iter()
        .copied()
        .filter(|(n, _, _)| wanted(n))
        .collect();
    // Rounds over all paths, rather than one path at a time, so a slow
    // spell of this shared machine lands on every path alike; the median
    // of each path's rounds is reported.
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); chosen.len()];
    let mut latencies: Vec<Option<Latency>> = vec![None; chosen.len()];
    for round in 0..options.rounds.max(1) {
        for (i, (name, note, placement)) in chosen.iter().enumerate() {
            let lb = bench.start(name)?;
            bench.place(*placement)?;
            bench.traffic.tools.configure_pktgen(&established.config)?;
            bench.traffic.wait_ready(&established)?;
            let (mpps, offered) = bench.traffic.throughput(&established)?;
            if let Lb::Switchyard { _daemon: daemon } = &lb {
                if options.show_counters {
                    let stats = daemon.stats()?;
                    progress(&format!(
                        "  steering {:?}; workers {:?}",
                        stats.xdp_steering, stats.workers
                    ));
                }
            }
            let mut line = format!(
                "round {}: {name:<30} {mpps:>7.3} Mpps (offered {offered:.3})",
                round + 1
            );
            if round == 0 {
                // Latency in softirq for every path, as a NIC's interrupt
                // would run it: a kernel thread's wake-up would be most of
                // what is measured.
                bench.place(Placement::GenCore)?;
                let latency = bench.traffic.latency(&established)?;
                line.push_str(&format!(
                    "; latency p50 {:.1} us, p99 {:.1} us  [{note}]",
                    latency.p50 / 1e3,
                    latency.p99 / 1e3
                ));
                latencies[i] = Some(latency);
            }
            progress(&line);
            rounds[i].push((mpps, offered));
            drop(lb);
            if name.starts_with("nftables") {
                bench
                    .net
                    .lb
                    .command("nft")
                    .args(["flush", "ruleset"])
                    .status()?;
            }
        }
    }
    let paths: Vec<PathResult> = chosen
        .iter()
        .enumerate()
        .map(|(i, &path)| PathResult::from_rounds(path, &rounds[i], latencies[i].clone()))
        .collect();
    let mut afxdp_options = Vec::new();
    if wanted("afxdp_options") {
        let mut figures: Vec<Vec<(f64, f64)>> = vec![Vec::new(); AFXDP_VARIANTS.len()];
        for round in 0..AFXDP_ROUNDS {
            let mut run = |variant: &[&str]| -> Result<f64> {
                let _lb = bench.start_with("switchyard_afxdp", variant)?;
                bench.place(Placement::GenCore)?;
                bench.traffic.tools.configure_pktgen(&established.config)?;
                bench.traffic.wait_ready(&established)?;
                Ok(bench.traffic.throughput(&established)?.0)
            };
            let defaults = run(&[])?;
            progress(&format!(
                "afxdp options, round {}: defaults {defaults:.3} Mpps",
                round + 1
            ));
            for (i, (name, args)) in AFXDP_VARIANTS.iter().enumerate() {
                let mpps = run(args)?;
                progress(&format!(
                    "afxdp options, round {}: {name:<20} {mpps:.3} Mpps",
                    round + 1
                ));
                figures[i].push((mpps, mpps / defaults.max(1e-9)));
            }
        }
        for (i, (name, _)) in AFXDP_VARIANTS.iter().enumerate() {
            afxdp_options.push(AfxdpVariant {
                args: (*name).into(),
                mpps: median(figures[i].iter().map(|f| f.0).collect()),
                vs_defaults: median(figures[i].iter().map(|f| f.1).collect()),
            });
        }
    }
    // Every frame a new 5-tuple: Switchyard's workers decide each one,
    // nftables makes a conntrack entry for each. Both placements, since the
    // two do that work in different places.
    for (name, path, placement) in [
        ("switchyard", "switchyard_new_flows", Placement::GenCore),
        ("switchyard", "switchyard_new_flows", Placement::LbCore),
        ("nftables_dnat", "nftables_new_flows", Placement::GenCore),
        ("nftables_dnat", "nftables_new_flows", Placement::LbCore),
    ] {
        if !wanted("new_flows") {
            break;
        }
        let lb = bench.start(path)?;
        bench.place(placement)?;
        bench.traffic.tools.configure_pktgen(&established.config)?;
        bench.traffic.wait_ready(&established)?;
        bench.traffic.tools.configure_pktgen(&fresh.config)?;
        let (mpps, _) = bench.traffic.throughput(&fresh)?;
        progress(&format!(
            "new flows: {name:<14} {placement:?}: {:.0} per second",
            mpps * 1e6
        ));
        new_flows.push(NewFlows {
            name: name.into(),
            placement,
            per_sec: mpps * 1e6,
        });
        drop(lb);
        if path.starts_with("nftables") {
            bench
                .net
                .lb
                .command("nft")
                .args(["flush", "ruleset"])
                .status()?;
        }
    }
    Ok(NetResults {
        generator: bench.traffic.generator,
        paths,
        afxdp_options,
        new_flows,
        options: options.clone(),
    })
}

/// Where `make bench` writes its results.
pub fn results_dir() -> PathBuf {
    workspace_root().join("perf/results")
}

/// A bar chart of the paths' Mpps, as SVG.
pub fn svg_chart(paths: &[PathResult], title: &str) -> String {
    let width = 760.0;
    let bar_h = 26.0;
    let left = 230.0;
    let top = 40.0;
    let height = top + paths.len() as f64 * (bar_h + 10.0) + 30.0;
    let max = paths
        .iter()
        .map(|p| p.mpps)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let scale = (width - left - 90.0) / max;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{title}</text>\n"
    );
    for (i, p) in paths.iter().enumerate() {
        let y = top + i as f64 * (bar_h + 10.0);
        let w = p.mpps * scale;
        let fill = if p.name.starts_with("switchyard") {
            "#2b6cb0"
        } else {
            "#a0aec0"
        };
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{fill}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{:.2} Mpps</text>\n",
            left - 8.0,
            y + bar_h * 0.68,
            p.name,
            left + w + 6.0,
            y + bar_h * 0.68,
            p.mpps
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Runs one of the workspace's release binaries and returns its stdout.
pub fn run_bin(name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(release_bin(name)?)
        .args(args)
        .output()
        .with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `path` relative to the workspace, for printing.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}
