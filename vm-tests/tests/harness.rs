//! Self-tests of the namespace harness, without switchyard: topologies route,
//! servers answer and record peers, and every guard cleans up, also when a
//! test panics. The daemon guard is exercised with stand-in scripts.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use switchyard_vm_tests::topology::{BACKEND_NET, CLIENT_ADDR, LB_CLIENT_SIDE_ADDR};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, xdp_attached, Daemon, DaemonOptions, Netns, TcpEchoServer, TempDir,
    Topology,
};

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

/// Lets the LB node route like a plain router, so the client can reach the
/// backends' own addresses with no VIP involved.
fn route_through_lb(topo: &Topology) -> Result<()> {
    topo.lb.sysctl("net/ipv4/ip_forward", "1")?;
    topo.client.ip(&[
        "route",
        "add",
        BACKEND_NET,
        "via",
        &LB_CLIENT_SIDE_ADDR.to_string(),
    ])?;
    Ok(())
}

fn assert_routes_to_backends(topo: &Topology) -> Result<()> {
    let servers = topo.start_backends(TCP_PORT, UDP_PORT)?;
    for (be, pair) in topo.backends.iter().zip(&servers) {
        let to = SocketAddr::from((be.addr, TCP_PORT));
        let reply = tcp_exchange(&topo.client, to, "hello")?;
        assert_eq!(
            reply.text,
            format!("{} hello", be.name),
            "TCP reply from {to}"
        );

        let to = SocketAddr::from((be.addr, UDP_PORT));
        let reply = udp_exchange(&topo.client, to, "ping")?;
        assert_eq!(
            reply.text,
            format!("{} ping", be.name),
            "UDP reply from {to}"
        );
        assert_eq!(reply.from, to, "UDP reply source");

        let tcp_peers = pair.tcp.peers();
        let udp_peers = pair.udp.peers();
        assert_eq!(tcp_peers.len(), 1, "{} TCP peers {tcp_peers:?}", be.name);
        assert_eq!(
            tcp_peers[0].ip(),
            CLIENT_ADDR,
            "{} saw TCP from {tcp_peers:?}",
            be.name
        );
        assert_eq!(udp_peers.len(), 1, "{} UDP peers {udp_peers:?}", be.name);
        assert_eq!(
            udp_peers[0].ip(),
            CLIENT_ADDR,
            "{} saw UDP from {udp_peers:?}",
            be.name
        );
    }
    Ok(())
}

#[test]
fn topology_routes_without_switchyard() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    route_through_lb(&topo)?;
    assert_routes_to_backends(&topo)?;

    // The LB node's own address answers too.
    let own = SocketAddr::from((LB_CLIENT_SIDE_ADDR, 2222));
    let _lb_server = TcpEchoServer::start_on(&topo.lb, "lb", own)?;
    assert_eq!(tcp_exchange(&topo.client, own, "hi")?.text, "lb hi");
    Ok(())
}

#[test]
fn two_arm_topology_routes_without_switchyard() -> Result<()> {
    let topo = Topology::two_arm(2)?;
    assert_eq!(topo.lb_interfaces(), ["eth0", "eth1"]);
    route_through_lb(&topo)?;
    assert_routes_to_backends(&topo)
}

#[test]
fn lb_node_does_not_forward_by_default() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    // Only the client's route; ip_forward stays off, so nothing gets through.
    topo.client.ip(&[
        "route",
        "add",
        BACKEND_NET,
        "via",
        &LB_CLIENT_SIDE_ADDR.to_string(),
    ])?;
    let _servers = topo.start_backends(TCP_PORT, UDP_PORT)?;
    let to = SocketAddr::from((topo.backends[0].addr, UDP_PORT));
    assert!(
        udp_exchange(&topo.client, to, "ping").is_err(),
        "a reply came through a non-forwarding LB"
    );
    Ok(())
}

#[test]
fn queues_are_set_on_every_veth_end() -> Result<()> {
    let topo = Topology::single_arm(2)?;
    for (ns, dev) in [
        (&topo.lb, "eth0"),
        (&topo.client, "eth0"),
        (&topo.switch, "lb"),
        (&topo.backends[1].ns, "eth0"),
    ] {
        let out = ns.ip(&["-j", "-d", "link", "show", "dev", dev])?;
        let link: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(link[0]["num_rx_queues"], 2, "{dev} in {}", ns.name());
        assert_eq!(link[0]["num_tx_queues"], 2, "{dev} in {}", ns.name());
    }
    assert!(!xdp_attached(&topo.lb, "eth0")?);
    Ok(())
}

#[test]
fn namespace_names_are_unique_and_prefixed() -> Result<()> {
    let a = Netns::new("x")?;
    let b = Netns::new("x")?;
    assert_ne!(a.name(), b.name());
    let prefix = format!("swy-{}-", std::process::id());
    assert!(a.name().starts_with(&prefix), "{}", a.name());
    Ok(())
}

#[test]
fn guards_clean_up_even_when_a_test_panics() {
    let mut names = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::single_arm(1).expect("topology");
        names = topo.namespace_names();
        let _servers = topo.start_backends(TCP_PORT, UDP_PORT).expect("servers");
        panic!("deliberate panic with everything running");
    }));
    assert!(outcome.is_err());
    assert_eq!(names.len(), 5);
    for name in names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}

// The daemon guard, driven by stand-in scripts for switchyard and yardctl.

fn script(dir: &TempDir, name: &str, body: &str) -> Result<PathBuf> {
    let path = dir.write(name, &format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn fake_options(switchyard: PathBuf, yardctl: PathBuf) -> DaemonOptions {
    let mut opts = DaemonOptions::new(&["eth0"]);
    opts.switchyard = Some(switchyard);
    opts.yardctl = Some(yardctl);
    opts.ready_timeout = Duration::from_secs(2);
    opts
}

#[test]
fn daemon_guard_reports_early_exit_with_the_daemon_log() -> Result<()> {
    let ns = Netns::new("lb")?;
    let dir = TempDir::new("fake")?;
    let switchyard = script(
        &dir,
        "switchyard",
        "echo \"fake switchyard: $*\" >&2\nexit 3",
    )?;
    let yardctl = script(&dir, "yardctl", "exit 1")?;
    let err = Daemon::start(
        &ns,
        Path::new("/dev/null"),
        &fake_options(switchyard, yardctl),
    )
    .expect_err("a daemon that exits is not ready");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited before it was ready"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(
        msg.contains("fake switchyard: run --config /dev/null --interface eth0"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn daemon_guard_kills_a_daemon_that_never_gets_ready() -> Result<()> {
    let ns = Netns::new("lb")?;
    let dir = TempDir::new("fake")?;
    let pid_file = dir.path().join("pid");
    let switchyard = script(
        &dir,
        "switchyard",
        &format!(
            "echo $$ > {}\necho 'fake: starting' >&2\nexec sleep 600",
            pid_file.display()
        ),
    )?;
    let yardctl = script(&dir, "yardctl", "echo 'no socket' >&2\nexit 1")?;
    let err = Daemon::start(
        &ns,
        Path::new("/dev/null"),
        &fake_options(switchyard, yardctl),
    )
    .expect_err("never ready");
    let msg = format!("{err:#}");
    assert!(msg.contains("timed out"), "{msg}");
    assert!(msg.contains("fake: starting"), "{msg}");
    assert!(msg.contains("no socket"), "{msg}");
    let pid = std::fs::read_to_string(&pid_file)?.trim().to_owned();
    assert!(
        !Path::new("/proc").join(&pid).exists(),
        "PID {pid} still exists"
    );
    Ok(())
}

#[test]
fn daemon_guard_stops_with_sigterm_and_runs_yardctl() -> Result<()> {
    let ns = Netns::new("lb")?;
    let dir = TempDir::new("fake")?;
    // Ready only once the trap is set, as a real daemon is ready only once
    // its signal handling is.
    let ready = dir.path().join("ready");
    let switchyard = script(
        &dir,
        "switchyard",
        &format!(
            "trap 'echo fake: got TERM >&2; exit 0' TERM\ntouch {}\nwhile :; do sleep 0.05; done",
            ready.display()
        ),
    )?;
    let yardctl = script(
        &dir,
        "yardctl",
        &format!(
            "[ -e {} ] || exit 1\necho \"{{\\\"args\\\": \\\"$*\\\"}}\"",
            ready.display()
        ),
    )?;
    let mut daemon = Daemon::start(
        &ns,
        Path::new("/dev/null"),
        &fake_options(switchyard, yardctl),
    )?;
    assert!(daemon.is_running());
    let value = daemon.yardctl_json("stats")?;
    let expected = format!(
        "--control-socket {} stats -o json",
        daemon.control_socket().display()
    );
    assert_eq!(value["args"], expected.as_str());
    let status = daemon.stop()?;
    assert!(status.success(), "{status}");
    assert!(daemon.log().contains("fake: got TERM"), "{}", daemon.log());
    assert!(!daemon.is_running());
    Ok(())
}

#[test]
fn xdp_attached_sees_a_program_and_its_removal() -> Result<()> {
    let dir = TempDir::new("xdp")?;
    let source = dir.write(
        "pass.c",
        "#include <linux/bpf.h>\n\
         __attribute__((section(\"xdp\"), used)) int pass(struct xdp_md *ctx) { return XDP_PASS; }\n\
         char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )?;
    let object = dir.path().join("pass.o");
    let built = std::process::Command::new("clang")
        .args([
            "-O2",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .output()?;
    assert!(
        built.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let topo = Topology::single_arm(1)?;
    assert!(!xdp_attached(&topo.lb, "eth0")?);
    let obj = object.to_str().expect("utf-8 temp path");
    topo.lb.ip(&[
        "link", "set", "dev", "eth0", "xdp", "obj", obj, "sec", "xdp",
    ])?;
    assert!(xdp_attached(&topo.lb, "eth0")?);
    assert_eq!(topo.lb_interfaces_with_xdp()?, ["eth0"]);
    topo.lb.ip(&["link", "set", "dev", "eth0", "xdp", "off"])?;
    assert!(!xdp_attached(&topo.lb, "eth0")?);
    Ok(())
}
