//! Named network namespaces as guards, and running code inside them.
//!
//! This module owns the life of every namespace the harness creates: names
//! are unique per process and test (`swy-<pid>-<counter>-<role>`), and the
//! guard deletes the namespace on drop, also while a test unwinds. It never
//! touches a namespace it did not create, and never the host namespace.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Prefix of every namespace this harness creates. Not "syb": that prefix
/// belongs to other tooling on these machines.
pub const NAME_PREFIX: &str = "swy";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `ip netns add` mounts /run/netns on first use; two first uses racing in one
/// process can stack two mounts and hide namespaces created under the first.
/// Adding and deleting one at a time in the process avoids that.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// A fresh id for a group of namespaces (one topology, one test).
pub fn next_id() -> u64 {
    // Relaxed: only uniqueness matters, not ordering with other memory.
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// `swy-<pid>-<id>-<role>`.
pub fn unique_name(id: u64, role: &str) -> String {
    format!("{NAME_PREFIX}-{}-{id}-{role}", std::process::id())
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `swy-<pid>-<fresh id>-<role>`.
    pub fn new(role: &str) -> Result<Netns> {
        Netns::with_name(unique_name(next_id(), role))
    }

    /// Creates a namespace with exactly this name; it must not exist yet.
    pub fn with_name(name: String) -> Result<Netns> {
        if !name.starts_with(NAME_PREFIX) {
            bail!("namespace {name:?} does not start with {NAME_PREFIX:?}");
        }
        {
            let _one_at_a_time = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_ip(&["netns", "add", &name])?;
        }
        let ns = Netns { name };
        // A new namespace's loopback is down; sockets bound to 127.0.0.1 and
        // traffic to the node's own addresses need it.
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS...`, failing with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// A one-queue veth pair, `dev` here and `peer_dev` in `peer`, made
    /// inside the namespaces so no name appears in the host's.
    pub fn veth(&self, dev: &str, peer: &Netns, peer_dev: &str) -> Result<()> {
        self.ip(&[
            "link", "add", dev, "type", "veth", "peer", "name", peer_dev, "netns", &peer.name,
        ])?;
        Ok(())
    }

    /// A `Command` that runs `program` inside this namespace through
    /// `ip netns exec` (which also gives it a /sys of this namespace).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Writes a sysctl of this namespace, e.g. `net/ipv4/ip_forward`, and
    /// reads it back.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = PathBuf::from("/proc/sys").join(key);
        let got = in_netns(self, || -> std::io::Result<String> {
            // /proc/sys/net resolves against the opening thread's namespace.
            std::fs::write(&path, value)?;
            std::fs::read_to_string(&path)
        })?
        .with_context(|| format!("sysctl {key}={value} in {}", self.name))?;
        if got.trim() != value {
            bail!(
                "sysctl {key} in {} reads {:?} after writing {value:?}",
                self.name,
                got.trim()
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _one_at_a_time = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a fresh thread that has entered `ns`, and returns its result.
///
/// Sockets created inside `f` belong to `ns` for their whole life and may be
/// used from any thread afterwards; so do the sockets a listener accepts. A
/// panic in `f` is resumed on the caller's thread.
pub fn in_netns<T, F>(ns: &Netns, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = ns.path();
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || -> Result<T> {
            // Only this thread switches; the setns of a network namespace is
            // per thread and needs no single-threaded process.
            setns(&file, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into {}", path.display()))?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `ip ARGS...` in the caller's namespace, returning stdout or an error
/// that quotes the command line and its stderr.
pub fn run_ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (is iproute2 installed?)")?;
    if !out.status.success() {
        return Err(anyhow!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
