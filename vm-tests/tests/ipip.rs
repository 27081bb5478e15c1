//! End to end, `ipip` forwarding: the release daemon wraps each client
//! packet in an outer IPv4 or IPv6 header to its backend, the backends
//! strip it with `switchyard decap` (this kernel has no ipip module) and
//! answer the client directly from the VIP on their loopback. TCP and UDP,
//! IPv4 and IPv6, both backends, with and without the XDP fast path; the
//! backends' decapsulation counts exactly what the load balancer
//! forwarded. A client's full-size packets no longer fit once wrapped:
//! the load balancer answers them with the MTU that fits, the client's
//! kernel learns it, and a large upload completes. `switchyard decap`
//! leaves nothing attached when stopped. Needs root and the release
//! binaries.

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_vm_tests::encap::{
    check_direct_return, DecapProcess, EncapLab, BACKEND_INTERFACE, DEFAULT_GUE_PORT,
};
use switchyard_vm_tests::topology::{VIP, VIP6};
use switchyard_vm_tests::{tcp_exchange, xdp_attached, Topology};

#[test]
fn ipip_reaches_both_backends_which_answer_directly_with_the_fast_path() -> Result<()> {
    let lab = EncapLab::start("ipip", None, &["--fast-path", "on"])?;
    check_direct_return(&lab, "ipip", &["ipip", "ip6ip6"], true)
}

#[test]
fn ipip_reaches_both_backends_which_answer_directly_without_the_fast_path() -> Result<()> {
    let lab = EncapLab::start("ipip", None, &["--fast-path", "off"])?;
    check_direct_return(&lab, "ipip", &["ipip", "ip6ip6"], false)
}

/// The path MTU the client's kernel holds for `to` (`ip route get`).
fn learned_mtu(lab: &EncapLab, to: IpAddr) -> Result<Option<u32>> {
    let route = lab.topo.client.ip(&["route", "get", &to.to_string()])?;
    Ok(route
        .split_whitespace()
        .skip_while(|word| *word != "mtu")
        .nth(1)
        .and_then(|mtu| mtu.parse().ok()))
}

/// Every link is 1500 bytes; wrapped in 20 (IPv4) or 40 (IPv6) more, a
/// client's full-size segment no longer fits the LB's egress. The load
/// balancer answers it with fragmentation-needed / packet-too-big naming
/// 1480 / 1460, the client's kernel learns that path MTU, and a 200 kB
/// upload, sent with DF in full-size segments, arrives whole.
#[test]
fn large_uploads_through_ipip_learn_the_mtu_that_fits_and_complete() -> Result<()> {
    let lab = EncapLab::start("ipip", None, &[])?;
    let payload: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for (vip, fits) in [(IpAddr::V4(VIP), 1480), (IpAddr::V6(VIP6), 1460)] {
        let to = SocketAddr::new(vip, 80);
        let reply = tcp_exchange(&lab.topo.client, to, &payload)?;
        let server = reply.server().to_owned();
        // The server answers each read with its name and the bytes read.
        let echoed = reply.text.replace(&format!("{server} "), "");
        ensure!(
            echoed == payload,
            "{to}: the upload came back cut or changed ({} of {} bytes)",
            echoed.len(),
            payload.len()
        );
        ensure!(
            learned_mtu(&lab, vip)? == Some(fits),
            "{to}: the client's path MTU is {:?}, not {fits}",
            learned_mtu(&lab, vip)?
        );
    }
    let stats = lab.daemon.stats()?;
    let answered: u64 = stats.workers.iter().map(|w| w.too_big_answered).sum();
    ensure!(answered >= 2, "{answered} packets answered as too big");
    Ok(())
}

/// SIGTERM and SIGINT both detach the program and print its counters.
#[test]
fn decap_detaches_cleanly_on_sigterm_and_sigint() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let ns = &topo.backends[0].ns;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut decap = DecapProcess::start(ns, BACKEND_INTERFACE, DEFAULT_GUE_PORT)?;
        ensure!(xdp_attached(ns, BACKEND_INTERFACE)?, "attached");
        let (status, counters) = decap.stop_with(signal)?;
        ensure!(status.success(), "{signal}: exit status {status}");
        ensure!(
            !xdp_attached(ns, BACKEND_INTERFACE)?,
            "{signal}: a program is still attached"
        );
        let names: Vec<&str> = counters.keys().map(String::as_str).collect();
        ensure!(
            names == ["gue", "ip6ip6", "ip_mixed", "ipip", "malformed", "passed"],
            "{signal}: final counters {counters:?}"
        );
        counters.get("passed").context("passed")?;
    }
    Ok(())
}
