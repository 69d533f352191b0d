//! The upload queue: sealed spool files become CHK/LIT caps, a few at a time (`parallel_uploads` slots), retried
//! with backoff when the grid cannot take them. A file closed again and again uploads its versions one at a time,
//! and a version no pending change links any more is skipped. [`Uploads`] is the queue's bookkeeping; the tasks
//! that drive it are methods of [`Fs`], since an upload that lands changes the pending log and the inodes together.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cap::Cap;
use crate::immutable::upload::upload_file;

use super::spool::SpoolFile;
use super::{Fs, Node, Target};

/// Longest wait between retries of a failed upload or publish.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Quick retries of a failed upload before `fsync` hears of the failure (see [`Fs::upload_until_done`]).
const QUIET_RETRIES: u32 = 6;

/// The spool files being uploaded (queued, waiting for a slot, or under way), by id.
#[derive(Default)]
pub(super) struct Uploads {
    running: BTreeSet<String>,
}

impl Uploads {
    /// Marks the file's upload as started; false if it already was.
    pub fn start(&mut self, spool_id: &str) -> bool {
        self.running.insert(spool_id.to_owned())
    }

    pub fn end(&mut self, spool_id: &str) {
        self.running.remove(spool_id);
    }

    pub fn is_running(&self, spool_id: &str) -> bool {
        self.running.contains(spool_id)
    }

    pub fn count(&self) -> usize {
        self.running.len()
    }
}

impl Fs {
    /// Queues a sealed spool file for upload (once: a file already queued is not queued again). `after` is the
    /// spool id of the version it replaces, if that one may still be uploading: this one waits for it, so that a file
    /// closed again and again uploads its versions one at a time, and skips those replaced meanwhile.
    pub(super) fn enqueue_upload(&self, file: Arc<SpoolFile>, after: Option<String>) {
        if !self.state().uploads.start(&file.id) {
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
            if !self.state().uploads.is_running(id) {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    fn still_needed(&self, file: &Arc<SpoolFile>) -> bool {
        self.state().pending.links_spool(file)
    }

    async fn upload_until_done(&self, file: Arc<SpoolFile>) {
        let mut backoff = Duration::from_secs(2);
        let mut quiet_retries = QUIET_RETRIES;
        loop {
            if !self.still_needed(&file) {
                break;
            }
            let result = {
                let _slot = self.inner.upload_slots.acquire().await;
                if !self.still_needed(&file) {
                    break;
                }
                let mut options = self.inner.options.upload.clone();
                if file.was_recovered() {
                    // The servers may still hold the cut-short upload's buckets of this storage index reserved
                    // (Tahoe: 30 minutes), refusing them to us: a fresh key gives a fresh storage index.
                    let mut key = vec![0u8; 32];
                    if getrandom::fill(&mut key).is_ok() {
                        options.convergence = crate::config::Secret::new(key);
                    }
                }
                upload_file(&self.grid(), file.file(), &options).await
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
                    if self.state().uploads.count() > 1 {
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
                        state.failures.upload_failed(&file.id, e.to_string());
                    }
                    self.inner.progress.send_modify(|n| *n += 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        {
            let mut state = self.state();
            state.uploads.end(&file.id);
            state.failures.upload_ended(&file.id);
        }
        self.inner.progress.send_modify(|n| *n += 1);
    }

    /// An upload is done: every pending link to the spool file now links the cap (journaled before the spool
    /// file may go), and every inode showing that version knows its cap.
    fn uploaded(&self, file: &Arc<SpoolFile>, cap: Cap) {
        let mut state = self.state();
        let state = &mut *state;
        let (keys, journaled) = state.pending.spool_uploaded(&self.inner.spool, file, &cap);
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
        for key in keys {
            self.kick_publisher(state, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_started_once_until_it_ends() {
        let mut uploads = Uploads::default();
        assert!(uploads.start("a"));
        assert!(
            !uploads.start("a"),
            "a file already queued is not queued again"
        );
        assert!(uploads.start("b"));
        assert_eq!(uploads.count(), 2);
        uploads.end("a");
        assert!(!uploads.is_running("a"));
        assert!(uploads.is_running("b"));
        assert!(
            uploads.start("a"),
            "a later version of the same id may go again"
        );
    }
}
