//! One probe of one endpoint, TCP, UDP or HTTP, bounded by the check's
//! timeout, from the node's own address (ordinary sockets: the kernel picks
//! the source, and the XDP program passes traffic that is not addressed to
//! a VIP, so replies reach these sockets and never the workers). A probe
//! turns every reply, however malformed, into a verdict with a short
//! detail a person can read; nothing here panics on what a backend sends.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use switchyard_config::snapshot::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::state::short_duration;
use super::ProbeOutcome;

/// What a probe reads at most, reply or HTTP response with its body.
pub const MAX_READ: usize = 64 * 1024;

/// How a probe ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Fail,
    /// No verdict within the check's timeout: a failure too.
    Timeout,
}

impl Verdict {
    /// As the metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Timeout => "timeout",
        }
    }
}

/// Runs `probe` against `to` within `timeout`.
pub async fn run(probe: &Probe, to: SocketAddr, timeout: Duration) -> (ProbeOutcome, Verdict) {
    let at = SystemTime::now();
    let started = Instant::now();
    let mut stage = Stage::Connecting;
    let result = tokio::time::timeout(timeout, attempt(probe, to, &mut stage)).await;
    let (verdict, detail) = match result {
        Ok(Ok(detail)) => (Verdict::Pass, detail),
        Ok(Err(detail)) => (Verdict::Fail, detail),
        Err(_elapsed) => (Verdict::Timeout, stage.timed_out(timeout)),
    };
    let outcome = ProbeOutcome {
        passed: verdict == Verdict::Pass,
        detail,
        latency: started.elapsed(),
        at,
    };
    (outcome, verdict)
}

/// How far a probe got, so a timeout can say where it stopped.
#[derive(Debug, Clone)]
enum Stage {
    Connecting,
    /// Waiting for bytes; what was wrong with those seen so far, if any.
    AwaitingReply(Option<String>),
}

impl Stage {
    fn timed_out(&self, timeout: Duration) -> String {
        let within = short_duration(timeout);
        match self {
            Self::Connecting => format!("connect: no answer within {within}"),
            Self::AwaitingReply(None) => format!("no reply within {within}"),
            Self::AwaitingReply(Some(wrong)) => format!("{wrong} within {within}"),
        }
    }
}

/// `Ok`: passed, with its detail; `Err`: failed, with why.
type Attempt = Result<String, String>;

async fn attempt(probe: &Probe, to: SocketAddr, stage: &mut Stage) -> Attempt {
    match probe {
        Probe::Tcp { send, receive } => tcp(to, send, receive, stage).await,
        Probe::Udp { send, receive } => udp(to, send, receive, stage).await,
        Probe::Http {
            path,
            host,
            expected_statuses,
            expected_body,
        } => {
            let host = host.clone().unwrap_or_else(|| to.to_string());
            http(to, path, &host, expected_statuses, expected_body, stage).await
        }
    }
}

async fn connect(to: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(to)
        .await
        .map_err(|e| format!("connect: {}", describe(&e)))
}

async fn tcp(to: SocketAddr, send: &[u8], receive: &[u8], stage: &mut Stage) -> Attempt {
    let mut stream = connect(to).await?;
    if send.is_empty() && receive.is_empty() {
        // A connect-only check would otherwise leave a TIME_WAIT socket on
        // this node per probe (tens of thousands at 10,000 targets a
        // second); HAProxy ends its connect checks with a reset likewise.
        reset_on_close(&stream);
        return Ok("connected".into());
    }
    if !send.is_empty() {
        stream
            .write_all(send)
            .await
            .map_err(|e| format!("send: {}", describe(&e)))?;
    }
    if receive.is_empty() {
        return Ok("connected, sent".into());
    }
    *stage = Stage::AwaitingReply(None);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // What came before the reset is the more telling half.
            Err(_) if !seen.is_empty() => 0,
            Err(e) => return Err(format!("receive: {}", describe(&e))),
        };
        if n == 0 {
            return Err(if seen.is_empty() {
                "connection closed without a reply".into()
            } else {
                format!("reply did not contain {}", quoted(receive))
            });
        }
        seen.extend_from_slice(&buf[..n]);
        if contains(&seen, receive) {
            return Ok(format!("reply contained {}", quoted(receive)));
        }
        if seen.len() >= MAX_READ {
            return Err(format!(
                "first {} KiB of reply did not contain {}",
                MAX_READ / 1024,
                quoted(receive)
            ));
        }
        *stage = Stage::AwaitingReply(Some(format!("reply did not contain {}", quoted(receive))));
    }
}

async fn udp(to: SocketAddr, send: &[u8], receive: &[u8], stage: &mut Stage) -> Attempt {
    let local: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("socket: {}", describe(&e)))?;
    // Connected, so the kernel hands this socket the ICMP port
    // unreachable an absent server causes (as ECONNREFUSED) and drops
    // datagrams from anyone but the probed endpoint.
    socket
        .connect(to)
        .await
        .map_err(|e| format!("connect: {}", describe(&e)))?;
    socket.send(send).await.map_err(|e| udp_error("send", &e))?;
    *stage = Stage::AwaitingReply(None);
    let mut reply = Vec::with_capacity(MAX_READ);
    loop {
        reply.clear();
        socket
            .recv_buf(&mut reply)
            .await
            .map_err(|e| udp_error("receive", &e))?;
        if receive.is_empty() {
            return Ok("replied".into());
        }
        if contains(&reply, receive) {
            return Ok(format!("reply contained {}", quoted(receive)));
        }
        // Another datagram may still carry it (a late reply to an
        // earlier probe reaches a fresh socket only by port reuse, but a
        // server may answer in several datagrams).
        *stage = Stage::AwaitingReply(Some(format!("reply did not contain {}", quoted(receive))));
    }
}

fn udp_error(what: &str, error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::ConnectionRefused {
        "port unreachable (ICMP): nothing listens there".into()
    } else {
        format!("{what}: {}", describe(error))
    }
}

async fn http(
    to: SocketAddr,
    path: &str,
    host: &str,
    expected_statuses: &[u16],
    expected_body: &[u8],
    stage: &mut Stage,
) -> Attempt {
    if !is_request_target(path) || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        // Config validation rejects these; a request must never carry
        // header injection whatever the check holds.
        return Err(format!("invalid path or host: {path:?} {host:?}"));
    }
    let mut stream = connect(to).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {}", describe(&e)))?;
    *stage = Stage::AwaitingReply(None);
    let mut response = Response::default();
    let mut buf = [0u8; 8192];
    loop {
        let room = MAX_READ.saturating_sub(response.raw.len()).min(buf.len());
        let n = if room == 0 {
            0
        } else {
            match stream.read(&mut buf[..room]).await {
                Ok(n) => n,
                // A server that resets after answering has still answered.
                Err(_) if !response.raw.is_empty() => 0,
                Err(e) => return Err(format!("receive: {}", describe(&e))),
            }
        };
        let closed = n == 0;
        response.raw.extend_from_slice(&buf[..n]);
        let truncated = response.raw.len() >= MAX_READ;
        match response.judge(expected_statuses, expected_body, closed || truncated)? {
            Judged::Done(detail) => return Ok(detail),
            Judged::NeedMore(partial) => *stage = Stage::AwaitingReply(partial),
        }
        if closed || truncated {
            // `judge` gives a verdict whenever told the input is at its end.
            return Err("incomplete HTTP response".into());
        }
    }
}

/// An origin-form request target: `/`, then visible ASCII only.
fn is_request_target(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Default)]
struct Response {
    raw: Vec<u8>,
}

enum Judged {
    /// Passed, with its detail.
    Done(String),
    /// No verdict yet; what is wrong so far, if anything.
    NeedMore(Option<String>),
}

/// How the body of a response is delimited (RFC 9112 §6.3).
enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

impl Response {
    /// A verdict on what was read so far; `at_end`: nothing more will
    /// come (closed, or the read cap reached).
    fn judge(
        &self,
        expected_statuses: &[u16],
        expected_body: &[u8],
        at_end: bool,
    ) -> Result<Judged, String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&self.raw) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if at_end && self.raw.is_empty() => {
                return Err("connection closed without a response".into())
            }
            Ok(httparse::Status::Partial) if at_end => {
                return Err("response headers incomplete".into())
            }
            Ok(httparse::Status::Partial) => return Ok(Judged::NeedMore(None)),
            Err(e) => return Err(format!("invalid HTTP response: {e}")),
        };
        let status = parsed.code.unwrap_or(0);
        let expected = if expected_statuses.is_empty() {
            &[200][..]
        } else {
            expected_statuses
        };
        if !expected.contains(&status) {
            return Err(format!("HTTP {status}, expected {}", one_of(expected)));
        }
        if expected_body.is_empty() {
            return Ok(Judged::Done(format!("HTTP {status}")));
        }
        let framing =
            framing(parsed.headers).map_err(|e| format!("HTTP {status}, invalid framing: {e}"))?;
        let raw_body = &self.raw[head_len..];
        let (body, complete) = match framing {
            Framing::Chunked => dechunk(raw_body)
                .map_err(|e| format!("HTTP {status}, invalid chunked body: {e}"))?,
            Framing::Length(len) => (
                raw_body[..raw_body.len().min(len)].to_vec(),
                raw_body.len() >= len,
            ),
            Framing::UntilClose => (raw_body.to_vec(), false),
        };
        if contains(&body, expected_body) {
            return Ok(Judged::Done(format!(
                "HTTP {status}, body contained {}",
                quoted(expected_body)
            )));
        }
        let wrong = format!(
            "HTTP {status}, body did not contain {}",
            quoted(expected_body)
        );
        if complete || at_end {
            return Err(wrong);
        }
        Ok(Judged::NeedMore(Some(wrong)))
    }
}

/// Body framing from the headers: chunked when Transfer-Encoding ends in
/// it, else Content-Length, else until the server closes.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, String> {
    let mut length = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(header.value);
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                return Ok(Framing::Chunked);
            }
            return Ok(Framing::UntilClose);
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| "Content-Length is not a number".to_string())?;
            if length.is_some_and(|l| l != value) {
                return Err("conflicting Content-Length".into());
            }
            length = Some(value);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// The body of a chunked message from the bytes read so far, and whether
/// its last chunk has been seen.
fn dechunk(mut raw: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok((body, false)),
            Err(httparse::InvalidChunkSize) => return Err("bad chunk size".into()),
        };
        if size == 0 {
            return Ok((body, true));
        }
        let data = &raw[size_len..];
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if data.len() < size {
            body.extend_from_slice(data);
            return Ok((body, false));
        }
        body.extend_from_slice(&data[..size]);
        // Each chunk's data ends in CRLF.
        match data.get(size..size + 2) {
            Some(b"\r\n") => raw = &data[size + 2..],
            Some(_) => return Err("chunk not followed by CRLF".into()),
            None => return Ok((body, false)),
        }
    }
}

fn one_of(statuses: &[u16]) -> String {
    let mut text = String::new();
    for (i, status) in statuses.iter().enumerate() {
        if i > 0 {
            text.push_str(if i + 1 == statuses.len() {
                " or "
            } else {
                ", "
            });
        }
        let _ = write!(text, "{status}");
    }
    text
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bytes as a person reads them in a detail: quoted text, at most 32
/// characters of it.
fn quoted(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(32).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// An error as a person reads it: `Connection refused`, without the
/// `(os error 111)` the standard library appends.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

/// Makes the socket's close send a reset instead of a FIN.
fn reset_on_close(stream: &TcpStream) {
    let linger = nix::sys::socket::sockopt::Linger;
    let now = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // Best effort: a socket that keeps its TIME_WAIT is still correct.
    let _ = nix::sys::socket::setsockopt(&stream.as_fd(), linger, &now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn judge(raw: &[u8], body: &str, at_end: bool) -> Result<Option<String>, String> {
        let response = Response { raw: raw.to_vec() };
        match response.judge(&[200], body.as_bytes(), at_end)? {
            Judged::Done(detail) => Ok(Some(detail)),
            Judged::NeedMore(_) => Ok(None),
        }
    }

    #[test]
    fn a_partial_response_waits_for_more() {
        assert_eq!(judge(b"HTTP/1.1 200 OK\r\nContent-Le", "", false), Ok(None));
        assert_eq!(
            judge(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nall",
                "ok",
                false
            ),
            Ok(None)
        );
        assert_eq!(
            judge(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nall",
                "ok",
                true
            ),
            Err("HTTP 200, body did not contain \"ok\"".into())
        );
    }

    #[test]
    fn content_length_bounds_the_body() {
        // Bytes past the declared length are not the body.
        assert_eq!(
            judge(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nallok",
                "ok",
                false
            ),
            Err("HTTP 200, body did not contain \"ok\"".into())
        );
    }

    #[test]
    fn chunked_bodies_are_joined_across_chunks() {
        assert_eq!(
            dechunk(b"1\r\nok\r\n"),
            Err("chunk not followed by CRLF".into())
        );
        assert_eq!(
            dechunk(b"1\r\no\r\n1;ext=1\r\nk\r\n0\r\n\r\n"),
            Ok((b"ok".to_vec(), true))
        );
        assert_eq!(dechunk(b"5\r\nhel"), Ok((b"hel".to_vec(), false)));
        assert_eq!(dechunk(b"zz\r\n"), Err("bad chunk size".into()));
    }

    #[test]
    fn statuses_read_as_a_sentence() {
        assert_eq!(one_of(&[200]), "200");
        assert_eq!(one_of(&[200, 204]), "200 or 204");
        assert_eq!(one_of(&[200, 204, 301]), "200, 204 or 301");
    }

    proptest! {
        #[test]
        fn any_response_bytes_get_a_verdict_without_panic(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            at_end in any::<bool>(),
        ) {
            let _ = judge(&raw, "ok", at_end);
            let _ = dechunk(&raw);
        }

        #[test]
        fn any_chunked_response_gets_a_verdict_without_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(&body);
            let _ = judge(&raw, "ok", true);
        }
    }
}
