//! Netlink datagrams as the kernel could send them to the daemon: through
//! the neighbour resolver's and the egress watch's parsers and into the
//! next-hop table the workers read (`switchyard_daemon::fuzzing`).

use switchyard_daemon::fuzzing::netlink_datagram;

/// Input: one datagram, netlink headers included.
pub fn netlink(data: &[u8]) {
    let summary = netlink_datagram(data);
    // Every message holds at least its 16-byte header.
    assert!(summary.messages * 16 <= data.len(), "{summary:?}");
    assert!(
        summary.links + summary.neighbours <= summary.messages,
        "{summary:?}"
    );
}
