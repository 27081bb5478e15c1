//! Source ranges as the steering program reads them: each listener's
//! allow and deny lists compiled into longest-prefix-match entries
//! (`source_ranges`, `source_ranges6`), the per-listener drop counters
//! (`source_denied`, `source_denied6`) and the family switch
//! (`policy_state`). This module owns the compilation and the map
//! updates; which ranges apply to a listener is the configuration's to say.
//!
//! Compilation: a longest-prefix match alone would let an allowed range
//! inside a denied one win, but deny wins, so such allowed ranges are left
//! out (their sources are denied by the enclosing range anyway). A
//! listener with an allow list gets a /0 deny entry, which any allowed
//! range outranks. Then the longest entry holding a source is a deny exactly
//! when `SourceRanges::admits` refuses it (checked by a property test).

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    net::IpAddr,
};

use aya::{
    maps::{lpm_trie::Key, lpm_trie::LpmTrie, Array, MapData, PerCpuHashMap, PerCpuValues},
    Pod,
};

use crate::{
    error::XdpError,
    service::{ServiceKey, ServiceKey6},
};

pub(crate) const SOURCE_RANGES: &str = "source_ranges";
pub(crate) const SOURCE_RANGES6: &str = "source_ranges6";
pub(crate) const SOURCE_DENIED: &str = "source_denied";
pub(crate) const SOURCE_DENIED6: &str = "source_denied6";
pub(crate) const POLICY_STATE: &str = "policy_state";

/// Capacity of each source-range trie (`MAX_SOURCE_RANGES`).
pub const MAX_SOURCE_RANGES: u32 = 16384;
/// Bits of a key's listener part (`SOURCE_RANGE_LISTENER_BITS`).
const LISTENER_BITS: u32 = 64;
/// (`SOURCE_RANGE6_LISTENER_BITS`)
const LISTENER6_BITS: u32 = 160;
/// Trie values (`SOURCE_ALLOW`, `SOURCE_DENY`).
const SOURCE_ALLOW: u8 = 1;
const SOURCE_DENY: u8 = 2;
/// `policy_state[0]` bits (`POLICY_RANGES_V4`, `POLICY_RANGES_V6`).
const POLICY_RANGES_V4: u32 = 1;
const POLICY_RANGES_V6: u32 = 2;

/// The data of a `source_ranges` key after its prefix length. Must match
/// `struct source_range_key` in xdp/src/bpf/structs.h (past `prefixlen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct SourceRangeKey {
    /// Network order.
    port: u16,
    proto: u8,
    pad: u8,
    /// Network order.
    vip: [u8; 4],
    src: [u8; 4],
}

// SAFETY: plain integers and byte arrays, no padding (pad is explicit).
unsafe impl Pod for SourceRangeKey {}

/// `source_range_key6`'s data. Must match `struct source_range_key6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct SourceRangeKey6 {
    port: u16,
    proto: u8,
    pad: u8,
    vip: [u8; 16],
    src: [u8; 16],
}

// SAFETY: plain integers and byte arrays, no padding (pad is explicit).
unsafe impl Pod for SourceRangeKey6 {}

/// A CIDR range: an address and a prefix length (host bits ignored).
pub type Prefix = (IpAddr, u8);

/// One listener's source ranges, as the configuration resolved them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRanges {
    pub vip: IpAddr,
    pub port: u16,
    /// IANA protocol number.
    pub protocol: u8,
    /// `None`: every source not denied.
    pub allow: Option<Vec<Prefix>>,
    pub deny: Vec<Prefix>,
}

impl ListenerRanges {
    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// `prefix` with its host bits cleared and its length capped to its
/// family's width.
fn normalize((addr, len): Prefix) -> Prefix {
    match addr {
        IpAddr::V4(a) => {
            let len = len.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (IpAddr::from((u32::from(a) & mask).to_be_bytes()), len)
        }
        IpAddr::V6(a) => {
            let len = len.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (IpAddr::from((u128::from(a) & mask).to_be_bytes()), len)
        }
    }
}

/// Whether range `outer` holds every address of range `inner`.
fn contains(outer: Prefix, inner: Prefix) -> bool {
    outer.0.is_ipv4() == inner.0.is_ipv4()
        && outer.1 <= inner.1
        && normalize((inner.0, outer.1)) == normalize(outer)
}

/// The trie entries of one listener: (source prefix, verdict), of the
/// VIP's family only (no other family's packet reaches the listener).
pub fn compile(ranges: &ListenerRanges) -> Vec<(Prefix, u8)> {
    let family = |p: &Prefix| p.0.is_ipv4() == ranges.vip.is_ipv4();
    let deny: Vec<Prefix> = ranges
        .deny
        .iter()
        .copied()
        .filter(family)
        .map(normalize)
        .collect();
    let mut entries: StdHashMap<Prefix, u8> = StdHashMap::new();
    if ranges.allow.is_some() {
        let any = if ranges.vip.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        entries.insert((any, 0), SOURCE_DENY);
    }
    for allow in ranges.allow.iter().flatten().copied().filter(family) {
        let allow = normalize(allow);
        if !deny.iter().any(|d| contains(*d, allow)) {
            entries.insert(allow, SOURCE_ALLOW);
        }
    }
    for d in deny {
        entries.insert(d, SOURCE_DENY);
    }
    let mut entries: Vec<(Prefix, u8)> = entries.into_iter().collect();
    entries.sort();
    entries
}

/// The steering program's policy maps.
pub(crate) struct PolicyMaps {
    pub(crate) ranges: LpmTrie<MapData, SourceRangeKey, u8>,
    pub(crate) ranges6: LpmTrie<MapData, SourceRangeKey6, u8>,
    pub(crate) denied: PerCpuHashMap<MapData, ServiceKey, u64>,
    pub(crate) denied6: PerCpuHashMap<MapData, ServiceKey6, u64>,
    pub(crate) state: Array<MapData, u32>,
}

fn update_error(
    map: &'static str,
    op: &'static str,
    key: String,
) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |source| XdpError::MapUpdate {
        map,
        op,
        key,
        source: Box::new(source),
    }
}

fn read_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |source| XdpError::MapRead {
        map,
        source: Box::new(source),
    }
}

fn port_key(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

impl PolicyMaps {
    /// Makes the maps hold exactly `listeners`' ranges: new and changed
    /// entries first, then stale ones removed, then the family switch set.
    /// Each listener with ranges keeps (or gets) its drop counter.
    pub(crate) fn set(&mut self, listeners: &[ListenerRanges]) -> Result<(), XdpError> {
        let mut v4: StdHashMap<(u32, SourceRangeKey), u8> = StdHashMap::new();
        let mut v6: StdHashMap<(u32, SourceRangeKey6), u8> = StdHashMap::new();
        let mut counted: HashSet<ServiceKey> = HashSet::new();
        let mut counted6: HashSet<ServiceKey6> = HashSet::new();
        for listener in listeners.iter().filter(|l| !l.is_open()) {
            let (port, proto) = (port_key(listener.port), listener.protocol);
            for ((src, len), verdict) in compile(listener) {
                match (listener.vip, src) {
                    (IpAddr::V4(vip), IpAddr::V4(src)) => {
                        let key = SourceRangeKey {
                            port,
                            proto,
                            pad: 0,
                            vip: vip.octets(),
                            src: src.octets(),
                        };
                        v4.insert((LISTENER_BITS + u32::from(len), key), verdict);
                    }
                    (IpAddr::V6(vip), IpAddr::V6(src)) => {
                        let key = SourceRangeKey6 {
                            port,
                            proto,
                            pad: 0,
                            vip: vip.octets(),
                            src: src.octets(),
                        };
                        v6.insert((LISTENER6_BITS + u32::from(len), key), verdict);
                    }
                    _ => {}
                }
            }
            match listener.vip {
                IpAddr::V4(vip) => {
                    counted.insert(ServiceKey::new(vip, listener.port, proto));
                }
                IpAddr::V6(vip) => {
                    counted6.insert(ServiceKey6::new(vip, listener.port, proto));
                }
            }
        }
        for (map, count) in [(SOURCE_RANGES, v4.len()), (SOURCE_RANGES6, v6.len())] {
            if count > MAX_SOURCE_RANGES as usize {
                return Err(XdpError::TooMany {
                    map,
                    count,
                    capacity: MAX_SOURCE_RANGES,
                });
            }
        }
        sync_trie(&mut self.ranges, SOURCE_RANGES, &v4)?;
        sync_trie(&mut self.ranges6, SOURCE_RANGES6, &v6)?;
        sync_counters(&mut self.denied, SOURCE_DENIED, &counted)?;
        sync_counters(&mut self.denied6, SOURCE_DENIED6, &counted6)?;
        let state = if v4.is_empty() { 0 } else { POLICY_RANGES_V4 }
            | if v6.is_empty() { 0 } else { POLICY_RANGES_V6 };
        self.state
            .set(0, state, 0)
            .map_err(update_error(POLICY_STATE, "update", "0".into()))
    }

    /// Frames dropped for their source, per listener (VIP, port,
    /// protocol), summed over the CPUs.
    pub(crate) fn denied(&self) -> Result<Vec<(IpAddr, u16, u8, u64)>, XdpError> {
        let mut out = Vec::new();
        for item in self.denied.iter() {
            let (key, values) = item.map_err(read_error(SOURCE_DENIED))?;
            out.push((
                key.addr().into(),
                key.port(),
                key.protocol(),
                values.iter().sum(),
            ));
        }
        for item in self.denied6.iter() {
            let (key, values) = item.map_err(read_error(SOURCE_DENIED6))?;
            out.push((
                key.addr().into(),
                key.port(),
                key.protocol(),
                values.iter().sum(),
            ));
        }
        Ok(out)
    }
}

/// Makes `trie` hold exactly `wanted` ((prefix length, key) -> verdict).
fn sync_trie<K: Pod + Eq + std::hash::Hash + std::fmt::Debug>(
    trie: &mut LpmTrie<MapData, K, u8>,
    name: &'static str,
    wanted: &StdHashMap<(u32, K), u8>,
) -> Result<(), XdpError> {
    let mut present: Vec<(u32, K)> = Vec::new();
    for key in trie.keys() {
        let key = key.map_err(read_error(name))?;
        present.push((key.prefix_len(), key.data()));
    }
    for ((len, key), verdict) in wanted {
        trie.insert(&Key::new(*len, *key), verdict, 0)
            .map_err(update_error(name, "update", format!("{key:?}/{len}")))?;
    }
    for (len, key) in present {
        if !wanted.contains_key(&(len, key)) {
            trie.remove(&Key::new(len, key)).map_err(update_error(
                name,
                "delete",
                format!("{key:?}/{len}"),
            ))?;
        }
    }
    Ok(())
}

/// Gives each of `wanted` a counter (zero when new, kept when present) and
/// removes the others.
fn sync_counters<K: Pod + Eq + std::hash::Hash + std::fmt::Display>(
    map: &mut PerCpuHashMap<MapData, K, u64>,
    name: &'static str,
    wanted: &HashSet<K>,
) -> Result<(), XdpError> {
    let mut present: Vec<K> = Vec::new();
    for key in map.keys() {
        present.push(key.map_err(read_error(name))?);
    }
    let io = |call: &'static str| {
        move |io_error: std::io::Error| XdpError::MapRead {
            map: name,
            source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call,
                io_error,
            })),
        }
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, error)| io("nr_cpus")(error))?;
    for key in wanted.iter().filter(|k| !present.contains(k)) {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(io("nr_cpus"))?;
        map.insert(key, zeros, 0)
            .map_err(update_error(name, "update", key.to_string()))?;
    }
    for key in present.iter().filter(|k| !wanted.contains(k)) {
        map.remove(key)
            .map_err(update_error(name, "delete", key.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const STRUCTS_H: &str = include_str!("bpf/structs.h");

    #[test]
    fn keys_match_their_c_twins() {
        // Past the u32 prefix length the kernel reads the data.
        assert_eq!(std::mem::size_of::<Key<SourceRangeKey>>(), 16);
        assert_eq!(std::mem::size_of::<Key<SourceRangeKey6>>(), 40);
        assert!(STRUCTS_H.contains("sizeof(struct source_range_key) == 16"));
        assert!(STRUCTS_H.contains("sizeof(struct source_range_key6) == 40"));
        assert_eq!(std::mem::offset_of!(SourceRangeKey, vip) + 4, 8);
        assert_eq!(std::mem::offset_of!(SourceRangeKey, src) + 4, 12);
        assert_eq!(std::mem::offset_of!(SourceRangeKey6, vip) + 4, 8);
        assert_eq!(std::mem::offset_of!(SourceRangeKey6, src) + 4, 24);
    }

    #[test]
    fn constants_match_consts_h() {
        let defines = crate::consts::c_defines(include_str!("bpf/consts.h"));
        for (name, rust) in [
            ("MAX_SOURCE_RANGES", MAX_SOURCE_RANGES),
            ("SOURCE_RANGE_LISTENER_BITS", LISTENER_BITS),
            ("SOURCE_RANGE6_LISTENER_BITS", LISTENER6_BITS),
            ("SOURCE_ALLOW", u32::from(SOURCE_ALLOW)),
            ("SOURCE_DENY", u32::from(SOURCE_DENY)),
            ("POLICY_RANGES_V4", POLICY_RANGES_V4),
            ("POLICY_RANGES_V6", POLICY_RANGES_V6),
        ] {
            assert_eq!(defines.get(name).copied(), Some(u64::from(rust)), "{name}");
        }
    }

    fn v4(a: u8, b: u8, len: u8) -> Prefix {
        (Ipv4Addr::new(10, a, b, 0).into(), len)
    }

    #[test]
    fn an_allowed_range_inside_a_denied_one_is_left_out() {
        let ranges = ListenerRanges {
            vip: Ipv4Addr::new(192, 0, 2, 1).into(),
            port: 80,
            protocol: 6,
            allow: Some(vec![v4(1, 0, 16), v4(0, 0, 8)]),
            deny: vec![v4(0, 0, 12)],
        };
        assert_eq!(
            compile(&ranges),
            vec![
                ((Ipv4Addr::UNSPECIFIED.into(), 0), SOURCE_DENY),
                (v4(0, 0, 8), SOURCE_ALLOW),
                (v4(0, 0, 12), SOURCE_DENY),
            ]
        );
    }

    /// What `switchyard_config::SourceRanges::admits` says, restated.
    fn admits(ranges: &ListenerRanges, src: IpAddr) -> bool {
        let holds = |p: &Prefix| contains(*p, (src, 32));
        !ranges.deny.iter().any(holds) && ranges.allow.as_ref().is_none_or(|a| a.iter().any(holds))
    }

    /// The trie's answer: the longest compiled prefix holding `src`.
    fn longest_match(entries: &[(Prefix, u8)], src: IpAddr) -> bool {
        entries
            .iter()
            .filter(|(p, _)| contains(*p, (src, 32)))
            .max_by_key(|(p, _)| p.1)
            .is_none_or(|(_, verdict)| *verdict != SOURCE_DENY)
    }

    fn prefix() -> impl Strategy<Value = Prefix> {
        (
            0..4u8,
            0..4u8,
            prop_oneof![Just(8u8), Just(12), Just(16), Just(24), Just(0)],
        )
            .prop_map(|(a, b, len)| v4(a * 4, b, len))
    }

    proptest! {
        #[test]
        fn the_longest_compiled_prefix_decides_as_the_ranges_do(
            allow in prop::option::of(prop::collection::vec(prefix(), 0..4)),
            deny in prop::collection::vec(prefix(), 0..4),
            sources in prop::collection::vec((0..16u8, 0..4u8, any::<u8>()), 1..20),
        ) {
            let ranges = ListenerRanges {
                vip: Ipv4Addr::new(192, 0, 2, 1).into(),
                port: 80,
                protocol: 6,
                allow,
                deny,
            };
            let entries = compile(&ranges);
            for (a, b, c) in sources {
                let src: IpAddr = Ipv4Addr::new(10, a, b, c).into();
                prop_assert_eq!(longest_match(&entries, src), admits(&ranges, src), "{}", src);
            }
            let outside: IpAddr = Ipv4Addr::new(11, 0, 0, 1).into();
            prop_assert_eq!(longest_match(&entries, outside), admits(&ranges, outside));
        }
    }
}
