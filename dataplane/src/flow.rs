//! A worker's own flow table: 5-tuple to the decision made for the flow's
//! first packet. Owned by one worker, never shared, never locked; capacity
//! is reserved up front so inserting never allocates on the packet path.

use std::collections::HashMap;
use std::time::Duration;

use crate::packet::{FlowKey, Rewrite};

/// Which way a tracked 5-tuple travels through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to VIP, rewritten to the backend.
    ToBackend,
    /// Backend to client, rewritten to come from the VIP.
    ToClient,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowEntry {
    pub rewrite: Rewrite,
    pub egress_port: usize,
    pub direction: Direction,
    pub listener: u32,
    pub backend: u32,
    /// Snapshot generation the decision was taken under; a later snapshot
    /// re-decides the flow (backend changes are the config issues' business).
    pub generation: u64,
    /// Identity of the L2 table the MACs came from; a newer table refreshes
    /// them without changing the backend.
    pub l2_version: u64,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// TCP FIN or RST seen: the flow only lingers for stray segments.
    pub closing: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowTimeouts {
    pub tcp: Duration,
    pub tcp_closing: Duration,
    pub udp: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        // Conntrack-like defaults, shortened for established TCP: an LB
        // keeps state for many more flows than a host does.
        Self {
            tcp: Duration::from_secs(300),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(30),
        }
    }
}

impl FlowTimeouts {
    fn expired(&self, key: &FlowKey, entry: &FlowEntry, now_ns: u64) -> bool {
        let timeout = match (key.protocol, entry.closing) {
            (TCP, false) => self.tcp,
            (TCP, true) => self.tcp_closing,
            _ => self.udp,
        };
        now_ns.saturating_sub(entry.last_seen_ns) > timeout.as_nanos() as u64
    }
}

pub struct FlowTable {
    flows: HashMap<FlowKey, FlowEntry>,
    capacity: usize,
    timeouts: FlowTimeouts,
}

const TCP: u8 = 6;

impl FlowTable {
    pub fn new(capacity: usize, timeouts: FlowTimeouts) -> Self {
        Self {
            flows: HashMap::with_capacity(capacity),
            capacity,
            timeouts,
        }
    }

    /// The live entry for `key`; an expired one is removed and missed.
    pub fn get_mut(&mut self, key: &FlowKey, now_ns: u64) -> Option<&mut FlowEntry> {
        let expired = self.timeouts.expired(key, self.flows.get(key)?, now_ns);
        if expired {
            self.flows.remove(key);
            return None;
        }
        self.flows.get_mut(key)
    }

    /// Tracks a new flow. Returns false when the table is full: the packet is
    /// still forwarded (the decision is a pure function of the snapshot), it
    /// just is not remembered.
    pub fn insert(&mut self, key: FlowKey, entry: FlowEntry) -> bool {
        if self.flows.len() >= self.capacity && !self.flows.contains_key(&key) {
            return false;
        }
        self.flows.insert(key, entry);
        true
    }

    /// Drops idle flows; called off the per-packet path, about once a second.
    pub fn expire(&mut self, now_ns: u64) {
        let timeouts = self.timeouts;
        self.flows
            .retain(|key, entry| !timeouts.expired(key, entry, now_ns));
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &FlowEntry)> {
        self.flows.iter()
    }
}
