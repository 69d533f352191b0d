//! Reading a CHK file: find shares, trust nothing until it hashes to the cap, and read any byte range by
//! fetching only the segments that hold it (`allmydata/immutable/downloader/`).
//!
//! Servers are asked in permuted order; the k shares of the servers that answer first are used, one per server
//! where possible and primary shares (0..k, which need no decoding) before the others. Each share's URI extension block must hash to the cap, its share hashes must chain to the
//! UEB's share root, its block hash tree must hash to its leaf there, and every block must match its leaf. Decoded
//! segments must match the crypttext hash tree, whose root is also in the UEB. A share that fails any check is
//! reported to its server (a corruption advisory) and replaced by another; one that cannot be read is replaced
//! too. Verified plaintext segments are kept in a small cache, and sequential reads fetch ahead.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{IoSlice, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::layout::{ShareLayout, decode_share_hashes};
use super::params::{BadGeometry, Geometry};
use super::uri_extension::UriExtension;
use crate::cap::ChkCap;
use crate::crypto::aes::AesCtr;
use crate::crypto::hashtree::{HashTree, IncompleteHashTree};
use crate::crypto::hashutil::{self, Hash};
use crate::erasure::Codec;
use crate::grid::client::Grid;
use crate::storage::{ShareKind, ShareNumber, StorageError, StorageIndex, advise_corruption};

/// Bytes read past the share-hash list in the first metadata read: a UEB is about 500 bytes.
const UEB_GUESS: u64 = 1024;
/// How long a share's metadata may take when other shares could stand in for it.
const METADATA_PATIENCE: Duration = Duration::from_secs(5);
/// The largest UEB accepted (Tahoe's are well under 1 KiB).
const MAX_UEB: u64 = 64 * 1024;
/// The largest share hash list accepted: (2 + 32)-byte pairs, fewer than two per level of a tree over 256 shares.
const MAX_SHARE_HASHES_BYTES: u64 = 34 * 32;

/// The most bytes of hash trees and URI extension block a share's first metadata read may ask for, before
/// anything in the share is verified: what the file needs at Tahoe's 128 KiB segments (three trees, the share
/// hashes and the UEB), and never less than 64 KiB.
fn metadata_read_bound(cap: &ChkCap) -> u64 {
    let segments = cap.size.div_ceil(128 * 1024).max(1);
    let tree = (2 * segments.next_power_of_two() - 1) * 32;
    (3 * tree + MAX_SHARE_HASHES_BYTES + UEB_GUESS).max(64 * 1024)
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// How long to wait for servers to say which shares they hold.
    pub query_timeout: Duration,
    /// Bytes of verified plaintext segments kept for re-reads.
    pub cache_bytes: usize,
    /// How long one read may take before its share is given up on for another.
    pub read_timeout: Duration,
    /// Plaintext bytes fetched at once by sequential reads and whole-file downloads (at least one segment).
    pub batch_bytes: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            query_timeout: Duration::from_secs(15),
            // Three batches: the one being read, the one prefetched, and room so that prefetching the next evicts
            // segments already read rather than ones not yet read.
            cache_bytes: 12 << 20,
            read_timeout: Duration::from_secs(60),
            batch_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "not enough good shares: {needed} needed, {usable} usable ({found} found on {servers} of {asked} servers). {detail}"
    )]
    NotEnoughShares {
        needed: u16,
        usable: usize,
        found: usize,
        servers: usize,
        asked: usize,
        detail: String,
    },
    #[error(transparent)]
    Geometry(#[from] BadGeometry),
    #[error("cannot write the file: {0}")]
    Write(std::io::Error),
    #[error("download failed: {0}")]
    Failed(String),
}

/// Why a share was dropped.
#[derive(Debug, Clone)]
pub(super) enum ShareFault {
    /// The bytes are wrong: worth a corruption advisory.
    Corrupt(String),
    /// The server did not deliver.
    Unavailable(String),
}

impl ShareFault {
    pub(super) fn describe(&self) -> &str {
        match self {
            ShareFault::Corrupt(s) | ShareFault::Unavailable(s) => s,
        }
    }
}

impl From<StorageError> for ShareFault {
    fn from(e: StorageError) -> Self {
        ShareFault::Unavailable(e.to_string())
    }
}

/// A share in use: where it is and its verified block hashes.
#[derive(Clone)]
pub(super) struct ActiveShare {
    server: usize,
    share: ShareNumber,
    pub(super) layout: ShareLayout,
    pub(super) block_hashes: Arc<Vec<Hash>>,
}

/// What the first good share establishes for the whole file.
pub(super) struct FileFacts {
    pub(super) geometry: Geometry,
    pub(super) share_root: Hash,
    crypttext_leaves: Vec<Hash>,
}

#[derive(Default)]
struct Shares {
    active: Vec<ActiveShare>,
    /// Shares found but not in use, best first.
    spare: VecDeque<(usize, ShareNumber)>,
    /// Shares given up on, with why.
    dropped: Vec<(usize, ShareNumber, String)>,
}

/// A read that starts this close to where the last one ended counts as sequential: the kernel sends a sequential
/// reader's requests (128 KiB each) several at a time, and they need not arrive in order.
const SEQUENTIAL_SLACK: u64 = 1 << 20;

struct SegmentCache {
    capacity: usize,
    used: usize,
    tick: u64,
    segments: BTreeMap<u64, (Bytes, u64)>,
}

impl SegmentCache {
    /// Whether the segment is cached, without counting as a use.
    fn contains(&self, segnum: u64) -> bool {
        self.segments.contains_key(&segnum)
    }

    fn get(&mut self, segnum: u64) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        self.segments.get_mut(&segnum).map(|(data, used)| {
            *used = tick;
            data.clone()
        })
    }

    fn insert(&mut self, segnum: u64, data: Bytes) {
        if data.len() > self.capacity {
            return;
        }
        self.tick += 1;
        if let Some((old, _)) = self.segments.insert(segnum, (data.clone(), self.tick)) {
            self.used -= old.len();
        }
        self.used += data.len();
        while self.used > self.capacity {
            let oldest = self
                .segments
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&s, _)| s);
            match oldest.and_then(|s| self.segments.remove(&s)) {
                Some((gone, _)) => self.used -= gone.len(),
                None => break,
            }
        }
    }
}

struct Inner {
    grid: Grid,
    cap: ChkCap,
    storage_index: StorageIndex,
    facts: FileFacts,
    codec: Codec,
    options: DownloadOptions,
    shares: Mutex<Shares>,
    cache: Mutex<SegmentCache>,
    /// Where the last read ended, to notice sequential reading.
    last_end: Mutex<u64>,
    /// The segments a background prefetch is fetching, and its end (true, or the sender gone): a read of them
    /// waits for it instead of fetching them a second time.
    prefetching: Mutex<Option<(Range<u64>, watch::Receiver<bool>)>>,
    /// Emptied block buffers of finished batches: reusing them spares the allocator and the kernel from mapping
    /// and zeroing fresh pages for every batch.
    spare_buffers: Mutex<Vec<BytesMut>>,
    servers_with_shares: usize,
    servers_asked: usize,
    found: usize,
    /// Whether a share drop was already reported (see [`ChkReader::take_damage_report`]).
    damage_reported: std::sync::atomic::AtomicBool,
    /// Bytes per second of this file's block reads so far (a moving average), which sizes the patience with a
    /// stalled one.
    throughput: Mutex<Option<f64>>,
}

/// An open CHK file. Cheap to clone; clones share shares, cache and state.
#[derive(Clone)]
pub struct ChkReader {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChkReader {
    /// Finds the file's shares and verifies enough of them to read it.
    pub async fn open(
        grid: Grid,
        cap: ChkCap,
        options: DownloadOptions,
    ) -> Result<ChkReader, DownloadError> {
        let storage_index = StorageIndex(cap.storage_index());
        let codec = Codec::new(
            usize::from(cap.needed_shares),
            usize::from(cap.total_shares),
        )
        .map_err(|e| DownloadError::Failed(format!("the cap's encoding: {e}")))?;
        let located = locate_shares(&grid, storage_index, &cap, options.query_timeout).await;
        let mut shares = Shares {
            spare: located.candidates.iter().copied().collect(),
            ..Default::default()
        };
        // The first share that verifies fixes the file's geometry and crypttext hashes; later shares are checked
        // against its UEB, which is the same bytes for every share (its hash is in the cap).
        let mut facts = None;
        while facts.is_none() {
            let Some((server, share)) = shares.spare.pop_front() else {
                break;
            };
            let patience = if shares.spare.is_empty() {
                options.read_timeout
            } else {
                options.read_timeout.min(METADATA_PATIENCE)
            };
            match fetch_share_metadata(&grid, storage_index, &cap, server, share, None, patience)
                .await
            {
                Ok((active, file_facts)) => {
                    facts = file_facts;
                    shares.active.push(active);
                }
                Err(fault) => drop_share(&grid, &mut shares, storage_index, server, share, fault),
            }
        }
        let Some(facts) = facts else {
            return Err(not_enough(&cap, &shares, &located));
        };
        let inner = Inner {
            grid,
            cap,
            storage_index,
            facts,
            codec,
            cache: Mutex::new(SegmentCache {
                capacity: options.cache_bytes,
                used: 0,
                tick: 0,
                segments: BTreeMap::new(),
            }),
            options,
            shares: Mutex::new(shares),
            // A first read from the start is taken as the start of a sequential read (cp, cat, rsync, backups).
            last_end: Mutex::new(0),
            prefetching: Mutex::new(None),
            spare_buffers: Mutex::new(Vec::new()),
            servers_with_shares: located.servers_with_shares,
            servers_asked: located.asked,
            found: located.candidates.len(),
            damage_reported: std::sync::atomic::AtomicBool::new(false),
            throughput: Mutex::new(None),
        };
        let reader = ChkReader {
            inner: Arc::new(inner),
        };
        reader.fill_active().await?;
        Ok(reader)
    }

    pub fn size(&self) -> u64 {
        self.inner.cap.size
    }

    pub fn geometry(&self) -> Geometry {
        self.inner.facts.geometry
    }

    /// The (server name, share number) pairs in use now.
    pub fn shares_in_use(&self) -> Vec<(String, ShareNumber)> {
        lock(&self.inner.shares)
            .active
            .iter()
            .map(|a| {
                (
                    self.inner.grid.servers()[a.server].name().to_owned(),
                    a.share,
                )
            })
            .collect()
    }

    /// True once, the first time it is asked after a share was dropped (corrupt, or its server failed): the
    /// file may need repair, and whoever keeps files alive should hear of it once per reader.
    pub fn take_damage_report(&self) -> bool {
        let dropped = !lock(&self.inner.shares).dropped.is_empty();
        dropped
            && !self
                .inner
                .damage_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// Shares dropped so far, as "server share N: why".
    pub fn dropped_shares(&self) -> Vec<String> {
        lock(&self.inner.shares)
            .dropped
            .iter()
            .map(|(server, share, why)| {
                format!(
                    "{} share {share}: {why}",
                    self.inner.grid.servers()[*server].name()
                )
            })
            .collect()
    }

    /// Reads up to `length` bytes at `offset` (fewer at the end of the file, none past it).
    pub async fn read(&self, offset: u64, length: u64) -> Result<Bytes, DownloadError> {
        let size = self.size();
        let end = offset.saturating_add(length).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let geometry = self.inner.facts.geometry;
        let wanted = geometry.segments_for(offset..end);
        let sequential = {
            let mut last = lock(&self.inner.last_end);
            let near = offset.abs_diff(*last) <= SEQUENTIAL_SLACK;
            *last = if near { end.max(*last) } else { end };
            near
        };
        let mut segments = Vec::with_capacity((wanted.end - wanted.start) as usize);
        let mut segnum = wanted.start;
        while segnum < wanted.end {
            if let Some(data) = lock(&self.inner.cache).get(segnum) {
                segments.push(data);
                segnum += 1;
                continue;
            }
            let in_flight = lock(&self.inner.prefetching)
                .as_ref()
                .filter(|(range, _)| range.contains(&segnum))
                .map(|(_, done)| done.clone());
            if let Some(mut done) = in_flight {
                // A finished prefetch has cached the segments, or failed and left them to the fetch below.
                if done.wait_for(|finished| *finished).await.is_err() {
                    // Its task ended without a word (the runtime is stopping): forget it.
                    let mut busy = lock(&self.inner.prefetching);
                    if busy.as_ref().is_some_and(|(r, _)| r.contains(&segnum)) {
                        *busy = None;
                    }
                }
                continue;
            }
            // A run of missing segments, fetched together; sequential readers also get what follows.
            let mut run_end = segnum + 1;
            while run_end < wanted.end && lock(&self.inner.cache).get(run_end).is_none() {
                run_end += 1;
            }
            let fetch_end = if sequential {
                run_end
                    .max(segnum + self.batch_segments())
                    .min(geometry.num_segments)
            } else {
                run_end
            };
            let fetched = self.read_segments(segnum..fetch_end).await?;
            segments.extend(fetched.into_iter().take((run_end - segnum) as usize));
            segnum = run_end;
        }
        if sequential {
            self.prefetch_ahead(wanted.end);
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (data, segnum) in segments.iter().zip(wanted) {
            let range = geometry.segment_range(segnum);
            let from = offset.max(range.start) - range.start;
            let to = end.min(range.end) - range.start;
            out.extend_from_slice(&data[from as usize..to as usize]);
        }
        Ok(out.freeze())
    }

    /// The plaintext of segments `range`, verified; each is also kept in the cache.
    pub async fn read_segments(&self, range: Range<u64>) -> Result<Vec<Bytes>, DownloadError> {
        let batch = self.read_batch(range).await?;
        let mut out = Vec::with_capacity((batch.range.end - batch.range.start) as usize);
        for segnum in batch.range.clone() {
            let mut segment = BytesMut::with_capacity(batch.segment_len(segnum));
            for piece in batch.pieces(segnum) {
                segment.extend_from_slice(piece);
            }
            let segment = segment.freeze();
            lock(&self.inner.cache).insert(segnum, segment.clone());
            out.push(segment);
        }
        self.give_back(batch.blocks);
        Ok(out)
    }

    fn take_buffer(&self) -> BytesMut {
        lock(&self.inner.spare_buffers).pop().unwrap_or_default()
    }

    /// Keeps emptied `buffers` for later batches: two batches' worth (the one being written and the next).
    fn give_back(&self, buffers: impl IntoIterator<Item = BytesMut>) {
        let keep = 2 * usize::from(self.inner.cap.needed_shares);
        let mut spare = lock(&self.inner.spare_buffers);
        for mut buffer in buffers {
            if spare.len() >= keep {
                break;
            }
            buffer.clear();
            spare.push(buffer);
        }
    }

    /// Segments `range` (cut at the file's end), fetched, verified, decoded and decrypted.
    async fn read_batch(&self, range: Range<u64>) -> Result<Batch, DownloadError> {
        let inner = &self.inner;
        let geometry = inner.facts.geometry;
        let range = range.start..range.end.min(geometry.num_segments);
        let needed = usize::from(inner.cap.needed_shares);
        if range.is_empty() {
            return Ok(Batch {
                geometry,
                range,
                blocks: vec![BytesMut::new(); needed],
            });
        }
        // share number -> its blocks for the range, back to back, verified.
        let mut blocks: BTreeMap<ShareNumber, BytesMut> = BTreeMap::new();
        loop {
            let active: Vec<ActiveShare> = lock(&inner.shares).active.clone();
            let missing: Vec<ActiveShare> = active
                .into_iter()
                .filter(|a| !blocks.contains_key(&a.share))
                .collect();
            if missing.is_empty() && blocks.len() >= needed {
                break;
            }
            let mut reads = tokio::task::JoinSet::new();
            for share in missing {
                let reader = self.clone();
                let range = range.clone();
                reads.spawn(async move {
                    let result = reader.read_share_blocks(&share, range).await;
                    (share, result)
                });
            }
            let mut lost_any = false;
            while let Some(joined) = reads.join_next().await {
                let (share, result) =
                    joined.map_err(|e| DownloadError::Failed(format!("read task: {e}")))?;
                match result {
                    Ok(data) => {
                        blocks.insert(share.share, data);
                    }
                    Err(fault) => {
                        lost_any = true;
                        let mut shares = lock(&inner.shares);
                        shares
                            .active
                            .retain(|a| !(a.server == share.server && a.share == share.share));
                        drop_share(
                            &inner.grid,
                            &mut shares,
                            inner.storage_index,
                            share.server,
                            share.share,
                            fault,
                        );
                    }
                }
            }
            if lost_any {
                self.fill_active().await?;
            }
        }
        let chosen: Vec<(ShareNumber, BytesMut)> = blocks.into_iter().take(needed).collect();
        let systematic = chosen
            .iter()
            .enumerate()
            .all(|(n, (share, _))| usize::from(*share) == n);
        let mut batch = Batch {
            geometry,
            range: range.clone(),
            blocks: if systematic {
                chosen.into_iter().map(|(_, data)| data).collect()
            } else {
                let decoded = decode_blocks(&inner.codec, &geometry, range.clone(), &chosen)?;
                self.give_back(chosen.into_iter().map(|(_, data)| data));
                decoded
            },
        };
        for (segnum, hash) in batch.segment_hashes() {
            // Every block was verified, so a mismatch here means the uploader encoded inconsistently: no other
            // set of shares can do better than the hashes it committed to.
            if hash != inner.facts.crypttext_leaves[segnum as usize] {
                return Err(DownloadError::Failed(format!(
                    "segment {segnum} does not match the file's crypttext hash tree although every block \
                     verified: the file was encoded inconsistently by its uploader"
                )));
            }
        }
        let mut aes = AesCtr::new_128(&inner.cap.key);
        for segnum in range {
            batch.decrypt(segnum, &mut aes);
        }
        Ok(batch)
    }

    /// Reads one share's blocks for a run of segments, in one request, and checks each against its hash.
    async fn read_share_blocks(
        &self,
        share: &ActiveShare,
        range: Range<u64>,
    ) -> Result<BytesMut, ShareFault> {
        let geometry = self.inner.facts.geometry;
        let start = share.layout.data + range.start * geometry.block_size();
        let length: u64 = range.clone().map(|s| geometry.segment_block_size(s)).sum();
        let storage = &self.inner.grid.servers()[share.server].storage;
        let mut data = self.take_buffer();
        if length > 0 {
            let timeout = self.inner.options.read_timeout;
            let patience = self.patience(length).min(timeout);
            let started = tokio::time::Instant::now();
            let read = storage.read_immutable_share_into(
                self.inner.storage_index,
                share.share,
                start,
                length,
                &mut data,
            );
            tokio::pin!(read);
            // A stalled server (a stopped process, a dead link) is left for another share after a deadline
            // sized by this file's reads so far; with no other share to turn to, the read waits its full time.
            let answered = match tokio::time::timeout(patience, &mut read).await {
                Ok(answer) => Some(answer),
                Err(_) if self.has_spare_for(share.share) => None,
                Err(_) => tokio::time::timeout(timeout - patience, &mut read)
                    .await
                    .ok(),
            };
            match answered {
                Some(answer) => answer?,
                None => {
                    let name = self.inner.grid.servers()[share.server].name();
                    let why = format!(
                        "no block data within {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    crate::daemon_log::write_line_now_and_then(
                        name,
                        Duration::from_secs(60),
                        &format!(
                            "tahoe-mount: slow server: {name}: {why}; reading other shares (said at most once \
                             a minute)"
                        ),
                    );
                    return Err(ShareFault::Unavailable(why));
                }
            }
            self.note_throughput(length, started.elapsed());
        }
        if (data.len() as u64) < length {
            return Err(ShareFault::Corrupt(format!(
                "share is short: {} bytes of blocks where {length} were expected",
                data.len()
            )));
        }
        let mut at = 0usize;
        let blocks: Vec<&[u8]> = range
            .clone()
            .map(|segnum| {
                let size = geometry.segment_block_size(segnum) as usize;
                at += size;
                &data[at - size..at]
            })
            .collect();
        let hashes = hashutil::block_hashes(blocks);
        for (segnum, hash) in range.zip(hashes) {
            if hash != share.block_hashes[segnum as usize] {
                return Err(ShareFault::Corrupt(format!(
                    "block {segnum} does not match its block hash"
                )));
            }
        }
        Ok(data)
    }

    /// How long a block read of `length` bytes may take before its share is given up for a spare: four times
    /// what this file's reads so far say it should take, plus 2 s; before any, 5 s plus 8 MiB/s.
    fn patience(&self, length: u64) -> Duration {
        let length = length as f64;
        match *lock(&self.inner.throughput) {
            Some(rate) => Duration::from_secs_f64(2.0 + 4.0 * length / rate),
            None => Duration::from_secs_f64(5.0 + length / f64::from(8u32 << 20)),
        }
    }

    fn note_throughput(&self, length: u64, took: Duration) {
        let rate = length as f64 / took.as_secs_f64().max(1e-3);
        let mut average = lock(&self.inner.throughput);
        *average = Some(match *average {
            Some(before) => 0.7 * before + 0.3 * rate,
            None => rate,
        });
    }

    /// Whether a spare share could stand in for share `number` (a share number not in use).
    fn has_spare_for(&self, number: ShareNumber) -> bool {
        let shares = lock(&self.inner.shares);
        shares.spare.iter().any(|&(_, spare)| {
            spare == number || shares.active.iter().all(|active| active.share != spare)
        })
    }

    /// Brings the shares in use up to k distinct share numbers from the spares.
    async fn fill_active(&self) -> Result<(), DownloadError> {
        let inner = &self.inner;
        let needed = usize::from(inner.cap.needed_shares);
        loop {
            let next = {
                let mut shares = lock(&inner.shares);
                if shares.active.len() >= needed {
                    return Ok(());
                }
                let in_use: BTreeSet<ShareNumber> = shares.active.iter().map(|a| a.share).collect();
                shares.spare.retain(|(_, s)| !in_use.contains(s));
                let count = needed - shares.active.len();
                let mut picked = Vec::new();
                let mut numbers = BTreeSet::new();
                let mut kept = VecDeque::new();
                while let Some((server, share)) = shares.spare.pop_front() {
                    if picked.len() < count && numbers.insert(share) {
                        picked.push((server, share));
                    } else {
                        kept.push_back((server, share));
                    }
                }
                shares.spare = kept;
                // With more spares behind these, a server that does not answer for a few seconds is left for
                // the next (a metadata read is a few KiB); the last hope is waited for in full.
                let patience = if shares.spare.is_empty() {
                    inner.options.read_timeout
                } else {
                    inner.options.read_timeout.min(METADATA_PATIENCE)
                };
                (picked, patience)
            };
            let (next, patience) = next;
            if next.is_empty() {
                let shares = lock(&inner.shares);
                return Err(not_enough_found(
                    &inner.cap,
                    &shares,
                    inner.found,
                    inner.servers_with_shares,
                    inner.servers_asked,
                ));
            }
            let mut fetches = tokio::task::JoinSet::new();
            for (server, share) in next {
                let grid = inner.grid.clone();
                let cap = inner.cap;
                let si = inner.storage_index;
                let expected = inner.facts.share_root;
                let timeout = patience;
                fetches.spawn(async move {
                    let result = fetch_share_metadata(
                        &grid,
                        si,
                        &cap,
                        server,
                        share,
                        Some(expected),
                        timeout,
                    )
                    .await;
                    (server, share, result)
                });
            }
            while let Some(joined) = fetches.join_next().await {
                let (server, share, result) =
                    joined.map_err(|e| DownloadError::Failed(format!("metadata task: {e}")))?;
                let mut shares = lock(&inner.shares);
                match result {
                    Ok((active, _)) => {
                        if shares.active.iter().all(|a| a.share != active.share) {
                            shares.active.push(active);
                        }
                    }
                    Err(fault) => drop_share(
                        &inner.grid,
                        &mut shares,
                        inner.storage_index,
                        server,
                        share,
                        fault,
                    ),
                }
            }
        }
    }

    /// Keeps a sequential reader one batch ahead: prefetches from the first segment not cached within a batch of
    /// `from`. Waiting until the reader reaches the end of what is cached would leave the servers idle while it
    /// reads the cache, and the reader idle while they fetch.
    fn prefetch_ahead(&self, from: u64) {
        let end = from
            .saturating_add(self.batch_segments())
            .min(self.inner.facts.geometry.num_segments);
        let first_missing = {
            let cache = lock(&self.inner.cache);
            (from..end).find(|&segnum| !cache.contains(segnum))
        };
        if let Some(segnum) = first_missing {
            self.prefetch(segnum);
        }
    }

    /// Starts fetching the batch of segments from `from` in the background (into the cache), unless it is
    /// cached, past the end, or already being fetched: a sequential reader then finds it ready.
    fn prefetch(&self, from: u64) {
        let geometry = self.inner.facts.geometry;
        let range = from..(from + self.batch_segments()).min(geometry.num_segments);
        if range.is_empty() || lock(&self.inner.cache).contains(range.start) {
            return;
        }
        let (finished, done) = watch::channel(false);
        {
            let mut busy = lock(&self.inner.prefetching);
            if busy.as_ref().is_some_and(|(r, _)| r.contains(&range.start)) {
                return;
            }
            *busy = Some((range.clone(), done));
        }
        let reader = self.clone();
        tokio::spawn(async move {
            // A failed prefetch costs nothing: the read that needs the segments tries again and reports.
            let _ = reader.read_segments(range.clone()).await;
            let mut busy = lock(&reader.inner.prefetching);
            if busy.as_ref().is_some_and(|(r, _)| *r == range) {
                *busy = None;
            }
            drop(busy);
            let _ = finished.send(true);
        });
    }

    /// Segments fetched at once: about `batch_bytes`, and an even number when more than one, because blocks and
    /// segments are hashed two at a time (an odd one out is hashed alone, at half the speed).
    fn batch_segments(&self) -> u64 {
        let segments =
            (self.inner.options.batch_bytes / self.inner.facts.geometry.segment_size).max(1);
        if segments > 1 && segments % 2 == 1 {
            segments + 1
        } else {
            segments
        }
    }

    /// Writes the whole file to `out`, fetching the next batch of segments while the current one is written.
    /// The writes block the task that runs this: from a thread outside the runtime, [`ChkReader::write_to_blocking`]
    /// keeps the network going while the kernel takes the data.
    pub async fn write_to(
        &self,
        out: &mut (dyn Write + Send),
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<(), DownloadError> {
        let (send, mut receive) = tokio::sync::mpsc::channel(1);
        let write = async {
            let mut written = 0u64;
            while let Some(batch) = receive.recv().await {
                self.deliver(batch, out, &mut written, progress)?;
            }
            Ok::<(), DownloadError>(())
        };
        let (fetched, wrote) = tokio::join!(self.fetch_all(send), write);
        // A failed write ends the fetching (its channel closes): the write's error is the one to tell.
        wrote.and(fetched)?;
        out.flush().map_err(DownloadError::Write)
    }

    /// Writes the whole file to `out` from a thread of its own while `runtime` fetches the next batches, so the
    /// copy into the kernel (as much CPU as the rest of a download, for a new file) overlaps with the network
    /// instead of stopping it. Call it outside the runtime.
    pub fn write_to_blocking(
        &self,
        runtime: &tokio::runtime::Runtime,
        out: &mut (dyn Write + Send),
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<(), DownloadError> {
        let (send, mut receive) = tokio::sync::mpsc::channel(1);
        std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("get-write".into())
                .spawn_scoped(scope, move || {
                    let mut written = 0u64;
                    while let Some(batch) = receive.blocking_recv() {
                        self.deliver(batch, out, &mut written, progress)?;
                    }
                    out.flush().map_err(DownloadError::Write)
                })
                .map_err(|e| {
                    DownloadError::Failed(format!("cannot start the writer thread: {e}"))
                })?;
            let fetched = runtime.block_on(self.fetch_all(send));
            let wrote = writer.join().unwrap_or_else(|_| {
                Err(DownloadError::Failed("the writer thread panicked".into()))
            });
            wrote.and(fetched)
        })
    }

    /// Fetches every batch of the file in order, one batch ahead of the one being handed over, into `send`; stops
    /// early, without error, when the receiver is gone.
    async fn fetch_all(&self, send: tokio::sync::mpsc::Sender<Batch>) -> Result<(), DownloadError> {
        let geometry = self.inner.facts.geometry;
        let batch = self.batch_segments();
        let batches: Vec<Range<u64>> = (0..geometry.num_segments)
            .step_by(batch as usize)
            .map(|s| s..(s + batch).min(geometry.num_segments))
            .collect();
        let spawn = |range: Range<u64>| {
            let reader = self.clone();
            tokio::spawn(async move { reader.read_batch(range).await })
        };
        let mut next = batches.first().cloned().map(spawn);
        for i in 0..batches.len() {
            let current = next
                .take()
                .ok_or_else(|| DownloadError::Failed("lost a batch".into()))?;
            next = batches.get(i + 1).cloned().map(spawn);
            let batch = current
                .await
                .map_err(|e| DownloadError::Failed(format!("read task: {e}")))??;
            if send.send(batch).await.is_err() {
                if let Some(next) = next {
                    next.abort();
                }
                break;
            }
        }
        Ok(())
    }

    /// Writes one batch to `out`, returns its buffers for reuse and reports the bytes written so far.
    fn deliver(
        &self,
        batch: Batch,
        out: &mut (dyn Write + Send),
        written: &mut u64,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<(), DownloadError> {
        *written += batch.write_to(out).map_err(DownloadError::Write)?;
        self.give_back(batch.blocks);
        if let Some(progress) = progress {
            progress(*written);
        }
        Ok(())
    }
}

/// Verified plaintext of a run of segments, kept as the k primary shares' blocks (share-major, as they arrive:
/// `blocks[j]` holds block j of every segment of the run), so a whole-file download writes it out without
/// assembling segments first.
struct Batch {
    geometry: Geometry,
    range: Range<u64>,
    blocks: Vec<BytesMut>,
}

impl Batch {
    /// Where segment `segnum`'s block starts in each of `blocks`, and its size.
    fn block_span(&self, segnum: u64) -> (usize, usize) {
        let at = (segnum - self.range.start) * self.geometry.block_size();
        (
            at as usize,
            self.geometry.segment_block_size(segnum) as usize,
        )
    }

    fn segment_len(&self, segnum: u64) -> usize {
        let range = self.geometry.segment_range(segnum);
        (range.end - range.start) as usize
    }

    /// The byte ranges of segment `segnum` in each of `blocks`, in order, without the padding of the last one.
    fn piece_spans(&self, segnum: u64) -> impl Iterator<Item = Range<usize>> + use<> {
        let (at, size) = self.block_span(segnum);
        let mut left = self.segment_len(segnum);
        (0..self.blocks.len()).map(move |_| {
            let take = size.min(left);
            left -= take;
            at..at + take
        })
    }

    /// Segment `segnum` (crypttext before [`Batch::decrypt`], plaintext after) as pieces, in order.
    fn pieces(&self, segnum: u64) -> impl Iterator<Item = &[u8]> {
        self.piece_spans(segnum)
            .zip(&self.blocks)
            .map(|(span, block)| &block[span])
    }

    /// The crypttext hash of every segment (call it before [`Batch::decrypt`]), two segments at a time.
    fn segment_hashes(&self) -> Vec<(u64, Hash)> {
        let segments: Vec<u64> = self.range.clone().collect();
        let mut hashes = Vec::with_capacity(segments.len());
        for pair in segments.chunks(2) {
            let mut first = hashutil::crypttext_segment_hasher();
            match *pair {
                [a, b] => {
                    let mut second = hashutil::crypttext_segment_hasher();
                    for (x, y) in self.pieces(a).zip(self.pieces(b)) {
                        hashutil::Sha256d::update_pair(&mut first, x, &mut second, y);
                    }
                    hashes.push((a, first.finalize()));
                    hashes.push((b, second.finalize()));
                }
                [a] => {
                    for piece in self.pieces(a) {
                        first.update(piece);
                    }
                    hashes.push((a, first.finalize()));
                }
                _ => unreachable!("chunks(2) gives one or two"),
            }
        }
        hashes
    }

    fn decrypt(&mut self, segnum: u64, aes: &mut AesCtr) {
        let mut offset = self.geometry.segment_range(segnum).start;
        for (span, block) in self.piece_spans(segnum).zip(&mut self.blocks) {
            aes.seek(offset);
            offset += span.len() as u64;
            aes.apply(&mut block[span]);
        }
    }

    /// Writes every segment, in order, with as few calls as the writer allows.
    fn write_to(&self, out: &mut (dyn Write + Send)) -> std::io::Result<u64> {
        let mut slices: Vec<IoSlice<'_>> = self
            .range
            .clone()
            .flat_map(|segnum| self.pieces(segnum))
            .filter(|piece| !piece.is_empty())
            .map(IoSlice::new)
            .collect();
        let total = slices.iter().map(|s| s.len() as u64).sum();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match out.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// Rebuilds the k primary shares' blocks for segments `range` from `chosen`, k other distinct shares' blocks.
fn decode_blocks(
    codec: &Codec,
    geometry: &Geometry,
    range: Range<u64>,
    chosen: &[(ShareNumber, BytesMut)],
) -> Result<Vec<BytesMut>, DownloadError> {
    let length = chosen.first().map_or(0, |(_, data)| data.len());
    let mut outputs = vec![BytesMut::zeroed(length); chosen.len()];
    let numbers: Vec<u16> = chosen.iter().map(|(s, _)| *s).collect();
    let mut at = 0usize;
    for segnum in range {
        let size = geometry.segment_block_size(segnum) as usize;
        if size == 0 {
            continue;
        }
        let span = at..at + size;
        at += size;
        let inputs: Vec<&[u8]> = chosen.iter().map(|(_, d)| &d[span.clone()]).collect();
        let mut blocks: Vec<&mut [u8]> = outputs.iter_mut().map(|o| &mut o[span.clone()]).collect();
        codec
            .decode(&numbers, &inputs, &mut blocks)
            .map_err(|e| DownloadError::Failed(format!("erasure decoding: {e}")))?;
    }
    Ok(outputs)
}

/// What asking the servers found.
struct Located {
    /// (server, share) pairs, fastest server first, one share per server before any second ones.
    candidates: Vec<(usize, ShareNumber)>,
    servers_with_shares: usize,
    asked: usize,
    /// Servers that did not answer, and why.
    silent: Vec<(usize, String)>,
}

/// Asks every server, in permuted order, which shares it holds. Stops waiting shortly after k distinct shares are
/// known (as long again as that took), so one slow server does not hold up the read.
async fn locate_shares(
    grid: &Grid,
    storage_index: StorageIndex,
    cap: &ChkCap,
    timeout: Duration,
) -> Located {
    let order = grid.permuted(&storage_index);
    let started = Instant::now();
    let mut asks = tokio::task::JoinSet::new();
    for (rank, &server) in order.iter().enumerate() {
        let storage = grid.servers()[server].storage.clone();
        asks.spawn(async move {
            let answer =
                tokio::time::timeout(timeout, storage.list_immutable_shares(storage_index)).await;
            (rank, server, answer)
        });
    }
    let mut answered: Vec<(usize, BTreeSet<ShareNumber>)> = Vec::new();
    let mut silent = Vec::new();
    let mut distinct: BTreeSet<ShareNumber> = BTreeSet::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let Some(next) = crate::grid::before_deadline(deadline, asks.join_next()).await else {
            break;
        };
        let Some(Ok((_, server, answer))) = next else {
            if next.is_none() {
                break;
            }
            continue;
        };
        match answer {
            Ok(Ok(shares)) => {
                let shares: BTreeSet<ShareNumber> = shares
                    .into_iter()
                    .filter(|&s| s < cap.total_shares)
                    .collect();
                distinct.extend(&shares);
                if !shares.is_empty() {
                    answered.push((server, shares));
                }
            }
            Ok(Err(e)) => silent.push((server, e.to_string())),
            Err(_) => silent.push((server, "no answer in time".into())),
        }
        if deadline.is_none() && distinct.len() >= usize::from(cap.needed_shares) {
            let grace = started.elapsed().max(Duration::from_millis(20));
            deadline = Some(tokio::time::Instant::now() + grace);
        }
    }
    // Round-robin over servers in answer order: the first share of each server, then the second, …; within each
    // round, primary shares (0..k) first: with all k of them, decoding a segment is a copy (zfec is systematic).
    let mut ranked = Vec::new();
    let depth = answered.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    for level in 0..depth {
        for (server, shares) in &answered {
            if let Some(&share) = shares.iter().nth(level) {
                ranked.push((level, share >= cap.needed_shares, *server, share));
            }
        }
    }
    ranked.sort_by_key(|&(level, secondary, _, _)| (level, secondary));
    let candidates = ranked
        .into_iter()
        .map(|(_, _, server, share)| (server, share))
        .collect();
    Located {
        candidates,
        servers_with_shares: answered.len(),
        asked: order.len(),
        silent,
    }
}

fn not_enough(cap: &ChkCap, shares: &Shares, located: &Located) -> DownloadError {
    let mut error = not_enough_found(
        cap,
        shares,
        located.candidates.len(),
        located.servers_with_shares,
        located.asked,
    );
    if let DownloadError::NotEnoughShares { detail, .. } = &mut error {
        for (_, why) in located.silent.iter().take(8) {
            detail.push_str(&format!(" {why}."));
        }
    }
    error
}

fn not_enough_found(
    cap: &ChkCap,
    shares: &Shares,
    found: usize,
    servers: usize,
    asked: usize,
) -> DownloadError {
    let detail = if shares.dropped.is_empty() {
        String::from("No share was rejected.")
    } else {
        let reasons: Vec<String> = shares
            .dropped
            .iter()
            .take(12)
            .map(|(_, share, why)| format!("share {share}: {why}"))
            .collect();
        format!("Rejected: {}.", reasons.join("; "))
    };
    DownloadError::NotEnoughShares {
        needed: cap.needed_shares,
        usable: shares.active.len(),
        found,
        servers,
        asked,
        detail,
    }
}

/// Records a dropped share and, if its bytes were wrong, tells its server (without waiting for the answer).
fn drop_share(
    grid: &Grid,
    shares: &mut Shares,
    storage_index: StorageIndex,
    server: usize,
    share: ShareNumber,
    fault: ShareFault,
) {
    let name = grid.servers()[server].name().to_owned();
    shares
        .dropped
        .push((server, share, format!("{name}: {}", fault.describe())));
    if let ShareFault::Corrupt(reason) = fault {
        let storage = grid.servers()[server].storage.clone();
        let reason = format!("tahoe-mount download: {reason}");
        tokio::spawn(async move {
            advise_corruption(
                storage.as_ref(),
                ShareKind::Immutable,
                storage_index,
                share,
                &reason,
                Duration::from_secs(10),
            )
            .await
        });
    }
}

/// Reads and verifies one share's header, hash trees and UEB. With `expected_share_root` unset (the first share),
/// also returns the file's facts from its (authenticated) UEB.
pub(super) async fn fetch_share_metadata(
    grid: &Grid,
    storage_index: StorageIndex,
    cap: &ChkCap,
    server: usize,
    share: ShareNumber,
    expected_share_root: Option<Hash>,
    timeout: Duration,
) -> Result<(ActiveShare, Option<FileFacts>), ShareFault> {
    let fetch = read_share_metadata(grid, storage_index, cap, server, share, expected_share_root);
    tokio::time::timeout(timeout, fetch).await.map_err(|_| {
        ShareFault::Unavailable(format!(
            "no share metadata within {:.0} s",
            timeout.as_secs_f64()
        ))
    })?
}

async fn read_share_metadata(
    grid: &Grid,
    storage_index: StorageIndex,
    cap: &ChkCap,
    server: usize,
    share: ShareNumber,
    expected_share_root: Option<Hash>,
) -> Result<(ActiveShare, Option<FileFacts>), ShareFault> {
    let storage = &grid.servers()[server].storage;
    let header = storage
        .read_immutable_share(storage_index, share, 0, 0x44)
        .await?;
    let layout = ShareLayout::parse(&header).map_err(|e| ShareFault::Corrupt(e.to_string()))?;
    let corrupt = |what: String| ShareFault::Corrupt(what);
    let length_size = layout.uri_extension_length_size();
    let first = layout.crypttext_hash_tree;
    // Nothing in the header is authentic until the URI extension block is checked against the cap, so a read
    // sized by its offsets is bounded: the hash trees and the UEB come in one read when they are no bigger than
    // the file's would be at Tahoe's segment size, else the UEB comes first and sizes the trees' read.
    let span = layout.uri_extension.saturating_sub(first);
    let together = span <= metadata_read_bound(cap);
    let ueb_read_at = if together {
        first
    } else {
        layout.uri_extension
    };
    let mut tail = storage
        .read_immutable_share(
            storage_index,
            share,
            ueb_read_at,
            layout.uri_extension - ueb_read_at + length_size + UEB_GUESS,
        )
        .await?
        .to_vec();
    let ueb_at = (layout.uri_extension - ueb_read_at) as usize;
    if tail.len() < ueb_at + length_size as usize {
        return Err(corrupt("share ends before its URI extension block".into()));
    }
    let length_bytes = &tail[ueb_at..ueb_at + length_size as usize];
    let ueb_len = length_bytes
        .iter()
        .fold(0u64, |n, &b| (n << 8) | u64::from(b));
    if ueb_len > MAX_UEB {
        return Err(corrupt(format!(
            "URI extension block claims {ueb_len} bytes"
        )));
    }
    let ueb_start = ueb_at + length_size as usize;
    let ueb_end = ueb_start + ueb_len as usize;
    if tail.len() < ueb_end {
        let more = storage
            .read_immutable_share(
                storage_index,
                share,
                ueb_read_at + tail.len() as u64,
                (ueb_end - tail.len()) as u64,
            )
            .await?;
        tail.extend_from_slice(&more);
        if tail.len() < ueb_end {
            return Err(corrupt("share ends inside its URI extension block".into()));
        }
    }
    let ueb_bytes = &tail[ueb_start..ueb_end];
    if hashutil::uri_extension_hash(ueb_bytes) != cap.ueb_hash {
        return Err(corrupt(
            "URI extension block does not match the cap's hash".into(),
        ));
    }
    let ueb = UriExtension::unpack(ueb_bytes).map_err(|e| corrupt(e.to_string()))?;
    // The UEB is authentic from here on; a geometry error means the uploader wrote nonsense, not this server.
    let geometry = Geometry::from_uri_extension(&ueb, cap)
        .map_err(|e| ShareFault::Unavailable(e.to_string()))?;
    let share_root = ueb
        .hash("share_root_hash")
        .map_err(|e| ShareFault::Unavailable(e.to_string()))?;
    if expected_share_root.is_some_and(|r| r != share_root) {
        return Err(corrupt(
            "URI extension block differs from the other shares'".into(),
        ));
    }

    let nseg = geometry.num_segments as usize;
    let tree_size = (2 * nseg.max(1).next_power_of_two() - 1) as u64 * 32;
    if layout.data_size != geometry.share_data_size()
        || layout.crypttext_hash_tree - layout.plaintext_hash_tree != tree_size
        || layout.block_hashes - layout.crypttext_hash_tree != tree_size
        || layout.share_hashes - layout.block_hashes != tree_size
        || layout.plaintext_hash_tree - layout.data != layout.data_size
    {
        return Err(corrupt(format!(
            "share layout does not fit the file: data {} bytes (expected {}), hash trees of {} segments",
            layout.data_size,
            geometry.share_data_size(),
            nseg
        )));
    }
    if layout.uri_extension - layout.share_hashes > MAX_SHARE_HASHES_BYTES {
        return Err(corrupt(format!(
            "share hash list is {} bytes",
            layout.uri_extension - layout.share_hashes
        )));
    }
    // From here the offsets fit the authentic geometry, so the trees' read is as big as the file needs.
    let hashes: Vec<u8> = if together {
        tail.truncate(ueb_at);
        tail
    } else {
        storage
            .read_immutable_share(storage_index, share, first, span)
            .await?
            .to_vec()
    };
    if hashes.len() as u64 != span {
        return Err(corrupt("share ends inside its hash trees".into()));
    }
    let at = |offset: u64| (offset - first) as usize;
    let leaves_of = |region: &[u8]| -> Vec<Hash> {
        let nodes: Vec<Hash> = region
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let first_leaf = nodes.len() / 2;
        nodes[first_leaf..first_leaf + nseg].to_vec()
    };
    let crypttext_leaves =
        leaves_of(&hashes[at(layout.crypttext_hash_tree)..at(layout.block_hashes)]);
    let crypttext_root = ueb
        .hash("crypttext_root_hash")
        .map_err(|e| ShareFault::Unavailable(e.to_string()))?;
    if HashTree::new(&crypttext_leaves).root() != &crypttext_root {
        return Err(corrupt(
            "crypttext hash tree does not match the URI extension block".into(),
        ));
    }
    let block_leaves = leaves_of(&hashes[at(layout.block_hashes)..at(layout.share_hashes)]);
    let pairs = decode_share_hashes(&hashes[at(layout.share_hashes)..])
        .map_err(|e| corrupt(e.to_string()))?;
    let mut share_tree = IncompleteHashTree::new(usize::from(cap.total_shares));
    let mut known: BTreeMap<usize, Hash> = pairs
        .into_iter()
        .map(|(i, h)| (usize::from(i), h))
        .collect();
    known.insert(0, share_root);
    let leaf = BTreeMap::from([(usize::from(share), *HashTree::new(&block_leaves).root())]);
    share_tree.set_hashes(&known, &leaf).map_err(|e| {
        corrupt(format!(
            "block hash tree or share hashes do not verify: {e}"
        ))
    })?;
    let active = ActiveShare {
        server,
        share,
        layout,
        block_hashes: Arc::new(block_leaves),
    };
    let facts = expected_share_root.is_none().then_some(FileFacts {
        geometry,
        share_root,
        crypttext_leaves,
    });
    Ok((active, facts))
}
