//! The drill service as a user meets it: `maildr drill serve` on loopback, people
//! with roles added through the CLI, a schedule due within a minute that runs a
//! real (short) drill against a lab as a child process, a webhook receiver and an
//! SMTP receiver (real servers in this test) that get the start, each phase in
//! order, and the end, an https webhook receiver whose certificate is trusted
//! through `--webhook-ca` and one whose certificate is not (a failed delivery,
//! recorded), a schedule in a blackout skipped and recorded, a schedule without
//! its approvals not run and recorded, runs due while the service was down
//! recorded as missed, and tokens whose role does not allow a request refused
//! with 403 and nothing changed.

// A harness whose setup fails is a failed test: its helpers unwrap like the tests
// (clippy's allow-unwrap-in-tests covers only the `#[test]` functions).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lab::{maildr, Lab, ONE_LAB_AT_A_TIME};
use common::{curl_json, KillOnDrop};
use serde_json::Value;

/// A webhook receiver: every POST's path and JSON body, answered 200. Serves at
/// most `CONNECTIONS_MAX` connections, each with a read deadline.
const CONNECTIONS_MAX: usize = 200;

fn webhook_receiver() -> (String, Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            let _ = serve_http(stream, &tx);
        }
    });
    (addr, rx)
}

/// An https webhook receiver on 127.0.0.1 with a certificate for 127.0.0.1
/// issued by a CA of its own: its address, the CA's PEM, and every POST.
fn tls_webhook_receiver() -> (String, String, Receiver<(String, Value)>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "drill service test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let der_key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else { continue };
            if stream.set_read_timeout(Some(Duration::from_secs(10))).is_err() {
                continue;
            }
            // A client that does not trust the certificate ends the handshake: nothing is received.
            let _ = answer_http(rustls::StreamOwned::new(connection, stream), &tx);
        }
    });
    (addr, ca.pem(), rx)
}

fn serve_http(stream: TcpStream, tx: &Sender<(String, Value)>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    answer_http(stream, tx)
}

/// Read one POST and answer 200.
fn answer_http<S: Read + Write>(stream: S, tx: &Sender<(String, Value)>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    for _ in 0..100 {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    let _ = tx.send((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    let stream = reader.get_mut();
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )?;
    stream.flush()
}

/// An SMTP receiver: the DATA of every message, answered 250.
fn smtp_receiver() -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(CONNECTIONS_MAX) {
            let Ok(stream) = stream else { continue };
            let _ = serve_smtp(stream, &tx);
        }
    });
    (addr, rx)
}

fn serve_smtp(mut stream: TcpStream, tx: &Sender<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    stream.write_all(b"220 receiver.test ESMTP\r\n")?;
    for _ in 0..50 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => stream.write_all(b"250-receiver.test\r\n250 8BITMIME\r\n")?,
            "DATA" => {
                stream.write_all(b"354 go ahead\r\n")?;
                let mut data = String::new();
                for _ in 0..10_000 {
                    let mut l = String::new();
                    if reader.read_line(&mut l)? == 0 || l == ".\r\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                let _ = tx.send(data);
                stream.write_all(b"250 2.0.0 queued\r\n")?;
            }
            "QUIT" => {
                stream.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => stream.write_all(b"250 ok\r\n")?,
        }
    }
    Ok(())
}

/// Everything received within `within`, until `done` holds for what was gathered.
fn gather<T>(rx: &Receiver<T>, seen: &mut Vec<T>, within: Duration, done: impl Fn(&[T]) -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if let Ok(item) = rx.recv_timeout(left.min(Duration::from_millis(500))) {
            seen.push(item);
        }
    }
    true
}

/// `maildr drill serve`, stopped by pid.
struct ServiceProcess {
    child: KillOnDrop,
    url: String,
    first_lines: Vec<String>,
}

fn start_service(data_dir: &Path, smtp: &str, webhook_ca: &Path) -> ServiceProcess {
    let mut child: Child = maildr()
        .args(["drill", "serve", "--listen", "127.0.0.1:0", "--smtp-relay", smtp, "--data-dir"])
        .arg(data_dir)
        .arg("--webhook-ca")
        .arg(webhook_ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting maildr drill serve");
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(100) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the service printed no address within 30 s: {lines:?}");
        let Ok(line) = rx.recv_timeout(left) else { continue };
        if let Some(addr) = line.strip_prefix("drill service listening on ") {
            return ServiceProcess { child, url: addr.to_string(), first_lines: lines };
        }
        lines.push(line);
    }
}

impl ServiceProcess {
    /// SIGTERM by pid, and a clean exit within 30 s.
    fn stop(mut self) {
        let pid = self.child.0.id();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                assert!(status.success(), "maildr drill serve exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "the service did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        maildr().arg("drill").args(args).args(["--service", &self.url, "--token", token]).output().unwrap()
    }

    fn cli_ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args);
        assert!(out.status.success(), "maildr drill {args:?}: {}", common::output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn get(&self, token: &str, path: &str) -> Value {
        let (status, body) = curl_json("GET", &format!("{}{path}", self.url), token, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn runs(&self, token: &str) -> Vec<Value> {
        let out = self.cli_ok(token, &["runs", "--json"]);
        serde_json::from_str::<Vec<Value>>(&out).unwrap()
    }

    /// Wait (bounded) until a run of `schedule` satisfies `pred`.
    fn wait_run(&self, token: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let runs = self.runs(token);
            if let Some(r) = runs.iter().find(|r| pred(r)) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no such run within {within:?}; runs: {runs:#?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn rfc3339(secs: u64) -> String {
    let out = Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A short drill: the secondary's DNS server stops for a second under a light load.
const PLAN: &str = r#"
name = "service-probe"
description = "The drill service test's short drill: one DNS server stops for a second."
target = { kind = "lab" }

[objectives]
rpo_messages = 0

[load]
smtp_per_second = 2
submissions_per_second = 1
imap_idle_sessions = 1
concurrency = 4

[probes]
retry_for_ms = 10000
dense_for_ms = 2000

[abort]
max_duration_ms = 300000

[[steps]]
phase = "confirm"
name = "The secondary's DNS server stops"
action = "dns_down"
site = "secondary"

[[steps]]
phase = "verify"
name = "A second passes"
until = "elapsed"
ms = 1000

[[rollback]]
phase = "review"
name = "Undo every fault"
action = "restore"
"#;

fn status_of(url: &str, method: &str, token: &str, body: Option<&str>) -> u16 {
    curl_json(method, url, token, body).0
}

/// Tokens whose role lacks the right get 403 and change nothing.
fn roles_are_enforced(svc: &ServiceProcess, admin: &str, viewer: &str, operator: &str, approver: &str, plan: &str) {
    let u = &svc.url;
    let users_before = svc.get(admin, "/users");
    let runs_before = svc.get(admin, "/runs");
    // An approval gate far in the future: nothing changes by itself meanwhile.
    let gated = svc.cli_ok(operator, &["schedule", "add", plan, "--cron", "0 0 0 1 1 *", "--approvals", "2"]);
    let schedules_before = svc.get(admin, "/schedules");
    let approve = format!("{u}/schedules/{gated}/approvals");
    let run_body = format!(r#"{{"scenario": "{plan}"}}"#);
    let schedule_body = format!(r#"{{"scenario": "{plan}", "cron": "* * * * * *"}}"#);
    for (token, method, url, body) in [
        (viewer, "POST", approve.clone(), None),
        (operator, "POST", approve.clone(), None),
        (admin, "POST", approve.clone(), None),
        (viewer, "POST", format!("{u}/runs"), Some(run_body.as_str())),
        (approver, "POST", format!("{u}/runs"), Some(run_body.as_str())),
        (viewer, "POST", format!("{u}/schedules"), Some(schedule_body.as_str())),
        (viewer, "DELETE", format!("{u}/schedules/{gated}"), None),
        (viewer, "POST", format!("{u}/stop"), Some("{}")),
        (operator, "POST", format!("{u}/users"), Some(r#"{"name": "mallory", "role": "admin"}"#)),
        (viewer, "GET", format!("{u}/users"), None),
        (viewer, "GET", format!("{u}/audit"), None),
    ] {
        assert_eq!(status_of(&url, method, token, body), 403, "{method} {url} with a token lacking the role");
    }
    assert_eq!(status_of(&format!("{u}/runs"), "GET", "not-a-token", None), 401);
    // The CLI says so too, and exits non-zero.
    let refused = svc.cli(viewer, &["schedule", "approve", &gated]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"), "{}", common::output_text(&refused));
    // Nothing changed: people, schedules, runs, no stop in force.
    assert_eq!(svc.get(admin, "/users"), users_before);
    assert_eq!(svc.get(admin, "/schedules"), schedules_before);
    assert_eq!(svc.get(admin, "/runs"), runs_before);
    // The one approver's approval counts once; the refused ones did not count at all.
    let answer = svc.cli_ok(approver, &["schedule", "approve", &gated]);
    assert!(answer.contains("approved: 1 of 2 (approver1)"), "{answer}");
    let again = svc.cli(approver, &["schedule", "approve", &gated]);
    assert!(!again.status.success(), "the same person approving twice is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("409"), "{}", common::output_text(&again));
    svc.cli_ok(operator, &["schedule", "remove", &gated]);
}

/// A skipped run's three deliveries: over http, over https to the receiver the
/// service trusts through `--webhook-ca`, and over https to one it does not
/// trust (failed, the certificate named, no secret recorded).
fn https_deliveries_are_verified(run: &Value, trusted: &str, untrusted: &str) {
    let notes = run["notifications"].as_array().unwrap();
    let to = |addr: &str| notes.iter().find(|n| n["to"].as_str().is_some_and(|t| t.contains(addr))).cloned();
    let ok = to(trusted).unwrap_or_else(|| panic!("a delivery to {trusted}: {run:#}"));
    assert_eq!(
        (ok["ok"].as_bool(), ok["to"].as_str()),
        (Some(true), Some(format!("https://{trusted}/tls-hook").as_str())),
        "{ok}"
    );
    let failed = to(untrusted).unwrap_or_else(|| panic!("a delivery to {untrusted}: {run:#}"));
    let error = failed["error"].as_str().unwrap_or_default();
    assert_eq!(failed["ok"], false, "{failed}");
    assert!(error.contains("certificate"), "the error names the certificate: {failed}");
    assert_eq!(failed["to"], format!("https://{untrusted}/…"));
    assert!(notes.iter().all(|n| !n.to_string().contains("SECRET")), "{run:#}");
}

#[test]
fn the_drill_service_runs_due_drills_notifies_skips_what_it_must_and_enforces_roles() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let plan_path = work.path().join("service-probe.toml");
    std::fs::write(&plan_path, PLAN).unwrap();
    let plan = plan_path.display().to_string();
    let (hook_addr, hooks) = webhook_receiver();
    let (smtp_addr, mails) = smtp_receiver();
    // Two https receivers: one whose CA the service is given, one whose CA it is not.
    let (tls_addr, tls_ca, tls_hooks) = tls_webhook_receiver();
    let (untrusted_addr, _, untrusted_hooks) = tls_webhook_receiver();
    let ca_file = work.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, &tls_ca).unwrap();
    let data_dir: PathBuf = work.path().join("service");
    let svc = start_service(&data_dir, &smtp_addr, &ca_file);

    // First start: the admin's token, printed once and kept with mode 0600.
    let admin_line = svc.first_lines.iter().find_map(|l| l.strip_prefix("admin token: ")).expect("the admin token");
    let admin = admin_line.to_string();
    let token_file = data_dir.join("admin.token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), admin);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let state = std::fs::read_to_string(data_dir.join("service.json")).unwrap();
    assert!(!state.contains(&admin), "only the token's SHA-256 is stored");
    let (status, doc) = curl_json("GET", &format!("{}/openapi.json", svc.url), "", None);
    assert_eq!(status, 200);
    for route in ["/schedules", "/schedules/{id}/approvals", "/runs", "/stop", "/history", "/trend.html", "/users"] {
        assert!(doc["paths"].get(route).is_some(), "OpenAPI lists {route}");
    }

    let viewer = svc.cli_ok(&admin, &["user", "add", "viewer1", "--role", "viewer"]);
    let operator = svc.cli_ok(&admin, &["user", "add", "operator1", "--role", "operator"]);
    let approver = svc.cli_ok(&admin, &["user", "add", "approver1", "--role", "approver"]);
    assert!(viewer.starts_with("mdt_") && viewer != operator && operator != approver);
    roles_are_enforced(&svc, &admin, &viewer, &operator, &approver, &plan);

    // A blackout around now, and a schedule needing an approval it does not have:
    // both due every two seconds, both skipped and recorded, the second notified
    // (over http, and over https to a trusted and an untrusted receiver).
    let hook = format!("webhook=http://{hook_addr}/hook?token=SECRET");
    let tls_hook = format!("webhook=https://{tls_addr}/tls-hook?token=SECRET");
    let untrusted_hook = format!("slack=https://{untrusted_addr}/services/T/B/SECRET");
    let now = now_secs();
    let blackout = format!("{}/{}", rfc3339(now - 3600), rfc3339(now + 3600));
    let blacked =
        svc.cli_ok(&operator, &["schedule", "add", &plan, "--cron", "*/2 * * * * *", "--blackout", &blackout]);
    let gated = svc.cli_ok(
        &operator,
        &[
            "schedule",
            "add",
            &plan,
            "--cron",
            "*/2 * * * * *",
            "--approvals",
            "1",
            "--notify",
            &hook,
            "--notify",
            &tls_hook,
            "--notify",
            &untrusted_hook,
        ],
    );
    let within = Duration::from_secs(20);
    let b = svc.wait_run(&viewer, within, |r| r["schedule_id"] == blacked.as_str());
    assert_eq!((b["verdict"].as_str(), b["reason"].as_str()), (Some("skipped"), Some("blackout")), "{b}");
    let g = svc.wait_run(&viewer, within, |r| {
        r["schedule_id"] == gated.as_str() && r["notifications"].as_array().is_some_and(|n| n.len() == 3)
    });
    assert_eq!((g["verdict"].as_str(), g["reason"].as_str()), (Some("skipped"), Some("no_approvals")), "{g}");
    svc.cli_ok(&operator, &["schedule", "remove", &blacked]);
    https_deliveries_are_verified(&g, &tls_addr, &untrusted_addr);
    let mut tls_seen = Vec::new();
    let told = gather(&tls_hooks, &mut tls_seen, within, |s| s.iter().any(|(_, b)| b["event"] == "skipped"));
    assert!(told, "the https receiver whose CA the service trusts got the notice: {tls_seen:?}");
    assert_eq!(tls_seen[0].0, "/tls-hook?token=SECRET");
    assert!(untrusted_hooks.try_recv().is_err(), "nothing was posted to the untrusted receiver");
    svc.cli_ok(&operator, &["schedule", "remove", &gated]);
    let mut seen = Vec::new();
    let told = gather(&hooks, &mut seen, within, |s| s.iter().any(|(_, b)| b["event"] == "skipped"));
    assert!(told, "a skipped run without approvals is notified: {seen:?}");
    let (path, skipped) = seen.iter().find(|(_, b)| b["event"] == "skipped").unwrap();
    assert_eq!(path, "/hook?token=SECRET");
    assert_eq!(skipped["reason"], "no_approvals");
    assert!(std::fs::read_dir(data_dir.join("runs")).map(|d| d.count()).unwrap_or(0) == 0, "no drill ran");

    // A schedule due within a minute runs a real drill against a lab.
    let lab = Lab::up("127.116");
    let lab_dir = lab.lab_dir().display().to_string();
    let due_second = (now_secs() + 10) % 60;
    let due = svc.cli_ok(
        &operator,
        &[
            "schedule",
            "add",
            &plan,
            "--cron",
            &format!("{due_second} * * * * *"),
            "--lab-dir",
            &lab_dir,
            "--notify",
            &hook,
            "--notify",
            "email=ops@example.test",
        ],
    );
    let started = svc.wait_run(&viewer, Duration::from_secs(30), |r| r["schedule_id"] == due.as_str());
    svc.cli_ok(&operator, &["schedule", "remove", &due]);
    assert_eq!(started["verdict"], "running", "{started}");
    let run_id = started["id"].as_str().unwrap().to_string();
    let done =
        svc.wait_run(&viewer, Duration::from_secs(420), |r| r["id"] == run_id.as_str() && r["verdict"] != "running");
    let run_dir = data_dir.join("runs").join(&run_id);
    let log = std::fs::read_to_string(run_dir.join("drill.log")).unwrap_or_default();
    println!("the scheduled run: {done:#}\ndrill.log:\n{log}");
    assert_eq!(done["verdict"], "passed", "{done:#}\ndrill.log:\n{log}");
    let report = done["report_path"].as_str().unwrap();
    assert!(Path::new(report).exists(), "{report}");
    assert!(done["drill_id"].as_str().is_some());

    // The webhook and the SMTP receiver got the start, each phase in order, and
    // the end, with the verdict and the report.
    let of_run = |s: &[(String, Value)], event: &str| {
        s.iter().any(|(_, b)| b["run_id"] == run_id.as_str() && b["event"] == event)
    };
    assert!(gather(&hooks, &mut seen, within, |s| of_run(s, "started") && of_run(s, "finished")), "{seen:#?}");
    let told: Vec<&str> = seen
        .iter()
        .filter(|(_, b)| b["run_id"] == run_id.as_str())
        .map(
            |(_, b)| {
                if b["event"] == "phase" {
                    b["phase"].as_str().unwrap_or("?")
                } else {
                    b["event"].as_str().unwrap()
                }
            },
        )
        .collect();
    // PLAN: the steady state and the DNS fault (confirm), the wait (verify), the
    // rollback and the drain (review).
    assert_eq!(told, ["started", "confirm", "verify", "review", "finished"], "{seen:#?}");
    let (_, confirm) = seen.iter().find(|(_, b)| b["run_id"] == run_id.as_str() && b["phase"] == "confirm").unwrap();
    assert_eq!(confirm["step"], "checking the steady state");
    assert!(confirm["text"].as_str().unwrap().contains("entered phase 1. Event confirmation"), "{confirm}");
    let (_, end) = seen.iter().find(|(_, b)| b["run_id"] == run_id.as_str() && b["event"] == "finished").unwrap();
    assert_eq!(end["verdict"], "passed");
    assert_eq!(end["report_path"].as_str(), Some(report));
    let mut mail = Vec::new();
    let both = gather(&mails, &mut mail, within, |m| {
        m.iter().any(|d| d.contains("started")) && m.iter().any(|d| d.contains("finished, verdict passed"))
    });
    assert!(both, "the SMTP receiver got the start and the end: {mail:#?}");
    assert!(mail.iter().all(|d| d.contains("To: ops@example.test")), "{mail:#?}");
    // Each delivery is recorded in the run and beside its report: two targets,
    // five notices each (started, three phases, finished).
    let notes = svc.wait_run(&viewer, within, |r| {
        r["id"] == run_id.as_str() && r["notifications"].as_array().is_some_and(|n| n.len() == 10)
    });
    let phases: Vec<&str> = notes["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "webhook")
        .filter_map(|n| n["phase"].as_str())
        .collect();
    assert_eq!(phases, ["confirm", "verify", "review"], "{notes:#}");
    for n in notes["notifications"].as_array().unwrap() {
        assert_eq!(n["ok"], true, "{n}");
        assert!(!n["to"].as_str().unwrap().contains("SECRET"), "{n}");
    }
    let file: Value = serde_json::from_slice(&std::fs::read(run_dir.join("notifications.json")).unwrap()).unwrap();
    assert_eq!(file.as_array().map(Vec::len), Some(10));

    // History and trend read the archived report.
    let history = svc.get(&viewer, "/history");
    let scenario = history["scenarios"].as_array().unwrap().iter().find(|s| s["scenario"] == "service-probe").unwrap();
    assert_eq!(scenario["runs"].as_array().unwrap().len(), 1);
    let page = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-H", &format!("Authorization: Bearer {viewer}")])
        .arg(format!("{}/trend.html", svc.url))
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(page.contains("<svg") && page.contains("service-probe"), "{page}");
    drop(lab);

    // Runs due while the service is down are recorded as missed, never run late
    // (a blackout covers the on-time ones, so no drill starts).
    let now = now_secs();
    let blackout = format!("{}/{}", rfc3339(now - 3600), rfc3339(now + 3600));
    let idle = svc.cli_ok(&operator, &["schedule", "add", &plan, "--cron", "*/2 * * * * *", "--blackout", &blackout]);
    svc.wait_run(&viewer, within, |r| r["schedule_id"] == idle.as_str());
    svc.stop();
    std::thread::sleep(Duration::from_secs(9));
    let svc = start_service(&data_dir, &smtp_addr, &ca_file);
    assert!(svc.first_lines.iter().all(|l| !l.contains("admin token")), "a token is shown on first start only");
    let missed = svc.wait_run(&viewer, within, |r| r["schedule_id"] == idle.as_str() && r["reason"] == "missed");
    assert_eq!(missed["verdict"], "skipped");
    svc.cli_ok(&operator, &["schedule", "remove", &idle]);
    let runs = svc.runs(&viewer);
    assert_eq!(runs.iter().filter(|r| r["verdict"] != "skipped").count(), 1, "one drill ran in all: {runs:#?}");

    // The audit log names every person, and its chain verifies.
    let audit = std::fs::read_to_string(data_dir.join("drills/audit.jsonl")).unwrap();
    let records: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let did = |actor: &str, action: &str| records.iter().any(|r| r["actor"] == actor && r["action"] == action);
    assert!(did("admin", "person_added"));
    assert!(did("operator1", "schedule_added"));
    assert!(did("approver1", "run_approved"));
    assert!(did("viewer1", "forbidden"));
    assert!(did("drill-service", "run_skipped") && did("drill-service", "run_finished"));
    let verify =
        maildr().args(["audit", "verify", "--file"]).arg(data_dir.join("drills/audit.jsonl")).output().unwrap();
    assert!(verify.status.success(), "{}", common::output_text(&verify));
    let auditor = svc.cli_ok(&admin, &["user", "add", "auditor1", "--role", "auditor"]);
    let view = svc.get(&auditor, "/audit");
    assert!(view["records"].as_u64().unwrap() >= records.len() as u64);
    svc.stop();
}
