//! The SMTP fuzz entry points (`maildr_smtp::fuzzing`) over a corpus of data files
//! and seeded mutations of it, so `cargo test` covers what `cargo fuzz` explores.
//!
//! Each file in `corpus/command/` (a session's input) and `corpus/data/` (what
//! follows DATA) is one input: every line of the file is sent with CRLF, and `\r`,
//! `\n`, `\xNN` and `{repeat N}text{/repeat}` expand. A failure prints its seed;
//! `MAILDR_FUZZ_SEED=<seed>` replays it. With `MAILDR_FUZZ_SEED_DIR=<dir>` the
//! inputs are also written to `<dir>/smtp_command/` and `<dir>/smtp_data/`, to
//! seed cargo-fuzz.

use std::path::Path;

/// Mutated inputs per entry point; the whole test stays well under two seconds.
const MUTATIONS: usize = 600;

#[test]
fn command_entry_point_survives_the_corpus_and_seeded_mutations() {
    let inputs = corpus("command");
    write_seeds("smtp_command", &inputs);
    for input in &inputs {
        maildr_smtp::fuzzing::command(input);
    }
    mutate(&inputs, b"<>:@.\r\n =\0", maildr_smtp::fuzzing::command);
}

#[test]
fn data_entry_point_survives_the_corpus_and_seeded_mutations() {
    let inputs = corpus("data");
    write_seeds("smtp_data", &inputs);
    for input in &inputs {
        maildr_smtp::fuzzing::data(input);
    }
    mutate(&inputs, b".\r\n:\t ", maildr_smtp::fuzzing::data);
}

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 4, "corpus {} too small", dir.display());
    files
        .iter()
        .map(|file| {
            let mut input = Vec::new();
            for line in std::fs::read_to_string(file).unwrap().lines() {
                input.extend_from_slice(&unescape(line));
                input.extend_from_slice(b"\r\n");
            }
            input
        })
        .collect()
}

fn unescape(line: &str) -> Vec<u8> {
    let mut s = line.to_string();
    while let Some(start) = s.find("{repeat ") {
        let n_end = s[start..].find('}').unwrap() + start;
        let n: usize = s[start + 8..n_end].parse().unwrap();
        let body_end = s.find("{/repeat}").unwrap();
        let body = s[n_end + 1..body_end].to_string();
        s = format!("{}{}{}", &s[..start], body.repeat(n), &s[body_end + 9..]);
    }
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (byte, len) = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'r')) => (b'\r', 2),
            (b'\\', Some(b'n')) => (b'\n', 2),
            (b'\\', Some(b'x')) if i + 3 < b.len() => (u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap(), 4),
            (c, _) => (c, 1),
        };
        out.push(byte);
        i += len;
    }
    out
}

fn write_seeds(target: &str, inputs: &[Vec<u8>]) {
    let Ok(dir) = std::env::var("MAILDR_FUZZ_SEED_DIR") else { return };
    let dir = Path::new(&dir).join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
    }
}

/// Runs `run` over `MUTATIONS` seeded mutations of `inputs`: bytes replaced,
/// inserted (often one of `interesting`), removed, and runs of bytes repeated.
/// Inputs beyond 16 KiB (lines over the DATA pending limit) run unmutated only:
/// mutating them would take the test past its time.
fn mutate(inputs: &[Vec<u8>], interesting: &[u8], run: impl Fn(&[u8])) {
    let inputs: Vec<&Vec<u8>> = inputs.iter().filter(|i| i.len() <= 16 * 1024).collect();
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
    for round in 0..MUTATIONS {
        let mut input = inputs[round % inputs.len()].clone();
        for _ in 0..1 + next() % 6 {
            if input.is_empty() {
                input.push(interesting[0]);
            }
            let i = (next() as usize) % input.len();
            match next() % 5 {
                0 => input[i] = next() as u8,
                1 => input.insert(i, interesting[(next() as usize) % interesting.len()]),
                2 => {
                    input.remove(i);
                }
                3 => {
                    let end = (i + 1 + (next() as usize) % 16).min(input.len());
                    let run: Vec<u8> = input[i..end].to_vec();
                    for _ in 0..next() % 64 {
                        input.splice(i..i, run.iter().copied());
                    }
                }
                _ => input.truncate(i),
            }
        }
        run(&input);
    }
}
