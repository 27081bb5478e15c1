//! End-to-end: the control socket against clients that do not play along.
//! Hundreds of idle connections and a client that never reads its large
//! answer cost only themselves (`yardctl status` still answers); a request
//! line over the limit is refused naming the limit; `--control-socket` never
//! takes a path that is not a stale socket: a regular file is kept and a
//! live socket (another daemon) is left to its owner.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use switchyard_proto::{CandidateConfig, Request, MAX_REQUEST_BYTES};
use switchyard_vm_tests::process::{run_with_timeout, switchyard_bin};
use switchyard_vm_tests::{Daemon, GatewaySpec, Netns, TempDir, Topology};

/// More idle connections than the daemon serves at once.
const IDLE_CONNECTIONS: usize = 300;
/// Bigger than a Unix socket's buffer, so an answer this size cannot be
/// written until the client reads.
const BIG_ANSWER_BYTES: usize = 2 << 20;
/// How long a `switchyard run` that must refuse to start may take.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

fn demo_daemon() -> Result<(Topology, TempDir, Daemon)> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let path = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let daemon = topo.start_daemon(&path)?;
    Ok((topo, dir, daemon))
}

/// A request whose answer is large: a config check names the file it was
/// given, and this one has a long name.
fn big_answer_request() -> Vec<u8> {
    let mut line = serde_json::to_vec(&Request::ConfigCheck(CandidateConfig {
        file: "x".repeat(BIG_ANSWER_BYTES),
        contents: String::new(),
    }))
    .expect("a request serializes");
    line.push(b'\n');
    line
}

#[test]
fn idle_clients_and_one_that_never_reads_leave_status_answering() -> Result<()> {
    let (_topo, _dir, daemon) = demo_daemon()?;
    let socket = daemon.control_socket();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for n in 0..IDLE_CONNECTIONS {
        idle.push(UnixStream::connect(socket).with_context(|| format!("idle connection {n}"))?);
    }
    let mut never_reads = UnixStream::connect(socket)?;
    never_reads.set_write_timeout(Some(Duration::from_secs(20)))?;
    never_reads
        .write_all(&big_answer_request())
        .context("sending the request whose answer is never read")?;

    let status = daemon
        .status()
        .context("`yardctl status` beside idle and non-reading clients")?;
    ensure!(status.config_generation >= 1, "{status:?}");
    daemon
        .config_status()
        .context("`yardctl config status` beside them")?;

    // The answer the non-reader never takes is big: a client that reads
    // gets all of it.
    let mut reader = UnixStream::connect(socket)?;
    reader.write_all(&big_answer_request())?;
    reader.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut answer = Vec::new();
    reader.read_to_end(&mut answer)?;
    ensure!(
        answer.len() > BIG_ANSWER_BYTES,
        "the answer should be bigger than the request's name: {} bytes",
        answer.len()
    );
    drop(never_reads);
    drop(idle);
    Ok(())
}

#[test]
fn a_request_over_the_limit_is_refused_naming_the_limit() -> Result<()> {
    let (_topo, _dir, daemon) = demo_daemon()?;
    let mut client = UnixStream::connect(daemon.control_socket())?;
    let mut writer = client.try_clone()?;
    let sender = thread::spawn(move || {
        // The daemon stops reading at the limit; what it did not read may
        // fail to send, which is the point.
        let _ = writer.write_all(&vec![b' '; MAX_REQUEST_BYTES + 1]);
    });
    client.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut answer = String::new();
    client.read_to_string(&mut answer)?;
    drop(client);
    let _ = sender.join();
    ensure!(
        answer.contains("request longer than") && answer.contains(&MAX_REQUEST_BYTES.to_string()),
        "the refusal should name the limit, got {answer:?}"
    );
    daemon.status().context("`yardctl status` after it")?;
    Ok(())
}

/// `switchyard run` with `--control-socket SOCKET`, expected to refuse to
/// start; returns what it printed.
fn refused_start(ns: &Netns, config: &Path, socket: &Path) -> Result<String> {
    let out = run_with_timeout(
        ns.command(switchyard_bin()?)
            .args(["run", "--interface", "lo", "--config"])
            .arg(config)
            .arg("--control-socket")
            .arg(socket),
        REFUSAL_DEADLINE,
    )?;
    ensure!(
        !out.status.success(),
        "switchyard should refuse --control-socket {}, printed {:?} {:?}",
        socket.display(),
        out.stdout,
        out.stderr
    );
    Ok(out.stderr)
}

#[test]
fn a_regular_file_named_as_the_control_socket_is_refused_and_kept() -> Result<()> {
    let ns = Netns::new("ctlfile")?;
    let dir = TempDir::new("ctlfile")?;
    let config = dir.write("gateway.yaml", &GatewaySpec::demo().to_yaml())?;
    let precious = dir.write("precious.txt", "keep me")?;
    let err = refused_start(&ns, &config, &precious)?;
    ensure!(
        err.contains(&precious.display().to_string()) && err.contains("a regular file"),
        "the refusal should name the path and what is there, got {err:?}"
    );
    ensure!(
        std::fs::read_to_string(&precious)? == "keep me",
        "the file must be left as it was"
    );
    Ok(())
}

#[test]
fn a_control_socket_another_daemon_serves_is_refused() -> Result<()> {
    let (topo, dir, daemon) = demo_daemon()?;
    let config = dir.path().join("gateway.yaml");
    let err = refused_start(&topo.lb, &config, daemon.control_socket())?;
    ensure!(
        err.contains(&daemon.control_socket().display().to_string())
            && err.contains("already serving")
            && err.contains("another --control-socket"),
        "the refusal should name the path and say it is served, got {err:?}"
    );
    daemon
        .status()
        .context("the first daemon still answers on its socket")?;
    Ok(())
}
