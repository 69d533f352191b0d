//! Filesystem semantics over a Tahoe grid, with no FUSE in it: inodes and handles, the spool of written files, the
//! upload queue, batched directory publishes, and caches. The FUSE adapter (`crate::fuse`) only translates; tests
//! drive this layer directly on the in-memory grid.
//!
//! The model. The root is a Tahoe directory; each directory's entries are its last listing from the grid overlaid
//! by this process's *pending changes*: per (directory, name), either a link (a cap, or a sealed spool file whose
//! upload is under way) with its metadata, or an unlink. Every pending change is in the journal (see [`spool`])
//! before the operation that made it returns, and leaves it only once a publish of that directory carried it. A
//! file written through the mount is a spool file until it is closed (sealed: fsynced and journaled), then it is
//! uploaded as CHK (or LIT) and linked. Directory publishes are batched: one new version carries every ready
//! change of that directory.
//!
//! Durability: `close` (flush) returns once the bytes and the journal entry are on the local disk; `fsync` once
//! the file is on the grid and linked in every directory up to the root. Errors from uploads and publishes reach
//! `fsync`, and the data stays in the spool and is retried.

pub mod meta;
pub mod spool;
mod work;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use crate::cap::{Cap, FileCap};
use crate::dirnode::{Child, DirectoryError, DirectoryNode, Metadata, normalize_name};
use crate::grid::client::Grid;
use crate::immutable::download::{ChkReader, DownloadOptions};
use crate::immutable::upload::UploadOptions;
use crate::mutable::{MutableFile, MutableOptions, MutableParams, SeqnumFloors};
use spool::{JournalEntry, JournalTarget, Spool, SpoolFile, journal_key};

pub const ROOT_INO: u64 = 1;
/// The read-only view of the grid service directory, at `/.grid`.
pub const GRID_INO: u64 = 2;
pub const GRID_DIR_NAME: &str = ".grid";
/// The longest name a directory entry may have through the mount (as most Linux filesystems).
pub const NAME_MAX: usize = 255;

/// An error with the errno the kernel gets.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only: {0}")]
    ReadOnly(&'static str),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("name too long")]
    NameTooLong,
    #[error("the spool is full: {0}")]
    NoSpace(String),
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("bad file handle")]
    BadHandle,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("grid: {0}")]
    Grid(String),
    #[error("local disk: {0}")]
    Local(#[from] std::io::Error),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            // The spool's own limit, not the disk's: a quota.
            FsError::NoSpace(_) => libc::EDQUOT,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::BadHandle => libc::EBADF,
            FsError::Unsupported(_) => libc::EOPNOTSUPP,
            FsError::Grid(_) => libc::EIO,
            FsError::Local(e) => e.raw_os_error().unwrap_or(match e.kind() {
                // Errors given a path for the log keep their kind but lose their number.
                std::io::ErrorKind::StorageFull => libc::ENOSPC,
                std::io::ErrorKind::QuotaExceeded => libc::EDQUOT,
                std::io::ErrorKind::PermissionDenied => libc::EACCES,
                std::io::ErrorKind::ReadOnlyFilesystem => libc::EROFS,
                std::io::ErrorKind::NotFound => libc::ENOENT,
                _ => libc::EIO,
            }),
        }
    }
}

impl From<DirectoryError> for FsError {
    fn from(e: DirectoryError) -> Self {
        FsError::Grid(e.to_string())
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// What an inode is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
}

/// An inode's attributes, with how long the kernel may cache them.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// How long the attributes may be cached: long for an immutable file (a name that comes to link another
    /// cap gets a new inode), short for anything that may change.
    pub ttl: Duration,
    /// How long the name-to-inode mapping may be cached: the directory TTL, within which other clients' changes
    /// show.
    pub entry_ttl: Duration,
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

/// Directories whose newest version seen the mount remembers (about 50 bytes each).
const ROLLBACK_MEMORY: usize = 100_000;

/// How the filesystem behaves.
#[derive(Clone)]
pub struct FsOptions {
    pub upload: UploadOptions,
    pub download: DownloadOptions,
    pub mutable: MutableOptions,
    /// The encoding of new directories.
    pub directory_params: MutableParams,
    /// How long a directory listing is trusted before the grid is asked again (others' changes show within it).
    pub dir_ttl: Duration,
    /// How long the kernel may cache the attributes of an immutable file.
    pub immutable_ttl: Duration,
    /// Bytes of open immutable files' verified segments kept in memory, all files together.
    pub cache_bytes: usize,
    /// Most bytes in the spool; writes beyond wait for uploads, then fail with EDQUOT.
    pub spool_bytes: u64,
    /// How long a directory's changes gather before they are published together.
    pub publish_delay: Duration,
    /// Files uploaded at once (`-o uploads`).
    pub parallel_uploads: usize,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    /// Told of files a read found damaged (shares missing, corrupt or out of reach), for a repair soon.
    pub on_damage: Option<Arc<dyn Fn(Cap) + Send + Sync>>,
    /// Permission bits taken away from entries stored without a mode (those another Tahoe client made): by
    /// default the group's and others', so that `allow_other` shows them to nobody else until `-o umask=` says.
    pub umask: u32,
}

impl FsOptions {
    pub const DEFAULT_PARALLEL_UPLOADS: usize = 4;

    pub fn new(upload: UploadOptions, mutable: MutableOptions) -> FsOptions {
        FsOptions {
            upload,
            download: DownloadOptions::default(),
            mutable,
            directory_params: MutableParams::default_for(crate::cap::MutableFormat::Sdmf),
            dir_ttl: Duration::from_secs(5),
            immutable_ttl: Duration::from_secs(3600),
            cache_bytes: 256 << 20,
            spool_bytes: 16 << 30,
            publish_delay: Duration::from_millis(100),
            parallel_uploads: Self::DEFAULT_PARALLEL_UPLOADS,
            read_only: false,
            uid: 0,
            gid: 0,
            on_damage: None,
            umask: 0o077,
        }
    }
}

/// The current grid, which the grid service directory's poller may replace while mounted.
pub type GridSource = Arc<dyn Fn() -> Grid + Send + Sync>;
/// The announcements shown under `/.grid`: (petname, announcement JSON).
pub type AnnouncementSource = Arc<dyn Fn() -> Vec<(String, Vec<u8>)> + Send + Sync>;

/// What a name links to.
#[derive(Debug, Clone)]
enum Target {
    Cap(Cap),
    Spool(Arc<SpoolFile>),
}

impl Target {
    fn to_journal(&self) -> JournalTarget {
        match self {
            Target::Cap(cap) => JournalTarget::Cap(cap.to_string()),
            Target::Spool(spool) => JournalTarget::Spool(spool.id.clone()),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    dir_cap: Cap,
    /// `None`: unlink.
    link: Option<(Target, Metadata)>,
    seq: u64,
}

#[derive(Debug)]
struct FileNode {
    /// What is (or is to be) linked under the name: the last closed version.
    linked: Target,
    /// Local bytes: the version being written (unsealed), or a sealed one (pending upload, or a copy of `linked`).
    spool: Option<Arc<SpoolFile>>,
    /// Written since its mtime was last set explicitly: sealing stamps it with the time.
    mtime_dirty: bool,
    /// The contents of a mutable file, once read.
    mutable_contents: Option<Arc<Vec<u8>>>,
}

impl FileNode {
    fn size(&self) -> u64 {
        if let Some(spool) = &self.spool {
            return spool.size();
        }
        match &self.linked {
            Target::Spool(spool) => spool.size(),
            Target::Cap(cap) => match cap {
                Cap::File(f) => f.size().unwrap_or_else(|| {
                    self.mutable_contents.as_ref().map_or(0, |c| c.len() as u64)
                }),
                _ => 0,
            },
        }
    }

    fn is_clean_immutable(&self) -> bool {
        self.spool.is_none() && matches!(&self.linked, Target::Cap(Cap::File(f)) if !f.is_mutable())
    }
}

#[derive(Debug)]
enum Node {
    Dir {
        cap: Cap,
        children: BTreeMap<String, u64>,
        fetched: Option<Instant>,
    },
    File(FileNode),
    /// A child tahoe-mount cannot show as a file or directory (an unknown cap): an empty read-only file.
    Other,
    GridDir {
        children: BTreeMap<String, u64>,
    },
    GridFile {
        body: Arc<Vec<u8>>,
    },
}

#[derive(Debug)]
struct Inode {
    parent: u64,
    name: String,
    metadata: Metadata,
    node: Node,
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    write: bool,
    append: bool,
    /// Written since the last seal.
    wrote: bool,
    entries: Option<Arc<Vec<DirEntry>>>,
}

#[derive(Default)]
struct Errors {
    epoch: u64,
    uploads: HashMap<String, (u64, String)>,
    publishes: HashMap<String, (u64, String)>,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// By (directory key, name).
    pending: BTreeMap<(String, String), Pending>,
    seq: u64,
    publishing: BTreeSet<String>,
    /// Publishes done per directory: a listing read while one finished may predate it, and is not merged.
    published: HashMap<String, u64>,
    uploading: BTreeSet<String>,
    /// Directories an `fsync` waits for: their publishers do not wait to gather more changes.
    urgent: BTreeSet<String>,
    errors: Errors,
    activity: Activity,
}

impl State {
    /// Gives `inode` the next number.
    fn add_inode(&mut self, inode: Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }
}

struct Inner {
    options: FsOptions,
    grid: GridSource,
    announcements: Option<AnnouncementSource>,
    spool: Spool,
    state: Mutex<State>,
    /// Bumped whenever an upload or publish ends, well or not: waiters re-check their condition.
    progress: watch::Sender<u64>,
    upload_slots: Semaphore,
    /// Wakes directory publishers when an `fsync` starts waiting for one (see `State::urgent`).
    urgent: tokio::sync::Notify,
    readers: Mutex<lru::LruCache<[u8; 16], ChkReader>>,
    statfs: Mutex<Option<(Instant, StatFs)>>,
    started: SystemTime,
    /// When the user last read or wrote, for [`Fs::idle_for`]: milliseconds after `clock_origin`.
    last_io: std::sync::atomic::AtomicU64,
    clock_origin: Instant,
    runtime: tokio::runtime::Handle,
}

/// The filesystem. Cheap to clone.
#[derive(Clone)]
pub struct Fs {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key under which a directory's pending changes are kept.
fn dir_key(cap: &Cap) -> String {
    match cap.storage_index() {
        Some(si) => data_encoding::HEXLOWER.encode(&si),
        None => journal_key(cap.to_string().as_bytes(), ""),
    }
}

fn check_name(name: &str) -> FsResult<String> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::Invalid(format!("{name:?} cannot be a name")));
    }
    Ok(normalize_name(name))
}

fn node_from_child(child: &Child, metadata: &Metadata) -> Node {
    match child {
        Child::Known(cap @ Cap::Directory(_)) => Node::Dir {
            cap: cap.clone(),
            children: BTreeMap::new(),
            fetched: None,
        },
        Child::Known(cap @ Cap::File(_)) => {
            let _ = metadata;
            Node::File(FileNode {
                linked: Target::Cap(cap.clone()),
                spool: None,
                mtime_dirty: false,
                mutable_contents: None,
            })
        }
        _ => Node::Other,
    }
}

/// Whether an inode already stands for `child` (so its number, and the kernel's caches of it, stay valid).
fn same_child(node: &Node, child: &Child) -> bool {
    match (node, child) {
        (Node::Dir { cap, .. }, Child::Known(c)) => cap == c,
        (Node::File(file), Child::Known(c)) => {
            // A file being written here stays ours whatever the grid says: its handles write to this inode, and
            // their close links it under its name.
            file.spool.as_ref().is_some_and(|s| !s.is_sealed())
                || matches!(&file.linked, Target::Cap(cap) if cap == c)
        }
        (Node::Other, Child::Unknown(_)) => true,
        _ => false,
    }
}

impl Fs {
    /// A filesystem whose root is the directory `root` (a writecap, or a readcap for a read-only mount), keeping
    /// its spool in `spool_dir`. Replays what an earlier run left in the journal: its files show where they were
    /// written and are uploaded and linked in the background. Must be called within a tokio runtime.
    pub fn new(
        root: Cap,
        grid: GridSource,
        announcements: Option<AnnouncementSource>,
        spool_dir: &std::path::Path,
        mut options: FsOptions,
    ) -> FsResult<(Fs, Vec<String>)> {
        if !root.is_directory() {
            return Err(FsError::Invalid("the root must be a directory cap".into()));
        }
        if root.is_readonly() {
            options.read_only = true;
        }
        // New versions of existing directories need the mount's happiness, as new ones do (not Tahoe's 7, which
        // on a grid of five with N = 5 meant every server).
        options.mutable.happy = options.directory_params.happy;
        // The newest version seen of each directory, so that one rolled back by the grid is never changed.
        if options.mutable.floors.is_none() {
            options.mutable.floors = Some(Arc::new(SeqnumFloors::new(ROLLBACK_MEMORY)));
        }
        let spool = Spool::open(spool_dir)?;
        let (entries, mut warnings) = spool.load_entries()?;
        let mut pending = BTreeMap::new();
        let mut keep = BTreeSet::new();
        let mut spools: HashMap<String, Arc<SpoolFile>> = HashMap::new();
        let mut seq = 0;
        for (key, entry) in entries {
            let dir_cap = match Cap::parse(&entry.dir) {
                Ok(cap) if cap.is_directory() && !cap.is_readonly() => cap,
                _ => {
                    warnings.push(format!(
                        "journal entry {key}: not a directory writecap; left on disk"
                    ));
                    continue;
                }
            };
            let link = match &entry.link {
                None => None,
                Some(target) => {
                    let metadata = match entry
                        .metadata
                        .as_deref()
                        .map(|m| Metadata::parse(m.as_bytes()))
                    {
                        None => Metadata::new(),
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            warnings.push(format!(
                                "journal entry {key}: metadata {e}; linked without it"
                            ));
                            Metadata::new()
                        }
                    };
                    let target = match target {
                        JournalTarget::Cap(text) => match Cap::parse(text) {
                            Ok(cap) => Target::Cap(cap),
                            Err(e) => {
                                warnings.push(format!("journal entry {key}: {e}; left on disk"));
                                continue;
                            }
                        },
                        JournalTarget::Spool(id) => {
                            let file = match spools.get(id) {
                                Some(file) => file.clone(),
                                None => match spool.reopen(id) {
                                    Ok(file) => {
                                        spools.insert(id.clone(), file.clone());
                                        file
                                    }
                                    Err(e) => {
                                        warnings.push(format!(
                                            "journal entry {key} ({:?}): its data is gone: {e}; left on disk",
                                            entry.name
                                        ));
                                        continue;
                                    }
                                },
                            };
                            keep.insert(id.clone());
                            Target::Spool(file)
                        }
                    };
                    Some((target, metadata))
                }
            };
            seq += 1;
            pending.insert(
                (dir_key(&dir_cap), normalize_name(&entry.name)),
                Pending { dir_cap, link, seq },
            );
        }
        spool.collect_garbage(&keep)?;
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT_INO,
            Inode {
                parent: ROOT_INO,
                name: String::new(),
                metadata: Metadata::new(),
                node: Node::Dir {
                    cap: root,
                    children: BTreeMap::new(),
                    fetched: None,
                },
            },
        );
        if announcements.is_some() {
            inodes.insert(
                GRID_INO,
                Inode {
                    parent: ROOT_INO,
                    name: GRID_DIR_NAME.into(),
                    metadata: Metadata::new(),
                    node: Node::GridDir {
                        children: BTreeMap::new(),
                    },
                },
            );
        }
        let reader_slots = (options.cache_bytes / options.download.cache_bytes.max(1)).max(1);
        let fs = Fs {
            inner: Arc::new(Inner {
                upload_slots: Semaphore::new(options.parallel_uploads.max(1)),
                urgent: tokio::sync::Notify::new(),
                readers: Mutex::new(lru::LruCache::new(
                    std::num::NonZeroUsize::new(reader_slots).expect("at least one"),
                )),
                options,
                grid,
                announcements,
                spool,
                state: Mutex::new(State {
                    inodes,
                    next_ino: GRID_INO + 1,
                    handles: HashMap::new(),
                    next_fh: 1,
                    pending,
                    seq,
                    publishing: BTreeSet::new(),
                    published: HashMap::new(),
                    uploading: BTreeSet::new(),
                    errors: Errors::default(),
                    urgent: BTreeSet::new(),
                    activity: Activity::default(),
                }),
                progress: watch::channel(0).0,
                statfs: Mutex::new(None),
                started: SystemTime::now(),
                last_io: std::sync::atomic::AtomicU64::new(0),
                clock_origin: Instant::now(),
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        for file in spools.into_values() {
            fs.enqueue_upload(file);
        }
        fs.kick_all_publishers();
        Ok((fs, warnings))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub fn options(&self) -> &FsOptions {
        &self.inner.options
    }

    fn grid(&self) -> Grid {
        (self.inner.grid)()
    }

    fn attr_of(&self, ino: u64, inode: &Inode, parent_writeable: bool) -> Attr {
        let options = &self.inner.options;
        let mtime = meta::mtime(&inode.metadata).unwrap_or(self.inner.started);
        let ctime = inode
            .metadata
            .link_modification_time()
            .map(|t| meta::from_nanos((t * 1e9) as i128))
            .unwrap_or(mtime);
        let stored_mode = meta::mode(&inode.metadata);
        let mut attr = Attr {
            ino,
            kind: Kind::File,
            size: 0,
            mtime,
            ctime,
            perm: 0o644,
            nlink: 1,
            uid: options.uid,
            gid: options.gid,
            ttl: Duration::from_secs(1),
            entry_ttl: options.dir_ttl,
        };
        match &inode.node {
            Node::Dir { cap, children, .. } => {
                attr.kind = Kind::Directory;
                attr.nlink = 2;
                attr.size = children.len() as u64;
                attr.ttl = options.dir_ttl;
                attr.perm = stored_mode.unwrap_or(0o777 & !options.umask) as u16;
                if cap.is_readonly() || options.read_only {
                    attr.perm &= !0o222;
                }
            }
            Node::File(file) => {
                attr.size = file.size();
                if let Some(target) = meta::symlink_target(&inode.metadata) {
                    attr.kind = Kind::Symlink;
                    attr.size = target.len() as u64;
                    attr.perm = 0o777;
                } else {
                    attr.perm = stored_mode.unwrap_or(0o666 & !options.umask) as u16;
                    if !parent_writeable || options.read_only {
                        attr.perm &= !0o222;
                    }
                }
                if file.is_clean_immutable() {
                    attr.ttl = options
                        .immutable_ttl
                        .min(options.dir_ttl.max(Duration::from_secs(1)));
                }
            }
            Node::Other => attr.perm = 0o444,
            Node::GridDir { children } => {
                attr.kind = Kind::Directory;
                attr.perm = 0o555;
                attr.nlink = 2;
                attr.size = children.len() as u64;
                attr.entry_ttl = Duration::from_secs(1);
            }
            Node::GridFile { body } => {
                attr.size = body.len() as u64;
                attr.perm = 0o444;
                attr.entry_ttl = Duration::from_secs(1);
            }
        }
        attr
    }

    fn attr_locked(&self, state: &State, ino: u64) -> FsResult<Attr> {
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let parent_writeable = match state.inodes.get(&inode.parent).map(|p| &p.node) {
            Some(Node::Dir { cap, .. }) => !cap.is_readonly(),
            _ => false,
        };
        Ok(self.attr_of(ino, inode, parent_writeable))
    }

    /// An inode's attributes.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.load_mutable_size(ino).await?;
        self.attr_locked(&self.state(), ino)
    }

    /// A mutable file's size is not in its cap: it is read once.
    async fn load_mutable_size(&self, ino: u64) -> FsResult<()> {
        let cap = {
            let state = self.state();
            match state.inodes.get(&ino).map(|i| &i.node) {
                Some(Node::File(FileNode {
                    linked: Target::Cap(Cap::File(FileCap::Mutable(cap))),
                    spool: None,
                    mutable_contents: None,
                    ..
                })) => *cap,
                _ => return Ok(()),
            }
        };
        let version = MutableFile::open(self.grid(), cap, self.inner.options.mutable.clone())
            .read()
            .await
            .map_err(|e| FsError::Grid(e.to_string()))?;
        if let Some(Node::File(file)) = self.state().inodes.get_mut(&ino).map(|i| &mut i.node) {
            file.mutable_contents = Some(Arc::new(version.contents));
        }
        Ok(())
    }

    fn dir_cap(&self, state: &State, ino: u64) -> FsResult<Cap> {
        match state.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::Dir { cap, .. }) => Ok(cap.clone()),
            Some(Node::GridDir { .. }) => Err(FsError::ReadOnly("/.grid is the grid's, not yours")),
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn writeable_dir(&self, state: &State, ino: u64) -> FsResult<Cap> {
        let cap = self.dir_cap(state, ino)?;
        if self.inner.options.read_only {
            return Err(FsError::ReadOnly("the mount is read-only"));
        }
        if cap.is_readonly() {
            return Err(FsError::ReadOnly("a read-only directory"));
        }
        Ok(cap)
    }

    /// Makes sure the directory's listing is younger than the directory TTL, asking the grid if not.
    async fn refresh_dir(&self, ino: u64, force: bool) -> FsResult<()> {
        if ino == GRID_INO {
            self.refresh_grid_dir();
            return Ok(());
        }
        let cap = {
            let state = self.state();
            match state.inodes.get(&ino).map(|i| &i.node) {
                Some(Node::Dir { cap, fetched, .. }) => {
                    if !force && fetched.is_some_and(|t| t.elapsed() < self.inner.options.dir_ttl) {
                        return Ok(());
                    }
                    cap.clone()
                }
                Some(Node::GridDir { .. }) => return Ok(()),
                Some(_) => return Err(FsError::NotDir),
                None => return Err(FsError::NotFound),
            }
        };
        let key = dir_key(&cap);
        let node =
            DirectoryNode::open(self.grid(), cap.clone(), self.inner.options.mutable.clone())?;
        let mut attempts = 0;
        let (listing, mut state) = loop {
            attempts += 1;
            let published_before = self.state().published.get(&key).copied();
            let listing = node.list().await?;
            let mut state = self.state();
            state.activity.listings += 1;
            if state.published.get(&key).copied() == published_before {
                break (listing, state);
            }
            state.activity.listings_dropped += 1;
            // One of our publishes ended meanwhile: this listing may lack what it carried, which is no longer
            // pending. A directory already shown keeps its local view (which is right) until the next refresh;
            // one never listed is read again.
            let listed = matches!(
                state.inodes.get(&ino).map(|i| &i.node),
                Some(Node::Dir {
                    fetched: Some(_),
                    ..
                })
            );
            if listed || attempts >= 5 {
                return Ok(());
            }
        };
        self.merge_listing(&mut state, ino, &key, &listing.directory)
    }

    /// Makes `directory` (just read from the grid, or just published by us) the listing of directory inode `ino`
    /// (whose key is `key`), under this process's pending changes. Inodes that still stand for the same child keep
    /// their numbers.
    fn merge_listing(
        &self,
        state: &mut State,
        ino: u64,
        key: &str,
        directory: &crate::dirnode::Directory,
    ) -> FsResult<()> {
        let pending: Vec<(String, Option<(Target, Metadata)>)> = state
            .pending
            .range((key.to_owned(), String::new())..)
            .take_while(|((k, _), _)| k == key)
            .map(|((_, name), p)| (name.clone(), p.link.clone()))
            .collect();
        let pending_names: BTreeSet<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
        let old_children = match state.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::Dir { children, .. }) => children.clone(),
            _ => return Err(FsError::NotFound),
        };
        let mut children = BTreeMap::new();
        let mut made = Vec::new();
        for (name, entry) in directory.iter() {
            if pending_names.contains(name) || (ino == ROOT_INO && name == GRID_DIR_NAME) {
                continue;
            }
            let kept = old_children.get(name).copied().filter(|old| {
                state
                    .inodes
                    .get(old)
                    .is_some_and(|i| same_child(&i.node, &entry.child))
            });
            match kept {
                Some(old) => {
                    if let Some(inode) = state.inodes.get_mut(&old) {
                        inode.metadata = entry.metadata.clone();
                    }
                    children.insert(name.to_owned(), old);
                }
                None => made.push((
                    name.to_owned(),
                    node_from_child(&entry.child, &entry.metadata),
                    entry.metadata.clone(),
                )),
            }
        }
        for (name, link) in pending {
            let Some((target, metadata)) = link else {
                continue;
            };
            if let Some(&old) = old_children.get(&name) {
                children.insert(name, old);
                continue;
            }
            // Left by an earlier run: shown as the journal has it.
            let node = match &target {
                Target::Cap(cap @ Cap::Directory(_)) => Node::Dir {
                    cap: cap.clone(),
                    children: BTreeMap::new(),
                    fetched: None,
                },
                Target::Cap(Cap::Unknown(_)) => Node::Other,
                target => Node::File(FileNode {
                    linked: target.clone(),
                    spool: match target {
                        Target::Spool(s) => Some(s.clone()),
                        Target::Cap(_) => None,
                    },
                    mtime_dirty: false,
                    mutable_contents: None,
                }),
            };
            made.push((name, node, metadata));
        }
        for (name, node, metadata) in made {
            let new = state.add_inode(Inode {
                parent: ino,
                name: name.clone(),
                metadata,
                node,
            });
            children.insert(name, new);
        }
        if let Some(Node::Dir {
            children: slot,
            fetched,
            ..
        }) = state.inodes.get_mut(&ino).map(|i| &mut i.node)
        {
            *slot = children;
            *fetched = Some(Instant::now());
        }
        Ok(())
    }

    fn refresh_grid_dir(&self) {
        let Some(source) = &self.inner.announcements else {
            return;
        };
        let announcements = source();
        let mut state = self.state();
        let old = match state.inodes.get(&GRID_INO).map(|i| &i.node) {
            Some(Node::GridDir { children }) => children.clone(),
            _ => return,
        };
        let mut children = BTreeMap::new();
        for (petname, body) in announcements {
            let Ok(name) = check_name(&petname) else {
                continue;
            };
            let same = old.get(&name).copied().filter(|ino| {
                matches!(state.inodes.get(ino).map(|i| &i.node), Some(Node::GridFile { body: b }) if **b == body)
            });
            let ino = match same {
                Some(ino) => ino,
                None => state.add_inode(Inode {
                    parent: GRID_INO,
                    name: name.clone(),
                    metadata: Metadata::new(),
                    node: Node::GridFile {
                        body: Arc::new(body),
                    },
                }),
            };
            children.insert(name, ino);
        }
        if let Some(Node::GridDir { children: slot }) =
            state.inodes.get_mut(&GRID_INO).map(|i| &mut i.node)
        {
            *slot = children;
        }
    }

    fn child_of(&self, state: &State, parent: u64, name: &str) -> FsResult<Option<u64>> {
        if parent == ROOT_INO && name == GRID_DIR_NAME && state.inodes.contains_key(&GRID_INO) {
            return Ok(Some(GRID_INO));
        }
        match state.inodes.get(&parent).map(|i| &i.node) {
            Some(Node::Dir { children, .. }) | Some(Node::GridDir { children }) => {
                Ok(children.get(name).copied())
            }
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// The entry `name` in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        self.note_io();
        let name = check_name(name)?;
        self.refresh_dir(parent, false).await?;
        let ino = {
            let state = self.state();
            self.child_of(&state, parent, &name)?
                .ok_or(FsError::NotFound)?
        };
        self.getattr(ino).await
    }

    /// Every entry of a directory, with `.` and `..`, and the attributes of each (for readdirplus).
    pub async fn list(&self, ino: u64) -> FsResult<Vec<(DirEntry, Attr)>> {
        self.note_io();
        self.refresh_dir(ino, false).await?;
        let state = self.state();
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let mut children: Vec<(String, u64)> = match &inode.node {
            Node::Dir { children, .. } | Node::GridDir { children } => {
                children.iter().map(|(n, i)| (n.clone(), *i)).collect()
            }
            _ => return Err(FsError::NotDir),
        };
        if ino == ROOT_INO && state.inodes.contains_key(&GRID_INO) {
            children.insert(0, (GRID_DIR_NAME.to_owned(), GRID_INO));
        }
        let mut out = Vec::with_capacity(children.len() + 2);
        let me = self.attr_locked(&state, ino)?;
        let parent = self.attr_locked(&state, inode.parent)?;
        out.push((
            DirEntry {
                ino,
                kind: Kind::Directory,
                name: ".".into(),
            },
            me,
        ));
        out.push((
            DirEntry {
                ino: inode.parent,
                kind: Kind::Directory,
                name: "..".into(),
            },
            parent,
        ));
        for (name, child) in children {
            if let Ok(attr) = self.attr_locked(&state, child) {
                out.push((
                    DirEntry {
                        ino: child,
                        kind: attr.kind,
                        name,
                    },
                    attr,
                ));
            }
        }
        Ok(out)
    }

    /// Opens a directory: its entries are fixed for the handle, so that offsets stay meaningful.
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let entries: Vec<DirEntry> = self.list(ino).await?.into_iter().map(|(e, _)| e).collect();
        let mut state = self.state();
        let fh = state.next_fh;
        state.next_fh += 1;
        state.handles.insert(
            fh,
            Handle {
                ino,
                write: false,
                append: false,
                wrote: false,
                entries: Some(Arc::new(entries)),
            },
        );
        Ok(fh)
    }

    /// The entries of an open directory from `offset` on.
    pub fn readdir(&self, fh: u64, offset: usize) -> FsResult<Vec<(DirEntry, Option<Attr>)>> {
        let state = self.state();
        let handle = state.handles.get(&fh).ok_or(FsError::BadHandle)?;
        let entries = handle.entries.clone().ok_or(FsError::NotDir)?;
        Ok(entries
            .iter()
            .skip(offset)
            .map(|e| (e.clone(), self.attr_locked(&state, e.ino).ok()))
            .collect())
    }

    pub fn release(&self, fh: u64) {
        let mut state = self.state();
        let Some(handle) = state.handles.remove(&fh) else {
            return;
        };
        if state.handles.values().any(|h| h.ino == handle.ino) {
            return;
        }
        // The last close: a local copy of what is on the grid goes now (see `uploaded`).
        if let Some(Inode {
            node: Node::File(file),
            ..
        }) = state.inodes.get_mut(&handle.ino)
            && matches!(&file.linked, Target::Cap(_))
            && file.spool.as_ref().is_some_and(|s| s.is_sealed())
        {
            file.spool = None;
        }
    }

    fn new_fh(state: &mut State, handle: Handle) -> u64 {
        let fh = state.next_fh;
        state.next_fh += 1;
        state.handles.insert(fh, handle);
        fh
    }

    /// Records a pending change of `name` in the directory `dir` (in the journal first).
    fn set_pending(
        &self,
        state: &mut State,
        dir_cap: &Cap,
        name: &str,
        link: Option<(Target, Metadata)>,
        durable: bool,
    ) -> FsResult<u64> {
        let key = dir_key(dir_cap);
        let entry = JournalEntry {
            dir: dir_cap.to_string(),
            name: name.to_owned(),
            link: link.as_ref().map(|(t, _)| t.to_journal()),
            metadata: link.as_ref().map(|(_, m)| m.to_json()),
        };
        self.inner
            .spool
            .write_entry(&journal_key(key.as_bytes(), name), &entry, durable)?;
        state.seq += 1;
        let seq = state.seq;
        let old = state.pending.insert(
            (key.clone(), name.to_owned()),
            Pending {
                dir_cap: dir_cap.clone(),
                link,
                seq,
            },
        );
        if let Some(Pending {
            link: Some((Target::Spool(old), _)),
            ..
        }) = old
        {
            self.release_if_unreferenced(state, &old);
        }
        self.kick_publisher(state, &key);
        Ok(seq)
    }

    /// A sealed spool file no journal entry names any more is not needed for durability.
    fn release_if_unreferenced(&self, state: &State, file: &Arc<SpoolFile>) {
        let referenced = state
            .pending
            .values()
            .any(|p| matches!(&p.link, Some((Target::Spool(s), _)) if Arc::ptr_eq(s, file)));
        if !referenced {
            file.release();
        }
    }

    /// The (directory cap, name) an inode is linked under, or none for the root and unlinked inodes.
    fn link_of(&self, state: &State, ino: u64) -> Option<(Cap, String)> {
        if ino == ROOT_INO {
            return None;
        }
        let inode = state.inodes.get(&ino)?;
        let parent = state.inodes.get(&inode.parent)?;
        match &parent.node {
            Node::Dir { cap, children, .. } if children.get(&inode.name) == Some(&ino) => {
                Some((cap.clone(), inode.name.clone()))
            }
            _ => None,
        }
    }

    /// What an inode links under its name now.
    fn target_of(inode: &Inode) -> Option<Target> {
        match &inode.node {
            Node::Dir { cap, .. } => Some(Target::Cap(cap.clone())),
            Node::File(file) => Some(file.linked.clone()),
            _ => None,
        }
    }

    /// Journals an inode's link as it is now (after a metadata change, a rename, a seal).
    fn relink(&self, state: &mut State, ino: u64, durable: bool) -> FsResult<Option<u64>> {
        let Some((dir_cap, name)) = self.link_of(state, ino) else {
            return Ok(None);
        };
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let Some(target) = Self::target_of(inode) else {
            return Ok(None);
        };
        let metadata = inode.metadata.clone();
        self.set_pending(state, &dir_cap, &name, Some((target, metadata)), durable)
            .map(Some)
    }

    fn insert_inode(
        state: &mut State,
        parent: u64,
        name: &str,
        metadata: Metadata,
        node: Node,
    ) -> u64 {
        let ino = state.add_inode(Inode {
            parent,
            name: name.to_owned(),
            metadata,
            node,
        });
        if let Some(Node::Dir { children, .. }) = state.inodes.get_mut(&parent).map(|i| &mut i.node)
        {
            children.insert(name.to_owned(), ino);
        }
        ino
    }

    fn new_metadata(mode: u32) -> Metadata {
        let mut metadata = Metadata::new();
        meta::set_mtime(&mut metadata, SystemTime::now());
        meta::set_mode(&mut metadata, mode);
        metadata
    }

    /// Creates and opens a new file (or opens the existing one, unless `exclusive`).
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, Opened)> {
        let name = check_name(name)?;
        self.refresh_dir(parent, false).await?;
        let existing = {
            let state = self.state();
            self.writeable_dir(&state, parent)?;
            self.child_of(&state, parent, &name)?
        };
        if let Some(ino) = existing {
            if flags & libc::O_EXCL != 0 {
                return Err(FsError::Exists);
            }
            let opened = self.open(ino, flags).await?;
            return Ok((self.getattr(ino).await?, opened));
        }
        let file = self.inner.spool.create()?;
        let mut state = self.state();
        let dir_cap = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)?.is_some() {
            return Err(FsError::Exists);
        }
        let metadata = Self::new_metadata(mode);
        let ino = Self::insert_inode(
            &mut state,
            parent,
            &name,
            metadata.clone(),
            Node::File(FileNode {
                linked: Target::Cap(Cap::File(FileCap::Literal(Vec::new()))),
                spool: Some(file),
                mtime_dirty: true,
                mutable_contents: None,
            }),
        );
        self.set_pending(
            &mut state,
            &dir_cap,
            &name,
            Some((
                Target::Cap(Cap::File(FileCap::Literal(Vec::new()))),
                metadata,
            )),
            false,
        )?;
        let fh = Self::new_fh(
            &mut state,
            Handle {
                ino,
                write: true,
                append: flags & libc::O_APPEND != 0,
                wrote: true,
                entries: None,
            },
        );
        let attr = self.attr_locked(&state, ino)?;
        Ok((
            attr,
            Opened {
                fh,
                keep_cache: false,
            },
        ))
    }

    /// Opens a file. Opening for writing gives the file a spool version of its own (a copy of its contents, unless
    /// `O_TRUNC`): the grid's immutable files are never changed, only replaced at close.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let access = flags & libc::O_ACCMODE;
        let write = access == libc::O_WRONLY || access == libc::O_RDWR;
        let truncate = write && flags & libc::O_TRUNC != 0;
        {
            let state = self.state();
            let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
            match &inode.node {
                Node::Dir { .. } | Node::GridDir { .. } => return Err(FsError::IsDir),
                Node::Other | Node::GridFile { .. } if write => {
                    return Err(FsError::ReadOnly("this file cannot be written"));
                }
                _ => {}
            }
            if write {
                if self.inner.options.read_only {
                    return Err(FsError::ReadOnly("the mount is read-only"));
                }
                if let Some(parent) = state.inodes.get(&inode.parent)
                    && matches!(&parent.node, Node::Dir { cap, .. } if cap.is_readonly())
                {
                    return Err(FsError::ReadOnly("a file in a read-only directory"));
                }
            }
        }
        if write {
            self.writable_spool(ino, if truncate { Some(0) } else { None })
                .await?;
        }
        let mut state = self.state();
        let keep_cache = match state.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::File(file)) => !write && file.is_clean_immutable(),
            _ => false,
        };
        let fh = Self::new_fh(
            &mut state,
            Handle {
                ino,
                write,
                append: flags & libc::O_APPEND != 0,
                wrote: truncate,
                entries: None,
            },
        );
        Ok(Opened { fh, keep_cache })
    }

    /// The unsealed spool version of a file, made if need be from its current contents (cut to `truncate_to`
    /// bytes if given, which spares reading what would be cut away).
    async fn writable_spool(&self, ino: u64, truncate_to: Option<u64>) -> FsResult<Arc<SpoolFile>> {
        let source = {
            let state = self.state();
            match state.inodes.get(&ino).map(|i| &i.node) {
                Some(Node::File(file)) => {
                    if let Some(spool) = &file.spool
                        && !spool.is_sealed()
                    {
                        if let Some(size) = truncate_to {
                            spool.truncate(size)?;
                        }
                        return Ok(spool.clone());
                    }
                    match (&file.spool, &file.linked) {
                        (Some(spool), _) => Target::Spool(spool.clone()),
                        (None, linked) => linked.clone(),
                    }
                }
                Some(Node::Dir { .. }) => return Err(FsError::IsDir),
                Some(_) => return Err(FsError::ReadOnly("this file cannot be written")),
                None => return Err(FsError::NotFound),
            }
        };
        self.reserve_spool(0).await?;
        let fresh = self.inner.spool.create()?;
        let keep = truncate_to.unwrap_or(u64::MAX);
        match source {
            Target::Spool(old) => {
                let end = old.size().min(keep);
                let mut offset = 0;
                while offset < end {
                    let chunk = old.read_at(offset, (end - offset).min(4 << 20) as usize)?;
                    if chunk.is_empty() {
                        break;
                    }
                    fresh.write_at(offset, &chunk)?;
                    offset += chunk.len() as u64;
                }
            }
            Target::Cap(cap) if keep > 0 => {
                let size = self.file_size_of(&cap).await?;
                let end = size.min(keep);
                let mut offset = 0;
                while offset < end {
                    let chunk = self
                        .read_cap(ino, &cap, offset, (end - offset).min(4 << 20) as u32)
                        .await?;
                    if chunk.is_empty() {
                        break;
                    }
                    fresh.write_at(offset, &chunk)?;
                    offset += chunk.len() as u64;
                }
            }
            Target::Cap(_) => {}
        }
        if let Some(size) = truncate_to {
            fresh.truncate(size)?;
        }
        let mut state = self.state();
        match state.inodes.get_mut(&ino).map(|i| &mut i.node) {
            Some(Node::File(file)) => {
                if let Some(spool) = &file.spool
                    && !spool.is_sealed()
                {
                    // Another opener got there first; theirs is the version.
                    return Ok(spool.clone());
                }
                file.spool = Some(fresh.clone());
                file.mutable_contents = None;
                Ok(fresh)
            }
            _ => Err(FsError::NotFound),
        }
    }

    async fn file_size_of(&self, cap: &Cap) -> FsResult<u64> {
        match cap {
            Cap::File(FileCap::Mutable(m)) => {
                Ok(
                    MutableFile::open(self.grid(), *m, self.inner.options.mutable.clone())
                        .read()
                        .await
                        .map_err(|e| FsError::Grid(e.to_string()))?
                        .contents
                        .len() as u64,
                )
            }
            Cap::File(f) => Ok(f.size().unwrap_or(0)),
            _ => Ok(0),
        }
    }

    /// Reads from a file's cap: literal bytes, a CHK file through a shared cached reader, or a mutable file's
    /// contents (read once per inode).
    async fn read_cap(&self, ino: u64, cap: &Cap, offset: u64, size: u32) -> FsResult<Bytes> {
        let slice = |data: &[u8]| {
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            Bytes::copy_from_slice(&data[start..end])
        };
        match cap {
            Cap::File(FileCap::Literal(data)) => Ok(slice(data)),
            Cap::File(FileCap::Chk(chk)) => {
                let read = async {
                    let reader = self.reader(chk).await?;
                    let data = reader.read(offset, u64::from(size)).await;
                    if reader.take_damage_report() {
                        self.report_damage(cap);
                    }
                    data.map_err(|e| FsError::Grid(e.to_string()))
                };
                let result = read.await;
                if result.is_err() {
                    self.report_damage(cap);
                }
                result
            }
            Cap::File(FileCap::Mutable(_)) => {
                self.load_mutable_size(ino).await?;
                let state = self.state();
                match state.inodes.get(&ino).map(|i| &i.node) {
                    Some(Node::File(FileNode {
                        mutable_contents: Some(c),
                        ..
                    })) => Ok(slice(c)),
                    _ => Ok(Bytes::new()),
                }
            }
            _ => Ok(Bytes::new()),
        }
    }

    fn report_damage(&self, cap: &Cap) {
        if let Some(report) = &self.inner.options.on_damage {
            report(cap.clone());
        }
    }

    /// How long since the user last read, wrote, looked up or listed through the mount.
    pub fn idle_for(&self) -> Duration {
        let last = self
            .inner
            .last_io
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = self.inner.clock_origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(last))
    }

    fn note_io(&self) {
        let now = self.inner.clock_origin.elapsed().as_millis() as u64;
        self.inner
            .last_io
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    async fn reader(&self, chk: &crate::cap::ChkCap) -> FsResult<ChkReader> {
        let key = chk.storage_index();
        if let Some(reader) = lock(&self.inner.readers).get(&key) {
            return Ok(reader.clone());
        }
        let reader = ChkReader::open(self.grid(), *chk, self.inner.options.download.clone())
            .await
            .map_err(|e| FsError::Grid(e.to_string()))?;
        lock(&self.inner.readers).put(key, reader.clone());
        Ok(reader)
    }

    /// Reads up to `size` bytes at `offset`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.note_io();
        let (ino, source) = {
            let state = self.state();
            let handle = state.handles.get(&fh).ok_or(FsError::BadHandle)?;
            let ino = handle.ino;
            let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
            let source = match &inode.node {
                Node::File(file) => match (&file.spool, &file.linked) {
                    (Some(spool), _) => Target::Spool(spool.clone()),
                    (None, linked) => linked.clone(),
                },
                Node::GridFile { body } => {
                    let start = (offset as usize).min(body.len());
                    let end = start.saturating_add(size as usize).min(body.len());
                    return Ok(Bytes::copy_from_slice(&body[start..end]));
                }
                Node::Other => return Ok(Bytes::new()),
                _ => return Err(FsError::IsDir),
            };
            (ino, source)
        };
        match source {
            Target::Spool(spool) => Ok(Bytes::from(spool.read_at(offset, size as usize)?)),
            Target::Cap(cap) => self.read_cap(ino, &cap, offset, size).await,
        }
    }

    /// Waits until the spool has room for `bytes` more, or says it never will.
    async fn reserve_spool(&self, bytes: u64) -> FsResult<()> {
        let limit = self.inner.options.spool_bytes;
        let mut progress = self.inner.progress.subscribe();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let used = self.inner.spool.usage().bytes();
            if used.saturating_add(bytes) <= limit {
                return Ok(());
            }
            self.evict_clean_spools();
            if self.inner.spool.usage().bytes().saturating_add(bytes) <= limit {
                return Ok(());
            }
            let waiting = !self.state().uploading.is_empty();
            if !waiting || Instant::now() > deadline {
                return Err(FsError::NoSpace(format!(
                    "{used} bytes are spooled, the limit is {limit}, and no upload under way would free any"
                )));
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), progress.changed()).await;
        }
    }

    /// Drops local copies of files that are on the grid (open handles keep theirs until they close).
    fn evict_clean_spools(&self) {
        let mut state = self.state();
        for inode in state.inodes.values_mut() {
            if let Node::File(file) = &mut inode.node
                && matches!(&file.linked, Target::Cap(_))
                && file.spool.as_ref().is_some_and(|s| s.is_sealed())
            {
                file.spool = None;
            }
        }
    }

    /// Writes `data` at `offset` (at the end for a handle opened with `O_APPEND`); returns the bytes written.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.note_io();
        let (ino, append) = {
            let state = self.state();
            let handle = state.handles.get(&fh).ok_or(FsError::BadHandle)?;
            if !handle.write {
                return Err(FsError::BadHandle);
            }
            (handle.ino, handle.append)
        };
        let spool = self.writable_spool(ino, None).await?;
        let offset = if append { spool.size() } else { offset };
        let growth = (offset + data.len() as u64).saturating_sub(spool.size());
        if growth > 0 {
            self.reserve_spool(growth).await?;
        }
        spool.write_at(offset, data)?;
        let mut state = self.state();
        if let Some(handle) = state.handles.get_mut(&fh) {
            handle.wrote = true;
        }
        if let Some(Node::File(file)) = state.inodes.get_mut(&ino).map(|i| &mut i.node) {
            file.mtime_dirty = true;
        }
        Ok(data.len() as u32)
    }

    /// Seals the file's spool version, if it has one being written: fsynced, journaled as what the name links,
    /// queued for upload. Returns the journal sequence number of the link, if one was made.
    fn seal(&self, ino: u64) -> FsResult<Option<u64>> {
        let mut state = self.state();
        let Some(inode) = state.inodes.get_mut(&ino) else {
            return Ok(None);
        };
        let Node::File(file) = &mut inode.node else {
            return Ok(None);
        };
        let Some(spool) = file.spool.clone() else {
            return Ok(None);
        };
        if spool.is_sealed() {
            return Ok(None);
        }
        let previous = file.linked.clone();
        if let Err(e) = spool.seal() {
            // A full disk, most likely: these bytes can be kept neither durably nor at all, so they go, and
            // their space with them (the name keeps what it linked before; the caller is told why).
            file.spool = None;
            spool.release();
            return Err(e.into());
        }
        if file.mtime_dirty {
            meta::set_mtime(&mut inode.metadata, SystemTime::now());
            file.mtime_dirty = false;
        }
        file.linked = Target::Spool(spool.clone());
        let seq = match self.relink(&mut state, ino, true) {
            Ok(seq) => seq,
            Err(e) => {
                // The journal could not record the new contents (a full disk): as above.
                if let Some(Node::File(file)) = state.inodes.get_mut(&ino).map(|i| &mut i.node) {
                    file.linked = previous;
                    file.spool = None;
                }
                spool.release();
                return Err(e);
            }
        };
        drop(state);
        if seq.is_none() {
            // Unlinked while open: nothing will ever link these bytes.
            spool.release();
        } else {
            self.enqueue_upload(spool);
        }
        Ok(seq)
    }

    /// `close` of one descriptor: what was written through it is sealed and journaled.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let ino = {
            let mut state = self.state();
            let Some(handle) = state.handles.get_mut(&fh) else {
                return Err(FsError::BadHandle);
            };
            if !handle.wrote {
                return Ok(());
            }
            handle.wrote = false;
            handle.ino
        };
        self.seal(ino).map(|_| ())
    }

    /// Returns once the file's contents are uploaded and linked in every directory up to the root; an upload or
    /// publish that fails meanwhile is reported (the data stays in the spool and is retried).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let ino = self.state().handles.get(&fh).ok_or(FsError::BadHandle)?.ino;
        self.flush(fh)?;
        self.wait_durable(ino).await
    }

    /// Waits until nothing pending stands between `ino` and the grid: its own link and its ancestors'.
    pub async fn wait_durable(&self, ino: u64) -> FsResult<()> {
        let mut progress = self.inner.progress.subscribe();
        let since = self.state().errors.epoch;
        loop {
            progress.borrow_and_update();
            {
                let mut state = self.state();
                let mut blocked = None;
                let mut at = ino;
                while at != ROOT_INO {
                    let Some((dir_cap, name)) = self.link_of(&state, at) else {
                        break;
                    };
                    let key = dir_key(&dir_cap);
                    if let Some(p) = state.pending.get(&(key.clone(), name.clone())) {
                        blocked = Some((key, p.link.clone()));
                        break;
                    }
                    at = state.inodes.get(&at).map_or(ROOT_INO, |i| i.parent);
                }
                let Some((key, link)) = blocked else {
                    return Ok(());
                };
                if state.urgent.insert(key.clone()) {
                    self.inner.urgent.notify_waiters();
                }
                if let Some(Target::Spool(spool)) = link.as_ref().map(|(t, _)| t)
                    && let Some((epoch, why)) = state.errors.uploads.get(&spool.id)
                    && *epoch > since
                {
                    return Err(FsError::Grid(format!(
                        "upload failed (kept in the spool, retried): {why}"
                    )));
                }
                if let Some((epoch, why)) = state.errors.publishes.get(&key)
                    && *epoch > since
                {
                    return Err(FsError::Grid(format!(
                        "directory publish failed (kept, retried): {why}"
                    )));
                }
            }
            if progress.changed().await.is_err() {
                return Err(FsError::Grid("shutting down".into()));
            }
        }
    }

    /// Sets what `setattr` may set: size (truncate), modification time, permission bits; owner changes to
    /// anyone but the mount's owner are refused.
    pub async fn setattr(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        if let Some(uid) = change.uid
            && uid != self.inner.options.uid
        {
            return Err(FsError::NotPermitted("files belong to the mount's owner"));
        }
        if let Some(gid) = change.gid
            && gid != self.inner.options.gid
        {
            return Err(FsError::NotPermitted("files belong to the mount's group"));
        }
        let changes_anything =
            change.size.is_some() || change.mtime.is_some() || change.mode.is_some();
        if changes_anything {
            let state = self.state();
            if self.inner.options.read_only {
                return Err(FsError::ReadOnly("the mount is read-only"));
            }
            let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
            if matches!(
                inode.node,
                Node::GridDir { .. } | Node::GridFile { .. } | Node::Other
            ) {
                return Err(FsError::ReadOnly("not yours to change"));
            }
            if ino != ROOT_INO
                && let Ok(parent_cap) = self.dir_cap(&state, inode.parent)
                && parent_cap.is_readonly()
            {
                return Err(FsError::ReadOnly("in a read-only directory"));
            }
        }
        let size_change = match change.size {
            // Truncating to the size it has changes nothing, and must not start a new version.
            Some(size) if self.getattr(ino).await?.size == size => None,
            other => other,
        };
        if let Some(size) = size_change {
            self.writable_spool(ino, Some(size)).await?;
            let mut state = self.state();
            if let Some(Node::File(file)) = state.inodes.get_mut(&ino).map(|i| &mut i.node) {
                file.mtime_dirty = true;
            }
            match change.fh.and_then(|fh| state.handles.get_mut(&fh)) {
                Some(handle) => handle.wrote = true,
                None => {
                    drop(state);
                    // truncate(2) by path: no close follows, so this is the close.
                    self.seal(ino)?;
                }
            }
        }
        if change.mtime.is_some() || change.mode.is_some() {
            let mut state = self.state();
            let inode = state.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
            if let Some(mtime) = change.mtime {
                meta::set_mtime(&mut inode.metadata, mtime);
                if let Node::File(file) = &mut inode.node {
                    file.mtime_dirty = false;
                }
            }
            if let Some(mode) = change.mode {
                meta::set_mode(&mut inode.metadata, mode);
            }
            self.relink(&mut state, ino, false)?;
        }
        self.getattr(ino).await
    }

    /// Makes a directory: a new Tahoe directory on the grid, linked into its parent with the next publish.
    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32) -> FsResult<Attr> {
        let name = check_name(name)?;
        self.refresh_dir(parent, false).await?;
        {
            let state = self.state();
            self.writeable_dir(&state, parent)?;
            if self.child_of(&state, parent, &name)?.is_some() {
                return Err(FsError::Exists);
            }
        }
        let node = DirectoryNode::create(
            self.grid(),
            &crate::dirnode::Directory::new(),
            self.inner.options.directory_params,
            self.inner.options.mutable.clone(),
        )
        .await?;
        let mut state = self.state();
        state.activity.directories_made += 1;
        let dir_cap = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)?.is_some() {
            return Err(FsError::Exists);
        }
        let metadata = Self::new_metadata(mode);
        let cap = node.cap().clone();
        let ino = Self::insert_inode(
            &mut state,
            parent,
            &name,
            metadata.clone(),
            Node::Dir {
                cap: cap.clone(),
                children: BTreeMap::new(),
                fetched: Some(Instant::now()),
            },
        );
        self.set_pending(
            &mut state,
            &dir_cap,
            &name,
            Some((Target::Cap(cap), metadata)),
            false,
        )?;
        self.attr_locked(&state, ino)
    }

    /// Makes a symbolic link: a small file holding the target, marked as a link in its metadata.
    pub async fn symlink(&self, parent: u64, name: &str, target: &str) -> FsResult<Attr> {
        let name = check_name(name)?;
        if target.is_empty() || target.len() > 4095 {
            return Err(FsError::Invalid(
                "a symlink target must be 1 to 4095 bytes".into(),
            ));
        }
        self.refresh_dir(parent, false).await?;
        let file = self.inner.spool.create()?;
        file.write_at(0, target.as_bytes())?;
        let ino = {
            let mut state = self.state();
            self.writeable_dir(&state, parent)?;
            if self.child_of(&state, parent, &name)?.is_some() {
                return Err(FsError::Exists);
            }
            let mut metadata = Self::new_metadata(0o777);
            meta::set_symlink_target(&mut metadata, target);
            Self::insert_inode(
                &mut state,
                parent,
                &name,
                metadata,
                Node::File(FileNode {
                    linked: Target::Cap(Cap::File(FileCap::Literal(Vec::new()))),
                    spool: Some(file),
                    mtime_dirty: false,
                    mutable_contents: None,
                }),
            )
        };
        self.seal(ino)?;
        self.getattr(ino).await
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let state = self.state();
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        meta::symlink_target(&inode.metadata)
            .map(str::to_owned)
            .ok_or(FsError::Invalid("not a symbolic link".into()))
    }

    /// Removes a file (or symlink) name.
    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        self.remove(parent, name, false).await
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.remove(parent, name, true).await
    }

    async fn remove(&self, parent: u64, name: &str, directory: bool) -> FsResult<()> {
        let name = check_name(name)?;
        self.refresh_dir(parent, false).await?;
        let child = {
            let state = self.state();
            self.writeable_dir(&state, parent)?;
            let child = self
                .child_of(&state, parent, &name)?
                .ok_or(FsError::NotFound)?;
            let is_dir = matches!(
                state.inodes.get(&child).map(|i| &i.node),
                Some(Node::Dir { .. } | Node::GridDir { .. })
            );
            match (directory, is_dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                _ => {}
            }
            child
        };
        if directory {
            // Emptiness is judged on a fresh listing: another client may have put something there.
            self.refresh_dir(child, true).await?;
        }
        let mut state = self.state();
        let dir_cap = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)? != Some(child) {
            return Err(FsError::NotFound);
        }
        if directory
            && matches!(state.inodes.get(&child).map(|i| &i.node), Some(Node::Dir { children, .. }) if !children.is_empty())
        {
            return Err(FsError::NotEmpty);
        }
        if let Some(Node::Dir { children, .. }) = state.inodes.get_mut(&parent).map(|i| &mut i.node)
        {
            children.remove(&name);
        }
        self.set_pending(&mut state, &dir_cap, &name, None, false)?;
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, replacing a file there (or an empty directory
    /// by a directory). Across directories it is two changes, published in the new directory first.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> FsResult<()> {
        let name = check_name(name)?;
        let new_name = check_name(new_name)?;
        self.refresh_dir(parent, false).await?;
        self.refresh_dir(new_parent, false).await?;
        let (child, replaced) = {
            let state = self.state();
            self.writeable_dir(&state, parent)?;
            self.writeable_dir(&state, new_parent)?;
            let child = self
                .child_of(&state, parent, &name)?
                .ok_or(FsError::NotFound)?;
            (child, self.child_of(&state, new_parent, &new_name)?)
        };
        if replaced == Some(child) {
            return Ok(());
        }
        let child_is_dir = matches!(
            self.state().inodes.get(&child).map(|i| &i.node),
            Some(Node::Dir { .. })
        );
        if let Some(old) = replaced {
            if no_replace {
                return Err(FsError::Exists);
            }
            let old_is_dir = matches!(
                self.state().inodes.get(&old).map(|i| &i.node),
                Some(Node::Dir { .. })
            );
            match (child_is_dir, old_is_dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    self.refresh_dir(old, true).await?;
                    if matches!(self.state().inodes.get(&old).map(|i| &i.node), Some(Node::Dir { children, .. }) if !children.is_empty())
                    {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
        }
        if child_is_dir {
            // A directory may not move below itself.
            let state = self.state();
            let mut at = new_parent;
            while at != ROOT_INO {
                if at == child {
                    return Err(FsError::Invalid(
                        "a directory cannot move into itself".into(),
                    ));
                }
                at = state.inodes.get(&at).map_or(ROOT_INO, |i| i.parent);
            }
        }
        let mut state = self.state();
        let old_dir = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)? != Some(child) {
            return Err(FsError::NotFound);
        }
        if let Some(Node::Dir { children, .. }) = state.inodes.get_mut(&parent).map(|i| &mut i.node)
        {
            children.remove(&name);
        }
        if let Some(Node::Dir { children, .. }) =
            state.inodes.get_mut(&new_parent).map(|i| &mut i.node)
        {
            children.insert(new_name.clone(), child);
        }
        if let Some(inode) = state.inodes.get_mut(&child) {
            inode.parent = new_parent;
            inode.name = new_name.clone();
        }
        self.relink(&mut state, child, false)?;
        self.set_pending(&mut state, &old_dir, &name, None, false)?;
        Ok(())
    }

    /// Links the file `ino` under a second name: the same cap (or, before its upload, the same spool version).
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> FsResult<Attr> {
        let new_name = check_name(new_name)?;
        self.refresh_dir(new_parent, false).await?;
        let mut state = self.state();
        let dir_cap = self.writeable_dir(&state, new_parent)?;
        if self.child_of(&state, new_parent, &new_name)?.is_some() {
            return Err(FsError::Exists);
        }
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let Node::File(file) = &inode.node else {
            return Err(FsError::NotPermitted(
                "only files can have more than one name",
            ));
        };
        let node = Node::File(FileNode {
            linked: file.linked.clone(),
            spool: file.spool.clone(),
            mtime_dirty: file.mtime_dirty,
            mutable_contents: file.mutable_contents.clone(),
        });
        let metadata = inode.metadata.clone();
        let target = file.linked.clone();
        let new = Self::insert_inode(&mut state, new_parent, &new_name, metadata.clone(), node);
        self.set_pending(
            &mut state,
            &dir_cap,
            &new_name,
            Some((target, metadata)),
            false,
        )?;
        self.attr_locked(&state, new)
    }

    /// Makes every journal change so far durable (`fsyncdir`).
    pub fn sync_journal(&self) -> FsResult<()> {
        Ok(self.inner.spool.sync_journal()?)
    }

    /// Space on the grid, asked of every server (at most every 30 seconds).
    pub async fn statfs(&self) -> FsResult<StatFs> {
        if let Some((at, figures)) = *lock(&self.inner.statfs)
            && at.elapsed() < Duration::from_secs(30)
        {
            return Ok(figures);
        }
        let grid = self.grid();
        let asks = grid.servers().iter().map(|server| {
            let storage = server.storage.clone();
            async move { tokio::time::timeout(Duration::from_secs(5), storage.version()).await }
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut available = 0u64;
        let mut answering = 0;
        for answer in answers.into_iter().flatten().flatten() {
            available = available.saturating_add(answer.available_space);
            answering += 1;
        }
        let params = self.inner.options.upload.params;
        let free = (available as u128 * u128::from(params.needed) / u128::from(params.total.max(1)))
            as u64;
        let figures = StatFs {
            free_bytes: free,
            total_bytes: free.saturating_add(self.inner.spool.usage().bytes()),
            servers_answering: answering,
        };
        *lock(&self.inner.statfs) = Some((Instant::now(), figures));
        Ok(figures)
    }

    /// Changes not yet on the grid.
    /// What has been asked of the grid so far.
    pub fn activity(&self) -> Activity {
        self.state().activity
    }

    pub fn pending(&self) -> Vec<PendingItem> {
        let state = self.state();
        let mut dirs: HashMap<String, String> = HashMap::new();
        for (&ino, inode) in &state.inodes {
            if let Node::Dir { cap, .. } = &inode.node {
                dirs.insert(dir_key(cap), self.path_of(&state, ino));
            }
        }
        state
            .pending
            .iter()
            .map(|((key, name), p)| {
                let path = match dirs.get(key) {
                    Some(dir) if dir.is_empty() => format!("/{name}"),
                    Some(dir) => format!("{dir}/{name}"),
                    None => format!("{name} (in directory {})", &key[..key.len().min(10)]),
                };
                let (state_text, bytes) = match &p.link {
                    None => ("unlink".to_owned(), 0),
                    Some((Target::Cap(_), _)) => ("link".to_owned(), 0),
                    Some((Target::Spool(s), _)) => {
                        let why = state.errors.uploads.get(&s.id).map(|(_, w)| w.clone());
                        let doing = if state.uploading.contains(&s.id) {
                            "uploading"
                        } else {
                            "waiting to upload"
                        };
                        (
                            why.map_or(doing.to_owned(), |w| {
                                format!("upload failed, will retry: {w}")
                            }),
                            s.size(),
                        )
                    }
                };
                let state_text = match state.errors.publishes.get(key) {
                    Some((_, why)) => format!("{state_text}; publish failed, will retry: {why}"),
                    None => state_text,
                };
                PendingItem {
                    path,
                    state: state_text,
                    bytes,
                }
            })
            .collect()
    }

    fn path_of(&self, state: &State, mut ino: u64) -> String {
        let mut parts = Vec::new();
        while ino != ROOT_INO {
            let Some(inode) = state.inodes.get(&ino) else {
                break;
            };
            parts.push(inode.name.clone());
            ino = inode.parent;
        }
        parts.reverse();
        if parts.is_empty() {
            String::new()
        } else {
            format!("/{}", parts.join("/"))
        }
    }

    /// Waits until every pending change is on the grid, calling `progress` with the number of changes and
    /// spooled bytes left whenever they change.
    pub async fn drain(&self, mut progress: impl FnMut(usize, u64)) {
        let mut events = self.inner.progress.subscribe();
        let mut last = None;
        loop {
            events.borrow_and_update();
            let (count, bytes) = {
                let state = self.state();
                let bytes = state
                    .pending
                    .values()
                    .filter_map(|p| match &p.link {
                        Some((Target::Spool(s), _)) => Some(s.size()),
                        _ => None,
                    })
                    .sum::<u64>();
                (state.pending.len(), bytes)
            };
            if last != Some((count, bytes)) {
                progress(count, bytes);
                last = Some((count, bytes));
            }
            if count == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), events.changed()).await;
        }
    }

    /// The newest reason an upload or directory publish failed, if any still stands.
    pub fn last_failure(&self) -> Option<String> {
        let state = self.state();
        state
            .errors
            .uploads
            .values()
            .chain(state.errors.publishes.values())
            .max_by_key(|(epoch, _)| *epoch)
            .map(|(_, why)| why.clone())
    }

    /// The number of changes waiting for the grid.
    pub fn pending_count(&self) -> usize {
        self.state().pending.len()
    }
}

/// What `setattr` changes.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The handle the change came through, if any (`ftruncate`).
    pub fh: Option<u64>,
}
