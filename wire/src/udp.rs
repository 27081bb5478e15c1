//! UDP header (RFC 768).

pub const HEADER_LEN: usize = 8;
pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
pub const LENGTH: usize = 4;
pub const CHECKSUM: usize = 6;
