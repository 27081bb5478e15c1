//! The kinds the sidecar watches: what the daemon's loader reads, with the
//! versions it reads them under, best first. Discovery picks, per kind, the
//! first version the API server serves.

/// One kind Switchyard reads from a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchedKind {
    /// Empty for the core group.
    pub group: &'static str,
    pub kind: &'static str,
    /// Served versions the loader reads, in order of preference.
    pub versions: &'static [&'static str],
    pub namespaced: bool,
    /// Switchyard writes this kind's status (for objects of its classes).
    pub status_written: bool,
}

impl WatchedKind {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const SWITCHYARD_GROUP: &str = "switchyard.io";
pub const MULTICLUSTER_GROUP: &str = "multicluster.x-k8s.io";

const fn kind(
    group: &'static str,
    kind: &'static str,
    versions: &'static [&'static str],
    namespaced: bool,
    status_written: bool,
) -> WatchedKind {
    WatchedKind {
        group,
        kind,
        versions,
        namespaced,
        status_written,
    }
}

/// Every kind watched, in the order their objects appear in the text sent
/// to the daemon (classes before Gateways before routes, so a reader of
/// that text finds things where a hand-written file would have them).
pub const WATCHED: &[WatchedKind] = &[
    kind(
        SWITCHYARD_GROUP,
        "GatewayClassConfig",
        &["v1alpha1"],
        false,
        false,
    ),
    kind(
        GATEWAY_GROUP,
        "GatewayClass",
        &["v1", "v1beta1"],
        false,
        true,
    ),
    kind(SWITCHYARD_GROUP, "AddressPool", &["v1alpha1"], false, false),
    kind("", "Namespace", &["v1"], false, false),
    kind(GATEWAY_GROUP, "Gateway", &["v1", "v1beta1"], true, true),
    // Gateway API v1.5 promoted TCPRoute and UDPRoute to v1; clusters with
    // older CRDs serve only v1alpha2, which the loader reads too.
    kind(GATEWAY_GROUP, "TCPRoute", &["v1", "v1alpha2"], true, true),
    kind(GATEWAY_GROUP, "UDPRoute", &["v1", "v1alpha2"], true, true),
    kind(
        GATEWAY_GROUP,
        "ReferenceGrant",
        &["v1", "v1beta1"],
        true,
        false,
    ),
    kind(SWITCHYARD_GROUP, "TrafficPolicy", &["v1alpha1"], true, true),
    kind("", "Service", &["v1"], true, false),
    kind("discovery.k8s.io", "EndpointSlice", &["v1"], true, false),
    kind(
        MULTICLUSTER_GROUP,
        "ServiceImport",
        &["v1alpha1"],
        true,
        false,
    ),
    kind(
        SWITCHYARD_GROUP,
        "EndpointSelector",
        &["v1alpha1"],
        true,
        true,
    ),
    kind("", "Pod", &["v1"], true, false),
];

/// The watched kind called `kind` (kinds are unique across the groups
/// Switchyard reads).
pub fn by_name(kind: &str) -> Option<&'static WatchedKind> {
    WATCHED.iter().find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique_so_a_status_finds_its_kind_by_name() {
        for (i, k) in WATCHED.iter().enumerate() {
            assert_eq!(
                WATCHED.iter().position(|o| o.kind == k.kind),
                Some(i),
                "{}",
                k.kind
            );
        }
    }

    #[test]
    fn routes_fall_back_to_v1alpha2_and_grants_to_v1beta1() {
        assert_eq!(by_name("TCPRoute").unwrap().versions, ["v1", "v1alpha2"]);
        assert_eq!(by_name("UDPRoute").unwrap().versions, ["v1", "v1alpha2"]);
        assert_eq!(
            by_name("ReferenceGrant").unwrap().versions,
            ["v1", "v1beta1"]
        );
        assert_eq!(by_name("Pod").unwrap().api_version("v1"), "v1");
        assert_eq!(
            by_name("EndpointSlice").unwrap().api_version("v1"),
            "discovery.k8s.io/v1"
        );
    }
}
