//! A blocking client for the control socket: one request, one response.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no Switchyard daemon is listening on {path} (is `switchyard run` running? Use --control-socket to name another socket)")]
    NotRunning { path: PathBuf },
    #[error("cannot open {path}: permission denied (the socket is mode 0600: run as the daemon's user, usually root)")]
    PermissionDenied { path: PathBuf },
    #[error("talking to the daemon on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon on {path} sent a response this yardctl does not understand")]
    BadResponse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the daemon refused the request: {0}")]
    Refused(String),
}

/// How long a request may take before yardctl gives up: the daemon answers
/// between packet batches, so anything near this means it is wedged.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => io_err(e),
    })?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(request).expect("requests always serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(io_err)?;
    let response: Response =
        serde_json::from_str(&reply).map_err(|source| ClientError::BadResponse {
            path: path.to_owned(),
            source,
        })?;
    match response {
        Response::Error { message } => Err(ClientError::Refused(message)),
        other => Ok(other),
    }
}
