//! What `yard-health` reads off the running daemon: its CPU time from
//! /proc (the process's, and each thread's by name), and the probe
//! figures of its Prometheus exposition.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

/// The daemon's probing threads are named `switchyard-health`; the
/// kernel keeps the first 15 bytes of a thread's name (TASK_COMM_LEN).
pub const HEALTH_THREAD: &str = "switchyard-health";

/// CPU time of one process, whole and by thread.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    /// utime + stime of /proc/PID/stat, in clock ticks: every thread's,
    /// the exited ones' included.
    pub process: u64,
    /// The stime part: the kernel's work in the process's context, which
    /// on a veth includes the receiving side's softirq processing of what
    /// the process sends.
    pub system: u64,
    /// Nanoseconds on a CPU of each live thread (the first field of its
    /// schedstat: precise where ticks are 10 ms), with its name.
    pub threads: BTreeMap<u32, (String, u64)>,
}

impl CpuSample {
    pub fn read(pid: u32) -> Result<CpuSample> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let (user, system) = parse_stat_ticks(&stat).with_context(|| format!("parsing {path}"))?;
        let mut threads = BTreeMap::new();
        let dir = format!("/proc/{pid}/task");
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let entry = entry?;
            let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // A thread may exit between the listing and the reads.
            let (Ok(name), Ok(t)) = (
                std::fs::read_to_string(entry.path().join("comm")),
                run_ns(&entry.path().join("schedstat").to_string_lossy()),
            ) else {
                continue;
            };
            threads.insert(tid, (name.trim().to_owned(), t));
        }
        Ok(CpuSample {
            process: user + system,
            system,
            threads,
        })
    }

    /// Milliseconds of CPU per second of wall time between `self` (earlier)
    /// and `later`, `seconds` apart: the process's, its system part, and
    /// by thread kind ([`thread_kind`]) over the threads alive at both
    /// reads.
    pub fn rates(&self, later: &CpuSample, seconds: f64) -> (f64, f64, BTreeMap<String, f64>) {
        let ms = |ticks: u64| ticks as f64 * 1000.0 / clock_ticks_per_second() / seconds;
        let mut kinds: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, after)) in &later.threads {
            let before = self.threads.get(tid).map_or(0, |(_, t)| *t);
            *kinds.entry(thread_kind(name)).or_default() +=
                after.saturating_sub(before) as f64 / 1e6 / seconds;
        }
        (
            ms(later.process.saturating_sub(self.process)),
            ms(later.system.saturating_sub(self.system)),
            kinds,
        )
    }
}

/// utime and stime (fields 14 and 15) of one /proc/PID/stat line. The
/// name field may hold spaces and parentheses, so fields are counted after
/// its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Result<(u64, u64)> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("no `)` after the name"))?;
    // After the name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("no field {n}"))?
            .parse()
            .with_context(|| format!("field {n}"))
    };
    Ok((field(14)?, field(15)?))
}

/// The time on a CPU of a /proc schedstat file, in nanoseconds.
fn run_ns(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("{path} is empty"))?
        .parse()
        .with_context(|| format!("parsing {path}"))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes a name and reads no memory of the caller's.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// A thread's name without its index (`worker-0` → `worker`), and the
/// probing threads under [`HEALTH_THREAD`] whatever the kernel cut off.
pub fn thread_kind(name: &str) -> String {
    let cut = &HEALTH_THREAD[..HEALTH_THREAD.len().min(15)];
    if name.starts_with(cut) {
        return HEALTH_THREAD.to_owned();
    }
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_owned()
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition (format 0.0.4); comments and lines
/// that do not parse are skipped.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` as a map.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_owned(), value);
    }
}

/// A histogram summed over its label sets: cumulative counts by upper
/// bound, in seconds as the exposition gives them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// `name`'s `_bucket`, `_count` and `_sum` samples, every label set
    /// added up; `None` when the exposition has no such histogram.
    pub fn from_samples(samples: &[Sample], name: &str) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let mut h = Histogram::default();
        let mut seen = false;
        for s in samples {
            if s.name == bucket {
                let bound = match s.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().ok()?,
                    None => continue,
                };
                // Bounds as ordered bits: non-negative floats sort as their bits do.
                by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += s.value;
                seen = true;
            } else if s.name == format!("{name}_count") {
                h.count += s.value;
                seen = true;
            } else if s.name == format!("{name}_sum") {
                h.sum += s.value;
            }
        }
        h.buckets = by_bound.into_values().collect();
        seen.then_some(h)
    }

    /// What was observed after `earlier` was taken.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |bound: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(b, c)| (*b, (c - before(*b)).max(0.0)))
                .collect(),
            count: (self.count - earlier.count).max(0.0),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; a quantile in the `+Inf`
    /// bucket is the highest finite bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|(_, c)| *c)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank && count > lower.1 {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let within = (rank - lower.1) / (count - lower.1);
                return Some(lower.0 + (bound - lower.0) * within);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }

    /// The upper bound of the highest bucket that gained an observation:
    /// the most the slowest probe can have taken.
    pub fn max_bound(&self) -> Option<f64> {
        let mut below = 0.0;
        let mut max = None;
        for &(bound, count) in &self.buckets {
            if count > below {
                max = Some(bound);
            }
            below = count;
        }
        max
    }
}

/// The sum of every sample named `name`, whatever its labels; `None` when
/// there is none.
pub fn total(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = None;
    for s in samples.iter().filter(|s| s.name == name) {
        *found.get_or_insert(0.0) += s.value;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_counted_after_the_last_parenthesis() {
        let line = "4242 (sw (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat_ticks(line).unwrap(), (17, 5));
    }

    #[test]
    fn thread_kinds_drop_indexes_and_gather_cut_health_names() {
        assert_eq!(thread_kind("worker-0"), "worker");
        assert_eq!(thread_kind("worker-12"), "worker");
        assert_eq!(thread_kind("switchyard-heal"), HEALTH_THREAD);
        assert_eq!(thread_kind("control"), "control");
    }

    #[test]
    fn histograms_add_label_sets_and_subtract_an_earlier_scrape() {
        let scrape = |fast: f64, slow: f64| {
            format!(
                "# TYPE switchyard_health_probe_duration_seconds histogram\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"tcp\",le=\"0.001\"}} {fast}\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"tcp\",le=\"0.01\"}} {}\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"tcp\",le=\"+Inf\"}} {}\n\
                 switchyard_health_probe_duration_seconds_count{{type=\"tcp\"}} {}\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"http\",le=\"0.001\"}} 0\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"http\",le=\"0.01\"}} 0\n\
                 switchyard_health_probe_duration_seconds_bucket{{type=\"http\",le=\"+Inf\"}} 0\n\
                 switchyard_health_probe_duration_seconds_count{{type=\"http\"}} 0\n",
                fast + slow,
                fast + slow,
                fast + slow
            )
        };
        let name = "switchyard_health_probe_duration_seconds";
        let h = |text: String| Histogram::from_samples(&parse_exposition(&text), name).unwrap();
        let window = h(scrape(100.0, 10.0)).since(&h(scrape(10.0, 0.0)));
        assert_eq!(window.count, 100.0);
        assert_eq!(window.buckets[0], (0.001, 90.0));
        let p50 = window.quantile(0.5).unwrap();
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-12, "{p50}");
        let p99 = window.quantile(0.99).unwrap();
        assert!(p99 > 0.001 && p99 <= 0.01, "{p99}");
        assert_eq!(window.max_bound(), Some(0.01));
        assert_eq!(
            Histogram::from_samples(&parse_exposition("x 1\n"), name),
            None
        );
    }

    #[test]
    fn label_values_may_hold_escaped_quotes_and_commas() {
        let samples = parse_exposition("m{a=\"x\\\"y,z\",b=\"2\"} 3.5\nplain 7\n");
        assert_eq!(samples[0].labels["a"], "x\"y,z");
        assert_eq!(samples[0].value, 3.5);
        assert_eq!(total(&samples, "plain"), Some(7.0));
        assert_eq!(total(&samples, "absent"), None);
    }
}
