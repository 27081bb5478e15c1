//! The CRDs of Switchyard's kinds against the static loader: a cluster's
//! API server and `switchyard check` must accept and refuse the same
//! objects. Every field of a CRD is one the loader reads, every field the
//! loader reads is in the CRD, every bound of the schema is one the loader
//! applies, and every CEL rule has an object that breaks it, which the
//! loader refuses too.

mod common;

use std::collections::BTreeSet;

use common::{
    crd_of, crds, documents, get, get_mut, read, schema_nodes, schema_of, show, validate,
    workspace_dir, yaml_files, SchemaPath, Step,
};
use serde_json::{json, Value};
use switchyard_config::load_str;
use switchyard_deploy::{SWITCHYARD_GROUP, WATCHED};

/// Where valid objects of Switchyard's kinds are found: the examples, the
/// docs, the manifests and the tests' own corpus, which between them set
/// every field. Each source is a text the loader reads whole.
fn sources() -> Vec<(String, String)> {
    let root = workspace_dir();
    let mut out = Vec::new();
    for dir in [root.join("config/examples"), root.join("deploy")] {
        for path in yaml_files(&dir) {
            out.push((path.display().to_string(), read(&path)));
        }
    }
    let corpus = root.join("deploy/tests/corpus.yaml");
    out.push((corpus.display().to_string(), read(&corpus)));
    for path in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = path.expect("a docs entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        for (n, block) in yaml_blocks(&read(&path)).into_iter().enumerate() {
            out.push((format!("{} block {}", path.display(), n + 1), block));
        }
    }
    out
}

/// The fenced ```yaml blocks of a Markdown text.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn is_switchyard(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with(&format!("{SWITCHYARD_GROUP}/")))
}

/// Every object of Switchyard's kinds in the sources, with where it was.
fn corpus() -> Vec<(String, Value)> {
    sources()
        .into_iter()
        .flat_map(|(name, text)| {
            documents(&text, &name)
                .into_iter()
                .filter(is_switchyard)
                .map(move |doc| (name.clone(), doc))
        })
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn load(doc: &Value) -> Result<(), String> {
    let text = serde_json::to_string(doc).expect("a JSON value serializes");
    load_str("probe.yaml", &text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The schema nodes under `spec` of each kind's CRD.
fn spec_nodes(schema: &Value) -> Vec<(SchemaPath, &Value)> {
    schema_nodes(schema)
        .into_iter()
        .filter(|(path, _)| path.first() == Some(&Step::Field("spec".into())))
        .collect()
}

fn last_field(path: &[Step]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Step::Field(f) => Some(f.as_str()),
            Step::Item => None,
        })
        .unwrap_or_default()
}

/// A corpus object of `kind` holding `path`.
fn holding<'a>(corpus: &'a [(String, Value)], kind: &str, path: &[Step]) -> Option<&'a Value> {
    corpus
        .iter()
        .map(|(_, doc)| doc)
        .find(|doc| kind_of(doc) == kind && get(doc, path).is_some())
}

fn switchyard_kinds() -> Vec<&'static str> {
    WATCHED
        .iter()
        .filter(|r| r.group == SWITCHYARD_GROUP)
        .map(|r| r.kind)
        .collect()
}

#[test]
fn each_switchyard_kind_has_a_crd_with_its_names_scope_and_status() {
    let crds = crds();
    let kinds: BTreeSet<&str> = crds
        .iter()
        .map(|c| c["spec"]["names"]["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, switchyard_kinds().into_iter().collect());
    for resource in WATCHED.iter().filter(|r| r.group == SWITCHYARD_GROUP) {
        let crd = crd_of(&crds, resource.kind);
        let spec = &crd["spec"];
        assert_eq!(
            crd["metadata"]["name"],
            format!("{}.{}", resource.plural, resource.group)
        );
        assert_eq!(spec["group"], resource.group);
        assert_eq!(spec["names"]["plural"], resource.plural);
        assert_eq!(
            spec["scope"],
            if resource.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            },
            "{}",
            resource.kind
        );
        let versions = spec["versions"].as_array().expect("versions");
        assert_eq!(versions.len(), 1, "{}", resource.kind);
        let version = &versions[0];
        assert_eq!(version["name"], resource.versions[0]);
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(version["subresources"]["status"], json!({}));
        assert_eq!(schema_of(crd)["type"], "object");
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns");
        assert!(
            columns.iter().any(|c| c["name"] == "Age"),
            "{}: an Age column, as kubectl shows by default",
            resource.kind
        );
    }
}

/// The loader keeps no namespace for a kind the CRD makes cluster-scoped,
/// and keeps it for a namespaced one.
#[test]
fn the_loader_scopes_each_kind_as_its_crd_does() {
    let corpus = corpus();
    for resource in WATCHED.iter().filter(|r| r.group == SWITCHYARD_GROUP) {
        let (_, doc) = corpus
            .iter()
            .find(|(_, d)| kind_of(d) == resource.kind)
            .unwrap_or_else(|| panic!("no {} in the corpus", resource.kind));
        let mut doc = doc.clone();
        doc["metadata"]["namespace"] = json!("elsewhere");
        let text = serde_json::to_string(&doc).expect("serializes");
        let loaded = load_str("scope.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        let namespace = &loaded.origins[0].namespace;
        assert_eq!(
            namespace.is_empty(),
            !resource.namespaced,
            "{}: loaded with namespace {namespace:?}",
            resource.kind
        );
    }
}

#[test]
fn every_example_loads_and_fits_its_crd() {
    for (name, text) in sources() {
        let docs = documents(&text, &name);
        if !docs.iter().any(is_switchyard) {
            continue;
        }
        if let Err(e) = load_str(&name, &text) {
            panic!("{name} does not load: {e}");
        }
    }
    let crds = crds();
    let corpus = corpus();
    for kind in switchyard_kinds() {
        assert!(
            corpus.iter().any(|(_, d)| kind_of(d) == kind),
            "no example of {kind}"
        );
    }
    for (name, doc) in &corpus {
        let errors = validate(doc, schema_of(crd_of(&crds, kind_of(doc))));
        assert!(
            errors.is_empty(),
            "{name}: {} {} does not fit its CRD: {errors:#?}",
            kind_of(doc),
            doc["metadata"]["name"]
        );
    }
}

/// So that the probes below reach every field.
#[test]
fn the_corpus_sets_every_field_of_every_crd() {
    let crds = crds();
    let corpus = corpus();
    let mut missing = Vec::new();
    for kind in switchyard_kinds() {
        for (path, _) in spec_nodes(schema_of(crd_of(&crds, kind))) {
            if holding(&corpus, kind, &path).is_none() {
                missing.push(format!("{kind} {}", show(&path)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "set these in deploy/tests/corpus.yaml: {missing:#?}"
    );
}

/// A field of the CRD the loader ignored would be a setting a cluster
/// accepts and Switchyard silently drops: a value of the wrong type there
/// must make the loader refuse the object, naming the field.
#[test]
fn the_loader_reads_every_field_of_the_crds() {
    let crds = crds();
    let corpus = corpus();
    let mut ignored = Vec::new();
    for kind in switchyard_kinds() {
        for (path, node) in spec_nodes(schema_of(crd_of(&crds, kind))) {
            let Some(doc) = holding(&corpus, kind, &path) else {
                continue;
            };
            let wrong = match node["type"].as_str() {
                Some("string") | None => json!([[{}]]),
                Some(_) => json!("not-of-this-type"),
            };
            let mut probe = doc.clone();
            *get_mut(&mut probe, &path).expect("the corpus holds it") = wrong;
            match load(&probe) {
                Ok(()) => ignored.push(format!("{kind} {}", show(&path))),
                Err(e) => assert!(
                    e.contains(last_field(&path)),
                    "{kind} {}: refused, but the error names another field: {e}",
                    show(&path)
                ),
            }
        }
    }
    assert!(
        ignored.is_empty(),
        "the loader ignores these CRD fields: {ignored:#?}"
    );
}

/// The field names of the loader's types, as YAML spells them: every
/// field of config/src in camelCase, and every `rename`. A superset of
/// what the loader reads; the probe below tells which it does read.
fn loader_field_names() -> BTreeSet<String> {
    let field = regex::Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?([a-z][a-z0-9_]*)\s*:\s")
        .expect("a valid regex");
    let rename =
        regex::Regex::new(r#"rename\s*=\s*"([A-Za-z][A-Za-z0-9]*)""#).expect("a valid regex");
    let mut names = BTreeSet::new();
    let mut dirs = vec![workspace_dir().join("config/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("config/src") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = read(&path);
            for c in field.captures_iter(&source) {
                names.insert(camel_case(&c[1]));
            }
            for c in rename.captures_iter(&source) {
                names.insert(c[1].to_owned());
            }
        }
    }
    names
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A field the loader reads but the CRD lacks would be pruned by the API
/// server: a setting `switchyard check` honours and a cluster drops. Each
/// name the loader's types know is offered, with a value no type takes, at
/// every object of each CRD's spec; the loader must ignore (or refuse as
/// unknown) every name the CRD does not have there.
#[test]
fn the_crds_have_every_field_the_loader_reads() {
    let crds = crds();
    let corpus = corpus();
    let candidates = loader_field_names();
    assert!(candidates.contains("snatAddresses") && candidates.contains("avoidBuggyIPs"));
    let mut missing = Vec::new();
    for kind in switchyard_kinds() {
        for (path, node) in spec_nodes(schema_of(crd_of(&crds, kind))) {
            let Some(properties) = node["properties"].as_object() else {
                continue;
            };
            let Some(doc) = holding(&corpus, kind, &path) else {
                continue;
            };
            for name in candidates.iter().filter(|n| !properties.contains_key(*n)) {
                let mut probe = doc.clone();
                let object = get_mut(&mut probe, &path)
                    .and_then(Value::as_object_mut)
                    .expect("the corpus holds an object there");
                object.insert(name.clone(), json!([[{}]]));
                if let Err(e) = load(&probe) {
                    if !e.contains("unknown field") {
                        missing.push(format!("{kind} {}.{name}: {e}", show(&path)));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the loader reads fields the CRDs lack: {missing:#?}"
    );
}

/// Values that break one bound of a schema node, each with what it breaks.
fn violations(node: &Value, current: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if node["enum"].is_array() {
        out.push(("enum".into(), json!("NotInTheEnum")));
    }
    if let Some(min) = node["minimum"].as_i64() {
        out.push(("minimum".into(), json!(min - 1)));
    }
    if let Some(max) = node["maximum"].as_i64() {
        out.push(("maximum".into(), json!(max + 1)));
    }
    if node["minLength"].as_u64().is_some_and(|n| n > 0) {
        out.push(("minLength".into(), json!("")));
    }
    if let Some(max) = node["maxLength"].as_u64() {
        out.push(("maxLength".into(), json!("a".repeat(max as usize + 1))));
    }
    if node["pattern"].is_string() {
        out.push(("pattern".into(), json!("Not_Valid!")));
    }
    if let Some(items) = current.as_array() {
        let first = items.first().cloned().unwrap_or(Value::Null);
        if node["minItems"].as_u64().is_some_and(|n| n > 0) {
            out.push(("minItems".into(), json!([])));
        }
        if let Some(max) = node["maxItems"].as_u64() {
            out.push((
                "maxItems".into(),
                Value::Array(vec![first.clone(); max as usize + 1]),
            ));
        }
        if node["x-kubernetes-list-type"].is_string() {
            out.push((
                "x-kubernetes-list-type".into(),
                json!([first.clone(), first]),
            ));
        }
    }
    out
}

/// A schema stricter than the loader would refuse in a cluster what a
/// file serves: every bound of every CRD (enum, range, length, pattern,
/// list size, uniqueness, required field) must be one the loader applies.
#[test]
fn the_loader_refuses_what_the_schemas_refuse() {
    let crds = crds();
    let corpus = corpus();
    let mut accepted = Vec::new();
    let mut probes = 0;
    for kind in switchyard_kinds() {
        let schema = schema_of(crd_of(&crds, kind));
        for (path, node) in spec_nodes(schema) {
            let Some(doc) = holding(&corpus, kind, &path) else {
                continue;
            };
            let current = get(doc, &path).expect("held").clone();
            let mut cases: Vec<(String, Value)> = violations(node, &current)
                .into_iter()
                .map(|(bound, value)| {
                    let mut probe = doc.clone();
                    *get_mut(&mut probe, &path).expect("held") = value;
                    (bound, probe)
                })
                .collect();
            for name in node["required"].as_array().into_iter().flatten() {
                let name = name.as_str().expect("a field name");
                let mut probe = doc.clone();
                if let Some(object) = get_mut(&mut probe, &path).and_then(Value::as_object_mut) {
                    object.remove(name);
                }
                cases.push((format!("required {name}"), probe));
            }
            for (bound, probe) in cases {
                probes += 1;
                assert!(
                    !validate(&probe, schema).is_empty(),
                    "{kind} {} {bound}: the probe fits the schema; fix the probe",
                    show(&path)
                );
                if load(&probe).is_ok() {
                    accepted.push(format!("{kind} {} {bound}", show(&path)));
                }
            }
        }
    }
    assert!(probes > 50, "only {probes} probes");
    assert!(
        accepted.is_empty(),
        "the schemas refuse, the loader accepts: {accepted:#?}"
    );
}

/// An object of `kind` that breaks the CEL rule whose message contains
/// the fragment, and nothing else in the schema.
struct CelCase {
    kind: &'static str,
    message: &'static str,
    yaml: &'static str,
}

const POOL: &str = "apiVersion: switchyard.io/v1alpha1\nkind: AddressPool\nmetadata: {name: p}\n";
const CLASS: &str =
    "apiVersion: switchyard.io/v1alpha1\nkind: GatewayClassConfig\nmetadata: {name: c}\n";
const POLICY: &str = "apiVersion: switchyard.io/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t, namespace: demo}\n";
const SELECTOR: &str = "apiVersion: switchyard.io/v1alpha1\nkind: EndpointSelector\nmetadata: {name: s, namespace: demo}\n";
const TARGET: &str =
    "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]\n";

fn case(kind: &'static str, message: &'static str, yaml: &'static str) -> CelCase {
    CelCase {
        kind,
        message,
        yaml,
    }
}

fn cel_cases() -> Vec<(CelCase, String)> {
    let forwarding = [
        (
            "must be an IPv4 or IPv6 address",
            "{mode: fullnat, snatAddresses: [198.18.2.300]}",
        ),
        (
            "cannot be a packet's source",
            "{mode: fullnat, snatAddresses: [127.0.0.1]}",
        ),
        (
            "cannot be a packet's source",
            "{mode: fullnat, snatAddresses: [\"ff02::1\"]}",
        ),
        (
            "cannot be a packet's source",
            "{mode: fullnat, snatAddresses: [255.255.255.255]}",
        ),
        (
            "snatAddresses: only mode fullnat",
            "{mode: nat, snatAddresses: [198.18.2.1]}",
        ),
        (
            "proxyProtocol: only mode fullnat",
            "{mode: dsr, proxyProtocol: V2}",
        ),
        ("guePort: only mode gue", "{mode: ipip, guePort: 6080}"),
        (
            "an address is listed twice",
            "{mode: fullnat, snatAddresses: [\"2001:db8::1\", \"2001:0db8::1\"]}",
        ),
    ];
    let mut out: Vec<(CelCase, String)> = Vec::new();
    for (message, spec) in forwarding {
        out.push((
            case("GatewayClassConfig", message, ""),
            format!("{CLASS}spec:\n  forwarding: {spec}\n"),
        ));
        out.push((
            case("TrafficPolicy", message, ""),
            format!("{POLICY}spec:\n{TARGET}  forwarding: {spec}\n"),
        ));
    }
    // Each an `active` mapping breaking one rule of the health check.
    let wide_text = "\u{e9}".repeat(600);
    let long_binary = "A".repeat(1368);
    let health = [
        (
            "text: set with type Text",
            "{type: UDP, udp: {send: {type: Text, binary: AAEC}}}".to_owned(),
        ),
        (
            "binary: set with type Binary",
            "{type: UDP, udp: {send: {type: Binary, text: a}}}".to_owned(),
        ),
        (
            "at most 1024 bytes",
            format!("{{type: TCP, tcp: {{send: {{type: Text, text: \"{wide_text}\"}}}}}}"),
        ),
        (
            "decodes to more than 1024 bytes",
            format!("{{type: TCP, tcp: {{receive: {{type: Binary, binary: {long_binary}}}}}}}"),
        ),
        (
            "from 100ms to 1h",
            "{type: TCP, interval: 50ms, timeout: 10ms}".to_owned(),
        ),
        (
            "from 100ms to 1h",
            "{type: TCP, interval: 1h1s, timeout: 1s}".to_owned(),
        ),
        ("must be above 0s", "{type: TCP, timeout: 0s}".to_owned()),
        (
            "http: only type HTTP",
            "{type: TCP, http: {path: /}}".to_owned(),
        ),
        (
            "tcp: only type TCP",
            "{type: HTTP, http: {path: /}, tcp: {}}".to_owned(),
        ),
        (
            "udp: only type UDP",
            "{type: TCP, udp: {send: {type: Text, text: a}}}".to_owned(),
        ),
        ("http: required with type HTTP", "{type: HTTP}".to_owned()),
        ("udp: required with type UDP", "{type: UDP}".to_owned()),
        (
            "timeout: must be below interval",
            "{type: TCP, interval: 1s, timeout: 2s}".to_owned(),
        ),
        (
            "timeout: must be below interval",
            "{type: TCP, timeout: 3s}".to_owned(),
        ),
        (
            "must be a lower-case DNS name or an IP address",
            "{type: HTTP, http: {path: /, hostname: Web_Example}}".to_owned(),
        ),
    ];
    for (message, active) in health {
        out.push((
            case("TrafficPolicy", message, ""),
            format!("{POLICY}spec:\n{TARGET}  healthCheck: {{active: {active}}}\n"),
        ));
    }
    let cases = [
        case("AddressPool", "must be a CIDR", "cidrs: [198.18.100.0/33]"),
        case("AddressPool", "has host bits set", "cidrs: [198.18.100.5/24]"),
        case("AddressPool", "starts at an address no host can reach", "cidrs: [127.0.0.0/8]"),
        case("AddressPool", "starts at an address no host can reach", "cidrs: [\"fe80::/64\"]"),
        case("AddressPool", "two CIDRs overlap", "cidrs: [198.18.100.0/24, 198.18.100.128/25]"),
        case("GatewayClassConfig", "must be an IPv4 or IPv6 address", "{type: NodePort, nodeAddresses: [1.2.3]}"),
        case("GatewayClassConfig", "expected FIRST-LAST", "{nodePortRange: 200-100}"),
        case("GatewayClassConfig", "expected FIRST-LAST", "{nodePortRange: 0-100}"),
        case("GatewayClassConfig", "expected FIRST-LAST", "{nodePortRange: 1-70000}"),
        case("GatewayClassConfig", "nodeAddresses: required", "{type: NodePort}"),
        case("GatewayClassConfig", "nodeAddresses: required", "{type: LoadBalancer, allocateLoadBalancerNodePorts: true}"),
        case("GatewayClassConfig", "allocateLoadBalancerNodePorts: only valid", "{type: NodePort, nodeAddresses: [198.18.1.1], allocateLoadBalancerNodePorts: false}"),
        case("GatewayClassConfig", "addressPool: types Headless", "{type: Headless, addressPool: vips}"),
        case("GatewayClassConfig", "an address is listed twice", "{type: NodePort, nodeAddresses: [\"2001:db8::1\", \"2001:db8:0::1\"]}"),
        case("GatewayClassConfig", "addressPool: types Headless", "{type: ExternalName, addressPool: vips}"),
        case("TrafficPolicy", "targetRefs must be unique", "targetRefs: [{group: g.io, kind: Gateway, name: a, sectionName: x}, {group: g.io, kind: Gateway, name: a, sectionName: x}]"),
        case("TrafficPolicy", "must be a prime", "{targetRefs: [{group: g.io, kind: Gateway, name: a}], maglev: {tableSize: 4095}}"),
        case("TrafficPolicy", "not a CIDR range", "{targetRefs: [{group: g.io, kind: Gateway, name: a}], sourceRanges: {deny: [10.0.0.0/33]}}"),
        case("TrafficPolicy", "a family is listed twice", "{targetRefs: [{group: g.io, kind: TCPRoute, name: a}], ipFamilies: [IPv4, IPv4], ipFamilyPolicy: PreferDualStack}"),
        case("TrafficPolicy", "two families need ipFamilyPolicy", "{targetRefs: [{group: g.io, kind: TCPRoute, name: a}], ipFamilies: [IPv4, IPv6]}"),
        case("TrafficPolicy", "two families need ipFamilyPolicy", "{targetRefs: [{group: g.io, kind: TCPRoute, name: a}], ipFamilies: [IPv6, IPv4], ipFamilyPolicy: SingleStack}"),
        case("EndpointSelector", "values: must be non-empty", "{selector: {matchExpressions: [{key: a, operator: NotIn}]}, ports: [{port: 80}]}"),
        case("EndpointSelector", "values: must be empty", "{selector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}, ports: [{port: 80}]}"),
        case("EndpointSelector", "at least one matchLabels or matchExpressions", "{selector: {matchLabels: {}}, ports: [{port: 80}]}"),
        case("EndpointSelector", "a port number 1..65535 or a non-empty port name", "{selector: {matchLabels: {a: b}}, ports: [{port: 80, targetPort: 0}]}"),
        case("EndpointSelector", "a port number 1..65535 or a non-empty port name", "{selector: {matchLabels: {a: b}}, ports: [{port: 80, targetPort: 65536}]}"),
        case("EndpointSelector", "a port number 1..65535 or a non-empty port name", "{selector: {matchLabels: {a: b}}, ports: [{port: 80, targetPort: \"\"}]}"),
        case("EndpointSelector", "name: required when there is more than one port", "{selector: {matchLabels: {a: b}}, ports: [{name: a, port: 80}, {port: 81}]}"),
        case("EndpointSelector", "name: port names must be unique", "{selector: {matchLabels: {a: b}}, ports: [{name: a, port: 80}, {name: a, port: 81}]}"),
    ];
    for c in cases {
        let head = match c.kind {
            "AddressPool" => POOL,
            "GatewayClassConfig" => CLASS,
            "TrafficPolicy" => POLICY,
            _ => SELECTOR,
        };
        let text = format!(
            "{head}spec: {}\n",
            if c.yaml.starts_with('{') {
                c.yaml.to_owned()
            } else {
                format!("{{{}}}", c.yaml)
            }
        );
        out.push((c, text));
    }
    out
}

/// Each CEL rule stands for a check of the loader. An object breaking the
/// rule alone must fit the rest of the schema, break that rule when the
/// rules are evaluated as an API server does (Kubernetes' CEL libraries,
/// defaults applied first), and be refused by the loader.
#[test]
fn each_cel_rule_has_a_case_the_loader_refuses_and_the_schema_alone_accepts() {
    let crds = crds();
    let cases = cel_cases();
    for (case, text) in &cases {
        let docs = documents(text, case.message);
        let schema = schema_of(crd_of(&crds, case.kind));
        let errors = validate(&docs[0], schema);
        assert!(
            errors.is_empty(),
            "{} {:?}: the case breaks more than the rule: {errors:#?}\n{text}",
            case.kind,
            case.message
        );
        let broken: Vec<String> = match kube_cel::validate(schema, &docs[0], None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        };
        assert!(
            broken.iter().any(|e| e.contains(case.message)),
            "{} {:?}: the CEL rules do not refuse it for that reason: {broken:#?}\n{text}",
            case.kind,
            case.message
        );
        let refused = load_str("cel.yaml", text);
        assert!(
            refused.is_err(),
            "{} {:?}: the loader accepts\n{text}",
            case.kind,
            case.message
        );
    }
    let mut uncovered = Vec::new();
    for kind in switchyard_kinds() {
        for (path, node) in schema_nodes(schema_of(crd_of(&crds, kind))) {
            for rule in node["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let message = rule["message"].as_str().unwrap_or_default();
                assert!(
                    !message.is_empty() && rule["rule"].is_string(),
                    "{kind} {}: a rule without a message",
                    show(&path)
                );
                let covered = cases
                    .iter()
                    .any(|(c, _)| c.kind == kind && message.contains(c.message));
                if !covered {
                    uncovered.push(format!("{kind} {}: {message}", show(&path)));
                }
            }
        }
    }
    assert!(
        uncovered.is_empty(),
        "CEL rules without a case: {uncovered:#?}"
    );
}

/// An API server refuses a CRD whose rules do not compile, and runs the
/// rules on every write: each valid example must pass them all.
#[test]
fn the_cel_rules_compile_and_every_example_passes_them() {
    let crds = crds();
    for kind in switchyard_kinds() {
        let compiled = kube_cel::compile_schema(schema_of(crd_of(&crds, kind)));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}");
    }
    for (name, doc) in corpus() {
        let schema = schema_of(crd_of(&crds, kind_of(&doc)));
        if let Err(errors) = kube_cel::validate(schema, &doc, None) {
            let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            panic!(
                "{name}: {} {} breaks CEL rules: {errors:#?}",
                kind_of(&doc),
                doc["metadata"]["name"]
            );
        }
    }
}

/// An API server refuses a CRD whose rules may cost more than its budget
/// (lists and strings without maxItems and maxLength make that
/// unbounded); this is kube-cel's estimate of it, coarser than the API
/// server's.
#[test]
fn the_cel_rules_stay_within_the_cost_budget() {
    let crds = crds();
    let mut warnings = Vec::new();
    for kind in switchyard_kinds() {
        let schema = schema_of(crd_of(&crds, kind));
        let compiled = kube_cel::compile_schema(schema);
        for (path, node) in schema_nodes(schema) {
            let mut at = &compiled;
            for step in &path {
                at = match step {
                    Step::Field(f) => &at.properties[f],
                    Step::Item => at.items.as_deref().expect("items"),
                };
            }
            for rule in node["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let rule = rule["rule"].as_str().expect("a rule");
                for w in kube_cel::estimate_rule_cost(rule, at) {
                    warnings.push(format!("{kind} {}: {}", show(&path), w.message));
                }
            }
        }
    }
    assert!(warnings.is_empty(), "{warnings:#?}");
}
