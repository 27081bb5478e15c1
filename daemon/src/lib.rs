//! The Switchyard appliance around the packet path: the `switchyard`
//! binary's run, check and reload, the config file watch, the way a
//! cluster's objects come in from `switchyard-kube` (and their cache), the
//! control socket and what it reports (inventory, config diffs, drains), the
//! active health checks that take dead backends out as a drain does, the
//! Prometheus endpoint, the DNS server for Gateway names, the neighbour
//! resolver that keeps the workers' next hops true to the kernel, and the
//! egress watch that keeps the fast path from sending where the kernel
//! would drop its frames. It starts the workers and talks to them only
//! through their request channels and published snapshots; it must never
//! sit on the packet path, and nothing here runs per packet.

pub mod announce;
pub mod cluster;
pub mod config_diff;
pub mod config_watch;
pub mod control;
pub mod dns;
pub mod drain;
pub mod egress;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod interfaces;
pub mod metrics;
pub mod neighbor;
mod netlink;
#[cfg(test)]
mod netns_testing;
pub mod refusals;
