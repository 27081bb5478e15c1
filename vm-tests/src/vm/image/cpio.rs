//! The initramfs archive: a newc ("070701") cpio, as the kernel unpacks it
//! (Documentation/driver-api/early-userspace/buffer-format.rst). It owns the
//! byte layout and the determinism rules (sorted paths, parents first, uid,
//! gid and mtime 0, sequential inodes, fixed modes); it never reads the
//! host's ownership, times or permissions.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Permission bits of directories and of anything the guest executes.
pub const EXECUTABLE: u32 = 0o755;
/// Permission bits of plain data files.
pub const DATA: u32 = 0o644;

/// Where an entry's bytes come from. Files are read only when the archive
/// is written, so an archive of a 90 MB binary costs nothing until then.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Dir,
    File { perm: u32, from: PathBuf },
    Bytes { perm: u32, bytes: Vec<u8> },
    Symlink { target: String },
}

/// The set of entries of an archive, keyed by path without the leading `/`.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Source>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// An empty directory (and its parents).
    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.insert(path, Source::Dir)
    }

    /// A regular file whose bytes are read from `from` when writing.
    pub fn file(&mut self, path: &str, perm: u32, from: PathBuf) -> Result<()> {
        self.insert(path, Source::File { perm, from })
    }

    /// A regular file with the given contents.
    pub fn bytes(&mut self, path: &str, perm: u32, bytes: Vec<u8>) -> Result<()> {
        self.insert(path, Source::Bytes { perm, bytes })
    }

    /// A symbolic link to `target`, kept as the link itself.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert(
            path,
            Source::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Whether the archive has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    fn insert(&mut self, path: &str, source: Source) -> Result<()> {
        let path = normalize(path)?;
        let mut parent = path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            match self.entries.get(up) {
                None => {
                    self.entries.insert(up.to_owned(), Source::Dir);
                }
                Some(Source::Dir) => {}
                Some(_) => bail!("initramfs: /{path} needs /{up} to be a directory, it is not"),
            }
            parent = up;
        }
        match self.entries.get(&path) {
            None => {
                self.entries.insert(path, source);
            }
            Some(existing) if *existing == source => {}
            Some(Source::Dir) if source == Source::Dir => {}
            Some(_) => bail!("initramfs: two different entries want /{path}"),
        }
        Ok(())
    }

    /// Writes the archive, trailer included. The same entries always give
    /// the same bytes.
    pub fn write_to(&self, out: &mut impl Write) -> Result<()> {
        let mut ino: u32 = 0;
        for (path, source) in &self.entries {
            ino = ino.checked_add(1).context("initramfs: too many entries")?;
            let (mode, nlink, data) = match source {
                // A directory's links: its own name and its ".".
                Source::Dir => (S_IFDIR | EXECUTABLE, 2, Vec::new()),
                Source::File { perm, from } => {
                    let bytes = std::fs::read(from)
                        .with_context(|| format!("reading {} for /{path}", from.display()))?;
                    (S_IFREG | perm, 1, bytes)
                }
                Source::Bytes { perm, bytes } => (S_IFREG | perm, 1, bytes.clone()),
                Source::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes().to_vec()),
            };
            write_entry(out, ino, mode, nlink, path, &data)?;
        }
        write_entry(out, 0, 0, 1, TRAILER, &[])
    }
}

/// `/a/b/` and `a/b` are the same entry; `.`, `..` and empty components
/// would let two spellings of one path into the archive, so they are
/// refused.
fn normalize(path: &str) -> Result<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || trimmed.contains('\0')
    {
        bail!("initramfs: {path:?} is not a plain absolute path");
    }
    Ok(trimmed.to_owned())
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let size = u32::try_from(data.len())
        .with_context(|| format!("initramfs: /{name} is over 4 GiB, newc cannot hold it"))?;
    let namesize = u32::try_from(name.len() + 1).context("initramfs: name too long")?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check.
    for field in [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0] {
        header.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.write_all(&header)?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(HEADER_LEN + name.len() + 1)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])?;
    Ok(())
}

/// Bytes that bring `len` up to a multiple of four.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// Without the leading `/`, as stored.
    pub path: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub data: Vec<u8>,
}

impl ReadEntry {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & 0o170000 == S_IFLNK
    }

    /// The permission bits.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// Parses a newc archive up to its trailer; for tests and for looking into
/// a built image. Bad input is an error, never a panic.
pub fn read(bytes: &[u8]) -> Result<Vec<ReadEntry>> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let header = slice(bytes, at, HEADER_LEN)
            .with_context(|| format!("cpio: truncated header at byte {at}"))?;
        if &header[..6] != MAGIC {
            bail!("cpio: no newc magic at byte {at}");
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let hex = &header[6 + 8 * i..14 + 8 * i];
            let text = std::str::from_utf8(hex).ok();
            *field = text
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .with_context(|| {
                    format!("cpio: field {i} of the header at byte {at} is not hex")
                })?;
        }
        let [ino, mode, uid, gid, nlink, mtime, size, _, _, _, _, namesize, _] = fields;
        let name_at = at + HEADER_LEN;
        let name = slice(bytes, name_at, namesize as usize)
            .with_context(|| format!("cpio: truncated name at byte {name_at}"))?;
        let Some((0, name)) = name.split_last().map(|(last, rest)| (*last, rest)) else {
            bail!("cpio: the name at byte {name_at} does not end in NUL");
        };
        let path = String::from_utf8(name.to_vec())
            .with_context(|| format!("cpio: the name at byte {name_at} is not UTF-8"))?;
        let data_at = name_at + namesize as usize;
        let data_at = data_at + pad4(data_at);
        let data = slice(bytes, data_at, size as usize)
            .with_context(|| format!("cpio: truncated data of {path:?} at byte {data_at}"))?;
        at = data_at + size as usize;
        at += pad4(at);
        if path == TRAILER {
            return Ok(entries);
        }
        entries.push(ReadEntry {
            path,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            data: data.to_vec(),
        });
    }
}

fn slice(bytes: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(archive: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        archive.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn a_file_entry_has_the_newc_header_layout_and_four_byte_padding() {
        let mut archive = Archive::new();
        archive.bytes("init", EXECUTABLE, b"#!x".to_vec()).unwrap();
        let out = written(&archive);
        let expected_header = concat!(
            "070701", "00000001", "000081ed", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000",
        );
        assert_eq!(&out[..110], expected_header.as_bytes());
        // 110 + "init\0" = 115, padded to 116; then 3 data bytes padded to 4.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..120], b"#!x\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn the_archive_ends_with_a_trailer_of_inode_zero() {
        let out = written(&Archive::new());
        assert_eq!(&out[..6], MAGIC);
        assert_eq!(&out[6..14], b"00000000");
        assert_eq!(&out[110..121], b"TRAILER!!!\0");
        assert_eq!(out.len(), 124);
    }

    #[test]
    fn entries_are_sorted_with_parents_first_and_sequential_inodes() {
        let mut archive = Archive::new();
        archive.bytes("/usr/bin/b", EXECUTABLE, vec![1]).unwrap();
        archive.symlink("/lib64/ld.so", "/lib/ld.so").unwrap();
        archive
            .bytes("/etc/yard/modules", DATA, b"x\n".to_vec())
            .unwrap();
        let entries = read(&written(&archive)).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/yard",
                "etc/yard/modules",
                "lib64",
                "lib64/ld.so",
                "usr",
                "usr/bin",
                "usr/bin/b"
            ]
        );
        let inodes: Vec<u32> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inodes, (1..=8).collect::<Vec<u32>>());
        let link = &entries[4];
        assert!(link.is_symlink());
        assert_eq!(link.data, b"/lib/ld.so");
        assert!(entries[0].is_dir() && entries[0].perm() == 0o755);
        assert!(entries[2].is_file() && entries[2].perm() == 0o644);
        assert!(entries
            .iter()
            .all(|e| e.uid == 0 && e.gid == 0 && e.mtime == 0));
    }

    #[test]
    fn a_path_cannot_hold_two_different_entries() {
        let mut archive = Archive::new();
        archive.bytes("usr/bin/x", EXECUTABLE, vec![1]).unwrap();
        assert!(archive.bytes("usr/bin/x", EXECUTABLE, vec![2]).is_err());
        assert!(archive.bytes("usr/bin/x/y", DATA, vec![2]).is_err());
        assert!(archive.dir("usr/bin").is_ok());
    }

    #[test]
    fn dot_components_are_refused() {
        let mut archive = Archive::new();
        assert!(archive.dir("/a/../b").is_err());
        assert!(archive.dir("/").is_err());
    }

    #[test]
    fn truncated_or_garbled_input_is_an_error() {
        let mut archive = Archive::new();
        archive.bytes("f", DATA, vec![7; 10]).unwrap();
        let out = written(&archive);
        for len in [0, 5, 109, 115, 120] {
            assert!(read(&out[..len]).is_err(), "length {len}");
        }
        let mut bad = out.clone();
        bad[10] = b'z';
        assert!(read(&bad).is_err());
    }
}
