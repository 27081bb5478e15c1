//! `yard-maglev`: the cost of building a listener's Maglev table
//! (`switchyard_config::maglev::build`) at `SLOT_TABLE_SIZE` slots, as a
//! ratio against a baseline measured in the same run: filling a table of
//! the same size round-robin, the least any fill does. It runs on the
//! control thread at every config load, never on the hot path.
//!
//! It also measures disruption: the share of the other backends' slots that
//! change owner when one of N equal backends is removed (the minimum is 0;
//! Maglev trades a little of it for exact, order-independent shares).

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchyard_config::maglev::{self, MaglevEntry};
use switchyard_config::snapshot::SLOT_TABLE_SIZE;
use switchyard_perf::summary::Summary;

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
    let mut summary = Summary::default();
    let m = SLOT_TABLE_SIZE;
    summary.record("maglev_table_size", m as f64);
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
        summary.record(format!("maglev_build_ms_n{n}"), ms(build));
        summary.record(format!("maglev_round_robin_fill_ms_n{n}"), ms(baseline));
    }
    disruption(m, &mut summary);
    if let Err(err) = summary.write_if_asked() {
        eprintln!("writing --json: {err}");
    }
}

/// For N equal backends, removes each of 20 victims in turn and prints the
/// mean and worst share of the survivors' slots that moved.
fn disruption(m: usize, summary: &mut Summary) {
    println!(
        "\nslots of the other backends moved when one of N is removed, M = {m}, 20 victims each"
    );
    for n in [10usize, 60, 100, 300, 1000] {
        let key = |i: usize| format!("198.18.{}.{}:8080", i / 256, i % 256);
        let entries: Vec<MaglevEntry> = (0..n).map(|i| MaglevEntry::new(key(i), 1.0)).collect();
        let before = maglev::build(&entries, m, 0);
        let mut shares = Vec::new();
        for v in 0..20 {
            let victim = (v * 7919) % n;
            let mut survivors = entries.clone();
            survivors.remove(victim);
            let after = maglev::build(&survivors, m, 0);
            let (mut others, mut moved) = (0usize, 0usize);
            for (b, a) in before.iter().zip(&after) {
                let (Some(b), Some(a)) = (b, a) else { continue };
                let b = *b as usize;
                if b == victim {
                    continue;
                }
                others += 1;
                // Survivors after the victim shift down by one index.
                let a = *a as usize;
                let a_original = if a >= victim { a + 1 } else { a };
                moved += usize::from(a_original != b);
            }
            shares.push(moved as f64 / others as f64 * 100.0);
        }
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let worst = shares.iter().cloned().fold(0.0, f64::max);
        println!("N = {n:>4}: mean {mean:>5.2}%  worst {worst:>5.2}%");
        summary.record(format!("maglev_disruption_mean_pct_n{n}"), mean);
        summary.record(format!("maglev_disruption_worst_pct_n{n}"), worst);
    }
}
