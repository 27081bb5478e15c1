//! The packet fixtures of `switchyard_wire::fixtures`, run through the
//! worker: every frame of the table enters a fresh worker on its arm (after
//! the request it answers, for a reply row), over in-memory frames, in the scenario the table describes (the snapshot
//! compiled from Gateway API YAML, a fixed neighbour table), and the worker
//! must send exactly the expected bytes out of the expected arm, or drop
//! the frame under the expected reason and count nothing else. The same
//! table drives the steering program in `xdp/tests/fixtures.rs`.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::channel;
use switchyard_config::snapshot::Snapshot;
use switchyard_dataplane::drop_reason::DropReason;
use switchyard_dataplane::io::MemoryIo;
use switchyard_dataplane::neighbor::{
    L2Table, LinkEntry, Neighbors, NeighbourEntry, NeighbourState, RouteAction, RouteEntry,
};
use switchyard_dataplane::replies::ReplyTable;
use switchyard_dataplane::worker::{Worker, WorkerRequest, WorkerSettings};
use switchyard_wire::fixtures::{scenario::*, Fixture, WorkerOutcome, FIXTURES};

/// Interface indexes of the two arms; the worker's ports follow this order,
/// so port 0 is the client arm and port 1 the backend arm, as
/// `Arm::port` says.
const CLIENT_ARM_IFINDEX: u32 = 10;
const BACKEND_ARM_IFINDEX: u32 = 20;
const PORT_IFINDEXES: [u32; 2] = [CLIENT_ARM_IFINDEX, BACKEND_ARM_IFINDEX];

/// The scenario's listeners as an operator writes them: a Gateway on the
/// VIP with a TCP and a UDP listener, each routed to one Service whose only
/// endpoint is the backend, on the backend's ports; and an `ipip`, a `gue`
/// and a `dsr` listener (TrafficPolicies on those listeners) routed to a
/// Service on the listeners' own ports.
fn scenario_yaml() -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: switchyard}}
spec: {{controllerName: switchyard.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: fixtures}}
spec:
  gatewayClassName: switchyard
  addresses: [{{type: IPAddress, value: {VIP}}}, {{type: IPAddress, value: \"{VIP6}\"}}]
  listeners:
  - {{name: tcp, protocol: TCP, port: {TCP_PORT}}}
  - {{name: udp, protocol: UDP, port: {UDP_PORT}}}
  - {{name: tcp-ipip, protocol: TCP, port: {IPIP_TCP_PORT}}}
  - {{name: udp-gue, protocol: UDP, port: {GUE_UDP_PORT}}}
  - {{name: udp-dsr, protocol: UDP, port: {DSR_UDP_PORT}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: fixtures}}
spec:
  parentRefs: [{{name: edge, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: backend, port: {TCP_PORT}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp, namespace: fixtures}}
spec:
  parentRefs: [{{name: edge, sectionName: udp}}]
  rules: [{{backendRefs: [{{name: backend, port: {UDP_PORT}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: fixtures}}
spec:
  ports:
  - {{name: tcp, protocol: TCP, port: {TCP_PORT}, targetPort: {BACKEND_TCP_PORT}}}
  - {{name: udp, protocol: UDP, port: {UDP_PORT}, targetPort: {BACKEND_UDP_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-1
  namespace: fixtures
  labels: {{kubernetes.io/service-name: backend}}
addressType: IPv4
endpoints: [{{addresses: [\"{BACKEND}\"], conditions: {{ready: true}}}}]
ports:
- {{name: tcp, protocol: TCP, port: {BACKEND_TCP_PORT}}}
- {{name: udp, protocol: UDP, port: {BACKEND_UDP_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-2
  namespace: fixtures
  labels: {{kubernetes.io/service-name: backend}}
addressType: IPv6
endpoints: [{{addresses: [\"{BACKEND6}\"], conditions: {{ready: true}}}}]
ports:
- {{name: tcp, protocol: TCP, port: {BACKEND_TCP_PORT}}}
- {{name: udp, protocol: UDP, port: {BACKEND_UDP_PORT}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp-ipip, namespace: fixtures}}
spec:
  parentRefs: [{{name: edge, sectionName: tcp-ipip}}]
  rules: [{{backendRefs: [{{name: encap, port: {IPIP_TCP_PORT}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp-gue, namespace: fixtures}}
spec:
  parentRefs: [{{name: edge, sectionName: udp-gue}}]
  rules: [{{backendRefs: [{{name: encap, port: {GUE_UDP_PORT}}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: udp-dsr, namespace: fixtures}}
spec:
  parentRefs: [{{name: edge, sectionName: udp-dsr}}]
  rules: [{{backendRefs: [{{name: encap, port: {DSR_UDP_PORT}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: encap, namespace: fixtures}}
spec:
  ports:
  - {{name: tcp, protocol: TCP, port: {IPIP_TCP_PORT}}}
  - {{name: udp, protocol: UDP, port: {GUE_UDP_PORT}}}
  - {{name: dsr, protocol: UDP, port: {DSR_UDP_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: encap-1
  namespace: fixtures
  labels: {{kubernetes.io/service-name: encap}}
addressType: IPv4
endpoints: [{{addresses: [\"{BACKEND}\"], conditions: {{ready: true}}}}]
ports:
- {{name: tcp, protocol: TCP, port: {IPIP_TCP_PORT}}}
- {{name: udp, protocol: UDP, port: {GUE_UDP_PORT}}}
- {{name: dsr, protocol: UDP, port: {DSR_UDP_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: encap-2
  namespace: fixtures
  labels: {{kubernetes.io/service-name: encap}}
addressType: IPv6
endpoints: [{{addresses: [\"{BACKEND6}\"], conditions: {{ready: true}}}}]
ports:
- {{name: tcp, protocol: TCP, port: {IPIP_TCP_PORT}}}
- {{name: udp, protocol: UDP, port: {GUE_UDP_PORT}}}
- {{name: dsr, protocol: UDP, port: {DSR_UDP_PORT}}}
---
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: ipip, namespace: fixtures}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: tcp-ipip}}]
  forwarding: {{mode: ipip}}
---
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: gue, namespace: fixtures}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: udp-gue}}]
  forwarding: {{mode: gue, guePort: {GUE_PORT}}}
---
apiVersion: switchyard.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: dsr, namespace: fixtures}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: udp-dsr}}]
  forwarding: {{mode: dsr}}
"
    )
}

fn scenario_snapshot() -> Snapshot {
    let resources = switchyard_config::load_str("fixtures.yaml", &scenario_yaml())
        .expect("the scenario's YAML loads");
    let resolution = switchyard_config::resolve(&resources, 1);
    assert!(
        resolution.diagnostics.is_empty(),
        "the scenario resolves cleanly: {:?}",
        resolution.diagnostics
    );
    resolution.snapshot
}

/// Both arms, a /24 route out of each, and the client and the backend as
/// resolved neighbours.
fn scenario_l2_table() -> L2Table {
    let route = |(dst, prefix_len): (IpAddr, u8), ifindex| RouteEntry {
        dst,
        prefix_len,
        metric: 0,
        action: RouteAction::Forward {
            ifindex,
            gateway: None,
        },
    };
    let neighbour = |ip: IpAddr, ifindex, mac| NeighbourEntry {
        ifindex,
        ip,
        mac: Some(mac),
        state: NeighbourState::Reachable,
    };
    L2Table::new(
        &PORT_IFINDEXES,
        &[
            LinkEntry::ethernet(CLIENT_ARM_IFINDEX, LB_CLIENT_ARM_MAC),
            LinkEntry::ethernet(BACKEND_ARM_IFINDEX, LB_BACKEND_ARM_MAC),
        ],
        &[
            route((CLIENT_NET.0.into(), CLIENT_NET.1), CLIENT_ARM_IFINDEX),
            route((BACKEND_NET.0.into(), BACKEND_NET.1), BACKEND_ARM_IFINDEX),
            route(
                (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).into(), 64),
                CLIENT_ARM_IFINDEX,
            ),
            route(
                (Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(), 64),
                BACKEND_ARM_IFINDEX,
            ),
        ],
        &[
            neighbour(CLIENT.into(), CLIENT_ARM_IFINDEX, CLIENT_MAC),
            neighbour(BACKEND.into(), BACKEND_ARM_IFINDEX, BACKEND_MAC),
            neighbour(CLIENT6.into(), CLIENT_ARM_IFINDEX, CLIENT_MAC),
            neighbour(BACKEND6.into(), BACKEND_ARM_IFINDEX, BACKEND_MAC),
        ],
    )
}

/// What one frame did to a fresh worker.
#[derive(Debug, PartialEq)]
struct Seen {
    /// (port, frame) for every frame sent.
    sent: Vec<(usize, Vec<u8>)>,
    /// (reason, count) for every drop counter that moved.
    drops: Vec<(&'static str, u64)>,
}

/// A worker of the scenario that has seen no flow, sharing `replies` with
/// the other workers of its daemon, and the sender of its control requests.
fn fresh_worker(
    snapshot: &Arc<Snapshot>,
    replies: &Arc<ReplyTable>,
    epoch: Instant,
) -> (Worker, channel::Sender<WorkerRequest>) {
    let (requests, control) = channel::bounded(1);
    let worker = Worker::new(
        0,
        PORT_IFINDEXES.to_vec(),
        Arc::new(ArcSwap::new(Arc::clone(snapshot))),
        Neighbors::fixed(scenario_l2_table()),
        control,
        Arc::new(AtomicBool::new(false)),
        epoch,
        WorkerSettings::default(),
    )
    .with_reply_table(Arc::clone(replies));
    (worker, requests)
}

fn by_name(name: &str) -> &'static Fixture {
    FIXTURES
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture is named {name}"))
}

/// Feeds `fixture`'s frame, on its arm, to `worker`; what it sent and the
/// drops it counted meanwhile.
fn feed(worker: &mut Worker, requests: &channel::Sender<WorkerRequest>, fixture: &Fixture) -> Seen {
    let drops_before = drops(worker, requests);
    let mut io = MemoryIo::new(1);
    io.rx
        .push_back((fixture.arrives_on.port(), fixture.input.to_vec()));
    worker.run_once(&mut io);
    let drops = drops(worker, requests)
        .into_iter()
        .zip(drops_before)
        .map(|((reason, now), (_, before))| (reason, now - before))
        .filter(|&(_, count)| count != 0)
        .collect();
    Seen { sent: io.tx, drops }
}

fn drops(
    worker: &mut Worker,
    requests: &channel::Sender<WorkerRequest>,
) -> Vec<(&'static str, u64)> {
    let (reply, answer) = channel::bounded(1);
    requests.send(WorkerRequest::Stats(reply)).unwrap();
    worker.serve_control();
    let stats = answer.recv().unwrap();
    DropReason::ALL
        .iter()
        .map(|&reason| (reason.name(), stats.drops[reason as usize]))
        .collect()
}

/// Feeds `fixture`'s frame to a worker that has seen nothing before but
/// the request the row answers, if it answers one.
fn run(snapshot: &Arc<Snapshot>, fixture: &Fixture) -> Seen {
    let replies = Arc::new(ReplyTable::new(64));
    let (mut worker, requests) = fresh_worker(snapshot, &replies, Instant::now());
    if let Some(request) = fixture.after {
        feed(&mut worker, &requests, by_name(request));
    }
    feed(&mut worker, &requests, fixture)
}

/// What the table says the worker does, in the terms of [`Seen`].
fn expected(fixture: &Fixture) -> Seen {
    match fixture.worker {
        WorkerOutcome::Forward { arm, output } => Seen {
            sent: vec![(arm.port(), output.to_vec())],
            drops: vec![],
        },
        WorkerOutcome::Drop { reason } => {
            let known = DropReason::ALL.map(DropReason::name);
            let reason = known.into_iter().find(|&name| name == reason);
            Seen {
                sent: vec![],
                drops: vec![(
                    reason.unwrap_or_else(|| {
                        panic!(
                            "{}: no drop reason is named that; known: {known:?}",
                            fixture.name
                        )
                    }),
                    1,
                )],
            }
        }
    }
}

#[test]
fn the_worker_forwards_or_drops_every_fixture_as_the_table_says() {
    let snapshot = Arc::new(scenario_snapshot());
    let mismatches: Vec<String> = FIXTURES
        .iter()
        .filter_map(|fixture| {
            let (seen, want) = (run(&snapshot, fixture), expected(fixture));
            (seen != want).then(|| {
                format!(
                    "{} ({}):\n  expected {want:02x?}\n  got      {seen:02x?}",
                    fixture.name, fixture.description
                )
            })
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} fixtures differ:\n{}",
        mismatches.len(),
        FIXTURES.len(),
        mismatches.join("\n")
    );
}

/// RSS is not symmetric: a reply row comes out the same on another worker
/// of the daemon, one that shares the reply table but never saw the
/// request.
#[test]
fn a_reply_comes_out_the_same_on_a_worker_that_did_not_see_the_request() {
    let snapshot = Arc::new(scenario_snapshot());
    for reply in FIXTURES.iter().filter(|f| f.after.is_some()) {
        let request = by_name(reply.after.unwrap_or_default());
        let replies = Arc::new(ReplyTable::new(64));
        let epoch = Instant::now();
        let (mut first, first_requests) = fresh_worker(&snapshot, &replies, epoch);
        let (mut second, second_requests) = fresh_worker(&snapshot, &replies, epoch);
        assert_eq!(
            feed(&mut first, &first_requests, request),
            expected(request),
            "{}",
            request.name
        );
        assert_eq!(
            feed(&mut second, &second_requests, reply),
            expected(reply),
            "{} on the other worker",
            reply.name
        );
    }
}
