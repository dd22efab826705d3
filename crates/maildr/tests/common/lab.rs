//! A three-site lab (or four, with `--standby`) for tests: `maildr lab up` in a temporary directory on its own
//! loopback network, driven through the same commands an operator uses, and SMTP /
//! IMAP clients that record exactly what a sender was told.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Labs share two cores; one at a time keeps election timings honest.
pub static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn maildr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_maildr"))
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub net: String,
    status: Value,
}

impl Lab {
    /// Start a lab on `net` (e.g. "127.71"): sites bj, sh (data) and hz (witness).
    pub fn up(net: &str) -> Lab {
        Lab::up_with(net, &[])
    }

    /// Start a lab with extra `lab up` arguments.
    pub fn up_with(net: &str, extra: &[&str]) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().join("lab");
        let output = maildr()
            .args(["lab", "up", "--net", net, "--dir"])
            .arg(&dir_arg)
            .args(extra)
            .output()
            .expect("running maildr lab up");
        let mut lab = Lab { dir, net: net.to_string(), status: Value::Null };
        if !output.status.success() {
            // Drop still runs `lab down` for whatever was started.
            panic!(
                "lab up failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        lab.status = lab.read_status();
        lab
    }

    pub fn lab_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    pub fn lab_cmd(&self, args: &[&str]) -> Output {
        maildr().arg("lab").args(args).arg("--dir").arg(self.lab_dir()).output().unwrap()
    }

    pub fn read_status(&self) -> Value {
        let output = self.lab_cmd(&["status", "--json"]);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("lab status --json: {e}: {}", String::from_utf8_lossy(&output.stdout)))
    }

    fn site(&self, name: &str) -> &Value {
        self.status["sites"].as_array().unwrap().iter().find(|s| s["site"] == name).unwrap()
    }

    pub fn ip(&self, site: &str) -> String {
        self.site(site)["ip"].as_str().unwrap().to_string()
    }

    pub fn config(&self, site: &str) -> PathBuf {
        PathBuf::from(self.site(site)["config"].as_str().unwrap())
    }

    pub fn data_dir(&self, site: &str) -> PathBuf {
        PathBuf::from(self.site(site)["data_dir"].as_str().unwrap())
    }

    /// Every site of the lab, by name.
    pub fn sites(&self) -> Vec<String> {
        // Empty when `lab up` failed (the drop still collects logs and runs `lab down`).
        let sites = self.status["sites"].as_array().map(Vec::as_slice).unwrap_or_default();
        sites.iter().map(|s| s["site"].as_str().unwrap().to_string()).collect()
    }

    pub fn password(&self, address: &str) -> String {
        let accounts = self.status["accounts"].as_array().unwrap();
        let account = accounts.iter().find(|a| a["address"] == address).unwrap();
        account["password"].as_str().unwrap().to_string()
    }

    pub fn data_sites(&self) -> Vec<String> {
        vec!["bj".into(), "sh".into()]
    }

    /// `maildr cluster ARGS --config <site's config>`.
    pub fn cluster(&self, site: &str, args: &[&str]) -> Output {
        maildr().arg("cluster").args(args).arg("--config").arg(self.config(site)).output().unwrap()
    }

    /// `site`'s own Raft status (`SiteStatus` as JSON), asked through its own config;
    /// `Null` when it does not answer.
    pub fn site_status(&self, site: &str) -> Value {
        let status = self.cluster_status(site);
        let members = status["members"].as_array().cloned().unwrap_or_default();
        members.into_iter().find(|m| m["site"] == site).map(|m| m["status"].clone()).unwrap_or(Value::Null)
    }

    pub fn cluster_status(&self, site: &str) -> Value {
        let out = self.cluster(site, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The primary as seen from `site`'s configuration, waiting up to `within`.
    pub fn wait_for_primary(&self, asking: &str, within: Duration, not: Option<&str>) -> String {
        let deadline = Instant::now() + within;
        loop {
            let status = self.cluster_status(asking);
            if let Some(leader) = status["leader"].as_str() {
                if Some(leader) != not {
                    return leader.to_string();
                }
            }
            assert!(Instant::now() < deadline, "no primary (other than {not:?}) within {within:?}: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `asking` sees `site` as the primary.
    pub fn wait_for_primary_to_be(&self, asking: &str, site: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.cluster_status(asking);
            if status["leader"].as_str() == Some(site) {
                return;
            }
            assert!(Instant::now() < deadline, "{site} did not become primary within {within:?}: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until every member is reachable and has applied everything, with no
    /// body missing anywhere.
    pub fn wait_until_converged(&self, asking: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.cluster_status(asking);
            let members = status["members"].as_array().cloned().unwrap_or_default();
            let applied: Vec<Option<u64>> = members.iter().map(|m| m["applied_index"].as_u64()).collect();
            let converged = status["leader"].is_string()
                && members.len() == 3
                && members.iter().all(|m| m["reachable"] == true && m["missing_bodies"] == 0)
                && applied.iter().all(|a| a.is_some() && *a == applied[0]);
            if converged {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not converge within {within:?}: {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn verify(&self, asking: &str) -> Value {
        let out = self.cluster(asking, &["verify", "--json", "--messages"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "verify --json: {e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        report
    }

    /// GET `path` from `site`'s admin API with the lab's token, through curl; the
    /// JSON answer, which must be a success.
    pub fn api_get(&self, site: &str, path: &str) -> Value {
        let (status, body) = self.api_call(site, "GET", path, None);
        assert!((200..300).contains(&status), "GET {path} at {site}: {status} {body}");
        body
    }

    /// `method path` on `site`'s admin API with the lab's token (curl); the status
    /// and the JSON answer, whatever the status.
    pub fn api_call(&self, site: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let token = self.status["api_token"].as_str().expect("lab status has the API token");
        super::curl_json(method, &format!("http://{}:2780{path}", self.ip(site)), token, body)
    }

    pub fn links_control(&self) -> String {
        self.status["links"]["control"].as_str().unwrap().trim_start_matches("http://").to_string()
    }

    /// PUT faults on one link through the fault proxy's HTTP control.
    pub fn set_link(&self, name: &str, faults: &str) {
        let status = http(&self.links_control(), "PUT", &format!("/links/{name}/faults"), faults);
        assert_eq!(status, 200, "setting faults on {name}");
    }

    pub fn heal_link(&self, name: &str) {
        let status = http(&self.links_control(), "POST", &format!("/links/{name}/heal"), "");
        assert_eq!(status, 200, "healing {name}");
    }

    /// Cut `site` off from every other site, both ways.
    pub fn partition(&self, site: &str) {
        for other in ["bj", "sh", "hz"].into_iter().filter(|o| *o != site) {
            let cut = r#"{"forward":{"blackhole":true},"backward":{"blackhole":true}}"#;
            self.set_link(&format!("{site}-{other}"), cut);
            self.set_link(&format!("{other}-{site}"), cut);
        }
    }

    pub fn heal_all(&self) {
        for a in ["bj", "sh", "hz"] {
            for b in ["bj", "sh", "hz"].into_iter().filter(|b| *b != a) {
                self.heal_link(&format!("{a}-{b}"));
            }
        }
    }

    pub fn kill(&self, site: &str) {
        ok(self.lab_cmd(&["kill", site]), &format!("lab kill {site}"));
    }

    pub fn start(&self, site: &str) {
        ok(self.lab_cmd(&["start", site]), &format!("lab start {site}"));
    }

    pub fn pause(&self, site: &str) {
        ok(self.lab_cmd(&["pause", site]), &format!("lab pause {site}"));
    }

    pub fn resume(&self, site: &str) {
        ok(self.lab_cmd(&["resume", site]), &format!("lab resume {site}"));
    }

    /// Subjects by UID in alice's INBOX as IMAP at `site` shows them.
    pub fn inbox(&self, site: &str) -> BTreeMap<u32, String> {
        imap_subjects(&self.ip(site), "alice@example.test", &self.password("alice@example.test"))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for site in self.sites() {
            let path = self.lab_dir().join("sites").join(&site).join("serve.log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {site} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab logs at failure:\n{}", self.logs());
        }
        let _ = self.lab_cmd(&["down"]);
    }
}

/// One HTTP/1.1 request; returns the status code.
fn http(addr: &str, method: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// What a sender was told about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    Accepted,
    Deferred(u16),
    Refused(u16),
    NoAnswer,
}

/// Send one message tagged `tag` to alice through the MX of the site at `ip`.
pub fn send_tagged(ip: &str, tag: &str) -> Told {
    send_tagged_to(ip, "alice@example.test", tag)
}

/// Send one message tagged `tag` to `recipient` through the MX of the site at `ip`.
pub fn send_tagged_to(ip: &str, recipient: &str, tag: &str) -> Told {
    use maildr_client::smtp::{Envelope, Session, Step};
    let Ok(mx) = format!("{ip}:2525").parse() else { return Told::NoAnswer };
    let data = format!("Subject: {tag}\r\nMessage-ID: <{tag}@remote.test>\r\n\r\nbody of {tag}\r\n");
    let to = [recipient.to_string()];
    let envelope = Envelope { helo: "load.test", from: "load@remote.test", to: &to, data: data.as_bytes() };
    let told = |code: u16| if (400..500).contains(&code) { Told::Deferred(code) } else { Told::Refused(code) };
    super::block_on(async {
        let Ok(mut session) = Session::connect(mx, None, SMTP_REPLY_TIMEOUT).await else { return Told::NoAnswer };
        if session.banner().code != 220 {
            return told(session.banner().code);
        }
        let result = match session.ehlo("load.test").await {
            Ok(ehlo) if ehlo.code != 250 => told(ehlo.code),
            Ok(_) => match session.send_message(&envelope).await {
                Ok(outcome) if outcome.step == Step::Message && outcome.reply.code == 250 => Told::Accepted,
                Ok(outcome) => told(outcome.reply.code),
                Err(_) => Told::NoAnswer,
            },
            Err(_) => Told::NoAnswer,
        };
        session.quit().await;
        result
    })
}

/// How long a test's SMTP client waits for one reply.
const SMTP_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a test's IMAP client waits for one command's answer.
const IMAP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-IMAP session at a lab site, logged in.
async fn imap_login(ip: &str, user: &str, password: &str) -> maildr_client::imap::Session {
    let addr = format!("{ip}:2143").parse().expect("an IMAP address");
    let mut session =
        maildr_client::imap::Session::connect(addr, None, IMAP_COMMAND_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    session.login(user, password).await.unwrap_or_else(|e| panic!("{e}"));
    session
}

/// UID → Subject of every message in the INBOX, read over plain IMAP.
pub fn imap_subjects(ip: &str, user: &str, password: &str) -> BTreeMap<u32, String> {
    super::block_on(async {
        let mut imap = imap_login(ip, user, password).await;
        imap.select("INBOX").await.unwrap_or_else(|e| panic!("{e}"));
        let fetched =
            imap.uid_fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])").await.unwrap_or_else(|e| panic!("{e}"));
        imap.leave().await;
        let mut out = BTreeMap::new();
        for response in fetched {
            let uid = response.line.split("UID ").nth(1).and_then(|s| s.split_whitespace().next());
            let Some(uid) = uid.and_then(|u| u.parse().ok()) else { continue };
            let text = response.literals.first().map(|l| String::from_utf8_lossy(l).into_owned()).unwrap_or_default();
            let subject = text.trim().strip_prefix("Subject: ").unwrap_or(text.trim()).to_string();
            out.insert(uid, subject);
        }
        out
    })
}

/// APPEND a small message to the INBOX over plain IMAP at `ip`; returns the status
/// of the tagged answer (`OK`, or e.g. `NO [UNAVAILABLE] ...`).
pub fn imap_append(ip: &str, user: &str, password: &str, subject: &str) -> String {
    use maildr_client::imap::ImapError;
    super::block_on(async {
        let mut imap = imap_login(ip, user, password).await;
        let message = format!("Subject: {subject}\r\n\r\nappended\r\n");
        let answer = match imap.run(&format!("APPEND INBOX {{{}+}}\r\n{message}", message.len())).await {
            Ok(_) => "OK".to_string(),
            Err(ImapError::Refused { status, .. }) => status,
            Err(e) => panic!("{e}"),
        };
        imap.leave().await;
        answer
    })
}

/// The full text of every message in the INBOX at `ip`, read over plain IMAP.
pub fn imap_bodies(ip: &str, user: &str, password: &str) -> Vec<Vec<u8>> {
    super::block_on(async {
        let mut imap = imap_login(ip, user, password).await;
        imap.select("INBOX").await.unwrap_or_else(|e| panic!("{e}"));
        let fetched = imap.fetch("1:*", "(BODY.PEEK[])").await.unwrap_or_else(|e| panic!("{e}"));
        imap.leave().await;
        fetched.into_iter().filter_map(|r| r.literals.into_iter().next()).collect()
    })
}
