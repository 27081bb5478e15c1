//! Facts about the node's interfaces, read once at startup.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("interface {name} does not exist in this network namespace")]
    Unknown { name: String },
    #[error("reading the addresses of this node")]
    Addresses(#[source] io::Error),
    #[error(
        "interface {name} has MTU {mtu}, above {limit}: a frame of that size (with a VLAN \
         tag) does not fit one {frame_size}-byte AF_XDP frame, and the XDP program is \
         attached without multi-buffer (xdp.frags) support, so larger frames would be lost. \
         Lower it first (`ip link set dev {name} mtu {limit}`)"
    )]
    MtuTooLarge {
        name: String,
        mtu: u32,
        limit: u32,
        frame_size: u32,
    },
}

/// Bytes of each AF_XDP frame the kernel keeps ahead of the packet
/// (XDP_PACKET_HEADROOM, include/uapi/linux/bpf.h).
const XDP_PACKET_HEADROOM: u32 = 256;
/// An Ethernet header and one VLAN tag: what a frame adds to its IP
/// packet at most, a worker's pushed tag included.
const L2_OVERHEAD: u32 = 14 + 4;

/// The largest MTU whose frames, tagged, fit one AF_XDP frame of
/// `frame_size` bytes.
pub fn max_mtu(frame_size: u32) -> u32 {
    frame_size.saturating_sub(XDP_PACKET_HEADROOM + L2_OVERHEAD)
}

/// The MTU of `name`, if the kernel says (sysfs of this namespace).
pub fn mtu(name: &str) -> Option<u32> {
    fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Refuses an interface whose frames could be larger than one AF_XDP
/// frame: the kernel attaches the program anyway (a veth of MTU 3000 in
/// native mode, of 9000 in generic mode) and then drops what does not
/// fit, uncounted by Switchyard.
pub fn check_mtu(name: &str, mtu: u32, frame_size: u32) -> Result<(), InterfaceError> {
    let limit = max_mtu(frame_size);
    if mtu > limit {
        return Err(InterfaceError::MtuTooLarge {
            name: name.to_owned(),
            mtu,
            limit,
            frame_size,
        });
    }
    Ok(())
}

pub fn ifindex(name: &str) -> Result<u32, InterfaceError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| InterfaceError::Unknown {
        name: name.to_owned(),
    })
}

/// Receive queues the kernel exposes for `name` (at least 1).
pub fn rx_queue_count(name: &str) -> u32 {
    queue_count(name, "rx-")
}

/// Transmit queues the kernel's stack uses for `name` (at least 1): an
/// AF_XDP socket in copy mode sends through the one of its queue's number.
pub fn tx_queue_count(name: &str) -> u32 {
    queue_count(name, "tx-")
}

fn queue_count(name: &str, prefix: &str) -> u32 {
    fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// Every served receive queue needs a transmit queue of its number: a
/// worker sends what it received through its own socket's queue. Takes
/// `(name, receive queues, transmit queues)` with XDP attached.
pub fn check_transmit_queues(interfaces: &[(&str, u32, u32)]) -> Result<(), QueueError> {
    match interfaces.iter().find(|&&(_, rx, tx)| tx < rx) {
        Some(&(name, rx_queues, tx_queues)) => Err(QueueError::NoTransmitQueue {
            name: name.to_owned(),
            rx_queues,
            tx_queues,
        }),
        None => Ok(()),
    }
}

/// Why the workers cannot serve every receive queue of the interfaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error(
        "--queues {asked}: {name} has {rx_queues} receive queue(s); VIP traffic the NIC \
         hashes to a queue without a worker would reach the kernel untranslated. Serve \
         them all (leave out --queues), or give {name} fewer queues first \
         (`ethtool -L {name} combined {asked}`)"
    )]
    Unserved {
        asked: u32,
        name: String,
        rx_queues: u32,
    },
    #[error("--queues {asked}: {name} has only {rx_queues} receive queue(s)")]
    Missing {
        asked: u32,
        name: String,
        rx_queues: u32,
    },
    #[error(
        "the interfaces have different numbers of receive queues ({counts}): a worker needs a \
         socket on every interface's queue of its number, so give them the same number \
         (`ethtool -L IFACE combined N`)"
    )]
    Unequal { counts: String },
    #[error("--queues 0: at least one queue must be served")]
    Zero,
    #[error(
        "{name} receives on {rx_queues} queues but transmits on {tx_queues} with XDP attached: \
         the workers of queues {tx_queues} and up could not send what they receive. On \
         virtio_net these are the queue pairs the driver takes for XDP's own transmits when \
         the device has more than the guest has CPUs: give the VM's NIC as many queue pairs \
         as vCPUs (qemu: `-netdev tap,queues=N` and `-device virtio-net-pci,mq=on`; \
         libvirt: `<driver queues='N'/>`). Elsewhere, give {name} as many transmit queues \
         as receive queues (`ethtool -L {name} combined N`)"
    )]
    NoTransmitQueue {
        name: String,
        rx_queues: u32,
        tx_queues: u32,
    },
}

/// How many queues (and workers) serve `interfaces`, each `(name, receive
/// queues)`: every receive queue of every interface, since a queue without
/// an AF_XDP socket passes its VIP traffic to the kernel untranslated.
/// `asked` is `--queues`, which must then say the same.
pub fn queues_to_serve(interfaces: &[(&str, u32)], asked: Option<u32>) -> Result<u32, QueueError> {
    let Some(&(first, count)) = interfaces.first() else {
        return asked.filter(|&q| q > 0).ok_or(QueueError::Zero);
    };
    if interfaces.iter().any(|&(_, n)| n != count) {
        return Err(QueueError::Unequal {
            counts: interfaces
                .iter()
                .map(|(name, n)| format!("{name}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match asked {
        None => Ok(count),
        Some(0) => Err(QueueError::Zero),
        Some(asked) if asked < count => Err(QueueError::Unserved {
            asked,
            name: first.to_owned(),
            rx_queues: count,
        }),
        Some(asked) if asked > count => Err(QueueError::Missing {
            asked,
            name: first.to_owned(),
            rx_queues: count,
        }),
        Some(asked) => Ok(asked),
    }
}

/// The kernel driver behind `name` (`veth`, `virtio_net`, `mlx5_core`, ...),
/// as `ethtool -i` reports it; `None` when the interface does not say.
pub fn driver(name: &str) -> Option<String> {
    // struct ethtool_drvinfo (linux/ethtool.h): cmd, then driver[32] first.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut request: libc::ifreq = zeroed_ifreq();
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() {
        return None;
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: a plain datagram socket, closed below; the ioctl reads the
    // NUL-terminated name and writes at most size_of::<DrvInfo>() bytes to
    // `info` (the kernel copies struct ethtool_drvinfo, 196 bytes), which
    // lives until after the call.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut request);
        libc::close(fd);
        rc == 0
    };
    if !ok {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is a C struct of integers, arrays and a union of such;
    // all-zero bytes are a valid value of each.
    unsafe { std::mem::zeroed() }
}

/// Every IPv4 address configured on this node, so its own traffic is never
/// mistaken for a backend's reply.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, InterfaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| InterfaceError::Addresses(e.into()))?;
    let mut out: Vec<Ipv4Addr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every IPv6 address configured on this node, on every interface, for the
/// same reason as [`local_ipv4_addresses`]. Link-local addresses are
/// included: the node's own NDP and routing-protocol traffic uses them,
/// and none of it is a backend's reply. Addresses still in duplicate
/// address detection are included, as the kernel lists them. The same
/// link-local address on two interfaces appears once: without a zone, one
/// entry covers both.
pub fn local_ipv6_addresses() -> Result<Vec<Ipv6Addr>, InterfaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| InterfaceError::Addresses(e.into()))?;
    let mut out: Vec<Ipv6Addr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| a.as_sockaddr_in6().map(|s| s.ip()))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The addresses of interface `name`, with their prefix lengths, a flow
/// leaving by it can take as its source: IPv4, and IPv6 other than
/// link-local.
pub fn addresses_of(name: &str) -> Result<Vec<(IpAddr, u8)>, InterfaceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| InterfaceError::Addresses(e.into()))?;
    let mut out: Vec<(IpAddr, u8)> = addrs
        .filter(|ifa| ifa.interface_name == name)
        .filter_map(|ifa| {
            let address = ifa.address?;
            let netmask = ifa.netmask;
            let prefix = |bits: u128| bits.count_ones() as u8;
            if let Some(v4) = address.as_sockaddr_in() {
                let mask = netmask.and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip())));
                return Some((IpAddr::V4(v4.ip()), prefix(mask.unwrap_or(u32::MAX).into())));
            }
            let v6 = address.as_sockaddr_in6()?.ip();
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                return None;
            }
            let mask = netmask.and_then(|m| m.as_sockaddr_in6().map(|m| u128::from(m.ip())));
            Some((IpAddr::V6(v6), prefix(mask.unwrap_or(u128::MAX))))
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every address of this node, IPv4 then IPv6, each family sorted.
pub fn local_addresses() -> Result<Vec<IpAddr>, InterfaceError> {
    let v4 = local_ipv4_addresses()?;
    let v6 = local_ipv6_addresses()?;
    Ok(v4
        .into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_is_served_by_default() {
        assert_eq!(queues_to_serve(&[("eth0", 4), ("eth1", 4)], None), Ok(4));
        assert_eq!(queues_to_serve(&[("eth0", 2)], Some(2)), Ok(2));
    }

    #[test]
    fn fewer_queues_than_the_interface_has_is_refused_with_the_fix() {
        let err = queues_to_serve(&[("eth0", 2)], Some(1)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, QueueError::Unserved { .. }), "{text}");
        assert!(text.contains("eth0 has 2 receive queue(s)"), "{text}");
        assert!(text.contains("ethtool -L eth0 combined 1"), "{text}");
    }

    #[test]
    fn more_queues_than_the_interface_has_is_refused() {
        let err = queues_to_serve(&[("eth0", 2)], Some(3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--queues 3: eth0 has only 2 receive queue(s)"
        );
    }

    #[test]
    fn interfaces_with_different_queue_counts_are_refused_by_name() {
        let err = queues_to_serve(&[("eth0", 2), ("eth1", 1)], None).unwrap_err();
        assert!(err.to_string().contains("eth0: 2, eth1: 1"), "{err}");
    }

    /// In a fresh namespace: loopback addresses of both families, a global
    /// IPv6 address and a veth's link-local one are all the node's.
    #[test]
    fn local_addresses_include_ipv6_global_and_link_local() {
        use std::process::Command;
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: network namespaces need root");
            return;
        }
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = Netns(format!("swy-if-{}", std::process::id()));
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("running ip");
            assert!(status.success(), "ip {}", args.join(" "));
        };
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        #[rustfmt::skip]
        ip(&["-n", &ns.0, "addr", "add", "2001:db8::7/128", "dev", "lo", "nodad"]);
        #[rustfmt::skip]
        ip(&["-n", &ns.0, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        #[rustfmt::skip]
        ip(&["-n", &ns.0, "addr", "add", "fe80::77/64", "dev", "v0", "nodad"]);
        let path = format!("/run/netns/{}", ns.0);
        let addrs = std::thread::spawn(move || {
            let file = fs::File::open(&path).expect("opening the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            local_addresses()
        })
        .join()
        .expect("address thread")
        .expect("reading addresses");
        for want in ["127.0.0.1", "::1", "2001:db8::7", "fe80::77"] {
            let want: IpAddr = want.parse().unwrap();
            assert!(addrs.contains(&want), "{want} missing from {addrs:?}");
        }
    }

    #[test]
    fn a_receive_queue_without_a_transmit_queue_is_refused_with_the_fix() {
        assert!(check_transmit_queues(&[("eth0", 4, 4), ("eth1", 2, 8)]).is_ok());
        let err = check_transmit_queues(&[("eth0", 2, 2), ("eth1", 4, 2)]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("eth1 receives on 4 queues but transmits on 2"),
            "{text}"
        );
        assert!(text.contains("as many queue pairs as vCPUs"), "{text}");
    }

    #[test]
    fn zero_queues_is_refused() {
        assert_eq!(
            queues_to_serve(&[("eth0", 2)], Some(0)),
            Err(QueueError::Zero)
        );
    }

    #[test]
    fn an_mtu_whose_frames_do_not_fit_one_afxdp_frame_is_refused_with_the_limit() {
        assert_eq!(max_mtu(2048), 1774);
        assert!(check_mtu("eth0", 1500, 2048).is_ok());
        assert!(check_mtu("eth0", 1774, 2048).is_ok());
        let text = check_mtu("eth0", 9000, 2048).unwrap_err().to_string();
        assert!(text.contains("MTU 9000, above 1774"), "{text}");
        assert!(text.contains("ip link set dev eth0 mtu 1774"), "{text}");
        assert!(check_mtu("eth0", 3000, 4096).is_ok());
    }
}
