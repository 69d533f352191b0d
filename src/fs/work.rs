//! The background work of the filesystem: the upload queue (sealed spool files become CHK/LIT caps, a few at a
//! time, retried with backoff when the grid cannot take them) and the directory publishers (one task per directory
//! with ready changes, which gathers them for a moment and publishes them in one new version).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cap::Cap;
use crate::dirnode::{Child, Directory, DirectoryError, DirectoryNode, Entry, Metadata};
use crate::immutable::upload::upload_file;

use super::spool::{JournalEntry, SpoolFile, journal_key};
use super::{Fs, Node, Target};

/// One change ready to publish: the name, its journal sequence number, the cap and metadata to link there
/// (`None`: unlink), and the directories this process removed from the name.
type ReadyChange = (String, u64, Option<(Cap, Metadata)>, Vec<Cap>);

/// Longest wait between retries of a failed upload or publish.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Fs {
    /// Queues a sealed spool file for upload (once: a file already queued is not queued again). `after` is the
    /// spool id of the version it replaces, if that one may still be uploading: this one waits for it, so that a file
    /// closed again and again uploads its versions one at a time, and skips those replaced meanwhile.
    pub(super) fn enqueue_upload(&self, file: Arc<SpoolFile>, after: Option<String>) {
        if !self.state().uploading.insert(file.id.clone()) {
            return;
        }
        let fs = self.clone();
        let span = tracing::info_span!("upload", spool = %file.id, bytes = file.size());
        let upload = async move {
            if let Some(older) = after {
                fs.wait_for_upload(&older).await;
            }
            fs.upload_until_done(file).await
        };
        self.inner
            .runtime
            .spawn(tracing::Instrument::instrument(upload, span));
    }

    async fn wait_for_upload(&self, id: &str) {
        let mut progress = self.inner.progress.subscribe();
        loop {
            progress.borrow_and_update();
            if !self.state().uploading.contains(id) {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    fn still_needed(&self, file: &Arc<SpoolFile>) -> bool {
        self.state()
            .pending
            .values()
            .any(|p| matches!(&p.link, Some((Target::Spool(s), _)) if Arc::ptr_eq(s, file)))
    }

    async fn upload_until_done(&self, file: Arc<SpoolFile>) {
        let mut backoff = Duration::from_secs(2);
        let mut quiet_retries = 6;
        loop {
            if !self.still_needed(&file) {
                break;
            }
            let result = {
                let _slot = self.inner.upload_slots.acquire().await;
                if !self.still_needed(&file) {
                    break;
                }
                if file.was_recovered() {
                    let mut options = self.inner.options.upload.clone();
                    let mut key = vec![0u8; 32];
                    if getrandom::fill(&mut key).is_ok() {
                        options.convergence = crate::config::Secret::new(key);
                    }
                    upload_file(&self.grid(), file.file(), &options).await
                } else {
                    upload_file(&self.grid(), file.file(), &self.inner.options.upload).await
                }
            };
            match result {
                Ok(done) => {
                    {
                        let mut state = self.state();
                        state.activity.uploads += 1;
                        state.activity.bytes_uploaded += file.size();
                    }
                    self.uploaded(&file, Cap::File(done.cap));
                    break;
                }
                Err(_) if quiet_retries > 0 => {
                    self.state().activity.upload_failures += 1;
                    // Some refusals pass: above all, another upload of the same bytes (a file's earlier version,
                    // converging on the same storage index) holding the shares until it ends. While other uploads
                    // are under way, wait for one to end and try again before fsync hears of it.
                    quiet_retries -= 1;
                    let mut progress = self.inner.progress.subscribe();
                    if self.state().uploading.len() > 1 {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), progress.changed()).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!("tahoe-mount: upload of a spooled file failed (retried): {e}");
                    {
                        let mut state = self.state();
                        state.activity.upload_failures += 1;
                        state.errors.epoch += 1;
                        let epoch = state.errors.epoch;
                        state
                            .errors
                            .uploads
                            .insert(file.id.clone(), (epoch, e.to_string()));
                    }
                    self.inner.progress.send_modify(|n| *n += 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        {
            let mut state = self.state();
            state.uploading.remove(&file.id);
            state.errors.uploads.remove(&file.id);
        }
        self.inner.progress.send_modify(|n| *n += 1);
    }

    /// An upload is done: every pending link to the spool file now links the cap (journaled before the spool
    /// file may go), and every inode showing that version knows its cap.
    fn uploaded(&self, file: &Arc<SpoolFile>, cap: Cap) {
        let mut state = self.state();
        let mut rewritten = Vec::new();
        for ((key, name), pending) in state.pending.iter_mut() {
            if let Some((target, metadata)) = &mut pending.link
                && matches!(target, Target::Spool(s) if Arc::ptr_eq(s, file))
            {
                *target = Target::Cap(cap.clone());
                rewritten.push((
                    key.clone(),
                    JournalEntry {
                        dir: pending.dir_cap.to_string(),
                        name: name.clone(),
                        link: Some(target.to_journal()),
                        metadata: Some(metadata.to_json()),
                        replaces: pending.replaces.iter().map(Cap::to_string).collect(),
                    },
                ));
            }
        }
        let mut journaled = true;
        for (key, entry) in &rewritten {
            if let Err(e) =
                self.inner
                    .spool
                    .write_entry(&journal_key(key.as_bytes(), &entry.name), entry, true)
            {
                // The entry still names the spool file, which therefore stays; the next run uploads it again.
                tracing::warn!(
                    "tahoe-mount: cannot update the journal for {:?}: {e}",
                    entry.name
                );
                journaled = false;
            }
        }
        let state = &mut *state;
        for (ino, inode) in state.inodes.iter_mut() {
            if let Node::File(node) = &mut inode.node
                && matches!(&node.linked, Target::Spool(s) if Arc::ptr_eq(s, file))
            {
                node.linked = Target::Cap(cap.clone());
                // The local copy of a closed file goes: each one holds a descriptor, and thousands of files are
                // written at once. An open file keeps it until its last close, so that its next write or read
                // need not fetch it back from the grid.
                if !state.handles.is_open(*ino)
                    && node.spool.as_ref().is_some_and(|s| Arc::ptr_eq(s, file))
                {
                    node.spool = None;
                }
            }
        }
        if journaled {
            file.release();
        }
        let keys: BTreeSet<String> = rewritten.into_iter().map(|(k, _)| k).collect();
        for key in keys {
            self.kick_publisher(state, &key);
        }
    }

    /// Starts the publisher of a directory, unless it is running (it picks up new changes itself).
    pub(super) fn kick_publisher(&self, state: &mut super::State, key: &str) {
        if !state.publishing.insert(key.to_owned()) {
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
        let keys: BTreeSet<String> = state.pending.keys().map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.kick_publisher(&mut state, &key);
        }
    }

    /// The directory's changes that can be published now (links to caps, and unlinks), with their sequence
    /// numbers.
    fn ready_changes(&self, key: &str) -> Option<(Cap, Vec<ReadyChange>)> {
        let state = self.state();
        let mut dir_cap = None;
        let mut changes = Vec::new();
        for ((_, name), pending) in state
            .pending
            .range((key.to_owned(), String::new())..)
            .take_while(|((k, _), _)| k == key)
        {
            let change = match &pending.link {
                None => None,
                Some((Target::Cap(cap), metadata)) => Some((cap.clone(), metadata.clone())),
                Some((Target::Spool(_), _)) => continue,
            };
            dir_cap.get_or_insert_with(|| pending.dir_cap.clone());
            changes.push((name.clone(), pending.seq, change, pending.replaces.clone()));
        }
        Some((dir_cap?, changes))
    }

    async fn publish_until_done(&self, key: String) {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.gather(&key).await;
            let Some((dir_cap, changes)) = self.ready_changes(&key) else {
                let mut state = self.state();
                // Re-checked under the lock: a change made since would otherwise wait for no publisher.
                if self.ready_changes_locked(&state, &key) {
                    continue;
                }
                state.publishing.remove(&key);
                break;
            };
            tracing::debug!(changes = changes.len(), "publishing");
            let result = self.publish(&dir_cap, &changes).await;
            let failed = {
                let mut state = self.state();
                match result {
                    Ok(written) => {
                        for (name, seq, _, _) in &changes {
                            let slot = (key.clone(), name.clone());
                            if state.pending.get(&slot).is_some_and(|p| p.seq == *seq) {
                                state.pending.remove(&slot);
                                if let Err(e) = self
                                    .inner
                                    .spool
                                    .remove_entry(&journal_key(key.as_bytes(), name))
                                {
                                    tracing::warn!(
                                        "tahoe-mount: cannot remove a journal entry: {e}"
                                    );
                                }
                            }
                        }
                        // What we wrote is the directory's newest version: it becomes the listing, so nothing reads
                        // the directory again soon just because this publish ended.
                        let dirs: Vec<u64> = state
                            .inodes
                            .iter()
                            .filter_map(|(&ino, inode)| match &inode.node {
                                Node::Dir { cap, .. } if super::dir_key(cap) == key => Some(ino),
                                _ => None,
                            })
                            .collect();
                        for ino in dirs {
                            let _ = self.merge_listing(&mut state, ino, &key, &written);
                        }
                        state.errors.publishes.remove(&key);
                        state.activity.publishes += 1;
                        state.activity.changes_published += changes.len() as u64;
                        *state.published.entry(key.clone()).or_default() += 1;
                        false
                    }
                    Err(e) => {
                        tracing::warn!("tahoe-mount: directory publish failed (retried): {e}");
                        state.activity.publish_failures += 1;
                        state.errors.epoch += 1;
                        let epoch = state.errors.epoch;
                        state
                            .errors
                            .publishes
                            .insert(key.clone(), (epoch, e.to_string()));
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
            if self.state().urgent.remove(key) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = notified => {}
            }
        }
    }

    fn ready_changes_locked(&self, state: &super::State, key: &str) -> bool {
        state
            .pending
            .range((key.to_owned(), String::new())..)
            .take_while(|((k, _), _)| k == key)
            .any(|(_, p)| !matches!(&p.link, Some((Target::Spool(_), _))))
    }

    /// Publishes one directory's changes in one new version. Unlinking a name that is gone is no error (another
    /// client removed it too); a file linked where another client has meanwhile put a directory goes beside it,
    /// under a name that says so, rather than replace it.
    /// Returns the version written.
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
            let mut new = current.clone();
            for (name, _, change, replaces) in changes {
                match change {
                    None => {
                        new.remove(name);
                    }
                    Some((cap, metadata)) => {
                        let child = Child::from_cap(cap).map_err(|e| {
                            DirectoryError::Mutable(crate::mutable::MutableError::Failed(
                                e.to_string(),
                            ))
                        })?;
                        let mut name = name.clone();
                        let ours_to_replace = |old: &Child| {
                            matches!(old, Child::Known(old) if replaces.contains(old))
                        };
                        if let Some(old) = new.get(&name)
                            && old.child.is_directory()
                            && !child.is_directory()
                            && old.child != child
                            && !ours_to_replace(&old.child)
                        {
                            name = format!("{name} (conflict {})", now as u64);
                            tracing::warn!(
                                "tahoe-mount: another client put a directory where a file was linked: the file \
                                 goes beside it, as {name:?}"
                            );
                            tracing::debug!(
                                found = old.child.cap().map(|c| super::dir_key(c)[..8].to_owned()),
                                replaces = ?replaces.iter().map(|c| super::dir_key(c)[..8].to_owned()).collect::<Vec<_>>(),
                                "conflict"
                            );
                        }
                        let old = new.get(&name).map(|e| e.metadata.clone());
                        let metadata = Metadata::updated(old.as_ref(), Some(metadata), now);
                        new.insert(&name, Entry { child, metadata })
                            .map_err(|e| DirectoryError::NoSuchChild(e.to_string()))?;
                    }
                }
            }
            written = Some(new.clone());
            Ok(Some(new))
        })
        .await?;
        // `update` returned Ok, so the edit ran and its last result is what was written.
        written.ok_or_else(|| {
            DirectoryError::Mutable(crate::mutable::MutableError::Failed(
                "the directory update wrote nothing".into(),
            ))
        })
    }
}
