//! The plain data of `fullnat` and `dsr` a worker keeps: how a listener's
//! flows are rewritten (`Plan`), what a flow entry is by its rewrite alone
//! (`Shape`, so no field of the entry is spent on it), and the worker's
//! share of the node's SNAT ports.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use switchyard_config::snapshot::Forwarding;

use crate::flow::{Direction, FlowEntry, FlowTable};
use crate::packet::FlowKey;
use crate::replies::ReplyTable;
use crate::snat::{Binding, SnatTable};

/// SNAT addresses a worker counts exhaustion for one by one; any beyond
/// share the last counter.
pub const MAX_COUNTED_SNAT_ADDRESSES: usize = 16;

/// What a worker is given to hand out full-NAT source ports.
pub struct SnatSetup {
    /// The node's bindings, shared by every worker.
    pub table: Arc<SnatTable>,
    /// This worker's ports: disjoint from every other worker's.
    pub slice: RangeInclusive<u16>,
    /// Which (SNAT address, port) each client flow was bound to, keyed by
    /// the flow as `forward_key` turns it, shared by every worker: a
    /// client's packet reaching another worker than its port's owner
    /// (the queue follows the sender's CPU or RSS, not the flow) finds its
    /// binding there instead of being given a second port.
    pub forwards: Arc<ReplyTable>,
    /// (ifindex, address, prefix length) of the interfaces flows leave
    /// by, for listeners that name no SNAT address of the backend's
    /// family: the one whose subnet holds the backend, else the first.
    pub interface_addresses: Vec<(u32, IpAddr, u8)>,
}

pub(super) struct SnatState {
    pub(super) table: Arc<SnatTable>,
    pub(super) forwards: Arc<ReplyTable>,
    pub(super) slice: RangeInclusive<u16>,
    pub(super) cursor: u16,
    pub(super) interface_addresses: Vec<(u32, IpAddr, u8)>,
}

impl SnatState {
    /// The address of interface `ifindex` a flow to `backend` leaves from:
    /// of the backend's family, preferably on the backend's subnet (the
    /// source the kernel would pick for an on-link destination).
    pub(super) fn interface_address(&self, ifindex: u32, backend: IpAddr) -> Option<IpAddr> {
        let mut family = self
            .interface_addresses
            .iter()
            .filter(|(index, a, _)| *index == ifindex && a.is_ipv6() == backend.is_ipv6());
        let first = family.clone().next().map(|(_, a, _)| *a);
        family
            .find(|(_, a, len)| same_subnet(*a, backend, *len))
            .map(|(_, a, _)| *a)
            .or(first)
    }
    pub(super) fn new(setup: SnatSetup) -> Self {
        Self {
            table: setup.table,
            forwards: setup.forwards,
            cursor: *setup.slice.start(),
            slice: setup.slice,
            interface_addresses: setup.interface_addresses,
        }
    }
}

/// How a listener's flows are rewritten on the way to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    Nat,
    FullNat,
    Dsr,
}

impl Plan {
    pub(super) fn of(forwarding: &Forwarding) -> Self {
        match forwarding {
            Forwarding::FullNat(_) => Plan::FullNat,
            Forwarding::Dsr => Plan::Dsr,
            // Encapsulating modes translate nothing of the packet itself:
            // their outer header is `encap`'s.
            Forwarding::Nat | Forwarding::Ipip | Forwarding::Gue(_) => Plan::Nat,
        }
    }
}

/// What a client flow's entry is, read from its rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Two-arm NAT: answers come back to the client's own address.
    Nat,
    /// The source was rewritten: answers come back to the SNAT binding.
    FullNat,
    /// Addresses and ports kept: no answer comes back through the node.
    Dsr,
    /// Encapsulated (`ipip`, `gue`): the rewrite is the outer header's,
    /// and no answer comes back through the node.
    Tunnel,
}

impl Shape {
    #[inline(always)]
    pub(super) fn of(key: &FlowKey, entry: &FlowEntry) -> Self {
        let rewrite = &entry.rewrite;
        if entry.tunnel.is_some() {
            Shape::Tunnel
        } else if rewrite.ip_src != key.src || rewrite.src_port != key.src_port {
            Shape::FullNat
        } else if rewrite.ip_dst == key.dst && rewrite.dst_port == key.dst_port {
            Shape::Dsr
        } else {
            Shape::Nat
        }
    }
}

/// Whether the binding `b` of this worker's slice still belongs to a flow
/// of its table, in either direction (expired entries count until they are
/// reaped: the cache may still carry them).
pub(super) fn binding_held(flows: &FlowTable, b: &Binding) -> bool {
    let forward = FlowKey {
        src: b.client.0,
        dst: b.vip.0,
        src_port: b.client.1,
        dst_port: b.vip.1,
        protocol: b.protocol,
    };
    let reply = FlowKey {
        src: b.backend.0,
        dst: b.snat,
        src_port: b.backend.1,
        dst_port: b.port,
        protocol: b.protocol,
    };
    flows.stored(&forward).is_some_and(|e| {
        e.direction == Direction::ToBackend
            && e.rewrite.ip_src == b.snat
            && e.rewrite.src_port == b.port
    }) || flows.stored(&reply).is_some_and(|e| {
        e.direction == Direction::ToClient
            && e.rewrite.ip_dst == b.client.0
            && e.rewrite.dst_port == b.client.1
    })
}

/// Whether `a` and `b` (of one family) share their first `len` bits.
fn same_subnet(a: IpAddr, b: IpAddr, len: u8) -> bool {
    let bits = |x: IpAddr| match x {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32u32),
        IpAddr::V6(v6) => (u128::from(v6), 128u32),
    };
    let ((a, width), (b, _)) = (bits(a), bits(b));
    let len = u32::from(len).min(width);
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - len);
    a & mask == b & mask
}

/// Client flow `key` as the shared forward table keys it: reversed, so the
/// table's bucket is chosen by the client's (address, port), not by the
/// VIP every flow of a listener shares.
pub(super) fn forward_key(key: &FlowKey) -> FlowKey {
    FlowKey {
        src: key.dst,
        dst: key.src,
        src_port: key.dst_port,
        dst_port: key.src_port,
        protocol: key.protocol,
    }
}
