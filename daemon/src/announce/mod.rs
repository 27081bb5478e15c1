//! Telling the network where the VIPs live.
//!
//! The config says which VIPs to announce and how
//! (`Snapshot::announcements`, from `GatewayClassConfig.spec.announce`).
//! Each mode has a `Speaker`: `l2` answers ARP and neighbour solicitations
//! for the VIPs this node owns on its segment, `bgp` puts routes into the
//! node's BIRD. The `Announcer` hands every speaker the VIPs of its mode
//! on each published snapshot, and withdraws them all when the node is
//! drained (`yardctl node drain`) or stops.
//!
//! A speaker is started the first time the config asks for its mode, so a
//! node that announces nothing sends and opens nothing. A speaker that
//! cannot start is reported on every VIP it should announce and tried
//! again on the next snapshot.
//!
//! Nothing here is on the packet path: the workers never see it, and it
//! holds a plain mutex.

pub mod bgp;
pub mod l2;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often `wait_announced` looks: a speaker's thread takes a few
/// milliseconds to have BIRD read a file.
const ANNOUNCED_POLL: Duration = Duration::from_millis(5);

use switchyard_config::snapshot::{AnnounceMode, Announcement, Snapshot};
use switchyard_proto::{
    AnnouncementStatus, NodeReport, PeerStatus, ANNOUNCE_ANNOUNCED, ANNOUNCE_WITHDRAWN,
};

use crate::drain::PublishHook;

/// Why a speaker could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// One way of telling the network where VIPs live.
pub trait Speaker: Send {
    /// From now on announce exactly `vips` (all of this speaker's mode),
    /// or, `drained`, none: and make peers take over where the mode has
    /// peers.
    fn set(&mut self, vips: &[IpAddr], drained: bool) -> Result<(), AnnounceError>;
    /// The node stops: withdraw everything, as visibly as the mode allows.
    fn withdraw_all(&mut self);
    /// Leave the network as it is, for a process taking over this one's
    /// place; the announcements are its to keep up from now on.
    fn hand_over(&mut self) {}
    /// What this speaker does for each of `wanted`, in its order.
    fn status(&self, wanted: &[Announcement]) -> Vec<AnnouncementStatus>;
    /// The other nodes it knows of, if its mode has any.
    fn peers(&self) -> Vec<PeerStatus> {
        Vec::new()
    }
}

/// Starts a speaker, on the first snapshot that needs one of its mode.
pub type SpeakerFactory = Box<dyn Fn() -> Result<Box<dyn Speaker>, AnnounceError> + Send + Sync>;

/// The node's speakers, fed from the published snapshots.
pub struct Announcer {
    name: String,
    state: Mutex<State>,
}

struct State {
    factories: Vec<(AnnounceMode, SpeakerFactory)>,
    speakers: Vec<(AnnounceMode, Box<dyn Speaker>)>,
    /// Why a mode's speaker did not start or last failed.
    errors: Vec<(AnnounceMode, String)>,
    wanted: Vec<Announcement>,
    drained: bool,
    /// Set by `start`, once the workers serve: until then snapshots are
    /// only remembered.
    started: bool,
    stopped: bool,
}

impl Announcer {
    pub fn new(name: impl Into<String>, factories: Vec<(AnnounceMode, SpeakerFactory)>) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new(State {
                factories,
                speakers: Vec::new(),
                errors: Vec::new(),
                wanted: Vec::new(),
                drained: false,
                started: false,
                stopped: false,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Announces what `snapshot` asks for (once started).
    pub fn update(&self, snapshot: &Snapshot) {
        let mut state = self.lock();
        state.wanted = snapshot.announcements().to_vec();
        state.apply();
    }

    /// The workers serve: announce what the last snapshot asks for, and
    /// every snapshot's from now on. A VIP announced before would draw
    /// traffic nothing forwards.
    pub fn start(&self, snapshot: &Snapshot) {
        let mut state = self.lock();
        state.started = true;
        state.wanted = snapshot.announcements().to_vec();
        state.apply();
    }

    /// Drains the node (`true`) or takes it back (`false`).
    pub fn set_drained(&self, drained: bool) -> NodeReport {
        let mut state = self.lock();
        if state.drained != drained {
            log::info!(
                "node {}: {}",
                self.name,
                if drained {
                    "drained: withdrawing every announcement"
                } else {
                    "undrained: announcing again"
                }
            );
        }
        state.drained = drained;
        state.apply();
        self.report(&state)
    }

    pub fn status(&self) -> NodeReport {
        self.report(&self.lock())
    }

    /// Waits until every VIP of `mode` is announced (a speaker applies
    /// its changes on a thread of its own), at most `timeout`; whether
    /// they all were.
    pub fn wait_announced(&self, mode: AnnounceMode, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mode = mode.to_string();
        loop {
            let report = self.status();
            if report
                .announcements
                .iter()
                .filter(|a| a.mode == mode)
                .all(|a| a.state == ANNOUNCE_ANNOUNCED)
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(ANNOUNCED_POLL);
        }
    }

    /// The daemon stops: every speaker withdraws.
    pub fn shutdown(&self) {
        let mut state = self.lock();
        state.stopped = true;
        for (mode, speaker) in &mut state.speakers {
            log::info!("withdrawing the {mode} announcements");
            speaker.withdraw_all();
        }
    }

    /// Another process takes this one's place: the announcements are left
    /// as they are, for it to keep up.
    pub fn hand_over(&self) {
        let mut state = self.lock();
        state.stopped = true;
        for (_, speaker) in &mut state.speakers {
            speaker.hand_over();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self, state: &State) -> NodeReport {
        let mut announcements = Vec::new();
        let mut peers = Vec::new();
        for mode in [AnnounceMode::L2, AnnounceMode::Bgp] {
            let wanted: Vec<Announcement> = state
                .wanted
                .iter()
                .filter(|a| a.mode == mode)
                .cloned()
                .collect();
            let speaker = state.speakers.iter().find(|(m, _)| *m == mode);
            let error = state.errors.iter().find(|(m, _)| *m == mode);
            match (speaker, error) {
                (Some((_, speaker)), None) => {
                    announcements.extend(speaker.status(&wanted));
                    peers.extend(speaker.peers());
                }
                (_, error) => {
                    let detail = match error {
                        Some((_, error)) => error.clone(),
                        None if state.drained => "node drained".to_owned(),
                        None => "no speaker".to_owned(),
                    };
                    announcements.extend(wanted.iter().map(|a| AnnouncementStatus {
                        address: a.address.to_string(),
                        mode: a.mode.to_string(),
                        gateway: a.gateway.clone(),
                        state: ANNOUNCE_WITHDRAWN.to_owned(),
                        detail: detail.clone(),
                    }));
                    if let Some((_, speaker)) = speaker {
                        peers.extend(speaker.peers());
                    }
                }
            }
        }
        NodeReport {
            name: self.name.clone(),
            drained: state.drained,
            announcements,
            peers,
        }
    }
}

impl State {
    fn apply(&mut self) {
        if !self.started || self.stopped {
            return;
        }
        self.errors.clear();
        for mode in [AnnounceMode::L2, AnnounceMode::Bgp] {
            let vips: Vec<IpAddr> = self
                .wanted
                .iter()
                .filter(|a| a.mode == mode)
                .map(|a| a.address)
                .collect();
            if !self.speakers.iter().any(|(m, _)| *m == mode) {
                if vips.is_empty() {
                    continue;
                }
                let Some((_, factory)) = self.factories.iter().find(|(m, _)| *m == mode) else {
                    self.errors
                        .push((mode, format!("this node has no {mode} speaker")));
                    continue;
                };
                match factory() {
                    Ok(speaker) => {
                        log::info!("{mode} announcements started");
                        self.speakers.push((mode, speaker));
                    }
                    Err(err) => {
                        log::warn!("{mode} announcements could not start: {err}");
                        self.errors.push((mode, err.to_string()));
                        continue;
                    }
                }
            }
            let drained = self.drained;
            if let Some((_, speaker)) = self.speakers.iter_mut().find(|(m, _)| *m == mode) {
                if let Err(err) = speaker.set(&vips, drained) {
                    log::warn!("{mode} announcements: {err}");
                    self.errors.push((mode, err.to_string()));
                }
            }
        }
    }
}

/// Every published snapshot goes to the speakers once the workers have it:
/// a VIP is announced only when it is served.
impl PublishHook for Announcer {
    fn before(&self, _next: &Arc<Snapshot>) {}

    fn after(&self, next: &Snapshot) {
        self.update(next);
    }
}

#[cfg(test)]
mod tests;
