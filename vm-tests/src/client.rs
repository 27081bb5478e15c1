//! Client-side exchanges with the echo servers: real sockets created inside
//! the client namespace, each exchange bounded by a deadline.
//!
//! Deadlines are generous (TCP retransmits a lost SYN after one second) but
//! nothing here sleeps for a guess: every wait is a blocking call with a
//! timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::{in_netns, Netns};

/// Default bound on one connect, or one request and its whole reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One answered TCP or UDP request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The client socket's own address.
    pub local: SocketAddr,
    /// Where the reply came from (the connected peer for TCP).
    pub from: SocketAddr,
    pub text: String,
}

impl Reply {
    /// The name of the echo server that answered: the reply's first word.
    pub fn server(&self) -> &str {
        self.text.split(' ').next().unwrap_or("")
    }

    /// What the server echoed after its name.
    pub fn echoed(&self) -> &str {
        self.text.split_once(' ').map_or("", |(_, rest)| rest)
    }
}

/// Connects from `ns` to `to` within `timeout`.
pub fn tcp_connect(ns: &Netns, to: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    in_netns(ns, || TcpStream::connect_timeout(&to, timeout))?
        .with_context(|| format!("TCP connect from {} to {to}", ns.name()))
}

/// Connects, sends `payload`, half-closes, and reads until the server closes.
pub fn tcp_exchange(ns: &Netns, to: SocketAddr, payload: &str) -> Result<Reply> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut stream = tcp_connect(ns, to, IO_TIMEOUT)?;
    let local = stream.local_addr()?;
    let context = || format!("TCP exchange {local} -> {to}");
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(payload.as_bytes()).with_context(context)?;
    stream.shutdown(Shutdown::Write).with_context(context)?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = remaining(deadline).ok_or_else(|| {
            anyhow!(
                "{}: no end of reply within {IO_TIMEOUT:?}, got {:?}",
                context(),
                lossy(&text)
            )
        })?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}: reading reply, got {:?}", context(), lossy(&text))
                })
            }
        }
    }
    Ok(Reply {
        local,
        from: to,
        text: lossy(&text),
    })
}

/// Like [`tcp_exchange`], from the fixed source address `from`: a test that
/// chooses its clients' ports gets the same 5-tuples, and so the same
/// hashes, on every run.
pub fn tcp_exchange_from(
    ns: &Netns,
    from: SocketAddrV4,
    to: SocketAddr,
    payload: &str,
) -> Result<Reply> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use nix::sys::time::TimeVal;
    use std::os::fd::AsRawFd;

    let SocketAddr::V4(to_v4) = to else {
        bail!("{to}: IPv4 only");
    };
    let socket = in_netns(ns, || -> nix::Result<std::os::fd::OwnedFd> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // Linux bounds a blocking connect by the send timeout.
        setsockopt(
            &fd,
            sockopt::SendTimeout,
            &TimeVal::new(IO_TIMEOUT.as_secs() as _, 0),
        )?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(from))?;
        Ok(fd)
    })?
    .with_context(|| format!("binding a TCP socket to {from} in {}", ns.name()))?;
    connect(socket.as_raw_fd(), &SockaddrIn::from(to_v4))
        .with_context(|| format!("TCP connect {from} -> {to}"))?;
    let mut stream = TcpStream::from(socket);
    let context = || format!("TCP exchange {from} -> {to}");
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(payload.as_bytes()).with_context(context)?;
    stream.shutdown(Shutdown::Write).with_context(context)?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).with_context(context)?;
    Ok(Reply {
        local: SocketAddr::V4(from),
        from: to,
        text: lossy(&text),
    })
}

/// Connects, sends `payload` and reads until the reply ends with it, leaving
/// the connection open (so it shows up as a live flow).
pub fn tcp_exchange_keep_open(
    ns: &Netns,
    to: SocketAddr,
    payload: &str,
) -> Result<(TcpStream, Reply)> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut stream = tcp_connect(ns, to, IO_TIMEOUT)?;
    let local = stream.local_addr()?;
    let context = || format!("TCP exchange {local} -> {to}");
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(payload.as_bytes()).with_context(context)?;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(payload.as_bytes()) {
        let left = remaining(deadline).ok_or_else(|| {
            anyhow!(
                "{}: no full reply within {IO_TIMEOUT:?}, got {:?}",
                context(),
                lossy(&text)
            )
        })?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => bail!("{}: server closed after {:?}", context(), lossy(&text)),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}: reading reply, got {:?}", context(), lossy(&text))
                })
            }
        }
    }
    Ok((
        stream,
        Reply {
            local,
            from: to,
            text: lossy(&text),
        },
    ))
}

/// Sends one datagram from a fresh socket (a fresh source port, so a fresh
/// flow) and waits for one reply, reporting its source address.
pub fn udp_exchange(ns: &Netns, to: SocketAddr, payload: &str) -> Result<Reply> {
    let socket = udp_socket_towards(ns, to)?;
    let reply = udp_exchange_on(&socket, to, payload);
    hold_open(socket);
    reply
}

/// Sockets of this thread's recent `udp_exchange`s, at most.
const HELD_UDP_SOCKETS: usize = 256;

thread_local! {
    /// The sockets of this thread's recent `udp_exchange`s, held open so
    /// that the kernel, which picks a UDP source port at random, cannot
    /// give one of their ports to the next exchange: two exchanges from one
    /// port are one flow to the load balancer, and tests count flows.
    /// Closed when the test's thread ends.
    static HELD_UDP: std::cell::RefCell<std::collections::VecDeque<UdpSocket>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

fn hold_open(socket: UdpSocket) {
    HELD_UDP.with(|held| {
        let mut held = held.borrow_mut();
        if held.len() == HELD_UDP_SOCKETS {
            held.pop_front();
        }
        held.push_back(socket);
    });
}

/// An unconnected UDP socket in `ns`, bound to the source address the
/// routing table picks for `to` and a fresh port, so its `local_addr` is the
/// address peers see. (Unconnected, so a reply from an unexpected source is
/// received and reported rather than filtered out.)
pub fn udp_socket_towards(ns: &Netns, to: SocketAddr) -> Result<UdpSocket> {
    in_netns(ns, || -> std::io::Result<UdpSocket> {
        // connect() on a UDP socket sends nothing; it only resolves the route.
        let unspecified = match to {
            SocketAddr::V4(_) => "0.0.0.0:0",
            SocketAddr::V6(_) => "[::]:0",
        };
        let probe = UdpSocket::bind(unspecified)?;
        probe.connect(to)?;
        UdpSocket::bind((probe.local_addr()?.ip(), 0))
    })?
    .with_context(|| format!("binding a UDP socket towards {to} in {}", ns.name()))
}

/// Sends one datagram from `socket` and waits for one reply.
pub fn udp_exchange_on(socket: &UdpSocket, to: SocketAddr, payload: &str) -> Result<Reply> {
    socket
        .send_to(payload.as_bytes(), to)
        .with_context(|| format!("sending UDP to {to}"))?;
    let local = socket.local_addr()?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                return Ok(Reply {
                    local,
                    from,
                    text: lossy(&buf[..n]),
                })
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("UDP {local} -> {to}: no reply within {IO_TIMEOUT:?}")
            }
            Err(e) => return Err(e).with_context(|| format!("UDP {local} -> {to}: receiving")),
        }
    }
}

/// Pins the calling thread to `cpu` (modulo the online CPUs), so what it
/// sends is processed there; with [`crate::link::spread_tx_queues_by_cpu`]
/// that chooses the LB queue it arrives on.
pub fn pin_current_thread(cpu: u32) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    let cpu = (cpu % crate::link::online_cpus()) as usize;
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    // Pid 0: the calling thread only.
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))?;
    Ok(())
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads `stream` until `payload` has come back (after the echo server's
/// name), within `within`; returns everything read.
pub fn read_echo(stream: &mut TcpStream, payload: &str, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while !text.ends_with(payload.as_bytes()) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("no echo of {payload:?} within {within:?}"))?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => bail!(
                "closed by the server after {:?}",
                String::from_utf8_lossy(&text)
            ),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Writes `payload` on an open connection and reads its echo.
pub fn echo(stream: &mut TcpStream, payload: &str, within: Duration) -> Result<String> {
    stream.write_all(payload.as_bytes())?;
    read_echo(stream, payload, within)
}
