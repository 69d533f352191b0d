//! Uploading an immutable file: a literal cap for small files, else CHK shares byte-identical to those
//! `allmydata/immutable/upload.py` and `encode.py` write, so the same convergence secret, parameters and bytes give
//! the same cap as `tahoe put`.
//!
//! The work is a pipeline with bounded memory whatever the file size:
//! 1. one pass over the plaintext for the convergent key (SHA-256d; it must be known before anything is
//!    encrypted);
//! 2. server selection: ask the first 2N servers in permuted order what they can take (and those too full what
//!    they hold), place shares by servers-of-happiness, allocate (the answers name shares already there);
//! 3. encoder threads (one per core) each take every T-th segment: read, AES-CTR encrypt, erasure-code, hash the
//!    segment and the check blocks; a collector puts segments back in order and hashes the whole crypttext beside
//!    the data blocks (hashes run two at a time: `crypto::sha256`);
//! 4. the async side queues each block for its share and writes to all servers in parallel, one write in flight
//!    per share, which is what bounds the pipeline; a share's blocks are gathered into writes of about 1 MiB
//!    (each request costs a server more than its bytes do), sent as the slices of the segments they are;
//! 5. the hash trees, share hashes and the URI extension block close every share.
//!
//! A server that fails mid-upload loses its shares; the upload carries on while happiness holds, else every
//! bucket is aborted so no half-written share is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::layout::{ShareLayout, encode_share_hashes};
use super::params::{BadParams, EncodingParams, Geometry, LITERAL_THRESHOLD};
use crate::cap::{ChkCap, FileCap};
use crate::config::Secret;
use crate::crypto::aes::AesCtr;
use crate::crypto::hashtree::HashTree;
use crate::crypto::hashutil::{self, Hash, Key};
use crate::erasure::Codec;
use crate::grid::client::Grid;
use crate::grid::placement::{failure_message, place_shares, servers_of_happiness};
use crate::storage::{LeaseSecrets, ShareNumber, StorageError, StorageIndex, StorageServer};

/// How an upload is done.
#[derive(Clone)]
pub struct UploadOptions {
    pub params: EncodingParams,
    pub convergence: Secret,
    pub lease_secret: Secret,
    /// Encoder threads; 0 means one per core.
    pub threads: usize,
    /// How long a server may take to answer a query or an allocation before it is passed over.
    pub query_timeout: Duration,
    /// Bytes gathered per share before a write: large writes keep the servers' per-request cost low.
    pub write_chunk: usize,
    /// How long one write may take before its server is given up on.
    pub write_timeout: Duration,
    /// Called with the plaintext bytes encoded and handed to the servers so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl UploadOptions {
    pub fn new(convergence: Secret, lease_secret: Secret) -> UploadOptions {
        UploadOptions {
            params: EncodingParams::default(),
            convergence,
            lease_secret,
            threads: 0,
            query_timeout: Duration::from_secs(15),
            write_chunk: 1 << 20,
            write_timeout: Duration::from_secs(120),
            progress: None,
        }
    }
}

/// Why an upload failed. Nothing is left half-written on any server when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Params(#[from] BadParams),
    #[error("no storage servers to upload to")]
    NoServers,
    /// Servers-of-happiness could not be met; the message names the servers that could not help and why.
    #[error("{0}")]
    Unhappy(String),
    #[error("upload failed: {0}")]
    Failed(String),
}

/// What an upload made.
#[derive(Debug, Clone)]
pub struct UploadResult {
    pub cap: FileCap,
    /// For each share written or found already present: the names of the servers holding it.
    pub placement: BTreeMap<ShareNumber, Vec<String>>,
    pub happiness: usize,
}

/// Uploads `file` (read with positional reads, so it must not change meanwhile) and returns its cap.
pub async fn upload_file(
    grid: &Grid,
    file: Arc<File>,
    options: &UploadOptions,
) -> Result<UploadResult, UploadError> {
    options.params.validate()?;
    let size = file.metadata().map_err(UploadError::Read)?.len();
    if size <= LITERAL_THRESHOLD {
        let mut data = vec![0u8; size as usize];
        file.read_exact_at(&mut data, 0)
            .map_err(UploadError::Read)?;
        return Ok(UploadResult {
            cap: FileCap::Literal(data),
            placement: BTreeMap::new(),
            happiness: 0,
        });
    }
    if grid.is_empty() {
        return Err(UploadError::NoServers);
    }
    let geometry = Geometry::for_upload(size, &options.params);
    let key = {
        let file = file.clone();
        let convergence = options.convergence.clone();
        let params = options.params;
        tokio::task::spawn_blocking(move || convergent_key(&file, &geometry, &params, &convergence))
            .await
            .map_err(|e| UploadError::Failed(format!("key task: {e}")))??
    };
    upload_chk(grid, file, key, geometry, options, &Reupload::default()).await
}

/// What a repair knows before it uploads a file again: the shares servers hold already (found by asking them
/// all, so beyond the first 2N too), and the URI extension block hash the new shares must produce.
#[derive(Debug, Clone, Default)]
pub struct Reupload {
    pub existing: BTreeMap<usize, BTreeSet<ShareNumber>>,
    pub ueb_hash: Option<Hash>,
}

/// Encodes `file` under `key` with `geometry` and puts its shares on the grid, counting the shares `known`
/// says servers hold. With `known.ueb_hash`, the shares are closed only if they are the very shares of that file
/// (else every new bucket is aborted): a repair must never write shares that differ from the cap's.
pub async fn upload_chk(
    grid: &Grid,
    file: Arc<File>,
    key: Key,
    geometry: Geometry,
    options: &UploadOptions,
    known: &Reupload,
) -> Result<UploadResult, UploadError> {
    if grid.is_empty() {
        return Err(UploadError::NoServers);
    }
    let size = geometry.size;
    let params = EncodingParams {
        needed: geometry.needed,
        total: geometry.total,
        max_segment_size: geometry.segment_size,
        ..options.params
    };
    params.validate()?;
    let storage_index = StorageIndex(hashutil::storage_index_hash(&key));
    let mut upload_secret = [0u8; 32];
    getrandom::fill(&mut upload_secret)
        .map_err(|e| UploadError::Failed(format!("no randomness: {e}")))?;

    let layout = ShareLayout::for_upload(
        geometry.share_data_size(),
        geometry.block_size(),
        geometry.num_segments,
        geometry.num_share_hashes(),
    )
    .map_err(|e| UploadError::Failed(e.to_string()))?;
    let allocated_size = layout
        .allocated_size(ueb_size(&geometry))
        .ok_or_else(|| UploadError::Failed("the file is too large for a share".into()))?;

    let selection = select_servers(
        grid,
        storage_index,
        allocated_size,
        &params,
        &options.lease_secret,
        &upload_secret,
        options.query_timeout,
        &known.existing,
    )
    .await?;

    let mut push = Push {
        grid,
        storage_index,
        upload_secret,
        happy: params.happy,
        needed: params.needed,
        preexisting: selection.existing.clone(),
        writers: selection
            .allocated
            .iter()
            .map(|(&share, &server)| ShareWriter {
                share,
                server,
                offset: 0,
                queue: vec![Bytes::from(layout.header())],
                pending: None,
            })
            .collect(),
        lost: Vec::new(),
        chunk: options.write_chunk.max(1),
        write_timeout: options.write_timeout,
        expected_ueb_hash: known.ueb_hash,
    };
    match push.run(file, key, geometry, &layout, options).await {
        Ok(ueb_hash) => {
            let cap = ChkCap {
                key,
                ueb_hash,
                needed_shares: params.needed,
                total_shares: params.total,
                size,
            };
            let held = push.held();
            let mut placement: BTreeMap<ShareNumber, Vec<String>> = BTreeMap::new();
            for (&server, shares) in &held {
                for &share in shares {
                    placement
                        .entry(share)
                        .or_default()
                        .push(grid.servers()[server].name().to_owned());
                }
            }
            Ok(UploadResult {
                cap: FileCap::Chk(cap),
                placement,
                happiness: servers_of_happiness(&held),
            })
        }
        Err(e) => {
            push.abort_all().await;
            Err(e)
        }
    }
}

/// The convergent encryption key: Tahoe's tagged SHA-256d over the parameters, the secret and the plaintext.
fn convergent_key(
    file: &File,
    geometry: &Geometry,
    params: &EncodingParams,
    convergence: &Secret,
) -> Result<Key, UploadError> {
    let mut hasher = hashutil::convergence_hasher(
        usize::from(params.needed),
        usize::from(params.total),
        geometry.segment_size,
        convergence.bytes(),
    )
    .map_err(|e| UploadError::Failed(e.to_string()))?;
    // Small enough to stay in the core's L2 cache between the kernel's copy and the hash: with 1 MiB, the copy
    // took as much CPU as the hashing.
    let mut buffer = vec![0u8; 128 << 10];
    let mut offset = 0;
    while offset < geometry.size {
        let n = (geometry.size - offset).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..n], offset)
            .map_err(UploadError::Read)?;
        hasher.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(hasher.finalize())
}

/// The shares placed: which server writes each new share, and what servers already hold.
struct Selection {
    allocated: BTreeMap<ShareNumber, usize>,
    existing: BTreeMap<usize, BTreeSet<ShareNumber>>,
}

/// How old a server's version (its share size limit) may be when an upload asks it.
const VERSION_MAX_AGE: Duration = Duration::from_secs(60);

/// A server's answers to the pre-allocation questions.
struct Answer {
    lease: LeaseSecrets,
    existing: BTreeSet<ShareNumber>,
    max_share_size: u64,
}

/// Asks a server what the upload needs to know of it. Only a server too full for a share is asked which shares
/// it holds: a writable one says so in its answer to the allocation (`already_have`), and the question would cost
/// every upload a request per server (a small file's upload is bound by the servers' work per request).
async fn ask_server(
    storage: Arc<dyn StorageServer>,
    storage_index: StorageIndex,
    allocated_size: u64,
    lease_secret: Secret,
    timeout: Duration,
) -> Result<Answer, String> {
    let questions = async {
        let seed = storage.lease_seed().await?;
        let version = storage.version_recent(VERSION_MAX_AGE).await?;
        let existing = if version.maximum_immutable_share_size >= allocated_size {
            BTreeSet::new()
        } else {
            storage.list_immutable_shares(storage_index).await?
        };
        Ok::<_, StorageError>(Answer {
            lease: LeaseSecrets::derive(lease_secret.bytes(), &storage_index, &seed),
            existing,
            max_share_size: version.maximum_immutable_share_size,
        })
    };
    match tokio::time::timeout(timeout, questions).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{}: no answer within {:.0} s",
            storage.name(),
            timeout.as_secs_f64()
        )),
    }
}

/// The least an upload waits for the rest of the servers once those that answered can make it happy (and it
/// waits three times as long as that took): long enough that a busy server is not taken for a silent one, which
/// would place its shares elsewhere.
const QUERY_GRACE: Duration = Duration::from_secs(5);

/// Tahoe's server selection (`Tahoe2ServerSelector`): the first 2N servers in permuted order are asked whether
/// a share fits (and, if none does, what they hold); shares are placed for happiness and allocated, the shares
/// servers say they already have are counted, and placement is retried without servers that refuse, until
/// nothing more can be placed. Unlike Tahoe, writable servers are not asked what they hold before the placement:
/// the same bytes uploaded again land on the same servers (the permuted order is the file's), whose allocation
/// answers say they have them; a share found elsewhere may be stored twice, which costs space, not data.
#[allow(clippy::too_many_arguments)]
async fn select_servers(
    grid: &Grid,
    storage_index: StorageIndex,
    allocated_size: u64,
    params: &EncodingParams,
    lease_secret: &Secret,
    upload_secret: &[u8; 32],
    timeout: Duration,
    known_existing: &BTreeMap<usize, BTreeSet<ShareNumber>>,
) -> Result<Selection, UploadError> {
    let candidates: Vec<usize> = grid
        .permuted(&storage_index)
        .into_iter()
        .take(2 * usize::from(params.total))
        .collect();
    let mut asks = tokio::task::JoinSet::new();
    for &index in &candidates {
        let storage = grid.servers()[index].storage.clone();
        let secret = lease_secret.clone();
        asks.spawn(async move {
            (
                index,
                ask_server(storage, storage_index, allocated_size, secret, timeout).await,
            )
        });
    }
    let mut answers = BTreeMap::new();
    let mut unusable: BTreeMap<usize, String> = BTreeMap::new();
    // Once happiness is possible among the servers that answered, the rest get three times as long again (at
    // least QUERY_GRACE): a silent server is then left out instead of holding the upload for the whole timeout.
    let started = tokio::time::Instant::now();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut waiting: BTreeSet<usize> = candidates.iter().copied().collect();
    loop {
        let Some(next) = crate::grid::before_deadline(deadline, asks.join_next()).await else {
            break;
        };
        let Some(joined) = next else { break };
        let (index, answer) =
            joined.map_err(|e| UploadError::Failed(format!("query task: {e}")))?;
        waiting.remove(&index);
        match answer {
            Ok(answer) => {
                answers.insert(index, answer);
            }
            Err(reason) => {
                unusable.insert(index, reason);
            }
        }
        if deadline.is_none() && answers.len() >= usize::from(params.happy).max(1) {
            deadline = Some(tokio::time::Instant::now() + (started.elapsed() * 3).max(QUERY_GRACE));
        }
    }
    for index in waiting {
        unusable.insert(
            index,
            format!(
                "{}: no answer within {:.1} s, when the others had answered; left out",
                grid.servers()[index].name(),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    let permuted: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| answers.contains_key(i))
        .collect();
    let mut writable: BTreeSet<usize> = BTreeSet::new();
    for (&index, answer) in &answers {
        if answer.max_share_size >= allocated_size {
            writable.insert(index);
        } else {
            unusable.insert(
                index,
                format!(
                    "{}: too full: takes shares of at most {} bytes, this one needs {allocated_size}",
                    grid.servers()[index].name(),
                    answer.max_share_size
                ),
            );
        }
    }
    let mut existing: BTreeMap<usize, BTreeSet<ShareNumber>> = answers
        .iter()
        .filter(|(_, a)| !a.existing.is_empty())
        .map(|(&i, a)| (i, a.existing.clone()))
        .collect();
    for (&server, shares) in known_existing {
        existing.entry(server).or_default().extend(shares);
    }
    let mut allocated: BTreeMap<ShareNumber, usize> = BTreeMap::new();

    // Each round either places something new or drops a server that refused, so this ends.
    loop {
        let held = with_allocations(&existing, &allocated);
        let wanted = place_shares(params.total, &permuted, &writable, &held);
        let wanted: BTreeMap<usize, BTreeSet<ShareNumber>> =
            wanted.into_iter().filter(|(_, s)| !s.is_empty()).collect();
        if wanted.is_empty() {
            break;
        }
        let mut allocations = tokio::task::JoinSet::new();
        for (server, shares) in wanted {
            let storage = grid.servers()[server].storage.clone();
            let lease = answers[&server].lease;
            let secret = *upload_secret;
            allocations.spawn(async move {
                let asked = shares.clone();
                let result = tokio::time::timeout(
                    timeout,
                    storage.allocate_buckets(
                        storage_index,
                        &shares,
                        allocated_size,
                        lease,
                        &secret,
                    ),
                )
                .await;
                (server, asked, result)
            });
        }
        let mut refused_any = false;
        while let Some(joined) = allocations.join_next().await {
            let (server, asked, result) =
                joined.map_err(|e| UploadError::Failed(format!("allocation task: {e}")))?;
            let allocation = match result {
                Ok(Ok(allocation)) => allocation,
                Ok(Err(e)) => {
                    writable.remove(&server);
                    unusable.insert(server, e.to_string());
                    refused_any = true;
                    continue;
                }
                Err(_) => {
                    writable.remove(&server);
                    unusable.insert(
                        server,
                        format!(
                            "{}: no answer to the allocation in time",
                            grid.servers()[server].name()
                        ),
                    );
                    refused_any = true;
                    continue;
                }
            };
            if !allocation.already_have.is_empty() {
                existing
                    .entry(server)
                    .or_default()
                    .extend(&allocation.already_have);
            }
            for &share in &allocation.allocated {
                allocated.entry(share).or_insert(server);
            }
            let refused: Vec<_> = asked
                .iter()
                .filter(|s| {
                    !allocation.allocated.contains(s) && !allocation.already_have.contains(s)
                })
                .collect();
            if !refused.is_empty() {
                writable.remove(&server);
                unusable.insert(
                    server,
                    format!(
                        "{}: refused shares {refused:?} (full, or another upload of them is under way)",
                        grid.servers()[server].name()
                    ),
                );
                refused_any = true;
            }
        }
        if !refused_any {
            break;
        }
    }

    let held = with_allocations(&existing, &allocated);
    let happiness = servers_of_happiness(&held);
    if happiness < usize::from(params.happy) {
        abort_buckets(grid, storage_index, upload_secret, &allocated).await;
        let reasons: Vec<&str> = unusable.values().map(String::as_str).collect();
        let not_asked = grid.len().saturating_sub(candidates.len());
        return Err(UploadError::Unhappy(format!(
            "cannot place shares with happiness {happy} (any {needed} of {happy} distinct servers rebuild the \
             file): {usable} of {asked} servers asked could hold shares, happiness reached {happiness}{extra}. \
             Unusable: {reasons}. ({tahoe})",
            happy = params.happy,
            needed = params.needed,
            usable = held.len(),
            asked = candidates.len(),
            extra = if not_asked > 0 {
                format!(" ({not_asked} more servers beyond the first 2N were not asked)")
            } else {
                String::new()
            },
            reasons = if reasons.is_empty() {
                "none; there are too few servers".to_owned()
            } else {
                reasons.join("; ")
            },
            tahoe = failure_message(held.len(), params.needed, params.happy, happiness),
        )));
    }
    Ok(Selection {
        allocated,
        existing,
    })
}

async fn abort_buckets(
    grid: &Grid,
    storage_index: StorageIndex,
    upload_secret: &[u8; 32],
    buckets: &BTreeMap<ShareNumber, usize>,
) {
    let mut aborts = tokio::task::JoinSet::new();
    for (&share, &server) in buckets {
        let storage = grid.servers()[server].storage.clone();
        let secret = *upload_secret;
        aborts.spawn(async move { abort_bucket(&*storage, storage_index, share, &secret).await });
    }
    while aborts.join_next().await.is_some() {}
}

/// Abandons one unfinished share, best effort: a server that cannot be reached drops the upload itself after
/// its idle timeout.
async fn abort_bucket(
    storage: &dyn StorageServer,
    storage_index: StorageIndex,
    share: ShareNumber,
    upload_secret: &[u8; 32],
) {
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        storage.abort_upload(storage_index, share, upload_secret),
    )
    .await;
}

/// What each server holds: `existing` plus the buckets allocated for this upload.
fn with_allocations(
    existing: &BTreeMap<usize, BTreeSet<ShareNumber>>,
    allocated: &BTreeMap<ShareNumber, usize>,
) -> BTreeMap<usize, BTreeSet<ShareNumber>> {
    let mut held = existing.clone();
    for (&share, &server) in allocated {
        held.entry(server).or_default().insert(share);
    }
    held
}

/// One segment, encrypted, coded and hashed.
struct EncodedSegment {
    /// The padded crypttext: the k data blocks back to back.
    crypttext: Bytes,
    /// Bytes of real crypttext before the padding.
    length: usize,
    /// Blocks k..N.
    check: Bytes,
    block_size: usize,
    crypttext_hash: Hash,
    /// The check blocks' hashes, shares k..N (the collector hashes the data blocks).
    check_hashes: Vec<Hash>,
}

impl EncodedSegment {
    fn block(&self, share: usize, needed: usize) -> Bytes {
        let (buffer, index) = if share < needed {
            (&self.crypttext, share)
        } else {
            (&self.check, share - needed)
        };
        buffer.slice(index * self.block_size..(index + 1) * self.block_size)
    }
}

fn encode_segment(
    file: &File,
    key: &Key,
    geometry: &Geometry,
    codec: &Codec,
    segnum: u64,
) -> Result<EncodedSegment, UploadError> {
    let range = geometry.segment_range(segnum);
    let length = (range.end - range.start) as usize;
    let block_size = geometry.segment_block_size(segnum) as usize;
    let needed = codec.k();
    let total = codec.m();
    let mut crypttext = vec![0u8; block_size * needed];
    file.read_exact_at(&mut crypttext[..length], range.start)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                UploadError::Read(std::io::Error::other(
                    "the file shrank while it was being uploaded",
                ))
            } else {
                UploadError::Read(e)
            }
        })?;
    let mut aes = AesCtr::new_128(key);
    aes.seek(range.start);
    aes.apply(&mut crypttext[..length]);
    let mut check = vec![0u8; block_size * (total - needed)];
    {
        let data: Vec<&[u8]> = crypttext.chunks_exact(block_size.max(1)).collect();
        let mut outputs: Vec<&mut [u8]> = check.chunks_exact_mut(block_size.max(1)).collect();
        let shares: Vec<u16> = (needed as u16..total as u16).collect();
        if block_size > 0 {
            codec
                .encode(&data, &shares, &mut outputs)
                .map_err(|e| UploadError::Failed(format!("erasure coding: {e}")))?;
        }
    }
    let (crypttext_hash, check_hashes) =
        hash_segment(&crypttext, length, &check, block_size.max(1));
    Ok(EncodedSegment {
        crypttext: Bytes::from(crypttext),
        length,
        check: Bytes::from(check),
        block_size,
        crypttext_hash,
        check_hashes,
    })
}

/// The pieces of crypttext a segment's data blocks hold: each block without the padding of the last one.
fn segment_pieces(crypttext: &[u8], length: usize, block_size: usize) -> Vec<&[u8]> {
    crypttext
        .chunks_exact(block_size)
        .enumerate()
        .map(|(j, block)| &block[..length.saturating_sub(j * block_size).min(block_size)])
        .collect()
}

/// On an encoder thread: the crypttext segment's hash and the check blocks' hashes, two hashes at a time (each
/// piece of the segment beside a check block, then the other check blocks in pairs). The data blocks' hashes are
/// the collector's, beside the whole crypttext's hash: so every hash but the convergent key's runs in a pair.
fn hash_segment(
    crypttext: &[u8],
    length: usize,
    check: &[u8],
    block_size: usize,
) -> (Hash, Vec<Hash>) {
    let pieces = segment_pieces(crypttext, length, block_size);
    let checks: Vec<&[u8]> = check.chunks_exact(block_size).collect();
    let mut segment = hashutil::crypttext_segment_hasher();
    let paired = pieces.len().min(checks.len());
    let mut check_hashes = Vec::with_capacity(checks.len());
    for (piece, block) in pieces.iter().zip(&checks) {
        let mut hasher = hashutil::block_hasher();
        hashutil::Sha256d::update_pair(&mut segment, piece, &mut hasher, block);
        check_hashes.push(hasher.finalize());
    }
    for piece in &pieces[paired..] {
        segment.update(piece);
    }
    check_hashes.extend(hashutil::block_hashes(checks[paired..].iter().copied()));
    (segment.finalize(), check_hashes)
}

/// On the collector, in segment order: feeds the segment to the whole crypttext's hash, beside its data blocks'
/// hashes (the same bytes, with the padding), and returns those.
fn hash_data_blocks(whole: &mut hashutil::Sha256d, segment: &EncodedSegment) -> Vec<Hash> {
    let block_size = segment.block_size.max(1);
    let pieces = segment_pieces(&segment.crypttext, segment.length, block_size);
    segment
        .crypttext
        .chunks_exact(block_size)
        .zip(pieces)
        .map(|(block, piece)| {
            let mut hasher = hashutil::block_hasher();
            hashutil::Sha256d::update_pair(whole, piece, &mut hasher, block);
            hasher.finalize()
        })
        .collect()
}

/// What comes out of the encoder, in segment order.
enum Encoded {
    /// A segment, with its data blocks' hashes (shares 0..k).
    Segment(EncodedSegment, Vec<Hash>),
    /// Every segment has been sent; this is the SHA-256d of the whole crypttext.
    Done(Hash),
    Failed(UploadError),
}

/// Starts the encoder threads and the collector that puts their segments in order; returns the ordered stream.
fn start_encoder(
    file: Arc<File>,
    key: Key,
    geometry: Geometry,
    threads: usize,
) -> Result<tokio::sync::mpsc::Receiver<Encoded>, UploadError> {
    let codec = Arc::new(
        Codec::new(usize::from(geometry.needed), usize::from(geometry.total))
            .map_err(|e| UploadError::Failed(e.to_string()))?,
    );
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    }
    .clamp(1, 64);
    let mut lanes = Vec::with_capacity(threads);
    for lane in 0..threads {
        // One finished segment of slack per thread keeps every core busy; segments are up to N/k MiB each, so
        // more would cost memory for nothing.
        let (send, receive) = mpsc::sync_channel::<Result<EncodedSegment, UploadError>>(1);
        lanes.push(receive);
        let file = file.clone();
        let codec = codec.clone();
        std::thread::Builder::new()
            .name(format!("encode-{lane}"))
            .spawn(move || {
                let mut segnum = lane as u64;
                while segnum < geometry.num_segments {
                    let result = encode_segment(&file, &key, &geometry, &codec, segnum);
                    let failed = result.is_err();
                    if send.send(result).is_err() || failed {
                        return;
                    }
                    segnum += threads as u64;
                }
            })
            .map_err(|e| UploadError::Failed(format!("cannot start an encoder thread: {e}")))?;
    }
    let (ordered, receiver) = tokio::sync::mpsc::channel(1);
    std::thread::Builder::new()
        .name("encode-collect".into())
        .spawn(move || {
            let mut whole = hashutil::crypttext_hasher();
            for segnum in 0..geometry.num_segments {
                let lane = &lanes[(segnum % threads as u64) as usize];
                let message = match lane.recv() {
                    Ok(Ok(segment)) => {
                        let data_hashes = hash_data_blocks(&mut whole, &segment);
                        Encoded::Segment(segment, data_hashes)
                    }
                    Ok(Err(e)) => Encoded::Failed(e),
                    Err(_) => {
                        Encoded::Failed(UploadError::Failed("an encoder thread stopped".into()))
                    }
                };
                let stop = matches!(message, Encoded::Failed(_));
                if ordered.blocking_send(message).is_err() || stop {
                    return;
                }
            }
            let _ = ordered.blocking_send(Encoded::Done(whole.finalize()));
        })
        .map_err(|e| UploadError::Failed(format!("cannot start the collector thread: {e}")))?;
    Ok(receiver)
}

/// Bytes of the URI extension block of a file of this geometry. Tahoe sizes the allocation from a UEB with
/// zeroed hashes (`get_uri_extension_size`); the real hashes are as long.
fn ueb_size(geometry: &Geometry) -> u64 {
    let zero = [0u8; 32];
    geometry.uri_extension(&zero, &zero, &zero).pack().len() as u64
}

/// One share being written: bytes not yet sent, and the write in flight.
struct ShareWriter {
    share: ShareNumber,
    server: usize,
    /// Share offset of the first queued byte.
    offset: u64,
    /// Bytes to write next, in order.
    queue: Vec<Bytes>,
    pending: Option<JoinHandle<Result<bool, StorageError>>>,
}

/// The writing half of an upload.
struct Push<'g> {
    grid: &'g Grid,
    storage_index: StorageIndex,
    upload_secret: [u8; 32],
    happy: u16,
    needed: u16,
    preexisting: BTreeMap<usize, BTreeSet<ShareNumber>>,
    writers: Vec<ShareWriter>,
    /// Shares given up on, and why.
    lost: Vec<(ShareNumber, String)>,
    chunk: usize,
    write_timeout: Duration,
    /// The URI extension block hash the shares must have (a repair's), checked before any share is closed.
    expected_ueb_hash: Option<Hash>,
}

impl Push<'_> {
    async fn run(
        &mut self,
        file: Arc<File>,
        key: Key,
        geometry: Geometry,
        layout: &ShareLayout,
        options: &UploadOptions,
    ) -> Result<Hash, UploadError> {
        let mut encoded = start_encoder(file, key, geometry, options.threads)?;
        let needed = usize::from(geometry.needed);
        let total = usize::from(geometry.total);
        let mut crypttext_hashes = Vec::with_capacity(geometry.num_segments as usize);
        let mut block_hashes: Vec<Vec<Hash>> =
            vec![Vec::with_capacity(geometry.num_segments as usize); total];
        let mut sent = 0u64;
        let crypttext_hash = loop {
            match encoded.recv().await {
                Some(Encoded::Segment(segment, data_hashes)) => {
                    crypttext_hashes.push(segment.crypttext_hash);
                    for (share, hash) in data_hashes.iter().chain(&segment.check_hashes).enumerate()
                    {
                        block_hashes[share].push(*hash);
                    }
                    for i in 0..self.writers.len() {
                        let share = usize::from(self.writers[i].share);
                        let block = segment.block(share, needed);
                        self.writers[i].queue.push(block);
                    }
                    self.flush(false).await?;
                    sent += segment.length as u64;
                    if let Some(progress) = &options.progress {
                        progress(sent);
                    }
                }
                Some(Encoded::Done(hash)) => break hash,
                Some(Encoded::Failed(e)) => return Err(e),
                None => return Err(UploadError::Failed("the encoder stopped".into())),
            }
        };

        let crypttext_tree = HashTree::new(&crypttext_hashes);
        let block_trees: Vec<HashTree> = block_hashes.iter().map(|h| HashTree::new(h)).collect();
        let share_roots: Vec<Hash> = block_trees.iter().map(|t| *t.root()).collect();
        let share_tree = HashTree::new(&share_roots);
        let ueb = geometry
            .uri_extension(&crypttext_hash, crypttext_tree.root(), share_tree.root())
            .pack();
        debug_assert_eq!(ueb.len() as u64, ueb_size(&geometry));
        let ueb_hash = hashutil::uri_extension_hash(&ueb);
        if self
            .expected_ueb_hash
            .is_some_and(|expected| expected != ueb_hash)
        {
            return Err(UploadError::Failed(
                "the shares encoded again differ from the file's (their URI extension block does not hash to \
                 the cap's): every new share was abandoned"
                    .into(),
            ));
        }

        let tree_bytes = (layout.crypttext_hash_tree - layout.plaintext_hash_tree) as usize;
        for writer in &mut self.writers {
            let share = usize::from(writer.share);
            // The unused plaintext hash tree is written as zeros, as Tahoe does, so the share is complete.
            let mut buffer = vec![0u8; tree_bytes];
            buffer.extend(crypttext_tree.nodes().iter().flatten());
            buffer.extend(block_trees[share].nodes().iter().flatten());
            let needed_hashes = share_tree
                .needed_hashes(share, true)
                .map_err(|e| UploadError::Failed(e.to_string()))?;
            let pairs: Vec<(u16, Hash)> = needed_hashes
                .into_iter()
                .map(|i| (i as u16, share_tree.nodes()[i]))
                .collect();
            buffer.extend(encode_share_hashes(&pairs));
            if layout.version == 1 {
                buffer.extend((ueb.len() as u32).to_be_bytes());
            } else {
                buffer.extend((ueb.len() as u64).to_be_bytes());
            }
            buffer.extend_from_slice(&ueb);
            writer.queue.push(Bytes::from(buffer));
        }
        self.flush(true).await?;
        Ok(ueb_hash)
    }

    /// Sends every queue that holds a write chunk (all of them, at the end), after the share's previous write
    /// has landed, and waits for the last writes when `finish`.
    async fn flush(&mut self, finish: bool) -> Result<(), UploadError> {
        let mut i = 0;
        while i < self.writers.len() {
            let queued: usize = self.writers[i].queue.iter().map(Bytes::len).sum();
            let ready = finish || queued >= self.chunk;
            if ready {
                if let Err(reason) = self.settle(i).await {
                    self.lose(i, reason).await?;
                    continue;
                }
                let writer = &mut self.writers[i];
                if queued > 0 {
                    let data = std::mem::take(&mut writer.queue);
                    let offset = writer.offset;
                    writer.offset += queued as u64;
                    let storage = self.grid.servers()[writer.server].storage.clone();
                    let (si, share, secret) =
                        (self.storage_index, writer.share, self.upload_secret);
                    let timeout = self.write_timeout;
                    writer.pending = Some(tokio::spawn(async move {
                        let write = storage.write_share_pieces(si, share, &secret, offset, data);
                        match tokio::time::timeout(timeout, write).await {
                            Ok(result) => result.map(|progress| progress.complete),
                            Err(_) => Err(StorageError::Timeout {
                                server: storage.name().to_owned(),
                                what: "share write",
                                seconds: timeout.as_secs_f64(),
                            }),
                        }
                    }));
                }
            }
            i += 1;
        }
        if finish {
            let mut i = 0;
            while i < self.writers.len() {
                match self.settle(i).await {
                    Ok(Some(true)) => i += 1,
                    Ok(_) => {
                        let reason = format!(
                            "{}: the server says the share is still incomplete",
                            self.server_name(i)
                        );
                        self.lose(i, reason).await?
                    }
                    Err(reason) => self.lose(i, reason).await?,
                }
            }
        }
        Ok(())
    }

    /// Waits for the write in flight on writer `i`: `Some(complete)` if there was one.
    async fn settle(&mut self, i: usize) -> Result<Option<bool>, String> {
        match self.writers[i].pending.take() {
            None => Ok(None),
            Some(handle) => match handle.await {
                Ok(Ok(complete)) => Ok(Some(complete)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("{}: write task: {e}", self.server_name(i))),
            },
        }
    }

    fn server_name(&self, i: usize) -> &str {
        self.grid.servers()[self.writers[i].server].name()
    }

    /// Gives up on writer `i`'s share; fails the upload if happiness no longer holds.
    async fn lose(&mut self, i: usize, reason: String) -> Result<(), UploadError> {
        let writer = self.writers.remove(i);
        let storage = &self.grid.servers()[writer.server].storage;
        // Waited for, so a failed upload leaves nothing behind even if it ends right after this.
        abort_bucket(
            &**storage,
            self.storage_index,
            writer.share,
            &self.upload_secret,
        )
        .await;
        self.lost.push((writer.share, reason));
        let held = self.held();
        let happiness = servers_of_happiness(&held);
        if happiness < usize::from(self.happy) {
            let lost: Vec<String> = self
                .lost
                .iter()
                .map(|(share, why)| format!("share {share}: {why}"))
                .collect();
            return Err(UploadError::Unhappy(format!(
                "servers failed during the upload and happiness fell to {happiness}, below {happy} ({}): {}",
                failure_message(held.len(), self.needed, self.happy, happiness),
                lost.join("; "),
                happy = self.happy,
            )));
        }
        Ok(())
    }

    /// Shares each server holds or is being given.
    fn held(&self) -> BTreeMap<usize, BTreeSet<ShareNumber>> {
        let mut held = self.preexisting.clone();
        for writer in &self.writers {
            held.entry(writer.server).or_default().insert(writer.share);
        }
        held
    }

    /// Stops every write and aborts every bucket still open.
    async fn abort_all(&mut self) {
        let mut buckets = BTreeMap::new();
        for writer in &mut self.writers {
            if let Some(pending) = writer.pending.take() {
                pending.abort();
                let _ = pending.await;
            }
            buckets.insert(writer.share, writer.server);
        }
        self.writers.clear();
        abort_buckets(self.grid, self.storage_index, &self.upload_secret, &buckets).await;
    }
}
