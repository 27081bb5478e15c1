//! What userspace writes into the steering program's maps: the service
//! entries checked before they go in (protocol, reserved id, conflicts,
//! capacity) and "make this map equal to that set" updates. This module owns
//! validation of what goes into the maps; it never attaches programs or
//! touches sockets.

use std::{collections::HashMap as StdHashMap, hash::Hash, net::Ipv4Addr};

use aya::{
    maps::{HashMap, MapData},
    Pod,
};

use crate::{
    consts::LISTENER_ID_NONE,
    error::XdpError,
    service::{ServiceKey, ServiceMatch, IPPROTO_TCP, IPPROTO_UDP},
};

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
    use super::*;
    use crate::consts::MAX_VIPS;

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
