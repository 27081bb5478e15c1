//! The fast path's maps as userspace sees them: the flow caches (5-tuple to
//! a worker's rewrite: [`FlowCacheKey`] and [`FlowAction`] for IPv4,
//! [`FlowCacheKey6`] and [`FlowAction6`] for IPv6), the state that
//! says whether entries apply (on/off, L2 epoch, and each listener's epoch
//! per stats slot), and the per-(listener, backend) counters of the frames
//! it sent. This module
//! writes and reads them; it decides nothing: what goes into an entry is a
//! worker's decision, encoded by the dataplane.
//!
//! [`FastPathMaps`] holds its own duplicates of the map fds and needs no
//! `&mut`: workers install entries from their own threads, the control
//! thread publishes state and reads counters, all at once.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use aya::Pod;

use crate::bpf_sys;
use crate::consts::{
    FAST_STATE_EGRESS_CLOSED, FAST_STATE_ENABLED, FAST_STATE_GENERATION, FAST_STATE_HANDING_OVER,
    FAST_STATE_L2_EPOCH, FAST_STATE_SNAT_PORTS, LAST_SEEN_SHIFT,
};
use crate::error::XdpError;

pub(crate) const FLOW_CACHE: &str = "flow_cache";
pub(crate) const FLOW_CACHE6: &str = "flow_cache6";
pub(crate) const FAST_STATE: &str = "fast_state";
pub(crate) const FAST_STATS: &str = "fast_stats";
pub(crate) const FAST_EPOCHS: &str = "fast_epochs";

/// Key of `flow_cache`: a 5-tuple as it arrives, in network byte order.
///
/// Must match struct flow_key in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowCacheKey {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    /// Always zero: the kernel hashes and compares keys bytewise.
    pad: [u8; 3],
}

// SAFETY: #[repr(C)], integer fields and explicit padding only, so no
// implicit padding and every bit pattern is valid.
unsafe impl Pod for FlowCacheKey {}

impl FlowCacheKey {
    /// The key of a packet from `src:sport` to `dst:dport`, ports in host order.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            saddr: u32::from_ne_bytes(src.octets()),
            daddr: u32::from_ne_bytes(dst.octets()),
            sport: u16::from_ne_bytes(sport.to_be_bytes()),
            dport: u16::from_ne_bytes(dport.to_be_bytes()),
            proto,
            pad: [0; 3],
        }
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.saddr.to_ne_bytes())
    }

    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.daddr.to_ne_bytes())
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.sport.to_ne_bytes())
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dport.to_ne_bytes())
    }

    pub fn protocol(&self) -> u8 {
        self.proto
    }
}

/// What a [`FlowAction`] is built from, in host terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionSpec {
    /// The epoch of the decision's listener: the config generation in
    /// which that listener last changed (its low 32 bits are stored: the
    /// program compares them with `fast_epochs[stats_slot]`).
    pub generation: u64,
    /// L2 epoch of the table its MACs came from (likewise).
    pub l2_epoch: u64,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Folded RFC 1624 difference for the IPv4 header checksum.
    pub ip_csum_diff: u16,
    /// Folded RFC 1624 difference for the TCP/UDP checksum.
    pub l4_csum_diff: u16,
    /// Interface slot the frame leaves by.
    pub egress_slot: u16,
    /// That interface's index: equal to the ingress one means `XDP_TX`.
    pub egress_ifindex: u32,
    /// Index into `fast_stats`; 0 counts nowhere.
    pub stats_slot: u16,
}

/// Value of `flow_cache`: a worker's rewrite of one flow, plus the counters
/// the program keeps for it.
///
/// Must match struct flow_action in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAction {
    generation: u32,
    l2_epoch: u32,
    packets: u64,
    bytes: u64,
    last_seen: u32,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    /// `outer_csum_base` for a tunnel.
    ip_csum_diff: u16,
    /// `inner_mtu` for a tunnel.
    l4_csum_diff: u16,
    egress_slot: u8,
    tunnel: u8,
    stats_slot: u16,
    egress_ifindex: u32,
}

// SAFETY: #[repr(C)] with fields laid out without implicit padding (a test
// checks every offset and the size) and every bit pattern valid.
unsafe impl Pod for FlowAction {}

impl From<ActionSpec> for FlowAction {
    fn from(spec: ActionSpec) -> Self {
        Self {
            generation: spec.generation as u32,
            l2_epoch: spec.l2_epoch as u32,
            packets: 0,
            bytes: 0,
            last_seen: 0,
            eth_dst: spec.eth_dst,
            eth_src: spec.eth_src,
            saddr: u32::from_ne_bytes(spec.ip_src.octets()),
            daddr: u32::from_ne_bytes(spec.ip_dst.octets()),
            sport: u16::from_ne_bytes(spec.src_port.to_be_bytes()),
            dport: u16::from_ne_bytes(spec.dst_port.to_be_bytes()),
            ip_csum_diff: spec.ip_csum_diff,
            l4_csum_diff: spec.l4_csum_diff,
            egress_slot: egress_slot_byte(spec.egress_slot),
            tunnel: TUNNEL_NONE,
            stats_slot: spec.stats_slot,
            egress_ifindex: spec.egress_ifindex,
        }
    }
}

impl FlowAction {
    /// The decision, as it was installed (generation and epoch: their low
    /// 32 bits).
    pub fn spec(&self) -> ActionSpec {
        ActionSpec {
            generation: u64::from(self.generation),
            l2_epoch: u64::from(self.l2_epoch),
            eth_dst: self.eth_dst,
            eth_src: self.eth_src,
            ip_src: Ipv4Addr::from(self.saddr.to_ne_bytes()),
            ip_dst: Ipv4Addr::from(self.daddr.to_ne_bytes()),
            src_port: u16::from_be_bytes(self.sport.to_ne_bytes()),
            dst_port: u16::from_be_bytes(self.dport.to_ne_bytes()),
            ip_csum_diff: self.ip_csum_diff,
            l4_csum_diff: self.l4_csum_diff,
            egress_slot: u16::from(self.egress_slot),
            egress_ifindex: self.egress_ifindex,
            stats_slot: self.stats_slot,
        }
    }

    /// Frames the program sent for this flow since the entry was written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the program last sent a frame of this flow, on CLOCK_MONOTONIC
    /// in ns, given that clock's reading `now_ns`; `None` before the first.
    /// The entry keeps only 32 bits of ~1 ms units, so the answer is right
    /// for frames seen within 52 days of `now_ns`.
    pub fn last_seen_ns(&self, now_ns: u64) -> Option<u64> {
        last_seen_ns(self.last_seen, now_ns)
    }
}

fn last_seen_ns(last_seen: u32, now_ns: u64) -> Option<u64> {
    if last_seen == 0 {
        return None;
    }
    let now = (now_ns >> LAST_SEEN_SHIFT) as u32;
    let age = u64::from(now.wrapping_sub(last_seen)) << LAST_SEEN_SHIFT;
    Some(now_ns.saturating_sub(age))
}

/// `TUNNEL_*` of consts.h: how an entry's packets are wrapped.
pub const TUNNEL_NONE: u8 = 0;
pub const TUNNEL_IPIP: u8 = 1;
pub const TUNNEL_GUE: u8 = 2;

/// What an encapsulating flow's entry holds beside an [`ActionSpec`]
/// (whose addresses, ports and MACs are then the outer header's, and
/// whose checksum differences are unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapSpec {
    /// `TUNNEL_IPIP` or `TUNNEL_GUE`.
    pub tunnel: u8,
    /// IPv4: the folded sum of the outer header's words with its TOS byte,
    /// total length and checksum zero; the program adds the two per
    /// packet. Unused for IPv6.
    pub outer_csum_base: u16,
    /// The largest inner packet that fits the egress link once wrapped:
    /// a larger one goes to the workers, which answer it.
    pub inner_mtu: u16,
}

/// Interface slots are below `MAX_IFACES`, so one byte holds any.
fn egress_slot_byte(slot: u16) -> u8 {
    u8::try_from(slot).unwrap_or(u8::MAX)
}

impl FlowAction {
    /// The entry of an encapsulating flow.
    pub fn encapsulating(spec: ActionSpec, encap: EncapSpec) -> Self {
        Self {
            ip_csum_diff: encap.outer_csum_base,
            l4_csum_diff: encap.inner_mtu,
            tunnel: encap.tunnel,
            ..Self::from(spec)
        }
    }

    /// How the entry's packets are wrapped, if they are.
    pub fn encap(&self) -> Option<EncapSpec> {
        (self.tunnel != TUNNEL_NONE).then_some(EncapSpec {
            tunnel: self.tunnel,
            outer_csum_base: self.ip_csum_diff,
            inner_mtu: self.l4_csum_diff,
        })
    }
}

impl FlowAction6 {
    /// The entry of an encapsulating flow.
    pub fn encapsulating(spec: ActionSpec6, encap: EncapSpec) -> Self {
        Self {
            l4_csum_diff: encap.inner_mtu,
            tunnel: encap.tunnel,
            ..Self::from(spec)
        }
    }

    /// How the entry's packets are wrapped, if they are.
    pub fn encap(&self) -> Option<EncapSpec> {
        (self.tunnel != TUNNEL_NONE).then_some(EncapSpec {
            tunnel: self.tunnel,
            outer_csum_base: 0,
            inner_mtu: self.l4_csum_diff,
        })
    }
}

/// Key of `flow_cache6`: an IPv6 5-tuple as it arrives, in network byte
/// order.
///
/// Must match struct flow_key6 in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowCacheKey6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
    /// Always zero: the kernel hashes and compares keys bytewise.
    pad: [u8; 3],
}

// SAFETY: #[repr(C)], byte arrays, integers and explicit padding only, so
// no implicit padding and every bit pattern is valid.
unsafe impl Pod for FlowCacheKey6 {}

impl FlowCacheKey6 {
    /// The key of a packet from `src:sport` to `dst:dport`, ports in host order.
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            saddr: src.octets(),
            daddr: dst.octets(),
            sport: u16::from_ne_bytes(sport.to_be_bytes()),
            dport: u16::from_ne_bytes(dport.to_be_bytes()),
            proto,
            pad: [0; 3],
        }
    }

    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.saddr)
    }

    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.daddr)
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.sport.to_ne_bytes())
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dport.to_ne_bytes())
    }

    pub fn protocol(&self) -> u8 {
        self.proto
    }
}

/// What a [`FlowAction6`] is built from, in host terms: [`ActionSpec`]'s
/// fields for IPv6, without the IPv4 header checksum difference (the IPv6
/// header has no checksum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionSpec6 {
    /// As in [`ActionSpec::generation`].
    pub generation: u64,
    /// As in [`ActionSpec::l2_epoch`].
    pub l2_epoch: u64,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub ip_src: Ipv6Addr,
    pub ip_dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Folded RFC 1624 difference for the TCP/UDP checksum, over the
    /// pseudo-header's address words (RFC 8200 section 8.1) and the ports.
    pub l4_csum_diff: u16,
    /// Interface slot the frame leaves by.
    pub egress_slot: u16,
    /// That interface's index: equal to the ingress one means `XDP_TX`.
    pub egress_ifindex: u32,
    /// Index into `fast_stats`; 0 counts nowhere.
    pub stats_slot: u16,
}

/// Value of `flow_cache6`: [`FlowAction`] for IPv6.
///
/// Must match struct flow_action6 in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAction6 {
    generation: u32,
    l2_epoch: u32,
    packets: u64,
    bytes: u64,
    last_seen: u32,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    /// `inner_mtu` for a tunnel.
    l4_csum_diff: u16,
    egress_slot: u8,
    tunnel: u8,
    stats_slot: u16,
    /// Always zero.
    pad: u16,
    egress_ifindex: u32,
}

// SAFETY: #[repr(C)] with fields laid out without implicit padding (a test
// checks every offset and the size) and every bit pattern valid.
unsafe impl Pod for FlowAction6 {}

impl From<ActionSpec6> for FlowAction6 {
    fn from(spec: ActionSpec6) -> Self {
        Self {
            generation: spec.generation as u32,
            l2_epoch: spec.l2_epoch as u32,
            packets: 0,
            bytes: 0,
            last_seen: 0,
            eth_dst: spec.eth_dst,
            eth_src: spec.eth_src,
            saddr: spec.ip_src.octets(),
            daddr: spec.ip_dst.octets(),
            sport: u16::from_ne_bytes(spec.src_port.to_be_bytes()),
            dport: u16::from_ne_bytes(spec.dst_port.to_be_bytes()),
            l4_csum_diff: spec.l4_csum_diff,
            egress_slot: egress_slot_byte(spec.egress_slot),
            tunnel: TUNNEL_NONE,
            stats_slot: spec.stats_slot,
            pad: 0,
            egress_ifindex: spec.egress_ifindex,
        }
    }
}

impl FlowAction6 {
    /// The decision, as it was installed (generation and epoch: their low
    /// 32 bits).
    pub fn spec(&self) -> ActionSpec6 {
        ActionSpec6 {
            generation: u64::from(self.generation),
            l2_epoch: u64::from(self.l2_epoch),
            eth_dst: self.eth_dst,
            eth_src: self.eth_src,
            ip_src: Ipv6Addr::from(self.saddr),
            ip_dst: Ipv6Addr::from(self.daddr),
            src_port: u16::from_be_bytes(self.sport.to_ne_bytes()),
            dst_port: u16::from_be_bytes(self.dport.to_ne_bytes()),
            l4_csum_diff: self.l4_csum_diff,
            egress_slot: u16::from(self.egress_slot),
            egress_ifindex: self.egress_ifindex,
            stats_slot: self.stats_slot,
        }
    }

    /// Frames the program sent for this flow since the entry was written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// As [`FlowAction::last_seen_ns`].
    pub fn last_seen_ns(&self, now_ns: u64) -> Option<u64> {
        last_seen_ns(self.last_seen, now_ns)
    }
}

/// Value of `fast_stats`, per CPU.
///
/// Must match struct fast_counters in xdp/src/bpf/structs.h
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastCounters {
    pub packets: u64,
    pub bytes: u64,
}

// SAFETY: #[repr(C)], two u64s: no padding, every bit pattern valid.
unsafe impl Pod for FastCounters {}

/// The bytes of `items`, as the kernel reads packed keys and values.
fn bytes_of<T: Pod>(items: &[T]) -> &[u8] {
    // SAFETY: Pod types have no padding and no invalid bit patterns, so
    // their memory is fully initialised bytes; the length is exact.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast(), std::mem::size_of_val(items)) }
}

fn bytes_of_mut<T: Pod>(items: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `bytes_of`, and any bytes the kernel writes are a valid
    // `T` because every bit pattern of a Pod type is.
    unsafe {
        std::slice::from_raw_parts_mut(items.as_mut_ptr().cast(), std::mem::size_of_val(items))
    }
}

/// Entries read per `BPF_MAP_LOOKUP_BATCH` call when walking the cache;
/// larger than any hash bucket the kernel could hand back at once.
const READ_BATCH: usize = 4096;

struct Fds {
    cache: OwnedFd,
    cache6: OwnedFd,
    state: OwnedFd,
    stats: OwnedFd,
    epochs: OwnedFd,
}

/// Shared handle on the fast path's maps; cheap to clone.
#[derive(Clone)]
pub struct FastPathMaps {
    fds: Arc<Fds>,
    /// Possible CPUs: per-CPU values come one per possible CPU.
    cpus: usize,
    capacity: u32,
}

impl std::fmt::Debug for FastPathMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPathMaps")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn fast_error(map: &'static str, op: &'static str) -> impl FnOnce(io::Error) -> XdpError {
    move |source| XdpError::FastPath { map, op, source }
}

impl FastPathMaps {
    pub(crate) fn new(
        cache: OwnedFd,
        cache6: OwnedFd,
        state: OwnedFd,
        stats: OwnedFd,
        epochs: OwnedFd,
        capacity: u32,
    ) -> Result<Self, XdpError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| XdpError::FastPath {
            map: FAST_STATS,
            op: "counting possible CPUs for",
            source,
        })?;
        Ok(Self {
            fds: Arc::new(Fds {
                cache,
                cache6,
                state,
                stats,
                epochs,
            }),
            cpus,
            capacity,
        })
    }

    /// Entries each cache (IPv4, IPv6) holds at most.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// These maps with the flow caches swapped for new, plain hash maps of
    /// `capacity` entries each that the program never reads. Unlike the LRU
    /// caches they refuse writes once full (E2BIG), so a test can see what
    /// the workers make of a batch update the kernel wrote only part of.
    pub fn with_bounded_cache(&self, capacity: u32) -> Result<Self, XdpError> {
        let bounded = |name, key_size: usize, value_size: usize| {
            bpf_sys::create_map(
                bpf_sys::BPF_MAP_TYPE_HASH,
                key_size as u32,
                value_size as u32,
                capacity,
            )
            .map_err(fast_error(name, "creating a bounded stand-in"))
        };
        let cache = bounded(
            FLOW_CACHE,
            size_of::<FlowCacheKey>(),
            size_of::<FlowAction>(),
        )?;
        let cache6 = bounded(
            FLOW_CACHE6,
            size_of::<FlowCacheKey6>(),
            size_of::<FlowAction6>(),
        )?;
        let dup = |fd: &OwnedFd, map| {
            fd.try_clone()
                .map_err(fast_error(map, "duplicating the fd"))
        };
        Ok(Self {
            fds: Arc::new(Fds {
                cache,
                cache6,
                state: dup(&self.fds.state, FAST_STATE)?,
                stats: dup(&self.fds.stats, FAST_STATS)?,
                epochs: dup(&self.fds.epochs, FAST_EPOCHS)?,
            }),
            cpus: self.cpus,
            capacity,
        })
    }

    fn set_state(&self, index: u32, value: u64) -> Result<(), XdpError> {
        bpf_sys::update(
            self.fds.state.as_fd(),
            &index.to_ne_bytes(),
            &value.to_ne_bytes(),
            bpf_sys::BPF_ANY,
        )
        .map_err(fast_error(FAST_STATE, "update"))
    }

    fn state(&self, index: u32) -> Result<u64, XdpError> {
        let mut value = [0u8; 8];
        bpf_sys::lookup(self.fds.state.as_fd(), &index.to_ne_bytes(), &mut value)
            .map_err(fast_error(FAST_STATE, "lookup"))?;
        Ok(u64::from_ne_bytes(value))
    }

    /// Turns the fast path on or off; off, the program does not even look
    /// entries up.
    pub fn set_enabled(&self, enabled: bool) -> Result<(), XdpError> {
        self.set_state(FAST_STATE_ENABLED, u64::from(enabled))
    }

    /// Records the running config `generation`, for status; entries are
    /// checked against their listener's epoch (`publish_epochs`).
    pub fn publish_generation(&self, generation: u64) -> Result<(), XdpError> {
        self.set_state(FAST_STATE_GENERATION, generation)
    }

    /// From now on an entry with stats slot `slots[i]` applies only if it
    /// carries `epochs[i]` (0 retires a slot: no entry carries it). One
    /// syscall; returns how many were written before an error.
    pub fn publish_epochs(&self, slots: &[u32], epochs: &[u32]) -> Result<usize, XdpError> {
        let count = slots.len().min(epochs.len());
        if count == 0 {
            return Ok(0);
        }
        let (written, result) = bpf_sys::update_batch(
            self.fds.epochs.as_fd(),
            bytes_of(&slots[..count]),
            bytes_of(&epochs[..count]),
            count as u32,
        );
        result
            .map(|()| written as usize)
            .map_err(fast_error(FAST_EPOCHS, "batch update"))
    }

    /// The epoch entries with stats slot `slot` must carry now.
    pub fn epoch(&self, slot: u16) -> Result<u32, XdpError> {
        let mut value = [0u8; 4];
        bpf_sys::lookup(
            self.fds.epochs.as_fd(),
            &u32::from(slot).to_ne_bytes(),
            &mut value,
        )
        .map_err(fast_error(FAST_EPOCHS, "lookup"))?;
        Ok(u32::from_ne_bytes(value))
    }

    /// From now on only entries whose MACs come from L2 `epoch` apply.
    pub fn publish_l2_epoch(&self, epoch: u64) -> Result<(), XdpError> {
        self.set_state(FAST_STATE_L2_EPOCH, epoch)
    }

    /// Closes the interface slots whose bits are set in `mask` to the fast
    /// path: the program stops sending frames out of them at once, cached
    /// entries included, and hands those frames to the workers. 0 closes
    /// none (the state before the first call).
    pub fn set_egress_closed(&self, mask: u64) -> Result<(), XdpError> {
        self.set_state(FAST_STATE_EGRESS_CLOSED, mask)
    }

    /// Whether a VIP frame that finds no AF_XDP socket is dropped (a
    /// daemon is handing over to its successor) or passed to the kernel.
    pub fn set_handing_over(&self, handing_over: bool) -> Result<(), XdpError> {
        self.set_state(FAST_STATE_HANDING_OVER, u64::from(handing_over))
    }

    /// Steers answers from backend endpoints to the node's own addresses
    /// on ports `first..=last` to the workers (full-NAT bindings) instead
    /// of the kernel; `None` steers none.
    pub fn set_snat_ports(&self, ports: Option<(u16, u16)>) -> Result<(), XdpError> {
        let value = ports.map_or(0, |(first, last)| u64::from(first) << 16 | u64::from(last));
        self.set_state(FAST_STATE_SNAT_PORTS, value)
    }

    /// The slots closed by `set_egress_closed`.
    pub fn egress_closed(&self) -> Result<u64, XdpError> {
        self.state(FAST_STATE_EGRESS_CLOSED)
    }

    /// The running config generation, and the L2 epoch entries must carry.
    pub fn published(&self) -> Result<(u64, u64), XdpError> {
        Ok((
            self.state(FAST_STATE_GENERATION)?,
            self.state(FAST_STATE_L2_EPOCH)?,
        ))
    }

    /// Writes `keys[i] -> actions[i]` in one syscall. Returns how many were
    /// written; an error stops the batch (e.g. ENOMEM).
    pub fn install(
        &self,
        keys: &[FlowCacheKey],
        actions: &[FlowAction],
    ) -> (usize, Option<XdpError>) {
        install(&self.fds.cache, FLOW_CACHE, keys, actions)
    }

    /// [`FastPathMaps::install`] into the IPv6 cache.
    pub fn install6(
        &self,
        keys: &[FlowCacheKey6],
        actions: &[FlowAction6],
    ) -> (usize, Option<XdpError>) {
        install(&self.fds.cache6, FLOW_CACHE6, keys, actions)
    }

    /// Deletes `keys`; absent ones (evicted by the LRU meanwhile) are not an
    /// error. Returns how many were present.
    pub fn remove(&self, keys: &[FlowCacheKey]) -> Result<usize, XdpError> {
        remove(&self.fds.cache, FLOW_CACHE, keys)
    }

    /// [`FastPathMaps::remove`] from the IPv6 cache.
    pub fn remove6(&self, keys: &[FlowCacheKey6]) -> Result<usize, XdpError> {
        remove(&self.fds.cache6, FLOW_CACHE6, keys)
    }

    /// The entry for `key`, with its counters.
    pub fn lookup(&self, key: &FlowCacheKey) -> Result<Option<FlowAction>, XdpError> {
        lookup(&self.fds.cache, FLOW_CACHE, key)
    }

    /// [`FastPathMaps::lookup`] in the IPv6 cache.
    pub fn lookup6(&self, key: &FlowCacheKey6) -> Result<Option<FlowAction6>, XdpError> {
        lookup(&self.fds.cache6, FLOW_CACHE6, key)
    }

    /// Every entry, read in batches; entries written or evicted meanwhile
    /// may or may not be seen.
    pub fn entries(&self) -> Result<Vec<(FlowCacheKey, FlowAction)>, XdpError> {
        let mut all = Vec::new();
        self.read_entries(|keys, actions| {
            all.extend(keys.iter().copied().zip(actions.iter().copied()));
        })?;
        Ok(all)
    }

    /// [`FastPathMaps::entries`] of the IPv6 cache.
    pub fn entries6(&self) -> Result<Vec<(FlowCacheKey6, FlowAction6)>, XdpError> {
        let mut all = Vec::new();
        self.read_entries6(|keys, actions| {
            all.extend(keys.iter().copied().zip(actions.iter().copied()));
        })?;
        Ok(all)
    }

    /// Hands every entry to `chunk`, a batch (up to `READ_BATCH` entries,
    /// one syscall) at a time, as soon as the kernel returned it; entries
    /// written or evicted meanwhile may or may not be seen.
    pub fn read_entries(
        &self,
        chunk: impl FnMut(&[FlowCacheKey], &[FlowAction]),
    ) -> Result<(), XdpError> {
        read_entries(&self.fds.cache, FLOW_CACHE, chunk)
    }

    /// [`FastPathMaps::read_entries`] of the IPv6 cache.
    pub fn read_entries6(
        &self,
        chunk: impl FnMut(&[FlowCacheKey6], &[FlowAction6]),
    ) -> Result<(), XdpError> {
        read_entries(&self.fds.cache6, FLOW_CACHE6, chunk)
    }

    /// Fast-path counters of stats slot `slot`, summed over CPUs.
    pub fn stats(&self, slot: u16) -> Result<FastCounters, XdpError> {
        let mut per_cpu = vec![FastCounters::default(); self.cpus];
        bpf_sys::lookup(
            self.fds.stats.as_fd(),
            &u32::from(slot).to_ne_bytes(),
            bytes_of_mut(&mut per_cpu),
        )
        .map_err(fast_error(FAST_STATS, "lookup"))?;
        Ok(per_cpu
            .iter()
            .fold(FastCounters::default(), |sum, c| FastCounters {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
            }))
    }

    /// Zeroes slot `slot` on every CPU, before it is given to a new owner.
    pub fn clear_stats(&self, slot: u16) -> Result<(), XdpError> {
        let zeros = vec![FastCounters::default(); self.cpus];
        bpf_sys::update(
            self.fds.stats.as_fd(),
            &u32::from(slot).to_ne_bytes(),
            bytes_of(&zeros),
            bpf_sys::BPF_ANY,
        )
        .map_err(fast_error(FAST_STATS, "update"))
    }
}

fn install<K: Pod, V: Pod>(
    cache: &OwnedFd,
    name: &'static str,
    keys: &[K],
    actions: &[V],
) -> (usize, Option<XdpError>) {
    let count = keys.len().min(actions.len());
    if count == 0 {
        return (0, None);
    }
    let (written, result) = bpf_sys::update_batch(
        cache.as_fd(),
        bytes_of(&keys[..count]),
        bytes_of(&actions[..count]),
        count as u32,
    );
    (
        written as usize,
        result.err().map(fast_error(name, "batch update")),
    )
}

fn remove<K: Pod>(cache: &OwnedFd, name: &'static str, keys: &[K]) -> Result<usize, XdpError> {
    let mut removed = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let (deleted, result) =
            bpf_sys::delete_batch(cache.as_fd(), bytes_of(rest), rest.len() as u32);
        let deleted = deleted as usize;
        removed += deleted;
        match result {
            Ok(()) => break,
            // The key at `deleted` is absent: skip it and go on.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(deleted + 1).min(rest.len())..];
            }
            Err(err) => return Err(fast_error(name, "batch delete")(err)),
        }
    }
    Ok(removed)
}

fn lookup<K: Pod, V: Pod + Default>(
    cache: &OwnedFd,
    name: &'static str,
    key: &K,
) -> Result<Option<V>, XdpError> {
    let mut action = [V::default()];
    let found = bpf_sys::lookup(
        cache.as_fd(),
        bytes_of(std::slice::from_ref(key)),
        bytes_of_mut(&mut action),
    )
    .map_err(fast_error(name, "lookup"))?;
    Ok(found.then_some(action[0]))
}

fn read_entries<K: Pod + Default, V: Pod + Default>(
    cache: &OwnedFd,
    name: &'static str,
    mut chunk: impl FnMut(&[K], &[V]),
) -> Result<(), XdpError> {
    let mut keys = vec![K::default(); READ_BATCH];
    let mut actions = vec![V::default(); READ_BATCH];
    let mut cursor = [0u8; 8];
    let mut started = false;
    loop {
        let (count, done) = bpf_sys::lookup_batch(
            cache.as_fd(),
            &mut cursor,
            started,
            bytes_of_mut(&mut keys),
            bytes_of_mut(&mut actions),
            READ_BATCH as u32,
        )
        .map_err(fast_error(name, "batch lookup"))?;
        started = true;
        let count = (count as usize).min(READ_BATCH);
        chunk(&keys[..count], &actions[..count]);
        if done || count == 0 {
            return Ok(());
        }
    }
}

const _: () = assert!(size_of::<FlowCacheKey>() == 16 && size_of::<FlowAction>() == 64);
const _: () = assert!(size_of::<FlowCacheKey6>() == 40 && size_of::<FlowAction6>() == 88);

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    const STRUCTS_H: &str = include_str!("bpf/structs.h");

    fn assert_stated(assertions: &[String]) {
        for assertion in assertions {
            assert!(
                STRUCTS_H.contains(assertion.as_str()),
                "structs.h lacks {assertion}"
            );
        }
    }

    #[test]
    fn flow_cache_key_layout_matches_structs_h() {
        let fields = [
            ("saddr", offset_of!(FlowCacheKey, saddr)),
            ("daddr", offset_of!(FlowCacheKey, daddr)),
            ("sport", offset_of!(FlowCacheKey, sport)),
            ("dport", offset_of!(FlowCacheKey, dport)),
            ("proto", offset_of!(FlowCacheKey, proto)),
        ];
        let mut assertions = vec![format!(
            "sizeof(struct flow_key) == {}",
            size_of::<FlowCacheKey>()
        )];
        assertions.extend(
            fields
                .iter()
                .map(|(name, at)| format!("offsetof(struct flow_key, {name}) == {at}")),
        );
        assert_stated(&assertions);
    }

    #[test]
    fn flow_action_layout_matches_structs_h() {
        let fields = [
            ("generation", offset_of!(FlowAction, generation)),
            ("l2_epoch", offset_of!(FlowAction, l2_epoch)),
            ("packets", offset_of!(FlowAction, packets)),
            ("bytes", offset_of!(FlowAction, bytes)),
            ("last_seen", offset_of!(FlowAction, last_seen)),
            ("eth_dst", offset_of!(FlowAction, eth_dst)),
            ("eth_src", offset_of!(FlowAction, eth_src)),
            ("saddr", offset_of!(FlowAction, saddr)),
            ("daddr", offset_of!(FlowAction, daddr)),
            ("sport", offset_of!(FlowAction, sport)),
            ("dport", offset_of!(FlowAction, dport)),
            ("ip_csum_diff", offset_of!(FlowAction, ip_csum_diff)),
            ("l4_csum_diff", offset_of!(FlowAction, l4_csum_diff)),
            ("egress_slot", offset_of!(FlowAction, egress_slot)),
            ("tunnel", offset_of!(FlowAction, tunnel)),
            ("stats_slot", offset_of!(FlowAction, stats_slot)),
            ("egress_ifindex", offset_of!(FlowAction, egress_ifindex)),
        ];
        let mut assertions = vec![format!(
            "sizeof(struct flow_action) == {}",
            size_of::<FlowAction>()
        )];
        assertions.extend(
            fields
                .iter()
                .map(|(name, at)| format!("offsetof(struct flow_action, {name}) == {at}")),
        );
        assert_stated(&assertions);
        assert!(STRUCTS_H.contains(&format!(
            "sizeof(struct fast_counters) == {}",
            size_of::<FastCounters>()
        )));
    }

    #[test]
    fn flow_cache_key6_layout_matches_structs_h() {
        let fields = [
            ("saddr", offset_of!(FlowCacheKey6, saddr)),
            ("daddr", offset_of!(FlowCacheKey6, daddr)),
            ("sport", offset_of!(FlowCacheKey6, sport)),
            ("dport", offset_of!(FlowCacheKey6, dport)),
            ("proto", offset_of!(FlowCacheKey6, proto)),
        ];
        let mut assertions = vec![format!(
            "sizeof(struct flow_key6) == {}",
            size_of::<FlowCacheKey6>()
        )];
        assertions.extend(
            fields
                .iter()
                .map(|(name, at)| format!("offsetof(struct flow_key6, {name}) == {at}")),
        );
        assert_stated(&assertions);
    }

    #[test]
    fn flow_action6_layout_matches_structs_h() {
        let fields = [
            ("generation", offset_of!(FlowAction6, generation)),
            ("l2_epoch", offset_of!(FlowAction6, l2_epoch)),
            ("packets", offset_of!(FlowAction6, packets)),
            ("bytes", offset_of!(FlowAction6, bytes)),
            ("last_seen", offset_of!(FlowAction6, last_seen)),
            ("eth_dst", offset_of!(FlowAction6, eth_dst)),
            ("eth_src", offset_of!(FlowAction6, eth_src)),
            ("saddr", offset_of!(FlowAction6, saddr)),
            ("daddr", offset_of!(FlowAction6, daddr)),
            ("sport", offset_of!(FlowAction6, sport)),
            ("dport", offset_of!(FlowAction6, dport)),
            ("l4_csum_diff", offset_of!(FlowAction6, l4_csum_diff)),
            ("egress_slot", offset_of!(FlowAction6, egress_slot)),
            ("tunnel", offset_of!(FlowAction6, tunnel)),
            ("stats_slot", offset_of!(FlowAction6, stats_slot)),
            ("pad", offset_of!(FlowAction6, pad)),
            ("egress_ifindex", offset_of!(FlowAction6, egress_ifindex)),
        ];
        let mut assertions = vec![format!(
            "sizeof(struct flow_action6) == {}",
            size_of::<FlowAction6>()
        )];
        assertions.extend(
            fields
                .iter()
                .map(|(name, at)| format!("offsetof(struct flow_action6, {name}) == {at}")),
        );
        assert_stated(&assertions);
    }

    #[test]
    fn key6_and_action6_bytes_are_network_order() {
        let client: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let backend: Ipv6Addr = "2001:db8:2::5".parse().unwrap();
        let key = FlowCacheKey6::new(client, vip, 40000, 80, 6);
        let bytes = bytes_of(std::slice::from_ref(&key));
        assert_eq!(&bytes[..16], &client.octets());
        assert_eq!(&bytes[16..32], &vip.octets());
        assert_eq!(&bytes[32..], &[0x9c, 0x40, 0, 80, 6, 0, 0, 0]);
        assert_eq!((key.src(), key.dst()), (client, vip));
        assert_eq!(
            (key.src_port(), key.dst_port(), key.protocol()),
            (40000, 80, 6)
        );
        let spec = ActionSpec6 {
            generation: 3,
            l2_epoch: 1,
            eth_dst: [2, 0, 0, 0, 0, 0xbe],
            eth_src: [2, 0, 0, 0, 0, 0x2b],
            ip_src: client,
            ip_dst: backend,
            src_port: 40000,
            dst_port: 8080,
            l4_csum_diff: 0xabcd,
            egress_slot: 1,
            egress_ifindex: 7,
            stats_slot: 9,
        };
        let action = FlowAction6::from(spec);
        assert_eq!(action.spec(), spec);
        let bytes = bytes_of(std::slice::from_ref(&action));
        assert_eq!(&bytes[56..72], &backend.octets());
        assert_eq!(&bytes[74..76], &8080u16.to_be_bytes());
    }

    #[test]
    fn last_seen_is_read_back_within_its_resolution() {
        let mut action = FlowAction::default();
        assert_eq!(action.last_seen_ns(5 << 40), None);
        let seen: u64 = 1_234_567_890_123;
        action.last_seen = (seen >> LAST_SEEN_SHIFT) as u32;
        let now = seen + 40_000_000_000;
        let back = action.last_seen_ns(now).unwrap();
        assert!(
            back <= seen && seen - back < 1 << LAST_SEEN_SHIFT,
            "{back} vs {seen}"
        );
    }

    #[test]
    fn key_and_action_bytes_are_network_order() {
        let key = FlowCacheKey::new(
            Ipv4Addr::new(198, 18, 1, 10),
            Ipv4Addr::new(198, 18, 100, 10),
            40000,
            80,
            6,
        );
        assert_eq!(
            bytes_of(&[key]),
            [198, 18, 1, 10, 198, 18, 100, 10, 0x9c, 0x40, 0, 80, 6, 0, 0, 0]
        );
        assert_eq!(
            (key.src_port(), key.dst_port(), key.protocol()),
            (40000, 80, 6)
        );
        let spec = ActionSpec {
            generation: 3,
            l2_epoch: 1,
            eth_dst: [2, 0, 0, 0, 0, 0xbe],
            eth_src: [2, 0, 0, 0, 0, 0x1b],
            ip_src: key.src(),
            ip_dst: Ipv4Addr::new(198, 18, 2, 21),
            src_port: 40000,
            dst_port: 8080,
            ip_csum_diff: 0x1234,
            l4_csum_diff: 0xabcd,
            egress_slot: 1,
            egress_ifindex: 7,
            stats_slot: 9,
        };
        let action = FlowAction::from(spec);
        assert_eq!(action.spec(), spec);
        let bytes = bytes_of(std::slice::from_ref(&action));
        assert_eq!(&bytes[44..48], &[198, 18, 2, 21]);
        assert_eq!(&bytes[50..52], &8080u16.to_be_bytes());
    }
}
