//! Who holds which shares of one storage index, as a checker finds them (`allmydata/immutable/checker.py`,
//! `mutable/checker.py`), and lease renewal on those servers.
//!
//! A [`Census`] is what the servers said: shares held (and, after verification, which of them are good), shares
//! found corrupt, servers that did not answer. Health is judged from it in Tahoe's terms (all N shares found) and
//! one step stricter: the shares must also sit on at least *happy* distinct servers, measured as Tahoe measures
//! happiness (a maximum matching of servers to shares), so that any k of those servers can rebuild the file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;

use super::client::Grid;
use super::placement::servers_of_happiness;
use crate::storage::{LeaseSecrets, ShareNumber, StorageError, StorageIndex};

/// One storage index's shares on the grid's servers (servers are indexes into [`Grid::servers`]).
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Shares each answering server holds (good ones only, once verified). Servers holding none are absent.
    pub held: BTreeMap<usize, BTreeSet<ShareNumber>>,
    /// Shares that failed verification: (server, share, why).
    pub corrupt: Vec<(usize, ShareNumber, String)>,
    /// Servers that did not answer, and why.
    pub unreachable: BTreeMap<usize, String>,
    /// What lease renewal did, when it was asked for.
    pub leases: LeaseTally,
}

/// Counts of lease renewals on one object's servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseTally {
    /// Servers whose lease was renewed (or added).
    pub renewed: usize,
    /// Servers that listed shares but answered 404 to the renewal: their shares are gone.
    pub missing: usize,
    /// Servers where the renewal failed for another reason.
    pub failed: usize,
}

impl LeaseTally {
    pub fn add(&mut self, other: LeaseTally) {
        self.renewed += other.renewed;
        self.missing += other.missing;
        self.failed += other.failed;
    }
}

impl Census {
    /// Distinct share numbers held anywhere.
    pub fn distinct_shares(&self) -> BTreeSet<ShareNumber> {
        self.held.values().flatten().copied().collect()
    }

    /// Servers-of-happiness of the shares held.
    pub fn happiness(&self) -> usize {
        servers_of_happiness(&self.held)
    }

    /// Each share with the servers that hold it.
    pub fn by_share(&self) -> BTreeMap<ShareNumber, Vec<usize>> {
        let mut shares: BTreeMap<ShareNumber, Vec<usize>> = BTreeMap::new();
        for (&server, held) in &self.held {
            for &share in held {
                shares.entry(share).or_default().push(server);
            }
        }
        shares
    }

    /// Why the shares fall short of `total` shares on `happy` servers (empty when they do not): Tahoe's health
    /// rule (every share found), then happiness, then corruption.
    pub fn shortfalls(&self, needed: u16, total: u16, happy: u16) -> Vec<String> {
        let mut problems = Vec::new();
        let found = self.distinct_shares().len();
        if found < usize::from(total) {
            problems.push(format!(
                "{found} of {total} shares found (encoding is {needed}-of-{total})"
            ));
        }
        let happiness = self.happiness();
        if happiness < usize::from(happy.min(total)) {
            problems.push(format!(
                "shares on only {happiness} distinct servers, happiness {} wanted",
                happy.min(total)
            ));
        }
        if !self.corrupt.is_empty() {
            problems.push(format!("{} corrupt shares", self.corrupt.len()));
        }
        problems
    }

    /// Renews (or adds) our lease at every server that holds a share (see [`renew_leases`]). A server that
    /// answers 404 holds no share after all: its shares are dropped from the census.
    pub async fn renew_leases(
        &mut self,
        grid: &Grid,
        storage_index: StorageIndex,
        lease_secret: &[u8],
        timeout: Duration,
    ) {
        let servers: Vec<usize> = self.held.keys().copied().collect();
        let renewals = renew_leases(grid, storage_index, lease_secret, &servers, timeout).await;
        self.take_renewals(renewals);
    }

    /// Counts what a renewal found: servers without the shares they listed lose them here.
    pub fn take_renewals(&mut self, renewals: Renewals) {
        self.leases.add(renewals.tally);
        for server in renewals.gone {
            self.held.remove(&server);
        }
        for (server, why) in renewals.failed {
            self.unreachable.entry(server).or_insert(why);
        }
    }
}

/// What renewing one object's leases found.
#[derive(Debug, Default)]
pub struct Renewals {
    pub tally: LeaseTally,
    /// Servers that answered 404: they hold no share of it.
    pub gone: BTreeSet<usize>,
    /// Servers where renewal failed otherwise, and why.
    pub failed: BTreeMap<usize, String>,
}

/// Renews (or adds) our lease on `storage_index` at each of `servers`, with Tahoe's secrets for that server (from
/// the client's lease secret and the server's tub id, `allmydata/storage_client.py`), so that renewing a lease we
/// took when uploading renews it instead of adding a second one.
pub async fn renew_leases(
    grid: &Grid,
    storage_index: StorageIndex,
    lease_secret: &[u8],
    servers: &[usize],
    timeout: Duration,
) -> Renewals {
    let renewals = servers.iter().map(|&server| async move {
        let storage = &grid.servers()[server].storage;
        let renewal = async {
            let seed = storage.lease_seed().await?;
            let secrets = LeaseSecrets::derive(lease_secret, &storage_index, &seed);
            storage.add_or_renew_lease(storage_index, secrets).await
        };
        match tokio::time::timeout(timeout, renewal).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Timeout {
                server: storage.name().to_owned(),
                what: "lease renewal",
                seconds: timeout.as_secs_f64(),
            }),
        }
    });
    let results = join_all(renewals).await;
    let mut found = Renewals::default();
    for (&server, result) in servers.iter().zip(results) {
        match result {
            Ok(()) => found.tally.renewed += 1,
            Err(StorageError::NotFound { .. }) => {
                found.tally.missing += 1;
                found.gone.insert(server);
            }
            Err(e) => {
                found.tally.failed += 1;
                found.failed.insert(server, e.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(held: &[(usize, &[ShareNumber])]) -> Census {
        Census {
            held: held
                .iter()
                .map(|(server, shares)| (*server, shares.iter().copied().collect()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn all_shares_on_too_few_servers_is_a_shortfall() {
        let crowded = census(&[(0, &[0, 1, 2, 3, 4]), (1, &[5, 6, 7, 8, 9])]);
        assert_eq!(crowded.distinct_shares().len(), 10);
        assert_eq!(crowded.happiness(), 2);
        let problems = crowded.shortfalls(3, 10, 7);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("only 2 distinct servers"));
        let spread: Vec<(usize, Vec<ShareNumber>)> = (0..10).map(|i| (i, vec![i as u16])).collect();
        let spread: Vec<(usize, &[ShareNumber])> =
            spread.iter().map(|(s, v)| (*s, v.as_slice())).collect();
        assert!(census(&spread).shortfalls(3, 10, 7).is_empty());
    }

    #[test]
    fn missing_shares_and_corruption_are_named() {
        let mut partial = census(&[(0, &[0]), (1, &[1]), (2, &[2])]);
        partial.corrupt.push((3, 3, "bad block".into()));
        let problems = partial.shortfalls(3, 10, 3);
        assert!(
            problems[0].starts_with("3 of 10 shares found"),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("1 corrupt")));
        // happy is capped by N: a 1-of-1 file on one server is happy.
        assert!(census(&[(0, &[0])]).shortfalls(1, 1, 7).is_empty());
    }
}
