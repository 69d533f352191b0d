//! [`FaultyServer`]: wraps any [`StorageServer`] to inject the faults of a network and a bad disk at run time (down,
//! slow, hanging, returning corrupt bytes), and counts the calls per operation. Tests wrap the in-memory server in
//! it; faults that are the server's own state (a full disk) are the wrapped server's business.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Allocation, LeaseSecrets, MutableSecrets, ReadTestWriteResult, ReadVector, ServerVersion,
    ShareNumber, StorageError, StorageFuture, StorageIndex, StorageServer, TestWriteVectors,
    UploadProgress,
};

/// What the server does wrong, set at run time with [`FaultyServer::set_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every call fails at once with [`StorageError::Connect`].
    Down,
    /// Every call waits this long, then runs normally (dropping the future before then means it never ran).
    Slow(Duration),
    /// Reads (immutable, mutable, and the reads of a read-test-write) return every byte inverted; the stored data
    /// and test vectors see the true bytes.
    Corrupting,
    /// Every call's future stays pending forever.
    Hanging,
}

/// One operation of [`StorageServer`], for the call counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Version,
    AllocateBuckets,
    WriteShareChunk,
    AbortUpload,
    ListImmutableShares,
    ReadImmutableShare,
    AdviseCorruptImmutable,
    AddOrRenewLease,
    ReadTestWrite,
    ReadMutableShare,
    ListMutableShares,
    AdviseCorruptMutable,
}

impl Operation {
    pub const ALL: [Operation; 12] = [
        Operation::Version,
        Operation::AllocateBuckets,
        Operation::WriteShareChunk,
        Operation::AbortUpload,
        Operation::ListImmutableShares,
        Operation::ReadImmutableShare,
        Operation::AdviseCorruptImmutable,
        Operation::AddOrRenewLease,
        Operation::ReadTestWrite,
        Operation::ReadMutableShare,
        Operation::ListMutableShares,
        Operation::AdviseCorruptMutable,
    ];
}

/// A server with faults. It derefs to the wrapped server, so that a test reaches its own controls through it.
pub struct FaultyServer<S> {
    inner: S,
    fault: Mutex<Fault>,
    calls: [AtomicU64; Operation::ALL.len()],
}

fn invert(data: &[u8]) -> Bytes {
    data.iter().map(|b| !b).collect::<Vec<u8>>().into()
}

impl<S: StorageServer> FaultyServer<S> {
    pub fn new(inner: S) -> Self {
        FaultyServer {
            inner,
            fault: Mutex::new(Fault::None),
            calls: Default::default(),
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    pub fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times `op` was called (whatever the fault, and whether or not it succeeded).
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    pub fn total_calls(&self) -> u64 {
        Operation::ALL.iter().map(|&op| self.calls(op)).sum()
    }

    pub fn reset_calls(&self) {
        for c in &self.calls {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts the call and applies the connection-level faults; returns whether the answer's bytes are to be
    /// corrupted.
    async fn enter(&self, op: Operation) -> Result<bool, StorageError> {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
        match self.fault() {
            Fault::Down => Err(StorageError::Connect {
                server: self.inner.name().to_owned(),
                reason: "connection refused (injected fault)".into(),
            }),
            Fault::Hanging => std::future::pending().await,
            Fault::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Ok(false)
            }
            Fault::Corrupting => Ok(true),
            Fault::None => Ok(false),
        }
    }
}

impl<S> Deref for FaultyServer<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S: StorageServer> StorageServer for FaultyServer<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> StorageFuture<'_, ServerVersion> {
        Box::pin(async move {
            self.enter(Operation::Version).await?;
            self.inner.version().await
        })
    }

    fn lease_seed(&self) -> StorageFuture<'_, [u8; 20]> {
        // Learning it takes a request, as with a real server whose certificate is not yet known.
        Box::pin(async move {
            self.enter(Operation::Version).await?;
            self.inner.lease_seed().await
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
            self.enter(Operation::AllocateBuckets).await?;
            self.inner
                .allocate_buckets(
                    storage_index,
                    share_numbers,
                    allocated_size,
                    lease,
                    upload_secret,
                )
                .await
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
            self.enter(Operation::WriteShareChunk).await?;
            self.inner
                .write_share_chunk(storage_index, share_number, upload_secret, offset, data)
                .await
        })
    }

    fn abort_upload<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.enter(Operation::AbortUpload).await?;
            self.inner
                .abort_upload(storage_index, share_number, upload_secret)
                .await
        })
    }

    fn list_immutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(async move {
            self.enter(Operation::ListImmutableShares).await?;
            self.inner.list_immutable_shares(storage_index).await
        })
    }

    fn read_immutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move {
            let corrupt = self.enter(Operation::ReadImmutableShare).await?;
            let data = self
                .inner
                .read_immutable_share(storage_index, share_number, offset, length)
                .await?;
            Ok(if corrupt { invert(&data) } else { data })
        })
    }

    fn advise_corrupt_immutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.enter(Operation::AdviseCorruptImmutable).await?;
            self.inner
                .advise_corrupt_immutable(storage_index, share_number, reason)
                .await
        })
    }

    fn add_or_renew_lease(
        &self,
        storage_index: StorageIndex,
        lease: LeaseSecrets,
    ) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            self.enter(Operation::AddOrRenewLease).await?;
            self.inner.add_or_renew_lease(storage_index, lease).await
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
            let corrupt = self.enter(Operation::ReadTestWrite).await?;
            let mut result = self
                .inner
                .read_test_write(storage_index, secrets, test_write_vectors, read_vector)
                .await?;
            if corrupt {
                for reads in result.data.values_mut() {
                    for read in reads.iter_mut() {
                        *read = invert(read);
                    }
                }
            }
            Ok(result)
        })
    }

    fn read_mutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(async move {
            let corrupt = self.enter(Operation::ReadMutableShare).await?;
            let data = self
                .inner
                .read_mutable_share(storage_index, share_number, offset, length)
                .await?;
            Ok(if corrupt { invert(&data) } else { data })
        })
    }

    fn list_mutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(async move {
            self.enter(Operation::ListMutableShares).await?;
            self.inner.list_mutable_shares(storage_index).await
        })
    }

    fn advise_corrupt_mutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.enter(Operation::AdviseCorruptMutable).await?;
            self.inner
                .advise_corrupt_mutable(storage_index, share_number, reason)
                .await
        })
    }
}
