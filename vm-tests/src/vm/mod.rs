//! Switchyard in virtual machines: guests booted with qemu on a virtio-net
//! NIC whose host end is a tap inside a namespace the test created.
//!
//! - [`image`] builds the guest (a Debian cloud kernel and busybox, pinned by
//!   `vm-tests/vm/packages.lock`, plus the project's release binaries) into
//!   `target/vm/`, rebuilding only when an input changes.
//! - [`qemu`] boots it: KVM where `/dev/kvm` answers within a short
//!   deadline, software emulation (TCG) otherwise; a multi-queue tap, vhost
//!   where the host has it.
//! - [`console`] runs commands in the guest over its second serial port.
//! - [`lab`] wires a guest LB node to clients and backends in namespaces.
//!
//! Like the rest of the harness it never reaches outside the namespaces it
//! created and only signals processes it started (qemu among them).

pub mod console;
pub mod image;
pub mod kvm;
pub mod lab;
pub mod qemu;
