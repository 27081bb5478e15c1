//! The seam between packet I/O and packet logic: the worker sees frames as
//! byte slices on numbered ports and answers with a verdict per frame, so the
//! same worker runs on AF_XDP sockets and on in-memory frames in tests.

/// What to do with one received frame after the worker looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this port.
    Transmit(usize),
    /// Send only the first `len` bytes of the frame out of `port`: the
    /// worker turned it into a shorter packet (a TCP reset).
    TransmitPrefix {
        port: usize,
        len: usize,
    },
    /// Send the frame out of `port` with `tag` (TPID, TCI) inserted after
    /// its MAC addresses: it came untagged and leaves by a VLAN. The frame
    /// grows by 4 bytes; one whose buffer has no room is dropped and
    /// counted (`BatchOutcome::no_room`).
    TransmitPushed {
        port: usize,
        tag: [u8; 4],
    },
    /// Send the frame out of `port` without the VLAN tag after its MAC
    /// addresses: it came tagged and leaves untagged (4 bytes shorter).
    TransmitPopped {
        port: usize,
    },
    /// Send the frame out of `port` with `head` in place of its L2 header:
    /// the packet, encapsulated toward its backend (`ipip`, `gue`). The
    /// frame grows by the outer headers; one whose buffer has no room is
    /// dropped and counted (`BatchOutcome::no_room`).
    TransmitEncapsulated {
        port: usize,
        head: crate::packet::EncapHead,
    },
    /// Send the frame out of `port` with a PROXY protocol header inserted
    /// into its TCP payload (and then the tag edit its link wants): the
    /// segment that starts a `fullnat` flow's stream. The frame grows by
    /// the header; one whose buffer has no room is dropped and counted
    /// (`BatchOutcome::no_room`).
    TransmitSpliced {
        port: usize,
        splice: crate::packet::Splice,
    },
    Drop,
}

impl Verdict {
    /// The port a frame forwarded on its flow's decision leaves by; `None`
    /// for a drop and for a frame turned into another packet
    /// (`TransmitPrefix`).
    pub fn forwarded_to(self) -> Option<usize> {
        match self {
            Verdict::Transmit(port)
            | Verdict::TransmitPushed { port, .. }
            | Verdict::TransmitPopped { port }
            | Verdict::TransmitEncapsulated { port, .. }
            | Verdict::TransmitSpliced { port, .. } => Some(port),
            Verdict::TransmitPrefix { .. } | Verdict::Drop => None,
        }
    }
}

/// Per-batch I/O counters, so the worker can count rx/tx without knowing
/// how the frames moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub received: usize,
    pub received_bytes: usize,
    pub transmitted: usize,
    pub transmitted_bytes: usize,
    /// Frames the worker wanted sent but the tx ring had no room for.
    pub tx_ring_full: usize,
    /// Frames that were to get a VLAN tag pushed or outer headers put in
    /// front but filled their buffer.
    pub no_room: usize,
}

/// What a batch's frames are handed to: the port a frame arrived on, its
/// bytes, and the frame that comes next in the batch if there is one, so
/// the handler can start fetching what it will need for that one. `next`,
/// when given, is exactly the bytes of the following call's frame (a
/// handler may keep what it read from it for that call), and no call
/// follows within the batch when it is `None`.
pub type Handler<'a> = dyn FnMut(usize, &mut [u8], Option<&[u8]>) -> Verdict + 'a;

pub trait PacketIo {
    /// Receives up to one batch from every port, hands each frame to
    /// `handle` and carries out the verdicts. Never blocks.
    fn run_batch(&mut self, handle: &mut Handler<'_>) -> BatchOutcome;

    /// Blocks until a port may have frames or `timeout_ms` passes; called
    /// only when the last batch was empty, so idle workers sleep instead of
    /// spinning and busy ones never make this syscall.
    fn wait(&mut self, timeout_ms: i32);
}

/// Frames in memory: what the unit tests and benchmarks feed the worker.
#[derive(Debug, Default)]
pub struct MemoryIo {
    /// (port, frame) waiting to be received.
    pub rx: std::collections::VecDeque<(usize, Vec<u8>)>,
    /// (port, frame) the worker transmitted.
    pub tx: Vec<(usize, Vec<u8>)>,
    pub batch_size: usize,
}

impl MemoryIo {
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            ..Self::default()
        }
    }
}

impl PacketIo for MemoryIo {
    fn run_batch(&mut self, handle: &mut Handler<'_>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for n in 0..self.batch_size {
            let Some((port, mut frame)) = self.rx.pop_front() else {
                break;
            };
            outcome.received += 1;
            outcome.received_bytes += frame.len();
            let next = self
                .rx
                .front()
                .filter(|_| n + 1 < self.batch_size)
                .map(|(_, f)| f.as_slice());
            let out = match handle(port, &mut frame, next) {
                Verdict::Transmit(out) => out,
                Verdict::TransmitPrefix { port, len } => {
                    frame.truncate(len);
                    port
                }
                Verdict::TransmitPushed { port, tag } => {
                    let len = frame.len();
                    frame.resize(len + tag.len(), 0);
                    if crate::packet::push_tag(&mut frame, len, tag).is_none() {
                        outcome.no_room += 1;
                        continue;
                    }
                    port
                }
                Verdict::TransmitPopped { port } => {
                    let len = frame.len();
                    match crate::packet::pop_tag(&mut frame, len) {
                        Some(len) => frame.truncate(len),
                        None => continue,
                    }
                    port
                }
                Verdict::TransmitEncapsulated { port, head } => {
                    let len = frame.len();
                    frame.resize(len + head.growth(), 0);
                    match crate::packet::replace_head(&mut frame, len, &head) {
                        Some(len) => frame.truncate(len),
                        None => {
                            outcome.no_room += 1;
                            continue;
                        }
                    }
                    port
                }
                Verdict::TransmitSpliced { port, splice } => {
                    let len = frame.len();
                    frame.resize(len + splice.header.len() + 4, 0);
                    match crate::packet::proxy::splice(&mut frame, len, &splice) {
                        Some(len) => frame.truncate(len),
                        None => {
                            outcome.no_room += 1;
                            continue;
                        }
                    }
                    port
                }
                Verdict::Drop => continue,
            };
            outcome.transmitted += 1;
            outcome.transmitted_bytes += frame.len();
            self.tx.push((out, frame));
        }
        outcome
    }

    fn wait(&mut self, _timeout_ms: i32) {}
}
