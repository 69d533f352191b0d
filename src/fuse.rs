//! The FUSE adapter: fuser's callbacks translated to [`crate::fs::Fs`]. It owns no state and never waits on the
//! network: every request that may reach the grid is handed, with its reply, to a tokio task, so the FUSE threads
//! go straight back to the kernel for the next request.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::meta::Special;
use crate::fs::{Attr, Caller, Fs, FsError, Kind, NAME_MAX, SetAttr, XattrMode};

/// The kernel is told to send writes of up to this many bytes at once.
const MAX_WRITE: u32 = 1 << 20;
/// Block size reported by `stat`: large, so that tools such as `cp` move data in large pieces.
const BLOCK_SIZE: u32 = 1 << 20;

pub struct FuseAdapter {
    fs: Fs,
    runtime: tokio::runtime::Handle,
}

impl FuseAdapter {
    pub fn new(fs: Fs, runtime: tokio::runtime::Handle) -> FuseAdapter {
        FuseAdapter { fs, runtime }
    }

    /// Runs `work`, the request `op`, on the runtime with a clone of the filesystem, in a span naming the request
    /// (so that what it logs says which request it served).
    fn spawn<F, Fut>(&self, op: &'static str, work: F)
    where
        F: FnOnce(Fs) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let fs = self.fs.clone();
        let span = tracing::info_span!("fuse", op);
        self.runtime
            .spawn(tracing::Instrument::instrument(work(fs), span));
    }
}

/// The errno for `e`. The application sees only the number, so failures of the grid or the local disk are also
/// written to the log with their cause (other errors are the application's own business: ENOENT, EEXIST, ...).
fn errno(e: &FsError) -> Errno {
    if matches!(e, FsError::Grid(_) | FsError::Local(_)) {
        tracing::warn!("tahoe-mount: a request failed with {}: {e}", e.errno());
    }
    Errno::from_i32(e.errno())
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.ctime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        // The kernel's dev_t is 32 bits here (fuser's attr), as Linux encodes it for new_encode_dev.
        rdev: attr.rdev as u32,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Special(Special::Fifo) => FileType::NamedPipe,
        Kind::Special(Special::Socket) => FileType::Socket,
        Kind::Special(Special::Char(_)) => FileType::CharDevice,
        Kind::Special(Special::Block(_)) => FileType::BlockDevice,
    }
}

/// Who asks, as `fs` wants it for the owner of a new entry.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// A name from the kernel: Tahoe names are Unicode, so other bytes are refused.
fn name_of(name: &OsStr) -> Result<String, Errno> {
    name.to_str().map(str::to_owned).ok_or(Errno::EINVAL)
}

fn time_of(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Replies with an entry, which the kernel then holds until it forgets it (counted by `fs`).
fn reply_entry(fs: &Fs, reply: ReplyEntry, result: Result<Attr, FsError>) {
    match result {
        Ok(attr) => {
            fs.remember(attr.ino);
            reply.entry_with_ttls(&attr.ttl, &attr.entry_ttl, &file_attr(&attr), Generation(0))
        }
        Err(e) => reply.error(errno(&e)),
    }
}

/// Answers a `getxattr`/`listxattr`: the size alone when asked with size 0, ERANGE when `value` does not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Optional capabilities: a kernel without one simply does without.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("lookup", move |fs| async move {
            reply_entry(&fs, reply, fs.lookup(parent.0, &name).await)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn("getattr", move |fs| async move {
            match fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&attr.ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            size,
            atime: atime.map(time_of),
            mtime: mtime.map(time_of),
            mode,
            uid,
            gid,
            fh: fh.map(|f| f.0),
        };
        self.spawn("setattr", move |fs| async move {
            match fs.setattr(ino.0, change).await {
                Ok(attr) => reply.attr(&attr.ttl, &file_attr(&attr)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENODATA);
        };
        match self.fs.getxattr(ino.0, name) {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(reply, size, &list)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Either
        };
        let (name, value) = (name.to_owned(), value.to_vec());
        // It journals the entry: local disk, not for the FUSE thread to wait on.
        self.spawn("setxattr", move |fs| async move {
            reply_empty(reply, fs.setxattr(ino.0, &name, Some(&value), mode))
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENODATA);
        };
        let name = name.to_owned();
        self.spawn("removexattr", move |fs| async move {
            reply_empty(reply, fs.setxattr(ino.0, &name, None, XattrMode::Either))
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        self.spawn("mkdir", move |fs| async move {
            reply_entry(
                &fs,
                reply,
                fs.mkdir(parent.0, &name, mode & !umask, caller).await,
            )
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let mode = mode & !(umask & 0o7777);
        self.spawn("mknod", move |fs| async move {
            let made = fs.mknod(parent.0, &name, mode, u64::from(rdev), caller);
            reply_entry(&fs, reply, made.await)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("unlink", move |fs| async move {
            reply_empty(reply, fs.unlink(parent.0, &name).await)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("rmdir", move |fs| async move {
            reply_empty(reply, fs.rmdir(parent.0, &name).await)
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (name_of(link_name), target.to_str()) {
            (Ok(name), Some(target)) => (name, target.to_owned()),
            _ => return reply.error(Errno::EINVAL),
        };
        let caller = caller(req);
        self.spawn("symlink", move |fs| async move {
            reply_entry(
                &fs,
                reply,
                fs.symlink(parent.0, &name, &target, caller).await,
            )
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.spawn("rename", move |fs| async move {
            reply_empty(
                reply,
                fs.rename(parent.0, &name, newparent.0, &newname, no_replace)
                    .await,
            )
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = match name_of(newname) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("link", move |fs| async move {
            reply_entry(&fs, reply, fs.link(ino.0, newparent.0, &name).await)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("open", move |fs| async move {
            match fs.open(ino.0, flags.0).await {
                Ok(opened) => reply.opened(FileHandle(opened.fh), fopen_flags(opened.keep_cache)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", move |fs| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", move |fs| async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Sealing fsyncs the spool file: local disk, but not instant, so off the FUSE thread too.
        self.spawn("flush", move |fs| async move {
            reply_empty(reply, tokio::task::block_in_place(|| fs.flush(fh.0)))
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", move |fs| async move {
            let result = tokio::task::block_in_place(|| fs.flush(fh.0));
            fs.release(fh.0);
            reply_empty(reply, result)
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsync", move |fs| async move {
            reply_empty(reply, fs.fsync(fh.0).await)
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("opendir", move |fs| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset as usize) {
            Ok(entries) => {
                for (i, (entry, _)) in entries.iter().enumerate() {
                    let next = offset + i as u64 + 1;
                    if reply.add(INodeNo(entry.ino), next, file_type(entry.kind), &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(fh.0, offset as usize) {
            Ok(entries) => {
                let mut given = Vec::with_capacity(entries.len());
                for (i, (entry, attr)) in entries.iter().enumerate() {
                    let next = offset + i as u64 + 1;
                    let full = match attr {
                        // `.` and `..` are not looked up by the kernel: they go without attributes.
                        Some(attr) if entry.name != "." && entry.name != ".." => reply.add(
                            INodeNo(entry.ino),
                            next,
                            &entry.name,
                            &attr.ttl.min(attr.entry_ttl),
                            &file_attr(attr),
                            Generation(0),
                        ),
                        _ => reply.add(
                            INodeNo(entry.ino),
                            next,
                            &entry.name,
                            &Duration::ZERO,
                            &FileAttr {
                                ino: INodeNo(entry.ino),
                                ..file_attr(&placeholder(entry.ino, entry.kind))
                            },
                            Generation(0),
                        ),
                    };
                    if full {
                        break;
                    }
                    if entry.name != "." && entry.name != ".." {
                        given.push(entry.ino);
                    }
                }
                // The kernel holds every entry sent but `.` and `..` as if looked up: counted under one lock.
                self.fs.remember_all(&given);
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsyncdir", move |fs| async move {
            reply_empty(reply, tokio::task::block_in_place(|| fs.sync_journal()))
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn("statfs", move |fs| async move {
            match fs.statfs().await {
                Ok(s) => {
                    let block = 4096u64;
                    reply.statfs(
                        s.total_bytes / block,
                        s.free_bytes / block,
                        s.free_bytes / block,
                        u64::from(u32::MAX),
                        u64::from(u32::MAX),
                        block as u32,
                        NAME_MAX as u32,
                        block as u32,
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        self.spawn("create", move |fs| async move {
            match fs
                .create(parent.0, &name, mode & !umask, flags, caller)
                .await
            {
                Ok((attr, opened)) => {
                    fs.remember(attr.ino);
                    reply.created(
                        &attr.ttl.min(attr.entry_ttl),
                        &file_attr(&attr),
                        Generation(0),
                        FileHandle(opened.fh),
                        fopen_flags(opened.keep_cache),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

fn fopen_flags(keep_cache: bool) -> FopenFlags {
    if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

fn placeholder(ino: u64, kind: Kind) -> Attr {
    Attr {
        ino,
        kind,
        size: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        rdev: 0,
        perm: 0o755,
        nlink: 1,
        uid: 0,
        gid: 0,
        ttl: Duration::ZERO,
        entry_ttl: Duration::ZERO,
    }
}
