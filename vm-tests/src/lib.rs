//! Switchyard's namespace test harness. It must never reach outside the
//! namespaces it created, nor signal a process it did not start.
//!
//! Builds small networks out of network namespaces, veths and a bridge,
//! runs echo servers as backends and real client sockets inside them, starts
//! `switchyard run` in the load balancer's namespace and reads its counters
//! through `yardctl`. Everything it creates is a guard: namespaces,
//! processes, threads and temporary files go away on drop, also when a test
//! panics. It only ever sends traffic to addresses inside namespaces it
//! created (198.18.0.0/15) and only signals processes it started.
//!
//! Running it needs root (namespaces, setns) and, for the daemon tests, the
//! release binaries: `make test` builds them first.

pub mod bird;
pub mod bpffs;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod encap;
pub mod fullnat;
pub mod health;
pub mod l2lab;
pub mod link;
pub mod netns;
pub mod nginx;
pub mod policy;
pub mod poll;
pub mod process;
pub mod servers;
pub mod tcp_info;
pub mod tempdir;
pub mod topology;
pub mod vlan;
pub mod vm;

pub use client::{tcp_exchange, tcp_exchange_keep_open, udp_exchange, Reply, IO_TIMEOUT};
pub use config::{GatewaySpec, ListenerSpec, Protocol};
pub use daemon::{yardctl_json, Daemon, DaemonOptions};
pub use link::xdp_attached;
pub use netns::{in_netns, Netns};
pub use servers::{EchoPair, TcpEchoServer, UdpEchoServer};
pub use tempdir::TempDir;
pub use topology::{Backend, Offloads, Shape, Topology};

use std::path::Path;

use anyhow::Result;

impl Topology {
    /// Starts echo servers on every backend: TCP on `tcp_port`, UDP on
    /// `udp_port`, each replying with the backend's name.
    pub fn start_backends(&self, tcp_port: u16, udp_port: u16) -> Result<Vec<EchoPair>> {
        self.backends
            .iter()
            .map(|be| EchoPair::start(&be.ns, &be.name, tcp_port, udp_port))
            .collect()
    }

    /// [`Topology::start_backends`] and, on each backend's IPv6 address
    /// ([`topology::BACKENDS6`], with [`Topology::with_ipv6`]), a second
    /// pair: the backends of a dual-stack Gateway.
    pub fn start_backends_dual_stack(&self, tcp_port: u16, udp_port: u16) -> Result<Vec<EchoPair>> {
        let mut servers = self.start_backends(tcp_port, udp_port)?;
        for (backend, (_, addr6)) in self.backends.iter().zip(topology::BACKENDS6) {
            servers.push(EchoPair::start_on(
                &backend.ns,
                &backend.name,
                std::net::IpAddr::V6(addr6),
                tcp_port,
                udp_port,
            )?);
        }
        Ok(servers)
    }

    /// Starts the daemon on all LB interfaces with as many queues as the
    /// topology's veths have.
    pub fn start_daemon(&self, config: &Path) -> Result<Daemon> {
        let opts = DaemonOptions::new(self.lb_interfaces()).queues(self.queues);
        Daemon::start(&self.lb, config, &opts)
    }

    /// Whether any LB interface has an XDP program attached.
    pub fn lb_interfaces_with_xdp(&self) -> Result<Vec<String>> {
        let mut attached = Vec::new();
        for dev in self.lb_interfaces() {
            if xdp_attached(&self.lb, dev)? {
                attached.push(dev.clone());
            }
        }
        Ok(attached)
    }
}
