//! What this build's packet path carries out of a listener's settings, so
//! that the daemon refuses a config asking for more (at start, on a reload,
//! in `yardctl config check`) instead of serving it some other way: a
//! listener forwarded in a mode the workers do not implement, or a policy
//! they do not enforce, would quietly do something else than the file says.

use switchyard_config::snapshot::{Forwarding, Listener};

/// Why the packet path cannot serve `listener` as its snapshot says, if
/// it cannot.
pub fn unsupported(listener: &Listener) -> Option<String> {
    let mode_served = matches!(
        listener.forwarding(),
        Forwarding::Nat
            | Forwarding::FullNat(_)
            | Forwarding::Dsr
            | Forwarding::Ipip
            | Forwarding::Gue(_)
    );
    if !mode_served {
        return Some(format!(
            "listener {}: forwarding mode {} is not implemented by this build",
            listener.name(),
            listener.forwarding().name()
        ));
    }
    // Source ranges (the steering program and the workers) and limits
    // (the workers' shares, `policy`) are enforced in every mode, and the
    // PROXY header of `fullnat` by the workers (`packet::proxy`).
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../config/examples/demo.yaml");

    fn first_refusal(text: &str) -> Option<String> {
        let resources = switchyard_config::load_str("demo.yaml", text).expect("loads");
        let resolution = switchyard_config::resolve(&resources, 1);
        resolution.snapshot.listeners().iter().find_map(unsupported)
    }

    #[test]
    fn the_demo_is_served_and_what_is_not_implemented_is_named() {
        assert_eq!(first_refusal(DEMO), None);
        assert_eq!(
            first_refusal(&format!(
                "{DEMO}---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
                 metadata: {{name: p, namespace: demo}}\nspec:\n  targetRefs: \
                 [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n  \
                 sourceRanges: {{deny: [198.18.1.66/32]}}\n  limits: {{maxFlows: 10}}\n"
            )),
            None,
            "policies are served"
        );
        let policy = |spec: &str| {
            format!(
                "{DEMO}---\napiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\n\
                 metadata: {{name: p, namespace: demo}}\nspec:\n  targetRefs: \
                 [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n  {spec}\n"
            )
        };
        // Modes that keep the packet keep the VIP's port: the backends
        // listen on it.
        let same_ports = policy("forwarding: {mode: ipip}")
            .replace("8080", "80")
            .replace("5353", "53");
        for mode in ["ipip", "gue", "dsr"] {
            let served = same_ports.replace("mode: ipip", &format!("mode: {mode}"));
            let resources = switchyard_config::load_str("demo.yaml", &served).expect("loads");
            let snapshot = switchyard_config::resolve(&resources, 1).snapshot;
            assert_eq!(
                snapshot.listeners().len(),
                2,
                "{mode}: both listeners resolved"
            );
            assert_eq!(first_refusal(&served), None, "{mode}");
        }
        assert_eq!(first_refusal(&policy("forwarding: {mode: fullnat}")), None);
        assert_eq!(
            first_refusal(&policy("forwarding: {mode: fullnat, proxyProtocol: V2}")),
            None
        );
    }
}
