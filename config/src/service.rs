//! The core kinds that name a backend's endpoints: `v1` Service and
//! `discovery.k8s.io/v1` EndpointSlice, with the Service settings that
//! other kinds reuse (ports, `ClientIP` session affinity, IP families,
//! traffic policies). Like `resources`, this module only holds typed,
//! schema-checked values; it never follows references from a Service to
//! its slices (that is `resolve`'s job).

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::meta::ObjectMeta;
use crate::schema::{self, Checked};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

// --------------------------------------------------------------------- Service

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, deserialize_with = "schema::checked_list::<_, _, 0, 1024>")]
    pub ports: Vec<ServicePort>,
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    /// `ClientIP` or `None` (absent: `None`).
    #[serde(default)]
    pub session_affinity: Option<String>,
    #[serde(default)]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
    /// Not served: reported, and the Service is used without them.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<String>,
    /// Clients allowed to reach the listeners serving this Service (a
    /// LoadBalancer Service's firewall); absent or empty: everyone.
    #[serde(default, deserialize_with = "crate::traffic_spec::cidrs")]
    pub load_balancer_source_ranges: Vec<ipnet::IpNet>,
}

impl ServiceSpec {
    /// The `ClientIP` affinity timeout this Service asks for, if any.
    pub fn client_ip_affinity(&self) -> Option<u32> {
        (self.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            self.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .map_or(DEFAULT_AFFINITY_TIMEOUT, |c| c.timeout_seconds)
        })
    }
}

/// Service `spec.sessionAffinityConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinityConfig {
    #[serde(default, rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

/// Default `ClientIP` affinity timeout (Kubernetes': 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

fn default_affinity_timeout() -> u32 {
    DEFAULT_AFFINITY_TIMEOUT
}

/// `clientIP` of a Service's `sessionAffinityConfig` or a TrafficPolicy's
/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// `1..=MAX_AFFINITY_TIMEOUT`; absent: `DEFAULT_AFFINITY_TIMEOUT`.
    #[serde(
        default = "default_affinity_timeout",
        deserialize_with = "schema::affinity_timeout"
    )]
    pub timeout_seconds: u32,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_AFFINITY_TIMEOUT,
        }
    }
}

/// `ClientIP` or `None`: a TrafficPolicy's `sessionAffinity.type` and a
/// ServiceImport's `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AffinityType {
    #[serde(rename = "ClientIP")]
    ClientIP,
    None,
}

fn tcp() -> String {
    "TCP".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "schema::port")]
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Absent: the same number as `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
}

impl ServicePort {
    /// The name EndpointSlice ports are matched on; unnamed is `""`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The numeric target port, if the target is not a named container port.
    pub fn numeric_target(&self) -> Option<u16> {
        match &self.target_port {
            None => Some(self.port),
            Some(TargetPort::Number(n)) => Some(*n),
            Some(TargetPort::Name(_)) => None,
        }
    }
}

impl Checked for ServicePort {
    fn check(&self, earlier: &[Self]) -> Result<(), String> {
        if !earlier.is_empty()
            && (self.name().is_empty() || earlier.iter().any(|e| e.name().is_empty()))
        {
            return Err("name: required when a Service has more than one port".into());
        }
        if earlier.iter().any(|e| e.name() == self.name()) {
            return Err(format!("name: port name {:?} is used twice", self.name()));
        }
        if earlier
            .iter()
            .any(|e| e.port == self.port && e.protocol == self.protocol)
        {
            return Err(format!(
                "port {}/{} is listed twice",
                self.port, self.protocol
            ));
        }
        Ok(())
    }
}

/// `IntOrString`: a port number or a container port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number 1..=65535 or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TargetPort, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(TargetPort::Number(n)),
                    _ => Err(E::custom(format_args!(
                        "invalid value {v}, expected 1..=65535"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TargetPort, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!(
                        "invalid value {v}, expected 1..=65535"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetPort, E> {
                if v.is_empty() {
                    return Err(E::custom("must not be empty"));
                }
                Ok(TargetPort::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

// --------------------------------------------------------------- EndpointSlice

// --------------------------------------------------------------- EndpointSlice

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    pub address_type: AddressType,
    #[serde(default, deserialize_with = "schema::list::<_, _, 0, 1000>")]
    pub endpoints: Vec<SliceEndpoint>,
    /// Absent or empty: the slice does not say, and the Service's target
    /// port applies.
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
}

impl EndpointSlice {
    /// Name of the Service this slice belongs to.
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

impl Checked for EndpointSlice {
    /// The API server validates addresses against `addressType`.
    fn check(&self, _: &[Self]) -> Result<(), String> {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            for (j, address) in endpoint.addresses.iter().enumerate() {
                let ok = match self.address_type {
                    AddressType::IPv4 => address.parse::<std::net::Ipv4Addr>().is_ok(),
                    AddressType::IPv6 => address.parse::<std::net::Ipv6Addr>().is_ok(),
                    AddressType::FQDN => true,
                };
                if !ok {
                    return Err(format!(
                        "endpoints[{i}].addresses[{j}]: invalid value {address:?}, expected an {:?} address",
                        self.address_type
                    ));
                }
            }
        }
        Ok(())
    }
}

#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AddressType {
    IPv4,
    IPv6,
    FQDN,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    #[serde(deserialize_with = "schema::list::<_, _, 1, 100>")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
}

/// Absent conditions mean "unknown". Read as kube-proxy reads them
/// (`pkg/proxy/endpointslicecache.go`): `ready` and `serving` as true,
/// `terminating` as false. (The API's field doc says a nil `serving`
/// defers to `ready`; the two differ only for a not-ready terminating
/// endpoint without `serving`, which kube-proxy keeps as a fallback, and
/// Switchyard picks endpoints as kube-proxy does.)
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or(true)
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "schema::opt_port")]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
}

impl EndpointPort {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

// ------------------------------------------- Service settings GEP-3539 reuses

/// `IPv4` or `IPv6`, as a Service's `ipFamilies` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::IPv4,
            IpAddr::V6(_) => Self::IPv6,
        }
    }
}

/// A Service's `ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A Service's `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TrafficLocality {
    Cluster,
    Local,
}

schema::unchecked!(Service);
