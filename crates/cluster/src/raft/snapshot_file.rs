//! The byte layout of a snapshot file, and its checks.
//!
//! A snapshot travels between sites and sits on disk as one file:
//!
//! ```text
//! MAGIC (8 bytes) | header length (u32 LE) | header (postcard) | mail store database bytes
//! ```
//!
//! The header holds the snapshot's metadata (last log id, last membership, id) and the
//! size of the database copy, so a truncated or padded file is refused before it
//! replaces anything. This module only reads and writes the layout; it never decides
//! when a snapshot is taken or installed.

use std::io::{Read, Write};
use std::path::Path;

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use super::{NodeId, RaftStorageError, SiteNode};

/// First bytes of every maildr snapshot file (format version 1).
const MAGIC: &[u8; 8] = b"MDRSNAP1";
/// Largest header accepted. The header holds the membership, a few hundred bytes per
/// site; anything near this bound is a corrupt length, not a real cluster.
pub(crate) const HEADER_SIZE_BYTES_MAX: u32 = 1024 * 1024;

/// What precedes the database copy in a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    pub meta: SnapshotMeta<NodeId, SiteNode>,
    /// Size of the mail store database copy that follows the header.
    pub store_size_bytes: u64,
}

impl SnapshotHeader {
    /// Bytes before the database copy: magic, length and header.
    pub fn prefix(&self, path: &Path) -> Result<Vec<u8>, RaftStorageError> {
        let header = postcard::to_stdvec(self).map_err(|e| RaftStorageError::Encode {
            path: path.into(),
            what: "snapshot header".into(),
            detail: e.to_string(),
        })?;
        let header_len =
            u32::try_from(header.len()).ok().filter(|len| *len <= HEADER_SIZE_BYTES_MAX).ok_or_else(|| {
                RaftStorageError::Encode {
                    path: path.into(),
                    what: "snapshot header".into(),
                    detail: format!("{} bytes, more than {HEADER_SIZE_BYTES_MAX}", header.len()),
                }
            })?;
        let mut prefix = Vec::with_capacity(MAGIC.len() + 4 + header.len());
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&header_len.to_le_bytes());
        prefix.extend_from_slice(&header);
        Ok(prefix)
    }

    /// Read the header from the start of `file` (at `path`), leaving the reader at the
    /// first byte of the database copy. Returns the header and the size of the prefix.
    pub fn read(file: &mut impl Read, path: &Path) -> Result<(SnapshotHeader, u64), RaftStorageError> {
        let corrupt =
            |detail: String| RaftStorageError::Corrupt { path: path.into(), what: "snapshot header".into(), detail };
        let io = |source| RaftStorageError::Io { path: path.into(), source };
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err(corrupt(format!("starts with {magic:02x?}, not a maildr snapshot")));
        }
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(io)?;
        let header_len = u32::from_le_bytes(len);
        if header_len > HEADER_SIZE_BYTES_MAX {
            return Err(corrupt(format!("header of {header_len} bytes, more than {HEADER_SIZE_BYTES_MAX}")));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: SnapshotHeader = postcard::from_bytes(&header).map_err(|e| corrupt(e.to_string()))?;
        Ok((header, (MAGIC.len() + 4) as u64 + u64::from(header_len)))
    }
}

/// Copy exactly `size_bytes` from `from` to `to`; fewer bytes available is an error
/// naming `from_path`.
pub(crate) fn copy_exact(
    from: &mut impl Read,
    from_path: &Path,
    to: &mut impl Write,
    to_path: &Path,
    size_bytes: u64,
) -> Result<(), RaftStorageError> {
    let mut buffer = vec![0u8; COPY_BUFFER_SIZE_BYTES];
    let mut left_bytes = size_bytes;
    while left_bytes > 0 {
        let want = usize::try_from(left_bytes).unwrap_or(usize::MAX).min(buffer.len());
        let got =
            from.read(&mut buffer[..want]).map_err(|source| RaftStorageError::Io { path: from_path.into(), source })?;
        if got == 0 {
            return Err(RaftStorageError::Corrupt {
                path: from_path.into(),
                what: "snapshot".into(),
                detail: format!("ends {left_bytes} bytes early (expected {size_bytes} bytes of database)"),
            });
        }
        to.write_all(&buffer[..got]).map_err(|source| RaftStorageError::Io { path: to_path.into(), source })?;
        left_bytes -= got as u64;
    }
    Ok(())
}

/// Bytes moved per read when copying a database into or out of a snapshot.
const COPY_BUFFER_SIZE_BYTES: usize = 1024 * 1024;
