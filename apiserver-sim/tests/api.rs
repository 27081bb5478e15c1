//! The API as clients see it over HTTP: discovery, lists, watches, writes,
//! Leases, restarts, and the manifests Switchyard's tests serve.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_apiserver_sim::client::WatchStream;
use switchyard_apiserver_sim::{ApiServer, CatalogOptions, Options};

const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/demo/gateways";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/switchyard/leases";
const MERGE: &str = "application/merge-patch+json";
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn server() -> ApiServer {
    server_with(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    })
}

fn server_with(options: Options) -> ApiServer {
    ApiServer::start(options).expect("the server starts")
}

fn gateway(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "demo", "labels": {"tier": "edge"}},
        "spec": {"gatewayClassName": "switchyard", "listeners": [{"name": "tcp", "port": port, "protocol": "TCP"}]},
    })
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {object}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn events(watch: &mut WatchStream, count: usize) -> Vec<Value> {
    (0..count)
        .map(|_| {
            watch
                .next_event(EVENT_WAIT)
                .expect("an event arrives")
                .expect("the watch is still open")
        })
        .collect()
}

fn kinds_and_names(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

// ------------------------------------------------------------- discovery

#[test]
fn discovery_names_every_served_kind_with_its_status_subresource() {
    let server = server();
    let client = server.client();
    let core = client.get("/api").unwrap().json();
    assert_eq!(core["kind"], "APIVersions");
    assert_eq!(core["versions"], json!(["v1"]));

    let groups = client.get("/apis").unwrap().json();
    assert_eq!(groups["kind"], "APIGroupList");
    let group_names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for expected in [
        "coordination.k8s.io",
        "discovery.k8s.io",
        "gateway.networking.k8s.io",
        "multicluster.x-k8s.io",
        "switchyard.io",
    ] {
        assert!(
            group_names.contains(&expected),
            "{expected} missing from {group_names:?}"
        );
    }

    let gateway_group = client
        .get("/apis/gateway.networking.k8s.io")
        .unwrap()
        .json();
    assert_eq!(gateway_group["kind"], "APIGroup");
    assert_eq!(gateway_group["preferredVersion"]["version"], "v1");

    let resources = client
        .get("/apis/gateway.networking.k8s.io/v1")
        .unwrap()
        .json();
    assert_eq!(resources["kind"], "APIResourceList");
    let by_name = |name: &str| {
        resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    };
    let gateways = by_name("gateways").expect("gateways are served");
    assert_eq!(
        (gateways["kind"].as_str(), gateways["namespaced"].as_bool()),
        (Some("Gateway"), Some(true))
    );
    assert!(gateways["verbs"]
        .as_array()
        .unwrap()
        .contains(&json!("watch")));
    assert!(by_name("gateways/status").is_some());
    assert!(by_name("tcproutes").is_some() && by_name("udproutes").is_some());
    assert_eq!(by_name("gatewayclasses").unwrap()["namespaced"], false);
    assert!(by_name("referencegrants/status").is_none());

    let core_resources = client.get("/api/v1").unwrap().json();
    let core_names: Vec<&str> = core_resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        core_names,
        [
            "namespaces",
            "namespaces/status",
            "pods",
            "pods/status",
            "services",
            "services/status"
        ]
    );
    let switchyard = client.get("/apis/switchyard.io/v1alpha1").unwrap().json();
    assert_eq!(
        switchyard["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["name"].as_str().unwrap().contains('/'))
            .count(),
        4
    );
    assert_eq!(client.get("/apis/apps/v1").unwrap().status, 404);
}

#[test]
fn aggregated_discovery_lists_groups_versions_and_resources_at_once() {
    let server = server();
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let ask = |path: &str| {
        let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or("");
        serde_json::from_str::<Value>(body).unwrap()
    };
    let apis = ask("/apis");
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    let gateway = apis["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "gateway.networking.k8s.io")
        .expect("the Gateway API group");
    assert_eq!(gateway["versions"][0]["version"], "v1");
    let gateways = gateway["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "gateways")
        .expect("gateways");
    assert_eq!(gateways["scope"], "Namespaced");
    assert_eq!(gateways["responseKind"]["kind"], "Gateway");
    assert_eq!(gateways["subresources"][0]["subresource"], "status");
    let core = ask("/api");
    assert_eq!(core["items"][0]["metadata"]["name"], "");
    assert_eq!(
        core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn routes_served_as_v1alpha2_only_are_absent_from_v1() {
    let server = server_with(Options {
        catalog: CatalogOptions {
            routes_v1alpha2_only: true,
        },
        ..Options::default()
    });
    let client = server.client();
    let v1 = client
        .get("/apis/gateway.networking.k8s.io/v1")
        .unwrap()
        .json();
    assert!(!v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "tcproutes"));
    let v1alpha2 = client
        .get("/apis/gateway.networking.k8s.io/v1alpha2")
        .unwrap()
        .json();
    assert!(v1alpha2["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "tcproutes"));
    assert_eq!(
        client
            .get("/apis/gateway.networking.k8s.io/v1/tcproutes")
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        client
            .get("/apis/gateway.networking.k8s.io/v1alpha2/tcproutes")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn one_storage_answers_every_served_version() {
    let server = server();
    server.apply(gateway("a", 80)).unwrap();
    let beta = server
        .client()
        .get("/apis/gateway.networking.k8s.io/v1beta1/namespaces/demo/gateways/a")
        .unwrap();
    assert_eq!(beta.status, 200);
    assert_eq!(
        beta.json()["apiVersion"],
        "gateway.networking.k8s.io/v1beta1"
    );
    let list = server
        .client()
        .get("/apis/gateway.networking.k8s.io/v1beta1/gateways")
        .unwrap()
        .json();
    assert_eq!(list["kind"], "GatewayList");
    assert_eq!(
        list["items"][0]["apiVersion"],
        "gateway.networking.k8s.io/v1beta1"
    );
}

// ------------------------------------------------------------------ lists

#[test]
fn list_pages_join_with_continue_tokens_into_one_consistent_list() {
    let server = server();
    for (at, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        server.apply(gateway(name, 80 + at as u16)).unwrap();
    }
    let client = server.client();
    let first = client.get(&format!("{GATEWAYS}?limit=2")).unwrap().json();
    assert_eq!(names(&first), ["a", "b"]);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    assert_eq!(first["metadata"]["remainingItemCount"], 3);

    // Writes between pages do not show: the pages are one snapshot.
    server.apply(gateway("bb", 99)).unwrap();
    server.apply(gateway("d", 1000)).unwrap();
    let second = client
        .get(&format!("{GATEWAYS}?limit=2&continue={token}"))
        .unwrap()
        .json();
    assert_eq!(names(&second), ["c", "d"]);
    assert_eq!(second["items"][1]["spec"]["listeners"][0]["port"], 83);
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    let token = second["metadata"]["continue"].as_str().unwrap().to_owned();
    let last = client
        .get(&format!("{GATEWAYS}?limit=2&continue={token}"))
        .unwrap()
        .json();
    assert_eq!(names(&last), ["e"]);
    assert!(last["metadata"].get("continue").is_none());

    let fresh = client.get(GATEWAYS).unwrap().json();
    assert_eq!(names(&fresh), ["a", "b", "bb", "c", "d", "e"]);
}

#[test]
fn continue_token_older_than_the_history_is_410_expired() {
    let server = server();
    for name in ["a", "b", "c"] {
        server.apply(gateway(name, 80)).unwrap();
    }
    let first = server
        .client()
        .get(&format!("{GATEWAYS}?limit=1"))
        .unwrap()
        .json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    server.apply(gateway("a", 81)).unwrap();
    server.compact();
    let expired = server
        .client()
        .get(&format!("{GATEWAYS}?limit=1&continue={token}"))
        .unwrap();
    assert_eq!(expired.status, 410);
    let status = expired.json();
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_u64()
        ),
        (Some("Status"), Some("Expired"), Some(410))
    );
}

#[test]
fn label_selectors_filter_lists() {
    let server = server();
    let mut labelled = gateway("db", 5432);
    labelled["metadata"]["labels"] = json!({"tier": "data", "app": "pg"});
    server.apply(labelled).unwrap();
    server.apply(gateway("web", 80)).unwrap();
    let client = server.client();
    let list = |selector: &str| {
        names(
            &client
                .get(&format!("{GATEWAYS}?labelSelector={selector}"))
                .unwrap()
                .json(),
        )
    };
    assert_eq!(list("tier%3Ddata"), ["db"]);
    assert_eq!(list("tier%20in%20(edge,%20x)"), ["web"]);
    assert_eq!(list("app"), ["db"]);
    assert_eq!(list("!app"), ["web"]);
    assert_eq!(
        client
            .get(&format!("{GATEWAYS}?labelSelector=a%20b%20c"))
            .unwrap()
            .status,
        400
    );
}

#[test]
fn list_at_an_exact_resource_version_shows_that_state() {
    let server = server();
    let created = server.apply(gateway("a", 80)).unwrap();
    server.apply(gateway("a", 81)).unwrap();
    server.apply(gateway("b", 82)).unwrap();
    let old = server
        .client()
        .get(&format!(
            "{GATEWAYS}?resourceVersion={}&resourceVersionMatch=Exact",
            rv(&created)
        ))
        .unwrap()
        .json();
    assert_eq!(names(&old), ["a"]);
    assert_eq!(old["items"][0]["spec"]["listeners"][0]["port"], 80);
}

// ---------------------------------------------------------------- watches

#[test]
fn watch_from_a_resource_version_delivers_later_changes_in_order() {
    let server = server();
    let a = server.apply(gateway("a", 80)).unwrap();
    server.apply(gateway("b", 81)).unwrap();
    server.apply(gateway("b", 82)).unwrap();
    server
        .delete("gateway.networking.k8s.io/v1", "Gateway", "demo", "a")
        .unwrap();

    let mut watch = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=1&resourceVersion={}", rv(&a)))
        .unwrap();
    assert_eq!(watch.status, 200);
    let seen = events(&mut watch, 3);
    assert_eq!(
        kinds_and_names(&seen),
        [
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "b".into()),
            ("DELETED".into(), "a".into())
        ]
    );
    assert_eq!(seen[1]["object"]["spec"]["listeners"][0]["port"], 82);
    assert_eq!(seen[0]["object"]["kind"], "Gateway");
    let versions: Vec<u64> = seen.iter().map(|e| rv(&e["object"])).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions {versions:?} do not increase"
    );

    // Changes after the watch opened arrive on it too.
    server.apply(gateway("c", 83)).unwrap();
    assert_eq!(
        kinds_and_names(&events(&mut watch, 1)),
        [("ADDED".into(), "c".into())]
    );
}

#[test]
fn watch_without_a_resource_version_starts_with_the_current_objects() {
    let server = server();
    server.apply(gateway("a", 80)).unwrap();
    server.apply(gateway("b", 80)).unwrap();
    let mut watch = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=true"))
        .unwrap();
    assert_eq!(
        kinds_and_names(&events(&mut watch, 2)),
        [("ADDED".into(), "a".into()), ("ADDED".into(), "b".into())]
    );
}

#[test]
fn streaming_list_ends_its_initial_events_with_an_annotated_bookmark() {
    let server = server();
    server.apply(gateway("a", 80)).unwrap();
    let mut watch = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"))
        .unwrap();
    let seen = events(&mut watch, 2);
    assert_eq!(seen[0]["type"], "ADDED");
    assert_eq!(seen[1]["type"], "BOOKMARK");
    assert_eq!(
        seen[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn label_selected_watch_sees_objects_enter_and_leave_the_selection() {
    let server = server();
    let created = server.apply(gateway("a", 80)).unwrap();
    let mut moved = gateway("a", 80);
    moved["metadata"]["labels"] = json!({"tier": "data"});
    server.apply(moved).unwrap();
    server.apply(gateway("a", 80)).unwrap();
    let mut watch = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&labelSelector=tier%3Dedge&resourceVersion={}",
            rv(&created)
        ))
        .unwrap();
    assert_eq!(
        kinds_and_names(&events(&mut watch, 2)),
        [("DELETED".into(), "a".into()), ("ADDED".into(), "a".into())]
    );
}

#[test]
fn bookmarks_carry_the_latest_resource_version() {
    let server = server();
    let created = server.apply(gateway("a", 80)).unwrap();
    // A change to another kind moves the resourceVersion the bookmark names.
    server
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}))
        .unwrap();
    let mut watch = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&allowWatchBookmarks=true&resourceVersion={}",
            rv(&created)
        ))
        .unwrap();
    let bookmark = events(&mut watch, 1).remove(0);
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Gateway");
    assert_eq!(
        bookmark["object"]["apiVersion"],
        "gateway.networking.k8s.io/v1"
    );
    assert_eq!(rv(&bookmark["object"]), server.revision());
    assert!(bookmark["object"].get("spec").is_none());

    let mut quiet = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}&timeoutSeconds=1",
            server.revision()
        ))
        .unwrap();
    assert!(
        quiet.next_event(EVENT_WAIT).unwrap().is_none(),
        "no bookmarks unless asked, and the stream ends at timeoutSeconds"
    );
}

#[test]
fn absurd_watch_parameters_are_answered_not_fatal() {
    let server = server();
    let mut endless = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=1&timeoutSeconds={}", u64::MAX))
        .unwrap();
    assert_eq!(endless.status, 200);
    server.apply(gateway("a", 80)).unwrap();
    assert_eq!(events(&mut endless, 1)[0]["type"], "ADDED");
    let bad = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=1&resourceVersion=abc"))
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[test]
fn watch_older_than_the_history_gets_a_410_expired_error_event() {
    let server = server();
    let created = server.apply(gateway("a", 80)).unwrap();
    server.apply(gateway("a", 81)).unwrap();
    server.compact();
    let mut watch = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}",
            rv(&created)
        ))
        .unwrap();
    assert_eq!(watch.status, 200);
    let error = events(&mut watch, 1).remove(0);
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        watch.next_event(EVENT_WAIT).unwrap().is_none(),
        "the stream ends after the error"
    );

    // A watch from now is fine.
    let mut current = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}",
            server.revision()
        ))
        .unwrap();
    server.apply(gateway("a", 82)).unwrap();
    assert_eq!(events(&mut current, 1)[0]["type"], "MODIFIED");
}

#[test]
fn a_bounded_history_expires_old_starts_by_itself() {
    let server = server_with(Options {
        history_limit: 2,
        ..Options::default()
    });
    let created = server.apply(gateway("a", 80)).unwrap();
    for port in 81..84 {
        server.apply(gateway("a", port)).unwrap();
    }
    let mut watch = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}",
            rv(&created)
        ))
        .unwrap();
    assert_eq!(events(&mut watch, 1)[0]["object"]["code"], 410);
}

// ----------------------------------------------------------------- writes

#[test]
fn generation_counts_spec_changes_only() {
    let server = server();
    let client = server.client();
    let created = client
        .send_json("POST", GATEWAYS, "application/json", &gateway("a", 80))
        .unwrap();
    assert_eq!(created.status, 201);
    let created = created.json();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|uid| !uid.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].as_str().is_some());

    let labelled = client
        .send_json(
            "PATCH",
            &format!("{GATEWAYS}/a"),
            MERGE,
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .unwrap()
        .json();
    assert_eq!(labelled["metadata"]["generation"], 1);
    assert!(rv(&labelled) > rv(&created));

    let respecced = client
        .send_json(
            "PATCH",
            &format!("{GATEWAYS}/a"),
            MERGE,
            &json!({"spec": {"gatewayClassName": "other"}}),
        )
        .unwrap()
        .json();
    assert_eq!(respecced["metadata"]["generation"], 2);

    let status = client
        .send_json("PATCH", &format!("{GATEWAYS}/a/status"), MERGE, &json!({"status": {"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 2}]}}))
        .unwrap()
        .json();
    assert_eq!(status["metadata"]["generation"], 2);
    assert_eq!(status["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        status["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
}

#[test]
fn status_subresource_writes_status_only_and_the_object_keeps_it() {
    let server = server();
    let client = server.client();
    client
        .send_json("POST", GATEWAYS, "application/json", &gateway("a", 80))
        .unwrap();
    let patched = client
        .send_json(
            "PATCH",
            &format!("{GATEWAYS}/a/status"),
            MERGE,
            &json!({"spec": {"gatewayClassName": "sneaky"}, "status": {"addresses": [{"type": "IPAddress", "value": "198.18.0.1"}]}}),
        )
        .unwrap();
    assert_eq!(patched.status, 200);
    let patched = patched.json();
    assert_eq!(patched["spec"]["gatewayClassName"], "switchyard");
    assert_eq!(patched["status"]["addresses"][0]["value"], "198.18.0.1");

    let mut replaced = patched.clone();
    replaced["status"] = json!({});
    replaced["spec"]["gatewayClassName"] = json!("renamed");
    let replaced = client
        .send_json(
            "PUT",
            &format!("{GATEWAYS}/a"),
            "application/json",
            &replaced,
        )
        .unwrap()
        .json();
    assert_eq!(replaced["spec"]["gatewayClassName"], "renamed");
    assert_eq!(
        replaced["status"]["addresses"][0]["value"], "198.18.0.1",
        "a write to the object leaves status alone"
    );
}

#[test]
fn unchanged_write_is_not_a_new_revision() {
    let server = server();
    let client = server.client();
    client
        .send_json("POST", GATEWAYS, "application/json", &gateway("a", 80))
        .unwrap();
    let body = json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}]}});
    let first = client
        .send_json("PATCH", &format!("{GATEWAYS}/a/status"), MERGE, &body)
        .unwrap()
        .json();
    let second = client
        .send_json("PATCH", &format!("{GATEWAYS}/a/status"), MERGE, &body)
        .unwrap()
        .json();
    assert_eq!(rv(&first), rv(&second));
    assert_eq!(server.revision(), rv(&first));
    let patches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(
        patches.len(),
        2,
        "the log has every write request, changed or not"
    );
    assert_eq!(patches[0].path, format!("{GATEWAYS}/a/status"));
    assert_eq!(patches[0].content_type.as_deref(), Some(MERGE));
    assert!(patches[0].body.contains("Accepted"));
}

#[test]
fn put_with_a_stale_resource_version_is_409_conflict() {
    let server = server();
    let client = server.client();
    let created = client
        .send_json("POST", GATEWAYS, "application/json", &gateway("a", 80))
        .unwrap()
        .json();
    let mut first = created.clone();
    first["spec"]["gatewayClassName"] = json!("one");
    assert_eq!(
        client
            .send_json("PUT", &format!("{GATEWAYS}/a"), "application/json", &first)
            .unwrap()
            .status,
        200
    );
    let mut stale = created.clone();
    stale["spec"]["gatewayClassName"] = json!("two");
    let conflict = client
        .send_json("PUT", &format!("{GATEWAYS}/a"), "application/json", &stale)
        .unwrap();
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["reason"], "Conflict");
    let stored = client.get(&format!("{GATEWAYS}/a")).unwrap().json();
    assert_eq!(stored["spec"]["gatewayClassName"], "one");

    // A merge patch that names a resourceVersion is held to it too.
    let stale_patch = json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "status": {"x": 1}});
    assert_eq!(
        client
            .send_json(
                "PATCH",
                &format!("{GATEWAYS}/a/status"),
                MERGE,
                &stale_patch
            )
            .unwrap()
            .status,
        409
    );
}

#[test]
fn leases_elect_one_holder_with_optimistic_concurrency() {
    let server = server();
    let client = server.client();
    let lease = |holder: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "switchyard-kube", "namespace": "switchyard"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": "2026-12-06T20:00:00.000000Z"},
        })
    };
    let created = client
        .send_json("POST", LEASES, "application/json", &lease("node-a"))
        .unwrap();
    assert_eq!(created.status, 201);
    let created = created.json();
    let second = client
        .send_json("POST", LEASES, "application/json", &lease("node-b"))
        .unwrap();
    assert_eq!(
        (second.status, second.json()["reason"].clone()),
        (409, json!("AlreadyExists"))
    );

    // node-a renews with the version it read.
    let mut renewal = created.clone();
    renewal["spec"]["renewTime"] = json!("2026-12-06T20:00:05.000000Z");
    let renewed = client
        .send_json(
            "PUT",
            &format!("{LEASES}/switchyard-kube"),
            "application/json",
            &renewal,
        )
        .unwrap();
    assert_eq!(renewed.status, 200);

    // node-b read before the renewal: its takeover conflicts.
    let mut takeover = created.clone();
    takeover["spec"]["holderIdentity"] = json!("node-b");
    let conflict = client
        .send_json(
            "PUT",
            &format!("{LEASES}/switchyard-kube"),
            "application/json",
            &takeover,
        )
        .unwrap();
    assert_eq!(conflict.status, 409);

    // A JSON patch guarded by a test operation.
    let guarded = json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "node-a"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "node-b"}
    ]);
    let patched = client
        .send_json(
            "PATCH",
            &format!("{LEASES}/switchyard-kube"),
            "application/json-patch+json",
            &guarded,
        )
        .unwrap();
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json()["spec"]["holderIdentity"], "node-b");
    let again = client
        .send_json(
            "PATCH",
            &format!("{LEASES}/switchyard-kube"),
            "application/json-patch+json",
            &guarded,
        )
        .unwrap();
    assert_eq!(again.status, 422);
    assert_eq!(
        client
            .get(&format!("{LEASES}/switchyard-kube/status"))
            .unwrap()
            .status,
        404,
        "Leases have no status subresource"
    );
}

#[test]
fn server_side_apply_creates_and_then_merges() {
    let server = server();
    let client = server.client();
    let path = format!("{LEASES}/applied?fieldManager=switchyard-kube&force=true");
    let body = b"apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: applied\nspec:\n  holderIdentity: a\n";
    let created = client
        .request("PATCH", &path, Some("application/apply-patch+yaml"), body)
        .unwrap();
    assert_eq!(created.status, 201);
    let merged = client
        .request(
            "PATCH",
            &path,
            Some("application/apply-patch+yaml"),
            br#"{"spec": {"leaseDurationSeconds": 15}}"#,
        )
        .unwrap()
        .json();
    assert_eq!(
        merged["spec"],
        json!({"holderIdentity": "a", "leaseDurationSeconds": 15})
    );
}

#[test]
fn errors_are_status_objects_with_code_and_reason() {
    let server = server();
    let client = server.client();
    let missing = client.get(&format!("{GATEWAYS}/nope")).unwrap();
    assert_eq!(missing.status, 404);
    let status = missing.json();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("NotFound"))
    );
    assert_eq!(status["details"]["name"], "nope");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("gateways.gateway.networking.k8s.io \"nope\" not found"));
    assert_eq!(
        client.get("/apis/unknown.io/v1/things").unwrap().status,
        404
    );
    assert_eq!(client.get("/nothing/here").unwrap().status, 404);
    client
        .send_json("POST", GATEWAYS, "application/json", &gateway("a", 80))
        .unwrap();
    let unsupported = client
        .request("PATCH", &format!("{GATEWAYS}/a"), Some("text/plain"), b"{}")
        .unwrap();
    assert_eq!(
        (unsupported.status, unsupported.json()["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    let garbage = client
        .request("POST", GATEWAYS, Some("application/json"), b"{not json")
        .unwrap();
    assert_eq!(garbage.status, 400);
}

// ------------------------------------------------------- stop and restart

#[test]
fn restart_keeps_the_store_and_cuts_open_watches() {
    let mut server = server();
    let created = server.apply(gateway("a", 80)).unwrap();
    let updated = server.apply(gateway("a", 81)).unwrap();
    let addr = server.addr();
    let mut watch = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}",
            rv(&updated)
        ))
        .unwrap();

    server.stop();
    assert!(
        watch.next_event(EVENT_WAIT).is_err(),
        "a stopped server cuts the watch, with no clean end"
    );
    assert!(
        server.client().get(GATEWAYS).is_err(),
        "nothing listens while stopped"
    );

    server.restart().unwrap();
    assert_eq!(server.addr(), addr);
    let list = server.client().get(GATEWAYS).unwrap().json();
    assert_eq!(names(&list), ["a"]);
    assert_eq!(rv(&list["items"][0]), rv(&updated));
    let next = server.apply(gateway("b", 80)).unwrap();
    assert!(
        rv(&next) > rv(&updated),
        "the resourceVersion counter survives the restart"
    );

    // The history did not: a watch from before the last write relists.
    let mut stale = server
        .client()
        .watch(&format!(
            "{GATEWAYS}?watch=1&resourceVersion={}",
            rv(&created)
        ))
        .unwrap();
    assert_eq!(events(&mut stale, 1)[0]["object"]["code"], 410);
}

#[test]
fn disconnect_cuts_watches_and_keeps_serving() {
    let server = server();
    let mut watch = server
        .client()
        .watch(&format!("{GATEWAYS}?watch=1"))
        .unwrap();
    server.disconnect_all();
    assert!(watch.next_event(EVENT_WAIT).is_err());
    assert_eq!(server.client().get(GATEWAYS).unwrap().status, 200);
}

// -------------------------------------------------------------- manifests

#[test]
fn conformance_manifests_and_examples_load_with_unserved_kinds_listed() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in [
        "/work/shared/gateway-api/conformance/tests",
        "/work/shared/gateway-api/conformance/base",
    ] {
        let dir = std::path::Path::new(dir);
        if !dir.exists() {
            continue;
        }
        files.extend(
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
        );
    }
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    files.extend(
        std::fs::read_dir(examples)
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    assert!(files.len() > 4, "manifests to load: {files:?}");
    for file in files {
        let server = server();
        let text = std::fs::read_to_string(&file).unwrap();
        let report = server
            .load_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for skipped in &report.skipped {
            let kind = skipped.split(' ').next().unwrap_or("");
            assert!(
                [
                    "Deployment",
                    "ConfigMap",
                    "HTTPRoute",
                    "GRPCRoute",
                    "TLSRoute",
                    "ListenerSet",
                    "BackendTLSPolicy",
                    "Secret"
                ]
                .contains(&kind),
                "{}: a served kind was skipped: {skipped}",
                file.display()
            );
        }
        let gateways_in_file = text.matches("\nkind: Gateway\n").count()
            + usize::from(text.starts_with("kind: Gateway\n"));
        let served = server
            .client()
            .get("/apis/gateway.networking.k8s.io/v1/gateways")
            .unwrap()
            .json();
        assert_eq!(names(&served).len(), gateways_in_file, "{}", file.display());
    }
}

#[test]
fn loaded_objects_keep_their_status() {
    let server = server();
    server
        .load_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: demo}\nspec: {}\nstatus:\n  podIP: 10.0.0.5\n---\n# nothing\n")
        .unwrap();
    let pod = server
        .client()
        .get("/api/v1/namespaces/demo/pods/web-1")
        .unwrap()
        .json();
    assert_eq!(pod["status"]["podIP"], "10.0.0.5");
}
