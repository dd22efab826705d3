//! Where backups are kept: a directory (a local disk or an NFS mount) or
//! S3-compatible object storage, behind one small set of operations.
//!
//! Objects are named by `/`-separated keys (`backups/<id>/manifest`, `bodies/<hmac>`,
//! `archive/<first>-<last>-…`) and are written whole, never changed: a directory
//! target writes a temporary file, fsyncs it, renames it into place and fsyncs the
//! directory, so an object either exists complete or not at all; on S3 a PUT is
//! atomic by itself. An S3 bucket can keep objects immutable for their retention
//! (Object Lock with a default retention, set on the bucket by the operator): the
//! site never needs to overwrite, and prunes only what retention lets go.
//!
//! Every operation has a deadline ([`TARGET_CALL_TIMEOUT`]) so an unreachable target
//! fails one backup step in bounded time instead of stalling every target.
//! This module must never see plaintext: callers seal objects before `put`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use maildr_config::{BackupTargetConfig, BackupTargetKind};
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

/// The longest one target operation may take, retries included.
pub const TARGET_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a target operation failed.
#[derive(Debug, thiserror::Error)]
#[error("backup target {target}: {action} {key}: {detail}")]
pub struct TargetError {
    pub target: String,
    pub action: &'static str,
    pub key: String,
    pub detail: String,
}

/// One configured backup target.
#[derive(Clone)]
pub struct Target {
    name: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Dir(PathBuf),
    S3 { store: Arc<dyn ObjectStore>, prefix: String },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Dir(path) => write!(f, "Target({} dir {})", self.name, path.display()),
            Kind::S3 { prefix, .. } => write!(f, "Target({} s3 {prefix})", self.name),
        }
    }
}

/// Is `key` a name this crate makes: lower-case letters, digits, `-`, `_`, `.`, and
/// `/` between non-empty parts that are not `.` or `..`?
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
}

impl Target {
    /// The target a `[[backup.targets]]` table describes (the config check has made
    /// sure every field its kind needs is there). Reads an S3 secret file.
    pub fn from_config(config: &BackupTargetConfig) -> Result<Target, TargetError> {
        let err =
            |detail: String| TargetError { target: config.name.clone(), action: "open", key: String::new(), detail };
        let kind = match config.kind {
            BackupTargetKind::Dir => {
                Kind::Dir(config.path.clone().ok_or_else(|| err("a dir target needs a path".into()))?)
            }
            BackupTargetKind::S3 => {
                let secret_file =
                    config.secret_access_key_file.as_ref().ok_or_else(|| err("no secret key file".into()))?;
                let secret = std::fs::read_to_string(secret_file)
                    .map_err(|e| err(format!("secret access key file {}: {e}", secret_file.display())))?;
                let endpoint = config.endpoint.clone().unwrap_or_default();
                let store = AmazonS3Builder::new()
                    .with_endpoint(&endpoint)
                    .with_bucket_name(config.bucket.clone().unwrap_or_default())
                    .with_region(&config.region)
                    .with_access_key_id(config.access_key_id.clone().unwrap_or_default())
                    .with_secret_access_key(secret.trim())
                    .with_client_options(
                        // The options carry `allow_http` too: set here, not on the builder
                        // before them, or they would reset it.
                        ClientOptions::new()
                            .with_allow_http(endpoint.starts_with("http://"))
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(TARGET_CALL_TIMEOUT),
                    )
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                Kind::S3 { store: Arc::new(store), prefix: config.prefix.clone() }
            }
        };
        Ok(Target { name: config.name.clone(), kind })
    }

    /// A directory target (tests and `restore site --from-dir`).
    pub fn dir(name: &str, path: &Path) -> Target {
        Target { name: name.into(), kind: Kind::Dir(path.into()) }
    }

    /// The target's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `dir` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Dir(_) => "dir",
            Kind::S3 { .. } => "s3",
        }
    }

    fn error(&self, action: &'static str, key: &str, detail: impl std::fmt::Display) -> TargetError {
        TargetError { target: self.name.clone(), action, key: key.into(), detail: detail.to_string() }
    }

    fn check_key(&self, action: &'static str, key: &str) -> Result<(), TargetError> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(self.error(action, key, "not a backup object name"))
        }
    }

    fn s3_path(prefix: &str, key: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{prefix}{key}"))
    }

    /// Store the object `key`, durably, whole or not at all.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), TargetError> {
        self.put_with(key, bytes, true).await
    }

    /// Store the object `key` whole or not at all, durable only after the next
    /// [`Target::sync`] (many bodies, then one sync before the manifest).
    pub async fn put_unsynced(&self, key: &str, bytes: Vec<u8>) -> Result<(), TargetError> {
        self.put_with(key, bytes, false).await
    }

    /// Make every object put so far durable (a directory target syncs its file
    /// system; an S3 PUT is durable when it is answered).
    pub async fn sync(&self) -> Result<(), TargetError> {
        let Kind::Dir(root) = &self.kind else { return Ok(()) };
        let root = root.clone();
        let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = std::fs::File::open(&root)?;
            // SAFETY: syncfs(2) on a descriptor this function owns for the call.
            let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        match tokio::time::timeout(TARGET_CALL_TIMEOUT * 4, synced).await {
            Ok(Ok(result)) => result.map_err(|e| self.error("sync", "", e)),
            Ok(Err(e)) => Err(self.error("sync", "", e)),
            Err(_) => Err(self.error("sync", "", "timed out")),
        }
    }

    async fn put_with(&self, key: &str, bytes: Vec<u8>, durable: bool) -> Result<(), TargetError> {
        self.check_key("put", key)?;
        match &self.kind {
            Kind::Dir(root) => {
                let path = root.join(key);
                let done = tokio::task::spawn_blocking(move || write_whole(&path, &bytes, durable));
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, done).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(self.error("put", key, e)),
                    Ok(Err(e)) => Err(self.error("put", key, e)),
                    Err(_) => Err(self.error("put", key, "timed out")),
                }
            }
            Kind::S3 { store, prefix } => {
                let path = Self::s3_path(prefix, key);
                let put = store.put(&path, PutPayload::from(bytes));
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, put).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(self.error("put", key, e)),
                    Err(_) => Err(self.error("put", key, "timed out")),
                }
            }
        }
    }

    /// The object `key`, or `None` if the target does not have it.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TargetError> {
        self.check_key("get", key)?;
        match &self.kind {
            Kind::Dir(root) => {
                let path = root.join(key);
                let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                });
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, read).await {
                    Ok(Ok(result)) => result.map_err(|e| self.error("get", key, e)),
                    Ok(Err(e)) => Err(self.error("get", key, e)),
                    Err(_) => Err(self.error("get", key, "timed out")),
                }
            }
            Kind::S3 { store, prefix } => {
                let path = Self::s3_path(prefix, key);
                let get = async {
                    match store.get(&path).await {
                        Ok(found) => found.bytes().await.map(|b| Some(b.to_vec())),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                };
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, get).await {
                    Ok(result) => result.map_err(|e| self.error("get", key, e)),
                    Err(_) => Err(self.error("get", key, "timed out")),
                }
            }
        }
    }

    /// Every object key under `prefix` (a directory-like prefix such as `archive/`),
    /// sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        let mut keys = match &self.kind {
            Kind::Dir(root) => {
                let root = root.clone();
                let prefix_owned = prefix.to_string();
                let walk = tokio::task::spawn_blocking(move || list_dir(&root, &prefix_owned));
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, walk).await {
                    Ok(Ok(result)) => result.map_err(|e| self.error("list", prefix, e))?,
                    Ok(Err(e)) => return Err(self.error("list", prefix, e)),
                    Err(_) => return Err(self.error("list", prefix, "timed out")),
                }
            }
            Kind::S3 { store, prefix: base } => {
                let listed = async {
                    let mut keys = Vec::new();
                    let full = Self::s3_path(base, prefix.trim_end_matches('/'));
                    let mut stream = store.list(Some(&full));
                    while let Some(meta) = stream.next().await {
                        let location = meta?.location.to_string();
                        if let Some(key) = location.strip_prefix(base.as_str()) {
                            keys.push(key.to_string());
                        }
                    }
                    Ok::<_, object_store::Error>(keys)
                };
                match tokio::time::timeout(TARGET_CALL_TIMEOUT * 4, listed).await {
                    Ok(result) => result.map_err(|e| self.error("list", prefix, e))?,
                    Err(_) => return Err(self.error("list", prefix, "timed out")),
                }
            }
        };
        keys.retain(|k| k.starts_with(prefix) && valid_key(k));
        keys.sort();
        Ok(keys)
    }

    /// Remove the object `key`; removing one that is not there succeeds. On a bucket
    /// with Object Lock this fails until the object's retention has ended.
    pub async fn delete(&self, key: &str) -> Result<(), TargetError> {
        self.check_key("delete", key)?;
        match &self.kind {
            Kind::Dir(root) => {
                let path = root.join(key);
                let removed = tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                });
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, removed).await {
                    Ok(Ok(result)) => result.map_err(|e| self.error("delete", key, e)),
                    Ok(Err(e)) => Err(self.error("delete", key, e)),
                    Err(_) => Err(self.error("delete", key, "timed out")),
                }
            }
            Kind::S3 { store, prefix } => {
                let path = Self::s3_path(prefix, key);
                match tokio::time::timeout(TARGET_CALL_TIMEOUT, store.delete(&path)).await {
                    Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
                    Ok(Err(e)) => Err(self.error("delete", key, e)),
                    Err(_) => Err(self.error("delete", key, "timed out")),
                }
            }
        }
    }
}

/// Write `bytes` to `path` so that it is there whole or not at all; with `durable`,
/// fsynced with its directory before this returns.
fn write_whole(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| std::io::Error::other("no randomness"))?;
    let temp = dir.join(format!(".tmp-{}", hex::encode(random)));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&temp, path)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Every file under `root/prefix` as a key relative to `root` (temporary files left out).
fn list_dir(root: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let start = match prefix.rfind('/') {
        Some(i) => root.join(&prefix[..i]),
        None => root.to_path_buf(),
    };
    let mut keys = Vec::new();
    let mut pending = vec![start];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(root) {
                let key = relative.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                if !key.rsplit('/').next().is_some_and(|file| file.starts_with(".tmp-")) {
                    keys.push(key);
                }
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dir_target_keeps_lists_and_removes_objects_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::dir("local", dir.path());
        target.put("archive/00000000000000000001-00000000000000000002-1-2", b"seg".to_vec()).await.unwrap();
        target.put("backups/b-1/manifest", b"m".to_vec()).await.unwrap();
        target.put("backups/b-1/state", b"s".to_vec()).await.unwrap();
        assert_eq!(target.get("backups/b-1/manifest").await.unwrap(), Some(b"m".to_vec()));
        assert_eq!(target.get("backups/b-2/manifest").await.unwrap(), None);
        assert_eq!(target.list("backups/").await.unwrap(), vec!["backups/b-1/manifest", "backups/b-1/state"]);
        assert_eq!(target.list("bodies/").await.unwrap(), Vec::<String>::new());
        target.delete("backups/b-1/state").await.unwrap();
        target.delete("backups/b-1/state").await.unwrap();
        assert_eq!(target.list("backups/").await.unwrap(), vec!["backups/b-1/manifest"]);
    }

    #[tokio::test]
    async fn keys_that_could_leave_the_target_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::dir("local", &dir.path().join("t"));
        for key in ["../escape", "/abs", "a//b", "a/./b", "UPPER", ""] {
            let err = target.put(key, b"x".to_vec()).await.unwrap_err();
            assert!(err.to_string().contains("not a backup object name"), "{key}: {err}");
        }
        assert!(!dir.path().join("escape").exists());
    }
}
