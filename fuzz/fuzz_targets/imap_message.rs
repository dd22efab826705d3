//! Stored message bytes → ENVELOPE, BODYSTRUCTURE, sections, header fields.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_imap::fuzzing::message_views(data));
