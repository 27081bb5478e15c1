//! End-to-end with real traffic: `switchyard-kube` watching the API server
//! simulator hands an EndpointSlice change to `switchyard run --cluster`,
//! and new connections follow it while established ones keep their
//! backend: a backend added takes new flows while the established ones
//! stay, a terminating backend takes no new flow beside a ready one but
//! keeps its established ones, and removing it changes nothing for the
//! other. The API server restarted meanwhile, its watches answered 410
//! Gone, an invalid object: the traffic goes on on the last good config,
//! and the sidecar converges after.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use switchyard_apiserver_sim::ApiServer;
use switchyard_proto::RELOAD_REFUSED;
use switchyard_vm_tests::client::{self, tcp_connect, tcp_exchange};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::process::{kill_and_reap, release_bin};
use switchyard_vm_tests::topology::{BACKENDS, VIP};
use switchyard_vm_tests::{Daemon, DaemonOptions, GatewaySpec, TempDir, Topology};

/// Generous: the machine is shared.
const DEADLINE: Duration = Duration::from_secs(30);
const ESTABLISHED: usize = 8;

/// The demo's objects with `backends` behind every listener, `terminating`
/// among them terminating.
fn objects(backends: &[std::net::Ipv4Addr], terminating: &[std::net::Ipv4Addr]) -> String {
    let mut spec = GatewaySpec::demo();
    for listener in &mut spec.listeners {
        listener.backends = backends.to_vec();
    }
    spec.terminating = terminating.to_vec();
    spec.to_yaml()
}

/// The sidecar as the DaemonSet runs it, stopped and reaped on drop.
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// The backend that answers a new TCP connection to the VIP.
fn new_connection(topo: &Topology) -> Result<String> {
    Ok(
        tcp_exchange(&topo.client, SocketAddr::from((VIP, TCP_PORT)), "new")?
            .server()
            .to_owned(),
    )
}

#[test]
fn endpoint_slice_changes_reach_the_dataplane_and_established_flows_stay() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    let daemon = Daemon::start_cluster(&topo.lb, &opts)?;
    let (be1, be2) = (BACKENDS[0], BACKENDS[1]);

    let mut server = ApiServer::start_default().context("starting the API server simulator")?;
    server.load_yaml(&objects(&[be1.1], &[]))?;
    let temp = TempDir::new("cluster-watch")?;
    let kubeconfig = temp.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let _sidecar = Sidecar(
        Command::new(release_bin("switchyard-kube")?)
            .arg("--control-socket")
            .arg(daemon.control_socket())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--identity", "lb-1", "--lease-namespace", "default"])
            .args(["--debounce", "100ms"])
            .stderr(Stdio::null())
            .spawn()
            .context("starting switchyard-kube")?,
    );

    // The cluster's one backend answers.
    poll_until(DEADLINE, "the VIP to answer from be1", || {
        Ok((new_connection(&topo).ok().as_deref() == Some(be1.0)).then_some(()))
    })?;
    let mut flows = Vec::new();
    for _ in 0..ESTABLISHED {
        let mut flow = tcp_connect(
            &topo.client,
            SocketAddr::from((VIP, TCP_PORT)),
            client::IO_TIMEOUT,
        )?;
        let text = client::echo(&mut flow, "before|", client::IO_TIMEOUT)?;
        ensure!(text.starts_with(be1.0), "established on {text:?}");
        flows.push(flow);
    }

    // be2 added: new connections reach it, established ones stay on be1.
    let changed = Instant::now();
    server.load_yaml(&objects(&[be1.1, be2.1], &[]))?;
    poll_until(DEADLINE, "new connections to reach be2", || {
        // While the update lands a connection may be refused: look again.
        Ok((new_connection(&topo).ok().as_deref() == Some(be2.0)).then_some(()))
    })?;
    let followed = changed.elapsed();
    eprintln!("a new backend took new connections {followed:?} after the EndpointSlice changed");
    for flow in &mut flows {
        let text = client::echo(flow, "added|", client::IO_TIMEOUT)
            .context("a connection established before be2 was added")?;
        ensure!(
            text.starts_with(be1.0),
            "an established flow moved: {text:?}"
        );
    }

    // be1 terminating beside a ready be2: new connections go to be2 only.
    server.load_yaml(&objects(&[be1.1, be2.1], &[be1.1]))?;
    poll_until(DEADLINE, "new connections to avoid be1", || {
        let answers: Vec<Option<String>> = (0..16).map(|_| new_connection(&topo).ok()).collect();
        Ok(answers
            .iter()
            .all(|a| a.as_deref() == Some(be2.0))
            .then_some(()))
    })?;
    // ... and connections established on be1 keep it while it drains.
    for flow in &mut flows {
        let text = client::echo(flow, "terminating|", client::IO_TIMEOUT)
            .context("a connection established before be1 began terminating")?;
        ensure!(
            text.starts_with(be1.0),
            "a flow of the terminating backend moved: {text:?}"
        );
    }

    let before_removal = daemon.config_status()?.generation;
    ensure!(
        daemon.config_status()?.source.contains(&server.url()),
        "the daemon names the cluster as its source"
    );

    // The API server restarts; meanwhile traffic goes on.
    server.stop();
    for _ in 0..8 {
        let server = new_connection(&topo)?;
        ensure!(
            server == be2.0,
            "with the API server down, a new connection went to {server}"
        );
    }
    server.restart().context("restarting the API server")?;

    // be1 removed: the sidecar, reconnected, hands that over; be2 still
    // takes every new connection.
    server.load_yaml(&objects(&[be2.1], &[]))?;
    poll_until(DEADLINE, "the daemon to run the update without be1", || {
        let status = daemon.config_status()?;
        Ok((status.generation > before_removal).then_some(()))
    })?;
    for _ in 0..16 {
        let server = new_connection(&topo)?;
        ensure!(
            server == be2.0,
            "after be1 was removed, a new connection went to {server}"
        );
    }

    // The history compacted and every watch cut (they resume into 410
    // Gone and relist), then an invalid object: it is refused, the running
    // config stays and carries the traffic; fixed, the sidecar converges.
    let good = daemon.config_status()?.generation;
    server.compact();
    server.disconnect_all();
    server.load_yaml(INVALID_POLICY)?;
    poll_until(DEADLINE, "the invalid update refused", || {
        let status = daemon.config_status()?;
        Ok((status.last_result() == RELOAD_REFUSED).then_some(status))
    })?;
    for _ in 0..8 {
        let server = new_connection(&topo)?;
        ensure!(
            server == be2.0,
            "on the last good config, {server} answered"
        );
    }
    ensure!(
        daemon.config_status()?.generation == good,
        "the running config stays"
    );
    server
        .delete(
            "switchyard.io/v1alpha1",
            "TrafficPolicy",
            "demo",
            "teleport",
        )
        .context("deleting the invalid policy")?;
    poll_until(
        DEADLINE,
        "the sidecar to converge on the fixed objects",
        || {
            let status = daemon.config_status()?;
            Ok((status.last_result() != RELOAD_REFUSED).then_some(()))
        },
    )?;
    ensure!(new_connection(&topo)? == be2.0);
    Ok(())
}

/// A policy the loader refuses (no such forwarding mode).
const INVALID_POLICY: &str = "apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: teleport, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  forwarding: {mode: teleport}
";
