//! Output storage: where rendered bytes end up before a task may be marked done.
//!
//! Stored before done (docs/invariants.md, "Stored before done"): a result is streamed into storage, hashed
//! (sha256) and size-capped on the way, and becomes visible at its location only once whole;
//! only then does the worker run `complete.lua`. Two backends keep that contract, chosen by
//! `storage.backend` ([`from_config`]): [`LocalDir`] (a temporary file renamed into place
//! atomically) and [`S3Store`] (a single PUT or a multipart upload, which S3 makes visible only
//! on completion). Locations are `<season>/<group>/<task>.<ext>`, built only from components that
//! passed [`dramaq_common::ids::is_safe_component`], so no id can escape the output directory or
//! the bucket's prefix.

mod s3;

pub use s3::S3Store;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use dramaq_common::config::{StorageBackend, StorageConfig};
use dramaq_common::ids::is_safe_component;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsafe storage location component {0:?}")]
    UnsafeLocation(String),
    #[error("result is larger than storage.max_bytes ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("result body: {0}")]
    Body(String),
    #[error("storage I/O at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An object store request failed (after its own retries). The message never holds
    /// credentials.
    #[error("object storage {op} s3://{bucket}/{key}: {message}")]
    Object {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("object storage {op} s3://{bucket}/{key}: not found: {message}")]
    NotFound {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("object storage configuration: {0}")]
    Config(String),
}

/// A stored object's location relative to the storage root, e.g. `moonlit/ep01/vid-3f….mp4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(String);

impl Location {
    pub fn new(season: &str, group: &str, id: &str, ext: &str) -> Result<Location, StoreError> {
        for part in [season, group, id, ext] {
            if !is_safe_component(part) {
                return Err(StoreError::UnsafeLocation(part.to_string()));
            }
        }
        Ok(Location(format!("{season}/{group}/{id}.{ext}")))
    }

    /// Accept a location read back from a task record, re-checking every component.
    pub fn parse(s: &str) -> Result<Location, StoreError> {
        let parts: Vec<&str> = s.split('/').collect();
        let [season, group, file] = parts.as_slice() else {
            return Err(StoreError::UnsafeLocation(s.to_string()));
        };
        let (id, ext) = file
            .rsplit_once('.')
            .ok_or_else(|| StoreError::UnsafeLocation(s.to_string()))?;
        Location::new(season, group, id, ext)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub location: Location,
    pub sha256: String,
    pub bytes: u64,
}

/// A body to store: a stream of chunks, or the reason it broke off.
pub type Body = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

#[async_trait]
pub trait Storage: Send + Sync {
    /// Stream `body` into `location`, replacing any earlier object atomically.
    async fn put(&self, location: &Location, body: Body) -> Result<Stored, StoreError>;

    async fn get(&self, location: &Location) -> Result<Bytes, StoreError>;

    /// Copy the object at `location` into the local file `dest` (for tools that need a file,
    /// like ffmpeg, when [`Storage::local_path`] has none), returning what was written. Backends
    /// that can stream should: clips may be large.
    async fn fetch_to_file(&self, location: &Location, dest: &Path) -> Result<Stored, StoreError> {
        let bytes = self.get(location).await?;
        tokio::fs::write(dest, &bytes).await.map_err(io_err(dest))?;
        Ok(Stored {
            location: location.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
        })
    }

    /// A local file path for tools that need one (ffmpeg), when the backend has one.
    fn local_path(&self, location: &Location) -> Option<PathBuf>;

    /// Remove what writers that died mid-write left behind ([`LocalDir::sweep_parts`]); S3
    /// needs nothing here (an upload cut off leaves parts for the bucket's lifecycle rule).
    async fn sweep_leftovers(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Whether outputs can be written now (the worker's `/readyz`): stores a three-byte object
    /// at [`probe_location`] through the same path as every output, overwriting the last one.
    async fn check_writable(&self) -> Result<(), StoreError> {
        self.put(&probe_location()?, once(Bytes::from_static(b"ok\n")))
            .await
            .map(|_| ())
    }
}

/// Where [`Storage::check_writable`] writes: `dramaq-readyz/probe/<host>.txt`, one small object
/// per host, beside the seasons' folders.
pub fn probe_location() -> Result<Location, StoreError> {
    Location::new("dramaq-readyz", "probe", &host_name(), "txt")
}

/// How long another host's temporary file may sit untouched before a sweep removes it.
pub const STALE_PART: Duration = Duration::from_secs(3_600);

/// The backend `storage.backend` selects. For S3 this reads the credentials from the environment
/// and lists the bucket once, so a wrong bucket, endpoint or key stops the worker at startup
/// instead of failing every task after its render was paid for.
pub async fn from_config(cfg: &StorageConfig) -> anyhow::Result<Arc<dyn Storage>> {
    match cfg.backend {
        StorageBackend::Dir => Ok(Arc::new(LocalDir::new(&cfg.dir, cfg.max_bytes))),
        StorageBackend::S3 => {
            let s3 = cfg
                .s3
                .as_ref()
                .context("storage.backend = \"s3\" needs a [storage.s3] table")?;
            let store = S3Store::from_config(s3, cfg.max_bytes)?;
            store.check().await.with_context(|| {
                format!(
                    "checking {} (bucket, region, endpoint and credentials)",
                    store.url()
                )
            })?;
            tracing::info!(storage = %store.url(), "storing outputs in S3");
            Ok(Arc::new(store))
        }
    }
}

/// A local (or network-mounted) directory.
pub(crate) struct LocalDir {
    root: PathBuf,
    max_bytes: u64,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>, max_bytes: u64) -> LocalDir {
        LocalDir {
            root: root.into(),
            max_bytes,
        }
    }

    fn path(&self, location: &Location) -> PathBuf {
        self.root.join(location.as_str())
    }

    /// Remove temporary files left by writers that died mid-write: those of this host whose
    /// process is gone, and any not touched for `stale_after` (another host's dead writer; a
    /// live writer touches its file with every chunk). Walks `<root>/<season>/<episode>/`.
    /// Returns how many were removed.
    pub fn sweep_parts(&self, stale_after: Duration) -> std::io::Result<usize> {
        let mut removed = 0;
        let mut dirs = vec![(self.root.clone(), 0)];
        let me = host_name();
        while let Some((dir, depth)) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    if depth < 2 {
                        dirs.push((path, depth + 1));
                    }
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if !(name.starts_with('.') && name.ends_with(".part")) {
                    continue;
                }
                let writer_gone =
                    part_writer(&name).is_some_and(|(host, pid)| host == me && !process_alive(pid));
                let stale = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > stale_after);
                if (writer_gone || stale) && std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// This host's name as it appears in temporary file names (alphanumerics and `-` only).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_else(|_| "host".into())
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect()
}

/// `(host, pid)` of a temporary file named `.<file>.<host>~<pid>.<random>.part`.
fn part_writer(name: &str) -> Option<(&str, i32)> {
    let stem = name.strip_suffix(".part")?;
    let (rest, _random) = stem.rsplit_once('.')?;
    let (rest, pid) = rest.rsplit_once('~')?;
    let (_, host) = rest.rsplit_once('.')?;
    Some((host, pid.parse().ok()?))
}

/// Whether a process of this host is alive (signal 0 probes without sending anything).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[async_trait]
impl Storage for LocalDir {
    async fn put(
        &self,
        location: &Location,
        mut body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    ) -> Result<Stored, StoreError> {
        let path = self.path(location);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(&dir))?;
        // A unique temporary name in the same directory, so the rename is atomic and two writers
        // of the same task never share a temporary file.
        // Named after this host and process, so a sweep can tell a dead writer's leftovers
        // (`kill -9` mid-write) from a live writer's file.
        let tmp = dir.join(format!(
            ".{}.{}~{}.{}.part",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
            host_name(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut total: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                total += chunk.len() as u64;
                if total > self.max_bytes {
                    return Err(StoreError::TooLarge {
                        max: self.max_bytes,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err(&tmp))?;
            }
            file.sync_all().await.map_err(io_err(&tmp))?;
            Ok((hex::encode(hasher.finalize()), total))
        }
        .await;
        match result {
            Ok((sha256, bytes)) => {
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(io_err(&path))?;
                Ok(Stored {
                    location: location.clone(),
                    sha256,
                    bytes,
                })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn get(&self, location: &Location) -> Result<Bytes, StoreError> {
        let path = self.path(location);
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(io_err(&path))
    }

    fn local_path(&self, location: &Location) -> Option<PathBuf> {
        Some(self.path(location))
    }

    async fn sweep_leftovers(&self) -> Result<usize, StoreError> {
        let store = LocalDir::new(self.root.clone(), self.max_bytes);
        tokio::task::spawn_blocking(move || store.sweep_parts(STALE_PART))
            .await
            .map_err(|e| StoreError::Body(format!("sweep task: {e}")))?
            .map_err(io_err(&self.root))
    }
}

/// Wrap bytes already in memory as a body stream.
pub fn once(bytes: Bytes) -> Body {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_dead_writers_parts_and_keeps_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ep = dir.path().join("s").join("ep01");
        std::fs::create_dir_all(&ep).unwrap();
        let me = host_name();
        // A pid that cannot be alive (above the kernel's maximum).
        let dead = ep.join(format!(".vid-1.mp4.{me}~99999999.42.part"));
        let live = ep.join(format!(".vid-2.mp4.{me}~{}.7.part", std::process::id()));
        let other_host = ep.join(".vid-3.mp4.elsewhere~1.9.part");
        let done = ep.join("vid-4.mp4");
        for p in [&dead, &live, &other_host, &done] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(part_writer(".vid-1.mp4.h-1~12.3.part"), Some(("h-1", 12)));
        let store = LocalDir::new(dir.path(), 10);
        assert_eq!(store.sweep_parts(Duration::from_secs(3_600)).unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.exists() && other_host.exists() && done.exists());
        // Another host's leftover goes once it is stale; a finished file never does.
        assert_eq!(store.sweep_parts(Duration::ZERO).unwrap(), 2);
        assert!(done.exists());
    }

    #[test]
    fn locations_cannot_escape() {
        assert!(Location::new("s", "ep01", "vid-1", "mp4").is_ok());
        assert!(Location::new("..", "ep01", "vid-1", "mp4").is_err());
        assert!(Location::new("s", "a/b", "vid-1", "mp4").is_err());
        assert!(Location::parse("s/ep01/vid-1.mp4").is_ok());
        assert!(Location::parse("../../etc/passwd").is_err());
        assert!(Location::parse("s/ep01/../x.mp4").is_err());
    }

    #[tokio::test]
    async fn put_hashes_caps_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path(), 10);
        let loc = Location::new("s", "ep01", "vid-1", "mp4").unwrap();
        let stored = store
            .put(&loc, once(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        assert_eq!(stored.bytes, 5);
        assert_eq!(
            stored.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.get(&loc).await.unwrap(), Bytes::from_static(b"hello"));
        let too_big = store
            .put(&loc, once(Bytes::from_static(b"0123456789ab")))
            .await;
        assert!(matches!(too_big, Err(StoreError::TooLarge { .. })));
        // The earlier object is intact and no temporary file is left behind.
        assert_eq!(store.get(&loc).await.unwrap(), Bytes::from_static(b"hello"));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("s/ep01"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
