//! A VLAN network: the LB node's one interface `eth0` is a trunk carrying
//! VLAN 10 (the client, 198.18.10.0/24, the LB on `eth0.10`) and VLAN 20
//! (two backends, 198.18.20.0/24, the LB on `eth0.20`), through a switch
//! namespace whose other ports are access ports of one VLAN each: a
//! bridge per VLAN, holding that VLAN's link on the trunk and the VLAN's
//! hosts (a VLAN-filtering bridge would do the same, where the kernel has
//! one).
//! Switchyard runs on `eth0`; the kernel's VLAN links carry the addresses
//! and routes.
//!
//! This module owns the wiring and addressing of that network only; every
//! namespace is a guard, removed when the lab drops (also on a panic). All
//! addresses are in 198.18.0.0/15 and live only in these namespaces.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::link::{set_gro, set_tx_checksum, wait_links_up};
use crate::netns::{next_id, unique_name, Netns};
use crate::topology::VIP_NET;

pub const CLIENT_VLAN: u16 = 10;
pub const BACKEND_VLAN: u16 = 20;
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
pub const LB_CLIENT_VLAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
pub const LB_BACKEND_VLAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
pub const BACKENDS: [(&str, Ipv4Addr); 2] = [
    ("be1", Ipv4Addr::new(198, 18, 20, 21)),
    ("be2", Ipv4Addr::new(198, 18, 20, 22)),
];

const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct VlanBackend {
    pub name: String,
    pub addr: Ipv4Addr,
    pub ns: Netns,
}

/// The built network; dropping it deletes every namespace, and with them
/// the veths, the bridge and the VLAN links.
#[derive(Debug)]
pub struct VlanLab {
    pub client: Netns,
    pub lb: Netns,
    /// Holds the trunk's VLAN links `lb.10`, `lb.20` and a bridge per
    /// VLAN, `br10` and `br20`.
    pub switch: Netns,
    pub backends: Vec<VlanBackend>,
}

impl VlanLab {
    /// Builds the network; `backend_mtu`, when set, is the MTU of VLAN 20
    /// end to end (the LB's `eth0.20` and the backends' links), below the
    /// client VLAN's 1500.
    pub fn build(backend_mtu: Option<u32>) -> Result<VlanLab> {
        let id = next_id();
        let switch = Netns::with_name(unique_name(id, "vsw"))?;
        let client = Netns::with_name(unique_name(id, "vclient"))?;
        let lb = Netns::with_name(unique_name(id, "vlb"))?;
        let mut backends = Vec::new();
        for (name, addr) in BACKENDS {
            backends.push(VlanBackend {
                name: name.to_owned(),
                addr,
                ns: Netns::with_name(unique_name(id, &format!("v{name}")))?,
            });
        }
        let lab = VlanLab {
            client,
            lb,
            switch,
            backends,
        };
        lab.wire(backend_mtu)
            .with_context(|| format!("building the VLAN lab {:?}", lab.namespace_names()))?;
        Ok(lab)
    }

    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![
            self.client.name().to_owned(),
            self.lb.name().to_owned(),
            self.switch.name().to_owned(),
        ];
        names.extend(self.backends.iter().map(|b| b.ns.name().to_owned()));
        names
    }

    fn wire(&self, backend_mtu: Option<u32>) -> Result<()> {
        let sw = &self.switch;
        for ns in [&self.switch, &self.client, &self.lb]
            .into_iter()
            .chain(self.backends.iter().map(|b| &b.ns))
        {
            ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
        }
        self.lb.sysctl("net/ipv4/ip_forward", "0")?;

        // The trunk, tagged on both ends: the switch's own VLAN links on it
        // are its access to each VLAN.
        self.lb.veth("eth0", sw, "lb")?;
        sw.ip(&["link", "set", "dev", "lb", "up"])?;
        // A switch port receives in NAPI (GRO on), as the XDP program's
        // transmitted frames need on a veth.
        set_gro(sw, "lb", true)?;
        for vid in [CLIENT_VLAN, BACKEND_VLAN] {
            let bridge = format!("br{vid}");
            sw.ip(&["link", "add", &bridge, "type", "bridge"])?;
            sw.ip(&["link", "set", "dev", &bridge, "up"])?;
            let trunk = format!("lb.{vid}");
            vlan_link(sw, "lb", &trunk, vid)?;
            self.port(&trunk, &bridge, None)?;
        }
        let lb = &self.lb;
        lb.ip(&["link", "set", "dev", "eth0", "up"])?;
        for (vid, addr) in [
            (CLIENT_VLAN, LB_CLIENT_VLAN_ADDR),
            (BACKEND_VLAN, LB_BACKEND_VLAN_ADDR),
        ] {
            let dev = format!("eth0.{vid}");
            vlan_link(lb, "eth0", &dev, vid)?;
            if let (BACKEND_VLAN, Some(mtu)) = (vid, backend_mtu) {
                lb.ip(&["link", "set", "dev", &dev, "mtu", &mtu.to_string()])?;
            }
            lb.ip(&["addr", "add", &format!("{addr}/24"), "dev", &dev])?;
            lb.ip(&["link", "set", "dev", &dev, "up"])?;
        }

        self.client.veth("eth0", sw, "client")?;
        self.port("client", "br10", None)?;
        let c = &self.client;
        c.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        c.ip(&["link", "set", "dev", "eth0", "up"])?;
        set_tx_checksum(c, "eth0", false)?;
        c.ip(&[
            "route",
            "add",
            VIP_NET,
            "via",
            &LB_CLIENT_VLAN_ADDR.to_string(),
        ])?;

        for be in &self.backends {
            be.ns.veth("eth0", sw, &be.name)?;
            self.port(&be.name, "br20", backend_mtu)?;
            let ns = &be.ns;
            if let Some(mtu) = backend_mtu {
                ns.ip(&["link", "set", "dev", "eth0", "mtu", &mtu.to_string()])?;
            }
            ns.ip(&["addr", "add", &format!("{}/24", be.addr), "dev", "eth0"])?;
            ns.ip(&["link", "set", "dev", "eth0", "up"])?;
            set_tx_checksum(ns, "eth0", false)?;
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &LB_BACKEND_VLAN_ADDR.to_string(),
            ])?;
        }

        wait_links_up(&self.lb, &["eth0", "eth0.10", "eth0.20"], LINK_UP_TIMEOUT)?;
        wait_links_up(&self.client, &["eth0"], LINK_UP_TIMEOUT)?;
        for be in &self.backends {
            wait_links_up(&be.ns, &["eth0"], LINK_UP_TIMEOUT)?;
        }
        wait_links_up(
            sw,
            &[
                "lb", "lb.10", "lb.20", "br10", "br20", "client", "be1", "be2",
            ],
            LINK_UP_TIMEOUT,
        )?;
        Ok(())
    }

    /// Makes `dev` a port of `bridge`, optionally of MTU `mtu`.
    fn port(&self, dev: &str, bridge: &str, mtu: Option<u32>) -> Result<()> {
        let sw = &self.switch;
        if let Some(mtu) = mtu {
            sw.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])?;
        }
        sw.ip(&["link", "set", "dev", dev, "master", bridge])?;
        sw.ip(&["link", "set", "dev", dev, "up"])?;
        Ok(())
    }
}

/// An 802.1Q link `name` of VLAN `vid` on `parent`, in `ns`.
fn vlan_link(ns: &Netns, parent: &str, name: &str, vid: u16) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        "link",
        parent,
        "name",
        name,
        "type",
        "vlan",
        "id",
        &vid.to_string(),
    ])?;
    Ok(())
}
