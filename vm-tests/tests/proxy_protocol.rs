//! `fullnat` with `proxyProtocol: V2`, end to end, in a lab as a user
//! builds it (kernel-default veths: partial checksums, GRO off): nginx
//! backends that read the header learn each client's address and port and
//! the VIP it reached, although the connection itself comes from the LB's
//! SNAT address. A server that speaks first gets the header without the
//! client sending a byte; megabytes both ways arrive whole, through the
//! moved sequence numbers. IPv4 and IPv6, real curl and nginx.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_vm_tests::client::tcp_connect;
use switchyard_vm_tests::config::{
    ListenerSpec, Protocol, DEMO_SERVICE, TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT,
};
use switchyard_vm_tests::fullnat::{
    backends_without_route_through_lb, with_forwarding, SNAT_PORTS,
};
use switchyard_vm_tests::nginx::Nginx;
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::process::run_with_timeout;
use switchyard_vm_tests::topology::{
    BACKENDS6, CLIENT_ADDR, CLIENT_ADDR6, LB_BACKEND_SIDE_ADDR, LB_BACKEND_SIDE_ADDR6, VIP, VIP6,
};
use switchyard_vm_tests::{
    udp_exchange, Daemon, DaemonOptions, GatewaySpec, Netns, Offloads, TempDir, Topology,
    UdpEchoServer, IO_TIMEOUT,
};

/// The listener whose backends serve files over HTTP.
const FILES_PORT: u16 = 81;
const FILES_TARGET_PORT: u16 = 8081;
/// Connections to the speaking-first server per family.
const GREETINGS: usize = 10;
/// Bytes uploaded and downloaded per family: thousands of segments.
const BULK_BYTES: usize = 3 << 20;
const CURL_TIMEOUT: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(20);

/// What a greeting names: the client and VIP the header carried, and the
/// peer the backend's socket saw.
struct Greeting {
    backend: String,
    client: SocketAddr,
    vip: SocketAddr,
    peer: IpAddr,
}

fn parse_greeting(text: &str) -> Result<Greeting> {
    let mut words = text.split_whitespace();
    let backend = words.next().context("backend name")?.to_owned();
    let mut field = |name: &str| -> Result<String> {
        let word = words
            .next()
            .with_context(|| format!("{name} in {text:?}"))?;
        Ok(word
            .strip_prefix(&format!("{name}="))
            .with_context(|| format!("{name} in {text:?}"))?
            .to_owned())
    };
    let endpoint = |s: String| -> Result<SocketAddr> {
        // nginx writes an IPv6 address without brackets, then :port.
        let (address, port) = s.rsplit_once(':').context("address:port")?;
        Ok(SocketAddr::new(address.parse()?, port.parse()?))
    };
    let client = endpoint(field("client")?)?;
    let vip = endpoint(field("vip")?)?;
    let peer = field("peer")?.parse()?;
    Ok(Greeting {
        backend,
        client,
        vip,
        peer,
    })
}

/// Connects and only reads: the backend speaks first and closes.
fn greeting(client: &Netns, vip: SocketAddr) -> Result<(SocketAddr, Greeting)> {
    let mut stream = tcp_connect(client, vip, IO_TIMEOUT)?;
    let local = stream.local_addr()?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading the greeting {local} -> {vip}"))?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok((local, parse_greeting(&text)?))
}

fn url(vip: IpAddr, path: &str) -> String {
    match vip {
        IpAddr::V4(v4) => format!("http://{v4}:{FILES_PORT}{path}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{FILES_PORT}{path}"),
    }
}

fn curl(client: &Netns, args: &[&str]) -> Result<String> {
    let mut command = client.command("curl");
    command.args(["--silent", "--show-error", "--fail", "--max-time", "50"]);
    command.args(args);
    let out = run_with_timeout(&mut command, CURL_TIMEOUT)?;
    ensure!(out.status.success(), "curl {args:?}: {}", out.stderr);
    Ok(out.stdout)
}

#[test]
fn backends_reading_the_proxy_protocol_learn_each_client_through_fullnat() -> Result<()> {
    let topo = Topology::single_arm_with(1, Offloads::KernelDefaults)?.with_ipv6()?;
    backends_without_route_through_lb(&topo, true)?;
    let mut spec = GatewaySpec::demo_dual_stack();
    let tcp = spec.listeners[0].clone();
    spec.listeners.push(ListenerSpec {
        name: "tcp-files".into(),
        route: "files-tcp".into(),
        protocol: Protocol::Tcp,
        port: FILES_PORT,
        target_port: FILES_TARGET_PORT,
        service: DEMO_SERVICE.into(),
        backends: tcp.backends,
    });
    let dir = TempDir::new("config")?;
    let config = dir.write(
        "gateway.yaml",
        &with_forwarding(&spec, "{mode: fullnat, proxyProtocol: V2}"),
    )?;
    let mut servers = Vec::new();
    let mut udp = Vec::new();
    for (backend, (_, addr6)) in topo.backends.iter().zip(BACKENDS6) {
        servers.push(Nginx::start(
            &backend.ns,
            &backend.name,
            TCP_TARGET_PORT,
            FILES_TARGET_PORT,
        )?);
        for address in [IpAddr::from(backend.addr), IpAddr::V6(addr6)] {
            let at = SocketAddr::new(address, UDP_TARGET_PORT);
            udp.push(UdpEchoServer::start_on(&backend.ns, &backend.name, at)?);
        }
    }
    let options = DaemonOptions::new(topo.lb_interfaces())
        .queues(topo.queues)
        .arg("--snat-ports")
        .arg(SNAT_PORTS);
    let daemon = Daemon::start(&topo.lb, &config, &options)?;

    let mut answered = BTreeSet::new();
    let mut connections = 0u64;
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        let snat = match vip {
            IpAddr::V4(_) => IpAddr::V4(LB_BACKEND_SIDE_ADDR),
            IpAddr::V6(_) => IpAddr::V6(LB_BACKEND_SIDE_ADDR6),
        };
        // The server speaks first: the header reaches it on the
        // handshake's ACK, before any client byte.
        for _ in 0..GREETINGS {
            let (local, seen) = greeting(&topo.client, (vip, TCP_PORT).into())?;
            connections += 1;
            ensure!(
                seen.client == local
                    && seen.vip == SocketAddr::new(vip, TCP_PORT)
                    && seen.peer == snat,
                "{} saw client {}, VIP {}, peer {}: expected {local}, {vip}:{TCP_PORT}, {snat}",
                seen.backend,
                seen.client,
                seen.vip,
                seen.peer
            );
            answered.insert(seen.backend);
        }

        // The client speaks first: the header goes ahead of its request.
        let who = curl(&topo.client, &[&url(vip, "/client")])?;
        connections += 1;
        let client_address = who.split_whitespace().nth(1).unwrap_or_default();
        ensure!(
            client_address.starts_with(&match vip {
                IpAddr::V4(_) => format!("{CLIENT_ADDR}:"),
                IpAddr::V6(_) => format!("{CLIENT_ADDR6}:"),
            }),
            "GET /client answered {who:?}"
        );

        // Megabytes up and back down, through moved sequence numbers.
        let name = format!("blob-{}", if vip.is_ipv6() { 6 } else { 4 });
        let blob: Vec<u8> = (0..BULK_BYTES)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let upload = dir.path().join(&name);
        std::fs::write(&upload, &blob)?;
        let upload = upload.display().to_string();
        curl(
            &topo.client,
            &[
                "--upload-file",
                &upload,
                &url(vip, &format!("/files/{name}")),
            ],
        )?;
        connections += 1;
        let stored: Vec<_> = servers.iter().filter_map(|s| s.uploaded(&name)).collect();
        ensure!(
            stored.len() == 1 && stored[0] == blob,
            "the upload reached {} backends, intact: {:?}",
            stored.len(),
            stored.iter().map(|s| s == &blob).collect::<Vec<_>>()
        );
        let download = dir.path().join(format!("{name}.back"));
        let download_path = download.display().to_string();
        // Whichever backend takes the download: both hold the file.
        for server in &servers {
            if server.uploaded(&name).is_none() {
                server.put(&name, &blob)?;
            }
        }
        curl(
            &topo.client,
            &[
                "--output",
                &download_path,
                &url(vip, &format!("/files/{name}")),
            ],
        )?;
        connections += 1;
        ensure!(
            std::fs::read(&download)? == blob,
            "the download came back changed"
        );

        // UDP listeners of the mode send no header.
        let reply = udp_exchange(&topo.client, (vip, UDP_PORT).into(), "plain")?;
        ensure!(reply.text.ends_with(" plain"), "{reply:?}");
    }
    ensure!(
        answered.len() == 2,
        "both backends answer, not only {answered:?}"
    );

    // One header per connection (a segment carrying one may be sent again
    // only when the first was lost), no connection refused for want of its
    // start, nothing the LB could not reverse.
    let stats = poll_until(DEADLINE, "every connection counted", || {
        let stats = daemon.stats()?;
        let headers: u64 = stats.workers.iter().map(|w| w.proxy_headers).sum();
        Ok((headers >= connections).then_some(stats))
    })?;
    for reason in ["proxy_start_unseen", "reply_without_flow", "frame_too_big"] {
        ensure!(
            stats.drops.get(reason).copied().unwrap_or(0) == 0,
            "{reason}: {:?}",
            stats.drops
        );
    }
    Ok(())
}
