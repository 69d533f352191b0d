//! Replay: what an earlier run left in the journal becomes this run's pending changes, with the sealed spool files
//! they link. Entries that cannot be understood are left on disk and reported; spool files no entry names are
//! removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::cap::Cap;
use crate::dirnode::{Metadata, normalize_name};

use super::inodes::Target;
use super::pending::Pending;
use super::spool::{JournalTarget, Spool, SpoolFile};
use super::{FsResult, dir_key};

/// What the journal held.
pub(super) struct Replayed {
    /// By (directory key, name), as [`super::State`] keeps them.
    pub pending: BTreeMap<(String, String), Pending>,
    /// The sealed spool files the entries link, each once: to be uploaded.
    pub spools: Vec<Arc<SpoolFile>>,
    /// The sequence number of the last entry.
    pub seq: u64,
    /// What could not be replayed, and why.
    pub warnings: Vec<String>,
}

pub(super) fn replay(spool: &Spool) -> FsResult<Replayed> {
    let (entries, mut warnings) = spool.load_entries()?;
    let mut pending = BTreeMap::new();
    let mut keep = BTreeSet::new();
    let mut spools: HashMap<String, Arc<SpoolFile>> = HashMap::new();
    let mut seq = 0;
    for (key, entry) in entries {
        let dir_cap = match Cap::parse(&entry.dir) {
            Ok(cap) if cap.is_directory() && !cap.is_readonly() => cap,
            _ => {
                warnings.push(format!(
                    "journal entry {key}: not a directory writecap; left on disk"
                ));
                continue;
            }
        };
        let link = match &entry.link {
            None => None,
            Some(target) => {
                let metadata = match entry
                    .metadata
                    .as_deref()
                    .map(|m| Metadata::parse(m.as_bytes()))
                {
                    None => Metadata::new(),
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        warnings.push(format!(
                            "journal entry {key}: metadata {e}; linked without it"
                        ));
                        Metadata::new()
                    }
                };
                let target = match target {
                    JournalTarget::Cap(text) => match Cap::parse(text) {
                        Ok(cap) => Target::Cap(cap),
                        Err(e) => {
                            warnings.push(format!("journal entry {key}: {e}; left on disk"));
                            continue;
                        }
                    },
                    JournalTarget::Spool(id) => {
                        let file = match spools.get(id) {
                            Some(file) => file.clone(),
                            None => match spool.reopen(id) {
                                Ok(file) => {
                                    spools.insert(id.clone(), file.clone());
                                    file
                                }
                                Err(e) => {
                                    warnings.push(format!(
                                        "journal entry {key} ({:?}): its data is gone: {e}; left on disk",
                                        entry.name
                                    ));
                                    continue;
                                }
                            },
                        };
                        keep.insert(id.clone());
                        Target::Spool(file)
                    }
                };
                Some((target, metadata))
            }
        };
        seq += 1;
        pending.insert(
            (dir_key(&dir_cap), normalize_name(&entry.name)),
            Pending {
                dir_cap,
                link,
                seq,
                replaces: entry
                    .replaces
                    .iter()
                    .filter_map(|c| Cap::parse(c).ok())
                    .filter(Cap::is_directory)
                    .collect(),
            },
        );
    }
    spool.collect_garbage(&keep)?;
    Ok(Replayed {
        pending,
        spools: spools.into_values().collect(),
        seq,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::spool::{JournalEntry, journal_key};

    const DIR: &str =
        "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn entry(name: &str, link: Option<JournalTarget>) -> JournalEntry {
        JournalEntry {
            dir: DIR.to_owned(),
            name: name.to_owned(),
            link,
            metadata: None,
            replaces: vec![DIR.to_owned(), "not a cap".to_owned()],
        }
    }

    #[test]
    fn entries_become_pending_changes_sharing_spool_files_and_bad_ones_are_reported() {
        let dir = std::env::temp_dir().join(format!("tahoe-mount-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir).unwrap();
        let sealed = spool.create().unwrap();
        sealed.write_at(0, b"bytes").unwrap();
        sealed.seal().unwrap();
        let orphan = spool.create().unwrap();
        orphan.seal().unwrap();
        let (sealed_id, orphan_id) = (sealed.id.clone(), orphan.id.clone());
        let target = || Some(JournalTarget::Spool(sealed_id.clone()));
        let entries = [
            entry("a", target()),
            entry("hard link of a", target()),
            entry("gone", None),
            entry("lost", Some(JournalTarget::Spool("0123".into()))),
            JournalEntry {
                dir: "URI:LIT:".into(),
                ..entry("not in a directory", None)
            },
        ];
        for e in &entries {
            spool
                .write_entry(&journal_key(DIR.as_bytes(), &e.name), e, true)
                .unwrap();
        }
        drop((sealed, orphan));
        let replayed = replay(&spool).unwrap();
        assert_eq!(replayed.pending.len(), 3, "{:?}", replayed.pending.keys());
        assert_eq!(replayed.spools.len(), 1, "one upload for two names");
        assert_eq!(replayed.seq, 3);
        assert_eq!(replayed.warnings.len(), 2, "{:?}", replayed.warnings);
        let names: Vec<&str> = replayed.pending.keys().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a", "gone", "hard link of a"]);
        let a = replayed.pending.values().next().unwrap();
        assert_eq!(
            a.replaces.len(),
            1,
            "the directory removed, without what does not parse"
        );
        assert!(dir.join("data").join(&sealed_id).exists());
        assert!(
            !dir.join("data").join(&orphan_id).exists(),
            "named by no entry: removed"
        );
        drop(replayed);
        drop(spool);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
