//! A snapshot before its slot tables: every listener resolved, checked
//! and sized, its table not yet filled. Resolution makes one and builds
//! the snapshot from it; `config diff` compares one with the running
//! snapshot a listener at a time, building each listener's table only
//! when it compares it and dropping it after, so a diff never holds a
//! second snapshot's tables (a listener the file adds needs none). It owns
//! the same invariants as `Snapshot` (checked parts, one listener per VIP
//! key), so building cannot fail.

use std::collections::BTreeSet;

use super::listener::{check_parts, ListenerParts};
use super::{
    duplicate_vip, Announcement, Backend, BackendGroup, Endpoint, Listener, ListenerError,
    ListenerName, Protocol, ServiceKey, SlotTable, SlotTableSize, Snapshot, SnapshotError,
};

/// A listener whose table Maglev fills, at `size`, when it is built.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    /// Checked by `check_parts`; `slots` is empty.
    parts: ListenerParts,
    size: SlotTableSize,
}

impl ListenerPlan {
    /// `parts` with an empty `slots` (the table is Maglev's, of `size`).
    pub fn new(parts: ListenerParts, size: SlotTableSize) -> Result<Self, ListenerError> {
        if !parts.slots.is_empty() {
            return Err(ListenerError::TwoTables {
                listener: parts.name.to_string(),
                slots: parts.slots.len(),
            });
        }
        check_parts(&parts)?;
        Ok(Self { parts, size })
    }

    /// The listener, its table filled with `seed` (shared with any live
    /// table of the same backends, size and seed: see `SlotTable::maglev`).
    pub fn build(&self, seed: u32) -> Listener {
        let slots = SlotTable::maglev(&self.parts.groups, &self.parts.backends, self.size, seed);
        Listener::assemble(self.parts.clone(), slots)
    }

    pub fn name(&self) -> &ListenerName {
        &self.parts.name
    }

    pub fn address(&self) -> std::net::IpAddr {
        self.parts.address
    }

    pub fn protocol(&self) -> Protocol {
        self.parts.protocol
    }

    pub fn vip(&self) -> Endpoint {
        Endpoint {
            address: self.parts.address,
            port: self.parts.port,
        }
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            endpoint: self.vip(),
            protocol: self.parts.protocol,
        }
    }

    pub fn groups(&self) -> &[BackendGroup] {
        &self.parts.groups
    }

    pub fn backends(&self) -> &[Backend] {
        &self.parts.backends
    }

    pub fn table_size(&self) -> SlotTableSize {
        self.size
    }
}

/// Listeners resolved for one generation, no two on one VIP key, with
/// what the snapshot built from them carries beside them.
#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    generation: u64,
    maglev_seed: u32,
    listeners: Vec<ListenerPlan>,
    dns: Vec<crate::dns::DnsRecord>,
    terminating: BTreeSet<Endpoint>,
    announcements: Vec<Announcement>,
}

impl SnapshotPlan {
    /// Refuses two listeners on one VIP key, handing them back so that
    /// resolution can report the ones refused and serve the others.
    pub(crate) fn new(
        generation: u64,
        maglev_seed: u32,
        listeners: Vec<ListenerPlan>,
    ) -> Result<Self, (SnapshotError, Vec<ListenerPlan>)> {
        if let Some(error) = duplicate_vip(listeners.iter().map(|l| (l.key(), l.name()))) {
            return Err((error, listeners));
        }
        Ok(Self {
            generation,
            maglev_seed,
            listeners,
            dns: Vec::new(),
            terminating: BTreeSet::new(),
            announcements: Vec::new(),
        })
    }

    pub(crate) fn with_dns(mut self, mut records: Vec<crate::dns::DnsRecord>) -> Self {
        records.sort();
        records.dedup();
        self.dns = records;
        self
    }

    pub(crate) fn with_terminating(
        mut self,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Self {
        self.terminating = endpoints.into_iter().collect();
        self
    }

    pub(crate) fn with_announcements(mut self, announcements: Vec<Announcement>) -> Self {
        self.announcements = announcements;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The seed every listener's table is filled with.
    pub fn maglev_seed(&self) -> u32 {
        self.maglev_seed
    }

    pub fn listeners(&self) -> &[ListenerPlan] {
        &self.listeners
    }

    /// Whether `endpoint` is served while terminating.
    pub fn is_terminating(&self, endpoint: &Endpoint) -> bool {
        self.terminating.contains(endpoint)
    }

    /// The snapshot, every table filled.
    pub fn build(self) -> Snapshot {
        let seed = self.maglev_seed;
        let listeners = self.listeners.iter().map(|l| l.build(seed)).collect();
        Snapshot::indexed(self.generation, listeners)
            .with_dns(self.dns)
            .with_terminating(self.terminating)
            .with_announcements(self.announcements)
    }
}
