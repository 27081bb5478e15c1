//! The compiled, already validated configuration the dataplane runs on.
//!
//! A `Snapshot` is immutable once built: the control thread publishes a new
//! one whole and workers read it through an atomic pointer. Nothing here
//! refers back to YAML types, and nothing here needs re-checking on the hot
//! path: every listener has a non-empty slot table and resolved addresses.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

/// Transport protocol of a listener; the discriminants are IANA protocol
/// numbers so they can be compared with the IP header directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
#[repr(u8)]
pub enum Protocol {
    Tcp = 6,
    Udp = 17,
}

impl Protocol {
    pub fn from_ip_proto(proto: u8) -> Option<Self> {
        match proto {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// `namespace/gateway/listener`: how operators and `yardctl` name a listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ListenerName {
    pub namespace: String,
    pub gateway: String,
    pub listener: String,
}

impl fmt::Display for ListenerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.gateway, self.listener)
    }
}

/// An address:port a backend serves on, as the dataplane rewrites to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// One backendRef of the route attached to a listener, with its ready
/// endpoints. A group with no endpoints keeps its weighted share of the
/// slot table: traffic hashed there is refused, as the Gateway API asks of
/// an invalid backendRef, instead of silently shifting to the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendGroup {
    /// `namespace/name` of the referenced Service.
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
    /// Every endpoint is serving but terminating (none is ready), used as
    /// kube-proxy does so connections drain instead of failing. Per
    /// endpoint: `Snapshot::is_terminating`.
    pub terminating: bool,
}

/// Entries in every listener's slot table. Prime, as the Maglev table
/// that will fill it needs, and far above any backend count a listener
/// has, so each backend's share is close to its weight.
pub const SLOT_TABLE_SIZE: usize = 65_537;

/// Owner of one slot of a listener's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Slot {
    /// Index into `Listener::backends` (flattened endpoints).
    Backend(u32),
    /// The share of a backendRef that has no usable endpoint.
    Unavailable,
}

/// A backend endpoint as the dataplane sees it: flattened over groups,
/// deduplicated per listener, in a stable order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Backend {
    pub endpoint: Endpoint,
    /// Index into `Listener::groups`.
    pub group: u32,
    /// The group's weight spread over its endpoints.
    pub effective_weight: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Listener {
    pub name: ListenerName,
    /// `namespace/name` of the route whose backends this listener serves;
    /// empty when no route is attached (every slot is then `Unavailable`).
    pub route: String,
    pub address: IpAddr,
    /// The port packets arrive on: the Gateway listener's port on a VIP,
    /// its node port on a node address.
    pub port: u16,
    /// The Gateway listener's own `port`; differs from `port` only for a
    /// node port.
    pub listener_port: u16,
    pub protocol: Protocol,
    pub groups: Vec<BackendGroup>,
    pub backends: Vec<Backend>,
    /// Hash-indexed owners; never empty. Built off the hot path so workers
    /// only index it.
    pub slots: Vec<Slot>,
    /// `ClientIP` session affinity: when set, the slot is chosen by the
    /// client address alone, so every flow of a client reaches one backend.
    pub affinity: Option<Affinity>,
}

/// Kubernetes-style `ClientIP` session affinity of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Affinity {
    /// How long a client keeps its backend after its last flow. The flat
    /// Maglev table keeps it for as long as the backends do not change;
    /// honouring it across backend changes needs an affinity table (later).
    pub timeout_secs: u32,
}

impl Listener {
    pub fn vip(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            port: self.port,
        }
    }
}

/// Key of the listener index: what a packet's destination is matched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped by the control plane on every successful load.
    pub generation: u64,
    pub listeners: Vec<Listener>,
    /// Names of the Gateways served, sorted; answered by `--dns-listen`.
    pub dns: Vec<crate::dns::DnsRecord>,
    by_vip: HashMap<ServiceKey, u32>,
    by_backend: HashMap<ServiceKey, BackendOwner>,
    /// Served endpoints whose EndpointSlice conditions (or Pod) say they
    /// are terminating. Kept beside the listeners rather than in `Backend`
    /// because terminating is the endpoint's own state (its Pod is being
    /// deleted), the same in every Service that lists it.
    terminating: BTreeSet<Endpoint>,
}

/// Which listener(s) a backend endpoint serves, so that reply packets
/// (source = backend endpoint) can be reverse-translated from the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOwner {
    /// Exactly one listener: the reverse translation is a pure function of
    /// the snapshot.
    Unique(u32),
    /// The endpoint sits behind several listeners; the reply's listener
    /// cannot be derived from the packet and flow state must decide.
    Shared,
}

impl Snapshot {
    /// Indexes `listeners`. Listeners must already be valid (non-empty slot
    /// tables, unique VIP keys); `config::resolve` guarantees that.
    pub fn new(generation: u64, listeners: Vec<Listener>) -> Self {
        let mut by_vip = HashMap::new();
        let mut by_backend: HashMap<ServiceKey, BackendOwner> = HashMap::new();
        for (index, listener) in listeners.iter().enumerate() {
            let index = index as u32;
            by_vip.insert(
                ServiceKey {
                    endpoint: listener.vip(),
                    protocol: listener.protocol,
                },
                index,
            );
            for backend in &listener.backends {
                let key = ServiceKey {
                    endpoint: backend.endpoint,
                    protocol: listener.protocol,
                };
                by_backend
                    .entry(key)
                    .and_modify(|owner| {
                        if *owner != BackendOwner::Unique(index) {
                            *owner = BackendOwner::Shared
                        }
                    })
                    .or_insert(BackendOwner::Unique(index));
            }
        }
        Self {
            generation,
            listeners,
            dns: Vec::new(),
            by_vip,
            by_backend,
            terminating: BTreeSet::new(),
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

    pub fn listener_for_vip(&self, key: &ServiceKey) -> Option<u32> {
        self.by_vip.get(key).copied()
    }

    pub fn owner_of_backend(&self, key: &ServiceKey) -> Option<BackendOwner> {
        self.by_backend.get(key).copied()
    }

    pub fn find_listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name.to_string() == name)
    }
}
