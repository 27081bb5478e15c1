//! The L2 announcement lab: one Ethernet segment (a bridge in a namespace
//! of its own) joining a client, two LB nodes and two backends, all in one
//! subnet and with no route at all, so the client finds the VIP through
//! ARP and Neighbor Discovery, which only Switchyard answers.
//!
//! The listeners are `fullnat`: each LB node rewrites the source to its own
//! address, so the backends' answers come back to whichever node carried
//! the flow, with no route to set and no other node in the way. Every veth
//! keeps the kernel's defaults (tx checksum offload on, GRO off).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::config::{GatewaySpec, CONTROLLER_NAME};
use crate::daemon::{Daemon, DaemonOptions};
use crate::fullnat::{with_forwarding, SNAT_PORTS};
use crate::link::{link_json, wait_links_up};
use crate::netns::{next_id, unique_name, Netns};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// The LB nodes: name, IPv4 and IPv6 address on the segment.
pub const NODES: [(&str, Ipv4Addr, Ipv6Addr); 2] = [
    (
        "lb-a",
        Ipv4Addr::new(198, 18, 1, 2),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2),
    ),
    (
        "lb-b",
        Ipv4Addr::new(198, 18, 1, 3),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3),
    ),
];
pub const BACKENDS: [(&str, Ipv4Addr, Ipv6Addr); 2] = [
    (
        "be1",
        Ipv4Addr::new(198, 18, 1, 21),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x21),
    ),
    (
        "be2",
        Ipv4Addr::new(198, 18, 1, 22),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x22),
    ),
];

const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab's namespaces; dropping it removes them, and the segment with
/// them.
#[derive(Debug)]
pub struct L2Lab {
    pub client: Netns,
    /// In the order of [`NODES`].
    pub nodes: Vec<Netns>,
    /// In the order of [`BACKENDS`].
    pub backends: Vec<Netns>,
    /// Holds the bridge `br0`; dropped last.
    pub segment: Netns,
}

impl L2Lab {
    pub fn new() -> Result<L2Lab> {
        let id = next_id();
        let segment = Netns::with_name(unique_name(id, "seg"))?;
        segment.ip(&["link", "add", "br0", "type", "bridge"])?;
        segment.ip(&["link", "set", "dev", "br0", "up"])?;
        let host = |role: &str, v4: Ipv4Addr, v6: Ipv6Addr| -> Result<Netns> {
            let ns = Netns::with_name(unique_name(id, role))?;
            // Addresses usable at once, not tentative for a second or two.
            ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
            ns.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
            ns.veth("eth0", &segment, role)?;
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "dev", "eth0", "up"])?;
            segment.ip(&["link", "set", "dev", role, "master", "br0"])?;
            segment.ip(&["link", "set", "dev", role, "up"])?;
            wait_links_up(&ns, &["eth0"], LINK_UP_TIMEOUT)?;
            wait_links_up(&segment, &[role], LINK_UP_TIMEOUT)?;
            Ok(ns)
        };
        let client = host("client", CLIENT4, CLIENT6)?;
        let nodes = NODES
            .iter()
            .map(|(name, v4, v6)| host(name, *v4, *v6))
            .collect::<Result<Vec<_>>>()?;
        let backends = BACKENDS
            .iter()
            .map(|(name, v4, v6)| host(name, *v4, *v6))
            .collect::<Result<Vec<_>>>()?;
        Ok(L2Lab {
            client,
            nodes,
            backends,
            segment,
        })
    }

    /// Starts `switchyard run --node-name NAME` on node `i` with `config`.
    /// Node 0 takes the harness's one-daemon lock, the others run beside it.
    pub fn start_node(&self, i: usize, config: &Path) -> Result<Daemon> {
        let mut options = DaemonOptions::new(&["eth0"])
            .arg("--node-name")
            .arg(NODES[i].0)
            .arg("--snat-ports")
            .arg(SNAT_PORTS);
        options.beside_others = i > 0;
        Daemon::start(&self.nodes[i], config, &options)
    }

    /// The MAC of node `i`'s interface on the segment.
    pub fn node_mac(&self, i: usize) -> Result<String> {
        let link = link_json(&self.nodes[i], "eth0")?;
        link["address"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no address in {link}"))
    }

    /// The client's neighbour entry for `address`: its MAC, when it has
    /// one that is not failed or incomplete.
    pub fn client_neighbour(&self, address: IpAddr) -> Result<Option<String>> {
        let out = self.client.ip(&[
            "-j",
            "neigh",
            "show",
            "to",
            &address.to_string(),
            "dev",
            "eth0",
        ])?;
        let entries: Value =
            serde_json::from_str(&out).with_context(|| format!("parsing {out:?}"))?;
        let Some(entry) = entries.as_array().and_then(|e| e.first()) else {
            return Ok(None);
        };
        Ok(entry["lladdr"].as_str().map(str::to_owned))
    }
}

/// The demo Gateway, dual stack, at [`VIP4`] and [`VIP6`] on the segment,
/// forwarded `fullnat` to both backends and announced `L2` by its class.
pub fn announced_config() -> String {
    config_with(true)
}

/// [`announced_config`] without its IPv6 address: the config of a node
/// that does not (yet) serve [`VIP6`].
pub fn announced_config_ipv4_only() -> String {
    config_with(false)
}

fn config_with(ipv6: bool) -> String {
    let spec = GatewaySpec {
        vip: VIP4,
        vip6: ipv6.then_some(VIP6),
        backends6: if ipv6 {
            BACKENDS.iter().map(|b| b.2).collect()
        } else {
            Vec::new()
        },
        ..GatewaySpec::demo()
    };
    let mut spec = spec;
    for listener in &mut spec.listeners {
        listener.backends = BACKENDS.iter().map(|b| b.1).collect();
    }
    let yaml = with_forwarding(&spec, "{mode: fullnat}");
    let controller = format!("controllerName: {CONTROLLER_NAME}\n");
    let with_parameters = format!(
        "{controller}  parametersRef: {{group: switchyard.io, kind: GatewayClassConfig, name: {class}}}\n",
        class = spec.class
    );
    format!(
        "{}---\napiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\n\
         metadata: {{name: {class}}}\nspec: {{type: ClusterIP, announce: L2}}\n",
        yaml.replacen(&controller, &with_parameters, 1),
        class = spec.class
    )
}

/// One VIP's state on one node, from `yardctl node -o json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub state: String,
    pub detail: String,
}

/// `yardctl node -o json` of `daemon`: the state and detail of `vip`.
pub fn role(daemon: &Daemon, vip: IpAddr) -> Result<Role> {
    let report = daemon.yardctl_json("node")?;
    let Some(entry) = report["announcements"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["address"].as_str() == Some(&vip.to_string()))
    else {
        bail!("{vip} is not in `yardctl node`: {report}");
    };
    Ok(Role {
        state: entry["state"].as_str().unwrap_or_default().to_owned(),
        detail: entry["detail"].as_str().unwrap_or_default().to_owned(),
    })
}
