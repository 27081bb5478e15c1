//! The status a Gateway API controller would write, as data: one
//! `ResourceStatus` per object Switchyard is responsible for (its
//! GatewayClasses, their Gateways, the TCPRoutes and UDPRoutes that name
//! them, and TrafficPolicies), shaped and spelled like the API's `status`
//! stanza so that it serializes to what `kubectl get -o yaml` would show.
//! Resolution fills it (see `resolve/status.rs`); this module only defines
//! the shapes and never decides anything.
//!
//! `lastTransitionTime` is left out on purpose: resolution is a pure
//! function of the file and has no clock, and a time that changes on every
//! run would make the same file give different output. A watcher that
//! writes status to an API server stamps the time when a condition's
//! status actually changes.

use serde::Serialize;

/// `apiVersion` of Gateway API objects whose status Switchyard writes.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// `apiVersion` of Switchyard's own policy kinds.
pub const SWITCHYARD_API_VERSION: &str = "switchyard.io/v1alpha1";

/// One object and its status.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: StatusMetadata,
    pub status: Status,
}

impl ResourceStatus {
    /// `Kind namespace/name`, or `Kind name` for cluster-scoped kinds.
    pub fn resource(&self) -> String {
        if self.metadata.namespace.is_empty() {
            format!("{} {}", self.kind, self.metadata.name)
        } else {
            format!(
                "{} {}/{}",
                self.kind, self.metadata.namespace, self.metadata.name
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusMetadata {
    /// Empty for cluster-scoped kinds (GatewayClass), and then omitted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

/// The `status` stanza of each kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Status {
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    Route(RouteStatus),
    Policy(PolicyStatus),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayClassStatus {
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayStatus {
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub address_type: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteGroupKind {
    pub group: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStatus {
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ObjectReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// GEP-713 policy status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyStatus {
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ObjectReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// A `ParentReference` as status echoes it: the fields the spec gave, with
/// the defaults for group, kind and namespace applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub group: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A `metav1.Condition` without `lastTransitionTime` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
}

impl ConditionStatus {
    pub fn from_bool(value: bool) -> Self {
        if value {
            Self::True
        } else {
            Self::False
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
        }
    }
}

impl Status {
    /// The object-level conditions: a Gateway's or GatewayClass's own, and
    /// none for kinds whose conditions live per parent or ancestor.
    pub fn conditions(&self) -> &[Condition] {
        match self {
            Self::GatewayClass(s) => &s.conditions,
            Self::Gateway(s) => &s.conditions,
            Self::Route(_) | Self::Policy(_) => &[],
        }
    }
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], condition_type: &str) -> Option<&'a Condition> {
    conditions
        .iter()
        .find(|c| c.condition_type == condition_type)
}
