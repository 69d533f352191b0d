//! Tahoe's tagged SHA-256d hashes (`allmydata/util/hashutil.py`): SHA-256 applied twice, with the tag written first
//! as a netstring, optionally truncated. Every key, storage index, integrity hash and secret Tahoe derives is one of
//! these, so the tags below are the exact bytes Tahoe uses.

use super::netstring::netstring;
use sha2::{Digest, Sha256};

/// Size of a full Tahoe hash, and of the secrets derived by hashing.
pub const HASH_LEN: usize = 32;
/// Size of AES keys, storage indexes and the other 128-bit values Tahoe truncates hashes to.
pub const KEY_LEN: usize = 16;

pub type Hash = [u8; HASH_LEN];
pub type Key = [u8; KEY_LEN];

/// The tags, byte for byte as in Tahoe.
pub mod tags {
    pub const STORAGE_INDEX: &[u8] = b"allmydata_immutable_key_to_storage_index_v1";
    pub const BLOCK: &[u8] = b"allmydata_encoded_subshare_v1";
    pub const UEB: &[u8] = b"allmydata_uri_extension_v1";
    pub const PLAINTEXT: &[u8] = b"allmydata_plaintext_v1";
    pub const CIPHERTEXT: &[u8] = b"allmydata_crypttext_v1";
    pub const CIPHERTEXT_SEGMENT: &[u8] = b"allmydata_crypttext_segment_v1";
    pub const PLAINTEXT_SEGMENT: &[u8] = b"allmydata_plaintext_segment_v1";
    pub const CONVERGENT_ENCRYPTION: &[u8] =
        b"allmydata_immutable_content_to_key_with_added_secret_v1+";
    pub const CLIENT_RENEWAL: &[u8] = b"allmydata_client_renewal_secret_v1";
    pub const CLIENT_CANCEL: &[u8] = b"allmydata_client_cancel_secret_v1";
    pub const FILE_RENEWAL: &[u8] = b"allmydata_file_renewal_secret_v1";
    pub const FILE_CANCEL: &[u8] = b"allmydata_file_cancel_secret_v1";
    pub const BUCKET_RENEWAL: &[u8] = b"allmydata_bucket_renewal_secret_v1";
    pub const BUCKET_CANCEL: &[u8] = b"allmydata_bucket_cancel_secret_v1";
    pub const MUTABLE_WRITEKEY: &[u8] = b"allmydata_mutable_privkey_to_writekey_v1";
    pub const MUTABLE_WRITE_ENABLER_MASTER: &[u8] =
        b"allmydata_mutable_writekey_to_write_enabler_master_v1";
    pub const MUTABLE_WRITE_ENABLER: &[u8] =
        b"allmydata_mutable_write_enabler_master_and_nodeid_to_write_enabler_v1";
    pub const MUTABLE_PUBKEY: &[u8] = b"allmydata_mutable_pubkey_to_fingerprint_v1";
    pub const MUTABLE_READKEY: &[u8] = b"allmydata_mutable_writekey_to_readkey_v1";
    pub const MUTABLE_DATAKEY: &[u8] = b"allmydata_mutable_readkey_to_datakey_v1";
    pub const MUTABLE_STORAGE_INDEX: &[u8] = b"allmydata_mutable_readkey_to_storage_index_v1";
    pub const DIRNODE_CHILD_WRITECAP: &[u8] =
        b"allmydata_mutable_writekey_and_salt_to_dirnode_child_capkey_v1";
    pub const DIRNODE_CHILD_SALT: &[u8] = b"allmydata_dirnode_child_rwcap_to_salt_v1";
    pub const BACKUPDB_DIRHASH: &[u8] = b"allmydata_backupdb_dirhash_v1";
    pub const MERKLE_EMPTY_LEAF: &[u8] = b"Merkle tree empty leaf";
    pub const MERKLE_INTERNAL_NODE: &[u8] = b"Merkle tree internal node";
}

/// SHA-256d over a stream: SHA-256 of the SHA-256 of everything fed in.
#[derive(Clone, Default)]
pub struct Sha256d {
    inner: super::sha256::Sha256,
}

impl Sha256d {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hasher that has already absorbed `netstring(tag)`, as Tahoe's `tagged_hasher`.
    pub fn tagged(tag: &[u8]) -> Self {
        let mut hasher = Self::new();
        hasher.update(&netstring(tag));
        hasher
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// Feeds `first` to `a` and `second` to `b`, hashing both at once (see [`super::sha256::update_pair`]).
    pub fn update_pair(a: &mut Sha256d, first: &[u8], b: &mut Sha256d, second: &[u8]) {
        super::sha256::update_pair(&mut a.inner, first, &mut b.inner, second);
    }

    pub fn finalize(self) -> Hash {
        let first = self.inner.finalize();
        Sha256::digest(first).into()
    }

    /// The first 16 bytes of the digest, as Tahoe's `truncate_to=16` hashers give.
    pub fn finalize_key(self) -> Key {
        truncate(self.finalize())
    }
}

fn truncate(hash: Hash) -> Key {
    let mut key = [0; KEY_LEN];
    key.copy_from_slice(&hash[..KEY_LEN]);
    key
}

pub fn sha256d(data: &[u8]) -> Hash {
    let mut hasher = Sha256d::new();
    hasher.update(data);
    hasher.finalize()
}

pub fn tagged_hash(tag: &[u8], value: &[u8]) -> Hash {
    let mut hasher = Sha256d::tagged(tag);
    hasher.update(value);
    hasher.finalize()
}

pub fn tagged_pair_hash(tag: &[u8], first: &[u8], second: &[u8]) -> Hash {
    let mut hasher = Sha256d::tagged(tag);
    hasher.update(&netstring(first));
    hasher.update(&netstring(second));
    hasher.finalize()
}

/// The storage index of an immutable file: where its shares live, derived from its AES key.
pub fn storage_index_hash(key: &Key) -> Key {
    truncate(tagged_hash(tags::STORAGE_INDEX, key))
}

pub fn block_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::BLOCK, data)
}

/// The block hashes of `blocks`, two at a time.
pub fn block_hashes<'b>(blocks: impl IntoIterator<Item = &'b [u8]>) -> Vec<Hash> {
    let blocks: Vec<&[u8]> = blocks.into_iter().collect();
    let mut hashes = Vec::with_capacity(blocks.len());
    for pair in blocks.chunks(2) {
        match pair {
            [first, second] => {
                let (mut a, mut b) = (block_hasher(), block_hasher());
                Sha256d::update_pair(&mut a, first, &mut b, second);
                hashes.push(a.finalize());
                hashes.push(b.finalize());
            }
            [only] => hashes.push(block_hash(only)),
            _ => unreachable!("chunks(2) gives one or two"),
        }
    }
    hashes
}

pub fn block_hasher() -> Sha256d {
    Sha256d::tagged(tags::BLOCK)
}

pub fn uri_extension_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::UEB, data)
}

pub fn plaintext_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::PLAINTEXT, data)
}

pub fn plaintext_hasher() -> Sha256d {
    Sha256d::tagged(tags::PLAINTEXT)
}

pub fn crypttext_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::CIPHERTEXT, data)
}

pub fn crypttext_hasher() -> Sha256d {
    Sha256d::tagged(tags::CIPHERTEXT)
}

pub fn crypttext_segment_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::CIPHERTEXT_SEGMENT, data)
}

pub fn crypttext_segment_hasher() -> Sha256d {
    Sha256d::tagged(tags::CIPHERTEXT_SEGMENT)
}

pub fn plaintext_segment_hash(data: &[u8]) -> Hash {
    tagged_hash(tags::PLAINTEXT_SEGMENT, data)
}

pub fn plaintext_segment_hasher() -> Sha256d {
    Sha256d::tagged(tags::PLAINTEXT_SEGMENT)
}

pub fn backupdb_dirhash(contents: &[u8]) -> Hash {
    tagged_hash(tags::BACKUPDB_DIRHASH, contents)
}

/// Encoding parameters outside what Tahoe accepts for a convergence key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encoding parameters k={needed}, n={total} are invalid: need 1 <= k <= n <= 256")]
pub struct BadEncodingParameters {
    pub needed: usize,
    pub total: usize,
}

/// The hasher for a convergent encryption key: the same plaintext, secret and parameters give the same key.
pub fn convergence_hasher(
    needed: usize,
    total: usize,
    max_segment_size: u64,
    convergence_secret: &[u8],
) -> Result<ConvergenceHasher, BadEncodingParameters> {
    if needed < 1 || needed > total || total > 256 {
        return Err(BadEncodingParameters { needed, total });
    }
    let mut tag = tags::CONVERGENT_ENCRYPTION.to_vec();
    tag.extend_from_slice(&netstring(convergence_secret));
    tag.extend_from_slice(&netstring(
        format!("{needed},{total},{max_segment_size}").as_bytes(),
    ));
    Ok(ConvergenceHasher(Sha256d::tagged(&tag)))
}

/// Streams plaintext into a convergent key (the truncated tagged hash).
#[derive(Clone)]
pub struct ConvergenceHasher(Sha256d);

impl ConvergenceHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finalize(self) -> Key {
        self.0.finalize_key()
    }
}

pub fn convergence_hash(
    needed: usize,
    total: usize,
    max_segment_size: u64,
    data: &[u8],
    convergence_secret: &[u8],
) -> Result<Key, BadEncodingParameters> {
    let mut hasher = convergence_hasher(needed, total, max_segment_size, convergence_secret)?;
    hasher.update(data);
    Ok(hasher.finalize())
}

// Lease secrets. Tahoe hashes the client's secret *as the tag* for the first step.

pub fn my_renewal_secret_hash(client_secret: &[u8]) -> Hash {
    tagged_hash(client_secret, tags::CLIENT_RENEWAL)
}

pub fn my_cancel_secret_hash(client_secret: &[u8]) -> Hash {
    tagged_hash(client_secret, tags::CLIENT_CANCEL)
}

pub fn file_renewal_secret_hash(client_renewal_secret: &[u8], storage_index: &[u8]) -> Hash {
    tagged_pair_hash(tags::FILE_RENEWAL, client_renewal_secret, storage_index)
}

pub fn file_cancel_secret_hash(client_cancel_secret: &[u8], storage_index: &[u8]) -> Hash {
    tagged_pair_hash(tags::FILE_CANCEL, client_cancel_secret, storage_index)
}

/// `server_id` is the server's 20-byte binary node id (the Foolscap tubid).
pub fn bucket_renewal_secret_hash(file_renewal_secret: &[u8], server_id: &[u8; 20]) -> Hash {
    tagged_pair_hash(tags::BUCKET_RENEWAL, file_renewal_secret, server_id)
}

pub fn bucket_cancel_secret_hash(file_cancel_secret: &[u8], server_id: &[u8; 20]) -> Hash {
    tagged_pair_hash(tags::BUCKET_CANCEL, file_cancel_secret, server_id)
}

/// Tahoe's own HMAC-SHA256 construction (`hashutil.hmac`). It differs from RFC 2104: the key is XORed with
/// 0x36/0x5c as is, without padding to the block size, so it only equals standard HMAC for 64-byte keys.
pub fn tahoe_hmac(key: &[u8], data: &[u8]) -> Hash {
    let inner_key: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_key)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(&outer_key)
        .chain_update(inner)
        .finalize()
        .into()
}

// Mutable files and directories.

/// The key that encrypts a directory child's writecap, from the entry's salt and the directory's writekey.
pub fn mutable_rwcap_key_hash(salt: &[u8], writekey: &[u8]) -> Key {
    truncate(tagged_pair_hash(
        tags::DIRNODE_CHILD_WRITECAP,
        salt,
        writekey,
    ))
}

pub fn mutable_rwcap_salt_hash(writekey: &[u8]) -> Key {
    truncate(tagged_hash(tags::DIRNODE_CHILD_SALT, writekey))
}

/// The writekey of a mutable file, from the DER bytes of its RSA private key.
pub fn ssk_writekey_hash(private_key_der: &[u8]) -> Key {
    truncate(tagged_hash(tags::MUTABLE_WRITEKEY, private_key_der))
}

pub fn ssk_write_enabler_master_hash(writekey: &[u8]) -> Hash {
    tagged_hash(tags::MUTABLE_WRITE_ENABLER_MASTER, writekey)
}

/// The secret a server demands before it changes a mutable share: per file and per server.
pub fn ssk_write_enabler_hash(writekey: &[u8], server_id: &[u8; 20]) -> Hash {
    let master = ssk_write_enabler_master_hash(writekey);
    tagged_pair_hash(tags::MUTABLE_WRITE_ENABLER, &master, server_id)
}

/// The fingerprint in a mutable cap: the hash of the DER bytes of the file's RSA public key.
pub fn ssk_pubkey_fingerprint_hash(public_key_der: &[u8]) -> Hash {
    tagged_hash(tags::MUTABLE_PUBKEY, public_key_der)
}

pub fn ssk_readkey_hash(writekey: &[u8]) -> Key {
    truncate(tagged_hash(tags::MUTABLE_READKEY, writekey))
}

/// The AES key of one version of a mutable file, from its salt (IV) and the readkey.
pub fn ssk_readkey_data_hash(salt: &[u8], readkey: &[u8]) -> Key {
    truncate(tagged_pair_hash(tags::MUTABLE_DATAKEY, salt, readkey))
}

pub fn ssk_storage_index_hash(readkey: &[u8]) -> Key {
    truncate(tagged_hash(tags::MUTABLE_STORAGE_INDEX, readkey))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut hasher = block_hasher();
        for piece in data.chunks(37) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finalize(), block_hash(&data));
    }

    #[test]
    fn block_hashes_in_pairs_equal_one_at_a_time() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 + i / 11) as u8).collect();
        for count in 0..6 {
            let blocks: Vec<&[u8]> = (0..count)
                .map(|i| &data[i * 700..i * 700 + 650 + i])
                .collect();
            let one_by_one: Vec<Hash> = blocks.iter().map(|b| block_hash(b)).collect();
            assert_eq!(
                block_hashes(blocks.iter().copied()),
                one_by_one,
                "{count} blocks"
            );
        }
    }

    #[test]
    fn convergence_rejects_bad_parameters() {
        assert!(convergence_hash(0, 10, 131072, b"", b"").is_err());
        assert!(convergence_hash(11, 10, 131072, b"", b"").is_err());
        assert!(convergence_hash(3, 257, 131072, b"", b"").is_err());
        assert!(convergence_hash(256, 256, 131072, b"", b"").is_ok());
    }
}
