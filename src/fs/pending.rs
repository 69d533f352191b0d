//! The pending-change log: every change of a directory entry made through the mount and not yet published, by
//! (directory, name), each written to the spool's journal before it is recorded here, so that a crash loses none.
//! It owns the journal's entries: they are written when a change is recorded or its upload lands, and removed
//! once a publish carried it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use crate::cap::Cap;
use crate::dirnode::Metadata;

use super::dir_key;
use super::inodes::Target;
use super::spool::{JournalEntry, Spool, SpoolFile, journal_key};

/// How many directories one name remembers having had removed by this process (each removal's publish may still
/// have landed, so each of them may be what the grid shows there).
const MAX_REPLACED: usize = 16;

/// One change of one name.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub dir_cap: Cap,
    /// `None`: unlink.
    pub link: Option<(Target, Metadata)>,
    /// Its place in the order of changes: a publish removes the change it carried only if no newer one came since.
    pub seq: u64,
    /// Directories this process removed from the name since a publish of it last succeeded: one of them still on
    /// the grid there is ours to replace, not another client's directory to keep (see `publish::apply`).
    pub replaces: Vec<Cap>,
}

impl Pending {
    fn journal_entry(&self, name: &str) -> JournalEntry {
        JournalEntry {
            dir: self.dir_cap.to_string(),
            name: name.to_owned(),
            link: self.link.as_ref().map(|(t, _)| t.to_journal()),
            metadata: self.link.as_ref().map(|(_, m)| m.to_json()),
            replaces: self.replaces.iter().map(Cap::to_string).collect(),
        }
    }

    /// The spool file this change links, if its upload has not landed yet.
    pub fn spooled(&self) -> Option<&Arc<SpoolFile>> {
        match &self.link {
            Some((Target::Spool(file), _)) => Some(file),
            _ => None,
        }
    }
}

/// One change that can be published now (its link is a cap, or it unlinks).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ReadyChange {
    pub name: String,
    pub seq: u64,
    /// What to link there; `None`: unlink.
    pub link: Option<(Cap, Metadata)>,
    pub replaces: Vec<Cap>,
}

/// The log. Keys are (directory key, name): a directory's changes sort together.
#[derive(Default)]
pub(super) struct PendingLog {
    changes: BTreeMap<(String, String), Pending>,
    seq: u64,
}

impl PendingLog {
    /// The log an earlier run left, as replay read it back: `seq` is the last sequence number used.
    pub fn replayed(changes: BTreeMap<(String, String), Pending>, seq: u64) -> PendingLog {
        PendingLog { changes, seq }
    }

    /// Journals and records a change of `name` in `dir_cap`: a link (to a cap or a spool file) or an unlink
    /// (`None`). `removed` is the directory the change takes away from the name, if it does; what an earlier pending
    /// change of the name removed stays removed. `durable`: the journal entry is synced before this returns.
    /// A spool file the replaced change linked, and no change links any more, is released: nothing needs it for
    /// durability. Returns the change's sequence number and the change it replaced, if any. On a journal error
    /// nothing changes.
    pub fn record(
        &mut self,
        journal: &Spool,
        dir_cap: &Cap,
        name: &str,
        link: Option<(Target, Metadata)>,
        removed: Option<Cap>,
        durable: bool,
    ) -> io::Result<(u64, Option<Pending>)> {
        let key = dir_key(dir_cap);
        let mut replaces = self
            .get(&key, name)
            .map(|earlier| earlier.replaces.clone())
            .unwrap_or_default();
        if let Some(removed) = removed
            && !replaces.contains(&removed)
        {
            if replaces.len() == MAX_REPLACED {
                replaces.remove(0);
            }
            replaces.push(removed);
        }
        let change = Pending {
            dir_cap: dir_cap.clone(),
            link,
            seq: self.seq + 1,
            replaces,
        };
        tracing::debug!(
            directory = &key[..key.len().min(8)],
            name,
            link = ?change.link.as_ref().map(|(t, _)| match t {
                Target::Cap(cap) if cap.is_directory() => "directory",
                Target::Cap(_) => "file",
                Target::Spool(_) => "spooled file",
            }),
            replaces = ?change.replaces.iter().map(|c| dir_key(c)[..8].to_owned()).collect::<Vec<_>>(),
            "pending change"
        );
        journal.write_entry(
            &journal_key(key.as_bytes(), name),
            &change.journal_entry(name),
            durable,
        )?;
        self.seq += 1;
        let old = self.changes.insert((key, name.to_owned()), change);
        if let Some(file) = old.as_ref().and_then(Pending::spooled)
            && !self.links_spool(file)
        {
            file.release();
        }
        Ok((self.seq, old))
    }

    pub fn get(&self, key: &str, name: &str) -> Option<&Pending> {
        self.changes.get(&(key.to_owned(), name.to_owned()))
    }

    /// The changes of one directory, by name.
    pub fn in_directory<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Pending)> {
        self.changes
            .range((key.to_owned(), String::new())..)
            .take_while(move |((k, _), _)| k == key)
            .map(|((_, name), p)| (name.as_str(), p))
    }

    /// Every change, with its directory key and name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Pending)> {
        self.changes
            .iter()
            .map(|((key, name), p)| (key.as_str(), name.as_str(), p))
    }

    /// The keys of the directories with changes.
    pub fn directories(&self) -> BTreeSet<String> {
        self.changes.keys().map(|(k, _)| k.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// The bytes of the spool files still to upload, each counted once per name linking it.
    pub fn spooled_bytes(&self) -> u64 {
        self.changes
            .values()
            .filter_map(Pending::spooled)
            .map(|s| s.size())
            .sum()
    }

    /// Whether a change links `file`: while one does, it is needed (for the upload, and for a crash).
    pub fn links_spool(&self, file: &Arc<SpoolFile>) -> bool {
        self.changes
            .values()
            .any(|p| p.spooled().is_some_and(|s| Arc::ptr_eq(s, file)))
    }

    /// `file` was uploaded as `cap`: every change linking it now links the cap, journaled so (before the spool
    /// file may go). Returns the keys of the directories whose changes became ready, and whether every journal entry
    /// was rewritten (if one was not, the spool file must stay: that entry still names it).
    pub fn spool_uploaded(
        &mut self,
        journal: &Spool,
        file: &Arc<SpoolFile>,
        cap: &Cap,
    ) -> (BTreeSet<String>, bool) {
        let mut keys = BTreeSet::new();
        let mut journaled = true;
        for ((key, name), pending) in self.changes.iter_mut() {
            let Some((target, _)) = &mut pending.link else {
                continue;
            };
            if !matches!(target, Target::Spool(s) if Arc::ptr_eq(s, file)) {
                continue;
            }
            *target = Target::Cap(cap.clone());
            keys.insert(key.clone());
            let entry = pending.journal_entry(name);
            if let Err(e) = journal.write_entry(&journal_key(key.as_bytes(), name), &entry, true) {
                // The entry still names the spool file, which therefore stays; the next run uploads it again.
                tracing::warn!("tahoe-mount: cannot update the journal for {name:?}: {e}");
                journaled = false;
            }
        }
        (keys, journaled)
    }

    /// The directory's changes that can be published now (links to caps, and unlinks) and its writecap; `None`
    /// when there are none.
    pub fn ready(&self, key: &str) -> Option<(Cap, Vec<ReadyChange>)> {
        let mut dir_cap = None;
        let mut changes = Vec::new();
        for (name, pending) in self.in_directory(key) {
            let link = match &pending.link {
                None => None,
                Some((Target::Cap(cap), metadata)) => Some((cap.clone(), metadata.clone())),
                Some((Target::Spool(_), _)) => continue,
            };
            dir_cap.get_or_insert_with(|| pending.dir_cap.clone());
            changes.push(ReadyChange {
                name: name.to_owned(),
                seq: pending.seq,
                link,
                replaces: pending.replaces.clone(),
            });
        }
        Some((dir_cap?, changes))
    }

    /// A publish of directory `key` carried `changes`: each one no newer change of its name replaced since leaves
    /// the log and the journal.
    pub fn published(&mut self, journal: &Spool, key: &str, changes: &[ReadyChange]) {
        for change in changes {
            let slot = (key.to_owned(), change.name.clone());
            if self.changes.get(&slot).is_some_and(|p| p.seq == change.seq) {
                self.changes.remove(&slot);
                if let Err(e) = journal.remove_entry(&journal_key(key.as_bytes(), &change.name)) {
                    tracing::warn!("tahoe-mount: cannot remove a journal entry: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str =
        "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER_DIR: &str =
        "URI:DIR2:baaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const FILE: &str = "URI:LIT:mfrgg";

    struct Scratch {
        dir: std::path::PathBuf,
        spool: Spool,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("tahoe-mount-pending-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let spool = Spool::open(&dir).unwrap();
            Scratch { dir, spool }
        }

        fn journal(&self) -> Vec<JournalEntry> {
            let (entries, warnings) = self.spool.load_entries().unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            entries.into_values().collect()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn cap(text: &str) -> Cap {
        Cap::parse(text).unwrap()
    }

    fn link(text: &str) -> Option<(Target, Metadata)> {
        Some((Target::Cap(cap(text)), Metadata::new()))
    }

    #[test]
    fn a_change_is_journaled_before_it_counts_and_a_newer_one_replaces_it() {
        let s = Scratch::new("record");
        let mut log = PendingLog::default();
        let (first, old) = log
            .record(&s.spool, &cap(DIR), "a", link(FILE), None, true)
            .unwrap();
        assert!(old.is_none());
        assert_eq!(s.journal().len(), 1);
        let (second, old) = log
            .record(&s.spool, &cap(DIR), "a", None, None, false)
            .unwrap();
        assert!(second > first);
        assert_eq!(old.map(|p| p.seq), Some(first), "the change it replaced");
        let journal = s.journal();
        assert_eq!(journal.len(), 1, "one entry per name");
        assert_eq!(
            journal[0].link, None,
            "the newest change is what the journal holds"
        );
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn removed_directories_accumulate_per_name_up_to_a_bound() {
        let s = Scratch::new("replaces");
        let mut log = PendingLog::default();
        let removed = |i: usize| {
            cap(&format!(
                "URI:DIR2:{}:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                data_encoding::BASE32_NOPAD
                    .encode(&[i as u8; 16])
                    .to_lowercase()
            ))
        };
        for i in 0..MAX_REPLACED + 3 {
            log.record(&s.spool, &cap(DIR), "d", None, Some(removed(i)), false)
                .unwrap();
            // Removing the same directory again does not count twice.
            log.record(&s.spool, &cap(DIR), "d", None, Some(removed(i)), false)
                .unwrap();
        }
        log.record(&s.spool, &cap(DIR), "d", link(FILE), None, false)
            .unwrap();
        let key = dir_key(&cap(DIR));
        let replaces = &log.get(&key, "d").unwrap().replaces;
        assert_eq!(replaces.len(), MAX_REPLACED);
        assert_eq!(replaces.first(), Some(&removed(3)), "the oldest go first");
        assert_eq!(replaces.last(), Some(&removed(MAX_REPLACED + 2)));
        assert_eq!(
            s.journal()[0].replaces.len(),
            MAX_REPLACED,
            "journaled too: a restart still knows them"
        );
    }

    #[test]
    fn spooled_links_wait_for_their_upload_then_become_ready() {
        let s = Scratch::new("ready");
        let mut log = PendingLog::default();
        let file = s.spool.create().unwrap();
        file.write_at(0, b"hello").unwrap();
        file.seal().unwrap();
        let spooled = || Some((Target::Spool(file.clone()), Metadata::new()));
        log.record(&s.spool, &cap(DIR), "x", spooled(), None, true)
            .unwrap();
        log.record(&s.spool, &cap(DIR), "hard link of x", spooled(), None, true)
            .unwrap();
        log.record(&s.spool, &cap(DIR), "gone", None, None, true)
            .unwrap();
        log.record(
            &s.spool,
            &cap(OTHER_DIR),
            "elsewhere",
            link(FILE),
            None,
            true,
        )
        .unwrap();
        let key = dir_key(&cap(DIR));
        assert!(log.links_spool(&file));
        assert_eq!(log.spooled_bytes(), 10, "counted once per name");
        let (dir_cap, ready) = log.ready(&key).unwrap();
        assert_eq!(dir_cap, cap(DIR));
        let names: Vec<&str> = ready.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["gone"], "spooled links wait for their upload");

        let (keys, journaled) = log.spool_uploaded(&s.spool, &file, &cap(FILE));
        assert!(journaled);
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), [key.as_str()]);
        assert!(!log.links_spool(&file));
        assert_eq!(log.spooled_bytes(), 0);
        let (_, ready) = log.ready(&key).unwrap();
        assert_eq!(ready.len(), 3);
        assert!(
            s.journal()
                .iter()
                .all(|e| !matches!(e.link, Some(super::super::spool::JournalTarget::Spool(_)))),
            "the journal no longer needs the spool file"
        );
    }

    #[test]
    fn a_publish_removes_only_what_it_carried() {
        let s = Scratch::new("published");
        let mut log = PendingLog::default();
        log.record(&s.spool, &cap(DIR), "a", link(FILE), None, true)
            .unwrap();
        log.record(&s.spool, &cap(DIR), "b", None, None, true)
            .unwrap();
        let key = dir_key(&cap(DIR));
        let (_, carried) = log.ready(&key).unwrap();
        // While the publish ran, "a" changed again: that change must still be published.
        log.record(&s.spool, &cap(DIR), "a", None, None, true)
            .unwrap();
        log.published(&s.spool, &key, &carried);
        let left: Vec<&str> = log.iter().map(|(_, name, _)| name).collect();
        assert_eq!(left, ["a"]);
        assert_eq!(s.journal().len(), 1);
        assert_eq!(log.directories().len(), 1);
        assert!(log.ready(&dir_key(&cap(OTHER_DIR))).is_none());
    }
}
