//! A real single site serving the admin API on 127.0.0.1, and curl as its client.

#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use maildr_api::{ApiSettings, ApiState};
use maildr_cluster::{Cluster, WritePathLimits};
use maildr_config::ClusterSection;
use maildr_store::Store;
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Longest a single curl call may take, in seconds.
const CURL_TIMEOUT_S: &str = "20";

pub struct Site {
    _dir: tempfile::TempDir,
    pub cluster: Cluster,
    pub base: String,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Site {
    pub async fn start() -> Site {
        Site::start_with(|state| state).await
    }

    /// Start with `extend` applied to the API state (e.g. fault hooks installed).
    pub async fn start_with(extend: impl FnOnce(ApiState) -> ApiState) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::single_site(Store::open(dir.path()).unwrap(), WritePathLimits::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let settings = ApiSettings { listen: addr, token: TOKEN.into(), site: "bj".into() };
        let state = extend(ApiState::new(&settings, cluster.clone(), &ClusterSection::default()).unwrap());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(maildr_api::serve(listener, state, stop_rx));
        Site { _dir: dir, cluster, base: format!("http://{addr}"), stop, server }
    }

    /// Stop the server and wait until it has returned.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), self.server).await;
        stopped.expect("the server stops within 10 s").unwrap().unwrap();
    }

    /// `method path` with the right token.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, body, Some(&format!("Bearer {TOKEN}"))).await
    }

    /// `method path` with the given Authorization header (or none).
    pub async fn call_with(&self, method: &str, path: &str, body: Option<&str>, auth: Option<&str>) -> Reply {
        let url = format!("{}{}", self.base, path);
        let (method, body, auth) = (method.to_string(), body.map(str::to_string), auth.map(str::to_string));
        tokio::task::spawn_blocking(move || curl(&method, &url, body.as_deref(), auth.as_deref())).await.unwrap()
    }

    /// What the store holds, for "nothing changed" checks.
    pub fn contents(&self) -> String {
        let store = self.cluster.store();
        format!(
            "{:?}\n{:?}\n{:?}",
            store.domains().unwrap(),
            store.accounts(None).unwrap(),
            store.aliases(None).unwrap()
        )
    }

    /// How many commands the store has applied (a refusal counts; a request that
    /// never reached the write path does not).
    pub fn commands_applied(&self) -> u64 {
        self.cluster.store().commands_applied().unwrap()
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// An error answer: the status, JSON with `error`, and the field it names.
    pub fn assert_error(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "error message: {self:?}");
        assert_eq!(v["field"].as_str(), field, "field: {self:?}");
        assert!(self.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{self:?}");
    }
}

fn curl(method: &str, url: &str, body: Option<&str>, auth: Option<&str>) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", CURL_TIMEOUT_S, "-D", "-", "-X", method, url]);
    if let Some(auth) = auth {
        cmd.args(["-H", &format!("Authorization: {auth}")]);
    }
    if body.is_some() {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", "@-"]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl runs");
    {
        let mut stdin = child.stdin.take().unwrap();
        if let Some(body) = body {
            stdin.write_all(body.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {method} {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    Reply { status, headers: headers.to_string(), body: body.to_string() }
}
