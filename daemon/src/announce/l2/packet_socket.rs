//! AF_PACKET sockets on one interface: the only `unsafe` of the L2
//! speaker, kept to the system calls the standard library and nix do not
//! wrap (binding to an interface and protocol, a classic BPF filter,
//! link-layer multicast memberships).
//!
//! A socket is opened with protocol 0, so it receives nothing until it is
//! bound to its interface and protocol, after its filter is in place:
//! no frame of another interface or protocol is ever queued to it. It
//! ignores the frames the node itself sends (PACKET_IGNORE_OUTGOING), so
//! the speaker never reads its own gratuitous ARP.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::frames::Mac;

/// Kernel ≥ 4.20 (`linux/if_packet.h`).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// One instruction of a classic BPF socket filter.
pub type FilterOp = libc::sock_filter;

pub const fn op(code: u16, jt: u8, jf: u8, k: u32) -> FilterOp {
    libc::sock_filter { code, jt, jf, k }
}

/// A raw AF_PACKET socket bound to one interface and EtherType.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    pub fn open(ifindex: u32, ethertype: u16, filter: &[FilterOp]) -> io::Result<PacketSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // before it is owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = PacketSocket { fd, ifindex };
        let one: libc::c_int = 1;
        socket.setsockopt(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one)?;
        if !filter.is_empty() {
            let program = libc::sock_fprog {
                len: u16::try_from(filter.len())
                    .map_err(|_| io::Error::other("filter too long"))?,
                filter: filter.as_ptr().cast_mut(),
            };
            socket.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)?;
        }
        let mut address: libc::sockaddr_ll = unsafe_zeroed_sockaddr_ll();
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ethertype.to_be();
        address.sll_ifindex =
            i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
        // SAFETY: `address` is a valid sockaddr_ll and its size is given.
        let rc = unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T of the size passed, which is
        // what the option `name` at `level` reads.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives the next frame into `buf`: `Ok(None)` when none is
    /// waiting, and a frame longer than `buf` is dropped whole.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => Ok(Some(0)),
                _ => Err(err),
            };
        }
        // With MSG_TRUNC, `n` is the frame's real length.
        let n = n as usize;
        Ok(Some(if n > buf.len() { 0 } else { n }))
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is readable for its whole length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Joins (`true`) or leaves a link-layer multicast group, so a NIC
    /// that filters multicast delivers the group's frames.
    pub fn multicast(&self, mac: Mac, join: bool) -> io::Result<()> {
        let mut request: libc::packet_mreq = unsafe_zeroed_packet_mreq();
        request.mr_ifindex =
            i32::try_from(self.ifindex).map_err(|_| io::Error::other("ifindex out of range"))?;
        request.mr_type = libc::PACKET_MR_MULTICAST as u16;
        request.mr_alen = 6;
        request.mr_address[..6].copy_from_slice(&mac);
        let name = if join {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        self.setsockopt(libc::SOL_PACKET, name, &request)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn unsafe_zeroed_sockaddr_ll() -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn unsafe_zeroed_packet_mreq() -> libc::packet_mreq {
    // SAFETY: packet_mreq is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}
