//! What resolution has to say about an object, shaped like the status
//! condition a Gateway API controller would write: the object, the scope
//! (a Gateway listener or a route's parent), the condition type, the spec's
//! reason and a message. Status (`resolve/status.rs`) is built on these;
//! this module never decides anything itself.

use std::fmt::{self, Write as _};

use crate::resources::Gateway;

/// Condition types of Gateway, listener, route and policy status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ConditionType {
    Accepted,
    Programmed,
    ResolvedRefs,
    Conflicted,
    /// A setting is in effect but works less well than it should (a
    /// warning: nothing is refused).
    Degraded,
}

impl ConditionType {
    /// The condition status a diagnostic stands for: every diagnostic is a
    /// problem, which is `False` except for `Conflicted` and `Degraded`.
    pub fn problem_status(self) -> bool {
        matches!(self, Self::Conflicted | Self::Degraded)
    }
}

/// Reasons, spelled as in the Gateway API spec (`apis/v1/*_types.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Reason {
    /// Gateway `Accepted`: an address type Switchyard cannot serve.
    UnsupportedAddress,
    /// Gateway `Programmed`: no address to serve on.
    AddressNotAssigned,
    /// Listener `Accepted`: a protocol other than TCP or UDP.
    UnsupportedProtocol,
    /// Listener `ResolvedRefs`: allowedRoutes.kinds names a kind the
    /// listener's protocol cannot carry.
    InvalidRouteKinds,
    /// Listener `Conflicted`: another listener serves the same VIP, port
    /// and protocol.
    ProtocolConflict,
    /// Route `Accepted`: the parentRef matches no listener.
    NoMatchingParent,
    /// Route `Accepted`: matching listeners do not allow the route.
    NotAllowedByListeners,
    /// Route `ResolvedRefs`: the Service or its port does not exist.
    BackendNotFound,
    /// Route `ResolvedRefs`: cross-namespace reference without a grant.
    RefNotPermitted,
    /// Route `ResolvedRefs`: a backend kind other than core Service.
    InvalidKind,
    /// Policy `Accepted` (GEP-713): a policy of the same kind and the same
    /// specificity sets the same thing on the same target and is older (or,
    /// as old, first by namespace/name); this one is not applied there.
    Conflicted,
    /// Policy `Accepted` (GEP-713): the targeted object (or section of it)
    /// does not exist or is not Switchyard's.
    TargetNotFound,
    /// Policy `Accepted` (GEP-713): a targetRef of a kind no setting of the
    /// policy applies to.
    Invalid,
    /// Policy `Degraded` (a warning): the Maglev table has fewer than 100
    /// slots per backend, so Maglev's minimal-disruption guarantee weakens;
    /// the size is still used.
    TableTooSmall,
    /// `Degraded` on a TrafficPolicy or Service asking for session affinity
    /// on a Service that is one of several backendRefs of a route: a flat
    /// slot table hashed by client address would mix the weights of the
    /// other backendRefs, so the affinity is not applied on that route.
    AffinityNotApplied,
    /// `Accepted=False` on a Service or TrafficPolicy setting a value
    /// Switchyard does not serve (a Service's `externalIPs`, route-level
    /// `internalTrafficPolicy: Local`); the rest of the object applies.
    UnsupportedValue,
    /// Gateway `Programmed`: a requested address is already another
    /// Gateway's, a node address, or one no host can use (unspecified,
    /// loopback, multicast, link-local, broadcast, a pool's network or
    /// broadcast address); the Gateway is still served on its others.
    AddressNotUsable,
    /// GatewayClass `Accepted`: `spec.parametersRef` names no
    /// GatewayClassConfig, or a config whose AddressPool does not exist.
    /// Gateway `Accepted`: `spec.infrastructure.parametersRef` is set
    /// (Switchyard reads no per-Gateway parameters).
    InvalidParameters,
    /// `Degraded` on a Gateway (a warning): it is served, but has no
    /// GEP-3539 DNS name, since its name or namespace is not a DNS label.
    NoDnsName,
    /// `Degraded` on a route's parent (a warning): a backendRef has
    /// endpoints, but none of the family of the parent Gateway's
    /// addresses, so its share of their traffic is refused as a backendRef
    /// without endpoints is. The reference itself resolves (a Service
    /// without endpoints is a valid backendRef), so `ResolvedRefs` stays
    /// true.
    NoEndpointsOfFamily,
    /// Listener `Programmed`, spelled `Invalid`: the snapshot refused the
    /// listener resolution built for it (a bug in resolution, which only
    /// builds valid ones), so it is not served.
    InvalidListener,
    /// Route `ResolvedRefs`: a backendRef's endpoints listen on a port other
    /// than the listener's, and the listener's forwarding mode (`dsr`,
    /// `ipip`, `gue`) leaves the client's packet as it is, so nothing could
    /// translate the port; the listener is not served, and a config file
    /// asking for it is refused at load.
    PortTranslationNotSupported,
}

impl Reason {
    pub fn condition(self) -> ConditionType {
        match self {
            Self::UnsupportedAddress | Self::UnsupportedProtocol => ConditionType::Accepted,
            Self::NoMatchingParent | Self::NotAllowedByListeners => ConditionType::Accepted,
            Self::AddressNotAssigned => ConditionType::Programmed,
            Self::InvalidRouteKinds => ConditionType::ResolvedRefs,
            Self::BackendNotFound | Self::RefNotPermitted | Self::InvalidKind => {
                ConditionType::ResolvedRefs
            }
            Self::ProtocolConflict => ConditionType::Conflicted,
            Self::Conflicted | Self::TargetNotFound | Self::Invalid => ConditionType::Accepted,
            Self::TableTooSmall
            | Self::AffinityNotApplied
            | Self::NoDnsName
            | Self::NoEndpointsOfFamily => ConditionType::Degraded,
            Self::UnsupportedValue => ConditionType::Accepted,
            Self::AddressNotUsable => ConditionType::Programmed,
            Self::InvalidParameters => ConditionType::Accepted,
            Self::InvalidListener => ConditionType::Programmed,
            Self::PortTranslationNotSupported => ConditionType::ResolvedRefs,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedAddress => "UnsupportedAddress",
            Self::AddressNotAssigned => "AddressNotAssigned",
            Self::UnsupportedProtocol => "UnsupportedProtocol",
            Self::InvalidRouteKinds => "InvalidRouteKinds",
            Self::ProtocolConflict => "ProtocolConflict",
            Self::NoMatchingParent => "NoMatchingParent",
            Self::NotAllowedByListeners => "NotAllowedByListeners",
            Self::BackendNotFound => "BackendNotFound",
            Self::RefNotPermitted => "RefNotPermitted",
            Self::InvalidKind => "InvalidKind",
            Self::Conflicted => "Conflicted",
            Self::TargetNotFound => "TargetNotFound",
            Self::Invalid => "Invalid",
            Self::TableTooSmall => "TableTooSmall",
            Self::AffinityNotApplied => "AffinityNotApplied",
            Self::UnsupportedValue => "UnsupportedValue",
            Self::AddressNotUsable => "AddressNotUsable",
            Self::InvalidParameters => "InvalidParameters",
            Self::NoDnsName => "NoDnsName",
            Self::NoEndpointsOfFamily => "NoEndpointsOfFamily",
            Self::InvalidListener => "Invalid",
            Self::PortTranslationNotSupported => "PortTranslationNotSupported",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Diagnostic {
    /// `GatewayClass`, `Gateway`, `TCPRoute`, `UDPRoute`, `TrafficPolicy`,
    /// `Service`. Cluster-scoped kinds have an empty namespace.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Listener name, for listener conditions of a Gateway.
    pub listener: Option<String>,
    /// `namespace/gateway[/section]`, for a route's per-parent conditions
    /// and a policy's per-ancestor (GEP-713) conditions.
    pub parent: Option<String>,
    pub condition: ConditionType,
    pub reason: Reason,
    pub message: String,
}

impl Diagnostic {
    pub fn new(
        kind: &str,
        namespace: &str,
        name: &str,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            listener: None,
            parent: None,
            condition: reason.condition(),
            reason,
            message: message.into(),
        }
    }

    /// About `gateway` itself; `on_listener` narrows it to a listener.
    pub(crate) fn about_gateway(gateway: &Gateway, reason: Reason, message: String) -> Self {
        Self::new(
            "Gateway",
            &gateway.metadata.namespace,
            &gateway.metadata.name,
            reason,
            message,
        )
    }

    pub fn on_listener(mut self, listener: &str) -> Self {
        self.listener = Some(listener.to_owned());
        self
    }

    pub fn on_parent(mut self, parent: String) -> Self {
        self.parent = Some(parent);
        self
    }

    /// `Kind namespace/name`, or `Kind name` for a cluster-scoped kind.
    pub fn resource(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `TCPRoute demo/echo (parent demo/edge): ResolvedRefs=False BackendNotFound: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Built from names and references as the file spells them, some of
        // which no API server rule restricts: escaped once, here, for the
        // log, `switchyard check` and `yardctl` alike.
        let mut text = self.resource().to_string();
        if let Some(listener) = &self.listener {
            let _ = write!(text, " (listener {listener})");
        }
        if let Some(parent) = &self.parent {
            let _ = write!(text, " (parent {parent})");
        }
        let status = if self.condition.problem_status() {
            "True"
        } else {
            "False"
        };
        let _ = write!(
            text,
            ": {:?}={status} {}: {}",
            self.condition, self.reason, self.message
        );
        crate::excerpt::write_escaped(f, &text)
    }
}

#[cfg(test)]
mod tests {
    /// A backendRef's name is not restricted by the API server; a terminal
    /// escape in it reaches the message escaped, never as it is.
    #[test]
    fn names_in_messages_are_escaped() {
        let demo = include_str!("../../examples/demo.yaml");
        let hostile = demo.replacen("- name: echo\n", "- name: \"echo\\e[2J\"\n", 1);
        assert_ne!(hostile, demo);
        let resources = crate::load_str("hostile.yaml", &hostile).expect("loads");
        let resolution = crate::resolve(&resources, 1);
        let shown: Vec<String> = resolution
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            shown.iter().any(|d| d.contains("echo\\u{1b}[2J")),
            "{shown:?}"
        );
        assert!(shown.iter().all(|d| !d.contains('\u{1b}')), "{shown:?}");
    }
}
