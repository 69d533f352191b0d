//! Checking a CHK file (`allmydata/immutable/checker.py`): ask every server which shares it holds and, to verify,
//! read every byte of every share and check it against the hash trees the cap authenticates.
//!
//! Counting trusts the servers' lists; verifying trusts nothing: each share's URI extension block must hash to the
//! cap, its block hash tree must chain to the share root there, and every block must match its leaf. A share that
//! fails is reported corrupt (and its server told, as a download would); one that cannot be read is not counted.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;

use super::download::{ShareFault, fetch_share_metadata};
use crate::cap::ChkCap;
use crate::crypto::hashutil;
use crate::grid::census::Census;
use crate::grid::client::Grid;
use crate::storage::{ShareKind, ShareNumber, StorageIndex, advise_corruption};

/// Share data read per request while verifying: large reads keep the servers' per-request cost low, and bound
/// the memory each share's verification holds.
const VERIFY_READ: u64 = 1 << 20;

/// Asks every server which shares of `storage_index` it holds (shares numbered `total` or above are not this
/// file's and are left out). Waits for every server, each for at most `timeout`.
pub async fn census(
    grid: &Grid,
    storage_index: StorageIndex,
    total: u16,
    timeout: Duration,
) -> Census {
    let order = grid.permuted(&storage_index);
    let asks = order.iter().map(|&server| async move {
        let storage = &grid.servers()[server].storage;
        let answer =
            tokio::time::timeout(timeout, storage.list_immutable_shares(storage_index)).await;
        (server, answer)
    });
    let mut census = Census::default();
    for (server, answer) in join_all(asks).await {
        match answer {
            Ok(Ok(shares)) => {
                let shares: BTreeSet<ShareNumber> =
                    shares.into_iter().filter(|&s| s < total).collect();
                if !shares.is_empty() {
                    census.held.insert(server, shares);
                }
            }
            Ok(Err(e)) => {
                census.unreachable.insert(server, e.to_string());
            }
            Err(_) => {
                census.unreachable.insert(
                    server,
                    format!(
                        "{}: no answer within {:.0} s",
                        grid.servers()[server].name(),
                        timeout.as_secs_f64()
                    ),
                );
            }
        }
    }
    census
}

/// Verifies every share in `census`, keeping only the good ones there: corrupt shares move to `census.corrupt`
/// (and their servers get a corruption advisory), unreadable ones to `census.unreachable`.
pub async fn verify(grid: &Grid, cap: &ChkCap, census: &mut Census, timeout: Duration) {
    let storage_index = StorageIndex(cap.storage_index());
    let located: Vec<(usize, ShareNumber)> = census
        .held
        .iter()
        .flat_map(|(&server, shares)| shares.iter().map(move |&share| (server, share)))
        .collect();
    // Four shares at a time: verification is bound by hashing and the servers' disks, not by waiting.
    let mut results = Vec::with_capacity(located.len());
    for batch in located.chunks(4) {
        let checks = batch
            .iter()
            .map(|&(server, share)| verify_share(grid, cap, storage_index, server, share, timeout));
        results.extend(batch.iter().copied().zip(join_all(checks).await));
    }
    for ((server, share), result) in results {
        let Err(fault) = result else { continue };
        if let Some(shares) = census.held.get_mut(&server) {
            shares.remove(&share);
            if shares.is_empty() {
                census.held.remove(&server);
            }
        }
        let name = grid.servers()[server].name();
        match fault {
            ShareFault::Corrupt(why) => {
                advise_corruption(
                    grid.servers()[server].storage.as_ref(),
                    ShareKind::Immutable,
                    storage_index,
                    share,
                    &format!("tahoe-mount verify: {why}"),
                    Duration::from_secs(10),
                )
                .await;
                census.corrupt.push((server, share, why));
            }
            ShareFault::Unavailable(why) => {
                census
                    .unreachable
                    .entry(server)
                    .or_insert(format!("{name}: share {share}: {why}"));
            }
        }
    }
}

/// Reads one whole share and checks it: its metadata against the cap, each block against its hash.
async fn verify_share(
    grid: &Grid,
    cap: &ChkCap,
    storage_index: StorageIndex,
    server: usize,
    share: ShareNumber,
    timeout: Duration,
) -> Result<(), ShareFault> {
    let (active, facts) =
        fetch_share_metadata(grid, storage_index, cap, server, share, None, timeout).await?;
    let geometry = facts
        .ok_or_else(|| ShareFault::Unavailable("no file facts from the share".into()))?
        .geometry;
    let storage = &grid.servers()[server].storage;
    let block_size = geometry.block_size();
    let per_read = (VERIFY_READ / block_size.max(1)).max(1);
    let mut segnum = 0;
    while segnum < geometry.num_segments {
        let last = (segnum + per_read).min(geometry.num_segments);
        let start = active.layout.data + segnum * block_size;
        let sizes: Vec<u64> = (segnum..last)
            .map(|s| geometry.segment_block_size(s))
            .collect();
        let length: u64 = sizes.iter().sum();
        let read = storage.read_immutable_share(storage_index, share, start, length);
        let data = tokio::time::timeout(timeout, read).await.map_err(|_| {
            ShareFault::Unavailable(format!(
                "no share data within {:.0} s",
                timeout.as_secs_f64()
            ))
        })??;
        if (data.len() as u64) < length {
            return Err(ShareFault::Corrupt(format!(
                "share ends inside block {}",
                segnum + (data.len() as u64 / block_size.max(1))
            )));
        }
        let mut at = 0usize;
        for (i, size) in sizes.iter().enumerate() {
            let block = &data[at..at + *size as usize];
            at += *size as usize;
            let index = (segnum as usize) + i;
            if hashutil::block_hash(block) != active.block_hashes[index] {
                return Err(ShareFault::Corrupt(format!(
                    "block {index} does not match its hash"
                )));
            }
        }
        segnum = last;
    }
    Ok(())
}
