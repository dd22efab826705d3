//! Replication channel bytes → frames → PeerRequest / PeerResponse → round trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| maildr_cluster::fuzzing::frames(data));
