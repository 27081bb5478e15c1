//! A tiny blocking HTTP client for tests: one request per connection, JSON
//! answers, and watch streams read event by event.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// An answer: status code and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn get(&self, path: &str) -> io::Result<Answer> {
        self.request("GET", path, None, b"")
    }

    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> io::Result<Answer> {
        let body = serde_json::to_vec(body).map_err(io::Error::other)?;
        self.request(method, path, Some(content_type), &body)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<Answer> {
        let mut reader = self.open(method, path, content_type, body)?;
        let (status, headers) = read_head(&mut reader)?;
        let body = if header(&headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            crate::http::read_chunked(&mut reader).map_err(io::Error::other)?
        } else if let Some(length) = header(&headers, "content-length") {
            let length: usize = length.parse().map_err(io::Error::other)?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        };
        Ok(Answer { status, body })
    }

    /// Opens a watch; `path` carries the query (`?watch=1&...`).
    pub fn watch(&self, path: &str) -> io::Result<WatchStream> {
        let mut reader = self.open("GET", path, None, b"")?;
        let (status, headers) = read_head(&mut reader)?;
        let chunked = header(&headers, "transfer-encoding").is_some_and(|t| t.contains("chunked"));
        Ok(WatchStream {
            reader,
            status,
            chunked,
            pending: Vec::new(),
            ended: false,
        })
    }

    fn open(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> io::Result<BufReader<TcpStream>> {
        let mut stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        Ok(BufReader::new(stream))
    }
}

fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim_end();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The events of one watch, in order.
pub struct WatchStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    chunked: bool,
    pending: Vec<u8>,
    ended: bool,
}

impl WatchStream {
    /// The next event; `Ok(None)` when the server ended the stream cleanly.
    /// Waits at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(io::Error::other);
            }
            if self.ended {
                return Ok(None);
            }
            self.read_more()?;
        }
    }

    fn read_more(&mut self) -> io::Result<()> {
        if !self.chunked {
            let mut buffer = [0; 4096];
            let read = self.reader.read(&mut buffer)?;
            if read == 0 {
                self.ended = true;
            }
            self.pending.extend_from_slice(&buffer[..read]);
            return Ok(());
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the watch was cut",
            ));
        }
        let size = usize::from_str_radix(line.trim(), 16).map_err(io::Error::other)?;
        if size == 0 {
            self.ended = true;
            return Ok(());
        }
        let start = self.pending.len();
        self.pending.resize(start + size + 2, 0);
        self.reader.read_exact(&mut self.pending[start..])?;
        self.pending.truncate(start + size);
        Ok(())
    }
}
