//! The directory publishers: one task per directory with ready changes, which lets them gather for a moment
//! (less when an `fsync` waits) and publishes them in one new version of the directory. [`Publishers`] is their
//! bookkeeping and [`apply`] the edit they make; the tasks are methods of [`Fs`], since a publish that lands
//! changes the pending log and the directory listings together.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::cap::Cap;
use crate::dirnode::{Child, Directory, DirectoryError, DirectoryNode, Entry, Metadata};
use crate::mutable::MutableError;

use super::pending::ReadyChange;
use super::upload::MAX_BACKOFF;
use super::{Fs, Node, dir_key};

#[derive(Default)]
pub(super) struct Publishers {
    /// Directories whose publisher runs.
    running: BTreeSet<String>,
    /// Publishes done per directory: a listing read while one finished may predate it, and is not merged.
    published: HashMap<String, u64>,
    /// Directories an `fsync` waits for: their publishers do not wait to gather more changes.
    urgent: BTreeSet<String>,
}

impl Publishers {
    /// Marks the directory's publisher as running; false if it already was.
    pub fn start(&mut self, key: &str) -> bool {
        self.running.insert(key.to_owned())
    }

    pub fn stop(&mut self, key: &str) {
        self.running.remove(key);
    }

    /// How many publishes of the directory have landed.
    pub fn published(&self, key: &str) -> u64 {
        self.published.get(key).copied().unwrap_or(0)
    }

    fn count_publish(&mut self, key: &str) {
        *self.published.entry(key.to_owned()).or_default() += 1;
    }

    /// Asks the directory's publisher not to wait; true if it was not asked already.
    pub fn hurry(&mut self, key: &str) -> bool {
        self.urgent.insert(key.to_owned())
    }

    /// Whether the publisher was asked to hurry (the request is used up).
    fn take_hurry(&mut self, key: &str) -> bool {
        self.urgent.remove(key)
    }
}

/// The new version of `current` with `changes` made at time `now` (seconds since the epoch). Unlinking a name that
/// is gone is no error (another client removed it too); a file linked where another client has meanwhile put a
/// directory goes beside it, under a name that says so, rather than replace it. A directory this process removed
/// from the name (`replaces`) is its own to replace.
pub(super) fn apply(
    current: &Directory,
    changes: &[ReadyChange],
    now: f64,
) -> Result<Directory, DirectoryError> {
    let mut new = current.clone();
    for change in changes {
        let Some((cap, metadata)) = &change.link else {
            new.remove(&change.name);
            continue;
        };
        let child = Child::from_cap(cap)
            .map_err(|e| DirectoryError::Mutable(MutableError::Failed(e.to_string())))?;
        let mut name = change.name.clone();
        let ours_to_replace =
            |old: &Child| matches!(old, Child::Known(old) if change.replaces.contains(old));
        if let Some(old) = new.get(&name)
            && old.child.is_directory()
            && !child.is_directory()
            && old.child != child
            && !ours_to_replace(&old.child)
        {
            name = format!("{name} (conflict {})", now as u64);
            tracing::warn!(
                "tahoe-mount: another client put a directory where a file was linked: the file goes beside it, \
                 as {name:?}"
            );
            tracing::debug!(
                found = old.child.cap().map(|c| dir_key(c)[..8].to_owned()),
                replaces = ?change.replaces.iter().map(|c| dir_key(c)[..8].to_owned()).collect::<Vec<_>>(),
                "conflict"
            );
        }
        let old = new.get(&name).map(|e| e.metadata.clone());
        let metadata = Metadata::updated(old.as_ref(), Some(metadata), now);
        new.insert(&name, Entry { child, metadata })
            .map_err(|e| DirectoryError::NoSuchChild(e.to_string()))?;
    }
    Ok(new)
}

impl Fs {
    /// Starts the publisher of a directory, unless it is running (it picks up new changes itself).
    pub(super) fn kick_publisher(&self, state: &mut super::State, key: &str) {
        if !state.publishers.start(key) {
            return;
        }
        let fs = self.clone();
        let key = key.to_owned();
        // The directory by the start of its storage index: enough to tell publishers apart, and no secret.
        let span = tracing::info_span!("publish", directory = &key[..key.len().min(8)]);
        let publish = async move { fs.publish_until_done(key).await };
        self.inner
            .runtime
            .spawn(tracing::Instrument::instrument(publish, span));
    }

    pub(super) fn kick_all_publishers(&self) {
        let mut state = self.state();
        for key in state.pending.directories() {
            self.kick_publisher(&mut state, &key);
        }
    }

    /// Asks the directory's publisher not to wait for more changes: an `fsync` waits for it.
    pub(super) fn hurry_publisher(&self, state: &mut super::State, key: &str) {
        if state.publishers.hurry(key) {
            self.inner.urgent.notify_waiters();
        }
    }

    async fn publish_until_done(&self, key: String) {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.gather(&key).await;
            let (dir_cap, changes) = {
                let mut state = self.state();
                match state.pending.ready(&key) {
                    Some(ready) => ready,
                    None => {
                        // Stopped under the same lock that found nothing: a change recorded after this kicks a
                        // new publisher, and none is left waiting for this one.
                        state.publishers.stop(&key);
                        break;
                    }
                }
            };
            tracing::debug!(changes = changes.len(), "publishing");
            let result = self.publish(&dir_cap, &changes).await;
            let failed = {
                let mut state = self.state();
                let state = &mut *state;
                match result {
                    Ok(written) => {
                        state.pending.published(&self.inner.spool, &key, &changes);
                        // What we wrote is the directory's newest version: it becomes the listing, so nothing reads
                        // the directory again soon just because this publish ended.
                        let dirs: Vec<u64> = state
                            .inodes
                            .iter()
                            .filter_map(|(&ino, inode)| match &inode.node {
                                Node::Dir { cap, .. } if dir_key(cap) == key => Some(ino),
                                _ => None,
                            })
                            .collect();
                        for ino in dirs {
                            let _ = self.merge_listing(state, ino, &key, &written);
                        }
                        state.failures.publish_succeeded(&key);
                        state.activity.publishes += 1;
                        state.activity.changes_published += changes.len() as u64;
                        state.publishers.count_publish(&key);
                        false
                    }
                    Err(e) => {
                        tracing::warn!("tahoe-mount: directory publish failed (retried): {e}");
                        state.activity.publish_failures += 1;
                        state.failures.publish_failed(&key, e.to_string());
                        true
                    }
                }
            };
            self.inner.progress.send_modify(|n| *n += 1);
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = Duration::from_secs(1);
            }
        }
        self.inner.progress.send_modify(|n| *n += 1);
    }

    /// Lets a directory's changes gather for the publish delay, or less if an `fsync` is waiting for them.
    async fn gather(&self, key: &str) {
        let deadline = tokio::time::Instant::now() + self.inner.options.publish_delay;
        loop {
            let notified = self.inner.urgent.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a wake-up between the two is not missed.
            notified.as_mut().enable();
            if self.state().publishers.take_hurry(key) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = notified => {}
            }
        }
    }

    /// Publishes one directory's changes in one new version (see [`apply`]). Returns the version written.
    async fn publish(
        &self,
        dir_cap: &Cap,
        changes: &[ReadyChange],
    ) -> Result<Directory, DirectoryError> {
        let node = DirectoryNode::open(
            self.grid(),
            dir_cap.clone(),
            self.inner.options.mutable.clone(),
        )?;
        let mut written = None;
        node.update(|current: &Directory, now| {
            let new = apply(current, changes, now)?;
            written = Some(new.clone());
            Ok(Some(new))
        })
        .await?;
        // `update` returned Ok, so the edit ran and its last result is what was written.
        written.ok_or_else(|| {
            DirectoryError::Mutable(MutableError::Failed(
                "the directory update wrote nothing".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_A: &str = "URI:LIT:mfrgg";
    const FILE_B: &str = "URI:LIT:mjqxe";
    const DIR_OURS: &str =
        "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIR_THEIRS: &str =
        "URI:DIR2:baaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const NOW: f64 = 1_800_000_000.0;

    fn cap(text: &str) -> Cap {
        Cap::parse(text).unwrap()
    }

    fn link(name: &str, target: &str, replaces: &[&str]) -> ReadyChange {
        ReadyChange {
            name: name.into(),
            seq: 1,
            link: Some((cap(target), Metadata::new())),
            replaces: replaces.iter().map(|c| cap(c)).collect(),
        }
    }

    fn unlink(name: &str) -> ReadyChange {
        ReadyChange {
            name: name.into(),
            seq: 1,
            link: None,
            replaces: Vec::new(),
        }
    }

    fn directory(entries: &[(&str, &str)]) -> Directory {
        apply(
            &Directory::default(),
            &entries
                .iter()
                .map(|(n, c)| link(n, c, &[]))
                .collect::<Vec<_>>(),
            NOW - 100.0,
        )
        .unwrap()
    }

    fn names(directory: &Directory) -> Vec<String> {
        directory.iter().map(|(name, _)| name.to_owned()).collect()
    }

    #[test]
    fn links_and_unlinks_land_in_one_version_and_unlinking_a_gone_name_is_no_error() {
        let current = directory(&[("a", FILE_A), ("old", FILE_B)]);
        let new = apply(
            &current,
            &[
                link("a", FILE_B, &[]),
                unlink("old"),
                unlink("never there"),
                link("b", FILE_A, &[]),
            ],
            NOW,
        )
        .unwrap();
        assert_eq!(names(&new), ["a", "b"]);
        assert_eq!(
            new.get("a").unwrap().child,
            Child::from_cap(&cap(FILE_B)).unwrap()
        );
        assert_eq!(
            names(&current),
            ["a", "old"],
            "the current version is left as it was"
        );
    }

    #[test]
    fn a_file_never_replaces_another_clients_directory() {
        let current = directory(&[("x", DIR_THEIRS)]);
        let new = apply(&current, &[link("x", FILE_A, &[DIR_OURS])], NOW).unwrap();
        assert_eq!(names(&new), ["x", &format!("x (conflict {})", NOW as u64)]);
        assert!(
            new.get("x").unwrap().child.is_directory(),
            "their directory stays"
        );
    }

    #[test]
    fn a_file_replaces_a_directory_this_process_removed() {
        let current = directory(&[("x", DIR_OURS)]);
        let new = apply(&current, &[link("x", FILE_A, &[DIR_OURS])], NOW).unwrap();
        assert_eq!(names(&new), ["x"]);
        assert!(!new.get("x").unwrap().child.is_directory());
    }

    #[test]
    fn publishers_start_once_count_publishes_and_hurry_once() {
        let mut publishers = Publishers::default();
        assert!(publishers.start("d"));
        assert!(!publishers.start("d"));
        assert_eq!(publishers.published("d"), 0);
        publishers.count_publish("d");
        assert_eq!(publishers.published("d"), 1);
        assert!(publishers.hurry("d"));
        assert!(!publishers.hurry("d"), "asked already");
        assert!(publishers.take_hurry("d"));
        assert!(!publishers.take_hurry("d"), "used up");
        publishers.stop("d");
        assert!(publishers.start("d"));
    }
}
