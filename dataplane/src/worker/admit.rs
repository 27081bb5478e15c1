//! Traffic policy on the miss path: a new flow to a listener with a policy
//! is checked against its source ranges and this worker's share of its
//! limits before a backend is chosen; after a reload, a flow already open
//! is checked against the new source ranges once, when its entry is
//! carried over. The shares are rebuilt, and the flow table's live tallies
//! renumbered, on a config change (`fit_admission`), never per packet.

use std::sync::Arc;

use switchyard_config::snapshot::{Protocol, Snapshot};

use super::path::destination_key;
use super::Worker;
use crate::drop_reason::DropReason;
use crate::flow::{Direction, FlowEntry};
use crate::packet::FlowKey;
use crate::policy::Admission;

impl Worker {
    /// This worker's shares of the new snapshot's limits, and the flow
    /// table's live tallies numbered by its listeners (a flow's listener
    /// found by its VIP, as `carry_over` will find it).
    pub(super) fn fit_admission(&mut self, snapshot: &Arc<Snapshot>) {
        let now = self.now_ns();
        self.admission = Admission::new(snapshot, self.workers, self.queue, now);
        self.flows.relabel(snapshot.listeners().len(), |key, _| {
            let protocol = Protocol::from_ip_proto(key.protocol)?;
            snapshot
                .listener_for_vip(&destination_key(key, protocol))
                .map(|listener| listener.id().index())
        });
    }

    /// Whether the new flow `key` may be decided: `Ok` for anything that
    /// is not a client's packet to a listener with a policy.
    #[inline(never)]
    pub(super) fn admit(
        &mut self,
        snapshot: &Snapshot,
        key: &FlowKey,
        now: u64,
    ) -> Result<(), DropReason> {
        let Some(protocol) = Protocol::from_ip_proto(key.protocol) else {
            return Ok(());
        };
        let Some(listener) = snapshot.listener_for_vip(&destination_key(key, protocol)) else {
            return Ok(());
        };
        let index = listener.id().index();
        let live = self.flows.live_flows(index);
        self.admission
            .admit(index, listener.get(), key.src, live, now)
    }
}

/// Whether a client's flow just carried over to `snapshot` comes from a
/// source its listener no longer admits.
#[inline(never)]
pub(super) fn denied_after_reload(
    admission: &Admission,
    snapshot: &Snapshot,
    key: &FlowKey,
    entry: &FlowEntry,
) -> bool {
    if entry.direction != Direction::ToBackend || !admission.any() {
        return false;
    }
    let index = entry.listener as usize;
    snapshot
        .listeners()
        .get(index)
        .is_some_and(|listener| !admission.still_admits(index, listener, key.src))
}
