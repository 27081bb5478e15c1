//! Probes and the monitor against real sockets, each test in a network
//! namespace of its own (needs root; skipped otherwise): its loopback for
//! servers, and a veth pair whose peer holds no address for a destination
//! that never answers. Waits poll with generous deadlines, never fixed
//! sleeps.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use switchyard_config::snapshot::{Endpoint, HealthCheck, Probe, WhenAllUnhealthy};

use super::probe::{self, Verdict};
use super::{Health, Monitor, MonitorOptions, Observation, ProbeOutcome, Target};

/// On the namespace's veth, whose peer has no address: SYNs and datagrams
/// to it wait for ARP forever.
const SILENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const DEADLINE: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipped: network namespaces need root");
    }
    root
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `test` on a thread moved into a fresh network namespace (gone
/// with its last socket and thread). Threads it spawns, and commands it
/// runs, share the namespace.
fn in_netns<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "h0", "type", "veth", "peer", "name", "h1"]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", "h0"]);
        ip(&["link", "set", "h0", "up"]);
        ip(&["link", "set", "h1", "up"]);
        test()
    })
    .join()
    .expect("test thread")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn tcp_probe() -> Probe {
    Probe::Tcp {
        send: Vec::new(),
        receive: Vec::new(),
    }
}

fn http_probe(body: &str) -> Probe {
    Probe::Http {
        path: "/healthz".into(),
        host: None,
        expected_statuses: vec![200],
        expected_body: body.as_bytes().to_vec(),
    }
}

fn run_probe(probe: &Probe, to: SocketAddr) -> (ProbeOutcome, Verdict) {
    block_on(probe::run(probe, to, Duration::from_millis(300)))
}

/// A server on 127.0.0.1 that runs `handle` for each connection on its
/// own thread, until stopped or dropped.
struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        Self::start_at((Ipv4Addr::LOCALHOST, 0).into(), handle)
    }

    fn start_at(addr: SocketAddr, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(addr).expect("binding a test server");
        let addr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).expect("blocking stream");
                            let handle = handle.clone();
                            std::thread::spawn(move || handle(stream));
                        }
                        // Polling keeps the server stoppable; it is not a
                        // wait for readiness.
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket: connects are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts and closes.
fn accept_only(_: TcpStream) {}

/// Reads a request head, answers `response`, closes; keeps each head.
fn http_server(response: &'static [u8]) -> (TcpServer, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let server = TcpServer::start(move |mut stream| {
        let head = read_head(&mut stream);
        seen.lock().unwrap().push(head);
        let _ = stream.write_all(response);
    });
    (server, heads)
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn tcp_probe_passes_on_connect() {
    if !is_root() {
        return;
    }
    let (outcome, verdict) = in_netns(|| {
        let server = TcpServer::start(accept_only);
        run_probe(&tcp_probe(), server.addr)
    });
    assert_eq!(verdict, Verdict::Pass, "{outcome:?}");
    assert_eq!(outcome.detail, "connected");
    assert!(outcome.passed);
}

#[test]
fn probes_reach_ipv6_endpoints() {
    if !is_root() {
        return;
    }
    let (tcp, udp, heads, addr) = in_netns(|| {
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("::1 in the namespace");
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (server, heads) = {
            let heads = Arc::new(Mutex::new(Vec::new()));
            let seen = heads.clone();
            let server = TcpServer::start_at(addr, move |mut stream| {
                seen.lock().unwrap().push(read_head(&mut stream));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            });
            (server, heads)
        };
        let tcp = run_probe(&http_probe(""), server.addr);
        let closed = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let udp = run_probe(
            &Probe::Udp {
                send: b"ping".to_vec(),
                receive: Vec::new(),
            },
            closed,
        );
        let heads = heads.lock().unwrap().clone();
        (tcp, udp, heads, addr)
    });
    assert_eq!(tcp.1, Verdict::Pass, "{tcp:?}");
    assert!(
        heads[0].contains(&format!("\r\nHost: [::1]:{}\r\n", addr.port())),
        "{heads:?}"
    );
    assert_eq!(udp.1, Verdict::Fail, "{udp:?}");
}

#[test]
fn tcp_probe_fails_at_once_when_refused() {
    if !is_root() {
        return;
    }
    let (outcome, verdict) = in_netns(|| {
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        run_probe(&tcp_probe(), addr)
    });
    assert_eq!(verdict, Verdict::Fail, "{outcome:?}");
    assert_eq!(outcome.detail, "connect: Connection refused");
}

#[test]
fn tcp_probe_times_out_when_nothing_answers() {
    if !is_root() {
        return;
    }
    let (outcome, verdict) = in_netns(|| run_probe(&tcp_probe(), (SILENT, 80).into()));
    assert_eq!(verdict, Verdict::Timeout, "{outcome:?}");
    assert_eq!(outcome.detail, "connect: no answer within 300ms");
    assert!(outcome.latency >= Duration::from_millis(300));
}

#[test]
fn tcp_probe_sends_and_expects() {
    if !is_root() {
        return;
    }
    let ping = Probe::Tcp {
        send: b"PING\r\n".to_vec(),
        receive: b"PONG".to_vec(),
    };
    let [good, wrong, silent] = in_netns(move || {
        let pong = TcpServer::start(|mut stream| {
            let mut line = [0u8; 6];
            if stream.read_exact(&mut line).is_ok() && &line == b"PING\r\n" {
                // In two writes: the probe must gather what it reads.
                let _ = stream.write_all(b"+PO");
                let _ = stream.flush();
                let _ = stream.write_all(b"NG\r\n");
            }
        });
        let nope = TcpServer::start(|mut stream| {
            let _ = stream.read_exact(&mut [0u8; 6]);
            let _ = stream.write_all(b"-ERR\r\n");
        });
        let mute = TcpServer::start(|mut stream| {
            // Holds the connection open without a word.
            let _ = stream.read(&mut [0u8; 64]);
            let _ = stream.read(&mut [0u8; 64]);
        });
        [pong.addr, nope.addr, mute.addr].map(|addr| run_probe(&ping, addr))
    });
    assert_eq!(good.1, Verdict::Pass, "{good:?}");
    assert_eq!(good.0.detail, "reply contained \"PONG\"");
    assert_eq!(wrong.1, Verdict::Fail, "{wrong:?}");
    assert_eq!(wrong.0.detail, "reply did not contain \"PONG\"");
    assert_eq!(silent.1, Verdict::Timeout, "{silent:?}");
    assert_eq!(silent.0.detail, "no reply within 300ms");
}

/// A UDP server on 127.0.0.1 answering each datagram with `reply`.
fn udp_server(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicBool>) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(reply, from);
            }
        }
    });
    (addr, stop)
}

#[test]
fn udp_probe_passes_on_the_expected_reply_only() {
    if !is_root() {
        return;
    }
    let udp = |receive: &str| Probe::Udp {
        send: b"ping".to_vec(),
        receive: receive.as_bytes().to_vec(),
    };
    let (pong, any, wrong) = in_netns(move || {
        let (addr, stop) = udp_server(b"pong\n");
        let results = (
            run_probe(&udp("pong"), addr),
            run_probe(&udp(""), addr),
            run_probe(&udp("ready"), addr),
        );
        stop.store(true, Ordering::Relaxed);
        results
    });
    assert_eq!(pong.1, Verdict::Pass, "{pong:?}");
    assert_eq!(pong.0.detail, "reply contained \"pong\"");
    assert_eq!(any.1, Verdict::Pass, "{any:?}");
    assert_eq!(wrong.1, Verdict::Timeout, "{wrong:?}");
    assert_eq!(
        wrong.0.detail,
        "reply did not contain \"ready\" within 300ms"
    );
}

#[test]
fn udp_probe_without_a_reply_times_out() {
    if !is_root() {
        return;
    }
    let (outcome, verdict) = in_netns(|| {
        let deaf = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let probe = Probe::Udp {
            send: b"ping".to_vec(),
            receive: Vec::new(),
        };
        let result = run_probe(&probe, deaf.local_addr().unwrap());
        drop(deaf);
        result
    });
    assert_eq!(verdict, Verdict::Timeout, "{outcome:?}");
    assert_eq!(outcome.detail, "no reply within 300ms");
}

#[test]
fn udp_probe_fails_at_once_on_port_unreachable() {
    if !is_root() {
        return;
    }
    let (outcome, verdict) = in_netns(|| {
        let addr = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let probe = Probe::Udp {
            send: b"ping".to_vec(),
            receive: Vec::new(),
        };
        run_probe(&probe, addr)
    });
    assert_eq!(verdict, Verdict::Fail, "{outcome:?}");
    assert_eq!(
        outcome.detail,
        "port unreachable (ICMP): nothing listens there"
    );
    assert!(outcome.latency < Duration::from_millis(300));
}

#[test]
fn http_probe_judges_status_and_body() {
    if !is_root() {
        return;
    }
    let results = in_netns(|| {
        let cases: [(&'static [u8], Probe); 6] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                http_probe("ok"),
            ),
            (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nok",
                http_probe(""),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nstarted",
                http_probe("ok"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nall\r\n4\r\n is \r\n2\r\nok\r\n0\r\n\r\n",
                http_probe("is ok"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstatus: ok",
                http_probe("ok"),
            ),
            (b"SSH-2.0-OpenSSH_9.2\r\n", http_probe("")),
        ];
        cases.map(|(response, probe)| {
            let (server, _) = http_server(response);
            run_probe(&probe, server.addr)
        })
    });
    let details: Vec<(&str, Verdict)> = results
        .iter()
        .map(|(outcome, verdict)| (outcome.detail.as_str(), *verdict))
        .collect();
    assert_eq!(
        details,
        [
            ("HTTP 200, body contained \"ok\"", Verdict::Pass),
            ("HTTP 500, expected 200", Verdict::Fail),
            ("HTTP 200, body did not contain \"ok\"", Verdict::Fail),
            ("HTTP 200, body contained \"is ok\"", Verdict::Pass),
            ("HTTP 200, body contained \"ok\"", Verdict::Pass),
            ("invalid HTTP response: invalid HTTP version", Verdict::Fail),
        ]
    );
}

#[test]
fn http_probe_sends_a_get_with_host_user_agent_and_close() {
    if !is_root() {
        return;
    }
    let (heads, addr, verdict) = in_netns(|| {
        let (server, heads) = http_server(b"HTTP/1.1 204 No Content\r\n\r\n");
        let probe = Probe::Http {
            path: "/healthz?full=1".into(),
            host: None,
            expected_statuses: vec![200, 204],
            expected_body: Vec::new(),
        };
        let (_, verdict) = run_probe(&probe, server.addr);
        let heads = heads.lock().unwrap().clone();
        (heads, server.addr, verdict)
    });
    assert_eq!(verdict, Verdict::Pass);
    let head = &heads[0];
    assert!(
        head.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
    assert!(
        head.contains("\r\nUser-Agent: switchyard-health\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
}

#[test]
fn a_backend_that_accepts_tcp_but_answers_500_fails_http_and_passes_tcp() {
    if !is_root() {
        return;
    }
    let (http, tcp) = in_netns(|| {
        let (server, _) = http_server(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
        (
            run_probe(&http_probe(""), server.addr),
            run_probe(&tcp_probe(), server.addr),
        )
    });
    assert_eq!(http.1, Verdict::Fail, "{http:?}");
    assert_eq!(tcp.1, Verdict::Pass, "{tcp:?}");
}

fn check(probe: Probe, interval_ms: u64, healthy: u32, unhealthy: u32) -> Arc<HealthCheck> {
    Arc::new(HealthCheck {
        policy: "demo/web-health".into(),
        probe,
        port: None,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms / 2),
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
        when_all_unhealthy: WhenAllUnhealthy::FailOpen,
    })
}

fn target(addr: SocketAddr, check: &Arc<HealthCheck>) -> Target {
    Target {
        endpoint: Endpoint {
            address: addr.ip(),
            port: addr.port(),
        },
        check: check.clone(),
    }
}

/// Polls `monitor` until `done` holds of its observations; how long that
/// took.
fn wait_for(
    monitor: &Monitor,
    what: &str,
    done: impl Fn(&BTreeMap<Target, Observation>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let observations = monitor.observations();
        if done(&observations) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}: {observations:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn health_of(observations: &BTreeMap<Target, Observation>, target: &Target) -> Option<Health> {
    observations.get(target).map(|o| o.health)
}

#[test]
fn monitor_takes_a_stopped_server_out_and_back() {
    if !is_root() {
        return;
    }
    in_netns(|| {
        let check = check(tcp_probe(), 200, 2, 2);
        let mut a = TcpServer::start(accept_only);
        let b = TcpServer::start(accept_only);
        let (ta, tb) = (target(a.addr, &check), target(b.addr, &check));
        let changes = Arc::new(AtomicUsize::new(0));
        let counted = changes.clone();
        let monitor = Monitor::start(
            MonitorOptions::default(),
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        monitor.set_targets(vec![ta.clone(), tb.clone()]);
        assert_eq!(monitor.targets_len(), 2);
        wait_for(&monitor, "both healthy", |o| {
            health_of(o, &ta) == Some(Health::Healthy) && health_of(o, &tb) == Some(Health::Healthy)
        });
        // Unknown to healthy changes nothing that serves.
        assert_eq!(changes.load(Ordering::SeqCst), 0);

        a.stop();
        let took = wait_for(&monitor, "a unhealthy", |o| {
            health_of(o, &ta) == Some(Health::Unhealthy)
        });
        eprintln!("unhealthy {took:?} after the server stopped (interval 200ms, threshold 2)");
        let observations = monitor.observations();
        let seen = &observations[&ta];
        assert_eq!(
            seen.reason,
            "2 probes failed in a row: connect: Connection refused"
        );
        assert!(seen.changed_at.is_some());
        assert_eq!(health_of(&observations, &tb), Some(Health::Healthy));
        assert_eq!(changes.load(Ordering::SeqCst), 1);

        let _a = TcpServer::start_at(a.addr, accept_only);
        wait_for(&monitor, "a healthy again", |o| {
            health_of(o, &ta) == Some(Health::Healthy)
        });
        assert_eq!(
            monitor.observations()[&ta].reason,
            "2 probes passed in a row: connected"
        );
        assert_eq!(changes.load(Ordering::SeqCst), 2);
        let stats = monitor.probe_stats();
        let tcp = stats.iter().find(|s| s.kind == "TCP").unwrap();
        assert!(tcp.passed > 0 && tcp.failed >= 2, "{tcp:?}");
        assert_eq!(
            tcp.latency_ns.histogram.len(),
            tcp.passed + tcp.failed + tcp.timed_out
        );
    });
}

#[test]
fn set_targets_keeps_the_state_of_kept_targets() {
    if !is_root() {
        return;
    }
    in_netns(|| {
        let check = check(tcp_probe(), 100, 1, 1);
        let a = TcpServer::start(accept_only);
        let b = TcpServer::start(accept_only);
        let (ta, tb) = (target(a.addr, &check), target(b.addr, &check));
        let monitor = Monitor::start(MonitorOptions::default(), Arc::new(|| {})).unwrap();
        monitor.set_targets(vec![ta.clone(), tb.clone()]);
        wait_for(&monitor, "a probed a few times", |o| {
            o.get(&ta).is_some_and(|o| o.passes >= 3)
        });
        let before = monitor.observations()[&ta].passes;

        let refused = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let tc = target(refused, &check);
        monitor.set_targets(vec![ta.clone(), tc.clone()]);
        let observations = monitor.observations();
        assert_eq!(monitor.targets_len(), 2);
        assert!(!observations.contains_key(&tb));
        assert_eq!(observations[&ta].health, Health::Healthy);
        assert!(observations[&ta].passes >= before);
        assert_eq!(observations[&tc].health, Health::Unknown);
        wait_for(&monitor, "c unhealthy", |o| {
            health_of(o, &tc) == Some(Health::Unhealthy)
        });
    });
}

#[test]
fn monitor_caps_probes_in_flight() {
    if !is_root() {
        return;
    }
    const CAP: usize = 3;
    let (most, accepted, skipped) = in_netns(|| {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (n, m, a) = (now.clone(), most.clone(), accepted.clone());
        // Every 127/8 address is this namespace's loopback: one server,
        // twenty endpoints.
        let server = TcpServer::start_at((Ipv4Addr::UNSPECIFIED, 0).into(), move |mut stream| {
            a.fetch_add(1, Ordering::SeqCst);
            let current = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(current, Ordering::SeqCst);
            read_head(&mut stream);
            // A slow backend: the probe stays in flight meanwhile.
            std::thread::sleep(Duration::from_millis(300));
            n.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        });
        // Twenty probes of 300 ms a second want six in flight; the timeout
        // (500 ms) outlasts each, so none is abandoned while counted.
        let check = check(http_probe(""), 1000, 1, 3);
        let targets: Vec<Target> = (1..=20u8)
            .map(|host| {
                target(
                    (Ipv4Addr::new(127, 0, 0, host), server.addr.port()).into(),
                    &check,
                )
            })
            .collect();
        let monitor = Monitor::start(
            MonitorOptions {
                max_concurrent: CAP,
                threads: 2,
            },
            Arc::new(|| {}),
        )
        .unwrap();
        monitor.set_targets(targets);
        let start = Instant::now();
        while accepted.load(Ordering::SeqCst) < 40 {
            assert!(monitor.in_flight() <= CAP);
            assert!(start.elapsed() < DEADLINE, "probes did not run");
            std::thread::sleep(Duration::from_millis(5));
        }
        let skipped = monitor.probe_stats().iter().map(|s| s.skipped).sum::<u64>();
        (
            most.load(Ordering::SeqCst),
            accepted.load(Ordering::SeqCst),
            skipped,
        )
    });
    eprintln!("most connections at once: {most}, accepted {accepted}, skipped {skipped}");
    assert!(most <= CAP, "{most} probes in flight at once");
    // Twenty probes a second wanted, ten served (three at a time, 300 ms
    // each): the rest are skipped, not queued ever later.
    assert!(skipped > 0, "none skipped");
}

#[test]
fn a_flapping_server_is_held_out_rather_than_toggled() {
    if !is_root() {
        return;
    }
    in_netns(|| {
        let check = check(tcp_probe(), 100, 1, 1);
        let mut server = TcpServer::start(accept_only);
        let addr = server.addr;
        let flapper = target(addr, &check);
        let changes = Arc::new(AtomicUsize::new(0));
        let counted = changes.clone();
        let monitor = Monitor::start(
            MonitorOptions::default(),
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        monitor.set_targets(vec![flapper.clone()]);
        wait_for(&monitor, "healthy", |o| {
            health_of(o, &flapper) == Some(Health::Healthy)
        });
        // Down 300 ms, up 300 ms: three probes each way, a change of
        // health every time with thresholds of one.
        let mut flap = || {
            server.stop();
            std::thread::sleep(Duration::from_millis(300));
            server = TcpServer::start_at(addr, accept_only);
            std::thread::sleep(Duration::from_millis(300));
        };
        let start = Instant::now();
        while health_of(&monitor.observations(), &flapper) != Some(Health::Flapping) {
            assert!(start.elapsed() < DEADLINE, "never flapping");
            flap();
        }
        let flips = changes.load(Ordering::SeqCst);
        for _ in 0..4 {
            flap();
            let observation = &monitor.observations()[&flapper];
            assert_eq!(observation.health, Health::Flapping, "{observation:?}");
            assert!(observation.penalty >= 1.0, "{observation:?}");
        }
        assert_eq!(
            changes.load(Ordering::SeqCst),
            flips,
            "toggled while flapping"
        );
        let reason = &monitor.observations()[&flapper].reason;
        assert!(
            reason.ends_with("flapping, held out until stable"),
            "{reason}"
        );
    });
}

/// User and system CPU time of this process's threads named like the
/// monitor's (`comm` holds 15 bytes of the name).
fn monitor_cpu() -> (Duration, Duration) {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (mut user, mut system) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("switchyard-heal") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: utime and stime are the
        // 14th and 15th of the line, the 12th and 13th after it.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let field = |i: usize| -> u64 {
            rest.split_whitespace()
                .nth(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or(0)
        };
        user += field(11);
        system += field(12);
    }
    let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second);
    (seconds(user), seconds(system))
}

/// The monitor alone (no daemon) probing N loopback endpoints by TCP
/// connect every second: its threads' CPU per second and probe latency.
/// A measurement, not a check: `cargo test --release -p
/// switchyard-daemon probing_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn probing_cost_for_one_and_ten_thousand_targets() {
    if !is_root() {
        return;
    }
    in_netns(|| {
        // The endpoints' server on a runtime of its own: one listener on
        // every loopback address, accepting and closing.
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("endpoint-server")
            .enable_io()
            .build()
            .unwrap();
        let port = server.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind((Ipv4Addr::UNSPECIFIED, 0).into()).unwrap();
            let listener = socket.listen(4096).unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                loop {
                    let _ = listener.accept().await;
                }
            });
            port
        });
        for count in [1000u32, 10_000] {
            let check = check(tcp_probe(), 1000, 1, 3);
            let targets: Vec<Target> = (0..count)
                .map(|i| {
                    let [_, _, x, y] = (i + 256).to_be_bytes();
                    target((Ipv4Addr::new(127, 1, x, y), port).into(), &check)
                })
                .collect();
            let monitor = Monitor::start(MonitorOptions::default(), Arc::new(|| {})).unwrap();
            monitor.set_targets(targets);
            wait_for(&monitor, "every target probed", |o| {
                o.values().all(|o| o.passes + o.failures > 0)
            });
            let window = Duration::from_secs(5);
            let (cpu_before, stats_before) = (monitor_cpu(), monitor.probe_stats());
            let start = Instant::now();
            std::thread::sleep(window);
            let (cpu_after, elapsed) = (monitor_cpu(), start.elapsed());
            let system = cpu_after.1 - cpu_before.1;
            let cpu = cpu_after.0 - cpu_before.0 + system;
            let stats = monitor.probe_stats();
            let tcp = &stats[0];
            let probes = tcp.passed + tcp.failed + tcp.timed_out
                - (stats_before[0].passed + stats_before[0].failed + stats_before[0].timed_out);
            let h = &tcp.latency_ns.histogram;
            println!(
                "{count} targets: {:.1} ms CPU/s ({:.0}% system), {:.0} probes/s, failed {}, timed out {}, \
                 skipped {}, latency p50 {:?} p99 {:?} max {:?}",
                cpu.as_secs_f64() * 1000.0 / elapsed.as_secs_f64(),
                100.0 * system.as_secs_f64() / cpu.as_secs_f64().max(1e-9),
                probes as f64 / elapsed.as_secs_f64(),
                tcp.failed,
                tcp.timed_out,
                tcp.skipped,
                Duration::from_nanos(h.value_at_quantile(0.5)),
                Duration::from_nanos(h.value_at_quantile(0.99)),
                Duration::from_nanos(h.max()),
            );
            drop(monitor);
        }
        server.shutdown_background();
    });
}
