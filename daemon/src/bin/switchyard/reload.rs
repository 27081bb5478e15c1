//! Loading the config file into the running daemon: the first load at
//! start, and every reload after it (file change or SIGHUP).
//!
//! A reload is all or nothing. The file is parsed and compiled off the
//! packet path; the XDP maps are brought in line with the new listeners and
//! the new backends' MACs are resolved; only then is the snapshot swapped,
//! with one atomic store, so a worker sees either the old config or the new
//! one. Anything that fails before the swap (a YAML or schema error, a full
//! XDP map) leaves the running config, and the XDP maps it needs, as they
//! were, and is reported in the log and in `yardctl config status`.
//!
//! Entries of unchanged listeners are never removed from the XDP maps
//! (`Steering::set_services` only adds, rewrites and removes what differs),
//! and their Maglev tables are rebuilt identical, so their flows keep their
//! backends and lose no packet across a reload.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use switchyard_config::snapshot::Snapshot;
use switchyard_config::Options;
use switchyard_daemon::drain::Publisher;
use switchyard_daemon::neighbor::NeighborResolver;
use switchyard_proto::{ConfigError, ConfigStatusReport};
use switchyard_xdp::{ServiceMatch, Steering};

/// How long a reload waits for the kernel to resolve new backends' MACs
/// before swapping anyway; flows to a backend still unresolved are dropped
/// and counted until it resolves. Shorter than at start: the daemon is
/// already serving, and the reload holds up the next one.
const RELOAD_NEIGHBOUR_DEADLINE: Duration = Duration::from_secs(1);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// inotify saw the file (or its directory) change: reload only if the
    /// contents differ from the running config's.
    FileChanged,
    /// SIGHUP: the operator asked; reload even if the contents are the same.
    Signal,
}

/// A config file compiled and ready to program.
pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<String>,
    sha256: [u8; 32],
}

pub struct Reloader {
    path: PathBuf,
    /// Resolution inputs from the command line; a reload keeps them.
    options: Options,
    config: Arc<ArcSwap<Snapshot>>,
    /// Publishes into `config` with the operator's drains applied.
    publisher: Arc<Publisher>,
    status: Arc<Mutex<ConfigStatusReport>>,
    running_sha256: [u8; 32],
}

/// Reads and compiles `path` as generation `generation`.
pub fn compile(path: &Path, generation: u64, options: &Options) -> Result<Compiled> {
    let text = switchyard_config::read_file(path)?;
    let sha256: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    let resources = switchyard_config::load_str(&path.display().to_string(), &text)?;
    let resolution = switchyard_config::resolve_with(&resources, generation, options);
    Ok(Compiled {
        snapshot: resolution.snapshot,
        diagnostics: resolution
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
        sha256,
    })
}

impl Reloader {
    /// Takes over a config that `compile` produced and the daemon has
    /// programmed and published in `config`.
    pub fn new(
        path: &Path,
        options: Options,
        config: Arc<ArcSwap<Snapshot>>,
        publisher: Arc<Publisher>,
        initial: &Compiled,
    ) -> Self {
        let status = ConfigStatusReport {
            path: path.display().to_string(),
            generation: initial.snapshot.generation(),
            applied_at_unix: unix_now(),
            sha256: hex(&initial.sha256),
            listeners: initial.snapshot.listeners().len(),
            diagnostics: initial.diagnostics.clone(),
            ..Default::default()
        };
        Self {
            path: path.to_owned(),
            options,
            config,
            publisher,
            status: Arc::new(Mutex::new(status)),
            running_sha256: initial.sha256,
        }
    }

    pub fn status(&self) -> Arc<Mutex<ConfigStatusReport>> {
        self.status.clone()
    }

    pub fn reload(
        &mut self,
        trigger: Trigger,
        steering: &mut Steering,
        resolver: &NeighborResolver,
    ) {
        let running = self.config.load_full();
        let compiled = match compile(&self.path, running.generation() + 1, &self.options) {
            Ok(compiled) => compiled,
            Err(err) => return self.refuse(format!("{err:#}")),
        };
        if trigger == Trigger::FileChanged && compiled.sha256 == self.running_sha256 {
            log::debug!("{}: unchanged", self.path.display());
            return;
        }
        if let Err(err) = program(steering, resolver, &running, &compiled.snapshot) {
            return self.refuse(format!("{err:#}"));
        }
        let listeners = compiled.snapshot.listeners().len();
        let generation = match self.publisher.publish_config(compiled.snapshot) {
            Ok(generation) => generation,
            Err(err) => {
                // The XDP maps already steer the new config's VIPs: back to
                // the running config's, which stays.
                let (vips, backends) = service_matches(&running);
                if let Err(restore) = steering.set_services(&vips, &backends) {
                    log::error!("restoring the running config's XDP maps: {restore}");
                }
                return self.refuse(err.to_string());
            }
        };
        self.running_sha256 = compiled.sha256;
        for diagnostic in &compiled.diagnostics {
            log::warn!("config: {diagnostic}");
        }
        log::info!(
            "config {} reloaded ({trigger:?}): generation {generation}, {listeners} listeners",
            self.path.display()
        );
        let mut status = self.lock_status();
        status.generation = generation;
        status.applied_at_unix = unix_now();
        status.sha256 = hex(&compiled.sha256);
        status.listeners = listeners;
        status.diagnostics = compiled.diagnostics;
        status.reloads += 1;
        status.last_error = None;
    }

    fn refuse(&self, message: String) {
        log::error!("config reload refused, the running config stays: {message}");
        let mut status = self.lock_status();
        status.failed_reloads += 1;
        status.last_error = Some(ConfigError {
            at_unix: unix_now(),
            message,
        });
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ConfigStatusReport> {
        // The status is plain data, rewritten whole: a panic elsewhere
        // cannot leave it half-updated in a way that matters.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Brings the XDP maps and neighbour entries in line with `next`, which is
/// about to replace `running`. On failure the maps are put back as
/// `running` needs them.
pub fn program(
    steering: &mut Steering,
    resolver: &NeighborResolver,
    running: &Snapshot,
    next: &Snapshot,
) -> Result<()> {
    let known: HashSet<Ipv4Addr> = backend_ipv4_addresses(running).into_iter().collect();
    let new_backends: Vec<Ipv4Addr> = backend_ipv4_addresses(next)
        .into_iter()
        .filter(|a| !known.contains(a))
        .collect();
    if !new_backends.is_empty() {
        for addr in resolver.prime(&new_backends, RELOAD_NEIGHBOUR_DEADLINE) {
            log::warn!(
                "backend {addr}: no route or MAC address yet; its flows are dropped until it resolves"
            );
        }
    }
    let (vips, backends) = service_matches(next);
    if let Err(err) = steering.set_services(&vips, &backends) {
        let (vips, backends) = service_matches(running);
        if let Err(restore) = steering.set_services(&vips, &backends) {
            log::error!("restoring the running config's XDP maps: {restore}");
        }
        return Err(err).context("programming VIPs and backends into the XDP maps");
    }
    Ok(())
}

/// VIPs to steer by destination, backend endpoints to steer replies by source.
pub fn service_matches(snapshot: &Snapshot) -> (Vec<ServiceMatch>, Vec<ServiceMatch>) {
    let mut vips = Vec::new();
    let mut backends = Vec::new();
    for (index, listener) in snapshot.listeners().iter().enumerate() {
        // Id 0 means "none" in the XDP maps.
        let id = index as u32 + 1;
        let IpAddr::V4(addr) = listener.address() else {
            log::warn!("{}: IPv6 VIPs are not served yet", listener.name());
            continue;
        };
        vips.push(ServiceMatch {
            addr,
            port: listener.port(),
            protocol: listener.protocol() as u8,
            id,
        });
        for backend in listener.backends() {
            if let IpAddr::V4(addr) = backend.endpoint.address {
                backends.push(ServiceMatch {
                    addr,
                    port: backend.endpoint.port,
                    protocol: listener.protocol() as u8,
                    id,
                });
            }
        }
    }
    // An endpoint behind several listeners is one key in the XDP map: it only
    // marks "steer replies from here", and workers look up the listener.
    backends.sort_by_key(|b| (b.addr, b.port, b.protocol));
    backends.dedup_by_key(|b| (b.addr, b.port, b.protocol));
    (vips, backends)
}

pub fn backend_ipv4_addresses(snapshot: &Snapshot) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = snapshot
        .listeners()
        .iter()
        .flat_map(|l| l.backends().iter())
        .filter_map(|b| match b.endpoint.address {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
