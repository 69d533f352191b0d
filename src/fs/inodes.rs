//! The inode table: every file and directory the kernel may hold a number for, with the names each has.
//!
//! A directory has one name. A file has one name per hard link (all of them one inode, so a write through any name
//! shows through every other, and `nlink` is honest), and none once unlinked while still open. Names that link the
//! same cap are one file only when their entries carry the same hard-link group (see [`super::meta::link_group`]):
//! convergent encoding gives identical contents the same cap, and a `cp` is not a hard link.
//!
//! The table keeps names and directory children consistent: a name is attached to a directory's children and to the
//! inode in one step, and a directory listing replaced as a whole gives and takes names in one step too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::cap::Cap;
use crate::dirnode::Metadata;

use super::spool::{JournalTarget, SpoolFile};

/// What a name links to.
#[derive(Debug, Clone)]
pub(super) enum Target {
    Cap(Cap),
    Spool(Arc<SpoolFile>),
}

impl Target {
    pub(super) fn to_journal(&self) -> JournalTarget {
        match self {
            Target::Cap(cap) => JournalTarget::Cap(cap.to_string()),
            Target::Spool(spool) => JournalTarget::Spool(spool.id.clone()),
        }
    }

    pub(super) fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Cap(a), Target::Cap(b)) => a == b,
            (Target::Spool(a), Target::Spool(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Caps a file linked earlier in this run, remembered so that a name of its hard-link group still showing one of
/// them (listed after the change) is known to be the same file, behind.
const FORMER_CAPS: usize = 8;

#[derive(Debug)]
pub(super) struct FileState {
    /// What is (or is to be) linked under the file's names: the last closed version.
    pub linked: Target,
    /// Local bytes: the version being written (unsealed), or a sealed one (pending upload, or a copy of `linked`).
    pub spool: Option<Arc<SpoolFile>>,
    /// Written since its mtime was last set explicitly: sealing stamps it with the time.
    pub mtime_dirty: bool,
    /// The contents of a mutable file, once read.
    pub mutable_contents: Option<Arc<Vec<u8>>>,
    /// Caps this file linked before, newest last.
    pub former: Vec<Cap>,
}

impl FileState {
    pub(super) fn new(linked: Target, spool: Option<Arc<SpoolFile>>) -> FileState {
        FileState {
            linked,
            spool,
            mtime_dirty: false,
            mutable_contents: None,
            former: Vec::new(),
        }
    }

    pub(super) fn size(&self) -> u64 {
        if let Some(spool) = &self.spool {
            return spool.size();
        }
        match &self.linked {
            Target::Spool(spool) => spool.size(),
            Target::Cap(cap) => match cap {
                Cap::File(f) => f.size().unwrap_or_else(|| {
                    self.mutable_contents.as_ref().map_or(0, |c| c.len() as u64)
                }),
                _ => 0,
            },
        }
    }

    pub(super) fn is_clean_immutable(&self) -> bool {
        self.spool.is_none() && matches!(&self.linked, Target::Cap(Cap::File(f)) if !f.is_mutable())
    }

    /// Links `target` from now on, remembering the cap it replaces.
    pub(super) fn replace_linked(&mut self, target: Target) {
        if let Target::Cap(cap) = &self.linked
            && !self.former.contains(cap)
        {
            if self.former.len() == FORMER_CAPS {
                self.former.remove(0);
            }
            self.former.push(cap.clone());
        }
        self.linked = target;
    }

    /// Whether `cap` is what this file links now or linked earlier in this run.
    pub(super) fn has_linked(&self, cap: &Cap) -> bool {
        matches!(&self.linked, Target::Cap(c) if c == cap) || self.former.contains(cap)
    }
}

#[derive(Debug)]
pub(super) enum Node {
    Dir {
        cap: Cap,
        children: BTreeMap<String, u64>,
        fetched: Option<Instant>,
    },
    File(FileState),
    /// A child tahoe-mount cannot show as a file or directory (an unknown cap): an empty read-only file.
    Other,
    GridDir {
        children: BTreeMap<String, u64>,
    },
    GridFile {
        body: Arc<Vec<u8>>,
    },
}

impl Node {
    pub(super) fn children(&self) -> Option<&BTreeMap<String, u64>> {
        match self {
            Node::Dir { children, .. } | Node::GridDir { children } => Some(children),
            _ => None,
        }
    }

    fn children_mut(&mut self) -> Option<&mut BTreeMap<String, u64>> {
        match self {
            Node::Dir { children, .. } | Node::GridDir { children } => Some(children),
            _ => None,
        }
    }

    pub(super) fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. } | Node::GridDir { .. })
    }
}

#[derive(Debug)]
pub(super) struct Inode {
    /// (directory inode, name) for each name it has.
    names: Vec<(u64, String)>,
    pub metadata: Metadata,
    pub node: Node,
    /// For a directory: when this process last changed its entries, if after its own entry was written (the
    /// directory's entry is not rewritten for each change inside it).
    pub contents_changed: Option<SystemTime>,
    /// How many times the kernel was given this inode (lookups, creations, readdirplus entries) and has not yet
    /// forgotten it.
    lookups: u64,
}

impl Inode {
    pub(super) fn new(metadata: Metadata, node: Node) -> Inode {
        Inode {
            names: Vec::new(),
            metadata,
            node,
            contents_changed: None,
            lookups: 0,
        }
    }

    pub(super) fn names(&self) -> &[(u64, String)] {
        &self.names
    }

    /// The directory it was first named in (the root for the root, and for a file with no name left).
    pub(super) fn parent(&self) -> u64 {
        self.names.first().map_or(super::ROOT_INO, |(dir, _)| *dir)
    }

    /// The name it was first given (empty for the root).
    pub(super) fn name(&self) -> &str {
        self.names.first().map_or("", |(_, name)| name)
    }
}

pub(super) struct InodeTable {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Hard-link group → the inode of its names.
    groups: HashMap<String, u64>,
}

impl InodeTable {
    /// A table holding `root` as the root and, if given, `grid` as `/.grid`.
    pub(super) fn new(root: Inode, grid: Option<Inode>) -> InodeTable {
        let mut table = InodeTable {
            inodes: HashMap::new(),
            next_ino: super::GRID_INO + 1,
            groups: HashMap::new(),
        };
        table.inodes.insert(super::ROOT_INO, root);
        if let Some(mut grid) = grid {
            grid.names
                .push((super::ROOT_INO, super::GRID_DIR_NAME.to_owned()));
            table.inodes.insert(super::GRID_INO, grid);
        }
        table
    }

    pub(super) fn get(&self, ino: &u64) -> Option<&Inode> {
        self.inodes.get(ino)
    }

    pub(super) fn get_mut(&mut self, ino: &u64) -> Option<&mut Inode> {
        self.inodes.get_mut(ino)
    }

    pub(super) fn contains_key(&self, ino: &u64) -> bool {
        self.inodes.contains_key(ino)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Inode)> {
        self.inodes.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Inode)> {
        self.inodes.iter_mut()
    }

    /// Adds an inode with no name yet, under the next number.
    pub(super) fn add(&mut self, inode: Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    /// Names `ino` `name` in directory `dir`, taking the name from whatever had it.
    pub(super) fn attach(&mut self, dir: u64, name: &str, ino: u64) {
        let previous = match self
            .inodes
            .get_mut(&dir)
            .and_then(|d| d.node.children_mut())
        {
            Some(children) => children.insert(name.to_owned(), ino),
            None => return,
        };
        if previous == Some(ino) {
            return;
        }
        if let Some(old) = previous {
            self.drop_name(old, dir, name);
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.names.push((dir, name.to_owned()));
        }
    }

    /// Takes the name `name` away from directory `dir`, returning what it named.
    pub(super) fn detach(&mut self, dir: u64, name: &str) -> Option<u64> {
        let ino = self
            .inodes
            .get_mut(&dir)?
            .node
            .children_mut()?
            .remove(name)?;
        self.drop_name(ino, dir, name);
        Some(ino)
    }

    fn drop_name(&mut self, ino: u64, dir: u64, name: &str) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.names.retain(|(d, n)| !(*d == dir && n == name));
        }
    }

    /// Makes `children` the whole listing of directory `dir`: names it no longer has are taken from their inodes,
    /// new ones given.
    pub(super) fn set_children(&mut self, dir: u64, children: BTreeMap<String, u64>) {
        let old = match self
            .inodes
            .get_mut(&dir)
            .and_then(|d| d.node.children_mut())
        {
            Some(slot) => std::mem::replace(slot, children.clone()),
            None => return,
        };
        for (name, ino) in &old {
            if children.get(name) != Some(ino) {
                self.drop_name(*ino, dir, name);
            }
        }
        for (name, ino) in children {
            if old.get(&name) != Some(&ino)
                && let Some(inode) = self.inodes.get_mut(&ino)
            {
                inode.names.push((dir, name));
            }
        }
    }

    /// The kernel was given `ino` once more.
    pub(super) fn remember(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    /// The kernel forgot `ino` `count` times. Returns whether it holds it no more.
    pub(super) fn forget(&mut self, ino: u64, count: u64) -> bool {
        match self.inodes.get_mut(&ino) {
            Some(inode) => {
                inode.lookups = inode.lookups.saturating_sub(count);
                inode.lookups == 0
            }
            None => false,
        }
    }

    /// Lets go of `ino`, which the kernel no longer holds, if nothing else needs it: an inode with no name left goes;
    /// a directory's listing goes with the inodes only it names (a later lookup lists it again), unless one of
    /// them is open (`is_open`), held by the kernel, or a directory still listed. The root and `/.grid` stay.
    /// Returns the number of inodes removed.
    pub(super) fn evict(&mut self, ino: u64, is_open: impl Fn(u64) -> bool) -> usize {
        let Some(inode) = self.inodes.get(&ino) else {
            return 0;
        };
        if ino == super::ROOT_INO || ino == super::GRID_INO || inode.lookups > 0 || is_open(ino) {
            return 0;
        }
        if inode.names.is_empty() {
            self.inodes.remove(&ino);
            return 1;
        }
        let Node::Dir { children, .. } = &inode.node else {
            return 0;
        };
        let idle = |child: &u64| {
            self.inodes.get(child).is_none_or(|c| {
                c.lookups == 0
                    && !is_open(*child)
                    && c.node.children().is_none_or(|listing| listing.is_empty())
            })
        };
        if !children.values().all(idle) {
            return 0;
        }
        let children: Vec<(String, u64)> = children.iter().map(|(n, c)| (n.clone(), *c)).collect();
        let mut removed = 0;
        for (name, child) in children {
            self.detach(ino, &name);
            if self.inodes.get(&child).is_some_and(|c| c.names.is_empty()) {
                self.inodes.remove(&child);
                removed += 1;
            }
        }
        if let Some(Node::Dir { fetched, .. }) = self.inodes.get_mut(&ino).map(|i| &mut i.node) {
            *fetched = None;
        }
        removed
    }

    pub(super) fn len(&self) -> usize {
        self.inodes.len()
    }

    /// The inode of a hard-link group, if this run has one.
    pub(super) fn group(&self, group: &str) -> Option<u64> {
        self.groups
            .get(group)
            .copied()
            .filter(|ino| self.inodes.contains_key(ino))
    }

    /// Records that `ino` is the file of hard-link group `group`.
    pub(super) fn set_group(&mut self, group: &str, ino: u64) {
        self.groups.insert(group.to_owned(), ino);
    }

    /// A directory's link count: 2 and one per subdirectory once listed; 1 (unknown, as `find` understands) before.
    pub(super) fn directory_nlink(&self, dir: u64) -> u32 {
        let Some(inode) = self.inodes.get(&dir) else {
            return 1;
        };
        match &inode.node {
            Node::Dir {
                fetched: None,
                children,
                ..
            } if children.is_empty() => 1,
            node => {
                let subdirectories = node.children().map_or(0, |children| {
                    children
                        .values()
                        .filter(|c| self.inodes.get(c).is_some_and(|i| i.node.is_dir()))
                        .count()
                });
                2 + subdirectories as u32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::FileCap;

    fn dir(cap_byte: u8) -> Inode {
        let cap = Cap::parse(&format!(
            "URI:DIR2:{}:{}",
            data_encoding::BASE32_NOPAD
                .encode(&[cap_byte; 16])
                .to_lowercase(),
            data_encoding::BASE32_NOPAD
                .encode(&[cap_byte; 32])
                .to_lowercase()
        ))
        .unwrap();
        Inode::new(
            Metadata::new(),
            Node::Dir {
                cap,
                children: BTreeMap::new(),
                fetched: Some(Instant::now()),
            },
        )
    }

    fn file(group: Option<&str>) -> Inode {
        let mut metadata = Metadata::new();
        if let Some(group) = group {
            super::super::meta::set_link_group(&mut metadata, group);
        }
        Inode::new(
            metadata,
            Node::File(FileState::new(
                Target::Cap(Cap::File(FileCap::Literal(b"x".to_vec()))),
                None,
            )),
        )
    }

    #[test]
    fn names_follow_attach_detach_and_listings() {
        let mut table = InodeTable::new(dir(1), None);
        let root = super::super::ROOT_INO;
        let sub = table.add(dir(2));
        table.attach(root, "sub", sub);
        let f = table.add(file(None));
        table.attach(root, "a", f);
        table.attach(sub, "b", f);
        assert_eq!(table.get(&f).unwrap().names().len(), 2);
        assert_eq!(table.directory_nlink(root), 3);
        assert_eq!(table.directory_nlink(sub), 2);
        // A name given to another inode is taken from the first.
        let g = table.add(file(None));
        table.attach(sub, "b", g);
        assert_eq!(table.get(&f).unwrap().names(), &[(root, "a".to_owned())]);
        assert_eq!(table.detach(root, "a"), Some(f));
        assert!(table.get(&f).unwrap().names().is_empty());
        assert_eq!(table.get(&f).unwrap().parent(), root);
        // A listing replaced as a whole.
        let mut listing = BTreeMap::new();
        listing.insert("c".to_owned(), f);
        table.set_children(sub, listing);
        assert_eq!(table.get(&f).unwrap().names(), &[(sub, "c".to_owned())]);
        assert!(table.get(&g).unwrap().names().is_empty());
        let listed = table.get(&sub).unwrap().node.children().unwrap();
        assert_eq!(listed.get("c"), Some(&f));
        assert_eq!(listed.get("b"), None);
    }

    #[test]
    fn groups_are_found_by_their_id_and_unlisted_directories_have_one_link() {
        let mut unlisted = dir(3);
        if let Node::Dir { fetched, .. } = &mut unlisted.node {
            *fetched = None;
        }
        let mut table = InodeTable::new(unlisted, None);
        assert_eq!(table.directory_nlink(super::super::ROOT_INO), 1);
        let f = table.add(file(Some("g1")));
        assert_eq!(table.group("g1"), None);
        table.set_group("g1", f);
        assert_eq!(table.group("g1"), Some(f));
        assert_eq!(table.group("g2"), None);
        let h = table.add(file(None));
        table.set_group("g2", h);
        assert_eq!(table.group("g2"), Some(h));
    }

    #[test]
    fn forgotten_inodes_go_with_the_listings_that_alone_name_them() {
        let mut table = InodeTable::new(dir(1), None);
        let root = super::super::ROOT_INO;
        let sub = table.add(dir(2));
        table.attach(root, "sub", sub);
        let a = table.add(file(None));
        table.attach(sub, "a", a);
        let linked = table.add(file(None));
        table.attach(sub, "l", linked);
        table.attach(root, "l", linked);
        for ino in [sub, a, a] {
            table.remember(ino);
        }
        // The kernel still holds `a`: the listing stays.
        assert!(table.forget(sub, 1));
        assert_eq!(table.evict(sub, |_| false), 0);
        assert!(!table.forget(a, 1));
        assert!(table.forget(a, 1));
        // Open: stays too.
        assert_eq!(table.evict(sub, |ino| ino == a), 0);
        assert_eq!(
            table.evict(sub, |_| false),
            1,
            "a goes; l keeps its other name"
        );
        assert!(table.get(&a).is_none());
        assert_eq!(
            table.get(&linked).unwrap().names(),
            &[(root, "l".to_owned())]
        );
        assert!(table.get(&sub).unwrap().node.children().unwrap().is_empty());
        // An unlinked file goes once forgotten; the root never does.
        table.detach(root, "l");
        assert_eq!(table.evict(linked, |_| false), 1);
        assert_eq!(table.evict(root, |_| false), 0);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_file_remembers_the_caps_it_linked() {
        let mut node = FileState::new(Target::Cap(Cap::File(FileCap::Literal(vec![0]))), None);
        for i in 1..=10u8 {
            node.replace_linked(Target::Cap(Cap::File(FileCap::Literal(vec![i]))));
        }
        assert!(node.has_linked(&Cap::File(FileCap::Literal(vec![10]))));
        assert!(node.has_linked(&Cap::File(FileCap::Literal(vec![9]))));
        assert!(node.has_linked(&Cap::File(FileCap::Literal(vec![2]))));
        assert!(!node.has_linked(&Cap::File(FileCap::Literal(vec![1]))));
        assert_eq!(node.former.len(), FORMER_CAPS);
    }
}
