//! The lab's processes, by pid: whether one is alive and really ours, signals,
//! bounded waits, and starting a child that outlives the command that started it.
//!
//! `lab up` exits and leaves its sites running, so later commands are not their
//! parent: they find them through `/proc` and signal them with kill(1). A pid from
//! `lab.json` is signalled only when its command line is still the one the lab
//! started (the `maildr` binary with that site's config path, or the links
//! process with the lab directory): a pid reused by an unrelated process is never
//! touched.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often waits look again.
const POLL: Duration = Duration::from_millis(50);
/// How long SIGKILLed processes may take to disappear before we report them.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What `/proc` says about a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No such process, or a zombie waiting for its parent: it runs no more code.
    Gone,
    Running,
    /// Stopped by SIGSTOP (`lab pause`).
    Paused,
}

pub fn liveness(pid: u32) -> Liveness {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Liveness::Gone;
    };
    // The state follows the command name, which is in parentheses and may itself
    // contain spaces and parentheses: look after the last ')'.
    match stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) {
        // A thread-group leader turns zombie as soon as its own thread exits, while
        // the other threads may still be exiting with the process's files (and the
        // locks on its databases) open: gone only once no other thread is left.
        Some('Z' | 'X' | 'x') | None if threads(pid) > 1 => Liveness::Running,
        Some('Z' | 'X' | 'x') | None => Liveness::Gone,
        Some('T' | 't') => Liveness::Paused,
        Some(_) => Liveness::Running,
    }
}

/// How many threads of `pid` the kernel still lists (0 when it is gone).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|tasks| tasks.count()).unwrap_or(0)
}

/// Whether `pid` runs the `maildr` binary with `marker` (a config path or the lab
/// directory) as one of its arguments, or SeaweedFS's `weed` with `-dir=<marker>`
/// (the lab's S3 server).
pub fn is_ours(pid: u32, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let marker = marker.as_os_str().as_encoded_bytes();
    let is_maildr = args.first().is_some_and(|exe| exe.windows(6).any(|w| w == b"maildr"));
    if is_maildr {
        return args.iter().skip(1).any(|a| *a == marker);
    }
    // The lab's S3 server: SeaweedFS with the lab's data directory.
    let is_weed = args.first().is_some_and(|exe| exe.ends_with(b"weed"));
    let dir_arg = [b"-dir=".as_slice(), marker].concat();
    is_weed && args.iter().skip(1).any(|a| *a == dir_arg.as_slice())
}

/// A lab process as `lab.json` records it.
#[derive(Debug, Clone)]
pub struct LabProc {
    /// `site bj`, `links`: for messages.
    pub label: String,
    pub pid: u32,
    /// The argument that identifies it (see [`is_ours`]).
    pub marker: PathBuf,
}

impl LabProc {
    /// Alive and ours: `Some(Running | Paused)`; otherwise `None`.
    pub fn state(&self) -> Option<Liveness> {
        match liveness(self.pid) {
            Liveness::Gone => None,
            _ if !is_ours(self.pid, &self.marker) => None,
            l => Some(l),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Signal {
    Term,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Send `signal` to `pid` with kill(1). The caller checked that the pid is ours.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    let out = Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running kill(1)")?;
    if !out.status.success() && liveness(pid) != Liveness::Gone {
        bail!("kill -s {} {pid} failed: {}", signal.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Stop every process of `procs` that is alive and ours: SIGTERM (and SIGCONT, so a
/// paused one can act on it), up to `grace` for all to exit, then SIGKILL for the
/// rest. Errors if any is still there afterwards. Returns what was stopped.
pub fn stop_all(procs: &[LabProc], grace: Duration) -> Result<Vec<LabProc>> {
    let targets: Vec<LabProc> = procs.iter().filter(|p| p.state().is_some()).cloned().collect();
    for p in &targets {
        signal(p.pid, Signal::Term)?;
        signal(p.pid, Signal::Cont)?;
    }
    let left = wait_gone(&targets, Instant::now() + grace);
    for p in &left {
        tracing::warn!(
            "{} (pid {}) did not stop within {} s of SIGTERM; sending SIGKILL",
            p.label,
            p.pid,
            grace.as_secs()
        );
        signal(p.pid, Signal::Kill)?;
    }
    let left = wait_gone(&left, Instant::now() + KILL_WAIT);
    if !left.is_empty() {
        let names: Vec<String> = left.iter().map(|p| format!("{} (pid {})", p.label, p.pid)).collect();
        bail!("still running after SIGKILL: {}", names.join(", "));
    }
    Ok(targets)
}

/// Wait until every process of `procs` is gone or `deadline` passes; returns those left.
pub fn wait_gone(procs: &[LabProc], deadline: Instant) -> Vec<LabProc> {
    loop {
        let left: Vec<LabProc> = procs.iter().filter(|p| liveness(p.pid) != Liveness::Gone).cloned().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(POLL);
    }
}

/// Start `exe args...` with standard output and error appended to `log`, in its own
/// process group (a Ctrl-C for the terminal that ran `lab up` does not reach it),
/// so that it keeps running after we exit.
pub fn spawn_detached(exe: &Path, args: &[&OsStr], log: &Path) -> Result<Child> {
    spawn_detached_in(exe, args, log, None)
}

/// [`spawn_detached`] inside network namespace `netns` (entered between fork and
/// exec, so nothing but the new process moves).
pub fn spawn_detached_in(exe: &Path, args: &[&OsStr], log: &Path, netns: Option<&str>) -> Result<Child> {
    let out =
        OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(exe);
    // Opened here and held until after the spawn; close-on-exec, so the site
    // does not inherit it.
    let ns = netns
        .map(|name| crate::netns::open(name).with_context(|| format!("opening network namespace {name}")))
        .transpose()?;
    if let Some(ns) = &ns {
        use std::os::fd::AsRawFd;
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe and touches only this child.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // The output goes to a file: no terminal colour codes in it.
        .env("NO_COLOR", "1")
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} {:?}", exe.display(), args))
}

/// Children started by this command, stopped (and reaped) if it fails half-way.
#[derive(Default)]
pub struct Started {
    children: Vec<(String, PathBuf, Child)>,
}

impl Started {
    pub fn push(&mut self, label: String, log: PathBuf, child: Child) {
        self.children.push((label, log, child));
    }

    /// Fails naming the first child that has exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        for (label, log, child) in &mut self.children {
            if let Some(status) = child.try_wait().context("checking a lab process")? {
                bail!("{label} exited during startup ({status}); see {}{}", log.display(), log_tail(log));
            }
        }
        Ok(())
    }

    /// SIGTERM every child still running, then SIGKILL after `grace`; reap them all.
    pub fn stop(&mut self, grace: Duration) {
        for (_, _, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = signal(child.id(), Signal::Term);
                let _ = signal(child.id(), Signal::Cont);
            }
        }
        let deadline = Instant::now() + grace;
        for (label, _, child) in &mut self.children {
            while let Ok(None) = child.try_wait() {
                if Instant::now() >= deadline {
                    tracing::warn!("{label} (pid {}) ignored SIGTERM; killing it", child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        self.children.clear();
    }

    /// Leave the children running: they outlive this command.
    pub fn release(&mut self) {
        self.children.clear();
    }
}

/// The last lines of a log file, prefixed for an error message (empty if unreadable).
pub fn log_tail(log: &Path) -> String {
    const LINES: usize = 15;
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(LINES)..];
    format!("\n--- last lines of {} ---\n{}", log.display(), tail.join("\n"))
}

/// Run a command to completion, feeding `stdin`, and give up (killing it) after `timeout`.
pub fn run_bounded(mut command: Command, stdin: Option<&str>, timeout: Duration) -> Result<Output> {
    let what = format!("{:?}", command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).with_context(|| format!("writing to {what}"))?;
    }
    drop(input);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.with_context(|| format!("waiting for {what}")),
        Err(_) => {
            // Still our unreaped child, so the pid cannot have been reused.
            let _ = signal(pid, Signal::Kill);
            let _ = rx.recv();
            bail!("{what} did not finish within {} s", timeout.as_secs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_is_not_maildr_is_never_ours() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert_eq!(liveness(pid), Liveness::Running);
        assert!(!is_ours(pid, Path::new("30")));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(liveness(pid), Liveness::Gone);
    }

    #[test]
    fn a_zombie_counts_as_gone_and_a_stopped_process_as_paused() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        signal(pid, Signal::Stop).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while liveness(pid) != Liveness::Paused && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert_eq!(liveness(pid), Liveness::Paused);
        signal(pid, Signal::Kill).unwrap();
        assert!(wait_gone(&[LabProc { label: "sleep".into(), pid, marker: "x".into() }], deadline).is_empty());
        child.wait().unwrap();
    }
}
