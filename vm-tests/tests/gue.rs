//! End to end, `gue` forwarding: the release daemon wraps each client
//! packet in outer IP + UDP to the listener's GUE port, the backends strip
//! it with `switchyard decap` and answer the client directly from the VIP
//! on their loopback. TCP and UDP, IPv4 and IPv6, both backends, with and
//! without the XDP fast path; the backends' decapsulation counts exactly
//! what the load balancer forwarded. Needs root and the release binaries.

use anyhow::Result;
use switchyard_vm_tests::encap::{check_direct_return, EncapLab};

/// Not the default port: the listener's `guePort` is what the outer
/// header carries, and what the backends' decap takes.
const GUE_PORT: u16 = 7777;

#[test]
fn gue_reaches_both_backends_which_answer_directly_with_the_fast_path() -> Result<()> {
    let lab = EncapLab::start("gue", Some(GUE_PORT), &["--fast-path", "on"])?;
    check_direct_return(&lab, "gue", &["gue"], true)
}

#[test]
fn gue_reaches_both_backends_which_answer_directly_without_the_fast_path() -> Result<()> {
    let lab = EncapLab::start("gue", Some(GUE_PORT), &["--fast-path", "off"])?;
    check_direct_return(&lab, "gue", &["gue"], false)
}
