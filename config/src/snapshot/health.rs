//! Active health checks as a listener's backendRef carries them: how to
//! probe its endpoints and what to do when every one of them fails. These
//! are plain, already validated values (`traffic_spec` checks the YAML);
//! the daemon's prober runs them and overlays their verdicts on the
//! published snapshot, so nothing here is read on the packet path.

use std::fmt;
use std::time::Duration;

/// One active health check: a probe, its timing and its thresholds.
/// Equality is by value, so two listeners whose backendRefs are checked
/// the same way share one probe per endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct HealthCheck {
    /// `namespace/name` of the TrafficPolicy that declares it.
    pub policy: String,
    pub probe: Probe,
    /// The port probed; `None`: the endpoint's own.
    pub port: Option<u16>,
    /// Time between the starts of two probes of one endpoint.
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Probes passed in a row that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Probes failed in a row that take an endpoint out.
    pub unhealthy_threshold: u32,
    pub when_all_unhealthy: WhenAllUnhealthy,
}

/// What a probe does and what makes it pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Probe {
    /// Connects; with `send`, writes it; with `receive`, passes once the
    /// bytes read so far contain it. Empty: not used.
    Tcp { send: Vec<u8>, receive: Vec<u8> },
    /// Sends `send` (never empty) and passes on a reply that contains
    /// `receive` (any reply when empty); an ICMP port unreachable fails it
    /// at once.
    Udp { send: Vec<u8>, receive: Vec<u8> },
    /// `GET path` over HTTP/1.1; passes when the status is one of
    /// `expected_statuses` and, when `expected_body` is not empty, the body
    /// contains it.
    Http {
        path: String,
        /// The `Host` header; `None`: the probed address and port.
        host: Option<String>,
        expected_statuses: Vec<u16>,
        expected_body: Vec<u8>,
    },
}

impl Probe {
    /// `TCP`, `UDP` or `HTTP`, as the policy's `type` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tcp { .. } => "TCP",
            Self::Udp { .. } => "UDP",
            Self::Http { .. } => "HTTP",
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { send, receive } if send.is_empty() && receive.is_empty() => {
                f.write_str("TCP connect")
            }
            Self::Tcp { .. } => f.write_str("TCP connect, send and expect"),
            Self::Udp { .. } => f.write_str("UDP send and expect a reply"),
            Self::Http { path, .. } => write!(f, "HTTP GET {path}"),
        }
    }
}

/// What a backendRef whose endpoints all fail their probes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub enum WhenAllUnhealthy {
    /// Serve all of them as if healthy: a probe that fails everywhere is
    /// more likely wrong (a firewall, a bad path) than every backend dead,
    /// and the config is then the best truth there is.
    #[default]
    FailOpen,
    /// Refuse the backendRef's share, as the Gateway API asks of a
    /// backendRef without endpoints; other backendRefs keep theirs.
    Refuse,
}
