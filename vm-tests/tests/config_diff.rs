//! End-to-end: `yardctl config check` and `config diff` against a running
//! daemon with open connections. A broken file is reported with its
//! `file:line` and leaves the daemon alone; a diff that removes a backend
//! names the share of the hash space that moves and exactly the
//! connections the test holds open on that backend. Also: `yardctl top`
//! refuses cleanly when stdout is not a terminal.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;
use switchyard_vm_tests::client;
use switchyard_vm_tests::config::{TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{tcp_exchange_keep_open, Daemon, GatewaySpec, TempDir, Topology};

/// Connections held open on be1, at least; others land on be2.
const MIN_ON_BE1: usize = 3;
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// `yardctl ARGS`, expected to succeed, stdout parsed as JSON.
fn json(daemon: &Daemon, args: &[&str]) -> Result<Value> {
    let out = daemon.yardctl_raw(args)?;
    ensure!(
        out.status.success(),
        "`yardctl {}` failed ({}): {}",
        args.join(" "),
        out.status,
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("`yardctl {}` printed {:?}", args.join(" "), out.stdout))
}

#[test]
fn config_check_and_diff_report_what_a_reload_would_do_without_doing_it() -> Result<()> {
    let topo = Topology::single_arm(2)?;
    let running_dir = TempDir::new("config")?;
    // Candidates live apart from the running file: the daemon watches its
    // own file's directory.
    let candidates = TempDir::new("candidates")?;
    let spec = GatewaySpec::demo();
    let path = running_dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));

    // Every connection stays open (a closed one would linger in the flow
    // tables as closing), until enough are on be1 and some on be2.
    let mut open: BTreeMap<String, Vec<TcpStream>> = BTreeMap::new();
    let on =
        |name: &str, open: &BTreeMap<String, Vec<TcpStream>>| open.get(name).map_or(0, Vec::len);
    for i in 0..64 {
        if on("be1", &open) >= MIN_ON_BE1 && on("be2", &open) >= 1 {
            break;
        }
        let (stream, reply) = tcp_exchange_keep_open(&topo.client, tcp_vip, &format!("c{i}|"))?;
        open.entry(reply.server().to_owned())
            .or_default()
            .push(stream);
    }
    let on_be1 = on("be1", &open);
    ensure!(
        on_be1 >= MIN_ON_BE1 && on("be2", &open) >= 1,
        "64 connections did not reach both backends: {:?}",
        open.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
    );

    // A broken file: refused with file:line, exit status non-zero.
    let demo_lines = spec.to_yaml().lines().count();
    let broken = candidates.write(
        "broken.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: [\n",
            spec.to_yaml()
        ),
    )?;
    let broken_name = broken.display().to_string();
    let out = daemon.yardctl_raw(&["config", "check", &broken_name])?;
    ensure!(!out.status.success(), "broken file accepted: {out:?}");
    let at = out
        .stderr
        .find(&format!("{broken_name}:"))
        .ok_or_else(|| anyhow!("no {broken_name}:LINE in {:?}", out.stderr))?;
    let line: usize = out.stderr[at + broken_name.len() + 1..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no line number in {:?}", out.stderr))?;
    ensure!(
        line > demo_lines,
        "the error should point into the broken document (after line {demo_lines}): {:?}",
        out.stderr
    );
    // The same with -o json: the report on stdout, still a failure.
    let out = daemon.yardctl_raw(&["config", "check", &broken_name, "-o", "json"])?;
    ensure!(!out.status.success(), "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout).context("check -o json")?;
    ensure!(report["valid"] == false, "{report}");
    ensure!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{broken_name}:{line}:"))),
        "{report}"
    );

    // Nothing to compare an invalid file with: refused the same way.
    let out = daemon.yardctl_raw(&["config", "diff", &broken_name])?;
    ensure!(
        !out.status.success() && out.stderr.contains(&format!("{broken_name}:{line}:")),
        "{out:?}"
    );

    // The daemon is unaffected: same generation, nothing refused, and the
    // connections still echo.
    let status = daemon.config_status()?;
    ensure!(
        status.generation == 1 && status.failed_reloads == 0 && status.reloads == 0,
        "{status:?}"
    );
    for (server, streams) in &mut open {
        for stream in streams {
            let text = client::echo(stream, "still|", REPLY_TIMEOUT)?;
            ensure!(text.starts_with(&format!("{server} ")), "{text:?}");
        }
    }

    // be1 leaves the Service: a valid file.
    let mut without_be1 = spec.clone();
    let be1 = topo.backend("be1").addr;
    let be2 = topo.backend("be2").addr;
    for listener in &mut without_be1.listeners {
        listener.backends = vec![be2];
    }
    let next = candidates.write("next.yaml", &without_be1.to_yaml())?;
    let next_name = next.display().to_string();
    let check = json(&daemon, &["config", "check", &next_name, "-o", "json"])?;
    ensure!(check["valid"] == true, "{check}");
    ensure!(check["listeners"] == 2, "{check}");
    ensure!(check["same_as_running"] == false, "{check}");
    let same = json(
        &daemon,
        &["config", "check", &path.display().to_string(), "-o", "json"],
    )?;
    ensure!(same["same_as_running"] == true, "{same}");

    let diff = json(&daemon, &["config", "diff", &next_name, "-o", "json"])?;
    let listeners = diff["listeners"]
        .as_array()
        .ok_or_else(|| anyhow!("no listeners in {diff}"))?;
    let tcp = listeners
        .iter()
        .find(|l| l["listener"] == spec.listener_id(TCP_LISTENER))
        .ok_or_else(|| anyhow!("no {TCP_LISTENER} in {diff}"))?;
    ensure!(tcp["change"] == "changed", "{tcp}");
    let moved = tcp["moved_slots_fraction"]
        .as_f64()
        .ok_or_else(|| anyhow!("{tcp}"))?;
    // Two equal backends: be1 owns close to half the slots, and only those
    // move.
    ensure!((0.45..=0.55).contains(&moved), "moved {moved}: {tcp}");
    let be1_endpoint = format!("{be1}:{TCP_TARGET_PORT}");
    ensure!(
        tcp["backends_removed"]
            == serde_json::json!([{"backend": be1_endpoint, "active_flows": on_be1}]),
        "{tcp}"
    );
    ensure!(tcp["flows_on_removed_backends"] == on_be1, "{tcp}");
    let total: usize = open.values().map(Vec::len).sum();
    ensure!(tcp["active_flows"] == total, "{total} open: {tcp}");
    ensure!(
        listeners.iter().all(|l| l["change"] == "changed"),
        "be1 leaves the UDP listener too: {diff}"
    );

    // The table is for people: the listener, its share and the backend.
    let out = daemon.yardctl_raw(&["config", "diff", &next_name])?;
    ensure!(out.status.success(), "{out:?}");
    eprintln!("yardctl config diff {next_name}:\n{}", out.stdout);
    ensure!(
        out.stdout
            .contains(&format!("- backend {be1_endpoint}: {on_be1} active flows")),
        "{}",
        out.stdout
    );

    // Nothing was applied.
    let status = daemon.config_status()?;
    ensure!(status.generation == 1, "{status:?}");
    for stream in open.get_mut("be1").into_iter().flatten() {
        let text = client::echo(stream, "after|", REPLY_TIMEOUT)?;
        ensure!(text.starts_with("be1 "), "{text:?}");
    }
    Ok(())
}

#[test]
fn top_without_a_terminal_says_to_use_stats() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let daemon = topo.start_daemon(&path)?;
    // Captured output is a pipe, not a terminal.
    let out = daemon.yardctl_raw(&["top", "--interval", "0.5"])?;
    ensure!(!out.status.success(), "{out:?}");
    ensure!(
        out.stderr.contains("needs a terminal") && out.stderr.contains("yardctl stats"),
        "{:?}",
        out.stderr
    );
    ensure!(out.stdout.is_empty(), "{:?}", out.stdout);
    Ok(())
}
