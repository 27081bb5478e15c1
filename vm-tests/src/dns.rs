//! A DNS client for tests: one query over UDP from a socket inside a
//! namespace, parsed with the same DNS crate the daemon answers with, so no
//! system resolver tool is needed.

use std::net::{SocketAddr, UdpSocket};

use anyhow::{bail, Context, Result};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::client::{udp_socket_towards, IO_TIMEOUT};
use crate::netns::Netns;

/// Asks `server` for `name`'s records of `record_type` from `ns` and
/// returns the answer, whose id and question are checked against the query.
pub fn dns_query(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
) -> Result<Message> {
    let name = Name::from_ascii(name).with_context(|| format!("DNS name {name:?}"))?;
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), record_type));
    let bytes = query.to_vec().context("encoding a DNS query")?;

    let socket: UdpSocket = udp_socket_towards(ns, server)?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket
        .send_to(&bytes, server)
        .with_context(|| format!("sending a DNS query to {server}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let (len, from) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("DNS {name} {record_type} to {server}: no answer"))?;
        if from != server {
            continue;
        }
        let answer = Message::from_vec(&buf[..len])
            .with_context(|| format!("DNS answer from {server} does not parse"))?;
        if answer.metadata.id != query.metadata.id {
            continue;
        }
        if answer.queries.first().map(|q| q.name()) != Some(&name) {
            bail!("DNS answer from {server} is for another question: {answer:?}");
        }
        return Ok(answer);
    }
}
