//! Loading the config file into the running daemon: the first load at
//! start, and every reload after it (file change or SIGHUP).
//!
//! A reload is all or nothing. The file is read, parsed and compiled on a
//! thread of its own (`Loader`), so however long a file takes, signals are
//! still taken and the control socket still answers; the main thread only
//! applies what the loader hands back. A file that would leave the daemon
//! serving nothing (an empty or truncated file, or one that removes every
//! listener) is refused unless `--allow-no-listeners` says that is meant:
//! an empty file is far more often a write caught half-way or a mistake than
//! an intent, and the file cannot carry the operator's word when it is
//! empty. The XDP maps are brought in line with the new listeners and
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
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam::channel::{self, Receiver, Sender};
use sha2::{Digest, Sha256};
use switchyard_config::snapshot::Snapshot;
use switchyard_config::Options;
use switchyard_daemon::drain::Publisher;
use switchyard_daemon::neighbor::NeighborResolver;
use switchyard_daemon::refusals::{refusal, NodeSetup};
use switchyard_proto::{ConfigError, ConfigStatusReport};
use switchyard_xdp::{ListenerRanges, Prefix, ServiceMatch, Steering};

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
    /// The file held no Gateway API or Switchyard object at all.
    no_objects: bool,
}

pub struct Reloader {
    path: PathBuf,
    config: Arc<ArcSwap<Snapshot>>,
    /// Publishes into `config` with the operator's drains applied.
    publisher: Arc<Publisher>,
    status: Arc<Mutex<ConfigStatusReport>>,
    running_sha256: [u8; 32],
    /// `--allow-no-listeners`: a file that serves nothing is meant.
    allow_no_listeners: bool,
    loader: Loader,
}

/// Reads `path` (a regular file of at most the size `yardctl config check`
/// sends, opened without blocking, so a FIFO renamed over the config cannot
/// stall the loader) and the SHA-256 of what it read.
fn read(path: &Path) -> Result<(String, [u8; 32])> {
    let text = switchyard_config::read_file(path)?;
    let sha256 = Sha256::digest(text.as_bytes()).into();
    Ok((text, sha256))
}

/// How a config is compiled: resolution's options, and what the node was
/// started with that listeners depend on.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub resolve: Options,
    pub node: NodeSetup,
}

/// Reads and compiles `path` as generation `generation`.
pub fn compile(path: &Path, generation: u64, options: &CompileOptions) -> Result<Compiled> {
    let (text, sha256) = read(path)?;
    compile_text(path, &text, sha256, generation, options)
}

/// Compiles `text`, just read from `path` as `sha256`. Should the file
/// change meanwhile, its change is another event and another reload, which
/// reads it again.
fn compile_text(
    path: &Path,
    text: &str,
    sha256: [u8; 32],
    generation: u64,
    options: &CompileOptions,
) -> Result<Compiled> {
    let resources = switchyard_config::load_str(&path.display().to_string(), text)?;
    let resolution = switchyard_config::resolve_with(&resources, generation, &options.resolve);
    switchyard_config::refuse(&resources, &resolution)?;
    if let Some(why) = refusal(&resolution.snapshot, options.node) {
        anyhow::bail!("{}: {why}", path.display());
    }
    Ok(Compiled {
        snapshot: resolution.snapshot,
        diagnostics: resolution
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
        sha256,
        no_objects: resources.is_empty(),
    })
}

/// Why a compiled file that would serve nothing is refused; none when it
/// serves something, when nothing was served before and the file holds
/// objects, or when the operator allowed it.
fn serves_nothing(
    path: &Path,
    compiled: &Compiled,
    running_listeners: usize,
    allow_no_listeners: bool,
) -> Option<String> {
    if allow_no_listeners || !compiled.snapshot.listeners().is_empty() {
        return None;
    }
    if compiled.no_objects {
        return Some(format!(
            "{}: no Gateway API or Switchyard objects (an empty or truncated file?); \
             start switchyard with --allow-no-listeners to accept a config that serves nothing",
            path.display()
        ));
    }
    (running_listeners > 0).then(|| {
        format!(
            "{}: would remove every listener ({running_listeners} running, none in the file); \
             start switchyard with --allow-no-listeners to accept a config that serves nothing",
            path.display()
        )
    })
}

/// A reload the loader thread was asked for.
struct LoadRequest {
    trigger: Trigger,
    generation: u64,
    running_sha256: [u8; 32],
}

/// What the loader thread made of a request.
struct Loaded {
    trigger: Trigger,
    /// None: the contents are those running, and a file change asks
    /// nothing then.
    outcome: Result<Option<Compiled>, String>,
}

/// The thread that reads and compiles config files for reloads, one at a
/// time, and wakes the main thread through a socket when one is done.
struct Loader {
    requests: Sender<LoadRequest>,
    results: Receiver<Loaded>,
    wake: UnixStream,
    busy: bool,
    /// A reload asked for while one was loading: loaded after it, with the
    /// stronger trigger of those asked for.
    queued: Option<Trigger>,
}

impl Loader {
    fn start(path: PathBuf, options: CompileOptions) -> Result<Self> {
        let (requests, incoming) = channel::unbounded::<LoadRequest>();
        let (done, results) = channel::unbounded();
        let (wake, waker) = UnixStream::pair().context("creating the config loader's wake-up")?;
        wake.set_nonblocking(true)
            .context("creating the config loader's wake-up")?;
        thread::Builder::new()
            .name("config-load".into())
            .spawn(move || {
                for request in incoming {
                    let loaded = Loaded {
                        trigger: request.trigger,
                        outcome: load(&path, &options, &request).map_err(|err| format!("{err:#}")),
                    };
                    if done.send(loaded).is_err() {
                        return;
                    }
                    // One byte per result; the main thread reads them all.
                    let _ = (&waker).write_all(&[1]);
                }
            })
            .context("starting the config loader thread")?;
        Ok(Self {
            requests,
            results,
            wake,
            busy: false,
            queued: None,
        })
    }

    fn take(&mut self) -> Option<Loaded> {
        let mut drained = [0u8; 64];
        while matches!((&self.wake).read(&mut drained), Ok(n) if n > 0) {}
        let loaded = self.results.try_recv().ok()?;
        self.busy = false;
        Some(loaded)
    }
}

fn load(path: &Path, options: &CompileOptions, request: &LoadRequest) -> Result<Option<Compiled>> {
    let (text, sha256) = read(path)?;
    if request.trigger == Trigger::FileChanged && sha256 == request.running_sha256 {
        return Ok(None);
    }
    compile_text(path, &text, sha256, request.generation, options).map(Some)
}

impl Reloader {
    /// Takes over a config that `compile` produced and the daemon has
    /// programmed and published in `config`.
    pub fn new(
        path: &Path,
        options: CompileOptions,
        config: Arc<ArcSwap<Snapshot>>,
        publisher: Arc<Publisher>,
        initial: &Compiled,
        allow_no_listeners: bool,
    ) -> Result<Self> {
        let status = ConfigStatusReport {
            path: path.display().to_string(),
            generation: initial.snapshot.generation(),
            file_generation: initial.snapshot.generation(),
            applied_at_unix: unix_now(),
            sha256: hex(&initial.sha256),
            listeners: initial.snapshot.listeners().len(),
            diagnostics: initial.diagnostics.clone(),
            ..Default::default()
        };
        Ok(Self {
            path: path.to_owned(),
            config,
            publisher,
            status: Arc::new(Mutex::new(status)),
            running_sha256: initial.sha256,
            allow_no_listeners,
            loader: Loader::start(path.to_owned(), options)?,
        })
    }

    /// Readable when the loader has a file compiled (or refused): then call
    /// `apply_loaded`.
    pub fn loaded_fd(&self) -> BorrowedFd<'_> {
        self.loader.wake.as_fd()
    }

    /// Asks the loader thread to read and compile the file; a request made
    /// while it is busy is kept (one, the stronger trigger) for after it.
    pub fn request(&mut self, trigger: Trigger) {
        if self.loader.busy {
            self.loader.queued = Some(match (self.loader.queued, trigger) {
                (Some(Trigger::Signal), _) | (_, Trigger::Signal) => Trigger::Signal,
                _ => Trigger::FileChanged,
            });
            return;
        }
        let request = LoadRequest {
            trigger,
            generation: self.config.load().generation() + 1,
            running_sha256: self.running_sha256,
        };
        if self.loader.requests.send(request).is_err() {
            return self.refuse("the config loader thread has stopped".to_owned());
        }
        self.loader.busy = true;
    }

    /// Applies what the loader finished, if it has, then starts a reload
    /// asked for meanwhile.
    pub fn apply_loaded(&mut self, steering: &Mutex<Steering>, resolver: &NeighborResolver) {
        let Some(loaded) = self.loader.take() else {
            return;
        };
        match loaded.outcome {
            Ok(Some(compiled)) => {
                let mut steering = steering.lock().unwrap_or_else(PoisonError::into_inner);
                self.reload(loaded.trigger, compiled, &mut steering, resolver);
            }
            Ok(None) => log::debug!("{}: unchanged", self.path.display()),
            Err(message) => self.refuse(message),
        }
        if let Some(trigger) = self.loader.queued.take() {
            self.request(trigger);
        }
    }

    pub fn status(&self) -> Arc<Mutex<ConfigStatusReport>> {
        self.status.clone()
    }

    fn reload(
        &mut self,
        trigger: Trigger,
        compiled: Compiled,
        steering: &mut Steering,
        resolver: &NeighborResolver,
    ) {
        let running = self.config.load_full();
        if let Some(message) = serves_nothing(
            &self.path,
            &compiled,
            running.listeners().len(),
            self.allow_no_listeners,
        ) {
            return self.refuse(message);
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
        status.file_generation = generation;
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
    let known: HashSet<IpAddr> = backend_addresses(running).into_iter().collect();
    let new_backends: Vec<IpAddr> = backend_addresses(next)
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
    // Ranges before services: a new listener is steered only once its
    // ranges are in place.
    if let Err(err) = steering.set_source_ranges(&source_ranges(next)) {
        if let Err(restore) = steering.set_source_ranges(&source_ranges(running)) {
            log::error!("restoring the running config's source ranges: {restore}");
        }
        return Err(err).context("programming source ranges into the XDP maps");
    }
    let (vips, backends) = service_matches(next);
    if let Err(err) = steering.set_services(&vips, &backends) {
        if let Err(restore) = steering.set_source_ranges(&source_ranges(running)) {
            log::error!("restoring the running config's source ranges: {restore}");
        }
        let (vips, backends) = service_matches(running);
        if let Err(restore) = steering.set_services(&vips, &backends) {
            log::error!("restoring the running config's XDP maps: {restore}");
        }
        return Err(err).context("programming VIPs and backends into the XDP maps");
    }
    Ok(())
}

/// VIPs to steer by destination, backend endpoints to steer replies by
/// source, IPv4 and IPv6 alike (the steering program keeps each family in
/// its own maps).
pub fn service_matches(snapshot: &Snapshot) -> (Vec<ServiceMatch>, Vec<ServiceMatch>) {
    let mut vips = Vec::new();
    let mut backends = Vec::new();
    for (index, listener) in snapshot.listeners().iter().enumerate() {
        // Id 0 means "none" in the XDP maps.
        let id = index as u32 + 1;
        vips.push(ServiceMatch {
            addr: listener.address(),
            port: listener.port(),
            protocol: listener.protocol() as u8,
            id,
        });
        for backend in listener.backends() {
            backends.push(ServiceMatch {
                addr: backend.endpoint.address,
                port: backend.endpoint.port,
                protocol: listener.protocol() as u8,
                id,
            });
        }
    }
    // An endpoint behind several listeners is one key in the XDP map: it only
    // marks "steer replies from here", and workers look up the listener.
    backends.sort_by_key(|b| (b.addr, b.port, b.protocol));
    backends.dedup_by_key(|b| (b.addr, b.port, b.protocol));
    (vips, backends)
}

/// Each listener's source ranges, for the steering program to drop what
/// they do not admit (listeners without ranges are left out).
pub fn source_ranges(snapshot: &Snapshot) -> Vec<ListenerRanges> {
    let prefixes = |nets: &[ipnet::IpNet]| -> Vec<Prefix> {
        nets.iter().map(|n| (n.addr(), n.prefix_len())).collect()
    };
    snapshot
        .listeners()
        .iter()
        .filter(|l| !l.policy().source_ranges.is_open())
        .map(|l| {
            let ranges = &l.policy().source_ranges;
            ListenerRanges {
                vip: l.address(),
                port: l.port(),
                protocol: l.protocol() as u8,
                allow: ranges.allow.as_deref().map(prefixes),
                deny: prefixes(&ranges.deny),
            }
        })
        .collect()
}

/// Every backend's address, both families, once: the next hops to resolve
/// before a config serves them.
pub fn backend_addresses(snapshot: &Snapshot) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = snapshot
        .listeners()
        .iter()
        .flat_map(|l| l.backends().iter())
        .map(|b| b.endpoint.address)
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/demo.yaml");

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("swy-reload-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn compiled(path: &Path) -> Compiled {
        let options = CompileOptions {
            resolve: Options::default(),
            node: NodeSetup::default(),
        };
        compile(path, 2, &options).unwrap()
    }

    #[test]
    fn an_empty_file_is_refused_unless_allowed() {
        let path = temp_file("empty.yaml", "");
        let empty = compiled(&path);
        let why = serves_nothing(&path, &empty, 3, false).expect("refused");
        assert!(why.contains("no Gateway API"), "{why}");
        assert!(why.contains("--allow-no-listeners"), "{why}");
        assert!(
            serves_nothing(&path, &empty, 0, false).is_some(),
            "even when nothing runs"
        );
        assert!(serves_nothing(&path, &empty, 3, true).is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_removes_every_listener_is_refused_unless_allowed() {
        let path = temp_file(
            "no-listeners.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        );
        let none = compiled(&path);
        assert!(!none.no_objects);
        let why = serves_nothing(&path, &none, 3, false).expect("refused");
        assert!(why.contains("would remove every listener"), "{why}");
        assert!(
            serves_nothing(&path, &none, 0, false).is_none(),
            "nothing to remove"
        );
        assert!(serves_nothing(&path, &none, 3, true).is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_with_listeners_is_never_refused_for_it() {
        let demo = compiled(Path::new(DEMO));
        assert!(!demo.snapshot.listeners().is_empty());
        assert!(serves_nothing(Path::new(DEMO), &demo, 3, false).is_none());
    }

    #[test]
    fn a_fifo_in_place_of_the_file_is_refused_without_waiting_for_a_writer() {
        let path = std::env::temp_dir().join(format!("swy-reload-{}-fifo", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.contains("a FIFO (named pipe), not a regular file"),
            "{err}"
        );
    }
}
