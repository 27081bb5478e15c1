//! The decapsulation program (src/bpf/decap.c) a backend host runs for
//! `ipip` and `gue` forwarding (`switchyard decap`): loaded, given the
//! host's addresses and the GUE port, attached to one interface, its
//! counters read, and detached. It holds no state of the load balancer's;
//! whatever it does not recognise as a tunnel to this host passes.

use std::net::IpAddr;

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};

use crate::{
    attach::{AttachMode, AttachedMode},
    error::XdpError,
    maps::AddressSets,
    steering::XdpAction,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.o"));

const PROGRAM: &str = "decap";
const ADDRS: &str = "decap_addrs";
const ADDRS6: &str = "decap_addrs6";
const CONFIG: &str = "decap_config";
const STATS: &str = "decap_stats";
/// `MAX_DECAP_ADDRS` in decap.c, per family.
pub const MAX_DECAP_ADDRS: u32 = 256;

/// One of decap.c's counters. Must match enum decap_counter there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    Ipip = 0,
    Ip6Ip6 = 1,
    /// IPv6 in IPv4 or IPv4 in IPv6.
    IpMixed = 2,
    Gue = 3,
    /// Not a tunnel packet for this host: passed untouched.
    Passed = 4,
    /// A tunnel packet for this host that could not be stripped: dropped.
    Malformed = 5,
}

impl DecapCounter {
    pub const ALL: [DecapCounter; 6] = [
        DecapCounter::Ipip,
        DecapCounter::Ip6Ip6,
        DecapCounter::IpMixed,
        DecapCounter::Gue,
        DecapCounter::Passed,
        DecapCounter::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DecapCounter::Ipip => "ipip",
            DecapCounter::Ip6Ip6 => "ip6ip6",
            DecapCounter::IpMixed => "ip_mixed",
            DecapCounter::Gue => "gue",
            DecapCounter::Passed => "passed",
            DecapCounter::Malformed => "malformed",
        }
    }
}

/// Totals of every counter over all CPUs, in `DecapCounter::ALL` order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapCounters(pub [u64; 6]);

impl DecapCounters {
    pub fn get(&self, counter: DecapCounter) -> u64 {
        self.0[counter as usize]
    }

    /// Packets stripped of their outer headers, every kind.
    pub fn decapsulated(&self) -> u64 {
        self.0[..4].iter().sum()
    }
}

impl std::fmt::Display for DecapCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, counter) in DecapCounter::ALL.iter().enumerate() {
            if n > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", counter.name(), self.get(*counter))?;
        }
        Ok(())
    }
}

/// The loaded program, attached to at most one interface.
pub struct Decap {
    addrs: HashMap<MapData, u32, u8>,
    addrs6: HashMap<MapData, [u8; 16], u8>,
    config: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
    attached: Option<(String, XdpLinkId, AttachedMode)>,
    // Dropped last: dropping it detaches whatever is still attached.
    ebpf: Ebpf,
}

impl Decap {
    /// Loads the program, taking GUE to `gue_port` (none: IP-in-IP only).
    pub fn load(gue_port: Option<u16>) -> Result<Self, XdpError> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|err| XdpError::LoadObject(Box::new(err)))?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|source| XdpError::LoadProgram {
                name: PROGRAM,
                source: Box::new(source),
            })?;
        let mut config: Array<MapData, u32> = take_map(&mut ebpf, CONFIG)?;
        config
            .set(0, u32::from(gue_port.unwrap_or(0)), 0)
            .map_err(|source| XdpError::MapUpdate {
                map: CONFIG,
                op: "insert",
                key: "gue port".into(),
                source: Box::new(source),
            })?;
        Ok(Self {
            addrs: take_map(&mut ebpf, ADDRS)?,
            addrs6: take_map(&mut ebpf, ADDRS6)?,
            config,
            stats: take_map(&mut ebpf, STATS)?,
            attached: None,
            ebpf,
        })
    }

    /// Makes the program take tunnels to exactly `addrs` (the host's).
    pub fn set_addresses(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        AddressSets {
            v4: (&mut self.addrs, ADDRS),
            v6: (&mut self.addrs6, ADDRS6),
            capacity: MAX_DECAP_ADDRS,
        }
        .sync(addrs)
    }

    /// The GUE port the program takes (0: none).
    pub fn gue_port(&self) -> Result<u32, XdpError> {
        self.config.get(&0, 0).map_err(|source| XdpError::MapRead {
            map: CONFIG,
            source: Box::new(source),
        })
    }

    /// Attaches the program to `ifname` (in the calling thread's network
    /// namespace); returns the mode it runs in.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<AttachedMode, XdpError> {
        if self.attached.is_some() {
            return Err(XdpError::AlreadyAttached {
                ifname: ifname.to_owned(),
            });
        }
        let ifindex = crate::steering::if_nametoindex(ifname)?;
        let (link, mode) = match mode {
            AttachMode::Native => self.attach_in(ifname, ifindex, AttachedMode::Native)?,
            AttachMode::Generic => self.attach_in(ifname, ifindex, AttachedMode::Generic)?,
            AttachMode::Auto => match self.attach_in(ifname, ifindex, AttachedMode::Native) {
                Err(XdpError::Attach { source, .. }) => {
                    log::warn!(
                        "native XDP on {ifname} failed ({source}); falling back to generic mode"
                    );
                    self.attach_in(ifname, ifindex, AttachedMode::Generic)?
                }
                other => other?,
            },
        };
        self.attached = Some((ifname.to_owned(), link, mode));
        Ok(mode)
    }

    fn attach_in(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachedMode,
    ) -> Result<(XdpLinkId, AttachedMode), XdpError> {
        match program_mut(&mut self.ebpf)?.attach_to_if_index(ifindex, mode.xdp_mode()) {
            Ok(link) => Ok((link, mode)),
            Err(source) => Err(crate::steering::attach_error(ifname, mode, source)),
        }
    }

    /// Detaches the program from its interface, if attached.
    pub fn detach(&mut self) -> Result<(), XdpError> {
        let Some((ifname, link, _)) = self.attached.take() else {
            return Ok(());
        };
        program_mut(&mut self.ebpf)?
            .detach(link)
            .map_err(|source| XdpError::Detach {
                ifname,
                source: Box::new(source),
            })
    }

    /// Counter totals over all CPUs.
    pub fn counters(&self) -> Result<DecapCounters, XdpError> {
        let mut totals = DecapCounters::default();
        for counter in DecapCounter::ALL {
            let per_cpu =
                self.stats
                    .get(&(counter as u32), 0)
                    .map_err(|source| XdpError::MapRead {
                        map: STATS,
                        source: Box::new(source),
                    })?;
            totals.0[counter as usize] = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN): its verdict
    /// and the frame as it left the program.
    pub fn test_run(&self, frame: &[u8]) -> Result<(XdpAction, Vec<u8>), XdpError> {
        let program = self.ebpf.program(PROGRAM).ok_or(XdpError::Missing {
            kind: "program",
            name: PROGRAM,
        })?;
        let program: &Xdp = program.try_into().map_err(|source| XdpError::LoadProgram {
            name: PROGRAM,
            source: Box::new(source),
        })?;
        let mut out = vec![0u8; frame.len() + 256];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let result = program.test_run(options).map_err(|err| XdpError::TestRun {
            program: "decap",
            source: Box::new(err),
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((XdpAction::from_raw(result.return_value), out))
    }
}

impl std::fmt::Debug for Decap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decap")
            .field(
                "attached",
                &self.attached.as_ref().map(|(name, _, mode)| (name, mode)),
            )
            .finish()
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program = ebpf.program_mut(PROGRAM).ok_or(XdpError::Missing {
        kind: "program",
        name: PROGRAM,
    })?;
    program.try_into().map_err(|source| XdpError::LoadProgram {
        name: PROGRAM,
        source: Box::new(source),
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
