//! The endpoints the steering program matches, as Rust values: the
//! service key shared with C (`struct service_key`) and the
//! (address, port, protocol, listener id) entries it is built from. This
//! module holds plain values only; it never touches a map, and validation
//! of what may go into one lives in `maps`.

use std::{fmt, net::Ipv4Addr};

use aya::Pod;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// One L4 endpoint the steering program matches, with the listener it
/// belongs to.
///
/// As a VIP it matches frames by destination; as a backend endpoint it
/// matches replies by source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceMatch {
    /// IPv4 address.
    pub addr: Ipv4Addr,
    /// TCP or UDP port, host order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    /// Listener id, at least 1: 0 is reserved for "none".
    pub id: u32,
}

impl ServiceMatch {
    /// A TCP endpoint.
    pub const fn tcp(addr: Ipv4Addr, port: u16, id: u32) -> Self {
        Self {
            addr,
            port,
            protocol: IPPROTO_TCP,
            id,
        }
    }

    /// A UDP endpoint.
    pub const fn udp(addr: Ipv4Addr, port: u16, id: u32) -> Self {
        Self {
            addr,
            port,
            protocol: IPPROTO_UDP,
            id,
        }
    }

    /// The map key of this endpoint.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.addr, self.port, self.protocol)
    }
}

/// Key of `vip_map` and `backend_map`; address and port in network order.
///
/// Must match struct service_key in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    addr: u32,
    port: u16,
    proto: u8,
    /// Always zero: the kernel hashes and compares keys bytewise.
    pad: u8,
}

// SAFETY: ServiceKey is #[repr(C)] with only integer fields and an explicit
// pad byte, so it has no implicit padding and every bit pattern is valid.
unsafe impl Pod for ServiceKey {}

impl ServiceKey {
    /// The key for (`addr`, `port`, `proto`), `port` in host order.
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Self {
            addr: u32::from_ne_bytes(addr.octets()),
            port: u16::from_ne_bytes(port.to_be_bytes()),
            proto,
            pad: 0,
        }
    }

    /// The address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr.to_ne_bytes())
    }

    /// The port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.port.to_ne_bytes())
    }

    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.proto
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            IPPROTO_TCP => "tcp".to_owned(),
            IPPROTO_UDP => "udp".to_owned(),
            other => format!("proto {other}"),
        };
        write!(f, "{}:{}/{proto}", self.addr(), self.port())
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn service_key_layout_matches_structs_h() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(offset_of!(ServiceKey, addr), 0);
        assert_eq!(offset_of!(ServiceKey, port), 4);
        assert_eq!(offset_of!(ServiceKey, proto), 6);
        assert_eq!(offset_of!(ServiceKey, pad), 7);

        // structs.h states the same layout as _Static_asserts.
        let structs_h = include_str!("bpf/structs.h");
        for assertion in [
            "sizeof(struct service_key) == 8",
            "offsetof(struct service_key, addr) == 0",
            "offsetof(struct service_key, port) == 4",
            "offsetof(struct service_key, proto) == 6",
            "offsetof(struct service_key, pad) == 7",
        ] {
            assert!(structs_h.contains(assertion), "structs.h lacks {assertion}");
        }
    }

    #[test]
    fn service_key_bytes_are_network_order() {
        let key = ServiceKey::new(Ipv4Addr::new(10, 1, 2, 3), 0x1f90, IPPROTO_TCP);
        // SAFETY: ServiceKey is Pod (8 bytes, no implicit padding).
        let bytes: [u8; 8] = unsafe { std::mem::transmute(key) };
        assert_eq!(bytes, [10, 1, 2, 3, 0x1f, 0x90, 6, 0]);
        assert_eq!(key.addr(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(key.port(), 8080);
        assert_eq!(key.to_string(), "10.1.2.3:8080/tcp");
    }
}
