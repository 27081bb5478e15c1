//! The status a Gateway API controller would write, as data: one
//! `ResourceStatus` per object Switchyard is responsible for (its
//! GatewayClasses, their Gateways, the TCPRoutes and UDPRoutes that name
//! them, TrafficPolicies, and the backends resolution reports a problem
//! on), shaped and spelled like the API's `status` stanza so that it
//! serializes to what `kubectl get -o yaml` would show. Resolution fills
//! it (see `resolve/status.rs`); this module only defines the shapes and
//! never decides anything.
//!
//! `lastTransitionTime` is left out on purpose: resolution is a pure
//! function of the file and has no clock, and a time that changes on every
//! run would make the same file give different output. A watcher that
//! writes status to an API server stamps the time when a condition's
//! status actually changes.

use serde::Serialize;

/// `apiVersion` of Gateway API objects whose status Switchyard writes.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// `apiVersion` of GEP-1748 ServiceImports.
pub const SERVICE_IMPORT_API_VERSION: &str = "multicluster.x-k8s.io/v1alpha1";
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

impl ResourceStatus {
    /// Every condition list of this status, each with what it belongs to:
    /// the object itself, a listener, a route parent or a policy ancestor.
    pub fn condition_lists(&self) -> Vec<(String, &[Condition])> {
        let object = self.resource();
        match &self.status {
            Status::GatewayClass(s) => vec![(object, &s.conditions[..])],
            Status::Object(s) => vec![(object, &s.conditions[..])],
            Status::Gateway(s) => {
                let mut out = vec![(object.clone(), &s.conditions[..])];
                out.extend(
                    s.listeners
                        .iter()
                        .map(|l| (format!("{object} listener {}", l.name), &l.conditions[..])),
                );
                out
            }
            Status::Route(s) => s
                .parents
                .iter()
                .map(|p| {
                    (
                        format!("{object} parent {}", p.parent_ref.name),
                        &p.conditions[..],
                    )
                })
                .collect(),
            Status::Policy(s) => s
                .ancestors
                .iter()
                .map(|a| {
                    (
                        format!("{object} ancestor {}", a.ancestor_ref.name),
                        &a.conditions[..],
                    )
                })
                .collect(),
        }
    }

    /// `scope: Type` for every condition type a list holds more than once.
    /// Conditions are a map keyed by type (`x-kubernetes-list-map-keys:
    /// [type]` in every Gateway API CRD), so an API server refuses a status
    /// that repeats one; this must always be empty.
    pub fn repeated_condition_types(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (scope, conditions) in self.condition_lists() {
            for (i, c) in conditions.iter().enumerate() {
                let first = conditions
                    .iter()
                    .position(|o| o.condition_type == c.condition_type);
                if first != Some(i) && first.is_some() {
                    out.push(format!("{scope}: {}", c.condition_type));
                }
            }
        }
        out
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
    /// An object with no Gateway API status of its own that resolution
    /// has something to say about (a Service, ServiceImport or
    /// EndpointSelector): its problems as conditions, as Kubernetes writes
    /// them in any object's `status.conditions`.
    Object(ObjectStatus),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectStatus {
    pub conditions: Vec<Condition>,
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
            Self::Object(s) => &s.conditions,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(condition_type: &str, status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            condition_type: condition_type.to_owned(),
            status,
            reason: reason.to_owned(),
            message: "m".to_owned(),
            observed_generation: 1,
        }
    }

    #[test]
    fn a_condition_type_twice_in_one_list_is_reported_with_its_scope() {
        let listener = |conditions| ListenerStatus {
            name: "tcp".to_owned(),
            supported_kinds: Vec::new(),
            attached_routes: 0,
            conditions,
        };
        let status = |listeners| ResourceStatus {
            api_version: GATEWAY_API_VERSION.to_owned(),
            kind: "Gateway".to_owned(),
            metadata: StatusMetadata {
                namespace: "lb".to_owned(),
                name: "b".to_owned(),
            },
            status: Status::Gateway(GatewayStatus {
                addresses: Vec::new(),
                conditions: vec![condition("Accepted", ConditionStatus::True, "Accepted")],
                listeners,
            }),
        };
        let twice = status(vec![listener(vec![
            condition("Programmed", ConditionStatus::False, "Pending"),
            condition("Programmed", ConditionStatus::False, "AddressNotAssigned"),
        ])]);
        assert_eq!(
            twice.repeated_condition_types(),
            ["Gateway lb/b listener tcp: Programmed"]
        );
        let once = status(vec![listener(vec![
            condition("Accepted", ConditionStatus::True, "Accepted"),
            condition("Programmed", ConditionStatus::False, "Pending"),
        ])]);
        assert!(once.repeated_condition_types().is_empty());
    }
}
