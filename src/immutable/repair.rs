//! Repairing a CHK file (`allmydata/immutable/repairer.py`): read it (every segment verified), encode it again
//! with the cap's key and the file's own geometry, and upload only what is missing. Encoding is deterministic, so
//! the shares made again are the very shares that were lost; the uploader checks that their URI extension block
//! hashes to the cap before it closes any of them.
//!
//! Placement is the upload's: servers-of-happiness over the grid's current servers, counting every share that is
//! already held (found by the check, which asks every server), so good shares stay where they are and missing ones
//! go where they add the most. Shares crowded on a few servers are copied onto others until happiness holds.

use std::fs::File;
use std::io::Seek;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use super::download::{ChkReader, DownloadError, DownloadOptions};
use super::upload::{Reupload, UploadError, UploadOptions, UploadResult, upload_chk};
use crate::cap::ChkCap;
use crate::grid::census::Census;
use crate::grid::client::Grid;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("cannot read the file to repair it: {0}")]
    Download(#[from] DownloadError),
    #[error("cannot place the missing shares: {0}")]
    Upload(#[from] UploadError),
    #[error("no room for the file's bytes while it is repaired, in {dir}: {source}")]
    Scratch {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Repairs `cap`'s file given what a check found (`census`, its good shares). The file's plaintext passes
/// through an unnamed file in `scratch` (made 0600 and unlinked at once, so nothing is left behind even after a
/// crash); it needs as much free space there as the file's size.
pub async fn repair(
    grid: &Grid,
    cap: &ChkCap,
    census: &Census,
    options: &UploadOptions,
    scratch: &Path,
) -> Result<UploadResult, RepairError> {
    let reader = ChkReader::open(grid.clone(), *cap, DownloadOptions::default()).await?;
    let geometry = reader.geometry();
    let scratch_error = |source| RepairError::Scratch {
        dir: scratch.display().to_string(),
        source,
    };
    let mut file = unnamed_file(scratch).map_err(scratch_error)?;
    reader.write_to(&mut file, None).await?;
    file.rewind().map_err(scratch_error)?;
    let known = Reupload {
        existing: census.held.clone(),
        ueb_hash: Some(cap.ueb_hash),
    };
    Ok(upload_chk(grid, Arc::new(file), cap.key, geometry, options, &known).await?)
}

/// A new file in `dir` that only this process can reach: created 0600 under a random name, then unlinked.
fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let path = dir.join(format!(
        ".tahoe-mount-repair-{}",
        crate::crypto::base32::encode(&random)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
