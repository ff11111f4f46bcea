//! Fuzz target `message_decode`: see `handoff_fuzz::message_decode` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| handoff_fuzz::message_decode(data));
