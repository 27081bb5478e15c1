//! L2 announcements: ARP replies and IPv6 neighbour advertisements for the
//! VIPs this node owns on its segment, and the election of that owner among
//! the LB nodes that hear each other.

use std::time::Duration;

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
    let _ = options;
    Err(AnnounceError::Refused(
        "L2 announcements are not available in this build".to_owned(),
    ))
}
