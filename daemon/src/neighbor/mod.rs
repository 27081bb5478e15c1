//! Next-hop resolution from the kernel tables.
//!
//! This module keeps the workers' [`L2Table`] (the packet path's view of
//! the kernel's IPv4 and IPv6 main routing tables, ARP and NDP neighbours
//! and link MACs for the interfaces Switchyard forwards on) true to the
//! kernel: one thread follows rtnetlink notifications (plus a periodic full
//! re-dump) and publishes a new table through the workers' [`NeighborFeed`],
//! and it asks the kernel to resolve next hops the workers miss. It must
//! never take MACs from config, never send ARP, NDP or any packet itself
//! (the kernel resolves, asked over rtnetlink), and never make a worker
//! lock, allocate or enter the kernel: workers load one snapshot per batch
//! and queue misses.

pub(crate) mod netlink;

#[cfg(test)]
mod netns_tests;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};

use self::netlink::{parse_link, parse_neighbour, parse_route, Dirty, Dump, Family, RtSocket};
use crate::netlink::wait_readable;
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, NeighborFeed, Neighbors, NeighbourEntry, RouteEntry, Unresolved,
    REQUEST_QUEUE,
};

/// Groups whose notifications can change a next hop. NEIGH carries both
/// ARP and NDP. IFADDR is listed although address changes also produce
/// route notifications, because connected routes can vanish without a
/// `RTM_DELROUTE` of their own.
const GROUPS: [u32; 6] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_NEIGH,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV6_IFADDR,
];

/// Longest the thread sleeps: bounds how late a worker's request is served
/// and how long `stop` waits. Workers never wake the thread themselves,
/// since that would be a syscall on the hot path.
const TICK: Duration = Duration::from_millis(10);

/// A burst of notifications is coalesced into one rebuild once it has been
/// quiet this long...
const QUIET: Duration = Duration::from_millis(5);
/// ...or once its first notification is this old, whichever comes first.
const MAX_DELAY: Duration = Duration::from_millis(50);

/// Full re-dump period: repairs anything a lost or unsent notification hid.
const REDUMP: Duration = Duration::from_secs(5);

/// After a failed dump, wait this long before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// A worker request for a next hop already asked for within this window is
/// dropped: the kernel is resolving it (ARP and NDP retransmit every second,
/// RFC 4861 §10 RETRANS_TIMER).
const REQUEST_HOLDOFF: Duration = Duration::from_secs(1);

/// `prime` asks again this often for addresses still unresolved, so an entry
/// that went FAILED (3 unanswered probes) is retried before the deadline.
const PRIME_REASK: Duration = Duration::from_secs(1);

/// Errors starting the resolver. Failures after start are logged and
/// retried by the thread: the last good table stays published meanwhile.
#[derive(Debug, thiserror::Error)]
pub enum NeighborError {
    #[error("opening an rtnetlink socket")]
    Socket(#[source] io::Error),
    #[error("subscribing to rtnetlink multicast group {group}")]
    Subscribe {
        group: u32,
        #[source]
        source: io::Error,
    },
    #[error("dumping {what} over rtnetlink")]
    Dump {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifindex} does not exist or has no Ethernet address")]
    Interface { ifindex: u32 },
    #[error("spawning the neighbour resolver thread")]
    Spawn(#[source] io::Error),
}

/// Publication counter for the control plane (`prime`); workers never touch
/// it, so it may use a mutex.
#[derive(Default)]
struct Published {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Published {
    fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until a table newer than `seen` is published or `until` passes.
    fn wait_newer(&self, seen: u64, until: Instant) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *generation == seen {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            generation = self
                .changed
                .wait_timeout(generation, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Owns the netlink sockets and the thread that keeps the table fresh.
/// Stopping (or dropping) it stops the thread within about 10 ms; the
/// [`Neighbors`] handles keep the last table.
pub struct NeighborResolver {
    neighbors: Neighbors,
    published: Arc<Published>,
    control: Sender<IpAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NeighborResolver {
    /// Dumps links, routes and neighbours, publishes the first table, and
    /// starts the thread. `interfaces` are the ifindexes Switchyard forwards
    /// on; each must exist and have an Ethernet address.
    ///
    /// The sockets and the thread live in the network namespace of the
    /// calling thread: a netlink socket belongs to the namespace of the
    /// thread that creates it, and a spawned thread starts in its parent's.
    /// To serve another namespace, call this from a thread that has entered
    /// it with `setns`.
    pub fn start(interfaces: &[u32]) -> Result<(Self, Neighbors), NeighborError> {
        Self::start_with(interfaces, None)
    }

    /// [`NeighborResolver::start`], calling `on_publish` with every table
    /// published after the first (which the caller can read at once).
    pub fn start_with(
        interfaces: &[u32],
        on_publish: Option<PublishHook>,
    ) -> Result<(Self, Neighbors), NeighborError> {
        // Subscribe before the first dump, so no change falls between them.
        let monitor = RtSocket::monitor(&GROUPS)?;
        let mut socket = RtSocket::request()?;
        let mut kernel = KernelState::default();
        kernel.refresh(&mut socket, Dirty::ALL)?;
        if let Some(&ifindex) = interfaces
            .iter()
            .find(|&&i| !kernel.links.iter().any(|l| l.ifindex == i))
        {
            return Err(NeighborError::Interface { ifindex });
        }

        let (feed, neighbors) = NeighborFeed::new(kernel.build(interfaces));
        let published = Arc::new(Published::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (control, control_rx) = crossbeam::channel::unbounded();
        let worker = Worker {
            interfaces: interfaces.to_vec(),
            monitor,
            socket,
            kernel,
            feed,
            published: Arc::clone(&published),
            control: control_rx,
            stop: Arc::clone(&stop),
            asked: HashMap::new(),
            on_publish,
        };
        let thread = std::thread::Builder::new()
            .name("swy-neighbor".into())
            .spawn(move || worker.run())
            .map_err(NeighborError::Spawn)?;
        let resolver = Self {
            neighbors: neighbors.clone(),
            published,
            control,
            stop,
            thread: Some(thread),
        };
        Ok((resolver, neighbors))
    }

    /// Another handle for workers.
    pub fn neighbors(&self) -> Neighbors {
        self.neighbors.clone()
    }

    /// Asks the kernel to resolve `addrs` now (e.g. every backend endpoint at
    /// startup) and waits for each table publication until they all resolve
    /// or `deadline` passes. Returns those still unresolved, in input order.
    /// An address without a route is asked for again as routes change.
    /// Addresses may be `IpAddr`, `Ipv4Addr` or `Ipv6Addr`, and come back
    /// as given.
    pub fn prime<A>(&self, addrs: &[A], deadline: Duration) -> Vec<A>
    where
        A: Copy + PartialEq + Into<IpAddr>,
    {
        let end = Instant::now() + deadline;
        let mut pending: Vec<A> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if !pending.contains(addr) {
                pending.push(*addr);
            }
        }
        let mut next_ask = Instant::now();
        loop {
            // Generation first: a table published after this read wakes us.
            let seen = self.published.generation();
            let table = self.neighbors.table();
            pending.retain(|&addr| table.resolve(addr).is_err());
            drop(table);
            let now = Instant::now();
            if pending.is_empty() || now >= end {
                return pending;
            }
            if now >= next_ask {
                for &addr in &pending {
                    // Fails only if the thread is gone; then we time out.
                    let _ = self.control.send(addr.into());
                }
                next_ask = now + PRIME_REASK;
            }
            self.published.wait_newer(seen, next_ask.min(end));
        }
    }

    /// Stops the thread and waits for it (about 10 ms).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for NeighborResolver {
    fn drop(&mut self) {
        // Release: pairs with the thread's Acquire load; nothing else is
        // published through it, so this is belt and braces.
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("neighbour resolver thread panicked");
            }
        }
    }
}

/// The kernel facts the table is built from, as of the last dumps.
#[derive(Default)]
struct KernelState {
    links: Vec<LinkEntry>,
    routes: Vec<RouteEntry>,
    neighbours: Vec<NeighbourEntry>,
}

impl KernelState {
    /// Re-dumps the tables marked dirty. Whole tables, not deltas: a table is
    /// then always exactly one kernel dump, and bursts are coalesced by the
    /// caller, so the cost stays bounded.
    fn refresh(&mut self, socket: &mut RtSocket, dirty: Dirty) -> Result<(), NeighborError> {
        let failed = |what: Dump| {
            move |source| NeighborError::Dump {
                what: what.name(),
                source,
            }
        };
        if dirty.links {
            self.links = socket
                .dump(Dump::Links, |kind, payload, out| {
                    if kind == libc::RTM_NEWLINK {
                        out.extend(parse_link(payload));
                    }
                })
                .map_err(failed(Dump::Links))?;
        }
        // Each family's entries are kept only from its own dump: a kernel
        // without IPv6 (ipv6.disable=1) hands an AF_INET6 route dump to the
        // all-families dumper, which would list the IPv4 routes twice.
        if dirty.routes {
            let mut routes = Vec::new();
            for family in Family::BOTH {
                let dump = Dump::Routes(family);
                routes.extend(
                    socket
                        .dump(dump, |kind, payload, out| {
                            if kind == libc::RTM_NEWROUTE {
                                let start = out.len();
                                parse_route(payload, out);
                                if out[start..].iter().any(|r| Family::of(r.dst) != family) {
                                    out.truncate(start);
                                }
                            }
                        })
                        .map_err(failed(dump))?,
                );
            }
            self.routes = routes;
        }
        if dirty.neighbours {
            let mut neighbours = Vec::new();
            for family in Family::BOTH {
                let dump = Dump::Neighbours(family);
                neighbours.extend(
                    socket
                        .dump(dump, |kind, payload, out| {
                            if kind == libc::RTM_NEWNEIGH {
                                out.extend(
                                    parse_neighbour(payload).filter(|n| Family::of(n.ip) == family),
                                );
                            }
                        })
                        .map_err(failed(dump))?,
                );
            }
            self.neighbours = neighbours;
        }
        Ok(())
    }

    fn build(&self, interfaces: &[u32]) -> L2Table {
        L2Table::new(interfaces, &self.links, &self.routes, &self.neighbours)
    }
}

/// The resolver thread's state.
struct Worker {
    interfaces: Vec<u32>,
    /// Notifications only.
    monitor: RtSocket,
    /// Dumps and `NTF_USE` commands.
    socket: RtSocket,
    kernel: KernelState,
    feed: NeighborFeed,
    published: Arc<Published>,
    control: Receiver<IpAddr>,
    stop: Arc<AtomicBool>,
    /// When each (ifindex, next hop) was last handed to the kernel.
    asked: HashMap<(u32, IpAddr), Instant>,
    on_publish: Option<PublishHook>,
}

/// Called on the resolver thread right after each new table is published.
pub type PublishHook = Box<dyn Fn(&L2Table) + Send>;

impl Worker {
    fn run(mut self) {
        let mut dirty = Dirty::default();
        // First and latest notification of the burst being coalesced.
        let mut burst: Option<(Instant, Instant)> = None;
        let mut next_redump = Instant::now() + REDUMP;
        let mut retry_at = Instant::now();
        // Leading edge: the first change after a quiet spell is published at
        // once (a client's ARP request is followed within microseconds by
        // the packet whose reply needs that MAC); only the rest of a burst
        // waits to be coalesced.
        let mut last_refresh = Instant::now() - QUIET;
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let mut wake = (now + TICK).min(next_redump);
            if let Some((first, last)) = burst {
                wake = wake.min((last + QUIET).min(first + MAX_DELAY).max(retry_at));
            }
            match wait_readable(self.monitor.fd(), wake.saturating_duration_since(now)) {
                Ok(true) => {
                    let changed = self.monitor.drain();
                    if changed.any() {
                        let now = Instant::now();
                        dirty.merge(changed);
                        burst = Some((burst.map_or(now, |(first, _)| first), now));
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    // Not expected on a valid fd; sleep so it cannot spin.
                    log::warn!("polling rtnetlink notifications: {e}");
                    std::thread::sleep(TICK);
                }
            }

            let now = Instant::now();
            self.serve_requests(now);

            let redump = now >= next_redump;
            if redump {
                dirty = Dirty::ALL;
                burst.get_or_insert((now, now));
                next_redump = now + REDUMP;
            }
            let due = now >= retry_at
                && (redump
                    || burst.is_some_and(|(first, last)| {
                        now >= last_refresh + QUIET
                            || now >= last + QUIET
                            || now >= first + MAX_DELAY
                    }));
            if due {
                match self.kernel.refresh(&mut self.socket, dirty) {
                    Ok(()) => {
                        dirty = Dirty::default();
                        burst = None;
                        last_refresh = now;
                        self.publish();
                    }
                    Err(e) => {
                        log::warn!("{e}: {}; keeping the last table", source_of(&e));
                        retry_at = now + RETRY;
                    }
                }
            }
        }
    }

    /// Publishes a rebuilt table if it differs from the current one, so
    /// re-dumps that change nothing cost the workers nothing.
    fn publish(&mut self) {
        let table = self.kernel.build(&self.interfaces);
        let current = self.feed.current();
        if *current != table {
            let version = current.version() + 1;
            let epoch = if table.extends(&current) {
                current.epoch()
            } else {
                current.epoch() + 1
            };
            let table = Arc::new(table.with_version(version).with_epoch(epoch));
            self.feed.publish(table.clone());
            self.published.bump();
            if let Some(hook) = &self.on_publish {
                hook(&table);
            }
        }
    }

    fn serve_requests(&mut self, now: Instant) {
        let table = self.feed.current();
        // Bounded, so a flood of misses cannot starve notifications.
        for _ in 0..REQUEST_QUEUE {
            let Some(addr) = self.feed.next_request() else {
                break;
            };
            self.ask_kernel(&table, addr, now, false);
        }
        while let Ok(addr) = self.control.try_recv() {
            self.ask_kernel(&table, addr, now, true);
        }
        if self.asked.len() > REQUEST_QUEUE {
            self.asked
                .retain(|_, at| now.duration_since(*at) < REQUEST_HOLDOFF);
        }
    }

    /// Makes the kernel resolve the next hop of `addr` if the table lacks it.
    /// `force` skips the holdoff (control-plane requests pace themselves).
    fn ask_kernel(&mut self, table: &L2Table, addr: IpAddr, now: Instant, force: bool) {
        let Err(Unresolved::NoNeighbour { next_hop, ifindex }) = table.resolve(addr) else {
            return;
        };
        let key = (ifindex, next_hop);
        if !force
            && self
                .asked
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < REQUEST_HOLDOFF)
        {
            return;
        }
        self.asked.insert(key, now);
        if let Err(e) = self.socket.request_resolution(ifindex, next_hop) {
            log::warn!("asking the kernel to resolve {next_hop} on interface {ifindex}: {e}");
        }
    }
}

fn source_of(e: &NeighborError) -> String {
    std::error::Error::source(e).map_or_else(String::new, ToString::to_string)
}
