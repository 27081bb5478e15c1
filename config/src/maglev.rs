//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4), with weights
//! as in Katran's `MaglevHashV2`. It owns turning a set of keyed, weighted
//! entries into a lookup table whose owners move little when the set
//! changes. It is pure and allocates only while building: it never hashes
//! with per-process randomness, so every machine builds the same table.

use std::cmp::Ordering;

/// One owner of table slots. `key` is its stable identity (for a backend,
/// `"198.18.2.21:8080"`); keys should be unique, as two entries with one
/// key share a permutation and differ only by input order.
#[derive(Debug, Clone, PartialEq)]
pub struct MaglevEntry {
    pub key: Vec<u8>,
    /// Relative share; entries with a weight that is not finite and
    /// positive own nothing.
    pub weight: f64,
}

impl MaglevEntry {
    pub fn new(key: impl Into<Vec<u8>>, weight: f64) -> Self {
        Self {
            key: key.into(),
            weight,
        }
    }
}

/// Whether `n` is prime; Maglev needs a prime table size so that every
/// `skip` in `1..M` walks all `M` slots.
pub fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// Builds a table of `size` slots (`size` should be prime; see `is_prime`)
/// and returns, for each slot, the index in `entries` of its owner. Every
/// entry with positive weight gets within one slot of its exact share
/// `size * weight / total weight`; with equal weights this is the paper's
/// unweighted fill exactly. `None` everywhere only when no entry has
/// positive weight. The result does not depend on the order of `entries`.
pub fn build(entries: &[MaglevEntry], size: usize, seed: u32) -> Vec<Option<u32>> {
    let weight = |e: &MaglevEntry| {
        if e.weight.is_finite() && e.weight > 0.0 {
            e.weight
        } else {
            0.0
        }
    };
    // Sorted by key so the fill (whose tie-breaks follow order) is a
    // function of the set, not of the caller's order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        entries[a]
            .key
            .cmp(&entries[b].key)
            .then(weight(&entries[a]).total_cmp(&weight(&entries[b])))
            .then(a.cmp(&b))
    });
    order.retain(|&i| weight(&entries[i]) > 0.0);
    let weights: Vec<f64> = order.iter().map(|&i| weight(&entries[i])).collect();
    let (Some(quotas), false) = (apportion(&weights, size), size == 0) else {
        return vec![None; size];
    };
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| permutation(&entries[i].key, size as u64, seed))
        .collect();
    let max = weights.iter().copied().fold(0.0, f64::max);
    // Credit per round in fixed point, so the fill is exact integer
    // arithmetic; at least 1 so every positive weight makes progress.
    let credits: Vec<u64> = weights
        .iter()
        .map(|w| ((w / max * CREDIT_UNIT as f64).round() as u64).clamp(1, CREDIT_UNIT))
        .collect();
    fill(&perms, &credits, &quotas, size)
        .into_iter()
        .map(|owner| Some(order[owner as usize] as u32))
        .collect()
}

/// The paper's unweighted population (section 3.4, Pseudocode 1) from
/// explicit `(offset, skip)` permutations, one per entry: entries take
/// turns, each claiming its most preferred free slot, until the table is
/// full. Returns the owning entry of each slot; empty if `perms` is.
pub fn build_with_permutation(perms: &[(u64, u64)], size: usize) -> Vec<u32> {
    if perms.is_empty() || size == 0 {
        return Vec::new();
    }
    let quotas = apportion(&vec![1.0; perms.len()], size).unwrap_or_default();
    fill(perms, &vec![CREDIT_UNIT; perms.len()], &quotas, size)
}

/// One whole turn of credit: an entry with the largest weight claims a
/// slot every round.
const CREDIT_UNIT: u64 = 1 << 32;

/// Katran's weighted fill: each round every entry gains `credits[i]` and,
/// once it holds a whole unit, spends it on its next free preferred slot.
/// Entries stop at their quota (so shares are exact to one slot) and the
/// quotas add up to `size`, so the loop ends with the table full.
fn fill(perms: &[(u64, u64)], credits: &[u64], quotas: &[usize], size: usize) -> Vec<u32> {
    let m = size as u64;
    const FREE: u32 = u32::MAX;
    let mut table = vec![FREE; size];
    // Next preferred slot of each entry: permutation[j] = (offset + j*skip) % M
    // walked incrementally.
    let mut next: Vec<u64> = perms.iter().map(|&(offset, _)| offset % m).collect();
    let skips: Vec<u64> = perms.iter().map(|&(_, skip)| skip % m).collect();
    let mut held = vec![0u64; perms.len()];
    let mut owned = vec![0usize; perms.len()];
    let mut active: Vec<usize> = (0..perms.len()).filter(|&i| quotas[i] > 0).collect();
    let mut filled = 0;
    while filled < size && !active.is_empty() {
        let mut claimed = false;
        let mut capped = false;
        for &i in &active {
            held[i] += credits[i];
            if held[i] < CREDIT_UNIT {
                continue;
            }
            held[i] -= CREDIT_UNIT;
            while table[next[i] as usize] != FREE {
                next[i] = (next[i] + skips[i]) % m;
            }
            table[next[i] as usize] = i as u32;
            next[i] = (next[i] + skips[i]) % m;
            owned[i] += 1;
            filled += 1;
            claimed = true;
            capped |= owned[i] == quotas[i];
            if filled == size {
                break;
            }
        }
        if capped {
            active.retain(|&i| owned[i] < quotas[i]);
        }
        if !claimed {
            // Skip rounds in which nobody would reach a unit: same table,
            // without spinning when the heavy entries are all at quota.
            let rounds = active
                .iter()
                .map(|&i| (CREDIT_UNIT - held[i]).div_ceil(credits[i]))
                .min()
                .unwrap_or(1);
            for &i in &active {
                held[i] += (rounds - 1) * credits[i];
            }
        }
    }
    table
}

/// Offset and skip of an entry's permutation, from two independent hashes
/// of its key (section 3.4: `offset = h1 % M`, `skip = h2 % (M-1) + 1`).
fn permutation(key: &[u8], m: u64, seed: u32) -> (u64, u64) {
    let seed = u64::from(seed);
    let offset = hash64(key, seed ^ 0x243f_6a88_85a3_08d3) % m;
    let skip = if m > 1 {
        hash64(key, seed.rotate_left(32) ^ 0x1319_8a2e_0370_7344) % (m - 1) + 1
    } else {
        1
    };
    (offset, skip)
}

/// A 64-bit keyed hash: 8-byte words folded through the MurmurHash3
/// finalizer. Fixed constants only, so it is the same on every machine.
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = fmix64(seed ^ (bytes.len() as u64).wrapping_mul(K));
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = fmix64(h ^ u64::from_le_bytes(word)).wrapping_add(K);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Splits `total` slots over `weights` by the largest-remainder method, so
/// every count is within one of its exact share and the counts add up to
/// `total`. `None` when no weight is positive.
pub fn apportion(weights: &[f64], total: usize) -> Option<Vec<usize>> {
    let sum: f64 = weights.iter().sum();
    if !(sum.is_finite() && sum > 0.0) {
        return None;
    }
    let quotas: Vec<f64> = weights.iter().map(|w| w / sum * total as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest fraction first; ties to the earlier entry, which is also the
    // entry the unweighted fill gives the extra slot of the last round.
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.partial_cmp(&fa)
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: usize = 65_537;

    fn counts(table: &[Option<u32>], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for owner in table.iter().flatten() {
            c[*owner as usize] += 1;
        }
        c
    }

    fn backends(n: usize) -> Vec<MaglevEntry> {
        (0..n)
            .map(|i| MaglevEntry::new(format!("10.{}.{}.1:8080", i / 256, i % 256), 1.0))
            .collect()
    }

    #[test]
    fn is_prime_matches_trial_division() {
        let slow = |n: u64| n >= 2 && (2..n).all(|d| !n.is_multiple_of(d));
        for n in 0..2000 {
            assert_eq!(is_prime(n), slow(n), "{n}");
        }
        assert!(is_prime(65_537));
        assert!(is_prime(655_373));
        assert!(!is_prime(65_536));
    }

    #[test]
    fn paper_example_table_1_reproduces_exactly() {
        // B0 offset 3 skip 4, B1 offset 0 skip 2, B2 offset 3 skip 1.
        let table = build_with_permutation(&[(3, 4), (0, 2), (3, 1)], 7);
        assert_eq!(table, [1, 0, 1, 0, 2, 2, 0]);
        // B1 removed: B0 and B2 take turns over the same permutations.
        // Slot 6 moves from B0 to B2: Maglev trades minimal disruption
        // for balance.
        let table = build_with_permutation(&[(3, 4), (3, 1)], 7);
        let named: Vec<u32> = table.iter().map(|&i| [0, 2][i as usize]).collect();
        assert_eq!(named, [0, 0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn permutations_visit_every_slot() {
        for key in ["a", "10.0.0.1:80", "[2001:db8::1]:443"] {
            let (offset, skip) = permutation(key.as_bytes(), 7, 0);
            let mut seen: Vec<u64> = (0..7).map(|j| (offset + j * skip) % 7).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..7).collect::<Vec<_>>());
        }
    }

    #[test]
    fn no_positive_weight_owns_nothing() {
        assert!(build(&[], 7, 0).iter().all(Option::is_none));
        let zero = [MaglevEntry::new("a", 0.0), MaglevEntry::new("b", f64::NAN)];
        assert!(build(&zero, M, 0).iter().all(Option::is_none));
    }

    #[test]
    fn weight_zero_owns_no_slot() {
        let entries = [
            MaglevEntry::new("a", 1.0),
            MaglevEntry::new("b", 0.0),
            MaglevEntry::new("c", 2.0),
        ];
        let c = counts(&build(&entries, M, 0), 3);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], M);
    }

    #[test]
    fn hash_is_fixed_across_machines_and_runs() {
        // Pinned: a change here moves every listener's flows on upgrade.
        assert_eq!(permutation(b"198.18.2.21:8080", M as u64, 0), PINNED);
    }
    const PINNED: (u64, u64) = (18_687, 45_419);

    /// Share of the survivors' slots that move when entry `victim` of `n`
    /// equal entries is removed.
    fn disruption(n: usize, victim: usize, seed: u32) -> f64 {
        let before_entries = backends(n);
        let mut after_entries = before_entries.clone();
        after_entries.remove(victim);
        let before = build(&before_entries, M, seed);
        let after = build(&after_entries, M, seed);
        let mut others = 0;
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            let b = b.unwrap() as usize;
            if b != victim {
                others += 1;
                moved +=
                    usize::from(before_entries[b].key != after_entries[a.unwrap() as usize].key);
            }
        }
        moved as f64 / others as f64
    }

    /// Per removal on a fixed sample (15 values of N from 2 to 1000, 40
    /// victims and seeds each): the worst measured is 1.08% (N = 3, where
    /// quota rounding moves slots between the two survivors), at most 0.98%
    /// for the other N. Random search (the property below) finds rarer
    /// cases up to about 2%: Maglev keeps shares exact and tables
    /// order-independent at the price of this extra movement. The bound
    /// asserted here is the measured one, so a regression shows.
    #[test]
    fn removing_one_entry_moves_at_most_about_1_percent_of_others_in_every_case() {
        let mut worst: (f64, usize) = (0.0, 0);
        for n in [
            2usize, 3, 4, 5, 10, 20, 37, 60, 100, 150, 250, 300, 500, 700, 1000,
        ] {
            for k in 0..40u32 {
                let victim = (k as usize * 7919 + 13) % n;
                let d = disruption(n, victim, k.wrapping_mul(2_654_435_761));
                if d > worst.0 {
                    worst = (d, n);
                }
            }
        }
        assert!(
            worst.0 <= 0.011,
            "worst disruption {:.3}% at N = {}",
            worst.0 * 100.0,
            worst.1
        );
    }

    #[test]
    fn removing_one_entry_moves_under_1_percent_of_others_on_average() {
        let mut sum = 0.0;
        let mut cases = 0;
        for n in [3, 10, 50, 100, 300, 1000] {
            for k in 0..4 {
                sum += disruption(n, (k * 7919) % n, k as u32);
                cases += 1;
            }
        }
        let mean = sum / f64::from(cases);
        assert!(mean <= 0.01, "mean disruption {mean}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn equal_weights_give_every_entry_within_one_of_m_over_n(n in 1usize..=1000, seed: u32) {
            let c = counts(&build(&backends(n), M, seed), n);
            let share = M as f64 / n as f64;
            for x in c {
                prop_assert!((x as f64 - share).abs() < 1.0, "{x} vs {share}");
            }
        }

        #[test]
        fn shares_follow_weights(weights in prop::collection::vec(0.01f64..100.0, 1..200), seed: u32) {
            let entries: Vec<MaglevEntry> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| MaglevEntry::new(format!("b{i}"), w))
                .collect();
            let c = counts(&build(&entries, M, seed), entries.len());
            let sum: f64 = weights.iter().sum();
            for (w, x) in weights.iter().zip(c) {
                let share = w / sum * M as f64;
                prop_assert!((x as f64 - share).abs() <= 2.0_f64.max(share * 0.01), "{x} vs {share}");
            }
        }

        #[test]
        fn result_does_not_depend_on_entry_order(
            weights in prop::collection::vec(0.0f64..10.0, 1..50),
            rotate in 0usize..50,
        ) {
            let entries: Vec<MaglevEntry> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| MaglevEntry::new(format!("b{i}"), w))
                .collect();
            let mut shuffled = entries.clone();
            shuffled.reverse();
            let r = rotate % shuffled.len();
            shuffled.rotate_left(r);
            let a = build(&entries, 1009, 7);
            let b = build(&shuffled, 1009, 7);
            let key = |t: &[Option<u32>], e: &[MaglevEntry]| -> Vec<Option<Vec<u8>>> {
                t.iter().map(|o| o.map(|i| e[i as usize].key.clone())).collect()
            };
            prop_assert_eq!(key(&a, &entries), key(&b, &shuffled));
        }

        // Maglev is not minimally disruptive (section 3.4): the survivors'
        // claims cascade. At M = 65537 that costs under 1% of their slots
        // on average (see below) but up to ~2.2% for unlucky N and keys,
        // so the per-case bound is 3%.
        #[test]
        fn removing_one_entry_moves_its_slots_and_at_most_3_percent_of_others(
            n in 2usize..=1000,
            victim in any::<prop::sample::Index>(),
            seed: u32,
        ) {
            let d = disruption(n, victim.index(n), seed);
            prop_assert!(d <= 0.03, "n {n}: {:.3}% moved", d * 100.0);
        }
    }
}
