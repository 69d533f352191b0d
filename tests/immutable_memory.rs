//! Immutable upload and download on an in-memory grid with faults: random sizes, encodings, segment sizes and
//! misbehaving servers; what comes back must equal what went in, and failed uploads must leave nothing behind.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::memory::TestServer;
use common::{runtime, temp_file};
use proptest::prelude::*;
use tahoe_mount::cap::{ChkCap, FileCap};
use tahoe_mount::config::Secret;
use tahoe_mount::crypto::hashutil;
use tahoe_mount::grid::client::Grid;
use tahoe_mount::immutable::download::{ChkReader, DownloadError, DownloadOptions};
use tahoe_mount::immutable::params::{EncodingParams, Geometry};
use tahoe_mount::immutable::upload::{UploadError, UploadOptions, upload_file};
use tahoe_mount::storage::faulty::{Fault, Operation};
use tahoe_mount::storage::{LeaseSecrets, StorageIndex, StorageServer};

struct MemoryGrid {
    servers: Vec<Arc<TestServer>>,
    grid: Grid,
}

fn memory_grid(count: usize) -> MemoryGrid {
    let servers = common::memory::servers(count);
    let grid = common::memory::grid_of(&servers);
    MemoryGrid { servers, grid }
}

fn options(params: EncodingParams) -> UploadOptions {
    let mut options =
        UploadOptions::new(Secret::new(CONVERGENCE.to_vec()), Secret::new(vec![7; 32]));
    options.params = params;
    options.query_timeout = Duration::from_millis(500);
    options.write_timeout = Duration::from_millis(500);
    options.write_chunk = 1000;
    options
}

fn download_options() -> DownloadOptions {
    DownloadOptions {
        query_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        cache_bytes: 4096,
        batch_bytes: 3000,
    }
}

async fn read_all(grid: &Grid, cap: &FileCap) -> Result<Vec<u8>, DownloadError> {
    match cap {
        FileCap::Literal(data) => Ok(data.clone()),
        FileCap::Chk(chk) => {
            let reader = ChkReader::open(grid.clone(), *chk, download_options()).await?;
            let mut out = Vec::new();
            reader.write_to(&mut out, None).await?;
            Ok(out)
        }
        other => panic!("upload returned {other}"),
    }
}

const CONVERGENCE: &[u8] = b"convergence for tests";

/// The storage index an upload of `data` with `params` uses (the convergent key's hash).
fn storage_index_of(data: &[u8], params: &EncodingParams) -> StorageIndex {
    let geometry = Geometry::for_upload(data.len() as u64, params);
    let key = hashutil::convergence_hash(
        usize::from(params.needed),
        usize::from(params.total),
        geometry.segment_size,
        data,
        CONVERGENCE,
    )
    .unwrap();
    StorageIndex(hashutil::storage_index_hash(&key))
}

/// Whether the servers hold nothing of `storage_index`: no share, no bytes, and no upload in progress (a fresh
/// allocation of every share succeeds; 1.20 leaves out shares with an upload under way).
fn nothing_left(servers: &[Arc<TestServer>], storage_index: StorageIndex, total: u16) -> bool {
    let rt = runtime();
    servers.iter().all(|s| {
        if s.used_space() != 0 {
            return false;
        }
        let (fault, full) = (s.fault(), s.is_full());
        s.set_fault(Fault::None);
        s.set_full(false);
        let all: BTreeSet<u16> = (0..total).collect();
        let lease = LeaseSecrets {
            renew: [1; 32],
            cancel: [2; 32],
        };
        let probe = rt.block_on(s.allocate_buckets(storage_index, &all, 1, lease, &[9; 32]));
        let clean = probe.is_ok_and(|a| a.allocated == all && a.already_have.is_empty());
        for share in all {
            let _ = rt.block_on(s.abort_upload(storage_index, share, &[9; 32]));
        }
        s.set_fault(fault);
        s.set_full(full);
        clean
    })
}

#[derive(Debug, Clone)]
struct Case {
    data: Vec<u8>,
    params: EncodingParams,
    servers: usize,
    /// (server, fault) applied after the upload.
    read_faults: Vec<(usize, u8)>,
    ranges: Vec<(u64, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u16..=5,
        0u16..=6,
        0u16..=6,
        1usize..=12,
        0usize..=20_000,
        1u64..=4000,
    )
        .prop_flat_map(|(needed, extra, happy_extra, servers, size, segment)| {
            let total = needed + extra;
            let happy = (needed + happy_extra).min(total);
            (
                proptest::collection::vec(any::<u8>(), size),
                Just(EncodingParams {
                    needed,
                    happy,
                    total,
                    max_segment_size: segment,
                }),
                Just(servers),
                proptest::collection::vec((0..servers, 0u8..3), 0..4),
                proptest::collection::vec((0..size as u64 + 10, 0u64..6000), 1..5),
            )
                .prop_map(|(data, params, servers, read_faults, ranges)| Case {
                    data,
                    params,
                    servers,
                    read_faults,
                    ranges,
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Upload, fault some servers, read back whole and by ranges: either every read equals the data, or the
    /// faulted servers took away so many shares that fewer than k distinct ones remain (then the error says so).
    #[test]
    fn what_goes_in_comes_out(case in case()) {
        let rt = runtime();
        let g = memory_grid(case.servers);
        let file = temp_file(&case.data);
        let happy_possible = usize::from(case.params.happy) <= case.servers;
        let result = rt.block_on(upload_file(&g.grid, file, &options(case.params)));
        let uploaded = match result {
            Ok(r) => r,
            Err(UploadError::Unhappy(msg)) => {
                prop_assert!(!happy_possible || case.data.len() <= 55, "unexpectedly unhappy: {msg}");
                let si = storage_index_of(&case.data, &case.params);
                prop_assert!(nothing_left(&g.servers, si, case.params.total), "a failed upload left something behind");
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("upload failed: {e}"))),
        };
        if case.data.len() <= 55 {
            prop_assert!(matches!(uploaded.cap, FileCap::Literal(_)));
        } else {
            prop_assert!(uploaded.happiness >= usize::from(case.params.happy));
        }
        // Which shares stay reachable once the faulted servers misbehave.
        let mut faulted = BTreeSet::new();
        for &(server, kind) in &case.read_faults {
            let fault = match kind {
                0 => Fault::Down,
                1 => Fault::Corrupting,
                _ => Fault::Hanging,
            };
            g.servers[server].set_fault(fault);
            faulted.insert(g.servers[server].name().to_owned());
        }
        let good: BTreeSet<u16> = uploaded
            .placement
            .iter()
            .filter(|(_, holders)| holders.iter().any(|h| !faulted.contains(h)))
            .map(|(&share, _)| share)
            .collect();
        let readable = good.len() >= usize::from(case.params.needed) || case.data.len() <= 55;
        let whole = rt.block_on(read_all(&g.grid, &uploaded.cap));
        match whole {
            Ok(bytes) => {
                prop_assert!(bytes == case.data, "whole read differs");
            }
            Err(e) => {
                prop_assert!(!readable, "read failed with {} good shares of {} needed: {e}", good.len(), case.params.needed);
                prop_assert!(matches!(e, DownloadError::NotEnoughShares { .. }), "{e}");
                return Ok(());
            }
        }
        if let FileCap::Chk(chk) = &uploaded.cap {
            let reader = rt.block_on(ChkReader::open(g.grid.clone(), *chk, download_options())).unwrap();
            for &(offset, length) in &case.ranges {
                let got = rt.block_on(reader.read(offset, length)).unwrap();
                let start = (offset as usize).min(case.data.len());
                let end = (offset.saturating_add(length) as usize).min(case.data.len());
                prop_assert!(got[..] == case.data[start..end], "range {offset}+{length} differs");
            }
            // Corrupt shares that were looked at were reported to their servers.
            for (server, fault) in g.servers.iter().map(|s| (s, s.fault())) {
                if fault != Fault::Corrupting {
                    prop_assert!(server.corruption_advisories().is_empty(), "{} got an advisory for good shares", server.name());
                }
            }
        }
    }
}

#[test]
fn same_bytes_and_secret_give_the_same_cap_and_reuse_shares() {
    let rt = runtime();
    let g = memory_grid(10);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let params = EncodingParams {
        max_segment_size: 65536,
        ..Default::default()
    };
    let first = rt
        .block_on(upload_file(&g.grid, temp_file(&data), &options(params)))
        .unwrap();
    let writes: u64 = g
        .servers
        .iter()
        .map(|s| s.calls(Operation::WriteShareChunk))
        .sum();
    let second = rt
        .block_on(upload_file(&g.grid, temp_file(&data), &options(params)))
        .unwrap();
    assert_eq!(first.cap, second.cap);
    let writes_after: u64 = g
        .servers
        .iter()
        .map(|s| s.calls(Operation::WriteShareChunk))
        .sum();
    assert_eq!(
        writes, writes_after,
        "shares already on the grid were written again"
    );
    assert_eq!(second.happiness, 10);
    assert_eq!(rt.block_on(read_all(&g.grid, &second.cap)).unwrap(), data);
}

#[test]
fn unhappy_upload_names_the_servers_and_leaves_nothing() {
    let rt = runtime();
    let g = memory_grid(10);
    for s in &g.servers[..4] {
        s.set_fault(Fault::Down);
    }
    g.servers[4].set_full(true);
    let data = vec![42u8; 200_000];
    let err = rt
        .block_on(upload_file(
            &g.grid,
            temp_file(&data),
            &options(EncodingParams::default()),
        ))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, UploadError::Unhappy(_)), "{message}");
    assert!(message.contains("happiness 7"), "{message}");
    assert!(
        message.contains("mem0") && message.contains("cannot connect"),
        "{message}"
    );
    assert!(message.contains("mem4"), "{message}");
    let si = storage_index_of(&data, &EncodingParams::default());
    assert!(
        nothing_left(&g.servers[4..], si, 10),
        "a refused upload left something behind"
    );
}

#[test]
fn servers_dying_mid_upload_are_survived_while_happy_and_abort_cleanly_when_not() {
    let rt = runtime();
    for (deaths, should_succeed) in [(2usize, true), (5, false)] {
        let g = memory_grid(10);
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let params = EncodingParams {
            max_segment_size: 30_000,
            ..Default::default()
        };
        let mut opts = options(params);
        let victims: Vec<Arc<TestServer>> = g.servers[..deaths].to_vec();
        let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = killed.clone();
        // Kill the victims once a quarter of the file has been sent.
        opts.progress = Some(Arc::new(move |done| {
            if done > 500_000 && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
                for v in &victims {
                    v.set_fault(Fault::Down);
                }
            }
        }));
        let result = rt.block_on(upload_file(&g.grid, temp_file(&data), &opts));
        assert!(killed.load(std::sync::atomic::Ordering::SeqCst));
        match result {
            Ok(uploaded) => {
                assert!(should_succeed, "upload survived {deaths} deaths");
                assert!(uploaded.happiness >= 7);
                assert_eq!(rt.block_on(read_all(&g.grid, &uploaded.cap)).unwrap(), data);
            }
            Err(e) => {
                assert!(!should_succeed, "upload failed with {deaths} deaths: {e}");
                assert!(matches!(e, UploadError::Unhappy(_)), "{e}");
                let si = storage_index_of(&data, &params);
                assert!(
                    nothing_left(&g.servers[deaths..], si, 10),
                    "live servers kept parts of an aborted upload"
                );
            }
        }
    }
}

/// Uploads `data` in segments of 64 KiB (many segments from little data) and returns its cap.
fn upload_in_small_segments(rt: &tokio::runtime::Runtime, grid: &Grid, data: &[u8]) -> ChkCap {
    let params = EncodingParams {
        max_segment_size: 65_536,
        ..Default::default()
    };
    let uploaded = rt
        .block_on(upload_file(grid, temp_file(data), &options(params)))
        .unwrap();
    let FileCap::Chk(chk) = uploaded.cap else {
        panic!("not CHK")
    };
    chk
}

#[test]
fn corrupt_shares_are_bypassed_and_reported() {
    let rt = runtime();
    let g = memory_grid(10);
    let data: Vec<u8> = (0..500_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let chk = upload_in_small_segments(&rt, &g.grid, &data);
    for s in &g.servers[..7] {
        s.set_fault(Fault::Corrupting);
    }
    let reader = rt
        .block_on(ChkReader::open(g.grid.clone(), chk, download_options()))
        .unwrap();
    let mut out = Vec::new();
    rt.block_on(reader.write_to(&mut out, None)).unwrap();
    assert_eq!(out, data);
    let advised: usize = g.servers[..7]
        .iter()
        .map(|s| s.corruption_advisories().len())
        .sum();
    assert!(advised > 0, "no corruption advisory was sent");
    for s in &g.servers[..7] {
        for advisory in s.corruption_advisories() {
            assert_eq!(advisory.storage_index, StorageIndex(chk.storage_index()));
        }
    }
    assert!(!reader.dropped_shares().is_empty());
}

/// A writer that takes `room` bytes, then fails as a full disk does.
struct FullAfter {
    taken: Vec<u8>,
    room: usize,
}

impl std::io::Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.room - self.taken.len());
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn whole_file_writes_from_a_thread_of_their_own_and_a_full_disk_is_an_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g = memory_grid(10);
    let data: Vec<u8> = (0..700_001u32).map(|i| (i * 7 % 251) as u8).collect();
    let chk = upload_in_small_segments(&rt, &g.grid, &data);
    let reader = rt
        .block_on(ChkReader::open(g.grid.clone(), chk, download_options()))
        .unwrap();
    let reported = std::sync::atomic::AtomicU64::new(0);
    let progress = |done: u64| reported.store(done, std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::new();
    reader
        .write_to_blocking(&rt, &mut out, Some(&progress))
        .unwrap();
    assert_eq!(out, data);
    assert_eq!(
        reported.load(std::sync::atomic::Ordering::Relaxed),
        data.len() as u64
    );

    // The disk fills up a third of the way in: the error says so, and what was written is the file's start.
    let mut full = FullAfter {
        taken: Vec::new(),
        room: data.len() / 3,
    };
    let error = reader
        .write_to_blocking(&rt, &mut full, None)
        .expect_err("a full disk must fail the download");
    assert!(matches!(error, DownloadError::Write(_)), "{error}");
    assert_eq!(full.taken, data[..data.len() / 3]);
}

/// A sequential reader stays a batch ahead: right after its first read, the batch after the one being read is
/// being fetched, so that when every server goes away it still reads that far from the cache.
#[test]
fn sequential_reads_keep_the_next_batch_prefetched() {
    let rt = runtime();
    let g = memory_grid(10);
    let segment = 65_536u64;
    let data: Vec<u8> = (0..8 * segment as u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let chk = upload_in_small_segments(&rt, &g.grid, &data);
    // Segments are 65 538 bytes (a multiple of k = 3): batches of two segments, a cache of seven.
    let options = DownloadOptions {
        batch_bytes: 3 * segment,
        cache_bytes: 8 * segment as usize,
        ..download_options()
    };
    let reader = rt
        .block_on(ChkReader::open(g.grid.clone(), chk, options))
        .unwrap();
    // A read inside the first segment: the first batch is segments 0-1, and the reader is not yet at its end.
    let first = rt.block_on(reader.read(0, 32_768)).unwrap();
    assert_eq!(&first[..], &data[..32_768]);
    // Let the prefetch land, then take the grid away.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    for s in &g.servers {
        s.set_fault(Fault::Down);
    }
    let ahead = rt
        .block_on(reader.read(32_768, 4 * segment - 32_768))
        .expect("segments 1-3 were cached (the batch read, and the one after it prefetched)");
    assert_eq!(&ahead[..], &data[32_768..4 * segment as usize]);
}
