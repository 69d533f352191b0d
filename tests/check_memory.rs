//! Checking, verifying, lease renewal and repair on an in-memory grid: shares deleted, corrupted or stranded on
//! servers that are down; leases that expire on the servers' simulated clock unless renewed; trees with shared
//! objects and damaged directories. Real-grid interop is in `check_tahoe.rs`.

mod common;

use common::link;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::memory::TestServer;
use common::memory::{grid_of, servers};
use common::{runtime, temp_file};
use tahoe_mount::cap::{Cap, FileCap, MutableFormat};
use tahoe_mount::check::deep::{Walk, deep_check};
use tahoe_mount::check::{CheckOptions, check};
use tahoe_mount::config::Secret;
use tahoe_mount::dirnode::{Directory, DirectoryNode};
use tahoe_mount::grid::client::Grid;
use tahoe_mount::immutable::download::{ChkReader, DownloadOptions};
use tahoe_mount::immutable::params::EncodingParams;
use tahoe_mount::immutable::upload::{UploadOptions, upload_file};
use tahoe_mount::mutable::{MutableFile, MutableOptions, MutableParams};
use tahoe_mount::storage::StorageIndex;
use tahoe_mount::storage::faulty::Fault;
use tahoe_mount::storage::memory::LEASE_SECONDS;

const LEASE_SECRET: [u8; 32] = [7; 32];
const DAY: u64 = 24 * 3600;

fn check_options() -> CheckOptions {
    let mut options = CheckOptions::new(Secret::new(LEASE_SECRET.to_vec()));
    options.timeout = Duration::from_millis(500);
    options
}

fn upload_options() -> UploadOptions {
    let mut options = UploadOptions::new(
        Secret::new(b"convergence".to_vec()),
        Secret::new(LEASE_SECRET.to_vec()),
    );
    options.params = EncodingParams::default();
    options.query_timeout = Duration::from_millis(500);
    options.write_timeout = Duration::from_millis(500);
    options
}

fn mutable_options() -> MutableOptions {
    let mut options = MutableOptions::new(LEASE_SECRET.to_vec());
    options.timeout = Duration::from_millis(500);
    options
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    common::tahoe::pseudo_random(seed, len)
}

async fn put(grid: &Grid, bytes: &[u8]) -> Cap {
    let uploaded = upload_file(grid, temp_file(bytes), &upload_options())
        .await
        .expect("upload");
    Cap::File(uploaded.cap)
}

async fn read_chk(grid: &Grid, cap: &Cap) -> Vec<u8> {
    let Cap::File(FileCap::Chk(chk)) = cap else {
        panic!("not a CHK cap")
    };
    let reader = ChkReader::open(grid.clone(), *chk, DownloadOptions::default())
        .await
        .expect("open");
    reader.read(0, chk.size).await.expect("read").to_vec()
}

fn storage_index(cap: &Cap) -> StorageIndex {
    StorageIndex(cap.storage_index().expect("a storage index"))
}

/// Servers holding shares of `si`, and all the shares they hold.
fn holders(servers: &[Arc<TestServer>], si: StorageIndex) -> (usize, BTreeSet<u16>) {
    let mut count = 0;
    let mut shares = BTreeSet::new();
    for server in servers {
        let held = server.stored_shares(si);
        if !held.is_empty() {
            count += 1;
            shares.extend(held);
        }
    }
    (count, shares)
}

#[test]
fn immutable_repair_rebuilds_lost_shares_on_the_running_servers() {
    runtime().block_on(async {
        let servers = servers(12);
        let grid = grid_of(&servers);
        let contents = data(700_000, 1);
        let cap = put(&grid, &contents).await;
        let si = storage_index(&cap);

        let healthy = check(&grid, &cap, &check_options()).await.unwrap();
        assert!(healthy.pre.healthy, "{:?}", healthy.pre);
        assert_eq!(healthy.pre.shares.len(), 10);

        // Every share on three servers is lost, and a fourth holder is down.
        let holding: Vec<usize> = (0..servers.len())
            .filter(|&i| !servers[i].stored_shares(si).is_empty())
            .collect();
        for &i in &holding[..3] {
            for share in servers[i].stored_shares(si) {
                assert!(servers[i].delete_share(si, share));
            }
        }
        servers[holding[3]].set_fault(Fault::Down);

        let sick = check(&grid, &cap, &check_options()).await.unwrap();
        assert!(!sick.pre.healthy);
        assert!(sick.pre.recoverable);
        assert!(sick.pre.shares.len() < 10, "{:?}", sick.pre.shares);
        assert!(sick.repair.is_none(), "no repair unless asked");

        let mut repair = check_options();
        repair.repair = true;
        let repaired = check(&grid, &cap, &repair).await.unwrap();
        assert!(!repaired.pre.healthy);
        let outcome = repaired.repair.as_ref().expect("a repair");
        assert!(outcome.successful, "{}", outcome.message);
        let post = repaired.post.as_ref().unwrap();
        assert!(post.healthy, "{post:?}");
        assert_eq!(post.shares.len(), 10);
        assert!(post.happiness >= 7);

        // Among the running servers alone: all ten shares on at least happy servers, and the same bytes.
        let running: Vec<Arc<TestServer>> = servers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != holding[3])
            .map(|(_, s)| s.clone())
            .collect();
        let (count, shares) = holders(&running, si);
        assert_eq!(shares, (0..10).collect());
        assert!(count >= 7, "{count} servers");
        assert_eq!(read_chk(&grid_of(&running), &cap).await, contents);
    });
}

#[test]
fn verify_finds_corruption_that_counting_misses() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let cap = put(&grid, &data(200_000, 2)).await;
        let si = storage_index(&cap);
        let victim = servers
            .iter()
            .find(|s| !s.stored_shares(si).is_empty())
            .unwrap();
        let share = *victim.stored_shares(si).iter().next().unwrap();
        // A byte of the first block (the data follows the 0x24-byte header).
        assert!(victim.corrupt_share(si, share, 0x24 + 100));

        let counted = check(&grid, &cap, &check_options()).await.unwrap();
        assert!(counted.pre.healthy, "counting trusts the server's list");

        let mut verify = check_options();
        verify.verify = true;
        let verified = check(&grid, &cap, &verify).await.unwrap();
        assert!(!verified.pre.healthy);
        assert_eq!(verified.pre.corrupt.len(), 1, "{:?}", verified.pre.corrupt);
        assert_eq!(verified.pre.corrupt[0].1, share);
        assert!(verified.pre.corrupt[0].2.contains("block 0"));
        assert_eq!(verified.pre.shares.len(), 9);
        assert_eq!(
            victim.corruption_advisories().len(),
            1,
            "the server is told"
        );
    });
}

#[test]
fn renewal_renews_our_lease_and_adds_one_for_another_client() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let cap = put(&grid, &data(100_000, 3)).await;
        let si = storage_index(&cap);
        let (server, share) = servers
            .iter()
            .find_map(|s| s.stored_shares(si).first().map(|&sh| (s.clone(), sh)))
            .unwrap();
        assert_eq!(
            server.lease_expiries(si, share).unwrap(),
            vec![LEASE_SECONDS]
        );

        for s in &servers {
            s.advance_clock(10 * DAY);
        }
        let mut renew = check_options();
        renew.add_lease = true;
        let renewed = check(&grid, &cap, &renew).await.unwrap();
        let holding = holders(&servers, si).0;
        assert_eq!(renewed.leases.renewed, holding);
        assert_eq!(renewed.leases.missing, 0);
        assert_eq!(
            server.lease_expiries(si, share).unwrap(),
            vec![10 * DAY + LEASE_SECONDS],
            "the upload's own lease is renewed, not a second one added"
        );

        let mut other = renew.clone();
        other.lease_secret = Secret::new(vec![9; 32]);
        check(&grid, &cap, &other).await.unwrap();
        assert_eq!(server.lease_expiries(si, share).unwrap().len(), 2);
    });
}

#[test]
fn expiry_keeps_what_is_renewed_and_loses_the_rest() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let kept = put(&grid, &data(80_000, 4)).await;
        let forgotten = put(&grid, &data(80_000, 5)).await;
        let directory = DirectoryNode::create(
            grid.clone(),
            &Directory::new(),
            MutableParams::default_for(MutableFormat::Sdmf),
            mutable_options(),
        )
        .await
        .unwrap();
        let advance = |days: u64| {
            for s in &servers {
                s.advance_clock(days * DAY);
            }
        };
        advance(20);
        let mut renew = check_options();
        renew.add_lease = true;
        for cap in [&kept, directory.cap()] {
            let result = check(&grid, cap, &renew).await.unwrap();
            assert!(result.leases.renewed >= 7, "{:?}", result.leases);
        }
        advance(15);
        let deleted: usize = servers.iter().map(|s| s.expire_leases()).sum();
        assert_eq!(deleted, 10, "the forgotten file's ten shares expire");
        assert!(holders(&servers, storage_index(&forgotten)).1.is_empty());
        assert_eq!(holders(&servers, storage_index(&kept)).1.len(), 10);
        assert!(
            check(&grid, &kept, &check_options())
                .await
                .unwrap()
                .pre
                .healthy
        );
        assert!(directory.list().await.is_ok());
        let gone = check(&grid, &forgotten, &check_options()).await.unwrap();
        assert!(!gone.pre.recoverable);
    });
}

#[test]
fn mutable_repair_restores_shares_with_the_writecap_only() {
    runtime().block_on(async {
        for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
            let servers = servers(10);
            let grid = grid_of(&servers);
            let contents = data(30_000, 6);
            let file = MutableFile::create(
                grid.clone(),
                &contents,
                MutableParams::default_for(format),
                mutable_options(),
            )
            .await
            .unwrap();
            let si = StorageIndex(file.cap().storage_index());
            // N − k = 7 shares lost: deleted on four servers, corrupted on three.
            let holding: Vec<&Arc<TestServer>> = servers
                .iter()
                .filter(|s| !s.stored_shares(si).is_empty())
                .collect();
            for server in &holding[..4] {
                for share in server.stored_shares(si) {
                    server.delete_share(si, share);
                }
            }
            for server in &holding[4..7] {
                for share in server.stored_shares(si) {
                    // Inside the signed header: the share no longer verifies.
                    server.corrupt_share(si, share, 20);
                }
            }
            let writecap = Cap::File(FileCap::Mutable(*file.cap()));
            let readcap = Cap::File(FileCap::Mutable(file.cap().readonly()));
            let mut repair = check_options();
            repair.repair = true;

            let read_only = check(&grid, &readcap, &repair).await.unwrap();
            assert!(!read_only.pre.healthy);
            assert!(!read_only.repair_attempted());
            let why = &read_only.repair.as_ref().unwrap().message;
            assert!(
                why.contains("read-only") && why.contains("writecap"),
                "{why}"
            );

            let repaired = check(&grid, &writecap, &repair).await.unwrap();
            assert!(!repaired.pre.healthy, "{format:?}");
            let outcome = repaired.repair.as_ref().unwrap();
            assert!(outcome.successful, "{format:?}: {}", outcome.message);
            assert!(repaired.post.as_ref().unwrap().healthy);
            let version = file.read().await.unwrap();
            assert_eq!(version.contents, contents);
            assert_eq!(version.seqnum, 2, "bumped once, as Tahoe's repairer does");
            assert!(
                check(&grid, &writecap, &check_options())
                    .await
                    .unwrap()
                    .pre
                    .healthy
            );
        }
    });
}

#[test]
fn mutable_repair_refuses_to_overwrite_a_newer_unreadable_version() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let file = MutableFile::create(
            grid.clone(),
            b"version one",
            MutableParams::default_for(MutableFormat::Sdmf),
            mutable_options(),
        )
        .await
        .unwrap();
        let si = StorageIndex(file.cap().storage_index());
        // Four servers miss the second version and keep the first.
        for server in &servers[..4] {
            server.set_fault(Fault::Down);
        }
        let mut params = MutableParams::default_for(MutableFormat::Sdmf);
        params.happy = 5;
        file.overwrite(b"version two", Some(params)).await.unwrap();
        for server in &servers[..4] {
            server.set_fault(Fault::None);
        }
        // The second version loses all but two shares: unreadable, yet newer.
        let mut left = 2;
        for server in &servers[4..] {
            for share in server.stored_shares(si) {
                if left > 0 {
                    left -= 1;
                } else {
                    server.delete_share(si, share);
                }
            }
        }
        let mut repair = check_options();
        repair.repair = true;
        let cap = Cap::File(FileCap::Mutable(*file.cap()));
        let result = check(&grid, &cap, &repair).await.unwrap();
        assert!(!result.pre.healthy);
        assert!(
            result
                .pre
                .problems
                .iter()
                .any(|p| p.contains("unrecoverable")),
            "{:?}",
            result.pre.problems
        );
        let outcome = result.repair.as_ref().unwrap();
        assert!(!outcome.successful);
        assert!(outcome.message.contains("newer"), "{}", outcome.message);
        // Nothing was published over it.
        let map = file.servermap().await.unwrap();
        assert_eq!(map.highest_seqnum(), 2);
    });
}

#[test]
fn deep_check_visits_each_object_once_and_repairs_the_tree() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let params = MutableParams::default_for(MutableFormat::Sdmf);
        let root =
            DirectoryNode::create(grid.clone(), &Directory::new(), params, mutable_options())
                .await
                .unwrap();
        let sub = DirectoryNode::create(grid.clone(), &Directory::new(), params, mutable_options())
            .await
            .unwrap();
        let shared = put(&grid, &data(5_000, 7)).await;
        let mut sub_changes = Vec::new();
        for i in 0..5 {
            let cap = put(&grid, &data(3_000 + i, 10 + i as u64)).await;
            sub_changes.push(link(&format!("file{i}"), &cap));
        }
        sub_changes.push(link("shared", &shared));
        sub_changes.push(link("tiny", &Cap::File(FileCap::Literal(b"lit".to_vec()))));
        sub.modify(&sub_changes).await.unwrap();
        root.modify(&[
            link("sub", sub.cap()),
            link("again", sub.cap()),
            link("shared", &shared),
        ])
        .await
        .unwrap();

        // root, sub, shared, five files, tiny: nine objects however many links.
        let mut seen = Vec::new();
        let summary = deep_check(
            &grid,
            root.cap().clone(),
            &check_options(),
            &Walk::with_concurrency(4),
            |path, _| seen.push(path.join("/")),
        )
        .await;
        assert_eq!(summary.objects, 9, "{seen:?}");
        assert_eq!(summary.healthy, 9);
        assert!(summary.all_healthy());
        assert_eq!(seen[0], "", "the root comes first");

        // Two servers lose everything.
        for server in &servers[..2] {
            server.set_fault(Fault::Down);
        }
        let summary = deep_check(
            &grid,
            root.cap().clone(),
            &check_options(),
            &Walk::with_concurrency(4),
            |_, _| {},
        )
        .await;
        assert_eq!(
            summary.unhealthy, 8,
            "every object but the literal one: {summary:?}"
        );
        assert!(!summary.all_healthy());

        let mut repair = check_options();
        repair.repair = true;
        repair.add_lease = true;
        let summary = deep_check(
            &grid,
            root.cap().clone(),
            &repair,
            &Walk::with_concurrency(4),
            |_, _| {},
        )
        .await;
        assert_eq!(summary.repairs_attempted, 8, "{summary:?}");
        assert_eq!(summary.repairs_successful, 8, "{summary:?}");
        assert!(summary.all_healthy(), "{summary:?}");
        assert!(summary.leases.renewed > 0);
        let summary = deep_check(
            &grid,
            root.cap().clone(),
            &check_options(),
            &Walk::with_concurrency(4),
            |_, _| {},
        )
        .await;
        assert_eq!(summary.healthy, 9, "{summary:?}");
    });
}
