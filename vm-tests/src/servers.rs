//! Echo servers that play the backends: real sockets inside a namespace,
//! served by threads of the test process.
//!
//! Each reply is the server's name, a space, and what it received, so a
//! client can tell which backend answered. Servers record the peer address
//! of every connection or datagram, so tests can check that the client's
//! address was preserved. Dropping a server stops and joins its threads;
//! every blocking call has a timeout so that never hangs.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{in_netns, Netns};
use crate::poll::POLL_INTERVAL;

/// How long a blocked read waits before looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// A peer that stops reading cannot wedge a server thread for longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a server saw, shared with its threads.
#[derive(Debug, Default)]
struct Seen {
    peers: Mutex<Vec<SocketAddr>>,
}

impl Seen {
    fn record(&self, peer: SocketAddr) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer);
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn reply(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1 + data.len());
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(data);
    out
}

#[derive(Debug)]
/// What both echo servers share: who they are, who talked to them, and
/// the thread that stops and is joined on drop.
struct Served {
    name: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // Release: pairs with the server thread's Acquire load of `stop`.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP echo server: for each connection, answers every read with
/// `"<name> " + data`, until the peer closes. Connections are served
/// concurrently, one thread each.
#[derive(Debug)]
pub struct TcpEchoServer(Served);

impl TcpEchoServer {
    /// Listens on 0.0.0.0:`port` in `ns`.
    pub fn start(ns: &Netns, name: &str, port: u16) -> Result<TcpEchoServer> {
        TcpEchoServer::start_on(ns, name, SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// Listens on `addr` in `ns`.
    pub fn start_on(ns: &Netns, name: &str, addr: SocketAddr) -> Result<TcpEchoServer> {
        let listener = in_netns(ns, || TcpListener::bind(addr))?
            .with_context(|| format!("{name}: binding TCP {addr} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let acceptor = {
            let (name, stop, seen) = (name.to_owned(), stop.clone(), seen.clone());
            std::thread::Builder::new()
                .name(format!("tcp-echo-{name}"))
                .spawn(move || accept_loop(&name, &listener, &stop, &seen))?
        };
        Ok(TcpEchoServer(Served {
            name: name.to_owned(),
            addr,
            stop,
            seen,
            thread: Some(acceptor),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Peer address of every accepted connection, in accept order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.0.seen.peers()
    }
}

fn accept_loop(name: &str, listener: &TcpListener, stop: &Arc<AtomicBool>, seen: &Seen) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, peer)) => {
                seen.record(peer);
                let (conn_name, stop) = (name.to_owned(), stop.clone());
                match std::thread::Builder::new()
                    .name(format!("tcp-echo-{name}-conn"))
                    .spawn(move || serve_connection(&conn_name, stream, &stop))
                {
                    Ok(handle) => connections.push(handle),
                    Err(e) => eprintln!("{name}: cannot spawn a connection thread: {e}"),
                }
                connections.retain(|h| !h.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("{name}: accept failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
    for handle in connections {
        let _ = handle.join();
    }
}

fn serve_connection(name: &str, mut stream: TcpStream, stop: &AtomicBool) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; the read timeout
    // is what lets this thread notice the stop flag.
    let _ = stream.set_read_timeout(Some(STOP_CHECK));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Acquire) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&reply(name, &buf[..n])).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A UDP echo server: answers each datagram with `"<name> " + payload`, sent
/// back to the datagram's source from the socket it arrived on.
#[derive(Debug)]
pub struct UdpEchoServer(Served);

impl UdpEchoServer {
    /// Listens on 0.0.0.0:`port` in `ns`.
    pub fn start(ns: &Netns, name: &str, port: u16) -> Result<UdpEchoServer> {
        UdpEchoServer::start_on(ns, name, SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// Listens on `addr` in `ns`.
    pub fn start_on(ns: &Netns, name: &str, addr: SocketAddr) -> Result<UdpEchoServer> {
        let socket = in_netns(ns, || UdpSocket::bind(addr))?
            .with_context(|| format!("{name}: binding UDP {addr} in {}", ns.name()))?;
        socket.set_read_timeout(Some(STOP_CHECK))?;
        socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let worker = {
            let (name, stop, seen) = (name.to_owned(), stop.clone(), seen.clone());
            std::thread::Builder::new()
                .name(format!("udp-echo-{name}"))
                .spawn(move || udp_loop(&name, &socket, &stop, &seen))?
        };
        Ok(UdpEchoServer(Served {
            name: name.to_owned(),
            addr,
            stop,
            seen,
            thread: Some(worker),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Source address of every datagram received, in arrival order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.0.seen.peers()
    }
}

fn udp_loop(name: &str, socket: &UdpSocket, stop: &AtomicBool, seen: &Seen) {
    let mut buf = [0u8; 64 * 1024];
    while !stop.load(Ordering::Acquire) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                seen.record(peer);
                if let Err(e) = socket.send_to(&reply(name, &buf[..n]), peer) {
                    eprintln!("{name}: reply to {peer} failed: {e}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("{name}: recv failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// A TCP and a UDP echo server with one name, as one backend runs them.
#[derive(Debug)]
pub struct EchoPair {
    pub tcp: TcpEchoServer,
    pub udp: UdpEchoServer,
}

impl EchoPair {
    pub fn start(ns: &Netns, name: &str, tcp_port: u16, udp_port: u16) -> Result<EchoPair> {
        Ok(EchoPair {
            tcp: TcpEchoServer::start(ns, name, tcp_port)?,
            udp: UdpEchoServer::start(ns, name, udp_port)?,
        })
    }

    /// Both servers on `ip` (an IPv6 backend's own address, beside the
    /// IPv4 wildcard servers of [`EchoPair::start`]).
    pub fn start_on(
        ns: &Netns,
        name: &str,
        ip: std::net::IpAddr,
        tcp_port: u16,
        udp_port: u16,
    ) -> Result<EchoPair> {
        Ok(EchoPair {
            tcp: TcpEchoServer::start_on(ns, name, SocketAddr::new(ip, tcp_port))?,
            udp: UdpEchoServer::start_on(ns, name, SocketAddr::new(ip, udp_port))?,
        })
    }
}
