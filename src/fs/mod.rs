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
//!
//! The parts: `inodes` (the inode table: names, hard-link groups, link counts), `handles`, `listing` (the
//! directory cache), [`spool`] (local versions and the journal's storage), `pending` (the pending-change log,
//! which keeps the journal), `replay` (the journal at start), `upload` (the upload queue), `publish` (the
//! directory publishers), `failures` (what is being retried, for `status` and `fsync`), `durability` (what waits
//! for the grid: `fsync`, `status`, `unmount`), `xattr` (extended attributes), [`meta`] (what entry metadata
//! says), with the types in `types`, `options` and `error`. This file holds the operations that tie them together.

mod durability;
mod error;
mod failures;
mod handles;
mod inodes;
mod listing;
pub mod meta;
mod options;
mod pending;
mod publish;
mod replay;
pub mod spool;
mod types;
mod upload;
mod xattr;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use crate::cap::{Cap, FileCap};
use crate::dirnode::{DirectoryNode, Metadata, normalize_name};
use crate::filenode::{self, FileNodeOptions, FileNodes};
use crate::grid::client::Grid;
use crate::mutable::SeqnumFloors;
pub use error::{FsError, FsResult, GridError};
use failures::Failures;
use handles::{DirHandle, FileHandle, Handle, Handles};
use inodes::{FileState, Inode, InodeTable, Node, Target};
pub use options::FsOptions;
use pending::PendingLog;
use publish::Publishers;
use spool::{Spool, SpoolFile, journal_key};
pub use types::{Activity, Attr, Caller, DirEntry, Kind, Opened, PendingItem, SetAttr, StatFs};
use upload::Uploads;
pub use xattr::XattrMode;

pub const ROOT_INO: u64 = 1;
/// The read-only view of the grid service directory, at `/.grid`.
pub const GRID_INO: u64 = 2;
pub const GRID_DIR_NAME: &str = ".grid";
/// The longest name a directory entry may have through the mount (as most Linux filesystems).
pub const NAME_MAX: usize = 255;

/// Directories whose newest version seen the mount remembers (about 50 bytes each).
const ROLLBACK_MEMORY: usize = 100_000;

/// The current grid, which the grid service directory's poller may replace while mounted.
pub type GridSource = Arc<dyn Fn() -> Grid + Send + Sync>;
/// The announcements shown under `/.grid`: (petname, announcement JSON).
pub type AnnouncementSource = Arc<dyn Fn() -> Vec<(String, Vec<u8>)> + Send + Sync>;

struct State {
    inodes: InodeTable,
    handles: Handles,
    pending: PendingLog,
    uploads: Uploads,
    publishers: Publishers,
    failures: Failures,
    activity: Activity,
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
    /// Readers of recently read files, shared by every inode and handle reading one.
    files: FileNodes,
    file_options: FileNodeOptions,
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
        let replay::Replayed {
            pending,
            spools,
            seq,
            warnings,
        } = replay::replay(&spool)?;
        let root_inode = Inode::new(
            Metadata::new(),
            Node::Dir {
                cap: root,
                children: BTreeMap::new(),
                fetched: None,
            },
        );
        let grid_inode = announcements.is_some().then(|| {
            Inode::new(
                Metadata::new(),
                Node::GridDir {
                    children: BTreeMap::new(),
                },
            )
        });
        let inodes = InodeTable::new(root_inode, grid_inode);
        let reader_slots = (options.cache_bytes / options.download.cache_bytes.max(1)).max(1);
        let fs = Fs {
            inner: Arc::new(Inner {
                upload_slots: Semaphore::new(options.parallel_uploads.max(1)),
                urgent: tokio::sync::Notify::new(),
                files: FileNodes::new(reader_slots),
                file_options: FileNodeOptions {
                    download: options.download.clone(),
                    mutable: options.mutable.clone(),
                },
                options,
                grid,
                announcements,
                spool,
                state: Mutex::new(State {
                    inodes,
                    handles: Handles::default(),
                    pending: PendingLog::replayed(pending, seq),
                    uploads: Uploads::default(),
                    publishers: Publishers::default(),
                    failures: Failures::default(),
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
        for file in spools {
            fs.enqueue_upload(file, None);
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

    fn attr_locked(&self, state: &State, ino: u64) -> FsResult<Attr> {
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let options = &self.inner.options;
        let parent_writable = match state.inodes.get(&inode.parent()).map(|p| &p.node) {
            Some(Node::Dir { cap, .. }) => !cap.is_readonly(),
            _ => false,
        };
        let stored_mtime = meta::mtime(&inode.metadata).unwrap_or(self.inner.started);
        // A directory's entries changed here since its own entry was written: that is its mtime and ctime.
        let mtime = inode
            .contents_changed
            .map_or(stored_mtime, |t| t.max(stored_mtime));
        let ctime = meta::ctime(&inode.metadata)
            .or_else(|| {
                let link_time = inode.metadata.link_modification_time()?;
                Some(meta::from_nanos((link_time * 1e9) as i128))
            })
            .unwrap_or(mtime)
            .max(inode.contents_changed.unwrap_or(mtime));
        let stored_mode = meta::mode(&inode.metadata);
        let (uid, gid) = meta::owner(&inode.metadata);
        let mut attr = Attr {
            ino,
            kind: Kind::File,
            size: 0,
            atime: meta::atime(&inode.metadata).unwrap_or(mtime),
            mtime,
            ctime,
            perm: 0o644,
            nlink: match inode.names().len() as u32 {
                // Unlinked while open.
                0 => 0,
                known => known.max(meta::link_count(&inode.metadata).unwrap_or(0)),
            },
            uid: uid.unwrap_or(options.uid),
            gid: gid.unwrap_or(options.gid),
            rdev: 0,
            ttl: Duration::from_secs(1),
            entry_ttl: options.dir_ttl,
        };
        match &inode.node {
            Node::Dir { cap, children, .. } => {
                attr.kind = Kind::Directory;
                attr.nlink = state.inodes.directory_nlink(ino);
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
                    if let Some(special) = meta::special(&inode.metadata) {
                        attr.kind = Kind::Special(special);
                        attr.rdev = special.rdev();
                    }
                    attr.perm = stored_mode.unwrap_or(0o666 & !options.umask) as u16;
                    if !parent_writable || options.read_only {
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
                attr.nlink = state.inodes.directory_nlink(ino);
                attr.size = children.len() as u64;
                attr.entry_ttl = Duration::from_secs(1);
            }
            Node::GridFile { body } => {
                attr.size = body.len() as u64;
                attr.perm = 0o444;
                attr.entry_ttl = Duration::from_secs(1);
            }
        }
        Ok(attr)
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
                Some(Node::File(FileState {
                    linked: Target::Cap(Cap::File(FileCap::Mutable(cap))),
                    spool: None,
                    mutable_contents: None,
                    ..
                })) => *cap,
                _ => return Ok(()),
            }
        };
        let cap = FileCap::Mutable(cap);
        let opened = filenode::FileNode::open(self.grid(), &cap, &self.inner.file_options);
        let filenode::FileNode::Mutable(contents) = opened.await? else {
            return Ok(());
        };
        if let Some(Node::File(file)) = self.state().inodes.get_mut(&ino).map(|i| &mut i.node) {
            file.mutable_contents = Some(contents);
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

    fn child_of(&self, state: &State, parent: u64, name: &str) -> FsResult<Option<u64>> {
        if parent == ROOT_INO && name == GRID_DIR_NAME && state.inodes.contains_key(&GRID_INO) {
            return Ok(Some(GRID_INO));
        }
        let inode = state.inodes.get(&parent).ok_or(FsError::NotFound)?;
        let children = inode.node.children().ok_or(FsError::NotDir)?;
        Ok(children.get(name).copied())
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
        let parent = self.attr_locked(&state, inode.parent())?;
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
                ino: inode.parent(),
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
        let entries = Arc::new(entries);
        Ok(self
            .state()
            .handles
            .open(ino, Handle::Dir(DirHandle { entries })))
    }

    /// The entries of an open directory from `offset` on.
    pub fn readdir(&self, fh: u64, offset: usize) -> FsResult<Vec<(DirEntry, Option<Attr>)>> {
        let state = self.state();
        let entries = state.handles.dir(fh)?.entries.clone();
        Ok(entries
            .iter()
            .skip(offset)
            .map(|e| (e.clone(), self.attr_locked(&state, e.ino).ok()))
            .collect())
    }

    pub fn release(&self, fh: u64) {
        let mut state = self.state();
        let Some(ino) = state.handles.close(fh) else {
            return;
        };
        // The last close: a local copy of what is on the grid goes now (see `uploaded`).
        if let Some(Inode {
            node: Node::File(file),
            ..
        }) = state.inodes.get_mut(&ino)
            && matches!(&file.linked, Target::Cap(_))
            && file.spool.as_ref().is_some_and(|s| s.is_sealed())
        {
            file.spool = None;
        }
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
        self.record_change(state, dir_cap, name, link, None, durable)
    }

    /// Records a pending change as [`Fs::set_pending`] does; `removed` is the directory the change takes away from
    /// the name, if it does. What an earlier pending change of the name removed stays removed.
    fn record_change(
        &self,
        state: &mut State,
        dir_cap: &Cap,
        name: &str,
        link: Option<(Target, Metadata)>,
        removed: Option<Cap>,
        durable: bool,
    ) -> FsResult<u64> {
        let (seq, _) =
            state
                .pending
                .record(&self.inner.spool, dir_cap, name, link, removed, durable)?;
        self.kick_publisher(state, &dir_key(dir_cap));
        Ok(seq)
    }

    /// The (directory cap, name) of each name an inode has: none for the root, the grid's view and files unlinked
    /// while open.
    fn links_of(&self, state: &State, ino: u64) -> Vec<(Cap, String)> {
        if ino == ROOT_INO {
            return Vec::new();
        }
        let Some(inode) = state.inodes.get(&ino) else {
            return Vec::new();
        };
        inode
            .names()
            .iter()
            .filter_map(|(dir, name)| match state.inodes.get(dir).map(|d| &d.node) {
                Some(Node::Dir { cap, .. }) => Some((cap.clone(), name.clone())),
                _ => None,
            })
            .collect()
    }

    /// What an inode links under its names now.
    fn target_of(inode: &Inode) -> Option<Target> {
        match &inode.node {
            Node::Dir { cap, .. } => Some(Target::Cap(cap.clone())),
            Node::File(file) => Some(file.linked.clone()),
            _ => None,
        }
    }

    /// Journals every name of an inode as it is now (after a metadata change, a rename, a seal). Returns the
    /// newest journal sequence number, or none if the inode has no name.
    fn relink(&self, state: &mut State, ino: u64, durable: bool) -> FsResult<Option<u64>> {
        let links = self.links_of(state, ino);
        let inode = state.inodes.get(&ino).ok_or(FsError::NotFound)?;
        let Some(target) = Self::target_of(inode) else {
            return Ok(None);
        };
        let metadata = inode.metadata.clone();
        let mut newest = None;
        for (dir_cap, name) in links {
            let link = Some((target.clone(), metadata.clone()));
            newest = Some(self.set_pending(state, &dir_cap, &name, link, durable)?);
        }
        Ok(newest)
    }

    /// Adds a new inode named `name` in directory `parent`; the directory's entries changed now.
    fn insert_inode(
        state: &mut State,
        parent: u64,
        name: &str,
        metadata: Metadata,
        node: Node,
    ) -> u64 {
        let ino = state.inodes.add(Inode::new(metadata, node));
        state.inodes.attach(parent, name, ino);
        Self::contents_changed(state, parent);
        ino
    }

    /// Records in a hard-linked file's metadata how many names it has.
    fn count_links(state: &mut State, ino: u64) {
        if let Some(inode) = state.inodes.get_mut(&ino)
            && meta::link_group(&inode.metadata).is_some()
        {
            let count = inode.names().len() as u32;
            meta::set_link_count(&mut inode.metadata, count);
        }
    }

    /// A hard-linked file lost a name: the names it keeps are written again with the new count.
    fn names_lost(&self, state: &mut State, ino: u64) -> FsResult<()> {
        let grouped = state
            .inodes
            .get(&ino)
            .is_some_and(|i| meta::link_group(&i.metadata).is_some() && !i.names().is_empty());
        if grouped {
            Self::count_links(state, ino);
            self.relink(state, ino, false)?;
        }
        Ok(())
    }

    /// An inode's names or attributes changed now: its ctime.
    fn attributes_changed(state: &mut State, ino: u64) {
        if let Some(inode) = state.inodes.get_mut(&ino) {
            meta::set_ctime(&mut inode.metadata, SystemTime::now());
        }
    }

    /// Marks a directory's entries changed now: its mtime and ctime.
    fn contents_changed(state: &mut State, dir: u64) {
        if let Some(inode) = state.inodes.get_mut(&dir) {
            inode.contents_changed = Some(SystemTime::now());
        }
    }

    /// The metadata of a new entry made by `caller` in directory `parent`: now as its times, `mode`, and the caller
    /// as owner (stored only when not the mount's owner). In a set-group-ID directory the group is the directory's,
    /// and a new directory inherits the bit, as on Linux.
    fn new_metadata(&self, state: &State, parent: u64, mode: u32, caller: Caller) -> Metadata {
        let options = &self.inner.options;
        let mut mode = mode & 0o7777;
        let mut gid = caller.gid;
        if let Some(dir) = state.inodes.get(&parent)
            && meta::mode(&dir.metadata).is_some_and(|m| m & libc::S_ISGID != 0)
        {
            gid = meta::owner(&dir.metadata).1.unwrap_or(options.gid);
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        let now = SystemTime::now();
        let mut metadata = Metadata::new();
        meta::set_mtime(&mut metadata, now);
        meta::set_ctime(&mut metadata, now);
        meta::set_mode(&mut metadata, mode);
        meta::set_owner(
            &mut metadata,
            (caller.uid != options.uid).then_some(caller.uid),
            (gid != options.gid).then_some(gid),
        );
        metadata
    }

    /// Creates and opens a new file (or opens the existing one, unless `exclusive`).
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: i32,
        caller: Caller,
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
        let metadata = self.new_metadata(&state, parent, mode, caller);
        let mut node = FileState::new(
            Target::Cap(Cap::File(FileCap::Literal(Vec::new()))),
            Some(file),
        );
        node.mtime_dirty = true;
        let ino = Self::insert_inode(
            &mut state,
            parent,
            &name,
            metadata.clone(),
            Node::File(node),
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
        let fh = state.handles.open(
            ino,
            Handle::File(FileHandle {
                ino,
                write: true,
                append: flags & libc::O_APPEND != 0,
                wrote: true,
            }),
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
                if let Some(parent) = state.inodes.get(&inode.parent())
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
        let fh = state.handles.open(
            ino,
            Handle::File(FileHandle {
                ino,
                write,
                append: flags & libc::O_APPEND != 0,
                wrote: truncate,
            }),
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
            Target::Spool(old) => fresh.copy_from(&old, keep)?,
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
            Cap::File(file @ FileCap::Mutable(_)) => {
                Ok(
                    filenode::FileNode::open(self.grid(), file, &self.inner.file_options)
                        .await?
                        .size(),
                )
            }
            Cap::File(f) => Ok(f.size().unwrap_or(0)),
            _ => Ok(0),
        }
    }

    /// Reads from a file's cap through the shared file nodes; a mutable file's contents are read once per inode.
    async fn read_cap(&self, ino: u64, cap: &Cap, offset: u64, size: u32) -> FsResult<Bytes> {
        let Cap::File(file_cap) = cap else {
            return Ok(Bytes::new());
        };
        let node = match file_cap {
            FileCap::Mutable(_) => {
                self.load_mutable_size(ino).await?;
                let state = self.state();
                match state.inodes.get(&ino).map(|i| &i.node) {
                    Some(Node::File(FileState {
                        mutable_contents: Some(c),
                        ..
                    })) => filenode::FileNode::Mutable(c.clone()),
                    _ => return Ok(Bytes::new()),
                }
            }
            _ => {
                let opened = self
                    .inner
                    .files
                    .open(self.grid(), file_cap, &self.inner.file_options)
                    .await;
                match opened {
                    Ok(node) => node,
                    Err(e) => {
                        self.report_damage(cap);
                        return Err(e.into());
                    }
                }
            }
        };
        let data = node.read(offset, u64::from(size)).await;
        if data.is_err() || node.take_damage_report() {
            self.report_damage(cap);
        }
        Ok(data?)
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

    /// Reads up to `size` bytes at `offset`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        self.note_io();
        let (ino, source) = {
            let state = self.state();
            let ino = state.handles.file(fh)?.ino;
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

    /// Waits until the spool has room for `bytes` more, or says it never will: within the spool's limit (else
    /// EDQUOT), and leaving the disk under it some free space (else ENOSPC, before the disk is full).
    async fn reserve_spool(&self, bytes: u64) -> FsResult<()> {
        let mut progress = self.inner.progress.subscribe();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let Err(refusal) = self.spool_has_room(bytes) else {
                return Ok(());
            };
            self.evict_clean_spools();
            if self.spool_has_room(bytes).is_ok() {
                return Ok(());
            }
            let waiting = self.state().uploads.count() > 0;
            if !waiting || Instant::now() > deadline {
                return Err(refusal);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), progress.changed()).await;
        }
    }

    fn spool_has_room(&self, bytes: u64) -> FsResult<()> {
        let limit = self.inner.options.spool_bytes;
        let used = self.inner.spool.usage().bytes();
        if used.saturating_add(bytes) > limit {
            return Err(FsError::NoSpace(format!(
                "{used} bytes are spooled, the limit is {limit}, and no upload under way would free any"
            )));
        }
        if let Some((free, total)) = self.inner.spool.disk_space() {
            let keep = (total / 100).clamp(1 << 20, 1 << 30);
            if free.saturating_sub(bytes) < keep {
                return Err(FsError::Local(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "No space left for the spool: its disk has {free} bytes free, and {keep} are kept free \
                         (no upload under way would free any)"
                    ),
                )));
            }
        }
        Ok(())
    }

    /// Drops local copies of files that are on the grid (open handles keep theirs until they close).
    fn evict_clean_spools(&self) {
        let mut state = self.state();
        for (_, inode) in state.inodes.iter_mut() {
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
            let handle = state.handles.file(fh)?;
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
        if let Ok(handle) = state.handles.file_mut(fh) {
            handle.wrote = true;
        }
        Self::file_written(&mut state, ino);
        Ok(data.len() as u32)
    }

    /// A file's contents changed now: its mtime and ctime show it at once, and its seal stamps them again.
    fn file_written(state: &mut State, ino: u64) {
        if let Some(inode) = state.inodes.get_mut(&ino)
            && let Node::File(file) = &mut inode.node
        {
            file.mtime_dirty = true;
            let now = SystemTime::now();
            meta::set_mtime(&mut inode.metadata, now);
            meta::set_ctime(&mut inode.metadata, now);
        }
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
            let now = SystemTime::now();
            meta::set_mtime(&mut inode.metadata, now);
            meta::set_ctime(&mut inode.metadata, now);
            file.mtime_dirty = false;
        }
        file.replace_linked(Target::Spool(spool.clone()));
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
            let after = match previous {
                Target::Spool(older) => Some(older.id.clone()),
                Target::Cap(_) => None,
            };
            self.enqueue_upload(spool, after);
        }
        Ok(seq)
    }

    /// `close` of one descriptor: what was written through it is sealed and journaled.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let ino = {
            let mut state = self.state();
            let handle = state.handles.file_mut(fh)?;
            if !handle.wrote {
                return Ok(());
            }
            handle.wrote = false;
            handle.ino
        };
        self.seal(ino).map(|_| ())
    }

    /// Sets what `setattr` may set: size (truncate), times, permission bits, owner and group. Who may change what
    /// is the kernel's to check (`default_permissions`).
    pub async fn setattr(&self, ino: u64, change: SetAttr) -> FsResult<Attr> {
        let changes_metadata = change.mtime.is_some()
            || change.atime.is_some()
            || change.mode.is_some()
            || change.uid.is_some()
            || change.gid.is_some();
        if changes_metadata || change.size.is_some() {
            self.check_changeable(&self.state(), ino)?;
        }
        if let Some(size) = change.size {
            // Truncating to the size it has starts no new version, but is a change (its times move).
            if self.getattr(ino).await?.size != size {
                self.writable_spool(ino, Some(size)).await?;
            }
            let mut state = self.state();
            Self::file_written(&mut state, ino);
            match change.fh.and_then(|fh| state.handles.file_mut(fh).ok()) {
                Some(handle) => handle.wrote = true,
                None => {
                    drop(state);
                    // truncate(2) by path: no close follows, so this is the close.
                    self.seal(ino)?;
                }
            }
        }
        if changes_metadata {
            let mut state = self.state();
            let inode = state.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
            let metadata = &mut inode.metadata;
            if let Some(mtime) = change.mtime {
                meta::set_mtime(metadata, mtime);
                inode.contents_changed = None;
                if let Node::File(file) = &mut inode.node {
                    file.mtime_dirty = false;
                }
            }
            if let Some(atime) = change.atime {
                meta::set_atime(metadata, atime);
            }
            if let Some(mode) = change.mode {
                meta::set_mode(metadata, mode);
            }
            meta::set_owner(metadata, change.uid, change.gid);
            meta::set_ctime(metadata, SystemTime::now());
            self.relink(&mut state, ino, false)?;
        }
        self.getattr(ino).await
    }

    /// Whether the inode's entry may be changed here: not on a read-only mount, in `/.grid`, for a child this
    /// version cannot show, or in a directory it has only a readcap of.
    fn check_changeable(&self, state: &State, ino: u64) -> FsResult<()> {
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
            && let Ok(parent_cap) = self.dir_cap(state, inode.parent())
            && parent_cap.is_readonly()
        {
            return Err(FsError::ReadOnly("in a read-only directory"));
        }
        Ok(())
    }

    /// Makes a directory: a new Tahoe directory on the grid, linked into its parent with the next publish.
    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
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
        let metadata = self.new_metadata(&state, parent, mode | libc::S_IFDIR, caller);
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
    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> FsResult<Attr> {
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
            let mut metadata = self.new_metadata(&state, parent, 0o777, caller);
            meta::set_symlink_target(&mut metadata, target);
            let node = FileState::new(
                Target::Cap(Cap::File(FileCap::Literal(Vec::new()))),
                Some(file),
            );
            Self::insert_inode(&mut state, parent, &name, metadata, Node::File(node))
        };
        self.seal(ino)?;
        self.getattr(ino).await
    }

    /// Makes a FIFO, socket, device node (an empty file whose entry says what it stands for: the kernel, not this
    /// mount, opens what it names) or an empty regular file.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> FsResult<Attr> {
        let special = meta::Special::from_mode(mode, rdev);
        if special.is_none() && mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(FsError::Invalid(format!(
                "mknod of file type {:o}",
                mode & libc::S_IFMT
            )));
        }
        let name = check_name(name)?;
        self.refresh_dir(parent, false).await?;
        let mut state = self.state();
        let dir_cap = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut metadata = self.new_metadata(&state, parent, mode, caller);
        if let Some(special) = special {
            meta::set_special(&mut metadata, special);
        }
        let empty = Target::Cap(Cap::File(FileCap::Literal(Vec::new())));
        let node = Node::File(FileState::new(empty.clone(), None));
        let ino = Self::insert_inode(&mut state, parent, &name, metadata.clone(), node);
        self.set_pending(&mut state, &dir_cap, &name, Some((empty, metadata)), false)?;
        self.attr_locked(&state, ino)
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
        let removed_dir = match state.inodes.get(&child).map(|i| &i.node) {
            Some(Node::Dir { cap, .. }) => Some(cap.clone()),
            _ => None,
        };
        tracing::debug!(
            name,
            directory = removed_dir.as_ref().map(|c| dir_key(c)[..8].to_owned()),
            "removing"
        );
        state.inodes.detach(parent, &name);
        Self::contents_changed(&mut state, parent);
        Self::attributes_changed(&mut state, child);
        self.record_change(&mut state, &dir_cap, &name, None, removed_dir, false)?;
        self.names_lost(&mut state, child)?;
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
                at = state.inodes.get(&at).map_or(ROOT_INO, |i| i.parent());
            }
        }
        let mut state = self.state();
        let old_dir = self.writeable_dir(&state, parent)?;
        if self.child_of(&state, parent, &name)? != Some(child) {
            return Err(FsError::NotFound);
        }
        state.inodes.detach(parent, &name);
        state.inodes.attach(new_parent, &new_name, child);
        Self::contents_changed(&mut state, parent);
        Self::contents_changed(&mut state, new_parent);
        Self::attributes_changed(&mut state, child);
        self.relink(&mut state, child, false)?;
        if let Some(old) = replaced {
            Self::attributes_changed(&mut state, old);
            self.names_lost(&mut state, old)?;
        }
        // A directory moved away is removed from its old name, as an rmdir would: if a file takes the name before
        // the move is published, the directory the grid still shows there is ours to replace.
        let moved_dir = match state.inodes.get(&child).map(|i| &i.node) {
            Some(Node::Dir { cap, .. }) => Some(cap.clone()),
            _ => None,
        };
        self.record_change(&mut state, &old_dir, &name, None, moved_dir, false)?;
        Ok(())
    }

    /// Gives the file `ino` another name: the same inode, whose every name links what it links (and, once its
    /// open version is closed, that). Its entries carry a hard-link group, so that a later run sees one file too.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> FsResult<Attr> {
        let new_name = check_name(new_name)?;
        self.refresh_dir(new_parent, false).await?;
        let mut state = self.state();
        self.writeable_dir(&state, new_parent)?;
        if self.child_of(&state, new_parent, &new_name)?.is_some() {
            return Err(FsError::Exists);
        }
        let inode = state.inodes.get_mut(&ino).ok_or(FsError::NotFound)?;
        if !matches!(inode.node, Node::File(_)) {
            return Err(FsError::NotPermitted(
                "only files can have more than one name",
            ));
        }
        let group = match meta::link_group(&inode.metadata) {
            Some(group) => group.to_owned(),
            None => {
                let mut id = [0u8; 8];
                getrandom::fill(&mut id)
                    .map_err(|e| FsError::Local(std::io::Error::other(e.to_string())))?;
                let group = data_encoding::HEXLOWER.encode(&id);
                meta::set_link_group(&mut inode.metadata, &group);
                group
            }
        };
        meta::set_ctime(&mut inode.metadata, SystemTime::now());
        state.inodes.set_group(&group, ino);
        state.inodes.attach(new_parent, &new_name, ino);
        Self::count_links(&mut state, ino);
        Self::contents_changed(&mut state, new_parent);
        // Every name, the old ones too: they now carry the group.
        self.relink(&mut state, ino, false)?;
        self.attr_locked(&state, ino)
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

    /// The kernel was given inode `ino` (a lookup, a creation, a readdirplus entry): it stays until forgotten.
    pub fn remember(&self, ino: u64) {
        self.remember_all(&[ino]);
    }

    /// [`Fs::remember`] for each of `inos`.
    pub fn remember_all(&self, inos: &[u64]) {
        let mut state = self.state();
        for &ino in inos {
            state.inodes.remember(ino);
        }
    }

    /// The kernel forgot inode `ino` `count` times; once it holds it no more, what only it needed goes.
    pub fn forget(&self, ino: u64, count: u64) {
        let mut state = self.state();
        let state = &mut *state;
        if state.inodes.forget(ino, count) {
            state.inodes.evict(ino, |i| state.handles.is_open(i));
        }
    }

    /// The inodes held in memory.
    pub fn inode_count(&self) -> usize {
        self.state().inodes.len()
    }
}
