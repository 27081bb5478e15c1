//! libFuzzer entry of the `checksum` target (see `switchyard_fuzz::checksum`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::checksum(data));
