//! Mutable files (SDMF and MDMF) between tahoe-mount's library and Tahoe-LAFS 1.20 itself, on one local grid of
//! ten real storage nodes with a Tahoe client node encoding 3-of-10: files Tahoe makes are read by us, files we
//! make are read and verified by Tahoe, each side overwrites the other's files, and publishes and reads go on
//! with servers stopped. Tests take one lock, because the outage test stops servers the others use.

mod common;

use common::runtime;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::grid::LocalGrid;
use common::tahoe::{TahoeClient, first_difference, pseudo_random, seed};
use serde_json::Value;
use tahoe_mount::cap::{Cap, FileCap, MutableCap, MutableFormat};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::mutable::{MutableError, MutableFile, MutableOptions, MutableParams};

const N: usize = 10;

fn grid() -> &'static LocalGrid {
    LocalGrid::shared(N)
}

fn client() -> &'static TahoeClient {
    static CLIENT: OnceLock<TahoeClient> = OnceLock::new();
    CLIENT.get_or_init(|| TahoeClient::start(grid(), 3, 7, N as u16))
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn library_grid() -> Grid {
    common::tahoe::library_grid(grid())
}

fn options() -> MutableOptions {
    let mut options = MutableOptions::new(vec![9; 32]);
    options.timeout = Duration::from_secs(10);
    options
}

fn mutable_cap(text: &str) -> MutableCap {
    match Cap::parse(text).unwrap() {
        Cap::File(FileCap::Mutable(cap)) => cap,
        other => panic!("{text} is not a mutable file cap: {other:?}"),
    }
}

/// A new mutable file of ours with Tahoe's default encoding.
fn create(
    rt: &tokio::runtime::Runtime,
    grid: &Grid,
    data: &[u8],
    format: MutableFormat,
) -> MutableFile {
    let params = MutableParams::default_for(format);
    rt.block_on(MutableFile::create(grid.clone(), data, params, options()))
        .unwrap()
}

/// `tahoe put --mutable [--format=MDMF]`: `PUT /uri?format=…`.
fn tahoe_put_mutable(format: MutableFormat, data: &[u8]) -> String {
    let name = match format {
        MutableFormat::Sdmf => "SDMF",
        MutableFormat::Mdmf => "MDMF",
    };
    let (status, body) = client().web("PUT", &format!("uri?format={name}"), data);
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    assert!(
        status == 200 || status == 201,
        "PUT mutable: HTTP {status}: {text}"
    );
    text
}

/// `tahoe put - CAP`: replaces a mutable file's contents.
fn tahoe_overwrite(cap: &str, data: &[u8]) {
    let (status, body) = client().web("PUT", &format!("uri/{cap}"), data);
    assert!(
        status == 200 || status == 201,
        "PUT {cap}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
}

fn assert_healthy(cap: &str, shares: u64) {
    let report: Value = client().check_verify(cap);
    let results = &report["results"];
    assert_eq!(results["healthy"], Value::Bool(true), "{report:#}");
    assert_eq!(
        results["count-shares-good"].as_u64(),
        Some(shares),
        "{report:#}"
    );
}

const SIZES: &[usize] = &[0, 1, 1000, 131_071, 131_073, (1 << 20) + 5];

#[test]
fn tahoe_mutable_files_read_by_tahoe_mount() {
    let _serial = serial();
    let seed = seed();
    let rt = runtime();
    let grid = library_grid();
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        for &size in SIZES {
            let data = pseudo_random(seed ^ size as u64, size);
            let cap = tahoe_put_mutable(format, &data);
            let file = MutableFile::open(grid.clone(), mutable_cap(&cap), options());
            assert_eq!(file.cap().format, format, "{cap}");
            let version = rt.block_on(file.read()).unwrap();
            assert!(
                version.contents == data,
                "{format:?} {size}: {}",
                first_difference(&version.contents, &data)
            );
            assert_eq!(version.seqnum, 1);
            // And through the read-only cap, as Tahoe writes it.
            let readonly = MutableFile::open(grid.clone(), file.cap().readonly(), options());
            assert!(rt.block_on(readonly.read()).unwrap().contents == data);
        }
    }
}

#[test]
fn tahoe_mount_mutable_files_read_and_verified_by_tahoe() {
    let _serial = serial();
    let seed = seed();
    let rt = runtime();
    let grid = library_grid();
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        for &size in SIZES {
            let data = pseudo_random(seed ^ (size as u64 + 1), size);
            let file = create(&rt, &grid, &data, format);
            let cap = file.cap().to_string();
            let expected_prefix = match format {
                MutableFormat::Sdmf => "URI:SSK:",
                MutableFormat::Mdmf => "URI:MDMF:",
            };
            assert!(cap.starts_with(expected_prefix), "{cap}");
            let got = client().get(&cap);
            assert!(
                got == data,
                "{format:?} {size}: {}",
                first_difference(&got, &data)
            );
            assert_healthy(&cap, N as u64);
            let readonly = file.cap().readonly().to_string();
            assert!(client().get(&readonly) == data);
        }
    }
}

#[test]
fn each_side_overwrites_the_others_files() {
    let _serial = serial();
    let seed = seed();
    let rt = runtime();
    let grid = library_grid();
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        // Tahoe's file, changed by us, read by Tahoe; then changed by Tahoe and read by us.
        let cap = tahoe_put_mutable(format, b"made by tahoe");
        let ours = MutableFile::open(grid.clone(), mutable_cap(&cap), options());
        let new = pseudo_random(seed, 200_000);
        assert_eq!(rt.block_on(ours.overwrite(&new, None)).unwrap(), 2);
        assert!(client().get(&cap) == new);
        assert_healthy(&cap, N as u64);
        tahoe_overwrite(&cap, b"changed by tahoe");
        let version = rt.block_on(ours.read()).unwrap();
        assert_eq!(version.contents, b"changed by tahoe");
        assert_eq!(version.seqnum, 3);

        // Our file, changed by Tahoe (which must find the private key in our shares), read by us.
        let file = create(&rt, &grid, b"made by tahoe-mount", format);
        let cap = file.cap().to_string();
        tahoe_overwrite(&cap, &new);
        assert!(rt.block_on(file.read()).unwrap().contents == new);
        let seqnum = rt
            .block_on(file.modify(
                |old| {
                    let mut more = old.to_vec();
                    more.extend_from_slice(b" and appended");
                    Ok::<_, MutableError>(Some(more))
                },
                None,
            ))
            .unwrap();
        assert_eq!(seqnum, 3);
        let mut expected = new.clone();
        expected.extend_from_slice(b" and appended");
        assert!(client().get(&cap) == expected);
    }
}

#[test]
fn publish_with_three_servers_down_and_read_from_any_three() {
    let _serial = serial();
    let rt = runtime();
    let grid = library_grid();
    let g = self::grid();
    let file = create(&rt, &grid, b"version one", MutableFormat::Sdmf);
    let cap = file.cap().to_string();
    // N − happy = 3 servers down: the publish lands on the other seven.
    g.stop_servers(&[0, 1, 2]);
    let result = rt.block_on(file.overwrite(b"version two", None));
    g.start_all_servers();
    client().wait_connected();
    result.unwrap();
    assert_eq!(client().get(&cap), b"version two");
    // Any three servers holding distinct shares of the new version are enough to read; stop
    // the other seven. Servers 0–2 were down during the publish, so they still hold shares
    // of version one, which must not be counted.
    let holders = g.share_holders(&common::tahoe::storage_index_of(&cap));
    let mut keep = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for held in holders.iter().filter(|held| held.server > 2) {
        if seen.len() < 3 && !keep.contains(&held.server) && seen.insert(held.shnum) {
            keep.push(held.server);
        }
    }
    assert_eq!(keep.len(), 3, "{holders:?}");
    let stop: Vec<usize> = (0..N).filter(|i| !keep.contains(i)).collect();
    g.stop_servers(&stop);
    let read = rt.block_on(file.read());
    g.start_all_servers();
    client().wait_connected();
    assert_eq!(read.unwrap().contents, b"version two");
}
