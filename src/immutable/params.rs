//! Encoding parameters and the geometry they give a file: segment size, segment count, block sizes, as
//! `allmydata/immutable/upload.py` (`get_all_encoding_parameters`) and `encode.py` compute them, and the URI
//! extension block that records them.

use std::ops::Range;

use super::uri_extension::{UriExtension, UriExtensionError};
use crate::cap::ChkCap;
use crate::crypto::hashutil::Hash;

/// Files of at most this many bytes live in the cap itself (`Uploader.URI_LIT_SIZE_THRESHOLD`).
pub const LITERAL_THRESHOLD: u64 = 55;

/// Tahoe 1.20's default maximum segment size (`interfaces.DEFAULT_IMMUTABLE_MAX_SEGMENT_SIZE`, 1 MiB). It is
/// part of the convergent key, so a client must use Tahoe's value for its caps to converge with `tahoe put`'s.
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 1 << 20;

/// k / happy / N and the maximum segment size of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingParams {
    /// k: shares needed to read the file.
    pub needed: u16,
    /// Servers of happiness: the upload fails unless shares land on servers such that any `needed` of `happy`
    /// distinct servers can rebuild the file.
    pub happy: u16,
    /// N: shares made.
    pub total: u16,
    pub max_segment_size: u64,
}

impl Default for EncodingParams {
    /// Tahoe's defaults: 3 of 10, happy 7, 1 MiB segments.
    fn default() -> Self {
        EncodingParams {
            needed: 3,
            happy: 7,
            total: 10,
            max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
        }
    }
}

/// Parameters that do not make an upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encoding parameters needed={needed} happy={happy} total={total}: {problem}")]
pub struct BadParams {
    pub needed: u16,
    pub happy: u16,
    pub total: u16,
    pub problem: &'static str,
}

impl EncodingParams {
    /// Why uploads cannot succeed on a grid of `servers` storage servers (fewer than `happy`: they wait, and
    /// `fsync` fails, until more servers join), or `None` when they can.
    pub fn unmet_by(&self, servers: usize) -> Option<String> {
        (servers < usize::from(self.happy)).then(|| {
            format!(
                "uploads need shares on {} servers (shares {}-of-{}, happy {}) and the grid has {servers}: they \
                 wait in the spool, and fsync fails, until more servers join or the encoding is lowered \
                 (--shares-happy, --shares-total)",
                self.happy, self.needed, self.total, self.happy
            )
        })
    }

    /// Checks what Tahoe's client checks: 1 ≤ k ≤ happy ≤ N ≤ 256 and a positive segment size.
    pub fn validate(&self) -> Result<(), BadParams> {
        let problem = if self.needed == 0 {
            Some("at least one share must be needed")
        } else if self.total > 256 {
            Some("at most 256 shares (the erasure code's limit)")
        } else if self.needed > self.total {
            Some("cannot need more shares than are made")
        } else if self.happy < self.needed {
            Some(
                "happy must be at least needed, or the file may not be readable from the happy servers",
            )
        } else if self.happy > self.total {
            Some("happy cannot exceed total: there are no more shares to spread")
        } else if self.max_segment_size == 0 {
            Some("the maximum segment size must be positive")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(BadParams {
                needed: self.needed,
                happy: self.happy,
                total: self.total,
                problem,
            }),
            None => Ok(()),
        }
    }
}

/// How one CHK file is cut up: the same numbers the uploader writes into the UEB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub size: u64,
    pub needed: u16,
    pub total: u16,
    /// Bytes of plaintext per segment (a multiple of `needed`), except the last.
    pub segment_size: u64,
    pub num_segments: u64,
    /// Bytes of the last segment before padding (equal to `segment_size` when it divides the size).
    pub tail_size: u64,
}

/// A UEB that is authentic (its hash is in the cap) but describes a file that cannot be, or is not the cap's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the file's URI extension block is inconsistent: {0}")]
pub struct BadGeometry(pub String);

impl From<UriExtensionError> for BadGeometry {
    fn from(e: UriExtensionError) -> Self {
        BadGeometry(e.to_string())
    }
}

impl Geometry {
    /// The geometry Tahoe's uploader picks: segments of min(max, size) rounded up to a multiple of k.
    pub fn for_upload(size: u64, params: &EncodingParams) -> Geometry {
        let k = u64::from(params.needed.max(1));
        let segment_size = params.max_segment_size.min(size).max(1).next_multiple_of(k);
        Geometry::new(size, params.needed, params.total, segment_size)
    }

    fn new(size: u64, needed: u16, total: u16, segment_size: u64) -> Geometry {
        let num_segments = size.div_ceil(segment_size);
        let tail_size = match size % segment_size {
            0 => segment_size,
            rest => rest,
        };
        Geometry {
            size,
            needed,
            total,
            segment_size,
            num_segments,
            tail_size,
        }
    }

    fn k(&self) -> u64 {
        u64::from(self.needed)
    }

    /// Bytes per block of a full segment.
    pub fn block_size(&self) -> u64 {
        self.segment_size / self.k()
    }

    /// Bytes per block of the last segment (its padded length over k).
    pub fn tail_block_size(&self) -> u64 {
        self.tail_size.div_ceil(self.k())
    }

    /// Bytes of block data in each share: ⌈size / k⌉.
    pub fn share_data_size(&self) -> u64 {
        self.size.div_ceil(self.k())
    }

    /// The plaintext bytes segment `segnum` covers.
    pub fn segment_range(&self, segnum: u64) -> Range<u64> {
        let start = segnum * self.segment_size;
        start..(start + self.segment_size).min(self.size)
    }

    /// Bytes of each block of segment `segnum`.
    pub fn segment_block_size(&self, segnum: u64) -> u64 {
        if segnum + 1 == self.num_segments {
            self.tail_block_size()
        } else {
            self.block_size()
        }
    }

    /// The segments holding plaintext bytes `range` (empty for an empty range).
    pub fn segments_for(&self, range: Range<u64>) -> Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        range.start / self.segment_size..range.end.div_ceil(self.segment_size)
    }

    /// How many (index, hash) pairs of the share hash tree each share carries (`needed_hashes(0, True)`).
    pub fn num_share_hashes(&self) -> u64 {
        let leaves = u64::from(self.total.max(1)).next_power_of_two();
        u64::from(leaves.trailing_zeros()) + 1
    }

    /// The UEB of a file of this geometry with the given hashes, as `encode.py` fills it.
    pub fn uri_extension(
        &self,
        crypttext_hash: &Hash,
        crypttext_root_hash: &Hash,
        share_root_hash: &Hash,
    ) -> UriExtension {
        let k = self.needed;
        let n = self.total;
        let padded_tail = self.tail_size.next_multiple_of(self.k());
        let mut ueb = UriExtension::new();
        let fields: [(&str, Vec<u8>); 11] = [
            ("codec_name", b"crs".to_vec()),
            (
                "codec_params",
                format!("{}-{k}-{n}", self.segment_size).into_bytes(),
            ),
            (
                "tail_codec_params",
                format!("{padded_tail}-{k}-{n}").into_bytes(),
            ),
            ("size", self.size.to_string().into_bytes()),
            ("segment_size", self.segment_size.to_string().into_bytes()),
            ("num_segments", self.num_segments.to_string().into_bytes()),
            ("needed_shares", k.to_string().into_bytes()),
            ("total_shares", n.to_string().into_bytes()),
            ("crypttext_hash", crypttext_hash.to_vec()),
            ("crypttext_root_hash", crypttext_root_hash.to_vec()),
            ("share_root_hash", share_root_hash.to_vec()),
        ];
        for (key, value) in fields {
            // The keys above are all valid UEB keys.
            let _ = ueb.set(key, value);
        }
        ueb
    }

    /// Reads the geometry from an authentic UEB and checks it against the cap and against itself, so no later
    /// arithmetic on it can overflow or disagree with the shares' layout.
    pub fn from_uri_extension(ueb: &UriExtension, cap: &ChkCap) -> Result<Geometry, BadGeometry> {
        let size = ueb.number("size")?;
        let segment_size = ueb.number("segment_size")?;
        let num_segments = ueb.number("num_segments")?;
        let needed = ueb.number("needed_shares")?;
        let total = ueb.number("total_shares")?;
        let bad = |what: String| Err(BadGeometry(what));
        if size != cap.size
            || needed != u64::from(cap.needed_shares)
            || total != u64::from(cap.total_shares)
        {
            return bad(format!(
                "it describes a {size}-byte file in {needed}-of-{total}, the cap a {}-byte file in {}-of-{}",
                cap.size, cap.needed_shares, cap.total_shares
            ));
        }
        if cap.needed_shares == 0 || cap.needed_shares > cap.total_shares || cap.total_shares > 256
        {
            return bad(format!(
                "{}-of-{} is not an encoding",
                cap.needed_shares, cap.total_shares
            ));
        }
        if segment_size == 0 || segment_size % needed != 0 || segment_size > 1 << 40 {
            return bad(format!(
                "segment size {segment_size} is not a positive multiple of {needed}"
            ));
        }
        let geometry = Geometry::new(size, cap.needed_shares, cap.total_shares, segment_size);
        if num_segments != geometry.num_segments {
            return bad(format!(
                "{num_segments} segments of {segment_size} bytes cannot hold {size} bytes"
            ));
        }
        let expect_params = format!("{segment_size}-{needed}-{total}");
        if ueb.get("codec_params") != Some(expect_params.as_bytes()) {
            return bad(format!("codec_params is not {expect_params}"));
        }
        let padded_tail = geometry.tail_size.next_multiple_of(geometry.k());
        let expect_tail = format!("{padded_tail}-{needed}-{total}");
        if ueb.get("tail_codec_params") != Some(expect_tail.as_bytes()) {
            return bad(format!("tail_codec_params is not {expect_tail}"));
        }
        if ueb.get("codec_name").is_some_and(|name| name != b"crs") {
            return bad("codec_name is not crs".into());
        }
        Ok(geometry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happiness_a_grid_cannot_meet_is_said() {
        let defaults = EncodingParams::default();
        let why = defaults
            .unmet_by(3)
            .expect("3 servers cannot hold shares for happy 7");
        assert!(why.contains("7 servers") && why.contains("has 3"), "{why}");
        assert_eq!(defaults.unmet_by(7), None);
        let small = EncodingParams {
            needed: 2,
            happy: 3,
            total: 3,
            ..defaults
        };
        assert_eq!(small.unmet_by(3), None);
    }

    #[test]
    fn small_files_get_one_segment_rounded_to_k() {
        let g = Geometry::for_upload(56, &EncodingParams::default());
        assert_eq!((g.segment_size, g.num_segments, g.tail_size), (57, 1, 56));
        assert_eq!((g.block_size(), g.tail_block_size()), (19, 19));
        assert_eq!(g.share_data_size(), 19);
    }

    #[test]
    fn large_files_use_the_maximum_segment() {
        let p = EncodingParams::default();
        let g = Geometry::for_upload(1_000_000, &p);
        // What tahoe put chose for a 1,000,000-byte file: 1,000,000 rounded up to a multiple of 3.
        assert_eq!((g.segment_size, g.num_segments), (1_000_002, 1));
        let g = Geometry::for_upload(33 * (1 << 20) + 7, &p);
        // 1 MiB rounded up to a multiple of 3.
        assert_eq!(g.segment_size, 1_048_578);
        assert_eq!(g.num_segments, 33);
        assert_eq!(g.tail_size, 33 * (1 << 20) + 7 - 32 * 1_048_578);
        let total: u64 = (0..g.num_segments).map(|s| g.segment_block_size(s)).sum();
        assert_eq!(total, g.share_data_size());
        assert_eq!(g.segments_for(0..1), 0..1);
        assert_eq!(g.segments_for(1_048_577..1_048_579), 0..2);
        assert_eq!(g.segments_for(5..5), 0..0);
    }

    #[test]
    fn share_hash_count_matches_tahoe() {
        // len(IncompleteHashTree(N).needed_hashes(0, include_leaf=True)) in allmydata.
        for (total, count) in [
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 3),
            (10, 5),
            (16, 5),
            (17, 6),
            (256, 9),
        ] {
            let g = Geometry::for_upload(
                1000,
                &EncodingParams {
                    needed: 1,
                    happy: 1,
                    total,
                    max_segment_size: DEFAULT_MAX_SEGMENT_SIZE,
                },
            );
            assert_eq!(g.num_share_hashes(), count, "N={total}");
        }
    }

    #[test]
    fn ueb_round_trips_and_is_checked_against_the_cap() {
        let g = Geometry::for_upload(1_000_000, &EncodingParams::default());
        let ueb = g.uri_extension(&[1; 32], &[2; 32], &[3; 32]);
        let cap = ChkCap {
            key: [0; 16],
            ueb_hash: [0; 32],
            needed_shares: 3,
            total_shares: 10,
            size: 1_000_000,
        };
        assert_eq!(Geometry::from_uri_extension(&ueb, &cap).unwrap(), g);
        let other = ChkCap { size: 999, ..cap };
        assert!(Geometry::from_uri_extension(&ueb, &other).is_err());
        let mut bad = ueb.clone();
        bad.set_number("num_segments", 3).unwrap();
        assert!(Geometry::from_uri_extension(&bad, &cap).is_err());
        let mut bad = ueb.clone();
        bad.set_number("segment_size", 0).unwrap();
        assert!(Geometry::from_uri_extension(&bad, &cap).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        assert!(EncodingParams::default().validate().is_ok());
        let bad = |needed, happy, total| {
            EncodingParams {
                needed,
                happy,
                total,
                max_segment_size: 1,
            }
            .validate()
            .is_err()
        };
        assert!(bad(0, 1, 1));
        assert!(bad(4, 3, 10));
        assert!(bad(3, 11, 10));
        assert!(bad(3, 7, 257));
        assert!(!bad(1, 1, 1));
        assert!(!bad(256, 256, 256));
    }
}
