//! Backend kinds beyond the core Service (which `service` holds). A
//! ServiceImport (multicluster.x-k8s.io, GEP-1748) names the endpoints
//! other clusters export; an EndpointSelector (switchyard.io, GEP-3539's
//! idea in the shape of GEP-4914) selects Pods by label, and the Pods in
//! the file supply their addresses and readiness. Like `resources`, this
//! module only holds typed, schema-checked values; it never follows
//! references.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::meta::{LabelSelector, LabelSelectorRequirement, ObjectMeta, Timestamp};
use crate::schema;
use crate::service::{AffinityType, ServicePort, SessionAffinityConfig, DEFAULT_AFFINITY_TIMEOUT};

/// API group of the Multi-Cluster Services API (`ServiceImport`).
pub const MULTICLUSTER_GROUP: &str = "multicluster.x-k8s.io";
/// Label that ties an exported EndpointSlice to its ServiceImport.
pub const MULTICLUSTER_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";

// --------------------------------------------------------------- ServiceImport

/// `multicluster.x-k8s.io/v1alpha1` `ServiceImport`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImport {
    pub metadata: ObjectMeta,
    pub spec: ServiceImportSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportSpec {
    /// `targetPort` means nothing here: exported slices name their ports.
    #[serde(default, deserialize_with = "schema::checked_list::<_, _, 0, 1024>")]
    pub ports: Vec<ServicePort>,
    /// Both types are served the same way: the Gateway owns the VIP.
    #[serde(rename = "type")]
    pub import_type: ServiceImportType,
    #[serde(default)]
    pub session_affinity: Option<AffinityType>,
    #[serde(default)]
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

impl ServiceImportSpec {
    /// The `ClientIP` affinity timeout this import asks for, if any.
    pub fn client_ip_affinity(&self) -> Option<u32> {
        (self.session_affinity == Some(AffinityType::ClientIP)).then(|| {
            self.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .map_or(DEFAULT_AFFINITY_TIMEOUT, |c| c.timeout_seconds)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServiceImportType {
    #[serde(rename = "ClusterSetIP")]
    ClusterSetIp,
    Headless,
}

// ------------------------------------------------------------ EndpointSelector

/// Ports an EndpointSelector lists, at most: the CRD checks that port
/// names are unique with a rule whose cost grows with the square of the
/// list, which an API server refuses to run on a list of 1024.
pub const MAX_SELECTOR_PORTS: usize = 64;

/// `switchyard.io/v1alpha1` `EndpointSelector`: the Pods of its namespace
/// matching `selector`, reached on `ports`. A Service without the VIP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSelector {
    pub metadata: ObjectMeta,
    pub spec: EndpointSelectorSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSelectorSpec {
    #[serde(deserialize_with = "pod_selector")]
    pub selector: LabelSelector,
    /// `port` is what backendRefs name; `targetPort` (a number or a
    /// container port name) is where the Pods listen, `port` if absent.
    /// At most `MAX_SELECTOR_PORTS`.
    #[serde(deserialize_with = "schema::checked_list::<_, _, 1, MAX_SELECTOR_PORTS>")]
    pub ports: Vec<ServicePort>,
    /// Serve Pods that are not ready, as a Service with the same field.
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
}

/// A selector that selects something: an empty one would take every Pod
/// of the namespace, which is never what a backend means.
fn pod_selector<'de, D: Deserializer<'de>>(d: D) -> Result<LabelSelector, D::Error> {
    struct SelectorVisitor;
    impl<'de> Visitor<'de> for SelectorVisitor {
        type Value = LabelSelector;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a label selector (matchLabels and/or matchExpressions)")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<LabelSelector, A::Error> {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Doc {
                #[serde(default)]
                match_labels: BTreeMap<String, String>,
                #[serde(default, deserialize_with = "schema::checked_list::<_, _, 0, 64>")]
                match_expressions: Vec<LabelSelectorRequirement>,
            }
            let doc = Doc::deserialize(de::value::MapAccessDeserializer::new(map))?;
            if doc.match_labels.is_empty() && doc.match_expressions.is_empty() {
                return Err(de::Error::custom(
                    "must have at least one matchLabels or matchExpressions term; an empty \
                     selector would select every Pod in the namespace",
                ));
            }
            Ok(LabelSelector {
                match_labels: doc.match_labels,
                match_expressions: doc.match_expressions,
            })
        }
    }
    d.deserialize_map(SelectorVisitor)
}

// ------------------------------------------------------------------------- Pod

/// A core `v1` Pod, reduced to what makes it an endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: PodMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    #[serde(deserialize_with = "schema::object_name")]
    pub name: String,
    #[serde(
        default = "default_namespace",
        deserialize_with = "schema::namespace_name"
    )]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set once the Pod is being deleted: it is terminating.
    #[serde(default)]
    pub deletion_timestamp: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

fn tcp() -> String {
    "TCP".to_owned()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "schema::port")]
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", deserialize_with = "opt_ip")]
    pub pod_ip: Option<IpAddr>,
    #[serde(
        default,
        rename = "podIPs",
        deserialize_with = "schema::list::<_, _, 0, 2>"
    )]
    pub pod_ips: Vec<PodIp>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct PodIp {
    #[serde(deserialize_with = "ip")]
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

impl Pod {
    /// The Pod's addresses, primary first, without repeats.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.status.pod_ip.into_iter().collect();
        for extra in &self.status.pod_ips {
            if !out.contains(&extra.ip) {
                out.push(extra.ip);
            }
        }
        out
    }

    /// The `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.condition_type == "Ready" && c.status == "True")
    }

    pub fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// A Pod that ran to completion is never an endpoint again, as the
    /// EndpointSlice controller treats it.
    pub fn has_finished(&self) -> bool {
        matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// The number of a container port named `name` for `protocol`.
    pub fn container_port(&self, name: &str, protocol: &str) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == protocol)
            .map(|p| p.container_port)
    }
}

fn ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    struct Ip;
    impl<'de> Visitor<'de> for Ip {
        type Value = IpAddr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an IPv4 or IPv6 address")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<IpAddr, E> {
            v.parse().map_err(|_| {
                E::custom(format_args!(
                    "invalid value {v:?}, expected an IPv4 or IPv6 address"
                ))
            })
        }
    }
    d.deserialize_str(Ip)
}

fn opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    struct Wrapped(IpAddr);
    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            ip(d).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

schema::unchecked!(ServiceImport, EndpointSelector, Pod);

#[cfg(test)]
mod tests {
    use crate::load::load_str;
    use crate::resources::{IpFamily, ServiceImportType};

    fn err(text: &str) -> String {
        load_str("t.yaml", text).unwrap_err().to_string()
    }

    const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
  labels: {app: web}
  deletionTimestamp: \"2026-01-01T00:00:00Z\"
spec:
  nodeName: worker-3
  containers:
  - name: web
    image: example/web
    ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]
status:
  phase: Running
  podIP: 10.1.0.1
  podIPs: [{ip: 10.1.0.1}, {ip: \"fd00::1\"}]
  conditions: [{type: PodScheduled, status: \"True\"}, {type: Ready, status: \"True\"}]
";

    #[test]
    fn pod_loads_addresses_readiness_deletion_and_named_ports() {
        let loaded = load_str("t.yaml", POD).unwrap();
        let pod = &loaded.pods[0];
        assert_eq!(pod.metadata.namespace, "demo");
        let addresses: Vec<String> = pod.addresses().iter().map(|a| a.to_string()).collect();
        assert_eq!(addresses, ["10.1.0.1", "fd00::1"]);
        assert!(pod.is_ready() && pod.is_terminating() && !pod.has_finished());
        assert_eq!(pod.container_port("http", "TCP"), Some(8080));
        assert_eq!(pod.container_port("dns", "UDP"), Some(5353));
        assert_eq!(pod.container_port("dns", "TCP"), None);
        assert!(!loaded.is_empty());
    }

    #[test]
    fn pod_with_a_bad_ip_is_rejected_at_its_line() {
        assert_eq!(
            err(&POD.replace("{ip: \"fd00::1\"}", "{ip: \"fd00::zz\"}")),
            "t.yaml:17: Pod \"demo/web-1\": status.podIPs[1].ip: invalid value \"fd00::zz\", expected an IPv4 or IPv6 address"
        );
        assert!(err(&POD.replace("podIP: 10.1.0.1", "podIP: 10.1.0.300"))
            .starts_with("t.yaml:16: Pod \"demo/web-1\": status.podIP: invalid value"));
    }

    #[test]
    fn pod_without_status_is_no_endpoint() {
        let bare = POD.split("status:").next().unwrap();
        let loaded = load_str("t.yaml", bare).unwrap();
        assert!(loaded.pods[0].addresses().is_empty());
        assert!(!loaded.pods[0].is_ready());
    }

    const SELECTOR: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: EndpointSelector
metadata: {name: web, namespace: demo}
spec:
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: track, operator: In, values: [stable]}
  ports:
  - {name: http, port: 80, targetPort: http}
";

    #[test]
    fn endpoint_selector_loads_its_selector_and_ports() {
        let loaded = load_str("t.yaml", SELECTOR).unwrap();
        let s = &loaded.endpoint_selectors[0];
        assert_eq!(s.spec.selector.match_expressions.len(), 1);
        assert_eq!(s.spec.ports[0].numeric_target(), None);
        assert!(!s.spec.publish_not_ready_addresses);
    }

    #[test]
    fn endpoint_selector_needs_a_selector_that_selects_and_valid_expressions() {
        let empty = SELECTOR.replace(
            "    matchLabels: {app: web}\n    matchExpressions:\n    - {key: track, operator: In, values: [stable]}\n",
            "    matchLabels: {}\n",
        );
        let e = err(&empty);
        assert!(
            e.starts_with(
                "t.yaml:6: EndpointSelector \"demo/web\": spec.selector: must have at least one"
            ),
            "{e}"
        );
        let no_values = SELECTOR.replace(", values: [stable]", "");
        assert_eq!(
            err(&no_values),
            "t.yaml:8: EndpointSelector \"demo/web\": spec.selector.matchExpressions[0]: values: must be non-empty for operator In"
        );
        let exists_with_values = SELECTOR.replace("operator: In", "operator: Exists");
        assert!(err(&exists_with_values).contains("values: must be empty for operator Exists"));
    }

    #[test]
    fn endpoint_selector_needs_ports() {
        let none = SELECTOR.replace("  - {name: http, port: 80, targetPort: http}\n", "  []\n");
        let e = err(&none.replace("  ports:\n  []", "  ports: []"));
        assert!(
            e.contains("spec.ports: 0 items, at least 1 required"),
            "{e}"
        );
        let twice = format!("{SELECTOR}  - {{name: http, port: 81}}\n");
        assert!(err(&twice).contains("port name \"http\" is used twice"));
        let ports: String = (0..=super::MAX_SELECTOR_PORTS)
            .map(|i| format!("  - {{name: p{i}, port: {}}}\n", 1000 + i))
            .collect();
        let many = SELECTOR.replace("  - {name: http, port: 80, targetPort: http}\n", &ports);
        assert!(
            err(&many).contains("spec.ports: more than 64 items"),
            "{}",
            err(&many)
        );
    }

    const IMPORT: &str = "\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: store, namespace: demo}
spec:
  type: TYPE
  ports: [{name: https, port: 443}]
  sessionAffinity: ClientIP
";

    #[test]
    fn service_import_loads_type_ports_and_affinity() {
        let loaded = load_str("t.yaml", &IMPORT.replace("TYPE", "Headless")).unwrap();
        let i = &loaded.service_imports[0];
        assert_eq!(i.spec.import_type, ServiceImportType::Headless);
        assert_eq!(i.spec.ports[0].port, 443);
        assert_eq!(i.spec.client_ip_affinity(), Some(10_800));
    }

    #[test]
    fn service_import_type_and_version_are_checked() {
        assert!(err(&IMPORT.replace("TYPE", "LoadBalancer")).starts_with(
            "t.yaml:5: ServiceImport \"demo/store\": spec.type: unknown variant `LoadBalancer`"
        ));
        let untyped = IMPORT.replace("  type: TYPE\n", "");
        assert!(
            err(&untyped).contains("missing field `type`"),
            "{}",
            err(&untyped)
        );
        assert_eq!(
            err(&IMPORT.replace("TYPE", "ClusterSetIP").replace("v1alpha1", "v1")),
            "t.yaml:1: ServiceImport \"demo/store\": unsupported apiVersion \"multicluster.x-k8s.io/v1\", expected multicluster.x-k8s.io/v1alpha1"
        );
    }

    const POLICY: &str = "\
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {name: p, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: r}]
";

    #[test]
    fn ip_families_follow_the_service_rules() {
        let single = format!("{POLICY}  ipFamilies: [IPv6]\n");
        let spec = &load_str("t.yaml", &single).unwrap().traffic_policies[0].spec;
        assert_eq!(spec.kept_families(), Some(IpFamily::IPv6));
        let two = format!("{POLICY}  ipFamilies: [IPv4, IPv6]\n");
        let e = err(&two);
        assert!(
            e.starts_with("t.yaml:5: TrafficPolicy \"demo/p\": spec: ipFamilies: two families need ipFamilyPolicy"),
            "{e}"
        );
        let dual = format!("{two}  ipFamilyPolicy: PreferDualStack\n");
        let spec = &load_str("t.yaml", &dual).unwrap().traffic_policies[0].spec;
        assert_eq!(spec.kept_families(), None);
        let repeated =
            format!("{POLICY}  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: RequireDualStack\n");
        assert!(err(&repeated).contains("ipFamilies: IPv4 is listed twice"));
        let three = format!(
            "{POLICY}  ipFamilies: [IPv4, IPv6, IPv4]\n  ipFamilyPolicy: RequireDualStack\n"
        );
        assert!(err(&three).contains("spec.ipFamilies: more than 2 items"));
        let bad = format!("{POLICY}  externalTrafficPolicy: Nearby\n");
        assert!(err(&bad).contains("spec.externalTrafficPolicy: unknown variant `Nearby`"));
    }
}
