use proptest::prelude::*;

use super::*;

const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x10];
const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];

/// `arping -I eth0 198.18.1.100` from 198.18.1.10, as seen on the wire.
const ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // to everyone
    0x02, 0, 0, 0, 0, 0x10, // from the client
    0x08, 0x06, // ARP
    0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4 request
    0x02, 0, 0, 0, 0, 0x10, 198, 18, 1, 10, // sender
    0, 0, 0, 0, 0, 0, 198, 18, 1, 100, // target
];

#[test]
fn an_arp_request_names_its_sender_and_target() {
    let request = parse_arp_request(&ARP_REQUEST).unwrap();
    assert_eq!(
        request,
        ArpRequest {
            sender_mac: CLIENT_MAC,
            sender_ip: Ipv4Addr::new(198, 18, 1, 10),
            target: Ipv4Addr::new(198, 18, 1, 100),
        }
    );
    assert!(!request.is_gratuitous());
}

#[test]
fn an_arp_reply_or_truncated_request_is_no_request() {
    let mut reply = ARP_REQUEST;
    reply[21] = 2;
    assert_eq!(parse_arp_request(&reply), None);
    assert_eq!(parse_arp_request(&ARP_REQUEST[..41]), None);
    let mut ipv6 = ARP_REQUEST;
    ipv6[16..18].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(parse_arp_request(&ipv6), None);
}

#[test]
fn the_arp_reply_tells_the_asker_the_vip_is_at_our_mac() {
    let reply = arp_reply(LB_MAC, &parse_arp_request(&ARP_REQUEST).unwrap());
    let mut expected = vec![
        0x02, 0, 0, 0, 0, 0x10, // to the client
        0x02, 0, 0, 0, 0, 0x02, // from the LB
        0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2, // reply
        0x02, 0, 0, 0, 0, 0x02, 198, 18, 1, 100, // the VIP is at the LB
        0x02, 0, 0, 0, 0, 0x10, 198, 18, 1, 10, // to the client
    ];
    expected.resize(60, 0);
    assert_eq!(reply, expected);
}

#[test]
fn a_gratuitous_arp_is_a_broadcast_request_for_the_vip_by_the_vip() {
    let vip = Ipv4Addr::new(198, 18, 1, 100);
    let frame = gratuitous_arp(LB_MAC, vip);
    assert_eq!(frame.len(), 60);
    assert_eq!(frame[..6], BROADCAST_MAC);
    let parsed = parse_arp_request(&frame).unwrap();
    assert!(parsed.is_gratuitous());
    assert_eq!((parsed.sender_mac, parsed.target), (LB_MAC, vip));
}

/// A solicitation for `target` from `source`, as Linux sends it: to the
/// target's solicited-node group, with a source link-layer option unless
/// from the unspecified address.
fn solicitation(source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node_group(&target);
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if !source.is_unspecified() {
        icmp.extend_from_slice(&[OPT_SOURCE_LLADDR, 1]);
        icmp.extend_from_slice(&CLIENT_MAC);
    }
    let checksum = icmpv6_checksum(&source, &group, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = multicast_mac(&group).to_vec();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[58, 255]);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&group.octets());
    frame.extend_from_slice(&icmp);
    frame
}

fn vip6() -> Ipv6Addr {
    "2001:db8:1::100".parse().unwrap()
}

fn client6() -> Ipv6Addr {
    "2001:db8:1::10".parse().unwrap()
}

#[test]
fn the_solicited_node_group_keeps_the_low_24_bits() {
    let group = solicited_node_group(&"2001:db8:1::12:3456".parse().unwrap());
    assert_eq!(group, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
    assert_eq!(multicast_mac(&group), [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
}

#[test]
fn a_solicitation_names_its_target_and_the_askers_mac() {
    let parsed = parse_neighbor_solicitation(&solicitation(client6(), vip6())).unwrap();
    assert_eq!(
        parsed,
        NeighborSolicitation {
            source: client6(),
            source_mac: CLIENT_MAC,
            target: vip6(),
        }
    );
}

#[test]
fn a_solicitation_with_a_bad_checksum_hop_limit_or_option_is_refused() {
    let good = solicitation(client6(), vip6());
    let mut checksum = good.clone();
    checksum[ETH_LEN + IPV6_LEN + 2] ^= 1;
    let mut forwarded = good.clone();
    forwarded[ETH_LEN + 7] = 254;
    let mut empty_option = good.clone();
    empty_option[ETH_LEN + IPV6_LEN + 25] = 0;
    for frame in [
        checksum,
        forwarded,
        empty_option,
        good[..good.len() - 1].to_vec(),
    ] {
        assert_eq!(parse_neighbor_solicitation(&frame), None);
    }
}

#[test]
fn the_advertisement_answers_the_asker_solicited_with_override() {
    let ns = parse_neighbor_solicitation(&solicitation(client6(), vip6())).unwrap();
    let na = solicited_advertisement(LB_MAC, &ns);
    assert_eq!(na.len(), ETH_LEN + IPV6_LEN + 32);
    assert_eq!(na[..6], CLIENT_MAC);
    assert_eq!(na[6..12], LB_MAC);
    assert_eq!(ipv6_at(&na, ETH_LEN + 8), Some(vip6()));
    assert_eq!(ipv6_at(&na, ETH_LEN + 24), Some(client6()));
    let icmp = &na[ETH_LEN + IPV6_LEN..];
    assert_eq!((icmp[0], icmp[4]), (NEIGHBOR_ADVERTISEMENT, 0x60));
    assert_eq!(ipv6_at(icmp, 8), Some(vip6()));
    assert_eq!(icmp[24..32], [2, 1, 0x02, 0, 0, 0, 0, 0x02]);
    assert_eq!(icmpv6_checksum(&vip6(), &client6(), icmp), 0);
}

#[test]
fn a_duplicate_address_probe_is_answered_to_all_nodes_unsolicited() {
    let ns = parse_neighbor_solicitation(&solicitation(Ipv6Addr::UNSPECIFIED, vip6())).unwrap();
    let na = solicited_advertisement(LB_MAC, &ns);
    assert_eq!(na[..6], [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(ipv6_at(&na, ETH_LEN + 24), Some(ALL_NODES));
    assert_eq!(na[ETH_LEN + IPV6_LEN + 4], 0x20);
}

#[test]
fn an_unsolicited_advertisement_overrides_at_all_nodes_with_a_valid_checksum() {
    let na = unsolicited_advertisement(LB_MAC, vip6());
    let icmp = &na[ETH_LEN + IPV6_LEN..];
    assert_eq!(icmp[4], 0x20);
    assert_eq!(icmpv6_checksum(&vip6(), &ALL_NODES, icmp), 0);
    // Not a solicitation: never taken for a question by another speaker.
    assert_eq!(parse_neighbor_solicitation(&na), None);
}

proptest! {
    #[test]
    fn no_bytes_make_the_parsers_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_arp_request(&frame);
        let _ = parse_neighbor_solicitation(&frame);
    }

    #[test]
    fn no_change_to_a_solicitation_makes_the_parser_panic(
        at in 0usize..118, byte in any::<u8>(), cut in 0usize..120,
    ) {
        let mut frame = solicitation(client6(), vip6());
        if let Some(b) = frame.get_mut(at) {
            *b = byte;
        }
        frame.truncate(cut.max(1));
        let _ = parse_neighbor_solicitation(&frame);
    }
}
