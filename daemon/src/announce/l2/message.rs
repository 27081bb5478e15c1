//! The heartbeat LB nodes of one segment send each other: who they are,
//! whether they are draining, and which VIPs they are ready to announce.
//!
//! Versioned and bounded: a message is at most [`MAX_MESSAGE`] bytes, a
//! name at most [`MAX_NAME`], at most [`MAX_LISTED_VIPS`] addresses (a
//! node with more says "all of them", as if every node served the same
//! VIPs, which is what converged configs do). Decoding never panics and
//! refuses anything it does not fully understand, a newer version
//! included: a node on an older version then counts a newer peer as
//! silent, and both keep answering for what they own, so mixed versions
//! on one segment are to be avoided during an upgrade of the format.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAGIC: &[u8; 4] = b"SYL2";
const VERSION: u8 = 1;
pub const MAX_NAME: usize = 253;
pub const MAX_LISTED_VIPS: usize = 64;
pub const MAX_MESSAGE: usize = 4 + 1 + 1 + 8 + 1 + MAX_NAME + 2 + MAX_LISTED_VIPS * 16;

const DRAINING: u8 = 1;
const LEAVING: u8 = 2;
const ALL_VIPS: u8 = 4;

/// What a node's heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub name: String,
    /// Counts this process's heartbeats; shown, never trusted for order.
    pub sequence: u64,
    /// Drained (`yardctl node drain`): alive, but announces nothing.
    pub draining: bool,
    /// Stopping: announces nothing from now on, and sends no more.
    pub leaving: bool,
    /// The VIPs it is ready to announce; `None`: every VIP (too many to
    /// list).
    pub vips: Option<Vec<IpAddr>>,
}

impl Heartbeat {
    /// The VIPs to list: `None` when there are more than a message holds.
    pub fn listing(vips: &[IpAddr]) -> Option<Vec<IpAddr>> {
        (vips.len() <= MAX_LISTED_VIPS).then(|| vips.to_vec())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let mut flags = 0;
        if self.draining {
            flags |= DRAINING;
        }
        if self.leaving {
            flags |= LEAVING;
        }
        let listed = self.vips.as_ref().filter(|v| v.len() <= MAX_LISTED_VIPS);
        if listed.is_none() {
            flags |= ALL_VIPS;
        }
        out.push(flags);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        let mut name = self.name.as_bytes();
        if name.len() > MAX_NAME {
            name = &name[..MAX_NAME];
        }
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let listed = listed.map(Vec::as_slice).unwrap_or_default();
        let v4: Vec<Ipv4Addr> = listed
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<Ipv6Addr> = listed
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            })
            .collect();
        // At most MAX_LISTED_VIPS of each: the counts fit a byte.
        out.push(v4.len() as u8);
        out.push(v6.len() as u8);
        for a in v4 {
            out.extend_from_slice(&a.octets());
        }
        for a in v6 {
            out.extend_from_slice(&a.octets());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, &'static str> {
        if bytes.len() > MAX_MESSAGE {
            return Err("longer than any heartbeat");
        }
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err("not a Switchyard heartbeat");
        }
        if r.byte()? != VERSION {
            return Err("a heartbeat version this node does not know");
        }
        let flags = r.byte()?;
        if flags & !(DRAINING | LEAVING | ALL_VIPS) != 0 {
            return Err("unknown flags");
        }
        let sequence = u64::from_be_bytes(r.take(8)?.try_into().map_err(|_| "truncated")?);
        let name_len = usize::from(r.byte()?);
        let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| "a name not in UTF-8")?;
        if name.is_empty() {
            return Err("an empty name");
        }
        let (n4, n6) = (usize::from(r.byte()?), usize::from(r.byte()?));
        if n4 + n6 > MAX_LISTED_VIPS {
            return Err("too many VIPs");
        }
        let mut vips = Vec::with_capacity(n4 + n6);
        for _ in 0..n4 {
            let o: [u8; 4] = r.take(4)?.try_into().map_err(|_| "truncated")?;
            vips.push(IpAddr::from(o));
        }
        for _ in 0..n6 {
            let o: [u8; 16] = r.take(16)?.try_into().map_err(|_| "truncated")?;
            vips.push(IpAddr::from(o));
        }
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok(Heartbeat {
            name: name.to_owned(),
            sequence,
            draining: flags & DRAINING != 0,
            leaving: flags & LEAVING != 0,
            vips: (flags & ALL_VIPS == 0).then_some(vips),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn beat() -> Heartbeat {
        Heartbeat {
            name: "lb-a".into(),
            sequence: 7,
            draining: false,
            leaving: false,
            vips: Some(vec![
                "198.18.1.100".parse().unwrap(),
                "2001:db8:1::100".parse().unwrap(),
            ]),
        }
    }

    #[test]
    fn a_heartbeat_reads_back_as_written() {
        let bytes = beat().encode();
        assert_eq!(&bytes[..6], b"SYL2\x01\x00");
        assert_eq!(Heartbeat::decode(&bytes), Ok(beat()));
        let draining = Heartbeat {
            draining: true,
            leaving: true,
            vips: None,
            ..beat()
        };
        assert_eq!(Heartbeat::decode(&draining.encode()), Ok(draining));
    }

    #[test]
    fn more_vips_than_a_message_lists_read_as_all() {
        let many: Vec<IpAddr> = (0..=MAX_LISTED_VIPS as u32)
            .map(|i| IpAddr::from(Ipv4Addr::from(0xc612_0000 + i)))
            .collect();
        let beat = Heartbeat {
            vips: Heartbeat::listing(&many),
            ..beat()
        };
        assert_eq!(beat.vips, None);
        let bytes = beat.encode();
        assert!(bytes.len() <= MAX_MESSAGE);
        assert_eq!(Heartbeat::decode(&bytes).unwrap().vips, None);
    }

    #[test]
    fn another_version_truncation_or_trailing_bytes_are_refused() {
        let bytes = beat().encode();
        let mut newer = bytes.clone();
        newer[4] = 2;
        assert!(Heartbeat::decode(&newer).is_err());
        assert!(Heartbeat::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Heartbeat::decode(&longer).is_err());
    }

    proptest! {
        #[test]
        fn no_bytes_make_decode_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = Heartbeat::decode(&bytes);
        }

        #[test]
        fn every_encoded_heartbeat_decodes_to_itself(
            name in "[a-z0-9.-]{1,253}", sequence in any::<u64>(), draining in any::<bool>(),
            v4 in proptest::collection::vec(any::<u32>(), 0..40),
        ) {
            let beat = Heartbeat {
                name,
                sequence,
                draining,
                leaving: false,
                vips: Some(v4.into_iter().map(|a| IpAddr::from(Ipv4Addr::from(a))).collect()),
            };
            let bytes = beat.encode();
            prop_assert!(bytes.len() <= MAX_MESSAGE);
            prop_assert_eq!(Heartbeat::decode(&bytes), Ok(beat));
        }
    }
}
