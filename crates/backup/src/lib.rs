//! Backups of a maildr deployment: what replication cannot undo (a mass deletion, a
//! tampering client, every site lost) a backup can.
//!
//! - **Taking** ([`take`]): the store is copied at one applied log index while mail
//!   keeps flowing (applies wait for the copy, reads do not), described by a
//!   [`Manifest`] (index, time, per-mailbox digests and counts, every body it refers
//!   to), and written to every target: bodies the target lacks, the state, and the
//!   manifest last, so a backup is listed only once complete.
//! - **Archiving** ([`archive`]): every applied log entry, stamped with its apply
//!   time, is uploaded every few seconds by the primary with the bodies it brings,
//!   so any moment since the oldest kept backup can be restored.
//! - **Reading** ([`catalog`], [`rebuild`], [`verify`], [`restore`]): list backups,
//!   rebuild the state at a moment in a scratch directory (a backup plus the archived
//!   entries after it), check a backup object by object or by restoring it, and
//!   write chosen messages back through the cluster's normal write path.
//! - **Schedule and retention** ([`schedule`]).
//!
//! Everything on a target is sealed ([`crypto`]). This crate reads the store at an
//! index and writes back only through the cluster (`Cluster::write`, or the
//! operations client for a running site); it never writes a live site's files.

pub mod archive;
pub mod catalog;
pub mod crypto;
pub mod manifest;
pub mod rebuild;
pub mod restore;
pub mod schedule;
pub mod take;
pub mod target;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use maildr_config::SiteConfig;

pub use crypto::{BackupKey, CryptoError};
pub use manifest::{parse_moment, show_time, BackupId, Manifest, ManifestMailbox, SegmentName};
pub use schedule::BackupService;
pub use target::{Target, TargetError};

/// Why a backup operation failed as a whole (one target failing is reported per
/// target, not here).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backups are not configured: set backup.key_file and at least one [[backup.targets]]")]
    NotConfigured,
    #[error("backups of a site without [[cluster.members]] are taken only while it is stopped")]
    NotReplicated,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("store: {0}")]
    Store(#[from] maildr_store::StoreError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Refused(String),
}

/// The backup system of one site: its key, its targets and where it works.
#[derive(Clone)]
pub struct Backups {
    pub site: String,
    pub key: Arc<BackupKey>,
    pub targets: Vec<Target>,
    /// Scratch space for state copies (inside the site's data directory).
    pub work_dir: PathBuf,
    pub config: maildr_config::BackupSection,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups").field("site", &self.site).field("targets", &self.targets).finish()
    }
}

/// Name of the scratch directory inside a site's data directory.
pub const WORK_DIR: &str = "backup-work";

impl Backups {
    /// From a site's configuration: loads the key and opens the targets.
    pub fn from_config(config: &SiteConfig) -> Result<Backups, BackupError> {
        let section = &config.backup;
        let key_file = section.key_file.as_ref().filter(|_| section.enabled()).ok_or(BackupError::NotConfigured)?;
        let key = Arc::new(BackupKey::load(key_file)?);
        let targets = section.targets.iter().map(Target::from_config).collect::<Result<Vec<_>, _>>()?;
        Ok(Backups {
            site: config.site.name.clone(),
            key,
            targets,
            work_dir: config.site.data_dir.join(WORK_DIR),
            config: section.clone(),
        })
    }

    /// The configured target named `name`.
    pub fn target_named(&self, name: &str) -> Result<Target, BackupError> {
        self.targets
            .iter()
            .find(|t| t.name() == name)
            .cloned()
            .ok_or_else(|| BackupError::Refused(format!("no backup target {name:?}")))
    }

    /// Only the target named `name`, or an error naming the configured ones.
    pub fn only_target(mut self, name: &str) -> Result<Backups, BackupError> {
        let names: Vec<String> = self.targets.iter().map(|t| t.name().to_string()).collect();
        self.targets.retain(|t| t.name() == name);
        if self.targets.is_empty() {
            return Err(BackupError::Refused(format!("no backup target {name:?}; targets are {}", names.join(", "))));
        }
        Ok(self)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
