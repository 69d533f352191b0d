//! Retrieving one version of a mutable file (`allmydata/mutable/retrieve.py`): fetch k shares of it, check every
//! block against its share's block hash tree and each tree's root against the signed root hash through the share
//! hash chain, decode and decrypt. A share that fails a check gets a corruption advisory and another share of the
//! same version takes its place; an older version is never substituted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::layout::{self, SALT_SIZE, SignedPrefix};
use super::servermap::{ShareRecord, share_bytes};
use super::{FileKeys, MutableError};
use crate::cap::MutableFormat;
use crate::crypto::aes::AesCtr;
use crate::crypto::hashtree::{HashTree, IncompleteHashTree};
use crate::crypto::hashutil::{self, Hash};
use crate::erasure::Codec;
use crate::grid::client::Grid;
use crate::storage::ShareNumber;
use crate::storage::{ShareKind, advise_corruption};

/// A share's verified blocks (with their MDMF salts), one per segment.
struct VerifiedShare {
    share: ShareNumber,
    blocks: Vec<Bytes>,
}

/// Bytes at the start of every mutable share that change with any new version: the version byte, the seqnum and
/// the root hash.
const VERSION_ID_LEN: usize = 1 + 8 + 32;

/// Fetches and verifies all of one share's blocks; the error says what was wrong with it, and whether that was
/// corruption. A share that fails its checks because a writer replaced it since the servermap was read (a newer
/// version, whose bytes no longer fit the old offsets) is not corrupt: its first bytes, read again, tell.
async fn fetch_share(
    grid: &Grid,
    keys: &FileKeys,
    record: &ShareRecord,
    timeout: Duration,
) -> Result<VerifiedShare, (bool, String)> {
    match fetch_and_verify(grid, keys, record, timeout).await {
        Err((true, why)) => {
            let server = &grid.servers()[record.server];
            let len = VERSION_ID_LEN.min(record.head.len());
            let again = tokio::time::timeout(
                timeout,
                server
                    .storage
                    .read_mutable_share(keys.storage_index, record.share, 0, len as u64),
            )
            .await;
            match again {
                Ok(Ok(now)) if now[..] != record.head[..len] => Err((
                    false,
                    "rewritten with another version while it was read".to_owned(),
                )),
                _ => Err((true, why)),
            }
        }
        other => other,
    }
}

async fn fetch_and_verify(
    grid: &Grid,
    keys: &FileKeys,
    record: &ShareRecord,
    timeout: Duration,
) -> Result<VerifiedShare, (bool, String)> {
    let prefix = &record.prefix;
    let regions = &record.regions;
    let read = |range: std::ops::Range<u64>| {
        share_bytes(
            grid,
            keys.storage_index,
            record.server,
            record.share,
            &record.head,
            range,
            timeout,
        )
    };
    // A failed read is not corruption; a bad hash is.
    let (chain, tree, data) = tokio::try_join!(
        read(regions.share_hash_chain.clone()),
        read(regions.block_hash_tree.clone()),
        read(regions.share_data.clone()),
    )
    .map_err(|e| (false, e.to_string()))?;
    // Hashing every block of a big MDMF file takes a while: off the runtime's threads, so timeouts keep working.
    let (prefix, share) = (prefix.clone(), record.share);
    tokio::task::spawn_blocking(move || verify_blocks(&prefix, share, &chain, &tree, &data))
        .await
        .map_err(|e| (false, format!("the verifying task failed: {e}")))?
}

/// Checks a share's block hash tree, its chain up to the signed root hash, and every block; returns the blocks.
fn verify_blocks(
    prefix: &SignedPrefix,
    share: ShareNumber,
    chain: &[u8],
    tree: &[u8],
    data: &Bytes,
) -> Result<VerifiedShare, (bool, String)> {
    let corrupt = |why: String| (true, why);
    let chain = layout::parse_share_hash_chain(chain).map_err(|e| corrupt(e.to_string()))?;
    let tree = layout::parse_block_hash_tree(tree).map_err(|e| corrupt(e.to_string()))?;
    let segments = prefix.num_segments() as usize;
    // The stored tree must be exactly the complete tree over its leaves (padding leaves included).
    let shape = HashTree::new(&vec![[0u8; 32]; segments]);
    let first_leaf = shape.first_leaf_index();
    if tree.len() != shape.nodes().len() {
        return Err(corrupt(format!(
            "block hash tree has {} nodes, {segments} segments need {}",
            tree.len(),
            shape.nodes().len()
        )));
    }
    let rebuilt = HashTree::new(&tree[first_leaf..first_leaf + segments]);
    if tree.as_slice() != rebuilt.nodes() {
        return Err(corrupt("block hash tree is inconsistent".into()));
    }
    let mut share_tree = IncompleteHashTree::new(usize::from(prefix.total));
    let root: BTreeMap<usize, Hash> = [(0, prefix.root_hash)].into();
    share_tree
        .set_hashes(&root, &BTreeMap::new())
        .map_err(|e| corrupt(e.to_string()))?;
    let leaf: BTreeMap<usize, Hash> = [(usize::from(share), tree[0])].into();
    share_tree
        .set_hashes(&chain, &leaf)
        .map_err(|e| corrupt(format!("share hash chain: {e}")))?;
    let mut blocks = Vec::with_capacity(segments);
    for segnum in 0..segments {
        let range = prefix.block_range(segnum as u64);
        let block = data.slice(range.start as usize..range.end as usize);
        if hashutil::block_hash(&block) != tree[first_leaf + segnum] {
            return Err(corrupt(format!("block {segnum} does not match its hash")));
        }
        blocks.push(block);
    }
    Ok(VerifiedShare { share, blocks })
}

/// Reads all of one share and checks every block against its hash tree and the tree against the signed root hash
/// (a checker's `--verify`): `Err((corrupt, why))`, where `corrupt` says whether the bytes were wrong rather than
/// out of reach.
pub async fn verify_share(
    grid: &Grid,
    keys: &FileKeys,
    record: &ShareRecord,
    timeout: Duration,
) -> Result<(), (bool, String)> {
    fetch_share(grid, keys, record, timeout).await.map(|_| ())
}

/// Retrieves the plaintext of the version `prefix` from `records` (its shares).
pub async fn retrieve(
    grid: &Grid,
    keys: &FileKeys,
    prefix: &SignedPrefix,
    records: &[&ShareRecord],
    timeout: Duration,
) -> Result<Vec<u8>, MutableError> {
    let readkey = keys.readkey.ok_or_else(|| {
        MutableError::Unrecoverable("a verify cap cannot read the file's contents".into())
    })?;
    let k = usize::from(prefix.needed);
    // One candidate per share number, preferring a server not yet used, in permuted (records') order.
    let mut seen_shares = BTreeSet::new();
    let (candidates, mut alternates): (Vec<&ShareRecord>, Vec<&ShareRecord>) = records
        .iter()
        .copied()
        .partition(|record| seen_shares.insert(record.share));
    let mut verified: Vec<VerifiedShare> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut next = 0;
    while verified.len() < k {
        let want = k - verified.len();
        let mut batch: Vec<&ShareRecord> = Vec::new();
        while batch.len() < want && next < candidates.len() {
            batch.push(candidates[next]);
            next += 1;
        }
        if batch.is_empty() {
            // Same share numbers on other servers.
            let have: BTreeSet<ShareNumber> = verified.iter().map(|v| v.share).collect();
            alternates.retain(|r| !have.contains(&r.share));
            match alternates.pop() {
                Some(r) => batch.push(r),
                None => break,
            }
        }
        let results = join_all(
            batch
                .iter()
                .map(|record| fetch_share(grid, keys, record, timeout)),
        )
        .await;
        for (record, result) in batch.iter().zip(results) {
            let name = grid.servers()[record.server].name().to_owned();
            match result {
                Ok(share) if !verified.iter().any(|v| v.share == share.share) => {
                    verified.push(share)
                }
                Ok(_) => {}
                Err((corrupt, why)) => {
                    if corrupt {
                        advise_corruption(
                            grid.servers()[record.server].storage.as_ref(),
                            ShareKind::Mutable,
                            keys.storage_index,
                            record.share,
                            &format!("tahoe-mount: {why}"),
                            timeout,
                        )
                        .await;
                    }
                    problems.push(format!("share {} on {name}: {why}", record.share));
                }
            }
        }
    }
    if verified.len() < k {
        return Err(MutableError::Unrecoverable(format!(
            "version {} needs {k} good shares, found {}{}{}",
            prefix.seqnum,
            verified.len(),
            if problems.is_empty() { "" } else { ": " },
            problems.join("; ")
        )));
    }
    verified.truncate(k);
    let prefix = prefix.clone();
    tokio::task::spawn_blocking(move || decode(&prefix, &readkey, &verified))
        .await
        .map_err(|e| MutableError::Unrecoverable(format!("the decoding task failed: {e}")))?
}

fn decode(
    prefix: &SignedPrefix,
    readkey: &[u8; 16],
    shares: &[VerifiedShare],
) -> Result<Vec<u8>, MutableError> {
    let k = usize::from(prefix.needed);
    let codec = Codec::new(k, usize::from(prefix.total))
        .map_err(|e| MutableError::Unrecoverable(format!("erasure parameters: {e}")))?;
    let numbers: Vec<u16> = shares.iter().map(|s| s.share).collect();
    let mut plaintext = Vec::with_capacity(prefix.data_length as usize);
    for segnum in 0..prefix.num_segments() {
        let s = segnum as usize;
        let (salt, blocks): (&[u8], Vec<&[u8]>) = match prefix.format {
            MutableFormat::Sdmf => (
                &prefix.iv,
                shares.iter().map(|v| &v.blocks[s][..]).collect(),
            ),
            MutableFormat::Mdmf => (
                &shares[0].blocks[s][..SALT_SIZE],
                shares.iter().map(|v| &v.blocks[s][SALT_SIZE..]).collect(),
            ),
        };
        let block_size = blocks[0].len();
        let mut segment = vec![0u8; block_size * k];
        if block_size > 0 {
            let mut outputs: Vec<&mut [u8]> = segment.chunks_exact_mut(block_size).collect();
            codec
                .decode(&numbers, &blocks, &mut outputs)
                .map_err(|e| MutableError::Unrecoverable(format!("erasure decoding: {e}")))?;
        }
        segment.truncate(prefix.segment_len(segnum) as usize);
        let key = hashutil::ssk_readkey_data_hash(salt, readkey);
        AesCtr::new_128(&key).apply(&mut segment);
        plaintext.extend_from_slice(&segment);
    }
    Ok(plaintext)
}
