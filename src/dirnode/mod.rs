//! Tahoe directories (`allmydata/dirnode.py`), the format layer: a directory's contents as a map of names to
//! entries, packed to and unpacked from the bytes Tahoe stores in the directory's backing file, byte-identical to
//! tahoe-lafs 1.20; pure batch edits with Tahoe's link-time metadata rules; `CAP/name/…` paths; and reading
//! immutable directories (`URI:DIR2-LIT`, `URI:DIR2-CHK`) from a grid. Mutable directories live in mutable files,
//! which are read and written elsewhere: this layer only turns their contents into a [`Directory`] and back.
//!
//! A packed directory is one netstring per entry, sorted by name; each holds four netstrings: the NFC name in
//! UTF-8, the readcap in the clear, the writecap encrypted under the directory's writekey (empty in immutable
//! directories), and the metadata as JSON. See [`pack`] for the encryption.

mod child;
mod edit;
mod immutable;
pub mod json;
mod metadata;
mod node;
mod pack;
mod path;

pub use child::{Child, ChildCapError, UnknownChild};
pub use edit::{Change, EditError, Replace};
pub use immutable::{ReadError, read_immutable_directory};
pub use metadata::{Metadata, MetadataError};
pub use node::{DirectoryError, DirectoryNode, now};
pub use pack::{
    Access, EntryProblem, PackError, SkippedEntry, UnpackError, Unpacked, pack, unpack,
};
pub use path::{PathError, normalize_name, split_path, validate_name};

use std::collections::BTreeMap;

/// The largest packed directory read (64 MiB: about 200,000 entries of Tahoe's usual size).
pub const MAX_DIRECTORY_BYTES: usize = 64 << 20;
/// The longest name read, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 64 << 10;
/// The longest cap read, in either slot (known caps are under 200 bytes; this leaves room for future formats).
pub const MAX_CAP_BYTES: usize = 64 << 10;
/// The largest metadata JSON read for one entry.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

/// One child: what it is and the metadata of its link.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub child: Child,
    pub metadata: Metadata,
}

/// A directory's contents: entries by NFC name, in the order Tahoe packs them (by code point, which is UTF-8 byte
/// order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Directory {
    entries: BTreeMap<String, Entry>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// The entry for `name` (normalized to NFC first).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(&normalize_name(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Entries in packing order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Puts `entry` under `name` as given, metadata untouched (as `pack_children` takes a dict), replacing any entry
    /// there; returns the one replaced. For links with Tahoe's time-keeping, use [`Directory::apply`].
    pub fn insert(&mut self, name: &str, entry: Entry) -> Result<Option<Entry>, PathError> {
        Ok(self.entries.insert(validate_name(name)?, entry))
    }

    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        self.entries.remove(&normalize_name(name))
    }

    /// Entries read from a directory: names there are whatever Tahoe accepted (NFC, but possibly empty or with `/`).
    fn insert_unpacked(&mut self, name: String, entry: Entry) {
        self.entries.insert(name, entry);
    }
}
