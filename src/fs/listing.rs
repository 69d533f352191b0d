//! The directory cache: a directory's entries are its last listing from the grid (younger than the directory TTL)
//! under this process's pending changes, merged into the inode table so that inodes still standing for the same
//! child keep their numbers, and names of one hard-link group become one inode. `/.grid` is listed from the
//! announcements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::cap::Cap;
use crate::dirnode::{Child, DirectoryNode, Metadata};

use super::inodes::{FileState, Inode, Node, Target};
use super::{
    Fs, FsError, FsResult, GRID_DIR_NAME, GRID_INO, ROOT_INO, State, check_name, dir_key, meta,
};

/// The node a name shows for what it links (from a listing, or from the journal).
fn node_for(target: &Target) -> Node {
    match target {
        Target::Cap(cap @ Cap::Directory(_)) => Node::Dir {
            cap: cap.clone(),
            children: BTreeMap::new(),
            fetched: None,
        },
        Target::Cap(Cap::Unknown(_)) => Node::Other,
        Target::Cap(cap) => Node::File(FileState::new(Target::Cap(cap.clone()), None)),
        Target::Spool(spool) => Node::File(FileState::new(
            Target::Spool(spool.clone()),
            Some(spool.clone()),
        )),
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
    /// Makes sure the directory's listing is younger than the directory TTL, asking the grid if not.
    pub(super) async fn refresh_dir(&self, ino: u64, force: bool) -> FsResult<()> {
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
        let floors = self.inner.options.mutable.floors.clone();
        let mut attempts = 0;
        let (listing, mut state) = loop {
            attempts += 1;
            let published_before = self.state().publishers.published(&key);
            let (listing, seqnum) = node.list_versioned().await?;
            // Servers that answered first may offer an older version than this mount has seen or written (one
            // slow to take the newest): merged, it would bring back names removed since.
            let newest_seen = cap.storage_index().and_then(|si| floors.as_ref()?.get(&si));
            let behind = matches!((seqnum, newest_seen), (Some(read), Some(seen)) if read < seen);
            {
                let mut state = self.state();
                state.activity.listings += 1;
                if !behind && state.publishers.published(&key) == published_before {
                    break (listing, state);
                }
                state.activity.listings_dropped += 1;
                // One of our publishes ended meanwhile, or the listing is behind: it may lack what is no longer
                // pending. A directory already shown keeps its local view (which is right) until the next refresh;
                // one never listed is read again (a listing still behind after that is better than none).
                if let Some(Node::Dir {
                    fetched: fetched @ Some(_),
                    ..
                }) = state.inodes.get_mut(&ino).map(|i| &mut i.node)
                {
                    if behind {
                        // Asked again at the next refresh, not on every lookup meanwhile.
                        *fetched = Some(Instant::now());
                    }
                    return Ok(());
                }
                if attempts >= 5 {
                    break (listing, state);
                }
            }
            if behind {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        self.merge_listing(&mut state, ino, &key, &listing.directory)
    }

    /// Makes `directory` (just read from the grid, or just published by us) the listing of directory inode `ino`
    /// (whose key is `key`), under this process's pending changes. Inodes that still stand for the same child keep
    /// their numbers.
    pub(super) fn merge_listing(
        &self,
        state: &mut State,
        ino: u64,
        key: &str,
        directory: &crate::dirnode::Directory,
    ) -> FsResult<()> {
        let pending: Vec<(String, Option<(Target, Metadata)>)> = state
            .pending
            .in_directory(key)
            .map(|(name, p)| (name.to_owned(), p.link.clone()))
            .collect();
        let pending_names: BTreeSet<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
        let (dir_cap, old_children) = match state.inodes.get(&ino).map(|i| &i.node) {
            Some(Node::Dir { cap, children, .. }) => (cap.clone(), children.clone()),
            _ => return Err(FsError::NotFound),
        };
        let mut children = BTreeMap::new();
        let mut behind = Vec::new();
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
            let child = match kept {
                Some(old) => {
                    if let Some(inode) = state.inodes.get_mut(&old) {
                        inode.metadata = entry.metadata.clone();
                    }
                    old
                }
                None => {
                    let target = match &entry.child {
                        Child::Known(cap) => Target::Cap(cap.clone()),
                        Child::Unknown(_) => {
                            Target::Cap(Cap::Unknown(crate::cap::UnknownCap(String::new())))
                        }
                    };
                    self.inode_for(state, name, target, &entry.metadata, &mut behind)
                }
            };
            children.insert(name.to_owned(), child);
        }
        for (name, link) in pending {
            let Some((target, metadata)) = link else {
                continue;
            };
            let child = match old_children.get(&name) {
                Some(&old) => old,
                // Left by an earlier run: shown as the journal has it.
                None => self.inode_for(state, &name, target, &metadata, &mut behind),
            };
            children.insert(name, child);
        }
        state.inodes.set_children(ino, children);
        if let Some(Node::Dir { fetched, .. }) = state.inodes.get_mut(&ino).map(|i| &mut i.node) {
            *fetched = Some(Instant::now());
        }
        // Names of a hard-linked file changed through another of its names: they catch up.
        for (name, file) in behind {
            if let Some(inode) = state.inodes.get(&file)
                && let Some(target) = Self::target_of(inode)
            {
                let metadata = inode.metadata.clone();
                self.set_pending(state, &dir_cap, &name, Some((target, metadata)), false)?;
            }
        }
        Ok(())
    }

    /// The inode for a name newly listed (or replayed from the journal) linking `target`: the file of the name's
    /// hard-link group when this run knows it and it linked that target, else a new inode. A name showing a version
    /// its group's file has since replaced is put in `behind`.
    fn inode_for(
        &self,
        state: &mut State,
        name: &str,
        target: Target,
        metadata: &Metadata,
        behind: &mut Vec<(String, u64)>,
    ) -> u64 {
        if let Some(group) = meta::link_group(metadata)
            && let Some(file) = state.inodes.group(group)
            && let Some(Node::File(node)) = state.inodes.get(&file).map(|i| &i.node)
        {
            let current = node.linked.same(&target);
            let former = matches!(&target, Target::Cap(cap) if node.has_linked(cap));
            if current || former {
                if !current {
                    behind.push((name.to_owned(), file));
                }
                return file;
            }
        }
        let ino = state
            .inodes
            .add(Inode::new(metadata.clone(), node_for(&target)));
        if let Some(group) = meta::link_group(metadata)
            && state.inodes.group(group).is_none()
        {
            state.inodes.set_group(group, ino);
        }
        ino
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
                None => state.inodes.add(Inode::new(
                    Metadata::new(),
                    Node::GridFile {
                        body: Arc::new(body),
                    },
                )),
            };
            children.insert(name, ino);
        }
        state.inodes.set_children(GRID_INO, children);
    }
}
