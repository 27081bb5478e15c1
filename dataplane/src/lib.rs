//! The Switchyard appliance: AF_XDP workers that decide, rewrite and forward
//! packets for VIP listeners, and the control plane around them.

pub mod affinity;
pub mod afxdp;
pub mod config_diff;
pub mod config_watch;
pub mod control;
pub mod dns;
pub mod drain;
pub mod drop_reason;
pub mod fast_path;
pub mod flow;
pub mod flow_scan;
pub mod hint;
pub mod interfaces;
pub mod io;
pub mod latency;
pub mod metrics;
pub mod neighbor;
pub mod packet;
pub mod worker;
