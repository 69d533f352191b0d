//! A client's local copy of a grid's service directory: the last GSD and GSA contents it accepted, with their
//! sequence numbers, and the highest sequence number it has ever accepted for each (its rollback floor).
//!
//! One 0600 JSON file per grid under the user's cache directory, replaced whole at every save, so a later start
//! knows the servers when every bootstrap server is gone. The file names the grid by the GSD's storage index, not
//! its readcap, and nothing in it is written to logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cap::MutableCap;
use crate::config::{create_private_dir, write_private_file};
use crate::crypto::base32;

/// Overrides the cache directory (tests, and users who keep caches elsewhere).
pub const CACHE_DIR_ENV: &str = "TAHOE_MOUNT_CACHE_DIR";

/// Largest cache file read: 4096 announcements of 64 KiB would be 256 MiB; real ones are a few KiB.
const MAX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The user's cache directory for tahoe-mount: `$TAHOE_MOUNT_CACHE_DIR`, else the platform's cache directory
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux) with `tahoe-mount` below it.
pub fn default_cache_dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Some(dir.into()),
        None => dirs::cache_dir().map(|dir| dir.join("tahoe-mount")),
    }
}

/// An announcement as last accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAnnouncement {
    pub seqnum: u64,
    /// The GSA's contents, as published.
    pub text: String,
}

/// What is cached about one grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridCache {
    /// When the GSD was last read from a server (seconds since the epoch); 0 if never.
    pub refreshed_at: u64,
    /// The sequence number of the GSD contents below; 0 if none yet.
    pub gsd_seqnum: u64,
    /// The GSD's usable entries: petname → GSA readcap.
    pub entries: BTreeMap<String, String>,
    /// GSA readcap → its last accepted contents.
    pub announcements: BTreeMap<String, CachedAnnouncement>,
    /// Storage index (base32) → the highest sequence number ever accepted for that GSD or GSA. Never lowered,
    /// and kept when an entry goes, so a server cannot bring back a version the client has moved past.
    pub seen: BTreeMap<String, u64>,
}

impl GridCache {
    /// The highest version of `cap` ever accepted (0 if none).
    pub fn floor(&self, cap: &MutableCap) -> u64 {
        self.seen
            .get(&base32::encode(&cap.storage_index()))
            .copied()
            .unwrap_or(0)
    }

    /// Records that version `seqnum` of `cap` was accepted.
    pub fn raise_floor(&mut self, cap: &MutableCap, seqnum: u64) {
        let floor = self
            .seen
            .entry(base32::encode(&cap.storage_index()))
            .or_default();
        *floor = (*floor).max(seqnum);
    }
}

/// Where one grid's cache lives.
#[derive(Debug, Clone)]
pub struct CacheFile {
    path: PathBuf,
}

/// Why the cache could not be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("grid cache {path}: {problem}")]
pub struct CacheError {
    pub path: PathBuf,
    pub problem: String,
}

impl CacheFile {
    /// The cache of the grid whose GSD is `gsd`, in `cache_dir`.
    pub fn for_grid(cache_dir: &Path, gsd: &MutableCap) -> CacheFile {
        CacheFile {
            path: cache_dir
                .join("grids")
                .join(format!("{}.json", base32::encode(&gsd.storage_index()))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached state, or `None` if there is no cache yet.
    pub fn load(&self) -> Result<Option<GridCache>, CacheError> {
        let problem = |problem: String| CacheError {
            path: self.path.clone(),
            problem,
        };
        let size = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(problem(e.to_string())),
        };
        if size > MAX_CACHE_BYTES {
            return Err(problem(format!(
                "{size} bytes, more than the {MAX_CACHE_BYTES} allowed"
            )));
        }
        let bytes = std::fs::read(&self.path).map_err(|e| problem(e.to_string()))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| problem(format!("unreadable ({e}); delete it to start afresh")))
    }

    /// Replaces the cache with `cache`, atomically, as a 0600 file in a 0700 directory.
    pub fn save(&self, cache: &GridCache) -> Result<(), CacheError> {
        let problem = |problem: String| CacheError {
            path: self.path.clone(),
            problem,
        };
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(|e| problem(e.problem))?;
        }
        let bytes = serde_json::to_vec_pretty(cache).map_err(|e| problem(e.to_string()))?;
        write_private_file(&self.path, &bytes, true).map_err(|e| problem(e.problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::{MutableAccess, MutableFormat};
    use std::os::unix::fs::PermissionsExt;

    fn cap(byte: u8) -> MutableCap {
        MutableCap {
            format: MutableFormat::Sdmf,
            access: MutableAccess::Read {
                readkey: [byte; 16],
            },
            fingerprint: [byte; 32],
        }
    }

    #[test]
    fn saves_loads_and_never_lowers_a_floor() {
        let dir = std::env::temp_dir().join(format!("tahoe-mount-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = CacheFile::for_grid(&dir, &cap(1));
        assert_eq!(file.load().unwrap(), None);
        let mut cache = GridCache::default();
        cache.raise_floor(&cap(2), 5);
        cache.raise_floor(&cap(2), 3);
        assert_eq!(cache.floor(&cap(2)), 5);
        assert_eq!(cache.floor(&cap(3)), 0);
        cache.entries.insert("s1".into(), "URI:SSK-RO:x:y".into());
        file.save(&cache).unwrap();
        assert_eq!(file.load().unwrap(), Some(cache));
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(file.path(), b"{ not json").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("unreadable"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
