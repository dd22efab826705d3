//! kill -9 in the middle of a load: every message that got a 250 is in the store
//! after restart, exactly once, with an intact body.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const SENDERS: usize = 6;
const MESSAGES_PER_SENDER_MAX: usize = 400;
const LOAD_SECS_MAX: u64 = 60;

/// Send tagged messages until the connection breaks or the bounds are reached;
/// record each tag whose DATA got a 250.
fn sender(port: u16, id: usize, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    if smtp_reply(&mut r) != Some(220) || w.write_all(b"EHLO load.test\r\n").is_err() || smtp_reply(&mut r) != Some(250)
    {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECS_MAX);
    for i in 0..MESSAGES_PER_SENDER_MAX {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let tag = format!("crash-{id}-{i}");
        let to = if i % 2 == 0 { "alice@example.test" } else { "bob@example.test" };
        let envelope = format!("MAIL FROM:<load@outside.test>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
        if w.write_all(envelope.as_bytes()).is_err() {
            return;
        }
        if smtp_reply(&mut r) != Some(250) || smtp_reply(&mut r) != Some(250) || smtp_reply(&mut r) != Some(354) {
            return;
        }
        let body = format!(
            "Subject: {tag}\r\nMessage-ID: <{tag}@load.test>\r\n\r\n{}\r\n.\r\n",
            "payload line\r\n".repeat(64)
        );
        if w.write_all(body.as_bytes()).is_err() {
            return;
        }
        match smtp_reply(&mut r) {
            Some(250) => acked.lock().unwrap().push(tag),
            _ => return,
        }
    }
}

#[test]
fn every_acknowledged_message_survives_kill_9_exactly_once_and_intact() {
    let dir = provisioned_dir();
    let site = SiteProcess::start(dir.path());
    let port = site.port("mx");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..SENDERS)
        .map(|id| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || sender(port, id, acked, stop))
        })
        .collect();
    // Kill mid-load: once a good number of messages are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 150 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    site.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "the load acknowledged only {} messages before the kill", acked.len());

    // The site restarts on the crashed directory and stops cleanly.
    SiteProcess::start(dir.path()).stop();

    let mut seen: HashMap<String, usize> = HashMap::new();
    for account in ["alice@example.test", "bob@example.test"] {
        for m in messages(dir.path(), account) {
            assert_eq!(m["body_present"], true, "{m}");
            *seen.entry(m["subject"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    for tag in &acked {
        assert_eq!(seen.get(tag), Some(&1), "acknowledged {tag} must be stored exactly once");
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "store check after crash: {}", String::from_utf8_lossy(&check.stdout));
    println!("{} acknowledged before kill -9, {} stored (the rest were in flight)", acked.len(), seen.len());
}
