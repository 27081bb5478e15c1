//! Human rendering of `yardctl latency`.

use std::fmt::Write as _;

use crate::tables::{right_align, table};
use switchyard_proto::{Distribution, LatencyReport, WorkerLatency};

/// Nanoseconds in the unit that keeps them short: `850ns`, `12.3µs`,
/// `4.56ms`, `1.20s`.
pub fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

fn quantile_cells(d: &Distribution, show: fn(u64) -> String) -> Vec<String> {
    if d.count == 0 {
        return vec!["-".to_owned(); 5];
    }
    [d.p50, d.p90, d.p99, d.p999, d.max]
        .into_iter()
        .map(show)
        .collect()
}

/// One table: its title, count header, which distribution, how to show a
/// value.
type Section = (
    &'static str,
    &'static str,
    fn(&WorkerLatency) -> &Distribution,
    fn(u64) -> String,
);

pub fn render_latency(r: &LatencyReport) -> String {
    let mut out = String::new();
    let sections: [Section; 3] = [
        (
            "batch latency (batches that received packets)",
            "BATCHES",
            |w| &w.batch_ns,
            duration,
        ),
        (
            "packets per batch",
            "PACKETS",
            |w| &w.packets_per_batch,
            |n| n.to_string(),
        ),
        (
            "control requests served between batches",
            "GAPS",
            |w| &w.control_ns,
            duration,
        ),
    ];
    for (index, (title, count_header, of, show)) in sections.into_iter().enumerate() {
        let mut rows = table(&["WORKER", count_header, "P50", "P90", "P99", "P99.9", "MAX"]);
        for w in &r.workers {
            let d = of(w);
            // Packets per batch: the total received, the number to check.
            let count = if index == 1 { d.total } else { d.count };
            let mut cells = vec![format!("queue {}", w.queue), count.to_string()];
            cells.extend(quantile_cells(d, show));
            rows.add_row(cells);
        }
        right_align(&mut rows, 1);
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{title}\n{rows}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distribution(count: u64, total: u64, p50: u64, max: u64) -> Distribution {
        Distribution {
            count,
            total,
            min: 1,
            p50,
            p90: p50 * 2,
            p99: p50 * 3,
            p999: p50 * 4,
            max,
        }
    }

    #[test]
    fn durations_read_in_the_shortest_unit() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_340), "12.3µs");
        assert_eq!(duration(4_560_000), "4.56ms");
        assert_eq!(duration(1_200_000_000), "1.20s");
    }

    #[test]
    fn each_worker_has_a_row_per_distribution_with_its_quantiles() {
        let report = LatencyReport {
            workers: vec![
                WorkerLatency {
                    queue: 0,
                    batch_ns: distribution(10, 0, 2_000, 90_000),
                    packets_per_batch: distribution(10, 640, 64, 64),
                    control_ns: Distribution::default(),
                },
                WorkerLatency {
                    queue: 1,
                    ..WorkerLatency::default()
                },
            ],
        };
        let text = render_latency(&report);
        let lines: Vec<&str> = text.lines().collect();
        let row = |section: &str, queue: &str| -> String {
            let start = lines.iter().position(|l| l.starts_with(section)).unwrap();
            lines[start..]
                .iter()
                .find(|l| l.trim_start().starts_with(queue))
                .unwrap_or_else(|| panic!("{queue} under {section} in\n{text}"))
                .to_string()
        };
        let batch = row("batch latency", "queue 0");
        for cell in ["10", "2.0µs", "4.0µs", "6.0µs", "8.0µs", "90.0µs"] {
            assert!(batch.contains(cell), "{cell} in {batch:?}");
        }
        let packets = row("packets per batch", "queue 0");
        for cell in ["640", "64", "128", "192", "256"] {
            assert!(packets.contains(cell), "{cell} in {packets:?}");
        }
        assert!(row("control requests", "queue 0").contains('-'), "{text}");
        assert!(row("batch latency", "queue 1").contains('-'), "{text}");
        assert!(text.contains("P99.9"), "{text}");
    }
}
