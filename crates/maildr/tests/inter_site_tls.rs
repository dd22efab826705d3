//! The replication channel between lab sites, tried as a stranger on the path
//! would: Python's `ssl` (a TLS stack no one here wrote) connects to a site's
//! replication port with no certificate, with a certificate from another CA, and —
//! as the control that the check can pass — with the site's own cluster
//! certificate. Then 500 half-open connections from one address must not stop the
//! cluster from committing writes, and `cluster status` shows every member with its
//! certificate's expiry.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::{maildr, send_tagged, Lab, ONE_LAB_AT_A_TIME};

/// Connect with Python's ssl to `addr`, presenting `cert`/`key` when given, and
/// print what came back: `FRAME <n>` when the site sent a frame of n bytes (its
/// challenge), `CLOSED` or `TLS-ERROR <reason>` otherwise.
const PY_TLS_PROBE: &str = r#"
import socket, ssl, sys, struct
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if cert:
    ctx.load_cert_chain(cert, key)
raw = socket.create_connection((host, port), timeout=5)
try:
    s = ctx.wrap_socket(raw)
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            print("CLOSED"); sys.exit(0)
        head += chunk
    print("FRAME", struct.unpack(">I", head)[0])
except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout) as e:
    print("TLS-ERROR", type(e).__name__, e)
"#;

fn python_tls_probe(addr: &str, cert: Option<(&Path, &Path)>) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let (cert, key) = cert.map(|(c, k)| (c.display().to_string(), k.display().to_string())).unwrap_or_default();
    let out = Command::new("python3").args(["-c", PY_TLS_PROBE, host, port, &cert, &key]).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn only_members_complete_a_connection_and_half_open_strangers_do_not_stop_commits() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up("127.86");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    let port = format!("{}:2700", lab.ip(&primary));
    let tls = lab.lab_dir().join("sites").join(&primary).join("tls");
    let own = (tls.join(format!("{primary}-cluster.pem")), tls.join(format!("{primary}-cluster-key.pem")));

    // The control: the site's own certificate gets the challenge frame.
    let answer = python_tls_probe(&port, Some((&own.0, &own.1)));
    assert!(answer.starts_with("FRAME "), "a member's certificate must open the channel: {answer}");
    // No certificate: the site never sends a frame.
    let answer = python_tls_probe(&port, None);
    assert!(answer.starts_with("TLS-ERROR") || answer == "CLOSED", "no certificate: {answer}");
    // A certificate for the same site name from another CA: refused alike.
    let stranger = tempfile::tempdir().unwrap();
    let ca = stranger.path().join("ca");
    for args in [
        vec!["cluster", "certs", "ca", "--dir", ca.to_str().unwrap()],
        vec![
            "cluster",
            "certs",
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--site",
            &primary,
            "--node-id",
            "1",
            "--out",
            stranger.path().to_str().unwrap(),
        ],
    ] {
        let out = maildr().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let forged = (
        stranger.path().join(format!("{primary}-cluster.pem")),
        stranger.path().join(format!("{primary}-cluster-key.pem")),
    );
    let answer = python_tls_probe(&port, Some((&forged.0, &forged.1)));
    assert!(answer.starts_with("TLS-ERROR") || answer == "CLOSED", "another CA's certificate: {answer}");

    // 500 half-open connections from one address, held while mail flows.
    let (host, port_number) = port.rsplit_once(':').unwrap();
    let source = format!("{}.77.1", lab.net);
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             held = []\n\
             for _ in range(500):\n\
             \x20   s = socket.socket(); s.bind((sys.argv[3], 0))\n\
             \x20   try:\n\
             \x20       s.connect((sys.argv[1], int(sys.argv[2]))); held.append(s)\n\
             \x20   except OSError:\n\
             \x20       pass\n\
             print('HOLDING', len(held), flush=True)\n\
             time.sleep(60)\n",
            host,
            port_number,
            &source,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    let _holder = common::KillOnDrop(holder);
    assert!(line.starts_with("HOLDING"), "{line}");
    for n in 0..20 {
        let told = send_tagged(&lab.ip(&primary), &format!("under-siege-{n}"));
        assert_eq!(told, common::lab::Told::Accepted, "message {n} during 500 half-open connections");
    }
    lab.wait_until_converged(&primary, Duration::from_secs(20));

    // Every member healthy in `cluster status`, each with its certificate's expiry.
    let out = lab.cluster(&primary, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for site in lab.sites() {
        assert!(text.contains(&format!("{site}: cluster certificate expires ")), "{site}: {text}");
    }
    assert!(!text.contains("UNREACHABLE"), "{text}");
    let status = lab.cluster_status(&primary);
    for member in status["members"].as_array().unwrap() {
        let at = member["status"]["certificate_expires_at"].as_i64();
        assert!(at.is_some_and(|at| at > 1_700_000_000), "{member}");
    }
}
