//! The slot table of a listener: `SLOT_TABLE_SIZE` entries, each owned by a
//! backend or by the unavailable share of an endpoint-less group, in
//! proportion to weight. Workers index it with `hash % len`, so this is the
//! whole of load balancing that happens off the hot path. The fill here is
//! a deterministic weighted interleave; a Maglev fill (stable under backend
//! changes) replaces it later behind the same signature.

use crate::snapshot::{Backend, BackendGroup, Slot, SLOT_TABLE_SIZE};

/// Builds a table of exactly `SLOT_TABLE_SIZE` slots. Owners are the
/// backends with positive effective weight and, for each group with
/// positive weight but no endpoint, an `Unavailable` share: hashing there
/// refuses the flow instead of moving it to other groups. With no owner at
/// all (no groups, or all weights 0) every slot is `Unavailable`, so the
/// listener still refuses traffic rather than letting it pass.
pub fn build_slots(groups: &[BackendGroup], backends: &[Backend]) -> Vec<Slot> {
    let mut owners: Vec<(Slot, f64)> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.effective_weight.is_finite() && b.effective_weight > 0.0)
        .map(|(i, b)| (Slot::Backend(i as u32), b.effective_weight))
        .collect();
    owners.extend(
        groups
            .iter()
            .filter(|g| g.endpoints.is_empty() && g.weight > 0)
            .map(|g| (Slot::Unavailable, f64::from(g.weight))),
    );
    let weights: Vec<f64> = owners.iter().map(|(_, w)| *w).collect();
    let Some(counts) = apportion(&weights, SLOT_TABLE_SIZE) else {
        return vec![Slot::Unavailable; SLOT_TABLE_SIZE];
    };
    interleave(&counts)
        .into_iter()
        .map(|owner| owners[owner].0)
        .collect()
}

/// Splits `total` slots over `weights` by the largest-remainder method, so
/// every count is within one of its exact share and the counts add up to
/// `total`. `None` when no weight is positive.
fn apportion(weights: &[f64], total: usize) -> Option<Vec<usize>> {
    let sum: f64 = weights.iter().sum();
    if !(sum.is_finite() && sum > 0.0) {
        return None;
    }
    let quotas: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest fraction first; ties to the earlier owner, for determinism.
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut assigned: usize = counts.iter().sum();
    for &i in order.iter().cycle().take(weights.len() * 2) {
        if assigned == total {
            break;
        }
        if assigned < total {
            counts[i] += 1;
            assigned += 1;
        } else if counts[i] > 0 {
            // Only reachable through float rounding on pathological input.
            counts[i] -= 1;
            assigned -= 1;
        }
    }
    (assigned == total).then_some(counts)
}

/// Orders `counts[j]` copies of each owner `j` so that each owner's slots
/// are spread evenly over the table: copy `k` of an owner with `c` slots
/// sits at virtual time `(k + 1/2) / c`, and the table is all copies sorted
/// by that time (stride scheduling). O(n log n) in the table size,
/// whatever the number of owners.
fn interleave(counts: &[usize]) -> Vec<usize> {
    let mut copies: Vec<(u64, u64, usize)> = Vec::with_capacity(counts.iter().sum());
    for (owner, &count) in counts.iter().enumerate() {
        for k in 0..count as u64 {
            copies.push((2 * k + 1, 2 * count as u64, owner));
        }
    }
    // Exact rational comparison: float times would tie-break differently
    // across platforms only in theory, but exactness costs nothing here.
    copies.sort_unstable_by(|&(na, da, oa), &(nb, db, ob)| {
        (u128::from(na) * u128::from(db))
            .cmp(&(u128::from(nb) * u128::from(da)))
            .then(oa.cmp(&ob))
    });
    copies.into_iter().map(|(_, _, owner)| owner).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Endpoint;

    fn group(weight: u32, endpoints: &[&str]) -> BackendGroup {
        BackendGroup {
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
        let slots = build_slots(&[], &[]);
        assert_eq!(slots.len(), SLOT_TABLE_SIZE);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn all_zero_weights_mean_every_slot_refuses() {
        let groups = [group(0, &["10.0.0.1"])];
        let backends = super::super::flatten(&groups);
        let slots = build_slots(&groups, &backends);
        assert!(slots.iter().all(|&s| s == Slot::Unavailable));
    }

    #[test]
    fn endpointless_group_owns_its_share_as_unavailable() {
        let groups = [group(3, &["10.0.0.1"]), group(1, &[])];
        let backends = super::super::flatten(&groups);
        let slots = build_slots(&groups, &backends);
        let expected = SLOT_TABLE_SIZE as f64 / 4.0;
        assert!((count(&slots, Slot::Unavailable) as f64 - expected).abs() <= 2.0);
        assert!((count(&slots, Slot::Backend(0)) as f64 - 3.0 * expected).abs() <= 2.0);
    }

    #[test]
    fn slots_interleave_owners_evenly() {
        let groups = [group(2, &["10.0.0.1", "10.0.0.2"]), group(2, &["10.0.0.3"])];
        let backends = super::super::flatten(&groups);
        let slots = build_slots(&groups, &backends);
        // A 1:1:2 split should read 0 1 2 2 0 1 2 2 ...; rounding the
        // shares to whole slots lets one run grow by one.
        let longest = slots
            .chunk_by(|a, b| a == b)
            .map(<[Slot]>::len)
            .max()
            .unwrap();
        assert!(longest <= 3, "run of {longest}");
        // Each window of 1000 slots has each owner near its share.
        for window in slots.chunks(1000).filter(|w| w.len() == 1000) {
            let third = count(window, Slot::Backend(2));
            assert!((495..=505).contains(&third), "{third}");
        }
    }

    #[test]
    fn apportion_is_exact_and_within_one_of_the_share() {
        let weights = [1.0, 1.0, 1.0, 1e6, 0.5, 7.0];
        let counts = apportion(&weights, SLOT_TABLE_SIZE).unwrap();
        assert_eq!(counts.iter().sum::<usize>(), SLOT_TABLE_SIZE);
        let sum: f64 = weights.iter().sum();
        for (w, c) in weights.iter().zip(&counts) {
            let share = w / sum * SLOT_TABLE_SIZE as f64;
            assert!((*c as f64 - share).abs() < 1.0, "{c} vs {share}");
        }
        assert_eq!(apportion(&[0.0, 0.0], 10), None);
        assert_eq!(apportion(&[], 10), None);
        assert_eq!(apportion(&[f64::NAN], 10), None);
    }
}
