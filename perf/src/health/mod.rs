//! `yard-health`: what active health checks cost the daemon. For each
//! endpoint count, the real `switchyard run` serves one listener whose
//! Service has that many endpoints, first idle (no health check), then
//! probing every endpoint over TCP; each run's CPU is read over the same
//! window after a warm-up, and the probing run's is reported as a ratio
//! to the idle one of the same size, measured minutes apart at most in
//! the same run. Probe latency and rate come from the daemon's own
//! metrics where it exports them, and are checked against what the
//! endpoints saw (connections accepted) and what `yardctl backends` says
//! of each endpoint's last probe. Nothing is asserted: figures are
//! printed and written to perf/results/health.json.

pub mod config;
pub mod lab;
pub mod sampling;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard_vm_tests::{in_netns, Daemon, DaemonOptions, TempDir};

use crate::report::Machine;
use config::{config_yaml, endpoints, ActiveCheck};
use lab::{EndpointServer, Lab, LB_INTERFACE};
use sampling::{parse_exposition, total, CpuSample, Histogram, Sample, HEALTH_THREAD};

/// Where the daemon serves its metrics, on the LB namespace's own
/// loopback.
pub const METRICS_ADDR: &str = "127.0.0.1:9464";
/// The probe latency histogram of the daemon's exposition.
pub const PROBE_DURATION: &str = "switchyard_health_probe_duration_seconds";
/// Probe counters, if the daemon exports them beside the histogram.
pub const PROBES_TOTAL: &str = "switchyard_health_probes_total";
/// A daemon with 10,000 endpoints compiles its config in well under a
/// minute even on a busy shared machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two `yardctl backends` reads while warming up: each one
/// lists every endpoint.
const WARMUP_POLL: Duration = Duration::from_millis(250);
/// Beyond the probe intervals, how long the first probes of every
/// endpoint may take to show (a loaded machine, a slow `yardctl`).
const PROBED_SLACK: Duration = Duration::from_secs(20);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Endpoint counts, measured in this order.
    pub sizes: Vec<usize>,
    /// Seconds each CPU figure is measured over.
    pub seconds: f64,
    /// Seconds between the warm-up's end and the window's start.
    pub settle: f64,
    pub check: ActiveCheck,
    /// Measure the probing runs (the idle ones are always measured).
    pub probing: bool,
    /// `--cores` of `switchyard run`.
    pub cores: Option<String>,
    /// More `switchyard run` arguments, e.g. the prober's own options.
    pub daemon_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sizes: vec![1000, 10_000],
            seconds: 10.0,
            settle: 1.0,
            check: ActiveCheck::default(),
            probing: true,
            cores: None,
            daemon_args: Vec::new(),
        }
    }
}

/// Probe latency, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    /// From the histogram: the upper bound of the slowest probe's bucket.
    pub max: f64,
}

/// One daemon, measured over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    /// Seconds from `switchyard run`'s start to the window's: until every
    /// endpoint is listed (and, probing, probed once), then the settle.
    pub warmup_secs: f64,
    pub seconds: f64,
    /// The daemon process's CPU (user + system) per second.
    pub cpu_ms_per_s: f64,
    /// Its system part. On these veths it includes the backends' side of
    /// each handshake, which the kernel runs in the sender's context: a
    /// real network would take that to the backends' own machines.
    #[serde(default)]
    pub system_ms_per_s: f64,
    /// The same by thread kind (`worker`, `control`, `switchyard-health`,
    /// ...), over the threads alive through the window.
    pub threads_ms_per_s: BTreeMap<String, f64>,
    /// Connections the endpoints accepted per second: one per TCP probe.
    pub accepted_per_s: f64,
    /// Probes per second as the daemon counts them (its latency
    /// histogram's count, else its probe counters); `None` when it
    /// exports neither.
    pub probes_per_s: Option<f64>,
    /// Probes per second by result (`pass`, `fail`, `timeout`, `skipped`:
    /// held past its slot by the cap on probes in flight), from the
    /// daemon's counters.
    #[serde(default)]
    pub results_per_s: BTreeMap<String, f64>,
    /// Over the window, from the daemon's histogram.
    pub latency_ms: Option<Latency>,
    /// Each endpoint's last probe, from `yardctl backends` after the
    /// window (`max` is exact here).
    pub last_probe_latency_ms: Option<Latency>,
    /// Endpoints by health after the window (`unchecked`: no health shown).
    pub health: BTreeMap<String, usize>,
    /// Why the daemon's metrics could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
}

impl Window {
    /// The probe rate this window is best described by: the daemon's
    /// count, else the connections the endpoints accepted.
    pub fn probe_rate(&self) -> f64 {
        self.probes_per_s.unwrap_or(self.accepted_per_s)
    }

    /// The latency figures to show: the histogram's, else the last probes'.
    pub fn latency(&self) -> Option<&Latency> {
        self.latency_ms
            .as_ref()
            .or(self.last_probe_latency_ms.as_ref())
    }

    pub fn health_thread_ms_per_s(&self) -> Option<f64> {
        self.threads_ms_per_s.get(HEALTH_THREAD).copied()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeResult {
    pub endpoints: usize,
    pub idle: Window,
    pub probing: Option<Window>,
}

impl SizeResult {
    /// Probing CPU over idle CPU.
    pub fn cpu_ratio(&self) -> Option<f64> {
        let probing = self.probing.as_ref()?;
        Some(probing.cpu_ms_per_s / self.idle.cpu_ms_per_s.max(1e-9))
    }

    /// CPU the probes add, per probe, in microseconds.
    pub fn cpu_us_per_probe(&self) -> Option<f64> {
        let probing = self.probing.as_ref()?;
        let rate = probing.probe_rate();
        (rate > 0.0).then(|| (probing.cpu_ms_per_s - self.idle.cpu_ms_per_s) * 1000.0 / rate)
    }
}

/// perf/results/health.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    pub command: String,
    pub unix_time: u64,
    pub duration_secs: f64,
    pub machine: Machine,
    pub options: Options,
    pub sizes: Vec<SizeResult>,
}

/// Every measurement; `progress` gets a line per step.
pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Vec<SizeResult>> {
    let largest = options.sizes.iter().copied().max().unwrap_or(0);
    let all = endpoints(largest);
    let lab = Lab::build().context("building the benchmark namespaces")?;
    let mut server = EndpointServer::start(&lab.backends, &all)?;
    progress(&format!(
        "{} endpoints listening in {}",
        server.listening(),
        lab.backends.name()
    ));
    let dir = TempDir::new("health")?;
    let mut results = Vec::new();
    for &n in &options.sizes {
        let chosen = endpoints(n);
        let idle = measure(&lab, &mut server, &dir, &chosen, None, options)?;
        progress(&describe(n, "idle", &idle));
        let probing = if options.probing {
            let window = measure(
                &lab,
                &mut server,
                &dir,
                &chosen,
                Some(&options.check),
                options,
            )?;
            progress(&describe(n, "probing", &window));
            Some(window)
        } else {
            None
        };
        results.push(SizeResult {
            endpoints: chosen.len(),
            idle,
            probing,
        });
    }
    Ok(results)
}

fn describe(n: usize, mode: &str, w: &Window) -> String {
    let threads: Vec<String> = w
        .threads_ms_per_s
        .iter()
        .filter(|(_, ms)| **ms >= 0.05)
        .map(|(kind, ms)| format!("{kind} {ms:.1}"))
        .collect();
    let mut line = format!(
        "{n:>6} endpoints, {mode:<7}: {:.1} ms/s CPU ({:.1} system) [{}], warm-up {:.1} s, {:.0} connections/s accepted, health {:?}",
        w.cpu_ms_per_s,
        w.system_ms_per_s,
        threads.join(", "),
        w.warmup_secs,
        w.accepted_per_s,
        w.health
    );
    if w.results_per_s.values().any(|rate| *rate > 0.0) {
        let results: Vec<String> = w
            .results_per_s
            .iter()
            .map(|(result, rate)| format!("{result} {rate:.0}"))
            .collect();
        line.push_str(&format!("; probes/s by result: {}", results.join(", ")));
    }
    if let Some(e) = &w.metrics_error {
        line.push_str(&format!("; no metrics: {e}"));
    }
    line
}

/// Starts the daemon on `chosen` (probing them with `check`), waits out
/// the warm-up and measures one window.
fn measure(
    lab: &Lab,
    server: &mut EndpointServer,
    dir: &TempDir,
    chosen: &[std::net::SocketAddrV4],
    check: Option<&ActiveCheck>,
    options: &Options,
) -> Result<Window> {
    let mode = if check.is_some() { "probing" } else { "idle" };
    let file = dir.write(
        &format!("health-{}-{mode}.yaml", chosen.len()),
        &config_yaml(chosen, check),
    )?;
    let mut opts = DaemonOptions::new(&[LB_INTERFACE])
        .queues(1)
        .arg("--metrics-listen")
        .arg(METRICS_ADDR);
    for arg in &options.daemon_args {
        opts = opts.arg(arg.clone());
    }
    opts.cores = options.cores.clone();
    opts.ready_timeout = START_TIMEOUT;
    opts.log_on_drop = false;
    let started = Instant::now();
    let mut daemon = Daemon::start(&lab.lb, &file, &opts)
        .with_context(|| format!("starting switchyard on {} endpoints ({mode})", chosen.len()))?;
    let interval = match check {
        Some(check) => Some(Duration::from_secs_f64(duration_secs(&check.interval)?)),
        None => None,
    };
    warm_up(&daemon, chosen.len(), interval, START_TIMEOUT)
        .with_context(|| format!("warming up on {} endpoints ({mode})", chosen.len()))?;
    std::thread::sleep(Duration::from_secs_f64(options.settle));
    let warmup_secs = started.elapsed().as_secs_f64();

    // The scrapes and `yardctl backends` cost the daemon CPU too: they are
    // taken outside the window.
    let metrics_before = scrape(lab);
    let scraped_at = Instant::now();
    let t0 = Instant::now();
    let cpu0 = CpuSample::read(daemon.pid())?;
    let accepted0 = server.accepted();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    let accepted1 = server.accepted();
    let cpu1 = CpuSample::read(daemon.pid())?;
    let seconds = t0.elapsed().as_secs_f64();
    let metrics_after = scrape(lab);
    let scrape_secs = scraped_at.elapsed().as_secs_f64();
    let rows = backend_rows(&daemon)?;
    server.check()?;
    daemon
        .stop()
        .with_context(|| format!("stopping switchyard ({mode})"))?;

    let (cpu_ms_per_s, system_ms_per_s, threads_ms_per_s) = cpu0.rates(&cpu1, seconds);
    let mut window = Window {
        warmup_secs,
        seconds,
        cpu_ms_per_s,
        system_ms_per_s,
        threads_ms_per_s,
        accepted_per_s: accepted1.saturating_sub(accepted0) as f64 / seconds,
        health: BTreeMap::new(),
        ..Window::default()
    };
    match (metrics_before, metrics_after) {
        (Ok(before), Ok(after)) => {
            let (probes, latency) = probe_figures(&before, &after);
            window.probes_per_s = probes.map(|p| p / scrape_secs);
            window.latency_ms = latency;
            window.results_per_s = by_result(&before, &after)
                .into_iter()
                .map(|(result, n)| (result, n / scrape_secs))
                .collect();
        }
        (Err(e), _) | (_, Err(e)) => window.metrics_error = Some(format!("{e:#}")),
    }
    let mut last: Vec<f64> = Vec::new();
    for row in &rows {
        *window.health.entry(row.health.clone()).or_default() += 1;
        last.extend(row.probe_latency_ms);
    }
    window.last_probe_latency_ms = exact_latency(&mut last);
    Ok(window)
}

/// Probes counted between two scrapes, and their latency.
fn probe_figures(before: &[Sample], after: &[Sample]) -> (Option<f64>, Option<Latency>) {
    let histogram = match (
        Histogram::from_samples(before, PROBE_DURATION),
        Histogram::from_samples(after, PROBE_DURATION),
    ) {
        (Some(b), Some(a)) => Some(a.since(&b)),
        (None, Some(a)) => Some(a),
        _ => None,
    };
    let counted = match (total(before, PROBES_TOTAL), total(after, PROBES_TOTAL)) {
        (Some(b), Some(a)) => Some((a - b).max(0.0)),
        (None, Some(a)) => Some(a),
        _ => None,
    };
    let probes = histogram.as_ref().map(|h| h.count).or(counted);
    let latency = histogram.and_then(|h| {
        Some(Latency {
            p50: h.quantile(0.5)? * 1e3,
            p99: h.quantile(0.99)? * 1e3,
            max: h.max_bound()? * 1e3,
        })
    });
    (probes, latency)
}

/// Probes counted between two scrapes, by their `result` label.
fn by_result(before: &[Sample], after: &[Sample]) -> BTreeMap<String, f64> {
    let count = |samples: &[Sample]| {
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == PROBES_TOTAL) {
            let result = s.labels.get("result").cloned().unwrap_or_default();
            *by.entry(result).or_default() += s.value;
        }
        by
    };
    let earlier = count(before);
    count(after)
        .into_iter()
        .map(|(result, n)| {
            let was = earlier.get(&result).copied().unwrap_or(0.0);
            (result, (n - was).max(0.0))
        })
        .collect()
}

fn exact_latency(values: &mut [f64]) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Some(Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: values[values.len() - 1],
    })
}

/// One row of `yardctl backends -o json`, as far as this benchmark reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRow {
    /// `unknown`, `healthy`, `unhealthy`, `flapping`, or `unchecked` when
    /// the row carries no health.
    pub health: String,
    /// The last probe's latency; `None` before the first.
    pub probe_latency_ms: Option<f64>,
}

/// The rows of a `yardctl backends -o json` answer.
pub fn parse_backend_rows(report: &serde_json::Value) -> Result<Vec<BackendRow>> {
    let rows = report["backends"]
        .as_array()
        .context("`yardctl backends -o json` has no `backends` list")?;
    Ok(rows
        .iter()
        .map(|row| BackendRow {
            health: row["health"].as_str().unwrap_or("unchecked").to_owned(),
            probe_latency_ms: row["probe_latency_ms"].as_f64(),
        })
        .collect())
}

fn backend_rows(daemon: &Daemon) -> Result<Vec<BackendRow>> {
    let report: serde_json::Value = daemon.yardctl_as(&["backends"])?;
    parse_backend_rows(&report)
}

/// Polls `yardctl backends` until every endpoint is listed (within
/// `listed_within`) and, with `probe_interval`, has been probed once:
/// within three intervals and [`PROBED_SLACK`] of being listed, or two
/// intervals and the slack if no endpoint shows a health at all.
fn warm_up(
    daemon: &Daemon,
    endpoints: usize,
    probe_interval: Option<Duration>,
    listed_within: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut listed_at: Option<Instant> = None;
    loop {
        let rows = backend_rows(daemon)?;
        let checked = rows.iter().filter(|r| r.health != "unchecked").count();
        let probed = rows.iter().filter(|r| r.probe_latency_ms.is_some()).count();
        let seen = || {
            format!(
                "{} of {endpoints} endpoints listed, {checked} with a health, {probed} probed",
                rows.len()
            )
        };
        if rows.len() >= endpoints {
            let Some(interval) = probe_interval else {
                return Ok(());
            };
            if probed >= endpoints {
                return Ok(());
            }
            let since = listed_at.get_or_insert_with(Instant::now).elapsed();
            if checked == 0 && since > interval * 2 + PROBED_SLACK {
                bail!(
                    "{:.0?} after listing them, {}: this daemon shows no health for its backends (does it probe?)",
                    since,
                    seen()
                );
            }
            if since > interval * 3 + PROBED_SLACK {
                bail!("{:.0?} after listing them, {}", since, seen());
            }
        } else if started.elapsed() > listed_within {
            bail!("after {listed_within:?}, {}", seen());
        }
        std::thread::sleep(WARMUP_POLL);
    }
}

/// `GET /metrics` from the daemon, from inside its namespace.
fn scrape(lab: &Lab) -> Result<Vec<Sample>> {
    let addr: SocketAddr = METRICS_ADDR.parse()?;
    let text = in_netns(&lab.lb, || -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
        stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: switchyard\r\n\r\n")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    })??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a metrics answer without a header end")?;
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        bail!(
            "GET /metrics answered {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(parse_exposition(body))
}

/// Seconds of a Gateway API Duration (GEP-2257: `1h`, `1m30s`, `500ms`).
pub fn duration_secs(text: &str) -> Result<f64> {
    let mut secs = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        bail!("an empty duration");
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            bail!("duration {text:?}: expected a number at {rest:?}");
        }
        let value: f64 = rest[..digits].parse()?;
        rest = &rest[digits..];
        let (unit, scale) = if rest.starts_with("ms") {
            ("ms", 1e-3)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else {
            bail!("duration {text:?}: expected h, m, s or ms at {rest:?}");
        };
        secs += value * scale;
        rest = &rest[unit.len()..];
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations_add_their_parts() {
        assert_eq!(duration_secs("1s").unwrap(), 1.0);
        assert_eq!(duration_secs("500ms").unwrap(), 0.5);
        assert_eq!(duration_secs("1m30s").unwrap(), 90.0);
        assert!(duration_secs("").is_err());
        assert!(duration_secs("5").is_err());
        assert!(duration_secs("1d").is_err());
    }

    #[test]
    fn backend_rows_without_health_are_unchecked() {
        let report = serde_json::json!({"generation": 1, "backends": [
            {"backend": "198.18.2.10:20000", "health": "healthy", "probe_latency_ms": 0.25},
            {"backend": "198.18.2.11:20000", "health": "unknown", "probe_latency_ms": null},
            {"backend": "198.18.2.12:20000"},
        ]});
        let rows = parse_backend_rows(&report).unwrap();
        assert_eq!(rows[0].health, "healthy");
        assert_eq!(rows[0].probe_latency_ms, Some(0.25));
        assert_eq!(rows[1].probe_latency_ms, None);
        assert_eq!(rows[2].health, "unchecked");
    }

    #[test]
    fn exact_latency_takes_ranks_of_the_sorted_values() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = exact_latency(&mut values).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (51.0, 99.0, 100.0));
        assert_eq!(exact_latency(&mut []), None);
    }
}
