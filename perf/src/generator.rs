//! Sending the frames of a [`Template`]: through BPF_PROG_TEST_RUN in
//! live-frames mode (the kernel runs the pktgen program on each frame and
//! transmits it, the fastest path on this kernel), or through an AF_XDP
//! socket (frames written in userspace by [`write_frame`]). Both run on the
//! calling thread, in its network namespace, and pace themselves to a
//! target rate when one is given.

use std::io::Write;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use switchyard_xdp::tools::Tools;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{FrameDesc, Socket, Umem};

use crate::pktgen::{monotonic_ns, write_frame, Template};

/// How long and how fast to send.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub duration: Duration,
    /// Frames per second; `None` sends as fast as the path allows.
    pub rate: Option<u64>,
    /// Frames per kernel batch (live mode) or per tx kick (AF_XDP).
    pub batch: u32,
}

impl Pace {
    /// Frames per chunk between pacing checks, at most `largest`: 100 µs
    /// worth at the target rate, as large as allowed when unpaced.
    fn chunk(&self, largest: u64) -> u64 {
        match self.rate {
            Some(rate) => (rate / 10_000).clamp(1, largest),
            None => largest,
        }
    }

    /// Waits until `sent` frames are due at the target rate: sleeps while
    /// more than a millisecond is left, then spins, so frames leave evenly
    /// spaced rather than in bursts a sleep's overshoot would make.
    fn wait_for(&self, start: Instant, sent: u64) {
        let Some(rate) = self.rate.filter(|&r| r > 0) else {
            return;
        };
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            if due - now > Duration::from_millis(1) {
                std::thread::sleep(due - now - Duration::from_millis(1));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Live-frames runs set up a page pool per call, so a paced live run still
/// sends chunks of at least this many frames.
const LIVE_MIN_CHUNK: u64 = 4096;

/// Sends `template`'s frames out of `ifindex` with live frames until the
/// pace's duration is over; `tick` gets the total sent after every chunk.
/// Returns the frames sent. `tools` must be configured for `template`
/// ([`Tools::configure_pktgen`]).
pub fn run_live(
    tools: &Tools,
    template: &Template,
    ifindex: u32,
    pace: &Pace,
    mut tick: impl FnMut(u64),
) -> Result<u64> {
    let start = Instant::now();
    let chunk = pace.chunk(1 << 20).max(LIVE_MIN_CHUNK);
    let mut sent = 0u64;
    while start.elapsed() < pace.duration {
        tools
            .generate(&template.frame, ifindex, chunk as u32, pace.batch)
            .context("BPF_PROG_TEST_RUN (live frames) of pktgen")?;
        sent += chunk;
        tick(sent);
        pace.wait_for(start, sent);
    }
    Ok(sent)
}

/// Sends `template`'s frames from an AF_XDP socket (copy mode) on queue
/// `queue` of `ifname` until the pace's duration is over.
pub fn run_afxdp(
    ifname: &str,
    queue: u32,
    template: &Template,
    pace: &Pace,
    mut tick: impl FnMut(u64),
) -> Result<u64> {
    const FRAMES: u32 = 4096;
    let ring = QueueSize::new(2048).map_err(|e| anyhow!("{e}"))?;
    let umem_config = UmemConfig::builder()
        .frame_size(FrameSize::new(2048).map_err(|e| anyhow!("{e}"))?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let (umem, mut free) = Umem::new(umem_config, NonZeroU32::new(FRAMES).unwrap(), false)
        .map_err(|e| anyhow!("creating the UMEM: {e}"))?;
    let socket_config = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let interface: Interface = ifname.parse().map_err(|_| anyhow!("bad interface name"))?;
    // SAFETY: the UMEM is used by this one socket only.
    let (mut tx, _rx, rings) = unsafe { Socket::new(socket_config, &umem, &interface, queue) }
        .map_err(|e| anyhow!("AF_XDP socket on {ifname} queue {queue}: {e}"))?;
    let (_fill, mut completion) = rings.ok_or_else(|| anyhow!("no completion ring"))?;

    // Every frame starts as a copy of the template; only the varying
    // fields are written per send.
    for desc in free.iter_mut() {
        // SAFETY: the frame is in the free pool, owned by no ring.
        let mut data = unsafe { umem.data_mut(desc) };
        data.cursor().write_all(&template.frame)?;
    }
    let batch = pace.batch.max(1) as usize;
    let mut pending: Vec<FrameDesc> = Vec::with_capacity(batch);
    let mut done = vec![FrameDesc::default(); batch * 4];
    let start = Instant::now();
    let chunk = pace.chunk(65_536);
    let (mut sent, mut in_flight, mut n) = (0u64, 0usize, 0u64);
    while start.elapsed() < pace.duration {
        let chunk_end = sent + chunk;
        while sent < chunk_end {
            if in_flight > 0 {
                // SAFETY: completed descriptors are frames of this UMEM
                // the kernel is done with.
                let back = unsafe { completion.consume(&mut done) };
                in_flight -= back;
                free.extend_from_slice(&done[..back]);
            }
            pending.clear();
            let room = (chunk_end - sent).min(batch as u64) as usize;
            while pending.len() < room {
                let Some(mut desc) = free.pop() else { break };
                {
                    // SAFETY: the frame is in the free pool, owned by no ring.
                    let mut data = unsafe { umem.data_mut(&mut desc) };
                    // The completion ring hands descriptors back with
                    // length 0; the bytes are still the template's.
                    data.cursor().set_pos(template.frame.len());
                    write_frame(data.contents_mut(), template, n, monotonic_ns());
                }
                n += 1;
                pending.push(desc);
            }
            // SAFETY: pending frames are owned by no ring until produced.
            let produced = unsafe { tx.produce(&pending) };
            free.extend_from_slice(&pending[produced..]);
            in_flight += produced;
            sent += produced as u64;
            // Copy mode sends only when kicked.
            let _ = tx.wakeup();
        }
        tick(sent);
        pace.wait_for(start, sent);
    }
    Ok(sent)
}
