//! Reading a config file's bytes: regular files only, at most
//! `MAX_FILE_BYTES`, and never waiting. A config path is operator input
//! like the YAML in it; a FIFO or a device named by mistake must be refused
//! at once, not block the daemon (a FIFO's open waits for a writer, past
//! SIGTERM) or fill its memory (`/dev/zero`). It owns the cap and the
//! refusal messages; it never parses what it reads.

use std::fs::{FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a config file's text could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The I/O error is the source, not part of the message, so that a
    /// printer walking the chain says it once.
    #[error("{file}: cannot read")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, a device, a directory: reading it could block or never end.
    #[error("{file}: {what}, not a regular file; a config must be a regular file")]
    NotRegularFile { file: String, what: &'static str },
    #[error("{file}: larger than {}, the most a config file may hold", size(*limit))]
    TooLarge { file: String, limit: usize },
    #[error("{file}: not UTF-8 (byte {offset})")]
    NotUtf8 { file: String, offset: usize },
}

impl ReadError {
    pub fn file(&self) -> &str {
        match self {
            Self::Io { file, .. }
            | Self::NotRegularFile { file, .. }
            | Self::TooLarge { file, .. }
            | Self::NotUtf8 { file, .. } => file,
        }
    }
}

/// `4 MiB` for whole mebibytes, else bytes.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Largest config file Switchyard reads: far above any real configuration,
/// small enough to parse at once. `yardctl config check` sends at most as
/// much over the control socket (`MAX_CANDIDATE_CONFIG_BYTES`, which must
/// stay equal; the daemon asserts it at compile time).
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Reads `path` as UTF-8 text, refusing anything but a regular file of at
/// most `MAX_FILE_BYTES`. Errors name the path as given.
pub fn read_file(path: impl AsRef<Path>) -> Result<String, ReadError> {
    read_capped(path.as_ref(), MAX_FILE_BYTES)
}

fn read_capped(path: &Path, cap: usize) -> Result<String, ReadError> {
    let file = path.display().to_string();
    let io = |source| ReadError::Io {
        file: file.clone(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
    // On a regular file the flag changes nothing.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    // The type of what was opened, not of what the path named a moment
    // before: a rename in between cannot slip a device through.
    let file_type = handle.metadata().map_err(io)?.file_type();
    if let Some(what) = not_regular(file_type) {
        return Err(ReadError::NotRegularFile { file, what });
    }
    let mut bytes = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    handle.take(limit).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > cap {
        return Err(ReadError::TooLarge { file, limit: cap });
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        file,
        offset: e.utf8_error().valid_up_to(),
    })
}

/// What the file is, in an operator's words, if it is not a regular file.
fn not_regular(t: FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of this test's own, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("switchyard-read-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = Scratch::new("fifo");
        let fifo = dir.0.join("config.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Without O_NONBLOCK this open would wait forever: no writer comes.
        let e = read_file(&fifo).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: a FIFO (named pipe), not a regular file; a config must be a regular file",
                fifo.display()
            )
        );
    }

    #[test]
    fn a_character_device_is_refused_before_reading() {
        let e = read_file("/dev/zero").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: a character device, not a regular file; a config must be a regular file"
        );
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = Scratch::new("dir");
        let e = read_file(&dir.0).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(": a directory, not a regular file; a config must be a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read() {
        let dir = Scratch::new("cap");
        let path = dir.0.join("big.yaml");
        std::fs::write(&path, vec![b'#'; 101]).unwrap();
        let e = read_capped(&path, 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: larger than 100 bytes, the most a config file may hold",
                path.display()
            )
        );
        std::fs::write(&path, vec![b'#'; 100]).unwrap();
        assert_eq!(read_capped(&path, 100).unwrap().len(), 100);
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES + 1]).unwrap();
        assert!(read_file(&path)
            .unwrap_err()
            .to_string()
            .ends_with(": larger than 4 MiB, the most a config file may hold"));
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_read() {
        // ConfigMap volumes present each key as a symlink.
        let dir = Scratch::new("link");
        let target = dir.0.join("real.yaml");
        std::fs::write(&target, "# empty\n").unwrap();
        let link = dir.0.join("config.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_file(&link).unwrap(), "# empty\n");
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let dir = Scratch::new("utf8");
        let path = dir.0.join("bad.yaml");
        std::fs::write(&path, b"a: \xff\n").unwrap();
        assert_eq!(
            read_file(&path).unwrap_err().to_string(),
            format!("{}: not UTF-8 (byte 3)", path.display())
        );
    }
}
