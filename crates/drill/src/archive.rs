//! The report archive: every drill's report.json, report.md and report.html
//! under `<data dir>/reports/<drill id>/`, and the history across drills.
//!
//! An archived drill is written once: saving a drill id that is already
//! archived is refused, so a report that an auditor has seen (and whose
//! report.json SHA-256 the caller put in the audit log) is never replaced.
//! Each file is written to a temporary name, fsynced and renamed, report.json
//! last, so a directory with a report.json is complete. The history reads what
//! it can and lists what it could not read instead of failing.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::render::{self, Lang};
use crate::report::{DrillMode, Report, Verdict};

/// The directory under the data directory that holds one directory per drill.
pub const REPORTS_DIR: &str = "reports";
pub const JSON_FILE: &str = "report.json";
pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
/// Largest report.json the history reads (a drill's samples are bounded well
/// below this).
pub const REPORT_JSON_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest directory name made from a drill id.
pub const DIR_NAME_BYTES_MAX: usize = 128;

/// The three files of one report, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// SHA-256 (hex) of report.json's bytes.
    pub json_sha256: String,
}

/// A drill saved in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedReport {
    pub dir: PathBuf,
    /// SHA-256 (hex) of report.json: the caller records it in the audit log.
    pub json_sha256: String,
    pub files: ReportFiles,
}

/// One past drill, for `maildr drill history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub drill_id: String,
    pub plan_name: String,
    pub plan_sha256: String,
    pub verdict: Verdict,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub rto_total_ms: Option<u64>,
    pub rpo_lost: u64,
    pub deferred: u64,
    pub dir: PathBuf,
    /// `tabletop` for a tabletop exercise (its RTO and RPO are not measured:
    /// `rto_total_ms` is `None`); absent for a drill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<DrillMode>,
}

/// An archive entry the history could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedEntry {
    pub dir: PathBuf,
    pub reason: String,
}

/// The history: readable drills newest first, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct History {
    pub rows: Vec<HistoryRow>,
    pub skipped: Vec<SkippedEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("drill {drill_id:?} is already archived in {dir}; an archived report is never replaced")]
    AlreadyArchived { drill_id: String, dir: PathBuf },
    #[error("{dir} holds the report of another drill ({found:?}), not {drill_id:?}")]
    Collision { drill_id: String, found: String, dir: PathBuf },
    #[error("drill id {0:?} makes no directory name (it needs a letter or digit)")]
    BadDrillId(String),
    #[error("{path}: {detail}")]
    Unreadable { path: PathBuf, detail: String },
}

/// Reports kept under a data directory.
#[derive(Debug, Clone)]
pub struct Archive {
    data_dir: PathBuf,
}

impl Archive {
    pub fn new(data_dir: impl Into<PathBuf>) -> Archive {
        Archive { data_dir: data_dir.into() }
    }

    /// `<data dir>/reports`.
    pub fn reports_dir(&self) -> PathBuf {
        self.data_dir.join(REPORTS_DIR)
    }

    /// Where a drill is (or would be) archived.
    pub fn dir_for(&self, drill_id: &str) -> Result<PathBuf, ArchiveError> {
        Ok(self.reports_dir().join(dir_name(drill_id)?))
    }

    /// Write the report's three files into its own directory, once; report.md
    /// and report.html in `lang` (report.json is the same in every language).
    pub fn save(&self, report: &Report, lang: Lang) -> Result<ArchivedReport, ArchiveError> {
        let dir = self.dir_for(&report.drill_id)?;
        let json = dir.join(JSON_FILE);
        match read_json::<IdOnly>(&json) {
            Ok(existing) if existing.drill_id == report.drill_id => {
                return Err(ArchiveError::AlreadyArchived { drill_id: report.drill_id.clone(), dir });
            }
            Ok(existing) => {
                return Err(ArchiveError::Collision {
                    drill_id: report.drill_id.clone(),
                    found: existing.drill_id,
                    dir,
                });
            }
            // No report.json: a new drill, or a save that died before its
            // last rename; either way nothing complete is replaced.
            Err(ReadError::Missing) => {}
            Err(ReadError::Other(detail)) => return Err(ArchiveError::Unreadable { path: json, detail }),
        }
        let files =
            write_report_files(report, &dir, lang).map_err(|source| ArchiveError::Io { path: dir.clone(), source })?;
        Ok(ArchivedReport { dir, json_sha256: files.json_sha256.clone(), files })
    }

    /// Read an archived report back.
    pub fn load(&self, drill_id: &str) -> Result<Report, ArchiveError> {
        let path = self.dir_for(drill_id)?.join(JSON_FILE);
        read_json(&path).map_err(|e| match e {
            ReadError::Missing => ArchiveError::Unreadable { path, detail: "no such archived drill".into() },
            ReadError::Other(detail) => ArchiveError::Unreadable { path, detail },
        })
    }

    /// Every archived drill, newest first; entries that cannot be read are
    /// listed in `skipped` with the reason. No archive yet: an empty history.
    pub fn history(&self) -> Result<History, ArchiveError> {
        let root = self.reports_dir();
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(History::default()),
            Err(source) => return Err(ArchiveError::Io { path: root, source }),
        };
        let mut history = History::default();
        for entry in entries {
            let entry = entry.map_err(|source| ArchiveError::Io { path: root.clone(), source })?;
            let dir = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if !dir.is_dir() {
                history.skipped.push(SkippedEntry { dir, reason: "not a directory".into() });
                continue;
            }
            match read_json::<HistoryFields>(&dir.join(JSON_FILE)) {
                Ok(f) => history.rows.push(HistoryRow {
                    drill_id: f.drill_id,
                    plan_name: f.plan.name,
                    plan_sha256: f.plan.sha256,
                    verdict: f.verdict,
                    started_at_ms: f.started_at_ms,
                    finished_at_ms: f.finished_at_ms,
                    rto_total_ms: f.rto.total_ms,
                    rpo_lost: f.rpo.lost,
                    deferred: f.rpo.deferred,
                    dir,
                    mode: f.mode,
                }),
                Err(ReadError::Missing) => {
                    history.skipped.push(SkippedEntry { dir, reason: format!("no {JSON_FILE} (an interrupted save?)") })
                }
                Err(ReadError::Other(reason)) => history.skipped.push(SkippedEntry { dir, reason }),
            }
        }
        history.rows.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then_with(|| b.drill_id.cmp(&a.drill_id)));
        history.skipped.sort_by(|a, b| a.dir.cmp(&b.dir));
        Ok(history)
    }
}

/// The directory name for a drill id: letters, digits, `.`, `_` and `-` kept,
/// anything else (a space, a slash, `..`) made a `-`, bounded in length. Two ids
/// that map to one name are told apart by the report.json inside.
pub fn dir_name(drill_id: &str) -> Result<String, ArchiveError> {
    let mut name: String = drill_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    name = name.trim_start_matches('.').to_string();
    name.truncate(DIR_NAME_BYTES_MAX);
    if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(ArchiveError::BadDrillId(drill_id.to_string()));
    }
    Ok(name)
}

/// A report.json anywhere (for rendering it again), bounded like the archive's.
pub fn read_report(path: &Path) -> Result<Report, ArchiveError> {
    read_json(path).map_err(|e| match e {
        ReadError::Missing => ArchiveError::Unreadable { path: path.to_path_buf(), detail: "no such file".into() },
        ReadError::Other(detail) => ArchiveError::Unreadable { path: path.to_path_buf(), detail },
    })
}

/// Write report.md, report.html (both in `lang`) and report.json (last) into
/// `dir`, creating it, each atomically. Also what `--report-dir` and `drill
/// report` use; it replaces files of the same names there.
pub fn write_report_files(report: &Report, dir: &Path, lang: Lang) -> io::Result<ReportFiles> {
    fs::create_dir_all(dir)?;
    let markdown = dir.join(MARKDOWN_FILE);
    let html = dir.join(HTML_FILE);
    let json = dir.join(JSON_FILE);
    write_atomic(&markdown, render::markdown(report, lang).as_bytes())?;
    write_atomic(&html, render::html(report, lang).as_bytes())?;
    let mut bytes = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(&json, &bytes)?;
    Ok(ReportFiles { json, markdown, html, json_sha256: hex::encode(Sha256::digest(&bytes)) })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replace `path` with `bytes` so that a reader sees the old file or the new
/// one, never a part: write a temporary file beside it, fsync, rename, fsync
/// the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    File::open(dir)?.sync_all()
}

// ------------------------------------------------------------------ reading

#[derive(Deserialize)]
struct IdOnly {
    drill_id: String,
}

/// The fields of report.json the history needs; the rest (samples) is skipped
/// by the parser without being kept.
#[derive(Deserialize)]
struct HistoryFields {
    drill_id: String,
    plan: PlanFields,
    verdict: Verdict,
    started_at_ms: u64,
    finished_at_ms: u64,
    rto: RtoFields,
    rpo: RpoFields,
    #[serde(default)]
    mode: Option<DrillMode>,
}

#[derive(Deserialize)]
struct PlanFields {
    name: String,
    sha256: String,
}

#[derive(Deserialize)]
struct RtoFields {
    total_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RpoFields {
    lost: u64,
    deferred: u64,
}

enum ReadError {
    Missing,
    Other(String),
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ReadError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Other(e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(REPORT_JSON_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|e| ReadError::Other(e.to_string()))?;
    if bytes.len() as u64 > REPORT_JSON_BYTES_MAX {
        return Err(ReadError::Other(format!("larger than {REPORT_JSON_BYTES_MAX} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|e| ReadError::Other(format!("not a drill report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_ids_become_safe_directory_names() {
        assert_eq!(dir_name("20250301T120000Z-site-outage").unwrap(), "20250301T120000Z-site-outage");
        assert_eq!(dir_name("20250301T120000Z-site outage/../x").unwrap(), "20250301T120000Z-site-outage-..-x");
        assert_eq!(dir_name("../../etc").unwrap(), "-..-etc");
        assert_eq!(dir_name(".hidden1").unwrap(), "hidden1");
        assert_eq!(dir_name(&"a".repeat(500)).unwrap().len(), DIR_NAME_BYTES_MAX);
        for bad in ["", "..", "/", "北京", " - "] {
            assert!(dir_name(bad).is_err(), "{bad:?}");
        }
    }
}
