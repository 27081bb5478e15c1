//! BGP announcements through the node's BIRD: the routes of the VIPs this
//! node serves, written where BIRD's configuration includes them.

use std::path::PathBuf;

use super::{AnnounceError, Speaker};

/// Default of `--bird-socket`: where Debian's bird2 puts its control socket.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// Default of `--bird-routes`: the folder of the files BIRD includes.
pub const DEFAULT_ROUTE_DIR: &str = "/run/switchyard/bird";

/// How the BGP speaker runs.
#[derive(Debug, Clone)]
pub struct BgpOptions {
    pub node_name: String,
    /// BIRD's control socket, to have it read the routes again.
    pub bird_socket: PathBuf,
    /// Where the route files BIRD includes are written.
    pub route_dir: PathBuf,
}

/// Starts the BGP speaker.
pub fn start(options: BgpOptions) -> Result<Box<dyn Speaker>, AnnounceError> {
    let _ = options;
    Err(AnnounceError::Refused(
        "BGP announcements are not available in this build".to_owned(),
    ))
}
