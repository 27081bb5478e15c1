//! What the kernel says about an interface's XDP egress, over netlink: its
//! XDP features (the `netdev` generic netlink family, Linux 6.3+), its veth
//! peer (rtnetlink `RTM_GETLINK`, also of a link in another namespace
//! through `IFLA_TARGET_NETNSID`), and the name of a namespace by its id
//! (`RTM_GETNSID`). Everything is read from the daemon's own namespace; it
//! never enters another one.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{Emitable, ParseableParametrized, NLA_TYPE_MASK, NLMSG_ERROR};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkHeader, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_ROUTE};
use netlink_sys::Socket;

use crate::netlink::{attributes, Requester};

/// The generic netlink family of network devices (include/uapi/linux/
/// netdev.h), and what Switchyard reads of it.
const NETDEV_FAMILY: &str = "netdev";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_MGMT_GROUP: &str = "mgmt";
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the device takes frames from `ndo_xdp_xmit`,
/// which devmap redirects need; a veth sets it only while its peer runs
/// NAPI (drivers/net/veth.c, `veth_set_xdp_features`), which XDP_TX into
/// the veth needs too.
pub(super) const XDP_ACT_NDO_XMIT: u64 = 1 << 2;

/// Generic netlink control family (include/uapi/linux/genetlink.h).
const CTRL_VERSION: u8 = 2;

/// rtnetlink attributes read here (include/uapi/linux/if_link.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;

/// `NETNSA_NSID` (include/uapi/linux/net_namespace.h).
const NETNSA_NSID: u16 = 1;

/// Where named network namespaces live (`ip netns`).
const NAMED_NETNS_DIR: &str = "/run/netns";

/// A link as `RTM_GETLINK` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Link {
    pub name: String,
    /// Its `IFLA_INFO_KIND` is `veth`.
    pub veth: bool,
    /// `IFLA_LINK`: for a veth, the peer's ifindex in the peer's namespace.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace of `link`, when not this one.
    pub link_netnsid: Option<i32>,
    /// An XDP program is attached, in any mode.
    pub xdp: bool,
}

/// `netdev` family id and its `mgmt` multicast group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetdevFamily {
    id: u16,
    mgmt_group: Option<u32>,
}

/// The sockets the watch asks its questions on.
pub(super) struct Queries {
    route: Requester,
    generic: Requester,
    /// `None` on kernels without the `netdev` family (before 6.3).
    netdev: Option<NetdevFamily>,
}

impl Queries {
    pub(super) fn open() -> io::Result<Self> {
        let route = Requester::open(NETLINK_ROUTE)?;
        let mut generic = Requester::open(NETLINK_GENERIC)?;
        let netdev = resolve_family(&mut generic, NETDEV_FAMILY)?;
        Ok(Self {
            route,
            generic,
            netdev,
        })
    }

    pub(super) fn netdev(&self) -> Option<NetdevFamily> {
        self.netdev
    }

    /// The XDP features of `ifindex` (`NETDEV_XDP_ACT_*` bits); `None`
    /// when the kernel has no `netdev` family.
    pub(super) fn xdp_features(&mut self, ifindex: u32) -> io::Result<Option<u64>> {
        let Some(family) = self.netdev else {
            return Ok(None);
        };
        let mut body = genl_header(NETDEV_CMD_DEV_GET, NETDEV_FAMILY_VERSION);
        push_nla(&mut body, NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
        let (_, payload) = self.generic.request(family.id, &body)?;
        xdp_features_of(&payload)
            .map(Some)
            .ok_or_else(|| invalid("the netdev family sent no XDP features"))
    }

    /// `ifindex` in this namespace, or in the namespace with id `netnsid`.
    pub(super) fn link(&mut self, ifindex: u32, netnsid: Option<i32>) -> io::Result<Link> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        if let Some(id) = netnsid {
            // IFLA_TARGET_NETNSID (named IfNetnsId here): answer for a link
            // of another namespace without entering it (Linux 4.20+).
            msg.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        let request = RouteNetlinkMessage::GetLink(msg);
        let (kind, payload) = self
            .route
            .request(request.message_type(), &emit(&request))?;
        if kind != libc::RTM_NEWLINK {
            return Err(invalid("RTM_GETLINK answered without a link"));
        }
        parse_link(&payload).ok_or_else(|| invalid("an RTM_NEWLINK that does not parse"))
    }

    /// The name under `/run/netns` of the namespace with id `netnsid`, if
    /// it has one there.
    pub(super) fn netns_name(&mut self, netnsid: i32) -> Option<String> {
        let entries = fs::read_dir(NAMED_NETNS_DIR).ok()?;
        for entry in entries.filter_map(Result::ok) {
            let Ok(file) = fs::File::open(entry.path()) else {
                continue;
            };
            if self.nsid_of(file.as_raw_fd()).ok().flatten() == Some(netnsid) {
                return Some(entry.file_name().to_string_lossy().into_owned());
            }
        }
        None
    }

    /// This namespace's id for the namespace `fd` refers to.
    fn nsid_of(&mut self, fd: RawFd) -> io::Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        let fd = u32::try_from(fd).map_err(|_| invalid("a negative descriptor"))?;
        msg.attributes.push(NsidAttribute::Fd(fd));
        let request = RouteNetlinkMessage::GetNsId(msg);
        let (kind, payload) = self
            .route
            .request(request.message_type(), &emit(&request))?;
        if kind != libc::RTM_NEWNSID {
            return Ok(None);
        }
        Ok(nsid_of_answer(&payload))
    }
}

/// The `NETDEV_A_DEV_XDP_FEATURES` of a `NETDEV_CMD_DEV_GET` answer.
pub(crate) fn xdp_features_of(payload: &[u8]) -> Option<u64> {
    genl_attributes(payload)
        .find(|(kind, _)| *kind == NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|(_, value)| <[u8; 8]>::try_from(value).ok())
        .map(u64::from_ne_bytes)
}

/// The namespace id an `RTM_NEWNSID` answer carries, if it is one.
pub(crate) fn nsid_of_answer(payload: &[u8]) -> Option<i32> {
    // rtgenmsg (4 bytes with padding), then NETNSA_* attributes.
    nlas(payload.get(4..).unwrap_or_default())
        .filter(|(kind, _)| *kind == NETNSA_NSID)
        .filter_map(|(_, value)| <[u8; 4]>::try_from(value).ok())
        .map(i32::from_ne_bytes)
        .find(|&id| id >= 0)
}

/// A generic netlink socket subscribed to the `netdev` family's `mgmt`
/// group: the kernel announces there every change of a device's XDP
/// features (`NETDEV_CMD_DEV_CHANGE_NTF`), such as a veth whose peer
/// turned GRO on or off, or got or lost an XDP program.
pub(super) struct Notifications {
    sock: Socket,
    buf: Vec<u8>,
}

impl Notifications {
    pub(super) fn subscribe(family: NetdevFamily) -> io::Result<Option<Self>> {
        let Some(group) = family.mgmt_group else {
            return Ok(None);
        };
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.set_non_blocking(true)?;
        sock.add_membership(group)?;
        Ok(Some(Self {
            sock,
            buf: vec![0; 16 * 1024],
        }))
    }

    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Reads every queued notification without blocking; true when there
    /// was any (or some were lost: ENOBUFS), so the caller reads again.
    pub(super) fn drain(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(_) => return true,
            }
        }
    }
}

/// The id and `mgmt` group of generic netlink family `name`; `None` when
/// the kernel does not have it.
fn resolve_family(generic: &mut Requester, name: &str) -> io::Result<Option<NetdevFamily>> {
    let mut body = genl_header(libc::CTRL_CMD_GETFAMILY as u8, CTRL_VERSION);
    let mut name_z = name.as_bytes().to_vec();
    name_z.push(0);
    push_nla(&mut body, libc::CTRL_ATTR_FAMILY_NAME as u16, &name_z);
    let (kind, payload) = match generic.request(libc::GENL_ID_CTRL as u16, &body) {
        Ok(answer) => answer,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    if kind == NLMSG_ERROR {
        return Ok(None);
    }
    Ok(family_of(&payload))
}

/// The family id and `mgmt` group of a `CTRL_CMD_GETFAMILY` answer.
pub(crate) fn family_of(payload: &[u8]) -> Option<NetdevFamily> {
    let mut id = None;
    let mut mgmt_group = None;
    for (kind, value) in genl_attributes(payload) {
        if kind == libc::CTRL_ATTR_FAMILY_ID as u16 {
            id = <[u8; 2]>::try_from(value).ok().map(u16::from_ne_bytes);
        } else if kind == libc::CTRL_ATTR_MCAST_GROUPS as u16 {
            mgmt_group = mcast_group(value, NETDEV_MGMT_GROUP);
        }
    }
    id.map(|id| NetdevFamily { id, mgmt_group })
}

/// The id of multicast group `name` in a `CTRL_ATTR_MCAST_GROUPS` nest.
fn mcast_group(nest: &[u8], name: &str) -> Option<u32> {
    nlas(nest).find_map(|(_, group)| {
        let mut group_name = None;
        let mut group_id = None;
        for (kind, value) in nlas(group) {
            if kind == libc::CTRL_ATTR_MCAST_GRP_NAME as u16 {
                group_name = value.split(|&b| b == 0).next();
            } else if kind == libc::CTRL_ATTR_MCAST_GRP_ID as u16 {
                group_id = <[u8; 4]>::try_from(value).ok().map(u32::from_ne_bytes);
            }
        }
        (group_name == Some(name.as_bytes()))
            .then_some(group_id)
            .flatten()
    })
}

/// `struct genlmsghdr`: command, version, reserved.
fn genl_header(cmd: u8, version: u8) -> Vec<u8> {
    vec![cmd, version, 0, 0]
}

/// Appends one netlink attribute, padded to 4 bytes.
fn push_nla(body: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    body.extend_from_slice(&(len as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(value);
    body.resize(body.len() + (4 - len % 4) % 4, 0);
}

/// The (kind, value) attributes of a generic netlink answer, after its
/// `struct genlmsghdr`.
fn genl_attributes(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    nlas(payload.get(4..).unwrap_or_default())
}

/// The (kind, value) netlink attributes in `bytes`, up to the first that
/// does not fit.
fn nlas(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(rest.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        let value = rest.get(4..len)?;
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, value))
    })
}

fn emit(msg: &RouteNetlinkMessage) -> Vec<u8> {
    let mut bytes = vec![0; msg.buffer_len()];
    msg.emit(&mut bytes);
    bytes
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// `RTM_NEWLINK` -> the facts `Link` holds; attributes that do not parse
/// are skipped.
pub(crate) fn parse_link(payload: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut link = Link::default();
    let wanted = [
        IFLA_IFNAME,
        IFLA_LINK,
        IFLA_LINKINFO,
        IFLA_LINK_NETNSID,
        IFLA_XDP,
    ];
    for nla in attributes(payload, header.buffer_len(), &wanted) {
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::IfName(name)) => link.name = name,
            Ok(LinkAttribute::Link(index)) => link.link = Some(index),
            Ok(LinkAttribute::LinkNetNsId(id)) => link.link_netnsid = Some(id),
            Ok(LinkAttribute::LinkInfo(infos)) => {
                link.veth = infos
                    .iter()
                    .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth)));
            }
            Ok(LinkAttribute::Xdp(xdp)) => {
                link.xdp = xdp.iter().any(
                    |x| matches!(x, LinkXdp::Attached(attached) if *attached != XdpAttached::None),
                );
            }
            _ => {}
        }
    }
    Some(link)
}
