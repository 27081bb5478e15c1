//! A worker's share of each listener's limits: new flows a second (a token
//! bucket refilled from the worker's clock) and flows at once (checked
//! against the flow table's live tally). Every worker holds its own share
//! and never looks at another's, so admission takes no lock and no shared
//! write; the shares of all workers add up to the listener's limit
//! exactly. The cost is that a limit is enforced per queue: a queue that
//! gets more than its share of new flows refuses some while another has
//! room, as Cilium's and LoxiLB's per-CPU limiters do. Source ranges are
//! checked here too, as a second line behind the steering program's maps
//! (a packet can reach a worker between a publish and the map write).
//!
//! Rebuilt from the snapshot on a config change (allocates then, never per
//! packet); buckets start full.

use std::net::IpAddr;

use switchyard_config::snapshot::{Listener, Snapshot};

use crate::drop_reason::DropReason;

const NS_PER_SEC: u64 = 1_000_000_000;

/// This worker's part of `total` when `workers` share it: an even split,
/// the remainder going one each to the lowest-numbered workers, so the
/// parts add up to `total`.
pub fn share(total: u32, workers: u32, worker: u32) -> u32 {
    let workers = workers.max(1);
    let worker = worker % workers;
    total / workers + u32::from(worker < total % workers)
}

/// Tokens for new flows at `rate` a second, holding at most one second's
/// worth (the burst), refilled from a monotonic nanosecond clock. Counted
/// in billionths of a token, so a refill loses nothing to rounding at any
/// clock step.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: u64,
    /// Billionths of a token.
    level: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ns`.
    pub fn new(rate: u32, now_ns: u64) -> Self {
        let rate = u64::from(rate);
        Self {
            rate,
            level: rate * NS_PER_SEC,
            last_ns: now_ns,
        }
    }

    /// Takes one token if there is one. A clock that goes back refills
    /// nothing.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let capacity = self.rate * NS_PER_SEC;
        // At most a second counts, so the product stays within u64 for
        // any u32 rate.
        let elapsed = now_ns.saturating_sub(self.last_ns).min(NS_PER_SEC);
        self.last_ns = self.last_ns.max(now_ns);
        self.level = (self.level + elapsed * self.rate).min(capacity);
        if self.level < NS_PER_SEC {
            return false;
        }
        self.level -= NS_PER_SEC;
        true
    }
}

/// One listener's admission state on this worker.
#[derive(Debug, Clone)]
struct ListenerShare {
    /// `None`: no rate limit.
    bucket: Option<TokenBucket>,
    /// `None`: no limit on flows at once.
    max_flows: Option<u32>,
    /// Whether the listener restricts sources at all.
    ranged: bool,
}

/// Every listener's share on one worker, indexed like the snapshot's
/// listeners.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    listeners: Vec<ListenerShare>,
    /// Whether any listener has a policy: when none has, new flows skip
    /// admission altogether.
    any: bool,
}

impl Admission {
    /// This worker's (`worker` of `workers`) shares of `snapshot`'s limits.
    pub fn new(snapshot: &Snapshot, workers: u32, worker: u32, now_ns: u64) -> Self {
        let listeners: Vec<ListenerShare> = snapshot
            .listeners()
            .iter()
            .map(|listener| {
                let policy = listener.policy();
                ListenerShare {
                    bucket: policy
                        .new_flows_per_second
                        .map(|rate| TokenBucket::new(share(rate.get(), workers, worker), now_ns)),
                    max_flows: policy
                        .max_flows
                        .map(|max| share(max.get(), workers, worker)),
                    ranged: !policy.source_ranges.is_open(),
                }
            })
            .collect();
        let any = snapshot.listeners().iter().any(|l| !l.policy().is_open());
        Self { listeners, any }
    }

    /// Whether any listener has a policy to check.
    #[inline(always)]
    pub fn any(&self) -> bool {
        self.any
    }

    /// Whether `listener` (at `index`) takes a new flow from `client`,
    /// with `live` client flows of it on this worker. Source ranges first
    /// (a denied client spends no token), then the flow limit, then the
    /// rate: a flow refused for the limit spends no token either.
    #[inline]
    pub fn admit(
        &mut self,
        index: usize,
        listener: &Listener,
        client: IpAddr,
        live: u32,
        now_ns: u64,
    ) -> Result<(), DropReason> {
        let Some(share) = self.listeners.get_mut(index) else {
            return Ok(());
        };
        if share.ranged && !listener.policy().source_ranges.admits(client) {
            return Err(DropReason::SourceDenied);
        }
        if share.max_flows.is_some_and(|max| live >= max) {
            return Err(DropReason::MaxFlowsReached);
        }
        if let Some(bucket) = &mut share.bucket {
            if !bucket.take(now_ns) {
                return Err(DropReason::NewFlowRateLimited);
            }
        }
        Ok(())
    }

    /// Whether a flow of `listener` (at `index`) from `client` decided
    /// under an older snapshot may go on under this one: a policy change
    /// applies at once to flows already open.
    #[inline]
    pub fn still_admits(&self, index: usize, listener: &Listener, client: IpAddr) -> bool {
        self.listeners
            .get(index)
            .is_none_or(|share| !share.ranged || listener.policy().source_ranges.admits(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shares_split_evenly_with_the_remainder_to_the_first_workers() {
        assert_eq!(
            (0..3).map(|w| share(10, 3, w)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(
            (0..4).map(|w| share(2, 4, w)).collect::<Vec<_>>(),
            [1, 1, 0, 0]
        );
        assert_eq!(share(5, 0, 0), 5, "no workers counts as one");
    }

    #[test]
    fn a_bucket_starts_full_and_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(3, 0);
        assert!((0..3).all(|_| bucket.take(0)));
        assert!(!bucket.take(0));
        // A third of a second brings one token back.
        assert!(!bucket.take(NS_PER_SEC / 3 - 1));
        assert!(bucket.take(NS_PER_SEC / 3 + 1));
        assert!(!bucket.take(NS_PER_SEC / 3 + 1));
        // A long idle spell refills only to the burst.
        assert_eq!((0..10).filter(|_| bucket.take(100 * NS_PER_SEC)).count(), 3);
        let mut empty = TokenBucket::new(0, 0);
        assert!(!empty.take(10 * NS_PER_SEC));
    }

    proptest! {
        /// However the takes are spread over time, the shares of all
        /// workers add up to the total, and over any run a bucket grants at
        /// most its burst plus its rate times the time elapsed.
        #[test]
        fn shares_add_up_and_a_bucket_never_grants_more_than_burst_plus_rate(
            total in 0..100_000u32,
            workers in 1..64u32,
            rate in 0..1000u32,
            steps in prop::collection::vec(0..50_000_000u64, 1..400),
        ) {
            let sum: u64 = (0..workers).map(|w| u64::from(share(total, workers, w))).sum();
            prop_assert_eq!(sum, u64::from(total));
            let mut bucket = TokenBucket::new(rate, 0);
            let (mut now, mut granted) = (0u64, 0u64);
            for step in steps {
                now += step;
                granted += u64::from(bucket.take(now));
                let bound = u64::from(rate) + u64::from(rate) * now / NS_PER_SEC;
                prop_assert!(granted <= bound, "{} granted by {} ns, bound {}", granted, now, bound);
            }
        }
    }
}
