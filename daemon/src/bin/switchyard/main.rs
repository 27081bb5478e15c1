//! `switchyard`: the load-balancer appliance.

mod check;
mod decap;
mod options;
mod reload;
mod run;
mod takeover;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_dataplane::afxdp::ZeroCopy;
use switchyard_dataplane::fast_path::HairpinTx;
use switchyard_dataplane::flow::FlowTimeouts;
use switchyard_proto::DEFAULT_CONTROL_SOCKET;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "L4 load balancer on XDP and AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listeners of a Gateway API config on the given interfaces.
    Run(Box<RunArgs>),
    /// Read a config file and print what it compiles to, without serving it.
    Check(CheckArgs),
    /// On a backend host of `ipip` or `gue` forwarding: strip the outer
    /// headers of tunnel packets to this host in XDP, until SIGINT/SIGTERM.
    Decap(DecapArgs),
    /// Detach the XDP program that `run` left pinned in this network
    /// namespace and remove its pins and maps: the node stops forwarding.
    Detach(takeover::DetachArgs),
}

#[derive(clap::Args)]
pub struct DecapArgs {
    /// The interface tunnel packets arrive on.
    #[arg(long)]
    interface: String,
    /// UDP port GUE arrives on (the listener's `guePort`); 0 takes no GUE.
    #[arg(long, default_value_t = switchyard_config::snapshot::DEFAULT_GUE_PORT)]
    gue_port: u16,
    /// Seconds between counter log lines; 0 logs only the final one.
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("config_source").required(true).args(["config", "cluster"])))]
pub struct RunArgs {
    /// Gateway API YAML (multi-document), reloaded when it changes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Take the config from a cluster instead of a file: start serving
    /// nothing and apply the objects `switchyard-kube` sends over the
    /// control socket, as a file's would be.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: keep the last applied cluster objects in FILE
    /// (replaced whole on every applied update) and serve them at start,
    /// before `switchyard-kube` has sent anything.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    cluster_cache: Option<PathBuf>,
    /// Interface to serve on; repeat for a client side and a backend side.
    #[arg(long = "interface", required = true)]
    interfaces: Vec<String>,
    /// Queues (and workers) per interface: every receive queue must be
    /// served, so this can only confirm the interfaces' count (the default).
    #[arg(long)]
    queues: Option<u32>,
    /// Cores to pin workers to, e.g. `2,3`; worker q gets the q-th (cycling).
    #[arg(long, value_delimiter = ',')]
    cores: Option<Vec<usize>>,
    /// The control socket `yardctl` talks to (mode 0600). Only a stale
    /// socket (one nobody answers on) there is replaced; anything else
    /// there, or a daemon answering on it, refuses the start.
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Accept a config (at a reload) that serves no listener: a file with
    /// no objects, or one that removes every listener. Without it such a
    /// file is refused, since an empty or truncated file is nearly always
    /// a mistake, and the running config stays. With --cluster, only a
    /// cluster update with no objects at all is refused without it.
    #[arg(long)]
    allow_no_listeners: bool,
    /// AF_XDP zero-copy: `auto` falls back to copy mode where the driver lacks it.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    zero_copy: ZeroCopy,
    /// AF_XDP frames a worker takes per batch from each interface.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch_size: u32,
    /// AF_XDP ring sizes (rx, tx, fill, completion); a power of two.
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
    /// AF_XDP need_wakeup: kick the kernel only when its rings ask for it.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    need_wakeup: OnOff,
    /// Busy-poll the AF_XDP sockets for this many microseconds per poll
    /// (SO_PREFER_BUSY_POLL, SO_BUSY_POLL); off when not given.
    #[arg(long, value_name = "USECS")]
    busy_poll: Option<u32>,
    /// Packets per busy-poll spin (SO_BUSY_POLL_BUDGET).
    #[arg(long, default_value_t = 64)]
    busy_poll_budget: u32,
    /// Frames the kernel sends per tx kick in copy mode
    /// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17+; 32 up to --ring-size).
    #[arg(long)]
    tx_skb_budget: Option<u32>,
    /// The XDP flow cache: workers install the flows they decided so the
    /// XDP program rewrites and sends their later packets itself.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    fast_path: OnOff,
    /// How the fast path sends a frame back out of its own port: `auto`
    /// uses XDP_TX except on veth (whose peer needs an XDP program to
    /// receive XDP_TX frames), where it redirects.
    #[arg(long, value_enum, default_value_t = HairpinTx::Auto)]
    fast_path_tx: HairpinTx,
    /// Source ports `fullnat` listeners rewrite clients' flows to, e.g.
    /// `10000-32767`, split evenly among the workers. Must not overlap the
    /// kernel's ephemeral range (`net.ipv4.ip_local_port_range`): answers
    /// to the node's own connections would be taken for full-NAT ones.
    /// Without it, `fullnat` flows are refused (`snat_ports_exhausted`).
    #[arg(long, value_name = "FIRST-LAST")]
    snat_ports: Option<switchyard_dataplane::snat::SnatPorts>,
    /// Flows the XDP flow cache holds, over all workers (about 150 bytes
    /// each, allocated at start).
    #[arg(long, default_value_t = switchyard_xdp::consts::MAX_CACHED_FLOWS)]
    fast_path_capacity: u32,
    /// XDP attach mode: `auto` tries native (driver) mode, then generic.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    xdp_mode: XdpModeArg,
    /// Flows each worker tracks at most.
    #[arg(long, default_value_t = 65536)]
    flow_capacity: usize,
    /// Flows each worker tracks beside those before they complete their
    /// opening (TCP handshake, a UDP flow's first packet): a flood of new
    /// flows churns these and never evicts an established flow.
    #[arg(long, default_value_t = switchyard_dataplane::worker::DEFAULT_EMBRYONIC_CAPACITY)]
    embryonic_capacity: usize,
    /// Seconds an established TCP flow may idle before it is forgotten.
    #[arg(long, default_value_t = FlowTimeouts::DEFAULT.tcp.as_secs())]
    tcp_timeout: u64,
    /// Seconds a TCP flow that has not got past its first segment may idle.
    #[arg(long, default_value_t = FlowTimeouts::DEFAULT.tcp_syn.as_secs())]
    tcp_syn_timeout: u64,
    /// Seconds a TCP flow lingers after FIN or RST.
    #[arg(long, default_value_t = FlowTimeouts::DEFAULT.tcp_closing.as_secs())]
    tcp_closing_timeout: u64,
    /// Seconds a UDP flow may idle.
    #[arg(long, default_value_t = FlowTimeouts::DEFAULT.udp.as_secs())]
    udp_timeout: u64,
    /// Seed of the flow hash; LB nodes sharing traffic must use the same one.
    #[arg(long, default_value_t = 0)]
    hash_seed: u32,
    /// Clients the ClientIP session-affinity table holds (shared by all
    /// workers; 16 bytes each). When full, the least recently used entry of
    /// a bucket gives way and that client is hashed afresh.
    #[arg(long, default_value_t = 262_144)]
    affinity_capacity: usize,
    /// Health probes in flight at once, over all endpoints: bounds the
    /// sockets and CPU active health checks take however many endpoints
    /// there are (a probe waiting for its turn past its slot is skipped).
    #[arg(long, default_value_t = 256)]
    health_max_concurrent: usize,
    /// Threads running the health probes (off the packet path).
    #[arg(long, default_value_t = 1)]
    health_threads: usize,
    /// This LB node's name among the others: what the L2 election hashes
    /// and `yardctl node` shows. Default: the host name.
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// UDP port of the heartbeats LB nodes of one segment send each other
    /// (L2 announcements only).
    #[arg(long, value_name = "PORT", default_value_t = switchyard_daemon::announce::l2::DEFAULT_HEARTBEAT_PORT)]
    l2_heartbeat_port: u16,
    /// Milliseconds between two heartbeats (L2 announcements only).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    l2_heartbeat_ms: u64,
    /// A peer not heard from for this many milliseconds is dead, and the
    /// VIPs it owned are elected again among the others.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    l2_dead_after_ms: u64,
    /// BIRD's control socket (BGP announcements only).
    #[arg(long, value_name = "PATH", default_value = switchyard_daemon::announce::bgp::DEFAULT_BIRD_SOCKET)]
    bird_socket: PathBuf,
    /// Folder of the route files BIRD's configuration includes (BGP
    /// announcements only).
    #[arg(long, value_name = "DIR", default_value = switchyard_daemon::announce::bgp::DEFAULT_ROUTE_DIR)]
    bird_routes: PathBuf,
    /// Answer DNS (UDP and TCP) for the Gateways' names on this address,
    /// e.g. `198.18.1.1:53`.
    #[arg(long, value_name = "ADDR:PORT")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics (text exposition) at
    /// `http://ADDR:PORT/metrics`, e.g. `127.0.0.1:9464`.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    resolve: ResolveArgs,
    #[command(flatten)]
    restart: takeover::RestartArgs,
}

/// Inputs of resolution besides the file.
#[derive(clap::Args)]
pub struct ResolveArgs {
    /// Gateway DNS names are `<gateway>.<namespace>.gw.<cluster-domain>`.
    #[arg(long, default_value = switchyard_config::dns::DEFAULT_CLUSTER_DOMAIN,
          value_parser = switchyard_config::dns::cluster_domain)]
    cluster_domain: String,
    /// Seed of the Maglev tables; every LB node sharing traffic must use
    /// the same one (as with --hash-seed for the flow hash).
    #[arg(long, default_value_t = 0)]
    maglev_seed: u32,
}

impl ResolveArgs {
    pub fn options(&self) -> switchyard_config::Options {
        switchyard_config::Options {
            cluster_domain: self.cluster_domain.clone(),
            maglev_seed: self.maglev_seed,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Gateway API YAML (multi-document) to compile, as `run --config` would.
    #[arg(long)]
    config: PathBuf,
    /// Show the Maglev slot table of one listener, `namespace/gateway/listener`.
    #[arg(long, value_name = "LISTENER")]
    maglev: Option<String>,
    /// Output format: the listener tables, or the compiled config as JSON
    /// or YAML.
    #[arg(short, long, value_enum, default_value_t = check::Output::Table)]
    output: check::Output,
    #[command(flatten)]
    resolve: ResolveArgs,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Check(args) => check::check(args),
        Command::Decap(args) => decap::decap(args),
        Command::Detach(args) => takeover::detach(args),
    };
    if let Err(err) = result {
        // A config error is `FILE:LINE: what and why`, as compilers print
        // theirs, so editors and CI annotations can jump to it.
        if err.downcast_ref::<switchyard_config::LoadError>().is_some() {
            eprintln!("{err:#}");
        } else {
            eprintln!("switchyard: {err:#}");
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help_text() {
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
        walk(&Cli::command(), "switchyard", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
