//! `switchyard check`: compile a config file offline and show the result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Result};
use serde::Serialize;
use switchyard_config::dns::DnsRecord;
use switchyard_config::resolve::CONTROLLER_NAME;
use switchyard_config::snapshot::{
    Forwarding, Listener, ListenerPolicy, Protocol, ProxyProtocol, Slot,
};
use switchyard_config::status::{
    Condition, ConditionStatus, ObjectReference, ResourceStatus, Status,
};
use switchyard_config::Resolution;

use crate::CheckArgs;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

// One cap for every way a config file arrives: read from disk here and by
// the daemon, or sent over the control socket by `yardctl config check`.
const _: () =
    assert!(switchyard_config::MAX_FILE_BYTES == switchyard_proto::MAX_CANDIDATE_CONFIG_BYTES);

pub fn check(args: CheckArgs) -> Result<()> {
    // A LoadError already reads `FILE:LINE: what and why`; more context
    // in front would hide where.
    let resolution =
        switchyard_config::compile_file_with(&args.config, 1, &args.resolve.options())?;
    if let Some(name) = &args.maglev {
        let listeners = resolution.snapshot.listeners();
        let Some(listener) = listeners.iter().find(|l| l.name().to_string() == *name) else {
            let known: Vec<String> = listeners.iter().map(|l| l.name().to_string()).collect();
            bail!(
                "no listener {name} in {}; listeners: {}",
                args.config.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        return maglev(listener, args.output);
    }
    let report = Report::new(&resolution);
    match args.output {
        Output::Json => Ok(emit(&(serde_json::to_string_pretty(&report)? + "\n"))?),
        Output::Yaml => Ok(emit(&serde_norway::to_string(&report)?)?),
        Output::Table => Ok(emit(&table(&report))?),
    }
}

/// What `check -o json|yaml` prints: every object's status as the Gateway
/// API spells it, the listeners the dataplane would run, and the DNS
/// records it would answer. Field order is the documented one.
#[derive(Serialize)]
struct Report<'a> {
    resources: &'a [ResourceStatus],
    listeners: Vec<ListenerReport<'a>>,
    dns: &'a [DnsRecord],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListenerReport<'a> {
    name: String,
    address: IpAddr,
    /// The port packets arrive on: the listener's, or its node port.
    port: u16,
    /// The Gateway listener's own port (differs from `port` for a node
    /// port).
    listener_port: u16,
    protocol: Protocol,
    /// `namespace/name` of the route carrying the traffic; empty if none.
    route: &'a str,
    forwarding: &'a Forwarding,
    policy: &'a ListenerPolicy,
    backends: Vec<BackendReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackendReport {
    endpoint: String,
    /// `namespace/name` of the backendRef the endpoint is attributed to.
    backend_ref: Option<String>,
    effective_weight: f64,
}

impl<'a> Report<'a> {
    fn new(resolution: &'a Resolution) -> Self {
        let listeners = resolution
            .snapshot
            .listeners()
            .iter()
            .map(|l| ListenerReport {
                name: l.name().to_string(),
                address: l.address(),
                port: l.port(),
                listener_port: l.listener_port(),
                protocol: l.protocol(),
                route: l.route(),
                forwarding: l.forwarding(),
                policy: l.policy(),
                backends: l
                    .backends()
                    .iter()
                    .map(|b| BackendReport {
                        endpoint: b.endpoint.to_string(),
                        backend_ref: l.groups().get(b.group as usize).map(|g| g.service.clone()),
                        effective_weight: b.effective_weight,
                    })
                    .collect(),
            })
            .collect();
        Self {
            resources: &resolution.statuses,
            listeners,
            dns: resolution.snapshot.dns(),
        }
    }
}

/// One line per object with its conditions, a line per listener or
/// parent below it, and the reason and message of every condition that is
/// not in its good state; then the listeners and DNS records.
fn table(report: &Report<'_>) -> String {
    let mut out = String::new();
    if report.resources.is_empty() {
        let _ = writeln!(
            out,
            "nothing here is Switchyard's: no GatewayClass has controllerName {CONTROLLER_NAME}"
        );
    }
    for resource in report.resources {
        let _ = write!(out, "{}", resource.resource());
        match &resource.status {
            Status::GatewayClass(s) => conditions_line(&mut out, "", &s.conditions),
            Status::Object(s) => conditions_line(&mut out, "", &s.conditions),
            Status::Gateway(s) => {
                let addresses: Vec<&str> = s.addresses.iter().map(|a| a.value.as_str()).collect();
                let _ = write!(
                    out,
                    " [{}]",
                    if addresses.is_empty() {
                        "no address".to_string()
                    } else {
                        addresses.join(" ")
                    }
                );
                conditions_line(&mut out, "", &s.conditions);
                for listener in &s.listeners {
                    let kinds: Vec<&str> = listener
                        .supported_kinds
                        .iter()
                        .map(|k| k.kind.as_str())
                        .collect();
                    let _ = write!(
                        out,
                        "  listener {} ({}) attachedRoutes={}",
                        listener.name,
                        if kinds.is_empty() {
                            "no route kinds".to_string()
                        } else {
                            kinds.join(" ")
                        },
                        listener.attached_routes
                    );
                    conditions_line(&mut out, "  ", &listener.conditions);
                }
            }
            Status::Route(s) => {
                out.push('\n');
                for parent in &s.parents {
                    let _ = write!(out, "  parent {}", reference(&parent.parent_ref));
                    conditions_line(&mut out, "  ", &parent.conditions);
                }
            }
            Status::Policy(s) => {
                out.push('\n');
                for ancestor in &s.ancestors {
                    let _ = write!(out, "  ancestor {}", reference(&ancestor.ancestor_ref));
                    conditions_line(&mut out, "  ", &ancestor.conditions);
                }
            }
        }
    }
    if !report.listeners.is_empty() {
        let _ = writeln!(out, "\nlisteners:");
    }
    for l in &report.listeners {
        let route = if l.route.is_empty() { "none" } else { l.route };
        let node_port = if l.port == l.listener_port {
            String::new()
        } else {
            format!(" (node port of :{})", l.listener_port)
        };
        let _ = writeln!(
            out,
            "{} {} {}{node_port} (route {route}) mode {}",
            l.name,
            l.protocol,
            std::net::SocketAddr::new(l.address, l.port),
            mode_text(l.forwarding)
        );
        if !l.policy.is_open() {
            let _ = writeln!(out, "    policy {}", policy_text(l.policy));
        }
        for b in &l.backends {
            let _ = writeln!(
                out,
                "    -> {}  weight {:.3}  {}",
                b.endpoint,
                b.effective_weight,
                b.backend_ref.as_deref().unwrap_or_default()
            );
        }
    }
    if !report.dns.is_empty() {
        let _ = writeln!(out, "\ndns:");
    }
    for r in report.dns {
        let _ = writeln!(out, "{} {} {}", r.name, r.record_type, r.value);
    }
    out
}

/// The mode and what it adds: `fullnat (snat 198.18.2.1, proxy protocol
/// v2)`, `gue (udp port 6080)`.
fn mode_text(forwarding: &Forwarding) -> String {
    match forwarding {
        Forwarding::FullNat(full) => {
            let snat = if full.addresses.is_empty() {
                "snat the egress interface's address".to_owned()
            } else {
                let addresses: Vec<String> =
                    full.addresses.iter().map(ToString::to_string).collect();
                format!("snat {}", addresses.join(" "))
            };
            match full.proxy_protocol {
                Some(ProxyProtocol::V2) => format!("fullnat ({snat}, proxy protocol v2)"),
                None => format!("fullnat ({snat})"),
            }
        }
        Forwarding::Gue(gue) => format!("gue (udp port {})", gue.port),
        other => other.name().to_owned(),
    }
}

/// `allow 198.18.1.0/24 deny 198.18.1.66/32 newFlowsPerSecond 1000`.
fn policy_text(policy: &ListenerPolicy) -> String {
    let nets = |nets: &[ipnet::IpNet]| {
        if nets.is_empty() {
            "nobody".to_owned()
        } else {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let mut parts = Vec::new();
    if let Some(allow) = &policy.source_ranges.allow {
        parts.push(format!("allow {}", nets(allow)));
    }
    if !policy.source_ranges.deny.is_empty() {
        parts.push(format!("deny {}", nets(&policy.source_ranges.deny)));
    }
    if let Some(rate) = policy.new_flows_per_second {
        parts.push(format!("newFlowsPerSecond {rate}"));
    }
    if let Some(max) = policy.max_flows {
        parts.push(format!("maxFlows {max}"));
    }
    parts.join(" ")
}

/// `  Accepted=True Programmed=False`, then an indented `reason: message`
/// line for each condition that reports a problem.
fn conditions_line(out: &mut String, indent: &str, conditions: &[Condition]) {
    for c in conditions {
        let _ = write!(out, "  {}={}", c.condition_type, c.status.as_str());
    }
    out.push('\n');
    for c in conditions.iter().filter(|c| is_problem(c)) {
        let _ = writeln!(
            out,
            "{indent}    {}: {}: {}",
            c.condition_type, c.reason, c.message
        );
    }
}

/// Conditions whose good state is `False` (`Conflicted`, `Degraded`) are
/// problems when `True`; all others when `False`.
fn is_problem(c: &Condition) -> bool {
    let good_when_false = matches!(c.condition_type.as_str(), "Conflicted" | "Degraded");
    (c.status == ConditionStatus::True) == good_when_false
}

/// `namespace/name[/section][:port]` of a parent or ancestor reference.
fn reference(r: &ObjectReference) -> String {
    let mut text = format!("{} ", r.kind);
    if let Some(namespace) = &r.namespace {
        let _ = write!(text, "{namespace}/");
    }
    text.push_str(&r.name);
    if let Some(section) = &r.section_name {
        let _ = write!(text, "/{section}");
    }
    if let Some(port) = r.port {
        let _ = write!(text, ":{port}");
    }
    text
}

/// Owner of a slot as operators name it.
const UNAVAILABLE: &str = "unavailable";

fn owner(listener: &Listener, slot: Slot) -> String {
    match slot {
        Slot::Backend(i) => listener.backends()[i as usize].endpoint.to_string(),
        Slot::Unavailable => UNAVAILABLE.to_string(),
    }
}

/// `check --maglev`: one listener's slot table and each owner's share of it.
fn maglev(listener: &Listener, output: Output) -> Result<()> {
    // Every backend is listed, weight-0 ones with 0 slots, so a missing
    // share is visible rather than absent.
    let mut counts: BTreeMap<String, usize> = listener
        .backends()
        .iter()
        .map(|b| (b.endpoint.to_string(), 0))
        .collect();
    let table: Vec<String> = listener
        .slots()
        .iter()
        .map(|s| owner(listener, s))
        .collect();
    for owner in &table {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    match output {
        Output::Json => {
            // Written by hand to keep the documented key order (serde_json
            // maps sort keys): the short fields first, then the table.
            let json = format!(
                "{{\"listener\":{},\"size\":{},\"table\":{},\"slots\":{}}}\n",
                serde_json::to_string(&listener.name().to_string())?,
                listener.slots().len(),
                serde_json::to_string(&table)?,
                serde_json::to_string(&counts)?,
            );
            Ok(emit(&json)?)
        }
        Output::Yaml => {
            #[derive(Serialize)]
            struct MaglevReport<'a> {
                listener: String,
                size: usize,
                table: &'a [String],
                slots: &'a BTreeMap<String, usize>,
            }
            Ok(emit(&serde_norway::to_string(&MaglevReport {
                listener: listener.name().to_string(),
                size: listener.slots().len(),
                table: &table,
                slots: &counts,
            })?)?)
        }
        Output::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{} {} {}: {} slots",
                listener.name(),
                listener.protocol(),
                listener.vip(),
                listener.slots().len()
            );
            let width = counts.keys().map(String::len).max().unwrap_or(0);
            for (owner, count) in &counts {
                let share = *count as f64 / listener.slots().len() as f64 * 100.0;
                let _ = writeln!(out, "    {owner:<width$}  {count:>6}  {share:>7.3}%");
            }
            Ok(emit(&out)?)
        }
    }
}

/// Writes `text` to stdout. A reader that went away (`switchyard check |
/// head`) is not an error: the command did its job.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Resolution {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/demo.yaml");
        switchyard_config::compile_file(path, 1).expect("the demo config compiles")
    }

    #[test]
    fn json_report_has_resources_listeners_and_dns_in_that_order() {
        let resolution = demo();
        let json = serde_json::to_string(&Report::new(&resolution)).unwrap();
        let resources = json.find("\"resources\":").unwrap();
        let listeners = json.find("\"listeners\":[{").unwrap();
        let dns = json.find("\"dns\":").unwrap();
        assert!(resources < listeners && listeners < dns, "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kinds: Vec<&str> = value["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "GatewayClass",
                "Gateway",
                "TCPRoute",
                "UDPRoute",
                "TrafficPolicy",
                "TrafficPolicy"
            ]
        );
        let backend = &value["listeners"][0]["backends"][0];
        assert_eq!(backend["backendRef"], "demo/echo");
        assert_eq!(backend["effectiveWeight"], 0.5);
        assert_eq!(value["listeners"][0]["protocol"], "TCP");
    }

    /// The demo config with `externalIPs` on its Service.
    fn demo_with_external_ips() -> Resolution {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/demo.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let marked = text.replacen(
            "kind: Service\nmetadata:\n  name: echo\n  namespace: demo\nspec:\n",
            "kind: Service\nmetadata:\n  name: echo\n  namespace: demo\nspec:\n  externalIPs: [203.0.113.7]\n",
            1,
        );
        assert_ne!(
            marked, text,
            "the demo Service must be where the edit expects it"
        );
        let resources = switchyard_config::load_str("demo.yaml", &marked).unwrap();
        switchyard_config::resolve(&resources, 1)
    }

    #[test]
    fn a_service_with_external_ips_is_in_the_report_as_not_accepted() {
        let resolution = demo_with_external_ips();
        let report = serde_json::to_value(Report::new(&resolution)).unwrap();
        let service = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "Service")
            .expect("a Service entry in resources");
        assert_eq!(service["apiVersion"], "v1");
        assert_eq!(service["metadata"]["namespace"], "demo");
        assert_eq!(service["metadata"]["name"], "echo");
        let conditions = service["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{conditions:#?}");
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[0]["status"], "False");
        assert_eq!(conditions[0]["reason"], "UnsupportedValue");
        assert!(conditions[0]["message"]
            .as_str()
            .unwrap()
            .contains("203.0.113.7"));
        // The same in YAML, and the Service still serves as a backend.
        let yaml = serde_norway::to_string(&Report::new(&resolution)).unwrap();
        assert!(yaml.contains("kind: Service"), "{yaml}");
        assert!(yaml.contains("reason: UnsupportedValue"), "{yaml}");
        assert!(!report["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .is_empty());
        let text = table(&Report::new(&resolution));
        assert!(
            text.contains("Service demo/echo  Accepted=False\n    Accepted: UnsupportedValue: "),
            "{text}"
        );
    }

    #[test]
    fn a_config_without_problems_lists_no_service() {
        let report = serde_json::to_value(Report::new(&demo())).unwrap();
        assert!(report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] != "Service"));
    }

    #[test]
    fn yaml_report_reads_back_as_the_json_one() {
        let resolution = demo();
        let report = Report::new(&resolution);
        let yaml: serde_json::Value =
            serde_norway::from_str(&serde_norway::to_string(&report).unwrap()).unwrap();
        assert_eq!(yaml, serde_json::to_value(&report).unwrap());
    }

    #[test]
    fn table_shows_every_resource_with_its_conditions_and_the_reason_of_problems() {
        let resolution = demo();
        let text = table(&Report::new(&resolution));
        assert!(text.contains("Gateway demo/edge [198.18.100.10]  Accepted=True  Programmed=True"));
        assert!(text.contains("listener tcp-echo (TCPRoute) attachedRoutes=1"));
        assert!(
            text.contains("parent Gateway demo/edge/tcp-echo  Accepted=True  ResolvedRefs=True")
        );
        assert!(
            text.contains("demo/edge/tcp-echo TCP 198.18.100.10:80 (route demo/echo-tcp) mode nat")
        );

        let broken = Condition {
            condition_type: "ResolvedRefs".into(),
            status: ConditionStatus::False,
            reason: "BackendNotFound".into(),
            message: "Service demo/x not found".into(),
            observed_generation: 1,
        };
        let mut out = String::new();
        conditions_line(&mut out, "", &[broken]);
        assert_eq!(
            out,
            "  ResolvedRefs=False\n    ResolvedRefs: BackendNotFound: Service demo/x not found\n"
        );
    }

    #[test]
    fn conflicted_and_degraded_are_problems_when_true() {
        let with = |condition_type: &str, status| Condition {
            condition_type: condition_type.into(),
            status,
            reason: String::new(),
            message: String::new(),
            observed_generation: 1,
        };
        assert!(is_problem(&with("Conflicted", ConditionStatus::True)));
        assert!(!is_problem(&with("Conflicted", ConditionStatus::False)));
        assert!(is_problem(&with("Degraded", ConditionStatus::True)));
        assert!(is_problem(&with("Accepted", ConditionStatus::False)));
        assert!(!is_problem(&with("Programmed", ConditionStatus::True)));
    }
}
