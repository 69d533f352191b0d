//! Reading immutable directories from their caps: a `URI:DIR2-LIT` holds its packed contents in the cap itself, a
//! `URI:DIR2-CHK` names a CHK file that holds them.

use super::MAX_DIRECTORY_BYTES;
use super::pack::{Access, UnpackError, Unpacked, unpack};
use crate::cap::{Cap, FileCap};
use crate::grid::client::Grid;
use crate::immutable::download::{ChkReader, DownloadError, DownloadOptions};
use thiserror::Error;

/// Why an immutable directory could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("not an immutable directory cap (URI:DIR2-LIT or URI:DIR2-CHK)")]
    NotImmutableDirectory,
    #[error("immutable directory is {size} bytes, more than the {limit} accepted")]
    TooLarge { size: u64, limit: usize },
    #[error("reading the immutable directory's file: {0}")]
    Download(#[from] DownloadError),
    #[error("immutable directory contents: {0}")]
    Format(#[from] UnpackError),
}

/// Reads and unpacks the immutable directory `cap` names (a literal one without touching the grid).
pub async fn read_immutable_directory(grid: &Grid, cap: &Cap) -> Result<Unpacked, ReadError> {
    let contents = match cap {
        Cap::Directory(FileCap::Literal(contents)) => contents.clone(),
        Cap::Directory(FileCap::Chk(chk)) => {
            // The size is in the cap, which the reader verifies: refuse before fetching anything.
            if chk.size > MAX_DIRECTORY_BYTES as u64 {
                return Err(ReadError::TooLarge {
                    size: chk.size,
                    limit: MAX_DIRECTORY_BYTES,
                });
            }
            let reader = ChkReader::open(grid.clone(), *chk, DownloadOptions::default()).await?;
            reader.read(0, chk.size).await?.to_vec()
        }
        _ => return Err(ReadError::NotImmutableDirectory),
    };
    Ok(unpack(&contents, &Access::Immutable)?)
}
