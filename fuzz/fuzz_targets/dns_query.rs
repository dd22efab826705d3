//! A received DNS query → the server's answer from a fixed zone set, over UDP and TCP.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_dns::fuzzing::query(data));
