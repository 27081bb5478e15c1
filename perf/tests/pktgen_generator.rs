//! `yard-pktgen --mode live` sends on every machine: with live frames where
//! the kernel allows them, else with AF_XDP after saying why, and its JSON
//! summary names the generator that sent. Runs in a namespace of its own
//! with a veth pair (needs root and the release binaries).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::process::{release_bin, run_with_timeout};
use switchyard_vm_tests::Netns;

#[test]
fn live_mode_sends_with_live_frames_or_says_it_fell_back_to_afxdp() -> Result<()> {
    let ns = Netns::new("pktgen")?;
    ns.ip(&["link", "add", "g0", "type", "veth", "peer", "name", "g1"])?;
    ns.ip(&["link", "set", "g0", "up"])?;
    ns.ip(&["link", "set", "g1", "up"])?;
    let mut cmd = ns.command(release_bin("yard-pktgen")?);
    cmd.args([
        "--interface",
        "g0",
        "--dst-mac",
        "02:00:00:00:00:01",
        "--dst",
        "198.18.100.10:53",
        "--mode",
        "live",
        "--rate",
        "100000",
        "--duration",
        "0.3",
        "--json",
    ]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
    ensure!(out.status.success(), "yard-pktgen failed: {}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("yard-pktgen printed {:?}", out.stdout))?;
    ensure!(summary["sent"].as_u64() > Some(0), "{summary}");
    match summary["generator"].as_str() {
        Some("live_frames") => {}
        Some("afxdp") => ensure!(
            out.stderr
                .contains("live frames refused by the kernel (EPERM"),
            "fell back without saying why: {}",
            out.stderr
        ),
        other => anyhow::bail!("unknown generator {other:?}: {summary}"),
    }
    Ok(())
}
