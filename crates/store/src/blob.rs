//! Content-addressed message bodies on disk.
//!
//! A body is named by its SHA-256 and written once: to a temporary file in the
//! target directory, fsynced, renamed into place, and the directory fsynced, so a
//! crash leaves either the whole body or nothing under its name. Bodies are kept
//! out of the metadata database (and later out of the replicated log) because they
//! are large and immutable. This module never decides whether a body is still
//! referenced; the store's reference counts do.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use maildr_types::{BlobHash, BlobRef};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Files and directories holding the bodies of one site.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// Hash a body the way the blob store names it.
pub fn hash_body(body: &[u8]) -> BlobHash {
    BlobHash(Sha256::digest(body).into())
}

/// The key a delivery is recognised by when its sender retries it: a hash of the
/// envelope sender and the message data exactly as the sender transmitted it
/// (before this site's trace header). A retry carries the same bytes; a different
/// message never has the same key, whatever its headers claim (a Message-ID is the
/// sender's to choose, and a corrected resend keeps it).
pub fn delivery_retry_key(sender: Option<&str>, data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"maildr delivery retry key v1\0");
    h.update(sender.unwrap_or("").as_bytes());
    h.update([0u8]);
    h.update(data);
    format!("sha256:{}", BlobHash(h.finalize().into()).to_hex())
}

fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io { path: path.to_path_buf(), source }
}

impl BlobStore {
    /// Open (and create) the blob directory with its 256 shard directories, made
    /// durable with one fsync of the root: a new site would otherwise create them
    /// one by one under its first load, each with a root fsync in some write's
    /// path. Leftover temporary files from a crash mid-write are removed: they were
    /// never renamed, so nothing refers to them.
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let mut created = false;
        for shard in 0..=u8::MAX {
            let dir = root.join(format!("{shard:02x}"));
            if !dir.is_dir() {
                fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
                created = true;
            }
        }
        if created {
            File::open(&root).and_then(|d| d.sync_all()).map_err(|e| io_err(&root, e))?;
        }
        let store = BlobStore { root };
        store.remove_temporaries()?;
        Ok(store)
    }

    fn remove_temporaries(&self) -> Result<(), StoreError> {
        for shard in fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))? {
            let shard = shard.map_err(|e| io_err(&self.root, e))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(|e| io_err(&shard, e))? {
                let path = entry.map_err(|e| io_err(&shard, e))?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                }
            }
        }
        Ok(())
    }

    /// The path a body with this hash lives at.
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    /// Write a body durably and return its reference. Writing a body that is
    /// already present costs one `stat`: content addressing makes it idempotent.
    pub fn put(&self, body: &[u8]) -> Result<BlobRef, StoreError> {
        let hash = hash_body(body);
        let blob = BlobRef { hash, size_bytes: body.len() as u64 };
        let path = self.path_of(&hash);
        let dir = path.parent().expect("blob paths always have a shard directory");
        if path.exists() {
            // Another writer may have renamed it in but not yet fsynced the
            // directory: make the name durable before anyone acknowledges it.
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
            return Ok(blob);
        }
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            // A new shard directory is itself an entry of the root: fsync the root.
            File::open(&self.root).and_then(|d| d.sync_all()).map_err(|e| io_err(&self.root, e))?;
        }
        // A unique temporary name: two writers of the same body race harmlessly,
        // both renames put identical bytes in place.
        let tmp =
            dir.join(format!("{}.{}.{:?}.tmp", &hash.to_hex()[2..], std::process::id(), std::thread::current().id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path, e));
        }
        Ok(blob)
    }

    /// Read a whole body.
    pub fn get(&self, hash: &BlobHash) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(hash);
        fs::read(&path).map_err(|e| io_err(&path, e))
    }

    /// Read a body and check that its content still hashes to its name.
    pub fn get_verified(&self, hash: &BlobHash) -> Result<Vec<u8>, StoreError> {
        let body = self.get(hash)?;
        let actual = hash_body(&body);
        if actual != *hash {
            return Err(StoreError::Corrupt(format!("blob {} holds content hashing to {}", hash, actual)));
        }
        Ok(body)
    }

    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path_of(hash).exists()
    }

    /// Which of `hashes` this store holds durably: for each one present, its shard
    /// directory is fsynced (once per directory) before it is counted, since a
    /// writer may have renamed it in without having synced the directory yet.
    pub fn held_durably(&self, hashes: &[BlobHash]) -> Result<Vec<bool>, StoreError> {
        let held: Vec<bool> = hashes.iter().map(|h| self.contains(h)).collect();
        let dirs: std::collections::BTreeSet<PathBuf> = hashes
            .iter()
            .zip(&held)
            .filter(|(_, held)| **held)
            .filter_map(|(h, _)| self.path_of(h).parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io_err(&dir, e))?;
        }
        Ok(held)
    }

    /// Up to `max` bodies this store holds, in no particular order.
    pub fn list(&self, max: usize) -> Result<Vec<BlobHash>, StoreError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))? {
            let shard = shard.map_err(|e| io_err(&self.root, e))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|n| n.len() == 2) else { continue };
            let shard = shard.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(|e| io_err(&shard, e))? {
                if out.len() >= max {
                    return Ok(out);
                }
                let name = entry.map_err(|e| io_err(&shard, e))?.file_name();
                // Temporary files (`.tmp`) and anything else fail to parse.
                if let Some(hash) = name.to_str().and_then(|rest| BlobHash::from_hex(&format!("{prefix}{rest}"))) {
                    out.push(hash);
                }
            }
        }
        Ok(out)
    }

    /// Up to `max` bodies this store holds whose hashes come after `after` (from the
    /// first when `None`), in hash order: a caller pages through every body, one
    /// page per call, and starts again when a page comes back empty.
    pub fn list_after(&self, after: Option<&BlobHash>, max: usize) -> Result<Vec<BlobHash>, StoreError> {
        let after_hex = after.map(BlobHash::to_hex);
        let mut shards: Vec<String> = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))? {
            let shard = shard.map_err(|e| io_err(&self.root, e))?;
            let name = shard.file_name();
            if let Some(prefix) = name.to_str().filter(|n| n.len() == 2 && shard.path().is_dir()) {
                shards.push(prefix.to_string());
            }
        }
        shards.sort();
        let mut out = Vec::new();
        for prefix in shards.iter().filter(|p| after_hex.as_deref().is_none_or(|a| p.as_str() >= &a[..2])) {
            let shard = self.root.join(prefix);
            let mut page: Vec<BlobHash> = Vec::new();
            for entry in fs::read_dir(&shard).map_err(|e| io_err(&shard, e))? {
                let name = entry.map_err(|e| io_err(&shard, e))?.file_name();
                // Temporary files (`.tmp`) and anything else fail to parse.
                if let Some(hash) = name.to_str().and_then(|rest| BlobHash::from_hex(&format!("{prefix}{rest}"))) {
                    if after.is_none_or(|a| hash > *a) {
                        page.push(hash);
                    }
                }
            }
            page.sort();
            for hash in page {
                if out.len() >= max {
                    return Ok(out);
                }
                out.push(hash);
            }
        }
        Ok(out)
    }

    /// How long ago the body was written, when it is there.
    pub fn age(&self, hash: &BlobHash) -> Option<std::time::Duration> {
        let modified = fs::metadata(self.path_of(hash)).ok()?.modified().ok()?;
        Some(modified.elapsed().unwrap_or_default())
    }

    /// Delete a body, durably (the directory is fsynced). Whether anything still
    /// needs it is the caller's decision. Returns whether it was there.
    pub fn remove(&self, hash: &BlobHash) -> Result<bool, StoreError> {
        let path = self.path_of(hash);
        let dir = path.parent().expect("blob paths always have a shard directory");
        match fs::remove_file(&path) {
            Ok(()) => {
                File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_listed_checked_and_removed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let a = blobs.put(b"first body").unwrap().hash;
        let b = blobs.put(b"second body").unwrap().hash;
        let absent = hash_body(b"never stored");
        fs::write(blobs.path_of(&a).with_extension("tmp"), b"half").unwrap();
        let mut listed = blobs.list(10).unwrap();
        listed.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(listed, want, "a temporary file is no body");
        assert_eq!(blobs.list(1).unwrap().len(), 1);
        assert_eq!(blobs.held_durably(&[a, absent, b]).unwrap(), [true, false, true]);
        assert!(blobs.remove(&a).unwrap());
        assert!(!blobs.remove(&a).unwrap(), "removing twice is no error");
        assert!(!blobs.contains(&a) && blobs.contains(&b));
        assert_eq!(blobs.list(10).unwrap(), [b]);
    }

    #[test]
    fn paging_after_a_cursor_visits_every_body_once_in_hash_order() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let mut all: Vec<BlobHash> = (0..40).map(|i| blobs.put(format!("body {i}").as_bytes()).unwrap().hash).collect();
        all.sort();
        fs::write(blobs.path_of(&all[3]).with_extension("tmp"), b"half").unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = blobs.list_after(cursor.as_ref(), 7).unwrap();
            assert!(page.len() <= 7, "a page holds at most its limit");
            let Some(last) = page.last().copied() else { break };
            seen.extend(page);
            cursor = Some(last);
        }
        assert_eq!(seen, all, "every body once, in order, across shards");
        assert_eq!(blobs.list_after(None, 40).unwrap(), all, "exactly the limit");
        assert_eq!(blobs.list_after(Some(&all[39]), 10).unwrap(), Vec::<BlobHash>::new());
        assert!(blobs.age(&all[0]).is_some() && blobs.age(&hash_body(b"absent")).is_none());
    }

    #[test]
    fn put_is_idempotent_and_get_verified_detects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let a = blobs.put(b"hello").unwrap();
        let b = blobs.put(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(blobs.get_verified(&a.hash).unwrap(), b"hello");
        fs::write(blobs.path_of(&a.hash), b"jello").unwrap();
        assert!(matches!(blobs.get_verified(&a.hash), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn leftover_temporaries_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let blobs = BlobStore::open(root.clone()).unwrap();
        let r = blobs.put(b"x").unwrap();
        let shard = blobs.path_of(&r.hash).parent().unwrap().to_path_buf();
        fs::write(shard.join("deadbeef.1.tmp"), b"torn").unwrap();
        BlobStore::open(root).unwrap();
        assert!(!shard.join("deadbeef.1.tmp").exists());
        assert!(shard.join(&r.hash.to_hex()[2..]).exists());
    }

    #[test]
    fn a_new_blob_store_has_every_shard_directory_before_its_first_body() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
        let shards = fs::read_dir(dir.path().join("blobs")).unwrap().flatten().filter(|e| e.path().is_dir()).count();
        assert_eq!(shards, 256);
        let body = b"a body";
        let stored = blobs.put(body).unwrap();
        assert!(blobs.path_of(&stored.hash).parent().unwrap().is_dir());
        assert_eq!(blobs.get(&stored.hash).unwrap(), body);
        // Opened again: nothing to create, nothing lost.
        let again = BlobStore::open(dir.path().join("blobs")).unwrap();
        assert_eq!(again.get(&stored.hash).unwrap(), body);
    }
}
