//! Config input is data, not an invariant: whatever a file holds, loading
//! and resolving it returns a result or an error, never a panic.

use proptest::prelude::*;

const DEMO: &str = include_str!("../examples/demo.yaml");
const POLICY: &str = include_str!("../examples/traffic-policy.yaml");
const POOL: &str = include_str!("../examples/address-pool.yaml");
const HEALTH: &str = include_str!("../examples/health-check.yaml");

/// Whatever the file, resolution returns, and its status repeats no
/// condition type in one list.
fn load_and_resolve(text: &str) {
    if let Ok(resources) = switchyard_config::load_str("input.yaml", text) {
        let res = switchyard_config::resolve(&resources, 1);
        let repeated = res.repeated_condition_types();
        assert!(repeated.is_empty(), "{repeated:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        load_and_resolve(&text);
    }

    /// Mutations of a valid file reach deep into the schema and resolution,
    /// which random text rarely does.
    #[test]
    fn mutated_demo_config_never_panics(
        edits in proptest::collection::vec((0..DEMO.len(), any::<char>()), 1..6),
        cut in 0..DEMO.len(),
    ) {
        let mut chars: Vec<char> = DEMO.chars().collect();
        for (at, replacement) in edits {
            let at = at % chars.len();
            chars[at] = replacement;
        }
        let text: String = chars.into_iter().collect();
        load_and_resolve(&text);
        let cut = text.char_indices().map(|(i, _)| i).find(|&i| i >= cut).unwrap_or(text.len());
        load_and_resolve(&text[..cut]);
    }

    /// Numbers in every field that takes one: ports, weights, addresses.
    #[test]
    fn any_numbers_in_the_demo_config_never_panic(
        port in any::<i64>(), weight in any::<i64>(), octet in any::<i64>()
    ) {
        let text = DEMO
            .replace("port: 80\n", &format!("port: {port}\n"))
            .replace("      port: 53\n", &format!("      port: 53\n      weight: {weight}\n"))
            .replace("198.18.2.21", &format!("198.18.2.{octet}"));
        assert!(text.contains("weight:"), "the weight edit must land");
        load_and_resolve(&text);
    }

    /// Any duration, threshold, path and payload in the health check
    /// example: each is read byte by byte, by code of Switchyard's own.
    #[test]
    fn any_values_in_the_health_check_example_never_panic(
        interval in "[0-9hms]{0,24}",
        timeout in "[0-9hms]{0,24}",
        threshold in any::<i64>(),
        path in "\\PC{0,24}",
        binary in "[A-Za-z0-9+/=]{0,16}",
    ) {
        let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let text = HEALTH
            .replacen("interval: 1s", &format!("interval: {}", quoted(&interval)), 1)
            .replacen("timeout: 500ms", &format!("timeout: {}", quoted(&timeout)), 1)
            .replacen("healthyThreshold: 2", &format!("healthyThreshold: {threshold}"), 1)
            .replacen("path: /healthz", &format!("path: {}", quoted(&path)), 1)
            .replacen("{type: Text, text: ok}", &format!("{{type: Binary, binary: {}}}", quoted(&binary)), 1);
        assert!(text.contains("binary:"), "the payload edit must land");
        load_and_resolve(&text);
    }

    /// Any table size and target section in the TrafficPolicy example.
    #[test]
    fn any_table_size_in_the_policy_example_never_panics(
        size in any::<i64>(), section in "[a-z-]{0,12}"
    ) {
        let text = POLICY
            .replace("tableSize: 4093", &format!("tableSize: {size}"))
            .replace("sectionName: tcp-echo", &format!("sectionName: \"{section}\""));
        assert!(text.contains("sectionName: \""), "the section edit must land");
        load_and_resolve(&text);
    }

    /// Any CIDR, node port range and class type in the address pool
    /// example, including pools too small, huge IPv6 ones and prefixes
    /// that are not ones.
    #[test]
    fn any_pool_and_class_in_the_address_pool_example_never_panics(
        a in any::<u8>(), prefix in 0u8..140, v6 in any::<bool>(),
        first in any::<i32>(), last in any::<i32>(),
        class in prop::sample::select(vec!["ClusterIP", "NodePort", "LoadBalancer", "Headless", "ExternalName", "Bogus"]),
    ) {
        let cidr = if v6 { format!("2001:db8::{a:x}/{prefix}") } else { format!("198.18.{a}.0/{prefix}") };
        let text = POOL
            .replace("cidrs: [\"198.18.100.0/24\"]", &format!("cidrs: [\"{cidr}\"]"))
            .replace("allocateLoadBalancerNodePorts: false", &format!(
                "nodeAddresses: [198.18.1.1]\n  nodePortRange: {first}-{last}"))
            .replace("type: LoadBalancer ", &format!("type: {class} "));
        assert!(text.contains(&cidr) && text.contains("nodePortRange"), "the edits must land");
        load_and_resolve(&text);
    }

    #[test]
    fn mutated_address_pool_example_never_panics(
        edits in proptest::collection::vec((0..POOL.len(), any::<char>()), 1..6),
    ) {
        let mut chars: Vec<char> = POOL.chars().collect();
        for (at, replacement) in edits {
            let at = at % chars.len();
            chars[at] = replacement;
        }
        load_and_resolve(&chars.into_iter().collect::<String>());
    }
}
