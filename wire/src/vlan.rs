//! The 4 bytes a VLAN tag inserts before the inner EtherType: TCI, then the
//! EtherType of what follows (IEEE 802.1Q §9.6).

pub const TAG_LEN: usize = 4;
pub const INNER_ETHERTYPE: usize = 2;
