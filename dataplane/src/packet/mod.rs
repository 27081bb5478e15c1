//! What a worker does to the bytes of a frame, over the header layouts and
//! checksums of `switchyard-wire`: it parses an Ethernet II frame (at most
//! one 802.1Q/802.1ad tag) carrying IPv4 TCP or UDP into a [`FlowKey`] and the
//! offsets of its headers ([`parse()`]), replays a per-flow NAT [`Rewrite`] on
//! the frame in place with incremental checksum updates ([`apply`]; a
//! checksum the sender left partial is computed in full instead), and
//! hashes a 5-tuple the same way on every node ([`flow_hash`]); ICMP and
//! ICMPv6 are read, answered and translated in place by [`icmp`]. It is pure:
//! no I/O, no clocks, no configuration. It must never allocate, make a
//! syscall or panic on packet bytes; a frame it cannot handle comes back as a
//! [`ParseError`], which the worker counts by name and drops. Fragments
//! are read through [`parse_l3`]: a first fragment becomes the
//! [`Parsed`] of its flow ([`parse_first_fragment`]), a later one gets its
//! datagram's addresses ([`rewrite_later_fragment`]).

pub mod encap;
mod fragment;
mod hash;
pub mod icmp;
mod parse;
mod partial;
pub mod proxy;
mod reset;
mod rewrite;
mod too_big;
mod vlan;

#[cfg(test)]
mod testutil;

pub use encap::{replace_head, EncapHead, Tunnel};
pub use fragment::{parse_first_fragment, rewrite_later_fragment};
pub use hash::{client_hash, flow_hash};
pub use parse::{parse, parse_l3, FlowKey, Fragment, ParseError, Parsed, L3};
pub use partial::has_partial_checksum;
pub use proxy::{ProxyHeader, ProxyStream, Splice};
pub use reset::tcp_reset;
pub use rewrite::{apply, checksum_deltas, ChecksumDeltas, L4Checksum, Rewrite};
pub use too_big::too_big;
pub use vlan::{pop as pop_tag, push as push_tag, retag, tag_of, TagEdit};
