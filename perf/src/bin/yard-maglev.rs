//! `yard-maglev`: the cost of building a listener's Maglev table
//! (`switchyard_config::maglev::build`) at `SLOT_TABLE_SIZE` slots, as a
//! ratio against a baseline measured in the same run: filling a table of
//! the same size round-robin, the least any fill does. It runs on the
//! control thread at every config load, never on the hot path.

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchyard_config::maglev::{self, MaglevEntry};
use switchyard_config::snapshot::SLOT_TABLE_SIZE;

const RUNS: usize = 9;

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[RUNS / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let m = SLOT_TABLE_SIZE;
    println!("maglev build, M = {m}, median of {RUNS} runs");
    for n in [10usize, 100, 1000] {
        let entries: Vec<MaglevEntry> = (0..n)
            .map(|i| {
                MaglevEntry::new(
                    format!("198.18.{}.{}:8080", i / 256, i % 256),
                    1.0 + (i % 3) as f64,
                )
            })
            .collect();
        let baseline = median(|| {
            let table: Vec<u32> = (0..m).map(|i| (i % n) as u32).collect();
            black_box(table);
        });
        let build = median(|| {
            black_box(maglev::build(black_box(&entries), m, 0));
        });
        println!(
            "N = {n:>4}: build {:>8.3} ms  round-robin fill {:>7.3} ms  ratio {:>7.1}x",
            ms(build),
            ms(baseline),
            build.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
