//! `Steering` owns one loaded instance of the steering program: its maps,
//! its attachments (one interface slot each) and the AF_XDP sockets
//! registered for them. It never reads or writes packets; workers do.

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, BorrowedFd, RawFd},
};

use aya::{
    maps::{xdp::DevMap, Array, HashMap, IterableMap, MapData, PerCpuArray, XskMap},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, TestRun, TestRunOptions, Xdp,
    },
    Ebpf, EbpfLoader,
};

use crate::{
    attach::{AttachMode, AttachedMode},
    consts::{MAX_BACKENDS, MAX_CACHED_FLOWS, MAX_IFACES, MAX_LOCAL_ADDRS, MAX_QUEUES, MAX_VIPS},
    counters::{SteerCounter, SteerCounters},
    error::{program_errno, XdpError},
    fast_path::{
        FastCounters, FastPathMaps, FlowAction, FlowAction6, FlowCacheKey, FlowCacheKey6,
        FAST_EPOCHS, FAST_STATE, FAST_STATS, FLOW_CACHE, FLOW_CACHE6,
    },
    maps::{service_entries, sync_map, AddressSets},
    pins::{self, PinDir},
    policy::{
        ListenerRanges, PolicyMaps, POLICY_STATE, SOURCE_DENIED, SOURCE_DENIED6, SOURCE_RANGES,
        SOURCE_RANGES6,
    },
    service::{ServiceKey, ServiceKey6, ServiceMatch},
};

/// The object built from src/bpf/switchyard.c by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switchyard.o"));

const PROGRAM: &str = "switchyard_steer";
const VIP_MAP: &str = "vip_map";
const VIP_MAP6: &str = "vip_map6";
const BACKEND_MAP: &str = "backend_map";
const BACKEND_MAP6: &str = "backend_map6";
const LOCAL_ADDRS: &str = "local_addrs";
const LOCAL_ADDRS6: &str = "local_addrs6";
const VIP_ADDRS: &str = "vip_addrs";
const VIP_ADDRS6: &str = "vip_addrs6";
const BACKEND_ADDRS: &str = "backend_addrs";
const BACKEND_ADDRS6: &str = "backend_addrs6";
const IF_SLOTS: &str = "if_slots";
const XSKS_MAP: &str = "xsks_map";
const COUNTERS: &str = "counters";
const TX_PORTS: &str = "tx_ports";

/// Every map of the object, pinned by name when the loader pins.
const MAP_NAMES: [&str; 24] = [
    VIP_MAP,
    VIP_MAP6,
    BACKEND_MAP,
    BACKEND_MAP6,
    LOCAL_ADDRS,
    LOCAL_ADDRS6,
    VIP_ADDRS,
    VIP_ADDRS6,
    BACKEND_ADDRS,
    BACKEND_ADDRS6,
    IF_SLOTS,
    XSKS_MAP,
    COUNTERS,
    TX_PORTS,
    FLOW_CACHE,
    FLOW_CACHE6,
    FAST_STATE,
    FAST_STATS,
    FAST_EPOCHS,
    SOURCE_RANGES,
    SOURCE_RANGES6,
    SOURCE_DENIED,
    SOURCE_DENIED6,
    POLICY_STATE,
];

/// What a pinned load found and took over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Takeover {
    /// The maps of a running instance of this layout were reused (the
    /// flow cache above all); false: fresh maps.
    pub maps_reused: bool,
    /// Interfaces whose pinned link had another program, replaced
    /// atomically by this one.
    pub links_replaced: Vec<String>,
    /// Map directories of other layouts or capacities, removed once every
    /// link runs this program.
    pub stale_maps_removed: Vec<std::path::PathBuf>,
}

/// What can be chosen before the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Entries of each of the fast path's flow caches, IPv4 and IPv6 (their
    /// memory is allocated at load: about 150 and 190 bytes an entry).
    pub flow_cache_capacity: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            flow_cache_capacity: MAX_CACHED_FLOWS,
        }
    }
}

// Registered queues of an interface are a bitmask.
const _: () = assert!(MAX_QUEUES <= u64::BITS);

/// An interface the steering program is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedInterface {
    /// Interface name, as given to [`Steering::attach`].
    pub name: String,
    /// Interface index in the namespace it was attached in.
    pub ifindex: u32,
    /// Its slot: its sockets live at `slot * MAX_QUEUES + queue`.
    pub slot: u32,
    /// The mode the program runs in.
    pub mode: AttachedMode,
}

/// How an interface runs the program.
#[derive(Debug)]
enum LinkHandle {
    /// A link of this process: it ends with the process.
    Owned(XdpLinkId),
    /// A link pinned in bpffs: it outlives the process, until its pin is
    /// removed.
    Pinned(PinnedLink),
    /// A pinned link still running the previous program, on maps of
    /// another layout: [`Steering::finish_takeover`] replaces it, once this
    /// instance's sockets are in its own maps.
    Deferred {
        path: std::path::PathBuf,
        mode: AttachMode,
    },
}

#[derive(Debug)]
struct Attachment {
    interface: AttachedInterface,
    link: LinkHandle,
    /// Bit q set: a socket is registered for rx queue q.
    sockets: u64,
}

/// The receive context a test frame claims to arrive on. `ifindex` must name
/// an interface of the calling thread's network namespace and `queue` one of
/// its rx queues (the kernel checks both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxQueue {
    /// Interface index.
    pub ifindex: u32,
    /// RX queue index.
    pub queue: u32,
}

/// An XDP verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED`.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    Redirect,
    /// Any other value.
    Other(u32),
}

impl XdpAction {
    /// The verdict for a program's return value.
    pub fn from_raw(value: u32) -> Self {
        match value {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Other(other),
        }
    }
}

/// The loaded steering program and its maps.
///
/// Interfaces are attached through bpf_link where the kernel supports it, so
/// the program leaves every interface when the process exits, even without
/// [`Steering::detach_all`]. Dropping a `Steering` detaches it as well,
/// except from links pinned by [`Steering::load_pinned`], which stay until
/// [`Steering::detach_and_unpin`] (or the removal of their pins).
pub struct Steering {
    ebpf: Ebpf,
    vips: HashMap<MapData, ServiceKey, u32>,
    vips6: HashMap<MapData, ServiceKey6, u32>,
    backends: HashMap<MapData, ServiceKey, u32>,
    backends6: HashMap<MapData, ServiceKey6, u32>,
    local_addrs: HashMap<MapData, u32, u8>,
    local_addrs6: HashMap<MapData, [u8; 16], u8>,
    vip_addrs: HashMap<MapData, u32, u32>,
    vip_addrs6: HashMap<MapData, [u8; 16], u32>,
    backend_addrs: HashMap<MapData, u32, u32>,
    backend_addrs6: HashMap<MapData, [u8; 16], u32>,
    if_slots: HashMap<MapData, u32, u32>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    tx_ports: DevMap<MapData>,
    fast_path: FastPathMaps,
    policy: PolicyMaps,
    /// Indexed by slot.
    attachments: [Option<Attachment>; MAX_IFACES as usize],
    /// Where links and maps are pinned; `None`: nothing is.
    pins: Option<PinDir>,
    takeover: Takeover,
}

impl Steering {
    /// Loads the embedded object and its program into the kernel, checking
    /// every map's type and key/value sizes once.
    pub fn load() -> Result<Self, XdpError> {
        Self::load_with(&LoadOptions::default())
    }

    /// [`Steering::load`] with map sizes of the caller's choosing.
    pub fn load_with(options: &LoadOptions) -> Result<Self, XdpError> {
        let capacity = options.flow_cache_capacity.max(1);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(FLOW_CACHE, capacity)
            .map_max_entries(FLOW_CACHE6, capacity);
        Self::load_from(&mut loader, capacity, None, Takeover::default())
    }

    /// [`Steering::load_with`], its maps pinned under `pins` (see
    /// [`crate::pins`]): the maps of a running instance with this build's
    /// layout and capacity are reused, with every entry they hold; else
    /// fresh ones are created and pinned. [`Steering::attach`] then takes
    /// over each interface's pinned link, and the program and its maps
    /// outlive the process unless [`Steering::detach_all`] runs.
    ///
    /// Maps are reused only while some link is pinned: maps that nothing
    /// runs on are what a crashed host or a deleted namespace left, and
    /// are replaced.
    pub fn load_pinned(options: &LoadOptions, pins: PinDir) -> Result<Self, XdpError> {
        let capacity = options.flow_cache_capacity.max(1);
        let maps_dir = pins.maps(capacity);
        let links = pins
            .linked_interfaces()
            .map_err(pin_error("listing links in", pins.root()))?;
        if links.is_empty() && maps_dir.exists() {
            std::fs::remove_dir_all(&maps_dir)
                .map_err(pin_error("removing unused maps in", &maps_dir))?;
        }
        let maps_reused = maps_dir.exists();
        pins::prepare(&maps_dir).map_err(pin_error("preparing", &maps_dir))?;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(FLOW_CACHE, capacity)
            .map_max_entries(FLOW_CACHE6, capacity);
        for name in MAP_NAMES {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        let takeover = Takeover {
            maps_reused,
            ..Takeover::default()
        };
        Self::load_from(&mut loader, capacity, Some(pins), takeover)
    }

    /// What [`Steering::load_pinned`] and [`Steering::attach`] took over.
    pub fn takeover(&self) -> &Takeover {
        &self.takeover
    }

    /// Where links and maps are pinned, if they are.
    pub fn pins(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    fn load_from(
        loader: &mut EbpfLoader<'_>,
        capacity: u32,
        pins: Option<PinDir>,
        takeover: Takeover,
    ) -> Result<Self, XdpError> {
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|err| XdpError::LoadObject(Box::new(err)))?;
        let program = steer_program_mut(&mut ebpf)?;
        program.load().map_err(|source| XdpError::LoadProgram {
            name: PROGRAM,
            source: Box::new(source),
        })?;

        let cache: HashMap<MapData, FlowCacheKey, FlowAction> = take_map(&mut ebpf, FLOW_CACHE)?;
        let cache6: HashMap<MapData, FlowCacheKey6, FlowAction6> =
            take_map(&mut ebpf, FLOW_CACHE6)?;
        let state: Array<MapData, u64> = take_map(&mut ebpf, FAST_STATE)?;
        let stats: PerCpuArray<MapData, FastCounters> = take_map(&mut ebpf, FAST_STATS)?;
        let epochs: Array<MapData, u32> = take_map(&mut ebpf, FAST_EPOCHS)?;
        let fast_path = FastPathMaps::new(
            dup_fd(FLOW_CACHE, cache.map())?,
            dup_fd(FLOW_CACHE6, cache6.map())?,
            dup_fd(FAST_STATE, state.map())?,
            dup_fd(FAST_STATS, stats.map())?,
            dup_fd(FAST_EPOCHS, epochs.map())?,
            capacity,
        )?;
        Ok(Self {
            tx_ports: take_map(&mut ebpf, TX_PORTS)?,
            fast_path,
            vips: take_map(&mut ebpf, VIP_MAP)?,
            vips6: take_map(&mut ebpf, VIP_MAP6)?,
            backends: take_map(&mut ebpf, BACKEND_MAP)?,
            backends6: take_map(&mut ebpf, BACKEND_MAP6)?,
            local_addrs: take_map(&mut ebpf, LOCAL_ADDRS)?,
            local_addrs6: take_map(&mut ebpf, LOCAL_ADDRS6)?,
            vip_addrs: take_map(&mut ebpf, VIP_ADDRS)?,
            vip_addrs6: take_map(&mut ebpf, VIP_ADDRS6)?,
            backend_addrs: take_map(&mut ebpf, BACKEND_ADDRS)?,
            backend_addrs6: take_map(&mut ebpf, BACKEND_ADDRS6)?,
            if_slots: take_map(&mut ebpf, IF_SLOTS)?,
            xsks: take_map(&mut ebpf, XSKS_MAP)?,
            counters: take_map(&mut ebpf, COUNTERS)?,
            policy: PolicyMaps {
                ranges: take_map(&mut ebpf, SOURCE_RANGES)?,
                ranges6: take_map(&mut ebpf, SOURCE_RANGES6)?,
                denied: take_map(&mut ebpf, SOURCE_DENIED)?,
                denied6: take_map(&mut ebpf, SOURCE_DENIED6)?,
                state: take_map(&mut ebpf, POLICY_STATE)?,
            },
            ebpf,
            attachments: Default::default(),
            pins,
            takeover,
        })
    }

    /// Attaches the program to `ifname` (in the calling thread's network
    /// namespace) in the next free interface slot, and returns the mode it
    /// runs in.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<AttachedMode, XdpError> {
        if self.attachment_by_name(ifname).is_some() {
            return Err(XdpError::AlreadyAttached {
                ifname: ifname.to_owned(),
            });
        }
        let ifindex = if_nametoindex(ifname)?;
        if self.attachment(ifindex).is_some() {
            return Err(XdpError::AlreadyAttached {
                ifname: ifname.to_owned(),
            });
        }
        let slot = self
            .attachments
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| XdpError::NoFreeSlot {
                ifname: ifname.to_owned(),
                max: MAX_IFACES,
            })?;
        // Fits: slot < MAX_IFACES.
        let slot = slot as u32;

        // The slot is visible before the first frame can reach the program.
        self.if_slots
            .insert(ifindex, slot, 0)
            .map_err(|source| XdpError::MapUpdate {
                map: IF_SLOTS,
                op: "insert",
                key: format!("{ifname} (ifindex {ifindex})"),
                source: Box::new(source),
            })?;

        // A redirect target before any frame can be cached to leave by it.
        self.tx_ports
            .set(slot, ifindex, None, 0)
            .map_err(|source| XdpError::TxPort {
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;

        match self.attach_link(ifname, ifindex, mode) {
            Ok((link, mode)) => {
                self.attachments[slot as usize] = Some(Attachment {
                    interface: AttachedInterface {
                        name: ifname.to_owned(),
                        ifindex,
                        slot,
                        mode,
                    },
                    link,
                    sockets: 0,
                });
                Ok(mode)
            }
            Err(err) => {
                if let Err(cleanup) = self.if_slots.remove(&ifindex) {
                    log::warn!("removing the slot of {ifname} after a failed attach: {cleanup}");
                }
                Err(err)
            }
        }
    }

    /// Makes `vip_map` and `vip_map6` hold exactly `vips` of their family,
    /// `backend_map` and `backend_map6` exactly `backends`, and the
    /// address-only maps (`vip_addrs`, `backend_addrs` and their IPv6
    /// twins) those entries' addresses. Both sets are checked before any
    /// map is touched; a still-wanted key is never missing during the
    /// update.
    pub fn set_services(
        &mut self,
        vips: &[ServiceMatch],
        backends: &[ServiceMatch],
    ) -> Result<(), XdpError> {
        let vips = service_entries((VIP_MAP, VIP_MAP6), MAX_VIPS, vips)?;
        let backends = service_entries((BACKEND_MAP, BACKEND_MAP6), MAX_BACKENDS, backends)?;
        let show4 = |key: &u32| Ipv4Addr::from(key.to_ne_bytes()).to_string();
        let show6 = |key: &[u8; 16]| Ipv6Addr::from(*key).to_string();
        sync_map(
            &mut self.vips,
            VIP_MAP,
            MAX_VIPS,
            &vips.v4,
            ToString::to_string,
        )?;
        sync_map(
            &mut self.vips6,
            VIP_MAP6,
            MAX_VIPS,
            &vips.v6,
            ToString::to_string,
        )?;
        sync_map(&mut self.vip_addrs, VIP_ADDRS, MAX_VIPS, &vips.addrs, show4)?;
        sync_map(
            &mut self.vip_addrs6,
            VIP_ADDRS6,
            MAX_VIPS,
            &vips.addrs6,
            show6,
        )?;
        sync_map(
            &mut self.backends,
            BACKEND_MAP,
            MAX_BACKENDS,
            &backends.v4,
            ToString::to_string,
        )?;
        sync_map(
            &mut self.backends6,
            BACKEND_MAP6,
            MAX_BACKENDS,
            &backends.v6,
            ToString::to_string,
        )?;
        sync_map(
            &mut self.backend_addrs,
            BACKEND_ADDRS,
            MAX_BACKENDS,
            &backends.addrs,
            show4,
        )?;
        sync_map(
            &mut self.backend_addrs6,
            BACKEND_ADDRS6,
            MAX_BACKENDS,
            &backends.addrs6,
            show6,
        )
    }

    /// Makes `local_addrs` and `local_addrs6` hold exactly `addrs`: the
    /// node's own addresses, whose traffic from backends must reach the
    /// kernel stack. Both families are checked before either map is
    /// touched.
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        AddressSets {
            v4: (&mut self.local_addrs, LOCAL_ADDRS),
            v6: (&mut self.local_addrs6, LOCAL_ADDRS6),
            capacity: MAX_LOCAL_ADDRS,
        }
        .sync(addrs)
    }

    /// Registers the AF_XDP socket `fd`, bound to rx `queue` of the attached
    /// interface `ifindex`, to receive that queue's steered frames. Replaces
    /// any socket registered there. The kernel holds its own reference to
    /// the socket until it is unregistered or the interface detached.
    pub fn register_socket(&mut self, ifindex: u32, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let (index, ifname) = self.socket_index(ifindex, queue)?;
        self.xsks
            .set(index, fd, 0)
            .map_err(|source| XdpError::RegisterSocket {
                ifname,
                queue,
                fd,
                source: Box::new(source),
            })?;
        if let Some(attachment) = self.attachment_mut(ifindex) {
            attachment.sockets |= 1 << queue;
        }
        Ok(())
    }

    /// Removes the socket of rx `queue` of `ifindex`; its frames go to the
    /// kernel stack again (counted as `no_socket`).
    pub fn unregister_socket(&mut self, ifindex: u32, queue: u32) -> Result<(), XdpError> {
        let (index, ifname) = self.socket_index(ifindex, queue)?;
        self.xsks
            .unset(index)
            .map_err(|source| XdpError::MapUpdate {
                map: XSKS_MAP,
                op: "delete",
                key: format!("{ifname} queue {queue}"),
                source: Box::new(source),
            })?;
        if let Some(attachment) = self.attachment_mut(ifindex) {
            attachment.sockets &= !(1 << queue);
        }
        Ok(())
    }

    /// Makes the source-range maps hold exactly `listeners`' ranges (a
    /// listener without any has no entry and is not looked at), each
    /// listener with ranges keeping its drop counter across updates.
    pub fn set_source_ranges(&mut self, listeners: &[ListenerRanges]) -> Result<(), XdpError> {
        self.policy.set(listeners)
    }

    /// Frames dropped for their source, per listener (VIP, port,
    /// protocol), over all CPUs.
    pub fn source_denied(&self) -> Result<Vec<(IpAddr, u16, u8, u64)>, XdpError> {
        self.policy.denied()
    }

    /// Counter totals over all CPUs.
    pub fn counters(&self) -> Result<SteerCounters, XdpError> {
        let mut totals = SteerCounters::default();
        for counter in SteerCounter::ALL {
            let per_cpu =
                self.counters
                    .get(&counter.index(), 0)
                    .map_err(|source| XdpError::MapRead {
                        map: COUNTERS,
                        source: Box::new(source),
                    })?;
            *totals.field_mut(counter) = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    /// The fast path's maps, to share with the workers and the control
    /// thread.
    pub fn fast_path(&self) -> &FastPathMaps {
        &self.fast_path
    }

    /// The interfaces the program is attached to, by slot.
    pub fn attached(&self) -> impl Iterator<Item = &AttachedInterface> + '_ {
        self.attachments
            .iter()
            .flatten()
            .map(|attachment| &attachment.interface)
    }

    /// Detaches the program from every interface and forgets their slots and
    /// sockets. Tries every interface; returns the first error.
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        let mut first_error = None;
        for slot in 0..self.attachments.len() {
            let Some(attachment) = self.attachments[slot].take() else {
                continue;
            };
            if let Err(err) = self.detach(attachment) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Once every interface is attached: removes the pins that no longer
    /// serve, the links of interfaces this instance does not attach (their
    /// interfaces leave the program) and the maps of other layouts or
    /// capacities (freed with the last program that used them). Returns
    /// what it removed, for the log.
    pub fn finish_takeover(&mut self) -> Result<Vec<std::path::PathBuf>, XdpError> {
        let Some(pins) = self.pins.clone() else {
            return Ok(Vec::new());
        };
        self.replace_deferred()?;
        let mut removed = Vec::new();
        let linked = pins
            .linked_interfaces()
            .map_err(pin_error("listing links in", pins.root()))?;
        for ifname in linked {
            if self.attachment_by_name(&ifname).is_none() {
                let path = pins.link(&ifname);
                std::fs::remove_file(&path).map_err(pin_error("removing", &path))?;
                removed.push(path);
            }
        }
        let keep = pins.maps(self.fast_path.capacity());
        for dir in pins
            .other_maps(&keep)
            .map_err(pin_error("listing maps in", pins.root()))?
        {
            std::fs::remove_dir_all(&dir).map_err(pin_error("removing", &dir))?;
            removed.push(dir);
        }
        self.takeover.stale_maps_removed = removed.clone();
        Ok(removed)
    }

    /// Puts this program on the links [`Steering::attach`] deferred (the
    /// maps were fresh), or attaches anew where such a link is gone.
    fn replace_deferred(&mut self) -> Result<(), XdpError> {
        for slot in 0..self.attachments.len() {
            let Some(Attachment {
                link: LinkHandle::Deferred { path, mode },
                interface,
                ..
            }) = &self.attachments[slot]
            else {
                continue;
            };
            let (path, mode, interface) = (path.clone(), *mode, interface.clone());
            let (link, _) = self.take_over_link(&interface.name, interface.ifindex, mode, &path)?;
            if let Some(attachment) = &mut self.attachments[slot] {
                attachment.link = link;
            }
        }
        Ok(())
    }

    /// Leaves the program running on every interface with a pinned link,
    /// and its maps as they are, for the next daemon to take over; VIP
    /// frames that find no socket are dropped meanwhile (see
    /// `FAST_STATE_HANDING_OVER`). Interfaces without a pinned link are
    /// detached as by [`Steering::detach_all`].
    pub fn leave_pinned(&mut self) -> Result<(), XdpError> {
        if self.pins.is_some() {
            self.fast_path.set_handing_over(true)?;
        }
        self.forget_pinned();
        self.detach_all()
    }

    /// Forgets the interfaces whose link is pinned, leaving the program
    /// and their slots and sockets as they are: closing this process's fd
    /// leaves the pin's reference.
    fn forget_pinned(&mut self) {
        for attachment in &mut self.attachments {
            if matches!(
                attachment,
                Some(Attachment {
                    link: LinkHandle::Pinned(_) | LinkHandle::Deferred { .. },
                    ..
                })
            ) {
                *attachment = None;
            }
        }
    }

    /// [`Steering::detach_all`], then removes every pin of this instance:
    /// the program and its maps are gone for good.
    pub fn detach_and_unpin(&mut self) -> Result<(), XdpError> {
        let detached = self.detach_all();
        if let Some(pins) = &self.pins {
            pins.remove_all().map_err(|source| XdpError::Pin {
                op: "removing",
                path: pins.root().to_owned(),
                source,
            })?;
        }
        detached
    }

    /// The loaded program's fd, e.g. for `BPF_PROG_TEST_RUN` or bpftool.
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, XdpError> {
        let program = steer_program(&self.ebpf)?;
        let fd = program.fd().map_err(|source| XdpError::LoadProgram {
            name: PROGRAM,
            source: Box::new(source),
        })?;
        Ok(fd.as_fd())
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN`, as if it
    /// arrived on `rx` (default: loopback queue 0 of the calling thread's
    /// namespace). Counters are bumped as for a real frame.
    pub fn test_run(&self, frame: &[u8], rx: Option<RxQueue>) -> Result<XdpAction, XdpError> {
        self.test_run_output(frame, rx).map(|(action, _)| action)
    }

    /// [`Steering::test_run`], also returning the frame as the program
    /// left it (rewritten, for the fast path).
    pub fn test_run_output(
        &self,
        frame: &[u8],
        rx: Option<RxQueue>,
    ) -> Result<(XdpAction, Vec<u8>), XdpError> {
        let program = steer_program(&self.ebpf)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. The kernel wants data_end to be
        // the frame length and the rest of the pointers zero.
        let ctx = rx.map(|rx| {
            let frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let fields = [0, frame_len, 0, rx.ifindex, rx.queue, 0];
            let mut bytes = [0u8; 24];
            for (chunk, field) in bytes.chunks_exact_mut(4).zip(fields) {
                chunk.copy_from_slice(&field.to_ne_bytes());
            }
            bytes
        });
        // The program never grows a frame; room to spare all the same.
        let mut out = vec![0u8; frame.len() + 256];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_ref().map(|ctx| &ctx[..]),
            ..TestRunOptions::new()
        };
        let result = program.test_run(options).map_err(|err| XdpError::TestRun {
            program: "steering",
            source: Box::new(err),
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((XdpAction::from_raw(result.return_value), out))
    }

    fn attach_link(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(LinkHandle, AttachedMode), XdpError> {
        let Some(pins) = self.pins.clone() else {
            let (link, mode) = self.attach_fresh(ifname, ifindex, mode)?;
            return Ok((LinkHandle::Owned(link), mode));
        };
        let path = pins.link(ifname);
        if path.exists() && !self.takeover.maps_reused {
            // The previous program keeps forwarding its cached flows from
            // its own maps until this one has sockets to steer to.
            return Ok((LinkHandle::Deferred { path, mode }, attached_mode(mode)));
        }
        if path.exists() {
            return self.take_over_link(ifname, ifindex, mode, &path);
        }
        self.attach_and_pin(ifname, ifindex, mode, &path)
    }

    /// Puts this program on the link pinned at `path`, or, where that
    /// link cannot be taken over, removes the pin and attaches anew.
    fn take_over_link(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
        path: &std::path::Path,
    ) -> Result<(LinkHandle, AttachedMode), XdpError> {
        match self.replace_on_link(path) {
            Ok(link) => {
                self.takeover.links_replaced.push(ifname.to_owned());
                Ok((LinkHandle::Pinned(link), attached_mode(mode)))
            }
            Err(err) => {
                // A link whose interface went away (ENOLINK), or a pin
                // that is no link: nothing runs there to take over.
                log::warn!(
                    "{ifname}: the pinned link {} cannot be taken over ({err}); attaching anew",
                    path.display()
                );
                std::fs::remove_file(path).map_err(pin_error("removing", path))?;
                self.attach_and_pin(ifname, ifindex, mode, path)
            }
        }
    }

    /// Attaches anew and pins the link at `path`.
    fn attach_and_pin(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
        path: &std::path::Path,
    ) -> Result<(LinkHandle, AttachedMode), XdpError> {
        let path = path.to_owned();
        let (link, mode) = self.attach_fresh(ifname, ifindex, mode)?;
        let program = steer_program_mut(&mut self.ebpf)?;
        let link = program
            .take_link(link)
            .map_err(|source| XdpError::LoadProgram {
                name: PROGRAM,
                source: Box::new(source),
            })?;
        let link = FdLink::try_from(link).map_err(|source| XdpError::PinLink {
            ifname: ifname.to_owned(),
            source: Box::new(source),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| XdpError::Pin {
                op: "creating",
                path: dir.to_owned(),
                source,
            })?;
        }
        let pinned = link.pin(&path).map_err(|source| XdpError::Pin {
            op: "pinning the link at",
            path: path.clone(),
            source: std::io::Error::other(source.to_string()),
        })?;
        Ok((LinkHandle::Pinned(pinned), mode))
    }

    /// Puts this program on the pinned link at `path` in place of the one
    /// it runs (`bpf_link_update`): frames never meet an interface without
    /// a program.
    fn replace_on_link(&mut self, path: &std::path::Path) -> Result<PinnedLink, XdpError> {
        let link_error = |source: aya::programs::links::LinkError| XdpError::TakeOver {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let pinned = PinnedLink::from_pin(path).map_err(link_error)?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(link_error)?;
        let program = steer_program_mut(&mut self.ebpf)?;
        let take_over_error = |source: ProgramError| XdpError::TakeOver {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let id = program.attach_to_link(link).map_err(take_over_error)?;
        let link = program.take_link(id).map_err(take_over_error)?;
        let link = FdLink::try_from(link).map_err(link_error)?;
        // Pinned already: re-open the pin to hold it as such.
        drop(link);
        PinnedLink::from_pin(path).map_err(link_error)
    }

    fn attach_fresh(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(XdpLinkId, AttachedMode), XdpError> {
        match mode {
            AttachMode::Native => self.attach_in(ifname, ifindex, AttachedMode::Native),
            AttachMode::Generic => self.attach_in(ifname, ifindex, AttachedMode::Generic),
            AttachMode::Auto => match self.attach_in(ifname, ifindex, AttachedMode::Native) {
                Err(XdpError::Attach { source, .. }) => {
                    log::warn!(
                        "native XDP on {ifname} failed ({source}); falling back to generic mode"
                    );
                    self.attach_in(ifname, ifindex, AttachedMode::Generic)
                }
                other => other,
            },
        }
    }

    fn attach_in(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachedMode,
    ) -> Result<(XdpLinkId, AttachedMode), XdpError> {
        let program = steer_program_mut(&mut self.ebpf)?;
        match program.attach_to_if_index(ifindex, mode.xdp_mode()) {
            Ok(link) => Ok((link, mode)),
            Err(source) => Err(attach_error(ifname, mode, source)),
        }
    }

    fn detach(&mut self, attachment: Attachment) -> Result<(), XdpError> {
        let Attachment {
            interface,
            link,
            sockets,
        } = attachment;
        let detached = match link {
            LinkHandle::Owned(link) => {
                let program = steer_program_mut(&mut self.ebpf)?;
                program.detach(link).map_err(|source| XdpError::Detach {
                    ifname: interface.name.clone(),
                    source: Box::new(source),
                })
            }
            // The pin goes first: the fd closed after it is the link's last
            // reference, which detaches it.
            // Never taken over: the previous program stays on it.
            LinkHandle::Deferred { .. } => Ok(()),
            LinkHandle::Pinned(link) => link.unpin().map(drop).map_err(|source| XdpError::Pin {
                op: "unpinning the link of",
                path: std::path::PathBuf::from(&interface.name),
                source,
            }),
        };

        // The program no longer runs there: forget its sockets and slot.
        for queue in (0..MAX_QUEUES).filter(|queue| sockets & (1 << queue) != 0) {
            let index = interface.slot * MAX_QUEUES + queue;
            if let Err(err) = self.xsks.unset(index) {
                log::warn!("unregistering {} queue {queue}: {err}", interface.name);
            }
        }
        if let Err(err) = self.if_slots.remove(&interface.ifindex) {
            log::warn!("removing the slot of {}: {err}", interface.name);
        }
        detached
    }

    fn socket_index(&self, ifindex: u32, queue: u32) -> Result<(u32, String), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange {
                queue,
                max: MAX_QUEUES,
            });
        }
        let attachment = self
            .attachment(ifindex)
            .ok_or(XdpError::NotAttached { ifindex })?;
        Ok((
            attachment.interface.slot * MAX_QUEUES + queue,
            attachment.interface.name.clone(),
        ))
    }

    fn attachment(&self, ifindex: u32) -> Option<&Attachment> {
        self.attachments
            .iter()
            .flatten()
            .find(|attachment| attachment.interface.ifindex == ifindex)
    }

    fn attachment_mut(&mut self, ifindex: u32) -> Option<&mut Attachment> {
        self.attachments
            .iter_mut()
            .flatten()
            .find(|attachment| attachment.interface.ifindex == ifindex)
    }

    fn attachment_by_name(&self, ifname: &str) -> Option<&Attachment> {
        self.attachments
            .iter()
            .flatten()
            .find(|attachment| attachment.interface.name == ifname)
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // A pinned link stays: a process that fails or unwinds midway
        // through a takeover must not take the node down with it. Only
        // `detach_and_unpin` removes pins.
        self.forget_pinned();
        if let Err(err) = self.detach_all() {
            log::warn!("detaching the steering program: {err}");
        }
    }
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("attached", &self.attached().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The mode a pinned link runs in: the one it was created with, which
/// was asked for as `mode` (the kernel keeps a link's mode on update).
fn attached_mode(mode: AttachMode) -> AttachedMode {
    match mode {
        AttachMode::Generic => AttachedMode::Generic,
        AttachMode::Auto | AttachMode::Native => AttachedMode::Native,
    }
}

pub(crate) fn attach_error(ifname: &str, mode: AttachedMode, source: ProgramError) -> XdpError {
    let ifname = ifname.to_owned();
    match program_errno(&source) {
        // EBUSY: a program or link already owns this mode; EEXIST: a
        // program runs in the other mode (native and generic exclude each
        // other, net/core/dev.c dev_xdp_attach).
        Some(libc::EBUSY | libc::EEXIST) => XdpError::Busy {
            ifname,
            source: Box::new(source),
        },
        Some(libc::ENODEV) => XdpError::UnknownInterface { ifname },
        _ => XdpError::Attach {
            ifname,
            mode,
            source: Box::new(source),
        },
    }
}

pub(crate) fn if_nametoindex(ifname: &str) -> Result<u32, XdpError> {
    let unknown = || XdpError::UnknownInterface {
        ifname: ifname.to_owned(),
    };
    let name = CString::new(ifname).map_err(|_| unknown())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(unknown());
    }
    Ok(ifindex)
}

fn steer_program(ebpf: &Ebpf) -> Result<&Xdp, XdpError> {
    let program = ebpf.program(PROGRAM).ok_or(XdpError::Missing {
        kind: "program",
        name: PROGRAM,
    })?;
    program.try_into().map_err(|source| XdpError::LoadProgram {
        name: PROGRAM,
        source: Box::new(source),
    })
}

fn steer_program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program = ebpf.program_mut(PROGRAM).ok_or(XdpError::Missing {
        kind: "program",
        name: PROGRAM,
    })?;
    program.try_into().map_err(|source| XdpError::LoadProgram {
        name: PROGRAM,
        source: Box::new(source),
    })
}

/// An fd of this process's own for `map`, for handles that outlive borrows
/// of the typed map.
fn dup_fd(name: &'static str, map: &MapData) -> Result<std::os::fd::OwnedFd, XdpError> {
    map.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| XdpError::FastPath {
            map: name,
            op: "duplicating the fd",
            source,
        })
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, XdpError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(XdpError::Missing { kind: "map", name })?;
    M::try_from(map).map_err(|source| XdpError::MapType {
        name,
        source: Box::new(source),
    })
}

/// The error of a pin operation `op` on `path`, for `map_err`.
fn pin_error(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> XdpError {
    let path = path.to_owned();
    move |source| XdpError::Pin { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_can_move_to_a_control_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Steering>();
    }

    #[test]
    fn xdp_action_from_raw_names_the_uapi_values() {
        let actions: Vec<XdpAction> = (0..6).map(XdpAction::from_raw).collect();
        assert_eq!(
            actions,
            [
                XdpAction::Aborted,
                XdpAction::Drop,
                XdpAction::Pass,
                XdpAction::Tx,
                XdpAction::Redirect,
                XdpAction::Other(5),
            ]
        );
    }
}
