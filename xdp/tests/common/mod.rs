//! Test fixtures shared by the integration tests: throwaway network
//! namespaces, AF_XDP sockets, and frames built byte by byte.

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
        Self { name }
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
