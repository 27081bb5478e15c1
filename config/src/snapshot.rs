//! The compiled, already validated configuration the dataplane runs on.
//!
//! A `Snapshot` is immutable once built: the control thread publishes a new
//! one whole and workers read it through an atomic pointer. Nothing here
//! refers back to YAML types, and nothing here needs re-checking on the hot
//! path, because the types only hold valid values: a slot table has a prime
//! (so non-zero) length (`slots`), its slots name existing backends and its
//! backends existing backendRefs (`listener`), and no two listeners of a
//! snapshot share a VIP key (here). A listener found by VIP or by backend
//! comes with its index (`ListenerRef`), so no caller indexes `listeners`
//! by a number of its own. Slot tables are shared, never copied: between
//! listeners whose backends hash alike and between a snapshot and the next
//! one built from it or from the same backends (`tables`), so a snapshot
//! costs one compact table per distinct backend set.

mod announce;
mod backend;
mod health;
mod listener;
mod plan;
mod slots;
mod tables;
mod traffic;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Deref;

pub use announce::{AnnounceMode, Announcement};
pub(crate) use backend::flatten;
pub use backend::{Backend, BackendGroup, Endpoint};
pub use health::{HealthCheck, Probe, WhenAllUnhealthy};
pub use listener::{Affinity, Listener, ListenerError, ListenerName, ListenerParts, Protocol};
pub use plan::{ListenerPlan, SnapshotPlan};
pub use slots::{Slot, SlotIter, SlotTable, SlotTableError, SlotTableSize, SLOT_TABLE_SIZE};
pub use traffic::{
    intersect, Forwarding, FullNat, Gue, ListenerPolicy, ProxyProtocol, SourceRanges,
    DEFAULT_GUE_PORT,
};

/// Key of the listener index: what a packet's destination is matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
}

/// Why listeners do not make a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A packet to the key could not tell which listener it is for.
    #[error("{protocol} {endpoint} is served by both listener {first} and listener {second}")]
    DuplicateVip {
        protocol: Protocol,
        endpoint: Endpoint,
        first: String,
        second: String,
    },
}

/// A listener's position in the snapshot that handed it out. Flow entries
/// and per-listener counters keep it as a raw `u32` (`as_u32`), valid for
/// the snapshot generation they were made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u32);

impl ListenerId {
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// Into per-listener tables sized like `Snapshot::listeners`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A listener of a snapshot with its position there, so the position
/// cannot be out of range of the snapshot it is used with.
#[derive(Debug, Clone, Copy)]
pub struct ListenerRef<'s> {
    id: ListenerId,
    listener: &'s Listener,
}

impl<'s> ListenerRef<'s> {
    pub fn id(self) -> ListenerId {
        self.id
    }

    pub fn get(self) -> &'s Listener {
        self.listener
    }
}

impl Deref for ListenerRef<'_> {
    type Target = Listener;

    fn deref(&self) -> &Listener {
        self.listener
    }
}

impl PartialEq for ListenerRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && std::ptr::eq(self.listener, other.listener)
    }
}

impl Eq for ListenerRef<'_> {}

/// Which listener(s) a backend endpoint serves, so that reply packets
/// (source = backend endpoint) can be reverse-translated from the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOwner<'s> {
    /// Exactly one listener: the reverse translation is a pure function of
    /// the snapshot.
    Unique(ListenerRef<'s>),
    /// The endpoint sits behind several listeners; the reply's listener
    /// cannot be derived from the packet and flow state must decide.
    Shared,
}

/// `BackendOwner` as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Unique(u32),
    Shared,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped by the control plane on every successful load.
    generation: u64,
    listeners: Vec<Listener>,
    /// Names of the Gateways served, sorted; answered by `--dns-listen`.
    dns: Vec<crate::dns::DnsRecord>,
    /// Positions in `listeners`, each in range.
    by_vip: HashMap<ServiceKey, u32>,
    by_backend: HashMap<ServiceKey, Owner>,
    /// Every listener's VIP address, whatever its port and protocol: what
    /// the workers answer echo requests for, and whose ICMP errors they
    /// translate.
    addresses: HashSet<IpAddr>,
    /// Served endpoints whose EndpointSlice conditions (or Pod) say they
    /// are terminating. Kept beside the listeners rather than in `Backend`
    /// because terminating is the endpoint's own state (its Pod is being
    /// deleted), the same in every Service that lists it.
    terminating: BTreeSet<Endpoint>,
    /// The VIPs to announce, sorted (see `announce`).
    announcements: Vec<Announcement>,
}

impl Snapshot {
    /// Indexes `listeners`, refusing two that share a VIP key.
    pub fn new(generation: u64, listeners: Vec<Listener>) -> Result<Self, SnapshotError> {
        Self::build(generation, listeners).map_err(|(error, _)| error)
    }

    /// `new`, handing the listeners back on error so that resolution can
    /// report the ones refused and serve the others.
    pub(crate) fn build(
        generation: u64,
        listeners: Vec<Listener>,
    ) -> Result<Self, (SnapshotError, Vec<Listener>)> {
        match duplicate_vip(listeners.iter().map(|l| (l.key(), l.name()))) {
            Some(error) => Err((error, listeners)),
            None => Ok(Self::indexed(generation, listeners)),
        }
    }

    /// The snapshot of `listeners`, which `duplicate_vip` accepted.
    pub(super) fn indexed(generation: u64, listeners: Vec<Listener>) -> Self {
        let mut by_vip: HashMap<ServiceKey, u32> = HashMap::with_capacity(listeners.len());
        let mut by_backend: HashMap<ServiceKey, Owner> = HashMap::new();
        for (index, listener) in listeners.iter().enumerate() {
            let index = index as u32;
            by_vip.entry(listener.key()).or_insert(index);
            for backend in listener.backends() {
                let key = ServiceKey {
                    endpoint: backend.endpoint,
                    protocol: listener.protocol(),
                };
                by_backend
                    .entry(key)
                    .and_modify(|owner| {
                        if *owner != Owner::Unique(index) {
                            *owner = Owner::Shared
                        }
                    })
                    .or_insert(Owner::Unique(index));
            }
        }
        let addresses = listeners.iter().map(|l| l.key().endpoint.address).collect();
        Self {
            generation,
            listeners,
            dns: Vec::new(),
            by_vip,
            by_backend,
            addresses,
            terminating: BTreeSet::new(),
            announcements: Vec::new(),
        }
    }

    /// Marks `endpoints` terminating: they still own their slots and take
    /// new flows (as kube-proxy uses serving, terminating endpoints when no
    /// endpoint is ready), and `yardctl backends` says so.
    pub fn with_terminating(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.terminating = endpoints.into_iter().collect();
        self
    }

    /// Whether `endpoint` is served while terminating.
    pub fn is_terminating(&self, endpoint: &Endpoint) -> bool {
        self.terminating.contains(endpoint)
    }

    /// Every terminating endpoint, in order; to carry them into a snapshot
    /// rebuilt from this one.
    pub fn terminating(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.terminating.iter().copied()
    }

    pub fn with_dns(mut self, mut records: Vec<crate::dns::DnsRecord>) -> Self {
        records.sort();
        records.dedup();
        self.dns = records;
        self
    }

    pub fn with_announcements(mut self, announcements: Vec<Announcement>) -> Self {
        self.announcements = announce::normalized(announcements);
        self
    }

    /// The VIPs to announce, by address then mode.
    pub fn announcements(&self) -> &[Announcement] {
        &self.announcements
    }

    /// Bumped by the control plane on every successful load.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// Names of the Gateways served, sorted; answered by `--dns-listen`.
    pub fn dns(&self) -> &[crate::dns::DnsRecord] {
        &self.dns
    }

    /// The listener at a position kept from this snapshot's generation (a
    /// flow entry's, a counter's); `None` if there is none.
    pub fn listener(&self, index: u32) -> Option<ListenerRef<'_>> {
        let listener = self.listeners.get(index as usize)?;
        Some(ListenerRef {
            id: ListenerId(index),
            listener,
        })
    }

    pub fn listener_for_vip(&self, key: &ServiceKey) -> Option<ListenerRef<'_>> {
        self.listener(*self.by_vip.get(key)?)
    }

    /// Whether `address` is the VIP of any listener, on any port and
    /// protocol.
    pub fn serves_address(&self, address: IpAddr) -> bool {
        self.addresses.contains(&address)
    }

    pub fn owner_of_backend(&self, key: &ServiceKey) -> Option<BackendOwner<'_>> {
        match *self.by_backend.get(key)? {
            Owner::Unique(index) => self.listener(index).map(BackendOwner::Unique),
            Owner::Shared => Some(BackendOwner::Shared),
        }
    }

    pub fn find_listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name().to_string() == name)
    }
}

/// The first VIP key two of `listeners` share, as the error naming both.
fn duplicate_vip<'a>(
    listeners: impl Iterator<Item = (ServiceKey, &'a ListenerName)>,
) -> Option<SnapshotError> {
    let mut seen: HashMap<ServiceKey, &ListenerName> = HashMap::new();
    for (key, name) in listeners {
        if let Some(first) = seen.insert(key, name) {
            return Some(SnapshotError::DuplicateVip {
                protocol: key.protocol,
                endpoint: key.endpoint,
                first: first.to_string(),
                second: name.to_string(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn endpoint(last: u8, port: u16) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 2, last)),
            port,
        }
    }

    /// `demo/edge/<name>` on VIP:`port` over backend .21:8080.
    fn listener(name: &str, port: u16) -> Listener {
        Listener::new(ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: name.into(),
            },
            route: String::new(),
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10)),
            port,
            listener_port: port,
            protocol: Protocol::Tcp,
            groups: vec![BackendGroup {
                service: "demo/echo".into(),
                weight: 1,
                endpoints: vec![endpoint(21, 8080)],
                terminating: false,
                draining: Vec::new(),
                health_check: None,
            }],
            backends: vec![Backend {
                endpoint: endpoint(21, 8080),
                group: 0,
                effective_weight: 1.0,
            }],
            slots: vec![Slot::Backend(0); 2],
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn two_listeners_on_one_vip_key_are_refused() {
        let error = Snapshot::new(1, vec![listener("a", 80), listener("b", 80)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "TCP 198.18.100.10:80 is served by both listener demo/edge/a and listener demo/edge/b"
        );
    }

    #[test]
    fn lookups_hand_out_listeners_with_their_position() {
        let snapshot = Snapshot::new(3, vec![listener("a", 80), listener("b", 81)]).unwrap();
        let b = snapshot
            .listener_for_vip(&snapshot.listeners()[1].key())
            .unwrap();
        assert_eq!((b.id().index(), b.name().listener.as_str()), (1, "b"));
        assert_eq!(snapshot.listener(1), Some(b));
        assert_eq!(snapshot.listener(2), None);
        let backend = ServiceKey {
            endpoint: endpoint(21, 8080),
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            snapshot.owner_of_backend(&backend),
            Some(BackendOwner::Shared)
        );
        let only_a = Snapshot::new(4, vec![listener("a", 80)]).unwrap();
        assert!(only_a.serves_address(IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10))));
        assert!(matches!(
            only_a.owner_of_backend(&backend),
            Some(BackendOwner::Unique(a)) if a.id().index() == 0
        ));
    }

    #[test]
    fn an_address_is_served_by_any_listener_on_it_and_only_then() {
        let snapshot = Snapshot::new(1, vec![listener("a", 80), listener("b", 81)]).unwrap();
        assert!(snapshot.serves_address(IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10))));
        assert!(!snapshot.serves_address(IpAddr::V4(Ipv4Addr::new(198, 18, 100, 11))));
        // A backend's address is not a VIP.
        assert!(!snapshot.serves_address(endpoint(21, 8080).address));
        assert!(!Snapshot::default().serves_address(IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10))));
    }
}
