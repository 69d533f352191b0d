//! Mutable files, SDMF and MDMF, byte-compatible with tahoe-lafs 1.20 (`allmydata/mutable/`): creating them,
//! reading the newest recoverable version, and replacing or modifying their contents with test-and-set writes
//! that detect, and recover from, writers who did not coordinate with us.
//!
//! `layout` owns the share bytes, `servermap` finds which server holds which version, `retrieve` reads a version
//! and `publish` writes one. [`MutableFile`] ties them together for callers such as directories.

pub mod check;
pub mod floor;
pub mod layout;
pub mod publish;
pub mod retrieve;
pub mod servermap;

use std::sync::Arc;

pub use floor::SeqnumFloors;
use std::time::Duration;

use tokio::sync::OnceCell;

use thiserror::Error;

use crate::cap::{MutableAccess, MutableCap, MutableFormat};
use crate::crypto::aes::AesCtr;
use crate::crypto::hashutil::{self, Hash, Key};
use crate::crypto::rsa::{KeyPool, SigningKey};
use crate::grid::client::Grid;
use crate::storage::StorageIndex;
use servermap::{ServerMap, share_bytes};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MutableError {
    #[error("mutable file is not recoverable: {0}")]
    Unrecoverable(String),
    #[error("mutable file has no shares on any reachable server{0}")]
    NotFound(String),
    #[error(
        "uncoordinated write: another writer changed the file while we were publishing ({0}); the change was not applied"
    )]
    UncoordinatedWrite(String),
    #[error("not enough servers to publish: {0}")]
    NotEnoughServers(String),
    #[error("this cap cannot write: {0}")]
    ReadOnly(String),
    #[error("bad parameters: {0}")]
    Parameters(String),
    #[error(
        "rollback: the servers that answered offer version {offered}, but version {seen} was seen before; a \
         change now would drop what the newer version holds, so none is made (servers holding the newer version \
         may be out of reach, or a server may be withholding it)"
    )]
    Rollback { offered: u64, seen: u64 },
    #[error("{0}")]
    Failed(String),
}

/// How a version is encoded: chosen anew at every publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutableParams {
    pub format: MutableFormat,
    pub needed: u8,
    /// How many distinct servers must end up holding shares for a publish to count.
    pub happy: u8,
    pub total: u8,
}

impl MutableParams {
    /// Tahoe's client defaults: SDMF, 3-of-10, happy 7.
    pub const fn default_for(format: MutableFormat) -> MutableParams {
        MutableParams {
            format,
            needed: 3,
            happy: 7,
            total: 10,
        }
    }

    /// k = 1 with one full share on each of `servers` servers: every server can serve the whole file alone.
    pub fn one_share_per_server(format: MutableFormat, servers: usize) -> MutableParams {
        let total = servers.clamp(1, 255) as u8;
        MutableParams {
            format,
            needed: 1,
            happy: total,
            total,
        }
    }

    pub fn validate(&self) -> Result<(), MutableError> {
        if self.needed == 0 || self.needed > self.total || self.happy > self.total {
            return Err(MutableError::Parameters(format!(
                "need 1 ≤ k ≤ N and happy ≤ N, got k = {}, happy = {}, N = {}",
                self.needed, self.happy, self.total
            )));
        }
        Ok(())
    }
}

/// The keys and identifiers a cap gives.
#[derive(Clone, Copy)]
pub struct FileKeys {
    pub storage_index: StorageIndex,
    pub fingerprint: Hash,
    pub readkey: Option<Key>,
    pub writekey: Option<Key>,
}

impl std::fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileKeys({})", self.storage_index)
    }
}

impl FileKeys {
    pub fn from_cap(cap: &MutableCap) -> FileKeys {
        FileKeys {
            storage_index: StorageIndex(cap.storage_index()),
            fingerprint: cap.fingerprint,
            readkey: cap.readkey(),
            writekey: cap.writekey(),
        }
    }
}

/// Timeouts and secrets for mutable operations.
#[derive(Clone)]
pub struct MutableOptions {
    /// The client's lease secret (Tahoe's `private/secret`), from which per-server lease secrets derive.
    pub lease_secret: Vec<u8>,
    pub timeout: Duration,
    /// Attempts of a modify before an uncoordinated write is reported.
    pub max_attempts: u32,
    /// Keys made ahead of need for new files; without it (or when it is empty) a key is made on the spot.
    pub key_pool: Option<KeyPool>,
    /// Servers that must hold shares of a new version of an existing file (capped at its N): the client's
    /// happiness, as for uploads. Tahoe's default is 7.
    pub happy: u8,
    /// The newest version seen of each file: a read that is offered an older one warns, a change refuses.
    pub floors: Option<Arc<SeqnumFloors>>,
}

impl MutableOptions {
    pub fn new(lease_secret: Vec<u8>) -> MutableOptions {
        MutableOptions {
            lease_secret,
            timeout: Duration::from_secs(30),
            max_attempts: 8,
            key_pool: None,
            happy: MutableParams::default_for(MutableFormat::Sdmf).happy,
            floors: None,
        }
    }
}

impl std::fmt::Debug for MutableOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MutableOptions(timeout {:?})", self.timeout)
    }
}

/// One version as read: its contents, sequence number and encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub contents: Vec<u8>,
    pub seqnum: u64,
    pub params: MutableParams,
}

/// A mutable file on a grid, through its cap.
#[derive(Clone)]
pub struct MutableFile {
    grid: Grid,
    cap: MutableCap,
    keys: FileKeys,
    options: MutableOptions,
    /// The private key, once found in a share (or made): decrypting and parsing it again for every change of a
    /// busy directory would be wasted work.
    signing_key: Arc<OnceCell<SigningKey>>,
}

fn encrypt_private_key(writekey: &Key, der: &[u8]) -> Vec<u8> {
    let mut out = der.to_vec();
    AesCtr::new_128(writekey).apply(&mut out);
    out
}

impl MutableFile {
    pub fn open(grid: Grid, cap: MutableCap, options: MutableOptions) -> MutableFile {
        MutableFile {
            grid,
            keys: FileKeys::from_cap(&cap),
            cap,
            options,
            signing_key: Arc::new(OnceCell::new()),
        }
    }

    pub fn cap(&self) -> &MutableCap {
        &self.cap
    }

    /// Makes a new file holding `contents`: a fresh RSA key (made on a blocking thread), then version 1.
    pub async fn create(
        grid: Grid,
        contents: &[u8],
        params: MutableParams,
        options: MutableOptions,
    ) -> Result<MutableFile, MutableError> {
        MutableFile::create_with(
            grid,
            |_| Ok::<_, MutableError>(contents.to_vec()),
            params,
            options,
        )
        .await
    }

    /// Like [`MutableFile::create`], with contents made from the new file's writekey (as a directory encrypts its
    /// children's writecaps under it), all in the first version.
    pub async fn create_with<F, E>(
        grid: Grid,
        contents_for: F,
        params: MutableParams,
        options: MutableOptions,
    ) -> Result<MutableFile, E>
    where
        F: FnOnce(&Key) -> Result<Vec<u8>, E>,
        E: From<MutableError>,
    {
        params.validate()?;
        let signing_key = match options.key_pool.as_ref().and_then(KeyPool::take) {
            Some(key) => key,
            None => tokio::task::spawn_blocking(SigningKey::generate)
                .await
                .map_err(|e| MutableError::Failed(format!("key generation: {e}")))?
                .map_err(|e| MutableError::Failed(e.to_string()))?,
        };
        let writekey = hashutil::ssk_writekey_hash(signing_key.der());
        let cap = MutableCap {
            format: params.format,
            access: MutableAccess::Write { writekey },
            fingerprint: hashutil::ssk_pubkey_fingerprint_hash(signing_key.verifying_key().der()),
        };
        let contents = contents_for(&writekey)?;
        let file = MutableFile::open(grid, cap, options);
        let _ = file.signing_key.set(signing_key.clone());
        // A fresh key's storage index is new to every server, so there is nothing to map: each share must not
        // exist yet.
        let map = ServerMap::default();
        file.publish_version(&map, &signing_key, &contents, &params, 1)
            .await?;
        Ok(file)
    }

    /// The seqnum seen before of this file, if it is above `seqnum`.
    fn floor_above(&self, seqnum: u64) -> Option<u64> {
        let floors = self.options.floors.as_ref()?;
        floors
            .get(&self.keys.storage_index.0)
            .filter(|&seen| seen > seqnum)
    }

    fn note_seqnum(&self, seqnum: u64) {
        if let Some(floors) = &self.options.floors {
            floors.record(self.keys.storage_index.0, seqnum);
        }
    }

    /// The servermap: every server's shares of this file, checked.
    pub async fn servermap(&self) -> Result<ServerMap, MutableError> {
        servermap::update(
            &self.grid,
            &self.keys,
            self.options.timeout,
            servermap::Mode::Read,
        )
        .await
    }

    /// The servermap of every server, each waited for up to the timeout: for repair, which must see all.
    pub async fn full_servermap(&self) -> Result<ServerMap, MutableError> {
        servermap::update(
            &self.grid,
            &self.keys,
            self.options.timeout,
            servermap::Mode::Check,
        )
        .await
    }

    /// Reads the newest recoverable version. A version rewritten by a writer while it was being read (a busy
    /// directory) is read again from a fresh servermap, a few times.
    pub async fn read(&self) -> Result<Version, MutableError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let map = self.servermap().await?;
            match self.read_from(&map).await {
                Err(MutableError::Unrecoverable(_)) if attempts < 4 => continue,
                result => return result,
            }
        }
    }

    /// Reads the newest recoverable version of `map` (from [`MutableFile::servermap`]): for callers that also
    /// want to know which server offered which version.
    pub async fn read_from(&self, map: &ServerMap) -> Result<Version, MutableError> {
        let (prefix, records) = map.best_recoverable().ok_or_else(|| self.not_found(map))?;
        if let Some(seen) = self.floor_above(prefix.seqnum) {
            tracing::warn!(
                "tahoe-mount: warning: {}: the servers that answered offer version {}, but version {seen} was \
                 seen before; showing the older one (changes to it are refused)",
                self.keys.storage_index,
                prefix.seqnum
            );
        }
        let contents = retrieve::retrieve(
            &self.grid,
            &self.keys,
            prefix,
            &records,
            self.options.timeout,
        )
        .await?;
        self.note_seqnum(prefix.seqnum);
        Ok(Version {
            contents,
            seqnum: prefix.seqnum,
            params: MutableParams {
                format: prefix.format,
                needed: prefix.needed,
                happy: prefix.needed,
                total: prefix.total,
            },
        })
    }

    fn not_found(&self, map: &ServerMap) -> MutableError {
        let mut detail = String::new();
        if !map.shares.is_empty() {
            detail.push_str(&format!(
                " (found {} shares, not enough of any one version)",
                map.shares.len()
            ));
        }
        for bad in &map.bad {
            detail.push_str(&format!(
                "; bad share {} on {}: {}",
                bad.share,
                self.grid.servers()[bad.server].name(),
                bad.reason
            ));
        }
        for (server, why) in &map.unreachable {
            detail.push_str(&format!("; {}: {why}", self.grid.servers()[*server].name()));
        }
        if map.shares.is_empty() {
            MutableError::NotFound(detail)
        } else {
            MutableError::Unrecoverable(format!("no version has enough good shares{detail}"))
        }
    }

    /// The private key, from a good share's encrypted copy, checked against the writekey and the public key.
    async fn find_signing_key(&self, map: &ServerMap) -> Result<SigningKey, MutableError> {
        let writekey = self
            .keys
            .writekey
            .ok_or_else(|| MutableError::ReadOnly("a read-only or verify cap".into()))?;
        let mut problems = Vec::new();
        for record in &map.shares {
            let encrypted = match share_bytes(
                &self.grid,
                self.keys.storage_index,
                record.server,
                record.share,
                &record.head,
                record.regions.enc_privkey.clone(),
                self.options.timeout,
            )
            .await
            {
                Ok(bytes) => bytes,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let der = encrypt_private_key(&writekey, &encrypted);
            if hashutil::ssk_writekey_hash(&der) != writekey {
                problems.push(format!(
                    "share {} on {}: the private key does not match the writecap",
                    record.share,
                    self.grid.servers()[record.server].name()
                ));
                continue;
            }
            match SigningKey::from_pkcs8_der(&der) {
                Ok(key)
                    if hashutil::ssk_pubkey_fingerprint_hash(key.verifying_key().der())
                        == self.keys.fingerprint =>
                {
                    return Ok(key);
                }
                Ok(_) => problems.push("private key's public half differs from the cap's".into()),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(MutableError::Unrecoverable(format!(
            "no share gave the private key{}{}",
            if problems.is_empty() { "" } else { ": " },
            problems.join("; ")
        )))
    }

    async fn publish_version(
        &self,
        map: &ServerMap,
        signing_key: &SigningKey,
        contents: &[u8],
        params: &MutableParams,
        seqnum: u64,
    ) -> Result<(), MutableError> {
        params.validate()?;
        let writekey = self
            .keys
            .writekey
            .ok_or_else(|| MutableError::ReadOnly("a read-only or verify cap".into()))?;
        let enc_privkey = encrypt_private_key(&writekey, signing_key.der());
        let keys = self.keys;
        let key = signing_key.clone();
        let contents = contents.to_vec();
        let params_copy = *params;
        let version = tokio::task::spawn_blocking(move || {
            publish::encode(&keys, &key, &enc_privkey, &contents, &params_copy, seqnum)
        })
        .await
        .map_err(|e| MutableError::Failed(format!("encoding: {e}")))??;
        publish::publish(
            &self.grid,
            &self.keys,
            &self.options.lease_secret,
            map,
            &version,
            usize::from(params.happy),
            self.options.timeout,
        )
        .await
    }

    /// Repairs the file (`allmydata/mutable/repairer.py`): publishes the best recoverable version's contents again
    /// as a new version, with every share placed and at least `happy` servers holding shares. As in Tahoe, this
    /// bumps the sequence number once; shares of older versions are overwritten. Refuses when a newer version
    /// exists that cannot be read, since publishing over it would lose it. `params`, if given, is the encoding
    /// to publish with (the grid service directory grows N with the grid). Returns the new seqnum.
    pub async fn repair(
        &self,
        happy: u8,
        params: Option<MutableParams>,
    ) -> Result<u64, MutableError> {
        if self.keys.writekey.is_none() {
            return Err(MutableError::ReadOnly(
                "repairing a mutable file needs its writecap".into(),
            ));
        }
        let map = self.full_servermap().await?;
        if let Some(newer) = check::newer_than_best(&map) {
            return Err(MutableError::Unrecoverable(format!(
                "version {newer} is newer than any readable version and has too few shares to read; repairing \
                 would overwrite it, so it was not done (more of its servers may come back)"
            )));
        }
        let current = self.read_from(&map).await?;
        let params = params.unwrap_or(MutableParams {
            happy: happy.min(current.params.total),
            ..current.params
        });
        let signing_key = self
            .signing_key
            .get_or_try_init(|| self.find_signing_key(&map))
            .await?;
        let seqnum = map.highest_seqnum() + 1;
        self.publish_version(&map, signing_key, &current.contents, &params, seqnum)
            .await?;
        Ok(seqnum)
    }

    /// Replaces the contents, whatever they were. `params` of `None` keeps the current encoding (or Tahoe's
    /// defaults for a file with no readable version).
    pub async fn overwrite(
        &self,
        contents: &[u8],
        params: Option<MutableParams>,
    ) -> Result<u64, MutableError> {
        let contents = contents.to_vec();
        self.modify(|_| Ok::<_, MutableError>(Some(contents.clone())), params)
            .await
    }

    /// Applies `change` to the newest version and publishes the result, retrying with backoff (and a fresh read)
    /// when another writer got in between. `change` gets the current contents and returns the new contents, or
    /// `None` to leave the file as it is. Returns the seqnum now current.
    pub async fn modify<F, E>(&self, mut change: F, params: Option<MutableParams>) -> Result<u64, E>
    where
        F: FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>,
        E: From<MutableError>,
    {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let map = servermap::update(
                &self.grid,
                &self.keys,
                self.options.timeout,
                servermap::Mode::Write,
            )
            .await?;
            // A file with no shares anywhere cannot be written: its private key lives only in its shares.
            let current = self.read_from(&map).await?;
            if let Some(seen) = self.floor_above(current.seqnum) {
                return Err(MutableError::Rollback {
                    offered: current.seqnum,
                    seen,
                }
                .into());
            }
            let new_contents = match change(&current.contents)? {
                Some(contents) => contents,
                None => return Ok(current.seqnum),
            };
            let params = params.unwrap_or(MutableParams {
                happy: self.options.happy.min(current.params.total),
                ..current.params
            });
            let signing_key = self
                .signing_key
                .get_or_try_init(|| self.find_signing_key(&map))
                .await?;
            let seqnum = map.highest_seqnum() + 1;
            match self
                .publish_version(&map, signing_key, &new_contents, &params, seqnum)
                .await
            {
                Ok(()) => {
                    self.note_seqnum(seqnum);
                    return Ok(seqnum);
                }
                // The next attempt re-reads; only the last failure is reported.
                Err(MutableError::UncoordinatedWrite(_)) if attempt < self.options.max_attempts => {
                    // Jittered exponential backoff, so two colliding writers stop colliding.
                    let mut jitter = [0u8; 2];
                    let _ = getrandom::fill(&mut jitter);
                    let factor = 0.5 + f64::from(u16::from_le_bytes(jitter)) / 65535.0;
                    tokio::time::sleep(delay.mul_f64(factor)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
