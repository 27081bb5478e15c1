//! deploy/daemonset.yaml and the systemd unit of deploy/systemd/ against
//! the binaries they run: every flag they pass is one their command lines
//! define, the two containers meet at one control socket, and each has the
//! privileges the design gives it and no more.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{deploy_dir, documents, read, workspace_dir};
use serde_json::Value;
use switchyard_config::pools::DEFAULT_NODE_PORTS;
use switchyard_deploy::{LEASE_NAME, LEASE_NAMESPACE, WATCHED};

const SOCKET_DIR: &str = "/run/switchyard";

fn daemon_set() -> Value {
    let docs = documents(
        &read(&deploy_dir().join("daemonset.yaml")),
        "deploy/daemonset.yaml",
    );
    assert_eq!(docs.len(), 1, "one object in deploy/daemonset.yaml");
    docs.into_iter().next().expect("one")
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect()
}

/// The value following `flag`, in `--flag value` or `--flag=value` form.
fn value_of<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

fn flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .collect()
}

/// The long options of the clap-derived struct `name` in `source`, with
/// those of the structs it flattens: `#[arg(long)] snat_ports` is
/// `--snat-ports`, `#[arg(long = "interface")]` is `--interface`.
fn long_options(source: &str, name: &str) -> BTreeSet<String> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let end = body.find("\n}").expect("the struct ends");
    let mut out = BTreeSet::new();
    let mut attributes = String::new();
    for line in body[..end].lines().skip(1) {
        let line = line.trim();
        if line.starts_with("///") || line.starts_with("//") {
            continue;
        }
        if line.starts_with("#[") || !attributes.is_empty() && !is_field(line) {
            attributes.push_str(line);
            continue;
        }
        if let Some(field) = field_name(line) {
            if attributes.contains("flatten") {
                let ty = line
                    .split_once(':')
                    .map(|(_, t)| t.trim().trim_end_matches(','))
                    .and_then(|t| t.rsplit("::").next())
                    .expect("a type");
                out.extend(long_options(source, ty));
            } else if let Some(at) = attributes.find("long") {
                let rest = &attributes[at + "long".len()..];
                let explicit = rest
                    .trim_start()
                    .strip_prefix('=')
                    .and_then(|r| r.trim_start().strip_prefix('"'))
                    .and_then(|r| r.split('"').next());
                out.insert(format!(
                    "--{}",
                    explicit.map_or_else(|| field.replace('_', "-"), str::to_owned)
                ));
            }
            attributes.clear();
        }
    }
    out
}

/// Every source file of the `switchyard` binary, one after the other: its
/// `RunArgs` flattens option structs of other modules.
fn switchyard_sources() -> String {
    let dir = workspace_dir().join("daemon/src/bin/switchyard");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| read(path))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_field(line: &str) -> bool {
    field_name(line).is_some()
}

fn field_name(line: &str) -> Option<&str> {
    let line = line.strip_prefix("pub ").unwrap_or(line);
    let (name, rest) = line.split_once(':')?;
    let name = name.trim();
    (!rest.starts_with(':')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    .then_some(name)
}

#[test]
fn the_long_option_reader_reads_clap_structs() {
    let source = r#"
struct Demo {
    /// Doc.
    #[arg(long)]
    snat_ports: Option<String>,
    #[arg(long = "interface", required = true)]
    interfaces: Vec<String>,
    #[arg(
        long,
        default_value_t = 1
    )]
    batch_size: u32,
    positional: String,
    #[command(flatten)]
    resolve: Inner,
    #[command(flatten)]
    restart: other::Restart,
}

struct Restart {
    #[arg(long)]
    pin_dir: String,
}

struct Inner {
    #[arg(long, value_parser = x)]
    cluster_domain: String,
}
"#;
    let options: Vec<String> = long_options(source, "Demo").into_iter().collect();
    assert_eq!(
        options,
        [
            "--batch-size",
            "--cluster-domain",
            "--interface",
            "--pin-dir",
            "--snat-ports"
        ]
    );
}

#[test]
fn the_appliance_flags_are_switchyard_run_options() {
    let set = daemon_set();
    let appliance = container(&set["spec"]["template"]["spec"], "switchyard");
    assert_eq!(appliance["command"], serde_json::json!(["switchyard"]));
    let args = args(appliance);
    assert_eq!(args[0], "run");
    let main = switchyard_sources();
    let defined = long_options(&main, "RunArgs");
    assert!(defined.contains("--interface") && defined.contains("--maglev-seed"));
    for flag in flags(&args) {
        assert!(
            defined.contains(flag),
            "switchyard run has no option {flag} (it has {defined:?})"
        );
    }
    assert!(
        value_of(&args, "--config").is_none(),
        "a cluster's appliance takes its config from the sidecar"
    );
    assert!(args.contains(&"--cluster"));
    assert!(value_of(&args, "--interface").is_some());
}

fn port_range(text: &str) -> (u16, u16) {
    let (first, last) = text.split_once('-').expect("FIRST-LAST");
    (
        first.parse().expect("a port"),
        last.parse().expect("a port"),
    )
}

/// `switchyard run` refuses SNAT ports the node's own connections draw
/// from (Linux's default ephemeral range); node ports of the default
/// range would be taken for answers to full-NAT flows.
#[test]
fn the_snat_ports_stay_clear_of_ephemeral_and_node_ports() {
    let set = daemon_set();
    let args = args(container(&set["spec"]["template"]["spec"], "switchyard"));
    let (first, last) = port_range(value_of(&args, "--snat-ports").expect("--snat-ports"));
    assert!(first <= last);
    let ephemeral = 32768..=60999;
    let node_ports = DEFAULT_NODE_PORTS.first..=DEFAULT_NODE_PORTS.last;
    for range in [ephemeral, node_ports] {
        assert!(
            last < *range.start() || first > *range.end(),
            "--snat-ports {first}-{last} overlaps {range:?}"
        );
    }
}

/// The sidecar's flags, from its command line where the workspace has
/// it.
#[test]
fn the_sidecar_flags_are_switchyard_kube_options() {
    let set = daemon_set();
    let sidecar = container(&set["spec"]["template"]["spec"], "switchyard-kube");
    assert_eq!(sidecar["command"], serde_json::json!(["switchyard-kube"]));
    let args = args(sidecar);
    assert_eq!(value_of(&args, "--lease-name"), Some(LEASE_NAME));
    let source = workspace_dir().join("kube/src/bin/switchyard-kube.rs");
    if !source.exists() {
        eprintln!(
            "no {}: the sidecar's flags are not checked",
            source.display()
        );
        return;
    }
    let defined = long_options(&read(&source), "Cli");
    for flag in flags(&args) {
        assert!(
            defined.contains(flag),
            "switchyard-kube has no option {flag} (it has {defined:?})"
        );
    }
}

/// The sidecar's own list of watched kinds, where the workspace has it,
/// must be this crate's.
#[test]
fn the_sidecar_watches_the_kinds_rbac_grants() {
    let path = workspace_dir().join("kube/src/kinds.rs");
    if !Path::new(&path).exists() {
        eprintln!("no {}: nothing to compare", path.display());
        return;
    }
    let theirs = sidecar_kinds(&read(&path));
    let ours: BTreeSet<(String, String, bool, bool)> = WATCHED
        .iter()
        .map(|r| {
            (
                r.group.to_owned(),
                r.kind.to_owned(),
                r.namespaced,
                r.writes_status,
            )
        })
        .collect();
    assert_eq!(
        theirs, ours,
        "kube/src/kinds.rs and switchyard_deploy::WATCHED differ"
    );
}

/// (group, kind, namespaced, status written) of each `kind(...)` entry.
fn sidecar_kinds(source: &str) -> BTreeSet<(String, String, bool, bool)> {
    let entry = regex::Regex::new(
        r#"kind\(\s*([A-Z_]+|"[^"]*"),\s*"(\w+)",\s*&\[[^\]]*\],\s*(true|false),\s*(true|false),?\s*\)"#,
    )
    .expect("a valid regex");
    entry
        .captures_iter(source)
        .map(|c| {
            let group = match &c[1] {
                "GATEWAY_GROUP" => switchyard_deploy::GATEWAY_GROUP.to_owned(),
                "SWITCHYARD_GROUP" => switchyard_deploy::SWITCHYARD_GROUP.to_owned(),
                "MULTICLUSTER_GROUP" => switchyard_deploy::MULTICLUSTER_GROUP.to_owned(),
                quoted => quoted.trim_matches('"').to_owned(),
            };
            (group, c[2].to_owned(), &c[3] == "true", &c[4] == "true")
        })
        .collect()
}

#[test]
fn both_containers_meet_at_one_control_socket_on_a_shared_volume() {
    let set = daemon_set();
    let pod = &set["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["emptyDir"].is_object()))
        .expect("an emptyDir volume");
    let mut sockets = Vec::new();
    for name in ["switchyard", "switchyard-kube"] {
        let c = container(pod, name);
        let mounted = c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == volume["name"] && m["mountPath"] == SOCKET_DIR);
        assert!(mounted, "{name} mounts {} at {SOCKET_DIR}", volume["name"]);
        let socket = value_of(&args(c), "--control-socket").expect("--control-socket");
        assert!(socket.starts_with(&format!("{SOCKET_DIR}/")), "{socket}");
        sockets.push(socket.to_owned());
    }
    assert_eq!(sockets[0], sockets[1]);
    let appliance = container(pod, "switchyard");
    for probe in ["startupProbe", "livenessProbe"] {
        let command = &appliance[probe]["exec"]["command"];
        assert_eq!(command[0], "yardctl", "{probe}");
        let words: Vec<&str> = command
            .as_array()
            .expect("a command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            value_of(&words, "--control-socket"),
            Some(sockets[0].as_str())
        );
    }
}

#[test]
fn every_variable_an_argument_names_is_set_in_its_container() {
    let set = daemon_set();
    let reference = regex::Regex::new(r"\$\(([A-Z_]+)\)").expect("a valid regex");
    for c in set["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
    {
        let env: BTreeSet<&str> = c["env"]
            .as_array()
            .map(|e| e.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        for arg in args(c) {
            for name in reference.captures_iter(arg) {
                assert!(
                    env.contains(&name[1]),
                    "{}: {arg} names {} which its env does not set",
                    c["name"],
                    &name[1]
                );
            }
        }
    }
}

#[test]
fn the_pod_runs_on_lb_nodes_in_the_host_network_namespace_of_the_lease() {
    let set = daemon_set();
    assert_eq!(set["kind"], "DaemonSet");
    assert_eq!(set["metadata"]["namespace"], LEASE_NAMESPACE);
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["nodeSelector"]["switchyard.io/lb-node"], "true");
    let tolerated = pod["tolerations"]
        .as_array()
        .expect("tolerations")
        .iter()
        .any(|t| t["key"] == "switchyard.io/lb-node");
    assert!(tolerated);
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    for (key, value) in set["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &labels[key], value,
            "the template carries the selector's labels"
        );
    }
    let sidecar = container(pod, "switchyard-kube");
    let args = args(sidecar);
    let namespace = value_of(&args, "--lease-namespace").expect("--lease-namespace");
    let from_pod = sidecar["env"].as_array().expect("env").iter().any(|e| {
        format!("$({})", e["name"].as_str().unwrap_or_default()) == namespace
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    });
    assert!(
        namespace == LEASE_NAMESPACE || from_pod,
        "the Lease is in {LEASE_NAMESPACE}, where the Role grants it"
    );
}

fn capabilities(c: &Value) -> (Vec<&str>, BTreeSet<&str>) {
    let caps = &c["securityContext"]["capabilities"];
    let drop = caps["drop"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let add = caps["add"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    (drop, add)
}

/// The appliance: root's user id for its socket, and of root's
/// capabilities those that loading XDP, AF_XDP sockets, locked UMEM and
/// netlink writes need. The sidecar: the same user id, to reach that
/// socket, and no capability at all.
#[test]
fn each_container_has_the_capabilities_it_needs_and_no_more() {
    let set = daemon_set();
    let pod = &set["spec"]["template"]["spec"];
    let expected: [(&str, &[&str]); 2] = [
        (
            "switchyard",
            &["BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "IPC_LOCK"],
        ),
        ("switchyard-kube", &[]),
    ];
    for (name, added) in expected {
        let c = container(pod, name);
        let context = &c["securityContext"];
        let (drop, add) = capabilities(c);
        assert_eq!(drop, ["ALL"], "{name}");
        assert_eq!(add, added.iter().copied().collect(), "{name}");
        assert_ne!(context["privileged"], true, "{name}");
        assert_eq!(context["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(context["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(context["runAsUser"], 0, "{name}: the socket's owner");
    }
    assert!(pod["securityContext"]["privileged"].is_null());
    assert!(pod.get("hostPID").is_none() && pod.get("hostIPC").is_none());
}

/// `ExecStart=` of a systemd unit, continuation lines joined, split into
/// words.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart line");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_systemd_unit_runs_switchyard_with_its_own_options() {
    let unit = read(&deploy_dir().join("systemd/switchyard.service"));
    let words = exec_start(&unit);
    assert!(words[0].ends_with("/switchyard"), "{words:?}");
    assert_eq!(words[1], "run");
    let args: Vec<&str> = words[2..].iter().map(String::as_str).collect();
    let main = switchyard_sources();
    let defined = long_options(&main, "RunArgs");
    for flag in flags(&args) {
        assert!(
            defined.contains(flag),
            "switchyard run has no option {flag} (it has {defined:?})"
        );
    }
    assert!(value_of(&args, "--config").is_some() && value_of(&args, "--interface").is_some());
    // The control socket lives where the unit's runtime directory is.
    let socket = value_of(&args, "--control-socket").expect("a control socket");
    assert!(socket.starts_with(SOCKET_DIR), "{socket}");
    assert!(unit.contains("RuntimeDirectory=switchyard"), "{unit}");
}
