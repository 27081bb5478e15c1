//! The test networks: a client, a load-balancer node and two backends, each
//! in its own namespace, wired with veths and a bridge.
//!
//! This module owns addressing and wiring; it does not start servers or the
//! daemon. By default the veths are set up to behave like wires to a real
//! NIC: senders towards the LB put full checksums in their frames (no
//! checksum offload, no TSO) and the LB's peers accept XDP-transmitted
//! frames (GRO, hence NAPI, on); see `link`. [`Offloads::KernelDefaults`]
//! leaves every veth as the kernel creates it instead, the lab a new user
//! builds. All addresses are in 198.18.0.0/15 (benchmarking range, RFC
//! 2544) and, with [`Topology::with_ipv6`], 2001:db8::/32 (documentation
//! range, RFC 3849); they live only inside the namespaces built here.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::link::{set_gro, set_tx_checksum, spread_tx_queues_by_cpu, wait_links_up};
use crate::netns::{next_id, unique_name, Netns};

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// The LB node's own address on the client side.
pub const LB_CLIENT_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The LB node's own address on the backend side; the backends' gateway.
pub const LB_BACKEND_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The virtual IP the bundled demo config serves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// Where the client routes VIP traffic (via the LB's client-side address).
pub const VIP_NET: &str = "198.18.100.0/24";
/// The backend subnet.
pub const BACKEND_NET: &str = "198.18.2.0/24";
/// Backend names and addresses, in order.
pub const BACKENDS: [(&str, Ipv4Addr); 2] = [
    ("be1", Ipv4Addr::new(198, 18, 2, 21)),
    ("be2", Ipv4Addr::new(198, 18, 2, 22)),
];

/// The IPv6 side of the same network ([`Topology::with_ipv6`]): the
/// client's link 2001:db8:1::/64, the backends' 2001:db8:2::/64, the VIP
/// in 2001:db8:100::/64.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub const LB_CLIENT_SIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const LB_BACKEND_SIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const VIP6_NET: &str = "2001:db8:100::/64";
pub const BACKENDS6: [(&str, Ipv6Addr); 2] = [
    ("be1", Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x21)),
    ("be2", Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x22)),
];

/// The client behind a router ([`Topology::behind_router`]): its link to
/// the router, 198.18.3.0/24 and 2001:db8:3::/64, is the narrow one.
pub const FAR_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 10);
pub const ROUTER_FAR_SIDE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
pub const FAR_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10);
pub const ROUTER_FAR_SIDE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);
/// The router's MTU towards the far client: IPv6's minimum, below the
/// 1500 bytes of every other link.
pub const NARROW_MTU: u32 = 1280;

const LINK_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the veths' offloads are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// Like wires to real NICs: clients and backends send full checksums
    /// (tx checksum offload off) and the LB's peers run NAPI (GRO on), so
    /// they receive frames the XDP fast path sends.
    WireLike,
    /// As the kernel creates a veth, nothing tuned: tx checksum offload on
    /// (hosts send partial checksums) and GRO off (the LB's peers run no
    /// NAPI unless Switchyard's own program makes them).
    KernelDefaults,
}

/// How the LB node is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// "Router on a stick": one LB interface `eth0` on a bridge shared by
    /// client and backends, carrying both LB addresses.
    SingleArm,
    /// LB `eth0` on a point-to-point veth to the client, LB `eth1` on the
    /// backends' bridge.
    TwoArm,
    /// As `SingleArm`, but the LB node is a virtual machine: its NIC's
    /// host end is the tap `lb` on the bridge, in the switch namespace,
    /// where qemu runs (see `vm`). The `lb` namespace stays empty.
    SingleArmGuest,
}

#[derive(Debug)]
pub struct Backend {
    /// `be1`, `be2`: what its echo servers prefix replies with.
    pub name: String,
    pub addr: Ipv4Addr,
    pub ns: Netns,
}

/// A built test network. Dropping it deletes every namespace, which also
/// destroys the veths and the bridge inside them.
#[derive(Debug)]
pub struct Topology {
    pub shape: Shape,
    pub offloads: Offloads,
    /// Queues on every veth end (`numtxqueues`/`numrxqueues`).
    pub queues: u32,
    pub client: Netns,
    pub lb: Netns,
    /// Holds the bridge `br0`.
    pub switch: Netns,
    pub backends: Vec<Backend>,
    /// With [`Topology::behind_router`]: the client behind the router
    /// (then the `client` namespace).
    pub far_client: Option<Netns>,
    lb_interfaces: Vec<String>,
}

impl Topology {
    /// Client, LB and backends all on one bridge; the LB has one interface
    /// `eth0` with 198.18.1.1/24 and 198.18.2.1/24. Wire-like offloads.
    pub fn single_arm(queues: u32) -> Result<Topology> {
        Topology::single_arm_with(queues, Offloads::WireLike)
    }

    /// `single_arm` with the given offloads.
    pub fn single_arm_with(queues: u32, offloads: Offloads) -> Result<Topology> {
        let mut topo = Topology::namespaces(Shape::SingleArm, offloads, queues)?;
        topo.lb_interfaces = vec!["eth0".into()];
        let q = queues;
        veth(&topo.client, "eth0", &topo.switch, "client", q)?;
        veth(&topo.lb, "eth0", &topo.switch, "lb", q)?;
        topo.wire_backends()?;

        topo.client_addressing()?;
        topo.lb_addressing("eth0", "eth0")?;
        topo.attach_to_bridge(&["client", "lb"])?;
        topo.napi_on(&[(&topo.switch, "lb")])?;
        topo.spread_lb_queues(&[(&topo.switch, "lb")])?;
        topo.finish(&["client", "lb", "be1", "be2"])?;
        Ok(topo)
    }

    /// `single_arm` for an LB node that is a guest ([`Shape::SingleArmGuest`]):
    /// the tap `lb` (multi-queue with `queues` > 1) takes the LB veth's
    /// place on the bridge. The guest's own addressing is the caller's
    /// ([`LB_CLIENT_SIDE_ADDR`] and [`LB_BACKEND_SIDE_ADDR`] on its NIC),
    /// and so is waiting for the tap's carrier, which comes with qemu.
    pub fn single_arm_guest(queues: u32, offloads: Offloads) -> Result<Topology> {
        let topo = Topology::namespaces(Shape::SingleArmGuest, offloads, queues)?;
        veth(&topo.client, "eth0", &topo.switch, "client", queues)?;
        crate::link::create_tap(&topo.switch, "lb", queues)?;
        topo.wire_backends()?;
        topo.client_addressing()?;
        topo.attach_to_bridge(&["client", "lb"])?;
        topo.finish(&["client", "be1", "be2"])?;
        Ok(topo)
    }

    /// Client <-> LB `eth0` point to point (198.18.1.0/24); LB `eth1`
    /// (198.18.2.1/24) on the backends' bridge. Wire-like offloads.
    pub fn two_arm(queues: u32) -> Result<Topology> {
        Topology::two_arm_with(queues, Offloads::WireLike)
    }

    /// `two_arm` with the given offloads.
    pub fn two_arm_with(queues: u32, offloads: Offloads) -> Result<Topology> {
        let mut topo = Topology::namespaces(Shape::TwoArm, offloads, queues)?;
        topo.lb_interfaces = vec!["eth0".into(), "eth1".into()];
        let q = queues;
        veth(&topo.client, "eth0", &topo.lb, "eth0", q)?;
        veth(&topo.lb, "eth1", &topo.switch, "lb", q)?;
        topo.wire_backends()?;

        topo.client_addressing()?;
        topo.lb_addressing("eth0", "eth1")?;
        topo.attach_to_bridge(&["lb"])?;
        topo.napi_on(&[(&topo.client, "eth0"), (&topo.switch, "lb")])?;
        topo.spread_lb_queues(&[(&topo.client, "eth0"), (&topo.switch, "lb")])?;
        topo.finish(&["lb", "be1", "be2"])?;
        Ok(topo)
    }

    /// Adds the IPv6 side: addresses on every link (without duplicate
    /// address detection, so they are usable at once rather than after a
    /// wait), the backends' default route via the LB and the client's
    /// route to the VIP prefix via the LB, as for IPv4.
    pub fn with_ipv6(self) -> Result<Topology> {
        let cidr = |a: Ipv6Addr| format!("{a}/64");
        // A guest LB node addresses its own NIC (`vm::lab`).
        let lb_sides = match self.lb_interfaces.as_slice() {
            [one] => Some((one.clone(), one.clone())),
            [first, .., last] => Some((first.clone(), last.clone())),
            [] if self.shape == Shape::SingleArmGuest => None,
            [] => return Err(anyhow!("a topology without LB interfaces")),
        };
        let add = |ns: &Netns, addr: Ipv6Addr, dev: &str| {
            ns.ip(&["-6", "addr", "add", &cidr(addr), "dev", dev, "nodad"])
        };
        add(&self.client, CLIENT_ADDR6, "eth0")?;
        self.client.ip(&[
            "-6",
            "route",
            "add",
            VIP6_NET,
            "via",
            &LB_CLIENT_SIDE_ADDR6.to_string(),
        ])?;
        if let Some((client_side, backend_side)) = lb_sides {
            add(&self.lb, LB_CLIENT_SIDE_ADDR6, &client_side)?;
            add(&self.lb, LB_BACKEND_SIDE_ADDR6, &backend_side)?;
        }
        for (be, (_, addr)) in self.backends.iter().zip(BACKENDS6) {
            add(&be.ns, addr, "eth0")?;
            be.ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &LB_BACKEND_SIDE_ADDR6.to_string(),
            ])?;
        }
        Ok(self)
    }

    /// Makes the client namespace a router and puts a far client behind
    /// it, on a link whose MTU on the router's side is [`NARROW_MTU`]: the
    /// path Path MTU discovery has to find. The far client sends at most
    /// that (its route's MTU is locked to it) but advertises a TCP MSS for
    /// 1500 bytes, as a host on a wider link behind a narrower one does, so
    /// full-size answers reach the router, which can only refuse them with
    /// ICMP. Needs both families ([`Topology::with_ipv6`]) and, for the
    /// router to reach the LB on its own link, the two-arm shape.
    pub fn behind_router(mut self) -> Result<Topology> {
        if self.shape != Shape::TwoArm {
            return Err(anyhow!("a router needs the two-arm shape"));
        }
        let far = Netns::with_name(unique_name(next_id(), "far"))?;
        far.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
        far.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
        veth(&far, "eth0", &self.client, "far0", self.queues)?;
        let router = &self.client;
        router.sysctl("net/ipv4/ip_forward", "1")?;
        router.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_FAR_SIDE_ADDR}/24"),
            "dev",
            "far0",
        ])?;
        router.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ROUTER_FAR_SIDE_ADDR6}/64"),
            "dev",
            "far0",
            "nodad",
        ])?;
        router.ip(&[
            "link",
            "set",
            "dev",
            "far0",
            "mtu",
            &NARROW_MTU.to_string(),
            "up",
        ])?;
        far.ip(&[
            "addr",
            "add",
            &format!("{FAR_CLIENT_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        far.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{FAR_CLIENT_ADDR6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        far.ip(&["link", "set", "dev", "eth0", "up"])?;
        self.full_checksums(&far, "eth0")?;
        let narrow = NARROW_MTU.to_string();
        far.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_FAR_SIDE_ADDR.to_string(),
            "mtu",
            "lock",
            &narrow,
            "advmss",
            "1460",
        ])?;
        far.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_FAR_SIDE_ADDR6.to_string(),
            "mtu",
            "lock",
            &narrow,
            "advmss",
            "1440",
        ])?;
        self.lb.ip(&[
            "route",
            "add",
            "198.18.3.0/24",
            "via",
            &CLIENT_ADDR.to_string(),
        ])?;
        self.lb.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:3::/64",
            "via",
            &CLIENT_ADDR6.to_string(),
        ])?;
        wait_links_up(&far, &["eth0"], LINK_UP_TIMEOUT)?;
        wait_links_up(&self.client, &["far0"], LINK_UP_TIMEOUT)?;
        self.far_client = Some(far);
        Ok(self)
    }

    /// The LB node's interfaces, as named inside its namespace.
    pub fn lb_interfaces(&self) -> &[String] {
        &self.lb_interfaces
    }

    pub fn backend(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend named {name}"))
    }

    /// The backend whose address is `addr`, if any.
    pub fn backend_by_addr(&self, addr: Ipv4Addr) -> Option<&Backend> {
        self.backends.iter().find(|b| b.addr == addr)
    }

    /// Every namespace of the topology, for logs and cleanup checks.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![
            self.client.name().to_owned(),
            self.lb.name().to_owned(),
            self.switch.name().to_owned(),
        ];
        names.extend(self.backends.iter().map(|b| b.ns.name().to_owned()));
        names.extend(self.far_client.iter().map(|ns| ns.name().to_owned()));
        names
    }

    /// Creates the namespaces and the bridge; nothing is wired yet. Every
    /// namespace is a guard from the moment it exists, so a failure half way
    /// removes what was made.
    fn namespaces(shape: Shape, offloads: Offloads, queues: u32) -> Result<Topology> {
        if queues == 0 {
            return Err(anyhow!("a topology needs at least one queue"));
        }
        let id = next_id();
        let switch = Netns::with_name(unique_name(id, "sw"))?;
        let client = Netns::with_name(unique_name(id, "client"))?;
        let lb = Netns::with_name(unique_name(id, "lb"))?;
        let mut backends = Vec::new();
        for (name, addr) in BACKENDS {
            let ns = Netns::with_name(unique_name(id, name))?;
            backends.push(Backend {
                name: name.to_owned(),
                addr,
                ns,
            });
        }
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "dev", "br0", "up"])?;
        // Neither end forwards; the LB node is a host unless switchyard
        // makes it more (and the harness self-test turns this on itself).
        lb.sysctl("net/ipv4/ip_forward", "0")?;
        // Interfaces made from here on skip duplicate address detection,
        // link-local addresses included: an IPv6 address is usable at once
        // instead of tentative for a second or two, which a test would
        // otherwise have to wait out.
        for ns in [&switch, &client, &lb]
            .into_iter()
            .chain(backends.iter().map(|b| &b.ns))
        {
            ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
            ns.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
        }
        Ok(Topology {
            shape,
            offloads,
            queues,
            client,
            lb,
            switch,
            backends,
            far_client: None,
            lb_interfaces: Vec::new(),
        })
    }

    /// Wire-like: the LB's peers run NAPI (GRO on), as a switch port
    /// always receives. Kernel defaults: left off.
    fn napi_on(&self, peers: &[(&Netns, &str)]) -> Result<()> {
        if self.offloads == Offloads::WireLike {
            for (ns, dev) in peers {
                set_gro(ns, dev, true)?;
            }
        }
        Ok(())
    }

    /// Wire-like: `dev` sends full checksums, as onto a wire. Kernel
    /// defaults: left to offload (partial checksums).
    fn full_checksums(&self, ns: &Netns, dev: &str) -> Result<()> {
        if self.offloads == Offloads::WireLike {
            set_tx_checksum(ns, dev, false)?;
        }
        Ok(())
    }

    /// With several queues, makes the LB's peers pick the LB's receive
    /// queue by sending CPU, so a test can load every queue by running
    /// clients on different CPUs.
    fn spread_lb_queues(&self, peers: &[(&Netns, &str)]) -> Result<()> {
        if self.queues > 1 {
            for (ns, dev) in peers {
                spread_tx_queues_by_cpu(ns, dev, self.queues)?;
            }
        }
        Ok(())
    }

    fn wire_backends(&self) -> Result<()> {
        for be in &self.backends {
            veth(&be.ns, "eth0", &self.switch, &be.name, self.queues)?;
            be.ns
                .ip(&["addr", "add", &format!("{}/24", be.addr), "dev", "eth0"])?;
            be.ns.ip(&["link", "set", "dev", "eth0", "up"])?;
            self.full_checksums(&be.ns, "eth0")?;
            be.ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &LB_BACKEND_SIDE_ADDR.to_string(),
            ])?;
            self.attach_to_bridge(&[&be.name])?;
        }
        Ok(())
    }

    /// The LB's client-side and backend-side addresses; one interface may
    /// carry both (router on a stick).
    fn lb_addressing(&self, client_side: &str, backend_side: &str) -> Result<()> {
        let lb = &self.lb;
        let client_cidr = format!("{LB_CLIENT_SIDE_ADDR}/24");
        let backend_cidr = format!("{LB_BACKEND_SIDE_ADDR}/24");
        lb.ip(&["addr", "add", &client_cidr, "dev", client_side])?;
        lb.ip(&["addr", "add", &backend_cidr, "dev", backend_side])?;
        lb.ip(&["link", "set", "dev", client_side, "up"])?;
        if backend_side != client_side {
            lb.ip(&["link", "set", "dev", backend_side, "up"])?;
        }
        Ok(())
    }

    fn client_addressing(&self) -> Result<()> {
        let c = &self.client;
        c.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        c.ip(&["link", "set", "dev", "eth0", "up"])?;
        self.full_checksums(c, "eth0")?;
        c.ip(&[
            "route",
            "add",
            VIP_NET,
            "via",
            &LB_CLIENT_SIDE_ADDR.to_string(),
        ])?;
        Ok(())
    }

    fn attach_to_bridge(&self, ports: &[&str]) -> Result<()> {
        for port in ports {
            self.switch
                .ip(&["link", "set", "dev", port, "master", "br0"])?;
            self.switch.ip(&["link", "set", "dev", port, "up"])?;
        }
        Ok(())
    }

    /// Waits for every veth end to report carrier, so the first test packet
    /// does not race link setup.
    fn finish(&self, switch_ports: &[&str]) -> Result<()> {
        let lb_devs: Vec<&str> = self.lb_interfaces.iter().map(String::as_str).collect();
        wait_links_up(&self.lb, &lb_devs, LINK_UP_TIMEOUT)?;
        wait_links_up(&self.client, &["eth0"], LINK_UP_TIMEOUT)?;
        for be in &self.backends {
            wait_links_up(&be.ns, &["eth0"], LINK_UP_TIMEOUT)?;
        }
        let mut sw: Vec<&str> = switch_ports.to_vec();
        sw.push("br0");
        wait_links_up(&self.switch, &sw, LINK_UP_TIMEOUT)
            .with_context(|| format!("topology {:?}", self.namespace_names()))
    }
}

/// A veth pair with `a_dev` in `a` and `b_dev` in `b`, `queues` queues on
/// both ends. Created inside the namespaces, so no name ever appears in the
/// host namespace.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str, queues: u32) -> Result<()> {
    let q = queues.to_string();
    a.ip(&[
        "link",
        "add",
        a_dev,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ])?;
    Ok(())
}
