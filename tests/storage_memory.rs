//! The in-memory storage server: the whole storage contract suite, each injected fault, the call counters, and a
//! property test holding random operation sequences against a plain reference model.

mod common;

use bytes::Bytes;
use common::memory::TestServer;
use common::storage_contract as contract;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tahoe_mount::storage::faulty::{Fault, Operation};
use tahoe_mount::storage::memory::{MemoryServer, MemoryServerConfig};
use tahoe_mount::storage::{
    LeaseSecrets, MutableSecrets, ReadVector, ShareNumber, StorageError, StorageIndex,
    StorageServer, TestVector, TestWriteVectors, UploadProgress, WriteVector,
};

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                contract::$name(&MemoryServer::new("memory")).await;
            }
        )*
    };
}

contract_tests!(
    version_sanity,
    immutable_upload_and_read,
    immutable_reallocate,
    immutable_conflicting_rewrite,
    immutable_write_limits,
    immutable_abort,
    immutable_wrong_upload_secret,
    leases,
    mutable_read_test_write,
    mutable_wrong_write_enabler,
    mutable_lengths,
    corruption_advisories,
    mixed_kinds_on_one_storage_index,
);

#[tokio::test]
async fn the_whole_suite_twice_on_one_server() {
    let server = MemoryServer::new("memory");
    contract::run_all(&server).await;
    contract::run_all(&server).await;
    // The suite aborts every upload it opens: nothing holds a reservation, so all the free space can be allocated.
    let free = server.version().await.unwrap().available_space;
    let a = server
        .allocate_buckets(IMM, &BTreeSet::from([0]), free, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(a.allocated, BTreeSet::from([0]));
}

const LEASE: LeaseSecrets = LeaseSecrets {
    renew: [1; 32],
    cancel: [2; 32],
};
const SECRETS: MutableSecrets = MutableSecrets {
    write_enabler: [3; 32],
    lease: LEASE,
};

fn write_vectors(share: ShareNumber, data: &[u8]) -> BTreeMap<ShareNumber, TestWriteVectors> {
    BTreeMap::from([(
        share,
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

/// A server holding complete immutable share 0 of `IMM` ("immutable data") and mutable share 0 of `MUT`
/// ("mutable data"), and an upload of share 1 of `IMM` in progress (10 bytes, 5 written, secret `b"up"`).
const IMM: StorageIndex = StorageIndex([0xaa; 16]);
const MUT: StorageIndex = StorageIndex([0xbb; 16]);

async fn populated() -> TestServer {
    let server = TestServer::new(MemoryServer::new("faulty"));
    for (share, size) in [(0, 14), (1, 10)] {
        server
            .allocate_buckets(IMM, &BTreeSet::from([share]), size, LEASE, b"up")
            .await
            .unwrap();
    }
    server
        .write_share_chunk(IMM, 0, b"up", 0, Bytes::from_static(b"immutable data"))
        .await
        .unwrap();
    server
        .write_share_chunk(IMM, 1, b"up", 0, Bytes::from_static(b"01234"))
        .await
        .unwrap();
    let r = server
        .read_test_write(MUT, SECRETS, &write_vectors(0, b"mutable data"), &[])
        .await
        .unwrap();
    assert!(r.success);
    server.reset_calls();
    server
}

/// Calls every operation once, returning each result with errors only (values are dropped).
async fn call_everything(server: &TestServer) -> Vec<(Operation, Result<(), StorageError>)> {
    let shares = BTreeSet::from([5]);
    let tw = write_vectors(1, b"x");
    let reads = [ReadVector { offset: 0, size: 4 }];
    vec![
        (Operation::Version, server.version().await.map(drop)),
        (
            Operation::AllocateBuckets,
            server
                .allocate_buckets(IMM, &shares, 10, LEASE, b"up")
                .await
                .map(drop),
        ),
        (
            Operation::WriteShareChunk,
            server
                .write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"5"))
                .await
                .map(drop),
        ),
        (
            Operation::AbortUpload,
            server.abort_upload(IMM, 5, b"up").await,
        ),
        (
            Operation::ListImmutableShares,
            server.list_immutable_shares(IMM).await.map(drop),
        ),
        (
            Operation::ReadImmutableShare,
            server.read_immutable_share(IMM, 0, 0, 4).await.map(drop),
        ),
        (
            Operation::AdviseCorruptImmutable,
            server.advise_corrupt_immutable(IMM, 0, "bad").await,
        ),
        (
            Operation::AddOrRenewLease,
            server.add_or_renew_lease(IMM, LEASE).await,
        ),
        (
            Operation::ReadTestWrite,
            server
                .read_test_write(MUT, SECRETS, &tw, &reads)
                .await
                .map(drop),
        ),
        (
            Operation::ReadMutableShare,
            server.read_mutable_share(MUT, 0, 0, 4).await.map(drop),
        ),
        (
            Operation::ListMutableShares,
            server.list_mutable_shares(MUT).await.map(drop),
        ),
        (
            Operation::AdviseCorruptMutable,
            server.advise_corrupt_mutable(MUT, 0, "bad").await,
        ),
    ]
}

#[tokio::test]
async fn counters_count_every_call_per_operation() {
    let server = populated().await;
    assert_eq!(server.total_calls(), 0);
    for (op, result) in call_everything(&server).await {
        assert!(result.is_ok(), "{op:?}: {result:?}");
    }
    for op in Operation::ALL {
        assert_eq!(server.calls(op), 1, "{op:?}");
    }
    server.read_immutable_share(IMM, 0, 0, 1).await.unwrap();
    server.read_immutable_share(IMM, 9, 0, 1).await.unwrap_err();
    assert_eq!(
        server.calls(Operation::ReadImmutableShare),
        3,
        "failed calls count too"
    );
    assert_eq!(server.total_calls(), 14);
    server.reset_calls();
    assert_eq!(server.total_calls(), 0);
}

#[tokio::test]
async fn down_fails_every_call_at_once_and_changes_nothing() {
    let server = populated().await;
    let used = server.used_space();
    server.set_fault(Fault::Down);
    assert_eq!(server.fault(), Fault::Down);
    for (op, result) in call_everything(&server).await {
        match result {
            Err(e @ StorageError::Connect { .. }) => {
                assert!(e.is_transient());
                assert!(e.to_string().starts_with("faulty: "), "{e}");
            }
            other => panic!("{op:?}: expected Connect, got {other:?}"),
        }
        assert_eq!(server.calls(op), 1, "{op:?} was sent");
    }
    server.set_fault(Fault::None);
    assert_eq!(server.used_space(), used);
    assert_eq!(
        server.list_mutable_shares(MUT).await.unwrap(),
        BTreeSet::from([0])
    );
    assert!(server.corruption_advisories().is_empty());
}

#[tokio::test]
async fn slow_delays_each_call_and_a_call_abandoned_meanwhile_never_happens() {
    let server = populated().await;
    let delay = Duration::from_millis(150);
    server.set_fault(Fault::Slow(delay));
    let started = Instant::now();
    let data = server.read_immutable_share(IMM, 0, 0, 9).await.unwrap();
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(data, &b"immutable"[..]);

    let write = server.write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"56789"));
    assert!(
        tokio::time::timeout(Duration::from_millis(30), write)
            .await
            .is_err()
    );
    server.set_fault(Fault::None);
    let p = server
        .write_share_chunk(IMM, 1, b"up", 0, Bytes::from_static(b"0"))
        .await
        .unwrap();
    assert_eq!(
        p.required,
        contract::missing(&[(5, 10)]),
        "the abandoned write never landed"
    );
}

#[tokio::test]
async fn hanging_calls_never_complete() {
    let server = populated().await;
    server.set_fault(Fault::Hanging);
    let timeout = Duration::from_millis(20);
    let started = Instant::now();
    let hung = [
        tokio::time::timeout(timeout, server.version())
            .await
            .is_err(),
        tokio::time::timeout(timeout, server.list_immutable_shares(IMM))
            .await
            .is_err(),
        tokio::time::timeout(timeout, server.read_mutable_share(MUT, 0, 0, 1))
            .await
            .is_err(),
        tokio::time::timeout(
            timeout,
            server.write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"5")),
        )
        .await
        .is_err(),
    ];
    assert_eq!(hung, [true; 4]);
    assert!(started.elapsed() >= timeout * 4);
    assert_eq!(server.total_calls(), 4);
    server.set_fault(Fault::None);
    let p = server
        .write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"5"))
        .await
        .unwrap();
    assert_eq!(
        p.required,
        contract::missing(&[(6, 10)]),
        "the hung write never landed"
    );
}

#[tokio::test]
async fn corrupting_flips_what_reads_return_but_not_what_is_stored() {
    let server = populated().await;
    server.set_fault(Fault::Corrupting);
    let inverted = |b: &[u8]| b.iter().map(|x| !x).collect::<Vec<u8>>();

    let imm = server.read_immutable_share(IMM, 0, 0, 100).await.unwrap();
    assert_eq!(imm.len(), 14);
    assert_ne!(imm, &b"immutable data"[..]);
    assert_eq!(imm, inverted(b"immutable data"));
    let mutable = server.read_mutable_share(MUT, 0, 2, 4).await.unwrap();
    assert_eq!(mutable, inverted(b"tabl"));

    // The tests of a read-test-write see the true bytes; its reads come back flipped.
    let mut tw = write_vectors(0, b"M");
    tw.get_mut(&0).unwrap().tests.push(TestVector {
        offset: 0,
        size: 7,
        specimen: Bytes::from_static(b"mutable"),
    });
    let r = server
        .read_test_write(MUT, SECRETS, &tw, &[ReadVector { offset: 0, size: 3 }])
        .await
        .unwrap();
    assert!(r.success);
    assert_eq!(r.data[&0], vec![Bytes::from(inverted(b"mut"))]);

    server.set_fault(Fault::None);
    assert_eq!(
        server.read_immutable_share(IMM, 0, 0, 100).await.unwrap(),
        &b"immutable data"[..]
    );
    assert_eq!(
        server.read_mutable_share(MUT, 0, 0, 100).await.unwrap(),
        &b"Mutable data"[..]
    );
}

#[tokio::test]
async fn full_allocates_nothing_and_refuses_new_bytes() {
    let server = populated().await;
    server.set_full(true);
    let v = server.version().await.unwrap();
    assert_eq!((v.available_space, v.maximum_immutable_share_size), (0, 0));

    let a = server
        .allocate_buckets(IMM, &BTreeSet::from([2, 3]), 10, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(
        a.already_have,
        BTreeSet::from([0]),
        "what it holds is still reported"
    );
    assert!(a.allocated.is_empty());
    assert!(matches!(
        server
            .write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"56789"))
            .await,
        Err(StorageError::Full { .. })
    ));
    // Rewriting bytes already written needs no room.
    let p = server
        .write_share_chunk(IMM, 1, b"up", 0, Bytes::from_static(b"01"))
        .await
        .unwrap();
    assert_eq!(p.required, contract::missing(&[(5, 10)]));
    assert!(matches!(
        server
            .read_test_write(
                MUT,
                SECRETS,
                &write_vectors(0, b"mutable data, longer"),
                &[]
            )
            .await,
        Err(StorageError::Full { .. })
    ));
    let r = server
        .read_test_write(MUT, SECRETS, &write_vectors(0, b"MUTABLE"), &[])
        .await
        .unwrap();
    assert!(r.success, "overwriting in place needs no room");
    assert_eq!(
        server.read_immutable_share(IMM, 0, 0, 9).await.unwrap(),
        &b"immutable"[..],
        "reads still work"
    );

    server.set_full(false);
    let p = server
        .write_share_chunk(IMM, 1, b"up", 5, Bytes::from_static(b"56789"))
        .await
        .unwrap();
    assert!(p.complete);
    let a = server
        .allocate_buckets(IMM, &BTreeSet::from([2]), 10, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(a.allocated, BTreeSet::from([2]));
}

#[tokio::test]
async fn capacity_limits_allocation_and_version_reports_it() {
    let mut config = MemoryServerConfig::new("small");
    config.capacity = 1000;
    let server = MemoryServer::with_config(config);
    assert_eq!(server.version().await.unwrap().available_space, 1000);
    let a = server
        .allocate_buckets(IMM, &BTreeSet::from([0, 1, 2]), 400, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(
        a.allocated,
        BTreeSet::from([0, 1]),
        "the third does not fit"
    );
    server
        .write_share_chunk(IMM, 0, b"up", 0, Bytes::from(vec![7; 400]))
        .await
        .unwrap();
    assert_eq!(server.version().await.unwrap().available_space, 600);
    let b = server
        .allocate_buckets(IMM, &BTreeSet::from([2]), 200, LEASE, b"up")
        .await
        .unwrap();
    assert_eq!(
        b.allocated,
        BTreeSet::from([2]),
        "600 free less 400 reserved"
    );
}

// --- Property test: random operations on MemoryServer and on a reference model agree. ---

/// Storage indexes 0 and 1 hold immutable shares, 2 and 3 mutable ones.
fn si(i: usize) -> StorageIndex {
    StorageIndex([0x10 + i as u8; 16])
}

fn upload_secret(i: usize) -> Vec<u8> {
    vec![i as u8 + 1; 20]
}

fn write_enabler(i: usize) -> MutableSecrets {
    MutableSecrets {
        write_enabler: [i as u8 + 1; 32],
        lease: LEASE,
    }
}

type Tw = BTreeMap<ShareNumber, (Vec<(u64, u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>, Option<u64>)>;

#[derive(Debug, Clone)]
enum Op {
    Version,
    Allocate {
        si: usize,
        shares: BTreeSet<ShareNumber>,
        size: u64,
        secret: usize,
    },
    Write {
        si: usize,
        sh: ShareNumber,
        secret: usize,
        offset: u64,
        len: u64,
        /// Bytes that depend only on their place, so rewrites agree, or these.
        noise: Option<Vec<u8>>,
    },
    /// Placed bytes from `offset` to the end of the upload in progress, whatever its size: turned into a `Write`
    /// against the model before it runs, so uploads complete often.
    WriteToEnd {
        si: usize,
        sh: ShareNumber,
        secret: usize,
        offset: u64,
    },
    Abort {
        si: usize,
        sh: ShareNumber,
        secret: usize,
    },
    ListImmutable {
        si: usize,
    },
    ReadImmutable {
        si: usize,
        sh: ShareNumber,
        offset: u64,
        len: u64,
    },
    AdviseImmutable {
        si: usize,
        sh: ShareNumber,
    },
    Lease {
        si: usize,
    },
    ReadTestWrite {
        si: usize,
        we: usize,
        tw: Tw,
        reads: Vec<(u64, u64)>,
    },
    ReadMutable {
        si: usize,
        sh: ShareNumber,
        offset: u64,
        len: u64,
    },
    ListMutable {
        si: usize,
    },
    AdviseMutable {
        si: usize,
        sh: ShareNumber,
    },
}

fn placed_byte(si: usize, sh: ShareNumber, at: u64) -> u8 {
    (si as u64 * 31 + u64::from(sh) * 7 + at) as u8
}

fn small_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..max)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let imm = 0usize..2;
    // Mostly the right secret, so uploads and mutable writes get somewhere; sometimes the other one.
    let secret = || prop_oneof![9 => Just(0usize), 1 => Just(1usize)];
    let muts = 2usize..4;
    let sh = 0u16..3;
    let imm_sh = 0u16..2;
    let test = (0u64..8, 0u64..6, small_bytes(4));
    let write = (0u64..16, small_bytes(6));
    let new_length = prop_oneof![
        4 => Just(None),
        1 => Just(Some(0)),
        2 => (1u64..20).prop_map(Some),
    ];
    let vectors = (
        prop_oneof![Just(vec![]), prop::collection::vec(test, 0..3)],
        prop::collection::vec(write, 0..3),
        new_length,
    );
    prop_oneof![
        1 => Just(Op::Version),
        5 => (imm.clone(), prop::collection::btree_set(imm_sh.clone(), 0..3), 0u64..16, secret())
            .prop_map(|(si, shares, size, secret)| Op::Allocate { si, shares, size, secret }),
        4 => (imm.clone(), imm_sh.clone(), secret(), 0u64..18, 0u64..9, prop::option::weighted(0.15, small_bytes(9)))
            .prop_map(|(si, sh, secret, offset, len, noise)| Op::Write { si, sh, secret, offset, len, noise }),
        3 => (imm.clone(), imm_sh.clone(), secret(), prop_oneof![Just(0u64), 0u64..12])
            .prop_map(|(si, sh, secret, offset)| Op::WriteToEnd { si, sh, secret, offset }),
        1 => (imm.clone(), sh.clone(), secret()).prop_map(|(si, sh, secret)| Op::Abort { si, sh, secret }),
        1 => imm.clone().prop_map(|si| Op::ListImmutable { si }),
        2 => (imm.clone(), sh.clone(), 0u64..26, 0u64..12)
            .prop_map(|(si, sh, offset, len)| Op::ReadImmutable { si, sh, offset, len }),
        1 => (imm.clone(), sh.clone()).prop_map(|(si, sh)| Op::AdviseImmutable { si, sh }),
        1 => (0usize..4).prop_map(|si| Op::Lease { si }),
        6 => (muts.clone(), secret(), prop::collection::btree_map(sh.clone(), vectors, 0..3),
              prop::collection::vec((0u64..16, 0u64..8), 0..3))
            .prop_map(|(si, we, tw, reads)| Op::ReadTestWrite { si, we, tw, reads }),
        2 => (muts.clone(), sh.clone(), 0u64..20, 0u64..12)
            .prop_map(|(si, sh, offset, len)| Op::ReadMutable { si, sh, offset, len }),
        1 => muts.clone().prop_map(|si| Op::ListMutable { si }),
        1 => (muts, sh).prop_map(|(si, sh)| Op::AdviseMutable { si, sh }),
    ]
}

/// What an operation answered, with errors reduced to their kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Unit,
    Available(u64),
    Allocation(BTreeSet<ShareNumber>, BTreeSet<ShareNumber>),
    Progress(UploadProgress),
    Shares(BTreeSet<ShareNumber>),
    Data(Vec<u8>),
    Rtw(bool, BTreeMap<ShareNumber, Vec<Vec<u8>>>),
    NotFound,
    Unauthorized,
    Conflict,
    Status(u16),
}

fn answer<T>(result: Result<T, StorageError>, ok: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(v) => ok(v),
        Err(StorageError::NotFound { .. }) => Answer::NotFound,
        Err(StorageError::Unauthorized { .. }) => Answer::Unauthorized,
        Err(StorageError::Conflict { .. }) => Answer::Conflict,
        Err(StorageError::Http { status, .. }) => Answer::Status(status),
        Err(e) => panic!("no error of this kind expected here: {e}"),
    }
}

fn gaps(bytes: &[Option<u8>]) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let i = i as u64;
        if b.is_none() {
            match out.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
    }
    out
}

fn clipped(data: &[u8], offset: u64, len: u64) -> Vec<u8> {
    let end = (offset + len).min(data.len() as u64) as usize;
    let start = (offset as usize).min(end);
    data[start..end].to_vec()
}

/// A share being uploaded: its upload secret's index, and each byte once written.
type ModelUpload = (usize, Vec<Option<u8>>);

/// The reference: plain maps, byte by byte, no space limits (the property test's server has plenty).
#[derive(Default)]
struct Model {
    complete: BTreeMap<(usize, ShareNumber), Vec<u8>>,
    uploads: BTreeMap<(usize, ShareNumber), ModelUpload>,
    mutable: BTreeMap<(usize, ShareNumber), (usize, Vec<u8>)>,
}

impl Model {
    fn used(&self) -> u64 {
        let complete: usize = self.complete.values().map(Vec::len).sum();
        let uploads: usize = self
            .uploads
            .values()
            .map(|(_, b)| b.iter().flatten().count())
            .sum();
        let mutable: usize = self.mutable.values().map(|(_, d)| d.len()).sum();
        (complete + uploads + mutable) as u64
    }

    fn concretize(&self, op: &Op) -> Op {
        match *op {
            Op::WriteToEnd {
                si,
                sh,
                secret,
                offset,
            } => {
                let size = self
                    .uploads
                    .get(&(si, sh))
                    .map_or(offset + 4, |(_, b)| b.len() as u64);
                Op::Write {
                    si,
                    sh,
                    secret,
                    offset,
                    len: size.saturating_sub(offset),
                    noise: None,
                }
            }
            ref other => other.clone(),
        }
    }

    fn apply(&mut self, op: &Op, capacity: u64) -> Answer {
        match op {
            Op::Version => Answer::Available(capacity - self.used()),
            Op::Allocate {
                si,
                shares,
                size,
                secret,
            } => {
                let have: BTreeSet<_> = self
                    .complete
                    .keys()
                    .filter(|k| k.0 == *si)
                    .map(|k| k.1)
                    .collect();
                let mut allocated = BTreeSet::new();
                for &sh in shares {
                    if !have.contains(&sh) && !self.uploads.contains_key(&(*si, sh)) {
                        self.uploads
                            .insert((*si, sh), (*secret, vec![None; *size as usize]));
                        allocated.insert(sh);
                    }
                }
                Answer::Allocation(have, allocated)
            }
            Op::Write {
                si,
                sh,
                secret,
                offset,
                ..
            } => {
                let data = write_data(op);
                if data.is_empty() {
                    return Answer::Status(416);
                }
                let Some((owner, bytes)) = self.uploads.get_mut(&(*si, *sh)) else {
                    return Answer::NotFound;
                };
                if owner != secret {
                    return Answer::Unauthorized;
                }
                let at = *offset as usize;
                for (i, &b) in data.iter().enumerate() {
                    if let Some(Some(old)) = bytes.get(at + i)
                        && *old != b
                    {
                        return Answer::Conflict;
                    }
                }
                if at + data.len() > bytes.len() {
                    return Answer::Status(500);
                }
                for (i, &b) in data.iter().enumerate() {
                    bytes[at + i] = Some(b);
                }
                let required = gaps(bytes);
                let complete = required.is_empty();
                if complete {
                    let bytes = bytes.iter().flatten().copied().collect();
                    self.uploads.remove(&(*si, *sh));
                    self.complete.insert((*si, *sh), bytes);
                }
                Answer::Progress(UploadProgress { complete, required })
            }
            Op::WriteToEnd { .. } => self.apply(&self.concretize(op), capacity),
            Op::Abort { si, sh, secret } => match self.uploads.get(&(*si, *sh)) {
                Some((owner, _)) if owner != secret => Answer::Unauthorized,
                Some(_) => {
                    self.uploads.remove(&(*si, *sh));
                    Answer::Unit
                }
                None if self.complete.contains_key(&(*si, *sh)) => Answer::Status(405),
                None => Answer::NotFound,
            },
            Op::ListImmutable { si } => Answer::Shares(
                self.complete
                    .keys()
                    .filter(|k| k.0 == *si)
                    .map(|k| k.1)
                    .collect(),
            ),
            Op::ReadImmutable {
                si,
                sh,
                offset,
                len,
            } => match self.complete.get(&(*si, *sh)) {
                None => Answer::NotFound,
                Some(_) if *len == 0 => Answer::Status(416),
                Some(d) => Answer::Data(clipped(d, *offset, *len)),
            },
            Op::AdviseImmutable { si, sh } => {
                if self.complete.contains_key(&(*si, *sh)) {
                    Answer::Unit
                } else {
                    Answer::NotFound
                }
            }
            Op::Lease { si } => {
                let any = self.complete.keys().any(|k| k.0 == *si)
                    || self.mutable.keys().any(|k| k.0 == *si);
                if any { Answer::Unit } else { Answer::NotFound }
            }
            Op::ReadTestWrite { si, we, tw, reads } => {
                let existing: Vec<ShareNumber> = self
                    .mutable
                    .keys()
                    .filter(|k| k.0 == *si)
                    .map(|k| k.1)
                    .collect();
                if existing.iter().any(|sh| self.mutable[&(*si, *sh)].0 != *we) {
                    return Answer::Unauthorized;
                }
                let success = tw.iter().all(|(sh, (tests, _, _))| {
                    let empty = (0, Vec::new());
                    let data = &self.mutable.get(&(*si, *sh)).unwrap_or(&empty).1;
                    tests
                        .iter()
                        .all(|(offset, size, specimen)| clipped(data, *offset, *size) == *specimen)
                });
                let read_data = existing
                    .iter()
                    .map(|sh| {
                        let data = &self.mutable[&(*si, *sh)].1;
                        (
                            *sh,
                            reads.iter().map(|(o, s)| clipped(data, *o, *s)).collect(),
                        )
                    })
                    .collect();
                if success {
                    for (sh, (_, writes, new_length)) in tw {
                        if *new_length == Some(0) {
                            self.mutable.remove(&(*si, *sh));
                            continue;
                        }
                        let data = &mut self.mutable.entry((*si, *sh)).or_insert((*we, vec![])).1;
                        for (offset, bytes) in writes {
                            let end = *offset as usize + bytes.len();
                            if data.len() < end {
                                data.resize(end, 0);
                            }
                            data[*offset as usize..end].copy_from_slice(bytes);
                        }
                        if let Some(n) = new_length {
                            data.truncate(*n as usize);
                        }
                    }
                }
                Answer::Rtw(success, read_data)
            }
            Op::ReadMutable {
                si,
                sh,
                offset,
                len,
            } => match self.mutable.get(&(*si, *sh)) {
                None => Answer::NotFound,
                Some(_) if *len == 0 => Answer::Status(416),
                Some((_, d)) => Answer::Data(clipped(d, *offset, *len)),
            },
            Op::ListMutable { si } => Answer::Shares(
                self.mutable
                    .keys()
                    .filter(|k| k.0 == *si)
                    .map(|k| k.1)
                    .collect(),
            ),
            Op::AdviseMutable { si, sh } => {
                if self.mutable.contains_key(&(*si, *sh)) {
                    Answer::Unit
                } else {
                    Answer::NotFound
                }
            }
        }
    }
}

fn write_data(op: &Op) -> Vec<u8> {
    match op {
        Op::Write {
            si,
            sh,
            offset,
            len,
            noise,
            ..
        } => match noise {
            Some(bytes) => bytes.clone(),
            None => (*offset..offset + len)
                .map(|at| placed_byte(*si, *sh, at))
                .collect(),
        },
        _ => Vec::new(),
    }
}

async fn run_on_server(server: &TestServer, op: &Op) -> Answer {
    match op {
        Op::Version => answer(server.version().await, |v| {
            Answer::Available(v.available_space)
        }),
        Op::Allocate {
            si: i,
            shares,
            size,
            secret,
        } => answer(
            server
                .allocate_buckets(si(*i), shares, *size, LEASE, &upload_secret(*secret))
                .await,
            |a| Answer::Allocation(a.already_have, a.allocated),
        ),
        Op::Write {
            si: i,
            sh,
            secret,
            offset,
            ..
        } => answer(
            server
                .write_share_chunk(
                    si(*i),
                    *sh,
                    &upload_secret(*secret),
                    *offset,
                    Bytes::from(write_data(op)),
                )
                .await,
            Answer::Progress,
        ),
        Op::WriteToEnd { .. } => unreachable!("the model turns it into a Write first"),
        Op::Abort { si: i, sh, secret } => answer(
            server
                .abort_upload(si(*i), *sh, &upload_secret(*secret))
                .await,
            |()| Answer::Unit,
        ),
        Op::ListImmutable { si: i } => {
            answer(server.list_immutable_shares(si(*i)).await, Answer::Shares)
        }
        Op::ReadImmutable {
            si: i,
            sh,
            offset,
            len,
        } => answer(
            server
                .read_immutable_share(si(*i), *sh, *offset, *len)
                .await,
            |b| Answer::Data(b.to_vec()),
        ),
        Op::AdviseImmutable { si: i, sh } => answer(
            server.advise_corrupt_immutable(si(*i), *sh, "r").await,
            |()| Answer::Unit,
        ),
        Op::Lease { si: i } => answer(server.add_or_renew_lease(si(*i), LEASE).await, |()| {
            Answer::Unit
        }),
        Op::ReadTestWrite {
            si: i,
            we,
            tw,
            reads,
        } => {
            let tw: BTreeMap<ShareNumber, TestWriteVectors> = tw
                .iter()
                .map(|(sh, (tests, writes, new_length))| {
                    let v = TestWriteVectors {
                        tests: tests
                            .iter()
                            .map(|(offset, size, specimen)| TestVector {
                                offset: *offset,
                                size: *size,
                                specimen: Bytes::from(specimen.clone()),
                            })
                            .collect(),
                        writes: writes
                            .iter()
                            .map(|(offset, data)| WriteVector {
                                offset: *offset,
                                data: Bytes::from(data.clone()),
                            })
                            .collect(),
                        new_length: *new_length,
                    };
                    (*sh, v)
                })
                .collect();
            let reads: Vec<ReadVector> = reads
                .iter()
                .map(|&(offset, size)| ReadVector { offset, size })
                .collect();
            answer(
                server
                    .read_test_write(si(*i), write_enabler(*we), &tw, &reads)
                    .await,
                |r| {
                    let data = r
                        .data
                        .into_iter()
                        .map(|(sh, v)| (sh, v.into_iter().map(|b| b.to_vec()).collect()))
                        .collect();
                    Answer::Rtw(r.success, data)
                },
            )
        }
        Op::ReadMutable {
            si: i,
            sh,
            offset,
            len,
        } => answer(
            server.read_mutable_share(si(*i), *sh, *offset, *len).await,
            |b| Answer::Data(b.to_vec()),
        ),
        Op::ListMutable { si: i } => {
            answer(server.list_mutable_shares(si(*i)).await, Answer::Shares)
        }
        Op::AdviseMutable { si: i, sh } => answer(
            server.advise_corrupt_mutable(si(*i), *sh, "r").await,
            |()| Answer::Unit,
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn memory_server_agrees_with_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let server = TestServer::new(MemoryServer::new("prop"));
        let capacity = server.config().capacity;
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let op = &model.concretize(op);
            let expected = model.apply(op, capacity);
            let got = runtime.block_on(run_on_server(&server, op));
            prop_assert_eq!(got, expected, "op {} of {}: {:?}", i, ops.len(), op);
        }
        prop_assert_eq!(server.used_space(), model.used());
        prop_assert_eq!(server.total_calls(), ops.len() as u64);
    }
}
