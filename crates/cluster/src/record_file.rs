//! Small JSON records in a site's data directory that must survive a crash whole:
//! the forced-failover marker and promotion record, and a lagged site's hold.
//!
//! Written to a temporary file, fsynced, renamed into place and the directory
//! fsynced; removed with the directory fsynced. An operator can read them.

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record at `path`, or `None` when there is none. A file that does not parse
/// is an `InvalidData` error.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not a valid record: {e}")))
}

/// Write `record` at `path` durably.
pub(crate) fn write<T: Serialize>(path: &Path, record: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Remove the record at `path` durably; no record is no error.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync the directory holding `path`, so that a rename or removal in it lasts.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Milliseconds since the Unix epoch, as records keep times.
pub(crate) fn now_ms() -> i64 {
    maildr_types::Clock::now_ms(&maildr_types::SystemClock)
}
