//! What the health-check tests need beyond the shared harness: a
//! `TrafficPolicy` with a `healthCheck` to append to a
//! [`crate::GatewaySpec`]'s YAML, an HTTP health endpoint whose answer a
//! test switches (200 or 500) or stops, and reading one backend's health
//! from `yardctl backends`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use switchyard_proto::{BackendInfo, BackendsReport};

use crate::netns::{in_netns, Netns};
use crate::poll::POLL_INTERVAL;
use crate::Daemon;

/// A `TrafficPolicy` named `name` in `namespace` whose `healthCheck` is
/// `health_check` (YAML indented under `healthCheck:`), on the object of
/// `kind` (`Service`, `TCPRoute`, `UDPRoute`, `Gateway`) named `target`.
pub fn health_policy(
    name: &str,
    namespace: &str,
    kind: &str,
    target: &str,
    health_check: &str,
) -> String {
    let group = if kind == "Service" {
        "\"\""
    } else {
        "gateway.networking.k8s.io"
    };
    let body: String = health_check
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    format!(
        "---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  targetRefs:\n  - {{group: {group}, kind: {kind}, name: {target}}}\n  \
         healthCheck:\n{body}"
    )
}

/// `backend` (`address:port`) on `listener`, as `yardctl backends` shows it.
pub fn backend_info(daemon: &Daemon, listener: &str, backend: &str) -> Result<BackendInfo> {
    let report: BackendsReport = daemon.yardctl_as(&["backends"])?;
    report
        .backends
        .into_iter()
        .find(|b| b.listener == listener && b.backend == backend)
        .with_context(|| format!("`yardctl backends` lists no {backend} on {listener}"))
}

/// The health `yardctl backends` reports for `backend` on `listener`.
pub fn health_of(daemon: &Daemon, listener: &str, backend: &str) -> Result<String> {
    Ok(backend_info(daemon, listener, backend)?
        .health
        .unwrap_or_else(|| "(not checked)".to_owned()))
}

/// An HTTP/1.1 server answering every request with the current status
/// and body `ok`, closing each connection after its answer.
pub struct HealthEndpoint {
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthEndpoint {
    pub fn start(ns: &Netns, addr: SocketAddr, status: u16) -> Result<HealthEndpoint> {
        let listener = in_netns(ns, || TcpListener::bind(addr))?
            .with_context(|| format!("binding the health endpoint {addr} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let status = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, stop) = (status.clone(), stop.clone());
            std::thread::Builder::new()
                .name("health-endpoint".into())
                .spawn(move || serve(&listener, &status, &stop))?
        };
        Ok(HealthEndpoint {
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The status later requests get.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, status: &AtomicU16, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, status.load(Ordering::Relaxed)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

fn answer(mut stream: TcpStream, status: u16) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let reason = if status == 200 { "OK" } else { "Error" };
    let _ = stream.write_all(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .as_bytes(),
    );
}
