//! BGP announcements through the node's BIRD: the routes of the VIPs this
//! node serves, written where BIRD's configuration includes them.
//!
//! Switchyard speaks no BGP itself. It writes one static route per VIP
//! into `vips4.conf` / `vips6.conf` under `--bird-routes` (the operator's
//! bird.conf includes them in two static protocols and exports them to
//! its peers; deploy/bird/ has samples), then asks BIRD to read its
//! configuration again over `--bird-socket` (`configure`). A drained node
//! and a stopping one write files without routes.
//!
//! The routes go `via` a TUN device this process creates and holds open
//! (`syv<pid>`): when the process dies, even by kill -9, the kernel
//! destroys the device, BIRD's `protocol device` sees it go, and the
//! routes through it are withdrawn from every peer at once. Nothing else
//! would tell BIRD that the VIPs it announces are no longer forwarded. A
//! process taking over from this one writes routes through its own
//! device before this one exits, so the hand-over withdraws nothing.
//!
//! `set` is called under the config publisher's lock, so it only records
//! what is wanted; the speaker's own thread writes the files and talks to
//! BIRD, with a timeout on every read and write, and retries a failure
//! every second. What BIRD last accepted, and why it did not, is what
//! `status` reports.

mod birdc;
mod device;
mod routes;
mod sessions;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use switchyard_config::snapshot::Announcement;
use switchyard_proto::{AnnouncementStatus, PeerStatus, ANNOUNCE_ANNOUNCED, ANNOUNCE_WITHDRAWN};

use self::birdc::Birdc;
use self::device::RouteDevice;
use self::routes::RouteDir;
use self::sessions::Session;
use super::{AnnounceError, Speaker};

/// Default of `--bird-socket`: where Debian's bird2 puts its control socket.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// Default of `--bird-routes`: the folder of the files BIRD includes.
pub const DEFAULT_ROUTE_DIR: &str = "/run/switchyard/bird";

/// How long one exchange with BIRD may take before it counts as failed.
const BIRD_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a failed update is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often BIRD is asked about its BGP sessions, for `yardctl node`.
const SESSIONS_EVERY: Duration = Duration::from_secs(2);
/// How long a stopping node waits for BIRD to confirm the withdrawal. The
/// device is gone by then, so BIRD has withdrawn the routes either way.
const WITHDRAW_WAIT: Duration = Duration::from_secs(3);

/// How the BGP speaker runs.
#[derive(Debug, Clone)]
pub struct BgpOptions {
    pub node_name: String,
    /// BIRD's control socket, to have it read the routes again.
    pub bird_socket: PathBuf,
    /// Where the route files BIRD includes are written.
    pub route_dir: PathBuf,
}

/// Starts the BGP speaker: creates its device and route files and the
/// thread that keeps BIRD in step.
pub fn start(options: BgpOptions) -> Result<Box<dyn Speaker>, AnnounceError> {
    let device_name = format!("syv{}", std::process::id());
    let device = RouteDevice::create(&device_name).map_err(|source| AnnounceError::Io {
        what: format!("creating the route device {device_name} (/dev/net/tun)"),
        source,
    })?;
    let speaker = spawn(&options, device_name, Some(device))?;
    Ok(Box::new(speaker))
}

/// The speaker, its files prepared and its thread started, holding
/// `device` (tests pass none: they create no interface).
fn spawn(
    options: &BgpOptions,
    device_name: String,
    device: Option<RouteDevice>,
) -> Result<BgpSpeaker, AnnounceError> {
    let routes = RouteDir::prepare(&options.route_dir).map_err(|source| AnnounceError::Io {
        what: format!(
            "preparing the route files in {}",
            options.route_dir.display()
        ),
        source,
    })?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let worker = Worker {
        shared: shared.clone(),
        birdc: Birdc::new(&options.bird_socket, BIRD_TIMEOUT),
        routes: routes.clone(),
        device: device_name.clone(),
        node: options.node_name.clone(),
    };
    std::thread::Builder::new()
        .name("bgp-speaker".to_owned())
        .spawn(move || worker.run())
        .map_err(|source| AnnounceError::Io {
            what: "starting the BGP speaker's thread".to_owned(),
            source,
        })?;
    log::info!(
        "BGP: routes through {device_name} in {} and {}, BIRD at {}",
        routes.path(routes::IPV4_FILE).display(),
        routes.path(routes::IPV6_FILE).display(),
        options.bird_socket.display()
    );
    Ok(BgpSpeaker {
        shared,
        _device: device,
        device_name,
        stopped: false,
        handed_over: false,
        started: Instant::now(),
    })
}

struct BgpSpeaker {
    shared: Arc<Shared>,
    /// Held open for as long as the routes through it should stand.
    _device: Option<RouteDevice>,
    device_name: String,
    /// `withdraw_all` or `hand_over` ran: this speaker changes nothing
    /// from now on.
    stopped: bool,
    handed_over: bool,
    started: Instant,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// What BIRD should announce now, and how many times it was asked.
    wanted: Vec<IpAddr>,
    revision: u64,
    drained: bool,
    /// What BIRD last accepted, and for which revision.
    applied: Vec<IpAddr>,
    applied_revision: u64,
    /// Why the latest revision is not applied yet, and the revision that
    /// last failed.
    error: Option<String>,
    failed_revision: u64,
    /// BIRD's BGP sessions as last heard, each with when it was last
    /// seen established.
    sessions: Vec<(Session, Option<Instant>)>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn want(&self, vips: &[IpAddr], drained: bool) {
        let mut state = self.lock();
        let vips: Vec<IpAddr> = if drained { Vec::new() } else { vips.to_vec() };
        state.drained = drained;
        if state.wanted != vips || state.revision == 0 {
            state.wanted = vips;
            state.revision += 1;
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

impl Speaker for BgpSpeaker {
    fn set(&mut self, vips: &[IpAddr], drained: bool) -> Result<(), AnnounceError> {
        if self.stopped {
            return Err(AnnounceError::Refused(
                "the BGP speaker has stopped".to_owned(),
            ));
        }
        if self.handed_over {
            return Err(AnnounceError::Refused(
                "the BGP announcements were handed over to another process".to_owned(),
            ));
        }
        self.shared.want(vips, drained);
        Ok(())
    }

    fn withdraw_all(&mut self) {
        if self.handed_over {
            return;
        }
        // Closing the device withdraws every route through it at once; the
        // empty files then keep a BIRD that reads them again from bringing
        // the VIPs back.
        self._device = None;
        self.stopped = true;
        self.shared.want(&[], true);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(self.shared.lock(), WITHDRAW_WAIT, |state| {
                state.applied_revision != state.revision && state.failed_revision != state.revision
            })
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(error) = &state.error {
            log::warn!("BGP: withdrawing through BIRD: {error} (the routes went with the device)");
        }
        drop(state);
        self.shared.stop();
    }

    fn hand_over(&mut self) {
        // The files and BIRD now belong to the process taking over; this
        // one's device goes when it exits, with no route left through it.
        self.handed_over = true;
        self.shared.stop();
    }

    /// BIRD's BGP sessions: `alive` when established; `last_heard_ms`
    /// since BIRD last reported it established (or since the speaker
    /// started, if never).
    fn peers(&self) -> Vec<PeerStatus> {
        let state = self.shared.lock();
        state
            .sessions
            .iter()
            .map(|(session, established_at)| PeerStatus {
                name: session.protocol.clone(),
                address: session.neighbor.clone(),
                state: if session.established() {
                    "alive"
                } else {
                    "dead"
                }
                .to_owned(),
                last_heard_ms: established_at
                    .unwrap_or(self.started)
                    .elapsed()
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    fn status(&self, wanted: &[Announcement]) -> Vec<AnnouncementStatus> {
        let state = self.shared.lock();
        wanted
            .iter()
            .map(|a| {
                let (announced, detail) = if self.handed_over {
                    (false, "handed over to another process".to_owned())
                } else if self.stopped {
                    (false, "the BGP speaker has stopped".to_owned())
                } else if state.drained {
                    (false, "node drained".to_owned())
                } else if state.applied.contains(&a.address) {
                    let mut detail = format!("route via {} in BIRD", self.device_name);
                    if let Some(error) = &state.error {
                        detail.push_str(&format!("; the last update failed: {error}"));
                    }
                    (true, detail)
                } else if let Some(error) = &state.error {
                    (false, error.clone())
                } else {
                    (false, "waiting for BIRD to read the routes".to_owned())
                };
                AnnouncementStatus {
                    address: a.address.to_string(),
                    mode: a.mode.to_string(),
                    gateway: a.gateway.clone(),
                    state: if announced {
                        ANNOUNCE_ANNOUNCED
                    } else {
                        ANNOUNCE_WITHDRAWN
                    }
                    .to_owned(),
                    detail,
                }
            })
            .collect()
    }
}

impl Drop for BgpSpeaker {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// The speaker's thread: writes the files and has BIRD read them.
struct Worker {
    shared: Arc<Shared>,
    birdc: Birdc,
    routes: RouteDir,
    device: String,
    node: String,
}

impl Worker {
    fn run(self) {
        let mut sessions_due = Instant::now();
        let mut state = self.shared.lock();
        loop {
            if state.stop {
                return;
            }
            if state.applied_revision == state.revision {
                let now = Instant::now();
                if now < sessions_due {
                    state = self
                        .shared
                        .changed
                        .wait_timeout(state, sessions_due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                drop(state);
                let sessions = self.sessions();
                state = self.shared.lock();
                if let Some(sessions) = sessions {
                    state.sessions = sessions
                        .into_iter()
                        .map(|session| {
                            let seen = if session.established() {
                                Some(now)
                            } else {
                                state
                                    .sessions
                                    .iter()
                                    .find(|(s, _)| s.protocol == session.protocol)
                                    .and_then(|(_, seen)| *seen)
                            };
                            (session, seen)
                        })
                        .collect();
                }
                sessions_due = Instant::now() + SESSIONS_EVERY;
                continue;
            }
            let (revision, vips) = (state.revision, state.wanted.clone());
            drop(state);
            let result = self.apply(&vips);
            state = self.shared.lock();
            match result {
                Ok(()) => {
                    log::info!("BGP: BIRD announces {} VIPs: {vips:?}", vips.len());
                    state.applied = vips;
                    state.applied_revision = revision;
                    if state.revision == revision {
                        state.error = None;
                    }
                    sessions_due = Instant::now();
                    self.shared.changed.notify_all();
                }
                Err(error) => {
                    if state.error.as_deref() != Some(error.as_str()) {
                        log::warn!("BGP: {error}; trying again every {RETRY_AFTER:?}");
                    }
                    state.error = Some(error);
                    state.failed_revision = revision;
                    self.shared.changed.notify_all();
                    if state.stop {
                        return;
                    }
                    state = self
                        .shared
                        .changed
                        .wait_timeout(state, RETRY_AFTER)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// BIRD's BGP sessions, or nothing if BIRD did not answer (the
    /// announcements' status says why when it matters).
    fn sessions(&self) -> Option<Vec<Session>> {
        match self.birdc.run("show protocols all") {
            Ok(reply) => Some(sessions::parse(&reply)),
            Err(err) => {
                log::debug!("BGP: asking BIRD for its sessions: {err}");
                None
            }
        }
    }

    fn apply(&self, vips: &[IpAddr]) -> Result<(), String> {
        self.routes
            .write(vips, &self.device, &self.node)
            .map_err(|e| format!("writing the route files: {e}"))?;
        self.birdc
            .run("configure")
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
