//! The maps userspace writes, as Rust types: the service key shared with C,
//! the services it is built from, and "make this map equal to that set"
//! updates. This module owns validation of what goes into the maps; it never
//! attaches programs or touches sockets.

use std::{collections::HashMap as StdHashMap, fmt, hash::Hash, net::Ipv4Addr};

use aya::{
    maps::{HashMap, MapData},
    Pod,
};

use crate::{consts::LISTENER_ID_NONE, error::XdpError};

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

/// The key of `local_addrs`: the address in network order.
pub(crate) fn local_addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Checks `services` for one map and returns them keyed as the map will be.
/// Identical duplicates are accepted; the same key with two ids is not,
/// since the map can hold only one.
pub(crate) fn service_entries(
    map: &'static str,
    capacity: u32,
    services: &[ServiceMatch],
) -> Result<StdHashMap<ServiceKey, u32>, XdpError> {
    let mut entries = StdHashMap::with_capacity(services.len());
    for service in services {
        let key = service.key();
        if service.protocol != IPPROTO_TCP && service.protocol != IPPROTO_UDP {
            return Err(XdpError::InvalidProtocol { map, key });
        }
        if service.id == LISTENER_ID_NONE {
            return Err(XdpError::ReservedId { map, key });
        }
        if let Some(first) = entries.insert(key, service.id) {
            if first != service.id {
                return Err(XdpError::ConflictingIds {
                    map,
                    key,
                    first,
                    second: service.id,
                });
            }
        }
    }
    if entries.len() > capacity as usize {
        return Err(XdpError::TooMany {
            map,
            count: entries.len(),
            capacity,
        });
    }
    Ok(entries)
}

/// Makes `map` hold exactly `wanted`.
///
/// New and changed entries are written before stale ones are deleted, so
/// every intermediate state is a superset of the wanted set and a key that
/// stays wanted is never missing. When the map cannot hold old and new
/// together, stale keys go first; that still never removes a wanted key.
pub(crate) fn sync_map<K, V>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    capacity: u32,
    wanted: &StdHashMap<K, V>,
    describe: impl Fn(&K) -> String,
) -> Result<(), XdpError>
where
    K: Pod + Eq + Hash,
    V: Pod + PartialEq,
{
    let current = map
        .iter()
        .collect::<Result<StdHashMap<K, V>, _>>()
        .map_err(|source| XdpError::MapRead {
            map: name,
            source: Box::new(source),
        })?;
    let stale: Vec<K> = current
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .copied()
        .collect();
    let added = wanted
        .keys()
        .filter(|key| !current.contains_key(key))
        .count();
    let delete_first = current.len() + added > capacity as usize;

    let delete_stale = |map: &mut HashMap<MapData, K, V>| {
        stale.iter().try_for_each(|key| {
            map.remove(key).map_err(|source| XdpError::MapUpdate {
                map: name,
                op: "delete",
                key: describe(key),
                source: Box::new(source),
            })
        })
    };

    if delete_first {
        delete_stale(map)?;
    }
    for (key, value) in wanted {
        if current.get(key) == Some(value) {
            continue;
        }
        map.insert(key, value, 0)
            .map_err(|source| XdpError::MapUpdate {
                map: name,
                op: "insert",
                key: describe(key),
                source: Box::new(source),
            })?;
    }
    if !delete_first {
        delete_stale(map)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::consts::MAX_VIPS;

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

    #[test]
    fn listener_id_zero_is_rejected() {
        let vip = ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1), 80, 0);
        let err = service_entries("vip_map", MAX_VIPS, &[vip]).unwrap_err();
        assert!(matches!(err, XdpError::ReservedId { .. }), "{err}");
    }

    #[test]
    fn protocol_other_than_tcp_or_udp_is_rejected() {
        let mut vip = ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1), 80, 1);
        vip.protocol = 1;
        let err = service_entries("vip_map", MAX_VIPS, &[vip]).unwrap_err();
        assert!(matches!(err, XdpError::InvalidProtocol { .. }), "{err}");
    }

    #[test]
    fn same_key_with_two_ids_is_rejected_identical_duplicate_is_not() {
        let addr = Ipv4Addr::new(192, 0, 2, 1);
        let one = ServiceMatch::udp(addr, 53, 1);
        let entries = service_entries("vip_map", MAX_VIPS, &[one, one]).unwrap();
        assert_eq!(entries.len(), 1);
        let err = service_entries("vip_map", MAX_VIPS, &[one, ServiceMatch::udp(addr, 53, 2)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                XdpError::ConflictingIds {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn more_entries_than_capacity_is_rejected() {
        let services: Vec<ServiceMatch> = (1..=3)
            .map(|port| ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1), port, 1))
            .collect();
        let err = service_entries("vip_map", 2, &services).unwrap_err();
        assert!(
            matches!(
                err,
                XdpError::TooMany {
                    count: 3,
                    capacity: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}
