//! The slot table of a listener: `SLOT_TABLE_SIZE` entries unless a
//! TrafficPolicy sets another prime size, each owned by a
//! backend or by the unavailable share of an endpoint-less group, in
//! proportion to weight. Workers index it with `hash % len`, so this is the
//! whole of load balancing that happens off the hot path. The fill is
//! Maglev (`crate::maglev`): when a backend comes or goes, few flows of the
//! other backends move.

use crate::maglev::{self, MaglevEntry};
use crate::snapshot::{Backend, BackendGroup, Slot};

/// Builds a table of exactly `size` slots (`SLOT_TABLE_SIZE` by default;
/// it should be prime, see `maglev::is_prime`). Owners are the
/// backends with positive effective weight and, for each group with
/// positive weight but no endpoint, an `Unavailable` share: hashing there
/// refuses the flow instead of moving it to other groups. With no owner at
/// all (no groups, or all weights 0) every slot is `Unavailable`, so the
/// listener still refuses traffic rather than letting it pass.
/// `seed` (`Options::maglev_seed`) must be the same on every LB node: the
/// same config and seed build the same table everywhere, so a flow lands on
/// the same backend whichever node receives it.
pub fn build_slots(
    groups: &[BackendGroup],
    backends: &[Backend],
    size: usize,
    seed: u32,
) -> Vec<Slot> {
    // Keys are identities, not positions: a backend keeps its permutation
    // (and so most of its slots) when others are added or removed.
    let mut owners: Vec<Slot> = Vec::with_capacity(backends.len() + groups.len());
    let mut entries: Vec<MaglevEntry> = Vec::with_capacity(owners.capacity());
    for (i, b) in backends.iter().enumerate() {
        owners.push(Slot::Backend(i as u32));
        entries.push(MaglevEntry::new(b.endpoint.to_string(), b.effective_weight));
    }
    for (i, g) in groups.iter().enumerate() {
        if g.endpoints.is_empty() && g.weight > 0 {
            owners.push(Slot::Unavailable);
            entries.push(MaglevEntry::new(
                format!("unavailable:{i}:{}", g.service),
                f64::from(g.weight),
            ));
        }
    }
    maglev::build(&entries, size, seed)
        .into_iter()
        .map(|owner| owner.map_or(Slot::Unavailable, |i| owners[i as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Endpoint, SLOT_TABLE_SIZE};

    fn group(weight: u32, endpoints: &[&str]) -> BackendGroup {
        BackendGroup {
            terminating: false,
            service: "ns/s".into(),
            weight,
            endpoints: endpoints
                .iter()
                .map(|a| Endpoint {
                    address: a.parse().unwrap(),
                    port: 80,
                })
                .collect(),
        }
    }

    fn count(slots: &[Slot], owner: Slot) -> usize {
        slots.iter().filter(|&&s| s == owner).count()
    }

    #[test]
    fn no_groups_means_every_slot_refuses() {
        let slots = build_slots(&[], &[], SLOT_TABLE_SIZE, 0);
        assert_eq!(slots.len(), SLOT_TABLE_SIZE);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn all_zero_weights_mean_every_slot_refuses() {
        let groups = [group(0, &["10.0.0.1"])];
        let backends = super::super::flatten(&groups);
        let slots = build_slots(&groups, &backends, SLOT_TABLE_SIZE, 0);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn endpointless_group_owns_its_share_as_unavailable() {
        let groups = [group(3, &["10.0.0.1"]), group(1, &[])];
        let backends = super::super::flatten(&groups);
        let slots = build_slots(&groups, &backends, SLOT_TABLE_SIZE, 0);
        let expected = SLOT_TABLE_SIZE as f64 / 4.0;
        assert!((count(&slots, Slot::Unavailable) as f64 - expected).abs() <= 2.0);
        assert!((count(&slots, Slot::Backend(0)) as f64 - 3.0 * expected).abs() <= 2.0);
    }

    #[test]
    fn removing_a_backend_keeps_the_others_flows() {
        let before = [group(1, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])];
        let after = [group(1, &["10.0.0.1", "10.0.0.2", "10.0.0.4"])];
        let (bb, ab) = (
            super::super::flatten(&before),
            super::super::flatten(&after),
        );
        let (bs, as_) = (
            build_slots(&before, &bb, SLOT_TABLE_SIZE, 0),
            build_slots(&after, &ab, SLOT_TABLE_SIZE, 0),
        );
        let endpoint = |backends: &[Backend], s: Slot| match s {
            Slot::Backend(i) => Some(backends[i as usize].endpoint),
            Slot::Unavailable => None,
        };
        let removed = bb[2].endpoint;
        let moved = bs
            .iter()
            .zip(&as_)
            .filter(|(b, a)| {
                let b = endpoint(&bb, **b);
                b != Some(removed) && b != endpoint(&ab, **a)
            })
            .count();
        assert!(moved * 100 <= SLOT_TABLE_SIZE, "{moved} moved");
    }

    #[test]
    fn table_has_exactly_the_requested_size() {
        let groups = [group(1, &["10.0.0.1", "10.0.0.2"])];
        let backends = super::super::flatten(&groups);
        for size in [251, 4093, 1_048_573] {
            let slots = build_slots(&groups, &backends, size, 0);
            assert_eq!(slots.len(), size);
            assert!(slots.iter().all(|&s| s != Slot::Unavailable));
        }
        assert_eq!(build_slots(&[], &[], 251, 0).len(), 251);
    }
}
