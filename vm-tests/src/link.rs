//! Link-level facts and settings of interfaces inside a namespace: whether an
//! XDP program is attached, whether links are up, and the veth settings that
//! make a veth pair behave like a wire (GRO, checksum offload, XPS).
//!
//! Reads go through `ip -j`, so they report what the kernel reports; this
//! module never attaches or detaches programs itself.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::netns::{in_netns, Netns};
use crate::poll::poll_until;

/// `ip -n NS -j link show dev DEV`, parsed.
pub fn link_json(ns: &Netns, dev: &str) -> Result<Value> {
    let out = ns.ip(&["-j", "link", "show", "dev", dev])?;
    let parsed: Value = serde_json::from_str(&out)
        .with_context(|| format!("parsing `ip -j link` output {out:?}"))?;
    match parsed {
        Value::Array(mut links) if links.len() == 1 => Ok(links.remove(0)),
        other => bail!(
            "expected one link named {dev} in {}, got {other}",
            ns.name()
        ),
    }
}

/// Whether `dev` in `ns` has an XDP program attached (any mode): iproute2
/// prints an `xdp` object for the link exactly when one is.
pub fn xdp_attached(ns: &Netns, dev: &str) -> Result<bool> {
    Ok(link_json(ns, dev)?.get("xdp").is_some())
}

/// Waits until every named link in `ns` reports operstate UP.
pub fn wait_links_up(ns: &Netns, devs: &[&str], timeout: Duration) -> Result<()> {
    for dev in devs {
        poll_until(
            timeout,
            &format!("{dev} in {} to come up", ns.name()),
            || {
                let link = link_json(ns, dev)?;
                Ok((link["operstate"] == "UP").then_some(()))
            },
        )?;
    }
    Ok(())
}

/// Turns GRO on for a veth end.
///
/// A veth only accepts frames sent with XDP_TX or XDP_REDIRECT from its peer
/// when its receive side runs NAPI, which it does when it has an XDP program
/// or GRO on (kernel 5.13, "veth: allow enabling NAPI even without XDP").
/// A real switch port always receives; GRO on the LB's peers makes the veth
/// wire behave like one without loading a program into the test network.
pub fn set_gro(ns: &Netns, dev: &str, on: bool) -> Result<()> {
    set_feature(ns, dev, Feature::Gro, on)
}

/// Turns transmit checksum offload on or off for a veth end.
///
/// With it on, a veth hands its peer packets whose TCP/UDP checksum holds
/// only the pseudo-header sum (CHECKSUM_PARTIAL): the receiving stack trusts
/// the skb metadata, but an XDP program or AF_XDP socket sees just the bytes
/// and cannot tell. No real wire carries such frames, so senders towards the
/// LB turn it off and put full checksums on the "wire". (Turning it off also
/// turns off TSO, so no frame exceeds the MTU either, as on a wire.)
pub fn set_tx_checksum(ns: &Netns, dev: &str, on: bool) -> Result<()> {
    set_feature(ns, dev, Feature::TxChecksum, on)
}

/// Whether GRO is on for `dev` in `ns` (off on a new veth).
pub fn gro(ns: &Netns, dev: &str) -> Result<bool> {
    get_feature(ns, dev, Feature::Gro)
}

/// Whether transmit checksum offload is on for `dev` in `ns` (on for a new
/// veth).
pub fn tx_checksum(ns: &Netns, dev: &str) -> Result<bool> {
    get_feature(ns, dev, Feature::TxChecksum)
}

/// Spreads what `dev` transmits over its queues by sending CPU: queue q
/// gets the CPUs c with c mod queues = q (XPS, Documentation/networking/
/// scaling.rst). A veth delivers to the peer's receive queue of the same
/// index, so with this on the LB's peers, traffic sent from CPU c reaches
/// the LB on queue c mod queues instead of wherever the flow hash puts it.
pub fn spread_tx_queues_by_cpu(ns: &Netns, dev: &str, queues: u32) -> Result<()> {
    let cpus = online_cpus();
    for q in 0..queues {
        let mask = cpu_mask((0..cpus).filter(|c| c % queues == q));
        if mask.chars().all(|c| c == '0' || c == ',') {
            continue;
        }
        let path = format!("/sys/class/net/{dev}/queues/tx-{q}/xps_cpus");
        // `ip netns exec` mounts the namespace's own /sys; a thread that
        // only called setns would still see the host's.
        let out = ns
            .command("sh")
            .args(["-c", &format!("echo {mask} > {path}")])
            .output()
            .context("running sh")?;
        if !out.status.success() {
            bail!(
                "writing {mask} to {path} in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Online CPUs, counted as the kernel numbers them.
pub fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

/// A sysfs CPU mask: hex, in comma-separated 32-bit groups, highest first.
fn cpu_mask(cpus: impl Iterator<Item = u32>) -> String {
    let mut groups: Vec<u32> = Vec::new();
    for cpu in cpus {
        let g = (cpu / 32) as usize;
        if groups.len() <= g {
            groups.resize(g + 1, 0);
        }
        groups[g] |= 1 << (cpu % 32);
    }
    if groups.is_empty() {
        return "0".into();
    }
    groups
        .iter()
        .rev()
        .map(|g| format!("{g:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, Copy)]
enum Feature {
    Gro,
    TxChecksum,
}

impl Feature {
    /// (get, set) legacy ethtool commands, from linux/ethtool.h.
    fn commands(self) -> (u32, u32) {
        match self {
            Feature::Gro => (ETHTOOL_GGRO, ETHTOOL_SGRO),
            Feature::TxChecksum => (ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM),
        }
    }
}

fn set_feature(ns: &Netns, dev: &str, feature: Feature, on: bool) -> Result<()> {
    let dev_owned = dev.to_owned();
    in_netns(ns, move || ethtool_set(&dev_owned, feature, on))?.with_context(|| {
        format!(
            "setting {feature:?} {} on {dev} in {}",
            on_off(on),
            ns.name()
        )
    })?;
    Ok(())
}

fn get_feature(ns: &Netns, dev: &str, feature: Feature) -> Result<bool> {
    let dev_owned = dev.to_owned();
    let (get, _) = feature.commands();
    let value = in_netns(ns, move || ethtool_value(&dev_owned, get, 0))?
        .with_context(|| format!("reading {feature:?} of {dev} in {}", ns.name()))?;
    Ok(value != 0)
}

/// `struct ethtool_value` from linux/ethtool.h.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn ethtool_set(dev: &str, feature: Feature, on: bool) -> std::io::Result<()> {
    let (get, set) = feature.commands();
    ethtool_value(dev, set, u32::from(on))?;
    let now = ethtool_value(dev, get, 0)? != 0;
    if now != on {
        return Err(std::io::Error::other(format!(
            "still {} after asking for {}",
            on_off(now),
            on_off(on)
        )));
    }
    Ok(())
}

/// Issues one legacy ethtool ioctl with a `struct ethtool_value` and returns
/// its `data` afterwards.
fn ethtool_value(dev: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let name = dev.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!(
            "interface name {dev:?} too long"
        )));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads ifr (NUL-terminated name, checked length
    // above) and reads/writes `value`, which outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Creates the multi-queue tap `dev` in `ns` for a guest with `queues`
/// queue pairs, up, with no address: it is a switch port.
pub fn create_tap(ns: &Netns, dev: &str, queues: u32) -> Result<()> {
    let mut args = vec!["tuntap", "add", "dev", dev, "mode", "tap"];
    if queues > 1 {
        args.push("multi_queue");
    }
    ns.ip(&args)?;
    ns.ip(&["link", "set", "dev", dev, "up"])?;
    Ok(())
}
