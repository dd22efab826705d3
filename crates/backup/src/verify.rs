//! Proving a backup: every object it needs exists, opens with the key and hashes to
//! what the manifest says; and, with a restore test, the backup restored into a
//! scratch site gives every mailbox's digest and count of the manifest and serves a
//! sample of its messages, byte for byte, to an IMAP client.
//!
//! The restore test starts a real `maildr serve` on loopback over the restored data
//! directory (no cluster, ephemeral ports), sets a one-time password on the accounts
//! it samples (in the scratch copy only), reads the sampled messages with
//! `BODY.PEEK[]`, and stops the process by its pid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use maildr_api_types::{BackupVerifyReport, VerifyProblem};
use maildr_store::{Command, Store};
use maildr_types::BlobHash;
use sha2::Digest as _;

use crate::catalog::manifests_of;
use crate::manifest::{BackupId, Manifest};
use crate::rebuild::{open_blocking, Point};
use crate::restore::{fetch_body, restore_site};
use crate::{BackupError, Backups, Target};

/// Messages read over IMAP in a restore test, at most (spread over the mailboxes).
pub const RESTORE_TEST_SAMPLE: usize = 20;
/// How long the scratch site may take to start.
const SCRATCH_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How `backup verify` ended: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checked is good (exit 0).
    Good,
    /// A problem was found (exit 1).
    Problems,
    /// It could not check (exit 2).
    CouldNotCheck,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Good => 0,
            Verdict::Problems => 1,
            Verdict::CouldNotCheck => 2,
        }
    }
}

/// Verify backup `id` (else the newest) on every target; with `restore_test`, also
/// restore it with the `maildr` executable at that path.
pub async fn verify(
    backups: &Backups,
    id: Option<&BackupId>,
    restore_test: Option<&Path>,
) -> (BackupVerifyReport, Verdict) {
    let mut report = BackupVerifyReport {
        backup: id.map(|i| i.to_string()).unwrap_or_default(),
        targets: Vec::new(),
        objects_checked: 0,
        bytes_checked: 0,
        restore_tested: false,
        messages_read_over_imap: 0,
        problems: Vec::new(),
        ok: false,
    };
    let mut could_not_check = false;
    let mut chosen: Option<Manifest> = None;
    for target in &backups.targets {
        let manifests = match manifests_of(backups, target).await {
            Ok(m) => m,
            Err(e) => {
                problem(&mut report, target, "manifests", e.to_string());
                could_not_check = matches!(e, BackupError::Target(_));
                continue;
            }
        };
        let manifest = match id {
            Some(id) => manifests.into_iter().find(|m| &m.id == id),
            None => match &chosen {
                Some(c) => manifests.into_iter().find(|m| m.id == c.id),
                None => manifests.into_iter().last(),
            },
        };
        let Some(manifest) = manifest else {
            problem(&mut report, target, "backup", "the backup is not on this target".into());
            continue;
        };
        report.targets.push(target.name().into());
        report.backup = manifest.id.to_string();
        check_objects(backups, target, &manifest, &mut report).await;
        chosen.get_or_insert(manifest);
    }
    let Some(manifest) = chosen else {
        report.problems.push(VerifyProblem {
            target: String::new(),
            object: String::new(),
            problem: "no backup to verify".into(),
        });
        return (report, Verdict::CouldNotCheck);
    };
    if let Some(exe) = restore_test {
        if report.problems.is_empty() {
            if let Err(e) = restore_test_of(backups, &manifest, exe, &mut report).await {
                report.problems.push(VerifyProblem {
                    target: String::new(),
                    object: "restore test".into(),
                    problem: e.to_string(),
                });
            }
            report.restore_tested = true;
        }
    }
    report.ok = report.problems.is_empty();
    let verdict = if report.ok {
        Verdict::Good
    } else if could_not_check && report.targets.is_empty() {
        Verdict::CouldNotCheck
    } else {
        Verdict::Problems
    };
    (report, verdict)
}

fn problem(report: &mut BackupVerifyReport, target: &Target, object: &str, problem: String) {
    report.problems.push(VerifyProblem { target: target.name().into(), object: object.into(), problem });
}

/// Check the state object and every body of `manifest` on `target`.
async fn check_objects(backups: &Backups, target: &Target, manifest: &Manifest, report: &mut BackupVerifyReport) {
    let key = manifest.id.state_key();
    match target.get(&key).await {
        Ok(Some(sealed)) => {
            report.objects_checked += 1;
            report.bytes_checked += sealed.len() as u64;
            match backups.key.open(&key, &sealed) {
                Ok(state) if hex::encode(sha2::Sha256::digest(&state)) == manifest.state_sha256 => {}
                Ok(_) => problem(report, target, &key, "does not match the manifest's hash".into()),
                Err(e) => problem(report, target, &key, e.to_string()),
            }
        }
        Ok(None) => problem(report, target, &key, "missing".into()),
        Err(e) => problem(report, target, &key, e.to_string()),
    }
    for hash in &manifest.bodies {
        let Some(hash) = BlobHash::from_hex(hash) else {
            problem(report, target, "manifest", format!("lists {hash:?}, not a body hash"));
            continue;
        };
        let object = backups.key.body_object(&hash);
        match fetch_body(backups, target, &hash).await {
            Ok(body) => {
                report.objects_checked += 1;
                report.bytes_checked += body.len() as u64;
            }
            Err(BackupError::Refused(reason)) if reason.contains("missing") => {
                problem(report, target, &object, "missing".into())
            }
            Err(e) => problem(report, target, &object, e.to_string()),
        }
    }
}

/// Restore `manifest` into a scratch site, compare it with the manifest and read a
/// sample over IMAP.
async fn restore_test_of(
    backups: &Backups,
    manifest: &Manifest,
    exe: &Path,
    report: &mut BackupVerifyReport,
) -> Result<(), BackupError> {
    let scratch = ScratchDir::new(&backups.work_dir)?;
    let data_dir = scratch.0.join("data");
    restore_site(backups, &Point::Backup(manifest.id.clone()), &data_dir).await?;

    // The restored store against the manifest.
    let store = open_blocking(&data_dir).await?;
    let described = {
        let store = std::sync::Arc::clone(&store);
        let site = manifest.site.clone();
        let (index, at, fp) = (manifest.applied_index, manifest.taken_at_ms, manifest.key_fingerprint.clone());
        tokio::task::spawn_blocking(move || Manifest::describe(&store, &site, index, at, &[], &fp))
            .await
            .map_err(|e| BackupError::Io(e.to_string()))??
    };
    for expected in &manifest.mailboxes {
        let found = described.mailboxes.iter().find(|m| m.account == expected.account && m.name == expected.name);
        match found {
            Some(m) if m == expected => {}
            Some(m) => report.problems.push(VerifyProblem {
                target: String::new(),
                object: format!("{} {}", expected.account, expected.name),
                problem: format!(
                    "restored {} messages with digest {}; the manifest says {} with {}",
                    m.messages, m.digest, expected.messages, expected.digest
                ),
            }),
            None => report.problems.push(VerifyProblem {
                target: String::new(),
                object: format!("{} {}", expected.account, expected.name),
                problem: "missing from the restored site".into(),
            }),
        }
    }

    // A sample to read over IMAP, with a one-time password on its accounts.
    let password = crate::crypto::BackupKey::generate_hex()?;
    let sample = {
        let store = std::sync::Arc::clone(&store);
        let hash = maildr_frontend::hash_password(&password);
        tokio::task::spawn_blocking(move || sample_and_unlock(&store, &hash))
            .await
            .map_err(|e| BackupError::Io(e.to_string()))??
    };
    drop(store);
    if sample.is_empty() {
        return Ok(());
    }
    let site = ScratchSite::start(exe, &scratch.0, &data_dir).await?;
    let result = read_sample(site.imap, &password, &sample, report).await;
    site.stop().await;
    result
}

/// (account, mailbox, uid, body hash) of messages to read.
type Sample = Vec<(String, String, u32, BlobHash)>;

fn sample_and_unlock(store: &Store, password_hash: &str) -> Result<Sample, BackupError> {
    let accounts = store.accounts(None)?;
    let mut sample = Vec::new();
    let mut unlocked = Vec::new();
    let mailboxes: Vec<_> = store.all_mailboxes()?.into_iter().filter(|m| m.message_count > 0).collect();
    let per_mailbox = (RESTORE_TEST_SAMPLE / mailboxes.len().max(1)).max(1);
    for mailbox in mailboxes {
        if sample.len() >= RESTORE_TEST_SAMPLE {
            break;
        }
        let Some(account) = accounts.iter().find(|a| a.id == mailbox.account) else { continue };
        let messages = store.messages(mailbox.id)?;
        let step = (messages.len() / per_mailbox).max(1);
        for message in messages.iter().step_by(step).take(per_mailbox) {
            sample.push((account.address.to_string(), mailbox.name.to_string(), message.uid.0, message.body));
        }
        if !unlocked.contains(&account.address) {
            unlocked.push(account.address.clone());
        }
    }
    let commands: Vec<Command> = unlocked
        .into_iter()
        .map(|address| Command::SetPassword { address, password_hash: password_hash.into() })
        .collect();
    store.apply_batch(&commands)?;
    Ok(sample)
}

async fn read_sample(
    imap: std::net::SocketAddr,
    password: &str,
    sample: &Sample,
    report: &mut BackupVerifyReport,
) -> Result<(), BackupError> {
    let imap_err = |e: maildr_client::imap::ImapError| BackupError::Refused(format!("scratch site over IMAP: {e}"));
    let mut by_account: std::collections::BTreeMap<&str, Vec<&(String, String, u32, BlobHash)>> = Default::default();
    for item in sample {
        by_account.entry(item.0.as_str()).or_default().push(item);
    }
    for (account, items) in by_account {
        let mut session =
            maildr_client::imap::Session::connect(imap, None, Duration::from_secs(30)).await.map_err(imap_err)?;
        session.login(account, password).await.map_err(imap_err)?;
        let mut selected = String::new();
        for (_, mailbox, uid, hash) in items {
            if *mailbox != selected {
                session.examine(mailbox).await.map_err(imap_err)?;
                selected = mailbox.clone();
            }
            let answers = session.uid_fetch(&uid.to_string(), "BODY.PEEK[]").await.map_err(imap_err)?;
            let body = answers.into_iter().find_map(|a| a.literals.into_iter().next());
            match body {
                Some(body) if sha2::Sha256::digest(&body).as_slice() == hash.0 => report.messages_read_over_imap += 1,
                Some(_) => report.problems.push(VerifyProblem {
                    target: String::new(),
                    object: format!("{account} {mailbox} UID {uid}"),
                    problem: "served over IMAP with other content than the backup holds".into(),
                }),
                None => report.problems.push(VerifyProblem {
                    target: String::new(),
                    object: format!("{account} {mailbox} UID {uid}"),
                    problem: "not served over IMAP".into(),
                }),
            }
        }
        session.logout().await;
    }
    Ok(())
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path) -> Result<ScratchDir, BackupError> {
        let dir = parent.join(format!("restore-test-{}", crate::now_ms()));
        std::fs::create_dir_all(&dir).map_err(|e| BackupError::Io(format!("{}: {e}", dir.display())))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `maildr serve` over a restored data directory, on loopback ephemeral ports.
struct ScratchSite {
    child: tokio::process::Child,
    imap: std::net::SocketAddr,
}

impl ScratchSite {
    async fn start(exe: &Path, dir: &Path, data_dir: &Path) -> Result<ScratchSite, BackupError> {
        let config = dir.join("scratch.toml");
        let text = format!(
            "[site]\nname = \"restore-test\"\ndata_dir = {data:?}\n\n[smtp]\nmx_listen = \"127.0.0.1:0\"\n\
             submission_listen = \"127.0.0.1:0\"\nsubmissions_listen = \"127.0.0.1:0\"\n\n[imap]\n\
             plain_listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n",
            data = data_dir.display().to_string()
        );
        std::fs::write(&config, text).map_err(|e| BackupError::Io(format!("{}: {e}", config.display())))?;
        let log = std::fs::File::create(dir.join("scratch.log")).map_err(|e| BackupError::Io(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| BackupError::Io(e.to_string()))?;
        let child = tokio::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackupError::Io(format!("starting the scratch site ({}): {e}", exe.display())))?;
        let endpoints = data_dir.join("run/endpoints.json");
        let mut site = ScratchSite { child, imap: std::net::SocketAddr::from(([127, 0, 0, 1], 0)) };
        let deadline = tokio::time::Instant::now() + SCRATCH_START_TIMEOUT;
        loop {
            let found = std::fs::read(&endpoints)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|v| v["pid"].as_u64() == site.child.id().map(u64::from))
                .and_then(|v| v["imap"]["imap"].as_str().and_then(|a| a.parse().ok()));
            if let Some(addr) = found {
                site.imap = addr;
                return Ok(site);
            }
            if let Ok(Some(status)) = site.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("scratch.log")).unwrap_or_default();
                return Err(BackupError::Refused(format!("the scratch site exited ({status}): {}", log.trim())));
            }
            if tokio::time::Instant::now() > deadline {
                site.stop().await;
                return Err(BackupError::Refused("the scratch site did not start within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop it: SIGTERM by pid, then kill after 10 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid this process started and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}
