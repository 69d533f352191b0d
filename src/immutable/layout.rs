//! The byte layout of a Tahoe immutable (CHK) share, versions 1 and 2 (`allmydata/immutable/layout.py`): the
//! offset header, where each block and hash list sits, and the share-hash list encoding.
//!
//! A share is: header (0x24 bytes of 4-byte fields in v1, 0x44 bytes of 8-byte fields in v2), the blocks, an
//! unused plaintext hash tree (zeros), the crypttext hash tree, the block hash tree, the needed share hashes
//! (2-byte index + 32-byte hash each), then the URI extension block with its length in front (4 or 8 bytes).
//! Version 1 is written whenever every offset fits in 32 bits, as Tahoe does, so old readers can read it.

use crate::crypto::hashutil::Hash;

const V1_HEADER: u64 = 0x24;
const V2_HEADER: u64 = 0x44;
const HASH_SIZE: u64 = 32;

/// A share whose header cannot be read, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("share header is {got} bytes, too short for a version {version} header")]
    ShortHeader { version: u32, got: usize },
    #[error("share format version {0} is not one Tahoe-LAFS 1.20 writes (1 or 2)")]
    UnknownVersion(u32),
    #[error("share header offsets are out of order or overflow ({0})")]
    BadOffsets(&'static str),
    #[error("a file of these dimensions does not fit in a share ({0})")]
    TooLarge(&'static str),
    #[error("share hash list is {0} bytes, not a multiple of 34")]
    ShareHashLength(usize),
}

/// Where everything sits in one share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareLayout {
    pub version: u32,
    /// Bytes per block (the last block may be shorter). Written for old readers; 1.3+ readers ignore it.
    pub block_size: u64,
    /// Bytes of all blocks together.
    pub data_size: u64,
    pub data: u64,
    pub plaintext_hash_tree: u64,
    pub crypttext_hash_tree: u64,
    pub block_hashes: u64,
    pub share_hashes: u64,
    pub uri_extension: u64,
}

impl ShareLayout {
    /// The layout Tahoe's uploader writes (`make_write_bucket_proxy`): v1 if every field fits in 32 bits, else
    /// v2. `num_share_hashes` is how many (index, hash) pairs the share carries.
    pub fn for_upload(
        data_size: u64,
        block_size: u64,
        num_segments: u64,
        num_share_hashes: u64,
    ) -> Result<ShareLayout, LayoutError> {
        let v1 = ShareLayout::build(1, data_size, block_size, num_segments, num_share_hashes)?;
        if block_size < 1 << 32 && data_size < 1 << 32 && v1.uri_extension < 1 << 32 {
            Ok(v1)
        } else {
            ShareLayout::build(2, data_size, block_size, num_segments, num_share_hashes)
        }
    }

    fn build(
        version: u32,
        data_size: u64,
        block_size: u64,
        num_segments: u64,
        num_share_hashes: u64,
    ) -> Result<ShareLayout, LayoutError> {
        let too_large = LayoutError::TooLarge;
        let effective = num_segments
            .max(1)
            .checked_next_power_of_two()
            .ok_or(too_large("segments"))?;
        let tree = (2 * effective - 1)
            .checked_mul(HASH_SIZE)
            .ok_or(too_large("hash tree"))?;
        let share_hashes_size = num_share_hashes
            .checked_mul(2 + HASH_SIZE)
            .ok_or(too_large("share hashes"))?;
        let data = if version == 1 { V1_HEADER } else { V2_HEADER };
        let add = |a: u64, b: u64| a.checked_add(b).ok_or(too_large("offsets"));
        let plaintext_hash_tree = add(data, data_size)?;
        let crypttext_hash_tree = add(plaintext_hash_tree, tree)?;
        let block_hashes = add(crypttext_hash_tree, tree)?;
        let share_hashes = add(block_hashes, tree)?;
        let uri_extension = add(share_hashes, share_hashes_size)?;
        Ok(ShareLayout {
            version,
            block_size,
            data_size,
            data,
            plaintext_hash_tree,
            crypttext_hash_tree,
            block_hashes,
            share_hashes,
            uri_extension,
        })
    }

    /// Bytes of the length field in front of the URI extension block.
    pub fn uri_extension_length_size(&self) -> u64 {
        if self.version == 1 { 4 } else { 8 }
    }

    /// The whole share's size, for allocation.
    pub fn allocated_size(&self, uri_extension_size: u64) -> Option<u64> {
        self.uri_extension
            .checked_add(self.uri_extension_length_size())?
            .checked_add(uri_extension_size)
    }

    /// The header bytes, as Tahoe writes them.
    pub fn header(&self) -> Vec<u8> {
        let fields = [
            self.block_size,
            self.data_size,
            self.data,
            self.plaintext_hash_tree,
            self.crypttext_hash_tree,
            self.block_hashes,
            self.share_hashes,
            self.uri_extension,
        ];
        let mut out = Vec::with_capacity(V2_HEADER as usize);
        out.extend_from_slice(&self.version.to_be_bytes());
        for f in fields {
            if self.version == 1 {
                // build() only makes v1 layouts whose fields fit (for_upload checks), so this cannot truncate.
                out.extend_from_slice(&(f as u32).to_be_bytes());
            } else {
                out.extend_from_slice(&f.to_be_bytes());
            }
        }
        out
    }

    /// Reads a header from the first bytes of a share (at least 0x44 bytes, or the whole share if shorter).
    pub fn parse(bytes: &[u8]) -> Result<ShareLayout, LayoutError> {
        let version = u32::from_be_bytes(field::<4>(bytes, 0).ok_or(LayoutError::ShortHeader {
            version: 0,
            got: bytes.len(),
        })?);
        let (width, header) = match version {
            1 => (4, V1_HEADER),
            2 => (8, V2_HEADER),
            v => return Err(LayoutError::UnknownVersion(v)),
        };
        if (bytes.len() as u64) < header {
            return Err(LayoutError::ShortHeader {
                version,
                got: bytes.len(),
            });
        }
        let read = |i: usize| -> u64 {
            let at = 4 + i * width;
            if width == 4 {
                u64::from(u32::from_be_bytes(
                    field::<4>(bytes, at).unwrap_or_default(),
                ))
            } else {
                u64::from_be_bytes(field::<8>(bytes, at).unwrap_or_default())
            }
        };
        let layout = ShareLayout {
            version,
            block_size: read(0),
            data_size: read(1),
            data: read(2),
            plaintext_hash_tree: read(3),
            crypttext_hash_tree: read(4),
            block_hashes: read(5),
            share_hashes: read(6),
            uri_extension: read(7),
        };
        let order = [
            layout.data,
            layout.plaintext_hash_tree,
            layout.crypttext_hash_tree,
            layout.block_hashes,
            layout.share_hashes,
            layout.uri_extension,
        ];
        if layout.data < header {
            return Err(LayoutError::BadOffsets("data starts inside the header"));
        }
        if order.windows(2).any(|w| w[0] > w[1]) {
            return Err(LayoutError::BadOffsets("sections out of order"));
        }
        Ok(layout)
    }
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// The share hash list as stored: a 2-byte big-endian node index and the 32-byte hash, per entry.
pub fn encode_share_hashes(hashes: &[(u16, Hash)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 34);
    for (index, hash) in hashes {
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(hash);
    }
    out
}

pub fn decode_share_hashes(bytes: &[u8]) -> Result<Vec<(u16, Hash)>, LayoutError> {
    if !bytes.len().is_multiple_of(34) {
        return Err(LayoutError::ShareHashLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(34)
        .map(|c| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&c[2..]);
            (u16::from_be_bytes([c[0], c[1]]), hash)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let layout = ShareLayout::for_upload(393_216, 131_072, 3, 4).unwrap();
        assert_eq!(ShareLayout::parse(&layout.header()).unwrap(), layout);
        assert!(matches!(
            ShareLayout::parse(&[0, 0, 0, 3]),
            Err(LayoutError::UnknownVersion(3))
        ));
        assert!(matches!(
            ShareLayout::parse(&[0, 0]),
            Err(LayoutError::ShortHeader { .. })
        ));
        assert!(matches!(
            ShareLayout::parse(&layout.header()[..20]),
            Err(LayoutError::ShortHeader { .. })
        ));
        let mut swapped = layout.header();
        swapped[0x20..0x24].copy_from_slice(&[0, 0, 0, 0x30]);
        assert!(matches!(
            ShareLayout::parse(&swapped),
            Err(LayoutError::BadOffsets(_))
        ));
        assert!(ShareLayout::for_upload(u64::MAX, 1, 1, 1).is_err());
    }

    #[test]
    fn share_hash_lists() {
        let list = vec![(1u16, [7u8; 32]), (6, [9u8; 32])];
        assert_eq!(
            decode_share_hashes(&encode_share_hashes(&list)).unwrap(),
            list
        );
        assert!(decode_share_hashes(&[0; 35]).is_err());
    }
}
