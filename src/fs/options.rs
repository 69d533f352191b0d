//! How a filesystem behaves: encodings, cache and spool sizes, delays, ownership and permissions.

use std::sync::Arc;
use std::time::Duration;

use crate::cap::Cap;
use crate::immutable::download::DownloadOptions;
use crate::immutable::upload::UploadOptions;
use crate::mutable::{MutableOptions, MutableParams};

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
