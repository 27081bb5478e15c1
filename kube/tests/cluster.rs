//! `switchyard-kube` against the API server simulator and a stand-in for
//! the daemon's control socket: what reaches the daemon and when, what is
//! written back to the cluster, and who writes it.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use switchyard_apiserver_sim::{ApiServer, CatalogOptions};
use switchyard_proto::ClusterApplyOutcome;

fn demo() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/demo.yaml");
    std::fs::read_to_string(path).expect("reading the demo config")
}

fn server_with(text: &str, catalog: CatalogOptions) -> ApiServer {
    let server = ApiServer::start(switchyard_apiserver_sim::Options {
        catalog,
        ..Default::default()
    })
    .expect("starting the API server simulator");
    server.load_yaml(text).expect("loading objects");
    server
}

fn endpoint_slice(addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "namespace": "demo",
                     "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "tcp", "protocol": "TCP", "port": 8080},
                  {"name": "udp", "protocol": "UDP", "port": 5353}]
    })
}

fn slice_addresses(contents: &str) -> Vec<String> {
    documents(contents)
        .into_iter()
        .filter(|d| d["kind"] == "EndpointSlice")
        .flat_map(|d| {
            d["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

fn kinds_in(contents: &str) -> Vec<String> {
    let mut kinds: Vec<String> = documents(contents)
        .into_iter()
        .map(|d| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    kinds.sort();
    kinds
}

const DEMO_OBJECTS: &[&str] = &[
    "EndpointSlice echo-1",
    "Gateway edge",
    "GatewayClass switchyard",
    "Namespace demo",
    "Service echo",
    "TCPRoute echo-tcp",
    "TrafficPolicy echo-tcp-health",
    "TrafficPolicy echo-udp-health",
    "UDPRoute echo-udp",
];

#[test]
fn the_complete_set_is_sent_once_after_every_initial_list() {
    let dir = temp_dir("complete");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));

    let first = poll_until(DEADLINE, "a first update", || {
        daemon.received().into_iter().next()
    });
    assert_eq!(
        first.report.outcome,
        ClusterApplyOutcome::Applied,
        "{:?}",
        first.report.error
    );
    assert_eq!(kinds_in(&first.config.contents), DEMO_OBJECTS);
    assert_eq!(first.config.source, format!("cluster {}", server.url()));

    // The status it answered is written; by then every list is long done,
    // and nothing else was sent.
    poll_until(DEADLINE, "the Gateway's status", || {
        (!status_patches(&server, "gateways", "edge").is_empty()).then_some(())
    });
    assert_eq!(daemon.count(), 1, "{:#?}", daemon.received());
    sidecar.stop();
}

#[test]
fn changes_within_the_debounce_are_one_update() {
    let dir = temp_dir("debounce");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let mut opts = options(&server, &dir, &daemon.path, "node-a");
    opts.debounce = Duration::from_millis(500);
    let sidecar = Sidecar::start(opts);
    poll_until(DEADLINE, "the first update", || {
        (daemon.count() == 1).then_some(())
    });

    // One backend added, then another, then one removed: three watch
    // events well within the debounce.
    server
        .apply(endpoint_slice(&[
            "198.18.2.21",
            "198.18.2.22",
            "198.18.2.23",
        ]))
        .unwrap();
    server
        .apply(endpoint_slice(&[
            "198.18.2.21",
            "198.18.2.22",
            "198.18.2.23",
            "198.18.2.24",
        ]))
        .unwrap();
    server
        .apply(endpoint_slice(&[
            "198.18.2.22",
            "198.18.2.23",
            "198.18.2.24",
        ]))
        .unwrap();

    let second = poll_until(DEADLINE, "a second update", || {
        daemon.received().get(1).cloned()
    });
    assert_eq!(
        slice_addresses(&second.config.contents),
        ["198.18.2.22", "198.18.2.23", "198.18.2.24"],
        "the three changes arrive as one update"
    );
    sidecar.stop();
    assert_eq!(daemon.count(), 2, "{:#?}", daemon.received());
}

#[test]
fn a_watch_answered_410_gone_relists_and_sends_only_complete_sets() {
    let dir = temp_dir("gone");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    poll_until(DEADLINE, "the first update", || {
        (daemon.count() == 1).then_some(())
    });

    // A change, then the history it is in compacted away and every watch
    // cut: each resumes from a resourceVersion the server no longer has,
    // is answered 410 Gone, and relists.
    server
        .apply(endpoint_slice(&["198.18.2.21", "198.18.2.29"]))
        .unwrap();
    server.compact();
    server.disconnect_all();

    let converged = poll_until(DEADLINE, "the relisted change", || {
        daemon
            .last_applied()
            .filter(|c| slice_addresses(c).contains(&"198.18.2.29".to_owned()))
    });
    assert_eq!(kinds_in(&converged), DEMO_OBJECTS);
    for received in daemon.received() {
        assert_eq!(
            kinds_in(&received.config.contents),
            DEMO_OBJECTS,
            "a partial set was sent"
        );
    }
    sidecar.stop();
}

#[test]
fn an_api_server_restart_keeps_the_last_set_and_converges_after() {
    let dir = temp_dir("restart");
    let mut server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    poll_until(DEADLINE, "the first update", || {
        (daemon.count() == 1).then_some(())
    });

    server.stop();
    server.apply(endpoint_slice(&["198.18.2.30"])).unwrap();
    // While it is down, watches fail and retry; nothing is sent.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.count(), 1, "sent while the API server was down");
    server.restart().expect("restarting the API server");

    let converged = poll_until(DEADLINE, "the change made while it was down", || {
        daemon
            .last_applied()
            .filter(|c| slice_addresses(c) == ["198.18.2.30"])
    });
    assert_eq!(kinds_in(&converged), DEMO_OBJECTS);
    sidecar.stop();
}

#[test]
fn an_invalid_object_is_refused_and_a_fix_converges() {
    let dir = temp_dir("invalid");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    poll_until(DEADLINE, "the first update", || {
        (daemon.count() == 1).then_some(())
    });

    let mut invalid = endpoint_slice(&["198.18.2.21"]);
    invalid["endpoints"][0]["addresses"] = json!(["not-an-address"]);
    server.apply(invalid).unwrap();
    let refused = poll_until(DEADLINE, "the invalid update", || {
        daemon.received().get(1).cloned()
    });
    assert_eq!(refused.report.outcome, ClusterApplyOutcome::Refused);

    server.apply(endpoint_slice(&["198.18.2.31"])).unwrap();
    poll_until(DEADLINE, "the fixed update", || {
        daemon
            .last_applied()
            .filter(|c| slice_addresses(c) == ["198.18.2.31"])
    });
    sidecar.stop();
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"))
}

#[test]
fn status_is_patched_with_the_daemons_conditions_and_not_again_when_unchanged() {
    let dir = temp_dir("status");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));

    let patch = poll_until(DEADLINE, "the Gateway's status", || {
        status_patches(&server, "gateways", "edge")
            .into_iter()
            .next()
    });
    let generation = server
        .get("gateway.networking.k8s.io/v1", "Gateway", "demo", "edge")
        .unwrap()["metadata"]["generation"]
        .clone();
    let programmed = condition(&patch["status"]["conditions"], "Programmed");
    assert_eq!(programmed["status"], "True", "{patch}");
    assert_eq!(programmed["reason"], "Programmed");
    assert_eq!(programmed["observedGeneration"], generation);
    assert!(programmed["lastTransitionTime"].is_string(), "{patch}");
    assert!(patch["status"]["listeners"].is_array());
    poll_until(DEADLINE, "the routes' status", || {
        (!status_patches(&server, "tcproutes", "echo-tcp").is_empty()
            && !status_patches(&server, "udproutes", "echo-udp").is_empty()
            && !status_patches(&server, "gatewayclasses", "switchyard").is_empty())
        .then_some(())
    });
    let route = server
        .get(
            "gateway.networking.k8s.io/v1",
            "TCPRoute",
            "demo",
            "echo-tcp",
        )
        .unwrap();
    assert_eq!(
        route["status"]["parents"][0]["controllerName"],
        "switchyard.io/gateway-controller"
    );
    let written = server
        .get("gateway.networking.k8s.io/v1", "Gateway", "demo", "edge")
        .unwrap()["status"]
        .clone();

    // Two more updates that change no status (a backend added, then
    // another): the daemon answers the same statuses, nothing is written.
    server
        .apply(endpoint_slice(&[
            "198.18.2.21",
            "198.18.2.22",
            "198.18.2.25",
        ]))
        .unwrap();
    poll_until(DEADLINE, "the second update", || {
        (daemon.count() == 2).then_some(())
    });
    server
        .apply(endpoint_slice(&[
            "198.18.2.21",
            "198.18.2.22",
            "198.18.2.26",
        ]))
        .unwrap();
    poll_until(DEADLINE, "the third update", || {
        (daemon.count() == 3).then_some(())
    });
    sidecar.stop();
    assert_eq!(status_patches(&server, "gateways", "edge").len(), 1);
    assert_eq!(status_patches(&server, "tcproutes", "echo-tcp").len(), 1);
    let after = server
        .get("gateway.networking.k8s.io/v1", "Gateway", "demo", "edge")
        .unwrap()["status"]
        .clone();
    assert_eq!(after, written, "lastTransitionTime and all kept");
}

#[test]
fn route_parents_of_other_controllers_are_kept() {
    let dir = temp_dir("parents");
    let server = server_with(&demo(), CatalogOptions::default());
    let mut route = server
        .get(
            "gateway.networking.k8s.io/v1",
            "TCPRoute",
            "demo",
            "echo-tcp",
        )
        .unwrap();
    let theirs = json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                      "namespace": "demo", "name": "other"},
                        "controllerName": "example.com/other",
                        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                        "message": "", "observedGeneration": 1,
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    route["status"] = json!({"parents": [theirs.clone()]});
    server.apply(route).unwrap();
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    poll_until(DEADLINE, "the route's status", || {
        (!status_patches(&server, "tcproutes", "echo-tcp").is_empty()).then_some(())
    });
    sidecar.stop();
    let parents = server
        .get(
            "gateway.networking.k8s.io/v1",
            "TCPRoute",
            "demo",
            "echo-tcp",
        )
        .unwrap()["status"]["parents"]
        .clone();
    assert_eq!(parents.as_array().map(Vec::len), Some(2), "{parents}");
    assert_eq!(parents[0], theirs);
    assert_eq!(
        parents[1]["controllerName"],
        "switchyard.io/gateway-controller"
    );
}

#[test]
fn routes_served_only_as_v1alpha2_are_watched_and_written_there() {
    let dir = temp_dir("v1alpha2");
    let text = demo()
        .replace(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute",
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute",
        )
        .replace(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: UDPRoute",
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute",
        );
    let server = server_with(
        &text,
        CatalogOptions {
            routes_v1alpha2_only: true,
        },
    );
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    let first = poll_until(DEADLINE, "a first update", || {
        daemon.received().into_iter().next()
    });
    assert_eq!(
        first.report.outcome,
        ClusterApplyOutcome::Applied,
        "{:?}",
        first.report.error
    );
    let route = documents(&first.config.contents)
        .into_iter()
        .find(|d| d["kind"] == "TCPRoute")
        .unwrap();
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    let patch = poll_until(DEADLINE, "the route's status", || {
        server
            .requests()
            .into_iter()
            .find(|r| r.method == "PATCH" && r.path.contains("/tcproutes/echo-tcp/status"))
    });
    assert!(
        patch
            .path
            .starts_with("/apis/gateway.networking.k8s.io/v1alpha2/"),
        "{}",
        patch.path
    );
    sidecar.stop();
}

fn lease_holder(server: &ApiServer) -> Option<String> {
    server.get(
        "coordination.k8s.io/v1",
        "Lease",
        "switchyard-system",
        "switchyard-status",
    )?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

fn gateway_marks(server: &ApiServer) -> Vec<String> {
    status_patches(server, "gateways", "edge")
        .iter()
        .map(|p| {
            let message = condition(&p["status"]["conditions"], "Programmed")["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            message.rsplit(' ').next().unwrap_or_default().to_owned()
        })
        .collect()
}

#[test]
fn only_the_lease_holder_writes_status_and_the_other_takes_over_when_it_stops() {
    let dir = temp_dir("lease");
    let server = server_with(&demo(), CatalogOptions::default());
    let dir_a = dir.join("a");
    let dir_b = dir.join("b");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    // Each daemon marks its conditions' messages, so a written status
    // names the sidecar that wrote it.
    let daemon_a = FakeDaemon::start(&dir_a, " node-a");
    let daemon_b = FakeDaemon::start(&dir_b, " node-b");
    let a = Sidecar::start(options(&server, &dir, &daemon_a.path, "node-a"));
    let b = Sidecar::start(options(&server, &dir, &daemon_b.path, "node-b"));

    // Both hand the objects to their own daemon.
    poll_until(DEADLINE, "both daemons updated", || {
        (daemon_a.count() >= 1 && daemon_b.count() >= 1).then_some(())
    });
    let holder = poll_until(DEADLINE, "a Lease holder", || lease_holder(&server));
    poll_until(DEADLINE, "the Gateway's status", || {
        (!gateway_marks(&server).is_empty()).then_some(())
    });
    // Another update, so that both sidecars get statuses to write again.
    server
        .apply(endpoint_slice(&["198.18.2.21", "198.18.2.27"]))
        .unwrap();
    poll_until(DEADLINE, "both daemons updated again", || {
        (daemon_a.count() >= 2 && daemon_b.count() >= 2).then_some(())
    });
    assert!(
        gateway_marks(&server).iter().all(|m| *m == holder),
        "only {holder} writes: {:?}",
        gateway_marks(&server)
    );

    // The holder is killed (no release): the other takes the Lease once it
    // has lapsed, and writes the status its daemon answers.
    let (holder_sidecar, other_sidecar, other) = if holder == "node-a" {
        (a, b, "node-b")
    } else {
        (b, a, "node-a")
    };
    holder_sidecar.kill();
    poll_until(DEADLINE, "the other sidecar holding the Lease", || {
        (lease_holder(&server).as_deref() == Some(other)).then_some(())
    });
    poll_until(DEADLINE, "the new holder's status", || {
        gateway_marks(&server)
            .iter()
            .any(|m| m == other)
            .then_some(())
    });
    other_sidecar.stop();
    assert_eq!(lease_holder(&server), None, "released on a clean stop");
}

/// The sidecar binary, killed and reaped should its test fail before it
/// exits, so no failed run leaves it behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_binary_takes_its_flags_hands_the_objects_over_and_releases_the_lease_on_sigterm() {
    let dir = temp_dir("binary");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-kube"))
            .arg("--control-socket")
            .arg(&daemon.path)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--identity", "lb-7", "--lease-namespace", "lb-system"])
            .args(["--lease-name", "yard", "--debounce", "100ms"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting switchyard-kube"),
    );
    let pid = child.0.id();
    let first = poll_until(DEADLINE, "a first update", || {
        daemon.received().into_iter().next()
    });
    assert_eq!(kinds_in(&first.config.contents), DEMO_OBJECTS);
    poll_until(DEADLINE, "the Lease held by lb-7", || {
        let lease = server.get("coordination.k8s.io/v1", "Lease", "lb-system", "yard")?;
        (lease["spec"]["holderIdentity"] == "lb-7" && lease["spec"]["leaseDurationSeconds"] == 15)
            .then_some(())
    });

    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: `pid` is the child started above, not yet reaped, so it
    // cannot name another process.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "signalling switchyard-kube");
    let status = poll_until(DEADLINE, "switchyard-kube to exit", || {
        child.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
    let lease = server
        .get("coordination.k8s.io/v1", "Lease", "lb-system", "yard")
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[test]
fn a_daemon_that_starts_later_gets_the_objects_when_it_is_up() {
    let dir = temp_dir("late-daemon");
    let server = server_with(&demo(), CatalogOptions::default());
    let sidecar = Sidecar::start(options(&server, &dir, &socket_in(&dir), "node-a"));
    // The lists complete and the first update finds no socket: time for
    // that to happen (the debounce is 200 ms), not a wait for readiness.
    poll_until(DEADLINE, "the Lease held", || lease_holder(&server));
    std::thread::sleep(Duration::from_secs(1));
    let daemon = FakeDaemon::start(&dir, "");
    let first = poll_until(DEADLINE, "a first update", || {
        daemon.received().into_iter().next()
    });
    assert_eq!(kinds_in(&first.config.contents), DEMO_OBJECTS);
    sidecar.stop();
}

#[test]
fn a_slow_api_server_delays_updates_but_sends_only_complete_sets() {
    let dir = temp_dir("slow");
    let server = server_with(&demo(), CatalogOptions::default());
    let daemon = FakeDaemon::start(&dir, "");
    let sidecar = Sidecar::start(options(&server, &dir, &daemon.path, "node-a"));
    poll_until(DEADLINE, "the first update", || {
        (daemon.count() == 1).then_some(())
    });

    // Every answer takes a second; the watches are cut and start again
    // (lists, discovery) against the slow server.
    server.set_delay(Duration::from_secs(1));
    server.disconnect_all();
    server
        .apply(endpoint_slice(&["198.18.2.21", "198.18.2.40"]))
        .unwrap();
    let converged = poll_until(DEADLINE, "the change from the slow server", || {
        daemon
            .last_applied()
            .filter(|c| slice_addresses(c).contains(&"198.18.2.40".to_owned()))
    });
    assert_eq!(kinds_in(&converged), DEMO_OBJECTS);
    for received in daemon.received() {
        assert_eq!(kinds_in(&received.config.contents), DEMO_OBJECTS);
    }
    server.set_delay(Duration::ZERO);
    sidecar.stop();
}
