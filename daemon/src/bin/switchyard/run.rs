//! `switchyard run`: bring up XDP steering, AF_XDP workers and the control
//! socket, then wait for a signal and take it all down again.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam::channel;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use switchyard_config::snapshot::AnnounceMode;
use switchyard_daemon::announce::bgp::BgpOptions;
use switchyard_daemon::announce::l2::L2Options;
use switchyard_daemon::announce::{self, Announcer, SpeakerFactory};
use switchyard_daemon::cluster::ClusterInbox;
use switchyard_daemon::config_watch::ConfigWatch;
use switchyard_daemon::control::{ControlState, WorkerHandle};
use switchyard_daemon::dns::{DnsServer, Zone};
use switchyard_daemon::drain::{PublishHook, Publisher};
use switchyard_daemon::egress::{EgressWatch, Port as EgressPort};
use switchyard_daemon::health::{Monitor, MonitorOptions};
use switchyard_daemon::interfaces;
use switchyard_daemon::metrics::MetricsServer;
use switchyard_daemon::neighbor::NeighborResolver;
use switchyard_daemon::refusals::NodeSetup;
use switchyard_dataplane::affinity::AffinityTable;
use switchyard_dataplane::afxdp::{BusyPoll, PortSpec, XskConfig, XskPorts};
use switchyard_dataplane::fast_path::{ActivityReader, CacheWriter, Egress, FastPath};
use switchyard_dataplane::flow::FlowTimeouts;
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::snat::SnatTable;
use switchyard_dataplane::worker::{SnatSetup, Worker, WorkerSettings};
use switchyard_proto::InterfaceStatus;
use switchyard_xdp::{AttachMode, AttachedMode, LoadOptions, Steering};

use crate::reload::{self, Compiled, Reloader, Source, Trigger};
use crate::takeover;
use crate::{OnOff, RunArgs, XdpModeArg};

/// How long startup waits for the kernel to resolve backends' MACs; flows
/// to a backend still unresolved after this are dropped (and counted) until
/// it resolves.
const NEIGHBOUR_PRIME_DEADLINE: Duration = Duration::from_secs(3);
/// How often the flow cache's last-seen times are read for the workers'
/// expiry passes, which run about as often.
const CACHE_ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// How long a takeover waits for BIRD to have this daemon's routes before
/// it asks the predecessor, whose routes then go, to hand over.
const TAKEOVER_ANNOUNCE_WAIT: Duration = Duration::from_secs(3);

/// How often the egress watch reads every interface again, in case a
/// change went unannounced (a lost notification, or a kernel before 6.3
/// that announces none).
const EGRESS_RECHECK: Duration = Duration::from_secs(5);

pub fn run(args: RunArgs) -> Result<()> {
    // Signals are taken synchronously by the main thread; every thread
    // spawned below inherits the mask, so none is interrupted by them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block().context("blocking signals")?;

    // Before anything is attached: an option the kernel would refuse, or a
    // path that is not ours to take, fails the start at once, with nothing
    // to undo.
    crate::options::validate(&args)?;
    let mut start = takeover::begin(&args.restart, &args.control_socket, args.fast_path_capacity)?;

    // Its errors name the file, and the line where there is one.
    let compile_options = reload::CompileOptions {
        resolve: args.resolve.options(),
        node: NodeSetup {
            snat_ports: args.snat_ports.is_some(),
        },
    };
    let source = match (&args.config, args.cluster) {
        (Some(path), false) => Source::File(path.clone()),
        (None, true) => Source::Cluster {
            cache: args.cluster_cache.clone(),
        },
        _ => anyhow::bail!("give exactly one of --config FILE and --cluster"),
    };
    // A cache that no longer compiles (this daemon started with other
    // options, say) must not keep the node down: it starts serving nothing,
    // says why, and the cluster's next update replaces it.
    let mut unusable_cache = None;
    let initial = match &source {
        Source::File(path) => reload::compile(path, start.first_generation, &compile_options)?,
        Source::Cluster { cache: None } => Compiled::nothing_yet(start.first_generation),
        Source::Cluster { cache: Some(path) } => {
            match reload::compile_cached(path, start.first_generation, &compile_options) {
                Ok(Some(cached)) => cached,
                Ok(None) => Compiled::nothing_yet(start.first_generation),
                Err(err) => {
                    let message = format!("--cluster-cache: {err:#}");
                    log::warn!("{message}; serving nothing until the cluster sends its objects");
                    unusable_cache = Some(message);
                    Compiled::nothing_yet(start.first_generation)
                }
            }
        }
    };
    for diagnostic in &initial.diagnostics {
        log::warn!("config: {diagnostic}");
    }
    log::info!(
        "config {}: {} listeners",
        initial.name(),
        initial.snapshot.listeners().len()
    );
    // Watching starts before anything is programmed, so an edit made while
    // the daemon comes up is not missed.
    let mut watch = match &source {
        Source::File(path) => Some(ConfigWatch::new(path)?),
        Source::Cluster { .. } => None,
    };

    let mut ports = Vec::new();
    for name in &args.interfaces {
        let ifindex = interfaces::ifindex(name)?;
        if let Some(mtu) = interfaces::mtu(name) {
            interfaces::check_mtu(name, mtu, XskConfig::default().frame_size)?;
        }
        ports.push(PortSpec {
            name: name.clone(),
            ifindex,
        });
    }
    let rx_queues: Vec<u32> = ports
        .iter()
        .map(|p| interfaces::rx_queue_count(&p.name))
        .collect();
    let counts: Vec<(&str, u32)> = ports
        .iter()
        .zip(&rx_queues)
        .map(|(port, &n)| (port.name.as_str(), n))
        .collect();
    // Refuses a bad --queues before anything is attached; the count that
    // decides is taken again with the program attached, below.
    interfaces::queues_to_serve(&counts, args.queues)?;
    if let Err(err) = switchyard_dataplane::afxdp::raise_memlock_limit() {
        // Kernels since 5.11 charge BPF maps and UMEM to the memory cgroup,
        // so a low limit only matters on older ones; UMEM creation says so.
        log::debug!("RLIMIT_MEMLOCK left as it is: {err}");
    }

    let epoch = Instant::now();
    let mut steering = takeover::load(
        &start,
        &LoadOptions {
            flow_cache_capacity: args.fast_path_capacity,
        },
    )?;
    let mut native = false;
    let mut modes = Vec::new();
    for port in &ports {
        let mode = steering
            .attach(&port.name, attach_mode(args.xdp_mode))
            .with_context(|| format!("attaching XDP to {}", port.name))?;
        log::info!("{}: XDP attached in {mode} mode", port.name);
        native |= mode == AttachedMode::Native;
        modes.push(mode);
    }
    // virtio_net turns on a spare queue pair per CPU for XDP_TX when the
    // device has them, and the host then delivers frames on those queues
    // too: what needs a worker is only known with the program attached.
    let mut queue_counts: Vec<(&str, u32, u32)> = Vec::new();
    for (port, &before) in ports.iter().zip(&rx_queues) {
        let rx = interfaces::rx_queue_count(&port.name);
        if rx != before {
            log::info!(
                "{}: {rx} receive queues with XDP attached ({before} before): \
                 the driver added queues for XDP's own transmits",
                port.name
            );
        }
        let tx = interfaces::tx_queue_count(&port.name);
        queue_counts.push((port.name.as_str(), rx, tx));
    }
    let counts: Vec<(&str, u32)> = queue_counts
        .iter()
        .map(|&(name, rx, _)| (name, rx))
        .collect();
    let queues = interfaces::queues_to_serve(&counts, args.queues)
        .context("counting receive queues again with XDP attached")?;
    interfaces::check_transmit_queues(&queue_counts)?;
    let drivers: Vec<Option<String>> = ports.iter().map(|p| interfaces::driver(&p.name)).collect();
    let interface_status: Vec<InterfaceStatus> = ports
        .iter()
        .zip(&modes)
        .zip(&queue_counts)
        .zip(&drivers)
        .map(
            |(((port, mode), &(_, rx_queues, _)), driver)| InterfaceStatus {
                name: port.name.clone(),
                ifindex: port.ifindex,
                xdp_mode: mode.to_string(),
                queues,
                rx_queues,
                driver: driver.clone().unwrap_or_default(),
                ..InterfaceStatus::default()
            },
        )
        .collect();
    let mut local_addrs = interfaces::local_addresses()?;
    steering
        .set_local_addrs(&local_addrs)
        .context("programming the node's own addresses")?;
    steering
        .set_source_ranges(&reload::source_ranges(&initial.snapshot))
        .context("programming source ranges into the XDP maps")?;
    let (vips, backends) = reload::service_matches(&initial.snapshot);
    steering
        .set_services(&vips, &backends)
        .context("programming VIPs and backends into the XDP maps")?;

    // The fast path starts off and is turned on once the first generation
    // and L2 epoch are published, so no zero-filled state ever matches.
    let fast_path = Arc::new(FastPath::new(steering.fast_path().clone(), epoch));
    takeover::hold(&steering, &fast_path);
    let first = Arc::new(initial.snapshot.clone());
    fast_path.prepare(&first);
    fast_path.published(&first);

    let ifindexes: Vec<u32> = ports.iter().map(|p| p.ifindex).collect();
    let on_l2_publish = {
        let fast_path = fast_path.clone();
        Box::new(move |table: &switchyard_dataplane::neighbor::L2Table| {
            fast_path.l2_published(table)
        })
    };
    let (resolver, neighbors) = NeighborResolver::start_with(&ifindexes, Some(on_l2_publish))
        .context("starting the neighbour resolver")?;
    fast_path.l2_published(&neighbors.table());
    steering
        .fast_path()
        .set_enabled(args.fast_path == OnOff::On)
        .context("switching the XDP fast path")?;
    let backend_addrs = reload::backend_addresses(&initial.snapshot);
    let unresolved = resolver.prime(&backend_addrs, NEIGHBOUR_PRIME_DEADLINE);
    for addr in unresolved {
        log::warn!(
            "backend {addr}: no route or MAC address yet; its flows are dropped until it resolves"
        );
    }

    let config = Arc::new(ArcSwap::new(first));
    // Health verdicts are applied on a thread of their own: a monitor
    // thread only signals, so probes never wait for a Maglev rebuild, and
    // flips that come together are published as one generation.
    let (health_flipped, health_flips) = crossbeam::channel::bounded::<()>(1);
    let monitor = Arc::new(
        Monitor::start(
            MonitorOptions {
                max_concurrent: args.health_max_concurrent,
                threads: args.health_threads,
            },
            Arc::new(move || {
                let _ = health_flipped.try_send(());
            }),
        )
        .context("starting the health monitor")?,
    );
    let announcer = Arc::new(announcer(&args, &ports)?);
    let drains = Arc::new(
        Publisher::new(config.clone(), args.resolve.options().maglev_seed)
            .with_hook(fast_path.clone() as Arc<dyn PublishHook>)
            .with_hook(announcer.clone() as Arc<dyn PublishHook>)
            .with_health(monitor),
    );
    {
        let drains = drains.clone();
        thread::Builder::new()
            .name("health-publish".into())
            .spawn(move || {
                for () in health_flips {
                    match drains.health_changed() {
                        Ok(Some(generation)) => {
                            log::info!("health changed: published generation {generation}")
                        }
                        Ok(None) => {}
                        Err(e) => log::error!("health verdicts not applied: {e}"),
                    }
                }
            })
            .context("starting the health publisher thread")?;
    }
    let (cluster_inbox, cluster_updates) = match source {
        Source::Cluster { .. } => {
            let (inbox, updates) = ClusterInbox::new();
            (Some(inbox), Some(updates))
        }
        Source::File(_) => (None, None),
    };
    let config_path = match &source {
        Source::File(path) => path.display().to_string(),
        Source::Cluster { .. } => "(none: --cluster)".to_owned(),
    };
    let mut reloader = Reloader::new(
        source,
        compile_options,
        config.clone(),
        drains.clone(),
        &initial,
        args.allow_no_listeners,
        cluster_updates,
    )?;
    if let Some(message) = unusable_cache {
        reloader.refused_at_start(message);
    }
    drop(initial);
    let stop = Arc::new(AtomicBool::new(false));
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let settings = WorkerSettings {
        flow_capacity: args.flow_capacity,
        embryonic_capacity: Some(args.embryonic_capacity),
        workers: queues,
        hash_seed: args.hash_seed,
        timeouts: FlowTimeouts {
            tcp: Duration::from_secs(args.tcp_timeout),
            tcp_syn: Duration::from_secs(args.tcp_syn_timeout),
            tcp_closing: Duration::from_secs(args.tcp_closing_timeout),
            udp: Duration::from_secs(args.udp_timeout),
        },
    };
    let affinity = Arc::new(AffinityTable::new(args.affinity_capacity));
    // Every worker's client flows can expect a reply, on any queue.
    let replies = Arc::new(ReplyTable::new(
        (settings.flow_capacity + args.embryonic_capacity).saturating_mul(queues as usize),
    ));
    // Full-NAT ports: one table of bindings every worker reads, each
    // worker handing out ports of its own slice (see dataplane::snat).
    let snat = match args.snat_ports {
        Some(range) => {
            range
                .slice(0, queues)
                .with_context(|| format!("--snat-ports {range}"))?;
            Some((
                Arc::new(SnatTable::new(range)),
                Arc::new(ReplyTable::new(
                    settings.flow_capacity.saturating_mul(queues as usize),
                )),
            ))
        }
        // Refused at load without it (see `refusals`).
        None => None,
    };
    steering
        .fast_path()
        .set_snat_ports(args.snat_ports.map(|r| (r.first, r.last)))
        .context("programming the SNAT port range")?;
    let mut snat_sources = Vec::new();
    for port in &ports {
        let addresses = interfaces::addresses_of(&port.name)
            .with_context(|| format!("reading the addresses of {}", port.name))?;
        snat_sources.extend(addresses.into_iter().map(|(a, len)| (port.ifindex, a, len)));
    }
    let xsk_config = XskConfig {
        batch_size: args.batch_size as usize,
        ring_size: args.ring_size,
        zero_copy: args.zero_copy,
        need_wakeup: args.need_wakeup == OnOff::On,
        busy_poll: args.busy_poll.map(|usecs| BusyPoll {
            usecs,
            budget: args.busy_poll_budget,
        }),
        tx_skb_budget: args.tx_skb_budget,
        ..XskConfig::default()
    };
    let egress: Vec<Egress> = ports
        .iter()
        .zip(&drivers)
        .map(|(port, driver)| {
            steering
                .attached()
                .find(|a| a.ifindex == port.ifindex)
                .map(|a| {
                    args.fast_path_tx
                        .egress(a.slot as u16, a.ifindex, driver.as_deref())
                })
                .context("an interface without an XDP slot")
        })
        .collect::<Result<_>>()?;
    // Before any worker can cache a flow: the interfaces the kernel would
    // drop fast-path frames on are closed to it from the start.
    let egress_ports = ports
        .iter()
        .zip(&egress)
        .zip(drivers)
        .map(|((port, egress), driver)| EgressPort {
            name: port.name.clone(),
            ifindex: port.ifindex,
            slot: egress.slot,
            driver,
            xdp_tx: egress.ifindex != 0,
        })
        .collect();
    let mut egress_watch = EgressWatch::start(
        egress_ports,
        native,
        (args.fast_path == OnOff::On).then(|| fast_path.clone()),
    )
    .context("finding the interfaces the XDP fast path may send out of")?;
    let seeds = takeover::seeds(&steering, &fast_path, &config.load(), &egress, epoch);
    if start.is_takeover() {
        // The predecessor's announcements go with it (its BGP routes run
        // through a device of its own): this daemon's must be in place
        // first, so the network never sees the VIPs withdrawn. Its workers
        // are not bound yet; the predecessor's serve until the hand-over.
        announcer.start(&config.load());
        if !announcer.wait_announced(AnnounceMode::Bgp, TAKEOVER_ANNOUNCE_WAIT) {
            log::warn!(
                "--takeover: BIRD has not confirmed this daemon's routes within \
                 {TAKEOVER_ANNOUNCE_WAIT:?}; taking over anyway (see yardctl node)"
            );
        }
    }
    takeover::release_predecessor(&mut start)?;
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for queue in 0..queues {
        let mut io =
            takeover::while_queue_busy(&start, || XskPorts::open(&ports, queue, &xsk_config))
                .with_context(|| format!("opening AF_XDP sockets for queue {queue}"))?;
        for (port, fd) in ports.iter().zip(io.socket_fds()) {
            steering
                .register_socket(port.ifindex, queue, fd)
                .with_context(|| format!("registering the {} queue {queue} socket", port.name))?;
        }
        let core = match &args.cores {
            Some(cores) if !cores.is_empty() => Some(cores[queue as usize % cores.len()]),
            _ if !core_ids.is_empty() => Some(core_ids[queue as usize % core_ids.len()].id),
            _ => None,
        };
        let modes: Vec<String> = io.modes().iter().map(|m| m.to_string()).collect();
        log::info!(
            "queue {queue}: worker on core {core:?}, AF_XDP {}",
            modes.join(",")
        );
        let (requests, control) = channel::bounded(16);
        let pinned = Arc::new(AtomicBool::new(false));
        handles.push(WorkerHandle {
            queue,
            core,
            pinned: pinned.clone(),
            afxdp_modes: modes,
            requests,
        });
        let worker = Worker::new(
            queue,
            ifindexes.clone(),
            config.clone(),
            neighbors.clone(),
            control,
            stop.clone(),
            epoch,
            settings,
        )
        .with_affinity_table(affinity.clone())
        .with_reply_table(replies.clone())
        .with_seeded_flows(&seeds.flows);
        let worker = match (&snat, args.snat_ports) {
            (Some((table, forwards)), Some(range)) => worker.with_snat(SnatSetup {
                table: table.clone(),
                forwards: forwards.clone(),
                slice: range.slice(queue, queues)?,
                interface_addresses: snat_sources.clone(),
            }),
            _ => worker,
        };
        let worker = if args.fast_path == OnOff::On {
            worker.with_fast_path(CacheWriter::new(fast_path.clone(), egress.clone()))
        } else {
            worker
        };
        threads.push(
            thread::Builder::new()
                .name(format!("worker-{queue}"))
                .spawn(move || {
                    if let Some(core) = core {
                        // core_affinity panics on a core past the kernel's
                        // cpu_set_t; such a core cannot exist anyway.
                        if core < libc::CPU_SETSIZE as usize
                            && core_affinity::set_for_current(core_affinity::CoreId { id: core })
                        {
                            // Read by `yardctl status`; nothing is ordered by it.
                            pinned.store(true, Ordering::Relaxed);
                        } else {
                            log::warn!("queue {queue}: could not pin to core {core}");
                        }
                    }
                    worker.run(&mut io);
                })
                .context("spawning a worker thread")?,
        );
    }

    drop(seeds);
    takeover::resume(&start, &mut steering, &fast_path)?;

    // The workers' expiry passes read what the cache saw from memory; this
    // thread reads the cache for them, in batches, once a second.
    let activity = match args.fast_path {
        OnOff::On => Some(
            ActivityReader::start(fast_path.clone(), CACHE_ACTIVITY_EVERY)
                .context("starting the fast path activity reader")?,
        ),
        OnOff::Off => None,
    };

    let dns = match args.dns_listen {
        Some(addr) => {
            let zone = Zone::new(&args.resolve.cluster_domain);
            let server = DnsServer::start(addr, config.clone(), zone)
                .with_context(|| format!("--dns-listen {addr}"))?;
            log::info!(
                "answering DNS for gw.{} on {addr}",
                args.resolve.cluster_domain
            );
            Some(server)
        }
        None => None,
    };

    // The main thread reprograms the maps on reloads; the control socket
    // and the metrics endpoint read the counters. Neither is per packet.
    let steering_pinned = steering.pins().is_some();
    let (hand_over_hook, hand_over) = takeover::hand_over_channel()?;
    let steering = Arc::new(Mutex::new(steering));
    let counters_of = steering.clone();
    let denied_of = steering.clone();
    let state = Arc::new(ControlState {
        config_path,
        config: config.clone(),
        config_status: reloader.status(),
        snat_ports: args.snat_ports,
        interfaces: interface_status,
        egress: Some(egress_watch.report()),
        workers: handles,
        epoch,
        hash_seed: args.hash_seed,
        affinity,
        drains,
        resolve_options: args.resolve.options(),
        fast_path: (args.fast_path == OnOff::On).then(|| fast_path.clone()),
        steer_counters: Some(Box::new(move || {
            counters_of
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .counters()
                .map_err(|err| format!("{err:#}"))
        })),
        source_denied: Some(Box::new(move || {
            denied_of
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .source_denied()
                .map_err(|err| format!("{err:#}"))
        })),
        cluster: cluster_inbox,
        node: Some(announcer.clone()),
        hand_over: steering_pinned.then_some(hand_over_hook),
    });
    let control = takeover::serve_control(&start, state.clone())?;
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let server = MetricsServer::start(addr, state.clone())
                .with_context(|| format!("--metrics-listen {addr}"))?;
            log::info!("serving Prometheus metrics on http://{addr}/metrics");
            Some(server)
        }
        None => None,
    };
    log::info!(
        "serving {} listeners on {}; control socket {}",
        config.load().listeners().len(),
        args.interfaces.join(","),
        args.control_socket.display()
    );

    // Only now that the workers serve them: a VIP announced before would
    // draw traffic nothing forwards.
    announcer.start(&config.load());

    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("opening a signalfd")?;
    let mut next_egress_check = Instant::now() + EGRESS_RECHECK;
    let exit = 'serve: loop {
        let mut egress_changed = false;
        let hand_over_asked;
        {
            let mut fds = vec![
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(reloader.loaded_fd(), PollFlags::POLLIN),
                PollFd::new(hand_over.fd(), PollFlags::POLLIN),
            ];
            if let Some(watch) = &watch {
                fds.push(PollFd::new(watch.as_fd(), PollFlags::POLLIN));
            }
            let egress_fd = egress_watch.fd().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            // Wake at least as often as the node's own addresses are
            // checked, and when a written config has been quiet long enough.
            let now = Instant::now();
            let mut wait = next_egress_check
                .saturating_duration_since(now)
                .min(LOCAL_ADDRESS_CHECK);
            if let Some(settle) = watch.as_ref().and_then(|w| w.wait(now)) {
                wait = wait.min(settle);
            }
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("waiting for signals and config changes"),
            }
            if let Some(fd) = egress_fd.and_then(|i| fds.get(i)) {
                egress_changed = fd.revents().is_some_and(|r| !r.is_empty());
            }
            hand_over_asked = fds[2].revents().is_some_and(|r| !r.is_empty());
        }
        if hand_over_asked {
            if let Some(exit) = hand_over.take() {
                log::info!("a successor asked for the sockets: handing over");
                break 'serve exit;
            }
        }
        // Signals first: a shutdown never waits behind a reload, and the
        // loader thread is left to end with the process.
        while let Some(info) = signal_fd.read_signal().context("reading a signal")? {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => reloader.request(Trigger::Signal),
                Ok(signal) => {
                    log::info!("{signal}: shutting down");
                    break 'serve takeover::Exit::Signal;
                }
                Err(_) => {}
            }
        }
        if let Some(watch) = &mut watch {
            watch.read_events(Instant::now());
            if watch.take_settled(Instant::now()) {
                reloader.request(Trigger::FileChanged);
            }
        }
        reloader.apply_loaded(&steering, &resolver);
        if egress_changed {
            egress_watch.on_readable();
        }
        if Instant::now() >= next_egress_check {
            egress_watch.refresh();
            next_egress_check = Instant::now() + EGRESS_RECHECK;
        }
        follow_local_addresses(&steering, &mut local_addrs);
    };
    match exit {
        takeover::Exit::Signal => {
            // The network stops sending here before anything stops forwarding.
            announcer.shutdown();
            // Detached first (unless left pinned) so traffic falls back to
            // the kernel at once, then the workers drain their rings.
            takeover::leave_on_signal(
                &start,
                &mut steering.lock().unwrap_or_else(PoisonError::into_inner),
            )?;
            stop.store(true, Ordering::Relaxed);
            for thread in threads {
                let _ = thread.join();
            }
        }
        takeover::Exit::HandOver(reply) => {
            // The successor announces what it serves; nothing is withdrawn.
            announcer.hand_over();
            stop.store(true, Ordering::Relaxed);
            for thread in threads {
                let _ = thread.join();
            }
            takeover::hand_over(
                &mut steering.lock().unwrap_or_else(PoisonError::into_inner),
                &fast_path,
                reply,
            );
        }
    }
    drop(activity);
    resolver.stop();
    drop(dns);
    drop(metrics);
    drop(control);
    log::info!("stopped");
    Ok(())
}

/// How often the main thread looks for addresses added to or removed from
/// the node: a packet to a new one must reach the kernel, not a worker.
const LOCAL_ADDRESS_CHECK: Duration = Duration::from_secs(1);

/// Reprograms the steering program's own addresses when the node's changed
/// since `known`: traffic to an address added after start (the node's own
/// connection to a backend, say) would otherwise be steered to the workers,
/// which drop what answers no client flow.
fn follow_local_addresses(steering: &Mutex<Steering>, known: &mut Vec<std::net::IpAddr>) {
    let now = match interfaces::local_addresses() {
        Ok(now) => now,
        Err(err) => {
            log::warn!("{err:#}; keeping the addresses programmed before");
            return;
        }
    };
    if now == *known {
        return;
    }
    let result = steering
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .set_local_addrs(&now);
    match result {
        Ok(()) => {
            log::info!("the node's own addresses are now {now:?}");
            *known = now;
        }
        Err(err) => log::warn!("programming the node's own addresses {now:?}: {err:#}"),
    }
}

/// The node's announcer: its name, and a speaker of each mode, started
/// when the config first asks for that mode.
fn announcer(args: &RunArgs, ports: &[PortSpec]) -> Result<Announcer> {
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name for --node-name")?
            .trim()
            .to_owned(),
    };
    anyhow::ensure!(!node_name.is_empty(), "--node-name: empty");
    let l2_options = L2Options {
        node_name: node_name.clone(),
        interfaces: ports.iter().map(|p| (p.name.clone(), p.ifindex)).collect(),
        heartbeat_port: args.l2_heartbeat_port,
        heartbeat_interval: Duration::from_millis(args.l2_heartbeat_ms),
        dead_after: Duration::from_millis(args.l2_dead_after_ms),
    };
    let bgp_options = BgpOptions {
        node_name: node_name.clone(),
        bird_socket: args.bird_socket.clone(),
        route_dir: args.bird_routes.clone(),
    };
    let factories: Vec<(AnnounceMode, SpeakerFactory)> = vec![
        (
            AnnounceMode::L2,
            Box::new(move || announce::l2::start(l2_options.clone())),
        ),
        (
            AnnounceMode::Bgp,
            Box::new(move || announce::bgp::start(bgp_options.clone())),
        ),
    ];
    Ok(Announcer::new(node_name, factories))
}

pub(crate) fn attach_mode(arg: XdpModeArg) -> AttachMode {
    match arg {
        XdpModeArg::Auto => AttachMode::Auto,
        XdpModeArg::Native => AttachMode::Native,
        XdpModeArg::Generic => AttachMode::Generic,
    }
}
