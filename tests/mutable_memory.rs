//! Mutable files on an in-memory grid: SDMF and MDMF round trips at random sizes and encodings, k = 1 with a
//! share on every server and N growing with the grid, reads with servers down or corrupting, publishes with too
//! few servers, and concurrent writers that must not lose each other's changes.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use tahoe_mount::cap::MutableFormat;
use tahoe_mount::mutable::{MutableError, MutableFile, MutableOptions, MutableParams};
use tahoe_mount::storage::faulty::{Fault, Operation};
use tahoe_mount::storage::memory::MemoryServer;
use tahoe_mount::storage::{StorageIndex, StorageServer};

mod common;

use common::memory::{grid_of, servers};
use common::runtime;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    common::tahoe::pseudo_random(seed, len)
}

fn options() -> MutableOptions {
    let mut options = MutableOptions::new(vec![7; 32]);
    options.timeout = Duration::from_millis(500);
    options
}

async fn shares_on(server: &MemoryServer, file: &MutableFile) -> BTreeSet<u16> {
    let si = StorageIndex(file.cap().storage_index());
    server.list_mutable_shares(si).await.unwrap_or_default()
}

#[test]
fn sdmf_and_mdmf_round_trip_and_overwrite() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
            for size in [0usize, 1, 55, 1000, 128 * 1024, 300_001] {
                let contents = pseudo_random(size, size as u64 + 1);
                let params = MutableParams::default_for(format);
                let file = MutableFile::create(grid.clone(), &contents, params, options())
                    .await
                    .unwrap();
                let version = file.read().await.unwrap();
                assert_eq!(version.contents, contents, "{format:?} {size}");
                assert_eq!(version.seqnum, 1);
                let replacement = pseudo_random(size / 2 + 3, 99);
                let seqnum = file.overwrite(&replacement, None).await.unwrap();
                assert_eq!(seqnum, 2);
                // A reader through the read-only cap sees the new version.
                let reader = MutableFile::open(grid.clone(), file.cap().readonly(), options());
                assert_eq!(reader.read().await.unwrap().contents, replacement);
                assert!(matches!(
                    reader.overwrite(b"no", None).await,
                    Err(MutableError::ReadOnly(_))
                ));
            }
        }
    });
}

#[test]
fn one_share_per_server_and_n_grows_with_the_grid() {
    runtime().block_on(async {
        let all = servers(5);
        let first_three = grid_of(&all[..3]);
        let params = MutableParams::one_share_per_server(MutableFormat::Sdmf, 3);
        let file = MutableFile::create(first_three, b"directory v1", params, options())
            .await
            .unwrap();
        for server in &all[..3] {
            assert_eq!(shares_on(server, &file).await.len(), 1);
        }
        // The grid grows to five; the next publish gives every server a share.
        let grown = MutableFile::open(grid_of(&all), *file.cap(), options());
        let params = MutableParams::one_share_per_server(MutableFormat::Sdmf, 5);
        grown
            .overwrite(b"directory v2", Some(params))
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        for server in &all {
            let shares = shares_on(server, &grown).await;
            assert_eq!(shares.len(), 1, "{}", server.name());
            seen.extend(shares);
        }
        assert_eq!(seen, (0..5).collect());
        // Any single server can now serve the whole file.
        for lone in 0..5 {
            for (i, server) in all.iter().enumerate() {
                server.set_fault(if i == lone { Fault::None } else { Fault::Down });
            }
            let version = grown.read().await.unwrap();
            assert_eq!(version.contents, b"directory v2");
            assert_eq!((version.params.needed, version.params.total), (1, 5));
        }
    });
}

#[test]
fn doubled_up_shares_spread_out_when_servers_join() {
    runtime().block_on(async {
        let all = servers(10);
        let params = MutableParams {
            format: MutableFormat::Mdmf,
            needed: 3,
            happy: 3,
            total: 10,
        };
        let file = MutableFile::create(grid_of(&all[..3]), b"on three", params, options())
            .await
            .unwrap();
        let grown = MutableFile::open(grid_of(&all), *file.cap(), options());
        grown
            .overwrite(
                b"on ten",
                Some(MutableParams {
                    happy: 10,
                    ..params
                }),
            )
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        for server in &all {
            let shares = shares_on(server, &grown).await;
            assert_eq!(shares.len(), 1, "{} holds {shares:?}", server.name());
            seen.extend(shares);
        }
        assert_eq!(seen, (0..10).collect());
        assert_eq!(grown.read().await.unwrap().contents, b"on ten");
    });
}

#[test]
fn reads_survive_n_minus_k_servers_down_or_corrupting() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
            let contents = pseudo_random(400_000, 5);
            let file = MutableFile::create(
                grid.clone(),
                &contents,
                MutableParams::default_for(format),
                options(),
            )
            .await
            .unwrap();
            for fault in [Fault::Down, Fault::Corrupting, Fault::Hanging] {
                for (i, server) in servers.iter().enumerate() {
                    server.set_fault(if i < 7 { fault } else { Fault::None });
                }
                assert_eq!(file.read().await.unwrap().contents, contents, "{fault:?}");
                for server in &servers {
                    server.set_fault(Fault::None);
                }
            }
            // One more server down and the file is unrecoverable, with a clear error.
            for server in &servers[..8] {
                server.set_fault(Fault::Down);
            }
            let error = file.read().await.unwrap_err();
            assert!(matches!(error, MutableError::Unrecoverable(_)), "{error}");
            for server in &servers {
                server.set_fault(Fault::None);
            }
        }
    });
}

#[test]
fn a_corrupt_stored_share_is_advised_and_bypassed() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let contents = pseudo_random(50_000, 17);
        let file = MutableFile::create(
            grid.clone(),
            &contents,
            MutableParams::default_for(MutableFormat::Mdmf),
            options(),
        )
        .await
        .unwrap();
        // Corrupting servers invert what they return, so the header fails first; that makes the share bad in
        // the servermap, and the read goes on with the others.
        for server in &servers[..3] {
            server.set_fault(Fault::Corrupting);
        }
        assert_eq!(file.read().await.unwrap().contents, contents);
    });
}

#[test]
fn a_version_rewritten_during_a_read_is_not_taken_for_corruption() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
            let file = MutableFile::create(
                grid.clone(),
                // Big enough that the servermap's first read of each share holds only its head.
                &pseudo_random(1_000_000, 1),
                MutableParams::default_for(format),
                options(),
            )
            .await
            .unwrap();
            // The reader's servermap is of version 1; a writer then replaces every share with version 2, of
            // the same size, so the old offsets still read bytes, just the wrong ones.
            let stale = file.servermap().await.unwrap();
            let newer = pseudo_random(1_000_000, 2);
            file.overwrite(&newer, None).await.unwrap();
            for server in &servers {
                server.reset_calls();
            }
            let Err(MutableError::Unrecoverable(why)) = file.read_from(&stale).await else {
                panic!("{format:?}: version 1 cannot be read any more");
            };
            assert!(why.contains("rewritten"), "{format:?}: {why}");
            for server in &servers {
                assert_eq!(
                    server.calls(Operation::AdviseCorruptMutable),
                    0,
                    "{format:?}"
                );
            }
            // A plain read starts from a fresh servermap.
            assert_eq!(file.read().await.unwrap().contents, newer);
        }
    });
}

#[test]
fn publish_needs_happy_servers() {
    runtime().block_on(async {
        let servers = servers(10);
        let grid = grid_of(&servers);
        let file = MutableFile::create(
            grid.clone(),
            b"v1",
            MutableParams::default_for(MutableFormat::Sdmf),
            options(),
        )
        .await
        .unwrap();
        // N − happy = 3 servers down: the publish still lands on 7.
        for server in &servers[..3] {
            server.set_fault(Fault::Down);
        }
        file.overwrite(b"v2", None).await.unwrap();
        assert_eq!(file.read().await.unwrap().contents, b"v2");
        // One more down: 6 servers cannot be happy, and the error says so and names the dead servers.
        servers[3].set_fault(Fault::Down);
        let error = file.overwrite(b"v3", None).await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, MutableError::NotEnoughServers(_)), "{text}");
        assert!(text.contains("6 servers, 7 needed"), "{text}");
        assert!(text.contains("mem"), "{text}");
    });
}

#[test]
fn concurrent_writers_lose_no_change() {
    runtime().block_on(async {
        let servers = servers(7);
        let grid = grid_of(&servers);
        let params = MutableParams {
            format: MutableFormat::Sdmf,
            needed: 2,
            happy: 4,
            total: 7,
        };
        let file = MutableFile::create(grid.clone(), b"", params, options())
            .await
            .unwrap();
        let writer = |name: &'static str| {
            let handle = MutableFile::open(grid.clone(), *file.cap(), options());
            async move {
                for i in 0..15 {
                    handle
                        .modify(
                            |old| {
                                let mut new = old.to_vec();
                                new.extend_from_slice(format!("{name}{i}\n").as_bytes());
                                Ok::<_, MutableError>(Some(new))
                            },
                            None,
                        )
                        .await
                        .unwrap();
                }
            }
        };
        tokio::join!(writer("a"), writer("b"), writer("c"));
        let final_contents = String::from_utf8(file.read().await.unwrap().contents).unwrap();
        let lines: BTreeSet<&str> = final_contents.lines().collect();
        for name in ["a", "b", "c"] {
            for i in 0..15 {
                assert!(
                    lines.contains(format!("{name}{i}").as_str()),
                    "{name}{i} lost"
                );
            }
        }
        assert_eq!(final_contents.lines().count(), 45);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn what_goes_in_comes_out(
        size in 0usize..400_000,
        mdmf in any::<bool>(),
        needed in 1u8..5,
        extra in 0u8..6,
        down in 0usize..4,
        seed in any::<u64>(),
    ) {
        let total = needed + extra;
        let happy = needed.max(total.saturating_sub(down as u8)).min(total);
        let format = if mdmf { MutableFormat::Mdmf } else { MutableFormat::Sdmf };
        runtime().block_on(async {
            let servers = servers(8);
            let grid = grid_of(&servers);
            let contents = pseudo_random(size, seed);
            let params = MutableParams { format, needed, happy, total };
            let file = MutableFile::create(grid.clone(), &contents, params, options()).await.unwrap();
            // Take down up to N − k servers' worth; reads must still work whenever k shares survive.
            for server in servers.iter().take(down) {
                server.set_fault(Fault::Down);
            }
            let surviving: BTreeSet<u16> = {
                let mut s = BTreeSet::new();
                for server in servers.iter().skip(down) {
                    s.extend(shares_on(server, &file).await);
                }
                s
            };
            let result = file.read().await;
            if surviving.len() >= usize::from(needed) {
                prop_assert_eq!(result.unwrap().contents, contents);
            } else {
                prop_assert!(result.is_err());
            }
            Ok(())
        })?;
    }
}

/// One silent server of five (a stopped process: every call pending) once held every read and write for the whole
/// timeout (30 s): the servermap waited for every server. Reads and writes now go on soon after the others answered;
/// a check still waits for it, and says it did not answer.
#[test]
fn one_silent_server_does_not_hold_up_reads_and_writes() {
    runtime().block_on(async {
        let servers = servers(5);
        let grid = grid_of(&servers);
        let mut patient = options();
        patient.timeout = Duration::from_secs(30);
        patient.happy = 3;
        let params = common::sdmf_params(2, 3, 5);
        let contents = pseudo_random(5000, 5);
        let file = MutableFile::create(grid.clone(), &contents, params, patient.clone())
            .await
            .unwrap();
        servers[1].set_fault(Fault::Hanging);
        let started = std::time::Instant::now();
        assert_eq!(file.read().await.unwrap().contents, contents);
        let read_took = started.elapsed();
        let started = std::time::Instant::now();
        let seqnum = file.overwrite(b"changed", None).await.unwrap();
        let write_took = started.elapsed();
        assert!(
            read_took < Duration::from_secs(2),
            "read took {read_took:?}"
        );
        // A write waits longer for a silent server (3 s at least), which may hold a newer version.
        assert!(
            write_took < Duration::from_secs(8),
            "write took {write_took:?}"
        );
        assert_eq!(seqnum, 2);
        let map = file.servermap().await.unwrap();
        assert!(
            map.unreachable.contains_key(&1),
            "the silent server is reported: {:?}",
            map.unreachable
        );
        servers[1].set_fault(Fault::None);
        assert_eq!(file.read().await.unwrap().contents, b"changed");
        // With a short timeout, a check waits for every server and reports the silent one.
        servers[1].set_fault(Fault::Hanging);
        let full = MutableFile::open(grid.clone(), *file.cap(), options())
            .full_servermap()
            .await
            .unwrap();
        assert_eq!(full.unreachable.len(), 1, "{:?}", full.unreachable);
    });
}

/// A server that missed an update offers the old version when the servers holding the new one are out of reach.
/// Without a memory of the newest version seen, a change would be written over the old version and drop the
/// newer one's contents; now the read warns and the change is refused.
#[test]
fn a_rolled_back_file_is_read_with_a_warning_and_never_written_over() {
    runtime().block_on(async {
        let servers = servers(2);
        let grid = grid_of(&servers);
        let mut remembering = options();
        remembering.floors = Some(std::sync::Arc::new(
            tahoe_mount::mutable::SeqnumFloors::new(16),
        ));
        remembering.happy = 1;
        let params = common::sdmf_params(1, 1, 2);
        let file = MutableFile::create(grid.clone(), b"version 1", params, remembering.clone())
            .await
            .unwrap();
        // Version 2 reaches only the first server.
        servers[1].set_fault(Fault::Down);
        assert_eq!(file.overwrite(b"version 2", None).await.unwrap(), 2);
        assert_eq!(file.read().await.unwrap().contents, b"version 2");
        // Now only the server that missed it answers.
        servers[1].set_fault(Fault::None);
        servers[0].set_fault(Fault::Down);
        let offered = file.read().await.unwrap();
        assert_eq!(
            (offered.seqnum, &offered.contents[..]),
            (1, &b"version 1"[..])
        );
        let refused = file.overwrite(b"version 3, built on version 1", None).await;
        assert!(
            matches!(
                refused,
                Err(MutableError::Rollback {
                    offered: 1,
                    seen: 2
                })
            ),
            "{refused:?}"
        );
        // Once the newer version is back in reach, changes go on from it.
        servers[0].set_fault(Fault::None);
        assert_eq!(file.overwrite(b"version 3", None).await.unwrap(), 3);
        assert_eq!(file.read().await.unwrap().contents, b"version 3");
    });
}
