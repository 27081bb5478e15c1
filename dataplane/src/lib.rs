//! The packet path of Switchyard: workers that take batches of frames from
//! AF_XDP sockets, decide each new flow (policy, ClientIP affinity, Maglev
//! slot, next hop) against the published snapshot, keep the decision in a
//! per-worker flow table, rewrite frames in place and send them on, and
//! install settled flows in the XDP flow cache. Everything a worker touches
//! per packet is its own or read-only: it must never block, lock, allocate
//! or make a syscall per packet, and it never panics on packet bytes (a
//! frame it cannot handle is dropped and counted by reason). Control (the
//! socket, reloads, neighbour resolution, metrics) lives in the daemon,
//! which talks to workers only through channels polled between batches.
//! Fragmented datagrams follow their first fragment's decision through a
//! per-worker table (`fragments`); nothing is reassembled.

pub mod affinity;
pub mod afxdp;
pub mod capabilities;
pub mod drop_reason;
pub mod fast_path;
pub mod flow;
pub mod flow_scan;
pub mod fragments;
pub mod hint;
pub mod io;
pub mod latency;
pub mod neighbor;
pub mod packet;
pub mod policy;
pub mod rebuild;
pub mod replies;
mod seqlock;
pub mod snat;
pub mod worker;
