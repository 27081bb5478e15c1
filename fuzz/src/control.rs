//! The control socket as `switchyard run` serves it, short of the workers:
//! one request line through the daemon's own decoding and answering, over
//! a daemon state built from the demo config with no worker, no XDP
//! program and no flow cache (a request that asks the workers gets the
//! answer of a daemon that has none). Every line gets a response that
//! serializes, and every request the daemon accepts survives the trip
//! through JSON that `yardctl` makes.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use switchyard_config::snapshot::Snapshot;
use switchyard_daemon::control::{respond, ControlState};
use switchyard_daemon::drain::Publisher;
use switchyard_dataplane::affinity::AffinityTable;
use switchyard_proto::{ConfigStatusReport, Request};

/// The running config of the fuzzed daemon.
pub const DEMO_CONFIG: &str = include_str!("../../config/examples/demo.yaml");

/// Input: one line as read from the socket (without its newline).
pub fn control(data: &[u8]) {
    // The daemon hands the line's bytes, as read, to the request decoder.
    let state = state();
    let response = respond(&state, data);
    serde_json::to_vec(&response).expect("every response serializes");
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let sent = serde_json::to_string(&request).expect("every request serializes");
        let read: Request = serde_json::from_str(&sent).expect("a sent request reads back");
        assert_eq!(read, request);
    }
}

/// A fresh daemon state per input, so a drain one input makes is not seen
/// by the next; only the compiled snapshot is shared.
fn state() -> ControlState {
    static COMPILED: OnceLock<Snapshot> = OnceLock::new();
    let snapshot = COMPILED.get_or_init(|| {
        let resources =
            switchyard_config::load_str("demo.yaml", DEMO_CONFIG).expect("the demo config loads");
        switchyard_config::resolve(&resources, 1).snapshot
    });
    let options = switchyard_config::Options::default();
    let config = Arc::new(ArcSwap::from_pointee(snapshot.clone()));
    ControlState {
        config_path: "demo.yaml".to_owned(),
        snat_ports: None,
        drains: Arc::new(Publisher::new(config.clone(), options.maglev_seed)),
        config,
        config_status: Arc::new(Mutex::new(ConfigStatusReport {
            path: "demo.yaml".to_owned(),
            generation: 1,
            listeners: snapshot.listeners().len(),
            ..ConfigStatusReport::default()
        })),
        interfaces: Vec::new(),
        egress: None,
        workers: Vec::new(),
        epoch: Instant::now(),
        hash_seed: 0,
        affinity: Arc::new(AffinityTable::new(1024)),
        resolve_options: options,
        fast_path: None,
        steer_counters: None,
        source_denied: None,
        cluster: None,
        node: None,
        hand_over: None,
    }
}
