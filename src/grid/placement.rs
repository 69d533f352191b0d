//! Where an upload's shares go: Tahoe's servers-of-happiness measure and share placement
//! (`allmydata/util/happinessutil.py`, `allmydata/immutable/happiness_upload.py`,
//! `docs/specifications/servers-of-happiness.rst`).
//!
//! This module owns the arithmetic only: given who holds what and who can take more, it says how happy a layout
//! is, which new shares to ask each server for, and how Tahoe words an unhappy outcome. Asking servers, and
//! deciding whether the result is happy enough, is the uploader's business.
//!
//! Happiness is the size of a maximum matching in the bipartite graph "server holds share": that many servers
//! each hold a share no other of them is counted for, so any k of them can rebuild the file. Placement follows
//! the specification's three matchings: first read-only servers against the shares they already hold (they
//! cannot take new ones, so their shares are the ones to rely on), then writable servers against the shares
//! they already hold (renewing is cheaper than uploading), then the remaining writable servers against the
//! remaining shares. Shares still without a home are spread over the writable servers, fewest shares first.
//!
//! Where allmydata 1.20's code differs from the specification (we follow the specification):
//! - `_servermap_flow_graph` appends every server's shares to one list shared by all servers, so in steps 2–5
//!   each server gets an edge to every share held by *any* server of that step. A read-only server holding
//!   nothing can thus be "placed" another server's share, which it will refuse, and the upload ends below the
//!   happiness the grid could give (e.g. read-only r1 holding 0 and 1, read-only r2 holding nothing, writable
//!   w1 and w2, N=3: Tahoe maps 0→r2, 1→r1, 2→w1, which is happiness 2; 3 was possible). Writable servers
//!   likewise get asked for copies of shares that other writable servers already hold.
//! - `share_placement` drops a writable server from its candidates altogether when every share it holds was
//!   matched to a read-only server (it removes the emptied server-map entry together with the server), so that
//!   server gets no share even where it would add one to the happiness.
//! - The specification spreads leftover shares "as evenly as possible across the set of writable servers";
//!   `_distribute_homeless_shares` spreads them only over writable servers that already hold a share of the
//!   file when there are any (so they pile up there), and otherwise round-robins over a Python set.
//! - The specification prefers earlier servers in every matching; the code works on sets of server ids, so its
//!   choices follow hash order, not the permuted order.
//! - The code re-uploads a share whose only copy is on a read-only server whenever the matching leaves that
//!   share unused; the specification does not ask for that and neither do we (the share is stored already).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::storage::ShareNumber;

/// Servers are identified by their index into the caller's server list.
pub type ServerIndex = usize;

/// Tahoe's happiness of a placement: the size of a maximum matching between servers and shares in the
/// bipartite graph "server holds (or will hold) share" (happinessutil.servers_of_happiness).
pub fn servers_of_happiness(placement: &BTreeMap<ServerIndex, BTreeSet<ShareNumber>>) -> usize {
    // Shares may be any u16 and usually few are present, so number the ones that occur densely.
    let mut share_slot: BTreeMap<ShareNumber, usize> = BTreeMap::new();
    let adjacency: Vec<Vec<usize>> = placement
        .values()
        .filter(|shares| !shares.is_empty())
        .map(|shares| {
            shares
                .iter()
                .map(|&share| {
                    let next = share_slot.len();
                    *share_slot.entry(share).or_insert(next)
                })
                .collect()
        })
        .collect();
    let mut matching = Matching::new(adjacency, share_slot.len());
    for server in 0..matching.left_count() {
        matching.augment(server);
    }
    matching.size()
}

/// Decides which new shares to ask each writable server to hold, as Tahoe's PeerSelector/share_placement does:
/// `permuted` is every candidate server in permuted order (Tahoe takes the first 2N), `writable` the subset that
/// can accept a share of this size, `existing` the shares each server already holds (from asking them).
/// Returns, for each writable server, the shares to allocate there (shares it already has are not repeated);
/// every share 0..total_shares ends up either already existing somewhere or allocated somewhere, if there is at
/// least one writable server. The result maximizes servers_of_happiness(existing ∪ allocations) and, like Tahoe,
/// spreads leftover shares over servers in permuted order so no server gets more than needed.
///
/// Servers that are given nothing to allocate are absent from the result. Only the first 2N distinct servers
/// of `permuted` that are also in `writable` receive shares: Tahoe asks no further (downloaders look for shares
/// in permuted order, and so should not have to look far). Every server in `existing` counts as holding its
/// shares, whether or not it is in `permuted`; shares numbered `total_shares` or above are not this file's and
/// are ignored.
pub fn place_shares(
    total_shares: u16,
    permuted: &[ServerIndex],
    writable: &BTreeSet<ServerIndex>,
    existing: &BTreeMap<ServerIndex, BTreeSet<ShareNumber>>,
) -> BTreeMap<ServerIndex, BTreeSet<ShareNumber>> {
    let n = usize::from(total_shares);

    // Permuted position of each server (the first, if the caller repeated one): earlier servers are preferred.
    let mut rank: BTreeMap<ServerIndex, usize> = BTreeMap::new();
    for &server in permuted {
        let next = rank.len();
        rank.entry(server).or_insert(next);
    }
    let mut candidates: Vec<ServerIndex> = rank
        .iter()
        .filter(|&(server, &position)| position < 2 * n && writable.contains(server))
        .map(|(&server, _)| server)
        .collect();
    candidates.sort_by_key(|server| rank.get(server).copied());
    if candidates.is_empty() {
        return BTreeMap::new();
    }
    let is_candidate: BTreeSet<ServerIndex> = candidates.iter().copied().collect();

    let held = |server: &ServerIndex| -> Vec<usize> {
        existing.get(server).map_or_else(Vec::new, |shares| {
            shares
                .range(..total_shares)
                .map(|&s| usize::from(s))
                .collect()
        })
    };
    let mut exists = vec![false; n];
    for shares in existing.values() {
        for &share in shares.range(..total_shares) {
            exists[usize::from(share)] = true;
        }
    }

    // Servers holding shares that cannot take new ones: read-only, or beyond the servers Tahoe would ask.
    let mut readonly_holders: Vec<ServerIndex> = existing
        .iter()
        .filter(|(server, shares)| {
            !is_candidate.contains(server) && shares.range(..total_shares).next().is_some()
        })
        .map(|(&server, _)| server)
        .collect();
    readonly_holders
        .sort_by_key(|server| (rank.get(server).copied().unwrap_or(usize::MAX), *server));

    // Steps 2–5 of the specification as one matching over existing shares: read-only holders are matched
    // first, then writable ones in permuted order. Augmenting never unmatches a matched server, so the
    // read-only servers keep a maximum matching among themselves (the shares that cannot move are relied on
    // first), and the writable servers then keep as many of their own shares as possible.
    let lefts: Vec<ServerIndex> = readonly_holders
        .iter()
        .chain(candidates.iter())
        .copied()
        .collect();
    let mut matching = Matching::new(lefts.iter().map(held).collect(), n);
    for left in 0..lefts.len() {
        matching.augment(left);
    }

    // Steps 6–7: any writable server still unmatched can take any unmatched share (it holds none of them, or it
    // would have been matched). Shares stored nowhere go first, so shares that merely lack a counted holder are
    // only copied when there is nothing new to place.
    let mut unmatched_shares: Vec<usize> =
        (0..n).filter(|&s| !matching.is_right_matched(s)).collect();
    unmatched_shares.sort_by_key(|&s| (exists[s], s));
    let mut unmatched_shares = unmatched_shares.into_iter();
    let mut allocations: BTreeMap<ServerIndex, BTreeSet<ShareNumber>> = BTreeMap::new();
    for (left, &server) in lefts.iter().enumerate().skip(readonly_holders.len()) {
        if matching.is_left_matched(left) {
            continue;
        }
        let Some(share) = unmatched_shares.next() else {
            break;
        };
        allocations
            .entry(server)
            .or_default()
            .insert(share_number(share));
    }

    // Shares stored nowhere and not placed by the matching: the least-loaded writable server takes each, the
    // earlier one on a tie, so no server ends up holding more of this file than it must.
    let mut load: Vec<usize> = candidates
        .iter()
        .map(|server| held(server).len() + allocations.get(server).map_or(0, BTreeSet::len))
        .collect();
    for share in unmatched_shares.filter(|&s| !exists[s]) {
        let Some((slot, _)) = load.iter().enumerate().min_by_key(|&(slot, &l)| (l, slot)) else {
            break;
        };
        allocations
            .entry(candidates[slot])
            .or_default()
            .insert(share_number(share));
        load[slot] += 1;
    }
    allocations
}

/// Tahoe's wording when happiness is not met (happinessutil.failure_message), for error messages.
pub fn failure_message(
    server_count: usize,
    needed: u16,
    happy: u16,
    effective_happy: usize,
) -> String {
    if server_count < usize::from(needed) {
        // Too few servers to hold k shares at all: the other explanations would not make sense.
        format!(
            "shares could be placed or found on only {server_count} server(s). We were asked to place shares \
             on at least {happy} server(s) such that any {needed} of them have enough shares to recover the file."
        )
    } else if effective_happy < usize::from(needed) {
        format!(
            "shares could be placed or found on {server_count} server(s), but they are not spread out evenly \
             enough to ensure that any {needed} of these servers would have enough shares to recover the file. \
             We were asked to place shares on at least {happy} servers such that any {needed} of them have enough \
             shares to recover the file."
        )
    } else {
        format!(
            "shares could be placed on only {effective_happy} server(s) such that any {needed} of them have \
             enough shares to recover the file, but we were asked to place shares on at least {happy} such \
             servers."
        )
    }
}

/// Shares in placement are always below `total_shares`, a u16, so this never saturates.
fn share_number(share: usize) -> ShareNumber {
    ShareNumber::try_from(share).unwrap_or(ShareNumber::MAX)
}

/// A bipartite matching grown one augmenting path at a time (Kuhn's algorithm with breadth-first search, and no
/// recursion, so no input can exhaust the stack). Left vertices are servers, right vertices shares; each left
/// vertex's edges are tried in the order given.
struct Matching {
    adjacency: Vec<Vec<usize>>,
    left_mate: Vec<Option<usize>>,
    right_mate: Vec<Option<usize>>,
}

impl Matching {
    /// `adjacency[left]` lists right vertices, each below `rights`.
    fn new(adjacency: Vec<Vec<usize>>, rights: usize) -> Matching {
        Matching {
            left_mate: vec![None; adjacency.len()],
            right_mate: vec![None; rights],
            adjacency,
        }
    }

    fn left_count(&self) -> usize {
        self.adjacency.len()
    }

    fn size(&self) -> usize {
        self.left_mate.iter().filter(|m| m.is_some()).count()
    }

    fn is_left_matched(&self, left: usize) -> bool {
        self.left_mate.get(left).is_some_and(Option::is_some)
    }

    fn is_right_matched(&self, right: usize) -> bool {
        self.right_mate.get(right).is_some_and(Option::is_some)
    }

    /// Matches `left` if an augmenting path from it exists, re-matching other left vertices along the way;
    /// a left vertex that was matched stays matched. Returns whether the matching grew.
    fn augment(&mut self, left: usize) -> bool {
        if left >= self.left_count() || self.is_left_matched(left) {
            return false;
        }
        // reached_from[right]: the left vertex whose edge first reached `right` in this search.
        let mut reached_from: Vec<Option<usize>> = vec![None; self.right_mate.len()];
        let mut queue = VecDeque::from([left]);
        let mut free_end = None;
        'search: while let Some(u) = queue.pop_front() {
            for &v in &self.adjacency[u] {
                if v >= reached_from.len() || reached_from[v].is_some() {
                    continue;
                }
                reached_from[v] = Some(u);
                match self.right_mate[v] {
                    None => {
                        free_end = Some(v);
                        break 'search;
                    }
                    Some(mate) => queue.push_back(mate),
                }
            }
        }
        let Some(mut v) = free_end else {
            return false;
        };
        // Walk back along the alternating path, giving each left vertex the right vertex that reached it.
        while let Some(u) = reached_from[v] {
            let previous = self.left_mate[u];
            self.left_mate[u] = Some(v);
            self.right_mate[v] = Some(u);
            match previous {
                Some(p) => v = p,
                None => break,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(
        entries: &[(ServerIndex, &[ShareNumber])],
    ) -> BTreeMap<ServerIndex, BTreeSet<ShareNumber>> {
        entries
            .iter()
            .map(|&(server, shares)| (server, shares.iter().copied().collect()))
            .collect()
    }

    fn set(servers: &[ServerIndex]) -> BTreeSet<ServerIndex> {
        servers.iter().copied().collect()
    }

    /// existing ∪ allocations, checking that no allocation repeats a share its server already holds.
    fn merged(
        existing: &BTreeMap<ServerIndex, BTreeSet<ShareNumber>>,
        allocations: &BTreeMap<ServerIndex, BTreeSet<ShareNumber>>,
    ) -> BTreeMap<ServerIndex, BTreeSet<ShareNumber>> {
        let mut all = existing.clone();
        for (server, shares) in allocations {
            let held = all.entry(*server).or_default();
            for &share in shares {
                assert!(
                    held.insert(share),
                    "server {server} asked again for share {share}"
                );
            }
        }
        all
    }

    fn every_share_placed(total: u16, all: &BTreeMap<ServerIndex, BTreeSet<ShareNumber>>) -> bool {
        let present: BTreeSet<ShareNumber> = all.values().flatten().copied().collect();
        (0..total).all(|s| present.contains(&s))
    }

    #[test]
    fn happiness_of_simple_maps() {
        assert_eq!(servers_of_happiness(&BTreeMap::new()), 0);
        assert_eq!(servers_of_happiness(&map(&[(0, &[])])), 0);
        assert_eq!(servers_of_happiness(&map(&[(0, &[0, 1, 2, 3])])), 1);
        assert_eq!(
            servers_of_happiness(&map(&[(0, &[0]), (1, &[0]), (2, &[0])])),
            1
        );
        assert_eq!(
            servers_of_happiness(&map(&[(0, &[0]), (1, &[1]), (2, &[2])])),
            3
        );
        // happinessutil's docstring example: server 1 must give up shares 2, 3 and 4 to the others.
        let example = map(&[
            (1, &[1, 2, 3, 4]),
            (2, &[6]),
            (3, &[3]),
            (4, &[4]),
            (5, &[2]),
        ]);
        assert_eq!(servers_of_happiness(&example), 5);
        // Needs an augmenting path longer than one edge: 0 takes 0 first, 1 only holds 0.
        assert_eq!(servers_of_happiness(&map(&[(0, &[0, 1]), (1, &[0])])), 2);
        assert_eq!(
            servers_of_happiness(&map(&[(7, &[65535]), (9, &[65535, 0])])),
            2
        );
    }

    #[test]
    fn fresh_upload_reaches_min_of_servers_and_shares() {
        for total in [1u16, 3, 10, 20, 256] {
            for w in [1usize, 2, 5, 10, 13, 40] {
                let permuted: Vec<ServerIndex> = (0..w).rev().collect();
                let writable: BTreeSet<ServerIndex> = permuted.iter().copied().collect();
                let placed = place_shares(total, &permuted, &writable, &BTreeMap::new());
                let all = merged(&BTreeMap::new(), &placed);
                let candidates = w.min(2 * usize::from(total));
                assert_eq!(
                    servers_of_happiness(&all),
                    candidates.min(usize::from(total)),
                    "N={total} W={w}"
                );
                assert!(every_share_placed(total, &all), "N={total} W={w}");
                let count: usize = placed.values().map(BTreeSet::len).sum();
                assert_eq!(count, usize::from(total), "each share exactly once");
                // Spread evenly: nobody holds more than ceil(N / servers used).
                let most = placed.values().map(BTreeSet::len).max().unwrap_or(0);
                assert!(
                    most <= usize::from(total).div_ceil(candidates),
                    "N={total} W={w}: {placed:?}"
                );
            }
        }
    }

    #[test]
    fn earlier_servers_are_preferred() {
        // Three shares, five servers: the first three in permuted order get them.
        let placed = place_shares(
            3,
            &[4, 2, 0, 1, 3],
            &set(&[0, 1, 2, 3, 4]),
            &BTreeMap::new(),
        );
        assert_eq!(placed.keys().copied().collect::<Vec<_>>(), vec![0, 2, 4]);
        // Leftover shares go to the least-loaded server, the earlier one first.
        let placed = place_shares(5, &[2, 1], &set(&[1, 2]), &BTreeMap::new());
        assert_eq!(placed[&2].len(), 3);
        assert_eq!(placed[&1].len(), 2);
    }

    #[test]
    fn existing_shares_are_reused() {
        // Every writable server already holds a different share: nothing to upload but the missing ones.
        let existing = map(&[(0, &[0]), (1, &[1]), (2, &[2])]);
        let placed = place_shares(4, &[0, 1, 2], &set(&[0, 1, 2]), &existing);
        assert_eq!(placed.values().map(BTreeSet::len).sum::<usize>(), 1);
        assert!(placed.values().any(|s| s.contains(&3)));
        let all = merged(&existing, &placed);
        assert_eq!(servers_of_happiness(&all), 3);

        // A server holding several shares keeps one; the others move to servers that have none.
        let existing = map(&[(0, &[0, 1, 2])]);
        let placed = place_shares(3, &[0, 1, 2], &set(&[0, 1, 2]), &existing);
        let all = merged(&existing, &placed);
        assert_eq!(servers_of_happiness(&all), 3);
        assert!(!placed.contains_key(&0));
        assert_eq!(placed.values().map(BTreeSet::len).sum::<usize>(), 2);

        // Already happy: nothing to do.
        let existing = map(&[(0, &[1]), (1, &[0])]);
        assert!(place_shares(2, &[0, 1], &set(&[0, 1]), &existing).is_empty());

        // New shares go first to empty servers; shares already stored are only copied when nothing new is left.
        let existing = map(&[(0, &[0, 1])]);
        let placed = place_shares(3, &[0, 1], &set(&[0, 1]), &existing);
        assert_eq!(placed, map(&[(1, &[2])]));
    }

    #[test]
    fn readonly_holders_count() {
        // Read-only 0 holds shares 0 and 1, read-only 1 holds nothing (Tahoe would wrongly place a share there),
        // writable 2 and 3: happiness 3 is reachable.
        let existing = map(&[(0, &[0, 1])]);
        let placed = place_shares(3, &[0, 1, 2, 3], &set(&[2, 3]), &existing);
        let all = merged(&existing, &placed);
        assert_eq!(servers_of_happiness(&all), 3);
        assert!(every_share_placed(3, &all));
        assert!(!placed.contains_key(&0) && !placed.contains_key(&1));

        // The read-only copy is relied on, so the writable server is free for another share.
        let existing = map(&[(0, &[0]), (1, &[0])]);
        let placed = place_shares(2, &[0, 1], &set(&[1]), &existing);
        assert_eq!(placed, map(&[(1, &[1])]));
        assert_eq!(servers_of_happiness(&merged(&existing, &placed)), 2);

        // Holders outside `permuted` count too.
        let existing = map(&[(99, &[0])]);
        let placed = place_shares(2, &[0], &set(&[0]), &existing);
        assert_eq!(placed, map(&[(0, &[1])]));
    }

    #[test]
    fn only_the_first_2n_distinct_servers_are_asked() {
        let permuted = [5, 5, 6, 7, 8, 9];
        let placed = place_shares(2, &permuted, &set(&[8, 9]), &BTreeMap::new());
        // 5, 6, 7, 8 are the first four distinct servers; 9 is beyond 2N.
        assert_eq!(placed, map(&[(8, &[0, 1])]));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let none = BTreeMap::new();
        assert!(place_shares(0, &[], &set(&[]), &none).is_empty());
        assert!(place_shares(0, &[0, 1], &set(&[0, 1]), &none).is_empty());
        assert!(place_shares(10, &[], &set(&[0, 1]), &none).is_empty());
        assert!(place_shares(10, &[0, 1], &set(&[]), &map(&[(0, &[1])])).is_empty());
        assert!(place_shares(10, &[0, 1], &set(&[7]), &none).is_empty());
        let big = place_shares(
            u16::MAX,
            &[0, 1, 2],
            &set(&[0, 1, 2]),
            &map(&[(0, &[u16::MAX, 3])]),
        );
        assert_eq!(
            big.values().map(BTreeSet::len).sum::<usize>(),
            usize::from(u16::MAX) - 1
        );
        let permuted: Vec<ServerIndex> = (0..512).collect();
        let writable: BTreeSet<ServerIndex> = (0..512).step_by(2).collect();
        let existing: BTreeMap<ServerIndex, BTreeSet<ShareNumber>> = (1..512)
            .step_by(2)
            .map(|s| (s, (0..256u16).collect()))
            .collect();
        let placed = place_shares(256, &permuted, &writable, &existing);
        assert!(
            placed.is_empty(),
            "every share exists already and the read-only servers are happy"
        );
        let existing: BTreeMap<ServerIndex, BTreeSet<ShareNumber>> = (1..512)
            .step_by(2)
            .map(|s| (s, [(s % 7) as u16, 300].into_iter().collect()))
            .collect();
        let placed = place_shares(256, &permuted, &writable, &existing);
        // 256 of this file's shares on distinct servers, plus a read-only server counted for stray share 300.
        assert_eq!(servers_of_happiness(&merged(&existing, &placed)), 257);
        assert!(every_share_placed(256, &merged(&existing, &placed)));
    }

    #[test]
    fn failure_messages_read_as_tahoe_writes_them() {
        assert_eq!(
            failure_message(2, 3, 7, 2),
            "shares could be placed or found on only 2 server(s). We were asked to place shares on at least 7 \
             server(s) such that any 3 of them have enough shares to recover the file."
        );
        assert!(
            failure_message(4, 3, 7, 2)
                .starts_with("shares could be placed or found on 4 server(s), but")
        );
        assert!(
            failure_message(9, 3, 7, 5).starts_with("shares could be placed on only 5 server(s)")
        );
    }
}
