//! Just enough HTTP/1.1 for API clients: keep-alive requests with
//! `Content-Length` or chunked bodies, JSON answers, and chunked streams
//! for watches, flushed per event. Every open connection is registered so
//! that stopping the server cuts them all, as a killed process would; a
//! library server such as tiny_http keeps serving accepted keep-alive
//! connections after it is dropped and gives no socket to shut down.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Larger bodies are refused: a cluster's whole config fits in far less.
pub const MAX_BODY_BYTES: usize = 64 << 20;
const MAX_HEAD_BYTES: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct Request {
    pub connection: u64,
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The path and query as sent.
    pub target: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("1" | "true" | "True"))
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the request: {0}")]
    Io(#[from] io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

/// The writing half of a connection, for one response at a time.
pub struct Responder {
    stream: TcpStream,
}

impl Responder {
    pub fn send(&mut self, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n",
            reason_phrase(status),
            body.len()
        );
        let mut out = Vec::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    pub fn send_json(&mut self, status: u16, body: &serde_json::Value) -> io::Result<()> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.send(status, "application/json", &body)
    }

    /// Starts a chunked `200` response; every `chunk` is flushed at once.
    pub fn start_stream(&mut self, content_type: &str) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n"
        );
        self.stream.write_all(head.as_bytes())?;
        self.stream.flush()
    }

    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    /// Ends a chunked response cleanly, as a watch that times out does.
    pub fn end_stream(&mut self) -> io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n")?;
        self.stream.flush()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// What answers requests. `Err` from `handle` drops the connection without
/// a clean end, which is how a watch is cut when the server stops.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request, responder: &mut Responder) -> io::Result<()>;
}

/// The open connections, to cut them.
#[derive(Debug, Default)]
pub struct Connections(Mutex<HashMap<u64, TcpStream>>);

impl Connections {
    fn insert(&self, id: u64, stream: TcpStream) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, stream);
    }

    fn remove(&self, id: u64) -> Option<TcpStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }

    /// Cuts every open connection but `except` (the one asking, if any).
    pub fn disconnect_all(&self, except: Option<u64>) {
        let connections = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (id, stream) in connections.iter() {
            if Some(*id) != except {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A listening socket, its accept thread, and the connections it accepted.
pub struct Listener {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    connections: Arc<Connections>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn bind(
        addr: SocketAddr,
        handler: Arc<dyn Handler>,
        connections: Arc<Connections>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let stopping = stopping.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("apiserver-accept".into())
                .spawn(move || accept_loop(listener, handler, stopping, connections))?
        };
        Ok(Listener {
            addr,
            stopping,
            connections,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, cuts every connection and frees the port.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The accept thread is blocked in accept(): one connection wakes it.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        self.connections.disconnect_all(None);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Connections>,
) {
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        connections.insert(id, registered);
        let handler = handler.clone();
        let registry = connections.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("apiserver-conn-{id}"))
            .spawn(move || {
                serve_connection(id, stream, handler.as_ref());
                registry.remove(id);
            });
        if spawned.is_err() {
            if let Some(stream) = connections.remove(id) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn serve_connection(id: u64, stream: TcpStream, handler: &dyn Handler) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut responder = Responder { stream: write_half };
    loop {
        let request = match read_request(id, &mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(ReadError::Io(_)) => return,
            Err(error) => {
                let status = if matches!(error, ReadError::TooLarge) {
                    413
                } else {
                    400
                };
                let _ = responder.send(status, "text/plain", error.to_string().as_bytes());
                return;
            }
        };
        let close = request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if handler.handle(&request, &mut responder).is_err() || close {
            let _ = responder.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// One request, or `None` at a clean end of the connection.
fn read_request(connection: u64, reader: &mut impl BufRead) -> Result<Option<Request>, ReadError> {
    let mut line = String::new();
    let mut head_bytes = 0;
    // A stray empty line between requests is allowed (RFC 9112 §2.2).
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_HEAD_BYTES as u64)
            .read_line(&mut line)?;
        if read == 0 {
            return Ok(None);
        }
        head_bytes += read;
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (words.next(), words.next(), words.next())
    else {
        return Err(ReadError::Malformed(format!(
            "request line {:?}",
            line.trim()
        )));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(MAX_HEAD_BYTES as u64)
            .read_line(&mut line)?;
        head_bytes += read;
        if read == 0 || head_bytes > MAX_HEAD_BYTES {
            return Err(ReadError::Malformed(
                "unterminated or oversized headers".into(),
            ));
        }
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("header {header:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let chunked =
        header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let length: usize = match header("content-length") {
            Some(length) => length
                .parse()
                .map_err(|_| ReadError::Malformed(format!("Content-Length {length:?}")))?,
            None => 0,
        };
        if length > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Some(Request {
        connection,
        method,
        path: percent_decode(raw_path),
        query: parse_query(raw_query),
        target: target.clone(),
        headers,
        body,
    }))
}

/// A chunked body (RFC 9112 §7.1), trailers ignored.
pub fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.by_ref().take(1024).read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ReadError::Malformed(format!("chunk size {size_text:?}")))?;
        if size == 0 {
            loop {
                line.clear();
                let read = reader
                    .by_ref()
                    .take(MAX_HEAD_BYTES as u64)
                    .read_line(&mut line)?;
                if read == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&name.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[at],
            bytes.get(at + 1).copied().and_then(hex),
            bytes.get(at + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let query = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1");
        assert_eq!(
            query[0],
            ("labelSelector".into(), "app=web,tier in (a)".into())
        );
        assert_eq!(query[1], ("watch".into(), "1".into()));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let mut input = &b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"[..];
        assert_eq!(read_chunked(&mut input).unwrap(), b"abcde");
    }

    #[test]
    fn a_request_is_read_with_its_body() {
        let mut input = &b"PATCH /api/v1/x?a=b HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"[..];
        let request = read_request(1, &mut input).unwrap().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("PATCH", "/api/v1/x")
        );
        assert_eq!(request.body, b"{}");
        assert!(read_request(1, &mut input).unwrap().is_none());
    }
}
