//! AF_XDP ports of one worker: one socket per interface, all bound to the
//! worker's queue and sharing one UMEM, so a frame received on one interface
//! is transmitted on another without a copy. This module owns frame
//! accounting (every frame is in exactly one place: free pool, fill ring,
//! rx ring, tx ring or completion ring) and all of the worker's `unsafe`
//! ring access. It never looks inside a frame; it only moves its bytes to
//! insert or remove a VLAN tag the worker names.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::io::{BatchOutcome, Handler, PacketIo, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("ring and frame sizes are invalid: {0}")]
    Config(String),
    #[error("creating the UMEM ({bytes} bytes) for queue {queue} failed; AF_XDP needs locked memory (root with CAP_IPC_LOCK, or a raised RLIMIT_MEMLOCK): {detail}")]
    Umem {
        queue: u32,
        bytes: u64,
        detail: String,
    },
    #[error("binding an AF_XDP socket to {interface} queue {queue} failed: {detail}")]
    Socket {
        interface: String,
        queue: u32,
        detail: String,
    },
    #[error("the AF_XDP socket on {interface} queue {queue} came without fill and completion rings (is the pair bound twice?)")]
    MissingRings { interface: String, queue: u32 },
}

/// Whether to ask the driver for zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ZeroCopy {
    /// Zero-copy where the driver supports it, else copy mode (logged).
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy)]
pub struct XskConfig {
    pub frame_size: u32,
    /// Fill, completion, rx and tx ring sizes (power of two).
    pub ring_size: u32,
    /// Frames per port: enough to keep the fill ring full while a ring's
    /// worth is in flight on tx.
    pub frames_per_port: u32,
    pub batch_size: usize,
    pub zero_copy: ZeroCopy,
    /// Bind with XDP_USE_NEED_WAKEUP: the kernel says when it must be
    /// kicked, instead of being kicked after every batch.
    pub need_wakeup: bool,
    /// Busy polling (SO_BUSY_POLL and friends), when set.
    pub busy_poll: Option<BusyPoll>,
    /// Frames the kernel may send per kick in copy mode
    /// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17; default there 32).
    pub tx_skb_budget: Option<u32>,
}

/// Busy-poll settings of a socket (Documentation/networking/napi.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// SO_BUSY_POLL: how long a poll() spins on the device queue.
    pub usecs: u32,
    /// SO_BUSY_POLL_BUDGET: packets per spin.
    pub budget: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            ring_size: 2048,
            frames_per_port: 4096,
            batch_size: 64,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
            busy_poll: None,
            tx_skb_budget: None,
        }
    }
}

/// An interface the worker sends and receives on.
#[derive(Debug, Clone)]
pub struct PortSpec {
    pub name: String,
    pub ifindex: u32,
}

struct Port {
    name: String,
    tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    completion: CompQueue,
    /// Frames produced on tx and not yet seen on the completion ring; while
    /// non-zero the kernel must be kicked, since copy mode sends at most a
    /// few dozen frames per kick.
    in_flight: usize,
    zero_copy: bool,
}

pub struct XskPorts {
    ports: Vec<Port>,
    free: Vec<FrameDesc>,
    /// Received descriptors of the current batch (preallocated).
    rx_batch: Vec<FrameDesc>,
    /// Per destination port, frames to put on its tx ring (preallocated).
    tx_pending: Vec<Vec<FrameDesc>>,
    pollfds: Vec<libc::pollfd>,
    batch_size: usize,
    // Dropped last: the sockets above unmap their rings before the UMEM goes.
    umem: Umem,
}

impl XskPorts {
    /// Opens one socket per interface on `queue`, sharing one UMEM.
    pub fn open(specs: &[PortSpec], queue: u32, config: &XskConfig) -> Result<Self, XskError> {
        let frame_size =
            FrameSize::new(config.frame_size).map_err(|e| XskError::Config(e.to_string()))?;
        let ring = QueueSize::new(config.ring_size).map_err(|e| XskError::Config(e.to_string()))?;
        let umem_config = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| XskError::Config(e.to_string()))?;
        let frame_count = config.frames_per_port.saturating_mul(specs.len() as u32);
        let frame_count = NonZeroU32::new(frame_count)
            .ok_or_else(|| XskError::Config("no interfaces or no frames".into()))?;
        let (umem, frames) =
            Umem::new(umem_config, frame_count, false).map_err(|e| XskError::Umem {
                queue,
                bytes: u64::from(frame_count.get()) * u64::from(config.frame_size),
                detail: e.to_string(),
            })?;

        let mut ports = Vec::with_capacity(specs.len());
        for spec in specs {
            ports.push(open_socket(&umem, spec, queue, ring, config)?);
        }
        let pollfds = ports
            .iter()
            .map(|p| libc::pollfd {
                fd: p.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut this = Self {
            tx_pending: (0..ports.len())
                .map(|_| Vec::with_capacity(config.batch_size * ports.len()))
                .collect(),
            ports,
            free: frames,
            rx_batch: vec![FrameDesc::default(); config.batch_size],
            pollfds,
            batch_size: config.batch_size,
            umem,
        };
        this.refill();
        Ok(this)
    }

    /// Socket fds in port order, for the XDP program's XSKMAP.
    pub fn socket_fds(&self) -> Vec<RawFd> {
        self.ports.iter().map(|p| p.rx.fd().as_raw_fd()).collect()
    }

    /// `zero-copy` or `copy`, per port.
    pub fn modes(&self) -> Vec<&'static str> {
        self.ports
            .iter()
            .map(|p| if p.zero_copy { "zero-copy" } else { "copy" })
            .collect()
    }

    fn reclaim_completions(&mut self) {
        for port in &mut self.ports {
            if port.in_flight == 0 {
                continue;
            }
            let start = self.free.len();
            let want = port.in_flight.min(self.rx_batch.len() * 4);
            self.free.resize(start + want, FrameDesc::default());
            // SAFETY: completed descriptors belong to this worker's UMEM (every
            // socket here shares it) and the kernel is done with them.
            let done = unsafe { port.completion.consume(&mut self.free[start..]) };
            self.free.truncate(start + done);
            port.in_flight -= done;
        }
    }

    fn refill(&mut self) {
        for port in &mut self.ports {
            let room = port.fill.nb_free(self.free.len() as u32) as usize;
            let count = room.min(self.free.len());
            if count == 0 {
                continue;
            }
            let start = self.free.len() - count;
            // SAFETY: frames in the free pool are owned by no ring; after this
            // call they belong to the kernel until they come back on an rx ring.
            let produced = unsafe { port.fill.produce(&self.free[start..]) };
            self.free.truncate(self.free.len() - produced);
            if port.fill.needs_wakeup() {
                // Zero-copy drivers may sleep on an empty fill ring; the
                // poll() inside tells them frames are back.
                let _ = port.fill.wakeup(port.rx.fd_mut(), 0);
            }
        }
    }

    fn transmit_pending(&mut self, outcome: &mut BatchOutcome) {
        for (index, port) in self.ports.iter_mut().enumerate() {
            let pending = &mut self.tx_pending[index];
            if !pending.is_empty() {
                // SAFETY: pending frames came off this worker's rx rings and are
                // owned by no ring until produced here.
                let produced = unsafe { port.tx.produce(pending) };
                port.in_flight += produced;
                for desc in &pending[..produced] {
                    outcome.transmitted += 1;
                    outcome.transmitted_bytes += desc.lengths().data();
                }
                // A full tx ring means the kernel is behind: dropping now keeps
                // latency bounded instead of queueing without limit.
                outcome.tx_ring_full += pending.len() - produced;
                self.free.extend_from_slice(&pending[produced..]);
                pending.clear();
            }
            if port.in_flight > 0 && (port.tx.needs_wakeup() || !port.zero_copy) {
                // Errors here are transient (ENOBUFS, EAGAIN, EBUSY) and are
                // retried on the next batch while frames are in flight.
                let _ = port.tx.wakeup();
            }
        }
    }
}

fn open_socket(
    umem: &Umem,
    spec: &PortSpec,
    queue: u32,
    ring: QueueSize,
    config: &XskConfig,
) -> Result<Port, XskError> {
    let zero_copy = config.zero_copy;
    let wakeup = if config.need_wakeup {
        BindFlags::XDP_USE_NEED_WAKEUP
    } else {
        BindFlags::empty()
    };
    let interface: Interface = spec.name.parse().map_err(|_| XskError::Socket {
        interface: spec.name.clone(),
        queue,
        detail: "invalid interface name".into(),
    })?;
    let bind = |mode: BindFlags| {
        let config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // Switchyard attaches its own steering program; libxdp must not
            // load its default one.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(mode | wakeup)
            .build();
        // SAFETY: each (interface, queue) pair is bound once per UMEM, and
        // INHIBIT_PROG_LOAD is set as sharing a UMEM requires.
        unsafe { Socket::new(config, umem, &interface, queue) }
    };
    let attempt = match zero_copy {
        ZeroCopy::Off => bind(BindFlags::XDP_COPY),
        ZeroCopy::On => bind(BindFlags::XDP_ZEROCOPY),
        ZeroCopy::Auto => bind(BindFlags::XDP_ZEROCOPY).or_else(|err| {
            log::info!(
                "{} queue {queue}: zero-copy AF_XDP unavailable ({err}); using copy mode",
                spec.name
            );
            bind(BindFlags::XDP_COPY)
        }),
    };
    let (tx, rx, rings) = attempt.map_err(|e| XskError::Socket {
        interface: spec.name.clone(),
        queue,
        detail: e.to_string(),
    })?;
    let (fill, completion) = rings.ok_or_else(|| XskError::MissingRings {
        interface: spec.name.clone(),
        queue,
    })?;
    let fd = rx.fd().as_raw_fd();
    let zero_copy = socket_is_zero_copy(fd).unwrap_or(false);
    let socket_error = |what: &str, err: io::Error| XskError::Socket {
        interface: spec.name.clone(),
        queue,
        detail: format!("{what}: {err}"),
    };
    if let Some(busy) = config.busy_poll {
        set_socket_option(fd, libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, 1)
            .map_err(|e| socket_error("SO_PREFER_BUSY_POLL", e))?;
        set_socket_option(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL, busy.usecs)
            .map_err(|e| socket_error("SO_BUSY_POLL", e))?;
        set_socket_option(fd, libc::SOL_SOCKET, SO_BUSY_POLL_BUDGET, busy.budget)
            .map_err(|e| socket_error("SO_BUSY_POLL_BUDGET", e))?;
    }
    if let Some(budget) = config.tx_skb_budget.filter(|_| !zero_copy) {
        set_socket_option(fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, budget).map_err(|e| {
            socket_error(
                "XDP_MAX_TX_SKB_BUDGET (Linux 6.17 or later; 32 up to the tx ring size)",
                e,
            )
        })?;
    }
    Ok(Port {
        name: spec.name.clone(),
        tx,
        rx,
        fill,
        completion,
        in_flight: 0,
        zero_copy,
    })
}

const SOL_XDP: libc::c_int = 283;
/// include/uapi/linux/if_xdp.h, Linux 6.17.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// include/uapi/asm-generic/socket.h, Linux 5.11.
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

fn set_socket_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: u32,
) -> io::Result<()> {
    // SAFETY: `value` is a live u32 and its size is passed; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel which mode the bind ended up in (XDP_OPTIONS, Linux 5.3).
fn socket_is_zero_copy(fd: RawFd) -> io::Result<bool> {
    const XDP_OPTIONS: libc::c_int = 8;
    const XDP_OPTIONS_ZEROCOPY: u32 = 1;
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `flags` is a valid u32 for the kernel to write and `len` says so.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

impl XskPorts {
    /// Backpressure: take no more frames than every tx ring can still
    /// queue. A frame left on the rx ring costs nothing and is dropped by
    /// the kernel if the ring fills; one taken and then refused by a full
    /// tx ring has cost a decision and a rewrite first.
    #[inline(always)]
    fn tx_room(&mut self) -> usize {
        let batch_size = self.batch_size as u32;
        self.ports
            .iter_mut()
            .map(|p| p.tx.nb_free(batch_size) as usize)
            .min()
            .unwrap_or(0)
    }

    /// Takes up to `batch` frames off port `index`'s rx ring into
    /// `rx_batch`, and starts fetching their headers.
    #[inline(always)]
    fn receive(&mut self, index: usize, batch: usize) -> usize {
        // SAFETY: `rx_batch` descriptors are overwritten with frames of
        // this worker's UMEM that the kernel hands back.
        let received = unsafe { self.ports[index].rx.consume(&mut self.rx_batch[..batch]) };
        // The kernel wrote these frames on another core (copy mode) or a
        // device did (zero-copy): ask for all their headers at once, so the
        // misses overlap instead of stalling frame by frame.
        for desc in &self.rx_batch[..received] {
            // SAFETY: a frame of our UMEM just taken off the rx ring; only
            // its address is read.
            let data = unsafe { self.umem.data(desc) };
            crate::hint::prefetch(data.contents().as_ptr());
        }
        received
    }

    /// Hands each received frame of port `index` to `handle` and queues it
    /// by verdict: for transmission on a port, or back to the free list.
    #[inline(always)]
    fn hand_over(
        &mut self,
        index: usize,
        received: usize,
        handle: &mut Handler<'_>,
        outcome: &mut BatchOutcome,
    ) {
        let port_count = self.ports.len();
        for slot in 0..received {
            let mut desc = self.rx_batch[slot];
            outcome.received += 1;
            outcome.received_bytes += desc.lengths().data();
            // SAFETY: the frame came off our rx ring, so no ring and no
            // other descriptor refers to it until we hand it on below.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let next = (slot + 1 < received).then(|| {
                // SAFETY: another frame of this batch, distinct from the one
                // borrowed mutably above; only read.
                unsafe { self.umem.data(&self.rx_batch[slot + 1]) }.contents()
            });
            match handle(index, data.contents_mut(), next) {
                Verdict::Transmit(out) if out < port_count => self.tx_pending[out].push(desc),
                Verdict::TransmitPrefix { port, len } if port < port_count => {
                    data.cursor().set_pos(len);
                    self.tx_pending[port].push(desc)
                }
                // The tail moves rather than the head: xsk-rs keeps a
                // descriptor's address private, so the frame cannot start
                // in the headroom. A frame ends at least the XDP headroom
                // (256 bytes) short of its chunk, so a frame of the link's
                // MTU always has room for a tag (4 bytes), outer headers
                // (at most 66) or a PROXY header (52, plus a tag's 4).
                grows @ (Verdict::TransmitPushed { port, .. }
                | Verdict::TransmitEncapsulated { port, .. }
                | Verdict::TransmitSpliced { port, .. })
                    if port < port_count =>
                {
                    if grow_tail(&mut data, grows) {
                        self.tx_pending[port].push(desc)
                    } else {
                        outcome.no_room += 1;
                        self.free.push(desc);
                    }
                }
                Verdict::TransmitPopped { port } if port < port_count => {
                    let len = data.contents().len();
                    match crate::packet::pop_tag(data.contents_mut(), len) {
                        Some(len) => {
                            data.cursor().set_pos(len);
                            self.tx_pending[port].push(desc)
                        }
                        None => self.free.push(desc),
                    }
                }
                _ => self.free.push(desc),
            }
        }
    }
}

/// Lets a frame grow at its tail by what `verdict` adds (a tag, outer
/// headers, a PROXY header) and applies it; false (the frame is not to be
/// sent) when its chunk has no room.
#[inline(always)]
fn grow_tail(data: &mut xsk_rs::umem::frame::DataMut<'_>, verdict: Verdict) -> bool {
    let len = data.contents().len();
    let room = match verdict {
        Verdict::TransmitPushed { tag, .. } => tag.len(),
        Verdict::TransmitEncapsulated { head, .. } => head.growth(),
        Verdict::TransmitSpliced { splice, .. } => splice.header.len() + 4,
        _ => return true,
    };
    data.cursor().set_pos(len + room);
    let buf = data.contents_mut();
    let edited = match verdict {
        Verdict::TransmitPushed { tag, .. } => crate::packet::push_tag(buf, len, tag),
        Verdict::TransmitEncapsulated { head, .. } => crate::packet::replace_head(buf, len, &head),
        Verdict::TransmitSpliced { splice, .. } => crate::packet::proxy::splice(buf, len, &splice),
        _ => Some(len),
    };
    match edited {
        Some(new_len) => {
            data.cursor().set_pos(new_len);
            true
        }
        None => false,
    }
}

impl PacketIo for XskPorts {
    fn run_batch(&mut self, handle: &mut Handler<'_>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        self.reclaim_completions();
        self.refill();
        let room = self.tx_room();
        for index in 0..self.ports.len() {
            let received = self.receive(index, self.batch_size.min(room));
            self.hand_over(index, received, handle, &mut outcome);
        }
        self.transmit_pending(&mut outcome);
        self.refill();
        outcome
    }

    fn wait(&mut self, timeout_ms: i32) {
        if self.ports.iter().any(|p| p.in_flight > 0) {
            // Completions are due; don't sleep past them.
            return;
        }
        for pollfd in &mut self.pollfds {
            pollfd.revents = 0;
        }
        // SAFETY: `pollfds` is a live array of `len` initialised pollfd structs.
        unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            );
        }
    }
}

impl std::fmt::Debug for XskPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPorts")
            .field(
                "ports",
                &self.ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("free_frames", &self.free.len())
            .finish()
    }
}

/// UMEM and BPF maps count against RLIMIT_MEMLOCK on older kernels; lifting
/// it keeps a low default from surfacing as an obscure ENOMEM.
pub fn raise_memlock_limit() -> io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
