//! Pinning the steering program's link and maps in bpffs, and a second
//! loader taking them over: the program keeps running on the interface
//! between the two, the second reuses the first's flow cache, and
//! unpinning takes everything down. Each test mounts a bpffs of its own
//! (a bpffs mount is its own instance) and unmounts it at the end, which
//! drops whatever a failing test left pinned. Needs root.

mod common;

use std::{ffi::CString, net::Ipv4Addr, os::unix::ffi::OsStrExt, path::PathBuf};

use common::NetNs;
use switchyard_xdp::{
    pins::PinDir, ActionSpec, AttachMode, FlowAction, FlowCacheKey, LoadOptions, Steering,
};

/// A bpffs mounted on a fresh directory, unmounted and removed on drop.
struct Bpffs {
    dir: PathBuf,
}

impl Bpffs {
    fn mount() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "swy-xdp-pins-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        common::run(
            "mount",
            &["-t", "bpf", "bpf", dir.to_str().expect("a UTF-8 temp dir")],
        );
        Self { dir }
    }

    fn pins(&self) -> PinDir {
        PinDir::new(self.dir.join("node"))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let path = CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn options() -> LoadOptions {
    LoadOptions {
        flow_cache_capacity: 1024,
    }
}

fn entry() -> (FlowCacheKey, FlowAction) {
    let key = FlowCacheKey::new(
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 9, 0, 1),
        40000,
        80,
        6,
    );
    let action = FlowAction::from(ActionSpec {
        generation: 7,
        l2_epoch: 3,
        eth_dst: [2, 0, 0, 0, 0, 1],
        eth_src: [2, 0, 0, 0, 0, 2],
        ip_src: Ipv4Addr::new(10, 0, 0, 2),
        ip_dst: Ipv4Addr::new(10, 1, 0, 5),
        src_port: 40000,
        dst_port: 8080,
        ip_csum_diff: 1,
        l4_csum_diff: 2,
        egress_slot: 0,
        egress_ifindex: 0,
        stats_slot: 1,
    });
    (key, action)
}

fn attached(ns: &NetNs, ifname: &str) -> bool {
    ns.ip(&["link", "show", "dev", ifname]).contains("prog/xdp")
}

#[test]
fn a_second_loader_takes_over_the_pinned_link_and_the_flow_cache() {
    let bpffs = Bpffs::mount();
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    let (key, action) = entry();
    ns.run(|| {
        let mut first = Steering::load_pinned(&options(), bpffs.pins()).unwrap();
        assert!(!first.takeover().maps_reused);
        first.attach("lb0", AttachMode::Native).unwrap();
        let (written, err) = first.fast_path().install(&[key], &[action]);
        assert_eq!((written, err.map(|e| e.to_string())), (1, None));
        first.leave_pinned().unwrap();
        drop(first);
    });
    // No process holds the program: the pin keeps it on the interface.
    assert!(attached(&ns, "lb0"), "{}", ns.ip(&["link", "show"]));
    assert!(bpffs.pins().link("lb0").exists());

    ns.run(|| {
        let mut second = Steering::load_pinned(&options(), bpffs.pins()).unwrap();
        assert!(second.takeover().maps_reused);
        let found = second.fast_path().lookup(&key).unwrap();
        assert_eq!(found, Some(action));
        second.attach("lb0", AttachMode::Native).unwrap();
        assert_eq!(second.takeover().links_replaced, ["lb0"]);
        assert!(second.finish_takeover().unwrap().is_empty());
        second.detach_and_unpin().unwrap();
    });
    assert!(!attached(&ns, "lb0"), "{}", ns.ip(&["link", "show"]));
    assert!(!bpffs.pins().root().exists());
}

#[test]
fn maps_of_another_capacity_are_not_reused_and_are_removed_once_taken_over() {
    let bpffs = Bpffs::mount();
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    let (key, action) = entry();
    ns.run(|| {
        let mut first = Steering::load_pinned(&options(), bpffs.pins()).unwrap();
        first.attach("lb0", AttachMode::Native).unwrap();
        first.fast_path().install(&[key], &[action]);
        first.leave_pinned().unwrap();
    });
    let old_maps = bpffs.pins().maps(options().flow_cache_capacity);
    assert!(old_maps.exists());
    ns.run(|| {
        let other = LoadOptions {
            flow_cache_capacity: 2048,
        };
        let mut second = Steering::load_pinned(&other, bpffs.pins()).unwrap();
        assert!(!second.takeover().maps_reused);
        assert_eq!(second.fast_path().lookup(&key).unwrap(), None);
        second.attach("lb0", AttachMode::Native).unwrap();
        // The old program, on its own maps, runs until the new one's
        // sockets are in: only then is the link taken over.
        assert!(second.takeover().links_replaced.is_empty());
        assert_eq!(
            second.finish_takeover().unwrap(),
            std::slice::from_ref(&old_maps)
        );
        assert_eq!(second.takeover().links_replaced, ["lb0"]);
        second.detach_and_unpin().unwrap();
    });
    assert!(!old_maps.exists());
    assert!(!attached(&ns, "lb0"));
}

#[test]
fn a_pinned_link_whose_interface_is_gone_is_replaced_by_a_fresh_attach() {
    let bpffs = Bpffs::mount();
    let ns = NetNs::new();
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut first = Steering::load_pinned(&options(), bpffs.pins()).unwrap();
        first.attach("lb0", AttachMode::Native).unwrap();
        first.leave_pinned().unwrap();
    });
    ns.ip(&["link", "del", "lb0"]);
    ns.add_veth("lb0", "peer0", 1);
    ns.run(|| {
        let mut second = Steering::load_pinned(&options(), bpffs.pins()).unwrap();
        second.attach("lb0", AttachMode::Native).unwrap();
        assert!(second.takeover().links_replaced.is_empty());
        second.leave_pinned().unwrap();
    });
    assert!(attached(&ns, "lb0"));
    // Unmounting the bpffs (the guard's drop) is the last reference.
}
