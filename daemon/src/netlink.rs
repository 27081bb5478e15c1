//! Netlink plumbing shared by the neighbour resolver and the egress watch:
//! splitting a received datagram into messages and attributes, reading the
//! errno of an error or done message, waiting for a socket to become
//! readable, and a socket that asks one question at a time. Nothing here
//! panics on kernel input.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NlaBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

/// How long the kernel may take to answer a request. It answers
/// synchronously in practice; this only bounds a wedged socket.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Large enough for any single answer to a non-dump request.
const RECV_BUF: usize = 64 * 1024;

/// Bytes of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// One netlink message inside a received datagram.
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The well-formed messages of a datagram, stopping at the first that is not.
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let rest = buf.get(offset..)?;
        let msg = NetlinkBuffer::new_checked(rest).ok()?;
        // new_checked guarantees header <= length <= rest.len().
        let len = msg.length() as usize;
        offset += (len + 3) & !3;
        Some(Message {
            kind: msg.message_type(),
            flags: msg.flags(),
            seq: msg.sequence_number(),
            payload: msg.payload(),
        })
    })
}

/// The errno of an `NLMSG_ERROR` or `NLMSG_DONE` payload (0 for an ack).
pub(crate) fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, i32::from_ne_bytes)
}

/// `code` is the kernel's negative errno.
pub(crate) fn errno_to_io(code: i32) -> io::Error {
    let errno = code
        .checked_neg()
        .filter(|e| *e > 0)
        .unwrap_or(libc::EINVAL);
    io::Error::from_raw_os_error(errno)
}

/// Waits until `fd` is readable (or has an error pending) or `timeout`
/// passes; `Ok(false)` on timeout or signal.
pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up so a sub-millisecond remainder does not become a busy loop.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid, initialised pollfd that outlives the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(rc > 0)
}

/// The valid attributes of kinds `wanted` after a fixed header of `header_len`.
pub(crate) fn attributes<'a>(
    payload: &'a [u8],
    header_len: usize,
    wanted: &'a [u16],
) -> impl Iterator<Item = NlaBuffer<&'a [u8]>> + 'a {
    let rest = payload.get(header_len..).unwrap_or_default();
    NlasIterator::new(rest)
        .map_while(Result::ok)
        .filter(move |nla| wanted.contains(&nla.kind()))
}

/// A netlink socket that asks one question at a time and waits for its
/// answer, in the network namespace of the thread that opened it.
pub(crate) struct Requester {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Requester {
    /// A socket of netlink `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`).
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.set_non_blocking(true)?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends a request of type `kind` whose payload is `body` (the message
    /// after its netlink header) and returns the answer's type and payload.
    /// An error answer is the kernel's errno; an ack (errno 0) is
    /// `NLMSG_ERROR` with an empty payload.
    pub(crate) fn request(&mut self, kind: u16, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.seq = self.seq.wrapping_add(1);
        let len = u32::try_from(HEADER_LEN + body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "netlink request too long"))?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&len.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        bytes.extend_from_slice(&self.seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(body);
        self.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;

        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let n = self.recv_until(deadline)?;
            // Leftovers of an earlier request that timed out are skipped.
            let answer = messages(&self.buf[..n])
                .find(|msg| msg.seq == self.seq)
                .map(|msg| (msg.kind, msg.payload.to_vec()));
            match answer {
                Some((NLMSG_ERROR | NLMSG_DONE, payload)) => {
                    return match errno_of(&payload) {
                        0 => Ok((NLMSG_ERROR, Vec::new())),
                        code => Err(errno_to_io(code)),
                    }
                }
                Some(answer) => return Ok(answer),
                None => {}
            }
        }
    }

    fn recv_until(&mut self, deadline: Instant) -> io::Result<usize> {
        recv_until(&self.sock, &mut self.buf, deadline)
    }
}

/// Receives one datagram into `buf`, waiting at most until `deadline`;
/// returns its length. A datagram larger than `buf` is an error, never
/// half a message.
pub(crate) fn recv_until(sock: &Socket, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        match sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT | libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink datagram of {n} bytes truncated"),
                ))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no netlink answer before the deadline",
                    ));
                }
                wait_readable(sock.as_raw_fd(), left)?;
            }
            Err(e) => return Err(e),
        }
    }
}
