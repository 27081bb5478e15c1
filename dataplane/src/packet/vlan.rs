//! The VLAN tag a frame leaves with. A frame keeps the tag it came with
//! unless its egress link says otherwise: a route out of a VLAN link of an
//! owned interface (`eth0.100`) wants that VLAN's tag whatever the frame
//! arrived with, and a route out of the interface itself wants none. A
//! tag that only changes is rewritten in place; adding or removing one
//! changes the frame's length, which only the packet I/O can do (it owns
//! the buffer), so it is named in the verdict (`Verdict::TransmitPushed`,
//! `Verdict::TransmitPopped`). Frames with two tags never get here
//! (`parse` refuses them).

use switchyard_wire::{ethernet, vlan};

use crate::neighbor::VlanTag;

/// Where a tag starts: right after the two MAC addresses.
const TAG_AT: usize = ethernet::HEADER_LEN - 2;
/// The VLAN id's bits of the TCI; the rest are priority and drop
/// eligibility, which a retagged frame keeps.
const VID_MASK: u16 = 0x0fff;

/// What the frame needs for its egress link's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagEdit {
    /// It already carries what the link wants (or both want none).
    Kept,
    /// Its tag was rewritten in place to the link's.
    Retagged,
    /// It came untagged and must leave with these 4 bytes (TPID, TCI)
    /// after its MAC addresses.
    Push([u8; vlan::TAG_LEN]),
    /// It came tagged and must leave without the tag.
    Pop,
}

/// Brings the tag of `frame`, whose IP header starts at `l3_offset` (14,
/// or 18 behind one tag, as `parse` found it), to what `egress` wants:
/// in place when the frame has a tag and keeps one, else the edit the
/// packet I/O makes. A frame too short for its `l3_offset` is kept as is.
#[inline(always)]
pub fn retag(frame: &mut [u8], l3_offset: usize, egress: Option<VlanTag>) -> TagEdit {
    let tagged = l3_offset == ethernet::HEADER_LEN + vlan::TAG_LEN;
    match (tagged, egress) {
        (false, None) => TagEdit::Kept,
        (false, Some(tag)) => TagEdit::Push(tag_bytes(tag, 0)),
        (true, None) => TagEdit::Pop,
        (true, Some(tag)) => {
            let Some(bytes) = frame.get_mut(TAG_AT..TAG_AT + vlan::TAG_LEN) else {
                return TagEdit::Kept;
            };
            let tci = u16::from_be_bytes([bytes[2], bytes[3]]);
            let new = tag_bytes(tag, tci & !VID_MASK);
            if bytes == new {
                return TagEdit::Kept;
            }
            bytes.copy_from_slice(&new);
            TagEdit::Retagged
        }
    }
}

/// The tag a frame carries, if `l3_offset` says it has one.
pub fn tag_of(frame: &[u8], l3_offset: usize) -> Option<VlanTag> {
    if l3_offset != ethernet::HEADER_LEN + vlan::TAG_LEN {
        return None;
    }
    let bytes = frame.get(TAG_AT..TAG_AT + vlan::TAG_LEN)?;
    Some(VlanTag {
        tpid: u16::from_be_bytes([bytes[0], bytes[1]]),
        id: u16::from_be_bytes([bytes[2], bytes[3]]) & VID_MASK,
    })
}

fn tag_bytes(tag: VlanTag, priority: u16) -> [u8; vlan::TAG_LEN] {
    let [t0, t1] = tag.tpid.to_be_bytes();
    let [c0, c1] = (priority | (tag.id & VID_MASK)).to_be_bytes();
    [t0, t1, c0, c1]
}

/// Inserts `tag` after the MAC addresses of the `len`-byte frame at the
/// start of `buf`, moving what follows 4 bytes on; returns the new length,
/// or `None` (nothing moved) when `buf` has no room or the frame is
/// shorter than its MAC addresses.
pub fn push(buf: &mut [u8], len: usize, tag: [u8; vlan::TAG_LEN]) -> Option<usize> {
    let grown = len.checked_add(vlan::TAG_LEN)?;
    if len < TAG_AT || grown > buf.len() {
        return None;
    }
    buf.copy_within(TAG_AT..len, TAG_AT + vlan::TAG_LEN);
    buf[TAG_AT..TAG_AT + vlan::TAG_LEN].copy_from_slice(&tag);
    Some(grown)
}

/// Removes the 4 bytes after the MAC addresses of the `len`-byte frame at
/// the start of `buf` (its tag), moving what follows back; returns the new
/// length, or `None` (nothing moved) when the frame has no room for a tag.
pub fn pop(buf: &mut [u8], len: usize) -> Option<usize> {
    let end = len.min(buf.len());
    if end < TAG_AT + vlan::TAG_LEN {
        return None;
    }
    buf.copy_within(TAG_AT + vlan::TAG_LEN..end, TAG_AT);
    Some(end - vlan::TAG_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q100: VlanTag = VlanTag {
        tpid: 0x8100,
        id: 100,
    };

    /// MACs, then `tag`, then an IPv4 EtherType and 4 bytes of "packet".
    fn frame(tag: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        if let Some(tag) = tag {
            f.extend(tag);
        }
        f.extend([0x08, 0x00, 0x45, 0x00, 0x00, 0x14]);
        f
    }

    fn l3_offset(f: &[u8]) -> usize {
        if f[12..14] == [0x81, 0x00] || f[12..14] == [0x88, 0xa8] {
            18
        } else {
            14
        }
    }

    #[test]
    fn a_tagged_frame_is_retagged_in_place_keeping_its_priority() {
        // PCP 5, DEI 1, VID 10.
        let mut f = frame(Some([0x81, 0x00, 0xb0, 0x0a]));
        assert_eq!(retag(&mut f, 18, Some(Q100)), TagEdit::Retagged);
        assert_eq!(f, frame(Some([0x81, 0x00, 0xb0, 0x64])));
        assert_eq!(retag(&mut f, 18, Some(Q100)), TagEdit::Kept);
        let ad = VlanTag {
            tpid: 0x88a8,
            id: 4094,
        };
        assert_eq!(retag(&mut f, 18, Some(ad)), TagEdit::Retagged);
        assert_eq!(f, frame(Some([0x88, 0xa8, 0xbf, 0xfe])));
        assert_eq!(tag_of(&f, l3_offset(&f)), Some(ad));
    }

    #[test]
    fn an_untagged_frame_for_a_vlan_gets_a_tag_pushed() {
        let mut f = frame(None);
        let TagEdit::Push(tag) = retag(&mut f, 14, Some(Q100)) else {
            panic!("no push");
        };
        assert_eq!(tag, [0x81, 0x00, 0x00, 0x64]);
        assert_eq!(f, frame(None), "the frame itself waits for the I/O");
        let len = f.len();
        f.extend([0xee; 4]);
        assert_eq!(push(&mut f, len, tag), Some(len + 4));
        assert_eq!(f, frame(Some([0x81, 0x00, 0x00, 0x64])));
        assert_eq!(tag_of(&f, 18), Some(Q100));
    }

    #[test]
    fn a_tagged_frame_for_the_parent_link_has_its_tag_popped() {
        let mut f = frame(Some([0x81, 0x00, 0x00, 0x0a]));
        assert_eq!(retag(&mut f, 18, None), TagEdit::Pop);
        let len = f.len();
        assert_eq!(pop(&mut f, len), Some(len - 4));
        f.truncate(len - 4);
        assert_eq!(f, frame(None));
        assert_eq!(tag_of(&f, 14), None);
    }

    #[test]
    fn an_untagged_frame_for_the_parent_is_kept() {
        let mut f = frame(None);
        assert_eq!(retag(&mut f, 14, None), TagEdit::Kept);
        assert_eq!(f, frame(None));
    }

    #[test]
    fn push_and_pop_refuse_what_does_not_fit() {
        let mut f = frame(None);
        let len = f.len();
        assert_eq!(push(&mut f, len, [0x81, 0, 0, 1]), None, "no room");
        assert_eq!(f, frame(None));
        assert_eq!(push(&mut f[..11], 11, [0x81, 0, 0, 1]), None);
        assert_eq!(pop(&mut f[..15], 15), None);
        let mut short = [0u8; 3];
        assert_eq!(retag(&mut short, 18, Some(Q100)), TagEdit::Kept);
        assert_eq!(tag_of(&short, 18), None);
    }

    #[test]
    fn push_then_pop_restores_any_frame() {
        for extra in 0..40usize {
            let mut f: Vec<u8> = (0..(12 + extra) as u8).collect();
            let original = f.clone();
            let len = f.len();
            f.extend([0; 4]);
            let grown = push(&mut f, len, [0x81, 0, 0x0f, 0xff]).unwrap();
            assert_eq!(pop(&mut f, grown), Some(len));
            f.truncate(len);
            assert_eq!(f, original);
        }
    }
}
