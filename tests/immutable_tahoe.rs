//! Immutable files (CHK and LIT) between tahoe-mount's command line and Tahoe-LAFS 1.20 itself, on one local grid
//! of ten real storage nodes shared by every test here, with a Tahoe client node encoding 3-of-10, happy 7:
//! files Tahoe writes read back through tahoe-mount, files tahoe-mount writes read back and verified by Tahoe,
//! the same convergence secret giving the same cap, and reads that survive corrupt shares on N−k servers (which
//! the servers then hear about).
//!
//! Sizes: LIT holds up to 55 bytes. 1.20 cuts immutable files into segments of 1 MiB
//! (`DEFAULT_IMMUTABLE_MAX_SEGMENT_SIZE`) rounded up to a multiple of k (upload.py), 1,048,578 bytes for k = 3:
//! so 1 MiB + 1 is still one segment, and 1,048,579 the first size with two (the second one byte). 128 KiB ± 1
//! is where older Tahoe versions (and mutable files) cut segments. Contents are pseudo-random from a seed printed per test;
//! `TAHOE_MOUNT_TEST_SEED=<seed>` replays a run.

mod common;

use common::grid::LocalGrid;
use common::tahoe::{
    TahoeClient, TahoeMount, TempDir, corrupt_share_blocks, first_difference, pseudo_random,
    read_share_file, seed, storage_index_of,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::time::Instant;
use tahoe_mount::crypto::base32;

const K: u16 = 3;
const HAPPY: u16 = 7;
const N: u16 = 10;
const MIB: usize = 1 << 20;
/// Largest file Tahoe stores in the cap itself (`URI:LIT:`).
const LIT_MAX: usize = 55;
/// The segment size of files of 1 MiB and more: 1 MiB rounded up to a multiple of k.
const SEGMENT: usize = MIB.div_ceil(K as usize) * K as usize;

const SIZES: &[usize] = &[
    0,
    1,
    55,
    56,
    57,
    131_071,
    131_072,
    131_073,
    MIB,
    SEGMENT,
    SEGMENT + 1,
    33 * MIB + 7,
];

fn grid() -> &'static LocalGrid {
    LocalGrid::shared(N as usize)
}

fn client() -> &'static TahoeClient {
    static CLIENT: OnceLock<TahoeClient> = OnceLock::new();
    CLIENT.get_or_init(|| TahoeClient::start(grid(), K, HAPPY, N))
}

/// The fixed sizes plus one random size per run (up to 5 MiB, so usually several segments).
fn sizes_with_a_random_one(test: &str, seed: u64) -> Vec<usize> {
    let random = (seed % (5 * MIB as u64 + 1)) as usize;
    println!("{test}: seed {seed}, random size {random}");
    let mut sizes = SIZES.to_vec();
    sizes.push(random);
    sizes
}

/// What a cap for `size` bytes encoded 3-of-10 must look like.
fn assert_cap_shape(cap: &str, size: usize) {
    if size <= LIT_MAX {
        assert!(
            cap.starts_with("URI:LIT:"),
            "{size} bytes should give a LIT cap, got {cap}"
        );
    } else {
        assert!(
            cap.starts_with("URI:CHK:") && cap.ends_with(&format!(":{K}:{N}:{size}")),
            "{size} bytes should give a URI:CHK:…:{K}:{N}:{size} cap, got {cap}"
        );
    }
}

fn server_index_by_id(grid: &LocalGrid) -> BTreeMap<String, usize> {
    grid.servers()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.server_id.clone(), i))
        .collect()
}

/// `check --verify`'s sharemap as (share number, server index) pairs.
fn sharemap(grid: &LocalGrid, check: &Value) -> BTreeSet<(u16, usize)> {
    let ids = server_index_by_id(grid);
    let map = check["results"]["sharemap"]
        .as_object()
        .unwrap_or_else(|| panic!("no sharemap in {check}"));
    map.iter()
        .flat_map(|(shnum, servers)| {
            let shnum: u16 = shnum.parse().expect("share number");
            servers
                .as_array()
                .expect("servers list")
                .iter()
                .map(|id| {
                    let id = id.as_str().expect("server id");
                    (
                        shnum,
                        *ids.get(id)
                            .unwrap_or_else(|| panic!("sharemap names unknown server {id}")),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The shares of `si` found on the servers' disks, as (share number, server index) pairs.
fn shares_on_disk(grid: &LocalGrid, si: &str) -> BTreeSet<(u16, usize)> {
    grid.share_holders(si)
        .into_iter()
        .map(|h| (h.shnum, h.server))
        .collect()
}

fn results(check: &Value) -> &Value {
    &check["results"]
}

fn count(check: &Value, key: &str) -> u64 {
    results(check)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {check}"))
}

#[test]
fn tahoe_put_then_tahoe_mount_get_is_identical() {
    let seed = seed();
    let client = client();
    let ours = TahoeMount::new(grid());
    let out_dir = TempDir::new("get");
    for (i, size) in sizes_with_a_random_one("tahoe put → tahoe-mount get", seed)
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(seed, size);
        let cap = client.put(&data);
        assert_cap_shape(&cap, size);
        let t = Instant::now();
        // To stdout mostly; every third size into a file.
        let got = if i % 3 == 2 {
            ours.get_to_file(&cap, &out_dir.path().join(format!("{size}")))
        } else {
            ours.get(&cap)
        };
        println!("  {size:>9} bytes: tahoe-mount get in {:?}", t.elapsed());
        assert!(
            got == data,
            "tahoe-mount get of a {size}-byte file Tahoe wrote (seed {seed}, {cap}): {}",
            first_difference(&got, &data)
        );
    }
}

#[test]
fn tahoe_mount_put_then_tahoe_get_and_verify() {
    let seed = seed();
    let grid = grid();
    let client = client();
    let ours = TahoeMount::new(grid);
    let files = TempDir::new("put");
    for (i, size) in sizes_with_a_random_one("tahoe-mount put → tahoe get", seed)
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(seed.rotate_left(17), size);
        let t = Instant::now();
        // From stdin mostly; every other size from a file.
        let cap = if i % 2 == 1 {
            let path = files.path().join(format!("{size}"));
            std::fs::write(&path, &data).expect("write input file");
            ours.put_file(&path, &[])
        } else {
            ours.put(&data, &[])
        };
        println!("  {size:>9} bytes: tahoe-mount put in {:?}", t.elapsed());
        assert_cap_shape(&cap, size);
        let got = client.get(&cap);
        assert!(
            got == data,
            "Tahoe's get of a {size}-byte file tahoe-mount wrote (seed {seed}, {cap}): {}",
            first_difference(&got, &data)
        );
        if size <= LIT_MAX {
            continue; // nothing on the servers to check
        }
        let si = storage_index_of(&cap);
        let check = client.check_verify(&cap);
        assert_eq!(check["storage-index"], si.as_str(), "{check}");
        assert!(
            results(&check)["healthy"] == true
                && count(&check, "count-shares-good") == u64::from(N)
                && count(&check, "count-corrupt-shares") == 0
                && count(&check, "count-happiness") >= u64::from(HAPPY),
            "tahoe check --verify of a {size}-byte file tahoe-mount wrote should find all {N} shares good \
             and happiness ≥ {HAPPY}: {check:#}"
        );
        assert_eq!(
            sharemap(grid, &check),
            shares_on_disk(grid, &si),
            "Tahoe's sharemap and the share files on the servers' disks disagree"
        );
        let leftovers: Vec<_> = grid
            .incoming_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&si))
            .collect();
        assert!(
            leftovers.is_empty(),
            "tahoe-mount put left uploads unfinished: {leftovers:?}"
        );
    }
}

#[test]
fn same_convergence_secret_and_parameters_give_the_same_cap() {
    let seed = seed();
    println!("seed {seed}");
    let client = client();
    let ours = TahoeMount::new(grid());
    let convergence = client.convergence_path();
    let conv = convergence.to_string_lossy().into_owned();
    let params = [
        "--shares-needed",
        "3",
        "--shares-happy",
        "7",
        "--shares-total",
        "10",
    ];
    for size in [
        0,
        1,
        LIT_MAX,
        LIT_MAX + 1,
        4096,
        MIB,
        SEGMENT + 1,
        3 * MIB + 5,
    ] {
        let data = pseudo_random(seed ^ 0x5eed, size);
        let mut args = vec!["--convergence", conv.as_str()];
        args.extend(params);
        let mine = ours.put(&data, &args);
        let theirs = client.put(&data);
        assert_eq!(
            mine, theirs,
            "{size} bytes (seed {seed}) with Tahoe's convergence secret and 3/7/10: tahoe-mount and Tahoe \
             give different caps"
        );
    }

    // Without --convergence: a secret of its own, kept in the config dir, the same one every time.
    let data = pseudo_random(seed ^ 0xc0ffee, 100_000);
    let own = ours.put(&data, &[]);
    let secret_file = ours.config_dir().join("convergence");
    let meta = std::fs::metadata(&secret_file).unwrap_or_else(|e| {
        panic!(
            "put without --convergence made no {}: {e}",
            secret_file.display()
        )
    });
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "{} should be readable by its owner only",
        secret_file.display()
    );
    let text = std::fs::read_to_string(&secret_file).expect("read convergence");
    let secret = base32::decode(text.trim())
        .unwrap_or_else(|e| panic!("{}: not base32 ({e}): {text:?}", secret_file.display()));
    assert_eq!(
        secret.len(),
        32,
        "a convergence secret is 32 bytes, as Tahoe's"
    );
    assert_ne!(
        own,
        client.put(&data),
        "a fresh secret must not give Tahoe's cap"
    );
    assert_eq!(
        ours.put(&data, &[]),
        own,
        "the second put with the same config dir gave another cap"
    );
    // LIT caps hold the data itself: no secret changes them.
    let small = pseudo_random(seed, 40);
    assert_eq!(ours.put(&small, &[]), client.put(&small));
}

#[test]
fn tahoe_mount_reads_past_corrupt_shares_on_n_minus_k_servers_and_tells_them() {
    let seed = seed();
    let grid = grid();
    let client = client();
    let size = 2 * SEGMENT + 1; // three segments, the last of one byte
    let data = pseudo_random(seed ^ 0xbad, size);
    let cap = client.put(&data);
    let si = storage_index_of(&cap);
    println!("seed {seed}, {cap}");
    let holders = grid.share_holders(&si);
    let servers: BTreeSet<usize> = holders.iter().map(|h| h.server).collect();
    assert!(
        holders.len() == usize::from(N) && servers.len() == usize::from(N),
        "Tahoe should put one share on each of the {N} servers: {holders:?}"
    );

    // Shares 0..6: every data share (a reader's first choice) and four check shares.
    let corrupted: BTreeSet<(u16, usize)> = holders
        .iter()
        .take(usize::from(N - K))
        .map(|h| {
            let flipped = corrupt_share_blocks(&h.path);
            assert_eq!(flipped.len(), 3, "one byte per block of {:?}", h.path);
            (h.shnum, h.server)
        })
        .collect();
    let advised = |si: &str| {
        grid.corruption_advisories()
            .into_iter()
            .filter(|a| a.storage_index == si)
            .collect::<Vec<_>>()
    };
    assert!(advised(&si).is_empty(), "advisories before any read");

    // A reader that happens to start with the three intact shares meets no corruption (1 time in 120 if it
    // picks at random), so read up to five times, each one correct, until a read has met some.
    let ours = TahoeMount::new(grid);
    for attempt in 1..=5 {
        let got = ours.get(&cap);
        assert!(
            got == data,
            "tahoe-mount get #{attempt} with shares {corrupted:?} (share, server) corrupt (seed {seed}): {}",
            first_difference(&got, &data)
        );
        if !advised(&si).is_empty() {
            println!("  corruption met and advised on get #{attempt}");
            break;
        }
    }

    let advisories = advised(&si);
    for a in &advisories {
        println!(
            "  storage{} was told share {} is corrupt: {}",
            a.server, a.shnum, a.reason
        );
        assert!(
            corrupted.contains(&(a.shnum, a.server)) && a.share_type == "immutable",
            "advisory for an intact share: {a:?}; corrupted: {corrupted:?}"
        );
    }
    assert!(
        !advisories.is_empty(),
        "five tahoe-mount gets read past corrupt shares {corrupted:?} (share, server) but told no server"
    );

    // Tahoe agrees about which shares are bad.
    let check = client.check_verify(&cap);
    let bad: BTreeSet<(u16, usize)> = results(&check)["list-corrupt-shares"]
        .as_array()
        .unwrap_or_else(|| panic!("no list-corrupt-shares in {check}"))
        .iter()
        .map(|e| {
            let id = e[0].as_str().expect("server id");
            assert_eq!(e[1], si.as_str());
            (
                u16::try_from(e[2].as_u64().expect("shnum")).unwrap(),
                server_index_by_id(grid)[id],
            )
        })
        .collect();
    assert!(
        results(&check)["healthy"] == false && bad == corrupted,
        "tahoe check --verify should report exactly the corrupted shares {corrupted:?}: {check:#}"
    );
}

/// The harness itself: share files are where and what the helpers say, and `corrupt_share_blocks` changes bytes
/// that Tahoe's verifier checks. Also that `TahoeClient::put` (the web API) is what the `tahoe put` CLI does.
#[test]
fn share_files_on_disk_and_corruption_are_what_tahoe_sees() {
    let seed = seed();
    let grid = grid();
    let client = client();
    let size = 300_001;
    let data = pseudo_random(seed ^ 0x4a7e, size);
    let cap = client.put(&data);
    let si = storage_index_of(&cap);

    let cli = client.tahoe(&["put", "-"], &data);
    assert!(
        cli.status.success(),
        "tahoe put: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout).trim(),
        cap,
        "tahoe put and PUT /uri disagree"
    );

    let check = client.check_verify(&cap);
    assert_eq!(results(&check)["healthy"], true, "{check:#}");
    assert_eq!(sharemap(grid, &check), shares_on_disk(grid, &si));

    // One segment: the whole file, padded to a multiple of k, so each block is ⌈size/k⌉ bytes.
    let block = size.div_ceil(usize::from(K)) as u64;
    for h in grid.share_holders(&si) {
        let share = read_share_file(&h.path);
        assert_eq!(
            (share.container_version, share.leases, share.layout_version),
            (2, 1, 1),
            "{h:?}: {share:?}"
        );
        assert_eq!(
            (share.block_size, share.data_size, share.blocks()),
            (block, block, 1),
            "{h:?}: {share:?}"
        );
    }
    assert!(
        grid.incoming_files()
            .iter()
            .all(|p| !p.to_string_lossy().contains(&si)),
        "Tahoe's upload left incoming files"
    );

    let victim = &grid.share_holders(&si)[4];
    let flipped = corrupt_share_blocks(&victim.path);
    assert_eq!(flipped.len(), 1);
    let check = client.check_verify(&cap);
    let server_id = &grid.servers()[victim.server].server_id;
    assert!(
        results(&check)["healthy"] == false
            && count(&check, "count-shares-good") == u64::from(N) - 1
            && results(&check)["list-corrupt-shares"]
                == serde_json::json!([[server_id, si, victim.shnum]]),
        "after corrupting share {} on storage{}, tahoe check --verify should name it: {check:#}",
        victim.shnum,
        victim.server
    );
    // Tahoe still reads it (from the other nine).
    assert!(client.get(&cap) == data);
}

/// Random byte ranges (tiny, within a segment, across segment boundaries, past the end) of files Tahoe wrote,
/// read through the library's range reads, equal the same bytes of the original.
#[test]
fn tahoe_put_then_random_ranges_read_identical() {
    use tahoe_mount::cap::{Cap, FileCap};
    use tahoe_mount::grid::client::Grid;
    use tahoe_mount::immutable::download::{ChkReader, DownloadOptions};

    let seed = seed();
    let client = client();
    let yaml = std::fs::read_to_string(grid().servers_yaml()).unwrap();
    let servers = tahoe_mount::grid::parse_servers_yaml(&yaml).unwrap();
    let grid = Grid::connect(servers, &Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let random_size = 2 * SEGMENT + (seed % SEGMENT as u64) as usize;
    println!("random ranges: seed {seed}, file of {random_size} bytes");
    for size in [SEGMENT + 1, random_size] {
        let data = pseudo_random(seed ^ size as u64, size);
        let cap = client.put(&data);
        let Ok(Cap::File(FileCap::Chk(chk))) = Cap::parse(&cap) else {
            panic!("tahoe put gave {cap}, not a CHK cap")
        };
        let reader = rt
            .block_on(ChkReader::open(
                grid.clone(),
                chk,
                DownloadOptions::default(),
            ))
            .unwrap();
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound.max(1)
        };
        for _ in 0..40 {
            let offset = next(size as u64 + 100);
            let length = match next(4) {
                0 => next(10),
                1 => next(4096),
                _ => next(3 * SEGMENT as u64),
            };
            let got = rt.block_on(reader.read(offset, length)).unwrap();
            let start = (offset as usize).min(size);
            let end = (offset.saturating_add(length) as usize).min(size);
            assert!(
                got[..] == data[start..end],
                "range {offset}+{length} of a {size}-byte file (seed {seed}): {}",
                first_difference(&got, &data[start..end])
            );
        }
    }
}
