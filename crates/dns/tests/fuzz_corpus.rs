//! The DNS fuzz entry point (`maildr_dns::fuzzing::query`) over hand-made queries
//! and seeded mutations of them, so `cargo test` covers what `cargo fuzz`
//! explores. A failure prints its seed; `MAILDR_FUZZ_SEED=<seed>` replays it. With
//! `MAILDR_FUZZ_SEED_DIR=<dir>` the queries are also written to
//! `<dir>/dns_query/`, to seed cargo-fuzz.

use std::path::Path;

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

/// Mutated inputs; the whole test stays well under two seconds.
const MUTATIONS: usize = 3000;

fn message(queries: &[(&str, RecordType)], edns: Option<(u16, u8)>) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = 0x4d52;
    msg.metadata.recursion_desired = true;
    for (name, rtype) in queries {
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), *rtype));
    }
    if let Some((payload, version)) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload).set_version(version);
        msg.set_edns(opt);
    }
    msg
}

fn queries() -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    for (name, rtype) in [
        ("example.test.", RecordType::MX),
        ("example.test.", RecordType::NS),
        ("example.test.", RecordType::SOA),
        ("example.test.", RecordType::TXT),
        ("example.test.", RecordType::ANY),
        ("MAIL.Example.TEST.", RecordType::A),
        ("v6.example.test.", RecordType::AAAA),
        ("v6.example.test.", RecordType::A),
        ("nope.example.test.", RecordType::A),
        ("fra.eu.example.test.", RecordType::A),
        ("eu.example.test.", RecordType::MX),
        ("many.test.", RecordType::NS),
        ("outside.example.", RecordType::A),
        ("example.test.", RecordType::AXFR),
    ] {
        messages.push(message(&[(name, rtype)], None));
    }
    messages.push(message(&[("many.test.", RecordType::NS)], Some((4096, 0))));
    messages.push(message(&[("many.test.", RecordType::MX)], Some((600, 0))));
    messages.push(message(&[("example.test.", RecordType::MX)], Some((1232, 1))));
    messages.push(message(&[("example.test.", RecordType::A), ("sh.example.test.", RecordType::A)], None));
    messages.push(message(&[], None));
    // 300 questions: the FORMERR once repeated them all, past the UDP size limit.
    let many: Vec<(&str, RecordType)> = (0..300).map(|_| ("example.test.", RecordType::A)).collect();
    messages.push(message(&many, None));
    let mut chaos = message(&[], None);
    let mut version = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    version.set_query_class(DNSClass::CH);
    chaos.add_query(version);
    messages.push(chaos);
    let mut update = message(&[("example.test.", RecordType::SOA)], None);
    update.metadata.op_code = OpCode::Update;
    messages.push(update);
    let mut inputs: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec().unwrap()).collect();
    // Too short for a header; a response; a name whose pointer points at itself.
    inputs.push(vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0]);
    let mut response = inputs[0].clone();
    response[2] |= 0x80;
    inputs.push(response);
    inputs.push(vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    inputs
}

#[test]
fn query_entry_point_survives_the_queries_and_seeded_mutations() {
    let inputs = queries();
    if let Ok(dir) = std::env::var("MAILDR_FUZZ_SEED_DIR") {
        let dir = Path::new(&dir).join("dns_query");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }
    for input in &inputs {
        maildr_dns::fuzzing::query(input);
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
    // Bytes that make DNS counts, label lengths and pointers interesting.
    let interesting = [0x00, 0x01, 0x3f, 0x40, 0xc0, 0xff, 0x29];
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
        maildr_dns::fuzzing::query(&input);
    }
}
