//! A cluster as the config source (`switchyard run --cluster`): the
//! `ApplyCluster` requests `switchyard-kube` sends over the control socket,
//! handed to the config loader one at a time and answered with what became
//! of them, and the cache of the last applied objects that lets a restarted
//! daemon serve them before the sidecar is back.
//!
//! The objects are compiled and applied exactly as a config file is (the
//! reloader does both); this module only carries them there and back, and
//! must never resolve anything itself.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};
use switchyard_proto::{ClusterApplyReport, ClusterConfig, CLUSTER_APPLY_DEADLINE};

/// One `ApplyCluster` request on its way to the loader, and where its
/// answer goes.
pub struct ClusterApply {
    pub config: ClusterConfig,
    /// When the control socket had read it: the answer is due
    /// `CLUSTER_APPLY_DEADLINE` after.
    pub received: Instant,
    pub reply: Sender<ClusterApplyReport>,
}

/// The control socket's side of the way to the loader.
pub struct ClusterInbox {
    requests: Sender<ClusterApply>,
    /// One update at a time from the socket to its answer: each is
    /// compared with the config the one before it left running, and at
    /// most one set of objects (up to 16 MiB) waits in the loader. Holding
    /// the turn is having sent into this channel of one; waiting for it
    /// keeps to the request's deadline, as a lock could not.
    turn: (Sender<()>, Receiver<()>),
}

/// Gives the turn back however the request ends.
struct Turn<'a>(&'a Receiver<()>);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

impl ClusterInbox {
    /// The inbox, and the loader's end of it.
    pub fn new() -> (Self, Receiver<ClusterApply>) {
        let (requests, incoming) = channel::unbounded();
        (
            Self {
                requests,
                turn: channel::bounded(1),
            },
            incoming,
        )
    }

    /// Hands `config` to the loader and waits for its outcome, until
    /// `CLUSTER_APPLY_DEADLINE` after `received`.
    pub fn apply(
        &self,
        config: ClusterConfig,
        received: Instant,
    ) -> Result<ClusterApplyReport, String> {
        if let Some(why) = config.too_large() {
            return Err(why);
        }
        let deadline = received + CLUSTER_APPLY_DEADLINE;
        let name = config.name();
        self.turn.0.send_deadline((), deadline).map_err(|_| {
            format!(
                "{name}: another update was still being applied {}s (CLUSTER_APPLY_DEADLINE) \
                 after this one arrived; send it again",
                CLUSTER_APPLY_DEADLINE.as_secs()
            )
        })?;
        let _turn = Turn(&self.turn.1);
        let (reply, answer) = channel::bounded(1);
        self.requests
            .send(ClusterApply {
                config,
                received,
                reply,
            })
            .map_err(|_| "the config loader has stopped".to_owned())?;
        answer
            .recv_deadline(deadline)
            .map_err(|err| match err {
                channel::RecvTimeoutError::Timeout => format!(
                    "{name}: not applied within {}s (CLUSTER_APPLY_DEADLINE); it may still be: \
                     `yardctl config status` says what runs, and the next update is compared with it",
                    CLUSTER_APPLY_DEADLINE.as_secs()
                ),
                channel::RecvTimeoutError::Disconnected => {
                    format!("{name}: the config loader dropped the update without an answer")
                }
            })
    }
}

/// The first line of a cluster cache file; the source follows it.
const CACHE_HEADER: &str = "# switchyard cluster cache; source: ";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("reading the cluster cache {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the cluster cache {path} is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("the cluster cache {path} is larger than a cluster update may be ({limit} bytes)")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("{path} is not a cluster cache (its first line is not `{CACHE_HEADER}SOURCE`)")]
    NoHeader { path: PathBuf },
    #[error("writing the cluster cache {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the cluster config cached at `path`; none when there is no file
/// (a first start).
pub fn read_cache(path: &Path) -> Result<Option<ClusterConfig>, CacheError> {
    let read_err = |source| CacheError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_err(err)),
    };
    if !meta.is_file() {
        return Err(CacheError::NotAFile {
            path: path.to_owned(),
            what: if meta.is_dir() {
                "a directory"
            } else {
                "something else"
            },
        });
    }
    let limit = switchyard_proto::MAX_CLUSTER_CONFIG_BYTES + CACHE_HEADER.len() + 4096;
    let mut text = String::new();
    File::open(path)
        .and_then(|file| file.take(limit as u64 + 1).read_to_string(&mut text))
        .map_err(read_err)?;
    if text.len() > limit {
        return Err(CacheError::TooLarge {
            path: path.to_owned(),
            limit: switchyard_proto::MAX_CLUSTER_CONFIG_BYTES,
        });
    }
    parse_cache(&text).map(Some).ok_or(CacheError::NoHeader {
        path: path.to_owned(),
    })
}

/// The header line names the source; the rest is the contents byte for
/// byte, so their SHA-256 is the one the sidecar's next update is
/// compared with.
fn parse_cache(text: &str) -> Option<ClusterConfig> {
    let rest = text.strip_prefix(CACHE_HEADER)?;
    let (source, contents) = rest.split_once('\n')?;
    Some(ClusterConfig {
        source: source.to_owned(),
        contents: contents.to_owned(),
    })
}

/// The cache file's text for `config`: a header line (a YAML comment)
/// naming the source, then the contents.
pub fn cache_text(config: &ClusterConfig) -> String {
    let source = switchyard_proto::cluster_name(&config.source);
    let mut text =
        String::with_capacity(CACHE_HEADER.len() + source.len() + 1 + config.contents.len());
    text.push_str(CACHE_HEADER);
    text.push_str(&source);
    text.push('\n');
    text.push_str(&config.contents);
    text
}

/// Replaces the cache at `path` with `config`, whole or not at all: written
/// beside it, flushed to disk, then renamed over it, so a crash or a full
/// disk leaves the previous cache, never half of this one.
pub fn write_cache(path: &Path, config: &ClusterConfig) -> Result<(), CacheError> {
    let write_err = |source| CacheError::Write {
        path: path.to_owned(),
        source,
    };
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = PathBuf::from(aside);
    let written = File::create(&aside).and_then(|mut file| {
        file.write_all(cache_text(config).as_bytes())?;
        file.sync_all()
    });
    if let Err(err) = written.and_then(|()| fs::rename(&aside, path)) {
        let _ = fs::remove_file(&aside);
        return Err(write_err(err));
    }
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::{ClusterApplyOutcome, MAX_CLUSTER_CONFIG_BYTES};

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("swy-cluster-{}-{name}", std::process::id()))
    }

    fn config(contents: &str) -> ClusterConfig {
        ClusterConfig {
            source: "https://10.96.0.1:443".into(),
            contents: contents.into(),
        }
    }

    #[test]
    fn the_cache_gives_back_the_contents_byte_for_byte_and_the_source() {
        let path = temp_path("roundtrip.yaml");
        let contents = "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\"}\n---\nkind: x\n";
        write_cache(&path, &config(contents)).unwrap();
        let back = read_cache(&path).unwrap().expect("cached");
        assert_eq!(back.contents, contents);
        assert_eq!(back.source, "cluster https://10.96.0.1:443");
        assert_eq!(back.name(), "cluster https://10.96.0.1:443");
        assert!(!Path::new(&format!("{}.new", path.display())).exists());
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn no_cache_file_is_a_first_start_and_a_foreign_file_is_refused() {
        let path = temp_path("missing.yaml");
        let _ = fs::remove_file(&path);
        assert!(read_cache(&path).unwrap().is_none());
        fs::write(&path, "apiVersion: v1\nkind: Namespace\n").unwrap();
        let err = read_cache(&path).unwrap_err();
        assert!(matches!(err, CacheError::NoHeader { .. }), "{err}");
        fs::remove_file(&path).unwrap();
        let dir = temp_path("dir");
        fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            read_cache(&dir).unwrap_err(),
            CacheError::NotAFile { .. }
        ));
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_previous_cache() {
        let dir = temp_path("readonly");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache.yaml");
        write_cache(&path, &config("first\n")).unwrap();
        // A directory where the aside file goes: the write cannot happen.
        fs::create_dir(dir.join("cache.yaml.new")).unwrap();
        assert!(write_cache(&path, &config("second\n")).is_err());
        assert_eq!(read_cache(&path).unwrap().unwrap().contents, "first\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contents_over_the_limit_are_refused_naming_it_before_reaching_the_loader() {
        let (inbox, incoming) = ClusterInbox::new();
        let big = config(&"#".repeat(MAX_CLUSTER_CONFIG_BYTES + 1));
        let err = inbox.apply(big, Instant::now()).unwrap_err();
        assert!(err.contains(&MAX_CLUSTER_CONFIG_BYTES.to_string()), "{err}");
        assert!(err.contains("cluster https://10.96.0.1:443"), "{err}");
        assert!(incoming.try_recv().is_err(), "never sent on");
    }

    #[test]
    fn an_update_waits_for_the_one_before_it_only_until_its_deadline() {
        let (inbox, incoming) = ClusterInbox::new();
        let inbox = std::sync::Arc::new(inbox);
        let first = {
            let inbox = inbox.clone();
            std::thread::spawn(move || inbox.apply(config("first"), Instant::now()))
        };
        // The first holds the turn while the loader has it.
        let held = incoming.recv().unwrap();
        let late = Instant::now() - CLUSTER_APPLY_DEADLINE;
        let err = inbox.apply(config("second"), late).unwrap_err();
        assert!(err.contains("another update"), "{err}");
        assert!(
            incoming.try_recv().is_err(),
            "the second never reached the loader"
        );
        let _ = held.reply.send(ClusterApplyReport {
            outcome: ClusterApplyOutcome::Applied,
            generation: 2,
            error: None,
            diagnostics: Vec::new(),
            statuses: Vec::new(),
        });
        assert_eq!(
            first.join().unwrap().unwrap().outcome,
            ClusterApplyOutcome::Applied
        );
        // The turn is free again.
        let third = {
            let inbox = inbox.clone();
            std::thread::spawn(move || inbox.apply(config("third"), Instant::now()))
        };
        drop(incoming.recv().unwrap());
        assert!(third.join().unwrap().is_err(), "dropped without an answer");
    }

    #[test]
    fn the_loader_answer_is_handed_back_and_a_vanished_loader_is_an_error() {
        let (inbox, incoming) = ClusterInbox::new();
        let loader = std::thread::spawn(move || {
            let request = incoming.recv().unwrap();
            let _ = request.reply.send(ClusterApplyReport {
                outcome: ClusterApplyOutcome::Unchanged,
                generation: 4,
                error: None,
                diagnostics: Vec::new(),
                statuses: Vec::new(),
            });
            // Dropped without an answer: the second request.
            drop(incoming.recv().unwrap());
        });
        let report = inbox.apply(config("a"), Instant::now()).unwrap();
        assert_eq!(
            (report.outcome, report.generation),
            (ClusterApplyOutcome::Unchanged, 4)
        );
        let err = inbox.apply(config("a"), Instant::now()).unwrap_err();
        assert!(err.contains("without an answer"), "{err}");
        loader.join().unwrap();
    }
}
