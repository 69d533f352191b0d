//! Directories on a grid: mutable ones (`URI:DIR2:`, `URI:DIR2-MDMF:` and their read-only forms) kept in a mutable
//! file, immutable ones (`URI:DIR2-CHK:`, `URI:DIR2-LIT:`) read whole. Listing, walking a path, creating, and
//! applying a batch of changes in one publish: the batch is re-applied to fresh contents whenever another writer
//! got in first, so concurrent writers never lose each other's entries.

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::{
    Access, Change, Child, Directory, EditError, Entry, PackError, ReadError, UnpackError,
    Unpacked, pack, read_immutable_directory, unpack,
};
use crate::cap::{Cap, FileCap, MutableAccess, MutableCap};
use crate::grid::client::Grid;
use crate::mutable::{MutableError, MutableFile, MutableOptions, MutableParams};

#[derive(Debug, Error)]
pub enum DirectoryError {
    #[error("{0} is not a directory cap")]
    NotADirectory(String),
    #[error("a verify cap cannot list a directory")]
    VerifyCap,
    #[error("read-only directory: cannot change it")]
    ReadOnly,
    #[error("no such child: {0}")]
    NoSuchChild(String),
    #[error("{0} is not a directory")]
    ChildNotADirectory(String),
    #[error(transparent)]
    Mutable(#[from] MutableError),
    #[error("directory contents: {0}")]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("packing the directory: {0}")]
    Pack(#[from] PackError),
    #[error(transparent)]
    Immutable(#[from] ReadError),
}

/// Seconds since the epoch, as Tahoe's `time.time()` stamps link times.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A directory on the grid, through its cap.
#[derive(Clone)]
pub struct DirectoryNode {
    grid: Grid,
    cap: Cap,
    access: Access,
    options: MutableOptions,
}

impl std::fmt::Debug for DirectoryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectoryNode({:?})", self.access)
    }
}

impl DirectoryNode {
    pub fn open(grid: Grid, cap: Cap, options: MutableOptions) -> Result<Self, DirectoryError> {
        if !matches!(cap, Cap::Directory(_)) {
            return Err(DirectoryError::NotADirectory(describe(&cap)));
        }
        let access = Access::of(&cap).ok_or(DirectoryError::VerifyCap)?;
        Ok(DirectoryNode {
            grid,
            cap,
            access,
            options,
        })
    }

    pub fn cap(&self) -> &Cap {
        &self.cap
    }

    pub fn is_writeable(&self) -> bool {
        matches!(self.access, Access::Writeable { .. })
    }

    /// Makes a new mutable directory holding `initial`, in `params.format` (`URI:DIR2:` for SDMF, `URI:DIR2-MDMF:`
    /// for MDMF).
    pub async fn create(
        grid: Grid,
        initial: &Directory,
        params: MutableParams,
        options: MutableOptions,
    ) -> Result<Self, DirectoryError> {
        // The children's writecaps are encrypted under the new file's writekey, so the contents are packed once
        // the key exists, and go out in the first version (as Tahoe's `create_new_mutable_directory`).
        let file = MutableFile::create_with(
            grid.clone(),
            |writekey| Ok::<_, DirectoryError>(pack(initial, Some(writekey), false)?),
            params,
            options.clone(),
        )
        .await?;
        DirectoryNode::open(grid, Cap::Directory(FileCap::Mutable(*file.cap())), options)
    }

    fn writekey(&self) -> Option<[u8; 16]> {
        match self.access {
            Access::Writeable { writekey } => Some(writekey),
            _ => None,
        }
    }

    fn mutable_file(&self) -> Option<MutableFile> {
        match &self.cap {
            Cap::Directory(FileCap::Mutable(cap)) => Some(MutableFile::open(
                self.grid.clone(),
                *cap,
                self.options.clone(),
            )),
            _ => None,
        }
    }

    /// The directory's entries (and those skipped because Tahoe would skip them).
    pub async fn list(&self) -> Result<Unpacked, DirectoryError> {
        Ok(self.list_versioned().await?.0)
    }

    /// The listing, with the version's sequence number for a mutable directory (`None` for an immutable one).
    pub async fn list_versioned(&self) -> Result<(Unpacked, Option<u64>), DirectoryError> {
        match self.mutable_file() {
            Some(file) => {
                let version = file.read().await?;
                Ok((
                    unpack(&version.contents, &self.access)?,
                    Some(version.seqnum),
                ))
            }
            None => Ok((read_immutable_directory(&self.grid, &self.cap).await?, None)),
        }
    }

    /// Applies `changes` in order, all in one new version: if any change is refused, nothing is written.
    pub async fn modify(&self, changes: &[Change]) -> Result<(), DirectoryError> {
        self.modify_with_params(changes, None).await
    }

    /// As [`DirectoryNode::modify`], publishing with `params` (`None` keeps the current encoding): the grid
    /// service directory grows N with the grid.
    pub async fn modify_with_params(
        &self,
        changes: &[Change],
        params: Option<MutableParams>,
    ) -> Result<(), DirectoryError> {
        self.rewrite(
            |current, now| Ok(Some(current.apply(changes, now)?)),
            params,
        )
        .await
    }

    /// Rewrites the directory with `edit`, which gets the current contents and the time, and returns the new
    /// contents or `None` to leave it as it is. Retried, with a fresh read, when another writer got in between, so
    /// `edit` must be a function of its inputs. For edits whose rules are the caller's (a filesystem's pending
    /// changes, say) rather than Tahoe's batch rules of [`DirectoryNode::modify`].
    pub async fn update<F>(&self, edit: F) -> Result<(), DirectoryError>
    where
        F: FnMut(&Directory, f64) -> Result<Option<Directory>, DirectoryError>,
    {
        self.rewrite(edit, None).await
    }

    async fn rewrite<F>(
        &self,
        mut edit: F,
        params: Option<MutableParams>,
    ) -> Result<(), DirectoryError>
    where
        F: FnMut(&Directory, f64) -> Result<Option<Directory>, DirectoryError>,
    {
        let file = self.mutable_file().ok_or(DirectoryError::ReadOnly)?;
        let writekey = self.writekey().ok_or(DirectoryError::ReadOnly)?;
        let access = self.access;
        file.modify(
            |old| {
                let current = unpack(old, &access)?;
                match edit(&current.directory, now())? {
                    Some(new) => Ok::<_, DirectoryError>(Some(pack(&new, Some(&writekey), false)?)),
                    None => Ok(None),
                }
            },
            params,
        )
        .await?;
        Ok(())
    }

    /// The entry at `path` below this directory (each step but the last must be a directory).
    pub async fn resolve(&self, path: &[String]) -> Result<Entry, DirectoryError> {
        let Some((last, parents)) = path.split_last() else {
            return Err(DirectoryError::NoSuchChild("(empty path)".into()));
        };
        let parent = self.descend(parents).await?;
        let listing = parent.list().await?;
        listing
            .directory
            .get(last)
            .cloned()
            .ok_or_else(|| DirectoryError::NoSuchChild(path.join("/")))
    }

    /// The directory at `path` below this one (this one for an empty path).
    pub async fn descend(&self, path: &[String]) -> Result<DirectoryNode, DirectoryError> {
        let mut node = self.clone();
        for (depth, name) in path.iter().enumerate() {
            let listing = node.list().await?;
            let walked = path[..=depth].join("/");
            let entry = listing
                .directory
                .get(name)
                .ok_or_else(|| DirectoryError::NoSuchChild(walked.clone()))?;
            let cap = match &entry.child {
                Child::Known(cap @ Cap::Directory(_)) => cap.clone(),
                _ => return Err(DirectoryError::ChildNotADirectory(walked)),
            };
            node = DirectoryNode::open(self.grid.clone(), cap, self.options.clone())?;
        }
        Ok(node)
    }
}

/// Names a cap's kind without printing a secret.
fn describe(cap: &Cap) -> String {
    match cap {
        Cap::File(FileCap::Mutable(MutableCap {
            access: MutableAccess::Write { .. },
            ..
        })) => "a mutable file writecap".into(),
        Cap::File(_) => "a file cap".into(),
        Cap::Directory(_) => "a directory cap".into(),
        Cap::Unknown(_) => "an unknown cap".into(),
    }
}
