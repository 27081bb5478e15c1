//! IPv4 header without options (RFC 791 §3.1).

pub const MIN_HEADER_LEN: usize = 20;
pub const VERSION_IHL: usize = 0;
pub const TOTAL_LEN: usize = 2;
/// Identification: with the addresses and protocol, which packet a
/// fragment belongs to.
pub const IDENTIFICATION: usize = 4;
pub const FLAGS_FRAGMENT_OFFSET: usize = 6;
pub const TTL: usize = 8;
pub const PROTOCOL: usize = 9;
pub const CHECKSUM: usize = 10;
pub const SRC: usize = 12;
pub const DST: usize = 16;

pub const VERSION: u8 = 4;
/// DF flag: the sender asks routers not to fragment (path MTU discovery,
/// RFC 1191); it says nothing about whether this is a fragment.
pub const DONT_FRAGMENT: u16 = 0x4000;
/// MF flag: more fragments follow this one.
pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// IANA protocol numbers; IPv6 uses the same ones in its Next Header field.
pub const PROTOCOL_ICMP: u8 = 1;
pub const PROTOCOL_TCP: u8 = 6;
pub const PROTOCOL_UDP: u8 = 17;
