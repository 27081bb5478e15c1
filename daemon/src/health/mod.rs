//! Active health checks: probing backend endpoints off the packet path
//! (`monitor`: its own threads, spread in time, with a cap on probes in
//! flight), deciding each endpoint's health from its probes (thresholds and
//! flap damping, `state`), and what a verdict does to the published
//! snapshot (`overlay`: an unhealthy endpoint takes no new flows, as a
//! drain). It never touches packets or the XDP maps; the only way a
//! verdict reaches the workers is a republished snapshot.

pub mod explain;
pub mod monitor;
pub mod probe;
pub mod state;

#[cfg(test)]
mod netns_tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchyard_config::snapshot::{Endpoint, HealthCheck, Snapshot};

pub use monitor::{Monitor, MonitorOptions, ProbeStats};

/// One endpoint checked one way. An endpoint behind two listeners whose
/// backendRefs carry the same check is probed once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The backend endpoint as configured (where flows go).
    pub endpoint: Endpoint,
    pub check: Arc<HealthCheck>,
}

impl Target {
    /// Where the probe goes: the endpoint's address, the check's port.
    pub fn probed(&self) -> Endpoint {
        self.check.target(self.endpoint)
    }

    /// The check in one line, as the log and `yardctl backends` show it:
    /// e.g. `HTTP GET /healthz on port 8081 every 1s, policy demo/web-health`.
    pub fn describe(&self) -> String {
        let check = &self.check;
        format!(
            "{} on port {} every {:?}, policy {}",
            check.probe,
            self.probed().port,
            check.interval,
            check.policy
        )
    }
}

/// Every target of `snapshot`: each endpoint of each backendRef that
/// carries a check, serving or draining, so a drained endpoint's health is
/// known the moment it is undrained.
pub fn targets(snapshot: &Snapshot) -> Vec<Target> {
    let mut targets: Vec<Target> = snapshot
        .listeners()
        .iter()
        .flat_map(|listener| listener.groups())
        .filter_map(|group| group.health_check.as_ref().map(|check| (group, check)))
        .flat_map(|(group, check)| {
            group
                .endpoints
                .iter()
                .chain(&group.draining)
                .map(|endpoint| Target {
                    endpoint: *endpoint,
                    check: check.clone(),
                })
        })
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

/// An endpoint's health as its probes decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Health {
    /// Not probed to a verdict yet: serves, as the config says.
    #[default]
    Unknown,
    Healthy,
    /// Failed `unhealthy_threshold` probes in a row: no new flows.
    Unhealthy,
    /// Changed state too often lately (damped, as BGP damps a flapping
    /// route): no new flows until it has been stable for a while, whatever
    /// its last probes say.
    Flapping,
}

impl Health {
    /// Whether the endpoint takes new flows.
    pub fn serving(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }

    /// As `yardctl backends` and the metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Flapping => "flapping",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub passed: bool,
    /// What was seen, e.g. `connected`, `HTTP 200`, `HTTP 500, expected
    /// 200`, `connect: Connection refused`, `no reply within 500ms`.
    pub detail: String,
    /// From the probe's start to its verdict.
    pub latency: Duration,
    pub at: SystemTime,
}

/// What the monitor knows of one target.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    pub health: Health,
    /// When `health` last changed; `None` while it never has.
    pub changed_at: Option<SystemTime>,
    /// Why it last changed, e.g. `3 probes failed in a row: connect:
    /// Connection refused`.
    pub reason: String,
    pub last: Option<ProbeOutcome>,
    pub passes: u64,
    pub failures: u64,
    /// Flap damping's penalty now (see `state`).
    pub penalty: f64,
}
