//! The seed corpora: real inputs of each target, so fuzzing starts from
//! what Switchyard meets rather than from nothing. Frames are the packet
//! fixtures and the XDP tests' frames with the rewrites the fixtures
//! expect; configs are the examples and the vendored upstream manifests
//! (and any folder named on the command line of `yard-fuzz-seed`);
//! requests are what `yardctl` sends; netlink datagrams are messages the
//! kernel sends, emitted by the same `netlink-packet-route` types.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_MULTIPART};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteNextHop, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use switchyard_dataplane::packet::Rewrite;
use switchyard_proto::{CandidateConfig, FlowQuery, FlowSort, Request};
use switchyard_wire::fixtures::{self, scenario};

use crate::packet::plan_bytes;

#[allow(dead_code)]
#[path = "../../xdp/tests/common/frames.rs"]
mod xdp_frames;

/// Largest config text a seed may be: the CRDs are schemas, not configs.
const MAX_CONFIG_SEED: usize = 32 << 10;

/// One seed: a name unique in its target's corpus, and its bytes.
pub type Seed = (String, Vec<u8>);

/// The seeds of `target`; config files are also read from `extra` folders.
pub fn seeds(target: &str, extra: &[PathBuf]) -> Vec<Seed> {
    match target {
        "packet" => packet(),
        "checksum" => checksum(),
        "config" => config(extra),
        "control" => control(),
        "netlink" => netlink(),
        _ => Vec::new(),
    }
}

/// The repository's root, for the files seeds are read from.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn frames() -> Vec<(String, Vec<u8>)> {
    let mut frames: Vec<(String, Vec<u8>)> = fixtures::FIXTURES
        .iter()
        .map(|f| (f.name.to_owned(), f.input.to_vec()))
        .collect();
    let (client, vip) = (scenario::CLIENT, scenario::VIP);
    let syn = xdp_frames::tcp_frame(client, 40000, vip, 80);
    let data = xdp_frames::tcp_data_frame(client, 40000, vip, 80, b"hello, switchyard");
    let udp = xdp_frames::udp_frame(client, 40000, vip, 53);
    frames.push((
        "xdp_tcp_partial".into(),
        xdp_frames::with_partial_checksum(&data),
    ));
    frames.push((
        "xdp_udp_partial".into(),
        xdp_frames::with_partial_checksum(&udp),
    ));
    frames.push(("xdp_tcp_syn".into(), syn));
    frames.push(("xdp_tcp_data".into(), data));
    frames.push(("xdp_udp".into(), udp));
    frames
}

fn packet() -> Vec<Seed> {
    let dnat = Rewrite {
        eth_src: scenario::LB_BACKEND_ARM_MAC,
        eth_dst: scenario::BACKEND_MAC,
        ip_src: scenario::CLIENT.into(),
        ip_dst: scenario::BACKEND.into(),
        src_port: 40000,
        dst_port: scenario::BACKEND_TCP_PORT,
    };
    let snat = Rewrite {
        eth_src: scenario::LB_CLIENT_ARM_MAC,
        eth_dst: scenario::CLIENT_MAC,
        ip_src: scenario::VIP.into(),
        ip_dst: scenario::CLIENT.into(),
        src_port: scenario::TCP_PORT,
        dst_port: 40000,
    };
    let fullnat = Rewrite {
        ip_src: scenario::LB_BACKEND_ARM.into(),
        src_port: 61000,
        ..dnat
    };
    let mut seeds = Vec::new();
    for (name, frame) in frames() {
        for (plan, rewrite) in [("dnat", &dnat), ("snat", &snat), ("fullnat", &fullnat)] {
            let mut input = plan_bytes(rewrite).to_vec();
            input.extend_from_slice(&frame);
            seeds.push((format!("{name}-{plan}"), input));
        }
    }
    seeds
}

fn checksum() -> Vec<Seed> {
    frames()
        .into_iter()
        .map(|(name, frame)| {
            // The IPv4 header (checksum at its 10th byte) and on.
            let mut input = vec![5, 0x0a, 0x01, 10, 1, 0, 5];
            input.extend_from_slice(frame.get(14 + 10..).unwrap_or_default());
            (name, input)
        })
        .collect()
}

fn config(extra: &[PathBuf]) -> Vec<Seed> {
    let mut dirs = vec![
        root().join("config/examples"),
        root().join("config/tests/conformance"),
    ];
    dirs.extend(extra.iter().cloned());
    let mut files = Vec::new();
    for dir in &dirs {
        yaml_files(dir, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let text = fs::read(&path).ok()?;
            (text.len() <= MAX_CONFIG_SEED).then(|| {
                let name = path
                    .strip_prefix(root())
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('/', "_");
                (name, text)
            })
        })
        .collect()
}

/// Every `.yaml` under `dir`, in any depth; a folder that cannot be read
/// adds nothing.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// What `yardctl` sends for each of its commands, against the demo config.
fn control() -> Vec<Seed> {
    let backend = "198.18.2.21:8080".to_owned();
    let listener = Some("demo/edge/tcp-echo".to_owned());
    let candidate = || CandidateConfig {
        file: "demo.yaml".to_owned(),
        contents: crate::control::DEMO_CONFIG.to_owned(),
    };
    let requests = [
        ("status", Request::Status),
        ("stats", Request::Stats),
        ("flows", Request::Flows),
        ("listeners", Request::Listeners),
        ("latency", Request::Latency),
        ("config_status", Request::ConfigStatus),
        ("backends", Request::Backends { listener: None }),
        (
            "backends_of",
            Request::Backends {
                listener: listener.clone(),
            },
        ),
        (
            "query_flows",
            Request::QueryFlows(FlowQuery {
                listener: listener.clone(),
                client: Some("198.18.1.0/24".to_owned()),
                backend: Some(backend.clone()),
                sort: Some(FlowSort::Bytes),
                limit: Some(10),
            }),
        ),
        (
            "drain",
            Request::Drain {
                backend: backend.clone(),
                listener: None,
            },
        ),
        (
            "drain_on",
            Request::Drain {
                backend: backend.clone(),
                listener: listener.clone(),
            },
        ),
        (
            "undrain",
            Request::Undrain {
                backend,
                listener: None,
            },
        ),
        (
            "explain_tcp",
            Request::Explain {
                protocol: "tcp".to_owned(),
                client: "198.18.1.7:40000".to_owned(),
                vip: "198.18.100.10:80".to_owned(),
            },
        ),
        (
            "explain_udp",
            Request::Explain {
                protocol: "udp".to_owned(),
                client: "198.18.1.7:40000".to_owned(),
                vip: "198.18.100.10:53".to_owned(),
            },
        ),
        ("config_check", Request::ConfigCheck(candidate())),
        ("config_diff", Request::ConfigDiff(candidate())),
    ];
    requests
        .into_iter()
        .map(|(name, request)| {
            let line = serde_json::to_vec(&request).expect("requests serialize");
            (name.to_owned(), line)
        })
        .collect()
}

fn netlink() -> Vec<Seed> {
    let ifindex = 2;
    let mac = vec![0x02, 0, 0, 0, 0, 0x1b];

    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes = vec![
        LinkAttribute::IfName("sy0".to_owned()),
        LinkAttribute::Address(mac.clone()),
        LinkAttribute::Link(7),
        LinkAttribute::LinkNetNsId(3),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
    ];

    let route = |dst: Ipv4Addr, prefix: u8, attributes: Vec<RouteAttribute>| {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = prefix;
        route.header.table = libc::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Kernel;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        route.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet(dst))];
        route.attributes.extend(attributes);
        route
    };
    let on_link = route(
        Ipv4Addr::new(10, 1, 0, 0),
        24,
        vec![RouteAttribute::Oif(ifindex), RouteAttribute::Priority(100)],
    );
    let default = route(
        Ipv4Addr::UNSPECIFIED,
        0,
        vec![
            RouteAttribute::Oif(ifindex),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 1, 0, 254))),
        ],
    );
    let hop = |gateway: Ipv4Addr| {
        let mut hop = RouteNextHop::default();
        hop.interface_index = ifindex;
        hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
        hop
    };
    let multipath = route(
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        vec![RouteAttribute::MultiPath(vec![
            hop(Ipv4Addr::new(10, 1, 0, 253)),
            hop(Ipv4Addr::new(10, 1, 0, 254)),
        ])],
    );

    let neighbour = |ip: Ipv4Addr| {
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = ifindex;
        n.header.state = NeighbourState::Reachable;
        n.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
            NeighbourAttribute::LinkLayerAddress(vec![0x02, 0, 0, 0, 0, 0xbe]),
        ];
        n
    };

    let dump = vec![
        RouteNetlinkMessage::NewLink(link.clone()),
        RouteNetlinkMessage::NewRoute(on_link.clone()),
        RouteNetlinkMessage::NewRoute(default),
        RouteNetlinkMessage::NewRoute(multipath),
        RouteNetlinkMessage::NewNeighbour(neighbour(Ipv4Addr::new(10, 1, 0, 5))),
        RouteNetlinkMessage::NewNeighbour(neighbour(Ipv4Addr::new(10, 1, 0, 254))),
    ];
    let mut seeds = vec![
        ("link".to_owned(), datagram(&dump[..1])),
        ("route".to_owned(), datagram(&dump[1..2])),
        ("neighbour".to_owned(), datagram(&dump[4..5])),
        ("dump".to_owned(), datagram(&dump)),
        (
            "notifications".to_owned(),
            datagram(&[
                RouteNetlinkMessage::DelNeighbour(neighbour(Ipv4Addr::new(10, 1, 0, 5))),
                RouteNetlinkMessage::DelRoute(on_link),
                RouteNetlinkMessage::DelLink(link),
            ]),
        ),
    ];
    seeds.push(("netdev_family".to_owned(), genl_family_answer()));
    seeds.push(("xdp_features".to_owned(), genl_features_answer()));
    seeds
}

/// `messages` as one datagram, each with its netlink header.
fn datagram(messages: &[RouteNetlinkMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, inner) in messages.iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_MULTIPART;
        header.sequence_number = seq as u32 + 1;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner.clone()));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        out.extend_from_slice(&bytes);
    }
    out
}

/// One netlink attribute, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len + 3);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// A generic netlink message of family `kind`: header, genlmsghdr, body.
fn genl_message(kind: u16, body: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[1, 2, 0, 0]);
    out.extend_from_slice(body);
    out
}

/// The controller's answer for the `netdev` family, with its `mgmt` group.
fn genl_family_answer() -> Vec<u8> {
    let mut group = nla(libc::CTRL_ATTR_MCAST_GRP_NAME as u16, b"mgmt\0");
    group.extend(nla(
        libc::CTRL_ATTR_MCAST_GRP_ID as u16,
        &5u32.to_ne_bytes(),
    ));
    let groups = nla(libc::CTRL_ATTR_MCAST_GROUPS as u16, &nla(1, &group));
    let mut body = nla(libc::CTRL_ATTR_FAMILY_NAME as u16, b"netdev\0");
    body.extend(nla(libc::CTRL_ATTR_FAMILY_ID as u16, &32u16.to_ne_bytes()));
    body.extend(groups);
    genl_message(libc::GENL_ID_CTRL as u16, &body)
}

/// The `netdev` family's answer to `NETDEV_CMD_DEV_GET`: ifindex and XDP
/// features (basic, redirect, NDO_XMIT).
fn genl_features_answer() -> Vec<u8> {
    let mut body = nla(1, &2u32.to_ne_bytes());
    body.extend(nla(3, &0b111u64.to_ne_bytes()));
    genl_message(32, &body)
}
