//! End-to-end: `switchyard run --cluster` takes a cluster's objects over
//! the control socket, as `switchyard-kube` sends them, and applies them as
//! it would a config file: traffic follows each applied update, flows
//! established before it keep their backend, an invalid update is refused
//! naming its line while traffic goes on, the same objects again change
//! nothing, the answer carries the statuses to write back, and the largest
//! update allowed goes through while a larger one is refused. With
//! `--cluster-cache`, a restarted daemon serves the last applied objects
//! before any cluster has sent them again.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use switchyard_proto::{
    ClusterApplyOutcome, ConfigSource, ExplainReport, MAX_CLUSTER_CONFIG_BYTES,
};
use switchyard_vm_tests::client::{self, tcp_connect, tcp_exchange, udp_exchange};
use switchyard_vm_tests::cluster::{apply_cluster, condition, status_of};
use switchyard_vm_tests::config::{TCP_PORT, TCP_TARGET_PORT, UDP_PORT, UDP_TARGET_PORT};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::topology::{BACKENDS, VIP};
use switchyard_vm_tests::{Daemon, DaemonOptions, GatewaySpec, TempDir, Topology};

/// What the sidecar would send as `source`.
const SOURCE: &str = "https://198.18.0.1:6443";
const NAME: &str = "cluster https://198.18.0.1:6443";
/// The Gateway's `metadata.generation`, as an API server would have set it.
const GATEWAY_GENERATION: u64 = 7;
/// Generous: new flows follow an applied update at once; the machine is
/// shared.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(20);
/// Flows established before a backend is added; the chance that none of
/// them would be sent to the new backend if new is 2^-16.
const ESTABLISHED: usize = 16;

/// The demo's objects with `backends` behind both listeners, the Gateway
/// at generation `GATEWAY_GENERATION`.
fn objects(backends: &[Ipv4Addr]) -> String {
    let mut spec = GatewaySpec::demo();
    for listener in &mut spec.listeners {
        listener.backends = backends.to_vec();
    }
    let yaml = spec.to_yaml();
    let gateway = "kind: Gateway\nmetadata:\n  name: edge\n  namespace: demo\n";
    assert!(yaml.contains(gateway), "the demo's Gateway is spelled so");
    yaml.replacen(
        gateway,
        &format!("{gateway}  generation: {GATEWAY_GENERATION}\n"),
        1,
    )
}

fn start(topo: &Topology, extra: &[&str]) -> Result<Daemon> {
    let mut opts = DaemonOptions::new(topo.lb_interfaces()).queues(topo.queues);
    for arg in extra {
        opts = opts.arg(*arg);
    }
    Daemon::start_cluster(&topo.lb, &opts)
}

/// The backend names that answer new TCP connections to the VIP, until
/// `wanted` have answered.
fn new_connections_reach(topo: &Topology, wanted: &[&str]) -> Result<BTreeSet<String>> {
    let vip = SocketAddr::from((VIP, TCP_PORT));
    let mut seen = BTreeSet::new();
    poll_until(
        FOLLOW_DEADLINE,
        &format!("new connections to reach {wanted:?}"),
        || {
            let reply = tcp_exchange(&topo.client, vip, "new")?;
            seen.insert(reply.server().to_owned());
            Ok(wanted.iter().all(|w| seen.contains(*w)).then_some(()))
        },
    )?;
    Ok(seen)
}

#[test]
fn a_cluster_daemon_applies_the_objects_it_is_sent_as_a_file_would_be() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = start(&topo, &[])?;
    let socket = daemon.control_socket().to_owned();
    let (be1, be2) = (BACKENDS[0], BACKENDS[1]);

    let before = daemon.config_status()?;
    ensure!(
        before.source_kind == ConfigSource::Cluster && before.listeners == 0,
        "a cluster daemon starts serving nothing: {before:?}"
    );

    // One backend: the VIP answers from it.
    let first = apply_cluster(&socket, SOURCE, &objects(&[be1.1]))?;
    ensure!(
        first.outcome == ClusterApplyOutcome::Applied && first.error.is_none(),
        "the demo objects were not applied: {first:?}"
    );
    let gateway = status_of(&first, "Gateway", "demo", "edge")?;
    let programmed = condition(&gateway["conditions"], "Programmed")?;
    ensure!(
        programmed["status"] == "True"
            && programmed["observedGeneration"] == GATEWAY_GENERATION
            && programmed.get("lastTransitionTime").is_none(),
        "the Gateway's Programmed condition: {programmed}"
    );
    let reply = tcp_exchange(&topo.client, SocketAddr::from((VIP, TCP_PORT)), "hello")?;
    ensure!(reply.server() == be1.0, "TCP answered by {reply:?}");
    let reply = udp_exchange(&topo.client, SocketAddr::from((VIP, UDP_PORT)), "hello")?;
    ensure!(reply.server() == be1.0, "UDP answered by {reply:?}");

    // Flows established on be1 before the next update: enough that some
    // would go to be2 if they were new (checked below), so that keeping
    // be1 is the flow table's doing, not the hash's.
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

    // A backend added: new flows reach it, the established ones stay.
    let second = apply_cluster(&socket, SOURCE, &objects(&[be1.1, be2.1]))?;
    ensure!(
        second.outcome == ClusterApplyOutcome::Applied && second.generation > first.generation,
        "the added backend was not applied: {second:?}"
    );
    new_connections_reach(&topo, &[be1.0, be2.0])?;
    let be2_endpoint = format!("{}:{TCP_TARGET_PORT}", be2.1);
    let mut would_move = 0;
    for flow in &mut flows {
        let local = flow.local_addr()?.to_string();
        let explained: ExplainReport =
            daemon.yardctl_as(&["explain", "tcp", &local, &format!("{VIP}:{TCP_PORT}")])?;
        would_move += usize::from(explained.new_flow.backend.as_deref() == Some(&be2_endpoint));
        let text = client::echo(flow, "after|", client::IO_TIMEOUT)
            .context("a connection established before the update")?;
        ensure!(
            text.starts_with(be1.0),
            "an established flow moved: {text:?}"
        );
    }
    ensure!(
        would_move > 0,
        "none of the {ESTABLISHED} established flows would go to be2 if new: the test shows nothing"
    );
    let established = &mut flows[0];

    // An invalid update: refused, naming the line; nothing changes.
    let valid = objects(&[be1.1, be2.1]);
    let broken_field = "      port: 80\n";
    let broken_line = valid[..valid.find(broken_field).context("the route's port")?]
        .lines()
        .count()
        + 1;
    let invalid = valid.replacen(broken_field, "      port: eighty\n", 1);
    let refused = apply_cluster(&socket, SOURCE, &invalid)?;
    let error = refused.error.clone().unwrap_or_default();
    ensure!(
        refused.outcome == ClusterApplyOutcome::Refused && refused.generation == second.generation,
        "the invalid update was not refused: {refused:?}"
    );
    let named_line: usize = error
        .strip_prefix(&format!("{NAME}:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|line| line.parse().ok())
        .with_context(|| format!("the error names no `{NAME}:LINE`: {error}"))?;
    let document_start = invalid.lines().take(broken_line).collect::<Vec<_>>();
    let separator = document_start
        .iter()
        .rposition(|l| *l == "---")
        .context("the route's document")?
        + 1;
    ensure!(
        (separator..=broken_line).contains(&named_line),
        "the error names line {named_line}, not the route's (lines {separator}-{broken_line}): {error}"
    );
    ensure!(
        status_of(&refused, "Gateway", "demo", "edge").is_ok(),
        "a refusal still answers with the running config's statuses"
    );
    let text = client::echo(established, "refused|", client::IO_TIMEOUT)?;
    ensure!(text.starts_with(be1.0), "after the refusal: {text:?}");
    new_connections_reach(&topo, &[be1.0, be2.0])?;

    // The running objects again, twice: nothing changes.
    for _ in 0..2 {
        let same = apply_cluster(&socket, SOURCE, &valid)?;
        ensure!(
            same.outcome == ClusterApplyOutcome::Unchanged
                && same.generation == second.generation
                && same.statuses == second.statuses,
            "the running objects again: {same:?}"
        );
    }

    let status = daemon.config_status()?;
    ensure!(
        status.source == NAME
            && status.unchanged_updates == 2
            && status.failed_reloads == 1
            && status.listeners == 2
            && status.last_update.as_ref().map(|u| u.outcome.as_str()) == Some("unchanged"),
        "config status after the updates: {status:?}"
    );
    let text = daemon.yardctl_raw(&["config", "status"])?.stdout;
    ensure!(
        text.contains(NAME) && text.contains("last update: unchanged"),
        "`yardctl config status`:\n{text}"
    );
    ensure!(
        daemon.status()?.config_path == NAME,
        "`yardctl status` names the cluster"
    );

    // No file to reload: SIGHUP is said to be meaningless and changes nothing.
    daemon.signal(Signal::SIGHUP)?;
    poll_until(FOLLOW_DEADLINE, "SIGHUP to be answered in the log", || {
        Ok(daemon
            .log()
            .contains("there is no file to reload")
            .then_some(()))
    })?;
    ensure!(
        daemon.config_status()?.generation == second.generation,
        "SIGHUP changed the config"
    );
    let text = client::echo(established, "end|", client::IO_TIMEOUT)?;
    ensure!(text.starts_with(be1.0), "at the end: {text:?}");

    // The largest update there may be goes through the socket; one byte
    // more is refused naming the limit, and the running config stays.
    let largest = padded(&valid, MAX_CLUSTER_CONFIG_BYTES);
    let applied = apply_cluster(&socket, SOURCE, &largest)?;
    ensure!(
        applied.outcome == ClusterApplyOutcome::Applied,
        "{} bytes: {:?} {:?}",
        largest.len(),
        applied.outcome,
        applied.error
    );
    let err = apply_cluster(
        &socket,
        SOURCE,
        &padded(&valid, MAX_CLUSTER_CONFIG_BYTES + 1),
    )
    .err()
    .context("contents over the limit were taken")?;
    ensure!(
        format!("{err:#}").contains(&MAX_CLUSTER_CONFIG_BYTES.to_string()),
        "{err:#}"
    );
    ensure!(
        daemon.config_status()?.generation == applied.generation,
        "the refusal changed the config"
    );
    new_connections_reach(&topo, &[be1.0, be2.0])?;
    Ok(())
}

/// `objects` followed by comment lines up to exactly `bytes`.
fn padded(objects: &str, bytes: usize) -> String {
    let mut text = String::with_capacity(bytes);
    text.push_str(objects);
    let line = format!("# {}\n", "x".repeat(97));
    while text.len() + line.len() <= bytes {
        text.push_str(&line);
    }
    let rest = bytes - text.len();
    if rest > 0 {
        text.push('#');
        text.push_str(&"x".repeat(rest - 1));
    }
    text
}

#[test]
fn a_restarted_cluster_daemon_serves_its_cached_objects_until_the_cluster_is_back() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let dir = TempDir::new("cluster-cache")?;
    let cache = dir.path().join("cluster.yaml");
    let cache_arg = cache.display().to_string();
    let objects = objects(&[BACKENDS[1].1]);
    {
        let mut daemon = start(&topo, &["--cluster-cache", &cache_arg])?;
        let applied = apply_cluster(daemon.control_socket(), SOURCE, &objects)?;
        ensure!(
            applied.outcome == ClusterApplyOutcome::Applied,
            "{applied:?}"
        );
        daemon.stop()?;
    }
    let daemon = start(&topo, &["--cluster-cache", &cache_arg])?;
    let status = daemon.config_status()?;
    ensure!(
        status.listeners == 2 && status.source == NAME,
        "the cached objects at start: {status:?}"
    );
    let reply = tcp_exchange(&topo.client, SocketAddr::from((VIP, TCP_PORT)), "cached")?;
    ensure!(reply.server() == BACKENDS[1].0, "answered by {reply:?}");
    let again = apply_cluster(daemon.control_socket(), SOURCE, &objects)?;
    ensure!(
        again.outcome == ClusterApplyOutcome::Unchanged
            && status_of(&again, "Gateway", "demo", "edge").is_ok(),
        "the cluster's first update after the restart, the objects cached: {again:?}"
    );
    Ok(())
}

#[test]
fn a_daemon_reading_a_file_refuses_a_clusters_objects_naming_the_option() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let daemon = topo.start_daemon(&path)?;
    let err = apply_cluster(daemon.control_socket(), SOURCE, &objects(&[BACKENDS[0].1]))
        .err()
        .context("a file daemon applied a cluster's objects")?;
    let text = format!("{err:#}");
    ensure!(
        text.contains("--cluster") && text.contains("gateway.yaml"),
        "{text}"
    );
    ensure!(daemon.config_status()?.reloads == 0, "nothing applied");
    Ok(())
}
