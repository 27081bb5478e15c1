//! Which interfaces the XDP fast path may send frames out of. XDP_TX and
//! devmap redirects hand a frame to the egress device's `ndo_xdp_xmit`,
//! and a device that cannot take it drops it without a word. The case that
//! matters is a veth whose peer runs no NAPI (no XDP program, GRO off: the
//! kernel's defaults), which is how a lab of veths and a bridge comes out
//! of the box: the fast path would lose every flow it took over.
//!
//! The kernel says which devices take such frames: `NETDEV_XDP_ACT_NDO_XMIT`
//! in the device's XDP features (the `netdev` netlink family, Linux 6.3+).
//! Devmap checks it before handing a frame over, and a veth keeps it equal
//! to "my peer runs NAPI" as the peer gains or loses an XDP program or GRO.
//! It is read here, from the LB's own device, whatever namespace the peer
//! is in, and its changes are announced on the family's `mgmt` group, so
//! the watch follows them as they happen (and re-reads every few seconds
//! in case a notification was lost). On older kernels a veth counts as open
//! only while its peer has an XDP program (read through
//! `IFLA_TARGET_NETNSID`): its GRO setting cannot be read without entering
//! the peer's namespace.
//!
//! XDP_TX into a veth asks more: the veth wakes its peer after XDP_TX only
//! when the peer runs an XDP program (GRO is not enough), so with
//! `--fast-path-tx xdp-tx` a veth is open only then; `auto` redirects on
//! veth, which NAPI alone receives.
//!
//! A closed interface is closed in the program (`FAST_STATE_EGRESS_CLOSED`)
//! and to the workers, so flows leaving by it stay on the AF_XDP path,
//! whose copy-mode transmit goes through the kernel's skb path and reaches
//! a veth peer without NAPI: slower, never lost. Every decision is logged
//! with what to change and shown by `yardctl status`. This module reads
//! and decides; it never changes a setting of the peer or its namespace.

pub(crate) mod netlink;

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use switchyard_dataplane::fast_path::FastPath;
use switchyard_proto::{FastPathEgress, InterfaceStatus, VethPeer};
use switchyard_xdp::XdpError;

use self::netlink::{Link, Notifications, Queries, XDP_ACT_NDO_XMIT};

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("opening netlink sockets to read the interfaces' XDP features")]
    Netlink(#[source] io::Error),
    #[error("closing interfaces to the XDP fast path")]
    Program(#[source] XdpError),
}

/// An interface the steering program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
    /// Its slot in the program's `tx_ports`.
    pub slot: u16,
    /// The kernel driver, as `ethtool -i` names it.
    pub driver: Option<String>,
    /// The fast path sends frames back out of this interface with XDP_TX;
    /// false: with a redirect.
    pub xdp_tx: bool,
}

/// What the kernel says about one port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `NETDEV_XDP_ACT_NDO_XMIT` in its XDP features; `None` when the
    /// kernel does not report them (before Linux 6.3) or could not be read.
    pub ndo_xmit: Option<bool>,
    /// For a veth: its peer.
    pub peer: Option<VethPeer>,
}

/// Whether the fast path may send frames out of `port`. `native`: some
/// interface runs the program in native (driver) mode, whose XDP_TX and
/// redirects go through `ndo_xdp_xmit`; generic mode sends through the
/// kernel's skb path, which every device takes.
pub fn decide(port: &Port, facts: &Facts, native: bool) -> FastPathEgress {
    let hairpin = if port.xdp_tx { "xdp_tx" } else { "redirect" };
    let (open, reason) = if !native {
        (
            true,
            "generic XDP: the kernel sends fast-path frames through its skb path".to_owned(),
        )
    } else {
        match (facts.ndo_xmit, &facts.peer) {
            // A veth schedules its peer's NAPI after XDP_TX only when the
            // peer runs an XDP program (veth_xdp_flush); with GRO alone the
            // frames wait in the peer's ring for traffic that may not come.
            (_, Some(peer)) if port.xdp_tx && !peer.xdp => (false, veth_xdp_tx_closed(port, peer)),
            (Some(true), Some(peer)) => (
                true,
                format!(
                    "veth whose peer {} runs NAPI ({})",
                    peer_named(peer),
                    if peer.xdp { "an XDP program" } else { "GRO on" }
                ),
            ),
            (Some(true), None) => (true, "the driver takes frames from XDP".to_owned()),
            (Some(false), Some(peer)) => (false, veth_closed(port, peer)),
            (Some(false), None) => (
                false,
                format!(
                    "{} (driver {}) does not take frames from XDP (no ndo_xdp_xmit in its \
                     XDP features): flows leaving by it stay with the workers (slower, none \
                     lost)",
                    port.name,
                    port.driver.as_deref().unwrap_or("unknown")
                ),
            ),
            (None, Some(peer)) if peer.xdp => (
                true,
                format!("veth whose peer {} runs an XDP program", peer_named(peer)),
            ),
            (None, Some(peer)) => (
                false,
                format!(
                    "{} is a veth and this kernel does not say whether its peer {} runs NAPI \
                     (GRO); without it frames the XDP fast path sent into it would be lost, so \
                     flows leaving by {} stay with the workers (slower, none lost). To let \
                     the fast path send there, attach an XDP program to the peer (even one \
                     that passes everything)",
                    port.name,
                    peer_named(peer),
                    port.name
                ),
            ),
            (None, None) => (
                true,
                "the kernel does not report XDP features (before Linux 6.3); assumed to \
                 take frames from XDP"
                    .to_owned(),
            ),
        }
    };
    FastPathEgress {
        open,
        hairpin: hairpin.to_owned(),
        reason,
    }
}

/// `lb (network namespace NS)`, `lb` when it shares ours.
fn peer_named(peer: &VethPeer) -> String {
    if peer.netns.is_empty() {
        peer.name.clone()
    } else {
        format!("{} (network namespace {})", peer.name, peer.netns)
    }
}

/// What a closed veth port means and how to open it.
fn veth_closed(port: &Port, peer: &VethPeer) -> String {
    let gro = format!("ethtool -K {} gro on", peer.name);
    let command = if peer.netns.is_empty() {
        format!("`{gro}`")
    } else if let Some(id) = peer.netns.strip_prefix("nsid ") {
        format!(
            "`{gro}` in that namespace (this one's id {id} for it; `ip link show {}` prints \
             it as link-netnsid)",
            port.name
        )
    } else {
        format!("`ip netns exec {} {gro}`", peer.netns)
    };
    format!(
        "{} is a veth whose peer {} runs no NAPI (no XDP program, GRO off): frames the XDP \
         fast path sent into it would be lost, so flows leaving by {} stay with the workers \
         (slower, none lost). To let the fast path send there, turn GRO on for the peer, \
         {command}, or attach an XDP program to it; Switchyard follows the change",
        port.name,
        peer_named(peer),
        port.name
    )
}

/// What `yardctl status` shows of one interface: its veth peer, and the
/// fast path's egress decision (none with `--fast-path off`).
type Shown = (Option<VethPeer>, Option<FastPathEgress>);

/// A veth the fast path would hairpin with XDP_TX (`--fast-path-tx
/// xdp-tx`) while its peer runs no XDP program.
fn veth_xdp_tx_closed(port: &Port, peer: &VethPeer) -> String {
    format!(
        "{} is a veth and `--fast-path-tx xdp-tx` sends frames back out of it with XDP_TX, \
         which a veth delivers only when its peer {} runs an XDP program (GRO is not \
         enough): flows leaving by {} stay with the workers (slower, none lost). Start with \
         `--fast-path-tx auto` (a redirect, which the peer takes with GRO on) or attach an \
         XDP program to the peer",
        port.name,
        peer_named(peer),
        port.name
    )
}

/// The decisions `yardctl status` shows, per interface.
#[derive(Debug, Default)]
pub struct EgressReport {
    by_ifindex: Mutex<HashMap<u32, Shown>>,
}

impl EgressReport {
    /// Fills in the veth peer and fast-path egress of each interface.
    pub fn fill(&self, interfaces: &mut [InterfaceStatus]) {
        let report = self
            .by_ifindex
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for interface in interfaces {
            if let Some((peer, egress)) = report.get(&interface.ifindex) {
                interface.veth_peer = peer.clone();
                interface.fast_path_egress = egress.clone();
            }
        }
    }

    fn set(&self, ifindex: u32, peer: Option<VethPeer>, egress: Option<FastPathEgress>) {
        self.by_ifindex
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ifindex, (peer, egress));
    }
}

/// Keeps the program's and the workers' closed interfaces true to the
/// kernel. Lives on the daemon's main thread, which polls `fd`.
pub struct EgressWatch {
    ports: Vec<Port>,
    /// Some interface runs the program in native mode.
    native: bool,
    queries: Queries,
    notifications: Option<Notifications>,
    /// `None` with `--fast-path off`: the facts are still shown.
    fast_path: Option<Arc<FastPath>>,
    report: Arc<EgressReport>,
    /// Names under /run/netns of namespace ids seen.
    netns_names: HashMap<i32, String>,
    /// The last decision per port, to log changes only.
    last: Vec<Option<FastPathEgress>>,
}

impl EgressWatch {
    /// Reads every port, decides, closes what must be closed before any
    /// flow is cached, and logs each decision.
    pub fn start(
        ports: Vec<Port>,
        native: bool,
        fast_path: Option<Arc<FastPath>>,
    ) -> Result<Self, EgressError> {
        let queries = Queries::open().map_err(EgressError::Netlink)?;
        let notifications = match queries.netdev() {
            Some(family) => Notifications::subscribe(family).map_err(EgressError::Netlink)?,
            None => {
                log::info!(
                    "this kernel has no netdev netlink family (Linux 6.3+): a veth's peer \
                     counts as running NAPI only with an XDP program attached"
                );
                None
            }
        };
        let last = vec![None; ports.len()];
        let mut watch = Self {
            ports,
            native,
            queries,
            notifications,
            fast_path,
            report: Arc::new(EgressReport::default()),
            netns_names: HashMap::new(),
            last,
        };
        watch.apply().map_err(EgressError::Program)?;
        Ok(watch)
    }

    /// What `yardctl status` reads.
    pub fn report(&self) -> Arc<EgressReport> {
        self.report.clone()
    }

    /// Readable when the kernel announced a device change.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        let fd: RawFd = self.notifications.as_ref()?.fd();
        // SAFETY: the descriptor belongs to `self.notifications`, which
        // outlives the returned borrow (it borrows `self`).
        Some(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// Reads the announced changes, then every port again.
    pub fn on_readable(&mut self) {
        if self
            .notifications
            .as_mut()
            .is_some_and(Notifications::drain)
        {
            self.refresh();
        }
    }

    /// Reads every port again and applies what changed.
    pub fn refresh(&mut self) {
        if let Err(err) = self.apply() {
            log::error!("fast path: {err}");
        }
    }

    fn apply(&mut self) -> Result<(), XdpError> {
        let mut closed = 0u64;
        for index in 0..self.ports.len() {
            let port = self.ports[index].clone();
            let facts = self.facts(&port);
            let egress = decide(&port, &facts, self.native);
            if !egress.open {
                closed |= 1u64 << port.slot;
            }
            if self.fast_path.is_some() && self.last[index].as_ref() != Some(&egress) {
                let again = if self.last[index].is_some() {
                    "now "
                } else {
                    ""
                };
                if egress.open {
                    log::info!(
                        "{}: the fast path {again}sends out of it ({}): {}",
                        port.name,
                        egress.hairpin,
                        egress.reason
                    );
                } else {
                    log::warn!(
                        "{}: the fast path {again}does not send out of it: {}",
                        port.name,
                        egress.reason
                    );
                }
            }
            self.last[index] = Some(egress.clone());
            let shown = self.fast_path.is_some().then_some(egress);
            self.report.set(port.ifindex, facts.peer, shown);
        }
        match &self.fast_path {
            Some(fast_path) => fast_path.set_egress_closed(closed),
            None => Ok(()),
        }
    }

    /// What the kernel says about `port` now; what cannot be read is
    /// unknown (and logged at debug level).
    fn facts(&mut self, port: &Port) -> Facts {
        let ndo_xmit = match self.queries.xdp_features(port.ifindex) {
            Ok(features) => features.map(|f| f & XDP_ACT_NDO_XMIT != 0),
            Err(err) => {
                log::debug!("{}: reading XDP features: {err}", port.name);
                None
            }
        };
        let link = match self.queries.link(port.ifindex, None) {
            Ok(link) => link,
            Err(err) => {
                log::debug!("{}: reading the link: {err}", port.name);
                Link::default()
            }
        };
        let peer = match (link.veth, link.link) {
            (true, Some(peer_ifindex)) => Some(self.peer(port, &link, peer_ifindex, ndo_xmit)),
            _ => None,
        };
        Facts { ndo_xmit, peer }
    }

    fn peer(&mut self, port: &Port, link: &Link, ifindex: u32, ndo_xmit: Option<bool>) -> VethPeer {
        let peer = match self.queries.link(ifindex, link.link_netnsid) {
            Ok(peer) => peer,
            Err(err) => {
                log::debug!("{}: reading its veth peer: {err}", port.name);
                Link::default()
            }
        };
        let netns = match link.link_netnsid {
            None => String::new(),
            Some(id) => self.netns_name(id),
        };
        VethPeer {
            name: if peer.name.is_empty() {
                format!("ifindex {ifindex}")
            } else {
                peer.name
            },
            ifindex,
            netns,
            // A veth's NDO_XMIT is its peer's NAPI (veth_set_xdp_features).
            napi: ndo_xmit,
            xdp: peer.xdp,
        }
    }

    /// The name of namespace `id` under /run/netns, or `nsid ID`.
    fn netns_name(&mut self, id: i32) -> String {
        if let Some(name) = self.netns_names.get(&id) {
            return name.clone();
        }
        match self.queries.netns_name(id) {
            Some(name) => {
                self.netns_names.insert(id, name.clone());
                name
            }
            None => format!("nsid {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth_port() -> Port {
        Port {
            name: "eth0".into(),
            ifindex: 3,
            slot: 0,
            driver: Some("veth".into()),
            xdp_tx: false,
        }
    }

    fn peer(netns: &str, napi: Option<bool>, xdp: bool) -> VethPeer {
        VethPeer {
            name: "lb".into(),
            ifindex: 7,
            netns: netns.into(),
            napi,
            xdp,
        }
    }

    fn veth_facts(ndo_xmit: Option<bool>, peer: VethPeer) -> Facts {
        Facts {
            ndo_xmit,
            peer: Some(peer),
        }
    }

    #[test]
    fn a_veth_whose_peer_runs_no_napi_is_closed_and_the_reason_says_what_to_run_where() {
        let egress = decide(
            &veth_port(),
            &veth_facts(Some(false), peer("lab-sw", Some(false), false)),
            true,
        );
        assert!(!egress.open);
        assert_eq!(egress.hairpin, "redirect");
        for part in [
            "eth0 is a veth whose peer lb (network namespace lab-sw) runs no NAPI",
            "would be lost",
            "stay with the workers",
            "`ip netns exec lab-sw ethtool -K lb gro on`",
        ] {
            assert!(
                egress.reason.contains(part),
                "{part:?} in {}",
                egress.reason
            );
        }
    }

    #[test]
    fn the_command_fits_where_the_peer_lives() {
        let same = decide(
            &veth_port(),
            &veth_facts(Some(false), peer("", Some(false), false)),
            true,
        );
        assert!(
            same.reason.contains("peer lb runs no NAPI"),
            "{}",
            same.reason
        );
        assert!(
            same.reason.contains("`ethtool -K lb gro on`"),
            "{}",
            same.reason
        );
        let unnamed = decide(
            &veth_port(),
            &veth_facts(Some(false), peer("nsid 4", Some(false), false)),
            true,
        );
        assert!(
            unnamed
                .reason
                .contains("`ethtool -K lb gro on` in that namespace (this one's id 4"),
            "{}",
            unnamed.reason
        );
    }

    #[test]
    fn a_veth_whose_peer_runs_napi_is_open() {
        let gro = decide(
            &veth_port(),
            &veth_facts(Some(true), peer("sw", Some(true), false)),
            true,
        );
        assert!(gro.open);
        assert!(gro.reason.contains("runs NAPI (GRO on)"), "{}", gro.reason);
        let xdp = decide(
            &veth_port(),
            &veth_facts(Some(true), peer("sw", Some(true), true)),
            true,
        );
        assert!(
            xdp.reason.contains("runs NAPI (an XDP program)"),
            "{}",
            xdp.reason
        );
    }

    #[test]
    fn xdp_tx_into_a_veth_needs_an_xdp_program_on_the_peer_not_just_gro() {
        let xdp_tx = Port {
            xdp_tx: true,
            ..veth_port()
        };
        let gro = decide(
            &xdp_tx,
            &veth_facts(Some(true), peer("sw", Some(true), false)),
            true,
        );
        assert!(!gro.open);
        assert!(
            gro.reason.contains("`--fast-path-tx auto`"),
            "{}",
            gro.reason
        );
        let xdp = decide(
            &xdp_tx,
            &veth_facts(Some(true), peer("sw", Some(true), true)),
            true,
        );
        assert!(xdp.open, "{}", xdp.reason);
        assert_eq!(xdp.hairpin, "xdp_tx");
    }

    #[test]
    fn without_xdp_features_a_veth_is_open_only_with_an_xdp_program_on_its_peer() {
        let unknown = decide(
            &veth_port(),
            &veth_facts(None, peer("sw", None, false)),
            true,
        );
        assert!(!unknown.open, "{}", unknown.reason);
        let xdp = decide(
            &veth_port(),
            &veth_facts(None, peer("sw", None, true)),
            true,
        );
        assert!(xdp.open, "{}", xdp.reason);
    }

    #[test]
    fn a_nic_without_ndo_xdp_xmit_is_closed_and_one_with_it_open() {
        let nic = Port {
            driver: Some("ixgbe".into()),
            xdp_tx: true,
            ..veth_port()
        };
        let without = decide(
            &nic,
            &Facts {
                ndo_xmit: Some(false),
                peer: None,
            },
            true,
        );
        assert!(!without.open);
        assert!(
            without.reason.contains("driver ixgbe"),
            "{}",
            without.reason
        );
        let with = decide(
            &nic,
            &Facts {
                ndo_xmit: Some(true),
                peer: None,
            },
            true,
        );
        assert!(with.open);
        assert_eq!(with.hairpin, "xdp_tx");
    }

    #[test]
    fn generic_xdp_sends_through_the_stack_and_is_always_open() {
        let egress = decide(
            &veth_port(),
            &veth_facts(Some(false), peer("sw", Some(false), false)),
            false,
        );
        assert!(egress.open, "{}", egress.reason);
    }
}
