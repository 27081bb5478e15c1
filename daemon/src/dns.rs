//! The DNS server behind `switchyard run --dns-listen`: answers A, AAAA
//! and CNAME queries for the Gateway names of the running snapshot
//! (`<gateway>.<namespace>.gw.<cluster-domain>`, see `switchyard_config::dns`),
//! over UDP and TCP.
//!
//! It is authoritative for `gw.<cluster-domain>` only: names under it that
//! the snapshot lacks are NXDOMAIN, names outside it are REFUSED (it is not
//! a resolver). Messages are parsed and built with `hickory-proto`; a
//! packet that does not parse gets FORMERR when its header can be read and
//! nothing otherwise, and no input makes it panic. The snapshot is read
//! through the same atomic pointer the workers use, once per query, so a
//! reload changes the answers at once. This module never touches the
//! packet path.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use switchyard_config::dns::{DnsRecord, RecordType as Kind};
use switchyard_config::snapshot::Snapshot;

/// Seconds a resolver may cache an answer: short, because a config reload
/// can move a Gateway at any moment.
pub const TTL: u32 = 5;
/// Largest UDP answer to a query without EDNS (RFC 1035 4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest UDP answer Switchyard offers with EDNS: the DNS flag day 2020
/// figure, which avoids IP fragmentation on common paths.
const EDNS_UDP_LIMIT: u16 = 1232;
/// A DNS header; anything shorter cannot even be answered with an error.
const HEADER_LEN: usize = 12;
/// How often the serving threads look at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// How long a TCP client may take to send its next query.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// TCP connections served at once; more are closed at accept.
const MAX_TCP_CONNECTIONS: usize = 32;

/// The zone Switchyard answers for: `gw.<cluster-domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    suffix: String,
}

impl Zone {
    /// `cluster_domain` as `switchyard_config::dns::cluster_domain`
    /// normalises it (lower case, no trailing dot).
    pub fn new(cluster_domain: &str) -> Zone {
        Zone {
            suffix: format!("gw.{cluster_domain}"),
        }
    }

    fn contains(&self, name: &str) -> bool {
        name == self.suffix
            || name
                .strip_suffix(self.suffix.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }
}

/// How the answer travels, which bounds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The answer to one DNS message, or `None` when it deserves none (too
/// short to carry an id, or itself a response: answering those could
/// start a loop between two servers).
pub fn answer(
    records: &[DnsRecord],
    zone: &Zone,
    query: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return encode(&error(id, OpCode::Query, ResponseCode::FormErr)),
    };
    let response = respond(records, zone, &request);
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match &request.edns {
            Some(edns) => usize::from(edns.max_payload().clamp(512, EDNS_UDP_LIMIT)),
            None => CLASSIC_UDP_LIMIT,
        },
    };
    let bytes = encode(&response)?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too big for this transport: an empty answer with TC set asks the
    // client to retry over TCP (RFC 7766).
    encode(&response.truncate())
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            log::warn!("dns: cannot encode an answer: {err}");
            None
        }
    }
}

fn error(id: u16, op_code: OpCode, code: ResponseCode) -> Message {
    Message::error_msg(id, op_code, code)
}

fn respond(records: &[DnsRecord], zone: &Zone, request: &Message) -> Message {
    let id = request.metadata.id;
    let op_code = request.metadata.op_code;
    if request.metadata.message_type != MessageType::Query {
        return error(id, op_code, ResponseCode::FormErr);
    }
    let mut response = Message::response(id, op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        // RFC 6891 6.1.1: a request with OPT gets an OPT back.
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_LIMIT);
        response.set_edns(edns);
    }
    let code = match (op_code, request.queries.as_slice()) {
        (OpCode::Query, [query]) if query.query_class() == DNSClass::IN => {
            let name = query.name().to_lowercase().to_ascii();
            let name = name.trim_end_matches('.');
            if zone.contains(name) {
                response.metadata.authoritative = true;
                lookup(records, zone, name, query.query_type(), &mut response)
            } else {
                ResponseCode::Refused
            }
        }
        (OpCode::Query, [_]) => ResponseCode::Refused,
        (OpCode::Query, _) => ResponseCode::FormErr,
        _ => ResponseCode::NotImp,
    };
    response.metadata.response_code = code;
    response
}

/// Fills the answer section; returns NOERROR or NXDOMAIN.
fn lookup(
    records: &[DnsRecord],
    zone: &Zone,
    name: &str,
    wanted: RecordType,
    response: &mut Message,
) -> ResponseCode {
    let at_name: Vec<&DnsRecord> = records.iter().filter(|r| r.name == name).collect();
    if at_name.is_empty() {
        // A name with names below it (`<namespace>.gw.<domain>`) exists
        // without records of its own: NOERROR with no answer (RFC 8020).
        let parent_of_some = records
            .iter()
            .any(|r| r.name.strip_suffix(name).is_some_and(|h| h.ends_with('.')));
        return if parent_of_some || name == zone.suffix {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
    }
    let alias = at_name.iter().find(|r| r.record_type == Kind::CNAME);
    let chosen: Vec<&&DnsRecord> = match alias {
        // A CNAME answers every type at its name (RFC 1034 3.6.2); its
        // target is outside the zone, so it is not followed.
        Some(cname) => vec![cname],
        None => at_name
            .iter()
            .filter(|r| wanted == RecordType::ANY || wanted == record_type(r.record_type))
            .collect(),
    };
    for record in chosen {
        if let Some(record) = to_record(record) {
            response.add_answer(record);
        }
    }
    ResponseCode::NoError
}

fn record_type(kind: Kind) -> RecordType {
    match kind {
        Kind::A => RecordType::A,
        Kind::AAAA => RecordType::AAAA,
        Kind::CNAME => RecordType::CNAME,
    }
}

fn to_record(record: &DnsRecord) -> Option<Record> {
    let name = Name::from_ascii(format!("{}.", record.name)).ok()?;
    let data = match record.record_type {
        Kind::A => RData::A(A(record.value.parse::<Ipv4Addr>().ok()?)),
        Kind::AAAA => RData::AAAA(AAAA(record.value.parse::<Ipv6Addr>().ok()?)),
        Kind::CNAME => RData::CNAME(CNAME(Name::from_ascii(format!("{}.", record.value)).ok()?)),
    };
    Some(Record::from_rdata(name, TTL, data))
}

/// A running DNS server; stops (and joins its threads) when dropped.
pub struct DnsServer {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    udp: Option<JoinHandle<()>>,
    tcp: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: any free port, the same for
    /// both) and starts answering from `config`.
    pub fn start(
        addr: SocketAddr,
        config: Arc<ArcSwap<Snapshot>>,
        zone: Zone,
    ) -> io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr)?;
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local)?;
        udp.set_read_timeout(Some(STOP_CHECK))?;
        let stop = Arc::new(AtomicBool::new(false));
        let udp_thread = {
            let (stop, config, zone) = (stop.clone(), config.clone(), zone.clone());
            thread::Builder::new()
                .name("dns-udp".into())
                .spawn(move || serve_udp(&udp, &config, &zone, &stop))?
        };
        let tcp_thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || serve_tcp(&tcp, &config, &zone, &stop))?
        };
        Ok(DnsServer {
            local,
            stop,
            udp: Some(udp_thread),
            tcp: Some(tcp_thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(udp) = self.udp.take() {
            let _ = udp.join();
        }
        // `accept` has no timeout: a connection of our own wakes it. If
        // that fails the thread is left to end with the process.
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        if TcpStream::connect_timeout(&wake, STOP_CHECK).is_ok() {
            if let Some(tcp) = self.tcp.take() {
                let _ = tcp.join();
            }
        }
    }
}

fn serve_udp(socket: &UdpSocket, config: &ArcSwap<Snapshot>, zone: &Zone, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                log::warn!("dns: udp receive: {e}");
                continue;
            }
        };
        let snapshot = config.load();
        if let Some(reply) = answer(snapshot.dns(), zone, &buf[..len], Transport::Udp) {
            if let Err(e) = socket.send_to(&reply, peer) {
                log::debug!("dns: reply to {peer}: {e}");
            }
        }
    }
}

fn serve_tcp(
    listener: &TcpListener,
    config: &Arc<ArcSwap<Snapshot>>,
    zone: &Zone,
    stop: &AtomicBool,
) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (config, zone, open) = (config.clone(), zone.clone(), open.clone());
        let spawned = thread::Builder::new()
            .name("dns-tcp-conn".into())
            .spawn(move || {
                let _ = serve_tcp_connection(stream, &config, &zone);
                open.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            log::warn!("dns: cannot spawn a thread for a TCP client");
        }
    }
}

/// RFC 7766: length-prefixed messages, several per connection.
fn serve_tcp_connection(
    mut stream: TcpStream,
    config: &ArcSwap<Snapshot>,
    zone: &Zone,
) -> io::Result<()> {
    stream.set_read_timeout(Some(TCP_IDLE))?;
    stream.set_write_timeout(Some(TCP_IDLE))?;
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut query)?;
        let snapshot = config.load();
        let Some(reply) = answer(snapshot.dns(), zone, &query, Transport::Tcp) else {
            return Ok(());
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_all(&reply_len.to_be_bytes())?;
        stream.write_all(&reply)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use proptest::prelude::*;

    fn records() -> Vec<DnsRecord> {
        let r = |name: &str, record_type, value: &str| DnsRecord {
            name: name.into(),
            record_type,
            value: value.into(),
        };
        vec![
            r("edge.demo.gw.cluster.local", Kind::A, "198.18.100.1"),
            r("edge.demo.gw.cluster.local", Kind::AAAA, "2001:db8::1"),
            r("db.demo.gw.cluster.local", Kind::CNAME, "db.example.com"),
            r("pg.demo.gw.cluster.local", Kind::A, "198.18.2.21"),
            r("pg.demo.gw.cluster.local", Kind::A, "198.18.2.22"),
        ]
    }

    fn zone() -> Zone {
        Zone::new("cluster.local")
    }

    fn query(name: &str, record_type: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
        message.to_vec().unwrap()
    }

    fn ask(bytes: &[u8], transport: Transport) -> Message {
        let reply = answer(&records(), &zone(), bytes, transport).expect("an answer");
        Message::from_vec(&reply).expect("a parseable answer")
    }

    fn values(message: &Message) -> Vec<String> {
        message.answers.iter().map(|r| r.data.to_string()).collect()
    }

    /// `edge.demo.gw.cluster.local. IN A`, id 0xbeef, RD set, as `dig`
    /// sends it (without EDNS).
    const EDGE_A: &[u8] = &[
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
        4, b'e', b'd', b'g', b'e', 4, b'd', b'e', b'm', b'o', 2, b'g', b'w', 7, b'c', b'l', b'u',
        b's', b't', b'e', b'r', 5, b'l', b'o', b'c', b'a', b'l', 0, // name
        0x00, 0x01, 0x00, 0x01, // A, IN
    ];

    #[test]
    fn a_query_for_a_gateway_gets_its_address_authoritatively() {
        let reply = answer(&records(), &zone(), EDGE_A, Transport::Udp).unwrap();
        // id echoed; QR, AA and RD set; NOERROR; one question, one answer.
        assert_eq!(
            &reply[..8],
            &[0xbe, 0xef, 0x85, 0x00, 0x00, 0x01, 0x00, 0x01]
        );
        // The answer ends with TTL 5, length 4 and the address.
        assert_eq!(
            &reply[reply.len() - 10..],
            &[0, 0, 0, 5, 0, 4, 198, 18, 100, 1]
        );
    }

    #[test]
    fn aaaa_query_gets_the_ipv6_address_only() {
        let reply = ask(
            &query("edge.demo.gw.cluster.local.", RecordType::AAAA),
            Transport::Udp,
        );
        assert_eq!(values(&reply), ["2001:db8::1"]);
    }

    #[test]
    fn names_match_whatever_their_case() {
        let reply = ask(
            &query("EDGE.Demo.GW.cluster.LOCAL.", RecordType::A),
            Transport::Udp,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(values(&reply), ["198.18.100.1"]);
    }

    #[test]
    fn headless_name_answers_with_every_endpoint() {
        let reply = ask(
            &query("pg.demo.gw.cluster.local.", RecordType::A),
            Transport::Tcp,
        );
        assert_eq!(values(&reply), ["198.18.2.21", "198.18.2.22"]);
    }

    #[test]
    fn external_name_answers_a_queries_with_its_cname() {
        let reply = ask(
            &query("db.demo.gw.cluster.local.", RecordType::A),
            Transport::Udp,
        );
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(reply.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(values(&reply), ["db.example.com."]);
    }

    #[test]
    fn unknown_name_in_the_zone_is_nxdomain() {
        let reply = ask(
            &query("nope.demo.gw.cluster.local.", RecordType::A),
            Transport::Udp,
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert!(reply.metadata.authoritative);
    }

    #[test]
    fn existing_name_without_the_type_or_with_names_below_is_nodata() {
        for name in [
            "db.demo.gw.cluster.local.",
            "demo.gw.cluster.local.",
            "gw.cluster.local.",
        ] {
            let reply = ask(&query(name, RecordType::MX), Transport::Udp);
            let code = reply.metadata.response_code;
            assert_eq!(code, ResponseCode::NoError, "{name}");
        }
        let reply = ask(
            &query("edge.demo.gw.cluster.local.", RecordType::MX),
            Transport::Udp,
        );
        assert!(reply.answers.is_empty());
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        for name in [
            "example.com.",
            "cluster.local.",
            "xgw.cluster.local.",
            "edge.demo.gw.cluster.localx.",
        ] {
            let reply = ask(&query(name, RecordType::A), Transport::Udp);
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::Refused,
                "{name}"
            );
            assert!(reply.answers.is_empty());
        }
    }

    #[test]
    fn garbage_with_a_header_is_formerr_and_without_one_is_ignored() {
        let mut broken = EDGE_A.to_vec();
        broken.truncate(20);
        let reply = ask(&broken, Transport::Udp);
        assert_eq!(reply.metadata.id, 0xbeef);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(
            answer(&records(), &zone(), &EDGE_A[..11], Transport::Udp),
            None
        );
    }

    #[test]
    fn responses_are_never_answered() {
        let mut response = EDGE_A.to_vec();
        response[2] |= 0x80;
        assert_eq!(answer(&records(), &zone(), &response, Transport::Udp), None);
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        let mut notify = EDGE_A.to_vec();
        notify[2] = 4 << 3; // NOTIFY
        let reply = ask(&notify, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn edns_query_gets_an_opt_record_back() {
        let mut message = Message::query();
        message.add_query(Query::query(
            Name::from_ascii("edge.demo.gw.cluster.local.").unwrap(),
            RecordType::A,
        ));
        message.set_edns(Edns::new());
        let reply = ask(&message.to_vec().unwrap(), Transport::Udp);
        assert!(reply.edns.is_some());
        assert_eq!(values(&reply), ["198.18.100.1"]);
    }

    #[test]
    fn udp_answer_over_512_bytes_is_truncated_and_whole_over_tcp() {
        let many: Vec<DnsRecord> = (0..60)
            .map(|i| DnsRecord {
                name: "big.demo.gw.cluster.local".into(),
                record_type: Kind::A,
                value: format!("198.18.2.{i}"),
            })
            .collect();
        let q = query("big.demo.gw.cluster.local.", RecordType::A);
        let udp = answer(&many, &zone(), &q, Transport::Udp).unwrap();
        assert!(udp.len() <= 512);
        let udp = Message::from_vec(&udp).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp = Message::from_vec(&answer(&many, &zone(), &q, Transport::Tcp).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 60);
    }

    #[test]
    fn server_answers_over_udp_and_tcp_from_the_current_snapshot() {
        let config = Arc::new(ArcSwap::from_pointee(
            Snapshot::default().with_dns(records()),
        ));
        let server =
            DnsServer::start("127.0.0.1:0".parse().unwrap(), config.clone(), zone()).unwrap();
        let q = query("edge.demo.gw.cluster.local.", RecordType::A);

        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(&q, server.local_addr()).unwrap();
        let mut buf = [0u8; 512];
        let len = client.recv(&mut buf).unwrap();
        assert_eq!(
            values(&Message::from_vec(&buf[..len]).unwrap()),
            ["198.18.100.1"]
        );

        // A swapped snapshot is what the next query sees.
        config.store(Arc::new(Snapshot::default()));
        let mut tcp = TcpStream::connect(server.local_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        tcp.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        tcp.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tcp.read_exact(&mut reply).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        drop(server);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = answer(&records(), &zone(), &bytes, Transport::Udp);
            let _ = answer(&records(), &zone(), &bytes, Transport::Tcp);
        }

        #[test]
        fn corrupted_queries_never_panic(
            flips in proptest::collection::vec((0..EDGE_A.len(), any::<u8>()), 1..8),
            cut in 0..=EDGE_A.len(),
        ) {
            let mut bytes = EDGE_A.to_vec();
            for (at, value) in flips {
                bytes[at] = value;
            }
            bytes.truncate(cut.max(HEADER_LEN));
            let _ = answer(&records(), &zone(), &bytes, Transport::Udp);
        }
    }
}
