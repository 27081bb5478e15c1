//! The resource types the server serves, and the discovery documents that
//! describe them. One storage per kind: every served version of a kind
//! reads and writes the same objects, with only `apiVersion` differing.

use serde_json::{json, Value};

/// One served resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// Empty for the core group (`/api/v1`).
    pub group: &'static str,
    /// Served versions, the preferred one first.
    pub versions: Vec<&'static str>,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Whether writes to `{plural}/status` exist (and writes to the object
    /// itself leave `status` alone).
    pub status_subresource: bool,
}

impl Kind {
    /// `plural.group`, the name Kubernetes gives the resource in messages.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.contains(&version)
    }

    /// The object as a client of `version` sees it.
    pub fn typed(&self, version: &str, object: Value) -> Value {
        let mut typed = json!({"apiVersion": self.api_version(version), "kind": self.kind});
        if let (Some(typed), Value::Object(fields)) = (typed.as_object_mut(), object) {
            typed.extend(fields);
            typed.insert("apiVersion".into(), json!(self.api_version(version)));
            typed.insert("kind".into(), json!(self.kind));
        }
        typed
    }
}

/// What the catalog serves beyond its defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogOptions {
    /// Serve TCPRoute and UDPRoute as `v1alpha2` only, as clusters with the
    /// experimental channel of older Gateway API releases do.
    pub routes_v1alpha2_only: bool,
}

const GATEWAY: &str = "gateway.networking.k8s.io";
const SWITCHYARD: &str = "switchyard.io";

/// The resource types served, in discovery order.
#[derive(Debug, Clone)]
pub struct Catalog {
    kinds: Vec<Kind>,
}

impl Catalog {
    pub fn new(options: CatalogOptions) -> Self {
        let route_versions = if options.routes_v1alpha2_only {
            vec!["v1alpha2"]
        } else {
            vec!["v1", "v1alpha2"]
        };
        let kind =
            |group, versions: Vec<&'static str>, kind, plural, singular, namespaced, status| Kind {
                group,
                versions,
                kind,
                plural,
                singular,
                namespaced,
                status_subresource: status,
            };
        let kinds = vec![
            kind(
                "",
                vec!["v1"],
                "Namespace",
                "namespaces",
                "namespace",
                false,
                true,
            ),
            kind("", vec!["v1"], "Pod", "pods", "pod", true, true),
            kind("", vec!["v1"], "Service", "services", "service", true, true),
            kind(
                "coordination.k8s.io",
                vec!["v1"],
                "Lease",
                "leases",
                "lease",
                true,
                false,
            ),
            kind(
                "discovery.k8s.io",
                vec!["v1"],
                "EndpointSlice",
                "endpointslices",
                "endpointslice",
                true,
                false,
            ),
            kind(
                GATEWAY,
                vec!["v1", "v1beta1"],
                "GatewayClass",
                "gatewayclasses",
                "gatewayclass",
                false,
                true,
            ),
            kind(
                GATEWAY,
                vec!["v1", "v1beta1"],
                "Gateway",
                "gateways",
                "gateway",
                true,
                true,
            ),
            kind(
                GATEWAY,
                route_versions.clone(),
                "TCPRoute",
                "tcproutes",
                "tcproute",
                true,
                true,
            ),
            kind(
                GATEWAY,
                route_versions,
                "UDPRoute",
                "udproutes",
                "udproute",
                true,
                true,
            ),
            kind(
                GATEWAY,
                vec!["v1", "v1beta1"],
                "ReferenceGrant",
                "referencegrants",
                "referencegrant",
                true,
                false,
            ),
            kind(
                "multicluster.x-k8s.io",
                vec!["v1alpha1"],
                "ServiceImport",
                "serviceimports",
                "serviceimport",
                true,
                true,
            ),
            kind(
                SWITCHYARD,
                vec!["v1alpha1"],
                "GatewayClassConfig",
                "gatewayclassconfigs",
                "gatewayclassconfig",
                false,
                true,
            ),
            kind(
                SWITCHYARD,
                vec!["v1alpha1"],
                "AddressPool",
                "addresspools",
                "addresspool",
                false,
                true,
            ),
            kind(
                SWITCHYARD,
                vec!["v1alpha1"],
                "EndpointSelector",
                "endpointselectors",
                "endpointselector",
                true,
                true,
            ),
            kind(
                SWITCHYARD,
                vec!["v1alpha1"],
                "TrafficPolicy",
                "trafficpolicies",
                "trafficpolicy",
                true,
                true,
            ),
        ];
        Catalog { kinds }
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The kind behind a URL's group, version and plural, if served there.
    pub fn by_resource(&self, group: &str, version: &str, plural: &str) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.plural == plural && k.serves(version))
    }

    /// The kind an object's `apiVersion` and `kind` name, if served.
    pub fn by_type(&self, api_version: &str, kind: &str) -> Option<(&Kind, &'static str)> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let found = self
            .kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)?;
        let version = found.versions.iter().find(|v| **v == version)?;
        Some((found, version))
    }

    /// The groups in discovery order, with their versions (preferred first).
    fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for kind in self.kinds.iter().filter(|k| !k.group.is_empty()) {
            let at = match groups.iter().position(|(g, _)| *g == kind.group) {
                Some(at) => at,
                None => {
                    groups.push((kind.group, Vec::new()));
                    groups.len() - 1
                }
            };
            for version in &kind.versions {
                if !groups[at].1.contains(version) {
                    groups[at].1.push(version);
                }
            }
        }
        groups
    }

    /// `GET /api`: the APIVersions of the core group.
    pub fn core_versions(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        })
    }

    /// `GET /apis`.
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(group, versions)| group_document(group, &versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`.
    pub fn group(&self, group: &str) -> Option<Value> {
        self.groups()
            .into_iter()
            .find(|(g, _)| *g == group)
            .map(|(group, versions)| {
                let mut document = group_document(group, &versions);
                document["kind"] = json!("APIGroup");
                document["apiVersion"] = json!("v1");
                document
            })
    }

    /// `GET /api/v1` or `GET /apis/{group}/{version}`.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for kind in self
            .kinds
            .iter()
            .filter(|k| k.group == group && k.serves(version))
        {
            resources.push(json!({
                "name": kind.plural,
                "singularName": kind.singular,
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }));
            if kind.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", kind.plural),
                    "singularName": "",
                    "namespaced": kind.namespaced,
                    "kind": kind.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return None;
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }))
    }
}

impl Catalog {
    /// Aggregated discovery (`apidiscovery.k8s.io/v2`): every group with
    /// its versions and resources in one document, `/api` for the core
    /// group and `/apis` for the others.
    pub fn aggregated(&self, core: bool) -> Value {
        let mut groups: Vec<(&'static str, Vec<&'static str>)> = if core {
            vec![("", vec!["v1"])]
        } else {
            self.groups()
        };
        groups.retain(|(group, _)| group.is_empty() == core);
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|version| {
                        json!({
                            "version": version,
                            "resources": self.resource_discovery(group, version),
                            "freshness": "Current",
                        })
                    })
                    .collect();
                json!({"metadata": {"name": group}, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }

    fn resource_discovery(&self, group: &str, version: &str) -> Vec<Value> {
        self.kinds
            .iter()
            .filter(|k| k.group == group && k.serves(version))
            .map(|kind| {
                let response_kind = json!({"group": group, "version": version, "kind": kind.kind});
                let subresources: Vec<Value> = if kind.status_subresource {
                    vec![json!({
                        "subresource": "status",
                        "responseKind": response_kind,
                        "verbs": ["get", "patch", "update"],
                    })]
                } else {
                    Vec::new()
                };
                json!({
                    "resource": kind.plural,
                    "responseKind": response_kind,
                    "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": kind.singular,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    "subresources": subresources,
                })
            })
            .collect()
    }
}

fn group_document(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}
