//! `yard-memory`: resident memory per listener of the configuration side
//! of Switchyard, at 10, 1,000 and 4,096 listeners (each with its own
//! backend set, the case sharing tables cannot help), as a ratio against a
//! baseline measured in the same run: the resident memory that one
//! compact slot table per listener takes in a process of its own.
//!
//! Each measurement runs in a fresh child process (so one size's freed
//! memory is not the next one's), which does what the daemon does with
//! its snapshots, with the daemon's own code: compile the file and publish
//! it with the drains applied (`drain::apply`, so the compiled and the
//! published snapshot are both held), then 10 rounds of a drain, an
//! undrain and a reload that changes one listener, then one `config diff`
//! of a file that changes one listener (planned and compared a listener
//! at a time by `config_diff::diff_plan`, as the control socket does).
//! `--daemon` instead runs
//! the real `switchyard run` in a namespace of its own, drives it with
//! `yardctl` and SIGHUP, and reads its VmRSS at the same points.
//!
//! Memory figures are printed, never asserted: they depend on the
//! allocator and the machine.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use switchyard_config::snapshot::{Snapshot, SLOT_TABLE_SIZE};
use switchyard_daemon::config_diff::{self, ActiveFlows};
use switchyard_daemon::drain::{self, Drain};
use switchyard_perf::memory::{config_yaml, resident_kib, Backends};

#[derive(Parser)]
#[command(about = "Resident memory per listener of Switchyard's snapshots")]
struct Cli {
    /// Listener counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,4096")]
    listeners: Vec<usize>,
    /// Endpoints per listener.
    #[arg(long, default_value_t = 4)]
    backends: usize,
    /// One Service behind every listener instead of one each.
    #[arg(long)]
    shared: bool,
    /// Run the real daemon in a namespace (needs root) at each count.
    #[arg(long)]
    daemon: bool,
    /// With --daemon: start on this many listeners and diff the file of
    /// each count against them (the diff then adds listeners).
    #[arg(long)]
    running: Option<usize>,
    /// Internal: one measurement in this process.
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// Rounds of drain, undrain and reload.
const ROUNDS: usize = 10;

fn backends(cli: &Cli) -> Backends {
    if cli.shared {
        Backends::Shared {
            endpoints: cli.backends,
        }
    } else {
        Backends::Distinct {
            per_listener: cli.backends,
        }
    }
}

/// Resident KiB at each point of one run, and the peak.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Points {
    before: u64,
    start: u64,
    after_rounds: u64,
    after_diff: u64,
    peak: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.child.as_deref() {
        Some("tables") => return child_tables(cli.listeners[0]),
        Some("snapshots") => return child_snapshots(cli.listeners[0], backends(&cli)),
        Some(other) => bail!("unknown child mode {other}"),
        None => {}
    }
    if cli.daemon {
        for &n in &cli.listeners {
            let p = daemon::measure(cli.running.unwrap_or(n), n, backends(&cli))?;
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "{:>9}  switchyard run VmRSS: at start {:.1} MiB, after {ROUNDS}x drain+undrain+reload {:.1} MiB, \
                 after config diff of {n} listeners {:.1} MiB, VmHWM {:.1} MiB",
                cli.running.unwrap_or(n),
                mib(p.start),
                mib(p.after_rounds),
                mib(p.after_diff),
                mib(p.peak)
            );
        }
        return Ok(());
    }
    let table_kib = SLOT_TABLE_SIZE as f64 * 2.0 / 1024.0;
    println!(
        "resident memory per listener ({} endpoints each{}), KiB; one compact table of {SLOT_TABLE_SIZE} slots is {table_kib:.0} KiB",
        cli.backends,
        if cli.shared { ", one Service for all" } else { ", no two alike" }
    );
    println!(
        "{:>9}  {:>10}  {:>9}  {:>11}  {:>10}  {:>9}  {:>8}",
        "listeners", "baseline", "at start", "after 10x", "after diff", "peak", "ratio"
    );
    for &n in &cli.listeners {
        let baseline: Points = run_child(&["--child", "tables", "--listeners", &n.to_string()])?;
        let mut args = vec![
            "--child".to_owned(),
            "snapshots".to_owned(),
            "--listeners".to_owned(),
            n.to_string(),
            "--backends".to_owned(),
            cli.backends.to_string(),
        ];
        if cli.shared {
            args.push("--shared".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let points: Points = run_child(&args)?;
        let per = |kib: u64| kib.saturating_sub(points.before) as f64 / n as f64;
        let base = baseline.start.saturating_sub(baseline.before) as f64 / n as f64;
        println!(
            "{n:>9}  {base:>10.1}  {:>9.1}  {:>11.1}  {:>10.1}  {:>9.1}  {:>7.2}x",
            per(points.start),
            per(points.after_rounds),
            per(points.after_diff),
            per(points.peak),
            per(points.after_rounds) / base,
        );
    }
    println!(
        "baseline: one compact table per listener, allocated and touched in a process of its own; \
         ratio: after 10x (drain, undrain, reload) over baseline"
    );
    Ok(())
}

fn run_child<T: serde::de::DeserializeOwned>(args: &[&str]) -> Result<T> {
    let me = std::env::current_exe().context("locating yard-memory")?;
    let out = Command::new(&me)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", me.display(), args.join(" ")))?;
    ensure!(
        out.status.success(),
        "{} {}: {}\n{}",
        me.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("reading a child's measurement")
}

/// The baseline: `n` tables of `SLOT_TABLE_SIZE` two-byte slots, every
/// page written, as the resident memory they add.
fn child_tables(n: usize) -> Result<()> {
    let (before, _) = resident_kib(None)?;
    let tables: Vec<Vec<u16>> = (0..n)
        .map(|i| (0..SLOT_TABLE_SIZE).map(|s| ((s + i) % 7) as u16).collect())
        .collect();
    let (start, peak) = resident_kib(None)?;
    std::hint::black_box(&tables);
    let points = Points {
        before,
        start,
        after_rounds: start,
        after_diff: start,
        peak,
    };
    println!("{}", serde_json::to_string(&points)?);
    Ok(())
}

fn compile(yaml: &str, generation: u64) -> Result<Snapshot> {
    let resources = switchyard_config::load_str("bench.yaml", yaml)?;
    Ok(switchyard_config::resolve(&resources, generation).snapshot)
}

/// The daemon's snapshots of `n` listeners through start, drains and
/// reloads, and a diff. `before` is taken with the generated files in
/// memory, so they do not count as the listeners'.
fn child_snapshots(n: usize, backends: Backends) -> Result<()> {
    let files = [config_yaml(n, backends, 0), config_yaml(n, backends, 1)];
    let (before, _) = resident_kib(None)?;
    let seed = 0;
    let mut generation = 1;
    let mut compiled = compile(&files[0], generation)?;
    let none = BTreeSet::new();
    let mut published = drain::apply(&compiled, &none, generation, seed)?;
    let (start, _) = resident_kib(None)?;
    let endpoint = compiled.listeners()[0].backends()[0].endpoint;
    let drained = BTreeSet::from([Drain {
        listener: None,
        endpoint,
    }]);
    for round in 0..ROUNDS {
        // Each publication replaces the last, as the daemon's swap does.
        for drains in [&drained, &none] {
            generation += 1;
            published = drain::apply(&compiled, drains, generation, seed)?;
            std::hint::black_box(&published);
        }
        generation += 1;
        compiled = compile(&files[(round + 1) % 2], generation)?;
        published = drain::apply(&compiled, &none, generation, seed)?;
    }
    let (after_rounds, _) = resident_kib(None)?;
    // As the control socket answers `config diff`: the candidate planned,
    // each listener's table built as it is compared.
    let candidate_file = &files[(ROUNDS + 1) % 2];
    let resources = switchyard_config::load_str("candidate.yaml", candidate_file)?;
    let options = switchyard_config::Options::default();
    let planned = switchyard_config::plan_with(&resources, generation + 1, &options);
    drop(resources);
    let diffs = config_diff::diff_plan(
        &published,
        &planned.plan,
        &none,
        &Default::default(),
        &ActiveFlows::default(),
    )?;
    drop(planned);
    ensure!(
        diffs.len() == n,
        "{} listeners in the diff of {n}",
        diffs.len()
    );
    let (after_diff, peak) = resident_kib(None)?;
    std::hint::black_box((&compiled, &published));
    let points = Points {
        before,
        start,
        after_rounds,
        after_diff,
        peak,
    };
    println!("{}", serde_json::to_string(&points)?);
    Ok(())
}

mod daemon {
    //! The real daemon, in a namespace of its own: start, drains and
    //! reloads, and a `yardctl config diff`, with its VmRSS read at each.

    use super::*;
    use nix::sys::signal::Signal;
    use switchyard_vm_tests::daemon::{Daemon, DaemonOptions};
    use switchyard_vm_tests::poll::poll_until;
    use switchyard_vm_tests::process::run_with_timeout;
    use switchyard_vm_tests::tempdir::TempDir;
    use switchyard_vm_tests::topology::Topology;

    /// A reload or diff of thousands of listeners takes seconds.
    const STEP_TIMEOUT: Duration = Duration::from_secs(300);

    /// The daemon on `running` listeners, and a diff of a file of `n`.
    pub(super) fn measure(running: usize, n: usize, backends: Backends) -> Result<Points> {
        let topology = Topology::single_arm(1)?;
        let dir = TempDir::new("memory")?;
        let files = [
            config_yaml(running, backends, 0),
            config_yaml(running, backends, 1),
        ];
        let config = dir.write("config.yaml", &files[0])?;
        let candidate = dir.write("candidate.yaml", &config_yaml(n, backends, 1))?;
        let mut options = DaemonOptions::new(topology.lb_interfaces());
        options.ready_timeout = STEP_TIMEOUT;
        options.log_on_drop = false;
        let mut daemon = Daemon::start(&topology.lb, &config, &options)?;
        let pid = Some(daemon.pid());
        let before = 0;
        let (start, _) = resident_kib(pid)?;
        let endpoint = "198.18.2.21:20000";
        for round in 0..ROUNDS {
            yardctl(&daemon, &["drain", endpoint])?;
            yardctl(&daemon, &["undrain", endpoint])?;
            let generation = daemon.config_status()?.generation;
            std::fs::write(&config, &files[(round + 1) % 2])?;
            daemon.signal(Signal::SIGHUP)?;
            poll_until(STEP_TIMEOUT, "the reload to apply", || {
                Ok((daemon.config_status()?.generation > generation).then_some(()))
            })?;
        }
        let (after_rounds, _) = resident_kib(pid)?;
        let candidate = candidate.to_string_lossy().into_owned();
        yardctl(&daemon, &["config", "diff", &candidate])?;
        let (after_diff, peak) = resident_kib(pid)?;
        daemon.stop()?;
        Ok(Points {
            before,
            start,
            after_rounds,
            after_diff,
            peak,
        })
    }

    fn yardctl(daemon: &Daemon, args: &[&str]) -> Result<()> {
        let out = run_with_timeout(
            Command::new(daemon.yardctl_path())
                .arg("--control-socket")
                .arg(daemon.control_socket())
                .args(args),
            STEP_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "yardctl {}: {}",
            args.join(" "),
            out.stderr.trim()
        );
        Ok(())
    }
}
