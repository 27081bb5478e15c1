//! The vendored upstream Gateway API conformance manifests, served by the
//! API server simulator and handed over by the sidecar, resolve to the same
//! listeners, statuses and diagnostics as the same manifests given as a
//! static file. One test per manifest: each loads, as the suite does, the
//! base manifests, what a cluster supplies around them (the config
//! crate's `conformance/fixtures.yaml`: the GatewayClass and
//! EndpointSlices) and the test's manifest, with a static address for each
//! Gateway (a cluster would assign one) and the generation an API server
//! gives a new object, on both sides alike.

mod support;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use support::*;
use switchyard_apiserver_sim::ApiServer;
use switchyard_proto::ClusterApplyOutcome;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/conformance")
}

fn read(relative: &str) -> String {
    let path = dir().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .replace("{GATEWAY_CLASS_NAME}", "gateway-conformance")
        .replace(
            "{GATEWAY_CONTROLLER_NAME}",
            "switchyard.io/gateway-controller",
        )
}

fn documents_of(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("manifests are valid YAML"))
        .filter(|v| v.is_object())
        .collect()
}

/// The suite's objects for `manifest`, as both sides get them.
fn objects(manifest: &str) -> Vec<Value> {
    let mut objects = documents_of(&read("upstream/conformance/base/manifests.yaml"));
    objects.extend(documents_of(&read("fixtures.yaml")));
    objects.extend(documents_of(&read(&format!(
        "upstream/conformance/tests/{manifest}"
    ))));
    let mut gateways: Vec<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "Gateway")
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    gateways.sort();
    for object in &mut objects {
        object["metadata"]["generation"] = json!(1);
        if object["kind"] == "Gateway" {
            let id = (
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            let n = gateways.iter().position(|g| *g == id).unwrap_or(0) + 1;
            if object["spec"]["addresses"].is_null() {
                object["spec"]["addresses"] =
                    json!([{"type": "IPAddress", "value": format!("192.0.2.{n}")}]);
            }
        }
    }
    objects
}

fn as_text(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{o}\n")).collect()
}

fn served_alike(manifest: &str) {
    let test = manifest.trim_end_matches(".yaml");
    let objects = objects(manifest);
    let text = as_text(&objects);

    let temp = temp_dir(&format!("conformance-{test}"));
    let server = ApiServer::start_default().expect("starting the API server simulator");
    server.load_yaml(&text).expect("serving the manifests");
    let daemon = FakeDaemon::start(&temp, "");
    let sidecar = Sidecar::start(options(&server, &temp, &daemon.path, "node-a"));
    let received = poll_until(DEADLINE, "the cluster's objects", || {
        daemon.received().into_iter().next()
    });
    sidecar.stop();
    let _ = std::fs::remove_dir_all(&temp);

    let from_file =
        switchyard_config::load_str(manifest, &text).map(|r| switchyard_config::resolve(&r, 1));
    let from_cluster = switchyard_config::load_str("cluster", &received.config.contents)
        .map(|r| switchyard_config::resolve(&r, 1));
    match (from_file, from_cluster) {
        (Ok(file), Ok(cluster)) => {
            assert_eq!(received.report.outcome, ClusterApplyOutcome::Applied);
            assert_eq!(
                file.snapshot.listeners(),
                cluster.snapshot.listeners(),
                "{test}: resolved listeners differ"
            );
            assert!(
                file.statuses.iter().any(|s| s.kind == "Gateway"),
                "{test}: no Gateway status: the comparison would show nothing"
            );
            assert_eq!(file.statuses, cluster.statuses, "{test}: statuses differ");
            let words = |r: &switchyard_config::Resolution| {
                r.diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(words(&file), words(&cluster), "{test}: diagnostics differ");
        }
        (Err(file), Err(_)) => {
            assert_eq!(
                received.report.outcome,
                ClusterApplyOutcome::Refused,
                "{file}"
            );
        }
        (file, cluster) => panic!(
            "{test}: the file {} but the cluster's objects {}",
            file.map_or_else(|e| format!("is refused ({e})"), |_| "loads".into()),
            cluster.map_or_else(|e| format!("are refused ({e})"), |_| "load".into()),
        ),
    }
}

macro_rules! conformance {
    ($($name:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $name() {
                served_alike($file);
            }
        )*
    };
}

conformance! {
    gateway_infrastructure => "gateway-infrastructure.yaml",
    gateway_invalid_listeners_unsupported_protocol => "gateway-invalid-listeners-unsupported-protocol.yaml",
    gateway_invalid_parameters_ref => "gateway-invalid-parameters-ref.yaml",
    gateway_invalid_route_kind => "gateway-invalid-route-kind.yaml",
    gateway_modify_listeners => "gateway-modify-listeners.yaml",
    gateway_name_maximum_length => "gateway-name-maximum-length.yaml",
    gateway_observed_generation_bump => "gateway-observed-generation-bump.yaml",
    gateway_optional_address_value => "gateway-optional-address-value.yaml",
    gateway_static_addresses => "gateway-static-addresses.yaml",
    gateway_with_attached_routes_with_port_8080 => "gateway-with-attached-routes-with-port-8080.yaml",
    gateway_with_attached_routes => "gateway-with-attached-routes.yaml",
    gatewayclass_observed_generation_bump => "gatewayclass-observed-generation-bump.yaml",
    tcproute_invalid_backendref_nonexistent => "tcproute-invalid-backendref-nonexistent.yaml",
    tcproute_invalid_cross_namespace_backend_ref => "tcproute-invalid-cross-namespace-backend-ref.yaml",
    tcproute_invalid_non_tcp_listener => "tcproute-invalid-non-tcp-listener.yaml",
    tcproute_multiple_routes_attachment => "tcproute-multiple-routes-attachment.yaml",
    tcproute_parentref_attach_all => "tcproute-parentref-attach-all.yaml",
    tcproute_parentref_port_and_section_name => "tcproute-parentref-port-and-section-name.yaml",
    tcproute_reference_grant => "tcproute-reference-grant.yaml",
    tcproute_weighted_routing => "tcproute-weighted-routing.yaml",
    udproute_invalid_backendref_nonexistent => "udproute-invalid-backendref-nonexistent.yaml",
    udproute_invalid_cross_namespace_backend_ref => "udproute-invalid-cross-namespace-backend-ref.yaml",
    udproute_multiple_routes_attachment => "udproute-multiple-routes-attachment.yaml",
    udproute_not_allowed_by_listeners => "udproute-not-allowed-by-listeners.yaml",
    udproute_parentref_attach_all_listeners => "udproute-parentref-attach-all-listeners.yaml",
    udproute_parentref_port_and_section_name => "udproute-parentref-port-and-section-name.yaml",
    udproute_reference_grant => "udproute-reference-grant.yaml",
    udproute_simple => "udproute-simple.yaml",
    udproute_weighted_routing => "udproute-weighted-routing.yaml",
}
