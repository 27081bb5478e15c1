//! Ethernet II header (IEEE 802.3 §3.2.6 with the RFC 894 type field).

pub const HEADER_LEN: usize = 14;
pub const DST: usize = 0;
pub const SRC: usize = 6;
pub const ETHERTYPE: usize = 12;

/// EtherTypes from the IEEE registry (RFC 7042 appendix B).
pub const TYPE_IPV4: u16 = 0x0800;
pub const TYPE_ARP: u16 = 0x0806;
pub const TYPE_IPV6: u16 = 0x86dd;
/// C-tag TPID, IEEE 802.1Q.
pub const TYPE_DOT1Q: u16 = 0x8100;
/// S-tag TPID, IEEE 802.1ad.
pub const TYPE_DOT1AD: u16 = 0x88a8;
