//! Loading the config into the running daemon: the first load at start,
//! and every update after it: a file change or SIGHUP for a config file,
//! an `ApplyCluster` request for a cluster (`--cluster`).
//!
//! An update is all or nothing. The text is parsed and compiled on a
//! thread of its own (`Loader`), so however long it takes, signals are
//! still taken and the control socket still answers; the main thread only
//! applies what the loader hands back. A file and a cluster's objects take
//! the same path: the same compile (`compile_text`), the same programming
//! of the XDP maps, the same publication; only what counts as serving
//! nothing differs (see `serves_nothing`). A file that would leave the
//! daemon serving nothing (an empty or truncated file, or one that removes
//! every listener) is refused unless `--allow-no-listeners` says that is
//! meant: an empty file is far more often a write caught half-way or a
//! mistake than an intent, and the file cannot carry the operator's word
//! when it is empty. The XDP maps are brought in line with the new
//! listeners and the new backends' MACs are resolved; only then is the
//! snapshot swapped, with one atomic store, so a worker sees either the old
//! config or the new one. Anything that fails before the swap (a YAML or
//! schema error, a full XDP map) leaves the running config, and the XDP
//! maps it needs, as they were, and is reported in the log, in `yardctl
//! config status` and, for a cluster, in the answer to its request.
//!
//! Entries of unchanged listeners are never removed from the XDP maps
//! (`Steering::set_services` only adds, rewrites and removes what differs),
//! and their Maglev tables are rebuilt identical, so their flows keep their
//! backends and lose no packet across an update.

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
use switchyard_daemon::cluster::{self, ClusterApply};
use switchyard_daemon::drain::Publisher;
use switchyard_daemon::neighbor::NeighborResolver;
use switchyard_daemon::refusals::{refusal, NodeSetup};
use switchyard_proto::{
    ClusterApplyOutcome, ClusterApplyReport, ConfigError, ConfigSource, ConfigStatusReport,
    ConfigUpdate, RELOAD_APPLIED, RELOAD_REFUSED, RELOAD_UNCHANGED,
};
use switchyard_xdp::{ListenerRanges, Prefix, ServiceMatch, Steering};

/// How long a reload waits for the kernel to resolve new backends' MACs
/// before swapping anyway; flows to a backend still unresolved are dropped
/// and counted until it resolves. Shorter than at start: the daemon is
/// already serving, and the reload holds up the next one.
const RELOAD_NEIGHBOUR_DEADLINE: Duration = Duration::from_secs(1);

/// What `yardctl config status` calls a cluster daemon's config before any
/// cluster has sent one.
const NO_CLUSTER_YET: &str = "cluster (none yet)";

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// inotify saw the file (or its directory) change: reload only if the
    /// contents differ from the running config's.
    FileChanged,
    /// SIGHUP: the operator asked; reload even if the contents are the same.
    Signal,
}

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--config FILE`.
    File(PathBuf),
    /// `--cluster`, with `--cluster-cache FILE` if given.
    Cluster { cache: Option<PathBuf> },
}

impl Source {
    fn kind(&self) -> ConfigSource {
        match self {
            Self::File(_) => ConfigSource::File,
            Self::Cluster { .. } => ConfigSource::Cluster,
        }
    }
}

/// A config compiled and ready to program.
pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<String>,
    /// The status of every object Switchyard is responsible for, as the
    /// answer to a cluster update carries it.
    statuses: Vec<serde_json::Value>,
    /// SHA-256 of the text it came from; none for the empty config a
    /// cluster daemon starts with.
    sha256: Option<[u8; 32]>,
    /// The text held no Gateway API or Switchyard object at all.
    no_objects: bool,
    /// What it came from, as `yardctl config status` names it.
    name: String,
}

impl Compiled {
    /// What it came from: the file, or `cluster <source>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What a cluster daemon serves before any cluster has sent objects:
    /// nothing, as generation `generation`.
    pub fn nothing_yet(generation: u64) -> Self {
        Self {
            snapshot: Snapshot::new(generation, Vec::new())
                .expect("a snapshot without listeners is valid"),
            diagnostics: Vec::new(),
            statuses: Vec::new(),
            sha256: None,
            no_objects: true,
            name: NO_CLUSTER_YET.to_owned(),
        }
    }
}

pub struct Reloader {
    source: Source,
    config: Arc<ArcSwap<Snapshot>>,
    /// Publishes into `config` with the operator's drains applied.
    publisher: Arc<Publisher>,
    status: Arc<Mutex<ConfigStatusReport>>,
    /// Also read by the loader thread, to answer a cluster update that
    /// carries the running objects without compiling them again.
    running_sha256: Arc<Mutex<Option<[u8; 32]>>>,
    /// The running config's statuses, for answers that apply nothing.
    running_statuses: Vec<serde_json::Value>,
    /// `--allow-no-listeners`: a config that serves nothing is meant.
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
    compile_text(
        &path.display().to_string(),
        &text,
        sha256,
        generation,
        options,
    )
}

/// Compiles the cluster config cached at `path` (`--cluster-cache`) as
/// generation `generation`; none when nothing is cached yet. Errors name
/// the cache file and its lines.
pub fn compile_cached(
    path: &Path,
    generation: u64,
    options: &CompileOptions,
) -> Result<Option<Compiled>> {
    let Some(cached) = cluster::read_cache(path)? else {
        return Ok(None);
    };
    let sha256 = Sha256::digest(cached.contents.as_bytes()).into();
    // The whole file, header line included (a YAML comment), so that the
    // lines errors name are the file's.
    let text = cluster::cache_text(&cached);
    let mut compiled = compile_text(
        &path.display().to_string(),
        &text,
        sha256,
        generation,
        options,
    )?;
    compiled.name = cached.name();
    Ok(Some(compiled))
}

/// Compiles `text`, named `name` in errors, whose SHA-256 is `sha256`.
/// A file and a cluster's objects both come through here. Should a file
/// change meanwhile, its change is another event and another reload,
/// which reads it again.
fn compile_text(
    name: &str,
    text: &str,
    sha256: [u8; 32],
    generation: u64,
    options: &CompileOptions,
) -> Result<Compiled> {
    let resources = switchyard_config::load_str(name, text)?;
    let resolution = switchyard_config::resolve_with(&resources, generation, &options.resolve);
    switchyard_config::refuse(&resources, &resolution)?;
    if let Some(why) = refusal(&resolution.snapshot, options.node) {
        anyhow::bail!("{name}: {why}");
    }
    let statuses = resolution
        .statuses
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .context("encoding the objects' statuses")?;
    Ok(Compiled {
        snapshot: resolution.snapshot,
        diagnostics: resolution
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect(),
        statuses,
        sha256: Some(sha256),
        no_objects: resources.is_empty(),
        name: name.to_owned(),
    })
}

/// Why a compiled config that would serve nothing is refused; none when it
/// serves something, or when the operator allowed it.
///
/// A file is refused when it holds no object at all, or when it would
/// remove every listener. A cluster is refused only when it holds no object
/// at all: a real cluster always has Namespaces, so none at all is a
/// watcher that lost its way, while a cluster whose last Switchyard Gateway
/// was deleted is a state the operator made, and its statuses must be
/// written back as they are.
fn serves_nothing(
    source: ConfigSource,
    compiled: &Compiled,
    running_listeners: usize,
    allow_no_listeners: bool,
) -> Option<String> {
    if allow_no_listeners || !compiled.snapshot.listeners().is_empty() {
        return None;
    }
    let name = &compiled.name;
    let allow = "start switchyard with --allow-no-listeners to accept a config that serves nothing";
    match source {
        ConfigSource::File if compiled.no_objects => Some(format!(
            "{name}: no Gateway API or Switchyard objects (an empty or truncated file?); {allow}"
        )),
        ConfigSource::File => (running_listeners > 0).then(|| {
            format!(
                "{name}: would remove every listener ({running_listeners} running, none in the file); {allow}"
            )
        }),
        ConfigSource::Cluster if compiled.no_objects => Some(format!(
            "{name}: no objects at all, not even a Namespace, which every cluster has \
             (is switchyard-kube watching?); {allow}"
        )),
        ConfigSource::Cluster => None,
    }
}

/// A reload of the file the loader thread was asked for.
struct LoadRequest {
    trigger: Trigger,
    generation: u64,
    running_sha256: Option<[u8; 32]>,
}

/// What the loader thread made of a request.
enum Loaded {
    File {
        trigger: Trigger,
        /// None: the contents are those running, and a file change asks
        /// nothing then.
        outcome: Result<Option<Compiled>, String>,
    },
    Cluster {
        /// The request; its contents are cached once applied.
        request: ClusterApply,
        sha256: [u8; 32],
        /// None: the objects are those running.
        outcome: Result<Option<Compiled>, String>,
    },
}

/// The thread that reads and compiles configs, one at a time, and wakes
/// the main thread through a socket when one is done.
struct Loader {
    requests: Sender<LoadRequest>,
    results: Receiver<Loaded>,
    wake: UnixStream,
    busy: bool,
    /// A reload asked for while one was loading: loaded after it, with the
    /// stronger trigger of those asked for.
    queued: Option<Trigger>,
}

/// What the loader thread compiles: file reloads, or a cluster's updates.
enum Work {
    /// Reloads of the file, asked for by the main thread.
    File(PathBuf),
    Cluster {
        updates: Receiver<ClusterApply>,
        config: Arc<ArcSwap<Snapshot>>,
        running_sha256: Arc<Mutex<Option<[u8; 32]>>>,
    },
}

impl Loader {
    fn start(work: Work, options: CompileOptions) -> Result<Self> {
        let (done, results) = channel::unbounded();
        let (wake, waker) = UnixStream::pair().context("creating the config loader's wake-up")?;
        wake.set_nonblocking(true)
            .context("creating the config loader's wake-up")?;
        let (requests, incoming) = channel::unbounded::<LoadRequest>();
        let hand_over = move |loaded: Loaded| {
            if done.send(loaded).is_err() {
                return false;
            }
            // One byte per result; the main thread reads them all.
            let _ = (&waker).write_all(&[1]);
            true
        };
        thread::Builder::new()
            .name("config-load".into())
            .spawn(move || match work {
                Work::File(path) => {
                    for request in incoming {
                        let outcome =
                            load(&path, &options, &request).map_err(|err| format!("{err:#}"));
                        if !hand_over(Loaded::File {
                            trigger: request.trigger,
                            outcome,
                        }) {
                            return;
                        }
                    }
                }
                Work::Cluster {
                    updates,
                    config,
                    running_sha256,
                } => {
                    for request in updates {
                        let sha256: [u8; 32] =
                            Sha256::digest(request.config.contents.as_bytes()).into();
                        let running = *running_sha256
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        let outcome = if running == Some(sha256) {
                            Ok(None)
                        } else {
                            let generation = config.load().generation() + 1;
                            compile_text(
                                &request.config.name(),
                                &request.config.contents,
                                sha256,
                                generation,
                                &options,
                            )
                            .map(Some)
                            .map_err(|err| format!("{err:#}"))
                        };
                        if !hand_over(Loaded::Cluster {
                            request,
                            sha256,
                            outcome,
                        }) {
                            return;
                        }
                    }
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

    /// Everything the loader has finished since last asked.
    fn take(&mut self) -> Vec<Loaded> {
        let mut drained = [0u8; 64];
        while matches!((&self.wake).read(&mut drained), Ok(n) if n > 0) {}
        let loaded: Vec<Loaded> = self.results.try_iter().collect();
        if loaded.iter().any(|l| matches!(l, Loaded::File { .. })) {
            self.busy = false;
        }
        loaded
    }
}

fn load(path: &Path, options: &CompileOptions, request: &LoadRequest) -> Result<Option<Compiled>> {
    let (text, sha256) = read(path)?;
    if request.trigger == Trigger::FileChanged && Some(sha256) == request.running_sha256 {
        return Ok(None);
    }
    compile_text(
        &path.display().to_string(),
        &text,
        sha256,
        request.generation,
        options,
    )
    .map(Some)
}

impl Reloader {
    /// Takes over a config that `compile` (or `compile_cached`, or
    /// `Compiled::nothing_yet`) produced and the daemon has programmed and
    /// published in `config`. A cluster daemon's updates arrive on
    /// `updates` (the other end of the control socket's `ClusterInbox`).
    pub fn new(
        source: Source,
        options: CompileOptions,
        config: Arc<ArcSwap<Snapshot>>,
        publisher: Arc<Publisher>,
        initial: &Compiled,
        allow_no_listeners: bool,
        updates: Option<Receiver<ClusterApply>>,
    ) -> Result<Self> {
        let status = ConfigStatusReport {
            path: initial.name.clone(),
            source_kind: source.kind(),
            source: initial.name.clone(),
            generation: initial.snapshot.generation(),
            file_generation: initial.snapshot.generation(),
            applied_at_unix: unix_now(),
            sha256: initial.sha256.as_ref().map(|s| hex(s)).unwrap_or_default(),
            listeners: initial.snapshot.listeners().len(),
            diagnostics: initial.diagnostics.clone(),
            ..Default::default()
        };
        let running_sha256 = Arc::new(Mutex::new(initial.sha256));
        let work = match (&source, updates) {
            (Source::File(path), _) => Work::File(path.clone()),
            (Source::Cluster { .. }, Some(updates)) => Work::Cluster {
                updates,
                config: config.clone(),
                running_sha256: running_sha256.clone(),
            },
            (Source::Cluster { .. }, None) => {
                anyhow::bail!("a cluster daemon without a way for updates to come in")
            }
        };
        let loader = Loader::start(work, options)?;
        Ok(Self {
            source,
            config,
            publisher,
            status: Arc::new(Mutex::new(status)),
            running_sha256,
            running_statuses: initial.statuses.clone(),
            allow_no_listeners,
            loader,
        })
    }

    /// Readable when the loader has a config compiled (or refused): then
    /// call `apply_loaded`.
    pub fn loaded_fd(&self) -> BorrowedFd<'_> {
        self.loader.wake.as_fd()
    }

    /// Asks the loader thread to read and compile the file; a request made
    /// while it is busy is kept (one, the stronger trigger) for after it.
    /// A cluster daemon has no file: it says so.
    pub fn request(&mut self, trigger: Trigger) {
        if let Source::Cluster { .. } = self.source {
            log::warn!(
                "{trigger:?}: this daemon takes its config from a cluster (--cluster); \
                 there is no file to reload"
            );
            return;
        }
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
            running_sha256: self.running_sha256(),
        };
        if self.loader.requests.send(request).is_err() {
            return self.refuse("the config loader thread has stopped".to_owned());
        }
        self.loader.busy = true;
    }

    /// Applies what the loader finished, if it has, then starts a reload
    /// asked for meanwhile.
    pub fn apply_loaded(&mut self, steering: &Mutex<Steering>, resolver: &NeighborResolver) {
        for loaded in self.loader.take() {
            match loaded {
                Loaded::File { trigger, outcome } => match outcome {
                    Ok(Some(compiled)) => {
                        let mut steering = steering.lock().unwrap_or_else(PoisonError::into_inner);
                        let what = format!("{trigger:?}");
                        if let Err(message) = self.reload(&what, compiled, &mut steering, resolver)
                        {
                            self.refuse(message);
                        }
                    }
                    Ok(None) => log::debug!("{}: unchanged", self.status_name()),
                    Err(message) => self.refuse(message),
                },
                Loaded::Cluster {
                    request,
                    sha256,
                    outcome,
                } => self.apply_cluster(request, sha256, outcome, steering, resolver),
            }
        }
        if let Some(trigger) = self.loader.queued.take() {
            self.request(trigger);
        }
    }

    /// Applies a cluster update and answers it; an applied one is then
    /// cached.
    fn apply_cluster(
        &mut self,
        request: ClusterApply,
        sha256: [u8; 32],
        outcome: Result<Option<Compiled>, String>,
        steering: &Mutex<Steering>,
        resolver: &NeighborResolver,
    ) {
        let name = request.config.name();
        let result = match outcome {
            Err(message) => Err(message),
            // Applied or refused in between (an update whose answer came
            // too late to keep the next one waiting): compare again.
            Ok(_) if self.running_sha256() == Some(sha256) => Ok(ClusterApplyOutcome::Unchanged),
            Ok(None) => Err(format!(
                "{name}: the running config changed while this update waited; send it again"
            )),
            Ok(Some(compiled)) => {
                let mut steering = steering.lock().unwrap_or_else(PoisonError::into_inner);
                self.reload("cluster update", compiled, &mut steering, resolver)
                    .map(|_| ClusterApplyOutcome::Applied)
            }
        };
        let error = match &result {
            Ok(ClusterApplyOutcome::Unchanged) => {
                self.unchanged(&name);
                None
            }
            Ok(_) => None,
            Err(message) => {
                self.refuse(message.clone());
                Some(message.clone())
            }
        };
        let report = ClusterApplyReport {
            outcome: result.unwrap_or(ClusterApplyOutcome::Refused),
            generation: self.config.load().generation(),
            error,
            diagnostics: self.lock_status().diagnostics.clone(),
            statuses: self.running_statuses.clone(),
        };
        let applied = report.outcome == ClusterApplyOutcome::Applied;
        // The control thread may have given up waiting; the update stands.
        let _ = request.reply.send(report);
        if let (true, Source::Cluster { cache: Some(path) }) = (applied, &self.source) {
            if let Err(err) = cluster::write_cache(path, &request.config) {
                log::warn!("{:#}", anyhow::Error::from(err));
            }
        }
    }

    pub fn status(&self) -> Arc<Mutex<ConfigStatusReport>> {
        self.status.clone()
    }

    fn running_sha256(&self) -> Option<[u8; 32]> {
        *self
            .running_sha256
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn status_name(&self) -> String {
        self.lock_status().source.clone()
    }

    /// Programs and publishes `compiled`; returns the generation published,
    /// or why it was not.
    fn reload(
        &mut self,
        what: &str,
        compiled: Compiled,
        steering: &mut Steering,
        resolver: &NeighborResolver,
    ) -> Result<u64, String> {
        let running = self.config.load_full();
        if let Some(message) = serves_nothing(
            self.source.kind(),
            &compiled,
            running.listeners().len(),
            self.allow_no_listeners,
        ) {
            return Err(message);
        }
        program(steering, resolver, &running, &compiled.snapshot).map_err(|e| format!("{e:#}"))?;
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
                return Err(err.to_string());
            }
        };
        *self
            .running_sha256
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = compiled.sha256;
        self.running_statuses = compiled.statuses;
        for diagnostic in &compiled.diagnostics {
            log::warn!("config: {diagnostic}");
        }
        log::info!(
            "config {} applied ({what}): generation {generation}, {listeners} listeners",
            compiled.name
        );
        let now = unix_now();
        let mut status = self.lock_status();
        status.path = compiled.name.clone();
        status.source = compiled.name;
        status.generation = generation;
        status.file_generation = generation;
        status.applied_at_unix = now;
        status.sha256 = compiled.sha256.as_ref().map(|s| hex(s)).unwrap_or_default();
        status.listeners = listeners;
        status.diagnostics = compiled.diagnostics;
        status.reloads += 1;
        status.last_error = None;
        status.last_update = Some(ConfigUpdate {
            outcome: RELOAD_APPLIED.to_owned(),
            at_unix: now,
            generation,
            error: None,
        });
        Ok(generation)
    }

    /// A cluster update with the running objects: the sender is named
    /// (it may be another API server address than the one cached).
    fn unchanged(&self, name: &str) {
        log::debug!("{name}: unchanged");
        let generation = self.config.load().generation();
        let mut status = self.lock_status();
        status.path = name.to_owned();
        status.source = name.to_owned();
        status.unchanged_updates += 1;
        status.last_update = Some(ConfigUpdate {
            outcome: RELOAD_UNCHANGED.to_owned(),
            at_unix: unix_now(),
            generation,
            error: None,
        });
    }

    fn refuse(&self, message: String) {
        match self.source {
            Source::File(_) => {
                log::error!("config reload refused, the running config stays: {message}")
            }
            Source::Cluster { .. } => {
                log::error!("cluster update refused, the running config stays: {message}")
            }
        }
        let generation = self.config.load().generation();
        let now = unix_now();
        let mut status = self.lock_status();
        status.failed_reloads += 1;
        status.last_update = Some(ConfigUpdate {
            outcome: RELOAD_REFUSED.to_owned(),
            at_unix: now,
            generation,
            error: Some(message.clone()),
        });
        status.last_error = Some(ConfigError {
            at_unix: now,
            message,
        });
    }

    /// Records that the config the daemon started with could not be used
    /// (a cluster cache that no longer compiles): shown until an update
    /// applies.
    pub fn refused_at_start(&self, message: String) {
        self.refuse(message);
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
    use switchyard_proto::ClusterConfig;

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
        let why = serves_nothing(ConfigSource::File, &empty, 3, false).expect("refused");
        assert!(why.contains("no Gateway API"), "{why}");
        assert!(why.contains("--allow-no-listeners"), "{why}");
        assert!(
            serves_nothing(ConfigSource::File, &empty, 0, false).is_some(),
            "even when nothing runs"
        );
        assert!(serves_nothing(ConfigSource::File, &empty, 3, true).is_none());
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
        let why = serves_nothing(ConfigSource::File, &none, 3, false).expect("refused");
        assert!(why.contains("would remove every listener"), "{why}");
        assert!(
            serves_nothing(ConfigSource::File, &none, 0, false).is_none(),
            "nothing to remove"
        );
        assert!(serves_nothing(ConfigSource::File, &none, 3, true).is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_with_listeners_is_never_refused_for_it() {
        let demo = compiled(Path::new(DEMO));
        assert!(!demo.snapshot.listeners().is_empty());
        assert!(serves_nothing(ConfigSource::File, &demo, 3, false).is_none());
    }

    fn cluster(contents: &str) -> Result<Compiled> {
        let options = CompileOptions {
            resolve: Options::default(),
            node: NodeSetup::default(),
        };
        let config = ClusterConfig {
            source: "https://10.96.0.1:443".into(),
            contents: contents.into(),
        };
        let sha256 = Sha256::digest(config.contents.as_bytes()).into();
        compile_text(&config.name(), &config.contents, sha256, 2, &options)
    }

    #[test]
    fn a_cluster_without_switchyard_gateways_is_applied_but_one_without_any_object_is_not() {
        let none =
            cluster("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n").unwrap();
        assert!(
            serves_nothing(ConfigSource::Cluster, &none, 3, false).is_none(),
            "the last Gateway deleted is a state of the cluster"
        );
        let empty = cluster("").unwrap();
        let why = serves_nothing(ConfigSource::Cluster, &empty, 0, false).expect("refused");
        assert!(why.starts_with("cluster https://10.96.0.1:443: "), "{why}");
        assert!(why.contains("not even a Namespace"), "{why}");
        assert!(serves_nothing(ConfigSource::Cluster, &empty, 0, true).is_none());
    }

    #[test]
    fn a_cluster_error_names_the_cluster_and_the_line() {
        let demo = std::fs::read_to_string(DEMO).unwrap();
        let broken = demo.replacen("port: 80\n", "port: eighty\n", 1);
        let line = broken.lines().position(|l| l.contains("eighty")).unwrap();
        let err = format!("{:#}", cluster(&broken).err().expect("refused"));
        assert!(err.starts_with("cluster https://10.96.0.1:443:"), "{err}");
        // The error names the object's first line, at or before the field.
        let named: usize = err
            .trim_start_matches("cluster https://10.96.0.1:443:")
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line in {err}"));
        assert!(named >= 1 && named <= line + 1, "{err}");
    }

    #[test]
    fn a_cached_cluster_compiles_with_its_sha_and_its_errors_name_the_cache_lines() {
        let options = CompileOptions {
            resolve: Options::default(),
            node: NodeSetup::default(),
        };
        let path = std::env::temp_dir().join(format!("swy-reload-{}-cache", std::process::id()));
        let demo = std::fs::read_to_string(DEMO).unwrap();
        let config = ClusterConfig {
            source: "https://10.96.0.1:443".into(),
            contents: demo.clone(),
        };
        cluster::write_cache(&path, &config).unwrap();
        let cached = compile_cached(&path, 1, &options).unwrap().expect("cached");
        assert_eq!(cached.name(), "cluster https://10.96.0.1:443");
        assert_eq!(
            cached.sha256,
            Some(Sha256::digest(demo.as_bytes()).into()),
            "the sidecar's same objects are then unchanged"
        );

        let broken = ClusterConfig {
            contents: demo.replacen("value: 198.18.100.10", "value: not-an-address", 1),
            ..config
        };
        cluster::write_cache(&path, &broken).unwrap();
        let file_line = cluster::cache_text(&broken)
            .lines()
            .position(|l| l.contains("not-an-address"))
            .unwrap()
            + 1;
        let err = format!(
            "{:#}",
            compile_cached(&path, 1, &options).err().expect("refused")
        );
        std::fs::remove_file(&path).unwrap();
        let prefix = format!("{}:", path.display());
        let line: usize = err
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}LINE in {err}"));
        // The Gateway's document: its first line at most, in the file's lines.
        assert!(line <= file_line && line + 12 > file_line, "{err}");
    }

    #[test]
    fn a_compiled_cluster_carries_the_statuses_to_write_back() {
        let demo = cluster(&std::fs::read_to_string(DEMO).unwrap()).unwrap();
        let gateway = demo
            .statuses
            .iter()
            .find(|s| s["kind"] == "Gateway")
            .expect("the Gateway's status");
        assert_eq!(gateway["metadata"]["name"], "edge");
        let programmed = gateway["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Programmed")
            .expect("Programmed");
        assert_eq!(programmed["status"], "True");
        assert!(
            programmed.get("observedGeneration").is_some(),
            "{programmed}"
        );
    }

    /// `MAX_CLUSTER_CONFIG_BYTES` of objects in the shape the sidecar
    /// sends (JSON documents), mostly EndpointSlices as in a large cluster.
    fn cluster_of_size(bytes: usize) -> String {
        let mut text = std::fs::read_to_string(DEMO).unwrap();
        let mut n = 0u32;
        while text.len() < bytes {
            n += 1;
            let service = format!("svc-{n}");
            text.push_str(&format!(
                "---\n{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"{service}\",\"namespace\":\"demo\",\"generation\":1}},\"spec\":{{\"ports\":[{{\"name\":\"tcp\",\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080}}]}}}}\n"
            ));
            let endpoints: Vec<String> = (0..100u32)
                .map(|i| {
                    format!(
                        "{{\"addresses\":[\"10.{}.{}.{}\"],\"conditions\":{{\"ready\":true}}}}",
                        n % 250,
                        i / 250,
                        i % 250
                    )
                })
                .collect();
            text.push_str(&format!(
                "---\n{{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{{\"name\":\"{service}-1\",\"namespace\":\"demo\",\"labels\":{{\"kubernetes.io/service-name\":\"{service}\"}}}},\"addressType\":\"IPv4\",\"endpoints\":[{}],\"ports\":[{{\"name\":\"tcp\",\"protocol\":\"TCP\",\"port\":8080}}]}}\n",
                endpoints.join(",")
            ));
        }
        text
    }

    #[test]
    fn a_cluster_config_of_the_largest_size_compiles() {
        let text = cluster_of_size(switchyard_proto::MAX_CLUSTER_CONFIG_BYTES - (64 << 10));
        let started = std::time::Instant::now();
        let compiled = cluster(&text).unwrap();
        // Printed for the record (`--nocapture`); the deadline the daemon
        // answers within is far above it.
        println!(
            "compiled {} bytes of cluster objects in {:?}",
            text.len(),
            started.elapsed()
        );
        assert_eq!(compiled.snapshot.listeners().len(), 2);
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
