//! Notices when the config file may have changed, through inotify on the
//! directory that holds it.
//!
//! The directory, not the file: editors and config-management tools replace
//! a file by writing a new one and renaming it over the old (and Kubernetes
//! mounts ConfigMaps as a symlink swapped to a new directory), which a watch
//! on the old inode would never see. Events are only a hint: the reloader
//! reads the file and compares its contents with what is running, so an
//! event for another file in the directory costs a read, never a reload.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

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
    file_name: Option<OsString>,
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
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_ATTRIB,
            )
            .map_err(err)?;
        Ok(Self {
            inotify,
            file_name: path.file_name().map(OsString::from),
        })
    }

    /// Reads every pending event; true when one of them may have changed
    /// the file. Never blocks.
    pub fn changed(&self) -> bool {
        let mut changed = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return changed,
                Ok(events) => {
                    changed |= events.iter().any(|event| match &event.name {
                        Some(name) => {
                            // A symlink swap (`..data` in a ConfigMap mount)
                            // changes the file without naming it.
                            Some(name) == self.file_name.as_ref()
                                || name.as_encoded_bytes().starts_with(b"..")
                        }
                        None => true,
                    })
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: drained. Anything else: inotify is broken, and
                // SIGHUP still works; say "maybe" once rather than spin.
                Err(Errno::EAGAIN) => return changed,
                Err(err) => {
                    log::warn!("config watch: {err}");
                    return changed;
                }
            }
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
    use std::time::{Duration, Instant};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swy-watch-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// inotify events are queued by the time the writing syscall returns,
    /// but poll for them with a deadline rather than rely on it.
    fn changed_within(watch: &ConfigWatch, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if watch.changed() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn writes_renames_and_symlink_swaps_are_seen_other_files_are_not() {
        let dir = temp_dir("events");
        let path = dir.join("config.yaml");
        fs::write(&path, "a").unwrap();
        let watch = ConfigWatch::new(&path).unwrap();
        assert!(!watch.changed(), "nothing happened yet");

        fs::write(dir.join("other.yaml"), "x").unwrap();
        assert!(!changed_within(&watch, Duration::from_millis(50)));

        fs::write(&path, "b").unwrap();
        assert!(
            changed_within(&watch, Duration::from_secs(2)),
            "in-place write"
        );

        let tmp = dir.join(".config.yaml.tmp");
        fs::write(&tmp, "c").unwrap();
        assert!(!changed_within(&watch, Duration::from_millis(50)));
        fs::rename(&tmp, &path).unwrap();
        assert!(
            changed_within(&watch, Duration::from_secs(2)),
            "rename over"
        );

        std::os::unix::fs::symlink("somewhere", dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert!(
            changed_within(&watch, Duration::from_secs(2)),
            "symlink swap"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
