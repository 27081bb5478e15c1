//! Switchyard's XDP programs and their loader. The crate owns the C
//! programs in `src/bpf/` (built by `build.rs` with clang and embedded in the
//! library) and everything userspace does to them: loading, attaching to
//! interfaces, filling the maps from the resolved configuration, registering
//! AF_XDP sockets, and reading counters. It must never decide a flow (the
//! one policy it applies is source ranges, as entries the daemon compiled
//! from the configuration, `policy`): the steering program only routes frames for VIPs (and
//! replies from backend endpoints, their fragments and the ICMP errors
//! about them), IPv4 and IPv6, to the workers' sockets and passes
//! everything else to the kernel untouched, and its flow cache is a memo of
//! the workers' decisions, replayed as they wrote it. From userspace it
//! never touches a packet on its way through the node; the workers do.
//! The decapsulation program (`decap`) is the one that runs elsewhere: on
//! a backend host of the `ipip` and `gue` modes, stripping the outer
//! headers of packets addressed to that host.

mod attach;
mod bpf_sys;
pub mod consts;
mod counters;
pub mod decap;
mod error;
mod fast_path;
mod maps;
pub mod pins;
mod policy;
mod service;
mod steering;
pub mod tools;

pub use attach::{AttachMode, AttachedMode};
pub use counters::{SteerCounter, SteerCounters};
pub use error::XdpError;
pub use fast_path::{
    ActionSpec, ActionSpec6, EncapSpec, FastCounters, FastPathMaps, FlowAction, FlowAction6,
    FlowCacheKey, FlowCacheKey6, TUNNEL_GUE, TUNNEL_IPIP, TUNNEL_NONE,
};
pub use policy::{compile as compile_source_ranges, ListenerRanges, Prefix, MAX_SOURCE_RANGES};
pub use service::{ServiceKey, ServiceKey6, ServiceMatch, IPPROTO_TCP, IPPROTO_UDP};
pub use steering::{AttachedInterface, LoadOptions, RxQueue, Steering, Takeover, XdpAction};
