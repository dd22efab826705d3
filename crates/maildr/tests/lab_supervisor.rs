//! `maildr lab`: the supervisor brings up a whole three-site lab of real
//! processes, reports it, kills and restarts a site, replaces a lab it finds
//! running, and takes everything down without leaving a process behind.
//!
//! Every test runs on its own `--net` (so labs run side by side) and directory,
//! and its `Lab` guard runs `lab down` when the test ends, pass or fail.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::BIN;
use serde_json::Value;

fn maildr_lab(args: &[&str], dir: &Path) -> Output {
    let mut command = Command::new(BIN);
    command.arg("lab").args(args).arg("--dir").arg(dir);
    command.output().expect("running maildr lab")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A lab directory; `lab down` runs when it drops.
struct Lab {
    dir: tempfile::TempDir,
    net: &'static str,
}

impl Lab {
    fn new(net: &'static str) -> Lab {
        Lab { dir: tempfile::tempdir().unwrap(), net }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        maildr_lab(args, self.path())
    }

    fn up(&self) {
        let out = self.run(&["up", "--net", self.net, "--json"]);
        assert!(out.status.success(), "lab up failed: {}", text(&out));
    }

    /// `lab status --json`: whether it exited 0, and the JSON.
    fn status(&self) -> (bool, Value) {
        let out = self.run(&["status", "--json"]);
        let v =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", text(&out)));
        (out.status.success(), v)
    }

    fn ip(&self, third: u8) -> String {
        format!("{}.{third}.1", self.net)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.run(&["down"]);
        if !out.status.success() && !std::thread::panicking() {
            panic!("lab down failed: {}", text(&out));
        }
    }
}

/// Alive as the kernel sees it: present in /proc and not a zombie (the lab's
/// processes outlive `lab up`, so their reaper is init, which may be slow).
fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('Z' | 'X')),
    }
}

fn pids(status: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = status["sites"].as_array().unwrap().iter().filter_map(|s| s["pid"].as_u64()).collect();
    out.extend(status["links"]["pid"].as_u64());
    out
}

fn site<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sites"].as_array().unwrap().iter().find(|s| s["site"] == name).unwrap_or_else(|| panic!("no site {name}"))
}

/// How long a test's client waits for a server's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The SMTP banner of the server on `addr`.
fn greeting(addr: &str) -> String {
    let addr = addr.parse().expect("a socket address");
    let session = common::block_on(maildr_client::smtp::Session::connect(addr, None, CLIENT_TIMEOUT));
    session.map(|s| s.banner().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// LOGIN over plain IMAP; why it failed, if it did.
fn imap_login(addr: &str, user: &str, password: &str) -> Result<(), String> {
    let addr = addr.parse().expect("a socket address");
    common::block_on(async {
        let mut session =
            maildr_client::imap::Session::connect(addr, None, CLIENT_TIMEOUT).await.map_err(|e| e.to_string())?;
        session.login(user, password).await.map_err(|e| e.to_string())?;
        session.leave().await;
        Ok(())
    })
}

fn wait_until_gone(pids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|p| pid_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still alive: {:?}",
            pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /links` on the link-control API, by hand (no HTTP client in the tests).
fn get_links(control: &str) -> Value {
    let addr = control.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET /links HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[test]
fn a_lab_comes_up_with_three_sites_and_goes_down_without_a_trace() {
    let lab = Lab::new("127.61");
    lab.up();
    let (all_alive, status) = lab.status();
    assert!(all_alive, "{status:#}");
    assert_eq!(status["net"], "127.61");
    assert_eq!(status["domain"], "example.test");
    assert!(Path::new(status["ca"].as_str().unwrap()).is_file());
    let expected = [("bj", 1, "data", 10), ("sh", 2, "data", 20), ("hz", 3, "witness", 30)];
    let sites = status["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 3);
    for (s, (name, node_id, role, third)) in sites.iter().zip(expected) {
        assert_eq!(s["site"], name);
        assert_eq!(s["node_id"], node_id);
        assert_eq!(s["role"], role);
        assert_eq!(s["ip"], lab.ip(third));
        assert_eq!(s["alive"], true, "{s:#}");
        let ports = &s["ports"];
        for (key, port) in [
            ("smtp", 2525),
            ("submission", 2587),
            ("submissions", 2465),
            ("imap", 2143),
            ("imaps", 2993),
            ("replication", 2700),
        ] {
            assert_eq!(ports[key], port, "{name} {key}");
        }
        if role == "data" {
            assert_eq!((ports["dns"].as_u64(), ports["http"].as_u64()), (Some(5353), Some(2780)), "{name}");
        } else {
            assert!(ports["dns"].is_null() && ports["http"].is_null(), "the witness serves no DNS and no API");
        }
        assert!(Path::new(s["config"].as_str().unwrap()).is_file());
    }
    assert!(status["api_token"].as_str().is_some_and(|t| t.len() >= 16), "{status:#}");
    assert_eq!(status["steering"], true, "a lab steers DNS unless told --no-steering");
    let accounts = status["accounts"].as_array().unwrap();
    let addresses: Vec<&str> = accounts.iter().map(|a| a["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, ["probe@example.test", "alice@example.test", "bob@example.test"]);
    assert!(accounts.iter().all(|a| a["password"].as_str().unwrap().len() == 20));

    for third in [10, 20] {
        let banner = greeting(&format!("{}:2525", lab.ip(third)));
        assert!(banner.starts_with("220"), "{banner}");
    }
    let links = get_links(status["links"]["control"].as_str().unwrap());
    let mut names: Vec<&str> = links["links"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bj-hz", "bj-sh", "hz-bj", "hz-sh", "sh-bj", "sh-hz"]);
    let bj_sh = links["links"].as_array().unwrap().iter().find(|l| l["name"] == "bj-sh").unwrap();
    assert_eq!(bj_sh["listen"], format!("{}:2720", lab.ip(10)));

    // The accounts were created through the cluster: every data site has them.
    for third in [10, 20] {
        let (address, password) = (addresses[0], accounts[0]["password"].as_str().unwrap());
        let login = imap_login(&format!("{}:2143", lab.ip(third)), address, password);
        assert!(login.is_ok(), "LOGIN of {address}: {login:?}");
    }

    let listed = pids(&status);
    assert_eq!(listed.len(), 4);
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    for pid in &listed {
        assert!(!pid_alive(*pid), "pid {pid} survived lab down");
    }
    assert!(!lab.path().exists(), "lab down left {}", lab.path().display());
    let again = lab.run(&["down"]);
    assert!(again.status.success(), "a second down must succeed: {}", text(&again));
}

#[test]
fn a_second_up_stops_the_lab_it_finds_and_starts_afresh() {
    let lab = Lab::new("127.62");
    lab.up();
    let (_, first) = lab.status();
    let old = pids(&first);
    assert_eq!(old.len(), 4);
    // As if `lab up` had crashed or been forgotten: the first lab still runs.
    lab.up();
    wait_until_gone(&old);
    let (all_alive, second) = lab.status();
    assert!(all_alive, "{second:#}");
    let new = pids(&second);
    assert!(new.iter().all(|p| !old.contains(p)), "old {old:?} new {new:?}");
    let banner = greeting(&format!("{}:2525", lab.ip(20)));
    assert!(banner.starts_with("220"), "{banner}");
}

#[test]
fn a_killed_site_is_reported_down_and_start_brings_it_back() {
    let lab = Lab::new("127.63");
    lab.up();
    let (_, before) = lab.status();
    let sh_pid = site(&before, "sh")["pid"].as_u64().unwrap();

    let out = lab.run(&["kill", "sh"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!pid_alive(sh_pid));
    let (all_alive, status) = lab.status();
    assert!(!all_alive, "status must exit 1 with a site down");
    assert_eq!(site(&status, "sh")["alive"], false);
    assert_eq!(site(&status, "bj")["alive"], true);
    assert_eq!(site(&status, "hz")["alive"], true);

    let out = lab.run(&["start", "sh"]);
    assert!(out.status.success(), "{}", text(&out));
    let (all_alive, status) = lab.status();
    assert!(all_alive, "{status:#}");
    let new_pid = site(&status, "sh")["pid"].as_u64().unwrap();
    assert_ne!(new_pid, sh_pid);
    let banner = greeting(&format!("{}:2525", lab.ip(20)));
    assert!(banner.starts_with("220"), "{banner}");

    let out = lab.run(&["pause", "bj"]);
    assert!(out.status.success(), "{}", text(&out));
    let (all_alive, status) = lab.status();
    assert!(all_alive, "a paused site is still alive");
    assert_eq!(site(&status, "bj")["paused"], true);
    let out = lab.run(&["resume", "bj"]);
    assert!(out.status.success(), "{}", text(&out));
    let banner = greeting(&format!("{}:2525", lab.ip(10)));
    assert!(banner.starts_with("220"), "{banner}");
}

#[test]
fn up_refuses_to_wipe_a_directory_that_is_not_a_lab() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let out = maildr_lab(&["up", "--net", "127.64"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out).contains("precious.txt"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(dir.path().join("precious.txt")).unwrap(), "keep me");
}

#[test]
fn commands_on_a_missing_lab_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("nothing-here");
    let out = maildr_lab(&["down"], &absent);
    assert!(out.status.success(), "{}", text(&out));
    let out = maildr_lab(&["status", "--json"], &absent);
    assert!(!out.status.success());
    assert!(text(&out).contains("no lab"), "{}", text(&out));
}
