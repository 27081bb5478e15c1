//! End to end over VLANs: the LB node's one interface carries the clients'
//! VLAN and the backends' VLAN as kernel VLAN links (`eth0.10`, `eth0.20`),
//! Switchyard runs on the parent `eth0`, and a client on VLAN 10 reaches
//! both backends on VLAN 20 through the VIP, TCP and UDP, its replies
//! coming back on VLAN 10. Needs root, the release binaries and a kernel
//! with 802.1Q VLAN links (`CONFIG_VLAN_8021Q`), hence ignored by `make
//! test`: run it with `cargo test --release -p switchyard-vm-tests --test
//! vlan -- --ignored` where the kernel has them.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{ensure, Result};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::vlan::{VlanLab, BACKENDS};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, DaemonOptions, EchoPair, GatewaySpec, TempDir,
};

/// Connections per protocol: enough that both backends answer (each new
/// flow picks one by hash; all on one would be a 1 in 2^15 chance).
const FLOWS: usize = 16;

#[test]
#[ignore = "needs 802.1Q VLAN links (CONFIG_VLAN_8021Q): --ignored where the kernel has them"]
fn a_client_on_one_vlan_reaches_both_backends_on_another_through_the_vip() -> Result<()> {
    let lab = VlanLab::build(None)?;
    let mut spec = GatewaySpec::demo();
    for listener in &mut spec.listeners {
        listener.backends = BACKENDS.iter().map(|(_, addr)| *addr).collect();
    }
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = lab
        .backends
        .iter()
        .map(|be| EchoPair::start(&be.ns, &be.name, TCP_TARGET_PORT, UDP_TARGET_PORT))
        .collect::<Result<Vec<_>>>()?;
    let daemon = Daemon::start(&lab.lb, &config, &DaemonOptions::new(&["eth0"]))?;

    let mut answered = BTreeSet::new();
    for n in 0..FLOWS {
        let text = format!("over vlan {n}");
        let tcp = tcp_exchange(&lab.client, SocketAddr::from((VIP, TCP_PORT)), &text)?;
        ensure!(tcp.echoed() == text, "TCP {tcp:?}");
        ensure!(tcp.from == SocketAddr::from((VIP, TCP_PORT)), "TCP {tcp:?}");
        let udp = udp_exchange(&lab.client, SocketAddr::from((VIP, UDP_PORT)), &text)?;
        ensure!(udp.echoed() == text, "UDP {udp:?}");
        ensure!(udp.from == SocketAddr::from((VIP, UDP_PORT)), "UDP {udp:?}");
        answered.insert(format!("tcp {}", tcp.server()));
        answered.insert(format!("udp {}", udp.server()));
    }
    let want: BTreeSet<String> = ["tcp be1", "tcp be2", "udp be1", "udp be2"]
        .map(String::from)
        .into();
    ensure!(answered == want, "answered: {answered:?}");

    let stats = daemon.stats()?;
    let tagged: u64 = stats
        .workers
        .iter()
        .map(|w| w.vlan.pushed + w.vlan.retagged)
        .sum();
    ensure!(tagged > 0, "no frame was tagged by a worker: {stats:?}");
    ensure!(
        !stats.drops.contains_key("egress_not_owned"),
        "drops: {:?}",
        stats.drops
    );
    Ok(())
}
