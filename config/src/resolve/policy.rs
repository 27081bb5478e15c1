//! Switchyard's `TrafficPolicy` (GEP-713 direct policy attachment): which
//! policy sets the Maglev table size of each listener. A policy applies to
//! objects in its own namespace; a targetRef with a sectionName (a listener
//! name) is more specific than one naming the whole Gateway and overrides
//! it. Between policies equally specific, the oldest wins, then the first
//! by namespace/name (Gateway API's conflict rule); the others are
//! `Conflicted` there. Policies setting nothing a target can use still have
//! their targets checked, so a typo is reported before it matters.

use std::collections::HashMap;

use super::gateways::GatewayView;
use super::{Diagnostic, Index, Reason};
use crate::resources::TrafficPolicy;

/// Below this many slots per backend, Maglev's promise that a backend
/// change moves few other flows weakens (the paper's M >= 100 N).
pub(super) const SLOTS_PER_BACKEND: usize = 100;

/// The table size a policy sets on one listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableSize<'a> {
    pub size: usize,
    pub policy: &'a TrafficPolicy,
}

/// Per `(gateway, listener)` position in `gateways`: the winning policy's
/// table size. Listeners without one keep `SLOT_TABLE_SIZE`.
pub(super) fn table_sizes<'a>(
    index: &Index<'a>,
    gateways: &[GatewayView<'a>],
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<(usize, usize), TableSize<'a>> {
    let position: HashMap<(&str, &str), usize> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let m = &g.gateway.metadata;
            ((m.namespace.as_str(), m.name.as_str()), i)
        })
        .collect();

    // (listener) -> (section-specific?, rank in `index.policies`), where
    // rank orders policies oldest first.
    let mut candidates: HashMap<(usize, usize), Vec<(bool, usize)>> = HashMap::new();
    for (rank, policy) in index.policies.iter().enumerate() {
        let meta = &policy.metadata;
        let sets_size = policy
            .spec
            .maglev
            .as_ref()
            .and_then(|m| m.table_size)
            .is_some();
        let diagnostic = |reason, message: String| {
            Diagnostic::new(
                "TrafficPolicy",
                &meta.namespace,
                &meta.name,
                reason,
                message,
            )
        };
        for target in &policy.spec.target_refs {
            if !target.is_gateway() {
                diagnostics.push(diagnostic(
                    Reason::Invalid,
                    format!(
                        "targetRef {} {:?} (group {:?}): no TrafficPolicy setting applies to this \
                         kind; spec.maglev applies to Gateways (group gateway.networking.k8s.io)",
                        target.kind, target.name, target.group
                    ),
                ));
                continue;
            }
            let key = (meta.namespace.as_str(), target.name.as_str());
            let Some(&g) = position.get(&key) else {
                let why = if index.gateways.contains_key(&key) {
                    "is not Switchyard's: its GatewayClass names another controller"
                } else {
                    "does not exist"
                };
                diagnostics.push(
                    diagnostic(
                        Reason::TargetNotFound,
                        format!("Gateway {}/{} {why}", meta.namespace, target.name),
                    )
                    .on_parent(format!("{}/{}", meta.namespace, target.name)),
                );
                continue;
            };
            let listeners = &gateways[g].listeners;
            match &target.section_name {
                Some(section) => match listeners.iter().position(|l| l.spec.name == *section) {
                    Some(l) if sets_size => {
                        candidates.entry((g, l)).or_default().push((true, rank));
                    }
                    Some(_) => {}
                    None => diagnostics.push(
                        diagnostic(
                            Reason::TargetNotFound,
                            format!(
                                "Gateway {}/{} has no listener {section:?}",
                                meta.namespace, target.name
                            ),
                        )
                        .on_parent(format!("{}/{}/{section}", meta.namespace, target.name)),
                    ),
                },
                None if sets_size => {
                    for l in 0..listeners.len() {
                        candidates.entry((g, l)).or_default().push((false, rank));
                    }
                }
                None => {}
            }
        }
    }

    let mut sizes = HashMap::new();
    for ((g, l), mut claims) in candidates {
        // Most specific first, then oldest; a policy naming the listener
        // both ways counts once, at its most specific.
        claims.sort_by_key(|&(specific, rank)| (!specific, rank));
        claims.dedup_by_key(|c| c.1);
        let (specific, winner) = claims[0];
        let policy = index.policies[winner];
        let size = policy
            .spec
            .maglev
            .as_ref()
            .and_then(|m| m.table_size)
            .map_or(crate::snapshot::SLOT_TABLE_SIZE, |s| s as usize);
        let listener = format!(
            "{}/{}",
            gateways[g].gateway.metadata.key(),
            gateways[g].listeners[l].spec.name
        );
        let mut seen = vec![winner];
        for &(other_specific, rank) in &claims[1..] {
            if other_specific != specific || seen.contains(&rank) {
                continue;
            }
            seen.push(rank);
            let loser = &index.policies[rank].metadata;
            diagnostics.push(
                Diagnostic::new(
                    "TrafficPolicy",
                    &loser.namespace,
                    &loser.name,
                    Reason::Conflicted,
                    format!(
                        "spec.maglev.tableSize on listener {listener} is set by TrafficPolicy {}, \
                         which targets it as specifically and is older (or as old and first by \
                         namespace/name)",
                        policy.metadata.key()
                    ),
                )
                .on_parent(listener.clone()),
            );
        }
        sizes.insert((g, l), TableSize { size, policy });
    }
    sizes
}

/// `TableTooSmall` when a policy's table gives the listener's backends
/// fewer than `SLOTS_PER_BACKEND` slots each. The size is still used.
pub(super) fn check_size(
    size: &TableSize<'_>,
    listener: &str,
    backends: usize,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let wanted = backends.saturating_mul(SLOTS_PER_BACKEND);
    if size.size >= wanted {
        return;
    }
    let meta = &size.policy.metadata;
    diagnostics.push(
        Diagnostic::new(
            "TrafficPolicy",
            &meta.namespace,
            &meta.name,
            Reason::TableTooSmall,
            format!(
                "spec.maglev.tableSize {} is below {SLOTS_PER_BACKEND} slots for each of the \
                 {backends} backends of listener {listener} (at least {wanted}): a backend change \
                 moves more of the other backends' flows; the size is used anyway",
                size.size
            ),
        )
        .on_parent(listener.to_owned()),
    );
}
