//! Running short-lived helper programs with a deadline, and locating the
//! binaries under test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::poll::poll_until;

/// Env var naming the daemon binary.
pub const SWITCHYARD_BIN_ENV: &str = "SWITCHYARD_BIN";
/// Env var naming the CLI binary.
pub const YARDCTL_BIN_ENV: &str = "YARDCTL_BIN";

/// The Cargo workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$SWITCHYARD_BIN`, or `<workspace>/target/release/switchyard`.
pub fn switchyard_bin() -> Result<PathBuf> {
    locate(SWITCHYARD_BIN_ENV, "switchyard")
}

/// `$YARDCTL_BIN`, or `<workspace>/target/release/yardctl`.
pub fn yardctl_bin() -> Result<PathBuf> {
    locate(YARDCTL_BIN_ENV, "yardctl")
}

/// `<workspace>/target/release/<name>`, which must exist.
pub fn release_bin(name: &str) -> Result<PathBuf> {
    let path = workspace_root().join("target/release").join(name);
    if !path.is_file() {
        bail!(
            "the {name} binary is not at {}: run `make test` (or `make demo`, `make bench`), \
             which build the release binaries first",
            path.display()
        );
    }
    Ok(path)
}

fn locate(var: &str, name: &str) -> Result<PathBuf> {
    let Some(path) = std::env::var_os(var).map(PathBuf::from) else {
        return release_bin(name);
    };
    if !path.is_file() {
        bail!("{var} names {}, which is not a file", path.display());
    }
    Ok(path)
}

/// What a finished helper program printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion with piped output, killing it (by its PID) if it
/// is still running after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match poll_until(timeout, &shown, || Ok(child.try_wait()?)) {
        Ok(status) => status,
        Err(e) => {
            kill_and_reap(&mut child);
            return Err(e);
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Sends `signal` to a child this harness started, by its PID.
pub fn signal_child(child: &Child, signal: Signal) -> Result<()> {
    let pid = i32::try_from(child.id()).context("child PID out of range")?;
    kill(Pid::from_raw(pid), signal).with_context(|| format!("sending {signal} to PID {pid}"))
}

/// SIGKILLs a child this harness started and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = signal_child(child, Signal::SIGKILL);
    }
    let _ = child.wait();
}
