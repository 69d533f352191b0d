//! tahoe-mount's immutable get and put while storage servers are down, on a grid of its own (ten real Tahoe-LAFS
//! 1.20 storage nodes, a Tahoe client node encoding 3-of-10, happy 7): a read needs only k servers, and an
//! upload that cannot reach happiness fails cleanly, leaving no share and no half-written upload anywhere.

mod common;

use common::grid::LocalGrid;
use common::tahoe::{
    TahoeClient, TahoeMount, first_difference, pseudo_random, seed, storage_index_of,
};
use std::collections::BTreeSet;

const K: u16 = 3;
const HAPPY: u16 = 7;
const N: u16 = 10;
const MIB: usize = 1 << 20;

/// The whole numbers written in `text`.
fn numbers_in(text: &str) -> BTreeSet<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn get_needs_only_k_servers_and_put_below_happiness_fails_and_leaves_nothing() {
    let seed = seed();
    println!("seed {seed}");
    let grid = LocalGrid::start(usize::from(N));
    let client = TahoeClient::start(&grid, K, HAPPY, N);
    let ours = TahoeMount::new(&grid);

    // Reading with only k servers up: stop the holders of shares 0..6, so the data shares are all gone and
    // only check shares 7, 8 and 9 remain.
    let data = pseudo_random(seed, MIB + 12_345);
    let cap = client.put(&data);
    let holders = grid.share_holders(&storage_index_of(&cap));
    let servers: BTreeSet<usize> = holders.iter().map(|h| h.server).collect();
    assert!(
        holders.len() == usize::from(N) && servers.len() == usize::from(N),
        "Tahoe should put one share on each of the {N} servers: {holders:?}"
    );
    let down: Vec<usize> = holders
        .iter()
        .take(usize::from(N - K))
        .map(|h| h.server)
        .collect();
    grid.stop_servers(&down);
    let got = ours.get(&cap);
    assert!(
        got == data,
        "tahoe-mount get with storage{down:?} down (seed {seed}, {cap}): {}",
        first_difference(&got, &data)
    );
    grid.start_all_servers();

    // Uploading with 6 servers up when happiness is 7.
    let before = grid.all_share_files();
    let down = [0, 1, 2, 3];
    grid.stop_servers(&down);
    let convergence = client.convergence_path();
    let conv = convergence.to_string_lossy().into_owned();
    let args = ["--convergence", conv.as_str(), "-"];
    let new_data = pseudo_random(seed ^ 1, MIB + 777);
    let out = ours.run("put", &args, &new_data);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "put with 6 of 10 servers up and happiness 7 should fail; it printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "a failed put printed on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    println!("the failed put said: {stderr}");
    let numbers = numbers_in(&stderr);
    assert!(
        stderr.to_lowercase().contains("happ") && numbers.contains(&6) && numbers.contains(&7),
        "the error should say happiness 7 was asked and only 6 servers could hold shares: {stderr}"
    );
    let after = grid.all_share_files();
    let left: Vec<_> = after.difference(&before).collect();
    assert!(
        left.is_empty(),
        "the failed put left shares or unfinished uploads on the running servers: {left:?}"
    );

    // The same bytes, secret and parameters with every server up: this is the storage index the failed put
    // would have written to.
    grid.start_all_servers();
    let new_cap = ours.put(&new_data, &args[..2]);
    let si = storage_index_of(&new_cap);
    assert!(
        after.iter().all(|p| !p.to_string_lossy().contains(&si)),
        "files of {si} were on the servers after the failed put"
    );
    assert_eq!(
        grid.share_holders(&si).len(),
        usize::from(N),
        "the put with all servers up should place all {N} shares"
    );
    let got = client.get(&new_cap);
    assert!(
        got == new_data,
        "Tahoe's get of what tahoe-mount put after the outage: {}",
        first_difference(&got, &new_data)
    );
}
