//! Rates over an interval, from two samples of the daemon's counters: the
//! one computation behind `yardctl stats --interval`/`--watch` and
//! `yardctl top`. The daemon only keeps totals (they survive config
//! reloads), so rates are the difference of two totals over the time
//! between the samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::tables::{right_align, table};
use switchyard_proto::client::{self, ClientError};
use switchyard_proto::{Counters, Request, Response, StatsReport};

/// Per-second change of a counter set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    /// New flows per second.
    pub flows_per_sec: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenerRate {
    pub listener: String,
    #[serde(default)]
    pub protocol: String,
    pub vip: String,
    #[serde(flatten)]
    pub rate: Rate,
    /// The listener's own drops per second, by reason (zero rates left out).
    #[serde(default)]
    pub drops_per_sec: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendRate {
    pub listener: String,
    pub backend: String,
    #[serde(flatten)]
    pub rate: Rate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerRate {
    pub queue: u32,
    pub rx_packets_per_sec: f64,
    pub rx_bytes_per_sec: f64,
    pub tx_packets_per_sec: f64,
    pub tx_bytes_per_sec: f64,
    pub flows_per_sec: f64,
    pub drops_per_sec: f64,
    /// `drops_per_sec` by reason (zero rates left out).
    #[serde(default)]
    pub drop_reasons_per_sec: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub listeners: Vec<ListenerRate>,
    pub backends: Vec<BackendRate>,
    pub workers: Vec<WorkerRate>,
    /// All workers' drops per second, by reason (zero rates left out).
    #[serde(default)]
    pub drops_per_sec: BTreeMap<String, f64>,
}

/// `yardctl stats -o json` with an interval: the later sample's totals,
/// as plain `stats` prints them, plus the rates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsWithRates {
    #[serde(flatten)]
    pub stats: StatsReport,
    pub interval_secs: f64,
    pub rates: Rates,
}

/// How much a counter grew. One that went down restarted from zero (a
/// listener removed and added again between the samples, or a restarted
/// daemon), so all of its value is new, as Prometheus treats a reset.
fn delta(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

fn per_sec(before: u64, after: u64, secs: f64) -> f64 {
    delta(before, after) as f64 / secs
}

fn rate(before: Option<&Counters>, after: &Counters, secs: f64) -> Rate {
    let zero = Counters::default();
    let before = before.unwrap_or(&zero);
    Rate {
        packets_per_sec: per_sec(before.packets, after.packets, secs),
        bytes_per_sec: per_sec(before.bytes, after.bytes, secs),
        flows_per_sec: per_sec(before.flows, after.flows, secs),
    }
}

/// Per-reason rates of two by-reason totals; reasons without drops over
/// the interval are left out.
fn reason_rates(
    before: Option<&BTreeMap<String, u64>>,
    after: &BTreeMap<String, u64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(reason, &count)| {
            let was = before.and_then(|b| b.get(reason)).copied().unwrap_or(0);
            (reason.clone(), per_sec(was, count, secs))
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect()
}

/// Rates between two samples taken `secs` apart (no time passed gives
/// zero rates, not infinities). Rows are those of `after`, in its order,
/// matched to `before` by listener, protocol and VIP, by backend, or by
/// queue; a row new in `after` counts from zero.
pub fn rates(before: &StatsReport, after: &StatsReport, secs: f64) -> Rates {
    let secs = if secs > 0.0 { secs } else { f64::INFINITY };
    let listeners: BTreeMap<(&str, &str, &str), _> = before
        .listeners
        .iter()
        .map(|l| {
            (
                (l.listener.as_str(), l.protocol.as_str(), l.vip.as_str()),
                l,
            )
        })
        .collect();
    let backends: BTreeMap<(&str, &str), &Counters> = before
        .backends
        .iter()
        .map(|b| ((b.listener.as_str(), b.backend.as_str()), &b.counters))
        .collect();
    let workers: BTreeMap<u32, _> = before.workers.iter().map(|w| (w.queue, w)).collect();
    let worker_rates: Vec<WorkerRate> = after
        .workers
        .iter()
        .map(|w| {
            let old = workers.get(&w.queue);
            let was = |f: fn(&switchyard_proto::WorkerStats) -> u64| old.map_or(0, |o| f(o));
            let drop_reasons_per_sec = reason_rates(old.map(|o| &o.drops), &w.drops, secs);
            WorkerRate {
                queue: w.queue,
                rx_packets_per_sec: per_sec(was(|s| s.rx_packets), w.rx_packets, secs),
                rx_bytes_per_sec: per_sec(was(|s| s.rx_bytes), w.rx_bytes, secs),
                tx_packets_per_sec: per_sec(was(|s| s.tx_packets), w.tx_packets, secs),
                tx_bytes_per_sec: per_sec(was(|s| s.tx_bytes), w.tx_bytes, secs),
                flows_per_sec: per_sec(was(|s| s.flows), w.flows, secs),
                // A fold from +0.0: an empty f64 sum is -0.0, shown as "-0".
                drops_per_sec: drop_reasons_per_sec.values().fold(0.0, |a, b| a + b),
                drop_reasons_per_sec,
            }
        })
        .collect();
    let mut drops_per_sec: BTreeMap<String, f64> = BTreeMap::new();
    for w in &worker_rates {
        for (reason, rate) in &w.drop_reasons_per_sec {
            *drops_per_sec.entry(reason.clone()).or_default() += rate;
        }
    }
    Rates {
        listeners: after
            .listeners
            .iter()
            .map(|l| {
                let old = listeners
                    .get(&(l.listener.as_str(), l.protocol.as_str(), l.vip.as_str()))
                    .copied();
                ListenerRate {
                    listener: l.listener.clone(),
                    protocol: l.protocol.clone(),
                    vip: l.vip.clone(),
                    rate: rate(old.map(|o| &o.counters), &l.counters, secs),
                    drops_per_sec: reason_rates(old.map(|o| &o.drops), &l.drops, secs),
                }
            })
            .collect(),
        backends: after
            .backends
            .iter()
            .map(|b| BackendRate {
                listener: b.listener.clone(),
                backend: b.backend.clone(),
                rate: rate(
                    backends
                        .get(&(b.listener.as_str(), b.backend.as_str()))
                        .copied(),
                    &b.counters,
                    secs,
                ),
            })
            .collect(),
        workers: worker_rates,
        drops_per_sec,
    }
}

fn sample(socket: &Path) -> Result<(StatsReport, Instant), ClientError> {
    match client::request(socket, &Request::Stats)? {
        Response::Stats(stats) => Ok((stats, Instant::now())),
        _ => Err(ClientError::Refused(
            "the daemon answered a stats request with something else".to_owned(),
        )),
    }
}

/// Two samples `interval` apart: the later totals and the rates between.
pub fn measure(socket: &Path, interval: Duration) -> Result<StatsWithRates, ClientError> {
    let (before, at) = sample(socket)?;
    std::thread::sleep(interval);
    let (after, now) = sample(socket)?;
    let secs = now.duration_since(at).as_secs_f64();
    Ok(StatsWithRates {
        rates: rates(&before, &after, secs),
        stats: after,
        interval_secs: secs,
    })
}

/// `--watch`: every `interval`, the totals and the rates over the interval
/// just past; the screen is cleared and redrawn, or with `json` one JSON
/// object per line is appended. Runs until interrupted or the daemon goes
/// away.
pub fn watch(socket: &Path, interval: Duration, json: bool) -> anyhow::Result<()> {
    let (mut before, mut at) = sample(socket)?;
    loop {
        std::thread::sleep(interval);
        let (after, now) = sample(socket)?;
        let secs = now.duration_since(at).as_secs_f64();
        let rates = rates(&before, &after, secs);
        let text = if json {
            let mut line = serde_json::to_string(&StatsWithRates {
                stats: after.clone(),
                interval_secs: secs,
                rates,
            })?;
            line.push('\n');
            line
        } else {
            // Home and clear in one write, then the frame: no blank flash.
            format!("\x1b[H\x1b[2J{}", render(&after, &rates, secs))
        };
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        (before, at) = (after, now);
    }
}

/// `1234567.0` as `1.23M`: rates are read at a glance.
pub fn human(value: f64) -> String {
    let (scaled, unit) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    if unit.is_empty() {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}{unit}")
    }
}

// Totals as in `stats`, then rates; names as in the JSON (`X/S` is
// `x_per_sec`).
const LISTENER_COLUMNS: [&str; 9] = [
    "LISTENER",
    "PROTOCOL",
    "VIP",
    "FLOWS",
    "PACKETS",
    "BYTES",
    "FLOWS/S",
    "PACKETS/S",
    "BYTES/S",
];
const BACKEND_COLUMNS: [&str; 9] = [
    "LISTENER",
    "BACKEND",
    "SERVICE",
    "FLOWS",
    "PACKETS",
    "BYTES",
    "FLOWS/S",
    "PACKETS/S",
    "BYTES/S",
];
const WORKER_COLUMNS: [&str; 9] = [
    "QUEUE",
    "RX PACKETS",
    "TX PACKETS",
    "DROPS",
    "RX PACKETS/S",
    "RX BYTES/S",
    "TX PACKETS/S",
    "FLOWS/S",
    "DROPS/S",
];

/// Totals and rates, one table each for listeners, backends and workers,
/// then drops by reason.
pub fn render(stats: &StatsReport, rates: &Rates, interval_secs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rates over the last {interval_secs:.1}s\n");
    let mut listeners = table(&LISTENER_COLUMNS);
    for (l, r) in stats.listeners.iter().zip(&rates.listeners) {
        listeners.add_row(vec![
            l.listener.clone(),
            l.protocol.clone(),
            l.vip.clone(),
            l.counters.flows.to_string(),
            l.counters.packets.to_string(),
            l.counters.bytes.to_string(),
            human(r.rate.flows_per_sec),
            human(r.rate.packets_per_sec),
            human(r.rate.bytes_per_sec),
        ]);
    }
    right_align(&mut listeners, 3);
    let _ = writeln!(out, "{listeners}");
    let mut backends = table(&BACKEND_COLUMNS);
    for (b, r) in stats.backends.iter().zip(&rates.backends) {
        backends.add_row(vec![
            b.listener.clone(),
            b.backend.clone(),
            b.service.clone(),
            b.counters.flows.to_string(),
            b.counters.packets.to_string(),
            b.counters.bytes.to_string(),
            human(r.rate.flows_per_sec),
            human(r.rate.packets_per_sec),
            human(r.rate.bytes_per_sec),
        ]);
    }
    right_align(&mut backends, 3);
    let _ = writeln!(out, "\n{backends}");
    let mut workers = table(&WORKER_COLUMNS);
    for (w, r) in stats.workers.iter().zip(&rates.workers) {
        workers.add_row(vec![
            w.queue.to_string(),
            w.rx_packets.to_string(),
            w.tx_packets.to_string(),
            w.drops.values().sum::<u64>().to_string(),
            human(r.rx_packets_per_sec),
            human(r.rx_bytes_per_sec),
            human(r.tx_packets_per_sec),
            human(r.flows_per_sec),
            human(r.drops_per_sec),
        ]);
    }
    right_align(&mut workers, 1);
    let _ = writeln!(out, "\n{workers}");
    let mut drops = table(&["WHERE", "DROP REASON", "PACKETS", "DROPS/S"]);
    let mut any = false;
    for (w, r) in stats.workers.iter().zip(&rates.workers) {
        for (reason, count) in &w.drops {
            any = true;
            drops.add_row(vec![
                format!("queue {}", w.queue),
                reason.clone(),
                count.to_string(),
                human(r.drop_reasons_per_sec.get(reason).copied().unwrap_or(0.0)),
            ]);
        }
    }
    for (l, r) in stats.listeners.iter().zip(&rates.listeners) {
        for (reason, count) in &l.drops {
            drops.add_row(vec![
                l.listener.clone(),
                reason.clone(),
                count.to_string(),
                human(r.drops_per_sec.get(reason).copied().unwrap_or(0.0)),
            ]);
        }
    }
    if any {
        right_align(&mut drops, 2);
        let _ = writeln!(out, "\n{drops}");
    } else {
        let _ = writeln!(out, "\nno drops");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_json_fields() {
        use crate::tables::assert_columns_are_fields as check;
        // The table shows a sample's totals next to its rates.
        fn both(total: &impl Serialize, rate: &impl Serialize) -> serde_json::Value {
            let mut value = serde_json::to_value(total).unwrap();
            let rate = serde_json::to_value(rate).unwrap();
            if let (Some(into), serde_json::Value::Object(from)) = (value.as_object_mut(), rate) {
                into.extend(from);
            }
            value
        }
        let listener = both(&ListenerStats::default(), &ListenerRate::default());
        check(&LISTENER_COLUMNS, &listener, &[]);
        let backend = both(&BackendStats::default(), &BackendRate::default());
        check(&BACKEND_COLUMNS, &backend, &[]);
        let worker = both(&WorkerStats::default(), &WorkerRate::default());
        check(&WORKER_COLUMNS, &worker, &[]);
    }
    use switchyard_proto::{BackendStats, ListenerStats, WorkerStats};

    fn sample(packets: u64, flows: u64, rx: u64) -> StatsReport {
        let counters = Counters {
            packets,
            bytes: packets * 100,
            flows,
        };
        StatsReport {
            listeners: vec![ListenerStats {
                listener: "demo/edge/web".into(),
                protocol: "TCP".into(),
                vip: "198.18.100.10:80".into(),
                counters: counters.clone(),
                drops: BTreeMap::new(),
                ..ListenerStats::default()
            }],
            backends: vec![BackendStats {
                listener: "demo/edge/web".into(),
                backend: "198.18.2.21:8080".into(),
                service: "demo/echo".into(),
                counters,
                ..BackendStats::default()
            }],
            workers: vec![WorkerStats {
                queue: 0,
                rx_packets: rx,
                flows,
                drops: [("no_route".to_owned(), rx / 10)].into(),
                ..WorkerStats::default()
            }],
            drops: BTreeMap::new(),
            xdp_steering: BTreeMap::new(),
        }
    }

    #[test]
    fn rates_are_the_difference_over_the_interval() {
        let r = rates(&sample(100, 10, 1000), &sample(300, 30, 3000), 2.0);
        let l = r.listeners[0].rate;
        assert_eq!(
            (l.packets_per_sec, l.bytes_per_sec, l.flows_per_sec),
            (100.0, 10_000.0, 10.0)
        );
        assert_eq!(r.backends[0].rate, l);
        let w = &r.workers[0];
        assert_eq!((w.rx_packets_per_sec, w.flows_per_sec), (1000.0, 10.0));
        assert_eq!(w.drops_per_sec, 100.0);
    }

    #[test]
    fn a_row_new_in_the_later_sample_counts_from_zero() {
        let mut after = sample(50, 5, 0);
        after.listeners[0].listener = "demo/edge/new".into();
        let r = rates(&sample(100, 10, 0), &after, 1.0);
        assert_eq!(r.listeners[0].rate.packets_per_sec, 50.0);
    }

    #[test]
    fn a_counter_that_went_down_restarted_from_zero() {
        let r = rates(&sample(300, 30, 0), &sample(100, 10, 0), 1.0);
        assert_eq!(r.listeners[0].rate.packets_per_sec, 100.0);
        assert_eq!(r.listeners[0].rate.flows_per_sec, 10.0);
    }

    #[test]
    fn no_time_elapsed_gives_zero_rates_not_infinities() {
        let r = rates(&sample(100, 10, 1000), &sample(300, 30, 3000), 0.0);
        assert_eq!(r.listeners[0].rate, Rate::default());
        assert_eq!(r.workers[0].rx_packets_per_sec, 0.0);
    }

    #[test]
    fn drop_rates_are_per_reason_per_worker_listener_and_in_total() {
        let mut before = sample(0, 0, 0);
        before.workers[0].drops = [("no_route".to_owned(), 10)].into();
        before.listeners[0].drops = [("backend_unavailable".to_owned(), 1)].into();
        let mut after = sample(0, 0, 0);
        after.workers[0].drops = [
            ("no_route".to_owned(), 30),
            ("backend_unavailable".to_owned(), 5),
        ]
        .into();
        after.listeners[0].drops = [("backend_unavailable".to_owned(), 5)].into();
        let mut second = after.workers[0].clone();
        second.queue = 1;
        second.drops = [("no_route".to_owned(), 4)].into();
        after.workers.push(second);
        let r = rates(&before, &after, 2.0);
        let w = &r.workers[0];
        assert_eq!(w.drop_reasons_per_sec["no_route"], 10.0);
        assert_eq!(w.drop_reasons_per_sec["backend_unavailable"], 2.5);
        assert_eq!(w.drops_per_sec, 12.5);
        assert_eq!(
            r.workers[1].drop_reasons_per_sec["no_route"], 2.0,
            "new queue from zero"
        );
        assert_eq!(r.drops_per_sec["no_route"], 12.0);
        assert_eq!(r.listeners[0].drops_per_sec["backend_unavailable"], 2.0);
        let table = render(&after, &r, 2.0);
        let row = table
            .lines()
            .find(|l| l.contains("queue 0") && l.contains("no_route"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains("30") && row.contains("10.0"), "{row}");
        assert!(
            table
                .lines()
                .any(|l| l.contains("demo/edge/web") && l.contains("backend_unavailable")),
            "{table}"
        );
    }

    #[test]
    fn rates_table_shows_totals_and_rates_per_row() {
        let before = sample(100, 10, 1000);
        let after = sample(300, 30, 3000);
        let table = render(&after, &rates(&before, &after, 2.0), 2.0);
        assert!(table.starts_with("rates over the last 2.0s"), "{table}");
        let listener = table
            .lines()
            .find(|l| l.contains("demo/edge/web") && l.contains("TCP"))
            .unwrap_or_else(|| panic!("{table}"));
        for cell in ["30", "300", "30000", "10.0", "100.0", "10.00k"] {
            assert!(listener.contains(cell), "{cell} in {listener}");
        }
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with("0 ") && l.contains("1.00k")),
            "{table}"
        );
    }

    #[test]
    fn json_keeps_the_stats_fields_at_the_top_level() {
        let json = serde_json::to_value(StatsWithRates {
            stats: sample(1, 1, 1),
            interval_secs: 1.0,
            rates: Rates::default(),
        })
        .unwrap();
        assert!(json["listeners"].is_array());
        assert!(json["rates"]["workers"].is_array());
        assert_eq!(json["interval_secs"], 1.0);
    }

    #[test]
    fn no_drops_is_a_plain_zero_rate() {
        let mut quiet = sample(0, 0, 0);
        quiet.workers[0].drops.clear();
        let r = rates(&quiet, &quiet, 1.0);
        assert!(r.workers[0].drops_per_sec.is_sign_positive());
        assert_eq!(human(r.workers[0].drops_per_sec), "0.0");
    }

    #[test]
    fn human_scales_large_rates() {
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(1_234.0), "1.23k");
        assert_eq!(human(2_500_000.0), "2.50M");
    }
}
