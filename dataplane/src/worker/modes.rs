//! What `fullnat` and `dsr` add to a new flow's decision. Both stay plain
//! rewrites (`packet::Rewrite`), so the flow table and the XDP cache
//! replay them unchanged:
//!
//! - `fullnat`: the source becomes an SNAT address and a port of this
//!   worker's slice of the node's range (`snat`), the destination the
//!   backend. The port's owner keeps both directions in its own flow table
//!   (and so in the cache); an answer reaching another queue first is
//!   translated from the shared binding without an entry there, so only
//!   the owner's table decides when the port is free again.
//! - `dsr`: nothing at L3/L4 changes, only the MACs, toward an on-link
//!   backend that holds the VIP itself; no answer comes back.
//!
//! A flow entry says which it is by its rewrite alone (`plan::Shape`).

use std::net::IpAddr;

use switchyard_config::snapshot::{Forwarding, Protocol, Snapshot};

use super::path::{secs, service_key, PathState};
use super::plan::{binding_held, forward_key, Shape};
use crate::drop_reason::DropReason;
use crate::flow::{Cached, Direction, FlowEntry, FlowTable};
use crate::neighbor::L2Table;
use crate::packet::{self, FlowKey, ProxyStream};
use crate::snat::{Binding, SnatTable};

impl PathState {
    /// The SNAT (address, port) a new client flow `key` of `listener` to
    /// `backend`, leaving by `ifindex`, gets: one of the listener's
    /// addresses of the backend's family (by flow hash), else the egress
    /// interface's; the port from this worker's slice.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bind_snat(
        &mut self,
        snapshot: &Snapshot,
        flows: &FlowTable,
        key: &FlowKey,
        listener: u32,
        backend: (IpAddr, u16),
        ifindex: u32,
        proxy: Option<ProxyStream>,
        now: u64,
    ) -> Result<(IpAddr, u16), DropReason> {
        let Some(snat) = &mut self.snat else {
            return Err(DropReason::SnatPortsExhausted);
        };
        let ipv6 = backend.0.is_ipv6();
        let configured: &[IpAddr] = match snapshot.listener(listener).map(|l| l.get().forwarding())
        {
            Some(Forwarding::FullNat(full)) => &full.addresses,
            _ => &[],
        };
        let family = configured.iter().filter(|a| a.is_ipv6() == ipv6);
        let count = family.clone().count();
        let address = if count > 0 {
            let pick = packet::flow_hash(key, self.hash_seed) as usize % count;
            family.clone().nth(pick).copied()
        } else {
            snat.interface_address(ifindex, backend.0)
        }
        .ok_or(DropReason::NoSnatAddress)?;
        let template = Binding {
            snat: address,
            port: 0,
            protocol: key.protocol,
            client: (key.src, key.src_port),
            vip: (key.dst, key.dst_port),
            backend,
            proxy,
        };
        let ttl = self.reply_ttl.of_protocol(key.protocol);
        let port = snat.table.allocate(
            &snat.slice,
            &mut snat.cursor,
            &template,
            secs(now),
            ttl,
            &mut |b| binding_held(flows, b),
        );
        match port {
            Some(port) => {
                snat.forwards
                    .put(&forward_key(key), (address, port), secs(now), ttl);
                Ok((address, port))
            }
            None => {
                self.stats.count_snat_exhausted(address);
                Err(DropReason::SnatPortsExhausted)
            }
        }
    }

    /// The live binding of client flow `key` of `listener`, made by
    /// whichever worker saw the flow first: its SNAT (address, port), and
    /// its backend (index into the listener's, and endpoint) while the
    /// listener still has it.
    pub(super) fn existing_binding(
        &self,
        snapshot: &Snapshot,
        key: &FlowKey,
        listener: u32,
        now: u64,
    ) -> Option<ExistingBinding> {
        let snat = self.snat.as_ref()?;
        let (address, port) = snat.forwards.get(&forward_key(key), secs(now))?;
        let binding = snat.table.get(address, port, key.protocol, secs(now))?;
        if binding.client != (key.src, key.src_port) || binding.vip != (key.dst, key.dst_port) {
            return None;
        }
        let backends = snapshot.listener(listener)?.get().backends();
        let index = backends
            .iter()
            .position(|b| (b.endpoint.address, b.endpoint.port) == binding.backend)?;
        Some(ExistingBinding {
            snat: (address, port),
            backend: index as u32,
            endpoint: binding.backend,
            proxy: binding.proxy,
        })
    }

    /// A backend's answer to an SNAT binding, reversed, when a live
    /// binding of its destination address, port and protocol has this
    /// backend. `None` otherwise: it may still be a `nat` reply (a client's
    /// own port can fall in the SNAT range; its address is no SNAT one).
    pub(super) fn reverse_snat(
        &self,
        snapshot: &Snapshot,
        key: &FlowKey,
        now: u64,
    ) -> Option<SnatReply> {
        let snat = self.snat.as_ref()?;
        if !snat.table.ports().contains(key.dst_port) {
            return None;
        }
        reverse_binding(&snat.table, snapshot, key, now)
    }

    /// Whether `key`, decided as `entry`, belongs to a full-NAT flow whose
    /// port another worker's slice holds (a client's packet, or its
    /// backend's answer): it is translated from the shared binding and not
    /// remembered here, so the owner alone decides when the port is free.
    #[inline]
    pub(super) fn of_foreign_port(&self, key: &FlowKey, entry: &FlowEntry) -> bool {
        let port = match entry.direction {
            Direction::ToBackend if Shape::of(key, entry) == Shape::FullNat => {
                entry.rewrite.src_port
            }
            Direction::ToClient if entry.rewrite.ip_dst != key.dst => key.dst_port,
            _ => return false,
        };
        self.snat
            .as_ref()
            .is_some_and(|snat| !snat.slice.contains(&port))
    }
}

/// A client flow's binding found in the shared tables.
pub(super) struct ExistingBinding {
    pub(super) snat: (IpAddr, u16),
    /// Index into the listener's backends.
    pub(super) backend: u32,
    pub(super) endpoint: (IpAddr, u16),
    pub(super) proxy: Option<ProxyStream>,
}

/// A backend's answer to a full-NAT flow, reversed.
pub(super) struct SnatReply {
    pub(super) vip: (IpAddr, u16),
    pub(super) client: (IpAddr, u16),
    pub(super) listener: u32,
    pub(super) backend: u32,
    pub(super) proxy: Option<ProxyStream>,
}

fn reverse_binding(
    table: &SnatTable,
    snapshot: &Snapshot,
    key: &FlowKey,
    now: u64,
) -> Option<SnatReply> {
    let protocol = Protocol::from_ip_proto(key.protocol)?;
    let binding = table.get(key.dst, key.dst_port, key.protocol, secs(now))?;
    // Only the backend the flow was sent to may answer it.
    if binding.backend != (key.src, key.src_port) {
        return None;
    }
    let listener =
        snapshot.listener_for_vip(&service_key(binding.vip.0, binding.vip.1, protocol))?;
    let backend = listener
        .backends()
        .iter()
        .position(|b| (b.endpoint.address, b.endpoint.port) == binding.backend)?
        as u32;
    Some(SnatReply {
        vip: binding.vip,
        client: binding.client,
        listener: listener.id().as_u32(),
        backend,
        proxy: binding.proxy,
    })
}

/// The backend a `dsr` flow entry of the current snapshot goes to.
pub(super) fn dsr_backend(snapshot: &Snapshot, entry: &FlowEntry) -> Option<IpAddr> {
    let listener = snapshot.listener(entry.listener)?;
    let backend = listener.get().backends().get(entry.backend as usize)?;
    Some(backend.endpoint.address)
}

/// `forward::carry_over` for a `dsr` flow, whose rewrite names the VIP
/// rather than its backend: the backend is the new snapshot's backend of
/// the VIP's listener on the VIP's port whose MAC the flow sends to, so a
/// reload that keeps the backend keeps the flow on it (and a TCP
/// connection is not reset as if its backend had gone).
#[inline(never)]
pub(super) fn carry_over_dsr(
    snapshot: &Snapshot,
    l2: &L2Table,
    key: &FlowKey,
    entry: &mut FlowEntry,
) -> bool {
    let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
        return false;
    };
    let Some(listener) = snapshot.listener_for_vip(&service_key(key.dst, key.dst_port, protocol))
    else {
        return false;
    };
    let Some(position) = listener.backends().iter().position(|b| {
        b.endpoint.port == key.dst_port
            && l2
                .resolve(b.endpoint.address)
                .is_ok_and(|hop| hop.dst_mac == entry.rewrite.eth_dst)
    }) else {
        return false;
    };
    entry.listener = listener.id().as_u32();
    entry.backend = position as u32;
    entry.generation = snapshot.generation();
    if entry.cached == Cached::Current {
        entry.cached = Cached::Stale;
    }
    true
}
