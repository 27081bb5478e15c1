//! The Kubernetes objects Switchyard reads, as typed values: the subset of
//! Gateway API (GatewayClass, Gateway, TCPRoute, UDPRoute, ReferenceGrant)
//! that L4 routing needs, Namespaces, Switchyard's own policy kind
//! (TrafficPolicy), and `Resources`, everything one configuration holds.
//! The kinds it aggregates beside these are defined below it and
//! re-exported here: object metadata in `meta`, Service and EndpointSlice
//! in `service`, the other backend kinds in `backend_kinds`, the address
//! kinds in `pools`. Types carry the CRD defaults, and deserializing them
//! applies the CRD validation (see `schema`), so a value that exists here
//! is one an API server would have stored. This module never resolves
//! references between objects: that is `resolve`'s job. Unknown fields are
//! ignored, as a client of a newer API server would.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

pub use crate::backend_kinds::{
    EndpointSelector, EndpointSelectorSpec, Pod, ServiceImport, ServiceImportSpec,
    ServiceImportType, MULTICLUSTER_GROUP, MULTICLUSTER_SERVICE_NAME_LABEL,
};
use crate::health_spec::HealthCheckSpec;
pub use crate::meta::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, SelectorOperator, Timestamp,
};
pub use crate::pools::{AddressPool, ClassType, GatewayClassConfig};
use crate::schema::{self, Checked};
pub use crate::schema::{MAX_AFFINITY_TIMEOUT, MAX_TABLE_SIZE, MIN_TABLE_SIZE};
pub use crate::service::{
    AddressType, AffinityType, ClientIpConfig, EndpointConditions, EndpointPort, EndpointSlice,
    IpFamily, IpFamilyPolicy, Service, ServicePort, ServiceSpec, SessionAffinityConfig,
    SliceEndpoint, TargetPort, TrafficLocality, DEFAULT_AFFINITY_TIMEOUT, SERVICE_NAME_LABEL,
};
use crate::traffic_spec::{ForwardingSpec, LimitsSpec, SourceRangesSpec};

/// API group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// API group of Switchyard's own kinds (`TrafficPolicy`).
pub const SWITCHYARD_GROUP: &str = "switchyard.io";
/// Label the API server puts on every Namespace; a file rarely spells it
/// out, but allowedRoutes selectors commonly match on it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn gateway_group() -> String {
    GATEWAY_GROUP.to_owned()
}

// ---------------------------------------------------------------- GatewayClass

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    pub metadata: ObjectMeta,
    pub spec: GatewayClassSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    #[serde(deserialize_with = "schema::controller_name")]
    pub controller_name: String,
    /// Switchyard reads a `GatewayClassConfig` here; a reference that does
    /// not resolve makes the class not accepted (`InvalidParameters`).
    #[serde(default)]
    pub parameters_ref: Option<ParametersReference>,
}

/// `GatewayClass.spec.parametersRef`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParametersReference {
    #[serde(default, deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
    /// Only for namespaced kinds; Switchyard's are cluster-scoped.
    #[serde(default, deserialize_with = "schema::opt_namespace")]
    pub namespace: Option<String>,
}

// --------------------------------------------------------------------- Gateway

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    pub metadata: ObjectMeta,
    pub spec: GatewaySpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(deserialize_with = "schema::name")]
    pub gateway_class_name: String,
    #[serde(default, deserialize_with = "schema::checked_list::<_, _, 0, 16>")]
    pub addresses: Vec<GatewayAddress>,
    #[serde(deserialize_with = "schema::checked_list::<_, _, 1, 64>")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub infrastructure: Option<GatewayInfrastructure>,
}

/// `Gateway.spec.infrastructure`. Switchyard creates no objects to put
/// labels and annotations on, and reads no per-Gateway parameters: a
/// `parametersRef` makes the Gateway `Accepted=False/InvalidParameters`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfrastructure {
    #[serde(default, deserialize_with = "schema::map::<_, 8>")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "schema::map::<_, 16>")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub parameters_ref: Option<LocalParametersReference>,
}

/// `LocalParametersReference`: an object in the Gateway's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalParametersReference {
    #[serde(deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
}

pub const IP_ADDRESS_TYPE: &str = "IPAddress";
pub const HOSTNAME_ADDRESS_TYPE: &str = "Hostname";

fn ip_address_type() -> String {
    IP_ADDRESS_TYPE.to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// `IPAddress`, `Hostname`, `NamedAddress` or a domain-prefixed type.
    #[serde(rename = "type", default = "ip_address_type")]
    pub address_type: String,
    /// Optional: an empty value asks the implementation to assign one.
    #[serde(default)]
    pub value: Option<String>,
}

impl GatewayAddress {
    /// The address, when this is an `IPAddress` with a value.
    pub fn ip(&self) -> Option<IpAddr> {
        if self.address_type != IP_ADDRESS_TYPE {
            return None;
        }
        self.value.as_deref()?.parse().ok()
    }
}

impl Checked for GatewayAddress {
    fn check(&self, earlier: &[Self]) -> Result<(), String> {
        if self.address_type.is_empty() {
            return Err("type: must not be empty".into());
        }
        if self.address_type == HOSTNAME_ADDRESS_TYPE {
            if let Some(value) = &self.value {
                let name = value.strip_prefix("*.").unwrap_or(value);
                if !schema::is_dns_subdomain(name) {
                    return Err(format!(
                        "value: invalid value {value:?}, expected a lower-case DNS name"
                    ));
                }
            }
        }
        if self.address_type == IP_ADDRESS_TYPE {
            if let Some(value) = &self.value {
                if value.parse::<IpAddr>().is_err() {
                    return Err(format!(
                        "value: invalid value {value:?}, expected an IPv4 or IPv6 address"
                    ));
                }
            }
        }
        if self.value.is_some() && earlier.iter().any(|e| e == self) {
            return Err(format!(
                "{} values must be unique: {:?} is listed twice",
                self.address_type,
                self.value.as_deref().unwrap_or_default()
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[serde(deserialize_with = "schema::section_name")]
    pub name: String,
    #[serde(deserialize_with = "schema::port")]
    pub port: u16,
    /// `TCP`, `UDP`, or a protocol Switchyard does not serve (`HTTP`, ...).
    #[serde(deserialize_with = "schema::name")]
    pub protocol: String,
    /// Never set on a TCP or UDP listener (a CEL rule of the CRD).
    #[serde(default, deserialize_with = "schema::opt_hostname")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub allowed_routes: AllowedRoutes,
    /// Checked as the CRD checks it, then unused: Switchyard serves no
    /// listener that takes TLS settings.
    #[serde(default, deserialize_with = "schema::opt_checked")]
    pub tls: Option<ListenerTls>,
}

impl Checked for Listener {
    /// The CEL rules on `spec.listeners`, each judged against the
    /// listeners before this one.
    fn check(&self, earlier: &[Self]) -> Result<(), String> {
        if earlier.iter().any(|e| e.name == self.name) {
            return Err(format!(
                "name: listener name {:?} is used twice; it must be unique within the Gateway",
                self.name
            ));
        }
        // The rule compares hostnames only when both listeners have one,
        // and otherwise asks that neither has: absent and present differ.
        let same_host = |e: &Listener| match (&e.hostname, &self.hostname) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        if let Some(twin) = earlier
            .iter()
            .find(|e| e.port == self.port && e.protocol == self.protocol && same_host(e))
        {
            return Err(format!(
                "port {} with protocol {} and the same hostname is already used by listener {:?}; \
                 the combination of port, protocol and hostname must be unique for each listener",
                self.port, self.protocol, twin.name
            ));
        }
        match (self.protocol.as_str(), &self.tls) {
            ("HTTP" | "TCP" | "UDP", Some(_)) => {
                return Err(format!(
                    "tls: must not be specified for protocol {}",
                    self.protocol
                ))
            }
            ("HTTPS", Some(tls)) if tls.mode != TlsMode::Terminate => {
                return Err("tls.mode: must be Terminate for protocol HTTPS".into())
            }
            ("TLS", None) => return Err("tls.mode: must be set for protocol TLS".into()),
            _ => {}
        }
        if matches!(self.protocol.as_str(), "TCP" | "UDP") && self.hostname.is_some() {
            return Err(format!(
                "hostname: must not be specified for protocol {}",
                self.protocol
            ));
        }
        Ok(())
    }
}

/// `Listener.tls`: read only to apply the CRD's rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    #[serde(default)]
    pub mode: TlsMode,
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 64>")]
    pub certificate_refs: Vec<CertificateRef>,
    #[serde(default, deserialize_with = "schema::map::<_, 16>")]
    pub options: BTreeMap<String, String>,
}

impl Checked for ListenerTls {
    fn check(&self, _: &[Self]) -> Result<(), String> {
        if self.mode == TlsMode::Terminate
            && self.certificate_refs.is_empty()
            && self.options.is_empty()
        {
            return Err(
                "certificateRefs or options must be specified when mode is Terminate".into(),
            );
        }
        if let Some((key, _)) = self.options.iter().find(|(_, v)| v.len() > 4096) {
            return Err(format!("options.{key}: longer than 4096 characters"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsMode {
    #[default]
    Terminate,
    Passthrough,
}

/// A `SecretObjectReference` of `tls.certificateRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRef {
    #[serde(default, deserialize_with = "schema::group")]
    pub group: String,
    #[serde(
        default = "CertificateRef::default_kind",
        deserialize_with = "schema::kind"
    )]
    pub kind: String,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
    #[serde(default, deserialize_with = "schema::opt_namespace")]
    pub namespace: Option<String>,
}

impl CertificateRef {
    fn default_kind() -> String {
        "Secret".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default)]
    pub namespaces: RouteNamespaces,
    /// Empty: the kinds the listener's protocol supports.
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 8>")]
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    #[serde(default)]
    pub from: FromNamespaces,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
}

/// The CRD's enum for listeners is these three; `None` exists only for
/// `spec.allowedListeners` (ListenerSets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum FromNamespaces {
    All,
    #[default]
    Same,
    Selector,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    #[serde(default = "gateway_group")]
    #[serde(deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
}

// ---------------------------------------------------------- TCPRoute, UDPRoute

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    Tcp,
    Udp,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCPRoute",
            Self::Udp => "UDPRoute",
        }
    }

    /// The listener protocol (and Service port protocol) this kind serves.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TCPRoute or a UDPRoute: at L4 they have the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub kind: RouteKind,
    /// `v1` or `v1alpha2`; they differ only in how many rules they allow.
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: RouteSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<RouteRule>,
}

/// A route as a document of a given version: `v1` allows exactly one rule,
/// `v1alpha2` up to 16.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteDoc<const MAX_RULES: usize> {
    metadata: ObjectMeta,
    spec: RouteSpecDoc<MAX_RULES>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteSpecDoc<const MAX_RULES: usize> {
    #[serde(default, deserialize_with = "schema::checked_list::<_, _, 0, 32>")]
    parent_refs: Vec<ParentReference>,
    #[serde(deserialize_with = "schema::list::<_, _, 1, MAX_RULES>")]
    rules: Vec<RouteRule>,
}

impl<const MAX_RULES: usize> Checked for RouteDoc<MAX_RULES> {
    fn check(&self, _: &[Self]) -> Result<(), String> {
        Ok(())
    }
}

impl<const MAX_RULES: usize> RouteDoc<MAX_RULES> {
    pub(crate) fn into_route(self, kind: RouteKind, api_version: &str) -> Route {
        Route {
            kind,
            api_version: api_version.to_owned(),
            metadata: self.metadata,
            spec: RouteSpec {
                parent_refs: self.spec.parent_refs,
                rules: self.spec.rules,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default = "gateway_group", deserialize_with = "schema::group")]
    pub group: String,
    #[serde(
        default = "ParentReference::default_kind",
        deserialize_with = "schema::kind"
    )]
    pub kind: String,
    /// Absent: the route's namespace.
    #[serde(default, deserialize_with = "schema::opt_namespace")]
    pub namespace: Option<String>,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
    #[serde(default, deserialize_with = "schema::opt_section_name")]
    pub section_name: Option<String>,
    #[serde(default, deserialize_with = "schema::opt_port")]
    pub port: Option<u16>,
}

impl ParentReference {
    fn default_kind() -> String {
        "Gateway".to_owned()
    }

    fn same_parent(&self, other: &Self) -> bool {
        let ns = |p: &Self| p.namespace.clone().unwrap_or_default();
        self.group == other.group
            && self.kind == other.kind
            && self.name == other.name
            && ns(self) == ns(other)
    }
}

impl Checked for ParentReference {
    /// The two CEL rules on `spec.parentRefs`.
    fn check(&self, earlier: &[Self]) -> Result<(), String> {
        let has_section = |p: &Self| p.section_name.as_deref().is_some_and(|s| !s.is_empty());
        for e in earlier.iter().filter(|e| e.same_parent(self)) {
            if has_section(e) != has_section(self) || e.port.is_some() != self.port.is_some() {
                return Err(format!(
                    "sectionName or port must be specified when parentRefs includes 2 or more \
                     references to the same parent ({})",
                    self.name
                ));
            }
            if e.section_name == self.section_name && e.port == self.port {
                return Err(format!(
                    "sectionName or port must be unique when parentRefs includes 2 or more \
                     references to the same parent ({})",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "schema::checked_list::<_, _, 1, 16>")]
    pub backend_refs: Vec<BackendRef>,
}

fn weight_one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// `""` is the core group.
    #[serde(default, deserialize_with = "schema::group")]
    pub group: String,
    #[serde(
        default = "BackendRef::default_kind",
        deserialize_with = "schema::kind"
    )]
    pub kind: String,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
    /// Absent: the route's namespace.
    #[serde(default, deserialize_with = "schema::opt_namespace")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "schema::opt_port")]
    pub port: Option<u16>,
    #[serde(default = "weight_one", deserialize_with = "schema::weight")]
    pub weight: u32,
}

impl BackendRef {
    fn default_kind() -> String {
        "Service".to_owned()
    }

    pub fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

impl Checked for BackendRef {
    fn check(&self, _: &[Self]) -> Result<(), String> {
        if self.is_service() && self.port.is_none() {
            return Err(format!(
                "port: required for a Service reference (backendRef {:?})",
                self.name
            ));
        }
        Ok(())
    }
}

// -------------------------------------------------------------- ReferenceGrant

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    pub metadata: ObjectMeta,
    pub spec: ReferenceGrantSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(deserialize_with = "schema::list::<_, _, 1, 16>")]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(deserialize_with = "schema::list::<_, _, 1, 16>")]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    #[serde(deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
    #[serde(deserialize_with = "schema::namespace_name")]
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    #[serde(deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
    /// Absent: every object of the kind in the grant's namespace.
    #[serde(default)]
    pub name: Option<String>,
}

// --------------------------------------------------------------- TrafficPolicy

/// `switchyard.io/v1alpha1` `TrafficPolicy`: Switchyard's own settings,
/// attached to Gateway API objects as a GEP-713 direct policy. Every
/// setting is optional, so that one kind can grow settings that target
/// different kinds (Maglev tuning targets Gateways and their listeners).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub metadata: ObjectMeta,
    #[serde(deserialize_with = "schema::checked")]
    pub spec: TrafficPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// Objects in the policy's own namespace the policy applies to.
    #[serde(deserialize_with = "schema::checked_list::<_, _, 1, 16>")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Applies to the listeners of targeted Gateways.
    #[serde(default)]
    pub maglev: Option<MaglevPolicy>,
    /// Applies to targeted TCPRoutes, UDPRoutes and Services.
    #[serde(default)]
    pub session_affinity: Option<SessionAffinityPolicy>,
    /// GEP-3539's Service features at route level (TCPRoutes, UDPRoutes):
    /// see `resolve::policy` for what each means to Switchyard.
    #[serde(default)]
    pub publish_not_ready_addresses: Option<bool>,
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 2>")]
    pub ip_families: Vec<IpFamily>,
    #[serde(default)]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    #[serde(default)]
    pub external_traffic_policy: Option<TrafficLocality>,
    #[serde(default)]
    pub internal_traffic_policy: Option<TrafficLocality>,
    /// Applies to the listeners of targeted Gateways: how their packets
    /// reach the backends (overrides the GatewayClass's).
    #[serde(default)]
    pub forwarding: Option<ForwardingSpec>,
    /// Applies to the listeners of targeted Gateways.
    #[serde(default)]
    pub source_ranges: Option<SourceRangesSpec>,
    /// Applies to the listeners of targeted Gateways.
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// Active health checks of the endpoints behind the targets: a
    /// Service's, a route's backendRefs', or those of a Gateway's (or one
    /// listener's) routes. See `resolve::health` for which one applies.
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
}

impl TrafficPolicySpec {
    /// The families whose endpoints a route keeps, or `None` for all.
    /// SingleStack keeps its one family (`IPv4` when none is listed, the
    /// primary family of a default cluster); the dual-stack policies keep
    /// both, each served on the Gateway addresses of its family, so the
    /// order of `ipFamilies` has nothing to decide.
    pub fn kept_families(&self) -> Option<IpFamily> {
        let policy = self
            .ip_family_policy
            .or_else(|| (!self.ip_families.is_empty()).then_some(IpFamilyPolicy::SingleStack))?;
        match policy {
            IpFamilyPolicy::SingleStack => {
                Some(self.ip_families.first().copied().unwrap_or(IpFamily::IPv4))
            }
            IpFamilyPolicy::PreferDualStack | IpFamilyPolicy::RequireDualStack => None,
        }
    }

    /// Whether the policy sets a GEP-3539 setting that applies to routes.
    /// Whether the policy sets anything of a Gateway's listeners.
    pub fn sets_listener_settings(&self) -> bool {
        self.maglev.as_ref().is_some_and(|m| m.table_size.is_some())
            || self.forwarding.is_some()
            || self.source_ranges.is_some()
            || self.limits.is_some()
    }

    pub fn sets_route_endpoints(&self) -> bool {
        self.publish_not_ready_addresses.is_some()
            || !self.ip_families.is_empty()
            || self.ip_family_policy.is_some()
            || self.external_traffic_policy.is_some()
            || self.internal_traffic_policy.is_some()
    }
}

impl Checked for TrafficPolicySpec {
    /// The Service API's rules for `ipFamilies` and `ipFamilyPolicy`,
    /// which forwarding fields go with which mode, and the health check's
    /// cross-field rules.
    fn check(&self, _: &[Self]) -> Result<(), String> {
        if let Some(forwarding) = &self.forwarding {
            forwarding.check()?;
        }
        if let Some(health_check) = &self.health_check {
            health_check.check()?;
        }
        if let [a, b] = self.ip_families.as_slice() {
            if a == b {
                return Err(format!("ipFamilies: {a:?} is listed twice"));
            }
            if matches!(
                self.ip_family_policy,
                None | Some(IpFamilyPolicy::SingleStack)
            ) {
                return Err(
                    "ipFamilies: two families need ipFamilyPolicy PreferDualStack or \
                     RequireDualStack (SingleStack, the default, allows one)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// `spec.sessionAffinity` of a TrafficPolicy, shaped like a Service's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinityPolicy {
    #[serde(rename = "type")]
    pub affinity_type: AffinityType,
    #[serde(default, rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

impl SessionAffinityPolicy {
    /// The `ClientIP` timeout, or `None` for `type: None`.
    pub fn client_ip_timeout(&self) -> Option<u32> {
        match self.affinity_type {
            AffinityType::ClientIP => Some(self.client_ip.unwrap_or_default().timeout_seconds),
            AffinityType::None => None,
        }
    }
}

/// GEP-713 `LocalPolicyTargetReferenceWithSectionName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// `""` is the core group.
    #[serde(deserialize_with = "schema::group")]
    pub group: String,
    #[serde(deserialize_with = "schema::kind")]
    pub kind: String,
    #[serde(deserialize_with = "schema::name")]
    pub name: String,
    /// For a Gateway, a listener name; absent: the whole object.
    #[serde(default, deserialize_with = "schema::opt_section_name")]
    pub section_name: Option<String>,
}

impl PolicyTargetReference {
    pub fn is_gateway(&self) -> bool {
        self.group == GATEWAY_GROUP && self.kind == "Gateway"
    }

    /// A TCPRoute or UDPRoute: what `spec.sessionAffinity` may target.
    pub fn route_kind(&self) -> Option<RouteKind> {
        match (self.group.as_str(), self.kind.as_str()) {
            (GATEWAY_GROUP, "TCPRoute") => Some(RouteKind::Tcp),
            (GATEWAY_GROUP, "UDPRoute") => Some(RouteKind::Udp),
            _ => None,
        }
    }

    /// A core Service: what `spec.sessionAffinity` may also target.
    pub fn is_service(&self) -> bool {
        self.group.is_empty() && self.kind == "Service"
    }
}

impl Checked for PolicyTargetReference {
    fn check(&self, earlier: &[Self]) -> Result<(), String> {
        if earlier.iter().any(|e| e == self) {
            return Err(format!(
                "targetRefs must be unique: {} {:?}{} is listed twice",
                self.kind,
                self.name,
                self.section_name
                    .as_deref()
                    .map(|s| format!(" section {s:?}"))
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaglevPolicy {
    /// Slots of the listener's Maglev table: a prime in
    /// `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`. Absent: `SLOT_TABLE_SIZE`.
    #[serde(default, deserialize_with = "schema::opt_table_size")]
    pub table_size: Option<u32>,
}

// ------------------------------------------------------------------- Namespace

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

schema::unchecked!(
    GatewayClass,
    Gateway,
    ReferenceGrant,
    Namespace,
    TrafficPolicy
);

// ------------------------------------------------------------------ collection

/// A document of a kind Switchyard does not read (Deployments, HTTPRoutes,
/// ...). Kept so tools can say what was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    /// 1-based line of the document in its file.
    pub line: usize,
}

/// Everything read from one or more files, in document order. Resolution
/// does not depend on that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub gateway_classes: Vec<GatewayClass>,
    pub gateways: Vec<Gateway>,
    /// TCPRoutes and UDPRoutes.
    pub routes: Vec<Route>,
    pub reference_grants: Vec<ReferenceGrant>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub namespaces: Vec<Namespace>,
    /// `switchyard.io` TrafficPolicies.
    pub traffic_policies: Vec<TrafficPolicy>,
    /// `multicluster.x-k8s.io` ServiceImports.
    pub service_imports: Vec<ServiceImport>,
    /// `switchyard.io` EndpointSelectors and the Pods they select from.
    pub endpoint_selectors: Vec<EndpointSelector>,
    pub pods: Vec<Pod>,
    /// `switchyard.io` AddressPools and GatewayClassConfigs.
    pub address_pools: Vec<AddressPool>,
    pub gateway_class_configs: Vec<GatewayClassConfig>,
    pub ignored: Vec<Ignored>,
    /// Where each object was read, for refusals that must point into a
    /// file (see `crate::refuse`); empty for objects from elsewhere.
    pub origins: Vec<Origin>,
}

/// The file and line an object was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub file: String,
    /// 1-based line of the object's document.
    pub line: usize,
}

impl Resources {
    /// Adds the objects of another file.
    pub fn extend(&mut self, other: Resources) {
        self.gateway_classes.extend(other.gateway_classes);
        self.gateways.extend(other.gateways);
        self.routes.extend(other.routes);
        self.reference_grants.extend(other.reference_grants);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.namespaces.extend(other.namespaces);
        self.traffic_policies.extend(other.traffic_policies);
        self.service_imports.extend(other.service_imports);
        self.endpoint_selectors.extend(other.endpoint_selectors);
        self.pods.extend(other.pods);
        self.address_pools.extend(other.address_pools);
        self.gateway_class_configs
            .extend(other.gateway_class_configs);
        self.ignored.extend(other.ignored);
        self.origins.extend(other.origins);
    }

    /// Where the object `kind namespace/name` was read.
    pub fn origin(&self, kind: &str, namespace: &str, name: &str) -> Option<&Origin> {
        self.origins
            .iter()
            .find(|o| o.kind == kind && o.namespace == namespace && o.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.gateway_classes.is_empty()
            && self.gateways.is_empty()
            && self.routes.is_empty()
            && self.reference_grants.is_empty()
            && self.services.is_empty()
            && self.endpoint_slices.is_empty()
            && self.namespaces.is_empty()
            && self.traffic_policies.is_empty()
            && self.service_imports.is_empty()
            && self.endpoint_selectors.is_empty()
            && self.pods.is_empty()
            && self.address_pools.is_empty()
            && self.gateway_class_configs.is_empty()
    }
}
