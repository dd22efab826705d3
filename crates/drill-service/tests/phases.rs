//! A run told phase by phase, through the service's public operations: the
//! service starts a stand-in for `maildr` (a shell script that, like `maildr
//! drill run --progress FILE`, replaces the progress file at each phase it
//! enters and leaves a report.json), and a webhook receiver on loopback gets
//! the start, each phase in order, and the end; every delivery is in the run
//! record and in notifications.json beside the report.

// A harness whose setup fails is a failed test: its helpers unwrap like the tests
// (clippy's allow-unwrap-in-tests covers only the `#[test]` functions).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use maildr_drill::plan::Phase;
use maildr_drill::progress::Progress;
use maildr_drill_service::model::{Caller, Channel, NotifyTarget, Role, RunVerdict, StartRun};
use maildr_drill_service::notify::{Mailer, Notifier, WebhookClient};
use maildr_drill_service::{Config, Service};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The phases the stand-in enters, with the step that enters each.
const ENTERED: [(Phase, &str); 3] = [
    (Phase::Confirm, "checking the steady state"),
    (Phase::Decide, "Kill the primary"),
    (Phase::Review, "Undo every fault"),
];

/// A shell script standing in for `maildr`: `drill run ... --report-dir DIR
/// --progress FILE` writes each progress state (made by the real type) with a
/// rename, a moment apart, then a passed report.
fn stand_in(dir: &Path) -> std::path::PathBuf {
    let mut progress = Progress::new("service-phases-1");
    let mut writes = String::new();
    for (i, (phase, step)) in ENTERED.iter().enumerate() {
        assert!(progress.enter(*phase, step, 1_000 + i as u64));
        let json = serde_json::to_string(&progress).unwrap();
        writes.push_str(&format!(
            "printf '%s' '{json}' > \"$progress.tmp\" && mv \"$progress.tmp\" \"$progress\"\nsleep 0.3\n"
        ));
    }
    let report = r#"{"drill_id":"service-phases-1","verdict":"passed","abort_reason":null,"started_at_ms":1000,"finished_at_ms":2000,"objectives":[],"findings":[]}"#;
    let script = format!(
        "#!/bin/sh\nset -e\nwhile [ $# -gt 0 ]; do\n  case \"$1\" in\n    --report-dir) report_dir=\"$2\"; shift;;\n    \
         --progress) progress=\"$2\"; shift;;\n  esac\n  shift\ndone\n{writes}printf '%s' '{report}' > \
         \"$report_dir/report.json\"\n"
    );
    let path = dir.join("maildr-stand-in");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A webhook receiver on 127.0.0.1: every POST's JSON body, answered 200; the
/// task is aborted by the test.
async fn receiver() -> (SocketAddr, mpsc::Receiver<Value>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        for _ in 0..64 {
            let Ok((stream, _)) = listener.accept().await else { return };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).await.is_err() {
                continue;
            }
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null)).await;
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
            let _ = reader.get_mut().write_all(ok).await;
        }
    });
    (addr, rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_told_each_phase_it_enters_in_order_between_its_start_and_its_end() {
    let work = tempfile::tempdir().unwrap();
    let exe = stand_in(work.path());
    let (addr, mut got, receiver_task) = receiver().await;
    let notifier = Notifier {
        mailer: Mailer { relay: None, from: "drills@example.test".into() },
        webhooks: WebhookClient::new(None).unwrap(),
    };
    let data_dir = work.path().join("service");
    let (service, _admin_token) = Service::open(Config { data_dir: data_dir.clone(), exe, notifier }).unwrap();
    let caller = Caller { name: "admin".into(), role: Role::Admin };
    let hook = NotifyTarget { channel: Channel::Webhook, to: format!("http://{addr}/hook?token=SECRET") };
    let request = StartRun { scenario: "node-failure".into(), lab_dir: None, net: None, notify: vec![hook] };
    let run = service.start_now(&caller, request).unwrap();

    let mut bodies = Vec::new();
    while bodies.len() < 2 + ENTERED.len() {
        let body = tokio::time::timeout(Duration::from_secs(30), got.recv()).await;
        bodies.push(body.expect("every notice within 30 s").expect("the receiver runs"));
    }
    let told: Vec<(String, Option<String>)> = bodies
        .iter()
        .map(|b| (b["event"].as_str().unwrap().to_string(), b["phase"].as_str().map(str::to_string)))
        .collect();
    let mut expected = vec![("started".to_string(), None)];
    expected.extend(ENTERED.iter().map(|(p, _)| ("phase".to_string(), Some(p.key().to_string()))));
    expected.push(("finished".to_string(), None));
    assert_eq!(told, expected, "{bodies:#?}");
    for (body, (phase, step)) in bodies[1..].iter().zip(ENTERED) {
        assert_eq!(body["run_id"], run.id.as_str());
        assert_eq!(body["step"], step);
        assert!(body["text"].as_str().unwrap().contains(phase.title()), "{body}");
    }
    assert_eq!(bodies.last().unwrap()["verdict"], "passed");

    // Every delivery is in the run record, in order, and beside the report.
    let mut record = None;
    for _ in 0..100 {
        record = service.runs().into_iter().find(|r| r.id == run.id && r.notifications.len() == expected.len());
        if record.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = record.expect("five deliveries recorded in the run");
    assert_eq!(record.verdict, RunVerdict::Passed);
    let recorded: Vec<(String, Option<String>)> =
        record.notifications.iter().map(|d| (d.event.clone(), d.phase.map(|p| p.key().to_string()))).collect();
    assert_eq!(recorded, expected);
    assert!(record.notifications.iter().all(|d| d.ok && !d.to.contains("SECRET")), "{record:#?}");
    let run_dir = data_dir.join("runs").join(&run.id);
    let file: Value = serde_json::from_slice(&std::fs::read(run_dir.join("notifications.json")).unwrap()).unwrap();
    let phases: Vec<&str> = file.as_array().unwrap().iter().filter_map(|d| d["phase"].as_str()).collect();
    assert_eq!(phases, ["confirm", "decide", "review"]);
    assert!(Path::new(record.report_path.as_deref().unwrap()).ends_with("report.html"));

    service.shutdown().await;
    receiver_task.abort();
}
