//! libFuzzer entry of the `control` target (see `switchyard_fuzz::control`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::control(data));
