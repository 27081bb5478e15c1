//! The prober. PLACEHOLDER: the API the rest of the daemon uses; the
//! implementation replaces the bodies.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Observation, Target};

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Probes in flight at once, over all targets.
    pub max_concurrent: usize,
    /// Threads running the probes.
    pub threads: usize,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            threads: 1,
        }
    }
}

/// Runs the probes of a set of targets.
pub struct Monitor {
    _options: MonitorOptions,
}

impl Monitor {
    /// Starts the probing threads. `on_change` runs (on a monitor thread)
    /// each time a target's `Health::serving()` flips, so the daemon can
    /// republish.
    pub fn start(
        options: MonitorOptions,
        _on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        Ok(Self { _options: options })
    }

    /// Probes exactly `targets` from now on: new ones start `Unknown`,
    /// kept ones keep their state, gone ones stop.
    pub fn set_targets(&self, _targets: Vec<Target>) {}

    /// Every target's observation.
    pub fn observations(&self) -> BTreeMap<Target, Observation> {
        BTreeMap::new()
    }
}
