//! Path MTU through the load balancer: the backends' side has a smaller
//! MTU than the clients' (1400 behind 1500), and a client's datagram that
//! fits its own link but not the backends', sent with don't-fragment, is
//! answered by Switchyard with ICMP fragmentation-needed, so the client's
//! kernel lowers its path MTU to the VIP. Real namespaces, the real XDP
//! program and workers. Needs root and the release binaries.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::config::{TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{in_netns, GatewaySpec, TempDir, Topology};

const BACKEND_MTU: u32 = 1400;
const DEADLINE: Duration = Duration::from_secs(10);

/// `getsockopt(IP_MTU)`: the path MTU the kernel holds for a connected
/// socket's destination.
fn path_mtu(socket: &UdpSocket) -> Result<u32> {
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `mtu` is a live c_int and `len` says its size; the kernel
    // writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    ensure!(rc == 0, "IP_MTU: {}", std::io::Error::last_os_error());
    Ok(mtu as u32)
}

/// Sets don't-fragment on every datagram of `socket` (IP_PMTUDISC_DO).
fn dont_fragment(socket: &UdpSocket) -> Result<()> {
    let value: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: `value` is a live c_int and its size is passed; the kernel
    // only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "IP_MTU_DISCOVER: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

#[test]
fn a_df_datagram_too_big_for_the_backends_link_gets_the_client_frag_needed() -> Result<()> {
    let topo = Topology::two_arm(1)?;
    let mtu = BACKEND_MTU.to_string();
    topo.lb.ip(&["link", "set", "dev", "eth1", "mtu", &mtu])?;
    topo.switch.ip(&["link", "set", "dev", "lb", "mtu", &mtu])?;
    for be in &topo.backends {
        be.ns.ip(&["link", "set", "dev", "eth0", "mtu", &mtu])?;
        topo.switch
            .ip(&["link", "set", "dev", &be.name, "mtu", &mtu])?;
    }
    let spec = GatewaySpec::demo();
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&config)?;

    let vip = SocketAddr::from((VIP, UDP_PORT));
    let socket = in_netns(&topo.client, || -> Result<UdpSocket> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(vip)?;
        Ok(socket)
    })??;
    dont_fragment(&socket)?;
    ensure!(path_mtu(&socket)? == 1500, "the client's own link first");
    // A 1500-byte packet: fits the client's link, not the backends'.
    let datagram = vec![b'x'; 1500 - 28];
    let lowered = poll_until(DEADLINE, "the client's path MTU to the VIP to drop", || {
        // Until the kernel learns, it sends; after, it refuses (EMSGSIZE).
        let _ = socket.send(&datagram);
        let mtu = path_mtu(&socket)?;
        Ok((mtu < 1500).then_some(mtu))
    })
    .with_context(|| daemon.log())?;
    ensure!(lowered == BACKEND_MTU, "path MTU {lowered}");

    let stats = daemon.stats()?;
    let answered: u64 = stats.workers.iter().map(|w| w.too_big_answered).sum();
    ensure!(answered >= 1, "no ICMP answer counted: {stats:?}");
    ensure!(
        stats.drops.get("frame_too_big").copied().unwrap_or(0) >= answered,
        "drops: {:?}",
        stats.drops
    );

    // A datagram of the new path MTU crosses and is echoed.
    let fits = vec![b'y'; BACKEND_MTU as usize - 28 - 16];
    poll_until(DEADLINE, "an echo of a datagram that fits", || {
        // The ICMP error also left a pending EMSGSIZE on the connected
        // socket, which the next call reports once.
        let _ = socket.send(&fits);
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 2048];
        Ok(socket.recv(&mut buf).ok().filter(|&n| n >= fits.len()))
    })?;
    Ok(())
}
