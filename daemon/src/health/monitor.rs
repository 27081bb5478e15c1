//! The prober: one task per target on a small runtime of its own (threads
//! named `switchyard-health`), off the packet path. Each target's first
//! probe falls at a random point of its first interval, so ten thousand
//! targets at one second are spread evenly over that second rather than
//! sent as one burst, and later ones follow every interval with ±5% jitter
//! so they stay spread. A semaphore caps probes in flight over all
//! targets; a probe that waited for a permit past its next slot is skipped
//! (and counted) rather than run late, so a saturated prober sheds probes
//! instead of drifting. Verdicts come from `state`; the daemon hears of a
//! change that matters through `on_change` and republishes.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use switchyard_config::snapshot::Probe;
use switchyard_dataplane::latency::Recorded;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{self, Verdict};
use super::state::{Change, TargetState};
use super::{Observation, Target};

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Probes in flight at once, over all targets.
    pub max_concurrent: usize,
    /// Threads running the probes.
    pub threads: usize,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            threads: 1,
        }
    }
}

/// The probe kinds, in the order `probe_stats` lists them.
const KINDS: [&str; 3] = ["TCP", "UDP", "HTTP"];
/// Probe latencies above this are recorded as this (a minute: far beyond
/// any sane timeout).
const MAX_TRACKED_NS: u64 = 60_000_000_000;

/// Probes of one kind so far, for the metrics.
#[derive(Debug, Clone)]
pub struct ProbeStats {
    /// `TCP`, `UDP` or `HTTP`.
    pub kind: &'static str,
    pub passed: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// Not run: the cap on probes in flight held them past their slot.
    pub skipped: u64,
    /// Latency of every probe run, in nanoseconds.
    pub latency_ns: Recorded,
}

#[derive(Debug)]
struct KindCounters {
    passed: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    skipped: AtomicU64,
    latency_ns: Mutex<Recorded>,
}

impl KindCounters {
    fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_NS, 2)
            .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits are valid"));
        Self {
            passed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            latency_ns: Mutex::new(Recorded {
                histogram,
                total: 0,
            }),
        }
    }

    fn record(&self, verdict: Verdict, latency: Duration) {
        // Relaxed: independent counters, read only for reporting.
        let counter = match verdict {
            Verdict::Pass => &self.passed,
            Verdict::Fail => &self.failed,
            Verdict::Timeout => &self.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let mut recorded = lock(&self.latency_ns);
        recorded.histogram.saturating_record(ns.max(1));
        recorded.total = recorded.total.saturating_add(ns);
    }

    fn stats(&self, kind: &'static str) -> ProbeStats {
        ProbeStats {
            kind,
            passed: self.passed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            latency_ns: lock(&self.latency_ns).clone(),
        }
    }
}

struct Shared {
    permits: Semaphore,
    max_concurrent: usize,
    on_change: Arc<dyn Fn() + Send + Sync>,
    counters: [KindCounters; 3],
    seeds: RandomState,
}

impl Shared {
    fn counters(&self, probe: &Probe) -> &KindCounters {
        let index = match probe {
            Probe::Tcp { .. } => 0,
            Probe::Udp { .. } => 1,
            Probe::Http { .. } => 2,
        };
        &self.counters[index]
    }
}

struct Running {
    state: Arc<Mutex<TargetState>>,
    task: JoinHandle<()>,
}

/// Runs the probes of a set of targets.
pub struct Monitor {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    running: Mutex<BTreeMap<Target, Running>>,
}

impl Monitor {
    /// Starts the probing threads. `on_change` runs (on a monitor thread,
    /// no lock held) each time a target's `Health::serving()` flips, so
    /// the daemon can republish.
    pub fn start(
        options: MonitorOptions,
        on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("switchyard-health")
            .enable_io()
            .enable_time()
            .build()?;
        let max_concurrent = options.max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Ok(Self {
            runtime: Some(runtime),
            shared: Arc::new(Shared {
                permits: Semaphore::new(max_concurrent),
                max_concurrent,
                on_change,
                counters: [
                    KindCounters::new(),
                    KindCounters::new(),
                    KindCounters::new(),
                ],
                seeds: RandomState::new(),
            }),
            running: Mutex::new(BTreeMap::new()),
        })
    }

    /// Probes exactly `targets` from now on: new ones start `Unknown`,
    /// kept ones keep their state and schedule, gone ones stop.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let wanted: BTreeSet<Target> = targets.into_iter().collect();
        let mut running = lock(&self.running);
        running.retain(|target, run| {
            let keep = wanted.contains(target);
            if !keep {
                run.task.abort();
            }
            keep
        });
        for target in wanted {
            if running.contains_key(&target) {
                continue;
            }
            let state = Arc::new(Mutex::new(TargetState::new()));
            let seed = self.shared.seeds.hash_one((&target, Instant::now()));
            let task = runtime.spawn(probe_loop(
                target.clone(),
                state.clone(),
                self.shared.clone(),
                seed,
            ));
            running.insert(target, Running { state, task });
        }
    }

    /// Every target's observation.
    pub fn observations(&self) -> BTreeMap<Target, Observation> {
        let now = std::time::Instant::now();
        lock(&self.running)
            .iter()
            .map(|(target, run)| {
                let observation = lock(&run.state).observation(&target.check, now);
                (target.clone(), observation)
            })
            .collect()
    }

    /// Probe counts and latencies per kind (`TCP`, `UDP`, `HTTP`), since
    /// the start.
    pub fn probe_stats(&self) -> Vec<ProbeStats> {
        KINDS
            .iter()
            .zip(&self.shared.counters)
            .map(|(kind, counters)| counters.stats(kind))
            .collect()
    }

    /// Probes running now.
    pub fn in_flight(&self) -> usize {
        self.shared
            .max_concurrent
            .saturating_sub(self.shared.permits.available_permits())
    }

    /// Targets being probed.
    pub fn targets_len(&self) -> usize {
        lock(&self.running).len()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Probes are idempotent and hold nothing worth finishing.
            runtime.shutdown_background();
        }
    }
}

/// One target's probes, forever (until aborted).
async fn probe_loop(
    target: Target,
    state: Arc<Mutex<TargetState>>,
    shared: Arc<Shared>,
    seed: u64,
) {
    let check = target.check.clone();
    let probed = target.probed();
    let to = SocketAddr::new(probed.address, probed.port);
    // A zero interval would spin; config never gives one.
    let interval = check.interval.max(Duration::from_millis(1));
    let counters = shared.counters(&check.probe);
    let mut random = SplitMix64(seed);
    let mut slot = Instant::now() + interval.mul_f64(random.unit());
    loop {
        tokio::time::sleep_until(slot).await;
        let Ok(permit) = shared.permits.acquire().await else {
            return;
        };
        let now = Instant::now();
        if now.saturating_duration_since(slot) > interval {
            drop(permit);
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            slot = now + jittered(interval, &mut random);
            continue;
        }
        // Boxed: a probe's buffers live only while it runs, instead of
        // in every target's task for as long as the target is probed.
        let (outcome, verdict) = Box::pin(probe::run(&check.probe, to, check.timeout)).await;
        drop(permit);
        counters.record(verdict, outcome.latency);
        let change = lock(&state).record(&check, outcome, std::time::Instant::now());
        if let Some(change) = change {
            report(&target, &change);
            if change.from.serving() != change.to.serving() {
                (shared.on_change)();
            }
        }
        slot += jittered(interval, &mut random);
    }
}

/// Logs a change of health, once, where it happens.
fn report(target: &Target, change: &Change) {
    let message = format!(
        "backend {} {} -> {} ({}): {}",
        target.endpoint,
        change.from.name(),
        change.to.name(),
        target.describe(),
        change.reason,
    );
    if change.to.serving() {
        log::info!("{message}");
    } else {
        log::warn!("{message}");
    }
}

/// `interval` ±5%: targets started together drift apart instead of
/// probing in lockstep forever.
fn jittered(interval: Duration, random: &mut SplitMix64) -> Duration {
    interval.mul_f64(0.95 + 0.1 * random.unit())
}

/// A tiny generator for jitter; statistical quality is all that is asked.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A poisoned lock still holds consistent data here (every critical
/// section is a plain update), so a panic elsewhere must not stop probing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
