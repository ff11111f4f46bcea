//! Fuzz target `ffi_decode`: see `handoff_fuzz::ffi_decode` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| handoff_fuzz::ffi_decode(data));
