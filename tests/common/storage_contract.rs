//! The contract every [`StorageServer`] keeps, written as a Tahoe-LAFS 1.20 storage server answers over HTTP (each
//! expectation was checked on the wire against a local 1.20 node). Each check is a `pub async fn` taking
//! `&dyn StorageServer`; it works on fresh random storage indexes and secrets, aborts the uploads it leaves open and
//! deletes its mutable shares, so the suite can run again and again against a shared real server.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use tahoe_mount::storage::{
    LeaseSecrets, MutableSecrets, ReadVector, ShareNumber, StorageError, StorageIndex,
    StorageServer, TestVector, TestWriteVectors, WriteVector,
};

/// `allmydata/mutable/layout.py` `MAX_MUTABLE_SHARE_SIZE`, which 1.20 announces.
pub const MAX_MUTABLE_SHARE_SIZE: u64 = 69_105 * 1000 * 1000 * 1000 * 1000;

/// Random bytes, different in every call and every process (std's `RandomState` is seeded from the OS).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = RandomState::new().build_hasher();
    seed.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let seed = seed.finish();
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let block = Sha256::new()
            .chain_update(seed.to_le_bytes())
            .chain_update((i as u64).to_le_bytes())
            .finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
}

pub fn random_vec(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(&random_bytes::<32>());
    }
    out.truncate(len);
    out
}

pub fn random_storage_index() -> StorageIndex {
    StorageIndex(random_bytes())
}

pub fn random_lease() -> LeaseSecrets {
    LeaseSecrets {
        renew: random_bytes(),
        cancel: random_bytes(),
    }
}

pub fn random_mutable_secrets() -> MutableSecrets {
    MutableSecrets {
        write_enabler: random_bytes(),
        lease: random_lease(),
    }
}

/// A per-upload secret the way Tahoe makes one (20 random bytes, `storage_client.py:1599`).
pub fn random_upload_secret() -> Vec<u8> {
    random_bytes::<20>().to_vec()
}

/// The still-missing ranges an upload reports, from (start, end) pairs.
pub fn missing(ranges: &[(u64, u64)]) -> Vec<Range<u64>> {
    ranges.iter().map(|&(start, end)| start..end).collect()
}

pub fn shares(list: &[ShareNumber]) -> BTreeSet<ShareNumber> {
    list.iter().copied().collect()
}

pub fn expect_status<T: Debug>(result: Result<T, StorageError>, status: u16, what: &str) {
    match result {
        Err(StorageError::Http { status: s, .. }) if s == status => {}
        other => panic!("{what}: expected HTTP {status}, got {other:?}"),
    }
}

pub fn expect_not_found<T: Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(
        matches!(result, Err(StorageError::NotFound { .. })),
        "{what}: expected NotFound, got {result:?}"
    );
}

pub fn expect_unauthorized<T: Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(
        matches!(result, Err(StorageError::Unauthorized { .. })),
        "{what}: expected Unauthorized, got {result:?}"
    );
}

pub fn expect_conflict<T: Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(
        matches!(result, Err(StorageError::Conflict { .. })),
        "{what}: expected Conflict, got {result:?}"
    );
}

fn test_vector(offset: u64, size: u64, specimen: &[u8]) -> TestVector {
    TestVector {
        offset,
        size,
        specimen: Bytes::copy_from_slice(specimen),
    }
}

fn write_vector(offset: u64, data: &[u8]) -> WriteVector {
    WriteVector {
        offset,
        data: Bytes::copy_from_slice(data),
    }
}

fn reads(list: &[(u64, u64)]) -> Vec<ReadVector> {
    list.iter()
        .map(|&(offset, size)| ReadVector { offset, size })
        .collect()
}

/// The share must not exist yet: a missing share reads as empty, so one byte of it equals "".
fn must_not_exist() -> Vec<TestVector> {
    vec![test_vector(0, 1, b"")]
}

fn one_share(
    share: ShareNumber,
    tests: Vec<TestVector>,
    writes: Vec<WriteVector>,
    new_length: Option<u64>,
) -> BTreeMap<ShareNumber, TestWriteVectors> {
    BTreeMap::from([(
        share,
        TestWriteVectors {
            tests,
            writes,
            new_length,
        },
    )])
}

/// Uploads `data` as share `share` of `si` in one write.
async fn upload_share(
    server: &dyn StorageServer,
    si: StorageIndex,
    share: ShareNumber,
    data: &[u8],
) {
    let secret = random_upload_secret();
    let a = server
        .allocate_buckets(
            si,
            &shares(&[share]),
            data.len() as u64,
            random_lease(),
            &secret,
        )
        .await
        .expect("allocate");
    assert!(
        a.allocated.contains(&share),
        "share {share} allocated: {a:?}"
    );
    let p = server
        .write_share_chunk(si, share, &secret, 0, Bytes::copy_from_slice(data))
        .await
        .expect("write whole share");
    assert!(p.complete && p.required.is_empty(), "{p:?}");
}

async fn create_mutable(
    server: &dyn StorageServer,
    si: StorageIndex,
    secrets: MutableSecrets,
    share: ShareNumber,
    data: &[u8],
) {
    let r = server
        .read_test_write(
            si,
            secrets,
            &one_share(share, must_not_exist(), vec![write_vector(0, data)], None),
            &[],
        )
        .await
        .expect("create mutable share");
    assert!(r.success, "creating share {share}: {r:?}");
}

/// Deletes mutable shares (new length 0), so a real server does not keep them.
async fn delete_mutable(
    server: &dyn StorageServer,
    si: StorageIndex,
    secrets: MutableSecrets,
    list: &[ShareNumber],
) {
    let tw = list
        .iter()
        .map(|&sh| {
            (
                sh,
                TestWriteVectors {
                    new_length: Some(0),
                    ..Default::default()
                },
            )
        })
        .collect();
    let r = server
        .read_test_write(si, secrets, &tw, &[])
        .await
        .expect("delete mutable shares");
    assert!(r.success);
}

/// What the server says about itself (`server.py:257-276`): the largest immutable share is the free space.
pub async fn version_sanity(server: &dyn StorageServer) {
    let v = server.version().await.expect("version");
    assert!(v.available_space > 0, "{v:?}");
    assert_eq!(v.maximum_immutable_share_size, v.available_space, "{v:?}");
    assert_eq!(v.maximum_mutable_share_size, MAX_MUTABLE_SHARE_SIZE);
    assert!(!v.application_version.is_empty());
}

/// Allocate, write in chunks out of order with the progress after each, list, and read by ranges.
pub async fn immutable_upload_and_read(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secret = random_upload_secret();
    let data = random_vec(1000);
    let a = server
        .allocate_buckets(si, &shares(&[0, 1, 2]), 1000, random_lease(), &secret)
        .await
        .expect("allocate");
    assert_eq!(a.already_have, shares(&[]));
    assert_eq!(a.allocated, shares(&[0, 1, 2]));

    let chunks: [(usize, usize, Vec<Range<u64>>); 3] = [
        (600, 1000, missing(&[(0, 600)])),
        (0, 250, missing(&[(250, 600)])),
        (250, 600, missing(&[])),
    ];
    for (i, (start, end, required)) in chunks.into_iter().enumerate() {
        let p = server
            .write_share_chunk(
                si,
                0,
                &secret,
                start as u64,
                Bytes::copy_from_slice(&data[start..end]),
            )
            .await
            .expect("write chunk");
        assert_eq!(p.required, required, "after chunk {i}");
        assert_eq!(p.complete, i == 2, "after chunk {i}");
    }
    // Only complete shares are listed or readable.
    assert_eq!(
        server.list_immutable_shares(si).await.unwrap(),
        shares(&[0])
    );
    expect_not_found(
        server.read_immutable_share(si, 1, 0, 10).await,
        "share in progress",
    );
    expect_not_found(
        server.read_immutable_share(si, 9, 0, 10).await,
        "share never allocated",
    );

    let read = |offset: u64, length: u64| server.read_immutable_share(si, 0, offset, length);
    assert_eq!(read(0, 1000).await.unwrap(), data);
    assert_eq!(read(10, 20).await.unwrap(), data[10..30]);
    assert_eq!(
        read(990, 100).await.unwrap(),
        data[990..],
        "short at the end"
    );
    assert_eq!(read(999, 1).await.unwrap(), data[999..]);
    assert!(
        read(1000, 10).await.unwrap().is_empty(),
        "at the end: empty"
    );
    assert!(
        read(5000, 1).await.unwrap().is_empty(),
        "past the end: empty"
    );
    expect_status(read(0, 0).await, 416, "zero-length read");
    expect_status(read(2000, 0).await, 416, "zero-length read past the end");

    let secret_data = random_vec(1000);
    let p = server
        .write_share_chunk(si, 1, &secret, 0, Bytes::from(secret_data.clone()))
        .await
        .expect("write share 1 whole");
    assert!(p.complete);
    assert_eq!(
        server.list_immutable_shares(si).await.unwrap(),
        shares(&[0, 1])
    );
    assert_eq!(
        server.read_immutable_share(si, 1, 0, 1000).await.unwrap(),
        secret_data
    );
    server
        .abort_upload(si, 2, &secret)
        .await
        .expect("abort share 2");
    assert_eq!(
        server.list_immutable_shares(si).await.unwrap(),
        shares(&[0, 1])
    );
    assert!(
        server
            .list_immutable_shares(random_storage_index())
            .await
            .unwrap()
            .is_empty()
    );
}

/// `already_have` is every complete share; shares in progress are not allocated again, whoever asks
/// (`server.py:326-359`; 1.20 is not idempotent here).
pub async fn immutable_reallocate(server: &dyn StorageServer) {
    let si = random_storage_index();
    let (first, second) = (random_upload_secret(), random_upload_secret());
    let a = server
        .allocate_buckets(si, &shares(&[0, 1]), 100, random_lease(), &first)
        .await
        .unwrap();
    assert_eq!(a.allocated, shares(&[0, 1]));
    server
        .write_share_chunk(si, 0, &first, 0, Bytes::from(random_vec(100)))
        .await
        .unwrap();

    let b = server
        .allocate_buckets(si, &shares(&[0, 1, 2]), 100, random_lease(), &first)
        .await
        .unwrap();
    assert_eq!(b.already_have, shares(&[0]));
    assert_eq!(b.allocated, shares(&[2]), "share 1 is in progress");

    let c = server
        .allocate_buckets(si, &shares(&[1, 3]), 100, random_lease(), &second)
        .await
        .unwrap();
    assert_eq!(c.already_have, shares(&[0]));
    assert_eq!(c.allocated, shares(&[3]));

    let d = server
        .allocate_buckets(si, &shares(&[7]), 10, random_lease(), &second)
        .await
        .unwrap();
    assert_eq!(
        d.already_have,
        shares(&[0]),
        "every complete share, asked for or not"
    );

    for (share, secret) in [(1, &first), (2, &first), (3, &second), (7, &second)] {
        server.abort_upload(si, share, secret).await.unwrap();
    }
}

/// Rewriting written bytes: the same bytes are fine, different ones are a conflict (409) that changes nothing.
pub async fn immutable_conflicting_rewrite(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secret = random_upload_secret();
    let data = random_vec(100);
    server
        .allocate_buckets(si, &shares(&[0]), 100, random_lease(), &secret)
        .await
        .unwrap();
    let write = |offset: usize, bytes: Vec<u8>| {
        server.write_share_chunk(si, 0, &secret, offset as u64, Bytes::from(bytes))
    };
    write(0, data[..60].to_vec()).await.unwrap();
    let p = write(40, data[40..80].to_vec())
        .await
        .expect("identical overlap");
    assert_eq!(p.required, missing(&[(80, 100)]));

    let mut different = data[..10].to_vec();
    different[3] ^= 1;
    expect_conflict(write(0, different).await, "different bytes");
    let mut straddling = data[50..90].to_vec();
    straddling[5] ^= 0x80;
    expect_conflict(
        write(50, straddling).await,
        "different bytes over written and new",
    );

    let p = write(80, data[80..].to_vec()).await.unwrap();
    assert!(p.complete);
    assert_eq!(
        server.read_immutable_share(si, 0, 0, 100).await.unwrap(),
        data
    );
}

/// Writes past the allocated size are refused (DataTooLargeError, a 500 in 1.20) and write nothing; an empty
/// write cannot be expressed (416); unknown and complete shares are not found.
pub async fn immutable_write_limits(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secret = random_upload_secret();
    let data = random_vec(100);
    server
        .allocate_buckets(si, &shares(&[0]), 100, random_lease(), &secret)
        .await
        .unwrap();
    let write = |offset: u64, bytes: &[u8]| {
        server.write_share_chunk(si, 0, &secret, offset, Bytes::copy_from_slice(bytes))
    };
    expect_status(write(90, &data[..20]).await, 500, "write across the end");
    expect_status(write(100, &data[..1]).await, 500, "write after the end");
    expect_status(write(0, b"").await, 416, "empty write");
    let p = write(0, &data[..95]).await.unwrap();
    assert_eq!(
        p.required,
        missing(&[(95, 100)]),
        "the refused writes wrote nothing"
    );
    assert!(write(95, &data[95..]).await.unwrap().complete);
    assert_eq!(
        server.read_immutable_share(si, 0, 0, 200).await.unwrap(),
        data
    );
    expect_not_found(write(0, &data[..1]).await, "write to a complete share");
    expect_not_found(
        server
            .write_share_chunk(si, 5, &secret, 0, Bytes::from_static(b"x"))
            .await,
        "write to a share never allocated",
    );
}

/// Abort frees the share for a new allocation; a complete share cannot be aborted (405).
pub async fn immutable_abort(server: &dyn StorageServer) {
    let si = random_storage_index();
    let (secret, other) = (random_upload_secret(), random_upload_secret());
    server
        .allocate_buckets(si, &shares(&[0, 1]), 100, random_lease(), &secret)
        .await
        .unwrap();
    server
        .write_share_chunk(si, 0, &secret, 0, Bytes::from(random_vec(50)))
        .await
        .unwrap();
    server.abort_upload(si, 0, &secret).await.expect("abort");
    expect_not_found(
        server
            .write_share_chunk(si, 0, &secret, 50, Bytes::from(random_vec(50)))
            .await,
        "write after abort",
    );
    expect_not_found(server.abort_upload(si, 0, &secret).await, "abort twice");
    assert!(server.list_immutable_shares(si).await.unwrap().is_empty());
    let again = server
        .allocate_buckets(si, &shares(&[0]), 100, random_lease(), &other)
        .await
        .unwrap();
    assert_eq!(
        again.allocated,
        shares(&[0]),
        "aborted share can be allocated again"
    );

    assert!(
        server
            .write_share_chunk(si, 1, &secret, 0, Bytes::from(random_vec(100)))
            .await
            .unwrap()
            .complete
    );
    expect_status(
        server.abort_upload(si, 1, &secret).await,
        405,
        "abort a complete share",
    );
    expect_not_found(
        server.abort_upload(si, 9, &secret).await,
        "abort a share never allocated",
    );
    server.abort_upload(si, 0, &other).await.unwrap();
}

/// An upload in progress belongs to its upload secret (`http_server.py:316-332`).
pub async fn immutable_wrong_upload_secret(server: &dyn StorageServer) {
    let si = random_storage_index();
    let (secret, wrong) = (random_upload_secret(), random_upload_secret());
    let data = random_vec(64);
    server
        .allocate_buckets(si, &shares(&[0]), 64, random_lease(), &secret)
        .await
        .unwrap();
    expect_unauthorized(
        server
            .write_share_chunk(si, 0, &wrong, 0, Bytes::from(data.clone()))
            .await,
        "write",
    );
    expect_unauthorized(server.abort_upload(si, 0, &wrong).await, "abort");
    let p = server
        .write_share_chunk(si, 0, &secret, 0, Bytes::from(data[..32].to_vec()))
        .await
        .expect("the right secret still works");
    assert_eq!(
        p.required,
        missing(&[(32, 64)]),
        "the refused write wrote nothing"
    );
    server.abort_upload(si, 0, &secret).await.unwrap();
}

/// Leases are added or renewed on every stored share of the index; no stored share is not found
/// (`http_server.py:897-918`).
pub async fn leases(server: &dyn StorageServer) {
    let si = random_storage_index();
    upload_share(server, si, 0, &random_vec(10)).await;
    let lease = random_lease();
    server.add_or_renew_lease(si, lease).await.expect("add");
    server.add_or_renew_lease(si, lease).await.expect("renew");
    server
        .add_or_renew_lease(si, random_lease())
        .await
        .expect("another lease");
    expect_not_found(
        server
            .add_or_renew_lease(random_storage_index(), lease)
            .await,
        "missing storage index",
    );

    let in_progress = random_storage_index();
    let secret = random_upload_secret();
    server
        .allocate_buckets(in_progress, &shares(&[0]), 10, random_lease(), &secret)
        .await
        .unwrap();
    expect_not_found(
        server.add_or_renew_lease(in_progress, lease).await,
        "only an upload in progress",
    );
    server.abort_upload(in_progress, 0, &secret).await.unwrap();

    let mutable = random_storage_index();
    let secrets = random_mutable_secrets();
    create_mutable(server, mutable, secrets, 0, b"data").await;
    server
        .add_or_renew_lease(mutable, random_lease())
        .await
        .expect("lease on a mutable share");
    delete_mutable(server, mutable, secrets, &[0]).await;
}

/// Create with an empty-specimen test, a failed test (reads returned, nothing written), overwrite, read back, list.
pub async fn mutable_read_test_write(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secrets = random_mutable_secrets();
    let data = random_vec(100);
    let r = server
        .read_test_write(
            si,
            secrets,
            &one_share(0, must_not_exist(), vec![write_vector(0, &data)], None),
            &reads(&[(0, 5)]),
        )
        .await
        .expect("create");
    assert!(r.success);
    assert!(r.data.is_empty(), "no share existed to read: {r:?}");

    let r = server
        .read_test_write(
            si,
            secrets,
            &one_share(0, must_not_exist(), vec![write_vector(0, b"other")], None),
            &reads(&[(0, 5)]),
        )
        .await
        .expect("create again");
    assert!(!r.success, "the share exists now");
    assert_eq!(
        r.data,
        BTreeMap::from([(0, vec![Bytes::copy_from_slice(&data[..5])])])
    );
    assert_eq!(
        server.read_mutable_share(si, 0, 0, 100).await.unwrap(),
        data,
        "nothing written"
    );

    // Overwrite share 0 and create share 1 in one call; the reads see the data before the writes.
    let mut tw = one_share(
        0,
        vec![test_vector(0, 100, &data)],
        vec![write_vector(10, b"hello")],
        None,
    );
    tw.insert(
        1,
        TestWriteVectors {
            tests: must_not_exist(),
            writes: vec![write_vector(0, b"share one")],
            new_length: None,
        },
    );
    let r = server
        .read_test_write(si, secrets, &tw, &reads(&[(0, 12), (98, 10), (0, 0)]))
        .await
        .expect("overwrite");
    assert!(r.success);
    let before = vec![
        Bytes::copy_from_slice(&data[..12]),
        Bytes::copy_from_slice(&data[98..]),
        Bytes::new(),
    ];
    assert_eq!(r.data, BTreeMap::from([(0, before)]));
    let mut expected = data.clone();
    expected[10..15].copy_from_slice(b"hello");
    assert_eq!(
        server.read_mutable_share(si, 0, 0, 100).await.unwrap(),
        expected
    );
    assert_eq!(
        server.read_mutable_share(si, 1, 0, 100).await.unwrap(),
        &b"share one"[..]
    );
    assert_eq!(
        server.list_mutable_shares(si).await.unwrap(),
        shares(&[0, 1])
    );

    // Reads cover every share of the slot, and happen when the tests fail too.
    let r = server
        .read_test_write(
            si,
            secrets,
            &one_share(
                5,
                vec![test_vector(0, 1, b"x")],
                vec![write_vector(0, b"x")],
                None,
            ),
            &reads(&[(0, 3)]),
        )
        .await
        .unwrap();
    assert!(!r.success);
    assert_eq!(
        r.data,
        BTreeMap::from([
            (0, vec![Bytes::copy_from_slice(&expected[..3])]),
            (1, vec![Bytes::from_static(b"sha")]),
        ])
    );
    assert_eq!(
        server.list_mutable_shares(si).await.unwrap(),
        shares(&[0, 1])
    );

    // A test compares offset..offset+size, cut at the end, with the specimen.
    let test = |tests: Vec<TestVector>| {
        let tw = one_share(0, tests, vec![], None);
        async move {
            server
                .read_test_write(si, secrets, &tw, &[])
                .await
                .unwrap()
                .success
        }
    };
    assert!(
        !test(vec![test_vector(0, 10, &expected[..5])]).await,
        "size 10, 5 bytes"
    );
    assert!(
        test(vec![test_vector(95, 10, &expected[95..])]).await,
        "cut at the end"
    );
    assert!(
        test(vec![test_vector(100, 1, b"")]).await,
        "past the end reads empty"
    );
    assert!(
        !test(vec![
            test_vector(0, 5, &expected[..5]),
            // Never the byte that is there (a fixed "?" matched random data one time in 256).
            test_vector(0, 1, &[!expected[0]])
        ])
        .await,
        "every test must pass"
    );

    let read = |sh: ShareNumber, offset: u64, length: u64| {
        server.read_mutable_share(si, sh, offset, length)
    };
    assert_eq!(
        read(0, 95, 10).await.unwrap(),
        expected[95..],
        "short at the end"
    );
    assert!(
        read(0, 100, 5).await.unwrap().is_empty(),
        "at the end: empty"
    );
    expect_status(read(0, 0, 0).await, 416, "zero-length read");
    expect_not_found(read(7, 0, 10).await, "missing share");
    assert!(
        server
            .list_mutable_shares(random_storage_index())
            .await
            .unwrap()
            .is_empty()
    );
    delete_mutable(server, si, secrets, &[0, 1]).await;
}

/// The write enabler is checked against every share before anything else (BadWriteEnablerError, 401).
pub async fn mutable_wrong_write_enabler(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secrets = random_mutable_secrets();
    create_mutable(server, si, secrets, 0, b"original").await;
    let wrong = MutableSecrets {
        write_enabler: random_bytes(),
        lease: secrets.lease,
    };
    expect_unauthorized(
        server
            .read_test_write(
                si,
                wrong,
                &one_share(0, vec![], vec![write_vector(0, b"evil")], None),
                &[],
            )
            .await,
        "write with the wrong write enabler",
    );
    expect_unauthorized(
        server
            .read_test_write(
                si,
                wrong,
                &one_share(3, vec![], vec![write_vector(0, b"new")], None),
                &[],
            )
            .await,
        "creating another share with the wrong write enabler",
    );
    expect_unauthorized(
        server
            .read_test_write(si, wrong, &BTreeMap::new(), &reads(&[(0, 8)]))
            .await,
        "reading through read-test-write with the wrong write enabler",
    );
    assert_eq!(
        server.read_mutable_share(si, 0, 0, 100).await.unwrap(),
        &b"original"[..]
    );
    assert_eq!(server.list_mutable_shares(si).await.unwrap(), shares(&[0]));
    delete_mutable(server, si, secrets, &[0]).await;
}

/// `new_length` only truncates (after the writes) or, at 0, deletes and ignores the writes; a write past the end
/// fills the gap with zeros; a vector with nothing in it creates an empty share (`server.py:578-601`,
/// `mutable.py:171-211`, `:443-450`).
pub async fn mutable_lengths(server: &dyn StorageServer) {
    let si = random_storage_index();
    let secrets = random_mutable_secrets();
    let data = random_vec(100);
    create_mutable(server, si, secrets, 0, &data).await;
    let rtw = |tw: BTreeMap<ShareNumber, TestWriteVectors>| async move {
        let r = server.read_test_write(si, secrets, &tw, &[]).await.unwrap();
        assert!(r.success);
    };
    let read_all = |sh: ShareNumber| server.read_mutable_share(si, sh, 0, 1000);

    rtw(one_share(0, vec![], vec![], Some(200))).await;
    assert_eq!(
        read_all(0).await.unwrap(),
        data,
        "a larger new_length does not extend"
    );
    rtw(one_share(0, vec![], vec![], Some(50))).await;
    assert_eq!(read_all(0).await.unwrap(), data[..50], "truncated");
    rtw(one_share(0, vec![], vec![write_vector(60, b"ab")], None)).await;
    let mut expected = data[..50].to_vec();
    expected.extend_from_slice(&[0; 10]);
    expected.extend_from_slice(b"ab");
    assert_eq!(
        read_all(0).await.unwrap(),
        expected,
        "the gap reads as zeros, not old data"
    );
    rtw(one_share(0, vec![], vec![write_vector(0, b"xyz")], Some(2))).await;
    assert_eq!(
        read_all(0).await.unwrap(),
        &b"xy"[..],
        "truncation comes after the writes"
    );
    rtw(one_share(0, vec![], vec![write_vector(9, b"")], None)).await;
    assert_eq!(
        read_all(0).await.unwrap(),
        &b"xy\0\0\0\0\0\0\0"[..],
        "an empty write far out extends"
    );

    rtw(one_share(3, vec![], vec![], None)).await;
    assert_eq!(
        server.list_mutable_shares(si).await.unwrap(),
        shares(&[0, 3])
    );
    assert!(read_all(3).await.unwrap().is_empty(), "an empty share");

    rtw(one_share(2, vec![], vec![write_vector(0, b"abc")], Some(0))).await;
    rtw(one_share(3, vec![], vec![write_vector(0, b"abc")], Some(0))).await;
    assert_eq!(
        server.list_mutable_shares(si).await.unwrap(),
        shares(&[0]),
        "new_length 0 deletes and creates nothing"
    );
    expect_not_found(read_all(3).await, "deleted share");
    delete_mutable(server, si, secrets, &[0]).await;
    assert!(server.list_mutable_shares(si).await.unwrap().is_empty());
}

/// Advisories about shares the server holds are accepted; others are not found (`http_server.py:920-949`,
/// `:1042-1070`).
pub async fn corruption_advisories(server: &dyn StorageServer) {
    let si = random_storage_index();
    upload_share(server, si, 0, &random_vec(10)).await;
    server
        .advise_corrupt_immutable(si, 0, "block hash mismatch")
        .await
        .expect("advise immutable");
    expect_not_found(
        server.advise_corrupt_immutable(si, 1, "x").await,
        "missing share",
    );
    let secret = random_upload_secret();
    server
        .allocate_buckets(si, &shares(&[2]), 10, random_lease(), &secret)
        .await
        .unwrap();
    expect_not_found(
        server.advise_corrupt_immutable(si, 2, "x").await,
        "share in progress",
    );
    server.abort_upload(si, 2, &secret).await.unwrap();

    let m = random_storage_index();
    let secrets = random_mutable_secrets();
    create_mutable(server, m, secrets, 0, b"data").await;
    server
        .advise_corrupt_mutable(m, 0, "signature invalid")
        .await
        .expect("advise mutable");
    expect_not_found(
        server.advise_corrupt_mutable(m, 1, "x").await,
        "missing mutable share",
    );
    delete_mutable(server, m, secrets, &[0]).await;
}

/// Both kinds share one directory per storage index in 1.20, so each side sees the other's shares and fails to
/// open them as its own kind (a 500).
pub async fn mixed_kinds_on_one_storage_index(server: &dyn StorageServer) {
    let si = random_storage_index();
    upload_share(server, si, 0, b"immutable").await;
    let secrets = random_mutable_secrets();
    expect_status(
        server
            .read_test_write(
                si,
                secrets,
                &one_share(1, vec![], vec![write_vector(0, b"x")], None),
                &[],
            )
            .await,
        500,
        "read-test-write on an index with an immutable share",
    );
    expect_status(
        server.read_mutable_share(si, 0, 0, 9).await,
        500,
        "mutable read of an immutable share",
    );
    assert_eq!(server.list_mutable_shares(si).await.unwrap(), shares(&[0]));
    server
        .advise_corrupt_mutable(si, 0, "x")
        .await
        .expect("advise either kind");

    let m = random_storage_index();
    create_mutable(server, m, secrets, 0, b"mutable").await;
    expect_status(server.list_immutable_shares(m).await, 500, "immutable list");
    expect_status(
        server.read_immutable_share(m, 0, 0, 7).await,
        500,
        "immutable read",
    );
    expect_status(
        server
            .allocate_buckets(
                m,
                &shares(&[1]),
                10,
                random_lease(),
                &random_upload_secret(),
            )
            .await,
        500,
        "allocate",
    );
    expect_status(
        server.advise_corrupt_immutable(m, 0, "x").await,
        500,
        "immutable advisory",
    );
    server
        .add_or_renew_lease(m, random_lease())
        .await
        .expect("lease on either kind");
    delete_mutable(server, m, secrets, &[0]).await;
}

/// Every check above, one after the other.
pub async fn run_all(server: &dyn StorageServer) {
    version_sanity(server).await;
    immutable_upload_and_read(server).await;
    immutable_reallocate(server).await;
    immutable_conflicting_rewrite(server).await;
    immutable_write_limits(server).await;
    immutable_abort(server).await;
    immutable_wrong_upload_secret(server).await;
    leases(server).await;
    mutable_read_test_write(server).await;
    mutable_wrong_write_enabler(server).await;
    mutable_lengths(server).await;
    corruption_advisories(server).await;
    mixed_kinds_on_one_storage_index(server).await;
}
