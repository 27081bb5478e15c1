//! Rust twins of the numbers in `src/bpf/consts.h` that userspace depends
//! on. This module only mirrors them; a test reads the header and fails when
//! the two disagree, so the C file stays the single source.

/// Interfaces one loaded program can serve (`MAX_IFACES`).
pub const MAX_IFACES: u32 = 4;

/// RX queues per interface that can own an AF_XDP socket (`MAX_QUEUES`).
pub const MAX_QUEUES: u32 = 64;

/// Entries of `xsks_map` (`MAX_SOCKETS`).
pub const MAX_SOCKETS: u32 = MAX_IFACES * MAX_QUEUES;

/// Capacity of `vip_map` (`MAX_VIPS`).
pub const MAX_VIPS: u32 = 4096;

/// Capacity of `backend_map` (`MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 65536;

/// Capacity of `local_addrs` and of `local_addrs6` (`MAX_LOCAL_ADDRS`).
pub const MAX_LOCAL_ADDRS: u32 = 256;

/// Listener id meaning "no listener" (`LISTENER_ID_NONE`); see `vip_map` in
/// `src/bpf/maps.h` for why it is reserved.
pub const LISTENER_ID_NONE: u32 = 0;

/// Default capacity of `flow_cache` (`MAX_CACHED_FLOWS`).
pub const MAX_CACHED_FLOWS: u32 = 262_144;

/// Entries of `fast_stats` (`MAX_STATS_SLOTS`).
pub const MAX_STATS_SLOTS: u32 = 65536;

/// Units of `FlowAction`'s last-seen stamp: 2^this ns (`LAST_SEEN_SHIFT`).
pub const LAST_SEEN_SHIFT: u32 = 20;

/// Stats slot that counts nowhere (`STATS_SLOT_NONE`).
pub const STATS_SLOT_NONE: u32 = 0;

/// Index of the on/off flag in `fast_state` (`FAST_STATE_ENABLED`).
pub const FAST_STATE_ENABLED: u32 = 0;

/// Index of the running config generation in `fast_state`
/// (`FAST_STATE_GENERATION`); for status, entries are checked per listener.
pub const FAST_STATE_GENERATION: u32 = 1;

/// Index of the L2 epoch in `fast_state` (`FAST_STATE_L2_EPOCH`).
pub const FAST_STATE_L2_EPOCH: u32 = 2;

/// Index of the closed-egress slot mask in `fast_state`
/// (`FAST_STATE_EGRESS_CLOSED`).
pub const FAST_STATE_EGRESS_CLOSED: u32 = 3;

/// Index of the full-NAT source port range in `fast_state`
/// (`FAST_STATE_SNAT_PORTS`): first << 16 | last, 0 for none.
pub const FAST_STATE_SNAT_PORTS: u32 = 4;

/// Index of the hand-over flag in `fast_state` (`FAST_STATE_HANDING_OVER`):
/// non-zero, a VIP frame without a socket is dropped instead of passed.
pub const FAST_STATE_HANDING_OVER: u32 = 5;

/// IPv6 extension headers the program walks before it gives up on a
/// packet (`MAX_IPV6_EXT_HEADERS`); the workers' bound is
/// `switchyard_wire::ipv6::MAX_EXT_HEADERS`, which must be the same.
pub const MAX_IPV6_EXT_HEADERS: u32 = 6;

/// `#define NAME VALUE` lines of a C header whose value is an integer literal.
#[cfg(test)]
pub(crate) fn c_defines(header: &str) -> std::collections::HashMap<&str, u64> {
    header
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "#define").then_some(())?;
            let name = words.next()?;
            let value = words.next()?;
            let value = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                None => value.parse().ok()?,
            };
            Some((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSTS_H: &str = include_str!("bpf/consts.h");

    #[test]
    fn rust_constants_match_consts_h() {
        let defines = c_defines(CONSTS_H);
        for (name, rust) in [
            ("MAX_IFACES", MAX_IFACES),
            ("MAX_QUEUES", MAX_QUEUES),
            ("MAX_VIPS", MAX_VIPS),
            ("MAX_BACKENDS", MAX_BACKENDS),
            ("MAX_LOCAL_ADDRS", MAX_LOCAL_ADDRS),
            ("LISTENER_ID_NONE", LISTENER_ID_NONE),
            ("MAX_CACHED_FLOWS", MAX_CACHED_FLOWS),
            ("MAX_STATS_SLOTS", MAX_STATS_SLOTS),
            ("STATS_SLOT_NONE", STATS_SLOT_NONE),
            ("LAST_SEEN_SHIFT", LAST_SEEN_SHIFT),
            ("FAST_STATE_ENABLED", FAST_STATE_ENABLED),
            ("FAST_STATE_GENERATION", FAST_STATE_GENERATION),
            ("FAST_STATE_L2_EPOCH", FAST_STATE_L2_EPOCH),
            ("FAST_STATE_EGRESS_CLOSED", FAST_STATE_EGRESS_CLOSED),
            ("FAST_STATE_SNAT_PORTS", FAST_STATE_SNAT_PORTS),
            ("FAST_STATE_HANDING_OVER", FAST_STATE_HANDING_OVER),
            ("MAX_IPV6_EXT_HEADERS", MAX_IPV6_EXT_HEADERS),
            ("TUNNEL_NONE", u32::from(crate::TUNNEL_NONE)),
            ("TUNNEL_IPIP", u32::from(crate::TUNNEL_IPIP)),
            ("TUNNEL_GUE", u32::from(crate::TUNNEL_GUE)),
        ] {
            assert_eq!(
                defines.get(name).copied(),
                Some(u64::from(rust)),
                "{name} differs between consts.h and consts.rs"
            );
        }
        assert!(CONSTS_H.contains("#define MAX_SOCKETS (MAX_IFACES * MAX_QUEUES)"));
    }

    /// The program and the workers must give up on the same chains, or a
    /// packet steered as a service's would be dropped as too long.
    #[test]
    fn extension_header_bound_matches_the_workers() {
        assert_eq!(
            MAX_IPV6_EXT_HEADERS as usize,
            switchyard_wire::ipv6::MAX_EXT_HEADERS
        );
    }
}
