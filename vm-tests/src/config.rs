//! Gateway API configuration files for tests, in the shape the bundled
//! `config/examples/demo.yaml` uses: a GatewayClass, one Gateway with one
//! address, and per listener a route to a Service backed by an
//! EndpointSlice.
//!
//! This module only writes YAML text; whether it is valid is the daemon's
//! call, and a test that feeds it is checking exactly that.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::topology::{BACKENDS, BACKENDS6, VIP, VIP6};

/// `spec.controllerName` Switchyard claims GatewayClasses with.
pub const CONTROLLER_NAME: &str = "switchyard.io/gateway-controller";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn upper(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    fn route_kind(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCPRoute",
            Protocol::Udp => "UDPRoute",
        }
    }
}

/// One listener of the Gateway and where its traffic goes.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    /// Name of the TCPRoute/UDPRoute attached to this listener.
    pub route: String,
    pub protocol: Protocol,
    /// Port on the VIP.
    pub port: u16,
    /// Port the backends listen on (the Service port's `targetPort`).
    pub target_port: u16,
    /// Service the route points at, in the Gateway's namespace. Listeners
    /// naming the same Service share it (and must list the same backends);
    /// its port for this listener is named after the listener and equals
    /// the listener's port, as in the bundled demo.
    pub service: String,
    pub backends: Vec<Ipv4Addr>,
}

/// A Gateway with one address and its listeners.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    pub namespace: String,
    pub gateway: String,
    pub class: String,
    pub vip: Ipv4Addr,
    pub listeners: Vec<ListenerSpec>,
    /// Backends whose Pods are being deleted: their EndpointSlice entries
    /// say `{ready: false, serving: true, terminating: true}` instead of
    /// `ready: true`. Kube-proxy (and Switchyard) use such endpoints only
    /// while a Service has no ready one.
    pub terminating: Vec<Ipv4Addr>,
    /// A second, IPv6 address of the Gateway (dual stack), and the IPv6
    /// endpoints of every Service (a second EndpointSlice, as a
    /// dual-stack Service has).
    pub vip6: Option<Ipv6Addr>,
    pub backends6: Vec<Ipv6Addr>,
}

/// Namespace of the demo Gateway.
pub const DEMO_NAMESPACE: &str = "demo";
/// Name of the demo Gateway.
pub const DEMO_GATEWAY: &str = "edge";
/// The Service behind both demo listeners.
pub const DEMO_SERVICE: &str = "echo";
/// The demo's TCP listener: VIP port 80 to backends' 8080.
pub const TCP_LISTENER: &str = "tcp-echo";
pub const TCP_PORT: u16 = 80;
pub const TCP_TARGET_PORT: u16 = 8080;
/// The demo's UDP listener: VIP port 53 to backends' 5353.
pub const UDP_LISTENER: &str = "udp-echo";
pub const UDP_PORT: u16 = 53;
pub const UDP_TARGET_PORT: u16 = 5353;

impl GatewaySpec {
    /// What `config/examples/demo.yaml` declares: demo/edge at 198.18.100.10,
    /// `tcp-echo` TCP 80 -> be1, be2 :8080 and `udp-echo` UDP 53 -> :5353.
    pub fn demo() -> GatewaySpec {
        let backends: Vec<Ipv4Addr> = BACKENDS.iter().map(|(_, addr)| *addr).collect();
        GatewaySpec {
            namespace: DEMO_NAMESPACE.into(),
            gateway: DEMO_GATEWAY.into(),
            class: "switchyard".into(),
            vip: VIP,
            listeners: vec![
                ListenerSpec {
                    name: TCP_LISTENER.into(),
                    route: "echo-tcp".into(),
                    protocol: Protocol::Tcp,
                    port: TCP_PORT,
                    target_port: TCP_TARGET_PORT,
                    service: DEMO_SERVICE.into(),
                    backends: backends.clone(),
                },
                ListenerSpec {
                    name: UDP_LISTENER.into(),
                    route: "echo-udp".into(),
                    protocol: Protocol::Udp,
                    port: UDP_PORT,
                    target_port: UDP_TARGET_PORT,
                    service: DEMO_SERVICE.into(),
                    backends,
                },
            ],
            terminating: Vec::new(),
            vip6: None,
            backends6: Vec::new(),
        }
    }

    /// The demo as a dual-stack Gateway: 198.18.100.10 and 2001:db8:100::10,
    /// the Service with both backends' IPv4 and IPv6 endpoints.
    pub fn demo_dual_stack() -> GatewaySpec {
        GatewaySpec {
            vip6: Some(VIP6),
            backends6: BACKENDS6.iter().map(|(_, addr)| *addr).collect(),
            ..GatewaySpec::demo()
        }
    }

    /// The demo with every listener's backends terminating (none ready):
    /// they keep serving, now as `terminating`.
    pub fn demo_terminating() -> GatewaySpec {
        GatewaySpec {
            terminating: BACKENDS.iter().map(|(_, addr)| *addr).collect(),
            ..GatewaySpec::demo()
        }
    }

    /// `namespace/gateway/listener`, as `yardctl` names a listener.
    pub fn listener_id(&self, listener: &str) -> String {
        format!("{}/{}/{listener}", self.namespace, self.gateway)
    }

    /// The multi-document YAML file.
    pub fn to_yaml(&self) -> String {
        let ns = &self.namespace;
        let mut y = String::new();
        let _ = write!(
            y,
            "---\n\
             apiVersion: gateway.networking.k8s.io/v1\n\
             kind: GatewayClass\n\
             metadata:\n  name: {class}\n\
             spec:\n  controllerName: {CONTROLLER_NAME}\n\
             ---\n\
             apiVersion: v1\n\
             kind: Namespace\n\
             metadata:\n  name: {ns}\n\
             ---\n\
             apiVersion: gateway.networking.k8s.io/v1\n\
             kind: Gateway\n\
             metadata:\n  name: {gw}\n  namespace: {ns}\n\
             spec:\n  gatewayClassName: {class}\n  addresses:\n  - type: IPAddress\n    value: {vip}\n",
            class = self.class,
            gw = self.gateway,
            vip = self.vip,
        );
        if let Some(vip6) = self.vip6 {
            let _ = writeln!(y, "  - type: IPAddress\n    value: \"{vip6}\"");
        }
        y.push_str("  listeners:\n");
        for l in &self.listeners {
            let _ = write!(
                y,
                "  - name: {}\n    protocol: {}\n    port: {}\n",
                l.name,
                l.protocol.upper(),
                l.port
            );
        }
        for l in &self.listeners {
            let _ = write!(
                y,
                "---\n\
                 apiVersion: gateway.networking.k8s.io/v1\n\
                 kind: {kind}\n\
                 metadata:\n  name: {route}\n  namespace: {ns}\n\
                 spec:\n  parentRefs:\n  - name: {gw}\n    sectionName: {name}\n  \
                 rules:\n  - backendRefs:\n    - name: {service}\n      port: {port}\n",
                kind = l.protocol.route_kind(),
                route = l.route,
                name = l.name,
                gw = self.gateway,
                service = l.service,
                port = l.port,
            );
        }
        let mut services: Vec<&str> = Vec::new();
        for l in &self.listeners {
            if !services.contains(&l.service.as_str()) {
                services.push(&l.service);
            }
        }
        for service in services {
            let users: Vec<&ListenerSpec> = self
                .listeners
                .iter()
                .filter(|l| l.service == service)
                .collect();
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {service}\n  namespace: {ns}\nspec:\n  ports:\n"
            );
            for l in &users {
                let _ = write!(
                    y,
                    "  - name: {}\n    protocol: {}\n    port: {}\n    targetPort: {}\n",
                    l.name,
                    l.protocol.upper(),
                    l.port,
                    l.target_port
                );
            }
            let _ = write!(
                y,
                "---\n\
                 apiVersion: discovery.k8s.io/v1\n\
                 kind: EndpointSlice\n\
                 metadata:\n  name: {service}-1\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service}\n\
                 addressType: IPv4\n"
            );
            if users[0].backends.is_empty() {
                // A Service without endpoints: its share of the table refuses flows.
                y.push_str("endpoints: []\n");
            } else {
                y.push_str("endpoints:\n");
            }
            for addr in &users[0].backends {
                let conditions = if self.terminating.contains(addr) {
                    "    ready: false\n    serving: true\n    terminating: true\n"
                } else {
                    "    ready: true\n"
                };
                let _ = write!(y, "- addresses: [\"{addr}\"]\n  conditions:\n{conditions}");
            }
            let mut ports = String::from("ports:\n");
            for l in &users {
                let _ = write!(
                    ports,
                    "- name: {}\n  protocol: {}\n  port: {}\n",
                    l.name,
                    l.protocol.upper(),
                    l.target_port
                );
            }
            y.push_str(&ports);
            if !self.backends6.is_empty() {
                let _ = write!(
                    y,
                    "---\n\
                     apiVersion: discovery.k8s.io/v1\n\
                     kind: EndpointSlice\n\
                     metadata:\n  name: {service}-ipv6\n  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service}\n\
                     addressType: IPv6\n\
                     endpoints:\n"
                );
                for addr in &self.backends6 {
                    let _ = write!(
                        y,
                        "- addresses: [\"{addr}\"]\n  conditions:\n    ready: true\n"
                    );
                }
                y.push_str(&ports);
            }
        }
        y
    }
}
