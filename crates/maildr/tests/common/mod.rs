//! Run the real `maildr` binary as a separate process on loopback ephemeral ports.
//! Every process a test starts is stopped by its pid when the handle drops.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod dns;
pub mod lab;

pub const BIN: &str = env!("CARGO_BIN_EXE_maildr");

/// A finished command's exit status, stdout and stderr, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run one client exchange from a synchronous test.
pub fn block_on<F: std::future::Future>(exchange: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime").block_on(exchange)
}

/// Read one SMTP reply (all its lines); its code, or `None` if the connection broke.
pub fn smtp_reply(r: &mut std::io::BufReader<std::net::TcpStream>) -> Option<u16> {
    use std::io::BufRead;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 || line.len() < 4 {
            return None;
        }
        if line.as_bytes()[3] != b'-' {
            return line[..3].parse().ok();
        }
    }
}

/// A child process killed (by its pid) and reaped however the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `method url` with a bearer token and an optional JSON body, through curl; the
/// status and the JSON answer (`Null` when the body is not JSON). Status 0 when
/// nothing answered (connection refused: a site restarting or down).
pub fn curl_json(method: &str, url: &str, token: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}", "-H"]);
    command.arg(format!("Authorization: Bearer {token}"));
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    let output = command.arg(url).output().expect("running curl");
    // curl's exit code 7: could not connect. It still prints the status, 000.
    let refused = output.status.code() == Some(7);
    assert!(output.status.success() || refused, "curl {method} {url}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl printed the status");
    (status.trim().parse().expect("an HTTP status"), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Run one of the Python client scripts of `tests/interop/` against the site whose
/// data directory is `site_dir`; its output is printed (shown when a test fails).
/// Returns whether it exited 0, and its standard output.
pub fn run_python_client(script: &str, site_dir: &Path) -> (bool, String) {
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("tests/interop").join(script))
        .arg(site_dir.join("run/endpoints.json"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// Run `maildr admin --data-dir DIR ARGS...`, feeding `stdin`.
pub fn admin(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("admin")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

pub fn admin_ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = admin(dir, args, stdin);
    assert!(out.status.success(), "admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A data directory with example.test, alice and bob (password "alice-pw" and
/// "bob-pw") and the alias sales → alice, created through the admin CLI.
pub fn provisioned_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    admin_ok(d, &["domain", "add", "example.test"], None);
    admin_ok(d, &["user", "add", "alice@example.test", "--password-stdin"], Some("alice-pw\n"));
    admin_ok(d, &["user", "add", "bob@example.test", "--password-stdin"], Some("bob-pw\n"));
    admin_ok(d, &["alias", "add", "sales@example.test", "alice@example.test"], None);
    dir
}

pub struct SiteProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub endpoints: serde_json::Value,
}

impl SiteProcess {
    pub fn start(dir: &Path) -> SiteProcess {
        Self::start_with(dir, "")
    }

    /// Start with extra `key = value` lines in the `[smtp]` section.
    pub fn start_with(dir: &Path, smtp_extra: &str) -> SiteProcess {
        Self::start_with_sections(dir, smtp_extra, "")
    }

    /// Start with extra `[smtp]` lines and extra sections at the end of the config.
    pub fn start_with_sections(dir: &Path, smtp_extra: &str, sections: &str) -> SiteProcess {
        Self::start_with_site(dir, "", smtp_extra, sections)
    }

    /// Start with extra `[site]` lines, extra `[smtp]` lines and extra sections.
    pub fn start_with_site(dir: &Path, site_extra: &str, smtp_extra: &str, sections: &str) -> SiteProcess {
        Self::start_on_ip(dir, "127.0.0.1", site_extra, smtp_extra, sections)
    }

    /// Start with every listener on `ip` (ephemeral ports), and the extras above.
    pub fn start_on_ip(dir: &Path, ip: &str, site_extra: &str, smtp_extra: &str, sections: &str) -> SiteProcess {
        let config = dir.join("site.toml");
        std::fs::write(
            &config,
            format!(
                "[site]\nname = \"t\"\ndata_dir = \"{}\"\n{site_extra}\n[smtp]\nmx_listen = \"{ip}:0\"\nsubmission_listen = \"{ip}:0\"\nsubmissions_listen = \"{ip}:0\"\nauth_failure_delay_ms = 100\n{smtp_extra}\n[imap]\nplain_listen = \"{ip}:0\"\ntls_listen = \"{ip}:0\"\nauth_failure_delay_ms = 50\n[log]\nlevel = \"warn\"\n{sections}",
                dir.display()
            ),
        )
        .unwrap();
        let endpoints_path = dir.join("run/endpoints.json");
        let _ = std::fs::remove_file(&endpoints_path);
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut site = SiteProcess { child, dir: dir.to_path_buf(), endpoints: serde_json::Value::Null };
        loop {
            if let Ok(text) = std::fs::read_to_string(&endpoints_path) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                if v["pid"].as_u64() == Some(pid as u64) {
                    site.endpoints = v;
                    return site;
                }
            }
            if let Ok(Some(status)) = site.child.try_wait() {
                panic!("maildr serve exited early: {status}");
            }
            assert!(Instant::now() < deadline, "maildr serve did not come up within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self, listener: &str) -> u16 {
        let service = if listener.starts_with("imap") { "imap" } else { "smtp" };
        let addr: std::net::SocketAddr = self.endpoints[service][listener].as_str().unwrap().parse().unwrap();
        addr.port()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "maildr serve exited with {status} on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "maildr serve did not stop within 15 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the crash a power cut would cause.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Messages of an account's mailbox as the admin CLI reports them.
pub fn messages(dir: &Path, account: &str) -> Vec<serde_json::Value> {
    admin_ok(dir, &["messages", account, "--json"], None).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn subjects(dir: &Path, account: &str) -> Vec<String> {
    messages(dir, account).iter().map(|m| m["subject"].as_str().unwrap_or("").to_string()).collect()
}
