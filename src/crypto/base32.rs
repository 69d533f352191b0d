//! Base32 as Tahoe writes it (`allmydata/util/base32.py`): RFC 4648 alphabet in lowercase, no padding. Decoding is
//! canonical, like Tahoe's `could_be_base32_encoded`: uppercase, padding, impossible lengths (1, 3 or 6 mod 8) and
//! non-zero unused trailing bits are rejected, so each byte string has exactly one accepted spelling.

use std::sync::LazyLock;
use thiserror::Error;

static TAHOE_BASE32: LazyLock<data_encoding::Encoding> = LazyLock::new(|| {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    spec.encoding().expect("the base32 specification is valid")
});

/// Why a string is not canonical Tahoe base32.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base32Error {
    #[error(
        "base32 of length {len} is impossible (a length of 1, 3 or 6 mod 8 encodes no whole byte count)"
    )]
    Length { len: usize },
    #[error("base32 character at position {position} is not one of a-z, 2-7")]
    Symbol { position: usize },
    #[error("base32 is not canonical: the unused bits of the last character are not zero")]
    TrailingBits,
}

/// Encodes bytes as lowercase unpadded base32.
pub fn encode(data: &[u8]) -> String {
    TAHOE_BASE32.encode(data)
}

/// Decodes canonical lowercase unpadded base32.
pub fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    decode_bytes(text.as_bytes())
}

/// Decodes canonical lowercase unpadded base32 given as bytes.
pub fn decode_bytes(text: &[u8]) -> Result<Vec<u8>, Base32Error> {
    TAHOE_BASE32.decode(text).map_err(|e| match e.kind {
        data_encoding::DecodeKind::Length => Base32Error::Length { len: text.len() },
        data_encoding::DecodeKind::Trailing => Base32Error::TrailingBits,
        _ => Base32Error::Symbol {
            position: e.position,
        },
    })
}

/// Decodes base32 that must hold exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], Base32Error> {
    // Checking the length first keeps an oversized input from being decoded at all.
    if text.len() != encoded_len(N) {
        return Err(Base32Error::Length { len: text.len() });
    }
    let bytes = decode(text)?;
    Ok(bytes.try_into().expect("length checked above"))
}

/// The length of the base32 encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_keys_and_hashes() {
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(decode_array::<16>(&encode(&[7; 16])).unwrap(), [7; 16]);
        assert!(matches!(
            decode_array::<16>("aa"),
            Err(Base32Error::Length { len: 2 })
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(decode("ab"), Err(Base32Error::TrailingBits));
        assert_eq!(decode("a"), Err(Base32Error::Length { len: 1 }));
        assert_eq!(decode("aA"), Err(Base32Error::Symbol { position: 1 }));
        assert_eq!(decode("a1"), Err(Base32Error::Symbol { position: 1 }));
    }
}
