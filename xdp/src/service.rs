//! The endpoints the steering program matches, as Rust values: the
//! service keys shared with C (`struct service_key`, `struct service_key6`)
//! and the (address, port, protocol, listener id) entries they are built
//! from. This
//! module holds plain values only; it never touches a map, and validation
//! of what may go into one lives in `maps`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

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
    /// IPv4 or IPv6 address: the entry goes into that family's maps.
    pub addr: IpAddr,
    /// TCP or UDP port, host order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    /// Listener id, at least 1: 0 is reserved for "none".
    pub id: u32,
}

impl ServiceMatch {
    /// A TCP endpoint.
    pub const fn tcp(addr: IpAddr, port: u16, id: u32) -> Self {
        Self {
            addr,
            port,
            protocol: IPPROTO_TCP,
            id,
        }
    }

    /// A UDP endpoint.
    pub const fn udp(addr: IpAddr, port: u16, id: u32) -> Self {
        Self {
            addr,
            port,
            protocol: IPPROTO_UDP,
            id,
        }
    }
}

impl fmt::Display for ServiceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = SocketAddr::new(self.addr, self.port);
        write!(f, "{endpoint}/{}", protocol_name(self.protocol))
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        other => format!("proto {other}"),
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
        let proto = protocol_name(self.proto);
        write!(f, "{}:{}/{proto}", self.addr(), self.port())
    }
}

/// Key of `vip_map6` and `backend_map6`; address and port in network order.
///
/// Must match struct service_key6 in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey6 {
    addr: [u8; 16],
    port: u16,
    proto: u8,
    /// Always zero: the kernel hashes and compares keys bytewise.
    pad: u8,
}

// SAFETY: ServiceKey6 is #[repr(C)] with only integer fields and an explicit
// pad byte, so it has no implicit padding and every bit pattern is valid.
unsafe impl Pod for ServiceKey6 {}

impl ServiceKey6 {
    /// The key for (`addr`, `port`, `proto`), `port` in host order.
    pub fn new(addr: Ipv6Addr, port: u16, proto: u8) -> Self {
        Self {
            addr: addr.octets(),
            port: u16::from_ne_bytes(port.to_be_bytes()),
            proto,
            pad: 0,
        }
    }

    /// The address.
    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
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

impl fmt::Display for ServiceKey6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = protocol_name(self.proto);
        write!(f, "[{}]:{}/{proto}", self.addr(), self.port())
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
    fn service_key6_layout_matches_structs_h() {
        assert_eq!(size_of::<ServiceKey6>(), 20);
        let structs_h = include_str!("bpf/structs.h");
        for (name, at) in [
            ("addr", offset_of!(ServiceKey6, addr)),
            ("port", offset_of!(ServiceKey6, port)),
            ("proto", offset_of!(ServiceKey6, proto)),
            ("pad", offset_of!(ServiceKey6, pad)),
        ] {
            let assertion = format!("offsetof(struct service_key6, {name}) == {at}");
            assert!(
                structs_h.contains(&assertion),
                "structs.h lacks {assertion}"
            );
        }
        assert!(structs_h.contains("sizeof(struct service_key6) == 20"));
    }

    #[test]
    fn service_key6_bytes_are_network_order() {
        let addr: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let key = ServiceKey6::new(addr, 443, IPPROTO_UDP);
        // SAFETY: ServiceKey6 is Pod (20 bytes, no implicit padding).
        let bytes: [u8; 20] = unsafe { std::mem::transmute(key) };
        assert_eq!(&bytes[..16], &addr.octets());
        assert_eq!(&bytes[16..], &[0x01, 0xbb, 17, 0]);
        assert_eq!((key.addr(), key.port(), key.protocol()), (addr, 443, 17));
        assert_eq!(key.to_string(), "[2001:db8:100::1]:443/udp");
        let service = ServiceMatch::udp(IpAddr::V6(addr), 443, 1);
        assert_eq!(service.to_string(), "[2001:db8:100::1]:443/udp");
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
