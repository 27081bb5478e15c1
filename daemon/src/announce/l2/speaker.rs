//! The L2 speaker's thread: it alone touches the sockets. It hears
//! heartbeats, ARP requests and solicitations, sends heartbeats, elects
//! the owner of each VIP, answers for the VIPs it owns and announces them
//! when it comes to own them; it publishes what it does for
//! `yardctl node`. The daemon reaches it only through a channel (so
//! `Speaker::set` never waits on I/O) and a report behind a mutex.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, TryRecvError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use switchyard_proto::PeerStatus;

use super::election::{owner, Liveness, Peers};
use super::frames::{
    arp_reply, gratuitous_arp, multicast_mac, parse_arp_request, parse_neighbor_solicitation,
    solicited_advertisement, solicited_node_group, unsolicited_advertisement,
};
use super::link::Link;
use super::message::{Heartbeat, MAX_MESSAGE};
use super::L2Options;

/// What the daemon asks of the thread.
pub enum Command {
    Set {
        vips: Vec<IpAddr>,
        drained: bool,
    },
    /// Stop; `leave`: tell the peers first, so they take over at once.
    Stop {
        leave: bool,
    },
}

/// What the speaker does for a VIP, for `yardctl node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Announced,
    Standby(String),
    Withdrawn(String),
}

#[derive(Debug, Default)]
pub struct Report {
    pub roles: BTreeMap<IpAddr, Role>,
    pub peers: Vec<PeerStatus>,
}

/// When a VIP this node comes to own is announced again after the first
/// time: clients and switches that missed one frame get the next
/// (keepalived and MetalLB repeat theirs too).
const ANNOUNCE_AGAIN: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(2000)];
/// The longest the thread sleeps before looking at its channel.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Frames read from one socket per wake-up, so no socket starves another.
const READ_BUDGET: usize = 64;
/// Longer than any frame the speaker reads (ARP and NDP are short).
const FRAME_BUFFER: usize = 2048;

pub struct Thread {
    options: L2Options,
    links: Vec<Link>,
    commands: Receiver<Command>,
    report: Arc<Mutex<Report>>,
    peers: Peers,
    /// Liveness last logged per peer.
    logged: BTreeMap<String, Liveness>,
    vips: Vec<IpAddr>,
    drained: bool,
    owned: BTreeSet<IpAddr>,
    /// Until then, only listen: the peers alive are heard before this node
    /// claims anything, so a (re)started node does not grab the others'
    /// VIPs for a moment.
    listen_until: Instant,
    sequence: u64,
    next_beat: Instant,
    /// VIPs to announce again, and when.
    again: Vec<(IpAddr, Instant)>,
}

impl Thread {
    pub fn new(
        options: L2Options,
        links: Vec<Link>,
        commands: Receiver<Command>,
        report: Arc<Mutex<Report>>,
    ) -> Thread {
        let now = Instant::now();
        let listen = (options.heartbeat_interval * 2 + MAX_WAIT).min(options.dead_after);
        Thread {
            options,
            links,
            commands,
            report,
            peers: Peers::default(),
            logged: BTreeMap::new(),
            vips: Vec::new(),
            drained: false,
            owned: BTreeSet::new(),
            listen_until: now + listen,
            sequence: 0,
            next_beat: now,
            again: Vec::new(),
        }
    }

    pub fn run(mut self) {
        let leave = loop {
            if let Some(leave) = self.take_commands() {
                break leave;
            }
            let now = Instant::now();
            self.read(now);
            self.elect(now);
            if now >= self.next_beat {
                self.beat(false);
                self.next_beat = now + self.options.heartbeat_interval;
            }
            self.announce_again(now);
            self.wait();
        };
        for vip in std::mem::take(&mut self.owned) {
            self.lose(vip);
        }
        if leave {
            self.beat(true);
            log::info!("L2: stopped answering and told the peers this node leaves");
        } else {
            log::info!("L2: handed over to the next process");
        }
        let mut report = self.lock_report();
        for role in report.roles.values_mut() {
            *role = Role::Withdrawn("speaker stopped".to_owned());
        }
    }

    /// Applies the daemon's commands; `Some(leave)` when told to stop.
    fn take_commands(&mut self) -> Option<bool> {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Set { vips, drained }) => {
                    let drain_changed = drained != self.drained;
                    self.vips = vips;
                    self.drained = drained;
                    if drain_changed {
                        // The peers learn of a drain at once, not at the
                        // next beat.
                        self.next_beat = Instant::now();
                    }
                }
                Ok(Command::Stop { leave }) => return Some(leave),
                Err(TryRecvError::Empty) => return None,
                // The speaker was dropped without a word: leave visibly.
                Err(TryRecvError::Disconnected) => return Some(true),
            }
        }
    }

    fn lock_report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&mut self, now: Instant) {
        let mut buf = [0u8; FRAME_BUFFER];
        for i in 0..self.links.len() {
            for _ in 0..READ_BUDGET {
                let Some((n, from)) = self.links[i].recv_heartbeat(&mut buf) else {
                    break;
                };
                self.heard(&buf[..n.min(MAX_MESSAGE + 1)], from, now);
            }
            let link = &self.links[i];
            for _ in 0..READ_BUDGET {
                match link.arp.recv(&mut buf) {
                    Ok(Some(n)) => {
                        let Some(request) = parse_arp_request(&buf[..n]) else {
                            continue;
                        };
                        let target = IpAddr::V4(request.target);
                        if request.is_gratuitous() || !self.owned.contains(&target) {
                            continue;
                        }
                        if let Err(err) = link.arp.send(&arp_reply(link.mac, &request)) {
                            log::debug!("L2: {}: ARP reply for {target}: {err}", link.name);
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        log::debug!("L2: {}: reading ARP: {err}", link.name);
                        break;
                    }
                }
            }
            for _ in 0..READ_BUDGET {
                match link.nd.recv(&mut buf) {
                    Ok(Some(n)) => {
                        let Some(solicitation) = parse_neighbor_solicitation(&buf[..n]) else {
                            continue;
                        };
                        let target = IpAddr::V6(solicitation.target);
                        if !self.owned.contains(&target) {
                            continue;
                        }
                        let answer = solicited_advertisement(link.mac, &solicitation);
                        if let Err(err) = link.nd.send(&answer) {
                            log::debug!("L2: {}: advertisement of {target}: {err}", link.name);
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        log::debug!("L2: {}: reading solicitations: {err}", link.name);
                        break;
                    }
                }
            }
        }
    }

    fn heard(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        let heartbeat = match Heartbeat::decode(bytes) {
            Ok(heartbeat) => heartbeat,
            Err(why) => {
                log::debug!("L2: ignoring a datagram from {from}: {why}");
                return;
            }
        };
        if heartbeat.name == self.options.node_name {
            // Our own broadcast, looped back.
            return;
        }
        if !self.peers.heard(heartbeat, from, now) {
            log::debug!("L2: ignoring a heartbeat from {from}: too many peers");
        }
    }

    /// Elects the owner of every VIP, takes up and lets go of what
    /// changed, and publishes the result.
    fn elect(&mut self, now: Instant) {
        let dead_after = self.options.dead_after;
        self.peers.forget_dead(now);
        let mut roles = BTreeMap::new();
        let mut owned = BTreeSet::new();
        for &vip in &self.vips {
            let role = if self.drained {
                Role::Withdrawn("node drained".to_owned())
            } else if now < self.listen_until {
                Role::Standby("listening for peers before the first election".to_owned())
            } else {
                let me = self.options.node_name.as_str();
                let candidates = self
                    .peers
                    .candidates(vip, now, dead_after)
                    .chain(std::iter::once(me));
                match owner(vip, candidates) {
                    Some(name) if name == me => {
                        owned.insert(vip);
                        Role::Announced
                    }
                    Some(name) => Role::Standby(format!("owner {name}")),
                    None => Role::Withdrawn("no candidate".to_owned()),
                }
            };
            roles.insert(vip, role);
        }
        let lost: Vec<IpAddr> = self.owned.difference(&owned).copied().collect();
        let won: Vec<IpAddr> = owned.difference(&self.owned).copied().collect();
        for vip in lost {
            self.lose(vip);
            let why = roles.get(&vip).map(describe).unwrap_or("no longer served");
            log::info!("L2: {vip}: no longer announced here ({why})");
        }
        for vip in won {
            self.win(vip, now);
            log::info!("L2: {vip}: owned by this node, announcing");
        }
        self.owned = owned;
        let mut peers = Vec::new();
        for (name, peer) in self.peers.iter() {
            let liveness = Peers::liveness(peer, now, dead_after);
            if self.logged.get(name) != Some(&liveness) {
                log::info!(
                    "L2: peer {name} ({}) is {}",
                    peer.from.ip(),
                    state(liveness)
                );
                self.logged.insert(name.clone(), liveness);
            }
            peers.push(PeerStatus {
                name: name.clone(),
                address: peer.from.ip().to_string(),
                state: state(liveness).to_owned(),
                last_heard_ms: now.saturating_duration_since(peer.last_heard).as_millis() as u64,
            });
        }
        self.logged
            .retain(|name, _| peers.iter().any(|p| &p.name == name));
        let mut report = self.lock_report();
        report.roles = roles;
        report.peers = peers;
    }

    /// This node comes to own `vip`: listen for its solicitations and tell
    /// the segment now, and twice more.
    fn win(&mut self, vip: IpAddr, now: Instant) {
        if let IpAddr::V6(v6) = vip {
            let group = multicast_mac(&solicited_node_group(&v6));
            for link in &mut self.links {
                if link.joined.insert(group) {
                    if let Err(err) = link.nd.multicast(group, true) {
                        log::warn!(
                            "L2: {}: joining the solicited-node group of {v6}: {err}",
                            link.name
                        );
                    }
                }
            }
        }
        self.announce(vip);
        self.again.retain(|(v, _)| *v != vip);
        self.again
            .extend(ANNOUNCE_AGAIN.iter().map(|after| (vip, now + *after)));
    }

    fn lose(&mut self, vip: IpAddr) {
        self.again.retain(|(v, _)| *v != vip);
        if let IpAddr::V6(v6) = vip {
            let group = multicast_mac(&solicited_node_group(&v6));
            // Another owned VIP may share the group (same low 24 bits).
            let shared = self.owned.iter().any(|o| {
                *o != vip && matches!(o, IpAddr::V6(o) if multicast_mac(&solicited_node_group(o)) == group)
            });
            if !shared {
                for link in &mut self.links {
                    if link.joined.remove(&group) {
                        let _ = link.nd.multicast(group, false);
                    }
                }
            }
        }
    }

    fn announce(&self, vip: IpAddr) {
        for link in &self.links {
            let (socket, frame) = match vip {
                IpAddr::V4(v4) => (&link.arp, gratuitous_arp(link.mac, v4)),
                IpAddr::V6(v6) => (&link.nd, unsolicited_advertisement(link.mac, v6)),
            };
            if let Err(err) = socket.send(&frame) {
                log::warn!("L2: {}: announcing {vip}: {err}", link.name);
            }
        }
    }

    fn announce_again(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.again.drain(..).partition(|(_, at)| *at <= now);
        self.again = later;
        for (vip, _) in due {
            if self.owned.contains(&vip) {
                self.announce(vip);
            }
        }
    }

    /// Sends a heartbeat on every link; `leaving`: the last one.
    fn beat(&mut self, leaving: bool) {
        self.sequence += 1;
        let ready: Vec<IpAddr> = if self.drained || leaving {
            Vec::new()
        } else {
            self.vips.clone()
        };
        let message = Heartbeat {
            name: self.options.node_name.clone(),
            sequence: self.sequence,
            draining: self.drained || leaving,
            leaving,
            vips: Heartbeat::listing(&ready),
        }
        .encode();
        let port = self.options.heartbeat_port;
        for link in &mut self.links {
            match link.send_heartbeat(&message, port) {
                Ok(()) => link.beat_failing = false,
                Err(err) => {
                    if !link.beat_failing {
                        log::warn!("L2: {}: sending a heartbeat: {err}", link.name);
                    }
                    link.beat_failing = true;
                }
            }
        }
    }

    fn wait(&self) {
        let now = Instant::now();
        let mut until = (now + MAX_WAIT).min(self.next_beat);
        for (_, at) in &self.again {
            until = until.min(*at);
        }
        let timeout = until.saturating_duration_since(now);
        let mut fds = Vec::with_capacity(self.links.len() * 4);
        for link in &self.links {
            fds.extend(
                link.fds()
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
        }
        let timeout = PollTimeout::from(timeout.as_millis().min(1000) as u16);
        // An error (EINTR) only means looking again sooner.
        let _ = poll(&mut fds, timeout);
    }
}

fn state(liveness: Liveness) -> &'static str {
    match liveness {
        Liveness::Alive => "alive",
        Liveness::Draining => "draining",
        Liveness::Dead => "dead",
    }
}

fn describe(role: &Role) -> &str {
    match role {
        Role::Announced => "announced",
        Role::Standby(detail) | Role::Withdrawn(detail) => detail,
    }
}
