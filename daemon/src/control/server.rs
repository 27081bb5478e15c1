//! Serving the control socket: claiming its path, accepting clients and
//! reading and writing their one request and one answer.
//!
//! A client may be slow, idle or hostile; it must cost only itself. Each
//! connection gets its own thread, up to `MAX_CONNECTIONS`; a request line
//! must arrive whole within `REQUEST_DEADLINE` and be no longer than
//! `MAX_REQUEST_BYTES`, and the answer must be taken within
//! `ANSWER_DEADLINE`. When every slot is taken, a new client displaces the
//! connection that has been waiting longest without sending a request (so
//! idle connections cannot lock `yardctl` out); only when every slot is
//! busy answering is the new client told so and closed at once. Nothing
//! ever queues without bound.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use switchyard_proto::{Response, MAX_CLUSTER_CONFIG_BYTES, MAX_REQUEST_BYTES};

use super::{respond, ControlError, ControlState};

/// Connections served at once, idle or answering. Each holds a thread and a
/// descriptor; far above what operators and a metrics scraper open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send its whole request line.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client has to take its whole answer; `yardctl` reads as soon
/// as it has written.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// What is at a path that `--control-socket` names.
fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "something other than a socket"
    }
}

/// Makes `path` free to bind: nothing there, or a socket left by a daemon
/// that is gone (connecting is refused), which is removed. Anything else is
/// someone's, and is left alone.
pub fn claim(path: &Path) -> Result<(), ControlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Inspect {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_owned(),
            what: describe(meta.file_type()),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ControlError::InUse {
            path: path.to_owned(),
        }),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)
            .map_err(|source| ControlError::RemoveStale {
                path: path.to_owned(),
                source,
            }),
        // Not known to be stale (no permission to connect, say): not ours
        // to remove.
        Err(source) => Err(ControlError::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

pub struct ControlServer {
    path: PathBuf,
    /// The socket file this server bound, so only that one is removed.
    inode: Option<(u64, u64)>,
}

impl ControlServer {
    /// Binds `path` (mode 0600, so only the daemon's user, root, may ask)
    /// and serves it on background threads.
    pub fn start(path: &Path, state: Arc<ControlState>) -> Result<Self, ControlError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| ControlError::Directory {
                path: dir.to_owned(),
                source,
            })?;
        }
        claim(path)?;
        let bind_err = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let inode = fs::symlink_metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        let slots = Arc::new(Mutex::new(Slots::new(MAX_CONNECTIONS)));
        thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(&listener, &state, &slots))
            .map_err(bind_err)?;
        Ok(Self {
            path: path.to_owned(),
            inode,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if ours.is_some() && ours == self.inode {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn accept_loop(listener: &UnixListener, state: &Arc<ControlState>, slots: &Arc<Mutex<Slots>>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                log::warn!("control socket accept: {err}");
                continue;
            }
        };
        let Ok(handle) = stream.try_clone() else {
            refuse_busy(stream, "cannot take another connection");
            continue;
        };
        let admitted = lock(slots).admit(handle);
        let id = match admitted {
            Admit::Admitted { id, displaced } => {
                if let Some(idle) = displaced {
                    // Its thread wakes from its read, sees it was
                    // displaced, says so and ends.
                    let _ = idle.shutdown(Shutdown::Read);
                }
                id
            }
            Admit::Busy(_) => {
                refuse_busy(stream, "every connection is busy answering");
                continue;
            }
        };
        let (state, slots_of) = (state.clone(), slots.clone());
        let spawned = thread::Builder::new()
            .name("control-client".into())
            .spawn(move || connection(&state, &slots_of, id, stream));
        if let Err(err) = spawned {
            log::warn!("control socket: no thread for a client: {err}");
            lock(slots).leave(id);
        }
    }
}

fn lock(slots: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    // Counts and handles only, each update whole under the lock.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Answers a client that cannot be served now, without waiting on it.
fn refuse_busy(stream: UnixStream, why: &str) {
    let message = format!("the daemon is busy: {why} ({MAX_CONNECTIONS} at most); try again");
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write_all(&encode(&Response::Error { message }));
    }
}

fn connection(state: &ControlState, slots: &Mutex<Slots>, id: u64, stream: UnixStream) {
    let request = read_request(&stream, Instant::now() + REQUEST_DEADLINE);
    if !lock(slots).start_answering(id) {
        refuse_busy(stream, "this connection sent nothing while others waited");
        return;
    }
    let _answering = Answering(slots);
    let response = match request {
        Ok(line) => respond(state, &line),
        Err(ReadError::Closed) => return,
        Err(ReadError::Io(err)) => {
            log::debug!("control connection: {err}");
            return;
        }
        Err(err) => Response::Error {
            message: err.to_string(),
        },
    };
    if let Err(err) = write_answer(
        &stream,
        &encode(&response),
        Instant::now() + ANSWER_DEADLINE,
    ) {
        log::debug!("control connection: answer not taken: {err}");
    }
}

fn encode(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|err| {
        format!("{{\"Error\":{{\"message\":\"encoding the answer: {err}\"}}}}").into_bytes()
    });
    out.push(b'\n');
    out
}

/// Frees an answering slot however the answer ends.
struct Answering<'a>(&'a Mutex<Slots>);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        lock(self.0).finish_answering();
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("request longer than {MAX_REQUEST_BYTES} bytes (the limit of one request line, room for a cluster update of {MAX_CLUSTER_CONFIG_BYTES} bytes of objects once JSON-escaped)")]
    TooLong,
    #[error("no complete request line within {}s", REQUEST_DEADLINE.as_secs())]
    Deadline,
    #[error("closed before a request")]
    Closed,
    #[error(transparent)]
    Io(io::Error),
}

/// Reads one request line (without its newline) before `deadline`.
pub(super) fn read_request(stream: &UnixStream, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    read_line_before(stream, deadline, MAX_REQUEST_BYTES)
}

fn read_line_before(
    mut stream: &UnixStream,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(ReadError::Deadline)?;
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        let n = match stream.read(&mut buf) {
            // A request without its newline is still whole at end of file.
            Ok(0) if line.is_empty() => return Err(ReadError::Closed),
            Ok(0) => return Ok(line),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Deadline)
            }
            Err(err) => return Err(ReadError::Io(err)),
        };
        let end = buf[..n].iter().position(|&b| b == b'\n');
        let take = end.unwrap_or(n);
        if line.len() + take > limit {
            return Err(ReadError::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        if end.is_some() {
            return Ok(line);
        }
    }
}

/// Writes all of `bytes` before `deadline`, or gives up.
pub(super) fn write_answer(
    mut stream: &UnixStream,
    bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        stream.set_write_timeout(Some(left))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Who holds the connection slots: clients still to send their request
/// (oldest first, displaceable) and clients being answered (not).
pub(super) struct Slots<T = UnixStream> {
    capacity: usize,
    next_id: u64,
    waiting: BTreeMap<u64, T>,
    answering: usize,
}

#[derive(Debug)]
pub(super) enum Admit<T> {
    /// Served as `id`; `displaced` is the idle connection that gave way.
    Admitted { id: u64, displaced: Option<T> },
    /// Every slot is answering: the new connection is handed back.
    Busy(T),
}

impl<T> Slots<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            next_id: 0,
            waiting: BTreeMap::new(),
            answering: 0,
        }
    }

    pub(super) fn admit(&mut self, conn: T) -> Admit<T> {
        let mut displaced = None;
        if self.waiting.len() + self.answering >= self.capacity {
            // Ids grow with arrival: the first waiting is the oldest.
            match self.waiting.pop_first() {
                Some((_, oldest)) => displaced = Some(oldest),
                None => return Admit::Busy(conn),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, conn);
        Admit::Admitted { id, displaced }
    }

    /// Moves `id` from waiting to answering; false when it was displaced.
    pub(super) fn start_answering(&mut self, id: u64) -> bool {
        if self.waiting.remove(&id).is_none() {
            return false;
        }
        self.answering += 1;
        true
    }

    pub(super) fn finish_answering(&mut self) {
        self.answering = self.answering.saturating_sub(1);
    }

    /// Gives up `id`'s slot before it was answered.
    pub(super) fn leave(&mut self, id: u64) {
        self.waiting.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("swy-control-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_full_house_of_idle_clients_gives_way_to_a_new_one_oldest_first() {
        let mut slots = Slots::new(2);
        let Admit::Admitted { id: a, .. } = slots.admit("a") else {
            panic!("room for a")
        };
        let Admit::Admitted { id: b, .. } = slots.admit("b") else {
            panic!("room for b")
        };
        let Admit::Admitted { id: c, displaced } = slots.admit("c") else {
            panic!("an idle client gives way")
        };
        assert_eq!(displaced, Some("a"));
        assert!(!slots.start_answering(a), "a was displaced");
        assert!(slots.start_answering(b));
        assert!(slots.start_answering(c));
        assert!(matches!(slots.admit("d"), Admit::Busy("d")));
        slots.finish_answering();
        assert!(matches!(
            slots.admit("e"),
            Admit::Admitted {
                displaced: None,
                ..
            }
        ));
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_naming_the_limit() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let sender = thread::spawn(move || {
            let _ = client.write_all(&[b'x'; 4096]);
            client
        });
        let err =
            read_line_before(&server, Instant::now() + Duration::from_secs(10), 1000).unwrap_err();
        assert!(matches!(err, ReadError::TooLong), "{err}");
        drop(server);
        drop(sender.join().unwrap());
        assert!(ReadError::TooLong
            .to_string()
            .contains(&MAX_REQUEST_BYTES.to_string()));
    }

    #[test]
    fn a_client_that_sends_part_of_a_line_is_cut_off_at_the_deadline() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"{\"Sta").unwrap();
        let err = read_line_before(&server, Instant::now() + Duration::from_millis(50), 1000)
            .unwrap_err();
        assert!(matches!(err, ReadError::Deadline), "{err}");
    }

    #[test]
    fn a_line_is_read_up_to_its_newline() {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(b"\"Status\"\nmore").unwrap();
        let line = read_request(&server, Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!(line, b"\"Status\"");
    }

    #[test]
    fn an_answer_nobody_reads_is_given_up_at_the_deadline() {
        let (_client, server) = UnixStream::pair().unwrap();
        let big = vec![b'x'; 16 << 20];
        let err =
            write_answer(&server, &big, Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
    }

    #[test]
    fn a_regular_file_is_never_taken_for_a_stale_socket() {
        let path = temp_path("regular");
        fs::write(&path, "keep me").unwrap();
        let err = claim(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("a regular file"), "{text}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_live_socket_is_refused_and_a_stale_one_removed() {
        let path = temp_path("live.sock");
        let _ = fs::remove_file(&path);
        let live = UnixListener::bind(&path).unwrap();
        let err = claim(&path).unwrap_err();
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        assert!(path.exists());
        drop(live);
        claim(&path).unwrap();
        assert!(!path.exists(), "the stale socket is removed");
    }
}
