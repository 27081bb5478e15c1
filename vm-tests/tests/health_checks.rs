//! End-to-end: active health checks through the real daemon. Two backends
//! behind the demo listeners; one's server is stopped and its check takes
//! it out: new connections all go to the other, connections established to
//! the survivor carry on, and the stopped one comes back once its server
//! does. Shown for TCP, UDP and HTTP probes; an HTTP 500 is unhealthy for
//! an HTTP probe and healthy for a TCP one; a backend that flaps is held
//! out as `flapping` instead of taken in and out with every probe. The
//! probes' own answers never reach the workers: no flow of the LB's own
//! address ever shows, and probes pass (an answer the workers took would
//! never reach the probing socket). The UDP and IPv6 cases run on veths
//! with the kernel's default offloads, the lab a user builds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_proto::ExplainReport;
use switchyard_vm_tests::client::{self, tcp_exchange_keep_open};
use switchyard_vm_tests::config::{
    DEMO_NAMESPACE, TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_LISTENER, UDP_PORT,
    UDP_TARGET_PORT,
};
use switchyard_vm_tests::health::{backend_info, health_of, health_policy, HealthEndpoint};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{
    Offloads, BACKENDS, BACKENDS6, CLIENT_ADDR, LB_BACKEND_SIDE_ADDR, VIP, VIP6,
};
use switchyard_vm_tests::{
    tcp_exchange, udp_exchange, Daemon, GatewaySpec, TcpEchoServer, TempDir, Topology,
    UdpEchoServer,
};

/// Probe timing of every test: fast enough for a test, thresholds of 2 so
/// that one lost probe decides nothing.
const INTERVAL_MS: u64 = 300;
const THRESHOLD: u64 = 2;
/// The port of the HTTP health endpoints, beside the echo servers'.
const HEALTH_PORT: u16 = 8081;
/// Bound on a verdict: `interval × threshold` plus one interval, as
/// promised, plus room for a loaded machine's scheduling.
const VERDICT_WITHIN: Duration = Duration::from_millis(INTERVAL_MS * (THRESHOLD + 1) + 5_000);
/// Connections (or UDP flows) opened to see where new flows go.
const PROBE_FLOWS: usize = 24;

struct Lab {
    topo: Topology,
    daemon: Daemon,
    spec: GatewaySpec,
    _dir: TempDir,
}

fn lab(policies: &str) -> Result<Lab> {
    lab_on(Topology::single_arm(1)?, GatewaySpec::demo(), policies)
}

fn lab_on(topo: Topology, spec: GatewaySpec, policies: &str) -> Result<Lab> {
    let dir = TempDir::new("config")?;
    let config = dir.write("gateway.yaml", &format!("{}{policies}", spec.to_yaml()))?;
    let daemon = topo.start_daemon(&config)?;
    Ok(Lab {
        topo,
        daemon,
        spec,
        _dir: dir,
    })
}

fn active(kind: &str, extra: &str) -> String {
    format!(
        "active:\n  type: {kind}\n  interval: {INTERVAL_MS}ms\n  timeout: 200ms\n  \
         healthyThreshold: {THRESHOLD}\n  unhealthyThreshold: {THRESHOLD}\n{extra}"
    )
}

fn backend(i: usize, port: u16) -> String {
    SocketAddr::new(IpAddr::V4(BACKENDS[i].1), port).to_string()
}

impl Lab {
    fn listener(&self, name: &str) -> String {
        self.spec.listener_id(name)
    }

    /// Polls until `backend` on `listener` has `health`; returns how long
    /// that took.
    fn await_health(&self, listener: &str, backend: &str, health: &str) -> Result<Duration> {
        let start = Instant::now();
        let listener = self.listener(listener);
        poll_until(
            VERDICT_WITHIN,
            &format!("{backend} on {listener} to be {health}"),
            || Ok((health_of(&self.daemon, &listener, backend)? == health).then_some(())),
        )
        .with_context(|| self.daemon.log())?;
        Ok(start.elapsed())
    }

    /// Names of the servers answering `PROBE_FLOWS` new TCP connections.
    fn tcp_answers(&self) -> Result<Vec<String>> {
        let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT);
        (0..PROBE_FLOWS)
            .map(|i| {
                Ok(tcp_exchange(&self.topo.client, vip, &format!("new-{i}"))?
                    .server()
                    .to_owned())
            })
            .collect()
    }

    fn udp_answers(&self) -> Result<Vec<String>> {
        let vip = SocketAddr::new(IpAddr::V4(VIP), UDP_PORT);
        (0..PROBE_FLOWS)
            .map(|i| {
                Ok(udp_exchange(&self.topo.client, vip, &format!("new-{i}"))?
                    .server()
                    .to_owned())
            })
            .collect()
    }

    /// `yardctl explain` of a 5-tuple whose slot is `skipped`'s in the
    /// config says that health moved it, and to which backend.
    fn explain_names_the_skipped_backend(&self, skipped: &str) -> Result<()> {
        let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT).to_string();
        for port in 40000..40200u16 {
            let client = format!("{CLIENT_ADDR}:{port}");
            let report: ExplainReport =
                self.daemon.yardctl_as(&["explain", "tcp", &client, &vip])?;
            let Some(found) = &report.new_flow.skipped else {
                continue;
            };
            ensure!(
                found.backend == skipped && found.health == "unhealthy",
                "{report:?}"
            );
            ensure!(
                report.new_flow.backend.as_deref() != Some(skipped)
                    && report
                        .new_flow
                        .reason
                        .contains("health checks gave it to another"),
                "{report:?}"
            );
            return Ok(());
        }
        anyhow::bail!("no client port of 200 explained as moved off {skipped}")
    }

    /// No flow of the workers comes from one of the LB's own addresses:
    /// the probes' connections were never taken for clients'.
    fn no_probe_flows(&self) -> Result<()> {
        let flows = self.daemon.flows()?;
        let own = LB_BACKEND_SIDE_ADDR.to_string();
        ensure!(
            !flows.flows.iter().any(|f| f.client.starts_with(&own)),
            "a probe shows as a flow: {:?}",
            flows.flows
        );
        Ok(())
    }
}

fn all_from(answers: &[String], server: &str) -> Result<()> {
    ensure!(
        answers.iter().all(|a| a == server),
        "new flows went to {answers:?}, not all to {server}"
    );
    Ok(())
}

fn some_from(answers: &[String], server: &str) -> Result<()> {
    ensure!(
        answers.iter().any(|a| a == server),
        "no new flow reached {server}: {answers:?}"
    );
    Ok(())
}

/// A stopped TCP server: out within the promised time, reported with the
/// probes that failed, no new connection reaches it, an established one
/// to the other backend carries on; back after its server is.
#[test]
fn a_tcp_probe_takes_a_stopped_backend_out_and_brings_it_back() -> Result<()> {
    let policy = health_policy(
        "echo-health",
        DEMO_NAMESPACE,
        "TCPRoute",
        "echo-tcp",
        &active("TCP", ""),
    );
    let lab = lab(&policy)?;
    let (be1, be2) = (&lab.topo.backends[0], &lab.topo.backends[1]);
    let _s1 = TcpEchoServer::start(&be1.ns, &be1.name, TCP_TARGET_PORT)?;
    let mut s2 = Some(TcpEchoServer::start(&be2.ns, &be2.name, TCP_TARGET_PORT)?);
    let (b1, b2) = (backend(0, TCP_TARGET_PORT), backend(1, TCP_TARGET_PORT));
    lab.await_health(TCP_LISTENER, &b1, "healthy")?;
    lab.await_health(TCP_LISTENER, &b2, "healthy")?;
    let answers = lab.tcp_answers()?;
    some_from(&answers, &be2.name)?;

    // An established connection to be1, the survivor.
    let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT);
    let mut established = poll_until(Duration::from_secs(10), "a connection to be1", || {
        let (stream, reply) = tcp_exchange_keep_open(&lab.topo.client, vip, "hello|")?;
        Ok((reply.server() == be1.name).then_some(stream))
    })?;

    s2.take();
    let took = lab.await_health(TCP_LISTENER, &b2, "unhealthy")?;
    let info = backend_info(&lab.daemon, &lab.listener(TCP_LISTENER), &b2)?;
    eprintln!("be2 unhealthy {took:?} after its server stopped: {info:?}");
    ensure!(info.state == "unhealthy" && info.slots == 0, "{info:?}");
    let reason = info.health_reason.unwrap_or_default();
    ensure!(
        reason.starts_with(&format!("{THRESHOLD} probes failed in a row")),
        "reason {reason:?}"
    );
    all_from(&lab.tcp_answers()?, &be1.name)?;
    lab.explain_names_the_skipped_backend(&b2)?;
    let text = client::echo(&mut established, "still|", client::IO_TIMEOUT)
        .context("the connection established to be1 before be2 went down")?;
    ensure!(text.starts_with(&be1.name), "{text:?}");

    let _s2 = TcpEchoServer::start(&be2.ns, &be2.name, TCP_TARGET_PORT)?;
    lab.await_health(TCP_LISTENER, &b2, "healthy")?;
    some_from(&lab.tcp_answers()?, &be2.name)?;
    let text = client::echo(&mut established, "after|", client::IO_TIMEOUT)?;
    ensure!(text.starts_with(&be1.name), "{text:?}");
    lab.no_probe_flows()
}

/// UDP: a probe answered by the echo server passes; once the server is
/// gone the backend answers ICMP port unreachable and is out.
#[test]
fn a_udp_probe_takes_a_stopped_backend_out_and_brings_it_back() -> Result<()> {
    let check = active(
        "UDP",
        "  udp:\n    send: {type: Text, text: ping}\n    receive: {type: Text, text: ping}\n",
    );
    // The lab a user builds: veths as the kernel makes them.
    let lab = lab_on(
        Topology::single_arm_with(1, Offloads::KernelDefaults)?,
        GatewaySpec::demo(),
        &health_policy(
            "echo-health",
            DEMO_NAMESPACE,
            "UDPRoute",
            "echo-udp",
            &check,
        ),
    )?;
    let (be1, be2) = (&lab.topo.backends[0], &lab.topo.backends[1]);
    let _s1 = UdpEchoServer::start(&be1.ns, &be1.name, UDP_TARGET_PORT)?;
    let s2 = UdpEchoServer::start(&be2.ns, &be2.name, UDP_TARGET_PORT)?;
    let (b1, b2) = (backend(0, UDP_TARGET_PORT), backend(1, UDP_TARGET_PORT));
    lab.await_health(UDP_LISTENER, &b1, "healthy")?;
    lab.await_health(UDP_LISTENER, &b2, "healthy")?;
    some_from(&lab.udp_answers()?, &be2.name)?;

    drop(s2);
    lab.await_health(UDP_LISTENER, &b2, "unhealthy")?;
    all_from(&lab.udp_answers()?, &be1.name)?;

    let _s2 = UdpEchoServer::start(&be2.ns, &be2.name, UDP_TARGET_PORT)?;
    lab.await_health(UDP_LISTENER, &b2, "healthy")?;
    some_from(&lab.udp_answers()?, &be2.name)?;
    lab.no_probe_flows()
}

/// HTTP on a health port of its own: a stopped endpoint and one answering
/// 500 are both out for the HTTP probe, while a TCP probe of the same port
/// (on the UDP listener) finds the 500 one healthy: it accepts.
#[test]
fn an_http_probe_wants_its_status_and_a_tcp_probe_only_a_connection() -> Result<()> {
    let http = active(
        "HTTP",
        &format!("  port: {HEALTH_PORT}\n  http: {{path: /healthz, expectedStatuses: [200]}}\n"),
    );
    let tcp = active("TCP", &format!("  port: {HEALTH_PORT}\n"));
    let policies = format!(
        "{}{}",
        health_policy("http-health", DEMO_NAMESPACE, "TCPRoute", "echo-tcp", &http),
        health_policy("tcp-health", DEMO_NAMESPACE, "UDPRoute", "echo-udp", &tcp),
    );
    let lab = lab(&policies)?;
    let (be1, be2) = (&lab.topo.backends[0], &lab.topo.backends[1]);
    let _s1 = TcpEchoServer::start(&be1.ns, &be1.name, TCP_TARGET_PORT)?;
    let _s2 = TcpEchoServer::start(&be2.ns, &be2.name, TCP_TARGET_PORT)?;
    let _u1 = UdpEchoServer::start(&be1.ns, &be1.name, UDP_TARGET_PORT)?;
    let _u2 = UdpEchoServer::start(&be2.ns, &be2.name, UDP_TARGET_PORT)?;
    let at = |i: usize| SocketAddr::new(IpAddr::V4(BACKENDS[i].1), HEALTH_PORT);
    let _h1 = HealthEndpoint::start(&be1.ns, at(0), 200)?;
    let h2 = HealthEndpoint::start(&be2.ns, at(1), 200)?;
    let (b1, b2) = (backend(0, TCP_TARGET_PORT), backend(1, TCP_TARGET_PORT));
    lab.await_health(TCP_LISTENER, &b1, "healthy")?;
    lab.await_health(TCP_LISTENER, &b2, "healthy")?;
    some_from(&lab.tcp_answers()?, &be2.name)?;

    // Stopped: out, and new connections go to be1 only.
    drop(h2);
    lab.await_health(TCP_LISTENER, &b2, "unhealthy")?;
    all_from(&lab.tcp_answers()?, &be1.name)?;
    let h2 = HealthEndpoint::start(&be2.ns, at(1), 200)?;
    lab.await_health(TCP_LISTENER, &b2, "healthy")?;
    some_from(&lab.tcp_answers()?, &be2.name)?;

    // 500: out for HTTP, in for TCP.
    h2.answer(500);
    lab.await_health(TCP_LISTENER, &b2, "unhealthy")?;
    let last = backend_info(&lab.daemon, &lab.listener(TCP_LISTENER), &b2)?.last_probe;
    ensure!(
        last.as_deref().is_some_and(|l| l.contains("500")),
        "last probe {last:?}"
    );
    all_from(&lab.tcp_answers()?, &be1.name)?;
    let udp_b2 = backend(1, UDP_TARGET_PORT);
    ensure!(
        health_of(&lab.daemon, &lab.listener(UDP_LISTENER), &udp_b2)? == "healthy",
        "the TCP probe of the same port should pass"
    );
    some_from(&lab.udp_answers()?, &be2.name)?;
    lab.no_probe_flows()
}

/// Up 1 s, down 1 s: the backend is held out as `flapping` and stays so
/// while it flaps, instead of taking new flows every other second; the
/// connection established to the other backend never notices.
#[test]
fn a_flapping_backend_is_held_out_and_the_others_connections_stay() -> Result<()> {
    let check = "active:\n  type: TCP\n  interval: 200ms\n  timeout: 150ms\n  \
                 healthyThreshold: 2\n  unhealthyThreshold: 2\n";
    let lab = lab(&health_policy(
        "echo-health",
        DEMO_NAMESPACE,
        "TCPRoute",
        "echo-tcp",
        check,
    ))?;
    let (be1, be2) = (&lab.topo.backends[0], &lab.topo.backends[1]);
    let _s1 = TcpEchoServer::start(&be1.ns, &be1.name, TCP_TARGET_PORT)?;
    let b2 = backend(1, TCP_TARGET_PORT);
    let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT);
    let mut established = {
        let _s2 = TcpEchoServer::start(&be2.ns, &be2.name, TCP_TARGET_PORT)?;
        lab.await_health(TCP_LISTENER, &b2, "healthy")?;
        poll_until(Duration::from_secs(10), "a connection to be1", || {
            let (stream, reply) = tcp_exchange_keep_open(&lab.topo.client, vip, "hello|")?;
            Ok((reply.server() == be1.name).then_some(stream))
        })?
    };
    // be2's server is down now; it flaps from here on.
    let flapping = {
        let start = Instant::now();
        let mut seen_flapping = None;
        let mut up: Option<TcpEchoServer> = None;
        let mut samples = Vec::new();
        while start.elapsed() < Duration::from_secs(20) {
            let second = start.elapsed().as_secs();
            let want_up = second % 2 == 1;
            if want_up && up.is_none() {
                up = Some(TcpEchoServer::start(&be2.ns, &be2.name, TCP_TARGET_PORT)?);
            } else if !want_up && up.is_some() {
                up = None;
            }
            let health = health_of(&lab.daemon, &lab.listener(TCP_LISTENER), &b2)?;
            if health == "flapping" && seen_flapping.is_none() {
                seen_flapping = Some(start.elapsed());
            }
            if seen_flapping.is_some() {
                samples.push(health);
                if samples.len() >= 40 {
                    break;
                }
            }
            // The flapping's own clock, not a wait for readiness.
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(up);
        ensure!(
            seen_flapping.is_some(),
            "be2 never reported flapping in 20 s: {}",
            lab.daemon.log()
        );
        samples
    };
    ensure!(
        flapping.iter().all(|h| h == "flapping"),
        "once flapping, be2 should stay held out while it flaps: {flapping:?}"
    );
    let text = client::echo(&mut established, "after|", client::IO_TIMEOUT)
        .context("the connection established to be1 while be2 flapped")?;
    ensure!(text.starts_with(&be1.name), "{text:?}");
    all_from(&lab.tcp_answers()?, &be1.name)?;
    lab.no_probe_flows()
}

/// Every endpoint of the backendRef failing: by default it fails open and
/// both backends serve as the config says (`fail-open`); with
/// `whenAllUnhealthy: Refuse` new connections are refused, as for a
/// backendRef without endpoints.
#[test]
fn a_backend_ref_all_unhealthy_fails_open_or_refuses_as_its_check_says() -> Result<()> {
    // HTTP on a port where nothing listens: every probe fails.
    let check = |when: &str| {
        format!(
            "whenAllUnhealthy: {when}\n{}",
            active(
                "HTTP",
                &format!("  port: {HEALTH_PORT}\n  http: {{path: /healthz}}\n")
            )
        )
    };
    for (when, serves) in [("FailOpen", true), ("Refuse", false)] {
        let lab = lab(&health_policy(
            "echo-health",
            DEMO_NAMESPACE,
            "TCPRoute",
            "echo-tcp",
            &check(when),
        ))?;
        let servers: Vec<TcpEchoServer> = lab
            .topo
            .backends
            .iter()
            .map(|be| TcpEchoServer::start(&be.ns, &be.name, TCP_TARGET_PORT))
            .collect::<Result<_>>()?;
        for i in 0..2 {
            lab.await_health(TCP_LISTENER, &backend(i, TCP_TARGET_PORT), "unhealthy")?;
        }
        let state = backend_info(
            &lab.daemon,
            &lab.listener(TCP_LISTENER),
            &backend(0, TCP_TARGET_PORT),
        )?
        .state;
        let vip = SocketAddr::new(IpAddr::V4(VIP), TCP_PORT);
        if serves {
            ensure!(state == "fail-open", "{when}: state {state}");
            let answers = lab.tcp_answers()?;
            some_from(&answers, servers[0].name())?;
            some_from(&answers, servers[1].name())?;
        } else {
            ensure!(state == "unhealthy", "{when}: state {state}");
            let refused = tcp_exchange(&lab.topo.client, vip, "refused?");
            ensure!(
                refused.is_err(),
                "{when}: a new connection was served: {refused:?}"
            );
        }
    }
    Ok(())
}

/// IPv6 endpoints are probed over IPv6 and taken out like IPv4 ones.
#[test]
fn an_ipv6_endpoint_is_probed_and_taken_out() -> Result<()> {
    let topo = Topology::single_arm_with(1, Offloads::KernelDefaults)?.with_ipv6()?;
    let lab = lab_on(
        topo,
        GatewaySpec::demo_dual_stack(),
        &health_policy(
            "echo-health",
            DEMO_NAMESPACE,
            "TCPRoute",
            "echo-tcp",
            &active("TCP", ""),
        ),
    )?;
    let (be1, be2) = (&lab.topo.backends[0], &lab.topo.backends[1]);
    let at = |i: usize| SocketAddr::new(IpAddr::V6(BACKENDS6[i].1), TCP_TARGET_PORT);
    let _s1 = TcpEchoServer::start_on(&be1.ns, &be1.name, at(0))?;
    let s2 = TcpEchoServer::start_on(&be2.ns, &be2.name, at(1))?;
    lab.await_health(TCP_LISTENER, &at(0).to_string(), "healthy")?;
    lab.await_health(TCP_LISTENER, &at(1).to_string(), "healthy")?;
    drop(s2);
    lab.await_health(TCP_LISTENER, &at(1).to_string(), "unhealthy")?;
    let vip = SocketAddr::new(IpAddr::V6(VIP6), TCP_PORT);
    let answers: Vec<String> = (0..PROBE_FLOWS)
        .map(|i| {
            Ok(tcp_exchange(&lab.topo.client, vip, &format!("v6-{i}"))?
                .server()
                .to_owned())
        })
        .collect::<Result<_>>()?;
    all_from(&answers, &be1.name)
}
