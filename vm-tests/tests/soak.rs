//! The soak (`make soak`, ignored by `make test`): mixed TCP and UDP traffic
//! through the VIP for SOAK_SECONDS (default 600) while the config file is
//! rewritten over and over (a backend removed and added back; invalid and
//! empty files; a file written in two parts with a pause between), backends
//! are drained and undrained, and
//! `yardctl` asks every read-only question it has, one after another.
//!
//! It passes when, at the end: the daemon still runs, logged no panic and
//! stops cleanly; no connection to a backend that never left the config was
//! reset or lost an echo, and no flow changed backend; every invalid or
//! empty file was refused with the running config kept, and a half-written
//! file was never read as the config; every
//! `yardctl` call succeeded; and the daemon's resident memory and open
//! descriptors stayed within [`RSS_GROWTH_BOUND`] and [`FD_GROWTH_BOUND`]
//! of what they were once every kind of change had happened once.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_vm_tests::client::{self, tcp_connect, udp_socket_towards};
use switchyard_vm_tests::config::{
    TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{Daemon, GatewaySpec, Netns, TempDir, Topology};

/// How long the soak runs unless SOAK_SECONDS says otherwise.
const DEFAULT_SECONDS: u64 = 600;
/// A reload is a file read, a compile and a map sync; a refusal the same
/// without the sync. On a shared two-core machine, well under this.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);
/// Per TCP connect or echo, and per UDP reply. Generous: a loss shows up as
/// a missing reply or a reset, not as slowness.
const IO_DEADLINE: Duration = Duration::from_secs(3);
/// Pause between two config or drain steps, so traffic runs under each.
const STEP_PAUSE: Duration = Duration::from_millis(300);
/// Long-lived TCP connections kept open at all times.
const LONG_LIVED: usize = 6;
/// UDP flows, each its own socket.
const UDP_FLOWS: usize = 4;
/// Resident memory may grow by this much after the warm-up. Everything the
/// daemon holds per packet or per flow (UMEM, rings, flow and affinity
/// tables, the XDP maps) is allocated at start, and each reload replaces
/// its snapshot and Maglev tables whole; what remains to grow is allocator
/// slack. Over ten minutes of several hundred reloads and thousands of
/// control requests, 64 MiB is far above that slack and well below what a
/// leak of a snapshot (tables of 65,537 slots per listener) per reload
/// would add.
const RSS_GROWTH_BOUND: u64 = 64 << 20;
/// Open descriptors may grow by this many: a control connection or two in
/// flight and the config file being read. A leak per request or reload
/// passes it within seconds.
const FD_GROWTH_BOUND: usize = 16;

/// The config as one of its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backends {
    Both,
    Be1Only,
}

fn config_text(spec: &GatewaySpec, backends: Backends, serial: u64) -> String {
    let mut spec = spec.clone();
    if backends == Backends::Be1Only {
        for listener in &mut spec.listeners {
            listener.backends.truncate(1);
        }
    }
    format!("# revision {serial}\n{}", spec.to_yaml())
}

/// Replaces the file the way config tools do: write aside, rename over.
fn replace(path: &Path, contents: &str) -> Result<()> {
    let aside = path.with_extension("yaml.new");
    std::fs::write(&aside, contents)?;
    std::fs::rename(&aside, path)?;
    Ok(())
}

/// A span of time in which some flows may legitimately break: be2 out of
/// the config, or a bad file the daemon applied (itself a failure).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Option<Instant>,
}

/// What the churn thread did, for the traffic threads to be judged by.
#[derive(Default)]
struct Timeline {
    be2_absent: Mutex<Vec<Window>>,
    bad_config_applied: Mutex<Vec<Window>>,
}

impl Timeline {
    fn open(windows: &Mutex<Vec<Window>>, start: Instant) {
        windows.lock().unwrap().push(Window { start, end: None });
    }

    fn close(windows: &Mutex<Vec<Window>>) {
        if let Some(last) = windows.lock().unwrap().last_mut() {
            last.end.get_or_insert_with(Instant::now);
        }
    }

    /// Whether a window of `windows` started in `[from, to]`, or was open
    /// at `from`.
    fn any_in(windows: &Mutex<Vec<Window>>, from: Instant, to: Instant) -> bool {
        windows.lock().unwrap().iter().any(|w| {
            (w.start >= from && w.start <= to)
                || (w.start <= from && w.end.is_none_or(|e| e >= from))
        })
    }

    /// Why a flow on `backend` that was fine at `from` and broke at `to`
    /// may break, if it may.
    fn excuse(&self, backend: &str, from: Instant, to: Instant) -> Option<&'static str> {
        if Timeline::any_in(&self.bad_config_applied, from, to) {
            Some("a bad config was applied")
        } else if backend != "be1" && Timeline::any_in(&self.be2_absent, from, to) {
            Some("be2 left the config")
        } else {
            None
        }
    }
}

/// A broken flow or a failed call.
#[derive(Debug)]
struct Failure {
    what: String,
    /// The backend the flow was on, when it had answered.
    backend: Option<String>,
    /// When the flow was last known good (or started).
    good: Instant,
    at: Instant,
    /// Reset by a peer, as opposed to a timeout or a wrong answer.
    reset: bool,
}

#[derive(Default)]
struct Tally {
    exchanges: AtomicU64,
    connections: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

impl Tally {
    fn fail(&self, failure: Failure) {
        self.failures.lock().unwrap().push(failure);
    }
}

fn is_reset(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            )
        })
    })
}

fn exchange(stream: &mut TcpStream, payload: &str) -> Result<String> {
    stream.write_all(payload.as_bytes())?;
    let text = client::read_echo(stream, payload, IO_DEADLINE)?;
    Ok(text.split(' ').next().unwrap_or("").to_owned())
}

/// One long-lived connection after another: each exchanges a message every
/// 20 ms for as long as it lasts; a broken one is recorded and replaced.
fn tcp_long_lived(ns: &Netns, to: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    let mut serial = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let opened = Instant::now();
        let mut stream = match tcp_connect(ns, to, IO_DEADLINE) {
            Ok(stream) => stream,
            Err(err) => {
                tally.fail(Failure {
                    what: format!("long-lived connect: {err:#}"),
                    backend: None,
                    good: opened,
                    at: Instant::now(),
                    reset: is_reset(&err),
                });
                thread::sleep(STEP_PAUSE);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let mut backend: Option<String> = None;
        let mut good = opened;
        while !stop.load(Ordering::Relaxed) {
            serial += 1;
            let payload = format!("long {serial}|");
            match exchange(&mut stream, &payload) {
                Ok(server) if backend.as_ref().is_none_or(|b| *b == server) => {
                    backend = Some(server);
                    good = Instant::now();
                    tally.exchanges.fetch_add(1, Ordering::Relaxed);
                }
                Ok(server) => {
                    tally.fail(Failure {
                        what: format!("long-lived connection moved from {backend:?} to {server}"),
                        backend: backend.clone(),
                        good,
                        at: Instant::now(),
                        reset: false,
                    });
                    break;
                }
                Err(err) => {
                    tally.fail(Failure {
                        what: format!("long-lived connection: {err:#}"),
                        backend: backend.clone(),
                        good,
                        at: Instant::now(),
                        reset: is_reset(&err),
                    });
                    break;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A new connection every few milliseconds: connect, one exchange, close.
fn tcp_new_connections(ns: &Netns, to: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    let mut serial = 0u64;
    while !stop.load(Ordering::Relaxed) {
        serial += 1;
        let payload = format!("conn {serial}|");
        let started = Instant::now();
        let result = tcp_connect(ns, to, IO_DEADLINE).and_then(|mut stream| {
            stream.set_nodelay(true)?;
            exchange(&mut stream, &payload)
        });
        tally.connections.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                tally.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tally.fail(Failure {
                what: format!("new connection: {err:#}"),
                backend: None,
                good: started,
                at: Instant::now(),
                reset: is_reset(&err),
            }),
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// One UDP flow: a datagram every 10 ms, each answered before the next
/// (late answers to earlier ones are skipped).
fn udp_flow(socket: UdpSocket, to: SocketAddr, stop: &AtomicBool, tally: &Tally) {
    let mut serial = 0u64;
    let mut backend: Option<String> = None;
    let mut good = Instant::now();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        serial += 1;
        let payload = format!("udp {serial}");
        let sent = Instant::now();
        let result = socket
            .send_to(payload.as_bytes(), to)
            .map_err(anyhow::Error::from)
            .and_then(|_| loop {
                let left = (sent + IO_DEADLINE)
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| anyhow!("no reply to {payload:?} within {IO_DEADLINE:?}"))?;
                socket.set_read_timeout(Some(left))?;
                match socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if from == to && text.ends_with(&format!(" {payload}")) {
                            break Ok(text.split(' ').next().unwrap_or("").to_owned());
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => break Err(e.into()),
                }
            });
        match result {
            Ok(server) => {
                // A UDP flow moves only when its backend left the config.
                if let Some(previous) = backend.as_ref().filter(|b| **b != server) {
                    tally.fail(Failure {
                        what: format!("UDP flow moved from {previous} to {server}"),
                        backend: Some(previous.clone()),
                        good,
                        at: Instant::now(),
                        reset: false,
                    });
                }
                backend = Some(server);
                good = Instant::now();
                tally.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tally.fail(Failure {
                what: format!("UDP: {err:#}"),
                backend: backend.clone(),
                good,
                at: Instant::now(),
                reset: false,
            }),
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Every read-only `yardctl` question, round and round.
fn hammer_yardctl(daemon: &Daemon, stop: &AtomicBool, tally: &Tally) {
    let listener = GatewaySpec::demo().listener_id(TCP_LISTENER);
    let client = "198.18.1.10:40000";
    let vip = format!("{VIP}:{TCP_PORT}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "-o", "json"],
        vec!["stats", "-o", "json"],
        vec!["flows", "-o", "json"],
        vec!["flows", "--sort", "bytes", "--limit", "5"],
        vec!["listeners", "-o", "json"],
        vec!["backends"],
        vec!["backends", "--listener", &listener],
        vec!["config", "status", "-o", "json"],
        vec!["latency", "-o", "json"],
        vec!["explain", "tcp", client, &vip],
    ];
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let args = &commands[round % commands.len()];
        round += 1;
        let started = Instant::now();
        match daemon.yardctl_raw(args) {
            Ok(out) if out.status.success() => {
                tally.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Ok(out) => tally.fail(Failure {
                what: format!(
                    "`yardctl {}`: {}: {}",
                    args.join(" "),
                    out.status,
                    out.stderr.trim()
                ),
                backend: None,
                good: started,
                at: Instant::now(),
                reset: false,
            }),
            Err(err) => tally.fail(Failure {
                what: format!("`yardctl {}`: {err:#}", args.join(" ")),
                backend: None,
                good: started,
                at: Instant::now(),
                reset: false,
            }),
        }
    }
}

/// The config and drain changes, one after another until `stop`.
struct Churn<'a> {
    daemon: &'a Daemon,
    path: &'a Path,
    spec: GatewaySpec,
    timeline: &'a Timeline,
    serial: u64,
    /// Changes made, by kind.
    counts: BTreeMap<&'static str, u64>,
    /// Bad files the daemon applied instead of refusing.
    wrongly_applied: Vec<String>,
}

impl Churn<'_> {
    /// The running generation and the refused reloads so far. Drains also
    /// publish a generation, so every wait starts from what runs now.
    fn current(&self) -> Result<(u64, u64)> {
        let status = self.daemon.config_status()?;
        Ok((status.generation, status.failed_reloads))
    }

    fn write_valid(&mut self, backends: Backends) -> Result<()> {
        let (generation, refused) = self.current()?;
        self.serial += 1;
        replace(self.path, &config_text(&self.spec, backends, self.serial))?;
        self.wait_applied(generation, refused)
    }

    fn wait_applied(&self, generation: u64, refused: u64) -> Result<()> {
        poll_until(
            RELOAD_DEADLINE,
            &format!("a config generation after {generation}"),
            || {
                let status = self.daemon.config_status()?;
                if status.failed_reloads > refused {
                    bail!("a valid config was refused: {:?}", status.last_error);
                }
                Ok((status.generation > generation).then_some(()))
            },
        )
    }

    /// Writes `contents` in place in two parts, the file left open between
    /// them for `STEP_PAUSE` (longer than the daemon's settle time), and
    /// expects one new generation of the whole file and no refusal; a
    /// refusal or a generation between the parts means the half-written
    /// file was read as the config.
    fn write_slowly(&mut self, contents: &str) -> Result<()> {
        let (generation, refused) = self.current()?;
        let cut = contents.len() * 2 / 3;
        let cut = (cut..contents.len())
            .find(|&i| contents.is_char_boundary(i))
            .unwrap_or(cut);
        let written = Instant::now();
        let mut file = std::fs::File::create(self.path)?;
        file.write_all(&contents.as_bytes()[..cut])?;
        file.flush()?;
        // The slow writer's pause, not a wait for readiness.
        thread::sleep(STEP_PAUSE);
        let status = self.daemon.config_status()?;
        if status.generation > generation || status.failed_reloads > refused {
            Timeline::open(&self.timeline.bad_config_applied, written);
            self.wrongly_applied.push(format!(
                "the half-written file was read as the config (generation {}, refused {}): {:?}",
                status.generation, status.failed_reloads, status.last_error
            ));
        }
        file.write_all(&contents.as_bytes()[cut..])?;
        drop(file);
        let result = self.wait_applied(generation, refused);
        Timeline::close(&self.timeline.bad_config_applied);
        result
    }

    /// Writes `contents` (in place, as an editor does, when `in_place`)
    /// and expects it refused with the running config kept. A bad file the
    /// daemon applies is recorded, and the valid config written back.
    fn write_bad(&mut self, kind: &'static str, contents: &str, in_place: bool) -> Result<()> {
        let (generation, refused) = self.current()?;
        let written = Instant::now();
        if in_place {
            std::fs::write(self.path, contents)?;
        } else {
            replace(self.path, contents)?;
        }
        let outcome = poll_until(RELOAD_DEADLINE, &format!("the {kind} file refused"), || {
            let status = self.daemon.config_status()?;
            if status.generation > generation {
                return Ok(Some(Err(status)));
            }
            Ok((status.failed_reloads > refused).then_some(Ok(status)))
        })?;
        match outcome {
            Ok(status) => {
                ensure!(
                    status.listeners == self.spec.listeners.len(),
                    "after refusing the {kind} file, {} listeners run: {status:?}",
                    status.listeners
                );
            }
            Err(status) => {
                Timeline::open(&self.timeline.bad_config_applied, written);
                self.wrongly_applied.push(format!(
                    "the {kind} file was applied as generation {} with {} listeners",
                    status.generation, status.listeners
                ));
                self.write_valid(Backends::Both)?;
                Timeline::close(&self.timeline.bad_config_applied);
            }
        }
        Ok(())
    }

    fn yardctl(&self, args: &[&str]) -> Result<()> {
        let out = self.daemon.yardctl_raw(args)?;
        ensure!(
            out.status.success(),
            "`yardctl {}` failed: {}",
            args.join(" "),
            out.stderr.trim()
        );
        Ok(())
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    /// One round of every kind of change, with traffic running between.
    fn round(&mut self) -> Result<()> {
        let be1 = format!("{}:{TCP_TARGET_PORT}", self.spec.listeners[0].backends[0]);
        let be2 = format!("{}:{TCP_TARGET_PORT}", self.spec.listeners[0].backends[1]);

        self.yardctl(&["drain", &be1])?;
        self.count("drain");
        thread::sleep(STEP_PAUSE);
        self.yardctl(&["undrain", &be1])?;
        self.count("undrain");
        thread::sleep(STEP_PAUSE);

        Timeline::open(&self.timeline.be2_absent, Instant::now());
        self.write_valid(Backends::Be1Only)?;
        self.count("backend removed");
        thread::sleep(STEP_PAUSE);

        self.write_bad(
            "invalid",
            "apiVersion: v1\nkind: Service\nmetadata: [\n",
            false,
        )?;
        self.count("invalid file");
        thread::sleep(STEP_PAUSE);

        self.write_valid(Backends::Both)?;
        Timeline::close(&self.timeline.be2_absent);
        self.count("backend added");
        thread::sleep(STEP_PAUSE);

        // A writer half-way, pausing mid-line longer than the daemon's
        // settle time: the half-written file must never be read as the
        // config, only the whole one once it is closed.
        self.serial += 1;
        let next = config_text(&self.spec, Backends::Both, self.serial);
        self.write_slowly(&next)?;
        self.count("half-written file");
        thread::sleep(STEP_PAUSE);

        self.yardctl(&[
            "drain",
            &be2,
            "--listener",
            &self.spec.listener_id(TCP_LISTENER),
        ])?;
        self.count("drain");
        self.write_bad("empty", "", true)?;
        self.count("empty file");
        self.write_valid(Backends::Both)?;
        thread::sleep(STEP_PAUSE);
        self.yardctl(&[
            "undrain",
            &be2,
            "--listener",
            &self.spec.listener_id(TCP_LISTENER),
        ])?;
        self.count("undrain");

        let (generation, refused) = self.current()?;
        self.daemon.signal(Signal::SIGHUP)?;
        self.wait_applied(generation, refused)?;
        self.count("SIGHUP");
        thread::sleep(STEP_PAUSE);
        Ok(())
    }
}

/// The daemon's resident memory in bytes and its open descriptors.
fn usage(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count();
    Ok((kib * 1024, fds))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[test]
#[ignore = "runs for SOAK_SECONDS (default 600): make soak"]
fn soak_under_churn_keeps_surviving_flows_and_bounded_resources() -> Result<()> {
    let seconds = match std::env::var("SOAK_SECONDS") {
        Ok(text) => text
            .parse::<u64>()
            .with_context(|| format!("SOAK_SECONDS={text:?} is not a number of seconds"))?,
        Err(_) => DEFAULT_SECONDS,
    };
    let duration = Duration::from_secs(seconds);
    let topo = Topology::single_arm(1)?;
    let spec = GatewaySpec::demo();
    let dir = TempDir::new("soak")?;
    let path = dir.write("gateway.yaml", &config_text(&spec, Backends::Both, 0))?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let mut daemon = topo.start_daemon(&path)?;
    let pid = daemon.pid();
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));
    let udp_sockets = (0..UDP_FLOWS)
        .map(|_| udp_socket_towards(&topo.client, udp_vip))
        .collect::<Result<Vec<_>>>()?;

    let timeline = Timeline::default();
    let (long, fresh, udp, yardctl) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut churn = Churn {
        daemon: &daemon,
        path: &path,
        spec: spec.clone(),
        timeline: &timeline,
        serial: 0,
        counts: BTreeMap::new(),
        wrongly_applied: Vec::new(),
    };
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    let mut warm: Option<(u64, usize)> = None;
    let churned: Result<()> = thread::scope(|scope| {
        for _ in 0..LONG_LIVED {
            scope.spawn(|| tcp_long_lived(&topo.client, tcp_vip, &stop, &long));
        }
        scope.spawn(|| tcp_new_connections(&topo.client, tcp_vip, &stop, &fresh));
        for socket in udp_sockets {
            let (stop, udp) = (&stop, &udp);
            scope.spawn(move || udp_flow(socket, udp_vip, stop, udp));
        }
        scope.spawn(|| hammer_yardctl(&daemon, &stop, &yardctl));
        let result = (|| {
            while started.elapsed() < duration {
                churn.round()?;
                let (rss, fds) = usage(pid)?;
                samples.push((started.elapsed(), rss, fds));
                // After one round every kind of change has happened once.
                warm.get_or_insert((rss, fds));
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    });
    let elapsed = started.elapsed();
    let (final_rss, final_fds) = usage(pid)?;

    // The report, whatever the outcome.
    let mut problems: Vec<String> = Vec::new();
    eprintln!(
        "soak: {:.0} s, {} rounds of changes",
        elapsed.as_secs_f64(),
        samples.len()
    );
    eprintln!("changes: {:?}", churn.counts);
    for (what, tally) in [
        ("long-lived TCP", &long),
        ("new TCP connections", &fresh),
        ("UDP flows", &udp),
        ("yardctl calls", &yardctl),
    ] {
        let failures = tally.failures.lock().unwrap();
        let mut excused: BTreeMap<&str, usize> = BTreeMap::new();
        let mut unexcused = Vec::new();
        for f in failures.iter() {
            let backend = f.backend.as_deref().unwrap_or("be2");
            match timeline.excuse(backend, f.good, f.at) {
                Some(why) => *excused.entry(why).or_default() += 1,
                None => unexcused.push(f),
            }
        }
        // Only TCP opens connections; the others count exchanges alone.
        let connections = match tally.connections.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} connections"),
        };
        eprintln!(
            "{what}: {} exchanges{connections}, {} failures ({} excused: {excused:?})",
            tally.exchanges.load(Ordering::Relaxed),
            failures.len(),
            failures.len() - unexcused.len(),
        );
        for f in &unexcused {
            let on = f.backend.as_deref().unwrap_or("no backend yet");
            let kind = if f.reset { "reset" } else { "failed" };
            problems.push(format!(
                "{what}: {kind} at {:.1} s ({on}): {}",
                f.at.duration_since(started).as_secs_f64(),
                f.what
            ));
        }
        if tally.exchanges.load(Ordering::Relaxed) == 0 {
            problems.push(format!("{what}: no traffic at all"));
        }
    }
    // One line per kind of bad file, with its first occurrence.
    let mut applied: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for what in &churn.wrongly_applied {
        let kind = what.split(" file ").next().unwrap_or(what);
        applied.entry(kind).or_insert((0, what)).0 += 1;
    }
    for (count, first) in applied.values() {
        problems.push(format!("{count} times: {first} (first time)"));
    }
    if let Err(err) = &churned {
        problems.push(format!("the changes stopped: {err:#}"));
    }

    let (warm_rss, warm_fds) = warm.unwrap_or((final_rss, final_fds));
    let max_rss = samples.iter().map(|s| s.1).max().unwrap_or(final_rss);
    let max_fds = samples.iter().map(|s| s.2).max().unwrap_or(final_fds);
    eprintln!(
        "daemon VmRSS: {} after the first round, {} at the end, {} at most (bound: +{}); \
         open fds: {warm_fds} after the first round, {final_fds} at the end, {max_fds} at most \
         (bound: +{FD_GROWTH_BOUND})",
        mib(warm_rss),
        mib(final_rss),
        mib(max_rss),
        mib(RSS_GROWTH_BOUND)
    );
    if max_rss > warm_rss + RSS_GROWTH_BOUND {
        problems.push(format!(
            "VmRSS grew from {} to {}",
            mib(warm_rss),
            mib(max_rss)
        ));
    }
    if max_fds > warm_fds + FD_GROWTH_BOUND {
        problems.push(format!("open fds grew from {warm_fds} to {max_fds}"));
    }

    if !daemon.is_running() {
        problems.push("the daemon is no longer running".to_owned());
    } else {
        match daemon.stop() {
            Ok(status) if status.success() => {}
            Ok(status) => problems.push(format!("the daemon stopped with {status}")),
            Err(err) => problems.push(format!("stopping the daemon: {err:#}")),
        }
    }
    if daemon.log().contains("panicked") {
        problems.push("the daemon's log has a panic".to_owned());
    }

    if problems.is_empty() {
        eprintln!("soak passed");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        bail!(
            "{} problems in the soak: {}",
            problems.len(),
            problems.join("; ")
        )
    }
}
