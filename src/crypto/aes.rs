//! AES in CTR mode as Tahoe uses it (`allmydata/crypto/aes.py`): a 128-bit big-endian counter that starts at an
//! all-zero block unless an explicit IV is given, with 16- or 32-byte keys. CTR is its own inverse, so one type
//! both encrypts and decrypts, and it can seek to any byte for random-access reads.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use thiserror::Error;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Tahoe's default IV: sixteen zero bytes.
pub const DEFAULT_IV: [u8; 16] = [0; 16];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("AES key must be 16 or 32 bytes, got {0}")]
pub struct BadKeyLength(pub usize);

/// An AES-CTR keystream positioned at some byte offset.
pub struct AesCtr {
    cipher: Cipher,
}

enum Cipher {
    Aes128(Box<Aes128Ctr>),
    Aes256(Box<Aes256Ctr>),
}

impl AesCtr {
    /// A keystream for `key` starting at counter block `iv` (Tahoe's default is [`DEFAULT_IV`]).
    pub fn new(key: &[u8], iv: &[u8; 16]) -> Result<Self, BadKeyLength> {
        let cipher = match key.len() {
            16 => Cipher::Aes128(Box::new(Aes128Ctr::new(
                key.try_into().expect("16 bytes"),
                iv.into(),
            ))),
            32 => Cipher::Aes256(Box::new(Aes256Ctr::new(
                key.try_into().expect("32 bytes"),
                iv.into(),
            ))),
            n => return Err(BadKeyLength(n)),
        };
        Ok(Self { cipher })
    }

    /// A keystream with a 128-bit key and Tahoe's default IV, as immutable files and mutable segments use.
    pub fn new_128(key: &[u8; 16]) -> Self {
        Self {
            cipher: Cipher::Aes128(Box::new(Aes128Ctr::new(key.into(), (&DEFAULT_IV).into()))),
        }
    }

    /// XORs the keystream into `buf` in place (encrypts or decrypts) and advances the position.
    pub fn apply(&mut self, buf: &mut [u8]) {
        match &mut self.cipher {
            Cipher::Aes128(c) => c.apply_keystream(buf),
            Cipher::Aes256(c) => c.apply_keystream(buf),
        }
    }

    /// Moves to byte `offset` of the keystream, so a range of a file can be decrypted without the bytes before it.
    pub fn seek(&mut self, offset: u64) {
        match &mut self.cipher {
            Cipher::Aes128(c) => c.seek(offset),
            Cipher::Aes256(c) => c.seek(offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_matches_streaming() {
        let key = [9u8; 16];
        let mut whole = vec![0u8; 1000];
        AesCtr::new_128(&key).apply(&mut whole);
        let mut part = vec![0u8; 300];
        let mut ctr = AesCtr::new_128(&key);
        ctr.seek(517);
        ctr.apply(&mut part);
        assert_eq!(part, whole[517..817]);
    }

    #[test]
    fn rejects_bad_key_lengths() {
        assert_eq!(
            AesCtr::new(&[0; 24], &DEFAULT_IV).err(),
            Some(BadKeyLength(24))
        );
    }
}
