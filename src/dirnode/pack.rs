//! Packing a [`Directory`] into the bytes Tahoe stores and unpacking them (`dirnode._pack_normalized_children`,
//! `_encrypt_rw_uri`, `DirectoryNode._unpack_contents`, `_decrypt_rwcapdata`).
//!
//! A child's writecap is stored as `salt ‖ AES-128-CTR(key, writecap) ‖ HMAC(key, salt ‖ ciphertext)`, where
//! `salt = H(writecap)` (so packing is deterministic) and `key = H(salt, writekey)`. Tahoe ≥ 1.3 does not check the
//! HMAC; this reader does, since every Tahoe version has written it the same way (older ones with a random salt,
//! which is why the stored salt is used, not recomputed). Read-only readers skip the slot and use the readcap.
//!
//! The bytes come from servers. Anything malformed is an error naming the entry and byte offset; an entry whose
//! caps break Tahoe's constraints (a mutable cap in an immutable directory, a malformed known cap, …) is left out
//! and reported, as Tahoe leaves it out and logs it.

use super::child::{Child, ChildCapError, strip_prefix_for_read_slot};
use super::metadata::{Metadata, MetadataError};
use super::{
    Directory, Entry, MAX_CAP_BYTES, MAX_DIRECTORY_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES,
    normalize_name,
};
use crate::cap::{Cap, FileCap, MutableAccess};
use crate::crypto::aes::AesCtr;
use crate::crypto::constant_time_eq;
use crate::crypto::hashutil::{self, Key};
use crate::crypto::netstring::{NetstringError, append_netstring, read_netstring, split_netstring};
use thiserror::Error;

const SALT_LEN: usize = 16;
const MAC_LEN: usize = 32;

/// How a directory is being read, which decides what its entries may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A mutable directory read with its writecap: children's writecaps are decrypted with the writekey.
    Writeable { writekey: Key },
    /// A mutable directory read with its readcap: children are seen through their readcaps.
    ReadOnly,
    /// An immutable directory: every child must be immutable, and write slots must be empty.
    Immutable,
}

impl Access {
    /// The access a directory cap gives; none for file caps, verify caps and unknown caps.
    pub fn of(cap: &Cap) -> Option<Access> {
        match cap {
            Cap::Directory(FileCap::Literal(_) | FileCap::Chk(_)) => Some(Access::Immutable),
            Cap::Directory(FileCap::Mutable(m)) => match m.access {
                MutableAccess::Write { writekey } => Some(Access::Writeable { writekey }),
                MutableAccess::Read { .. } => Some(Access::ReadOnly),
                MutableAccess::Verify { .. } => None,
            },
            _ => None,
        }
    }

    pub fn is_immutable(&self) -> bool {
        matches!(self, Access::Immutable)
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the writekey.
        f.write_str(match self {
            Access::Writeable { .. } => "Writeable",
            Access::ReadOnly => "ReadOnly",
            Access::Immutable => "Immutable",
        })
    }
}

/// Why a directory cannot be packed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackError {
    #[error(
        "child {0:?} is not allowed in an immutable directory (it is mutable or has a writecap)"
    )]
    NotDeepImmutable(String),
}

/// Packs `directory` as Tahoe does. With a `writekey` (a mutable directory's), each child's writecap is encrypted
/// into its write slot (an empty one when it has none); without one, write slots are empty. With `deep_immutable`
/// (an immutable directory, packed without a writekey), every child must be immutable.
pub fn pack(
    directory: &Directory,
    writekey: Option<&Key>,
    deep_immutable: bool,
) -> Result<Vec<u8>, PackError> {
    let mut packed = Vec::new();
    let mut entry = Vec::new();
    for (name, Entry { child, metadata }) in directory.iter() {
        if deep_immutable && !child.is_allowed_in_immutable_directory() {
            return Err(PackError::NotDeepImmutable(name.to_owned()));
        }
        let write = child.write_uri().unwrap_or_default();
        let read = child.read_uri().unwrap_or_default();
        entry.clear();
        append_netstring(&mut entry, name.as_bytes());
        append_netstring(
            &mut entry,
            strip_prefix_for_read_slot(&read, deep_immutable),
        );
        match writekey {
            Some(writekey) => append_netstring(&mut entry, &encrypt_write_cap(writekey, &write)),
            None => append_netstring(&mut entry, b""),
        }
        append_netstring(&mut entry, metadata.to_json().as_bytes());
        append_netstring(&mut packed, &entry);
    }
    Ok(packed)
}

/// `_encrypt_rw_uri`: salt, ciphertext and HMAC of one writecap (of an empty one too).
fn encrypt_write_cap(writekey: &Key, write_cap: &[u8]) -> Vec<u8> {
    let salt = hashutil::mutable_rwcap_salt_hash(write_cap);
    let key = hashutil::mutable_rwcap_key_hash(&salt, writekey);
    let mut sealed = Vec::with_capacity(SALT_LEN + write_cap.len() + MAC_LEN);
    sealed.extend_from_slice(&salt);
    sealed.extend_from_slice(write_cap);
    AesCtr::new_128(&key).apply(&mut sealed[SALT_LEN..]);
    let mac = hashutil::tahoe_hmac(&key, &sealed);
    sealed.extend_from_slice(&mac);
    sealed
}

/// `_decrypt_rwcapdata`, with the HMAC checked. An empty slot (which Tahoe reads as no writecap) is no writecap.
fn decrypt_write_cap(writekey: &Key, sealed: &[u8]) -> Result<Vec<u8>, EntryProblem> {
    if sealed.is_empty() {
        return Ok(Vec::new());
    }
    if sealed.len() < SALT_LEN + MAC_LEN {
        return Err(EntryProblem::WriteSlotTooShort { len: sealed.len() });
    }
    let (body, mac) = sealed.split_at(sealed.len() - MAC_LEN);
    let (salt, ciphertext) = body.split_at(SALT_LEN);
    let key = hashutil::mutable_rwcap_key_hash(salt, writekey);
    if !constant_time_eq(&hashutil::tahoe_hmac(&key, body), mac) {
        return Err(EntryProblem::BadMac);
    }
    let mut plaintext = ciphertext.to_vec();
    AesCtr::new_128(&key).apply(&mut plaintext);
    Ok(plaintext)
}

/// A packed directory read: its entries, and those left out because their caps broke Tahoe's constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked {
    pub directory: Directory,
    pub skipped: Vec<SkippedEntry>,
}

/// An entry left out of a directory read, as Tahoe leaves it out (and logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub name: String,
    pub reason: ChildCapError,
}

/// Why a packed directory is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnpackError {
    #[error("directory is {size} bytes, more than the {limit} accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("directory entry {index} (at byte {offset}{}): {problem}", name.as_ref().map(|n| format!(", named {n:?}")).unwrap_or_default())]
    Entry {
        /// Which entry, from 0, in stored order.
        index: usize,
        /// Where its netstring starts in the packed directory.
        offset: usize,
        /// Its name, if that far was read (at most 100 characters of it).
        name: Option<String>,
        problem: EntryProblem,
    },
}

/// What is wrong with one packed entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryProblem {
    #[error("bad netstring: {0}")]
    Netstring(NetstringError),
    #[error("name is not UTF-8 (valid up to byte {valid_up_to})")]
    NameNotUtf8 { valid_up_to: usize },
    #[error("{field} is {size} bytes, more than the {limit} accepted")]
    FieldTooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the write slot of an entry in an immutable directory is not empty")]
    WriteSlotInImmutable,
    #[error("the encrypted writecap is {len} bytes, too short for its salt and HMAC")]
    WriteSlotTooShort { len: usize },
    #[error(
        "the encrypted writecap fails its HMAC (corrupt, or not written with this directory's writekey)"
    )]
    BadMac,
    #[error("{0}")]
    Metadata(MetadataError),
}

/// Unpacks a directory read with `access`. A repeated name (after NFC) keeps the last entry, as Tahoe's dict does;
/// bytes after an entry's four fields are ignored, as Tahoe ignores them.
pub fn unpack(data: &[u8], access: &Access) -> Result<Unpacked, UnpackError> {
    if data.len() > MAX_DIRECTORY_BYTES {
        return Err(UnpackError::TooLarge {
            size: data.len(),
            limit: MAX_DIRECTORY_BYTES,
        });
    }
    let mut unpacked = Unpacked {
        directory: Directory::new(),
        skipped: Vec::new(),
    };
    let mut position = 0;
    let mut index = 0;
    while position < data.len() {
        let offset = position;
        let fail = |name: Option<&str>, problem| UnpackError::Entry {
            index,
            offset,
            name: name.map(|n| n.chars().take(100).collect()),
            problem,
        };
        let (entry, next) =
            read_netstring(data, position).map_err(|e| fail(None, EntryProblem::Netstring(e)))?;
        position = next;
        let (fields, _) = split_netstring(entry, 4, 0, None)
            .map_err(|e| fail(None, EntryProblem::Netstring(e)))?;
        let [name, read, sealed_write, metadata] = fields[..] else {
            let found = fields.len();
            return Err(fail(
                None,
                EntryProblem::Netstring(NetstringError::TooFew { expected: 4, found }),
            ));
        };
        let too_large = |field, size: usize, limit| {
            (size > limit).then_some(EntryProblem::FieldTooLarge { field, size, limit })
        };
        if let Some(problem) = too_large("name", name.len(), MAX_NAME_BYTES) {
            return Err(fail(None, problem));
        }
        let name = std::str::from_utf8(name).map_err(|e| {
            fail(
                None,
                EntryProblem::NameNotUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            )
        })?;
        // A name unassigned in one Unicode version may normalize differently in a later one: normalize on the way
        // out too.
        let name = normalize_name(name);
        let problem = too_large("readcap", read.len(), MAX_CAP_BYTES)
            .or_else(|| too_large("write slot", sealed_write.len(), MAX_CAP_BYTES + 48))
            .or_else(|| too_large("metadata", metadata.len(), MAX_METADATA_BYTES));
        if let Some(problem) = problem {
            return Err(fail(Some(&name), problem));
        }
        let write = match access {
            Access::Immutable if !sealed_write.is_empty() => {
                return Err(fail(Some(&name), EntryProblem::WriteSlotInImmutable));
            }
            Access::Writeable { writekey } => {
                Some(decrypt_write_cap(writekey, sealed_write).map_err(|p| fail(Some(&name), p))?)
            }
            _ => None,
        };
        // Tahoe ≥ 1.6 strips trailing spaces from both caps, so that padding may one day hide their lengths.
        let write = write.as_deref().map(trim_trailing_spaces);
        let read = trim_trailing_spaces(read);
        let deep_immutable = access.is_immutable();
        match Child::from_caps(write, Some(read), deep_immutable) {
            Ok(child) if !deep_immutable || child.is_allowed_in_immutable_directory() => {
                let metadata = Metadata::parse(metadata)
                    .map_err(|e| fail(Some(&name), EntryProblem::Metadata(e)))?;
                unpacked
                    .directory
                    .insert_unpacked(name, Entry { child, metadata });
            }
            Ok(_) => unpacked.skipped.push(SkippedEntry {
                name,
                reason: ChildCapError::MustBeDeepImmutable(
                    "a mutable cap unpacked from an immutable directory".into(),
                ),
            }),
            Err(reason) => unpacked.skipped.push(SkippedEntry { name, reason }),
        }
        index += 1;
    }
    Ok(unpacked)
}

fn trim_trailing_spaces(cap: &[u8]) -> &[u8] {
    let end = cap.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &cap[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_caps_round_trip_and_tampering_is_caught() {
        let writekey = [7u8; 16];
        let sealed = encrypt_write_cap(&writekey, b"URI:SSK:abc");
        assert_eq!(sealed.len(), 16 + 11 + 32);
        assert_eq!(
            decrypt_write_cap(&writekey, &sealed).unwrap(),
            b"URI:SSK:abc"
        );
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(
            decrypt_write_cap(&writekey, &bad),
            Err(EntryProblem::BadMac)
        );
        assert_eq!(
            decrypt_write_cap(&[8u8; 16], &sealed),
            Err(EntryProblem::BadMac)
        );
        assert_eq!(
            decrypt_write_cap(&writekey, &sealed[..40]),
            Err(EntryProblem::WriteSlotTooShort { len: 40 })
        );
        assert_eq!(decrypt_write_cap(&writekey, b"").unwrap(), b"");
    }

    #[test]
    fn trailing_spaces_are_trimmed() {
        assert_eq!(trim_trailing_spaces(b"ab  "), b"ab");
        assert_eq!(trim_trailing_spaces(b"   "), b"");
        assert_eq!(trim_trailing_spaces(b" a"), b" a");
    }
}
