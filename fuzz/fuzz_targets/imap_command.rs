//! IMAP command bytes → decode → what the server evaluates on the arguments.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_imap::fuzzing::command(data));
