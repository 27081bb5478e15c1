//! The TUN device the VIP routes point through, so that BIRD withdraws
//! them the moment this process dies.
//!
//! The device is non-persistent: the kernel destroys it when its last file
//! descriptor closes, which a kill -9 does too. BIRD's `protocol device`
//! hears the link go over netlink, and every static route `via` it becomes
//! inactive and is withdrawn from the BGP peers at once: no timer, no
//! helper process, nothing left to clean up. No packet is ever read from
//! or written to it; routes through it exist only inside BIRD.
//!
//! The only `unsafe` of the BGP speaker is here: two ioctls on an `ifreq`.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Linux's IFNAMSIZ, with the terminating NUL.
const IFNAMSIZ: usize = 16;

/// A TUN device held open by this process.
#[derive(Debug)]
pub struct RouteDevice {
    _file: File,
}

impl RouteDevice {
    /// Creates the device `name` (at most 15 bytes) and sets it up.
    pub fn create(name: &str) -> std::io::Result<RouteDevice> {
        let request = ifreq_named(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut tun = request;
        tun.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: the fd is an open /dev/net/tun, and TUNSETIFF reads and
        // writes one `ifreq`, which `tun` is, alive for the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut tun) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        set_up(request)?;
        Ok(RouteDevice { _file: file })
    }
}

/// An `ifreq` naming `name`, everything else zero.
fn ifreq_named(name: &str) -> std::io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: `ifreq` is plain C data (a name array and a union of
    // integers and addresses) for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(request)
}

/// `ip link set NAME up`: BIRD takes a route through a device that is down
/// for an inactive one.
fn set_up(mut request: libc::ifreq) -> std::io::Result<()> {
    // SAFETY: plain socket(2); its result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFFLAGS fills the flags of one `ifreq`, alive for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just set the `flags` member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one `ifreq`, alive for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_do_not_fit_ifnamsiz_are_refused() {
        assert!(ifreq_named("").is_err());
        assert!(ifreq_named("syv1234567890123").is_err());
        assert!(ifreq_named("a\0b").is_err());
        assert!(ifreq_named("syv4194304").is_ok());
    }
}
