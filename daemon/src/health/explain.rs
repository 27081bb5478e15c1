//! What health checks add to `yardctl explain`: the backend a new flow
//! would have had without them, when it was skipped for failing its check,
//! and why a share is refused or served although unhealthy.

use std::collections::BTreeMap;

use switchyard_config::snapshot::{BackendGroup, Endpoint, Listener, Snapshot, WhenAllUnhealthy};
use switchyard_dataplane::packet::FlowKey;
use switchyard_dataplane::worker;
use switchyard_proto::{ExplainReport, SkippedBackend};

use super::{Observation, Target};

/// Adds health's part to `report`, which `published` decided: the slot's
/// owner in `compiled` (the config before drains and health) when that
/// owner is out for its health, and the fail-open or refused state of the
/// backendRef the flow lands in.
pub fn annotate(
    report: &mut ExplainReport,
    compiled: &Snapshot,
    published: &Snapshot,
    observations: &BTreeMap<Target, Observation>,
    key: &FlowKey,
    hash_seed: u32,
) {
    if observations.is_empty() || report.new_flow.affinity_entry.is_some() {
        return;
    }
    let observed = |listener: &Listener, backend: u32| {
        let backend = listener.backends().get(backend as usize)?;
        let group = listener.groups().get(backend.group as usize)?;
        observation(observations, group, backend.endpoint).map(|o| (backend.endpoint, o))
    };
    let Ok(now) = worker::choose(published, key, hash_seed) else {
        return;
    };
    let new = &mut report.new_flow;
    if let Some((endpoint, o)) = now.backend.and_then(|b| observed(now.listener.get(), b)) {
        if !o.health.serving() {
            new.reason.push_str(&format!(
                "; {endpoint} is {} ({}), but so is every endpoint of its backendRef, whose \
                 check fails open (whenAllUnhealthy: FailOpen) and serves them all",
                o.health.name(),
                o.reason
            ));
        }
    }
    if let Ok(before) = worker::choose(compiled, key, hash_seed) {
        let skipped = before
            .backend
            .and_then(|b| observed(before.listener.get(), b))
            .filter(|(endpoint, o)| {
                !o.health.serving() && new.backend.as_deref() != Some(&endpoint.to_string())
            });
        if let Some((endpoint, o)) = skipped {
            new.reason.push_str(&format!(
                "; in the config this slot is {endpoint}'s, which is {} ({}), so health \
                 checks gave it to another backend",
                o.health.name(),
                o.reason
            ));
            new.skipped = Some(SkippedBackend {
                backend: endpoint.to_string(),
                health: o.health.name().to_owned(),
                reason: o.reason.clone(),
            });
        }
    }
    if now.backend.is_none() {
        let listener = now.listener.get();
        let refused: Vec<&str> = listener
            .groups()
            .iter()
            .filter(|g| {
                g.health_check
                    .as_ref()
                    .is_some_and(|c| c.when_all_unhealthy == WhenAllUnhealthy::Refuse)
                    && !g.endpoints.is_empty()
                    && g.endpoints.iter().all(|e| {
                        observation(observations, g, *e).is_some_and(|o| !o.health.serving())
                    })
            })
            .map(|g| g.service.as_str())
            .collect();
        if !refused.is_empty() {
            new.reason = format!(
                "{}; every endpoint of backendRef {} fails its health check, whose \
                 whenAllUnhealthy: Refuse refuses the backendRef's share",
                new.reason,
                refused.join(" and ")
            );
        }
    }
}

/// What the monitor knows of `endpoint` as `group` checks it.
fn observation<'o>(
    observations: &'o BTreeMap<Target, Observation>,
    group: &BackendGroup,
    endpoint: Endpoint,
) -> Option<&'o Observation> {
    observations.get(&Target {
        endpoint,
        check: group.health_check.clone()?,
    })
}
