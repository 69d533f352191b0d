//! Tahoe-LAFS's cryptographic primitives and the byte encodings they are built on, byte-exact with tahoe-lafs 1.20:
//! tagged SHA-256d hashes (`hashutil`), AES-CTR as Tahoe uses it (`aes`), Merkle hash trees (`hashtree`),
//! RFC 4648 base32 in Tahoe's canonical lowercase form (`base32`) and netstrings (`netstring`); `sha256` is the
//! SHA-256 under all of them, able to hash two messages at once.
//!
//! Everything above (caps, shares, directories) derives keys, indexes and integrity checks from these, so each one
//! is tested against vectors produced by the real `allmydata` code (`tests/vectors/generate.py`).

pub mod aes;
pub mod base32;
pub mod hashtree;
pub mod hashutil;
pub mod netstring;
pub mod rsa;
pub mod sha256;

/// Compares two byte strings in time that depends only on their lengths, for secrets such as write enablers.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
        assert!(super::constant_time_eq(b"", b""));
    }
}
