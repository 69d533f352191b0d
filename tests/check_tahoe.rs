//! `tahoe-mount check` and `deep-check` against Tahoe-LAFS 1.20 on one local grid of ten real storage nodes (a
//! Tahoe client node encoding 3-of-10, happy 7): lease renewal as the storage nodes record it (`tahoe debug
//! dump-share --leases-only`), immutable and mutable repair that Tahoe's own `check --verify` then calls healthy,
//! and a tree of over a thousand files made by both clients that loses shares, is judged the same way by both
//! checkers, is repaired by ours with servers stopping and starting under it, and verifies in Tahoe afterwards.
//!
//! The tests stop servers and delete shares on the shared grid, so they run one at a time and leave every server
//! running.

mod common;

use common::link;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::grid::LocalGrid;
use common::tahoe::{
    TahoeClient, TahoeMount, assert_success, pseudo_random, seed, storage_index_of,
};
use futures_util::StreamExt;
use serde_json::Value;
use tahoe_mount::cap::{Cap, FileCap};
use tahoe_mount::config::Secret;
use tahoe_mount::dirnode::{Change, Directory, DirectoryNode};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::immutable::upload::{UploadOptions, upload_file};
use tahoe_mount::mutable::{MutableFile, MutableOptions, MutableParams};

const N: usize = 10;
/// A mutable share file's container header (`storage/mutable.py`: magic, write enabler node id, write enabler,
/// data length, extra lease offset); the share itself follows.
const MUTABLE_CONTAINER_HEADER: u64 = 100;

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

/// Our command line, with a configuration directory (its lease secret) kept for the whole test binary, so each
/// test renews the leases the others took.
fn ours() -> &'static TahoeMount {
    static OURS: OnceLock<TahoeMount> = OnceLock::new();
    OURS.get_or_init(|| TahoeMount::new(grid()))
}

/// This run's seed (printed once): every file's bytes derive from it, so they can be made again to compare.
fn run_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(seed)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Each lease's expiry time (seconds since the epoch, ±1 s) on a share file, as `tahoe debug dump-share
/// --leases-only` prints it ("Lease #0: owner=0, expire in 2678399s (30 days)", relative to when it ran).
fn lease_expiries(share: &Path) -> Vec<f64> {
    let out = client().tahoe(
        &[
            "debug",
            "dump-share",
            "--leases-only",
            &share.to_string_lossy(),
        ],
        b"",
    );
    let at = now();
    assert_success(&out, "tahoe debug dump-share");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|line| {
            let rest = line.split("expire in ").nth(1)?;
            let seconds: f64 = rest.split('s').next()?.trim().parse().ok()?;
            Some(at + seconds)
        })
        .collect()
}

/// Every share file of `cap` with its leases' expiries.
fn leases_of(cap: &str) -> BTreeMap<String, Vec<f64>> {
    grid()
        .share_holders(&storage_index_of(cap))
        .into_iter()
        .map(|held| {
            let expiries = lease_expiries(&held.path);
            (held.path.to_string_lossy().into_owned(), expiries)
        })
        .collect()
}

#[test]
fn renewal_renews_our_leases_and_adds_exactly_one_to_tahoes() {
    let _serial = serial();
    let ours = ours();
    let mine = ours.put(&pseudo_random(run_seed(), 20_000), &[]);
    let before = leases_of(&mine);
    assert_eq!(before.len(), N, "{before:?}");
    assert!(before.values().all(|l| l.len() == 1), "{before:?}");
    std::thread::sleep(Duration::from_secs(3));
    let report = ours.ok("check", &["--add-lease", &mine]);
    assert!(
        report.contains("leases renewed: 10 (missing 0, failed 0)"),
        "{report}"
    );
    let after = leases_of(&mine);
    for (share, expiries) in &after {
        assert_eq!(
            expiries.len(),
            1,
            "{share}: our own lease is renewed, not added to"
        );
        assert!(
            expiries[0] > before[share][0] + 1.5,
            "{share}: expiry {} not later than {}",
            expiries[0],
            before[share][0]
        );
    }

    let theirs = client().put(&pseudo_random(run_seed() + 1, 20_000));
    let tahoe_only = leases_of(&theirs);
    assert!(tahoe_only.values().all(|l| l.len() == 1), "{tahoe_only:?}");
    ours.ok("check", &["--add-lease", &theirs]);
    let added = leases_of(&theirs);
    assert!(
        added.values().all(|l| l.len() == 2),
        "one lease of ours beside Tahoe's on every share: {added:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    ours.ok("check", &["--add-lease", &theirs]);
    let renewed = leases_of(&theirs);
    for (share, expiries) in &renewed {
        assert_eq!(expiries.len(), 2, "{share}: renewed, not added again");
        assert!(
            (expiries[0] - added[share][0]).abs() < 1.5,
            "{share}: Tahoe's lease is left alone"
        );
        assert!(
            expiries[1] > added[share][1] + 1.5,
            "{share}: ours is renewed"
        );
    }
}

#[test]
fn immutable_repair_leaves_a_file_that_tahoe_verifies_healthy() {
    let _serial = serial();
    let ours = ours();
    let data = pseudo_random(run_seed() + 2, 2_500_000);
    let cap = ours.put(&data, &[]);
    let si = storage_index_of(&cap);
    let holders: Vec<usize> = grid()
        .share_holders(&si)
        .iter()
        .map(|h| h.server)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Every share on three servers is lost (deleted on disk) and a fourth server is stopped.
    for held in grid().share_holders(&si) {
        if holders[..3].contains(&held.server) {
            std::fs::remove_file(&held.path).unwrap();
        }
    }
    let stopped = holders[3];
    grid().stop_server(stopped);
    let sick = ours.run("check", &[&cap], b"");
    assert!(
        !sick.status.success(),
        "an unhealthy file is a failed check"
    );
    let text = String::from_utf8_lossy(&sick.stdout);
    assert!(text.contains("Summary: Not Healthy"), "{text}");

    let repaired = ours.ok("check", &["--repair", &cap]);
    assert!(repaired.contains("repair successful"), "{repaired}");
    let running: Vec<_> = grid()
        .share_holders(&si)
        .into_iter()
        .filter(|h| h.server != stopped)
        .collect();
    let shares: BTreeSet<u16> = running.iter().map(|h| h.shnum).collect();
    let servers: BTreeSet<usize> = running.iter().map(|h| h.server).collect();
    assert_eq!(
        shares.len(),
        N,
        "all ten shares among the running servers: {running:?}"
    );
    assert!(servers.len() >= 7, "on at least happy servers: {servers:?}");
    let verdict = client().check_verify(&cap);
    assert_eq!(verdict["results"]["healthy"], true, "{verdict:#}");
    grid().start_server(stopped);
    assert_eq!(ours.get(&cap), data);
}

/// Deletes the share files of `si` on `servers`, and corrupts the signed header of those on `corrupt`.
fn damage_mutable(si: &str, deleted: &[usize], corrupt: &[usize]) {
    use std::io::{Read, Seek, SeekFrom, Write};
    for held in grid().share_holders(si) {
        if deleted.contains(&held.server) {
            std::fs::remove_file(&held.path).unwrap();
        } else if corrupt.contains(&held.server) {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&held.path)
                .unwrap();
            // A byte of the root hash, after the version byte and the seqnum: the signature no longer holds.
            let at = MUTABLE_CONTAINER_HEADER + 12;
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(at)).unwrap();
            file.read_exact(&mut byte).unwrap();
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&[byte[0] ^ 0xff]).unwrap();
        }
    }
}

fn seqnum_of(grid: &Grid, cap: &str) -> u64 {
    let (Cap::File(FileCap::Mutable(m)) | Cap::Directory(FileCap::Mutable(m))) =
        Cap::parse(cap).unwrap()
    else {
        panic!("{cap} is not mutable")
    };
    let file = MutableFile::open(grid.clone(), m, MutableOptions::new(Vec::new()));
    let runtime = common::runtime();
    runtime.block_on(file.servermap()).unwrap().highest_seqnum()
}

#[test]
fn mutable_files_and_directories_are_repaired_with_the_writecap_only() {
    let _serial = serial();
    let ours = ours();
    let library = common::tahoe::library_grid(grid());
    let sdmf = client()
        .tahoe(
            &["put", "--mutable", "--format=SDMF", "-"],
            b"an SDMF file by Tahoe",
        )
        .stdout;
    let mdmf = client()
        .tahoe(
            &["put", "--mutable", "--format=MDMF", "-"],
            &pseudo_random(run_seed() + 3, 300_000),
        )
        .stdout;
    let dir = ours.ok("mkdir", &[]);
    for cap in [
        String::from_utf8(sdmf).unwrap(),
        String::from_utf8(mdmf).unwrap(),
        dir,
    ] {
        let cap = cap.trim().to_owned();
        assert!(cap.starts_with("URI:"), "{cap}");
        let si = storage_index_of(&cap);
        let servers: Vec<usize> = grid().share_holders(&si).iter().map(|h| h.server).collect();
        assert_eq!(servers.len(), N);
        damage_mutable(&si, &servers[..4], &servers[4..7]);
        let seqnum = seqnum_of(&library, &cap);

        let readcap = Cap::parse(&cap).unwrap().readonly().unwrap().to_string();
        let read_only = ours.run("check", &["--repair", &readcap], b"");
        assert!(!read_only.status.success());
        let said = String::from_utf8_lossy(&read_only.stdout);
        assert!(
            said.contains("repair not attempted") && said.contains("writecap"),
            "{said}"
        );

        let repaired = ours.ok("check", &["--repair", &cap]);
        assert!(repaired.contains("repair successful"), "{cap}: {repaired}");
        assert_eq!(seqnum_of(&library, &cap), seqnum + 1, "bumped once");
        let verdict = client().check_verify(&cap);
        assert_eq!(verdict["results"]["healthy"], true, "{cap}: {verdict:#}");
    }
}

/// A file's bytes in the tree: a few hundred, so every file is a CHK file with ten shares.
fn tree_file(i: usize) -> Vec<u8> {
    pseudo_random(run_seed() + 1000 + i as u64, 100 + i % 300)
}

/// Builds the tree: our root with 45 directories of 20 files (ours) and 10 directories of 10 files (Tahoe's).
/// Returns the root's writecap and every file's cap with its bytes.
fn build_tree(library: &Grid) -> (Cap, Vec<(String, Vec<u8>)>) {
    let runtime = common::runtime();
    let options = MutableOptions::new(vec![5; 32]);
    let params = MutableParams::default_for(tahoe_mount::cap::MutableFormat::Sdmf);
    let (root, mut files) = runtime.block_on(async {
        let root =
            DirectoryNode::create(library.clone(), &Directory::new(), params, options.clone())
                .await
                .unwrap();
        let mut upload = UploadOptions::new(Secret::new(vec![1; 32]), Secret::new(vec![5; 32]));
        upload.params.happy = 7;
        let caps: Vec<(usize, Cap)> = futures_util::stream::iter(0..900)
            .map(|i| {
                let upload = &upload;
                async move {
                    let cap = upload_file(library, common::temp_file(&tree_file(i)), upload)
                        .await
                        .unwrap()
                        .cap;
                    (i, Cap::File(cap))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut links = Vec::new();
        for d in 0..45 {
            let dir =
                DirectoryNode::create(library.clone(), &Directory::new(), params, options.clone())
                    .await
                    .unwrap();
            let changes: Vec<Change> = caps
                .iter()
                .filter(|(i, _)| i / 20 == d)
                .map(|(i, cap)| link(&format!("file{i}"), cap))
                .collect();
            dir.modify(&changes).await.unwrap();
            links.push(link(&format!("ours{d}"), dir.cap()));
        }
        root.modify(&links).await.unwrap();
        let files: Vec<(String, Vec<u8>)> = caps
            .iter()
            .map(|(i, cap)| (cap.to_string(), tree_file(*i)))
            .collect();
        (root, files)
    });
    let root_cap = root.cap().to_string();
    for d in 0..10 {
        for f in 0..10 {
            let i = 900 + d * 10 + f;
            let (status, body) = client().web(
                "PUT",
                &format!("uri/{root_cap}/tahoe{d}/file{i}"),
                &tree_file(i),
            );
            assert!(status == 200 || status == 201, "Tahoe PUT: {status}");
            files.push((
                String::from_utf8(body).unwrap().trim().to_owned(),
                tree_file(i),
            ));
        }
    }
    (root.cap().clone(), files)
}

/// Storage indexes our `deep-check --json` calls unhealthy, and how many objects it checked.
fn our_unhealthy(root: &str) -> (BTreeSet<String>, usize) {
    let out = ours().run("deep-check", &["--json", root], b"");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unhealthy = records
        .iter()
        .filter(|r| r["healthy"] == false)
        .map(|r| r["storage-index"].as_str().unwrap().to_owned())
        .collect();
    (unhealthy, records.len())
}

/// Storage indexes Tahoe's `deep-check --raw` calls unhealthy, and its summary line for `flags`.
fn tahoe_unhealthy(root: &str, verify: bool) -> (BTreeSet<String>, usize) {
    let mut args = vec!["deep-check", "--raw"];
    if verify {
        args.push("--verify");
    }
    args.push(root);
    let out = client().tahoe(&args, b"");
    assert_success(&out, "tahoe deep-check");
    let mut unhealthy = BTreeSet::new();
    let mut objects = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        if record["type"] != "file" && record["type"] != "directory" {
            continue;
        }
        objects += 1;
        if record["check-results"]["results"]["healthy"] == false {
            unhealthy.insert(record["storage-index"].as_str().unwrap().to_owned());
        }
    }
    (unhealthy, objects)
}

#[test]
fn a_tree_made_by_both_clients_is_repaired_under_failing_servers_and_tahoe_verifies_it() {
    let _serial = serial();
    let library = common::tahoe::library_grid(grid());
    let started = Instant::now();
    let (root, files) = build_tree(&library);
    let root = root.to_string();
    println!(
        "tree of {} files built in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    let (unhealthy, objects) = our_unhealthy(&root);
    assert!(unhealthy.is_empty(), "{unhealthy:?}");
    assert_eq!(
        objects,
        1000 + 56,
        "1000 files, the root and 55 directories"
    );

    // Every other object loses its shares on two servers.
    let mut all: Vec<String> = files.iter().map(|(cap, _)| storage_index_of(cap)).collect();
    all.sort();
    let damaged: BTreeSet<String> = all.iter().step_by(2).cloned().collect();
    for si in &damaged {
        for held in grid().share_holders(si) {
            if held.server < 2 {
                std::fs::remove_file(&held.path).unwrap();
            }
        }
    }
    let (ours_found, _) = our_unhealthy(&root);
    let (tahoe_found, tahoe_objects) = tahoe_unhealthy(&root, false);
    assert_eq!(tahoe_objects, objects);
    assert_eq!(
        ours_found, damaged,
        "our checker finds exactly what was damaged"
    );
    assert_eq!(tahoe_found, ours_found, "both checkers agree");

    // A deep repair with a server stopped and started under it: it finishes, or a second run completes it.
    let mut repair = Command::new(env!("CARGO_BIN_EXE_tahoe-mount"));
    repair
        .args(["deep-check", "--repair", "--add-lease", "--servers-file"])
        .arg(grid().servers_yaml())
        .arg("--config-dir")
        .arg(ours().config_dir())
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = repair.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    grid().stop_server(5);
    std::thread::sleep(Duration::from_secs(3));
    grid().start_server(5);
    let first = child.wait().unwrap();
    println!("deep repair under a failing server: {first}");
    let out = ours().run("deep-check", &["--repair", "--add-lease", &root], b"");
    assert_success(&out, "the second deep repair");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("post-repair: 1056 healthy, 0 unhealthy"),
        "{report}"
    );

    client().wait_connected();
    let (after, checked) = tahoe_unhealthy(&root, true);
    assert_eq!(checked, objects);
    assert!(after.is_empty(), "Tahoe's deep-check --verify: {after:?}");
    // Nothing was corrupted on the way: a sample of files reads back through Tahoe.
    for (cap, bytes) in files.iter().step_by(97) {
        assert_eq!(&client().get(cap), bytes, "{cap}");
    }
}

#[test]
fn maintain_once_renews_and_repairs_a_tree_without_a_mount() {
    let _serial = serial();
    let ours = ours();
    let dir = ours.ok("mkdir", &[]);
    let dir = dir.trim();
    let mut caps = Vec::new();
    for i in 0..3 {
        let out = ours.run(
            "put",
            &["-", &format!("{dir}/file{i}")],
            &pseudo_random(run_seed() + 50 + i, 5_000),
        );
        assert_success(&out, "put into the tree");
        caps.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    }
    let si = storage_index_of(&caps[1]);
    for held in grid().share_holders(&si) {
        if held.server < 2 {
            std::fs::remove_file(&held.path).unwrap();
        }
    }
    let data = common::tahoe::TempDir::new("maintain-data");
    let data_dir = data.path().to_string_lossy().into_owned();
    let out = ours.ok(
        "maintain",
        &["--once", "--root", dir, "--data-dir", &data_dir],
    );
    // Ten servers for each of the three whole objects, eight for the one that lost two servers' shares.
    assert!(
        out.contains("4 objects checked, 38 leases renewed")
            && out.contains("1 unhealthy, 1 repaired"),
        "{out}"
    );
    assert_eq!(
        grid().share_holders(&si).len(),
        N,
        "the lost shares are back"
    );
    let verdict = client().check_verify(&caps[1]);
    assert_eq!(verdict["results"]["healthy"], true, "{verdict:#}");
    // The pass is recorded; the next one (run again at once) finds everything healthy.
    let state = std::fs::read_to_string(
        std::fs::read_dir(data.path().join("maintain"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("state.json"),
    )
    .unwrap();
    assert!(state.contains("\"objects\": 4"), "{state}");
    let again = ours.ok(
        "maintain",
        &["--once", "--root", dir, "--data-dir", &data_dir],
    );
    assert!(again.contains("0 unhealthy"), "{again}");
}
