//! The replication channel's fuzz entry point (`maildr_cluster::fuzzing::frames`)
//! over sample connections of every channel and seeded mutations of them, so
//! `cargo test` covers what `cargo fuzz` explores. A failure prints its seed;
//! `MAILDR_FUZZ_SEED=<seed>` replays it. With `MAILDR_FUZZ_SEED_DIR=<dir>` the
//! samples are also written to `<dir>/wire_frame/`, to seed cargo-fuzz.

use std::path::Path;

/// Mutated inputs; the whole test stays well under two seconds.
const MUTATIONS: usize = 10_000;

#[test]
fn frame_entry_point_survives_the_samples_and_seeded_mutations() {
    let inputs = maildr_cluster::fuzzing::seeds();
    assert!(inputs.len() >= 8, "too few samples");
    if let Ok(dir) = std::env::var("MAILDR_FUZZ_SEED_DIR") {
        let dir = Path::new(&dir).join("wire_frame");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }
    for input in &inputs {
        maildr_cluster::fuzzing::frames(input);
    }
    let seed: u64 = std::env::var("MAILDR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    println!("MAILDR_FUZZ_SEED={seed}");
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // Bytes that make postcard lengths, tags and varints interesting.
    let interesting = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x10, 0x20];
    for round in 0..MUTATIONS {
        let mut input = inputs[round % inputs.len()].clone();
        for _ in 0..1 + next() % 4 {
            if input.is_empty() {
                input.push(0);
            }
            let i = (next() as usize) % input.len();
            match next() % 5 {
                0 => input[i] = next() as u8,
                1 => input[i] = interesting[(next() as usize) % interesting.len()],
                2 => input.insert(i, interesting[(next() as usize) % interesting.len()]),
                3 => {
                    input.remove(i);
                }
                _ => input.truncate(i),
            }
        }
        maildr_cluster::fuzzing::frames(&input);
    }
}
