//! What is not on the grid yet, as those who wait for it see it: `fsync` (a file and every directory up to the
//! root), the journal's sync, `status` (the pending changes with their state, the activity counters, the last
//! failure) and the wait of `unmount` for every change to land.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::{
    Activity, Fs, FsError, FsResult, GridError, Metadata, Node, PendingItem, ROOT_INO, State,
    Target, dir_key,
};

impl Fs {
    /// Returns once the file's contents are uploaded and linked in every directory up to the root; an upload or
    /// publish that fails meanwhile is reported (the data stays in the spool and is retried).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let ino = self.state().handles.file(fh)?.ino;
        self.flush(fh)?;
        self.wait_durable(ino).await
    }

    /// A pending change between `ino` and the root: of one of its names, or of a name of a directory above one.
    fn first_pending_above(
        &self,
        state: &State,
        ino: u64,
    ) -> Option<(String, Option<(Target, Metadata)>)> {
        let mut todo = vec![ino];
        let mut seen = BTreeSet::new();
        while let Some(at) = todo.pop() {
            if at == ROOT_INO || !seen.insert(at) {
                continue;
            }
            for (dir_cap, name) in self.links_of(state, at) {
                let key = dir_key(&dir_cap);
                if let Some(p) = state.pending.get(&key, &name) {
                    return Some((key, p.link.clone()));
                }
            }
            if let Some(inode) = state.inodes.get(&at) {
                todo.extend(inode.names().iter().map(|(dir, _)| *dir));
            }
        }
        None
    }

    /// Waits until nothing pending stands between `ino` and the grid: its own links and its ancestors'.
    pub async fn wait_durable(&self, ino: u64) -> FsResult<()> {
        let mut progress = self.inner.progress.subscribe();
        let since = self.state().failures.epoch();
        loop {
            progress.borrow_and_update();
            {
                let mut state = self.state();
                let Some((key, link)) = self.first_pending_above(&state, ino) else {
                    return Ok(());
                };
                self.hurry_publisher(&mut state, &key);
                if let Some(Target::Spool(spool)) = link.as_ref().map(|(t, _)| t)
                    && let Some(why) = state.failures.upload_since(&spool.id, since)
                {
                    return Err(FsError::Grid(GridError::Retrying {
                        what: "upload failed (kept in the spool, retried)",
                        why: why.to_owned(),
                    }));
                }
                if let Some(why) = state.failures.publish_since(&key, since) {
                    return Err(FsError::Grid(GridError::Retrying {
                        what: "directory publish failed (kept, retried)",
                        why: why.to_owned(),
                    }));
                }
            }
            if progress.changed().await.is_err() {
                return Err(FsError::Grid(GridError::ShuttingDown));
            }
        }
    }

    /// Makes every journal change so far durable (`fsyncdir`).
    pub fn sync_journal(&self) -> FsResult<()> {
        Ok(self.inner.spool.sync_journal()?)
    }

    /// Changes not yet on the grid.
    /// What has been asked of the grid so far.
    pub fn activity(&self) -> Activity {
        self.state().activity
    }

    pub fn pending(&self) -> Vec<PendingItem> {
        let state = self.state();
        let mut dirs: HashMap<String, String> = HashMap::new();
        for (&ino, inode) in state.inodes.iter() {
            if let Node::Dir { cap, .. } = &inode.node {
                dirs.insert(dir_key(cap), self.path_of(&state, ino));
            }
        }
        state
            .pending
            .iter()
            .map(|(key, name, p)| {
                let path = match dirs.get(key) {
                    Some(dir) if dir.is_empty() => format!("/{name}"),
                    Some(dir) => format!("{dir}/{name}"),
                    None => format!("{name} (in directory {})", &key[..key.len().min(10)]),
                };
                let (state_text, bytes) = match &p.link {
                    None => ("unlink".to_owned(), 0),
                    Some((Target::Cap(_), _)) => ("link".to_owned(), 0),
                    Some((Target::Spool(s), _)) => {
                        let why = state.failures.upload(&s.id);
                        let doing = if state.uploads.is_running(&s.id) {
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
                let state_text = match state.failures.publish(key) {
                    Some(why) => format!("{state_text}; publish failed, will retry: {why}"),
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
            if inode.names().is_empty() {
                break;
            }
            parts.push(inode.name().to_owned());
            ino = inode.parent();
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
                (state.pending.len(), state.pending.spooled_bytes())
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
        state.failures.newest().map(str::to_owned)
    }

    /// The number of changes waiting for the grid.
    pub fn pending_count(&self) -> usize {
        self.state().pending.len()
    }
}
