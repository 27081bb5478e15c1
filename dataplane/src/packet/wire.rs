//! Byte layout of the headers this module reads and writes, and accessors
//! that cannot panic. A header is borrowed as `&[u8; N]` once its length has
//! been checked (`first_chunk`), the smoltcp "check once" habit in a form the
//! compiler proves: every accessor takes its offset as a const generic and
//! asserts `offset + width <= N` at compile time, and a single byte is read
//! by constant index into the array, which rustc checks the same way. A wrong
//! offset fails the build instead of panicking on a packet.

/// Big-endian `u16` at byte `AT` of a header of length `N`.
#[inline(always)]
pub(super) const fn read_u16<const AT: usize, const N: usize>(hdr: &[u8; N]) -> u16 {
    const { assert!(AT + 2 <= N, "field outside header") };
    u16::from_be_bytes([hdr[AT], hdr[AT + 1]])
}

/// Big-endian `u32` at byte `AT` of a header of length `N`.
#[inline(always)]
pub(super) const fn read_u32<const AT: usize, const N: usize>(hdr: &[u8; N]) -> u32 {
    const { assert!(AT + 4 <= N, "field outside header") };
    u32::from_be_bytes([hdr[AT], hdr[AT + 1], hdr[AT + 2], hdr[AT + 3]])
}

/// Writes `value` big-endian at byte `AT` of a header of length `N`.
#[inline(always)]
pub(super) fn write_u16<const AT: usize, const N: usize>(hdr: &mut [u8; N], value: u16) {
    write_bytes::<AT, 2, N>(hdr, value.to_be_bytes());
}

/// Writes `value` big-endian at byte `AT` of a header of length `N`.
#[inline(always)]
pub(super) fn write_u32<const AT: usize, const N: usize>(hdr: &mut [u8; N], value: u32) {
    write_bytes::<AT, 4, N>(hdr, value.to_be_bytes());
}

/// Copies `bytes` to `AT..AT + M` of a header of length `N`.
#[inline(always)]
pub(super) fn write_bytes<const AT: usize, const M: usize, const N: usize>(
    hdr: &mut [u8; N],
    bytes: [u8; M],
) {
    const { assert!(AT + M <= N, "field outside header") };
    hdr[AT..AT + M].copy_from_slice(&bytes);
}

/// Ethernet II header (IEEE 802.3 §3.2.6 with the RFC 894 type field).
pub(super) mod ethernet {
    pub const HEADER_LEN: usize = 14;
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;

    pub const TYPE_IPV4: u16 = etherparse::EtherType::IPV4.0;
    /// C-tag TPID, IEEE 802.1Q.
    pub const TYPE_DOT1Q: u16 = etherparse::EtherType::VLAN_TAGGED_FRAME.0;
    /// S-tag TPID, IEEE 802.1ad.
    pub const TYPE_DOT1AD: u16 = etherparse::EtherType::PROVIDER_BRIDGING.0;
}

/// The 4 bytes a VLAN tag inserts before the inner EtherType: TCI, then the
/// EtherType of what follows (IEEE 802.1Q §9.6).
pub(super) mod vlan {
    pub const TAG_LEN: usize = 4;
    pub const INNER_ETHERTYPE: usize = 2;
}

/// IPv4 header without options (RFC 791 §3.1).
pub(super) mod ipv4 {
    pub const MIN_HEADER_LEN: usize = 20;
    pub const VERSION_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAGMENT_OFFSET: usize = 6;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;

    pub const VERSION: u8 = 4;
    /// MF flag; DF (0x4000) says nothing about whether this is a fragment.
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    pub const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

    pub const PROTOCOL_TCP: u8 = etherparse::IpNumber::TCP.0;
    pub const PROTOCOL_UDP: u8 = etherparse::IpNumber::UDP.0;
}

/// TCP header without options (RFC 9293 §3.1).
pub(super) mod tcp {
    pub const MIN_HEADER_LEN: usize = 20;
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    /// Data offset in the high nibble, in 32-bit words.
    pub const DATA_OFFSET: usize = 12;
    /// CWR ECE URG ACK PSH RST SYN FIN, high bit first.
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: usize = 16;
}

/// UDP header (RFC 768).
pub(super) mod udp {
    pub const HEADER_LEN: usize = 8;
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}
