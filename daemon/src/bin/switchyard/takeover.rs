//! Restarts and upgrades that lose no flow. The steering program's link
//! and maps are pinned in bpffs (`--pin-dir`, one directory per network
//! namespace, since bpffs is global to the host), so they outlive the
//! daemon: while none runs the program keeps forwarding the flows in its
//! cache, and the next `switchyard run` takes them over (`xdp::pins`).
//!
//! Two ways in. After SIGTERM the program stays pinned and the next daemon
//! finds it. With `--takeover` the new daemon starts beside a running one,
//! loads and programs everything, puts its program on the pinned links
//! (the old one's sockets keep receiving meanwhile: the socket map is
//! shared; under maps of another layout the old program stays on the links
//! until the new sockets are in, see `Steering::finish_takeover`), then
//! asks the old one over the control socket (`HandOver`) to
//! close its AF_XDP sockets and exit, since two sockets cannot bind one
//! queue; it binds its own at once. Either way the new workers start with
//! the flows read back from the cache, and only then is the new daemon's
//! config published to the program: until that moment the old cache
//! entries keep applying, so cached flows never wait for a worker.
//!
//! This module owns that sequence and the exit side of it (leave the pins,
//! or take everything down with `--detach-on-exit` or `switchyard
//! detach`); `run.rs` calls into it at each step.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam::channel::{self, Receiver, Sender};
use switchyard_config::snapshot::Snapshot;
use switchyard_daemon::control::{ControlError, ControlServer, ControlState, HandOverHook};
use switchyard_dataplane::fast_path::{monotonic_ns, Egress, FastPath};
use switchyard_dataplane::rebuild;
use switchyard_proto::{client, HandOverReport, Request, Response};
use switchyard_xdp::{pins::PinDir, LoadOptions, Steering};

/// Where pins go by default: bpffs's conventional mount point.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/switchyard";

/// How long a daemon taking over waits for its predecessor: to answer the
/// hand-over, and to leave the control socket.
const PREDECESSOR_DEADLINE: Duration = Duration::from_secs(10);

/// How often the predecessor's control socket is looked at meanwhile.
const PREDECESSOR_POLL: Duration = Duration::from_millis(10);

#[derive(clap::Args)]
pub struct RestartArgs {
    /// bpffs directory where the XDP program's link and maps are pinned
    /// (in a subdirectory per network namespace), so they outlive this
    /// process and a later `switchyard run` takes them over. Under
    /// /sys/fs/bpf a missing bpffs is mounted.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Pin nothing: the XDP program leaves the interfaces with the process,
    /// and a restart starts from nothing.
    #[arg(long, conflicts_with_all = ["takeover"])]
    pub no_pin: bool,
    /// On SIGTERM or SIGINT, detach the XDP program and remove its pins
    /// (take the node down for good) instead of leaving it forwarding the
    /// cached flows for the next daemon.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Take over from the daemon serving --control-socket: prepare
    /// everything, ask it to release its AF_XDP sockets and exit, bind
    /// them, and serve the control socket once it is gone.
    #[arg(long)]
    pub takeover: bool,
}

#[derive(clap::Args)]
pub struct DetachArgs {
    /// The --pin-dir the daemons of this network namespace used.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// This network namespace's pins under `pin_dir`.
fn node_pins(pin_dir: &Path) -> Result<PinDir> {
    let inode = std::fs::metadata("/proc/self/ns/net")
        .context("reading this process's network namespace")?
        .ino();
    Ok(PinDir::new(pin_dir.join(format!("netns-{inode}"))))
}

/// `switchyard detach`: removes this network namespace's pins, so the
/// program leaves its interfaces once no daemon holds it (stop the daemon
/// first) and its maps are freed.
pub fn detach(args: DetachArgs) -> Result<()> {
    let pins = node_pins(&args.pin_dir)?;
    if !pins.root().exists() {
        log::info!("nothing pinned at {}", pins.root().display());
        return Ok(());
    }
    let links = pins.linked_interfaces().unwrap_or_default();
    pins.remove_all()
        .with_context(|| format!("removing {}", pins.root().display()))?;
    log::info!(
        "removed {} (links of {}); the program leaves those interfaces",
        pins.root().display(),
        if links.is_empty() {
            "no interface".to_owned()
        } else {
            links.join(", ")
        }
    );
    Ok(())
}

/// What a start found, carried from one step to the next.
pub struct Start {
    pins: Option<PinDir>,
    takeover: bool,
    detach_on_exit: bool,
    control_socket: PathBuf,
    /// The generation of the first config: past the one the pinned
    /// program last published.
    pub first_generation: u64,
    /// From the predecessor's answer.
    handed_over: Option<HandOverReport>,
}

impl Start {
    /// Whether this daemon takes over from a running one (`--takeover`).
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }
}

/// The first step, before anything is loaded: checks the predecessor a
/// takeover needs (or claims the control socket path otherwise) and reads
/// the generation the pinned program is at.
pub fn begin(args: &RestartArgs, control_socket: &Path, capacity: u32) -> Result<Start> {
    if args.takeover {
        match client::request(control_socket, &Request::Status) {
            Ok(Response::Status(_)) => {}
            Ok(other) => bail!(
                "--takeover: the daemon at {} answered {other:?}",
                control_socket.display()
            ),
            Err(err) => bail!(
                "--takeover: no daemon answers on {} ({err})",
                control_socket.display()
            ),
        }
    } else {
        switchyard_daemon::control::claim_path(control_socket)?;
    }
    let pins = if args.no_pin {
        None
    } else {
        Some(node_pins(&args.pin_dir)?)
    };
    let published = pins
        .as_ref()
        .and_then(|pins| pins.published_generation(capacity));
    Ok(Start {
        pins,
        takeover: args.takeover,
        detach_on_exit: args.detach_on_exit,
        control_socket: control_socket.to_owned(),
        first_generation: published.map_or(1, |generation| generation + 1),
        handed_over: None,
    })
}

/// Loads the steering program, over the pinned maps when there are.
pub fn load(start: &Start, options: &LoadOptions) -> Result<Steering> {
    let Some(pins) = &start.pins else {
        return Steering::load_with(options).context("loading the XDP steering program");
    };
    let steering = Steering::load_pinned(options, pins.clone()).with_context(|| {
        format!(
            "loading the XDP steering program pinned at {}",
            pins.root().display()
        )
    })?;
    if steering.takeover().maps_reused {
        log::info!(
            "taking over the pinned maps at {} (config generations from {})",
            pins.root().display(),
            start.first_generation
        );
    }
    Ok(steering)
}

/// Before the first config is published: the previous daemon's cache
/// entries must keep applying until this one's workers are bound.
pub fn hold(steering: &Steering, fast_path: &FastPath) {
    if steering.takeover().maps_reused {
        fast_path.hold();
    }
}

/// The flows to start the workers with: the cache's, when it was taken
/// over.
pub fn seeds(
    steering: &Steering,
    fast_path: &FastPath,
    snapshot: &Snapshot,
    egress: &[Egress],
    epoch: Instant,
) -> rebuild::Seeds {
    if !steering.takeover().maps_reused {
        return rebuild::Seeds::default();
    }
    let now = epoch.elapsed().as_nanos() as u64;
    match rebuild::read(fast_path.maps(), snapshot, egress, now) {
        Ok(seeds) => {
            log::info!(
                "rebuilt {} flows from the fast path's cache ({} full-NAT flows left to be decided afresh, {} out of interfaces not served)",
                seeds.flows.len(),
                seeds.full_nat,
                seeds.unknown_egress
            );
            seeds
        }
        Err(err) => {
            log::warn!("reading the fast path's cache: {err}; its flows are decided afresh");
            rebuild::Seeds::default()
        }
    }
}

/// Right before the workers' sockets are opened: with `--takeover`, asks
/// the predecessor to close its own and waits for its answer (or, if none
/// comes, for it to be gone).
pub fn release_predecessor(start: &mut Start) -> Result<()> {
    if !start.takeover {
        return Ok(());
    }
    match client::request(&start.control_socket, &Request::HandOver) {
        Ok(Response::HandOver(report)) => {
            log::info!(
                "daemon {} released its sockets ({} cached flows)",
                report.pid,
                report.flows
            );
            start.handed_over = Some(report);
        }
        Ok(Response::Error { message }) => bail!("--takeover: the daemon refused: {message}"),
        Ok(other) => bail!("--takeover: the daemon answered {other:?}"),
        Err(err) => {
            log::warn!("--takeover: no answer to the hand-over ({err}); waiting for it to exit");
            wait_gone(&start.control_socket)?;
        }
    }
    Ok(())
}

/// Polls until nothing answers on `path`.
fn wait_gone(path: &Path) -> Result<()> {
    let deadline = Instant::now() + PREDECESSOR_DEADLINE;
    while UnixStream::connect(path).is_ok() {
        if Instant::now() >= deadline {
            bail!(
                "the daemon at {} still answers after {}s",
                path.display(),
                PREDECESSOR_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(PREDECESSOR_POLL);
    }
    Ok(())
}

/// How long a successor retries binding a queue its predecessor released:
/// the kernel frees a closed socket's hold on its queue from a work queue
/// (`xp_release_deferred`), a moment after the close returned.
const QUEUE_RELEASE_DEADLINE: Duration = Duration::from_secs(2);

/// `open`, retried for a moment after a hand-over while it fails (the
/// predecessor's sockets may still hold the queue; any failure is retried,
/// since libxdp reports them all alike), and once otherwise.
pub fn while_queue_busy<T, E>(
    start: &Start,
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + QUEUE_RELEASE_DEADLINE;
    loop {
        match open() {
            Err(_) if start.handed_over.is_some() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// Once every worker's socket is registered: the held config goes to the
/// program (cached flows whose epoch changed pass by the workers once, and
/// are installed again), VIP frames without a socket are passed again,
/// and the pins no longer in use are removed.
pub fn resume(start: &Start, steering: &mut Steering, fast_path: &FastPath) -> Result<()> {
    let bound_at = monotonic_ns();
    fast_path
        .release()
        .context("publishing the config to the XDP program")?;
    steering
        .fast_path()
        .set_handing_over(false)
        .context("clearing the XDP hand-over flag")?;
    for removed in steering
        .finish_takeover()
        .context("removing pins no longer in use")?
    {
        log::info!("removed {}, no longer in use", removed.display());
    }
    let takeover = steering.takeover();
    if !takeover.links_replaced.is_empty() {
        log::info!(
            "replaced the XDP program on the pinned links of {}",
            takeover.links_replaced.join(", ")
        );
    }
    if let Some(report) = &start.handed_over {
        let gap_ns = bound_at.saturating_sub(report.released_monotonic_ns);
        log::info!(
            "takeover: no worker bound for {:.3} ms",
            gap_ns as f64 / 1e6
        );
    }
    Ok(())
}

/// Starts the control server; with `--takeover`, once the predecessor
/// has left the path.
pub fn serve_control(start: &Start, state: std::sync::Arc<ControlState>) -> Result<ControlServer> {
    let deadline = Instant::now() + PREDECESSOR_DEADLINE;
    loop {
        match ControlServer::start(&start.control_socket, state.clone()) {
            Ok(server) => return Ok(server),
            Err(ControlError::InUse { .. }) if start.takeover && Instant::now() < deadline => {
                std::thread::sleep(PREDECESSOR_POLL);
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// How the serve loop ended.
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
    /// A successor asked for the sockets: answer on this once they are
    /// closed.
    HandOver(Sender<Result<HandOverReport, String>>),
}

/// The control thread's end of a hand-over, and the main thread's.
pub struct HandOverInbox {
    requests: Receiver<Sender<Result<HandOverReport, String>>>,
    wake: UnixStream,
}

/// The hook the control socket calls on `HandOver`, and the inbox the
/// main thread polls (its fd becomes readable on a request).
pub fn hand_over_channel() -> Result<(HandOverHook, HandOverInbox)> {
    let (wake_tx, wake_rx) = UnixStream::pair().context("creating the hand-over wake-up pair")?;
    wake_rx
        .set_nonblocking(true)
        .context("making the hand-over wake-up non-blocking")?;
    let (requests_tx, requests) = channel::bounded(1);
    let wake_tx = Mutex::new(wake_tx);
    let hook: HandOverHook = Box::new(move || {
        let (reply_tx, reply) = channel::bounded(1);
        requests_tx
            .try_send(reply_tx)
            .map_err(|_| "a hand-over is already under way".to_owned())?;
        {
            use std::io::Write;
            let mut wake = wake_tx.lock().unwrap_or_else(|e| e.into_inner());
            wake.write_all(&[1])
                .map_err(|err| format!("waking the main thread: {err}"))?;
        }
        reply
            .recv_timeout(PREDECESSOR_DEADLINE)
            .map_err(|_| "the sockets were not released in time".to_owned())?
    });
    Ok((
        hook,
        HandOverInbox {
            requests,
            wake: wake_rx,
        },
    ))
}

impl HandOverInbox {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// After the fd polled readable: the request, if one came.
    pub fn take(&self) -> Option<Exit> {
        use std::io::Read;
        let mut drained = [0u8; 16];
        while matches!((&self.wake).read(&mut drained), Ok(n) if n > 0) {}
        self.requests.try_recv().ok().map(Exit::HandOver)
    }
}

/// Before the workers stop, on a signal: the program stays pinned for the
/// next daemon (VIP frames without a socket are dropped meanwhile), unless
/// `--detach-on-exit` (or no pins) takes it down.
pub fn leave_on_signal(start: &Start, steering: &mut Steering) -> Result<()> {
    if start.detach_on_exit || start.pins.is_none() {
        return steering
            .detach_and_unpin()
            .context("detaching XDP and removing its pins");
    }
    steering
        .leave_pinned()
        .context("leaving XDP pinned for the next daemon")?;
    if let Some(pins) = &start.pins {
        log::info!(
            "XDP left pinned at {}: cached flows are forwarded until the next switchyard run takes over (`switchyard detach` takes it down)",
            pins.root().display()
        );
    }
    Ok(())
}

/// Once the workers have stopped on a hand-over: the program stays on its
/// links for the successor, which is told the sockets are closed.
pub fn hand_over(
    steering: &mut Steering,
    fast_path: &FastPath,
    reply: Sender<Result<HandOverReport, String>>,
) {
    let released_monotonic_ns = monotonic_ns();
    let result = steering
        .leave_pinned()
        .map(|()| HandOverReport {
            pid: std::process::id(),
            released_monotonic_ns,
            flows: fast_path
                .maps()
                .entries()
                .map_or(0, |entries| entries.len() as u64),
        })
        .map_err(|err| format!("leaving XDP pinned: {err}"));
    if let Err(err) = &result {
        log::error!("hand-over: {err}");
    } else {
        log::info!("handed over: sockets closed, XDP left pinned; exiting");
    }
    let _ = reply.send(result);
}
