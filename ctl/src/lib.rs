//! `yardctl`'s library half: the control-socket protocol and a client for
//! it. The daemon depends on this crate for the same types, so both sides
//! cannot drift apart.
pub mod client;
pub mod inventory;
pub mod latency;
pub mod output;
pub mod proto;
pub mod rates;
pub mod tables;
