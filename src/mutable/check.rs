//! Checking a mutable file (`allmydata/mutable/checker.py`): the servermap, judged by Tahoe's rules (exactly one
//! recoverable version, no unrecoverable ones, all N shares of the best), then by happiness; with `verify`, every
//! byte of every share of the best version is read and checked against its hash trees.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;

use super::layout::SignedPrefix;
use super::retrieve::verify_share;
use super::servermap::{self, ServerMap};
use super::{FileKeys, MutableError};
use crate::cap::MutableFormat;
use crate::grid::census::{Census, renew_leases};
use crate::grid::client::Grid;
use crate::storage::{ShareKind, advise_corruption};

/// What a check of a mutable file found.
#[derive(Debug)]
pub struct MutableCheck {
    /// The best recoverable version's good shares, corrupt shares of any version, and unreachable servers.
    pub census: Census,
    /// The best recoverable version: seqnum, format, k and N.
    pub best: Option<BestVersion>,
    /// Shares of other versions than the best (Tahoe's "wrong shares").
    pub wrong_shares: usize,
    /// Tahoe's reasons the file is unhealthy, in its words.
    pub problems: Vec<String>,
    /// A newer version than the best recoverable one exists but cannot be read: a repair would overwrite it.
    pub newer_unrecoverable: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BestVersion {
    pub seqnum: u64,
    pub format: MutableFormat,
    pub needed: u8,
    pub total: u8,
}

impl MutableCheck {
    pub fn recoverable(&self) -> bool {
        self.best.is_some()
    }
}

/// Checks the file `keys` names: maps its shares, optionally renews our lease on every server holding any share
/// of it (any version), and optionally verifies every share of the best version.
pub async fn check(
    grid: &Grid,
    keys: &FileKeys,
    verify: bool,
    lease_secret: Option<&[u8]>,
    timeout: Duration,
) -> Result<MutableCheck, MutableError> {
    let map = servermap::update(grid, keys, timeout, servermap::Mode::Check).await?;
    let mut census = Census {
        unreachable: map.unreachable.clone(),
        corrupt: map
            .bad
            .iter()
            .map(|bad| (bad.server, bad.share, bad.reason.clone()))
            .collect(),
        ..Default::default()
    };
    let versions = map.versions();
    let recoverable = |prefix: &SignedPrefix, records: &[&servermap::ShareRecord]| {
        let distinct: BTreeSet<_> = records.iter().map(|r| r.share).collect();
        distinct.len() >= usize::from(prefix.needed)
    };
    let recoverable_count = versions
        .iter()
        .filter(|(prefix, records)| recoverable(prefix, records))
        .count();
    let unrecoverable_count = versions.len() - recoverable_count;
    let best = map.best_recoverable();
    let mut problems = Vec::new();
    if unrecoverable_count > 0 {
        problems.push("some versions are unrecoverable".to_owned());
    }
    if recoverable_count == 0 {
        problems.push("no versions are recoverable".to_owned());
    }
    if recoverable_count > 1 {
        problems.push("multiple versions are recoverable".to_owned());
    }
    let newer_unrecoverable = newer_than_best(&map);
    let mut wrong_shares = 0;
    let best_version = best.as_ref().map(|(prefix, records)| {
        for record in records {
            census
                .held
                .entry(record.server)
                .or_default()
                .insert(record.share);
        }
        wrong_shares = map.shares.len() - records.len();
        BestVersion {
            seqnum: prefix.seqnum,
            format: prefix.format,
            needed: prefix.needed,
            total: prefix.total,
        }
    });
    if verify && let Some((_, records)) = &best {
        verify_records(grid, keys, records, &mut census, timeout).await;
    }
    if let Some(secret) = lease_secret {
        let servers = map.holding_servers();
        let renewals = renew_leases(grid, keys.storage_index, secret, &servers, timeout).await;
        census.take_renewals(renewals);
    }
    if let Some(best) = &best_version {
        let found = census.distinct_shares().len();
        if found < usize::from(best.total) {
            problems.push(format!(
                "best version has only {found} shares (encoding is {}-of-{})",
                best.needed, best.total
            ));
        }
    }
    Ok(MutableCheck {
        census,
        best: best_version,
        wrong_shares,
        problems,
        newer_unrecoverable,
    })
}

/// Reads every share in `records` whole; failures leave `census.held` for `census.corrupt` (with an advisory to
/// the server) or `census.unreachable`.
async fn verify_records(
    grid: &Grid,
    keys: &FileKeys,
    records: &[&servermap::ShareRecord],
    census: &mut Census,
    timeout: Duration,
) {
    let results = join_all(
        records
            .iter()
            .map(|record| verify_share(grid, keys, record, timeout)),
    )
    .await;
    for (record, result) in records.iter().zip(results) {
        let Err((corrupt, why)) = result else {
            continue;
        };
        if let Some(shares) = census.held.get_mut(&record.server) {
            shares.remove(&record.share);
            if shares.is_empty() {
                census.held.remove(&record.server);
            }
        }
        if corrupt {
            advise_corruption(
                grid.servers()[record.server].storage.as_ref(),
                ShareKind::Mutable,
                keys.storage_index,
                record.share,
                &format!("tahoe-mount verify: {why}"),
                timeout,
            )
            .await;
            census.corrupt.push((record.server, record.share, why));
        } else {
            census.unreachable.entry(record.server).or_insert(why);
        }
    }
}

/// Whether `map` holds a newer version than its best recoverable one (which a repair would overwrite).
pub fn newer_than_best(map: &ServerMap) -> Option<u64> {
    let best = map.best_recoverable().map(|(p, _)| p.seqnum);
    let newest = map.versions().first().map(|(p, _)| p.seqnum)?;
    match best {
        Some(best) if newest <= best => None,
        _ => Some(newest),
    }
}
