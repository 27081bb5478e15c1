//! libFuzzer entry of the `packet` target (see `switchyard_fuzz::packet`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::packet(data));
