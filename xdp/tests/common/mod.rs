//! What the integration tests share: throwaway network namespaces, AF_XDP
//! sockets, the steering program configured for the packet fixtures'
//! scenario, and frames the fixtures do not hold.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod frames;

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    panic,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use switchyard_wire::fixtures::scenario::{
    BACKEND, BACKEND6, BACKEND_TCP_PORT, BACKEND_UDP_PORT, DSR_UDP_PORT, GUE_UDP_PORT,
    IPIP_TCP_PORT, LB_BACKEND_ARM, LB_BACKEND_ARM6, LB_CLIENT_ARM, LB_CLIENT_ARM6, TCP_PORT,
    UDP_PORT, VIP, VIP6,
};
use switchyard_xdp::{
    AttachMode, RxQueue, ServiceMatch, SteerCounter, SteerCounters, Steering, XdpAction,
};

/// A network namespace created for one test and deleted on drop, even when
/// the test panics.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `swy-xdp-<pid>-<n>`, unique within this machine.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: the counter only has to hand out distinct values.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("swy-xdp-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        // No IPv6 on its links: a link coming up sends Neighbor Discovery
        // and MLD frames on its own, which the attached program would count
        // between a test's two counter readings.
        ns.run(|| {
            // /proc/sys/net resolves against the opening thread's namespace.
            for scope in ["all", "default"] {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6"), "1")
                    .unwrap_or_else(|err| panic!("disabling IPv6 ({scope}): {err}"));
            }
        });
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Adds a veth pair `a` <-> `b` with `queues` rx/tx queues each, both up.
    pub fn add_veth(&self, a: &str, b: &str, queues: u32) {
        let queues = queues.to_string();
        self.ip(&[
            "link",
            "add",
            a,
            "numrxqueues",
            &queues,
            "numtxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numrxqueues",
            &queues,
            "numtxqueues",
            &queues,
        ]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }

    /// Runs `f` on a thread that has entered this namespace: XDP attach,
    /// interface lookups and BPF_PROG_TEST_RUN's ingress_ifindex all resolve
    /// in the calling thread's namespace. A panic in `f` is re-raised here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).unwrap_or_else(|err| panic!("opening {path}: {err}"));
        thread::scope(|scope| {
            let handle = scope.spawn(move || {
                // SAFETY: `ns` is an open netns file; setns only changes this
                // thread's namespace, which ends with the thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            handle
                .join()
                .unwrap_or_else(|payload| panic::resume_unwind(payload))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not delete netns {}: {status:?}", self.name);
        }
    }
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An AF_XDP socket, unbound: enough for the kernel to accept it in an
/// XSKMAP, which is all BPF_PROG_TEST_RUN needs (it does not redirect).
pub fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a freshly created descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The interface the scenario's steering program is attached to.
pub const LB_IF: &str = "lb0";
/// The queue of `LB_IF` with a registered socket.
pub const SOCKET_QUEUE: u32 = 0;
/// A queue of `LB_IF` without one.
pub const EMPTY_QUEUE: u32 = 1;

/// The steering program in the packet fixtures' scenario
/// (`switchyard_wire::fixtures`): attached natively to `lb0` (two rx queues)
/// in a fresh namespace, with the TCP and UDP listeners of the VIP and of
/// the IPv6 VIP and their backend endpoints, the LB's four addresses (two
/// per family) as its own, and an AF_XDP socket on queue 0. `f` runs inside the namespace, given the program and
/// the receive context of that queue.
pub fn with_scenario_steering<T: Send>(f: impl FnOnce(&mut Steering, RxQueue) -> T + Send) -> T {
    let ns = NetNs::new();
    ns.add_veth(LB_IF, "peer0", 2);
    ns.run(|| {
        let mut steering = Steering::load().expect("loading the steering program");
        steering
            .attach(LB_IF, AttachMode::Native)
            .expect("attaching to lb0");
        let ifindex = steering.attached().next().unwrap().ifindex;
        steering
            .set_services(
                &[
                    ServiceMatch::tcp(VIP.into(), TCP_PORT, 1),
                    ServiceMatch::udp(VIP.into(), UDP_PORT, 2),
                    ServiceMatch::tcp(VIP6.into(), TCP_PORT, 3),
                    ServiceMatch::udp(VIP6.into(), UDP_PORT, 4),
                    ServiceMatch::tcp(VIP.into(), IPIP_TCP_PORT, 5),
                    ServiceMatch::udp(VIP.into(), GUE_UDP_PORT, 6),
                    ServiceMatch::tcp(VIP6.into(), IPIP_TCP_PORT, 7),
                    ServiceMatch::udp(VIP6.into(), GUE_UDP_PORT, 8),
                    ServiceMatch::udp(VIP.into(), DSR_UDP_PORT, 9),
                ],
                &[
                    ServiceMatch::tcp(BACKEND.into(), BACKEND_TCP_PORT, 1),
                    ServiceMatch::udp(BACKEND.into(), BACKEND_UDP_PORT, 2),
                    ServiceMatch::tcp(BACKEND6.into(), BACKEND_TCP_PORT, 3),
                    ServiceMatch::udp(BACKEND6.into(), BACKEND_UDP_PORT, 4),
                    ServiceMatch::tcp(BACKEND.into(), IPIP_TCP_PORT, 5),
                    ServiceMatch::udp(BACKEND.into(), GUE_UDP_PORT, 6),
                    ServiceMatch::tcp(BACKEND6.into(), IPIP_TCP_PORT, 7),
                    ServiceMatch::udp(BACKEND6.into(), GUE_UDP_PORT, 8),
                    ServiceMatch::udp(BACKEND.into(), DSR_UDP_PORT, 9),
                ],
            )
            .expect("setting services");
        steering
            .set_local_addrs(&[
                LB_CLIENT_ARM.into(),
                LB_BACKEND_ARM.into(),
                LB_CLIENT_ARM6.into(),
                LB_BACKEND_ARM6.into(),
            ])
            .expect("setting local addresses");
        let socket = xdp_socket();
        steering
            .register_socket(ifindex, SOCKET_QUEUE, socket.as_raw_fd())
            .expect("registering an AF_XDP socket");
        let rx = RxQueue {
            ifindex,
            queue: SOCKET_QUEUE,
        };
        f(&mut steering, rx)
    })
}

/// What one run of the program did to a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Ran {
    pub verdict: XdpAction,
    /// Every counter that moved, with how much.
    pub bumped: Vec<(SteerCounter, u64)>,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// Runs `frame` once through BPF_PROG_TEST_RUN as received on `rx`.
pub fn run_frame(steering: &Steering, frame: &[u8], rx: Option<RxQueue>) -> Ran {
    let before = steering.counters().expect("reading counters");
    let (verdict, out) = steering
        .test_run_output(frame, rx)
        .expect("BPF_PROG_TEST_RUN");
    let after = steering.counters().expect("reading counters");
    Ran {
        verdict,
        bumped: bumped(&before, &after),
        frame: out,
    }
}

fn bumped(before: &SteerCounters, after: &SteerCounters) -> Vec<(SteerCounter, u64)> {
    after
        .iter()
        .zip(before.iter())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((counter, a), (_, b))| (counter, a - b))
        .collect()
}
