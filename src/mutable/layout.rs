//! The bytes of one mutable share, SDMF (version 0) and MDMF (version 1), as `allmydata/mutable/layout.py` lays
//! them out: the signed prefix, the offset table, the verification key, signature, share hash chain, block hash
//! tree, share data and encrypted private key. Parsing faces bytes from servers, so every offset is checked against
//! the others and against size limits before anything is sliced.

use std::collections::BTreeMap;
use std::ops::Range;

use thiserror::Error;

use crate::cap::MutableFormat;
use crate::crypto::hashutil::Hash;

pub const SALT_SIZE: usize = 16;
pub const HASH_SIZE: usize = 32;
/// `>BQ32s16s BBQQ LLLLQQ`.
pub const SDMF_HEADER_LEN: usize = 107;
/// `>BQ32sBBQQ QQQQQQQQ`.
pub const MDMF_HEADER_LEN: usize = 123;
/// `>BQ32s16s`: version, seqnum, root hash and IV.
pub const SDMF_CHECKSTRING_LEN: usize = 57;
const SDMF_SIGNABLE_LEN: usize = 75;
/// MDMF reserves fixed room for these before the share data (`MDMFSlotWriteProxy`), so blocks can be written
/// before the key, signature and hashes are known.
const MDMF_PRIVATE_KEY_ROOM: u64 = 1220;
const MDMF_SIGNATURE_ROOM: u64 = 260;
const MDMF_VERIFICATION_KEY_ROOM: u64 = 292;
const MDMF_SHARE_HASH_CHAIN_ROOM: u64 = (2 + HASH_SIZE as u64) * 8;
/// Where MDMF share data starts: the header plus the reserved room.
pub const MDMF_SHARE_DATA_OFFSET: u64 = MDMF_HEADER_LEN as u64
    + MDMF_PRIVATE_KEY_ROOM
    + MDMF_SIGNATURE_ROOM
    + MDMF_VERIFICATION_KEY_ROOM
    + MDMF_SHARE_HASH_CHAIN_ROOM;

// Limits on what a server's share may claim. Keys and signatures are RSA-2048 (≈ 300 B, 256 B, ≈ 1.2 KB); the
// share hash chain has at most one entry per tree level of 256 shares, plus slack for odd writers.
const MAX_VERIFICATION_KEY: u64 = 4096;
const MAX_SIGNATURE: u64 = 4096;
const MAX_PRIVATE_KEY: u64 = 8192;
const MAX_SHARE_HASH_CHAIN: u64 = (2 + HASH_SIZE as u64) * 64;
/// Tahoe's own `MAX_MUTABLE_SHARE_SIZE` is absurdly large; we refuse shares over 64 GiB.
pub const MAX_SHARE_SIZE: u64 = 64 << 30;
/// Tahoe writes MDMF in segments of 128 KiB (`DEFAULT_MAX_SEGMENT_SIZE`), so this many hold 512 GiB; a header
/// claiming more (1-byte segments, say) is refused before anything is sized by it.
pub const MAX_SEGMENTS: u64 = 1 << 22;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("share is {have} bytes, too short for {what} ({need} bytes)")]
    Short {
        what: &'static str,
        have: usize,
        need: usize,
    },
    #[error("unknown mutable share version {0} (1.20 writes 0 = SDMF and 1 = MDMF)")]
    UnknownVersion(u8),
    #[error("bad encoding parameters: {0}")]
    Parameters(String),
    #[error("bad offset table: {0}")]
    Offsets(String),
    #[error("{what} is {len} bytes, not a whole number of {unit}-byte entries")]
    Ragged {
        what: &'static str,
        len: usize,
        unit: usize,
    },
}

/// The signed part of a share's header: what identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedPrefix {
    pub format: MutableFormat,
    pub seqnum: u64,
    /// Root of the share hash tree.
    pub root_hash: Hash,
    /// SDMF's salt (its IV); all zero and absent from the bytes for MDMF, whose salts are per segment.
    pub iv: [u8; SALT_SIZE],
    pub needed: u8,
    pub total: u8,
    pub segment_size: u64,
    pub data_length: u64,
}

impl SignedPrefix {
    fn version_byte(&self) -> u8 {
        match self.format {
            MutableFormat::Sdmf => 0,
            MutableFormat::Mdmf => 1,
        }
    }

    /// The bytes the RSA signature covers.
    pub fn signable(&self) -> Vec<u8> {
        let mut out = self.checkstring();
        out.push(self.needed);
        out.push(self.total);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.data_length.to_be_bytes());
        out
    }

    /// What a writer tests the share's first bytes against: version, seqnum, root hash (and SDMF's IV).
    pub fn checkstring(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SDMF_SIGNABLE_LEN);
        out.push(self.version_byte());
        out.extend_from_slice(&self.seqnum.to_be_bytes());
        out.extend_from_slice(&self.root_hash);
        if self.format == MutableFormat::Sdmf {
            out.extend_from_slice(&self.iv);
        }
        out
    }

    pub fn header_len(&self) -> usize {
        match self.format {
            MutableFormat::Sdmf => SDMF_HEADER_LEN,
            MutableFormat::Mdmf => MDMF_HEADER_LEN,
        }
    }

    pub fn num_segments(&self) -> u64 {
        if self.segment_size == 0 {
            0
        } else {
            self.data_length.div_ceil(self.segment_size)
        }
    }

    pub fn block_size(&self) -> u64 {
        self.segment_size / u64::from(self.needed)
    }

    /// The length of segment `segnum` of the plaintext.
    pub fn segment_len(&self, segnum: u64) -> u64 {
        let start = segnum * self.segment_size;
        self.segment_size.min(self.data_length - start)
    }

    /// The block size of segment `segnum`: the segment padded to a multiple of k, over k.
    pub fn segment_block_size(&self, segnum: u64) -> u64 {
        self.segment_len(segnum).div_ceil(u64::from(self.needed))
    }

    /// The length of the share data region, computed without visiting segments: every segment but the last
    /// is a full one, whose block is `segment_size / k` bytes (a hostile header may claim 2^36 segments).
    pub fn share_data_len(&self) -> u64 {
        let segments = self.num_segments();
        if segments == 0 {
            return 0;
        }
        let blocks = (segments - 1) * self.block_size() + self.segment_block_size(segments - 1);
        match self.format {
            MutableFormat::Sdmf => blocks,
            MutableFormat::Mdmf => blocks + SALT_SIZE as u64 * segments,
        }
    }

    /// Where segment `segnum`'s block (and, for MDMF, its salt just before it) sits within the share data.
    pub fn block_range(&self, segnum: u64) -> Range<u64> {
        let stride = match self.format {
            MutableFormat::Sdmf => self.block_size(),
            MutableFormat::Mdmf => self.block_size() + SALT_SIZE as u64,
        };
        let start = segnum * stride;
        let len = self.segment_block_size(segnum)
            + match self.format {
                MutableFormat::Sdmf => 0,
                MutableFormat::Mdmf => SALT_SIZE as u64,
            };
        start..start + len
    }

    fn validate(&self) -> Result<(), LayoutError> {
        let bad = |m: String| Err(LayoutError::Parameters(m));
        if self.needed == 0 || self.needed > self.total {
            return bad(format!("k = {}, N = {}", self.needed, self.total));
        }
        let k = u64::from(self.needed);
        if !self.segment_size.is_multiple_of(k) {
            return bad(format!(
                "segment size {} is not a multiple of k = {k}",
                self.segment_size
            ));
        }
        if self.data_length > MAX_SHARE_SIZE * k {
            return bad(format!("data length {} is too large", self.data_length));
        }
        if self.num_segments() > MAX_SEGMENTS {
            return bad(format!(
                "{} segments of {} bytes (over the {MAX_SEGMENTS}-segment limit)",
                self.num_segments(),
                self.segment_size
            ));
        }
        match self.format {
            MutableFormat::Sdmf => {
                if self.segment_size != self.data_length.next_multiple_of(k) {
                    return bad(format!(
                        "SDMF segment size {} does not hold data length {} in one segment",
                        self.segment_size, self.data_length
                    ));
                }
            }
            MutableFormat::Mdmf => {
                if self.segment_size == 0 && self.data_length > 0 {
                    return bad("MDMF segment size 0 with data".to_string());
                }
            }
        }
        Ok(())
    }
}

/// Where each part of a share lies, from its offset table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    pub verification_key: Range<u64>,
    pub signature: Range<u64>,
    pub share_hash_chain: Range<u64>,
    pub block_hash_tree: Range<u64>,
    pub share_data: Range<u64>,
    pub enc_privkey: Range<u64>,
    pub eof: u64,
}

impl Regions {
    /// The byte range up to which a reader needs the share to check the signature: everything before the share
    /// data in MDMF, the key and signature in SDMF.
    pub fn signed_part_end(&self) -> u64 {
        self.verification_key.end.max(self.signature.end)
    }
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn be_u32(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes(
        bytes[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Parses the header at the start of a share: the signed prefix and the offset table, checked for consistency.
pub fn parse_header(bytes: &[u8]) -> Result<(SignedPrefix, Regions), LayoutError> {
    let version = *bytes.first().ok_or(LayoutError::Short {
        what: "the version byte",
        have: 0,
        need: 1,
    })?;
    let format = match version {
        0 => MutableFormat::Sdmf,
        1 => MutableFormat::Mdmf,
        v => return Err(LayoutError::UnknownVersion(v)),
    };
    let header_len = match format {
        MutableFormat::Sdmf => SDMF_HEADER_LEN,
        MutableFormat::Mdmf => MDMF_HEADER_LEN,
    };
    if bytes.len() < header_len {
        return Err(LayoutError::Short {
            what: "the header",
            have: bytes.len(),
            need: header_len,
        });
    }
    let seqnum = be_u64(bytes, 1);
    let root_hash: Hash = bytes[9..41].try_into().expect("32 bytes");
    let mut iv = [0u8; SALT_SIZE];
    let params_at = match format {
        MutableFormat::Sdmf => {
            iv.copy_from_slice(&bytes[41..57]);
            57
        }
        MutableFormat::Mdmf => 41,
    };
    let prefix = SignedPrefix {
        format,
        seqnum,
        root_hash,
        iv,
        needed: bytes[params_at],
        total: bytes[params_at + 1],
        segment_size: be_u64(bytes, params_at + 2),
        data_length: be_u64(bytes, params_at + 10),
    };
    prefix.validate()?;
    let offsets_at = params_at + 18;
    let regions = match format {
        MutableFormat::Sdmf => {
            let o: Vec<u64> = (0..4)
                .map(|i| be_u32(bytes, offsets_at + 4 * i))
                .chain((0..2).map(|i| be_u64(bytes, offsets_at + 16 + 8 * i)))
                .collect();
            let (signature, chain, bht, data, privkey, eof) = (o[0], o[1], o[2], o[3], o[4], o[5]);
            ordered(
                &[
                    ("header end", header_len as u64),
                    ("signature", signature),
                    ("share hash chain", chain),
                    ("block hash tree", bht),
                    ("share data", data),
                    ("encrypted private key", privkey),
                    ("EOF", eof),
                ],
                eof,
            )?;
            Regions {
                verification_key: header_len as u64..signature,
                signature: signature..chain,
                share_hash_chain: chain..bht,
                block_hash_tree: bht..data,
                share_data: data..privkey,
                enc_privkey: privkey..eof,
                eof,
            }
        }
        MutableFormat::Mdmf => {
            let o: Vec<u64> = (0..8).map(|i| be_u64(bytes, offsets_at + 8 * i)).collect();
            let (privkey, chain, signature, vk, vk_end, data, bht, eof) =
                (o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]);
            ordered(
                &[
                    ("header end", header_len as u64),
                    ("encrypted private key", privkey),
                    ("share hash chain", chain),
                    ("signature", signature),
                    ("verification key", vk),
                    ("verification key end", vk_end),
                    ("share data", data),
                    ("block hash tree", bht),
                    ("EOF", eof),
                ],
                eof,
            )?;
            Regions {
                enc_privkey: privkey..chain,
                share_hash_chain: chain..signature,
                signature: signature..vk,
                verification_key: vk..vk_end,
                share_data: data..bht,
                block_hash_tree: bht..eof,
                eof,
            }
        }
    };
    let limits = [
        (
            "verification key",
            &regions.verification_key,
            MAX_VERIFICATION_KEY,
        ),
        ("signature", &regions.signature, MAX_SIGNATURE),
        (
            "encrypted private key",
            &regions.enc_privkey,
            MAX_PRIVATE_KEY,
        ),
        (
            "share hash chain",
            &regions.share_hash_chain,
            MAX_SHARE_HASH_CHAIN,
        ),
        (
            "block hash tree",
            &regions.block_hash_tree,
            // A complete tree over the segments has fewer than 4 nodes per segment (padding to a power of two).
            (4 * prefix.num_segments() + 1) * HASH_SIZE as u64,
        ),
    ];
    for (what, range, limit) in limits {
        if range.end - range.start > limit {
            return Err(LayoutError::Offsets(format!(
                "{what} is {} bytes, over the {limit}-byte limit",
                range.end - range.start
            )));
        }
    }
    let expected = prefix.share_data_len();
    if regions.share_data.end - regions.share_data.start != expected {
        return Err(LayoutError::Offsets(format!(
            "share data is {} bytes, but k = {}, segment size {} and data length {} make {expected}",
            regions.share_data.end - regions.share_data.start,
            prefix.needed,
            prefix.segment_size,
            prefix.data_length
        )));
    }
    Ok((prefix, regions))
}

/// Checks that the named offsets never decrease and that the end is within the size limit.
fn ordered(named: &[(&str, u64)], eof: u64) -> Result<(), LayoutError> {
    for pair in named.windows(2) {
        if pair[1].1 < pair[0].1 {
            return Err(LayoutError::Offsets(format!(
                "{} offset {} is before {} offset {}",
                pair[1].0, pair[1].1, pair[0].0, pair[0].1
            )));
        }
    }
    if eof > MAX_SHARE_SIZE {
        return Err(LayoutError::Offsets(format!(
            "EOF {eof} is over the {MAX_SHARE_SIZE}-byte limit"
        )));
    }
    Ok(())
}

/// Parses a share hash chain: entries of a big-endian u16 node index and a 32-byte hash.
pub fn parse_share_hash_chain(bytes: &[u8]) -> Result<BTreeMap<usize, Hash>, LayoutError> {
    const ENTRY: usize = 2 + HASH_SIZE;
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(LayoutError::Ragged {
            what: "share hash chain",
            len: bytes.len(),
            unit: ENTRY,
        });
    }
    Ok(bytes
        .chunks_exact(ENTRY)
        .map(|e| {
            (
                usize::from(u16::from_be_bytes([e[0], e[1]])),
                e[2..].try_into().expect("32 bytes"),
            )
        })
        .collect())
}

/// Parses a block hash tree: every node, root first.
pub fn parse_block_hash_tree(bytes: &[u8]) -> Result<Vec<Hash>, LayoutError> {
    if !bytes.len().is_multiple_of(HASH_SIZE) {
        return Err(LayoutError::Ragged {
            what: "block hash tree",
            len: bytes.len(),
            unit: HASH_SIZE,
        });
    }
    Ok(bytes
        .chunks_exact(HASH_SIZE)
        .map(|h| h.try_into().expect("32 bytes"))
        .collect())
}

/// Everything in a share beside its signed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareBody<'a> {
    pub verification_key: &'a [u8],
    pub signature: &'a [u8],
    /// Node index → hash, the nodes a reader needs to tie this share's block tree root to the root hash.
    pub share_hash_chain: &'a BTreeMap<usize, Hash>,
    /// The whole block hash tree, root first.
    pub block_hash_tree: &'a [Hash],
    /// The blocks (MDMF: each preceded by its salt).
    pub share_data: &'a [u8],
    pub enc_privkey: &'a [u8],
}

/// The complete bytes of a share, laid out as Tahoe 1.20 writes it for the prefix's format.
pub fn pack_share(prefix: &SignedPrefix, body: &ShareBody<'_>) -> Result<Vec<u8>, LayoutError> {
    let chain: Vec<u8> = body
        .share_hash_chain
        .iter()
        .flat_map(|(&index, hash)| {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            index.to_be_bytes().into_iter().chain(hash.iter().copied())
        })
        .collect();
    let tree: Vec<u8> = body.block_hash_tree.concat();
    let len = |b: &[u8]| b.len() as u64;
    let mut out = prefix.signable();
    match prefix.format {
        MutableFormat::Sdmf => {
            let signature = SDMF_HEADER_LEN as u64 + len(body.verification_key);
            let chain_at = signature + len(body.signature);
            let tree_at = chain_at + len(&chain);
            let data_at = tree_at + len(&tree);
            let privkey_at = data_at + len(body.share_data);
            let eof = privkey_at + len(body.enc_privkey);
            if data_at > u64::from(u32::MAX) {
                return Err(LayoutError::Offsets(
                    "SDMF offsets must fit 32 bits".to_string(),
                ));
            }
            for offset in [signature, chain_at, tree_at, data_at] {
                out.extend_from_slice(&(offset as u32).to_be_bytes());
            }
            out.extend_from_slice(&privkey_at.to_be_bytes());
            out.extend_from_slice(&eof.to_be_bytes());
            for part in [
                body.verification_key,
                body.signature,
                &chain,
                &tree,
                body.share_data,
                body.enc_privkey,
            ] {
                out.extend_from_slice(part);
            }
        }
        MutableFormat::Mdmf => {
            let privkey_at = MDMF_HEADER_LEN as u64;
            let chain_at = privkey_at + len(body.enc_privkey);
            let signature = chain_at + len(&chain);
            let vk = signature + len(body.signature);
            let vk_end = vk + len(body.verification_key);
            if vk_end > MDMF_SHARE_DATA_OFFSET {
                return Err(LayoutError::Offsets(format!(
                    "key, chain and signature take {} bytes, more than MDMF's reserved room",
                    vk_end - privkey_at
                )));
            }
            let data_at = MDMF_SHARE_DATA_OFFSET;
            let tree_at = data_at + len(body.share_data);
            let eof = tree_at + len(&tree);
            for offset in [
                privkey_at, chain_at, signature, vk, vk_end, data_at, tree_at, eof,
            ] {
                out.extend_from_slice(&offset.to_be_bytes());
            }
            for part in [
                body.enc_privkey,
                &chain,
                body.signature,
                body.verification_key,
            ] {
                out.extend_from_slice(part);
            }
            out.resize(data_at as usize, 0);
            out.extend_from_slice(body.share_data);
            out.extend_from_slice(&tree);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(format: MutableFormat, data_length: u64, needed: u8) -> SignedPrefix {
        let segment_size = match format {
            MutableFormat::Sdmf => data_length.next_multiple_of(u64::from(needed)),
            MutableFormat::Mdmf => (128 * 1024u64).next_multiple_of(u64::from(needed)),
        };
        SignedPrefix {
            format,
            seqnum: 7,
            root_hash: [9; 32],
            iv: if format == MutableFormat::Sdmf {
                [3; 16]
            } else {
                [0; 16]
            },
            needed,
            total: 10,
            segment_size,
            data_length,
        }
    }

    #[test]
    fn packed_shares_parse_back_in_both_formats() {
        for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
            for data_length in [0u64, 1, 1000, 300_000] {
                let p = prefix(format, data_length, 3);
                let data = vec![5u8; p.share_data_len() as usize];
                let chain: BTreeMap<usize, Hash> = [(1, [1; 32]), (4, [4; 32])].into();
                let tree = vec![[8u8; 32]; 1];
                let body = ShareBody {
                    verification_key: &[1; 292],
                    signature: &[2; 256],
                    share_hash_chain: &chain,
                    block_hash_tree: &tree,
                    share_data: &data,
                    enc_privkey: &[6; 1216],
                };
                let share = pack_share(&p, &body).unwrap();
                let (q, r) = parse_header(&share).unwrap();
                assert_eq!(q, p);
                assert_eq!(r.eof as usize, share.len());
                let at = |range: &Range<u64>| &share[range.start as usize..range.end as usize];
                assert_eq!(at(&r.verification_key), &[1; 292][..]);
                assert_eq!(at(&r.signature), &[2; 256][..]);
                assert_eq!(
                    parse_share_hash_chain(at(&r.share_hash_chain)).unwrap(),
                    chain
                );
                assert_eq!(parse_block_hash_tree(at(&r.block_hash_tree)).unwrap(), tree);
                assert_eq!(at(&r.share_data), &data[..]);
                assert_eq!(at(&r.enc_privkey), &[6; 1216][..]);
                assert_eq!(&share[..p.checkstring().len()], &p.checkstring()[..]);
            }
        }
    }

    /// An MDMF share of 1000 bytes at k = 3, with stand-in keys and hashes.
    fn small_mdmf_share() -> Vec<u8> {
        let p = prefix(MutableFormat::Mdmf, 1000, 3);
        let chain = BTreeMap::new();
        let data = vec![0u8; p.share_data_len() as usize];
        let body = ShareBody {
            verification_key: &[1; 10],
            signature: &[2; 10],
            share_hash_chain: &chain,
            block_hash_tree: &[],
            share_data: &data,
            enc_privkey: &[],
        };
        pack_share(&p, &body).unwrap()
    }

    #[test]
    fn hostile_headers_are_errors() {
        let share = small_mdmf_share();
        for cut in 0..MDMF_HEADER_LEN {
            assert!(parse_header(&share[..cut]).is_err());
        }
        let mut bad = share.clone();
        bad[0] = 2;
        assert_eq!(parse_header(&bad), Err(LayoutError::UnknownVersion(2)));
        let mut bad = share.clone();
        bad[41] = 0; // k = 0
        assert!(matches!(
            parse_header(&bad),
            Err(LayoutError::Parameters(_))
        ));
        let mut bad = share.clone();
        bad[59 + 7] = 0xff; // the private key offset past the chain's
        assert!(matches!(parse_header(&bad), Err(LayoutError::Offsets(_))));
        let mut bad = share.clone();
        bad[115..123].copy_from_slice(&u64::MAX.to_be_bytes()); // EOF
        assert!(matches!(parse_header(&bad), Err(LayoutError::Offsets(_))));
        assert!(parse_share_hash_chain(&[0; 33]).is_err());
        assert!(parse_block_hash_tree(&[0; 31]).is_err());
    }

    /// An unsigned header claiming k = 1, 1-byte segments and 2^36 bytes once cost minutes of CPU (a loop over
    /// every segment to size the share data); it must be refused at once.
    #[test]
    fn a_header_claiming_billions_of_segments_costs_no_time() {
        let mut share = small_mdmf_share();
        share[41] = 1; // k
        share[43..51].copy_from_slice(&1u64.to_be_bytes()); // segment size
        share[51..59].copy_from_slice(&(1u64 << 36).to_be_bytes()); // data length
        let started = std::time::Instant::now();
        let parsed = parse_header(&share);
        assert!(
            matches!(parsed, Err(LayoutError::Parameters(_))),
            "{parsed:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Sizes are arithmetic: a legitimately large MDMF file is sized without a loop too.
        let big = SignedPrefix {
            segment_size: 131_073, // 3 × 43 691, with a short last segment
            data_length: 1 << 38,
            ..prefix(MutableFormat::Mdmf, 0, 3)
        };
        let started = std::time::Instant::now();
        let segments = big.num_segments();
        let walked: u64 = (0..segments).map(|s| big.segment_block_size(s)).sum();
        assert_eq!(big.share_data_len(), walked + 16 * segments);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
