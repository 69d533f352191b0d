//! Publishing a new version of a mutable file (`allmydata/mutable/publish.py`): encrypt and erasure-code the
//! contents, build the block and share hash trees, sign the prefix, and write every share with a test-and-set on
//! the checkstring the servermap saw there. Shares keep their old homes; new ones go to the least-loaded servers
//! in permuted order, wrapping when there are fewer servers than shares. A write refused because its test failed,
//! or a share of another version found where none was expected, means someone else is writing: the publish
//! reports an uncoordinated write so the caller can refresh and retry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::layout::{self, SALT_SIZE, ShareBody, SignedPrefix};
use super::servermap::{ServerMap, within};
use super::{FileKeys, MutableError, MutableParams};
use crate::cap::MutableFormat;
use crate::crypto::aes::AesCtr;
use crate::crypto::hashtree::HashTree;
use crate::crypto::hashutil::{self, Hash};
use crate::crypto::rsa::SigningKey;
use crate::erasure::Codec;
use crate::grid::client::Grid;
use crate::storage::{
    LeaseSecrets, MutableSecrets, ReadVector, ShareNumber, StorageError, TestVector,
    TestWriteVectors, WriteVector, write_enabler,
};

/// MDMF's segment size (`DEFAULT_MUTABLE_MAX_SEGMENT_SIZE`), rounded up to a multiple of k.
pub const MDMF_SEGMENT_SIZE: u64 = 128 * 1024;

/// The encoded shares of one version, ready to write.
pub struct EncodedVersion {
    pub prefix: SignedPrefix,
    /// The complete bytes of share i, for i in 0..N.
    pub shares: Vec<Bytes>,
}

fn random_salt() -> Result<[u8; SALT_SIZE], MutableError> {
    let mut salt = [0u8; SALT_SIZE];
    getrandom::fill(&mut salt)
        .map_err(|e| MutableError::Failed(format!("no randomness for a salt: {e}")))?;
    Ok(salt)
}

/// Encrypts, encodes, hashes and signs `contents` as version `seqnum`. CPU-bound: run it off the runtime threads
/// for large contents.
pub fn encode(
    keys: &FileKeys,
    signing_key: &SigningKey,
    enc_privkey: &[u8],
    contents: &[u8],
    params: &MutableParams,
    seqnum: u64,
) -> Result<EncodedVersion, MutableError> {
    let readkey = keys
        .readkey
        .ok_or_else(|| MutableError::Failed("publishing needs a writecap".into()))?;
    let k = u64::from(params.needed);
    let n = usize::from(params.total);
    let data_length = contents.len() as u64;
    let segment_size = match params.format {
        MutableFormat::Sdmf => data_length.next_multiple_of(k),
        MutableFormat::Mdmf => MDMF_SEGMENT_SIZE.next_multiple_of(k),
    };
    let iv = match params.format {
        MutableFormat::Sdmf => random_salt()?,
        MutableFormat::Mdmf => [0; SALT_SIZE],
    };
    let mut prefix = SignedPrefix {
        format: params.format,
        seqnum,
        root_hash: [0; 32],
        iv,
        needed: params.needed,
        total: params.total,
        segment_size,
        data_length,
    };
    let codec = Codec::new(usize::from(params.needed), n)
        .map_err(|e| MutableError::Failed(format!("erasure parameters: {e}")))?;
    let share_numbers: Vec<u16> = (0..n as u16).collect();
    let mut share_data: Vec<Vec<u8>> =
        vec![Vec::with_capacity(prefix.share_data_len() as usize); n];
    let mut block_hashes: Vec<Vec<Hash>> = vec![Vec::new(); n];
    for segnum in 0..prefix.num_segments() {
        let start = (segnum * segment_size) as usize;
        let len = prefix.segment_len(segnum) as usize;
        let block_size = prefix.segment_block_size(segnum) as usize;
        let salt = match params.format {
            MutableFormat::Sdmf => iv,
            MutableFormat::Mdmf => random_salt()?,
        };
        let mut crypttext = vec![0u8; block_size * usize::from(params.needed)];
        crypttext[..len].copy_from_slice(&contents[start..start + len]);
        AesCtr::new_128(&hashutil::ssk_readkey_data_hash(&salt, &readkey))
            .apply(&mut crypttext[..len]);
        let mut blocks = vec![0u8; block_size * n];
        if block_size > 0 {
            let data: Vec<&[u8]> = crypttext.chunks_exact(block_size).collect();
            let mut outputs: Vec<&mut [u8]> = blocks.chunks_exact_mut(block_size).collect();
            codec
                .encode(&data, &share_numbers, &mut outputs)
                .map_err(|e| MutableError::Failed(format!("erasure coding: {e}")))?;
        }
        for share in 0..n {
            let block = &blocks[share * block_size..(share + 1) * block_size];
            let out = &mut share_data[share];
            let hashed_from = out.len();
            if params.format == MutableFormat::Mdmf {
                out.extend_from_slice(&salt);
            }
            out.extend_from_slice(block);
            block_hashes[share].push(hashutil::block_hash(&out[hashed_from..]));
        }
    }
    let block_trees: Vec<HashTree> = block_hashes.iter().map(|h| HashTree::new(h)).collect();
    let share_tree = HashTree::new(&block_trees.iter().map(|t| *t.root()).collect::<Vec<_>>());
    prefix.root_hash = *share_tree.root();
    let signature = signing_key
        .sign(&prefix.signable())
        .map_err(|e| MutableError::Failed(e.to_string()))?;
    let mut shares = Vec::with_capacity(n);
    for share in 0..n {
        let chain: BTreeMap<usize, Hash> = share_tree
            .needed_hashes(share, false)
            .map_err(|e| MutableError::Failed(e.to_string()))?
            .into_iter()
            .map(|i| (i, *share_tree.node(i).expect("needed node exists")))
            .collect();
        let body = ShareBody {
            verification_key: signing_key.verifying_key().der(),
            signature: &signature,
            share_hash_chain: &chain,
            block_hash_tree: block_trees[share].nodes(),
            share_data: &share_data[share],
            enc_privkey,
        };
        shares.push(Bytes::from(
            layout::pack_share(&prefix, &body).map_err(|e| MutableError::Failed(e.to_string()))?,
        ));
    }
    Ok(EncodedVersion { prefix, shares })
}

/// Where each share goes: the old homes of every share the map knows, then the homeless shares on the servers
/// with the fewest shares so far, in permuted order (`Publish.update_goal`). Then, unlike Tahoe, spread doubled-up
/// shares onto usable servers that hold none (an earlier publish may have had fewer servers to use); the old
/// copies they leave are returned, to be deleted.
fn place(
    total: usize,
    permuted: &[usize],
    usable: &BTreeSet<usize>,
    goal: &mut BTreeSet<(usize, ShareNumber)>,
) -> Result<Vec<(usize, ShareNumber)>, String> {
    goal.retain(|(server, share)| usable.contains(server) && usize::from(*share) < total);
    let servers: Vec<usize> = permuted
        .iter()
        .copied()
        .filter(|s| usable.contains(s))
        .collect();
    if servers.is_empty() {
        return Err("no usable server left".into());
    }
    let load = |goal: &BTreeSet<(usize, ShareNumber)>, server: usize| {
        goal.iter().filter(|(g, _)| *g == server).count()
    };
    let homed: BTreeSet<ShareNumber> = goal.iter().map(|(_, s)| *s).collect();
    for share in (0..total as u16).filter(|s| !homed.contains(s)) {
        let least = servers
            .iter()
            .copied()
            .min_by_key(|&s| load(goal, s))
            .expect("servers is not empty");
        goal.insert((least, share));
    }
    let mut moved = Vec::new();
    for &empty in &servers {
        if load(goal, empty) > 0 {
            continue;
        }
        let crowded = servers
            .iter()
            .copied()
            .filter(|&s| load(goal, s) > 1)
            .max_by_key(|&s| load(goal, s));
        let Some(crowded) = crowded else { break };
        let share = goal
            .iter()
            .rev()
            .find(|(s, _)| *s == crowded)
            .map(|(_, share)| *share)
            .expect("a crowded server holds shares");
        goal.remove(&(crowded, share));
        goal.insert((empty, share));
        moved.push((crowded, share));
    }
    Ok(moved)
}

/// What became of one server's writes.
enum WriteOutcome {
    Written,
    /// Its test failed or it holds a share of another version we did not know of.
    Surprised(String),
    Failed(String),
}

#[allow(clippy::too_many_arguments)]
async fn write_server(
    grid: &Grid,
    keys: &FileKeys,
    lease_secret: &[u8],
    server: usize,
    writes: BTreeMap<ShareNumber, TestWriteVectors>,
    new_checkstring: &[u8],
    timeout: Duration,
) -> WriteOutcome {
    let storage = &grid.servers()[server].storage;
    let writekey = keys.writekey.expect("publish needs a writekey");
    let attempt = async {
        let seed = storage.lease_seed().await?;
        let secrets = MutableSecrets {
            write_enabler: write_enabler(&writekey, &seed),
            lease: LeaseSecrets::derive(lease_secret, &keys.storage_index, &seed),
        };
        let read = [ReadVector {
            offset: 0,
            size: new_checkstring.len() as u64,
        }];
        storage
            .read_test_write(keys.storage_index, secrets, &writes, &read)
            .await
    };
    let name = grid.servers()[server].name();
    let answer = match within(timeout, name, "read-test-write", attempt).await {
        Ok(answer) => answer,
        Err(StorageError::Unauthorized { reason, .. }) => {
            // A write enabler that does not match means the slot belongs to another key: not ours to overwrite.
            return WriteOutcome::Surprised(format!("write enabler refused ({reason})"));
        }
        Err(e) => return WriteOutcome::Failed(e.to_string()),
    };
    if !answer.success {
        return WriteOutcome::Surprised(
            "a share changed since we looked (test-and-set failed)".into(),
        );
    }
    for (share, reads) in &answer.data {
        if writes.contains_key(share) {
            continue;
        }
        let seen = reads.first().map(|b| &b[..]).unwrap_or_default();
        if seen != new_checkstring {
            return WriteOutcome::Surprised(format!(
                "it holds share {share} of a version we did not know of"
            ));
        }
    }
    WriteOutcome::Written
}

/// Writes `version` to the grid over what `map` saw. Succeeds when every share is placed and at least `happy`
/// distinct servers (or every usable one, if fewer) hold shares.
pub async fn publish(
    grid: &Grid,
    keys: &FileKeys,
    lease_secret: &[u8],
    map: &ServerMap,
    version: &EncodedVersion,
    happy: usize,
    timeout: Duration,
) -> Result<(), MutableError> {
    let total = version.shares.len();
    let permuted = grid.permuted(&keys.storage_index);
    let mut usable: BTreeSet<usize> = permuted
        .iter()
        .copied()
        .filter(|s| !map.unreachable.contains_key(s))
        .collect();
    let known = map.known_locations();
    let mut goal: BTreeSet<(usize, ShareNumber)> = known.clone();
    // Shares a smaller N leaves behind are deleted, so no reader mistakes them for a live version.
    let mut obsolete: BTreeSet<(usize, ShareNumber)> = known
        .iter()
        .copied()
        .filter(|(_, s)| usize::from(*s) >= total)
        .collect();
    let new_checkstring = version.prefix.checkstring();
    let mut placed: BTreeSet<(usize, ShareNumber)> = BTreeSet::new();
    let mut failures: BTreeMap<usize, String> = map.unreachable.clone();
    loop {
        let moved = place(total, &permuted, &usable, &mut goal).map_err(|why| {
            MutableError::NotEnoughServers(describe_failures(grid, &failures, why))
        })?;
        // A share moved away from a server where the map saw it is deleted there, unless another write there
        // is planned for it.
        obsolete.extend(
            moved
                .into_iter()
                .filter(|location| known.contains(location) && !goal.contains(location)),
        );
        let mut by_server: BTreeMap<usize, BTreeMap<ShareNumber, TestWriteVectors>> =
            BTreeMap::new();
        let writes = goal.iter().map(|location| (location, true));
        let deletes = obsolete
            .iter()
            .filter(|location| !goal.contains(location))
            .map(|location| (location, false));
        for (&(server, share), write) in writes.chain(deletes) {
            if placed.contains(&(server, share)) {
                continue;
            }
            let tests = vec![match map.checkstring_at(server, share) {
                Some(old) => TestVector {
                    offset: 0,
                    size: old.len() as u64,
                    specimen: Bytes::from(old),
                },
                // Tahoe's "must not exist yet" test: a missing share reads as empty.
                None => TestVector {
                    offset: 0,
                    size: 1,
                    specimen: Bytes::new(),
                },
            }];
            let vectors = if write {
                let bytes = version.shares[usize::from(share)].clone();
                TestWriteVectors {
                    tests,
                    new_length: Some(bytes.len() as u64),
                    writes: vec![WriteVector {
                        offset: 0,
                        data: bytes,
                    }],
                }
            } else {
                TestWriteVectors {
                    tests,
                    writes: Vec::new(),
                    new_length: Some(0),
                }
            };
            by_server.entry(server).or_default().insert(share, vectors);
        }
        if by_server.is_empty() {
            break;
        }
        let targets: Vec<usize> = by_server.keys().copied().collect();
        let writes: Vec<_> = by_server
            .into_iter()
            .map(|(server, writes)| {
                let new_checkstring = &new_checkstring;
                async move {
                    let outcome = write_server(
                        grid,
                        keys,
                        lease_secret,
                        server,
                        writes,
                        new_checkstring,
                        timeout,
                    )
                    .await;
                    (server, outcome)
                }
            })
            .collect();
        let outcomes = write_round(grid, &targets, writes).await;
        let mut surprise = None;
        let mut any_failed = false;
        for (server, outcome) in outcomes {
            match outcome {
                WriteOutcome::Written => {
                    placed.extend(
                        goal.iter()
                            .chain(obsolete.iter())
                            .filter(|(s, _)| *s == server)
                            .copied(),
                    );
                }
                WriteOutcome::Surprised(why) => {
                    surprise = Some(format!("{}: {why}", grid.servers()[server].name()));
                    usable.remove(&server);
                }
                WriteOutcome::Failed(why) => {
                    any_failed = true;
                    failures.insert(server, why);
                    usable.remove(&server);
                }
            }
        }
        if let Some(why) = surprise {
            return Err(MutableError::UncoordinatedWrite(why));
        }
        if !any_failed {
            break;
        }
    }
    let holding: BTreeSet<usize> = placed
        .intersection(&goal)
        .map(|(server, _)| *server)
        .collect();
    let needed_servers = happy.min(total).min(grid.len()).max(1);
    if holding.len() < needed_servers {
        return Err(MutableError::NotEnoughServers(describe_failures(
            grid,
            &failures,
            format!(
                "shares of version {} landed on {} servers, {needed_servers} needed",
                version.prefix.seqnum,
                holding.len()
            ),
        )));
    }
    Ok(())
}

/// The least a publish waits for the last servers of a round once half have answered (and it waits three times as
/// long as that took): a busy server is not taken for a silent one.
const WRITE_GRACE: Duration = Duration::from_secs(5);

/// Runs one round of writes to `targets`, one per server. Once half of them have answered, the rest get three
/// times as long again (at least [`WRITE_GRACE`]) and then count as failed, so their shares go elsewhere in the next round
/// instead of a silent server holding the publish for the whole timeout. A write left behind may still land; it
/// holds the same share of the same version, which does no harm.
async fn write_round<F>(
    grid: &Grid,
    targets: &[usize],
    writes: Vec<F>,
) -> Vec<(usize, WriteOutcome)>
where
    F: std::future::Future<Output = (usize, WriteOutcome)>,
{
    let mut pending: FuturesUnordered<F> = writes.into_iter().collect();
    let started = tokio::time::Instant::now();
    let mut outcomes = Vec::with_capacity(targets.len());
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let Some(next) = crate::grid::before_deadline(deadline, pending.next()).await else {
            break;
        };
        let Some(outcome) = next else { break };
        outcomes.push(outcome);
        if deadline.is_none() && outcomes.len() * 2 >= targets.len() {
            deadline = Some(tokio::time::Instant::now() + (started.elapsed() * 3).max(WRITE_GRACE));
        }
    }
    let waited = started.elapsed().as_secs_f64();
    for &server in targets {
        if outcomes.iter().all(|(answered, _)| *answered != server) {
            outcomes.push((
                server,
                WriteOutcome::Failed(format!(
                    "{}: no answer within {waited:.1} s, when the other servers had answered",
                    grid.servers()[server].name()
                )),
            ));
        }
    }
    outcomes
}

fn describe_failures(grid: &Grid, failures: &BTreeMap<usize, String>, headline: String) -> String {
    let mut text = headline;
    for (server, why) in failures {
        text.push_str(&format!("; {}: {why}", grid.servers()[*server].name()));
    }
    text
}
