//! What the daemon will not run a config with, beyond what resolution
//! refuses: listeners this build's packet path does not serve as the file
//! says (`switchyard_dataplane::capabilities`), and listeners this node was
//! not started to serve (`fullnat` without `--snat-ports`, whose flows
//! would all be dropped). Checked at start, on every reload and by
//! `yardctl config check`, so such a file is refused with the reason while
//! the running config stays.

use switchyard_config::snapshot::{Forwarding, Snapshot};

/// What the node was started with that listeners depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSetup {
    /// `switchyard run --snat-ports` was given.
    pub snat_ports: bool,
}

/// Why `snapshot` cannot be served on this node, if it cannot.
pub fn refusal(snapshot: &Snapshot, node: NodeSetup) -> Option<String> {
    let listeners = snapshot.listeners();
    if let Some(why) = listeners
        .iter()
        .find_map(switchyard_dataplane::capabilities::unsupported)
    {
        return Some(why);
    }
    if !node.snat_ports {
        if let Some(listener) = listeners
            .iter()
            .find(|l| matches!(l.forwarding(), Forwarding::FullNat(_)))
        {
            return Some(format!(
                "listener {} forwards in mode fullnat, which needs source ports to hand out: \
                 start switchyard run with --snat-ports FIRST-LAST (outside the kernel's \
                 net.ipv4.ip_local_port_range)",
                listener.name()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../config/examples/demo.yaml");

    fn snapshot(text: &str) -> Snapshot {
        let resources = switchyard_config::load_str("demo.yaml", text).expect("loads");
        switchyard_config::resolve(&resources, 1).snapshot
    }

    #[test]
    fn fullnat_needs_snat_ports() {
        let fullnat = snapshot(&format!(
            "{DEMO}---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
             metadata: {{name: p, namespace: demo}}\nspec:\n  targetRefs: \
             [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n  \
             forwarding: {{mode: fullnat}}\n"
        ));
        let why = refusal(&fullnat, NodeSetup::default()).expect("refused");
        assert!(why.contains("--snat-ports"), "{why}");
        assert_eq!(refusal(&fullnat, NodeSetup { snat_ports: true }), None);
        assert_eq!(refusal(&snapshot(DEMO), NodeSetup::default()), None);
    }
}
