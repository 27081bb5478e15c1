//! `switchyard run` inside the LB namespace, as a guard, and `yardctl`
//! against its control socket.
//!
//! The guard owns exactly one process, found by the PID it spawned (`ip
//! netns exec` execs the daemon in place, so the PID is the daemon's). It
//! waits for readiness by polling `yardctl status`, and on any failure puts
//! the daemon's own log in the error. Drop stops it (SIGTERM, then SIGKILL)
//! if a test did not. It never signals a process it did not start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use serde_json::Value;
use switchyard_proto::{ConfigStatusReport, FlowsReport, LatencyReport, StatsReport, StatusReport};

use crate::netns::Netns;
use crate::poll::{poll_until, POLL_INTERVAL};
use crate::process::{kill_and_reap, run_with_timeout, signal_child, switchyard_bin, yardctl_bin};
use crate::tempdir::TempDir;

/// How long the daemon may take to answer `yardctl status` after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `yardctl` run.
pub const YARDCTL_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of the daemon's log goes into an error message.
const LOG_TAIL_BYTES: usize = 16 * 1024;

/// One daemon at a time per test process: the workers spin on the same two
/// cores, and two appliances competing for them would make timings, not
/// Switchyard, decide a test. Tests may still build topologies in parallel.
static ONE_DAEMON: Mutex<()> = Mutex::new(());

/// The one-daemon lock, unless `opts` runs beside other LB nodes.
fn one_daemon_lock(opts: &DaemonOptions) -> Option<MutexGuard<'static, ()>> {
    (!opts.beside_others).then(|| ONE_DAEMON.lock().unwrap_or_else(|e| e.into_inner()))
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Interfaces inside the LB namespace (`--interface`, in order).
    pub interfaces: Vec<String>,
    /// `--queues`; omitted when `None`.
    pub queues: Option<u32>,
    /// `--cores`; omitted when `None`.
    pub cores: Option<String>,
    /// Daemon binary; `None` means [`switchyard_bin`].
    pub switchyard: Option<PathBuf>,
    /// CLI binary; `None` means [`yardctl_bin`].
    pub yardctl: Option<PathBuf>,
    pub ready_timeout: Duration,
    /// Print the daemon's log when the guard is dropped. Test output capture
    /// shows it only for failing tests; the demo turns it off.
    pub log_on_drop: bool,
    /// More `switchyard run` arguments, appended as given.
    pub extra_args: Vec<String>,
    /// `--pin-dir` (a bpffs directory the test mounted); `None` runs with
    /// `--no-pin`, so a stopped daemon leaves nothing attached behind it.
    pub pin_dir: Option<PathBuf>,
    /// One of several LB nodes of one test, running side by side: skips
    /// the one-daemon-per-test-process lock.
    pub beside_others: bool,
}

impl DaemonOptions {
    pub fn new<S: AsRef<str>>(interfaces: &[S]) -> DaemonOptions {
        DaemonOptions {
            interfaces: interfaces.iter().map(|s| s.as_ref().to_owned()).collect(),
            queues: None,
            cores: None,
            switchyard: None,
            yardctl: None,
            ready_timeout: READY_TIMEOUT,
            log_on_drop: true,
            extra_args: Vec::new(),
            pin_dir: None,
            beside_others: false,
        }
    }

    /// Runs beside the test's other LB nodes ([`DaemonOptions::beside_others`]).
    pub fn beside_others(mut self) -> DaemonOptions {
        self.beside_others = true;
        self
    }

    /// Pins the XDP program in `dir` (see [`DaemonOptions::pin_dir`]).
    pub fn pin_dir(mut self, dir: &Path) -> DaemonOptions {
        self.pin_dir = Some(dir.to_owned());
        self
    }

    pub fn queues(mut self, queues: u32) -> DaemonOptions {
        self.queues = Some(queues);
        self
    }

    /// `--cores`, e.g. `0,1`.
    pub fn cores(mut self, cores: &str) -> DaemonOptions {
        self.cores = Some(cores.to_owned());
        self
    }

    /// Appends one more `switchyard run` argument.
    pub fn arg(mut self, arg: impl Into<String>) -> DaemonOptions {
        self.extra_args.push(arg.into());
        self
    }
}

/// A running `switchyard run`, stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    lb: String,
    socket: PathBuf,
    log_path: PathBuf,
    yardctl: PathBuf,
    log_on_drop: bool,
    started: Instant,
    /// Holds the log and the socket; removed after the process is gone
    /// (or passed on to a successor, which serves the same socket).
    dir: Option<TempDir>,
    /// Released last, after the process is gone (or passed on).
    one_daemon: Option<MutexGuard<'static, ()>>,
}

impl Daemon {
    /// Starts the daemon in `lb` on `config` and waits until it answers
    /// `yardctl status`.
    pub fn start(lb: &Netns, config: &Path, opts: &DaemonOptions) -> Result<Daemon> {
        let config = config
            .canonicalize()
            .with_context(|| format!("config file {}", config.display()))?;
        Daemon::start_with(lb, &["--config".as_ref(), config.as_os_str()], opts)
    }

    /// Starts the daemon in `lb` with `--cluster` (it serves nothing until
    /// sent a cluster's objects, see `crate::cluster`) and waits until it
    /// answers `yardctl status`.
    pub fn start_cluster(lb: &Netns, opts: &DaemonOptions) -> Result<Daemon> {
        Daemon::start_with(lb, &["--cluster".as_ref()], opts)
    }

    fn start_with(
        lb: &Netns,
        config_source: &[&std::ffi::OsStr],
        opts: &DaemonOptions,
    ) -> Result<Daemon> {
        let one_daemon = one_daemon_lock(opts);
        let dir = TempDir::new("daemon")?;
        let mut daemon = Daemon::spawn(lb, config_source, opts, dir, one_daemon, "switchyard")?;
        if let Err(e) = daemon.wait_ready(opts.ready_timeout) {
            if let Some(child) = daemon.child.as_mut() {
                kill_and_reap(child);
            }
            daemon.child = None;
            daemon.log_on_drop = false;
            return Err(e.context(format!(
                "switchyard did not become ready\n--- switchyard log ---\n{}",
                daemon.log_tail()
            )));
        }
        Ok(daemon)
    }

    /// Starts `switchyard run --takeover` on this daemon's control socket
    /// and config; returns as soon as it runs. The successor asks this
    /// daemon to hand over, and this one exits: wait for that with
    /// [`Daemon::wait_exit`], then for the successor with
    /// [`Daemon::wait_until_ready`].
    pub fn take_over(&mut self, lb: &Netns, config: &Path, opts: &DaemonOptions) -> Result<Daemon> {
        let dir = self
            .dir
            .take()
            .context("this daemon was taken over already")?;
        let one_daemon = self.one_daemon.take();
        let opts = opts.clone().arg("--takeover");
        let config = config.canonicalize()?;
        let successor = Daemon::spawn(
            lb,
            &["--config".as_ref(), config.as_os_str()],
            &opts,
            dir,
            one_daemon.or_else(|| one_daemon_lock(&opts)),
            &format!("successor-of-{}", self.pid),
        );
        // This daemon's log stays where it is: in the directory the
        // successor now holds.
        successor
    }

    /// Waits (up to `timeout`) for the daemon to exit on its own, and
    /// reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("switchyard already reaped")?;
        let status = poll_until(timeout, "switchyard to exit", || Ok(child.try_wait()?))?;
        self.child = None;
        Ok(status)
    }

    /// Waits until the daemon answers `yardctl status`.
    pub fn wait_until_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_ready(timeout)
            .with_context(|| format!("--- switchyard log ---\n{}", self.log_tail()))
    }

    fn spawn(
        lb: &Netns,
        config_source: &[&std::ffi::OsStr],
        opts: &DaemonOptions,
        dir: TempDir,
        one_daemon: Option<MutexGuard<'static, ()>>,
        log_name: &str,
    ) -> Result<Daemon> {
        let switchyard = match &opts.switchyard {
            Some(p) => p.clone(),
            None => switchyard_bin()?,
        };
        let yardctl = match &opts.yardctl {
            Some(p) => p.clone(),
            None => yardctl_bin()?,
        };
        let socket = dir.path().join("control.sock");
        let log_path = dir.path().join(format!("{log_name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

        let mut cmd = lb.command(&switchyard);
        cmd.arg("run").args(config_source);
        for dev in &opts.interfaces {
            cmd.arg("--interface").arg(dev);
        }
        if let Some(q) = opts.queues {
            cmd.arg("--queues").arg(q.to_string());
        }
        if let Some(cores) = &opts.cores {
            cmd.arg("--cores").arg(cores);
        }
        cmd.arg("--control-socket").arg(&socket);
        match &opts.pin_dir {
            Some(dir) => cmd.arg("--pin-dir").arg(dir),
            None => cmd.arg("--no-pin"),
        };
        cmd.args(&opts.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let shown = format!("{cmd:?}");
        let child = cmd.spawn().with_context(|| format!("starting {shown}"))?;

        Ok(Daemon {
            pid: child.id(),
            child: Some(child),
            lb: lb.name().to_owned(),
            socket,
            log_path,
            yardctl,
            log_on_drop: opts.log_on_drop,
            started: Instant::now(),
            dir: Some(dir),
            one_daemon,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let what = format!("`yardctl status` to answer on {}", self.socket.display());
        let mut last_answer = String::new();
        let result = poll_until(timeout, &what, || {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("switchyard exited before it was ready ({status})");
                }
            }
            let out = self.yardctl_raw(&["status", "-o", "json"])?;
            if out.status.success() {
                return Ok(Some(()));
            }
            last_answer = format!("{}: {}", out.status, out.stderr.trim());
            Ok(None)
        });
        result.map_err(|e| {
            if last_answer.is_empty() {
                e
            } else {
                e.context(format!("last yardctl answer: {last_answer}"))
            }
        })
    }

    /// PID of the daemon process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn control_socket(&self) -> &Path {
        &self.socket
    }

    /// The `yardctl` binary this guard runs.
    pub fn yardctl_path(&self) -> &Path {
        &self.yardctl
    }

    /// How long ago the daemon was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The daemon's whole log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        if log.len() <= LOG_TAIL_BYTES {
            return log;
        }
        let mut cut = log.len() - LOG_TAIL_BYTES;
        while !log.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[... earlier lines cut ...]\n{}", &log[cut..])
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it: no
    /// shutdown code of its own runs.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("switchyard already stopped"))?;
        signal_child(&child, Signal::SIGKILL)?;
        Ok(child.wait()?)
    }

    /// Sends SIGTERM and waits for the daemon to exit; returns its status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("switchyard already stopped"))?;
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "switchyard had already exited ({status})\n--- switchyard log ---\n{}",
                self.log_tail()
            );
        }
        signal_child(child, Signal::SIGTERM)?;
        let waited = poll_until(STOP_TIMEOUT, "switchyard to exit after SIGTERM", || {
            Ok(child.try_wait()?)
        });
        match waited {
            Ok(status) => {
                self.child = None;
                Ok(status)
            }
            Err(e) => {
                kill_and_reap(child);
                self.child = None;
                Err(e.context(format!(
                    "killed it\n--- switchyard log ---\n{}",
                    self.log_tail()
                )))
            }
        }
    }

    /// Runs `yardctl --control-socket SOCKET ARGS...` and returns what it
    /// printed, whatever its exit status.
    pub fn yardctl_raw(&self, args: &[&str]) -> Result<crate::process::Output> {
        run_with_timeout(
            Command::new(&self.yardctl)
                .arg("--control-socket")
                .arg(&self.socket)
                .args(args),
            YARDCTL_TIMEOUT,
        )
    }

    /// `yardctl COMMAND -o json`, parsed; fails on a non-zero exit.
    pub fn yardctl_json(&self, command: &str) -> Result<Value> {
        let out = self.yardctl_raw(&[command, "-o", "json"])?;
        parse_json_output(command, &out)
    }

    /// `yardctl ARGS -o json`, which must succeed, parsed as `T`.
    pub fn yardctl_as<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.yardctl_raw(&all)?;
        if !out.status.success() {
            bail!("`yardctl {}` failed: {}", args.join(" "), out.stderr.trim());
        }
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`yardctl {}` printed {:?}", args.join(" "), out.stdout))
    }

    fn yardctl_typed<T: DeserializeOwned>(&self, command: &str) -> Result<T> {
        let value = self.yardctl_json(command)?;
        serde_json::from_value(value.clone()).with_context(|| {
            format!("`yardctl {command} -o json` printed an unexpected shape: {value}")
        })
    }

    pub fn status(&self) -> Result<StatusReport> {
        self.yardctl_typed("status")
    }

    pub fn stats(&self) -> Result<StatsReport> {
        self.yardctl_typed("stats")
    }

    pub fn flows(&self) -> Result<FlowsReport> {
        self.yardctl_typed("flows")
    }

    pub fn latency(&self) -> Result<LatencyReport> {
        self.yardctl_typed("latency")
    }

    /// `yardctl config status -o json`.
    pub fn config_status(&self) -> Result<ConfigStatusReport> {
        let out = self.yardctl_raw(&["config", "status", "-o", "json"])?;
        let value = parse_json_output("config status", &out)?;
        serde_json::from_value(value.clone()).with_context(|| {
            format!("`yardctl config status -o json` printed an unexpected shape: {value}")
        })
    }

    /// Sends `signal` to the daemon (SIGHUP asks it to reload its config).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("switchyard already stopped"))?;
        signal_child(child, signal)
    }

    /// Runs `yardctl` with its output going straight to this process's
    /// stdout and stderr (for the demo).
    pub fn yardctl_print(&self, args: &[&str]) -> Result<()> {
        let mut child = Command::new(&self.yardctl)
            .arg("--control-socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.yardctl.display()))?;
        let status = poll_until(YARDCTL_TIMEOUT, "yardctl to finish", || {
            Ok(child.try_wait()?)
        })
        .inspect_err(|_| kill_and_reap(&mut child))?;
        if !status.success() {
            bail!("`yardctl {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                // SIGTERM first so the daemon detaches its program the way
                // it would in production; SIGKILL if it does not go.
                let _ = signal_child(child, Signal::SIGTERM);
                let deadline = Instant::now() + STOP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
            kill_and_reap(child);
        }
        if self.log_on_drop {
            eprintln!(
                "--- switchyard log (PID {}, namespace {}) ---\n{}",
                self.pid,
                self.lb,
                self.log_tail()
            );
        }
    }
}

/// `yardctl --control-socket SOCKET COMMAND -o json` with the default
/// `yardctl` binary, parsed.
pub fn yardctl_json(socket: &Path, command: &str) -> Result<Value> {
    let yardctl = yardctl_bin()?;
    let out = run_with_timeout(
        Command::new(yardctl)
            .arg("--control-socket")
            .arg(socket)
            .args([command, "-o", "json"]),
        YARDCTL_TIMEOUT,
    )?;
    parse_json_output(command, &out)
}

fn parse_json_output(command: &str, out: &crate::process::Output) -> Result<Value> {
    if !out.status.success() {
        bail!(
            "`yardctl {command} -o json` failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`yardctl {command} -o json` printed no JSON: {:?}",
            out.stdout
        )
    })
}

/// Frames the XDP fast path sent itself (XDP_TX and redirects), by the
/// steering program's counters.
pub fn fast_path_sent(stats: &StatsReport) -> u64 {
    ["fast_tx", "fast_redirect"]
        .iter()
        .map(|counter| stats.xdp_steering.get(*counter).copied().unwrap_or(0))
        .sum()
}
