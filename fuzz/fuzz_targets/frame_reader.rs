//! Fuzz target `frame_reader`: see `handoff_fuzz::frame_reader` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| handoff_fuzz::frame_reader(data));
