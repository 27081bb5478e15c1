//! A blocking client for the control socket: one request, one response.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, Response, CLUSTER_APPLY_DEADLINE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the control socket {path} does not exist: is `switchyard run` running? If it was started with --control-socket, pass yardctl the same --control-socket")]
    NoSocket { path: PathBuf },
    #[error("no Switchyard daemon is listening on {path} (the daemon is not running, or the socket file was left by one that stopped): start `switchyard run`, or pass yardctl the --control-socket it was started with")]
    NotRunning { path: PathBuf },
    #[error("cannot open the control socket {path}: permission denied (it is mode 0600, owned by the daemon's user: run yardctl as that user, usually root, e.g. with sudo)")]
    PermissionDenied { path: PathBuf },
    #[error("the daemon on {path} did not answer within {}s (it answers between packet batches: a wedged worker or control thread?)", .waited.as_secs())]
    Timeout { path: PathBuf, waited: Duration },
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

/// How long to wait for the answer to `request`: an `ApplyCluster` is
/// answered once applied, within the daemon's own deadline.
fn answer_timeout(request: &Request) -> Duration {
    match request {
        Request::ApplyCluster(_) => CLUSTER_APPLY_DEADLINE + REQUEST_TIMEOUT,
        _ => REQUEST_TIMEOUT,
    }
}

pub fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NoSocket {
            path: path.to_owned(),
        },
        io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => io_err(e),
    })?;
    stream
        .set_read_timeout(Some(answer_timeout(request)))
        .map_err(io_err)?;
    let mut line = serde_json::to_vec(request).expect("requests always serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                path: path.to_owned(),
                waited: answer_timeout(request),
            },
            _ => io_err(e),
        })?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("yardctl-client-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_missing_socket_names_the_path_and_the_option() {
        let path = temp_path("missing.sock");
        let err = request(&path, &Request::Status).unwrap_err();
        assert!(matches!(err, ClientError::NoSocket { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("--control-socket"), "{text}");
    }

    #[test]
    fn a_socket_nobody_listens_on_says_the_daemon_is_not_running() {
        let path = temp_path("stale.sock");
        let _ = std::fs::remove_file(&path);
        drop(UnixListener::bind(&path).unwrap());
        let err = request(&path, &Request::Status).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
        assert!(err.to_string().contains("switchyard run"), "{err}");
    }
}
