//! Draining backends: an operator takes a backend out of new-flow selection
//! (`yardctl drain`) while its established flows continue.
//!
//! A drain is kept as intent, beside the config: the published snapshot is
//! always the compiled config with the drains applied, so a reload keeps
//! them and an undrain restores the compiled weights exactly. Applying a
//! drain gives the backend effective weight 0 and rebuilds the listener's
//! Maglev table without it; workers keep established flows because
//! `carry_over` only asks that the backend still be in the listener, and
//! the affinity table already refuses weight-0 backends. This module never
//! touches the XDP maps itself (a drain changes no VIP and no backend
//! endpoint); a [`PublishHook`] tells the flow cache about each swap.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use switchyard_config::snapshot::{
    Backend, BackendGroup, Endpoint, Listener, ListenerError, Snapshot, SnapshotError,
    WhenAllUnhealthy,
};
use switchyard_dataplane::fast_path::FastPath;

use crate::health::{Health, Monitor, Target};

/// One drain: `endpoint` on the listener named `listener`
/// (`namespace/gateway/listener`), or on every listener when `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Drain {
    pub listener: Option<String>,
    pub endpoint: Endpoint,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DrainError {
    #[error("invalid backend {0:?}: expected address:port, e.g. 198.18.2.21:8080")]
    BadEndpoint(String),
    #[error("no listener is named {0:?} (see `yardctl listeners`)")]
    UnknownListener(String),
    #[error("no listener has backend {endpoint}{} (see `yardctl backends`)", on(.listener))]
    UnknownBackend {
        endpoint: Endpoint,
        listener: Option<String>,
    },
    #[error("backend {endpoint} is not drained{}", on(.listener))]
    NotDrained {
        endpoint: Endpoint,
        listener: Option<String>,
    },
    #[error("backend {endpoint} is drained on every listener; undrain it without --listener")]
    DrainedEverywhere { endpoint: Endpoint },
    /// The drains cannot be applied to the config; `apply` only asks for
    /// what a valid snapshot allows, so this is a bug, refused rather than
    /// published.
    #[error("the drains cannot be applied: {0}")]
    Rebuild(#[from] ListenerError),
    #[error("the drains cannot be applied: {0}")]
    Republish(#[from] SnapshotError),
}

fn on(listener: &Option<String>) -> String {
    listener
        .as_ref()
        .map(|l| format!(" on listener {l}"))
        .unwrap_or_default()
}

/// Parses `address:port` as `yardctl drain` takes it.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, DrainError> {
    text.parse::<SocketAddr>()
        .map(|a| Endpoint {
            address: a.ip(),
            port: a.port(),
        })
        .map_err(|_| DrainError::BadEndpoint(text.to_owned()))
}

/// Whether `drains` take `endpoint` out of `listener`.
pub fn is_drained(drains: &BTreeSet<Drain>, listener: &Listener, endpoint: &Endpoint) -> bool {
    drains.iter().any(|d| {
        d.endpoint == *endpoint
            && d.listener
                .as_ref()
                .is_none_or(|name| *name == listener.name().to_string())
    })
}

/// What `yardctl backends` calls a backend's state, `STATE_*` in
/// `switchyard_proto`: drained by the operator is `draining` whatever the
/// endpoint says; one its health check (`health`) takes out is
/// `unhealthy`, or `fail-open` while its backendRef serves it anyway
/// (every endpoint failing, `WhenAllUnhealthy::FailOpen`); a terminating
/// endpoint is `terminating` (it still owns its slots and takes new flows,
/// as kube-proxy keeps using serving, terminating endpoints while none is
/// ready); any other endpoint without weight (a backendRef of weight 0) is
/// `draining`; else `ready`.
pub fn backend_state(
    snapshot: &Snapshot,
    drains: &BTreeSet<Drain>,
    listener: &Listener,
    backend: &Backend,
    health: Option<Health>,
) -> &'static str {
    use switchyard_proto::{STATE_FAIL_OPEN, STATE_UNHEALTHY};
    let out_for_health = health.is_some_and(|h| !h.serving());
    if out_for_health && !is_drained(drains, listener, &backend.endpoint) {
        return if backend.effective_weight > 0.0 {
            STATE_FAIL_OPEN
        } else {
            STATE_UNHEALTHY
        };
    }
    let terminating = snapshot.is_terminating(&backend.endpoint);
    state_of(terminating, drains, listener, backend)
}

/// `backend_state` with the endpoint's terminating state given, for a
/// listener of a snapshot not built yet (`config diff`).
pub fn state_of(
    terminating: bool,
    drains: &BTreeSet<Drain>,
    listener: &Listener,
    backend: &Backend,
) -> &'static str {
    use switchyard_proto::{STATE_DRAINING, STATE_READY, STATE_TERMINATING};
    if is_drained(drains, listener, &backend.endpoint) {
        STATE_DRAINING
    } else if terminating {
        STATE_TERMINATING
    } else if backend.effective_weight <= 0.0 {
        STATE_DRAINING
    } else {
        STATE_READY
    }
}

/// `snapshot` as generation `generation` with `drains` applied: every
/// drained backend gets effective weight 0, the other endpoints of its
/// backendRef share the backendRef's weight, and the listener's Maglev
/// table (same size, `maglev_seed`) is rebuilt. A backendRef whose
/// endpoints are all drained gives its share to the other backendRefs: a
/// drain is the operator's choice, not a missing backend to refuse flows
/// for. Listeners without a drained backend are copied unchanged.
pub fn apply(
    snapshot: &Snapshot,
    drains: &BTreeSet<Drain>,
    generation: u64,
    maglev_seed: u32,
) -> Result<Snapshot, DrainError> {
    overlay(snapshot, drains, &BTreeSet::new(), generation, maglev_seed)
}

/// `apply`, and the endpoints whose health checks failed (`unhealthy`)
/// are taken out as drained ones are, except when every endpoint of a
/// backendRef that is not drained is unhealthy: its check's
/// `WhenAllUnhealthy` then serves them all (`FailOpen`) or refuses the
/// backendRef's share (`Refuse`).
pub fn overlay(
    snapshot: &Snapshot,
    drains: &BTreeSet<Drain>,
    unhealthy: &BTreeSet<Target>,
    generation: u64,
    maglev_seed: u32,
) -> Result<Snapshot, DrainError> {
    let listeners = snapshot
        .listeners()
        .iter()
        .map(|listener| overlay_listener(listener, drains, unhealthy, maglev_seed))
        .collect::<Result<Vec<Listener>, _>>()?;
    Ok(Snapshot::new(generation, listeners)?
        .with_dns(snapshot.dns().to_vec())
        .with_terminating(snapshot.terminating())
        .with_announcements(snapshot.announcements().to_vec()))
}

/// Whether health checks take `endpoint` of `group` out.
pub fn is_unhealthy(
    unhealthy: &BTreeSet<Target>,
    group: &BackendGroup,
    endpoint: Endpoint,
) -> bool {
    !unhealthy.is_empty()
        && group.health_check.as_ref().is_some_and(|check| {
            unhealthy.contains(&Target {
                endpoint,
                check: check.clone(),
            })
        })
}

/// `overlay` to one listener: a copy (sharing its table) when none of its
/// backends is drained or unhealthy.
pub fn overlay_listener(
    listener: &Listener,
    drains: &BTreeSet<Drain>,
    unhealthy: &BTreeSet<Target>,
    maglev_seed: u32,
) -> Result<Listener, DrainError> {
    let backends = listener.backends();
    let drained: Vec<bool> = backends
        .iter()
        .map(|b| is_drained(drains, listener, &b.endpoint))
        .collect();
    let any_unhealthy = listener
        .groups()
        .iter()
        .any(|g| g.endpoints.iter().any(|e| is_unhealthy(unhealthy, g, *e)));
    if !drained.contains(&true) && !any_unhealthy {
        return Ok(listener.clone());
    }
    let mut weights = vec![0.0; backends.len()];
    let mut refused = vec![false; listener.groups().len()];
    for (index, group) in listener.groups().iter().enumerate() {
        let members: Vec<(usize, bool)> = group
            .endpoints
            .iter()
            .filter_map(|e| {
                let i = backends.iter().position(|b| b.endpoint == *e)?;
                (!drained[i]).then(|| (i, is_unhealthy(unhealthy, group, *e)))
            })
            .collect();
        let healthy: Vec<usize> = members
            .iter()
            .filter(|(_, sick)| !sick)
            .map(|(i, _)| *i)
            .collect();
        let serving = match group.health_check.as_deref() {
            Some(check) if healthy.is_empty() && !members.is_empty() => {
                match check.when_all_unhealthy {
                    WhenAllUnhealthy::FailOpen => members.iter().map(|(i, _)| *i).collect(),
                    WhenAllUnhealthy::Refuse => {
                        refused[index] = true;
                        Vec::new()
                    }
                }
            }
            _ => healthy,
        };
        for &i in &serving {
            weights[i] += f64::from(group.weight) / serving.len() as f64;
        }
    }
    Ok(listener.with_overlay(&weights, &refused, maglev_seed)?)
}

/// What must happen around every snapshot swap, beside the swap itself
/// (the XDP flow cache's stats slots and generation).
pub trait PublishHook: Send + Sync {
    /// Before `next` becomes visible to the workers.
    fn before(&self, next: &Arc<Snapshot>);
    /// Right after it did.
    fn after(&self, next: &Snapshot);
}

impl PublishHook for FastPath {
    fn before(&self, next: &Arc<Snapshot>) {
        self.prepare(next);
    }

    fn after(&self, next: &Snapshot) {
        self.published(next);
    }
}

/// Publishes snapshots: the compiled config with the drains and health
/// verdicts applied. The reloader, the control socket and the health
/// monitor all publish through it, under one lock, so none overwrites
/// another's change.
pub struct Publisher {
    config: Arc<ArcSwap<Snapshot>>,
    maglev_seed: u32,
    state: Mutex<State>,
    hooks: Vec<Arc<dyn PublishHook>>,
    health: Option<Arc<Monitor>>,
}

struct State {
    /// The compiled config, without drains.
    compiled: Arc<Snapshot>,
    drains: BTreeSet<Drain>,
    /// The targets the published snapshot takes out for their health.
    unhealthy: BTreeSet<Target>,
}

/// What a drain or undrain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Names of the listeners whose backend it is.
    pub listeners: Vec<String>,
    /// Generation of the snapshot that carries it.
    pub generation: u64,
    /// False when it was in force already: nothing was published.
    pub changed: bool,
}

impl Publisher {
    /// Takes over `config`, whose current snapshot is the compiled config.
    pub fn new(config: Arc<ArcSwap<Snapshot>>, maglev_seed: u32) -> Self {
        let compiled = config.load_full();
        Self {
            config,
            maglev_seed,
            state: Mutex::new(State {
                compiled,
                drains: BTreeSet::new(),
                unhealthy: BTreeSet::new(),
            }),
            hooks: Vec::new(),
            health: None,
        }
    }

    /// Probes the compiled config's health-checked endpoints with
    /// `monitor` from now on (the current snapshot's at once), and applies
    /// its verdicts whenever `health_changed` is called.
    pub fn with_health(mut self, monitor: Arc<Monitor>) -> Self {
        monitor.set_targets(crate::health::targets(&self.lock().compiled));
        self.health = Some(monitor);
        self
    }

    /// The monitor probing the endpoints, if health checks run.
    pub fn health(&self) -> Option<&Arc<Monitor>> {
        self.health.as_ref()
    }

    /// The compiled config, before drains and health verdicts: what
    /// `yardctl explain` compares a choice with.
    pub fn compiled(&self) -> Arc<Snapshot> {
        self.lock().compiled.clone()
    }

    /// The targets taken out for their health in the published snapshot.
    pub fn unhealthy(&self) -> BTreeSet<Target> {
        self.lock().unhealthy.clone()
    }

    /// What the monitor says is not serving now.
    fn verdicts(&self) -> BTreeSet<Target> {
        self.health.as_ref().map_or_else(BTreeSet::new, |monitor| {
            monitor
                .observations()
                .into_iter()
                .filter(|(_, observation)| !observation.health.serving())
                .map(|(target, _)| target)
                .collect()
        })
    }

    /// Republishes when the monitor's verdicts differ from the published
    /// ones, as the next generation; returns it, or `None` when nothing
    /// changed. Established flows to an endpoint taken out continue: the
    /// backend stays in its listener with weight 0.
    pub fn health_changed(&self) -> Result<Option<u64>, DrainError> {
        let mut state = self.lock();
        let unhealthy = self.verdicts();
        if unhealthy == state.unhealthy {
            return Ok(None);
        }
        let next = self.config.load().generation() + 1;
        let generation = self.republish(&state.compiled, &state.drains, &unhealthy, next)?;
        state.unhealthy = unhealthy;
        Ok(Some(generation))
    }

    /// Runs `hook` around every publication from now on, after the hooks
    /// given before; the current snapshot is the caller's to hand it.
    pub fn with_hook(mut self, hook: Arc<dyn PublishHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update replaces whole values: a panic elsewhere cannot leave
        // the state half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a newly compiled config with the drains applied, as the
    /// next generation (never below the one it was compiled as). Returns
    /// the generation published; on error nothing is.
    pub fn publish_config(&self, compiled: Snapshot) -> Result<u64, DrainError> {
        let mut state = self.lock();
        let generation = compiled
            .generation()
            .max(self.config.load().generation() + 1);
        if let Some(monitor) = &self.health {
            // Kept targets keep their verdicts, so a reload neither
            // forgets a dead backend nor waits for it to fail again.
            monitor.set_targets(crate::health::targets(&compiled));
        }
        let unhealthy = self.verdicts();
        self.republish(&compiled, &state.drains, &unhealthy, generation)?;
        state.compiled = Arc::new(compiled);
        state.unhealthy = unhealthy;
        Ok(generation)
    }

    /// Publishes `compiled` with `drains` and `unhealthy` applied; the
    /// caller keeps them in its state only once this succeeded.
    fn republish(
        &self,
        compiled: &Snapshot,
        drains: &BTreeSet<Drain>,
        unhealthy: &BTreeSet<Target>,
        generation: u64,
    ) -> Result<u64, DrainError> {
        let next = Arc::new(overlay(
            compiled,
            drains,
            unhealthy,
            generation,
            self.maglev_seed,
        )?);
        for hook in &self.hooks {
            hook.before(&next);
        }
        self.config.store(next.clone());
        for hook in &self.hooks {
            hook.after(&next);
        }
        Ok(generation)
    }

    /// The drains in force.
    pub fn drains(&self) -> BTreeSet<Drain> {
        self.lock().drains.clone()
    }

    /// Drains `endpoint` on `listener`, or on every listener that has it.
    pub fn drain(
        &self,
        endpoint: Endpoint,
        listener: Option<String>,
    ) -> Result<DrainOutcome, DrainError> {
        let mut state = self.lock();
        let listeners = owners(&state.compiled, &endpoint, listener.as_deref())?;
        let everywhere = Drain {
            listener: None,
            endpoint,
        };
        let drain = Drain { listener, endpoint };
        // Draining again changes nothing, so it publishes nothing: a new
        // generation would send cached flows back to the workers for no
        // reason.
        if state.drains.contains(&drain) || state.drains.contains(&everywhere) {
            return Ok(DrainOutcome {
                listeners,
                generation: self.config.load().generation(),
                changed: false,
            });
        }
        let mut drains = state.drains.clone();
        drains.insert(drain);
        let next = self.config.load().generation() + 1;
        let generation = self.republish(&state.compiled, &drains, &state.unhealthy, next)?;
        state.drains = drains;
        Ok(DrainOutcome {
            listeners,
            generation,
            changed: true,
        })
    }

    /// Lifts a drain. Without `listener`, every drain of `endpoint`.
    pub fn undrain(
        &self,
        endpoint: Endpoint,
        listener: Option<String>,
    ) -> Result<DrainOutcome, DrainError> {
        let mut state = self.lock();
        let mut drains = state.drains.clone();
        match &listener {
            None => drains.retain(|d| d.endpoint != endpoint),
            Some(_) => {
                let everywhere = Drain {
                    listener: None,
                    endpoint,
                };
                if drains.contains(&everywhere) {
                    return Err(DrainError::DrainedEverywhere { endpoint });
                }
                drains.remove(&Drain {
                    listener: listener.clone(),
                    endpoint,
                });
            }
        }
        if drains.len() == state.drains.len() {
            return Err(DrainError::NotDrained { endpoint, listener });
        }
        // A backend the config no longer has can still be undrained.
        let listeners = owners(&state.compiled, &endpoint, listener.as_deref()).unwrap_or_default();
        let next = self.config.load().generation() + 1;
        let generation = self.republish(&state.compiled, &drains, &state.unhealthy, next)?;
        state.drains = drains;
        Ok(DrainOutcome {
            listeners,
            generation,
            changed: true,
        })
    }
}

/// Names of the listeners (all, or the one named) that have `endpoint`.
fn owners(
    snapshot: &Snapshot,
    endpoint: &Endpoint,
    listener: Option<&str>,
) -> Result<Vec<String>, DrainError> {
    if let Some(name) = listener {
        if snapshot.find_listener(name).is_none() {
            return Err(DrainError::UnknownListener(name.to_owned()));
        }
    }
    let mut names: Vec<String> = snapshot
        .listeners()
        .iter()
        .filter(|l| listener.is_none_or(|name| l.name().to_string() == name))
        .filter(|l| l.backends().iter().any(|b| b.endpoint == *endpoint))
        .map(|l| l.name().to_string())
        .collect();
    names.dedup();
    if names.is_empty() {
        return Err(DrainError::UnknownBackend {
            endpoint: *endpoint,
            listener: listener.map(str::to_owned),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use switchyard_config::snapshot::{
        BackendGroup, HealthCheck, ListenerName, ListenerParts, Probe, Protocol, Slot, SlotTable,
        SlotTableSize,
    };

    use super::*;

    const SIZE: usize = 251;

    fn endpoint(last: u8) -> Endpoint {
        Endpoint {
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 2, last)),
            port: 8080,
        }
    }

    /// `demo/edge/<name>`: backendRef demo/a (weight 2, endpoints .21 and
    /// .22) and demo/b (weight 1, endpoint .23), table built as resolution
    /// builds it.
    fn listener(name: &str, port: u16) -> Listener {
        let groups = vec![
            BackendGroup {
                terminating: false,
                draining: Vec::new(),
                health_check: None,
                service: "demo/a".into(),
                weight: 2,
                endpoints: vec![endpoint(21), endpoint(22)],
            },
            BackendGroup {
                terminating: false,
                draining: Vec::new(),
                health_check: None,
                service: "demo/b".into(),
                weight: 1,
                endpoints: vec![endpoint(23)],
            },
        ];
        let backends = vec![
            Backend {
                endpoint: endpoint(21),
                group: 0,
                effective_weight: 1.0,
            },
            Backend {
                endpoint: endpoint(22),
                group: 0,
                effective_weight: 1.0,
            },
            Backend {
                endpoint: endpoint(23),
                group: 1,
                effective_weight: 1.0,
            },
        ];
        let size = SlotTableSize::new(SIZE).unwrap();
        let slots = SlotTable::maglev(&groups, &backends, size, 9).to_vec();
        Listener::new(ListenerParts {
            name: ListenerName {
                namespace: "demo".into(),
                gateway: "edge".into(),
                listener: name.into(),
            },
            route: "demo/web".into(),
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 100, 10)),
            port,
            listener_port: port,
            protocol: Protocol::Tcp,
            groups,
            backends,
            slots,
            affinity: None,
            forwarding: Default::default(),
            policy: Default::default(),
        })
        .unwrap()
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(4, vec![listener("web", 80), listener("alt", 81)]).unwrap()
    }

    fn slots_of(listener: &Listener, backend: u32) -> usize {
        listener
            .slots()
            .iter()
            .filter(|s| *s == Slot::Backend(backend))
            .count()
    }

    fn drains(list: &[(Option<&str>, Endpoint)]) -> BTreeSet<Drain> {
        list.iter()
            .map(|(l, e)| Drain {
                listener: l.map(str::to_owned),
                endpoint: *e,
            })
            .collect()
    }

    #[test]
    fn a_drained_backend_owns_no_slot_and_its_group_mate_takes_the_group_weight() {
        let drained = apply(&snapshot(), &drains(&[(None, endpoint(21))]), 5, 9).unwrap();
        assert_eq!(drained.generation(), 5);
        for l in drained.listeners() {
            assert_eq!(slots_of(l, 0), 0);
            let weights: Vec<f64> = l.backends().iter().map(|b| b.effective_weight).collect();
            assert_eq!(weights, [0.0, 2.0, 1.0]);
            // Shares stay 2:1 between the backendRefs.
            assert!(slots_of(l, 1).abs_diff(2 * SIZE / 3) <= 1);
            assert_eq!(slots_of(l, 1) + slots_of(l, 2), SIZE);
        }
    }

    #[test]
    fn a_drain_on_one_listener_leaves_the_others_untouched() {
        let original = snapshot();
        let drained = apply(
            &original,
            &drains(&[(Some("demo/edge/alt"), endpoint(23))]),
            5,
            9,
        )
        .unwrap();
        assert_eq!(drained.listeners()[0], original.listeners()[0]);
        assert_eq!(slots_of(&drained.listeners()[1], 2), 0);
        assert_eq!(
            slots_of(&drained.listeners()[1], 0) + slots_of(&drained.listeners()[1], 1),
            SIZE
        );
    }

    #[test]
    fn a_fully_drained_backend_ref_gives_its_share_to_the_others() {
        let drained = apply(&snapshot(), &drains(&[(None, endpoint(23))]), 5, 9).unwrap();
        let l = &drained.listeners()[0];
        assert_eq!(slots_of(l, 2), 0);
        assert!(!l.slots().contains(Slot::Unavailable));
    }

    #[test]
    fn draining_every_backend_leaves_every_slot_unavailable() {
        let all = drains(&[
            (None, endpoint(21)),
            (None, endpoint(22)),
            (None, endpoint(23)),
        ]);
        let drained = apply(&snapshot(), &all, 5, 9).unwrap();
        assert!(drained.listeners()[0]
            .slots()
            .iter()
            .all(|s| s == Slot::Unavailable));
    }

    #[test]
    fn applying_no_drains_rebuilds_nothing() {
        let original = snapshot();
        let same = apply(&original, &BTreeSet::new(), 5, 9).unwrap();
        assert_eq!(same.listeners(), original.listeners());
    }

    #[test]
    fn undrain_restores_the_compiled_table_and_every_change_bumps_the_generation() {
        let original = snapshot();
        let config = Arc::new(ArcSwap::from_pointee(original.clone()));
        let publisher = Publisher::new(config.clone(), 9);
        let outcome = publisher.drain(endpoint(22), None).unwrap();
        assert_eq!(outcome.listeners, ["demo/edge/web", "demo/edge/alt"]);
        assert_eq!(outcome.generation, 5);
        assert_eq!(config.load().generation(), 5);
        assert_eq!(slots_of(&config.load().listeners()[0], 1), 0);
        let outcome = publisher.undrain(endpoint(22), None).unwrap();
        assert_eq!(outcome.generation, 6);
        assert_eq!(config.load().listeners(), original.listeners());
    }

    #[test]
    fn draining_a_drained_backend_publishes_nothing() {
        let config = Arc::new(ArcSwap::from_pointee(snapshot()));
        let publisher = Publisher::new(config.clone(), 9);
        let first = publisher.drain(endpoint(22), None).unwrap();
        assert!(first.changed);
        let running = config.load_full();
        for listener in [None, Some("demo/edge/web".to_owned())] {
            let again = publisher.drain(endpoint(22), listener).unwrap();
            assert_eq!((again.changed, again.generation), (false, first.generation));
            assert!(Arc::ptr_eq(&config.load_full(), &running), "republished");
        }
        let on_one = publisher.drain(endpoint(21), Some("demo/edge/web".into()));
        assert!(on_one.unwrap().changed);
        let again = publisher.drain(endpoint(21), Some("demo/edge/web".into()));
        assert!(!again.unwrap().changed);
        assert_eq!(config.load().generation(), first.generation + 1);
    }

    #[test]
    fn drains_survive_a_new_config() {
        let config = Arc::new(ArcSwap::from_pointee(snapshot()));
        let publisher = Publisher::new(config.clone(), 9);
        publisher.drain(endpoint(21), None).unwrap();
        let generation = publisher
            .publish_config(Snapshot::new(5, vec![listener("web", 80)]).unwrap())
            .unwrap();
        assert_eq!(generation, 6, "after the drain's generation 5");
        let running = config.load();
        assert_eq!(running.generation(), 6);
        assert_eq!(slots_of(&running.listeners()[0], 0), 0);
        assert_eq!(running.listeners()[0].backends()[0].effective_weight, 0.0);
    }

    #[test]
    fn draining_an_unknown_backend_or_listener_is_refused() {
        let config = Arc::new(ArcSwap::from_pointee(snapshot()));
        let publisher = Publisher::new(config.clone(), 9);
        let err = publisher.drain(endpoint(99), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no listener has backend 198.18.2.99:8080 (see `yardctl backends`)"
        );
        assert!(matches!(
            publisher.drain(endpoint(21), Some("demo/edge/nope".into())),
            Err(DrainError::UnknownListener(_))
        ));
        assert!(matches!(
            publisher.undrain(endpoint(21), None),
            Err(DrainError::NotDrained { .. })
        ));
        assert_eq!(config.load().generation(), 4, "nothing published");
    }

    #[test]
    fn a_drain_everywhere_is_not_lifted_for_one_listener() {
        let config = Arc::new(ArcSwap::from_pointee(snapshot()));
        let publisher = Publisher::new(config, 9);
        publisher.drain(endpoint(21), None).unwrap();
        assert_eq!(
            publisher.undrain(endpoint(21), Some("demo/edge/web".into())),
            Err(DrainError::DrainedEverywhere {
                endpoint: endpoint(21)
            })
        );
        publisher
            .drain(endpoint(22), Some("demo/edge/web".into()))
            .unwrap();
        publisher
            .undrain(endpoint(22), Some("demo/edge/web".into()))
            .unwrap();
        assert_eq!(publisher.drains().len(), 1);
    }

    fn check(when_all_unhealthy: WhenAllUnhealthy) -> Arc<HealthCheck> {
        Arc::new(HealthCheck {
            policy: "demo/hc".into(),
            probe: Probe::Tcp {
                send: Vec::new(),
                receive: Vec::new(),
            },
            port: None,
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            when_all_unhealthy,
        })
    }

    /// `snapshot()` with `check` on every backendRef.
    fn checked(check: &Arc<HealthCheck>) -> Snapshot {
        let listeners = snapshot()
            .listeners()
            .iter()
            .map(|l| {
                let mut parts = l.clone().into_parts();
                for group in &mut parts.groups {
                    group.health_check = Some(check.clone());
                }
                Listener::new(parts).unwrap()
            })
            .collect();
        Snapshot::new(4, listeners).unwrap()
    }

    fn sick(check: &Arc<HealthCheck>, lasts: &[u8]) -> BTreeSet<Target> {
        lasts
            .iter()
            .map(|&last| Target {
                endpoint: endpoint(last),
                check: check.clone(),
            })
            .collect()
    }

    #[test]
    fn an_unhealthy_backend_owns_no_slot_and_keeps_its_place_in_the_listener() {
        let check = check(WhenAllUnhealthy::FailOpen);
        let out = overlay(
            &checked(&check),
            &BTreeSet::new(),
            &sick(&check, &[21]),
            5,
            9,
        )
        .unwrap();
        for l in out.listeners() {
            assert_eq!(slots_of(l, 0), 0);
            assert_eq!(l.backends().len(), 3, "established flows need it listed");
            let weights: Vec<f64> = l.backends().iter().map(|b| b.effective_weight).collect();
            assert_eq!(weights, [0.0, 2.0, 1.0]);
        }
    }

    #[test]
    fn a_check_of_another_shape_or_an_unchecked_group_takes_nothing_out() {
        let check = check(WhenAllUnhealthy::FailOpen);
        let other = Arc::new(HealthCheck {
            port: Some(9),
            ..(*check).clone()
        });
        let original = checked(&check);
        let out = overlay(&original, &BTreeSet::new(), &sick(&other, &[21]), 5, 9).unwrap();
        assert_eq!(out.listeners(), original.listeners());
        let plain = overlay(&snapshot(), &BTreeSet::new(), &sick(&check, &[21]), 5, 9).unwrap();
        assert_eq!(plain.listeners(), snapshot().listeners());
    }

    #[test]
    fn a_backend_ref_all_unhealthy_fails_open_by_default() {
        let check = check(WhenAllUnhealthy::FailOpen);
        let original = checked(&check);
        let out = overlay(&original, &BTreeSet::new(), &sick(&check, &[23]), 5, 9).unwrap();
        assert_eq!(out.listeners(), original.listeners());
        // One of its two endpoints alive: that one takes the whole share.
        let out = overlay(
            &original,
            &BTreeSet::new(),
            &sick(&check, &[21, 22, 23]),
            5,
            9,
        )
        .unwrap();
        assert_eq!(out.listeners(), original.listeners());
    }

    #[test]
    fn a_backend_ref_all_unhealthy_refuses_its_share_when_its_check_says_so() {
        let check = check(WhenAllUnhealthy::Refuse);
        let out = overlay(
            &checked(&check),
            &BTreeSet::new(),
            &sick(&check, &[23]),
            5,
            9,
        )
        .unwrap();
        let l = &out.listeners()[0];
        assert_eq!(slots_of(l, 2), 0);
        let refused = l.slots().iter().filter(|s| *s == Slot::Unavailable).count();
        assert!(refused.abs_diff(SIZE / 3) <= 1, "{refused} slots refused");
        assert!(slots_of(l, 0).abs_diff(SIZE / 3) <= 1);
    }

    #[test]
    fn a_drained_backend_stays_out_whatever_its_health_and_counts_for_fail_open() {
        let check = check(WhenAllUnhealthy::FailOpen);
        // .21 drained, .22 unhealthy: the backendRef has no healthy
        // endpoint left that is not drained, so it fails open on .22 alone.
        let out = overlay(
            &checked(&check),
            &drains(&[(None, endpoint(21))]),
            &sick(&check, &[22]),
            5,
            9,
        )
        .unwrap();
        let weights: Vec<f64> = out.listeners()[0]
            .backends()
            .iter()
            .map(|b| b.effective_weight)
            .collect();
        assert_eq!(weights, [0.0, 2.0, 1.0]);
    }

    #[test]
    fn endpoints_parse_as_address_and_port() {
        assert_eq!(parse_endpoint("198.18.2.21:8080"), Ok(endpoint(21)));
        assert!(parse_endpoint("198.18.2.21").is_err());
    }
}
