//! Switchyard's fuzz targets: one function per reader of untrusted input
//! (packet parse and rewrite, the Internet checksum, config load and
//! resolution, control-socket requests, netlink datagrams), each taking
//! raw bytes and asserting what must hold for every input. The same
//! functions run under libFuzzer (`make fuzz`, the `fuzz-*` binaries of
//! the `libfuzzer` feature) and as a plain test that replays every kept
//! regression and seed (`tests/regressions.rs`), so `make test` needs no
//! fuzzing toolchain. A target must never touch the network, files or
//! clocks, and must never depend on state left by an earlier input: a
//! crash has to reproduce from its one file.

mod checksum;
mod config;
mod control;
mod netlink;
mod packet;
pub mod seeds;

pub use checksum::checksum;
pub use config::config;
pub use control::control;
pub use netlink::netlink;
pub use packet::{packet, PLAN_LEN};

/// A target: any bytes in, a panic when something that must hold did not.
pub type Target = fn(&[u8]);

/// Every target by the name its corpus and regression folders carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("packet", packet),
    ("checksum", checksum),
    ("config", config),
    ("control", control),
    ("netlink", netlink),
];
