//! Sending the frames of a [`Template`]: through BPF_PROG_TEST_RUN in
//! live-frames mode (the kernel runs the pktgen program on each frame and
//! transmits it, the fastest path on this kernel), or through an AF_XDP
//! socket (frames written in userspace by [`write_frame`]). Both run on the
//! calling thread, in its network namespace, and pace themselves to a
//! target rate when one is given. Some kernels refuse live frames to a
//! process that lacks CAP_SYS_RESOURCE (EPERM); callers then fall back to
//! AF_XDP and say so ([`Generator`], [`live_frames_refused`]).

use std::io::Write;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use switchyard_xdp::tools::Tools;
use switchyard_xdp::XdpError;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use switchyard_dataplane::fast_path::monotonic_ns;

use crate::pktgen::{write_frame, Template};

/// Which generator a run sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    /// BPF_PROG_TEST_RUN live frames: the kernel sends, several Mpps from
    /// one core.
    LiveFrames,
    /// An AF_XDP socket in copy mode: about a core's worth of skbs, well
    /// below what the in-kernel paths can take.
    Afxdp,
}

impl Generator {
    pub fn describe(self) -> &'static str {
        match self {
            Generator::LiveFrames => "BPF_PROG_TEST_RUN live frames",
            Generator::Afxdp => "an AF_XDP socket in copy mode",
        }
    }
}

/// Whether `error` is the kernel refusing live frames (EPERM), as it does
/// where the process lacks CAP_SYS_RESOURCE: then AF_XDP is the generator.
pub fn live_frames_refused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<XdpError>()
            .and_then(XdpError::raw_os_error)
            == Some(libc::EPERM)
    })
}

/// What to print when live frames were refused and AF_XDP sends instead.
pub const LIVE_FRAMES_REFUSED: &str = "live frames refused by the kernel (EPERM from \
     BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, seen where the process lacks \
     CAP_SYS_RESOURCE); sending with an AF_XDP socket in copy mode instead";

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
/// pace's duration is over or `tick` (called with the total sent after
/// every chunk) returns false. Returns the frames sent. `tools` must be
/// configured for `template` ([`Tools::configure_pktgen`]).
pub fn run_live(
    tools: &Tools,
    template: &Template,
    ifindex: u32,
    pace: &Pace,
    mut tick: impl FnMut(u64) -> bool,
) -> Result<u64> {
    let start = Instant::now();
    let chunk = pace.chunk(1 << 20).max(LIVE_MIN_CHUNK);
    let mut sent = 0u64;
    while start.elapsed() < pace.duration {
        tools
            .generate(&template.frame, ifindex, chunk as u32, pace.batch)
            .context("BPF_PROG_TEST_RUN (live frames) of pktgen")?;
        sent += chunk;
        if !tick(sent) {
            break;
        }
        pace.wait_for(start, sent);
    }
    Ok(sent)
}

/// An AF_XDP socket (copy mode) that sends frames of a [`Template`]. Open
/// it once per run: the kernel releases a closed socket's queue binding
/// asynchronously, so a second socket bound right after can be refused.
pub struct AfxdpSender {
    // Field order is drop order: rings unmap before the UMEM goes.
    tx: TxQueue,
    completion: CompQueue,
    _rx: RxQueue,
    _fill: FillQueue,
    free: Vec<FrameDesc>,
    in_flight: usize,
    umem: Umem,
}

impl AfxdpSender {
    /// Binds queue `queue` of `ifname` in the calling thread's namespace;
    /// the socket may be used from any thread afterwards.
    pub fn open(ifname: &str, queue: u32) -> Result<Self> {
        const FRAMES: u32 = 4096;
        let ring = QueueSize::new(2048).map_err(|e| anyhow!("{e}"))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(2048).map_err(|e| anyhow!("{e}"))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let (umem, free) = Umem::new(umem_config, NonZeroU32::new(FRAMES).unwrap(), false)
            .map_err(|e| anyhow!("creating the UMEM: {e}"))?;
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let interface: Interface = ifname.parse().map_err(|_| anyhow!("bad interface name"))?;
        // SAFETY: the UMEM is used by this one socket only.
        let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &interface, queue) }
            .map_err(|e| anyhow!("AF_XDP socket on {ifname} queue {queue}: {e}"))?;
        let (fill, completion) = rings.ok_or_else(|| anyhow!("no completion ring"))?;
        Ok(Self {
            tx,
            completion,
            _rx: rx,
            _fill: fill,
            free,
            in_flight: 0,
            umem,
        })
    }

    /// Sends `template`'s frames until the pace's duration is over; `tick`
    /// gets the total sent after every chunk. Returns the frames sent.
    pub fn send(
        &mut self,
        template: &Template,
        pace: &Pace,
        mut tick: impl FnMut(u64),
    ) -> Result<u64> {
        let batch = pace.batch.max(1) as usize;
        let mut pending: Vec<FrameDesc> = Vec::with_capacity(batch);
        let mut done = vec![FrameDesc::default(); batch * 4];
        let start = Instant::now();
        let chunk = pace.chunk(65_536);
        let (mut sent, mut n) = (0u64, 0u64);
        while start.elapsed() < pace.duration {
            let chunk_end = sent + chunk;
            while sent < chunk_end {
                if self.in_flight > 0 {
                    // SAFETY: completed descriptors are frames of this UMEM
                    // the kernel is done with.
                    let back = unsafe { self.completion.consume(&mut done) };
                    self.in_flight -= back;
                    self.free.extend_from_slice(&done[..back]);
                }
                pending.clear();
                let room = (chunk_end - sent).min(batch as u64) as usize;
                while pending.len() < room {
                    let Some(mut desc) = self.free.pop() else {
                        break;
                    };
                    {
                        // SAFETY: the frame is in the free pool, owned by no
                        // ring.
                        let mut data = unsafe { self.umem.data_mut(&mut desc) };
                        let mut cursor = data.cursor();
                        cursor.set_pos(0);
                        cursor.write_all(&template.frame)?;
                        write_frame(data.contents_mut(), template, n, monotonic_ns());
                    }
                    n += 1;
                    pending.push(desc);
                }
                // SAFETY: pending frames are owned by no ring until produced.
                let produced = unsafe { self.tx.produce(&pending) };
                self.free.extend_from_slice(&pending[produced..]);
                self.in_flight += produced;
                sent += produced as u64;
                // Copy mode sends only when kicked.
                let _ = self.tx.wakeup();
            }
            tick(sent);
            pace.wait_for(start, sent);
        }
        self.flush(&mut done);
        Ok(sent)
    }

    /// Kicks the kernel until every frame produced has been sent. Copy mode
    /// sends at most a few dozen frames per kick: frames left in the tx ring
    /// would otherwise go out at the start of the next run, with their old
    /// stamps, and read there as milliseconds of latency.
    fn flush(&mut self, done: &mut [FrameDesc]) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while self.in_flight > 0 && Instant::now() < deadline {
            let _ = self.tx.wakeup();
            // SAFETY: completed descriptors are frames of this UMEM the
            // kernel is done with.
            let back = unsafe { self.completion.consume(done) };
            self.in_flight -= back;
            self.free.extend_from_slice(&done[..back]);
        }
    }
}

/// Longest a sender waits for the kernel to take the frames it queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `template`'s frames from a new AF_XDP socket on queue `queue` of
/// `ifname` until the pace's duration is over.
pub fn run_afxdp(
    ifname: &str,
    queue: u32,
    template: &Template,
    pace: &Pace,
    tick: impl FnMut(u64),
) -> Result<u64> {
    AfxdpSender::open(ifname, queue)?.send(template, pace, tick)
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::programs::ProgramError;
    use aya::sys::SyscallError;

    use super::*;

    fn refused(errno: i32) -> anyhow::Error {
        anyhow::Error::new(XdpError::TestRun {
            program: "pktgen",
            source: Box::new(ProgramError::SyscallError(SyscallError {
                call: "bpf_prog_test_run",
                io_error: io::Error::from_raw_os_error(errno),
            })),
        })
        .context("BPF_PROG_TEST_RUN (live frames) of pktgen")
    }

    #[test]
    fn a_live_frames_refusal_is_recognised_and_its_cause_printed() {
        let error = refused(libc::EPERM);
        assert!(live_frames_refused(&error));
        let printed = format!("{error:?}");
        assert!(
            printed.contains("BPF_PROG_TEST_RUN of the pktgen program")
                && printed.contains("Operation not permitted"),
            "{printed}"
        );
    }

    #[test]
    fn other_failures_are_not_taken_for_a_refusal() {
        assert!(!live_frames_refused(&refused(libc::EINVAL)));
    }
}
