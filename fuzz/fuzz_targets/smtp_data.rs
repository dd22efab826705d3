//! The bytes after DATA → the message (unstuffed, terminated, limited) → what is derived from it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_smtp::fuzzing::data(data));
