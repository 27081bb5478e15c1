//! `yard-health`'s network and endpoint server, without the daemon: from
//! the LB namespace every endpoint completes a TCP handshake, and the
//! server accepts (and closes) each connection, so a long run never fills
//! a backlog. Needs root (namespaces), as the benchmark does.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use switchyard_perf::health::config::endpoints;
use switchyard_perf::health::lab::{EndpointServer, Lab};
use switchyard_vm_tests::in_netns;
use switchyard_vm_tests::poll::poll_until;

#[test]
fn every_endpoint_accepts_a_connection_from_the_lb_namespace() {
    let lab = Lab::build().expect("the namespaces");
    let chosen = endpoints(1000);
    let server = EndpointServer::start(&lab.backends, &chosen).expect("the endpoint server");
    assert_eq!(server.listening(), chosen.len());
    let refused: Vec<String> = in_netns(&lab.lb, || {
        chosen
            .iter()
            .filter_map(|e| {
                TcpStream::connect_timeout(&SocketAddr::V4(*e), Duration::from_secs(5))
                    .err()
                    .map(|err| format!("{e}: {err}"))
            })
            .collect()
    })
    .expect("entering the LB namespace");
    assert!(refused.is_empty(), "{refused:?}");
    poll_until(Duration::from_secs(30), "every connection accepted", || {
        Ok((server.accepted() >= chosen.len() as u64).then_some(()))
    })
    .unwrap();
    assert_eq!(server.accepted(), chosen.len() as u64);
}
