//! The few `bpf(2)` map commands the fast path needs and aya 0.14 does not
//! offer (and a plain map creation, for tests): batched update and delete (one syscall for a worker's whole batch
//! of decisions), batched lookup (one syscall per thousands of entries when
//! reading the cache), and plain element calls on a shared fd without
//! aya's `&mut` map handles, so several threads can use one map. All of this
//! module's `unsafe` is here; nothing else in the crate calls `bpf(2)` by
//! hand.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

// Commands, from include/uapi/linux/bpf.h (enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `BPF_ANY` for updates: create or replace.
pub(crate) const BPF_ANY: u64 = 0;

/// `BPF_MAP_TYPE_HASH` (enum bpf_map_type).
pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;

/// The head of the `bpf_attr` member for `BPF_MAP_CREATE`; the kernel
/// zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// The `bpf_attr` member for `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `bpf_attr` member for `BPF_MAP_*_BATCH`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    bpf_fd(cmd, attr).map(drop)
}

/// `bpf(cmd, attr)`, returning what the call returned (an fd for
/// `BPF_MAP_CREATE`).
fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of bpf_attr for
    // `cmd` and its size is passed along; every pointer inside it was set by
    // the callers below to buffers that outlive the call and are as large as
    // the map's key and value sizes times the count they pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A new map of `map_type`, owned by the returned fd alone.
pub(crate) fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = CreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        ..CreateAttr::default()
    };
    let fd = bpf_fd(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: a successful BPF_MAP_CREATE returns a new fd that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Looks `key` up; `Ok(false)` when absent. `value` must be the map's value
/// size (times the possible CPUs, rounded to 8 bytes each, for per-CPU maps).
pub(crate) fn lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(()) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

pub(crate) fn update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// Writes `count` entries at once (Linux 5.6). `keys` and `values` hold
/// `count` packed keys and values. Returns how many were written before an
/// error, with the error.
pub(crate) fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> (u32, io::Result<()>) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: BPF_ANY,
        ..BatchAttr::default()
    };
    let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
    (attr.count, result)
}

/// Deletes `count` packed keys at once. A key that is absent stops the
/// batch with ENOENT; the returned count says how many went before it.
pub(crate) fn delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: u32) -> (u32, io::Result<()>) {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
    (attr.count, result)
}

/// One step of a full-map read: up to `count` entries after the position
/// in `cursor` (`None` to start). Returns the entries read and whether the
/// map is exhausted. `keys`/`values` must hold `count` of each; `cursor`
/// holds the kernel's opaque position (a `u32` for hash and array maps).
pub(crate) fn lookup_batch(
    map: BorrowedFd<'_>,
    cursor: &mut [u8],
    started: bool,
    keys: &mut [u8],
    values: &mut [u8],
    count: u32,
) -> io::Result<(u32, bool)> {
    // in_batch and out_batch may share a buffer: the kernel reads the
    // former before it writes the latter (kernel/bpf/hashtab.c).
    let mut attr = BatchAttr {
        in_batch: if started { cursor.as_ptr() as u64 } else { 0 },
        out_batch: cursor.as_mut_ptr() as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(()) => Ok((attr.count, false)),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count, true)),
        Err(err) => Err(err),
    }
}
