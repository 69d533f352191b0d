//! The filesystem's vocabulary, as its callers (the FUSE adapter, the CLI's status) see it: attributes, entries,
//! what open and setattr take and give, and the figures `status` shows.

use std::time::{Duration, SystemTime};

use super::meta;

/// What an inode is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    /// A FIFO, socket or device node: an empty file whose entry says what it stands for.
    Special(meta::Special),
}

/// An inode's attributes, with how long the kernel may cache them.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// The device a device node stands for.
    pub rdev: u64,
    /// How long the attributes may be cached: long for an immutable file (a name that comes to link another
    /// cap gets a new inode), short for anything that may change.
    pub ttl: Duration,
    /// How long the name-to-inode mapping may be cached: the directory TTL, within which other clients' changes
    /// show.
    pub entry_ttl: Duration,
}

/// Who asks for a new entry: it belongs to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A directory entry as listed.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

/// What `open` tells the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub fh: u64,
    /// The contents cannot have changed since the kernel last cached them (an immutable file).
    pub keep_cache: bool,
}

/// Figures for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Bytes the user can still store: the servers' free space divided by the expansion factor N/k.
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub servers_answering: usize,
}

/// A change not yet on the grid, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingItem {
    /// Where, as a path below the mount when known, else the name and the directory's storage index.
    pub path: String,
    pub state: String,
    pub bytes: u64,
}

/// What the filesystem has asked of the grid since it started, for `status` (and for finding out why something
/// is slow).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Directory listings read from the grid.
    pub listings: u64,
    /// Of those, listings not merged because one of our publishes to that directory ended meanwhile.
    pub listings_dropped: u64,
    pub directories_made: u64,
    /// Files uploaded (CHK or LIT), and their bytes.
    pub uploads: u64,
    pub bytes_uploaded: u64,
    /// Directory versions published, and the changes they carried.
    pub publishes: u64,
    pub changes_published: u64,
    /// Failed attempts, each retried.
    pub upload_failures: u64,
    pub publish_failures: u64,
}

/// What `setattr` changes.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The handle the change came through, if any (`ftruncate`).
    pub fh: Option<u64>,
}
