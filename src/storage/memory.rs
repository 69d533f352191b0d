//! [`MemoryServer`]: an in-memory storage server that answers as a Tahoe-LAFS 1.20 storage server does through its
//! HTTP protocol (`allmydata/storage/server.py`, `immutable.py`, `mutable.py`, `http_server.py`), for unit,
//! property and contract tests (built only for them: the `testing` feature). Faults of the network and of reads
//! come from wrapping it in [`super::faulty::FaultyServer`]; a full disk is its own state ([`MemoryServer::set_full`]).
//!
//! Where this differs from 1.20, on purpose: space is counted in share data bytes only (no container headers, no
//! lease records), from a configured capacity instead of a disk; leases are kept (a new one needs room, as in 1.20)
//! and expire on a simulated clock only when a test says so ([`MemoryServer::advance_clock`],
//! [`MemoryServer::expire_leases`], as 1.20's lease crawler does with `expire.enabled`); running out of space is [`StorageError::Full`] where a real server answers 500; an idle upload
//! is dropped when the server is next used after the idle timeout, not by a timer.

use super::{
    Allocation, LeaseSecrets, MutableSecrets, ReadTestWriteResult, ReadVector, ServerVersion,
    ShareNumber, StorageError, StorageFuture, StorageIndex, StorageServer, TestWriteVectors,
    UploadProgress,
};
use bytes::Bytes;
use sha1::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `allmydata/mutable/layout.py` `MAX_MUTABLE_SHARE_SIZE`: what 1.20 announces, and the most a mutable share holds.
pub const MAX_MUTABLE_SHARE_SIZE: u64 = 69_105 * 1000 * 1000 * 1000 * 1000;

/// An upload that receives no write for this long is aborted (`storage/immutable.py:372`, `:394`).
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Lease record sizes: a new lease needs this much free space (`storage/lease.py` `IMMUTABLE_FORMAT`,
/// `MUTABLE_FORMAT`).
const IMMUTABLE_LEASE_SIZE: u64 = 72;
const MUTABLE_LEASE_SIZE: u64 = 92;
/// A mutable container has room for four leases before it needs space for more (`storage/mutable.py` `add_lease`).
const MUTABLE_LEASE_SLOTS: usize = 4;
/// How long a lease lasts from its last renewal (`storage/server.py` `DEFAULT_RENEWAL_TIME`: 31 days).
pub const LEASE_SECONDS: u64 = 31 * 24 * 3600;

/// Schema limits of 1.20's request bodies (`http_server.py:367-398`); more is a 400.
const MAX_SHARES_PER_REQUEST: usize = 256;
const MAX_TEST_VECTORS: usize = 30;
const MAX_READ_VECTORS: usize = 30;
/// A corruption report's body is at most 32768 bytes (413 above, checked first); `{"reason": tstr}` adds 11 bytes
/// of CBOR to a reason of this size.
const MAX_REASON_BYTES: usize = 32768 - 11;

/// The server writes a PATCH body to the share 64 KiB at a time (`http_server.py:837-846`), so a conflict or an
/// overrun late in a big write leaves the earlier pieces written.
const WRITE_PIECE: usize = 65536;

/// Whether the server's disk has room (see [`MemoryServer::set_full`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    Room,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    Immutable,
    Mutable,
}

/// A corruption advisory the server accepted and recorded (1.20 writes it to `corruption-advisories/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptionAdvisory {
    pub kind: ShareKind,
    pub storage_index: StorageIndex,
    pub share_number: ShareNumber,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct MemoryServerConfig {
    pub name: String,
    /// Bytes of share data the server holds at most; also bounds the memory it uses.
    pub capacity: u64,
    pub application_version: String,
    pub upload_idle_timeout: Duration,
}

impl MemoryServerConfig {
    /// 1 GiB of capacity and 1.20's 30-minute idle upload timeout.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryServerConfig {
            name: name.into(),
            capacity: 1 << 30,
            application_version: format!("tahoe-mount-memory/{}", env!("CARGO_PKG_VERSION")),
            upload_idle_timeout: UPLOAD_IDLE_TIMEOUT,
        }
    }
}

/// An in-memory storage server. All methods take `&self`; it can be shared between tasks.
pub struct MemoryServer {
    config: MemoryServerConfig,
    full: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    renew: [u8; 32],
    // Kept because 1.20 keeps it; nothing over HTTP cancels a lease.
    _cancel: [u8; 32],
    /// On the simulated clock: set when the lease is granted or renewed.
    expires_at: u64,
}

impl From<LeaseSecrets> for Lease {
    fn from(l: LeaseSecrets) -> Self {
        Lease {
            renew: l.renew,
            _cancel: l.cancel,
            expires_at: 0,
        }
    }
}

/// A share in `shares/`: immutable ones once complete, mutable ones from the first passing read-test-write that
/// names them. Both kinds live in one
/// directory per storage index in 1.20, which is why asking for the wrong kind is a 500 there (and here).
enum Stored {
    Immutable {
        data: Bytes,
        leases: Vec<Lease>,
    },
    Mutable {
        data: Vec<u8>,
        write_enabler: [u8; 32],
        leases: Vec<Lease>,
    },
}

impl Stored {
    fn len(&self) -> u64 {
        match self {
            Stored::Immutable { data, .. } => data.len() as u64,
            Stored::Mutable { data, .. } => data.len() as u64,
        }
    }
}

/// An immutable share being uploaded (`incoming/` in 1.20).
struct Upload {
    secret: Vec<u8>,
    size: u64,
    /// Up to the furthest byte written; `written` says which bytes are real.
    data: Vec<u8>,
    written: RangeSet,
    leases: Vec<Lease>,
    last_activity: Instant,
}

/// Disjoint, non-adjacent half-open ranges, as start → end.
#[derive(Default)]
struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    /// The stored ranges that overlap `start..end`, clipped to it.
    fn overlapping(&self, start: u64, end: u64) -> Vec<Range<u64>> {
        let first = self
            .0
            .range(..=start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        self.0
            .range(first..end)
            .filter(|&(_, &e)| e > start)
            .map(|(&s, &e)| s.max(start)..e.min(end))
            .collect()
    }

    fn covered(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// Adds `start..end`; returns how many bytes were not covered before.
    fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let before = self.covered_in(start, end);
        let (mut new_start, mut new_end) = (start, end);
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .filter(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.0.insert(new_start, new_end);
        (end - start) - before
    }

    fn covered_in(&self, start: u64, end: u64) -> u64 {
        self.overlapping(start, end)
            .iter()
            .map(|r| r.end - r.start)
            .sum()
    }

    /// The gaps in `0..size`.
    fn missing(&self, size: u64) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut at = 0;
        for (&s, &e) in &self.0 {
            if s > at {
                gaps.push(at..s.min(size));
            }
            at = at.max(e);
        }
        if at < size {
            gaps.push(at..size);
        }
        gaps.retain(|r| r.start < r.end);
        gaps
    }
}

#[derive(Default)]
struct State {
    shares: BTreeMap<StorageIndex, BTreeMap<ShareNumber, Stored>>,
    uploads: BTreeMap<(StorageIndex, ShareNumber), Upload>,
    advisories: Vec<CorruptionAdvisory>,
    /// Share data bytes held: stored shares plus bytes written to uploads.
    used: u64,
    /// Simulated seconds, for lease expiry: only tests move it.
    clock: u64,
}

impl State {
    fn expire_uploads(&mut self, timeout: Duration) {
        let now = Instant::now();
        let expired: Vec<_> = self
            .uploads
            .iter()
            .filter(|(_, u)| now.saturating_duration_since(u.last_activity) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove_upload(k);
        }
    }

    fn remove_upload(&mut self, key: (StorageIndex, ShareNumber)) {
        if let Some(u) = self.uploads.remove(&key) {
            self.used = self.used.saturating_sub(u.written.covered());
        }
    }

    /// Room reserved by uploads in progress (`server.py` `allocated_size`).
    fn reserved(&self) -> u64 {
        self.uploads
            .values()
            .fold(0u64, |acc, u| acc.saturating_add(u.size))
    }

    fn has_mutable(&self, si: &StorageIndex) -> bool {
        self.shares
            .get(si)
            .is_some_and(|m| m.values().any(|s| matches!(s, Stored::Mutable { .. })))
    }

    fn set_stored(&mut self, si: StorageIndex, sh: ShareNumber, stored: Stored) {
        let added = stored.len();
        if let Some(old) = self.shares.entry(si).or_default().insert(sh, stored) {
            self.used = self.used.saturating_sub(old.len());
        }
        self.used = self.used.saturating_add(added);
    }

    fn remove_stored(&mut self, si: &StorageIndex, sh: ShareNumber) {
        if let Some(map) = self.shares.get_mut(si) {
            if let Some(old) = map.remove(&sh) {
                self.used = self.used.saturating_sub(old.len());
            }
            if map.is_empty() {
                self.shares.remove(si);
            }
        }
    }

    #[cfg(test)]
    fn recomputed_used(&self) -> u64 {
        let stored: u64 = self
            .shares
            .values()
            .flat_map(|m| m.values())
            .map(Stored::len)
            .sum();
        let uploads: u64 = self.uploads.values().map(|u| u.written.covered()).sum();
        stored + uploads
    }
}

/// The part of `offset..offset+length` inside a share of `len` bytes: reads are cut short at the end and empty past
/// it (`storage/immutable.py` `read_share_data`, `storage/mutable.py` `_read_share_data`).
fn clip(len: usize, offset: u64, length: u64) -> Range<usize> {
    let len64 = len as u64;
    let end = offset.saturating_add(length).min(len64);
    let start = offset.min(end);
    // Both ≤ len, so they fit in usize.
    start as usize..end as usize
}

fn read_clipped(data: &[u8], offset: u64, length: u64) -> &[u8] {
    &data[clip(data.len(), offset, length)]
}

impl MemoryServer {
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_config(MemoryServerConfig::new(name))
    }

    pub fn with_config(config: MemoryServerConfig) -> Self {
        MemoryServer {
            config,
            full: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &MemoryServerConfig {
        &self.config
    }

    /// Makes the disk full (no free space: allocations get nothing, and anything that needs new bytes fails with
    /// [`StorageError::Full`]), or gives the configured capacity back.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::Relaxed);
    }

    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn disk(&self) -> Disk {
        if self.full.load(Ordering::Relaxed) {
            Disk::Full
        } else {
            Disk::Room
        }
    }

    /// Every corruption advisory accepted so far, oldest first.
    pub fn corruption_advisories(&self) -> Vec<CorruptionAdvisory> {
        self.state().advisories.clone()
    }

    /// Bytes of share data held (complete shares, mutable shares, and bytes written to uploads in progress).
    pub fn used_space(&self) -> u64 {
        self.state().used
    }

    /// How many leases a stored share has, or `None` if there is no such stored share.
    pub fn lease_count(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
    ) -> Option<usize> {
        let state = self.state();
        match state.shares.get(&storage_index)?.get(&share_number)? {
            Stored::Immutable { leases, .. } | Stored::Mutable { leases, .. } => Some(leases.len()),
        }
    }

    /// Every lease's expiry time (on the simulated clock) on a stored share, or `None` if there is no such share.
    pub fn lease_expiries(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
    ) -> Option<Vec<u64>> {
        let state = self.state();
        match state.shares.get(&storage_index)?.get(&share_number)? {
            Stored::Immutable { leases, .. } | Stored::Mutable { leases, .. } => {
                Some(leases.iter().map(|l| l.expires_at).collect())
            }
        }
    }

    /// The simulated clock, in seconds.
    pub fn clock(&self) -> u64 {
        self.state().clock
    }

    /// Moves the simulated clock on.
    pub fn advance_clock(&self, seconds: u64) {
        let mut state = self.state();
        state.clock = state.clock.saturating_add(seconds);
    }

    /// What 1.20's lease crawler does with `expire.enabled = true` in `age` mode: deletes every stored share whose
    /// leases have all expired by the simulated clock. Returns how many shares it deleted.
    pub fn expire_leases(&self) -> usize {
        let mut state = self.state();
        let clock = state.clock;
        let expired: Vec<(StorageIndex, ShareNumber)> = state
            .shares
            .iter()
            .flat_map(|(si, shares)| shares.iter().map(move |(sh, stored)| (*si, *sh, stored)))
            .filter(|(_, _, stored)| match stored {
                Stored::Immutable { leases, .. } | Stored::Mutable { leases, .. } => {
                    leases.iter().all(|l| l.expires_at <= clock)
                }
            })
            .map(|(si, sh, _)| (si, sh))
            .collect();
        for (si, sh) in &expired {
            state.remove_stored(si, *sh);
        }
        expired.len()
    }

    /// Deletes a stored share, as a lost disk would: whether there was one.
    pub fn delete_share(&self, storage_index: StorageIndex, share_number: ShareNumber) -> bool {
        let mut state = self.state();
        let present = state
            .shares
            .get(&storage_index)
            .is_some_and(|m| m.contains_key(&share_number));
        state.remove_stored(&storage_index, share_number);
        present
    }

    /// Flips the bits of one byte of a stored share, as a failing disk would: whether there was such a byte.
    pub fn corrupt_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: usize,
    ) -> bool {
        let mut state = self.state();
        let Some(stored) = state
            .shares
            .get_mut(&storage_index)
            .and_then(|m| m.get_mut(&share_number))
        else {
            return false;
        };
        match stored {
            Stored::Immutable { data, .. } => {
                if offset >= data.len() {
                    return false;
                }
                let mut bytes = data.to_vec();
                bytes[offset] ^= 0xff;
                *data = Bytes::from(bytes);
            }
            Stored::Mutable { data, .. } => match data.get_mut(offset) {
                Some(byte) => *byte ^= 0xff,
                None => return false,
            },
        }
        true
    }

    /// The share numbers stored for a storage index.
    pub fn stored_shares(&self, storage_index: StorageIndex) -> BTreeSet<ShareNumber> {
        self.state()
            .shares
            .get(&storage_index)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.expire_uploads(self.config.upload_idle_timeout);
        state
    }

    /// Free space as 1.20's `get_available_space` reports it.
    fn available(&self, state: &State, disk: Disk) -> u64 {
        if disk == Disk::Full {
            0
        } else {
            self.config.capacity.saturating_sub(state.used)
        }
    }

    fn http(&self, status: u16, body: impl Into<String>) -> StorageError {
        StorageError::Http {
            server: self.config.name.clone(),
            status,
            body: body.into(),
        }
    }

    fn not_found(&self, what: impl Into<String>) -> StorageError {
        StorageError::NotFound {
            server: self.config.name.clone(),
            what: what.into(),
        }
    }

    fn unauthorized(&self, reason: impl Into<String>) -> StorageError {
        StorageError::Unauthorized {
            server: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    fn full(&self, what: impl Into<String>) -> StorageError {
        StorageError::Full {
            server: self.config.name.clone(),
            what: what.into(),
        }
    }

    /// 1.20 opens every share of the storage index as an immutable container (`server.py` `get_buckets`,
    /// `allocate_buckets`), which fails on a mutable one.
    fn no_mutable_here(&self, state: &State, si: &StorageIndex) -> Result<(), StorageError> {
        if state.has_mutable(si) {
            Err(self.http(
                500,
                format!("{si}: a mutable share is not an immutable container"),
            ))
        } else {
            Ok(())
        }
    }

    /// `X-Tahoe-Authorization` rejects an empty secret with 400 (`http_server.py:101-104`).
    fn check_upload_secret(&self, secret: &[u8]) -> Result<(), StorageError> {
        if secret.is_empty() {
            Err(self.http(400, "Failed to decode secret upload-secret"))
        } else {
            Ok(())
        }
    }

    /// `http_server.py:316-332`: an upload in progress under another secret is a 401.
    fn check_upload_owner(
        &self,
        state: &State,
        key: (StorageIndex, ShareNumber),
        secret: &[u8],
    ) -> Result<(), StorageError> {
        match state.uploads.get(&key) {
            Some(u) if u.secret != secret => Err(self.unauthorized("wrong upload secret")),
            _ => Ok(()),
        }
    }

    /// `{"reason": tstr .size (1..32765)}` in a body of at most 32768 bytes (`http_server.py:376-381`, `:946`).
    fn check_reason(&self, reason: &str) -> Result<(), StorageError> {
        if reason.len() > MAX_REASON_BYTES {
            Err(self.http(413, ""))
        } else if reason.is_empty() {
            Err(self.http(400, "reason must not be empty"))
        } else {
            Ok(())
        }
    }

    /// Records the advisory unless the report would not fit (`server.py:757-797`).
    fn record_advisory(
        &self,
        state: &mut State,
        disk: Disk,
        kind: ShareKind,
        si: StorageIndex,
        sh: ShareNumber,
        reason: &str,
    ) {
        let kind_name = match kind {
            ShareKind::Immutable => "immutable",
            ShareKind::Mutable => "mutable",
        };
        let report = format!(
            "report: Share Corruption\ntype: {kind_name}\nstorage_index: {si}\nshare_number: {sh}\n\n{reason}\n\n"
        );
        if report.chars().count() as u64 > self.available(state, disk) {
            return;
        }
        state.advisories.push(CorruptionAdvisory {
            kind,
            storage_index: si,
            share_number: sh,
            reason: reason.to_owned(),
        });
    }

    /// `ShareFile.add_or_renew_lease` / `MutableShareFile.add_or_renew_lease`: renew the lease with this renew
    /// secret, else add one, which needs room for its record (beyond the four built-in slots of a mutable share).
    fn add_or_renew_lease_on(
        &self,
        state: &mut State,
        disk: Disk,
        si: StorageIndex,
        sh: ShareNumber,
        lease: Lease,
    ) -> Result<(), StorageError> {
        let available = self.available(state, disk);
        let Some(stored) = state.shares.get_mut(&si).and_then(|m| m.get_mut(&sh)) else {
            return Ok(());
        };
        let (leases, needed) = match stored {
            Stored::Immutable { leases, .. } => (leases, IMMUTABLE_LEASE_SIZE),
            Stored::Mutable { leases, .. } => {
                let needed = if leases.len() < MUTABLE_LEASE_SLOTS {
                    0
                } else {
                    MUTABLE_LEASE_SIZE
                };
                (leases, needed)
            }
        };
        let expires_at = state.clock + LEASE_SECONDS;
        if let Some(existing) = leases.iter_mut().find(|l| l.renew == lease.renew) {
            // lease.py renew: a renewal never shortens a lease.
            existing.expires_at = existing.expires_at.max(expires_at);
            return Ok(());
        }
        if needed > available {
            return Err(self.full(format!("no room for a new lease on {si} share {sh}")));
        }
        leases.push(Lease {
            expires_at,
            ..lease
        });
        Ok(())
    }

    fn allocate(
        &self,
        disk: Disk,
        si: StorageIndex,
        share_numbers: &BTreeSet<ShareNumber>,
        allocated_size: u64,
        lease: Lease,
        upload_secret: &[u8],
    ) -> Result<Allocation, StorageError> {
        self.check_upload_secret(upload_secret)?;
        if share_numbers.len() > MAX_SHARES_PER_REQUEST {
            return Err(self.http(400, "at most 256 share numbers"));
        }
        let mut state = self.state();
        // server.py:313-319: free space less what uploads in progress may still write; may go below zero.
        let mut remaining = i128::from(self.available(&state, disk)) - i128::from(state.reserved());
        self.no_mutable_here(&state, &si)?;
        // server.py:326-329: every complete share is reported, and gets this lease.
        let already_have: BTreeSet<ShareNumber> = state
            .shares
            .get(&si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for &sh in &already_have {
            self.add_or_renew_lease_on(&mut state, disk, si, sh, lease)?;
        }
        let mut allocated = BTreeSet::new();
        let lease_end = state.clock + LEASE_SECONDS;
        for &sh in share_numbers {
            // server.py:334-359: complete, in progress (under any secret) or too big: silently not allocated.
            if already_have.contains(&sh) || state.uploads.contains_key(&(si, sh)) {
                continue;
            }
            if remaining >= i128::from(allocated_size) {
                remaining -= i128::from(allocated_size);
                state.uploads.insert(
                    (si, sh),
                    Upload {
                        secret: upload_secret.to_vec(),
                        size: allocated_size,
                        data: Vec::new(),
                        written: RangeSet::default(),
                        leases: vec![Lease {
                            expires_at: lease_end,
                            ..lease
                        }],
                        last_activity: Instant::now(),
                    },
                );
                allocated.insert(sh);
            }
        }
        Ok(Allocation {
            already_have,
            allocated,
        })
    }

    fn write(
        &self,
        disk: Disk,
        si: StorageIndex,
        sh: ShareNumber,
        upload_secret: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<UploadProgress, StorageError> {
        self.check_upload_secret(upload_secret)?;
        // `Content-Range: bytes a-b/*` cannot say zero bytes: werkzeug rejects it, 416 (http_server.py:821-824).
        if data.is_empty() {
            return Err(self.http(416, ""));
        }
        let mut state = self.state();
        let key = (si, sh);
        self.check_upload_owner(&state, key, upload_secret)?;
        if !state.uploads.contains_key(&key) {
            return Err(self.not_found(format!("no upload in progress for {si} share {sh}")));
        }
        let mut finished = false;
        let mut at = offset;
        for piece in data.chunks(WRITE_PIECE) {
            let available = self.available(&state, disk);
            let upload = match state.uploads.get_mut(&key) {
                Some(u) => u,
                None => break,
            };
            let added = self.write_piece(upload, available, at, piece)?;
            state.used = state.used.saturating_add(added);
            finished = state
                .uploads
                .get(&key)
                .is_some_and(|u| u.written.covered() == u.size);
            at = at.saturating_add(piece.len() as u64);
        }
        let Some(upload) = state.uploads.get(&key) else {
            return Err(self.not_found(format!("no upload in progress for {si} share {sh}")));
        };
        let required = upload.written.missing(upload.size);
        if finished {
            // BucketWriter.close moves the share from incoming/ to shares/ (immutable.py:423-463); a rename there
            // replaces whatever had the name.
            if let Some(upload) = state.uploads.remove(&key) {
                state.used = state.used.saturating_sub(upload.written.covered());
                state.set_stored(
                    si,
                    sh,
                    Stored::Immutable {
                        data: Bytes::from(upload.data),
                        leases: upload.leases,
                    },
                );
            }
        }
        Ok(UploadProgress {
            complete: finished,
            required,
        })
    }

    /// `BucketWriter.write` (immutable.py:387-415) for one piece; returns the newly written byte count.
    fn write_piece(
        &self,
        upload: &mut Upload,
        available: u64,
        offset: u64,
        piece: &[u8],
    ) -> Result<u64, StorageError> {
        upload.last_activity = Instant::now();
        let end = offset.saturating_add(piece.len() as u64);
        for r in upload.written.overlapping(offset, end) {
            // Both ranges lie within what was written, so within `upload.data` and `piece`.
            let have = &upload.data[r.start as usize..r.end as usize];
            let want = &piece[(r.start - offset) as usize..(r.end - offset) as usize];
            if have != want {
                return Err(StorageError::Conflict {
                    server: self.config.name.clone(),
                    what: format!("bytes {}-{} differ from what was written", r.start, r.end),
                });
            }
        }
        if end > upload.size {
            // DataTooLargeError, which 1.20 does not catch: 500.
            return Err(self.http(
                500,
                format!(
                    "write of {}..{end} past the allocated {} bytes",
                    offset, upload.size
                ),
            ));
        }
        let added = (end - offset) - upload.written.covered_in(offset, end);
        if added > available {
            return Err(self.full(format!("no room for {added} more bytes")));
        }
        // end ≤ size, and size was at most the free space, so this fits in memory and in usize.
        let (start, stop) = (offset as usize, end as usize);
        if upload.data.len() < stop {
            upload.data.resize(stop, 0);
        }
        upload.data[start..stop].copy_from_slice(piece);
        upload.written.insert(offset, end);
        Ok(added)
    }

    fn abort(
        &self,
        si: StorageIndex,
        sh: ShareNumber,
        upload_secret: &[u8],
    ) -> Result<(), StorageError> {
        self.check_upload_secret(upload_secret)?;
        let mut state = self.state();
        let key = (si, sh);
        self.check_upload_owner(&state, key, upload_secret)?;
        if state.uploads.contains_key(&key) {
            state.remove_upload(key);
            return Ok(());
        }
        // http_server.py:788-799: a complete share cannot be aborted, 405.
        self.no_mutable_here(&state, &si)?;
        if state.shares.get(&si).is_some_and(|m| m.contains_key(&sh)) {
            return Err(self.http(405, ""));
        }
        Err(self.not_found(format!("no upload in progress for {si} share {sh}")))
    }

    fn list_immutable(&self, si: StorageIndex) -> Result<BTreeSet<ShareNumber>, StorageError> {
        let state = self.state();
        self.no_mutable_here(&state, &si)?;
        Ok(state
            .shares
            .get(&si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }

    /// `read_range` (http_server.py:510-576) after the share was found: 416 for zero bytes, empty from the end on.
    fn read_range(&self, data: &[u8], offset: u64, length: u64) -> Result<Bytes, StorageError> {
        if length == 0 {
            return Err(self.http(416, ""));
        }
        Ok(Bytes::copy_from_slice(read_clipped(data, offset, length)))
    }

    fn read_immutable(
        &self,
        si: StorageIndex,
        sh: ShareNumber,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        let state = self.state();
        self.no_mutable_here(&state, &si)?;
        match state.shares.get(&si).and_then(|m| m.get(&sh)) {
            Some(Stored::Immutable { data, .. }) if length > 0 => {
                // Slicing `Bytes` shares the buffer instead of copying it.
                Ok(data.slice(clip(data.len(), offset, length)))
            }
            Some(Stored::Immutable { data, .. }) => self.read_range(data, offset, length),
            _ => Err(self.not_found(format!("{si} share {sh}"))),
        }
    }

    fn advise_immutable(
        &self,
        disk: Disk,
        si: StorageIndex,
        sh: ShareNumber,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut state = self.state();
        self.no_mutable_here(&state, &si)?;
        if !state.shares.get(&si).is_some_and(|m| m.contains_key(&sh)) {
            return Err(self.not_found(format!("{si} share {sh}")));
        }
        self.check_reason(reason)?;
        self.record_advisory(&mut state, disk, ShareKind::Immutable, si, sh, reason);
        Ok(())
    }

    fn lease(&self, disk: Disk, si: StorageIndex, lease: Lease) -> Result<(), StorageError> {
        let mut state = self.state();
        // http_server.py:907-908: only stored shares count, not uploads in progress.
        let shares: Vec<ShareNumber> = match state.shares.get(&si) {
            Some(m) if !m.is_empty() => m.keys().copied().collect(),
            _ => return Err(self.not_found(format!("no shares for {si}"))),
        };
        for sh in shares {
            self.add_or_renew_lease_on(&mut state, disk, si, sh, lease)?;
        }
        Ok(())
    }

    /// `slot_testv_and_readv_and_writev` (server.py:626-688) as `http_server.py:953-996` calls it.
    fn test_and_write(
        &self,
        disk: Disk,
        si: StorageIndex,
        secrets: MutableSecrets,
        vectors: &BTreeMap<ShareNumber, TestWriteVectors>,
        read_vector: &[ReadVector],
    ) -> Result<ReadTestWriteResult, StorageError> {
        if vectors.len() > MAX_SHARES_PER_REQUEST
            || vectors.values().any(|v| v.tests.len() > MAX_TEST_VECTORS)
            || read_vector.len() > MAX_READ_VECTORS
        {
            return Err(self.http(
                400,
                "at most 256 shares, 30 tests per share and 30 read vectors",
            ));
        }
        let mut state = self.state();
        // server.py:656-660: every existing share must be a mutable container with this write enabler.
        if let Some(existing) = state.shares.get(&si) {
            for stored in existing.values() {
                match stored {
                    Stored::Immutable { .. } => {
                        return Err(self.http(
                            500,
                            format!("{si}: an immutable share is not a mutable container"),
                        ));
                    }
                    Stored::Mutable { write_enabler, .. }
                        if *write_enabler != secrets.write_enabler =>
                    {
                        return Err(self.unauthorized("write enabler mismatch"));
                    }
                    Stored::Mutable { .. } => {}
                }
            }
        }
        let mutable_data = |sh: &ShareNumber| match state.shares.get(&si).and_then(|m| m.get(sh)) {
            Some(Stored::Mutable { data, .. }) => Some(data.as_slice()),
            _ => None,
        };
        // server.py:513-539: a missing share reads as empty.
        let success = vectors.iter().all(|(sh, v)| {
            let data = mutable_data(sh).unwrap_or(&[]);
            v.tests
                .iter()
                .all(|t| read_clipped(data, t.offset, t.size) == t.specimen.as_ref())
        });
        // server.py:668-672: reads of every share, before any write, whether or not the tests passed.
        let mut read_data = BTreeMap::new();
        if let Some(existing) = state.shares.get(&si) {
            for (&sh, stored) in existing {
                if let Stored::Mutable { data, .. } = stored {
                    let reads = read_vector
                        .iter()
                        .map(|r| Bytes::copy_from_slice(read_clipped(data, r.offset, r.size)))
                        .collect();
                    read_data.insert(sh, reads);
                }
            }
        }
        if success {
            let mut remaining = Vec::new();
            for (&sh, v) in vectors {
                // server.py:580-593: new_length 0 deletes and skips the writes.
                if v.new_length == Some(0) {
                    state.remove_stored(&si, sh);
                    continue;
                }
                if mutable_share(&mut state, si, sh).is_none() {
                    state.set_stored(
                        si,
                        sh,
                        Stored::Mutable {
                            data: Vec::new(),
                            write_enabler: secrets.write_enabler,
                            leases: Vec::new(),
                        },
                    );
                }
                for w in &v.writes {
                    self.mutable_write(&mut state, disk, si, sh, w.offset, &w.data)?;
                }
                if let Some(new_length) = v.new_length
                    && let Some(data) = mutable_share(&mut state, si, sh)
                    && new_length < data.len() as u64
                {
                    // mutable.py:447-450: only ever shrinks.
                    let freed = data.len() as u64 - new_length;
                    data.truncate(new_length as usize);
                    state.used = state.used.saturating_sub(freed);
                }
                remaining.push(sh);
            }
            for sh in remaining {
                self.add_or_renew_lease_on(&mut state, disk, si, sh, secrets.lease.into())?;
            }
        }
        Ok(ReadTestWriteResult {
            success,
            data: read_data,
        })
    }

    /// `MutableShareFile._write_share_data` (mutable.py:171-211): a gap before `offset` fills with zeros.
    fn mutable_write(
        &self,
        state: &mut State,
        disk: Disk,
        si: StorageIndex,
        sh: ShareNumber,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > MAX_MUTABLE_SHARE_SIZE {
            // DataTooLargeError from _change_container_size, uncaught: 500.
            return Err(self.http(500, format!("mutable share would reach {end} bytes")));
        }
        let available = self.available(state, disk);
        let Some(data) = mutable_share(state, si, sh) else {
            return Ok(());
        };
        let growth = end.saturating_sub(data.len() as u64);
        if growth > available {
            return Err(self.full(format!("no room for {growth} more bytes")));
        }
        // end ≤ len + free space ≤ capacity, so it fits in memory and usize.
        let (start, stop) = (offset as usize, end as usize);
        if data.len() < stop {
            data.resize(stop, 0);
        }
        data[start..stop].copy_from_slice(bytes);
        state.used = state.used.saturating_add(growth);
        Ok(())
    }

    fn read_mutable(
        &self,
        si: StorageIndex,
        sh: ShareNumber,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        let state = self.state();
        match state.shares.get(&si).and_then(|m| m.get(&sh)) {
            Some(Stored::Mutable { data, .. }) => self.read_range(data, offset, length),
            // get_mutable_share_length opens it as a mutable container (server.py:805-811).
            Some(Stored::Immutable { .. }) => {
                Err(self.http(500, format!("{si} share {sh} is not a mutable container")))
            }
            None => Err(self.not_found(format!("{si} share {sh}"))),
        }
    }

    /// server.py:700-713 lists the directory, so immutable shares of the storage index show up too.
    fn list_mutable(&self, si: StorageIndex) -> BTreeSet<ShareNumber> {
        self.state()
            .shares
            .get(&si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn advise_mutable(
        &self,
        disk: Disk,
        si: StorageIndex,
        sh: ShareNumber,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut state = self.state();
        // http_server.py:1057-1060 accepts a share of either kind.
        if !state.shares.get(&si).is_some_and(|m| m.contains_key(&sh)) {
            return Err(self.not_found(format!("{si} share {sh}")));
        }
        self.check_reason(reason)?;
        self.record_advisory(&mut state, disk, ShareKind::Mutable, si, sh, reason);
        Ok(())
    }
}

fn mutable_share(state: &mut State, si: StorageIndex, sh: ShareNumber) -> Option<&mut Vec<u8>> {
    match state.shares.get_mut(&si)?.get_mut(&sh)? {
        Stored::Mutable { data, .. } => Some(data),
        Stored::Immutable { .. } => None,
    }
}

impl StorageServer for MemoryServer {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn lease_seed(&self) -> StorageFuture<'_, [u8; 20]> {
        // Stands in for a certificate hash: stable per server name, distinct between servers.
        let seed: [u8; 20] = sha1::Sha1::digest(self.config.name.as_bytes()).into();
        Box::pin(async move { Ok(seed) })
    }

    fn version(&self) -> StorageFuture<'_, ServerVersion> {
        Box::pin(async move {
            let disk = self.disk();
            let available = self.available(&self.state(), disk);
            // server.py:257-276: the largest immutable share is whatever is free.
            Ok(ServerVersion {
                maximum_immutable_share_size: available,
                maximum_mutable_share_size: MAX_MUTABLE_SHARE_SIZE,
                available_space: available,
                application_version: self.config.application_version.clone(),
            })
        })
    }

    fn allocate_buckets<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_numbers: &'a BTreeSet<ShareNumber>,
        allocated_size: u64,
        lease: LeaseSecrets,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, Allocation> {
        Box::pin(async move {
            let disk = self.disk();
            self.allocate(
                disk,
                storage_index,
                share_numbers,
                allocated_size,
                lease.into(),
                upload_secret,
            )
        })
    }

    fn write_share_chunk<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Bytes,
    ) -> StorageFuture<'a, UploadProgress> {
        Box::pin(async move {
            let disk = self.disk();
            self.write(
                disk,
                storage_index,
                share_number,
                upload_secret,
                offset,
                &data,
            )
        })
    }

    fn abort_upload<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move { self.abort(storage_index, share_number, upload_secret) })
    }

    fn list_immutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(async move { self.list_immutable(storage_index) })
    }

    fn read_immutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move { self.read_immutable(storage_index, share_number, offset, length) })
    }

    fn advise_corrupt_immutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let disk = self.disk();
            self.advise_immutable(disk, storage_index, share_number, reason)
        })
    }

    fn add_or_renew_lease(
        &self,
        storage_index: StorageIndex,
        lease: LeaseSecrets,
    ) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let disk = self.disk();
            self.lease(disk, storage_index, lease.into())
        })
    }

    fn read_test_write<'a>(
        &'a self,
        storage_index: StorageIndex,
        secrets: MutableSecrets,
        test_write_vectors: &'a BTreeMap<ShareNumber, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> StorageFuture<'a, ReadTestWriteResult> {
        Box::pin(async move {
            let disk = self.disk();
            self.test_and_write(
                disk,
                storage_index,
                secrets,
                test_write_vectors,
                read_vector,
            )
        })
    }

    fn read_mutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move { self.read_mutable(storage_index, share_number, offset, length) })
    }

    fn list_mutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(async move { Ok(self.list_mutable(storage_index)) })
    }

    fn advise_corrupt_mutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let disk = self.disk();
            self.advise_mutable(disk, storage_index, share_number, reason)
        })
    }
}

#[cfg(test)]
mod tests {
    //! Behaviours the contract suite cannot reach through the trait alone: bookkeeping, timeouts, two share kinds on
    //! one storage index, the 64 KiB write pieces and the space checks.

    use super::*;
    use crate::storage::{TestVector, WriteVector};

    const SI: StorageIndex = StorageIndex([7; 16]);
    const LEASE: LeaseSecrets = LeaseSecrets {
        renew: [1; 32],
        cancel: [2; 32],
    };
    const SECRETS: MutableSecrets = MutableSecrets {
        write_enabler: [3; 32],
        lease: LEASE,
    };

    fn shares(list: &[ShareNumber]) -> BTreeSet<ShareNumber> {
        list.iter().copied().collect()
    }

    fn status(r: Result<impl std::fmt::Debug, StorageError>) -> u16 {
        match r {
            Err(StorageError::Http { status, .. }) => status,
            other => panic!("expected an HTTP status, got {other:?}"),
        }
    }

    fn assert_used_consistent(server: &MemoryServer) {
        let state = server.state.lock().unwrap();
        assert_eq!(state.used, state.recomputed_used());
    }

    async fn upload(server: &MemoryServer, si: StorageIndex, sh: ShareNumber, data: &[u8]) {
        let a = server
            .allocate_buckets(si, &shares(&[sh]), data.len() as u64, LEASE, b"up")
            .await
            .unwrap();
        assert!(a.allocated.contains(&sh));
        let p = server
            .write_share_chunk(si, sh, b"up", 0, Bytes::copy_from_slice(data))
            .await
            .unwrap();
        assert!(p.complete);
    }

    fn create_mutable(sh: ShareNumber, data: &[u8]) -> BTreeMap<ShareNumber, TestWriteVectors> {
        BTreeMap::from([(
            sh,
            TestWriteVectors {
                tests: vec![],
                writes: vec![WriteVector {
                    offset: 0,
                    data: Bytes::copy_from_slice(data),
                }],
                new_length: None,
            },
        )])
    }

    #[test]
    fn range_set_merges_and_reports_gaps() {
        let mut r = RangeSet::default();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.insert(15, 35), 10);
        assert_eq!(r.0, BTreeMap::from([(10, 40)]));
        assert_eq!(r.insert(40, 45), 5);
        assert_eq!(r.insert(0, 3), 3);
        assert_eq!(r.missing(50), vec![3..10, 45..50]);
        assert_eq!(r.overlapping(2, 12), vec![2..3, 10..12]);
        assert_eq!(r.covered(), 38);
        assert_eq!(r.insert(5, 5), 0);
    }

    #[test]
    fn clip_cuts_at_the_end_and_never_overflows() {
        assert_eq!(clip(10, 2, 3), 2..5);
        assert_eq!(clip(10, 8, 5), 8..10);
        assert_eq!(clip(10, 10, 5), 10..10);
        assert_eq!(clip(10, 50, 5), 10..10);
        assert_eq!(clip(10, u64::MAX, u64::MAX), 10..10);
    }

    #[tokio::test]
    async fn both_kinds_on_one_storage_index_answer_as_one_directory_does() {
        let server = MemoryServer::new("m");
        upload(&server, SI, 0, b"immutable").await;
        // The mutable side opens share 0 as a mutable container: 500.
        assert_eq!(
            status(
                server
                    .read_test_write(SI, SECRETS, &create_mutable(1, b"x"), &[])
                    .await
            ),
            500
        );
        assert_eq!(status(server.read_mutable_share(SI, 0, 0, 5).await), 500);
        assert_eq!(server.list_mutable_shares(SI).await.unwrap(), shares(&[0]));
        server.advise_corrupt_mutable(SI, 0, "r").await.unwrap();

        let other = StorageIndex([8; 16]);
        let r = server
            .read_test_write(other, SECRETS, &create_mutable(0, b"mutable"), &[])
            .await
            .unwrap();
        assert!(r.success);
        // The immutable side opens every share of the index as an immutable container: 500.
        assert_eq!(status(server.list_immutable_shares(other).await), 500);
        assert_eq!(
            status(server.read_immutable_share(other, 0, 0, 1).await),
            500
        );
        assert_eq!(
            status(
                server
                    .allocate_buckets(other, &shares(&[1]), 10, LEASE, b"up")
                    .await
            ),
            500
        );
        assert_eq!(
            status(server.advise_corrupt_immutable(other, 0, "r").await),
            500
        );
        server.add_or_renew_lease(other, LEASE).await.unwrap();
        assert_used_consistent(&server);
    }

    #[tokio::test]
    async fn completed_upload_replaces_a_mutable_share_of_the_same_number() {
        let server = MemoryServer::new("m");
        server
            .allocate_buckets(SI, &shares(&[0]), 3, LEASE, b"up")
            .await
            .unwrap();
        let r = server
            .read_test_write(SI, SECRETS, &create_mutable(0, b"mutable"), &[])
            .await
            .unwrap();
        assert!(r.success);
        let p = server
            .write_share_chunk(SI, 0, b"up", 0, Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert!(p.complete);
        assert_eq!(
            server.read_immutable_share(SI, 0, 0, 10).await.unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(server.used_space(), 3);
        assert_used_consistent(&server);
    }

    #[tokio::test]
    async fn idle_uploads_are_dropped_and_free_their_space() {
        let mut config = MemoryServerConfig::new("m");
        config.capacity = 100;
        config.upload_idle_timeout = Duration::from_millis(50);
        let server = MemoryServer::with_config(config);
        let a = server
            .allocate_buckets(SI, &shares(&[0]), 100, LEASE, b"up")
            .await
            .unwrap();
        assert_eq!(a.allocated, shares(&[0]));
        server
            .write_share_chunk(SI, 0, b"up", 0, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(server.used_space(), 10);
        // No room for another share while the upload holds its allocation.
        let b = server
            .allocate_buckets(SI, &shares(&[1]), 1, LEASE, b"up")
            .await
            .unwrap();
        assert!(b.allocated.is_empty());
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(
            server
                .write_share_chunk(SI, 0, b"up", 10, Bytes::from_static(b"x"))
                .await,
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(server.used_space(), 0);
        let c = server
            .allocate_buckets(SI, &shares(&[1]), 100, LEASE, b"up")
            .await
            .unwrap();
        assert_eq!(c.allocated, shares(&[1]));
    }

    #[tokio::test]
    async fn a_big_write_lands_in_64k_pieces_so_a_late_conflict_keeps_the_early_pieces() {
        let server = MemoryServer::new("m");
        let size = 3 * WRITE_PIECE as u64;
        server
            .allocate_buckets(SI, &shares(&[0]), size, LEASE, b"up")
            .await
            .unwrap();
        // One byte already written in the third piece, differing from what the big write brings.
        server
            .write_share_chunk(
                SI,
                0,
                b"up",
                2 * WRITE_PIECE as u64,
                Bytes::from_static(b"\x01"),
            )
            .await
            .unwrap();
        let big = Bytes::from(vec![0u8; 3 * WRITE_PIECE]);
        assert!(matches!(
            server.write_share_chunk(SI, 0, b"up", 0, big).await,
            Err(StorageError::Conflict { .. })
        ));
        // Only the third piece is still missing, but for the byte written first.
        let p = server
            .write_share_chunk(SI, 0, b"up", 0, Bytes::from_static(b"\x00"))
            .await
            .unwrap();
        let third = 2 * WRITE_PIECE as u64;
        assert_eq!(p.required, vec![third + 1..size]);
        assert_eq!(server.used_space(), third + 1);
        assert_used_consistent(&server);
    }

    #[tokio::test]
    async fn allocation_takes_what_fits_in_order() {
        let mut config = MemoryServerConfig::new("m");
        config.capacity = 250;
        let server = MemoryServer::with_config(config);
        let a = server
            .allocate_buckets(SI, &shares(&[0, 1, 2, 3]), 100, LEASE, b"up")
            .await
            .unwrap();
        assert_eq!(a.allocated, shares(&[0, 1]));
        // Abort frees the reservation.
        server.abort_upload(SI, 1, b"up").await.unwrap();
        let b = server
            .allocate_buckets(SI, &shares(&[2, 3]), 100, LEASE, b"up")
            .await
            .unwrap();
        assert_eq!(b.allocated, shares(&[2]));
    }

    #[tokio::test]
    async fn leases_are_renewed_by_secret_and_new_ones_need_room() {
        let mut config = MemoryServerConfig::new("m");
        config.capacity = 100;
        let server = MemoryServer::with_config(config);
        upload(&server, SI, 0, &[5; 50]).await;
        assert_eq!(server.lease_count(SI, 0), Some(1));
        server.add_or_renew_lease(SI, LEASE).await.unwrap();
        assert_eq!(server.lease_count(SI, 0), Some(1));
        let other = LeaseSecrets {
            renew: [9; 32],
            cancel: [9; 32],
        };
        // 50 bytes free < 72 for a new immutable lease record: NoSpace, a 500 in 1.20.
        assert!(matches!(
            server.add_or_renew_lease(SI, other).await,
            Err(StorageError::Full { .. })
        ));
        // Allocation adds or renews the lease on shares it already has, and fails the same way.
        assert!(matches!(
            server
                .allocate_buckets(SI, &shares(&[1]), 10, other, b"up")
                .await,
            Err(StorageError::Full { .. })
        ));
        server
            .allocate_buckets(SI, &shares(&[1]), 10, LEASE, b"up")
            .await
            .unwrap();

        // Mutable shares have four lease slots before they need room.
        let msi = StorageIndex([9; 16]);
        let r = server
            .read_test_write(msi, SECRETS, &create_mutable(0, b"m"), &[])
            .await
            .unwrap();
        assert!(r.success);
        for i in 0..3u8 {
            let lease = LeaseSecrets {
                renew: [20 + i; 32],
                cancel: [0; 32],
            };
            server.add_or_renew_lease(msi, lease).await.unwrap();
        }
        assert_eq!(server.lease_count(msi, 0), Some(4));
        server.set_full(true);
        assert!(matches!(
            server.add_or_renew_lease(msi, other).await,
            Err(StorageError::Full { .. })
        ));
        server.add_or_renew_lease(msi, LEASE).await.unwrap();
    }

    #[tokio::test]
    async fn request_limits_of_the_schemas_are_400s() {
        let server = MemoryServer::new("m");
        let many: BTreeSet<ShareNumber> = (0..257).collect();
        assert_eq!(
            status(server.allocate_buckets(SI, &many, 1, LEASE, b"up").await),
            400
        );
        assert_eq!(
            status(
                server
                    .allocate_buckets(SI, &shares(&[0]), 1, LEASE, b"")
                    .await
            ),
            400
        );
        let tests = vec![
            TestVector {
                offset: 0,
                size: 0,
                specimen: Bytes::new(),
            };
            31
        ];
        let tw = BTreeMap::from([(
            0,
            TestWriteVectors {
                tests,
                ..Default::default()
            },
        )]);
        assert_eq!(
            status(server.read_test_write(SI, SECRETS, &tw, &[]).await),
            400
        );
        let reads = vec![ReadVector { offset: 0, size: 1 }; 31];
        assert_eq!(
            status(
                server
                    .read_test_write(SI, SECRETS, &BTreeMap::new(), &reads)
                    .await
            ),
            400
        );
        upload(&server, SI, 0, b"x").await;
        assert_eq!(
            status(server.advise_corrupt_immutable(SI, 0, "").await),
            400
        );
        let long = "r".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(
            status(server.advise_corrupt_immutable(SI, 0, &long).await),
            413
        );
        let longest = "r".repeat(MAX_REASON_BYTES);
        server
            .advise_corrupt_immutable(SI, 0, &longest)
            .await
            .unwrap();
        assert_eq!(server.corruption_advisories().len(), 1);
    }

    #[tokio::test]
    async fn mutable_writes_past_the_maximum_share_size_are_500s_and_growth_needs_room() {
        let mut config = MemoryServerConfig::new("m");
        config.capacity = 10;
        let server = MemoryServer::with_config(config);
        let mut tw = create_mutable(0, b"0123456789");
        tw.get_mut(&0).unwrap().writes.push(WriteVector {
            offset: MAX_MUTABLE_SHARE_SIZE,
            data: Bytes::from_static(b"x"),
        });
        // The first write lands before the second fails, as in 1.20.
        assert_eq!(
            status(server.read_test_write(SI, SECRETS, &tw, &[]).await),
            500
        );
        assert_eq!(
            server.read_mutable_share(SI, 0, 0, 100).await.unwrap(),
            Bytes::from_static(b"0123456789")
        );
        // A zero-length write far out would fill zeros up to it: not in 10 bytes of capacity.
        let far = BTreeMap::from([(
            0,
            TestWriteVectors {
                writes: vec![WriteVector {
                    offset: 1 << 40,
                    data: Bytes::new(),
                }],
                ..Default::default()
            },
        )]);
        assert!(matches!(
            server.read_test_write(SI, SECRETS, &far, &[]).await,
            Err(StorageError::Full { .. })
        ));
        // Rewriting in place needs no room.
        let r = server
            .read_test_write(SI, SECRETS, &create_mutable(0, b"abc"), &[])
            .await
            .unwrap();
        assert!(r.success);
        assert_eq!(server.used_space(), 10);
        assert_used_consistent(&server);
    }

    #[tokio::test]
    async fn advisories_are_not_recorded_without_room_for_the_report() {
        let server = MemoryServer::new("m");
        upload(&server, SI, 0, b"x").await;
        server.set_full(true);
        server.advise_corrupt_immutable(SI, 0, "bad").await.unwrap();
        assert!(server.corruption_advisories().is_empty());
        server.set_full(false);
        server.advise_corrupt_immutable(SI, 0, "bad").await.unwrap();
        assert_eq!(
            server.corruption_advisories(),
            vec![CorruptionAdvisory {
                kind: ShareKind::Immutable,
                storage_index: SI,
                share_number: 0,
                reason: "bad".into(),
            }]
        );
    }
}
