//! Measuring programs (src/bpf/tools.c): a packet generator run through
//! BPF_PROG_TEST_RUN in live-frames mode, a counting and latency-measuring
//! sink, and the in-kernel XDP_TX / XDP_REDIRECT limits. The appliance
//! never loads them; benchmarks and tests do.

use std::time::Duration;

use aya::{
    maps::{xdp::DevMap, Array, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, Pod,
};

use crate::error::XdpError;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tools.o"));

/// `STAMP_MAGIC` in tools.c: "SWYP".
pub const STAMP_MAGIC: u32 = 0x5357_5950;
/// Bytes of the stamp pktgen writes after the L4 header.
pub const STAMP_LEN: usize = 16;
const SUB_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// `LATENCY_BUCKETS` in tools.c.
pub const LATENCY_BUCKETS: usize = 1024;

/// The programs of tools.c that attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Count, measure latency of stamped frames, drop.
    Sink,
    /// `XDP_TX` everything: the in-kernel hairpin limit.
    TxAll,
    /// Redirect everything to the port set by [`Tools::set_redirect_port`].
    RedirectAll,
    /// `XDP_PASS` everything: a receiver for XDP-transmitted frames.
    PassAll,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Sink => "sink",
            Tool::TxAll => "tx_all",
            Tool::RedirectAll => "redirect_all",
            Tool::PassAll => "pass_all",
        }
    }
}

/// Must match struct pktgen_config in xdp/src/bpf/tools.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PktgenConfig {
    /// Flows cycled through; 0 makes every frame a new flow.
    pub flows: u64,
    /// Low 32 bits of the first source address, host order.
    pub saddr_base: u32,
    pub saddr_count: u32,
    pub sport_base: u16,
    pub sport_count: u16,
    pub l3_off: u16,
    pub l4_off: u16,
    pub stamp_off: u16,
    /// The template's IPv4 header checksum, host order.
    pub ip_csum: u16,
    /// The template's L4 checksum, host order.
    pub l4_csum: u16,
    pub proto: u8,
    pub ipv6: u8,
    /// TCP: every n-th frame is a SYN, the others ACKs (0: no SYNs).
    pub syn_every: u32,
    /// Bytes of `head` the program restores into every frame.
    pub head_len: u32,
    /// Every n-th frame opens a new flow, numbered after the `flows` cycled
    /// ones (0: none).
    pub new_every: u32,
    pub pad: u32,
    /// The template's first bytes (headers and stamp): live-frames mode
    /// recycles pages with what the path under test wrote into them.
    pub head: [u8; HEAD_MAX],
}

/// `HEAD_MAX` in tools.c.
pub const HEAD_MAX: usize = 128;

impl Default for PktgenConfig {
    fn default() -> Self {
        Self {
            flows: 0,
            saddr_base: 0,
            saddr_count: 0,
            sport_base: 0,
            sport_count: 0,
            l3_off: 0,
            l4_off: 0,
            stamp_off: 0,
            ip_csum: 0,
            l4_csum: 0,
            proto: 0,
            ipv6: 0,
            syn_every: 0,
            head_len: 0,
            new_every: 0,
            pad: 0,
            head: [0; HEAD_MAX],
        }
    }
}

// SAFETY: #[repr(C)], integer fields and a byte array laid out without
// implicit padding (8 + 4*2 + 2*7 + 1*2 + 4*4 + 128 = 176 bytes, asserted
// below).
unsafe impl Pod for PktgenConfig {}
const _: () = assert!(std::mem::size_of::<PktgenConfig>() == 176);

/// Must match struct counters in xdp/src/bpf/tools.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Frames that carried a pktgen stamp (and are in the histogram).
    pub stamped: u64,
    pad: u64,
}

// SAFETY: #[repr(C)], four u64s.
unsafe impl Pod for SinkCounters {}

/// One-way latencies of stamped frames, sender's program to sink's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    /// Lowest value (ns) of bucket `i`.
    pub fn bucket_low(i: usize) -> u64 {
        if i < SUB_BUCKETS {
            return i as u64;
        }
        let e = (i - SUB_BUCKETS) / SUB_BUCKETS + SUB_BITS as usize;
        let m = (i - SUB_BUCKETS) % SUB_BUCKETS;
        let shift = e - SUB_BITS as usize;
        // (16 + m) < 2^5: from a shift of 60 on the value passes 2^64, which
        // no latency reaches (the program's top bucket holds u64::MAX).
        if shift >= 60 {
            return u64::MAX;
        }
        ((SUB_BUCKETS + m) as u64) << shift
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in ns, as the middle of its bucket; `None`
    /// when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let low = Self::bucket_low(i) as f64;
                let high = Self::bucket_low(i + 1) as f64;
                return Some((low + high) / 2.0);
            }
        }
        None
    }

    /// `self - earlier`, bucket by bucket.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

/// tools.o, loaded.
pub struct Tools {
    ebpf: Ebpf,
    links: Vec<(&'static str, XdpLinkId)>,
}

fn missing_map(name: &'static str) -> XdpError {
    XdpError::Missing { kind: "map", name }
}

fn map_read(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |source| XdpError::MapRead {
        map,
        source: Box::new(source),
    }
}

impl Tools {
    /// Loads every program of tools.o.
    pub fn load() -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|err| XdpError::LoadObject(Box::new(err)))?;
        for name in ["pktgen", "sink", "tx_all", "redirect_all", "pass_all"] {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| XdpError::LoadProgram {
                    name: "tools",
                    source: Box::new(source),
                })?;
        }
        Ok(Self {
            ebpf,
            links: Vec::new(),
        })
    }

    /// Attaches `tool` (native mode) to `ifname` in the calling thread's
    /// network namespace, until `self` is dropped.
    pub fn attach(&mut self, tool: Tool, ifname: &str) -> Result<(), XdpError> {
        let program = program_mut(&mut self.ebpf, tool.program())?;
        let link = program
            .attach(ifname, XdpMode::Driver)
            .map_err(|source| XdpError::Attach {
                ifname: ifname.to_owned(),
                mode: crate::AttachedMode::Native,
                source: Box::new(source),
            })?;
        self.links.push((tool.program(), link));
        Ok(())
    }

    /// Detaches everything this instance attached.
    pub fn detach_all(&mut self) {
        for (name, link) in self.links.drain(..) {
            if let Ok(program) = program_mut(&mut self.ebpf, name) {
                let _ = program.detach(link);
            }
        }
    }

    /// Where [`Tool::RedirectAll`] sends frames.
    pub fn set_redirect_port(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("redirect_port")
            .ok_or_else(|| missing_map("redirect_port"))?;
        let mut port: DevMap<&mut MapData> =
            DevMap::try_from(map).map_err(map_read("redirect_port"))?;
        port.set(0, ifindex, None, 0)
            .map_err(|source| XdpError::TxPort {
                ifname: format!("ifindex {ifindex}"),
                source: Box::new(source),
            })
    }

    fn per_cpu<V: Pod>(&self, name: &'static str) -> Result<PerCpuArray<&MapData, V>, XdpError> {
        let map = self.ebpf.map(name).ok_or_else(|| missing_map(name))?;
        PerCpuArray::try_from(map).map_err(map_read(name))
    }

    /// The sink's counters, summed over CPUs.
    pub fn sink(&self) -> Result<SinkCounters, XdpError> {
        let counters = self.per_cpu::<SinkCounters>("sink_counters")?;
        let per_cpu = counters.get(&0, 0).map_err(map_read("sink_counters"))?;
        Ok(per_cpu
            .iter()
            .fold(SinkCounters::default(), |sum, c| SinkCounters {
                packets: sum.packets + c.packets,
                bytes: sum.bytes + c.bytes,
                stamped: sum.stamped + c.stamped,
                pad: 0,
            }))
    }

    /// The sink's latency histogram, summed over CPUs.
    pub fn latency(&self) -> Result<LatencyHistogram, XdpError> {
        let buckets = self.per_cpu::<u64>("sink_latency")?;
        let mut counts = vec![0u64; LATENCY_BUCKETS];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = buckets
                .get(&(i as u32), 0)
                .map_err(map_read("sink_latency"))?
                .iter()
                .sum();
        }
        Ok(LatencyHistogram { counts })
    }

    /// Sets what pktgen generates.
    pub fn configure_pktgen(&mut self, config: &PktgenConfig) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("pktgen_config")
            .ok_or_else(|| missing_map("pktgen_config"))?;
        let mut array: Array<&mut MapData, PktgenConfig> =
            Array::try_from(map).map_err(map_read("pktgen_config"))?;
        array
            .set(0, config, 0)
            .map_err(|source| XdpError::MapUpdate {
                map: "pktgen_config",
                op: "insert",
                key: "0".into(),
                source: Box::new(source),
            })
    }

    /// Sends `count` frames made from `template` out of `ifindex` (of the
    /// calling thread's namespace), `batch` per kernel batch, with
    /// BPF_PROG_TEST_RUN's live-frames mode. Returns the time the kernel
    /// reports for the run.
    pub fn generate(
        &self,
        template: &[u8],
        ifindex: u32,
        count: u32,
        batch: u32,
    ) -> Result<Duration, XdpError> {
        let program = program(&self.ebpf, "pktgen")?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let frame_len = u32::try_from(template.len()).unwrap_or(u32::MAX);
        let fields = [0, frame_len, 0, ifindex, 0, 0];
        let mut ctx = [0u8; 24];
        for (chunk, field) in ctx.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        let options = TestRunOptions {
            data_in: Some(template),
            ctx_in: Some(&ctx),
            repeat: count,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::new()
        };
        let result = program.test_run(options).map_err(|err| XdpError::TestRun {
            program: "pktgen",
            source: Box::new(err),
        })?;
        Ok(result.duration)
    }

    /// Runs pktgen once on `template` (not live) and returns the frame it
    /// wrote and its verdict: what live mode would send.
    pub fn generate_one(&self, template: &[u8]) -> Result<(u32, Vec<u8>), XdpError> {
        let program = program(&self.ebpf, "pktgen")?;
        let mut out = vec![0u8; template.len() + 64];
        let options = TestRunOptions {
            data_in: Some(template),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let result = program.test_run(options).map_err(|err| XdpError::TestRun {
            program: "pktgen",
            source: Box::new(err),
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, XdpError> {
    let program = ebpf.program(name).ok_or(XdpError::Missing {
        kind: "program",
        name,
    })?;
    program.try_into().map_err(|source| XdpError::LoadProgram {
        name,
        source: Box::new(source),
    })
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, XdpError> {
    let program = ebpf.program_mut(name).ok_or(XdpError::Missing {
        kind: "program",
        name,
    })?;
    program.try_into().map_err(|source| XdpError::LoadProgram {
        name,
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS_C: &str = include_str!("bpf/tools.c");

    #[test]
    fn constants_match_tools_c() {
        let defines = crate::consts::c_defines(TOOLS_C);
        assert_eq!(defines.get("STAMP_MAGIC"), Some(&u64::from(STAMP_MAGIC)));
        assert_eq!(defines.get("SUB_BITS"), Some(&u64::from(SUB_BITS)));
        assert_eq!(
            defines.get("LATENCY_BUCKETS"),
            Some(&(LATENCY_BUCKETS as u64))
        );
    }

    #[test]
    fn buckets_cover_values_within_a_sixteenth() {
        // Up to the bucket of 2^60 ns, 36 years.
        for i in SUB_BUCKETS..SUB_BUCKETS + 57 * SUB_BUCKETS {
            let (low, high) = (
                LatencyHistogram::bucket_low(i),
                LatencyHistogram::bucket_low(i + 1),
            );
            assert!(high > low, "bucket {i}");
            assert!((high - low) as f64 <= low as f64 / 16.0 + 1.0, "bucket {i}");
        }
        assert_eq!(LatencyHistogram::bucket_low(16), 16);
        assert_eq!(LatencyHistogram::bucket_low(32), 32);
        assert_eq!(LatencyHistogram::bucket_low(33), 34);
    }

    #[test]
    fn quantiles_walk_the_buckets() {
        let mut counts = vec![0; LATENCY_BUCKETS];
        counts[10] = 90;
        counts[40] = 10;
        let h = LatencyHistogram { counts };
        assert_eq!(h.quantile(0.5), Some(10.5));
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 >= LatencyHistogram::bucket_low(40) as f64);
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }
}
