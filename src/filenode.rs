//! File nodes: a file cap opened for reading, whatever its kind, as Tahoe's `nodemaker.py` and `IFileNode` give its
//! frontends. A literal file is its bytes; a CHK file is a verified reader over its shares (segments cached); a
//! mutable file (SDMF or MDMF) is its newest recoverable version, read once at open. [`FileNodes`] keeps the CHK
//! readers of recently read files, so that every reader of one file (each open of it, each name) shares one cache.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::cap::FileCap;
use crate::grid::client::Grid;
use crate::immutable::download::{ChkReader, DownloadError, DownloadOptions};
use crate::mutable::{MutableError, MutableFile, MutableOptions};

#[derive(Debug, thiserror::Error)]
pub enum FileNodeError {
    #[error("a verify cap cannot read a file, only check it")]
    VerifyCap,
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Mutable(#[from] MutableError),
}

/// How file nodes are read.
#[derive(Clone)]
pub struct FileNodeOptions {
    pub download: DownloadOptions,
    pub mutable: MutableOptions,
}

/// A readable file.
#[derive(Clone)]
pub enum FileNode {
    Literal(Bytes),
    Chk(ChkReader),
    /// A mutable file's contents when it was opened.
    Mutable(Arc<Vec<u8>>),
}

impl FileNode {
    /// Opens `cap` on `grid`: a CHK file's shares are found and its header verified, a mutable file is read.
    pub async fn open(
        grid: Grid,
        cap: &FileCap,
        options: &FileNodeOptions,
    ) -> Result<FileNode, FileNodeError> {
        match cap {
            FileCap::Literal(data) => Ok(FileNode::Literal(Bytes::copy_from_slice(data))),
            FileCap::Chk(chk) => Ok(FileNode::Chk(
                ChkReader::open(grid, *chk, options.download.clone()).await?,
            )),
            FileCap::ChkVerifier(_) => Err(FileNodeError::VerifyCap),
            FileCap::Mutable(cap) => {
                let version = MutableFile::open(grid, *cap, options.mutable.clone())
                    .read()
                    .await?;
                Ok(FileNode::Mutable(Arc::new(version.contents)))
            }
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            FileNode::Literal(data) => data.len() as u64,
            FileNode::Chk(reader) => reader.size(),
            FileNode::Mutable(contents) => contents.len() as u64,
        }
    }

    /// Up to `length` bytes at `offset` (fewer at the end of the file, none past it).
    pub async fn read(&self, offset: u64, length: u64) -> Result<Bytes, FileNodeError> {
        let slice = |data: &[u8]| {
            let start = offset.min(data.len() as u64) as usize;
            let end = offset.saturating_add(length).min(data.len() as u64) as usize;
            Bytes::copy_from_slice(&data[start..end])
        };
        match self {
            FileNode::Literal(data) => Ok(slice(data)),
            FileNode::Chk(reader) => Ok(reader.read(offset, length).await?),
            FileNode::Mutable(contents) => Ok(slice(contents)),
        }
    }

    /// Whether a read since the last call found shares missing or damaged (the file wants a repair).
    pub fn take_damage_report(&self) -> bool {
        match self {
            FileNode::Chk(reader) => reader.take_damage_report(),
            _ => false,
        }
    }
}

/// The CHK readers of recently read files, by storage index, at most `slots` of them.
pub struct FileNodes {
    readers: Mutex<lru::LruCache<[u8; 16], ChkReader>>,
}

impl FileNodes {
    pub fn new(slots: usize) -> FileNodes {
        let slots = NonZeroUsize::new(slots.max(1)).unwrap_or(NonZeroUsize::MIN);
        FileNodes {
            readers: Mutex::new(lru::LruCache::new(slots)),
        }
    }

    /// Opens `cap`, sharing the reader of a CHK file already open. Mutable files are read afresh each time.
    pub async fn open(
        &self,
        grid: Grid,
        cap: &FileCap,
        options: &FileNodeOptions,
    ) -> Result<FileNode, FileNodeError> {
        let FileCap::Chk(chk) = cap else {
            return FileNode::open(grid, cap, options).await;
        };
        let key = chk.storage_index();
        if let Some(reader) = self.lock().get(&key) {
            return Ok(FileNode::Chk(reader.clone()));
        }
        let node = FileNode::open(grid, cap, options).await?;
        if let FileNode::Chk(reader) = &node {
            self.lock().put(key, reader.clone());
        }
        Ok(node)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<[u8; 16], ChkReader>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_reads_stop_at_the_end_and_verify_caps_do_not_open() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let node = FileNode::Literal(Bytes::from_static(b"hello"));
        assert_eq!(node.size(), 5);
        let read = |offset, length| runtime.block_on(node.read(offset, length)).unwrap();
        assert_eq!(read(1, 3).as_ref(), b"ell");
        assert_eq!(read(3, u64::MAX).as_ref(), b"lo");
        assert!(read(9, 2).is_empty());
        assert!(!node.take_damage_report());
        // A verify cap from tahoe-lafs's own vectors.
        let verifier = crate::cap::Cap::parse(
            "URI:CHK-Verifier:otp6xs45yimb33dyqw2bt7gyha:aa6ssodkfa23goto4nujk7hilzg7lcyweerfrxfzvdvopcdphuyq:3:10:100",
        );
        let Ok(crate::cap::Cap::File(cap)) = verifier else {
            panic!("a verify cap: {verifier:?}");
        };
        let options = FileNodeOptions {
            download: DownloadOptions::default(),
            mutable: MutableOptions::new(vec![0; 32]),
        };
        let opened = runtime.block_on(FileNode::open(Grid::new(Vec::new()), &cap, &options));
        assert!(matches!(opened, Err(FileNodeError::VerifyCap)));
    }
}
