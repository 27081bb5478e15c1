//! The one question asked of `/dev/kvm` directly: its API version, the
//! cheap check before a probe guest is booted on it. All of the vm
//! module's `unsafe` is here.

use std::fs::File;
use std::os::fd::AsRawFd;

/// The only KVM API version there has ever been.
pub const API_VERSION: libc::c_int = 12;
/// `KVM_GET_API_VERSION`, `_IO(0xAE, 0)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// What `/dev/kvm` (opened as `kvm`) answers `KVM_GET_API_VERSION`; -1
/// when the ioctl fails.
pub fn api_version(kvm: &File) -> libc::c_int {
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an
    // int; `kvm` keeps the fd open for the duration of the call.
    unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) }
}
