//! The local spool and the journal: where written files wait for their upload, and the record of every directory
//! change not yet published, so that a crash, a `kill -9` or an unmount loses nothing that `close` accepted.
//!
//! Layout of a spool directory (0700; it holds directory writecaps):
//! - `data/<id>`: the bytes of one version of a file, written by the application, then sealed (fsynced, never
//!   changed again) when the file is closed or fsynced;
//! - `journal/<key>.json`: one pending change to one name of one directory (the directory's writecap, the name, and
//!   either the child to link there, by cap or by spool id, with its metadata, or an unlink);
//! - `lock`: held (flock) by the one process using the spool.
//!
//! A journal entry is written (atomically, by rename) before the change it records is acknowledged, and removed
//! only once the change is published; a sealed spool file is removed only once no journal entry needs it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

/// The bytes free for an unprivileged writer, and the size, of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut figures = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct it is given; the path is a valid NUL-terminated string.
    if unsafe { libc::statvfs(path.as_ptr(), figures.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled the struct.
    let figures = unsafe { figures.assume_init() };
    let block = figures.f_frsize;
    Some((
        figures.f_bavail.saturating_mul(block),
        figures.f_blocks.saturating_mul(block),
    ))
}

/// Bytes held by live spool files, shared by them all so that dropping one gives its bytes back.
#[derive(Debug, Default)]
pub struct SpoolUsage {
    bytes: AtomicU64,
}

impl SpoolUsage {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One version of a file in the spool.
#[derive(Debug)]
pub struct SpoolFile {
    pub id: String,
    path: PathBuf,
    file: Arc<File>,
    size: AtomicU64,
    sealed: AtomicBool,
    /// Whether the bytes may go when the last user drops them: true until sealed (an unclosed version was never
    /// promised), false from sealing until its cap is journaled or nothing refers to it any more.
    discardable: AtomicBool,
    /// Left by an earlier run, whose upload of it may have been cut short (see [`SpoolFile::was_recovered`]).
    recovered: bool,
    usage: Weak<SpoolUsage>,
}

impl SpoolFile {
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Whether an earlier run left this file. Its upload may have been cut short, and servers keep the shares of
    /// an unfinished upload reserved for a while (Tahoe: 30 minutes), refusing them to a new upload of the same
    /// storage index; such a file is therefore uploaded under a fresh random key.
    pub fn was_recovered(&self) -> bool {
        self.recovered
    }

    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn read_at(&self, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let size = self.size();
        if offset >= size {
            return Ok(Vec::new());
        }
        let length = length.min((size - offset) as usize);
        let mut buf = vec![0u8; length];
        let mut done = 0;
        while done < length {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        // Bytes past the data written so far (a hole made by truncate) read as zeros, as they are already.
        Ok(buf)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        debug_assert!(!self.is_sealed(), "a sealed spool file is never written");
        self.file.write_all_at(data, offset)?;
        let end = offset + data.len() as u64;
        let old = self.size.fetch_max(end, Ordering::AcqRel);
        if end > old {
            self.account(end - old, true);
        }
        Ok(())
    }

    pub fn truncate(&self, size: u64) -> io::Result<()> {
        self.file.set_len(size)?;
        let old = self.size.swap(size, Ordering::AcqRel);
        if size > old {
            self.account(size - old, true);
        } else {
            self.account(old - size, false);
        }
        Ok(())
    }

    /// Copies the first `end` bytes of `source` into this (empty) file, leaving holes where `source` reads as
    /// zeros: a sparse file rewritten at a far offset stays sparse on the local disk.
    pub fn copy_from(&self, source: &SpoolFile, end: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let end = end.min(source.size());
        let mut offset = 0;
        while offset < end {
            let chunk = source.read_at(offset, (end - offset).min(CHUNK) as usize)?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&b| b != 0) {
                self.write_at(offset, &chunk)?;
            }
            offset += chunk.len() as u64;
        }
        if self.size() < end {
            self.truncate(end)?;
        }
        Ok(())
    }

    fn account(&self, bytes: u64, grow: bool) {
        if let Some(usage) = self.usage.upgrade() {
            if grow {
                usage.bytes.fetch_add(bytes, Ordering::Relaxed);
            } else {
                usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
    }

    /// Makes the bytes durable and fixes them for good.
    pub fn seal(&self) -> io::Result<()> {
        if !self.is_sealed() {
            self.file.sync_all()?;
            self.discardable.store(false, Ordering::Release);
            self.sealed.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Says that nothing durable needs these bytes any more (their cap is journaled, or nothing refers to them).
    pub fn release(&self) {
        self.discardable.store(true, Ordering::Release);
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if self.discardable.load(Ordering::Acquire) {
            let _ = fs::remove_file(&self.path);
            self.account(self.size(), false);
        }
    }
}

/// What a pending change links under its name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum JournalTarget {
    /// A cap (a directory, an uploaded file).
    #[serde(rename = "cap")]
    Cap(String),
    /// A sealed spool file waiting for its upload.
    #[serde(rename = "spool")]
    Spool(String),
}

/// One pending change, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    /// The directory's writecap.
    pub dir: String,
    pub name: String,
    /// `None`: unlink the name.
    pub link: Option<JournalTarget>,
    /// The entry's metadata as JSON text (with a link).
    #[serde(default)]
    pub metadata: Option<String>,
    /// Directories this process removed from the name before (caps), which a link published there replaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

/// The spool directory of one root.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    usage: Arc<SpoolUsage>,
    _lock: File,
}

fn private_dir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The journal key of a name in a directory: fixed-length, whatever the name.
pub fn journal_key(dir_storage_index: &[u8], name: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(dir_storage_index);
    hash.update([0]);
    hash.update(name.as_bytes());
    data_encoding::HEXLOWER.encode(&hash.finalize()[..16])
}

impl Spool {
    /// Opens (making it if need be) the spool at `dir` and takes its lock; a second process on the same spool is
    /// refused, since two writers of one journal would undo each other.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        private_dir(dir).map_err(|e| with_path(dir, e))?;
        private_dir(&dir.join("data")).map_err(|e| with_path(dir, e))?;
        private_dir(&dir.join("journal")).map_err(|e| with_path(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| with_path(&lock_path, e))?;
        try_lock(&lock).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: another tahoe-mount is using this spool (the same root is mounted elsewhere): {e}",
                    dir.display()
                ),
            )
        })?;
        Ok(Spool {
            dir: dir.to_owned(),
            usage: Arc::new(SpoolUsage::default()),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn usage(&self) -> &Arc<SpoolUsage> {
        &self.usage
    }

    /// The bytes free for an unprivileged writer, and the size, of the disk the spool is on.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        disk_space(&self.dir)
    }

    /// A new, empty, unsealed spool file.
    pub fn create(&self) -> io::Result<Arc<SpoolFile>> {
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let id = data_encoding::HEXLOWER.encode(&raw);
        let path = self.dir.join("data").join(&id);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        Ok(Arc::new(SpoolFile {
            id,
            path,
            file: Arc::new(file),
            size: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            discardable: AtomicBool::new(true),
            recovered: false,
            usage: Arc::downgrade(&self.usage),
        }))
    }

    /// A sealed spool file left by an earlier run.
    pub fn reopen(&self, id: &str) -> io::Result<Arc<SpoolFile>> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad spool id {id:?} in the journal"),
            ));
        }
        let path = self.dir.join("data").join(id);
        let file = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        let size = file.metadata()?.len();
        self.usage.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(Arc::new(SpoolFile {
            id: id.to_owned(),
            path,
            file: Arc::new(file),
            size: AtomicU64::new(size),
            sealed: AtomicBool::new(true),
            discardable: AtomicBool::new(false),
            recovered: true,
            usage: Arc::downgrade(&self.usage),
        }))
    }

    /// Removes spool files no journal entry names (versions never closed, or left by a crash between a journal
    /// update and the removal).
    pub fn collect_garbage(&self, keep: &std::collections::BTreeSet<String>) -> io::Result<usize> {
        let data = self.dir.join("data");
        let mut removed = 0;
        for entry in fs::read_dir(&data).map_err(|e| with_path(&data, e))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes a journal entry under `key`; with `durable`, it is on disk (not only in the page cache) on return.
    pub fn write_entry(&self, key: &str, entry: &JournalEntry, durable: bool) -> io::Result<()> {
        let dir = self.dir.join("journal");
        let path = dir.join(format!("{key}.json"));
        let tmp = dir.join(format!(".{key}.tmp"));
        let text = serde_json::to_vec(entry).map_err(io::Error::other)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| with_path(&tmp, e))?;
        file.write_all(&text).map_err(|e| with_path(&tmp, e))?;
        if durable {
            file.sync_all().map_err(|e| with_path(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| with_path(&path, e))?;
        if durable {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn remove_entry(&self, key: &str) -> io::Result<()> {
        let path = self.dir.join("journal").join(format!("{key}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(&path, e)),
            _ => Ok(()),
        }
    }

    /// Makes every journal change so far durable.
    pub fn sync_journal(&self) -> io::Result<()> {
        File::open(self.dir.join("journal"))?.sync_all()
    }

    /// Every journal entry, by key; unreadable ones are reported, not dropped (they stay on disk).
    pub fn load_entries(&self) -> io::Result<(BTreeMap<String, JournalEntry>, Vec<String>)> {
        let dir = self.dir.join("journal");
        let mut entries = BTreeMap::new();
        let mut problems = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| with_path(&dir, e))? {
            let item = item?;
            let file_name = item.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                let _ = fs::remove_file(item.path());
                continue;
            }
            let Some(key) = file_name.strip_suffix(".json") else {
                continue;
            };
            match fs::read(item.path())
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_slice(&text).map_err(|e| e.to_string()))
            {
                Ok(entry) => {
                    entries.insert(key.to_owned(), entry);
                }
                Err(e) => problems.push(format!("journal entry {file_name}: {e}")),
            }
        }
        Ok((entries, problems))
    }
}

fn try_lock(file: &File) -> io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tahoe-mount-spool-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_copy_keeps_the_holes_of_a_sparse_file() {
        let dir =
            std::env::temp_dir().join(format!("tahoe-mount-spool-sparse-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir).unwrap();
        let source = spool.create().unwrap();
        source.write_at(0, b"head").unwrap();
        source.write_at(64 << 20, b"tail").unwrap();
        let copy = spool.create().unwrap();
        copy.copy_from(&source, u64::MAX).unwrap();
        assert_eq!(copy.size(), (64 << 20) + 4);
        assert_eq!(copy.read_at(0, 4).unwrap(), b"head");
        assert_eq!(copy.read_at(64 << 20, 10).unwrap(), b"tail");
        assert_eq!(copy.read_at(1 << 20, 4).unwrap(), [0; 4]);
        use std::os::unix::fs::MetadataExt;
        let on_disk = fs::metadata(&copy.path).unwrap().blocks() * 512;
        assert!(
            on_disk < 4 << 20,
            "{on_disk} bytes on disk for a 64 MiB sparse copy"
        );
        let cut = spool.create().unwrap();
        cut.copy_from(&source, 2).unwrap();
        assert_eq!(cut.read_at(0, 10).unwrap(), b"he");
        drop((source, copy, cut, spool));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn sealed_files_survive_their_handles_and_unsealed_ones_do_not() {
        let dir = tempdir("seal");
        let spool = Spool::open(&dir).unwrap();
        assert!(
            Spool::open(&dir).is_err(),
            "a second user of one spool is refused"
        );
        let kept = spool.create().unwrap();
        kept.write_at(5, b"hello").unwrap();
        assert_eq!(kept.read_at(0, 100).unwrap(), b"\0\0\0\0\0hello");
        assert_eq!(spool.usage().bytes(), 10);
        kept.seal().unwrap();
        let scratch = spool.create().unwrap();
        scratch.write_at(0, b"x").unwrap();
        let (kept_id, scratch_id) = (kept.id.clone(), scratch.id.clone());
        drop((kept, scratch));
        assert!(dir.join("data").join(&kept_id).exists());
        assert!(!dir.join("data").join(&scratch_id).exists());
        let again = spool.reopen(&kept_id).unwrap();
        assert_eq!(again.read_at(3, 4).unwrap(), b"\0\0he");
        again.release();
        drop(again);
        assert!(!dir.join("data").join(&kept_id).exists());
        assert!(spool.reopen("../x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn journal_entries_round_trip() {
        let dir = tempdir("journal");
        let spool = Spool::open(&dir).unwrap();
        let entry = JournalEntry {
            dir: "URI:DIR2:a:b".into(),
            name: "n é".into(),
            link: Some(JournalTarget::Spool("ab12".into())),
            metadata: Some("{}".into()),
            replaces: Vec::new(),
        };
        let key = journal_key(b"si", "n é");
        spool.write_entry(&key, &entry, true).unwrap();
        fs::write(dir.join("journal").join("bad.json"), b"{").unwrap();
        let (entries, problems) = spool.load_entries().unwrap();
        assert_eq!(entries.get(&key), Some(&entry));
        assert_eq!(problems.len(), 1);
        spool.remove_entry(&key).unwrap();
        spool.remove_entry(&key).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
