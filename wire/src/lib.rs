//! The wire formats Switchyard reads and writes: the byte layout of
//! Ethernet II, 802.1Q/802.1ad tags, IPv4, IPv6 (with its extension and
//! fragment headers), TCP, UDP, ICMP and ICMPv6 as named field offsets with
//! accessors whose bounds the compiler checks; the Internet checksum (RFC
//! 1071, with RFC 1624 incremental updates and the IPv4 and IPv6
//! pseudo-headers); and the packet fixtures, literal frames with what the
//! steering program and the worker must do with each. It must never
//! allocate, panic on any input, or know about flows, listeners or
//! configuration: it says where a field is and how a checksum changes, and
//! the packet path decides the rest.

pub mod checksum;
pub mod ethernet;
mod field;
pub mod fixtures;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use field::{read_bytes, read_u16, read_u32, write_bytes, write_u16, write_u32};
