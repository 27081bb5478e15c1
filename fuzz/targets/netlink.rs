//! libFuzzer entry of the `netlink` target (see `switchyard_fuzz::netlink`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::netlink(data));
