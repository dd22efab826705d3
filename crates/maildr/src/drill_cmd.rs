//! `maildr drill` and `maildr audit`: the operator's side of the drill engine
//! (`maildr_drill`). This module parses arguments, finds or starts the lab,
//! shows live progress, asks for manual confirmations, and files the report,
//! the archive entry and the audit records; the drill itself is the library's.
//!
//! Exit codes of `drill run`: 0 every objective met, 1 an objective missed or the
//! drill aborted, 2 an error (the drill could not run).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use maildr_drill::archive::{self, Archive};
use maildr_drill::audit::{AuditEvent, AuditLog};
use maildr_drill::plan::{Plan, PlanSource, StepKind, TargetSpec};
use maildr_drill::progress::Progress;
use maildr_drill::render::Lang;
use maildr_drill::report::{Report, Verdict};
use maildr_drill::runner::{self, Live, RunOptions};
use maildr_drill::tabletop::{self, AnswerSheet, Exercise, Roster, Terminal};
use maildr_drill::target::Target;
use maildr_drill::{approval, guard, scenarios};
use serde_json::{json, Value};

/// Print a line to stderr, ignoring a closed stderr: a drill whose terminal or
/// log pipe went away must still roll back, report and stop its lab.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Where drills keep the audit log, approvals and archived reports.
const DEFAULT_DATA_DIR: &str = ".maildr/drills";

#[derive(Args, Clone)]
pub struct DataDir {
    /// Where drills keep the audit log, approvals and archived reports.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum DrillAction {
    /// Run a drill: a scenario from the library (`maildr drill list`) or a plan file.
    /// Exit code 0 when every objective is met, 1 when one is missed or the drill
    /// aborted, 2 on an error.
    Run {
        /// Scenario name or plan file.
        scenario: String,
        /// The lab to drill; when none runs there, a lab is started for the drill
        /// and stopped afterwards.
        #[arg(long, default_value = ".maildr/lab")]
        lab_dir: PathBuf,
        /// Addresses of a lab started for the drill (see `maildr lab up --net`).
        #[arg(long, default_value = "127.0")]
        net: String,
        /// Also write report.json, report.md and report.html here (they are always
        /// archived under the data directory).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
        /// Confirm every manual step as NAME without asking (for unattended runs;
        /// recorded in the report and the audit log).
        #[arg(long, value_name = "NAME")]
        confirm_manual: Option<String>,
        /// Start the drill's lab without DNS steering (`lab up --no-steering`): a
        /// deliberately broken setup whose drills must fail.
        #[arg(long, hide = true)]
        lab_without_steering: bool,
        /// Language of report.md and report.html: zh or en (default: the plan's
        /// `lang`, else en). report.json is the same in every language.
        #[arg(long, value_name = "zh|en")]
        lang: Option<Lang>,
        /// Keep the phases the drill enters, in order, in FILE (JSON, replaced
        /// atomically at each one): how a supervisor such as the drill service
        /// follows the drill.
        #[arg(long, value_name = "FILE")]
        progress: Option<PathBuf>,
        /// Tabletop exercise: no lab, no target, no fault. Each step is presented
        /// to the participant holding its role, who acknowledges it and records
        /// a decision; the times are graded against the plan's objectives.
        #[arg(long, conflicts_with_all = ["lab_dir", "net", "confirm_manual", "lab_without_steering"])]
        tabletop: bool,
        /// A tabletop participant and a role they hold (repeatable; replaces the
        /// plan's [[tabletop.participants]]): `alice=incident-commander`.
        #[arg(long, value_name = "NAME=ROLE", requires = "tabletop")]
        participant: Vec<String>,
        /// The tabletop's answers written down beforehand (TOML, or JSON for a
        /// .json file): unattended, on the times the file states.
        #[arg(long, value_name = "FILE", requires = "tabletop")]
        answers: Option<PathBuf>,
    },
    /// Render a drill's report.json again, in a language: report.md, report.html
    /// and report.json (unchanged) into --out. The archive is never written.
    Report {
        /// An archived drill's id (`maildr drill history`), or --json.
        #[arg(required_unless_present = "json", conflicts_with = "json")]
        drill_id: Option<String>,
        /// A report.json file to render instead of an archived drill.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Language of report.md and report.html: zh or en.
        #[arg(long, value_name = "zh|en", default_value = "en")]
        lang: Lang,
        /// Where to write the three files (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        data: DataDir,
    },
    /// Dry run: print what a drill would do and check, touching nothing.
    Plan {
        /// Scenario name or plan file.
        scenario: String,
    },
    /// The shipped scenarios.
    List,
    /// Record your approval of a plan (bound to its SHA-256: a changed plan needs
    /// new approval).
    Approve {
        /// Scenario name or plan file.
        plan: String,
        /// Who approves.
        #[arg(long)]
        by: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Global stop: every running drill on the data directory aborts and rolls back,
    /// and none injects a fault until `maildr drill release`. Waits (up to
    /// --wait-secs) until the running drill has rolled back.
    Stop {
        /// Who orders the stop (recorded in the audit log).
        #[arg(long)]
        by: String,
        /// Why (recorded, and shown to every drill refused meanwhile).
        #[arg(long, default_value = "global stop")]
        reason: String,
        /// How long to wait for a running drill to finish its rollback.
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        #[command(flatten)]
        data: DataDir,
    },
    /// Lift the global stop.
    Release {
        /// Who lifts it (recorded in the audit log).
        #[arg(long)]
        by: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Past drills, newest first: verdict, RTO and RPO side by side.
    History {
        #[command(flatten)]
        data: DataDir,
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The drill service: `serve`, `user`, `schedule`, `runs`, `run-now`,
    /// `stop-all`, `release-all` (crate::drill_service_cmd).
    #[command(flatten)]
    Service(crate::drill_service_cmd::ServiceAction),
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the audit log's hash chain; exits 1 naming the first bad line.
    Verify {
        /// The log file (default: the drill data directory's audit.log).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
    },
}

/// `maildr drill ...`; returns the process exit code.
pub fn run(action: DrillAction) -> i32 {
    crate::init_logging("warn");
    let result = match action {
        DrillAction::Run { scenario, report_dir, data, lang, tabletop: true, participant, answers, .. } => {
            run_tabletop(&scenario, &participant, answers.as_deref(), report_dir.as_deref(), &data.data_dir, lang)
        }
        DrillAction::Run {
            scenario,
            lab_dir,
            net,
            report_dir,
            data,
            confirm_manual,
            lab_without_steering,
            lang,
            progress,
            ..
        } => run_drill(
            &scenario,
            &lab_dir,
            &net,
            report_dir.as_deref(),
            &data.data_dir,
            confirm_manual,
            lab_without_steering,
            lang,
            progress,
        ),
        DrillAction::Report { drill_id, json, lang, out, data } => {
            render_again(drill_id.as_deref(), json.as_deref(), lang, &out, &data.data_dir).map(|_| 0)
        }
        DrillAction::Plan { scenario } => print_plan(&scenario).map(|_| 0),
        DrillAction::List => {
            for (name, text) in scenarios::LIBRARY {
                let description = PlanSource { origin: name.into(), text: text.into() };
                let plan = Plan::parse(&description).map(|p| p.description).unwrap_or_default();
                println!("{name:<20} {plan}");
            }
            Ok(0)
        }
        DrillAction::Approve { plan, by, data } => approve(&plan, &by, &data.data_dir).map(|_| 0),
        DrillAction::History { data, json } => history(&data.data_dir, json).map(|_| 0),
        DrillAction::Stop { by, reason, wait_secs, data } => stop_drills(&data.data_dir, &by, &reason, wait_secs),
        DrillAction::Release { by, data } => release_drills(&data.data_dir, &by),
        DrillAction::Service(action) => return crate::drill_service_cmd::run(action),
    };
    result.unwrap_or_else(|e| {
        note!("error: {e:#}");
        2
    })
}

/// `maildr audit ...`; returns the process exit code.
pub fn audit(action: AuditAction) -> i32 {
    match action {
        AuditAction::Verify { file, data } => {
            let path = file.unwrap_or_else(|| data.data_dir.join(maildr_drill::audit::FILE_NAME));
            match maildr_drill::audit::verify(&path) {
                Ok(summary) => {
                    println!(
                        "{}: the hash chain of {} record(s) verifies; head {} (keep it elsewhere to detect a cut-off end)",
                        path.display(),
                        summary.records,
                        summary.head
                    );
                    0
                }
                Err(e) => {
                    note!("{}: {e}", path.display());
                    1
                }
            }
        }
    }
}

fn load_plan(scenario: &str) -> Result<(PlanSource, Plan)> {
    let source = scenarios::load(scenario).map_err(anyhow::Error::msg)?;
    let plan = Plan::parse(&source)?;
    Ok((source, plan))
}

fn print_plan(scenario: &str) -> Result<()> {
    let (source, plan) = load_plan(scenario)?;
    println!("Drill plan {} ({})", plan.name, source.origin);
    println!("SHA-256 {}", source.sha256());
    println!("{}\n", plan.description);
    match &plan.target {
        TargetSpec::Lab => println!("Target: the lab (no approval needed)"),
        TargetSpec::Deployment { file } => {
            println!("Target: deployment {} ({} approval(s) required)", file.display(), plan.approvals.required)
        }
    }
    let o = &plan.objectives;
    println!("\nObjectives:");
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "not judged".into());
    println!("  RTO SMTP via MX     {}", ms(o.rto_smtp_ms));
    println!("  RTO IMAP via mail.  {}", ms(o.rto_imap_ms));
    println!("  RTO total           {}", ms(o.rto_total_ms));
    println!("  RPO                 at most {} acknowledged message(s) lost", o.rpo_messages);
    if let Some(d) = o.max_deferred {
        println!("  deferred            at most {d} message(s)");
    }
    if let Some(p) = o.smtp_p99_ms {
        println!("  SMTP p99 latency    {p} ms");
    }
    let s = &plan.steady_state;
    println!("\nSteady state before the first fault (within {} ms):", s.timeout_ms);
    if s.all_sites_healthy {
        println!("  every site healthy, replication lag at most {} entries", s.lag_entries_max);
    }
    if s.mail_round_trip {
        println!("  a probe message round-trips (submission, then IMAP)");
    }
    let (p, l) = (&plan.probes, &plan.load);
    println!(
        "\nClient load during the drill: {} messages/s to the MX, {} submissions/s through mail., {} IMAP \
         sessions in IDLE, {} bytes a message, at most {} connections per flow",
        l.smtp_per_second, l.submissions_per_second, l.imap_idle_sessions, l.message_bytes, l.concurrency
    );
    println!(
        "Probes: IMAP login and fetch every {} ms, DNS every {} ms (every {} ms for {} ms after each fault)",
        p.imap_interval_ms,
        p.dns_interval_ms,
        maildr_drill::plan::DENSE_INTERVAL_MS,
        p.dense_for_ms
    );
    println!("\nSteps:");
    for (i, step) in plan.steps.iter().enumerate() {
        let kind = match step.kind {
            StepKind::Fault(_) => "action",
            StepKind::Wait { .. } => "wait",
            StepKind::Verify(_) => "check",
            StepKind::Manual { .. } => "manual",
        };
        println!(
            "  {:>2}. [{:<7}] {:<6} {} — {} (role: {})",
            i + 1,
            step.phase.key(),
            kind,
            step.name,
            step.describe(),
            step.responsible_role()
        );
    }
    println!("\nAbort when:");
    if plan.abort.acknowledged_lost {
        println!("  a check finds acknowledged mail missing");
    }
    if let Some(n) = plan.abort.no_primary_for_ms {
        println!("  no site is primary for more than {n} ms");
    }
    println!("  the drill runs longer than {} ms, or on Ctrl-C", plan.abort.max_duration_ms);
    println!("\nRollback (always runs, then every fault still in place is undone):");
    for (i, step) in plan.rollback.iter().enumerate() {
        println!("  {:>2}. {} — {}", plan.steps.len() + i + 1, step.name, step.describe());
    }
    println!("\nReport language: {} (drill run --lang overrides it)", plan.lang);
    println!("\nDry run: nothing was touched.");
    Ok(())
}

fn open_audit(data_dir: &Path) -> Result<AuditLog> {
    AuditLog::open(data_dir.join(maildr_drill::audit::FILE_NAME))
        .with_context(|| format!("opening the audit log in {}", data_dir.display()))
}

fn approve(plan_ref: &str, by: &str, data_dir: &Path) -> Result<()> {
    let (source, plan) = load_plan(plan_ref)?;
    let audit = open_audit(data_dir)?;
    let approved = approval::approve(data_dir, &plan.name, &source.sha256(), by, &audit)?;
    let a = &approved.approval;
    println!(
        "{} {} plan {} (SHA-256 {}); audit record {}",
        a.by,
        if approved.repeated { "had already approved" } else { "approved" },
        plan.name,
        a.plan_sha256,
        approved.audit_seq
    );
    let have = approval::approvals_for(data_dir, &source.sha256())?;
    println!("{} of {} required approval(s) recorded for this exact plan", have.len(), plan.approvals.required);
    Ok(())
}

fn stop_drills(data_dir: &Path, by: &str, reason: &str, wait_secs: u64) -> Result<i32> {
    let order = guard::StopOrder { by: by.into(), reason: reason.into(), at_ms: maildr_drill::flow::now_ms() };
    guard::stop_all(data_dir, &order)?;
    let audit = open_audit(data_dir)?;
    audit.append(AuditEvent::new(by, "drills_stopped").detail(json!({ "reason": reason })))?;
    println!("drills on {} are stopped by {by}: {reason}", data_dir.display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    let mut announced = false;
    while let Some(running) = guard::running(data_dir) {
        if !announced {
            println!("waiting for drill {} (pid {}) to roll back", running.drill_id, running.pid);
            announced = true;
        }
        if std::time::Instant::now() >= deadline {
            println!("drill {} (pid {}) is still rolling back after {wait_secs} s", running.drill_id, running.pid);
            return Ok(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if announced {
        println!("the running drill has rolled back and ended");
    }
    println!("no drill injects a fault until `maildr drill release --by NAME`");
    Ok(0)
}

fn release_drills(data_dir: &Path, by: &str) -> Result<i32> {
    let Some(order) = guard::release(data_dir)? else {
        println!("drills on {} were not stopped", data_dir.display());
        return Ok(0);
    };
    let audit = open_audit(data_dir)?;
    audit.append(
        AuditEvent::new(by, "drills_released").detail(json!({ "stopped_by": order.by, "reason": order.reason })),
    )?;
    println!("the stop ordered by {} ({}) is lifted by {by}; drills may run again", order.by, order.reason);
    Ok(0)
}

fn history(data_dir: &Path, json: bool) -> Result<()> {
    let history = Archive::new(data_dir).history()?;
    for s in &history.skipped {
        note!("warning: skipped {}: {}", s.dir.display(), s.reason);
    }
    let rows = history.rows;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no drills archived in {}", data_dir.display());
        return Ok(());
    }
    let ms = |v: Option<u64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<40} {:<20} {:<8} {:>12} {:>8} {:>9}  MODE",
        "DRILL", "PLAN", "VERDICT", "RTO TOTAL ms", "RPO LOST", "DEFERRED"
    );
    for r in rows {
        // A tabletop measured nothing: its RTO and RPO columns stay empty.
        let tabletop = r.mode == Some(maildr_drill::report::DrillMode::Tabletop);
        let (rpo_lost, deferred) = if tabletop {
            ("-".to_string(), "-".to_string())
        } else {
            (r.rpo_lost.to_string(), r.deferred.to_string())
        };
        println!(
            "{:<40} {:<20} {:<8} {:>12} {:>8} {:>9}  {}",
            r.drill_id,
            r.plan_name,
            r.verdict.word(),
            ms(r.rto_total_ms),
            rpo_lost,
            deferred,
            if tabletop { "tabletop" } else { "live" }
        );
    }
    Ok(())
}

/// A lab this command started, stopped when dropped.
struct EphemeralLab {
    exe: PathBuf,
    dir: PathBuf,
}

impl Drop for EphemeralLab {
    fn drop(&mut self) {
        note!("stopping the drill's lab in {}", self.dir.display());
        let _ = Command::new(&self.exe).args(["lab", "down", "--dir"]).arg(&self.dir).status();
    }
}

fn lab_running(exe: &Path, dir: &Path) -> bool {
    dir.join("lab.json").exists()
        && Command::new(exe)
            .args(["lab", "status", "--json", "--dir"])
            .arg(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

fn drill_id(plan: &str) -> String {
    let ms = maildr_drill::flow::now_ms();
    let secs = ms / 1000;
    let (y, m, d) = maildr_drill::flow::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{plan}", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// `drill report`: an archived drill or a report.json file, rendered in `lang`
/// into `out`. Refuses to write into the archive, whose reports are written once.
fn render_again(drill_id: Option<&str>, json: Option<&Path>, lang: Lang, out: &Path, data_dir: &Path) -> Result<()> {
    let archive = Archive::new(data_dir);
    let (path, report) = match (drill_id, json) {
        (_, Some(file)) => (file.to_path_buf(), archive::read_report(file)?),
        (Some(id), None) => (archive.dir_for(id)?.join(archive::JSON_FILE), archive.load(id)?),
        (None, None) => bail!("name an archived drill or pass --json FILE"),
    };
    // report.json is written again from the parsed model: refuse one with fields
    // this maildr does not know (another version's) rather than drop them.
    let raw: Value =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("reading {}", path.display()))?;
    if serde_json::to_value(&report)? != raw {
        bail!(
            "{} holds fields this maildr does not know (written by another version?); rendering it here would drop them",
            path.display()
        );
    }
    let out_abs = std::path::absolute(out).with_context(|| format!("resolving --out {}", out.display()))?;
    let reports = std::path::absolute(archive.reports_dir()).context("resolving the archive directory")?;
    if resolved(&out_abs).starts_with(resolved(&reports)) {
        bail!(
            "--out {} is inside the drill archive ({}), whose reports are never rewritten; choose another directory",
            out.display(),
            reports.display()
        );
    }
    let files = archive::write_report_files(&report, out, lang)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    println!(
        "Drill {} rendered in {lang}: {} (report.json SHA-256 {})",
        report.drill_id,
        files.html.display(),
        files.json_sha256
    );
    Ok(())
}

/// `path` with its longest existing ancestor resolved (symlinks, `..`) and the
/// rest applied to it lexically (what does not exist yet will be made as plain
/// directories), so that a path not yet made cannot get round a prefix check.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let components: Vec<Component<'_>> = path.components().collect();
    for split in (0..=components.len()).rev() {
        let head: PathBuf = components[..split].iter().collect();
        let Ok(mut real) = head.canonicalize() else { continue };
        for part in &components[split..] {
            match part {
                Component::ParentDir => {
                    real.pop();
                }
                Component::CurDir => {}
                other => real.push(other),
            }
        }
        return real;
    }
    path.to_path_buf()
}

// Each argument is one `drill run` option; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
fn run_drill(
    scenario: &str,
    lab_dir: &Path,
    net: &str,
    report_dir: Option<&Path>,
    data_dir: &Path,
    confirm_manual: Option<String>,
    lab_without_steering: bool,
    lang: Option<Lang>,
    progress_file: Option<PathBuf>,
) -> Result<i32> {
    let (source, plan) = load_plan(scenario)?;
    let lang = lang.unwrap_or(plan.lang);
    let exe = std::env::current_exe().context("finding the maildr binary")?;
    let audit = Arc::new(open_audit(data_dir)?);
    let sha = source.sha256();
    let approvals = if plan.needs_approval() {
        approval::check(data_dir, &plan.name, &sha, plan.approvals.required)?
    } else {
        approval::approvals_for(data_dir, &sha)?
    };
    let mut _lab_guard = None;
    let target = match &plan.target {
        TargetSpec::Lab => {
            let dir = std::path::absolute(lab_dir).context("resolving --lab-dir")?;
            if !lab_running(&exe, &dir) {
                note!("no lab runs in {}: starting one for this drill (net {net})", dir.display());
                let mut up = Command::new(&exe);
                up.args(["lab", "up", "--net", net, "--dir"]).arg(&dir);
                if lab_without_steering {
                    up.arg("--no-steering");
                }
                if plan.needs_backups() {
                    up.arg("--backup");
                }
                let status = up.stdout(std::process::Stdio::null()).status().context("running maildr lab up")?;
                _lab_guard = Some(EphemeralLab { exe: exe.clone(), dir: dir.clone() });
                if !status.success() {
                    bail!("maildr lab up failed ({status}); see {}/sites/*/serve.log", dir.display());
                }
            } else if lab_without_steering {
                bail!(
                    "--lab-without-steering needs a lab started for the drill; a lab already runs in {}",
                    dir.display()
                );
            }
            // A netns lab's sites are reached from its client namespace only: this
            // thread moves there before any thread of the drill is started.
            if let Some(state) = maildr_lab::state::LabState::load(&dir)? {
                maildr_lab::supervisor::enter_network(&state)?;
            }
            Target::lab(&dir, &exe).map_err(anyhow::Error::msg)?
        }
        TargetSpec::Deployment { file } => {
            let base = Path::new(&source.origin).parent().unwrap_or(Path::new("."));
            Target::deployment(&base.join(file)).map_err(anyhow::Error::msg)?
        }
    };
    let id = drill_id(&plan.name);
    // One drill at a time on a data directory: a second one runs only to report
    // itself aborted by the readiness gate, touching nothing.
    let (_running, other_drill) = match guard::DrillLock::acquire(data_dir, &id, maildr_drill::flow::now_ms()) {
        Ok(lock) => (Some(lock), None),
        Err(guard::GuardError::Busy(other)) => (None, Some(guard::GuardError::Busy(other).to_string())),
        Err(e) => return Err(e.into()),
    };
    let live = Arc::new(Mutex::new(Live::default()));
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid progress template"),
    );
    let interactive = std::io::stderr().is_terminal();
    if !interactive {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let confirm: runner::Confirm = {
        let progress = progress.clone();
        Arc::new(move |prompt: &str| match &confirm_manual {
            Some(name) => Ok(format!("{name} (--confirm-manual)")),
            None if std::io::stdin().is_terminal() => progress.suspend(|| {
                let _ =
                    write!(std::io::stderr(), "\nManual step: {prompt}\nType your name to confirm (empty to refuse): ");
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
                let name = line.trim();
                if name.is_empty() {
                    Err("refused at the terminal".to_string())
                } else {
                    Ok(name.to_string())
                }
            }),
            None => Err("no operator at a terminal: pass --confirm-manual NAME to confirm unattended".into()),
        })
    };
    let audit_fn: runner::Audit = {
        let audit = audit.clone();
        let id = id.clone();
        let sha = sha.clone();
        Arc::new(move |action: &str, detail: Value| {
            let actor = if action == maildr_drill::audit::action::MANUAL_CONFIRMED {
                detail["by"].as_str().unwrap_or("operator").to_string()
            } else {
                maildr_drill::audit::ENGINE_ACTOR.to_string()
            };
            let event = AuditEvent::new(actor, action).drill(id.clone()).plan(sha.clone()).detail(detail);
            if let Err(e) = audit.append(event) {
                note!("warning: the audit log could not be written: {e}");
            }
        })
    };
    let (interrupt_tx, interrupt) = tokio::sync::watch::channel(false);
    let runtime = crate::runtime()?;
    note!("drill {id}: {} against the {} at {}", plan.name, target.kind, target.location.display());
    let report = runtime.block_on(async {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                note!("\nCtrl-C: stopping the drill, running the rollback, writing the report");
                let _ = interrupt_tx.send(true);
            }
        });
        let ticker = tokio::spawn(show_progress(live.clone(), progress.clone(), interactive));
        let options = RunOptions {
            drill_id: id.clone(),
            approvals,
            confirm,
            audit: audit_fn,
            interrupt,
            live: live.clone(),
            on_phase: progress_file.map(|path| phase_hook(&id, path)),
            stop_file: Some(data_dir.join(guard::STOP_FILE)),
            other_drill: other_drill.clone(),
        };
        let result = runner::run(&plan, &source, &target, options).await;
        ticker.abort();
        result
    });
    progress.finish_and_clear();
    let mut report = report?;
    report.regressions = compare_with_previous(&report, data_dir);
    let detail = json!({ "verdict": report.verdict.word(), "rto_total_ms": report.rto.total_ms,
                         "rpo_lost": report.rpo.lost, "findings": report.findings.len(),
                         "regressions": report.regressions.as_ref().map_or(0, |c| c.found.len()) });
    let shown_dir = file_report(&report, detail, &audit, &sha, data_dir, report_dir, lang)?;
    print_summary(&report, &shown_dir);
    Ok(exit_code(&report))
}

/// The drill against the previous drill of its scenario in the archive. The
/// report is filed even when the archive cannot be read for this: the
/// comparison is then left out and the reason printed.
fn compare_with_previous(report: &Report, data_dir: &Path) -> Option<maildr_drill::regression::Comparison> {
    match maildr_drill::regression::compare_with_previous(&Archive::new(data_dir), report) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: not compared with the previous drill: {e}");
            None
        }
    }
}

/// Exit code of `drill run`, tabletop or not: 0 passed, 1 failed or aborted.
fn exit_code(report: &Report) -> i32 {
    match report.verdict {
        Verdict::Passed => 0,
        Verdict::Failed | Verdict::Aborted => 1,
    }
}

/// Archive the report (write-once), record `drill_finished` (with `detail`)
/// and `report_archived` in the audit log, and write the files to `report_dir`
/// too when asked. Returns the directory to show.
fn file_report(
    report: &Report,
    detail: Value,
    audit: &AuditLog,
    sha: &str,
    data_dir: &Path,
    report_dir: Option<&Path>,
    lang: Lang,
) -> Result<PathBuf> {
    let archived = Archive::new(data_dir).save(report, lang).context("archiving the report")?;
    let finished = AuditEvent::new(maildr_drill::audit::os_user(), maildr_drill::audit::action::DRILL_FINISHED)
        .drill(report.drill_id.clone())
        .plan(sha)
        .detail(detail);
    let archived_event =
        AuditEvent::new(maildr_drill::audit::ENGINE_ACTOR, maildr_drill::audit::action::REPORT_ARCHIVED)
            .drill(report.drill_id.clone())
            .plan(sha)
            .detail(json!({ "dir": archived.dir, "report_json_sha256": archived.json_sha256 }));
    for event in [finished, archived_event] {
        audit.append(event).context("writing the audit log")?;
    }
    let mut shown_dir = archived.dir.clone();
    if let Some(dir) = report_dir {
        archive::write_report_files(report, dir, lang)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        shown_dir = dir.to_path_buf();
    }
    Ok(shown_dir)
}

/// `drill run --tabletop`: the plan walked through by its participants. It
/// never loads the plan's target, starts or reads a lab, or takes the drill
/// lock: nothing is touched, so neither a running drill nor a global stop
/// holds it back. Everything the command line or the answers file gets wrong
/// is refused before the audit log or the archive is written.
fn run_tabletop(
    scenario: &str,
    participants: &[String],
    answers: Option<&Path>,
    report_dir: Option<&Path>,
    data_dir: &Path,
    lang: Option<Lang>,
) -> Result<i32> {
    let (source, plan) = load_plan(scenario)?;
    let lang = lang.unwrap_or(plan.lang);
    let roster = Roster::choose(participants, &plan)?;
    roster.covers(&plan)?;
    let sheet = answers.map(|file| AnswerSheet::read(file, &plan, &roster)).transpose()?;
    if sheet.is_none() && !std::io::stdin().is_terminal() {
        bail!("a tabletop exercise needs its participants at a terminal, or their answers in --answers FILE");
    }
    let sha = source.sha256();
    let audit = open_audit(data_dir)?;
    let exercise = Exercise {
        plan: &plan,
        source: &source,
        roster: &roster,
        drill_id: drill_id(&plan.name),
        approvals: approval::approvals_for(data_dir, &sha)?,
        started_at_ms: maildr_drill::flow::now_ms(),
    };
    let record = |action: &str, detail: Value| {
        let actor = if action == maildr_drill::audit::action::TABLETOP_ACKNOWLEDGED {
            detail["by"].as_str().unwrap_or("participant").to_string()
        } else {
            maildr_drill::audit::ENGINE_ACTOR.to_string()
        };
        let event = AuditEvent::new(actor, action).drill(exercise.drill_id.clone()).plan(sha.clone()).detail(detail);
        if let Err(e) = audit.append(event) {
            note!("warning: the audit log could not be written: {e}");
        }
    };
    note!("tabletop exercise {}: {} (no fault is injected, no target is contacted)", exercise.drill_id, plan.name);
    let report = match sheet {
        Some(mut sheet) => tabletop::run(&exercise, &mut sheet, &record)?,
        None => {
            let started = Instant::now();
            let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let mut terminal = Terminal::new(std::io::stdin().lock(), std::io::stderr(), now_ms);
            tabletop::run(&exercise, &mut terminal, &record)?
        }
    };
    let t = report.tabletop.as_ref().expect("a tabletop run reports its tabletop record");
    let acknowledged = t.steps.iter().filter(|s| s.acknowledged_by.is_some()).count();
    let detail = json!({ "mode": "tabletop", "verdict": report.verdict.word(),
                         "recovery_total_ms": t.recovery.total_ms, "steps": report.steps.len(),
                         "acknowledged": acknowledged, "findings": report.findings.len() });
    let shown_dir = file_report(&report, detail, &audit, &sha, data_dir, report_dir, lang)?;
    print_tabletop_summary(&report, &shown_dir);
    Ok(exit_code(&report))
}

fn print_tabletop_summary(report: &Report, dir: &Path) {
    let Some(t) = &report.tabletop else { return };
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "not reached".into());
    println!();
    println!("Tabletop exercise {} — {}", report.drill_id, report.verdict.word().to_uppercase());
    if let Some(why) = &report.abort_reason {
        println!("Aborted: {why}");
    }
    let clock = match t.clock {
        maildr_drill::report::ExerciseClock::Simulated => "simulated from the answers file",
        maildr_drill::report::ExerciseClock::Wall => "wall clock",
    };
    let r = &t.recovery;
    println!(
        "Recovery by the participants' decisions ({clock}): new primary {} · DNS {} · mail flows {} · total {}",
        ms(r.elect.after_fault_ms),
        ms(r.dns.after_fault_ms),
        ms(r.mail.after_fault_ms),
        ms(r.total_ms)
    );
    for s in &t.steps {
        println!(
            "  {:>2}. {:<20} {:<14} {}",
            s.index,
            s.role,
            s.acknowledged_by.as_deref().unwrap_or("NOT ACKNOWLEDGED"),
            s.name
        );
    }
    for o in &report.objectives {
        println!(
            "  {} {:<20} target {:>7} {}  {}",
            if o.met { "met   " } else { "MISSED" },
            o.name,
            o.target,
            o.unit,
            o.measured.map(|m| format!("{m} {}", o.unit)).unwrap_or_else(|| "not reached".into())
        );
    }
    if !t.not_graded.is_empty() {
        println!("  not judged by a tabletop: {}", t.not_graded.join(", "));
    }
    for f in &report.findings {
        println!("  finding ({:?}): {} — {}", f.severity, f.title, f.evidence);
    }
    println!("Report: {}", dir.join("report.html").display());
}

/// Keep each phase entered in `path` (`--progress`); a failed write is said
/// once on stderr and the drill goes on.
fn phase_hook(drill_id: &str, path: PathBuf) -> runner::PhaseHook {
    let progress = Mutex::new((Progress::new(drill_id), false));
    Arc::new(move |phase, step| {
        let mut guard = progress.lock().expect("progress lock");
        let (progress, warned) = &mut *guard;
        if !progress.enter(phase, step, maildr_drill::flow::now_ms()) {
            return;
        }
        if let Err(e) = progress.write(&path) {
            if !*warned {
                note!("warning: the progress file {} could not be written: {e}", path.display());
                *warned = true;
            }
        }
    })
}

async fn show_progress(live: Arc<Mutex<Live>>, progress: indicatif::ProgressBar, interactive: bool) {
    let started = Instant::now();
    let mut last_step = String::new();
    loop {
        let now = live.lock().expect("live lock").clone();
        let phase = now.phase.map(|p| p.title()).unwrap_or("starting");
        let c = now.counters;
        progress.set_message(format!(
            "{phase} | {} | mail acknowledged {} pending {} deferred {} | IMAP ok {} failed {}",
            now.step, c.acknowledged, c.pending, c.deferred, c.imap_ok, c.imap_failed
        ));
        progress.tick();
        if !interactive && now.step != last_step {
            note!("[{:>6.1} s] {phase}: {}", started.elapsed().as_secs_f64(), now.step);
            last_step = now.step.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(report: &Report, dir: &Path) {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "not seen".into());
    println!();
    println!("Drill {} — {}", report.drill_id, report.verdict.word().to_uppercase());
    if let Some(why) = &report.abort_reason {
        println!("Aborted: {why}");
    }
    let r = &report.rto;
    println!(
        "RTO after the fault: detect {} · elect {} · DNS committed {} · DNS served {} · first SMTP 250 via MX {} · first IMAP fetch via mail. {} · total {}",
        ms(r.detect_ms),
        ms(r.elect_ms),
        ms(r.dns_committed_ms),
        ms(r.dns_served_ms),
        ms(r.first_smtp_ok_ms),
        ms(r.first_imap_ok_ms),
        ms(r.total_ms)
    );
    let p = &report.rpo;
    println!(
        "RPO: acknowledged {} · found {} · lost {} · duplicated {} · deferred {} · given up {} (reconciled at {})",
        p.acknowledged,
        p.found,
        p.lost,
        p.duplicated,
        p.deferred,
        p.given_up,
        p.reconciled_at.join(", ")
    );
    for o in &report.objectives {
        println!(
            "  {} {:<14} target {:>7} {}  measured {}",
            if o.met { "met   " } else { "MISSED" },
            o.name,
            o.target,
            o.unit,
            o.measured.map(|m| format!("{m} {}", o.unit)).unwrap_or_else(|| "-".into())
        );
    }
    for f in &report.findings {
        println!("  finding ({:?}): {} — {}", f.severity, f.title, f.evidence);
    }
    if let Some(c) = &report.regressions {
        if c.found.is_empty() {
            println!("Against the previous drill {}: nothing got worse", c.previous_drill_id);
        } else {
            println!("Against the previous drill {}: {} worse", c.previous_drill_id, c.found.len());
            for r in &c.found {
                println!("  worse: {r}");
            }
        }
    }
    println!("Report: {}", dir.join("report.html").display());
}
