//! A filesystem (`tahoe_mount::fs::Fs`) over an in-memory grid of five servers, for the tests of `src/fs` without
//! FUSE: the world (servers, grid, root directory, spool directory), mounting it (again, as after a restart), and
//! reading and writing files through it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::memory::TestServer;
use tahoe_mount::cap::{Cap, FileCap, MutableFormat};
use tahoe_mount::config::Secret;
use tahoe_mount::dirnode::{Child, Directory, DirectoryNode};
use tahoe_mount::fs::{Caller, Fs, FsError, FsOptions, ROOT_INO};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::immutable::download::{ChkReader, DownloadOptions};
use tahoe_mount::immutable::params::EncodingParams;
use tahoe_mount::immutable::upload::UploadOptions;
use tahoe_mount::mutable::{MutableOptions, MutableParams};

use super::memory;

/// The mount's own user (the options' owner), creating entries.
pub const ME: Caller = Caller { uid: 0, gid: 0 };

pub fn options() -> FsOptions {
    let mut upload = UploadOptions::new(Secret::new(vec![7; 32]), Secret::new(vec![9; 32]));
    upload.params = EncodingParams {
        needed: 2,
        happy: 3,
        total: 4,
        max_segment_size: 4096,
    };
    upload.threads = 1;
    let mut options = FsOptions::new(upload, MutableOptions::new(vec![9; 32]));
    options.directory_params = MutableParams {
        format: MutableFormat::Sdmf,
        needed: 2,
        happy: 3,
        total: 4,
    };
    options.publish_delay = Duration::from_millis(5);
    options.download = DownloadOptions {
        cache_bytes: 64 << 10,
        ..DownloadOptions::default()
    };
    options
}

pub struct World {
    pub servers: Vec<Arc<TestServer>>,
    pub grid: Grid,
    pub root: Cap,
    pub dir: PathBuf,
}

pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tahoe-mount-fs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl World {
    pub async fn new(tag: &str) -> World {
        let servers = memory::servers(5);
        let grid = memory::grid_of(&servers);
        let root = DirectoryNode::create(
            grid.clone(),
            &Directory::new(),
            options().directory_params,
            options().mutable,
        )
        .await
        .unwrap()
        .cap()
        .clone();
        World {
            servers,
            grid,
            root,
            dir: tempdir(tag),
        }
    }

    pub fn mount(&self, spool: &str) -> Fs {
        self.mount_with(spool, options())
    }

    pub fn mount_with(&self, spool: &str, options: FsOptions) -> Fs {
        let grid = self.grid.clone();
        let (fs, warnings) = Fs::new(
            self.root.clone(),
            Arc::new(move || grid.clone()),
            None,
            &self.dir.join(spool),
            options,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        fs
    }

    /// The directory at `path` as the grid has it (not as any Fs caches it).
    pub async fn grid_listing(&self, path: &[&str]) -> Directory {
        let node =
            DirectoryNode::open(self.grid.clone(), self.root.clone(), options().mutable).unwrap();
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        node.descend(&path)
            .await
            .unwrap()
            .list()
            .await
            .unwrap()
            .directory
    }

    pub async fn grid_file(&self, path: &[&str]) -> Vec<u8> {
        let (last, dirs) = path.split_last().unwrap();
        let listing = self.grid_listing(dirs).await;
        let entry = listing
            .get(last)
            .unwrap_or_else(|| panic!("{path:?} is not on the grid"));
        match &entry.child {
            Child::Known(Cap::File(FileCap::Literal(data))) => data.clone(),
            Child::Known(Cap::File(FileCap::Chk(chk))) => {
                let reader = ChkReader::open(self.grid.clone(), *chk, DownloadOptions::default())
                    .await
                    .unwrap();
                reader.read(0, chk.size).await.unwrap().to_vec()
            }
            other => panic!("{path:?} is {other:?}"),
        }
    }
}

pub async fn ino_of(fs: &Fs, path: &[&str]) -> Result<u64, FsError> {
    let mut ino = ROOT_INO;
    for name in path {
        ino = fs.lookup(ino, name).await?.ino;
    }
    Ok(ino)
}

pub async fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, opened) = fs
        .create(parent, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap_or_else(|e| panic!("create {name:?} in inode {parent}: {e:?}"));
    for (i, chunk) in data.chunks(5000).enumerate() {
        fs.write(opened.fh, (i * 5000) as u64, chunk).await.unwrap();
    }
    fs.flush(opened.fh).unwrap();
    fs.release(opened.fh);
    attr.ino
}

pub async fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let opened = fs.open(ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(opened.fh, out.len() as u64, 7000).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(opened.fh);
    out
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
