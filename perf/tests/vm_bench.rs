//! `make bench-vm`'s machinery end to end, briefly: the bench guest boots
//! on its tap, two paths (the in-kernel XDP_TX limit and Switchyard's fast
//! path) forward the generator's frames back to the sink, and under
//! software emulation the report says its rates measure the emulator.
//! Skipped, saying why, only where qemu is not installed (needs root and
//! the release binaries, like the other namespace tests).

use anyhow::{ensure, Result};
use switchyard_perf::netbench::Options;
use switchyard_perf::vmbench::{self, VmOptions, TCG_CAVEAT};
use switchyard_vm_tests::vm::qemu::qemu_binary;

#[test]
fn frames_go_through_the_guest_and_back_and_tcg_rates_are_called_the_emulators() -> Result<()> {
    if let Err(why) = qemu_binary() {
        eprintln!("skipped: {why:#}");
        return Ok(());
    }
    let only = ["xdp_tx_limit", "switchyard_fastpath"];
    let options = VmOptions {
        bench: Options {
            seconds: 0.5,
            warmup: 0.3,
            rounds: 1,
            only: only.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        },
        // Unpinned: the test machine's CPUs are not known.
        vcpu_cpus: None,
        ..VmOptions::default()
    };
    let report = vmbench::run(&options, |line| eprintln!("{line}"))?;
    let shown = vmbench::render(&report);
    eprintln!("{shown}");
    ensure!(
        report.paths.iter().map(|p| p.name.as_str()).eq(only),
        "paths measured: {:?}",
        report.paths
    );
    for path in &report.paths {
        ensure!(
            path.mpps > 0.0,
            "{}: no frame came back to the sink while measuring",
            path.name
        );
    }
    ensure!(report.sink_frames > 0, "the sink counted nothing");
    if report.emulated() {
        ensure!(
            report.caveat.as_deref() == Some(TCG_CAVEAT),
            "{:?}",
            report.caveat
        );
        ensure!(
            shown.lines().next() == Some(format!("NOTE: {TCG_CAVEAT}.").as_str()),
            "the first line states the caveat:\n{shown}"
        );
        ensure!(
            !shown.contains("\nsame-run ratios:\n"),
            "under TCG no ratio is printed as a claim:\n{shown}"
        );
    }
    Ok(())
}
