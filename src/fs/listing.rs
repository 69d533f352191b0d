//! The directory cache: a directory's entries are its last listing from the grid (younger than the directory TTL)
//! under this process's pending changes, merged into the inode table so that inodes still standing for the same
//! child keep their numbers, and names of one hard-link group become one inode. `/.grid` is listed from the
//! announcements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use crate::cap::Cap;
use crate::dirnode::{Child, DirectoryNode, Metadata};

use super::inodes::{FileState, Inode, InodeTable, Node, Target};
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

/// Makes `directory` the children of directory inode `ino`, under `pending` (this process's changes of its
/// names: a link, or `None` for an unlink), as of now. Inodes that still stand for the same child keep their
/// numbers; names of one hard-link group this run knows become that group's inode. Returns the directory's cap,
/// and the names (with their file's inode) that show a version their hard-link group has since replaced.
fn overlay(
    inodes: &mut InodeTable,
    ino: u64,
    directory: &crate::dirnode::Directory,
    pending: &[(String, Option<(Target, Metadata)>)],
) -> FsResult<(Cap, Vec<(String, u64)>)> {
    let pending_names: BTreeSet<&str> = pending.iter().map(|(n, _)| n.as_str()).collect();
    let (dir_cap, old_children) = match inodes.get(&ino).map(|i| &i.node) {
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
            inodes
                .get(old)
                .is_some_and(|i| same_child(&i.node, &entry.child))
        });
        let child = match kept {
            Some(old) => {
                if let Some(inode) = inodes.get_mut(&old) {
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
                inode_for(inodes, name, target, &entry.metadata, &mut behind)
            }
        };
        children.insert(name.to_owned(), child);
    }
    for (name, link) in pending {
        let Some((target, metadata)) = link else {
            continue;
        };
        let child = match old_children.get(name) {
            Some(&old) => old,
            // Left by an earlier run: shown as the journal has it.
            None => inode_for(inodes, name, target.clone(), metadata, &mut behind),
        };
        children.insert(name.clone(), child);
    }
    inodes.set_children(ino, children);
    if let Some(Node::Dir { fetched, .. }) = inodes.get_mut(&ino).map(|i| &mut i.node) {
        *fetched = Some(Instant::now());
    }
    Ok((dir_cap, behind))
}

/// The inode for a name newly listed (or replayed from the journal) linking `target`: the file of the name's
/// hard-link group when this run knows it and it linked that target, else a new inode. A name showing a version
/// its group's file has since replaced is put in `behind`.
fn inode_for(
    inodes: &mut InodeTable,
    name: &str,
    target: Target,
    metadata: &Metadata,
    behind: &mut Vec<(String, u64)>,
) -> u64 {
    if let Some(group) = meta::link_group(metadata)
        && let Some(file) = inodes.group(group)
        && let Some(Node::File(node)) = inodes.get(&file).map(|i| &i.node)
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
    let ino = inodes.add(Inode::new(metadata.clone(), node_for(&target)));
    if let Some(group) = meta::link_group(metadata)
        && inodes.group(group).is_none()
    {
        inodes.set_group(group, ino);
    }
    ino
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
    /// (whose key is `key`), under this process's pending changes (see [`overlay`]); names of a hard-linked file
    /// that show an older version than the file now has are relinked to the newer one.
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
        let (dir_cap, behind) = overlay(&mut state.inodes, ino, directory, &pending)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirnode::{Directory, Entry};

    const ROOT: &str =
        "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FILE_A: &str = "URI:LIT:mfrgg";
    const FILE_B: &str = "URI:LIT:mjqxe";
    const FILE_C: &str = "URI:LIT:mnxw2";

    fn cap(text: &str) -> Cap {
        Cap::parse(text).unwrap()
    }

    fn table() -> InodeTable {
        let root = Node::Dir {
            cap: cap(ROOT),
            children: BTreeMap::new(),
            fetched: None,
        };
        InodeTable::new(Inode::new(Metadata::new(), root), None)
    }

    fn grouped(group: Option<&str>) -> Metadata {
        let mut metadata = Metadata::new();
        if let Some(group) = group {
            meta::set_link_group(&mut metadata, group);
        }
        metadata
    }

    fn listing(entries: &[(&str, &str, Option<&str>)]) -> Directory {
        let mut directory = Directory::new();
        for (name, target, group) in entries {
            let entry = Entry {
                child: Child::from_cap(&cap(target)).unwrap(),
                metadata: grouped(*group),
            };
            directory.insert(name, entry).unwrap();
        }
        directory
    }

    fn children(inodes: &InodeTable) -> BTreeMap<String, u64> {
        inodes
            .get(&ROOT_INO)
            .unwrap()
            .node
            .children()
            .unwrap()
            .clone()
    }

    #[test]
    fn unchanged_children_keep_their_numbers_and_pending_changes_overlay_the_listing() {
        let mut inodes = table();
        let first = listing(&[
            ("a", FILE_A, None),
            ("b", FILE_B, None),
            (GRID_DIR_NAME, FILE_A, None),
        ]);
        let (dir_cap, behind) = overlay(&mut inodes, ROOT_INO, &first, &[]).unwrap();
        assert_eq!(dir_cap, cap(ROOT));
        assert!(behind.is_empty());
        let before = children(&inodes);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            ["a", "b"],
            "the grid's view is not a listed name"
        );

        let second = listing(&[
            ("a", FILE_A, None),
            ("b", FILE_C, None),
            ("gone", FILE_A, None),
        ]);
        let pending = vec![
            ("gone".to_owned(), None),
            (
                "new".to_owned(),
                Some((Target::Cap(cap(FILE_B)), Metadata::new())),
            ),
        ];
        overlay(&mut inodes, ROOT_INO, &second, &pending).unwrap();
        let after = children(&inodes);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            ["a", "b", "new"],
            "a pending unlink hides the name"
        );
        assert_eq!(after["a"], before["a"], "same cap: same inode");
        assert_ne!(
            after["b"], before["b"],
            "another client replaced b: a new inode"
        );
        assert!(matches!(
            &inodes.get(&after["new"]).unwrap().node,
            Node::File(f) if f.has_linked(&cap(FILE_B))
        ));
        assert_eq!(
            inodes.get(&after["a"]).unwrap().names(),
            [(ROOT_INO, "a".to_owned())]
        );
    }

    #[test]
    fn names_of_one_link_group_are_one_inode_and_names_showing_an_older_version_catch_up() {
        let mut inodes = table();
        let first = listing(&[
            ("x", FILE_A, Some("g1")),
            ("y", FILE_A, Some("g1")),
            // The same bytes copied (convergent encryption gives the same cap) but not linked: its own file.
            ("copy", FILE_A, None),
        ]);
        overlay(&mut inodes, ROOT_INO, &first, &[]).unwrap();
        let names = children(&inodes);
        assert_eq!(names["x"], names["y"]);
        assert_ne!(names["x"], names["copy"]);
        assert_eq!(inodes.get(&names["x"]).unwrap().names().len(), 2);

        // The file is rewritten through x; y still shows the old cap on the grid when next listed.
        if let Node::File(file) = &mut inodes.get_mut(&names["x"]).unwrap().node {
            file.replace_linked(Target::Cap(cap(FILE_B)));
        }
        let pending = vec![(
            "x".to_owned(),
            Some((Target::Cap(cap(FILE_B)), grouped(Some("g1")))),
        )];
        let second = listing(&[("x", FILE_A, Some("g1")), ("y", FILE_A, Some("g1"))]);
        let (_, behind) = overlay(&mut inodes, ROOT_INO, &second, &pending).unwrap();
        let after = children(&inodes);
        assert_eq!(after["x"], names["x"]);
        assert_eq!(after["y"], names["x"], "y still shows the group's file");
        assert_eq!(
            behind,
            [("y".to_owned(), names["x"])],
            "and is to be relinked to its new version"
        );
    }
}
