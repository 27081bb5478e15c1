//! What `yard-memory` measures with: a generated configuration of any
//! number of listeners, and a process's resident memory as the kernel
//! reports it. The configuration is a TCP listener per port, 64 to a
//! Gateway (the Gateway API's limit), each Gateway on a VIP of its own,
//! each listener with its own route and Service, so that no two listeners
//! share a backend set (the case sharing cannot help) unless the caller
//! asks for one Service behind all of them.

use std::fmt::Write as _;

use anyhow::{Context, Result};

/// Gateway `g<k>` serves listeners `64k..64k+63` on 198.18.100.(10 + k).
pub const LISTENERS_PER_GATEWAY: usize = 64;
/// Listener `l<i>` serves port `FIRST_PORT + i`.
pub const FIRST_PORT: u32 = 10_000;

/// How the generated listeners reach their backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// Listener `i` has its own Service, whose endpoints listen on a port
    /// of their own (`20000 + i`) on the same `per_listener` addresses.
    Distinct { per_listener: usize },
    /// Every listener routes to one Service.
    Shared { endpoints: usize },
}

/// The YAML of `listeners` listeners. `revision` changes listener 0's
/// backends (one endpoint more per revision) and nothing else: a reload
/// or a diff between two revisions changes exactly one listener.
pub fn config_yaml(listeners: usize, backends: Backends, revision: usize) -> String {
    let mut out = String::new();
    out.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: bench}\n\
         spec: {controllerName: switchyard.io/gateway-controller}\n---\n",
    );
    for first in (0..listeners).step_by(LISTENERS_PER_GATEWAY) {
        let k = first / LISTENERS_PER_GATEWAY;
        let _ = write!(
            out,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g{k}, namespace: bench}}\n\
             spec:\n  gatewayClassName: bench\n  addresses: [{{value: 198.18.100.{}}}]\n  listeners:\n",
            10 + k
        );
        for i in first..listeners.min(first + LISTENERS_PER_GATEWAY) {
            let _ = writeln!(
                out,
                "  - {{name: l{i}, port: {}, protocol: TCP}}",
                FIRST_PORT as usize + i
            );
        }
        out.push_str("---\n");
    }
    for i in 0..listeners {
        let service = match backends {
            Backends::Distinct { .. } => format!("s{i}"),
            Backends::Shared { .. } => "shared".to_owned(),
        };
        let _ = write!(
            out,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
             metadata: {{name: r{i}, namespace: bench}}\n\
             spec:\n  parentRefs: [{{name: g{}, sectionName: l{i}}}]\n  \
             rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n---\n",
            i / LISTENERS_PER_GATEWAY
        );
    }
    match backends {
        Backends::Distinct { per_listener } => {
            for i in 0..listeners {
                let extra = if i == 0 { revision } else { 0 };
                service(&mut out, &format!("s{i}"), per_listener + extra, 20_000 + i);
            }
        }
        Backends::Shared { endpoints } => service(&mut out, "shared", endpoints + revision, 8080),
    }
    out
}

/// Service `bench/name` (port 80) with `endpoints` ready endpoints on
/// `port`, at 198.18.2.21 onwards.
fn service(out: &mut String, name: &str, endpoints: usize, port: usize) {
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  ports: [{{name: tcp, port: 80, targetPort: {port}}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: tcp, port: {port}}}]\nendpoints:\n"
    );
    for e in 0..endpoints {
        let _ = writeln!(
            out,
            "- {{addresses: [\"198.18.{}.{}\"]}}",
            2 + (20 + e) / 250,
            (20 + e) % 250 + 1
        );
    }
    out.push_str("---\n");
}

/// Resident and peak resident memory of process `pid` (this one when
/// `None`), in KiB: `VmRSS` and `VmHWM` of `/proc/PID/status`.
pub fn resident_kib(pid: Option<u32>) -> Result<(u64, u64)> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{path} has no {name} in kB"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_one_listener_per_port_and_a_revision_changes_only_the_first() {
        let backends = Backends::Distinct { per_listener: 3 };
        let load = |revision| {
            let yaml = config_yaml(5, backends, revision);
            let resources = switchyard_config::load_str("bench.yaml", &yaml).unwrap();
            switchyard_config::resolve(&resources, 1)
        };
        let (first, second) = (load(0), load(1));
        assert!(first.diagnostics.is_empty(), "{:#?}", first.diagnostics);
        let counts = |res: &switchyard_config::Resolution| -> Vec<usize> {
            res.snapshot
                .listeners()
                .iter()
                .map(|l| l.backends().len())
                .collect()
        };
        assert_eq!(counts(&first), [3; 5]);
        let mut changed = counts(&second);
        changed.sort_unstable();
        assert_eq!(changed, [3, 3, 3, 3, 4]);
    }

    #[test]
    fn shared_backends_make_one_table() {
        let yaml = config_yaml(70, Backends::Shared { endpoints: 2 }, 0);
        let res =
            switchyard_config::resolve(&switchyard_config::load_str("b.yaml", &yaml).unwrap(), 1);
        let listeners = res.snapshot.listeners();
        assert_eq!(listeners.len(), 70);
        assert!(listeners
            .iter()
            .all(|l| switchyard_config::snapshot::SlotTable::ptr_eq(
                l.slots(),
                listeners[0].slots()
            )));
    }

    #[test]
    fn resident_memory_is_read_from_proc() {
        let (rss, peak) = resident_kib(None).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
