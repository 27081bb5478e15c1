//! L2 announcements: ARP replies and IPv6 neighbour advertisements for the
//! VIPs this node owns on its segment, and the election of that owner among
//! the LB nodes that hear each other.
//!
//! Designed as MetalLB's layer-2 mode, without a cluster: each LB node
//! sends a heartbeat on every served interface (UDP, `--l2-heartbeat-port`,
//! every `--l2-heartbeat-ms`) naming itself, whether it is drained, and the
//! VIPs it is ready to announce; a peer not heard for `--l2-dead-after-ms`
//! is dead. Every node elects the owner of each VIP from the same inputs
//! (`election`), and only the owner answers for it; when a node comes to
//! own a VIP it sends gratuitous ARP or an unsolicited advertisement, so
//! clients and switches move to it without waiting for their caches. The
//! heartbeats test the segment itself, as the answers travel it.
//!
//! A drained node keeps sending heartbeats marked draining, so its VIPs
//! move at once; a stopping one sends a last one marked leaving; a process
//! handing over sends nothing, and the next one, under the same name,
//! carries on. A VIP the config of this node does not serve is never
//! answered for here: a node is a candidate only for the VIPs its own
//! config serves, and its heartbeat says which (up to 64; a node with more
//! is a candidate for all, as MetalLB treats every speaker).
//!
//! `Speaker::set` runs under the config publisher's lock: it only hands
//! the VIPs to the speaker's thread (`speaker`), which alone does I/O.

mod election;
mod frames;
mod link;
mod message;
mod packet_socket;
mod speaker;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{unbounded, Sender};
use switchyard_config::snapshot::Announcement;
use switchyard_proto::{
    AnnouncementStatus, PeerStatus, ANNOUNCE_ANNOUNCED, ANNOUNCE_STANDBY, ANNOUNCE_WITHDRAWN,
};

use self::link::Link;
use self::speaker::{Command, Report, Role, Thread};
use super::{AnnounceError, Speaker};

/// Defaults of `switchyard run`'s `--l2-*` flags.
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7947;
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_millis(1000);

/// How the L2 speaker runs.
#[derive(Debug, Clone)]
pub struct L2Options {
    /// This node's name in the election (`--node-name`).
    pub node_name: String,
    /// The served interfaces: (name, ifindex). VIPs are answered for on
    /// each, and heartbeats sent and heard on each.
    pub interfaces: Vec<(String, u32)>,
    /// UDP port of the heartbeats between LB nodes.
    pub heartbeat_port: u16,
    pub heartbeat_interval: Duration,
    /// A peer not heard from for this long is dead.
    pub dead_after: Duration,
}

/// Starts the L2 speaker.
pub fn start(options: L2Options) -> Result<Box<dyn Speaker>, AnnounceError> {
    if options.interfaces.is_empty() {
        return Err(AnnounceError::Refused(
            "L2 announcements need a served interface".to_owned(),
        ));
    }
    if options.node_name.len() > message::MAX_NAME {
        return Err(AnnounceError::Refused(format!(
            "--node-name: longer than {} bytes",
            message::MAX_NAME
        )));
    }
    if options.heartbeat_interval.is_zero() || options.dead_after <= options.heartbeat_interval {
        return Err(AnnounceError::Refused(
            "--l2-dead-after-ms must be longer than --l2-heartbeat-ms (and both above zero)"
                .to_owned(),
        ));
    }
    let links = options
        .interfaces
        .iter()
        .map(|(name, ifindex)| Link::open(name, *ifindex, options.heartbeat_port))
        .collect::<Result<Vec<_>, _>>()?;
    let (commands, receiver) = unbounded();
    let report = Arc::new(Mutex::new(Report::default()));
    let thread = Thread::new(options.clone(), links, receiver, report.clone());
    let handle = std::thread::Builder::new()
        .name("l2-speaker".to_owned())
        .spawn(move || thread.run())
        .map_err(|source| AnnounceError::Io {
            what: "starting the L2 speaker's thread".to_owned(),
            source,
        })?;
    log::info!(
        "L2: speaking as {} on {} (heartbeats on UDP port {} every {:?}, dead after {:?})",
        options.node_name,
        options
            .interfaces
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        options.heartbeat_port,
        options.heartbeat_interval,
        options.dead_after,
    );
    Ok(Box::new(L2Speaker {
        commands,
        report,
        thread: Some(handle),
    }))
}

struct L2Speaker {
    commands: Sender<Command>,
    report: Arc<Mutex<Report>>,
    thread: Option<JoinHandle<()>>,
}

impl L2Speaker {
    fn stop(&mut self, leave: bool) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.commands.send(Command::Stop { leave });
        if thread.join().is_err() {
            log::warn!("L2: the speaker's thread panicked");
        }
    }
}

impl Speaker for L2Speaker {
    fn set(&mut self, vips: &[IpAddr], drained: bool) -> Result<(), AnnounceError> {
        self.commands
            .send(Command::Set {
                vips: vips.to_vec(),
                drained,
            })
            .map_err(|_| AnnounceError::Refused("the L2 speaker has stopped".to_owned()))
    }

    fn withdraw_all(&mut self) {
        self.stop(true);
    }

    fn hand_over(&mut self) {
        self.stop(false);
    }

    fn status(&self, wanted: &[Announcement]) -> Vec<AnnouncementStatus> {
        let report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        wanted
            .iter()
            .map(|a| {
                let (state, detail) = match report.roles.get(&a.address) {
                    Some(Role::Announced) => (ANNOUNCE_ANNOUNCED, String::new()),
                    Some(Role::Standby(detail)) => (ANNOUNCE_STANDBY, detail.clone()),
                    Some(Role::Withdrawn(detail)) => (ANNOUNCE_WITHDRAWN, detail.clone()),
                    None => (ANNOUNCE_WITHDRAWN, "not yet elected".to_owned()),
                };
                AnnouncementStatus {
                    address: a.address.to_string(),
                    mode: a.mode.to_string(),
                    gateway: a.gateway.clone(),
                    state: state.to_owned(),
                    detail,
                }
            })
            .collect()
    }

    fn peers(&self) -> Vec<PeerStatus> {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peers
            .clone()
    }
}

impl Drop for L2Speaker {
    fn drop(&mut self) {
        self.stop(true);
    }
}
