//! Which LB node of the segment announces a VIP, and what this node knows
//! of the others.
//!
//! The owner of a VIP is the candidate with the lowest
//! sha256(name "#" VIP), as MetalLB's layer-2 mode sorts its speakers:
//! every node computes it from the same inputs alone, whatever order it
//! heard its peers in, and a node that goes away moves only the VIPs it
//! owned (rendezvous hashing), so a death or a drain disturbs no other
//! VIP's clients. The candidates of a VIP are the live, non-draining nodes
//! ready to announce it: this one, and each peer heard within the dead
//! time whose heartbeat lists the VIP (or says "all").

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::message::Heartbeat;

/// A peer's place in the order of a VIP: the lowest wins.
fn score(name: &str, vip: IpAddr) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"#");
    hasher.update(vip.to_string().as_bytes());
    hasher.finalize().into()
}

/// The owner of `vip` among `candidates` (node names; duplicates allowed),
/// the same whatever their order.
pub fn owner<'a>(vip: IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .min_by(|a, b| score(a, vip).cmp(&score(b, vip)).then(a.cmp(b)))
}

/// How long a dead peer stays listed in `yardctl node` before it is
/// forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Peers this node keeps track of; heartbeats from more names are ignored
/// (an unauthenticated segment must not grow the table without bound).
pub const MAX_PEERS: usize = 256;

/// A peer as last heard.
#[derive(Debug, Clone)]
pub struct Peer {
    pub heard: Heartbeat,
    pub from: SocketAddr,
    pub last_heard: Instant,
}

/// The peers heard on the segment, by name.
#[derive(Debug, Default)]
pub struct Peers {
    by_name: BTreeMap<String, Peer>,
}

/// What a peer is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Draining,
    Dead,
}

impl Peers {
    /// Records a heartbeat; false when ignored (the table is full).
    pub fn heard(&mut self, heard: Heartbeat, from: SocketAddr, now: Instant) -> bool {
        if !self.by_name.contains_key(&heard.name) && self.by_name.len() >= MAX_PEERS {
            return false;
        }
        // Heartbeats come over both families: show the IPv4 source once
        // one was heard, rather than one address, then the other.
        let from = match self.by_name.get(&heard.name) {
            Some(known) if known.from.is_ipv4() && from.is_ipv6() => known.from,
            _ => from,
        };
        self.by_name.insert(
            heard.name.clone(),
            Peer {
                heard,
                from,
                last_heard: now,
            },
        );
        true
    }

    pub fn liveness(peer: &Peer, now: Instant, dead_after: Duration) -> Liveness {
        if peer.heard.leaving || now.saturating_duration_since(peer.last_heard) > dead_after {
            Liveness::Dead
        } else if peer.heard.draining {
            Liveness::Draining
        } else {
            Liveness::Alive
        }
    }

    /// Drops the peers dead for long.
    pub fn forget_dead(&mut self, now: Instant) {
        self.by_name
            .retain(|_, p| now.saturating_duration_since(p.last_heard) < FORGET_AFTER);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Peer)> {
        self.by_name.iter()
    }

    /// The live, non-draining peers ready to announce `vip`.
    pub fn candidates(
        &self,
        vip: IpAddr,
        now: Instant,
        dead_after: Duration,
    ) -> impl Iterator<Item = &str> {
        self.by_name
            .iter()
            .filter(move |(_, p)| {
                Self::liveness(p, now, dead_after) == Liveness::Alive
                    && p.heard.vips.as_ref().is_none_or(|v| v.contains(&vip))
            })
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn vip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc612_0100 + i))
    }

    #[test]
    fn the_owner_is_one_of_the_candidates_and_none_without_any() {
        let names = ["lb-a", "lb-b", "lb-c"];
        let chosen = owner(vip(1), names).unwrap();
        assert!(names.contains(&chosen));
        assert_eq!(owner(vip(1), []), None);
    }

    #[test]
    fn vips_spread_over_the_nodes() {
        let names = ["lb-a", "lb-b", "lb-c"];
        let mut owned = BTreeMap::new();
        for i in 0..300 {
            *owned.entry(owner(vip(i), names).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(owned.len(), 3, "{owned:?}");
        assert!(owned.values().all(|&n| n > 50), "{owned:?}");
    }

    fn beat(name: &str, draining: bool, vips: Option<Vec<IpAddr>>) -> Heartbeat {
        Heartbeat {
            name: name.into(),
            sequence: 1,
            draining,
            leaving: false,
            vips,
        }
    }

    #[test]
    fn only_live_ready_non_draining_peers_are_candidates() {
        let t0 = Instant::now();
        let dead_after = Duration::from_secs(1);
        let from: SocketAddr = "198.18.1.2:7947".parse().unwrap();
        let mut peers = Peers::default();
        peers.heard(beat("all", false, None), from, t0);
        peers.heard(beat("listed", false, Some(vec![vip(1)])), from, t0);
        peers.heard(beat("drained", true, None), from, t0);
        peers.heard(beat("old", false, None), from, t0 - Duration::from_secs(2));
        let mut leaving = beat("leaving", false, None);
        leaving.leaving = true;
        peers.heard(leaving, from, t0);
        let got: Vec<&str> = peers.candidates(vip(1), t0, dead_after).collect();
        assert_eq!(got, ["all", "listed"]);
        let got: Vec<&str> = peers.candidates(vip(2), t0, dead_after).collect();
        assert_eq!(got, ["all"]);
    }

    #[test]
    fn the_peer_table_stays_bounded() {
        let now = Instant::now();
        let from: SocketAddr = "198.18.1.2:7947".parse().unwrap();
        let mut peers = Peers::default();
        for i in 0..MAX_PEERS + 10 {
            peers.heard(beat(&format!("n{i}"), false, None), from, now);
        }
        assert_eq!(peers.iter().count(), MAX_PEERS);
        assert!(peers.heard(beat("n0", true, None), from, now));
    }

    proptest! {
        #[test]
        fn every_order_of_the_same_candidates_elects_the_same_owner(
            names in proptest::collection::btree_set("[a-z]{1,8}", 1..8),
            seed in any::<u64>(),
            v in any::<u32>(),
        ) {
            let names: Vec<String> = names.into_iter().collect();
            let mut shuffled = names.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = owner(vip(v), names.iter().map(String::as_str));
            let b = owner(vip(v), shuffled.iter().map(String::as_str));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn removing_a_node_moves_only_the_vips_it_owned(
            names in proptest::collection::btree_set("[a-z]{1,8}", 2..8),
            gone in any::<prop::sample::Index>(),
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let gone = names[gone.index(names.len())];
            let rest: Vec<&str> = names.iter().copied().filter(|n| *n != gone).collect();
            for i in 0..64 {
                let before = owner(vip(i), names.iter().copied()).unwrap();
                let after = owner(vip(i), rest.iter().copied()).unwrap();
                if before != gone {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
