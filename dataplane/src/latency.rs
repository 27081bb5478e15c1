//! Per-worker latency histograms: how long a batch that received packets
//! took, how many packets it carried, and how long the worker spent
//! answering the control socket between batches (a stall there delays
//! every packet behind it, so it must show).
//!
//! The worker owns its recorder and writes it on the packet path, so
//! everything is allocated in [`LatencyRecorder::new`]: a record clamps to
//! the histogram's range instead of growing it, and takes no lock. Readers
//! get a copy ([`LatencySnapshot`]) taken between batches.

use hdrhistogram::Histogram;

/// Longest duration told apart; anything longer is counted as this.
pub const MAX_TRACKED_NS: u64 = 10_000_000_000;
/// Largest batch told apart: far above any ring size.
pub const MAX_TRACKED_PACKETS: u64 = 1 << 16;
/// Two significant digits: quantiles within 1%, and a copy small enough
/// (tens of KiB) to take between batches.
const DURATION_DIGITS: u8 = 2;
/// Batch sizes up to 2048 are exact.
const PACKET_DIGITS: u8 = 3;

/// What `yardctl latency` shows of one histogram: the count, the exact
/// total and a few quantiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Distribution {
    pub count: u64,
    /// Sum of the recorded values.
    pub total: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    pub max: u64,
}

/// One distribution and the exact sum of what it recorded (a histogram
/// only knows values to its precision).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub histogram: Histogram<u64>,
    pub total: u64,
}

impl Recorded {
    fn new(high: u64, digits: u8) -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, high, digits)
                .expect("constant bounds are valid"),
            total: 0,
        }
    }

    #[inline]
    fn record(&mut self, value: u64) {
        // Clamps out-of-range values: never resizes, never allocates.
        self.histogram.saturating_record(value);
        self.total = self.total.saturating_add(value);
    }

    /// Count, exact total and the quantiles `yardctl latency` prints.
    pub fn distribution(&self) -> Distribution {
        let h = &self.histogram;
        if h.is_empty() {
            return Distribution::default();
        }
        Distribution {
            count: h.len(),
            total: self.total,
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// Per-bucket (not cumulative) counts of values at most each bound, in
    /// bound order, then the rest: the shape a Prometheus histogram wants.
    /// Bounds fall on the histogram's own resolution, so a value within
    /// its precision of a bound may land on either side.
    pub fn buckets(&self, bounds: &[u64]) -> Vec<(u64, u64)> {
        let h = &self.histogram;
        let mut below = 0;
        let mut out = Vec::with_capacity(bounds.len());
        for &bound in bounds {
            let upto = if bound == 0 {
                0
            } else {
                h.count_between(0, bound)
            };
            out.push((bound, upto.saturating_sub(below)));
            below = below.max(upto);
        }
        out
    }
}

/// The worker's recorder; see the module docs.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    pub batch_ns: Recorded,
    pub packets_per_batch: Recorded,
    pub control_ns: Recorded,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    pub fn new() -> Self {
        Self {
            batch_ns: Recorded::new(MAX_TRACKED_NS, DURATION_DIGITS),
            packets_per_batch: Recorded::new(MAX_TRACKED_PACKETS, PACKET_DIGITS),
            control_ns: Recorded::new(MAX_TRACKED_NS, DURATION_DIGITS),
        }
    }

    /// A batch that received `packets` (at least one) and took `elapsed_ns`.
    #[inline]
    pub fn record_batch(&mut self, elapsed_ns: u64, packets: u64) {
        self.batch_ns.record(elapsed_ns);
        self.packets_per_batch.record(packets);
    }

    /// Time spent answering control requests in one gap between batches.
    #[inline]
    pub fn record_control(&mut self, elapsed_ns: u64) {
        self.control_ns.record(elapsed_ns);
    }

    pub fn snapshot(&self, queue: u32) -> LatencySnapshot {
        LatencySnapshot {
            queue,
            recorded: self.clone(),
        }
    }
}

/// A copy of one worker's histograms, taken between batches.
#[derive(Debug, Clone)]
pub struct LatencySnapshot {
    pub queue: u32,
    pub recorded: LatencyRecorder,
}

/// What one worker's histograms say, as `yardctl latency` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    pub queue: u32,
    pub batch_ns: Distribution,
    pub packets_per_batch: Distribution,
    pub control_ns: Distribution,
}

impl LatencySnapshot {
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            queue: self.queue,
            batch_ns: self.recorded.batch_ns.distribution(),
            packets_per_batch: self.recorded.packets_per_batch.distribution(),
            control_ns: self.recorded.control_ns.distribution(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_recorded_batches_and_totals_are_exact() {
        let mut r = LatencyRecorder::new();
        for i in 1..=1000u64 {
            r.record_batch(i * 1000, i % 64 + 1);
        }
        let d = r.batch_ns.distribution();
        assert_eq!(d.count, 1000);
        assert_eq!(d.total, (1..=1000u64).map(|i| i * 1000).sum::<u64>());
        let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
        assert!(near(d.p50, 500_000), "{d:?}");
        assert!(near(d.p90, 900_000), "{d:?}");
        assert!(near(d.p99, 990_000), "{d:?}");
        assert!(near(d.max, 1_000_000), "{d:?}");
        assert!(d.min <= d.p50 && d.p50 <= d.p90 && d.p90 <= d.p99);
        assert!(d.p99 <= d.p999 && d.p999 <= d.max);
        let p = r.packets_per_batch.distribution();
        assert_eq!(p.total, (1..=1000u64).map(|i| i % 64 + 1).sum::<u64>());
        assert_eq!((p.min, p.max), (1, 64), "small batch sizes are exact");
    }

    #[test]
    fn values_out_of_range_are_clamped_not_dropped() {
        let mut r = LatencyRecorder::new();
        r.record_batch(MAX_TRACKED_NS * 10, MAX_TRACKED_PACKETS * 2);
        r.record_control(0);
        let d = r.batch_ns.distribution();
        assert_eq!(d.count, 1);
        assert!(d.max >= MAX_TRACKED_NS, "{d:?}");
        assert_eq!(r.control_ns.distribution().count, 1);
    }

    #[test]
    fn nothing_recorded_reports_zeros() {
        let r = LatencyRecorder::new();
        assert_eq!(r.snapshot(3).summary().batch_ns, Distribution::default());
        assert_eq!(r.snapshot(3).summary().queue, 3);
    }

    #[test]
    fn buckets_split_the_counts_at_each_bound() {
        let mut r = LatencyRecorder::new();
        for packets in [1, 1, 3, 8, 40, 500] {
            r.record_batch(1, packets);
        }
        let buckets = r.packets_per_batch.buckets(&[1, 4, 16, 64]);
        assert_eq!(buckets, [(1, 2), (4, 1), (16, 1), (64, 1)]);
        let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(counted + 1, 6, "one value above the last bound");
    }
}
