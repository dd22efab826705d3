//! Fault hooks: one service of a running site stopped and started again through
//! its admin API (`/api/faults/services`) and `maildr lab stop-service|start-service`,
//! seen from outside with real clients; and a lab without DNS steering, for drills
//! that must fail.
//!
//! Single sites listen on ephemeral 127.0.0.1 ports; each lab test has its own
//! `--net` and takes the one-lab lock. Every process is stopped by its pid (the
//! `SiteProcess` and `Lab` guards) when the test ends, pass or fail.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::dns::{mx_hosts, resolve};
use common::lab::{send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};
use common::{curl_json, SiteProcess};
use hickory_proto::rr::RecordType;
use serde_json::Value;

/// The lab's DNS port on every data site.
const DNS_PORT: u16 = 5353;
const TOKEN: &str = "fault-hooks-test-token-0123";
/// How long an open connection may take to be dropped once its service stops.
const DROP_WITHIN: Duration = Duration::from_secs(5);

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first line a server sends on `addr`, or why there is none.
fn greeting(addr: SocketAddr) -> Result<String, std::io::Error> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// A connection that has read its greeting and now waits.
fn open_session(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(DROP_WITHIN)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220") || line.starts_with("* OK"), "greeting on {addr}: {line}");
    reader
}

/// The server closed (or reset) `session` without a word: not a timeout.
fn assert_dropped(mut session: BufReader<TcpStream>, what: &str) {
    let mut rest = Vec::new();
    match session.read_to_end(&mut rest) {
        Ok(_) => {
            assert!(rest.is_empty(), "{what}: the server said {:?} instead of dropping", String::from_utf8_lossy(&rest))
        }
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{what}: still open {DROP_WITHIN:?} after the service stopped"
        ),
    }
}

fn site_with_api(hooks: bool) -> (tempfile::TempDir, SiteProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let sections = format!("[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[faults]\nhooks = {hooks}\n");
    let site = SiteProcess::start_with_sections(dir.path(), "", &sections);
    let api = format!("http://{}", site.endpoints["api"].as_str().expect("the site serves its API"));
    (dir, site, api)
}

fn addr(site: &SiteProcess, listener: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], site.port(listener)))
}

fn put_service(api: &str, service: &str, body: &str) -> (u16, Value) {
    curl_json("PUT", &format!("{api}/api/faults/services/{service}"), TOKEN, Some(body))
}

#[test]
fn a_site_without_fault_hooks_answers_404_and_keeps_every_service() {
    let (_dir, site, api) = site_with_api(false);
    for (method, service) in [("PUT", "imap"), ("PUT", "smtp"), ("PUT", "pop3")] {
        let (status, answer) = put_service(&api, service, r#"{"running":false}"#);
        assert_eq!(status, 404, "{method} {service}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("fault hooks are off"), "{answer}");
    }
    let (status, answer) = curl_json("GET", &format!("{api}/api/faults/services"), TOKEN, None);
    assert_eq!(status, 404, "{answer}");
    for listener in ["mx", "submission", "imap"] {
        let line = greeting(addr(&site, listener)).unwrap_or_else(|e| panic!("{listener}: {e}"));
        assert!(line.starts_with("220") || line.starts_with("* OK"), "{listener}: {line}");
    }
    site.stop();
}

#[test]
fn stopping_imap_closes_both_ports_and_drops_sessions_and_starting_listens_on_the_same_ports() {
    let (_dir, site, api) = site_with_api(true);
    let (plain, tls, mx) = (addr(&site, "imap"), addr(&site, "imaps"), addr(&site, "mx"));
    let session = open_session(plain);
    let (status, answer) = put_service(&api, "imap", r#"{"running":false}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["running"], false);
    let listed: Vec<String> =
        answer["listen"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(listed, [plain.to_string(), tls.to_string()]);
    assert_dropped(session, "the open IMAP session");
    assert!(refused(plain) && refused(tls), "IMAP still accepts connections");
    assert!(greeting(mx).unwrap().starts_with("220"), "SMTP must keep answering");
    // Stopping what is stopped changes nothing and says so.
    let (status, again) = put_service(&api, "imap", r#"{"running":false}"#);
    assert_eq!((status, &again), (200, &answer));
    let (_, services) = curl_json("GET", &format!("{api}/api/faults/services"), TOKEN, None);
    let running: Vec<(&str, bool)> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap(), s["running"].as_bool().unwrap()))
        .collect();
    assert_eq!(running, [("smtp", true), ("submission", true), ("imap", false)], "no DNS on a site alone");

    let (status, answer) = put_service(&api, "imap", r#"{"running":true}"#);
    assert_eq!((status, answer["running"].as_bool()), (200, Some(true)), "{answer}");
    // The ports were ephemeral: the same ones are bound again.
    assert!(greeting(plain).unwrap().starts_with("* OK"));
    assert!(TcpStream::connect_timeout(&tls, Duration::from_secs(2)).is_ok(), "the TLS port accepts connections again");
    site.stop();
}

#[test]
fn stopping_submission_closes_both_submission_ports_but_not_the_mx() {
    let (_dir, site, api) = site_with_api(true);
    let (submission, submissions, mx) = (addr(&site, "submission"), addr(&site, "submissions"), addr(&site, "mx"));
    let mx_session = open_session(mx);
    let (status, answer) = put_service(&api, "submission", r#"{"running":false}"#);
    assert_eq!((status, answer["running"].as_bool()), (200, Some(false)), "{answer}");
    assert!(refused(submission) && refused(submissions));
    assert!(greeting(mx).unwrap().starts_with("220"));
    // A session on another service is untouched: it still answers.
    let mut mx_session = mx_session;
    mx_session.get_mut().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(mx_session.get_mut(), b"NOOP\r\n").unwrap();
    assert_eq!(common::smtp_reply(&mut mx_session), Some(250));
    let (status, _) = put_service(&api, "submission", r#"{"running":true}"#);
    assert_eq!(status, 200);
    assert!(greeting(submission).unwrap().starts_with("220"));
    site.stop();
}

#[test]
fn unknown_or_absent_services_and_bad_bodies_are_refused_and_change_nothing() {
    let (_dir, site, api) = site_with_api(true);
    let list = || curl_json("GET", &format!("{api}/api/faults/services"), TOKEN, None);
    // The admin API may answer before the mail listeners have registered: wait
    // for them, so that "before" is the running site's list.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let (status, listed) = list();
        assert_eq!(status, 200, "{listed}");
        if listed["services"].as_array().is_some_and(|s| !s.is_empty()) {
            break listed;
        }
        assert!(Instant::now() < deadline, "no service registered within 10 s: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for (service, body, want, says) in [
        ("pop3", r#"{"running":false}"#, 404, "pop3"),
        ("SMTP", r#"{"running":false}"#, 404, "SMTP"),
        ("dns", r#"{"running":false}"#, 404, "runs no dns"),
        ("smtp", r#"{"running":0}"#, 422, "running"),
        ("smtp", r#"{"stop":true}"#, 422, "stop"),
        ("smtp", "not json", 400, "JSON"),
    ] {
        let (status, answer) = put_service(&api, service, body);
        assert_eq!(status, want, "{service} {body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{service} {body}: {answer}");
        assert_eq!(list().1, before, "{service} {body} changed the services");
    }
    assert!(greeting(addr(&site, "mx")).unwrap().starts_with("220"));
    site.stop();
}

/// What `site`'s DNS server says: (`mail.` addresses, MX hosts in order).
fn steering_seen_at(lab: &Lab, site: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ip = lab.ip(site);
    let mail = resolve(&ip, DNS_PORT, "mail.example.test.", RecordType::A)?;
    let mx = mx_hosts(&ip, DNS_PORT, "example.test.")?;
    Some((mail, mx))
}

fn steering(lab: &Lab, mail_site: &str, mx: &[&str]) -> (Vec<String>, Vec<String>) {
    (vec![lab.ip(mail_site)], mx.iter().map(|s| format!("{s}.example.test.")).collect())
}

/// Wait until `site`'s DNS answers `want`.
fn wait_for_dns(lab: &Lab, site: &str, want: &(Vec<String>, Vec<String>), within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = steering_seen_at(lab, site);
        if last.as_ref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{site}'s DNS never showed {want:?} within {within:?}; last {last:?}");
}

fn lab_ok(lab: &Lab, args: &[&str]) -> String {
    let out = lab.lab_cmd(args);
    assert!(out.status.success(), "lab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lab_refused(lab: &Lab, args: &[&str]) -> String {
    let out = lab.lab_cmd(args);
    assert!(!out.status.success(), "lab {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn services_of(lab: &Lab, site: &str) -> Vec<(String, bool)> {
    let (status, answer) = lab.api_call(site, "GET", "/api/faults/services", None);
    assert_eq!(status, 200, "{answer}");
    answer["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap().to_string(), s["running"].as_bool().unwrap()))
        .collect()
}

fn all_running(but: Option<&str>) -> Vec<(String, bool)> {
    ["smtp", "submission", "imap", "dns"].iter().map(|s| (s.to_string(), Some(*s) != but)).collect()
}

#[test]
fn stopping_dns_at_bj_silences_only_bj_dns_and_starting_it_restores_the_answers() {
    let _one = one_lab();
    let lab = Lab::up("127.121");
    lab.wait_for_primary_to_be("bj", "bj", Duration::from_secs(10));
    let normal = steering(&lab, "bj", &["bj", "sh"]);
    for site in ["bj", "sh"] {
        wait_for_dns(&lab, site, &normal, Duration::from_secs(10));
    }
    let said = lab_ok(&lab, &["stop-service", "bj", "dns"]);
    assert!(said.contains("dns at site bj is stopped"), "{said}");
    let bj_dns = SocketAddr::new(lab.ip("bj").parse().unwrap(), DNS_PORT);
    assert_eq!(
        resolve(&lab.ip("bj"), DNS_PORT, "mail.example.test.", RecordType::A),
        None,
        "bj's DNS still answers UDP"
    );
    assert!(refused(bj_dns), "bj's DNS still accepts TCP");
    // sh's DNS answers at once; what it answers follows the observers' health
    // verdicts, which a slow probe under load can flip for a moment (the full
    // suite once saw sh left out of the MX just then), so the steering is awaited.
    assert!(steering_seen_at(&lab, "sh").is_some(), "sh's DNS must keep answering");
    wait_for_dns(&lab, "sh", &normal, Duration::from_secs(10));
    assert_eq!(services_of(&lab, "bj"), all_running(Some("dns")));
    assert_eq!(services_of(&lab, "sh"), all_running(None));
    // bj's mail services and replication run on: mail sent to bj is read at bj and sh.
    assert_eq!(send_tagged(&lab.ip("bj"), "while-dns-stopped"), Told::Accepted);
    for site in ["bj", "sh"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lab.inbox(site).values().any(|s| s == "while-dns-stopped") {
            assert!(Instant::now() < deadline, "the message never reached {site}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Refusals, each leaving every service as it was.
    let err = lab_refused(&lab, &["stop-service", "bj", "pop3"]);
    assert!(err.contains("pop3") && err.contains("smtp, submission, imap, dns"), "{err}");
    let err = lab_refused(&lab, &["stop-service", "hz", "smtp"]);
    assert!(err.contains("hz is a witness site") && err.contains("no admin API"), "{err}");
    let err = lab_refused(&lab, &["stop-service", "xx", "smtp"]);
    assert!(err.contains("no site \"xx\""), "{err}");
    let (status, answer) = lab.api_call("bj", "PUT", "/api/faults/services/pop3", Some(r#"{"running":false}"#));
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["field"], "service");
    assert!(answer["error"].as_str().unwrap().contains("pop3"), "{answer}");
    assert_eq!(services_of(&lab, "bj"), all_running(Some("dns")));

    let said = lab_ok(&lab, &["start-service", "bj", "dns"]);
    assert!(said.contains("dns at site bj is running"), "{said}");
    assert_eq!(steering_seen_at(&lab, "bj").as_ref(), Some(&normal), "bj answers again at once, as before");
    assert_eq!(services_of(&lab, "bj"), all_running(None));
    // Starting what runs is harmless.
    lab_ok(&lab, &["start-service", "bj", "dns"]);
    assert_eq!(services_of(&lab, "bj"), all_running(None));
}

#[test]
fn stopping_smtp_at_bj_refuses_mx_connections_while_the_rest_of_bj_serves() {
    let _one = one_lab();
    let lab = Lab::up("127.122");
    let bj = lab.ip("bj");
    let mx: SocketAddr = format!("{bj}:2525").parse().unwrap();
    let session = open_session(mx);
    let said = lab_ok(&lab, &["stop-service", "bj", "smtp"]);
    assert!(said.contains("smtp at site bj is stopped"), "{said}");
    assert_dropped(session, "the open MX session at bj");
    assert!(refused(mx), "bj's MX port still accepts connections");
    assert_eq!(send_tagged(&bj, "to-stopped-mx"), Told::NoAnswer);
    // Submission is another service: it still greets at bj.
    assert!(greeting(format!("{bj}:2587").parse().unwrap()).unwrap().starts_with("220"));
    // sh accepts mail, replication brings it to bj, and IMAP at bj shows it.
    assert_eq!(send_tagged(&lab.ip("sh"), "via-sh"), Told::Accepted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab.inbox("bj").values().any(|s| s == "via-sh") {
        assert!(Instant::now() < deadline, "IMAP at bj never showed the message sent to sh");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab_ok(&lab, &["start-service", "bj", "smtp"]).trim(), format!("smtp at site bj is running ({mx})"));
    assert_eq!(send_tagged(&bj, "after-restart"), Told::Accepted);
    assert!(lab.inbox("bj").values().any(|s| s == "after-restart"));
}

#[test]
fn without_steering_dns_keeps_naming_the_dead_primary_after_a_failover() {
    let _one = one_lab();
    let lab = Lab::up_with("127.123", &["--no-steering"]);
    assert_eq!(lab.read_status()["steering"], false, "lab status --json records it");
    lab.wait_for_primary_to_be("bj", "bj", Duration::from_secs(10));
    // The first steering is committed as in any lab.
    let first = steering(&lab, "bj", &["bj", "sh"]);
    wait_for_dns(&lab, "sh", &first, Duration::from_secs(10));
    lab.kill("bj");
    let killed = Instant::now();
    let primary = lab.wait_for_primary("sh", Duration::from_secs(15), Some("bj"));
    assert_eq!(primary, "sh");
    // With steering, an elected primary points mail. at itself at once, and MX
    // drops bj once a majority calls it down (dns_failover.rs: both within a few
    // seconds). Wait until sh's observers do call bj down ...
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = lab.api_get("sh", "/api/health");
        let bj = health["verdicts"].as_array().unwrap().iter().find(|v| v["site"] == "bj").cloned().unwrap();
        if bj["majority_down"] == true {
            assert_eq!(bj["listed"], true, "bj was taken out of MX: {health:#}");
            assert_eq!(health["steering"]["primary"], "bj", "{health:#}");
            break;
        }
        assert!(Instant::now() < deadline, "sh's observers never called bj down: {health:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... then watch sh's DNS past the time steering would have moved it.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(steering_seen_at(&lab, "sh").as_ref(), Some(&first), "DNS moved without steering");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("sh's DNS still named bj {} ms after bj was killed", killed.elapsed().as_millis());
    let (_, events) = lab.api_call("sh", "GET", "/api/events", None);
    let elected: Vec<&Value> = events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "elected").collect();
    assert!(elected.iter().all(|e| e["site"] == "bj"), "only bj's first election is recorded: {elected:#?}");
}
