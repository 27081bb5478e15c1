//! Switchyard's Kubernetes deployment: the manifests in this folder (the
//! CustomResourceDefinitions of the `switchyard.io` kinds, RBAC, the LB
//! node DaemonSet, an example GatewayClass) and, as data, the one list of
//! API resources the watcher sidecar reads and writes, which its RBAC
//! rules and watches are held to by the tests in `tests/`. It must never
//! depend on another crate or do anything at run time: it is constants,
//! so the sidecar can use them at no cost.

/// An API resource `switchyard-kube` watches, and whether it writes its
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiResource {
    /// `""` for the core group.
    pub group: &'static str,
    /// The versions read, preferred first; the sidecar takes the first one
    /// the API server serves.
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    /// The resource name in URLs and RBAC rules.
    pub plural: &'static str,
    pub namespaced: bool,
    /// The sidecar writes the status the daemon reports on objects of this
    /// kind (see `switchyard_config::status`) through the status
    /// subresource: RBAC grants `patch` and `update` on `<plural>/status`,
    /// and nothing else that writes. Kinds other controllers own (Service,
    /// ServiceImport) are not written: what the daemon finds wrong with
    /// them stays in its diagnostics.
    pub writes_status: bool,
}

impl ApiResource {
    /// `group/version` of the preferred version, `version` for the core
    /// group.
    pub fn api_version(&self) -> String {
        let version = self.versions.first().copied().unwrap_or_default();
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

/// API group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// API group of Switchyard's own kinds, whose CRDs are in `deploy/crds/`.
pub const SWITCHYARD_GROUP: &str = "switchyard.io";
/// API group of the Multi-Cluster Services API (ServiceImport).
pub const MULTICLUSTER_GROUP: &str = "multicluster.x-k8s.io";

const fn resource(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    writes_status: bool,
) -> ApiResource {
    ApiResource {
        group,
        versions,
        kind,
        plural,
        namespaced,
        writes_status,
    }
}

/// Every kind Switchyard's configuration is made of, as the static loader
/// reads them (`switchyard_config::load`): what the sidecar watches, all
/// namespaces.
pub const WATCHED: &[ApiResource] = &[
    resource(
        GATEWAY_GROUP,
        &["v1", "v1beta1"],
        "GatewayClass",
        "gatewayclasses",
        false,
        true,
    ),
    resource(
        GATEWAY_GROUP,
        &["v1", "v1beta1"],
        "Gateway",
        "gateways",
        true,
        true,
    ),
    // v1alpha2 where only the experimental channel's CRDs are installed.
    resource(
        GATEWAY_GROUP,
        &["v1", "v1alpha2"],
        "TCPRoute",
        "tcproutes",
        true,
        true,
    ),
    resource(
        GATEWAY_GROUP,
        &["v1", "v1alpha2"],
        "UDPRoute",
        "udproutes",
        true,
        true,
    ),
    resource(
        GATEWAY_GROUP,
        &["v1", "v1beta1"],
        "ReferenceGrant",
        "referencegrants",
        true,
        false,
    ),
    // Labels, for allowedRoutes namespace selectors.
    resource("", &["v1"], "Namespace", "namespaces", false, false),
    resource("", &["v1"], "Service", "services", true, false),
    resource(
        "discovery.k8s.io",
        &["v1"],
        "EndpointSlice",
        "endpointslices",
        true,
        false,
    ),
    // The endpoints of EndpointSelector backends.
    resource("", &["v1"], "Pod", "pods", true, false),
    resource(
        MULTICLUSTER_GROUP,
        &["v1alpha1"],
        "ServiceImport",
        "serviceimports",
        true,
        false,
    ),
    resource(
        SWITCHYARD_GROUP,
        &["v1alpha1"],
        "GatewayClassConfig",
        "gatewayclassconfigs",
        false,
        false,
    ),
    resource(
        SWITCHYARD_GROUP,
        &["v1alpha1"],
        "AddressPool",
        "addresspools",
        false,
        false,
    ),
    resource(
        SWITCHYARD_GROUP,
        &["v1alpha1"],
        "EndpointSelector",
        "endpointselectors",
        true,
        true,
    ),
    resource(
        SWITCHYARD_GROUP,
        &["v1alpha1"],
        "TrafficPolicy",
        "trafficpolicies",
        true,
        true,
    ),
];

/// The Lease that elects the one status writer among the LB nodes, in the
/// namespace the manifests install into.
pub const LEASE_NAMESPACE: &str = "switchyard-system";
pub const LEASE_NAME: &str = "switchyard-status";

/// The resource named `kind`, if Switchyard watches it.
pub fn watched(kind: &str) -> Option<&'static ApiResource> {
    WATCHED.iter().find(|r| r.kind == kind)
}
