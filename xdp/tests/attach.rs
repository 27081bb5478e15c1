//! Attaching and detaching the steering program on veths in throwaway
//! network namespaces. Needs root.

mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
};

use common::NetNs;
use switchyard_xdp::{AttachMode, AttachedMode, Steering, XdpError};

/// `ip -n <ns> link show dev <ifname>`.
fn link(ns: &NetNs, ifname: &str) -> String {
    ns.ip(&["link", "show", "dev", ifname])
}

#[test]
fn native_attach_on_veth_reports_native_and_detach_all_removes_it() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        assert_eq!(
            steering.attach("lb0", AttachMode::Native).unwrap(),
            AttachedMode::Native
        );
        let shown = link(&ns, "lb0");
        assert!(shown.contains("prog/xdp"), "{shown}");
        assert!(!shown.contains("xdpgeneric"), "{shown}");

        steering.detach_all().unwrap();
        assert_eq!(steering.attached().count(), 0);
        let all = ns.ip(&["link", "show"]);
        assert!(!all.contains("xdp"), "{all}");
    });
}

#[test]
fn auto_attach_on_veth_is_native() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        let mode = steering.attach("lb0", AttachMode::Auto).unwrap();
        assert_eq!(mode, AttachedMode::Native);
        assert_eq!(mode.to_string(), "native");
    });
}

#[test]
fn auto_falls_back_to_generic_where_the_driver_has_no_xdp() {
    let ns = NetNs::new();
    // The bridge driver implements no native XDP.
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        let err = steering.attach("br0", AttachMode::Native).unwrap_err();
        assert!(
            matches!(
                err,
                XdpError::Attach {
                    mode: AttachedMode::Native,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("br0"), "{err}");
        assert_eq!(
            steering.attach("br0", AttachMode::Auto).unwrap(),
            AttachedMode::Generic
        );
        let shown = link(&ns, "br0");
        assert!(shown.contains("xdpgeneric"), "{shown}");
    });
}

#[test]
fn generic_attach_reports_generic() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        assert_eq!(
            steering.attach("lb0", AttachMode::Generic).unwrap(),
            AttachedMode::Generic
        );
        let shown = link(&ns, "lb0");
        assert!(shown.contains("xdpgeneric"), "{shown}");
    });
}

#[test]
fn dropping_steering_detaches() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        steering.attach("lb0", AttachMode::Native).unwrap();
        drop(steering);
    });
    let shown = link(&ns, "lb0");
    assert!(!shown.contains("xdp"), "{shown}");
}

#[test]
fn interface_owned_by_another_program_is_busy_and_says_how_to_free_it() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut first = Steering::load().unwrap();
        first.attach("lb0", AttachMode::Native).unwrap();
        let mut second = Steering::load().unwrap();
        for mode in [AttachMode::Native, AttachMode::Auto, AttachMode::Generic] {
            let err = second.attach("lb0", mode).unwrap_err();
            assert!(matches!(err, XdpError::Busy { .. }), "{mode:?}: {err:?}");
            let message = err.to_string();
            assert!(message.contains("ip link set dev lb0 xdp off"), "{message}");
            // A failed attach leaves no slot behind.
            assert_eq!(second.attached().count(), 0);
        }
    });
}

#[test]
fn unknown_interface_is_named_in_the_error() {
    let ns = NetNs::new();
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        let err = steering.attach("nosuch0", AttachMode::Auto).unwrap_err();
        assert!(matches!(err, XdpError::UnknownInterface { .. }), "{err:?}");
        assert!(err.to_string().contains("nosuch0"), "{err}");
    });
}

#[test]
fn attaching_the_same_interface_twice_is_refused() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        steering.attach("lb0", AttachMode::Native).unwrap();
        let err = steering.attach("lb0", AttachMode::Native).unwrap_err();
        assert!(matches!(err, XdpError::AlreadyAttached { .. }), "{err:?}");
    });
}

#[test]
fn a_fifth_interface_gets_no_slot_until_one_is_freed() {
    let ns = NetNs::new();
    for n in 0..5 {
        ns.add_veth(&format!("lb{n}"), &format!("peer{n}"), 1);
    }
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        for n in 0..4 {
            steering
                .attach(&format!("lb{n}"), AttachMode::Native)
                .unwrap();
        }
        let slots: Vec<u32> = steering.attached().map(|i| i.slot).collect();
        assert_eq!(slots, [0, 1, 2, 3]);

        let err = steering.attach("lb4", AttachMode::Native).unwrap_err();
        assert!(
            matches!(err, XdpError::NoFreeSlot { max: 4, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("lb4"), "{err}");

        steering.detach_all().unwrap();
        steering.attach("lb4", AttachMode::Native).unwrap();
        assert_eq!(steering.attached().next().unwrap().slot, 0);
    });
}

#[test]
fn register_socket_checks_queue_attachment_and_socket_type() {
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut steering = Steering::load().unwrap();
        let socket = common::xdp_socket();
        let fd = socket.as_raw_fd();

        let err = steering.register_socket(1, 0, fd).unwrap_err();
        assert!(
            matches!(err, XdpError::NotAttached { ifindex: 1 }),
            "{err:?}"
        );

        steering.attach("lb0", AttachMode::Native).unwrap();
        let ifindex = steering.attached().next().unwrap().ifindex;
        let err = steering.register_socket(ifindex, 64, fd).unwrap_err();
        assert!(
            matches!(err, XdpError::QueueOutOfRange { queue: 64, max: 64 }),
            "{err:?}"
        );

        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let err = steering
            .register_socket(ifindex, 0, udp.as_raw_fd())
            .unwrap_err();
        assert!(matches!(err, XdpError::RegisterSocket { .. }), "{err:?}");
        assert!(err.to_string().contains("lb0 queue 0"), "{err}");

        steering.register_socket(ifindex, 63, fd).unwrap();
    });
}
