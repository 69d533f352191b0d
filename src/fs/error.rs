//! The filesystem's errors: each says what went wrong, keeps the error it came from (for the log and for callers
//! that ask), and maps to the errno the kernel gets.

use crate::dirnode::DirectoryError;
use crate::filenode::FileNodeError;
use crate::immutable::download::DownloadError;
use crate::mutable::MutableError;

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
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("too big: {0}")]
    TooBig(&'static str),
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("grid: {0}")]
    Grid(#[from] GridError),
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
            FsError::NoAttribute => libc::ENODATA,
            FsError::TooBig(_) => libc::ERANGE,
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

/// Why the grid could not do what an operation needed.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Mutable(#[from] MutableError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    File(#[from] FileNodeError),
    /// A background upload or publish failed; it is retried, and its own error is in the log.
    #[error("{what}: {why}")]
    Retrying { what: &'static str, why: String },
    #[error("shutting down")]
    ShuttingDown,
}

macro_rules! grid_error_from {
    ($($source:ty),*) => {$(
        impl From<$source> for FsError {
            fn from(e: $source) -> Self {
                FsError::Grid(GridError::from(e))
            }
        }
    )*};
}

grid_error_from!(DirectoryError, MutableError, DownloadError, FileNodeError);

pub type FsResult<T> = Result<T, FsError>;
