//! Errors of the loader. Each variant says which interface, map, key or
//! socket it is about and keeps the underlying aya error as its source.

use std::os::fd::RawFd;

use aya::{
    maps::MapError,
    programs::{xdp::XdpError as AyaXdpError, ProgramError},
    EbpfError,
};
use thiserror::Error;

use crate::{attach::AttachedMode, service::ServiceMatch};

/// An error from loading, attaching or configuring the steering program.
#[derive(Debug, Error)]
pub enum XdpError {
    /// A pin or pin directory in bpffs could not be made, read or removed.
    #[error("{op} {}", path.display())]
    Pin {
        /// What was being done.
        op: &'static str,
        /// The pin or directory.
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The link of an interface is not a bpf_link, so it cannot be pinned
    /// (kernels before 5.9 attach XDP by netlink only).
    #[error("the XDP attachment of {ifname} is no bpf_link and cannot be pinned")]
    PinLink {
        /// The interface.
        ifname: String,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },

    /// The program could not replace the one on a pinned link.
    #[error("taking over the pinned link {}", path.display())]
    TakeOver {
        /// The link's pin.
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The embedded object could not be parsed or its maps created.
    #[error("loading the embedded XDP object")]
    LoadObject(#[source] Box<EbpfError>),

    /// The object lacks a program or map the loader expects.
    #[error("the XDP object has no {kind} named `{name}`")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// Its name in the object.
        name: &'static str,
    },

    /// A map's type or key/value size is not what the loader expects.
    #[error("map `{name}` does not have the expected type or key/value size")]
    MapType {
        /// The map.
        name: &'static str,
        /// What aya found.
        #[source]
        source: Box<MapError>,
    },

    /// The program is not an XDP program, or the kernel refused it.
    #[error("loading program `{name}` into the kernel")]
    LoadProgram {
        /// The program.
        name: &'static str,
        /// Includes the verifier log when the verifier refused it.
        #[source]
        source: Box<ProgramError>,
    },

    /// No interface of that name exists in the calling thread's namespace.
    #[error("no network interface named `{ifname}`")]
    UnknownInterface {
        /// The name asked for.
        ifname: String,
    },

    /// The interface is already attached by this loader.
    #[error("the steering program is already attached to {ifname}")]
    AlreadyAttached {
        /// The interface.
        ifname: String,
    },

    /// Every interface slot is taken.
    #[error("cannot attach to {ifname}: all {max} interface slots are in use")]
    NoFreeSlot {
        /// The interface.
        ifname: String,
        /// Number of slots (`MAX_IFACES`).
        max: u32,
    },

    /// Another XDP program already owns the interface (EBUSY/EEXIST).
    #[error(
        "another XDP program is attached to {ifname}; remove it with \
         `ip link set dev {ifname} xdp off` (if a bpf_link holds it, stop the \
         process that owns the link; `bpftool net show dev {ifname}` lists it)"
    )]
    Busy {
        /// The interface.
        ifname: String,
        /// The kernel's refusal.
        #[source]
        source: Box<ProgramError>,
    },

    /// Attaching failed for another reason.
    #[error("attaching the steering program to {ifname} in {mode} mode")]
    Attach {
        /// The interface.
        ifname: String,
        /// The mode tried.
        mode: AttachedMode,
        /// The kernel's refusal.
        #[source]
        source: Box<ProgramError>,
    },

    /// Detaching failed.
    #[error("detaching the steering program from {ifname}")]
    Detach {
        /// The interface.
        ifname: String,
        /// What went wrong.
        #[source]
        source: Box<ProgramError>,
    },

    /// A service's protocol is neither TCP nor UDP.
    #[error("{map}: {key} is neither TCP (6) nor UDP (17)")]
    InvalidProtocol {
        /// The map it was meant for.
        map: &'static str,
        /// The service (its id aside).
        key: ServiceMatch,
    },

    /// A service has listener id 0, reserved for "none".
    #[error("{map}: {key} has listener id 0, which is reserved for \"none\"")]
    ReservedId {
        /// The map it was meant for.
        map: &'static str,
        /// The service (its id aside).
        key: ServiceMatch,
    },

    /// The same key is given twice with different ids.
    #[error("{map}: {key} is given twice, with listener ids {first} and {second}")]
    ConflictingIds {
        /// The map it was meant for.
        map: &'static str,
        /// The service (its id aside).
        key: ServiceMatch,
        /// The first id.
        first: u32,
        /// The conflicting id.
        second: u32,
    },

    /// More entries than the map can hold.
    #[error("{map}: {count} entries exceed its capacity of {capacity}")]
    TooMany {
        /// The map.
        map: &'static str,
        /// Entries asked for.
        count: usize,
        /// Its max_entries.
        capacity: u32,
    },

    /// Reading a map failed.
    #[error("reading map {map}")]
    MapRead {
        /// The map.
        map: &'static str,
        /// What went wrong.
        #[source]
        source: Box<MapError>,
    },

    /// Writing a map entry failed.
    #[error("{op} of {key} in map {map}")]
    MapUpdate {
        /// The map.
        map: &'static str,
        /// "insert" or "delete".
        op: &'static str,
        /// The entry's key, for people.
        key: String,
        /// What went wrong.
        #[source]
        source: Box<MapError>,
    },

    /// The rx queue is beyond `MAX_QUEUES`.
    #[error("rx queue {queue} is out of range: at most {max} queues per interface")]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
        /// `MAX_QUEUES`.
        max: u32,
    },

    /// Sockets can only be registered on attached interfaces.
    #[error("interface index {ifindex} is not attached; attach it before registering sockets")]
    NotAttached {
        /// The interface index.
        ifindex: u32,
    },

    /// The kernel refused the socket (not an AF_XDP socket, closed fd, ...).
    #[error("registering AF_XDP socket fd {fd} for {ifname} queue {queue}")]
    RegisterSocket {
        /// The interface.
        ifname: String,
        /// The rx queue.
        queue: u32,
        /// The socket.
        fd: RawFd,
        /// What went wrong.
        #[source]
        source: Box<MapError>,
    },

    /// The interface could not be made a redirect target (`tx_ports`).
    #[error("adding {ifname} to the fast path's redirect ports")]
    TxPort {
        /// The interface.
        ifname: String,
        /// What went wrong.
        #[source]
        source: Box<aya::maps::xdp::XdpMapError>,
    },

    /// A fast-path map operation failed.
    #[error("{op} of map {map}")]
    FastPath {
        /// The map.
        map: &'static str,
        /// What was done to it.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },

    /// BPF_PROG_TEST_RUN failed (frames shorter than an Ethernet header are
    /// refused by the kernel with EINVAL).
    #[error("BPF_PROG_TEST_RUN of the {program} program")]
    TestRun {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

impl XdpError {
    /// The errno behind this error, when a syscall failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            XdpError::LoadProgram { source, .. }
            | XdpError::Busy { source, .. }
            | XdpError::Attach { source, .. }
            | XdpError::Detach { source, .. }
            | XdpError::TestRun { source, .. } => program_errno(source),
            XdpError::MapType { source, .. }
            | XdpError::MapRead { source, .. }
            | XdpError::MapUpdate { source, .. }
            | XdpError::RegisterSocket { source, .. } => map_errno(source),
            XdpError::FastPath { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub(crate) fn program_errno(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(err) => err.io_error.raw_os_error(),
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::XdpError(AyaXdpError::NetlinkError(err)) => err.raw_os_error(),
        ProgramError::MapError(err) => map_errno(err),
        _ => None,
    }
}

fn map_errno(error: &MapError) -> Option<i32> {
    match error {
        MapError::SyscallError(err) => err.io_error.raw_os_error(),
        _ => None,
    }
}
