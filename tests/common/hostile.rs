//! A storage server that attacks its client: it holds real shares (an in-memory server underneath) and answers
//! honestly until told to play one [`Attack`], and it records what the client asked of it (the longest read, the
//! most reads in flight at once, the share numbers read), so a test can assert that an attack stayed bounded,
//! not only that it ended in an error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::memory::TestServer;
use bytes::{Bytes, BytesMut};
use tahoe_mount::storage::{
    Allocation, LeaseSecrets, MutableSecrets, ReadTestWriteResult, ReadVector, ServerVersion,
    ShareNumber, StorageFuture, StorageIndex, StorageServer, TestWriteVectors, UploadProgress,
};

/// What the server does to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Honest: everything goes to the shares underneath.
    None,
    /// Lists share 0 of every immutable file and serves a share whose (unverified) header puts the URI extension
    /// block a terabyte in; any read past the header gets as many zero bytes as asked (up to 64 MiB a read).
    HugeImmutableOffsets,
    /// Lists shares 0..count of every mutable file; each read of a share it does not hold gets the first bytes
    /// of the lowest share it does hold (or zeros).
    ManyMutableShares(u16),
}

/// The most zero bytes one hostile read returns (the harness must not exhaust the machine itself).
const MAX_FAKE_READ: u64 = 64 << 20;

pub struct HostileServer {
    inner: Arc<TestServer>,
    attack: Mutex<Attack>,
    largest_read: AtomicU64,
    reads: AtomicU64,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    shares_read: Mutex<BTreeSet<ShareNumber>>,
}

/// Counts a read in flight for as long as it lives.
struct InFlight<'a>(&'a HostileServer);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HostileServer {
    pub fn new(inner: Arc<TestServer>) -> Arc<HostileServer> {
        Arc::new(HostileServer {
            inner,
            attack: Mutex::new(Attack::None),
            largest_read: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            shares_read: Mutex::default(),
        })
    }

    pub fn attack(&self, attack: Attack) {
        *self.attack.lock().unwrap() = attack;
    }

    fn current(&self) -> Attack {
        *self.attack.lock().unwrap()
    }

    /// The longest read asked of this server, in bytes.
    pub fn largest_read(&self) -> u64 {
        self.largest_read.load(Ordering::SeqCst)
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// The most reads this server had in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// Every share number a read asked for.
    pub fn shares_read(&self) -> BTreeSet<ShareNumber> {
        self.shares_read.lock().unwrap().clone()
    }

    fn start_read(&self, share: ShareNumber, length: u64) -> InFlight<'_> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.largest_read.fetch_max(length, Ordering::SeqCst);
        self.shares_read.lock().unwrap().insert(share);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }
}

/// A v2 immutable share header (`>LQQQQQQQQ`) whose hash trees and URI extension block lie a terabyte apart.
fn huge_header() -> Vec<u8> {
    let data = 0x44u64;
    let tera = 1u64 << 40;
    let mut header = 2u32.to_be_bytes().to_vec();
    for field in [
        1,                // block size
        0,                // data size
        data,             // data
        data,             // plaintext hash tree
        data,             // crypttext hash tree
        data + tera / 2,  // block hashes
        data + tera,      // share hashes
        data + tera + 64, // URI extension
    ] {
        header.extend_from_slice(&u64::to_be_bytes(field));
    }
    header
}

impl StorageServer for HostileServer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> StorageFuture<'_, ServerVersion> {
        self.inner.version()
    }

    fn lease_seed(&self) -> StorageFuture<'_, [u8; 20]> {
        self.inner.lease_seed()
    }

    fn allocate_buckets<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_numbers: &'a BTreeSet<ShareNumber>,
        allocated_size: u64,
        lease: LeaseSecrets,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, Allocation> {
        self.inner.allocate_buckets(
            storage_index,
            share_numbers,
            allocated_size,
            lease,
            upload_secret,
        )
    }

    fn write_share_chunk<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Bytes,
    ) -> StorageFuture<'a, UploadProgress> {
        self.inner
            .write_share_chunk(storage_index, share_number, upload_secret, offset, data)
    }

    fn abort_upload<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, ()> {
        self.inner
            .abort_upload(storage_index, share_number, upload_secret)
    }

    fn list_immutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        match self.current() {
            Attack::HugeImmutableOffsets => Box::pin(async { Ok(BTreeSet::from([0])) }),
            _ => self.inner.list_immutable_shares(storage_index),
        }
    }

    fn read_immutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move {
            let _counted = self.start_read(share_number, length);
            match self.current() {
                Attack::HugeImmutableOffsets => {
                    let header = huge_header();
                    let mut reply = BytesMut::new();
                    if offset < header.len() as u64 {
                        reply.extend_from_slice(&header[offset as usize..]);
                    }
                    let zeros = length.min(MAX_FAKE_READ) as usize;
                    reply.resize(zeros.max(reply.len()).min(length as usize), 0);
                    Ok(reply.freeze())
                }
                _ => {
                    self.inner
                        .read_immutable_share(storage_index, share_number, offset, length)
                        .await
                }
            }
        })
    }

    fn advise_corrupt_immutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        self.inner
            .advise_corrupt_immutable(storage_index, share_number, reason)
    }

    fn add_or_renew_lease(
        &self,
        storage_index: StorageIndex,
        lease: LeaseSecrets,
    ) -> StorageFuture<'_, ()> {
        self.inner.add_or_renew_lease(storage_index, lease)
    }

    fn read_test_write<'a>(
        &'a self,
        storage_index: StorageIndex,
        secrets: MutableSecrets,
        test_write_vectors: &'a BTreeMap<ShareNumber, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> StorageFuture<'a, ReadTestWriteResult> {
        self.inner
            .read_test_write(storage_index, secrets, test_write_vectors, read_vector)
    }

    fn read_mutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move {
            let _counted = self.start_read(share_number, length);
            // A moment in flight, so that reads the client sends together overlap here.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            if let Attack::ManyMutableShares(_) = self.current() {
                let held = self.inner.list_mutable_shares(storage_index).await?;
                if !held.contains(&share_number) {
                    return match held.first() {
                        Some(&real) => {
                            self.inner
                                .read_mutable_share(storage_index, real, offset, length)
                                .await
                        }
                        None => Ok(Bytes::from(vec![0; length.min(MAX_FAKE_READ) as usize])),
                    };
                }
            }
            self.inner
                .read_mutable_share(storage_index, share_number, offset, length)
                .await
        })
    }

    fn list_mutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        match self.current() {
            Attack::ManyMutableShares(count) => Box::pin(async move { Ok((0..count).collect()) }),
            _ => self.inner.list_mutable_shares(storage_index),
        }
    }

    fn advise_corrupt_mutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        self.inner
            .advise_corrupt_mutable(storage_index, share_number, reason)
    }
}
