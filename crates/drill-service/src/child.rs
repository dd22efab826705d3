//! A drill as a child process: `maildr drill run SCENARIO --data-dir DIR/drills
//! --report-dir DIR/runs/<run id> --progress DIR/runs/<run id>/progress.json
//! ...` of the same executable, in its own process group, its output in
//! `drill.log` beside the report. The service must survive the faults a drill
//! injects, so no drill ever runs inside it; it knows its drills by pid only,
//! follows the phases they enter through the progress file
//! ([`maildr_drill::progress`]), and reads their outcome from the report.json
//! they leave.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::model::RunVerdict;

/// Directory of the service's runs under the data directory.
pub const RUNS_DIR: &str = "runs";
/// The drill engine's data directory (audit log, approvals, archive, stop file)
/// under the service's.
pub const DRILLS_DIR: &str = "drills";
/// The child's stdout and stderr.
pub const LOG_FILE: &str = "drill.log";
/// How long a drill process may run before it is interrupted (the plan's own
/// `max_duration_ms` is at most 4 h).
pub const RUN_TIME_MAX: Duration = Duration::from_secs(5 * 3600);
/// How long an interrupted drill gets for its rollback and report before SIGKILL.
pub const ROLLBACK_WAIT: Duration = Duration::from_secs(300);
/// Largest report.json read for the outcome.
pub const REPORT_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest reason taken from a drill's log when it left no report.
pub const LOG_TAIL_BYTES: usize = 400;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub run_id: String,
    pub scenario: String,
    pub lab_dir: Option<String>,
    pub net: Option<String>,
    /// Recorded as the confirmer of the plan's manual steps.
    pub confirm_as: String,
}

/// `DIR/runs/<run id>`.
pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join(RUNS_DIR).join(run_id)
}

/// Start the drill. The child gets its own process group, so a Ctrl-C at the
/// service's terminal reaches the service, which decides what the drill gets.
pub fn spawn(exe: &Path, data_dir: &Path, spec: &ChildSpec) -> std::io::Result<tokio::process::Child> {
    let dir = run_dir(data_dir, &spec.run_id);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join(LOG_FILE))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["drill", "run", &spec.scenario, "--data-dir"])
        .arg(data_dir.join(DRILLS_DIR))
        .arg("--report-dir")
        .arg(&dir)
        .args(["--confirm-manual", &spec.confirm_as])
        .arg("--progress")
        .arg(dir.join(maildr_drill::progress::FILE_NAME));
    if let Some(lab) = &spec.lab_dir {
        cmd.args(["--lab-dir", lab]);
    }
    if let Some(net) = &spec.net {
        cmd.args(["--net", net]);
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(false);
    cmd.process_group(0);
    cmd.spawn()
}

/// Send `signal` to a drill process by pid.
pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid this service started; no memory is involved.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Wait for the drill to end, interrupting it (SIGINT: roll back, report) after
/// [`RUN_TIME_MAX`] and killing it [`ROLLBACK_WAIT`] after that.
pub async fn wait(child: &mut tokio::process::Child) -> String {
    let pid = child.id();
    match tokio::time::timeout(RUN_TIME_MAX, child.wait()).await {
        Ok(Ok(status)) => return status.to_string(),
        Ok(Err(e)) => return format!("waiting for the drill: {e}"),
        Err(_) => {}
    }
    if let Some(pid) = pid {
        signal(pid, libc::SIGINT);
    }
    match tokio::time::timeout(ROLLBACK_WAIT, child.wait()).await {
        Ok(Ok(status)) => format!("interrupted after {} s: {status}", RUN_TIME_MAX.as_secs()),
        _ => {
            let _ = child.kill().await;
            format!("killed: no end within {} s of an interrupt", ROLLBACK_WAIT.as_secs())
        }
    }
}

/// How a drill ended, from the report.json it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: RunVerdict,
    pub reason: Option<String>,
    pub drill_id: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub report_path: Option<String>,
}

#[derive(Deserialize)]
struct ReportFields {
    drill_id: String,
    verdict: maildr_drill::report::Verdict,
    abort_reason: Option<String>,
    started_at_ms: u64,
    finished_at_ms: u64,
    objectives: Vec<ObjectiveFields>,
    findings: Vec<FindingFields>,
}

#[derive(Deserialize)]
struct ObjectiveFields {
    name: String,
    met: bool,
}

#[derive(Deserialize)]
struct FindingFields {
    title: String,
}

/// The outcome of the drill run in `dir`; `exit` is how its process ended.
pub fn outcome(dir: &Path, exit: &str) -> Outcome {
    use std::io::Read;
    let json = dir.join(maildr_drill::archive::JSON_FILE);
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&json).and_then(|f| f.take(REPORT_BYTES_MAX).read_to_end(&mut bytes));
    let parsed = read.ok().and_then(|_| serde_json::from_slice::<ReportFields>(&bytes).ok());
    let Some(r) = parsed else {
        return Outcome {
            verdict: RunVerdict::Aborted,
            reason: Some(format!("the drill left no report ({exit}): {}", log_tail(dir))),
            drill_id: None,
            started_at_ms: None,
            finished_at_ms: None,
            report_path: None,
        };
    };
    let verdict = match r.verdict {
        maildr_drill::report::Verdict::Passed => RunVerdict::Passed,
        maildr_drill::report::Verdict::Failed => RunVerdict::Failed,
        maildr_drill::report::Verdict::Aborted => RunVerdict::Aborted,
    };
    let missed: Vec<String> = r.objectives.iter().filter(|o| !o.met).map(|o| o.name.clone()).collect();
    let reason = match verdict {
        RunVerdict::Aborted => r.abort_reason,
        RunVerdict::Failed if !missed.is_empty() => Some(format!("objectives missed: {}", missed.join(", "))),
        RunVerdict::Failed => r.findings.first().map(|f| f.title.clone()),
        _ => None,
    };
    Outcome {
        verdict,
        reason,
        drill_id: Some(r.drill_id),
        started_at_ms: Some(r.started_at_ms),
        finished_at_ms: Some(r.finished_at_ms),
        report_path: Some(dir.join(maildr_drill::archive::HTML_FILE).display().to_string()),
    }
}

/// The last line of the drill's log, bounded.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read(dir.join(LOG_FILE)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim();
    let mut end = line.len().min(LOG_TAIL_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_that_left_no_report_is_aborted_with_its_last_words() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), "starting\nerror: no lab in /x\n\n").unwrap();
        let o = outcome(dir.path(), "exit status: 2");
        assert_eq!(o.verdict, RunVerdict::Aborted);
        assert_eq!(o.reason.as_deref(), Some("the drill left no report (exit status: 2): error: no lab in /x"));
    }
}
