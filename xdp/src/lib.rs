//! Switchyard's XDP steering program and its loader.
//!
//! This crate owns the C program in `src/bpf/` (built by `build.rs` with
//! clang and embedded in the library) and everything userspace does to it:
//! loading, attaching to interfaces, filling its maps from the resolved
//! configuration, registering AF_XDP sockets, and reading its counters. It
//! decides nothing about flows and never touches packets: the program
//! routes frames for VIPs (and replies from backends) to the workers'
//! sockets, replays the rewrites workers put in its flow cache (the fast
//! path), and passes everything else to the kernel untouched.

mod attach;
mod bpf_sys;
pub mod consts;
mod counters;
mod error;
mod fast_path;
mod maps;
mod steering;
pub mod tools;

pub use attach::{AttachMode, AttachedMode};
pub use counters::{SteerCounter, SteerCounters};
pub use error::XdpError;
pub use fast_path::{ActionSpec, FastCounters, FastPathMaps, FlowAction, FlowCacheKey};
pub use maps::{ServiceKey, ServiceMatch, IPPROTO_TCP, IPPROTO_UDP};
pub use steering::{AttachedInterface, LoadOptions, RxQueue, Steering, XdpAction};
