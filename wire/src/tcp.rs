//! TCP header without options (RFC 9293 §3.1).

pub const MIN_HEADER_LEN: usize = 20;
pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
pub const SEQ: usize = 4;
pub const ACK: usize = 8;
/// Data offset in the high nibble, in 32-bit words.
pub const DATA_OFFSET: usize = 12;
/// CWR ECE URG ACK PSH RST SYN FIN, high bit first.
pub const FLAGS: usize = 13;
pub const CHECKSUM: usize = 16;

/// Bits of the `FLAGS` byte.
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_ACK: u8 = 0x10;
