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

/// The kernel driver behind `name` (`veth`, `virtio_net`, `mlx5_core`, ...),
/// as `ethtool -i` reports it; `None` when the interface does not say.
pub fn driver(name: &str) -> Option<String> {
    // struct ethtool_drvinfo (linux/ethtool.h): cmd, then driver[32] first.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut request: libc::ifreq = zeroed_ifreq();
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() {
        return None;
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a plain datagram socket, closed below; the ioctl reads the
    // NUL-terminated name and writes at most size_of::<DrvInfo>() bytes to
    // `info` (the kernel copies struct ethtool_drvinfo, 196 bytes), which
    // lives until after the call.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut request);
        libc::close(fd);
        rc == 0
    };
    if !ok {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is a C struct of integers, arrays and a union of such;
    // all-zero bytes are a valid value of each.
    unsafe { std::mem::zeroed() }
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
