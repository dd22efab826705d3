//! The archive spool: every log entry this site applied, stamped with the moment it
//! was applied, kept until the backup archiver has copied it to the backup targets.
//!
//! Point-in-time restore replays the commands committed after a backup, and needs to
//! know when each was committed. The Raft log cannot serve: openraft purges it after
//! every snapshot, and its entries carry no time. So the state machine writes each
//! applied entry here in the same transaction as its applied-state record (no extra
//! fsync), on every site: whichever site is primary when the archiver runs, its spool
//! holds what the previous primary may not have uploaded yet. On a follower the apply
//! time is within a heartbeat of the commit time on the primary. A witness (which
//! keeps no bodies and never archives) spools nothing.
//!
//! The spool is bounded ([`ARCHIVE_SPOOL_ENTRIES_MAX`]): beyond it the oldest entries
//! go, and an archiver that fell that far behind reports a gap (restores can then
//! reach only moments before the gap or after the next backup). Entries are kept in
//! index order with no index missing, blank and membership entries included (as
//! entries without a command), so a reader can tell a gap from an idle log.
//!
//! This module must never decide what the archive holds; it only keeps and hands out.

use maildr_store::Command;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::raft::{RaftDb, RaftStorageError};

/// The spool table in the Raft log database: log index → encoded [`ArchivedEntry`].
pub(crate) const ARCHIVE_SPOOL: TableDefinition<u64, &[u8]> = TableDefinition::new("archive_spool");

/// Most entries the spool keeps (at about 200 bytes an entry, some 40 MB): about a
/// day of a busy site's writes, so an archive target can be away that long.
pub const ARCHIVE_SPOOL_ENTRIES_MAX: u64 = 200_000;

/// One applied log entry as the archive keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedEntry {
    /// Its log index.
    pub index: u64,
    /// When this site applied it, in milliseconds since the Unix epoch.
    pub applied_at_ms: u64,
    /// Its command; `None` for Raft's own blank and membership entries.
    pub command: Option<Command>,
}

impl RaftDb {
    /// Append `entries` to the spool in `txn`, dropping the oldest beyond the bound.
    pub(crate) fn spool_entries(
        &self,
        txn: &redb::WriteTransaction,
        entries: &[ArchivedEntry],
    ) -> Result<(), RaftStorageError> {
        let mut table = txn.open_table(ARCHIVE_SPOOL).map_err(|e| self.db_err(e))?;
        for entry in entries {
            let bytes = self.encode("archive spool entry", entry)?;
            table.insert(entry.index, bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        // Indexes are contiguous, so the bounds give the count without a scan
        // (a table's `len` walks it).
        let first = table.first().map_err(|e| self.db_err(e))?.map(|(k, _)| k.value());
        let last = table.last().map_err(|e| self.db_err(e))?.map(|(k, _)| k.value());
        if let (Some(first), Some(last)) = (first, last) {
            let held = last - first + 1;
            for _ in ARCHIVE_SPOOL_ENTRIES_MAX..held {
                table.pop_first().map_err(|e| self.db_err(e))?;
            }
        }
        Ok(())
    }

    /// Up to `limit` spooled entries with an index above `after`, in index order.
    pub(crate) fn spooled_after(&self, after: u64, limit: usize) -> Result<Vec<ArchivedEntry>, RaftStorageError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(ARCHIVE_SPOOL).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..).map_err(|e| self.db_err(e))?.take(limit) {
            let (_, value) = row.map_err(|e| self.db_err(e))?;
            out.push(self.decode("archive spool entry", value.value())?);
        }
        Ok(out)
    }

    /// The lowest and highest index spooled.
    pub(crate) fn spool_bounds(&self) -> Result<Option<(u64, u64)>, RaftStorageError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(ARCHIVE_SPOOL).map_err(|e| self.db_err(e))?;
        let first = table.first().map_err(|e| self.db_err(e))?.map(|(k, _)| k.value());
        let last = table.last().map_err(|e| self.db_err(e))?.map(|(k, _)| k.value());
        Ok(first.zip(last))
    }

    /// Forget the spooled entries up to and including `through` (they are archived).
    pub(crate) fn trim_spool(&self, through: u64) -> Result<u64, RaftStorageError> {
        let txn = self.begin_write()?;
        let removed = {
            let mut table = txn.open_table(ARCHIVE_SPOOL).map_err(|e| self.db_err(e))?;
            let mut removed = 0;
            loop {
                let first = table.first().map_err(|e| self.db_err(e))?.map(|(key, _)| key.value());
                match first {
                    Some(index) if index <= through => {
                        table.pop_first().map_err(|e| self.db_err(e))?;
                        removed += 1;
                    }
                    _ => break,
                }
            }
            removed
        };
        self.commit(txn)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> ArchivedEntry {
        ArchivedEntry { index, applied_at_ms: index, command: None }
    }

    #[test]
    fn the_spool_holds_at_most_its_limit_dropping_the_oldest_and_trims_what_is_archived() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft-log.redb")).unwrap();
        let spool = |entries: Vec<ArchivedEntry>| {
            let txn = db.begin_write().unwrap();
            db.spool_entries(&txn, &entries).unwrap();
            db.commit(txn).unwrap();
        };
        // Exactly at the limit: everything is kept.
        spool((1..=ARCHIVE_SPOOL_ENTRIES_MAX).map(entry).collect());
        assert_eq!(db.spool_bounds().unwrap(), Some((1, ARCHIVE_SPOOL_ENTRIES_MAX)));
        // One more: the oldest goes.
        spool(vec![entry(ARCHIVE_SPOOL_ENTRIES_MAX + 1)]);
        assert_eq!(db.spool_bounds().unwrap(), Some((2, ARCHIVE_SPOOL_ENTRIES_MAX + 1)));
        // Reading resumes after an index, in order and bounded.
        let read = db.spooled_after(10, 3).unwrap();
        assert_eq!(read.iter().map(|e| e.index).collect::<Vec<_>>(), [11, 12, 13]);
        // Trimming forgets exactly what the targets hold.
        assert_eq!(db.trim_spool(100).unwrap(), 99);
        assert_eq!(db.spool_bounds().unwrap(), Some((101, ARCHIVE_SPOOL_ENTRIES_MAX + 1)));
    }
}
