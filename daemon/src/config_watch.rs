//! Notices when the config file has been written completely, through
//! inotify on the directory that holds it, and says when it has been quiet
//! long enough to read.
//!
//! The directory, not the file: editors and config-management tools replace
//! a file by writing a new one and renaming it over the old (and Kubernetes
//! mounts ConfigMaps as a symlink swapped to a new directory), which a watch
//! on the old inode would never see.
//!
//! Only a finished write counts: a close after writing (`IN_CLOSE_WRITE`), a
//! rename into place (`IN_MOVED_TO`), a symlink swap (`..data` in a ConfigMap
//! mount) or a new symlink. A create or a modify alone is a file still being
//! written, and reading it then applies half a config. Even a finished write
//! may be one of several (a tool that closes between parts), so a reload
//! waits until the file has been quiet for `SETTLE`, every event on it (a
//! write still going on too) restarting the wait. Events are only a hint:
//! the reloader reads the file and compares its contents with what is
//! running, so an event for another file in the directory costs a read,
//! never a reload.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// How long the file must be quiet after a finished write before it is
/// read: long enough for a tool's next write to follow, short enough that
/// an operator sees the reload at once.
pub const SETTLE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watching {dir} for config changes")]
    Watch {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub struct ConfigWatch {
    inotify: Inotify,
    dir: PathBuf,
    file_name: Option<OsString>,
    settle: Settle,
}

impl ConfigWatch {
    /// Watches the directory of `path` for anything that can change what
    /// reading `path` returns.
    pub fn new(path: &Path) -> Result<Self, WatchError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let err = |errno: Errno| WatchError::Watch {
            dir: dir.clone(),
            source: io::Error::from(errno),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(err)?;
        inotify
            .add_watch(
                &dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MODIFY,
            )
            .map_err(err)?;
        Ok(Self {
            inotify,
            dir,
            file_name: path.file_name().map(OsString::from),
            settle: Settle::new(SETTLE),
        })
    }

    /// Reads every pending event: one that finishes a write of the file
    /// (re)starts the quiet wait, a write still going on restarts a wait
    /// already started. Never blocks.
    pub fn read_events(&mut self, now: Instant) {
        match self.pending() {
            Seen::Finished => self.settle.event(now),
            Seen::Writing => self.settle.restart(now),
            Seen::Nothing => {}
        }
    }

    /// How long until a finished write has been quiet for `SETTLE`; none
    /// when no write waits.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.settle.wait(now)
    }

    /// True once, when a finished write has been quiet for `SETTLE`.
    pub fn take_settled(&mut self, now: Instant) -> bool {
        self.settle.take_due(now)
    }

    fn pending(&self) -> Seen {
        let is_symlink = |name: &OsStr| {
            std::fs::symlink_metadata(self.dir.join(name))
                .is_ok_and(|meta| meta.file_type().is_symlink())
        };
        let mut seen = Seen::Nothing;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return seen,
                Ok(events) => {
                    for event in &events {
                        let what = classify(
                            event.mask,
                            event.name.as_deref(),
                            self.file_name.as_deref(),
                            is_symlink,
                        );
                        seen = seen.max(what);
                    }
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: drained. Anything else: inotify is broken, and
                // SIGHUP still works; say "maybe" once rather than spin.
                Err(Errno::EAGAIN) => return seen,
                Err(err) => {
                    log::warn!("config watch: {err}");
                    return Seen::Finished;
                }
            }
        }
    }
}

/// What the events read say of the config file, the strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Nothing,
    /// Created or written, not yet closed: a write goes on.
    Writing,
    /// Completely written (or the queue overflowed, and it may have been).
    Finished,
}

/// What an event in the watched directory says of the config file (or
/// what it points through).
fn classify(
    mask: AddWatchFlags,
    name: Option<&OsStr>,
    file_name: Option<&OsStr>,
    is_symlink: impl Fn(&OsStr) -> bool,
) -> Seen {
    let Some(name) = name else {
        // The queue overflowed (IN_Q_OVERFLOW): anything may have happened.
        return Seen::Finished;
    };
    let finished = mask.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO);
    if Some(name) == file_name {
        // A symlink is whole the moment it is created.
        if finished || (mask.contains(AddWatchFlags::IN_CREATE) && is_symlink(name)) {
            return Seen::Finished;
        }
        return Seen::Writing;
    }
    // A ConfigMap mount swaps `..data` to a new directory; the file, a
    // symlink through it, changes without being named.
    if name.as_encoded_bytes().starts_with(b"..") && mask.contains(AddWatchFlags::IN_MOVED_TO) {
        return Seen::Finished;
    }
    Seen::Nothing
}

/// The quiet wait: due `quiet` after the last event.
#[derive(Debug)]
pub struct Settle {
    quiet: Duration,
    due: Option<Instant>,
}

impl Settle {
    pub fn new(quiet: Duration) -> Self {
        Self { quiet, due: None }
    }

    pub fn event(&mut self, now: Instant) {
        self.due = Some(now + self.quiet);
    }

    /// Restarts a wait already started; starts none.
    pub fn restart(&mut self, now: Instant) {
        if self.due.is_some() {
            self.event(now);
        }
    }

    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.due.map(|due| due.saturating_duration_since(now))
    }

    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.due {
            Some(due) if now >= due => {
                self.due = None;
                true
            }
            _ => false,
        }
    }
}

impl AsFd for ConfigWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swy-watch-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// inotify events are queued by the time the writing syscall returns,
    /// but poll for them with a deadline rather than rely on it.
    fn finished_within(watch: &ConfigWatch, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if watch.pending() == Seen::Finished {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn finished_writes_renames_and_symlink_swaps_are_seen_other_files_are_not() {
        let dir = temp_dir("events");
        let path = dir.join("config.yaml");
        fs::write(&path, "a").unwrap();
        let watch = ConfigWatch::new(&path).unwrap();
        assert_eq!(watch.pending(), Seen::Nothing, "nothing happened yet");

        fs::write(dir.join("other.yaml"), "x").unwrap();
        assert!(!finished_within(&watch, Duration::from_millis(50)));

        fs::write(&path, "b").unwrap();
        assert!(
            finished_within(&watch, Duration::from_secs(2)),
            "in-place write"
        );

        let tmp = dir.join(".config.yaml.tmp");
        fs::write(&tmp, "c").unwrap();
        assert!(!finished_within(&watch, Duration::from_millis(50)));
        fs::rename(&tmp, &path).unwrap();
        assert!(
            finished_within(&watch, Duration::from_secs(2)),
            "rename over"
        );

        std::os::unix::fs::symlink("somewhere", dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert!(
            finished_within(&watch, Duration::from_secs(2)),
            "symlink swap"
        );

        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("other.yaml", &path).unwrap();
        assert!(
            finished_within(&watch, Duration::from_secs(2)),
            "a new symlink"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_created_and_still_being_written_is_not_a_finished_write() {
        let dir = temp_dir("partial");
        let path = dir.join("config.yaml");
        fs::write(&path, "a").unwrap();
        let watch = ConfigWatch::new(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let mut file = fs::File::create(&path).unwrap();
        file.write_all(b"first half").unwrap();
        assert!(
            !finished_within(&watch, Duration::from_millis(50)),
            "created, written, not closed"
        );
        drop(file);
        assert!(finished_within(&watch, Duration::from_secs(2)), "closed");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_wait_restarts_on_every_event_and_ends_once() {
        let mut settle = Settle::new(SETTLE);
        let t0 = Instant::now();
        assert_eq!(settle.wait(t0), None);
        assert!(!settle.take_due(t0 + SETTLE * 10), "nothing to wait for");
        settle.event(t0);
        let t1 = t0 + SETTLE / 2;
        assert!(!settle.take_due(t1));
        settle.event(t1);
        assert_eq!(settle.wait(t1), Some(SETTLE));
        assert!(
            !settle.take_due(t0 + SETTLE),
            "restarted by the second event"
        );
        assert!(settle.take_due(t1 + SETTLE));
        assert!(!settle.take_due(t1 + SETTLE * 2), "due once");
        assert_eq!(settle.wait(t1 + SETTLE * 2), None);
        settle.restart(t1 + SETTLE * 2);
        assert_eq!(
            settle.wait(t1 + SETTLE * 2),
            None,
            "a write alone starts no wait"
        );
        settle.event(t1 + SETTLE * 2);
        settle.restart(t1 + SETTLE * 3);
        assert!(!settle.take_due(t1 + SETTLE * 3), "a write goes on");
        assert!(settle.take_due(t1 + SETTLE * 4));
    }
}
