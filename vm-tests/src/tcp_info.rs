//! The kernel's own count of a TCP connection's retransmissions: a segment
//! the network (here: the load balancer) dropped shows up as one, even when
//! the retransmission hid the loss from the application.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use anyhow::{bail, Result};

/// `tcpi_total_retrans` of `stream`.
pub fn total_retransmissions(stream: &TcpStream) -> Result<u32> {
    let mut info: libc::tcp_info = unsafe_zeroed_tcp_info();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a valid, writable tcp_info of `len` bytes, and the
    // kernel writes at most `len` bytes into it and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        bail!("TCP_INFO: {}", std::io::Error::last_os_error());
    }
    Ok(info.tcpi_total_retrans)
}

fn unsafe_zeroed_tcp_info() -> libc::tcp_info {
    // SAFETY: tcp_info is a plain C struct of integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}
