//! Facts about the node's interfaces, read once at startup.

use std::fs;
use std::io;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("interface {name} does not exist in this network namespace")]
    Unknown { name: String },
    #[error("reading the addresses of this node")]
    Addresses(#[source] io::Error),
}

pub fn ifindex(name: &str) -> Result<u32, InterfaceError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| InterfaceError::Unknown {
        name: name.to_owned(),
    })
}

/// Receive queues the kernel exposes for `name` (at least 1).
pub fn rx_queue_count(name: &str) -> u32 {
    fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// Every IPv4 address configured on this node, so its own traffic is never
/// mistaken for a backend's reply.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, InterfaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| InterfaceError::Addresses(e.into()))?;
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
