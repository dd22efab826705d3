//! `maildr drill serve|user|schedule|runs|run-now|stop-all|release-all`: the
//! drill service (`maildr_drill_service`) and the command line that talks to it
//! over its HTTP API with a person's token. This module parses, calls and
//! prints; the service and its rules are the library's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use maildr_drill_service::model::{
    ApprovalAnswer, NewPerson, NewPersonAnswer, NewSchedule, PersonView, Role, RunRecord, Schedule, StartRun,
    StopRequest, StopState,
};
use maildr_drill_service::{calendar, notify, Config, Service};
use maildr_lab::http_client::{HttpError, JsonApi, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How to reach the service, and as whom.
#[derive(Args, Clone)]
pub struct Conn {
    /// The drill service's URL (http://HOST:PORT).
    #[arg(long, env = "MAILDR_DRILL_SERVICE")]
    service: String,
    /// Your token (`maildr drill user add` prints it; the admin's is in DIR/admin.token).
    #[arg(long, env = "MAILDR_DRILL_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
pub enum ServiceAction {
    /// Run the drill service: the calendar, drills as child processes, roles,
    /// notifications, history, and its HTTP API (OpenAPI at /openapi.json). On
    /// first start prints the admin's token (also written to DIR/admin.token).
    Serve {
        /// Where the service keeps its state, runs and the drill data directory (DIR/drills).
        #[arg(long)]
        data_dir: PathBuf,
        /// Address of the HTTP API (port 0: any free port, printed).
        #[arg(long)]
        listen: SocketAddr,
        /// SMTP relay for e-mail notifications (HOST:PORT, plain, no AUTH): one
        /// outside the deployment under drill.
        #[arg(long, value_name = "HOST:PORT")]
        smtp_relay: Option<String>,
        /// Sender of e-mail notifications.
        #[arg(long, default_value = "drill-service@localhost")]
        smtp_from: String,
        /// Also trust the CA certificates in FILE (PEM) for https:// webhooks,
        /// besides the system's roots: a private CA of your network.
        #[arg(long, value_name = "FILE")]
        webhook_ca: Option<PathBuf>,
    },
    /// People of the drill service and their roles (admin).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// The drill calendar.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Every run the service started or skipped: scenario, schedule, verdict, reason.
    Runs {
        #[command(flatten)]
        conn: Conn,
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start a scenario now through the service (operator, admin).
    RunNow {
        scenario: String,
        #[arg(long)]
        lab_dir: Option<String>,
        #[arg(long)]
        net: Option<String>,
        /// KIND=URL or email=ADDR (repeatable).
        #[arg(long)]
        notify: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Global stop through the service: running drills roll back, none starts
    /// until released (operator, admin).
    StopAll {
        #[arg(long, default_value = "global stop")]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lift the global stop through the service (operator, admin).
    ReleaseAll {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Add a person; prints their token (shown once).
    Add {
        name: String,
        /// viewer, operator, approver, auditor or admin.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every person and role.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Remove a person (never the last admin).
    Remove {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ScheduleAction {
    /// Add a schedule; prints its id.
    Add {
        /// Scenario name or plan file (as the service sees it).
        scenario: String,
        /// Cron expression in UTC, five fields or six with seconds first
        /// (`0 0 3 1 */3 *`: quarterly, the 1st at 03:00).
        #[arg(long)]
        cron: String,
        /// The lab to drill (`drill run --lab-dir`).
        #[arg(long)]
        lab_dir: Option<String>,
        /// Addresses of a lab the drill starts itself (`drill run --net`).
        #[arg(long)]
        net: Option<String>,
        /// START/END in RFC 3339: no run in that window (repeatable).
        #[arg(long, value_name = "START/END")]
        blackout: Vec<String>,
        /// webhook=URL, dingtalk=URL, feishu=URL, wecom=URL, slack=URL or email=ADDR (repeatable).
        #[arg(long, value_name = "KIND=TARGET")]
        notify: Vec<String>,
        /// Approvals from distinct approvers each run needs.
        #[arg(long, default_value_t = 0)]
        approvals: u32,
        /// Tell the targets this long before each run (e.g. 10m, 2h, 1d; 0: not).
        #[arg(long, default_value = "0")]
        notify_before: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every schedule with its next due time.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule.
    Remove {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve the schedule's next run, as yourself (approver role).
    Approve {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Run one service action; the process exit code.
pub fn run(action: ServiceAction) -> i32 {
    crate::init_logging("warn");
    match dispatch(action) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

fn dispatch(action: ServiceAction) -> Result<i32> {
    match action {
        ServiceAction::Serve { data_dir, listen, smtp_relay, smtp_from, webhook_ca } => {
            let notifier = notify::Notifier {
                mailer: notify::Mailer { relay: smtp_relay, from: smtp_from },
                webhooks: webhook_client(webhook_ca.as_deref())?,
            };
            serve(data_dir, listen, notifier)
        }
        ServiceAction::User { action } => user(action),
        ServiceAction::Schedule { action } => schedule(action),
        ServiceAction::Runs { conn, json } => runs(&conn, json),
        ServiceAction::RunNow { scenario, lab_dir, net, notify, conn } => {
            let notify = notify
                .iter()
                .map(|t| notify::parse_target(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let run: RunRecord =
                call(&conn, Method::POST, "/runs", Some(&StartRun { scenario, lab_dir, net, notify }))?;
            println!("{}", run.id);
            Ok(0)
        }
        ServiceAction::StopAll { reason, conn } => {
            let s: StopState = call(&conn, Method::POST, "/stop", Some(&StopRequest { reason: Some(reason) }))?;
            println!("drills are stopped by {}: {}", s.by.unwrap_or_default(), s.reason.unwrap_or_default());
            Ok(0)
        }
        ServiceAction::ReleaseAll { conn } => {
            let s: StopState = call::<(), _>(&conn, Method::POST, "/release", None)?;
            match s.by {
                Some(by) => println!("the stop ordered by {by} is lifted"),
                None => println!("drills were not stopped"),
            }
            Ok(0)
        }
    }
}

/// The webhook client, trusting `--webhook-ca`'s certificates too.
fn webhook_client(ca: Option<&Path>) -> Result<notify::WebhookClient> {
    let pem = match ca {
        Some(path) => {
            use std::io::Read;
            let mut pem = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(notify::CA_FILE_BYTES_MAX + 1).read_to_end(&mut pem))
                .with_context(|| format!("--webhook-ca {}", path.display()))?;
            if pem.len() as u64 > notify::CA_FILE_BYTES_MAX {
                bail!("--webhook-ca {}: larger than {} bytes", path.display(), notify::CA_FILE_BYTES_MAX);
            }
            Some(pem)
        }
        None => None,
    };
    notify::WebhookClient::new(pem.as_deref()).map_err(|e| match ca {
        Some(path) => anyhow::anyhow!("--webhook-ca {}: {e}", path.display()),
        None => anyhow::anyhow!("the webhook client: {e}"),
    })
}

fn serve(data_dir: PathBuf, listen: SocketAddr, notifier: notify::Notifier) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the maildr binary")?;
    let data_dir = std::path::absolute(&data_dir).context("resolving --data-dir")?;
    let config = Config { data_dir: data_dir.clone(), exe, notifier };
    crate::runtime()?.block_on(async move {
        let (service, admin_token) = Service::open(config).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        if let Some(token) = admin_token {
            println!("admin token: {token}");
            println!(
                "(shown once; also in {}, mode 0600)",
                data_dir.join(maildr_drill_service::service::ADMIN_TOKEN_FILE).display()
            );
        }
        println!("drill service listening on http://{addr}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let scheduler = tokio::spawn(service.clone().run_scheduler(stop_rx.clone()));
        let server = tokio::spawn(maildr_drill_service::api::serve(listener, service, stop_rx));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: running drills are interrupted (they roll back and report)");
        let _ = stop_tx.send(true);
        let _ = server.await;
        let _ = scheduler.await;
        Ok(0)
    })
}

fn api(conn: &Conn) -> Result<JsonApi> {
    let url = notify::HttpUrl::parse(&conn.service).map_err(|e| anyhow::anyhow!("--service: {e}"))?;
    if url.tls {
        bail!("--service {}: the drill service speaks plain http://", conn.service);
    }
    if url.path != "/" {
        bail!("--service {}: give the service's root URL (http://HOST:PORT)", conn.service);
    }
    let addr = crate::runtime()?.block_on(url.resolve()).map_err(anyhow::Error::msg)?;
    Ok(JsonApi { api: "drill service", addr, bearer: Some(conn.token.clone()) })
}

/// One request; the answer read as `T`, a refusal as the service's error text.
fn call<B: Serialize, T: DeserializeOwned>(conn: &Conn, method: Method, path: &str, body: Option<&B>) -> Result<T> {
    let api = api(conn)?;
    let body = body.map(serde_json::to_vec).transpose()?;
    let bytes = crate::runtime()?.block_on(api.request(method, path, body)).map_err(|e| match e {
        HttpError::Refused { status, body, .. } => {
            let text = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            anyhow::anyhow!("the drill service refused ({status}): {text}")
        }
        other => anyhow::anyhow!(other),
    })?;
    if bytes.is_empty() {
        return Ok(serde_json::from_slice(b"null")?);
    }
    serde_json::from_slice(&bytes).context("the drill service's answer")
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn user(action: UserAction) -> Result<i32> {
    match action {
        UserAction::Add { name, role, conn } => {
            let answer: NewPersonAnswer = call(&conn, Method::POST, "/users", Some(&NewPerson { name, role }))?;
            println!("{}", answer.token);
        }
        UserAction::List { conn, json } => {
            let people: Vec<PersonView> = call::<(), _>(&conn, Method::GET, "/users", None)?;
            if json {
                print_json(&people)?;
            } else {
                for p in people {
                    println!("{:<24} {}", p.name, p.role);
                }
            }
        }
        UserAction::Remove { name, conn } => {
            call::<(), serde_json::Value>(&conn, Method::DELETE, &format!("/users/{}", path_segment(&name)), None)?;
            println!("{name} removed");
        }
    }
    Ok(0)
}

fn schedule(action: ScheduleAction) -> Result<i32> {
    match action {
        ScheduleAction::Add { scenario, cron, lab_dir, net, blackout, notify, approvals, notify_before, conn } => {
            let blackouts = blackout
                .iter()
                .map(|b| calendar::parse_blackout(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let notify = notify
                .iter()
                .map(|t| notify::parse_target(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let lab_dir = lab_dir.map(|d| absolute_text(&d)).transpose()?;
            let new = NewSchedule {
                scenario: plan_ref(&scenario)?,
                cron,
                lab_dir,
                net,
                blackouts,
                notify,
                approvals,
                notify_before_secs: parse_duration_secs(&notify_before)?,
            };
            let s: Schedule = call(&conn, Method::POST, "/schedules", Some(&new))?;
            println!("{}", s.id);
        }
        ScheduleAction::List { conn, json } => {
            let schedules: Vec<Schedule> = call::<(), _>(&conn, Method::GET, "/schedules", None)?;
            if json {
                print_json(&schedules)?;
            } else {
                for s in schedules {
                    let next = s.next_due_at_ms.map(calendar::rfc3339).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<6} {:<24} {:<20} next {next} approvals {} by {}",
                        s.id, s.scenario, s.cron, s.approvals, s.created_by
                    );
                }
            }
        }
        ScheduleAction::Remove { id, conn } => {
            call::<(), serde_json::Value>(&conn, Method::DELETE, &format!("/schedules/{}", path_segment(&id)), None)?;
            println!("schedule {id} removed");
        }
        ScheduleAction::Approve { id, conn } => {
            let a: ApprovalAnswer =
                call::<(), _>(&conn, Method::POST, &format!("/schedules/{}/approvals", path_segment(&id)), None)?;
            println!(
                "run of schedule {} due at {} approved: {} of {} ({})",
                a.schedule_id,
                calendar::rfc3339(a.due_at_ms),
                a.approved_by.len(),
                a.required,
                a.approved_by.join(", ")
            );
        }
    }
    Ok(0)
}

fn runs(conn: &Conn, json: bool) -> Result<i32> {
    let runs: Vec<RunRecord> = call::<(), _>(conn, Method::GET, "/runs", None)?;
    if json {
        print_json(&runs)?;
        return Ok(0);
    }
    for r in runs {
        println!(
            "{:<6} {:<20} {:<6} {:<8} {:<25} {}",
            r.id,
            r.scenario,
            r.schedule_id.as_deref().unwrap_or("-"),
            r.verdict.word(),
            calendar::rfc3339(r.due_at_ms),
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

/// A scenario name as it is, a plan file made absolute (the service may run elsewhere).
fn plan_ref(scenario: &str) -> Result<String> {
    if maildr_drill::scenarios::LIBRARY.iter().any(|(n, _)| *n == scenario) {
        return Ok(scenario.to_string());
    }
    absolute_text(scenario)
}

fn absolute_text(path: &str) -> Result<String> {
    Ok(std::path::absolute(Path::new(path)).with_context(|| format!("resolving {path}"))?.display().to_string())
}

/// `10m`, `2h`, `1d`, `30s` or plain seconds.
fn parse_duration_secs(text: &str) -> Result<u64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("duration {text:?}: expected e.g. 30s, 10m, 2h, 1d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {text:?}: unit must be s, m, h or d"),
    };
    n.checked_mul(factor).with_context(|| format!("duration {text:?} is too long"))
}

/// Percent-encode a path segment (ids and names are plain, but a user's typo must not change the route).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_path_segments() {
        assert_eq!(parse_duration_secs("10m").unwrap(), 600);
        assert_eq!(parse_duration_secs("0").unwrap(), 0);
        assert_eq!(parse_duration_secs("1d").unwrap(), 86_400);
        assert!(parse_duration_secs("10w").is_err());
        assert!(parse_duration_secs("m").is_err());
        assert_eq!(path_segment("s1/../x"), "s1%2F..%2Fx");
    }
}
