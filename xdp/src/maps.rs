//! What userspace writes into the steering program's maps: the service
//! entries checked before they go in (protocol, reserved id, conflicts,
//! capacity) and "make this map equal to that set" updates. This module owns
//! validation of what goes into the maps; it never attaches programs or
//! touches sockets.

use std::{
    collections::HashMap as StdHashMap,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    maps::{HashMap, MapData},
    Pod,
};

use crate::{
    consts::LISTENER_ID_NONE,
    error::XdpError,
    service::{ServiceKey, ServiceKey6, ServiceMatch, IPPROTO_TCP, IPPROTO_UDP},
};

/// The key of `local_addrs`, `vip_addrs` and `backend_addrs`: the address
/// in network order.
pub(crate) fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// The key of `local_addrs6`, `vip_addrs6` and `backend_addrs6`.
pub(crate) fn addr6_key(addr: Ipv6Addr) -> [u8; 16] {
    addr.octets()
}

/// One set of service entries split by family, keyed as the maps will be,
/// with the address-only maps derived from them.
#[derive(Debug, Default)]
pub(crate) struct ServiceEntries {
    pub v4: StdHashMap<ServiceKey, u32>,
    pub v6: StdHashMap<ServiceKey6, u32>,
    /// Address -> how many of the entries have it.
    pub addrs: StdHashMap<u32, u32>,
    pub addrs6: StdHashMap<[u8; 16], u32>,
}

/// Checks `services` for one pair of maps (`map` and its IPv6 twin `map6`)
/// and returns them keyed as the maps will be. Identical duplicates are
/// accepted; the same key with two ids is not, since the map can hold only
/// one. `capacity` bounds each family on its own.
pub(crate) fn service_entries(
    (map, map6): (&'static str, &'static str),
    capacity: u32,
    services: &[ServiceMatch],
) -> Result<ServiceEntries, XdpError> {
    let mut entries = ServiceEntries::default();
    for service in services {
        let key = *service;
        let map = if service.addr.is_ipv4() { map } else { map6 };
        if service.protocol != IPPROTO_TCP && service.protocol != IPPROTO_UDP {
            return Err(XdpError::InvalidProtocol { map, key });
        }
        if service.id == LISTENER_ID_NONE {
            return Err(XdpError::ReservedId { map, key });
        }
        let first = match service.addr {
            IpAddr::V4(addr) => {
                let first = entries.v4.insert(
                    ServiceKey::new(addr, service.port, service.protocol),
                    service.id,
                );
                if first.is_none() {
                    *entries.addrs.entry(addr_key(addr)).or_default() += 1;
                }
                first
            }
            IpAddr::V6(addr) => {
                let first = entries.v6.insert(
                    ServiceKey6::new(addr, service.port, service.protocol),
                    service.id,
                );
                if first.is_none() {
                    *entries.addrs6.entry(addr6_key(addr)).or_default() += 1;
                }
                first
            }
        };
        if let Some(first) = first.filter(|first| *first != service.id) {
            return Err(XdpError::ConflictingIds {
                map,
                key,
                first,
                second: service.id,
            });
        }
    }
    for (map, count) in [(map, entries.v4.len()), (map6, entries.v6.len())] {
        if count > capacity as usize {
            return Err(XdpError::TooMany {
                map,
                count,
                capacity,
            });
        }
    }
    Ok(entries)
}

/// A pair of per-family address sets (an IPv4 map and an IPv6 map, keys
/// as `addr_key` and `addr6_key` write them).
pub(crate) struct AddressSets<'m> {
    pub v4: (&'m mut HashMap<MapData, u32, u8>, &'static str),
    pub v6: (&'m mut HashMap<MapData, [u8; 16], u8>, &'static str),
    /// Entries each map holds at most.
    pub capacity: u32,
}

impl AddressSets<'_> {
    /// Makes the two maps hold exactly `addrs`. Both families are checked
    /// against the capacity before either map is touched.
    pub(crate) fn sync(self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let mut v4: StdHashMap<u32, u8> = StdHashMap::new();
        let mut v6: StdHashMap<[u8; 16], u8> = StdHashMap::new();
        for addr in addrs {
            match addr {
                IpAddr::V4(addr) => v4.insert(addr_key(*addr), 1),
                IpAddr::V6(addr) => v6.insert(addr6_key(*addr), 1),
            };
        }
        let ((map4, name4), (map6, name6)) = (self.v4, self.v6);
        for (map, count) in [(name4, v4.len()), (name6, v6.len())] {
            if count > self.capacity as usize {
                return Err(XdpError::TooMany {
                    map,
                    count,
                    capacity: self.capacity,
                });
            }
        }
        sync_map(map4, name4, self.capacity, &v4, |key| {
            Ipv4Addr::from(key.to_ne_bytes()).to_string()
        })?;
        sync_map(map6, name6, self.capacity, &v6, |key| {
            Ipv6Addr::from(*key).to_string()
        })
    }
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
    use super::*;
    use crate::consts::MAX_VIPS;

    const VIPS: (&str, &str) = ("vip_map", "vip_map6");

    #[test]
    fn entries_split_by_family_and_count_listeners_per_address() {
        let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let services = [
            ServiceMatch::tcp(v4, 80, 1),
            ServiceMatch::udp(v4, 53, 2),
            ServiceMatch::udp(v4, 53, 2),
            ServiceMatch::tcp(v6, 80, 3),
        ];
        let entries = service_entries(VIPS, MAX_VIPS, &services).unwrap();
        assert_eq!((entries.v4.len(), entries.v6.len()), (2, 1));
        assert_eq!(entries.addrs.values().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(entries.addrs6.values().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn an_ipv6_service_error_names_the_ipv6_map() {
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let err = service_entries(VIPS, MAX_VIPS, &[ServiceMatch::tcp(v6, 80, 0)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vip_map6: [2001:db8:100::1]:80/tcp has listener id 0, which is reserved for \"none\""
        );
    }

    #[test]
    fn listener_id_zero_is_rejected() {
        let vip = ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1).into(), 80, 0);
        let err = service_entries(VIPS, MAX_VIPS, &[vip]).unwrap_err();
        assert!(matches!(err, XdpError::ReservedId { .. }), "{err}");
    }

    #[test]
    fn protocol_other_than_tcp_or_udp_is_rejected() {
        let mut vip = ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1).into(), 80, 1);
        vip.protocol = 1;
        let err = service_entries(VIPS, MAX_VIPS, &[vip]).unwrap_err();
        assert!(matches!(err, XdpError::InvalidProtocol { .. }), "{err}");
    }

    #[test]
    fn same_key_with_two_ids_is_rejected_identical_duplicate_is_not() {
        let addr = Ipv4Addr::new(192, 0, 2, 1).into();
        let one = ServiceMatch::udp(addr, 53, 1);
        let entries = service_entries(VIPS, MAX_VIPS, &[one, one]).unwrap();
        assert_eq!(entries.v4.len(), 1);
        assert_eq!(entries.addrs.len(), 1);
        let err =
            service_entries(VIPS, MAX_VIPS, &[one, ServiceMatch::udp(addr, 53, 2)]).unwrap_err();
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
            .map(|port| ServiceMatch::tcp(Ipv4Addr::new(192, 0, 2, 1).into(), port, 1))
            .collect();
        let err = service_entries(VIPS, 2, &services).unwrap_err();
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
