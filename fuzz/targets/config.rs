//! libFuzzer entry of the `config` target (see `switchyard_fuzz::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::config(data));
