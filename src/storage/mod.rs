//! Talking to storage servers: their addresses (NURLs and fURLs), the [`StorageServer`] interface the rest of the
//! code uses, the HTTPS client for Tahoe's HTTP storage protocol, and, for tests only (the `testing` feature), an
//! in-memory server and a wrapper that injects faults into any server.
//!
//! The interface mirrors the protocol's operations one for one (`allmydata/storage/http_client.py`), so the
//! in-memory server and a real one can be held to the same contract tests.

pub mod cbor;
#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod gbs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod nurl;
pub mod replies;
pub mod tls;

use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;
use thiserror::Error;

/// The future every storage operation returns.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Where a file's shares live on every server: 16 bytes, written as 26 lowercase base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageIndex(pub [u8; 16]);

impl fmt::Display for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::crypto::base32::encode(&self.0))
    }
}

impl fmt::Debug for StorageIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SI({self})")
    }
}

/// A share's number within its file (0 ≤ n < N).
pub type ShareNumber = u16;

/// The per-file, per-server lease secrets (derived as Tahoe does; see `crypto::hashutil`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LeaseSecrets {
    pub renew: [u8; 32],
    pub cancel: [u8; 32],
}

impl LeaseSecrets {
    /// The secrets Tahoe puts on a file's shares at one server (`immutable/upload.py`,
    /// `mutable/filenode.py`): from the client's lease secret (`private/secret`), the file's storage index, and
    /// the server's lease seed (its Foolscap tubid). Equal inputs give Python Tahoe's secrets, so either client
    /// can renew the other's leases.
    pub fn derive(
        client_lease_secret: &[u8],
        storage_index: &StorageIndex,
        lease_seed: &[u8; 20],
    ) -> LeaseSecrets {
        use crate::crypto::hashutil as h;
        let file_renew = h::file_renewal_secret_hash(
            &h::my_renewal_secret_hash(client_lease_secret),
            &storage_index.0,
        );
        let file_cancel = h::file_cancel_secret_hash(
            &h::my_cancel_secret_hash(client_lease_secret),
            &storage_index.0,
        );
        LeaseSecrets {
            renew: h::bucket_renewal_secret_hash(&file_renew, lease_seed),
            cancel: h::bucket_cancel_secret_hash(&file_cancel, lease_seed),
        }
    }
}

/// The write enabler of a mutable file at one server: what Tahoe derives from the file's writekey and the
/// server's tubid (`mutable/filenode.py`), so that our writes and Python Tahoe's unlock each other's slots.
pub fn write_enabler(writekey: &[u8], lease_seed: &[u8; 20]) -> [u8; 32] {
    crate::crypto::hashutil::ssk_write_enabler_hash(writekey, lease_seed)
}

impl fmt::Debug for LeaseSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseSecrets(..)")
    }
}

/// What a server says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub maximum_immutable_share_size: u64,
    pub maximum_mutable_share_size: u64,
    pub available_space: u64,
    pub application_version: String,
}

/// The answer to an allocation: shares the server already holds, and those it made room for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allocation {
    pub already_have: BTreeSet<ShareNumber>,
    pub allocated: BTreeSet<ShareNumber>,
}

/// After a write to an immutable share: whether it is complete, and which byte ranges are still missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    pub complete: bool,
    pub required: Vec<Range<u64>>,
}

/// One equality test of a read-test-write: the share's bytes at `offset..offset+size`, cut short at the share's end,
/// must equal `specimen` (`allmydata/storage/mutable.py` `check_testv`). A missing share reads as empty, so an empty
/// specimen with `size` > 0 tests that the share does not exist (or is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestVector {
    pub offset: u64,
    pub size: u64,
    pub specimen: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteVector {
    pub offset: u64,
    pub data: Bytes,
}

/// The tests and writes for one share of a mutable slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestWriteVectors {
    pub tests: Vec<TestVector>,
    pub writes: Vec<WriteVector>,
    /// `Some(0)` deletes the share and ignores `writes` (a missing share stays missing); a smaller value truncates
    /// after the writes; a larger one changes nothing (1.20 never extends: `storage/mutable.py` `writev`); `None`
    /// leaves the length.
    pub new_length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadVector {
    pub offset: u64,
    pub size: u64,
}

/// The secrets a mutable write needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MutableSecrets {
    pub write_enabler: [u8; 32],
    pub lease: LeaseSecrets,
}

impl fmt::Debug for MutableSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MutableSecrets(..)")
    }
}

/// The answer to a read-test-write: whether the writes happened, and what the reads saw (before any write).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadTestWriteResult {
    pub success: bool,
    pub data: BTreeMap<ShareNumber, Vec<Bytes>>,
}

/// What went wrong talking to a server. Every variant names the server.
///
/// HTTP answers map as: 401 → `Unauthorized`, 404 → `NotFound`, 409 → `Conflict`, any other failure status →
/// `Http` with that status (e.g. 400 for a request 1.20's schemas reject, 405 for aborting a complete share, 416 for
/// a zero-length read or write, which a Range header cannot express, 500 for a write past the allocated size).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StorageError {
    #[error("{server}: cannot connect: {reason}")]
    Connect { server: String, reason: String },
    #[error("{server}: no answer within {seconds:.1} s ({what})")]
    Timeout {
        server: String,
        what: &'static str,
        seconds: f64,
    },
    #[error("{server}: TLS: {reason}")]
    Tls { server: String, reason: String },
    #[error("{server}: unauthorized ({reason})")]
    Unauthorized { server: String, reason: String },
    #[error("{server}: not found: {what}")]
    NotFound { server: String, what: String },
    #[error("{server}: conflict: {what}")]
    Conflict { server: String, what: String },
    #[error("{server}: HTTP {status}: {body}")]
    Http {
        server: String,
        status: u16,
        body: String,
    },
    #[error("{server}: bad reply: {problem}")]
    Protocol { server: String, problem: String },
    /// A reply whose body is shorter than its Content-Range says: the server announced the range, then read less
    /// (Tahoe's does, for a mutable share rewritten in between). A protocol error, but one a retry may cure.
    #[error("{server}: {what}: Content-Range says {announced} bytes but the body has {received}")]
    ShortBody {
        server: String,
        what: String,
        announced: u64,
        received: u64,
    },
    /// The server's disk is full (a real server answers 500; the in-memory server says this).
    #[error("{server}: out of space: {what}")]
    Full { server: String, what: String },
}

impl StorageError {
    /// The server's failure says nothing about the data: another server, or a retry later, may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Connect { .. } | StorageError::Timeout { .. }
        )
    }
}

/// One storage server, as the rest of tahoe-mount sees it: the operations of Tahoe's storage protocol.
pub trait StorageServer: Send + Sync {
    /// A short human name for messages (nickname or address).
    fn name(&self) -> &str;

    fn version(&self) -> StorageFuture<'_, ServerVersion>;

    /// The server's version as it answered within `max_age`, else asked again. Uploads ask every server before
    /// placing shares, and a version request costs a Tahoe server as much as the share query beside it (small
    /// files are bound by the servers' CPU); Tahoe's own uploader uses the version from the connection too. A
    /// server that has filled up since refuses the allocation, and the upload places those shares elsewhere.
    fn version_recent(&self, max_age: Duration) -> StorageFuture<'_, ServerVersion> {
        let _ = max_age;
        self.version()
    }

    /// The 20 bytes Tahoe derives this server's lease secrets and write enablers from: the tub id, which for
    /// an HTTP storage server is the SHA-1 of its TLS certificate (so it may take a connection to learn).
    fn lease_seed(&self) -> StorageFuture<'_, [u8; 20]>;

    /// Asks for room for `share_numbers`, each exactly `allocated_size` bytes, under `upload_secret`.
    ///
    /// `already_have` lists every complete share of `storage_index`, asked for or not. Shares with an upload in
    /// progress (under any upload secret, this one included: 1.20 is not idempotent here) and shares that do not
    /// fit in the free space are silently left out of `allocated`.
    fn allocate_buckets<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_numbers: &'a BTreeSet<ShareNumber>,
        allocated_size: u64,
        lease: LeaseSecrets,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, Allocation>;

    /// Writes `data` at `offset` of an allocated share; the share completes once every byte is written.
    ///
    /// Rewriting written bytes with the same bytes is fine, with different ones is `Conflict`; a wrong upload secret
    /// is `Unauthorized`; an unknown or complete share is `NotFound`; empty `data` is HTTP 416 and a write past the
    /// allocated size HTTP 500, as in 1.20.
    fn write_share_chunk<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Bytes,
    ) -> StorageFuture<'a, UploadProgress>;

    /// [`StorageServer::write_share_chunk`] of `data`, the pieces back to back: a server that can, sends them as
    /// they are instead of joining them into one buffer first.
    fn write_share_pieces<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Vec<Bytes>,
    ) -> StorageFuture<'a, UploadProgress> {
        let data = match <[Bytes; 1]>::try_from(data) {
            Ok([one]) => one,
            Err(data) => Bytes::from(data.concat()),
        };
        self.write_share_chunk(storage_index, share_number, upload_secret, offset, data)
    }

    /// Abandons an unfinished share upload, freeing its space. A complete share is HTTP 405, an unknown one
    /// `NotFound`, a wrong upload secret `Unauthorized`.
    fn abort_upload<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, ()>;

    /// The complete immutable shares this server holds for `storage_index`.
    fn list_immutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>>;

    /// Reads up to `length` bytes at `offset` of a complete immutable share (short at the end of the share, empty
    /// from the end on). `length` 0 is HTTP 416: a Range header cannot ask for zero bytes.
    fn read_immutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes>;

    /// [`StorageServer::read_immutable_share`], appending the bytes to `into`: a server that can, puts them
    /// there as they arrive, without gathering and copying the reply first.
    fn read_immutable_share_into<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
        into: &'a mut BytesMut,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let data = self
                .read_immutable_share(storage_index, share_number, offset, length)
                .await?;
            into.extend_from_slice(&data);
            Ok(())
        })
    }

    fn advise_corrupt_immutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()>;

    /// Adds a lease, or renews the one whose renew secret matches. Not found if the server has no share.
    fn add_or_renew_lease(
        &self,
        storage_index: StorageIndex,
        lease: LeaseSecrets,
    ) -> StorageFuture<'_, ()>;

    /// Mutable slots: runs every test; if all pass, applies every write. Reads happen before writes.
    ///
    /// The write enabler is checked first, against every existing share of the slot (`Unauthorized`). The reads
    /// cover every existing share of the slot, not only those in `test_write_vectors`, and happen whether or not
    /// the tests pass.
    fn read_test_write<'a>(
        &'a self,
        storage_index: StorageIndex,
        secrets: MutableSecrets,
        test_write_vectors: &'a BTreeMap<ShareNumber, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> StorageFuture<'a, ReadTestWriteResult>;

    /// Like [`StorageServer::read_immutable_share`], on a mutable share's current data.
    fn read_mutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes>;

    fn list_mutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>>;

    fn advise_corrupt_mutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()>;
}

/// Which kind of share a corruption advisory is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    Immutable,
    Mutable,
}

/// Tells `server` that its share `share` of `storage_index` is corrupt, waiting up to `timeout` for the answer,
/// and logs whether the server took the advisory (Tahoe's operators find them in `corruption-advisories/`).
/// Returns whether it did.
pub async fn advise_corruption(
    server: &dyn StorageServer,
    kind: ShareKind,
    storage_index: StorageIndex,
    share: ShareNumber,
    reason: &str,
    timeout: Duration,
) -> bool {
    let advise = match kind {
        ShareKind::Immutable => server.advise_corrupt_immutable(storage_index, share, reason),
        ShareKind::Mutable => server.advise_corrupt_mutable(storage_index, share, reason),
    };
    let outcome = match tokio::time::timeout(timeout, advise).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {:.0} s", timeout.as_secs_f64())),
    };
    match &outcome {
        Ok(()) => tracing::info!(
            "tahoe-mount: told {} that its share {storage_index}/{share} is corrupt",
            server.name()
        ),
        Err(why) => tracing::warn!(
            "tahoe-mount: could not tell {} that its share {storage_index}/{share} is corrupt: {why}",
            server.name()
        ),
    }
    outcome.is_ok()
}
