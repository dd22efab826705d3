//! An SMTP session's input → command lines → parse → what the session evaluates.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_smtp::fuzzing::command(data));
