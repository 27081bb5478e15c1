//! The network `yard-health` measures in, and the endpoints the daemon
//! probes.
//!
//! ```text
//!  lb namespace                               backends namespace
//!  l0 198.18.2.1/24 (switchyard run) ── veth ── b0 198.18.2.10-109/24
//!                                               N listening sockets, accepted and closed
//! ```
//!
//! Nothing leaves the two namespaces: the addresses are in 198.18.0.0/15,
//! and the namespaces (with the veth) are removed on drop, also when the
//! run fails. The endpoint server is a thread of this process whose
//! sockets were opened inside the backends namespace; it stops on drop.

use std::io;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_vm_tests::link::wait_links_up;
use switchyard_vm_tests::netns::run_ip;
use switchyard_vm_tests::{in_netns, Netns};

use super::config::{ADDRESSES, FIRST_ADDRESS, LB_ADDRESS};

const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the endpoint server waits for readiness before it looks at
/// its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The two namespaces and the veth between them.
pub struct Lab {
    pub lb: Netns,
    pub backends: Netns,
}

/// The LB's interface, the one `switchyard run` serves.
pub const LB_INTERFACE: &str = "l0";

impl Lab {
    pub fn build() -> Result<Lab> {
        let lb = Netns::new("hlb")?;
        let backends = Netns::new("hbe")?;
        run_ip(&[
            "link",
            "add",
            LB_INTERFACE,
            "netns",
            lb.name(),
            "type",
            "veth",
            "peer",
            "name",
            "b0",
            "netns",
            backends.name(),
        ])?;
        lb.ip(&[
            "addr",
            "add",
            &format!("{LB_ADDRESS}/24"),
            "dev",
            LB_INTERFACE,
        ])?;
        let first = u32::from(FIRST_ADDRESS);
        for a in 0..ADDRESSES {
            let address = std::net::Ipv4Addr::from(first + a);
            backends.ip(&["addr", "add", &format!("{address}/24"), "dev", "b0"])?;
        }
        lb.ip(&["link", "set", LB_INTERFACE, "up"])?;
        backends.ip(&["link", "set", "b0", "up"])?;
        wait_links_up(&lb, &[LB_INTERFACE], LINK_UP_TIMEOUT)?;
        wait_links_up(&backends, &["b0"], LINK_UP_TIMEOUT)?;
        Ok(Lab { lb, backends })
    }
}

/// One listening socket per endpoint in the backends namespace, and a
/// thread that accepts and closes what they queue: the kernel completes a
/// probe's handshake from the backlog, and accepting keeps the backlog
/// from filling over a long run.
pub struct EndpointServer {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
    listening: usize,
}

impl EndpointServer {
    pub fn start(ns: &Netns, endpoints: &[SocketAddrV4]) -> Result<EndpointServer> {
        raise_open_files(endpoints.len() as u64 + 1024)?;
        let listeners = in_netns(ns, || -> Result<Vec<TcpListener>> {
            endpoints
                .iter()
                .map(|e| {
                    let listener =
                        TcpListener::bind(e).with_context(|| format!("listening on {e}"))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .collect()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let listening = listeners.len();
        let thread = std::thread::Builder::new()
            .name("endpoints".into())
            .spawn({
                let stop = stop.clone();
                let accepted = accepted.clone();
                move || serve(listeners, &stop, &accepted)
            })
            .context("starting the endpoint server")?;
        Ok(EndpointServer {
            stop,
            accepted,
            thread: Some(thread),
            listening,
        })
    }

    /// Connections accepted so far, over every endpoint.
    pub fn accepted(&self) -> u64 {
        // Relaxed: a count read for a rate, ordered with nothing else.
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn listening(&self) -> usize {
        self.listening
    }

    /// Fails if the server has stopped on an error (its endpoints would
    /// then fail their probes for a reason of the benchmark's own).
    pub fn check(&mut self) -> Result<()> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let result = self.thread.take().map(|t| t.join());
            match result {
                Some(Ok(Err(e))) => bail!("the endpoint server stopped: {e}"),
                Some(Err(_)) => bail!("the endpoint server panicked"),
                _ => bail!("the endpoint server stopped"),
            }
        }
        Ok(())
    }
}

impl Drop for EndpointServer {
    fn drop(&mut self) {
        // Relaxed: the flag is polled; nothing else is published with it.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits on every listener at once (epoll) and accepts until each is
/// empty; an accepted connection is closed at once.
fn serve(listeners: Vec<TcpListener>, stop: &AtomicBool, accepted: &AtomicU64) -> io::Result<()> {
    let epoll = Epoll::new()?;
    for (i, listener) in listeners.iter().enumerate() {
        epoll.add(listener.as_raw_fd(), i as u64)?;
    }
    let mut ready = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        epoll.wait(&mut ready, STOP_CHECK)?;
        for &i in &ready {
            let Some(listener) = listeners.get(i as usize) else {
                continue;
            };
            loop {
                match listener.accept() {
                    Ok(_) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The prober closed before its connection was taken.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// An epoll instance, closed on drop.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes only flags and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open for the call, and `event` is a valid
        // epoll_event the kernel only reads.
        let rc = unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tokens of the ready fds, after at most `timeout`.
    fn wait(&self, tokens: &mut Vec<u64>, timeout: Duration) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: the kernel writes at most `events.len()` entries into the
        // array, which lives across the call.
        let n = unsafe {
            libc::epoll_wait(
                self.0,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout.as_millis() as i32,
            )
        };
        tokens.clear();
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        tokens.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is this guard's own and closed only here.
        unsafe { libc::close(self.0) };
    }
}

/// Raises this process's soft limit on open files to at least `wanted`
/// (the endpoint server holds one socket per endpoint; the daemon, started
/// from here, inherits the limit).
fn raise_open_files(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, which it owns.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
    }
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    if limit.rlim_max < wanted {
        bail!(
            "{wanted} open files are needed but RLIMIT_NOFILE's hard limit is {}: \
             raise it (ulimit -Hn) or measure fewer endpoints",
            limit.rlim_max
        );
    }
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit reads one rlimit from `limit`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
    }
    Ok(())
}
