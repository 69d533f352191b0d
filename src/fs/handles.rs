//! Open handles: what each `open`/`opendir` gave the kernel, and how many are open on each inode (the last close of
//! a file lets its local copy go).

use std::collections::HashMap;
use std::sync::Arc;

use super::{DirEntry, FsError, FsResult};

/// An open file.
#[derive(Debug)]
pub(super) struct FileHandle {
    pub ino: u64,
    pub write: bool,
    pub append: bool,
    /// Written since the last seal.
    pub wrote: bool,
}

/// An open directory: its entries, fixed when it was opened so that readdir offsets stay meaningful.
#[derive(Debug)]
pub(super) struct DirHandle {
    pub entries: Arc<Vec<DirEntry>>,
}

#[derive(Debug)]
pub(super) enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

#[derive(Debug, Default)]
pub(super) struct Handles {
    open: HashMap<u64, (u64, Handle)>,
    next: u64,
    /// Open file handles per inode.
    per_inode: HashMap<u64, usize>,
}

impl Handles {
    /// Records a handle on inode `ino`; returns its number.
    pub(super) fn open(&mut self, ino: u64, handle: Handle) -> u64 {
        self.next += 1;
        let fh = self.next;
        if matches!(handle, Handle::File(_)) {
            *self.per_inode.entry(ino).or_default() += 1;
        }
        self.open.insert(fh, (ino, handle));
        fh
    }

    pub(super) fn file(&self, fh: u64) -> FsResult<&FileHandle> {
        match self.open.get(&fh) {
            Some((_, Handle::File(file))) => Ok(file),
            Some((_, Handle::Dir(_))) => Err(FsError::IsDir),
            None => Err(FsError::BadHandle),
        }
    }

    pub(super) fn file_mut(&mut self, fh: u64) -> FsResult<&mut FileHandle> {
        match self.open.get_mut(&fh) {
            Some((_, Handle::File(file))) => Ok(file),
            Some((_, Handle::Dir(_))) => Err(FsError::IsDir),
            None => Err(FsError::BadHandle),
        }
    }

    pub(super) fn dir(&self, fh: u64) -> FsResult<&DirHandle> {
        match self.open.get(&fh) {
            Some((_, Handle::Dir(dir))) => Ok(dir),
            Some((_, Handle::File(_))) => Err(FsError::NotDir),
            None => Err(FsError::BadHandle),
        }
    }

    /// Forgets handle `fh`; returns its inode if that was the inode's last open file handle.
    pub(super) fn close(&mut self, fh: u64) -> Option<u64> {
        let (ino, handle) = self.open.remove(&fh)?;
        if let Handle::Dir(_) = handle {
            return None;
        }
        let count = self.per_inode.get_mut(&ino)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.per_inode.remove(&ino);
        Some(ino)
    }

    /// Whether a file handle is open on `ino`.
    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.per_inode.contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64) -> Handle {
        Handle::File(FileHandle {
            ino,
            write: false,
            append: false,
            wrote: false,
        })
    }

    #[test]
    fn the_last_close_of_an_inode_is_reported_once() {
        let mut handles = Handles::default();
        let a = handles.open(7, file(7));
        let b = handles.open(7, file(7));
        let d = handles.open(
            7,
            Handle::Dir(DirHandle {
                entries: Arc::new(Vec::new()),
            }),
        );
        assert_ne!(a, b);
        assert!(handles.is_open(7));
        assert!(matches!(handles.file(d), Err(FsError::IsDir)));
        assert!(matches!(handles.dir(a), Err(FsError::NotDir)));
        assert_eq!(handles.close(d), None);
        assert_eq!(handles.close(a), None);
        assert_eq!(handles.close(a), None, "closed twice");
        assert_eq!(handles.close(b), Some(7));
        assert!(!handles.is_open(7));
        assert!(matches!(handles.file(b), Err(FsError::BadHandle)));
    }
}
