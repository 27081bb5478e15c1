//! One listener of a snapshot: a VIP (address, port, protocol) and the
//! backends and slot table behind it. It owns the invariants that tie
//! these together (every slot's backend and every backend's backendRef
//! exist, every backend is of the VIP's address family, every weight is
//! finite and not negative), so a worker can index a listener's backends
//! by the slot a flow hashed to and rewrite the packet to it without a
//! check that could fail. Listeners are built only here: from parts that are checked,
//! or from another listener with new weights. It never knows the other
//! listeners of its snapshot (their VIPs are the snapshot's to keep apart).

use std::fmt;
use std::net::IpAddr;

use super::backend::{Backend, BackendGroup, Endpoint};
use super::slots::{Slot, SlotTable, SlotTableError};
use super::traffic::{Forwarding, ListenerPolicy};
use super::ServiceKey;

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

/// Kubernetes-style `ClientIP` session affinity of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Affinity {
    /// How long a client keeps its backend after its last flow. The flat
    /// Maglev table keeps it for as long as the backends do not change;
    /// honouring it across backend changes needs an affinity table (later).
    pub timeout_secs: u32,
}

/// Why parts do not make a listener. Resolution never builds such parts;
/// hand-built ones (tests, benchmarks) and a rebuild with bad weights can.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ListenerError {
    #[error("listener {listener}: a slot table needs at least one slot")]
    EmptySlotTable { listener: String },
    #[error("listener {listener}: {len} slots; Maglev needs a prime number of slots")]
    SlotTableNotPrime { listener: String, len: usize },
    #[error(
        "listener {listener}: slot {slot} is owned by backend {backend}, but the listener has \
         {backends} backends"
    )]
    SlotOutOfRange {
        listener: String,
        slot: usize,
        backend: u32,
        backends: usize,
    },
    #[error(
        "listener {listener}: backend {endpoint} belongs to backendRef {group}, but the listener \
         has {groups} backendRefs"
    )]
    GroupOutOfRange {
        listener: String,
        endpoint: Endpoint,
        group: u32,
        groups: usize,
    },
    /// A dual-stack Service has endpoints of both families; each of its
    /// addresses (here, each VIP) reaches those of its own family only.
    #[error(
        "listener {listener}: backend {endpoint} is {} but the VIP {vip} is {}; a listener serves \
         endpoints of its VIP's family only",
        family(.endpoint.address),
        family(*.vip)
    )]
    MixedFamilies {
        listener: String,
        endpoint: Endpoint,
        vip: IpAddr,
    },
    #[error(
        "listener {listener}: backend {endpoint} has effective weight {weight}; a weight must be \
         finite and not negative"
    )]
    InvalidWeight {
        listener: String,
        endpoint: Endpoint,
        weight: f64,
    },
    #[error(
        "listener {listener}: {slots} slots given beside a built table; a listener has one table"
    )]
    TwoTables { listener: String, slots: usize },
    #[error("listener {listener}: {weights} effective weights given for {backends} backends")]
    WeightCount {
        listener: String,
        weights: usize,
        backends: usize,
    },
}

/// What a listener is made of, as `Listener::new` takes it and
/// `Listener::into_parts` gives it back.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerParts {
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
    /// Hash-indexed owners: a prime number of them (see `SlotTable`).
    pub slots: Vec<Slot>,
    /// `ClientIP` session affinity: when set, the slot is chosen by the
    /// client address alone, so every flow of a client reaches one backend.
    pub affinity: Option<Affinity>,
    /// How packets reach the backends (and answers the clients).
    pub forwarding: Forwarding,
    /// Which clients are served, and how many new flows.
    pub policy: ListenerPolicy,
}

/// A listener whose slots name its backends and whose backends name its
/// groups; see `ListenerParts` for what each part means.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Listener {
    name: ListenerName,
    route: String,
    address: IpAddr,
    port: u16,
    listener_port: u16,
    protocol: Protocol,
    groups: Vec<BackendGroup>,
    backends: Vec<Backend>,
    /// Built off the hot path so workers only index it.
    slots: SlotTable,
    affinity: Option<Affinity>,
    forwarding: Forwarding,
    policy: ListenerPolicy,
}

impl Listener {
    pub fn new(mut parts: ListenerParts) -> Result<Self, ListenerError> {
        let listener = || parts.name.to_string();
        let slots =
            SlotTable::new(std::mem::take(&mut parts.slots)).map_err(|error| match error {
                SlotTableError::Empty => ListenerError::EmptySlotTable {
                    listener: listener(),
                },
                SlotTableError::NotPrime { len } => ListenerError::SlotTableNotPrime {
                    listener: listener(),
                    len,
                },
                SlotTableError::BackendOutOfRange { slot, backend } => {
                    ListenerError::SlotOutOfRange {
                        listener: listener(),
                        slot,
                        backend,
                        backends: parts.backends.len(),
                    }
                }
            })?;
        Self::with_table(parts, slots)
    }

    /// `new` with a table built beforehand, typically by `SlotTable::maglev`
    /// over these parts' groups and backends, so that listeners and
    /// snapshots share it instead of each holding a copy. `parts.slots`
    /// must be empty: the table is `slots`.
    pub fn with_table(parts: ListenerParts, slots: SlotTable) -> Result<Self, ListenerError> {
        let listener = || parts.name.to_string();
        if !parts.slots.is_empty() {
            return Err(ListenerError::TwoTables {
                listener: listener(),
                slots: parts.slots.len(),
            });
        }
        check_parts(&parts)?;
        let stray = slots
            .iter()
            .enumerate()
            .find_map(|(slot, owner)| match owner {
                Slot::Backend(backend) if backend as usize >= parts.backends.len() => {
                    Some((slot, backend))
                }
                _ => None,
            });
        if let Some((slot, backend)) = stray {
            return Err(ListenerError::SlotOutOfRange {
                listener: listener(),
                slot,
                backend,
                backends: parts.backends.len(),
            });
        }
        Ok(Self::assemble(parts, slots))
    }

    /// The listener of parts `check_parts` accepted and a table whose
    /// slots name their backends; `ListenerPlan` builds through it.
    pub(super) fn assemble(parts: ListenerParts, slots: SlotTable) -> Self {
        let ListenerParts {
            name,
            route,
            address,
            port,
            listener_port,
            protocol,
            groups,
            backends,
            slots: _,
            affinity,
            forwarding,
            policy,
        } = parts;
        Self {
            name,
            route,
            address,
            port,
            listener_port,
            protocol,
            groups,
            backends,
            slots,
            affinity,
            forwarding,
            policy,
        }
    }

    /// The parts again, to build a changed listener through `new`.
    pub fn into_parts(self) -> ListenerParts {
        ListenerParts {
            name: self.name,
            route: self.route,
            address: self.address,
            port: self.port,
            listener_port: self.listener_port,
            protocol: self.protocol,
            groups: self.groups,
            backends: self.backends,
            slots: self.slots.to_vec(),
            affinity: self.affinity,
            forwarding: self.forwarding,
            policy: self.policy,
        }
    }

    /// This listener with backend `i`'s effective weight set to
    /// `weights[i]` and its Maglev table (same size) rebuilt with
    /// `maglev_seed`: how a drain takes a backend out of new-flow selection
    /// without touching the rest. The backends and groups stay, so every
    /// slot still names one of them. Weights a listener has had before
    /// (an undrain) get back the table still alive for them.
    pub fn with_effective_weights(
        &self,
        weights: &[f64],
        maglev_seed: u32,
    ) -> Result<Self, ListenerError> {
        self.with_overlay(weights, &[], maglev_seed)
    }

    /// `with_effective_weights`, and each backendRef `i` with `refused[i]`
    /// keeps its weight as an unavailable share (`SlotTable::maglev_refusing`).
    pub fn with_overlay(
        &self,
        weights: &[f64],
        refused: &[bool],
        maglev_seed: u32,
    ) -> Result<Self, ListenerError> {
        if weights.len() != self.backends.len() {
            return Err(ListenerError::WeightCount {
                listener: self.name.to_string(),
                weights: weights.len(),
                backends: self.backends.len(),
            });
        }
        let backends: Vec<Backend> = self
            .backends
            .iter()
            .zip(weights)
            .map(|(backend, &effective_weight)| Backend {
                effective_weight,
                ..backend.clone()
            })
            .collect();
        for backend in &backends {
            check_weight(&self.name, backend)?;
        }
        let slots = SlotTable::maglev_refusing(
            &self.groups,
            &backends,
            self.slots.size(),
            maglev_seed,
            refused,
        );
        Ok(Self {
            name: self.name.clone(),
            route: self.route.clone(),
            address: self.address,
            port: self.port,
            listener_port: self.listener_port,
            protocol: self.protocol,
            groups: self.groups.clone(),
            backends,
            slots,
            affinity: self.affinity,
            forwarding: self.forwarding.clone(),
            policy: self.policy.clone(),
        })
    }

    pub fn name(&self) -> &ListenerName {
        &self.name
    }

    /// `namespace/name` of the route whose backends this listener serves;
    /// empty when no route is attached (every slot is then `Unavailable`).
    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The port packets arrive on: the Gateway listener's port on a VIP,
    /// its node port on a node address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Gateway listener's own `port`; differs from `port` only for a
    /// node port.
    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn groups(&self) -> &[BackendGroup] {
        &self.groups
    }

    /// Every `Slot::Backend` of `slots()` indexes this.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn slots(&self) -> &SlotTable {
        &self.slots
    }

    /// `ClientIP` session affinity: when set, the slot is chosen by the
    /// client address alone, so every flow of a client reaches one backend.
    pub fn affinity(&self) -> Option<Affinity> {
        self.affinity
    }

    /// How packets reach the backends (and answers the clients).
    pub fn forwarding(&self) -> &Forwarding {
        &self.forwarding
    }

    /// Which clients are served, and how many new flows.
    pub fn policy(&self) -> &ListenerPolicy {
        &self.policy
    }

    pub fn vip(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            port: self.port,
        }
    }

    /// What a packet's destination is matched on to find this listener.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            endpoint: self.vip(),
            protocol: self.protocol,
        }
    }
}

/// `IPv4` or `IPv6`, as the Service API spells families.
fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Every invariant of `parts` but the table's: each backend's backendRef
/// exists, its family is the VIP's and its weight is finite and not
/// negative.
pub(super) fn check_parts(parts: &ListenerParts) -> Result<(), ListenerError> {
    let listener = || parts.name.to_string();
    for backend in &parts.backends {
        if backend.group as usize >= parts.groups.len() {
            return Err(ListenerError::GroupOutOfRange {
                listener: listener(),
                endpoint: backend.endpoint,
                group: backend.group,
                groups: parts.groups.len(),
            });
        }
        if backend.endpoint.address.is_ipv4() != parts.address.is_ipv4() {
            return Err(ListenerError::MixedFamilies {
                listener: listener(),
                endpoint: backend.endpoint,
                vip: parts.address,
            });
        }
        check_weight(&parts.name, backend)?;
    }
    Ok(())
}

fn check_weight(name: &ListenerName, backend: &Backend) -> Result<(), ListenerError> {
    let weight = backend.effective_weight;
    if weight.is_finite() && weight >= 0.0 {
        return Ok(());
    }
    Err(ListenerError::InvalidWeight {
        listener: name.to_string(),
        endpoint: backend.endpoint,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn endpoint(last: u8) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 2, last)),
            port: 8080,
        }
    }

    /// `demo/edge/web`: one backendRef over .21 and .22, a 3-slot table.
    fn parts() -> ListenerParts {
        ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: "web".into(),
            },
            route: "demo/web".into(),
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10)),
            port: 80,
            listener_port: 80,
            protocol: Protocol::Tcp,
            groups: vec![BackendGroup {
                service: "demo/echo".into(),
                weight: 2,
                endpoints: vec![endpoint(21), endpoint(22)],
                terminating: false,
                draining: Vec::new(),
                health_check: None,
            }],
            backends: [21, 22]
                .map(|last| Backend {
                    endpoint: endpoint(last),
                    group: 0,
                    effective_weight: 1.0,
                })
                .to_vec(),
            slots: vec![Slot::Backend(0), Slot::Backend(1), Slot::Unavailable],
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        }
    }

    #[test]
    fn a_slot_must_name_an_existing_backend() {
        let mut parts = parts();
        parts.slots = vec![Slot::Backend(0), Slot::Backend(2)];
        let error = Listener::new(parts).unwrap_err();
        assert!(matches!(
            error,
            ListenerError::SlotOutOfRange {
                slot: 1,
                backend: 2,
                backends: 2,
                ..
            }
        ));
        assert_eq!(
            error.to_string(),
            "listener demo/edge/web: slot 1 is owned by backend 2, but the listener has 2 backends"
        );
    }

    #[test]
    fn a_slot_table_has_a_prime_length() {
        let mut parts = parts();
        parts.slots = Vec::new();
        assert_eq!(
            Listener::new(parts.clone()).unwrap_err().to_string(),
            "listener demo/edge/web: a slot table needs at least one slot"
        );
        parts.slots = vec![Slot::Unavailable; 4];
        assert_eq!(
            Listener::new(parts).unwrap_err().to_string(),
            "listener demo/edge/web: 4 slots; Maglev needs a prime number of slots"
        );
    }

    #[test]
    fn a_backend_must_belong_to_an_existing_backend_ref() {
        let mut parts = parts();
        parts.backends[1].group = 1;
        assert!(matches!(
            Listener::new(parts),
            Err(ListenerError::GroupOutOfRange {
                group: 1,
                groups: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_backend_must_be_of_the_vips_family() {
        let mut parts = parts();
        parts.backends[1].endpoint.address = "fd00::22".parse().unwrap();
        parts.groups[0].endpoints[1] = parts.backends[1].endpoint;
        assert_eq!(
            Listener::new(parts).unwrap_err().to_string(),
            "listener demo/edge/web: backend [fd00::22]:8080 is IPv6 but the VIP 198.18.100.10 \
             is IPv4; a listener serves endpoints of its VIP's family only"
        );
    }

    #[test]
    fn weights_are_finite_and_not_negative() {
        for weight in [-1.0, f64::NAN, f64::INFINITY] {
            let mut parts = parts();
            parts.backends[0].effective_weight = weight;
            assert!(
                matches!(
                    Listener::new(parts),
                    Err(ListenerError::InvalidWeight { .. })
                ),
                "{weight}"
            );
        }
        let listener = Listener::new(parts()).unwrap();
        assert!(matches!(
            listener.with_effective_weights(&[1.0, -1.0], 0),
            Err(ListenerError::InvalidWeight { .. })
        ));
    }

    #[test]
    fn new_weights_rebuild_the_table_at_its_size() {
        let listener = Listener::new(parts()).unwrap();
        let drained = listener.with_effective_weights(&[0.0, 1.0], 7).unwrap();
        assert_eq!(drained.slots().size().get(), 3);
        assert!(drained.slots().iter().all(|s| s == Slot::Backend(1)));
        assert_eq!(drained.backends()[0].effective_weight, 0.0);
        assert_eq!(
            (drained.name(), drained.key()),
            (listener.name(), listener.key())
        );
        assert!(matches!(
            listener.with_effective_weights(&[1.0], 7),
            Err(ListenerError::WeightCount {
                weights: 1,
                backends: 2,
                ..
            })
        ));
    }

    #[test]
    fn parts_round_trip() {
        let listener = Listener::new(parts()).unwrap();
        assert_eq!(listener.clone().into_parts(), parts());
        assert_eq!(Listener::new(listener.clone().into_parts()), Ok(listener));
    }
}
