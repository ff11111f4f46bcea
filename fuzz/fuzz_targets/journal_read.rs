//! Fuzz target `journal_read`: see `handoff_fuzz::journal_read` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| handoff_fuzz::journal_read(data));
