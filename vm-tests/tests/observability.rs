//! End-to-end: what an operator reads off the LB node, checked against the
//! traffic the test sends: `yardctl status` (interfaces, queues, pinned
//! cores, modes, reload result), `latency`, `stats --watch` rates and drop
//! rates over a known burst, terminating backends in `backends` and
//! `config diff`, `top` in a real terminal, the error for a user who may
//! not open the socket, and the Prometheus endpoint of `--metrics-listen`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use switchyard_proto::{
    BackendsReport, ConfigDiffReport, Distribution, LatencyReport, StatsReport, StatusReport,
};
use switchyard_vm_tests::client::udp_socket_towards;
use switchyard_vm_tests::config::{
    ListenerSpec, Protocol, TCP_LISTENER, TCP_PORT, TCP_TARGET_PORT, UDP_LISTENER, UDP_PORT,
    UDP_TARGET_PORT,
};
use switchyard_vm_tests::poll::poll_until;
use switchyard_vm_tests::process::{kill_and_reap, run_with_timeout};
use switchyard_vm_tests::topology::VIP;
use switchyard_vm_tests::{
    in_netns, tcp_exchange, tcp_exchange_keep_open, udp_exchange, Daemon, DaemonOptions,
    GatewaySpec, TempDir, Topology,
};

const DEADLINE: Duration = Duration::from_secs(10);
/// Inside the LB namespace, whose loopback is its own.
const METRICS_ADDR: &str = "127.0.0.1:9464";
/// Maglev table size of a listener without a table-size policy.
const TABLE_SIZE: usize = 65_537;

fn ordered(what: &str, d: &Distribution) -> Result<()> {
    ensure!(
        d.count > 0
            && d.min > 0
            && d.min <= d.p50
            && d.p50 <= d.p90
            && d.p90 <= d.p99
            && d.p99 <= d.p999
            && d.p999 <= d.max,
        "{what}: quantiles not positive and ordered: {d:?}"
    );
    Ok(())
}

#[test]
fn status_names_interfaces_queues_pinned_cores_modes_and_the_last_reload() -> Result<()> {
    let topo = Topology::single_arm(2)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    // No machine this runs on has a core 1000: refused before anything is
    // attached, naming the core.
    let refused = Daemon::start(
        &topo.lb,
        &path,
        &DaemonOptions::new(topo.lb_interfaces())
            .queues(2)
            .cores("0,1000"),
    );
    match refused {
        Ok(_) => bail!("--cores 0,1000 was accepted"),
        Err(err) => ensure!(
            format!("{err:#}").contains("--cores: core 1000 is not one this process may run on"),
            "{err:#}"
        ),
    }
    // Core 0 exists everywhere; both workers cycle onto it.
    let opts = DaemonOptions::new(topo.lb_interfaces())
        .queues(2)
        .cores("0");
    let daemon = Daemon::start(&topo.lb, &path, &opts)?;

    let status: StatusReport = daemon.yardctl_as(&["status"])?;
    ensure!(status.version == env!("CARGO_PKG_VERSION"), "{status:?}");
    ensure!(
        status.uptime_secs <= daemon.uptime().as_secs(),
        "up longer than the process: {status:?}"
    );
    let [eth0] = status.interfaces.as_slice() else {
        bail!("one interface: {status:?}");
    };
    ensure!(
        eth0.name == "eth0" && eth0.xdp_mode == "native" && eth0.queues == 2 && eth0.rx_queues == 2,
        "{eth0:?}"
    );
    let [w0, w1] = status.workers.as_slice() else {
        bail!("two workers: {status:?}");
    };
    ensure!(
        (w0.queue, w0.core, w0.pinned) == (0, Some(0), true),
        "worker 0 pinned to core 0: {w0:?}"
    );
    ensure!(
        (w1.queue, w1.core, w1.pinned) == (1, Some(0), true),
        "worker 1 pinned to core 0: {w1:?}"
    );
    ensure!(
        status.workers.iter().all(|w| w.afxdp_modes == ["copy"]),
        "veth has no zero-copy: {status:?}"
    );
    ensure!(
        status.config_generation == 1 && status.reload.last_result == "none",
        "{status:?}"
    );
    let table = daemon.yardctl_raw(&["status"])?;
    ensure!(
        table.status.success() && table.stdout.contains("yes") && !table.stdout.contains("NO"),
        "the table says the pins held: {}",
        table.stdout
    );

    // A broken file is refused and says so; a good one is applied.
    std::fs::write(&path, "kind: Gateway\nspec: [unclosed\n")?;
    let refused = poll_until(DEADLINE, "the broken file to be refused", || {
        let s: StatusReport = daemon.yardctl_as(&["status"])?;
        Ok((s.reload.last_result == "refused").then_some(s))
    })?;
    ensure!(
        refused.reload.failed_reloads >= 1
            && refused.reload.last_error.is_some()
            && refused.config_generation == 1,
        "{refused:?}"
    );
    // Byte for byte the running file, which a file change alone does not
    // reload: SIGHUP asks for it.
    std::fs::write(&path, spec.to_yaml())?;
    daemon.signal(nix::sys::signal::Signal::SIGHUP)?;
    let applied = poll_until(DEADLINE, "the fixed file to be applied", || {
        let s: StatusReport = daemon.yardctl_as(&["status"])?;
        Ok((s.reload.last_result == "applied").then_some(s))
    })?;
    ensure!(
        applied.reload.reloads >= 1
            && applied.reload.last_error.is_none()
            && applied.config_generation >= 2,
        "{applied:?}"
    );

    // Someone other than the daemon's user: a clear refusal naming the socket.
    let socket = daemon.control_socket().display().to_string();
    let out = run_with_timeout(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(daemon.yardctl_path())
            .args(["--control-socket", &socket, "status"]),
        DEADLINE,
    )?;
    ensure!(
        !out.status.success(),
        "nobody read the socket: {}",
        out.stdout
    );
    for needed in [socket.as_str(), "permission denied", "0600", "sudo"] {
        ensure!(
            out.stderr.contains(needed),
            "{needed:?} in {:?}",
            out.stderr
        );
    }

    // `top` in a real terminal: it draws, and `q` ends it with status 0.
    let command = format!(
        "stty rows 40 cols 120; exec {} --control-socket {socket} top --interval 0.2",
        daemon.yardctl_path().display()
    );
    let mut top = Command::new("script")
        .args([
            "--quiet",
            "--flush",
            "--return",
            "--command",
            &command,
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting yardctl top under script")?;
    // Cells are drawn with cursor moves between words: look for single words.
    let drawn = wait_for_screen(
        &mut top,
        &[
            "Listeners",
            "Workers",
            "QUEUE",
            "demo/edge/tcp-echo",
            "TOP DROP REASON",
        ],
    );
    let result = drawn.and_then(|screen| {
        top.stdin.as_mut().context("top's stdin")?.write_all(b"q")?;
        let status = poll_until(DEADLINE, "yardctl top to quit on q", || Ok(top.try_wait()?))?;
        ensure!(status.success(), "top exited {status}; screen: {screen}");
        Ok(())
    });
    if result.is_err() {
        kill_and_reap(&mut top);
    }
    result
}

/// Reads `child`'s terminal output until every word in `words` has shown
/// (a drawn frame); returns what was read.
fn wait_for_screen(child: &mut std::process::Child, words: &[&str]) -> Result<String> {
    let mut stdout = child.stdout.take().context("top's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Drains to the end even after the screen was found, so the terminal's
    // last writes (top restoring it) never meet a closed pipe.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut screen = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&screen).into_owned();
        if words.iter().all(|w| text.contains(w)) {
            return Ok(text);
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| anyhow!("top drew no {words:?} in {DEADLINE:?}: {text:?}"))?;
        match rx.recv_timeout(left) {
            Ok(bytes) => screen.extend(bytes),
            Err(_) => bail!("top drew no {words:?}: {text:?}"),
        }
    }
}

/// One HTTP/1.1 GET from inside the LB namespace: status line, headers, body.
fn http_get(topo: &Topology, path: &str) -> Result<(String, String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: switchyard\r\nConnection: close\r\n\r\n");
    let raw = in_netns(&topo.lb, move || -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect(METRICS_ADDR)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    })??;
    let text = String::from_utf8(raw).context("the metrics response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers: {text:?}"))?;
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Ok((status.to_owned(), headers.to_owned(), body.to_owned()))
}

/// Checks the exposition the strict way the text format asks: every line a
/// HELP, a TYPE or a sample; every sample of a family announced by a TYPE
/// line; histogram buckets cumulative and ending at `+Inf` = `_count`.
/// Then parses it with `prometheus-parse`.
fn parse_exposition(body: &str) -> Result<prometheus_parse::Scrape> {
    use prometheus_parse::LineInfo;
    let mut types: HashMap<String, String> = HashMap::new();
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    ensure!(body.ends_with('\n'), "the exposition ends with a newline");
    for line in body.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                ..
            } => {
                let family = metric_alias.unwrap_or(metric_name);
                let kind = line.rsplit(' ').next().unwrap_or_default().to_owned();
                ensure!(
                    types.insert(family.clone(), kind).is_none(),
                    "{family} typed twice"
                );
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v
                        .parse()
                        .with_context(|| format!("sample value in {line:?}"))?,
                };
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        metric_name
                            .strip_suffix(suffix)
                            .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                    })
                    .unwrap_or(metric_name);
                ensure!(types.contains_key(family), "{line:?}: no TYPE for {family}");
                let labels = labels.unwrap_or_default();
                if let Some(family) = metric_name.strip_suffix("_bucket") {
                    let (rest, le) = labels
                        .rsplit_once(",le=")
                        .or_else(|| labels.strip_prefix("le=").map(|le| ("", le)))
                        .ok_or_else(|| anyhow!("bucket without le: {line:?}"))?;
                    let le = le.trim_matches('"');
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()?
                    };
                    buckets
                        .entry(format!("{family}{{{rest}}}"))
                        .or_default()
                        .push((le, value));
                } else if let Some(family) = metric_name.strip_suffix("_count") {
                    counts.insert(format!("{family}{{{labels}}}"), value);
                }
            }
            LineInfo::Empty => bail!("an empty line in the exposition"),
            LineInfo::Ignored => bail!("not exposition format: {line:?}"),
        }
    }
    for (series, list) in &buckets {
        ensure!(
            list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{series}: buckets not cumulative: {list:?}"
        );
        let last = list.last().expect("listed");
        ensure!(last.0 == f64::INFINITY, "{series}: no +Inf bucket");
        ensure!(
            counts.get(series) == Some(&last.1),
            "{series}: +Inf bucket {} but _count {:?}",
            last.1,
            counts.get(series)
        );
    }
    ensure!(!buckets.is_empty(), "no histogram in the exposition");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .context("prometheus-parse")
}

/// The value of the one sample of `metric` whose labels include all of
/// `labels` (histograms are read through their `_sum` and `_count`).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let found: Vec<&prometheus_parse::Value> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| &s.value)
        .collect();
    match found.as_slice() {
        [prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v)] => Ok(*v),
        other => bail!("{metric}{labels:?}: {other:?}"),
    }
}

#[test]
fn latency_and_metrics_count_the_traffic_sent() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let opts = DaemonOptions::new(topo.lb_interfaces())
        .queues(1)
        .arg("--metrics-listen")
        .arg(METRICS_ADDR);
    let daemon = Daemon::start(&topo.lb, &path, &opts)?;
    let tcp_id = spec.listener_id(TCP_LISTENER);
    let udp_id = spec.listener_id(UDP_LISTENER);
    let tcp_vip = SocketAddr::from((VIP, TCP_PORT));
    let udp_vip = SocketAddr::from((VIP, UDP_PORT));

    const UDP_FLOWS: u64 = 20;
    const CLOSED: u64 = 5;
    const OPEN: u64 = 3;
    for i in 0..UDP_FLOWS {
        udp_exchange(&topo.client, udp_vip, &format!("datagram {i}"))?;
    }
    for i in 0..CLOSED {
        tcp_exchange(&topo.client, tcp_vip, &format!("closed {i}"))?;
    }
    let mut open = Vec::new();
    for i in 0..OPEN {
        open.push(tcp_exchange_keep_open(&topo.client, tcp_vip, &format!("open {i}|"))?.0);
    }

    // Latency: every packet a worker received is in a batch it recorded.
    // Read until two latency reports around a stats report agree, so the
    // last ACKs of the closed connections are in.
    let (latency, stats) = poll_until(DEADLINE, "received packets to settle", || {
        let before: LatencyReport = daemon.yardctl_as(&["latency"])?;
        let stats: StatsReport = daemon.yardctl_as(&["stats"])?;
        let after: LatencyReport = daemon.yardctl_as(&["latency"])?;
        let total = |r: &LatencyReport| r.workers[0].packets_per_batch.total;
        Ok(
            (total(&before) == stats.workers[0].rx_packets && total(&after) == total(&before))
                .then_some((after, stats)),
        )
    })?;
    let [w] = latency.workers.as_slice() else {
        bail!("one worker: {latency:?}");
    };
    ensure!(w.packets_per_batch.total >= 2 * UDP_FLOWS + 5 * (CLOSED + OPEN));
    ordered("batch latency", &w.batch_ns)?;
    ordered("packets per batch", &w.packets_per_batch)?;
    ordered("control time", &w.control_ns)?;
    ensure!(
        w.batch_ns.count == w.packets_per_batch.count,
        "one latency and one size per batch: {w:?}"
    );
    let table = daemon.yardctl_raw(&["latency"])?;
    ensure!(
        table.status.success()
            && table.stdout.contains("P99.9")
            && table
                .stdout
                .contains(&w.packets_per_batch.total.to_string()),
        "{}",
        table.stdout
    );

    // The scrape: valid exposition, the same numbers.
    let (status_line, headers, body) = http_get(&topo, "/metrics")?;
    ensure!(status_line.contains(" 200 "), "{status_line}");
    ensure!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let scrape = parse_exposition(&body).with_context(|| format!("scraped:\n{body}"))?;
    let rx = stats.workers[0].rx_packets as f64;
    let udp = [("listener", udp_id.as_str())];
    let tcp = [("listener", tcp_id.as_str())];
    ensure!(value(&scrape, "switchyard_listener_flows_total", &udp)? == UDP_FLOWS as f64);
    ensure!(value(&scrape, "switchyard_listener_packets_total", &udp)? == 2.0 * UDP_FLOWS as f64);
    ensure!(value(&scrape, "switchyard_listener_flows_total", &tcp)? == (CLOSED + OPEN) as f64);
    ensure!(
        value(&scrape, "switchyard_listener_active_flows", &tcp)? == OPEN as f64,
        "closed connections are not active"
    );
    let backend_active: f64 = ["be1", "be2"]
        .iter()
        .map(|name| {
            let backend = format!("{}:{TCP_TARGET_PORT}", topo.backend(name).addr);
            value(
                &scrape,
                "switchyard_backend_active_flows",
                &[("listener", tcp_id.as_str()), ("backend", &backend)],
            )
        })
        .sum::<Result<f64>>()?;
    ensure!(backend_active == OPEN as f64, "{backend_active}");
    ensure!(
        value(
            &scrape,
            "switchyard_worker_rx_packets_total",
            &[("queue", "0")]
        )? == rx
    );
    ensure!(
        value(
            &scrape,
            "switchyard_worker_batch_packets_sum",
            &[("queue", "0")]
        )? == rx
    );
    ensure!(
        value(
            &scrape,
            "switchyard_worker_batch_packets_count",
            &[("queue", "0")]
        )? == w.packets_per_batch.count as f64
    );
    let steered = value(
        &scrape,
        "switchyard_xdp_steer_total",
        &[("reason", "steer_vip")],
    )? + value(
        &scrape,
        "switchyard_xdp_steer_total",
        &[("reason", "steer_reply")],
    )?;
    ensure!(
        steered == rx,
        "every frame a worker got was steered: {steered} vs {rx}"
    );
    let status: StatusReport = daemon.yardctl_as(&["status"])?;
    ensure!(
        value(
            &scrape,
            "switchyard_build_info",
            &[("version", &status.version)]
        )? == 1.0
    );
    ensure!(
        value(&scrape, "switchyard_config_generation", &[])? == status.config_generation as f64
    );
    ensure!(
        value(
            &scrape,
            "switchyard_config_reloads_total",
            &[("result", "applied")]
        )? == 0.0
    );
    ensure!(
        value(
            &scrape,
            "switchyard_drops_total",
            &[("queue", "0"), ("reason", "backend_unavailable")]
        )? == 0.0,
        "every reason is exported, zeros too"
    );
    ensure!(
        stats.xdp_steering.get("steer_vip").copied().unwrap_or(0) > 0,
        "yardctl stats shows the steering counters: {:?}",
        stats.xdp_steering
    );
    let (missing, _, _) = http_get(&topo, "/nope")?;
    ensure!(missing.contains(" 404 "), "{missing}");
    drop(open);
    Ok(())
}

#[test]
fn stats_watch_rates_and_drop_rates_match_a_burst() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let mut spec = GatewaySpec::demo();
    // A listener whose Service has no endpoints: its datagrams are refused.
    spec.listeners.push(ListenerSpec {
        name: "udp-void".into(),
        route: "void-udp".into(),
        protocol: Protocol::Udp,
        port: 54,
        target_port: 5354,
        service: "void".into(),
        backends: Vec::new(),
    });
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    let udp_id = spec.listener_id(UDP_LISTENER);
    let void_id = spec.listener_id("udp-void");

    let mut watch = Command::new(daemon.yardctl_path())
        .arg("--control-socket")
        .arg(daemon.control_socket())
        .args(["stats", "--watch", "--interval", "0.3", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let result = (|| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = watch.stdout.take().context("watch stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.map(|l| tx.send(l)).is_err() {
                    break;
                }
            }
        });
        let next = || -> Result<serde_json::Value> {
            let line = rx
                .recv_timeout(DEADLINE)
                .context("stats --watch printed no line")?;
            serde_json::from_str(&line).with_context(|| format!("watch printed {line:?}"))
        };
        // The first line's later sample precedes the burst.
        let mut previous = next()?;

        const ECHOED: u64 = 10;
        const REFUSED: u64 = 4;
        let udp_vip = SocketAddr::from((VIP, UDP_PORT));
        for i in 0..ECHOED {
            udp_exchange(&topo.client, udp_vip, &format!("burst {i}"))?;
        }
        let void = SocketAddr::from((VIP, 54));
        let socket = udp_socket_towards(&topo.client, void)?;
        for i in 0..REFUSED {
            socket.send_to(format!("void {i}").as_bytes(), void)?;
        }

        // Every later interval's rate times its length is what its totals
        // grew by, and the growth adds up to the burst exactly.
        let listener = |v: &serde_json::Value, id: &str, field: &str| -> f64 {
            v["listeners"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["listener"] == id))
                .map_or(f64::NAN, |l| l[field].as_f64().unwrap_or(f64::NAN))
        };
        let listener_rate = |v: &serde_json::Value, id: &str, field: &str| -> f64 {
            v["rates"]["listeners"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["listener"] == id))
                .map_or(f64::NAN, |l| l[field].as_f64().unwrap_or(f64::NAN))
        };
        let refused = |v: &serde_json::Value| -> f64 {
            v["listeners"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["listener"] == void_id.as_str()))
                .map_or(0.0, |l| {
                    l["drops"]["backend_unavailable"].as_f64().unwrap_or(0.0)
                })
        };
        let (mut packets, mut drops) = (0.0, 0.0);
        let deadline = Instant::now() + DEADLINE;
        while packets < (2 * ECHOED) as f64 || drops < REFUSED as f64 {
            ensure!(
                Instant::now() < deadline,
                "the burst never added up: {packets} packets, {drops} drops"
            );
            let line = next()?;
            let secs = line["interval_secs"].as_f64().context("interval_secs")?;
            let grew =
                listener(&line, &udp_id, "packets") - listener(&previous, &udp_id, "packets");
            let rate = listener_rate(&line, &udp_id, "packets_per_sec");
            ensure!(
                (rate * secs - grew).abs() < 1e-6,
                "rate {rate}/s over {secs}s is not the growth {grew}"
            );
            let dropped = refused(&line) - refused(&previous);
            let drop_rate = line["rates"]["workers"][0]["drop_reasons_per_sec"]
                ["backend_unavailable"]
                .as_f64()
                .unwrap_or(0.0);
            let listener_drop_rate = line["rates"]["listeners"]
                .as_array()
                .and_then(|ls| ls.iter().find(|l| l["listener"] == void_id.as_str()))
                .and_then(|l| l["drops_per_sec"]["backend_unavailable"].as_f64())
                .unwrap_or(0.0);
            ensure!(
                (drop_rate * secs - dropped).abs() < 1e-6
                    && (listener_drop_rate * secs - dropped).abs() < 1e-6,
                "drop rates {drop_rate}/s and {listener_drop_rate}/s over {secs}s, grew {dropped}"
            );
            packets += grew;
            drops += dropped;
            previous = line;
        }
        ensure!(
            packets == (2 * ECHOED) as f64 && drops == REFUSED as f64,
            "more than the burst: {packets} packets, {drops} drops"
        );
        let stats: StatsReport = daemon.yardctl_as(&["stats"])?;
        let void = stats
            .listeners
            .iter()
            .find(|l| l.listener == void_id)
            .context("the void listener")?;
        ensure!(
            void.drops == BTreeMap::from([("backend_unavailable".to_owned(), REFUSED)])
                && void.counters.flows == 0,
            "{void:?}"
        );
        Ok(())
    })();
    let _ = watch.kill();
    let _ = watch.wait();
    result
}

#[test]
fn terminating_backends_keep_their_slots_and_a_diff_names_the_change() -> Result<()> {
    let topo = Topology::single_arm(1)?;
    let dir = TempDir::new("config")?;
    let spec = GatewaySpec::demo();
    let path = dir.write("gateway.yaml", &spec.to_yaml())?;
    let leaving = dir.write("leaving.yaml", &GatewaySpec::demo_terminating().to_yaml())?;
    let _servers = topo.start_backends(TCP_TARGET_PORT, UDP_TARGET_PORT)?;
    let daemon = topo.start_daemon(&path)?;
    let tcp_id = spec.listener_id(TCP_LISTENER);

    // The diff says what a reload with terminating endpoints changes: their
    // state, and no slot.
    let leaving_arg = leaving.display().to_string();
    let diff: ConfigDiffReport = daemon.yardctl_as(&["config", "diff", &leaving_arg])?;
    let tcp = diff
        .listeners
        .iter()
        .find(|l| l.listener == tcp_id)
        .context("the TCP listener in the diff")?;
    let mut changes: Vec<(String, String, String)> = tcp
        .backends_state_changed
        .iter()
        .map(|c| (c.backend.clone(), c.from.clone(), c.to.clone()))
        .collect();
    changes.sort();
    let be = |name: &str| format!("{}:{TCP_TARGET_PORT}", topo.backend(name).addr);
    ensure!(
        changes
            == [
                (be("be1"), "ready".into(), "terminating".into()),
                (be("be2"), "ready".into(), "terminating".into()),
            ],
        "{tcp:?}"
    );
    ensure!(tcp.moved_slots_fraction == 0.0, "{tcp:?}");
    let text = daemon.yardctl_raw(&["config", "diff", &leaving_arg])?;
    ensure!(
        text.stdout.contains("ready -> terminating"),
        "{}",
        text.stdout
    );

    // Applied: the endpoints are terminating, keep their slots, take flows.
    std::fs::copy(&leaving, &path)?;
    poll_until(DEADLINE, "the reload", || {
        let s: StatusReport = daemon.yardctl_as(&["status"])?;
        Ok((s.reload.last_result == "applied").then_some(()))
    })?;
    let backends: BackendsReport = daemon.yardctl_as(&["backends"])?;
    ensure!(backends.backends.len() == 4, "{backends:?}");
    for b in &backends.backends {
        ensure!(b.state == "terminating" && b.slots > 0, "{b:?}");
    }
    let tcp_slots: usize = backends
        .backends
        .iter()
        .filter(|b| b.listener == tcp_id)
        .map(|b| b.slots)
        .sum();
    ensure!(tcp_slots == TABLE_SIZE, "{backends:?}");
    let reply = tcp_exchange(
        &topo.client,
        SocketAddr::from((VIP, TCP_PORT)),
        "still served",
    )?;
    ensure!(
        ["be1", "be2"].contains(&reply.server()),
        "a new flow reaches a terminating backend: {reply:?}"
    );
    let table = daemon.yardctl_raw(&["backends"])?;
    ensure!(table.stdout.contains("terminating"), "{}", table.stdout);
    Ok(())
}
