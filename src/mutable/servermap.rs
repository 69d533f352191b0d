//! The servermap of a mutable file (`allmydata/mutable/servermap.py`): which server holds which share of which
//! version. Every server is asked at once for its shares and the first bytes of each; each share's header is
//! parsed, its key checked against the cap's fingerprint and its signature verified. A share that fails is
//! recorded as bad with its checkstring, so a later publish can replace it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, stream};

use super::layout::{self, Regions, SignedPrefix};
use super::{FileKeys, MutableError};
use crate::crypto::hashutil;
use crate::crypto::rsa::VerifyingKey;
use crate::grid::client::Grid;
use crate::storage::{ShareNumber, StorageError, StorageIndex};

/// How much of each share the first query reads: the whole of a small directory, and for anything larger the
/// header, key and signature (MDMF keeps all of those, and the hash chain, in its first 2167 bytes).
pub const INITIAL_READ: u64 = 64 * 1024;
/// Share numbers are below N, which is at most 255.
const MAX_SHARES: ShareNumber = 255;
/// Shares of one file read at once from one server (a server holds one or two of a file's shares on a grid of
/// a few servers, and more only on a grid too small for N).
const READS_PER_SERVER: usize = 4;

/// One good share: where it is, the version it holds and the bytes read from its start.
#[derive(Debug, Clone)]
pub struct ShareRecord {
    /// Index into the grid's servers.
    pub server: usize,
    pub share: ShareNumber,
    pub prefix: SignedPrefix,
    pub regions: Regions,
    /// The share's first bytes (at least its header and signed part).
    pub head: Bytes,
}

/// A share that is there but unusable, and the checkstring it starts with (to test against when replacing it).
#[derive(Debug, Clone)]
pub struct BadShare {
    pub server: usize,
    pub share: ShareNumber,
    pub reason: String,
    pub checkstring: Bytes,
}

/// Orders versions: newest seqnum first, then by root hash and the rest of the signed prefix.
type VersionKey = (u64, [u8; 32], Vec<u8>);

#[derive(Debug, Default)]
pub struct ServerMap {
    pub shares: Vec<ShareRecord>,
    pub bad: Vec<BadShare>,
    /// Servers that answered (with or without shares).
    pub reachable: BTreeSet<usize>,
    /// Servers that did not, and why.
    pub unreachable: BTreeMap<usize, String>,
    /// The verified public key, once any share has shown one matching the cap.
    pub verifying_key: Option<VerifyingKey>,
}

impl ServerMap {
    /// The versions seen, each with its shares, newest first.
    pub fn versions(&self) -> Vec<(&SignedPrefix, Vec<&ShareRecord>)> {
        let mut by_version: BTreeMap<VersionKey, (&SignedPrefix, Vec<&ShareRecord>)> =
            BTreeMap::new();
        for record in &self.shares {
            let key = (
                record.prefix.seqnum,
                record.prefix.root_hash,
                record.prefix.signable(),
            );
            by_version
                .entry(key)
                .or_insert_with(|| (&record.prefix, Vec::new()))
                .1
                .push(record);
        }
        by_version.into_values().rev().collect()
    }

    /// The newest version that has at least k distinct shares, as Tahoe's `best_recoverable_version`.
    pub fn best_recoverable(&self) -> Option<(&SignedPrefix, Vec<&ShareRecord>)> {
        self.versions().into_iter().find(|(prefix, records)| {
            let distinct: BTreeSet<ShareNumber> = records.iter().map(|r| r.share).collect();
            distinct.len() >= usize::from(prefix.needed)
        })
    }

    pub fn highest_seqnum(&self) -> u64 {
        self.shares
            .iter()
            .map(|r| r.prefix.seqnum)
            .max()
            .unwrap_or(0)
    }

    /// Every (server, share) known to hold some share of this file, good or bad.
    pub fn known_locations(&self) -> BTreeSet<(usize, ShareNumber)> {
        self.shares
            .iter()
            .map(|r| (r.server, r.share))
            .chain(self.bad.iter().map(|b| (b.server, b.share)))
            .collect()
    }

    /// Every server known to hold some share of this file, good or bad, any version.
    pub fn holding_servers(&self) -> Vec<usize> {
        let servers: BTreeSet<usize> = self
            .known_locations()
            .into_iter()
            .map(|(server, _)| server)
            .collect();
        servers.into_iter().collect()
    }

    /// The checkstring currently at (server, share), if known.
    pub fn checkstring_at(&self, server: usize, share: ShareNumber) -> Option<Vec<u8>> {
        self.shares
            .iter()
            .find(|r| r.server == server && r.share == share)
            .map(|r| r.prefix.checkstring())
            .or_else(|| {
                self.bad
                    .iter()
                    .find(|b| b.server == server && b.share == share)
                    .map(|b| b.checkstring.to_vec())
            })
    }
}

/// Reads `range` of a share, from `head` when it covers it.
pub async fn share_bytes(
    grid: &Grid,
    storage_index: StorageIndex,
    record_server: usize,
    share: ShareNumber,
    head: &Bytes,
    range: std::ops::Range<u64>,
    timeout: Duration,
) -> Result<Bytes, StorageError> {
    if range.end <= head.len() as u64 {
        return Ok(head.slice(range.start as usize..range.end as usize));
    }
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    let server = &grid.servers()[record_server];
    let read = server.storage.read_mutable_share(
        storage_index,
        share,
        range.start,
        range.end - range.start,
    );
    let bytes = within(timeout, server.name(), "read mutable share", read).await?;
    if bytes.len() as u64 != range.end - range.start {
        return Err(StorageError::Protocol {
            server: server.name().to_owned(),
            problem: format!(
                "mutable share {storage_index}/{share}: asked for bytes {}..{}, got {}",
                range.start,
                range.end,
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Runs a storage call with a deadline; a late answer is a timeout error naming the server.
pub async fn within<T>(
    timeout: Duration,
    server: &str,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Timeout {
                server: server.to_owned(),
                what,
                seconds: timeout.as_secs_f64(),
            })
        })
}

/// What one server said.
enum ServerAnswer {
    Unreachable(String),
    Shares(Vec<(ShareNumber, Result<Bytes, StorageError>)>),
}

async fn ask_server(
    grid: &Grid,
    server: usize,
    storage_index: StorageIndex,
    timeout: Duration,
) -> ServerAnswer {
    let storage = &grid.servers()[server].storage;
    let name = grid.servers()[server].name();
    let listed = within(
        timeout,
        name,
        "list mutable shares",
        storage.list_mutable_shares(storage_index),
    );
    let shares = match listed.await {
        Ok(shares) => shares,
        Err(StorageError::NotFound { .. }) => BTreeSet::new(),
        Err(e) => return ServerAnswer::Unreachable(e.to_string()),
    };
    // N is one byte of the signed prefix, so no real share is numbered 255 or more: a server listing thousands
    // is not asked for them, and the rest are read a few at a time.
    let wanted: Vec<ShareNumber> = shares.into_iter().filter(|&s| s < MAX_SHARES).collect();
    let reads = wanted.into_iter().map(|share| async move {
        let read = storage.read_mutable_share(storage_index, share, 0, INITIAL_READ);
        (
            share,
            within(timeout, name, "read mutable share", read).await,
        )
    });
    ServerAnswer::Shares(
        stream::iter(reads)
            .buffered(READS_PER_SERVER)
            .collect()
            .await,
    )
}

/// How long a servermap update waits for servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For reading (Tahoe's `MODE_READ` stops early too): once a recoverable version is known, the servers
    /// still silent get as long again as that took (at least [`READ_GRACE`]), then are left out as unreachable.
    Read,
    /// For writing a new version: as [`Mode::Read`], but the rest get three times as long (at least
    /// [`WRITE_GRACE`]), because a busy server left out may hold a newer version that the write would not see.
    Write,
    /// For checking and repair: every server, each up to the timeout.
    Check,
}

/// The least a [`Mode::Read`] update waits for the rest of the servers once a recoverable version is known.
pub const READ_GRACE: Duration = Duration::from_millis(250);
/// The least a [`Mode::Write`] update waits for them.
pub const WRITE_GRACE: Duration = Duration::from_secs(3);

/// Asks every server in the grid about the file and checks what they hold, waiting as `mode` says.
pub async fn update(
    grid: &Grid,
    keys: &FileKeys,
    timeout: Duration,
    mode: Mode,
) -> Result<ServerMap, MutableError> {
    let storage_index = keys.storage_index;
    let order = grid.permuted(&storage_index);
    let started = tokio::time::Instant::now();
    let mut asks: FuturesUnordered<_> = order
        .iter()
        .map(|&server| async move {
            (
                server,
                ask_server(grid, server, storage_index, timeout).await,
            )
        })
        .collect();
    let mut map = ServerMap::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut waiting: BTreeSet<usize> = order.iter().copied().collect();
    loop {
        let Some(next) = crate::grid::before_deadline(deadline, asks.next()).await else {
            break;
        };
        let Some((server, answer)) = next else { break };
        waiting.remove(&server);
        match answer {
            ServerAnswer::Unreachable(why) => {
                map.unreachable.insert(server, why);
            }
            ServerAnswer::Shares(shares) => {
                map.reachable.insert(server);
                for (share, head) in shares {
                    match head {
                        Ok(head) => check_share(keys, &mut map, server, share, head),
                        Err(e) => {
                            map.unreachable.insert(server, e.to_string());
                        }
                    }
                }
            }
        }
        if deadline.is_none() && map.best_recoverable().is_some() {
            let grace = match mode {
                Mode::Read => Some(started.elapsed().max(READ_GRACE)),
                Mode::Write => Some((started.elapsed() * 3).max(WRITE_GRACE)),
                Mode::Check => None,
            };
            deadline = grace.map(|grace| tokio::time::Instant::now() + grace);
        }
    }
    for server in waiting {
        let name = grid.servers()[server].name();
        let why = format!(
            "{name}: no answer within {:.1} s, when the other servers had answered; left out",
            started.elapsed().as_secs_f64()
        );
        crate::daemon_log::write_line_now_and_then(
            name,
            Duration::from_secs(60),
            &format!("tahoe-mount: slow server: {why} (said at most once a minute)"),
        );
        map.unreachable.insert(server, why);
    }
    // Answers arrive in any order; readers prefer shares in permuted order.
    let rank: BTreeMap<usize, usize> = order.iter().enumerate().map(|(r, &s)| (s, r)).collect();
    map.shares.sort_by_key(|record| rank[&record.server]);
    map.bad.sort_by_key(|bad| rank[&bad.server]);
    Ok(map)
}

fn check_share(
    keys: &FileKeys,
    map: &mut ServerMap,
    server: usize,
    share: ShareNumber,
    head: Bytes,
) {
    // As many bytes as the longer (SDMF) checkstring: a test against them holds whatever the share's format.
    let checkstring = head.slice(..head.len().min(layout::SDMF_CHECKSTRING_LEN));
    match verify_head(keys, map, share, &head) {
        Ok((prefix, regions)) => map.shares.push(ShareRecord {
            server,
            share,
            prefix,
            regions,
            head,
        }),
        Err(reason) => map.bad.push(BadShare {
            server,
            share,
            reason,
            checkstring,
        }),
    }
}

/// Parses a share's header and checks its key against the cap's fingerprint and its signature.
fn verify_head(
    keys: &FileKeys,
    map: &mut ServerMap,
    share: ShareNumber,
    head: &Bytes,
) -> Result<(SignedPrefix, Regions), String> {
    let (prefix, regions) = layout::parse_header(head).map_err(|e| e.to_string())?;
    if usize::from(share) >= usize::from(prefix.total) {
        return Err(format!(
            "share number {share} is not below N = {}",
            prefix.total
        ));
    }
    // Tahoe's layouts put the key and signature within the first few KB; offsets are not signed, so a server
    // claiming them far away is refused rather than asked for gigabytes.
    let signed_end = regions.signed_part_end();
    if signed_end > INITIAL_READ {
        return Err(format!(
            "its key and signature end at byte {signed_end}, beyond any layout Tahoe writes"
        ));
    }
    if signed_end > head.len() as u64 {
        // The share is shorter than its offsets say.
        return Err(format!(
            "it is {} bytes long, but its key and signature end at byte {signed_end}",
            head.len()
        ));
    }
    let slice = |r: &std::ops::Range<u64>| &head[r.start as usize..r.end as usize];
    let key_der = slice(&regions.verification_key);
    let key = match &map.verifying_key {
        Some(known) if known.der() == key_der => known.clone(),
        _ => {
            if hashutil::ssk_pubkey_fingerprint_hash(key_der) != keys.fingerprint {
                return Err("its verification key does not match the cap's fingerprint".into());
            }
            let key = VerifyingKey::from_spki_der(key_der).map_err(|e| e.to_string())?;
            map.verifying_key = Some(key.clone());
            key
        }
    };
    key.verify(&prefix.signable(), slice(&regions.signature))
        .map_err(|_| format!("bad signature on version {}", prefix.seqnum))?;
    Ok((prefix, regions))
}
