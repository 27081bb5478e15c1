//! What the traffic-policy tests need beyond the shared harness: a
//! `TrafficPolicy` document to append to a [`crate::GatewaySpec`]'s YAML,
//! and a SYN flood generator (a raw IPv4 socket in the client's namespace,
//! spoofing many sources of the client's subnet and many ports, sending as
//! fast as one thread can).
//!
//! The generator writes only to addresses inside the namespaces the test
//! built: the destination is the test's VIP, the sources are addresses of
//! the client's own subnet that no host holds.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::{in_netns, Netns};

/// A `TrafficPolicy` on the demo Gateway, or one of its listeners.
#[derive(Debug, Clone, Default)]
pub struct TrafficPolicy {
    pub name: String,
    pub namespace: String,
    pub gateway: String,
    /// `sectionName`: one listener, or the whole Gateway.
    pub listener: Option<String>,
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
    pub new_flows_per_second: Option<u32>,
    pub max_flows: Option<u32>,
}

impl TrafficPolicy {
    /// A policy named `name` on `namespace/gateway`, open until its fields
    /// say otherwise.
    pub fn on(name: &str, namespace: &str, gateway: &str) -> TrafficPolicy {
        TrafficPolicy {
            name: name.into(),
            namespace: namespace.into(),
            gateway: gateway.into(),
            ..TrafficPolicy::default()
        }
    }

    /// The YAML document, to append to a Gateway's file.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "---\n\
             apiVersion: switchyard.io/v1alpha1\n\
             kind: TrafficPolicy\n\
             metadata: {{name: {}, namespace: {}}}\n\
             spec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: {}\n",
            self.name, self.namespace, self.gateway
        );
        if let Some(listener) = &self.listener {
            let _ = writeln!(y, "    sectionName: {listener}");
        }
        if self.allow.is_some() || !self.deny.is_empty() {
            y.push_str("  sourceRanges:\n");
            if let Some(allow) = &self.allow {
                let _ = writeln!(y, "    allow: [{}]", allow.join(", "));
            }
            if !self.deny.is_empty() {
                let _ = writeln!(y, "    deny: [{}]", self.deny.join(", "));
            }
        }
        if self.new_flows_per_second.is_some() || self.max_flows.is_some() {
            y.push_str("  limits:\n");
            if let Some(rate) = self.new_flows_per_second {
                let _ = writeln!(y, "    newFlowsPerSecond: {rate}");
            }
            if let Some(max) = self.max_flows {
                let _ = writeln!(y, "    maxFlows: {max}");
            }
        }
        y
    }
}

/// A SYN flood: `count` SYNs to `vip:port`, each a new 5-tuple, from
/// `sources` addresses counting up from `first_source` and source ports
/// from 1024 up.
#[derive(Debug, Clone, Copy)]
pub struct SynFlood {
    pub first_source: Ipv4Addr,
    pub sources: u32,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub count: u32,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct Flooded {
    pub sent: u32,
    pub elapsed: Duration,
}

impl Flooded {
    /// SYNs a second the generator reached.
    pub fn rate(&self) -> f64 {
        f64::from(self.sent) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl SynFlood {
    /// The `n`th SYN's source address and port.
    pub fn source(&self, n: u32) -> (Ipv4Addr, u16) {
        let sources = self.sources.max(1);
        let addr = Ipv4Addr::from(u32::from(self.first_source) + n % sources);
        (addr, 1024 + (n / sources % 64000) as u16)
    }

    /// Sends the flood from `ns` as fast as one thread can, through a raw
    /// socket that writes its own IPv4 header (so the sources can be
    /// spoofed); a send the kernel refuses for lack of buffer space is
    /// retried.
    pub fn send(&self, ns: &Netns) -> Result<Flooded> {
        let flood = *self;
        in_netns(ns, move || flood.send_here())?
    }

    fn send_here(&self) -> Result<Flooded> {
        let socket = raw_socket()?;
        let destination = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(self.vip.octets()),
            },
            sin_zero: [0; 8],
        };
        let started = Instant::now();
        let mut sent = 0;
        while sent < self.count {
            let (src, sport) = self.source(sent);
            let packet = syn_packet(src, sport, self.vip, self.port, sent);
            // SAFETY: `packet` and `destination` outlive the call, and the
            // lengths passed are theirs.
            let rc = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    std::ptr::addr_of!(destination).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                bail!("sending SYN {sent} of the flood: {error}");
            }
            sent += 1;
        }
        Ok(Flooded {
            sent,
            elapsed: started.elapsed(),
        })
    }
}

/// Whether connecting failed because the other end answered with a reset
/// (what a refused TCP flow gets).
pub fn is_refused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
            || cause.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::ECONNREFUSED)
    })
}

/// Sends one datagram to `to` from each of `count` new sockets bound to
/// `from` (port 0: each its own port, so each a new flow), without waiting
/// for answers.
pub fn udp_datagrams(
    ns: &Netns,
    from: impl Into<std::net::IpAddr>,
    to: std::net::SocketAddr,
    count: u32,
) -> Result<()> {
    let from: std::net::IpAddr = from.into();
    in_netns(ns, move || -> Result<()> {
        for n in 0..count {
            let socket = std::net::UdpSocket::bind((from, 0))?;
            socket.send_to(format!("d{n}|").as_bytes(), to)?;
        }
        Ok(())
    })?
}

fn raw_socket() -> Result<OwnedFd> {
    // SAFETY: a plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!(
            "opening a raw IPv4 socket (needs CAP_NET_RAW): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An IPv4 + TCP SYN, checksums computed (the IPv4 one the kernel fills in
/// for a raw socket anyway).
fn syn_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp = &mut p[20..];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.wrapping_mul(2_654_435_761).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for pair in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + 20;
    let tcp_sum = checksum(&p[20..], pseudo);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// The Internet checksum of `bytes` (even length) over a running `sum`.
fn checksum(bytes: &[u8], mut sum: u32) -> u16 {
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_checksums_to_zero_over_its_headers() {
        let p = syn_packet(
            Ipv4Addr::new(198, 18, 1, 100),
            1024,
            Ipv4Addr::new(198, 18, 100, 10),
            80,
            7,
        );
        assert_eq!(checksum(&p[..20], 0), 0);
        let mut pseudo = 0u32;
        for pair in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        assert_eq!(checksum(&p[20..], pseudo + 6 + 20), 0);
    }

    #[test]
    fn every_syn_of_a_flood_is_a_new_five_tuple() {
        let flood = SynFlood {
            first_source: Ipv4Addr::new(198, 18, 1, 100),
            sources: 100,
            vip: Ipv4Addr::new(198, 18, 100, 10),
            port: 80,
            count: 200_000,
        };
        let tuples: std::collections::HashSet<_> =
            (0..flood.count).map(|n| flood.source(n)).collect();
        assert_eq!(tuples.len(), flood.count as usize);
    }
}
