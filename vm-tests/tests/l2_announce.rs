//! L2 announcements end to end: two LB nodes on one segment, each running
//! `switchyard run --node-name ...` with the real XDP program and workers,
//! a client with no route to the VIPs, which it finds by ARP and Neighbor
//! Discovery answered by Switchyard. Exactly one node announces each VIP;
//! when it is drained, or killed with SIGKILL, the other takes over, and
//! the time that takes is measured and printed. Veths keep the kernel's
//! default offloads.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::client::{echo, tcp_connect};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::l2lab::{
    announced_config, announced_config_ipv4_only, role, L2Lab, BACKENDS, NODES, VIP4, VIP6,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::{Daemon, EchoPair, TempDir};

/// Generous bounds: the default heartbeat is 200 ms and a peer is dead
/// after 1 s, so a takeover after a kill takes a little over a second.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(8);
const DRAIN_TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt's bounds while the VIP may be unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const ECHO_TIMEOUT: Duration = Duration::from_secs(2);

/// The node that announces `vip` when exactly one does and the others
/// stand by naming it; `None` while the nodes disagree.
fn sole_announcer(daemons: &[&Daemon], vip: IpAddr) -> Result<Option<usize>> {
    let roles = daemons
        .iter()
        .map(|d| role(d, vip))
        .collect::<Result<Vec<_>>>()?;
    let announcers: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i].state == "announced")
        .collect();
    let [owner] = announcers[..] else {
        return Ok(None);
    };
    let named = format!("owner {}", NODES[owner].0);
    let others_agree = (0..roles.len())
        .filter(|&i| i != owner)
        .all(|i| roles[i].state == "standby" && roles[i].detail == named);
    Ok(others_agree.then_some(owner))
}

/// One new connection to `vip`, echoed by a backend.
fn connects(lab: &L2Lab, vip: IpAddr, payload: &str) -> bool {
    let to = SocketAddr::new(vip, TCP_PORT);
    let Ok(mut stream) = tcp_connect(&lab.client, to, CONNECT_TIMEOUT) else {
        return false;
    };
    echo(&mut stream, payload, ECHO_TIMEOUT).is_ok_and(|text| text.ends_with(payload))
}

/// Echo servers on both backends' IPv4 and IPv6 addresses.
fn start_backends(lab: &L2Lab) -> Result<Vec<EchoPair>> {
    let mut servers = Vec::new();
    for (ns, (name, v4, v6)) in lab.backends.iter().zip(BACKENDS) {
        for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
            servers.push(EchoPair::start_on(
                ns,
                name,
                ip,
                TCP_TARGET_PORT,
                UDP_TARGET_PORT,
            )?);
        }
    }
    Ok(servers)
}

#[test]
fn one_node_answers_each_vip_and_the_other_takes_over_on_drain_and_kill() -> Result<()> {
    let lab = L2Lab::new()?;
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &announced_config())?;
    let _servers = start_backends(&lab)?;
    let mut a = lab.start_node(0, &config)?;
    let mut b = lab.start_node(1, &config)?;
    let macs = [lab.node_mac(0)?, lab.node_mac(1)?];
    let vips = [IpAddr::V4(VIP4), IpAddr::V6(VIP6)];

    // Exactly one node announces each VIP, and the client, with no route,
    // reaches it at that node's MAC.
    let mut owners = Vec::new();
    for vip in vips {
        let owner = poll_until(ELECTION_TIMEOUT, &format!("one announcer of {vip}"), || {
            sole_announcer(&[&a, &b], vip)
        })?;
        poll_until(ELECTION_TIMEOUT, &format!("a connection to {vip}"), || {
            Ok(connects(&lab, vip, "hello").then_some(()))
        })?;
        let neighbour = lab.client_neighbour(vip)?;
        ensure!(
            neighbour.as_deref() == Some(macs[owner].as_str()),
            "the client has {vip} at {neighbour:?}, not at {} of {}",
            macs[owner],
            NODES[owner].0
        );
        println!("{vip}: announced by {} ({})", NODES[owner].0, macs[owner]);
        owners.push(owner);
    }

    // An address of the segment no listener is on is answered by nobody.
    for unserved in ["198.18.1.101", "2001:db8:1::101"] {
        let unserved: IpAddr = unserved.parse()?;
        ensure!(!connects(&lab, unserved, "nobody"), "{unserved} answered");
        let neighbour = lab.client_neighbour(unserved)?;
        ensure!(neighbour.is_none(), "{unserved} is at {neighbour:?}");
    }

    // Drain the owner of the IPv4 VIP: the other node announces it at once
    // and the client's neighbour entry moves to it.
    let (first, second) = (owners[0], 1 - owners[0]);
    let daemons = |i: usize| if i == 0 { &a } else { &b };
    let started = Instant::now();
    let out = daemons(first).yardctl_raw(&["node", "drain"])?;
    ensure!(out.status.success(), "yardctl node drain: {}", out.stderr);
    poll_until(
        DRAIN_TAKEOVER_TIMEOUT,
        "the client to move to the other node",
        || {
            Ok(
                (lab.client_neighbour(vips[0])?.as_deref() == Some(macs[second].as_str()))
                    .then_some(()),
            )
        },
    )?;
    let moved = started.elapsed();
    poll_until(
        DRAIN_TAKEOVER_TIMEOUT,
        "a connection after the drain",
        || Ok(connects(&lab, vips[0], "after drain").then_some(())),
    )?;
    println!(
        "L2 drain takeover: {} ms (neighbour entry moved), {} ms (new connection served)",
        moved.as_millis(),
        started.elapsed().as_millis()
    );
    let drained = role(daemons(first), vips[0])?;
    ensure!(drained.state == "withdrawn", "drained node: {drained:?}");
    ensure!(role(daemons(second), vips[0])?.state == "announced");
    let out = daemons(first).yardctl_raw(&["node", "undrain"])?;
    ensure!(out.status.success(), "yardctl node undrain: {}", out.stderr);
    poll_until(ELECTION_TIMEOUT, "the owner back after undrain", || {
        Ok((sole_announcer(&[&a, &b], vips[0])? == Some(first)
            && lab.client_neighbour(vips[0])?.as_deref() == Some(macs[first].as_str()))
        .then_some(()))
    })?;

    // Kill the owner of the IPv4 VIP: the survivor takes over what it
    // announced once the dead time has passed.
    let lost: Vec<IpAddr> = vips
        .iter()
        .zip(&owners)
        .filter(|(_, owner)| **owner == first)
        .map(|(vip, _)| *vip)
        .collect();
    let (killed, survivor) = if first == 0 {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let started = Instant::now();
    killed.kill().context("kill -9 the announcer")?;
    for vip in &lost {
        let took = poll_until(TAKEOVER_TIMEOUT, &format!("a connection to {vip}"), || {
            Ok(connects(&lab, *vip, "after kill").then(|| started.elapsed()))
        })?;
        println!(
            "L2 takeover: {} ms ({vip}, from kill -9 of {} to a new connection served by {})",
            took.as_millis(),
            NODES[first].0,
            NODES[second].0
        );
        ensure!(role(survivor, *vip)?.state == "announced");
        let neighbour = lab.client_neighbour(*vip)?;
        ensure!(
            neighbour.as_deref() == Some(macs[second].as_str()),
            "the client has {vip} at {neighbour:?} after the takeover"
        );
    }
    let peers = survivor.yardctl_json("node")?["peers"].clone();
    ensure!(
        peers.as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == NODES[first].0 && p["state"] == "dead")),
        "the survivor should list {} as dead: {peers}",
        NODES[first].0
    );
    Ok(())
}

/// lb-a would own the IPv6 VIP (it does in the test above), but its config
/// does not serve it: its heartbeats do not list it, so lb-b announces it
/// alone and the client reaches it there, while lb-a keeps the IPv4 VIP.
#[test]
fn a_node_whose_config_lacks_a_vip_leaves_it_to_one_that_serves_it() -> Result<()> {
    let lab = L2Lab::new()?;
    let dir = TempDir::new("config")?;
    let both = dir.write("both.yaml", &announced_config())?;
    let ipv4_only = dir.write("ipv4-only.yaml", &announced_config_ipv4_only())?;
    let _servers = start_backends(&lab)?;
    let a = lab.start_node(0, &ipv4_only)?;
    let b = lab.start_node(1, &both)?;
    let mac_b = lab.node_mac(1)?;
    let vip6 = IpAddr::V6(VIP6);
    poll_until(ELECTION_TIMEOUT, "lb-b to announce the IPv6 VIP", || {
        Ok((role(&b, vip6)?.state == "announced").then_some(()))
    })?;
    poll_until(
        ELECTION_TIMEOUT,
        "lb-a to announce the IPv4 VIP alone",
        || sole_announcer(&[&a, &b], IpAddr::V4(VIP4)).map(|o| (o == Some(0)).then_some(())),
    )?;
    poll_until(ELECTION_TIMEOUT, "a connection to the IPv6 VIP", || {
        Ok(connects(&lab, vip6, "hello").then_some(()))
    })?;
    let neighbour = lab.client_neighbour(vip6)?;
    ensure!(
        neighbour.as_deref() == Some(mac_b.as_str()),
        "the client has {vip6} at {neighbour:?}, not at lb-b's {mac_b}"
    );
    let report = a.yardctl_json("node")?;
    ensure!(
        !report.to_string().contains(&VIP6.to_string()),
        "lb-a does not serve {vip6}, yet reports it: {report}"
    );

    // lb-a stops (SIGTERM): its last heartbeat says it leaves, so lb-b
    // takes the IPv4 VIP at once rather than after the dead time.
    let vip4 = IpAddr::V4(VIP4);
    poll_until(ELECTION_TIMEOUT, "a connection to the IPv4 VIP", || {
        Ok(connects(&lab, vip4, "hello").then_some(()))
    })?;
    let mac_a = lab.node_mac(0)?;
    let neighbour = lab.client_neighbour(vip4)?;
    ensure!(
        neighbour.as_deref() == Some(mac_a.as_str()),
        "the client has {vip4} at {neighbour:?}, not at lb-a's {mac_a}"
    );
    let mut a = a;
    let started = Instant::now();
    a.stop()?;
    poll_until(DRAIN_TAKEOVER_TIMEOUT, "the client to move to lb-b", || {
        Ok((lab.client_neighbour(vip4)?.as_deref() == Some(mac_b.as_str())).then_some(()))
    })?;
    println!(
        "L2 shutdown takeover: {} ms (from SIGTERM of lb-a to the client's entry at lb-b, \
         lb-a's own shutdown included)",
        started.elapsed().as_millis()
    );
    ensure!(role(&b, vip4)?.state == "announced");
    Ok(())
}
